//! Claim throughput: 1, 2 or 4 processes run the worker loop — `claim_next` then
//! `complete` — over a pool of pre-created ready tasks until none is left; claims per
//! second over all processes. Afterwards every task must be complete and the claims must
//! add up to the task count (each task claimed exactly once). `claims-1-1k` and
//! `claims-1-100k` repeat the one-process run over 1 000 and 100 000 tasks (`claims-1`
//! takes 10 000), to show whether the rate depends on the board's size.
//!
//! Beside them, the same loop over the same task count with the stores agents would
//! otherwise use as a queue: [`redis`] (`claims-redis`: LMOVE between lists + HSET) and
//! [`sqlite`] (`claims-sqlite`: an indexed `UPDATE … RETURNING` per claim, WAL).

use crate::proc::{mono_ns, RoleCtx};
use crate::report::Rate;
use crate::suite::{Ctx, Fail, Measured};
use crate::TempSegment;
use serde_json::json;
use std::time::Duration;
use worknode::{Access, Capacities, NewNode, NodeKind, Segment, Status, TaskError, TaskFilter};

fn e2s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Ready tasks per run.
pub fn tasks(ctx: &Ctx) -> u32 {
    if ctx.quick {
        1_000
    } else {
        10_000
    }
}

/// `procs` claiming processes over `n` ready tasks.
pub fn run(ctx: &Ctx, procs: usize, n: u32) -> Result<Measured, Fail> {
    // The tasks sit in folders of at most `PER_FOLDER` under one project: adding a node
    // checks its siblings' names, so 100 000 siblings would make the set-up quadratic
    // (minutes); the claims do not care where the tasks are.
    const PER_FOLDER: u32 = 1_000;
    let folders = n.div_ceil(PER_FOLDER);
    let caps = Capacities {
        nodes: n + folders + 64,
        events: 1 << 16,
        agents: 16,
        blob_chunks: 1,
        sets: 1,
        ..Capacities::default()
    };
    let seg = TempSegment::create("claims", &caps).map_err(e2s)?;
    let project = seg.add(seg.root(), &NewNode::new(NodeKind::Project, "claims")).map_err(e2s)?;
    let mut handles = Vec::with_capacity(n as usize);
    let mut folder = project;
    for k in 0..n {
        if k % PER_FOLDER == 0 {
            let name = format!("batch {}", k / PER_FOLDER);
            folder = seg.add(project, &NewNode::new(NodeKind::Folder, &name)).map_err(e2s)?;
        }
        let name = format!("task {k}");
        handles.push(seg.add(folder, &NewNode::new(NodeKind::Task, &name).status(Status::Ready)).map_err(e2s)?);
    }
    let mut cs = Vec::new();
    for k in 0..procs {
        let cpu = ctx.pair.map(|p| if k % 2 == 0 { p.0 } else { p.1 });
        cs.push(ctx.spawn_on("claimer", &[("seg", seg.name().to_string()), ("id", k.to_string())], cpu)?);
    }
    for c in cs.iter_mut() {
        c.wait_ready(ctx.answer_timeout())?;
    }
    for c in cs.iter_mut() {
        c.go()?;
    }
    let (mut claimed, mut start, mut end) = (0u64, u64::MAX, 0u64);
    let mut per = Vec::new();
    for c in cs.iter_mut() {
        let v = c.result(ctx.answer_timeout())?;
        let get = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).ok_or_else(|| format!("bad result {v}"));
        claimed += get("claims")?;
        per.push(get("claims")?);
        start = start.min(get("start_ns")?);
        end = end.max(get("end_ns")?);
    }
    if claimed != n as u64 {
        return Err(format!("{claimed} claims for {n} tasks").into());
    }
    let open =
        handles.iter().filter(|h| seg.read(**h).map(|t| t.status() != Some(Status::Complete)).unwrap_or(true)).count();
    if open > 0 {
        return Err(format!("{open} tasks not complete after the run").into());
    }
    let secs = end.saturating_sub(start) as f64 / 1e9;
    let pin = match ctx.pair {
        Some((a, b)) => format!("processes alternate CPU {a} / CPU {b}"),
        None => "not pinned".into(),
    };
    Ok(Measured::rate(
        Rate::new(n as f64 / secs, "claims/s", n as u64, secs),
        vec![format!(
            "{n} ready tasks in {folders} folder(s) (segment of {} node slots); claim_next + complete per task; claims per process {per:?}",
            caps.nodes
        )],
    )
    .pinned(pin))
}

/// A claiming process.
pub fn role(ctx: &RoleCtx) -> Result<(), String> {
    let seg = Segment::attach(ctx.get("seg")?, Access::ReadWrite).map_err(e2s)?;
    let id: u32 = ctx.parse("id")?;
    let agent = seg.join(&format!("claimer-{id}"), "bench").map_err(e2s)?;
    ctx.ready();
    ctx.wait_go()?;
    let start = mono_ns();
    let mut claims = 0u64;
    loop {
        match seg.claim_next(&TaskFilter::default(), agent, Duration::from_secs(600)) {
            Ok(c) => {
                seg.complete(&c, "").map_err(e2s)?;
                claims += 1;
            }
            Err(TaskError::NothingReady) => break,
            Err(e) => return Err(format!("claim_next: {e}")),
        }
    }
    let end = mono_ns();
    ctx.result(&json!({ "claims": claims, "start_ns": start, "end_ns": end }));
    Ok(())
}

/// Redis as a task queue, the way a client library does it: the ready ids in a list,
/// each task a hash. A claim is `LMOVE ready claimed LEFT RIGHT` (the id moves
/// atomically, so no two workers get it) and then `HSET status claimed holder W`; the
/// complete is `HSET status complete` + `LREM claimed 1 id`, pipelined. Three round trips
/// per task — the claim's HSET needs the id LMOVE returned. Same task count as `claims-1`.
pub fn redis(ctx: &Ctx) -> Result<Measured, Fail> {
    let n = tasks(ctx);
    let server = crate::redis_peer::server(ctx)?;
    let mut con = crate::redis_peer::connect(&server.url)?;
    let rerr = |e: redis::RedisError| format!("redis: {e}");
    redis::cmd("FLUSHDB").query::<()>(&mut con).map_err(rerr)?;
    // The board, in pipelines of 1 000 commands (set-up, not measured).
    for chunk in (0..n).collect::<Vec<u32>>().chunks(1_000) {
        let mut p = redis::pipe();
        for k in chunk {
            p.hset_multiple(format!("wnb:task:{k}"), &[("status", "ready"), ("holder", "")]).ignore();
            p.rpush("wnb:ready", *k).ignore();
        }
        p.query::<()>(&mut con).map_err(rerr)?;
    }
    let started = std::time::Instant::now();
    let mut claimed = 0u64;
    loop {
        let id: Option<u32> =
            match redis::cmd("LMOVE").arg("wnb:ready").arg("wnb:claimed").arg("LEFT").arg("RIGHT").query(&mut con) {
                Ok(id) => id,
                Err(e) if e.to_string().to_lowercase().contains("unknown command") => {
                    return Err(Fail::Skip(format!("skipped: LMOVE needs Redis 6.2 or later ({})", server.version)));
                }
                Err(e) => return Err(rerr(e).into()),
            };
        let Some(id) = id else { break };
        let key = format!("wnb:task:{id}");
        redis::cmd("HSET")
            .arg(&key)
            .arg("status")
            .arg("claimed")
            .arg("holder")
            .arg("worker-0")
            .query::<()>(&mut con)
            .map_err(rerr)?;
        let (removed,): (i64,) = redis::pipe()
            .hset_multiple(&key, &[("status", "complete"), ("holder", "")])
            .ignore()
            .lrem("wnb:claimed", 1, id)
            .query(&mut con)
            .map_err(rerr)?;
        if removed != 1 {
            return Err(format!("LREM of task {id} removed {removed} entries").into());
        }
        claimed += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    if claimed != n as u64 {
        return Err(format!("{claimed} claims for {n} tasks").into());
    }
    let mut p = redis::pipe();
    for k in 0..n {
        p.hget(format!("wnb:task:{k}"), "status");
    }
    let statuses: Vec<String> = p.query(&mut con).map_err(rerr)?;
    let open = statuses.iter().filter(|s| *s != "complete").count();
    let left: i64 = redis::cmd("LLEN").arg("wnb:claimed").query(&mut con).map_err(rerr)?;
    if open > 0 || left != 0 {
        return Err(format!("{open} tasks not complete, {left} ids left in the claimed list").into());
    }
    redis::cmd("FLUSHDB").query::<()>(&mut con).map_err(rerr)?;
    Ok(Measured::rate(
        Rate::new(n as f64 / secs, "claims/s", n as u64, secs),
        vec![
            crate::redis_peer::note(&server),
            format!(
                "{n} ready ids in a list, a hash per task; claim = LMOVE ready claimed, then HSET status/holder; complete = HSET + LREM pipelined (3 round trips per task)"
            ),
        ],
    )
    .pinned("one client process (pinned), server not pinned".into()))
}

/// SQLite as a task queue: one `tasks` table, WAL, `synchronous=NORMAL`, an index on
/// `(status, priority, id)` so the pick is one O(log n) index seek. A claim is one
/// transaction: `UPDATE … SET status='claimed', holder=? WHERE id=(SELECT id … WHERE
/// status='ready' ORDER BY priority, id LIMIT 1) RETURNING id`; the complete another:
/// `UPDATE … SET status='complete' WHERE id=? AND holder=?`. Same task count as `claims-1`.
pub fn sqlite(ctx: &Ctx) -> Result<Measured, Fail> {
    use rusqlite::params;
    let n = tasks(ctx);
    let dir = crate::shm::TempDir::new(&ctx.tmp, "sqlite-claims")?;
    let path = dir.path().join("tasks.sqlite");
    let mut c = crate::sqlite::open(&path, "NORMAL")?;
    let serr = |e: rusqlite::Error| format!("sqlite: {e}");
    c.execute_batch(
        "CREATE TABLE tasks(id INTEGER PRIMARY KEY, status TEXT NOT NULL, priority INTEGER NOT NULL, holder TEXT);
         CREATE INDEX tasks_pick ON tasks(status, priority, id);",
    )
    .map_err(serr)?;
    {
        let tx = c.transaction().map_err(serr)?;
        let mut ins = tx
            .prepare("INSERT INTO tasks(id, status, priority, holder) VALUES (?1, 'ready', ?2, NULL)")
            .map_err(serr)?;
        for k in 0..n {
            // Priorities 0..9 so ORDER BY has work to do; the index keeps it a seek.
            ins.execute(params![k as i64, (k % 10) as i64]).map_err(serr)?;
        }
        drop(ins);
        tx.commit().map_err(serr)?;
    }
    let plan: String = c
        .query_row(
            "EXPLAIN QUERY PLAN SELECT id FROM tasks WHERE status='ready' ORDER BY priority, id LIMIT 1",
            [],
            |r| r.get(3),
        )
        .map_err(serr)?;
    if !plan.contains("tasks_pick") || plan.contains("TEMP B-TREE") {
        return Err(format!("the pick does not use the index: {plan}").into());
    }
    let started = std::time::Instant::now();
    let mut claimed = 0u64;
    loop {
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(serr)?;
        let id: Option<i64> = {
            let mut pick = tx
                .prepare_cached(
                    "UPDATE tasks SET status='claimed', holder=?1 WHERE id=(SELECT id FROM tasks WHERE status='ready' \
                     ORDER BY priority, id LIMIT 1) RETURNING id",
                )
                .map_err(serr)?;
            let mut rows = pick.query(["worker-0"]).map_err(serr)?;
            rows.next().map_err(serr)?.map(|r| r.get(0)).transpose().map_err(serr)?
        };
        tx.commit().map_err(serr)?;
        let Some(id) = id else { break };
        let done = c
            .prepare_cached("UPDATE tasks SET status='complete', holder=NULL WHERE id=?1 AND holder=?2")
            .and_then(|mut s| s.execute(params![id, "worker-0"]))
            .map_err(serr)?;
        if done != 1 {
            return Err(format!("completing task {id} changed {done} rows").into());
        }
        claimed += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    if claimed != n as u64 {
        return Err(format!("{claimed} claims for {n} tasks").into());
    }
    let open: i64 =
        c.query_row("SELECT count(*) FROM tasks WHERE status != 'complete'", [], |r| r.get(0)).map_err(serr)?;
    if open > 0 {
        return Err(format!("{open} tasks not complete after the run").into());
    }
    Ok(Measured::rate(
        Rate::new(n as f64 / secs, "claims/s", n as u64, secs),
        vec![format!(
            "SQLite {}, WAL, synchronous=NORMAL, on {}; {n} rows, index (status, priority, id): the pick is an index seek ({plan}); claim = BEGIN IMMEDIATE + UPDATE … RETURNING + COMMIT, complete = autocommit UPDATE",
            rusqlite::version(),
            crate::sysinfo::fs_type(dir.path())
        )],
    )
    .pinned("single process (pinned)".into()))
}
