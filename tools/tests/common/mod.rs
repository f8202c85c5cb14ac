//! Helpers for `wn`'s integration tests: a real `worknoded` on a unique segment, and a
//! bounded runner for the real `wn` binary.
//!
//! * The daemon is built and located by `worknode_tests::daemon_bin` (as the workspace's
//!   cross-process tests do), started with small capacities on a segment name unique to
//!   the test, with its journal directory in a private temporary directory, and stopped
//!   with SIGTERM when the [`Daemon`] is dropped (SIGKILL if it does not exit in time).
//!   The `SegmentGuard` inside unlinks the segment and kills whatever it spawned.
//! * Every `wn` run has a deadline; a run that passes it is killed and fails the test.
//! * `wn` runs with a clean environment for the variables it reads (`WORKNODE_*`,
//!   `NO_COLOR`, `CLICOLOR_FORCE`), so the developer's shell cannot change a result.

#![allow(dead_code)]

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use worknode::Capacities;
use worknode_tests::{daemon_bin, Proc, SegmentGuard, Stream, READY_TIMEOUT};

/// Deadline of one `wn` run.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a daemon gets to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Path of the `wn` binary under test.
pub fn wn_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_wn"))
}

/// A running daemon on a unique segment; stopped and cleaned up when dropped.
pub struct Daemon {
    pub guard: SegmentGuard,
    proc: Option<Proc>,
    data_dir: PathBuf,
    pub caps: Capacities,
}

impl Daemon {
    /// Starts `worknoded` with small capacities (nodes 256, events 4096, agents 16, blob
    /// chunks 16) and waits for its ready line.
    pub fn start(test: &str) -> Daemon {
        Daemon::start_with(
            test,
            Capacities { nodes: 256, events: 4096, agents: 16, blob_chunks: 16, ..Capacities::default() },
        )
    }

    /// Starts `worknoded` with `caps`.
    pub fn start_with(test: &str, caps: Capacities) -> Daemon {
        Daemon::start_args(test, caps, &[])
    }

    /// Starts `worknoded` with `caps` and `extra` flags (`--fsync always`, …).
    pub fn start_args(test: &str, caps: Capacities, extra: &[&str]) -> Daemon {
        let guard = SegmentGuard::new(test);
        // The guard's own directory, removed when it drops (the guard sets it on spawn too).
        let data_dir = guard.data_dir();
        let p = guard.spawn(daemon_command(guard.name(), &caps, extra, &data_dir), "worknoded");
        p.wait_for_line(Stream::Stdout, READY_TIMEOUT, |l| l.contains("ready"));
        Daemon { guard, proc: Some(p), data_dir, caps }
    }

    /// The segment name.
    pub fn name(&self) -> &str {
        self.guard.name()
    }

    /// `wn` with this segment and the daemon's data directory, ready for arguments.
    pub fn cmd(&self) -> Command {
        let mut cmd = wn_command(self.name());
        cmd.env("WORKNODE_DATA_DIR", &self.data_dir);
        cmd
    }

    /// The daemon's data directory (journal, snapshots, token files).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Runs `wn ARGS` and returns what it did.
    pub fn run(&self, args: &[&str]) -> Out {
        run(self.cmd().args(args), None)
    }

    /// Runs `wn --agent AGENT ARGS`.
    pub fn run_as(&self, agent: &str, args: &[&str]) -> Out {
        run(self.cmd().arg("--agent").arg(agent).args(args), None)
    }

    /// Runs `wn ARGS` with `input` on stdin.
    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Out {
        run(self.cmd().args(args), Some(input))
    }

    /// Runs `wn --json ARGS`, expects exit 0 and returns the JSON on stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = run(self.cmd().arg("--json").args(args), None);
        out.ok();
        out.json()
    }

    /// Runs `wn --json --agent AGENT ARGS`, expects exit 0 and returns the JSON.
    pub fn json_as(&self, agent: &str, args: &[&str]) -> Value {
        let out = run(self.cmd().args(["--json", "--agent", agent]).args(args), None);
        out.ok();
        out.json()
    }

    /// Runs `wn ARGS` human and `--json`, expecting `exit` and (JSON) error `code` both
    /// times; returns the JSON error object.
    pub fn fails(&self, args: &[&str], exit: i32, code: &str) -> Value {
        let human = self.run(args);
        human.fails(exit);
        assert!(human.stderr.starts_with("wn: ") || human.stderr.starts_with("error:"), "{human:?}");
        let out = run(self.cmd().arg("--json").args(args), None);
        out.fails(exit);
        assert!(out.stdout.trim().is_empty() || serde_json::from_str::<Value>(out.stdout.trim()).is_ok(), "{out:?}");
        let err = out.err_json();
        assert_eq!(err["code"], code, "{out:?}");
        assert_eq!(err["exit"], exit, "{out:?}");
        assert!(err["error"].as_str().is_some_and(|e| !e.is_empty()), "{out:?}");
        assert!(err["hint"].is_string(), "{out:?}");
        err
    }

    /// Spawns `wn ARGS` in the background (collected line by line; killed by the guard).
    pub fn spawn(&self, args: &[&str], label: &str) -> Proc {
        let mut cmd = self.cmd();
        cmd.args(args);
        self.guard.spawn(cmd, label)
    }

    /// Kills the daemon (SIGKILL): the segment stays, Ready, with nobody reaping leases.
    /// Sends `sig` to the daemon (SIGSTOP / SIGCONT to make it stall and resume).
    pub fn signal_daemon(&self, sig: nix::sys::signal::Signal) {
        if let Some(p) = &self.proc {
            p.signal(sig);
        }
    }

    pub fn kill_daemon(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// A host restart: SIGKILL the daemon, remove the segment from shared memory (as a
    /// reboot would), and start the daemon again on the same data directory, which
    /// rebuilds the segment from its snapshot and journal.
    pub fn host_restart(&mut self, extra: &[&str]) {
        self.kill_daemon();
        let _ = worknode::Segment::unlink(self.guard.name());
        let _ = std::fs::remove_file(self.guard.lock_path());
        let cmd = daemon_command(self.guard.name(), &self.caps, extra, &self.data_dir);
        let p = self.guard.spawn(cmd, "worknoded");
        p.wait_for_line(Stream::Stdout, READY_TIMEOUT, |l| l.contains("ready"));
        self.proc = Some(p);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.signal(Signal::SIGTERM);
            if p.try_wait_exit(STOP_TIMEOUT).is_none() {
                p.kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// `worknoded --segment NAME` with `caps` and `extra` flags, journaling (when it keeps a
/// journal) into the private `data_dir`.
fn daemon_command(segment: &str, caps: &Capacities, extra: &[&str], data_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(daemon_bin());
    cmd.arg("--segment")
        .arg(segment)
        .args(["--nodes", &caps.nodes.to_string()])
        .args(["--events", &caps.events.to_string()])
        .args(["--agents", &caps.agents.to_string()])
        .args(["--blob-chunks", &caps.blob_chunks.to_string()])
        .args(extra)
        .env_remove("WORKNODE_SEGMENT")
        .env("WORKNODE_DATA_DIR", data_dir);
    cmd
}

/// `wn` aimed at `segment`, with the variables it reads cleared.
pub fn wn_command(segment: &str) -> Command {
    let mut cmd = Command::new(wn_bin());
    for v in [
        "WORKNODE_AGENT",
        "WORKNODE_JSON",
        "WORKNODE_ROLE",
        "WORKNODE_TOKEN",
        "WORKNODE_DATA_DIR",
        "NO_COLOR",
        "CLICOLOR_FORCE",
    ] {
        cmd.env_remove(v);
    }
    cmd.env("WORKNODE_SEGMENT", segment);
    cmd
}

/// What one run did.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stdout_bytes: Vec<u8>,
    pub stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}", self.code, self.stdout, self.stderr)
    }
}

impl Out {
    /// Asserts exit 0.
    pub fn ok(&self) -> &Out {
        assert_eq!(self.code, 0, "expected success: {self:#?}");
        self
    }

    /// Asserts exit `code` and an empty stdout... unless the verb prints a report first
    /// (`doctor`), which callers check themselves.
    pub fn fails(&self, code: i32) -> &Out {
        assert_eq!(self.code, code, "expected exit {code}: {self:#?}");
        assert!(!self.stderr.trim().is_empty(), "a failure must explain itself on stderr: {self:#?}");
        self
    }

    /// stdout as one JSON value.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {self:#?}"))
    }

    /// stdout as JSON lines.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}\n{self:#?}")))
            .collect()
    }

    /// stderr as one JSON error object.
    pub fn err_json(&self) -> Value {
        let line = self.stderr.lines().last().unwrap_or("");
        serde_json::from_str(line).unwrap_or_else(|e| panic!("stderr is not a JSON error ({e}): {self:#?}"))
    }

    /// The first whitespace-separated word of stdout (a UUID, for verbs that print one).
    pub fn first_word(&self) -> String {
        self.stdout.split_whitespace().next().unwrap_or_else(|| panic!("no output: {self:#?}")).to_string()
    }
}

/// Runs `cmd` to completion within [`RUN_TIMEOUT`], feeding `input` on stdin.
pub fn run(cmd: &mut Command, input: Option<&[u8]>) -> Out {
    run_within(cmd, input, RUN_TIMEOUT)
}

/// Runs `cmd` to completion within `timeout`, feeding `input` on stdin; a run that
/// passes it is killed (SIGKILL) and fails the test.
pub fn run_within(cmd: &mut Command, input: Option<&[u8]>, timeout: Duration) -> Out {
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if let Some(bytes) = input {
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let bytes = bytes.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
    }
    let mut out_pipe = child.stdout.take().expect("stdout is piped");
    let mut err_pipe = child.stderr.take().expect("stderr is piped");
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out_pipe.read_to_end(&mut b);
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err_pipe.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let stdout_bytes = out_t.join().expect("stdout reader");
    let stderr = String::from_utf8_lossy(&err_t.join().expect("stderr reader")).into_owned();
    Out {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout_bytes).into_owned(),
        stdout_bytes,
        stderr,
    }
}

/// Polls `f` every 20 ms until it returns `Some`, at most `timeout`; panics with `what`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
