//! The on-disk format shared by journal and snapshot files.
//!
//! ```text
//! file   := header record*
//! header := magic[8] ("WNJRNL01" or "WNSNAP01") | layout_version u32 | format u32 | first_seq u64
//! record := len u32 | crc u32 | kind u8 | body[len]
//! ```
//! Little-endian throughout. `crc` is CRC-32C over `kind` and `body`. A reader trusts a
//! record only when its whole body is present and its checksum matches; where a file
//! stops making sense, [`scan`] says exactly where and why, and the caller decides
//! between cutting a torn tail and refusing a corrupt middle.
//!
//! Journal files are written ahead with zeros (`store::JournalFile`), so a commit
//! overwrites blocks the file already has and its `fdatasync` writes no metadata. Where
//! every byte from a record boundary to the end of the file is zero, the records end
//! there: that is the pre-zeroed tail, not damage. No record has a zero header (its
//! kind byte is never 0), so zeros cannot be taken for a record; a zero header with
//! anything but zeros after it is judged like any other bad record (a torn tail when
//! nothing valid resumes after it, damage otherwise).

use bytemuck::{Pod, Zeroable};
use worknode::layout::{AgentSlot, EventRecord, NodeRecord};

/// Magic of journal files.
pub const JOURNAL_MAGIC: [u8; 8] = *b"WNJRNL01";
/// Magic of snapshot files.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"WNSNAP01";
/// Version of this record format written. Version 2 added [`Kind::Reserve`]; version 1
/// files (without it) are still read.
pub const FORMAT_VERSION: u32 = 2;
/// Oldest record format read.
pub const FORMAT_VERSION_MIN: u32 = 1;
/// Version of the record images the files hold (`NodeRecord`, `AgentSlot`,
/// `EventRecord`), written where files say "layout version". It is the segment layout
/// version that last changed those structs, not the header's: a header change does not
/// make data files unreadable. The asserts below fail the build when a record changes
/// size, so this cannot be forgotten.
///
/// Layout 4 (segment layout 5) appended the assignees' principal keys to the node
/// record (640 → 704 bytes; every earlier field kept its offset). Files of layout 3 are
/// still read: a node image of theirs is the prefix of a layout-4 record, its
/// assignees (agent slots) kept in `retired_assignee_slots` until the recovered state
/// converts them to keys by the agents' names (`State::convert_retired_assignees`).
pub const RECORDS_LAYOUT: u32 = 4;
/// The oldest records layout read.
pub const RECORDS_LAYOUT_MIN: u32 = 3;
/// Bytes of a node image in layout-3 files.
const NODE_RECORD_V3: usize = 640;
const _: () = assert!(size_of::<NodeRecord>() == 704 && size_of::<AgentSlot>() == 256);
const _: () = assert!(size_of::<EventRecord>() == 176);
/// Bytes of a file header.
pub const HEADER_LEN: usize = 24;
/// Bytes before a record's body.
pub const RECORD_OVERHEAD: usize = 9;
/// Largest body accepted (a document of the largest size fits).
pub const MAX_BODY: usize = 64 << 20;
/// Sequence numbers (and counts of them) at or above this are malformed: a ring would
/// need centuries to reach it, and arithmetic on them must not overflow.
pub const SEQ_LIMIT: u64 = 1 << 62;

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// An event, as appended.
    Event = 1,
    /// A node's record image in its slot: `index u32 | generation u32 | NodeRecord`.
    Node = 2,
    /// A node that no longer exists: `uuid[16]`.
    NodeGone = 3,
    /// An agent table slot: `index u16 | pad[6] | AgentSlot`.
    Agent = 4,
    /// An agent that left or was reaped: `uuid[16]` of its node.
    AgentGone = 5,
    /// A document's content: `uuid[16] | content`.
    Document = 6,
    /// Events the journal could not read (it was lapped): `from u64 | missed u64`.
    Gap = 7,
    /// End of a snapshot: `covers_seq u64 | records u64`.
    SnapshotEnd = 8,
    /// A node's whole observed-remove set: `uuid[16] | adds u32 | tombstones u32 |
    /// (element u64, tag u64) × (adds + tombstones)`.
    Set = 9,
    /// A sequence reservation: `upto u64`. Appends may claim sequences below `upto`
    /// once this record is on disk; a rebuild continues at or above it.
    Reserve = 10,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Event,
            2 => Kind::Node,
            3 => Kind::NodeGone,
            4 => Kind::Agent,
            5 => Kind::AgentGone,
            6 => Kind::Document,
            7 => Kind::Gap,
            8 => Kind::SnapshotEnd,
            9 => Kind::Set,
            10 => Kind::Reserve,
            _ => return None,
        })
    }
}

/// A decoded record.
#[derive(Clone, Debug)]
pub enum Record {
    /// See [`Kind::Event`].
    Event(EventRecord),
    /// See [`Kind::Node`].
    Node { index: u32, generation: u32, rec: Box<NodeRecord> },
    /// See [`Kind::NodeGone`].
    NodeGone { uuid: [u8; 16] },
    /// See [`Kind::Agent`].
    Agent { index: u16, slot: Box<AgentSlot> },
    /// See [`Kind::AgentGone`].
    AgentGone { uuid: [u8; 16] },
    /// See [`Kind::Document`].
    Document { uuid: [u8; 16], content: Vec<u8> },
    /// See [`Kind::Gap`].
    Gap { from: u64, missed: u64 },
    /// See [`Kind::SnapshotEnd`].
    SnapshotEnd { covers_seq: u64, records: u64 },
    /// See [`Kind::Set`].
    Set { uuid: [u8; 16], adds: Vec<(u64, u64)>, tombstones: Vec<(u64, u64)> },
    /// See [`Kind::Reserve`].
    Reserve { upto: u64 },
}

/// Appends a file header to `out`.
pub fn header(out: &mut Vec<u8>, magic: [u8; 8], first_seq: u64) {
    out.extend_from_slice(&magic);
    out.extend_from_slice(&RECORDS_LAYOUT.to_le_bytes());
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&first_seq.to_le_bytes());
}

/// Appends one record to `out`.
pub fn encode(out: &mut Vec<u8>, r: &Record) {
    let start = out.len();
    out.extend_from_slice(&[0u8; RECORD_OVERHEAD]);
    let kind = match r {
        Record::Event(e) => {
            out.extend_from_slice(bytemuck::bytes_of(e));
            Kind::Event
        }
        Record::Node { index, generation, rec } => {
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&generation.to_le_bytes());
            out.extend_from_slice(bytemuck::bytes_of(rec.as_ref()));
            Kind::Node
        }
        Record::NodeGone { uuid } => {
            out.extend_from_slice(uuid);
            Kind::NodeGone
        }
        Record::Agent { index, slot } => {
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&[0u8; 6]);
            out.extend_from_slice(bytemuck::bytes_of(slot.as_ref()));
            Kind::Agent
        }
        Record::AgentGone { uuid } => {
            out.extend_from_slice(uuid);
            Kind::AgentGone
        }
        Record::Document { uuid, content } => {
            out.extend_from_slice(uuid);
            out.extend_from_slice(content);
            Kind::Document
        }
        Record::Gap { from, missed } => {
            out.extend_from_slice(&from.to_le_bytes());
            out.extend_from_slice(&missed.to_le_bytes());
            Kind::Gap
        }
        Record::SnapshotEnd { covers_seq, records } => {
            out.extend_from_slice(&covers_seq.to_le_bytes());
            out.extend_from_slice(&records.to_le_bytes());
            Kind::SnapshotEnd
        }
        Record::Set { uuid, adds, tombstones } => {
            out.extend_from_slice(uuid);
            out.extend_from_slice(&(adds.len() as u32).to_le_bytes());
            out.extend_from_slice(&(tombstones.len() as u32).to_le_bytes());
            for (e, t) in adds.iter().chain(tombstones) {
                out.extend_from_slice(&e.to_le_bytes());
                out.extend_from_slice(&t.to_le_bytes());
            }
            Kind::Set
        }
        Record::Reserve { upto } => {
            out.extend_from_slice(&upto.to_le_bytes());
            Kind::Reserve
        }
    };
    let body_len = out.len() - start - RECORD_OVERHEAD;
    out[start + 8] = kind as u8;
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn pod<T: Pod + Zeroable>(b: &[u8]) -> Option<T> {
    (b.len() == size_of::<T>()).then(|| bytemuck::pod_read_unaligned(b))
}

use std::mem::size_of;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The records layout a whole file's bytes declare in their header.
pub fn layout_of(file: &[u8]) -> u32 {
    u32_at(file, 8).unwrap_or(RECORDS_LAYOUT)
}

/// A node image as the file's layout wrote it, as this build's record.
fn node_image(b: &[u8], layout: u32) -> Option<NodeRecord> {
    if layout == 3 {
        if b.len() != NODE_RECORD_V3 {
            return None;
        }
        let mut rec: NodeRecord = bytemuck::Zeroable::zeroed();
        bytemuck::bytes_of_mut(&mut rec)[..NODE_RECORD_V3].copy_from_slice(b);
        // Layout 3 had no key array: its count counted the agent slots.
        return Some(rec);
    }
    pod(b)
}

fn decode(kind: Kind, b: &[u8], layout: u32) -> Option<Record> {
    Some(match kind {
        Kind::Event => Record::Event(pod(b).filter(|e: &EventRecord| e.seq < SEQ_LIMIT)?),
        Kind::Node => Record::Node {
            index: u32_at(b, 0)?,
            generation: u32_at(b, 4)?,
            rec: Box::new(node_image(b.get(8..)?, layout)?),
        },
        Kind::NodeGone => Record::NodeGone { uuid: b.try_into().ok()? },
        Kind::Agent => Record::Agent {
            index: u16::from_le_bytes(b.get(0..2)?.try_into().ok()?),
            slot: Box::new(pod(b.get(8..)?)?),
        },
        Kind::AgentGone => Record::AgentGone { uuid: b.try_into().ok()? },
        Kind::Document => Record::Document { uuid: b.get(0..16)?.try_into().ok()?, content: b[16..].to_vec() },
        Kind::Gap if b.len() == 16 => {
            let (from, missed) = (u64_at(b, 0)?, u64_at(b, 8)?);
            (from < SEQ_LIMIT && missed < SEQ_LIMIT).then_some(Record::Gap { from, missed })?
        }
        Kind::SnapshotEnd if b.len() == 16 => {
            Record::SnapshotEnd { covers_seq: u64_at(b, 0).filter(|s| *s < SEQ_LIMIT)?, records: u64_at(b, 8)? }
        }
        Kind::Gap | Kind::SnapshotEnd => return None,
        Kind::Reserve if b.len() == 8 => Record::Reserve { upto: u64_at(b, 0).filter(|s| *s < SEQ_LIMIT)? },
        Kind::Reserve => return None,
        Kind::Set => {
            let (na, nt) = (u32_at(b, 16)? as usize, u32_at(b, 20)? as usize);
            if b.len() != 24 + 16 * (na + nt) {
                return None;
            }
            let pair = |i: usize| Some((u64_at(b, 24 + 16 * i)?, u64_at(b, 32 + 16 * i)?));
            Record::Set {
                uuid: b.get(0..16)?.try_into().ok()?,
                adds: (0..na).map(pair).collect::<Option<_>>()?,
                tombstones: (na..na + nt).map(pair).collect::<Option<_>>()?,
            }
        }
    })
}

/// Where and why a file stopped making sense.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Byte offset of the first record not trusted.
    pub offset: u64,
    /// Whether this is a torn tail: nothing valid follows the bad record, so it can be an
    /// unfinished final write (cut it) rather than damage in the middle (refuse).
    pub torn_tail: bool,
    /// Where the next well-formed record after the damage starts, if one does (the
    /// damage is then in the middle; salvage resumes there).
    pub next_valid: Option<u64>,
    /// What was wrong.
    pub why: &'static str,
}

/// Bytes a file's searches for valid records after damage may checksum in all. A
/// search that runs out cannot prove the damage is a torn tail, so it is reported as
/// corruption.
pub const RESYNC_BUDGET: usize = 1 << 30;

impl Kind {
    /// The exact body length of a fixed-size kind in a file of records `layout`.
    fn fixed_len(self, layout: u32) -> Option<usize> {
        Some(match self {
            Kind::Event => size_of::<EventRecord>(),
            Kind::Node if layout == 3 => 8 + NODE_RECORD_V3,
            Kind::Node => 8 + size_of::<NodeRecord>(),
            Kind::Agent => 8 + size_of::<AgentSlot>(),
            Kind::NodeGone | Kind::AgentGone | Kind::Gap | Kind::SnapshotEnd => 16,
            Kind::Reserve => 8,
            Kind::Document | Kind::Set => return None,
        })
    }
}

/// The record starting at `at`, and where it ends; or why there is none.
fn record_at(bytes: &[u8], at: usize) -> Result<(Record, usize), &'static str> {
    if bytes.len() - at < RECORD_OVERHEAD {
        return Err("a record header is cut short");
    }
    let len = u32_at(bytes, at).unwrap_or(u32::MAX) as usize;
    let crc = u32_at(bytes, at + 4).unwrap_or(0);
    if len > MAX_BODY {
        return Err("a record claims an impossible length");
    }
    let end = at + RECORD_OVERHEAD + len;
    if end > bytes.len() {
        return Err("a record runs past the end of the file");
    }
    if crc32c::crc32c(&bytes[at + 8..end]) != crc {
        return Err("a record fails its checksum");
    }
    let record = Kind::from_u8(bytes[at + 8])
        .and_then(|k| decode(k, &bytes[at + RECORD_OVERHEAD..end], layout_of(bytes)))
        .ok_or("a record has an unknown kind or a malformed body")?;
    Ok((record, end))
}

/// Where a record starting at `at` would end, if its header is plausible: a known kind,
/// a length that fits the file and, for fixed-size kinds, exactly that kind's length
/// (and a set's length agreeing with its counts). No checksum yet.
fn plausible_end(bytes: &[u8], at: usize) -> Option<usize> {
    if bytes.len().checked_sub(at)? < RECORD_OVERHEAD {
        return None;
    }
    let len = u32_at(bytes, at)? as usize;
    let kind = Kind::from_u8(bytes[at + 8])?;
    if len > MAX_BODY || kind.fixed_len(layout_of(bytes)).is_some_and(|n| n != len) {
        return None;
    }
    let end = at + RECORD_OVERHEAD + len;
    if end > bytes.len() {
        return None;
    }
    let body = at + RECORD_OVERHEAD;
    match kind {
        Kind::Document if len < 16 => None,
        Kind::Set => {
            let n = u32_at(bytes, body + 16)? as usize + u32_at(bytes, body + 20)? as usize;
            (len >= 24 && len == 24 + 16 * n).then_some(end)
        }
        _ => Some(end),
    }
}

/// Whether well-formed records start at `at` and go on to the end of the file or for
/// two records: the sign of real records rather than bytes that happen to look like
/// one (inside a torn document's content, say).
fn chain_at(bytes: &[u8], at: usize, budget: &mut usize) -> Result<bool, ()> {
    let mut cur = at;
    for _ in 0..2 {
        if cur == bytes.len() {
            return Ok(true);
        }
        let Some(end) = plausible_end(bytes, cur) else { return Ok(false) };
        *budget = budget.checked_sub(end - cur).ok_or(())?;
        match record_at(bytes, cur) {
            Ok((_, e)) => cur = e,
            Err(_) => return Ok(false),
        }
    }
    Ok(true)
}

/// The first offset at or after `from` where records resume ([`chain_at`]), searching
/// within `budget` checksummed bytes. `Err(())` when the budget ran out first.
fn next_valid_record(bytes: &[u8], from: usize, budget: &mut usize) -> Result<Option<usize>, ()> {
    for at in from..bytes.len().saturating_sub(RECORD_OVERHEAD - 1) {
        // Cheap filters first: this header and the next must both be plausible.
        let Some(end) = plausible_end(bytes, at) else { continue };
        if end != bytes.len() && plausible_end(bytes, end).is_none() {
            continue;
        }
        if chain_at(bytes, at, budget)? {
            return Ok(Some(at));
        }
    }
    Ok(None)
}

/// The damage found at `at`: a torn tail only when records resume nowhere after it.
fn damage_at(bytes: &[u8], at: usize, why: &'static str, budget: &mut usize) -> Damage {
    let (torn_tail, next_valid) = match next_valid_record(bytes, at + 1, budget) {
        Ok(None) => (true, None),
        Ok(Some(n)) => (false, Some(n as u64)),
        Err(()) => (false, None),
    };
    Damage { offset: at as u64, torn_tail, next_valid, why }
}

/// Why a file cannot be read at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Too short for a header.
    Short,
    /// Not a journal or snapshot file.
    Magic,
    /// Written by another layout or format version.
    Version {
        /// Layout version in the file.
        layout: u32,
        /// Format version in the file.
        format: u32,
    },
}

/// Checks a file header; returns the file's first sequence number.
pub fn read_header(bytes: &[u8], magic: [u8; 8]) -> Result<u64, HeaderError> {
    if bytes.len() < HEADER_LEN {
        return Err(HeaderError::Short);
    }
    if bytes[..8] != magic {
        return Err(HeaderError::Magic);
    }
    let layout = u32_at(bytes, 8).unwrap_or(0);
    let format = u32_at(bytes, 12).unwrap_or(0);
    if !(RECORDS_LAYOUT_MIN..=RECORDS_LAYOUT).contains(&layout)
        || !(FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&format)
    {
        return Err(HeaderError::Version { layout, format });
    }
    Ok(u64_at(bytes, 16).unwrap_or(0))
}

/// Whether the records end at `at`: every byte from there to the end of the file is
/// zero (the pre-zeroed tail of a journal file, or nothing at all).
pub fn zero_tail_at(bytes: &[u8], at: usize) -> bool {
    bytes.get(at..).is_some_and(|rest| rest.iter().all(|b| *b == 0))
}

/// Decodes records after the header, calling `f(offset, record)` for each trusted one.
/// Returns `Ok(end)` when the whole file is good — `end` is where its records end: the
/// file's length, or the start of its zero tail ([`zero_tail_at`]) — or the first
/// damage.
pub fn scan(bytes: &[u8], f: impl FnMut(u64, Record)) -> Result<u64, Damage> {
    scan_from(bytes, HEADER_LEN, &mut RESYNC_BUDGET.clone(), f)
}

/// [`scan`] starting at byte `from` (a record boundary), for salvage; `budget` is what
/// the file's searches after damage may still checksum (start with [`RESYNC_BUDGET`]).
pub fn scan_from(bytes: &[u8], from: usize, budget: &mut usize, mut f: impl FnMut(u64, Record)) -> Result<u64, Damage> {
    let mut at = from;
    while at < bytes.len() {
        // A zero header is the cheap first test; the whole rest is checked only then.
        if bytes[at..bytes.len().min(at + RECORD_OVERHEAD)].iter().all(|b| *b == 0) && zero_tail_at(bytes, at) {
            return Ok(at as u64);
        }
        match record_at(bytes, at) {
            Ok((record, end)) => {
                f(at as u64, record);
                at = end;
            }
            Err(why) => return Err(damage_at(bytes, at, why, budget)),
        }
    }
    Ok(at as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layout-3 file as the previous build wrote it: a 640-byte node image whose
    /// assignees were agent slots, and the image of the agent in that slot — written
    /// after the node, as a snapshot orders them.
    #[test]
    fn layout_3_files_are_read_and_their_slot_assignees_become_name_keys() {
        let mut b = Vec::new();
        header(&mut b, JOURNAL_MAGIC, 1);
        b[8..12].copy_from_slice(&3u32.to_le_bytes());
        let mut rec = NodeRecord::zeroed();
        rec.uuid = [9; 16];
        rec.name[..4].copy_from_slice(b"task");
        rec.name_len = 4;
        rec.assignee_count = 1;
        rec.retired_assignee_slots[0] = 3; // agent slot 2, + 1
                                           // Written as layout 3 did: only the first 640 bytes, framed by hand.
        let start = b.len();
        b.extend_from_slice(&[0u8; RECORD_OVERHEAD]);
        b.extend_from_slice(&7u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&bytemuck::bytes_of(&rec)[..NODE_RECORD_V3]);
        let body_len = b.len() - start - RECORD_OVERHEAD;
        b[start + 8] = Kind::Node as u8;
        let crc = crc32c::crc32c(&b[start + 8..]);
        b[start..start + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
        b[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        let mut agent = AgentSlot::zeroed();
        agent.name[..5].copy_from_slice(b"carol");
        agent.name_len = 5;
        encode(&mut b, &Record::Agent { index: 2, slot: Box::new(agent) });

        assert_eq!(read_header(&b, JOURNAL_MAGIC), Ok(1));
        let mut state = super::super::state::State::new(0);
        assert_eq!(scan(&b, |_, r| state.apply(r)), Ok(b.len() as u64));
        // Converted once the whole replay is known (a snapshot writes its agents after
        // its nodes, so converting as images arrive would find no agent).
        state.convert_retired_assignees();
        let (index, generation, got) = &state.nodes[&[9; 16]];
        assert_eq!((*index, *generation), (7, 1));
        assert_eq!(got.name_len, 4);
        assert_eq!(got.assignee_count, 1);
        assert_eq!(got.assignees[0], worknode::Principal::parse("carol").unwrap().key().raw());
        assert_eq!(got.retired_assignee_slots, [0; 8]);
        // A layout-4 image of the same length is not a layout-3 one: refused.
        b[8..12].copy_from_slice(&4u32.to_le_bytes());
        assert!(scan(&b, |_, _| {}).is_err());
    }

    fn sample() -> Vec<u8> {
        let mut b = Vec::new();
        header(&mut b, JOURNAL_MAGIC, 5);
        let mut e = EventRecord::zeroed();
        e.seq = 5;
        encode(&mut b, &Record::Event(e));
        encode(&mut b, &Record::NodeGone { uuid: [7; 16] });
        encode(&mut b, &Record::Gap { from: 9, missed: 3 });
        b
    }

    #[test]
    fn records_round_trip() {
        let b = sample();
        assert_eq!(read_header(&b, JOURNAL_MAGIC), Ok(5));
        let mut got = Vec::new();
        assert_eq!(
            scan(&b, |_, r| got.push(format!("{r:?}").chars().take(10).collect::<String>())),
            Ok(b.len() as u64)
        );
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn every_truncation_of_the_last_record_is_a_torn_tail_at_its_start() {
        let b = sample();
        let mut offsets = Vec::new();
        scan(&b, |at, _| offsets.push(at)).unwrap();
        let last = *offsets.last().unwrap() as usize;
        for cut in last + 1..b.len() {
            let d = scan(&b[..cut], |_, _| {}).unwrap_err();
            assert_eq!(d.offset, last as u64, "cut at {cut}");
            assert!(d.torn_tail, "cut at {cut}");
        }
        assert_eq!(scan(&b[..last], |_, _| {}), Ok(last as u64));
    }

    #[test]
    fn a_flipped_byte_in_the_middle_is_corruption_not_a_torn_tail() {
        let mut b = sample();
        b[HEADER_LEN + 20] ^= 0x40;
        let d = scan(&b, |_, _| {}).unwrap_err();
        assert_eq!(d.offset, HEADER_LEN as u64);
        assert!(!d.torn_tail);
    }

    #[test]
    fn a_corrupt_length_in_the_middle_is_corruption_with_the_next_record_named() {
        let mut b = sample();
        let mut offsets = Vec::new();
        scan(&b, |at, _| offsets.push(at as usize)).unwrap();
        // The first record claims to run to the end of the file: once the sign of a torn
        // tail, but a valid record follows, so it is damage in the middle.
        let rest = (b.len() - offsets[0] - RECORD_OVERHEAD) as u32;
        b[offsets[0]..offsets[0] + 4].copy_from_slice(&rest.to_le_bytes());
        let d = scan(&b, |_, _| {}).unwrap_err();
        assert_eq!(d.offset, offsets[0] as u64);
        assert!(!d.torn_tail);
        assert_eq!(d.next_valid, Some(offsets[1] as u64));
        // Salvage resumes there and reads the rest.
        let mut n = 0;
        assert_eq!(scan_from(&b, offsets[1], &mut RESYNC_BUDGET.clone(), |_, _| n += 1), Ok(b.len() as u64));
        assert_eq!(n, 2);
    }

    #[test]
    fn a_record_inside_a_torn_documents_content_does_not_hide_the_torn_tail() {
        let mut b = sample();
        let doc_at = b.len();
        // A document whose content holds a well-formed record, then more bytes.
        let mut inner = Vec::new();
        encode(&mut inner, &Record::NodeGone { uuid: [9; 16] });
        let mut content = vec![0xAB; 40];
        content.extend_from_slice(&inner);
        content.extend_from_slice(&[0xCD; 200]);
        encode(&mut b, &Record::Document { uuid: [3; 16], content });
        // Torn just after the embedded record: it is followed by garbage, not a record.
        let cut = doc_at + RECORD_OVERHEAD + 16 + 40 + inner.len() + 7;
        let d = scan(&b[..cut], |_, _| {}).unwrap_err();
        assert_eq!((d.offset, d.torn_tail, d.next_valid), (doc_at as u64, true, None));
    }

    #[test]
    fn a_zero_tail_after_the_last_record_is_the_end_not_damage() {
        let mut b = sample();
        let end = b.len();
        b.extend_from_slice(&[0u8; 4096]);
        let mut n = 0;
        assert_eq!(scan(&b, |_, _| n += 1), Ok(end as u64), "the records end where the zeros start");
        assert_eq!(n, 3);
        // Fewer zeros than a record header, and a file of nothing but a header, end too.
        assert_eq!(scan(&b[..end + 3], |_, _| {}), Ok(end as u64));
        assert_eq!(scan(&b[..HEADER_LEN], |_, _| {}), Ok(HEADER_LEN as u64));
        let mut only_zeros = b[..HEADER_LEN].to_vec();
        only_zeros.extend_from_slice(&[0u8; 100]);
        assert_eq!(scan(&only_zeros, |_, _| {}), Ok(HEADER_LEN as u64));
    }

    #[test]
    fn a_torn_record_before_the_zero_tail_is_a_torn_tail_at_its_start() {
        let b = sample();
        let mut offsets = Vec::new();
        scan(&b, |at, _| offsets.push(at as usize)).unwrap();
        let last = *offsets.last().unwrap();
        // The last record's write reached the disk only in part: zeros where the rest
        // of it (and the tail) is.
        for keep in 1..b.len() - last {
            let mut torn = b[..last + keep].to_vec();
            torn.resize(b.len() + 4096, 0);
            if zero_tail_at(&b, last + keep) {
                // What is missing was zeros anyway: the record is whole.
                assert_eq!(scan(&torn, |_, _| {}), Ok(b.len() as u64));
                continue;
            }
            let d = scan(&torn, |_, _| {}).unwrap_err();
            assert_eq!((d.offset, d.torn_tail), (last as u64, true), "kept {keep} bytes of it");
        }
    }

    #[test]
    fn garbage_after_the_zero_tail_is_judged_like_any_bad_record() {
        let b = sample();
        let end = b.len();
        // Zeros, then bytes that are no record (a later page of an unacknowledged write
        // reached the disk before an earlier one): not the end, a torn tail at the zeros.
        let mut g = b.clone();
        g.extend_from_slice(&[0u8; 512]);
        g.extend_from_slice(&[0x5Au8; 100]);
        g.extend_from_slice(&[0u8; 512]);
        let d = scan(&g, |_, _| {}).unwrap_err();
        assert_eq!((d.offset, d.torn_tail, d.next_valid), (end as u64, true, None));
        // Zeros, then valid records: damage in the middle (a zeroed span), not an end
        // that would silently drop them.
        let mut v = b.clone();
        v.extend_from_slice(&[0u8; 512]);
        let resume = v.len();
        encode(&mut v, &Record::NodeGone { uuid: [4; 16] });
        encode(&mut v, &Record::Gap { from: 1, missed: 2 });
        v.extend_from_slice(&[0u8; 512]);
        let d = scan(&v, |_, _| {}).unwrap_err();
        assert_eq!((d.offset, d.torn_tail, d.next_valid), (end as u64, false, Some(resume as u64)));
        // Salvage resumes there and ends at the second zero tail.
        let mut n = 0;
        assert_eq!(scan_from(&v, resume, &mut RESYNC_BUDGET.clone(), |_, _| n += 1), Ok((v.len() - 512) as u64));
        assert_eq!(n, 2);
    }

    /// Random records, for the properties below.
    fn journal_of(events: &[(u64, u8)]) -> (Vec<u8>, Vec<usize>) {
        let mut b = Vec::new();
        header(&mut b, JOURNAL_MAGIC, 0);
        let mut starts = Vec::new();
        for (i, (seq, kind)) in events.iter().enumerate() {
            starts.push(b.len());
            let r = match kind % 4 {
                0 => {
                    let mut e = EventRecord::zeroed();
                    e.seq = *seq;
                    Record::Event(e)
                }
                1 => Record::NodeGone { uuid: [*kind; 16] },
                2 => Record::Document { uuid: [1; 16], content: vec![*kind; (*seq % 300) as usize] },
                _ => Record::Reserve { upto: *seq + i as u64 },
            };
            encode(&mut b, &r);
        }
        (b, starts)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        /// Arbitrary bytes after a valid header never panic, and damage is reported
        /// inside the file.
        #[test]
        fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let mut b = Vec::new();
            header(&mut b, JOURNAL_MAGIC, 0);
            b.extend_from_slice(&tail);
            match scan(&b, |_, _| {}) {
                Ok(end) => proptest::prop_assert!(zero_tail_at(&b, end as usize), "records end at {} of {}", end, b.len()),
                Err(d) => {
                    proptest::prop_assert!(d.offset < b.len() as u64);
                    proptest::prop_assert!(d.next_valid.is_none_or(|n| n > d.offset && n < b.len() as u64));
                    proptest::prop_assert_eq!(d.torn_tail, d.next_valid.is_none());
                }
            }
            let mut state = super::super::state::State::new(8);
            let _ = super::super::store::read_snapshot_bytes(&b, &mut state);
        }

        /// A journal cut anywhere is a torn tail at the start of the record cut, and
        /// everything before it reads.
        #[test]
        fn any_cut_is_a_torn_tail_at_the_record_cut(
            events in proptest::collection::vec((0u64..1000, 0u8..8), 1..12),
            cut_at in 0.0f64..1.0,
        ) {
            let (b, starts) = journal_of(&events);
            let cut = HEADER_LEN + ((b.len() - HEADER_LEN) as f64 * cut_at) as usize;
            let mut n = 0;
            match scan(&b[..cut], |_, _| n += 1) {
                Ok(end) => {
                    // The records end at the cut, or earlier where only zero bytes of
                    // the cut record remain (its length's low byte was zero): what a
                    // torn write into the zero tail leaves, the same end either way.
                    let end = end as usize;
                    proptest::prop_assert!(end == cut || (end < cut && zero_tail_at(&b[..cut], end)));
                    proptest::prop_assert!(end == HEADER_LEN || starts.contains(&end) || end == b.len());
                    proptest::prop_assert_eq!(n, starts.iter().filter(|s| **s < end).count());
                }
                Err(d) => {
                    let cut_record = *starts.iter().rev().find(|s| **s < cut).unwrap();
                    proptest::prop_assert_eq!(d.offset as usize, cut_record);
                    proptest::prop_assert!(d.torn_tail);
                    proptest::prop_assert_eq!(n, starts.iter().position(|s| *s == cut_record).unwrap());
                }
            }
        }

        /// One flipped byte in any record but the last is corruption, never a torn
        /// tail, and the damage is found at or before the flipped record.
        #[test]
        fn a_flip_before_the_last_record_is_corruption(
            events in proptest::collection::vec((0u64..1000, 0u8..8), 2..12),
            which in 0.0f64..1.0,
            bit in 0u8..8,
        ) {
            let (mut b, starts) = journal_of(&events);
            let last = *starts.last().unwrap();
            let at = HEADER_LEN + ((last - HEADER_LEN) as f64 * which) as usize;
            b[at] ^= 1 << bit;
            let d = scan(&b, |_, _| {}).unwrap_err();
            proptest::prop_assert!(!d.torn_tail, "{:?}", d);
            proptest::prop_assert!(d.offset as usize <= at);
        }
    }

    #[test]
    fn another_layout_version_is_refused() {
        let mut b = sample();
        b[8] = b[8].wrapping_add(1);
        assert!(matches!(read_header(&b, JOURNAL_MAGIC), Err(HeaderError::Version { .. })));
        assert_eq!(read_header(&b, SNAPSHOT_MAGIC), Err(HeaderError::Magic));
    }
}
