//! A broker that answers with garbage: the mirror stops with one error line naming the
//! broker and the API, never a crash, an abort or a hang.
//!
//! The fake broker answers ApiVersions properly (so the mirror gets past the handshake)
//! and every other request with the right length and correlation id around a random
//! body, weighted toward bytes that read as huge counts and lengths. Before the frame
//! check, the kafka-protocol crate asked for up to hundreds of gigabytes for such a
//! body and the process aborted.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};

/// A listener on a loopback port answering as described above; stopped on drop.
struct GarbageBroker {
    addr: String,
    stop: Arc<AtomicBool>,
    /// API keys answered with garbage, in order.
    garbled: Arc<Mutex<Vec<i16>>>,
    accept: Option<JoinHandle<()>>,
}

impl GarbageBroker {
    fn start(seed: u64) -> GarbageBroker {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let garbled = Arc::new(Mutex::new(Vec::new()));
        let (s, g) = (stop.clone(), garbled.clone());
        let port = listener.local_addr().unwrap().port();
        let accept = std::thread::spawn(move || {
            let mut conn = 0u64;
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        conn += 1;
                        let (s, g) = (s.clone(), g.clone());
                        let seed = seed.wrapping_mul(1_000_003).wrapping_add(conn);
                        std::thread::spawn(move || serve(sock, seed, port, &s, &g));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        GarbageBroker {
            addr,
            stop,
            garbled,
            accept: Some(accept),
        }
    }
}

impl Drop for GarbageBroker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// splitmix64: reproducible garbage from a seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A byte of hostile garbage: uniform, or one that makes counts and lengths huge
    /// (0x7f leads a large int32; 0xff continues a varint).
    fn byte(&mut self) -> u8 {
        match self.next() % 3 {
            0 => 0x7f,
            1 => 0xff,
            _ => self.next() as u8,
        }
    }
}

/// A Metadata answer naming this broker as the leader of `orders`' one partition.
fn metadata(port: u16, version: i16) -> BytesMut {
    let mut b = BytesMut::new();
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(0))
            .with_host(StrBytes::from_static_str("127.0.0.1"))
            .with_port(i32::from(port))])
        .with_topics(vec![MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("orders"))))
            .with_partitions(vec![MetadataResponsePartition::default()
                .with_leader_id(BrokerId(0))
                .with_replica_nodes(vec![BrokerId(0)])
                .with_isr_nodes(vec![BrokerId(0)])])])
        .encode(&mut b, version)
        .unwrap();
    b
}

fn serve(mut sock: TcpStream, seed: u64, port: u16, stop: &AtomicBool, garbled: &Mutex<Vec<i16>>) {
    let mut rng = Rng(seed);
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    loop {
        let mut len = [0u8; 4];
        match sock.read_exact(&mut len) {
            Ok(()) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock && !stop.load(Ordering::Relaxed) =>
            {
                continue
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut && !stop.load(Ordering::Relaxed) => {
                continue
            }
            Err(_) => return,
        }
        let mut req = vec![0u8; i32::from_be_bytes(len).clamp(0, 1 << 20) as usize];
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        if sock.read_exact(&mut req).is_err() || req.len() < 8 {
            return;
        }
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let key = i16::from_be_bytes([req[0], req[1]]);
        let version = i16::from_be_bytes([req[2], req[3]]);
        let mut body = req[4..8].to_vec(); // correlation id
                                           // Every third connection gets garbage for its handshake too; the others a
                                           // proper handshake, so that the garbage reaches the other decoders.
        if key == 18 && !seed.is_multiple_of(3) {
            // Old versions on some connections: their arrays have int32 counts, which
            // garbage makes as large as 2^31 (flexible versions use varints).
            let max = if (seed / 3).is_multiple_of(2) { 12 } else { 4 };
            let keys = [0i16, 1, 2, 3, 10, 19, 22, 32, 37, 65]
                .iter()
                .map(|&k| ApiVersion::default().with_api_key(k).with_max_version(max))
                .collect();
            let mut b = BytesMut::new();
            ApiVersionsResponse::default()
                .with_api_keys(keys)
                .encode(&mut b, version.min(3))
                .unwrap();
            body.extend_from_slice(&b);
        } else if key == 3 && seed % 2 == 1 {
            // Half the connections describe a topic properly, so that the garbage
            // reaches offsets, topic creation, fetches and produces.
            let flexible = ApiKey::try_from(key)
                .map(|k| k.response_header_version(version) >= 1)
                .unwrap_or(false);
            if flexible {
                body.push(0);
            }
            body.extend_from_slice(&metadata(port, version));
        } else {
            garbled.lock().unwrap().push(key);
            // A well-formed response header (flexible versions end it with an empty
            // tagged-field section), so the garbage starts in the body.
            let flexible = ApiKey::try_from(key)
                .map(|k| k.response_header_version(version) >= 1)
                .unwrap_or(false);
            if flexible {
                body.push(0);
            }
            let n = (rng.next() % 512) as usize;
            body.extend((0..n).map(|_| rng.byte()));
        }
        let mut out = (body.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        if sock.write_all(&out).is_err() {
            return;
        }
    }
}

#[test]
fn garbage_answers_end_in_one_error_line_never_an_abort() {
    const TRIES: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let mut garbled_apis = std::collections::BTreeSet::new();
    for seed in 1..=TRIES {
        let src = GarbageBroker::start(seed);
        let dst = GarbageBroker::start(seed + 1000);
        let config = dir.path().join(format!("garbage-{seed}.toml"));
        std::fs::write(
            &config,
            format!(
                "[source]\nname = \"dc-a\"\nbootstrap = \"{}\"\n[destination]\nname = \"dc-b\"\nbootstrap = \"{}\"\n[mirror]\ntopics = [\"orders\"]\nreplication_factor = 1\nretry_secs = 2\n",
                src.addr, dst.addr
            ),
        )
        .unwrap();
        // Under a 4 GB address-space limit, as in a container: without one, the
        // allocator here maps tens of gigabytes it never touches, and the crate's
        // over-allocation would go unseen on a machine with plenty of memory.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("ulimit -v 4000000 && exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_wanmirror"))
            .args(["run", "--stop-at-end", "--config"])
            .arg(&config)
            .env("RUST_LOG", "off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("seed {seed}: wanmirror still running after 60 s of garbage");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let err = err.trim();
        assert_eq!(
            status.signal(),
            None,
            "seed {seed}: killed by signal {:?}: {err}",
            status.signal()
        );
        assert_eq!(status.code(), Some(2), "seed {seed}: {err}");
        assert_eq!(
            err.lines().count(),
            1,
            "seed {seed}: one line expected: {err}"
        );
        assert!(err.starts_with("error: "), "seed {seed}: {err}");
        garbled_apis.extend(src.garbled.lock().unwrap().iter().copied());
        garbled_apis.extend(dst.garbled.lock().unwrap().iter().copied());
    }
    // The garbage reached past the handshake and past Metadata (the fencing lock's
    // FindCoordinator, so far); the unit fuzz targets of `kafka::shape` cover every
    // response the mirror reads.
    assert!(garbled_apis.contains(&3), "garbled: {garbled_apis:?}");
    assert!(
        garbled_apis.iter().any(|k| ![3, 18].contains(k)),
        "garbled: {garbled_apis:?}"
    );
}
