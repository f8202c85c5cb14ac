//! The inspector role: read-only decoding of a segment for `wn dump`, `wn doctor` and
//! `wn top` ([`Inspector`], from [`Segment::inspect`]): identity and usage
//! ([`Inspector::info`]), the damage catalogue ([`Inspector::damage`]), node slot control
//! words, header lock words and ring slot stamps decoded, the lock-holder judgement
//! writers also use before taking a lock over ([`Inspector::lock_holder`]), and the
//! inspection of a segment too damaged to attach ([`Inspector::inspect_header`]). Also
//! the daemon's header guard ([`HeaderGuard`], which repairs, so it takes a
//! [`Daemon`]).
//!
//! Everything here decodes the segment through `layout` and the same packed-word
//! helpers the writers use (`genstate`, `index`, `ring`, `pool::summary_of`), so the
//! tools read through one layout descriptor instead of decoding words by hand. Every
//! index read from the segment is range-checked, every walk is bounded by its region's
//! capacity, and nothing here panics on segment bytes.

use crate::clock::{self, Hlc};
use crate::daemon::Daemon;
use crate::genstate::{gen_of, state_is_valid, state_of};
use crate::layout::{
    self, hdr, slot, state, AgentSlot, Geometry, HeaderFixed, NodeRecord, Region, AGENT_NAME_MAX, AGENT_ROLE_MAX,
    DESCRIPTION_MAX, HEADER_SIZE, LAYOUT_VERSION, MAGIC, NAME_MAX, RECORD_WORDS,
};
use crate::node::{Handle, NodeKind, Status};
use crate::segment::{Segment, SegmentInfo};
use crate::sync::{load_words, AtomicU64, Ordering};
use crate::sys::OwnerTag;
use std::mem::{offset_of, size_of};

/// Words of the fixed header (written once, before Ready).
const FIXED_WORDS: usize = size_of::<HeaderFixed>() / 8;

/// A kind of damage the catalogue recognises. [`DamageClass::as_str`] is the stable name
/// tools print and tests match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DamageClass {
    /// The magic number is not Worknode's.
    HeaderMagic,
    /// The layout version is not this build's.
    HeaderVersion,
    /// Header, record or segment size disagrees with the layout or the object's size.
    HeaderSize,
    /// The region table disagrees with the geometry the capacities imply.
    HeaderRegions,
    /// The lifecycle state word holds no known state.
    StateWord,
    /// The daemon named in the header is not running.
    DaemonGone,
    /// The clock word, or a record's stamp (the trace of a damaged clock a writer has
    /// since reset), is more than `clock::MAX_AHEAD_MS` ahead of wall time.
    ClockAhead,
    /// A free-list head or link names a slot outside its region.
    FreeListOutOfRange,
    /// A free list holds a slot that is not free (a live record would be overwritten).
    FreeListNotFree,
    /// A free list runs in a cycle.
    FreeListCycle,
    /// A node lock is held by a process that is gone.
    LockDead,
    /// A node lock names a live process that does not map the segment: it cannot be a
    /// writer, so the lock is forged (the next writer takes it over).
    LockForged,
    /// A node lock held by a live process that maps the segment, far longer than any
    /// writer holds one (found by `wn doctor` watching it).
    LockStuck,
    /// A seqlock word is odd while nobody holds the lock.
    SeqOdd,
    /// A slot's gen/state word holds no known state.
    SlotState,
    /// An id index entry names a slot outside the pool, a slot that is not live, a slot
    /// whose UUID does not match, or a slot another entry also names.
    IndexEntry,
    /// A child or sibling link is out of range, names a node that is not a child,
    /// disagrees with the child count, or runs in a cycle.
    ChildLinks,
    /// A slot's scan summary disagrees with its record.
    Summary,
    /// A record's kind, status or text length is out of range.
    RecordEnum,
    /// An event ring stamp is garbage (unknown state, a sequence at or past the tail, or
    /// a sequence that does not map to its slot).
    RingStamp,
    /// An agent slot is garbage (state, name, role, node).
    AgentSlot,
    /// A document's blob chain is broken or its CRC does not match.
    BlobChain,
    /// A set slot is garbage (state, owner node, entries from a later generation).
    SetSlot,
    /// A usage counter disagrees with what the slots show, or exceeds its capacity.
    Counters,
}

impl DamageClass {
    /// Stable lower-case name.
    pub fn as_str(self) -> &'static str {
        use DamageClass::*;
        match self {
            HeaderMagic => "header_magic",
            HeaderVersion => "header_version",
            HeaderSize => "header_size",
            HeaderRegions => "header_regions",
            StateWord => "state_word",
            DaemonGone => "daemon_gone",
            ClockAhead => "clock_ahead",
            FreeListOutOfRange => "free_list_out_of_range",
            FreeListNotFree => "free_list_not_free",
            FreeListCycle => "free_list_cycle",
            LockDead => "lock_dead",
            LockForged => "lock_forged",
            LockStuck => "lock_stuck",
            SeqOdd => "seq_odd",
            SlotState => "slot_state",
            IndexEntry => "index_entry",
            ChildLinks => "child_links",
            Summary => "summary",
            RecordEnum => "record_enum",
            RingStamp => "ring_stamp",
            AgentSlot => "agent_slot",
            BlobChain => "blob_chain",
            SetSlot => "set_slot",
            Counters => "counters",
        }
    }
}

impl std::fmt::Display for DamageClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One damage found (and, by the daemon's guard, perhaps repaired).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// What kind.
    pub class: DamageClass,
    /// Where and what, in words.
    pub detail: String,
    /// Whether it was repaired when found.
    pub repaired: bool,
}

impl Damage {
    fn new(class: DamageClass, detail: impl Into<String>) -> Damage {
        Damage { class, detail: detail.into(), repaired: false }
    }
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}{}", self.class, self.detail, if self.repaired { " (repaired)" } else { "" })
    }
}

/// What a lock word's holder is, judged from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    /// The word is 0.
    Free,
    /// The tag names no running process (pid gone, or reused by a later process).
    Dead,
    /// The tag names a running process that does not map this segment: not a writer.
    Forged,
    /// A running process that maps the segment (or whose maps cannot be read).
    Live,
}

/// A node slot's control words, decoded (for inspectors: one relaxed load per word, so
/// a slot changing meanwhile may mix two moments).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotControl {
    /// Slot index.
    pub index: u32,
    /// The record's sequence word (odd: a write in progress).
    pub seq: u64,
    /// The writer lock word (0 or the holder's owner tag).
    pub lock: u64,
    /// The slot's generation.
    pub generation: u32,
    /// The slot's state (`layout::slot::{FREE, RESERVED, LIVE}`, or garbage).
    pub state: u64,
}

/// An event ring slot's control words, decoded against the tail (for inspectors: one
/// load per word, so a slot changing meanwhile may mix two moments).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingSlotControl {
    /// Slot index.
    pub index: u64,
    /// The publication stamp (`layout::EventSlot::stamp`).
    pub stamp: crate::RingStamp,
    /// The slot's writer lock (0 or the producer's owner tag).
    pub owner: u64,
    /// The newest sequence below the tail that maps to this slot (`None`: no sequence
    /// handed out has reached it yet).
    pub expected: Option<u64>,
    /// Whether the stamp shows `expected` neither published nor abandoned: never
    /// written, an older lap, or still being written.
    pub unpublished: bool,
}

/// The inspector role: read-only decoding of a segment's words, for `wn dump`, `wn
/// doctor` and `wn top`. Obtained from any attached segment with [`Segment::inspect`] —
/// a read-only attach suffices, and is what the tools use — and from the daemon's handle
/// the same way. Nothing here writes.
///
/// ```
/// use worknode::{Access, Capacities, Daemon, Segment};
/// # let name = format!("doc-inspect-{}", std::process::id());
/// # let daemon = Daemon::create(&name, &Capacities { nodes: 16, ..Capacities::default() }, 0o600)?;
/// let seg = Segment::attach(&name, Access::ReadOnly)?;
/// let inspect = seg.inspect();
/// assert_eq!(inspect.info().regions[0].used, 2); // the root and /agents
/// assert!(inspect.damage().is_empty());
/// # drop(seg); drop(daemon); Segment::unlink(&name)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// The decoding is the inspector's, not the agent handle's: this does not compile.
///
/// ```compile_fail
/// fn scan(seg: &worknode::Segment) -> usize {
///     seg.damage().len() // use `seg.inspect().damage()`
/// }
/// ```
#[derive(Clone, Copy)]
pub struct Inspector<'a> {
    seg: &'a Segment,
}

impl Segment {
    /// The read-only inspector of this segment: decoding for the tools (`wn dump`,
    /// `doctor`, `top`). Infallible; a read-only attach is enough.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{Access, Segment};
    /// # let name = format!("doc-inspect-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// let seg = Segment::attach(&name, Access::ReadOnly)?;
    /// let info = seg.inspect().info();
    /// assert_eq!((info.name.as_str(), info.state), (name.as_str(), worknode::SegmentState::Ready));
    /// # drop(seg); drop(daemon); Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn inspect(&self) -> Inspector<'_> {
        Inspector { seg: self }
    }
}

impl<'a> Inspector<'a> {
    /// The segment inspected.
    pub fn segment(&self) -> &'a Segment {
        self.seg
    }

    /// Identity, lifecycle and usage (what `wn dump` shows). Infallible: a copy of
    /// header words and counters, read without a lock.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{Access, NewNode, NodeKind, Segment};
    /// # let name = format!("doc-info-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # daemon.add(daemon.root(), &NewNode::new(NodeKind::Task, "one more"))?;
    /// let seg = Segment::attach(&name, Access::ReadOnly)?;
    /// let info = seg.inspect().info();
    /// let nodes = info.regions.iter().find(|r| r.name == "nodes").expect("a nodes region");
    /// assert_eq!((nodes.capacity, nodes.used), (16, 3)); // root, /agents and the task
    /// assert_eq!(info.daemon_pid, std::process::id());
    /// # drop(seg); drop(daemon); Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn info(&self) -> SegmentInfo {
        self.seg.info()
    }

    /// Every damage found in the segment now, by a read-only scan (O(segment)). On a
    /// live segment a finding may be a moment's disagreement (a write in flight):
    /// callers that need certainty scan again and keep what persists. Stuck locks are not
    /// found here (see [`Inspector::live_node_locks`]). Infallible: what it finds is
    /// the answer.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{Access, Segment};
    /// # let name = format!("doc-damage-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// let seg = Segment::attach(&name, Access::ReadOnly)?;
    /// let found = seg.inspect().damage();
    /// assert!(found.is_empty(), "a fresh segment is sound: {found:?}");
    /// # drop(seg); drop(daemon); Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn damage(&self) -> Vec<Damage> {
        self.seg.damage()
    }

    /// Judges a lock word's holder: free, dead, forged (a live process that does not map
    /// this segment, so it cannot be inside a lock of it), or live.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{Access, Holder, OwnerTag, Segment};
    /// # let name = format!("doc-lock_holder-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// let seg = Segment::attach(&name, Access::ReadOnly)?;
    /// let inspect = seg.inspect();
    /// assert_eq!(inspect.lock_holder(0), Holder::Free);
    /// assert_eq!(inspect.lock_holder(OwnerTag::current().0), Holder::Live); // this process maps it
    /// # drop(seg); drop(daemon); Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock_holder(&self, tag: u64) -> Holder {
        self.seg.lock_holder(tag)
    }

    /// Node slots whose writer lock is held by a live process that maps the segment:
    /// `(slot, tag, seq)`. Watching it twice tells a stuck lock from a busy one.
    pub fn live_node_locks(&self) -> Vec<(u32, u64, u64)> {
        self.seg.live_node_locks()
    }

    /// Every node slot's control words, decoded.
    pub fn node_slot_controls(&self) -> Vec<SlotControl> {
        self.seg.node_slot_controls()
    }

    /// The header's two lock words: the agent table's join lock and the dependency-edge
    /// lock (0 or the holder's owner tag).
    pub fn header_lock_words(&self) -> [u64; 2] {
        self.seg.header_lock_words()
    }

    /// Every event ring slot's stamp and writer lock, decoded against the tail read once
    /// before the scan.
    pub fn ring_slot_controls(&self) -> Vec<RingSlotControl> {
        self.seg.ring_slot_controls()
    }

    /// Inspects the header of a segment file that may be too damaged to attach: the
    /// fixed header, the state word and the clock, read with plain file reads. An empty
    /// answer means the header is sound.
    ///
    /// # Errors
    ///
    /// The file cannot be opened or read: [`std::io::ErrorKind::NotFound`] when no
    /// segment has that name, `PermissionDenied` when this user may not read it.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{Inspector, Segment};
    /// # let name = format!("doc-inspect_header-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// assert!(Inspector::inspect_header(&name)?.is_empty()); // a sound header
    /// let missing = Inspector::inspect_header("no-such-segment").unwrap_err();
    /// assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    /// # drop(daemon); Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn inspect_header(name: &str) -> std::io::Result<Vec<Damage>> {
        inspect_header(name)
    }
}

/// Checks a fixed header (as words) against the layout and against the object's size.
fn check_fixed(words: &[u64; FIXED_WORDS], len: u64) -> Vec<Damage> {
    let fixed: HeaderFixed = bytemuck::cast(*words);
    let mut out = Vec::new();
    if fixed.magic != MAGIC {
        out.push(Damage::new(DamageClass::HeaderMagic, format!("magic is {:#018x}, not {MAGIC:#018x}", fixed.magic)));
    }
    if fixed.layout_version != LAYOUT_VERSION {
        out.push(Damage::new(
            DamageClass::HeaderVersion,
            format!("layout version is {}, this build's is {LAYOUT_VERSION}", fixed.layout_version),
        ));
    }
    if fixed.header_size as usize != HEADER_SIZE {
        out.push(Damage::new(
            DamageClass::HeaderSize,
            format!("header_size is {}, not {HEADER_SIZE}", fixed.header_size),
        ));
    }
    if fixed.record_size as usize != size_of::<NodeRecord>() {
        out.push(Damage::new(
            DamageClass::HeaderSize,
            format!("record_size is {}, not {}", fixed.record_size, size_of::<NodeRecord>()),
        ));
    }
    if fixed.segment_size != len {
        out.push(Damage::new(
            DamageClass::HeaderSize,
            format!("segment_size is {}, the object is {len} bytes", fixed.segment_size),
        ));
    }
    match Geometry::new(&Geometry::capacities_of(&fixed)) {
        Err(_) => out.push(Damage::new(DamageClass::HeaderRegions, "the region capacities cannot be laid out")),
        Ok(geo) => {
            for (i, (found, want)) in fixed.regions.iter().zip(geo.regions.iter()).enumerate() {
                if found != want {
                    out.push(Damage::new(
                        DamageClass::HeaderRegions,
                        format!("region {} disagrees with the geometry its capacities imply", layout::REGION_NAMES[i]),
                    ));
                }
            }
            if geo.total != len {
                out.push(Damage::new(
                    DamageClass::HeaderRegions,
                    format!("the regions need {} bytes, the object is {len}", geo.total),
                ));
            }
        }
    }
    out
}

fn check_state_word(v: u64) -> Option<Damage> {
    match v {
        state::INITIALIZING | state::READY | state::CLOSING => None,
        v => Some(Damage::new(DamageClass::StateWord, format!("state word is {v:#x}, no known state"))),
    }
}

/// Inspects the header of a segment file that may be too damaged to attach: the fixed
/// header, the state word and the clock, read with plain file reads. An empty answer
/// means the header is sound.
///
/// # Errors
///
/// The file cannot be opened or read.
pub(crate) fn inspect_header(name: &str) -> std::io::Result<Vec<Damage>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(crate::sys::shm_path(name))?;
    let len = f.metadata()?.len();
    let mut buf = vec![0u8; HEADER_SIZE];
    if len < HEADER_SIZE as u64 {
        return Ok(vec![Damage::new(
            DamageClass::HeaderSize,
            format!("the object is {len} bytes, smaller than a header ({HEADER_SIZE})"),
        )]);
    }
    f.read_exact_at(&mut buf, 0)?;
    let word = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&buf[o..o + 8]);
        u64::from_ne_bytes(b)
    };
    let mut words = [0u64; FIXED_WORDS];
    for (i, w) in words.iter_mut().enumerate() {
        *w = word(i * 8);
    }
    let mut out = check_fixed(&words, len);
    out.extend(check_state_word(word(hdr::STATE)));
    let c = Hlc(word(hdr::CLOCK));
    if clock::too_far_ahead(c, clock::unix_ms()) {
        out.push(clock_damage(c));
    }
    Ok(out)
}

fn clock_damage(c: Hlc) -> Damage {
    let ahead = c.wall_ms().saturating_sub(clock::unix_ms());
    Damage::new(
        DamageClass::ClockAhead,
        format!("the clock word {c} is {} s ahead of wall time (bound {} s)", ahead / 1000, clock::MAX_AHEAD_MS / 1000),
    )
}

/// A free list's geometry: where its head is and where each element keeps its words.
struct ListSpec {
    name: &'static str,
    region: Region,
    head: usize,
    gen_state: usize,
    next_free: usize,
}

const NODE_LIST: ListSpec = ListSpec {
    name: "node",
    region: Region::Nodes,
    head: hdr::POOL_FREE_HEAD,
    gen_state: slot::GEN_STATE,
    next_free: slot::NEXT_FREE,
};
const BLOB_LIST: ListSpec = ListSpec {
    name: "blob",
    region: Region::Blobs,
    head: hdr::BLOB_FREE_HEAD,
    gen_state: offset_of!(layout::BlobChunkHeader, gen_state),
    next_free: offset_of!(layout::BlobChunkHeader, next_free),
};
const SET_LIST: ListSpec = ListSpec {
    name: "set",
    region: Region::Sets,
    head: hdr::SET_FREE_HEAD,
    gen_state: offset_of!(layout::SetSlot, gen_state),
    next_free: offset_of!(layout::SetSlot, next_free),
};

/// The uuid bytes kept in a node slot's control words.
fn slot_uuid(a: u64, b: u64) -> [u8; 16] {
    let mut u = [0u8; 16];
    u[..8].copy_from_slice(&a.to_be_bytes());
    u[8..].copy_from_slice(&b.to_be_bytes());
    u
}

impl Segment {
    /// One word of element `i` of region `r` at byte offset `off` in the element.
    fn elem_word(&self, r: Region, i: u64, off: usize) -> Option<&AtomicU64> {
        let d = self.region(r);
        if i >= d.capacity || off + 8 > d.elem_size as usize {
            return None;
        }
        self.map.u64_at(d.offset as usize + (i * d.elem_size) as usize + off)
    }

    fn elem_load(&self, r: Region, i: u64, off: usize) -> u64 {
        self.elem_word(r, i, off).map_or(0, |w| w.load(Ordering::Acquire))
    }

    /// Judges a lock word's holder: free, dead, forged (a live process that does not map
    /// this segment, so it cannot be inside a lock of it), or live.
    pub(crate) fn lock_holder(&self, tag: u64) -> Holder {
        if tag == 0 {
            return Holder::Free;
        }
        let t = OwnerTag(tag);
        if !t.is_alive() {
            return Holder::Dead;
        }
        if t.pid() == std::process::id() {
            return Holder::Live;
        }
        match crate::sys::process_maps_path(t.pid(), &self.path()) {
            Some(false) => Holder::Forged,
            _ => Holder::Live,
        }
    }

    /// Whether a lock held by `tag` may be taken over: its holder is dead or forged.
    pub(crate) fn holder_gone(&self, tag: u64) -> bool {
        matches!(self.lock_holder(tag), Holder::Dead | Holder::Forged)
    }

    /// Node slots whose writer lock is held by a live process that maps the segment:
    /// `(slot, tag, seq)`. Watching it twice tells a stuck lock from a busy one.
    pub(crate) fn live_node_locks(&self) -> Vec<(u32, u64, u64)> {
        let mut out = Vec::new();
        for i in 0..self.caps.nodes {
            let Some(s) = self.slot(i) else { break };
            let tag = s.lock().load(Ordering::Acquire);
            if tag != 0 && self.lock_holder(tag) == Holder::Live {
                out.push((i, tag, s.seq().load(Ordering::Acquire)));
            }
        }
        out
    }

    /// Every node slot's control words, decoded.
    pub(crate) fn node_slot_controls(&self) -> Vec<SlotControl> {
        let mut out = Vec::with_capacity(self.caps.nodes as usize);
        for i in 0..self.caps.nodes {
            let Some(s) = self.slot(i) else { break };
            let gs = s.gen_state().load(Ordering::Acquire);
            out.push(SlotControl {
                index: i,
                seq: s.seq().load(Ordering::Acquire),
                lock: s.lock().load(Ordering::Acquire),
                generation: gen_of(gs),
                state: state_of(gs),
            });
        }
        out
    }

    /// The header's two lock words: the agent table's join lock and the dependency-edge
    /// lock (0 or the holder's owner tag).
    pub(crate) fn header_lock_words(&self) -> [u64; 2] {
        [hdr::AGENTS_LOCK, hdr::DEPS_LOCK].map(|o| self.hdr(o).load(Ordering::Acquire))
    }

    /// Every event ring slot's control words, decoded against the tail.
    pub(crate) fn ring_slot_controls(&self) -> Vec<RingSlotControl> {
        let r = self.region(Region::Events);
        let tail = self.hdr(hdr::RING_TAIL).load(Ordering::Acquire);
        let mask = r.capacity.saturating_sub(1);
        let (stamp, owner) = (offset_of!(layout::EventSlot, stamp), offset_of!(layout::EventSlot, owner));
        (0..r.capacity)
            .map(|i| {
                let st = crate::ring::Stamp::from_raw(self.elem_load(Region::Events, i, stamp));
                let expected = tail.checked_sub(1).filter(|last| *last >= i).map(|last| last - ((last - i) & mask));
                RingSlotControl {
                    index: i,
                    stamp: st,
                    owner: self.elem_load(Region::Events, i, owner),
                    expected,
                    unpublished: expected.is_some_and(|e| crate::ring::unpublished_stamp(st, e)),
                }
            })
            .collect()
    }

    /// Walks one free list, bounded by its region's capacity.
    fn check_free_list(&self, spec: &ListSpec, out: &mut Vec<Damage>) {
        let cap = self.region(spec.region).capacity;
        let mut seen = vec![false; cap as usize];
        let mut cur = crate::freelist::FreeHead::from_raw(self.hdr(spec.head).load(Ordering::Acquire)).top();
        let mut from = "the head".to_string();
        while cur != 0 {
            let i = cur - 1;
            if i >= cap {
                out.push(Damage::new(
                    DamageClass::FreeListOutOfRange,
                    format!("{} free list: {from} names slot {i}, outside the {cap} slots", spec.name),
                ));
                return;
            }
            if seen[i as usize] {
                out.push(Damage::new(
                    DamageClass::FreeListCycle,
                    format!("{} free list: {from} leads back to slot {i}: a cycle", spec.name),
                ));
                return;
            }
            seen[i as usize] = true;
            let gs = self.elem_load(spec.region, i, spec.gen_state);
            if state_of(gs) != slot::FREE {
                out.push(Damage::new(
                    DamageClass::FreeListNotFree,
                    format!(
                        "{} free list: {from} names slot {i}, which is not free (state {})",
                        spec.name,
                        state_of(gs)
                    ),
                ));
                return;
            }
            cur = self.elem_load(spec.region, i, spec.next_free);
            if cur > u32::MAX as u64 {
                out.push(Damage::new(
                    DamageClass::FreeListOutOfRange,
                    format!("{} free list: slot {i}'s link {cur:#x} is not a slot", spec.name),
                ));
                return;
            }
            from = format!("slot {i}'s link");
        }
    }

    /// Every damage found in the segment now, by a read-only scan (O(segment)). On a
    /// live segment a finding may be a moment's disagreement (a write in flight):
    /// callers that need certainty scan again and keep what persists. Stuck locks are not
    /// found here (see `live_node_locks`).
    pub(crate) fn damage(&self) -> Vec<Damage> {
        let mut out = Vec::new();
        let mut fixed = [0u64; FIXED_WORDS];
        if let Some(w) = self.map.words_at(0, FIXED_WORDS) {
            load_words(w, &mut fixed);
        }
        out.extend(check_fixed(&fixed, self.map.len() as u64));
        out.extend(check_state_word(self.hdr(hdr::STATE).load(Ordering::Acquire)));
        let daemon = OwnerTag(self.hdr(hdr::DAEMON_TAG).load(Ordering::Acquire));
        if !daemon.is_alive() {
            out.push(Damage::new(DamageClass::DaemonGone, format!("the daemon (pid {}) is not running", daemon.pid())));
        }
        let c = Hlc(self.hdr(hdr::CLOCK).load(Ordering::Acquire));
        if clock::too_far_ahead(c, clock::unix_ms()) {
            out.push(clock_damage(c));
        }
        for spec in [&NODE_LIST, &BLOB_LIST, &SET_LIST] {
            self.check_free_list(spec, &mut out);
        }
        let live = self.check_node_slots(&mut out);
        self.check_index(&mut out);
        self.check_tree(&live, &mut out);
        self.check_ring(&mut out);
        let agents = self.check_agents(&mut out);
        let chunks = self.check_blob_slots(&mut out);
        let sets = self.check_set_slots(&mut out);
        let counter = |out: &mut Vec<Damage>, name: &str, offset: usize, actual: u64, cap: u64| {
            let v = self.hdr(offset).load(Ordering::Relaxed);
            if v > cap {
                out.push(Damage::new(
                    DamageClass::Counters,
                    format!("{name} counter is {v}, above the capacity {cap}"),
                ));
            } else if v != actual {
                out.push(Damage::new(DamageClass::Counters, format!("{name} counter is {v}, the slots show {actual}")));
            }
        };
        counter(&mut out, "live nodes", hdr::POOL_USED, live.len() as u64, self.caps.nodes as u64);
        counter(&mut out, "agents in use", hdr::AGENTS_USED, agents, self.caps.agents as u64);
        counter(&mut out, "blob chunks in use", hdr::BLOBS_USED, chunks, self.caps.blob_chunks as u64);
        counter(&mut out, "sets in use", hdr::SETS_USED, sets, self.caps.sets as u64);
        let (used, tombs) = self.index_counts();
        let index_cap = self.region(Region::Index).capacity;
        counter(&mut out, "index entries", hdr::INDEX_USED, used, index_cap);
        counter(&mut out, "index tombstones", hdr::INDEX_TOMBSTONES, tombs, index_cap);
        let probe = self.hdr(hdr::INDEX_MAX_PROBE).load(Ordering::Relaxed);
        if probe > index_cap {
            out.push(Damage::new(
                DamageClass::Counters,
                format!("largest index probe is {probe}, above the capacity {index_cap}"),
            ));
        }
        let created = self.hdr(hdr::CREATED).load(Ordering::Relaxed);
        let deleted = self.hdr(hdr::DELETED).load(Ordering::Relaxed);
        if deleted > created {
            out.push(Damage::new(DamageClass::Counters, format!("{deleted} nodes deleted but only {created} created")));
        }
        out
    }

    /// Per-slot checks of the node pool; returns the live handles with their records.
    fn check_node_slots(&self, out: &mut Vec<Damage>) -> Vec<(Handle, NodeRecord)> {
        let mut live = Vec::new();
        for i in 0..self.caps.nodes {
            let Some(s) = self.slot(i) else { break };
            let gs = s.gen_state().load(Ordering::Acquire);
            let lock = s.lock().load(Ordering::Acquire);
            match self.lock_holder(lock) {
                Holder::Dead => out.push(Damage::new(
                    DamageClass::LockDead,
                    format!("node slot {i} is locked by process {}, which is gone", OwnerTag(lock).pid()),
                )),
                Holder::Forged => out.push(Damage::new(
                    DamageClass::LockForged,
                    format!(
                        "node slot {i} is locked by live process {}, which does not map the segment: a forged lock",
                        OwnerTag(lock).pid()
                    ),
                )),
                Holder::Free if s.seq().load(Ordering::Acquire) & 1 == 1 => out.push(Damage::new(
                    DamageClass::SeqOdd,
                    format!("node slot {i} has an odd seqlock word with no writer holding its lock"),
                )),
                _ => {}
            }
            if !state_is_valid(gs) {
                out.push(Damage::new(DamageClass::SlotState, format!("node slot {i} has state word {gs:#x}")));
                continue;
            }
            if state_of(gs) != slot::LIVE {
                continue;
            }
            let h = Handle { index: i, generation: gen_of(gs) };
            let mut words = [0u64; RECORD_WORDS];
            if crate::seqlock::read(s.seq(), s.copies(), &mut words).is_none() {
                continue;
            }
            let rec: NodeRecord = bytemuck::cast(words);
            if NodeKind::from_code(rec.kind).is_none()
                || Status::from_code(rec.status).is_none()
                || rec.name_len as usize > NAME_MAX
                || rec.desc_len as usize > DESCRIPTION_MAX
                || rec.progress > 100
            {
                out.push(Damage::new(
                    DamageClass::RecordEnum,
                    format!(
                        "node slot {i}: kind {}, status {}, name length {}, description length {}, progress {} (out of range)",
                        rec.kind, rec.status, rec.name_len, rec.desc_len, rec.progress
                    ),
                ));
            }
            let wall = clock::unix_ms();
            if clock::too_far_ahead(Hlc(rec.updated), wall) || clock::too_far_ahead(Hlc(rec.created), wall) {
                // The trace a damaged clock leaves after a writer reset it.
                out.push(Damage::new(
                    DamageClass::ClockAhead,
                    format!(
                        "node slot {i} carries a stamp ({}) far ahead of wall time",
                        Hlc(rec.updated.max(rec.created))
                    ),
                ));
            }
            let summary = s.summary().load(Ordering::Acquire);
            if s.lock().load(Ordering::Acquire) == 0 && summary != crate::pool::summary_of(&rec) {
                out.push(Damage::new(
                    DamageClass::Summary,
                    format!("node slot {i}: summary word {summary:#x} disagrees with its record"),
                ));
            }
            if rec.doc_blob != 0 || rec.doc_len != 0 {
                if let Err(what) = self.check_document_content(&rec) {
                    out.push(Damage::new(DamageClass::BlobChain, format!("node slot {i}: {what}")));
                }
            }
            live.push((h, rec));
        }
        live
    }

    fn index_counts(&self) -> (u64, u64) {
        let Ok(idx) = self.index() else { return (0, 0) };
        let mut used = 0;
        let mut tombs = 0;
        for e in idx.entries {
            match e.load(Ordering::Relaxed) {
                0 => {}
                1 => tombs += 1,
                _ => used += 1,
            }
        }
        (used, tombs)
    }

    fn check_index(&self, out: &mut Vec<Damage>) {
        let Ok(idx) = self.index() else {
            out.push(Damage::new(DamageClass::HeaderRegions, "the index region lies outside the segment"));
            return;
        };
        let mut named = vec![false; self.caps.nodes as usize];
        for (k, e) in idx.entries.iter().enumerate() {
            let e = crate::index::Entry::from_raw(e.load(Ordering::Acquire));
            if e.is_vacant() {
                continue;
            }
            let i = e.slot();
            let Some(s) = self.slot(i as u32).filter(|_| i < self.caps.nodes as u64) else {
                out.push(Damage::new(
                    DamageClass::IndexEntry,
                    format!("index entry {k} names slot {i}, outside the pool"),
                ));
                continue;
            };
            if std::mem::replace(&mut named[i as usize], true) {
                out.push(Damage::new(
                    DamageClass::IndexEntry,
                    format!("index entry {k} names slot {i}, which another entry names too"),
                ));
                continue;
            }
            let gs = s.gen_state().load(Ordering::Acquire);
            if state_of(gs) != slot::LIVE {
                out.push(Damage::new(
                    DamageClass::IndexEntry,
                    format!("index entry {k} names slot {i}, which is not live (state {})", state_of(gs)),
                ));
                continue;
            }
            let [a, b] = s.uuid_words();
            let uuid = slot_uuid(a.load(Ordering::Acquire), b.load(Ordering::Acquire));
            if !e.fingerprint_matches(crate::index::hash(&uuid)) {
                out.push(Damage::new(
                    DamageClass::IndexEntry,
                    format!("index entry {k} names slot {i}, whose UUID does not match the entry"),
                ));
            }
        }
    }

    fn check_tree(&self, live: &[(Handle, NodeRecord)], out: &mut Vec<Damage>) {
        let cap = self.caps.nodes as u64;
        let by_index: std::collections::HashMap<u32, &NodeRecord> = live.iter().map(|(h, r)| (h.index, r)).collect();
        for (h, _) in live {
            let Some(s) = self.slot(h.index) else { continue };
            if s.child_seq().load(Ordering::Acquire) & 1 == 1 || s.lock().load(Ordering::Acquire) != 0 {
                continue; // changing now, or repaired by whoever takes the lock over
            }
            let count = s.child_count().load(Ordering::Acquire);
            let mut cur = s.first_child().load(Ordering::Acquire);
            let mut prev = 0u64;
            let mut n = 0u64;
            let mut bad: Option<String> = None;
            while cur != 0 {
                let i = cur - 1;
                if i >= cap {
                    bad = Some(format!("a child link names slot {i}, outside the pool"));
                    break;
                }
                n += 1;
                if n > cap {
                    bad = Some("its child links run in a cycle".to_string());
                    break;
                }
                match by_index.get(&(i as u32)) {
                    None => {
                        bad = Some(format!("its child list names slot {i}, which is not live"));
                        break;
                    }
                    Some(r) if r.parent != h.to_raw() => {
                        bad = Some(format!("its child list names slot {i}, whose parent is another node"));
                        break;
                    }
                    Some(_) => {}
                }
                let Some(c) = self.slot(i as u32) else { break };
                if c.prev_sibling().load(Ordering::Acquire) != prev {
                    bad = Some(format!("slot {i}'s previous-sibling link disagrees with the list"));
                    break;
                }
                prev = cur;
                cur = c.next_sibling().load(Ordering::Acquire);
            }
            if bad.is_none() && n != count {
                bad = Some(format!("its child count is {count}, its child list holds {n}"));
            }
            if bad.is_none() && s.last_child().load(Ordering::Acquire) != prev {
                bad = Some("its last-child link disagrees with the list".to_string());
            }
            if let Some(what) = bad {
                out.push(Damage::new(DamageClass::ChildLinks, format!("node slot {}: {what}", h.index)));
            }
        }
    }

    fn check_ring(&self, out: &mut Vec<Damage>) {
        let r = self.region(Region::Events);
        let tail = self.hdr(hdr::RING_TAIL).load(Ordering::Acquire);
        let mask = r.capacity.saturating_sub(1);
        let mut reported = 0;
        for i in 0..r.capacity {
            let stamp = self.elem_load(Region::Events, i, 0);
            let why = crate::ring::implausible_stamp(stamp, i, tail, mask);
            if let Some(why) = why {
                reported += 1;
                if reported <= 8 {
                    out.push(Damage::new(
                        DamageClass::RingStamp,
                        format!("event slot {i} has stamp {stamp:#x}: {why}"),
                    ));
                }
            }
        }
    }

    /// Checks the agent table; returns how many slots are live.
    fn check_agents(&self, out: &mut Vec<Damage>) -> u64 {
        let mut live = 0;
        let words = size_of::<AgentSlot>() / 8;
        let r = self.region(Region::Agents);
        for i in 0..r.capacity {
            let Some(w) = self.map.words_at(r.offset as usize + (i * r.elem_size) as usize, words) else { break };
            let mut buf = [0u64; size_of::<AgentSlot>() / 8];
            load_words(w, &mut buf);
            let a: AgentSlot = bytemuck::cast(buf);
            if !state_is_valid(a.gen_state) {
                out.push(Damage::new(
                    DamageClass::AgentSlot,
                    format!("agent slot {i} has state word {:#x}", a.gen_state),
                ));
                continue;
            }
            if state_of(a.gen_state) != slot::LIVE {
                continue;
            }
            live += 1;
            let name_ok = (a.name_len as usize) <= AGENT_NAME_MAX
                && a.name_len > 0
                && std::str::from_utf8(&a.name[..a.name_len as usize]).is_ok();
            let role_ok =
                (a.role_len as usize) <= AGENT_ROLE_MAX && std::str::from_utf8(&a.role[..a.role_len as usize]).is_ok();
            let node_ok =
                Handle::from_raw(a.node).is_some_and(|h| self.read(h).is_ok_and(|n| n.kind() == Some(NodeKind::Agent)));
            if !name_ok || !role_ok || !node_ok {
                let what = if !name_ok {
                    "its name"
                } else if !role_ok {
                    "its role"
                } else {
                    "its node"
                };
                out.push(Damage::new(DamageClass::AgentSlot, format!("agent slot {i}: {what} is garbage")));
            }
        }
        live
    }

    /// Checks blob chunk states; returns how many chunks are live.
    fn check_blob_slots(&self, out: &mut Vec<Damage>) -> u64 {
        let mut live = 0;
        for i in 0..self.region(Region::Blobs).capacity {
            let gs = self.elem_load(Region::Blobs, i, BLOB_LIST.gen_state);
            if !state_is_valid(gs) {
                out.push(Damage::new(DamageClass::BlobChain, format!("blob chunk {i} has state word {gs:#x}")));
            } else if state_of(gs) == slot::LIVE {
                live += 1;
            }
        }
        live
    }

    /// Checks set slots; returns how many are live.
    fn check_set_slots(&self, out: &mut Vec<Damage>) -> u64 {
        let mut live = 0;
        let entries = offset_of!(layout::SetSlot, entries);
        let entry = size_of::<layout::SetEntry>();
        for i in 0..self.region(Region::Sets).capacity {
            let gs = self.elem_load(Region::Sets, i, SET_LIST.gen_state);
            if !state_is_valid(gs) {
                out.push(Damage::new(DamageClass::SetSlot, format!("set slot {i} has state word {gs:#x}")));
                continue;
            }
            if state_of(gs) != slot::LIVE {
                continue;
            }
            live += 1;
            let node = self.elem_load(Region::Sets, i, offset_of!(layout::SetSlot, node));
            let owner_ok =
                Handle::from_raw(node).is_some_and(|h| self.read(h).is_ok_and(|n| n.rec.set_slot as u64 == i + 1));
            let bad_entry = (0..layout::SET_ENTRIES).any(|e| {
                crate::orset::entry_generation(self.elem_load(Region::Sets, i, entries + e * entry)) > gen_of(gs)
            });
            if !owner_ok {
                out.push(Damage::new(
                    DamageClass::SetSlot,
                    format!("set slot {i} names node {node:#x}, which does not name it back"),
                ));
            } else if bad_entry {
                out.push(Damage::new(
                    DamageClass::SetSlot,
                    format!("set slot {i} has an entry from a later generation than the slot"),
                ));
            }
        }
        live
    }
}

/// The daemon's copy of the header it validated at start. [`HeaderGuard::check`], called every second, compares the segment with it,
/// repairs what it can and returns every damage it found.
#[derive(Clone, Debug)]
pub struct HeaderGuard {
    fixed: [u64; FIXED_WORDS],
    daemon_tag: u64,
}

impl HeaderGuard {
    /// The fixed header of `seg` as it was validated by create/adopt/attach: every field
    /// attach checks is rebuilt from what this process validated and keeps in memory (the
    /// geometry, the constants), so damage written between validation and this call is
    /// not taken for the truth; the fields attach cannot check (creation time, the agents
    /// container, reserved words) are copied. The daemon identity is this process's.
    pub fn new(seg: &Daemon) -> HeaderGuard {
        let mut words = [0u64; FIXED_WORDS];
        if let Some(w) = seg.map.words_at(0, FIXED_WORDS) {
            load_words(w, &mut words);
        }
        let mut f: HeaderFixed = bytemuck::cast(words);
        f.magic = MAGIC;
        f.layout_version = LAYOUT_VERSION;
        f.header_size = HEADER_SIZE as u32;
        f.record_size = size_of::<NodeRecord>() as u32;
        f.segment_size = seg.geo.total;
        f.blob_chunk_size = seg.caps.blob_chunk_size;
        f.regions = seg.geo.regions;
        let fixed: [u64; FIXED_WORDS] = bytemuck::cast(f);
        HeaderGuard { fixed, daemon_tag: seg.hdr(hdr::DAEMON_TAG).load(Ordering::Acquire) }
    }

    /// Checks the header against the copy (repairing the fixed words, the state word and
    /// the daemon's identity from it), the clock (a word far ahead is reset to wall
    /// time), the free-list heads and the usage counters (reported). Daemon only: it
    /// assumes the segment is Ready while the daemon serves it.
    pub fn check(&mut self, seg: &Daemon) -> Vec<Damage> {
        let mut out = Vec::new();
        if !seg.map.writable() {
            return out;
        }
        let Some(w) = seg.map.words_at(0, FIXED_WORDS) else { return out };
        let mut now = [0u64; FIXED_WORDS];
        load_words(w, &mut now);
        if now != self.fixed {
            for mut d in check_fixed(&now, seg.map.len() as u64) {
                d.repaired = true;
                out.push(d);
            }
            if out.is_empty() {
                out.push(Damage {
                    class: DamageClass::HeaderRegions,
                    detail: "a fixed header word changed".into(),
                    repaired: true,
                });
            }
            for (word, v) in w.iter().zip(self.fixed) {
                word.store(v, Ordering::Relaxed);
            }
            crate::sync::fence(Ordering::Release);
        }
        let st = seg.hdr(hdr::STATE);
        let v = st.load(Ordering::Acquire);
        if v != state::READY
            && v != state::CLOSING
            && st.compare_exchange(v, state::READY, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            out.push(Damage {
                class: DamageClass::StateWord,
                detail: format!("state word was {v:#x} while the daemon serves; set back to ready"),
                repaired: true,
            });
        }
        let tag = seg.hdr(hdr::DAEMON_TAG);
        let t = tag.load(Ordering::Acquire);
        if t != self.daemon_tag {
            tag.store(self.daemon_tag, Ordering::Release);
            out.push(Damage {
                class: DamageClass::DaemonGone,
                detail: format!("daemon tag was {t:#x} (pid {}), not this daemon's", OwnerTag(t).pid()),
                repaired: true,
            });
        }
        let c = seg.hdr(hdr::CLOCK);
        let v = c.load(Ordering::Acquire);
        let wall = clock::unix_ms();
        if clock::too_far_ahead(Hlc(v), wall) {
            let mut d = clock_damage(Hlc(v));
            d.repaired = c.compare_exchange(v, Hlc::from_wall_ms(wall).0, Ordering::AcqRel, Ordering::Relaxed).is_ok();
            out.push(d);
        }
        for spec in [&NODE_LIST, &BLOB_LIST, &SET_LIST] {
            let head = crate::freelist::FreeHead::from_raw(seg.hdr(spec.head).load(Ordering::Acquire)).top();
            let cap = seg.region(spec.region).capacity;
            if head > cap {
                out.push(Damage::new(
                    DamageClass::FreeListOutOfRange,
                    format!("{} free-list head names slot {}, outside the {cap} slots", spec.name, head - 1),
                ));
            } else if head != 0 && state_of(seg.elem_load(spec.region, head - 1, spec.gen_state)) != slot::FREE {
                out.push(Damage::new(
                    DamageClass::FreeListNotFree,
                    format!("{} free-list head names slot {}, which is not free", spec.name, head - 1),
                ));
            }
        }
        for (name, offset, cap) in [
            ("live nodes", hdr::POOL_USED, seg.caps.nodes as u64),
            ("agents in use", hdr::AGENTS_USED, seg.caps.agents as u64),
            ("blob chunks in use", hdr::BLOBS_USED, seg.caps.blob_chunks as u64),
            ("sets in use", hdr::SETS_USED, seg.caps.sets as u64),
            ("index entries", hdr::INDEX_USED, seg.region(Region::Index).capacity),
        ] {
            let v = seg.hdr(offset).load(Ordering::Relaxed);
            if v > cap {
                out.push(Damage::new(
                    DamageClass::Counters,
                    format!("{name} counter is {v}, above the capacity {cap}"),
                ));
            }
        }
        out
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::layout::Capacities;
    use crate::node::NewNode;
    use crate::testing::temp_segment;

    fn classes(seg: &Segment) -> Vec<DamageClass> {
        seg.damage().into_iter().map(|d| d.class).collect()
    }

    #[test]
    fn ring_slot_controls_decode_stamps_against_the_tail() {
        let caps = Capacities { nodes: 8, events: 4, agents: 2, blob_chunks: 1, sets: 1, ..Capacities::default() };
        let s = temp_segment("ring-slots", &caps);
        let seg = &s.seg;
        let tail = seg.ring_tail();
        for _ in 0..6 - tail {
            seg.append(&crate::NewEvent::new(crate::EventKind::USER)).unwrap();
        }
        // Six sequences in four slots: slots 0 and 1 hold the second lap (4, 5).
        let slots = seg.inspect().ring_slot_controls();
        let expected: Vec<Option<u64>> = slots.iter().map(|c| c.expected).collect();
        assert_eq!(expected, vec![Some(4), Some(5), Some(2), Some(3)]);
        assert!(slots.iter().all(|c| !c.unpublished && c.owner == 0), "{slots:?}");

        // A sequence claimed but never published (a producer that died after the claim).
        seg.hdr(hdr::RING_TAIL).fetch_add(1, Ordering::Relaxed);
        let slots = seg.inspect().ring_slot_controls();
        assert_eq!((slots[2].expected, slots[2].unpublished), (Some(6), true));
        assert!(slots.iter().filter(|c| c.index != 2).all(|c| !c.unpublished));
    }

    #[test]
    fn a_healthy_segment_shows_no_damage_and_each_injected_damage_is_named() {
        let caps = Capacities { nodes: 32, events: 256, agents: 4, blob_chunks: 8, sets: 4, ..Capacities::default() };
        let s = temp_segment("inspect", &caps);
        let seg = &s.seg;
        let t = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "t")).unwrap();
        let _ = seg.add(t, &NewNode::new(NodeKind::Task, "child")).unwrap();
        let doc = seg.put_document(seg.root(), "doc", "text/plain", &vec![7u8; 5000]).unwrap();
        seg.set_add(t, 42).unwrap();
        seg.join("agent-a", "worker").unwrap();
        assert_eq!(seg.damage(), vec![], "a healthy segment");

        // The clock a century ahead.
        let c = seg.hdr(hdr::CLOCK);
        let saved = c.load(Ordering::Relaxed);
        c.store(Hlc::from_wall_ms(clock::unix_ms() + 100 * 365 * 86_400_000).0, Ordering::Relaxed);
        assert!(classes(seg).contains(&DamageClass::ClockAhead));
        c.store(saved, Ordering::Relaxed);

        // A document chunk's bytes changed: the CRC no longer matches.
        let rec = seg.read(doc).unwrap().rec;
        let first = rec.doc_blob as u32 as u64;
        let w = seg.elem_word(Region::Blobs, first, size_of::<layout::BlobChunkHeader>()).unwrap();
        w.store(w.load(Ordering::Relaxed) ^ 1, Ordering::Relaxed);
        assert!(classes(seg).contains(&DamageClass::BlobChain));
        w.store(w.load(Ordering::Relaxed) ^ 1, Ordering::Relaxed);

        // A summary word that disagrees with its record.
        let sum = seg.slot(t.index).unwrap().summary();
        let v = sum.load(Ordering::Relaxed);
        sum.store(v ^ 0xff00, Ordering::Relaxed);
        assert!(classes(seg).contains(&DamageClass::Summary));
        sum.store(v, Ordering::Relaxed);

        // A child list that runs into itself.
        let fc = seg.slot(t.index).unwrap().first_child();
        let v = fc.load(Ordering::Relaxed);
        let child = seg.slot((v - 1) as u32).unwrap();
        child.next_sibling().store(v, Ordering::Relaxed);
        assert!(classes(seg).contains(&DamageClass::ChildLinks));
        child.next_sibling().store(0, Ordering::Relaxed);

        // A garbage state word in each table.
        for (r, off, class) in [
            (Region::Nodes, slot::GEN_STATE, DamageClass::SlotState),
            (Region::Agents, 0, DamageClass::AgentSlot),
            (Region::Sets, 0, DamageClass::SetSlot),
            (Region::Blobs, 0, DamageClass::BlobChain),
        ] {
            let last = seg.region(r).capacity - 1;
            let w = seg.elem_word(r, last, off).unwrap();
            let v = w.load(Ordering::Relaxed);
            w.store(v | 0x77, Ordering::Relaxed);
            assert!(classes(seg).contains(&class), "{class}");
            w.store(v, Ordering::Relaxed);
        }
        assert_eq!(seg.damage(), vec![], "all undone");
    }

    #[test]
    fn the_guard_restores_the_fixed_header_and_the_state_word_and_resets_the_clock() {
        let caps = Capacities { nodes: 8, events: 64, agents: 2, blob_chunks: 1, sets: 1, ..Capacities::default() };
        let s = temp_segment("guard", &caps);
        let seg = &s.seg;
        let mut g = HeaderGuard::new(seg);
        assert_eq!(g.check(seg), vec![]);
        seg.hdr(0).store(0xdead, Ordering::Relaxed);
        seg.hdr(hdr::STATE).store(0x55, Ordering::Relaxed);
        seg.hdr(hdr::CLOCK).store(Hlc::from_wall_ms(clock::unix_ms() + 86_400_000).0, Ordering::Relaxed);
        let found: Vec<DamageClass> = g.check(seg).into_iter().filter(|d| d.repaired).map(|d| d.class).collect();
        assert!(found.contains(&DamageClass::HeaderMagic), "{found:?}");
        assert!(found.contains(&DamageClass::StateWord), "{found:?}");
        assert!(found.contains(&DamageClass::ClockAhead), "{found:?}");
        assert_eq!(seg.hdr(0).load(Ordering::Relaxed), MAGIC);
        assert_eq!(seg.state(), crate::SegmentState::Ready);
        assert!(!clock::too_far_ahead(Hlc(seg.hdr(hdr::CLOCK).load(Ordering::Relaxed)), clock::unix_ms()));
        assert_eq!(g.check(seg), vec![]);
        assert_eq!(inspect_header(seg.name()).unwrap(), vec![]);
    }
}
