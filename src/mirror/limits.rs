//! File descriptors: the most the configured connections can take, checked against
//! the process limit at start-up, so that a low `ulimit -n` is one clear error instead
//! of "too many open files" on some connection hours later.

/// Descriptors beyond sockets: standard streams, the runtime's epoll and event
/// handles, log and signal plumbing, with room to spare.
pub const BASE_FDS: u64 = 64;

/// The most sockets the mirror holds at once: per source broker that leads mirrored
/// partitions its fetch pool (up to `pool_max`), the shared long poll and a control
/// connection; per destination broker its produce connections and a control
/// connection.
pub fn fds_needed(src_brokers: usize, dst_brokers: usize, pool_max: usize, produce: usize) -> u64 {
    (src_brokers * (pool_max + 2) + dst_brokers * (produce + 2)) as u64 + BASE_FDS
}

/// Raises the soft limit toward the hard one when `need` is above it. Returns the
/// limit in force, or the soft and hard limits when even the hard one is too low.
pub fn ensure_fds(need: u64) -> Result<u64, (u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        // Unknown: nothing to check against.
        return Ok(u64::MAX);
    }
    let (soft, hard) = (lim.rlim_cur, lim.rlim_max);
    if need <= soft {
        return Ok(soft);
    }
    if need <= hard {
        lim.rlim_cur = need;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
            return Ok(need);
        }
    }
    Err((soft, hard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_connection_the_configuration_allows() {
        // 3 source brokers with pools of up to 256, 3 destination brokers with 8
        // produce connections each.
        assert_eq!(fds_needed(3, 3, 256, 8), 3 * 258 + 3 * 10 + BASE_FDS);
        assert_eq!(fds_needed(1, 1, 1, 1), 3 + 3 + BASE_FDS);
    }

    #[test]
    fn a_need_within_the_limit_passes() {
        assert!(ensure_fds(BASE_FDS).is_ok());
    }
}
