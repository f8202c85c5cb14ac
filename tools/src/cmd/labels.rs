//! `wn label NODE add|rm LABEL...`: named labels on a node, one library call per label
//! ([`worknode::Segment::add_label`], `remove_label`), so they work the same directly and
//! through the broker and are checked against a token like every change. `wn show` and
//! every node's JSON list a node's labels by name; `wn ls --label` selects by one.

use crate::cmd::nodes::print_node;
use crate::ctx::Ctx;
use crate::fail::Fail;
use crate::resolve;

/// What `wn label` does.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelAction {
    /// Add the labels (a label the node has already is kept as it is).
    Add,
    /// Remove the labels (a label the node lacks is ignored).
    Rm,
}

/// Options of `wn label`.
#[derive(clap::Args, Debug)]
pub struct LabelArgs {
    /// The node (UUID, unique prefix, or /path).
    node: String,
    /// add or rm.
    #[arg(value_enum)]
    action: LabelAction,
    /// The labels: 1-64 bytes each, without '/', white space or control characters, not
    /// starting with '@'.
    #[arg(value_name = "LABEL", required = true)]
    labels: Vec<String>,
}

/// Checks a label argument, naming it in the error.
pub fn label_key(label: &str) -> Result<u64, Fail> {
    worknode::label_key(label).map_err(|e| {
        let f = Fail::from(e);
        Fail { message: format!("label {:?}: {}", crate::output::clean(label), f.message), ..f }
    })
}

/// Adds or removes labels; prints the node (with its labels).
pub fn run(ctx: &Ctx, a: &LabelArgs) -> Result<(), Fail> {
    // Every label is checked before anything changes.
    for l in &a.labels {
        label_key(l)?;
    }
    let seg = ctx.attach_rw()?;
    let h = resolve::node(&seg, &a.node)?;
    for l in &a.labels {
        match a.action {
            LabelAction::Add => seg.add_label(h, l)?,
            LabelAction::Rm => seg.remove_label(h, l)?,
        };
    }
    print_node_with_labels(ctx, &seg, h)
}

fn print_node_with_labels(ctx: &Ctx, seg: &worknode::Segment, h: worknode::Handle) -> Result<(), Fail> {
    let n = seg.read(h)?;
    if ctx.json {
        return print_node(ctx, seg, &n);
    }
    let mut labels = Vec::new();
    seg.labels(h, &mut labels)?;
    let list = if labels.is_empty() { "(none)".to_string() } else { labels.join(", ") };
    crate::output::print(&format!("{} labels: {}", n.uuid(), crate::output::clean(&list)))
}
