//! The agent's work loop between two processes (issue 13): work hand-off and messages.
//!
//! **Hand-off**: a task becomes ready → the
//! agent it is for, parked in a blocking claim, holds it — beside the queue a Redis user
//! builds for the same thing, `LPUSH` + `BLMOVE` (the reliable-queue pattern: the item
//! moves to a processing list, removed from it when done).
//!
//! One round is two hand-offs: the parent readies task P (assigned to the child agent)
//! and parks in `claim_next_wait(mine)`; the child, parked the same way, claims P,
//! completes it and readies task C (assigned to the parent), which the parent claims and
//! completes. The two tasks are reused (`reopen`), so a round allocates nothing. The
//! Redis round is the same shape: the parent `LPUSH`es to the child's list and blocks in
//! `BLMOVE` on its own; the child `BLMOVE`s, `LREM`s it from its processing list
//! (done) and `LPUSH`es to the parent's list.
//!
//! **Messages**: the parent sends 64 bytes to the child agent's mailbox and blocks in
//! `wait_for_mail`; the child, blocked the same way, lists its inbox, reads and checks
//! the body, acks it and sends one back. Beside it, `mail-redis` is the Redis stream
//! round trip (`XADD` / `XREAD BLOCK`, `redis_peer::streams`), which neither keeps
//! per-recipient mailboxes nor acks.

use crate::pingpong::{drive, finish};
use crate::proc::RoleCtx;
use crate::suite::{Ctx, Fail, Measured};
use crate::TempSegment;
use std::time::Duration;
use worknode::{Access, AgentId, Capacities, Handle, NewNode, NodeKind, Principal, Segment, Status, TaskFilter};

/// Longest one hand-off may wait before the run fails.
const ROUND_TIMEOUT: Duration = Duration::from_secs(20);
/// The claims' lease (long: the benchmark never lets one lapse).
const LEASE: Duration = Duration::from_secs(600);

fn e2s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn mine() -> TaskFilter {
    TaskFilter { mine: true, ..TaskFilter::default() }
}

/// Claims the task readied for `me` (parked until it is), checks it is `want`, completes
/// it.
fn take(seg: &Segment, me: AgentId, want: Handle, i: u64) -> Result<(), String> {
    let c = seg.claim_next_wait(&mine(), me, LEASE, ROUND_TIMEOUT).map_err(|e| format!("round {i}: {e}"))?;
    if c.task != want {
        return Err(format!("round {i}: claimed {:?}, expected {want:?}", c.task));
    }
    seg.complete(&c, "").map(drop).map_err(e2s)
}

/// The Worknode side.
pub fn worknode(ctx: &Ctx) -> Result<Measured, Fail> {
    let caps = Capacities { nodes: 64, events: 1 << 14, agents: 8, blob_chunks: 1, sets: 1, ..Capacities::default() };
    let seg = TempSegment::create("handoff", &caps).map_err(e2s)?;
    let project = seg.add(seg.root(), &NewNode::new(NodeKind::Project, "handoff")).map_err(e2s)?;
    let me = seg.join("parent", "bench").map_err(e2s)?;
    // Both tasks start complete (claimed and completed once), then are assigned: a round
    // reopens one for the other side.
    let mut tasks = Vec::new();
    for (name, owner) in [("for-child", "child"), ("for-parent", "parent")] {
        let t = seg.add(project, &NewNode::new(NodeKind::Task, name).status(Status::Ready)).map_err(e2s)?;
        let c = seg.claim(t, me, LEASE).map_err(e2s)?;
        seg.complete(&c, "").map_err(e2s)?;
        seg.assign(t, &Principal::Agent(owner.into())).map_err(e2s)?;
        tasks.push(t);
    }
    let (for_child, for_parent) = (tasks[0], tasks[1]);
    let child = ctx.spawn(
        "handoff-child",
        &[
            ("seg", seg.name().to_string()),
            ("for_child", for_child.to_raw().to_string()),
            ("for_parent", for_parent.to_raw().to_string()),
            ("rounds", ctx.plan.total().to_string()),
        ],
    )?;
    let driven = drive(&ctx.plan, |i| {
        seg.reopen(for_child).map_err(e2s)?;
        take(&seg, me, for_parent, i)
    })?;
    let notes = vec![
        "one round = two hand-offs: reopen a task assigned to the other agent, which is parked in claim_next_wait(mine) and claims + completes it, then reopens one for us".to_string(),
    ];
    finish(ctx, child, driven, notes)
}

/// Child side of the Worknode hand-off.
pub fn worknode_role(ctx: &RoleCtx) -> Result<(), String> {
    let seg = Segment::attach(ctx.get("seg")?, Access::ReadWrite).map_err(e2s)?;
    let for_child = Handle::from_raw(ctx.parse("for_child")?).ok_or("bad handle")?;
    let for_parent = Handle::from_raw(ctx.parse("for_parent")?).ok_or("bad handle")?;
    let rounds: u64 = ctx.parse("rounds")?;
    let me = seg.join("child", "bench").map_err(e2s)?;
    ctx.ready();
    for i in 0..rounds {
        take(&seg, me, for_child, i)?;
        seg.reopen(for_parent).map_err(e2s)?;
    }
    ctx.result(&serde_json::json!({ "rounds": rounds }));
    Ok(())
}

/// `LPUSH` then `BLMOVE` from our own list into our processing list; `LREM` it (done).
fn redis_take(con: &mut redis::Connection, mine: &str, processing: &str, i: u64) -> Result<(), String> {
    let rerr = |e: redis::RedisError| format!("redis: {e}");
    let got: Option<u64> = redis::cmd("BLMOVE")
        .arg(mine)
        .arg(processing)
        .arg("RIGHT")
        .arg("LEFT")
        .arg(ROUND_TIMEOUT.as_secs())
        .query(con)
        .map_err(rerr)?;
    match got {
        Some(v) if v == i => {}
        other => return Err(format!("round {i}: BLMOVE gave {other:?}")),
    }
    redis::cmd("LREM").arg(processing).arg(1).arg(i).query::<i64>(con).map(drop).map_err(rerr)
}

fn lpush(con: &mut redis::Connection, list: &str, i: u64) -> Result<(), String> {
    redis::cmd("LPUSH").arg(list).arg(i).query::<i64>(con).map(drop).map_err(|e| format!("redis: {e}"))
}

/// The Redis side.
pub fn redis(ctx: &Ctx) -> Result<Measured, Fail> {
    let server = crate::redis_peer::server(ctx)?;
    let mut con = crate::redis_peer::connect(&server.url)?;
    redis::cmd("DEL")
        .arg(&["wnb:h:child", "wnb:h:parent", "wnb:h:child:proc", "wnb:h:parent:proc"])
        .query::<i64>(&mut con)
        .map_err(|e| format!("redis: {e}"))?;
    let child =
        ctx.spawn("handoff-redis-child", &[("url", server.url.clone()), ("rounds", ctx.plan.total().to_string())])?;
    let driven = drive(&ctx.plan, |i| {
        lpush(&mut con, "wnb:h:child", i)?;
        redis_take(&mut con, "wnb:h:parent", "wnb:h:parent:proc", i)
    })?;
    let notes = vec![
        crate::redis_peer::note(&server),
        "one round = two hand-offs: LPUSH to the other side's list; it BLMOVEs the item to its processing list, LREMs it (done) and LPUSHes to ours".into(),
    ];
    finish(ctx, child, driven, notes)
}

/// Child side of the Redis hand-off.
pub fn redis_role(ctx: &RoleCtx) -> Result<(), String> {
    let rounds: u64 = ctx.parse("rounds")?;
    let mut con = crate::redis_peer::connect(ctx.get("url")?)?;
    con.set_read_timeout(Some(Duration::from_secs(120))).map_err(|e| e.to_string())?;
    ctx.ready();
    for i in 0..rounds {
        redis_take(&mut con, "wnb:h:child", "wnb:h:child:proc", i)?;
        lpush(&mut con, "wnb:h:parent", i)?;
    }
    ctx.result(&serde_json::json!({ "rounds": rounds }));
    Ok(())
}

/// Waits for our next message, checks it carries round `i`'s payload, acks it.
fn receive(seg: &Segment, me: AgentId, i: u64, tag: u64, inbox: &mut Vec<worknode::MessageInfo>) -> Result<(), String> {
    seg.wait_for_mail(me, ROUND_TIMEOUT).map_err(|e| format!("round {i}: {e}"))?;
    seg.inbox(me, false, inbox).map_err(e2s)?;
    let first = inbox.first().ok_or_else(|| format!("round {i}: woken with an empty inbox"))?;
    let m = seg.read_message(first.handle).map_err(e2s)?;
    crate::payload::check(&m.body, i, tag)?;
    seg.ack(me, first.handle).map_err(e2s)
}

fn mail_caps() -> Capacities {
    Capacities { nodes: 4096, events: 1 << 14, agents: 8, blob_chunks: 2048, sets: 1, ..Capacities::default() }
}

/// Messages between two agents blocked on their inboxes.
pub fn mail(ctx: &Ctx) -> Result<Measured, Fail> {
    let seg = TempSegment::create("mail", &mail_caps()).map_err(e2s)?;
    let me = seg.join("parent", "bench").map_err(e2s)?;
    let child_p = Principal::Agent("child".into());
    let child =
        ctx.spawn("mail-child", &[("seg", seg.name().to_string()), ("rounds", ctx.plan.total().to_string())])?;
    let mut inbox = Vec::new();
    let driven = drive(&ctx.plan, |i| {
        seg.send(me, &child_p, None, &crate::payload::make(i, crate::payload::PING)).map_err(e2s)?;
        receive(&seg, me, i, crate::payload::PONG, &mut inbox)
    })?;
    let notes = vec![
        "one round = two messages of 64 B: send; the other agent, blocked in wait_for_mail, lists its inbox, reads the body, checks it, acks it and sends one back".to_string(),
        format!("mailboxes of {} messages; acked ones are purged oldest first to make room", seg.mailbox_capacity()),
    ];
    finish(ctx, child, driven, notes)
}

/// Child side of the message round trip.
pub fn mail_role(ctx: &RoleCtx) -> Result<(), String> {
    let seg = Segment::attach(ctx.get("seg")?, Access::ReadWrite).map_err(e2s)?;
    let rounds: u64 = ctx.parse("rounds")?;
    let me = seg.join("child", "bench").map_err(e2s)?;
    let parent = Principal::Agent("parent".into());
    ctx.ready();
    let mut inbox = Vec::new();
    for i in 0..rounds {
        receive(&seg, me, i, crate::payload::PING, &mut inbox)?;
        seg.send(me, &parent, None, &crate::payload::make(i, crate::payload::PONG)).map_err(e2s)?;
    }
    ctx.result(&serde_json::json!({ "rounds": rounds }));
    Ok(())
}
