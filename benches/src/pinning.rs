//! Pinning processes to CPUs (`sched_setaffinity`).
//!
//! Two-process measurements put the measuring process on CPU 0 and the other on CPU 1
//! when both are in this process's affinity mask; otherwise nothing is pinned and the
//! report says so. Pinning failures are reported, never fatal.

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).collect(),
        Err(_) => Vec::new(),
    }
}

/// The two CPUs a two-process measurement uses (0 and 1), if both are allowed.
pub fn pair() -> Option<(usize, usize)> {
    let cpus = allowed_cpus();
    (cpus.contains(&0) && cpus.contains(&1)).then_some((0, 1))
}

/// Pins process (or thread) `pid` (0: the caller) to `cpu`.
pub fn pin(pid: i32, cpu: usize) -> Result<(), String> {
    let mut set = CpuSet::new();
    set.set(cpu).map_err(|e| format!("CPU {cpu}: {e}"))?;
    sched_setaffinity(Pid::from_raw(pid), &set).map_err(|e| format!("sched_setaffinity(CPU {cpu}): {e}"))
}

/// Undoes pinning of the caller: every CPU it was allowed at start.
pub fn unpin(cpus: &[usize]) -> Result<(), String> {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c).map_err(|e| format!("CPU {c}: {e}"))?;
    }
    sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| format!("sched_setaffinity: {e}"))
}

/// Pins every thread process `pid` has now to `cpu` (threads it starts later inherit the
/// affinity of the thread that starts them).
pub fn pin_all_threads(pid: u32, cpu: usize) -> Result<(), String> {
    allow_all_threads(pid, &[cpu])
}

/// Lets every thread process `pid` has now run on any of `cpus` (and only those).
pub fn allow_all_threads(pid: u32, cpus: &[usize]) -> Result<(), String> {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c).map_err(|e| format!("CPU {c}: {e}"))?;
    }
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| format!("/proc/{pid}/task: {e}"))?;
    for t in tasks.flatten() {
        if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
            sched_setaffinity(Pid::from_raw(tid), &set).map_err(|e| format!("sched_setaffinity({cpus:?}): {e}"))?;
        }
    }
    Ok(())
}
