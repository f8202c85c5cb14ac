//! The wire form of a [`ReplicaState`]: one version byte, then the state in `postcard`.
//!
//! Everything read off the network is bounded and checked before it reaches a segment:
//! the message's length, the version, the kind and status codes, the name and
//! description (the limits and characters the local pool enforces), progress, value, and
//! how many set pairs it carries. A failure is a [`WireError`] naming what was wrong;
//! nothing is truncated or guessed.

use crate::replica::ReplicaState;
use std::fmt;
use worknode::layout::{DESCRIPTION_MAX, SET_ENTRIES};
use worknode::{NodeKind, Status};

/// The wire format's version, the first byte of every message.
pub const WIRE_VERSION: u8 = 1;

/// The longest message, in bytes: NATS's default `max_payload` (1 MiB).
pub const MESSAGE_MAX: usize = 1 << 20;

/// The longest document a message carries: what fits in [`MESSAGE_MAX`] beside the
/// rest of a state (a segment refuses more than its arena holds, at apply).
pub const DOCUMENT_MAX: usize = MESSAGE_MAX - (64 << 10);

/// Why a message was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireError {
    /// The message is longer than [`MESSAGE_MAX`] (or encodes to more).
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The message is empty.
    Empty,
    /// The first byte is not a version this build reads.
    Version {
        /// The byte found.
        found: u8,
    },
    /// The bytes after the version are not a state (or have bytes left over).
    Malformed {
        /// The decoder's account.
        detail: String,
    },
    /// A field is outside what a segment accepts.
    Invalid {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        detail: String,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::TooLong { len } => write!(f, "message of {len} bytes, over the {MESSAGE_MAX}-byte limit"),
            WireError::Empty => f.write_str("empty message"),
            WireError::Version { found } => write!(f, "wire version {found}, this build reads {WIRE_VERSION}"),
            WireError::Malformed { detail } => write!(f, "malformed state: {detail}"),
            WireError::Invalid { field, detail } => write!(f, "invalid {field}: {detail}"),
        }
    }
}

impl std::error::Error for WireError {}

fn invalid(field: &'static str, detail: impl Into<String>) -> WireError {
    WireError::Invalid { field, detail: detail.into() }
}

/// Encodes a state, checking it as [`decode`] would.
///
/// # Errors
///
/// [`WireError::Invalid`] for a field a segment would refuse, [`WireError::TooLong`]
/// when the encoding exceeds [`MESSAGE_MAX`].
pub fn encode(state: &ReplicaState) -> Result<Vec<u8>, WireError> {
    check(state)?;
    let mut out = vec![WIRE_VERSION];
    let body = postcard::to_stdvec(state).map_err(|e| WireError::Malformed { detail: e.to_string() })?;
    out.extend_from_slice(&body);
    if out.len() > MESSAGE_MAX {
        return Err(WireError::TooLong { len: out.len() });
    }
    Ok(out)
}

/// Decodes and checks a message.
///
/// # Errors
///
/// [`WireError::TooLong`], [`WireError::Empty`], [`WireError::Version`],
/// [`WireError::Malformed`] (including trailing bytes), [`WireError::Invalid`].
pub fn decode(bytes: &[u8]) -> Result<ReplicaState, WireError> {
    if bytes.len() > MESSAGE_MAX {
        return Err(WireError::TooLong { len: bytes.len() });
    }
    let (&version, body) = bytes.split_first().ok_or(WireError::Empty)?;
    if version != WIRE_VERSION {
        return Err(WireError::Version { found: version });
    }
    let (state, rest): (ReplicaState, &[u8]) =
        postcard::take_from_bytes(body).map_err(|e| WireError::Malformed { detail: e.to_string() })?;
    if !rest.is_empty() {
        return Err(WireError::Malformed { detail: format!("{} bytes after the state", rest.len()) });
    }
    check(&state)?;
    Ok(state)
}

/// How far ahead of this host's wall clock a stamp may be: further would drag every
/// later local stamp along (the clock observes it), so such a host's clock is wrong.
pub const STAMP_AHEAD_MAX_MS: u64 = 3_600_000;

/// What a segment would refuse, refused here first.
fn check(state: &ReplicaState) -> Result<(), WireError> {
    let stamps = std::iter::once(state.record.stamp).chain(state.document.as_ref().map(|d| d.stamp));
    let now = worknode::unix_ms();
    for stamp in stamps {
        if stamp.host.0 == 0 {
            return Err(invalid("stamp", "host id 0 names no host"));
        }
        let ahead = worknode::Hlc(stamp.hlc).wall_ms().saturating_sub(now);
        if ahead > STAMP_AHEAD_MAX_MS {
            return Err(invalid(
                "stamp",
                format!("{ahead} ms ahead of this host's clock: is the sender's clock right?"),
            ));
        }
    }
    let f = &state.record.value;
    let kind = NodeKind::from_code(f.kind).ok_or_else(|| invalid("kind", format!("unknown code {}", f.kind)))?;
    // An agent's record and a file reservation belong to their host: its processes,
    // its files. They are never replicated.
    if matches!(kind, NodeKind::Agent | NodeKind::Reservation) {
        return Err(invalid("kind", format!("{} nodes are not replicated", kind.as_str())));
    }
    Status::from_code(f.status).ok_or_else(|| invalid("status", format!("unknown code {}", f.status)))?;
    if f.progress > 100 {
        return Err(invalid("progress", format!("{} is over 100", f.progress)));
    }
    worknode::check_value(f64::from_bits(f.value_bits)).map_err(|e| invalid("value", e.to_string()))?;
    worknode::check_node_name(&f.name).map_err(|e| invalid("name", e.to_string()))?;
    if f.description.len() > DESCRIPTION_MAX {
        return Err(invalid("description", format!("{} bytes, over {DESCRIPTION_MAX}", f.description.len())));
    }
    if f.custom_kind != 0 && kind != NodeKind::Custom {
        return Err(invalid("custom_kind", format!("{} on a {} node", f.custom_kind, kind.as_str())));
    }
    if let Some(doc) = &state.document {
        if kind != NodeKind::Document {
            return Err(invalid("document", format!("content on a {} node", kind.as_str())));
        }
        if doc.value.len() > DOCUMENT_MAX {
            return Err(invalid("document", format!("{} bytes, over {DOCUMENT_MAX}", doc.value.len())));
        }
    }
    if state.labels.len() > SET_ENTRIES {
        return Err(invalid("labels", format!("{} names, a set holds {SET_ENTRIES}", state.labels.len())));
    }
    if let Some(bad) = state.labels.iter().find_map(|l| worknode::check_label(l).err().map(|e| (l, e))) {
        return Err(invalid("labels", format!("{:?}: {}", bad.0, bad.1)));
    }
    if f.parent == Some(state.uuid) {
        return Err(invalid("parent", "a node cannot be its own parent"));
    }
    // Every pair, live or removed, takes an entry of the node's set slot.
    let pairs = state.set.adds().count();
    if pairs > SET_ENTRIES {
        return Err(invalid("set", format!("{pairs} pairs, a set holds {SET_ENTRIES}")));
    }
    // Removed pairs are a subset of the added ones: more of them is a stray for sure,
    // and refusing that first keeps the search below to at most SET_ENTRIES² steps.
    let removed = state.set.tombstones().count();
    if removed > pairs {
        return Err(invalid("set", format!("{removed} removed pairs but only {pairs} added")));
    }
    if let Some(stray) = state.set.tombstones().find(|&(e, t)| !state.set.adds().any(|p| p == (e, t))) {
        return Err(invalid("set", format!("removed pair {stray:?} was never added")));
    }
    Ok(())
}
