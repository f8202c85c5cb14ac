//! Brokered writes (issue 11): the cost of the boundary for an agent that may not write
//! the segment, beside the same agent writing directly and beside Redis.
//!
//! One real `worknoded` (`--fsync off`, so the figures are the boundary's, not the
//! disk's); the measuring process holds two handles on it: a direct one (this user maps
//! the segment read-write) and a brokered one (`Segment::attach_brokered` with a token:
//! a read-only mapping, every change a request to the daemon's broker). The same calls
//! run through each:
//!
//! * **update** — `progress` on a claimed task (one change, one event);
//! * **claim** — `claim_next` + `complete` on a board kept at 1 000 ready tasks (two
//!   changes; the completed task is deleted and a new one added, untimed);
//! * **read** — `read` of a task (local on both handles: a copy out of the mapping).
//!
//! Redis does what a Redis user would for the same: `HSET` a task's field (update);
//! `LPOP` a ready list and `HSET` the task complete (claim, two round trips: the second
//! depends on the first); `HGETALL` (read).

use crate::durability::start_daemon;
use crate::pingpong::{drive, Plan};
use crate::shm::TempDir;
use crate::suite::{Ctx, Fail, Measured};
use std::time::Duration;
use worknode::{Access, AgentId, NewNode, NodeKind, Segment, Status, TaskFilter};

/// Which handle a measurement uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Read-write mapping of this user.
    Direct,
    /// Read-only mapping; changes through the daemon's broker.
    Brokered,
}

/// What is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `progress` on a held task.
    Update,
    /// `claim_next` + `complete`.
    Claim,
    /// `read` of a task.
    Read,
}

/// Ready tasks on the board during the claim measurement (as `claims-1-1k`).
const CLAIM_POOL: u32 = 1_000;

fn e2s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn plan(ctx: &Ctx) -> Plan {
    if ctx.quick {
        Plan { warmup: 100, samples: 1_000, time_cap: Duration::from_secs(2) }
    } else {
        Plan { warmup: 1_000, samples: 20_000, time_cap: Duration::from_secs(30) }
    }
}

/// One measurement of `op` through `path`.
pub fn run(ctx: &Ctx, path: Path, op: Op) -> Result<Measured, Fail> {
    let plan = plan(ctx);
    let tasks = if op == Op::Claim { CLAIM_POOL } else { (plan.total() + 16) as u32 };
    let name = format!("wn-bench-{}-broker", std::process::id());
    let _ = Segment::unlink(&name);
    let data = TempDir::new(&ctx.tmp, "broker")?;
    let nodes = (tasks + 64).next_power_of_two().to_string();
    let args = ["--fsync", "off", "--nodes", &nodes, "--events", "65536", "--agents", "16", "--grace-ms", "0"];
    let (mut d, pin) = start_daemon(ctx, &name, &args, data.path())?;
    let direct = Segment::attach(&name, Access::ReadWrite).map_err(e2s)?;
    let project = direct.add(direct.root(), &NewNode::new(NodeKind::Project, "bench")).map_err(e2s)?;
    let mut handles = Vec::with_capacity(tasks as usize);
    for k in 0..tasks {
        let name = format!("t{k}");
        handles.push(direct.add(project, &NewNode::new(NodeKind::Task, &name).status(Status::Ready)).map_err(e2s)?);
    }
    // The token the brokered handle presents (minted with the daemon's key).
    let key = worknoded::tokens::ensure_key(data.path()).map_err(e2s)?.0;
    let rights = worknode::Rights::ALL;
    let (_, token) = worknode::mint(&key, "bench", rights, None, worknode::unix_ms() + 3_600_000).map_err(e2s)?;
    let brokered = match path {
        Path::Direct => None,
        Path::Brokered => Some(Segment::attach_brokered(&name, &token, "bench").map_err(e2s)?),
    };
    let seg: &Segment = brokered.as_ref().unwrap_or(&direct);
    let me: AgentId = seg.join("bench", "bench").map_err(e2s)?;
    let lease = Duration::from_secs(600);
    let driven = match op {
        Op::Update => {
            let claim = seg.claim(handles[0], me, lease).map_err(e2s)?;
            drive(&plan, |i| seg.progress(&claim, (i % 100) as u8).map(drop).map_err(e2s))?
        }
        Op::Claim => {
            // The board stays at CLAIM_POOL ready tasks: after each timed claim + complete
            // the task is deleted and a new one added, untimed (`claim_next` scans the
            // board, so its cost grows with it: issue 16).
            let mut rec = crate::histogram::Recorder::new();
            let started = std::time::Instant::now();
            let mut completed = true;
            for i in 0..plan.total() {
                let t = std::time::Instant::now();
                let c = seg.claim_next(&TaskFilter::default(), me, lease).map_err(e2s)?;
                seg.complete(&c, "").map_err(e2s)?;
                let ns = t.elapsed().as_nanos() as u64;
                if i >= plan.warmup {
                    rec.record(ns);
                    if started.elapsed() > plan.time_cap {
                        completed = false;
                        break;
                    }
                }
                seg.delete(c.task, worknode::DeleteMode::LeafOnly).map_err(e2s)?;
                let name = format!("r{i}");
                seg.add(project, &NewNode::new(NodeKind::Task, &name).status(Status::Ready)).map_err(e2s)?;
            }
            let mut notes = vec![format!("board kept at {CLAIM_POOL} ready tasks")];
            if !completed {
                notes.push(format!("time cap of {:?} reached: {} samples", plan.time_cap, rec.len()));
            }
            crate::pingpong::Driven { rec, completed, notes }
        }
        Op::Read => {
            // Touch every task once first: a fresh mapping (the brokered one) would
            // otherwise pay its first-touch page faults inside the timed rounds.
            for h in &handles {
                seg.read(*h).map_err(e2s)?;
            }
            drive(&plan, |i| seg.read(handles[(i % tasks as u64) as usize]).map(drop).map_err(e2s))?
        }
    };
    drop(brokered); // the broker connection closes before the daemon is asked to stop
    d.stop()?;
    let mut notes = driven.notes;
    notes.push(format!("worknoded --fsync off; {pin}"));
    if path == Path::Brokered && op != Op::Read {
        notes.push("each change one request and reply over the broker's Unix socket".into());
    }
    Ok(Measured::latency(driven.rec.stats(), notes).pinned(pin))
}

/// The Redis side: what a Redis user does for the same operation.
pub fn redis(ctx: &Ctx, op: Op) -> Result<Measured, Fail> {
    use redis::Commands;
    let server = crate::redis_peer::server(ctx)?;
    // The server is left where the scheduler puts it, as users run it (and as the other
    // Redis measurements do): pinned to the other CPU it was up to 5x slower here, since
    // every reply then needs a cross-CPU wake-up.
    let pin = match ctx.pair {
        Some((a, _)) => format!("client on CPU {a}, redis-server not pinned"),
        None => "not pinned".into(),
    };
    let mut con = crate::redis_peer::connect(&server.url)?;
    let plan = plan(ctx);
    let r = |e: redis::RedisError| format!("redis: {e}");
    let _: () = redis::cmd("FLUSHALL").query(&mut con).map_err(r)?;
    let driven = match op {
        Op::Update => drive(&plan, |i| con.hset::<_, _, _, ()>("wnb:task:0", "progress", i % 100).map_err(r))?,
        Op::Claim => {
            let ids: Vec<u64> = (0..plan.total() + 16).collect();
            for chunk in ids.chunks(1000) {
                con.rpush::<_, _, ()>("wnb:ready", chunk).map_err(r)?;
            }
            drive(&plan, |_| {
                let id: Option<u64> = con.lpop("wnb:ready", None).map_err(r)?;
                let id = id.ok_or("the ready list ran dry")?;
                con.hset::<_, _, _, ()>(format!("wnb:task:{id}"), "status", "complete").map_err(r)
            })?
        }
        Op::Read => {
            con.hset_multiple::<_, _, _, ()>("wnb:task:0", &[("name", "t0"), ("status", "ready")]).map_err(r)?;
            drive(&plan, |_| {
                con.hgetall::<_, std::collections::HashMap<String, String>>("wnb:task:0").map(drop).map_err(r)
            })?
        }
    };
    let notes = vec![
        crate::redis_peer::note(&server),
        match op {
            Op::Update => "HSET one field (one round trip)".into(),
            Op::Claim => "LPOP the ready list, then HSET the task complete (two round trips)".into(),
            Op::Read => "HGETALL a task hash (one round trip)".into(),
        },
    ];
    Ok(Measured::latency(driven.rec.stats(), notes).pinned(pin))
}
