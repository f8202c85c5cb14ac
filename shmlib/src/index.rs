//! The id index: a lock-free open-addressing table from node UUID to slot index.
//!
//! Capacity is a power of two at least twice the node capacity, so the table is at most
//! half full of live entries. Each entry is one word:
//!
//! * `0`: empty (ends a probe);
//! * `1`: tombstone (a deleted entry; probes continue past it, inserts reuse it);
//! * otherwise `fingerprint << 32 | (slot + 2)`, the fingerprint being the high half of
//!   the UUID's hash.
//!
//! The UUID itself is not stored here but in the slot's control words, written before
//! the entry is published with a compare-and-set (Release) and read after an entry is
//! loaded (Acquire). A lookup compares the fingerprint, then the slot's UUID, then checks
//! the slot is live, so an entry whose slot was since freed and reused never yields a
//! wrong node. Probing is linear and bounded by the capacity.
//!
//! Tombstones are not reclaimed in place (that cannot be done safely while other
//! processes probe); inserts reuse them, and `wn dump` reports how many there are.
//! Because churn turns every empty entry into a tombstone over time, a lookup cannot
//! rely on meeting an empty entry to stop: it stops after `max_probe + 1` entries, where
//! `max_probe` (a header word, only ever raised) is the largest displacement any insert
//! has used. An insert raises it *before* publishing its entry, so a lookup that can see
//! the entry also sees a bound that covers it. Inserts take the first empty-or-tombstone
//! entry, and at most half the table is live, so displacements stay short and a miss
//! costs a few probes, not a scan of the table.

use crate::sync::{AtomicU64, Ordering};

const EMPTY: u64 = 0;
const TOMBSTONE: u64 = 1;

/// An index entry word: [`EMPTY`], [`TOMBSTONE`], or `fingerprint << 32 | (slot + 2)`.
/// The one place an entry is packed and unpacked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry(u64);

impl Entry {
    /// The entry naming `slot` for a UUID whose [`hash`] is `h` (fingerprint: its high
    /// half).
    pub(crate) const fn new(h: u64, slot: u32) -> Entry {
        Entry((h & 0xffff_ffff_0000_0000) | (slot as u64 + 2))
    }

    /// The word as loaded from the table.
    pub(crate) const fn from_raw(word: u64) -> Entry {
        Entry(word)
    }

    /// The word to store.
    pub(crate) const fn raw(self) -> u64 {
        self.0
    }

    /// Whether the entry is empty or a tombstone (names no slot).
    pub(crate) const fn is_vacant(self) -> bool {
        self.0 == EMPTY || self.0 == TOMBSTONE
    }

    /// The slot a non-vacant entry names. A damaged word whose low half is below 2 wraps
    /// to a slot beyond any pool, which every caller's range check refuses.
    pub(crate) const fn slot(self) -> u64 {
        (self.0 & 0xffff_ffff).wrapping_sub(2)
    }

    /// Whether the entry's fingerprint is that of a UUID hashing to `h`.
    pub(crate) const fn fingerprint_matches(self, h: u64) -> bool {
        self.0 >> 32 == h >> 32
    }
}

/// Mixes a UUID's 128 bits into 64 (UUID v7 starts with a timestamp, so the raw bits
/// are far from uniform).
pub(crate) fn hash(uuid: &[u8; 16]) -> u64 {
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&uuid[..8]);
    b.copy_from_slice(&uuid[8..]);
    let mut h = u64::from_le_bytes(a) ^ u64::from_le_bytes(b).rotate_left(29);
    h = (h ^ (h >> 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h = (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^ (h >> 32)
}

/// The index table as a view over the segment's index region.
pub(crate) struct IdIndex<'a> {
    pub entries: &'a [AtomicU64],
    /// Largest displacement any insert has used (a header word).
    pub max_probe: &'a AtomicU64,
}

/// The table has no empty or tombstone entry left (cannot happen while capacity ≥ 2N
/// unless the segment is damaged).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct IndexFull;

impl IdIndex<'_> {
    fn mask(&self) -> u64 {
        self.entries.len() as u64 - 1
    }

    /// Publishes `uuid → slot`. Returns whether a tombstone was reused.
    pub fn insert(&self, uuid: &[u8; 16], slot: u32) -> Result<bool, IndexFull> {
        let h = hash(uuid);
        let new = Entry::new(h, slot).raw();
        for i in 0..self.entries.len() as u64 {
            let e = &self.entries[((h.wrapping_add(i)) & self.mask()) as usize];
            let mut cur = e.load(Ordering::Relaxed);
            if cur == EMPTY || cur == TOMBSTONE {
                // Raise the bound before the entry becomes visible.
                // SYNC POINT: pairs with the Acquire loads of `max_probe` in `find` and
                // `remove`; ordered before the entry's publication below.
                self.max_probe.fetch_max(i, Ordering::AcqRel);
            }
            while cur == EMPTY || cur == TOMBSTONE {
                // SYNC POINT: Release pairs with the Acquire entry loads in `find` and
                // `remove` (the slot's UUID, written before, is visible to a lookup that
                // sees the entry).
                match e.compare_exchange(cur, new, Ordering::AcqRel, Ordering::Relaxed) {
                    Ok(_) => return Ok(cur == TOMBSTONE),
                    Err(seen) => cur = seen,
                }
            }
        }
        Err(IndexFull)
    }

    /// Finds the slot holding `uuid`; `matches(slot)` confirms a fingerprint hit against
    /// the slot's own UUID and liveness.
    pub fn find(&self, uuid: &[u8; 16], matches: impl Fn(u32) -> bool) -> Option<u32> {
        let h = hash(uuid);
        // SYNC POINT: pairs with the AcqRel `fetch_max` of `max_probe` in `insert`.
        let bound = (self.max_probe.load(Ordering::Acquire) + 1).min(self.entries.len() as u64);
        for i in 0..bound {
            // SYNC POINT: pairs with the entry's publishing compare-and-set in `insert`.
            let e = self.entries[((h.wrapping_add(i)) & self.mask()) as usize].load(Ordering::Acquire);
            if e == EMPTY {
                return None;
            }
            let e = Entry::from_raw(e);
            if e.raw() != TOMBSTONE && e.fingerprint_matches(h) {
                let slot = e.slot() as u32;
                if matches(slot) {
                    return Some(slot);
                }
            }
        }
        None
    }

    /// Turns the entry `uuid → slot` into a tombstone. Returns whether it was found.
    pub fn remove(&self, uuid: &[u8; 16], slot: u32) -> bool {
        let h = hash(uuid);
        let target = Entry::new(h, slot).raw();
        // SYNC POINT: pairs with the AcqRel `fetch_max` of `max_probe` in `insert`.
        let bound = (self.max_probe.load(Ordering::Acquire) + 1).min(self.entries.len() as u64);
        for i in 0..bound {
            let e = &self.entries[((h.wrapping_add(i)) & self.mask()) as usize];
            // SYNC POINT: pairs with the entry's publishing compare-and-set in `insert`.
            let cur = e.load(Ordering::Acquire);
            if cur == EMPTY {
                return false;
            }
            if cur == target {
                return e.compare_exchange(cur, TOMBSTONE, Ordering::AcqRel, Ordering::Relaxed).is_ok();
            }
        }
        false
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn insert_find_remove_and_reuse_tombstones() {
        let words: Vec<AtomicU64> = (0..8).map(|_| AtomicU64::new(0)).collect();
        let max_probe = AtomicU64::new(0);
        let idx = IdIndex { entries: &words, max_probe: &max_probe };
        let ids: Vec<[u8; 16]> = (0u8..6).map(|i| [i; 16]).collect();
        for (slot, id) in ids.iter().enumerate() {
            assert_eq!(idx.insert(id, slot as u32), Ok(false));
        }
        for (slot, id) in ids.iter().enumerate() {
            assert_eq!(idx.find(id, |s| s == slot as u32), Some(slot as u32));
        }
        assert_eq!(idx.find(&[9; 16], |_| true), None);
        assert!(idx.remove(&ids[2], 2));
        assert!(!idx.remove(&ids[2], 2));
        assert_eq!(idx.find(&ids[2], |_| true), None);
        // Everything past the tombstone is still reachable.
        for (slot, id) in ids.iter().enumerate().filter(|(s, _)| *s != 2) {
            assert_eq!(idx.find(id, |s| s == slot as u32), Some(slot as u32));
        }
        let reused = idx.insert(&[7; 16], 7).unwrap() || idx.insert(&[8; 16], 8).unwrap();
        assert!(reused || idx.insert(&[10; 16], 9).is_ok());
    }

    #[test]
    fn misses_stay_short_after_churn_fills_the_table_with_tombstones() {
        let words: Vec<AtomicU64> = (0..1024).map(|_| AtomicU64::new(0)).collect();
        let max_probe = AtomicU64::new(0);
        let idx = IdIndex { entries: &words, max_probe: &max_probe };
        let id = |i: u32| {
            let mut u = [0u8; 16];
            u[..4].copy_from_slice(&i.to_le_bytes());
            u
        };
        // 200 live at a time, 50,000 inserts and removes in all.
        for i in 0..50_000u32 {
            idx.insert(&id(i), i % 512).unwrap();
            if i >= 200 {
                assert!(idx.remove(&id(i - 200), (i - 200) % 512));
            }
        }
        assert!(words.iter().all(|w| w.load(Ordering::Relaxed) != EMPTY), "churn has left no empty entry");
        assert!(max_probe.load(Ordering::Relaxed) < 64, "displacement {}", max_probe.load(Ordering::Relaxed));
        for i in 49_800..50_000u32 {
            assert_eq!(idx.find(&id(i), |s| s == i % 512), Some(i % 512));
        }
        assert_eq!(idx.find(&id(7), |_| true), None);
    }

    #[test]
    fn a_full_table_is_an_error_not_a_hang() {
        let words: Vec<AtomicU64> = (0..2).map(|_| AtomicU64::new(0)).collect();
        let max_probe = AtomicU64::new(0);
        let idx = IdIndex { entries: &words, max_probe: &max_probe };
        idx.insert(&[1; 16], 0).unwrap();
        idx.insert(&[2; 16], 1).unwrap();
        assert_eq!(idx.insert(&[3; 16], 2), Err(IndexFull));
        assert_eq!(idx.find(&[3; 16], |_| true), None);
    }
}
