//! Documents: `wn doc put` stores bytes as a document node (content in the segment's
//! blob arena, CRC-32C checked), `wn doc get` copies them back out, `wn doc ls` lists
//! the documents under a node and `wn doc rm` deletes one (its chunks go back to the
//! arena).
//!
//! `put` is create-or-replace: if PARENT already has exactly one document named NAME, its
//! content is replaced (one new version of the same node); otherwise a new document node
//! is added. When the agent `wn` acts as holds a live claim on PARENT, the put presents
//! it (`put_document_for`, `replace_document_for`): the claim's lease runs its full
//! length again, so an agent that writes its results needs no renew loop.

use crate::ctx::Ctx;
use crate::fail::{exit, Fail};
use crate::input::{read_bounded, Source};
use crate::output::{clean, node_json, print, print_bytes, print_json, Names};
use crate::resolve::{self, path_of};
use serde_json::{json, Value};
use std::path::PathBuf;
use worknode::{Claim, Handle, NodeKind, Segment};

/// `wn doc …`.
#[derive(clap::Subcommand, Debug)]
pub enum DocCmd {
    /// Store a document under PARENT (replacing PARENT's document NAME if there is one).
    Put(PutArgs),
    /// Write a document's bytes to stdout (`wn doc get NODE > file`).
    Get(GetArgs),
    /// List the documents directly under NODE: name, UUID, version, bytes, content type.
    Ls(LsArgs),
    /// Delete a document and release its content.
    Rm(RmArgs),
}

/// Options of `wn doc ls`.
#[derive(clap::Args, Debug)]
pub struct LsArgs {
    /// The node whose documents to list (UUID, unique prefix, or /path; default: root).
    node: Option<String>,
}

/// Options of `wn doc rm`.
#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// The document (UUID, unique prefix, or /path).
    node: String,
}

/// Options of `wn doc put`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["file", "stdin"])))]
pub struct PutArgs {
    /// Where the document goes (UUID, unique prefix, or /path).
    parent: String,
    /// The document's name.
    name: String,
    /// Read the content from this file.
    #[arg(long, short, value_name = "FILE")]
    file: Option<PathBuf>,
    /// `-`: read the content from stdin.
    #[arg(value_name = "-", value_parser = ["-"])]
    stdin: Option<String>,
    /// Media type (default: from the file extension; text/plain for UTF-8, else
    /// application/octet-stream).
    #[arg(long = "type", value_name = "MIME")]
    content_type: Option<String>,
}

/// Options of `wn doc get`.
#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// The document (UUID, unique prefix, or /path).
    node: String,
}

/// A media type guessed from a file name, or from the bytes.
pub fn guess_type(file: Option<&PathBuf>, bytes: &[u8]) -> String {
    let ext = file.and_then(|f| f.extension()).and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let by_ext = match ext.as_deref() {
        Some("md" | "markdown") => Some("text/markdown"),
        Some("json") => Some("application/json"),
        Some("txt" | "log") => Some("text/plain"),
        Some("html" | "htm") => Some("text/html"),
        Some("css") => Some("text/css"),
        Some("js" | "mjs") => Some("text/javascript"),
        Some("csv") => Some("text/csv"),
        Some("sql") => Some("application/sql"),
        Some("yaml" | "yml") => Some("application/yaml"),
        Some("toml") => Some("application/toml"),
        Some("xml") => Some("application/xml"),
        Some("png") => Some("image/png"),
        Some("pdf") => Some("application/pdf"),
        _ => None,
    };
    match by_ext {
        Some(t) => t.to_string(),
        None if std::str::from_utf8(bytes).is_ok() => "text/plain".to_string(),
        None => "application/octet-stream".to_string(),
    }
}

/// PARENT's document named `name`, if exactly one exists.
fn existing_document(seg: &Segment, parent: Handle, name: &str) -> Result<Option<Handle>, Fail> {
    let mut kids = Vec::new();
    seg.children(parent, &mut kids)?;
    let found: Vec<Handle> = kids
        .into_iter()
        .filter(|k| seg.read(*k).is_ok_and(|n| n.kind() == Some(NodeKind::Document) && n.name() == name))
        .collect();
    match found.len() {
        0 => Ok(None),
        1 => Ok(Some(found[0])),
        n => Err(Fail::usage(
            format!("{n} documents named {name:?} under {}", path_of(seg, parent)),
            "replace one by UUID with a distinct name, or delete the duplicates",
        )
        .with_code("ambiguous_node")),
    }
}

/// The live claim on `task` held by the agent this invocation acts as (`--agent`, or
/// the token's), if any. An agent that has not joined holds nothing: no join is made.
fn held_claim(ctx: &Ctx, seg: &Segment, task: Handle) -> Option<Claim> {
    let name = seg.grant().map(|g| g.agent().to_string()).or_else(|| ctx.agent.clone())?;
    claim_held_by(seg, seg.find_agent(&name)?, task)
}

/// The live claim `agent` holds on `task`, if any: a document put under it renews it.
pub fn claim_held_by(seg: &Segment, agent: worknode::AgentId, task: Handle) -> Option<Claim> {
    let n = seg.read(task).ok()?;
    let now = worknode::unix_ms();
    (n.live_claimant_at(now) == Some(agent)).then(|| Claim {
        task,
        agent,
        epoch: n.claim_epoch(),
        lease_until_ms: n.lease_until_ms(),
    })
}

/// Creates PARENT's document `name`, or replaces the one there (`doc put`, MCP
/// `doc_put`); with the claim on PARENT, under it, so the claim's lease is renewed.
pub fn put_bytes(
    seg: &Segment,
    parent: Handle,
    name: &str,
    content_type: &str,
    bytes: &[u8],
    claim: Option<Claim>,
) -> Result<Handle, Fail> {
    if name.contains('/') {
        return Err(Fail::usage(format!("document name {name:?} contains '/'"), "choose a name without '/'"));
    }
    Ok(match (existing_document(seg, parent, name)?, claim) {
        (Some(d), Some(c)) => {
            seg.replace_document_for(&c, d, content_type, bytes)?;
            d
        }
        (Some(d), None) => {
            seg.replace_document(d, content_type, bytes)?;
            d
        }
        (None, Some(c)) => seg.put_document_for(&c, name, content_type, bytes)?,
        (None, None) => seg.put_document(parent, name, content_type, bytes)?,
    })
}

/// A document as `doc get --json` prints it: its metadata, and its text (or hex).
pub fn document_json(seg: &Segment, h: Handle) -> Result<Value, Fail> {
    let mut bytes = Vec::new();
    let info = seg.get_document(h, &mut bytes)?;
    let n = seg.read(h)?;
    let mut v = json!({
        "uuid": n.uuid().to_string(),
        "path": path_of(seg, h),
        "content_type": info.content_type,
        "len": info.len,
        "crc32c": info.crc,
        "version": info.version,
    });
    match std::str::from_utf8(&bytes) {
        Ok(text) => v["text"] = json!(text),
        Err(_) => v["hex"] = json!(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()),
    }
    Ok(v)
}

/// Runs `doc put` / `doc get`.
pub fn run(ctx: &Ctx, c: &DocCmd) -> Result<(), Fail> {
    match c {
        DocCmd::Put(a) => put(ctx, a),
        DocCmd::Get(a) => get(ctx, a),
        DocCmd::Ls(a) => ls(ctx, a),
        DocCmd::Rm(a) => rm(ctx, a),
    }
}

/// The documents directly under `parent`, as `doc ls --json` prints them.
pub fn documents_json(seg: &Segment, parent: Handle) -> Result<Value, Fail> {
    let mut kids = Vec::new();
    seg.children(parent, &mut kids)?;
    let mut list = Vec::new();
    for k in kids {
        // Another kind, or deleted since the child list was copied: not listed.
        let (Ok(n), Ok(info)) = (seg.read(k), seg.document_info(k)) else { continue };
        list.push(json!({
            "name": n.name(),
            "uuid": n.uuid().to_string(),
            "version": info.version,
            "bytes": info.len,
            "content_type": info.content_type,
            "crc32c": info.crc,
            "status": n.status().map(|s| s.as_str()),
        }));
    }
    Ok(json!({ "count": list.len(), "documents": list }))
}

fn ls(ctx: &Ctx, a: &LsArgs) -> Result<(), Fail> {
    let seg = ctx.attach_ro()?;
    let parent = resolve::node_or_root(&seg, a.node.as_deref())?;
    if ctx.json {
        return print_json(&documents_json(&seg, parent)?);
    }
    let mut kids = Vec::new();
    seg.children(parent, &mut kids)?;
    let mut docs = Vec::new();
    for k in kids {
        // Another kind, or deleted since the child list was copied: not listed.
        let (Ok(n), Ok(info)) = (seg.read(k), seg.document_info(k)) else { continue };
        docs.push((n, info));
    }
    if docs.is_empty() {
        return print(&format!("no documents under {}", path_of(&seg, parent)));
    }
    let st = &ctx.style;
    let mut t = st.table(&["NAME", "UUID", "VERSION", "BYTES", "TYPE"]);
    for (n, info) in &docs {
        t.add_row(vec![
            comfy_table::Cell::new(clean(n.name())),
            comfy_table::Cell::new(n.uuid().to_string()),
            st.num(info.version),
            st.num(info.len),
            comfy_table::Cell::new(clean(&info.content_type)),
        ]);
    }
    print(&st.render(t))
}

fn rm(ctx: &Ctx, a: &RmArgs) -> Result<(), Fail> {
    let seg = ctx.attach_rw()?;
    let h = resolve::node(&seg, &a.node)?;
    let n = seg.read(h)?;
    let path = path_of(&seg, h);
    seg.delete_document(h)?;
    if ctx.json {
        return print_json(&json!({ "deleted": n.uuid().to_string(), "path": path, "bytes": n.record().doc_len }));
    }
    print(&format!("deleted document {} {}", n.uuid(), clean(&path)))
}

fn put(ctx: &Ctx, a: &PutArgs) -> Result<(), Fail> {
    if a.name.contains('/') {
        return Err(Fail::usage(format!("document name {:?} contains '/'", a.name), "choose a name without '/'"));
    }
    let seg = ctx.attach_rw()?;
    let parent = resolve::node(&seg, &a.parent)?;
    // Read no more than the segment could store as one document (and one byte more, to
    // know that there is more).
    let src = a.file.as_deref().map_or(Source::Stdin, Source::File);
    let bytes = read_bounded(
        src,
        seg.max_document_len() as u64,
        "document_too_large",
        exit::FULL,
        "one document can hold in this segment",
        "split it into several documents, or restart the daemon with a larger --blob-chunks",
    )?;
    let content_type = a.content_type.clone().unwrap_or_else(|| guess_type(a.file.as_ref(), &bytes));
    // The holder of the parent task's claim puts with it: the lease follows the work.
    let claim = held_claim(ctx, &seg, parent);
    let doc = put_bytes(&seg, parent, &a.name, &content_type, &bytes, claim)?;
    let n = seg.read(doc)?;
    if ctx.json {
        let names = Names::load(&seg);
        return print_json(&node_json(&seg, &n, &names, Some(&path_of(&seg, doc))));
    }
    print(&format!(
        "{} document v{} {} bytes {} {}",
        n.uuid(),
        n.version(),
        bytes.len(),
        clean(&content_type),
        clean(n.name())
    ))
}

fn get(ctx: &Ctx, a: &GetArgs) -> Result<(), Fail> {
    let seg = ctx.attach_ro()?;
    let h = resolve::node(&seg, &a.node)?;
    if ctx.json {
        return print_json(&document_json(&seg, h)?);
    }
    let mut bytes = Vec::new();
    seg.get_document(h, &mut bytes)?;
    print_bytes(&bytes)
}
