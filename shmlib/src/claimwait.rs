//! Blocking claims: [`Segment::claim_next_wait`] parks a worker until a change makes a
//! task it may take claimable, and that change wakes one parked agent — not every idle
//! one — without a syscall when nobody is parked.
//!
//! # Protocol
//!
//! Every agent slot carries a wake word (a futex), the parked claimers' filter (kind,
//! `mine`, subtree, label) and [`CLAIM_PARKERS`] places for the owner tags of its parked
//! processes; the header counts the parked processes of all agents (`claim_parked`).
//!
//! *A waiter* (agent A, in process P): (1) tries `claim_next`; (2) writes the filter
//! (kind, `mine`, subtree, label, assignee), increments `claim_parked`, takes a place in
//! A's slot (compare-and-set 0 → P's tag), fences (SeqCst) and reads A's wake word `w`; (3) tries `claim_next` again; (4) sleeps on the
//! wake word while it still equals `w` (after watching it for the ring's 50 µs spin
//! window, so a hand-off that keeps up never parks), at most [`RECHECK`]; (5) gives its place back
//! and starts over, until it holds a task or the timeout passes.
//!
//! *A change* that leaves a task claimable (ready and unclaimed: created ready, a
//! blocker completed, released, a lapsed lease reaped, reopened, assigned) publishes,
//! unlocks, fences (SeqCst) and loads `claim_parked`: zero → done (the common case, one
//! load). Otherwise it scans the agent table from a turn counter (so consecutive ready
//! tasks go to different agents) for the first live agent with a parked process whose
//! filter matches and to whom the task is open (unassigned, open to all, or assigned to
//! its name or role), *takes one of its parker places* (so a burst of ready tasks goes to
//! different agents, not twice to the first one found), bumps that agent's wake word and
//! wakes one process sleeping on it. One task, one wake-up; an agent the task is not
//! for is never woken.
//!
//! SYNC POINT: the waiter's registration and SeqCst fence before its second try (step 3)
//! pairs with the change's SeqCst fence between publishing and loading
//! `claim_parked`: either the change sees the waiter (and wakes it), or the waiter's
//! second try sees the change's task. A wake that lands between the waiter's read of
//! `w` and its sleep finds the word changed, and the sleep returns at once.
//!
//! # What the re-check covers
//!
//! Sleeps are bounded by [`RECHECK`] (1 s), after which the waiter tries again: a cheap
//! safety net, not the mechanism. It bounds what the fast path cannot promise: a woken
//! process that dies before claiming, processes of one agent parked with different
//! filters (the slot keeps the last filter written), a wake-up of one process of an
//! agent whose place the waker took from another of its processes (that one sleeps on
//! unregistered), and more parked processes of one agent than it has places. The
//! daemon clears dead processes' places every second (`Daemon::sweep_claim_parkers`).
//!
//! The handshake has a loom model (`tests/loom.rs`, `blocking_claim_loses_no_wake_up`).

use crate::agents::AgentId;
use crate::claims::{open_to, Claim, TaskError, TaskFilter};
use crate::layout::{hdr, NodeRecord, CLAIM_PARKERS};
use crate::node::{Handle, NodeKind, Status};
use crate::segment::Segment;
use crate::sync::{fence, Ordering};
use crate::sys::OwnerTag;
use std::time::{Duration, Instant};

/// The longest one sleep of a blocking claim lasts before it looks again.
pub const RECHECK: Duration = Duration::from_secs(1);

/// The longest one brokered request of a blocking claim waits (the broker's reply
/// timeout is longer): a longer wait is several requests, and a client that leaves
/// mid-wait holds the daemon's connection thread at most this long (a claim made for
/// it then is released when its reply cannot be sent).
const BROKERED_CHUNK: Duration = Duration::from_secs(5);

/// The parked claimers' filter as kept in an agent slot's `claim_filter` word:
/// `kind | flags << 8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct WaitFilter(u64);

impl WaitFilter {
    const MINE: u64 = 1 << 8;

    fn of(filter: &TaskFilter) -> WaitFilter {
        let kind = filter.kind.unwrap_or(NodeKind::Task).code() as u64;
        WaitFilter(kind | if filter.mine { Self::MINE } else { 0 })
    }

    fn kind(self) -> u8 {
        self.0 as u8
    }

    fn mine(self) -> bool {
        self.0 & Self::MINE != 0
    }
}

impl Segment {
    /// [`Segment::claim_next`], waiting up to `wait` for a matching task to become
    /// claimable if none is now. Sleeps without spinning or polling (a futex in the
    /// agent's slot; see the module doc), and a change that readies one task wakes one
    /// parked agent the task is open to.
    ///
    /// # Errors
    ///
    /// * [`TaskError::WaitTimedOut`]: nothing matching became claimable within `wait`.
    /// * The errors of [`Segment::claim_next`] other than [`TaskError::NothingReady`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use worknode::{NewNode, NodeKind, Status, TaskError, TaskFilter};
    /// # let name = format!("doc-claim_next_wait-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let me = seg.join("worker", "builder")?;
    /// let (lease, wait) = (Duration::from_secs(30), Duration::from_millis(50));
    /// let none = seg.claim_next_wait(&TaskFilter::default(), me, lease, wait);
    /// assert_eq!(none.unwrap_err(), TaskError::WaitTimedOut);
    /// let task = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "t").status(Status::Ready))?;
    /// assert_eq!(seg.claim_next_wait(&TaskFilter::default(), me, lease, wait)?.task, task);
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn claim_next_wait(
        &self,
        filter: &TaskFilter,
        agent: AgentId,
        lease: Duration,
        wait: Duration,
    ) -> Result<Claim, TaskError> {
        let deadline = crate::sys::deadline(Instant::now(), wait);
        if let Some(link) = self.link() {
            // The daemon parks for us; the wait goes in pieces shorter than the broker's
            // reply timeout.
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let piece = left.min(BROKERED_CHUNK);
                let lease_ms = crate::claims::lease_ms(lease)?;
                let wait_ms = piece.as_millis() as u64;
                match link.ask_claim(crate::broker::Request::ClaimNextWait {
                    filter: *filter,
                    agent,
                    lease_ms,
                    wait_ms,
                }) {
                    Err(TaskError::WaitTimedOut) if Instant::now() < deadline => continue,
                    r => return r,
                }
            }
        }
        let me = self.owner_tag().0;
        // Bounded: each pass sleeps (at most RECHECK) or returns.
        loop {
            match self.claim_next(filter, agent, lease) {
                Err(TaskError::NothingReady) => {}
                r => return r,
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(TaskError::WaitTimedOut);
            }
            let slot = self.agent_slot(agent.index).ok_or(TaskError::UnknownAgent)?;
            let place = self.park_claimer(&slot, me, filter);
            let woke = slot.claim_wake().load(Ordering::Acquire);
            let second = self.claim_next(filter, agent, lease);
            if !matches!(second, Err(TaskError::NothingReady)) {
                self.unpark_claimer(&slot, place, me);
                return second;
            }
            let word = self.map_wake_word(agent.index).ok_or(TaskError::UnknownAgent)?;
            // As the ring's default wait: watch the word for a window shorter than a
            // futex wake-up before sleeping, so a hand-off that keeps up never parks.
            let spin_until = Instant::now() + crate::ring::SPIN_WINDOW;
            let mut spins = 0u32;
            while word.load(Ordering::Acquire) == woke as u32 {
                std::hint::spin_loop();
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(64) && Instant::now() >= spin_until.min(deadline) {
                    let sleep = deadline.saturating_duration_since(Instant::now()).min(RECHECK);
                    crate::sys::futex_wait(word, woke as u32, sleep);
                    break;
                }
            }
            self.unpark_claimer(&slot, place, me);
        }
    }

    /// Takes a parker place in `slot` for tag `me` and writes the filter; returns the
    /// place (`None`: all taken, the waiter sleeps unregistered, woken by its agent's
    /// other parkers' wake-ups or its re-check).
    ///
    /// The count is raised before a place is taken and lowered after one is given
    /// back (by its waiter, the waker that took it, or the daemon's sweep — whoever
    /// clears it by compare-and-set), so it never counts fewer places than are taken: a
    /// process killed in between leaves it one too high, which costs a wasted scan,
    /// never a missed wake-up.
    fn park_claimer(&self, slot: &crate::agents::AgentSlotView<'_>, me: u64, filter: &TaskFilter) -> Option<usize> {
        let [f, under, label, assignee] = slot.claim_filter_words();
        f.store(WaitFilter::of(filter).0, Ordering::Relaxed);
        under.store(filter.under.map_or(0, Handle::to_raw), Ordering::Relaxed);
        label.store(filter.label.unwrap_or(0), Ordering::Relaxed);
        assignee.store(filter.assignee.map_or(0, |k| k.raw()), Ordering::Relaxed);
        let parked = self.hdr(hdr::CLAIM_PARKED);
        parked.fetch_add(1, Ordering::SeqCst);
        let place = slot
            .claim_parkers()
            .iter()
            .position(|p| p.compare_exchange(0, me, Ordering::SeqCst, Ordering::Relaxed).is_ok());
        if place.is_none() {
            let _ = parked.fetch_update(Ordering::SeqCst, Ordering::Relaxed, |n| n.checked_sub(1));
        }
        // SYNC POINT: pairs with the SeqCst fence in `wake_claimers` (module doc): the
        // registration is ordered before the second try's loads.
        fence(Ordering::SeqCst);
        place
    }

    fn unpark_claimer(&self, slot: &crate::agents::AgentSlotView<'_>, place: Option<usize>, me: u64) {
        let Some(p) = place else { return };
        // A place the waker took (it woke us) or the daemon cleared was given back by
        // whoever cleared it.
        if slot.claim_parkers()[p].compare_exchange(me, 0, Ordering::SeqCst, Ordering::Relaxed).is_ok() {
            let parked = self.hdr(hdr::CLAIM_PARKED);
            let _ = parked.fetch_update(Ordering::SeqCst, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// The wake word of agent slot `index` as the 32-bit futex word (the low half of
    /// `claim_wake`; the table is little-endian).
    fn map_wake_word(&self, index: u16) -> Option<&crate::sync::AtomicU32> {
        let r = self.region(crate::layout::Region::Agents);
        if index as u64 >= r.capacity {
            return None;
        }
        let at = r.offset as usize
            + index as usize * std::mem::size_of::<crate::layout::AgentSlot>()
            + std::mem::offset_of!(crate::layout::AgentSlot, claim_wake);
        self.map.u32_at(at)
    }

    /// After a change to node `h` left `rec`: if the task is claimable and a claimer is
    /// parked, wakes one agent it is open to (see the module doc). One load when nobody
    /// is parked.
    pub(crate) fn wake_claimers(&self, h: Handle, rec: &NodeRecord) {
        if rec.status != Status::Ready.code()
            || rec.claim_agent != 0
            || !matches!(NodeKind::from_code(rec.kind), Some(NodeKind::Task | NodeKind::Custom))
        {
            return;
        }
        // SYNC POINT: pairs with the SeqCst increment in `park_claimer`.
        fence(Ordering::SeqCst);
        if self.hdr(hdr::CLAIM_PARKED).load(Ordering::Relaxed) == 0 || !self.map.writable() {
            return;
        }
        let agents = self.caps.agents.min(u16::MAX as u32) as u16;
        if agents == 0 {
            return;
        }
        let turn = self.hdr(hdr::CLAIM_TURN).fetch_add(1, Ordering::Relaxed);
        for step in 0..agents {
            let index = ((turn + step as u64) % agents as u64) as u16;
            let Some(slot) = self.agent_slot(index) else { continue };
            if slot.claim_parkers().iter().all(|p| p.load(Ordering::Acquire) == 0) || slot.live_id(index).is_none() {
                continue;
            }
            if !self.parked_filter_takes(&slot, h, rec) {
                continue;
            }
            // Take the parker's place as we wake it: a second ready task (a burst, a
            // completion readying several) then goes to another parked agent, not to
            // this one again. Lost to a racing waker or unpark: look on.
            let taken = slot.claim_parkers().iter().any(|p| {
                let tag = p.load(Ordering::Acquire);
                tag != 0 && p.compare_exchange(tag, 0, Ordering::SeqCst, Ordering::Relaxed).is_ok()
            });
            if !taken {
                continue;
            }
            let parked = self.hdr(hdr::CLAIM_PARKED);
            let _ = parked.fetch_update(Ordering::SeqCst, Ordering::Relaxed, |n| n.checked_sub(1));
            slot.claim_wake().fetch_add(1, Ordering::Release);
            if let Some(word) = self.map_wake_word(index) {
                crate::sys::futex_wake(word, 1);
            }
            return;
        }
    }

    /// Whether the filter parked in `slot` takes node `h` as `rec` shows it.
    fn parked_filter_takes(&self, slot: &crate::agents::AgentSlotView<'_>, h: Handle, rec: &NodeRecord) -> bool {
        let [f, under, label, assignee] = slot.claim_filter_words();
        let filter = WaitFilter(f.load(Ordering::Relaxed));
        if filter.kind() != rec.kind {
            return false;
        }
        if let Some(k) = crate::PrincipalKey::from_raw(assignee.load(Ordering::Relaxed)) {
            if !crate::claims::assigned_to_any(rec, &[Some(k), None]) {
                return false;
            }
        }
        let keys = slot.keys();
        if !open_to(rec, &keys) || (filter.mine() && !crate::claims::assigned_to_any(rec, &keys)) {
            return false;
        }
        let label = label.load(Ordering::Relaxed);
        if label != 0 && !self.has_label(h, label).unwrap_or(false) {
            return false;
        }
        match Handle::from_raw(under.load(Ordering::Relaxed)) {
            Some(root) if under.load(Ordering::Relaxed) != 0 => self.is_under(h, root),
            _ => true,
        }
    }

    /// Clears the parker places held by processes that no longer run (killed while
    /// parked), lowering the parked count for each, and raises a count found below the
    /// places in use (never lowers it: a count one too high costs a scan, one too low a
    /// missed wake-up). Returns how many places it cleared. The daemon runs it every
    /// second.
    pub(crate) fn sweep_claim_parkers(&self) -> u64 {
        let parked = self.hdr(hdr::CLAIM_PARKED);
        let mut cleared = 0;
        let mut in_use = 0u64;
        let before = parked.load(Ordering::SeqCst);
        for index in 0..self.caps.agents.min(u16::MAX as u32) as u16 {
            let Some(slot) = self.agent_slot(index) else { continue };
            for p in slot.claim_parkers().iter().take(CLAIM_PARKERS) {
                let tag = p.load(Ordering::Acquire);
                if tag == 0 {
                    continue;
                }
                if OwnerTag(tag).is_alive() {
                    in_use += 1;
                } else if p.compare_exchange(tag, 0, Ordering::SeqCst, Ordering::Relaxed).is_ok() {
                    cleared += 1;
                    let _ = parked.fetch_update(Ordering::SeqCst, Ordering::Relaxed, |n| n.checked_sub(1));
                }
            }
        }
        // Only a count that stood still while we looked (a waiter between its count and
        // its place makes a moving count look low).
        if parked.load(Ordering::SeqCst) == before.saturating_sub(cleared) && before.saturating_sub(cleared) < in_use {
            let _ =
                parked.compare_exchange(before.saturating_sub(cleared), in_use, Ordering::SeqCst, Ordering::Relaxed);
        }
        cleared
    }
}
