//! Principals: whom work and mail are addressed to — one agent by name (`writer`), or
//! every agent of a role (`@tester`) — and the durable registry of their names.
//!
//! # Keys, not slots
//!
//! A task's assignees and a message's recipient are kept as [`PrincipalKey`]s: the
//! 64-bit FNV-1a hash of the principal's text (`writer`, `@tester`). A key is by name,
//! not by agent slot, so an assignment holds for an agent that has not joined yet, and
//! for one whose process died (its slot freed) and that joins again under its name; a
//! slot reused by another agent never inherits it. Keys of distinct names collide with
//! probability about 2⁻⁶⁴ per pair.
//!
//! # The registry: `/mail/<principal>`
//!
//! A key alone cannot be shown to a person, so every principal that anything is
//! addressed to is registered by name: a node `/mail/<principal>` (kind
//! [`NodeKind::Mailbox`]) under the system container `/mail`, which is also where its
//! messages live. Registering is idempotent and race-safe (sibling names are unique:
//! the loser of a race takes the winner's node), journaled like every node, and kept
//! across a host restart. Assigning work to, or mailing, an agent that has not joined
//! registers its name: that is how the name is *reserved* for it. Finding a key's name
//! walks `/mail`'s children comparing one hash word per child.

use crate::agents::AgentId;
use crate::error::PoolError;
use crate::layout::{AGENT_NAME_MAX, AGENT_ROLE_MAX};
use crate::node::{Handle, NewNode, NodeKind};
use crate::segment::Segment;

/// Name of the system container of mailboxes, under the root.
pub const MAIL_CONTAINER: &str = "mail";

/// The 64-bit key of a [`Principal`]: FNV-1a of its text, never 0 (0 marks an unused
/// assignee entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct PrincipalKey(u64);

impl PrincipalKey {
    /// The key as stored in a record.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// A key read from a record; `None` for 0 (no entry).
    pub const fn from_raw(raw: u64) -> Option<PrincipalKey> {
        if raw == 0 {
            None
        } else {
            Some(PrincipalKey(raw))
        }
    }

    /// The key of the text `prefix` + `body`, hashed without building it (claims ask
    /// for their agent's keys on every call). Equal to the pool's name hash of the
    /// mailbox node, so the registry is found by the slots' hash words.
    fn of_parts(prefix: &str, body: &str) -> PrincipalKey {
        PrincipalKey(crate::sys::fnv1a_parts(&[prefix.as_bytes(), body.as_bytes()]).max(1))
    }
}

/// Whom something is addressed to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Principal {
    /// One agent, by name (joined or not).
    Agent(String),
    /// Every agent of this role (written `@role`).
    Role(String),
}

/// Why a principal's text was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PrincipalError {
    /// The name (or the role after `@`) is empty.
    Empty,
    /// Longer than an agent name (64 bytes) or a role (32 bytes) may be.
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The most allowed.
        max: usize,
    },
    /// A `/` (names are path elements) at this byte.
    HasSlash {
        /// Byte offset.
        at: usize,
    },
    /// A control character at this byte.
    BadCharacter {
        /// Byte offset.
        at: usize,
    },
}

impl std::fmt::Display for PrincipalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrincipalError::Empty => write!(f, "empty agent name or role"),
            PrincipalError::TooLong { len, max } => write!(f, "{len} bytes, over the {max}-byte limit"),
            PrincipalError::HasSlash { at } => write!(f, "`/` at byte {at}"),
            PrincipalError::BadCharacter { at } => write!(f, "control character at byte {at}"),
        }
    }
}

impl std::error::Error for PrincipalError {}

impl Principal {
    /// Parses `writer` (an agent) or `@tester` (a role).
    ///
    /// # Errors
    ///
    /// [`PrincipalError`]: empty, too long, or holding `/`, whitespace or a control
    /// character.
    /// An agent's name never starts with `@` (joining refuses it), so the two never mix.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{Principal, PrincipalError};
    /// assert_eq!(Principal::parse("@tester")?, Principal::Role("tester".into()));
    /// assert_eq!(Principal::parse("writer")?.to_string(), "writer");
    /// assert_eq!(Principal::parse("@"), Err(PrincipalError::Empty));
    /// # Ok::<(), PrincipalError>(())
    /// ```
    pub fn parse(text: &str) -> Result<Principal, PrincipalError> {
        let (body, max, role) = match text.strip_prefix('@') {
            Some(r) => (r, AGENT_ROLE_MAX, true),
            None => (text, AGENT_NAME_MAX, false),
        };
        let offset = text.len() - body.len();
        if body.is_empty() {
            return Err(PrincipalError::Empty);
        }
        if body.len() > max {
            return Err(PrincipalError::TooLong { len: body.len(), max });
        }
        if let Some(at) = body.find('/') {
            return Err(PrincipalError::HasSlash { at: at + offset });
        }
        if let Some((at, _)) = body.char_indices().find(|(_, c)| c.is_control()) {
            return Err(PrincipalError::BadCharacter { at: at + offset });
        }
        Ok(if role { Principal::Role(body.to_string()) } else { Principal::Agent(body.to_string()) })
    }

    /// Its key.
    pub fn key(&self) -> PrincipalKey {
        match self {
            Principal::Agent(name) => Self::agent_key(name),
            Principal::Role(role) => PrincipalKey::of_parts("@", role),
        }
    }

    /// The key of agent `name` (without parsing: an agent's own name is valid).
    pub(crate) fn agent_key(name: &str) -> PrincipalKey {
        PrincipalKey::of_parts("", name)
    }

    /// The key of role `role`, `None` for the empty role.
    pub(crate) fn role_key(role: &str) -> Option<PrincipalKey> {
        (!role.is_empty()).then(|| PrincipalKey::of_parts("@", role))
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Agent(name) => f.write_str(name),
            Principal::Role(role) => write!(f, "@{role}"),
        }
    }
}

impl std::str::FromStr for Principal {
    type Err = PrincipalError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Principal::parse(s)
    }
}

impl Segment {
    /// The system container `/mail`, made if missing.
    pub(crate) fn mail_container(&self) -> Result<Handle, PoolError> {
        self.ensure_child(self.root(), &NewNode::new(NodeKind::Container, MAIL_CONTAINER))
    }

    /// Registers `who` (idempotent): its mailbox node `/mail/<who>`, which reserves the
    /// name and lets [`Segment::principal`] name its key. Needs no right of its own: the
    /// operations that address a principal check theirs.
    ///
    /// # Errors
    ///
    /// [`PoolError`]: the segment takes no writes, or the pool is full.
    pub(crate) fn register_principal(&self, who: &Principal) -> Result<Handle, PoolError> {
        let mail = self.mail_container()?;
        self.ensure_child(mail, &NewNode::new(NodeKind::Mailbox, &who.to_string()))
    }

    /// The mailbox node of `who`, if it is registered.
    ///
    /// # Errors
    ///
    /// [`PoolError::Corrupt`] / [`PoolError::Contended`]: `/mail`'s child list could
    /// not be read.
    pub fn mailbox(&self, who: &Principal) -> Result<Option<Handle>, PoolError> {
        match self.child_named(self.root(), MAIL_CONTAINER)? {
            Some(mail) => self.child_named(mail, &who.to_string()),
            None => Ok(None),
        }
    }

    /// The principal `key` names, if it is registered (everything work or mail was ever
    /// addressed to is, unless its mailbox was removed by hand) or is a live agent's
    /// name or role (assignments converted from an older journal).
    pub fn principal(&self, key: PrincipalKey) -> Option<Principal> {
        let registered = self.child_named(self.root(), MAIL_CONTAINER).ok().flatten().and_then(|mail| {
            let mut kids = Vec::new();
            self.children(mail, &mut kids).ok()?;
            let h = self.child_with_hash(&kids, key.raw())?;
            Principal::parse(self.read(h).ok()?.name()).ok()
        });
        registered.or_else(|| {
            let mut agents = Vec::new();
            self.agents(&mut agents);
            agents.into_iter().find_map(|a| {
                if Principal::agent_key(&a.name) == key {
                    Some(Principal::Agent(a.name))
                } else {
                    (Principal::role_key(&a.role) == Some(key)).then_some(Principal::Role(a.role))
                }
            })
        })
    }

    /// Every registered principal (the mailboxes under `/mail`), in registration order.
    ///
    /// # Errors
    ///
    /// [`PoolError::Corrupt`] / [`PoolError::Contended`]: a child list could not be read.
    pub fn principals(&self, out: &mut Vec<Principal>) -> Result<(), PoolError> {
        out.clear();
        let Some(mail) = self.child_named(self.root(), MAIL_CONTAINER)? else { return Ok(()) };
        let mut kids = Vec::new();
        self.children(mail, &mut kids)?;
        out.extend(kids.into_iter().filter_map(|h| Principal::parse(self.read(h).ok()?.name()).ok()));
        Ok(())
    }

    /// The keys an agent answers to: its name's and, if it has a role, its role's.
    /// Read from the agent's slot without allocating: `claim` and `claim_next` ask on
    /// every call.
    pub(crate) fn keys_of(&self, agent: AgentId) -> Result<[Option<PrincipalKey>; 2], crate::AgentError> {
        let slot = self.agent_slot(agent.index).ok_or(crate::AgentError::NotFound)?;
        if slot.live_id(agent.index) != Some(agent) {
            return Err(crate::AgentError::NotFound);
        }
        Ok(slot.keys())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn parse_refuses_what_cannot_name_a_principal() {
        assert_eq!(Principal::parse(""), Err(PrincipalError::Empty));
        assert_eq!(Principal::parse("a/b"), Err(PrincipalError::HasSlash { at: 1 }));
        assert_eq!(Principal::parse("@a\tb"), Err(PrincipalError::BadCharacter { at: 2 }));
        assert_eq!(Principal::parse(&"x".repeat(65)), Err(PrincipalError::TooLong { len: 65, max: 64 }));
        assert_eq!(
            Principal::parse(&format!("@{}", "r".repeat(33))),
            Err(PrincipalError::TooLong { len: 33, max: 32 })
        );
    }

    #[test]
    fn agent_and_role_of_one_word_have_different_keys() {
        let a = Principal::parse("tester").unwrap();
        let r = Principal::parse("@tester").unwrap();
        assert_ne!(a.key(), r.key());
        assert_eq!(Principal::agent_key("tester"), a.key());
        assert_eq!(Principal::role_key("tester"), Some(r.key()));
        assert_eq!(Principal::role_key(""), None);
    }
}
