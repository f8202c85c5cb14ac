//! The producer side of durability: what an append waits for when the daemon journals.
//!
//! The daemon publishes a policy word and two cursors in the header:
//!
//! * `journal cursor` — every sequence below it has been written to the journal. A
//!   producer that claimed sequence `s` does not overwrite its slot until
//!   `s < journal cursor + capacity`: an event is never overwritten before it is
//!   journaled (the journal's reader is never lapped).
//! * `durable cursor` — every sequence below it is on disk (after the journal's fsync).
//!   Under the `always` policy an append returns only once the durable cursor has
//!   passed its sequence: one fsync, shared by every writer in that group commit.
//!
//! * `sequence reservation` — appends claim only sequences below it. The journal writes
//!   a reservation record and fsyncs it *before* it raises the word, so every sequence
//!   ever handed out is covered by a reservation on disk, and a daemon that rebuilds
//!   after a host restart continues above it: a sequence number is never given to two
//!   events, whatever the fsync policy lost.
//! * `heartbeat` — the journal stamps the wall clock into it every few milliseconds,
//!   with the staleness it allows (the batch interval). A change checks it first: fresh,
//!   the daemon is alive (one clock read, no syscall); stale, the daemon's owner tag
//!   decides (a `/proc` read). A dead daemon's segment refuses every change with
//!   [`PoolError::DaemonGone`] / [`RingError::DaemonGone`], so nothing is acknowledged
//!   that no journal will write — at most the staleness bound after the death.
//!
//! * `journal wake` — a futex word the journal parks on when the ring is idle. Bit 0
//!   says it is parked (or about to be); producers bump the word by 2 and make the wake
//!   syscall only when they see that bit, so while the journal is busy or polling (it
//!   looks at the ring for a moment after each commit) an append pays no syscall.
//!
//! A writer waiting for durability first watches the durable cursor (spinning, bounded
//! by [`DURABLE_SPIN`]), and parks on the durable futex only after that: a commit that
//! lands meanwhile costs neither side a futex call nor the writer a wake-up.
//!
//! Waits sleep on shared futexes, are bounded, and fail with a typed error if the
//! daemon (recorded in the header) has died. With durability off (no daemon journaling)
//! none of this runs: an append stays on the memory-speed path.

use crate::error::PoolError;
use crate::event::RingError;
use crate::layout::hdr;
use crate::segment::Segment;
use crate::sync::{AtomicU32, Ordering};
use crate::sys::{self, OwnerTag};
use std::time::{Duration, Instant};

/// Durability policies, as stored in the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// No journal: shared memory only.
    Off = 0,
    /// Journaled, never fsynced: what the OS has not written is at risk.
    Never = 1,
    /// Journaled, fsynced on a short interval: at most the interval is at risk.
    Batch = 2,
    /// Journaled and fsynced before an append returns.
    Always = 3,
}

impl Durability {
    fn from_word(w: u64) -> Durability {
        match w {
            1 => Durability::Never,
            2 => Durability::Batch,
            3 => Durability::Always,
            _ => Durability::Off,
        }
    }
}

/// How long a producer waits for the journal before reporting it.
pub const DURABILITY_WAIT: Duration = Duration::from_secs(10);

/// How long a writer under `always` watches the durable cursor before it parks: about
/// one commit (a write and an `fdatasync` on an SSD). A commit within it releases the
/// writer with no futex call on either side and no wake-up latency; a slower disk costs
/// the writer this much spinning before it sleeps as before.
pub const DURABLE_SPIN: Duration = Duration::from_micros(400);

/// What a writer watching the durable cursor adds to the durable waiters word (whose
/// low 32 bits count the writers parked on the durable futex).
const SPINNER: u64 = 1 << 32;
/// The parked writers in the durable waiters word.
const PARKED_MASK: u64 = SPINNER - 1;

/// Bit 0 of the journal's wake word: the journal is parked (or about to park) on it.
const JOURNAL_PARKED: u32 = 1;
/// What a producer adds to the wake word: bit 0 stays the journal's.
const JOURNAL_BUMP: u32 = 2;

/// The journal's heartbeat word: `stale_ms << 48 | wall_ms` — when the journal last ran
/// (Unix milliseconds, 48 bits last until the year 10889) and how many milliseconds
/// may pass before a writer stops trusting it and checks the daemon's process instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat(pub u64);

impl Heartbeat {
    const WALL_BITS: u32 = 48;

    /// A beat at `wall_ms` that stays fresh for `stale_ms` (at most 65,535).
    pub fn new(wall_ms: u64, stale_ms: u64) -> Heartbeat {
        let wall = wall_ms & ((1 << Self::WALL_BITS) - 1);
        Heartbeat(stale_ms.min(u16::MAX as u64) << Self::WALL_BITS | wall)
    }

    /// When the journal last ran, Unix milliseconds.
    pub fn wall_ms(self) -> u64 {
        self.0 & ((1 << Self::WALL_BITS) - 1)
    }

    /// How long the beat stays fresh, in milliseconds.
    pub fn stale_ms(self) -> u64 {
        self.0 >> Self::WALL_BITS
    }

    /// Whether the beat is still fresh at `now_ms`.
    pub fn fresh_at(self, now_ms: u64) -> bool {
        now_ms <= self.wall_ms().saturating_add(self.stale_ms())
    }
}

/// The journal's wake word (a futex): bit 0 says the journal is parked or about to
/// park; producers add 2. The journal sets the bit, then looks for work, then sleeps on
/// the value it set; a producer publishes its event, then bumps, and makes the wake
/// syscall only when the bump found the bit (loom model: `journal_wake_is_never_lost`).
pub struct JournalWake<'a>(pub &'a AtomicU32);

impl JournalWake<'_> {
    /// The journal, before it looks for work one last time and sleeps: sets the parked
    /// bit; returns the word to sleep on.
    pub fn prepare_park(&self) -> u32 {
        // SYNC POINT: this SeqCst RMW pairs with the producers' SeqCst bump in `bump`:
        // a bump after it sees the bit (and wakes, or changes the word so the sleep
        // returns at once); a bump before it came after its producer's publish, which
        // the journal's look after this then sees.
        self.0.fetch_or(JOURNAL_PARKED, Ordering::SeqCst) | JOURNAL_PARKED
    }

    /// The journal, awake again: producers' bumps after this skip the wake syscall.
    pub fn unpark(&self) {
        // SYNC POINT: pairs with the SeqCst bump in `bump`.
        self.0.fetch_and(!JOURNAL_PARKED, Ordering::SeqCst);
    }

    /// A producer, after publishing its event: records the work; returns whether the
    /// journal must be woken (it is parked or about to be).
    pub fn bump(&self) -> bool {
        // SYNC POINT: pairs with the SeqCst `fetch_or` in `prepare_park` (and the clear
        // in `unpark`).
        self.0.fetch_add(JOURNAL_BUMP, Ordering::SeqCst) & JOURNAL_PARKED != 0
    }
}

/// Milliseconds since this process first asked (from 1, so 0 still means "never"): a
/// process-local monotonic clock for the liveness memo.
fn monotonic_ms() -> u64 {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    u64::try_from(BASE.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1)
}

/// How long a look in `/proc` that found the journaling daemon alive stands for it
/// (see `Segment::daemon_gone_recently_checked`), in ms.
const DAEMON_SEEN_MS: u64 = 10;

impl Segment {
    fn futex_at(&self, offset: usize) -> &AtomicU32 {
        self.map.u32_at(offset).expect("invariant: header offsets lie inside a validated mapping")
    }

    /// The durability policy the daemon runs with.
    pub fn durability(&self) -> Durability {
        // SYNC POINT: pairs with the Release store of the policy in `set_durability`.
        Durability::from_word(self.hdr(hdr::DURABILITY).load(Ordering::Acquire))
    }

    /// Sets the policy and the cursors (the daemon, when it starts journaling at `next`),
    /// with a first heartbeat allowing `stale` and the first sequence reservation
    /// `reserved` (already on disk). With `Off` neither is checked.
    pub(crate) fn set_durability(&self, d: Durability, next: u64, reserved: u64, stale: Duration) {
        // SYNC POINT: pair with the Acquire loads in `journal_cursor`, `durable_cursor` and
        // `seq_reserved`.
        self.hdr(hdr::JOURNAL_CURSOR).store(next, Ordering::Release);
        self.hdr(hdr::DURABLE_CURSOR).store(next, Ordering::Release);
        self.hdr(hdr::SEQ_RESERVED).store(reserved, Ordering::Release);
        self.journal_beat(stale);
        // SYNC POINT: pairs with the Acquire load in `durability()`: a writer that sees
        // the policy sees the reservation and the first beat too.
        self.hdr(hdr::DURABILITY).store(d as u64, Ordering::Release);
    }

    /// The daemon's journal: says it is alive, fresh for `stale` from now.
    pub(crate) fn journal_beat(&self, stale: Duration) {
        let stale_ms = u64::try_from(stale.as_millis()).unwrap_or(u64::MAX);
        self.hdr(hdr::JOURNAL_HEARTBEAT).store(Heartbeat::new(crate::clock::unix_ms(), stale_ms).0, Ordering::Relaxed);
    }

    /// The journal's last heartbeat.
    pub fn journal_heartbeat(&self) -> Heartbeat {
        Heartbeat(self.hdr(hdr::JOURNAL_HEARTBEAT).load(Ordering::Relaxed))
    }

    /// The sequence reservation: appends claim only sequences below it.
    pub fn seq_reserved(&self) -> u64 {
        // SYNC POINT: pairs with the AcqRel `fetch_max` in `publish_reservation` (and the
        // Release store in `set_durability`).
        self.hdr(hdr::SEQ_RESERVED).load(Ordering::Acquire)
    }

    /// The daemon's journal: raises the reservation to `upto`, which it has written
    /// to disk and synced.
    pub(crate) fn publish_reservation(&self, upto: u64) {
        // SYNC POINT: pairs with the Acquire load in `seq_reserved` (waiting producers).
        self.hdr(hdr::SEQ_RESERVED).fetch_max(upto, Ordering::AcqRel);
    }

    /// Before any change: with a journal, refuse once the daemon that journals is gone,
    /// so nothing is acknowledged that no journal will write.
    pub(crate) fn require_journal_alive(&self) -> Result<(), PoolError> {
        self.require_journal_alive_at(crate::clock::unix_ms)
    }

    /// [`Segment::require_journal_alive`] with the time taken from `now_ms`, called
    /// only when a journal runs. An append passes its event's clock stamp: the HLC's
    /// wall part is never behind the wall clock, so a stale beat is never taken for a
    /// fresh one, and the append saves a clock read. (When the HLC runs ahead of the wall
    /// clock, the wall clock is asked before the daemon's process is.)
    pub(crate) fn require_journal_alive_at(&self, now_ms: impl FnOnce() -> u64) -> Result<(), PoolError> {
        if self.durability() == Durability::Off {
            return Ok(());
        }
        let beat = self.journal_heartbeat();
        if beat.fresh_at(now_ms()) || beat.fresh_at(crate::clock::unix_ms()) {
            return Ok(());
        }
        if self.daemon_gone_recently_checked() {
            return Err(PoolError::DaemonGone);
        }
        Ok(())
    }

    /// The journal cursor: every sequence below it is journaled.
    pub fn journal_cursor(&self) -> u64 {
        // SYNC POINT: pairs with the AcqRel `fetch_max` in `publish_journal_progress`.
        self.hdr(hdr::JOURNAL_CURSOR).load(Ordering::Acquire)
    }

    /// The durable cursor: every sequence below it is on disk.
    pub fn durable_cursor(&self) -> u64 {
        // SYNC POINT: pairs with the AcqRel `fetch_max` in `publish_journal_progress`.
        self.hdr(hdr::DURABLE_CURSOR).load(Ordering::Acquire)
    }

    /// The daemon's journal: publish progress and wake writers waiting for it.
    pub(crate) fn publish_journal_progress(&self, journaled: u64, durable: u64) {
        // SYNC POINT: pairs with the Acquire loads in `journal_cursor` and `durable_cursor`.
        self.hdr(hdr::JOURNAL_CURSOR).fetch_max(journaled, Ordering::AcqRel);
        self.hdr(hdr::DURABLE_CURSOR).fetch_max(durable, Ordering::AcqRel);
        // SYNC POINT: the bump and the waiter check (SeqCst) pair with `wait_durable`'s
        // SeqCst waiter increment and notify load: either it sees the new cursor or we
        // see it waiting and wake it.
        self.futex_at(hdr::DURABLE_NOTIFY).fetch_add(1, Ordering::SeqCst);
        if self.hdr(hdr::DURABLE_WAITERS).load(Ordering::SeqCst) & PARKED_MASK != 0 {
            sys::futex_wake(self.futex_at(hdr::DURABLE_NOTIFY), i32::MAX);
        }
    }

    /// The daemon's journal: counts one group-commit fsync that took `took`.
    pub(crate) fn record_journal_fsync(&self, took: Duration) {
        // Statistics for `wn metrics`, ordered by nothing; the two words may be seen a
        // moment apart (a mean off by one fsync), never torn.
        self.hdr(hdr::JOURNAL_FSYNC_NS).fetch_add(took.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
        self.hdr(hdr::JOURNAL_FSYNCS).fetch_add(1, Ordering::Relaxed);
    }

    /// The daemon's journal: sleep until a producer under `always` asks for a commit,
    /// or `timeout`. Returns at once if the event at the journal cursor is already
    /// published (it raced the decision to sleep).
    pub(crate) fn journal_sleep(&self, timeout: Duration) {
        let wake = JournalWake(self.futex_at(hdr::JOURNAL_WAKE));
        let v = wake.prepare_park();
        let cursor = self.journal_cursor();
        if !matches!(self.ring().peek(cursor), crate::ring::Peek::Pending) {
            wake.unpark();
            return;
        }
        // With a claimed but unpublished sequence ahead (a producer mid-append, or one
        // stopped there), nap briefly instead of spinning on it.
        let nap = if self.ring_tail() > cursor { timeout.min(Duration::from_micros(200)) } else { timeout };
        sys::futex_wait(wake.0, v, nap);
        wake.unpark();
    }

    /// A producer: tells the journal there is work, waking it only if it is parked.
    fn wake_journal(&self) {
        let wake = JournalWake(self.futex_at(hdr::JOURNAL_WAKE));
        if wake.bump() {
            sys::futex_wake(wake.0, 1);
        }
    }

    /// Asks the daemon for a snapshot; returns the request number to wait for.
    ///
    /// # Errors
    ///
    /// [`PoolError::ReadOnly`] on a read-only handle, [`PoolError::Broker`] on a brokered
    /// one (snapshots are the daemon's user's);
    /// [`PoolError::Denied`] when the handle's token lacks `admin`.
    pub fn request_snapshot(&self) -> Result<u64, crate::PoolError> {
        if self.is_brokered() {
            return Err(crate::PoolError::Broker(crate::BrokerFault::Unsupported));
        }
        if !self.map.writable() {
            return Err(crate::PoolError::ReadOnly);
        }
        self.permit(crate::token::Right::Admin, None)?;
        // SYNC POINT: pairs with the Acquire load in `snapshot_requests` (the daemon).
        Ok(self.hdr(hdr::SNAPSHOT_REQUESTS).fetch_add(1, Ordering::AcqRel) + 1)
    }

    /// Snapshot requests made so far.
    pub fn snapshot_requests(&self) -> u64 {
        // SYNC POINT: pairs with the AcqRel increment in `request_snapshot`.
        self.hdr(hdr::SNAPSHOT_REQUESTS).load(Ordering::Acquire)
    }

    /// Snapshot requests the daemon has served.
    pub fn snapshots_done(&self) -> u64 {
        // SYNC POINT: pairs with the AcqRel `fetch_max` in `set_snapshots_done`.
        self.hdr(hdr::SNAPSHOTS_DONE).load(Ordering::Acquire)
    }

    /// The daemon: records that requests up to `n` are served.
    pub(crate) fn set_snapshots_done(&self, n: u64) {
        // SYNC POINT: pairs with the Acquire load in `snapshots_done` (the requester).
        self.hdr(hdr::SNAPSHOTS_DONE).fetch_max(n, Ordering::AcqRel);
    }

    /// Whether a reader may stamp sequence `s` abandoned: with durability on, only once
    /// the slot's previous occupant (`s - capacity`) is journaled — abandoning writes the
    /// slot, and must never destroy an event the journal has not read. (The journal's own
    /// reader, waiting at its cursor, always may.)
    pub(crate) fn may_abandon(&self, s: u64, capacity: u64) -> bool {
        self.durability() == Durability::Off || s < self.journal_cursor() + capacity
    }

    /// Whether the daemon that journals is gone (asks `/proc`).
    fn daemon_gone(&self) -> bool {
        !OwnerTag(self.hdr(hdr::DAEMON_TAG).load(Ordering::Relaxed)).is_alive()
    }

    /// [`Segment::daemon_gone`] for the check before every change. Asking `/proc` costs a
    /// file open and read (~5 µs); a look that found the daemon alive stands for
    /// [`DAEMON_SEEN_MS`] (or the beat's staleness window, if shorter), as a fresh beat
    /// does, so a daemon whose beat thread is starved on a loaded machine costs each
    /// writer one look per window, not one per change. The waits for the journal keep
    /// asking `/proc` directly: they are slow already, and must see a death at once.
    fn daemon_gone_recently_checked(&self) -> bool {
        // Monotonic: a wall clock stepped back must not stretch the memo.
        let now = monotonic_ms();
        let window = self.journal_heartbeat().stale_ms().min(DAEMON_SEEN_MS);
        // Process-local memo: Relaxed, nothing else is published through it. 0: never
        // looked (the process clock starts near 0, so it must not read as "just now").
        let seen = self.daemon_seen_ms.load(Ordering::Relaxed);
        if seen != 0 && now < seen.saturating_add(window) {
            return false;
        }
        let gone = self.daemon_gone();
        if !gone {
            self.daemon_seen_ms.store(now, Ordering::Relaxed);
        }
        gone
    }

    /// Whether sequence `s` may be written now: the journal cannot be lapped by it, and
    /// a reservation on disk covers it.
    fn has_room(&self, s: u64, capacity: u64) -> bool {
        s < self.journal_cursor() + capacity && s < self.seq_reserved()
    }

    /// Before writing sequence `s`: wait until [`Segment::has_room`] holds.
    pub(crate) fn wait_journal_room(&self, s: u64, capacity: u64) -> Result<(), RingError> {
        if self.durability() == Durability::Off || self.has_room(s, capacity) {
            return Ok(());
        }
        let deadline = Instant::now() + DURABILITY_WAIT;
        // The journal reserves further when a producer is close to the reservation:
        // wake it as `always` writers do.
        self.wake_journal();
        while !self.has_room(s, capacity) {
            if self.durability() == Durability::Off {
                return Ok(());
            }
            if self.daemon_gone() {
                return Err(RingError::DaemonGone);
            }
            if Instant::now() >= deadline {
                return Err(RingError::JournalStalled { seq: s, journaled: self.journal_cursor() });
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    }

    /// After publishing sequence `s`: under `always`, wait until it is on disk.
    pub(crate) fn wait_durable(&self, s: u64) -> Result<(), RingError> {
        if self.durability() != Durability::Always {
            return Ok(());
        }
        self.wake_journal();
        let start = Instant::now();
        let waiters = self.hdr(hdr::DURABLE_WAITERS);
        // Watch the cursor for about one commit before parking (bounded by the clock,
        // read every 64 looks) — only when no other writer waits: several spinners would
        // take the CPU from each other and from the journal (on a small machine they
        // share it), so in a group commit all but the first park at once.
        // SYNC POINT: pairs with the SeqCst registrations here and in
        // `park_until_durable` (and the waiter check in `publish_journal_progress`,
        // which looks at the parked count only).
        if waiters.fetch_add(SPINNER, Ordering::SeqCst) == 0 {
            let mut looks = 0u32;
            let mut durable = true;
            while self.durable_cursor() <= s {
                looks = looks.wrapping_add(1);
                if looks.is_multiple_of(64) && start.elapsed() >= DURABLE_SPIN {
                    durable = false;
                    break;
                }
                std::hint::spin_loop();
            }
            waiters.fetch_sub(SPINNER, Ordering::SeqCst);
            if durable {
                return Ok(());
            }
        } else {
            waiters.fetch_sub(SPINNER, Ordering::SeqCst);
        }
        self.park_until_durable(s, start + DURABILITY_WAIT)
    }

    /// Parks on the durable futex until sequence `s` is on disk, `deadline`, or the
    /// daemon's death.
    fn park_until_durable(&self, s: u64, deadline: Instant) -> Result<(), RingError> {
        let notify = self.futex_at(hdr::DURABLE_NOTIFY);
        let waiters = self.hdr(hdr::DURABLE_WAITERS);
        let mut result = Ok(());
        // SYNC POINT: pairs with the SeqCst notify bump and waiter check in
        // `publish_journal_progress`.
        waiters.fetch_add(1, Ordering::SeqCst);
        loop {
            let v = notify.load(Ordering::SeqCst);
            if self.durable_cursor() > s {
                break;
            }
            let now = Instant::now();
            if now >= deadline || self.daemon_gone() {
                result = Err(RingError::NotDurable { seq: s, durable: self.durable_cursor() });
                break;
            }
            sys::futex_wait(notify, v, (deadline - now).min(Duration::from_millis(50)));
        }
        // SYNC POINT: ends the registration made above (pairs with the waiter check in
        // `publish_journal_progress`, which may then skip the wake).
        waiters.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::testing::temp_segment;
    use crate::{Capacities, EventKind, NewEvent, NewNode, NodeKind};

    #[test]
    fn a_heartbeat_packs_time_and_staleness() {
        let b = Heartbeat::new(1_700_000_000_123, 10);
        assert_eq!((b.wall_ms(), b.stale_ms()), (1_700_000_000_123, 10));
        assert!(b.fresh_at(1_700_000_000_133) && !b.fresh_at(1_700_000_000_134));
        assert_eq!(Heartbeat::new(5, u64::MAX).stale_ms(), u16::MAX as u64);
    }

    #[test]
    fn a_dead_daemon_with_a_stale_beat_refuses_every_change_and_a_live_one_does_not() {
        let caps = Capacities { nodes: 16, events: 16, agents: 2, blob_chunks: 1, sets: 1, ..Capacities::default() };
        let seg = temp_segment("durability-gone", &caps);
        seg.set_durability(Durability::Batch, 0, u64::MAX, Duration::from_millis(10));
        // Fresh beat: changes go on.
        seg.add(seg.root(), &NewNode::new(NodeKind::Task, "a")).unwrap();
        // A stale beat but a live daemon (this process created the segment): still fine.
        seg.hdr(hdr::JOURNAL_HEARTBEAT).store(Heartbeat::new(1, 10).0, Ordering::Relaxed);
        seg.add(seg.root(), &NewNode::new(NodeKind::Task, "b")).unwrap();
        // The daemon's tag names a process that no longer exists.
        let me = OwnerTag::current();
        seg.hdr(hdr::DAEMON_TAG).store(OwnerTag::new(me.pid(), me.start_ticks() + 1).0, Ordering::Relaxed);
        // The look that let "b" through stands for one window; past it, the death is seen.
        std::thread::sleep(Duration::from_millis(DAEMON_SEEN_MS + 5));
        let before = seg.info().nodes_created;
        assert_eq!(seg.add(seg.root(), &NewNode::new(NodeKind::Task, "c")).err(), Some(PoolError::DaemonGone));
        assert_eq!(seg.append(&NewEvent::new(EventKind::USER)).err(), Some(RingError::DaemonGone));
        assert_eq!(seg.info().nodes_created, before, "nothing was made");
        // A fresh beat again (a new daemon journals): accepted.
        seg.journal_beat(Duration::from_millis(10));
        seg.append(&NewEvent::new(EventKind::USER)).unwrap();
    }

    #[test]
    fn appends_wait_at_the_sequence_reservation_until_it_is_raised() {
        let caps = Capacities { nodes: 16, events: 16, agents: 2, blob_chunks: 1, sets: 1, ..Capacities::default() };
        let seg = temp_segment("durability-reserve", &caps);
        seg.set_durability(Durability::Never, 0, 3, Duration::from_secs(3600));
        seg.publish_journal_progress(u64::MAX / 2, u64::MAX / 2);
        for s in 0..3 {
            assert_eq!(seg.append(&NewEvent::new(EventKind::USER)).unwrap(), s);
        }
        // Sequence 3 is not reserved yet: the append waits for the journal to reserve
        // it, and goes through once it does.
        std::thread::scope(|scope| {
            let waiting = scope.spawn(|| seg.append(&NewEvent::new(EventKind::USER)));
            std::thread::sleep(Duration::from_millis(50));
            assert!(!waiting.is_finished(), "an append above the reservation did not wait");
            seg.publish_reservation(100);
            assert_eq!(waiting.join().unwrap(), Ok(3));
        });
        // With the daemon gone, an append above the reservation is refused at once.
        seg.hdr(hdr::SEQ_RESERVED).store(5, Ordering::Relaxed);
        seg.append(&NewEvent::new(EventKind::USER)).unwrap();
        let me = OwnerTag::current();
        seg.hdr(hdr::DAEMON_TAG).store(OwnerTag::new(me.pid(), me.start_ticks() + 1).0, Ordering::Relaxed);
        assert_eq!(seg.append(&NewEvent::new(EventKind::USER)).err(), Some(RingError::DaemonGone));
    }
}
