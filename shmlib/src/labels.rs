//! Labels (issue 13, part 7): named tags on nodes, kept in the node's observed-remove
//! set (`orset`), whose elements are `u64`.
//!
//! # The mapping
//!
//! A label's **key** is the 64-bit FNV-1a hash of its bytes — the same function the pool
//! keeps in every slot's `name_hash` word ([`label_key`]). Its **name** is registered
//! durably as a node `/labels/<label>` of kind [`NodeKind::Label`] under a system
//! container `/labels` below the root. Both are made on the first add of a label, lazily
//! and race-safe, as `/mail` is (`ensure_child`: sibling names are unique, so a racing
//! creator's `NameTaken` means the node exists and is looked up). The registry node of a key is found by walking the
//! children of `/labels` comparing each slot's `name_hash` word (one word per sibling),
//! so listing a node's labels by name is one set read plus one walk of `/labels`.
//!
//! Being nodes and set elements, labels are journaled and restored like any other node
//! and set. A set element without a registry node (a set used for something else) is
//! not a label and is not listed.
//!
//! Every change is checked with [`Right::Update`] on the labelled node; creating the
//! registry nodes is a system write that right allows whatever the token's subtree.

use crate::error::PoolError;
use crate::node::{Handle, NewNode, NodeKind};
use crate::orset::SetError;
use crate::segment::Segment;
use crate::token::Right;
use std::fmt;

/// The longest label, in bytes.
pub const LABEL_MAX: usize = 64;

/// The name of the registry container under the root.
pub const LABELS_CONTAINER: &str = "labels";

/// Why a label operation failed. Nothing was changed when one is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LabelError {
    /// The label is empty.
    Empty,
    /// The label is longer than [`LABEL_MAX`] bytes.
    TooLong {
        /// Bytes given.
        len: usize,
        /// Bytes allowed.
        max: usize,
    },
    /// The label holds a `/` at this byte offset.
    HasSlash {
        /// Byte offset.
        at: usize,
    },
    /// The label holds a control character at this byte offset.
    HasControl {
        /// Byte offset.
        at: usize,
    },
    /// The label holds white space at this byte offset.
    HasWhitespace {
        /// Byte offset.
        at: usize,
    },
    /// The label starts with `@` (reserved).
    LeadingAt,
    /// A root child named `labels` exists and is not the registry container.
    RegistryTaken,
    /// Another registered label has the same key (a 64-bit hash collision).
    KeyCollision,
    /// The node's set refused the change.
    Set(SetError),
    /// A node operation failed.
    Pool(PoolError),
}

impl From<PoolError> for LabelError {
    fn from(e: PoolError) -> Self {
        LabelError::Pool(e)
    }
}

impl From<SetError> for LabelError {
    fn from(e: SetError) -> Self {
        match e {
            SetError::Pool(p) => LabelError::Pool(p),
            e => LabelError::Set(e),
        }
    }
}

impl fmt::Display for LabelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use LabelError::*;
        match self {
            Empty => write!(f, "empty label"),
            TooLong { len, max } => write!(f, "label is {len} bytes, the limit is {max}"),
            HasSlash { at } => write!(f, "label holds '/' at byte {at}"),
            HasControl { at } => write!(f, "label holds a control character at byte {at}"),
            HasWhitespace { at } => write!(f, "label holds white space at byte {at}"),
            LeadingAt => write!(f, "label starts with '@'"),
            RegistryTaken => write!(f, "/{LABELS_CONTAINER} exists and is not the label registry"),
            KeyCollision => write!(f, "another label has the same key"),
            Set(e) => write!(f, "{e}"),
            Pool(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for LabelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LabelError::Set(e) => Some(e),
            LabelError::Pool(e) => Some(e),
            _ => None,
        }
    }
}

/// Checks a label: 1–[`LABEL_MAX`] bytes, no `/`, no control character, no white space,
/// not starting with `@`.
///
/// # Errors
///
/// [`LabelError::Empty`], [`LabelError::TooLong`], [`LabelError::HasSlash`],
/// [`LabelError::HasControl`], [`LabelError::HasWhitespace`], [`LabelError::LeadingAt`].
pub fn check_label(label: &str) -> Result<(), LabelError> {
    if label.is_empty() {
        return Err(LabelError::Empty);
    }
    if label.len() > LABEL_MAX {
        return Err(LabelError::TooLong { len: label.len(), max: LABEL_MAX });
    }
    if label.starts_with('@') {
        return Err(LabelError::LeadingAt);
    }
    for (at, c) in label.char_indices() {
        if c == '/' {
            return Err(LabelError::HasSlash { at });
        }
        if c.is_control() {
            return Err(LabelError::HasControl { at });
        }
        if c.is_whitespace() {
            return Err(LabelError::HasWhitespace { at });
        }
    }
    Ok(())
}

/// A label's key: the set element that stands for it (FNV-1a of its bytes, as the pool
/// hashes node names).
///
/// # Errors
///
/// As [`check_label`].
///
/// # Examples
///
/// ```
/// use worknode::{label_key, LabelError};
/// assert_eq!(label_key("backend")?, label_key("backend")?);
/// assert_ne!(label_key("backend")?, label_key("frontend")?);
/// assert_eq!(label_key("has space"), Err(LabelError::HasWhitespace { at: 3 }));
/// # Ok::<(), LabelError>(())
/// ```
pub fn label_key(label: &str) -> Result<u64, LabelError> {
    check_label(label)?;
    Ok(crate::pool::name_hash(label.as_bytes()))
}

impl Segment {
    /// Adds `label` to `node`; returns whether it was new there (adding a label the node
    /// has already changes nothing). The first add of a label registers its name as
    /// `/labels/<label>`.
    ///
    /// # Errors
    ///
    /// * As [`check_label`] for a malformed label.
    /// * [`LabelError::Set`] with [`SetError::SetFull`] / [`SetError::NoSetSlots`]: the
    ///   node's set has no room; the node is unchanged (the label's registry node, made
    ///   first so that no node ever carries a key without a name, stays).
    /// * [`LabelError::RegistryTaken`], [`LabelError::KeyCollision`]: the registry
    ///   cannot take this label.
    /// * [`LabelError::Pool`]: as for any change ([`PoolError::Denied`] for a token
    ///   without `update`, [`PoolError::NotFound`], [`PoolError::PoolFull`] when the
    ///   registry node cannot be made, …).
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{label_key, NewNode, NodeKind};
    /// # let name = format!("doc-add_label-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let task = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "fix login"))?;
    /// assert!(seg.add_label(task, "backend")?);
    /// assert!(!seg.add_label(task, "backend")?); // already there
    /// assert!(seg.has_label(task, label_key("backend")?)?);
    /// let mut names = Vec::new();
    /// seg.labels(task, &mut names)?;
    /// assert_eq!(names, ["backend"]);
    /// assert!(seg.remove_label(task, "backend")?);
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_label(&self, node: Handle, label: &str) -> Result<bool, LabelError> {
        if let Some(link) = self.link() {
            return link.ask_count(crate::broker::Request::AddLabel { node, label: label.to_string() }).map(|n| n != 0);
        }
        self.permit(Right::Update, Some(node)).map_err(PoolError::from)?;
        let key = label_key(label)?;
        self.read(node)?;
        if self.set_contains(node, key)? {
            return Ok(false);
        }
        self.register_label(label, key)?;
        self.set_add(node, key)?;
        // A ready task may now match a blocking claim waiting for this label.
        if let Ok(n) = self.read(node) {
            self.wake_claimers(node, n.record());
        }
        Ok(true)
    }

    /// Removes `label` from `node`; returns whether the node had it.
    ///
    /// # Errors
    ///
    /// As [`check_label`] for a malformed label; [`LabelError::Pool`] as for any change.
    pub fn remove_label(&self, node: Handle, label: &str) -> Result<bool, LabelError> {
        if let Some(link) = self.link() {
            return link
                .ask_count(crate::broker::Request::RemoveLabel { node, label: label.to_string() })
                .map(|n| n != 0);
        }
        self.permit(Right::Update, Some(node)).map_err(PoolError::from)?;
        let key = label_key(label)?;
        Ok(self.set_remove(node, key)? > 0)
    }

    /// Whether `node` carries the label whose key is `key` ([`label_key`]). No lock, no
    /// allocation; works on a read-only mapping.
    ///
    /// # Errors
    ///
    /// As [`Segment::set_contains`].
    pub fn has_label(&self, node: Handle, key: u64) -> Result<bool, SetError> {
        self.set_contains(node, key)
    }

    /// Fills `out` (cleared first) with the names of `node`'s labels, sorted.
    ///
    /// # Errors
    ///
    /// As [`Segment::set_elements`]; [`PoolError::Corrupt`] (as `LabelError::Pool`) for a
    /// registry whose child list is damaged.
    pub fn labels(&self, node: Handle, out: &mut Vec<String>) -> Result<(), LabelError> {
        out.clear();
        let mut keys = Vec::new();
        self.set_elements(node, &mut keys)?;
        if keys.is_empty() {
            return Ok(());
        }
        let Some(registry) = self.label_registry()? else { return Ok(()) };
        let mut kids = Vec::new();
        self.children(registry, &mut kids)?;
        for key in keys {
            if let Some(h) = self.child_with_hash(&kids, key) {
                if let Ok(n) = self.read(h) {
                    if n.kind() == Some(NodeKind::Label) {
                        out.push(n.name().to_string());
                    }
                }
            }
        }
        out.sort();
        Ok(())
    }

    /// The registry node of `label` (`/labels/<label>`), if the label was ever added.
    ///
    /// # Errors
    ///
    /// As [`check_label`]; [`LabelError::Pool`] when the registry cannot be read.
    pub fn label_node(&self, label: &str) -> Result<Option<Handle>, LabelError> {
        check_label(label)?;
        let Some(registry) = self.label_registry()? else { return Ok(None) };
        let found = self.child_named(registry, label)?;
        Ok(found.filter(|h| self.read(*h).is_ok_and(|n| n.kind() == Some(NodeKind::Label))))
    }

    /// Registers `label`'s name (`/labels/<label>`) without adding it to any node: a
    /// replica's set names labels by key, and their names arrive beside it.
    ///
    /// # Errors
    ///
    /// As [`Segment::add_label`].
    pub fn register_label_name(&self, label: &str) -> Result<(), LabelError> {
        let key = label_key(label)?;
        self.permit(Right::Create, Some(self.root())).map_err(PoolError::from)?;
        self.register_label(label, key).map(|_| ())
    }

    /// The `/labels` container, if it exists.
    fn label_registry(&self) -> Result<Option<Handle>, LabelError> {
        match self.child_named(self.root(), LABELS_CONTAINER)? {
            None => Ok(None),
            Some(h) if self.read(h)?.kind() == Some(NodeKind::Container) => Ok(Some(h)),
            Some(_) => Err(LabelError::RegistryTaken),
        }
    }

    /// Makes `/labels` and `/labels/<label>` unless they exist (`ensure_child`: a racing
    /// creator's node is taken). A registered node of another name under the same key is
    /// a collision: the key could not name both.
    fn register_label(&self, label: &str, key: u64) -> Result<Handle, LabelError> {
        if self.label_registry()?.is_none() {
            self.ensure_child(self.root(), &NewNode::new(NodeKind::Container, LABELS_CONTAINER))?;
        }
        let registry = self.label_registry()?.ok_or(LabelError::RegistryTaken)?;
        let mut kids = Vec::new();
        self.children(registry, &mut kids)?;
        if let Some(other) = self.child_with_hash(&kids, key) {
            if self.read(other)?.name() != label {
                return Err(LabelError::KeyCollision);
            }
        }
        let h = self.ensure_child(registry, &NewNode::new(NodeKind::Label, label))?;
        match self.read(h)?.kind() {
            Some(NodeKind::Label) => Ok(h),
            _ => Err(LabelError::RegistryTaken),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Capacities;
    use crate::DeleteMode;

    fn segment() -> crate::testing::TempSegment {
        let caps = Capacities { nodes: 64, events: 256, agents: 4, blob_chunks: 1, blob_chunk_size: 64, sets: 8 };
        crate::testing::temp_segment("labels", &caps)
    }

    #[test]
    fn label_names_are_checked() {
        assert_eq!(check_label(""), Err(LabelError::Empty));
        assert_eq!(check_label(&"x".repeat(65)), Err(LabelError::TooLong { len: 65, max: LABEL_MAX }));
        assert!(check_label(&"x".repeat(64)).is_ok());
        assert_eq!(check_label("a/b"), Err(LabelError::HasSlash { at: 1 }));
        assert_eq!(check_label("a\tb"), Err(LabelError::HasControl { at: 1 }));
        assert_eq!(check_label("a b"), Err(LabelError::HasWhitespace { at: 1 }));
        assert_eq!(check_label("a\u{a0}b"), Err(LabelError::HasWhitespace { at: 1 }));
        assert_eq!(check_label("@me"), Err(LabelError::LeadingAt));
        assert!(check_label("me@host").is_ok());
        assert!(check_label("prio:high").is_ok());
        assert_eq!(label_key("x").unwrap(), crate::pool::name_hash(b"x"));
    }

    #[test]
    fn add_list_remove() {
        let seg = segment();
        let t = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "t")).unwrap();
        let u = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "u")).unwrap();
        let mut names = Vec::new();
        seg.labels(t, &mut names).unwrap();
        assert!(names.is_empty());
        assert!(seg.label_node("zeta").unwrap().is_none());
        assert!(seg.add_label(t, "zeta").unwrap());
        assert!(seg.add_label(t, "alpha").unwrap());
        assert!(!seg.add_label(t, "alpha").unwrap());
        assert!(seg.add_label(u, "alpha").unwrap());
        seg.labels(t, &mut names).unwrap();
        assert_eq!(names, ["alpha", "zeta"]);
        // One registry node per label, under one container.
        let registry = seg.label_registry().unwrap().unwrap();
        assert_eq!(seg.child_count(registry).unwrap(), 2);
        let alpha = seg.label_node("alpha").unwrap().unwrap();
        assert_eq!(seg.read(alpha).unwrap().kind(), Some(NodeKind::Label));
        // A set element that is no label is not listed.
        seg.set_add(t, 12345).unwrap();
        seg.labels(t, &mut names).unwrap();
        assert_eq!(names, ["alpha", "zeta"]);
        assert!(seg.remove_label(t, "zeta").unwrap());
        assert!(!seg.remove_label(t, "zeta").unwrap());
        assert!(!seg.has_label(t, label_key("zeta").unwrap()).unwrap());
        assert!(seg.has_label(u, label_key("alpha").unwrap()).unwrap());
        seg.labels(t, &mut names).unwrap();
        assert_eq!(names, ["alpha"]);
        // Bad labels change nothing.
        assert_eq!(seg.add_label(t, "a b"), Err(LabelError::HasWhitespace { at: 1 }));
        assert_eq!(seg.child_count(registry).unwrap(), 2);
        // Label registry nodes are not work.
        let me = seg.join("w", "r").unwrap();
        assert!(matches!(
            seg.claim(alpha, me, std::time::Duration::from_secs(5)),
            Err(crate::TaskError::NotATask { kind: Some(NodeKind::Label) })
        ));
    }

    #[test]
    fn ready_claim_next_and_query_select_by_label() {
        use crate::{Query, Status, TaskFilter};
        let seg = segment();
        let ready = |name: &str, prio: u8| {
            seg.add(seg.root(), &NewNode::new(NodeKind::Task, name).status(Status::Ready).priority(prio)).unwrap()
        };
        let (a, b, c) = (ready("a", 1), ready("b", 9), ready("c", 5));
        seg.add_label(a, "gpu").unwrap();
        seg.add_label(c, "gpu").unwrap();
        seg.add_label(b, "cpu").unwrap();
        let gpu = label_key("gpu").unwrap();
        let filter = TaskFilter { label: Some(gpu), ..TaskFilter::default() };
        let mut out = Vec::new();
        seg.ready(&filter, 10, &mut out).unwrap();
        assert_eq!(out.iter().map(|n| n.name()).collect::<Vec<_>>(), ["c", "a"], "best first, gpu only");
        let mut found = Vec::new();
        seg.query(&Query { label: Some(gpu), ..Query::default() }, &mut found).unwrap();
        assert_eq!(found.len(), 2);
        let me = seg.join("w", "r").unwrap();
        let lease = std::time::Duration::from_secs(5);
        assert_eq!(seg.claim_next(&filter, me, lease).unwrap().task, c);
        assert_eq!(seg.claim_next(&filter, me, lease).unwrap().task, a);
        assert_eq!(seg.claim_next(&filter, me, lease), Err(crate::TaskError::NothingReady));
    }

    #[test]
    fn a_foreign_labels_node_is_refused() {
        let seg = segment();
        let t = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "t")).unwrap();
        let f = seg.add(seg.root(), &NewNode::new(NodeKind::Folder, LABELS_CONTAINER)).unwrap();
        assert_eq!(seg.add_label(t, "x"), Err(LabelError::RegistryTaken));
        assert!(!seg.has_label(t, label_key("x").unwrap()).unwrap());
        seg.delete(f, DeleteMode::LeafOnly).unwrap();
        assert!(seg.add_label(t, "x").unwrap());
    }

    #[test]
    fn racing_first_adds_make_one_registry() {
        let seg = segment();
        let tasks: Vec<Handle> =
            (0..4).map(|i| seg.add(seg.root(), &NewNode::new(NodeKind::Task, &format!("t{i}"))).unwrap()).collect();
        std::thread::scope(|s| {
            for &t in &tasks {
                let seg = &seg;
                s.spawn(move || {
                    seg.add_label(t, "shared").unwrap();
                    seg.add_label(t, "other").unwrap();
                });
            }
        });
        let registry = seg.label_registry().unwrap().unwrap();
        assert_eq!(seg.child_count(registry).unwrap(), 2);
        let mut names = Vec::new();
        for &t in &tasks {
            seg.labels(t, &mut names).unwrap();
            assert_eq!(names, ["other", "shared"]);
        }
    }
}
