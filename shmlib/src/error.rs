//! Errors, one enum per family of operations. Each `Display` says what happened, in one
//! short clause with the values involved, and no advice: what to do about it depends on
//! the front end (`wn`, the daemon, an application), which adds its own. A variant that
//! wraps another error prints it and returns it from `source()`.

use nix::errno::Errno;
use std::fmt;

/// Why a segment could not be created, attached to or adopted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttachError {
    /// The segment name is not acceptable.
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No segment of that name exists.
    NotFound {
        /// The name given.
        name: String,
    },
    /// The segment exists but this user may not open it in the requested mode.
    PermissionDenied {
        /// The name given.
        name: String,
        /// Whether read-write access was asked for.
        writable: bool,
    },
    /// Creating: a segment of that name already exists.
    AlreadyExists {
        /// The name given.
        name: String,
    },
    /// Creating: the shared-memory filesystem has no room for the segment.
    NoSpace {
        /// Bytes that were asked for.
        bytes: u64,
    },
    /// The capacities asked for cannot be laid out.
    Capacity(crate::layout::CapacityError),
    /// The object does not start with the Worknode magic number.
    NotWorknode {
        /// The name given.
        name: String,
        /// The first eight bytes found.
        found: u64,
    },
    /// The segment was laid out by a different layout version.
    VersionMismatch {
        /// Version in the segment.
        found: u32,
        /// Version this library understands.
        expected: u32,
    },
    /// The object is smaller (or larger) than its header says.
    SizeMismatch {
        /// Bytes present.
        actual: u64,
        /// Bytes the header (or the minimal header) requires.
        expected: u64,
    },
    /// A header field disagrees with the layout its capacities imply.
    LayoutMismatch {
        /// Which field.
        what: &'static str,
    },
    /// The daemon has not finished initialising the segment.
    NotReady,
    /// The daemon is shutting the segment down.
    Closing,
    /// The segment was left half-initialised by a daemon that died.
    Incomplete,
    /// Adopting: the daemon the segment names still runs.
    DaemonRunning {
        /// Its pid.
        pid: u32,
    },
    /// The segment belongs to another user: whoever owns it could change it under us.
    ForeignOwner {
        /// The name given.
        name: String,
        /// Its owner's uid.
        owner: u32,
        /// Its file mode.
        mode: u32,
        /// This process's effective uid.
        expected: u32,
    },
    /// The name is not a regular file (a FIFO, a directory, a device).
    NotAFile {
        /// The name given.
        name: String,
    },
    /// The segment's mode lets users other than its owner read or write it.
    UnsafeMode {
        /// The name given.
        name: String,
        /// Its owner's uid.
        owner: u32,
        /// Its file mode.
        mode: u32,
    },
    /// Attaching through the daemon's broker, or having it verify a token, failed.
    Broker(crate::broker::BrokerError),
    /// Any other operating-system error.
    Os {
        /// The call that failed.
        op: &'static str,
        /// The error it returned.
        errno: Errno,
    },
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use AttachError::*;
        match self {
            InvalidName { name, reason } => write!(f, "invalid segment name {name:?}: {reason}"),
            NotFound { name } => write!(f, "no Worknode segment named {name:?} (/dev/shm/{name})"),
            PermissionDenied { name, writable } => write!(
                f,
                "permission denied opening segment {name:?} {}",
                if *writable { "read-write" } else { "read-only" }
            ),
            AlreadyExists { name } => write!(f, "a segment named {name:?} already exists"),
            NoSpace { bytes } => write!(f, "no space for a {bytes}-byte segment in /dev/shm"),
            Capacity(e) => write!(f, "{e}"),
            NotWorknode { name, found } => {
                write!(f, "/dev/shm/{name} is not a Worknode segment (magic {found:#018x})")
            }
            VersionMismatch { found, expected } => {
                write!(f, "segment layout version {found} does not match this build's version {expected}")
            }
            SizeMismatch { actual, expected } => {
                write!(f, "segment is {actual} bytes but its header requires {expected}")
            }
            LayoutMismatch { what } => write!(f, "segment header field {what} disagrees with its own capacities"),
            NotReady => write!(f, "segment still being initialised by the daemon"),
            Closing => write!(f, "the daemon is shutting this segment down"),
            Incomplete => write!(f, "segment left half-initialised by a daemon that died"),
            DaemonRunning { pid } => write!(f, "the segment's daemon (pid {pid}) still runs"),
            ForeignOwner { name, owner, mode, expected } => {
                write!(f, "segment {name:?} is owned by uid {owner} (mode {mode:o}), not uid {expected}")
            }
            UnsafeMode { name, owner, mode } => {
                write!(f, "segment {name:?} (owner uid {owner}) has mode {mode:o}, not 600")
            }
            NotAFile { name } => write!(f, "/dev/shm/{name} is not a regular file"),
            Broker(e) => write!(f, "{e}"),
            Os { op, errno } => write!(f, "{op} failed: {errno} ({})", errno.desc()),
        }
    }
}

impl std::error::Error for AttachError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AttachError::Capacity(e) => Some(e),
            AttachError::Os { errno, .. } => Some(errno),
            AttachError::Broker(e) => Some(e),
            _ => None,
        }
    }
}

/// Why an operation on nodes failed. Nothing was changed when one is returned, except
/// for [`PoolError::EventNotAppended`]: that change was made (to the node it names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PoolError {
    /// Every node slot is in use.
    PoolFull {
        /// Capacity of the pool.
        capacity: u32,
    },
    /// A name longer than the limit.
    NameTooLong {
        /// Bytes given.
        len: usize,
        /// Bytes allowed.
        max: usize,
    },
    /// A description longer than the inline limit.
    DescriptionTooLong {
        /// Bytes given.
        len: usize,
        /// Bytes allowed.
        max: usize,
    },
    /// An empty name.
    NameEmpty,
    /// A sibling already has this name (names under one parent are unique, so every path
    /// names one node).
    NameTaken {
        /// The sibling that has it.
        existing: crate::node::Handle,
    },
    /// A name holding `/`, the path separator.
    NameHasSlash {
        /// Byte offset of the first one.
        at: usize,
    },
    /// A name holding a control character (a terminal escape, a newline, …).
    NameHasControl {
        /// Byte offset of the first one.
        at: usize,
    },
    /// A node value that is NaN, infinite, or beyond ±[`crate::VALUE_MAX`] (sums of
    /// such values would not stay finite).
    ValueOutOfRange,
    /// Progress above 100.
    ProgressOutOfRange {
        /// Value given.
        value: u8,
    },
    /// No live node with that UUID or handle index.
    NotFound,
    /// A node with the UUID given already lives here (`Segment::add_with_uuid`).
    UuidInUse,
    /// A write's origin named host 0, which means "this host" (`Segment::with_origin`).
    InvalidOrigin,
    /// The handle's slot now holds another node (or none): re-resolve it by UUID.
    StaleHandle,
    /// A leaf-only delete of a node with children.
    HasChildren {
        /// Number of children.
        count: u64,
    },
    /// The root cannot be deleted.
    RootImmutable,
    /// The segment was attached read-only.
    ReadOnly,
    /// Another live process has held the node's writer lock too long.
    Busy {
        /// Its pid.
        holder_pid: u32,
    },
    /// Concurrent writers kept a bounded retry loop from finishing.
    Contended,
    /// The daemon is shutting the segment down: no more changes are accepted.
    Closing,
    /// The daemon that journals this segment is gone: a change now would be acknowledged
    /// but never written to disk, so none is made.
    DaemonGone,
    /// The token this handle holds (or the lack of one) does not allow the change.
    Denied(crate::grant::Denied),
    /// The broker that applies this handle's changes could not be reached or answered
    /// out of protocol; the change may or may not have been applied when the link broke.
    Broker(crate::broker::BrokerFault),
    /// A status change the state machine does not allow (or that only the claim and
    /// dependency operations may make).
    IllegalTransition {
        /// Current status.
        from: crate::node::Status,
        /// Requested status.
        to: crate::node::Status,
    },
    /// The change was made, but its event could not be appended.
    EventNotAppended {
        /// Why the append failed.
        error: crate::event::RingError,
        /// The node the change was made to (it exists, changed, whatever the error).
        node: crate::node::Handle,
    },
    /// A structure in the segment is inconsistent.
    Corrupt {
        /// What was found inconsistent. (Not carried over the broker's wire: a brokered
        /// client reads [`crate::broker::SEEN_BY_BROKER`]; the daemon logs the detail.)
        #[serde(skip, default = "crate::broker::seen_by_broker")]
        what: &'static str,
    },
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use PoolError::*;
        match self {
            PoolFull { capacity } => write!(f, "node pool full ({capacity} slots)"),
            NameTooLong { len, max } => write!(f, "name is {len} bytes, the limit is {max}"),
            DescriptionTooLong { len, max } => write!(f, "description is {len} bytes, the inline limit is {max}"),
            NameHasControl { at } => write!(f, "name has a control character at byte {at}"),
            NameEmpty => write!(f, "name is empty"),
            NameTaken { existing } => write!(f, "a sibling already has that name (node {existing})"),
            NameHasSlash { at } => write!(f, "name has a '/' at byte {at}"),
            ValueOutOfRange => write!(f, "value is NaN, infinite or beyond ±{:e}", crate::VALUE_MAX),
            ProgressOutOfRange { value } => write!(f, "progress {value} is above 100"),
            NotFound => write!(f, "no such node"),
            UuidInUse => write!(f, "a node with that UUID already exists"),
            InvalidOrigin => write!(f, "host id 0 names this host, not an origin"),
            StaleHandle => write!(f, "the node this handle named was deleted"),
            HasChildren { count } => write!(f, "node has {count} children"),
            RootImmutable => write!(f, "the root container cannot be deleted"),
            ReadOnly => write!(f, "segment attached read-only"),
            Busy { holder_pid } => write!(f, "node is being written by process {holder_pid} for too long"),
            Contended => write!(f, "too much contention to finish"),
            Closing => write!(f, "the daemon is shutting this segment down and accepts no more changes"),
            DaemonGone => write!(f, "the daemon journaling this segment is gone (no change was made)"),
            IllegalTransition { from, to } => write!(f, "illegal status change {from} -> {to}"),
            Denied(d) => write!(f, "{d}"),
            Broker(b) => write!(f, "{b}"),
            EventNotAppended { error, node } => {
                write!(f, "the change to node {node} was made but its event could not be appended: {error}")
            }
            Corrupt { what } => write!(f, "segment inconsistency: {what}"),
        }
    }
}

impl std::error::Error for PoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PoolError::EventNotAppended { error, .. } => Some(error),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AgentError, DocError, Handle, RingError, SetError, TaskError};
    use std::error::Error;

    /// A wrapper prints what it wraps and hands it out through `source()`.
    #[test]
    fn wrapped_errors_are_their_source() {
        let pool = PoolError::PoolFull { capacity: 16 };
        let inner = |e: &dyn Error| e.source().map(|s| s.to_string());
        for e in [
            &AgentError::Pool(pool) as &dyn Error,
            &TaskError::Pool(pool),
            &DocError::Pool(pool),
            &SetError::Pool(pool),
        ] {
            assert_eq!(e.to_string(), "node pool full (16 slots)");
            assert_eq!(inner(e).as_deref(), Some("node pool full (16 slots)"));
        }
        let ring = RingError::NotDurable { seq: 5, durable: 3 };
        let e = PoolError::EventNotAppended { error: ring, node: Handle { index: 3, generation: 1 } };
        assert_eq!(inner(&e), Some(ring.to_string()));
        assert!(e.to_string().ends_with(&ring.to_string()), "{e}");
        let cap = crate::layout::CapacityError { what: "events", value: 3, rule: "must be a power of two" };
        assert_eq!(inner(&AttachError::Capacity(cap)), Some(cap.to_string()));
        let os = AttachError::Os { op: "mmap", errno: Errno::ENOMEM };
        assert_eq!(inner(&os), Some(Errno::ENOMEM.to_string()));
        assert!(inner(&PoolError::NotFound).is_none() && inner(&AttachError::NotReady).is_none());
    }
}
