//! `worknode._native`: the Python SDK's extension module, a thin PyO3 binding over the
//! agent handle ([`worknode::Segment`]).
//!
//! Every method is a few lines over one library call, with the CLI's own pieces from the
//! `wn` library: nodes are named by [`wn::resolve::node`] (UUID, unique prefix, `/path`)
//! and every error becomes a [`wn::fail::Fail`] (code, hint, exit code) before it is
//! raised as the matching `worknode.Error` subclass (`worknode/_errors.py` picks the
//! class from the exit code). The pure-Python layer (`worknode/__init__.py`) adds
//! `connect`, the exceptions and the asyncio client.
//!
//! * **The GIL**: every call that can wait (a blocking claim, an event wait, a write
//!   that may wait for the journal, a seqlock retry) runs inside `Python::detach`, so
//!   other Python threads run meanwhile. Node reads are a copy of a few hundred bytes and
//!   keep the GIL (detaching would cost more than the read).
//! * **The mapping** is shared by `Arc`: a client, and every node, claim, event and
//!   cursor made from it, hold it; it is unmapped when the last of them goes
//!   (`owned.rs` pairs the library's borrowing reader and session with it).
//! * **The session**: a client that names an agent opens a session
//!   ([`worknode::Segment::open_session`]), so the daemon releases its claims at once
//!   when the process dies, even by `SIGKILL`.
//! * **Lease renewal**: while a `Claim` is held in a `with` block, one Rust thread per
//!   client (started on first use) renews its lease when a third of it has run, with no
//!   Python code and no GIL involved.
//! * **Arguments** are checked in `args.rs`: out of range or of the wrong type is a
//!   `worknode.InvalidInput` naming the argument.
//!
//! Modules: `args` (conversions in and out), `node` (`Node`), `claim` (`Claim` and the
//! renewer), `events` (`Event`, `Events`), `client` (`Client`), `owned`.

use pyo3::prelude::*;

mod args;
mod claim;
mod client;
mod events;
mod node;
mod owned;

/// The default segment name (`WORKNODE_SEGMENT`, else the per-user default).
#[pyfunction]
fn default_segment() -> String {
    worknode::default_segment_name()
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::Client>()?;
    m.add_class::<node::Node>()?;
    m.add_class::<claim::Claim>()?;
    m.add_class::<events::Events>()?;
    m.add_class::<events::Event>()?;
    m.add_function(wrap_pyfunction!(default_segment, m)?)?;
    Ok(())
}
