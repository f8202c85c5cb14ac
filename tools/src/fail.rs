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
//! | 3 | conflict: already claimed, illegal transition, stale epoch, expired lease, not the claimant, blocked, cycle, an overlapping reservation or a reserved path |
//! | 4 | not found: no such segment, node or agent; nothing ready to claim |
//! | 5 | lagged, or timed out waiting (an event, a lock held too long, the segment not ready) |
//! | 6 | permission denied, or the segment is attached read-only |
//! | 7 | a capacity is full (nodes, agents, blob arena, blockers, assignees, sets, a mailbox) |
//! | 8 | the daemon journaling the segment is gone: the change was refused, nothing was made |

use crate::output::clean;
use serde_json::{json, Value};
use std::process::ExitCode;
use worknode::broker::Refusal;
use worknode::{
    AgentError, AttachError, BrokerError, BrokerFault, Denied, DocError, LabelError, MailError, PoolError,
    ReserveError, RingError, SetError, TaskError,
};

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
    (3, "conflict: already claimed, illegal transition, stale epoch, lease expired, not the claimant, blocked, cycle, a reservation overlaps or holds a path"),
    (4, "not found: no such segment, node or agent; nothing ready to claim"),
    (5, "lagged, or timed out waiting"),
    (6, "permission denied, or the segment is read-only"),
    (7, "capacity full: nodes, agents, blob arena, blockers, assignees, a mailbox"),
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

    /// A library error: its `Display` says what happened; the advice is `wn`'s.
    fn lib(code: &'static str, exit: u8, e: &dyn std::fmt::Display, hint: impl Into<String>) -> Fail {
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

/// Advice for a segment that is damaged beyond attaching.
const RECREATE_HINT: &str = "the segment is damaged: stop the daemon and recreate it";
/// Advice for an inconsistency found in a structure of the segment.
const CORRUPT_HINT: &str = "run `wn doctor`, or stop the daemon and recreate the segment";
/// Advice when the daemon is shutting the segment down.
const CLOSING_HINT: &str = "restart the daemon and attach again (run the command again once it is up)";
/// Advice on a status change the state machine refuses: what is legal from there.
fn transition_hint(from: worknode::Status) -> String {
    // The library names its operations; these are the verbs that make them.
    let verb = |m: &&str| match *m {
        "complete" => "done".to_string(),
        "remove" => "rm".to_string(),
        "cancel --force" => "cancel --force".to_string(),
        "remove the blockers" => "dep rm".to_string(),
        m => m.to_string(),
    };
    let verbs: Vec<String> = worknode::legal_moves(from).iter().map(verb).collect();
    format!("from {from} a task can take: {}", verbs.iter().map(|v| format!("`wn {v}`")).collect::<Vec<_>>().join(", "))
}

impl From<RingError> for Fail {
    fn from(e: RingError) -> Self {
        use RingError::*;
        let (code, exit, hint) = match e {
            Lagged { .. } => ("lagged", exit::TIMEOUT, "read faster, or give the daemon a larger --events".into()),
            Timeout => ("timeout", exit::TIMEOUT, String::new()),
            ReadOnly => ("read_only", exit::PERMISSION, "attach read-write to append events".into()),
            Busy { holder_pid } => {
                ("busy", exit::TIMEOUT, format!("check process {holder_pid}; retry when it is done"))
            }
            Contended => ("busy", exit::TIMEOUT, "retry".into()),
            PayloadTooLarge { .. } => {
                ("too_large", exit::USAGE, "put larger data in a document (`wn doc put`) and reference it".into())
            }
            TopicTooLong { .. } => ("too_large", exit::USAGE, "use a shorter name".into()),
            JournalStalled { .. } => {
                ("journal_stalled", exit::TIMEOUT, "is the daemon running? check `wn dump` and the daemon's log".into())
            }
            NotDurable { .. } => (
                "not_durable",
                exit::TIMEOUT,
                "the daemon is slow or gone: check it, the change may be lost on a host restart".into(),
            ),
            Closing => ("segment_closing", exit::OTHER, CLOSING_HINT.into()),
            DaemonGone => return daemon_gone("the event was not appended"),
            Denied(d) => return denied(d),
            Broker(f) => return broker_fault(f),
        };
        Fail::lib(code, exit, &e, hint)
    }
}

/// A change the token (or the lack of one) does not allow: exit 6, with what to do.
fn denied(d: Denied) -> Fail {
    let (code, hint) = match d {
        Denied::NoToken => (
            "token_required",
            "the daemon runs with --require-tokens: pass --token TOKEN or set WORKNODE_TOKEN (the daemon's user mints one with `wn token mint`)".to_string(),
        ),
        Denied::Lacks(r) => ("token_lacks_right", format!("ask for a token whose --rights include {}", r.name())),
        Denied::OutsideSubtree(_) => {
            ("outside_subtree", "act on nodes under the token's subtree (`wn token ls` shows it), or ask for a wider token".into())
        }
        Denied::CannotRead => ("token_lacks_right", "ask for a token whose --rights include read".into()),
        Denied::OtherAgent => {
            ("token_agent_mismatch", "drop --agent (or WORKNODE_AGENT): with a token, wn acts as the token's agent".into())
        }
        Denied::Expired => ("token_expired", "ask for a new token (`wn token mint`)".into()),
        Denied::Revoked => ("token_revoked", "ask for a new token (`wn token mint`)".into()),
        Denied::NotOpen => (
            "broker_closed",
            "the daemon serves other users only when started with `worknoded --broker`".into(),
        ),
        Denied::AlreadyGranted => ("token_already_given", "a handle acts under one token: attach again for another".into()),
        Denied::SystemNode => (
            "system_node",
            "agents' records change through `wn join` / `wn leave` (and sessions), reservations through `wn reserve` / `wn unreserve`: not by editing /agents or /reservations".into(),
        ),
        Denied::BuiltInEvent => (
            "builtin_event",
            "emit an application event: a kind of 1000 or more, or your own name (`wn emit build_done`)".into(),
        ),
        Denied::NotThisKind => (
            "not_this_kind",
            "add pending or ready nodes; put documents with `wn doc put`; agents join with `wn join`".into(),
        ),
    };
    Fail::lib(code, exit::PERMISSION, &d, hint)
}

/// The broker link failed.
fn broker_fault(f: BrokerFault) -> Fail {
    let (code, exit, hint) = match f {
        // Not exit 8: that promises nothing changed, and here the change may have landed.
        BrokerFault::Disconnected => (
            "broker_disconnected",
            exit::OTHER,
            "the daemon stopped or closed the connection: check whether the change landed (`wn show`), then retry",
        ),
        BrokerFault::Protocol | BrokerFault::BadRequest => {
            ("broker_protocol", exit::OTHER, "use wn and worknoded of the same version")
        }
        BrokerFault::TooLarge { .. } => ("too_large", exit::USAGE, "send less at once (a smaller document)"),
        BrokerFault::Unsupported => (
            "not_brokered",
            exit::PERMISSION,
            "this verb needs direct access to the segment: run it as the daemon's user",
        ),
    };
    Fail::lib(code, exit, &f, hint)
}

/// Attaching through the broker (or verifying a token) failed.
fn broker_error(e: &BrokerError) -> Fail {
    let f = match e {
        BrokerError::NoBroker { segment } => Fail::new(
            "broker_not_found",
            exit::NOT_FOUND,
            e.to_string(),
            format!("is the daemon running? start it with `worknoded --segment {segment}` (add --broker for agents of other users)"),
        ),
        BrokerError::Impostor { .. } => Fail::new(
            "broker_untrusted",
            exit::PERMISSION,
            e.to_string(),
            "another user holds the broker's socket name: stop that process, then restart worknoded",
        ),
        BrokerError::Refused(Refusal::Denied(d)) => denied(*d),
        BrokerError::Refused(Refusal::Token(t)) => {
            let code = match t {
                worknode::TokenError::Expired => "token_expired",
                worknode::TokenError::Revoked => "token_revoked",
                _ => "token_invalid",
            };
            Fail::new(code, exit::PERMISSION, e.to_string(), "ask for a new token (`wn token mint`), and pass it whole")
        }
        BrokerError::Refused(Refusal::NoKey) => Fail::new(
            "token_invalid",
            exit::PERMISSION,
            e.to_string(),
            "this daemon has minted no token: mint one as its user (`wn token mint`)",
        ),
        BrokerError::Refused(Refusal::Agent(a)) => Fail::from(*a),
        BrokerError::Refused(Refusal::Busy) => {
            Fail::new("broker_busy", exit::TIMEOUT, e.to_string(), "retry later, or restart the daemon with a larger --agents")
        }
        BrokerError::Refused(Refusal::Closing) => Fail::new("segment_closing", exit::OTHER, e.to_string(), CLOSING_HINT),
        BrokerError::Refused(Refusal::Unavailable) => Fail::new(
            "token_store_unreadable",
            exit::OTHER,
            e.to_string(),
            "the daemon's log says which token file it could not read: fix it in the data directory",
        ),
        BrokerError::Refused(Refusal::Protocol) | BrokerError::NoDescriptor => {
            Fail::new("broker_protocol", exit::OTHER, e.to_string(), "use wn and worknoded of the same version")
        }
        BrokerError::Link(f) => broker_fault(*f),
    };
    f
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
        let (code, exit, hint): (_, _, String) = match &e {
            NotFound { name } => (
                "segment_not_found",
                exit::NOT_FOUND,
                format!(
                    "is the daemon running? start it with `worknoded --segment {name}`, or pass --segment / set WORKNODE_SEGMENT"
                ),
            ),
            PermissionDenied { writable, .. } => (
                "permission_denied",
                exit::PERMISSION,
                format!(
                    "it belongs to another user or its mode forbids this: run as the daemon's user{}; another user takes part with a token (`--token`) through the daemon's broker (`worknoded --broker`)",
                    if *writable { " or attach read-only (an inspector verb such as `wn ls`)" } else { "" }
                ),
            ),
            InvalidName { .. } => {
                ("invalid_segment_name", exit::USAGE, "use 1-200 letters, digits, '.', '_' or '-'".into())
            }
            AlreadyExists { name } => (
                "segment_exists",
                exit::CONFLICT,
                format!(
                    "another daemon may own it: stop it, remove /dev/shm/{name} if it is stale, or choose another --segment"
                ),
            ),
            NoSpace { .. } => (
                "no_space",
                exit::FULL,
                "free space in /dev/shm or ask for smaller capacities (worknoded --nodes, --events, --blob-chunks)".into(),
            ),
            Capacity(_) => ("bad_capacity", exit::USAGE, "see `worknoded --help` for each capacity's range".into()),
            NotWorknode { .. } => (
                "not_a_worknode_segment",
                exit::OTHER,
                "another program owns that name: choose another --segment".into(),
            ),
            VersionMismatch { .. } => (
                "layout_version_mismatch",
                exit::OTHER,
                "use tools of the daemon's version, or stop the daemon and recreate the segment".into(),
            ),
            SizeMismatch { .. } => (
                "segment_damaged",
                exit::OTHER,
                "it is truncated or damaged: stop the daemon and recreate it".into(),
            ),
            LayoutMismatch { .. } => ("segment_damaged", exit::OTHER, RECREATE_HINT.into()),
            NotReady => ("segment_not_ready", exit::TIMEOUT, "retry in a moment".into()),
            Closing => ("segment_closing", exit::OTHER, CLOSING_HINT.into()),
            Incomplete => (
                "segment_incomplete",
                exit::OTHER,
                "start worknoded again: it removes the half-initialised segment and creates it anew".into(),
            ),
            ForeignOwner { name, .. } => (
                "segment_untrusted",
                exit::PERMISSION,
                format!("refusing it: run as its owner, or remove /dev/shm/{name} if someone else planted it"),
            ),
            UnsafeMode { name, .. } => (
                "segment_untrusted",
                exit::PERMISSION,
                format!(
                    "other users may read or write it, so it is refused: remove /dev/shm/{name} and let the daemon create it again"
                ),
            ),
            NotAFile { .. } => (
                "segment_untrusted",
                exit::PERMISSION,
                "someone put a FIFO, directory or device there: remove it, or choose another --segment".into(),
            ),
            DaemonRunning { .. } => ("daemon_running", exit::CONFLICT, "stop it first".into()),
            Broker(b) => return broker_error(b),
            Os { errno, .. }
                if std::io::Error::from_raw_os_error(*errno as i32).kind() == std::io::ErrorKind::PermissionDenied =>
            {
                ("permission_denied", exit::PERMISSION, "run as the daemon's user".into())
            }
            Os { .. } => ("os_error", exit::OTHER, String::new()),
        };
        Fail::lib(code, exit, &e, hint)
    }
}

impl From<PoolError> for Fail {
    fn from(e: PoolError) -> Self {
        use PoolError::*;
        let (code, exit, hint): (_, _, String) = match e {
            Denied(d) => return denied(d),
            Broker(f) => return broker_fault(f),
            PoolFull { .. } => {
                ("pool_full", exit::FULL, "delete nodes or restart the daemon with a larger --nodes".into())
            }
            NameHasControl { .. } => ("invalid_name", exit::USAGE, CONTROL_HINT.into()),
            NameEmpty => ("invalid_name", exit::USAGE, "give the node a name".into()),
            // Only replication writes (worknode-bridge) make these.
            UuidInUse => ("conflict", exit::CONFLICT, "a node with that UUID already exists here".into()),
            InvalidOrigin => ("usage", exit::USAGE, "an origin host id is never 0".into()),
            NameTaken { .. } => (
                "name_taken",
                exit::CONFLICT,
                "names under one parent are unique: choose another, or `wn add --if-absent` to reuse the node".into(),
            ),
            NameHasSlash { .. } => {
                ("invalid_name", exit::USAGE, "'/' separates path elements: use another character, such as '-'".into())
            }
            ValueOutOfRange => (
                "invalid_value",
                exit::USAGE,
                "give a finite decimal number (not NaN or inf), e.g. --value 1500".into(),
            ),
            NameTooLong { .. } => ("invalid_value", exit::USAGE, "shorten it".into()),
            DescriptionTooLong { .. } => {
                ("invalid_value", exit::USAGE, "store longer text as a document (`wn doc put`)".into())
            }
            ProgressOutOfRange { .. } => ("invalid_value", exit::USAGE, "give a progress from 0 to 100".into()),
            NotFound => ("not_found", exit::NOT_FOUND, "check the id (list nodes with `wn tree`)".into()),
            StaleHandle => {
                ("not_found", exit::NOT_FOUND, "look it up again by UUID (list nodes with `wn tree`)".into())
            }
            HasChildren { .. } => ("has_children", exit::CONFLICT, "delete them first or delete recursively".into()),
            RootImmutable => (
                "root_immutable",
                exit::CONFLICT,
                "remove what is under it instead (`wn rm --recursive /PROJECT`)".into(),
            ),
            ReadOnly => ("read_only", exit::PERMISSION, "attach read-write to change it".into()),
            Busy { holder_pid } => ("busy", exit::TIMEOUT, format!("retry, or check process {holder_pid}")),
            Contended => ("busy", exit::TIMEOUT, "retry".into()),
            IllegalTransition { from, .. } => ("illegal_transition", exit::CONFLICT, transition_hint(from)),
            EventNotAppended { error, node } => {
                // The hint is the append's: why the event is missing, and what to check.
                let hint = Fail::from(error).hint;
                return Fail { changed: Some(node), ..Fail::lib("not_durable", exit::TIMEOUT, &e, hint) };
            }
            Corrupt { .. } => ("corrupt", exit::OTHER, CORRUPT_HINT.into()),
            Closing => ("segment_closing", exit::OTHER, CLOSING_HINT.into()),
            DaemonGone => return daemon_gone("no change was made"),
        };
        Fail::lib(code, exit, &e, hint)
    }
}

impl From<AgentError> for Fail {
    fn from(e: AgentError) -> Self {
        use AgentError::*;
        let (code, exit, hint): (_, _, String) = match e {
            Pool(p) => return p.into(),
            TableFull { .. } => (
                "agent_table_full",
                exit::FULL,
                "have idle agents leave (`wn leave`), or restart the daemon with a larger --agents".into(),
            ),
            BadName { .. } => {
                ("invalid_value", exit::USAGE, format!("use 1 to {} bytes", worknode::layout::AGENT_NAME_MAX))
            }
            RoleTooLong { .. } => ("invalid_value", exit::USAGE, "shorten it".into()),
            ControlCharacter { .. } => ("invalid_name", exit::USAGE, CONTROL_HINT.into()),
            NameHasSlash { .. } => {
                ("invalid_name", exit::USAGE, "'/' separates path elements: use another character, such as '-'".into())
            }
            NameStartsWithAt => {
                ("invalid_name", exit::USAGE, "'@name' addresses a role; drop the '@' from the agent's name".into())
            }
            NotFound => ("agent_not_found", exit::NOT_FOUND, "list agents with `wn agents`".into()),
            SessionTaken { .. } => {
                ("session_taken", exit::CONFLICT, "use another name (--agent) or stop that process".into())
            }
            Busy => ("busy", exit::TIMEOUT, "retry".into()),
        };
        Fail::lib(code, exit, &e, hint)
    }
}

impl From<TaskError> for Fail {
    fn from(e: TaskError) -> Self {
        use TaskError::*;
        let (code, exit, hint): (_, _, String) = match e {
            Pool(p) => return p.into(),
            AlreadyClaimed { .. } => ("already_claimed", exit::CONFLICT, "pick another task or wait".into()),
            IllegalTransition { from, .. } => ("illegal_transition", exit::CONFLICT, transition_hint(from)),
            StaleEpoch { .. } => (
                "stale_epoch",
                exit::CONFLICT,
                "another agent claimed it after your lease lapsed: drop this work".into(),
            ),
            LeaseExpired { .. } => (
                "lease_expired",
                exit::CONFLICT,
                "claim the task again (`wn renew` before the lease ends)".into(),
            ),
            NotClaimant => ("not_claimant", exit::CONFLICT, "claim it first (`wn claim`)".into()),
            HeldElsewhere => (
                "held_elsewhere",
                exit::CONFLICT,
                "an agent on another host holds it: pick another task (`wn claim --next` skips it)".into(),
            ),
            Offline => (
                "offline",
                exit::CONFLICT,
                "the task is shared with other hosts and this host's bridge is down or cut off from NATS (`wn doctor` says which): start it, or claim a task local to this host".into(),
            ),
            Blocked { .. } => (
                "blocked",
                exit::CONFLICT,
                "finish them first (`wn ready` lists claimable tasks)".into(),
            ),
            Cycle => ("cycle", exit::CONFLICT, String::new()),
            NothingReady => (
                "nothing_ready",
                exit::NOT_FOUND,
                "wait for one (`wn wait --kind task_ready`)".into(),
            ),
            TooManyBlockers => ("too_many_blockers", exit::FULL, String::new()),
            TooManyAssignees => ("too_many_assignees", exit::FULL, "assign a role (`@role`) instead of many agents".into()),
            AssignedElsewhere { .. } => (
                "assigned_elsewhere",
                exit::CONFLICT,
                "claim work assigned to you or open to all (`wn claim --next`), or have it reassigned".into(),
            ),
            WaitTimedOut => (
                "timeout",
                exit::TIMEOUT,
                "no task you may take became ready; wait longer (--wait), or look at `wn ready`".into(),
            ),
            UnknownAgent => ("agent_not_found", exit::NOT_FOUND, "join first (`wn join`)".into()),
            NotATask { .. } => (
                "not_a_task",
                exit::USAGE,
                "claim a task (or a custom node): `wn ready` lists the claimable ones, `wn claim --next` takes the best"
                    .into(),
            ),
            NoteTooLong { max, .. } => (
                "note_too_long",
                exit::USAGE,
                format!(
                    "keep it to {max} bytes (a quote or backslash counts 2); put longer text in a document (`wn doc put`) and name it in the note"
                ),
            ),
            LeaseOutOfRange { .. } => {
                ("invalid_value", exit::USAGE, "give a lease from 1ms to 30d, e.g. --lease 10m".into())
            }
        };
        Fail::lib(code, exit, &e, hint)
    }
}

impl From<DocError> for Fail {
    fn from(e: DocError) -> Self {
        use DocError::*;
        let (code, exit, hint): (_, _, String) = match e {
            Pool(p) => return p.into(),
            TooLarge { .. } => (
                "document_too_large",
                exit::FULL,
                "split it into several documents, or restart the daemon with a larger --blob-chunks".into(),
            ),
            ArenaFull { .. } => (
                "blob_arena_full",
                exit::FULL,
                "delete or replace documents no longer needed, or restart the daemon with a larger --blob-chunks"
                    .into(),
            ),
            ContentTypeTooLong { .. } => ("invalid_value", exit::USAGE, "use a shorter media type".into()),
            NotADocument => (
                "not_a_document",
                exit::USAGE,
                "name a node of kind document (`wn doc ls NODE` lists them, `wn doc put` makes one)".into(),
            ),
            Changed => ("document_changed", exit::TIMEOUT, "retry".into()),
            Claim(t) => return t.into(),
            NotUnderTask => (
                "not_under_task",
                exit::USAGE,
                "a claim renews its lease only through documents directly under its task".into(),
            ),
            ChecksumMismatch { .. } => (
                "checksum_mismatch",
                exit::OTHER,
                "the segment may be damaged: replace the document, or run `wn doctor`".into(),
            ),
        };
        Fail::lib(code, exit, &e, hint)
    }
}

impl From<SetError> for Fail {
    fn from(e: SetError) -> Self {
        use SetError::*;
        let (code, exit, hint): (_, _, String) = match e {
            Pool(p) => return p.into(),
            SetFull { .. } => (
                "set_full",
                exit::FULL,
                "remove elements and compact the set (`set_compact`, once every replica has merged the removals)"
                    .into(),
            ),
            NoSetSlots { .. } => (
                "no_set_slots",
                exit::FULL,
                "delete nodes that carry sets, or restart the daemon with a larger --sets".into(),
            ),
            Corrupt => ("corrupt", exit::OTHER, CORRUPT_HINT.into()),
        };
        Fail::lib(code, exit, &e, hint)
    }
}

impl From<MailError> for Fail {
    fn from(e: MailError) -> Self {
        use MailError::*;
        let (code, exit, hint): (_, _, &str) = match e {
            Pool(p) => return p.into(),
            Doc(d) => return d.into(),
            Agent(a) => return a.into(),
            Ring(r) => return r.into(),
            TooLarge { .. } => (
                "message_too_large",
                exit::USAGE,
                "send a shorter message, or store it as a document (`wn doc put`) and send its path",
            ),
            ThreadTooLong { .. } | ThreadHasControl { .. } => {
                ("invalid_value", exit::USAGE, "use a thread id of at most 64 bytes without control characters")
            }
            MailFull { .. } => (
                "mail_full",
                exit::FULL,
                "mail takes at most a quarter of the node pool: recipients must acknowledge their mail (`wn inbox --ack-all`), or restart the daemon with more --nodes",
            ),
            MailboxFull { .. } => (
                "mailbox_full",
                exit::FULL,
                "the recipient must acknowledge its mail (`wn inbox --ack-all`): acknowledged mail makes room",
            ),
            NotFound => ("message_not_found", exit::NOT_FOUND, "list your mail and its ids with `wn inbox --all`"),
            NotAMessage => ("not_a_message", exit::USAGE, "name a message by the id `wn inbox` shows"),
            AlreadyAcked => ("already_acked", exit::CONFLICT, "nothing to do; `wn inbox --all` shows acknowledged mail"),
            NotYours => (
                "not_yours",
                exit::CONFLICT,
                "only its recipient (or an agent of the recipient role) acknowledges a message; see yours with `wn inbox`",
            ),
            Timeout => ("timeout", exit::TIMEOUT, "wait longer with --wait, or check who mails you"),
            Damaged { .. } => ("corrupt", exit::OTHER, CORRUPT_HINT),
        };
        Fail::lib(code, exit, &e, hint)
    }
}

/// The advice for a malformed glob or path.
fn glob_hint(e: worknode::GlobError) -> String {
    use worknode::GlobError::*;
    match e {
        Empty => "give a glob such as src/auth/** or src/*.rs".into(),
        TooLong { max, .. } => format!("keep a glob to {max} bytes: reserve a parent directory (dir/**) instead"),
        Absolute => "globs and paths are relative to the repository root: drop the leading /".into(),
        DotDot => "name paths inside the repository, without `..`".into(),
        EmptySegment => "drop the doubled or trailing /; a directory and everything in it is dir/**".into(),
        Control { .. } => "remove the control character (a newline, tab or escape)".into(),
        UnclosedClass { .. } => "close the class with ] (e.g. [abc]), or drop the [".into(),
        BadClass { .. } => "write ranges low-high (a-z), at most 8 per class".into(),
        SlashInClass { .. } => "a class matches one character of a name; it cannot hold /".into(),
        PartialGlobstar { .. } => "** stands for whole directories: write dir/**/*.rs, or * within a name".into(),
    }
}

/// Reservations: a conflict or a held path is exit 3, bad input 2, not found 4.
impl From<ReserveError> for Fail {
    fn from(e: ReserveError) -> Self {
        use ReserveError::*;
        let (code, exit, hint): (_, _, String) = match &e {
            Pool(p) => return (*p).into(),
            Claim(t) => return (*t).into(),
            Conflict { holder, .. } => (
                "reservation_conflict",
                exit::CONFLICT,
                format!(
                    "wait until {holder} withdraws it or its lease ends (`wn reservations`), or coordinate with {holder}; shared reservations (--shared) coexist"
                ),
            ),
            Held { holder, .. } => (
                "reserved_path",
                exit::CONFLICT,
                format!("{holder} is editing it: coordinate with them, or wait (`wn reservations` shows the lease)"),
            ),
            BadGlob { error, .. } => ("invalid_glob", exit::USAGE, glob_hint(*error)),
            BadPath { error, .. } => ("invalid_path", exit::USAGE, glob_hint(*error)),
            NoGlobs => ("usage", exit::USAGE, "name at least one glob".into()),
            GlobsTooLong { .. } => (
                "too_large",
                exit::USAGE,
                "split them over several `wn reserve` calls, or reserve a parent directory (dir/**)".into(),
            ),
            ReasonTooLong { max, .. } => ("note_too_long", exit::USAGE, format!("keep the reason to {max} bytes")),
            ReasonHasControl { .. } => {
                ("invalid_value", exit::USAGE, "remove the control character from the reason".into())
            }
            LeaseOutOfRange { .. } => {
                ("invalid_value", exit::USAGE, "give a lease from 1ms to 30d, e.g. --lease 10m".into())
            }
            StaleEpoch { .. } => (
                "stale_epoch",
                exit::CONFLICT,
                "the reservation was made again since (its lease had lapsed): `wn reservations` shows the current epoch"
                    .into(),
            ),
            Lapsed => ("lease_expired", exit::CONFLICT, "reserve again (`wn reserve GLOB…`)".into()),
            NotHolder => ("not_holder", exit::CONFLICT, "only its agent withdraws or renews it".into()),
            NotFound => (
                "reservation_not_found",
                exit::NOT_FOUND,
                "list reservations with `wn reservations`; name globs exactly as reserved".into(),
            ),
            UnknownAgent => ("agent_not_found", exit::NOT_FOUND, "join first (`wn join`)".into()),
            Contended => ("busy", exit::TIMEOUT, "retry".into()),
        };
        Fail::new(code, exit, e.to_string(), hint)
    }
}

impl From<LabelError> for Fail {
    fn from(e: LabelError) -> Self {
        use LabelError::*;
        const RULE: &str = "a label is 1 to 64 bytes without '/', white space or control characters, not starting with '@' (e.g. backend, prio:high)";
        let (code, exit, hint): (_, _, String) = match e {
            Pool(p) => return p.into(),
            Set(s) => return s.into(),
            Empty | TooLong { .. } | HasSlash { .. } | HasControl { .. } | HasWhitespace { .. } | LeadingAt => {
                ("invalid_label", exit::USAGE, RULE.into())
            }
            RegistryTaken => (
                "label_registry_taken",
                exit::CONFLICT,
                "labels are registered under /labels: rename the node that holds that name (`wn edit /labels --name ...`)"
                    .into(),
            ),
            KeyCollision => ("label_collision", exit::CONFLICT, "choose another label".into()),
        };
        Fail::lib(code, exit, &e, hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use worknode::layout::CapacityError;
    use worknode::{Handle, Status};

    fn attach_errors() -> Vec<AttachError> {
        use AttachError::*;
        let name = "seg".to_string();
        vec![
            InvalidName { name: "a/b".into(), reason: "has a '/'" },
            NotFound { name: name.clone() },
            PermissionDenied { name: name.clone(), writable: true },
            PermissionDenied { name: name.clone(), writable: false },
            AlreadyExists { name: name.clone() },
            NoSpace { bytes: 4096 },
            Capacity(CapacityError { what: "events", value: 1000, rule: "must be a power of two" }),
            NotWorknode { name: name.clone(), found: 0x5a5a },
            VersionMismatch { found: 9, expected: 8 },
            SizeMismatch { actual: 10, expected: 20 },
            LayoutMismatch { what: "total" },
            NotReady,
            Closing,
            Incomplete,
            DaemonRunning { pid: 42 },
            ForeignOwner { name: name.clone(), owner: 65534, mode: 0o666, expected: 0 },
            NotAFile { name: name.clone() },
            UnsafeMode { name, owner: 0, mode: 0o666 },
            Os { op: "mmap", errno: nix::errno::Errno::ENOMEM },
        ]
    }

    fn pool_errors() -> Vec<PoolError> {
        use PoolError::*;
        let node = Handle { index: 3, generation: 1 };
        vec![
            PoolFull { capacity: 16 },
            NameTooLong { len: 65, max: 64 },
            DescriptionTooLong { len: 257, max: 256 },
            NameHasControl { at: 2 },
            ValueOutOfRange,
            ProgressOutOfRange { value: 101 },
            NotFound,
            StaleHandle,
            HasChildren { count: 2 },
            RootImmutable,
            ReadOnly,
            Busy { holder_pid: 7 },
            Contended,
            Closing,
            DaemonGone,
            IllegalTransition { from: Status::Ready, to: Status::Complete },
            EventNotAppended { error: RingError::NotDurable { seq: 5, durable: 3 }, node },
            Corrupt { what: "a link outside the pool" },
        ]
    }

    fn ring_errors() -> Vec<RingError> {
        use RingError::*;
        vec![
            Lagged { missed: 3, resume_at: 10 },
            Timeout,
            PayloadTooLarge { len: 300, max: 200 },
            TopicTooLong { len: 40, max: 32 },
            ReadOnly,
            Closing,
            DaemonGone,
            Busy { holder_pid: 7 },
            Contended,
            JournalStalled { seq: 9, journaled: 1 },
            NotDurable { seq: 5, durable: 3 },
        ]
    }

    fn agent_errors() -> Vec<AgentError> {
        use AgentError::*;
        vec![
            TableFull { capacity: 4 },
            BadName { len: 65 },
            ControlCharacter { field: worknode::AgentField::Role, at: 1 },
            RoleTooLong { len: 99 },
            NotFound,
            SessionTaken { pid: 7 },
            Busy,
            Pool(PoolError::ReadOnly),
        ]
    }

    fn task_errors() -> Vec<TaskError> {
        use TaskError::*;
        vec![
            AlreadyClaimed { by: 1, until_ms: 0 },
            IllegalTransition { from: Status::Ready, to: Status::Complete },
            StaleEpoch { presented: 7, current: 8 },
            LeaseExpired { ago_ms: 10 },
            NotClaimant,
            Blocked { open: 2 },
            NothingReady,
            Cycle,
            TooManyBlockers,
            TooManyAssignees,
            UnknownAgent,
            NotATask { kind: Some(worknode::NodeKind::Folder) },
            NotATask { kind: None },
            NoteTooLong { len: 60, max: 48 },
            LeaseOutOfRange { ms: 0, max_ms: 10 },
            Pool(PoolError::NotFound),
        ]
    }

    fn doc_errors() -> Vec<DocError> {
        use DocError::*;
        vec![
            TooLarge { len: 10, max: 5 },
            ArenaFull { needed_chunks: 8, free_chunks: 4 },
            ContentTypeTooLong { len: 300, max: 64 },
            NotADocument,
            Changed,
            ChecksumMismatch { stored: 1, computed: 2 },
            Claim(TaskError::NotClaimant),
            NotUnderTask,
            Pool(PoolError::StaleHandle),
        ]
    }

    fn mail_errors() -> Vec<MailError> {
        use MailError::*;
        vec![
            TooLarge { len: 70000, max: 65536 },
            ThreadTooLong { len: 65, max: 64 },
            ThreadHasControl { at: 1 },
            MailboxFull { capacity: 8 },
            MailFull { capacity: 64 },
            NotFound,
            NotAMessage,
            AlreadyAcked,
            NotYours,
            Timeout,
            Damaged { what: "no from= line" },
            Pool(PoolError::ReadOnly),
        ]
    }

    fn label_errors() -> Vec<LabelError> {
        use LabelError::*;
        vec![
            Empty,
            TooLong { len: 65, max: 64 },
            HasSlash { at: 1 },
            HasControl { at: 1 },
            HasWhitespace { at: 1 },
            LeadingAt,
            RegistryTaken,
            KeyCollision,
            Set(SetError::SetFull { capacity: 32 }),
            Pool(PoolError::ReadOnly),
        ]
    }

    fn set_errors() -> Vec<SetError> {
        use SetError::*;
        vec![SetFull { capacity: 8 }, NoSetSlots { capacity: 2 }, Corrupt, Pool(PoolError::ReadOnly)]
    }

    fn reserve_errors() -> Vec<ReserveError> {
        use ReserveError::*;
        let glob = |error| BadGlob { glob: "g".into(), error };
        vec![
            Conflict { holder: "a".into(), theirs: "src/**".into(), yours: "src/a.rs".into() },
            Held { path: "src/a.rs".into(), holder: "a".into(), glob: "src/**".into() },
            glob(worknode::GlobError::Empty),
            glob(worknode::GlobError::TooLong { len: 201, max: 200 }),
            glob(worknode::GlobError::Absolute),
            glob(worknode::GlobError::DotDot),
            glob(worknode::GlobError::EmptySegment),
            glob(worknode::GlobError::Control { at: 1 }),
            glob(worknode::GlobError::UnclosedClass { at: 1 }),
            glob(worknode::GlobError::BadClass { at: 1 }),
            glob(worknode::GlobError::SlashInClass { at: 1 }),
            glob(worknode::GlobError::PartialGlobstar { at: 1 }),
            BadPath { path: "/x".into(), error: worknode::GlobError::Absolute },
            NoGlobs,
            GlobsTooLong { len: 300, max: 256 },
            ReasonTooLong { len: 49, max: 48 },
            ReasonHasControl { at: 0 },
            LeaseOutOfRange { ms: 0, max_ms: 1 },
            StaleEpoch { presented: 1, current: 2 },
            Lapsed,
            NotHolder,
            NotFound,
            UnknownAgent,
            Contended,
            Claim(TaskError::NotClaimant),
            Pool(PoolError::ReadOnly),
        ]
    }

    /// Every library error as `wn` reports it, beside the library's own message.
    fn all() -> Vec<(String, Fail)> {
        fn both<E: std::fmt::Display + Clone + Into<Fail>>(v: Vec<E>) -> Vec<(String, Fail)> {
            v.into_iter().map(|e| (e.to_string(), e.into())).collect()
        }
        let mut out = both(attach_errors());
        out.extend(both(pool_errors()));
        out.extend(both(ring_errors()));
        out.extend(both(agent_errors()));
        out.extend(both(task_errors()));
        out.extend(both(doc_errors()));
        out.extend(both(set_errors()));
        out.extend(both(reserve_errors()));
        out.extend(both(label_errors()));
        out.extend(both(mail_errors()));
        out
    }

    #[test]
    fn library_messages_say_only_what_happened() {
        for (text, _) in all() {
            assert!(!text.contains("; "), "advice in a library message: {text}");
            assert!(!text.contains('`'), "a command in a library message: {text}");
            assert!(!text.contains("--"), "a flag in a library message: {text}");
            assert!(!text.contains("retry"), "advice in a library message: {text}");
        }
    }

    /// The advice the library's messages used to give reaches `wn`'s hint.
    #[test]
    fn wn_gives_the_advice() {
        let cases: Vec<(Fail, &str, &str)> = vec![
            (PoolError::PoolFull { capacity: 16 }.into(), "pool_full", "larger --nodes"),
            (PoolError::ReadOnly.into(), "read_only", "attach read-write"),
            (PoolError::StaleHandle.into(), "not_found", "look it up again by UUID"),
            (PoolError::NotFound.into(), "not_found", "`wn tree`"),
            (PoolError::HasChildren { count: 1 }.into(), "has_children", "delete recursively"),
            (PoolError::Busy { holder_pid: 7 }.into(), "busy", "retry"),
            (PoolError::Corrupt { what: "x" }.into(), "corrupt", "wn doctor"),
            (PoolError::DescriptionTooLong { len: 300, max: 256 }.into(), "invalid_value", "as a document"),
            (PoolError::Closing.into(), "segment_closing", "restart the daemon"),
            (AttachError::NotReady.into(), "segment_not_ready", "retry"),
            (AttachError::Closing.into(), "segment_closing", "restart the daemon"),
            (AttachError::NoSpace { bytes: 1 }.into(), "no_space", "--blob-chunks"),
            (AttachError::AlreadyExists { name: "s".into() }.into(), "segment_exists", "remove /dev/shm/s"),
            (AttachError::NotAFile { name: "s".into() }.into(), "segment_untrusted", "FIFO, directory or device"),
            (
                AttachError::UnsafeMode { name: "s".into(), owner: 0, mode: 0o666 }.into(),
                "segment_untrusted",
                "remove /dev/shm/s",
            ),
            (RingError::Lagged { missed: 1, resume_at: 2 }.into(), "lagged", "larger --events"),
            (RingError::ReadOnly.into(), "read_only", "attach read-write"),
            (RingError::PayloadTooLarge { len: 300, max: 200 }.into(), "too_large", "document"),
            (RingError::JournalStalled { seq: 9, journaled: 1 }.into(), "journal_stalled", "`wn dump`"),
            (RingError::NotDurable { seq: 5, durable: 3 }.into(), "not_durable", "host restart"),
            (AgentError::TableFull { capacity: 4 }.into(), "agent_table_full", "larger --agents"),
            (AgentError::BadName { len: 65 }.into(), "invalid_value", "use 1 to 64 bytes"),
            (AgentError::NotFound.into(), "agent_not_found", "`wn agents`"),
            (AgentError::SessionTaken { pid: 7 }.into(), "session_taken", "stop that process"),
            (TaskError::AlreadyClaimed { by: 1, until_ms: 0 }.into(), "already_claimed", "pick another task"),
            (TaskError::StaleEpoch { presented: 1, current: 2 }.into(), "stale_epoch", "drop this work"),
            (TaskError::LeaseExpired { ago_ms: 1 }.into(), "lease_expired", "claim the task again"),
            (TaskError::NotClaimant.into(), "not_claimant", "claim it first"),
            (TaskError::Blocked { open: 1 }.into(), "blocked", "`wn ready`"),
            (TaskError::NothingReady.into(), "nothing_ready", "wn wait --kind task_ready"),
            (TaskError::UnknownAgent.into(), "agent_not_found", "join first"),
            (
                TaskError::IllegalTransition { from: Status::Ready, to: Status::Complete }.into(),
                "illegal_transition",
                "`wn claim`, `wn cancel`, `wn rm`",
            ),
            (DocError::TooLarge { len: 10, max: 5 }.into(), "document_too_large", "larger --blob-chunks"),
            (
                DocError::ArenaFull { needed_chunks: 8, free_chunks: 4 }.into(),
                "blob_arena_full",
                "larger --blob-chunks",
            ),
            (DocError::Changed.into(), "document_changed", "retry"),
            (DocError::NotADocument.into(), "not_a_document", "wn doc ls"),
            (DocError::ChecksumMismatch { stored: 1, computed: 2 }.into(), "checksum_mismatch", "wn doctor"),
            (SetError::SetFull { capacity: 8 }.into(), "set_full", "set_compact"),
            (SetError::NoSetSlots { capacity: 2 }.into(), "no_set_slots", "larger --sets"),
            (SetError::Corrupt.into(), "corrupt", "wn doctor"),
            (LabelError::HasWhitespace { at: 1 }.into(), "invalid_label", "e.g. backend"),
            (DocError::NotUnderTask.into(), "not_under_task", "directly under its task"),
            (MailError::MailboxFull { capacity: 8 }.into(), "mailbox_full", "--ack-all"),
            (MailError::AlreadyAcked.into(), "already_acked", "wn inbox --all"),
            (MailError::NotYours.into(), "not_yours", "wn inbox"),
            (MailError::TooLarge { len: 2, max: 1 }.into(), "message_too_large", "wn doc put"),
        ];
        for (f, code, advice) in cases {
            assert_eq!(f.code, code, "{f:?}");
            assert!(f.hint.contains(advice), "{code}: hint lacks {advice:?}: {f:?}");
            assert!(!f.message.contains(advice) || advice == "document", "{code}: advice in the message: {f:?}");
        }
    }

    /// A change made whose event is missing: the message keeps the node and why; the hint
    /// is the append's.
    #[test]
    fn an_event_not_appended_keeps_the_node_and_the_appends_advice() {
        let node = Handle { index: 3, generation: 1 };
        let f: Fail = PoolError::EventNotAppended { error: RingError::NotDurable { seq: 5, durable: 3 }, node }.into();
        assert_eq!((f.code, f.exit, f.changed), ("not_durable", exit::TIMEOUT, Some(node)));
        assert!(f.message.contains(&format!("node {node} ")) && f.message.contains("event 5"), "{f:?}");
        assert!(f.hint.contains("host restart"), "{f:?}");
    }

    /// Wrappers report like what they wrap.
    #[test]
    fn wrapped_pool_errors_report_as_pool_errors() {
        let direct = Fail::from(PoolError::ReadOnly);
        for f in [
            Fail::from(AgentError::Pool(PoolError::ReadOnly)),
            Fail::from(TaskError::Pool(PoolError::ReadOnly)),
            Fail::from(DocError::Pool(PoolError::ReadOnly)),
            Fail::from(SetError::Pool(PoolError::ReadOnly)),
            Fail::from(LabelError::Pool(PoolError::ReadOnly)),
        ] {
            assert_eq!(
                (f.code, f.exit, &f.message, &f.hint),
                (direct.code, direct.exit, &direct.message, &direct.hint)
            );
        }
    }
}
