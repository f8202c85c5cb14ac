//! A lock word that names its holder and survives the holder's death.
//!
//! The word is 0 when free, else the holder's owner tag (pid + process start time).
//! Taking it is one compare-and-set; a waiter spins briefly, then yields, asking now and
//! then whether the holder's process still exists. If it does not, the waiter takes the
//! lock over with a compare-and-set *from that tag*, so exactly one process inherits it
//! and repairs whatever the dead holder left half-done. A live holder is waited for up to
//! a bound, then reported as [`LockBusy`].

use crate::sync::{AtomicU64, Ordering};
use crossbeam_utils::Backoff;
use std::time::{Duration, Instant};

/// Why a lock could not be taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockBusy {
    /// Owner tag of the (live) holder.
    pub holder: u64,
}

/// How the lock was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquired {
    /// It was free.
    Free,
    /// It was taken over from a holder whose process is gone: repair what it guarded.
    FromDead(u64),
}

/// Takes `word` for `me`, waiting up to `wait` for a live holder. `is_dead(tag)` is
/// asked only on the slow path.
pub fn acquire(word: &AtomicU64, me: u64, wait: Duration, is_dead: impl Fn(u64) -> bool) -> Result<Acquired, LockBusy> {
    let backoff = Backoff::new();
    let mut deadline: Option<Instant> = None;
    let mut checks = 0u32;
    loop {
        // SYNC POINT: pairs with the Release compare-and-set in `release`: the previous
        // holder's writes under the lock are visible to this one.
        match word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return Ok(Acquired::Free),
            Err(holder) => {
                // Under loom, straight to the slow path, asking `is_dead` at every attempt:
                // loom runs a yielding thread only once the others cannot run, so a waiter
                // that spins (and yields) first never takes over while another thread is
                // runnable, and the model never explores that race.
                if !cfg!(loom) && !backoff.is_completed() {
                    snooze(&backoff);
                    continue;
                }
                // Slow path: the holder has been inside longer than a short spin.
                checks = checks.wrapping_add(1);
                if (cfg!(loom) || checks % 16 == 1) && holder != me && is_dead(holder) {
                    // SYNC POINT: pairs with the Release in `release` by the holder before the
                    // dead one (which never released): what the dead holder wrote is not
                    // synchronised, so the caller repairs it rather than trusting it.
                    if word.compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                        return Ok(Acquired::FromDead(holder));
                    }
                    continue;
                }
                let now = Instant::now();
                match deadline {
                    None => deadline = Some(now + wait),
                    Some(d) if now >= d => return Err(LockBusy { holder }),
                    Some(_) => {}
                }
                yield_now();
            }
        }
    }
}

/// Takes `word` for `me` if it is free, without waiting; whether it did.
pub fn try_acquire(word: &AtomicU64, me: u64) -> bool {
    // SYNC POINT: pairs with the Release compare-and-set in `release`, as in `acquire`.
    word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok()
}

/// Releases the lock if `me` still holds it. A holder that was (wrongly) declared dead
/// and overruled must not free the lock its successor now holds, so this is a
/// compare-and-set from `me`, not a plain store.
pub fn release(word: &AtomicU64, me: u64) {
    // SYNC POINT: pairs with the Acquire compare-and-sets in `acquire` (the next holder,
    // free or taking over).
    let _ = word.compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed);
}

/// `backoff.snooze()`; under loom it also yields to the model's scheduler, since a spin
/// that never yields lets one thread run forever in the model.
pub(crate) fn snooze(backoff: &Backoff) {
    backoff.snooze();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// `std::thread::yield_now()`, or loom's under `--cfg loom`.
pub(crate) fn yield_now() {
    #[cfg(not(loom))]
    std::thread::yield_now();
    #[cfg(loom)]
    loom::thread::yield_now();
}
