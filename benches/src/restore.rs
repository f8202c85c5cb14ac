//! Restore time: how long `worknoded` takes, from being started to printing its `ready`
//! line, over a data directory that holds a board of 100 000 tasks and 1 000 000 events
//! (5 000 / 50 000 with `--quick`).
//!
//! The harness starts the real daemon (`--fsync batch`, `--grace-ms 0`) with a fresh data
//! directory, fills it through the library (the board of [`crate::scale::board`], then
//! 64-byte events appended back to back until the ring's tail reaches the event count),
//! waits until the journal holds every event, and then, per row:
//!
//! * `restore-100k`: stops it with SIGTERM (a clean shutdown: the journal drains, the
//!   segment is removed) and times a restart, which rebuilds the segment from the newest
//!   snapshot plus the journal files after it;
//! * `restore-100k-adopt`: SIGKILLs it (the segment stays in `/dev/shm`) and times a
//!   restart, which adopts the live segment — what a daemon crash costs;
//! * `restore-100k-lost`: SIGKILLs it and removes the segment, as a host restart would,
//!   and times a restart that rebuilds from the journal of a daemon that never shut down
//!   (the torn-tail scan included).
//!
//! Each restart is repeated (stop the same way again, start again) for a few samples,
//! and after each the board is checked: every task is there with its status, and the
//! ring continues past the events written.

use crate::histogram::Recorder;
use crate::report::Rate;
use crate::scale::{board, slots, Board};
use crate::shm::TempDir;
use crate::suite::{Ctx, Fail, Measured};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use worknode::{Access, EventKind, NewEvent, Segment};

const KIND: EventKind = EventKind(1004);
/// How long a start may take before the row fails.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// How the daemon goes down before the timed start.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// SIGTERM: the journal drains, the segment is removed; the start rebuilds.
    Clean,
    /// SIGKILL: the segment stays; the start adopts it.
    KillAdopt,
    /// SIGKILL and the segment removed (a host restart); the start rebuilds.
    KillLost,
}

/// (tasks, events) of a run.
fn sizes(ctx: &Ctx) -> (u32, u64) {
    if ctx.quick {
        (5_000, 50_000)
    } else {
        (100_000, 1_000_000)
    }
}

/// A `worknoded` this row started; SIGKILLed on drop if still running.
struct Worknoded {
    proc: std::process::Child,
}

impl Worknoded {
    /// Starts it and waits for the `ready` line; returns it and the seconds that took.
    fn start(bin: &Path, args: &[String]) -> Result<(Worknoded, f64, String), String> {
        let t = Instant::now();
        let mut proc = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("start {}: {e}", bin.display()))?;
        let (tx, rx) = mpsc::channel();
        let (out, err) = (proc.stdout.take().expect("piped"), proc.stderr.take().expect("piped"));
        let tx2 = tx.clone();
        std::thread::spawn(move || BufReader::new(out).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
        std::thread::spawn(move || BufReader::new(err).lines().map_while(Result::ok).for_each(|l| drop(tx2.send(l))));
        let d = Worknoded { proc };
        let mut log = Vec::new();
        loop {
            match rx.recv_timeout(START_TIMEOUT.saturating_sub(t.elapsed())) {
                Ok(l) if l.contains(" ready ") => {
                    let secs = t.elapsed().as_secs_f64();
                    // What the start did (rebuilt / adopted), for the notes.
                    let how = log.iter().find(|l: &&String| l.contains("rebuilt from")).cloned().unwrap_or_else(|| {
                        l.split(" and ready").next().unwrap_or("").trim_start_matches("worknoded: ").to_string()
                    });
                    return Ok((d, secs, how));
                }
                Ok(l) => log.push(l),
                Err(_) => return Err(format!("worknoded not ready within {START_TIMEOUT:?}: {}", log.join(" | "))),
            }
        }
    }

    /// SIGTERM, then a bounded wait for a clean exit.
    fn term(&mut self) -> Result<(), String> {
        crate::proc::terminate(&mut self.proc, Duration::from_secs(60))
    }

    /// SIGKILL (this child, by its pid) and reap it.
    fn kill(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

impl Drop for Worknoded {
    fn drop(&mut self) {
        if let Ok(None) = self.proc.try_wait() {
            self.kill();
        }
    }
}

/// Checks the segment after a start: the board's counts, and the ring past `events`.
fn check(name: &str, b: &Board, events: u64) -> Result<(), String> {
    let seg = Segment::attach(name, Access::ReadOnly).map_err(|e| format!("attach after restart: {e}"))?;
    let r = seg.rollup(b.project, None).map_err(|e| format!("rollup after restart: {e}"))?;
    if r.total != b.tasks as u64 || r.by_status != b.by_status {
        return Err(format!(
            "after restart {} tasks {:?}, the board had {} {:?}",
            r.total, r.by_status, b.tasks, b.by_status
        ));
    }
    if seg.ring_tail() < events {
        return Err(format!("after restart the ring's tail is {}, {events} events were written", seg.ring_tail()));
    }
    Ok(())
}

fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(Result::ok).filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
        })
        .unwrap_or(0)
}

/// One restore row.
pub fn run(ctx: &Ctx, stop: Stop) -> Result<Measured, Fail> {
    let bin: PathBuf = crate::durability::locate_binary("worknoded")?;
    let (tasks, events) = sizes(ctx);
    let repeats = if ctx.quick { 2 } else { 5 };
    let name = format!("wn-bench-{}-restore", std::process::id());
    let _ = Segment::unlink(&name);
    let data = TempDir::new(&ctx.tmp, "restore")?;
    let args: Vec<String> = [
        "--segment",
        &name,
        "--nodes",
        &slots(tasks).to_string(),
        "--events",
        "65536",
        "--fsync",
        "batch",
        "--grace-ms",
        "0",
        "--data-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([data.path().display().to_string()])
    .collect();
    // The segment is removed on every path out of this row (the daemon may be killed).
    struct Unlink<'a>(&'a str);
    impl Drop for Unlink<'_> {
        fn drop(&mut self) {
            let _ = Segment::unlink(self.0);
        }
    }
    let _unlink = Unlink(&name);
    let (mut d, _, _) = Worknoded::start(&bin, &args)?;
    let fill = Instant::now();
    let b = {
        let seg = Segment::attach(&name, Access::ReadWrite).map_err(|e| format!("attach {name}: {e}"))?;
        let b = board(&seg, tasks)?;
        let payload = [0x5au8; 64];
        let mut i = seg.ring_tail();
        while i < events {
            seg.append(&NewEvent::new(KIND).payload(&payload)).map_err(|e| format!("append {i}: {e}"))?;
            i += 1;
        }
        let tail = seg.ring_tail();
        let deadline = Instant::now() + Duration::from_secs(120);
        while seg.journal_cursor() < tail {
            if Instant::now() > deadline {
                return Err(
                    format!("the journal reached {} of {tail} events within 120 s", seg.journal_cursor()).into()
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        b
    };
    let fill_secs = fill.elapsed().as_secs_f64();
    let bytes = dir_bytes(data.path());
    let files = std::fs::read_dir(data.path()).map(|rd| rd.count()).unwrap_or(0);
    let mut rec = Recorder::new();
    let mut how = String::new();
    for _ in 0..repeats {
        match stop {
            Stop::Clean => d.term()?,
            Stop::KillAdopt => d.kill(),
            Stop::KillLost => {
                d.kill();
                Segment::unlink(&name).map_err(|e| format!("remove the segment after SIGKILL: {e}"))?;
            }
        }
        let (next, secs, what) = Worknoded::start(&bin, &args)?;
        d = next;
        rec.record((secs * 1e9) as u64);
        how = what;
        check(&name, &b, events)?;
    }
    d.term()?;
    let stats = rec.stats();
    let what = match stop {
        Stop::Clean => "SIGTERM (clean shutdown, segment removed), then start: rebuild",
        Stop::KillAdopt => "SIGKILL (segment left in /dev/shm), then start: adopt",
        Stop::KillLost => "SIGKILL and the segment removed (host restart), then start: rebuild",
    };
    let notes = vec![
        format!(
            "{tasks} tasks in {} folders + {events} events (64 B) written through worknoded --fsync batch; fill took {fill_secs:.1} s ({})",
            b.folders,
            Rate::new(events as f64 / fill_secs, "events/s", events, fill_secs).human()
        ),
        format!("data dir: {files} files, {:.1} MB, on {}", bytes as f64 / 1e6, crate::sysinfo::fs_type(data.path())),
        format!("{what}; time from spawn to the ready line, {repeats} starts; last start: {how}"),
        "after each start the board's counts and the ring's tail are checked".into(),
    ];
    let mut m = Measured::latency(stats, notes).pinned("worknoded not pinned".into());
    m = m.with("tasks", json!(tasks)).with("events", json!(events)).with("data_bytes", json!(bytes));
    Ok(m)
}
