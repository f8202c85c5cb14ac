//! Errors as `wn` reports them: a message, a hint, a stable code name and an exit code.
//!
//! Every error type of the library maps here, so a script can branch on the exit code
//! (documented in `wn --help`) and, with `--json`, on the `code` string:
//!
//! | exit | meaning |
//! |------|---------|
//! | 0 | ok |
//! | 1 | anything else (damaged segment, OS error, unhealthy `doctor`) |
//! | 2 | usage: bad arguments, a node name that is ambiguous or malformed, a value over a limit |
//! | 3 | conflict: already claimed, illegal transition, stale epoch, expired lease, not the claimant, blocked, cycle |
//! | 4 | not found: no such segment, node or agent; nothing ready to claim |
//! | 5 | lagged, or timed out waiting (an event, a lock held too long, the segment not ready) |
//! | 6 | permission denied, or the segment is attached read-only |
//! | 7 | a capacity is full (nodes, agents, blob arena, blockers, assignees, sets) |
//! | 8 | the daemon journaling the segment is gone: the change was refused, nothing was made |

use crate::output::clean;
use serde_json::{json, Value};
use std::process::ExitCode;
use worknode::{AgentError, AttachError, DocError, PoolError, RingError, SetError, TaskError};

/// Exit codes, as documented in `wn --help`.
pub mod exit {
    /// Anything else.
    pub const OTHER: u8 = 1;
    /// Bad arguments.
    pub const USAGE: u8 = 2;
    /// Already claimed, illegal transition, stale epoch, blocked, cycle.
    pub const CONFLICT: u8 = 3;
    /// No such segment, node or agent; nothing ready.
    pub const NOT_FOUND: u8 = 4;
    /// Lagged or timed out.
    pub const TIMEOUT: u8 = 5;
    /// Permission denied.
    pub const PERMISSION: u8 = 6;
    /// A capacity is exhausted.
    pub const FULL: u8 = 7;
    /// The daemon that journals the segment is gone: no change was made.
    pub const DAEMON_GONE: u8 = 8;
}

/// The exit-code table shown by `wn --help` and `wn commands`.
pub const EXIT_CODES: [(u8, &str); 9] = [
    (0, "ok"),
    (1, "anything else (damaged segment, OS error, `doctor` found problems)"),
    (2, "usage: bad arguments, an ambiguous or malformed node name, a value over a limit"),
    (3, "conflict: already claimed, illegal transition, stale epoch, lease expired, not the claimant, blocked, cycle"),
    (4, "not found: no such segment, node or agent; nothing ready to claim"),
    (5, "lagged, or timed out waiting"),
    (6, "permission denied, or the segment is read-only"),
    (7, "capacity full: nodes, agents, blob arena, blockers, assignees"),
    (8, "the daemon journaling the segment is gone: nothing was changed (start worknoded again)"),
];

/// The advice for a name holding a control character.
const CONTROL_HINT: &str = "names may not hold control characters (terminal escapes, newlines, tabs); remove them";

/// A failed command.
#[derive(Debug)]
pub struct Fail {
    /// What went wrong.
    pub message: String,
    /// What to do about it (may be empty).
    pub hint: String,
    /// A stable machine-readable name (`segment_not_found`, `pool_full`, …).
    pub code: &'static str,
    /// The process exit code.
    pub exit: u8,
    /// Extra machine-readable detail (candidates of an ambiguous name, …).
    pub details: Option<Value>,
    /// The node a change was made to although the command failed (its event, or the
    /// confirmation that it is on disk, is missing): named by UUID when reported.
    pub changed: Option<worknode::Handle>,
}

impl Fail {
    /// A failure with an explicit hint.
    pub fn new(code: &'static str, exit: u8, message: impl Into<String>, hint: impl Into<String>) -> Fail {
        Fail { message: message.into(), hint: hint.into(), code, exit, details: None, changed: None }
    }

    /// A library error: its message reads "what happened; what to do", split at the first
    /// "; " into message and hint.
    fn lib(code: &'static str, exit: u8, e: &dyn std::fmt::Display) -> Fail {
        let text = e.to_string();
        match text.split_once("; ") {
            Some((m, h)) => Fail::new(code, exit, m, h),
            None => Fail::new(code, exit, text, ""),
        }
    }

    /// A library error that says only what happened, with the CLI's advice.
    fn lib_hint(code: &'static str, exit: u8, e: &dyn std::fmt::Display, hint: impl Into<String>) -> Fail {
        Fail::new(code, exit, e.to_string(), hint)
    }

    /// A failure with no more specific code.
    pub fn other(message: impl Into<String>) -> Fail {
        Fail::new("error", exit::OTHER, message, "")
    }

    /// Bad arguments (exit 2).
    pub fn usage(message: impl Into<String>, hint: impl Into<String>) -> Fail {
        Fail::new("usage", exit::USAGE, message, hint)
    }

    /// Attaches machine-readable detail.
    pub fn with_details(mut self, details: Value) -> Fail {
        self.details = Some(details);
        self
    }

    /// Replaces the code name.
    pub fn with_code(mut self, code: &'static str) -> Fail {
        self.code = code;
        self
    }

    /// Names the node a failed command changed anyway by UUID and path (the library's
    /// error names its slot handle), so a script does not repeat the change blindly.
    pub fn name_changed_node(mut self, seg: &worknode::Segment) -> Fail {
        let Some(h) = self.changed else { return self };
        let Ok(n) = seg.read(h) else { return self };
        let path = crate::resolve::path_of(seg, h);
        self.message = self.message.replace(&format!("node {h} "), &format!("node {} ({path}) ", n.uuid()));
        self.hint = format!(
            "the change was made (do not repeat it blindly); {}",
            if self.hint.is_empty() { "check the daemon with `wn dump`" } else { &self.hint }
        );
        let mut d = self.details.take().unwrap_or_else(|| json!({}));
        d["changed"] = json!({ "uuid": n.uuid().to_string(), "path": path });
        self.details = Some(d);
        self
    }

    /// Prints the failure to stderr (as one JSON object when asked) and returns the exit
    /// code.
    pub fn report(&self, json: bool) -> ExitCode {
        if json {
            let mut v = json!({ "error": self.message, "code": self.code, "hint": self.hint, "exit": self.exit });
            if let Some(d) = &self.details {
                v["details"] = d.clone();
            }
            eprintln!("{v}");
        } else {
            // Messages echo names and arguments: escaped, so none can drive the terminal.
            eprintln!("wn: {}", clean(&self.message));
            if !self.hint.is_empty() {
                eprintln!("hint: {}", clean(&self.hint));
            }
            if let Some(Value::Array(c)) = self.details.as_ref().and_then(|d| d.get("candidates")) {
                for cand in c {
                    let uuid = cand.get("uuid").and_then(Value::as_str).unwrap_or("");
                    let path = cand.get("path").and_then(Value::as_str).unwrap_or("");
                    eprintln!("  {}  {}", clean(uuid), clean(path));
                }
            }
        }
        ExitCode::from(self.exit)
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
            PayloadTooLarge { .. } | TopicTooLong { .. } => ("too_large", exit::USAGE),
            JournalStalled { .. } => ("journal_stalled", exit::TIMEOUT),
            NotDurable { .. } => ("not_durable", exit::TIMEOUT),
            Closing => ("segment_closing", exit::OTHER),
            DaemonGone => return daemon_gone("the event was not appended"),
        };
        Fail::lib(code, exit, &e)
    }
}

/// The daemon that journals the segment died: the change was refused.
fn daemon_gone(what: &str) -> Fail {
    Fail::new(
        "daemon_gone",
        exit::DAEMON_GONE,
        format!("the daemon journaling this segment is gone; {what}"),
        "start worknoded again for this segment: it adopts the segment and its journal continues; then retry",
    )
}

impl From<AttachError> for Fail {
    fn from(e: AttachError) -> Self {
        use AttachError::*;
        let (code, exit) = match &e {
            NotFound { .. } => ("segment_not_found", exit::NOT_FOUND),
            PermissionDenied { .. } => ("permission_denied", exit::PERMISSION),
            InvalidName { .. } => ("invalid_segment_name", exit::USAGE),
            AlreadyExists { .. } => ("segment_exists", exit::CONFLICT),
            NoSpace { .. } => ("no_space", exit::FULL),
            Capacity(_) => ("bad_capacity", exit::USAGE),
            NotWorknode { .. } => ("not_a_worknode_segment", exit::OTHER),
            VersionMismatch { .. } => ("layout_version_mismatch", exit::OTHER),
            SizeMismatch { .. } | LayoutMismatch { .. } => ("segment_damaged", exit::OTHER),
            NotReady => ("segment_not_ready", exit::TIMEOUT),
            Closing => ("segment_closing", exit::OTHER),
            Incomplete => ("segment_incomplete", exit::OTHER),
            ForeignOwner { .. } | UnsafeMode { .. } | NotAFile { .. } => ("segment_untrusted", exit::PERMISSION),
            DaemonRunning { .. } => ("daemon_running", exit::CONFLICT),
            Os { errno, .. }
                if std::io::Error::from_raw_os_error(*errno as i32).kind() == std::io::ErrorKind::PermissionDenied =>
            {
                ("permission_denied", exit::PERMISSION)
            }
            Os { .. } => ("os_error", exit::OTHER),
        };
        Fail::lib(code, exit, &e)
    }
}

impl From<PoolError> for Fail {
    fn from(e: PoolError) -> Self {
        use PoolError::*;
        let (code, exit) = match e {
            PoolFull { .. } => ("pool_full", exit::FULL),
            NameHasControl { .. } => {
                return Fail::lib_hint("invalid_name", exit::USAGE, &e, CONTROL_HINT);
            }
            ValueOutOfRange => {
                return Fail::lib_hint(
                    "invalid_value",
                    exit::USAGE,
                    &e,
                    "give a finite decimal number (not NaN or inf), e.g. --value 1500",
                );
            }
            NameTooLong { .. } | DescriptionTooLong { .. } | ProgressOutOfRange { .. } => {
                ("invalid_value", exit::USAGE)
            }
            NotFound | StaleHandle => ("not_found", exit::NOT_FOUND),
            HasChildren { .. } => ("has_children", exit::CONFLICT),
            RootImmutable => ("root_immutable", exit::CONFLICT),
            ReadOnly => ("read_only", exit::PERMISSION),
            Busy { .. } | Contended => ("busy", exit::TIMEOUT),
            IllegalTransition { .. } => ("illegal_transition", exit::CONFLICT),
            EventNotAppended { node, .. } => {
                return Fail { changed: Some(node), ..Fail::lib("not_durable", exit::TIMEOUT, &e) };
            }
            Corrupt { .. } => ("corrupt", exit::OTHER),
            Closing => ("segment_closing", exit::OTHER),
            DaemonGone => return daemon_gone("no change was made"),
        };
        Fail::lib(code, exit, &e)
    }
}

impl From<AgentError> for Fail {
    fn from(e: AgentError) -> Self {
        use AgentError::*;
        let (code, exit) = match e {
            Pool(p) => return p.into(),
            TableFull { .. } => ("agent_table_full", exit::FULL),
            BadName { .. } | RoleTooLong { .. } => ("invalid_value", exit::USAGE),
            ControlCharacter { .. } => return Fail::lib_hint("invalid_name", exit::USAGE, &e, CONTROL_HINT),
            NotFound => ("agent_not_found", exit::NOT_FOUND),
            SessionTaken { .. } => ("session_taken", exit::CONFLICT),
            Busy => ("busy", exit::TIMEOUT),
        };
        Fail::lib(code, exit, &e)
    }
}

impl From<TaskError> for Fail {
    fn from(e: TaskError) -> Self {
        use TaskError::*;
        let (code, exit) = match e {
            Pool(p) => return p.into(),
            AlreadyClaimed { .. } => ("already_claimed", exit::CONFLICT),
            IllegalTransition { .. } => ("illegal_transition", exit::CONFLICT),
            StaleEpoch { .. } => ("stale_epoch", exit::CONFLICT),
            LeaseExpired { .. } => ("lease_expired", exit::CONFLICT),
            NotClaimant => ("not_claimant", exit::CONFLICT),
            Blocked { .. } => ("blocked", exit::CONFLICT),
            Cycle => ("cycle", exit::CONFLICT),
            NothingReady => ("nothing_ready", exit::NOT_FOUND),
            TooManyBlockers => ("too_many_blockers", exit::FULL),
            TooManyAssignees => ("too_many_assignees", exit::FULL),
            UnknownAgent => ("agent_not_found", exit::NOT_FOUND),
            NotATask { .. } => {
                return Fail::lib_hint(
                    "not_a_task",
                    exit::USAGE,
                    &e,
                    "claim a task (or a custom node): `wn ready` lists the claimable ones, `wn claim --next` takes the best",
                );
            }
            NoteTooLong { max, .. } => {
                return Fail::lib_hint(
                    "note_too_long",
                    exit::USAGE,
                    &e,
                    format!(
                        "keep it to {max} bytes (a quote or backslash counts 2); put longer text in a document (`wn doc put`) and name it in the note"
                    ),
                );
            }
            LeaseOutOfRange { .. } => {
                return Fail::lib_hint(
                    "invalid_value",
                    exit::USAGE,
                    &e,
                    "give a lease from 1ms to 30d, e.g. --lease 10m",
                );
            }
        };
        Fail::lib(code, exit, &e)
    }
}

impl From<DocError> for Fail {
    fn from(e: DocError) -> Self {
        use DocError::*;
        let (code, exit) = match e {
            Pool(p) => return p.into(),
            TooLarge { .. } => ("document_too_large", exit::FULL),
            ArenaFull { .. } => ("blob_arena_full", exit::FULL),
            ContentTypeTooLong { .. } => ("invalid_value", exit::USAGE),
            NotADocument => ("not_a_document", exit::USAGE),
            Changed => ("document_changed", exit::TIMEOUT),
            ChecksumMismatch { .. } => ("checksum_mismatch", exit::OTHER),
        };
        Fail::lib(code, exit, &e)
    }
}

impl From<SetError> for Fail {
    fn from(e: SetError) -> Self {
        use SetError::*;
        let (code, exit) = match e {
            Pool(p) => return p.into(),
            SetFull { .. } => ("set_full", exit::FULL),
            NoSetSlots { .. } => ("no_set_slots", exit::FULL),
            Corrupt => ("corrupt", exit::OTHER),
        };
        Fail::lib(code, exit, &e)
    }
}
