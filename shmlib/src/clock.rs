//! The hybrid logical clock shared by every process attached to a segment.
//!
//! One 64-bit word in the header: wall-clock milliseconds in the high 48 bits, a logical
//! counter in the low 16. [`tick`] returns `max(old + 1, wall << 16)` and stores it with
//! a compare-and-set, so stamps are unique and strictly increasing across all processes
//! on the host, stay close to wall time, and keep increasing when the wall clock steps
//! back. (Kulkarni et al., "Logical Physical Clocks", 2014.) Within a host the event
//! ring's sequence is the exact order; the HLC orders across hosts and restarts.
//!
//! # A clock word far ahead is damage
//!
//! Every writer reads the word and stores something larger, so a word pushed far into
//! the future (a stray write, an attacker) would otherwise be propagated by every stamp
//! from then on. A word whose wall part is more than [`MAX_AHEAD_MS`] (one hour) ahead
//! of this host's wall clock is treated as damage: [`tick`] does not count on from it but
//! resets the word to wall time (by compare-and-set, so one writer resets it);
//! [`observe`] ignores a remote stamp that far ahead. The daemon checks the word every
//! second and resets and reports a word it finds far ahead. A writer that resets the word
//! first leaves no trace in the word itself; the records it stamped while the word was
//! damaged do, and `wn doctor` reports them (`Inspector::damage`, class `clock_ahead`). The bound is far beyond any clock skew NTP leaves between
//! processes of one host and beyond a restart's journal replay, and far below the damage
//! found in practice (years). The cost: stamps issued after a reset order below the
//! damaged ones — which were never real.

use crate::sync::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A hybrid logical clock value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hlc(pub u64);

impl Hlc {
    /// Bits of the logical part, below the wall-clock milliseconds.
    const LOGICAL_BITS: u32 = 16;

    /// Wall-clock part: milliseconds since the Unix epoch.
    pub fn wall_ms(self) -> u64 {
        self.0 >> Self::LOGICAL_BITS
    }

    /// Logical part: ticks within the same millisecond.
    pub fn logical(self) -> u16 {
        self.0 as u16
    }

    /// A clock value for `wall_ms` with a zero logical part.
    pub fn from_wall_ms(wall_ms: u64) -> Hlc {
        Hlc(wall_ms << Self::LOGICAL_BITS)
    }
}

impl std::fmt::Display for Hlc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:05}", self.wall_ms(), self.logical())
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Compare-and-set attempts before falling back to a plain increment.
const TICK_ATTEMPTS: u32 = 64;

/// How far ahead of this host's wall clock the clock word may be before it is treated
/// as damage (see the module doc): one hour.
pub const MAX_AHEAD_MS: u64 = 3_600_000;

/// Whether `value` is more than [`MAX_AHEAD_MS`] ahead of `wall_ms`.
pub fn too_far_ahead(value: Hlc, wall_ms: u64) -> bool {
    value.wall_ms() > wall_ms.saturating_add(MAX_AHEAD_MS)
}

/// Advances the clock word and returns the new value. Bounded: under heavy contention
/// it falls back to `fetch_add(1)`, which is still unique and increasing (it only lags
/// wall time by the contention). A word far ahead of wall time is reset (module doc).
pub(crate) fn tick(word: &AtomicU64) -> Hlc {
    let wall_ms = unix_ms();
    let wall = Hlc::from_wall_ms(wall_ms).0;
    let mut old = word.load(Ordering::Relaxed);
    for _ in 0..TICK_ATTEMPTS {
        if too_far_ahead(Hlc(old), wall_ms) {
            match word.compare_exchange_weak(old, wall, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Hlc(wall),
                Err(seen) => {
                    old = seen;
                    continue;
                }
            }
        }
        let new = old.wrapping_add(1).max(wall);
        match word.compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return Hlc(new),
            Err(seen) => old = seen,
        }
    }
    Hlc(word.fetch_add(1, Ordering::AcqRel).wrapping_add(1))
}

/// Merges a clock value received from elsewhere (another host, a journal) so that later
/// ticks order after it. Returns the new value.
pub(crate) fn observe(word: &AtomicU64, remote: Hlc) -> Hlc {
    let wall_ms = unix_ms();
    if too_far_ahead(remote, wall_ms) {
        // Not merged: a stamp that far ahead is damage, not skew (module doc).
        return tick(word);
    }
    let wall = Hlc::from_wall_ms(wall_ms).0;
    let mut old = word.load(Ordering::Relaxed);
    for _ in 0..TICK_ATTEMPTS {
        let new = old.max(remote.0).wrapping_add(1).max(wall);
        match word.compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return Hlc(new),
            Err(seen) => old = seen,
        }
    }
    word.fetch_max(remote.0, Ordering::AcqRel);
    Hlc(word.fetch_add(1, Ordering::AcqRel).wrapping_add(1))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_strictly_increasing_and_near_wall_time() {
        let w = AtomicU64::new(0);
        let a = tick(&w);
        let b = tick(&w);
        assert!(b > a);
        assert!(a.wall_ms().abs_diff(unix_ms()) < 60_000);
    }

    #[test]
    fn a_clock_ahead_of_wall_time_within_the_bound_keeps_counting() {
        let ahead = Hlc::from_wall_ms(unix_ms() + MAX_AHEAD_MS - 60_000);
        let w = AtomicU64::new(ahead.0);
        assert_eq!(tick(&w), Hlc(ahead.0 + 1));
        let later = observe(&w, Hlc(ahead.0 + 100));
        assert_eq!(later, Hlc(ahead.0 + 101));
    }

    #[test]
    fn a_clock_word_far_ahead_is_reset_not_propagated() {
        let century = Hlc::from_wall_ms(unix_ms() + 100 * 365 * 86_400_000);
        let w = AtomicU64::new(century.0);
        let t = tick(&w);
        assert!(t.wall_ms().abs_diff(unix_ms()) < 60_000, "{t}");
        assert!(tick(&w) > t);
        // A remote stamp that far ahead is not merged either.
        let o = observe(&w, century);
        assert!(o.wall_ms().abs_diff(unix_ms()) < 60_000, "{o}");
    }

    #[test]
    fn threads_never_see_the_same_stamp() {
        let w = std::sync::Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || (0..10_000).map(|_| tick(&w).0).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<u64> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
