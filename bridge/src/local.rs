//! The bridge's side of its own segment: which nodes replicate, what a node's local
//! state is as replica parts, and how a merged state is written back.
//!
//! Nothing here talks to the network. A [`Board`] is the replicated scope of one
//! segment (the whole tree, or the subtree under `--under`); [`Board::read`] turns a
//! local node into a [`ReplicaState`] stamped with what this host knows of it, and
//! [`Board::apply`] makes the local node equal to a merged state, inside
//! [`Segment::with_origin`] so its records and events name the host whose write won.

use crate::replica::{Fields, HostId, Lww, ReplicaState, Stamp};
use std::collections::BTreeSet;
use std::fmt;
use uuid::Uuid;
use worknode::{
    DocError, Handle, Hlc, LabelError, NewNode, Node, NodeKind, Origin, PoolError, ReplicaFields, Segment, SetError,
    Status, TaskError, LABELS_CONTAINER, MAIL_CONTAINER,
};

/// Containers directly under the segment root that belong to their host (agents, the
/// label and mail registries, the bridges' own state): never replicated.
pub const SYSTEM_CONTAINERS: [&str; 4] = ["agents", LABELS_CONTAINER, MAIL_CONTAINER, BRIDGE_CONTAINER];

/// The container under the root holding each bridge's state document.
pub const BRIDGE_CONTAINER: &str = "bridge";

/// Why a local read or write failed.
#[derive(Debug)]
pub enum LocalError {
    /// A pool operation failed.
    Pool(PoolError),
    /// A document operation failed.
    Doc(DocError),
    /// A set operation failed.
    Set(SetError),
    /// A label could not be registered.
    Label(LabelError),
    /// A delete was refused.
    Task(TaskError),
    /// `--under` names no node.
    NoScope(String),
}

impl fmt::Display for LocalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalError::Pool(e) => write!(f, "{e}"),
            LocalError::Doc(e) => write!(f, "{e}"),
            LocalError::Set(e) => write!(f, "{e}"),
            LocalError::Label(e) => write!(f, "{e}"),
            LocalError::Task(e) => write!(f, "{e}"),
            LocalError::NoScope(p) => write!(f, "no node {p:?} to replicate under"),
        }
    }
}

impl std::error::Error for LocalError {}

macro_rules! from_error {
    ($($variant:ident($t:ty)),*) => {
        $(impl From<$t> for LocalError {
            fn from(e: $t) -> Self {
                LocalError::$variant(e)
            }
        })*
    };
}
from_error!(Pool(PoolError), Doc(DocError), Set(SetError), Label(LabelError), Task(TaskError));

/// What [`Board::apply`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// The local node already matched.
    Unchanged,
    /// The local node was created, changed or deleted.
    Written,
    /// The node's parent is not here yet: apply again once it is.
    NeedsParent(Uuid),
}

/// The replicated scope of one segment.
pub struct Board<'s> {
    seg: &'s Segment,
    scope: Handle,
    host: HostId,
}

impl<'s> Board<'s> {
    /// The scope under `under` (a path like `/proj/api` or a UUID; the whole tree when
    /// `None`).
    ///
    /// # Errors
    ///
    /// [`LocalError::NoScope`] when `under` names no node.
    pub fn new(seg: &'s Segment, under: Option<&str>, host: HostId) -> Result<Board<'s>, LocalError> {
        let scope = match under {
            None | Some("/") => seg.root(),
            Some(path) => resolve(seg, path)?.ok_or_else(|| LocalError::NoScope(path.to_string()))?,
        };
        Ok(Board { seg, scope, host })
    }

    /// The segment.
    pub fn segment(&self) -> &'s Segment {
        self.seg
    }

    /// Whether `node` replicates: below the scope, not an agent, reservation or label,
    /// not inside a system container.
    pub fn replicates(&self, node: &Node) -> bool {
        if matches!(node.kind(), None | Some(NodeKind::Agent | NodeKind::Reservation | NodeKind::Label)) {
            return false;
        }
        let root = self.seg.root();
        let mut cur = *node;
        // Bounded by the tree's depth, itself bounded by the pool's capacity.
        for _ in 0..=self.seg.capacities().nodes {
            let Some(parent) = cur.parent() else { return false };
            if parent == root && SYSTEM_CONTAINERS.contains(&cur.name()) && cur.kind() == Some(NodeKind::Container) {
                return false;
            }
            if parent == self.scope {
                return true;
            }
            match self.seg.read(parent) {
                Ok(p) => cur = p,
                Err(_) => return false,
            }
        }
        false
    }

    /// The local node `uuid` as a replica state, if it lives here and replicates. The
    /// record and document registers are stamped `(updated, this host)` when the last
    /// change was made here, and with `known`'s stamps (what this host last merged)
    /// when it was a remote write applied here: such a value is no news.
    ///
    /// # Errors
    ///
    /// A pool, document or set read that failed.
    pub fn read(&self, uuid: Uuid, known: Option<&ReplicaState>) -> Result<Option<ReplicaState>, LocalError> {
        let h = match self.seg.lookup(uuid) {
            Ok(h) => h,
            Err(PoolError::NotFound | PoolError::StaleHandle) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let node = match self.seg.read(h) {
            Ok(n) => n,
            Err(PoolError::NotFound | PoolError::StaleHandle) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if !self.replicates(&node) {
            return Ok(None);
        }
        self.state_of(&node, known).map(Some)
    }

    /// Whether the local node's last write is no change to send: a remote write applied
    /// here (its record names an origin host), a claim not confirmed yet (it may be
    /// undone), or the undo of one.
    pub fn last_write_not_news(&self, uuid: Uuid) -> bool {
        use worknode::layout::record_flags::{UNCONFIRMED, UNDONE};
        self.seg
            .lookup(uuid)
            .and_then(|h| self.seg.read(h))
            .is_ok_and(|n| n.origin_host().is_some() || n.record().flags & (UNCONFIRMED | UNDONE) != 0)
    }

    /// Calls `f` with every node that replicates (bounded by the pool's capacity).
    ///
    /// # Errors
    ///
    /// A pool read that failed.
    pub fn each(&self, mut f: impl FnMut(&Node)) -> Result<(), LocalError> {
        self.seg.for_each_node(|n| {
            if self.replicates(n) {
                f(n);
            }
            true
        })?;
        Ok(())
    }

    fn state_of(&self, node: &Node, known: Option<&ReplicaState>) -> Result<ReplicaState, LocalError> {
        let parent = match node.parent() {
            Some(p) if p == self.scope => None,
            Some(p) => Some(self.seg.read(p)?.uuid()),
            None => None,
        };
        let fields = Fields {
            parent,
            kind: node.kind().map_or(0, NodeKind::code),
            custom_kind: if node.kind() == Some(NodeKind::Custom) { node.custom_kind() } else { 0 },
            status: node.status().map_or(0, Status::code),
            priority: node.priority(),
            progress: node.progress(),
            value_bits: node.value().to_bits(),
            name: node.name().to_string(),
            description: node.description().to_string(),
            deleted: false,
        };
        let document = if node.kind() == Some(NodeKind::Document) {
            let mut bytes = Vec::new();
            // No content yet reads as empty; a register is made by a first put.
            self.seg.get_document(node.handle(), &mut bytes)?;
            (!bytes.is_empty()).then_some(bytes)
        } else {
            None
        };
        let mut labels = Vec::new();
        self.seg.labels(node.handle(), &mut labels)?;
        let set = self.seg.set_state(node.handle())?;
        let local = Stamp::new(Hlc(node.updated().0), self.host);
        let stamp_of = |known: Option<Stamp>| match (node.origin_host(), known) {
            // A remote write applied here: the value is what was merged, under its stamp.
            (Some(_), Some(k)) => k,
            // A change made here (or a remote one whose merge this run never saw): it
            // orders after everything this host had observed when it was made.
            _ => local,
        };
        let record_stamp = stamp_of(known.map(|k| k.record.stamp));
        let document = document.map(|value| {
            let known_doc = known.and_then(|k| k.document.as_ref());
            // Unchanged content keeps its stamp: a rename is not a new put.
            let stamp = match known_doc {
                Some(d) if d.value == value => d.stamp,
                _ => stamp_of(known_doc.map(|d| d.stamp)),
            };
            Lww { stamp, value }
        });
        Ok(ReplicaState {
            uuid: node.uuid(),
            record: Lww { stamp: record_stamp, value: fields },
            document,
            set,
            labels: labels.into_iter().collect::<BTreeSet<_>>(),
        })
    }

    /// Makes the local node equal to `merged`: creates it (under its parent, or the
    /// scope), writes its fields, document and set, or deletes it. Two siblings of one
    /// name: the one with the smaller UUID (v7: the older) keeps it, the other is named
    /// `<name>~<8 hex of its uuid>` (here by this write, on its own host by the rename
    /// that host makes when it sees both).
    ///
    /// # Errors
    ///
    /// A write that failed; the node may then be partly updated, and applying the same
    /// state again finishes it (every step is idempotent).
    pub fn apply(&self, merged: &ReplicaState) -> Result<Applied, LocalError> {
        // The origin is the host whose write is applied: the record's, unless that is
        // this host (then the document's), never this host itself.
        let doc = merged.document.as_ref().map(|d| d.stamp);
        let winner = [Some(merged.record.stamp), doc]
            .into_iter()
            .flatten()
            .find(|s| s.host != self.host)
            .unwrap_or_else(|| merged.latest());
        let origin = Origin { host: winner.host.0, hlc: Hlc(winner.hlc) };
        self.seg.with_origin(origin, || self.apply_in_scope(merged))?
    }

    fn apply_in_scope(&self, merged: &ReplicaState) -> Result<Applied, LocalError> {
        let f = &merged.record.value;
        let existing = match self.seg.lookup(merged.uuid) {
            Ok(h) => Some(h),
            Err(PoolError::NotFound) => None,
            Err(e) => return Err(e.into()),
        };
        let Some(h) = existing else {
            if f.deleted {
                return Ok(Applied::Unchanged);
            }
            let parent = match f.parent {
                None => self.scope,
                Some(p) => match self.seg.lookup(p) {
                    Ok(h) => h,
                    Err(PoolError::NotFound) => return Ok(Applied::NeedsParent(p)),
                    Err(e) => return Err(e.into()),
                },
            };
            let kind = NodeKind::from_code(f.kind).ok_or(PoolError::Corrupt { what: "replica kind" })?;
            let name = self.free_name(parent, &f.name, merged.uuid)?;
            let mut spec = NewNode::new(kind, &name).description(&f.description);
            spec.custom_kind = f.custom_kind;
            let h = self.seg.add_with_uuid(parent, &spec, merged.uuid)?;
            self.write_rest(h, merged, &name)?;
            return Ok(Applied::Written);
        };
        if f.deleted {
            self.seg.remove(h, true, true)?;
            return Ok(Applied::Written);
        }
        let before = self.state_of(&self.seg.read(h)?, Some(merged))?;
        if same_content(&before, merged) {
            return Ok(Applied::Unchanged);
        }
        let parent = self.seg.read(h)?.parent().unwrap_or(self.scope);
        let name = if before.record.value.name == f.name {
            f.name.clone()
        } else {
            self.free_name(parent, &f.name, merged.uuid)?
        };
        self.write_rest(h, merged, &name)?;
        Ok(Applied::Written)
    }

    /// Fields, document, labels and set of `h` as in `merged`, with `name`.
    fn write_rest(&self, h: Handle, merged: &ReplicaState, name: &str) -> Result<(), LocalError> {
        let f = &merged.record.value;
        let node = self.seg.read(h)?;
        let status = Status::from_code(f.status).ok_or(PoolError::Corrupt { what: "replica status" })?;
        let fields_differ = node.name() != name
            || node.description() != f.description
            || node.status() != Some(status)
            || node.priority() != f.priority
            || node.progress() != f.progress
            || node.value().to_bits() != f.value_bits;
        if fields_differ {
            let fields = ReplicaFields {
                name,
                description: &f.description,
                status,
                priority: f.priority,
                progress: f.progress,
                value: f64::from_bits(f.value_bits),
            };
            self.seg.apply_fields(h, &fields)?;
        }
        if let Some(doc) = &merged.document {
            let mut have = Vec::new();
            self.seg.get_document(h, &mut have)?;
            if have != doc.value {
                self.seg.replace_document(h, &f.description, &doc.value)?;
            }
        }
        for label in &merged.labels {
            if self.seg.label_node(label)?.is_none() {
                self.seg.register_label_name(label)?;
            }
        }
        if self.seg.set_state(h)? != merged.set {
            self.seg.set_merge(h, &merged.set)?;
        }
        Ok(())
    }

    /// `name` if no other child of `parent` has it; else, when the holder's UUID is the
    /// smaller, `<name>~<8 hex of uuid>` (the holder keeps the name); when ours is the
    /// smaller, the holder is renamed so and `name` is ours.
    fn free_name(&self, parent: Handle, name: &str, uuid: Uuid) -> Result<String, LocalError> {
        let mut kids = Vec::new();
        self.seg.children(parent, &mut kids)?;
        for k in kids {
            let n = self.seg.read(k)?;
            if n.name() != name || n.uuid() == uuid {
                continue;
            }
            if n.uuid() < uuid {
                return Ok(suffixed(name, uuid));
            }
            let fields = ReplicaFields {
                name: &suffixed(name, n.uuid()),
                description: n.description(),
                status: n.status().unwrap_or(Status::Pending),
                priority: n.priority(),
                progress: n.progress(),
                value: n.value(),
            };
            self.seg.apply_fields(k, &fields)?;
        }
        Ok(name.to_string())
    }
}

/// Whether two states of one node hold the same content (stamps aside).
pub fn same_content(a: &ReplicaState, b: &ReplicaState) -> bool {
    let (fa, fb) = (&a.record.value, &b.record.value);
    let fields_equal = Fields { parent: None, ..fa.clone() } == Fields { parent: None, ..fb.clone() };
    // Labels are in the set (by key); the names beside it only grow, so they are not
    // compared (a removed label's name stays known).
    fields_equal && a.document.as_ref().map(|d| &d.value) == b.document.as_ref().map(|d| &d.value) && a.set == b.set
}

/// `name~<last 8 hex digits of uuid>` (a v7 UUID's first digits are its creation time,
/// alike for nodes made together; the last are random), cut at a character boundary to
/// fit a name.
pub fn suffixed(name: &str, uuid: Uuid) -> String {
    let hex = uuid.simple().to_string();
    let mut keep = worknode::layout::NAME_MAX - 9;
    while !name.is_char_boundary(keep.min(name.len())) {
        keep -= 1;
    }
    format!("{}~{}", &name[..keep.min(name.len())], &hex[hex.len() - 8..])
}

/// The node a path (`/a/b`) or UUID names.
fn resolve(seg: &Segment, path: &str) -> Result<Option<Handle>, LocalError> {
    if let Ok(uuid) = Uuid::parse_str(path) {
        return match seg.lookup(uuid) {
            Ok(h) => Ok(Some(h)),
            Err(PoolError::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        };
    }
    let mut cur = seg.root();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        match seg.child_named(cur, part)? {
            Some(k) => cur = k,
            None => return Ok(None),
        }
    }
    Ok(Some(cur))
}

/// A delete made here as a replica state: the last known state with `deleted` set,
/// stamped `(at, host)`.
pub fn tombstone(known: &ReplicaState, at: Hlc, host: HostId) -> ReplicaState {
    let mut s = known.clone();
    let stamp = Stamp::new(at, host).max(Stamp { hlc: known.latest().hlc + 1, host });
    s.record = Lww { stamp, value: Fields { deleted: true, ..known.record.value.clone() } };
    s
}
