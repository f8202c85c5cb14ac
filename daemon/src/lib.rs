//! The daemon's parts, as a library so that fuzz targets and tests reach the readers of
//! untrusted input (journal and snapshot files) directly; the `worknoded` binary is
//! `main.rs` over them.
//!
//! * [`journal`]: the journal and snapshot files — format, recovery, the journal thread.
//! * [`instance`]: one daemon per segment (a lock in the user's private runtime dir).
//! * [`sessions`]: agent sessions over the boot-id-named Unix socket.

pub mod instance;
pub mod journal;
pub mod sessions;
