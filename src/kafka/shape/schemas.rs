//! The fields of every response wanmirror reads, by version, as the Kafka protocol
//! defines them (only what the walk needs: types, versions, known tags).
//!
//! Checked against the crate's own encoder for every version it knows, with every
//! array and known tag filled (`tests.rs`), so a table that drifts from the crate fails
//! a test rather than refusing a broker.

use super::{Field, Message, Struct, Tag, Ty};

const BOOL: Ty = Ty::Fixed(1);
const I8: Ty = Ty::Fixed(1);
const I16: Ty = Ty::Fixed(2);
const I32: Ty = Ty::Fixed(4);
const I64: Ty = Ty::Fixed(8);
const UUID: Ty = Ty::Fixed(16);
const STR: Ty = Ty::Str;

/// A field in every version.
const fn f(ty: Ty) -> Field {
    Field {
        ty,
        from: 0,
        to: i16::MAX,
    }
}
/// A field from version `v` on.
const fn since(v: i16, ty: Ty) -> Field {
    Field {
        ty,
        from: v,
        to: i16::MAX,
    }
}
/// A field up to version `v`.
const fn until(v: i16, ty: Ty) -> Field {
    Field { ty, from: 0, to: v }
}
const fn tag(tag: u32, from: i16, ty: Ty) -> Tag {
    Tag { tag, ty, from }
}
const fn plain(fields: &'static [Field]) -> Struct {
    Struct { fields, tags: &[] }
}

/// The message table for API `key`, if wanmirror reads its responses.
pub fn schema(key: i16) -> Option<&'static Message> {
    Some(match key {
        0 => &PRODUCE,
        1 => &FETCH,
        2 => &LIST_OFFSETS,
        3 => &METADATA,
        8 => &OFFSET_COMMIT,
        9 => &OFFSET_FETCH,
        10 => &FIND_COORDINATOR,
        11 => &JOIN_GROUP,
        12 => &HEARTBEAT,
        13 => &LEAVE_GROUP,
        14 => &SYNC_GROUP,
        15 => &DESCRIBE_GROUPS,
        16 => &LIST_GROUPS,
        17 => &SASL_HANDSHAKE,
        18 => &API_VERSIONS,
        19 => &CREATE_TOPICS,
        22 => &INIT_PRODUCER_ID,
        32 => &DESCRIBE_CONFIGS,
        36 => &SASL_AUTHENTICATE,
        37 => &CREATE_PARTITIONS,
        65 => &DESCRIBE_TRANSACTIONS,
        _ => return None,
    })
}

/// The API keys [`schema`] knows.
pub const KEYS: &[i16] = &[
    0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 22, 32, 36, 37, 65,
];

// Produce: topics, partitions, record errors; v10+ tags a new leader and endpoints.
static PRODUCE_RECORD_ERROR: Struct = plain(&[since(8, I32), since(8, STR)]);
static LEADER_AND_EPOCH: Struct = plain(&[f(I32), f(I32)]);
static NODE_ENDPOINT: Struct = plain(&[f(I32), f(STR), f(I32), f(STR)]);
static PRODUCE_PARTITION: Struct = Struct {
    fields: &[
        f(I32),
        f(I16),
        f(I64),
        f(I64),
        since(5, I64),
        since(8, Ty::Array(&Ty::Struct(&PRODUCE_RECORD_ERROR))),
        since(8, STR),
    ],
    tags: &[tag(0, 10, Ty::Struct(&LEADER_AND_EPOCH))],
};
static PRODUCE_TOPIC: Struct = plain(&[
    until(12, STR),
    since(13, UUID),
    f(Ty::Array(&Ty::Struct(&PRODUCE_PARTITION))),
]);
static PRODUCE: Message = Message {
    versions: (3, 13),
    flexible_from: 9,
    body: Struct {
        fields: &[f(Ty::Array(&Ty::Struct(&PRODUCE_TOPIC))), f(I32)],
        tags: &[tag(0, 10, Ty::Array(&Ty::Struct(&NODE_ENDPOINT)))],
    },
};

// Fetch: topics, partitions with aborted transactions and records; v12+ tags.
static ABORTED_TXN: Struct = plain(&[f(I64), f(I64)]);
static EPOCH_END_OFFSET: Struct = plain(&[f(I32), f(I64)]);
static SNAPSHOT_ID: Struct = plain(&[f(I64), f(I32)]);
static FETCH_PARTITION: Struct = Struct {
    fields: &[
        f(I32),
        f(I16),
        f(I64),
        f(I64),
        since(5, I64),
        f(Ty::Array(&Ty::Struct(&ABORTED_TXN))),
        since(11, I32),
        f(Ty::Bytes),
    ],
    tags: &[
        tag(0, 12, Ty::Struct(&EPOCH_END_OFFSET)),
        tag(1, 12, Ty::Struct(&LEADER_AND_EPOCH)),
        tag(2, 12, Ty::Struct(&SNAPSHOT_ID)),
    ],
};
static FETCH_TOPIC: Struct = plain(&[
    until(12, STR),
    since(13, UUID),
    f(Ty::Array(&Ty::Struct(&FETCH_PARTITION))),
]);
static FETCH: Message = Message {
    versions: (4, 18),
    flexible_from: 12,
    body: Struct {
        fields: &[
            f(I32),
            since(7, I16),
            since(7, I32),
            f(Ty::Array(&Ty::Struct(&FETCH_TOPIC))),
        ],
        tags: &[tag(0, 16, Ty::Array(&Ty::Struct(&NODE_ENDPOINT)))],
    },
};

static LIST_OFFSETS_PARTITION: Struct = plain(&[f(I32), f(I16), f(I64), f(I64), since(4, I32)]);
static LIST_OFFSETS_TOPIC: Struct =
    plain(&[f(STR), f(Ty::Array(&Ty::Struct(&LIST_OFFSETS_PARTITION)))]);
static LIST_OFFSETS: Message = Message {
    versions: (1, 10),
    flexible_from: 6,
    body: plain(&[
        since(2, I32),
        f(Ty::Array(&Ty::Struct(&LIST_OFFSETS_TOPIC))),
    ]),
};

static METADATA_BROKER: Struct = plain(&[f(I32), f(STR), f(I32), since(1, STR)]);
static METADATA_PARTITION: Struct = plain(&[
    f(I16),
    f(I32),
    f(I32),
    since(7, I32),
    f(Ty::Array(&I32)),
    f(Ty::Array(&I32)),
    since(5, Ty::Array(&I32)),
]);
static METADATA_TOPIC: Struct = plain(&[
    f(I16),
    f(STR),
    since(10, UUID),
    since(1, BOOL),
    f(Ty::Array(&Ty::Struct(&METADATA_PARTITION))),
    since(8, I32),
]);
static METADATA: Message = Message {
    versions: (0, 13),
    flexible_from: 9,
    body: plain(&[
        since(3, I32),
        f(Ty::Array(&Ty::Struct(&METADATA_BROKER))),
        since(2, STR),
        since(1, I32),
        f(Ty::Array(&Ty::Struct(&METADATA_TOPIC))),
        Field {
            ty: I32,
            from: 8,
            to: 10,
        },
        since(13, I16),
    ]),
};

static COORDINATOR: Struct = plain(&[f(STR), f(I32), f(STR), f(I32), f(I16), f(STR)]);
static FIND_COORDINATOR: Message = Message {
    versions: (0, 6),
    flexible_from: 3,
    body: plain(&[
        since(1, I32),
        until(3, I16),
        Field {
            ty: STR,
            from: 1,
            to: 3,
        },
        until(3, I32),
        until(3, STR),
        until(3, I32),
        since(4, Ty::Array(&Ty::Struct(&COORDINATOR))),
    ]),
};

// OffsetCommit: an error code per topic and partition; topics by id from v10.
static OFFSET_COMMIT_PARTITION: Struct = plain(&[f(I32), f(I16)]);
static OFFSET_COMMIT_TOPIC: Struct = plain(&[
    until(9, STR),
    since(10, UUID),
    f(Ty::Array(&Ty::Struct(&OFFSET_COMMIT_PARTITION))),
]);
static OFFSET_COMMIT: Message = Message {
    versions: (2, 10),
    flexible_from: 8,
    body: plain(&[
        since(3, I32),
        f(Ty::Array(&Ty::Struct(&OFFSET_COMMIT_TOPIC))),
    ]),
};

// OffsetFetch: committed offsets (with leader epoch from v5, nullable metadata) per
// topic and partition, and a top-level error from v2; from v8 the same per group,
// each with its own error code, topics by id from v10.
static OFFSET_FETCH_PARTITION: Struct = plain(&[f(I32), f(I64), since(5, I32), f(STR), f(I16)]);
static OFFSET_FETCH_TOPIC: Struct =
    plain(&[f(STR), f(Ty::Array(&Ty::Struct(&OFFSET_FETCH_PARTITION)))]);
static OFFSET_FETCH_GROUP_PARTITION: Struct = plain(&[f(I32), f(I64), f(I32), f(STR), f(I16)]);
static OFFSET_FETCH_GROUP_TOPIC: Struct = plain(&[
    until(9, STR),
    since(10, UUID),
    f(Ty::Array(&Ty::Struct(&OFFSET_FETCH_GROUP_PARTITION))),
]);
static OFFSET_FETCH_GROUP: Struct = plain(&[
    f(STR),
    f(Ty::Array(&Ty::Struct(&OFFSET_FETCH_GROUP_TOPIC))),
    f(I16),
]);
static OFFSET_FETCH: Message = Message {
    versions: (1, 10),
    flexible_from: 6,
    body: plain(&[
        since(3, I32),
        until(7, Ty::Array(&Ty::Struct(&OFFSET_FETCH_TOPIC))),
        Field {
            ty: I16,
            from: 2,
            to: 7,
        },
        since(8, Ty::Array(&Ty::Struct(&OFFSET_FETCH_GROUP))),
    ]),
};

// JoinGroup: generation, protocol type (v7+) and name (both nullable), leader, own
// member id, and the members with their metadata (static instance id from v5).
static JOIN_GROUP_MEMBER: Struct = plain(&[f(STR), since(5, STR), f(Ty::Bytes)]);
static JOIN_GROUP: Message = Message {
    versions: (0, 9),
    flexible_from: 6,
    body: plain(&[
        since(2, I32),
        f(I16),
        f(I32),
        since(7, STR),
        f(STR),
        f(STR),
        since(9, BOOL),
        f(STR),
        f(Ty::Array(&Ty::Struct(&JOIN_GROUP_MEMBER))),
    ]),
};

// Heartbeat: an error code, throttle time from v1.
static HEARTBEAT: Message = Message {
    versions: (0, 4),
    flexible_from: 4,
    body: plain(&[since(1, I32), f(I16)]),
};

// LeaveGroup: an error code, and from v3 one per member that left.
static LEAVE_GROUP_MEMBER: Struct = plain(&[f(STR), f(STR), f(I16)]);
static LEAVE_GROUP: Message = Message {
    versions: (0, 5),
    flexible_from: 4,
    body: plain(&[
        since(1, I32),
        f(I16),
        since(3, Ty::Array(&Ty::Struct(&LEAVE_GROUP_MEMBER))),
    ]),
};

// SyncGroup: the member's assignment; protocol type and name (nullable) from v5.
static SYNC_GROUP: Message = Message {
    versions: (0, 5),
    flexible_from: 4,
    body: plain(&[
        since(1, I32),
        f(I16),
        since(5, STR),
        since(5, STR),
        f(Ty::Bytes),
    ]),
};

// DescribeGroups: per group its state, protocol and members (metadata, assignment);
// authorized operations from v3, an error message from v6.
static DESCRIBED_GROUP_MEMBER: Struct = plain(&[
    f(STR),
    since(4, STR),
    f(STR),
    f(STR),
    f(Ty::Bytes),
    f(Ty::Bytes),
]);
static DESCRIBED_GROUP: Struct = plain(&[
    f(I16),
    since(6, STR),
    f(STR),
    f(STR),
    f(STR),
    f(STR),
    f(Ty::Array(&Ty::Struct(&DESCRIBED_GROUP_MEMBER))),
    since(3, I32),
]);
static DESCRIBE_GROUPS: Message = Message {
    versions: (0, 6),
    flexible_from: 5,
    body: plain(&[since(1, I32), f(Ty::Array(&Ty::Struct(&DESCRIBED_GROUP)))]),
};

// ListGroups: the groups with their protocol type; state from v4, type from v5.
static LISTED_GROUP: Struct = plain(&[f(STR), f(STR), since(4, STR), since(5, STR)]);
static LIST_GROUPS: Message = Message {
    versions: (0, 5),
    flexible_from: 3,
    body: plain(&[
        since(1, I32),
        f(I16),
        f(Ty::Array(&Ty::Struct(&LISTED_GROUP))),
    ]),
};

static API_VERSION: Struct = plain(&[f(I16), f(I16), f(I16)]);
static FEATURE: Struct = plain(&[f(STR), f(I16), f(I16)]);
static API_VERSIONS: Message = Message {
    versions: (0, 4),
    flexible_from: 3,
    body: Struct {
        fields: &[
            f(I16),
            f(Ty::Array(&Ty::Struct(&API_VERSION))),
            since(1, I32),
        ],
        tags: &[
            tag(0, 3, Ty::Array(&Ty::Struct(&FEATURE))),
            tag(1, 3, I64),
            tag(2, 3, Ty::Array(&Ty::Struct(&FEATURE))),
            tag(3, 3, BOOL),
        ],
    },
};

static TOPIC_CONFIG: Struct = plain(&[f(STR), f(STR), f(BOOL), f(I8), f(BOOL)]);
static CREATE_TOPICS_RESULT: Struct = Struct {
    fields: &[
        f(STR),
        since(7, UUID),
        f(I16),
        f(STR),
        since(5, I32),
        since(5, I16),
        since(5, Ty::Array(&Ty::Struct(&TOPIC_CONFIG))),
    ],
    tags: &[tag(0, 5, I16)],
};
static CREATE_TOPICS: Message = Message {
    versions: (2, 7),
    flexible_from: 5,
    body: plain(&[f(I32), f(Ty::Array(&Ty::Struct(&CREATE_TOPICS_RESULT)))]),
};

static INIT_PRODUCER_ID: Message = Message {
    versions: (0, 6),
    flexible_from: 2,
    body: plain(&[f(I32), f(I16), f(I64), f(I16), since(6, I64), since(6, I16)]),
};

static CONFIG_SYNONYM: Struct = plain(&[f(STR), f(STR), f(I8)]);
static CONFIG_ENTRY: Struct = plain(&[
    f(STR),
    f(STR),
    f(BOOL),
    f(I8),
    f(BOOL),
    f(Ty::Array(&Ty::Struct(&CONFIG_SYNONYM))),
    since(3, I8),
    since(3, STR),
]);
static CONFIG_RESULT: Struct = plain(&[
    f(I16),
    f(STR),
    f(I8),
    f(STR),
    f(Ty::Array(&Ty::Struct(&CONFIG_ENTRY))),
]);
static DESCRIBE_CONFIGS: Message = Message {
    versions: (1, 4),
    flexible_from: 4,
    body: plain(&[f(I32), f(Ty::Array(&Ty::Struct(&CONFIG_RESULT)))]),
};

static PARTITIONS_RESULT: Struct = plain(&[f(STR), f(I16), f(STR)]);
static CREATE_PARTITIONS: Message = Message {
    versions: (0, 3),
    flexible_from: 2,
    body: plain(&[f(I32), f(Ty::Array(&Ty::Struct(&PARTITIONS_RESULT)))]),
};

static TXN_TOPIC: Struct = plain(&[f(STR), f(Ty::Array(&I32))]);
static TXN_STATE: Struct = plain(&[
    f(I16),
    f(STR),
    f(STR),
    f(I32),
    f(I64),
    f(I64),
    f(I16),
    f(Ty::Array(&Ty::Struct(&TXN_TOPIC))),
]);
static DESCRIBE_TRANSACTIONS: Message = Message {
    versions: (0, 0),
    flexible_from: 0,
    body: plain(&[f(I32), f(Ty::Array(&Ty::Struct(&TXN_STATE)))]),
};

// SASL: the handshake names the mechanisms on offer; authenticate carries the
// mechanism's message and, from v1, the session lifetime.
static SASL_HANDSHAKE: Message = Message {
    versions: (0, 1),
    flexible_from: i16::MAX,
    body: plain(&[f(I16), f(Ty::Array(&STR))]),
};

static SASL_AUTHENTICATE: Message = Message {
    versions: (0, 2),
    flexible_from: 2,
    body: plain(&[f(I16), f(STR), f(Ty::Bytes), since(1, I64)]),
};
