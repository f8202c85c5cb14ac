//! `wn events` (read and follow the event ring) and `wn emit` (append one event).

use crate::fail::Fail;
use serde_json::{json, Value};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;
use worknode::{Access, Event, EventKind, Filter, NewEvent, RingError, Segment, Start, Wait};

/// Options of `wn events`.
#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    /// Start at this sequence number.
    #[arg(long, value_name = "SEQ", conflicts_with = "from_start")]
    since: Option<u64>,
    /// Start at the oldest retained event (the default without --follow).
    #[arg(long)]
    from_start: bool,
    /// Keep waiting for new events (from now on, unless --since/--from-start); Ctrl-C ends.
    #[arg(long, short)]
    follow: bool,
    /// Only events of this kind (node_created, task_claimed, user, 1000, ...).
    #[arg(long, value_name = "KIND", value_parser = EventKind::parse)]
    kind: Option<EventKind>,
    /// Only events about this node (UUID).
    #[arg(long, value_name = "UUID")]
    node: Option<Uuid>,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
}

/// Options of `wn emit`.
#[derive(clap::Args, Debug)]
pub struct EmitArgs {
    /// Built-in kind name, a number ≥ 1000, or any other name (an application kind
    /// recorded as `user` with that name as its topic).
    kind: String,
    /// The node the event is about (UUID).
    #[arg(long, value_name = "UUID")]
    node: Option<Uuid>,
    /// Inline payload (text or JSON), at most 88 bytes.
    #[arg(long, value_name = "TEXT")]
    data: Option<String>,
}

/// One event as a JSON object: the `--json` line format.
pub fn event_json(e: &Event) -> Value {
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
        "actor": e.actor().map(|a| a.to_string()),
        "node": e.node().map(|u| u.to_string()),
        "node_version": e.node_version(),
        "pid": e.pid(),
        "payload": if payload.is_empty() { Value::Null } else { data },
    })
}

fn human(e: &Event) -> String {
    let kind = if e.topic().is_empty() { e.kind().to_string() } else { format!("{}:{}", e.kind(), e.topic()) };
    let node = e.node().map(|u| format!(" node={u} v{}", e.node_version())).unwrap_or_default();
    let payload = if e.payload().is_empty() { String::new() } else { format!(" {}", String::from_utf8_lossy(e.payload())) };
    format!("{:>8} {} {kind}{node} pid={}{payload}", e.seq(), e.hlc(), e.pid())
}

/// Prints events; with `--follow` waits for more until Ctrl-C.
pub fn run_events(segment: &str, as_json: bool, a: &EventsArgs) -> Result<(), Fail> {
    // Read-write when permitted, so a stuck slot of a dead producer can be repaired;
    // read-only otherwise.
    let seg = Segment::attach(segment, Access::ReadWrite).or_else(|_| Segment::attach(segment, Access::ReadOnly))?;
    let start = match (a.since, a.from_start, a.follow) {
        (Some(s), _, _) => Start::At(s),
        (None, true, _) | (None, false, false) => Start::Oldest,
        (None, false, true) => Start::Now,
    };
    let filter = Filter { kind: a.kind, node: a.node, actor: None };
    let mut reader = seg.reader(start).with_filter(filter);
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| Fail::other(format!("cannot install a signal handler: {e}")))?;
    }
    let mut out = std::io::stdout().lock();
    let mut printed = 0u64;
    while !stop.load(Ordering::Relaxed) && a.limit.is_none_or(|l| printed < l) {
        let got = if a.follow { reader.next(Wait::Park, Duration::from_millis(200)) } else { reader.try_next().and_then(|e| e.ok_or(RingError::Timeout)) };
        match got {
            Ok(e) => {
                let line = if as_json { event_json(&e).to_string() } else { human(&e) };
                if writeln!(out, "{line}").is_err() {
                    return Ok(()); // stdout closed (`| head`): not an error
                }
                printed += 1;
            }
            Err(RingError::Timeout) if a.follow => {
                let _ = out.flush();
            }
            Err(RingError::Timeout) => break,
            Err(RingError::Lagged { missed, resume_at }) => {
                eprintln!("wn: warning: lagged: {missed} events were overwritten before they could be read; continuing at {resume_at}");
            }
            Err(e) => return Err(Fail::from(e)),
        }
    }
    let _ = out.flush();
    Ok(())
}

/// Appends one event and prints its sequence number.
pub fn run_emit(segment: &str, as_json: bool, a: &EmitArgs) -> Result<(), Fail> {
    let seg = Segment::attach(segment, Access::ReadWrite)?;
    let (kind, topic) = match EventKind::parse(&a.kind) {
        Ok(k) => (k, ""),
        Err(_) => (EventKind::USER, a.kind.as_str()),
    };
    let data = a.data.as_deref().unwrap_or("");
    let mut ev = NewEvent::new(kind).topic(topic).payload(data.as_bytes());
    if let Some(n) = a.node {
        let version = seg.lookup(n).and_then(|h| seg.read(h)).map(|n| n.version()).unwrap_or(0);
        ev = ev.node(n, version);
    }
    let seq = seg.append(&ev)?;
    if as_json {
        println!("{}", json!({ "seq": seq }));
    } else {
        println!("{seq}");
    }
    Ok(())
}
