//! `loom` models of the lock-free cores: the double-buffered seqlock (`seqlock.rs`), the
//! ABA-tagged Treiber free list (`freelist.rs`), the event ring's claim / publish / read /
//! lap / abandon protocol (`ring.rs`), the file reservations' insert, fence, scan,
//! confirm (`reserve.rs`) and the blocking claim's park / wake handshake (`claimwait.rs`).
//!
//! Run with (from the repository root; this is `.ci/loom`):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p worknode --test loom --release --target-dir target-loom
//! ```
//!
//! Under `--cfg loom` the library's atomics and fences are loom's, so these models run the
//! real `read`, `write_locked`, `read_locked`, `lock`, `unlock`, `repair`, `init`, `pop`,
//! `push` and `RingView::{append, peek, abandon_if_dead}` on heap words, and loom explores their interleavings *and* the values each
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
//! * [`ring_producers_get_distinct_sequences_and_readers_whole_events`]: two producers
//!   `append` one event each to a two-slot ring while a reader `peek`s seq 0 and 1: they get
//!   distinct sequences 0 and 1, and every `Ready` is exactly (all 22 words) the event of
//!   the producer given that sequence, with that `seq`: never torn or half published.
//! * [`ring_lapped_reader_never_gets_a_wrong_or_torn_event`]: one producer appends three
//!   events (the third reuses seq 0's slot) while a reader peeks seq 0: it gets event 0
//!   whole, `Pending` or `Lapped`, never event 2 or a mix of the two; the copy overlapping
//!   the overwrite, caught only by the re-check of the stamp after the copy, is reached.
//! * [`ring_dead_producer_is_abandoned_and_the_next_lap_published`]: a producer died having
//!   claimed seq 0 (right after `fetch_add`; holding the slot lock; or after stamping
//!   `WRITING(0)` and part of the event) while a reader runs `abandon_if_dead(0)` and a live
//!   producer appends seq 1, then seq 2 into the same slot (its `is_dead` knows the dead tag
//!   too, so either may take the lock over). Seq 0 is never `Ready`; once the reader marked
//!   it abandoned it reads `Abandoned` (or `Lapped`, seq 2 being there); the live producer is
//!   never renumbered (no `ABANDONED(0)` lands on its `WRITING(2)`); the slot ends
//!   `PUBLISHED(2)` and unlocked.
//! * [`ring_writer_declared_dead_never_publishes_its_abandoned_sequence`]: a *live*
//!   producer whose tag the reader's `is_dead` takes for dead. If the reader abandons
//!   seq 0, the producer must renumber its event to seq 1 (it sees the stamp overtaken, or
//!   its publish CAS fails) and seq 0 must read `Abandoned`; else seq 0 is its event. This
//!   model found a real bug, since fixed: the producer's `WRITING(s)` and the reader's
//!   `ABANDONED(s)` were plain stores, so an abandonment stamped between the producer's
//!   check and its store was overwritten and seq 0 ended both abandoned and published.
//!   Both are now compare-and-sets from the value checked (and releasing a lock is a
//!   compare-and-set from the releaser's own tag).
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
//! bound, loom adds conservative backtracking points that cover those cases. Loom's DPOR also
//! remembers only the last access to each word, so the dead producer model has the reader
//! load the lock word once more (no effect on the protocol) to give the live producer a
//! point to take the lock between the reader's abandon and its peek.
//!
//! For the ring, under `--cfg loom` (and only there):
//!
//! * `ownerlock::acquire` skips its spin phase and asks `is_dead` at every failed attempt:
//!   loom runs a yielding thread only when no other one can run, so a waiter that spins
//!   first never takes a dead holder's lock over while the reader is runnable.
//! * `RingView::with_event_words(n)` makes `append` write and `peek` copy only the first `n`
//!   event words (the slots stay whole, `SLOT_WORDS` words). The lap model uses 8: loom
//!   picks the store each racing relaxed load returns independently, so a copy overlapping
//!   a whole 22-word overwrite has up to 2^22 executions (with the whole event, that model
//!   had not finished after 400 000 executions, 20 s). The other models copy whole events.
//! * `RingView::lapped_while_copying` counts (outside the model) the `peek`s whose re-check
//!   after the copy caught a reuse, so the lap model can assert it reached that case.
//! * [`reservation_race_has_exactly_one_winner`]: two reservers of overlapping globs each
//!   publish their reservation pending (a Release store, as a node's publish is), fence
//!   SeqCst, scan the other's word and apply the library's own [`verdict`] (lose to a
//!   confirmed rival or an earlier pending one, wait on a later pending one), then confirm:
//!   in every execution exactly one confirms and the other withdraws. (The node pool, the
//!   globs and the scan over slots are not modelled: the word stands for the rival's node
//!   as the scan reads it.) Both halves are needed, and the model shows it: without the
//!   fence, or with the plain rule "ignore later pending rivals" instead of waiting on
//!   them, it finds executions in which both reservers win.
//! * [`blocking_claim_loses_no_wake_up`]: the handshake of a blocking claim
//!   (`claimwait.rs`), two parked agents and a change readying one task. Each waiter raises
//!   the parked count, takes its place, fences SeqCst, reads its wake word and looks for
//!   the task (its second try); the change publishes the task, fences SeqCst, loads the
//!   count and, if non-zero, takes the place of the first parked agent it finds and bumps
//!   its word. In every execution either a waiter took the task on its second try or a
//!   waiter that went to sleep finds its word changed (its futex wait returns at once),
//!   and the change takes at most one place. (The agent table scan, filters and futex are
//!   not modelled: the words stand for them.) Without the change's fence, or with the
//!   waiter's registration Relaxed and unfenced, the model finds executions where the
//!   task is ready, nobody took it and both waiters sleep.
//! * [`ready_a_stale_clear_never_hides_a_task_being_published`]: the ready index
//!   (`ready.rs`). A writer takes a slot's lock, `set`s its bit, publishes the record
//!   claimable (a Release store, as `publish` is) and unlocks, while a finder `walk`s the
//!   index, finds the (stale) bit, reads the record not yet claimable and, as
//!   `Segment::clear_if_stale` does, takes the slot's lock without waiting
//!   (`ownerlock::try_acquire`), reads the record again and `clear`s the bit only if it
//!   is still not claimable. In every execution, once both are done the record is
//!   claimable and a walk finds its bit; the lock busy, the bit cleared before the
//!   writer's set, and the bit kept (the record claimable under the lock) are all
//!   reached. Without the lock (clear, then re-check the record and set again) the model
//!   finds the execution that loses the task.
//! * [`ready_an_upper_clear_never_hides_a_bit_being_set`]: a setter `set`s a slot's bit
//!   under a level-1 bit (and, in the second case, a top bit) that a finder's `walk` sees
//!   over nothing and clears; the finder's look below after its clear, and the setter's
//!   second pass, mean that in every execution a later walk finds the slot. Without the
//!   second pass the model finds the execution that hides it.
#![cfg(loom)]

use loom::model::Builder;
use loom::sync::atomic::{fence, AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::Duration;
use worknode::layout::EventRecord;
use worknode::loom_api::{
    active_copy, init, lock, pop, push, read, read_locked, repair, try_acquire, unlock, verdict, words_for,
    write_locked, FreeListError, JournalWake, Peek, ReadyIndex, RingView, Verdict, Visit, SLOT_WORDS,
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
                unlock(&rec.lock, me);
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
        unlock(&rec.lock, ME);

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

/// Slots in the model rings: two, so the third event already laps the first.
const RING_CAP: usize = 2;
/// Words of one event (`EventRecord`, 176 bytes).
const EVENT_WORDS: usize = std::mem::size_of::<EventRecord>() / 8;
/// Slot word offsets and stamp states, as in `ring.rs`: `stamp = (seq + 1) << 2 | state`.
const STAMP: usize = 0;
const OWNER: usize = 1;
const EVENT: usize = 2;
const WRITING: u64 = 0;
const PUBLISHED: u64 = 1;
const ABANDONED: u64 = 2;

fn stamp(seq: u64, state: u64) -> u64 {
    ((seq + 1) << 2) | state
}

/// A ring on heap words: the tail counter and `RING_CAP` whole slots of `SLOT_WORDS`
/// words (stamp, owner, event), all zero.
struct Ring {
    tail: AtomicU64,
    words: Vec<AtomicU64>,
}

impl Ring {
    fn new() -> Self {
        Ring { tail: AtomicU64::new(0), words: (0..RING_CAP * SLOT_WORDS).map(|_| AtomicU64::new(0)).collect() }
    }

    /// A view as a process builds it (each model thread builds its own).
    fn view(&self) -> RingView<'_> {
        RingView::new(&self.tail, &self.words)
    }

    /// Word `i` of the slot sequence `seq` lives in.
    fn word(&self, seq: u64, i: usize) -> &AtomicU64 {
        &self.words[(seq as usize % RING_CAP) * SLOT_WORDS + i]
    }

    /// The event words of `seq`'s slot, read directly (at the end, alone).
    fn event_words(&self, seq: u64) -> [u64; EVENT_WORDS] {
        std::array::from_fn(|i| self.word(seq, EVENT + i).load(Ordering::Relaxed))
    }

    /// At the end, alone: no slot is left locked and `tail` counts every claim.
    fn assert_quiet(&self, tail: u64) {
        assert_eq!(self.tail.load(Ordering::Relaxed), tail, "tail");
        for s in 0..RING_CAP as u64 {
            assert_eq!(self.word(s, OWNER).load(Ordering::Relaxed), 0, "slot {s} left locked");
        }
    }
}

/// The event producer `p` appends: every word but `seq` is made of `p`, so a copy mixing
/// two producers' events, or an event with words missing, cannot pass for either.
fn event(p: u64) -> EventRecord {
    let b = p as u8;
    EventRecord {
        seq: 0,
        hlc: p,
        kind: p as u32,
        payload_len: p as u16,
        topic_len: b,
        flags: b,
        actor: p,
        node: [b; 16],
        node_version: p,
        pid: p as u32,
        pad: p as u32,
        topic: [b; 24],
        payload: [b; 88],
    }
}

/// Asserts that `rec`, which `peek(s)` returned as `Ready` through a view copying the first
/// `n` event words, is exactly the event of one of `producers` numbered `s` (words past `n`
/// zero): not torn, not another sequence's. Returns that producer.
fn assert_event(s: u64, rec: &EventRecord, n: usize, producers: &[u64]) -> u64 {
    let got: [u64; EVENT_WORDS] = bytemuck::cast(*rec);
    assert_eq!(rec.seq, s, "peek({s}) returned the event numbered {}: {got:?}", rec.seq);
    let p = rec.hlc;
    let mut want: [u64; EVENT_WORDS] = bytemuck::cast(EventRecord { seq: s, ..event(p) });
    want[n..].fill(0);
    assert_eq!(got, want, "peek({s}) returned a torn event (hlc says producer {p})");
    assert!(producers.contains(&p), "peek({s}) returned producer {p}'s event; only {producers:?} can have seq {s}");
    p
}

/// What a `peek` returned, for the coverage sets (`Ready` with its producer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Got {
    Ready(u64),
    Pending,
    Abandoned,
    Lapped,
    /// `Lapped` from the re-check after the copy: the slot was reused while copying.
    LappedWhileCopying,
}

fn got(view: &RingView<'_>, s: u64, n: usize, producers: &[u64]) -> Got {
    let before = view.lapped_while_copying();
    match view.peek(s) {
        Peek::Ready(rec) => Got::Ready(assert_event(s, &rec, n, producers)),
        Peek::Pending => Got::Pending,
        Peek::Abandoned => Got::Abandoned,
        Peek::Lapped if view.lapped_while_copying() > before => Got::LappedWhileCopying,
        Peek::Lapped => Got::Lapped,
    }
}

#[test]
fn ring_producers_get_distinct_sequences_and_readers_whole_events() {
    const P1: u64 = 11;
    const P2: u64 = 12;
    let seen = Seen::new();
    let seen2 = seen.clone();
    check(4, move || {
        let ring = Arc::new(Ring::new());
        let producer = |p: u64| {
            let ring = ring.clone();
            thread::spawn(move || {
                let mut rec = event(p);
                ring.view().append(&mut rec, p, WAIT, |_| false, |_| Ok(())).expect("append")
            })
        };
        let (a, b) = (producer(P1), producer(P2));
        let reader = {
            let ring = ring.clone();
            thread::spawn(move || {
                let view = ring.view();
                // Both events land in free slots: nothing is lapped or abandoned.
                [0, 1].map(|s| match got(&view, s, EVENT_WORDS, &[P1, P2]) {
                    g @ (Got::Ready(_) | Got::Pending) => g,
                    g => panic!("peek({s}) returned {g:?} with two events in two slots"),
                })
            })
        };
        let (sa, sb) = (a.join().unwrap(), b.join().unwrap());
        let read = reader.join().unwrap();
        assert!(sa != sb && sa < 2 && sb < 2, "the producers were given sequences {sa} and {sb}");
        let owner = |s: u64| if s == sa { P1 } else { P2 };
        for s in 0..2 {
            if let Got::Ready(p) = read[s as usize] {
                assert_eq!(p, owner(s), "the reader got producer {p}'s event as seq {s}, which went to {}", owner(s));
            }
            assert_eq!(got(&ring.view(), s, EVENT_WORDS, &[owner(s)]), Got::Ready(owner(s)));
        }
        ring.assert_quiet(2);
        seen2.insert((owner(0), read.map(|g| g != Got::Pending)));
    });
    // Either producer got seq 0; the reader found each sequence published or pending, in
    // every combination (seq 1 published while seq 0 is not included).
    seen.assert_reached(
        [P1, P2].into_iter().flat_map(|p| [[false, false], [true, false], [false, true], [true, true]].map(|r| (p, r))),
    );
}

#[test]
fn ring_lapped_reader_never_gets_a_wrong_or_torn_event() {
    // Event words written and copied (`with_event_words`): a copy racing a 22-word
    // overwrite would have 2^22 executions (loom picks each racing load's store apart).
    const N: usize = 8;
    const P: u64 = 21;
    let seen = Seen::new();
    let seen2 = seen.clone();
    check(4, move || {
        let ring = Arc::new(Ring::new());
        // Events appended so far (std, outside the model: only for the coverage record).
        let appended = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let reader = {
            let (ring, appended, seen) = (ring.clone(), appended.clone(), seen2.clone());
            thread::spawn(move || {
                let view = ring.view().with_event_words(N);
                // Seq 0 is event 0 (producer P); event 2 reuses its slot.
                let g = got(&view, 0, N, &[P]);
                assert_ne!(g, Got::Abandoned, "nothing is abandoned in this model");
                seen.insert((g, appended.load(std::sync::atomic::Ordering::Relaxed)));
            })
        };
        let view = ring.view().with_event_words(N);
        for i in 0..3 {
            let mut rec = event(if i == 0 { P } else { P + i });
            assert_eq!(view.append(&mut rec, P, WAIT, |_| false, |_| Ok(())), Ok(i));
            appended.store(i + 1, std::sync::atomic::Ordering::Relaxed);
        }
        reader.join().unwrap();
        assert_eq!(got(&view, 0, N, &[]), Got::Lapped);
        assert_eq!(got(&view, 1, N, &[P + 1]), Got::Ready(P + 1));
        assert_eq!(got(&view, 2, N, &[P + 2]), Got::Ready(P + 2));
        ring.assert_quiet(3);
    });
    seen.assert_reached([
        // Before event 0; event 0 while event 2 is not yet (or being) written.
        (Got::Pending, 0),
        (Got::Ready(P), 2),
        // Event 0, whole, although event 2 had overwritten the slot before `peek` returned
        // (the copy read the old words and the re-check the old stamp: consistent).
        (Got::Ready(P), 3),
        // The stamp already showed seq 2.
        (Got::Lapped, 3),
        // The stamp showed seq 0, the copy overlapped event 2's writing, the re-check caught it.
        (Got::LappedWhileCopying, 2),
        (Got::LappedWhileCopying, 3),
    ]);
}

/// Where the dead producer of [`ring_dead_producer_is_abandoned_and_the_next_lap_published`]
/// stopped.
#[derive(Clone, Copy, Debug)]
enum Death {
    /// Right after `tail.fetch_add`: the slot has no owner.
    Claimed,
    /// Holding the slot's owner lock.
    Locked,
    /// Holding the lock, after stamping `WRITING(0)` and writing part of the event.
    Writing,
}

#[test]
fn ring_dead_producer_is_abandoned_and_the_next_lap_published() {
    const DEAD: u64 = 31;
    const LIVE: u64 = 32;
    const READER: u64 = 33;
    for death in [Death::Claimed, Death::Locked, Death::Writing] {
        let seen = Seen::new();
        let seen2 = seen.clone();
        check(4, move || {
            let ring = Arc::new(Ring::new());
            // The dead producer's leftovers: it claimed seq 0 (the first half of `append`)
            // and died. Done before the other threads start: that someone learns of a death
            // only after everything the dead process did (through the kernel) is this edge.
            assert_eq!(ring.tail.fetch_add(1, Ordering::AcqRel), 0);
            if let Death::Locked | Death::Writing = death {
                assert_eq!(ring.word(0, OWNER).compare_exchange(0, DEAD, Ordering::Acquire, Ordering::Relaxed), Ok(0));
            }
            if let Death::Writing = death {
                ring.word(0, STAMP).store(stamp(0, WRITING), Ordering::Relaxed);
                fence(Ordering::Release);
                ring.word(0, EVENT + 1).store(DEAD, Ordering::Relaxed);
            }

            // A reader that waited past the bound on seq 0 and finds its producer dead.
            let reader = {
                let ring = ring.clone();
                thread::spawn(move || {
                    let view = ring.view();
                    let abandoned = view.abandon_if_dead(0, READER, |t| t == DEAD);
                    // Not the library's: loom's DPOR tracks only the last access to each
                    // word, so without this load on the lock word it never lets the live
                    // producer take the lock between the abandon and the peek below.
                    ring.word(0, OWNER).load(Ordering::Relaxed);
                    let g = got(&view, 0, EVENT_WORDS, &[]);
                    match g {
                        // Once it stamped ABANDONED(0), only a later lap can replace that.
                        Got::Abandoned | Got::Lapped => {}
                        Got::Pending if !abandoned => {}
                        g => panic!("seq 0 (abandoned by this reader: {abandoned}) read as {g:?}"),
                    }
                    (abandoned, g)
                })
            };
            // A live producer: seq 1, then seq 2 in the dead one's slot. Its `is_dead` also
            // knows the dead tag, so it may take the lock over itself (`FromDead`).
            let live = {
                let ring = ring.clone();
                thread::spawn(move || {
                    let view = ring.view();
                    [1, 2]
                        .map(|_| view.append(&mut event(LIVE), LIVE, WAIT, |t| t == DEAD, |_| Ok(())).expect("append"))
                })
            };
            let (abandoned, g) = reader.join().unwrap();
            // Nobody could declare seq 1 or 2 abandoned: the live producer was never renumbered
            // (an ABANDONED(0) stamped over its WRITING(2) would have failed its publish).
            assert_eq!(live.join().unwrap(), [1, 2], "the live producer's sequences");
            let view = ring.view();
            assert_eq!(got(&view, 0, EVENT_WORDS, &[]), Got::Lapped, "seq 0 at the end ({death:?})");
            assert_eq!(got(&view, 1, EVENT_WORDS, &[LIVE]), Got::Ready(LIVE), "seq 1 at the end ({death:?})");
            assert_eq!(got(&view, 2, EVENT_WORDS, &[LIVE]), Got::Ready(LIVE), "seq 2 at the end ({death:?})");
            assert_eq!(ring.word(0, STAMP).load(Ordering::Relaxed), stamp(2, PUBLISHED), "slot 0's final stamp");
            ring.assert_quiet(3);
            seen2.insert((abandoned, g));
        });
        // `false`: the live producer took the lock first (from the dead tag, `FromDead`,
        // unless it was free); it repairs a WRITING(0) stamp to ABANDONED(0) itself.
        let mut expected =
            vec![(true, Got::Abandoned), (true, Got::Lapped), (false, Got::Pending), (false, Got::Lapped)];
        if let Death::Writing = death {
            expected.push((false, Got::Abandoned));
        }
        seen.assert_reached(expected);
    }
}

#[test]
fn ring_writer_declared_dead_never_publishes_its_abandoned_sequence() {
    // A producer that is alive, but whose tag the reader's `is_dead` takes for dead, so the
    // reader may overrule it at any point of its `append`. Declared abandoned, seq 0 must
    // never be published (the producer finds the stamp overtaken, or its publish CAS fails):
    // the event is renumbered to seq 1.
    const ZOMBIE: u64 = 41;
    const READER: u64 = 43;
    let seen = Seen::new();
    let seen2 = seen.clone();
    check(3, move || {
        let ring = Arc::new(Ring::new());
        let reader = {
            let ring = ring.clone();
            thread::spawn(move || {
                // Only sequences below the tail are ever declared abandoned.
                while ring.tail.load(Ordering::Acquire) == 0 {
                    thread::yield_now();
                }
                let view = ring.view();
                let abandoned = view.abandon_if_dead(0, READER, |t| t == ZOMBIE);
                let g = got(&view, 0, EVENT_WORDS, &[ZOMBIE]);
                match g {
                    Got::Abandoned if abandoned => {}
                    Got::Ready(_) | Got::Pending if !abandoned => {}
                    g => panic!("seq 0 (abandoned by this reader: {abandoned}) read as {g:?}"),
                }
                (abandoned, g)
            })
        };
        let s = ring.view().append(&mut event(ZOMBIE), ZOMBIE, WAIT, |_| false, |_| Ok(())).expect("append");
        let (abandoned, g) = reader.join().unwrap();
        let view = ring.view();
        if abandoned {
            assert_eq!(s, 1, "seq 0 was declared abandoned, yet its producer published it");
            assert_eq!(ring.word(0, STAMP).load(Ordering::Relaxed), stamp(0, ABANDONED));
            assert_eq!(got(&view, 0, EVENT_WORDS, &[]), Got::Abandoned);
            assert_eq!(got(&view, 1, EVENT_WORDS, &[ZOMBIE]), Got::Ready(ZOMBIE));
            ring.assert_quiet(2);
        } else {
            assert_eq!(s, 0, "seq 0 was not abandoned, yet its producer took another sequence");
            assert_eq!(got(&view, 0, EVENT_WORDS, &[ZOMBIE]), Got::Ready(ZOMBIE));
            assert_eq!(got(&view, 1, EVENT_WORDS, &[]), Got::Pending);
            ring.assert_quiet(1);
        }
        // Whether the producer had written seq 0's event when it was overruled (then only
        // its publish CAS stopped it) or found the stamp overtaken before writing.
        let wrote_seq0 = ring.event_words(0) != [0; EVENT_WORDS];
        seen2.insert((abandoned, wrote_seq0, g));
    });
    seen.assert_reached([
        // Overruled before writing: it finds the stamp overtaken and renumbers.
        (true, false, Got::Abandoned),
        // Overruled while writing: its publish CAS fails and it renumbers.
        (true, true, Got::Abandoned),
        // Not overruled: published, or still in flight when the reader looked (the reader
        // found the lock taken by then, or seq 0 already published).
        (false, true, Got::Ready(ZOMBIE)),
        (false, true, Got::Pending),
    ]);
}

#[test]
fn ring_batch_stays_in_order_beside_a_single_append_that_laps_it() {
    // A appends a batch of two (one `fetch_add(2)`), B one event, into two slots: the
    // third sequence laps the first. If B's lap takes slot 0 before A writes its first
    // event there, A is overtaken, stamps its second claim abandoned and claims both anew.
    // Two event words (`with_event_words`) keep the copies racing the writes small.
    const N: usize = 2;
    const A: u64 = 51;
    const B: u64 = 52;
    let seen = Seen::new();
    let seen2 = seen.clone();
    check(3, move || {
        let ring = Arc::new(Ring::new());
        let batch = {
            let ring = ring.clone();
            thread::spawn(move || {
                let mut recs = [event(A), event(A)];
                let last =
                    ring.view().with_event_words(N).append_batch(&mut recs, A, WAIT, |_| false, |_| Ok(()), || {});
                let last = last.expect("append_batch");
                assert_eq!((recs[0].seq + 1, recs[1].seq), (recs[1].seq, last), "the batch's sequences");
                last
            })
        };
        let single = {
            let ring = ring.clone();
            thread::spawn(move || {
                ring.view().with_event_words(N).append(&mut event(B), B, WAIT, |_| false, |_| Ok(())).expect("append")
            })
        };
        // A reader looking at seq 1 meanwhile: a whole event of whoever may hold it.
        let reader = {
            let ring = ring.clone();
            thread::spawn(move || got(&ring.view().with_event_words(N), 1, N, &[A, B]))
        };
        let (last_a, sb) = (batch.join().unwrap(), single.join().unwrap());
        reader.join().unwrap();
        let tail = ring.tail.load(Ordering::Relaxed);
        assert!(sb != last_a && sb != last_a - 1, "B's {sb} is one of A's {}..={last_a}", last_a - 1);
        // The two newest sequences are retained, whole and with the right producer.
        let view = ring.view().with_event_words(N);
        for s in [tail - 2, tail - 1] {
            let owner = if s == sb { B } else { A };
            let g = got(&view, s, N, &[owner]);
            assert_eq!(g, Got::Ready(owner), "seq {s} (tail {tail}, B {sb}, A ..={last_a})");
        }
        ring.assert_quiet(tail);
        seen2.insert((sb, last_a, tail));
    });
    // B first; A first (B laps A's first event); and A overtaken by B's lap of slot 0:
    // its claims 0 and 1 given up (1 stamped abandoned), the batch re-claimed as 3 and 4.
    seen.assert_reached([(0, 2, 3), (2, 1, 3), (2, 4, 5)]);
}

/// A reserver's word as the other's scan reads it.
const ABSENT: u64 = 0;
const PENDING: u64 = 1;
const CONFIRMED: u64 = 2;
const WITHDRAWN: u64 = 3;

/// Steps 1-4 of `reserve` for reserver `me` (reserver 0 is ordered first); whether it won.
fn reserve_model(words: &[AtomicU64; 2], me: usize) -> bool {
    let other = 1 - me;
    words[me].store(PENDING, Ordering::Release);
    fence(Ordering::SeqCst);
    loop {
        match words[other].load(Ordering::Acquire) {
            ABSENT | WITHDRAWN => break,
            s => match verdict(s == CONFIRMED, other < me) {
                Verdict::Lose => {
                    words[me].store(WITHDRAWN, Ordering::Release);
                    return false;
                }
                Verdict::Wait => thread::yield_now(),
            },
        }
    }
    words[me].store(CONFIRMED, Ordering::Release);
    true
}

#[test]
fn reservation_race_has_exactly_one_winner() {
    let outcomes = Seen::new();
    let seen = outcomes.clone();
    check(3, move || {
        let words = Arc::new([AtomicU64::new(ABSENT), AtomicU64::new(ABSENT)]);
        let w = words.clone();
        let late = thread::spawn(move || reserve_model(&w, 1));
        let first = reserve_model(&words, 0);
        let second = late.join().unwrap();
        assert!(first ^ second, "exactly one wins: first {first}, second {second}");
        seen.insert((first, second));
    });
    // Both outcomes are reachable: the model is not trivially one-sided.
    outcomes.assert_reached([(false, true), (true, false)]);
}

/// One waiter of `blocking_claim_loses_no_wake_up`: registers as `park_claimer` does,
/// then reads its wake word and makes its second try. Returns the word it read and
/// whether the second try took the task.
fn claim_waiter(w: &ClaimModel, me: usize) -> (u64, bool) {
    w.parked.fetch_add(1, Ordering::SeqCst);
    let placed = w.places[me].compare_exchange(0, 1, Ordering::SeqCst, Ordering::Relaxed).is_ok();
    assert!(placed, "each agent's one place is free at the start");
    fence(Ordering::SeqCst);
    let word = w.words[me].load(Ordering::Acquire);
    let took = w.ready.load(Ordering::Acquire) == 1
        && w.taken.compare_exchange(0, me as u64 + 1, Ordering::SeqCst, Ordering::Relaxed).is_ok();
    (word, took)
}

struct ClaimModel {
    parked: AtomicU64,
    places: [AtomicU64; 2],
    words: [AtomicU64; 2],
    ready: AtomicU64,
    taken: AtomicU64,
}

#[test]
fn blocking_claim_loses_no_wake_up() {
    check(3, || {
        let m = Arc::new(ClaimModel {
            parked: AtomicU64::new(0),
            places: [AtomicU64::new(0), AtomicU64::new(0)],
            words: [AtomicU64::new(0), AtomicU64::new(0)],
            ready: AtomicU64::new(0),
            taken: AtomicU64::new(0),
        });
        let producer = {
            let m = m.clone();
            thread::spawn(move || {
                // `wake_claimers` after the change published the task.
                m.ready.store(1, Ordering::Release);
                fence(Ordering::SeqCst);
                if m.parked.load(Ordering::Relaxed) == 0 {
                    return None;
                }
                for i in 0..2 {
                    if m.places[i].load(Ordering::Acquire) != 0
                        && m.places[i].compare_exchange(1, 0, Ordering::SeqCst, Ordering::Relaxed).is_ok()
                    {
                        m.parked.fetch_sub(1, Ordering::SeqCst);
                        m.words[i].fetch_add(1, Ordering::Release);
                        return Some(i);
                    }
                }
                None
            })
        };
        let second = {
            let m = m.clone();
            thread::spawn(move || claim_waiter(&m, 1))
        };
        let (w0, took0) = claim_waiter(&m, 0);
        let (w1, took1) = second.join().unwrap();
        let woke = producer.join().unwrap();
        assert!(!(took0 && took1), "one task, one holder");
        let slept_and_woken = |i: usize, w: u64, took: bool| !took && m.words[i].load(Ordering::Acquire) != w;
        assert!(
            took0 || took1 || slept_and_woken(0, w0, took0) || slept_and_woken(1, w1, took1),
            "a lost wake-up: the task is ready, nobody took it, and both waiters sleep (woke {woke:?})"
        );
        let bumped = (0..2).filter(|&i| m.words[i].load(Ordering::Acquire) != 0).count();
        assert!(bumped <= 1, "one change wakes at most one agent");
    });
}

/// The words of a ready index over `slots` slots, all zero.
fn ready_words(slots: u32) -> Vec<AtomicU64> {
    (0..words_for(slots)).map(|_| AtomicU64::new(0)).collect()
}

/// Every `(bucket, slot)` a walk of `ix` finds (a finder that only looks).
fn walk_all(ix: &ReadyIndex<'_>) -> Vec<(usize, u32)> {
    let mut out = Vec::new();
    ix.walk(|b, i| {
        out.push((b, i));
        Visit::Next
    });
    out
}

/// One slot's lock word and record (1: claimable in bucket `READY_BUCKET`), and the index.
struct ReadyModel {
    words: Vec<AtomicU64>,
    lock: AtomicU64,
    status: AtomicU64,
}

const READY_BUCKET: usize = 7;

#[test]
fn ready_a_stale_clear_never_hides_a_task_being_published() {
    let seen = Seen::new();
    let seen2 = seen.clone();
    check(3, move || {
        let m = Arc::new(ReadyModel { words: ready_words(1), lock: AtomicU64::new(0), status: AtomicU64::new(0) });
        // A stale bit: the record (0) is not claimable, the bit is set.
        ReadyIndex::new(&m.words, 1).unwrap().set(READY_BUCKET, 0);
        let writer = {
            let m = m.clone();
            thread::spawn(move || {
                let ix = ReadyIndex::new(&m.words, 1).unwrap();
                // The finder may hold the lock a moment (its stale clear): wait it out.
                while m.lock.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
                    thread::yield_now();
                }
                ix.set(READY_BUCKET, 0);
                m.status.store(1, Ordering::Release);
                m.lock.compare_exchange(1, 0, Ordering::Release, Ordering::Relaxed).unwrap();
            })
        };
        let ix = ReadyIndex::new(&m.words, 1).unwrap();
        let mut outcome = None;
        ix.walk(|b, i| {
            if m.status.load(Ordering::Acquire) != 1 {
                // `clear_if_stale`: under the slot's lock, if it is free, and only if the
                // record is still not claimable.
                outcome = Some("busy");
                if try_acquire(&m.lock, 2) {
                    outcome = Some("kept");
                    if m.status.load(Ordering::Acquire) != 1 {
                        ix.clear(b, i);
                        outcome = Some("cleared");
                    }
                    unlock(&m.lock, 2);
                }
            }
            Visit::Next
        });
        writer.join().unwrap();
        seen2.insert(outcome);
        assert_eq!(m.status.load(Ordering::Acquire), 1);
        assert_eq!(walk_all(&ix), [(READY_BUCKET, 0)], "the published task is indexed");
    });
    seen.assert_reached([Some("busy"), Some("kept"), Some("cleared"), None]);
}

#[test]
fn ready_an_upper_clear_never_hides_a_bit_being_set() {
    for top_too in [false, true] {
        check(3, move || {
            let words = Arc::new(ready_words(128));
            {
                // Slot 64 was indexed and cleared: level 1 (and top) still say "maybe".
                let ix = ReadyIndex::new(&words, 128).unwrap();
                ix.set(READY_BUCKET, 64);
                ix.clear(READY_BUCKET, 64);
                if top_too {
                    // A walk tidied level 1; only the top bit is left over nothing.
                    assert!(walk_all(&ix).is_empty());
                }
            }
            let setter = {
                let words = words.clone();
                thread::spawn(move || ReadyIndex::new(&words, 128).unwrap().set(READY_BUCKET, 64))
            };
            let ix = ReadyIndex::new(&words, 128).unwrap();
            let first = walk_all(&ix);
            setter.join().unwrap();
            assert!(first.is_empty() || first == [(READY_BUCKET, 64)]);
            assert_eq!(walk_all(&ix), [(READY_BUCKET, 64)], "the set bit is reachable");
        });
    }
}

/// The journal's wake word: a producer publishes an event, then bumps the word (waking
/// the journal only if the bump found the parked bit); the journal sets the bit, then
/// looks for events, then sleeps on the value it set. The word counts bumps, so the
/// value `prepare_park` returns says how many bumps came before it: the journal's look
/// after it must see every one of those events (a bump after it finds the bit and
/// wakes, or changes the word the journal sleeps on). Two rounds, so a clear
/// (`unpark`) racing the next bump is covered too.
#[test]
fn journal_wake_is_never_lost() {
    check(3, || {
        let word = Arc::new(loom::sync::atomic::AtomicU32::new(0));
        let events = Arc::new(AtomicU64::new(0));
        let (w, e) = (word.clone(), events.clone());
        let producer = thread::spawn(move || {
            for n in 1..=2u64 {
                // The publish, before the bump (as `append` publishes its stamp before
                // `wait_durable` bumps).
                e.store(n, Ordering::Release);
                let parked = JournalWake(&w).bump();
                let _ = parked;
            }
        });
        let wake = JournalWake(&word);
        for _ in 0..2 {
            let v = wake.prepare_park();
            let bumped_before = u64::from(v >> 1);
            let seen = events.load(Ordering::Acquire);
            assert!(seen >= bumped_before, "{bumped_before} events announced before the park, the look saw {seen}");
            wake.unpark();
        }
        producer.join().unwrap();
        assert_eq!(word.load(Ordering::SeqCst), 4, "two bumps, the parked bit clear");
    });
}
