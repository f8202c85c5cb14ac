//! Backup and durability verbs: `wn snapshot` (ask the daemon to compact its journal
//! into a snapshot now), `wn export` (the whole state as one JSON document, for backup
//! and diffing) and `wn import` (rebuild that state in a segment).
//!
//! Export is a logical dump: nodes in tree order (parents first) with parent, blockers
//! and assignees named by UUID and agent name, document contents, set states, agents.
//! Import replays it through the normal API into the segment's root: nodes get new
//! UUIDs (the export's UUID is kept in a mapping and printed), dependencies are re-added,
//! and statuses are re-established through the state machine — complete and failed tasks
//! are claimed and finished by an `import` agent in dependency order, cancelled ones are
//! cancelled. Live claims are not carried over: their agents' processes are not here;
//! nor are file reservations (`/reservations`), held by those processes too.

use crate::ctx::Ctx;
use crate::duration;
use crate::fail::{exit, Fail};
use crate::input::{read_bounded, Source};
use crate::output::{clean, print, print_json, Names};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use worknode::{Durability, Handle, NewNode, NodeKind, OrSetState, Segment, Status};

/// Options of `wn snapshot`.
#[derive(clap::Args, Debug)]
pub struct SnapshotArgs {
    /// How long to wait for the daemon to write it (0 to 1d).
    #[arg(long, default_value = "30s", value_parser = duration::timeout, value_name = "DURATION")]
    timeout: Duration,
}

/// Options of `wn import`.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The export to read (`-` for stdin).
    file: PathBuf,
}

/// Format name and version of exports.
const FORMAT: &str = "worknode-export";
const VERSION: u64 = 1;

/// `wn snapshot`.
pub fn run_snapshot(ctx: &Ctx, a: &SnapshotArgs) -> Result<(), Fail> {
    let seg = ctx.attach_rw()?;
    if seg.durability() == Durability::Off {
        return Err(Fail::new(
            "no_journal",
            exit::OTHER,
            "the daemon runs without a journal (--fsync off): there is nothing to snapshot",
            "restart the daemon with --fsync always|batch|never and a --data-dir",
        ));
    }
    let want = seg.request_snapshot()?;
    let deadline = duration::deadline(a.timeout);
    while seg.snapshots_done() < want {
        if Instant::now() >= deadline {
            return Err(Fail::new(
                "timeout",
                exit::TIMEOUT,
                format!("the daemon did not write the snapshot within {:?}", a.timeout),
                "check that worknoded runs (`wn dump`) and read its log",
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if ctx.json {
        print_json(&json!({ "snapshot": want, "journal_cursor": seg.journal_cursor() }))
    } else {
        print(&format!("snapshot {want} written (journal at sequence {})", seg.journal_cursor()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    s.len().is_multiple_of(2).then_some(())?;
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// `wn export`: always JSON (one document on stdout).
pub fn run_export(ctx: &Ctx) -> Result<(), Fail> {
    let seg = ctx.attach_best()?;
    let names = Names::load(&seg);
    let mut nodes = Vec::new();
    let root = seg.root();
    // File reservations are held by running agents, like live claims: not carried over.
    let mut reservations = None;
    seg.walk(root, |n| {
        if n.parent() == Some(root) && n.kind() == Some(NodeKind::Container) && n.name() == worknode::RESERVATIONS {
            reservations = Some(n.handle());
        }
        if reservations.is_some_and(|r| r == n.handle() || n.parent() == Some(r))
            || n.kind() == Some(NodeKind::Reservation)
        {
            return true;
        }
        let mut v = json!({
            "uuid": n.uuid().to_string(),
            "parent": n.parent().and_then(|p| seg.read(p).ok()).map(|p| p.uuid().to_string()),
            "kind": n.kind().map(NodeKind::as_str),
            "custom_kind": n.custom_kind(),
            "name": n.name(),
            "description": n.description(),
            "status": n.status().map(Status::as_str),
            "priority": n.priority(),
            "progress": n.progress(),
            "value": n.value(),
            "version": n.version(),
            "created_hlc": n.created().0,
            "updated_hlc": n.updated().0,
            "blocked_by": n.blocked_by().filter_map(|b| seg.read(b).ok()).map(|b| b.uuid().to_string()).collect::<Vec<_>>(),
            "assignees": n.assignees().map(|a| names.principal(a)).collect::<Vec<_>>(),
            "open_to_all": n.open_to_all(),
            "claim": n.claimed_by().map(|slot| json!({ "agent": names.agent(slot), "epoch": n.claim_epoch(), "lease_until_ms": n.lease_until_ms() })),
        });
        if n.kind() == Some(NodeKind::Document) {
            let mut content = Vec::new();
            if seg.get_document(n.handle(), &mut content).is_ok() {
                v["document"] = match std::str::from_utf8(&content) {
                    Ok(text) => json!({ "content_type": n.description(), "text": text }),
                    Err(_) => json!({ "content_type": n.description(), "hex": hex(&content) }),
                };
            }
        }
        if n.record().set_slot != 0 {
            if let Ok(s) = seg.set_state(n.handle()) {
                v["set"] = json!({ "adds": s.adds().collect::<Vec<_>>(), "tombstones": s.tombstones().collect::<Vec<_>>() });
            }
        }
        nodes.push(v);
        true
    })?;
    let mut agents = Vec::new();
    let mut list = Vec::new();
    seg.agents(&mut list);
    for a in &list {
        agents.push(json!({ "name": a.name, "role": a.role, "uuid": a.uuid.to_string() }));
    }
    let info = seg.inspect().info();
    print_json(&json!({
        "format": FORMAT,
        "version": VERSION,
        "layout_version": info.layout_version,
        "segment": info.name,
        "hlc": info.hlc.0,
        "ring_tail": seg.ring_tail(),
        "agents": agents,
        "nodes": nodes,
    }))
}

/// The most bytes an export of `seg`'s capacities can take: every node with the longest
/// name and description JSON-escaped at worst (6 bytes a character) and its fields, every
/// document's content as hex (2 bytes a byte; escaped text is at most 6, bounded here by
/// the arena), every set entry, every agent, and a margin for the header.
fn export_bound(seg: &Segment) -> u64 {
    let caps = seg.capacities();
    let per_node = 6 * (worknode::layout::NAME_MAX + worknode::layout::DESCRIPTION_MAX) as u64 + 4096;
    let per_agent = 6 * 64 + 6 * 32 + 256;
    let per_set = 32 * 2 * 48;
    let docs = 6 * seg.max_document_len() as u64;
    caps.nodes as u64 * per_node + caps.agents as u64 * per_agent + caps.sets as u64 * per_set + docs + (1 << 20)
}

fn bad(what: impl Into<String>) -> Fail {
    Fail::new("bad_export", exit::USAGE, what, "give a file written by `wn export`")
}

/// A whole-number field of node `v` (0 when absent), refused above `max`.
fn small(v: &Value, k: &str, max: u64) -> Result<u64, Fail> {
    match field(v, k) {
        Value::Null => Ok(0),
        x => x
            .as_u64()
            .filter(|n| *n <= max)
            .ok_or_else(|| bad(format!("node {}: {k} {x} is not a whole number from 0 to {max}", field(v, "uuid")))),
    }
}

/// Checks what the library would refuse part-way through an import: names, values,
/// numbers, kinds and statuses.
fn check_node(v: &Value) -> Result<(), Fail> {
    let uuid = field(v, "uuid").as_str().ok_or_else(|| bad("a node without a uuid"))?;
    let name = field(v, "name").as_str().unwrap_or("");
    if worknode::check_name(name).is_err() {
        return Err(bad(format!("node {uuid}: its name {name:?} has a control character")));
    }
    if let Value::Number(n) = field(v, "value") {
        if n.as_f64().is_none_or(|x| worknode::check_value(x).is_err()) {
            return Err(bad(format!("node {uuid}: value {n} is not a finite number within ±1e300")));
        }
    }
    small(v, "priority", 255)?;
    small(v, "progress", 100)?;
    small(v, "custom_kind", u32::MAX as u64)?;
    field(v, "kind").as_str().unwrap_or("custom").parse::<NodeKind>().map_err(bad)?;
    field(v, "status").as_str().unwrap_or("pending").parse::<Status>().map_err(bad)?;
    Ok(())
}

fn field<'a>(v: &'a Value, k: &str) -> &'a Value {
    v.get(k).unwrap_or(&Value::Null)
}

/// An import never duplicates: it is refused, before anything is created, when a node
/// of the export is here already (by UUID: the same export, or a segment it came from)
/// or a top-level node of the export has a namesake under the root (an earlier import).
fn refuse_overlap(seg: &Segment, nodes: &[Value]) -> Result<(), Fail> {
    let root_uuid = nodes.iter().find(|v| field(v, "parent").is_null()).and_then(|v| field(v, "uuid").as_str());
    for v in nodes {
        let name = field(v, "name").as_str().unwrap_or("");
        let uuid = field(v, "uuid").as_str().and_then(|u| u.parse::<uuid::Uuid>().ok());
        let is_root = field(v, "parent").is_null();
        let top = !is_root && field(v, "parent").as_str() == root_uuid;
        let system = top && name == "agents";
        if !is_root && !system && uuid.is_some_and(|u| seg.lookup(u).is_ok()) {
            return Err(Fail::new(
                "import_conflict",
                exit::CONFLICT,
                format!("node {} ({name:?}) of the export is in this segment already", uuid.unwrap_or_default()),
                "import into a segment without it (a new one), or remove what overlaps first (`wn rm -r`)",
            ));
        }
        if top && !system && field(v, "kind") != "agent" {
            let mut kids = Vec::new();
            seg.children(seg.root(), &mut kids)?;
            if kids.iter().any(|k| seg.read(*k).is_ok_and(|n| n.name() == name)) {
                return Err(Fail::new(
                    "import_conflict",
                    exit::CONFLICT,
                    format!("/{} exists in this segment already", clean(name)),
                    format!("import into a segment without it, or remove it first (`wn rm -r /{}`)", clean(name)),
                ));
            }
        }
    }
    Ok(())
}

/// `wn import FILE`.
pub fn run_import(ctx: &Ctx, a: &ImportArgs) -> Result<(), Fail> {
    let seg = ctx.attach_rw()?;
    let src = if a.file.as_os_str() == "-" { Source::Stdin } else { Source::File(&a.file) };
    let text = read_bounded(
        src,
        export_bound(&seg),
        "export_too_large",
        exit::USAGE,
        "an export of a segment of this size can take",
        "give a file written by `wn export` of a segment with these capacities (or smaller)",
    )?;
    let doc: Value = serde_json::from_slice(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    if field(&doc, "format") != FORMAT || field(&doc, "version").as_u64() != Some(VERSION) {
        return Err(bad(format!("not a {FORMAT} version {VERSION} document")));
    }
    let nodes = field(&doc, "nodes").as_array().ok_or_else(|| bad("no nodes array"))?;
    // Every field checked before anything is created: a bad export leaves nothing behind.
    for v in nodes {
        check_node(v)?;
    }
    for ag in field(&doc, "agents").as_array().into_iter().flatten() {
        let name = field(ag, "name").as_str().ok_or_else(|| bad("an agent without a name"))?;
        let role = field(ag, "role").as_str().unwrap_or("");
        if worknode::check_name(name).is_err() || worknode::check_name(role).is_err() {
            return Err(bad(format!("agent {name:?} has a control character in its name or role")));
        }
    }
    refuse_overlap(&seg, nodes)?;
    for ag in field(&doc, "agents").as_array().into_iter().flatten() {
        let name = field(ag, "name").as_str().ok_or_else(|| bad("an agent without a name"))?;
        seg.join(name, field(ag, "role").as_str().unwrap_or(""))?;
    }
    let mut map: HashMap<String, Handle> = HashMap::new();
    let mut created = 0u64;
    for v in nodes {
        let uuid = field(v, "uuid").as_str().ok_or_else(|| bad("a node without a uuid"))?.to_string();
        let Some(parent) = field(v, "parent").as_str() else {
            map.insert(uuid, seg.root());
            continue;
        };
        let kind: NodeKind = field(v, "kind").as_str().unwrap_or("custom").parse().map_err(bad)?;
        let name = field(v, "name").as_str().unwrap_or("");
        let parent_h = *map.get(parent).ok_or_else(|| bad(format!("node {uuid} comes before its parent {parent}")))?;
        // The agents container and agent nodes exist already (joined above).
        if parent_h == seg.root() && kind == NodeKind::Container && name == "agents" {
            if let Some(h) = agents_container(&seg) {
                map.insert(uuid, h);
            }
            continue;
        }
        if kind == NodeKind::Agent {
            if let Some(id) = seg.find_agent(name) {
                map.insert(uuid, seg.agent(id)?.node);
            }
            continue;
        }
        let status: Status = field(v, "status").as_str().unwrap_or("pending").parse().map_err(bad)?;
        let initial = if status == Status::Pending { Status::Pending } else { Status::Ready };
        let h = if let (NodeKind::Document, Some(d)) = (kind, v.get("document")) {
            let bytes = match (field(d, "text").as_str(), field(d, "hex").as_str()) {
                (Some(t), _) => t.as_bytes().to_vec(),
                (None, Some(h)) => unhex(h).ok_or_else(|| bad(format!("document {uuid}: bad hex")))?,
                _ => Vec::new(),
            };
            seg.put_document(parent_h, name, field(d, "content_type").as_str().unwrap_or(""), &bytes)?
        } else {
            let spec = NewNode::new(kind, name)
                .description(field(v, "description").as_str().unwrap_or(""))
                .priority(small(v, "priority", 255)? as u8)
                .value(field(v, "value").as_f64().unwrap_or(0.0))
                .custom_kind(small(v, "custom_kind", u32::MAX as u64)? as u32)
                .status(initial);
            seg.add(parent_h, &spec)?
        };
        let progress = small(v, "progress", 100)? as u8;
        if progress > 0 && !matches!(status, Status::Complete) {
            seg.update(h, |n| n.set_progress(progress))?;
        }
        if let Some(s) = v.get("set") {
            let pairs = |k: &str| -> Vec<(u64, u64)> {
                field(s, k)
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| Some((p.get(0)?.as_u64()?, p.get(1)?.as_u64()?)))
                    .collect()
            };
            seg.set_merge(h, &OrSetState::from_parts(pairs("adds"), pairs("tombstones")))?;
        }
        for who in field(v, "assignees").as_array().into_iter().flatten().filter_map(Value::as_str) {
            // `#<16 hex digits>` is how export writes a key whose name it did not know:
            // no agent could be that, so it is not assigned.
            if who.len() == 17 && who.starts_with('#') && who[1..].bytes().all(|b| b.is_ascii_hexdigit()) {
                eprintln!("wn: warning: an assignee of {} has no known name; not assigned", field(v, "name"));
                continue;
            }
            seg.assign(h, &crate::ctx::principal(who)?)?;
        }
        if field(v, "open_to_all").as_bool() == Some(true) {
            seg.set_open_to_all(h, true)?;
        }
        map.insert(uuid, h);
        created += 1;
    }
    // Dependencies, then statuses through the state machine, in dependency order.
    for v in nodes {
        let Some(&h) = field(v, "uuid").as_str().and_then(|u| map.get(u)) else { continue };
        for b in field(v, "blocked_by").as_array().into_iter().flatten().filter_map(Value::as_str) {
            if let Some(&bh) = map.get(b) {
                seg.add_blocker(h, bh)?;
            }
        }
    }
    let importer = seg.join("import", "import")?;
    let lease = Duration::from_secs(60);
    let wanted = |v: &Value| field(v, "status").as_str().map(str::to_string);
    for _round in 0..=nodes.len() {
        let mut progressed = false;
        for v in nodes {
            let Some(&h) = field(v, "uuid").as_str().and_then(|u| map.get(u)) else { continue };
            let now = seg.read(h)?.status();
            let target = wanted(v);
            if now == Some(Status::Ready) && matches!(target.as_deref(), Some("complete" | "failed")) {
                if let Ok(c) = seg.claim(h, importer, lease) {
                    if target.as_deref() == Some("complete") {
                        seg.complete(&c, "imported")?;
                    } else {
                        seg.fail(&c, "imported")?;
                    }
                    progressed = true;
                }
            }
        }
        if !progressed {
            break;
        }
    }
    for v in nodes {
        let Some(&h) = field(v, "uuid").as_str().and_then(|u| map.get(u)) else { continue };
        if wanted(v).as_deref() == Some("cancelled") {
            seg.update(h, |n| n.set_status(Status::Cancelled))?;
        }
    }
    seg.leave(importer)?;
    if ctx.json {
        print_json(&json!({ "imported": created }))
    } else {
        print(&format!("imported {created} nodes"))
    }
}

fn agents_container(seg: &Segment) -> Option<Handle> {
    let mut kids = Vec::new();
    seg.children(seg.root(), &mut kids).ok()?;
    kids.into_iter().find(|k| seg.read(*k).is_ok_and(|n| n.kind() == Some(NodeKind::Container) && n.name() == "agents"))
}
