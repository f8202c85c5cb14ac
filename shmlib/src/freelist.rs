//! A lock-free free list (Treiber stack) of slot indices with an ABA tag in its head.
//!
//! The head word packs `tag << 32 | (index + 1)`; 0 in the low half means empty. Every
//! successful push or pop increments the tag, so a pop that read `head = (t, i)` and
//! `next(i) = j` cannot succeed after `i` was popped, reused and pushed back (the head is
//! then `(t + 2, i)`): the classic ABA hazard. The tag is 32 bits, so it would take 2³²
//! operations inside one pop's window to fool it.
//!
//! Links live in each slot's `next_free` word (index + 1, 0 at the end). A pop reads the
//! link of a slot another process may have just popped; the value may then be stale, but
//! the head's compare-and-set fails and the pop retries. Retries are bounded; running out
//! is reported as contention rather than looping forever.

use crate::sync::{AtomicU64, Ordering};

/// Attempts before a push or pop reports contention.
pub(crate) const ATTEMPTS: u32 = 1 << 20;

/// Why a free-list operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeListError {
    /// The head or a link named a slot outside the pool: the segment is corrupt.
    Corrupt,
    /// Other processes kept winning the compare-and-set.
    Contended,
}

/// A free list's head word, `tag << 32 | (index + 1)`: the one place it is packed and
/// unpacked. The low half ("top") is the first free slot's index + 1, 0 when the list is
/// empty; the tag counts pushes and pops (ABA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FreeHead(u64);

impl FreeHead {
    /// Packs an ABA tag and a top (index + 1, 0 for an empty list; its low 32 bits).
    pub(crate) const fn new(tag: u32, top: u64) -> FreeHead {
        FreeHead(((tag as u64) << 32) | (top & 0xffff_ffff))
    }

    /// The word as loaded from the header.
    pub(crate) const fn from_raw(word: u64) -> FreeHead {
        FreeHead(word)
    }

    /// The word to store.
    pub(crate) const fn raw(self) -> u64 {
        self.0
    }

    /// The ABA tag.
    pub(crate) const fn tag(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The first free slot's index + 1, 0 when the list is empty (a link value).
    pub(crate) const fn top(self) -> u64 {
        self.0 & 0xffff_ffff
    }

    /// The head after one more push or pop, with `top` on top.
    const fn next(self, top: u64) -> FreeHead {
        FreeHead::new(self.tag().wrapping_add(1), top)
    }
}

#[cfg(all(test, not(loom)))]
fn pack(tag: u32, index_plus_one: u64) -> u64 {
    FreeHead::new(tag, index_plus_one).raw()
}

/// Pops a free slot index, `Ok(None)` when the list is empty. `link(i)` gives slot `i`'s
/// link word, or `None` when `i` is out of range.
pub fn pop<'a>(head: &AtomicU64, link: impl Fn(u32) -> Option<&'a AtomicU64>) -> Result<Option<u32>, FreeListError> {
    for _ in 0..ATTEMPTS {
        // SYNC POINT: pairs with the Release compare-and-set in `push` (and the Release
        // store in `init`): the top slot's link word, written before it was pushed, is
        // visible.
        let h = head.load(Ordering::Acquire);
        let top = FreeHead::from_raw(h).top();
        if top == 0 {
            return Ok(None);
        }
        let index = (top - 1) as u32;
        let next = link(index).ok_or(FreeListError::Corrupt)?.load(Ordering::Relaxed);
        // A link is index + 1 of a slot in range, or 0: anything else is damage, refused
        // before it becomes the head.
        if next > u32::MAX as u64 || (next != 0 && link((next - 1) as u32).is_none()) {
            return Err(FreeListError::Corrupt);
        }
        let new = FreeHead::from_raw(h).next(next).raw();
        // SYNC POINT: Release pairs with the Acquire head load of the next `pop` (and the
        // Acquire failure load with `push`'s Release), so ownership of `index` passes on.
        if head.compare_exchange_weak(h, new, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            return Ok(Some(index));
        }
    }
    Err(FreeListError::Contended)
}

/// Pushes slot `index`, whose link word is `link`.
pub fn push(head: &AtomicU64, index: u32, link: &AtomicU64) -> Result<(), FreeListError> {
    for _ in 0..ATTEMPTS {
        let h = head.load(Ordering::Relaxed);
        link.store(FreeHead::from_raw(h).top(), Ordering::Relaxed);
        let new = FreeHead::from_raw(h).next(index as u64 + 1).raw();
        // SYNC POINT: pairs with the Acquire head load in `pop`: the link stored above (and
        // whatever the pusher wrote to the slot) is visible to the popper.
        if head.compare_exchange_weak(h, new, Ordering::Release, Ordering::Relaxed).is_ok() {
            return Ok(());
        }
    }
    Err(FreeListError::Contended)
}

/// Builds a list holding `indices` in order (the first is popped first). Call only
/// while no other process can see the list (segment initialisation).
pub fn init<'a>(
    head: &AtomicU64,
    indices: impl DoubleEndedIterator<Item = u32>,
    link: impl Fn(u32) -> Option<&'a AtomicU64>,
) -> Result<(), FreeListError> {
    let mut top = 0u64;
    for i in indices.rev() {
        link(i).ok_or(FreeListError::Corrupt)?.store(top, Ordering::Relaxed);
        top = i as u64 + 1;
    }
    // SYNC POINT: pairs with the Acquire head load in `pop`: the links are visible.
    head.store(FreeHead::new(0, top).raw(), Ordering::Release);
    Ok(())
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn pops_in_order_then_empty_and_push_reuses() {
        let head = AtomicU64::new(0);
        let links: Vec<AtomicU64> = (0..4).map(|_| AtomicU64::new(0)).collect();
        let link = |i: u32| links.get(i as usize);
        init(&head, 1..4, link).unwrap();
        assert_eq!(pop(&head, link), Ok(Some(1)));
        assert_eq!(pop(&head, link), Ok(Some(2)));
        push(&head, 1, &links[1]).unwrap();
        assert_eq!(pop(&head, link), Ok(Some(1)));
        assert_eq!(pop(&head, link), Ok(Some(3)));
        assert_eq!(pop(&head, link), Ok(None));
    }

    #[test]
    fn a_link_out_of_range_is_corruption() {
        let head = AtomicU64::new(pack(0, 10));
        let links: Vec<AtomicU64> = (0..4).map(|_| AtomicU64::new(0)).collect();
        assert_eq!(pop(&head, |i| links.get(i as usize)), Err(FreeListError::Corrupt));
    }

    #[test]
    fn a_next_link_out_of_range_is_refused_before_it_becomes_the_head() {
        let head = AtomicU64::new(pack(0, 1));
        let links: Vec<AtomicU64> = (0..4).map(|_| AtomicU64::new(0)).collect();
        links[0].store(99, Ordering::Relaxed);
        assert_eq!(pop(&head, |i| links.get(i as usize)), Err(FreeListError::Corrupt));
        assert_eq!(head.load(Ordering::Relaxed), pack(0, 1), "the head is left as it was");
    }
}
