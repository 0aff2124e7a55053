//! The null forwarder: sip-lb's socket loop with no SIP work, the kernel-path
//! ceiling for the max-rate comparison. One pinned thread per worker, each with
//! its own SO_REUSEPORT socket: recvmmsg, then sendmmsg of the same bytes to
//! the backends, alternating per datagram so both sinks share the load (no
//! parsing, no hashing).
//!
//! It runs as a separate process (the xtask binary re-executed with
//! [`ROLE_ENV`] set) so its CPU time and memory are measured like a balancer's.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use std::os::fd::AsRawFd;

use sip_lb_udp::{RecvBatch, BATCH};

use super::sockets;

pub const ROLE_ENV: &str = "SIP_LB_BENCH_ROLE";
pub const ROLE: &str = "null-forwarder";
const ARGS_ENV: &str = "SIP_LB_BENCH_NULL_ARGS";
/// The process exits on its own after this long even if nobody stops it.
const MAX_LIFETIME: Duration = Duration::from_secs(900);

/// Environment for a child process that becomes the null forwarder.
pub fn child_env(listen: SocketAddr, backends: &[SocketAddr], workers: usize) -> Vec<(String, String)> {
    let list: Vec<String> = backends.iter().map(|b| b.to_string()).collect();
    vec![(ROLE_ENV.into(), ROLE.into()), (ARGS_ENV.into(), format!("{listen} {workers} {}", list.join(",")))]
}

/// Entry point in the child process; runs until killed or [`MAX_LIFETIME`].
pub fn main_from_env() -> Result<()> {
    let args = std::env::var(ARGS_ENV).context("null forwarder: missing arguments")?;
    let mut it = args.split(' ');
    let listen: SocketAddr = it.next().context("listen")?.parse()?;
    let workers: usize = it.next().context("workers")?.parse()?;
    let backends =
        it.next().context("backends")?.split(',').map(|b| Ok(b.parse()?)).collect::<Result<Vec<SocketAddr>>>()?;
    let sockets = (0..workers).map(|_| sockets::bind(listen, true)).collect::<Result<Vec<_>>>()?;
    let cpus = sip_lb_udp::affinity::cpu_count();
    let handles: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, sock)| {
            let backends = backends.clone();
            std::thread::spawn(move || {
                let _ = sip_lb_udp::affinity::pin_to_cpu(i % cpus);
                // Slots as the bench's INVITEs need (sip-lb takes any size).
                let mut batch = RecvBatch::with_options(2047, false);
                let mut dst = [backends[0]; BATCH];
                for (j, d) in dst.iter_mut().enumerate() {
                    *d = backends[j % backends.len()];
                }
                let start = Instant::now();
                while start.elapsed() < MAX_LIFETIME {
                    let n = match batch.recv(sock.as_raw_fd(), true) {
                        Ok(n) => n,
                        Err(_) => continue,
                    };
                    if n == 0 {
                        continue;
                    }
                    let packets: [&[u8]; BATCH] = std::array::from_fn(|k| if k < n { batch.get(k).0 } else { &[] });
                    let _ = sip_lb_udp::send_slices(sock.as_raw_fd(), &packets[..n], &dst[..n]);
                }
            })
        })
        .collect();
    eprintln!("null forwarder: {workers} workers on {listen}");
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}
