//! The ready index: a hint of which node slots may hold claimable work, so `claim_next`
//! finds a candidate without scanning the board.
//!
//! # Shape
//!
//! One bitmap per priority (256 *buckets*, bucket `p` for priority `p`), each over every
//! node slot, plus one more bitmap ([`DEPS`]) of the slots whose records have blockers
//! (for a completion's wake-up of its dependents). Each bitmap has two levels: level 0
//! holds one bit per slot (`slot / 64` is its word), level 1 one bit per level-0 word
//! (bit `w % 64` of word `w / 64`: "level-0 word `w` may be non-zero"). A *top* mask of
//! 256 bits says which priority buckets may be non-empty. Finding the best candidate
//! reads the top mask (4 words), the best bucket's level 1 (`slots / 4096` words, in
//! practice one or a few) and one level-0 word: O(1) in the number of ready tasks and
//! O(slots / 4096) at worst. Slots are found in slot order within a priority.
//!
//! # A hint, never the truth
//!
//! The node record (its status under the slot's seqlock, changed under the slot's
//! writer lock) is the truth; the bitmaps only say where to look. Every candidate is
//! validated against the record and claimed under the task's lock. The one invariant
//! kept is: **a slot whose published record is claimable has its bit set** (and the bits
//! above it). A set bit whose record is not claimable (stale) is harmless: whoever finds
//! it checks and clears it. So:
//!
//! * a writer sets the bit of the record it is about to publish *before* the publish,
//!   and clears the bit of the record it replaced only *after* the publish, both while
//!   holding the slot's writer lock (so two writers of one slot never interleave); a
//!   process killed anywhere in between leaves at worst a stale set bit;
//! * a setter sets top, level 1, level 0, then level 1 and top once more: the first pass
//!   means a setter killed after its level-0 bit leaves the levels above set; the second
//!   closes the race with a finder clearing an upper bit it saw empty (below);
//! * a finder that sees a level-1 bit over a zero level-0 word (or a top bit over an
//!   empty bucket) clears it and then looks at the level below again; if that is now
//!   non-zero it sets the bit again ([`ReadyIndex::clear_upper`]). Both sides use
//!   read-modify-writes on the upper word, so of a setter's second pass and a finder's
//!   clear, either the setter's comes later (the bit ends set) or the finder's
//!   acquires the setter's release and then sees the level-0 bit;
//! * a finder that finds a stale level-0 bit clears it only under the slot's writer lock,
//!   taken without waiting (`Segment::clear_if_stale`), after reading the summary again
//!   under it: level-0 bits change only under the slot's lock, so no writer's set can
//!   race the clear, and a finder killed holding the lock is a dead holder whose slot the
//!   repair scan re-indexes. A lock that is busy leaves the bit (its writer decides).
//!
//! Only the upper levels are cleared without a lock, and a finder killed between its
//! clear of an upper bit and its look below could hide the bits under it: the daemon's
//! housekeeping re-indexes every slot (additively) each second, which bounds that.
//!
//! The bitmaps are rebuilt from the records (additively: a set bit is never cleared by a
//! rebuild, so it is safe beside live writers) when the daemon adopts a segment, after a
//! restore, and for every slot the repair scan takes over from a dead writer.
//!
//! Everything here works on a plain slice of atomic words, so `loom` models run it on
//! heap words (`shmlib/tests/loom.rs`).

use crate::layout::NodeRecord;
use crate::node::{NodeKind, Status};
use crate::segment::Segment;
use crate::summary::Summary;
use crate::sync::{AtomicU64, Ordering};

/// Priority buckets: one per priority value.
pub const BUCKETS: usize = 256;
/// The bucket of slots whose record has blockers (its dependents' wake-up looks there).
pub const DEPS: usize = BUCKETS;
/// Words of the top mask (256 bits), padded to a cache line.
const TOP_WORDS: usize = 8;

/// Level-0 words, level-1 words and the words one bucket takes (each level rounded up
/// to a cache line) for `slots` node slots.
const fn dims(slots: u32) -> (usize, usize, usize) {
    let l0 = (slots as usize).div_ceil(64);
    let l1 = l0.div_ceil(64);
    (l0, l1, l1.div_ceil(8) * 8 + l0.div_ceil(8) * 8)
}

/// Words the ready index of a pool of `slots` node slots takes.
pub const fn words_for(slots: u32) -> u64 {
    let (_, _, stride) = dims(slots);
    (TOP_WORDS + (BUCKETS + 1) * stride) as u64
}

/// The ready index over the words of its region.
#[derive(Clone, Copy)]
pub struct ReadyIndex<'a> {
    w: &'a [AtomicU64],
    slots: u32,
    l0: usize,
    l1: usize,
    stride: usize,
}

/// What a walk's visitor wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visit {
    /// Go on to the next set bit.
    Next,
    /// Stop the walk.
    Stop,
}

fn bit(i: usize) -> u64 {
    1u64 << (i % 64)
}

impl<'a> ReadyIndex<'a> {
    /// The index over `w` for `slots` node slots, or `None` if `w` is too short.
    pub fn new(w: &'a [AtomicU64], slots: u32) -> Option<Self> {
        let (l0, l1, stride) = dims(slots);
        (w.len() as u64 >= words_for(slots)).then_some(ReadyIndex { w, slots, l0, l1, stride })
    }

    fn top(&self, b: usize) -> &AtomicU64 {
        &self.w[b / 64]
    }

    fn l1(&self, b: usize, j: usize) -> &AtomicU64 {
        &self.w[TOP_WORDS + b * self.stride + j]
    }

    fn l0(&self, b: usize, k: usize) -> &AtomicU64 {
        &self.w[TOP_WORDS + b * self.stride + self.l1.div_ceil(8) * 8 + k]
    }

    /// Sets `slot`'s bit in bucket `b` and the bits above it. Called by the slot's writer
    /// (under its lock) before it publishes a record claimable in `b`, by a finder
    /// undoing its own clear, and by rebuilds.
    pub fn set(&self, b: usize, slot: u32) {
        let i = slot as usize;
        if b > DEPS || slot >= self.slots {
            return;
        }
        let (k, j) = (i / 64, i / 4096);
        // Already set, and the bits above it too (a claim keeps its task's bucket):
        // nothing to do, three loads and no read-modify-write. Level-0 bits change only
        // under the slot's lock, which the caller holds (rebuilds only ever set). The
        // upper bits are looked at too so that a rebuild mends an upper bit a finder
        // killed in `clear_upper` left clear over this one.
        if self.l0(b, k).load(Ordering::Acquire) & bit(i) != 0
            && self.l1(b, j).load(Ordering::Acquire) & bit(k) != 0
            && (b == DEPS || self.top(b).load(Ordering::Acquire) & bit(b) != 0)
        {
            return;
        }
        // First pass, top down: a setter killed after its level-0 bit leaves the levels
        // above it set.
        if b < BUCKETS {
            self.top(b).fetch_or(bit(b), Ordering::AcqRel);
        }
        self.l1(b, j).fetch_or(bit(k), Ordering::AcqRel);
        self.l0(b, k).fetch_or(bit(i), Ordering::AcqRel);
        crate::failpoint::hit("ready.set_level0");
        // SYNC POINT: second pass, bottom up; paired with the AcqRel `fetch_and` of
        // `clear_upper`: a finder that clears the upper bit after this sees the bit below.
        self.l1(b, j).fetch_or(bit(k), Ordering::AcqRel);
        if b < BUCKETS {
            self.top(b).fetch_or(bit(b), Ordering::AcqRel);
        }
    }

    /// Clears `slot`'s bit in bucket `b` (the upper levels are left for finders to
    /// tidy). Called only under the slot's writer lock: by its writer *after* it
    /// published a record that is not claimable in `b`, or by a finder that found the
    /// bit stale.
    pub fn clear(&self, b: usize, slot: u32) {
        if b <= DEPS && slot < self.slots {
            let i = slot as usize;
            self.l0(b, i / 64).fetch_and(!bit(i), Ordering::AcqRel);
        }
    }

    /// Whether `slot`'s bit in bucket `b` is set.
    #[cfg(any(test, loom))]
    pub fn contains(&self, b: usize, slot: u32) -> bool {
        b <= DEPS
            && slot < self.slots
            && self.l0(b, slot as usize / 64).load(Ordering::Acquire) & bit(slot as usize) != 0
    }

    /// Clears the level-1 bit of level-0 word `k` of bucket `b` (or, with `k = None`, the
    /// top bit of bucket `b`) that a finder saw over nothing, then looks below again and
    /// sets it back if something appeared.
    fn clear_upper(&self, b: usize, k: Option<usize>) {
        match k {
            Some(k) => {
                // SYNC POINT: AcqRel, paired with the second-pass `fetch_or` of `set`.
                self.l1(b, k / 64).fetch_and(!bit(k), Ordering::AcqRel);
                if self.l0(b, k).load(Ordering::Acquire) != 0 {
                    self.l1(b, k / 64).fetch_or(bit(k), Ordering::AcqRel);
                }
            }
            None => {
                // SYNC POINT: AcqRel, paired with the second-pass top `fetch_or` of `set`.
                self.top(b).fetch_and(!bit(b), Ordering::AcqRel);
                if (0..self.l1).any(|j| self.l1(b, j).load(Ordering::Acquire) != 0) {
                    self.top(b).fetch_or(bit(b), Ordering::AcqRel);
                }
            }
        }
    }

    /// Calls `f(slot)` for each set bit of bucket `b`, in slot order, until it returns
    /// [`Visit::Stop`]; tidies upper bits found over nothing. Returns whether it was
    /// stopped, and whether the bucket looked empty.
    pub fn walk_bucket(&self, b: usize, mut f: impl FnMut(u32) -> Visit) -> (Visit, bool) {
        let mut empty = true;
        for j in 0..self.l1 {
            let mut v = self.l1(b, j).load(Ordering::Acquire);
            while v != 0 {
                let k = j * 64 + v.trailing_zeros() as usize;
                v &= v - 1;
                if k >= self.l0 {
                    continue;
                }
                empty = false;
                let mut x = self.l0(b, k).load(Ordering::Acquire);
                if x == 0 {
                    self.clear_upper(b, Some(k));
                    continue;
                }
                while x != 0 {
                    let i = k * 64 + x.trailing_zeros() as usize;
                    x &= x - 1;
                    if i < self.slots as usize && f(i as u32) == Visit::Stop {
                        return (Visit::Stop, false);
                    }
                }
            }
        }
        (Visit::Next, empty)
    }

    /// Calls `f(bucket, slot)` for each set bit of the priority buckets, best priority
    /// first, slot order within one, until it returns [`Visit::Stop`].
    pub fn walk(&self, mut f: impl FnMut(usize, u32) -> Visit) {
        for t in (0..BUCKETS / 64).rev() {
            let mut m = self.w[t].load(Ordering::Acquire);
            while m != 0 {
                let top = 63 - m.leading_zeros() as usize;
                m &= !(1u64 << top);
                let b = t * 64 + top;
                let (visit, empty) = self.walk_bucket(b, |i| f(b, i));
                if visit == Visit::Stop {
                    return;
                }
                if empty {
                    self.clear_upper(b, None);
                }
            }
        }
    }
}

/// The bucket a record with scan summary `s` belongs in: its priority if it is claimable
/// work (a task or custom node that is ready, or claimed / in progress, whose lease may
/// lapse without a write), else none. **The** predicate of the index: writers index by
/// it, finders judge a bit stale by it.
pub(crate) fn bucket_of(s: Summary) -> Option<usize> {
    let work = s.kind() == NodeKind::Task.code() || s.kind() == NodeKind::Custom.code();
    let st = s.status();
    let held = s.claim_agent() != 0 && (st == Status::Claimed.code() || st == Status::InProgress.code());
    (work && (st == Status::Ready.code() || held)).then_some(s.priority() as usize)
}

impl Segment {
    /// The ready index, on a writable mapping (finders tidy it as they read it).
    pub(crate) fn ready_index(&self) -> Option<ReadyIndex<'_>> {
        if !self.map.writable() {
            return None;
        }
        let r = self.geo.ready;
        self.map.words_at(r.offset as usize, r.capacity as usize).and_then(|w| ReadyIndex::new(w, self.caps.nodes))
    }

    /// Before `rec` is published in slot `index` (its writer holds the lock): sets the
    /// bits it belongs under.
    pub(crate) fn index_before_publish(&self, index: u32, rec: &NodeRecord) {
        let Some(ix) = self.ready_index() else { return };
        let s = Summary::of(rec);
        if let Some(b) = bucket_of(s) {
            ix.set(b, index);
        }
        if s.blocker_count() > 0 {
            ix.set(DEPS, index);
        }
    }

    /// After `rec` replaced `prev` in slot `index` (its writer still holds the lock):
    /// clears the bits `prev` had and `rec` has not (`rec = None`: the slot was freed).
    pub(crate) fn index_after_publish(&self, index: u32, prev: &NodeRecord, rec: Option<&NodeRecord>) {
        let Some(ix) = self.ready_index() else { return };
        let (old, new) = (Summary::of(prev), rec.map(Summary::of));
        if let Some(b) = bucket_of(old) {
            if new.and_then(bucket_of) != Some(b) {
                ix.clear(b, index);
            }
        }
        if old.blocker_count() > 0 && new.is_none_or(|n| n.blocker_count() == 0) {
            ix.clear(DEPS, index);
        }
    }

    /// Sets slot `index`'s bits from its published summary (never clears one): for
    /// rebuilds, and for a slot taken over from a dead writer.
    pub(crate) fn index_slot(&self, ix: &ReadyIndex<'_>, index: u32) {
        let Some((_, s)) = self.slot_summary(index) else { return };
        if let Some(b) = bucket_of(s) {
            ix.set(b, index);
        }
        if s.blocker_count() > 0 {
            ix.set(DEPS, index);
        }
    }

    /// Rebuilds the ready index from the records (the truth): at adoption and after a
    /// restore. Additive, so it is safe beside live writers. O(pool).
    pub(crate) fn rebuild_ready_index(&self) {
        let Some(ix) = self.ready_index() else { return };
        for i in 0..self.caps.nodes {
            self.index_slot(&ix, i);
        }
    }

    /// A finder found slot `index`'s bit in bucket `b` stale (the slot is not live, or
    /// its record is not claimable there): clears it under the slot's writer lock if
    /// that is free, after reading the summary again under it. A busy lock leaves the
    /// bit: its holder's publish decides.
    pub(crate) fn clear_if_stale(&self, ix: &ReadyIndex<'_>, b: usize, index: u32) {
        let Some(s) = self.slot(index) else { return };
        if !crate::ownerlock::try_acquire(s.lock(), self.me.0) {
            return;
        }
        // Under the lock, the summary is the last publish's (its unlock released it).
        if self.slot_summary(index).and_then(|(_, sm)| bucket_of(sm)) != Some(b) {
            ix.clear(b, index);
        }
        crate::ownerlock::release(s.lock(), self.me.0);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn words(slots: u32) -> Vec<AtomicU64> {
        (0..words_for(slots)).map(|_| AtomicU64::new(0)).collect()
    }

    fn collect(ix: &ReadyIndex<'_>) -> Vec<(usize, u32)> {
        let mut out = Vec::new();
        ix.walk(|b, i| {
            out.push((b, i));
            Visit::Next
        });
        out
    }

    #[test]
    fn walks_best_priority_first_then_slot_order() {
        let w = words(10_000);
        let ix = ReadyIndex::new(&w, 10_000).unwrap();
        for (b, i) in [(3, 9_999), (200, 5), (3, 0), (200, 4_097), (0, 64), (255, 63)] {
            ix.set(b, i);
        }
        assert_eq!(collect(&ix), [(255, 63), (200, 5), (200, 4_097), (3, 0), (3, 9_999), (0, 64)]);
        ix.clear(200, 5);
        ix.clear(255, 63);
        assert!(!ix.contains(255, 63) && ix.contains(200, 4_097));
        assert_eq!(collect(&ix), [(200, 4_097), (3, 0), (3, 9_999), (0, 64)]);
        // The walk tidied the level-1 bit over the emptied word; the next one, seeing
        // the bucket empty, its top bit.
        assert_ne!(w[255 / 64].load(Ordering::Relaxed) & bit(255), 0);
        assert_eq!(collect(&ix).len(), 4);
        assert_eq!(w[255 / 64].load(Ordering::Relaxed) & bit(255), 0);
        ix.set(255, 63);
        assert_eq!(collect(&ix)[0], (255, 63));
    }

    #[test]
    fn a_cleared_bit_is_gone_from_the_walk() {
        let w = words(100);
        let ix = ReadyIndex::new(&w, 100).unwrap();
        ix.set(7, 42);
        ix.set(7, 42);
        assert!(ix.contains(7, 42));
        ix.clear(7, 42);
        assert!(!ix.contains(7, 42));
        assert!(collect(&ix).is_empty());
    }

    #[test]
    fn a_rebuild_mends_an_upper_bit_left_clear_over_a_set_one() {
        let w = words(200);
        let ix = ReadyIndex::new(&w, 200).unwrap();
        ix.set(5, 130);
        // A finder killed in `clear_upper` after its clear, before its look below.
        ix.l1(5, 0).fetch_and(!bit(130 / 64), Ordering::AcqRel);
        assert!(collect(&ix).is_empty(), "hidden");
        ix.set(5, 130);
        assert_eq!(collect(&ix), [(5, 130)], "the rebuild's set reaches it again");
    }

    /// A restore copies records slot for slot into a fresh segment; `finish_restore`
    /// builds the index from them, and `claim_next` finds every ready task, best first.
    #[test]
    fn a_restored_segment_is_indexed_from_its_records() {
        use crate::{Capacities, NewNode, TaskError, TaskFilter};
        let caps = Capacities { nodes: 64, events: 256, agents: 4, blob_chunks: 4, sets: 4, ..Capacities::default() };
        let src = crate::testing::temp_segment("ready-restore-src", &caps);
        let ready = |name, prio| NewNode::new(NodeKind::Task, name).status(Status::Ready).priority(prio);
        let low = src.add(src.root(), &ready("low", 1)).unwrap();
        let high = src.add(src.root(), &ready("high", 7)).unwrap();
        src.add(src.root(), &NewNode::new(NodeKind::Task, "pending")).unwrap();
        let name = format!("wn-unit-ready-restored-{}", std::process::id());
        let _ = Segment::unlink(&name);
        let dst = crate::Daemon::create_for_restore(&name, &caps, 0o600).unwrap();
        src.for_each_node(|n| {
            dst.restore_node(n.handle().index, n.handle().generation, n.record()).unwrap();
            true
        })
        .unwrap();
        dst.finish_restore().unwrap();
        dst.open_for_clients();
        let me = dst.join("w", "r").unwrap();
        let lease = std::time::Duration::from_secs(60);
        let order: Vec<_> = std::iter::from_fn(|| dst.claim_next(&TaskFilter::default(), me, lease).ok())
            .map(|c| c.task.index)
            .collect();
        assert_eq!(order, [high.index, low.index]);
        assert_eq!(dst.claim_next(&TaskFilter::default(), me, lease), Err(TaskError::NothingReady));
        drop(dst);
        let _ = Segment::unlink(&name);
    }

    /// An adopting daemon indexes every claimable record again (here: an index wiped
    /// clean, the worst a bug or a crash could leave).
    #[test]
    fn adoption_rebuilds_the_index() {
        use crate::{Capacities, NewNode, TaskError, TaskFilter};
        let caps = Capacities { nodes: 64, events: 256, agents: 4, blob_chunks: 4, sets: 4, ..Capacities::default() };
        let seg = crate::testing::temp_segment("ready-adopt", &caps);
        let t = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "t").status(Status::Ready)).unwrap();
        let r = seg.geo.ready;
        for w in seg.map.words_at(r.offset as usize, r.capacity as usize).unwrap() {
            w.store(0, Ordering::Relaxed);
        }
        let me = seg.join("w", "r").unwrap();
        let lease = std::time::Duration::from_secs(60);
        assert_eq!(seg.claim_next(&TaskFilter::default(), me, lease), Err(TaskError::NothingReady), "wiped");
        let adopted = crate::Daemon::adopt(seg.name()).unwrap();
        assert_eq!(adopted.claim_next(&TaskFilter::default(), me, lease).unwrap().task, t);
    }

    #[test]
    fn the_deps_bucket_is_apart_from_the_priorities() {
        let w = words(5000);
        let ix = ReadyIndex::new(&w, 5000).unwrap();
        ix.set(DEPS, 4999);
        ix.set(DEPS, 1);
        assert!(collect(&ix).is_empty());
        let mut seen = Vec::new();
        ix.walk_bucket(DEPS, |i| {
            seen.push(i);
            Visit::Next
        });
        assert_eq!(seen, [1, 4999]);
        // Out of range is ignored, never an out-of-bounds access.
        ix.set(DEPS + 1, 0);
        ix.set(0, 5000);
        assert!(ReadyIndex::new(&w[..10], 5000).is_none());
    }
}
