//! Nodes: `wn tree`, `wn ls`, `wn show`, `wn rollup` (inspection) and `wn add`.

use crate::ctx::Ctx;
use crate::duration::relative;
use crate::fail::{exit, Fail};
use crate::output::{
    claim_text, clean, kind_text, node_json, node_line, now_ms, print, print_json, Names, ShortIds, Style,
};
use crate::resolve::{self, path_of};
use clap::builder::TypedValueParser as _;
use comfy_table::Cell;
use serde_json::{json, Value};
use worknode::{layout::BLOCKERS_MAX, Handle, NewNode, Node, NodeKind, Query, Segment, Status};

/// A parser for node kinds that lists the kinds in `--help` and `wn commands`.
pub fn kind_parser() -> impl clap::builder::TypedValueParser<Value = NodeKind> {
    clap::builder::PossibleValuesParser::new(NodeKind::ALL.iter().map(|k| k.as_str()))
        .map(|s| s.parse::<NodeKind>().expect("invariant: only listed kinds pass the parser"))
}

/// A parser for statuses that lists them in `--help` and `wn commands`.
pub fn status_parser() -> impl clap::builder::TypedValueParser<Value = Status> {
    clap::builder::PossibleValuesParser::new(Status::ALL.iter().map(|s| s.as_str()))
        .map(|s| s.parse::<Status>().expect("invariant: only listed statuses pass the parser"))
}

/// Options of `wn tree`.
#[derive(clap::Args, Debug)]
pub struct TreeArgs {
    /// Where to start (UUID, unique prefix, or /path); the root by default.
    node: Option<String>,
    /// Show at most this many levels below the start (0 to 16777216).
    #[arg(long, value_name = "N", value_parser = crate::duration::number(0, worknode::layout::MAX_NODES as u64, "levels"))]
    depth: Option<u64>,
}

/// Options of `wn ls`.
#[derive(clap::Args, Debug)]
pub struct LsArgs {
    /// Only nodes of this kind.
    #[arg(long, value_parser = kind_parser())]
    kind: Option<NodeKind>,
    /// Only nodes in this status.
    #[arg(long, value_parser = status_parser())]
    status: Option<Status>,
    /// Only nodes assigned to this agent (by name) or role (`@role`).
    #[arg(long, value_name = "AGENT|@ROLE")]
    assignee: Option<String>,
    /// Only this node's subtree (UUID, unique prefix, or /path).
    #[arg(long, value_name = "NODE")]
    under: Option<String>,
    /// Only names starting with this.
    #[arg(long, value_name = "PREFIX")]
    name: Option<String>,
    /// Only nodes carrying this label (`wn label`).
    #[arg(long, value_name = "LABEL")]
    label: Option<String>,
    /// At most this many nodes (1 to 16777216).
    #[arg(long, value_name = "N", default_value = "100", value_parser = crate::duration::number(1, worknode::layout::MAX_NODES as u64, "nodes to list"))]
    limit: u64,
}

/// Options of `wn show`.
#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// The node (UUID, unique prefix, or /path).
    pub(crate) node: String,
}

/// Options of `wn rollup`.
#[derive(clap::Args, Debug)]
pub struct RollupArgs {
    /// The subtree's root (UUID, unique prefix, or /path).
    node: String,
    /// Count nodes of this kind.
    #[arg(long, value_parser = kind_parser(), default_value = "task")]
    kind: NodeKind,
}

/// Options of `wn add`.
#[derive(clap::Args, Debug)]
pub struct AddArgs {
    /// What the node is.
    #[arg(value_parser = kind_parser())]
    pub kind: NodeKind,
    /// Its name (at most 64 bytes; may contain spaces, not '/').
    pub name: String,
    /// Where to put it (UUID, unique prefix, or /path); the root by default.
    #[arg(long, value_name = "NODE")]
    pub parent: Option<String>,
    /// Inline description (at most 256 bytes; longer text belongs in a document).
    #[arg(long, value_name = "TEXT")]
    pub desc: Option<String>,
    /// Priority 0-255: `claim --next` takes the highest first.
    #[arg(long, value_name = "N", default_value = "0", value_parser = crate::duration::number(0, 255, "a priority"))]
    pub priority: u64,
    /// Numeric value (pipeline rollups): finite, within ±1e300.
    #[arg(long, value_name = "N", default_value = "0", value_parser = crate::duration::value, allow_negative_numbers = true)]
    pub value: f64,
    /// A node this one waits for (repeatable): while one is open, this node is blocked.
    #[arg(long = "blocked-by", value_name = "NODE")]
    pub blocked_by: Vec<String>,
    /// Assign it to this agent or `@role` (repeatable): only they may claim it. Assigned
    /// before it becomes ready, so nobody else can claim it in between.
    #[arg(long, value_name = "AGENT|@ROLE")]
    pub assignee: Vec<String>,
    /// Initial status: ready (claimable) or pending (not yet).
    #[arg(long, value_parser = ["ready", "pending"], default_value = "ready")]
    pub status: String,
    /// If the parent has a child of this name and kind already, print it (exit 0)
    /// instead of refusing: a plan script can be run again.
    #[arg(long)]
    pub if_absent: bool,
}

/// Creates a node; prints it (UUID first).
pub fn run_add(ctx: &Ctx, a: &AddArgs) -> Result<(), Fail> {
    let seg = ctx.attach_rw()?;
    let n = add(&seg, a)?;
    print_node(ctx, &seg, &n)
}

/// Creates the node `a` describes (`wn add`, MCP `add_task`) and returns it.
pub fn add(seg: &Segment, a: &AddArgs) -> Result<Node, Fail> {
    if a.blocked_by.len() > BLOCKERS_MAX {
        return Err(Fail::new(
            "too_many_blockers",
            exit::FULL,
            format!("{} blockers given; a node can have at most {BLOCKERS_MAX}", a.blocked_by.len()),
            "group the blockers under one parent task, or chain them",
        ));
    }
    // Resolve every argument before creating anything: a bad name leaves nothing behind.
    let parent = resolve::node_or_root(seg, a.parent.as_deref())?;
    let blockers: Vec<Handle> = a.blocked_by.iter().map(|b| resolve::node(seg, b)).collect::<Result<_, _>>()?;
    let assignees: Vec<worknode::Principal> =
        a.assignee.iter().map(|w| crate::ctx::principal(w)).collect::<Result<_, _>>()?;
    if assignees.len() > worknode::layout::ASSIGNEES_MAX {
        return Err(Fail::new(
            "too_many_assignees",
            exit::FULL,
            format!("{} assignees given; a node can have at most {}", assignees.len(), worknode::layout::ASSIGNEES_MAX),
            "assign a role (`@role`) instead of many agents",
        ));
    }
    let want: Status = if a.status == "pending" { Status::Pending } else { Status::Ready };
    // With blockers or assignees, start pending so no agent can claim it before its
    // edges and assignees exist.
    let initial = if blockers.is_empty() && assignees.is_empty() { want } else { Status::Pending };
    let spec = NewNode::new(a.kind, &a.name)
        .description(a.desc.as_deref().unwrap_or(""))
        .priority(a.priority as u8)
        .value(a.value)
        .status(initial);
    // If the node exists but only its event (and so, under --fsync always, the
    // confirmation that it is on disk) is missing, the error names it (by UUID, on
    // stderr: see `Fail::name_changed_node`) so a script does not retry into a
    // duplicate. Stdout carries the node only on success.
    let h = match seg.add(parent, &spec) {
        Ok(h) => h,
        Err(worknode::PoolError::NameTaken { existing }) => {
            let n = seg.read(existing)?;
            if a.if_absent && n.kind() == Some(a.kind) {
                return Ok(n);
            }
            let kind = n.kind().map_or("?", NodeKind::as_str);
            return Err(Fail::new(
                "name_taken",
                exit::CONFLICT,
                format!("{} already exists ({kind} {})", clean(&path_of(seg, existing)), n.uuid()),
                if a.if_absent {
                    format!("it is a {kind}, not a {}: choose another name", a.kind)
                } else {
                    "names under one parent are unique: choose another, or pass --if-absent to reuse it".into()
                },
            ));
        }
        Err(e) => return Err(e.into()),
    };
    // From here the node exists: a later failure says so.
    let created = |f: Fail| -> Fail {
        if f.changed.is_some() {
            return f;
        }
        Fail { message: format!("node {h} was created, but then: {}", f.message), changed: Some(h), ..f }
    };
    for b in &blockers {
        seg.add_blocker(h, *b).map_err(|e| created(e.into()))?;
    }
    for who in &assignees {
        seg.assign(h, who).map_err(|e| created(e.into()))?;
    }
    let n = seg.read(h).map_err(|e| created(e.into()))?;
    if initial != want && want == Status::Ready && n.status() == Some(Status::Pending) {
        // Every blocker was already complete (or there were only assignees).
        seg.set_status(h, Status::Ready).map_err(|e| created(e.into()))?;
    }
    Ok(seg.read(h)?)
}

/// Prints one node as a line (human) or as its JSON object.
pub fn print_node(ctx: &Ctx, seg: &Segment, n: &Node) -> Result<(), Fail> {
    if ctx.json {
        let names = Names::for_node(seg, n);
        print_json(&node_json(seg, n, &names, Some(&path_of(seg, n.handle()))))
    } else {
        print(&node_line(&ctx.style, n))
    }
}

/// Prints the tree under a node.
pub fn run_tree(ctx: &Ctx, a: &TreeArgs) -> Result<(), Fail> {
    let seg = ctx.attach_ro()?;
    let top = resolve::node_or_root(&seg, a.node.as_deref())?;
    let names = Names::load(&seg);
    if ctx.json {
        let mut v = tree_json(&seg, top, a.depth.map(|d| d as usize), &names, 0)?;
        v["path"] = json!(path_of(&seg, top));
        return print_json(&v);
    }
    let (lines, _) = tree_lines(&seg, top, a.depth, &ctx.style, seg.capacities().nodes as usize + 1)?;
    print(&lines.join("\n"))
}

/// The tree under `top` as `wn tree` draws it, at most `max_lines` lines (and whether
/// more were left out): `wn tree`, the MCP tree resource, and wn-bench's `tree-100k` row.
pub fn tree_lines(
    seg: &Segment,
    top: Handle,
    depth_limit: Option<u64>,
    s: &Style,
    max_lines: usize,
) -> Result<(Vec<String>, bool), Fail> {
    let names = Names::load(seg);
    let short = ShortIds::scan(seg);
    let now = now_ms();
    let mut lines: Vec<String> = Vec::new();
    let mut stack: Vec<(Handle, String, String, usize)> = vec![(top, String::new(), String::new(), 0)];
    let mut kids = Vec::new();
    while let Some((h, lead, child_lead, depth)) = stack.pop() {
        if lines.len() >= max_lines {
            return Ok((lines, true));
        }
        let Ok(n) = seg.read(h) else { continue };
        let name = if n.parent().is_none() { "/".to_string() } else { clean(n.name()).into_owned() };
        let mut line = format!("{lead}{}  {} {}", s.bold(&name), kind_text(&n), s.status_text(n.status()));
        if n.kind() == Some(NodeKind::Task) && n.progress() > 0 && n.status() != Some(Status::Complete) {
            line.push_str(&format!(" {}%", n.progress()));
        }
        let claim = claim_text(&n, &names, now);
        if !claim.is_empty() && n.claimed_by().is_some() {
            line.push_str(&format!("  [{claim}]"));
        }
        line.push_str(&format!("  {}", s.dim(&short.of(n.uuid()))));
        seg.children(h, &mut kids)?;
        if depth_limit.is_some_and(|d| depth as u64 >= d) {
            if !kids.is_empty() {
                line.push_str(&s.dim(&format!("  (+{} below)", kids.len())));
            }
            lines.push(line);
            continue;
        }
        lines.push(line);
        let count = kids.len();
        for (i, k) in kids.iter().enumerate().rev() {
            let last = i + 1 == count;
            let branch = if last { "└─ " } else { "├─ " };
            let cont = if last { "   " } else { "│  " };
            stack.push((*k, format!("{child_lead}{branch}"), format!("{child_lead}{cont}"), depth + 1));
        }
    }
    Ok((lines, false))
}

fn tree_json(seg: &Segment, h: Handle, max: Option<usize>, names: &Names, depth: usize) -> Result<Value, Fail> {
    let n = seg.read(h)?;
    let mut v = node_json(seg, &n, names, None);
    if max.is_some_and(|m| depth >= m) {
        return Ok(v);
    }
    let mut kids = Vec::new();
    seg.children(h, &mut kids)?;
    let mut out = Vec::with_capacity(kids.len());
    for k in kids {
        match tree_json(seg, k, max, names, depth + 1) {
            Ok(c) => out.push(c),
            // Deleted while we walked: skip it.
            Err(f) if f.exit == exit::NOT_FOUND => {}
            Err(f) => return Err(f),
        }
    }
    v["children"] = Value::Array(out);
    Ok(v)
}

/// Lists nodes matching the filters.
pub fn run_ls(ctx: &Ctx, a: &LsArgs) -> Result<(), Fail> {
    let label = a.label.as_deref().map(crate::cmd::labels::label_key).transpose()?;
    let seg = ctx.attach_ro()?;
    let under = match a.under.as_deref() {
        Some(u) => Some(resolve::node(&seg, u)?),
        None => None,
    };
    let assignee = a.assignee.as_deref().map(crate::ctx::principal).transpose()?.map(|p| p.key());
    let q = Query {
        kind: a.kind,
        status: a.status,
        assignee,
        under,
        name_prefix: a.name.as_deref(),
        label,
        limit: a.limit as usize,
        ..Query::default()
    };
    if ctx.json {
        return print_json(&query_json(&seg, &q)?.0);
    }
    let mut found = Vec::new();
    let stats = seg.query(&q, &mut found)?;
    let names = Names::load(&seg);
    print(&node_table(ctx, &seg, &found, &names))?;
    if stats.limited {
        eprintln!("wn: showing the first {}; more match (raise --limit)", a.limit);
    }
    Ok(())
}

/// A query's answer as `ls --json` prints it (`nodes`, `count`, `truncated`), and how it
/// ended (`wn ls`, `wn serve`'s `/api/tasks` and `/api/query`).
pub fn query_json(seg: &Segment, q: &Query) -> Result<(Value, worknode::QueryStats), Fail> {
    let mut found = Vec::new();
    let stats = seg.query(q, &mut found)?;
    let names = Names::load(seg);
    let nodes: Vec<Value> = found.iter().map(|n| node_json(seg, n, &names, Some(&path_of(seg, n.handle())))).collect();
    let truncated = stats.limited || stats.budget_exhausted;
    Ok((json!({ "nodes": nodes, "count": found.len(), "truncated": truncated }), stats))
}

/// The human table of a list of nodes (`ls`, `ready`).
pub fn node_table(ctx: &Ctx, seg: &Segment, nodes: &[Node], names: &Names) -> String {
    let s = &ctx.style;
    if nodes.is_empty() {
        return s.dim("(none)");
    }
    let short = ShortIds::scan(seg);
    let now = now_ms();
    let mut t = s.table(&["ID", "KIND", "STATUS", "PRI", "PROG", "NAME", "CLAIM", "UPDATED"]);
    for n in nodes {
        t.add_row(vec![
            Cell::new(short.of(n.uuid())),
            Cell::new(kind_text(n)),
            s.status_cell(n.status()),
            s.num(n.priority()),
            s.num(format!("{}%", n.progress())),
            Cell::new(clean(n.name())),
            Cell::new(if n.claimed_by().is_some() { claim_text(n, names, now) } else { String::new() }),
            Cell::new(relative(now, n.updated().wall_ms())),
        ]);
    }
    s.render(t)
}

/// Shows one node.
pub fn run_show(ctx: &Ctx, a: &ShowArgs) -> Result<(), Fail> {
    let seg = ctx.attach_ro()?;
    let h = resolve::node(&seg, &a.node)?;
    let n = seg.read(h)?;
    let names = Names::load(&seg);
    let path = path_of(&seg, h);
    if ctx.json {
        return print_json(&node_json(&seg, &n, &names, Some(&path)));
    }
    let s = &ctx.style;
    let now = now_ms();
    let mut t = s.kv_table();
    let mut row = |k: &str, v: String| {
        t.add_row(vec![Cell::new(k), Cell::new(v)]);
    };
    row("uuid", n.uuid().to_string());
    row("path", clean(&path).into_owned());
    row("kind", kind_text(&n));
    row("status", s.status_text(n.status()));
    row("priority", n.priority().to_string());
    row("progress", format!("{}%", n.progress()));
    row("value", n.value().to_string());
    if n.kind() == Some(NodeKind::Document) {
        row("content type", clean(n.description()).into_owned());
        row("size", format!("{} bytes (crc32c {:08x})", n.record().doc_len, n.record().doc_crc));
    } else if !n.description().is_empty() {
        row("description", clean(n.description()).into_owned());
    }
    row("version", n.version().to_string());
    row("created", relative(now, n.created().wall_ms()));
    row("updated", relative(now, n.updated().wall_ms()));
    row("children", seg.child_count(h).unwrap_or(0).to_string());
    let claim = claim_text(&n, &names, now);
    row("claim", if claim.is_empty() { "-".into() } else { claim });
    row("epoch", n.claim_epoch().to_string());
    let assignees: Vec<String> = n.assignees().map(|a| clean(&names.principal(a)).into_owned()).collect();
    row("assignees", if assignees.is_empty() { "-".into() } else { assignees.join(", ") });
    let blockers: Vec<String> = n
        .blocked_by()
        .map(|b| match seg.read(b) {
            Ok(bn) => {
                format!("{} ({}) {}", clean(&path_of(&seg, b)), bn.status().map_or("?", Status::as_str), bn.uuid())
            }
            Err(_) => "(deleted)".to_string(),
        })
        .collect();
    row("blocked by", if blockers.is_empty() { "-".into() } else { blockers.join("\n") });
    let mut labels = Vec::new();
    seg.labels(h, &mut labels)?;
    row("labels", if labels.is_empty() { "-".into() } else { clean(&labels.join(", ")).into_owned() });
    if let Some(host) = n.origin_host() {
        // Only a replicated node has one: a board that never had a bridge shows nothing new.
        row("origin", format!("host {host} (last change made there, replicated by worknode-bridge)"));
    }
    if matches!(n.kind(), Some(NodeKind::Task | NodeKind::Custom)) {
        row("attempts", n.attempts().to_string());
        if let Some(at) = n.finished_at() {
            let by = n.finished_by().map(|u| {
                let name = seg.lookup(u).and_then(|a| seg.read(a)).map(|a| clean(a.name()).into_owned());
                format!(" by {}", name.unwrap_or_else(|_| u.to_string()))
            });
            row("finished", format!("{}{}", relative(now, at.wall_ms()), by.unwrap_or_default()));
        }
        if let Some((from, text)) = n.last_note() {
            row("note", format!("{} ({from})", clean(text)));
        }
    }
    row("handle", h.to_string());
    print(&s.render(t))
}

/// A subtree's totals as `rollup --json` prints them (`wn rollup`, `wn serve`'s analytics).
pub fn rollup_json(seg: &Segment, h: Handle, kind: NodeKind) -> Result<Value, Fail> {
    let r = seg.rollup(h, Some(kind))?;
    let n = seg.read(h)?;
    let by_status: serde_json::Map<String, Value> =
        Status::ALL.iter().map(|s| (s.as_str().to_string(), json!(r.count(*s)))).collect();
    let value_by: serde_json::Map<String, Value> =
        Status::ALL.iter().map(|s| (s.as_str().to_string(), json!(r.value_by_status[s.code() as usize]))).collect();
    Ok(json!({
        "node": n.uuid().to_string(),
        "name": n.name(),
        "path": path_of(seg, h),
        "kind": kind.as_str(),
        "total": r.total,
        "by_status": by_status,
        "value_by_status": value_by,
        "value_total": r.value_total,
        "percent_complete": r.percent_complete,
        "mean_progress": r.mean_progress,
    }))
}

/// Totals over a subtree.
pub fn run_rollup(ctx: &Ctx, a: &RollupArgs) -> Result<(), Fail> {
    let seg = ctx.attach_ro()?;
    let h = resolve::node(&seg, &a.node)?;
    if ctx.json {
        return print_json(&rollup_json(&seg, h, a.kind)?);
    }
    let r = seg.rollup(h, Some(a.kind))?;
    let path = path_of(&seg, h);
    let s = &ctx.style;
    let mut t = s.table(&["STATUS", "COUNT", "VALUE"]);
    for st in Status::ALL {
        let c = r.count(*st);
        if c > 0 {
            t.add_row(vec![s.status_cell(Some(*st)), s.num(c), s.num(r.value_by_status[st.code() as usize])]);
        }
    }
    let summary = format!(
        "{}: {} {}s, {:.0}% complete, mean progress {:.0}%, pipeline value {}",
        clean(&path),
        r.total,
        a.kind.as_str(),
        r.percent_complete,
        r.mean_progress,
        r.value_total
    );
    if r.total == 0 {
        return print(&summary);
    }
    print(&format!("{summary}\n\n{}", s.render(t)))
}
