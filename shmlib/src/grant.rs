//! What a handle may change: the [`Grant`] a verified capability token gives, and the
//! check every change makes against it (issue 11, parts 2 and 3).
//!
//! A handle holds at most one grant, set once:
//! * in direct mode by [`Segment::authenticate`], which has the daemon verify the token
//!   (the key never leaves the daemon);
//! * in the daemon's broker, on the handle it applies a brokered agent's requests with.
//!
//! Every change (create, update, claim, document, event, set, agent) starts with
//! [`Segment::permit`]: with a grant, the right must be in the token, the token unexpired,
//! and the node inside the token's subtree when it has one; without a grant, the change is
//! refused only when the daemon requires tokens ([`crate::layout::policy`]) and the handle
//! is not the daemon's own. Reads are not checked one by one: a handle that maps the
//! segment can read all of it, so the right to read is checked once, where the mapping is
//! handed out (`authenticate` and the broker refuse a token without `read`).
//!
//! In direct mode this guards against mistakes — an agent acting under the wrong name, a
//! worker writing outside its project — not against a hostile process of the daemon's
//! user, which can map the segment read-write and write any byte. The boundary against
//! such processes is the broker (`crate::broker`): their handle is read-only and the
//! daemon applies their changes.

use crate::error::PoolError;
use crate::layout::{hdr, policy};
use crate::node::Handle;
use crate::segment::Segment;
use crate::sync::Ordering;
use crate::token::{Right, Token};
use std::fmt;
use uuid::Uuid;

/// A token the daemon verified: whom a handle acts as and what it may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant(pub(crate) Token);

impl Grant {
    /// Wraps a token the caller has verified (the daemon's broker; a direct handle gets
    /// its grant from [`Segment::authenticate`]).
    pub(crate) fn verified(token: Token) -> Grant {
        Grant(token)
    }

    /// The verified token.
    pub fn token(&self) -> &Token {
        &self.0
    }

    /// The agent the holder acts as.
    pub fn agent(&self) -> &str {
        &self.0.agent
    }
}

/// Why a change was refused by the token check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Denied {
    /// The daemon requires tokens and this handle presented none.
    NoToken,
    /// The token does not grant this right.
    Lacks(Right),
    /// The node is outside the token's subtree (or the operation names no node and the
    /// token holds only in a subtree).
    OutsideSubtree(Right),
    /// The operation acts as an agent other than the token's.
    OtherAgent,
    /// The token expired.
    Expired,
    /// The token was revoked.
    Revoked,
    /// The token does not grant `read`, which every mapping needs.
    CannotRead,
    /// The broker accepts only the daemon's own user (`worknoded` runs without
    /// `--broker`).
    NotOpen,
    /// This handle holds a grant already (a handle acts under one token for its life).
    AlreadyGranted,
    /// Under a token, the agents' own records (`/agents` and the agent nodes in it) are
    /// changed only by the agent operations (`join`, `leave`, sessions), and file
    /// reservations (`/reservations` and the reservations in it) only by the reservation
    /// operations (`reserve`, `unreserve`, …).
    SystemNode,
    /// Under a token, only application events (kind `EventKind::USER` and up) may be
    /// appended: the built-in kinds report changes, and the journal acts on them.
    BuiltInEvent,
    /// Under a token, `add` makes no agent, document, message or mailbox nodes (agents
    /// join, documents are put, messages are sent) and starts a node pending or ready only.
    NotThisKind,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denied::NoToken => write!(f, "the daemon requires a capability token and none was presented"),
            Denied::Lacks(r) => write!(f, "the token does not grant {}", r.name()),
            Denied::OutsideSubtree(r) => write!(f, "the token grants {} only inside its subtree", r.name()),
            Denied::OtherAgent => write!(f, "the token acts as another agent"),
            Denied::Expired => write!(f, "the token has expired"),
            Denied::Revoked => write!(f, "the token was revoked"),
            Denied::CannotRead => write!(f, "the token does not grant read"),
            Denied::NotOpen => write!(f, "the broker serves only the daemon's own user"),
            Denied::AlreadyGranted => write!(f, "this handle already acts under a token"),
            Denied::SystemNode => {
                write!(f, "agent and reservation records change only through their own operations")
            }
            Denied::BuiltInEvent => write!(f, "built-in event kinds cannot be appended under a token"),
            Denied::NotThisKind => {
                write!(f, "under a token, add makes only pending or ready nodes, and no agent or document nodes")
            }
        }
    }
}

impl std::error::Error for Denied {}

impl From<Denied> for PoolError {
    fn from(d: Denied) -> PoolError {
        PoolError::Denied(d)
    }
}

impl Segment {
    /// The policy bits the daemon set ([`crate::layout::policy`]).
    pub fn policy(&self) -> u64 {
        self.hdr(hdr::POLICY).load(Ordering::Relaxed)
    }

    /// Whether the daemon requires direct-mode clients to present a token.
    pub fn tokens_required(&self) -> bool {
        self.policy() & policy::TOKENS_REQUIRED != 0
    }

    /// Whether the daemon's broker serves agents of other users (`worknoded --broker`).
    pub fn broker_open(&self) -> bool {
        self.policy() & policy::BROKER_OPEN != 0
    }

    /// The grant this handle acts under, if any.
    pub fn grant(&self) -> Option<&Grant> {
        self.grant.get()
    }

    /// Sets the grant (once). Returns `false` if one was set already.
    pub(crate) fn set_grant(&self, g: Grant) -> bool {
        self.grant.set(g).is_ok()
    }

    /// The check every change makes: may this handle use `right` on `node` (`None`: an
    /// operation that names no node)?
    pub(crate) fn permit(&self, right: Right, node: Option<Handle>) -> Result<(), Denied> {
        self.permit_right(right)?;
        let Some(Grant(t)) = self.grant.get() else { return Ok(()) };
        if let Some(h) = node {
            if self.is_system_record(h) {
                return Err(Denied::SystemNode);
            }
        }
        match (t.subtree, node) {
            (None, _) => Ok(()),
            (Some(root), Some(h)) if self.is_under_uuid(h, root) => Ok(()),
            (Some(_), _) => Err(Denied::OutsideSubtree(right)),
        }
    }

    /// [`Segment::permit`] for an event, about a node named by UUID or about none: an
    /// event about no node changes nothing in the tree, so a subtree token may emit it.
    pub(crate) fn permit_uuid(&self, right: Right, node: Option<Uuid>) -> Result<(), Denied> {
        let subtree = self.grant.get().is_some_and(|g| g.0.subtree.is_some());
        match node {
            Some(u) if subtree => {
                let h = self.lookup(u).map_err(|_| Denied::OutsideSubtree(right))?;
                self.permit(right, Some(h))
            }
            None if subtree => self.permit_right(right),
            _ => self.permit(right, None),
        }
    }

    /// The check of a reservation change: the `reserve` right and the expiry. Not the
    /// subtree: reservations live in the system container `/reservations`, outside any
    /// token's subtree, and name paths of a repository rather than nodes.
    pub(crate) fn permit_reserve(&self) -> Result<(), Denied> {
        self.permit_right(Right::Reserve)
    }

    /// The right and the expiry, not the subtree.
    fn permit_right(&self, right: Right) -> Result<(), Denied> {
        let Some(Grant(t)) = self.grant.get() else { return self.permit_untokened() };
        if crate::clock::unix_ms() >= t.expires_ms {
            return Err(Denied::Expired);
        }
        if !t.rights.contains(right) {
            return Err(Denied::Lacks(right));
        }
        Ok(())
    }

    /// May this handle act as the agent named `name`?
    pub(crate) fn permit_agent_name(&self, name: &str) -> Result<(), Denied> {
        match self.grant.get() {
            Some(Grant(t)) if t.agent != name => Err(Denied::OtherAgent),
            Some(_) => Ok(()),
            None => self.permit_untokened(),
        }
    }

    /// The rule without a grant: refused only when tokens are required of this handle.
    fn permit_untokened(&self) -> Result<(), Denied> {
        if !self.trusted && self.tokens_required() {
            Err(Denied::NoToken)
        } else {
            Ok(())
        }
    }

    /// May this handle act as agent `id`? (Its name must be the token's.)
    pub(crate) fn permit_agent(&self, id: crate::AgentId) -> Result<(), Denied> {
        let Some(Grant(t)) = self.grant.get() else { return self.permit_untokened() };
        match self.agent(id) {
            Ok(info) if info.name == t.agent => Ok(()),
            _ => Err(Denied::OtherAgent),
        }
    }

    /// The subtree a grant confines this handle to, as a handle (`None`: the whole tree,
    /// or the subtree's node is gone).
    pub(crate) fn grant_subtree(&self) -> Option<Result<Handle, Denied>> {
        let root = self.grant.get()?.0.subtree?;
        Some(self.lookup(root).map_err(|_| Denied::OutsideSubtree(Right::Claim)))
    }

    /// The `/agents` container or an agent's node in it; `/reservations` or a
    /// reservation.
    fn is_system_record(&self, h: Handle) -> bool {
        use crate::node::NodeKind;
        let agents = self.agents_container();
        let Ok(n) = self.read(h) else { return false };
        h == agents
            || n.parent() == Some(agents)
            || n.kind() == Some(NodeKind::Reservation)
            || (n.parent() == Some(self.root())
                && n.kind() == Some(NodeKind::Container)
                && n.name() == crate::reserve::RESERVATIONS)
    }

    /// Under a grant: what `add` may make (see [`Denied::NotThisKind`]).
    pub(crate) fn permit_new_node(&self, spec: &crate::NewNode<'_>) -> Result<(), Denied> {
        use crate::node::{NodeKind, Status};
        if self.grant.get().is_none() {
            return Ok(());
        }
        let kind_ok = !matches!(
            spec.kind,
            NodeKind::Agent
                | NodeKind::Document
                | NodeKind::Label
                | NodeKind::Message
                | NodeKind::Mailbox
                | NodeKind::Reservation
        );
        let status_ok = matches!(spec.status, Status::Pending | Status::Ready);
        if kind_ok && status_ok {
            Ok(())
        } else {
            Err(Denied::NotThisKind)
        }
    }

    /// Under a grant: only application event kinds.
    pub(crate) fn permit_event_kind(&self, kind: crate::EventKind) -> Result<(), Denied> {
        if self.grant.get().is_some() && !kind.is_user() {
            Err(Denied::BuiltInEvent)
        } else {
            Ok(())
        }
    }

    fn is_under_uuid(&self, h: Handle, root: Uuid) -> bool {
        self.lookup(root).is_ok_and(|r| self.is_under(h, r))
    }
}
