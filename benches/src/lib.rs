//! Shared helpers for the Worknode benchmarks (`benches/benches/*.rs`), and the
//! side-by-side harness `wn-bench` (`src/bin/wn-bench.rs`, run with
//! `cargo run --release -p worknode-benches --bin wn-bench`), whose modules are below:
//!
//! * [`suite`]: command line, the list of measurements, the run, child-role dispatch;
//! * [`proc`], [`pinning`], [`shm`]: child processes, CPU pinning, shared files;
//! * [`payload`], [`histogram`], [`pingpong`]: the checked 64-byte payload, HdrHistogram
//!   percentiles, the round-trip driver;
//! * one module per mechanism family: [`floor`], [`ring`], [`kernel_ipc`], [`iceoryx`],
//!   [`redis_peer`], [`sqlite`], [`throughput`], [`claims`], [`durability`], [`http`] (with
//!   its client, [`http_client`]);
//! * [`scale`], [`restore`]: inspection calls over a 100 000-node board, the daemon's
//!   restart over a data directory of that board and a million events;
//! * [`report`], [`plot`], [`sysinfo`]: tables, ratios and goals, the SVG, the machine.
//!
//! The benchmarks run against a private segment in `/dev/shm` that no daemon owns.
//! [`TempSegment`] creates one under a name unique to this process and removes it again
//! when it goes out of scope, including when a benchmark panics, so an aborted run does
//! not leave tens of megabytes behind in shared memory.
//!
//! ```
//! use worknode::Capacities;
//! use worknode_benches::TempSegment;
//!
//! let seg = TempSegment::create("doc", &Capacities { nodes: 64, ..Capacities::default() })?;
//! let path = seg.path();
//! assert!(path.exists());
//! drop(seg);
//! assert!(!path.exists(), "the guard unlinks the segment");
//! # Ok::<(), worknode::AttachError>(())
//! ```
#![warn(missing_docs)]

pub mod broker;
pub mod claims;
pub mod durability;
pub mod floor;
pub mod handoff;
pub mod histogram;
pub mod http;
pub mod http_client;
pub mod iceoryx;
pub mod kernel_ipc;
pub mod mcp;
pub mod payload;
pub mod pingpong;
pub mod pinning;
pub mod plot;
pub mod proc;
pub mod redis_peer;
pub mod replication;
pub mod report;
pub mod restore;
pub mod ring;
pub mod scale;
pub mod shm;
pub mod sqlite;
pub mod suite;
pub mod sysinfo;
pub mod throughput;

use std::ops::Deref;
use worknode::{AttachError, Capacities, Daemon, Segment};

/// Mode the benchmark segments are created with: owner read-write only.
pub const BENCH_MODE: u32 = 0o600;

/// A segment name unique to this process: `wn-bench-<pid>-<tag>`.
///
/// `tag` tells apart several segments of one process; it must consist of letters,
/// digits, `.`, `_` and `-` (see [`worknode::validate_name`]).
pub fn unique_name(tag: &str) -> String {
    format!("wn-bench-{}-{tag}", std::process::id())
}

/// A private segment that is unlinked when dropped (also while unwinding from a panic).
///
/// Dereferences to the [`Segment`], so every pool operation is available on it.
pub struct TempSegment {
    /// Always `Some` until `drop`, which unmaps it before unlinking the name. The
    /// creator holds the daemon's handle; benchmarks use it as an agent's [`Segment`].
    seg: Option<Daemon>,
    name: String,
}

impl TempSegment {
    /// Creates a segment named [`unique_name`]`(tag)` with the given capacities.
    ///
    /// A segment of that name can only be left over from an earlier process that had the
    /// same pid and was killed before it cleaned up, so it is removed first.
    pub fn create(tag: &str, caps: &Capacities) -> Result<TempSegment, AttachError> {
        let name = unique_name(tag);
        let seg = match Daemon::create(&name, caps, BENCH_MODE) {
            Err(AttachError::AlreadyExists { .. }) => {
                Segment::unlink(&name)?;
                Daemon::create(&name, caps, BENCH_MODE)?
            }
            other => other?,
        };
        Ok(TempSegment { seg: Some(seg), name })
    }

    /// The segment's name (without the leading `/`).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Deref for TempSegment {
    type Target = Segment;

    fn deref(&self) -> &Segment {
        self.seg.as_deref().expect("invariant: the segment is present until drop")
    }
}

impl Drop for TempSegment {
    fn drop(&mut self) {
        drop(self.seg.take());
        if let Err(e) = Segment::unlink(&self.name) {
            eprintln!("warning: could not unlink benchmark segment {}: {e}", self.name);
        }
    }
}
