//! The segment's byte layout: `#[repr(C)]` structs, their sizes pinned at compile time,
//! and the geometry that places each region.
//!
//! Everything here is plain data (`bytemuck::Pod`). Words that other processes change
//! concurrently are declared as `u64` here only to fix their position; they are accessed
//! at run time through atomic views (`sync::Mapping`) at the offsets computed with
//! `offset_of!`, never through a reference to these structs.
//!
//! ```text
//! 0        Header (1 KiB): fixed part, then one cache line per group of hot words
//! 4 KiB    node pool      nodes × NodeSlot (1536 B: 128 B control + 2 × 704 B record)
//! ...      id index       pow2 ≥ 2·nodes × u64 entries
//! ...      event ring     pow2 events × EventSlot (192 B)
//! ...      agent table    agents × AgentSlot (256 B)
//! ...      blob arena     chunks × (64 B control + chunk bytes)
//! ...      set slots      sets × SetSlot (64 B control + 32 × 32 B entries)
//! ```
//! Each region starts on a 4 KiB boundary. Offsets, never pointers: the segment maps at
//! a different address in every process.

use bytemuck::{Pod, Zeroable};
use std::mem::{align_of, offset_of, size_of};

/// First eight bytes of every Worknode segment (`b"WRKNODE\0"` read as little-endian).
pub const MAGIC: u64 = u64::from_le_bytes(*b"WRKNODE\0");
/// Version of this layout. Bumped on any change to a struct in this module.
pub const LAYOUT_VERSION: u32 = 6;
/// Size of the header region in bytes.
pub const HEADER_SIZE: usize = 1024;
/// Regions start on this boundary.
pub const REGION_ALIGN: u64 = 4096;
/// Maximum length of a node name in bytes (UTF-8).
pub const NAME_MAX: usize = 64;
/// Maximum length of a node's inline description in bytes (UTF-8).
pub const DESCRIPTION_MAX: usize = 256;
/// Agents that can be assigned to one node.
pub const ASSIGNEES_MAX: usize = 8;
/// Blockers one node can have.
pub const BLOCKERS_MAX: usize = 8;
/// Entries in one observed-remove set.
pub const SET_ENTRIES: usize = 32;
/// Maximum length of an agent name in bytes.
pub const AGENT_NAME_MAX: usize = 64;
/// Maximum length of an agent role in bytes.
pub const AGENT_ROLE_MAX: usize = 32;
/// Maximum length of a document content type in bytes.
pub const CONTENT_TYPE_MAX: usize = 32;
/// Inline payload bytes of one event.
pub const EVENT_PAYLOAD_MAX: usize = 88;
/// Bytes of an event's topic (the name of an application event kind).
pub const EVENT_TOPIC_MAX: usize = 24;

/// Segment lifecycle, stored in [`ControlLine::state`].
pub mod state {
    /// Zeroed memory: the daemon is still laying the segment out.
    pub const INITIALIZING: u64 = 0;
    /// Open for clients.
    pub const READY: u64 = 1;
    /// The daemon is shutting down; clients should detach.
    pub const CLOSING: u64 = 2;
}

/// One region's place in the segment.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct RegionDesc {
    /// Byte offset from the start of the segment.
    pub offset: u64,
    /// Number of elements.
    pub capacity: u64,
    /// Size of one element in bytes.
    pub elem_size: u64,
    /// Total bytes of the region (capacity × elem_size).
    pub bytes: u64,
}

/// Index of each region in [`HeaderFixed::regions`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Region {
    /// Node slots.
    Nodes = 0,
    /// UUID → slot index entries.
    Index = 1,
    /// Event ring slots.
    Events = 2,
    /// Agent table slots.
    Agents = 3,
    /// Blob arena chunks.
    Blobs = 4,
    /// Observed-remove set slots.
    Sets = 5,
}

/// Number of regions.
pub const REGION_COUNT: usize = 6;
/// Region names, in [`Region`] order, for inspectors.
pub const REGION_NAMES: [&str; REGION_COUNT] = ["nodes", "index", "events", "agents", "blobs", "sets"];

/// The part of the header written once, before the segment is marked Ready.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct HeaderFixed {
    /// [`MAGIC`].
    pub magic: u64,
    /// [`LAYOUT_VERSION`] of the writer.
    pub layout_version: u32,
    /// [`HEADER_SIZE`] of the writer.
    pub header_size: u32,
    /// Total size of the segment in bytes.
    pub segment_size: u64,
    /// Wall-clock creation time, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// Size of one node record (one of the two copies in a slot).
    pub record_size: u32,
    /// Payload bytes of one blob chunk.
    pub blob_chunk_size: u32,
    /// Where each region lies, in [`Region`] order.
    pub regions: [RegionDesc; REGION_COUNT],
    /// Raw handle of the `agents` container under the root (agent nodes live there).
    pub agents_node: u64,
    /// What the daemon requires of clients, [`policy`] bits (zero: trusted mode). The
    /// daemon writes it before it opens the segment (or on adoption), so it is part of
    /// the fixed header its guard watches.
    pub policy: u64,
    /// Zero; room for later fields without moving the hot lines.
    pub reserved: [u64; 1],
}

/// Bits of [`HeaderFixed::policy`].
pub mod policy {
    /// Direct-mode clients must present a capability token (`worknoded --require-tokens`).
    pub const TOKENS_REQUIRED: u64 = 1 << 0;
    /// The broker accepts agents of other users (`worknoded --broker`).
    pub const BROKER_OPEN: u64 = 1 << 1;
}

/// Lifecycle and daemon identity (one cache line).
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct ControlLine {
    /// One of [`state`].
    pub state: u64,
    /// Owner tag (pid + process start time) of the daemon that runs the segment.
    pub daemon_tag: u64,
    /// Random id of the daemon instance (changes on every start or adoption).
    pub boot_id: [u64; 2],
    /// When that daemon instance started, Unix milliseconds.
    pub daemon_started_ms: u64,
    /// How many times a restarted daemon adopted this segment.
    pub adopt_count: u64,
    /// Snapshots requested (`wn snapshot` increments it).
    pub snapshot_requests: u64,
    /// Snapshot requests the daemon has served.
    pub snapshots_done: u64,
}

/// The hybrid logical clock's line (see `clock`).
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct ClockLine {
    /// The clock word: wall ms in the high 48 bits, logical counter in the low 16
    /// (`clock::Hlc`). Every writer ticks it.
    pub hlc: u64,
    /// Zero.
    pub reserved: [u64; 7],
}

/// The node pool's line.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct PoolLine {
    /// Free-list head: `tag << 32 | index + 1` (`freelist::FreeHead`).
    pub free_head: u64,
    /// Live nodes.
    pub used: u64,
    /// Zero.
    pub reserved: [u64; 6],
}

/// The id index's line.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct IndexLine {
    /// Live index entries.
    pub used: u64,
    /// Tombstones.
    pub tombstones: u64,
    /// Largest probe displacement any insert has used (only ever raised).
    pub max_probe: u64,
    /// Zero.
    pub reserved: [u64; 5],
}

/// The event ring's tail, alone on its line (every append increments it).
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct RingTailLine {
    /// The next sequence number to claim.
    pub tail: u64,
    /// Zero.
    pub reserved: [u64; 7],
}

/// The event ring's notify line: what parked readers and waking producers share.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct RingNotifyLine {
    /// Futex word (its low 32 bits), bumped by a publish that finds waiters.
    pub notify: u64,
    /// Readers parked on the futex word.
    pub waiters: u64,
    /// Wake syscalls made by producers.
    pub wakes: u64,
    /// Ring slots marked abandoned.
    pub abandoned: u64,
    /// Zero.
    pub reserved: [u64; 4],
}

/// The agent table's line.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct AgentsLine {
    /// Agents in use.
    pub used: u64,
    /// The agent table's join lock (an owner lock).
    pub join_lock: u64,
    /// The dependency graph's edge lock (an owner lock; serialises cycle checks).
    pub deps_lock: u64,
    /// Processes parked in a blocking `claim_next` (the parker tags of every agent
    /// slot, counted): zero lets every change skip the wake-up scan with one load.
    pub claim_parked: u64,
    /// Turn counter of the claim wake-ups: where the next scan of the agent table
    /// starts, so consecutive ready tasks wake different agents.
    pub claim_turn: u64,
    /// The replication bridge's heartbeat: `unix ms << 1 | connected` (`shared`); 0
    /// when no bridge ever ran. Formerly a zero reserved word.
    pub bridge_beat: u64,
    /// Zero.
    pub reserved: [u64; 2],
}

/// The blob arena's and the set table's line.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlobsLine {
    /// Blob free-list head (`freelist::FreeHead`).
    pub blob_free_head: u64,
    /// Blob chunks in use.
    pub blobs_used: u64,
    /// Set free-list head (`freelist::FreeHead`).
    pub set_free_head: u64,
    /// Sets in use.
    pub sets_used: u64,
    /// Zero.
    pub reserved: [u64; 4],
}

/// Node counters.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct CountersLine {
    /// Nodes created.
    pub created: u64,
    /// Node updates.
    pub updated: u64,
    /// Nodes deleted.
    pub deleted: u64,
    /// Claims made (a task taken by an agent, a lapsed claim taken over included).
    /// Formerly a zero reserved word, like the four after it: a build of the same
    /// layout version that does not know them leaves them unchanged (the counts then
    /// miss its work), and nothing reads them as anything else.
    pub claims_made: u64,
    /// Claims whose lease lapsed: released by the daemon's reaper, or taken over by
    /// another claimer.
    pub leases_expired: u64,
    /// Agents reaped because their session process died (`agent_lost`).
    pub agents_lost: u64,
    /// Group-commit fsyncs the daemon's journal made.
    pub journal_fsyncs: u64,
    /// Nanoseconds those fsyncs took, summed (with `journal_fsyncs`, the mean latency).
    pub journal_fsync_ns: u64,
}

/// Durability: what the daemon's journal and the appends waiting on it share.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct JournalLine {
    /// Policy: 0 off, 1 never, 2 batch, 3 always (`durability::Durability`).
    pub durability: u64,
    /// Next sequence the journal has yet to write.
    pub journal_cursor: u64,
    /// Next sequence not yet on disk.
    pub durable_cursor: u64,
    /// Futex (its low 32 bits) the journal sleeps on; bit 0 says it is parked, producers
    /// add 2 and wake it only then (`durability::Segment::journal_sleep`).
    pub journal_wake: u64,
    /// Futex (its low 32 bits) writers waiting for durability sleep on.
    pub durable_notify: u64,
    /// Writers waiting for durability: parked on the futex (low 32 bits), watching the
    /// cursor (high 32 bits).
    pub durable_waiters: u64,
    /// The journal's heartbeat (`durability::Heartbeat`: when it last ran and how stale
    /// it may get).
    pub heartbeat: u64,
    /// The sequence reservation: appends claim only sequences below it (the journal
    /// recorded it on disk first).
    pub seq_reserved: u64,
}

/// Who is parked on the ring's futex (two cache lines).
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct WaiterTagLines {
    /// Each 0 or the owner tag of a parked reader, so a reader killed while parked can
    /// be taken off the waiter count.
    pub tags: [u64; 16],
}

/// The segment header. Hot words each get a cache line of their own so that writers
/// of one do not invalidate readers of another.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Header {
    /// Written once before Ready.
    pub fixed: HeaderFixed,
    /// Lifecycle and daemon identity.
    pub control: ControlLine,
    /// The hybrid logical clock.
    pub clock: ClockLine,
    /// The node pool's free list and usage.
    pub pool: PoolLine,
    /// The id index's usage and probe bound.
    pub index: IndexLine,
    /// The event ring's tail.
    pub ring_tail: RingTailLine,
    /// The event ring's futex, waiters and counters.
    pub ring_notify: RingNotifyLine,
    /// The agent table's usage and the header locks.
    pub agents: AgentsLine,
    /// The blob arena's and set table's free lists and usage.
    pub blobs: BlobsLine,
    /// Node counters.
    pub counters: CountersLine,
    /// Durability: policy, cursors, futexes, heartbeat, reservation.
    pub journal: JournalLine,
    /// Owner tags of readers parked on the ring's futex.
    pub waiter_tags: WaiterTagLines,
}

/// Byte offsets of the header's concurrently written words.
pub mod hdr {
    use super::*;
    /// [`ControlLine::state`].
    pub const STATE: usize = offset_of!(Header, control) + offset_of!(ControlLine, state);
    /// [`ControlLine::daemon_tag`].
    pub const DAEMON_TAG: usize = offset_of!(Header, control) + offset_of!(ControlLine, daemon_tag);
    /// [`ControlLine::boot_id`] (two words).
    pub const BOOT_ID: usize = offset_of!(Header, control) + offset_of!(ControlLine, boot_id);
    /// [`ControlLine::daemon_started_ms`].
    pub const DAEMON_STARTED: usize = offset_of!(Header, control) + offset_of!(ControlLine, daemon_started_ms);
    /// [`ControlLine::adopt_count`].
    pub const ADOPT_COUNT: usize = offset_of!(Header, control) + offset_of!(ControlLine, adopt_count);
    /// [`ControlLine::snapshot_requests`].
    pub const SNAPSHOT_REQUESTS: usize = offset_of!(Header, control) + offset_of!(ControlLine, snapshot_requests);
    /// [`ControlLine::snapshots_done`].
    pub const SNAPSHOTS_DONE: usize = offset_of!(Header, control) + offset_of!(ControlLine, snapshots_done);
    /// [`HeaderFixed::policy`].
    pub const POLICY: usize = offset_of!(Header, fixed) + offset_of!(HeaderFixed, policy);
    /// The hybrid logical clock.
    pub const CLOCK: usize = offset_of!(Header, clock) + offset_of!(ClockLine, hlc);
    /// Free-list head of the node pool.
    pub const POOL_FREE_HEAD: usize = offset_of!(Header, pool) + offset_of!(PoolLine, free_head);
    /// Live node count.
    pub const POOL_USED: usize = offset_of!(Header, pool) + offset_of!(PoolLine, used);
    /// Live index entries.
    pub const INDEX_USED: usize = offset_of!(Header, index) + offset_of!(IndexLine, used);
    /// Index tombstones.
    pub const INDEX_TOMBSTONES: usize = offset_of!(Header, index) + offset_of!(IndexLine, tombstones);
    /// Largest probe displacement any index insert has used.
    pub const INDEX_MAX_PROBE: usize = offset_of!(Header, index) + offset_of!(IndexLine, max_probe);
    /// Counter: nodes created.
    pub const CREATED: usize = offset_of!(Header, counters) + offset_of!(CountersLine, created);
    /// Counter: node updates.
    pub const UPDATED: usize = offset_of!(Header, counters) + offset_of!(CountersLine, updated);
    /// Counter: nodes deleted.
    pub const DELETED: usize = offset_of!(Header, counters) + offset_of!(CountersLine, deleted);
    /// Counter: claims made.
    pub const CLAIMS_MADE: usize = offset_of!(Header, counters) + offset_of!(CountersLine, claims_made);
    /// Counter: leases that lapsed.
    pub const LEASES_EXPIRED: usize = offset_of!(Header, counters) + offset_of!(CountersLine, leases_expired);
    /// Counter: agents reaped after their session process died.
    pub const AGENTS_LOST: usize = offset_of!(Header, counters) + offset_of!(CountersLine, agents_lost);
    /// Counter: the journal's group-commit fsyncs.
    pub const JOURNAL_FSYNCS: usize = offset_of!(Header, counters) + offset_of!(CountersLine, journal_fsyncs);
    /// Counter: nanoseconds those fsyncs took.
    pub const JOURNAL_FSYNC_NS: usize = offset_of!(Header, counters) + offset_of!(CountersLine, journal_fsync_ns);
    /// Agents in use.
    pub const AGENTS_USED: usize = offset_of!(Header, agents) + offset_of!(AgentsLine, used);
    /// The agent table's join lock (an owner lock).
    pub const AGENTS_LOCK: usize = offset_of!(Header, agents) + offset_of!(AgentsLine, join_lock);
    /// Processes parked in a blocking claim, all agents told.
    pub const CLAIM_PARKED: usize = offset_of!(Header, agents) + offset_of!(AgentsLine, claim_parked);
    /// Where the next claim wake-up's scan of the agent table starts.
    pub const CLAIM_TURN: usize = offset_of!(Header, agents) + offset_of!(AgentsLine, claim_turn);
    /// [`AgentsLine::bridge_beat`].
    pub const BRIDGE_BEAT: usize = offset_of!(Header, agents) + offset_of!(AgentsLine, bridge_beat);
    /// The dependency graph's edge lock (an owner lock; serialises cycle checks).
    pub const DEPS_LOCK: usize = offset_of!(Header, agents) + offset_of!(AgentsLine, deps_lock);
    /// Blob free-list head.
    pub const BLOB_FREE_HEAD: usize = offset_of!(Header, blobs) + offset_of!(BlobsLine, blob_free_head);
    /// Blob chunks in use.
    pub const BLOBS_USED: usize = offset_of!(Header, blobs) + offset_of!(BlobsLine, blobs_used);
    /// Set free-list head.
    pub const SET_FREE_HEAD: usize = offset_of!(Header, blobs) + offset_of!(BlobsLine, set_free_head);
    /// Sets in use.
    pub const SETS_USED: usize = offset_of!(Header, blobs) + offset_of!(BlobsLine, sets_used);
    /// Durability policy (see [`JournalLine::durability`]).
    pub const DURABILITY: usize = offset_of!(Header, journal) + offset_of!(JournalLine, durability);
    /// Next sequence the journal has yet to write.
    pub const JOURNAL_CURSOR: usize = offset_of!(Header, journal) + offset_of!(JournalLine, journal_cursor);
    /// Next sequence not yet durable.
    pub const DURABLE_CURSOR: usize = offset_of!(Header, journal) + offset_of!(JournalLine, durable_cursor);
    /// Futex the journal sleeps on (producers under `always` wake it).
    pub const JOURNAL_WAKE: usize = offset_of!(Header, journal) + offset_of!(JournalLine, journal_wake);
    /// Futex writers waiting for durability sleep on.
    pub const DURABLE_NOTIFY: usize = offset_of!(Header, journal) + offset_of!(JournalLine, durable_notify);
    /// Writers waiting for durability.
    pub const DURABLE_WAITERS: usize = offset_of!(Header, journal) + offset_of!(JournalLine, durable_waiters);
    /// The journal's heartbeat (see [`JournalLine::heartbeat`]).
    pub const JOURNAL_HEARTBEAT: usize = offset_of!(Header, journal) + offset_of!(JournalLine, heartbeat);
    /// First sequence an append may not claim until the journal reserves further.
    pub const SEQ_RESERVED: usize = offset_of!(Header, journal) + offset_of!(JournalLine, seq_reserved);
    /// First of the 16 parked-reader tag words.
    pub const RING_WAITER_TAGS: usize = offset_of!(Header, waiter_tags) + offset_of!(WaiterTagLines, tags);
    /// Number of parked-reader tag words.
    pub const RING_WAITER_TAG_COUNT: usize = size_of::<WaiterTagLines>() / 8;
    /// Event ring tail.
    pub const RING_TAIL: usize = offset_of!(Header, ring_tail) + offset_of!(RingTailLine, tail);
    /// Futex word (32 bits) bumped on every publish.
    pub const RING_NOTIFY: usize = offset_of!(Header, ring_notify) + offset_of!(RingNotifyLine, notify);
    /// Readers parked on the futex word.
    pub const RING_WAITERS: usize = offset_of!(Header, ring_notify) + offset_of!(RingNotifyLine, waiters);
    /// Wake syscalls made by producers.
    pub const RING_WAKES: usize = offset_of!(Header, ring_notify) + offset_of!(RingNotifyLine, wakes);
    /// Ring slots marked abandoned.
    pub const RING_ABANDONED: usize = offset_of!(Header, ring_notify) + offset_of!(RingNotifyLine, abandoned);
}

/// Control words of a node slot (two cache lines).
///
/// Line one is touched by every reader and writer of the slot; line two is the tree
/// linkage, written only by a process holding the *parent's* lock.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct NodeSlotHeader {
    /// Seqlock word. Even: stable; odd: a writer is inside. Bit 1 selects the active
    /// record copy: copy `(seq >> 1) & 1` is the one readers take (see `seqlock`).
    pub seq: u64,
    /// Writer lock: 0 when free, else the owner tag of the process holding it.
    pub lock: u64,
    /// `generation << 32 | slot state` (free, reserved, live).
    pub gen_state: u64,
    /// Free-list link: next free slot index + 1, 0 at the end.
    pub next_free: u64,
    /// UUID of the live node (big-endian halves), for the id index.
    pub uuid: [u64; 2],
    /// Seqlock word over this node's child list: odd while it is being changed.
    pub child_seq: u64,
    /// Number of children.
    pub child_count: u64,
    /// First child: slot index + 1, 0 when none.
    pub first_child: u64,
    /// Last child: slot index + 1, 0 when none.
    pub last_child: u64,
    /// Next sibling under the same parent: slot index + 1, 0 when none.
    pub next_sibling: u64,
    /// Previous sibling under the same parent: slot index + 1, 0 when none.
    pub prev_sibling: u64,
    /// Scan summary, rewritten with every record write: `kind | status << 8 |
    /// priority << 16 | blocker_count << 24 | claim_agent << 32 | assignee_count << 48`.
    /// Lets queries skip
    /// slots without copying their records.
    pub summary: u64,
    /// HLC at creation (a copy of the record's, for age ordering without a copy-out).
    pub created: u64,
    /// A hash of the record's name (never 0; 0: not known), rewritten with every record
    /// write: sibling-name checks compare it before they copy a record out.
    pub name_hash: u64,
    /// Zero.
    pub reserved: [u64; 1],
}

/// Byte offsets inside a node slot.
pub mod slot {
    use super::*;
    /// [`NodeSlotHeader::name_hash`].
    pub const NAME_HASH: usize = offset_of!(NodeSlotHeader, name_hash);
    /// [`NodeSlotHeader::seq`].
    pub const SEQ: usize = offset_of!(NodeSlotHeader, seq);
    /// [`NodeSlotHeader::lock`].
    pub const LOCK: usize = offset_of!(NodeSlotHeader, lock);
    /// [`NodeSlotHeader::gen_state`].
    pub const GEN_STATE: usize = offset_of!(NodeSlotHeader, gen_state);
    /// [`NodeSlotHeader::next_free`].
    pub const NEXT_FREE: usize = offset_of!(NodeSlotHeader, next_free);
    /// [`NodeSlotHeader::uuid`].
    pub const UUID: usize = offset_of!(NodeSlotHeader, uuid);
    /// [`NodeSlotHeader::child_seq`].
    pub const CHILD_SEQ: usize = offset_of!(NodeSlotHeader, child_seq);
    /// [`NodeSlotHeader::child_count`].
    pub const CHILD_COUNT: usize = offset_of!(NodeSlotHeader, child_count);
    /// [`NodeSlotHeader::first_child`].
    pub const FIRST_CHILD: usize = offset_of!(NodeSlotHeader, first_child);
    /// [`NodeSlotHeader::last_child`].
    pub const LAST_CHILD: usize = offset_of!(NodeSlotHeader, last_child);
    /// [`NodeSlotHeader::next_sibling`].
    pub const NEXT_SIBLING: usize = offset_of!(NodeSlotHeader, next_sibling);
    /// [`NodeSlotHeader::prev_sibling`].
    pub const PREV_SIBLING: usize = offset_of!(NodeSlotHeader, prev_sibling);
    /// [`NodeSlotHeader::summary`].
    pub const SUMMARY: usize = offset_of!(NodeSlotHeader, summary);
    /// [`NodeSlotHeader::created`].
    pub const CREATED: usize = offset_of!(NodeSlotHeader, created);
    /// Offset of record copy 0; copy 1 follows it.
    pub const RECORDS: usize = size_of::<NodeSlotHeader>();

    /// Slot states (low 32 bits of `gen_state`).
    pub const FREE: u64 = 0;
    /// Popped from the free list, being initialised; not yet visible.
    pub const RESERVED: u64 = 1;
    /// Holds a live node.
    pub const LIVE: u64 = 2;
}

/// One node: what readers copy out of a slot. Plain data only.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct NodeRecord {
    /// UUID (v7) of the node, big-endian bytes.
    pub uuid: [u8; 16],
    /// Raw handle of the parent (`generation << 32 | index`), `u64::MAX` for the root.
    pub parent: u64,
    /// HLC at creation.
    pub created: u64,
    /// HLC of the last change.
    pub updated: u64,
    /// Starts at 1, +1 per change.
    pub version: u64,
    /// Numeric value for pipeline rollups.
    pub value: f64,
    /// Application-defined kind number when `kind` is custom.
    pub custom_kind: u32,
    /// Bytes used in `description`.
    pub desc_len: u16,
    /// `NodeKind` code.
    pub kind: u8,
    /// `Status` code.
    pub status: u8,
    /// Priority, 0 (lowest) to 255.
    pub priority: u8,
    /// Progress in percent, 0..=100.
    pub progress: u8,
    /// Bytes used in `name`.
    pub name_len: u8,
    /// Bits of [`record_flags`]; on a reservation, [`reservation_flags`] too.
    pub flags: u8,
    /// Claim holder: agent slot index + 1, 0 when unclaimed.
    pub claim_agent: u16,
    /// Entries used in `assignees`.
    pub assignee_count: u8,
    /// Entries used in `blocked_by`.
    pub blocker_count: u8,
    /// UTF-8 name, `name_len` bytes used.
    pub name: [u8; NAME_MAX],
    /// UTF-8 description, `desc_len` bytes used.
    pub description: [u8; DESCRIPTION_MAX],
    /// Fencing epoch: +1 at every claim; writes by a claimant must present it.
    pub claim_epoch: u64,
    /// When the claim's lease ends, Unix milliseconds (0 when unclaimed).
    pub lease_until_ms: u64,
    /// HLC when the current claim was taken.
    pub claimed_at: u64,
    /// Zero. Records of layout 3 held their assignees here as agent slots + 1; the
    /// journal's reader converts those to principal keys (`assignees`).
    pub retired_assignee_slots: [u16; ASSIGNEES_MAX],
    /// Raw handles of the nodes that block this one.
    pub blocked_by: [u64; BLOCKERS_MAX],
    /// Document content: raw blob handle (`generation << 32 | chunk index`), 0 when none.
    pub doc_blob: u64,
    /// Document content length in bytes.
    pub doc_len: u32,
    /// CRC-32C of the document content.
    pub doc_crc: u32,
    /// Observed-remove set attached to this node: set slot index + 1, 0 when none.
    pub set_slot: u32,
    /// Generation of the claim holder's agent slot (a slot reused by another agent
    /// never inherits the claim).
    pub claim_agent_gen: u32,
    /// The task's record (issue 12): HLC of its last completion, failure or cancel (0:
    /// none yet).
    pub finished_at: u64,
    /// HLC of its last progress report (0: none).
    pub progress_at: u64,
    /// UUID of the agent that last completed, failed or cancelled it (zero: none, or a
    /// cancel by no agent).
    pub finished_by: [u8; 16],
    /// Claims it has taken, all told (saturating).
    pub attempts: u16,
    /// Which operation wrote `note`: one of [`note_kind`].
    pub note_kind: u8,
    /// Bytes used in `note`.
    pub note_len: u8,
    /// The last note: of a progress report, a completion, a failure (its reason) or a
    /// cancel (its reason); UTF-8, at most [`TASK_NOTE_MAX`] bytes, never cut.
    pub note: [u8; TASK_NOTE_MAX],
    /// Length of the current claim's lease, ms (0: unknown, a record from before the
    /// field): `start` and `progress` by the holder extend the lease by it.
    pub lease_ms: u32,
    /// Generation of the agent slot whose lease last lapsed (see `lapsed_agent`).
    pub lapsed_agent_gen: u32,
    /// Agent slot + 1 of the last claimant whose lease lapsed (0: none), so that agent
    /// is told its lease lapsed rather than that it never held the task.
    pub lapsed_agent: u16,
    /// Zero (padding).
    pub pad: u16,
    /// When that lease ended, Unix ms.
    pub lapsed_at_ms: u64,
    /// Bytes 0..4: the origin host of the last change when byte 4 is 1 (`origin`);
    /// the rest zero, room for later fields.
    pub reserved: [u8; 16],
    /// Who the node is assigned to: principal keys (`crate::principal`: an agent's
    /// name or `@role`), `assignee_count` of them used, 0 in the rest. By name, not by
    /// agent slot, so an assignment holds for an agent that has not joined yet or that
    /// left and comes back.
    pub assignees: [u64; ASSIGNEES_MAX],
}

/// Bytes of [`NodeRecord::note`]: the longest note a task event carries.
pub const TASK_NOTE_MAX: usize = 48;

/// Bits of [`NodeRecord::flags`].
pub mod record_flags {
    /// An assigned task any agent may claim: its assignees are who it is meant for
    /// first (`claim --next --mine`), not the only ones allowed.
    pub const OPEN_TO_ALL: u8 = 1;
    /// A task replicated to other hosts (`shared`): its claims are confirmed by the
    /// bridge against the claim register the hosts share.
    pub const SHARED: u8 = 8;
    /// A claim of a [`SHARED`] task that the bridge has not confirmed yet: it holds the
    /// task here, and its claimer waits.
    pub const UNCONFIRMED: u8 = 16;
    /// The last claim of this task was undone because another host holds it.
    pub const HELD_ELSEWHERE: u8 = 32;
    /// The record's last write undid an unconfirmed claim (refused, or unanswered):
    /// not a change for the bridge to send. The next local change clears it.
    pub const UNDONE: u8 = 64;
}

/// Values of [`NodeRecord::note_kind`].
pub mod note_kind {
    /// No note.
    pub const NONE: u8 = 0;
    /// Written by `progress`.
    pub const PROGRESS: u8 = 1;
    /// Written by `complete`.
    pub const COMPLETE: u8 = 2;
    /// Written by `fail` (the reason).
    pub const FAIL: u8 = 3;
    /// Written by `cancel` (the reason).
    pub const CANCEL: u8 = 4;
    /// Written by `reserve` (the reservation's reason).
    pub const RESERVE: u8 = 5;
}

/// Bits of [`EventRecord::flags`].
pub mod event_flags {
    /// Another host made the change (`origin`): `pad` holds its id, `hlc` its stamp.
    pub const REMOTE: u8 = 1;
}

/// Bits of [`NodeRecord::flags`] on a reservation node, apart from [`record_flags`]'s.
pub mod reservation_flags {
    /// The reservation is shared: it conflicts only with exclusive ones.
    pub const SHARED: u8 = 2;
    /// Its reserver finished the conflict scan and holds it (see `reserve`).
    pub const CONFIRMED: u8 = 4;
}

/// A node slot: control words and two record copies.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct NodeSlot {
    /// Control words.
    pub header: NodeSlotHeader,
    /// The two copies; readers take the one `seq` selects, writers write the other.
    pub records: [NodeRecord; 2],
}

/// One event as readers copy it out.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct EventRecord {
    /// Ring sequence number.
    pub seq: u64,
    /// HLC at append.
    pub hlc: u64,
    /// Event kind code (built-in below 1000, application kinds from 1000).
    pub kind: u32,
    /// Bytes used in `payload`.
    pub payload_len: u16,
    /// Bytes used in `topic`.
    pub topic_len: u8,
    /// Bits of [`event_flags`].
    pub flags: u8,
    /// Raw handle of the acting agent's node, `u64::MAX` when none.
    pub actor: u64,
    /// UUID of the node the event is about, zero when none.
    pub node: [u8; 16],
    /// Version of that node after the change, 0 when none.
    pub node_version: u64,
    /// Pid of the producing process.
    pub pid: u32,
    /// With [`event_flags::REMOTE`]: the origin host's id; zero otherwise.
    pub pad: u32,
    /// Short UTF-8 name of an application event kind (`build_done`).
    pub topic: [u8; EVENT_TOPIC_MAX],
    /// Inline payload.
    pub payload: [u8; EVENT_PAYLOAD_MAX],
}

/// An event ring slot: publication stamp, writer tag and the event.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct EventSlot {
    /// Publication stamp: `(seq + 1) << 2 | state` (writing, published, abandoned);
    /// 0 before the slot is first written. See `ring`.
    pub stamp: u64,
    /// Writer lock: owner tag of the producer writing the slot, 0 when none.
    pub owner: u64,
    /// The event.
    pub event: EventRecord,
}

/// An agent table slot. An agent's identity (name, node) outlives the processes acting
/// for it; `session` names the one process, if any, whose death ends the agent.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct AgentSlot {
    /// `generation << 32 | state` (free, reserved, live).
    pub gen_state: u64,
    /// Owner tag of the process holding a live session for this agent, 0 when none.
    pub session: u64,
    /// Last sign of life, Unix milliseconds.
    pub heartbeat_ms: u64,
    /// The agent's event cursor (next sequence it will read).
    pub cursor: u64,
    /// Futex word (its low 32 bits) of this agent's blocking claims: bumped by a change
    /// that readies a task this agent may take, which then wakes one of its parkers.
    pub claim_wake: u64,
    /// The parked claimers' filter (`claimwait::WaitFilter`: kind, flags).
    pub claim_filter: u64,
    /// Raw handle of the subtree the parked claimers want (0: anywhere).
    pub claim_under: u64,
    /// Label key the parked claimers want (0: any).
    pub claim_label: u64,
    /// Agent UUID (that of its node).
    pub uuid: [u8; 16],
    /// UTF-8 name, unique among live agents.
    pub name: [u8; AGENT_NAME_MAX],
    /// UTF-8 role.
    pub role: [u8; AGENT_ROLE_MAX],
    /// Raw handle of the agent's node.
    pub node: u64,
    /// HLC at join.
    pub joined: u64,
    /// Bytes used in `name`.
    pub name_len: u8,
    /// Bytes used in `role`.
    pub role_len: u8,
    /// Zero.
    pub pad: [u8; 6],
    /// Owner tags of the processes parked in a blocking claim for this agent (0: a
    /// free place). The daemon clears the tags of dead processes.
    pub claim_parkers: [u64; CLAIM_PARKERS],
    /// Principal key the parked claimers' tasks must be assigned to (0: any).
    pub claim_assignee: u64,
    /// Zero.
    pub reserved: [u8; 16],
}

/// Processes of one agent that can park in a blocking claim at once; more wait by
/// polling once per `claimwait::RECHECK`.
pub const CLAIM_PARKERS: usize = 4;

/// Control words of a blob chunk. A blob is a chain of chunks; its first chunk's
/// header also describes the whole blob.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlobChunkHeader {
    /// `generation << 32 | state` (free, reserved, live).
    pub gen_state: u64,
    /// Free-list link (index + 1).
    pub next_free: u64,
    /// Next chunk of the same blob (index + 1), 0 at the end.
    pub next_chunk: u64,
    /// Bytes used in this chunk.
    pub len: u64,
    /// First chunk only: total length of the blob.
    pub total_len: u64,
    /// First chunk only: CRC-32C of the whole blob.
    pub crc: u64,
    /// Owner tag of the process responsible for the chunk while it is off the free list
    /// and not (or no longer) simply part of an attached blob: the allocator from
    /// reservation until its blob is attached to a node, or a process releasing or
    /// rewriting the blob. 0 otherwise. Lets the daemon reclaim what a process killed
    /// mid-operation leaves (`blob::reclaim_leaked_blobs`). Was a zero word before issue
    /// 12 (same offset; a zero owner is never reclaimed, so older segments are safe).
    pub owner: u64,
    /// First chunk only: raw handle of the document node the blob was attached to (set
    /// under that node's lock before the record names the blob), 0 before that.
    pub node: u64,
}

/// One entry of an observed-remove set: an element added under a unique tag.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct SetEntry {
    /// 0 empty, 1 being written, 2 live, 3 removed (a tombstone kept for merging).
    pub state: u64,
    /// The element.
    pub element: u64,
    /// Unique tag of the add (an HLC value: unique on this host).
    pub tag: u64,
    /// Pid of the adding process.
    pub origin: u64,
}

/// An observed-remove set slot.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct SetSlot {
    /// `generation << 32 | state` (free, reserved, live).
    pub gen_state: u64,
    /// Free-list link (index + 1).
    pub next_free: u64,
    /// Raw handle of the node the set belongs to.
    pub node: u64,
    /// Owner tag of the process attaching the slot, from its reservation until the
    /// node's record names it; 0 otherwise (a zero word before issue 12, same offset).
    /// Lets the daemon reclaim a slot a process killed mid-attach leaves.
    pub owner: u64,
    /// Zero.
    pub reserved: [u64; 4],
    /// The entries.
    pub entries: [SetEntry; SET_ENTRIES],
}

const _: () = {
    assert!(size_of::<RegionDesc>() == 32);
    assert!(size_of::<HeaderFixed>() == 256);
    assert!(size_of::<ControlLine>() == 64 && align_of::<ControlLine>() == 64);
    assert!(size_of::<ClockLine>() == 64 && align_of::<ClockLine>() == 64);
    assert!(size_of::<PoolLine>() == 64 && align_of::<PoolLine>() == 64);
    assert!(size_of::<IndexLine>() == 64 && align_of::<IndexLine>() == 64);
    assert!(size_of::<RingTailLine>() == 64 && align_of::<RingTailLine>() == 64);
    assert!(size_of::<RingNotifyLine>() == 64 && align_of::<RingNotifyLine>() == 64);
    assert!(size_of::<AgentsLine>() == 64 && align_of::<AgentsLine>() == 64);
    assert!(size_of::<BlobsLine>() == 64 && align_of::<BlobsLine>() == 64);
    assert!(size_of::<CountersLine>() == 64 && align_of::<CountersLine>() == 64);
    assert!(size_of::<JournalLine>() == 64 && align_of::<JournalLine>() == 64);
    assert!(size_of::<WaiterTagLines>() == 128 && align_of::<WaiterTagLines>() == 64);
    assert!(size_of::<Header>() == HEADER_SIZE);
    assert!(offset_of!(Header, control) == 256);
    assert!(offset_of!(Header, clock) == 320);
    assert!(offset_of!(Header, pool) == 384);
    assert!(offset_of!(Header, index) == 448 && offset_of!(Header, ring_tail) == 512);
    assert!(offset_of!(Header, ring_notify) == 576 && offset_of!(Header, agents) == 640);
    assert!(offset_of!(Header, blobs) == 704);
    assert!(offset_of!(Header, counters) == 768);
    assert!(offset_of!(Header, journal) == 832 && offset_of!(Header, waiter_tags) == 896);
    // Every header word other processes (and older builds of this one) find by offset:
    // the typed lines keep each exactly where the untyped `HotLine { words: [u64; 8] }`
    // lines of layout version 4 had it (the version is unchanged).
    assert!(hdr::STATE == 256 && hdr::DAEMON_TAG == 264 && hdr::BOOT_ID == 272 && hdr::DAEMON_STARTED == 288);
    assert!(hdr::ADOPT_COUNT == 296 && hdr::SNAPSHOT_REQUESTS == 304 && hdr::SNAPSHOTS_DONE == 312);
    assert!(hdr::CLOCK == 320);
    assert!(hdr::POOL_FREE_HEAD == 384 && hdr::POOL_USED == 392);
    assert!(hdr::INDEX_USED == 448 && hdr::INDEX_TOMBSTONES == 456 && hdr::INDEX_MAX_PROBE == 464);
    assert!(hdr::RING_TAIL == 512);
    assert!(hdr::RING_NOTIFY == 576 && hdr::RING_WAITERS == 584 && hdr::RING_WAKES == 592);
    assert!(hdr::RING_ABANDONED == 600);
    assert!(hdr::AGENTS_USED == 640 && hdr::AGENTS_LOCK == 648 && hdr::DEPS_LOCK == 656);
    assert!(hdr::CLAIM_PARKED == 664 && hdr::CLAIM_TURN == 672 && hdr::BRIDGE_BEAT == 680);
    assert!(offset_of!(AgentSlot, claim_wake) == 32 && offset_of!(AgentSlot, claim_parkers) == 200);
    assert!(hdr::BLOB_FREE_HEAD == 704 && hdr::BLOBS_USED == 712 && hdr::SET_FREE_HEAD == 720);
    assert!(hdr::SETS_USED == 728);
    assert!(hdr::CREATED == 768 && hdr::UPDATED == 776 && hdr::DELETED == 784);
    // The operating counters took the place of the line's zero reserved words (issue 17).
    assert!(hdr::CLAIMS_MADE == 792 && hdr::LEASES_EXPIRED == 800 && hdr::AGENTS_LOST == 808);
    assert!(hdr::JOURNAL_FSYNCS == 816 && hdr::JOURNAL_FSYNC_NS == 824);
    assert!(hdr::DURABILITY == 832 && hdr::JOURNAL_CURSOR == 840 && hdr::DURABLE_CURSOR == 848);
    assert!(hdr::JOURNAL_WAKE == 856 && hdr::DURABLE_NOTIFY == 864 && hdr::DURABLE_WAITERS == 872);
    assert!(hdr::JOURNAL_HEARTBEAT == 880 && hdr::SEQ_RESERVED == 888);
    assert!(hdr::RING_WAITER_TAGS == 896 && hdr::RING_WAITER_TAGS + 8 * hdr::RING_WAITER_TAG_COUNT == HEADER_SIZE);
    assert!(size_of::<NodeSlotHeader>() == 128);
    assert!(size_of::<NodeRecord>() == 704);
    assert!(offset_of!(NodeRecord, name) == 72);
    assert!(offset_of!(NodeRecord, description) == 136);
    assert!(offset_of!(NodeRecord, claim_epoch) == 392);
    assert!(offset_of!(NodeRecord, blocked_by) == 432);
    assert!(offset_of!(NodeRecord, doc_blob) == 496);
    assert!(offset_of!(NodeRecord, finished_at) == 520);
    assert!(offset_of!(NodeRecord, note) == 556);
    assert!(offset_of!(NodeRecord, lease_ms) == 604);
    assert!(offset_of!(NodeRecord, lapsed_at_ms) == 616);
    // Layout 5 appended the assignees' principal keys; every earlier field kept its
    // offset, so a layout-3 image is a prefix of a layout-5 record.
    assert!(offset_of!(NodeRecord, retired_assignee_slots) == 416);
    assert!(offset_of!(NodeRecord, assignees) == 640);
    assert!(crate::event::NOTE_PAYLOAD_MAX <= TASK_NOTE_MAX);
    assert!(size_of::<NodeSlot>() == 1536 && align_of::<NodeSlot>() == 64);
    assert!(size_of::<SetEntry>() == 32 && size_of::<SetSlot>() == 64 + 32 * SET_ENTRIES);
    assert!(size_of::<EventRecord>() == 176);
    assert!(offset_of!(EventRecord, topic) == 64 && offset_of!(EventRecord, payload) == 88);
    assert!(size_of::<EventSlot>() == 192);
    assert!(size_of::<AgentSlot>() == 256);
    assert!(size_of::<BlobChunkHeader>() == 64);
    // The owner and node words took the place of zero reserved words (issue 12).
    assert!(offset_of!(BlobChunkHeader, owner) == 48 && offset_of!(BlobChunkHeader, node) == 56);
    assert!(offset_of!(SetSlot, owner) == 24 && offset_of!(SetSlot, entries) == 64);
    // Record copies are moved as whole 64-bit words.
    assert!(size_of::<NodeRecord>().is_multiple_of(8) && size_of::<HeaderFixed>().is_multiple_of(8));
};

/// Words in one node record copy.
pub const RECORD_WORDS: usize = size_of::<NodeRecord>() / 8;
/// Bytes of one node slot.
pub const NODE_SLOT_SIZE: u64 = size_of::<NodeSlot>() as u64;

/// Capacities chosen when a segment is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacities {
    /// Node slots, the root included.
    pub nodes: u32,
    /// Event ring slots (a power of two).
    pub events: u32,
    /// Agent slots.
    pub agents: u32,
    /// Blob chunks.
    pub blob_chunks: u32,
    /// Payload bytes per blob chunk (a multiple of 64).
    pub blob_chunk_size: u32,
    /// Observed-remove set slots.
    pub sets: u32,
}

impl Default for Capacities {
    fn default() -> Self {
        Capacities { nodes: 16_384, events: 65_536, agents: 256, blob_chunks: 1024, blob_chunk_size: 4032, sets: 1024 }
    }
}

/// Largest node capacity: indices and free-list links are 32-bit with 0 meaning none.
pub const MAX_NODES: u32 = 1 << 24;
/// Largest event ring.
pub const MAX_EVENTS: u32 = 1 << 24;
/// Largest agent table.
pub const MAX_AGENTS: u32 = (1 << 16) - 1;
/// Largest blob arena in chunks.
pub const MAX_BLOB_CHUNKS: u32 = 1 << 20;
/// Largest number of observed-remove sets.
pub const MAX_SETS: u32 = 1 << 20;

/// Where every region lies for a set of capacities. The same capacities always give the
/// same geometry, which is how an attaching client checks a header it did not write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Region descriptors in [`Region`] order.
    pub regions: [RegionDesc; REGION_COUNT],
    /// The ready index (`ready.rs`): 64-bit words after the last region, its place and
    /// size derived from the node capacity alone (so it needs no descriptor in the fixed
    /// header; `segment_size` covers it, and layout version 6 introduced it).
    pub ready: RegionDesc,
    /// Total segment size in bytes.
    pub total: u64,
}

/// Why a set of capacities cannot be laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapacityError {
    /// The capacity at fault (`nodes`, `events`, …).
    pub what: &'static str,
    /// The value given.
    pub value: u64,
    /// What it must satisfy.
    pub rule: &'static str,
}

impl std::fmt::Display for CapacityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid capacity {} = {}: {}", self.what, self.value, self.rule)
    }
}

impl std::error::Error for CapacityError {}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

impl Geometry {
    /// Lays out regions for `caps`, or says which capacity is out of range.
    pub fn new(caps: &Capacities) -> Result<Geometry, CapacityError> {
        let err = |what, value: u32, rule| CapacityError { what, value: value as u64, rule };
        if caps.nodes < 2 || caps.nodes > MAX_NODES {
            return Err(err("nodes", caps.nodes, "must be between 2 and 16777216"));
        }
        if !caps.events.is_power_of_two() || caps.events < 2 || caps.events > MAX_EVENTS {
            return Err(err("events", caps.events, "must be a power of two between 2 and 16777216"));
        }
        if caps.agents < 1 || caps.agents > MAX_AGENTS {
            return Err(err("agents", caps.agents, "must be between 1 and 65535"));
        }
        if caps.blob_chunks > MAX_BLOB_CHUNKS {
            return Err(err("blob_chunks", caps.blob_chunks, "must be at most 1048576"));
        }
        if caps.blob_chunk_size < 64 || !caps.blob_chunk_size.is_multiple_of(64) || caps.blob_chunk_size > 1 << 20 {
            return Err(err(
                "blob_chunk_size",
                caps.blob_chunk_size,
                "must be a multiple of 64 between 64 and 1048576",
            ));
        }
        if caps.sets > MAX_SETS {
            return Err(err("sets", caps.sets, "must be at most 1048576"));
        }
        let index_cap = (caps.nodes as u64 * 2).next_power_of_two();
        let specs: [(u64, u64); REGION_COUNT] = [
            (caps.nodes as u64, NODE_SLOT_SIZE),
            (index_cap, 8),
            (caps.events as u64, size_of::<EventSlot>() as u64),
            (caps.agents as u64, size_of::<AgentSlot>() as u64),
            (caps.blob_chunks as u64, size_of::<BlobChunkHeader>() as u64 + caps.blob_chunk_size as u64),
            (caps.sets as u64, size_of::<SetSlot>() as u64),
        ];
        let mut regions = [RegionDesc::zeroed(); REGION_COUNT];
        let mut at = align_up(HEADER_SIZE as u64, REGION_ALIGN);
        for (desc, (capacity, elem_size)) in regions.iter_mut().zip(specs) {
            let bytes = capacity * elem_size;
            *desc = RegionDesc { offset: at, capacity, elem_size, bytes };
            at = align_up(at + bytes, REGION_ALIGN);
        }
        let words = crate::ready::words_for(caps.nodes);
        let ready = RegionDesc { offset: at, capacity: words, elem_size: 8, bytes: words * 8 };
        at = align_up(at + ready.bytes, REGION_ALIGN);
        Ok(Geometry { regions, ready, total: at })
    }

    /// The descriptor of one region.
    pub fn region(&self, r: Region) -> RegionDesc {
        self.regions[r as usize]
    }

    /// Reconstructs the capacities recorded in a header, if they are in range.
    pub fn capacities_of(fixed: &HeaderFixed) -> Capacities {
        let cap = |r: Region| u32::try_from(fixed.regions[r as usize].capacity).unwrap_or(u32::MAX);
        Capacities {
            nodes: cap(Region::Nodes),
            events: cap(Region::Events),
            agents: cap(Region::Agents),
            blob_chunks: cap(Region::Blobs),
            blob_chunk_size: fixed.blob_chunk_size,
            sets: cap(Region::Sets),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_geometry_is_aligned_and_ordered() {
        let g = Geometry::new(&Capacities::default()).unwrap();
        let mut prev_end = HEADER_SIZE as u64;
        for r in g.regions {
            assert_eq!(r.offset % REGION_ALIGN, 0);
            assert!(r.offset >= prev_end);
            assert_eq!(r.bytes, r.capacity * r.elem_size);
            prev_end = r.offset + r.bytes;
        }
        assert!(g.total >= prev_end);
        assert_eq!(g.region(Region::Index).capacity, 32_768);
    }

    #[test]
    fn bad_capacities_are_refused_with_the_rule() {
        let caps = Capacities { events: 1000, ..Capacities::default() };
        let e = Geometry::new(&caps).unwrap_err();
        assert_eq!(e.what, "events");
        assert!(e.to_string().contains("power of two"));
        let caps = Capacities { nodes: 1, ..Capacities::default() };
        assert_eq!(Geometry::new(&caps).unwrap_err().what, "nodes");
    }
}
