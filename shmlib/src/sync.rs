//! The only place that turns raw segment memory into Rust values.
//!
//! Memory in the segment is written concurrently by other processes, so no `&T` to plain
//! data in it may ever exist: a plain read racing a write is undefined behaviour even
//! when the value is thrown away afterwards. This module therefore hands out exactly two
//! kinds of view, both bounds- and alignment-checked on every call:
//!
//! * `&AtomicU64` / `&AtomicU32` for control words (sequence words, locks, counters);
//! * `&[AtomicU64]` for plain records, which are copied in and out word by word with
//!   relaxed atomic loads and stores (the "atomic memcpy" idea) by [`load_words`] and
//!   [`store_words`]; the seqlock protocol around such a copy decides whether the copy
//!   is a consistent snapshot.
//!
//! Under `--cfg loom` the atomic types are loom's, so the lock-free algorithms built on
//! these views (`seqlock`, `freelist`) can be model-checked on heap-allocated words.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use memmap2::MmapRaw;

/// A mapped segment: base pointer and length, valid for the lifetime of this value.
pub(crate) struct Mapping {
    raw: MmapRaw,
    writable: bool,
}

// SAFETY: the mapping is only ever accessed through atomic views, which are Sync.
unsafe impl Send for Mapping {}
// SAFETY: as above: every access goes through `&Atomic*`, never through plain references.
unsafe impl Sync for Mapping {}

impl Mapping {
    pub(crate) fn new(raw: MmapRaw, writable: bool) -> Self {
        Mapping { raw, writable }
    }

    /// Length of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether stores through the views are permitted (the mapping is read-write).
    pub(crate) fn writable(&self) -> bool {
        self.writable
    }

    fn checked(&self, offset: usize, bytes: usize, align: usize) -> Option<*mut u8> {
        let end = offset.checked_add(bytes)?;
        if end > self.raw.len() || !offset.is_multiple_of(align) {
            return None;
        }
        // SAFETY: offset + bytes <= len, so the result stays inside the mapping.
        Some(unsafe { self.raw.as_mut_ptr().add(offset) })
    }

    /// The 64-bit control word at `offset`, or `None` if out of bounds or misaligned.
    pub(crate) fn u64_at(&self, offset: usize) -> Option<&AtomicU64> {
        let ptr = self.checked(offset, 8, 8)?;
        // AtomicU64 has the size and alignment of u64 and may alias memory that other
        // processes access atomically; the mapping outlives the returned borrow of `self`.
        // SAFETY: in bounds and 8-aligned (checked above), and valid as an atomic (above).
        Some(unsafe { &*(ptr as *const AtomicU64) })
    }

    /// The 32-bit control word at `offset` (futex words), or `None` if out of range.
    #[allow(dead_code)]
    pub(crate) fn u32_at(&self, offset: usize) -> Option<&AtomicU32> {
        let ptr = self.checked(offset, 4, 4)?;
        // SAFETY: in bounds and 4-aligned (checked above); same argument as `u64_at`.
        Some(unsafe { &*(ptr as *const AtomicU32) })
    }

    /// `count` consecutive 64-bit words starting at `offset`, or `None` if out of range.
    pub(crate) fn words_at(&self, offset: usize, count: usize) -> Option<&[AtomicU64]> {
        let ptr = self.checked(offset, count.checked_mul(8)?, 8)?;
        // See `u64_at` for why atomic views into shared memory are sound.
        // SAFETY: `count` words fit in the mapping from an 8-aligned offset (checked above).
        Some(unsafe { std::slice::from_raw_parts(ptr as *const AtomicU64, count) })
    }
}

/// Copies `src` into `dst` with relaxed word loads. `src.len()` must equal `dst.len()`.
pub(crate) fn load_words(src: &[AtomicU64], dst: &mut [u64]) {
    debug_assert_eq!(src.len(), dst.len());
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.load(Ordering::Relaxed);
    }
}

/// [`load_words`] for fixed-size arrays (the compiler unrolls it).
#[inline]
pub(crate) fn load_array<const N: usize>(src: &[AtomicU64; N], dst: &mut [u64; N]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.load(Ordering::Relaxed);
    }
}

/// Copies `src` into `dst` with relaxed word stores. `src.len()` must equal `dst.len()`.
pub(crate) fn store_words(dst: &[AtomicU64], src: &[u64]) {
    debug_assert_eq!(src.len(), dst.len());
    for (d, s) in dst.iter().zip(src) {
        d.store(*s, Ordering::Relaxed);
    }
}
