//! File reservations (issue 13, part 6): an agent announces the paths it is about to
//! edit as globs (`src/auth/**`), so other agents — and a git pre-commit hook — keep off
//! them. What agent-mail tools are used for, on the segment.
//!
//! # Reservations are nodes
//!
//! Each [`Segment::reserve`] call makes one node of kind [`NodeKind::Reservation`] in the
//! system container `/reservations` (made on first use; sibling names are unique, so a
//! racing creator's `NameTaken` names the one to use). Its description holds the globs,
//! one a line ([`GLOBS_MAX`] bytes in all), its note the reason ([`REASON_MAX`]), its
//! flags whether it is shared and whether it is confirmed
//! ([`crate::layout::reservation_flags`]). The node is *held as a claim* by the
//! reserving agent — claim slot, lease and fencing epoch in the record, as on a task —
//! from the moment it goes live. So the journal, restore and the event ring cover it like
//! any node, and the daemon's lease sweep and session reaper release it like any claim.
//! A reservation whose claim is gone (released, lapsed, its agent dead) is *dead*: the
//! conflict check ignores it, `unreserve` deletes it, and the daemon sweeps it away
//! ([`crate::Daemon::sweep_dead_reservations`]). The epoch is the node's creation stamp
//! (HLC), so a later reservation of the same globs has another epoch, and a script that
//! presents the old one is refused as stale.
//!
//! # Conflicts
//!
//! Two reservations of different agents conflict when one of each's globs overlap (some
//! path matches both, [`Glob::overlaps`]) and they are not both shared. An agent does not
//! conflict with itself.
//!
//! # Exactly one of two racing reservations wins, without a lock
//!
//! Reservations are totally ordered by (created HLC, UUID). `reserve`:
//! 1. inserts its node, live, held and *pending* (not confirmed);
//! 2. issues a `SeqCst` fence;
//! 3. scans every live reservation: a conflicting one that is *confirmed*, or *pending
//!    and ordered before* its own, makes it lose (it deletes its node and returns
//!    [`ReserveError::Conflict`]); a conflicting one that is pending and ordered *after*
//!    its own it waits on (bounded, [`RESOLVE_WAIT`]) until that one is confirmed (then it
//!    loses) or gone or dead (then it is ignored);
//! 4. marks its node confirmed.
//!
//! Why exactly one of two conflicting reservers A < B wins. Both store their node, fence,
//! then load: by the fences' total order at least one of them sees the other's node
//! (Dekker's argument). If B sees A pending, B loses to the earlier A, and A — having seen
//! B, or not — finds B gone and wins. If B sees A confirmed, B loses. If B does not see A,
//! A saw B pending (or confirmed, and lost); A waits on the later B, which confirms
//! (having missed A), and A loses. Neither can both lose: the loser in every case is the
//! one that saw a pending earlier reservation or a confirmed one, and the earliest pending
//! one of a pair loses only to a confirmed one. Waits go only from an earlier reservation
//! to a later one, so they form no cycle; a reserver that died pending is dead (its
//! session's claims are released) and no longer waited on. Ignoring later pending ones
//! instead of waiting would let A (which saw B) and B (which missed A) both win.
//!
//! # Limits
//!
//! Globs: [`crate::GLOB_MAX`] bytes each, [`GLOBS_MAX`] bytes together (newline
//! separated), a reason of [`REASON_MAX`] bytes, a lease of 1 ms to [`crate::LEASE_MAX`].
//! A scan reads every node slot's summary (no allocation) and copies out the reservation
//! records; overlap is bounded per pair of globs (see `glob`).

use crate::agents::AgentId;
use crate::claims::{live_claimant, recorded_claimant, Claim, TaskError};
use crate::error::PoolError;
use crate::event::EventKind;
use crate::glob::{check_path, Glob, GlobError};
use crate::layout::{note_kind, reservation_flags, NodeRecord, DESCRIPTION_MAX, TASK_NOTE_MAX};
use crate::node::{Handle, NewNode, Node, NodeKind, Status};
use crate::pool::{Change, DeleteMode};
use crate::segment::Segment;
use crate::sync::{fence, Ordering};
use crate::{unix_ms, Hlc, LEASE_MAX};
use std::fmt;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The most bytes a reservation's globs take together, newline-separated: a node's
/// description.
pub const GLOBS_MAX: usize = DESCRIPTION_MAX;

/// The most bytes of a reservation's reason (kept in the record's note).
pub const REASON_MAX: usize = TASK_NOTE_MAX;

/// How long a reserver waits for a later, pending, overlapping reservation to be
/// confirmed or withdrawn before giving up with [`ReserveError::Contended`].
pub const RESOLVE_WAIT: Duration = Duration::from_secs(2);

/// The name of the system container reservations live in, under the root.
pub const RESERVATIONS: &str = "reservations";

/// How to reserve.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReserveOptions {
    /// How long it holds unless renewed.
    pub lease: Duration,
    /// Shared: conflicts only with exclusive reservations.
    pub shared: bool,
    /// Why (shown to those it keeps off), at most [`REASON_MAX`] bytes.
    pub reason: String,
}

impl Default for ReserveOptions {
    /// Exclusive, for an hour, no reason.
    fn default() -> Self {
        ReserveOptions { lease: Duration::from_secs(3600), shared: false, reason: String::new() }
    }
}

/// A held reservation: what its holder presents to renew or withdraw it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reservation {
    /// Its node under `/reservations`.
    pub node: Handle,
    /// The holder.
    pub agent: AgentId,
    /// Its fencing epoch (its creation stamp).
    pub epoch: u64,
    /// When its lease ends, Unix ms.
    pub lease_until_ms: u64,
    /// Whether it is shared.
    pub shared: bool,
    /// Its globs.
    pub globs: Vec<String>,
}

/// A reservation as listed ([`Segment::reservations`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservationInfo {
    /// Its node.
    pub node: Handle,
    /// Its node's UUID.
    pub uuid: Uuid,
    /// The agent that made it (slot and generation; it may have left).
    pub agent: Option<AgentId>,
    /// That agent's name (empty if it is gone).
    pub agent_name: String,
    /// Its globs.
    pub globs: Vec<String>,
    /// Whether it is shared.
    pub shared: bool,
    /// Its reason.
    pub reason: String,
    /// Its fencing epoch.
    pub epoch: u64,
    /// When its lease ends, Unix ms (0: released).
    pub lease_until_ms: u64,
    /// When it was made.
    pub created: Hlc,
    /// Whether it holds: claimed under a lease that has not ended. A dead one is swept
    /// by the daemon.
    pub live: bool,
}

/// Why a reservation operation was refused. Nothing was changed when one is returned.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ReserveError {
    /// Another agent's reservation overlaps one of these globs.
    Conflict {
        /// The other agent's name.
        holder: String,
        /// Its glob.
        theirs: String,
        /// The glob of this request that overlaps it.
        yours: String,
    },
    /// A path checked is inside another agent's reservation.
    Held {
        /// The path.
        path: String,
        /// The holder's name.
        holder: String,
        /// The glob that holds it.
        glob: String,
    },
    /// A malformed glob.
    BadGlob {
        /// The glob, as given (cut to [`crate::GLOB_MAX`] bytes).
        glob: String,
        /// What is wrong.
        error: GlobError,
    },
    /// A malformed path (to check).
    BadPath {
        /// The path, as given (cut to 200 bytes).
        path: String,
        /// What is wrong.
        error: GlobError,
    },
    /// No glob was given.
    NoGlobs,
    /// The globs take more than [`GLOBS_MAX`] bytes together (one a line).
    GlobsTooLong {
        /// Bytes they take.
        len: usize,
        /// Bytes allowed.
        max: usize,
    },
    /// A reason over [`REASON_MAX`] bytes.
    ReasonTooLong {
        /// Bytes it takes.
        len: usize,
        /// Bytes allowed.
        max: usize,
    },
    /// A control character in the reason, at this byte offset.
    ReasonHasControl {
        /// Byte offset.
        at: usize,
    },
    /// A lease of zero, or longer than [`crate::LEASE_MAX`].
    LeaseOutOfRange {
        /// The lease asked for, ms (saturated).
        ms: u64,
        /// The longest allowed, ms.
        max_ms: u64,
    },
    /// The reservation presented is not the current one (it lapsed and was made again).
    StaleEpoch {
        /// Epoch presented.
        presented: u64,
        /// Current epoch.
        current: u64,
    },
    /// The reservation's lease lapsed (or its claim was released): reserve again.
    Lapsed,
    /// The reservation is not this agent's.
    NotHolder,
    /// No such reservation (withdrawn, swept), or none of this agent's holds the globs.
    NotFound,
    /// The agent is not live.
    UnknownAgent,
    /// An overlapping reservation stayed undecided past [`RESOLVE_WAIT`]; nothing was
    /// reserved.
    Contended,
    /// Reserved, but the claim of [`Segment::claim_reserving`] failed (the reservation
    /// was withdrawn).
    Claim(TaskError),
    /// A node operation failed.
    Pool(PoolError),
}

impl From<PoolError> for ReserveError {
    fn from(e: PoolError) -> Self {
        ReserveError::Pool(e)
    }
}

impl fmt::Display for ReserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ReserveError::*;
        match self {
            Conflict { holder, theirs, yours } => {
                write!(f, "{yours:?} overlaps {theirs:?}, reserved by agent {holder:?}")
            }
            Held { path, holder, glob } => write!(f, "{path:?} is reserved by agent {holder:?} ({glob:?})"),
            BadGlob { glob, error } => write!(f, "malformed glob {glob:?}: {error}"),
            BadPath { path, error } => write!(f, "malformed path {path:?}: {error}"),
            NoGlobs => write!(f, "no glob given"),
            GlobsTooLong { len, max } => write!(f, "the globs take {len} bytes, the limit is {max}"),
            ReasonTooLong { len, max } => write!(f, "reason is {len} bytes, the limit is {max}"),
            ReasonHasControl { at } => write!(f, "control character in the reason at byte {at}"),
            LeaseOutOfRange { ms, max_ms } => write!(f, "lease of {ms} ms is outside 1..={max_ms} ms"),
            StaleEpoch { presented, current } => {
                write!(f, "stale reservation: epoch {presented} presented, it is at epoch {current}")
            }
            Lapsed => write!(f, "the reservation's lease has lapsed"),
            NotHolder => write!(f, "the reservation is another agent's"),
            NotFound => write!(f, "no such reservation"),
            UnknownAgent => write!(f, "unknown agent"),
            Contended => write!(f, "an overlapping reservation stayed undecided"),
            Claim(e) => write!(f, "{e}"),
            Pool(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ReserveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReserveError::BadGlob { error, .. } | ReserveError::BadPath { error, .. } => Some(error),
            ReserveError::Claim(e) => Some(e),
            ReserveError::Pool(e) => Some(e),
            _ => None,
        }
    }
}

/// Cuts `s` to at most `max` bytes at a character boundary (for echoing bad input).
fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn lease_ms(lease: Duration) -> Result<u64, ReserveError> {
    let ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
    let max_ms = LEASE_MAX.as_millis() as u64;
    if ms == 0 || ms > max_ms {
        return Err(ReserveError::LeaseOutOfRange { ms, max_ms });
    }
    Ok(ms)
}

/// Checks every glob and joins them, one a line.
fn join_globs(globs: &[&str]) -> Result<String, ReserveError> {
    if globs.is_empty() {
        return Err(ReserveError::NoGlobs);
    }
    for g in globs {
        Glob::parse(g).map_err(|error| ReserveError::BadGlob { glob: cut(g, crate::GLOB_MAX), error })?;
    }
    let len = globs.iter().map(|g| g.len()).sum::<usize>() + globs.len() - 1;
    if len > GLOBS_MAX {
        return Err(ReserveError::GlobsTooLong { len, max: GLOBS_MAX });
    }
    Ok(globs.join("\n"))
}

/// A reservation node's globs (its description, one a line).
fn globs_of(n: &Node) -> impl Iterator<Item = &str> {
    n.description().split('\n').filter(|g| !g.is_empty())
}

fn is_reservation(n: &Node) -> bool {
    n.kind() == Some(NodeKind::Reservation)
}

fn flag(rec: &NodeRecord, bit: u8) -> bool {
    rec.flags & bit != 0
}

/// The total order of reservations: (created HLC, UUID).
fn order(n: &Node) -> (u64, [u8; 16]) {
    (n.record().created, n.record().uuid)
}

/// What step 3 makes of a live, conflicting reservation of another agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Withdraw: the rival holds (confirmed) or comes first (pending, ordered before).
    Lose,
    /// Wait for the rival (pending, ordered after) to be confirmed or withdrawn.
    Wait,
}

/// The rule of step 3 (see the module doc), the one place it is written; the loom model
/// (`tests/loom.rs`) runs it.
pub fn verdict(rival_confirmed: bool, rival_first: bool) -> Verdict {
    if rival_confirmed || rival_first {
        Verdict::Lose
    } else {
        Verdict::Wait
    }
}

/// The first pair of overlapping globs of `a` and `b`.
fn overlapping<'a>(a: &'a Node, b: &'a Node) -> Option<(&'a str, &'a str)> {
    for ga in globs_of(a) {
        let Ok(pa) = Glob::parse(ga) else { continue };
        for gb in globs_of(b) {
            if Glob::parse(gb).is_ok_and(|pb| pa.overlaps(&pb)) {
                return Some((ga, gb));
            }
        }
    }
    None
}

impl Segment {
    /// Every reservation node in the pool, live or dead, in slot order, until `f`
    /// returns false. Reads each slot's summary; copies out reservation records only.
    fn for_each_reservation(&self, mut f: impl FnMut(&Node) -> bool) {
        for i in 0..self.caps.nodes {
            let Some((h, summary)) = self.slot_summary(i) else { continue };
            if summary.kind() != NodeKind::Reservation.code() {
                continue;
            }
            if let Ok(n) = self.read(h) {
                if is_reservation(&n) && !f(&n) {
                    return;
                }
            }
        }
    }

    /// `/reservations`, made on first use (two racing makers get the same node).
    fn reservations_container(&self) -> Result<Handle, PoolError> {
        self.ensure_child(self.root(), &NewNode::new(NodeKind::Container, RESERVATIONS).status(Status::Ready))
    }

    fn agent_name(&self, id: Option<AgentId>) -> String {
        id.and_then(|a| self.agent(a).ok()).map_or_else(String::new, |a| a.name)
    }

    /// Reserves `globs` for `agent` under `opts` (see the module doc for the protocol):
    /// one node holding them all, held as `agent`'s claim under the lease.
    ///
    /// # Errors
    ///
    /// Nothing is reserved on error.
    ///
    /// * [`ReserveError::Conflict`]: another agent's reservation overlaps (and they are
    ///   not both shared).
    /// * [`ReserveError::BadGlob`], [`ReserveError::NoGlobs`],
    ///   [`ReserveError::GlobsTooLong`], [`ReserveError::ReasonTooLong`],
    ///   [`ReserveError::LeaseOutOfRange`]: bad input.
    /// * [`ReserveError::UnknownAgent`]: `agent` is not live.
    /// * [`ReserveError::Contended`]: an overlapping reservation stayed undecided.
    /// * [`ReserveError::Pool`]: [`PoolError::Denied`] for a token without `reserve`,
    ///   [`PoolError::PoolFull`], and as for any change.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{ReserveError, ReserveOptions};
    /// # let name = format!("doc-reserve-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let alice = seg.join("alice", "coder")?;
    /// let bob = seg.join("bob", "coder")?;
    /// let mine = seg.reserve(alice, &["src/auth/**"], &ReserveOptions::default())?;
    /// let lost = seg.reserve(bob, &["src/auth/login.rs"], &ReserveOptions::default());
    /// assert!(matches!(lost, Err(ReserveError::Conflict { .. })));
    /// assert!(seg.check_paths(Some(bob), &["src/auth/login.rs"]).is_err());
    /// seg.unreserve(&mine)?;
    /// seg.reserve(bob, &["src/auth/login.rs"], &ReserveOptions::default())?;
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reserve(&self, agent: AgentId, globs: &[&str], opts: &ReserveOptions) -> Result<Reservation, ReserveError> {
        if let Some(link) = self.link() {
            let globs = globs.iter().map(|g| g.to_string()).collect();
            return link.ask_reservation(crate::broker::Request::Reserve { agent, globs, opts: opts.clone() });
        }
        self.permit_reserve().map_err(PoolError::from)?;
        self.permit_agent(agent).map_err(PoolError::from)?;
        self.reserve_unchecked(agent, globs, opts)
    }

    fn reserve_unchecked(
        &self,
        agent: AgentId,
        globs: &[&str],
        opts: &ReserveOptions,
    ) -> Result<Reservation, ReserveError> {
        let text = join_globs(globs)?;
        let lease_ms = lease_ms(opts.lease)?;
        if opts.reason.len() > REASON_MAX {
            return Err(ReserveError::ReasonTooLong { len: opts.reason.len(), max: REASON_MAX });
        }
        if let Some((at, _)) = opts.reason.char_indices().find(|(_, c)| c.is_control()) {
            return Err(ReserveError::ReasonHasControl { at });
        }
        if self.agent(agent).is_err() {
            return Err(ReserveError::UnknownAgent);
        }
        let shared = opts.shared;
        // 1. Insert, live and held, pending.
        let (mine, held) = self.insert_pending(agent, &text, lease_ms, opts)?;
        // 2. SYNC POINT: pairs with the same fence of every other reserver — of two
        // reservers that each stored their node and then fence, at least one loads the
        // other's node in step 3 (see the module doc).
        fence(Ordering::SeqCst);
        // 3. Scan.
        let me = self.read(mine)?;
        if let Err(e) = self.settle_against_others(&me, agent) {
            let _ = self.delete_node(mine, DeleteMode::LeafOnly);
            return Err(e);
        }
        crate::failpoint::hit("reserve.before_confirm");
        // 4. Confirm.
        let confirmed = self.modify(mine, Change::new(EventKind::NODE_UPDATED), |rec| {
            if recorded_claimant(rec) != Some(agent) || live_claimant(rec, unix_ms()).is_none() {
                return Err(ReserveError::Lapsed);
            }
            rec.flags |= reservation_flags::CONFIRMED;
            Ok(())
        });
        if let Err(e) = confirmed {
            let _ = self.delete_node(mine, DeleteMode::LeafOnly);
            return Err(e);
        }
        Ok(Reservation {
            node: mine,
            agent,
            epoch: held.0,
            lease_until_ms: held.1,
            shared,
            globs: globs.iter().map(|g| g.to_string()).collect(),
        })
    }

    /// Step 1 of `reserve`: the node, live, held by `agent` under the lease, pending.
    /// Returns it and its (epoch, lease end).
    fn insert_pending(
        &self,
        agent: AgentId,
        globs_text: &str,
        lease_ms: u64,
        opts: &ReserveOptions,
    ) -> Result<(Handle, (u64, u64)), ReserveError> {
        let container = self.reservations_container()?;
        let name = Uuid::now_v7().simple().to_string();
        let spec = NewNode::new(NodeKind::Reservation, &name).description(globs_text).status(Status::Claimed);
        let mut held = (0u64, 0u64);
        let node = self.add_node_with(container, &spec, |rec| {
            let now = unix_ms();
            rec.claim_agent = agent.index + 1;
            rec.claim_agent_gen = agent.generation;
            rec.claim_epoch = rec.created;
            rec.lease_ms = u32::try_from(lease_ms).unwrap_or(u32::MAX);
            rec.lease_until_ms = now.saturating_add(lease_ms);
            rec.claimed_at = rec.created;
            rec.flags = if opts.shared { reservation_flags::SHARED } else { 0 };
            let r = opts.reason.as_bytes();
            rec.note[..r.len()].copy_from_slice(r);
            rec.note_len = r.len() as u8;
            rec.note_kind = if r.is_empty() { note_kind::NONE } else { note_kind::RESERVE };
            held = (rec.claim_epoch, rec.lease_until_ms);
        })?;
        Ok((node, held))
    }

    /// Step 3 of `reserve`: `Ok` when `me` wins against every other live reservation.
    fn settle_against_others(&self, me: &Node, agent: AgentId) -> Result<(), ReserveError> {
        let deadline = Instant::now() + RESOLVE_WAIT;
        let mut outcome = Ok(());
        self.for_each_reservation(|other| {
            let Some(theirs) = self.rival(me, agent, other) else { return true };
            let mut other = *other;
            let mut backoff = crossbeam_utils::Backoff::new();
            // Bounded by the deadline: a later pending rival is decided within its own
            // scan, or dies (and its claim is released).
            loop {
                let confirmed = flag(other.record(), reservation_flags::CONFIRMED);
                if verdict(confirmed, order(&other) < order(me)) == Verdict::Lose {
                    outcome = Err(ReserveError::Conflict {
                        holder: self.agent_name(recorded_claimant(other.record())),
                        theirs: theirs.1.to_string(),
                        yours: theirs.0.to_string(),
                    });
                    return false;
                }
                if Instant::now() >= deadline {
                    outcome = Err(ReserveError::Contended);
                    return false;
                }
                if backoff.is_completed() {
                    std::thread::sleep(Duration::from_millis(1));
                    backoff = crossbeam_utils::Backoff::new();
                } else {
                    backoff.snooze();
                }
                match self.read(other.handle()) {
                    Ok(n) if self.rival(me, agent, &n).is_some() => other = n,
                    // Withdrawn, lapsed or released: no longer in the way.
                    _ => return true,
                }
            }
        });
        outcome
    }

    /// If `other` is a live reservation of another agent that conflicts with `me`: the
    /// overlapping globs (mine, theirs).
    fn rival<'a>(&self, me: &'a Node, agent: AgentId, other: &'a Node) -> Option<(&'a str, &'a str)> {
        if other.handle() == me.handle() || !is_reservation(other) {
            return None;
        }
        let holder = live_claimant(other.record(), unix_ms())?;
        if holder == agent {
            return None;
        }
        if flag(me.record(), reservation_flags::SHARED) && flag(other.record(), reservation_flags::SHARED) {
            return None;
        }
        overlapping(me, other)
    }

    /// Checks a presented reservation against its record (under its lock).
    fn check_reservation(rec: &NodeRecord, r: &Reservation) -> Result<(), ReserveError> {
        if NodeKind::from_code(rec.kind) != Some(NodeKind::Reservation) {
            return Err(ReserveError::NotFound);
        }
        if rec.claim_epoch != r.epoch {
            return Err(ReserveError::StaleEpoch { presented: r.epoch, current: rec.claim_epoch });
        }
        if recorded_claimant(rec).is_some_and(|a| a != r.agent) {
            return Err(ReserveError::NotHolder);
        }
        if live_claimant(rec, unix_ms()).is_none() {
            return Err(ReserveError::Lapsed);
        }
        Ok(())
    }

    /// Extends a held reservation's lease to `lease` from now.
    ///
    /// # Errors
    ///
    /// * [`ReserveError::StaleEpoch`]: `r` is not the reservation's current epoch.
    /// * [`ReserveError::Lapsed`]: its lease lapsed (reserve again), [`ReserveError::NotHolder`],
    ///   [`ReserveError::NotFound`] (withdrawn or swept), [`ReserveError::LeaseOutOfRange`].
    /// * [`ReserveError::Pool`]: as for any change.
    pub fn renew_reservation(&self, r: &Reservation, lease: Duration) -> Result<Reservation, ReserveError> {
        if let Some(link) = self.link() {
            let req = crate::broker::Request::RenewReservation { reservation: r.clone(), lease_ms: lease_ms(lease)? };
            return link.ask_reservation(req);
        }
        self.permit_reserve().map_err(PoolError::from)?;
        self.permit_agent(r.agent).map_err(PoolError::from)?;
        let ms = lease_ms(lease)?;
        let mut out = r.clone();
        self.modify(r.node, Change::new(EventKind::NODE_UPDATED), |rec| {
            Self::check_reservation(rec, r)?;
            rec.lease_until_ms = unix_ms().saturating_add(ms);
            rec.lease_ms = u32::try_from(ms).unwrap_or(u32::MAX);
            out.lease_until_ms = rec.lease_until_ms;
            Ok::<(), ReserveError>(())
        })
        .map_err(gone)?;
        Ok(out)
    }

    /// Withdraws a held reservation (deletes its node).
    ///
    /// # Errors
    ///
    /// * [`ReserveError::StaleEpoch`], [`ReserveError::NotHolder`],
    ///   [`ReserveError::NotFound`]: as for [`Segment::renew_reservation`]; nothing changed.
    ///   A lapsed reservation of `r`'s epoch is deleted (it was dead anyway).
    /// * [`ReserveError::Pool`]: as for any change.
    pub fn unreserve(&self, r: &Reservation) -> Result<(), ReserveError> {
        if let Some(link) = self.link() {
            return link.ask_unit(crate::broker::Request::Unreserve { reservation: r.clone() });
        }
        self.permit_reserve().map_err(PoolError::from)?;
        self.permit_agent(r.agent).map_err(PoolError::from)?;
        let n = self.read(r.node).map_err(|e| gone(e.into()))?;
        match Self::check_reservation(n.record(), r) {
            Ok(()) | Err(ReserveError::Lapsed) => {}
            Err(e) => return Err(e),
        }
        self.delete_node(r.node, DeleteMode::LeafOnly).map_err(|e| gone(e.into()))?;
        Ok(())
    }

    /// Withdraws the globs `globs` (each compared as text) from `agent`'s reservations —
    /// a reservation left with none is deleted, one left with others keeps them — or,
    /// with `None`, all of `agent`'s reservations. Dead reservations of `agent` are
    /// deleted as well. Returns how many globs were withdrawn.
    ///
    /// # Errors
    ///
    /// * [`ReserveError::NotFound`]: a glob named is in none of `agent`'s reservations
    ///   (nothing was withdrawn).
    /// * [`ReserveError::Pool`]: as for any change.
    pub fn unreserve_matching(&self, agent: AgentId, globs: Option<&[&str]>) -> Result<u64, ReserveError> {
        if let Some(link) = self.link() {
            let globs = globs.map(|g| g.iter().map(|s| s.to_string()).collect());
            return link.ask_count(crate::broker::Request::UnreserveMatching { agent, globs });
        }
        self.permit_reserve().map_err(PoolError::from)?;
        self.permit_agent(agent).map_err(PoolError::from)?;
        let mine = |n: &Node| recorded_claimant(n.record()) == Some(agent);
        if let Some(globs) = globs {
            for g in globs {
                let mut held = false;
                self.for_each_reservation(|n| {
                    held = mine(n) && globs_of(n).any(|x| x == *g);
                    !held
                });
                if !held {
                    return Err(ReserveError::NotFound);
                }
            }
        }
        let mut withdrawn = 0u64;
        let mut failed = None;
        self.for_each_reservation(|n| {
            if !mine(n) {
                return true;
            }
            let (gone_globs, kept): (Vec<&str>, Vec<&str>) =
                globs_of(n).partition(|x| globs.is_none_or(|gs| gs.contains(x)));
            if gone_globs.is_empty() {
                return true;
            }
            let r = if kept.is_empty() {
                self.delete_node(n.handle(), DeleteMode::LeafOnly).map(|_| ())
            } else {
                let text = kept.join("\n");
                self.modify(n.handle(), Change::new(EventKind::NODE_UPDATED), |rec| {
                    let mut node = Node { handle: n.handle(), rec: *rec };
                    node.set_description(&text)?;
                    *rec = node.rec;
                    Ok::<(), PoolError>(())
                })
                .map(|_| ())
            };
            match r {
                Ok(()) => withdrawn += gone_globs.len() as u64,
                Err(PoolError::NotFound | PoolError::StaleHandle) => {}
                Err(e) => {
                    failed = Some(e);
                    return false;
                }
            }
            true
        });
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(withdrawn),
        }
    }

    /// Every reservation, live and dead, oldest first, into `out` (cleared first).
    pub fn reservations(&self, out: &mut Vec<ReservationInfo>) {
        out.clear();
        let now = unix_ms();
        self.for_each_reservation(|n| {
            let rec = n.record();
            let agent = recorded_claimant(rec);
            out.push(ReservationInfo {
                node: n.handle(),
                uuid: n.uuid(),
                agent,
                agent_name: self.agent_name(agent),
                globs: globs_of(n).map(str::to_string).collect(),
                shared: flag(rec, reservation_flags::SHARED),
                reason: n.last_note().map_or_else(String::new, |(_, t)| t.to_string()),
                epoch: rec.claim_epoch,
                lease_until_ms: rec.lease_until_ms,
                created: n.created(),
                live: live_claimant(rec, now).is_some(),
            });
            true
        });
        out.sort_by_key(|r| (r.created.0, *r.uuid.as_bytes()));
    }

    /// Checks paths (relative to the repository, `./` allowed) against the live
    /// reservations of agents other than `agent` — the pre-commit check. A path inside
    /// another agent's *shared* reservation is not held when `agent` holds a shared
    /// reservation covering it too.
    ///
    /// # Errors
    ///
    /// * [`ReserveError::Held`]: the first path another agent holds, and by which glob.
    /// * [`ReserveError::BadPath`]: a malformed path (absolute, `..`, control
    ///   characters, empty, over [`crate::PATH_MAX`] bytes).
    pub fn check_paths(&self, agent: Option<AgentId>, paths: &[&str]) -> Result<(), ReserveError> {
        let now = unix_ms();
        for raw in paths {
            let path = check_path(raw).map_err(|error| ReserveError::BadPath { path: cut(raw, 200), error })?;
            fn covers<'n>(n: &'n Node, path: &str) -> Option<&'n str> {
                globs_of(n).find(|g| Glob::parse(g).is_ok_and(|g| g.matches(path)))
            }
            let mut shared_by_me = false;
            self.for_each_reservation(|n| {
                let rec = n.record();
                if agent.is_some() && live_claimant(rec, now) == agent && flag(rec, reservation_flags::SHARED) {
                    shared_by_me |= covers(n, path).is_some();
                }
                !shared_by_me
            });
            let mut held = None;
            self.for_each_reservation(|n| {
                let rec = n.record();
                let Some(holder) = live_claimant(rec, now) else { return true };
                if Some(holder) == agent || (shared_by_me && flag(rec, reservation_flags::SHARED)) {
                    return true;
                }
                if let Some(g) = covers(n, path) {
                    held = Some(ReserveError::Held {
                        path: path.to_string(),
                        holder: self.agent_name(Some(holder)),
                        glob: g.to_string(),
                    });
                    return false;
                }
                true
            });
            if let Some(e) = held {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Reserves `globs`, then claims `task`, as one step: if the claim fails the
    /// reservation is withdrawn, so either both hold or neither.
    ///
    /// # Errors
    ///
    /// As [`Segment::reserve`]; [`ReserveError::Claim`] with the claim's error (nothing
    /// is left reserved).
    pub fn claim_reserving(
        &self,
        task: Handle,
        agent: AgentId,
        lease: Duration,
        globs: &[&str],
        opts: &ReserveOptions,
    ) -> Result<(Claim, Reservation), ReserveError> {
        let r = self.reserve(agent, globs, opts)?;
        match self.claim(task, agent, lease) {
            Ok(c) => Ok((c, r)),
            Err(e) => {
                let _ = self.unreserve(&r);
                Err(ReserveError::Claim(e))
            }
        }
    }

    /// Deletes every dead reservation (claim released or lapsed). Returns how many.
    /// A dead reservation never holds again (renewing it is refused, and claims refuse a
    /// reservation node), so no lock is needed between finding it dead and deleting it.
    pub(crate) fn sweep_dead_reservations(&self) -> usize {
        let now = unix_ms();
        let mut swept = 0;
        self.for_each_reservation(|n| {
            if live_claimant(n.record(), now).is_none() && self.delete_node(n.handle(), DeleteMode::LeafOnly).is_ok() {
                swept += 1;
            }
            true
        });
        swept
    }
}

/// A reservation whose node is gone is not found.
fn gone(e: ReserveError) -> ReserveError {
    match e {
        ReserveError::Pool(PoolError::NotFound | PoolError::StaleHandle) => ReserveError::NotFound,
        e => e,
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::Capacities;

    fn seg(tag: &str) -> crate::testing::TempSegment {
        crate::testing::temp_segment(
            &format!("reserve-{tag}"),
            &Capacities { nodes: 64, events: 512, agents: 4, blob_chunks: 4, sets: 4, ..Capacities::default() },
        )
    }

    fn opts() -> ReserveOptions {
        ReserveOptions::default()
    }

    #[test]
    fn overlapping_reservations_of_others_conflict_and_shared_ones_do_not() {
        let s = seg("conflict");
        let a = s.join("a", "t").unwrap();
        let b = s.join("b", "t").unwrap();
        let ra = s.reserve(a, &["src/auth/**"], &opts()).unwrap();
        let e = s.reserve(b, &["docs/**", "src/auth/login.rs"], &opts()).unwrap_err();
        assert_eq!(
            e,
            ReserveError::Conflict {
                holder: "a".into(),
                theirs: "src/auth/**".into(),
                yours: "src/auth/login.rs".into()
            }
        );
        // The loser left nothing behind.
        let mut all = Vec::new();
        s.reservations(&mut all);
        assert_eq!(all.len(), 1);
        // An agent does not conflict with itself; disjoint globs do not conflict.
        s.reserve(a, &["src/auth/login.rs"], &opts()).unwrap();
        s.reserve(b, &["docs/**"], &opts()).unwrap();
        // Shared vs shared: fine; shared vs exclusive: a conflict.
        let sh = ReserveOptions { shared: true, ..opts() };
        s.reserve(a, &["lib/*.rs"], &sh).unwrap();
        s.reserve(b, &["lib/m?in.rs"], &sh).unwrap();
        assert!(matches!(s.reserve(b, &["lib/x.rs"], &opts()), Err(ReserveError::Conflict { .. })));
        s.unreserve(&ra).unwrap();
        s.reserve(b, &["src/auth/x.rs"], &opts()).unwrap();
        s.reserve(b, &["src/auth/*.rs"], &opts()).unwrap_err(); // a's second one still holds
        assert_eq!(s.unreserve_matching(a, Some(&["src/auth/login.rs"])).unwrap(), 1);
        s.reserve(b, &["src/auth/*.rs"], &opts()).unwrap();
    }

    #[test]
    fn bad_input_is_refused_and_changes_nothing() {
        let s = seg("bad");
        let a = s.join("a", "t").unwrap();
        for globs in [&["src/[ab"][..], &[""], &["/abs"], &["a/../b"], &["a\u{7}"], &[]] {
            assert!(
                matches!(s.reserve(a, globs, &opts()), Err(ReserveError::BadGlob { .. } | ReserveError::NoGlobs)),
                "{globs:?}"
            );
        }
        let many: Vec<String> = (0..30).map(|i| format!("dir{i}/file.rs")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(matches!(s.reserve(a, &many, &opts()), Err(ReserveError::GlobsTooLong { .. })));
        let long = ReserveOptions { reason: "r".repeat(REASON_MAX + 1), ..opts() };
        assert!(matches!(s.reserve(a, &["x"], &long), Err(ReserveError::ReasonTooLong { .. })));
        let zero = ReserveOptions { lease: Duration::ZERO, ..opts() };
        assert!(matches!(s.reserve(a, &["x"], &zero), Err(ReserveError::LeaseOutOfRange { .. })));
        let mut all = Vec::new();
        s.reservations(&mut all);
        assert!(all.is_empty());

        let r = s.reserve(a, &["x"], &ReserveOptions { reason: "refactor".into(), ..opts() }).unwrap();
        let stale = Reservation { epoch: r.epoch + 1, ..r.clone() };
        assert!(matches!(s.unreserve(&stale), Err(ReserveError::StaleEpoch { .. })));
        assert!(matches!(s.renew_reservation(&stale, Duration::from_secs(5)), Err(ReserveError::StaleEpoch { .. })));
        s.reservations(&mut all);
        assert_eq!((all.len(), all[0].lease_until_ms, all[0].reason.as_str()), (1, r.lease_until_ms, "refactor"));
        assert_eq!(s.unreserve_matching(a, Some(&["y"])), Err(ReserveError::NotFound));
        let renewed = s.renew_reservation(&r, Duration::from_secs(7200)).unwrap();
        assert!(renewed.lease_until_ms > r.lease_until_ms);
        s.unreserve(&r).unwrap();
        assert_eq!(s.unreserve(&r), Err(ReserveError::NotFound));
    }

    #[test]
    fn a_lapsed_or_released_reservation_is_dead_and_swept() {
        let s = seg("lapse");
        let a = s.join("a", "t").unwrap();
        let b = s.join("b", "t").unwrap();
        s.reserve(a, &["src/**"], &ReserveOptions { lease: Duration::from_millis(100), ..opts() }).unwrap();
        // Bounded poll: the lease ends after 100 ms.
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.check_paths(Some(b), &["src/a.rs"]).is_err() {
            assert!(Instant::now() < deadline, "the lapsed reservation still holds");
            std::thread::sleep(Duration::from_millis(5));
        }
        s.reserve(b, &["src/a.rs"], &opts()).unwrap();
        assert_eq!(s.sweep_dead_reservations(), 1);
        // Leaving releases an agent's claims: its reservations die with them.
        s.leave(b).unwrap();
        let c = s.join("c", "t").unwrap();
        s.reserve(c, &["src/a.rs"], &opts()).unwrap();
        assert_eq!(s.sweep_dead_reservations(), 1);
        let mut all = Vec::new();
        s.reservations(&mut all);
        assert_eq!(all.len(), 1);
        assert!(matches!(
            s.check_paths(Some(a), &["./src/a.rs", "README"]),
            Err(ReserveError::Held { holder, glob, .. }) if holder == "c" && glob == "src/a.rs"
        ));
        assert!(matches!(s.check_paths(None, &["../x"]), Err(ReserveError::BadPath { .. })));
    }

    #[test]
    fn claim_reserving_does_both_or_neither() {
        let s = seg("claim");
        let a = s.join("a", "t").unwrap();
        let task = s.add(s.root(), &NewNode::new(NodeKind::Task, "t").status(Status::Ready)).unwrap();
        let lease = Duration::from_secs(60);
        let (c, r) = s.claim_reserving(task, a, lease, &["src/**"], &opts()).unwrap();
        assert_eq!((c.task, r.agent), (task, a));
        let b = s.join("b", "t").unwrap();
        assert!(matches!(
            s.claim_reserving(task, b, lease, &["docs/**"], &opts()),
            Err(ReserveError::Claim(TaskError::AlreadyClaimed { .. }))
        ));
        let mut all = Vec::new();
        s.reservations(&mut all);
        assert_eq!(all.len(), 1, "the failed claim left no reservation");
        // A reservation node is not work.
        assert!(matches!(s.claim(r.node, b, lease), Err(TaskError::NotATask { .. })));
    }

    /// The wait of step 3, made deterministic: an earlier pending reservation waits on a
    /// later pending rival, and loses if the rival confirms, wins if it is withdrawn, and
    /// gives up (`Contended`) if it stays undecided.
    #[test]
    fn an_earlier_pending_reservation_waits_for_a_later_rival_to_be_decided() {
        let s = seg("wait");
        let a = s.join("a", "t").unwrap();
        let b = s.join("b", "t").unwrap();
        let ms = 60_000;
        for rival_outcome in ["confirmed", "withdrawn", "undecided"] {
            let (early, _) = s.insert_pending(a, "w/**", ms, &opts()).unwrap();
            let (late, _) = s.insert_pending(b, "w/x.rs", ms, &opts()).unwrap();
            let me = s.read(early).unwrap();
            let got = std::thread::scope(|sc| {
                let waiter = sc.spawn(|| s.settle_against_others(&me, a));
                std::thread::sleep(Duration::from_millis(20)); // let it start waiting (either way it is correct)
                match rival_outcome {
                    "confirmed" => {
                        s.modify(late, Change::new(EventKind::NODE_UPDATED), |rec| {
                            rec.flags |= reservation_flags::CONFIRMED;
                            Ok::<(), PoolError>(())
                        })
                        .unwrap();
                    }
                    "withdrawn" => {
                        s.delete_node(late, DeleteMode::LeafOnly).unwrap();
                    }
                    _ => {}
                }
                waiter.join().unwrap()
            });
            match rival_outcome {
                "confirmed" => assert!(matches!(got, Err(ReserveError::Conflict { ref holder, .. }) if holder == "b")),
                "withdrawn" => assert_eq!(got, Ok(())),
                _ => assert_eq!(got, Err(ReserveError::Contended)),
            }
            // The later one, seeing the earlier pending one, loses at once.
            if rival_outcome == "undecided" {
                let late_node = s.read(late).unwrap();
                assert!(matches!(s.settle_against_others(&late_node, b), Err(ReserveError::Conflict { .. })));
            }
            s.unreserve_matching(a, None).unwrap();
            s.unreserve_matching(b, None).unwrap();
        }
    }

    #[test]
    fn racing_threads_exactly_one_wins() {
        let s = seg("race");
        let a = s.join("a", "t").unwrap();
        let b = s.join("b", "t").unwrap();
        for round in 0..50 {
            let glob = format!("r{round}/**");
            let other = format!("r{round}/x.rs");
            let wins = std::thread::scope(|sc| {
                let ha = sc.spawn(|| s.reserve(a, &[&glob], &opts()).is_ok());
                let hb = sc.spawn(|| s.reserve(b, &[&other], &opts()).is_ok());
                [ha.join().unwrap(), hb.join().unwrap()]
            });
            assert_eq!(wins.iter().filter(|w| **w).count(), 1, "round {round}: {wins:?}");
            s.unreserve_matching(a, None).unwrap();
            s.unreserve_matching(b, None).unwrap();
        }
    }
}
