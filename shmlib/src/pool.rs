//! The Worknode pool: creating, reading, updating, deleting and listing nodes in the
//! segment's fixed array of slots.
//!
//! * Slots are found by index, validated by generation: a [`Handle`] to a slot that was
//!   freed (and perhaps reused) is refused, never followed.
//! * Free slots form a lock-free ABA-tagged stack (`freelist`).
//! * Each record is guarded by a double-buffered seqlock with a crash-tolerant writer
//!   lock (`seqlock`): reads are a copy of 512 bytes with no store and no syscall.
//! * The tree: each slot links its first/last child and its siblings. A node's child
//!   list is changed only while holding that node's writer lock, and published through a
//!   second sequence word (`child_seq`) so listing children is a consistent snapshot
//!   without scanning the pool. Locks are always taken parent before child, so two
//!   writers can never wait on each other in a cycle.
//! * A process that dies holding a lock is detected by its owner tag (pid + start time)
//!   and the lock taken over; a child list it may have left half-linked is rebuilt from
//!   the children's own parent fields.

use crate::error::PoolError;
use crate::event::{EventKind, NewEvent};
use crate::freelist::{self, FreeHead, FreeListError};
use crate::genstate::{self, gen_of, next_generation, pack, state_of};
use crate::index::IdIndex;
use crate::layout::{hdr, slot, NodeRecord, Region, RECORD_WORDS};
use crate::node::{Handle, NewNode, Node, NodeKind, Status};
use crate::segment::Segment;
use crate::seqlock;
use crate::summary::Summary;
use crate::sync::{fence, AtomicU64, Ordering};
use crate::sys::OwnerTag;
use crossbeam_utils::Backoff;
use uuid::Uuid;

/// Words in one node slot.
const SLOT_WORDS: usize = crate::layout::NODE_SLOT_SIZE as usize / 8;
/// The root container always lives in slot 0.
const ROOT_INDEX: u32 = 0;

/// A view of one node slot's words (bounds-checked once, when made).
#[derive(Clone, Copy)]
pub(crate) struct Slot<'a> {
    w: &'a [AtomicU64],
}

impl<'a> Slot<'a> {
    fn word(&self, offset: usize) -> &'a AtomicU64 {
        &self.w[offset / 8]
    }
    pub(crate) fn seq(&self) -> &'a AtomicU64 {
        self.word(slot::SEQ)
    }
    pub(crate) fn lock(&self) -> &'a AtomicU64 {
        self.word(slot::LOCK)
    }
    pub(crate) fn gen_state(&self) -> &'a AtomicU64 {
        self.word(slot::GEN_STATE)
    }
    pub(crate) fn next_free(&self) -> &'a AtomicU64 {
        self.word(slot::NEXT_FREE)
    }
    pub(crate) fn uuid_words(&self) -> [&'a AtomicU64; 2] {
        [self.word(slot::UUID), self.word(slot::UUID + 8)]
    }
    pub(crate) fn child_seq(&self) -> &'a AtomicU64 {
        self.word(slot::CHILD_SEQ)
    }
    pub(crate) fn child_count(&self) -> &'a AtomicU64 {
        self.word(slot::CHILD_COUNT)
    }
    pub(crate) fn first_child(&self) -> &'a AtomicU64 {
        self.word(slot::FIRST_CHILD)
    }
    pub(crate) fn last_child(&self) -> &'a AtomicU64 {
        self.word(slot::LAST_CHILD)
    }
    pub(crate) fn next_sibling(&self) -> &'a AtomicU64 {
        self.word(slot::NEXT_SIBLING)
    }
    pub(crate) fn prev_sibling(&self) -> &'a AtomicU64 {
        self.word(slot::PREV_SIBLING)
    }
    pub(crate) fn copies(&self) -> [&'a [AtomicU64]; 2] {
        let r = slot::RECORDS / 8;
        [&self.w[r..r + RECORD_WORDS], &self.w[r + RECORD_WORDS..r + 2 * RECORD_WORDS]]
    }
    /// The two copies as fixed-size arrays, so copies of them unroll.
    fn copies_array(&self) -> [&'a [AtomicU64; RECORD_WORDS]; 2] {
        let [a, b] = self.copies();
        // Both slices are exactly RECORD_WORDS long (see `copies`).
        [
            a.try_into().expect("invariant: a record copy is RECORD_WORDS words"),
            b.try_into().expect("invariant: a record copy is RECORD_WORDS words"),
        ]
    }
    pub(crate) fn summary(&self) -> &'a AtomicU64 {
        self.word(slot::SUMMARY)
    }
    pub(crate) fn created(&self) -> &'a AtomicU64 {
        self.word(slot::CREATED)
    }
    pub(crate) fn name_hash(&self) -> &'a AtomicU64 {
        self.word(slot::NAME_HASH)
    }
    fn has_uuid(&self, uuid: [u64; 2]) -> bool {
        let [a, b] = self.uuid_words();
        a.load(Ordering::Acquire) == uuid[0] && b.load(Ordering::Acquire) == uuid[1]
    }
}

pub(crate) fn uuid_words(uuid: &[u8; 16]) -> [u64; 2] {
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&uuid[..8]);
    b.copy_from_slice(&uuid[8..]);
    [u64::from_be_bytes(a), u64::from_be_bytes(b)]
}

pub(crate) fn link(index: u32) -> u64 {
    index as u64 + 1
}

fn unlink_value(v: u64) -> Option<u32> {
    v.checked_sub(1).map(|i| i as u32)
}

fn freelist_error(e: FreeListError) -> PoolError {
    match e {
        FreeListError::Corrupt => PoolError::Corrupt { what: "free list names a slot outside the pool" },
        FreeListError::Contended => PoolError::Contended,
    }
}

/// Releases a writer lock when dropped, on every exit path (closures may fail or panic).
pub(crate) struct Locked<'a>(&'a AtomicU64, u64);

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        seqlock::unlock(self.0, self.1);
    }
}

/// The event a [`Segment::modify`] emits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Change<'a> {
    pub kind: EventKind,
    pub actor: Option<Handle>,
    /// Task events: the payload is `{"epoch":E,"note":N}`, with the epoch taken from the
    /// record as the change left it (so it is built under the lock, like the event).
    pub epoch_note: Option<&'a str>,
    /// Progress events: the percentage, in the payload after the epoch.
    pub percent: Option<u8>,
    /// Any other payload, built by the caller (used when `epoch_note` is `None`).
    pub payload: Option<&'a [u8]>,
}

impl<'a> Change<'a> {
    pub(crate) fn new(kind: EventKind) -> Self {
        Change { kind, actor: None, epoch_note: None, percent: None, payload: None }
    }
    /// A progress event: the payload carries the percentage too.
    pub(crate) fn with_percent(mut self, percent: u8) -> Self {
        self.percent = Some(percent);
        self
    }
    pub(crate) fn by(mut self, actor: Option<Handle>) -> Self {
        self.actor = actor;
        self
    }
    /// An event carrying `payload` as it is.
    pub(crate) fn with_payload(mut self, payload: &'a [u8]) -> Self {
        self.payload = Some(payload);
        self
    }
    /// A task event naming the record's claim epoch and `note`.
    pub(crate) fn with_epoch(mut self, note: &'a str) -> Self {
        self.epoch_note = Some(note);
        self
    }
}

/// Whether [`Segment::delete`] removes only a leaf or a whole subtree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DeleteMode {
    /// Refuse with [`PoolError::HasChildren`] if the node has children.
    LeafOnly,
    /// Delete the node and every descendant.
    Recursive,
}

impl Segment {
    /// The slot at `index`, or `None` if out of range.
    pub(crate) fn slot(&self, index: u32) -> Option<Slot<'_>> {
        let nodes = self.region(Region::Nodes);
        if index as u64 >= nodes.capacity {
            return None;
        }
        let offset = nodes.offset as usize + index as usize * SLOT_WORDS * 8;
        self.map.words_at(offset, SLOT_WORDS).map(|w| Slot { w })
    }

    pub(crate) fn index(&self) -> Result<IdIndex<'_>, PoolError> {
        let r = self.region(Region::Index);
        let entries = self
            .map
            .words_at(r.offset as usize, r.capacity as usize)
            .ok_or(PoolError::Corrupt { what: "index region outside the segment" })?;
        Ok(IdIndex { entries, max_probe: self.hdr(hdr::INDEX_MAX_PROBE) })
    }

    pub(crate) fn free_head(&self) -> &AtomicU64 {
        self.hdr(hdr::POOL_FREE_HEAD)
    }

    pub(crate) fn require_writable(&self) -> Result<(), PoolError> {
        if !self.map.writable() {
            return Err(PoolError::ReadOnly);
        }
        if self.state() == crate::SegmentState::Closing {
            return Err(PoolError::Closing);
        }
        self.require_journal_alive()
    }

    /// The slot of a live handle.
    fn live_slot(&self, h: Handle) -> Result<Slot<'_>, PoolError> {
        let s = self.slot(h.index).ok_or(PoolError::NotFound)?;
        let gs = s.gen_state().load(Ordering::Acquire);
        if gen_of(gs) != h.generation || state_of(gs) != slot::LIVE {
            return Err(PoolError::StaleHandle);
        }
        Ok(s)
    }

    /// Takes a slot's writer lock; repairs what a dead holder left behind.
    fn lock_slot<'s>(&'s self, index: u32, s: Slot<'s>) -> Result<Locked<'s>, PoolError> {
        seqlock::lock(s.lock(), s.seq(), self.me.0, self.lock_wait, |t| self.holder_gone(t), || {})
            .map_err(|b| PoolError::Busy { holder_pid: OwnerTag(b.holder).pid() })?;
        let guard = Locked(s.lock(), self.me.0);
        // An odd record sequence under a lock that was free is damage (a dead holder's was
        // repaired by the takeover): make it even again, keeping the active copy.
        seqlock::repair(s.seq());
        // Odd under our lock means a holder died mid-change (its lock was just taken
        // over), or an earlier rebuild failed part-way: rebuild it.
        if s.child_seq().load(Ordering::Relaxed) & 1 == 1 {
            self.rebuild_children(index, s)?;
        }
        Ok(guard)
    }

    /// The root container's handle.
    pub fn root(&self) -> Handle {
        let gs = self.slot(ROOT_INDEX).map_or(0, |s| s.gen_state().load(Ordering::Acquire));
        Handle { index: ROOT_INDEX, generation: gen_of(gs) }
    }

    /// Sets every slot free at generation 1.
    pub(crate) fn init_slots(&self) -> Result<(), PoolError> {
        for i in 0..self.caps.nodes {
            let s = self.slot(i).ok_or(PoolError::Corrupt { what: "node region outside the segment" })?;
            s.gen_state().store(pack(1, slot::FREE), Ordering::Relaxed);
        }
        Ok(())
    }

    /// Lays out the pool of a new segment (see [`Segment::init_slots`]), the free list,
    /// the root container in slot 0 and the `agents` container under it.
    pub(crate) fn init_pool(&self) -> Result<Handle, PoolError> {
        let cap = self.caps.nodes;
        self.init_slots()?;
        freelist::init(self.free_head(), 0..cap, |i| self.slot(i).map(|s| s.next_free())).map_err(freelist_error)?;
        let now = self.now();
        let rec =
            NewNode::new(NodeKind::Container, "root").status(Status::Ready).to_record(Uuid::now_v7(), None, now)?;
        let h = self.install(rec, None)?;
        debug_assert_eq!(h.index, ROOT_INDEX);
        let agents = NewNode::new(NodeKind::Container, "agents").status(Status::Ready);
        self.add(h, &agents)
    }

    /// Adds a node under `parent` and returns its handle. The node gets a new UUID
    /// (v7), version 1 and a `node_created` event.
    ///
    /// # Errors
    ///
    /// On error nothing is left behind (except after `EventNotAppended`).
    ///
    /// * [`PoolError::ReadOnly`], [`PoolError::Closing`], [`PoolError::DaemonGone`]: the
    ///   segment takes no writes (a read-only mapping, the daemon shutting down, or the
    ///   daemon that journals it gone); nothing is changed.
    /// * [`PoolError::StaleHandle`] / [`PoolError::NotFound`]: `parent` was deleted (or
    ///   never named a node).
    /// * [`PoolError::NameTooLong`], [`PoolError::DescriptionTooLong`],
    ///   [`PoolError::NameHasControl`], [`PoolError::ValueOutOfRange`]: `spec` is not
    ///   storable.
    /// * [`PoolError::PoolFull`]: every node slot is in use.
    /// * [`PoolError::Busy`]: another live process holds the parent's lock too long.
    /// * [`PoolError::EventNotAppended`]: the node was added but its event was not.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{NewNode, NodeKind, PoolError};
    /// # let name = format!("doc-add-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let task = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "write docs").priority(3))?;
    /// let node = seg.read(task)?;
    /// assert_eq!((node.name(), node.priority(), node.version()), ("write docs", 3, 1));
    /// assert_eq!(node.parent(), Some(seg.root()));
    ///
    /// let long = "x".repeat(1000);
    /// let refused = seg.add(seg.root(), &NewNode::new(NodeKind::Task, &long));
    /// assert!(matches!(refused, Err(PoolError::NameTooLong { .. })));
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add(&self, parent: Handle, spec: &NewNode<'_>) -> Result<Handle, PoolError> {
        if let Some(link) = self.link() {
            return link.ask_handle(crate::broker::Request::Add { parent, spec: spec.into() });
        }
        self.permit(crate::token::Right::Create, Some(parent))?;
        self.permit_new_node(spec)?;
        crate::node::check_node_name(spec.name)?;
        self.add_node(parent, spec)
    }

    /// [`Segment::add`] without the token check (for operations that made their own).
    pub(crate) fn add_node(&self, parent: Handle, spec: &NewNode<'_>) -> Result<Handle, PoolError> {
        self.add_node_with(parent, spec, |_| {})
    }

    /// [`Segment::add_node`], with `f` completing the record before it goes live (a
    /// reservation is born held, so no reader ever sees it unclaimed).
    pub(crate) fn add_node_with(
        &self,
        parent: Handle,
        spec: &NewNode<'_>,
        f: impl FnOnce(&mut NodeRecord),
    ) -> Result<Handle, PoolError> {
        self.add_node_full(parent, spec, Uuid::now_v7(), f)
    }

    /// [`Segment::add_node_with`] with the UUID given (`Segment::add_with_uuid`).
    pub(crate) fn add_node_full(
        &self,
        parent: Handle,
        spec: &NewNode<'_>,
        uuid: Uuid,
        f: impl FnOnce(&mut NodeRecord),
    ) -> Result<Handle, PoolError> {
        self.require_writable()?;
        self.live_slot(parent)?;
        let mut rec = spec.to_record(uuid, Some(parent), self.now())?;
        crate::origin::stamp_record(&mut rec);
        f(&mut rec);
        self.install(rec, Some(parent))
    }

    /// Takes a free slot, writes `rec` into it, indexes it and links it under `parent`.
    fn install(&self, rec: NodeRecord, parent: Option<Handle>) -> Result<Handle, PoolError> {
        let index = freelist::pop(self.free_head(), |i| self.slot(i).map(|s| s.next_free()))
            .map_err(freelist_error)?
            .ok_or(PoolError::PoolFull { capacity: self.caps.nodes })?;
        let s = self.slot(index).ok_or(PoolError::Corrupt { what: "free list names a slot outside the pool" })?;
        // FREE -> RESERVED by compare-and-set: a slot that is not free (a live node named
        // by a damaged free list) is refused and left exactly as it was, and not pushed
        // back (it is not ours).
        let generation = genstate::reserve(s.gen_state())
            .map_err(|_| PoolError::Corrupt { what: "free list names a slot that is not free" })?;
        let guard = match self.lock_slot(index, s) {
            Ok(g) => g,
            Err(e) => {
                genstate::unreserve(s.gen_state(), generation);
                let _ = freelist::push(self.free_head(), index, s.next_free());
                return Err(e);
            }
        };
        let handle = Handle { index, generation };
        let id = uuid_words(&rec.uuid);
        s.uuid_words()[0].store(id[0], Ordering::Relaxed);
        s.uuid_words()[1].store(id[1], Ordering::Relaxed);
        for w in [s.first_child(), s.last_child(), s.next_sibling(), s.prev_sibling(), s.child_count()] {
            w.store(0, Ordering::Relaxed);
        }
        s.created().store(rec.created, Ordering::Relaxed);
        // Indexed before it is published (and before the slot goes live): see `ready`.
        self.index_before_publish(index, &rec);
        publish(s, &rec);
        s.gen_state().store(pack(generation, slot::LIVE), Ordering::Release);

        // Undo for a failure after the slot went live: free it again (new generation),
        // unlock, and only then hand it back to the free list.
        let abandon = |guard: Locked<'_>, e: PoolError| {
            s.gen_state().store(pack(next_generation(generation), slot::FREE), Ordering::Release);
            self.index_after_publish(index, &rec, None);
            drop(guard);
            let _ = freelist::push(self.free_head(), index, s.next_free());
            e
        };
        let idx = match self.index() {
            Ok(idx) => idx,
            Err(e) => return Err(abandon(guard, e)),
        };
        match idx.insert(&rec.uuid, index) {
            Ok(reused) => {
                if reused {
                    self.hdr(hdr::INDEX_TOMBSTONES).fetch_sub(1, Ordering::Relaxed);
                }
                self.hdr(hdr::INDEX_USED).fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => return Err(abandon(guard, PoolError::Corrupt { what: "id index full" })),
        }
        if let Some(p) = parent {
            let name = &rec.name[..(rec.name_len as usize).min(rec.name.len())];
            if let Err(e) = self.link_under(p, index, s, Some(name)) {
                self.unindex(&rec.uuid, index);
                return Err(abandon(guard, e));
            }
        }
        self.hdr(hdr::POOL_USED).fetch_add(1, Ordering::Relaxed);
        self.hdr(hdr::CREATED).fetch_add(1, Ordering::Relaxed);
        // Appended under the node's lock, so a node's events are in version order.
        let appended = self.emit(EventKind::NODE_CREATED, handle, &rec, crate::Hlc(rec.created));
        drop(guard);
        if appended.is_ok() {
            self.wake_claimers(handle, &rec);
        }
        appended.map(|_| handle)
    }

    /// Finds node slots whose writer lock is held by a process that no longer exists (or
    /// by a live one that does not map the segment: a forged lock, see `inspect`),
    /// takes each lock over (which repairs the record's sequence word and, if needed,
    /// its child list) and finishes or undoes what the dead process left:
    /// * a slot still *reserved* (its creator died before it went live) is freed;
    /// * a live node missing from the id index or from its parent's child list (its
    ///   creator died between those steps) is indexed and linked.
    ///
    /// The daemon runs this periodically (`Daemon::repair_dead_holders`). O(pool).
    pub(crate) fn repair_dead_holders(&self) -> Result<u64, PoolError> {
        self.require_writable()?;
        let mut repaired = 0;
        for i in 0..self.caps.nodes {
            let Some(s) = self.slot(i) else { break };
            let holder = s.lock().load(Ordering::Acquire);
            // Dead, or forged (a live process that does not map the segment).
            if holder == 0 || !self.holder_gone(holder) {
                continue;
            }
            let guard = match self.lock_slot(i, s) {
                Ok(g) => g,
                Err(_) => continue,
            };
            repaired += 1;
            let gs = s.gen_state().load(Ordering::Acquire);
            match state_of(gs) {
                slot::RESERVED => {
                    s.gen_state().store(pack(next_generation(gen_of(gs)), slot::FREE), Ordering::Release);
                    drop(guard);
                    freelist::push(self.free_head(), i, s.next_free()).map_err(freelist_error)?;
                }
                slot::LIVE => {
                    // The dead writer may have died between its index update and its
                    // publish: index the record as it stands (see `ready`).
                    if let Some(ix) = self.ready_index() {
                        self.index_slot(&ix, i);
                    }
                    let h = Handle { index: i, generation: gen_of(gs) };
                    let mut words = [0u64; RECORD_WORDS];
                    seqlock::read_locked(s.seq(), s.copies(), &mut words);
                    let rec: NodeRecord = bytemuck::cast(words);
                    if self.lookup(Uuid::from_bytes(rec.uuid)) != Ok(h) {
                        if let Ok(idx) = self.index() {
                            if idx.insert(&rec.uuid, i).is_ok() {
                                self.hdr(hdr::INDEX_USED).fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    drop(guard);
                    if let Some(p) = Handle::from_raw(rec.parent) {
                        // Links only if not linked yet (see `link_under`); a repair keeps
                        // the node even if a sibling took its name meanwhile.
                        let _ = self.link_under(p, i, s, None);
                    }
                }
                _ => drop(guard),
            }
        }
        Ok(repaired)
    }

    fn unindex(&self, uuid: &[u8; 16], index: u32) {
        if let Ok(idx) = self.index() {
            if idx.remove(uuid, index) {
                self.hdr(hdr::INDEX_USED).fetch_sub(1, Ordering::Relaxed);
                self.hdr(hdr::INDEX_TOMBSTONES).fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Appends `child` to `parent`'s child list, under the parent's lock.
    fn link_under(
        &self,
        parent: Handle,
        child_index: u32,
        child: Slot<'_>,
        name: Option<&[u8]>,
    ) -> Result<(), PoolError> {
        let ps = self.slot(parent.index).ok_or(PoolError::NotFound)?;
        let _guard = self.lock_slot(parent.index, ps)?;
        // The parent may have been deleted since the caller checked it.
        self.live_slot(parent)?;
        // Sibling names are unique: checked under the parent's lock, which every link
        // and rename under it holds, so two adds of one name cannot both pass.
        if let Some(name) = name {
            if let Some(existing) = self.sibling_named(ps, name, Some(child_index))? {
                return Err(PoolError::NameTaken { existing });
            }
        }
        // If the lock was taken over from a dead holder, the child list was rebuilt from
        // the live children's parent fields, which already includes this child.
        if ps.first_child().load(Ordering::Relaxed) == link(child_index)
            || child.prev_sibling().load(Ordering::Relaxed) != 0
        {
            return Ok(());
        }
        let last = unlink_value(ps.last_child().load(Ordering::Relaxed));
        let last_slot = match last {
            Some(i) => Some(self.slot(i).ok_or(PoolError::Corrupt { what: "child link outside the pool" })?),
            None => None,
        };
        // The link about to be written into the last child must land on a live node that
        // ends the list; a damaged last-child link is refused, not followed.
        if let Some(ls) = last_slot {
            if state_of(ls.gen_state().load(Ordering::Acquire)) != slot::LIVE
                || ls.next_sibling().load(Ordering::Relaxed) != 0
                || last == Some(child_index)
            {
                return Err(PoolError::Corrupt { what: "last-child link names a node that does not end the list" });
            }
        } else if ps.first_child().load(Ordering::Relaxed) != 0 {
            return Err(PoolError::Corrupt { what: "child list has a first child but no last child" });
        }
        let q = begin_change(ps.child_seq());
        child.prev_sibling().store(last.map_or(0, link), Ordering::Relaxed);
        child.next_sibling().store(0, Ordering::Relaxed);
        match last_slot {
            Some(ls) => ls.next_sibling().store(link(child_index), Ordering::Relaxed),
            None => ps.first_child().store(link(child_index), Ordering::Relaxed),
        }
        ps.last_child().store(link(child_index), Ordering::Relaxed);
        ps.child_count().fetch_add(1, Ordering::Relaxed);
        end_change(ps.child_seq(), q);
        Ok(())
    }

    /// Renaming `h` to `name`: takes its parent's lock (held until the returned guard
    /// drops, so no sibling can take the name meanwhile) and refuses a name a sibling
    /// has. `None` for the root (no siblings).
    pub(crate) fn lock_for_rename(&self, h: Handle, name: &str) -> Result<Option<Locked<'_>>, PoolError> {
        let Some(parent) = self.read(h)?.parent() else { return Ok(None) };
        let ps = self.slot(parent.index).ok_or(PoolError::NotFound)?;
        let guard = self.lock_slot(parent.index, ps)?;
        self.live_slot(parent)?;
        if let Some(existing) = self.sibling_named(ps, name.as_bytes(), Some(h.index))? {
            return Err(PoolError::NameTaken { existing });
        }
        Ok(Some(guard))
    }

    /// The child of `ps` named `name`, other than slot `except`, if any. The caller holds
    /// the parent's lock. Bounded by the pool's capacity; compares the slots' name hashes
    /// and copies out only the records whose hash matches (or is not known).
    pub(crate) fn sibling_named(
        &self,
        ps: Slot<'_>,
        name: &[u8],
        except: Option<u32>,
    ) -> Result<Option<Handle>, PoolError> {
        let want = name_hash(name);
        let mut cur = unlink_value(ps.first_child().load(Ordering::Relaxed));
        for _ in 0..=self.caps.nodes {
            let Some(i) = cur else { return Ok(None) };
            let s = self.slot(i).ok_or(PoolError::Corrupt { what: "child link outside the pool" })?;
            cur = unlink_value(s.next_sibling().load(Ordering::Relaxed));
            if Some(i) == except {
                continue;
            }
            let hash = s.name_hash().load(Ordering::Relaxed);
            if hash != want && hash != 0 {
                continue;
            }
            let gs = s.gen_state().load(Ordering::Acquire);
            if state_of(gs) != slot::LIVE {
                continue;
            }
            let h = Handle { index: i, generation: gen_of(gs) };
            if let Ok(n) = self.read(h) {
                if n.name().as_bytes() == name {
                    return Ok(Some(h));
                }
            }
        }
        Err(PoolError::Corrupt { what: "child list longer than the pool (a cycle)" })
    }

    /// Removes `child` from `parent`'s list. Caller holds the parent's lock.
    fn unlink_from(&self, ps: Slot<'_>, child_index: u32, child: Slot<'_>) -> Result<(), PoolError> {
        let corrupt = PoolError::Corrupt { what: "sibling link outside the pool" };
        let prev = unlink_value(child.prev_sibling().load(Ordering::Relaxed));
        let next = unlink_value(child.next_sibling().load(Ordering::Relaxed));
        let prev_slot = match prev {
            Some(i) => Some(self.slot(i).ok_or(corrupt)?),
            None => None,
        };
        let next_slot = match next {
            Some(i) => Some(self.slot(i).ok_or(corrupt)?),
            None => None,
        };
        if prev.is_none() && unlink_value(ps.first_child().load(Ordering::Relaxed)) != Some(child_index) {
            return Err(PoolError::Corrupt { what: "child list does not start at its first child" });
        }
        if next.is_none() && unlink_value(ps.last_child().load(Ordering::Relaxed)) != Some(child_index) {
            return Err(PoolError::Corrupt { what: "child list does not end at its last child" });
        }
        // The neighbours whose links are about to be rewritten must point back at us.
        let me = link(child_index);
        if prev_slot.is_some_and(|p| p.next_sibling().load(Ordering::Relaxed) != me)
            || next_slot.is_some_and(|n| n.prev_sibling().load(Ordering::Relaxed) != me)
        {
            return Err(PoolError::Corrupt { what: "sibling links disagree" });
        }
        let q = begin_change(ps.child_seq());
        match prev_slot {
            Some(p) => p.next_sibling().store(next.map_or(0, link), Ordering::Relaxed),
            None => ps.first_child().store(next.map_or(0, link), Ordering::Relaxed),
        }
        match next_slot {
            Some(n) => n.prev_sibling().store(prev.map_or(0, link), Ordering::Relaxed),
            None => ps.last_child().store(prev.map_or(0, link), Ordering::Relaxed),
        }
        ps.child_count().fetch_sub(1, Ordering::Relaxed);
        // An unlinked node has no siblings (`link_under` relies on it).
        child.prev_sibling().store(0, Ordering::Relaxed);
        child.next_sibling().store(0, Ordering::Relaxed);
        end_change(ps.child_seq(), q);
        Ok(())
    }

    /// Rebuilds a child list left half-changed by a process that died holding the
    /// parent's lock: every live slot whose record names this node as parent is linked
    /// again, in slot order. O(pool), and only on this recovery path.
    fn rebuild_children(&self, parent_index: u32, ps: Slot<'_>) -> Result<(), PoolError> {
        let parent = Handle { index: parent_index, generation: gen_of(ps.gen_state().load(Ordering::Acquire)) };
        let q = ps.child_seq().load(Ordering::Relaxed);
        let mut count = 0u64;
        let mut last: Option<Slot<'_>> = None;
        let mut last_index = 0u32;
        ps.first_child().store(0, Ordering::Relaxed);
        for i in 0..self.caps.nodes {
            let Some(s) = self.slot(i) else { break };
            if state_of(s.gen_state().load(Ordering::Acquire)) != slot::LIVE {
                continue;
            }
            let mut words = [0u64; RECORD_WORDS];
            if seqlock::read(s.seq(), s.copies(), &mut words).is_none() {
                return Err(PoolError::Contended);
            }
            let rec: NodeRecord = bytemuck::cast(words);
            if rec.parent != parent.to_raw() {
                continue;
            }
            s.prev_sibling().store(last.map_or(0, |_| link(last_index)), Ordering::Relaxed);
            s.next_sibling().store(0, Ordering::Relaxed);
            match last {
                Some(l) => l.next_sibling().store(link(i), Ordering::Relaxed),
                None => ps.first_child().store(link(i), Ordering::Relaxed),
            }
            last = Some(s);
            last_index = i;
            count += 1;
        }
        ps.last_child().store(last.map_or(0, |_| link(last_index)), Ordering::Relaxed);
        ps.child_count().store(count, Ordering::Relaxed);
        // Leave the word even and different from any value a reader saw before.
        ps.child_seq().store((q | 1) + 1, Ordering::Release);
        Ok(())
    }

    /// Copies a node out of the segment: a consistent snapshot, no lock taken.
    ///
    /// # Errors
    ///
    /// * [`PoolError::StaleHandle`]: the handle's slot no longer holds that node (it
    ///   was deleted; re-resolve it by UUID with [`Segment::lookup`]).
    /// * [`PoolError::NotFound`]: the handle names no slot of this segment.
    /// * [`PoolError::Contended`]: writers kept changing the node during every attempt.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{DeleteMode, NewNode, NodeKind, PoolError};
    /// # let name = format!("doc-read-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let h = seg.add(seg.root(), &NewNode::new(NodeKind::Folder, "notes"))?;
    /// assert_eq!(seg.read(h)?.kind(), Some(NodeKind::Folder));
    ///
    /// seg.delete(h, DeleteMode::LeafOnly)?;
    /// assert_eq!(seg.read(h).unwrap_err(), PoolError::StaleHandle);
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read(&self, h: Handle) -> Result<Node, PoolError> {
        let mut node = Node { handle: h, rec: bytemuck::Zeroable::zeroed() };
        self.read_into(h, &mut node)?;
        Ok(node)
    }

    /// Like [`Segment::read`], but copies into `out` (a reused buffer): the copy goes
    /// straight from shared memory into it, with no intermediate buffer. On error the
    /// contents of `out` are unspecified (a failed attempt may leave a torn copy).
    ///
    /// # Errors
    ///
    /// As [`Segment::read`].
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{NewNode, NodeKind};
    /// # let name = format!("doc-read_into-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let a = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "a"))?;
    /// let b = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "b"))?;
    /// let mut buf = seg.read(a)?; // one buffer, reused for every read
    /// seg.read_into(b, &mut buf)?;
    /// assert_eq!((buf.handle(), buf.name()), (b, "b"));
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_into(&self, h: Handle, out: &mut Node) -> Result<(), PoolError> {
        let s = self.live_slot(h)?;
        let words: &mut [u64; RECORD_WORDS] = bytemuck::cast_mut(&mut out.rec);
        seqlock::read_array(s.seq(), s.copies_array(), words).ok_or(PoolError::Contended)?;
        // The slot may have been freed while we copied: the generation tells.
        if s.gen_state().load(Ordering::Acquire) != pack(h.generation, slot::LIVE) {
            return Err(PoolError::StaleHandle);
        }
        out.handle = h;
        Ok(())
    }

    /// Finds a node by UUID without taking a lock. UUIDs are the stable names of nodes
    /// (handles are slot positions, reused after a delete).
    ///
    /// # Errors
    ///
    /// * [`PoolError::NotFound`]: no live node has that UUID.
    /// * [`PoolError::Corrupt`]: the id index lies outside the segment.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{NewNode, NodeKind, PoolError};
    /// # let name = format!("doc-lookup-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let h = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "find me"))?;
    /// let uuid = seg.read(h)?.uuid();
    /// assert_eq!(seg.lookup(uuid)?, h);
    /// assert_eq!(seg.lookup(uuid::Uuid::nil()), Err(PoolError::NotFound));
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lookup(&self, uuid: Uuid) -> Result<Handle, PoolError> {
        let id = uuid_words(uuid.as_bytes());
        let found = self.index()?.find(uuid.as_bytes(), |i| {
            self.slot(i)
                .is_some_and(|s| s.has_uuid(id) && state_of(s.gen_state().load(Ordering::Acquire)) == slot::LIVE)
        });
        let index = found.ok_or(PoolError::NotFound)?;
        let s = self.slot(index).ok_or(PoolError::NotFound)?;
        let gs = s.gen_state().load(Ordering::Acquire);
        // Re-check: the slot may have been reused between the match and here.
        if state_of(gs) != slot::LIVE || !s.has_uuid(id) {
            return Err(PoolError::NotFound);
        }
        Ok(Handle { index, generation: gen_of(gs) })
    }

    /// Changes a node: `f` edits a copy through [`Node`]'s setters; the result is
    /// published atomically with `version + 1` and a new `updated` stamp. If `f` returns
    /// an error nothing is written. Do not touch the same node from inside `f` (its lock
    /// is held; the call would wait and then fail with [`PoolError::Busy`]).
    ///
    /// # Errors
    ///
    /// * [`PoolError::ReadOnly`], [`PoolError::Closing`], [`PoolError::DaemonGone`]: the
    ///   segment takes no writes (a read-only mapping, the daemon shutting down, or the
    ///   daemon that journals it gone); nothing is changed.
    /// * [`PoolError::StaleHandle`] / [`PoolError::NotFound`]: `h` no longer names a node.
    /// * [`PoolError::Busy`]: another live process holds the node's lock too long.
    /// * Whatever `f` returns, e.g. [`PoolError::IllegalTransition`] from
    ///   [`Node::set_status`]; nothing is written then.
    /// * [`PoolError::Corrupt`]: the stored record's kind or status is out of range.
    /// * [`PoolError::EventNotAppended`]: the change was published but its event was not.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{NewNode, NodeKind, PoolError, Status};
    /// # let name = format!("doc-update-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let h = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "draft"))?;
    /// let node = seg.update(h, |n| {
    ///     n.set_name("final")?;
    ///     n.set_status(Status::Ready)
    /// })?;
    /// assert_eq!((node.name(), node.status(), node.version()), ("final", Some(Status::Ready), 2));
    ///
    /// // Completion is the claimant's move, not a plain update: refused, nothing written.
    /// let refused = seg.update(h, |n| n.set_status(Status::Complete));
    /// assert!(matches!(refused, Err(PoolError::IllegalTransition { .. })));
    /// assert_eq!(seg.read(h)?.version(), 2);
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn update<F>(&self, h: Handle, f: F) -> Result<Node, PoolError>
    where
        F: FnOnce(&mut Node) -> Result<(), PoolError>,
    {
        if self.is_brokered() {
            // A closure cannot cross the broker's wire: the typed setters can.
            return Err(PoolError::Broker(crate::broker::BrokerFault::Unsupported));
        }
        self.permit(crate::token::Right::Update, Some(h))?;
        self.update_unchecked(h, f)
    }

    /// [`Segment::update`] without the token check.
    pub(crate) fn update_unchecked<F>(&self, h: Handle, f: F) -> Result<Node, PoolError>
    where
        F: FnOnce(&mut Node) -> Result<(), PoolError>,
    {
        self.modify(h, Change::new(EventKind::NODE_UPDATED), |rec| {
            let mut node = Node { handle: h, rec: *rec };
            f(&mut node)?;
            *rec = node.rec;
            Ok(())
        })
        .map(|(node, ())| node)
    }

    /// The one write path for an existing node: takes its lock, hands `f` the current
    /// record, and if `f` succeeds publishes it with `version + 1` and a new `updated`
    /// stamp, then appends the change's event, all before unlocking (so a node's events
    /// are in version order). If `f` fails nothing is written.
    pub(crate) fn modify<R, E>(
        &self,
        h: Handle,
        change: Change<'_>,
        f: impl FnOnce(&mut NodeRecord) -> Result<R, E>,
    ) -> Result<(Node, R), E>
    where
        E: From<PoolError>,
    {
        self.require_writable()?;
        let s = self.live_slot(h)?;
        let guard = self.lock_slot(h.index, s)?;
        self.live_slot(h)?;
        let mut words = [0u64; RECORD_WORDS];
        seqlock::read_locked(s.seq(), s.copies(), &mut words);
        let mut rec: NodeRecord = bytemuck::cast(words);
        // Enums read from the segment are validated before a write relies on them.
        if NodeKind::from_code(rec.kind).is_none() || Status::from_code(rec.status).is_none() {
            return Err(PoolError::Corrupt { what: "record kind or status out of range" }.into());
        }
        let before = rec;
        let out = f(&mut rec)?;
        // Identity and position are not the closure's to change.
        rec.uuid = before.uuid;
        rec.parent = before.parent;
        rec.created = before.created;
        rec.kind = before.kind;
        rec.version = before.version + 1;
        rec.updated = self.now().0;
        crate::origin::stamp_record(&mut rec);
        crate::failpoint::hit("pool.update_locked");
        // The ready index: set for the new record before it is published, cleared for
        // the old one after, under the lock (see `ready`).
        self.index_before_publish(h.index, &rec);
        crate::failpoint::hit("pool.indexed");
        publish(s, &rec);
        crate::failpoint::hit("pool.published");
        self.index_after_publish(h.index, &before, Some(&rec));
        self.hdr(hdr::UPDATED).fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; crate::layout::EVENT_PAYLOAD_MAX];
        let n = change
            .epoch_note
            .map_or(0, |note| crate::event::task_payload(&mut buf, rec.claim_epoch, change.percent, note));
        let payload = change.payload.filter(|_| n == 0).unwrap_or(&buf[..n]);
        let uuid = Uuid::from_bytes(rec.uuid);
        let mut ev = NewEvent::new(change.kind).node(uuid, rec.version).payload(payload);
        if let Some(a) = change.actor {
            ev = ev.actor(a);
        }
        self.append_stamped(&ev, crate::Hlc(rec.updated))
            .map_err(|error| E::from(PoolError::EventNotAppended { error, node: h }))?;
        drop(guard);
        self.wake_claimers(h, &rec);
        Ok((Node { handle: h, rec }, out))
    }

    /// Deletes a node (and, with [`DeleteMode::Recursive`], its subtree). Returns how
    /// many nodes were deleted. Handles to deleted nodes become stale.
    ///
    /// # Errors
    ///
    /// * [`PoolError::ReadOnly`], [`PoolError::Closing`], [`PoolError::DaemonGone`]: the
    ///   segment takes no writes (a read-only mapping, the daemon shutting down, or the
    ///   daemon that journals it gone); nothing is changed.
    /// * [`PoolError::HasChildren`]: a [`DeleteMode::LeafOnly`] delete of a node with
    ///   children.
    /// * [`PoolError::RootImmutable`]: `h` is the root.
    /// * [`PoolError::StaleHandle`] / [`PoolError::NotFound`]: `h` no longer names a node.
    /// * [`PoolError::Busy`]: another live process holds a lock the delete needs.
    /// * [`PoolError::Corrupt`]: the tree's links are inconsistent.
    /// * [`PoolError::EventNotAppended`]: the node was deleted but its event was not.
    ///
    /// A recursive delete deletes leaf by leaf: if it fails part-way, the nodes deleted
    /// before the error stay deleted.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{DeleteMode, NewNode, NodeKind, PoolError};
    /// # let name = format!("doc-delete-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let project = seg.add(seg.root(), &NewNode::new(NodeKind::Project, "old"))?;
    /// seg.add(project, &NewNode::new(NodeKind::Task, "a"))?;
    /// seg.add(project, &NewNode::new(NodeKind::Task, "b"))?;
    ///
    /// let refused = seg.delete(project, DeleteMode::LeafOnly);
    /// assert_eq!(refused, Err(PoolError::HasChildren { count: 2 }));
    /// assert_eq!(seg.delete(project, DeleteMode::Recursive)?, 3);
    /// assert_eq!(seg.delete(seg.root(), DeleteMode::Recursive), Err(PoolError::RootImmutable));
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn delete(&self, h: Handle, mode: DeleteMode) -> Result<u64, PoolError> {
        if let Some(link) = self.link() {
            return link.ask_count(crate::broker::Request::Delete { node: h, mode });
        }
        // Deleting a document is a document change; anything else an update.
        let is_doc = self.read(h).is_ok_and(|n| n.kind() == Some(NodeKind::Document));
        self.permit(if is_doc { crate::token::Right::Doc } else { crate::token::Right::Update }, Some(h))?;
        self.delete_node(h, mode)
    }

    /// Sets a node's status, as [`Segment::update`] with [`Node::set_status`] does (the
    /// state machine's plain moves); available through the broker.
    ///
    /// # Errors
    ///
    /// As [`Segment::update`]; [`PoolError::IllegalTransition`] for a move only the
    /// claim and dependency operations may make.
    pub fn set_status(&self, h: Handle, status: Status) -> Result<Node, PoolError> {
        if let Some(link) = self.link() {
            return link.ask_node(crate::broker::Request::SetStatus { node: h, status });
        }
        self.update(h, |n| n.set_status(status))
    }

    /// [`Segment::delete`] without the token check.
    pub(crate) fn delete_node(&self, h: Handle, mode: DeleteMode) -> Result<u64, PoolError> {
        self.require_writable()?;
        match mode {
            DeleteMode::LeafOnly => self.delete_leaf(h).map(|_| 1),
            DeleteMode::Recursive => self.delete_subtree(h),
        }
    }

    fn delete_subtree(&self, top: Handle) -> Result<u64, PoolError> {
        if self.read(top)?.parent().is_none() {
            return Err(PoolError::RootImmutable);
        }
        let mut deleted = 0u64;
        // Each round deletes one leaf; concurrent inserts can add work, so bound the
        // rounds generously but finitely.
        for _ in 0..(self.caps.nodes as u64 * 2 + 2) {
            let mut leaf = top;
            let mut depth = 0;
            while let Some(c) = self.first_child(leaf)? {
                leaf = c;
                depth += 1;
                if depth > self.caps.nodes {
                    return Err(PoolError::Corrupt { what: "child links form a cycle" });
                }
            }
            match self.delete_leaf(leaf) {
                Ok(()) if leaf == top => return Ok(deleted + 1),
                Ok(()) => deleted += 1,
                // Someone changed the subtree under us: look again.
                Err(PoolError::HasChildren { .. }) | Err(PoolError::StaleHandle) if leaf != top => {}
                Err(e) => return Err(e),
            }
        }
        Err(PoolError::Contended)
    }

    fn first_child(&self, h: Handle) -> Result<Option<Handle>, PoolError> {
        let s = self.live_slot(h)?;
        let Some(i) = unlink_value(s.first_child().load(Ordering::Acquire)) else { return Ok(None) };
        let c = self.slot(i).ok_or(PoolError::Corrupt { what: "child link outside the pool" })?;
        Ok(Some(Handle { index: i, generation: gen_of(c.gen_state().load(Ordering::Acquire)) }))
    }

    fn delete_leaf(&self, h: Handle) -> Result<(), PoolError> {
        let node = self.read(h)?;
        let parent = node.parent().ok_or(PoolError::RootImmutable)?;
        let ps = self.slot(parent.index).ok_or(PoolError::Corrupt { what: "parent outside the pool" })?;
        let s = self.live_slot(h)?;
        // Parent before child, always: no lock cycles.
        let _pg = self.lock_slot(parent.index, ps)?;
        let _g = self.lock_slot(h.index, s)?;
        self.live_slot(h)?;
        let children = s.child_count().load(Ordering::Relaxed);
        if children > 0 {
            return Err(PoolError::HasChildren { count: children });
        }
        self.unlink_from(ps, h.index, s)?;
        let mut locked = [0u64; RECORD_WORDS];
        seqlock::read_locked(s.seq(), s.copies(), &mut locked);
        // Its content is ours to release from here (before the slot is seen free): see
        // `blob::reclaim_leaked_blobs`.
        self.hold_blob(bytemuck::cast::<_, NodeRecord>(locked).doc_blob);
        s.gen_state().store(pack(next_generation(h.generation), slot::FREE), Ordering::Release);
        self.index_after_publish(h.index, &bytemuck::cast(locked), None);
        // Return its observed-remove set; `set_slot` was read under the lock (a set may
        // have been attached since `node` was copied).
        self.release_set(h, &bytemuck::cast(locked));
        // Its document content goes with it (from the same locked copy, for the same reason).
        let doc_blob = bytemuck::cast::<_, NodeRecord>(locked).doc_blob;
        self.unindex(&node.rec.uuid, h.index);
        let appended = self.emit(EventKind::NODE_DELETED, h, &node.rec, self.now());
        drop(_g);
        drop(_pg);
        let freed = self.free_blob(doc_blob);
        freelist::push(self.free_head(), h.index, s.next_free()).map_err(freelist_error)?;
        self.hdr(hdr::POOL_USED).fetch_sub(1, Ordering::Relaxed);
        self.hdr(hdr::DELETED).fetch_add(1, Ordering::Relaxed);
        freed.and(appended)
    }

    /// Appends the event for a record change (skipped while the segment is being laid
    /// out: the root's creation is not an event).
    fn emit(&self, kind: EventKind, node: Handle, rec: &NodeRecord, hlc: crate::Hlc) -> Result<(), PoolError> {
        if self.state() != crate::SegmentState::Ready {
            return Ok(());
        }
        let uuid = Uuid::from_bytes(rec.uuid);
        self.append_stamped(&NewEvent::new(kind).node(uuid, rec.version), hlc)
            .map(|_| ())
            .map_err(|error| PoolError::EventNotAppended { error, node })
    }

    /// Fills `out` with the handles of `h`'s children, in creation order, as one
    /// consistent snapshot. `out` is cleared first; reuse it to avoid allocating.
    ///
    /// # Errors
    ///
    /// * [`PoolError::StaleHandle`] / [`PoolError::NotFound`]: `h` no longer names a node.
    /// * [`PoolError::Contended`]: the children changed during every attempt (and, on a
    ///   writable mapping, the repair under the lock did not settle either).
    /// * [`PoolError::Busy`], [`PoolError::Corrupt`]: from that repair: a live process
    ///   holds the node's lock too long, or the child links are inconsistent.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{NewNode, NodeKind};
    /// # let name = format!("doc-children-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let project = seg.add(seg.root(), &NewNode::new(NodeKind::Project, "p"))?;
    /// let first = seg.add(project, &NewNode::new(NodeKind::Task, "first"))?;
    /// let second = seg.add(project, &NewNode::new(NodeKind::Task, "second"))?;
    ///
    /// let mut kids = Vec::new();
    /// seg.children(project, &mut kids)?;
    /// assert_eq!(kids, [first, second]); // creation order
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn children(&self, h: Handle, out: &mut Vec<Handle>) -> Result<(), PoolError> {
        let s = self.live_slot(h)?;
        match self.try_children(s, out) {
            Err(PoolError::Contended) if self.map.writable() => {
                // A writer may have died mid-change: taking the lock (from a dead holder)
                // rebuilds the list. A live holder just makes us wait our turn.
                drop(self.lock_slot(h.index, s)?);
                self.try_children(s, out)
            }
            r => r,
        }
    }

    fn try_children(&self, s: Slot<'_>, out: &mut Vec<Handle>) -> Result<(), PoolError> {
        let backoff = Backoff::new();
        for _ in 0..seqlock::READ_ATTEMPTS {
            out.clear();
            let q = s.child_seq().load(Ordering::Acquire);
            if q & 1 == 1 {
                backoff.snooze();
                continue;
            }
            // The count comes from shared memory: never trust it past the pool's size.
            let count = s.child_count().load(Ordering::Relaxed).min(self.caps.nodes as u64);
            let mut cur = unlink_value(s.first_child().load(Ordering::Relaxed));
            let mut bad = false;
            while let Some(i) = cur {
                let Some(c) = self.slot(i) else {
                    bad = true;
                    break;
                };
                if out.len() as u64 >= count {
                    bad = true;
                    break;
                }
                out.push(Handle { index: i, generation: gen_of(c.gen_state().load(Ordering::Relaxed)) });
                cur = unlink_value(c.next_sibling().load(Ordering::Relaxed));
            }
            fence(Ordering::Acquire);
            if s.child_seq().load(Ordering::Relaxed) == q {
                if bad || out.len() as u64 != count {
                    return Err(PoolError::Corrupt { what: "child list disagrees with its count" });
                }
                return Ok(());
            }
            backoff.snooze();
        }
        Err(PoolError::Contended)
    }

    /// The child of `parent` named `name`, if any: a lock-free walk of the child list
    /// comparing each slot's name hash, copying out only records whose hash matches.
    ///
    /// # Errors
    ///
    /// As [`Segment::children`].
    pub fn child_named(&self, parent: Handle, name: &str) -> Result<Option<Handle>, PoolError> {
        let want = name_hash(name.as_bytes());
        let mut kids = Vec::new();
        self.children(parent, &mut kids)?;
        for h in kids {
            let Some(s) = self.slot(h.index) else { continue };
            let hash = s.name_hash().load(Ordering::Relaxed);
            if hash != want && hash != 0 {
                continue;
            }
            if matches!(self.read(h), Ok(n) if n.name() == name) {
                return Ok(Some(h));
            }
        }
        Ok(None)
    }

    /// The child of `parent` named as `spec` says, made from `spec` if there is none.
    /// Two processes ensuring one name get the same node: sibling names are unique, so
    /// the loser of the race is told [`PoolError::NameTaken`] and takes the winner's.
    /// Without a token check: for the system containers (`/mail`, …) and their entries.
    pub(crate) fn ensure_child(&self, parent: Handle, spec: &NewNode<'_>) -> Result<Handle, PoolError> {
        if let Some(h) = self.child_named(parent, spec.name)? {
            return Ok(h);
        }
        match self.add_node(parent, spec) {
            Err(PoolError::NameTaken { existing }) => Ok(existing),
            made => made,
        }
    }

    /// The live node in slot `index` and its scan summary, without copying its record.
    pub(crate) fn slot_summary(&self, index: u32) -> Option<(Handle, Summary)> {
        let s = self.slot(index)?;
        let gs = s.gen_state().load(Ordering::Acquire);
        if state_of(gs) != slot::LIVE {
            return None;
        }
        // SYNC POINT: pairs with the Release summary store in `publish`.
        Some((Handle { index, generation: gen_of(gs) }, Summary::from_raw(s.summary().load(Ordering::Acquire))))
    }

    /// The creation stamp kept in slot `index`'s control words (0 when out of range).
    pub(crate) fn slot_created(&self, index: u32) -> u64 {
        self.slot(index).map_or(0, |s| s.created().load(Ordering::Relaxed))
    }

    /// Number of children of `h`.
    pub fn child_count(&self, h: Handle) -> Result<u64, PoolError> {
        Ok(self.live_slot(h)?.child_count().load(Ordering::Acquire))
    }

    /// Calls `f` with every live node, in slot order (a scan of the whole pool: for
    /// inspectors and queries, not hot paths). Stops early when `f` returns `false`.
    pub fn for_each_node(&self, mut f: impl FnMut(&Node) -> bool) -> Result<(), PoolError> {
        for i in 0..self.caps.nodes {
            let Some(s) = self.slot(i) else { break };
            let gs = s.gen_state().load(Ordering::Acquire);
            if state_of(gs) != slot::LIVE {
                continue;
            }
            match self.read(Handle { index: i, generation: gen_of(gs) }) {
                Ok(n) => {
                    if !f(&n) {
                        break;
                    }
                }
                Err(PoolError::StaleHandle) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Number of free slots, counted by walking the free list (bounded by capacity).
    /// A diagnostic: under concurrent churn the answer is approximate.
    pub fn free_slots(&self) -> Result<u64, PoolError> {
        let mut n = 0u64;
        let mut cur = unlink_value(FreeHead::from_raw(self.free_head().load(Ordering::Acquire)).top());
        while let Some(i) = cur {
            n += 1;
            if n > self.caps.nodes as u64 {
                return Err(PoolError::Corrupt { what: "free list longer than the pool" });
            }
            cur = unlink_value(
                self.slot(i)
                    .ok_or(PoolError::Corrupt { what: "free list names a slot outside the pool" })?
                    .next_free()
                    .load(Ordering::Relaxed),
            );
        }
        Ok(n)
    }
}

/// The scan summary of a record (see [`crate::layout::NodeSlotHeader::summary`]).
pub(crate) fn summary_of(rec: &NodeRecord) -> u64 {
    Summary::of(rec).raw()
}

/// Publishes `rec` as the slot's record and refreshes its scan summary. Caller holds
/// the slot's lock.
fn publish(s: Slot<'_>, rec: &NodeRecord) {
    let words: [u64; RECORD_WORDS] = bytemuck::cast(*rec);
    seqlock::write_locked(s.seq(), s.copies(), &words);
    // Written before the summary, so a reader that acquires the summary sees it too.
    s.name_hash().store(name_hash(&rec.name[..(rec.name_len as usize).min(rec.name.len())]), Ordering::Relaxed);
    // SYNC POINT: pairs with the Acquire summary load in `slot_summary`.
    s.summary().store(summary_of(rec), Ordering::Release);
}

impl Segment {
    /// The name hash a live slot keeps for `h`'s record (0: not known, or `h` is not a
    /// live slot of the pool). One word, no record copy.
    /// The node among `kids` whose slot's name hash is `hash` (a slot whose hash is not
    /// known, 0, is judged by its record's name): one word per child for the registries
    /// (`/labels`, `/mail`) that find a name by its key.
    pub(crate) fn child_with_hash(&self, kids: &[Handle], hash: u64) -> Option<Handle> {
        kids.iter().copied().find(|h| match self.slot_name_hash(*h) {
            0 => self.read(*h).is_ok_and(|n| name_hash(n.name().as_bytes()) == hash),
            known => known == hash,
        })
    }

    pub(crate) fn slot_name_hash(&self, h: Handle) -> u64 {
        self.slot(h.index).map_or(0, |s| s.name_hash().load(Ordering::Relaxed))
    }
}

/// FNV-1a of a name, never 0 (0 marks a slot whose hash is not known).
pub(crate) fn name_hash(name: &[u8]) -> u64 {
    crate::sys::fnv1a(name).max(1)
}

/// Marks a child list as changing (odd), fencing so readers that see any later link
/// store also see the odd value. Returns the value to pass to [`end_change`].
fn begin_change(seq: &AtomicU64) -> u64 {
    let q = seq.load(Ordering::Relaxed);
    let q = q & !1; // a stolen lock's odd value was already handled by the rebuild
    seq.store(q + 1, Ordering::Relaxed);
    fence(Ordering::Release);
    q
}

fn end_change(seq: &AtomicU64, q: u64) {
    seq.store(q + 2, Ordering::Release);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::layout::Capacities;

    use crate::testing::{temp_segment, TempSegment};

    fn segment(tag: &str) -> TempSegment {
        let caps = Capacities { nodes: 32, events: 256, agents: 2, blob_chunks: 1, sets: 1, ..Capacities::default() };
        temp_segment(&format!("pool-{tag}"), &caps)
    }

    /// A tag no process has: pid 1 with a start time that is not init's.
    fn dead_tag() -> u64 {
        let init = OwnerTag::new(1, crate::sys::process_start_ticks(1).unwrap_or(0));
        OwnerTag::new(1, init.start_ticks() + 12345).0
    }

    #[test]
    fn a_slot_reserved_by_a_dead_creator_is_freed_by_the_repair_scan() {
        let s = segment("reserved");
        let seg = &s.seg;
        let free_before = seg.free_slots().unwrap();
        let i = freelist::pop(seg.free_head(), |i| seg.slot(i).map(|s| s.next_free())).unwrap().unwrap();
        let slot = seg.slot(i).unwrap();
        let g = gen_of(slot.gen_state().load(Ordering::Relaxed));
        slot.gen_state().store(pack(g, slot::RESERVED), Ordering::Relaxed);
        slot.lock().store(dead_tag(), Ordering::Relaxed);
        assert_eq!(seg.free_slots().unwrap(), free_before - 1);
        assert_eq!(seg.repair_dead_holders().unwrap(), 1);
        assert_eq!(seg.free_slots().unwrap(), free_before);
        assert_eq!(gen_of(slot.gen_state().load(Ordering::Relaxed)), g + 1);
    }

    #[test]
    fn a_live_node_left_unindexed_and_unlinked_is_finished_by_the_repair_scan() {
        let s = segment("live");
        let seg = &s.seg;
        let h = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "half-made")).unwrap();
        let uuid = seg.read(h).unwrap().uuid();
        // Undo the index entry and the link, as if the creator died right after going live.
        seg.unindex(uuid.as_bytes(), h.index);
        let root = seg.slot(0).unwrap();
        seg.unlink_from(root, h.index, seg.slot(h.index).unwrap()).unwrap();
        seg.slot(h.index).unwrap().lock().store(dead_tag(), Ordering::Relaxed);
        assert_eq!(seg.lookup(uuid), Err(PoolError::NotFound));
        assert_eq!(seg.repair_dead_holders().unwrap(), 1);
        assert_eq!(seg.lookup(uuid), Ok(h));
        let mut kids = Vec::new();
        seg.children(seg.root(), &mut kids).unwrap();
        assert_eq!(kids.iter().filter(|k| **k == h).count(), 1);
    }

    #[test]
    fn a_free_list_head_naming_a_live_slot_is_refused_and_nothing_is_overwritten() {
        let s = segment("head-live");
        let seg = &s.seg;
        let h = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "precious")).unwrap();
        let before = seg.read(h).unwrap();
        let tag = FreeHead::from_raw(seg.free_head().load(Ordering::Relaxed)).tag();
        seg.free_head().store(FreeHead::new(tag, link(h.index)).raw(), Ordering::Relaxed);
        assert!(seg.damage().iter().any(|d| d.class == crate::DamageClass::FreeListNotFree));
        let e = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "intruder")).unwrap_err();
        assert!(matches!(e, PoolError::Corrupt { .. }), "{e:?}");
        let after = seg.read(h).unwrap();
        assert_eq!(bytemuck::bytes_of(&before.rec), bytemuck::bytes_of(&after.rec));
    }

    #[test]
    fn a_lock_forged_to_a_live_process_that_does_not_map_the_segment_is_taken_over() {
        let s = segment("forged");
        let seg = &s.seg;
        let h = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "forged")).unwrap();
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let tag = OwnerTag::new(pid, crate::sys::process_start_ticks(pid).unwrap());
        assert!(tag.is_alive());
        seg.slot(h.index).unwrap().lock().store(tag.0, Ordering::Relaxed);
        assert_eq!(seg.lock_holder(tag.0), crate::Holder::Forged);
        assert!(seg.damage().iter().any(|d| d.class == crate::DamageClass::LockForged));
        let n = seg.update(h, |n| n.set_progress(5)).unwrap();
        assert_eq!(n.progress(), 5);
        assert_eq!(seg.slot(h.index).unwrap().lock().load(Ordering::Relaxed), 0);
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn an_enum_out_of_range_is_refused_by_writers() {
        let s = segment("enum");
        let seg = &s.seg;
        let h = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "odd")).unwrap();
        let sl = seg.slot(h.index).unwrap();
        let c = seqlock::active_copy(sl.seq().load(Ordering::Relaxed));
        let off = std::mem::offset_of!(NodeRecord, status);
        let w = &sl.copies()[c][off / 8];
        w.store(w.load(Ordering::Relaxed) | 0xee << ((off % 8) * 8), Ordering::Relaxed);
        assert!(matches!(seg.update(h, |_| Ok(())), Err(PoolError::Corrupt { .. })));
        assert!(seg.damage().iter().any(|d| d.class == crate::DamageClass::RecordEnum));
    }
}
