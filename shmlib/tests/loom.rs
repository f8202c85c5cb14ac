//! `loom` models of the two lock-free cores: the double-buffered seqlock (`seqlock.rs`) and
//! the ABA-tagged Treiber free list (`freelist.rs`).
//!
//! Run with (from the repository root; this is `.ci/loom`):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p worknode --test loom --release --target-dir target-loom
//! ```
//!
//! Under `--cfg loom` the library's atomics and fences are loom's, so these models run the
//! real `read`, `write_locked`, `read_locked`, `lock`, `unlock`, `repair`, `init`, `pop`
//! and `push` on heap words, and loom explores their interleavings *and* the values each
//! load may return under the C11/C++20 memory model (release sequences, fences, stale
//! relaxed loads). What each model proves, for every execution explored:
//!
//! * [`seqlock_one_write_never_disturbs_a_reader`]: a reader racing one write always gets
//!   a snapshot (`read` never fails), and that snapshot is exactly the record published
//!   at the stable sequence value `read` returns.
//! * [`seqlock_reader_never_sees_a_torn_record`]: with two successive writes (the second
//!   rewrites the copy the reader may be copying), a snapshot `read` accepts is never torn
//!   (all words equal) and is the record published at the sequence value it returns.
//! * [`seqlock_locked_writers_serialise`]: two writers going through `lock` / `unlock` and
//!   doing read-modify-write (`read_locked` then `write_locked`) lose no update, `seq`
//!   ends at exactly two writes, and a concurrent reader's snapshots are whole and match
//!   their sequence value (the lock's Acquire/Release is what lets `write_locked`'s relaxed
//!   `seq` load and `read_locked`'s copy see the previous write).
//! * [`seqlock_dead_writer_is_repaired`]: a writer that dies after making `seq` odd and
//!   half-writing the inactive copy is taken over (the compare-and-set from the dead tag
//!   that `lock` does) and `repair`ed; a reader racing all of it, including the repair and
//!   the next write, never returns the half-written copy, and that next write is published
//!   whole.
//! * [`freelist_pop_push_is_exclusive`]: two threads each popping and pushing back twice
//!   on a list of two slots never hold the same slot at once, every pop sees the previous
//!   holder's writes to the slot (the Acquire/Release hand-over), and afterwards the list
//!   holds every slot exactly once.
//! * [`freelist_aba_is_caught_by_the_tag`]: thread A pops one slot while thread B pops two
//!   and pushes them back in the other order, which at one point puts the head A read back
//!   on top with a different link (the classic ABA window); the tag makes A's stale
//!   compare-and-set fail, so the same exclusivity and "every slot exactly once" hold.
//!
//! Slot exclusivity is checked with a per-slot `owner` word swapped with RMWs (an RMW always
//! reads the latest value, so a second concurrent holder is caught whatever the orderings),
//! and the hand-over with a relaxed `payload` word each holder bumps: reading anything but
//! the previous holder's value means the free list did not order the two holders.
//!
//! Each model also records what its threads observed across all executions and asserts
//! the exploration reached every outcome that matters (say, a read overlapping the repair),
//! so a model cannot pass by never exploring the interleavings it is about.
//!
//! The models run with a preemption bound rather than loom's unbounded mode: in loom 0.7
//! the unbounded DPOR skips interleavings when a thread loads a location before storing to
//! it (tokio-rs/loom#166, #392), as `write_locked` does with `seq`; unbounded, the dying
//! writer model explores 9 executions, none with the reader overlapping the repair. With a
//! bound, loom adds conservative backtracking points that cover those cases.
#![cfg(loom)]

use loom::model::Builder;
use loom::sync::atomic::{fence, AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::Duration;
use worknode::loom_api::{
    active_copy, init, lock, pop, push, read, read_locked, repair, unlock, write_locked, FreeListError,
};

/// Words per record: enough for a torn copy to show, few enough to keep models small.
const WORDS: usize = 4;

/// Wait passed to `lock`; the models never come near it (a holder always makes progress).
const WAIT: Duration = Duration::from_secs(3600);

/// Runs `f` under loom, exploring the interleavings with at most `preemptions` preemptions.
fn check(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = Builder::new();
    builder.preemption_bound = Some(preemptions);
    builder.check(f);
}

/// Outcomes recorded across all executions of a model (plain `std`, outside loom's view).
struct Seen<T>(std::sync::Arc<std::sync::Mutex<BTreeSet<T>>>);

impl<T> Clone for Seen<T> {
    fn clone(&self) -> Self {
        Seen(self.0.clone())
    }
}

impl<T: Ord + Debug> Seen<T> {
    fn new() -> Self {
        Seen(Default::default())
    }

    fn insert(&self, v: T) {
        self.0.lock().unwrap().insert(v);
    }

    /// Asserts that the exploration reached each of `expected`.
    fn assert_reached(&self, expected: impl IntoIterator<Item = T>) {
        let seen = self.0.lock().unwrap();
        for e in expected {
            assert!(seen.contains(&e), "the model never explored {e:?}; it saw {seen:?}");
        }
    }
}

/// One seqlock-guarded record: lock word, sequence word and two copies, all zero.
struct Record {
    lock: AtomicU64,
    seq: AtomicU64,
    copies: [Vec<AtomicU64>; 2],
}

impl Record {
    fn new() -> Self {
        let words = || (0..WORDS).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        Record { lock: AtomicU64::new(0), seq: AtomicU64::new(0), copies: [words(), words()] }
    }

    fn copies(&self) -> [&[AtomicU64]; 2] {
        [&self.copies[0], &self.copies[1]]
    }

    /// A snapshot through the lock-free reader path, with the sequence value it names.
    fn read(&self) -> Option<(u64, [u64; WORDS])> {
        let mut out = [0; WORDS];
        read(&self.seq, self.copies(), &mut out).map(|q| (q, out))
    }

    /// `read_locked` into a fresh array (caller holds the lock, or no thread is left).
    fn read_locked(&self) -> [u64; WORDS] {
        let mut out = [0; WORDS];
        read_locked(&self.seq, self.copies(), &mut out);
        out
    }
}

/// Asserts that `out` is a whole record, `[v; WORDS]`, and that `v` is one of
/// `published(base)`: the records the model can have published at `base = q & !1`, the
/// stable sequence value the snapshot claims to be from (empty: the model never has
/// `seq == base`).
fn assert_snapshot(q: u64, out: [u64; WORDS], published: impl Fn(u64) -> &'static [u64]) {
    assert!(out.iter().all(|&w| w == out[0]), "torn snapshot {out:?} at seq {q}");
    let base = q & !1;
    let allowed = published(base);
    assert!(!allowed.is_empty(), "read returned seq {q}, but seq is never {base} or {} in this model", base + 1);
    assert!(
        allowed.contains(&out[0]),
        "snapshot {out:?} at seq {q} is not a record published at seq {base} (those are {allowed:?})"
    );
}

#[test]
fn seqlock_one_write_never_disturbs_a_reader() {
    let seen = Seen::new();
    let seen2 = seen.clone();
    check(5, move || {
        let rec = Arc::new(Record::new());
        let reader = {
            let (rec, seen) = (rec.clone(), seen2.clone());
            thread::spawn(move || {
                let (q, out) = rec.read().expect("one concurrent write must never make a reader fail");
                assert_snapshot(q, out, |base| match base {
                    0 => &[0],
                    2 => &[1],
                    _ => &[],
                });
                seen.insert(q);
            })
        };
        assert_eq!(write_locked(&rec.seq, rec.copies(), &[1; WORDS]), 2);
        reader.join().unwrap();
    });
    // Before the write, during it (odd: the other copy), after it.
    seen.assert_reached([0, 1, 2]);
}

#[test]
fn seqlock_reader_never_sees_a_torn_record() {
    let seen = Seen::new();
    let seen2 = seen.clone();
    check(5, move || {
        let rec = Arc::new(Record::new());
        let reader = {
            let (rec, seen) = (rec.clone(), seen2.clone());
            thread::spawn(move || {
                // `None` (writers kept overlapping for all attempts) would be allowed; a
                // snapshot that is returned must be whole: [0; N], then [1; N], then [2; N].
                if let Some((q, out)) = rec.read() {
                    assert_snapshot(q, out, |base| match base {
                        0 => &[0],
                        2 => &[1],
                        4 => &[2],
                        _ => &[],
                    });
                    seen.insert(q);
                }
            })
        };
        write_locked(&rec.seq, rec.copies(), &[1; WORDS]);
        write_locked(&rec.seq, rec.copies(), &[2; WORDS]);
        reader.join().unwrap();
        assert_eq!(rec.read(), Some((4, [2; WORDS])));
    });
    seen.assert_reached([0, 1, 2, 3, 4]);
}

#[test]
fn seqlock_locked_writers_serialise() {
    let seen = Seen::new();
    let seen2 = seen.clone();
    check(3, move || {
        let rec = Arc::new(Record::new());
        let writer = |me: u64, add: u64| {
            let rec = rec.clone();
            thread::spawn(move || {
                lock(&rec.lock, &rec.seq, me, WAIT, |_| false, || panic!("no holder is dead")).unwrap();
                let old = rec.read_locked();
                assert!(old == [0; WORDS] || old == [1; WORDS] || old == [10; WORDS], "read_locked got {old:?}");
                let s = write_locked(&rec.seq, rec.copies(), &old.map(|w| w + add));
                assert!(s == 2 || s == 4, "write_locked returned seq {s}");
                unlock(&rec.lock);
            })
        };
        let (a, b) = (writer(1, 1), writer(2, 10));
        let reader = {
            let (rec, seen) = (rec.clone(), seen2.clone());
            thread::spawn(move || {
                if let Some((q, out)) = rec.read() {
                    // After one write the record is [1; N] or [10; N], after both [11; N].
                    assert_snapshot(q, out, |base| match base {
                        0 => &[0],
                        2 => &[1, 10],
                        4 => &[11],
                        _ => &[],
                    });
                    seen.insert((q, out[0]));
                }
            })
        };
        a.join().unwrap();
        b.join().unwrap();
        reader.join().unwrap();
        assert_eq!(rec.seq.load(Ordering::Relaxed), 4, "exactly two writes");
        assert_eq!(rec.read_locked(), [11; WORDS], "an update was lost");
        assert_eq!(rec.lock.load(Ordering::Relaxed), 0);
    });
    seen.assert_reached([(0, 0), (1, 0), (2, 1), (2, 10), (3, 1), (3, 10), (4, 11)]);
}

#[test]
fn seqlock_dead_writer_is_repaired() {
    const DEAD: u64 = 41;
    const ME: u64 = 7;
    const PARTIAL: u64 = 99;
    let seen = Seen::new();
    let seen2 = seen.clone();
    check(5, move || {
        let rec = Arc::new(Record::new());
        // Published before any thread starts: seq 2, copy 1 holds [7; N].
        write_locked(&rec.seq, rec.copies(), &[7; WORDS]);

        let reader = {
            let (rec, seen) = (rec.clone(), seen2.clone());
            thread::spawn(move || {
                if let Some((q, out)) = rec.read() {
                    // seq goes 2 (published) -> 3 (dead writer) -> 6 (repaired, same copy)
                    // -> 7 -> 8 (the next write). Never 4 or 5, never the partial copy.
                    assert_snapshot(q, out, |base| match base {
                        2 | 6 => &[7],
                        8 => &[8],
                        _ => &[],
                    });
                    seen.insert(q);
                }
            })
        };

        // The dying writer: takes the lock, runs the first half of `write_locked` (odd seq,
        // release fence, part of the inactive copy) and stops there for good.
        let dying = {
            let rec = rec.clone();
            thread::spawn(move || {
                lock(&rec.lock, &rec.seq, DEAD, WAIT, |_| false, || panic!("lock was free")).unwrap();
                let s = rec.seq.load(Ordering::Relaxed);
                rec.seq.store(s + 1, Ordering::Release);
                fence(Ordering::Release);
                let inactive = rec.copies()[active_copy(s) ^ 1];
                inactive[0].store(PARTIAL, Ordering::Relaxed);
                inactive[1].store(PARTIAL, Ordering::Relaxed);
            })
        };
        // Learning that a holder's process is gone happens after everything it did (in
        // the library, through the kernel); the join is that edge here.
        dying.join().unwrap();

        // The take-over `lock` performs once `is_dead(holder)` says so: a compare-and-set
        // from the dead tag, then `repair`. (Done directly rather than through `lock`,
        // whose spin-then-yield before asking `is_dead` lets the reader run to the end
        // first, so the model would never see a read overlap the repair.)
        assert_eq!(rec.lock.compare_exchange(DEAD, ME, Ordering::Acquire, Ordering::Relaxed), Ok(DEAD));
        repair(&rec.seq);
        assert_eq!(rec.seq.load(Ordering::Relaxed), 6, "repair: odd 3 -> 6, same active copy as 2");
        assert_eq!(rec.read_locked(), [7; WORDS], "repair must keep the last published record");
        repair(&rec.seq);
        assert_eq!(rec.seq.load(Ordering::Relaxed), 6, "repair leaves an even seq alone");
        assert_eq!(write_locked(&rec.seq, rec.copies(), &[8; WORDS]), 8);
        unlock(&rec.lock);

        reader.join().unwrap();
        assert_eq!(rec.read(), Some((8, [8; WORDS])));
    });
    // Reads before the death, during it, after the repair, during and after the next write.
    seen.assert_reached([2, 3, 6, 7, 8]);
}

/// Thread ids for the free-list models (0 marks a free slot).
const A: u64 = 1;
const B: u64 = 2;
const MAIN: u64 = 3;

/// A slot: its free-list link plus the bookkeeping the models check.
struct Slot {
    /// The free list's link (`next_free`).
    link: AtomicU64,
    /// 0 while free, else the id of the thread holding the slot (swapped with RMWs).
    owner: AtomicU64,
    /// How many times the slot was popped (an RMW counter, so always exact).
    uses: AtomicU64,
    /// Data each holder writes with a relaxed store: the next holder must read it.
    payload: AtomicU64,
}

struct FreeList {
    head: AtomicU64,
    slots: Vec<Slot>,
    /// (thread, slot) pops, across executions.
    seen: Seen<(u64, u32)>,
}

impl FreeList {
    /// A list holding slots `0..n`, popped in that order.
    fn new(n: u32, seen: Seen<(u64, u32)>) -> Self {
        let slots = (0..n)
            .map(|_| Slot {
                link: AtomicU64::new(0),
                owner: AtomicU64::new(0),
                uses: AtomicU64::new(0),
                payload: AtomicU64::new(0),
            })
            .collect();
        let list = FreeList { head: AtomicU64::new(0), slots, seen };
        init(&list.head, 0..n, |i| list.link(i)).unwrap();
        list
    }

    fn link(&self, i: u32) -> Option<&AtomicU64> {
        self.slots.get(i as usize).map(|s| &s.link)
    }

    /// Pops a slot for thread `me` and checks the hand-over into it.
    fn pop(&self, me: u64) -> Option<u32> {
        let i = pop(&self.head, |i| self.link(i)).expect("pop: no corruption, no contention in a small model")?;
        let slot = &self.slots[i as usize];
        let prev = slot.owner.swap(me, Ordering::Relaxed);
        assert_eq!(prev, 0, "slot {i} popped by thread {me} while thread {prev} holds it");
        let n = slot.uses.fetch_add(1, Ordering::Relaxed);
        assert_eq!(slot.payload.load(Ordering::Relaxed), n, "slot {i}: the previous holder's write is not visible");
        slot.payload.store(n + 1, Ordering::Relaxed);
        self.seen.insert((me, i));
        Some(i)
    }

    /// Pushes back slot `i`, held by `me`.
    fn push(&self, i: u32, me: u64) {
        let slot = &self.slots[i as usize];
        assert_eq!(slot.owner.swap(0, Ordering::Relaxed), me, "slot {i} pushed by a thread not holding it");
        let r: Result<(), FreeListError> = push(&self.head, i, &slot.link);
        r.expect("push: no contention in a small model");
    }

    /// Pops everything (at the end, alone): the list must hold each slot exactly once.
    fn drain_sorted(&self) -> Vec<u32> {
        let mut got = Vec::new();
        while let Some(i) = self.pop(MAIN) {
            got.push(i);
            assert!(got.len() <= self.slots.len(), "the list has a cycle or a duplicate: {got:?}");
        }
        got.sort_unstable();
        got
    }
}

#[test]
fn freelist_pop_push_is_exclusive() {
    let seen = Seen::new();
    let seen2 = seen.clone();
    check(4, move || {
        let list = Arc::new(FreeList::new(2, seen2.clone()));
        let worker = |me: u64| {
            let list = list.clone();
            thread::spawn(move || {
                for _ in 0..2 {
                    let i = list.pop(me).expect("two slots, two threads: never empty");
                    list.push(i, me);
                }
            })
        };
        let (a, b) = (worker(A), worker(B));
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(list.drain_sorted(), [0, 1]);
    });
    // Each thread got each slot in some execution (so slots changed hands both ways).
    seen.assert_reached([(A, 0), (A, 1), (B, 0), (B, 1)]);
}

#[test]
fn freelist_aba_is_caught_by_the_tag() {
    let seen = Seen::new();
    let seen2 = seen.clone();
    check(5, move || {
        // 0 -> 1 -> 2.
        let list = Arc::new(FreeList::new(3, seen2.clone()));
        let a = {
            let list = list.clone();
            thread::spawn(move || {
                // May read head = 0 and link(0) = 1, then stall across B's whole sequence.
                let i = list.pop(A).expect("three slots: A always gets one");
                list.push(i, A);
            })
        };
        let b = {
            let list = list.clone();
            thread::spawn(move || {
                let x = list.pop(B).expect("B's first pop");
                let y = list.pop(B).expect("B's second pop");
                // Pushing x first puts it back on top with link(x) now past y (y is held):
                // a stale pop of x installing its old link would hand y out twice.
                list.push(x, B);
                list.push(y, B);
            })
        };
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(list.drain_sorted(), [0, 1, 2]);
    });
    // A gets slot 2 only while B holds 0 and 1.
    seen.assert_reached([(A, 0), (A, 1), (A, 2), (B, 0), (B, 1), (B, 2)]);
}
