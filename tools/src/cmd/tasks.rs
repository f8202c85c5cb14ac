//! Tasks: `wn ready`, `wn claim`, the claimant's verbs (`renew`, `release`, `start`,
//! `progress`, `done`, `fail`) and dependencies (`block`, `dep add|rm|ls`).
//!
//! # Epochs
//!
//! A claimant's write presents a [`Claim`]. `wn` builds it from the task's current
//! record when the task is claimed by this `--agent` (slot, epoch, lease), so a shell
//! agent needs to remember nothing between commands. A script that wants strict fencing
//! saves the epoch `claim` printed and passes `--epoch N`: if the task was claimed again
//! since (its lease lapsed and another agent took it), the write is refused with
//! `stale_epoch` (exit 3) instead of landing on the successor's claim.

use crate::cmd::nodes::{kind_parser, node_table, print_node};
use crate::ctx::Ctx;
use crate::duration;
use crate::fail::{exit, Fail};
use crate::output::{clean, node_json, now_ms, print, print_json, Names};
use crate::resolve::{self, path_of};
use serde_json::{json, Value};
use std::time::Duration;
use worknode::{Claim, Handle, NodeKind, Segment, Status, TaskError, TaskFilter};

/// Options of `wn ready`.
#[derive(clap::Args, Debug)]
pub struct ReadyArgs {
    /// Only nodes of this kind.
    #[arg(long, value_parser = kind_parser(), default_value = "task")]
    kind: NodeKind,
    /// Only this subtree (UUID, unique prefix, or /path).
    #[arg(long, value_name = "NODE")]
    under: Option<String>,
    /// Only tasks assigned to this agent (by name) or role (`@role`).
    #[arg(long, value_name = "AGENT|@ROLE")]
    assignee: Option<String>,
    /// Only tasks carrying this label (`wn label`).
    #[arg(long, value_name = "LABEL")]
    label: Option<String>,
    /// At most this many (1 to 16777216).
    #[arg(long, value_name = "N", default_value = "100", value_parser = duration::number(1, worknode::layout::MAX_NODES as u64, "tasks to list"))]
    limit: u64,
}

/// Options of `wn claim`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["node", "next"])))]
pub struct ClaimArgs {
    /// The task to claim (UUID, unique prefix, or /path).
    pub(crate) node: Option<String>,
    /// Claim the best ready task instead (highest priority, then oldest).
    #[arg(long)]
    next: bool,
    /// With --next: only this kind.
    #[arg(long, value_parser = kind_parser(), requires = "next")]
    kind: Option<NodeKind>,
    /// With --next: only this subtree.
    #[arg(long, value_name = "NODE", requires = "next")]
    under: Option<String>,
    /// With --next: only tasks assigned to this agent or `@role` (and open to you).
    #[arg(long, value_name = "AGENT|@ROLE", requires = "next", conflicts_with = "mine")]
    assignee: Option<String>,
    /// With --next: only tasks assigned to you, by name or by your role (not tasks open
    /// to all).
    #[arg(long, requires = "next")]
    mine: bool,
    /// With --next: only tasks carrying this label (`wn label`).
    #[arg(long, value_name = "LABEL", requires = "next")]
    label: Option<String>,
    /// With --next: if no task is ready, wait up to this long for one (exit 5 when none
    /// came); sleeps without polling and is woken for a task it may take.
    #[arg(long, value_name = "DURATION", value_parser = duration::timeout, requires = "next")]
    wait: Option<Duration>,
    /// How long the claim holds unless renewed (30s, 10m, 1h); 1ms to 30d.
    #[arg(long, value_name = "DURATION", value_parser = duration::lease, default_value = "10m")]
    lease: Duration,
    /// Also reserve these files (repeatable; globs as `wn reserve` takes them) under the
    /// same lease: both or neither — on a reservation conflict the task stays unclaimed.
    /// The reservation's lease is its own: `progress` renews the task's, `wn reserve
    /// --renew GLOB…` the reservation's.
    #[arg(long, value_name = "GLOB")]
    reserve: Vec<String>,
}

/// The task and the optional strict epoch, shared by the claimant's verbs.
#[derive(clap::Args, Debug)]
pub struct ClaimantArgs {
    /// The task (UUID, unique prefix, or /path).
    pub(crate) node: String,
    /// Present this fencing epoch (as printed by `claim`) instead of the current one: the
    /// write fails with exit 3 if the task was claimed again since.
    #[arg(long, value_name = "N", value_parser = duration::number(1, u64::MAX, "a fencing epoch, as `claim` printed it"))]
    epoch: Option<u64>,
}

/// Options of `wn renew`.
#[derive(clap::Args, Debug)]
pub struct RenewArgs {
    #[command(flatten)]
    pub(crate) task: ClaimantArgs,
    /// New lease, from now; 1ms to 30d.
    #[arg(long, value_name = "DURATION", value_parser = duration::lease, default_value = "10m")]
    lease: Duration,
}

/// Options of `wn progress`.
#[derive(clap::Args, Debug)]
pub struct ProgressArgs {
    #[command(flatten)]
    pub(crate) task: ClaimantArgs,
    /// Percent done, 0-100.
    #[arg(value_parser = duration::number(0, 100, "percent done"))]
    pct: u64,
    /// A short note kept on the task (at most 34 bytes, JSON-escaped).
    #[arg(long, value_name = "TEXT", default_value = "")]
    note: String,
}

/// Options of `wn done`.
#[derive(clap::Args, Debug)]
pub struct DoneArgs {
    #[command(flatten)]
    pub(crate) task: ClaimantArgs,
    /// A short note carried in the `task_completed` event.
    #[arg(long, value_name = "TEXT", default_value = "")]
    note: String,
}

/// Options of `wn fail`.
#[derive(clap::Args, Debug)]
pub struct FailArgs {
    #[command(flatten)]
    pub(crate) task: ClaimantArgs,
    /// Why it failed (carried in the `task_failed` event).
    #[arg(long, value_name = "TEXT")]
    reason: String,
}

/// Options of `wn block`.
#[derive(clap::Args, Debug)]
pub struct BlockArgs {
    /// The node that waits.
    node: String,
    /// The node it waits for.
    #[arg(long, value_name = "NODE")]
    by: String,
}

/// `wn dep …`.
#[derive(clap::Subcommand, Debug)]
pub enum DepCmd {
    /// Make NODE wait for each --blocked-by node.
    Add(DepArgs),
    /// Remove the edges NODE → each --blocked-by node (NODE becomes ready when none is open).
    Rm(DepArgs),
    /// List what NODE waits for and what waits for it.
    Ls(DepLsArgs),
}

/// Options of `wn dep add|rm`.
#[derive(clap::Args, Debug)]
pub struct DepArgs {
    /// The node that waits.
    node: String,
    /// The node(s) it waits for (repeatable).
    #[arg(long = "blocked-by", value_name = "NODE", required = true)]
    blocked_by: Vec<String>,
}

/// Options of `wn dep ls`.
#[derive(clap::Args, Debug)]
pub struct DepLsArgs {
    /// The node.
    node: String,
}

/// Lists tasks that can be claimed now, best first.
pub fn run_ready(ctx: &Ctx, a: &ReadyArgs) -> Result<(), Fail> {
    let seg = ctx.attach_ro()?;
    let filter = TaskFilter {
        kind: Some(a.kind),
        assignee: a.assignee.as_deref().map(crate::ctx::principal).transpose()?.map(|p| p.key()),
        under: a.under.as_deref().map(|u| resolve::node(&seg, u)).transpose()?,
        label: a.label.as_deref().map(crate::cmd::labels::label_key).transpose()?,
        ..TaskFilter::default()
    };
    let mut out = Vec::new();
    // One more than asked: whether the list was cut is then known, not guessed.
    seg.ready(&filter, a.limit as usize + 1, &mut out)?;
    let truncated = out.len() > a.limit as usize;
    out.truncate(a.limit as usize);
    let names = Names::load(&seg);
    if ctx.json {
        let tasks: Vec<Value> =
            out.iter().map(|n| node_json(&seg, n, &names, Some(&path_of(&seg, n.handle())))).collect();
        return print_json(&json!({ "tasks": tasks, "count": out.len(), "truncated": truncated }));
    }
    print(&node_table(ctx, &seg, &out, &names))
}

/// A claim as `claim` and `renew` print it: with `--json`, the node object (its `claim`
/// holds the agent, epoch and lease; `epoch` and `uuid` are at its top level).
fn print_claim(ctx: &Ctx, seg: &Segment, c: &Claim) -> Result<(), Fail> {
    let n = seg.read(c.task)?;
    if ctx.json {
        return print_node(ctx, seg, &n);
    }
    let lease = duration::format_ms(c.lease_until_ms.saturating_sub(now_ms()));
    // Where a bridge shares the board, say when this claim holds for this host only.
    let local_only =
        n.record().flags & worknode::layout::record_flags::SHARED == 0 && !crate::bridges::read(seg).is_empty();
    let note = if local_only { " (local only: not shared with other hosts)" } else { "" };
    print(&format!("{} epoch {} lease {lease} {}{note}", n.uuid(), c.epoch, clean(n.name())))
}

/// Claims a task, or the best ready one.
pub fn run_claim(ctx: &Ctx, a: &ClaimArgs) -> Result<(), Fail> {
    // clap's `requires` does not hold these back when NODE fills the required group.
    let selects = a.kind.is_some() || a.under.is_some() || a.assignee.is_some() || a.label.is_some();
    if !a.next && (selects || a.mine || a.wait.is_some()) {
        return Err(Fail::usage(
            "--kind, --under, --assignee, --label, --mine and --wait select a task for --next; they cannot go with NODE",
            "either `wn claim NODE` or `wn claim --next [--kind K] [--under NODE] [--mine]`",
        ));
    }
    // Globs are checked before anything is claimed: a malformed one changes nothing.
    for g in &a.reserve {
        worknode::Glob::parse(g).map_err(|error| worknode::ReserveError::BadGlob { glob: g.clone(), error })?;
    }
    let seg = ctx.attach_rw()?;
    let me = ctx.me(&seg)?;
    let claim = if a.next {
        let filter = TaskFilter {
            kind: a.kind,
            assignee: a.assignee.as_deref().map(crate::ctx::principal).transpose()?.map(|p| p.key()),
            mine: a.mine,
            under: a.under.as_deref().map(|u| resolve::node(&seg, u)).transpose()?,
            label: a.label.as_deref().map(crate::cmd::labels::label_key).transpose()?,
        };
        let got = match a.wait {
            Some(wait) => seg.claim_next_wait(&filter, me, a.lease, wait),
            None => seg.claim_next(&filter, me, a.lease),
        };
        got.map_err(|e| {
            let tail = seg.ring_tail();
            let f = Fail::from(e);
            if f.code == "nothing_ready" {
                // The ring position now: `wn wait --since SEQ` then misses nothing.
                Fail { hint: format!("wait for one: `wn wait --kind task_ready --since {tail}`"), ..f }
                    .with_details(json!({ "ring_tail": tail }))
            } else {
                f
            }
        })?
    } else {
        claim_one(&seg, me, a.node.as_deref().unwrap_or_default(), a.lease)?
    };
    if a.reserve.is_empty() {
        return print_claim(ctx, &seg, &claim);
    }
    reserve_with(ctx, &seg, me, a, claim)
}

/// Claims the task `spec` names for `me` (`wn claim NODE`, `POST /api/tasks/{id}/claim`),
/// a refusal naming who holds it or whom it is assigned to.
pub fn claim_one(seg: &Segment, me: worknode::AgentId, spec: &str, lease: Duration) -> Result<Claim, Fail> {
    let h = resolve::node(seg, spec)?;
    seg.claim(h, me, lease).map_err(|e| match e {
            TaskError::AlreadyClaimed { by, until_ms } => Fail::new(
                "already_claimed",
                exit::CONFLICT,
                format!(
                    "{spec:?} is already claimed by {} (lease ends {})",
                    Names::load(seg).agent(by),
                    duration::relative(now_ms(), until_ms)
                ),
                "pick another task (`wn claim --next`), or wait for it (`wn wait --kind task_released`)",
            ),
            TaskError::AssignedElsewhere { .. } => {
                let names = Names::load(seg);
                let to: Vec<String> = seg
                    .read(h)
                    .map(|n| n.assignees().map(|k| clean(&names.principal(k)).into_owned()).collect())
                    .unwrap_or_default();
                Fail::new(
                    "assigned_elsewhere",
                    exit::CONFLICT,
                    format!("{spec:?} is assigned to {}, not to you", to.join(", ")),
                    "claim work assigned to you or open to all (`wn claim --next`), or have it reassigned (`wn assign`, `--open-to-all`)",
                )
                .with_details(json!({ "assignees": to }))
            }
            e => e.into(),
        })
}

/// `claim --reserve`: reserves the claimed task's files, or gives the task back.
fn reserve_with(ctx: &Ctx, seg: &Segment, me: worknode::AgentId, a: &ClaimArgs, claim: Claim) -> Result<(), Fail> {
    // The claim is ours and nobody else's; reserve its files, and if they are taken
    // give the task back (ready again) so it is both or neither.
    let globs: Vec<&str> = a.reserve.iter().map(String::as_str).collect();
    let opts = worknode::ReserveOptions { lease: a.lease, ..worknode::ReserveOptions::default() };
    let r = match seg.reserve(me, &globs, &opts) {
        Ok(r) => r,
        Err(e) => {
            let refused = Fail::from(e);
            return Err(match seg.release(&claim) {
                Ok(_) => refused,
                Err(r) => Fail {
                    message: format!(
                        "{}; and giving the task back failed ({r}): it stays claimed until its lease ends or `wn release`",
                        refused.message
                    ),
                    ..refused
                },
            });
        }
    };
    let n = seg.read(claim.task)?;
    if ctx.json {
        let mut v = node_json(seg, &n, &Names::for_node(seg, &n), Some(&path_of(seg, n.handle())));
        v["reservation"] = crate::cmd::reserve::reservation_json(seg, &r, "");
        return print_json(&v);
    }
    let lease = duration::format_ms(claim.lease_until_ms.saturating_sub(now_ms()));
    print(&format!(
        "{} epoch {} lease {lease} {} reserved {}",
        n.uuid(),
        claim.epoch,
        clean(n.name()),
        clean(&r.globs.join(" "))
    ))
}

/// The claim this agent presents for `spec`: built from the task's record when this
/// agent holds it, with `epoch` (if given) replacing the current epoch.
fn claim_for(ctx: &Ctx, seg: &Segment, a: &ClaimantArgs) -> Result<Claim, Fail> {
    let me = ctx.me(seg)?;
    let who = seg.grant().map(|g| g.agent().to_string()).or_else(|| ctx.agent.clone()).unwrap_or_default();
    claim_of(seg, me, &who, &a.node, a.epoch)
}

/// The claim agent `me` (named `who`) presents for the task `spec`: built from the task's
/// record when `me` holds it, with `epoch` (if given) replacing the current epoch (the
/// claimant's verbs of `wn`, and of `wn serve`, which always passes the epoch).
pub fn claim_of(
    seg: &Segment,
    me: worknode::AgentId,
    who: &str,
    spec: &str,
    epoch: Option<u64>,
) -> Result<Claim, Fail> {
    let h = resolve::node(seg, spec)?;
    let n = seg.read(h)?;
    let mine = n.claim_agent_raw() == Some(me.index) && n.claim_agent_generation() == me.generation;
    if !mine && epoch.is_none() {
        // This agent held it, and its lease lapsed: say that, and who holds it now.
        if let Some((slot, generation, at_ms)) = n.lapsed_claim() {
            if slot == me.index && generation == me.generation {
                let now = match n.claim_agent_raw() {
                    Some(other) if n.live_claimant_at(now_ms()).is_some() => {
                        format!("claimed by {} now", Names::load(seg).agent(other))
                    }
                    _ => format!("{} now", n.status().map_or("?", Status::as_str)),
                };
                return Err(Fail::new(
                    "lease_expired",
                    exit::CONFLICT,
                    format!("your lease on {:?} lapsed {} ({now})", n.name(), duration::relative(now_ms(), at_ms)),
                    "renew in time (`wn renew`, or report progress: it extends the lease); claim it again if it is ready",
                ));
            }
        }
        return Err(match n.claim_agent_raw() {
            Some(other) if n.live_claimant_at(now_ms()).is_some() => Fail::new(
                "not_claimant",
                exit::CONFLICT,
                format!("{:?} is claimed by {}, not by {who}", n.name(), Names::load(seg).agent(other)),
                "work on a task you hold (`wn claim --next`)",
            ),
            _ => Fail::new(
                "not_claimed",
                exit::CONFLICT,
                format!("{:?} is not claimed by {who}", n.name()),
                format!("claim it first: `wn --agent {who} claim {}`", n.uuid()),
            ),
        });
    }
    Ok(Claim { task: h, agent: me, epoch: epoch.unwrap_or(n.claim_epoch()), lease_until_ms: n.lease_until_ms() })
}

/// Extends a held lease.
pub fn run_renew(ctx: &Ctx, a: &RenewArgs) -> Result<(), Fail> {
    let seg = ctx.attach_rw()?;
    let c = claim_for(ctx, &seg, &a.task)?;
    let c = seg.renew(&c, a.lease)?;
    print_claim(ctx, &seg, &c)
}

/// Gives a held task back.
pub fn run_release(ctx: &Ctx, a: &ClaimantArgs) -> Result<(), Fail> {
    let seg = ctx.attach_rw()?;
    let c = claim_for(ctx, &seg, a)?;
    let n = seg.release(&c)?;
    print_node(ctx, &seg, &n)
}

/// Claimed → in progress.
pub fn run_start(ctx: &Ctx, a: &ClaimantArgs) -> Result<(), Fail> {
    let seg = ctx.attach_rw()?;
    let c = claim_for(ctx, &seg, a)?;
    let n = seg.start(&c)?;
    print_node(ctx, &seg, &n)
}

/// Reports progress.
pub fn run_progress(ctx: &Ctx, a: &ProgressArgs) -> Result<(), Fail> {
    let seg = ctx.attach_rw()?;
    let c = claim_for(ctx, &seg, &a.task)?;
    let n = seg.progress_noted(&c, a.pct as u8, &a.note)?;
    print_node(ctx, &seg, &n)
}

/// Completes a held task.
pub fn run_done(ctx: &Ctx, a: &DoneArgs) -> Result<(), Fail> {
    let seg = ctx.attach_rw()?;
    let c = claim_for(ctx, &seg, &a.task)?;
    seg.complete(&c, &a.note)?;
    print_node(ctx, &seg, &seg.read(c.task)?)
}

/// Fails a held task.
pub fn run_fail(ctx: &Ctx, a: &FailArgs) -> Result<(), Fail> {
    let seg = ctx.attach_rw()?;
    let c = claim_for(ctx, &seg, &a.task)?;
    let n = seg.fail(&c, &a.reason)?;
    print_node(ctx, &seg, &n)
}

fn add_edges(seg: &Segment, task: Handle, blockers: &[String]) -> Result<(), Fail> {
    let bs: Vec<Handle> = blockers.iter().map(|b| resolve::node(seg, b)).collect::<Result<_, _>>()?;
    for b in bs {
        seg.add_blocker(task, b)?;
    }
    Ok(())
}

/// `block NODE --by OTHER`.
pub fn run_block(ctx: &Ctx, a: &BlockArgs) -> Result<(), Fail> {
    let seg = ctx.attach_rw()?;
    let task = resolve::node(&seg, &a.node)?;
    add_edges(&seg, task, std::slice::from_ref(&a.by))?;
    print_node(ctx, &seg, &seg.read(task)?)
}

/// `dep add|rm|ls`.
pub fn run_dep(ctx: &Ctx, c: &DepCmd) -> Result<(), Fail> {
    match c {
        DepCmd::Add(a) => {
            let seg = ctx.attach_rw()?;
            let task = resolve::node(&seg, &a.node)?;
            add_edges(&seg, task, &a.blocked_by)?;
            print_node(ctx, &seg, &seg.read(task)?)
        }
        DepCmd::Rm(a) => {
            let seg = ctx.attach_rw()?;
            let task = resolve::node(&seg, &a.node)?;
            let bs: Vec<Handle> = a.blocked_by.iter().map(|b| resolve::node(&seg, b)).collect::<Result<_, _>>()?;
            for b in bs {
                seg.remove_blocker(task, b)?;
            }
            print_node(ctx, &seg, &seg.read(task)?)
        }
        DepCmd::Ls(a) => run_dep_ls(ctx, a),
    }
}

fn run_dep_ls(ctx: &Ctx, a: &DepLsArgs) -> Result<(), Fail> {
    let seg = ctx.attach_ro()?;
    let h = resolve::node(&seg, &a.node)?;
    let n = seg.read(h)?;
    let blockers: Vec<Handle> = n.blocked_by().collect();
    let mut dependents: Vec<Handle> = Vec::new();
    seg.for_each_node(|d| {
        if d.blocked_by().any(|b| b == h) {
            dependents.push(d.handle());
        }
        true
    })?;
    let describe = |b: &Handle| match seg.read(*b) {
        Ok(bn) => {
            json!({ "uuid": bn.uuid().to_string(), "name": bn.name(), "path": path_of(&seg, *b), "status": bn.status().map(Status::as_str) })
        }
        Err(_) => json!({ "uuid": Value::Null, "name": Value::Null, "path": Value::Null, "status": "deleted" }),
    };
    let waits_for: Vec<Value> = blockers.iter().map(describe).collect();
    let blocks: Vec<Value> = dependents.iter().map(describe).collect();
    if ctx.json {
        return print_json(&json!({ "node": n.uuid().to_string(), "blocked_by": waits_for, "blocks": blocks }));
    }
    let s = &ctx.style;
    let mut t = s.table(&["EDGE", "STATUS", "PATH", "UUID"]);
    for (edge, list) in [("waits for", &waits_for), ("blocks", &blocks)] {
        for v in list.iter() {
            let status = v["status"].as_str().and_then(|x| x.parse::<Status>().ok());
            t.add_row(vec![
                comfy_table::Cell::new(edge),
                s.status_cell(status),
                comfy_table::Cell::new(clean(v["path"].as_str().unwrap_or("(deleted)"))),
                comfy_table::Cell::new(v["uuid"].as_str().unwrap_or("")),
            ]);
        }
    }
    if waits_for.is_empty() && blocks.is_empty() {
        return print(&s.dim("(no dependencies)"));
    }
    print(&s.render(t))
}
