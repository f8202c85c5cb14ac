//! The daemon's handle: the segment's lifecycle (create, adopt, open to clients, close),
//! housekeeping (reaping, repair, sweeps), durability (the journal's header words) and
//! restore. `worknoded` is its user; nothing an agent links needs it.
//!
//! A [`Daemon`] is obtained only by making or taking over a segment
//! ([`Daemon::create`], [`Daemon::create_unready`], [`Daemon::create_for_restore`],
//! [`Daemon::adopt`]), or — for the daemon's housekeeping done in its absence, `wn doctor
//! --repair` — by [`Daemon::stand_in`]. It dereferences to the agent handle
//! [`Segment`], so the daemon reads, follows the ring and inspects like any client; an
//! agent's [`Segment`] has none of the operations below.
//!
//! Each operation is documented here and implemented beside the protocol it belongs to
//! (claims in `claims`, the journal words in `durability`, restore in `restore`, …) as a
//! crate-private method, so the protocol code stays in one place. Roles are an API
//! discipline, not a security boundary: any process that maps the segment read-write can
//! write any byte of it (see the broker in the design brief for untrusted agents).

use crate::agents::{AgentError, AgentId};
use crate::error::{AttachError, PoolError};
use crate::layout::{hdr, state, AgentSlot, Capacities, EventRecord, NodeRecord};
use crate::node::Handle;
use crate::orset::{OrSetState, SetError};
use crate::restore::RestoreStats;
use crate::segment::{Access, Segment};
use crate::sync::Ordering;
use crate::sys::OwnerTag;
use crate::{DocError, Durability};
use std::time::Duration;

/// The daemon's handle on a segment it made or took over. Dereferences to [`Segment`]
/// (the agent handle) for everything else.
///
/// ```
/// use worknode::{Access, Capacities, Daemon, Segment};
/// # let name = format!("doc-daemon-{}", std::process::id());
/// let daemon = Daemon::create(&name, &Capacities { nodes: 16, ..Capacities::default() }, 0o600)?;
/// let agent = Segment::attach(&name, Access::ReadWrite)?;
/// assert_eq!(daemon.reap_expired_claims(), 0); // the daemon's housekeeping
/// daemon.mark_closing(); // shutdown: agents see Closing, new attaches are refused
/// assert_eq!(agent.state(), worknode::SegmentState::Closing);
/// # drop(agent); drop(daemon); Segment::unlink(&name)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// An agent's handle has none of the daemon's operations: this does not compile.
///
/// ```compile_fail
/// fn shut_down(agent: &worknode::Segment) {
///     agent.mark_closing(); // only `Daemon` has it
/// }
/// ```
pub struct Daemon {
    seg: Segment,
    /// The segment opened read-only when this handle was made (the name then named the
    /// file mapped), duplicated for each brokered agent: never reopened by name, which
    /// could name another file by then.
    read_only: std::fs::File,
}

impl Daemon {
    /// Wraps a segment this process made or took over, opening its read-only descriptor.
    fn holding(seg: Segment) -> Result<Daemon, AttachError> {
        let read_only = crate::sys::open(seg.name(), false)
            .map_err(|errno| AttachError::Os { op: "shm_open (read-only descriptor)", errno })?;
        Ok(Daemon { seg, read_only })
    }
}

impl std::ops::Deref for Daemon {
    type Target = Segment;
    fn deref(&self) -> &Segment {
        &self.seg
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Segment {
        &mut self.seg
    }
}

/// Lifecycle: making, taking over and closing the segment.
impl Daemon {
    /// Creates and initialises a new segment, marking it Ready last. This is the
    /// daemon's job (`worknoded`); tests, benchmarks and tools that need a private
    /// segment call it too, and so hold the daemon handle for it.
    ///
    /// # Errors
    ///
    /// [`AttachError::AlreadyExists`] if the name is taken; `InvalidName`, `UnsafeMode`
    /// (any mode but [`crate::MODE_ALLOWED`]), `Capacity`, `NoSpace`, `PermissionDenied`
    /// or `Os` otherwise. On failure the name is unlinked again.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{Access, AttachError, Capacities, Daemon, Segment};
    /// # let name = format!("doc-create-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// let daemon = Daemon::create(&name, &caps, 0o600)?;
    /// let agent = Segment::attach(&name, Access::ReadWrite)?; // Ready: agents may attach
    /// assert_eq!(agent.capacities().nodes, 16);
    ///
    /// let again = Daemon::create(&name, &caps, 0o600);
    /// assert!(matches!(again, Err(AttachError::AlreadyExists { .. })));
    /// let shared = Daemon::create(&format!("{name}-shared"), &caps, 0o644); // not 600
    /// assert!(matches!(shared, Err(AttachError::UnsafeMode { .. })));
    /// # drop(agent); drop(daemon);
    /// # Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn create(name: &str, caps: &Capacities, mode: u32) -> Result<Daemon, AttachError> {
        let d = Daemon::create_unready(name, caps, mode)?;
        d.open_for_clients();
        Ok(d)
    }

    /// Creates and initialises a segment (root and `/agents` in place) but leaves it
    /// Initializing, so the daemon can set up durability and write its first snapshot
    /// before any client can attach; [`Daemon::open_for_clients`] then marks it Ready.
    ///
    /// # Errors
    ///
    /// As [`Daemon::create`].
    pub fn create_unready(name: &str, caps: &Capacities, mode: u32) -> Result<Daemon, AttachError> {
        Daemon::holding(Segment::create_with(name, caps, mode, true)?)
    }

    /// Creates a segment left in the Initializing state, empty (no root), to be filled
    /// with the `restore_*` calls, finished with [`Daemon::finish_restore`] and opened
    /// with [`Daemon::open_for_clients`]. For the daemon's recovery from its journal.
    ///
    /// # Errors
    ///
    /// As [`Daemon::create`].
    pub fn create_for_restore(name: &str, caps: &Capacities, mode: u32) -> Result<Daemon, AttachError> {
        Daemon::holding(Segment::create_with(name, caps, mode, false)?)
    }

    /// Takes over a segment left by a daemon that died (the caller holds the daemon's
    /// lock, so no other daemon runs): validates it, records the new daemon identity and
    /// marks it Ready.
    ///
    /// # Errors
    ///
    /// A half-initialised segment is refused as [`AttachError::Incomplete`], one whose
    /// recorded daemon still runs as [`AttachError::DaemonRunning`]; otherwise the errors
    /// of [`Segment::attach`].
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{AttachError, Daemon, SegmentState};
    /// # let name = format!("doc-adopt-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let old = Daemon::create(&name, &caps, 0o600)?;
    /// # drop(old); // the daemon that made the segment is gone (here: its handle)
    /// let daemon = Daemon::adopt(&name)?;
    /// assert_eq!(daemon.state(), SegmentState::Ready);
    /// assert_eq!(daemon.inspect().info().adopt_count, 1);
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    ///
    /// // A segment its daemon never finished initialising is not taken over.
    /// # let name = format!("{name}-unready");
    /// let unready = Daemon::create_unready(&name, &caps, 0o600)?;
    /// assert!(matches!(Daemon::adopt(&name), Err(AttachError::Incomplete)));
    /// # drop(unready);
    /// # worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn adopt(name: &str) -> Result<Daemon, AttachError> {
        let mut seg = Segment::map_existing(name, Access::ReadWrite)?;
        seg.trusted = true;
        match seg.state_word() {
            state::READY | state::CLOSING => {}
            _ => return Err(AttachError::Incomplete),
        }
        // The instance lock is the first guard; this is the second: a daemon whose
        // process still runs keeps its segment, whatever lock another daemon could take
        // (say, one whose runtime directory differs).
        let running = OwnerTag(seg.hdr(hdr::DAEMON_TAG).load(Ordering::Acquire));
        if running != seg.me && running.is_alive() {
            return Err(AttachError::DaemonRunning { pid: running.pid() });
        }
        seg.claim_daemon_identity();
        seg.hdr(hdr::ADOPT_COUNT).fetch_add(1, Ordering::Relaxed);
        // Whatever the last daemon's clients left half-done, every claimable record is
        // indexed again (additive, safe beside the clients writing now).
        seg.rebuild_ready_index();
        seg.hdr(hdr::STATE).store(state::READY, Ordering::Release);
        Daemon::holding(seg)
    }

    /// Attaches read-write to do the daemon's housekeeping in its place (`wn doctor
    /// --repair`, and tests that play the daemon for a segment a child process made).
    /// Unlike [`Daemon::adopt`] it takes nothing over: the daemon's identity, the state
    /// word and the journal's words stay as they are, and it works whether or not the
    /// daemon runs (every housekeeping operation is safe beside a running daemon).
    ///
    /// # Errors
    ///
    /// As [`Segment::attach`] with [`Access::ReadWrite`].
    pub fn stand_in(name: &str) -> Result<Daemon, AttachError> {
        let mut seg = Segment::attach(name, Access::ReadWrite)?;
        seg.trusted = true;
        Daemon::holding(seg)
    }

    /// Marks a segment made by [`Daemon::create_unready`] or
    /// [`Daemon::create_for_restore`] Ready: clients may attach from now on.
    pub fn open_for_clients(&self) {
        // Records restored or changed field by field since `finish_restore` are indexed
        // before any client can look (additive: nothing indexed is lost).
        self.seg.rebuild_ready_index();
        self.seg.mark_ready();
    }

    /// Marks the segment Closing (daemon shutdown). Attached clients can see it through
    /// [`Segment::state`]; new attaches are refused.
    pub fn mark_closing(&self) {
        if self.map.writable() {
            self.hdr(hdr::STATE).store(state::CLOSING, Ordering::Release);
        }
    }

    /// The agent handle this daemon handle wraps.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }
}

/// Housekeeping: what dead or slow processes left behind. Each is idempotent and bounded
/// (O(pool) or O(table)).
impl Daemon {
    /// Releases every claim whose lease has lapsed (`claim_expired`). The daemon runs
    /// this every 100 ms. Returns how many.
    pub fn reap_expired_claims(&self) -> usize {
        self.seg.reap_expired_claims()
    }

    /// Reaps an agent whose session process died: as [`Segment::leave`], but the event
    /// is `agent_lost`. The daemon calls this when a session connection reaches EOF.
    ///
    /// # Errors
    ///
    /// As [`Segment::leave`].
    pub fn reap_agent(&self, id: AgentId) -> Result<(), AgentError> {
        self.seg.reap_agent(id)
    }

    /// Clears the blocking-claim places of processes killed while parked, and corrects
    /// the parked count if it drifted. The daemon runs this every second. Returns how
    /// many places it cleared.
    pub fn sweep_claim_parkers(&self) -> u64 {
        self.seg.sweep_claim_parkers()
    }

    /// Reaps every agent whose session process is gone (sessions that never reached the
    /// daemon's socket). Returns how many.
    pub fn reap_dead_sessions(&self) -> usize {
        self.seg.reap_dead_sessions()
    }

    /// Makes ready every blocked task whose blockers are all complete (or deleted): the
    /// safety net for what a completion's own wake-up can miss (its process died before
    /// the scan, a dependent stayed locked, a blocker was deleted). The daemon runs it
    /// every second. Returns how many it made ready.
    pub fn settle_blocked(&self) -> usize {
        self.seg.settle_blocked()
    }

    /// Indexes every claimable record in the ready index again (additively: it only
    /// sets bits): the safety net for the one window a killed process can leave a ready
    /// task's bit unreachable (between a finder's clear of an upper bit and its look
    /// below). The daemon runs it every second. O(pool), one word per slot.
    pub fn reindex_ready(&self) {
        self.seg.rebuild_ready_index()
    }

    /// Deletes every dead reservation — its claim released (its agent left or died) or
    /// its lease lapsed — so `/reservations` holds only what holds. The daemon runs it
    /// every second, after the lease sweep. Returns how many it deleted.
    pub fn sweep_dead_reservations(&self) -> usize {
        self.seg.sweep_dead_reservations()
    }

    /// Takes readers that were killed while parked off the waiter count, so producers
    /// stop paying a wake syscall for them. The daemon runs it every second. Returns how
    /// many it removed.
    pub fn sweep_dead_waiters(&self) -> usize {
        self.seg.sweep_dead_waiters()
    }

    /// Repairs node slots left by processes that died (or forged locks): takes each such
    /// lock over (repairing the record and, if needed, its child list), frees a slot
    /// still *reserved* by a dead creator, and indexes and links a live node its creator
    /// died before indexing or linking. The daemon runs it every second. Returns how
    /// many slots it repaired.
    ///
    /// # Errors
    ///
    /// [`PoolError::ReadOnly`], or an error of the repair itself (a corrupt link).
    pub fn repair_dead_holders(&self) -> Result<u64, PoolError> {
        self.seg.repair_dead_holders()
    }

    /// Gives back blob chunks and set slots that a process killed mid-operation left off
    /// their free lists: between taking them and recording them in a node, or between
    /// unlinking a document's content and freeing it. Each such chunk or slot names the
    /// process responsible for it (its owner word); only those whose owner is dead are
    /// judged, under the lock of the node they were meant for, so a live operation's
    /// chunks are never touched. A document whose content a killed in-place replace had
    /// already destroyed is emptied (status pending) rather than left naming freed
    /// chunks. The daemon runs it every second. Bounded: one pass over the arena and the
    /// set table, one node lock per candidate.
    ///
    /// # Errors
    ///
    /// [`PoolError::ReadOnly`] (or `Closing`, `DaemonGone`): the segment takes no writes.
    /// A damaged chain or slot is not an error: it is skipped, left for `wn doctor`.
    ///
    /// # Examples
    ///
    /// ```
    /// # let name = format!("doc-reclaim-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// daemon.put_document(daemon.root(), "notes", "text/plain", b"kept")?;
    /// // Nothing was leaked, so nothing is reclaimed (attached content is never taken).
    /// assert_eq!(daemon.reclaim_leaked()?, worknode::Reclaimed::default());
    /// assert_eq!(daemon.free_blob_chunks()?, 7);
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reclaim_leaked(&self) -> Result<Reclaimed, PoolError> {
        let blobs = self.seg.reclaim_leaked_blobs()?;
        let set_slots = self.seg.reclaim_leaked_sets()?;
        Ok(Reclaimed { blob_chunks: blobs.chunks, set_slots, documents_emptied: blobs.emptied })
    }
}

/// What [`Daemon::reclaim_leaked`] gave back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reclaimed {
    /// Blob chunks returned to the arena's free list.
    pub blob_chunks: u64,
    /// Set slots returned to the set free list.
    pub set_slots: u64,
    /// Documents emptied because a process killed while replacing them in place had
    /// already overwritten their old content.
    pub documents_emptied: u64,
}

impl Reclaimed {
    /// Whether anything was reclaimed.
    pub fn is_empty(&self) -> bool {
        *self == Reclaimed::default()
    }
}

/// Durability: the header words the daemon's journal publishes.
impl Daemon {
    /// Sets the policy and the cursors (when the daemon starts journaling at `next`),
    /// with a first heartbeat allowing `stale` and the first sequence reservation
    /// `reserved` (already on disk). With [`Durability::Off`] neither is checked.
    pub fn set_durability(&self, d: Durability, next: u64, reserved: u64, stale: Duration) {
        self.seg.set_durability(d, next, reserved, stale)
    }

    /// Says the journal is alive, fresh for `stale` from now (the heartbeat thread).
    pub fn journal_beat(&self, stale: Duration) {
        self.seg.journal_beat(stale)
    }

    /// Counts one group-commit fsync of the journal that took `took` (the header's
    /// `journal_fsyncs` / `journal_fsync_ns`, which `wn metrics` shows as a summary).
    pub fn record_journal_fsync(&self, took: Duration) {
        self.seg.record_journal_fsync(took)
    }

    /// Raises the sequence reservation to `upto`, which the journal has written to disk
    /// and synced.
    pub fn publish_reservation(&self, upto: u64) {
        self.seg.publish_reservation(upto)
    }

    /// Publishes the journal's progress (every sequence below `journaled` is written,
    /// below `durable` on disk) and wakes writers waiting for it.
    pub fn publish_journal_progress(&self, journaled: u64, durable: u64) {
        self.seg.publish_journal_progress(journaled, durable)
    }

    /// Sleeps until a producer under `always` asks for a commit, or `timeout`.
    pub fn journal_sleep(&self, timeout: Duration) {
        self.seg.journal_sleep(timeout)
    }

    /// Records that snapshot requests up to `n` are served.
    pub fn set_snapshots_done(&self, n: u64) {
        self.seg.set_snapshots_done(n)
    }
}

/// Restore: rebuilding a segment made by [`Daemon::create_for_restore`] slot for slot
/// from saved state. Every call refuses a segment that is not Initializing.
impl Daemon {
    /// Writes a node into slot `index` at `generation`.
    ///
    /// # Errors
    ///
    /// [`PoolError::Corrupt`] for a segment not being restored, an index outside the
    /// pool or generation 0.
    pub fn restore_node(&self, index: u32, generation: u32, rec: &NodeRecord) -> Result<(), PoolError> {
        self.seg.restore_node(index, generation, rec)
    }

    /// Re-attaches a document's content to the node restored in slot `index` (after
    /// [`Daemon::restore_node`]).
    ///
    /// # Errors
    ///
    /// As [`Daemon::restore_node`], or the blob arena is full.
    pub fn restore_document(&self, index: u32, bytes: &[u8]) -> Result<(), DocError> {
        self.seg.restore_document(index, bytes)
    }

    /// Writes a whole set into the node restored in slot `index`. Emits nothing.
    ///
    /// # Errors
    ///
    /// As [`Daemon::restore_node`], or no set slot is free.
    pub fn restore_set(&self, index: u32, state: &OrSetState) -> Result<(), SetError> {
        self.seg.restore_set(index, state)
    }

    /// Writes an agent into table slot `index`.
    ///
    /// # Errors
    ///
    /// As [`Daemon::restore_node`], or the index is outside the table.
    pub fn restore_agent(&self, index: u16, agent: &AgentSlot) -> Result<(), PoolError> {
        self.seg.restore_agent(index, agent)
    }

    /// Salvage of a state that lost its root or `/agents` container (no snapshot could
    /// be read): writes a new, empty container named `name` into free slot `index`
    /// under `parent` (the root: slot 0, no parent).
    ///
    /// # Errors
    ///
    /// As [`Daemon::restore_node`], or `name` is not a valid name.
    pub fn restore_new_container(&self, index: u32, parent: Option<Handle>, name: &str) -> Result<Handle, PoolError> {
        self.seg.restore_new_container(index, parent, name)
    }

    /// Puts events back into the ring (the newest `capacity` of them are kept) and
    /// continues numbering at `next_seq`. Returns how many were kept.
    ///
    /// # Errors
    ///
    /// As [`Daemon::restore_node`].
    pub fn restore_events(&self, events: &[EventRecord], next_seq: u64) -> Result<u64, PoolError> {
        self.seg.restore_events(events, next_seq)
    }

    /// Derives the free list, id index, child lists, summaries and counters from the
    /// restored slots. The root must be in slot 0. The segment stays Initializing until
    /// [`Daemon::open_for_clients`].
    ///
    /// # Errors
    ///
    /// [`PoolError::Corrupt`] when the restored state is inconsistent (no root in slot
    /// 0, a slot outside the pool, …).
    pub fn finish_restore(&self) -> Result<RestoreStats, PoolError> {
        self.seg.finish_restore()
    }
}

/// Tokens and the broker: what only the daemon decides (who may write, and as whom).
impl Daemon {
    /// Sets the policy bits clients read ([`crate::layout::policy`]): whether direct
    /// handles need a token, whether the broker serves other users. Call before
    /// [`Daemon::open_for_clients`] (or right after adopting): the fixed header is
    /// watched by the daemon's guard from then on.
    pub fn set_policy(&self, bits: u64) {
        self.hdr(hdr::POLICY).store(bits, Ordering::Relaxed);
    }

    /// A fresh agent handle that acts under `token`, which the caller (the daemon's
    /// broker) verified: every change it makes is checked against the token's rights and
    /// subtree, and its events carry the token's agent. The broker applies one brokered
    /// agent's requests through it.
    ///
    /// # Errors
    ///
    /// As [`Segment::attach`] with [`Access::ReadWrite`].
    pub fn granted_handle(&self, token: crate::Token) -> Result<Segment, AttachError> {
        let seg = Segment::attach_with(self.name(), Access::ReadWrite, Duration::ZERO)?;
        seg.set_grant(crate::grant::Grant::verified(token));
        Ok(seg)
    }

    /// A read-only descriptor of the segment, to pass to a brokered agent: a mapping of
    /// it cannot be made writable, and the file stays mode 0600. A duplicate of the one
    /// opened when this handle was made.
    ///
    /// # Errors
    ///
    /// The `errno` of `dup` (out of descriptors).
    pub fn read_only_descriptor(&self) -> Result<std::fs::File, nix::errno::Errno> {
        self.read_only.try_clone().map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)))
    }
}
