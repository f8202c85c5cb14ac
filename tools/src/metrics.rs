//! The segment's operating metrics in the Prometheus text exposition format (version
//! 0.0.4): what `wn metrics` prints and what an HTTP front end serves at `/metrics`.
//!
//! [`render`] reads one segment through the agent handle (a read-only attach is
//! enough) and appends every metric family to a `String`; it does no I/O of its own,
//! so the CLI prints it (for node_exporter's textfile collector, say) and a server
//! sends it. Every family has its `# HELP` and `# TYPE` lines and all its samples
//! together; counters end in `_total`; label values are escaped as the format says
//! (`\\`, `\"`, `\n`).
//!
//! What it shows, and where each number comes from:
//! * usage against capacity of the node pool, id index, blob arena, set slots, agent
//!   table, event ring and mailboxes (header words; mailboxes from the `/mail`
//!   registry, [`Segment::mailbox_usage`]);
//! * tasks by status (one scan of the pool's summary words, as `wn stat` does);
//! * reader lag: each agent's recorded event cursor behind the ring's tail, the
//!   journal's cursor (events appended, not yet journaled) and its durable cursor
//!   (appended, not yet on disk);
//! * the journal's fsync latency, as a summary (`_sum` and `_count`) from the counter
//!   pair its thread adds to after every group commit;
//! * counters: nodes created/updated/deleted, events appended, ring slots abandoned,
//!   claims made, leases expired, agents lost.
//!
//! Bounded: one sample per region, status and agent, and at most [`MAILBOX_SERIES`]
//! mailboxes (the fullest; the totals cover every one).

use std::fmt::Write;
use worknode::{Durability, MailboxUsage, NodeKind, Segment, SegmentState, Status};

/// Mailboxes shown one by one (the fullest first); the totals count all of them.
pub const MAILBOX_SERIES: usize = 64;

/// The content type of [`render`]'s output, for an HTTP `Content-Type` header.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric's kind, its `# TYPE`.
#[derive(Clone, Copy)]
enum Kind {
    Gauge,
    Counter,
    Summary,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Summary => "summary",
        }
    }
}

/// Writes families into a `String`: the `# HELP`/`# TYPE` header once, then samples.
struct Out<'a> {
    buf: &'a mut String,
}

impl Out<'_> {
    /// Starts family `name` (writing to a `String` cannot fail).
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = writeln!(self.buf, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.buf, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample of the family just started; `name` may carry a suffix (`_sum`).
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.buf.push_str(name);
        if !labels.is_empty() {
            self.buf.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.buf.push(',');
                }
                let _ = write!(self.buf, "{k}=\"{}\"", escape_label(v));
            }
            self.buf.push('}');
        }
        self.buf.push(' ');
        push_value(self.buf, value);
        self.buf.push('\n');
    }

    /// A family with one unlabelled sample.
    fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// A sample value: integers exactly (up to 2^53, beyond which f64 rounds anyway),
/// others in Rust's shortest round-trip form, and the format's spellings of the
/// non-finite values.
fn push_value(buf: &mut String, v: f64) {
    if v.is_nan() {
        buf.push_str("NaN");
    } else if v.is_infinite() {
        buf.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 9.007_199_254_740_992e15 {
        let _ = write!(buf, "{}", v as i64);
    } else {
        let _ = write!(buf, "{v}");
    }
}

/// A label value escaped as the text format requires: backslash, double quote and
/// line feed.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Help text escaped as the format requires (backslash and line feed).
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn policy_name(d: Durability) -> &'static str {
    match d {
        Durability::Off => "off",
        Durability::Never => "never",
        Durability::Batch => "batch",
        Durability::Always => "always",
    }
}

/// Appends the segment's metrics to `out` in the Prometheus text format (see the
/// module doc for what they are). Reads only; O(nodes + mail) for the task counts and
/// the mailboxes, like `wn stat`; never fails: what cannot be read now (a mailbox
/// list mid-change) is left out of this scrape.
pub fn render(seg: &Segment, out: &mut String) {
    let mut o = Out { buf: out };
    let info = seg.inspect().info();
    let caps = seg.capacities();
    let region = |name: &str| info.regions.iter().find(|r| r.name == name).copied().unwrap_or_default();
    let f = |n: u64| n as f64;

    // The segment and its daemon.
    o.family("worknode_info", Kind::Gauge, "The segment: its name, layout version and daemon boot id (always 1).");
    o.sample(
        "worknode_info",
        &[
            ("segment", &info.name),
            ("layout_version", &info.layout_version.to_string()),
            ("boot_id", &info.boot_id.to_string()),
        ],
        1.0,
    );
    o.family("worknode_segment_state", Kind::Gauge, "1 for the segment's lifecycle state, 0 for the others.");
    for (name, st) in [
        ("initializing", SegmentState::Initializing),
        ("ready", SegmentState::Ready),
        ("closing", SegmentState::Closing),
    ] {
        o.sample("worknode_segment_state", &[("state", name)], if info.state == st { 1.0 } else { 0.0 });
    }
    o.single(
        "worknode_daemon_up",
        Kind::Gauge,
        "1 while the daemon process the segment names runs.",
        if info.daemon_alive { 1.0 } else { 0.0 },
    );
    o.single(
        "worknode_daemon_start_time_seconds",
        Kind::Gauge,
        "When the daemon instance started, Unix seconds.",
        info.daemon_started_ms as f64 / 1000.0,
    );
    o.single(
        "worknode_daemon_adoptions_total",
        Kind::Counter,
        "Times a restarted daemon adopted the segment.",
        f(info.adopt_count),
    );

    // Usage against capacity.
    let nodes = region("nodes");
    o.single("worknode_pool_nodes_used", Kind::Gauge, "Live nodes in the node pool.", f(nodes.used));
    o.single("worknode_pool_nodes_capacity", Kind::Gauge, "Node slots in the pool.", f(nodes.capacity));
    let index = region("index");
    o.single("worknode_index_entries_used", Kind::Gauge, "Live entries in the id index.", f(index.used));
    o.single("worknode_index_entries_capacity", Kind::Gauge, "Entries the id index holds.", f(index.capacity));
    o.single("worknode_index_tombstones", Kind::Gauge, "Tombstones in the id index.", f(info.index_tombstones));
    let blobs = region("blobs");
    o.single("worknode_arena_chunks_used", Kind::Gauge, "Blob arena chunks in use (document contents).", f(blobs.used));
    o.single("worknode_arena_chunks_capacity", Kind::Gauge, "Blob arena chunks.", f(blobs.capacity));
    o.single("worknode_arena_chunk_bytes", Kind::Gauge, "Payload bytes of one blob arena chunk.", f(blobs.elem_size));
    let sets = region("sets");
    o.single("worknode_sets_used", Kind::Gauge, "Observed-remove set slots in use.", f(sets.used));
    o.single("worknode_sets_capacity", Kind::Gauge, "Observed-remove set slots.", f(sets.capacity));
    let agents_region = region("agents");
    o.single("worknode_agents_used", Kind::Gauge, "Agents joined.", f(agents_region.used));
    o.single("worknode_agents_capacity", Kind::Gauge, "Agent table slots.", f(agents_region.capacity));

    // The ring.
    let ring = seg.ring_counters();
    o.single(
        "worknode_ring_events_appended_total",
        Kind::Counter,
        "Events appended to the ring (its tail sequence).",
        f(ring.tail),
    );
    o.single("worknode_ring_capacity", Kind::Gauge, "Event ring slots (events retained).", f(ring.capacity));
    o.single(
        "worknode_ring_used",
        Kind::Gauge,
        "Ring slots holding an event (the capacity once the ring has wrapped).",
        f(ring.tail.min(ring.capacity)),
    );
    o.single(
        "worknode_ring_abandoned_total",
        Kind::Counter,
        "Ring slots marked abandoned after their producer died.",
        f(ring.abandoned),
    );
    o.single(
        "worknode_ring_wakes_total",
        Kind::Counter,
        "FUTEX_WAKE calls producers made for parked readers.",
        f(ring.wakes),
    );
    o.single("worknode_ring_parked_readers", Kind::Gauge, "Readers parked on the ring's futex now.", f(ring.waiters));

    // Mail.
    let mut boxes: Vec<MailboxUsage> = Vec::new();
    let mail_ok = seg.mailbox_usage(&mut boxes).is_ok();
    if mail_ok {
        o.single(
            "worknode_mail_messages",
            Kind::Gauge,
            "Messages held in all mailboxes together (acknowledged ones included).",
            f(boxes.iter().map(|b| b.messages).sum()),
        );
    }
    o.single(
        "worknode_mail_capacity",
        Kind::Gauge,
        "Messages all mailboxes together may hold.",
        f(seg.mail_capacity()),
    );
    o.single("worknode_mailbox_capacity", Kind::Gauge, "Messages one mailbox holds.", f(seg.mailbox_capacity()));
    if mail_ok {
        o.single("worknode_mailboxes", Kind::Gauge, "Mailboxes (registered principals).", f(boxes.len() as u64));
        // The fullest first, so a bounded list shows the ones that matter.
        boxes.sort_by(|a, b| b.messages.cmp(&a.messages).then_with(|| a.principal.cmp(&b.principal)));
        boxes.truncate(MAILBOX_SERIES);
        o.family("worknode_mailbox_messages", Kind::Gauge, "Messages one mailbox holds (the fullest 64 mailboxes).");
        for b in &boxes {
            o.sample("worknode_mailbox_messages", &[("principal", &b.principal)], f(b.messages));
        }
        o.family("worknode_mailbox_unread", Kind::Gauge, "Unread messages in one mailbox (the fullest 64 mailboxes).");
        for b in &boxes {
            o.sample("worknode_mailbox_unread", &[("principal", &b.principal)], f(b.unread));
        }
    }

    // Tasks by status and live claims by agent slot, from one scan of the pool.
    let mut tasks = [0u64; 8];
    let mut held = vec![0u64; caps.agents as usize];
    let _ = seg.for_each_node(|n| {
        if let (Some(NodeKind::Task), Some(s)) = (n.kind(), n.status()) {
            tasks[s.code() as usize] += 1;
        }
        if let Some(slot) = held.get_mut(n.claimed_by().map_or(usize::MAX, usize::from)) {
            *slot += 1;
        }
        true
    });
    o.family("worknode_tasks", Kind::Gauge, "Tasks by status.");
    for st in Status::ALL {
        o.sample("worknode_tasks", &[("status", st.as_str())], f(tasks[st.code() as usize]));
    }

    // Agents: what each holds and how far behind the tail its recorded cursor is.
    let mut agents = Vec::new();
    seg.agents(&mut agents);
    o.family("worknode_agent_claims", Kind::Gauge, "Nodes an agent holds a live claim on.");
    for a in &agents {
        o.sample(
            "worknode_agent_claims",
            &[("agent", &a.name)],
            f(held.get(a.id.index as usize).copied().unwrap_or(0)),
        );
    }
    o.family(
        "worknode_agent_cursor_lag_events",
        Kind::Gauge,
        "Events appended since the cursor an agent recorded (set at join, moved by set_agent_cursor).",
    );
    for a in &agents {
        o.sample("worknode_agent_cursor_lag_events", &[("agent", &a.name)], f(ring.tail.saturating_sub(a.cursor)));
    }
    o.family("worknode_agent_heartbeat_age_seconds", Kind::Gauge, "Seconds since an agent's last sign of life.");
    let now = crate::output::now_ms();
    for a in &agents {
        o.sample(
            "worknode_agent_heartbeat_age_seconds",
            &[("agent", &a.name)],
            now.saturating_sub(a.heartbeat_ms) as f64 / 1000.0,
        );
    }

    // The journal.
    let policy = seg.durability();
    o.family("worknode_journal_policy", Kind::Gauge, "1 for the daemon's fsync policy, 0 for the others.");
    for d in [Durability::Off, Durability::Never, Durability::Batch, Durability::Always] {
        o.sample("worknode_journal_policy", &[("policy", policy_name(d))], if d == policy { 1.0 } else { 0.0 });
    }
    if policy != Durability::Off {
        // Loaded after the tail, so neither difference can go negative by a race (the
        // cursors only rise, and never past the tail).
        let journaled = seg.journal_cursor();
        let durable = seg.durable_cursor();
        o.single(
            "worknode_journal_lag_events",
            Kind::Gauge,
            "Events appended to the ring that the journal has not written yet.",
            f(ring.tail.saturating_sub(journaled)),
        );
        o.single(
            "worknode_journal_durable_lag_events",
            Kind::Gauge,
            "Events appended to the ring that are not yet on disk (appended minus durable sequence).",
            f(ring.tail.saturating_sub(durable)),
        );
        o.single(
            "worknode_journal_heartbeat_age_seconds",
            Kind::Gauge,
            "Seconds since the journal's last heartbeat.",
            now.saturating_sub(seg.journal_heartbeat().wall_ms()) as f64 / 1000.0,
        );
    }
    o.family("worknode_journal_fsync_seconds", Kind::Summary, "Time the journal's group-commit fsyncs took.");
    o.sample("worknode_journal_fsync_seconds_sum", &[], info.journal_fsync_ns as f64 / 1e9);
    o.sample("worknode_journal_fsync_seconds_count", &[], f(info.journal_fsyncs));

    // Counters.
    o.single("worknode_nodes_created_total", Kind::Counter, "Nodes created.", f(info.nodes_created));
    o.single("worknode_nodes_updated_total", Kind::Counter, "Node updates.", f(info.nodes_updated));
    o.single("worknode_nodes_deleted_total", Kind::Counter, "Nodes deleted.", f(info.nodes_deleted));
    o.single(
        "worknode_claims_total",
        Kind::Counter,
        "Claims made (lapsed claims taken over included).",
        f(info.claims_made),
    );
    o.single(
        "worknode_leases_expired_total",
        Kind::Counter,
        "Claims whose lease lapsed: released by the daemon or taken over by another agent.",
        f(info.leases_expired),
    );
    o.single(
        "worknode_agents_lost_total",
        Kind::Counter,
        "Agents reaped because their session process died.",
        f(info.agents_lost),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("two\nlines"), "two\\nlines");
        assert_eq!(escape_label("plain-é"), "plain-é");
    }

    #[test]
    fn values_print_as_the_format_spells_them() {
        let mut s = String::new();
        for v in [0.0, 42.0, 0.25, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e20] {
            push_value(&mut s, v);
            s.push(' ');
        }
        assert_eq!(s, "0 42 0.25 NaN +Inf -Inf 100000000000000000000 ");
    }
}
