//! `wn events` (read and follow the event ring), `wn emit` (append one event) and
//! `wn wait` (block until the first matching event after now).
//!
//! An event kind on the command line is a built-in name (`task_ready`), `user`, a number
//! (a built-in code, or 1000 and up for applications), or an application name — a letter
//! then letters, digits, `_`, `-`, `.` or `:` — stored as `user` with that name as its
//! topic (so `wn emit build_done` and `wn wait --kind build_done` meet). Anything else,
//! and a name within two edits of a built-in one, is refused (exit 2) with the list of
//! built-in kinds: waiting for a kind no one can emit would only time out.
//!
//! `events` and `wait` select by kind, topic, actor and node, and by the node's state:
//! `--status` (the node has that status once the event is read — for `wait`, as it
//! arrives) and `--assignee` (the node is assigned to that agent).

use crate::ctx::{find_agent, Ctx};
use crate::duration;
use crate::fail::{exit, Fail};
use crate::output::{agent_ref, clean, now_ms, print, ShortIds};
use crate::resolve;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;
use worknode::{
    Event, EventKind, Filter, Handle, NewEvent, Node, PrincipalKey, RingError, Segment, Start, Status, Wait,
};

/// Options of `wn events`.
#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    /// Start at this sequence number.
    #[arg(long, value_name = "SEQ", conflicts_with = "from_start", value_parser = duration::number(0, u64::MAX, "a ring sequence number"))]
    since: Option<u64>,
    /// Start at the oldest retained event (the default without --follow).
    #[arg(long)]
    from_start: bool,
    /// Keep waiting for new events (from now on, unless --since/--from-start); Ctrl-C ends (exit 0).
    #[arg(long, short)]
    follow: bool,
    /// With --follow: stop following after this long (exit 0), e.g. 30s; 0 to 1d.
    #[arg(long, value_name = "DURATION", value_parser = duration::timeout, requires = "follow")]
    timeout: Option<Duration>,
    #[command(flatten)]
    select: Select,
    /// Stop after this many events (1 to 4294967296).
    #[arg(long, value_name = "N", value_parser = duration::number(1, 1 << 32, "events to print"))]
    limit: Option<u64>,
}

/// Event selection shared by `events` and `wait`.
#[derive(clap::Args, Debug)]
pub struct Select {
    /// Only events of this kind (node_created, task_ready, task_completed, user, 1000, or an application name).
    #[arg(long, value_name = "KIND")]
    kind: Option<String>,
    /// Only events about this node (UUID, unique prefix, or /path).
    #[arg(long, value_name = "NODE")]
    node: Option<String>,
    /// Only events with this topic (application kind name).
    #[arg(long, value_name = "TOPIC")]
    topic: Option<String>,
    /// Only events by this agent.
    #[arg(long, value_name = "AGENT")]
    actor: Option<String>,
    /// Only events after which their node has this status (its record read as the event
    /// is read).
    #[arg(long, value_parser = crate::cmd::nodes::status_parser())]
    status: Option<Status>,
    /// Only events about nodes assigned to this agent (its name) or role (`@role`).
    #[arg(long, value_name = "WHO")]
    assignee: Option<String>,
}

/// Options of `wn emit`.
#[derive(clap::Args, Debug)]
pub struct EmitArgs {
    /// Built-in kind name, a number ≥ 1000, or any other name (an application kind
    /// recorded as `user` with that name as its topic).
    kind: String,
    /// The node the event is about (UUID, unique prefix, or /path).
    #[arg(long, value_name = "NODE")]
    node: Option<String>,
    /// Inline payload (text or JSON), at most 88 bytes.
    #[arg(long, value_name = "TEXT")]
    data: Option<String>,
}

/// Options of `wn wait`.
#[derive(clap::Args, Debug)]
pub struct WaitArgs {
    #[command(flatten)]
    select: Select,
    /// Give up after this long (exit 5), e.g. 30s, 2m; 0 to 1d.
    #[arg(long, value_name = "DURATION", value_parser = duration::timeout, default_value = "30s")]
    timeout: Duration,
    /// Consider events from this sequence on instead of from now (closes the gap between
    /// a failed `claim --next` and the wait).
    #[arg(long, value_name = "SEQ", value_parser = duration::number(0, u64::MAX, "a ring sequence number"))]
    since: Option<u64>,
}

/// A kind argument: the ring kind, plus the topic an application name stands for.
fn parse_kind(s: &str) -> Result<(EventKind, Option<String>), Fail> {
    let names = || EventKind::BUILT_IN.iter().filter_map(|k| k.builtin_name()).collect::<Vec<&str>>().join(", ");
    match EventKind::parse(s) {
        Ok(k) if k.builtin_name().is_some() || k.is_user() => Ok((k, None)),
        Ok(k) => Err(Fail::usage(
            format!("unknown event kind {}: no built-in kind has that code", k.0),
            format!("built-in kinds: {}; application kinds are numbers from 1000 up, or names", names()),
        )),
        Err(_) => {
            // Any other name is an application kind, but one a letter or two from a
            // built-in name is a typo (`task_complete`): waiting for it would only time out.
            if let Some(near) = near_builtin(s) {
                return Err(Fail::usage(
                    format!("unknown event kind {s:?}: did you mean {near:?}?"),
                    format!("built-in kinds: {}; an application kind of that name goes by --topic {s}", names()),
                ));
            }
            if !is_application_name(s) {
                return Err(Fail::usage(
                    format!("unknown event kind {:?}: neither a built-in kind nor an application name", clean(s)),
                    format!(
                        "built-in kinds: {}; an application kind is a number from 1000 up, or a name: a letter, then letters, digits, '_', '-', '.' or ':'",
                        names()
                    ),
                ));
            }
            Ok((EventKind::USER, Some(s.to_string())))
        }
    }
}

/// Whether `s` is a well-formed application kind name: an ASCII letter, then ASCII
/// letters, digits, `_`, `-`, `.` or `:` (its length is the ring's to judge).
fn is_application_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// The built-in kind name within two edits of `s`, if any.
fn near_builtin(s: &str) -> Option<&'static str> {
    EventKind::BUILT_IN.iter().filter_map(|k| k.builtin_name()).find(|name| edit_distance(s, name) <= 2)
}

/// Levenshtein distance, bounded: names longer than 64 bytes are never near.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() > 64 || b.len() > 64 {
        return usize::MAX;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A compiled selection: the ring's filter plus the topic and node-state tests.
struct Selector {
    filter: Filter,
    topic: Option<String>,
    status: Option<Status>,
    assignee: Option<PrincipalKey>,
}

impl Selector {
    fn new(seg: &Segment, s: &Select) -> Result<Selector, Fail> {
        let (kind, kind_topic) = match s.kind.as_deref() {
            Some(k) => {
                let (k, t) = parse_kind(k)?;
                (Some(k), t)
            }
            None => (None, None),
        };
        if let (Some(a), Some(b)) = (&kind_topic, &s.topic) {
            if a != b {
                return Err(Fail::usage(
                    format!("--kind {a} already selects topic {a:?}, which contradicts --topic {b:?}"),
                    "give one of them",
                ));
            }
        }
        let node = match s.node.as_deref() {
            Some(spec) => Some(node_uuid(seg, spec)?),
            None => None,
        };
        let actor = match s.actor.as_deref() {
            Some(name) => Some(seg.agent(find_agent(seg, name)?)?.node),
            None => None,
        };
        let assignee = s.assignee.as_deref().map(crate::ctx::principal).transpose()?.map(|p| p.key());
        Ok(Selector {
            filter: Filter { kind, node, actor },
            topic: kind_topic.or(s.topic.clone()),
            status: s.status,
            assignee,
        })
    }

    /// The tests the ring's filter does not make: the topic, and the state of the
    /// event's node (read now: a node deleted since matches neither).
    fn matches(&self, seg: &Segment, e: &Event) -> bool {
        if self.topic.as_deref().is_some_and(|t| e.topic() != t) {
            return false;
        }
        if self.status.is_none() && self.assignee.is_none() {
            return true;
        }
        let Some(n) = e.node().and_then(|u| seg.lookup(u).ok()).and_then(|h| seg.read(h).ok()) else {
            return false;
        };
        self.status.is_none_or(|s| n.status() == Some(s)) && self.assignee.is_none_or(|a| assigned_to(&n, a))
    }
}

/// Whether `n` is assigned to `who` (an agent's name or a `@role`, by its key): the one
/// place `--assignee` reads the assignment.
fn assigned_to(n: &Node, who: PrincipalKey) -> bool {
    n.assignees().any(|k| k == who)
}

/// A node argument as a UUID: a full UUID is taken as given (events may be about nodes
/// deleted since); other forms are resolved against the live tree.
fn node_uuid(seg: &Segment, spec: &str) -> Result<Uuid, Fail> {
    if let Ok(u) = Uuid::parse_str(spec.trim()) {
        return Ok(u);
    }
    let h = resolve::node(seg, spec)?;
    Ok(seg.read(h)?.uuid())
}

/// One event as a JSON object: the `--json` line format (`event` in
/// `tools/schemas/defs.json`), its actor named by [`agent_ref`].
pub fn event_json(seg: &Segment, e: &Event) -> Value {
    let payload = e.payload();
    let data = match std::str::from_utf8(payload) {
        Ok(s) => serde_json::from_str::<Value>(s).unwrap_or_else(|_| Value::String(s.to_string())),
        Err(_) => Value::String(payload.iter().map(|b| format!("{b:02x}")).collect()),
    };
    json!({
        "seq": e.seq(),
        "hlc": e.hlc().0,
        "time_ms": e.hlc().wall_ms(),
        "kind": e.kind().to_string(),
        "topic": e.topic(),
        "actor": e.actor().map(|a| agent_ref(seg, a)),
        "node": e.node().map(|u| u.to_string()),
        "node_version": e.node_version(),
        "pid": e.pid(),
        "payload": if payload.is_empty() { Value::Null } else { data },
        "origin": e.origin_host(),
    })
}

/// Waits up to `timeout` for the first event from now that one of `kinds` selects (any
/// event when `kinds` is empty), about `node` if given (MCP `wait`).
pub fn wait_any(seg: &Segment, kinds: &[String], node: Option<&str>, timeout: Duration) -> Result<Event, Fail> {
    let select = |kind: Option<&String>| Select {
        kind: kind.cloned(),
        node: node.map(str::to_string),
        topic: None,
        actor: None,
        status: None,
        assignee: None,
    };
    let sels: Vec<Selector> = if kinds.is_empty() {
        vec![Selector::new(seg, &select(None))?]
    } else {
        kinds.iter().map(|k| Selector::new(seg, &select(Some(k)))).collect::<Result<_, _>>()?
    };
    // The ring filters by kind only when there is one; the node is the same for all.
    let filter = Filter { kind: if sels.len() == 1 { sels[0].filter.kind } else { None }, ..sels[0].filter };
    let mut reader = seg.reader(Start::Now).with_filter(filter);
    let deadline = duration::deadline(timeout);
    let timed_out = || {
        Fail::new(
            "timeout",
            exit::TIMEOUT,
            format!("no matching event within {}", duration::format_ms(timeout.as_millis() as u64)),
            "wait longer, or check the kinds (task_ready, task_completed, node_created, …)",
        )
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match reader.next(Wait::Park, left) {
            Ok(e) if sels.iter().any(|s| s.filter.matches(&e) && s.matches(seg, &e)) => return Ok(e),
            Ok(_) | Err(RingError::Lagged { .. }) => {}
            Err(RingError::Timeout) => return Err(timed_out()),
            Err(e) => return Err(e.into()),
        }
        if left.is_zero() {
            return Err(timed_out());
        }
    }
}

/// Formats events for people and for `--json`, naming actors and nodes where it can.
pub struct Printer<'a> {
    seg: &'a Segment,
    json: bool,
    style: crate::output::Style,
    short: ShortIds,
    actors: HashMap<Handle, Option<String>>,
}

impl<'a> Printer<'a> {
    /// A printer for `ctx`'s output mode.
    pub fn new(seg: &'a Segment, ctx: &Ctx) -> Printer<'a> {
        let short = if ctx.json { ShortIds::empty() } else { ShortIds::scan(seg) };
        Printer { seg, json: ctx.json, style: ctx.style, short, actors: HashMap::new() }
    }

    /// A JSON-lines printer, for `wn top --once --json`.
    pub fn json(seg: &'a Segment) -> Printer<'a> {
        Printer { json: true, ..Printer::plain(seg) }
    }

    /// A plain-text printer (no colour, no short-id scan), for `wn top`.
    pub fn plain(seg: &'a Segment) -> Printer<'a> {
        Printer {
            seg,
            json: false,
            style: crate::output::Style { color: false },
            short: ShortIds::empty(),
            actors: HashMap::new(),
        }
    }

    fn actor_name(&mut self, h: Handle) -> Option<String> {
        let seg = self.seg;
        self.actors.entry(h).or_insert_with(|| seg.read(h).ok().map(|n| n.name().to_string())).clone()
    }

    /// One event as one line.
    pub fn line(&mut self, e: &Event) -> String {
        let node_name = e.node().and_then(|u| self.seg.lookup(u).ok()).and_then(|h| self.seg.read(h).ok());
        if self.json {
            let mut v = event_json(self.seg, e);
            v["node_name"] = json!(node_name.as_ref().map(|n| n.name().to_string()));
            return v.to_string();
        }
        let s = &self.style;
        let kind =
            if e.topic().is_empty() { e.kind().to_string() } else { format!("{}:{}", e.kind(), clean(e.topic())) };
        let mut line = format!(
            "{:>7}  {:<8}  {}",
            e.seq(),
            duration::relative(now_ms(), e.hlc().wall_ms()),
            s.bold(&format!("{kind:<15}"))
        );
        if let Some(u) = e.node() {
            let name = node_name.map(|n| format!(" {}", clean(&format!("{:?}", n.name())))).unwrap_or_default();
            line.push_str(&format!("  {}{name} v{}", s.dim(&self.short.of(u)), e.node_version()));
        }
        if let Some(a) = e.actor().and_then(|a| self.actor_name(a)) {
            line.push_str(&format!("  by {}", clean(&a)));
        }
        if let Some(host) = e.origin_host() {
            // Another host's change, replicated here; its time above is that host's HLC.
            line.push_str(&format!("  from host {host}"));
        }
        if !e.payload().is_empty() {
            line.push_str(&format!("  {}", clean(&String::from_utf8_lossy(e.payload()))));
        }
        line
    }
}

/// Reports a non-fatal condition on stderr (as JSON in JSON mode).
fn warn(json: bool, code: &str, message: &str) {
    if json {
        eprintln!("{}", json!({ "warning": message, "code": code }));
    } else {
        eprintln!("wn: warning: {message}");
    }
}

/// Stops a loop on SIGINT or SIGTERM (exit 0: following is ended by the user).
pub fn stop_flag() -> Result<Arc<AtomicBool>, Fail> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| Fail::other(format!("cannot install a signal handler: {e}")))?;
    }
    Ok(stop)
}

/// Prints events; with `--follow` waits for more until Ctrl-C (or `--timeout`).
pub fn run_events(ctx: &Ctx, a: &EventsArgs) -> Result<(), Fail> {
    // Read-write when permitted, so a stuck slot of a dead producer can be repaired.
    let seg = ctx.attach_best()?;
    let sel = Selector::new(&seg, &a.select)?;
    let start = match (a.since, a.from_start, a.follow) {
        (Some(s), _, _) => Start::At(s),
        (None, true, _) | (None, false, false) => Start::Oldest,
        (None, false, true) => Start::Now,
    };
    let mut reader = seg.reader(start).with_filter(sel.filter);
    let mut printer = Printer::new(&seg, ctx);
    let stop = stop_flag()?;
    let deadline = a.timeout.map(duration::deadline);
    let mut out = std::io::stdout().lock();
    let mut printed = 0u64;
    while !stop.load(Ordering::Relaxed) && a.limit.is_none_or(|l| printed < l) {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        let slice = deadline.map_or(Duration::from_millis(200), |d| (d - now).min(Duration::from_millis(200)));
        let got = if a.follow {
            reader.next(Wait::Park, slice)
        } else {
            reader.try_next().and_then(|e| e.ok_or(RingError::Timeout))
        };
        match got {
            Ok(e) if sel.matches(&seg, &e) => {
                if writeln!(out, "{}", printer.line(&e)).is_err() {
                    return Ok(()); // stdout closed (`| head`): not an error
                }
                printed += 1;
            }
            Ok(_) => {}
            Err(RingError::Timeout) if a.follow => {
                let _ = out.flush();
            }
            Err(RingError::Timeout) => break,
            Err(RingError::Lagged { missed, resume_at }) => warn(
                ctx.json,
                "lagged",
                &format!(
                    "lagged: {missed} events were overwritten before they could be read; continuing at {resume_at}"
                ),
            ),
            Err(e) => return Err(Fail::from(e)),
        }
    }
    let _ = out.flush();
    Ok(())
}

/// Appends one event of `kind` (as `wn emit` parses it), about `node`, carrying `data`;
/// returns its sequence number (`wn emit`, `POST /api/events`).
pub fn emit(seg: &Segment, kind: &str, node: Option<&str>, data: &str) -> Result<u64, Fail> {
    let (kind, topic) = parse_kind(kind)?;
    let topic = topic.unwrap_or_default();
    let mut ev = NewEvent::new(kind).topic(&topic).payload(data.as_bytes());
    if let Some(spec) = node {
        let n = seg.read(resolve::node(seg, spec)?)?;
        ev = ev.node(n.uuid(), n.version());
    }
    Ok(seg.append(&ev)?)
}

/// Appends one event and prints its sequence number.
pub fn run_emit(ctx: &Ctx, a: &EmitArgs) -> Result<(), Fail> {
    let seg = ctx.attach_rw()?;
    let seq = emit(&seg, &a.kind, a.node.as_deref(), a.data.as_deref().unwrap_or(""))?;
    if ctx.json {
        crate::output::print_json(&json!({ "seq": seq }))
    } else {
        print(&seq.to_string())
    }
}

/// Waits for the first matching event after now (or after `--since`).
pub fn run_wait(ctx: &Ctx, a: &WaitArgs) -> Result<(), Fail> {
    let seg = ctx.attach_best()?;
    let sel = Selector::new(&seg, &a.select)?;
    let start = a.since.map_or(Start::Now, Start::At);
    let mut reader = seg.reader(start).with_filter(sel.filter);
    let mut printer = Printer::new(&seg, ctx);
    let deadline = duration::deadline(a.timeout);
    let timed_out = || {
        Fail::new(
            "timeout",
            exit::TIMEOUT,
            format!("no matching event within {}", duration::format_ms(a.timeout.as_millis() as u64)),
            "wait longer with --timeout, or check the selection with `wn events`",
        )
    };
    // Bounded by the deadline even while non-matching topics keep arriving.
    while Instant::now() < deadline || a.timeout.is_zero() {
        let left = deadline.saturating_duration_since(Instant::now());
        match reader.next(Wait::Park, left) {
            Ok(e) if sel.matches(&seg, &e) => return print(&printer.line(&e)),
            Ok(_) => {}
            Err(RingError::Timeout) => return Err(timed_out()),
            Err(RingError::Lagged { missed, .. }) => {
                warn(ctx.json, "lagged", &format!("lagged: {missed} events were overwritten before they could be read"))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(timed_out())
}
