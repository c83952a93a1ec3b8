//! A TCP proxy whose link can be cut: open connections are closed and new ones refused
//! until it is restored. Models a WAN outage between the mirror and a cluster.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

pub struct Proxy {
    pub port: u16,
    target: Arc<Mutex<Option<u16>>>,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    /// Listens on a free port; forwards once [`Proxy::forward_to`] names the target.
    pub fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let p = Proxy {
            port: listener.local_addr().expect("addr").port(),
            target: Arc::new(Mutex::new(None)),
            cut: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
            open: Arc::new(Mutex::new(Vec::new())),
        };
        let (target, cut, stop, open) = (
            p.target.clone(),
            p.cut.clone(),
            p.stop.clone(),
            p.open.clone(),
        );
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let to = *target.lock().unwrap();
                let Some(to) = to.filter(|_| !cut.load(Ordering::Relaxed)) else {
                    continue; // dropped: the link is down
                };
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                {
                    let mut open = open.lock().unwrap();
                    // A cut between the check above and here drained `open` without
                    // this connection: it must not outlive the cut.
                    if cut.load(Ordering::Relaxed) {
                        let _ = client.shutdown(Shutdown::Both);
                        let _ = server.shutdown(Shutdown::Both);
                        continue;
                    }
                    for s in [&client, &server] {
                        if let Ok(c) = s.try_clone() {
                            open.push(c);
                        }
                    }
                }
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
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
        self.cut.store(true, Ordering::Relaxed);
        for s in open.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
