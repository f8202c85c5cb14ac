//! The control word every slot table shares (node pool, agent table, blob arena, set
//! slots): `generation << 32 | state`. The generation changes whenever a slot is freed,
//! so a handle (index, generation) to a freed and reused slot is recognised as stale;
//! the state says whether the slot is free, reserved or live.

/// The generation part.
pub(crate) fn gen_of(gen_state: u64) -> u32 {
    (gen_state >> 32) as u32
}

/// The state part.
pub(crate) fn state_of(gen_state: u64) -> u64 {
    gen_state & 0xffff_ffff
}

/// Packs a generation and a state.
pub(crate) fn pack(generation: u32, state: u64) -> u64 {
    ((generation as u64) << 32) | (state & 0xffff_ffff)
}

/// The generation a slot gets when freed: never 0, so a zeroed word or handle never
/// matches a live slot.
pub(crate) fn next_generation(g: u32) -> u32 {
    g.checked_add(1).unwrap_or(1)
}
