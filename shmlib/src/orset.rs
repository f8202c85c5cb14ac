//! Observed-remove sets (OR-Set CRDT) attached to nodes, e.g. the ids of completed
//! subtasks.
//!
//! # The algorithm
//!
//! The OR-Set of Shapiro, Preguiça, Baquero and Zawirski, "A comprehensive study of
//! Convergent and Commutative Replicated Data Types" (INRIA RR-7506, 2011), §3.3.5:
//! every add of an element `e` creates a pair `(e, tag)` with a tag never used before;
//! a remove of `e` tombstones the pairs of `e` it *observed* (those present where it
//! ran). An element is present iff some pair of it is not tombstoned. Two states merge
//! by the union of their pairs and the union of their tombstones, which is commutative,
//! associative and idempotent: a join-semilattice, so replicas that have seen the same
//! operations agree whatever the order they merged in. An add concurrent with a remove
//! creates a pair the remove did not observe, so the add wins.
//!
//! Tombstones are kept as `(element, tag)` pairs rather than bare tags. Tags are HLC
//! values, unique on one host but not across hosts; keyed by the pair, two hosts that
//! happen to mint the same tag can at worst conflate two adds *of the same element*,
//! never let the removal of one element remove another.
//!
//! [`OrSetState`] is the pure, heap-allocated value: what is exported, merged and
//! journalled. The live set in shared memory is the same state kept in one [`SetSlot`]
//! of the segment's set table and changed in place, lock-free, by any attached process.
//!
//! # In shared memory
//!
//! A node gets a set slot the first time something is added to it (popped from the set
//! free list and recorded in the node's `set_slot` through the node's write path; of two
//! processes attaching at once, the loser gives its slot back and uses the winner's).
//! A slot holds [`SET_ENTRIES`] entries of four words each; an entry is one pair:
//!
//! ```text
//! state   = generation << 32 | version << 24 | writer pid << 2 | kind
//!           kind: 0 empty, 1 being written, 2 live, 3 removed (a tombstone)
//! element, tag, origin (pid of the adding process; 0 for a pair merged from elsewhere)
//! ```
//!
//! * **Add**: claim an entry with a compare-and-set from a free word to "being written
//!   by me", write element, tag and origin with relaxed stores, then publish it live
//!   with a release compare-and-set. Readers skip entries being written.
//! * **Remove**: compare-and-set live → removed for every live entry of the element. An
//!   add that runs concurrently writes another entry, which the remove either did not
//!   see (the add wins) or saw already published (the add happened before the remove).
//! * **Read**: copy state, element and tag with atomic loads and re-check the state
//!   (a per-entry seqlock); a pair is present iff some live entry holds it and no
//!   removed entry does (two processes merging the same remote pair at once may store
//!   it twice; the rule keeps such duplicates harmless).
//! * **Generations**: a slot's generation is bumped whenever it is freed (its node was
//!   deleted) and entries are stamped with the generation they were written under.
//!   Entries of an older generation are invisible and free for reuse, so freeing a set
//!   is O(1) and needs no entry to be cleared, and a process that resolved the slot
//!   just before its node was deleted can only write an entry the new owner ignores
//!   (it then reports [`PoolError::StaleHandle`]). Wrap-around needs 2³¹ reuses of a
//!   slot inside one operation.
//! * **Version**: 8 bits bumped at every claim, so a reader cannot mistake an entry that
//!   was removed, compacted and reused meanwhile for the one it started to copy.
//! * **Dead writers**: the claiming pid sits in the state word, so an entry left "being
//!   written" by a process that died is reclaimed by a later add once the set has no
//!   other free entry (never while that pid is alive; a reused pid only delays it).
//!
//! # Bounds and compaction
//!
//! A set holds at most [`SET_ENTRIES`] (32) entries, live *or removed*: a tombstone
//! must be kept as long as some replica may still send the add it removed, or a merge
//! would bring that add back. So a removed entry is never recycled implicitly; when no
//! entry is free an add (or merge) fails with [`SetError::SetFull`] and nothing changes.
//! [`Segment::set_compact`] turns removed entries into empty ones; call it only when
//! every replica has merged the removals (e.g. after a replication round), otherwise a
//! later [`Segment::set_merge`] of an older remote state can resurrect removed
//! elements. The table holds `--sets` slots; when they are all in use attaching a new
//! set fails with [`SetError::NoSetSlots`]. A node's slot is freed when it is deleted.
//!
//! Every index read from shared memory (the record's `set_slot`, free-list links) is
//! range-checked and reported as [`SetError::Corrupt`]; every loop is bounded. A set
//! slot carries the owner tag of the process attaching it until the node's record names
//! it; one left by a process killed in between is given back by the daemon's sweep
//! ([`crate::Daemon::reclaim_leaked`]), judged under the node's lock.

use crate::blob::Verdict;
use crate::error::PoolError;
use crate::event::EventKind;
use crate::freelist::{self, FreeListError};
use crate::genstate::{gen_of, next_generation, pack, state_of};
use crate::layout::{hdr, slot, NodeRecord, Region, SetEntry, SetSlot, SET_ENTRIES};
use crate::node::Handle;
use crate::pool::Change;
use crate::segment::Segment;
use crate::sync::{fence, AtomicU64, Ordering};
use std::collections::BTreeSet;
use std::fmt;
use std::mem::{offset_of, size_of};

/// The state of an observed-remove set as a plain value: every `(element, tag)` pair
/// ever added and the pairs that were removed. What [`Segment::set_state`] exports and
/// [`Segment::set_merge`] applies; merge two with [`OrSetState::merge`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct OrSetState {
    adds: BTreeSet<(u64, u64)>,
    tombstones: BTreeSet<(u64, u64)>,
}

impl OrSetState {
    /// The empty set.
    pub fn new() -> OrSetState {
        OrSetState::default()
    }

    /// A state from its parts (as read back from a journal or another host).
    pub fn from_parts(
        adds: impl IntoIterator<Item = (u64, u64)>,
        tombstones: impl IntoIterator<Item = (u64, u64)>,
    ) -> OrSetState {
        OrSetState { adds: adds.into_iter().collect(), tombstones: tombstones.into_iter().collect() }
    }

    fn pairs_of(&self, element: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.adds.range((element, 0)..=(element, u64::MAX)).copied()
    }

    /// Whether `element` is present: some add of it is not tombstoned.
    pub fn contains(&self, element: u64) -> bool {
        self.pairs_of(element).any(|p| !self.tombstones.contains(&p))
    }

    /// The distinct present elements, ascending.
    pub fn elements(&self) -> Vec<u64> {
        let mut out: Vec<u64> = self.adds.iter().filter(|p| !self.tombstones.contains(p)).map(|p| p.0).collect();
        out.dedup();
        out
    }

    /// Adds `element` under `tag`, which must not have been used for this element
    /// before (an HLC value from the adding host). Returns whether the pair is new; a
    /// pair that was already removed stays removed.
    pub fn add(&mut self, element: u64, tag: u64) -> bool {
        self.adds.insert((element, tag))
    }

    /// Removes `element`: tombstones every pair of it this state has observed. Returns
    /// how many pairs were newly tombstoned (0 when the element was absent).
    pub fn remove(&mut self, element: u64) -> usize {
        let observed: Vec<(u64, u64)> = self.pairs_of(element).filter(|p| !self.tombstones.contains(p)).collect();
        let n = observed.len();
        self.tombstones.extend(observed);
        n
    }

    /// The join of two states: the union of their adds and of their tombstones.
    pub fn merge(a: &OrSetState, b: &OrSetState) -> OrSetState {
        let mut m = a.clone();
        m.merge_from(b);
        m
    }

    /// Merges `other` into `self` (`self = merge(self, other)`).
    pub fn merge_from(&mut self, other: &OrSetState) {
        self.adds.extend(other.adds.iter().copied());
        self.tombstones.extend(other.tombstones.iter().copied());
    }

    /// Every `(element, tag)` pair ever added, in order.
    pub fn adds(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.adds.iter().copied()
    }

    /// Every removed `(element, tag)` pair, in order.
    pub fn tombstones(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.tombstones.iter().copied()
    }

    /// Whether the pair `(element, tag)` was removed.
    pub fn is_tombstoned(&self, element: u64, tag: u64) -> bool {
        self.tombstones.contains(&(element, tag))
    }

    /// Whether the state holds no pair at all (not even a tombstone).
    pub fn is_empty(&self) -> bool {
        self.adds.is_empty() && self.tombstones.is_empty()
    }

    /// The largest tag in the state, if any (for advancing a clock past it).
    pub fn max_tag(&self) -> Option<u64> {
        self.adds.iter().chain(&self.tombstones).map(|p| p.1).max()
    }
}

/// Why a set operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SetError {
    /// Every entry of the node's set holds a live or removed pair.
    SetFull {
        /// Entries per set.
        capacity: usize,
    },
    /// Every set slot of the segment is in use.
    NoSetSlots {
        /// Set slots in the segment.
        capacity: u32,
    },
    /// The set table is inconsistent (a link or a slot outside its range).
    Corrupt,
    /// The node could not be read or written.
    Pool(PoolError),
}

impl From<PoolError> for SetError {
    fn from(e: PoolError) -> Self {
        SetError::Pool(e)
    }
}

impl fmt::Display for SetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetError::SetFull { capacity } => write!(f, "the node's set is full ({capacity} entries, live or removed)"),
            SetError::NoSetSlots { capacity } => write!(f, "all {capacity} set slots of the segment are in use"),
            SetError::Corrupt => write!(f, "segment inconsistency in the set table"),
            SetError::Pool(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SetError::Pool(e) => Some(e),
            _ => None,
        }
    }
}

/// Words in one set slot, and the word positions inside it.
const SLOT_WORDS: usize = size_of::<SetSlot>() / 8;
const W_GEN_STATE: usize = offset_of!(SetSlot, gen_state) / 8;
const W_NEXT_FREE: usize = offset_of!(SetSlot, next_free) / 8;
const W_NODE: usize = offset_of!(SetSlot, node) / 8;
const W_OWNER: usize = offset_of!(SetSlot, owner) / 8;
const W_ENTRIES: usize = offset_of!(SetSlot, entries) / 8;
const ENTRY_WORDS: usize = size_of::<SetEntry>() / 8;
const E_STATE: usize = offset_of!(SetEntry, state) / 8;
const E_ELEMENT: usize = offset_of!(SetEntry, element) / 8;
const E_TAG: usize = offset_of!(SetEntry, tag) / 8;
const E_ORIGIN: usize = offset_of!(SetEntry, origin) / 8;

const _: () = {
    assert!(size_of::<SetSlot>().is_multiple_of(8) && size_of::<SetEntry>().is_multiple_of(8));
    assert!(offset_of!(SetSlot, entries) % 8 == 0);
    assert!(W_ENTRIES + SET_ENTRIES * ENTRY_WORDS == SLOT_WORDS);
};

/// Entry kinds: the low two bits of an entry's state word.
const EMPTY: u64 = 0;
const WRITING: u64 = 1;
const LIVE: u64 = 2;
const REMOVED: u64 = 3;
const KIND_MASK: u64 = 3;
const PID_SHIFT: u32 = 2;
/// Linux pids are below 2²² (`PID_MAX_LIMIT`).
const PID_MASK: u64 = (1 << 22) - 1;
const VER_SHIFT: u32 = 24;
const VER_MASK: u64 = 0xff;
const GEN_SHIFT: u32 = 32;

/// Full scans of a set an add makes before reporting contention.
const CLAIM_ROUNDS: u32 = 64;
/// Attempts at a consistent copy of one entry.
const ENTRY_READ_ATTEMPTS: u32 = 64;

/// A set entry's state word, `generation << 32 | version << 24 | writer pid << 2 | kind`:
/// the one place it is packed and unpacked (the functions below are its word-level
/// shorthands).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EntryState(u64);

impl EntryState {
    const fn new(generation: u32, version: u64, pid: u32, kind: u64) -> EntryState {
        EntryState(
            (generation as u64) << GEN_SHIFT
                | (version & VER_MASK) << VER_SHIFT
                | (pid as u64 & PID_MASK) << PID_SHIFT
                | (kind & KIND_MASK),
        )
    }
    const fn generation(self) -> u32 {
        (self.0 >> GEN_SHIFT) as u32
    }
    const fn version(self) -> u64 {
        (self.0 >> VER_SHIFT) & VER_MASK
    }
    const fn pid(self) -> u32 {
        ((self.0 >> PID_SHIFT) & PID_MASK) as u32
    }
    const fn kind(self) -> u64 {
        self.0 & KIND_MASK
    }
}

fn entry_word(generation: u32, version: u64, pid: u32, kind: u64) -> u64 {
    EntryState::new(generation, version, pid, kind).0
}

fn e_gen(w: u64) -> u32 {
    EntryState(w).generation()
}
/// The slot generation an entry word was written at (for inspectors: an entry from a
/// generation later than its slot's is garbage).
pub(crate) fn entry_generation(w: u64) -> u32 {
    e_gen(w)
}
fn e_ver(w: u64) -> u64 {
    EntryState(w).version()
}
fn e_pid(w: u64) -> u32 {
    EntryState(w).pid()
}
fn e_kind(w: u64) -> u64 {
    EntryState(w).kind()
}

/// Whether an entry stamped `entry_gen` predates the slot generation `current` (0, the
/// zeroed entry of a never-used slot, predates everything).
fn older(entry_gen: u32, current: u32) -> bool {
    entry_gen == 0 || (current.wrapping_sub(entry_gen) as i32) > 0
}

fn freelist_error(e: FreeListError) -> SetError {
    match e {
        FreeListError::Corrupt => SetError::Corrupt,
        FreeListError::Contended => SetError::Pool(PoolError::Contended),
    }
}

/// Whether the process that claimed an entry is gone (its entry may be reclaimed).
fn writer_dead(pid: u32, me: u32) -> bool {
    pid != me && (pid == 0 || crate::sys::process_start_ticks(pid).is_none())
}

/// Writes a claimed entry and publishes it as `kind` (live or removed).
fn publish_entry(e: Entry<'_>, claimed: u64, element: u64, tag: u64, origin: u64, kind: u64) -> Result<(), SetError> {
    e.element().store(element, Ordering::Relaxed);
    e.tag().store(tag, Ordering::Relaxed);
    e.origin().store(origin, Ordering::Relaxed);
    let done = entry_word(e_gen(claimed), e_ver(claimed), 0, kind);
    // Only this process changes an entry it claimed; anything else is corruption.
    e.state()
        .compare_exchange(claimed, done, Ordering::Release, Ordering::Relaxed)
        .map(|_| ())
        .map_err(|_| SetError::Corrupt)
}

/// Turns the live entry `seen` was copied from into a tombstone. False when the entry
/// changed since (someone else tombstoned it first).
fn tombstone(e: Entry<'_>, seen: &Seen) -> bool {
    let removed = (seen.word & !KIND_MASK) | REMOVED;
    e.state().compare_exchange(seen.word, removed, Ordering::AcqRel, Ordering::Relaxed).is_ok()
}

/// A view of one set slot's words (bounds-checked once, when made).
#[derive(Clone, Copy)]
struct SetView<'a> {
    w: &'a [AtomicU64],
}

impl<'a> SetView<'a> {
    fn gen_state(&self) -> &'a AtomicU64 {
        &self.w[W_GEN_STATE]
    }
    fn next_free(&self) -> &'a AtomicU64 {
        &self.w[W_NEXT_FREE]
    }
    fn node(&self) -> &'a AtomicU64 {
        &self.w[W_NODE]
    }
    fn owner(&self) -> &'a AtomicU64 {
        &self.w[W_OWNER]
    }
    /// Entry `i` (`i < SET_ENTRIES`; the view has exactly `SLOT_WORDS` words).
    fn entry(&self, i: usize) -> Entry<'a> {
        let base = W_ENTRIES + i * ENTRY_WORDS;
        Entry { w: &self.w[base..base + ENTRY_WORDS] }
    }
}

/// The four words of one entry.
#[derive(Clone, Copy)]
struct Entry<'a> {
    w: &'a [AtomicU64],
}

impl<'a> Entry<'a> {
    fn state(&self) -> &'a AtomicU64 {
        &self.w[E_STATE]
    }
    fn element(&self) -> &'a AtomicU64 {
        &self.w[E_ELEMENT]
    }
    fn tag(&self) -> &'a AtomicU64 {
        &self.w[E_TAG]
    }
    fn origin(&self) -> &'a AtomicU64 {
        &self.w[E_ORIGIN]
    }
}

/// A node's set, resolved at one slot generation.
#[derive(Clone, Copy)]
struct Attached<'a> {
    generation: u32,
    view: SetView<'a>,
}

/// A consistent copy of a live or removed entry.
#[derive(Clone, Copy, Debug)]
struct Seen {
    word: u64,
    element: u64,
    tag: u64,
}

impl Seen {
    fn kind(&self) -> u64 {
        e_kind(self.word)
    }
}

/// Copies entry `e` if it is live or removed at `generation`.
fn read_entry(e: Entry<'_>, generation: u32) -> Result<Option<Seen>, SetError> {
    for _ in 0..ENTRY_READ_ATTEMPTS {
        let s1 = e.state().load(Ordering::Acquire);
        if e_gen(s1) != generation || !matches!(e_kind(s1), LIVE | REMOVED) {
            return Ok(None);
        }
        let element = e.element().load(Ordering::Relaxed);
        let tag = e.tag().load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        let s2 = e.state().load(Ordering::Relaxed);
        // Removed meanwhile: the same pair, now a tombstone.
        if s2 == s1 || (e_kind(s1) == LIVE && s2 == (s1 & !KIND_MASK) | REMOVED) {
            return Ok(Some(Seen { word: s2, element, tag }));
        }
        std::hint::spin_loop();
    }
    Err(SetError::Pool(PoolError::Contended))
}

/// Copies of every live or removed entry of a set.
struct Snapshot {
    seen: [Option<Seen>; SET_ENTRIES],
}

impl Snapshot {
    fn take(set: &Attached<'_>) -> Result<Snapshot, SetError> {
        let mut seen = [None; SET_ENTRIES];
        for (i, s) in seen.iter_mut().enumerate() {
            *s = read_entry(set.view.entry(i), set.generation)?;
        }
        Ok(Snapshot { seen })
    }

    fn entries(&self) -> impl Iterator<Item = (usize, &Seen)> {
        self.seen.iter().enumerate().filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
    }

    fn is_removed(&self, element: u64, tag: u64) -> bool {
        self.entries().any(|(_, s)| s.kind() == REMOVED && s.element == element && s.tag == tag)
    }

    /// Live entries whose pair no removed entry holds.
    fn present(&self) -> impl Iterator<Item = &Seen> {
        self.entries().map(|(_, s)| s).filter(|s| s.kind() == LIVE && !self.is_removed(s.element, s.tag))
    }

    fn pairs(&self) -> BTreeSet<(u64, u64)> {
        self.entries().map(|(_, s)| (s.element, s.tag)).collect()
    }
}

/// Why recording a new set slot in a node failed.
enum AttachFail {
    /// Another process attached one first (its `set_slot` value).
    Taken(u32),
    Pool(PoolError),
}

impl From<PoolError> for AttachFail {
    fn from(e: PoolError) -> Self {
        AttachFail::Pool(e)
    }
}

impl Segment {
    /// The set slot at `index`, or `None` if out of range.
    fn set_view(&self, index: u32) -> Option<SetView<'_>> {
        let r = self.region(Region::Sets);
        if index as u64 >= r.capacity || r.elem_size != size_of::<SetSlot>() as u64 {
            return None;
        }
        let offset = (r.offset as usize).checked_add((index as usize).checked_mul(r.elem_size as usize)?)?;
        self.map.words_at(offset, SLOT_WORDS).map(|w| SetView { w })
    }

    fn set_free_head(&self) -> &AtomicU64 {
        self.hdr(hdr::SET_FREE_HEAD)
    }

    fn require_set_writable(&self) -> Result<(), SetError> {
        self.require_writable().map_err(SetError::Pool)
    }

    /// The set a node's record names (`set_slot`, index + 1), if any.
    fn set_of_record(&self, node: Handle, set_slot: u32) -> Result<Option<Attached<'_>>, SetError> {
        let Some(index) = set_slot.checked_sub(1) else { return Ok(None) };
        let view = self.set_view(index).ok_or(SetError::Corrupt)?;
        let gs = view.gen_state().load(Ordering::Acquire);
        if state_of(gs) == slot::LIVE && view.node().load(Ordering::Acquire) == node.to_raw() {
            return Ok(Some(Attached { generation: gen_of(gs), view }));
        }
        // The set was freed: the node was deleted after its record was copied (reading
        // it again fails), or the table is inconsistent.
        self.read(node)?;
        Err(SetError::Corrupt)
    }

    /// The set attached to `node`, if any.
    fn attached_set(&self, node: Handle) -> Result<Option<Attached<'_>>, SetError> {
        let set_slot = self.read(node)?.rec.set_slot;
        self.set_of_record(node, set_slot)
    }

    /// The set attached to `node`, attaching a free set slot first if it has none.
    fn attach_set(&self, node: Handle) -> Result<Attached<'_>, SetError> {
        if let Some(set) = self.attached_set(node)? {
            return Ok(set);
        }
        let index = freelist::pop(self.set_free_head(), |i| self.set_view(i).map(|v| v.next_free()))
            .map_err(freelist_error)?
            .ok_or(SetError::NoSetSlots { capacity: self.caps.sets })?;
        let view = self.set_view(index).ok_or(SetError::Corrupt)?;
        // FREE -> RESERVED by compare-and-set: a slot in use on the free list is left to
        // its owner. No entry needs clearing: every entry predates this generation.
        let generation = crate::genstate::reserve(view.gen_state()).map_err(|_| SetError::Corrupt)?;
        // Ours until the node's record names it (see `reclaim_leaked_sets`).
        view.owner().store(self.me.0, Ordering::Relaxed);
        view.node().store(node.to_raw(), Ordering::Relaxed);
        view.gen_state().store(pack(generation, slot::LIVE), Ordering::Release);
        crate::failpoint::hit("set.attach_reserved");
        let mine = index + 1;
        let recorded = self.modify(node, Change::new(EventKind::NODE_UPDATED), |rec| {
            if rec.set_slot != 0 {
                return Err(AttachFail::Taken(rec.set_slot));
            }
            rec.set_slot = mine;
            Ok(())
        });
        match recorded {
            // Published; a failed event append does not undo that.
            Ok(_) | Err(AttachFail::Pool(PoolError::EventNotAppended { .. })) => {
                let _ = view.owner().compare_exchange(self.me.0, 0, Ordering::AcqRel, Ordering::Relaxed);
                self.hdr(hdr::SETS_USED).fetch_add(1, Ordering::Relaxed);
                Ok(Attached { generation, view })
            }
            Err(AttachFail::Taken(theirs)) => {
                self.give_back_set(index, view, generation);
                self.set_of_record(node, theirs)?.ok_or(SetError::Corrupt)
            }
            Err(AttachFail::Pool(e)) => {
                self.give_back_set(index, view, generation);
                Err(e.into())
            }
        }
    }

    /// Frees a set slot (new generation) and pushes it back on the free list. On a
    /// contended push the slot leaks rather than failing the caller.
    fn give_back_set(&self, index: u32, view: SetView<'_>, generation: u32) {
        view.owner().store(0, Ordering::Relaxed);
        view.gen_state().store(pack(next_generation(generation), slot::FREE), Ordering::Release);
        let _ = freelist::push(self.set_free_head(), index, view.next_free());
    }

    /// Frees the set of a node being deleted. Called by `delete_leaf` with the node's
    /// lock held and its record as read under that lock, after the node's slot was
    /// marked free. Never fails: a set that is not this node's is left alone.
    pub(crate) fn release_set(&self, owner: Handle, rec: &NodeRecord) {
        let Some(index) = rec.set_slot.checked_sub(1) else { return };
        let Some(view) = self.set_view(index) else { return };
        let gs = view.gen_state().load(Ordering::Acquire);
        if state_of(gs) != slot::LIVE || view.node().load(Ordering::Relaxed) != owner.to_raw() {
            return;
        }
        let freed = pack(next_generation(gen_of(gs)), slot::FREE);
        if view.gen_state().compare_exchange(gs, freed, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return;
        }
        view.owner().store(0, Ordering::Relaxed);
        let _ = freelist::push(self.set_free_head(), index, view.next_free());
        self.hdr(hdr::SETS_USED).fetch_sub(1, Ordering::Relaxed);
    }

    /// Free set slots, counted by walking the free list (bounded by capacity). A
    /// diagnostic: under concurrent churn the answer is approximate.
    ///
    /// # Errors
    ///
    /// [`PoolError::Corrupt`] if the list leaves the table or is longer than it.
    pub fn free_set_slots(&self) -> Result<u64, PoolError> {
        let cap = self.caps.sets as u64;
        let mut n = 0u64;
        let mut cur = crate::freelist::FreeHead::from_raw(self.set_free_head().load(Ordering::Acquire)).top();
        while cur != 0 {
            n += 1;
            if n > cap {
                return Err(PoolError::Corrupt { what: "set free list longer than the table" });
            }
            let v = self
                .set_view((cur - 1) as u32)
                .ok_or(PoolError::Corrupt { what: "set free list names a slot outside the table" })?;
            cur = v.next_free().load(Ordering::Relaxed);
        }
        Ok(n)
    }

    /// The daemon's sweep for set slots a process killed mid-attach left live but named
    /// by no record (between reserving the slot and recording it in its node). A slot
    /// whose attaching process is alive is never touched. Judged under the node's lock;
    /// bounded by the table's capacity. Returns how many slots it freed.
    pub(crate) fn reclaim_leaked_sets(&self) -> Result<u64, PoolError> {
        self.require_writable()?;
        let mut freed = 0;
        for i in 0..self.caps.sets {
            let Some(view) = self.set_view(i) else { break };
            let gs = view.gen_state().load(Ordering::Acquire);
            let owner = view.owner().load(Ordering::Acquire);
            if state_of(gs) != slot::LIVE || owner == 0 || crate::sys::OwnerTag(owner).is_alive() {
                continue;
            }
            let unchanged =
                || view.gen_state().load(Ordering::Acquire) == gs && view.owner().load(Ordering::Acquire) == owner;
            let free = || {
                let next = pack(next_generation(gen_of(gs)), slot::FREE);
                if view.gen_state().compare_exchange(gs, next, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                    return false;
                }
                view.owner().store(0, Ordering::Relaxed);
                let _ = freelist::push(self.set_free_head(), i, view.next_free());
                true
            };
            let Some(node) = Handle::from_raw(view.node().load(Ordering::Acquire)) else {
                if unchanged() && free() {
                    freed += 1;
                }
                continue;
            };
            let judged = self.modify(
                node,
                Change::new(EventKind::NODE_UPDATED),
                |rec: &mut NodeRecord| -> Result<(), Verdict> {
                    if !unchanged() {
                        return Err(Verdict::Done);
                    }
                    if rec.set_slot == i + 1 {
                        // Recorded: its attacher died after publishing, before letting go.
                        view.owner().store(0, Ordering::Release);
                    } else if free() {
                        freed += 1;
                    }
                    Err(Verdict::Done)
                },
            );
            // The node was deleted: its delete frees only the set its record names.
            if let Err(Verdict::Pool(PoolError::StaleHandle | PoolError::NotFound)) = judged {
                if unchanged() && free() {
                    freed += 1;
                }
            }
        }
        Ok(freed)
    }

    /// Fails with [`PoolError::StaleHandle`] if the set was freed (its node deleted)
    /// since it was resolved: whatever was written went to a dead set.
    fn set_still_attached(&self, set: &Attached<'_>) -> Result<(), SetError> {
        if set.view.gen_state().load(Ordering::Acquire) == pack(set.generation, slot::LIVE) {
            Ok(())
        } else {
            Err(SetError::Pool(PoolError::StaleHandle))
        }
    }

    /// Claims an entry of `set` for writing: returns it and the state word it now holds.
    fn set_claim_entry<'a>(&self, set: &Attached<'a>) -> Result<(Entry<'a>, u64), SetError> {
        let me = self.me.pid();
        let g = set.generation;
        for _ in 0..CLAIM_ROUNDS {
            let mut raced = false;
            // Pass 0: free entries. Pass 1: entries left half-written by dead processes
            // (a /proc look-up each, so only once nothing else is free).
            for pass in 0..2 {
                for i in 0..SET_ENTRIES {
                    let e = set.view.entry(i);
                    let w = e.state().load(Ordering::Relaxed);
                    let current_or_older = e_gen(w) == g || older(e_gen(w), g);
                    let claimable = match pass {
                        0 => (e_gen(w) == g && e_kind(w) == EMPTY) || (older(e_gen(w), g) && e_kind(w) != WRITING),
                        _ => current_or_older && e_kind(w) == WRITING && writer_dead(e_pid(w), me),
                    };
                    if !claimable {
                        continue;
                    }
                    let mine = entry_word(g, e_ver(w) + 1, me, WRITING);
                    // Acquire: our field stores order after the previous occupant's.
                    match e.state().compare_exchange(w, mine, Ordering::Acquire, Ordering::Relaxed) {
                        Ok(_) => {
                            // Readers that see any of our field stores see the claim.
                            fence(Ordering::Release);
                            return Ok((e, mine));
                        }
                        Err(_) => raced = true,
                    }
                }
            }
            if !raced {
                return Err(SetError::SetFull { capacity: SET_ENTRIES });
            }
        }
        Err(SetError::Pool(PoolError::Contended))
    }

    /// Entries a claim could take now (an estimate: others may take them first).
    fn set_claimable_entries(&self, set: &Attached<'_>) -> usize {
        let me = self.me.pid();
        let g = set.generation;
        (0..SET_ENTRIES)
            .filter(|&i| {
                let w = set.view.entry(i).state().load(Ordering::Relaxed);
                let current_or_older = e_gen(w) == g || older(e_gen(w), g);
                (e_gen(w) == g && e_kind(w) == EMPTY)
                    || (older(e_gen(w), g) && e_kind(w) != WRITING)
                    || (current_or_older && e_kind(w) == WRITING && writer_dead(e_pid(w), me))
            })
            .count()
    }

    /// Adds `element` to `node`'s observed-remove set under a new tag (an HLC value,
    /// unique on this host) and returns the tag. Attaches a set slot to the node on its
    /// first add. Adding an element that is already present adds another tag.
    ///
    /// Lock-free: concurrent adds and removes from any number of processes proceed
    /// without waiting; an add concurrent with a remove of the same element wins.
    ///
    /// # Errors
    ///
    /// * [`SetError::SetFull`]: all [`SET_ENTRIES`] entries hold live or removed pairs
    ///   (see [`Segment::set_compact`]).
    /// * [`SetError::NoSetSlots`]: the node has no set yet and no set slot is free.
    /// * [`SetError::Pool`] with [`PoolError::StaleHandle`] / [`PoolError::NotFound`]:
    ///   the node was deleted; with [`PoolError::ReadOnly`], [`PoolError::Closing`],
    ///   [`PoolError::DaemonGone`]: the segment takes no writes; with
    ///   [`PoolError::EventNotAppended`]: the element was added but its event was not.
    /// * [`SetError::Corrupt`]: the set table is inconsistent.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{NewNode, NodeKind};
    /// # let name = format!("doc-set_add-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let team = seg.add(seg.root(), &NewNode::new(NodeKind::Folder, "team"))?;
    /// let tag = seg.set_add(team, 42)?;
    /// assert!(tag > 0);
    /// assert!(seg.set_contains(team, 42)?);
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_add(&self, node: Handle, element: u64) -> Result<u64, SetError> {
        if let Some(link) = self.link() {
            return link.ask_count(crate::broker::Request::SetAdd { node, element });
        }
        self.permit(crate::token::Right::Update, Some(node)).map_err(PoolError::from)?;
        self.require_set_writable()?;
        let set = self.attach_set(node)?;
        let (e, claimed) = self.set_claim_entry(&set)?;
        let tag = self.now().0;
        publish_entry(e, claimed, element, tag, self.me.pid() as u64, LIVE)?;
        self.set_still_attached(&set)?;
        self.set_event(node, EventKind::SET_ADDED, element, tag)?;
        Ok(tag)
    }

    /// Appends a set event (`{"element":E,"tag":T}`) about `node`.
    fn set_event(&self, node: Handle, kind: EventKind, element: u64, tag: u64) -> Result<(), SetError> {
        use std::io::Write;
        let n = self.read(node)?;
        let mut buf = [0u8; 64];
        let mut cur = std::io::Cursor::new(&mut buf[..]);
        let _ = write!(cur, "{{\"element\":{element},\"tag\":{tag}}}");
        let len = cur.position() as usize;
        self.append_unchecked(&crate::NewEvent::new(kind).node(n.uuid(), n.version()).payload(&buf[..len]))
            .map(|_| ())
            .map_err(|error| SetError::Pool(PoolError::EventNotAppended { error, node }))
    }

    /// Writes a whole set into the node restored in slot `index` (restore only: the
    /// daemon's recovery). Emits nothing.
    pub(crate) fn restore_set(&self, index: u32, state: &OrSetState) -> Result<(), SetError> {
        self.require_restoring()?;
        if state.is_empty() {
            return Ok(());
        }
        let slot_index = freelist::pop(self.set_free_head(), |i| self.set_view(i).map(|v| v.next_free()))
            .map_err(freelist_error)?
            .ok_or(SetError::NoSetSlots { capacity: self.caps.sets })?;
        let view = self.set_view(slot_index).ok_or(SetError::Corrupt)?;
        let generation = crate::genstate::reserve(view.gen_state()).map_err(|_| SetError::Corrupt)?;
        let node = self.restored_handle(index)?;
        view.node().store(node.to_raw(), Ordering::Relaxed);
        view.gen_state().store(pack(generation, slot::LIVE), Ordering::Release);
        self.hdr(hdr::SETS_USED).fetch_add(1, Ordering::Relaxed);
        self.restore_record_field(index, |rec| rec.set_slot = slot_index + 1)?;
        let set = Attached { generation, view };
        for &(element, tag) in state.adds.iter().chain(state.tombstones.iter().filter(|p| !state.adds.contains(p))) {
            let kind = if state.is_tombstoned(element, tag) { REMOVED } else { LIVE };
            let (e, claimed) = self.set_claim_entry(&set)?;
            publish_entry(e, claimed, element, tag, 0, kind)?;
        }
        Ok(())
    }

    /// Removes `element` from `node`'s set: tombstones every pair of it present now (the
    /// adds this remove observed). Returns how many entries it tombstoned; 0 when the
    /// element was absent. An add running concurrently is not observed and survives.
    ///
    /// # Errors
    ///
    /// * [`SetError::Pool`] with [`PoolError::StaleHandle`] / [`PoolError::NotFound`]:
    ///   the node was deleted; with [`PoolError::ReadOnly`], [`PoolError::Closing`],
    ///   [`PoolError::DaemonGone`]: the segment takes no writes; with
    ///   [`PoolError::EventNotAppended`]: the element was removed but its event was not.
    /// * [`SetError::Corrupt`]: the set table is inconsistent.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{NewNode, NodeKind};
    /// # let name = format!("doc-set_remove-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let team = seg.add(seg.root(), &NewNode::new(NodeKind::Folder, "team"))?;
    /// seg.set_add(team, 7)?;
    /// seg.set_add(team, 7)?; // a second tag for the same element
    /// assert_eq!(seg.set_remove(team, 7)?, 2);
    /// assert!(!seg.set_contains(team, 7)?);
    /// assert_eq!(seg.set_remove(team, 7)?, 0);
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_remove(&self, node: Handle, element: u64) -> Result<usize, SetError> {
        if let Some(link) = self.link() {
            return link.ask_count(crate::broker::Request::SetRemove { node, element }).map(|n| n as usize);
        }
        self.permit(crate::token::Right::Update, Some(node)).map_err(PoolError::from)?;
        self.require_set_writable()?;
        let Some(set) = self.attached_set(node)? else { return Ok(0) };
        let mut removed = 0;
        for i in 0..SET_ENTRIES {
            let e = set.view.entry(i);
            let Some(seen) = read_entry(e, set.generation)? else { continue };
            if seen.kind() != LIVE || seen.element != element {
                continue;
            }
            if tombstone(e, &seen) {
                removed += 1;
            }
        }
        self.set_still_attached(&set)?;
        if removed > 0 {
            self.set_event(node, EventKind::SET_REMOVED, element, 0)?;
        }
        Ok(removed)
    }

    /// Whether `element` is present in `node`'s set (false when it has no set). No lock
    /// is taken; it works on a read-only mapping.
    ///
    /// # Errors
    ///
    /// * [`SetError::Pool`] with [`PoolError::StaleHandle`] / [`PoolError::NotFound`]:
    ///   the node was deleted; with [`PoolError::Contended`]: it kept changing.
    /// * [`SetError::Corrupt`]: the set table is inconsistent.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{NewNode, NodeKind};
    /// # let name = format!("doc-set_contains-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let team = seg.add(seg.root(), &NewNode::new(NodeKind::Folder, "team"))?;
    /// assert!(!seg.set_contains(team, 1)?); // no set yet
    /// seg.set_add(team, 1)?;
    /// assert!(seg.set_contains(team, 1)? && !seg.set_contains(team, 2)?);
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_contains(&self, node: Handle, element: u64) -> Result<bool, SetError> {
        let Some(set) = self.attached_set(node)? else { return Ok(false) };
        Ok(Snapshot::take(&set)?.present().any(|s| s.element == element))
    }

    /// Fills `out` with the distinct elements present in `node`'s set, ascending. `out`
    /// is cleared first; reuse it to avoid allocating.
    pub fn set_elements(&self, node: Handle, out: &mut Vec<u64>) -> Result<(), SetError> {
        out.clear();
        let Some(set) = self.attached_set(node)? else { return Ok(()) };
        out.extend(Snapshot::take(&set)?.present().map(|s| s.element));
        out.sort_unstable();
        out.dedup();
        Ok(())
    }

    /// Exports `node`'s set as an [`OrSetState`] (for merging elsewhere and for the
    /// journal). Entries are copied one at a time: the result contains every operation
    /// completed before the call and perhaps some concurrent ones, and is always a
    /// state some order of those operations produces.
    pub fn set_state(&self, node: Handle) -> Result<OrSetState, SetError> {
        let Some(set) = self.attached_set(node)? else { return Ok(OrSetState::new()) };
        let snap = Snapshot::take(&set)?;
        let mut state = OrSetState::new();
        for (_, s) in snap.entries() {
            state.adds.insert((s.element, s.tag));
            if s.kind() == REMOVED {
                state.tombstones.insert((s.element, s.tag));
            }
        }
        Ok(state)
    }

    /// Merges a remote state into `node`'s set: pairs it has not seen are stored (live,
    /// or as tombstones when `other` removed them) and local pairs `other` removed are
    /// tombstoned. Idempotent, so a merge that failed part-way can simply be repeated.
    ///
    /// Errors: [`SetError::SetFull`] when the new pairs do not fit; nothing is stored
    /// then, unless concurrent adds took entries after the check (a partial merge,
    /// which is still a valid state).
    pub fn set_merge(&self, node: Handle, other: &OrSetState) -> Result<(), SetError> {
        if self.is_brokered() {
            return Err(SetError::Pool(PoolError::Broker(crate::broker::BrokerFault::Unsupported)));
        }
        self.permit(crate::token::Right::Update, Some(node)).map_err(PoolError::from)?;
        self.require_set_writable()?;
        if other.is_empty() {
            return Ok(());
        }
        let set = self.attach_set(node)?;
        let snap = Snapshot::take(&set)?;
        let local = snap.pairs();
        let missing: BTreeSet<(u64, u64)> =
            other.adds.iter().chain(&other.tombstones).filter(|p| !local.contains(p)).copied().collect();
        if missing.len() > self.set_claimable_entries(&set) {
            return Err(SetError::SetFull { capacity: SET_ENTRIES });
        }
        for (i, s) in snap.entries() {
            if s.kind() == LIVE && other.is_tombstoned(s.element, s.tag) {
                tombstone(set.view.entry(i), s);
            }
        }
        for &(element, tag) in &missing {
            let kind = if other.is_tombstoned(element, tag) { REMOVED } else { LIVE };
            let (e, claimed) = self.set_claim_entry(&set)?;
            publish_entry(e, claimed, element, tag, 0, kind)?;
        }
        self.set_still_attached(&set)?;
        self.set_event(node, EventKind::SET_MERGED, 0, 0)
    }

    /// Turns the removed entries of `node`'s set back into empty ones and returns how
    /// many were freed.
    ///
    /// This forgets tombstones: call it only once every replica has merged the
    /// removals, or a later [`Segment::set_merge`] of an older state brings the removed
    /// elements back.
    pub fn set_compact(&self, node: Handle) -> Result<usize, SetError> {
        if let Some(link) = self.link() {
            return link.ask_count(crate::broker::Request::SetCompact { node }).map(|n| n as usize);
        }
        self.permit(crate::token::Right::Update, Some(node)).map_err(PoolError::from)?;
        self.require_set_writable()?;
        let Some(set) = self.attached_set(node)? else { return Ok(0) };
        let snap = Snapshot::take(&set)?;
        // A pair both live and removed (stored twice by racing merges) is removed:
        // tombstone the live copy too, so freeing the tombstone cannot revive it.
        for (i, s) in snap.entries() {
            if s.kind() == LIVE && snap.is_removed(s.element, s.tag) {
                tombstone(set.view.entry(i), s);
            }
        }
        let mut freed = 0;
        for i in 0..SET_ENTRIES {
            let st = set.view.entry(i).state();
            let w = st.load(Ordering::Acquire);
            if e_gen(w) == set.generation && e_kind(w) == REMOVED {
                let empty = entry_word(set.generation, e_ver(w), 0, EMPTY);
                if st.compare_exchange(w, empty, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                    freed += 1;
                }
            }
        }
        if freed > 0 {
            self.set_event(node, EventKind::SET_COMPACTED, 0, 0)?;
        }
        Ok(freed)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::{Access, Capacities, DeleteMode, NewNode, NodeKind};
    use proptest::prelude::*;

    // ---- the pure state ----

    #[derive(Clone, Debug)]
    enum Op {
        Add(u64),
        Remove(u64),
        /// Merge replica `n % 3` into this one.
        Sync(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u64..6).prop_map(Op::Add),
            2 => (0u64..6).prop_map(Op::Remove),
            1 => (0usize..3).prop_map(Op::Sync),
        ]
    }

    /// Three replicas after a random history of adds, removes and merges, every add
    /// with a fresh tag.
    fn replicas() -> impl Strategy<Value = [OrSetState; 3]> {
        prop::collection::vec((0usize..3, op()), 0..40).prop_map(|ops| {
            let mut r: [OrSetState; 3] = Default::default();
            let mut tag = 0u64;
            for (at, op) in ops {
                match op {
                    Op::Add(e) => {
                        tag += 1;
                        r[at].add(e, tag);
                    }
                    Op::Remove(e) => {
                        r[at].remove(e);
                    }
                    Op::Sync(from) => {
                        let other = r[from].clone();
                        r[at].merge_from(&other);
                    }
                }
            }
            r
        })
    }

    proptest! {
        #[test]
        fn merge_is_commutative([a, b, _c] in replicas()) {
            prop_assert_eq!(OrSetState::merge(&a, &b), OrSetState::merge(&b, &a));
        }

        #[test]
        fn merge_is_associative([a, b, c] in replicas()) {
            let left = OrSetState::merge(&OrSetState::merge(&a, &b), &c);
            let right = OrSetState::merge(&a, &OrSetState::merge(&b, &c));
            prop_assert_eq!(left.elements(), right.elements());
            prop_assert_eq!(left, right);
        }

        #[test]
        fn merge_is_idempotent([a, b, _c] in replicas()) {
            prop_assert_eq!(OrSetState::merge(&a, &a), a.clone());
            let ab = OrSetState::merge(&a, &b);
            prop_assert_eq!(OrSetState::merge(&ab, &b), ab.clone());
        }

        #[test]
        fn an_add_concurrent_with_a_remove_wins([base, _b, _c] in replicas(), e in 0u64..6) {
            // Both replicas start from `base`; A adds e under a tag no one has seen,
            // B removes e having observed only base's tags.
            let fresh = base.max_tag().unwrap_or(0) + 1;
            let mut a = base.clone();
            a.add(e, fresh);
            let mut b = base.clone();
            b.remove(e);
            prop_assert!(!b.contains(e));
            prop_assert!(OrSetState::merge(&a, &b).contains(e));
            prop_assert!(OrSetState::merge(&b, &a).contains(e));
            // A remove that observed the add does remove it.
            let mut seen = OrSetState::merge(&a, &b);
            seen.remove(e);
            prop_assert!(!OrSetState::merge(&seen, &a).contains(e));
        }

        #[test]
        fn elements_agree_with_contains([a, _b, _c] in replicas()) {
            let elements = a.elements();
            for e in 0u64..6 {
                prop_assert_eq!(a.contains(e), elements.contains(&e));
            }
        }
    }

    #[test]
    fn state_basics() {
        let mut s = OrSetState::new();
        assert!(s.add(7, 1));
        assert!(s.add(7, 2));
        assert!(s.add(9, 3));
        assert_eq!(s.elements(), vec![7, 9]);
        assert_eq!(s.remove(7), 2);
        assert_eq!(s.remove(7), 0);
        assert!(!s.contains(7) && s.contains(9));
        // A removed pair stays removed.
        assert!(!s.add(7, 1));
        assert!(!s.contains(7));
        s.add(7, 4);
        assert!(s.contains(7));
        assert_eq!(s.max_tag(), Some(4));
        let back = OrSetState::from_parts(s.adds(), s.tombstones());
        assert_eq!(back, s);
    }

    // ---- the shared-memory set ----

    type TestSeg = crate::testing::TempSegment;

    fn segment() -> TestSeg {
        let caps = Capacities { nodes: 64, events: 256, agents: 4, blob_chunks: 1, blob_chunk_size: 64, sets: 4 };
        crate::testing::temp_segment("orset", &caps)
    }

    fn task(seg: &Segment, name: &str) -> Handle {
        seg.add(seg.root(), &NewNode::new(NodeKind::Task, name)).unwrap()
    }

    fn sets_used(seg: &Segment) -> u64 {
        seg.info().regions[Region::Sets as usize].used
    }

    fn elements(seg: &Segment, h: Handle) -> Vec<u64> {
        let mut out = Vec::new();
        seg.set_elements(h, &mut out).unwrap();
        out
    }

    #[test]
    fn add_remove_contains() {
        let seg = segment();
        let t = task(&seg, "t");
        assert!(!seg.set_contains(t, 5).unwrap());
        assert_eq!(seg.set_remove(t, 5).unwrap(), 0);
        assert_eq!(sets_used(&seg), 0, "reads and removes do not attach a set");
        let t1 = seg.set_add(t, 5).unwrap();
        let t2 = seg.set_add(t, 5).unwrap();
        assert!(t2 > t1);
        seg.set_add(t, 6).unwrap();
        assert_eq!(sets_used(&seg), 1);
        assert_ne!(seg.read(t).unwrap().rec.set_slot, 0);
        assert!(seg.set_contains(t, 5).unwrap());
        assert_eq!(elements(&seg, t), vec![5, 6]);
        assert_eq!(seg.set_remove(t, 5).unwrap(), 2);
        assert!(!seg.set_contains(t, 5).unwrap());
        assert_eq!(elements(&seg, t), vec![6]);
        seg.set_add(t, 5).unwrap();
        assert!(seg.set_contains(t, 5).unwrap());
        let state = seg.set_state(t).unwrap();
        assert_eq!(state.adds().count(), 4);
        assert_eq!(state.tombstones().count(), 2);
        assert_eq!(state.elements(), vec![5, 6]);
    }

    #[test]
    fn concurrent_adds_are_all_kept() {
        let seg = segment();
        let t = task(&seg, "t");
        // Every thread's first add races to attach the set.
        std::thread::scope(|s| {
            for th in 0..4u64 {
                let seg = &seg;
                s.spawn(move || {
                    for k in 0..8u64 {
                        seg.set_add(t, th * 100 + k).unwrap();
                    }
                });
            }
        });
        let mut want: Vec<u64> = (0..4u64).flat_map(|th| (0..8).map(move |k| th * 100 + k)).collect();
        want.sort_unstable();
        assert_eq!(elements(&seg, t), want);
        assert_eq!(sets_used(&seg), 1, "losers of the attach race gave their slots back");
        assert_eq!(seg.set_add(t, 1), Err(SetError::SetFull { capacity: SET_ENTRIES }));
    }

    #[test]
    fn concurrent_readers_see_only_added_pairs() {
        let seg = segment();
        let t = task(&seg, "t");
        let tag0 = seg.set_add(t, 0).unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        let (written, observed) = std::thread::scope(|s| {
            let (seg, done) = (&seg, &done);
            // Recycles one entry over and over: add k, remove k, compact.
            let writer = s.spawn(move || {
                let mut written = vec![(0, tag0)];
                for k in 1..2000u64 {
                    written.push((k, seg.set_add(t, k).unwrap()));
                    assert_eq!(seg.set_remove(t, k).unwrap(), 1);
                    assert_eq!(seg.set_compact(t).unwrap(), 1);
                }
                done.store(true, std::sync::atomic::Ordering::Release);
                written
            });
            let reader = s.spawn(move || {
                let mut observed = BTreeSet::new();
                let mut rounds = 0u64;
                while !done.load(std::sync::atomic::Ordering::Acquire) || rounds < 100 {
                    assert!(seg.set_contains(t, 0).unwrap());
                    observed.extend(seg.set_state(t).unwrap().adds());
                    rounds += 1;
                }
                observed
            });
            (writer.join().unwrap(), reader.join().unwrap())
        });
        let written: BTreeSet<(u64, u64)> = written.into_iter().collect();
        assert!(observed.is_subset(&written), "torn pairs: {:?}", observed.difference(&written).collect::<Vec<_>>());
        assert_eq!(elements(&seg, t), vec![0]);
    }

    #[test]
    fn full_set_then_compact() {
        let seg = segment();
        let t = task(&seg, "t");
        for e in 0..SET_ENTRIES as u64 {
            seg.set_add(t, e).unwrap();
        }
        let err = seg.set_add(t, 99).unwrap_err();
        assert_eq!(err, SetError::SetFull { capacity: SET_ENTRIES });
        assert_eq!(err.to_string(), format!("the node's set is full ({SET_ENTRIES} entries, live or removed)"));
        // Removing does not free entries: the tombstones are kept for merging.
        assert_eq!(seg.set_remove(t, 3).unwrap(), 1);
        assert_eq!(seg.set_remove(t, 4).unwrap(), 1);
        assert!(matches!(seg.set_add(t, 99), Err(SetError::SetFull { .. })));
        assert_eq!(seg.set_compact(t).unwrap(), 2);
        assert_eq!(seg.set_compact(t).unwrap(), 0);
        seg.set_add(t, 99).unwrap();
        seg.set_add(t, 100).unwrap();
        assert!(matches!(seg.set_add(t, 101), Err(SetError::SetFull { .. })));
        let els = elements(&seg, t);
        assert_eq!(els.len(), SET_ENTRIES);
        assert!(!els.contains(&3) && els.contains(&99) && els.contains(&100));
    }

    #[test]
    fn state_and_merge_round_trip() {
        let seg = segment();
        let a = task(&seg, "a");
        let b = task(&seg, "b");
        for e in [1, 2, 3] {
            seg.set_add(a, e).unwrap();
        }
        seg.set_remove(a, 2).unwrap();
        let sa = seg.set_state(a).unwrap();
        seg.set_merge(b, &sa).unwrap();
        assert_eq!(seg.set_state(b).unwrap(), sa);
        assert_eq!(elements(&seg, b), vec![1, 3]);
        // Idempotent.
        seg.set_merge(b, &sa).unwrap();
        assert_eq!(seg.set_state(b).unwrap(), sa);
        assert_eq!(seg.set_merge(b, &OrSetState::new()), Ok(()));

        // A remote replica removes 1 having observed its tag; concurrently 1 is added
        // again here under a new tag. After merging, the new add wins.
        let mut remote = sa.clone();
        remote.remove(1);
        remote.add(7, sa.max_tag().unwrap() + 1_000_000);
        seg.set_add(a, 1).unwrap();
        seg.set_merge(a, &remote).unwrap();
        assert_eq!(elements(&seg, a), vec![1, 3, 7]);
        // And the exported state equals the pure merge of both sides.
        let local = seg.set_state(a).unwrap();
        assert_eq!(local, OrSetState::merge(&local, &remote));
        // Merging into b (which never saw the re-add) removes 1 there.
        seg.set_merge(b, &remote).unwrap();
        assert_eq!(elements(&seg, b), vec![3, 7]);
    }

    #[test]
    fn merge_that_does_not_fit_changes_nothing() {
        let seg = segment();
        let t = task(&seg, "t");
        for e in 0..30 {
            seg.set_add(t, e).unwrap();
        }
        let before = seg.set_state(t).unwrap();
        let big = OrSetState::from_parts((100..103).map(|e| (e, e)), [(0, 0)]);
        assert!(matches!(seg.set_merge(t, &big), Err(SetError::SetFull { .. })));
        assert_eq!(seg.set_state(t).unwrap(), before);
    }

    #[test]
    fn deleting_the_node_returns_its_set() {
        let seg = segment();
        let caps = seg.capacities().sets;
        let nodes: Vec<Handle> = (0..caps).map(|i| task(&seg, &format!("n{i}"))).collect();
        for &n in &nodes {
            seg.set_add(n, 1).unwrap();
        }
        assert_eq!(sets_used(&seg), caps as u64);
        let extra = task(&seg, "extra");
        let err = seg.set_add(extra, 1).unwrap_err();
        assert_eq!(err, SetError::NoSetSlots { capacity: caps });
        assert_eq!(err.to_string(), format!("all {caps} set slots of the segment are in use"));
        assert_eq!(sets_used(&seg), caps as u64);

        // The reused slot shows nothing of its previous owner.
        seg.set_add(nodes[0], 2).unwrap();
        seg.delete(nodes[0], DeleteMode::LeafOnly).unwrap();
        assert_eq!(sets_used(&seg), caps as u64 - 1);
        assert_eq!(seg.set_add(nodes[0], 1), Err(SetError::Pool(PoolError::StaleHandle)));
        seg.set_add(extra, 9).unwrap();
        assert_eq!(elements(&seg, extra), vec![9]);
        assert_eq!(seg.set_state(extra).unwrap().adds().count(), 1);

        for &n in &nodes[1..] {
            seg.delete(n, DeleteMode::LeafOnly).unwrap();
        }
        seg.delete(extra, DeleteMode::LeafOnly).unwrap();
        assert_eq!(sets_used(&seg), 0);

        // Recursive deletes return the sets of the whole subtree.
        let p = task(&seg, "p");
        let c = seg.add(p, &NewNode::new(NodeKind::Task, "c")).unwrap();
        seg.set_add(p, 1).unwrap();
        seg.set_add(c, 1).unwrap();
        assert_eq!(sets_used(&seg), 2);
        seg.delete(p, DeleteMode::Recursive).unwrap();
        assert_eq!(sets_used(&seg), 0);
    }

    #[test]
    fn a_writer_holding_a_freed_set_cannot_touch_its_next_owner() {
        let seg = segment();
        let old = task(&seg, "old");
        seg.set_add(old, 1).unwrap();
        let stale = seg.attached_set(old).unwrap().unwrap();
        seg.delete(old, DeleteMode::LeafOnly).unwrap();
        let new = task(&seg, "new");
        for e in 0..SET_ENTRIES as u64 - 1 {
            seg.set_add(new, 100 + e).unwrap();
        }
        let fresh = seg.attached_set(new).unwrap().unwrap();
        assert!(std::ptr::eq(fresh.view.gen_state(), stale.view.gen_state()), "LIFO reuse of the slot");
        // The stale writer may claim only an entry the new owner does not use...
        let (e, claimed) = seg.set_claim_entry(&stale).unwrap();
        publish_entry(e, claimed, 666, 1, 1, LIVE).unwrap();
        assert_eq!(seg.set_still_attached(&stale), Err(SetError::Pool(PoolError::StaleHandle)));
        // ...which the new owner does not see and may take over.
        assert!(!seg.set_contains(new, 666).unwrap());
        seg.set_add(new, 200).unwrap();
        assert_eq!(elements(&seg, new).len(), SET_ENTRIES);
        assert!(matches!(seg.set_claim_entry(&stale), Err(SetError::SetFull { .. })));
    }

    #[test]
    fn an_entry_left_half_written_by_a_dead_process_is_reclaimed() {
        let seg = segment();
        let t = task(&seg, "t");
        seg.set_add(t, 0).unwrap();
        let set = seg.attached_set(t).unwrap().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        // Entry 1 claimed by the dead process, never published.
        let e = set.view.entry(1);
        assert_eq!(e.state().load(Ordering::Relaxed), 0);
        e.state().store(entry_word(set.generation, 1, dead, WRITING), Ordering::Relaxed);
        e.element().store(42, Ordering::Relaxed);
        assert!(!seg.set_contains(t, 42).unwrap());
        for k in 1..SET_ENTRIES as u64 {
            seg.set_add(t, k).unwrap();
        }
        assert_eq!(elements(&seg, t).len(), SET_ENTRIES);
        assert!(matches!(seg.set_add(t, 77), Err(SetError::SetFull { .. })));
    }

    #[test]
    fn hostile_and_read_only_segments_are_refused() {
        let seg = segment();
        let t = task(&seg, "t");
        seg.set_add(t, 1).unwrap();
        let ro = Segment::attach(&seg.name, Access::ReadOnly).unwrap();
        assert!(ro.set_contains(t, 1).unwrap());
        assert_eq!(ro.set_add(t, 2), Err(SetError::Pool(PoolError::ReadOnly)));
        assert_eq!(ro.set_remove(t, 1), Err(SetError::Pool(PoolError::ReadOnly)));
        assert_eq!(ro.set_compact(t), Err(SetError::Pool(PoolError::ReadOnly)));
        drop(ro);

        let u = task(&seg, "u");
        for bad in [u32::MAX, 5, 1] {
            seg.modify(u, Change::new(EventKind::NODE_UPDATED), |rec| {
                rec.set_slot = bad;
                Ok::<_, PoolError>(())
            })
            .unwrap();
            // Out of range, or a set that belongs to another node.
            assert_eq!(seg.set_contains(u, 1), Err(SetError::Corrupt));
            assert_eq!(seg.set_add(u, 1), Err(SetError::Corrupt));
        }
        // A free list that names a slot out of range.
        let v = task(&seg, "v");
        seg.hdr(hdr::SET_FREE_HEAD).store(crate::freelist::FreeHead::new(1, 1000).raw(), Ordering::Relaxed);
        assert_eq!(seg.set_add(v, 1), Err(SetError::Corrupt));
        assert_eq!(SetError::Corrupt.to_string(), "segment inconsistency in the set table");
    }
}
