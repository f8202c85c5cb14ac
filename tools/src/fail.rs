//! Errors as `wn` reports them: a message, a hint, a stable code name and an exit code.

use std::process::ExitCode;
use worknode::{AttachError, PoolError, RingError};

/// Exit codes, as documented in `wn --help`.
pub mod exit {
    /// Anything else.
    pub const OTHER: u8 = 1;
    /// Already claimed, illegal transition, stale epoch, blocked.
    #[allow(dead_code)]
    pub const CONFLICT: u8 = 3;
    /// No such segment or node.
    pub const NOT_FOUND: u8 = 4;
    /// Lagged or timed out.
    pub const TIMEOUT: u8 = 5;
    /// Permission denied.
    pub const PERMISSION: u8 = 6;
    /// A capacity is exhausted.
    pub const FULL: u8 = 7;
}

/// A failed command.
#[derive(Debug)]
pub struct Fail {
    /// What went wrong, with what to do about it.
    pub message: String,
    /// A stable machine-readable name (`segment_not_found`, `pool_full`, …).
    pub code: &'static str,
    /// The process exit code.
    pub exit: u8,
}

impl Fail {
    /// Prints the failure to stderr (as JSON when asked) and returns the exit code.
    pub fn report(&self, json: bool) -> ExitCode {
        if json {
            let (error, hint) = match self.message.split_once("; ") {
                Some((e, h)) => (e, h),
                None => (self.message.as_str(), ""),
            };
            eprintln!("{}", serde_json::json!({ "error": error, "code": self.code, "hint": hint, "exit": self.exit }));
        } else {
            eprintln!("wn: {}", self.message);
        }
        ExitCode::from(self.exit)
    }
}

impl Fail {
    /// A failure with no more specific code.
    pub fn other(message: impl Into<String>) -> Fail {
        Fail { message: message.into(), code: "error", exit: exit::OTHER }
    }
}

impl From<RingError> for Fail {
    fn from(e: RingError) -> Self {
        use RingError::*;
        let (code, exit) = match e {
            Lagged { .. } => ("lagged", exit::TIMEOUT),
            Timeout => ("timeout", exit::TIMEOUT),
            ReadOnly => ("read_only", exit::PERMISSION),
            Busy { .. } | Contended => ("busy", exit::TIMEOUT),
            PayloadTooLarge { .. } | TopicTooLong { .. } => ("too_large", exit::OTHER),
            JournalStalled { .. } => ("journal_stalled", exit::TIMEOUT),
            NotDurable { .. } => ("not_durable", exit::TIMEOUT),
        };
        Fail { message: e.to_string(), code, exit }
    }
}

impl From<AttachError> for Fail {
    fn from(e: AttachError) -> Self {
        use AttachError::*;
        let (code, exit) = match &e {
            NotFound { .. } => ("segment_not_found", exit::NOT_FOUND),
            PermissionDenied { .. } => ("permission_denied", exit::PERMISSION),
            InvalidName { .. } => ("invalid_segment_name", exit::OTHER),
            NotWorknode { .. } => ("not_a_worknode_segment", exit::OTHER),
            VersionMismatch { .. } => ("layout_version_mismatch", exit::OTHER),
            SizeMismatch { .. } | LayoutMismatch { .. } => ("segment_damaged", exit::OTHER),
            NotReady => ("segment_not_ready", exit::TIMEOUT),
            Closing => ("segment_closing", exit::OTHER),
            NoSpace { .. } => ("no_space", exit::FULL),
            _ => ("attach_failed", exit::OTHER),
        };
        Fail { message: e.to_string(), code, exit }
    }
}

impl From<PoolError> for Fail {
    fn from(e: PoolError) -> Self {
        use PoolError::*;
        let (code, exit) = match e {
            PoolFull { .. } => ("pool_full", exit::FULL),
            NotFound | StaleHandle => ("not_found", exit::NOT_FOUND),
            ReadOnly => ("read_only", exit::PERMISSION),
            Busy { .. } | Contended => ("busy", exit::TIMEOUT),
            _ => ("invalid", exit::OTHER),
        };
        Fail { message: e.to_string(), code, exit }
    }
}
