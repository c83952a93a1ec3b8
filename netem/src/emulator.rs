//! The userspace link: one TUN device in each namespace, two threads per direction
//! (reader applies the model, writer releases packets at their delivery time).

use std::fs::File;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;

use crate::link::{Counters, Direction, Params, Verdict};

/// Counters of both directions plus the emulator's own CPU use.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Status {
    pub src_to_dst: Counters,
    pub dst_to_src: Counters,
    pub cpu_seconds: f64,
    pub wall_seconds: f64,
}

pub struct Emulator {
    pub status: Arc<Mutex<Status>>,
    stop: Arc<AtomicBool>,
}

impl Emulator {
    /// Starts forwarding between `src` and `dst` TUN devices.
    pub fn start(src: File, dst: File, ab: Params, ba: Params) -> std::io::Result<Emulator> {
        let status = Arc::new(Mutex::new(Status::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let (src_r, dst_r) = (src.try_clone()?, dst.try_clone()?);
        spawn_direction(src_r, dst, ab, epoch, status.clone(), true);
        spawn_direction(dst_r, src, ba, epoch, status.clone(), false);
        let (s, st) = (status.clone(), stop.clone());
        thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(200));
                let mut g = s.lock().unwrap_or_else(|p| p.into_inner());
                g.cpu_seconds = crate::tun::cpu_seconds();
                g.wall_seconds = epoch.elapsed().as_secs_f64();
            }
        });
        Ok(Emulator { status, stop })
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn spawn_direction(
    mut from: File,
    mut to: File,
    params: Params,
    epoch: Instant,
    status: Arc<Mutex<Status>>,
    forward: bool,
) {
    let (tx, rx) = mpsc::channel::<(u64, Vec<u8>)>();
    thread::spawn(move || {
        let mut model = Direction::new(params);
        let mut rng = rand::rng();
        let mut buf = vec![0u8; 65536];
        let mut n_since = 0u32;
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let now = epoch.elapsed().as_nanos() as u64;
            let v = model.on_packet(now, n as u64, rng.random(), rng.random());
            if let Verdict::Deliver(at) = v {
                if tx.send((at, buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            n_since += 1;
            if n_since >= 8 || !matches!(v, Verdict::Deliver(_)) {
                n_since = 0;
                let mut g = status.lock().unwrap_or_else(|p| p.into_inner());
                if forward {
                    g.src_to_dst = model.counters;
                } else {
                    g.dst_to_src = model.counters;
                }
            }
        }
    });
    thread::spawn(move || {
        // Delivery times are non-decreasing, so a FIFO is the delay line.
        while let Ok((at, pkt)) = rx.recv() {
            let now = epoch.elapsed().as_nanos() as u64;
            if at > now {
                thread::sleep(Duration::from_nanos(at - now));
            }
            if to.write_all(&pkt).is_err() {
                return;
            }
        }
    });
}
