//! Separate processes: the harness re-executes its own binary with a hidden role
//! (`wn-bench --role NAME --role-arg KEY=VALUE … [--cpu N]`) for the other side of every
//! cross-process measurement.
//!
//! The control protocol runs over the child's stdin and stdout, one line each:
//!
//! * child → parent `ready pin=ok` (or `pin=failed:<why>` / `pin=none`) once it is set up;
//! * parent → child `go` where a measurement starts all children together;
//! * child → parent `result {json}` at the end, or `error <message>` on failure (then the
//!   child exits non-zero).
//!
//! Every child runs a watchdog thread that ends it after its deadline, so no child
//! outlives an aborted run; the parent kills (SIGKILL, by pid) any child still running
//! when its [`Child`] handle is dropped.

use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// A child process running a role.
pub struct Child {
    role: String,
    proc: std::process::Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    pin: String,
}

impl Child {
    /// Starts `wn-bench --role ROLE` with `args`, pinned to `cpu` if given; it ends itself
    /// after `deadline`.
    pub fn spawn(role: &str, args: &[(&str, String)], cpu: Option<usize>, deadline: Duration) -> Result<Child, String> {
        let mut cmd = Command::new(self_exe()?);
        cmd.arg("--role").arg(role).arg("--deadline-s").arg(deadline.as_secs().max(1).to_string());
        for (k, v) in args {
            cmd.arg("--role-arg").arg(format!("{k}={v}"));
        }
        if let Some(c) = cpu {
            cmd.arg("--cpu").arg(c.to_string());
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut proc = cmd.spawn().map_err(|e| format!("spawn role {role}: {e}"))?;
        let stdout = proc.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = proc.stdin.take();
        Ok(Child { role: role.to_string(), proc, stdin, lines: rx, pin: "none".into() })
    }

    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.proc.id() as i32
    }

    /// How the child's pinning went (`ok`, `none`, `failed:<why>`).
    pub fn pin(&self) -> &str {
        &self.pin
    }

    fn line(&mut self, timeout: Duration) -> Result<String, String> {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => Ok(l),
            Err(RecvTimeoutError::Timeout) => Err(format!("role {}: no answer within {timeout:?}", self.role)),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.proc.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                Err(format!("role {} ended early ({status}); see its stderr above", self.role))
            }
        }
    }

    fn expect(&mut self, word: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let l = self.line(left)?;
            if let Some(rest) = l.strip_prefix("error ") {
                return Err(format!("role {}: {rest}", self.role));
            }
            if let Some(rest) = l.strip_prefix(word) {
                return Ok(rest.trim().to_string());
            }
            eprintln!("[{}] {l}", self.role);
        }
    }

    /// Waits for the child's `ready` line.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let rest = self.expect("ready", timeout)?;
        self.pin = rest.strip_prefix("pin=").unwrap_or(&rest).to_string();
        Ok(())
    }

    /// Tells the child to start.
    pub fn go(&mut self) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        stdin.write_all(b"go\n").and_then(|_| stdin.flush()).map_err(|e| format!("role {}: go: {e}", self.role))
    }

    /// Waits for the child's `result` line and its exit.
    pub fn result(&mut self, timeout: Duration) -> Result<Value, String> {
        let rest = self.expect("result", timeout)?;
        let v = serde_json::from_str(&rest).map_err(|e| format!("role {}: bad result {rest:?}: {e}", self.role))?;
        let status = self.proc.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("role {} exited with {status}", self.role));
        }
        Ok(v)
    }

    /// Ends the child now (it may be waiting for a round the parent will not send).
    pub fn kill(&mut self) {
        if let Ok(None) = self.proc.try_wait() {
            let _ = self.proc.kill();
        }
        let _ = self.proc.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The binary to re-execute: `/proc/self/exe`, which names this process's own image even
/// after `cargo build` replaced the file on disk during a long run (the path
/// `current_exe` returns then no longer exists).
fn self_exe() -> Result<std::path::PathBuf, String> {
    let proc_exe = std::path::PathBuf::from("/proc/self/exe");
    if proc_exe.exists() {
        return Ok(proc_exe);
    }
    std::env::current_exe().map_err(|e| format!("cannot find the wn-bench binary: {e}"))
}

/// The child's side: its arguments and the control protocol.
pub struct RoleCtx {
    args: HashMap<String, String>,
    pin: String,
}

impl RoleCtx {
    /// Parses `KEY=VALUE` arguments; pins to `cpu` if given.
    pub fn new(role_args: &[String], cpu: Option<usize>) -> RoleCtx {
        let args =
            role_args.iter().filter_map(|a| a.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let pin = match cpu {
            None => "none".to_string(),
            Some(c) => match crate::pinning::pin(0, c) {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("failed:{e}"),
            },
        };
        RoleCtx { args, pin }
    }

    /// Argument `key`.
    pub fn get(&self, key: &str) -> Result<&str, String> {
        self.args.get(key).map(String::as_str).ok_or_else(|| format!("missing role argument {key}"))
    }

    /// Argument `key`, parsed.
    pub fn parse<T: std::str::FromStr>(&self, key: &str) -> Result<T, String> {
        let v = self.get(key)?;
        v.parse().map_err(|_| format!("role argument {key}={v} is not valid"))
    }

    /// Says `ready` (with the pinning outcome).
    pub fn ready(&self) {
        println!("ready pin={}", self.pin);
    }

    /// Waits for `go` on stdin.
    pub fn wait_go(&self) -> Result<(), String> {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map_err(|e| format!("read go: {e}"))?;
        if line.trim() != "go" {
            return Err(format!("expected go, got {line:?}"));
        }
        Ok(())
    }

    /// Reports the result.
    pub fn result(&self, v: &Value) {
        println!("result {v}");
    }
}

/// Ends this (child) process after `deadline`, whatever it is doing.
pub fn watchdog(deadline: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(deadline);
        eprintln!("wn-bench child: deadline of {deadline:?} reached; exiting");
        std::process::exit(3);
    });
}

/// CLOCK_MONOTONIC in nanoseconds: comparable between processes on one host.
pub fn mono_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// Busy-waits until `f` holds, giving up after `limit` (checked every 64k spins).
pub fn spin_until(mut f: impl FnMut() -> bool, limit: Duration) -> Result<(), String> {
    let mut n: u32 = 0;
    let mut start: Option<Instant> = None;
    loop {
        if f() {
            return Ok(());
        }
        std::hint::spin_loop();
        n = n.wrapping_add(1);
        if n & 0xffff == 0 && start.get_or_insert_with(Instant::now).elapsed() > limit {
            return Err(format!("the other side did not answer within {limit:?}"));
        }
    }
}

/// SIGTERM to `child`, then a wait of at most `within` for a clean exit (SIGKILL and an
/// error past it): how the harness stops the daemons it started.
pub(crate) fn terminate(child: &mut std::process::Child, within: Duration) -> Result<(), String> {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + within;
    loop {
        match child.try_wait() {
            Ok(Some(s)) if s.success() => return Ok(()),
            Ok(Some(s)) => return Err(format!("worknoded exited with {s} after SIGTERM")),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("worknoded did not stop within {within:?} of SIGTERM; killed"));
            }
        }
    }
}
