//! The control word every slot table shares (node pool, agent table, blob arena, set
//! slots): `generation << 32 | state`. The generation changes whenever a slot is freed,
//! so a handle (index, generation) to a freed and reused slot is recognised as stale;
//! the state says whether the slot is free, reserved or live.

use crate::layout::slot::{FREE, LIVE, RESERVED};
use crate::sync::{AtomicU64, Ordering};

/// A slot's gen/state word, `generation << 32 | state`: the one place it is packed and
/// unpacked. The atomics hold the raw word; [`gen_of`], [`state_of`] and [`pack`] are
/// the word-level shorthands the slot tables use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GenState(u64);

impl GenState {
    /// Packs a generation and a state (the state's low 32 bits).
    pub(crate) const fn new(generation: u32, state: u64) -> GenState {
        GenState(((generation as u64) << 32) | (state & 0xffff_ffff))
    }

    /// The word as loaded from a slot.
    pub(crate) const fn from_raw(word: u64) -> GenState {
        GenState(word)
    }

    /// The word to store.
    pub(crate) const fn raw(self) -> u64 {
        self.0
    }

    /// The generation part.
    pub(crate) const fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The state part.
    pub(crate) const fn state(self) -> u64 {
        self.0 & 0xffff_ffff
    }
}

/// The generation part of a gen/state word.
pub(crate) fn gen_of(gen_state: u64) -> u32 {
    GenState::from_raw(gen_state).generation()
}

/// The state part of a gen/state word.
pub(crate) fn state_of(gen_state: u64) -> u64 {
    GenState::from_raw(gen_state).state()
}

/// Packs a generation and a state into a gen/state word.
pub(crate) const fn pack(generation: u32, state: u64) -> u64 {
    GenState::new(generation, state).raw()
}

/// The generation a slot gets when freed: never 0, so a zeroed word or handle never
/// matches a live slot.
pub(crate) fn next_generation(g: u32) -> u32 {
    g.checked_add(1).unwrap_or(1)
}

/// Whether `gen_state` holds one of the three states a slot can be in.
pub(crate) fn state_is_valid(gen_state: u64) -> bool {
    matches!(state_of(gen_state), FREE | RESERVED | LIVE)
}

/// Takes a slot found on a free list (or by a scan for a free slot) for its new owner:
/// moves its word from FREE to RESERVED by compare-and-set, so a slot that is not free
/// — a live record named by a damaged free list, or a slot another process took first —
/// is never overwritten. Returns the slot's generation, or the word found.
pub(crate) fn reserve(word: &AtomicU64) -> Result<u32, u64> {
    let gs = word.load(Ordering::Acquire);
    if state_of(gs) != FREE {
        return Err(gs);
    }
    word.compare_exchange(gs, pack(gen_of(gs), RESERVED), Ordering::AcqRel, Ordering::Acquire).map(|_| gen_of(gs))
}

/// Undoes [`reserve`] for a slot that never went live: free again at the same generation.
pub(crate) fn unreserve(word: &AtomicU64, generation: u32) {
    let _ =
        word.compare_exchange(pack(generation, RESERVED), pack(generation, FREE), Ordering::AcqRel, Ordering::Relaxed);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn only_a_free_slot_is_reserved() {
        let w = AtomicU64::new(pack(3, FREE));
        assert_eq!(reserve(&w), Ok(3));
        assert_eq!(reserve(&w), Err(pack(3, RESERVED)));
        unreserve(&w, 3);
        assert_eq!(w.load(Ordering::Relaxed), pack(3, FREE));
        let live = AtomicU64::new(pack(7, LIVE));
        assert_eq!(reserve(&live), Err(pack(7, LIVE)));
        assert!(!state_is_valid(pack(1, 9)));
    }
}
