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
//!
//! # The wall part comes from the coarse clock
//!
//! A tick reads `CLOCK_REALTIME_COARSE` ([`coarse_unix_ms`]), not `CLOCK_REALTIME`: the
//! coarse clock is the time of the kernel's last timer tick, read from the vDSO page
//! without the TSC read and scaling (a few ns instead of ~20 on the append path). It lags
//! the precise clock by at most one timer tick (1–10 ms, `CONFIG_HZ`), so an HLC's wall
//! part may trail [`unix_ms`] by that much; nothing compares the two that closely (leases,
//! heartbeats and token expiry read [`unix_ms`] themselves). Uniqueness and monotonicity
//! never depended on the wall clock: a tick is `max(old + 1, wall)`, so within one coarse
//! tick the logical part counts on (and carries into the wall part past 65 536 ticks a
//! millisecond, as it always could). [`tick_n`] hands out `n` consecutive values in one
//! compare-and-set, for a batch of events.

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

/// Milliseconds since the Unix epoch from the coarse clock (the last timer tick): what a
/// tick reads (module doc). Falls back to [`unix_ms`] should the coarse clock be missing.
pub fn coarse_unix_ms() -> u64 {
    crate::sys::coarse_realtime().map(|d| d.as_millis() as u64).unwrap_or_else(unix_ms)
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
    tick_n(word, 1)
}

/// Advances the clock word by `n` (at least 1) values at once and returns the first:
/// the caller owns `first ..= first + n - 1`, each unique and above every value handed out
/// before, as if it had ticked `n` times in a row. One compare-and-set for a batch.
pub(crate) fn tick_n(word: &AtomicU64, n: u64) -> Hlc {
    let n = n.max(1);
    let wall_ms = coarse_unix_ms();
    let wall = Hlc::from_wall_ms(wall_ms).0;
    let mut old = word.load(Ordering::Relaxed);
    for _ in 0..TICK_ATTEMPTS {
        if too_far_ahead(Hlc(old), wall_ms) {
            match word.compare_exchange_weak(old, wall.wrapping_add(n - 1), Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Hlc(wall),
                Err(seen) => {
                    old = seen;
                    continue;
                }
            }
        }
        let first = old.wrapping_add(1).max(wall);
        match word.compare_exchange_weak(old, first.wrapping_add(n - 1), Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return Hlc(first),
            Err(seen) => old = seen,
        }
    }
    Hlc(word.fetch_add(n, Ordering::AcqRel).wrapping_add(1))
}

/// Merges a clock value received from elsewhere (another host, a journal) so that later
/// ticks order after it. Returns the new value.
pub(crate) fn observe(word: &AtomicU64, remote: Hlc) -> Hlc {
    let wall_ms = coarse_unix_ms();
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
    fn a_range_of_ticks_orders_after_earlier_ticks_and_before_later_ones() {
        let w = AtomicU64::new(0);
        let before = tick(&w);
        let first = tick_n(&w, 5);
        assert!(first > before);
        let after = tick(&w);
        assert_eq!(after, Hlc(first.0 + 5), "the range is first ..= first + 4, then on");
        // Far-ahead damage is reset for a range too, and the range still lies below the next tick.
        let century = Hlc::from_wall_ms(unix_ms() + 100 * 365 * 86_400_000);
        let w = AtomicU64::new(century.0);
        let first = tick_n(&w, 3);
        assert!(first.wall_ms().abs_diff(unix_ms()) < 60_000, "{first}");
        assert!(tick(&w) > Hlc(first.0 + 2));
    }

    #[test]
    fn the_coarse_wall_clock_stays_close_to_the_precise_one() {
        let (a, c, b) = (unix_ms(), coarse_unix_ms(), unix_ms());
        // The coarse clock trails by at most one timer tick (10 ms at HZ=100); a loaded
        // machine may be descheduled between the reads, so the bound is loose.
        assert!(c <= b + 1 && c + 1_000 >= a, "coarse {c}, precise {a}..{b}");
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
