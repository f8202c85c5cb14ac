//! The replicated state of one node and its merge.
//!
//! * The record's replicated fields ([`Fields`]: parent, kind, name, description,
//!   status, priority, progress, value, deleted) are one last-writer-wins register,
//!   stamped with the HLC of the write and the id of the host that made it ([`Stamp`]:
//!   ordered by HLC, ties by host id). One register for the whole record, not one per
//!   field, because the record's writes are whole-record (`update` replaces it under the
//!   node's lock) and a per-field merge could combine a status from one writer with a
//!   progress from another into a record neither wrote.
//! * A document's content is a register of its own: a rename must not undo a concurrent
//!   put, nor a put a rename.
//! * The node's set (labels ride on it) is an OR-Set: [`worknode::OrSetState::merge`],
//!   adds and removes from every side survive.
//!
//! Claims are not here: a claim's holder, lease and epoch are local to the claiming
//! host and exclusive across hosts through the claim register (ARCHITECTURE.md).

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeSet;
use uuid::Uuid;
use worknode::{Hlc, OrSetState};

/// A host's id: a nonzero 32-bit number fixed for a board's life on that host (the
/// bridge derives it from its `--host` name, [`HostId::of_name`]). Breaks ties between
/// writes with the same HLC, and is what a record and an event keep as their origin
/// (`worknode::Origin`). 32 bits because that is the room an event has for it; two
/// names of one board colliding (odds about n²/2³³) make their writes tie-break by
/// value instead, which still converges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HostId(pub u32);

impl HostId {
    /// The id of a host name: FNV-1a folded to 32 bits, never 0 (0 means "this host").
    pub fn of_name(name: &str) -> HostId {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let folded = (h ^ (h >> 32)) as u32;
        HostId(folded.max(1))
    }
}

/// When and where a write was made: ordered by HLC, then by host id (the field order,
/// which the derived `Ord` follows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// The write's HLC, as the writing host's clock issued it.
    pub hlc: u64,
    /// The host that made it.
    pub host: HostId,
}

impl Stamp {
    /// A stamp for a write made at `hlc` on `host`.
    pub fn new(hlc: Hlc, host: HostId) -> Stamp {
        Stamp { hlc: hlc.0, host }
    }
}

/// A last-writer-wins register.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lww<T> {
    /// The write that set `value`.
    pub stamp: Stamp,
    /// The value it wrote.
    pub value: T,
}

impl<T: Clone + Ord> Lww<T> {
    /// The register holding the later write. Two values under one stamp can only come
    /// from a damaged or forged message (a host's clock never issues a value twice);
    /// the larger value is kept so the merge stays commutative even then.
    pub fn merge(a: &Lww<T>, b: &Lww<T>) -> Lww<T> {
        match a.stamp.cmp(&b.stamp) {
            Ordering::Greater => a.clone(),
            Ordering::Less => b.clone(),
            Ordering::Equal if a.value >= b.value => a.clone(),
            Ordering::Equal => b.clone(),
        }
    }
}

/// The replicated fields of a node's record.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Fields {
    /// The parent's UUID; `None` for a child of the replicated subtree's root (whose
    /// own UUID differs from host to host).
    pub parent: Option<Uuid>,
    /// `NodeKind` code.
    pub kind: u8,
    /// Application kind number when `kind` is custom.
    pub custom_kind: u32,
    /// `Status` code.
    pub status: u8,
    /// Priority, 0 to 255.
    pub priority: u8,
    /// Progress, 0 to 100.
    pub progress: u8,
    /// The value's bits (`f64::to_bits`), so the fields are `Eq` and `Ord`.
    pub value_bits: u64,
    /// The name, at most `NAME_MAX` bytes.
    pub name: String,
    /// The description, at most `DESCRIPTION_MAX` bytes.
    pub description: String,
    /// Whether the node was deleted (a tombstone: a delete is a write like any other,
    /// so a concurrent later update on another host wins over it).
    pub deleted: bool,
}

/// What one host knows of one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaState {
    /// The node's UUID, the same on every host.
    pub uuid: Uuid,
    /// The record's replicated fields.
    pub record: Lww<Fields>,
    /// A document's content, when the node has had one.
    pub document: Option<Lww<Vec<u8>>>,
    /// The node's set (labels included).
    #[serde(with = "set_pairs")]
    pub set: OrSetState,
    /// The names of the set's elements that are labels, as the hosts that added them
    /// know them (a set holds only keys; a receiver registers the names). Grows only.
    pub labels: BTreeSet<String>,
}

impl ReplicaState {
    /// The join of two states of the same node: the later record and the later
    /// document, the union of the set's adds and of its removes, the union of the
    /// label names.
    ///
    /// # Panics
    ///
    /// Never on states of one node; states of different nodes are a caller's bug and
    /// are not merged (`a` is returned), checked with a debug assertion.
    pub fn merge(a: &ReplicaState, b: &ReplicaState) -> ReplicaState {
        debug_assert_eq!(a.uuid, b.uuid, "merging states of different nodes");
        if a.uuid != b.uuid {
            return a.clone();
        }
        let document = match (&a.document, &b.document) {
            (Some(x), Some(y)) => Some(Lww::merge(x, y)),
            (x, y) => x.clone().or_else(|| y.clone()),
        };
        ReplicaState {
            uuid: a.uuid,
            record: Lww::merge(&a.record, &b.record),
            document,
            set: OrSetState::merge(&a.set, &b.set),
            labels: a.labels.union(&b.labels).cloned().collect(),
        }
    }

    /// The latest write this state holds (record or document): what a receiver's clock
    /// observes so its own next write orders after it.
    pub fn latest(&self) -> Stamp {
        self.document.as_ref().map_or(self.record.stamp, |d| d.stamp.max(self.record.stamp))
    }
}

/// The set as two lists of `(element, tag)` pairs on the wire.
mod set_pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use worknode::OrSetState;

    #[derive(Serialize, Deserialize)]
    struct Pairs {
        adds: Vec<(u64, u64)>,
        tombstones: Vec<(u64, u64)>,
    }

    pub fn serialize<S: Serializer>(set: &OrSetState, s: S) -> Result<S::Ok, S::Error> {
        Pairs { adds: set.adds().collect(), tombstones: set.tombstones().collect() }.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OrSetState, D::Error> {
        let p = Pairs::deserialize(d)?;
        Ok(OrSetState::from_parts(p.adds, p.tombstones))
    }
}
