//! Tasks: the status state machine, claims with leases and fencing epochs, assignees,
//! dependencies, the ready list and `claim_next`, the loop every worker runs.
//!
//! # Claims cannot race
//!
//! A claim is made under the task's writer lock (a compare-and-set of its owner word,
//! see `ownerlock`): the process that wins the lock checks the status, the blockers and
//! any existing claim, then publishes the claimed record. Of any number of racing agents
//! exactly one sees the task ready; the others see it claimed and get
//! [`TaskError::AlreadyClaimed`]. The record holds the claim (agent slot, epoch, lease
//! expiry), so every reader sees claim and status together in one snapshot.
//!
//! # Leases and fencing
//!
//! A claim carries a lease (`lease_until_ms`, wall clock). It is judged at every read:
//! an expired claim is not shown as held ([`crate::Node::claimed_by`]), may be taken over
//! by another claim, and is released by the daemon's reaper with a `claim_expired`
//! event. Every claim increments the task's fencing epoch; every later write by the
//! claimant presents its [`Claim`], and a write whose epoch is not the current one, or
//! whose lease has lapsed, is refused — so a slow agent whose lease lapsed cannot
//! overwrite its successor's work.
//!
//! # Dependencies
//!
//! `blocked_by` edges (at most 8 per node) point at blockers. A task with an open blocker
//! cannot be claimed or completed; adding an open blocker to a pending or ready task
//! makes it blocked. Completing a task finds its dependents (a scan of the slots whose
//! summary says they have blockers) and makes each blocked one whose blockers are now all
//! complete ready, with a `task_ready` event. Edges are added under one dependency lock,
//! so the cycle check (a bounded depth-first search) cannot race another edge.

use crate::agents::AgentId;
use crate::error::PoolError;
use crate::event::EventKind;
use crate::layout::{hdr, record_flags, NodeRecord, ASSIGNEES_MAX, BLOCKERS_MAX};
use crate::node::{Handle, Node, NodeKind, Status};
use crate::ownerlock;
use crate::pool::Change;
use crate::principal::{Principal, PrincipalKey};
use crate::ready::Visit;
use crate::segment::Segment;
use crate::sys::OwnerTag;
use crate::unix_ms;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Candidates `claim_next` validates through the ready index before it falls back to
/// a scan of the board.
pub(crate) const INDEX_STEPS: usize = 64;

/// The longest lease a claim or renewal may ask for: 30 days.
pub const LEASE_MAX: Duration = Duration::from_secs(30 * 86_400);

/// The most bytes a note (of `complete`) or reason (of `fail`) may take in its event's
/// payload, JSON-escaped: a `"` or `\` counts 2, a newline or tab 2, another control
/// character 6. A longer one is refused ([`TaskError::NoteTooLong`]), never cut.
pub const NOTE_MAX: usize = crate::event::NOTE_PAYLOAD_MAX;

/// The most bytes a progress note may take, JSON-escaped: its event carries the
/// percentage too.
pub const PROGRESS_NOTE_MAX: usize = NOTE_MAX - crate::event::PERCENT_FIELD_MAX;

/// A held claim: what the claimant presents with every later write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claim {
    /// The task.
    pub task: Handle,
    /// The claimant.
    pub agent: AgentId,
    /// The fencing epoch this claim was given.
    pub epoch: u64,
    /// When its lease ends, Unix ms.
    pub lease_until_ms: u64,
}

/// Which tasks a worker wants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskFilter {
    /// Only this kind (`None`: tasks). Only tasks and custom nodes can be claimed:
    /// another kind is refused with [`TaskError::NotATask`].
    pub kind: Option<NodeKind>,
    /// Only tasks assigned to this principal (an agent by name, or `@role`).
    pub assignee: Option<PrincipalKey>,
    /// Only tasks assigned to the claiming agent: by its name or by its role (not
    /// tasks open to all).
    pub mine: bool,
    /// Only tasks in this subtree.
    pub under: Option<Handle>,
    /// Only tasks carrying the label with this key ([`crate::label_key`]).
    pub label: Option<u64>,
}

/// Why a task operation was refused. Nothing was changed when one is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TaskError {
    /// Another agent holds a live claim.
    AlreadyClaimed {
        /// Its agent slot.
        by: u16,
        /// When its lease ends, Unix ms.
        until_ms: u64,
    },
    /// The state machine does not allow this move.
    IllegalTransition {
        /// Current status.
        from: Status,
        /// Requested status.
        to: Status,
    },
    /// The claim presented is not the current one: the task was claimed again since.
    StaleEpoch {
        /// Epoch presented.
        presented: u64,
        /// Current epoch.
        current: u64,
    },
    /// The claim's lease has lapsed; claim the task again.
    LeaseExpired {
        /// How long ago, in ms.
        ago_ms: u64,
    },
    /// The task is not claimed by the presenting agent.
    NotClaimant,
    /// Open blockers remain.
    Blocked {
        /// How many.
        open: u8,
    },
    /// No ready task matches.
    NothingReady,
    /// The edge would close a dependency cycle.
    Cycle,
    /// The node already has the maximum number of blockers.
    TooManyBlockers,
    /// The node already has the maximum number of assignees.
    TooManyAssignees,
    /// The task is assigned, and not to the claiming agent (by its name or its role):
    /// only its assignees may claim it unless it is open to all.
    AssignedElsewhere {
        /// How many assignees it has.
        count: u8,
    },
    /// A blocking claim waited its whole timeout and no task matching its filter
    /// became ready.
    WaitTimedOut,
    /// The agent is not live.
    UnknownAgent,
    /// Only work can be claimed (or listed as ready): tasks and application-defined
    /// ([`NodeKind::Custom`]) nodes; this node is another kind (the root or another
    /// container, a folder, a project, a document, an agent's node).
    NotATask {
        /// Its kind (`None`: a code this build does not know).
        kind: Option<NodeKind>,
    },
    /// A note or reason longer than [`NOTE_MAX`] (as it is stored, JSON-escaped).
    NoteTooLong {
        /// Bytes it takes.
        len: usize,
        /// Bytes allowed.
        max: usize,
    },
    /// A lease of zero, or longer than [`LEASE_MAX`].
    LeaseOutOfRange {
        /// The lease asked for, ms (saturated at `u64::MAX`).
        ms: u64,
        /// The longest allowed, ms.
        max_ms: u64,
    },
    /// The task is shared with other hosts and one of them holds it (`shared`).
    HeldElsewhere,
    /// The task is shared with other hosts and this host's bridge is not running or
    /// cannot reach them: only tasks local to this host can be claimed now.
    Offline,
    /// A node operation failed.
    Pool(PoolError),
}

impl From<PoolError> for TaskError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::IllegalTransition { from, to } => TaskError::IllegalTransition { from, to },
            e => TaskError::Pool(e),
        }
    }
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use TaskError::*;
        match self {
            AlreadyClaimed { by, until_ms } => write!(
                f,
                "already claimed by agent slot {by} (lease ends in {} ms)",
                until_ms.saturating_sub(unix_ms())
            ),
            IllegalTransition { from, to } => write!(f, "illegal status change {from} -> {to}"),
            StaleEpoch { presented, current } => {
                write!(f, "stale claim: epoch {presented} presented, the task is at epoch {current}")
            }
            LeaseExpired { ago_ms } => write!(f, "the lease expired {ago_ms} ms ago"),
            NotClaimant => write!(f, "the task is not claimed by this agent"),
            Blocked { open } => write!(f, "{open} blocker(s) still open"),
            NothingReady => write!(f, "no ready task matches"),
            Cycle => write!(f, "that dependency would form a cycle"),
            TooManyBlockers => write!(f, "the node already has {BLOCKERS_MAX} blockers"),
            TooManyAssignees => write!(f, "the node already has {ASSIGNEES_MAX} assignees"),
            AssignedElsewhere { count } => write!(f, "the task is assigned to {count} other principal(s)"),
            WaitTimedOut => write!(f, "no matching task became ready before the timeout"),
            UnknownAgent => write!(f, "unknown agent"),
            NotATask { kind: Some(k) } => write!(f, "a node of kind {k} cannot be claimed, only a task or custom node"),
            NotATask { kind: None } => {
                write!(f, "a node of unknown kind cannot be claimed, only a task or custom node")
            }
            NoteTooLong { len, max } => write!(f, "note is {len} bytes (JSON-escaped), the limit is {max}"),
            LeaseOutOfRange { ms, max_ms } => write!(f, "lease of {ms} ms is outside 1..={max_ms} ms"),
            HeldElsewhere => write!(f, "another host holds this shared task"),
            Offline => write!(f, "this shared task cannot be claimed while the bridge is offline"),
            Pool(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TaskError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TaskError::Pool(e) => Some(e),
            _ => None,
        }
    }
}

/// Checks a lease and returns its length in ms.
pub(crate) fn lease_ms(lease: Duration) -> Result<u64, TaskError> {
    let ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
    let max_ms = LEASE_MAX.as_millis() as u64;
    if ms == 0 || ms > max_ms {
        return Err(TaskError::LeaseOutOfRange { ms, max_ms });
    }
    Ok(ms)
}

/// Checks a note against [`NOTE_MAX`].
pub(crate) fn check_note(note: &str) -> Result<(), TaskError> {
    // Cheap bound first: no character takes more than 6 bytes escaped.
    let len = if note.len() > 6 * NOTE_MAX { note.len() } else { crate::event::note_payload_len(note) };
    if len > NOTE_MAX {
        return Err(TaskError::NoteTooLong { len, max: NOTE_MAX });
    }
    Ok(())
}

/// Whether nodes of `kind` are work that can be claimed: tasks, and application-defined
/// kinds ([`NodeKind::Custom`]). Containers (the root), folders, projects, documents and
/// agents' nodes are not.
pub(crate) fn claimable(kind: Option<NodeKind>) -> bool {
    matches!(kind, Some(NodeKind::Task | NodeKind::Custom))
}

/// Checks that a filter asks for claimable nodes (`None`: tasks).
fn check_task_kind(kind: Option<NodeKind>) -> Result<(), TaskError> {
    match kind {
        None => Ok(()),
        k if claimable(k) => Ok(()),
        k => Err(TaskError::NotATask { kind: k }),
    }
}

/// The claim `rec` records, live or lapsed: the agent slot it names at that slot's
/// generation (a reused slot is another agent). `None` when the record names none.
/// Whether `rec` is assigned to one of `keys` (an agent's name and role keys).
pub(crate) fn assigned_to_any(rec: &NodeRecord, keys: &[Option<PrincipalKey>; 2]) -> bool {
    let n = (rec.assignee_count as usize).min(ASSIGNEES_MAX);
    rec.assignees[..n].iter().any(|a| keys.iter().flatten().any(|k| k.raw() == *a))
}

/// Whether an agent answering to `keys` may claim `rec` as far as assignment goes: it
/// has no assignees, is open to all, or is assigned to the agent.
pub(crate) fn open_to(rec: &NodeRecord, keys: &[Option<PrincipalKey>; 2]) -> bool {
    rec.assignee_count == 0 || rec.flags & record_flags::OPEN_TO_ALL != 0 || assigned_to_any(rec, keys)
}

pub(crate) fn recorded_claimant(rec: &NodeRecord) -> Option<AgentId> {
    rec.claim_agent.checked_sub(1).map(|index| AgentId { index, generation: rec.claim_agent_gen })
}

/// **The** "is this claim live" predicate: the claimant `rec` records (agent slot and
/// generation) if its lease has not ended at `now_ms` (Unix ms, the wall clock leases
/// are judged against). Every path that asks whether a task is held — showing it,
/// refusing a second claim, skipping it in a scan, reaping it — asks this.
pub(crate) fn live_claimant(rec: &NodeRecord, now_ms: u64) -> Option<AgentId> {
    recorded_claimant(rec).filter(|_| rec.lease_until_ms > now_ms)
}

/// Checks a presented claim against the record (under the task's lock).
fn check_claim(rec: &NodeRecord, c: &Claim, now_ms: u64) -> Result<(), TaskError> {
    if rec.claim_epoch != c.epoch {
        return Err(TaskError::StaleEpoch { presented: c.epoch, current: rec.claim_epoch });
    }
    if recorded_claimant(rec) != Some(c.agent) {
        return Err(TaskError::NotClaimant);
    }
    if live_claimant(rec, now_ms).is_none() {
        return Err(TaskError::LeaseExpired { ago_ms: now_ms - rec.lease_until_ms });
    }
    Ok(())
}

pub(crate) fn status(rec: &NodeRecord) -> Status {
    Status::from_code(rec.status).unwrap_or(Status::Pending)
}

/// Keeps `note` as the task's last note (written by `kind`); an empty note keeps the
/// previous one. Notes were checked against [`NOTE_MAX`] (escaped), so the raw bytes fit.
pub(crate) fn keep_note(rec: &mut NodeRecord, kind: u8, note: &str) {
    if note.is_empty() {
        return;
    }
    let n = note.len().min(crate::layout::TASK_NOTE_MAX);
    rec.note[..n].copy_from_slice(&note.as_bytes()[..n]);
    rec.note[n..].fill(0);
    rec.note_len = n as u8;
    rec.note_kind = kind;
}

/// Remembers that the recorded claimant's lease lapsed (before the claim is cleared or
/// taken over), for the error that agent gets next.
fn note_lapse(rec: &mut NodeRecord) {
    rec.lapsed_agent = rec.claim_agent;
    rec.lapsed_agent_gen = rec.claim_agent_gen;
    rec.lapsed_at_ms = rec.lease_until_ms;
}

/// The holder is working: its lease runs its full length again from now.
fn extend_lease(rec: &mut NodeRecord, now_ms: u64) {
    if rec.lease_ms > 0 {
        rec.lease_until_ms = now_ms.saturating_add(rec.lease_ms as u64);
    }
}

pub(crate) fn clear_claim(rec: &mut NodeRecord) {
    // A pending shared claim cleared by the reaper must not leave the task marked
    // as waiting for the bridge.
    rec.flags &= !record_flags::UNCONFIRMED;
    rec.claim_agent = 0;
    rec.claim_agent_gen = 0;
    rec.lease_until_ms = 0;
}

/// Internal outcome of a conditional change: either it applies, or there is nothing to do.
enum Skip {
    /// The condition no longer holds: nothing to write.
    Nothing,
    /// The node vanished or stayed locked; a later pass will look again.
    Failed,
}

impl From<PoolError> for Skip {
    fn from(_: PoolError) -> Self {
        Skip::Failed
    }
}

impl Segment {
    fn actor_of(&self, agent: AgentId) -> Result<Handle, TaskError> {
        self.agent_node(agent).ok_or(TaskError::UnknownAgent)
    }

    /// The UUID of `agent`'s node (zero if it is gone).
    fn agent_uuid(&self, agent: AgentId) -> [u8; 16] {
        self.agent(agent).map_or([0; 16], |a| *a.uuid.as_bytes())
    }

    /// Number of blockers of `rec` that are not complete (a deleted blocker counts as
    /// done: nothing can complete it any more).
    pub(crate) fn open_blockers(&self, rec: &NodeRecord) -> u8 {
        rec.blocked_by[..(rec.blocker_count as usize).min(BLOCKERS_MAX)]
            .iter()
            .filter_map(|r| Handle::from_raw(*r))
            .filter(|b| matches!(self.read(*b), Ok(n) if n.status() != Some(Status::Complete)))
            .count() as u8
    }

    /// Claims a ready task for `agent` with a lease. Exactly one of any number of racing
    /// claimants wins; the rest get [`TaskError::AlreadyClaimed`]. An expired claim is
    /// taken over (the task goes to the new claimant with a new epoch).
    ///
    /// # Errors
    ///
    /// Nothing changes on error, except after `EventNotAppended` (the claim is made).
    ///
    /// * [`TaskError::AlreadyClaimed`]: another agent holds a live claim.
    /// * [`TaskError::Blocked`]: blockers of the task are still open.
    /// * [`TaskError::IllegalTransition`]: the task is neither ready nor held under a
    ///   lapsed lease (pending, complete, failed, cancelled).
    /// * [`TaskError::NotATask`]: the node is not work: neither a task nor a custom node.
    /// * [`TaskError::LeaseOutOfRange`]: a lease of zero or beyond [`LEASE_MAX`].
    /// * [`TaskError::UnknownAgent`]: `agent` is not a live agent.
    /// * [`TaskError::Pool`] with [`PoolError::ReadOnly`], [`PoolError::Closing`] or
    ///   [`PoolError::DaemonGone`]: the segment takes no writes; with
    ///   [`PoolError::StaleHandle`] / [`PoolError::NotFound`]: the task was deleted; with
    ///   [`PoolError::Busy`]: another live process holds the task's lock too long; with
    ///   [`PoolError::EventNotAppended`]: the change was made but its event was not.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use worknode::{NewNode, NodeKind, Status, TaskError};
    /// # let name = format!("doc-claim-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let me = seg.join("worker-1", "builder")?;
    /// let task = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "build").status(Status::Ready))?;
    /// let claim = seg.claim(task, me, Duration::from_secs(30))?;
    /// assert_eq!(seg.read(task)?.status(), Some(Status::Claimed));
    /// assert_eq!(claim.epoch, 1);
    ///
    /// let rival = seg.join("worker-2", "builder")?;
    /// let lost = seg.claim(task, rival, Duration::from_secs(30));
    /// assert!(matches!(lost, Err(TaskError::AlreadyClaimed { .. })));
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn claim(&self, task: Handle, agent: AgentId, lease: Duration) -> Result<Claim, TaskError> {
        if let Some(link) = self.link() {
            return link.ask_claim(crate::broker::Request::Claim { task, agent, lease_ms: lease_ms(lease)? });
        }
        self.permit(crate::token::Right::Claim, Some(task)).map_err(PoolError::from)?;
        self.permit_agent(agent).map_err(PoolError::from)?;
        self.claim_task(task, agent, lease)
    }

    /// [`Segment::claim`] without the token check.
    fn claim_task(&self, task: Handle, agent: AgentId, lease: Duration) -> Result<Claim, TaskError> {
        let lease_ms = lease_ms(lease)?;
        let actor = self.actor_of(agent)?;
        let keys = self.keys_of(agent).map_err(|_| TaskError::UnknownAgent)?;
        let mut claim = Claim { task, agent, epoch: 0, lease_until_ms: 0 };
        // Set by the closure's last run (the one whose record was published).
        let mut took_over = false;
        let mut shared = false;
        let (_, ()) =
            self.modify(task, Change::new(EventKind::TASK_CLAIMED).by(Some(actor)).with_epoch(""), |rec| {
                if !claimable(NodeKind::from_code(rec.kind)) {
                    return Err(TaskError::NotATask { kind: NodeKind::from_code(rec.kind) });
                }
                shared = rec.flags & record_flags::SHARED != 0;
                if shared && !self.bridge_online() {
                    return Err(TaskError::Offline);
                }
                let now = unix_ms();
                let from = status(rec);
                if let Some(by) = live_claimant(rec, now) {
                    return Err(TaskError::AlreadyClaimed { by: by.index, until_ms: rec.lease_until_ms });
                }
                // Ready, or claimed/in progress under a lapsed lease.
                if !(from == Status::Ready
                    || (recorded_claimant(rec).is_some() && matches!(from, Status::Claimed | Status::InProgress)))
                {
                    return Err(match from {
                        Status::Blocked => TaskError::Blocked { open: self.open_blockers(rec).max(1) },
                        _ => TaskError::IllegalTransition { from, to: Status::Claimed },
                    });
                }
                if !open_to(rec, &keys) {
                    return Err(TaskError::AssignedElsewhere { count: rec.assignee_count });
                }
                let open = self.open_blockers(rec);
                if open > 0 {
                    return Err(TaskError::Blocked { open });
                }
                took_over = recorded_claimant(rec).is_some();
                if took_over {
                    // Taking over a lapsed claim: its holder is told so.
                    note_lapse(rec);
                }
                rec.claim_epoch += 1;
                rec.lease_ms = u32::try_from(lease_ms).unwrap_or(u32::MAX);
                rec.attempts = rec.attempts.saturating_add(1);
                rec.claim_agent = agent.index + 1;
                rec.claim_agent_gen = agent.generation;
                rec.lease_until_ms = now.saturating_add(lease_ms);
                rec.claimed_at = self.now().0;
                rec.status = Status::Claimed.code();
                rec.flags &= !record_flags::HELD_ELSEWHERE;
                if shared {
                    rec.flags |= record_flags::UNCONFIRMED;
                }
                claim.epoch = rec.claim_epoch;
                claim.lease_until_ms = rec.lease_until_ms;
                Ok(())
            })?;
        // Operating counters (`wn metrics`): statistics, ordered by nothing.
        self.hdr(hdr::CLAIMS_MADE).fetch_add(1, Ordering::Relaxed);
        if took_over {
            self.hdr(hdr::LEASES_EXPIRED).fetch_add(1, Ordering::Relaxed);
        }
        if shared {
            return self.await_confirmation(claim);
        }
        Ok(claim)
    }

    /// A claimant's write: checks the claim under the lock, applies `f`, emits `kind`.
    fn claimant_write(
        &self,
        c: &Claim,
        kind: EventKind,
        note: &str,
        f: impl FnOnce(&mut NodeRecord) -> Result<(), TaskError>,
    ) -> Result<Node, TaskError> {
        let actor = self.actor_of(c.agent).ok();
        let (node, ()) = self.modify(c.task, Change::new(kind).by(actor).with_epoch(note), |rec| {
            check_claim(rec, c, unix_ms())?;
            f(rec)
        })?;
        Ok(node)
    }

    /// Extends a live claim's lease to `lease` from now; returns the claim with its new
    /// `lease_until_ms` (the epoch is unchanged).
    ///
    /// # Errors
    ///
    /// * [`TaskError::LeaseOutOfRange`]: a lease of zero or beyond [`LEASE_MAX`].
    /// * [`TaskError::StaleEpoch`]: the task was claimed again since `c` was given (the
    ///   lease had lapsed): drop this work.
    /// * [`TaskError::NotClaimant`]: the task is not claimed by `c.agent` (any more).
    /// * [`TaskError::LeaseExpired`]: the lease lapsed; claim the task again.
    /// * [`TaskError::Pool`] with [`PoolError::ReadOnly`], [`PoolError::Closing`] or
    ///   [`PoolError::DaemonGone`]: the segment takes no writes; with
    ///   [`PoolError::StaleHandle`] / [`PoolError::NotFound`]: the task was deleted; with
    ///   [`PoolError::Busy`]: another live process holds the task's lock too long; with
    ///   [`PoolError::EventNotAppended`]: the change was made but its event was not.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use worknode::{NewNode, NodeKind, Status, TaskError};
    /// # let name = format!("doc-renew-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let me = seg.join("worker-1", "builder")?;
    /// let task = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "build").status(Status::Ready))?;
    /// let claim = seg.claim(task, me, Duration::from_secs(30))?;
    /// let renewed = seg.renew(&claim, Duration::from_secs(300))?;
    /// assert_eq!(renewed.epoch, claim.epoch);
    /// assert!(renewed.lease_until_ms > claim.lease_until_ms);
    /// let refused = seg.renew(&claim, Duration::ZERO);
    /// assert!(matches!(refused, Err(TaskError::LeaseOutOfRange { .. })));
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn renew(&self, c: &Claim, lease: Duration) -> Result<Claim, TaskError> {
        if let Some(link) = self.link() {
            return link.ask_claim(crate::broker::Request::Renew { claim: *c, lease_ms: lease_ms(lease)? });
        }
        self.permit(crate::token::Right::Claim, Some(c.task)).map_err(PoolError::from)?;
        self.permit_agent(c.agent).map_err(PoolError::from)?;
        let lease_ms = lease_ms(lease)?;
        let mut out = *c;
        let actor = self.actor_of(c.agent).ok();
        self.modify(c.task, Change::new(EventKind::NODE_UPDATED).by(actor), |rec| {
            check_claim(rec, c, unix_ms())?;
            rec.lease_until_ms = unix_ms().saturating_add(lease_ms);
            // Later `start` and `progress` extend by the length asked for now.
            rec.lease_ms = u32::try_from(lease_ms).unwrap_or(u32::MAX);
            out.lease_until_ms = rec.lease_until_ms;
            Ok::<(), TaskError>(())
        })?;
        Ok(out)
    }

    /// Gives a claimed task back: it is ready again, for any agent to claim.
    ///
    /// # Errors
    ///
    /// * [`TaskError::StaleEpoch`]: the task was claimed again since `c` was given (the
    ///   lease had lapsed): drop this work.
    /// * [`TaskError::NotClaimant`]: the task is not claimed by `c.agent` (any more).
    /// * [`TaskError::LeaseExpired`]: the lease lapsed; claim the task again.
    /// * [`TaskError::Pool`] with [`PoolError::ReadOnly`], [`PoolError::Closing`] or
    ///   [`PoolError::DaemonGone`]: the segment takes no writes; with
    ///   [`PoolError::StaleHandle`] / [`PoolError::NotFound`]: the task was deleted; with
    ///   [`PoolError::Busy`]: another live process holds the task's lock too long; with
    ///   [`PoolError::EventNotAppended`]: the change was made but its event was not.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use worknode::{NewNode, NodeKind, Status, TaskError};
    /// # let name = format!("doc-release-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let me = seg.join("worker-1", "builder")?;
    /// let task = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "build").status(Status::Ready))?;
    /// let claim = seg.claim(task, me, Duration::from_secs(30))?;
    /// let node = seg.release(&claim)?;
    /// assert_eq!(node.status(), Some(Status::Ready));
    /// // The claim is spent: a second release is refused.
    /// assert_eq!(seg.release(&claim).unwrap_err(), TaskError::NotClaimant);
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release(&self, c: &Claim) -> Result<Node, TaskError> {
        if let Some(link) = self.link() {
            return link.ask_node(crate::broker::Request::Release { claim: *c });
        }
        self.permit(crate::token::Right::Claim, Some(c.task)).map_err(PoolError::from)?;
        self.permit_agent(c.agent).map_err(PoolError::from)?;
        self.claimant_write(c, EventKind::TASK_RELEASED, "", |rec| {
            clear_claim(rec);
            rec.status = Status::Ready.code();
            Ok(())
        })
    }

    /// Claimed → in progress (idempotent while in progress). Optional: progress and
    /// completion are accepted from claimed too.
    ///
    /// # Errors
    ///
    /// * [`TaskError::StaleEpoch`]: the task was claimed again since `c` was given (the
    ///   lease had lapsed): drop this work.
    /// * [`TaskError::NotClaimant`]: the task is not claimed by `c.agent` (any more).
    /// * [`TaskError::LeaseExpired`]: the lease lapsed; claim the task again.
    /// * [`TaskError::Pool`] with [`PoolError::ReadOnly`], [`PoolError::Closing`] or
    ///   [`PoolError::DaemonGone`]: the segment takes no writes; with
    ///   [`PoolError::StaleHandle`] / [`PoolError::NotFound`]: the task was deleted; with
    ///   [`PoolError::Busy`]: another live process holds the task's lock too long; with
    ///   [`PoolError::EventNotAppended`]: the change was made but its event was not.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use worknode::{NewNode, NodeKind, Status};
    /// # let name = format!("doc-start-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let me = seg.join("worker", "builder")?;
    /// let task = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "build").status(Status::Ready))?;
    /// let claim = seg.claim(task, me, Duration::from_secs(30))?;
    /// assert_eq!(seg.start(&claim)?.status(), Some(Status::InProgress));
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start(&self, c: &Claim) -> Result<Node, TaskError> {
        if let Some(link) = self.link() {
            return link.ask_node(crate::broker::Request::Start { claim: *c });
        }
        self.permit(crate::token::Right::Update, Some(c.task)).map_err(PoolError::from)?;
        self.permit_agent(c.agent).map_err(PoolError::from)?;
        self.claimant_write(c, EventKind::NODE_UPDATED, "", |rec| match status(rec) {
            Status::Claimed | Status::InProgress => {
                rec.status = Status::InProgress.code();
                extend_lease(rec, unix_ms());
                Ok(())
            }
            from => Err(TaskError::IllegalTransition { from, to: Status::InProgress }),
        })
    }

    /// Reports progress (0–100) on a claimed task.
    ///
    /// # Errors
    ///
    /// * [`TaskError::Pool`] with [`PoolError::ProgressOutOfRange`]: `percent` above 100.
    /// * [`TaskError::StaleEpoch`]: the task was claimed again since `c` was given (the
    ///   lease had lapsed): drop this work.
    /// * [`TaskError::NotClaimant`]: the task is not claimed by `c.agent` (any more).
    /// * [`TaskError::LeaseExpired`]: the lease lapsed; claim the task again.
    /// * [`TaskError::Pool`] with [`PoolError::ReadOnly`], [`PoolError::Closing`] or
    ///   [`PoolError::DaemonGone`]: the segment takes no writes; with
    ///   [`PoolError::StaleHandle`] / [`PoolError::NotFound`]: the task was deleted; with
    ///   [`PoolError::Busy`]: another live process holds the task's lock too long; with
    ///   [`PoolError::EventNotAppended`]: the change was made but its event was not.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use worknode::{NewNode, NodeKind, Status, TaskError};
    /// # let name = format!("doc-progress-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let me = seg.join("worker-1", "builder")?;
    /// let task = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "build").status(Status::Ready))?;
    /// let claim = seg.claim(task, me, Duration::from_secs(30))?;
    /// assert_eq!(seg.progress(&claim, 40)?.progress(), 40);
    /// let refused = seg.progress(&claim, 101);
    /// assert!(matches!(refused, Err(TaskError::Pool(worknode::PoolError::ProgressOutOfRange { value: 101 }))));
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn progress(&self, c: &Claim, percent: u8) -> Result<Node, TaskError> {
        self.progress_noted(c, percent, "")
    }

    /// [`Segment::progress`] with a short note, kept on the task as its last note and
    /// carried in the event (`{"epoch":E,"percent":P,"note":N}`). An empty note keeps the
    /// previous one.
    ///
    /// # Errors
    ///
    /// As [`Segment::progress`]; [`TaskError::NoteTooLong`] for a note over
    /// [`PROGRESS_NOTE_MAX`] bytes JSON-escaped.
    pub fn progress_noted(&self, c: &Claim, percent: u8, note: &str) -> Result<Node, TaskError> {
        if let Some(link) = self.link() {
            return link.ask_node(crate::broker::Request::Progress { claim: *c, percent, note: note.to_string() });
        }
        self.permit(crate::token::Right::Update, Some(c.task)).map_err(PoolError::from)?;
        self.permit_agent(c.agent).map_err(PoolError::from)?;
        if percent > 100 {
            return Err(PoolError::ProgressOutOfRange { value: percent }.into());
        }
        let len = crate::event::note_payload_len(note);
        if len > PROGRESS_NOTE_MAX {
            return Err(TaskError::NoteTooLong { len, max: PROGRESS_NOTE_MAX });
        }
        let actor = self.actor_of(c.agent).ok();
        let change = Change::new(EventKind::NODE_UPDATED).by(actor).with_epoch(note).with_percent(percent);
        let (node, ()) = self.modify(c.task, change, |rec| {
            let now = unix_ms();
            check_claim(rec, c, now)?;
            rec.progress = percent;
            rec.progress_at = self.now().0;
            extend_lease(rec, now);
            keep_note(rec, crate::layout::note_kind::PROGRESS, note);
            Ok::<(), TaskError>(())
        })?;
        Ok(node)
    }

    /// Completes a claimed task (refused while blockers are open), then makes every
    /// dependent whose blockers are now all complete ready.
    ///
    /// # Errors
    ///
    /// * [`TaskError::NoteTooLong`]: a note over [`NOTE_MAX`]; nothing changes.
    /// * [`TaskError::Blocked`]: blockers of the task are open.
    /// * [`TaskError::IllegalTransition`]: the task is neither claimed nor in progress.
    /// * [`TaskError::StaleEpoch`]: the task was claimed again since `c` was given (the
    ///   lease had lapsed): drop this work.
    /// * [`TaskError::NotClaimant`]: the task is not claimed by `c.agent` (any more).
    /// * [`TaskError::LeaseExpired`]: the lease lapsed; claim the task again.
    /// * [`TaskError::Pool`] with [`PoolError::ReadOnly`], [`PoolError::Closing`] or
    ///   [`PoolError::DaemonGone`]: the segment takes no writes; with
    ///   [`PoolError::StaleHandle`] / [`PoolError::NotFound`]: the task was deleted; with
    ///   [`PoolError::Busy`]: another live process holds the task's lock too long; with
    ///   [`PoolError::EventNotAppended`]: the change was made but its event was not.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use worknode::{NewNode, NodeKind, Status, TaskError};
    /// # let name = format!("doc-complete-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let me = seg.join("worker-1", "builder")?;
    /// let task = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "build").status(Status::Ready))?;
    /// let claim = seg.claim(task, me, Duration::from_secs(30))?;
    /// seg.progress(&claim, 90)?;
    /// let done = seg.complete(&claim, "built in 3 s")?;
    /// assert_eq!((done.status(), done.progress()), (Some(Status::Complete), 100));
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn complete(&self, c: &Claim, note: &str) -> Result<Node, TaskError> {
        if let Some(link) = self.link() {
            return link.ask_node(crate::broker::Request::Complete { claim: *c, note: note.to_string() });
        }
        self.permit(crate::token::Right::Update, Some(c.task)).map_err(PoolError::from)?;
        self.permit_agent(c.agent).map_err(PoolError::from)?;
        check_note(note)?;
        let result = self.claimant_write(c, EventKind::TASK_COMPLETED, note, |rec| {
            let from = status(rec);
            if !matches!(from, Status::Claimed | Status::InProgress) {
                return Err(TaskError::IllegalTransition { from, to: Status::Complete });
            }
            let open = self.open_blockers(rec);
            if open > 0 {
                return Err(TaskError::Blocked { open });
            }
            clear_claim(rec);
            rec.status = Status::Complete.code();
            rec.progress = 100;
            rec.finished_at = self.now().0;
            rec.finished_by = self.agent_uuid(c.agent);
            keep_note(rec, crate::layout::note_kind::COMPLETE, note);
            Ok(())
        });
        // Once the record is published (even if its event could not be appended), the
        // dependents must hear of it.
        let published = matches!(result, Ok(_) | Err(TaskError::Pool(PoolError::EventNotAppended { .. })));
        if !published {
            return result;
        }
        // Pairs with the fence in `add_blocker` (see there).
        std::sync::atomic::fence(Ordering::SeqCst);
        self.wake_dependents(c.task);
        result
    }

    /// Fails a claimed task with a reason (carried in the event payload).
    /// A failed task can be made ready again with [`Segment::update`] (a retry).
    ///
    /// # Errors
    ///
    /// * [`TaskError::NoteTooLong`]: a reason over [`NOTE_MAX`]; nothing changes.
    /// * [`TaskError::IllegalTransition`]: the task is neither claimed nor in progress.
    /// * [`TaskError::StaleEpoch`]: the task was claimed again since `c` was given (the
    ///   lease had lapsed): drop this work.
    /// * [`TaskError::NotClaimant`]: the task is not claimed by `c.agent` (any more).
    /// * [`TaskError::LeaseExpired`]: the lease lapsed; claim the task again.
    /// * [`TaskError::Pool`] with [`PoolError::ReadOnly`], [`PoolError::Closing`] or
    ///   [`PoolError::DaemonGone`]: the segment takes no writes; with
    ///   [`PoolError::StaleHandle`] / [`PoolError::NotFound`]: the task was deleted; with
    ///   [`PoolError::Busy`]: another live process holds the task's lock too long; with
    ///   [`PoolError::EventNotAppended`]: the change was made but its event was not.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use worknode::{NewNode, NodeKind, Status, TaskError};
    /// # let name = format!("doc-fail-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let me = seg.join("worker-1", "builder")?;
    /// let task = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "build").status(Status::Ready))?;
    /// let claim = seg.claim(task, me, Duration::from_secs(30))?;
    /// let failed = seg.fail(&claim, "compiler crashed")?;
    /// assert_eq!(failed.status(), Some(Status::Failed));
    /// let retry = seg.update(task, |n| n.set_status(Status::Ready))?;
    /// assert_eq!(retry.status(), Some(Status::Ready));
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fail(&self, c: &Claim, reason: &str) -> Result<Node, TaskError> {
        if let Some(link) = self.link() {
            return link.ask_node(crate::broker::Request::Fail { claim: *c, reason: reason.to_string() });
        }
        self.permit(crate::token::Right::Update, Some(c.task)).map_err(PoolError::from)?;
        self.permit_agent(c.agent).map_err(PoolError::from)?;
        check_note(reason)?;
        self.claimant_write(c, EventKind::TASK_FAILED, reason, |rec| {
            let from = status(rec);
            if !matches!(from, Status::Claimed | Status::InProgress) {
                return Err(TaskError::IllegalTransition { from, to: Status::Failed });
            }
            clear_claim(rec);
            rec.status = Status::Failed.code();
            rec.finished_at = self.now().0;
            rec.finished_by = self.agent_uuid(c.agent);
            keep_note(rec, crate::layout::note_kind::FAIL, reason);
            Ok(())
        })
    }

    /// Assigns `node` to `who` (idempotent): an agent by name, joined or not (its name
    /// is then registered, which reserves it), or every agent of a role. Only its
    /// assignees may claim an assigned task, unless it is open to all
    /// ([`Segment::set_open_to_all`]). Appends `task_assigned` naming `who`.
    ///
    /// # Errors
    ///
    /// * [`TaskError::TooManyAssignees`]: the node has [`ASSIGNEES_MAX`] already.
    /// * [`TaskError::Pool`]: as for every change (a stale handle, no writes, a full
    ///   pool for the name's registration, …).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use worknode::{NewNode, NodeKind, Principal, Status, TaskError};
    /// # let name = format!("doc-assign-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let task = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "review").status(Status::Ready))?;
    /// seg.assign(task, &Principal::parse("@tester")?)?; // no tester has joined yet
    /// let writer = seg.join("writer", "author")?;
    /// let refused = seg.claim(task, writer, Duration::from_secs(30));
    /// assert_eq!(refused.unwrap_err(), TaskError::AssignedElsewhere { count: 1 });
    /// let tester = seg.join("tess", "tester")?;
    /// seg.claim(task, tester, Duration::from_secs(30))?;
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn assign(&self, node: Handle, who: &Principal) -> Result<Node, TaskError> {
        if let Some(link) = self.link() {
            return link.ask_node(crate::broker::Request::Assign { node, who: who.clone() });
        }
        self.permit(crate::token::Right::Update, Some(node)).map_err(PoolError::from)?;
        let key = who.key();
        // Registered first: a key whose name nobody could show would be worse than an
        // unused mailbox left by a failed assignment.
        self.register_principal(who)?;
        let mut payload = [0u8; crate::layout::EVENT_PAYLOAD_MAX];
        let n = crate::event::principal_payload(&mut payload, "assignee", who);
        let actor = self.actor();
        self.modify(node, Change::new(EventKind::TASK_ASSIGNED).by(actor).with_payload(&payload[..n]), |rec| {
            let n = (rec.assignee_count as usize).min(ASSIGNEES_MAX);
            if rec.assignees[..n].contains(&key.raw()) {
                return Ok(());
            }
            if n == ASSIGNEES_MAX {
                return Err(TaskError::TooManyAssignees);
            }
            rec.assignees[n] = key.raw();
            rec.assignee_count = n as u8 + 1;
            Ok(())
        })
        .map(|(n, ())| n)
    }

    /// Takes `who` off `node`'s assignees (idempotent); appends `task_unassigned`.
    ///
    /// # Errors
    ///
    /// [`TaskError::Pool`]: as for every change.
    pub fn unassign(&self, node: Handle, who: &Principal) -> Result<Node, TaskError> {
        if let Some(link) = self.link() {
            return link.ask_node(crate::broker::Request::Unassign { node, who: who.clone() });
        }
        self.permit(crate::token::Right::Update, Some(node)).map_err(PoolError::from)?;
        let key = who.key().raw();
        let mut payload = [0u8; crate::layout::EVENT_PAYLOAD_MAX];
        let n = crate::event::principal_payload(&mut payload, "unassigned", who);
        let actor = self.actor();
        self.modify(node, Change::new(EventKind::TASK_UNASSIGNED).by(actor).with_payload(&payload[..n]), |rec| {
            let n = (rec.assignee_count as usize).min(ASSIGNEES_MAX);
            if let Some(i) = rec.assignees[..n].iter().position(|a| *a == key) {
                rec.assignees.copy_within(i + 1..n, i);
                rec.assignees[n - 1] = 0;
                rec.assignee_count = n as u8 - 1;
            }
            Ok::<(), TaskError>(())
        })
        .map(|(n, ())| n)
    }

    /// Makes an assigned task claimable by every agent (`open`), its assignees then only
    /// the ones it is meant for first (`--mine`), or by its assignees alone (the
    /// default).
    ///
    /// # Errors
    ///
    /// [`TaskError::Pool`]: as for every change.
    pub fn set_open_to_all(&self, node: Handle, open: bool) -> Result<Node, TaskError> {
        if let Some(link) = self.link() {
            return link.ask_node(crate::broker::Request::SetOpenToAll { node, open });
        }
        self.permit(crate::token::Right::Update, Some(node)).map_err(PoolError::from)?;
        let actor = self.actor();
        self.modify(node, Change::new(EventKind::NODE_UPDATED).by(actor), |rec| {
            if open {
                rec.flags |= record_flags::OPEN_TO_ALL;
            } else {
                rec.flags &= !record_flags::OPEN_TO_ALL;
            }
            Ok::<(), TaskError>(())
        })
        .map(|(n, ())| n)
    }

    /// Makes `task` wait for `blocker`. Refuses cycles. A pending or ready task with an
    /// open blocker becomes blocked (`task_blocked`); completing the last open blocker
    /// makes it ready again. Adding an edge that exists changes nothing.
    ///
    /// # Errors
    ///
    /// * [`TaskError::Cycle`]: `blocker` is `task` or (transitively) waits for it.
    /// * [`TaskError::TooManyBlockers`]: `task` has the maximum number of blockers.
    /// * [`TaskError::Pool`] with [`PoolError::StaleHandle`] / [`PoolError::NotFound`]:
    ///   `task` or `blocker` was deleted; with [`PoolError::Busy`]: another live process
    ///   holds the dependency lock or the task's lock too long; with
    ///   [`PoolError::ReadOnly`], [`PoolError::Closing`], [`PoolError::DaemonGone`]: the
    ///   segment takes no writes; with [`PoolError::EventNotAppended`]: the edge was
    ///   added but its event was not.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{NewNode, NodeKind, Status, TaskError};
    /// # let name = format!("doc-add_blocker-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let task = |name| NewNode::new(NodeKind::Task, name).status(Status::Ready);
    /// let schema = seg.add(seg.root(), &task("schema"))?;
    /// let api = seg.add(seg.root(), &task("api"))?;
    ///
    /// let api_node = seg.add_blocker(api, schema)?; // api waits for schema
    /// assert_eq!(api_node.status(), Some(Status::Blocked));
    /// assert_eq!(seg.add_blocker(schema, api).unwrap_err(), TaskError::Cycle);
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_blocker(&self, task: Handle, blocker: Handle) -> Result<Node, TaskError> {
        if let Some(link) = self.link() {
            return link.ask_node(crate::broker::Request::AddBlocker { task, blocker });
        }
        self.permit(crate::token::Right::Update, Some(task)).map_err(PoolError::from)?;
        if task == blocker {
            return Err(TaskError::Cycle);
        }
        self.read(blocker)?;
        let lock = self.hdr(hdr::DEPS_LOCK);
        ownerlock::acquire(lock, self.me.0, self.lock_wait, |t| !OwnerTag(t).is_alive())
            .map_err(|b| PoolError::Busy { holder_pid: OwnerTag(b.holder).pid() })?;
        let result = (|| {
            if self.depends_on(blocker, task)? {
                return Err(TaskError::Cycle);
            }
            let mut blocked = false;
            let (node, ()) = self.modify(task, Change::new(EventKind::NODE_UPDATED), |rec| {
                let n = (rec.blocker_count as usize).min(BLOCKERS_MAX);
                if rec.blocked_by[..n].contains(&blocker.to_raw()) {
                    return Ok(());
                }
                if n == BLOCKERS_MAX {
                    return Err(TaskError::TooManyBlockers);
                }
                rec.blocked_by[n] = blocker.to_raw();
                rec.blocker_count = n as u8 + 1;
                let blocker_done = self.read(blocker).map_or(true, |b| b.status() == Some(Status::Complete));
                if !blocker_done && matches!(status(rec), Status::Pending | Status::Ready) {
                    rec.status = Status::Blocked.code();
                    blocked = true;
                }
                Ok(())
            })?;
            Ok((node, blocked))
        })();
        ownerlock::release(lock, self.me.0);
        let (node, blocked) = result?;
        if blocked {
            self.append_unchecked(&crate::NewEvent::new(EventKind::TASK_BLOCKED).node(node.uuid(), node.version()))
                .map_err(|error| TaskError::Pool(PoolError::EventNotAppended { error, node: task }))?;
            // The blocker may have completed after we looked at it but before the edge
            // was published; its wake-up scan then missed the edge. Look once more: the
            // completion publishes its status and then scans, we publish the edge and
            // then look, and the SeqCst fences on both sides mean one of us sees the
            // other's write (Dekker). If both do, the second unblock finds nothing to do.
            std::sync::atomic::fence(Ordering::SeqCst);
            self.maybe_unblock(task);
            return Ok(self.read(task).unwrap_or(node));
        }
        Ok(node)
    }

    /// Removes the edge `task` → `blocker`; a blocked task with no open blocker left
    /// becomes ready. Returns the task as the edge's removal left it (read it again to
    /// see it ready). Removing an edge that does not exist changes nothing but the
    /// version.
    ///
    /// # Errors
    ///
    /// * [`TaskError::Pool`] with [`PoolError::ReadOnly`], [`PoolError::Closing`] or
    ///   [`PoolError::DaemonGone`]: the segment takes no writes; with
    ///   [`PoolError::StaleHandle`] / [`PoolError::NotFound`]: the task was deleted; with
    ///   [`PoolError::Busy`]: another live process holds the task's lock too long; with
    ///   [`PoolError::EventNotAppended`]: the change was made but its event was not.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{NewNode, NodeKind, Status};
    /// # let name = format!("doc-remove_blocker-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let task = |name| NewNode::new(NodeKind::Task, name).status(Status::Ready);
    /// let schema = seg.add(seg.root(), &task("schema"))?;
    /// let api = seg.add(seg.root(), &task("api"))?;
    /// seg.add_blocker(api, schema)?;
    /// assert_eq!(seg.read(api)?.status(), Some(Status::Blocked));
    ///
    /// seg.remove_blocker(api, schema)?;
    /// assert_eq!(seg.read(api)?.status(), Some(Status::Ready));
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn remove_blocker(&self, task: Handle, blocker: Handle) -> Result<Node, TaskError> {
        if let Some(link) = self.link() {
            return link.ask_node(crate::broker::Request::RemoveBlocker { task, blocker });
        }
        self.permit(crate::token::Right::Update, Some(task)).map_err(PoolError::from)?;
        let (node, ()) = self.modify(task, Change::new(EventKind::NODE_UPDATED), |rec| {
            let n = (rec.blocker_count as usize).min(BLOCKERS_MAX);
            if let Some(i) = rec.blocked_by[..n].iter().position(|b| *b == blocker.to_raw()) {
                rec.blocked_by.copy_within(i + 1..n, i);
                rec.blocked_by[n - 1] = 0;
                rec.blocker_count = n as u8 - 1;
            }
            Ok::<(), TaskError>(())
        })?;
        self.maybe_unblock(task);
        Ok(node)
    }

    /// Whether `from` (transitively) waits for `target`. Bounded depth-first search.
    fn depends_on(&self, from: Handle, target: Handle) -> Result<bool, TaskError> {
        let mut stack = vec![from];
        let mut seen = vec![0u64; (self.caps.nodes as usize).div_ceil(64)];
        let mut visits = 0u32;
        while let Some(h) = stack.pop() {
            visits += 1;
            if visits > self.caps.nodes {
                return Err(PoolError::Corrupt { what: "dependency walk exceeded the pool" }.into());
            }
            let Ok(n) = self.read(h) else { continue };
            for b in n.blocked_by() {
                if b == target {
                    return Ok(true);
                }
                let (w, bit) = (b.index as usize / 64, b.index % 64);
                if w < seen.len() && seen[w] & (1 << bit) == 0 {
                    seen[w] |= 1 << bit;
                    stack.push(b);
                }
            }
        }
        Ok(false)
    }

    /// After `done` completed: makes ready every blocked dependent whose blockers are all
    /// complete now.
    fn wake_dependents(&self, done: Handle) {
        let raw = done.to_raw();
        let wake = |i: u32| {
            let Some((h, summary)) = self.slot_summary(i) else { return };
            if summary.blocker_count() == 0 {
                return;
            }
            if let Ok(n) = self.read(h) {
                if n.record().blocked_by[..(n.record().blocker_count as usize).min(BLOCKERS_MAX)].contains(&raw) {
                    self.maybe_unblock(h);
                }
            }
        };
        // The slots with blockers are indexed (set before their edge is published, so
        // the Dekker argument of `add_blocker` holds for the index as for the records);
        // a read-only mapping has no index to tidy and scans.
        match self.ready_index() {
            Some(ix) => {
                ix.walk_bucket(crate::ready::DEPS, |i| {
                    wake(i);
                    Visit::Next
                });
            }
            None => (0..self.caps.nodes).for_each(wake),
        }
    }

    /// Makes ready every blocked task whose blockers are all complete (or deleted): the
    /// safety net for what a completion's own wake-up can miss (its process died before
    /// the scan, a dependent stayed locked, a blocker was deleted). The daemon runs it
    /// every second. Returns how many it made ready.
    pub(crate) fn settle_blocked(&self) -> usize {
        let blocked = Status::Blocked.code();
        (0..self.caps.nodes)
            .filter_map(|i| self.slot_summary(i))
            .filter(|(_, summary)| summary.status() == blocked)
            .filter(|(h, _)| self.maybe_unblock(*h))
            .count()
    }

    /// Blocked → ready if no blocker is open (emits `task_ready`). Returns whether it did.
    fn maybe_unblock(&self, h: Handle) -> bool {
        // Nothing to do, or the dependent vanished or stayed locked: `settle_blocked`
        // (the daemon, every second) looks again.
        self.modify(h, Change::new(EventKind::TASK_READY), |rec| {
            if status(rec) != Status::Blocked || self.open_blockers(rec) > 0 {
                return Err(Skip::Nothing);
            }
            rec.status = Status::Ready.code();
            Ok(())
        })
        .is_ok()
    }

    /// Tasks an agent may claim now, best first (priority, then age), at most `limit`.
    /// A filter naming a kind that cannot be claimed is refused ([`TaskError::NotATask`]).
    pub fn ready(&self, filter: &TaskFilter, limit: usize, out: &mut Vec<Node>) -> Result<(), TaskError> {
        out.clear();
        check_task_kind(filter.kind)?;
        let mut best: Vec<(u8, u64, Handle)> = Vec::new();
        self.scan_claimable(filter, None, |prio, created, h| best.push((prio, created, h)))?;
        best.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, _, h) in best.into_iter().take(limit) {
            if let Ok(n) = self.read(h) {
                out.push(n);
            }
        }
        Ok(())
    }

    /// Claims the best ready task matching `filter` (priority, then age): the loop every
    /// worker runs. Losing a race for one candidate moves on to the next.
    ///
    /// # Errors
    ///
    /// * [`TaskError::NothingReady`]: no claimable task matches (wait for a
    ///   `task_ready` event and try again).
    /// * [`TaskError::NotATask`]: the filter names a kind that cannot be claimed.
    /// * [`TaskError::LeaseOutOfRange`]: a lease of zero or beyond [`LEASE_MAX`].
    /// * [`TaskError::UnknownAgent`]: `agent` is not a live agent.
    /// * Otherwise the errors of [`Segment::claim`] other than losing a race.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use worknode::{NewNode, NodeKind, Status, TaskError, TaskFilter};
    /// # let name = format!("doc-claim_next-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let me = seg.join("worker", "builder")?;
    /// let lease = Duration::from_secs(30);
    /// let task = |name| NewNode::new(NodeKind::Task, name).status(Status::Ready);
    /// seg.add(seg.root(), &task("minor").priority(1))?;
    /// let urgent = seg.add(seg.root(), &task("urgent").priority(9))?;
    ///
    /// let claim = seg.claim_next(&TaskFilter::default(), me, lease)?;
    /// assert_eq!(claim.task, urgent); // best first
    /// seg.claim_next(&TaskFilter::default(), me, lease)?; // then "minor"
    /// let none = seg.claim_next(&TaskFilter::default(), me, lease);
    /// assert_eq!(none.unwrap_err(), TaskError::NothingReady);
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn claim_next(&self, filter: &TaskFilter, agent: AgentId, lease: Duration) -> Result<Claim, TaskError> {
        if let Some(link) = self.link() {
            return link.ask_claim(crate::broker::Request::ClaimNext {
                filter: *filter,
                agent,
                lease_ms: lease_ms(lease)?,
            });
        }
        // A subtree token looks only inside its subtree.
        let confined = match (self.grant_subtree(), filter.under) {
            (Some(sub), None) => TaskFilter { under: Some(sub.map_err(PoolError::from)?), ..*filter },
            _ => *filter,
        };
        let filter = &confined;
        self.permit(crate::token::Right::Claim, filter.under).map_err(PoolError::from)?;
        self.permit_agent(agent).map_err(PoolError::from)?;
        check_task_kind(filter.kind)?;
        lease_ms(lease)?;
        let keys = self.keys_of(agent).map_err(|_| TaskError::UnknownAgent)?;
        if let Some(outcome) = self.claim_indexed(filter, agent, lease, &keys) {
            return outcome;
        }
        // The index could not decide within its budget (many candidates in the best
        // buckets fail the filter or are held): the scan decides, best first.
        const K: usize = 16;
        for _round in 0..8 {
            let mut top: [(u8, u64, Option<Handle>); K] = [(0, u64::MAX, None); K];
            self.scan_claimable(filter, Some(&keys), |prio, created, h| {
                // Keep the K best in `top` (sorted best first), without allocating.
                let key = (std::cmp::Reverse(prio), created);
                if let Some(pos) = top.iter().position(|t| t.2.is_none() || key < (std::cmp::Reverse(t.0), t.1)) {
                    top.copy_within(pos..K - 1, pos + 1);
                    top[pos] = (prio, created, Some(h));
                }
            })?;
            if top[0].2.is_none() {
                return Err(TaskError::NothingReady);
            }
            for (_, _, h) in top.iter() {
                let Some(h) = *h else { break };
                match self.claim_task(h, agent, lease) {
                    Ok(c) => return Ok(c),
                    Err(
                        TaskError::AlreadyClaimed { .. }
                        | TaskError::IllegalTransition { .. }
                        | TaskError::AssignedElsewhere { .. }
                        | TaskError::Blocked { .. }
                        | TaskError::HeldElsewhere
                        | TaskError::Offline,
                    ) => {}
                    Err(TaskError::Pool(PoolError::StaleHandle | PoolError::NotFound)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Err(TaskError::NothingReady)
    }

    /// `claim_next` through the ready index (`ready`): walks the candidates best
    /// priority first (slot order within one), validates each against its record and
    /// claims the first that passes `filter`. O(1) in the board's size when the first
    /// candidates pass; each candidate that fails the filter, is held under a live lease
    /// or is lost to a racing claimer costs one step, and after [`INDEX_STEPS`] steps it
    /// gives up: `None`, and the caller scans. Stale bits found on the way are cleared.
    fn claim_indexed(
        &self,
        filter: &TaskFilter,
        agent: AgentId,
        lease: Duration,
        keys: &[Option<PrincipalKey>; 2],
    ) -> Option<Result<Claim, TaskError>> {
        let ix = self.ready_index()?;
        let kind = filter.kind.unwrap_or(NodeKind::Task).code();
        let plain = filter.assignee.is_none() && !filter.mine && filter.under.is_none() && filter.label.is_none();
        let now = unix_ms();
        let mut steps = 0;
        let mut outcome = Some(Err(TaskError::NothingReady));
        ix.walk(|b, i| {
            if steps == INDEX_STEPS {
                outcome = None;
                return Visit::Stop;
            }
            steps += 1;
            let summary = self.slot_summary(i);
            let Some((h, summary)) = summary.filter(|(_, s)| crate::ready::bucket_of(*s) == Some(b)) else {
                self.clear_if_stale(&ix, b, i);
                return Visit::Next;
            };
            if summary.kind() != kind {
                return Visit::Next;
            }
            let claimed = summary.claim_agent() != 0;
            if claimed || !plain || summary.assignee_count() != 0 {
                let Ok(n) = self.read(h) else { return Visit::Next };
                let rec = n.record();
                if live_claimant(rec, now).is_some() || !self.wanted(rec, h, filter, Some(keys)) {
                    return Visit::Next;
                }
            }
            match self.claim_task(h, agent, lease) {
                Ok(c) => {
                    outcome = Some(Ok(c));
                    Visit::Stop
                }
                Err(
                    TaskError::AlreadyClaimed { .. }
                    | TaskError::IllegalTransition { .. }
                    | TaskError::AssignedElsewhere { .. }
                    | TaskError::Blocked { .. }
                    | TaskError::HeldElsewhere
                    | TaskError::Offline
                    | TaskError::Pool(PoolError::StaleHandle | PoolError::NotFound),
                ) => Visit::Next,
                Err(e) => {
                    outcome = Some(Err(e));
                    Visit::Stop
                }
            }
        });
        outcome
    }

    /// Calls `f(priority, created, handle)` for every claimable node matching `filter`:
    /// ready, or claimed / in progress under a lapsed lease; and, when `keys` names a
    /// claiming agent, open to it (unassigned, open to all, or assigned to it). Reads
    /// only the slot summary for most slots; copies a record only for candidates.
    fn scan_claimable(
        &self,
        filter: &TaskFilter,
        keys: Option<&[Option<PrincipalKey>; 2]>,
        mut f: impl FnMut(u8, u64, Handle),
    ) -> Result<(), TaskError> {
        let kind = filter.kind.unwrap_or(NodeKind::Task).code();
        let now = unix_ms();
        let plain = filter.assignee.is_none() && !filter.mine && filter.under.is_none() && filter.label.is_none();
        for i in 0..self.caps.nodes {
            let Some((h, summary)) = self.slot_summary(i) else { continue };
            if summary.kind() != kind {
                continue;
            }
            let st = summary.status();
            let claimed = summary.claim_agent() != 0;
            let maybe = st == Status::Ready.code()
                || (claimed && (st == Status::Claimed.code() || st == Status::InProgress.code()));
            if !maybe {
                continue;
            }
            // The common case (a ready, unclaimed, unassigned task, no filter but the
            // kind) is decided from the slot's summary and creation stamp, without a
            // record copy.
            if !claimed && plain && summary.assignee_count() == 0 {
                f(summary.priority(), self.slot_created(i), h);
                continue;
            }
            let Ok(n) = self.read(h) else { continue };
            let rec = n.record();
            if live_claimant(rec, now).is_some() || !self.wanted(rec, h, filter, keys) {
                continue;
            }
            f(rec.priority, rec.created, h);
        }
        Ok(())
    }

    /// Whether the claimable record `rec` (of node `h`) passes `filter` for an agent
    /// answering to `keys` (`None`: whoever asks, as `ready` lists).
    pub(crate) fn wanted(
        &self,
        rec: &NodeRecord,
        h: Handle,
        filter: &TaskFilter,
        keys: Option<&[Option<PrincipalKey>; 2]>,
    ) -> bool {
        if let Some(k) = keys {
            if !open_to(rec, k) || (filter.mine && !assigned_to_any(rec, k)) {
                return false;
            }
        }
        if let Some(a) = filter.assignee {
            if !assigned_to_any(rec, &[Some(a), None]) {
                return false;
            }
        }
        filter.under.is_none_or(|root| self.is_under(h, root))
            && filter.label.is_none_or(|l| self.has_label(h, l).unwrap_or(false))
    }

    /// Whether `h` lies in the subtree rooted at `root` (itself included).
    pub fn is_under(&self, h: Handle, root: Handle) -> bool {
        let mut cur = Some(h);
        for _ in 0..=self.caps.nodes {
            match cur {
                Some(c) if c == root => return true,
                Some(c) => cur = self.read(c).ok().and_then(|n| n.parent()),
                None => return false,
            }
        }
        false
    }

    /// Releases every claim held by agent slot `index` (its agent left or died): the
    /// tasks are ready again, with `task_released`.
    pub(crate) fn release_claims_of(&self, agent: AgentId, actor: Option<Handle>, lost: bool) -> usize {
        let index = agent.index;
        let mut released = 0;
        let note = if lost { "agent lost" } else { "agent left" };
        for i in 0..self.caps.nodes {
            let Some((h, summary)) = self.slot_summary(i) else { continue };
            if summary.claim_agent() != index + 1 {
                continue;
            }
            let held = |rec: &NodeRecord| recorded_claimant(rec) == Some(agent);
            if self.drop_claim(h, EventKind::TASK_RELEASED, actor, note, held) {
                released += 1;
            }
        }
        released
    }

    /// Clears the claim on `h` if `still(rec)` holds under its lock (the task goes back to
    /// ready), then appends `kind` naming the dropped epoch and `note`. Returns whether it
    /// dropped one.
    fn drop_claim(
        &self,
        h: Handle,
        kind: EventKind,
        actor: Option<Handle>,
        note: &str,
        still: impl Fn(&NodeRecord) -> bool,
    ) -> bool {
        // The epoch survives `clear_claim`, so the event names the claim that was dropped.
        let r = self.modify(h, Change::new(kind).by(actor).with_epoch(note), |rec| {
            if !still(rec) {
                return Err(Skip::Nothing);
            }
            if kind == EventKind::CLAIM_EXPIRED {
                note_lapse(rec);
            }
            clear_claim(rec);
            if matches!(status(rec), Status::Claimed | Status::InProgress) {
                rec.status = Status::Ready.code();
            }
            Ok(())
        });
        r.is_ok()
    }

    /// Releases every claim whose lease has lapsed (`claim_expired`). The daemon runs
    /// this periodically (`Daemon::reap_expired_claims`). Returns how many.
    pub(crate) fn reap_expired_claims(&self) -> usize {
        let mut reaped = 0;
        let now = unix_ms();
        for i in 0..self.caps.nodes {
            let Some((h, summary)) = self.slot_summary(i) else { continue };
            if summary.claim_agent() == 0 {
                continue;
            }
            match self.read(h) {
                Ok(n) if live_claimant(n.record(), now).is_none() => {}
                _ => continue,
            }
            let lapsed = |rec: &NodeRecord| recorded_claimant(rec).is_some() && live_claimant(rec, unix_ms()).is_none();
            if self.drop_claim(h, EventKind::CLAIM_EXPIRED, None, "lease expired", lapsed) {
                self.hdr(hdr::LEASES_EXPIRED).fetch_add(1, Ordering::Relaxed);
                reaped += 1;
            }
        }
        reaped
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::{Capacities, NewNode};

    fn seg(tag: &str) -> crate::testing::TempSegment {
        crate::testing::temp_segment(
            &format!("claims-{tag}"),
            &Capacities { nodes: 64, events: 256, agents: 4, blob_chunks: 4, sets: 4, ..Capacities::default() },
        )
    }

    #[test]
    fn only_work_can_be_claimed() {
        let s = seg("kinds");
        let me = s.join("w", "test").unwrap();
        let lease = Duration::from_secs(60);
        let project = s.add(s.root(), &NewNode::new(NodeKind::Project, "p").status(Status::Ready)).unwrap();
        let agent_node = s.agent(me).unwrap().node;
        let folder = s.add(s.root(), &NewNode::new(NodeKind::Folder, "f").status(Status::Ready)).unwrap();
        for (h, kind) in [
            (s.root(), NodeKind::Container),
            (project, NodeKind::Project),
            (agent_node, NodeKind::Agent),
            (folder, NodeKind::Folder),
        ] {
            let before = s.read(h).unwrap().version();
            assert_eq!(s.claim(h, me, lease), Err(TaskError::NotATask { kind: Some(kind) }));
            assert_eq!(s.read(h).unwrap().version(), before, "nothing changed");
            assert_eq!(s.read(h).unwrap().claim_epoch(), 0, "no epoch burnt");
        }
        let filter = TaskFilter { kind: Some(NodeKind::Project), ..TaskFilter::default() };
        assert_eq!(s.claim_next(&filter, me, lease), Err(TaskError::NotATask { kind: Some(NodeKind::Project) }));
        assert_eq!(s.ready(&filter, 10, &mut Vec::new()), Err(TaskError::NotATask { kind: Some(NodeKind::Project) }));
        // Application-defined work is claimable, like a task.
        let w = s.add(s.root(), &NewNode::new(NodeKind::Custom, "w").status(Status::Ready)).unwrap();
        assert_eq!(s.claim(w, me, lease).unwrap().epoch, 1);
    }

    #[test]
    fn leases_are_bounded_and_notes_are_never_cut() {
        let s = seg("bounds");
        let me = s.join("w", "test").unwrap();
        let t = s.add(s.root(), &NewNode::new(NodeKind::Task, "t").status(Status::Ready)).unwrap();
        let max_ms = LEASE_MAX.as_millis() as u64;
        for lease in [Duration::ZERO, LEASE_MAX + Duration::from_millis(1), Duration::MAX] {
            let e = s.claim(t, me, lease).unwrap_err();
            assert!(matches!(e, TaskError::LeaseOutOfRange { max_ms: m, .. } if m == max_ms), "{e:?}");
            assert!(s.claim_next(&TaskFilter::default(), me, lease).is_err());
        }
        assert_eq!(s.read(t).unwrap().claim_epoch(), 0, "no epoch burnt");
        let c = s.claim(t, me, LEASE_MAX).unwrap();
        assert!(c.lease_until_ms > unix_ms());
        assert!(matches!(s.renew(&c, Duration::MAX), Err(TaskError::LeaseOutOfRange { .. })));
        let long = "n".repeat(200);
        let before = s.read(t).unwrap().version();
        assert_eq!(s.complete(&c, &long).err(), Some(TaskError::NoteTooLong { len: 200, max: NOTE_MAX }));
        assert_eq!(s.fail(&c, &"\"".repeat(25)).err(), Some(TaskError::NoteTooLong { len: 50, max: NOTE_MAX }));
        assert_eq!(s.read(t).unwrap().version(), before, "nothing changed");
        let whole = "x".repeat(NOTE_MAX);
        s.complete(&c, &whole).unwrap();
        let mut r = s.reader(crate::Start::Oldest);
        let mut found = false;
        while let Ok(Some(e)) = r.try_next() {
            if e.kind() == EventKind::TASK_COMPLETED {
                let text = std::str::from_utf8(e.payload()).unwrap();
                assert!(text.contains(&format!("\"note\":\"{whole}\"")), "{text}");
                found = true;
            }
        }
        assert!(found);
    }
}

impl Segment {
    /// The holder of `c` worked on its task by other means (a document put under it):
    /// the lease runs its full length (`lease_ms`) again from now, with `node_updated`.
    /// Checked like every claimant write (`StaleEpoch`, `NotClaimant`, `LeaseExpired`).
    pub(crate) fn extend_lease_for(&self, c: &Claim) -> Result<Node, TaskError> {
        self.claimant_write(c, EventKind::NODE_UPDATED, "", |rec| {
            extend_lease(rec, unix_ms());
            Ok(())
        })
    }
}
