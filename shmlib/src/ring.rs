//! The event ring: a lock-free, many-producer, broadcast ring of fixed-size events with
//! independent readers, blocking waits on a shared futex, and repair of slots left by
//! producers that died mid-append.
//!
//! # Layout
//!
//! A power-of-two array of [`EventSlot`](crate::layout::EventSlot)s (192 bytes: a stamp
//! word, an owner word and a 176-byte event) plus, in the header, a `tail` counter on its
//! own cache line and a notify line (futex word, waiter count, counters).
//!
//! # The stamp
//!
//! `stamp = (seq + 1) << 2 | state`, with state `WRITING`, `PUBLISHED` or `ABANDONED`;
//! 0 means the slot was never written. Sequence `s` lives in slot `s & mask`, so a stamp
//! tells a reader expecting `s` exactly where the slot stands:
//!
//! | stamp                        | meaning for a reader at `s`                          |
//! |------------------------------|------------------------------------------------------|
//! | 0, or any seq `< s`          | `s` not published yet                                 |
//! | `s`, `WRITING`               | a producer is writing `s`                             |
//! | `s`, `PUBLISHED`             | read it, then re-check the stamp (lapped while copying?) |
//! | `s`, `ABANDONED`             | its producer died (or stalled past the bound): skip, count |
//! | any seq `> s`                | the reader was lapped: `Lagged { missed }`            |
//!
//! # Appending
//!
//! 1. `s = tail.fetch_add(1)`.
//! 2. Take the slot's owner lock (`ownerlock`: CAS 0 → our pid+start-time tag). It
//!    serialises the rare case of two producers a whole lap apart, and it names the
//!    writer, so that a dead one is recognised and only a dead one is overruled.
//! 3. If the stamp already shows a sequence `≥ s`, a reader declared `s` abandoned (we
//!    stalled past the bound) or a later lap took the slot: release and retry with a new
//!    sequence; the caller's event is never lost, only renumbered.
//! 4. Store `WRITING(s)`, fence (Release), write the event with relaxed word stores.
//! 5. Publish by CAS `WRITING(s) → PUBLISHED(s)` (Release): a writer that was declared
//!    dead cannot publish late. Release the lock.
//! 6. Bump the futex word; make the wake syscall only if the waiter count is non-zero.
//!
//! A batch ([`Segment::append_batch`]) takes one clock range for its events
//! ([`crate::clock::tick_n`]), claims up to [`BATCH_CHUNK`] consecutive sequences with
//! one `fetch_add(n)`, runs steps 2–5 for each, and step 6 once. Should one of its
//! events be overtaken (step 3), the batch's later claims are stamped `ABANDONED` by the
//! producer itself (it holds them; nobody else would ever write them) and the rest of the
//! batch is claimed anew, so its events stay in order.
//!
//! # Reading
//!
//! Each reader keeps its own cursor and never writes to the ring in the common case, so
//! readers never slow producers down. The copy is checked as in a seqlock: stamp
//! (Acquire), copy, fence (Acquire), stamp again; a change means the slot was reused by
//! a later lap while we copied, reported as `Lagged`, never as a wrong event.
//!
//! # A producer that dies mid-append
//!
//! A reader (read-write) that waits on an in-flight `s` longer than its abandon bound
//! (50 ms by default) looks at the slot's owner: no owner (the producer died between
//! `fetch_add` and locking, or stalls there), or an owner whose process is gone, means
//! nobody will ever publish `s`. It takes the lock (from the dead owner if need be),
//! re-checks, stamps `ABANDONED(s)`, and releases. A live owner is waited for.

use crate::event::{Event, Filter, NewEvent, RingError};
use crate::layout::{hdr, EventRecord, Region};
use crate::ownerlock::{self, Acquired};
use crate::segment::Segment;
use crate::sync::{fence, load_words, store_words, AtomicU32, AtomicU64, Ordering};
use crate::sys::{self, OwnerTag};
use bytemuck::Zeroable;
use std::mem::size_of;
use std::time::{Duration, Instant};

/// Words in one event slot: the stamp, the owner, then the event.
pub const SLOT_WORDS: usize = size_of::<crate::layout::EventSlot>() / 8;
const EVENT_WORDS: usize = size_of::<EventRecord>() / 8;
const STAMP: usize = 0;
const OWNER: usize = 1;
const EVENT: usize = 2;

const WRITING: u64 = 0;
const PUBLISHED: u64 = 1;
const ABANDONED: u64 = 2;

/// Events [`Segment::append_batch`] claims with one `fetch_add` (and builds on the stack):
/// a larger batch is appended this many at a time.
pub const BATCH_CHUNK: usize = 32;
/// Times an append takes a new sequence after being overtaken.
const APPEND_ATTEMPTS: u32 = 16;
/// Default time a reader waits on an in-flight sequence before checking its producer.
pub const DEFAULT_ABANDON_AFTER: Duration = Duration::from_millis(50);
/// How long `Wait::SpinThenPark` spins before it parks.
pub const SPIN_WINDOW: Duration = Duration::from_micros(50);
/// A read-only reader cannot register as a waiter, so it re-checks at least this often.
const READ_ONLY_PARK: Duration = Duration::from_millis(2);

/// A slot's publication stamp, `(seq + 1) << 2 | state` (0: never written): the one
/// place it is packed and unpacked. See the module doc for what each value means to a
/// reader. Public for inspectors: [`crate::Inspector::ring_slot_controls`] hands it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp(u64);

impl Stamp {
    /// Bits of the state (`WRITING`, `PUBLISHED`, `ABANDONED`) below the sequence.
    const STATE_BITS: u32 = 2;

    /// Sequence `seq` in `state`.
    const fn new(seq: u64, state: u64) -> Stamp {
        Stamp(((seq + 1) << Self::STATE_BITS) | (state & ((1 << Self::STATE_BITS) - 1)))
    }

    /// The word as loaded from a slot.
    pub const fn from_raw(word: u64) -> Stamp {
        Stamp(word)
    }

    /// The word to store.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The sequence stamped, `None` for a slot never written.
    pub const fn seq(self) -> Option<u64> {
        (self.0 >> Self::STATE_BITS).checked_sub(1)
    }

    /// The state stamped (meaningless for a slot never written).
    const fn state(self) -> u64 {
        self.0 & ((1 << Self::STATE_BITS) - 1)
    }

    /// Whether a producer is (or was, when it died) writing the sequence stamped.
    pub const fn is_writing(self) -> bool {
        self.0 != 0 && self.state() == WRITING
    }
}

fn stamp(seq: u64, state: u64) -> u64 {
    Stamp::new(seq, state).raw()
}

fn stamp_seq(st: u64) -> Option<u64> {
    Stamp::from_raw(st).seq()
}

fn stamp_state(st: u64) -> u64 {
    Stamp::from_raw(st).state()
}

/// Read-only decoding for inspectors: why a slot's stamp cannot be a stamp this ring
/// writes, given the ring's `tail` and the slot's `index` (`mask` = capacity - 1), or
/// `None` when it is plausible (0, never written, included).
pub(crate) fn implausible_stamp(st: u64, index: u64, tail: u64, mask: u64) -> Option<String> {
    if st == 0 {
        return None;
    }
    let state = stamp_state(st);
    if state != WRITING && state != PUBLISHED && state != ABANDONED {
        return Some("an unknown state".to_string());
    }
    let Some(seq) = stamp_seq(st) else { return Some("no sequence".to_string()) };
    if seq >= tail {
        return Some(format!("sequence {seq}, at or past the tail {tail}"));
    }
    if seq & mask != index {
        return Some(format!("sequence {seq}, which belongs in slot {}", seq & mask));
    }
    None
}

/// Read-only decoding for inspectors: whether a slot stamped `st` has not (yet)
/// published or abandoned sequence `expected`, the newest one below the tail that maps
/// to it: never written, an older lap, or `expected` still being written.
pub(crate) fn unpublished_stamp(st: Stamp, expected: u64) -> bool {
    match st.seq() {
        None => true,
        Some(seq) => seq < expected || (seq == expected && st.is_writing()),
    }
}

/// What a reader found in the slot of the sequence it expects.
pub enum Peek {
    /// The event, consistently copied.
    Ready(EventRecord),
    /// Not published yet.
    Pending,
    /// Its producer died; skip it.
    Abandoned,
    /// The slot holds a later lap.
    Lapped,
}

/// Where a new reader starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// At the oldest event still retained in the ring.
    Oldest,
    /// After the newest event: only events appended from now on.
    Now,
    /// At this sequence number (clamped to what is retained, with a `Lagged` report).
    At(u64),
}

/// How [`Reader::next`] waits for an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Wait {
    /// Busy-poll: lowest latency, burns a core. Only when a core is reserved for it.
    Spin,
    /// Spin for [`SPIN_WINDOW`] (50 µs), then sleep on the futex (the default).
    #[default]
    SpinThenPark,
    /// Sleep on the futex at once: no CPU while idle, a wake-up syscall of latency.
    Park,
}

/// The ring's words, bounds-checked once.
pub struct RingView<'a> {
    tail: &'a AtomicU64,
    words: &'a [AtomicU64],
    mask: u64,
    /// Loom only: the event words `append` writes and `peek` copies (see
    /// [`RingView::with_event_words`]).
    #[cfg(loom)]
    event_words: usize,
    /// Loom only: `peek`s through this view that the re-check after the copy turned into
    /// `Lapped` (std, outside the model), so a model can assert it reached that case.
    #[cfg(loom)]
    lapped_while_copying: std::sync::atomic::AtomicU32,
}

impl<'a> RingView<'a> {
    /// Builds a view over `words` (capacity × slot words; capacity a power of two).
    pub fn new(tail: &'a AtomicU64, words: &'a [AtomicU64]) -> Self {
        let cap = (words.len() / SLOT_WORDS) as u64;
        debug_assert!(cap.is_power_of_two());
        RingView {
            tail,
            words,
            mask: cap - 1,
            #[cfg(loom)]
            event_words: EVENT_WORDS,
            #[cfg(loom)]
            lapped_while_copying: Default::default(),
        }
    }

    /// Loom only: `append` writes and `peek` copies just the first `n` event words (the
    /// rest read as zero). Loom explores, independently for every word, each store a
    /// racing relaxed load may return, so a copy overlapping a whole overwrite has 2^22
    /// executions; a model racing a copy with an overwrite narrows the event instead.
    #[cfg(loom)]
    pub fn with_event_words(mut self, n: usize) -> Self {
        assert!(n <= EVENT_WORDS);
        self.event_words = n;
        self
    }

    /// Loom only: how many `peek`s through this view the re-check after the copy caught.
    #[cfg(loom)]
    pub fn lapped_while_copying(&self) -> u32 {
        self.lapped_while_copying.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The event words an append writes and a peek copies: all of them, except in some
    /// loom models.
    #[inline(always)]
    fn event_words(&self) -> usize {
        #[cfg(loom)]
        return self.event_words;
        #[cfg(not(loom))]
        EVENT_WORDS
    }

    fn capacity(&self) -> u64 {
        self.mask + 1
    }

    fn slot(&self, seq: u64) -> &'a [AtomicU64] {
        let i = (seq & self.mask) as usize * SLOT_WORDS;
        &self.words[i..i + SLOT_WORDS]
    }

    /// Appends `rec` (its `seq` is filled in) and returns its sequence number.
    pub fn append(
        &self,
        rec: &mut EventRecord,
        me: u64,
        wait: Duration,
        is_dead: impl Fn(u64) -> bool,
        room: impl Fn(u64) -> Result<(), RingError>,
    ) -> Result<u64, RingError> {
        for _ in 0..APPEND_ATTEMPTS {
            // SYNC POINT: pairs with the Acquire tail loads of readers (`Reader::lagged`,
            // `Reader::try_next`, `Segment::ring_tail`) and `restore`'s Release store.
            let s = self.tail.fetch_add(1, Ordering::AcqRel);
            crate::failpoint::hit("ring.after_claim");
            // Never overwrite an event the journal has not written yet.
            room(s)?;
            if self.write_slot(s, Some(rec), me, wait, &is_dead)? {
                return Ok(s);
            }
        }
        Err(RingError::Contended)
    }

    /// Appends `recs` (at most one ring's capacity of them, their `seq`s filled in) in
    /// order, under consecutive sequence numbers claimed with one `fetch_add`, and
    /// returns the last one. If an event is overtaken (module doc, step 3), the batch's
    /// later claims are stamped abandoned (readers skip them at once) and the rest of the
    /// batch is claimed anew, so the batch stays in order. On an error the events before
    /// the failing one are appended. `abandoned` is called for each claim stamped
    /// abandoned that way (the ring's abandoned counter).
    pub fn append_batch(
        &self,
        recs: &mut [EventRecord],
        me: u64,
        wait: Duration,
        is_dead: impl Fn(u64) -> bool,
        room: impl Fn(u64) -> Result<(), RingError>,
        abandoned: impl Fn(),
    ) -> Result<u64, RingError> {
        debug_assert!(!recs.is_empty() && recs.len() as u64 <= self.capacity());
        let mut rest = recs;
        for _ in 0..APPEND_ATTEMPTS {
            let n = rest.len() as u64;
            // SYNC POINT: pairs with the Acquire tail loads of readers, as in `append`.
            let first = self.tail.fetch_add(n, Ordering::AcqRel);
            crate::failpoint::hit("ring.after_claim");
            let mut written = 0;
            for rec in rest.iter_mut() {
                let s = first + written as u64;
                room(s)?;
                if !self.write_slot(s, Some(rec), me, wait, &is_dead)? {
                    break;
                }
                written += 1;
            }
            if written as u64 == n {
                return Ok(first + n - 1);
            }
            // `first + written` was overtaken; nobody but us will write the later claims.
            for s in first + written as u64 + 1..first + n {
                room(s)?;
                if self.write_slot(s, None, me, wait, &is_dead)? {
                    abandoned();
                }
            }
            rest = &mut rest[written..];
        }
        Err(RingError::Contended)
    }

    /// Writes sequence `s`, which this producer claimed, into its slot: `rec` published,
    /// or (`None`) the sequence stamped abandoned. Returns `false` if `s` was overtaken
    /// (module doc, step 3): the caller takes a new sequence. (For `None`: whether it
    /// stamped; a later lap may already have taken the slot.)
    fn write_slot(
        &self,
        s: u64,
        rec: Option<&mut EventRecord>,
        me: u64,
        wait: Duration,
        is_dead: &impl Fn(u64) -> bool,
    ) -> Result<bool, RingError> {
        let slot = self.slot(s);
        let got = ownerlock::acquire(&slot[OWNER], me, wait, is_dead)
            .map_err(|b| RingError::Busy { holder_pid: OwnerTag(b.holder).pid() })?;
        let mut st = slot[STAMP].load(Ordering::Relaxed);
        if let Acquired::FromDead(_) = got {
            // The dead holder was mid-write of an earlier lap: that event is gone.
            if Stamp::from_raw(st).is_writing() {
                if let Some(old) = stamp_seq(st) {
                    // SYNC POINT: pairs with the Acquire stamp loads in `peek` and
                    // `actionable`.
                    if slot[STAMP]
                        .compare_exchange(st, stamp(old, ABANDONED), Ordering::Release, Ordering::Relaxed)
                        .is_ok()
                    {
                        st = stamp(old, ABANDONED);
                    }
                }
            }
        }
        let Some(rec) = rec else {
            // Our own claim that will carry no event: skip it for readers, over the value
            // just checked (a later lap may have taken the slot; then there is nothing to do).
            // SYNC POINT: pairs with the Acquire stamp loads in `peek` and `actionable`.
            let stamped = stamp_seq(st).is_none_or(|x| x < s)
                && slot[STAMP].compare_exchange(st, stamp(s, ABANDONED), Ordering::Release, Ordering::Relaxed).is_ok();
            ownerlock::release(&slot[OWNER], me);
            return Ok(stamped);
        };
        // Stamp WRITING(s) only over the value just checked: if a reader declared `s`
        // abandoned (or a later lap took the slot) in between, the CAS fails and this
        // append is overtaken, never written over an abandonment.
        let overtaken = stamp_seq(st).is_some_and(|x| x >= s)
            || slot[STAMP].compare_exchange(st, stamp(s, WRITING), Ordering::Relaxed, Ordering::Relaxed).is_err();
        if overtaken {
            ownerlock::release(&slot[OWNER], me);
            return Ok(false);
        }
        // SYNC POINT: pairs with the Acquire fence in `peek` after its copy: a reader
        // that copied any word written below sees the stamp changed from the one it
        // checked, and rejects the copy.
        fence(Ordering::Release);
        rec.seq = s;
        let n = self.event_words();
        store_words(&slot[EVENT..EVENT + n], &bytemuck::cast_slice(std::slice::from_ref(rec))[..n]);
        crate::failpoint::hit("ring.before_publish");
        // SYNC POINT: pairs with the Acquire stamp loads in `peek` and `actionable`: a
        // reader that sees PUBLISHED(s) sees the whole event.
        let published = slot[STAMP]
            .compare_exchange(stamp(s, WRITING), stamp(s, PUBLISHED), Ordering::Release, Ordering::Relaxed)
            .is_ok();
        ownerlock::release(&slot[OWNER], me);
        Ok(published)
    }

    /// Writes `events` (the newest `capacity` of them) as published slots and sets the
    /// tail to `next_seq`. Only while nobody else uses the ring (restore).
    pub(crate) fn restore(&self, events: &[EventRecord], next_seq: u64) -> u64 {
        let keep = &events[events.len().saturating_sub(self.capacity() as usize)..];
        // Sequences in the retained window with no saved event read as abandoned, so a
        // reader starting at the oldest retained event does not wait on them.
        for seq in next_seq.saturating_sub(self.capacity())..next_seq {
            let slot = self.slot(seq);
            slot[OWNER].store(0, Ordering::Relaxed);
            slot[STAMP].store(stamp(seq, ABANDONED), Ordering::Relaxed);
        }
        for rec in keep.iter().filter(|r| r.seq < next_seq && r.seq + self.capacity() >= next_seq) {
            let slot = self.slot(rec.seq);
            store_words(&slot[EVENT..EVENT + EVENT_WORDS], bytemuck::cast_slice(std::slice::from_ref(rec)));
            slot[OWNER].store(0, Ordering::Relaxed);
            // SYNC POINT: pairs with the Acquire stamp load in `peek`.
            slot[STAMP].store(stamp(rec.seq, PUBLISHED), Ordering::Release);
        }
        // SYNC POINT: pairs with the Acquire tail loads of readers (see `append`).
        self.tail.store(next_seq, Ordering::Release);
        keep.len() as u64
    }

    /// Looks at sequence `s`.
    pub fn peek(&self, s: u64) -> Peek {
        let slot = self.slot(s);
        // SYNC POINT: pairs with the Release stamp writes in `append` (publish, and the
        // abandonment of a dead holder's write), `restore` and `abandon_if_dead`.
        let st = slot[STAMP].load(Ordering::Acquire);
        let Some(x) = stamp_seq(st) else { return Peek::Pending };
        if x < s {
            return Peek::Pending;
        }
        if x > s {
            return Peek::Lapped;
        }
        match stamp_state(st) {
            PUBLISHED => {
                let mut words = [0u64; EVENT_WORDS];
                let n = self.event_words();
                load_words(&slot[EVENT..EVENT + n], &mut words[..n]);
                // SYNC POINT: pairs with the Release fence in `append` after it stamps
                // WRITING: a word of a later lap's write makes the re-check below fail.
                fence(Ordering::Acquire);
                if slot[STAMP].load(Ordering::Relaxed) != st {
                    #[cfg(loom)]
                    self.lapped_while_copying.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Peek::Lapped;
                }
                Peek::Ready(bytemuck::cast(words))
            }
            ABANDONED => Peek::Abandoned,
            _ => Peek::Pending,
        }
    }

    /// Whether a reader at `s` has something to act on (an event, a skip or a lap).
    fn actionable(&self, s: u64) -> bool {
        // SYNC POINT: pairs with the Release stamp writes in `append`, `restore` and
        // `abandon_if_dead` (as in `peek`).
        let st = self.slot(s)[STAMP].load(Ordering::Acquire);
        match stamp_seq(st) {
            None => false,
            Some(x) => x > s || (x == s && stamp_state(st) != WRITING),
        }
    }

    /// Marks `s` abandoned if nobody live is writing it. Returns whether it did.
    pub fn abandon_if_dead(&self, s: u64, me: u64, is_dead: impl Fn(u64) -> bool) -> bool {
        let slot = self.slot(s);
        // SYNC POINT: this load and the Acquire compare-and-sets below pair with the
        // producer's Release in `ownerlock::release` (its stamp writes are visible).
        let owner = slot[OWNER].load(Ordering::Acquire);
        let took = if owner == 0 {
            slot[OWNER].compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok()
        } else if is_dead(owner) {
            slot[OWNER].compare_exchange(owner, me, Ordering::Acquire, Ordering::Relaxed).is_ok()
        } else {
            false
        };
        if !took {
            return false;
        }
        // Stamp ABANDONED(s) only over the value checked, so it never lands on a write
        // that began meanwhile (by a holder wrongly thought dead): bounded retries.
        let mut abandoned = false;
        for _ in 0..4 {
            let st = slot[STAMP].load(Ordering::Relaxed);
            let unpublished = match stamp_seq(st) {
                None => true,
                Some(x) => x < s || (x == s && stamp_state(st) == WRITING),
            };
            if !unpublished {
                break;
            }
            // SYNC POINT: pairs with the Acquire stamp loads in `peek` and `actionable`.
            if slot[STAMP].compare_exchange(st, stamp(s, ABANDONED), Ordering::Release, Ordering::Relaxed).is_ok() {
                abandoned = true;
                break;
            }
        }
        ownerlock::release(&slot[OWNER], me);
        abandoned
    }
}

impl Segment {
    pub(crate) fn ring(&self) -> RingView<'_> {
        let r = self.region(Region::Events);
        let words = self
            .map
            .words_at(r.offset as usize, r.capacity as usize * SLOT_WORDS)
            .expect("invariant: the events region lies inside a validated mapping");
        RingView::new(self.hdr(hdr::RING_TAIL), words)
    }

    fn notify_word(&self) -> &AtomicU32 {
        self.map.u32_at(hdr::RING_NOTIFY).expect("invariant: header offsets lie inside a validated mapping")
    }

    /// Appends an event and returns its sequence number. No lock, no syscall unless a
    /// reader is parked (then one `FUTEX_WAKE`).
    ///
    /// # Errors
    ///
    /// * [`RingError::ReadOnly`], [`RingError::Closing`], [`RingError::DaemonGone`]: the
    ///   segment takes no appends (a read-only mapping, the daemon shutting down, or the
    ///   daemon that journals it gone).
    /// * [`RingError::PayloadTooLarge`], [`RingError::TopicTooLong`]: the event does not
    ///   fit a ring slot.
    /// * [`RingError::Busy`]: a live producer holds the slot this append needs too long;
    ///   [`RingError::Contended`]: the ring overtook the append repeatedly.
    /// * [`RingError::JournalStalled`]: with durability on, the journal fell a whole ring
    ///   behind and the bounded wait for it ran out; nothing was appended.
    /// * [`RingError::NotDurable`]: under `--fsync always`, the event *was* appended (at
    ///   `seq`) but not confirmed on disk in time.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{EventKind, NewEvent, RingError, Start};
    /// # let name = format!("doc-append-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let mut reader = seg.reader(Start::Now);
    /// let seq = seg.append(&NewEvent::new(EventKind::USER).topic("build").payload(b"ok"))?;
    /// let ev = reader.try_next()?.expect("just appended");
    /// assert_eq!((ev.seq(), ev.topic(), ev.payload()), (seq, "build", &b"ok"[..]));
    ///
    /// let big = [0u8; 4096];
    /// let refused = seg.append(&NewEvent::new(EventKind::USER).payload(&big));
    /// assert!(matches!(refused, Err(RingError::PayloadTooLarge { .. })));
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn append(&self, ev: &NewEvent<'_>) -> Result<u64, RingError> {
        if let Some(link) = self.link() {
            let (topic, payload) = (ev.topic.to_string(), ev.payload.to_vec());
            return link.ask_count(crate::broker::Request::Append { kind: ev.kind, node: ev.node, topic, payload });
        }
        self.permit_uuid(crate::token::Right::Emit, ev.node.map(|(u, _)| u)).map_err(RingError::Denied)?;
        self.permit_event_kind(ev.kind).map_err(RingError::Denied)?;
        if self.grant().is_some() && ev.actor.is_some() && ev.actor != self.actor() {
            // Under a token, an event names the token's agent and nobody else.
            return Err(RingError::Denied(crate::Denied::OtherAgent));
        }
        self.append_unchecked(ev)
    }

    /// [`Segment::append`] without the token check: the events of changes that made
    /// their own.
    pub(crate) fn append_unchecked(&self, ev: &NewEvent<'_>) -> Result<u64, RingError> {
        if !self.map.writable() {
            return Err(RingError::ReadOnly);
        }
        self.append_stamped(ev, self.now())
    }

    /// [`Segment::append`] with a clock value already taken: a record change's event
    /// carries the stamp of the change itself (one clock tick, not two).
    pub(crate) fn append_stamped(&self, ev: &NewEvent<'_>, hlc: crate::Hlc) -> Result<u64, RingError> {
        if !self.map.writable() {
            return Err(RingError::ReadOnly);
        }
        if self.state() == crate::SegmentState::Closing {
            return Err(RingError::Closing);
        }
        self.require_journal_alive_at(|| hlc.wall_ms()).map_err(|_| RingError::DaemonGone)?;
        let mut rec = ev.to_record(hlc, self.actor(), self.me.pid())?;
        crate::origin::stamp_event(&mut rec);
        let cap = self.caps.events as u64;
        let s = self.ring().append(
            &mut rec,
            self.me.0,
            self.lock_wait,
            |t| !OwnerTag(t).is_alive(),
            |s| self.wait_journal_room(s, cap),
        )?;
        self.wake_parked_readers();
        self.wait_durable(s)?;
        Ok(s)
    }

    /// Appends several events at once and returns the sequence number of the last one
    /// (`None` for an empty batch). Cheaper per event than [`Segment::append`]: one clock
    /// tick range and one `fetch_add` of the tail for up to [`BATCH_CHUNK`] events, and
    /// one check for parked readers (and at most one wake) for the whole batch. The
    /// events get consecutive clock values and, in the common case, consecutive sequence
    /// numbers, in the order given; a batch larger than the ring is appended a part at a
    /// time (a reader that does not keep up is told exactly what it missed, as ever).
    ///
    /// # Errors
    ///
    /// As [`Segment::append`]. Every event is checked (limits, token) before any is
    /// appended, so a refused event appends nothing; an error while appending
    /// ([`RingError::Busy`], [`RingError::Contended`], [`RingError::JournalStalled`])
    /// leaves the events before the failing one appended.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{EventKind, NewEvent, Start};
    /// # let name = format!("doc-append-batch-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let mut reader = seg.reader(Start::Now);
    /// let batch = [b"a", b"b", b"c"].map(|p| NewEvent::new(EventKind::USER).payload(p));
    /// let last = seg.append_batch(&batch)?.expect("three events");
    /// let got: Vec<(u64, Vec<u8>)> =
    ///     std::iter::from_fn(|| reader.try_next().ok().flatten()).map(|e| (e.seq(), e.payload().to_vec())).collect();
    /// assert_eq!(got, [(last - 2, b"a".to_vec()), (last - 1, b"b".to_vec()), (last, b"c".to_vec())]);
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn append_batch(&self, evs: &[NewEvent<'_>]) -> Result<Option<u64>, RingError> {
        if let Some(link) = self.link() {
            let mut last = None;
            for ev in evs {
                let (topic, payload) = (ev.topic.to_string(), ev.payload.to_vec());
                last = Some(link.ask_count(crate::broker::Request::Append {
                    kind: ev.kind,
                    node: ev.node,
                    topic,
                    payload,
                })?);
            }
            return Ok(last);
        }
        if !self.map.writable() {
            return Err(RingError::ReadOnly);
        }
        for ev in evs {
            self.permit_uuid(crate::token::Right::Emit, ev.node.map(|(u, _)| u)).map_err(RingError::Denied)?;
            self.permit_event_kind(ev.kind).map_err(RingError::Denied)?;
            if self.grant().is_some() && ev.actor.is_some() && ev.actor != self.actor() {
                return Err(RingError::Denied(crate::Denied::OtherAgent));
            }
            ev.check_limits()?;
        }
        if self.state() == crate::SegmentState::Closing {
            return Err(RingError::Closing);
        }
        let cap = self.caps.events as u64;
        let chunk = BATCH_CHUNK.min(self.caps.events as usize).max(1);
        let (actor, pid) = (self.actor(), self.me.pid());
        let mut last = None;
        let mut recs = [EventRecord::zeroed(); BATCH_CHUNK];
        for part in evs.chunks(chunk) {
            let first = crate::clock::tick_n(self.hdr(hdr::CLOCK), part.len() as u64);
            self.require_journal_alive_at(|| first.wall_ms()).map_err(|_| RingError::DaemonGone)?;
            for (i, (ev, rec)) in part.iter().zip(recs.iter_mut()).enumerate() {
                *rec = ev.to_record(crate::Hlc(first.0 + i as u64), actor, pid)?;
            }
            let appended = self.ring().append_batch(
                &mut recs[..part.len()],
                self.me.0,
                self.lock_wait,
                |t| !OwnerTag(t).is_alive(),
                |s| self.wait_journal_room(s, cap),
                || {
                    self.hdr(hdr::RING_ABANDONED).fetch_add(1, Ordering::Relaxed);
                },
            );
            // Readers parked on what this part did publish are woken even if it failed.
            self.wake_parked_readers();
            last = Some(appended?);
        }
        if let Some(s) = last {
            self.wait_durable(s)?;
        }
        Ok(last)
    }

    /// After publishing: wakes readers parked on the ring, if there are any.
    fn wake_parked_readers(&self) {
        // Dekker with `Reader::park`: we publish, fence, look for waiters; a parker
        // registers, fences, looks for the event. One of us sees the other, so the futex
        // word is bumped (and the wake made) only when someone is parked.
        // SYNC POINT: pairs with the SeqCst fence in `Reader::park` after it registers.
        fence(Ordering::SeqCst);
        if self.hdr(hdr::RING_WAITERS).load(Ordering::Relaxed) != 0 {
            self.notify_word().fetch_add(1, Ordering::SeqCst);
            self.hdr(hdr::RING_WAKES).fetch_add(1, Ordering::Relaxed);
            sys::futex_wake(self.notify_word(), i32::MAX);
        }
    }

    /// Takes readers that were killed while parked off the waiter count, so producers
    /// stop paying a wake syscall for them. The daemon runs it every second. Returns how
    /// many it removed. (A reader that found no free tag word is not recoverable this way;
    /// there are 16.)
    pub(crate) fn sweep_dead_waiters(&self) -> usize {
        if !self.map.writable() {
            return 0;
        }
        let mut swept = 0;
        for i in 0..hdr::RING_WAITER_TAG_COUNT {
            let w = self.hdr(hdr::RING_WAITER_TAGS + 8 * i);
            // SYNC POINT: this load and the AcqRel compare-and-set below pair with the
            // AcqRel compare-and-sets of the tag word in `Reader::park`.
            let tag = w.load(Ordering::Acquire);
            if tag != 0
                && !OwnerTag(tag).is_alive()
                && w.compare_exchange(tag, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok()
            {
                // SYNC POINT: pairs with the waiter count's increment and decrement in
                // `Reader::park` (SeqCst, like every change of that count).
                let _ =
                    self.hdr(hdr::RING_WAITERS).fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
                swept += 1;
            }
        }
        swept
    }

    /// The next sequence number to be claimed (events `[tail - capacity, tail)` may be
    /// retained).
    pub fn ring_tail(&self) -> u64 {
        // SYNC POINT: pairs with the AcqRel `fetch_add` of the tail in `RingView::append`.
        self.hdr(hdr::RING_TAIL).load(Ordering::Acquire)
    }

    /// Ring counters: (wake syscalls made, slots marked abandoned, readers parked now).
    pub fn ring_counters(&self) -> RingCounters {
        RingCounters {
            tail: self.ring_tail(),
            capacity: self.caps.events as u64,
            wakes: self.hdr(hdr::RING_WAKES).load(Ordering::Relaxed),
            abandoned: self.hdr(hdr::RING_ABANDONED).load(Ordering::Relaxed),
            waiters: self.hdr(hdr::RING_WAITERS).load(Ordering::Relaxed),
        }
    }

    /// A reader with its own cursor, starting where `start` says. Readers take nothing
    /// from the ring and need no write access: any number read the same events, each at
    /// its own pace; one that falls more than the ring's capacity behind is told exactly
    /// how many it missed ([`RingError::Lagged`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{EventKind, NewEvent, Start};
    /// # let name = format!("doc-reader-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// seg.append(&NewEvent::new(EventKind::USER).topic("first"))?;
    /// let mut late = seg.reader(Start::Now); // sees only what comes next
    /// let mut all = seg.reader(Start::Oldest); // replays what the ring retains
    /// seg.append(&NewEvent::new(EventKind::USER).topic("second"))?;
    ///
    /// assert_eq!(late.try_next()?.map(|e| e.topic().to_owned()), Some("second".into()));
    /// assert!(late.try_next()?.is_none());
    /// let topics: Vec<String> = std::iter::from_fn(|| all.try_next().ok().flatten())
    ///     .filter(|e| e.kind() == EventKind::USER)
    ///     .map(|e| e.topic().to_owned())
    ///     .collect();
    /// assert_eq!(topics, ["first", "second"]);
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reader(&self, start: Start) -> Reader<'_> {
        let tail = self.ring_tail();
        let cap = self.caps.events as u64;
        let next = match start {
            Start::Oldest => tail.saturating_sub(cap),
            Start::Now => tail,
            Start::At(s) => s.min(tail),
        };
        Reader {
            seg: self,
            next,
            filter: Filter::default(),
            abandon_after: DEFAULT_ABANDON_AFTER,
            stuck: None,
            abandoned_skipped: 0,
            missed: 0,
        }
    }
}

/// Ring usage, for inspectors and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingCounters {
    /// Next sequence to claim.
    pub tail: u64,
    /// Slots.
    pub capacity: u64,
    /// `FUTEX_WAKE` syscalls producers made (only ever when a reader was parked).
    pub wakes: u64,
    /// Slots marked abandoned after their producer died.
    pub abandoned: u64,
    /// Readers parked right now.
    pub waiters: u64,
}

/// A cursor over the event ring. Each reader is independent: it never blocks producers
/// or other readers.
pub struct Reader<'a> {
    seg: &'a Segment,
    next: u64,
    filter: Filter,
    abandon_after: Duration,
    stuck: Option<(u64, Instant)>,
    abandoned_skipped: u64,
    missed: u64,
}

impl Reader<'_> {
    /// Delivers only events that pass `filter` (others are consumed and skipped).
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// How long to wait on an in-flight event before checking whether its producer died.
    pub fn set_abandon_after(&mut self, d: Duration) {
        self.abandon_after = d;
    }

    /// The sequence number this reader reads next.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Events skipped because their producer died mid-append.
    pub fn abandoned_skipped(&self) -> u64 {
        self.abandoned_skipped
    }

    /// Events missed through lagging, in all.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    fn lagged(&mut self, ring: &RingView<'_>) -> RingError {
        // SYNC POINT: pairs with the AcqRel `fetch_add` of the tail in `RingView::append`.
        let tail = ring.tail.load(Ordering::Acquire);
        let resume_at = (self.next + 1).max(tail.saturating_sub(ring.capacity()));
        let missed = resume_at - self.next;
        self.next = resume_at;
        self.missed += missed;
        self.stuck = None;
        RingError::Lagged { missed, resume_at }
    }

    /// The next matching event if one is available now; `Ok(None)` if not.
    /// `Err(Lagged)` reports events lost to overwriting (exactly), after which reading
    /// continues at `resume_at`.
    ///
    /// # Errors
    ///
    /// [`RingError::Lagged`]: the reader fell more than the ring's capacity behind;
    /// `missed` events were overwritten unread. The cursor has moved to `resume_at`:
    /// call again to go on reading.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{EventKind, Filter, NewEvent, Start};
    /// # let name = format!("doc-try_next-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let kind = EventKind(EventKind::USER.0 + 1);
    /// let mut reader = seg.reader(Start::Now).with_filter(Filter { kind: Some(kind), ..Filter::default() });
    /// assert!(reader.try_next()?.is_none()); // nothing yet: returns at once
    ///
    /// seg.append(&NewEvent::new(EventKind::USER))?; // filtered out
    /// let seq = seg.append(&NewEvent::new(kind))?;
    /// assert_eq!(reader.try_next()?.map(|e| e.seq()), Some(seq));
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_next(&mut self) -> Result<Option<Event>, RingError> {
        let ring = self.seg.ring();
        let cap = ring.capacity();
        // Bounded: at most one lap of skipped (filtered or abandoned) events per call.
        for _ in 0..cap + 2 {
            // The slot's stamp alone says whether `next` is there, gone (lapped) or not
            // yet published; the shared `tail` word is read only in the last case, so a
            // reader keeping up does not pull the producers' hottest line on every poll.
            // (No shortcut on `tail - next > capacity` either: a claimed sequence does not
            // mean its slot was overwritten yet — its producer may wait for the journal.)
            match ring.peek(self.next) {
                Peek::Ready(rec) => {
                    self.next += 1;
                    self.stuck = None;
                    let e = Event { rec };
                    if self.filter.matches(&e) {
                        return Ok(Some(e));
                    }
                }
                Peek::Abandoned => {
                    self.next += 1;
                    self.abandoned_skipped += 1;
                    self.stuck = None;
                }
                Peek::Lapped => return Err(self.lagged(&ring)),
                Peek::Pending => {
                    // SYNC POINT: pairs with the tail's `fetch_add` in `RingView::append`.
                    if self.next >= ring.tail.load(Ordering::Acquire) {
                        self.stuck = None;
                        return Ok(None);
                    }
                    // In flight: claimed (s < tail) but not published.
                    let now = Instant::now();
                    match self.stuck {
                        Some((s, since)) if s == self.next => {
                            if now.duration_since(since) >= self.abandon_after
                                && self.seg.map.writable()
                                && self.seg.may_abandon(self.next, cap)
                            {
                                if ring.abandon_if_dead(self.next, self.seg.me.0, |t| !OwnerTag(t).is_alive()) {
                                    self.seg.hdr(hdr::RING_ABANDONED).fetch_add(1, Ordering::Relaxed);
                                }
                                self.stuck = Some((self.next, now));
                                continue;
                            }
                        }
                        _ => self.stuck = Some((self.next, now)),
                    }
                    return Ok(None);
                }
            }
        }
        Ok(None)
    }

    /// Waits up to `timeout` for the next matching event, as `wait` says (spin, park on
    /// the ring's futex, or spin briefly and then park).
    ///
    /// # Errors
    ///
    /// * [`RingError::Timeout`]: no matching event arrived within `timeout`.
    /// * [`RingError::Lagged`]: as [`Reader::try_next`]; the cursor has moved on.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use worknode::{EventKind, NewEvent, RingError, Start, Wait};
    /// # let name = format!("doc-next-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let mut reader = seg.reader(Start::Now);
    /// let idle = reader.next(Wait::Park, Duration::from_millis(10));
    /// assert_eq!(idle.unwrap_err(), RingError::Timeout);
    ///
    /// std::thread::scope(|s| {
    ///     s.spawn(|| seg.append(&NewEvent::new(EventKind::USER).topic("wake up")));
    ///     let ev = reader.next(Wait::SpinThenPark, Duration::from_secs(10))?;
    ///     assert_eq!(ev.topic(), "wake up");
    ///     Ok::<(), RingError>(())
    /// })?;
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn next(&mut self, wait: Wait, timeout: Duration) -> Result<Event, RingError> {
        // An event already there costs no clock read (a reader keeping up with a fast
        // producer takes this path for nearly every event).
        if let Some(e) = self.try_next()? {
            return Ok(e);
        }
        let start = Instant::now();
        let deadline = sys::deadline(start, timeout);
        // Spin-then-park spins for a time window, not a count: longer than a typical
        // round trip through the ring, shorter than a futex wake-up, so a conversation
        // that keeps up never parks, and an idle reader sleeps after ~50 µs.
        let spin_until = if wait == Wait::SpinThenPark { start + SPIN_WINDOW } else { start };
        let mut spins = 0u32;
        let mut spinning = wait != Wait::Park;
        loop {
            if let Some(e) = self.try_next()? {
                return Ok(e);
            }
            if spinning {
                std::hint::spin_loop();
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(64) {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(RingError::Timeout);
                    }
                    if wait == Wait::SpinThenPark && now >= spin_until {
                        spinning = false;
                    }
                }
                continue;
            }
            self.park(deadline)?;
        }
    }

    /// Sleeps on the futex until a producer publishes, the deadline, or (when waiting on
    /// an in-flight event) the abandon bound.
    fn park(&mut self, deadline: Instant) -> Result<(), RingError> {
        let now = Instant::now();
        if now >= deadline {
            return Err(RingError::Timeout);
        }
        let mut t = deadline - now;
        if self.stuck.is_some() {
            t = t.min(self.abandon_after);
        }
        let seg = self.seg;
        let writable = seg.map.writable();
        if !writable {
            t = t.min(READ_ONLY_PARK);
        }
        let waiters = seg.hdr(hdr::RING_WAITERS);
        let mut tag_word = None;
        if writable {
            // Name ourselves in a tag word (when one is free) so that, if we are killed
            // while parked, the daemon can take our count back off.
            tag_word = (0..hdr::RING_WAITER_TAG_COUNT)
                .map(|i| seg.hdr(hdr::RING_WAITER_TAGS + 8 * i))
                // SYNC POINT: pairs with `sweep_dead_waiters`' load and compare-and-set.
                .find(|w| w.compare_exchange(0, seg.me.0, Ordering::AcqRel, Ordering::Relaxed).is_ok());
            // SYNC POINT: the registration the SeqCst fence below orders before the
            // re-check; pairs with the producer's waiter-count load after its fence in
            // `Segment::append_stamped`.
            waiters.fetch_add(1, Ordering::SeqCst);
        }
        let v = seg.notify_word().load(Ordering::SeqCst);
        // SYNC POINT: pairs with the SeqCst fence in `Segment::append_stamped` after it
        // publishes (Dekker: one of the two sees the other).
        fence(Ordering::SeqCst);
        // Registered first, then re-checked: a publish after this check sees our
        // registration (the fences pair with `append`'s), bumps the word (so FUTEX_WAIT
        // returns at once if we have not slept yet) and wakes us.
        if !seg.ring().actionable(self.next) {
            sys::futex_wait(seg.notify_word(), v, t);
        }
        if writable {
            // Deregister only if the daemon did not do it for us (it never does for a
            // live process, so this is belt and braces).
            // SYNC POINT: the tag compare-and-set pairs with `sweep_dead_waiters`' (exactly
            // one of us takes the count back off); the decrement with its decrement.
            let mine =
                tag_word.is_none_or(|w| w.compare_exchange(seg.me.0, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok());
            if mine {
                waiters.fetch_sub(1, Ordering::SeqCst);
            }
        }
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use crate::layout::Capacities;

    use crate::testing::{temp_segment, TempSegment};

    fn segment(tag: &str, events: u32) -> TempSegment {
        let caps = Capacities { nodes: 16, events, agents: 4, blob_chunks: 1, ..Capacities::default() };
        temp_segment(&format!("ring-{tag}"), &caps)
    }

    fn user(i: u64) -> [u8; 8] {
        i.to_le_bytes()
    }

    #[test]
    fn events_arrive_in_order_with_their_payloads() {
        let s = segment("order", 64);
        let seg = &s.seg;
        let mut r = seg.reader(Start::Now);
        for i in 0..10u64 {
            assert_eq!(seg.append(&NewEvent::new(EventKind::USER).topic("t").payload(&user(i))).unwrap(), i);
        }
        for i in 0..10u64 {
            let e = r.try_next().unwrap().unwrap();
            assert_eq!(e.seq(), i);
            assert_eq!(e.payload(), &user(i));
            assert_eq!(e.topic(), "t");
            assert_eq!(e.pid(), std::process::id());
        }
        assert!(r.try_next().unwrap().is_none());
    }

    /// Appends a batch of `n` user events with payloads `from..from + n`.
    fn batch(seg: &Segment, from: u64, n: u64) -> Result<Option<u64>, RingError> {
        let payloads: Vec<[u8; 8]> = (from..from + n).map(user).collect();
        let evs: Vec<NewEvent<'_>> = payloads.iter().map(|p| NewEvent::new(EventKind::USER).payload(p)).collect();
        seg.append_batch(&evs)
    }

    #[test]
    fn a_batch_arrives_in_order_with_increasing_sequences_and_clock_values() {
        let s = segment("batch-order", 64);
        let seg = &s.seg;
        let mut r = seg.reader(Start::Now);
        assert_eq!(seg.append(&NewEvent::new(EventKind::USER).payload(&user(0))).unwrap(), 0);
        assert_eq!(batch(seg, 1, 10).unwrap(), Some(10));
        assert_eq!(seg.append(&NewEvent::new(EventKind::USER).payload(&user(11))).unwrap(), 11);
        assert_eq!(batch(seg, 12, 0).unwrap(), None, "an empty batch appends nothing");
        let got: Vec<Event> = std::iter::from_fn(|| r.try_next().unwrap()).collect();
        assert_eq!(got.len(), 12);
        for (i, e) in got.iter().enumerate() {
            assert_eq!((e.seq(), e.payload()), (i as u64, &user(i as u64)[..]));
            assert_eq!(e.pid(), std::process::id());
        }
        for w in got.windows(2) {
            assert!(w[1].hlc() > w[0].hlc(), "clock values strictly increase: {} then {}", w[0].hlc(), w[1].hlc());
        }
        assert_eq!(seg.ring_counters().abandoned, 0);
    }

    #[test]
    fn a_batch_larger_than_the_ring_laps_a_reader_that_is_told_exactly_what_it_missed() {
        let s = segment("batch-big", 8);
        let seg = &s.seg;
        let mut r = seg.reader(Start::At(0));
        assert_eq!(batch(seg, 0, 20).unwrap(), Some(19));
        assert_eq!(r.try_next().unwrap_err(), RingError::Lagged { missed: 12, resume_at: 12 });
        let mut last_hlc = crate::Hlc(0);
        for i in 12..20 {
            let e = r.try_next().unwrap().unwrap();
            assert_eq!((e.seq(), e.payload()), (i, &user(i)[..]));
            assert!(e.hlc() > last_hlc);
            last_hlc = e.hlc();
        }
        assert!(r.try_next().unwrap().is_none());
        assert_eq!(r.missed(), 12);
    }

    #[test]
    fn a_batch_that_laps_a_slow_reader_reports_the_loss_exactly() {
        let s = segment("batch-lap", 8);
        let seg = &s.seg;
        let mut r = seg.reader(Start::At(0));
        assert_eq!(batch(seg, 0, 3).unwrap(), Some(2));
        for i in 0..2 {
            assert_eq!(r.try_next().unwrap().unwrap().seq(), i);
        }
        // Sequences 3..=12: the ring retains 5..=12, so the reader at 2 lost 2, 3 and 4.
        assert_eq!(batch(seg, 3, 10).unwrap(), Some(12));
        assert_eq!(r.try_next().unwrap_err(), RingError::Lagged { missed: 3, resume_at: 5 });
        for i in 5..13 {
            assert_eq!(r.try_next().unwrap().unwrap().payload(), &user(i)[..]);
        }
        assert!(r.try_next().unwrap().is_none());
    }

    #[test]
    fn a_batch_with_an_event_that_does_not_fit_appends_nothing() {
        let s = segment("batch-refused", 16);
        let seg = &s.seg;
        let big = [0u8; 89];
        let evs = [NewEvent::new(EventKind::USER), NewEvent::new(EventKind::USER).payload(&big)];
        assert!(matches!(seg.append_batch(&evs), Err(RingError::PayloadTooLarge { len: 89, .. })));
        let long = "t".repeat(25);
        let evs = [NewEvent::new(EventKind::USER), NewEvent::new(EventKind::USER).topic(&long)];
        assert!(matches!(seg.append_batch(&evs), Err(RingError::TopicTooLong { len: 25, .. })));
        assert_eq!(seg.ring_tail(), 0, "a refused batch claims no sequence");
    }

    #[test]
    fn a_batch_overtaken_midway_stays_in_order_and_abandons_its_later_claims() {
        let s = segment("batch-overtaken", 16);
        let seg = &s.seg;
        let ring = seg.ring();
        // A reader declared sequence 1 abandoned before the batch's producer got to it
        // (it stalled past the bound): the batch's 0 is written, its 1 is overtaken.
        ring.slot(1)[STAMP].store(stamp(1, ABANDONED), Ordering::Relaxed);
        let mut recs: Vec<EventRecord> = (0..4u64)
            .map(|i| NewEvent::new(EventKind::USER).payload(&user(i)).to_record(crate::Hlc(100 + i), None, 7).unwrap())
            .collect();
        let abandoned = std::cell::Cell::new(0);
        let last = ring
            .append_batch(
                &mut recs,
                seg.me.0,
                seg.lock_wait,
                |_| false,
                |_| Ok(()),
                || abandoned.set(abandoned.get() + 1),
            )
            .unwrap();
        // 0 written; 1 overtaken; 2 and 3 stamped abandoned by the producer; events 1..3
        // renumbered 4..6, still in order.
        assert_eq!(last, 6);
        assert_eq!(abandoned.get(), 2);
        let mut r = seg.reader(Start::At(0));
        let got: Vec<(u64, Vec<u8>, u64)> =
            std::iter::from_fn(|| r.try_next().unwrap()).map(|e| (e.seq(), e.payload().to_vec(), e.hlc().0)).collect();
        let want: Vec<(u64, Vec<u8>, u64)> =
            [(0, 0), (4, 1), (5, 2), (6, 3)].iter().map(|&(s, i)| (s, user(i).to_vec(), 100 + i)).collect();
        assert_eq!(got, want);
        assert_eq!(r.abandoned_skipped(), 3, "sequences 1, 2 and 3 are skipped, counted");
    }

    #[test]
    fn a_lapped_reader_is_told_exactly_what_it_missed() {
        let s = segment("lap", 8);
        let seg = &s.seg;
        let mut r = seg.reader(Start::At(0));
        for i in 0..20u64 {
            seg.append(&NewEvent::new(EventKind::USER).payload(&user(i))).unwrap();
        }
        assert_eq!(r.try_next().unwrap_err(), RingError::Lagged { missed: 12, resume_at: 12 });
        for i in 12..20 {
            assert_eq!(r.try_next().unwrap().unwrap().seq(), i);
        }
        // A fresh reader from the oldest retained event gets exactly the retained ones.
        let mut fresh = seg.reader(Start::Oldest);
        let got: Vec<u64> = std::iter::from_fn(|| fresh.try_next().unwrap()).map(|e| e.seq()).collect();
        assert_eq!(got, (12..20).collect::<Vec<_>>());
    }

    #[test]
    fn a_claimed_but_never_published_sequence_is_abandoned_after_the_bound() {
        let s = segment("abandon", 16);
        let seg = &s.seg;
        let mut r = seg.reader(Start::Now);
        seg.append(&NewEvent::new(EventKind::USER).payload(&user(0))).unwrap();
        // A producer that died right after claiming sequence 1.
        seg.hdr(hdr::RING_TAIL).fetch_add(1, Ordering::AcqRel);
        seg.append(&NewEvent::new(EventKind::USER).payload(&user(2))).unwrap();
        r.set_abandon_after(Duration::from_millis(5));
        assert_eq!(r.next(Wait::Park, Duration::from_secs(5)).unwrap().seq(), 0);
        assert_eq!(r.next(Wait::Park, Duration::from_secs(5)).unwrap().seq(), 2);
        assert_eq!(r.abandoned_skipped(), 1);
        assert_eq!(seg.ring_counters().abandoned, 1);
    }

    #[test]
    fn parked_readers_wake_and_producers_skip_the_syscall_without_waiters() {
        let s = segment("park", 64);
        let seg = &s.seg;
        for i in 0..5 {
            seg.append(&NewEvent::new(EventKind::USER).payload(&user(i))).unwrap();
        }
        assert_eq!(seg.ring_counters().wakes, 0, "no reader parked, so no wake syscall");
        let mut r = seg.reader(Start::Now);
        assert_eq!(r.next(Wait::Park, Duration::from_millis(20)).unwrap_err(), RingError::Timeout);
        std::thread::scope(|sc| {
            let h = sc.spawn(|| {
                let mut r = seg.reader(Start::Now);
                r.next(Wait::Park, Duration::from_secs(10)).map(|e| e.seq())
            });
            // Append until the parked reader has been woken (bounded).
            let mut sent = 0;
            while !h.is_finished() && sent < 1000 {
                std::thread::sleep(Duration::from_millis(5));
                seg.append(&NewEvent::new(EventKind::USER)).unwrap();
                sent += 1;
            }
            assert!(h.join().unwrap().is_ok());
        });
    }

    #[test]
    fn filters_skip_other_events() {
        let s = segment("filter", 64);
        let seg = &s.seg;
        let mut r = seg.reader(Start::Now).with_filter(Filter { kind: Some(EventKind(1001)), ..Filter::default() });
        seg.append(&NewEvent::new(EventKind(1000))).unwrap();
        seg.append(&NewEvent::new(EventKind(1001))).unwrap();
        assert_eq!(r.try_next().unwrap().unwrap().seq(), 1);
        let big = [0u8; 89];
        assert!(matches!(
            seg.append(&NewEvent::new(EventKind::USER).payload(&big)),
            Err(RingError::PayloadTooLarge { .. })
        ));
    }

    #[test]
    fn node_changes_emit_events_with_uuid_and_version() {
        let s = segment("nodes", 64);
        let seg = &s.seg;
        let mut r = seg.reader(Start::Now);
        let h = seg.add(seg.root(), &crate::NewNode::new(crate::NodeKind::Task, "t")).unwrap();
        let n = seg.update(h, |n| n.set_progress(10)).unwrap();
        seg.delete(h, crate::DeleteMode::LeafOnly).unwrap();
        let kinds: Vec<(EventKind, u64)> =
            std::iter::from_fn(|| r.try_next().unwrap()).map(|e| (e.kind(), e.node_version())).collect();
        assert_eq!(
            kinds,
            vec![(EventKind::NODE_CREATED, 1), (EventKind::NODE_UPDATED, 2), (EventKind::NODE_DELETED, 2)]
        );
        assert_eq!(n.version(), 2);
    }
}

#[cfg(all(test, not(loom)))]
mod durability_tests {
    use super::*;
    use crate::event::EventKind;
    use crate::testing::temp_segment;
    use crate::{Capacities, Durability};

    #[test]
    fn a_reader_never_abandons_a_slot_whose_previous_event_is_not_journaled() {
        let caps = Capacities { nodes: 16, events: 8, agents: 2, blob_chunks: 1, sets: 1, ..Capacities::default() };
        let seg = temp_segment("ring-journal-room", &caps);
        seg.set_durability(Durability::Never, 0, u64::MAX, Duration::from_secs(3600));
        for _ in 0..8 {
            seg.append(&NewEvent::new(EventKind::USER)).unwrap();
        }
        // A producer claimed sequence 8 and waits for journal room (the journal is at 0).
        seg.hdr(hdr::RING_TAIL).fetch_add(1, Ordering::AcqRel);
        let mut r = seg.reader(Start::At(0));
        r.set_abandon_after(Duration::from_millis(1));
        for _ in 0..8 {
            r.try_next().unwrap().unwrap();
        }
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(3));
            assert!(r.try_next().unwrap().is_none());
        }
        assert_eq!(r.abandoned_skipped(), 0, "event 0 is not journaled: its slot must not be touched");
        // Once the journal has read event 0, the stuck sequence may be abandoned.
        seg.publish_journal_progress(8, 8);
        std::thread::sleep(Duration::from_millis(3));
        assert!(r.try_next().unwrap().is_none());
        std::thread::sleep(Duration::from_millis(3));
        assert!(r.try_next().unwrap().is_none());
        assert_eq!(r.abandoned_skipped(), 1);
    }

    #[test]
    fn a_reader_killed_while_parked_is_swept_off_the_waiter_count() {
        let caps = Capacities { nodes: 16, events: 8, agents: 2, blob_chunks: 1, sets: 1, ..Capacities::default() };
        let seg = temp_segment("dead-waiter", &caps);
        // What a reader killed inside `park` leaves: its tag in a tag word, the count up.
        let init = OwnerTag::new(1, crate::sys::process_start_ticks(1).unwrap_or(0));
        let dead = OwnerTag::new(1, init.start_ticks() + 777).0;
        seg.hdr(hdr::RING_WAITER_TAGS + 8).store(dead, Ordering::Relaxed);
        seg.hdr(hdr::RING_WAITERS).store(1, Ordering::Relaxed);
        seg.append(&NewEvent::new(EventKind::USER)).unwrap();
        assert_eq!(seg.ring_counters().wakes, 1, "a leaked waiter costs every append a syscall");
        assert_eq!(seg.sweep_dead_waiters(), 1);
        assert_eq!(seg.ring_counters().waiters, 0);
        seg.append(&NewEvent::new(EventKind::USER)).unwrap();
        assert_eq!(seg.ring_counters().wakes, 1, "no syscall once it is swept");
        assert_eq!(seg.sweep_dead_waiters(), 0);
    }

    #[test]
    fn a_closing_segment_refuses_changes_and_appends() {
        let caps = Capacities { nodes: 16, events: 8, agents: 2, blob_chunks: 1, sets: 1, ..Capacities::default() };
        let seg = temp_segment("closing", &caps);
        let h = seg.add(seg.root(), &crate::NewNode::new(crate::NodeKind::Task, "t")).unwrap();
        seg.mark_closing();
        assert_eq!(seg.append(&NewEvent::new(EventKind::USER)), Err(RingError::Closing));
        assert_eq!(seg.update(h, |n| n.set_progress(5)).unwrap_err(), crate::PoolError::Closing);
        assert_eq!(
            seg.add(seg.root(), &crate::NewNode::new(crate::NodeKind::Task, "u")).unwrap_err(),
            crate::PoolError::Closing
        );
        assert_eq!(seg.read(h).unwrap().progress(), 0, "reads still work, nothing changed");
    }
}
