//! The daemon's header guard: the fixed header the daemon validated when it created or
//! adopted the segment is kept here, and every second (from the housekeeping tick in
//! `serve`) the segment is compared with it: the fixed header words, the state word
//! (Ready while the daemon serves), the daemon's own identity, the clock (a word more than
//! `worknode`'s bound ahead of wall time is reset), the free-list heads and the usage
//! counters' plausibility. What can be repaired from the copy is repaired; every damage
//! is reported loudly on stderr (the library does the checking: `worknode::HeaderGuard`).

use worknode::{Daemon, HeaderGuard};

/// The guard's state between ticks.
pub struct Guard {
    inner: HeaderGuard,
}

impl Guard {
    /// Copies the header of `seg` as it is now (just validated by create or adopt).
    pub fn new(seg: &Daemon) -> Guard {
        Guard { inner: HeaderGuard::new(seg) }
    }

    /// Checks the segment against the copy, repairs what it can and reports each damage.
    pub fn check(&mut self, seg: &Daemon) {
        for d in self.inner.check(seg) {
            let what = if d.repaired { "repaired" } else { "NOT repaired" };
            eprintln!("worknoded: SEGMENT DAMAGE ({what}): {}: {}", d.class, d.detail);
        }
    }
}
