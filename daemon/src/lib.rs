//! The daemon's parts, as a library so that fuzz targets and tests reach the readers of
//! untrusted input (journal and snapshot files) directly; the `worknoded` binary is
//! `main.rs` over them.
//!
//! * [`journal`]: the journal and snapshot files — format, recovery, the journal thread.
//! * [`broker`]: brokered writes for agents that may not write the segment.
//! * [`instance`]: one daemon per segment (a lock in the user's private runtime dir).
//! * [`notify`]: readiness, shutdown and watchdog notices to systemd (`Type=notify`).
//! * [`sessions`]: agent sessions over the boot-id-named Unix socket.
//! * [`tokens`]: the token key, revocation list and issued log in the data directory.

pub mod broker;
pub mod instance;
pub mod journal;
pub mod notify;
pub mod sessions;
pub mod tokens;

/// The data directory used when neither `--data-dir` nor `WORKNODE_DATA_DIR`
/// names one: `$XDG_STATE_HOME/worknode/SEGMENT`, else
/// `~/.local/state/worknode/SEGMENT`, else `/var/tmp/worknode/SEGMENT`.
/// `worknoded` and `wn` both use it, so they find the same files.
pub fn default_data_dir(segment: &str) -> std::path::PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| std::path::PathBuf::from("/var/tmp"));
    base.join("worknode").join(segment)
}
