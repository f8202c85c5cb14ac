//! Errors, one enum per family of operations, each with a message that says what
//! happened and what to do about it.

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
            InvalidName { name, reason } => write!(f, "invalid segment name {name:?}: {reason}; use 1-200 letters, digits, '.', '_' or '-'"),
            NotFound { name } => write!(f, "no Worknode segment named {name:?} (/dev/shm/{name}); is the daemon running? start it with `worknoded --segment {name}`, or pass --segment / set WORKNODE_SEGMENT"),
            PermissionDenied { name, writable } => write!(f, "permission denied opening segment {name:?} {}; it belongs to another user or its mode forbids this: run as the daemon's user{}", if *writable { "read-write" } else { "read-only" }, if *writable { " or attach read-only" } else { "" }),
            AlreadyExists { name } => write!(f, "a segment named {name:?} already exists; another daemon may own it: stop it, remove /dev/shm/{name} if it is stale, or choose another --segment"),
            NoSpace { bytes } => write!(f, "no space for a {bytes}-byte segment in /dev/shm; free space there or ask for smaller capacities (--nodes, --events, --blob-chunks)"),
            Capacity(e) => write!(f, "{e}"),
            NotWorknode { name, found } => write!(f, "/dev/shm/{name} is not a Worknode segment (magic {found:#018x}); another program owns that name: choose another --segment"),
            VersionMismatch { found, expected } => write!(f, "segment layout version {found} does not match this build's version {expected}; use tools of the daemon's version, or stop the daemon and recreate the segment"),
            SizeMismatch { actual, expected } => write!(f, "segment is {actual} bytes but its header requires {expected}; it is truncated or damaged: stop the daemon and recreate it"),
            LayoutMismatch { what } => write!(f, "segment header field {what} disagrees with its own capacities; the segment is damaged: stop the daemon and recreate it"),
            NotReady => write!(f, "the segment is still being initialised by the daemon; retry in a moment"),
            Closing => write!(f, "the daemon is shutting this segment down; restart the daemon and attach again"),
            Incomplete => write!(f, "the segment was left half-initialised by a daemon that died; remove it (the daemon does this on start) and start again"),
            DaemonRunning { pid } => write!(f, "the segment's daemon (pid {pid}) still runs; stop it first"),
            ForeignOwner { name, owner, mode, expected } => write!(f, "segment {name:?} is owned by uid {owner} (mode {mode:o}), not by this process's uid {expected}; refusing it: run as its owner, or remove /dev/shm/{name} if someone else planted it"),
            UnsafeMode { name, owner, mode } => write!(f, "segment {name:?} (owner uid {owner}) has mode {mode:o}, not 600, so other users may read or write it; refusing it: remove /dev/shm/{name} and let the daemon create it again"),
            NotAFile { name } => write!(f, "/dev/shm/{name} is not a regular file (someone put a FIFO, directory or device there); refusing it: remove it, or choose another --segment"),
            Os { op, errno } => write!(f, "{op} failed: {errno} ({})", errno.desc()),
        }
    }
}

impl std::error::Error for AttachError {}

/// Why an operation on nodes failed. Nothing was changed when one is returned, except
/// for [`PoolError::EventNotAppended`]: that change was made (to the node it names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
        /// What was found inconsistent.
        what: &'static str,
    },
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use PoolError::*;
        match self {
            PoolFull { capacity } => write!(f, "node pool full ({capacity} slots); delete nodes or restart the daemon with a larger --nodes"),
            NameTooLong { len, max } => write!(f, "name is {len} bytes, the limit is {max}; shorten it"),
            DescriptionTooLong { len, max } => write!(f, "description is {len} bytes, the inline limit is {max}; store longer text as a document"),
            NameHasControl { at } => write!(f, "name has a control character at byte {at}"),
            ValueOutOfRange => write!(f, "value is NaN, infinite or beyond ±{:e}", crate::VALUE_MAX),
            ProgressOutOfRange { value } => write!(f, "progress {value} is above 100"),
            NotFound => write!(f, "no such node; check the id (list nodes with `wn tree`)"),
            StaleHandle => write!(f, "the node this handle named was deleted; look it up again by UUID"),
            HasChildren { count } => write!(f, "node has {count} children; delete them first or delete recursively"),
            RootImmutable => write!(f, "the root container cannot be deleted"),
            ReadOnly => write!(f, "segment attached read-only; attach read-write to change it"),
            Busy { holder_pid } => write!(f, "node is being written by process {holder_pid} for too long; retry, or check that process"),
            Contended => write!(f, "too much contention to finish; retry"),
            Closing => write!(f, "the daemon is shutting this segment down and accepts no more changes; restart it and attach again"),
            DaemonGone => write!(f, "the daemon journaling this segment is gone; no change was made"),
            IllegalTransition { from, to } => write!(f, "illegal status change {from} -> {to}; claim, start, done, fail and block move tasks through claimed/in_progress/complete/failed/blocked"),
            EventNotAppended { error, node } => {
                write!(f, "the change to node {node} was made but its event could not be appended: {error}")
            }
            Corrupt { what } => write!(f, "segment inconsistency: {what}; run `wn doctor`, or stop the daemon and recreate the segment"),
        }
    }
}

impl std::error::Error for PoolError {}
