//! A TCP proxy that plays the WAN between the mirror and a cluster. Its link can be:
//! - cut: open connections are closed and new ones refused (an outage seen as resets);
//! - black-holed: nothing is forwarded, in either direction, on open or new
//!   connections, and nothing is closed (packets dropped: TCP holds the data and sends
//!   it once the path is back);
//! - half-open on the connections open now: they forward nothing from then on, but
//!   stay open, while new connections work;
//! - delayed: every chunk waits a random time, so answers on different connections
//!   overtake each other (pieces arrive out of order on loopback).
//!
//! Blackholes, half-open connections and delays touch only the mirror's connections
//! (told by the client id of their first request): the WAN lies between the mirror and
//! the cluster, while the tests' producers stand next to the cluster. A cut closes all.
//!
//! Every thread it starts ends when the proxy is dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

pub struct Proxy {
    pub port: u16,
    target: Arc<Mutex<Option<u16>>>,
    state: Arc<State>,
    open: Arc<Mutex<Vec<Conn>>>,
}

/// What all connections share.
#[derive(Default)]
struct State {
    cut: AtomicBool,
    blackhole: AtomicBool,
    stop: AtomicBool,
    /// Largest random delay per forwarded chunk, in milliseconds (0: none).
    delay_ms: AtomicU64,
}

/// One proxied connection: both sockets, and whether it was made half-open.
struct Conn {
    sockets: [TcpStream; 2],
    flags: Arc<Flags>,
}

/// What is known of one connection.
#[derive(Default)]
struct Flags {
    /// Made half-open by [`Proxy::freeze_open`].
    frozen: AtomicBool,
    /// Its first request came from the mirror (client id "wanmirror").
    mirror: AtomicBool,
    /// One of its pipes ended (both sockets are shut down then).
    closed: AtomicBool,
}

impl Proxy {
    /// Listens on a free port; forwards once [`Proxy::forward_to`] names the target.
    pub fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let p = Proxy {
            port: listener.local_addr().expect("addr").port(),
            target: Arc::new(Mutex::new(None)),
            state: Arc::new(State::default()),
            open: Arc::new(Mutex::new(Vec::new())),
        };
        let (target, state, open) = (p.target.clone(), p.state.clone(), p.open.clone());
        thread::spawn(move || {
            let mut seed = 0x5eed_u64;
            while !state.stop.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let to = *target.lock().unwrap();
                let Some(to) = to.filter(|_| !state.cut.load(Ordering::Relaxed)) else {
                    continue; // dropped: the link is down
                };
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                let flags = Arc::new(Flags::default());
                {
                    let mut open = open.lock().unwrap();
                    // A cut between the check above and here drained `open` without
                    // this connection: it must not outlive the cut.
                    if state.cut.load(Ordering::Relaxed) {
                        let _ = client.shutdown(Shutdown::Both);
                        let _ = server.shutdown(Shutdown::Both);
                        continue;
                    }
                    // Closed connections go, or their sockets would pile up.
                    open.retain(|c| !c.flags.closed.load(Ordering::Relaxed));
                    if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
                        open.push(Conn {
                            sockets: [c, s],
                            flags: flags.clone(),
                        });
                    }
                }
                for (from, to, upstream) in [
                    (
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        true,
                    ),
                    (server, client, false),
                ] {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    let (state, flags) = (state.clone(), flags.clone());
                    thread::spawn(move || pipe(from, to, &state, &flags, upstream, seed));
                }
            }
        });
        p
    }

    pub fn forward_to(&self, target_port: u16) {
        *self.target.lock().unwrap() = Some(target_port);
    }

    /// Closes every open connection and refuses new ones.
    pub fn cut(&self) {
        let mut open = self.open.lock().unwrap();
        self.state.cut.store(true, Ordering::Relaxed);
        for c in open.drain(..) {
            for s in &c.sockets {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::Relaxed);
    }

    /// Stops forwarding anything, on every connection, until [`Proxy::light`].
    pub fn blackhole(&self) {
        self.state.blackhole.store(true, Ordering::Relaxed);
    }

    /// Ends a blackhole: what was held goes through.
    pub fn light(&self) {
        self.state.blackhole.store(false, Ordering::Relaxed);
    }

    /// Makes every connection open now half-open for good: nothing more goes through
    /// it either way, and it is not closed. Returns how many were frozen.
    pub fn freeze_open(&self) -> usize {
        let open = self.open.lock().unwrap();
        let mut n = 0;
        for c in open
            .iter()
            .filter(|c| c.flags.mirror.load(Ordering::Relaxed))
        {
            c.flags.frozen.store(true, Ordering::Relaxed);
            n += 1;
        }
        n
    }

    /// Delays every forwarded chunk by a random 0..=`max_ms` milliseconds.
    pub fn delay(&self, max_ms: u64) {
        self.state.delay_ms.store(max_ms, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        self.cut();
    }
}

/// Whether a request frame's header names the mirror as its client.
fn from_mirror(first: &[u8]) -> bool {
    // length (4), api key (2), version (2), correlation id (4), client id (2 + n)
    let Some(len) = first.get(12..14) else {
        return false;
    };
    let n = i16::from_be_bytes([len[0], len[1]]);
    n > 0 && first.get(14..14 + n as usize) == Some(b"wanmirror".as_slice())
}

fn pipe(
    mut from: TcpStream,
    mut to: TcpStream,
    state: &State,
    flags: &Flags,
    upstream: bool,
    seed: u64,
) {
    let mut rng = seed | 1;
    let mut buf = vec![0u8; 64 * 1024];
    let mut first = upstream;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if first {
            first = false;
            flags
                .mirror
                .store(from_mirror(&buf[..n]), Ordering::Relaxed);
        }
        let wan = flags.mirror.load(Ordering::Relaxed);
        // Held, not dropped: TCP would deliver it once the path is back.
        while wan
            && (state.blackhole.load(Ordering::Relaxed) || flags.frozen.load(Ordering::Relaxed))
            && !state.stop.load(Ordering::Relaxed)
        {
            thread::sleep(Duration::from_millis(10));
        }
        let max = state.delay_ms.load(Ordering::Relaxed);
        if wan && max > 0 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            thread::sleep(Duration::from_millis(rng % (max + 1)));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    flags.closed.store(true, Ordering::Relaxed);
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
