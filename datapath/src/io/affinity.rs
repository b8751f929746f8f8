//! Thread CPU affinity for a set of CPUs (`core_affinity` pins to one).
//!
//! Workers each run pinned to one core; the control plane's threads (the
//! control socket, the learner, flow expiry, the manifest watcher and
//! reload compiles) are kept on the other CPUs, so a 10,000-Service
//! recompile never lands on a worker's core.

#![allow(unsafe_code)]

use std::io;

/// Restrict the calling thread to `cpus` (CPU numbers). Threads it spawns
/// afterwards inherit the set. An empty set is an error (`EINVAL`), as is
/// a CPU number the kernel's mask cannot hold.
pub fn set_current_thread_cpus(cpus: &[usize]) -> io::Result<()> {
    // An all-zero cpu_set_t is the empty set.
    // SAFETY: cpu_set_t is a plain bit array for which all-zero is valid.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    for &c in cpus {
        if c >= max {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: `c` is below the set's capacity (checked above), the
        // only precondition of CPU_SET.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: pid 0 is the calling thread; the size and pointer are those
    // of `set`, which lives across the call.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Best effort: keep the calling thread on `cpus` (nothing when empty); a
/// failure (a cpuset that forbids them) is reported on stderr and ignored.
pub fn keep_current_thread_on(cpus: &[usize]) {
    if cpus.is_empty() {
        return;
    }
    if let Err(e) = set_current_thread_cpus(cpus) {
        eprintln!("flowpath: could not keep a control thread on CPUs {cpus:?}: {e}");
    }
}

/// The CPUs the calling thread may run on.
pub fn current_thread_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: as in `set_current_thread_cpus`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; `set` is writable for its size.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: every index is below the set's capacity.
    Ok((0..max)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// The CPUs of `all` that no worker is pinned to (empty when the workers
/// take them all: the control plane then shares the workers' CPUs).
pub fn control_cpus(all: &[usize], workers: &[usize]) -> Vec<usize> {
    all.iter()
        .copied()
        .filter(|c| !workers.contains(c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_to_the_cpus_it_is_given() {
        let all = current_thread_cpus().unwrap();
        assert!(!all.is_empty());
        let one = vec![*all.last().unwrap()];
        let got = std::thread::spawn(move || {
            set_current_thread_cpus(&one).unwrap();
            // A thread spawned now inherits the set.
            let child = std::thread::spawn(current_thread_cpus).join().unwrap();
            (current_thread_cpus().unwrap(), child.unwrap(), one)
        })
        .join()
        .unwrap();
        assert_eq!(got.0, got.2);
        assert_eq!(got.1, got.2);
        assert!(set_current_thread_cpus(&[]).is_err());
        assert!(set_current_thread_cpus(&[1 << 20]).is_err());
    }

    #[test]
    fn control_gets_what_workers_leave() {
        assert_eq!(control_cpus(&[0, 1, 2, 3], &[1, 3]), vec![0, 2]);
        assert_eq!(control_cpus(&[0, 1], &[0, 1]), Vec::<usize>::new());
        assert_eq!(control_cpus(&[0, 1], &[1, 1]), vec![0]);
    }
}
