//! Claim throughput: 1, 2 or 4 processes run the worker loop — `claim_next` then
//! `complete` — over a pool of pre-created ready tasks until none is left; claims per
//! second over all processes. Afterwards every task must be complete and the claims must
//! add up to the task count (each task claimed exactly once). `claims-1-1k` and
//! `claims-1-100k` repeat the one-process run over 1 000 and 100 000 tasks (`claims-1`
//! takes 10 000), to show whether the rate depends on the board's size.

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
