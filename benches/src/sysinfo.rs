//! What the results were measured on: topology, CPU model, kernel, clock source, load and
//! steal time (from `/proc/stat`, before and after, for the whole run and per
//! measurement), and the file system holding the durability files.

use serde_json::{json, Value};
use std::path::Path;

/// Aggregate CPU times from the first line of `/proc/stat`, in clock ticks.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTimes {
    /// Time stolen by the hypervisor.
    pub steal: u64,
    /// All time (user + nice + system + idle + iowait + irq + softirq + steal).
    pub total: u64,
}

impl CpuTimes {
    /// Reads `/proc/stat` (zeros if it cannot).
    pub fn now() -> CpuTimes {
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else { return CpuTimes::default() };
        let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
        CpuTimes { steal: f.get(7).copied().unwrap_or(0), total: f.iter().take(8).sum() }
    }

    /// Steal time between `self` (before) and `after`, as a percentage of all CPU time.
    pub fn steal_pct(&self, after: &CpuTimes) -> f64 {
        let total = after.total.saturating_sub(self.total);
        if total == 0 {
            return 0.0;
        }
        100.0 * after.steal.saturating_sub(self.steal) as f64 / total as f64
    }
}

/// The machine description recorded with the results.
#[derive(Clone, Debug, Default)]
pub struct SysInfo {
    /// Online CPUs (`/proc/cpuinfo` processors).
    pub nproc: usize,
    /// CPUs this process may run on.
    pub allowed: Vec<usize>,
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// `uname -srvm`.
    pub kernel: String,
    /// The kernel clock source (`tsc` makes `clock_gettime` a vDSO call).
    pub clocksource: String,
    /// `/proc/loadavg` at start.
    pub load_before: String,
    /// `/proc/loadavg` at the end.
    pub load_after: String,
    /// CPU times at start.
    pub cpu_before: CpuTimes,
    /// CPU times at the end.
    pub cpu_after: CpuTimes,
    /// File system type of the directory holding journals and SQLite files.
    pub tmp_fs: String,
}

fn read_trim(p: &str) -> String {
    std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_else(|_| "unknown".into())
}

/// The file system type of `dir` (`ext4`, `tmpfs`, …), from `/proc/mounts`.
pub fn fs_type(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, mnt, ty) = (f.next()?, f.next()?, f.next()?);
            dir.starts_with(mnt).then(|| (mnt.len(), ty.to_string()))
        })
        .max_by_key(|(n, _)| *n)
        .map_or_else(|| "unknown".into(), |(_, t)| t)
}

impl SysInfo {
    /// Collects everything but the end-of-run values.
    pub fn collect(tmp: &Path) -> SysInfo {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_string(), |(_, m)| m.trim().to_string());
        let nproc = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
        let kernel = nix::sys::utsname::uname().map_or_else(
            |_| "unknown".to_string(),
            |u| {
                format!(
                    "{} {} {} {}",
                    u.sysname().to_string_lossy(),
                    u.release().to_string_lossy(),
                    u.version().to_string_lossy(),
                    u.machine().to_string_lossy()
                )
            },
        );
        SysInfo {
            nproc,
            allowed: crate::pinning::allowed_cpus(),
            cpu_model,
            kernel,
            clocksource: read_trim("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
            load_before: read_trim("/proc/loadavg"),
            load_after: String::new(),
            cpu_before: CpuTimes::now(),
            cpu_after: CpuTimes::default(),
            tmp_fs: fs_type(tmp),
        }
    }

    /// Records the end-of-run values.
    pub fn finish(&mut self) {
        self.load_after = read_trim("/proc/loadavg");
        self.cpu_after = CpuTimes::now();
    }

    /// Steal time over the run, in percent.
    pub fn steal_pct(&self) -> f64 {
        self.cpu_before.steal_pct(&self.cpu_after)
    }

    /// Human-readable lines.
    pub fn lines(&self) -> Vec<String> {
        vec![
            format!("cpu        {} ({} online, allowed {:?})", self.cpu_model, self.nproc, self.allowed),
            format!("kernel     {}", self.kernel),
            format!("clock      {}", self.clocksource),
            format!("load       {} (start) / {} (end)", self.load_before, self.load_after),
            format!(
                "steal      {:.2}% of CPU time during the run ({} ticks)",
                self.steal_pct(),
                self.cpu_after.steal.saturating_sub(self.cpu_before.steal)
            ),
            format!("files on   {}", self.tmp_fs),
        ]
    }

    /// The JSON object.
    pub fn json(&self) -> Value {
        json!({
            "nproc": self.nproc,
            "allowed_cpus": self.allowed,
            "cpu_model": self.cpu_model,
            "kernel": self.kernel,
            "clocksource": self.clocksource,
            "loadavg_before": self.load_before,
            "loadavg_after": self.load_after,
            "steal_ticks_before": self.cpu_before.steal,
            "steal_ticks_after": self.cpu_after.steal,
            "steal_pct": self.steal_pct(),
            "files_fs": self.tmp_fs,
        })
    }
}
