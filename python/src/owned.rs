//! An event reader and an agent session that own the mapping they borrow.
//!
//! The library's [`Reader`] and [`Session`] borrow their [`Segment`]; a Python object
//! cannot carry a borrow, so each pairs an `Arc<Segment>` with the borrower made from it
//! (`self_cell`: the borrower is dropped before the `Arc`). The mapping is unmapped when
//! the last client, node, claim or cursor made from it is gone — a process that connects
//! and closes in a loop keeps no mapping per call.

use self_cell::self_cell;
use std::sync::Arc;
use worknode::{Reader, Segment, Session};

type BorrowedReader<'a> = Reader<'a>;
type BorrowedSession<'a> = Session<'a>;

self_cell!(
    /// A ring cursor holding its segment.
    pub struct OwnedReader {
        owner: Arc<Segment>,
        #[covariant]
        dependent: BorrowedReader,
    }
);

self_cell!(
    /// An agent's session holding its segment.
    pub struct OwnedSession {
        owner: Arc<Segment>,
        #[covariant]
        dependent: BorrowedSession,
    }
);
