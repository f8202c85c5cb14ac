//! Test support (unit tests only): private segments that remove themselves.

use crate::{Capacities, Segment};
use std::sync::atomic::{AtomicU32, Ordering};

/// A segment with a unique name, unlinked when dropped (also on panic).
pub(crate) struct TempSegment {
    pub(crate) seg: crate::Daemon,
}

impl std::ops::Deref for TempSegment {
    type Target = crate::Daemon;
    fn deref(&self) -> &crate::Daemon {
        &self.seg
    }
}

impl Drop for TempSegment {
    fn drop(&mut self) {
        let _ = Segment::unlink(self.seg.name());
    }
}

/// Creates a private segment named after `tag`, this process and a counter.
pub(crate) fn temp_segment(tag: &str, caps: &Capacities) -> TempSegment {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!("wn-unit-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let _ = Segment::unlink(&name);
    TempSegment { seg: crate::Daemon::create(&name, caps, 0o600).expect("create a test segment") }
}
