//! Durability (issue 6): append latency and rate through the real `worknoded` with each
//! `--fsync` policy, beside SQLite WAL doing the same writes (see `sqlite::insert`).
//!
//! For each policy the harness starts `worknoded --segment NAME --fsync POLICY
//! --data-dir <temp dir>`, waits for its `ready` line, attaches, and appends 64-byte
//! events one after another, timing each `Segment::append` (under `always` it returns
//! only once the journal holds the event on disk). It then waits until the journal has
//! caught up, notes the journal's size, and stops the daemon with SIGTERM.
//!
//! The daemon binary: when run through `cargo run`, the harness runs
//! `cargo build [--release] -p worknoded` first (a no-op when it is fresh) and uses the
//! binary beside its own; otherwise it uses that binary if it exists.

use crate::payload::{self, PING};
use crate::pingpong::Plan;
use crate::report::Rate;
use crate::shm::TempDir;
use crate::sqlite::timed_appends;
use crate::suite::{Ctx, Fail, Measured};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use worknode::{Access, Durability, EventKind, NewEvent, Segment};

const KIND: EventKind = EventKind(1003);

/// Appends per point. Policies bound by fsync get a time cap rather than the full count.
pub fn plan(ctx: &Ctx, fsync_bound: bool) -> Plan {
    match (ctx.quick, fsync_bound) {
        (true, true) => Plan { warmup: 20, samples: 500, time_cap: Duration::from_secs(1) },
        (true, false) => Plan { warmup: 200, samples: 2_000, time_cap: Duration::from_secs(2) },
        (false, true) => Plan { warmup: 200, samples: 100_000, time_cap: Duration::from_secs(30) },
        (false, false) => Plan { warmup: 1_000, samples: 100_000, time_cap: Duration::from_secs(60) },
    }
}

/// The workspace binary `name` (package of the same name) beside wn-bench's own: built
/// first when run through cargo (a no-op when it is fresh), else used if it exists.
pub(crate) fn locate_binary(name: &str) -> Result<PathBuf, Fail> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let dir = exe.parent().ok_or("the wn-bench binary has no directory")?.to_path_buf();
    let bin = dir.join(name);
    if let (Some(cargo), Some(manifest)) = (std::env::var_os("CARGO"), std::env::var_os("CARGO_MANIFEST_DIR")) {
        let release = dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(cargo);
        cmd.arg("build").arg("-p").arg(name).arg("--quiet");
        if release {
            cmd.arg("--release");
        }
        let t = Instant::now();
        let status = cmd.current_dir(manifest).status().map_err(|e| format!("cargo build -p {name}: {e}"))?;
        if !status.success() {
            return Err(format!("cargo build -p {name} failed ({status})").into());
        }
        if t.elapsed() > Duration::from_secs(2) {
            println!("  (built {name} in {:.1} s; not part of any measurement)", t.elapsed().as_secs_f64());
        }
    }
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(Fail::Skip(format!(
            "skipped: {} not found; build it with `cargo build --release -p {name}`",
            bin.display()
        )))
    }
}

fn daemon(ctx: &Ctx) -> Result<PathBuf, Fail> {
    let mut slot = ctx.daemon.borrow_mut();
    if slot.is_none() {
        *slot = Some(match locate_binary("worknoded") {
            Ok(p) => Ok(p),
            Err(Fail::Skip(s)) => Err(format!("SKIP:{s}")),
            Err(Fail::Error(e)) => Err(e),
        });
    }
    match slot.as_ref().expect("set above") {
        Ok(p) => Ok(p.clone()),
        Err(e) => Err(match e.strip_prefix("SKIP:") {
            Some(s) => Fail::Skip(s.to_string()),
            None => Fail::Error(e.clone()),
        }),
    }
}

/// A running `worknoded`; SIGTERM on drop (SIGKILL if it does not stop).
pub(crate) struct Daemon {
    proc: std::process::Child,
}

impl Daemon {
    /// SIGTERM, then waits (bounded) for a clean exit.
    pub(crate) fn stop(&mut self) -> Result<(), String> {
        crate::proc::terminate(&mut self.proc, Duration::from_secs(10))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.proc.try_wait() {
            let _ = self.stop();
        }
    }
}

/// Starts `worknoded --segment name ARGS --data-dir dir`, moves it to the second CPU of
/// the pair, and waits for its `ready` line. Returns it and a note on the pinning.
pub(crate) fn start_daemon(
    ctx: &Ctx,
    name: &str,
    args: &[&str],
    dir: &std::path::Path,
) -> Result<(Daemon, String), Fail> {
    let bin = daemon(ctx)?;
    let mut proc = Command::new(&bin)
        .args(["--segment", name])
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("start {}: {e}", bin.display()))?;
    let (tx, rx) = mpsc::channel();
    let out = proc.stdout.take().expect("piped");
    let err = proc.stderr.take().expect("piped");
    let tx2 = tx.clone();
    std::thread::spawn(move || BufReader::new(out).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
    std::thread::spawn(move || BufReader::new(err).lines().map_while(Result::ok).for_each(|l| drop(tx2.send(l))));
    // The daemon inherited this process's pinning: move it to the other CPU.
    let pin = match ctx.pair {
        Some((a, b)) => match crate::pinning::pin(proc.id() as i32, b) {
            Ok(()) => format!("client on CPU {a}, worknoded on CPU {b}"),
            Err(e) => format!("pinning worknoded failed: {e}"),
        },
        None => "not pinned".into(),
    };
    let d = Daemon { proc };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut log = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(" ready ") => break,
            Ok(l) => log.push(l),
            Err(_) => return Err(format!("worknoded did not become ready within 30 s: {}", log.join(" | ")).into()),
        }
    }
    // Threads it started before the pin took effect: pin them too (and let them start:
    // the ready line comes just before the daemon spawns its serving threads).
    if let Some((_, b)) = ctx.pair {
        std::thread::sleep(Duration::from_millis(50));
        let _ = crate::pinning::pin_all_threads(d.proc.id(), b);
    }
    Ok((d, pin))
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(Result::ok).filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
        })
        .unwrap_or(0)
}

/// Appends through `worknoded --fsync policy` from `writers` threads at once (each with
/// its own attachment; with more than one, `always` shows the group commit).
pub fn ring(ctx: &Ctx, policy: &str, writers: usize) -> Result<Measured, Fail> {
    daemon(ctx)?; // skips early when there is no daemon binary
    let plan = plan(ctx, policy == "always");
    let name = format!("wn-bench-{}-dur-{policy}", std::process::id());
    let _ = Segment::unlink(&name);
    let data = TempDir::new(&ctx.tmp, &format!("journal-{policy}"))?;
    let args = ["--fsync", policy, "--nodes", "1024", "--events", "65536", "--grace-ms", "0"];
    let (mut d, pin) = start_daemon(ctx, &name, &args, data.path())?;
    let seg = Segment::attach(&name, Access::ReadWrite).map_err(|e| format!("attach {name}: {e}"))?;
    let want = match policy {
        "off" => Durability::Off,
        "never" => Durability::Never,
        "batch" => Durability::Batch,
        _ => Durability::Always,
    };
    // The daemon prints `ready` before its journal thread publishes the policy: wait for
    // it, or the first appends would not be journaled under the policy measured.
    let policy_deadline = Instant::now() + Duration::from_secs(10);
    while seg.durability() != want && Instant::now() < policy_deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    if seg.durability() != want {
        return Err(format!("the segment reports durability {:?}, expected {want:?}", seg.durability()).into());
    }
    let started = Instant::now();
    let (rec, n, secs, capped) = if writers <= 1 {
        let mut one = |i: u64| -> Result<(), String> {
            seg.append(&NewEvent::new(KIND).payload(&payload::make(i, PING)))
                .map(|_| ())
                .map_err(|e| format!("append {i}: {e}"))
        };
        timed_appends(&plan, &mut one)?
    } else {
        let each = Plan { warmup: plan.warmup / writers as u64, samples: plan.samples / writers as u64, ..plan };
        let results: Vec<Result<_, String>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..writers)
                .map(|w| {
                    let name = &name;
                    s.spawn(move || {
                        let mine = Segment::attach(name, Access::ReadWrite).map_err(|e| format!("attach: {e}"))?;
                        let mut one = |i: u64| -> Result<(), String> {
                            mine.append(&NewEvent::new(KIND).payload(&payload::make(i, 0x100 + w as u64)))
                                .map(|_| ())
                                .map_err(|e| format!("writer {w}, append {i}: {e}"))
                        };
                        timed_appends(&each, &mut one)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("a writer thread panicked".into()))).collect()
        });
        let mut all = crate::histogram::Recorder::new();
        let (mut n, mut secs, mut capped) = (0, 0f64, false);
        for r in results {
            let (rec, k, s, c) = r?;
            all.merge(&rec);
            n += k;
            secs = secs.max(s);
            capped |= c;
        }
        (all, n, secs, capped)
    };
    let tail = seg.ring_tail();
    let mut notes = vec![format!(
        "worknoded --fsync {policy}; {writers} appending thread(s) in one process, 64 B events, appends back to back"
    )];
    let mut m = Measured::default();
    if want != Durability::Off {
        let wait_until = Instant::now() + Duration::from_secs(60);
        while seg.journal_cursor() < tail && Instant::now() < wait_until {
            std::thread::sleep(Duration::from_micros(200));
        }
        let journaled = seg.journal_cursor();
        if journaled < tail {
            return Err(format!("the journal reached {journaled} of {tail} events within 60 s").into());
        }
        let all = started.elapsed().as_secs_f64();
        let bytes = dir_bytes(data.path());
        notes.push(format!(
            "journal caught up {:.2} s after the first append ({} end to end); {:.1} MB in the data dir",
            all,
            Rate::new(tail as f64 / all, "events/s", tail, all).human(),
            bytes as f64 / 1e6
        ));
        m = m.with("journal_bytes", json!(bytes)).with("journaled_events_per_s", json!(tail as f64 / all));
    }
    if capped {
        notes.push(format!("time cap of {:?} reached after {n} of {} samples", plan.time_cap, plan.samples));
    }
    drop(seg);
    d.stop()?;
    m.latency = Some(rec.stats());
    m.rate = Some(Rate::new(n as f64 / secs, "appends/s", n, secs));
    m.notes = notes;
    m.pinning = pin;
    Ok(m)
}
