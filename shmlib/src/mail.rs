//! Messages between agents: bounded mailboxes in the segment, one node per message, its
//! body in the blob arena — journaled, kept across a host restart and across the death
//! of the agents that sent or receive it.
//!
//! # Protocol
//!
//! *Where mail lives.* A principal's mailbox is its registry node `/mail/<principal>`
//! (`crate::principal`): `/mail/writer` for the agent `writer`, `/mail/@tester` for the
//! role `tester`. Sending registers the recipient, so mail to an agent that has not
//! joined is simply held in its mailbox until it does. Mailboxes are not under
//! `/agents`, so the reaper never removes them: an agent killed with `SIGKILL` keeps its
//! mail and finds it when it joins again under its name.
//!
//! *A message* is a child node of kind [`NodeKind::Message`] of the mailbox:
//! * name: its id, 12 hex digits from a fresh UUIDv7's random bits (unique among the
//!   mailbox's children: sibling names are unique, a collision is drawn again);
//! * description: the metadata, exactly `from=<sender>` and, when it has one, a second
//!   line `thread=<thread>` (no other form is accepted back: [`MailError::Damaged`]);
//! * content: the body, up to [`MESSAGE_MAX`] bytes, in the blob arena (as a document's
//!   content: CRC-32C checked, copied out whole or not at all);
//! * status: pending while it is being sent, ready = unread, complete = acknowledged;
//! * created: the HLC it was sent at; the child order is the order of sending.
//!
//! *Sending* (`Segment::send`) checks everything it can before it changes anything (the
//! body's length, the thread's text, the token's `message` right, the sender's
//! identity), registers the recipient, makes room, stores the body (a full arena creates
//! nothing), adds the node (pending), attaches the body (ready) and appends
//! [`EventKind::MESSAGE_SENT`] about the message, its payload the recipient's
//! [`crate::PrincipalKey`] (8 bytes, little-endian) and its actor the sender's node. A
//! step that fails after the node exists deletes the node again: a failed send leaves
//! no half message.
//!
//! *The bound.* A mailbox holds at most [`Segment::mailbox_capacity`] messages
//! (`min(MAILBOX_MAX, nodes / 8)`), and all mailboxes together at most
//! [`Segment::mail_capacity`] (a quarter of the pool, [`MailError::MailFull`]), so mail
//! to many names cannot take the pool either. When a mailbox
//! is full, acknowledged messages are removed oldest first to make room; if all are
//! unread the send is refused with [`MailError::MailboxFull`], nothing created — never a
//! silent drop. A message left pending by a sender killed mid-send (its body is freed
//! by the daemon's reclaim sweep, as any unattached content) is never listed, and a full
//! mailbox removes it once it is older than [`PENDING_STALE`]. (Concurrent senders each
//! check the count before they add: the bound can be passed by at most the number of
//! sends in flight at once.)
//!
//! *Reading* (`Segment::inbox`, `Segment::read_message`) is lock-free copying and
//! changes nothing: a message stays unread until its reader acknowledges it
//! (`Segment::ack`), which moves it ready → complete under the node's lock, so of two
//! acks exactly one succeeds and the other is told [`MailError::AlreadyAcked`].
//!
//! *Role mail* is one shared mailbox: every agent of role `tester` sees `/mail/@tester`
//! in its inbox beside its own mailbox, and the first ack removes the message from all
//! their inboxes (queue semantics: one of them handles it).
//!
//! *Waiting* (`Segment::wait_for_mail`) opens a ring reader at the current tail first,
//! then looks for unread mail, and only then parks on the ring's futex for a
//! `message_sent` event whose payload is one of its keys: a message sent after the look
//! is an event after the reader's start, so none is missed, and a waiter is woken only
//! by the ring's one shared futex (no busy loop, bounded by the timeout).

use crate::agents::{AgentError, AgentId};
use crate::blob::DocError;
use crate::clock::Hlc;
use crate::error::PoolError;
use crate::event::{EventKind, NewEvent, RingError};
use crate::node::{Handle, NewNode, NodeKind, Status};
use crate::pool::{Change, DeleteMode};
use crate::principal::{Principal, PrincipalKey};
use crate::ring::{Start, Wait};
use crate::segment::Segment;
use crate::token::Right;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The largest message body, in bytes.
pub const MESSAGE_MAX: usize = 64 * 1024;
/// The most messages one mailbox holds (less in a small pool: [`Segment::mailbox_capacity`]).
pub const MAILBOX_MAX: u64 = 1000;
/// Acknowledged messages a mailbox keeps for `inbox --all`; an ack purges the oldest
/// beyond this, so a busy mailbox stays short (its lists are walked by every inbox).
pub const ACKED_KEPT: usize = 32;
/// The longest thread id, in bytes.
pub const THREAD_MAX: usize = 64;
/// How long a message may stay pending (between its node and its body, microseconds in
/// a live send) before a full mailbox treats it as the husk of a send whose process died
/// and removes it. A sender stalled longer than this finds its message gone and is told
/// so; its body is freed.
pub const PENDING_STALE: Duration = Duration::from_secs(60);
/// Hex digits of a message id.
const ID_DIGITS: usize = 12;
/// Draws of a fresh id before giving up (a collision of 48 random bits is already rare).
const ID_ATTEMPTS: u32 = 4;

/// Why a mail operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MailError {
    /// The body is longer than [`MESSAGE_MAX`].
    TooLarge {
        /// Bytes given.
        len: usize,
        /// Bytes allowed.
        max: usize,
    },
    /// The thread id is longer than [`THREAD_MAX`].
    ThreadTooLong {
        /// Bytes given.
        len: usize,
        /// Bytes allowed.
        max: usize,
    },
    /// The thread id holds a control character at this byte.
    ThreadHasControl {
        /// Byte offset.
        at: usize,
    },
    /// The recipient's mailbox holds its capacity of unread messages.
    MailboxFull {
        /// Messages a mailbox holds.
        capacity: u64,
    },
    /// All mailboxes together hold the share of the node pool mail may take
    /// ([`Segment::mail_capacity`]): mail never crowds out the board.
    MailFull {
        /// Messages all mailboxes together hold.
        capacity: u64,
    },
    /// No message has this id (in any mailbox), or it is still being sent.
    NotFound,
    /// The node is not a message.
    NotAMessage,
    /// The message was acknowledged already.
    AlreadyAcked,
    /// The message is in a mailbox that is neither the agent's nor its role's.
    NotYours,
    /// No unread mail arrived within the timeout.
    Timeout,
    /// A message's metadata is not in the form sending writes.
    Damaged {
        /// What is wrong (not carried over the broker's wire, as [`PoolError::Corrupt`]).
        #[serde(skip, default = "crate::broker::seen_by_broker")]
        what: &'static str,
    },
    /// The sender or reader is not a live agent.
    Agent(AgentError),
    /// Storing or copying the body failed (a full blob arena, a body that kept changing).
    Doc(DocError),
    /// Reading the event ring while waiting failed.
    Ring(RingError),
    /// A node operation failed.
    Pool(PoolError),
}

impl From<PoolError> for MailError {
    fn from(e: PoolError) -> Self {
        MailError::Pool(e)
    }
}

impl From<AgentError> for MailError {
    fn from(e: AgentError) -> Self {
        MailError::Agent(e)
    }
}

impl From<DocError> for MailError {
    fn from(e: DocError) -> Self {
        match e {
            DocError::Pool(p) => MailError::Pool(p),
            e => MailError::Doc(e),
        }
    }
}

impl std::fmt::Display for MailError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use MailError::*;
        match self {
            TooLarge { len, max } => write!(f, "message body is {len} bytes, the limit is {max}"),
            ThreadTooLong { len, max } => write!(f, "thread id is {len} bytes, the limit is {max}"),
            ThreadHasControl { at } => write!(f, "thread id has a control character at byte {at}"),
            MailboxFull { capacity } => write!(f, "mailbox full: it holds {capacity} unread messages"),
            MailFull { capacity } => write!(f, "all mailboxes together hold their {capacity} messages"),
            NotFound => write!(f, "no such message"),
            NotAMessage => write!(f, "the node is not a message"),
            AlreadyAcked => write!(f, "message already acknowledged"),
            NotYours => write!(f, "the message is for another agent"),
            Timeout => write!(f, "no new mail within the timeout"),
            Damaged { what } => write!(f, "damaged message: {what}"),
            Agent(e) => write!(f, "{e}"),
            Doc(e) => write!(f, "{e}"),
            Ring(e) => write!(f, "{e}"),
            Pool(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for MailError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MailError::Agent(e) => Some(e),
            MailError::Doc(e) => Some(e),
            MailError::Ring(e) => Some(e),
            MailError::Pool(e) => Some(e),
            _ => None,
        }
    }
}

/// One mailbox's fill, as listed by [`Segment::mailbox_usage`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxUsage {
    /// Whose mailbox: an agent's name, or `@role`.
    pub principal: String,
    /// Messages it holds, acknowledged ones included: what [`Segment::mailbox_capacity`]
    /// bounds.
    pub messages: u64,
    /// Of those, unread.
    pub unread: u64,
}

/// A message's metadata, as listed by [`Segment::inbox`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageInfo {
    /// Its node.
    pub handle: Handle,
    /// Its node's UUID.
    pub uuid: Uuid,
    /// Its id (unique in its mailbox): what `ack` is given.
    pub id: String,
    /// Whose mailbox it is in.
    pub to: Principal,
    /// The sending agent's name.
    pub from: String,
    /// The thread it belongs to, if the sender named one.
    pub thread: Option<String>,
    /// When it was sent.
    pub sent: Hlc,
    /// Body length in bytes.
    pub len: usize,
    /// Whether it was acknowledged.
    pub acked: bool,
}

/// A message copied out: its metadata and its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Metadata.
    pub info: MessageInfo,
    /// The body.
    pub body: Vec<u8>,
}

/// The metadata text kept in a message's description.
fn metadata(from: &str, thread: Option<&str>) -> String {
    match thread {
        Some(t) => format!("from={from}\nthread={t}"),
        None => format!("from={from}"),
    }
}

/// Parses [`metadata`] back: sender and thread.
fn parse_metadata(text: &str) -> Result<(String, Option<String>), MailError> {
    let mut lines = text.split('\n');
    let from = lines
        .next()
        .and_then(|l| l.strip_prefix("from="))
        .filter(|f| !f.is_empty())
        .ok_or(MailError::Damaged { what: "no from= line" })?;
    let thread = match lines.next() {
        None => None,
        Some(l) => Some(
            l.strip_prefix("thread=")
                .filter(|t| !t.is_empty())
                .ok_or(MailError::Damaged { what: "bad thread= line" })?,
        ),
    };
    if lines.next().is_some() {
        return Err(MailError::Damaged { what: "extra metadata lines" });
    }
    Ok((from.to_string(), thread.map(str::to_string)))
}

/// Checks a thread id: `None` for none (or empty).
fn check_thread(thread: Option<&str>) -> Result<Option<&str>, MailError> {
    let Some(t) = thread.filter(|t| !t.is_empty()) else { return Ok(None) };
    if t.len() > THREAD_MAX {
        return Err(MailError::ThreadTooLong { len: t.len(), max: THREAD_MAX });
    }
    crate::node::check_name(t).map_err(|at| MailError::ThreadHasControl { at })?;
    Ok(Some(t))
}

/// A fresh message id: the last hex digits of a UUIDv7 (its random bits).
fn fresh_id() -> String {
    let hex = Uuid::now_v7().simple().to_string();
    hex[hex.len() - ID_DIGITS..].to_string()
}

impl Segment {
    /// How many messages one mailbox holds: [`MAILBOX_MAX`], or an eighth of the node
    /// pool if that is less (at least 1).
    pub fn mailbox_capacity(&self) -> u64 {
        MAILBOX_MAX.min((self.caps.nodes as u64 / 8).max(1))
    }

    /// How many messages all mailboxes together may hold: a quarter of the node pool,
    /// so mail to many names (misspelled ones included) never crowds out the board.
    pub fn mail_capacity(&self) -> u64 {
        (self.caps.nodes as u64 / 4).max(1)
    }

    /// Refuses a send when all mailboxes together hold [`Segment::mail_capacity`]
    /// messages. O(mailboxes): one child count per mailbox.
    fn check_mail_share(&self) -> Result<(), MailError> {
        let capacity = self.mail_capacity();
        let mail = self.mail_container()?;
        let mut boxes = Vec::new();
        self.children(mail, &mut boxes)?;
        let held: u64 = boxes.iter().map(|b| self.child_count(*b).unwrap_or(0)).sum();
        if held >= capacity {
            return Err(MailError::MailFull { capacity });
        }
        Ok(())
    }

    /// Sends `body` from agent `from` to `to` (an agent, joined or not, or every agent
    /// of a role), in `thread` if given; returns the message's node. The sender is the
    /// agent `from` names (under a token, it must be the token's agent). See the module
    /// doc for the steps; a failed send leaves no message behind.
    ///
    /// # Errors
    ///
    /// Nothing is created on error, except with [`PoolError::EventNotAppended`].
    ///
    /// * [`MailError::TooLarge`]: a body over [`MESSAGE_MAX`];
    ///   [`MailError::ThreadTooLong`] / [`MailError::ThreadHasControl`]: a bad thread id.
    /// * [`MailError::MailboxFull`]: the mailbox holds its capacity of unread messages.
    /// * [`MailError::MailFull`]: all mailboxes together hold [`Segment::mail_capacity`].
    /// * [`MailError::Doc`] with [`DocError::ArenaFull`]: no room for the body now.
    /// * [`MailError::Agent`]: `from` is not a live agent.
    /// * [`MailError::Pool`]: with [`PoolError::Denied`], the token lacks `message` or
    ///   names another agent; a full pool; a segment that takes no writes; with
    ///   [`PoolError::EventNotAppended`], the message was sent but its `message_sent`
    ///   event is missing.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{MailError, Principal, MESSAGE_MAX};
    /// # let name = format!("doc-send-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 64, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let writer = seg.join("writer", "author")?;
    /// let reviewer = Principal::parse("reviewer")?; // has not joined: the mail is held
    /// seg.send(writer, &reviewer, Some("draft-1"), b"please review")?;
    ///
    /// let too_big = vec![b'x'; MESSAGE_MAX + 1];
    /// let refused = seg.send(writer, &reviewer, None, &too_big);
    /// assert!(matches!(refused, Err(MailError::TooLarge { .. })));
    ///
    /// let me = seg.join("reviewer", "qa")?;
    /// let mut mail = Vec::new();
    /// seg.inbox(me, false, &mut mail)?;
    /// assert_eq!((mail.len(), mail[0].from.as_str()), (1, "writer"));
    /// assert_eq!(seg.read_message(mail[0].handle)?.body, b"please review");
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send(&self, from: AgentId, to: &Principal, thread: Option<&str>, body: &[u8]) -> Result<Handle, MailError> {
        if body.len() > MESSAGE_MAX {
            return Err(MailError::TooLarge { len: body.len(), max: MESSAGE_MAX });
        }
        let thread = check_thread(thread)?;
        if let Some(link) = self.link() {
            return link.ask_handle(crate::broker::Request::Send {
                from,
                to: to.clone(),
                thread: thread.map(str::to_string),
                body: body.to_vec(),
            });
        }
        // A system write under the `message` right, wherever the token's subtree is.
        self.permit_uuid(Right::Message, None).map_err(PoolError::from)?;
        self.permit_agent(from).map_err(PoolError::from)?;
        self.require_writable()?;
        let sender = self.agent(from)?;
        let meta = metadata(&sender.name, thread);
        let mailbox = self.register_principal(to)?;
        self.make_room(mailbox)?;
        self.check_mail_share()?;
        let blob = self.alloc_blob(body)?;
        crate::failpoint::hit("mail.allocated");
        let mut made = Err(MailError::NotFound);
        for _ in 0..ID_ATTEMPTS {
            let id = fresh_id();
            match self.add_node(mailbox, &NewNode::new(NodeKind::Message, &id).description(&meta)) {
                Err(PoolError::NameTaken { .. }) => continue,
                r => {
                    made = r.map_err(MailError::from);
                    break;
                }
            }
        }
        let msg = match made {
            Ok(h) => {
                crate::failpoint::hit("mail.added");
                h
            }
            Err(e) => {
                let _ = self.free_blob(blob.raw);
                return Err(e);
            }
        };
        let version = match self.attach_content(msg, &meta, blob, true) {
            Ok(v) => v,
            Err(e @ DocError::Pool(PoolError::EventNotAppended { .. })) => return Err(e.into()),
            Err(e) => {
                let _ = self.delete_node(msg, DeleteMode::LeafOnly);
                return Err(e.into());
            }
        };
        let uuid = self.read(msg)?.uuid();
        let key = to.key().raw().to_le_bytes();
        let ev = NewEvent::new(EventKind::MESSAGE_SENT).node(uuid, version).actor(sender.node).payload(&key);
        self.append_unchecked(&ev).map_err(|error| PoolError::EventNotAppended { error, node: msg })?;
        Ok(msg)
    }

    /// Makes room in `mailbox` for one more message: removes acknowledged messages, and
    /// the husks of sends cut short (pending for longer than [`PENDING_STALE`]), oldest
    /// first while it is full.
    fn make_room(&self, mailbox: Handle) -> Result<(), MailError> {
        let capacity = self.mailbox_capacity();
        if self.child_count(mailbox)? < capacity {
            return Ok(());
        }
        let mut kids = Vec::new();
        self.children(mailbox, &mut kids)?;
        let mut count = kids.len() as u64;
        for h in kids {
            if count < capacity {
                break;
            }
            let now = crate::clock::unix_ms();
            let purgeable = self.read(h).is_ok_and(|n| match n.status() {
                Some(Status::Complete) => true,
                Some(Status::Pending) => now.saturating_sub(n.created().wall_ms()) > PENDING_STALE.as_millis() as u64,
                _ => false,
            });
            if purgeable && self.delete_node(h, DeleteMode::LeafOnly).is_ok() {
                count -= 1;
            }
        }
        if count < capacity {
            Ok(())
        } else {
            Err(MailError::MailboxFull { capacity })
        }
    }

    /// The mailboxes agent `agent` reads: its own, then its role's (those that exist).
    fn mailboxes_of(&self, agent: AgentId) -> Result<Vec<(Principal, Handle)>, MailError> {
        let info = self.agent(agent)?;
        let mut whose = vec![Principal::Agent(info.name)];
        if !info.role.is_empty() {
            whose.push(Principal::Role(info.role));
        }
        let mut out = Vec::new();
        for p in whose {
            if let Some(h) = self.mailbox(&p)? {
                out.push((p, h));
            }
        }
        Ok(out)
    }

    /// The metadata of message `h`, in mailbox `to`; `None` for one still being sent.
    fn message_info(&self, h: Handle, to: &Principal) -> Result<Option<MessageInfo>, MailError> {
        let n = self.read(h)?;
        if n.kind() != Some(NodeKind::Message) {
            return Err(MailError::NotAMessage);
        }
        let acked = match n.status() {
            Some(Status::Ready) => false,
            Some(Status::Complete) => true,
            _ => return Ok(None),
        };
        let (from, thread) = parse_metadata(n.description())?;
        Ok(Some(MessageInfo {
            handle: h,
            uuid: n.uuid(),
            id: n.name().to_string(),
            to: to.clone(),
            from,
            thread,
            sent: n.created(),
            len: n.record().doc_len as usize,
            acked,
        }))
    }

    /// Lists agent `agent`'s mail into `out` (cleared first): its own mailbox and its
    /// role's, unread messages only unless `include_acked`, oldest first. Changes
    /// nothing: reading does not acknowledge.
    ///
    /// # Errors
    ///
    /// * [`MailError::Agent`]: `agent` is not a live agent.
    /// * [`MailError::Damaged`]: a message's metadata is damaged.
    /// * [`MailError::Pool`]: a child list could not be read ([`PoolError::Contended`],
    ///   [`PoolError::Corrupt`]).
    pub fn inbox(&self, agent: AgentId, include_acked: bool, out: &mut Vec<MessageInfo>) -> Result<(), MailError> {
        out.clear();
        let mut kids = Vec::new();
        for (who, mailbox) in self.mailboxes_of(agent)? {
            self.children(mailbox, &mut kids)?;
            for &h in &kids {
                // Acknowledged mail is skipped on the slot's summary word, without a
                // record copy: a mailbox full of read mail lists its unread in O(1)
                // record reads.
                if !include_acked
                    && self
                        .slot_summary(h.index)
                        .is_some_and(|(live, sum)| live == h && sum.status() == Status::Complete.code())
                {
                    continue;
                }
                match self.message_info(h, &who) {
                    Ok(Some(m)) if include_acked || !m.acked => out.push(m),
                    Ok(_) => {}
                    // Acknowledged and purged, or removed, since the list was copied.
                    Err(MailError::Pool(PoolError::StaleHandle | PoolError::NotFound)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        out.sort_by_key(|m| (m.sent, m.uuid));
        Ok(())
    }

    /// Whether agent `agent` has unread mail.
    ///
    /// # Errors
    ///
    /// As [`Segment::inbox`].
    pub fn has_unread_mail(&self, agent: AgentId) -> Result<bool, MailError> {
        let mut out = Vec::new();
        self.inbox(agent, false, &mut out)?;
        Ok(!out.is_empty())
    }

    /// Copies message `h` out: its metadata and its whole body.
    ///
    /// # Errors
    ///
    /// * [`MailError::NotAMessage`]: `h` is another kind of node.
    /// * [`MailError::NotFound`]: the message is still being sent; with
    ///   [`MailError::Pool`] and [`PoolError::StaleHandle`]: it was removed.
    /// * [`MailError::Damaged`]: its metadata or its place is damaged; [`MailError::Doc`]:
    ///   its body kept changing or fails its checksum.
    pub fn read_message(&self, h: Handle) -> Result<Message, MailError> {
        let n = self.read(h)?;
        if n.kind() != Some(NodeKind::Message) {
            return Err(MailError::NotAMessage);
        }
        let mailbox = n.parent().ok_or(MailError::Damaged { what: "a message without a mailbox" })?;
        let to = Principal::parse(self.read(mailbox)?.name())
            .map_err(|_| MailError::Damaged { what: "a message outside a mailbox" })?;
        let info = self.message_info(h, &to)?.ok_or(MailError::NotFound)?;
        let mut body = Vec::new();
        self.get_document(h, &mut body)?;
        Ok(Message { info, body })
    }

    /// Every mailbox's fill into `out` (cleared first), in registry order: for
    /// operators (`wn metrics`), beside [`Segment::mailbox_capacity`] and
    /// [`Segment::mail_capacity`]. Reads only (a read-only attach is enough); O(mail):
    /// one summary word per message, no record copies.
    ///
    /// # Errors
    ///
    /// [`MailError::Pool`]: a child list could not be read ([`PoolError::Contended`],
    /// [`PoolError::Corrupt`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::Principal;
    /// # let name = format!("doc-mailbox_usage-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 64, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let lead = seg.join("lead", "")?;
    /// let msg = seg.send(lead, &Principal::parse("worker")?, None, b"start")?;
    /// let mut boxes = Vec::new();
    /// seg.mailbox_usage(&mut boxes)?;
    /// let worker = boxes.iter().find(|b| b.principal == "worker").unwrap();
    /// assert_eq!((worker.messages, worker.unread), (1, 1));
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn mailbox_usage(&self, out: &mut Vec<MailboxUsage>) -> Result<(), MailError> {
        out.clear();
        let Some(mail) = self.child_named(self.root(), crate::principal::MAIL_CONTAINER)? else {
            return Ok(());
        };
        let (mut boxes, mut kids) = (Vec::new(), Vec::new());
        self.children(mail, &mut boxes)?;
        for mailbox in boxes {
            let principal = match self.read(mailbox) {
                Ok(n) => n.name().to_string(),
                // Removed since the list was copied.
                Err(PoolError::StaleHandle | PoolError::NotFound) => continue,
                Err(e) => return Err(e.into()),
            };
            match self.children(mailbox, &mut kids) {
                Ok(()) => {}
                Err(PoolError::StaleHandle | PoolError::NotFound) => continue,
                Err(e) => return Err(e.into()),
            }
            let unread = kids
                .iter()
                .filter(|h| {
                    self.slot_summary(h.index)
                        .is_some_and(|(live, sum)| live == **h && sum.status() == Status::Ready.code())
                })
                .count() as u64;
            out.push(MailboxUsage { principal, messages: kids.len() as u64, unread });
        }
        Ok(())
    }

    /// The message with id `id`: looked for in agent `agent`'s mailboxes first, then in
    /// every other mailbox (so that acking someone else's message is told
    /// [`MailError::NotYours`], not [`MailError::NotFound`]).
    ///
    /// # Errors
    ///
    /// [`MailError::NotFound`]: no mailbox holds a message with this id;
    /// [`MailError::Agent`]: `agent` is not a live agent; [`MailError::Pool`]: a child
    /// list could not be read.
    pub fn find_message(&self, agent: AgentId, id: &str) -> Result<Handle, MailError> {
        let mine = self.mailboxes_of(agent)?;
        for (_, mailbox) in &mine {
            if let Some(h) = self.child_named(*mailbox, id)? {
                return Ok(h);
            }
        }
        let Some(mail) = self.child_named(self.root(), crate::principal::MAIL_CONTAINER)? else {
            return Err(MailError::NotFound);
        };
        let mut boxes = Vec::new();
        self.children(mail, &mut boxes)?;
        for mailbox in boxes {
            if let Some(h) = self.child_named(mailbox, id)? {
                return Ok(h);
            }
        }
        Err(MailError::NotFound)
    }

    /// Acknowledges message `h` as agent `agent`: it is no longer unread, for anyone
    /// (a role's message is acknowledged for every agent of the role). Appends
    /// [`EventKind::MESSAGE_ACKED`].
    ///
    /// # Errors
    ///
    /// Nothing is changed on error.
    ///
    /// * [`MailError::AlreadyAcked`]: it was acknowledged before (by anyone).
    /// * [`MailError::NotYours`]: it is in neither `agent`'s mailbox nor its role's.
    /// * [`MailError::NotAMessage`], [`MailError::NotFound`] (still being sent),
    ///   [`MailError::Agent`], [`MailError::Pool`] (a token without `message`, a removed
    ///   message, a segment that takes no writes).
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{MailError, Principal};
    /// # let name = format!("doc-ack-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 64, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let lead = seg.join("lead", "")?;
    /// let (a, b) = (seg.join("a", "tester")?, seg.join("b", "tester")?);
    /// let msg = seg.send(lead, &Principal::parse("@tester")?, None, b"run the suite")?;
    /// seg.ack(a, msg)?; // the first ack takes it for the role
    /// assert_eq!(seg.ack(b, msg), Err(MailError::AlreadyAcked));
    /// assert_eq!(seg.ack(lead, msg), Err(MailError::NotYours));
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ack(&self, agent: AgentId, h: Handle) -> Result<(), MailError> {
        if let Some(link) = self.link() {
            return link.ask_unit(crate::broker::Request::Ack { agent, message: h });
        }
        self.permit_uuid(Right::Message, None).map_err(PoolError::from)?;
        self.permit_agent(agent).map_err(PoolError::from)?;
        let n = self.read(h)?;
        if n.kind() != Some(NodeKind::Message) {
            return Err(MailError::NotAMessage);
        }
        let mine = self.mailboxes_of(agent)?;
        if !mine.iter().any(|(_, m)| Some(*m) == n.parent()) {
            return Err(MailError::NotYours);
        }
        let actor = self.agent(agent)?.node;
        self.modify(h, Change::new(EventKind::MESSAGE_ACKED).by(Some(actor)), |rec| {
            match Status::from_code(rec.status) {
                Some(Status::Ready) => {
                    rec.status = Status::Complete.code();
                    Ok(())
                }
                Some(Status::Complete) => Err(MailError::AlreadyAcked),
                _ => Err(MailError::NotFound),
            }
        })?;
        if let Some(mailbox) = n.parent() {
            self.purge_acked_beyond(mailbox, ACKED_KEPT);
        }
        Ok(())
    }

    /// Deletes the oldest acknowledged messages of `mailbox` beyond the newest `keep`
    /// (best effort: one that cannot be deleted now goes at a later ack). Acked mail is
    /// found on the slots' summary words, without record copies.
    fn purge_acked_beyond(&self, mailbox: Handle, keep: usize) {
        let mut kids = Vec::new();
        if self.children(mailbox, &mut kids).is_err() {
            return;
        }
        let acked: Vec<Handle> = kids
            .into_iter()
            .filter(|h| {
                self.slot_summary(h.index)
                    .is_some_and(|(live, sum)| live == *h && sum.status() == Status::Complete.code())
            })
            .collect();
        for h in acked.iter().take(acked.len().saturating_sub(keep)) {
            let _ = self.delete_node(*h, DeleteMode::LeafOnly);
        }
    }

    /// Returns once agent `agent` has unread mail (at once if it has some now), waiting
    /// up to `timeout` on the event ring's futex for a `message_sent` to one of its
    /// mailboxes (see the module doc).
    ///
    /// # Errors
    ///
    /// [`MailError::Timeout`]: no unread mail within `timeout`; the errors of
    /// [`Segment::inbox`].
    pub fn wait_for_mail(&self, agent: AgentId, timeout: Duration) -> Result<(), MailError> {
        let deadline = crate::sys::deadline(Instant::now(), timeout);
        let keys: Vec<PrincipalKey> = self.keys_of(agent)?.into_iter().flatten().collect();
        // Opened before the look, so a message sent after it is an event the reader sees.
        let filter = crate::Filter { kind: Some(EventKind::MESSAGE_SENT), ..crate::Filter::default() };
        let mut reader = self.reader(Start::Now).with_filter(filter);
        if self.has_unread_mail(agent)? {
            return Ok(());
        }
        // Bounded: each pass waits (the ring's default: a 50 µs spin window, then the
        // futex) until an event, the deadline, or a lap.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match reader.next(Wait::SpinThenPark, left) {
                Ok(e) => {
                    let to = e.payload().try_into().ok().map(u64::from_le_bytes).and_then(PrincipalKey::from_raw);
                    if to.is_some_and(|k| keys.contains(&k)) && self.has_unread_mail(agent)? {
                        return Ok(());
                    }
                }
                Err(RingError::Timeout) => return Err(MailError::Timeout),
                // Lapped: what was missed may have been for us.
                Err(RingError::Lagged { .. }) => {
                    if self.has_unread_mail(agent)? {
                        return Ok(());
                    }
                }
                Err(e) => return Err(MailError::Ring(e)),
            }
            if Instant::now() >= deadline {
                return Err(MailError::Timeout);
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::testing::{temp_segment, TempSegment};
    use crate::Capacities;

    fn seg(tag: &str, nodes: u32) -> TempSegment {
        let caps = Capacities { nodes, events: 256, agents: 8, blob_chunks: 64, sets: 1, ..Capacities::default() };
        temp_segment(&format!("mail-{tag}"), &caps)
    }

    fn to(text: &str) -> Principal {
        Principal::parse(text).unwrap()
    }

    #[test]
    fn metadata_round_trips_and_damage_is_typed() {
        assert_eq!(parse_metadata(&metadata("w", None)).unwrap(), ("w".into(), None));
        assert_eq!(parse_metadata(&metadata("w", Some("t-1"))).unwrap(), ("w".into(), Some("t-1".into())));
        for bad in ["", "to=w", "from=", "from=w\nthred=x", "from=w\nthread=", "from=w\nthread=x\nmore"] {
            assert!(matches!(parse_metadata(bad), Err(MailError::Damaged { .. })), "{bad:?}");
        }
    }

    #[test]
    fn acking_keeps_only_the_newest_acknowledged_mail() {
        let s = seg("acked-kept", 512);
        let w = s.join("writer", "").unwrap();
        let r = s.join("reader", "").unwrap();
        let n = ACKED_KEPT + 8;
        for i in 0..n {
            let m = s.send(w, &to("reader"), None, format!("m{i}").as_bytes()).unwrap();
            s.ack(r, m).unwrap();
        }
        let unread = s.send(w, &to("reader"), None, b"unread").unwrap();
        let mut all = Vec::new();
        s.inbox(r, true, &mut all).unwrap();
        assert_eq!(all.len(), ACKED_KEPT + 1, "the kept acknowledged mail and the unread one");
        let bodies: Vec<Vec<u8>> = all.iter().map(|m| s.read_message(m.handle).unwrap().body).collect();
        assert_eq!(bodies[0], format!("m{}", n - ACKED_KEPT).into_bytes(), "the oldest went first");
        assert_eq!(all.last().unwrap().handle, unread);
        s.inbox(r, false, &mut all).unwrap();
        assert_eq!(all.len(), 1);
    }

    #[test]
    fn send_read_ack_round_trip_and_ordering() {
        let s = seg("round", 64);
        let w = s.join("writer", "author").unwrap();
        let r = s.join("reader", "qa").unwrap();
        let body = vec![7u8; MESSAGE_MAX];
        let first = s.send(w, &to("reader"), Some("t1"), b"one").unwrap();
        let second = s.send(w, &to("reader"), None, &body).unwrap();
        let mut mail = Vec::new();
        s.inbox(r, false, &mut mail).unwrap();
        assert_eq!(mail.iter().map(|m| m.handle).collect::<Vec<_>>(), [first, second]);
        assert_eq!((mail[0].thread.as_deref(), mail[0].len, mail[1].len), (Some("t1"), 3, MESSAGE_MAX));
        assert_eq!(s.read_message(second).unwrap().body, body);
        // Reading acknowledged nothing.
        s.inbox(r, false, &mut mail).unwrap();
        assert_eq!(mail.len(), 2);
        assert_eq!(s.find_message(r, &mail[0].id).unwrap(), first);
        s.ack(r, first).unwrap();
        assert_eq!(s.ack(r, first), Err(MailError::AlreadyAcked));
        assert_eq!(s.ack(w, second), Err(MailError::NotYours));
        s.inbox(r, false, &mut mail).unwrap();
        assert_eq!(mail.len(), 1);
        s.inbox(r, true, &mut mail).unwrap();
        assert_eq!(mail.iter().map(|m| m.acked).collect::<Vec<_>>(), [true, false]);
        assert_eq!(s.find_message(r, "000000000000"), Err(MailError::NotFound));
    }

    #[test]
    fn bad_input_changes_nothing() {
        let s = seg("bad", 64);
        let w = s.join("writer", "").unwrap();
        let used = s.free_slots().unwrap();
        let big = vec![0u8; MESSAGE_MAX + 1];
        assert_eq!(
            s.send(w, &to("x"), None, &big),
            Err(MailError::TooLarge { len: MESSAGE_MAX + 1, max: MESSAGE_MAX })
        );
        let long = "t".repeat(THREAD_MAX + 1);
        assert!(matches!(s.send(w, &to("x"), Some(&long), b""), Err(MailError::ThreadTooLong { .. })));
        assert_eq!(s.send(w, &to("x"), Some("a\nb"), b""), Err(MailError::ThreadHasControl { at: 1 }));
        assert_eq!(s.free_slots().unwrap(), used, "no mailbox was registered");
        assert!(s.mailbox(&to("x")).unwrap().is_none());
    }

    #[test]
    fn all_mailboxes_together_take_at_most_a_quarter_of_the_pool() {
        let s = seg("share", 32); // 4 per mailbox, 8 in all
        assert_eq!(s.mail_capacity(), 8);
        let w = s.join("writer", "").unwrap();
        for name in ["a", "b"] {
            for i in 0..4u8 {
                s.send(w, &to(name), None, &[i]).unwrap();
            }
        }
        let used = s.free_slots().unwrap();
        assert_eq!(s.send(w, &to("a"), None, b"x"), Err(MailError::MailboxFull { capacity: 4 }));
        assert_eq!(s.send(w, &to("c"), None, b"x"), Err(MailError::MailFull { capacity: 8 }));
        assert_eq!(s.free_slots().unwrap(), used - 1, "only the third mailbox was registered");
    }

    #[test]
    fn a_full_mailbox_purges_acked_mail_and_refuses_unread() {
        let s = seg("full", 32); // capacity 4
        assert_eq!(s.mailbox_capacity(), 4);
        let w = s.join("writer", "").unwrap();
        let r = s.join("reader", "").unwrap();
        let sent: Vec<Handle> = (0..4).map(|i| s.send(w, &to("reader"), None, &[i]).unwrap()).collect();
        let used = s.free_slots().unwrap();
        assert_eq!(s.send(w, &to("reader"), None, b"x"), Err(MailError::MailboxFull { capacity: 4 }));
        assert_eq!(s.free_slots().unwrap(), used);
        s.ack(r, sent[1]).unwrap();
        s.send(w, &to("reader"), None, b"y").unwrap();
        assert!(s.read(sent[1]).is_err(), "the acked message made room");
        let mut mail = Vec::new();
        s.inbox(r, true, &mut mail).unwrap();
        assert_eq!(mail.len(), 4);
    }

    #[test]
    fn a_full_arena_creates_nothing() {
        let caps = Capacities { nodes: 64, events: 256, agents: 4, blob_chunks: 2, sets: 1, ..Capacities::default() };
        let s = temp_segment("mail-arena", &caps);
        let w = s.join("writer", "").unwrap();
        let body = vec![1u8; s.max_document_len()];
        s.send(w, &to("r"), None, &body[..MESSAGE_MAX.min(body.len())]).unwrap();
        let mb = s.mailbox(&to("r")).unwrap().unwrap();
        let refused = s.send(w, &to("r"), None, &body[..MESSAGE_MAX.min(body.len())]);
        assert!(matches!(refused, Err(MailError::Doc(DocError::ArenaFull { .. }))), "{refused:?}");
        assert_eq!(s.child_count(mb).unwrap(), 1);
    }

    #[test]
    fn a_waiter_is_woken_by_mail_for_it_and_times_out_otherwise() {
        let s = seg("wait", 64);
        let w = s.join("writer", "").unwrap();
        let r = s.join("reader", "qa").unwrap();
        assert_eq!(s.wait_for_mail(r, Duration::from_millis(20)), Err(MailError::Timeout));
        s.send(w, &to("someone"), None, b"not for r").unwrap();
        assert_eq!(s.wait_for_mail(r, Duration::from_millis(20)), Err(MailError::Timeout));
        std::thread::scope(|sc| {
            let waiter = sc.spawn(|| s.wait_for_mail(r, Duration::from_secs(30)));
            // Whether the waiter is parked yet or not, the send wakes or precedes it.
            s.send(w, &to("@qa"), None, b"for the role").unwrap();
            assert_eq!(waiter.join().unwrap(), Ok(()));
        });
        assert_eq!(s.wait_for_mail(r, Duration::ZERO), Ok(()), "unread mail returns at once");
    }

    #[test]
    fn messages_cannot_be_claimed() {
        let s = seg("claim", 64);
        let w = s.join("writer", "").unwrap();
        let m = s.send(w, &to("writer"), None, b"note").unwrap();
        let got = s.claim(m, w, Duration::from_secs(5));
        assert!(matches!(got, Err(crate::TaskError::NotATask { kind: Some(NodeKind::Message) })), "{got:?}");
    }
}
