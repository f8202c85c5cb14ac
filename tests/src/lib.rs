//! Helpers for Worknode's cross-process integration tests.
//!
//! The tests in `tests/tests/*.rs` exercise a segment from several **real processes**.
//! The conventions, and the helper that implements each:
//!
//! * **Children are the test binary itself.** A test spawns a child by re-running its own
//!   executable ([`role_command`], or [`SegmentGuard::spawn_role`]) as
//!   `current_exe --exact child_entry --nocapture --test-threads=1` with the role named in
//!   [`ROLE_ENV`]. Every test file has a `#[test] fn child_entry()` that calls
//!   [`child_main`], which returns at once unless [`ROLE_ENV`] is set. Nothing forks
//!   inside the harness.
//! * **Children report on stdout.** A child prints progress lines with [`say`] and one
//!   final JSON report (returned by its role function) that the parent reads with
//!   [`Proc::expect_report`]. A child that panics exits with 101 and its stderr is shown
//!   in the parent's failure message.
//! * **Every wait is bounded.** [`Proc::wait_exit`] polls `try_wait` against a deadline
//!   and kills the child when it passes; [`Proc::wait_for_line`] waits for output with a
//!   deadline. A hung test is a failed test. No helper measures or asserts a duration.
//! * **Tests clean up.** [`unique_name`] gives each test its own segment name, and
//!   [`SegmentGuard`] unlinks that segment (and the daemon's lock file) and kills every
//!   process it spawned when dropped, on success and on panic alike. A [`Proc`] also
//!   kills and reaps its process when dropped. Children ask the kernel to kill them
//!   if the test thread that spawned them goes away (`PR_SET_PDEATHSIG`).
//! * **Workspace binaries are built on demand.** Tests in this package cannot use
//!   `CARGO_BIN_EXE_*` for another package's binaries; [`workspace_bin`] (and
//!   [`daemon_bin`], [`wn_bin`]) runs `cargo build` for them once per process.
//!
//! [`raw`] reads and writes segment bytes through the `/dev/shm` file, to fabricate the
//! states a crashed process or a foreign program leaves behind.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};
use worknode::{OwnerTag, Segment};

/// Environment variable naming the role a re-run test binary plays.
pub const ROLE_ENV: &str = "WN_TEST_ROLE";
/// Environment variable holding the segment name a child should attach to.
pub const SEGMENT_ENV: &str = "WN_TEST_SEGMENT";
/// Environment variable holding the spawning process's pid (a child exits if its
/// parent is already gone).
pub const PARENT_ENV: &str = "WN_TEST_PARENT_PID";
/// Name of the `#[test]` function every test file defines as the child entry point.
pub const CHILD_ENTRY: &str = "child_entry";
/// Prefix of the one line carrying a child's final JSON report.
pub const REPORT_PREFIX: &str = "WN-REPORT ";
/// Prefix of a child's progress lines (see [`say`]).
pub const SAY_PREFIX: &str = "WN-SAY ";

/// Default deadline for a child process to finish its work.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(90);
/// Deadline for the daemon to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for building a workspace binary (cargo may wait for a lock held by
/// another build).
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(300);
/// Interval of the bounded `try_wait` polls.
const POLL: Duration = Duration::from_millis(5);

static NAME_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A segment name unique to this process and call: `wn-t-{pid}-{counter}-{test}`, with
/// `test` reduced to `[A-Za-z0-9._-]` and the whole cut to at most 200 bytes (the limit
/// of [`worknode::validate_name`]).
pub fn unique_name(test: &str) -> String {
    let n = NAME_COUNTER.fetch_add(1, Ordering::Relaxed);
    let clean: String =
        test.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    let mut name = format!("wn-t-{}-{n}-{clean}", std::process::id());
    name.truncate(200);
    name
}

/// Path of the daemon's instance lock file for a segment (`worknoded` keeps it in its
/// user's private runtime directory, [`worknode::runtime_dir`]).
pub fn lock_path(name: &str) -> PathBuf {
    worknode::runtime_dir(worknode::effective_uid()).join(format!("{name}.lock"))
}

// ---------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------

/// Which output stream of a [`Proc`] to look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout = 0,
    /// Standard error.
    Stderr = 1,
}

#[derive(Default)]
struct Captured {
    stdout: Vec<String>,
    stderr: Vec<String>,
    /// Whether each stream (stdout, stderr) has reached end of file.
    closed: [bool; 2],
}

impl Captured {
    fn lines(&self, stream: Stream) -> &[String] {
        match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        }
    }
}

struct Shared {
    captured: Mutex<Captured>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Captured> {
        self.captured.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A spawned process whose stdout and stderr are collected line by line in the
/// background. Dropping it kills the process (if still running) and reaps it.
pub struct Proc {
    label: String,
    child: Child,
    status: Option<ExitStatus>,
    shared: Arc<Shared>,
}

fn pump(shared: Arc<Shared>, stream: Stream, source: impl Read + Send + 'static) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(source);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_string();
                    let mut c = shared.lock();
                    match stream {
                        Stream::Stdout => c.stdout.push(line),
                        Stream::Stderr => c.stderr.push(line),
                    }
                    shared.changed.notify_all();
                }
            }
        }
        shared.lock().closed[stream as usize] = true;
        shared.changed.notify_all();
    });
}

impl Proc {
    /// Spawns `cmd` with stdin closed and stdout/stderr captured. `label` names the
    /// process in failure messages.
    pub fn spawn(mut cmd: Command, label: &str) -> Proc {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {label} ({cmd:?}): {e}"));
        let shared = Arc::new(Shared { captured: Mutex::new(Captured::default()), changed: Condvar::new() });
        let out = child.stdout.take().expect("stdout is piped");
        let err = child.stderr.take().expect("stderr is piped");
        pump(shared.clone(), Stream::Stdout, out);
        pump(shared.clone(), Stream::Stderr, err);
        Proc { label: label.to_string(), child, status: None, shared }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The label given at spawn.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Everything the process wrote to `stream` so far, one line per line.
    pub fn output(&self, stream: Stream) -> String {
        let c = self.shared.lock();
        let mut s = String::new();
        for l in c.lines(stream) {
            let _ = writeln!(s, "{l}");
        }
        s
    }

    /// Both streams, labelled, for failure messages.
    pub fn transcript(&self) -> String {
        format!(
            "--- {} (pid {}) stdout ---\n{}--- stderr ---\n{}---",
            self.label,
            self.pid(),
            self.output(Stream::Stdout),
            self.output(Stream::Stderr)
        )
    }

    /// Waits up to `timeout` for a line of `stream` for which `pred` holds (lines already
    /// printed count) and returns it. Panics, with the transcript, if the stream ends or
    /// the deadline passes first.
    pub fn wait_for_line(&self, stream: Stream, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        let mut c = self.shared.lock();
        loop {
            if let Some(l) = c.lines(stream).iter().find(|l| pred(l)) {
                return l.clone();
            }
            let stream_open = !c.closed[stream as usize];
            let now = Instant::now();
            if !stream_open || now >= deadline {
                drop(c);
                let why = if stream_open { format!("within {timeout:?}") } else { "before its output ended".into() };
                panic!("{} printed no matching {stream:?} line {why}\n{}", self.label, self.transcript());
            }
            c = self.shared.changed.wait_timeout(c, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Waits for a progress line `WN-SAY {what}` from a child (see [`say`]).
    pub fn wait_for_say(&self, what: &str, timeout: Duration) {
        let want = format!("{SAY_PREFIX}{what}");
        self.wait_for_line(Stream::Stdout, timeout, |l| l == want);
    }

    /// Polls `try_wait` until the process exits, at most `timeout`; returns `None` if it
    /// is still running then (it is left running).
    pub fn try_wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.status {
            return Some(s);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => {
                    self.status = Some(s);
                    self.drain_output(Duration::from_secs(5));
                    return Some(s);
                }
                Ok(None) => {}
                Err(e) => panic!("try_wait on {} failed: {e}", self.label),
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits up to `timeout` for the process to exit and returns its status. If it does
    /// not, kills it and panics with its transcript.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.try_wait_exit(timeout) {
            Some(s) => s,
            None => {
                self.kill();
                panic!("{} did not exit within {timeout:?}; killed it\n{}", self.label, self.transcript());
            }
        }
    }

    /// Waits for the process to exit successfully and returns its JSON report (the
    /// `WN-REPORT` line). Panics with the transcript otherwise.
    pub fn expect_report(&mut self, timeout: Duration) -> serde_json::Value {
        let status = self.wait_exit(timeout);
        assert!(status.success(), "{} failed with {status}\n{}", self.label, self.transcript());
        self.report().unwrap_or_else(|| panic!("{} exited 0 without a report\n{}", self.label, self.transcript()))
    }

    /// The child's JSON report, if it printed one.
    pub fn report(&self) -> Option<serde_json::Value> {
        let c = self.shared.lock();
        let line = c.stdout.iter().rev().find_map(|l| l.strip_prefix(REPORT_PREFIX))?;
        Some(serde_json::from_str(line).unwrap_or_else(|e| panic!("bad report from {}: {e}: {line}", self.label)))
    }

    /// Sends `sig` to the process, unless it has already been reaped (so the pid cannot
    /// name some other process).
    pub fn signal(&self, sig: Signal) {
        if self.status.is_none() {
            kill(Pid::from_raw(self.pid() as i32), sig).unwrap_or_else(|e| panic!("kill({sig}) {}: {e}", self.label));
        }
    }

    /// Kills the process (SIGKILL) and reaps it (bounded). Does nothing once reaped.
    pub fn kill(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.try_wait_exit(Duration::from_secs(10));
        }
    }

    /// Waits (bounded) for both reader threads to reach end of file.
    fn drain_output(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut c = self.shared.lock();
        while c.closed != [true, true] {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            c = self.shared.changed.wait_timeout(c, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until a process is in state `T` (stopped) according to `/proc/PID/stat`, at
/// most `timeout`. Returns whether it was seen stopped.
pub fn wait_stopped(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) {
                if rest.split_ascii_whitespace().next() == Some("T") {
                    return true;
                }
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------------------
// Child roles
// ---------------------------------------------------------------------------------------

/// A command that re-runs this test binary as a child playing `role`: the binary is
/// `std::env::current_exe()`, run as `--exact child_entry --nocapture --test-threads=1`
/// with [`ROLE_ENV`] and [`PARENT_ENV`] set. Add role parameters with `.env(...)`.
pub fn role_command(role: &str) -> Command {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", CHILD_ENTRY, "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role)
        .env(PARENT_ENV, std::process::id().to_string());
    cmd
}

/// The body of every test file's `#[test] fn child_entry()`. Returns at once unless
/// [`ROLE_ENV`] is set; otherwise arranges to die with the parent, runs `run(role)` and
/// prints its result as the report line. A role signals failure by panicking.
pub fn child_main(run: impl FnOnce(&str) -> serde_json::Value) {
    let Ok(role) = std::env::var(ROLE_ENV) else { return };
    // Die with the test thread that spawned us, so that no child outlives a test, even
    // one whose process was killed before its guards ran.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if let Some(parent) = std::env::var(PARENT_ENV).ok().and_then(|p| p.parse::<i32>().ok()) {
        if nix::unistd::getppid().as_raw() != parent {
            eprintln!("child {role}: parent {parent} is gone; exiting");
            std::process::exit(99);
        }
    }
    let report = run(&role);
    let mut out = std::io::stdout().lock();
    // The harness has printed `test child_entry ... ` without a newline: start afresh.
    writeln!(out, "\n{REPORT_PREFIX}{report}").expect("write report");
    out.flush().expect("flush report");
}

/// Prints a progress line `WN-SAY {what}` and flushes it, for a parent waiting in
/// [`Proc::wait_for_say`].
pub fn say(what: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "\n{SAY_PREFIX}{what}").expect("write progress line");
    out.flush().expect("flush progress line");
}

/// A required environment variable of a child role (panics with its name if missing).
pub fn env_str(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("child role needs environment variable {name}"))
}

/// A required numeric environment variable of a child role.
pub fn env_u64(name: &str) -> u64 {
    let v = env_str(name);
    v.parse().unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}"))
}

/// Handles passed to a child as comma-separated [`worknode::Handle::to_raw`] words.
pub fn handles_to_env(handles: &[worknode::Handle]) -> String {
    handles.iter().map(|h| h.to_raw().to_string()).collect::<Vec<_>>().join(",")
}

/// Parses the value made by [`handles_to_env`] from environment variable `name`.
pub fn handles_from_env(name: &str) -> Vec<worknode::Handle> {
    env_str(name)
        .split(',')
        .map(|w| {
            let raw: u64 = w.parse().unwrap_or_else(|e| panic!("{name}: bad handle {w:?}: {e}"));
            worknode::Handle::from_raw(raw).unwrap_or_else(|| panic!("{name}: {w} is not a handle"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The segment guard
// ---------------------------------------------------------------------------------------

/// Owns a test's segment name. When dropped (on success or panic) it kills every
/// process it spawned that still runs, unlinks `/dev/shm/NAME` and removes the daemon's
/// lock file ([`lock_path`]); missing files are not an error.
pub struct SegmentGuard {
    name: String,
    spawned: Mutex<Vec<OwnerTag>>,
}

impl SegmentGuard {
    /// A guard for a fresh [`unique_name`] derived from `test`.
    pub fn new(test: &str) -> SegmentGuard {
        SegmentGuard { name: unique_name(test), spawned: Mutex::new(Vec::new()) }
    }

    /// The segment name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/dev/shm/NAME`.
    pub fn shm_path(&self) -> PathBuf {
        worknode::shm_path(&self.name)
    }

    /// The daemon's lock file for this segment.
    pub fn lock_path(&self) -> PathBuf {
        lock_path(&self.name)
    }

    /// The journal directory daemons spawned through this guard use (removed on drop).
    pub fn data_dir(&self) -> PathBuf {
        std::env::temp_dir().join("worknode-tests").join(&self.name)
    }

    /// Spawns `cmd` as a [`Proc`] and remembers its identity (pid and start time) so
    /// that dropping the guard kills it if it still runs.
    pub fn spawn(&self, mut cmd: Command, label: &str) -> Proc {
        // A daemon journals into this guard's own data directory, removed on drop.
        if std::env::var_os("WORKNODE_DATA_DIR").is_none() {
            cmd.env("WORKNODE_DATA_DIR", self.data_dir());
        }
        let p = Proc::spawn(cmd, label);
        // The child is not reaped yet, so its pid still names it.
        let start = worknode::process_start_ticks(p.pid()).unwrap_or(0);
        self.spawned.lock().unwrap_or_else(|e| e.into_inner()).push(OwnerTag::new(p.pid(), start));
        p
    }

    /// Spawns this test binary as a child playing `role`, with [`SEGMENT_ENV`] set to
    /// this guard's name and the extra `env` pairs.
    pub fn spawn_role(&self, role: &str, env: &[(&str, String)]) -> Proc {
        let mut cmd = role_command(role);
        cmd.env(SEGMENT_ENV, &self.name);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.spawn(cmd, role)
    }

    /// Spawns `worknoded --segment NAME ARGS...` (built on demand by [`daemon_bin`]).
    pub fn spawn_daemon(&self, args: &[&str]) -> Proc {
        let mut cmd = Command::new(daemon_bin());
        cmd.arg("--segment").arg(&self.name).args(args).env_remove(worknode::SEGMENT_ENV);
        self.spawn(cmd, "worknoded")
    }
}

impl Drop for SegmentGuard {
    fn drop(&mut self) {
        for tag in self.spawned.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            // `is_alive` compares the start time too, so a reused pid is never killed.
            if tag.is_alive() {
                let _ = kill(Pid::from_raw(tag.pid() as i32), Signal::SIGKILL);
            }
        }
        let _ = Segment::unlink(&self.name);
        let _ = std::fs::remove_file(self.lock_path());
        let _ = std::fs::remove_dir_all(self.data_dir());
    }
}

// ---------------------------------------------------------------------------------------
// Workspace binaries
// ---------------------------------------------------------------------------------------

static BUILT: OnceLock<Mutex<HashMap<String, Result<PathBuf, String>>>> = OnceLock::new();

/// The workspace root (the parent of this package's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// Path of binary `bin` of workspace package `package`, built with
/// `$CARGO build -p PACKAGE --bin BIN` the first time it is asked for in this process
/// (later calls return the cached result; a failed build fails every later call too).
///
/// The output directory is derived from this test binary's own path:
/// `…/target/debug/deps/TEST` → `…/target/debug/BIN`, and cargo is pointed at the same
/// target directory and profile. `$CARGO` is set by `cargo test`; `cargo` from `PATH`
/// is the fallback. Cross-compiled layouts (`target/TRIPLE/debug`) are not supported.
pub fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    let map = BUILT.get_or_init(|| Mutex::new(HashMap::new()));
    // Held during the build: concurrent tests wait for one build instead of racing.
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    let key = format!("{package}/{bin}");
    let result = map.entry(key).or_insert_with(|| build(package, bin)).clone();
    result.unwrap_or_else(|e| panic!("{e}"))
}

fn build(package: &str, bin: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    // …/target/<profile>/deps/<test binary>
    let profile_dir =
        exe.parent().and_then(Path::parent).ok_or_else(|| format!("unexpected test binary path {}", exe.display()))?;
    let target_dir = profile_dir.parent().ok_or_else(|| format!("unexpected profile dir {}", profile_dir.display()))?;
    let profile = profile_dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug").to_string();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .arg("--target-dir")
        .arg(target_dir);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let mut p = Proc::spawn(cmd, &format!("cargo build -p {package} --bin {bin}"));
    let status = match p.try_wait_exit(BUILD_TIMEOUT) {
        Some(s) => s,
        None => {
            p.kill();
            return Err(format!("{} did not finish within {BUILD_TIMEOUT:?}\n{}", p.label(), p.transcript()));
        }
    };
    if !status.success() {
        return Err(format!("{} failed with {status}\n{}", p.label(), p.transcript()));
    }
    let path = profile_dir.join(bin);
    if !path.is_file() {
        return Err(format!("{} succeeded but {} does not exist", p.label(), path.display()));
    }
    Ok(path)
}

/// The `worknoded` daemon binary (see [`workspace_bin`]).
pub fn daemon_bin() -> PathBuf {
    workspace_bin("worknoded", "worknoded")
}

/// The `wn` tool binary (see [`workspace_bin`]).
pub fn wn_bin() -> PathBuf {
    workspace_bin("wn", "wn")
}

// ---------------------------------------------------------------------------------------
// Raw segment bytes
// ---------------------------------------------------------------------------------------

/// Byte-level access to a segment through its `/dev/shm` file, for fabricating damaged
/// or crashed states. Use only while no other process is writing the bytes touched.
pub mod raw {
    use std::fs::OpenOptions;
    use std::mem::offset_of;
    use std::os::unix::fs::FileExt;
    use std::path::Path;
    use worknode::layout::{hdr, slot, Geometry, HeaderFixed, NodeRecord, Region, NODE_SLOT_SIZE};
    use worknode::Capacities;

    /// Byte offset of the segment's state word (`ControlLine::state`; 256 in layout 1).
    pub const STATE_OFFSET: u64 = hdr::STATE as u64;
    /// Byte offset of the header's `layout_version` u32 (8 in layout 1).
    pub const VERSION_OFFSET: u64 = offset_of!(HeaderFixed, layout_version) as u64;
    /// Size of one record copy in a node slot.
    pub const RECORD_SIZE: usize = size_of::<NodeRecord>();

    /// Reads the native-endian u64 at `offset`.
    pub fn read_u64(path: &Path, offset: u64) -> u64 {
        let f = OpenOptions::new().read(true).open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, offset).unwrap_or_else(|e| panic!("read {}@{offset}: {e}", path.display()));
        u64::from_ne_bytes(b)
    }

    /// Writes `bytes` at `offset`.
    pub fn write_bytes(path: &Path, offset: u64, bytes: &[u8]) {
        let f = OpenOptions::new().write(true).open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        f.write_all_at(bytes, offset).unwrap_or_else(|e| panic!("write {}@{offset}: {e}", path.display()));
    }

    /// Writes the native-endian u64 `v` at `offset`.
    pub fn write_u64(path: &Path, offset: u64, v: u64) {
        write_bytes(path, offset, &v.to_ne_bytes());
    }

    /// Byte offset of node slot `index` in a segment of capacities `caps`.
    pub fn slot_offset(caps: &Capacities, index: u32) -> u64 {
        let geo = Geometry::new(caps).expect("valid capacities");
        geo.regions[Region::Nodes as usize].offset + index as u64 * NODE_SLOT_SIZE
    }

    /// Byte offset of record copy `copy` (0 or 1) of node slot `index`.
    pub fn record_offset(caps: &Capacities, index: u32, copy: u64) -> u64 {
        slot_offset(caps, index) + slot::RECORDS as u64 + copy * RECORD_SIZE as u64
    }
}

// ---------------------------------------------------------------------------------------
// Waiting and reading back
// ---------------------------------------------------------------------------------------

/// Polls `cond` every millisecond until it holds; panics with `what()` after `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool, what: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "not within {timeout:?}: {}", what());
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Every event retained in the ring, oldest first (panics if a lap lost any).
pub fn ring_events(seg: &Segment) -> Vec<worknode::Event> {
    let mut r = seg.reader(worknode::Start::Oldest);
    let mut out = Vec::new();
    loop {
        match r.try_next() {
            Ok(Some(e)) => out.push(e),
            Ok(None) => return out,
            Err(e) => panic!("reading the ring after {} events: {e:?}", out.len()),
        }
    }
}
