//! Event vocabulary: kinds, the copied-out [`Event`], the [`NewEvent`] spec producers
//! fill in, reader-side [`Filter`]s and the ring's errors.

use crate::clock::Hlc;
use crate::layout::{EventRecord, EVENT_PAYLOAD_MAX, EVENT_TOPIC_MAX};
use crate::node::Handle;
use bytemuck::Zeroable;
use uuid::Uuid;

/// What an event reports. Codes below [`EventKind::USER`] are built in; applications
/// use codes from 1000 up (and usually name them with a topic).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct EventKind(pub u32);

macro_rules! kinds {
    ($($(#[$m:meta])* $name:ident = $code:literal => $s:literal),* $(,)?) => {
        impl EventKind {
            $($(#[$m])* pub const $name: EventKind = EventKind($code);)*

            /// Every built-in kind.
            pub const BUILT_IN: &'static [EventKind] = &[$(EventKind::$name),*];

            /// Lower-case name of a built-in kind; `None` for application kinds.
            pub fn builtin_name(self) -> Option<&'static str> {
                match self.0 { $($code => Some($s),)* _ => None }
            }

            /// The kind named `s`: a built-in name, `user` (1000), or a number.
            pub fn parse(s: &str) -> Result<EventKind, String> {
                match s {
                    $($s => Ok(EventKind::$name),)*
                    "user" => Ok(EventKind::USER),
                    _ => s.parse::<u32>().map(EventKind).map_err(|_| {
                        let names: Vec<&str> = vec![$($s),*];
                        format!("unknown event kind {s:?}; use one of {}, `user`, or a number (1000 and up for applications)", names.join(", "))
                    }),
                }
            }
        }
    };
}

kinds! {
    /// A node was added.
    NODE_CREATED = 1 => "node_created",
    /// A node's record changed.
    NODE_UPDATED = 2 => "node_updated",
    /// A node was deleted.
    NODE_DELETED = 3 => "node_deleted",
    /// A task was claimed.
    TASK_CLAIMED = 10 => "task_claimed",
    /// A task completed.
    TASK_COMPLETED = 11 => "task_completed",
    /// A task failed.
    TASK_FAILED = 12 => "task_failed",
    /// A task became blocked.
    TASK_BLOCKED = 13 => "task_blocked",
    /// A claim was released.
    TASK_RELEASED = 14 => "task_released",
    /// A claim's lease expired.
    CLAIM_EXPIRED = 15 => "claim_expired",
    /// A task became ready.
    TASK_READY = 16 => "task_ready",
    /// A task was cancelled (the payload carries the epoch and the reason).
    TASK_CANCELLED = 17 => "task_cancelled",
    /// A finished task was made ready (or blocked) again: a retry.
    TASK_REOPENED = 18 => "task_reopened",
    /// A node was assigned to a principal (the payload names it: `{"assignee":"…"}`).
    TASK_ASSIGNED = 19 => "task_assigned",
    /// A principal was taken off a node's assignees (the payload names it).
    TASK_UNASSIGNED = 29 => "task_unassigned",
    /// An agent joined.
    AGENT_JOINED = 20 => "agent_joined",
    /// An agent left.
    AGENT_LEFT = 21 => "agent_left",
    /// An agent died and was reaped.
    AGENT_LOST = 22 => "agent_lost",
    /// An agent was bound to a session process.
    AGENT_SESSION = 23 => "agent_session",
    /// An element was added to a node's set.
    SET_ADDED = 30 => "set_added",
    /// An element was removed from a node's set.
    SET_REMOVED = 31 => "set_removed",
    /// A remote set state was merged into a node's set.
    SET_MERGED = 32 => "set_merged",
    /// A node's set dropped its tombstones.
    SET_COMPACTED = 33 => "set_compacted",
    /// A message was sent; its node is the message, its payload the recipient's
    /// principal key (8 bytes, little-endian), its actor the sender.
    MESSAGE_SENT = 40 => "message_sent",
    /// A message was acknowledged; its actor is the agent that acknowledged it.
    MESSAGE_ACKED = 41 => "message_acked",
}

impl EventKind {
    /// The first application-defined kind code.
    pub const USER: EventKind = EventKind(1000);

    /// Whether this is an application-defined kind.
    pub fn is_user(self) -> bool {
        self.0 >= Self::USER.0
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.builtin_name() {
            Some(n) => f.write_str(n),
            None if *self == EventKind::USER => f.write_str("user"),
            None => write!(f, "{}", self.0),
        }
    }
}

/// An event as copied out of the ring.
#[derive(Clone, Copy, Debug)]
pub struct Event {
    pub(crate) rec: EventRecord,
}

impl Event {
    /// Ring sequence number: the exact order of events on this host.
    pub fn seq(&self) -> u64 {
        self.rec.seq
    }
    /// Clock value at append.
    pub fn hlc(&self) -> Hlc {
        Hlc(self.rec.hlc)
    }
    /// Kind.
    pub fn kind(&self) -> EventKind {
        EventKind(self.rec.kind)
    }
    /// The acting agent's node, if the producer named one.
    pub fn actor(&self) -> Option<Handle> {
        Handle::from_raw(self.rec.actor)
    }
    /// The node the event is about.
    pub fn node(&self) -> Option<Uuid> {
        let u = Uuid::from_bytes(self.rec.node);
        (!u.is_nil()).then_some(u)
    }
    /// That node's version after the change (0 when none).
    pub fn node_version(&self) -> u64 {
        self.rec.node_version
    }
    /// Pid of the producing process.
    pub fn pid(&self) -> u32 {
        self.rec.pid
    }
    /// The topic (application kind name), possibly empty.
    pub fn topic(&self) -> &str {
        let n = (self.rec.topic_len as usize).min(EVENT_TOPIC_MAX);
        std::str::from_utf8(&self.rec.topic[..n]).unwrap_or("")
    }
    /// The inline payload.
    pub fn payload(&self) -> &[u8] {
        &self.rec.payload[..(self.rec.payload_len as usize).min(EVENT_PAYLOAD_MAX)]
    }
    /// The raw record.
    pub fn record(&self) -> &EventRecord {
        &self.rec
    }
}

/// What to append.
#[derive(Clone, Copy, Debug)]
pub struct NewEvent<'a> {
    /// Kind.
    pub kind: EventKind,
    /// The node it is about, and its version after the change.
    pub node: Option<(Uuid, u64)>,
    /// The acting agent (defaults to the segment's actor, see [`crate::Segment::set_actor`]).
    pub actor: Option<Handle>,
    /// Application kind name, at most 24 bytes.
    pub topic: &'a str,
    /// Inline payload, at most 88 bytes (larger data belongs in a document node).
    pub payload: &'a [u8],
}

impl<'a> NewEvent<'a> {
    /// An event of `kind` with nothing else set.
    pub fn new(kind: EventKind) -> Self {
        NewEvent { kind, node: None, actor: None, topic: "", payload: &[] }
    }
    /// About `node` at `version`.
    pub fn node(mut self, node: Uuid, version: u64) -> Self {
        self.node = Some((node, version));
        self
    }
    /// With an explicit actor.
    pub fn actor(mut self, actor: Handle) -> Self {
        self.actor = Some(actor);
        self
    }
    /// With a topic.
    pub fn topic(mut self, topic: &'a str) -> Self {
        self.topic = topic;
        self
    }
    /// With a payload.
    pub fn payload(mut self, payload: &'a [u8]) -> Self {
        self.payload = payload;
        self
    }

    /// Whether the topic and payload fit a ring slot.
    pub(crate) fn check_limits(&self) -> Result<(), RingError> {
        if self.payload.len() > EVENT_PAYLOAD_MAX {
            return Err(RingError::PayloadTooLarge { len: self.payload.len(), max: EVENT_PAYLOAD_MAX });
        }
        if self.topic.len() > EVENT_TOPIC_MAX {
            return Err(RingError::TopicTooLong { len: self.topic.len(), max: EVENT_TOPIC_MAX });
        }
        Ok(())
    }

    /// Checks the limits and builds the record (sequence number filled in at append).
    pub(crate) fn to_record(self, hlc: Hlc, actor: Option<Handle>, pid: u32) -> Result<EventRecord, RingError> {
        self.check_limits()?;
        let mut r = EventRecord::zeroed();
        r.hlc = hlc.0;
        r.kind = self.kind.0;
        r.actor = self.actor.or(actor).map_or(u64::MAX, Handle::to_raw);
        if let Some((u, v)) = self.node {
            r.node = *u.as_bytes();
            r.node_version = v;
        }
        r.pid = pid;
        r.topic[..self.topic.len()].copy_from_slice(self.topic.as_bytes());
        r.topic_len = self.topic.len() as u8;
        r.payload[..self.payload.len()].copy_from_slice(self.payload);
        r.payload_len = self.payload.len() as u16;
        Ok(r)
    }
}

/// Reader-side selection of events. Unset fields match everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct Filter {
    /// Only this kind.
    pub kind: Option<EventKind>,
    /// Only events about this node.
    pub node: Option<Uuid>,
    /// Only events by this actor.
    pub actor: Option<Handle>,
}

impl Filter {
    /// Whether `e` passes.
    pub fn matches(&self, e: &Event) -> bool {
        self.kind.is_none_or(|k| k == e.kind())
            && self.node.is_none_or(|n| Some(n) == e.node())
            && self.actor.is_none_or(|a| Some(a) == e.actor())
    }
}

/// Why an append or a read did not deliver an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RingError {
    /// The reader fell more than the ring's capacity behind: `missed` events were
    /// overwritten before it read them; it continues at `resume_at`.
    Lagged {
        /// Events skipped, exactly.
        missed: u64,
        /// The sequence number the reader reads next.
        resume_at: u64,
    },
    /// No matching event arrived within the timeout.
    Timeout,
    /// The payload exceeds the inline limit.
    PayloadTooLarge {
        /// Bytes given.
        len: usize,
        /// Bytes allowed.
        max: usize,
    },
    /// The topic exceeds its limit.
    TopicTooLong {
        /// Bytes given.
        len: usize,
        /// Bytes allowed.
        max: usize,
    },
    /// The segment was attached read-only.
    ReadOnly,
    /// The daemon is shutting the segment down: no more appends are accepted.
    Closing,
    /// The daemon that journals this segment is gone: the event would never reach the
    /// disk, so it was not appended.
    DaemonGone,
    /// The token this handle holds (or the lack of one) does not allow the append.
    Denied(crate::grant::Denied),
    /// The broker could not be reached or answered out of protocol.
    Broker(crate::broker::BrokerFault),
    /// A live producer has held the ring slot this append needs for too long.
    Busy {
        /// Its pid.
        holder_pid: u32,
    },
    /// The append was overtaken by the ring repeatedly (producers far outpace it).
    Contended,
    /// Durability is on and the journal fell a whole ring behind: the append waited
    /// (bounded) rather than overwrite an event not yet journaled.
    JournalStalled {
        /// The sequence this append claimed.
        seq: u64,
        /// The journal's cursor.
        journaled: u64,
    },
    /// Under `--fsync always`, the event was appended but not confirmed on disk in time
    /// (or the daemon died): it is in shared memory but may not survive a host restart.
    NotDurable {
        /// The event's sequence.
        seq: u64,
        /// The durable cursor.
        durable: u64,
    },
}

impl std::fmt::Display for RingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use RingError::*;
        match self {
            Lagged { missed, resume_at } => write!(
                f,
                "reader lagged: {missed} events overwritten before it read them, continuing at sequence {resume_at}"
            ),
            Timeout => write!(f, "no matching event before the timeout"),
            PayloadTooLarge { len, max } => write!(f, "event payload is {len} bytes, the inline limit is {max}"),
            TopicTooLong { len, max } => write!(f, "event topic is {len} bytes, the limit is {max}"),
            ReadOnly => write!(f, "segment attached read-only"),
            Closing => write!(f, "the daemon is shutting this segment down and accepts no more events"),
            DaemonGone => write!(f, "the daemon journaling this segment is gone (the event was not appended)"),
            Denied(d) => write!(f, "{d}"),
            Broker(b) => write!(f, "{b}"),
            Busy { holder_pid } => write!(f, "ring slot held by live process {holder_pid} for too long"),
            Contended => write!(f, "the append was overtaken by the ring repeatedly"),
            JournalStalled { seq, journaled } => {
                write!(f, "the journal is a whole ring behind (event {seq}, journaled up to {journaled})")
            }
            NotDurable { seq, durable } => {
                write!(f, "event {seq} appended but not confirmed on disk (durable up to {durable})")
            }
        }
    }
}

impl std::error::Error for RingError {}

/// The longest epoch: `u64::MAX` has 20 digits.
const EPOCH_DIGITS_MAX: usize = 20;
/// Bytes of a task payload around the note: `{"epoch":` + epoch + `,"note":"` + `"}`.
const NOTE_FRAME: usize = 9 + EPOCH_DIGITS_MAX + 9 + 2;
/// The most bytes a note takes in a task event's payload (JSON-escaped: a `"` or `\`
/// takes 2, a control character 2 or 6), whatever the epoch.
pub(crate) const NOTE_PAYLOAD_MAX: usize = EVENT_PAYLOAD_MAX - NOTE_FRAME;

/// `c` as JSON writes it inside a string, into `tmp`.
fn json_char(c: char, tmp: &mut [u8; 6]) -> &[u8] {
    let short = match c {
        '"' => Some(b'"'),
        '\\' => Some(b'\\'),
        '\n' => Some(b'n'),
        '\r' => Some(b'r'),
        '\t' => Some(b't'),
        _ => None,
    };
    if let Some(e) = short {
        tmp[0] = b'\\';
        tmp[1] = e;
        return &tmp[..2];
    }
    if (c as u32) < 0x20 {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        *tmp = [b'\\', b'u', b'0', b'0', HEX[(c as usize) >> 4], HEX[(c as usize) & 15]];
        return &tmp[..];
    }
    c.encode_utf8(&mut tmp[..4]).as_bytes()
}

/// Bytes `note` takes in a task event's payload, JSON-escaped.
pub(crate) fn note_payload_len(note: &str) -> usize {
    let mut tmp = [0u8; 6];
    note.chars().map(|c| json_char(c, &mut tmp).len()).sum()
}

/// Writes the payload of a task event, `{"epoch":E}` or `{"epoch":E,"note":"N"}`, into
/// `buf` and returns its length. The note is JSON-escaped; callers check it against
/// [`NOTE_PAYLOAD_MAX`] first (`claims`), so it always fits whole. (Were it longer, it
/// would be cut at a character boundary rather than overflow.) Nothing is allocated.
/// Bytes `,"percent":100` takes at most: a progress note has that much less room.
pub(crate) const PERCENT_FIELD_MAX: usize = 14;

/// A task event's payload: `{"epoch":E,"note":N}` (no note: `{"epoch":E}`), and for a
/// progress report `{"epoch":E,"percent":P,"note":N}`; always valid JSON within the
/// inline limit (a note that would not fit was refused before, see `claims`).
/// `{"<field>":"<principal>"}` for assignment events; a principal too long to fit once
/// JSON-escaped is named by its key instead: `{"<field>_key":"<16 hex digits>"}`.
pub(crate) fn principal_payload(buf: &mut [u8; EVENT_PAYLOAD_MAX], field: &str, who: &crate::Principal) -> usize {
    use std::io::Write;
    let text = who.to_string();
    let mut tmp = [0u8; 6];
    let escaped: usize = text.chars().map(|c| json_char(c, &mut tmp).len()).sum();
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    if field.len() + escaped + 7 <= EVENT_PAYLOAD_MAX {
        let _ = write!(cur, "{{\"{field}\":\"");
        for c in text.chars() {
            let _ = cur.write_all(json_char(c, &mut tmp));
        }
        let _ = write!(cur, "\"}}");
    } else {
        let _ = write!(cur, "{{\"{field}_key\":\"{:016x}\"}}", who.key().raw());
    }
    cur.position() as usize
}

pub(crate) fn task_payload(buf: &mut [u8; EVENT_PAYLOAD_MAX], epoch: u64, percent: Option<u8>, note: &str) -> usize {
    use std::io::Write;
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cur, "{{\"epoch\":{epoch}");
    if let Some(p) = percent {
        let _ = write!(cur, ",\"percent\":{p}");
    }
    let mut at = cur.position() as usize;
    if !note.is_empty() {
        const OPEN: &[u8] = b",\"note\":\"";
        // Room for the opening, the note, and the closing `"}`.
        let limit = EVENT_PAYLOAD_MAX - 2;
        buf[at..at + OPEN.len()].copy_from_slice(OPEN);
        at += OPEN.len();
        let mut tmp = [0u8; 6];
        for c in note.chars() {
            let esc = json_char(c, &mut tmp);
            if at + esc.len() > limit {
                break;
            }
            buf[at..at + esc.len()].copy_from_slice(esc);
            at += esc.len();
        }
        buf[at] = b'"';
        at += 1;
    }
    buf[at] = b'}';
    at + 1
}

#[cfg(test)]
mod tests {
    use super::{note_payload_len, task_payload, NOTE_PAYLOAD_MAX, PERCENT_FIELD_MAX};

    #[test]
    fn task_payloads_are_valid_json_within_the_inline_limit() {
        let mut buf = [0u8; 88];
        let n = task_payload(&mut buf, 7, None, "");
        assert_eq!(&buf[..n], br#"{"epoch":7}"#);
        let long = "a\"b\\c\n".repeat(40);
        let n = task_payload(&mut buf, u64::MAX, None, &long);
        let s = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(s.starts_with(r#"{"epoch":18446744073709551615,"note":""#) && s.ends_with("\"}"), "{s}");
        assert!(n <= 88);
        let n = task_payload(&mut buf, 1, None, "café ü");
        assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), r#"{"epoch":1,"note":"café ü"}"#);
    }

    #[test]
    fn a_note_within_the_limit_is_stored_whole_and_escaped() {
        assert_eq!(NOTE_PAYLOAD_MAX, 48);
        let mut buf = [0u8; 88];
        let note = "a\"b\\c\nd\u{1b}e";
        assert_eq!(note_payload_len(note), 1 + 2 + 1 + 2 + 1 + 2 + 1 + 6 + 1);
        let n = task_payload(&mut buf, 3, None, note);
        assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), r#"{"epoch":3,"note":"a\"b\\c\nd\u001be"}"#);
        // The longest note, at the longest epoch, fits whole.
        let longest = "é".repeat(NOTE_PAYLOAD_MAX / 2);
        assert_eq!(note_payload_len(&longest), NOTE_PAYLOAD_MAX);
        let n = task_payload(&mut buf, u64::MAX, None, &longest);
        let s = std::str::from_utf8(&buf[..n]).unwrap();
        assert_eq!(s, format!("{{\"epoch\":{},\"note\":\"{longest}\"}}", u64::MAX));
    }

    #[test]
    fn a_progress_payload_carries_the_percentage_and_its_longest_note_whole() {
        let mut buf = [0u8; 88];
        let n = task_payload(&mut buf, 2, Some(40), "");
        assert_eq!(&buf[..n], br#"{"epoch":2,"percent":40}"#);
        let longest = "x".repeat(NOTE_PAYLOAD_MAX - PERCENT_FIELD_MAX);
        let n = task_payload(&mut buf, u64::MAX, Some(100), &longest);
        let s = std::str::from_utf8(&buf[..n]).unwrap();
        assert_eq!(s, format!("{{\"epoch\":{},\"percent\":100,\"note\":\"{longest}\"}}", u64::MAX));
    }
}
