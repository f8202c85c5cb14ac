//! The lifecycle verbs (issue 12): `wn rm`, `wn cancel`, `wn reopen`, `wn activate`,
//! `wn edit` — each one library call ([`worknode::Segment::remove`], `cancel`, `reopen`,
//! `activate`, `edit`), so they work the same directly and through the broker, and are
//! checked against a token like every change.

use crate::cmd::nodes::print_node;
use crate::ctx::Ctx;
use crate::duration;
use crate::fail::{exit, Fail};
use crate::output::{clean, now_ms, print, print_json, Names};
use crate::resolve::{self, path_of};
use serde_json::json;
use worknode::{Edit, TaskError};

/// Options of `wn rm`.
#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// The node (UUID, unique prefix, or /path).
    node: String,
    /// Remove its whole subtree (otherwise a node with children is refused).
    #[arg(long, short)]
    recursive: bool,
    /// Remove even a task a live claim holds (its claimant's next write finds it gone).
    #[arg(long)]
    force: bool,
}

/// Options of `wn cancel`.
#[derive(clap::Args, Debug)]
pub struct CancelArgs {
    /// The task.
    node: String,
    /// Why (kept in the `task_cancelled` event).
    #[arg(long, value_name = "TEXT", default_value = "")]
    reason: String,
    /// Cancel even a task a live claim holds (its claimant's later writes are refused as stale).
    #[arg(long)]
    force: bool,
}

/// The one node argument of `wn reopen` and `wn activate`.
#[derive(clap::Args, Debug)]
pub struct TaskArg {
    /// The task (UUID, unique prefix, or /path).
    node: String,
}

/// Options of `wn edit`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("field").required(true).multiple(true).args(["name", "desc", "priority", "value"])))]
pub struct EditArgs {
    /// The node.
    node: String,
    /// A new name (unique among its siblings is not yet enforced).
    #[arg(long)]
    name: Option<String>,
    /// A new description.
    #[arg(long, value_name = "TEXT")]
    desc: Option<String>,
    /// A new priority, 0-255.
    #[arg(long, value_parser = duration::number(0, 255, "a priority"))]
    priority: Option<u64>,
    /// A new numeric value.
    #[arg(long, allow_negative_numbers = true)]
    value: Option<f64>,
}

/// A claim refused the change: say whose, and how to go on.
fn held(seg: &worknode::Segment, spec: &str, verb: &str, e: TaskError) -> Fail {
    match e {
        TaskError::AlreadyClaimed { by, until_ms } => Fail::new(
            "already_claimed",
            exit::CONFLICT,
            format!(
                "{spec:?} is claimed by {} (lease ends {})",
                Names::load(seg).agent(by),
                duration::relative(now_ms(), until_ms)
            ),
            format!("wait for it (`wn wait --kind task_completed --node {spec}`), or `wn {verb} --force`"),
        ),
        e => e.into(),
    }
}

/// Removes the node `spec` names (its subtree with `recursive`; even a claimed task with
/// `force`): `{removed, uuid, path}` as `rm --json` prints it.
pub fn remove(seg: &worknode::Segment, spec: &str, recursive: bool, force: bool) -> Result<serde_json::Value, Fail> {
    let h = resolve::node(seg, spec)?;
    let (uuid, path) = (seg.read(h)?.uuid(), path_of(seg, h));
    let removed = seg.remove(h, recursive, force).map_err(|e| match e {
        TaskError::Pool(worknode::PoolError::HasChildren { count }) => Fail::new(
            "has_children",
            exit::CONFLICT,
            format!("{spec:?} has {count} children"),
            format!("remove them too with `wn rm --recursive {spec}` (HTTP: `?recursive=true`)"),
        ),
        e => held(seg, spec, "rm", e),
    })?;
    Ok(json!({ "removed": removed, "uuid": uuid.to_string(), "path": path }))
}

/// `wn rm NODE [--recursive] [--force]`.
pub fn run_rm(ctx: &Ctx, a: &RmArgs) -> Result<(), Fail> {
    let seg = ctx.attach_rw()?;
    let v = remove(&seg, &a.node, a.recursive, a.force)?;
    if ctx.json {
        return print_json(&v);
    }
    let (uuid, path) = (v["uuid"].as_str().unwrap_or(""), v["path"].as_str().unwrap_or(""));
    let removed = v["removed"].as_u64().unwrap_or(0);
    print(&format!("{uuid} removed {} ({removed} node{})", clean(path), if removed == 1 { "" } else { "s" }))
}

/// `wn cancel TASK [--reason TEXT] [--force]`.
pub fn run_cancel(ctx: &Ctx, a: &CancelArgs) -> Result<(), Fail> {
    let seg = ctx.attach_rw()?;
    let h = resolve::node(&seg, &a.node)?;
    let n = seg.cancel(h, &a.reason, a.force).map_err(|e| held(&seg, &a.node, "cancel", e))?;
    print_node(ctx, &seg, &n)
}

/// `wn reopen TASK`.
pub fn run_reopen(ctx: &Ctx, a: &TaskArg) -> Result<(), Fail> {
    let seg = ctx.attach_rw()?;
    let h = resolve::node(&seg, &a.node)?;
    let n = seg.reopen(h)?;
    print_node(ctx, &seg, &n)
}

/// `wn activate TASK`: pending → ready (or blocked).
pub fn run_activate(ctx: &Ctx, a: &TaskArg) -> Result<(), Fail> {
    let seg = ctx.attach_rw()?;
    let h = resolve::node(&seg, &a.node)?;
    let n = seg.activate(h)?;
    print_node(ctx, &seg, &n)
}

/// `wn edit NODE [--name] [--desc] [--priority] [--value]`.
pub fn run_edit(ctx: &Ctx, a: &EditArgs) -> Result<(), Fail> {
    let seg = ctx.attach_rw()?;
    let h = resolve::node(&seg, &a.node)?;
    let edit = Edit {
        name: a.name.clone(),
        description: a.desc.clone(),
        priority: a.priority.map(|p| p as u8),
        value: a.value,
    };
    let n = seg.edit(h, &edit)?;
    print_node(ctx, &seg, &n)
}
