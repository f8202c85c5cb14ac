//! Human and JSON output: tables, colour, relative times, short ids, and the JSON shape of
//! a node that every verb shares.
//!
//! * Colour only when stdout is a terminal, `NO_COLOR` is unset (or empty) and `TERM` is
//!   not `dumb`; `CLICOLOR_FORCE=1` forces it (unless `NO_COLOR` is set).
//! * Tables are drawn by comfy-table without borders, one header row, columns aligned.
//! * Short ids are the shortest unique UUID prefix (at least 8 hex digits) among the live
//!   nodes, so an id copied from a table names the node (`wn show 0190a3b4-5c`).

use crate::duration;
use crate::fail::Fail;
use comfy_table::{presets, Cell, CellAlignment, Color, ContentArrangement, Table};
use ratatui::crossterm::style::Stylize;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use uuid::Uuid;
use worknode::{Node, NodeKind, Segment, Status};

/// The version of the `--json` contract: the shapes `tools/schemas/*.json` describe (their
/// `$id`s carry it as `/v1/`). It changes only when a field is removed, renamed or changes
/// type; adding a field keeps it. `wn commands --json` prints it with each verb's schema.
pub const JSON_CONTRACT: u32 = 1;

/// The base of every schema's `$id` for this contract version.
pub const SCHEMA_BASE: &str = "https://worknode.dev/schemas/v1/";

/// Where in the repository a verb's schema lives: `doc put` → `tools/schemas/doc-put.json`.
pub fn schema_path(verb: &str) -> String {
    format!("tools/schemas/{}.json", verb.split_whitespace().collect::<Vec<_>>().join("-"))
}

/// How human output is decorated.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    /// Whether to colour.
    pub color: bool,
}

fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

impl Style {
    /// Decides from stdout and the environment (`NO_COLOR`, `CLICOLOR_FORCE`, `TERM`).
    pub fn detect() -> Style {
        let no_color = env_set("NO_COLOR");
        let forced = std::env::var("CLICOLOR_FORCE").is_ok_and(|v| !v.is_empty() && v != "0");
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        let tty = std::io::stdout().is_terminal();
        Style { color: !no_color && (forced || (tty && !dumb)) }
    }

    /// A borderless table without a header (key-value listings).
    pub fn kv_table(&self) -> Table {
        let mut t = Table::new();
        t.load_preset(presets::NOTHING);
        if self.color {
            t.enforce_styling();
        } else {
            t.force_no_tty();
        }
        t.set_content_arrangement(ContentArrangement::Disabled);
        t
    }

    /// A borderless table with a header row.
    pub fn table(&self, headers: &[&str]) -> Table {
        let mut t = self.kv_table();
        t.set_header(headers.iter().map(|h| {
            let c = Cell::new(h);
            if self.color {
                c.add_attribute(comfy_table::Attribute::Bold)
            } else {
                c
            }
        }));
        t
    }

    /// Finishes a table for printing: two spaces between columns, none at the edges.
    pub fn render(&self, mut t: Table) -> String {
        for col in t.column_iter_mut() {
            col.set_padding((0, 2));
        }
        t.lines().map(|l| l.trim_end().to_string()).collect::<Vec<_>>().join("\n")
    }

    /// A right-aligned cell (numbers).
    pub fn num(&self, text: impl ToString) -> Cell {
        Cell::new(text.to_string()).set_alignment(CellAlignment::Right)
    }

    /// A status, coloured by meaning.
    pub fn status_cell(&self, s: Option<Status>) -> Cell {
        let text = s.map_or("?", Status::as_str);
        match (self.color, s.and_then(status_color)) {
            (true, Some(c)) => Cell::new(text).fg(c),
            _ => Cell::new(text),
        }
    }

    /// A status as text, coloured by meaning (for non-table lines).
    pub fn status_text(&self, s: Option<Status>) -> String {
        let text = s.map_or("?", Status::as_str);
        if !self.color {
            return text.to_string();
        }
        match s {
            Some(Status::Ready) => text.green().to_string(),
            Some(Status::Claimed) => text.cyan().to_string(),
            Some(Status::InProgress) => text.yellow().to_string(),
            Some(Status::Complete) => text.dark_green().to_string(),
            Some(Status::Failed) => text.red().to_string(),
            Some(Status::Blocked) => text.magenta().to_string(),
            Some(Status::Cancelled) => text.dark_grey().to_string(),
            _ => text.to_string(),
        }
    }

    /// Dims secondary text (ids, times).
    pub fn dim(&self, text: &str) -> String {
        if self.color {
            text.dark_grey().to_string()
        } else {
            text.to_string()
        }
    }

    /// Emphasises text (names).
    pub fn bold(&self, text: &str) -> String {
        if self.color {
            text.bold().to_string()
        } else {
            text.to_string()
        }
    }
}

fn status_color(s: Status) -> Option<Color> {
    Some(match s {
        Status::Ready => Color::Green,
        Status::Claimed => Color::Cyan,
        Status::InProgress => Color::Yellow,
        Status::Complete => Color::DarkGreen,
        Status::Failed => Color::Red,
        Status::Blocked => Color::Magenta,
        Status::Cancelled => Color::DarkGrey,
        Status::Pending => return None,
    })
}

/// Whether `c` must not reach a terminal as itself: a control character (C0, DEL, C1:
/// escapes, bells, newlines, backspaces) or a bidirectional override (text that reads in
/// another order than it is stored).
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Text from the segment or the command line, made safe for human output: every control
/// character and bidirectional override is shown escaped (`\n`, `\t`, `\r`, else
/// `\u{1b}`), so no name, role, topic or payload can move the cursor, retitle the
/// window, colour the screen or split a row. Everything else is unchanged (no copy).
///
/// Every human-readable line `wn` prints that holds such text goes through this; JSON
/// output does not need it (serde escapes control characters).
pub fn clean(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Writes `text` (plus a newline) to stdout. A closed pipe (`wn ls | head`) is not an
/// error; any other write failure is.
pub fn print(text: &str) -> Result<(), Fail> {
    let mut out = std::io::stdout().lock();
    let r = out.write_all(text.as_bytes()).and_then(|_| out.write_all(b"\n")).and_then(|_| out.flush());
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Fail::other(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

/// Writes one line of a stream; `Ok(false)` once the reader has gone (closed pipe), so
/// the stream can end quietly.
pub fn print_stream(text: &str) -> Result<bool, Fail> {
    let mut out = std::io::stdout().lock();
    let r = out.write_all(text.as_bytes()).and_then(|_| out.write_all(b"\n")).and_then(|_| out.flush());
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Fail::other(format!("cannot write to stdout: {e}"))),
    }
}

/// Writes one JSON value as one line.
pub fn print_json(v: &Value) -> Result<(), Fail> {
    print(&v.to_string())
}

/// Writes raw bytes to stdout (`doc get`).
pub fn print_bytes(bytes: &[u8]) -> Result<(), Fail> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Fail::other(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

/// Current wall-clock time, Unix ms.
pub fn now_ms() -> u64 {
    worknode::unix_ms()
}

/// Agent names by table slot (claims record slots), and principals by key
/// (assignees).
pub struct Names {
    agents: HashMap<u16, String>,
    principals: HashMap<worknode::PrincipalKey, String>,
}

impl Names {
    /// Reads the agent table and the principal registry once.
    pub fn load(seg: &Segment) -> Names {
        let mut v = Vec::new();
        seg.agents(&mut v);
        let mut principals = HashMap::new();
        for a in &v {
            principals.insert(worknode::Principal::Agent(a.name.clone()).key(), a.name.clone());
            if !a.role.is_empty() {
                let role = worknode::Principal::Role(a.role.clone());
                principals.insert(role.key(), role.to_string());
            }
        }
        let mut registered = Vec::new();
        let _ = seg.principals(&mut registered);
        principals.extend(registered.into_iter().map(|p| (p.key(), p.to_string())));
        Names { agents: v.into_iter().map(|a| (a.id.index, a.name)).collect(), principals }
    }

    /// Only the names node `n` mentions (its claimant, its assignees): for showing one
    /// node, far cheaper than [`Names::load`] on a board with many agents and mailboxes.
    pub fn for_node(seg: &Segment, n: &worknode::Node) -> Names {
        let mut agents = HashMap::new();
        if let Some(slot) = n.claim_agent_raw() {
            let mut v = Vec::new();
            seg.agents(&mut v);
            if let Some(a) = v.into_iter().find(|a| a.id.index == slot) {
                agents.insert(slot, a.name);
            }
        }
        let principals = n.assignees().filter_map(|k| seg.principal(k).map(|p| (k, p.to_string()))).collect();
        Names { agents, principals }
    }

    /// The principal `key` names (`writer`, `@tester`), or `#<key>` if none is known.
    pub fn principal(&self, key: worknode::PrincipalKey) -> String {
        self.principals.get(&key).cloned().unwrap_or_else(|| format!("#{:016x}", key.raw()))
    }

    /// The agent in `slot`, or `#slot` for one that has left.
    pub fn agent(&self, slot: u16) -> String {
        self.agents.get(&slot).cloned().unwrap_or_else(|| format!("#{slot}"))
    }
}

/// Shortest unique UUID prefixes among the live nodes.
pub struct ShortIds {
    hex_len: HashMap<Uuid, usize>,
}

/// The fewest hex digits a short id shows.
const SHORT_MIN: usize = 8;

impl ShortIds {
    /// Scans the pool once.
    pub fn scan(seg: &Segment) -> ShortIds {
        let mut ids: Vec<String> = Vec::new();
        let _ = seg.for_each_node(|n| {
            ids.push(n.uuid().simple().to_string());
            true
        });
        ShortIds::from_hex(ids)
    }

    /// No scan: every id shows 13 hex digits (for JSON output, where ids are full).
    pub fn empty() -> ShortIds {
        ShortIds { hex_len: HashMap::new() }
    }

    fn from_hex(mut ids: Vec<String>) -> ShortIds {
        ids.sort();
        let lcp = |a: &str, b: &str| a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
        let mut hex_len = HashMap::with_capacity(ids.len());
        for i in 0..ids.len() {
            let prev = if i > 0 { lcp(&ids[i - 1], &ids[i]) } else { 0 };
            let next = if i + 1 < ids.len() { lcp(&ids[i], &ids[i + 1]) } else { 0 };
            let need = (prev.max(next) + 1).clamp(SHORT_MIN, 32);
            if let Ok(u) = Uuid::parse_str(&ids[i]) {
                hex_len.insert(u, need);
            }
        }
        ShortIds { hex_len }
    }

    /// The short form of `u` (hyphenated, cut after its unique prefix).
    pub fn of(&self, u: Uuid) -> String {
        let hex = self.hex_len.get(&u).copied().unwrap_or(13);
        let hyphens = [8, 12, 16, 20].iter().filter(|&&p| p < hex).count();
        let full = u.hyphenated().to_string();
        full[..(hex + hyphens).min(full.len())].to_string()
    }
}

/// The kind of a node, as text (`custom:N` for application kinds).
pub fn kind_text(n: &Node) -> String {
    match n.kind() {
        Some(NodeKind::Custom) => format!("custom:{}", n.custom_kind()),
        Some(k) => k.as_str().to_string(),
        None => format!("kind#{}", n.record().kind),
    }
}

/// The claim on a node as human text (escaped): `backend (epoch 2, lease in 9m)`, `expired …`, or
/// empty when never claimed / released.
pub fn claim_text(n: &Node, names: &Names, now: u64) -> String {
    match n.claim_agent_raw() {
        Some(slot) if n.live_claimant_at(now).is_some() => format!(
            "{} (epoch {}, lease {})",
            clean(&names.agent(slot)),
            n.claim_epoch(),
            duration::relative(now, n.lease_until_ms())
        ),
        Some(slot) => format!("{} (epoch {}, lease expired)", clean(&names.agent(slot)), n.claim_epoch()),
        None => String::new(),
    }
}

/// The JSON shape of a node, shared by every verb (`path` included when given).
pub fn node_json(seg: &Segment, n: &Node, names: &Names, path: Option<&str>) -> Value {
    let now = now_ms();
    let claim = n.claim_agent_raw().map(|slot| {
        json!({
            "agent": names.agent(slot),
            "agent_slot": slot,
            "epoch": n.claim_epoch(),
            "lease_until_ms": n.lease_until_ms(),
            "live": n.live_claimant_at(now).is_some(),
        })
    });
    let blockers: Vec<Value> = n
        .blocked_by()
        .map(|b| match seg.read(b) {
            Ok(bn) => json!({
                "uuid": bn.uuid().to_string(),
                "name": bn.name(),
                "path": crate::resolve::path_of(seg, b),
                "status": bn.status().map(Status::as_str),
            }),
            Err(_) => json!({ "uuid": Value::Null, "name": Value::Null, "path": Value::Null, "status": "deleted" }),
        })
        .collect();
    let parent = n.parent().and_then(|p| seg.read(p).ok()).map(|p| p.uuid().to_string());
    let mut labels = Vec::new();
    // A node deleted meanwhile, or a damaged registry, shows no labels.
    let _ = seg.labels(n.handle(), &mut labels);
    let mut v = json!({
        "uuid": n.uuid().to_string(),
        "name": n.name(),
        "kind": kind_text(n),
        "status": n.status().map(Status::as_str),
        "priority": n.priority(),
        "progress": n.progress(),
        "value": n.value(),
        "description": n.description(),
        "version": n.version(),
        "parent": parent,
        "created_ms": n.created().wall_ms(),
        "updated_ms": n.updated().wall_ms(),
        "child_count": seg.child_count(n.handle()).unwrap_or(0),
        "claim": claim,
        "epoch": n.claim_epoch(),
        "assignees": n.assignees().map(|a| names.principal(a)).collect::<Vec<_>>(),
        "open_to_all": n.open_to_all(),
        "blocked_by": blockers,
        "labels": labels,
    });
    if let Some(p) = path {
        v["path"] = json!(p);
    }
    if let Some(host) = n.origin_host() {
        v["origin"] = json!(host);
    }
    if n.kind() == Some(NodeKind::Document) {
        v["document"] =
            json!({ "content_type": n.description(), "len": n.record().doc_len, "crc32c": n.record().doc_crc });
    }
    if matches!(n.kind(), Some(NodeKind::Task | NodeKind::Custom)) {
        v["record"] = task_record_json(seg, n);
    }
    v
}

/// The agent a task's record names: its name while it exists, and its UUID.
fn record_agent(seg: &Segment, uuid: Option<Uuid>) -> Value {
    let Some(u) = uuid else { return Value::Null };
    let name = seg.lookup(u).and_then(|h| seg.read(h)).ok().map(|a| a.name().to_string());
    json!({ "uuid": u.to_string(), "name": name })
}

/// An agent named by its identity node (an event's actor): its name and UUID, both null
/// when that agent has left since (the handle no longer reads).
pub fn agent_ref(seg: &Segment, h: worknode::Handle) -> Value {
    match seg.read(h) {
        Ok(a) => json!({ "name": a.name(), "uuid": a.uuid().to_string() }),
        Err(_) => json!({ "name": Value::Null, "uuid": Value::Null }),
    }
}

/// The daemon as the segment's header records it (`dump`, `top`).
pub fn daemon_json(info: &worknode::SegmentInfo) -> Value {
    json!({
        "pid": info.daemon_pid,
        "alive": info.daemon_alive,
        "boot_id": info.boot_id.to_string(),
        "started_unix_ms": info.daemon_started_ms,
        "adopt_count": info.adopt_count,
    })
}

/// What a task keeps of its history in the segment (after the ring has wrapped, and
/// across restarts): attempts, the last finish and by whom, the last note.
pub fn task_record_json(seg: &Segment, n: &Node) -> Value {
    let note = n.last_note().map(|(by, text)| json!({ "from": by, "text": text }));
    json!({
        "attempts": n.attempts(),
        "claimed_ms": (n.record().claimed_at != 0).then(|| worknode::Hlc(n.record().claimed_at).wall_ms()),
        "progress_ms": n.progress_at().map(|h| h.wall_ms()),
        "finished_ms": n.finished_at().map(|h| h.wall_ms()),
        "finished_by": record_agent(seg, n.finished_by()),
        "note": note,
    })
}

/// One line naming a node: `UUID kind status name` (the UUID first, for `cut`/`awk`).
pub fn node_line(style: &Style, n: &Node) -> String {
    format!("{} {} {} {}", n.uuid(), kind_text(n), style.status_text(n.status()), clean(n.name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_base_names_the_contract_version() {
        assert!(SCHEMA_BASE.ends_with(&format!("/v{JSON_CONTRACT}/")), "{SCHEMA_BASE}");
        assert_eq!(schema_path("doc put"), "tools/schemas/doc-put.json");
        assert_eq!(schema_path("ls"), "tools/schemas/ls.json");
    }

    #[test]
    fn control_characters_and_overrides_are_escaped() {
        assert!(matches!(clean("plain ü café"), Cow::Borrowed("plain ü café")));
        assert_eq!(clean("\u{1b}]0;pwned\u{7}\u{1b}[31mX"), "\\u{1b}]0;pwned\\u{7}\\u{1b}[31mX");
        assert_eq!(clean("a\nb\tc\rd\u{7f}\u{85}"), "a\\nb\\tc\\rd\\u{7f}\\u{85}");
        assert_eq!(clean("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert!(!clean("\u{1b}\u{9b}\u{0}").chars().any(|c| c.is_control()));
    }

    #[test]
    fn short_ids_are_unique_prefixes_of_at_least_eight_digits() {
        let a = "0190a3b45c6d7e01aaaaaaaaaaaaaaaa".to_string();
        let b = "0190a3b45c6d7e02bbbbbbbbbbbbbbbb".to_string();
        let c = "ffff0000000000000000000000000000".to_string();
        let s = ShortIds::from_hex(vec![a.clone(), b, c.clone()]);
        let ua = Uuid::parse_str(&a).unwrap();
        assert_eq!(s.of(ua), "0190a3b4-5c6d-7e01");
        assert_eq!(s.of(Uuid::parse_str(&c).unwrap()), "ffff0000");
    }
}
