//! # worknode: the client library of a Worknode shared-memory segment
//!
//! A daemon (`worknoded`) lays a fixed-capacity segment into POSIX shared memory; agent
//! processes attach with this crate and read and write records **directly in that
//! memory**: no socket, no serialization, no syscall on the hot path.
//!
//! ```
//! use std::time::Duration;
//! use worknode::{Access, Capacities, Daemon, NewNode, NodeKind, Segment, Status, TaskFilter};
//! # let name = format!("doc-example-{}", std::process::id());
//! // The daemon creates the segment; here we make a small private one.
//! let daemon = Daemon::create(&name, &Capacities { nodes: 64, events: 256, ..Capacities::default() }, 0o600)?;
//!
//! // An agent attaches by name and works on the tree.
//! let seg = Segment::attach(&name, Access::ReadWrite)?;
//! let project = seg.add(seg.root(), &NewNode::new(NodeKind::Project, "web app"))?;
//! let task = seg.add(project, &NewNode::new(NodeKind::Task, "schema").priority(5))?;
//! seg.update(task, |n| { n.set_status(Status::Ready)?; n.set_priority(7); Ok(()) })?;
//!
//! let snapshot = seg.read(task)?;           // a copy: no lock, no syscall
//! assert_eq!(snapshot.priority(), 7);
//! assert_eq!(seg.lookup(snapshot.uuid())?, task);
//!
//! // A worker opens a session (its claims are released if the process dies), claims
//! // the best ready task under a lease, reports progress and completes it.
//! let session = seg.open_session("worker-1", "builder")?;
//! let claim = seg.claim_next(&TaskFilter::default(), session.id(), Duration::from_secs(30))?;
//! assert_eq!(claim.task, task);
//! seg.progress(&claim, 50)?;
//! let done = seg.complete(&claim, "tables created")?;
//! assert_eq!(done.status(), Some(Status::Complete));
//! assert_eq!(seg.rollup(project, None)?.percent_complete, 100.0);
//! session.leave()?;
//! # drop(seg); drop(daemon); Segment::unlink(&name)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Every operation returns its own error enum ([`AttachError`], [`PoolError`],
//! [`TaskError`], [`AgentError`], [`DocError`], [`SetError`], [`RingError`], [`MailError`],
//! [`ReserveError`]); each
//! method's `# Errors` section says which variants it returns and when.
//!
//! ## Layers
//!
//! * `sys`: shared-memory objects, mappings, process identity.
//! * `sync`: the only module that touches raw segment memory (atomic views).
//! * [`layout`]: the `#[repr(C)]` structs, their asserts and the region geometry.
//! * `seqlock`, `freelist`, `index`, `clock`: the lock-free building blocks.
//! * `segment` and `pool`: the safe [`Segment`] API over them.
//!
//! ## Roles
//!
//! What a handle may do is its type:
//!
//! * [`Segment`] — the agent handle (`Segment::attach`): nodes, claims, documents,
//!   sets, events, agents and sessions. Every front end binds to it.
//! * [`Daemon`] — the daemon's handle (`daemon`: `Daemon::create`, `create_unready`,
//!   `create_for_restore`, `adopt`, and `stand_in` for housekeeping in the daemon's
//!   absence): lifecycle, housekeeping, the journal's header words and restore. It
//!   dereferences to [`Segment`].
//! * [`Inspector`] — read-only decoding (`inspect`: [`Segment::inspect`], a read-only
//!   attach suffices): `info`, the damage catalogue, slot control words, ring stamps.
//!
//! See `ARCHITECTURE.md` in the repository for the layout and the protocols.
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod agents;
mod blob;
pub mod broker;
mod claims;
mod claimwait;
mod clock;
mod daemon;
mod durability;
mod error;
mod event;
pub mod failpoint;
mod freelist;
mod genstate;
mod glob;
mod grant;
mod index;
mod inspect;
mod labels;
pub mod layout;
mod lifecycle;
mod mail;
mod node;
mod origin;
mod orset;
mod ownerlock;
mod pool;
mod principal;
mod query;
mod ready;
mod reserve;
mod restore;
mod ring;
mod segment;
mod seqlock;
mod session;
mod shared;
mod summary;
mod sync;
mod sys;
#[cfg(all(test, not(loom)))]
mod testing;
mod token;

pub use agents::{AgentError, AgentField, AgentId, AgentInfo};
pub use blob::{DocError, DocumentInfo};
pub use broker::{BrokerError, BrokerFault};
pub use claims::{Claim, TaskError, TaskFilter, LEASE_MAX, NOTE_MAX, PROGRESS_NOTE_MAX};
pub use claimwait::RECHECK as CLAIM_RECHECK;
pub use clock::{unix_ms, Hlc};
pub use daemon::{Daemon, Reclaimed};
pub use durability::{Durability, Heartbeat, DURABILITY_WAIT};
pub use error::{AttachError, PoolError};
pub use event::{Event, EventKind, Filter, NewEvent, RingError};
pub use glob::{check_path, Glob, GlobError, GLOB_MAX, PATH_MAX};
pub use grant::{Denied, Grant};
pub use inspect::{Damage, DamageClass, HeaderGuard, Holder, Inspector, RingSlotControl, SlotControl};
pub use labels::{check_label, label_key, LabelError, LABELS_CONTAINER, LABEL_MAX};
pub use layout::Capacities;
pub use lifecycle::{legal_moves, Edit};
pub use mail::{
    MailError, MailboxUsage, Message, MessageInfo, ACKED_KEPT, MAILBOX_MAX, MESSAGE_MAX, PENDING_STALE, THREAD_MAX,
};
pub use node::{check_name, check_node_name, check_value, Handle, NewNode, Node, NodeKind, Status, VALUE_MAX};
pub use origin::{Origin, ReplicaFields};
pub use orset::{OrSetState, SetError};
pub use pool::DeleteMode;
pub use principal::{Principal, PrincipalError, PrincipalKey, MAIL_CONTAINER};
pub use query::{Query, QueryStats, Rollup};
pub use reserve::{
    Reservation, ReservationInfo, ReserveError, ReserveOptions, GLOBS_MAX, REASON_MAX, RESERVATIONS, RESOLVE_WAIT,
};
pub use restore::RestoreStats;
pub use ring::Stamp as RingStamp;
pub use ring::{
    Reader, RingCounters, Start, Wait, BATCH_CHUNK as RING_BATCH_CHUNK, DEFAULT_ABANDON_AFTER, SPIN_WINDOW,
};
pub use segment::{
    default_segment_name, Access, RegionInfo, Segment, SegmentInfo, SegmentState, DEFAULT_MODE, DEFAULT_SEGMENT,
    MODE_ALLOWED, SEGMENT_ENV,
};
pub use session::{session_socket_addr, session_socket_name, Session};
pub use shared::{PendingClaim, BRIDGE_BEAT_STALE_MS, CONFIRM_WAIT};
pub use sys::{effective_uid, process_start_ticks, runtime_dir, shm_path, validate_name, OwnerTag};
pub use token::{
    decode_unverified, mint, verify, RevocationList, Right, Rights, Token, TokenError, TokenId, TokenKey, TOKEN_PREFIX,
    TOKEN_TEXT_MAX,
};

/// Internals exposed for the loom model tests only (`--cfg loom`).
#[cfg(loom)]
#[doc(hidden)]
pub mod loom_api {
    pub use crate::durability::JournalWake;
    pub use crate::freelist::{init, pop, push, FreeListError};
    pub use crate::ownerlock::try_acquire;
    pub use crate::ready::{words_for, ReadyIndex, Visit, BUCKETS, DEPS};
    pub use crate::reserve::{verdict, Verdict};
    pub use crate::ring::{Peek, RingView, SLOT_WORDS};
    pub use crate::seqlock::{active_copy, lock, read, read_locked, repair, unlock, write_locked, LockBusy};
}
