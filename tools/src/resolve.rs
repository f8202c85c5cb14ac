//! Naming nodes on the command line.
//!
//! A `NODE` argument is one of
//!
//! * a full UUID (`0190a3b4-5c6d-7e01-8f00-123456789abc`, hyphens optional): looked up in
//!   the id index;
//! * a unique UUID prefix (`0190a3b4-5c6d-7e`, hyphens ignored, any length): a scan of
//!   the pool. A prefix matching several nodes is a **usage error (exit 2)** that lists
//!   the candidates: the argument, not the segment, is at fault, and the fix is to type
//!   more of the id;
//! * a path from the root starting with `/` (`/Company/Code Analysis/Refactor auth`):
//!   each component is a child's exact name (names may contain spaces; empty components
//!   are ignored, so `/` is the root). A component matching several siblings is the same
//!   usage error (exit 2), listing them by UUID.
//!
//! Anything else is a usage error; when some node bears that exact name, the hint gives
//! its path.

use crate::fail::{exit, Fail};
use serde_json::{json, Value};
use uuid::Uuid;
use worknode::{Handle, Node, PoolError, Segment};

/// Candidates listed for an ambiguous name.
const CANDIDATES_SHOWN: usize = 10;

/// Resolves a `NODE` argument to a handle.
pub fn node(seg: &Segment, spec: &str) -> Result<Handle, Fail> {
    let s = spec.trim();
    if s.starts_with('/') {
        return path(seg, s);
    }
    if let Ok(u) = Uuid::parse_str(s) {
        return seg.lookup(u).map_err(|e| match e {
            PoolError::NotFound => Fail::new(
                "node_not_found",
                exit::NOT_FOUND,
                format!("no node with UUID {u}"),
                "list nodes with `wn ls` or `wn tree`",
            ),
            e => e.into(),
        });
    }
    let hex: String = s.chars().filter(|c| *c != '-').collect::<String>().to_ascii_lowercase();
    if !hex.is_empty() && hex.len() <= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return prefix(seg, s, &hex);
    }
    let mut hint =
        "name a node by UUID, by a unique UUID prefix, or by its path from the root (e.g. /Project/Task)".to_string();
    if let Some(p) = path_of_named(seg, s) {
        hint = format!("did you mean {p:?}? paths start with '/'");
    }
    Err(Fail::usage(format!("{spec:?} is not a node name"), hint).with_code("bad_node_name"))
}

/// Resolves an optional `NODE` argument, defaulting to the root.
pub fn node_or_root(seg: &Segment, spec: Option<&str>) -> Result<Handle, Fail> {
    match spec {
        Some(s) => node(seg, s),
        None => Ok(seg.root()),
    }
}

fn candidates(seg: &Segment, nodes: &[Node]) -> Value {
    let list: Vec<Value> = nodes
        .iter()
        .take(CANDIDATES_SHOWN)
        .map(|n| json!({ "uuid": n.uuid().to_string(), "path": path_of(seg, n.handle()), "kind": crate::output::kind_text(n) }))
        .collect();
    json!({ "candidates": list, "count": nodes.len() })
}

fn prefix(seg: &Segment, spec: &str, hex: &str) -> Result<Handle, Fail> {
    let mut found: Vec<Node> = Vec::new();
    seg.for_each_node(|n| {
        if n.uuid().simple().to_string().starts_with(hex) {
            found.push(*n);
        }
        true
    })?;
    match found.len() {
        1 => Ok(found[0].handle()),
        0 => {
            // A hex-looking word may be a name ("cafe", "add"): point at its path.
            let hint = match path_of_named(seg, spec) {
                Some(p) => format!("a node named {spec:?} exists: did you mean {p:?}? paths start with '/'"),
                None => "list nodes with `wn ls` or `wn tree`; a path from the root starts with '/'".to_string(),
            };
            Err(Fail::new("node_not_found", exit::NOT_FOUND, format!("no node's UUID starts with {spec:?}"), hint))
        }
        n => Err(Fail::usage(
            format!("UUID prefix {spec:?} is ambiguous: {n} nodes match"),
            "give more digits of the UUID (candidates below), or the node's path",
        )
        .with_code("ambiguous_node")
        .with_details(candidates(seg, &found))),
    }
}

fn path(seg: &Segment, spec: &str) -> Result<Handle, Fail> {
    let mut cur = seg.root();
    let mut walked = String::new();
    let mut kids = Vec::new();
    for comp in spec.split('/').filter(|c| !c.is_empty()) {
        seg.children(cur, &mut kids)?;
        let mut matches: Vec<Node> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for h in &kids {
            let Ok(n) = seg.read(*h) else { continue };
            if n.name() == comp {
                matches.push(n);
            } else if names.len() < CANDIDATES_SHOWN {
                names.push(n.name().to_string());
            }
        }
        let parent_shown = if walked.is_empty() { "/".to_string() } else { walked.clone() };
        match matches.len() {
            1 => cur = matches[0].handle(),
            0 => {
                let hint = if names.is_empty() {
                    format!("{parent_shown} has no children")
                } else {
                    format!("children of {parent_shown} include: {}", names.join(", "))
                };
                return Err(Fail::new(
                    "node_not_found",
                    exit::NOT_FOUND,
                    format!("no node named {comp:?} under {parent_shown}"),
                    hint,
                ));
            }
            n => {
                return Err(Fail::usage(
                    format!("path component {comp:?} under {parent_shown} matches {n} nodes"),
                    "name the node by UUID instead (candidates below)",
                )
                .with_code("ambiguous_node")
                .with_details(candidates(seg, &matches)))
            }
        }
        walked.push('/');
        walked.push_str(comp);
    }
    Ok(cur)
}

/// The path of a node from the root (`/` for the root itself). Nodes deleted meanwhile
/// show as `?`.
pub fn path_of(seg: &Segment, h: Handle) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(h);
    let bound = seg.capacities().nodes as usize + 1;
    while let Some(c) = cur {
        if parts.len() > bound {
            break;
        }
        match seg.read(c) {
            Ok(n) => match n.parent() {
                Some(p) => {
                    parts.push(n.name().to_string());
                    cur = Some(p);
                }
                None => cur = None,
            },
            Err(_) => {
                parts.push("?".into());
                cur = None;
            }
        }
    }
    if parts.is_empty() {
        return "/".into();
    }
    parts.reverse();
    format!("/{}", parts.join("/"))
}

/// The path of a node whose name is exactly `name`, if there is one (for hints).
fn path_of_named(seg: &Segment, name: &str) -> Option<String> {
    let mut found = None;
    let _ = seg.for_each_node(|n| {
        if n.name() == name {
            found = Some(n.handle());
            return false;
        }
        true
    });
    found.map(|h| path_of(seg, h))
}
