//! A double-buffered seqlock with a crash-tolerant writer lock: the protocol that guards
//! every node record.
//!
//! # Words
//!
//! * `lock`: 0 when free, else the owner tag (pid + process start time) of the one
//!   writer inside. Writers serialise on it with a compare-and-set.
//! * `seq`: a sequence word, changed only by the lock holder. Even: stable; odd: a
//!   write is in progress. Bit 1 names the *active* copy: readers copy record
//!   `(seq >> 1) & 1`.
//! * two record copies.
//!
//! # Writing (lock held, `seq == s`, `s` even)
//!
//! The writer stores `s + 1` *with Release*, issues a release fence, writes the new
//! record into the *inactive* copy `((s >> 1) + 1) & 1` with relaxed word stores, then
//! stores `s + 2` with Release, which makes that copy active.
//!
//! The odd store must be Release, not Relaxed: a reader that loads `s + 1` copies the
//! copy published at `s`, so its Acquire load of `s + 1` has to synchronise with the
//! writer that published that copy. A relaxed store is not part of the earlier release
//! sequence (C++20 / Rust), and the loom model found a stale and a torn copy accepted at
//! `s + 1` when it was. It costs nothing on x86-64 and one `stlr` on ARM.
//!
//! # Reading (no lock, no store)
//!
//! Load `q = seq` (Acquire), copy record `(q >> 1) & 1` with relaxed word loads, fence
//! (Acquire), reload `seq` as `q2`. With `base = q & !1`, the copy is consistent iff
//! `q2 - base <= 2`: the first writer after `base` writes the *other* copy, and only a
//! second writer (`seq` reaching `base + 3`) can touch the one we read. So a reader is
//! never disturbed by one concurrent writer, and it retries (bounded) only when two
//! writes overlap its copy. The fence pairing is Boehm's ("Can seqlocks get along with
//! programming language memory models?", 2012): if any word we copied came from a store
//! after the writer's release fence, our acquire fence makes `q2` see that writer's odd
//! value.
//!
//! # A writer that dies
//!
//! The dead writer can only have damaged the inactive copy. A process that finds the
//! lock held by a tag whose process is gone takes it over with a compare-and-set from
//! that tag (so exactly one process repairs) and, if `seq` is odd (`s + 1`), stores
//! `s + 4`: even, and naming the same active copy as `s`. Nothing acknowledged is lost.
//!
//! Racing memory is only ever touched with atomic operations (see `sync`).

use crate::ownerlock::{snooze, Acquired};
use crate::sync::{fence, load_words, store_words, AtomicU64, Ordering};
use crossbeam_utils::Backoff;
use std::time::Duration;

/// Attempts a reader makes before reporting contention.
#[cfg(not(loom))]
pub(crate) const READ_ATTEMPTS: u32 = 10_000;
/// Attempts a reader makes before reporting contention (few under loom, where every
/// retry multiplies the interleavings to explore; three cover every overlap pattern).
#[cfg(loom)]
pub(crate) const READ_ATTEMPTS: u32 = 3;

/// Default time a writer waits for a lock held by a live process.
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(2);

/// The copy readers should take for sequence value `q`.
pub fn active_copy(q: u64) -> usize {
    ((q >> 1) & 1) as usize
}

/// The reader's loop, shared by [`read`] and [`read_array`]: `copy(c)` copies record
/// copy `c` out. Returns the sequence value the copy was taken at, or `None` if writers
/// kept overlapping for `READ_ATTEMPTS`.
#[inline(always)]
fn read_with(seq: &AtomicU64, mut copy: impl FnMut(usize)) -> Option<u64> {
    let backoff = Backoff::new();
    for _ in 0..READ_ATTEMPTS {
        // SYNC POINT: pairs with the Release stores of `seq` in `write_locked` (odd `s + 1`
        // and even `s + 2`) and `repair`: the copy named by `q` is complete.
        let q = seq.load(Ordering::Acquire);
        copy(active_copy(q));
        // SYNC POINT: pairs with the Release fence in `write_locked` after its odd store:
        // if a copied word came from a later writer, `q2` sees that writer's odd value.
        fence(Ordering::Acquire);
        let q2 = seq.load(Ordering::Relaxed);
        if q2.wrapping_sub(q & !1) <= 2 {
            return Some(q);
        }
        snooze(&backoff);
    }
    None
}

/// Copies a consistent snapshot of the active record into `out`. Returns the sequence
/// value it was taken at, or `None` if writers kept overlapping for `READ_ATTEMPTS`.
pub fn read(seq: &AtomicU64, copies: [&[AtomicU64]; 2], out: &mut [u64]) -> Option<u64> {
    read_with(seq, |c| load_words(copies[c], out))
}

/// [`read`] for fixed-size records: the copy loop is unrolled and writes straight
/// into the caller's buffer.
pub fn read_array<const N: usize>(seq: &AtomicU64, copies: [&[AtomicU64; N]; 2], out: &mut [u64; N]) -> Option<u64> {
    read_with(seq, |c| crate::sync::load_array(copies[c], out))
}

pub use crate::ownerlock::LockBusy;

/// Takes the writer lock for `me` (see `ownerlock::acquire`), waiting up to `wait` for a
/// live holder; taking it over from a holder whose process is gone repairs `seq` and,
/// through `on_steal`, whatever else the holder guarded.
pub fn lock(
    lock: &AtomicU64,
    seq: &AtomicU64,
    me: u64,
    wait: Duration,
    is_dead: impl Fn(u64) -> bool,
    mut on_steal: impl FnMut(),
) -> Result<(), LockBusy> {
    if let Acquired::FromDead(_) = crate::ownerlock::acquire(lock, me, wait, is_dead)? {
        repair(seq);
        on_steal();
    }
    Ok(())
}

/// Releases the writer lock if `me` still holds it (see `ownerlock::release`).
pub fn unlock(lock: &AtomicU64, me: u64) {
    crate::ownerlock::release(lock, me);
}

/// Brings an odd `seq` left by a dead writer back to an even value naming the copy that
/// was active before that writer began. Call only while holding the lock.
pub fn repair(seq: &AtomicU64) {
    let s = seq.load(Ordering::Relaxed);
    if s & 1 == 1 {
        // SYNC POINT: pairs with the Acquire load of `seq` in `read_with`.
        seq.store(s + 3, Ordering::Release);
    }
}

/// Copies the active record into `out`. Call only while holding the lock (no writer can
/// run, so one pass suffices).
pub fn read_locked(seq: &AtomicU64, copies: [&[AtomicU64]; 2], out: &mut [u64]) {
    let q = seq.load(Ordering::Relaxed);
    load_words(copies[active_copy(q)], out);
}

/// Publishes `record` as the new active copy. Call only while holding the lock.
/// Returns the new (even) sequence value.
pub fn write_locked(seq: &AtomicU64, copies: [&[AtomicU64]; 2], record: &[u64]) -> u64 {
    let mut s = seq.load(Ordering::Relaxed);
    if s & 1 == 1 {
        // Odd under our lock with no dead holder repaired: damage (segment bytes are never
        // trusted to be sane). Go on as `repair` would have: even, same active copy.
        s += 3;
    }
    // SYNC POINT: pairs with the Acquire load of `seq` in `read_with` (a reader that
    // loads `s + 1` copies the copy published at `s`; see the module doc).
    seq.store(s + 1, Ordering::Release);
    // SYNC POINT: pairs with the Acquire fence in `read_with` before its re-read of `seq`.
    fence(Ordering::Release);
    store_words(copies[active_copy(s) ^ 1], record);
    // SYNC POINT: pairs with the Acquire load of `seq` in `read_with`: the new copy is
    // complete for whoever loads `s + 2`.
    seq.store(s + 2, Ordering::Release);
    s + 2
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn words(n: usize) -> Vec<AtomicU64> {
        (0..n).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn write_flips_the_active_copy_and_read_sees_it() {
        let (seq, a, b) = (AtomicU64::new(0), words(4), words(4));
        let copies = [&a[..], &b[..]];
        assert_eq!(write_locked(&seq, copies, &[1, 2, 3, 4]), 2);
        let mut out = [0; 4];
        assert_eq!(read(&seq, copies, &mut out), Some(2));
        assert_eq!(out, [1, 2, 3, 4]);
        write_locked(&seq, copies, &[5, 6, 7, 8]);
        read(&seq, copies, &mut out).unwrap();
        assert_eq!(out, [5, 6, 7, 8]);
        assert_eq!(a[0].load(Ordering::Relaxed), 5, "second write lands in copy 0");
    }

    #[test]
    fn repair_after_a_dead_writer_keeps_the_last_published_copy() {
        let (seq, a, b) = (AtomicU64::new(0), words(2), words(2));
        let copies = [&a[..], &b[..]];
        write_locked(&seq, copies, &[7, 7]);
        // A writer dies half-way: seq odd, inactive copy half written.
        seq.store(3, Ordering::Relaxed);
        a[0].store(99, Ordering::Relaxed);
        repair(&seq);
        assert_eq!(seq.load(Ordering::Relaxed), 6);
        let mut out = [0; 2];
        read(&seq, copies, &mut out).unwrap();
        assert_eq!(out, [7, 7]);
    }

    #[test]
    fn a_write_over_an_odd_word_left_by_damage_keeps_the_active_copy_and_ends_even() {
        let (seq, a, b) = (AtomicU64::new(0), words(2), words(2));
        let copies = [&a[..], &b[..]];
        write_locked(&seq, copies, &[7, 7]);
        seq.store(3, Ordering::Relaxed);
        let s = write_locked(&seq, copies, &[8, 8]);
        assert_eq!(s & 1, 0);
        let mut out = [0; 2];
        read(&seq, copies, &mut out).unwrap();
        assert_eq!(out, [8, 8]);
    }

    #[test]
    fn lock_takes_over_from_a_dead_holder_and_times_out_on_a_live_one() {
        let (l, seq) = (AtomicU64::new(41), AtomicU64::new(5));
        let mut stolen = false;
        lock(&l, &seq, 7, Duration::from_millis(50), |t| t == 41, || stolen = true).unwrap();
        assert!(stolen);
        assert_eq!(l.load(Ordering::Relaxed), 7);
        assert_eq!(seq.load(Ordering::Relaxed), 8);
        let r = lock(&l, &seq, 9, Duration::from_millis(20), |_| false, || {});
        assert_eq!(r, Err(LockBusy { holder: 7 }));
    }
}
