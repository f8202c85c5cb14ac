//! The Worknode event ring between two processes: the ping-pong (one segment per
//! direction, a 64-byte payload written into each event and checksummed by the
//! receiver) with each wait mode, and the coordination round trip — update a task
//! (`Segment::update`, which appends its `node_updated` event), the other process sees the
//! event, reads the task, checks it, and updates a second task back.
//!
//! Segments are created with `Daemon::create` (no daemon process) under names unique to this
//! process and unlinked afterwards.

use crate::payload::{self, PING, PONG};
use crate::pingpong::{drive, finish};
use crate::proc::RoleCtx;
use crate::suite::{Ctx, Fail, Measured};
use crate::TempSegment;
use std::time::Duration;
use worknode::{Access, Capacities, EventKind, Filter, Handle, NewEvent, NewNode, NodeKind, Segment, Start, Wait};

/// The application event kind of the ping-pong.
const KIND: EventKind = EventKind(1001);
/// Rounds per block of the coordination round trip's per-block medians.
const BLOCK: usize = 10_000;
/// How long one side waits for the other's event.
const ROUND_TIMEOUT: Duration = Duration::from_secs(10);

fn small_caps() -> Capacities {
    Capacities { nodes: 64, events: 4096, agents: 8, blob_chunks: 1, sets: 1, ..Capacities::default() }
}

/// The wait mode's name (role argument).
pub fn wait_name(w: Wait) -> &'static str {
    match w {
        Wait::Spin => "spin",
        Wait::SpinThenPark => "spin-then-park",
        Wait::Park => "park",
    }
}

fn parse_wait(s: &str) -> Result<Wait, String> {
    Ok(match s {
        "spin" => Wait::Spin,
        "spin-then-park" => Wait::SpinThenPark,
        "park" => Wait::Park,
        _ => return Err(format!("unknown wait mode {s}")),
    })
}

fn e2s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Ping-pong over two segments with the given wait mode on both sides.
pub fn pingpong(ctx: &Ctx, wait: Wait) -> Result<Measured, Fail> {
    let caps = small_caps();
    let ping = TempSegment::create("ring-ping", &caps).map_err(e2s)?;
    let pong = TempSegment::create("ring-pong", &caps).map_err(e2s)?;
    let mut replies = pong.reader(Start::Now);
    let child = ctx.spawn(
        "ring-pong",
        &[
            ("ping", ping.name().to_string()),
            ("pong", pong.name().to_string()),
            ("wait", wait_name(wait).to_string()),
            ("rounds", ctx.plan.total().to_string()),
        ],
    )?;
    let wakes_before = ping.ring_counters().wakes + pong.ring_counters().wakes;
    let driven = drive(&ctx.plan, |i| {
        let p = payload::make(i, PING);
        ping.append(&NewEvent::new(KIND).payload(&p)).map_err(e2s)?;
        let e = replies.next(wait, ROUND_TIMEOUT).map_err(|e| format!("reply {i}: {e}"))?;
        payload::check(e.payload(), i, PONG)
    })?;
    let wakes = ping.ring_counters().wakes + pong.ring_counters().wakes - wakes_before;
    let rounds = driven.rec.len() + ctx.plan.warmup;
    let notes = vec![
        "one segment per direction, 64 B payload in the event".to_string(),
        format!("FUTEX_WAKE calls: {:.2} per round trip", wakes as f64 / rounds.max(1) as f64),
    ];
    finish(ctx, child, driven, notes)
}

/// Child side of the ping-pong.
pub fn pong_role(ctx: &RoleCtx) -> Result<(), String> {
    let ping = Segment::attach(ctx.get("ping")?, Access::ReadWrite).map_err(e2s)?;
    let pong = Segment::attach(ctx.get("pong")?, Access::ReadWrite).map_err(e2s)?;
    let wait = parse_wait(ctx.get("wait")?)?;
    let rounds: u64 = ctx.parse("rounds")?;
    let mut r = ping.reader(Start::Now);
    ctx.ready();
    for i in 0..rounds {
        let e = r.next(wait, Duration::from_secs(60)).map_err(|e| format!("ping {i}: {e}"))?;
        payload::check(e.payload(), i, PING)?;
        pong.append(&NewEvent::new(KIND).payload(&payload::make(i, PONG))).map_err(e2s)?;
    }
    ctx.result(&serde_json::json!({ "rounds": rounds }));
    Ok(())
}

/// Writes the text payload for `i` into a task's description and `i` into its value.
fn update_task(seg: &Segment, h: Handle, i: u64, tag: u64) -> Result<(), String> {
    let p = payload::make_text(i, tag);
    seg.update(h, |n| {
        n.set_description(payload::as_str(&p))?;
        n.set_value(i as f64)?;
        Ok(())
    })
    .map(|_| ())
    .map_err(e2s)
}

/// Waits for the `node_updated` event of `h`'s task, reads the task and checks it.
fn observe_task(seg: &Segment, r: &mut worknode::Reader<'_>, h: Handle, i: u64, wait: Wait) -> Result<(), String> {
    let e = r.next(wait, ROUND_TIMEOUT).map_err(|e| format!("event {i}: {e}"))?;
    let n = seg.read(h).map_err(e2s)?;
    if n.version() < e.node_version() {
        return Err(format!("read version {} older than the event's {}", n.version(), e.node_version()));
    }
    payload::check_text(n.description().as_bytes(), i)?;
    if n.value() != i as f64 {
        return Err(format!("task value {} != {i}", n.value()));
    }
    Ok(())
}

/// Update-and-notify round trip.
pub fn coordination(ctx: &Ctx, wait: Wait) -> Result<Measured, Fail> {
    let seg = TempSegment::create("coord", &small_caps()).map_err(e2s)?;
    let project = seg.add(seg.root(), &NewNode::new(NodeKind::Project, "bench")).map_err(e2s)?;
    let t1 = seg.add(project, &NewNode::new(NodeKind::Task, "ping task")).map_err(e2s)?;
    let t2 = seg.add(project, &NewNode::new(NodeKind::Task, "pong task")).map_err(e2s)?;
    let uuid2 = seg.read(t2).map_err(e2s)?.uuid();
    let mut r = seg.reader(Start::Now).with_filter(Filter {
        kind: Some(EventKind::NODE_UPDATED),
        node: Some(uuid2),
        actor: None,
    });
    let child = ctx.spawn(
        "coord-ring",
        &[
            ("seg", seg.name().to_string()),
            ("t1", t1.to_raw().to_string()),
            ("t2", t2.to_raw().to_string()),
            ("wait", wait_name(wait).to_string()),
            ("rounds", ctx.plan.total().to_string()),
        ],
    )?;
    // The p50 of each block of rounds, in order: whether a run stays in one mode (the
    // round trip is bimodal between runs, issue 16 item 3) or switches part-way.
    let mut block: Vec<u64> = Vec::with_capacity(BLOCK);
    let mut block_p50s: Vec<u64> = Vec::new();
    let driven = drive(&ctx.plan, |i| {
        let t = std::time::Instant::now();
        update_task(&seg, t1, i, PING)?;
        observe_task(&seg, &mut r, t2, i, wait)?;
        block.push(t.elapsed().as_nanos() as u64);
        if block.len() == BLOCK {
            block.sort_unstable();
            block_p50s.push(block[BLOCK / 2]);
            block.clear();
        }
        Ok(())
    })?;
    let notes = vec![
        "one segment; update writes a 64 B text payload + value into the task, the other side waits for the node_updated event (filtered by node), reads the task and checks it, then updates a second task back".to_string(),
        format!("p50 (ns) of each block of {BLOCK} rounds, warm-up included, in order: {block_p50s:?}"),
    ];
    finish(ctx, child, driven, notes)
}

/// Child side of the coordination round trip.
pub fn coordination_role(ctx: &RoleCtx) -> Result<(), String> {
    let seg = Segment::attach(ctx.get("seg")?, Access::ReadWrite).map_err(e2s)?;
    let t1 = Handle::from_raw(ctx.parse("t1")?).ok_or("bad handle t1")?;
    let t2 = Handle::from_raw(ctx.parse("t2")?).ok_or("bad handle t2")?;
    let wait = parse_wait(ctx.get("wait")?)?;
    let rounds: u64 = ctx.parse("rounds")?;
    let uuid1 = seg.read(t1).map_err(e2s)?.uuid();
    let mut r = seg.reader(Start::Now).with_filter(Filter {
        kind: Some(EventKind::NODE_UPDATED),
        node: Some(uuid1),
        actor: None,
    });
    ctx.ready();
    for i in 0..rounds {
        observe_task(&seg, &mut r, t1, i, wait)?;
        update_task(&seg, t2, i, PONG)?;
    }
    ctx.result(&serde_json::json!({ "rounds": rounds }));
    Ok(())
}
