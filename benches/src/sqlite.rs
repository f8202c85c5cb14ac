//! SQLite in WAL mode (rusqlite, bundled SQLite), as agents use it to share state: one
//! process updates a row and commits, the other polls the row until it changes.
//!
//! Polling interval: none — the reader re-runs its prepared `SELECT` in a busy loop
//! (the best latency SQLite can give; any sleep between polls adds to it). The
//! coordination comparison also runs with a 1 ms interval (`coord-sqlite-1ms`), the kind
//! of loop agents actually write; that point is capped by time, not by sample count. Commits use
//! `synchronous=NORMAL` (in WAL mode: no fsync per commit, only at checkpoints), the
//! fast setting users pick for this. For the durability comparison, [`insert`] appends
//! one 64-byte row per event with `synchronous=FULL` (fsync per commit) or `NORMAL`.

use crate::histogram::Recorder;
use crate::payload::{self, PING, PONG};
use crate::pingpong::{drive, finish, Plan};
use crate::proc::RoleCtx;
use crate::report::Rate;
use crate::shm::TempDir;
use crate::suite::{Ctx, Fail, Measured};
use rusqlite::{params, Connection};
use std::path::Path;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

pub(crate) fn open(path: &Path, synchronous: &str) -> Result<Connection, String> {
    let c = Connection::open(path).map_err(|e| format!("sqlite open {}: {e}", path.display()))?;
    c.busy_timeout(Duration::from_secs(10)).map_err(|e| e.to_string())?;
    let mode: String = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(|e| e.to_string())?;
    if mode != "wal" {
        return Err(format!("sqlite refused WAL mode (got {mode})"));
    }
    c.execute_batch(&format!("PRAGMA synchronous={synchronous};")).map_err(|e| e.to_string())?;
    Ok(c)
}

/// The two shapes of the poll round trip: a mailbox row with a blob payload (latency),
/// or a task row with a text description and a version (coordination).
#[derive(Clone, Copy)]
enum Shape {
    Mailbox,
    Task,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Mailbox => "mailbox",
            Shape::Task => "task",
        }
    }

    fn create(self, c: &Connection) -> Result<(), String> {
        let sql = match self {
            Shape::Mailbox => {
                "CREATE TABLE mailbox(id INTEGER PRIMARY KEY, seq INTEGER NOT NULL, payload BLOB NOT NULL);
                 INSERT INTO mailbox VALUES (1, -1, x''), (2, -1, x'');"
            }
            Shape::Task => {
                "CREATE TABLE task(id INTEGER PRIMARY KEY, status TEXT NOT NULL, progress INTEGER NOT NULL,
                   value REAL NOT NULL, description TEXT NOT NULL, version INTEGER NOT NULL);
                 INSERT INTO task VALUES (1, 'ready', 0, 0, '', 0), (2, 'ready', 0, 0, '', 0);"
            }
        };
        c.execute_batch(sql).map_err(|e| format!("sqlite setup: {e}"))
    }

    /// Writes round `i` into row `id` (one autocommit transaction).
    fn write(self, c: &Connection, id: i64, i: u64, tag: u64) -> Result<(), String> {
        let r = match self {
            Shape::Mailbox => c
                .prepare_cached("UPDATE mailbox SET seq = ?1, payload = ?2 WHERE id = ?3")
                .and_then(|mut s| s.execute(params![i as i64, &payload::make(i, tag)[..], id])),
            Shape::Task => c
                .prepare_cached(
                    "UPDATE task SET description = ?1, value = ?2, progress = ?3, version = version + 1 WHERE id = ?4",
                )
                .and_then(|mut s| {
                    s.execute(params![payload::as_str(&payload::make_text(i, tag)), i as f64, (i % 100) as i64, id])
                }),
        };
        match r {
            Ok(1) => Ok(()),
            Ok(n) => Err(format!("sqlite update changed {n} rows")),
            Err(e) => Err(format!("sqlite update: {e}")),
        }
    }

    /// One look at row `id`: its payload if round `i` is there.
    fn poll_once(self, c: &Connection, id: i64, i: u64) -> Result<Option<Vec<u8>>, String> {
        let r = match self {
            Shape::Mailbox => c.prepare_cached("SELECT seq, payload FROM mailbox WHERE id = ?1").and_then(|mut s| {
                s.query_row([id], |r| (r.get::<_, i64>(0)? == i as i64).then(|| r.get::<_, Vec<u8>>(1)).transpose())
            }),
            Shape::Task => c.prepare_cached("SELECT version, description FROM task WHERE id = ?1").and_then(|mut s| {
                s.query_row([id], |r| {
                    Ok((r.get::<_, i64>(0)? == i as i64 + 1)
                        .then(|| r.get::<_, String>(1))
                        .transpose()?
                        .map(String::into_bytes))
                })
            }),
        };
        r.map_err(|e| format!("sqlite poll: {e}"))
    }

    /// Polls row `id` until round `i` is there (sleeping `interval` between polls; zero:
    /// a busy loop), then checks it. Returns the polls made.
    fn poll(self, c: &Connection, id: i64, i: u64, tag: u64, interval: Duration) -> Result<u64, String> {
        let start = Instant::now();
        let mut polls = 0u64;
        let p = loop {
            polls += 1;
            if let Some(p) = self.poll_once(c, id, i)? {
                break p;
            }
            if interval.is_zero() {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(interval);
            }
            if (!interval.is_zero() || polls.is_multiple_of(1024)) && start.elapsed() > WAIT {
                return Err(format!("round {i} did not arrive within {WAIT:?}"));
            }
        };
        match self {
            Shape::Mailbox => payload::check(&p, i, tag)?,
            Shape::Task => payload::check_text(&p, i)?,
        }
        Ok(polls)
    }
}

fn poll_round_trip(ctx: &Ctx, shape: Shape, interval: Duration) -> Result<Measured, Fail> {
    let dir = TempDir::new(&ctx.tmp, &format!("sqlite-{}", shape.name()))?;
    let path = dir.path().join("bench.sqlite");
    let c = open(&path, "NORMAL")?;
    shape.create(&c)?;
    // A sleeping poller cannot do 100k round trips in reasonable time: cap it by time.
    let plan = if interval.is_zero() {
        ctx.plan
    } else {
        Plan { warmup: ctx.plan.warmup.min(100), time_cap: ctx.plan.time_cap.min(Duration::from_secs(30)), ..ctx.plan }
    };
    let child = ctx.spawn(
        "sqlite-pong",
        &[
            ("path", path.display().to_string()),
            ("shape", shape.name().to_string()),
            ("rounds", plan.total().to_string()),
            ("interval_us", interval.as_micros().to_string()),
        ],
    )?;
    let mut polls = 0u64;
    let driven = drive(&plan, |i| {
        shape.write(&c, 1, i, PING)?;
        polls += shape.poll(&c, 2, i, PONG, interval)?;
        Ok(())
    })?;
    let rounds = plan.warmup + driven.rec.len();
    let how = if interval.is_zero() {
        "busy-polls a prepared SELECT (no sleep between polls)".to_string()
    } else {
        format!("polls a prepared SELECT every {interval:?} (thread::sleep between polls)")
    };
    let notes = vec![
        format!(
            "SQLite {}, WAL, synchronous=NORMAL, autocommit UPDATE; the reader {how}, {:.1} polls per round trip on this side",
            rusqlite::version(),
            polls as f64 / rounds.max(1) as f64
        ),
        format!("database on {}", crate::sysinfo::fs_type(dir.path())),
    ];
    finish(ctx, child, driven, notes)
}

/// Latency: UPDATE a mailbox row with the 64-byte blob, the other side polls it.
pub fn poll_latency(ctx: &Ctx) -> Result<Measured, Fail> {
    poll_round_trip(ctx, Shape::Mailbox, Duration::ZERO)
}

/// Coordination: UPDATE a task row (text payload, value, version), the other polls it
/// every `interval` (zero: a busy loop).
pub fn coordination(ctx: &Ctx, interval: Duration) -> Result<Measured, Fail> {
    poll_round_trip(ctx, Shape::Task, interval)
}

/// Child side of both poll round trips.
pub fn pong_role(ctx: &RoleCtx) -> Result<(), String> {
    let rounds: u64 = ctx.parse("rounds")?;
    let shape = match ctx.get("shape")? {
        "mailbox" => Shape::Mailbox,
        "task" => Shape::Task,
        s => return Err(format!("unknown shape {s}")),
    };
    let interval = Duration::from_micros(ctx.parse("interval_us")?);
    let c = open(Path::new(ctx.get("path")?), "NORMAL")?;
    ctx.ready();
    for i in 0..rounds {
        shape.poll(&c, 1, i, PING, interval)?;
        shape.write(&c, 2, i, PONG)?;
    }
    ctx.result(&serde_json::json!({ "rounds": rounds }));
    Ok(())
}

/// Durability peer: INSERT one 64-byte row per event, one transaction each.
pub fn insert(ctx: &Ctx, synchronous: &str) -> Result<Measured, Fail> {
    let plan = crate::durability::plan(ctx, synchronous == "FULL");
    let dir = TempDir::new(&ctx.tmp, "sqlite-insert")?;
    let path = dir.path().join("events.sqlite");
    let c = open(&path, synchronous)?;
    c.execute_batch("CREATE TABLE event(seq INTEGER PRIMARY KEY, payload BLOB NOT NULL);")
        .map_err(|e| e.to_string())?;
    let mut ins = c.prepare("INSERT INTO event(seq, payload) VALUES (?1, ?2)").map_err(|e| e.to_string())?;
    let mut one = |i: u64| -> Result<(), String> {
        ins.execute(params![i as i64, &payload::make(i, PING)[..]]).map(|_| ()).map_err(|e| format!("insert: {e}"))
    };
    let (rec, n, secs, capped) = timed_appends(&plan, &mut one)?;
    drop(ins);
    let count: i64 = c.query_row("SELECT count(*) FROM event", [], |r| r.get(0)).map_err(|e| e.to_string())?;
    if count as u64 != n + plan.warmup {
        return Err(format!("sqlite holds {count} rows, {} were inserted", n + plan.warmup).into());
    }
    let mut notes = vec![format!(
        "SQLite {}, WAL, synchronous={synchronous}, one autocommit INSERT per event, on {}",
        rusqlite::version(),
        crate::sysinfo::fs_type(dir.path())
    )];
    if capped {
        notes.push(format!("time cap of {:?} reached after {n} of {} samples", plan.time_cap, plan.samples));
    }
    Ok(Measured {
        latency: Some(rec.stats()),
        rate: Some(Rate::new(n as f64 / secs, "inserts/s", n, secs)),
        notes,
        pinning: "single process, not pinned".into(),
        ..Measured::default()
    })
}

/// Runs warm-up then timed calls of `one`, each timed; returns (latencies, calls timed,
/// seconds for them, whether the time cap stopped it).
pub fn timed_appends(
    plan: &Plan,
    one: &mut dyn FnMut(u64) -> Result<(), String>,
) -> Result<(Recorder, u64, f64, bool), String> {
    for i in 0..plan.warmup {
        one(i)?;
    }
    let mut rec = Recorder::new();
    let start = Instant::now();
    let mut capped = false;
    for i in plan.warmup..plan.total() {
        let t = Instant::now();
        one(i)?;
        rec.record(t.elapsed().as_nanos() as u64);
        if i % 64 == 0 && start.elapsed() > plan.time_cap {
            capped = true;
            break;
        }
    }
    let n = rec.len();
    Ok((rec, n, start.elapsed().as_secs_f64(), capped))
}
