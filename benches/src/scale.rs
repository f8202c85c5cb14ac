//! Scale: what a person or an agent inspecting a big board waits for. On a board of
//! 100 000 tasks (5 000 with `--quick`), the library calls behind `wn ls`, `wn tree` and
//! `wn rollup`, and the `wn` binary end to end for `ls` and `tree`; time per call.
//!
//! * `ls-100k`: `Segment::query` as `wn ls --status failed` builds it — a status that 50
//!   tasks of 100 000 have, so the bounded listing scans the whole pool's summary words
//!   (the worst case short of its limit; `--limit` stops it sooner when more match).
//! * `tree-100k`: `wn::cmd::nodes::tree_lines` over the whole board, every line drawn
//!   (what `wn tree` prints, without the terminal).
//! * `rollup-100k`: `Segment::rollup` of the project (the subtree walk).
//! * `ls-100k-wn`, `tree-100k-wn`: `wn --segment S ls --status failed` and `wn tree`,
//!   spawned per call, output read to the end: the process start, the attach, the call
//!   and the printing.
//!
//! The board is [`board`]: one project, folders of 1 000 tasks (a node's siblings are
//! name-checked, so 100 000 siblings would make the set-up quadratic), statuses spread
//! over ready, pending and complete. The segment is the harness's own (no daemon), as in
//! the `claims-*` rows. Each call's result is checked (the counts the board was built with).

use crate::histogram::Recorder;
use crate::suite::{Ctx, Fail, Measured};
use crate::TempSegment;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use worknode::{Capacities, Handle, NewNode, NodeKind, Query, Segment, Status};

/// Tasks in a folder of the board.
const PER_FOLDER: u32 = 1_000;
/// One task in this many is failed (what `ls-100k` lists).
const FAILED_EVERY: u32 = 2_000;

fn e2s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Tasks on the board of a run.
pub fn tasks(ctx: &Ctx) -> u32 {
    if ctx.quick {
        5_000
    } else {
        100_000
    }
}

/// What [`board`] built.
pub struct Board {
    /// The project holding every folder.
    pub project: Handle,
    /// Tasks.
    pub tasks: u32,
    /// Folders.
    pub folders: u32,
    /// Tasks per status, indexed by `Status::code()`.
    pub by_status: [u64; 8],
}

/// Node slots a board of `tasks` tasks needs (the root, `/agents`, the project, folders).
pub fn slots(tasks: u32) -> u32 {
    tasks + tasks.div_ceil(PER_FOLDER) + 64
}

/// The status of task `k` on the board.
fn status_of(k: u32) -> Status {
    if k % FAILED_EVERY == FAILED_EVERY - 1 {
        return Status::Failed;
    }
    match k % 3 {
        0 => Status::Ready,
        1 => Status::Pending,
        _ => Status::Complete,
    }
}

/// Adds the board (a project `scale`, folders of [`PER_FOLDER`] tasks) under the root.
pub fn board(seg: &Segment, tasks: u32) -> Result<Board, String> {
    let project = seg.add(seg.root(), &NewNode::new(NodeKind::Project, "scale")).map_err(e2s)?;
    let mut by_status = [0u64; 8];
    let mut folder = project;
    for k in 0..tasks {
        if k % PER_FOLDER == 0 {
            let name = format!("area {}", k / PER_FOLDER);
            folder = seg.add(project, &NewNode::new(NodeKind::Folder, &name)).map_err(e2s)?;
        }
        let s = status_of(k);
        by_status[s.code() as usize] += 1;
        let name = format!("task {k}");
        let node = NewNode::new(NodeKind::Task, &name).status(s).priority((k % 10) as u8).value((k % 7) as f64);
        seg.add(folder, &node).map_err(|e| format!("adding task {k}: {e}"))?;
    }
    Ok(Board { project, tasks, folders: tasks.div_ceil(PER_FOLDER), by_status })
}

/// Calls per row: warm-up, timed calls, time cap (checked after every call: one call
/// over a big board takes milliseconds, a spawned `wn` tens of them).
struct CallPlan {
    warmup: u32,
    calls: u32,
    cap: Duration,
}

fn plan(ctx: &Ctx, spawned: bool) -> CallPlan {
    match (ctx.quick, spawned) {
        (true, false) => CallPlan { warmup: 2, calls: 30, cap: Duration::from_secs(1) },
        (true, true) => CallPlan { warmup: 1, calls: 5, cap: Duration::from_secs(2) },
        (false, false) => CallPlan { warmup: 5, calls: 300, cap: Duration::from_secs(20) },
        (false, true) => CallPlan { warmup: 2, calls: 50, cap: Duration::from_secs(30) },
    }
}

/// Times `call` per `plan`; returns the recorder and a note if the cap stopped it.
fn time_calls(
    plan: &CallPlan,
    mut call: impl FnMut() -> Result<(), String>,
) -> Result<(Recorder, Vec<String>), String> {
    for _ in 0..plan.warmup {
        call()?;
    }
    let mut rec = Recorder::new();
    let start = Instant::now();
    let mut notes = Vec::new();
    for _ in 0..plan.calls {
        let t = Instant::now();
        call()?;
        rec.record(t.elapsed().as_nanos() as u64);
        if start.elapsed() > plan.cap {
            notes.push(format!("time cap of {:?} reached: {} of {} calls", plan.cap, rec.len(), plan.calls));
            break;
        }
    }
    Ok((rec, notes))
}

/// What a scale row does.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// The bounded listing (`wn ls --status failed`).
    Ls,
    /// The drawn tree (`wn tree`).
    Tree,
    /// The subtree totals (`wn rollup`).
    Rollup,
}

/// Nodes `wn tree` draws for the board: the root, `/agents`, the project, folders, tasks.
fn tree_nodes(seg: &Segment, b: &Board) -> Result<usize, String> {
    let mut top = Vec::new();
    seg.children(seg.root(), &mut top).map_err(e2s)?;
    if top.len() != 2 {
        return Err(format!("the root has {} children, expected /agents and the project", top.len()));
    }
    Ok(3 + b.folders as usize + b.tasks as usize)
}

fn build(ctx: &Ctx) -> Result<(TempSegment, Board, f64), String> {
    let n = tasks(ctx);
    let caps =
        Capacities { nodes: slots(n), events: 1 << 16, agents: 8, blob_chunks: 1, sets: 1, ..Capacities::default() };
    let seg = TempSegment::create("scale", &caps).map_err(e2s)?;
    let t = Instant::now();
    let b = board(&seg, n)?;
    Ok((seg, b, t.elapsed().as_secs_f64()))
}

/// One library-call row.
pub fn library(ctx: &Ctx, op: Op) -> Result<Measured, Fail> {
    let (seg, b, built) = build(ctx)?;
    let failed = b.by_status[Status::Failed.code() as usize];
    let lines = tree_nodes(&seg, &b)?;
    let style = wn::output::Style { color: false };
    let (rec, mut notes) = match op {
        Op::Ls => {
            let q = Query { status: Some(Status::Failed), ..Query::default() };
            let mut out = Vec::new();
            time_calls(&plan(ctx, false), || {
                let st = seg.query(&q, &mut out).map_err(e2s)?;
                (out.len() as u64 == failed && !st.limited)
                    .then_some(())
                    .ok_or_else(|| format!("query found {} failed tasks, the board has {failed}", out.len()))
            })?
        }
        Op::Tree => time_calls(&plan(ctx, false), || {
            let (drawn, cut) = wn::cmd::nodes::tree_lines(&seg, seg.root(), None, &style, lines + 1)
                .map_err(|f| format!("tree_lines: {}", f.message))?;
            (drawn.len() == lines && !cut).then_some(()).ok_or_else(|| {
                format!("tree_lines drew {} lines (cut: {cut}), the board has {lines} nodes", drawn.len())
            })
        })?,
        Op::Rollup => time_calls(&plan(ctx, false), || {
            let r = seg.rollup(b.project, None).map_err(e2s)?;
            (r.total == b.tasks as u64 && r.by_status == b.by_status).then_some(()).ok_or_else(|| {
                format!(
                    "rollup counted {} tasks {:?}, the board has {} {:?}",
                    r.total, r.by_status, b.tasks, b.by_status
                )
            })
        })?,
    };
    let what = match op {
        Op::Ls => {
            format!("Segment::query {{ status: failed, limit: 100 }}: {failed} matches, every slot's summary read")
        }
        Op::Tree => format!("wn::cmd::nodes::tree_lines of the root, uncoloured: {lines} lines drawn per call"),
        Op::Rollup => format!("Segment::rollup of the project: {} tasks counted per call", b.tasks),
    };
    notes.insert(0, format!("{} tasks in {} folders (board built in {built:.2} s); {what}", b.tasks, b.folders));
    Ok(Measured::latency(rec.stats(), notes).pinned("single process (pinned)".into()).with("tasks", b.tasks.into()))
}

fn run_wn(wn: &Path, segment: &str, args: &[&str]) -> Result<Vec<u8>, String> {
    let out = Command::new(wn)
        .args(["--segment", segment])
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("run wn: {e}"))?;
    if !out.status.success() {
        return Err(format!("wn {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(out.stdout)
}

/// Checks what one `wn` call printed.
type OutputCheck = Box<dyn Fn(&[u8]) -> Result<(), String>>;

/// One `wn` end-to-end row (`ls` or `tree`).
pub fn binary(ctx: &Ctx, op: Op) -> Result<Measured, Fail> {
    let wn = crate::durability::locate_binary("wn")?;
    let (seg, b, built) = build(ctx)?;
    let failed = b.by_status[Status::Failed.code() as usize];
    let lines = tree_nodes(&seg, &b)?;
    let (args, check): (&[&str], OutputCheck) = match op {
        Op::Ls => (
            &["--json", "ls", "--status", "failed"],
            Box::new(move |out: &[u8]| {
                let v: serde_json::Value =
                    serde_json::from_slice(out).map_err(|e| format!("wn ls printed non-JSON: {e}"))?;
                (v["count"].as_u64() == Some(failed))
                    .then_some(())
                    .ok_or_else(|| format!("wn ls listed {} failed tasks, the board has {failed}", v["count"]))
            }),
        ),
        Op::Tree => (
            &["tree"],
            Box::new(move |out: &[u8]| {
                let got = out.split(|c| *c == b'\n').filter(|l| !l.is_empty()).count();
                (got == lines)
                    .then_some(())
                    .ok_or_else(|| format!("wn tree printed {got} lines, the board has {lines} nodes"))
            }),
        ),
        Op::Rollup => return Err("no end-to-end rollup row".into()),
    };
    let name = seg.name().to_string();
    let (rec, mut notes) = time_calls(&plan(ctx, true), || check(&run_wn(&wn, &name, args)?))?;
    notes.insert(
        0,
        format!(
            "{} tasks in {} folders (board built in {built:.2} s); `wn --segment S {}` spawned per call, stdout read to the end and checked",
            b.tasks,
            b.folders,
            args.join(" ")
        ),
    );
    Ok(Measured::latency(rec.stats(), notes)
        .pinned("harness pinned; each wn on the harness's CPU".into())
        .with("tasks", b.tasks.into()))
}
