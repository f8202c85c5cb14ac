//! A node slot's scan summary word: the fields scans filter on (`claim_next`, queries,
//! the dependency sweeps, the reaper), packed in one word beside the slot's control
//! words and rewritten with every record write, so a scan reads one word per slot and
//! copies a record only for candidates. [`Summary`] is the one place the word is packed
//! and unpacked.

use crate::layout::NodeRecord;

/// `kind | status << 8 | priority << 16 | blocker_count << 24 | claim_agent << 32 |
/// assignee_count << 48`, as
/// documented at [`NodeSlotHeader::summary`](crate::layout::NodeSlotHeader::summary).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Summary(u64);

impl Summary {
    const STATUS_SHIFT: u32 = 8;
    const PRIORITY_SHIFT: u32 = 16;
    const BLOCKERS_SHIFT: u32 = 24;
    const CLAIM_SHIFT: u32 = 32;
    const ASSIGNEES_SHIFT: u32 = 48;

    /// The summary of `rec`.
    pub(crate) const fn of(rec: &NodeRecord) -> Summary {
        Summary(
            rec.kind as u64
                | (rec.status as u64) << Self::STATUS_SHIFT
                | (rec.priority as u64) << Self::PRIORITY_SHIFT
                | (rec.blocker_count as u64) << Self::BLOCKERS_SHIFT
                | (rec.claim_agent as u64) << Self::CLAIM_SHIFT
                | (rec.assignee_count as u64) << Self::ASSIGNEES_SHIFT,
        )
    }

    /// The word as loaded from a slot.
    pub(crate) const fn from_raw(word: u64) -> Summary {
        Summary(word)
    }

    /// The word to store.
    pub(crate) const fn raw(self) -> u64 {
        self.0
    }

    /// The record's kind code.
    pub(crate) const fn kind(self) -> u8 {
        self.0 as u8
    }

    /// The record's status code.
    pub(crate) const fn status(self) -> u8 {
        (self.0 >> Self::STATUS_SHIFT) as u8
    }

    /// The record's priority.
    pub(crate) const fn priority(self) -> u8 {
        (self.0 >> Self::PRIORITY_SHIFT) as u8
    }

    /// The record's blocker count.
    pub(crate) const fn blocker_count(self) -> u8 {
        (self.0 >> Self::BLOCKERS_SHIFT) as u8
    }

    /// The record's assignee count.
    pub(crate) const fn assignee_count(self) -> u8 {
        (self.0 >> Self::ASSIGNEES_SHIFT) as u8
    }

    /// The record's claim agent: agent slot + 1, 0 when no claim is recorded (live or
    /// lapsed: the summary carries no lease).
    pub(crate) const fn claim_agent(self) -> u16 {
        (self.0 >> Self::CLAIM_SHIFT) as u16
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn every_field_round_trips() {
        let mut rec: NodeRecord = bytemuck::Zeroable::zeroed();
        (rec.kind, rec.status, rec.priority, rec.blocker_count, rec.claim_agent, rec.assignee_count) =
            (7, 5, 200, 8, 0xfffe, 8);
        let s = Summary::from_raw(Summary::of(&rec).raw());
        assert_eq!(
            (s.kind(), s.status(), s.priority(), s.blocker_count(), s.claim_agent(), s.assignee_count()),
            (7, 5, 200, 8, 0xfffe, 8)
        );
    }
}
