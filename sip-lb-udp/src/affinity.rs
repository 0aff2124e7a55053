//! Pinning a worker thread to one CPU, so its cache and the CPU the kernel
//! (or the XDP CPU map) delivers its datagrams on stay the same.
use std::io;

pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is a plain bitmask; CPU_SET bounds-checks against its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "cpu index too large"));
        }
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// CPUs this process may run on, in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: as above; sched_getaffinity fills the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
        }
        (0..8 * std::mem::size_of::<libc::cpu_set_t>()).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    }
}

/// CPUs this process may run on, counted.
pub fn cpu_count() -> usize {
    allowed_cpus().len().max(1)
}

/// The CPUs among `among` that were at least `idle_share` idle over
/// `window`, from the kernel's exact cpuidle residency
/// (`/sys/devices/system/cpu/cpuN/cpuidle/state*/time`, microseconds; tick
/// sampling in /proc/stat undercounts bursty load badly). A CPU without
/// cpuidle data counts as busy. Blocks for `window`.
pub fn idle_cpus(among: &[usize], window: std::time::Duration, idle_share: f64) -> Vec<usize> {
    let before: Vec<Option<u64>> = among.iter().map(|&c| idle_us(c)).collect();
    let t0 = std::time::Instant::now();
    std::thread::sleep(window);
    let wall_us = t0.elapsed().as_micros() as f64;
    among
        .iter()
        .zip(before)
        .filter_map(|(&c, b)| {
            let idle = idle_us(c)?.saturating_sub(b?) as f64;
            (idle >= idle_share * wall_us).then_some(c)
        })
        .collect()
}

/// Idle time summed over every online CPU, in microseconds (cpuidle
/// residency), with the number of CPUs counted: machine-wide busy time over a
/// window is `cpus x wall - (idle_after - idle_before)`. `None` when some
/// online CPU has no cpuidle data (then only /proc/stat's tick sampling is
/// left, which undercounts bursty load).
pub fn machine_idle_us() -> Option<(u64, usize)> {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    let mut total = 0;
    let mut cpus = 0;
    for range in online.trim().split(',') {
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        for cpu in lo.parse::<usize>().ok()?..=hi.parse::<usize>().ok()? {
            total += idle_us(cpu)?;
            cpus += 1;
        }
    }
    Some((total, cpus))
}

/// Total time CPU `cpu` spent in any idle state, in microseconds.
fn idle_us(cpu: usize) -> Option<u64> {
    let dir = std::fs::read_dir(format!("/sys/devices/system/cpu/cpu{cpu}/cpuidle")).ok()?;
    let mut total = None;
    for e in dir.flatten() {
        if !e.file_name().to_string_lossy().starts_with("state") {
            continue;
        }
        let t: u64 = std::fs::read_to_string(e.path().join("time")).ok()?.trim().parse().ok()?;
        *total.get_or_insert(0) += t;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_idle_time_covers_every_online_cpu_and_never_decreases() {
        let (before, cpus) = machine_idle_us().expect("cpuidle residency on this machine");
        // SAFETY: sysconf has no preconditions.
        let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        assert_eq!(cpus as libc::c_long, online);
        let (after, again) = machine_idle_us().unwrap();
        assert_eq!(cpus, again);
        assert!(after >= before, "idle time went back: {before} -> {after}");
    }

    #[test]
    fn a_spinning_cpu_is_not_idle() {
        let allowed = allowed_cpus();
        let cpu = allowed[0];
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spin = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                pin_to_cpu(cpu).unwrap();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        };
        // Give the spinner its CPU (the scenario's duration, not a sync point).
        std::thread::sleep(std::time::Duration::from_millis(20));
        let idle = idle_cpus(&allowed, std::time::Duration::from_millis(200), 0.5);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        spin.join().unwrap();
        assert!(!idle.contains(&cpu), "CPU {cpu} spun for the whole window but counted idle: {idle:?}");
        assert!(idle.iter().all(|c| allowed.contains(c)));
    }
}
