//! Node vocabulary: handles, kinds, statuses, the copied-out [`Node`] and the
//! [`NewNode`] spec used to create one.

use crate::clock::Hlc;
use crate::error::PoolError;
use crate::layout::{NodeRecord, DESCRIPTION_MAX, NAME_MAX};
use bytemuck::Zeroable;
use uuid::Uuid;

/// The largest magnitude of a node value: every value is finite and within
/// ±`VALUE_MAX`, so a sum over any pool (at most 2²⁴ nodes) stays finite.
pub const VALUE_MAX: f64 = 1e300;

/// Checks a name (of a node, document, agent or role): no control characters (C0, DEL,
/// C1), which would reach an operator's terminal or split a line of output. Returns the
/// byte offset of the first one found.
pub fn check_name(name: &str) -> Result<(), usize> {
    match name.char_indices().find(|(_, c)| c.is_control()) {
        Some((at, _)) => Err(at),
        None => Ok(()),
    }
}

/// Checks a new node name: not empty, no `/` (which separates path elements, so a name
/// holding one could never be addressed by path), no control character, at most
/// [`NAME_MAX`] bytes.
///
/// # Errors
///
/// [`PoolError::NameEmpty`], [`PoolError::NameHasSlash`], [`PoolError::NameHasControl`],
/// [`PoolError::NameTooLong`].
pub fn check_node_name(name: &str) -> Result<(), PoolError> {
    if name.is_empty() {
        return Err(PoolError::NameEmpty);
    }
    if name.len() > NAME_MAX {
        return Err(PoolError::NameTooLong { len: name.len(), max: NAME_MAX });
    }
    if let Some(at) = name.find('/') {
        return Err(PoolError::NameHasSlash { at });
    }
    check_name(name).map_err(|at| PoolError::NameHasControl { at })
}

/// Checks a node value: finite and within ±[`VALUE_MAX`].
pub fn check_value(value: f64) -> Result<(), PoolError> {
    if value.is_finite() && value.abs() <= VALUE_MAX {
        Ok(())
    } else {
        Err(PoolError::ValueOutOfRange)
    }
}

/// Names a node slot at one generation. A handle to a slot that was freed and reused
/// is refused with [`PoolError::StaleHandle`], never followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Handle {
    /// Slot index.
    pub index: u32,
    /// Slot generation when the handle was made.
    pub generation: u32,
}

impl Handle {
    /// Packs the handle into one word (`generation << 32 | index`).
    pub fn to_raw(self) -> u64 {
        ((self.generation as u64) << 32) | self.index as u64
    }

    /// Unpacks a word made by [`Handle::to_raw`]; `u64::MAX` (no parent) gives `None`.
    pub fn from_raw(raw: u64) -> Option<Handle> {
        (raw != u64::MAX).then_some(Handle { index: raw as u32, generation: (raw >> 32) as u32 })
    }
}

impl std::fmt::Display for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.index, self.generation)
    }
}

macro_rules! code_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $c:literal => $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[repr(u8)]
        pub enum $name { $($(#[$vm])* $v = $c),* }

        impl $name {
            /// Every value, in code order.
            pub const ALL: &'static [$name] = &[$($name::$v),*];

            /// The value stored for this variant in a record.
            pub fn code(self) -> u8 { self as u8 }

            /// The variant stored as `code`, if any.
            pub fn from_code(code: u8) -> Option<$name> {
                match code { $($c => Some($name::$v),)* _ => None }
            }

            /// Lower-case name used by tools and JSON.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s),* }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $name::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    let all: Vec<_> = $name::ALL.iter().map(|v| v.as_str()).collect();
                    format!("unknown {} {s:?}; one of: {}", stringify!($name).to_lowercase(), all.join(", "))
                })
            }
        }
    };
}

code_enum!(
    /// What a node is.
    NodeKind {
        /// A grouping node; the root is one.
        Container = 1 => "container",
        /// A folder of nodes.
        Folder = 2 => "folder",
        /// A project.
        Project = 3 => "project",
        /// A unit of work agents claim.
        Task = 4 => "task",
        /// An artifact with content.
        Document = 5 => "document",
        /// An agent's own node.
        Agent = 6 => "agent",
        /// Application-defined; see [`Node::custom_kind`].
        Custom = 7 => "custom",
        /// A file reservation (under `/reservations`, see `reserve`): not work, never
        /// claimed through the task verbs.
        Reservation = 8 => "reservation",
        /// A message in a mailbox; its body is the node's content (`crate::mail`).
        Message = 9 => "message",
        /// A principal's mailbox under `/mail`, which also registers its name
        /// (`crate::principal`).
        Mailbox = 10 => "mailbox",
        /// A label's registry node, `/labels/<label>` (see `Segment::add_label`).
        Label = 11 => "label",
    }
);

code_enum!(
    /// Lifecycle status of a node.
    Status {
        /// Created, not yet ready to work on.
        Pending = 0 => "pending",
        /// May be claimed.
        Ready = 1 => "ready",
        /// Claimed by an agent.
        Claimed = 2 => "claimed",
        /// Being worked on.
        InProgress = 3 => "in_progress",
        /// Finished successfully.
        Complete = 4 => "complete",
        /// Finished unsuccessfully.
        Failed = 5 => "failed",
        /// Waiting on something else.
        Blocked = 6 => "blocked",
        /// Abandoned.
        Cancelled = 7 => "cancelled",
    }
);

impl Status {
    /// Whether a plain update may move a node from `from` to `to`.
    pub fn plain_update_allows(from: Status, to: Status) -> bool {
        use Status::*;
        matches!(
            (from, to),
            (Pending, Ready) | (Ready, Pending) | (Failed, Ready) | (Pending | Ready | Blocked | Failed, Cancelled)
        )
    }

    /// Whether the status is final (complete or cancelled).
    pub fn is_final(self) -> bool {
        matches!(self, Status::Complete | Status::Cancelled)
    }
}

/// A node as copied out of the segment: a consistent snapshot, owned by the caller.
/// Setters check limits and are used inside [`crate::Segment::update`].
#[derive(Clone, Copy, Debug)]
pub struct Node {
    pub(crate) handle: Handle,
    pub(crate) rec: NodeRecord,
}

fn text(bytes: &[u8], len: usize) -> &str {
    let bytes = &bytes[..len.min(bytes.len())];
    // A foreign or damaged record may hold invalid UTF-8: show the valid prefix.
    match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
    }
}

impl Node {
    /// The handle this snapshot was read through.
    pub fn handle(&self) -> Handle {
        self.handle
    }
    /// The node's UUID.
    pub fn uuid(&self) -> Uuid {
        Uuid::from_bytes(self.rec.uuid)
    }
    /// The node's kind (`None` for a code this build does not know).
    pub fn kind(&self) -> Option<NodeKind> {
        NodeKind::from_code(self.rec.kind)
    }
    /// Application-defined kind number (meaningful for [`NodeKind::Custom`]).
    pub fn custom_kind(&self) -> u32 {
        self.rec.custom_kind
    }
    /// The node's status (`None` for a code this build does not know).
    pub fn status(&self) -> Option<Status> {
        Status::from_code(self.rec.status)
    }
    /// Priority, 0–255.
    pub fn priority(&self) -> u8 {
        self.rec.priority
    }
    /// Progress, 0–100.
    pub fn progress(&self) -> u8 {
        self.rec.progress
    }
    /// Numeric value for pipeline rollups.
    pub fn value(&self) -> f64 {
        self.rec.value
    }
    /// The parent's handle; `None` for the root.
    pub fn parent(&self) -> Option<Handle> {
        Handle::from_raw(self.rec.parent)
    }
    /// The name.
    pub fn name(&self) -> &str {
        text(&self.rec.name, self.rec.name_len as usize)
    }
    /// The inline description.
    pub fn description(&self) -> &str {
        text(&self.rec.description, self.rec.desc_len as usize)
    }
    /// HLC at creation.
    pub fn created(&self) -> Hlc {
        Hlc(self.rec.created)
    }
    /// HLC of the last change.
    pub fn updated(&self) -> Hlc {
        Hlc(self.rec.updated)
    }
    /// 1 at creation, +1 per change.
    pub fn version(&self) -> u64 {
        self.rec.version
    }
    /// The agent slot holding a live claim (`None` when unclaimed or the lease has
    /// expired: an expired claim is not shown as held).
    pub fn claimed_by(&self) -> Option<u16> {
        self.live_claimant_at(crate::clock::unix_ms()).map(|a| a.index)
    }
    /// The agent (slot and generation) holding a live claim at `now_ms` (Unix ms):
    /// `None` when unclaimed or the lease ended by then.
    pub fn live_claimant_at(&self, now_ms: u64) -> Option<crate::AgentId> {
        crate::claims::live_claimant(&self.rec, now_ms)
    }
    /// The agent slot named in the claim, live or expired.
    pub fn claim_agent_raw(&self) -> Option<u16> {
        self.rec.claim_agent.checked_sub(1)
    }
    /// The generation of the agent slot named in the claim.
    pub fn claim_agent_generation(&self) -> u32 {
        self.rec.claim_agent_gen
    }
    /// The task's record: when it last completed, failed or was cancelled (an HLC; `None`:
    /// never).
    pub fn finished_at(&self) -> Option<crate::Hlc> {
        (self.rec.finished_at != 0).then_some(crate::Hlc(self.rec.finished_at))
    }
    /// The agent (its node's UUID) that last completed, failed or cancelled it.
    pub fn finished_by(&self) -> Option<Uuid> {
        (self.rec.finished_by != [0; 16]).then(|| Uuid::from_bytes(self.rec.finished_by))
    }
    /// When progress was last reported (an HLC), if ever.
    pub fn progress_at(&self) -> Option<crate::Hlc> {
        (self.rec.progress_at != 0).then_some(crate::Hlc(self.rec.progress_at))
    }
    /// Claims the task has taken, all told.
    pub fn attempts(&self) -> u16 {
        self.rec.attempts
    }
    /// The last note and the operation that wrote it (`progress`, `complete`, `fail`,
    /// `cancel`), if any.
    pub fn last_note(&self) -> Option<(&'static str, &str)> {
        use crate::layout::note_kind as k;
        let by = match self.rec.note_kind {
            k::PROGRESS => "progress",
            k::COMPLETE => "complete",
            k::FAIL => "fail",
            k::CANCEL => "cancel",
            k::RESERVE => "reserve",
            _ => return None,
        };
        Some((by, text(&self.rec.note, self.rec.note_len as usize)))
    }
    /// The last claimant whose lease lapsed on this task — its agent slot, the slot's
    /// generation, and when the lease ended (Unix ms) — if any.
    pub fn lapsed_claim(&self) -> Option<(u16, u32, u64)> {
        let slot = self.rec.lapsed_agent.checked_sub(1)?;
        Some((slot, self.rec.lapsed_agent_gen, self.rec.lapsed_at_ms))
    }
    /// The current claim's lease length in ms (0: not known).
    pub fn lease_ms(&self) -> u32 {
        self.rec.lease_ms
    }
    /// The fencing epoch of the latest claim (0: never claimed).
    pub fn claim_epoch(&self) -> u64 {
        self.rec.claim_epoch
    }
    /// When the current lease ends, Unix ms (0 when unclaimed).
    pub fn lease_until_ms(&self) -> u64 {
        self.rec.lease_until_ms
    }
    /// Whom the node is assigned to, as keys ([`crate::Segment::principal`] names
    /// them).
    pub fn assignees(&self) -> impl Iterator<Item = crate::PrincipalKey> + '_ {
        self.rec.assignees[..(self.rec.assignee_count as usize).min(crate::layout::ASSIGNEES_MAX)]
            .iter()
            .filter_map(|a| crate::PrincipalKey::from_raw(*a))
    }
    /// Whether an assigned node may be claimed by every agent, not only its assignees.
    pub fn open_to_all(&self) -> bool {
        self.rec.flags & crate::layout::record_flags::OPEN_TO_ALL != 0
    }
    /// Handles of the nodes blocking this one.
    pub fn blocked_by(&self) -> impl Iterator<Item = Handle> + '_ {
        self.rec.blocked_by[..(self.rec.blocker_count as usize).min(crate::layout::BLOCKERS_MAX)]
            .iter()
            .filter_map(|r| Handle::from_raw(*r))
    }
    /// The raw record.
    pub fn record(&self) -> &NodeRecord {
        &self.rec
    }

    /// Renames the node. Refused: more than [`NAME_MAX`] bytes
    /// ([`PoolError::NameTooLong`]), a control character ([`PoolError::NameHasControl`]).
    pub fn set_name(&mut self, name: &str) -> Result<(), PoolError> {
        if name.len() <= NAME_MAX {
            check_name(name).map_err(|at| PoolError::NameHasControl { at })?;
        }
        put_text(&mut self.rec.name, name, NAME_MAX)
            .map(|n| self.rec.name_len = n as u8)
            .map_err(|len| PoolError::NameTooLong { len, max: NAME_MAX })
    }
    /// Replaces the description.
    pub fn set_description(&mut self, desc: &str) -> Result<(), PoolError> {
        put_text(&mut self.rec.description, desc, DESCRIPTION_MAX)
            .map(|n| self.rec.desc_len = n as u16)
            .map_err(|len| PoolError::DescriptionTooLong { len, max: DESCRIPTION_MAX })
    }
    /// Sets the status, if the state machine allows it from a plain update: pending ↔
    /// ready, failed → ready (retry), and anything not yet finished → cancelled. Claimed,
    /// in-progress, complete, failed and blocked are reached only through the claim and
    /// dependency operations, which check claims, epochs and blockers.
    pub fn set_status(&mut self, status: Status) -> Result<(), PoolError> {
        let from = self.status().unwrap_or(Status::Pending);
        if from != status && !Status::plain_update_allows(from, status) {
            return Err(PoolError::IllegalTransition { from, to: status });
        }
        self.rec.status = status.code();
        Ok(())
    }
    /// Sets the priority.
    pub fn set_priority(&mut self, priority: u8) {
        self.rec.priority = priority;
    }
    /// Sets progress in percent (0–100).
    pub fn set_progress(&mut self, progress: u8) -> Result<(), PoolError> {
        if progress > 100 {
            return Err(PoolError::ProgressOutOfRange { value: progress });
        }
        self.rec.progress = progress;
        Ok(())
    }
    /// Sets the numeric value; NaN, an infinity or a magnitude beyond [`VALUE_MAX`] is
    /// refused ([`PoolError::ValueOutOfRange`]).
    pub fn set_value(&mut self, value: f64) -> Result<(), PoolError> {
        check_value(value)?;
        self.rec.value = value;
        Ok(())
    }
}

/// Copies `text` into `buf` (zero-filling the rest); `Err(len)` if it does not fit.
fn put_text(buf: &mut [u8], text: &str, max: usize) -> Result<usize, usize> {
    let bytes = text.as_bytes();
    if bytes.len() > max.min(buf.len()) {
        return Err(bytes.len());
    }
    buf.fill(0);
    buf[..bytes.len()].copy_from_slice(bytes);
    Ok(bytes.len())
}

/// What to create: kind and name, plus optional fields.
#[derive(Clone, Debug)]
pub struct NewNode<'a> {
    /// Kind of node.
    pub kind: NodeKind,
    /// Application kind number for [`NodeKind::Custom`].
    pub custom_kind: u32,
    /// Name, at most 64 bytes.
    pub name: &'a str,
    /// Inline description, at most 256 bytes.
    pub description: &'a str,
    /// Initial status.
    pub status: Status,
    /// Priority.
    pub priority: u8,
    /// Numeric value.
    pub value: f64,
}

impl<'a> NewNode<'a> {
    /// A node of `kind` named `name`, status pending, everything else zero.
    pub fn new(kind: NodeKind, name: &'a str) -> Self {
        NewNode { kind, custom_kind: 0, name, description: "", status: Status::Pending, priority: 0, value: 0.0 }
    }
    /// With a description.
    pub fn description(mut self, d: &'a str) -> Self {
        self.description = d;
        self
    }
    /// With a status.
    pub fn status(mut self, s: Status) -> Self {
        self.status = s;
        self
    }
    /// With a priority.
    pub fn priority(mut self, p: u8) -> Self {
        self.priority = p;
        self
    }
    /// With a value.
    pub fn value(mut self, v: f64) -> Self {
        self.value = v;
        self
    }
    /// With an application kind number.
    pub fn custom_kind(mut self, k: u32) -> Self {
        self.custom_kind = k;
        self
    }

    /// Builds the initial record, checking every limit.
    pub(crate) fn to_record(&self, uuid: Uuid, parent: Option<Handle>, now: Hlc) -> Result<NodeRecord, PoolError> {
        let mut node = Node { handle: Handle { index: 0, generation: 0 }, rec: NodeRecord::zeroed() };
        node.set_name(self.name)?;
        node.set_description(self.description)?;
        node.set_value(self.value)?;
        let r = &mut node.rec;
        r.uuid = *uuid.as_bytes();
        r.parent = parent.map_or(u64::MAX, Handle::to_raw);
        r.created = now.0;
        r.updated = now.0;
        r.version = 1;
        r.custom_kind = self.custom_kind;
        r.kind = self.kind.code();
        r.status = self.status.code();
        r.priority = self.priority;
        Ok(node.rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_enforced_exactly() {
        let now = Hlc(1);
        let ok = "n".repeat(NAME_MAX);
        assert!(NewNode::new(NodeKind::Task, &ok).to_record(Uuid::nil(), None, now).is_ok());
        let long = "n".repeat(NAME_MAX + 1);
        let e = NewNode::new(NodeKind::Task, &long).to_record(Uuid::nil(), None, now).unwrap_err();
        assert_eq!(e, PoolError::NameTooLong { len: 65, max: 64 });
        let d = "d".repeat(DESCRIPTION_MAX + 1);
        let e = NewNode::new(NodeKind::Task, "x").description(&d).to_record(Uuid::nil(), None, now).unwrap_err();
        assert!(matches!(e, PoolError::DescriptionTooLong { .. }));
    }

    #[test]
    fn control_characters_and_unbounded_values_are_refused() {
        let now = Hlc(1);
        for (name, at) in [("\u{1b}]0;pwned\u{7}", 0), ("a\nb", 1), ("ok\u{7f}", 2), ("é\u{85}", 2)] {
            let e = NewNode::new(NodeKind::Task, name).to_record(Uuid::nil(), None, now).unwrap_err();
            assert_eq!(e, PoolError::NameHasControl { at }, "{name:?}");
        }
        assert!(NewNode::new(NodeKind::Task, "tab\u{200b}ok ü").to_record(Uuid::nil(), None, now).is_ok());
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e301, -1e301] {
            let e = NewNode::new(NodeKind::Task, "v").value(v).to_record(Uuid::nil(), None, now).unwrap_err();
            assert_eq!(e, PoolError::ValueOutOfRange, "{v}");
        }
        let ok = NewNode::new(NodeKind::Task, "v").value(-VALUE_MAX).to_record(Uuid::nil(), None, now).unwrap();
        assert_eq!(ok.value, -VALUE_MAX);
        let mut n = Node { handle: Handle { index: 0, generation: 1 }, rec: ok };
        assert_eq!(n.set_value(f64::NAN), Err(PoolError::ValueOutOfRange));
        assert_eq!(n.set_name("x\ty"), Err(PoolError::NameHasControl { at: 1 }));
        assert_eq!(n.rec.value, -VALUE_MAX);
    }

    #[test]
    fn codes_round_trip_and_parse() {
        for k in NodeKind::ALL {
            assert_eq!(NodeKind::from_code(k.code()), Some(*k));
            assert_eq!(k.as_str().parse::<NodeKind>().unwrap(), *k);
        }
        assert!("nope".parse::<Status>().unwrap_err().contains("in_progress"));
        let h = Handle { index: 3, generation: 9 };
        assert_eq!(Handle::from_raw(h.to_raw()), Some(h));
        assert_eq!(Handle::from_raw(u64::MAX), None);
    }

    #[test]
    fn invalid_utf8_in_a_record_shows_the_valid_prefix() {
        let mut rec = NodeRecord::zeroed();
        rec.name[..3].copy_from_slice(&[b'o', b'k', 0xff]);
        rec.name_len = 3;
        let n = Node { handle: Handle { index: 0, generation: 1 }, rec };
        assert_eq!(n.name(), "ok");
    }
}
