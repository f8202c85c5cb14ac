//! What every verb gets: the global options, and attaching to the segment as them.
//!
//! With a token (`--token`, `WORKNODE_TOKEN`) the daemon verifies it and wn acts as the
//! token's agent: attached directly when this user may (the library then checks every
//! change against the token), else through the daemon's broker (another user, a sandbox):
//! reads from a read-only mapping, changes applied by the daemon.
//!
//! An agent identity (`--agent NAME`) is *joined on first use*: the first read-write
//! command that names it joins it ([`worknode::Segment::join`], idempotent), and every
//! later one finds it again. No session is opened: a shell agent's identity outlives the
//! short `wn` processes acting for it, and its claims are held by their leases.

use crate::fail::{exit, Fail};
use crate::output::clean;
use crate::output::Style;
use worknode::{Access, AgentId, AttachError, Segment};

/// The global options, resolved.
pub struct Ctx {
    /// Segment name.
    pub segment: String,
    /// The agent this invocation acts as, if any.
    pub agent: Option<String>,
    /// Role recorded when the agent first joins.
    pub role: String,
    /// Whether `--role` (or `WORKNODE_ROLE`) was given, not defaulted.
    pub role_given: bool,
    /// JSON on stdout.
    pub json: bool,
    /// Human output styling.
    pub style: Style,
    /// `--data-dir` / `WORKNODE_DATA_DIR`, if given.
    pub data_dir: Option<std::path::PathBuf>,
    /// `--token` / `WORKNODE_TOKEN`, if given (trimmed, non-empty).
    pub token: Option<String>,
}

impl Ctx {
    /// The daemon's data directory: the one given, else the default the daemon uses.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.data_dir.clone().unwrap_or_else(|| worknoded::default_data_dir(&self.segment))
    }

    /// Attaches read-only (inspectors).
    pub fn attach_ro(&self) -> Result<Segment, Fail> {
        match &self.token {
            None => Ok(Segment::attach(&self.segment, Access::ReadOnly)?),
            Some(t) => self.attach_with_token(t, Access::ReadOnly),
        }
    }

    /// Attaches read-write; with `--agent` or a token, joins that agent and acts as it
    /// (events this process appends carry it as actor).
    pub fn attach_rw(&self) -> Result<Segment, Fail> {
        let seg = match &self.token {
            None => Segment::attach(&self.segment, Access::ReadWrite)?,
            Some(t) => self.attach_with_token(t, Access::ReadWrite)?,
        };
        if self.agent.is_some() || seg.grant().is_some() {
            self.me(&seg)?;
        }
        Ok(seg)
    }

    /// With a token: directly when this user may map the segment (the daemon verifies the
    /// token), else through the broker.
    fn attach_with_token(&self, token: &str, access: Access) -> Result<Segment, Fail> {
        let seg = match Segment::attach(&self.segment, access) {
            Ok(seg) => {
                seg.authenticate(token)?;
                seg
            }
            Err(AttachError::ForeignOwner { .. } | AttachError::PermissionDenied { .. }) => {
                Segment::attach_brokered(&self.segment, token, &self.role)?
            }
            Err(e) => return Err(e.into()),
        };
        if let (Some(g), Some(a)) = (seg.grant(), &self.agent) {
            if g.agent() != a {
                return Err(Fail::new(
                    "token_agent_mismatch",
                    exit::PERMISSION,
                    format!("the token is for agent {:?}, not {:?}", clean(g.agent()), clean(a)),
                    "drop --agent (or WORKNODE_AGENT): with a token, wn acts as the token's agent",
                ));
            }
        }
        Ok(seg)
    }

    /// Attaches read-write when permitted (a reader that may repair a dead producer's
    /// ring slot), read-only otherwise.
    pub fn attach_best(&self) -> Result<Segment, Fail> {
        if let Some(t) = &self.token {
            return self.attach_with_token(t, Access::ReadOnly);
        }
        match Segment::attach(&self.segment, Access::ReadWrite) {
            Ok(seg) => Ok(seg),
            Err(worknode::AttachError::PermissionDenied { .. }) => self.attach_ro(),
            Err(e) => Err(e.into()),
        }
    }

    /// The agent this invocation acts as, joined if it has not joined yet. Fails with a
    /// usage error when no `--agent` was given.
    pub fn me(&self, seg: &Segment) -> Result<AgentId, Fail> {
        let name = seg.grant().map(|g| g.agent()).or(self.agent.as_deref()).ok_or_else(|| {
            Fail::new(
                "agent_required",
                exit::USAGE,
                "this verb acts as an agent, and no agent was named",
                "pass --agent NAME (or set WORKNODE_AGENT=NAME); the agent joins on first use",
            )
        })?;
        let id = seg.join(name, &self.role)?;
        if let Ok(info) = seg.agent(id) {
            seg.set_actor(Some(info.node));
            if self.role_given && info.role != self.role {
                // The role is the one of the first join: say so rather than ignore it quietly.
                eprintln!(
                    "wn: warning: agent {} joined with role {:?}; --role {:?} is ignored (leave and join again to change it)",
                    clean(name),
                    clean(&info.role),
                    clean(&self.role)
                );
            }
        }
        // A sign of life for `wn agents`; losing it is harmless.
        let _ = seg.heartbeat(id);
        Ok(id)
    }
}

/// Parses whom something is addressed to: an agent's name, or `@role`.
pub fn principal(text: &str) -> Result<worknode::Principal, Fail> {
    worknode::Principal::parse(text).map_err(|e| {
        Fail::new(
            "invalid_name",
            exit::USAGE,
            format!("{text:?} cannot name an agent or a role: {e}"),
            "give an agent's name (`writer`) or a role (`@tester`): 1 to 64 bytes (roles 32), no '/' or control characters",
        )
    })
}

/// Finds a live agent by name (for `--actor`).
pub fn find_agent(seg: &Segment, name: &str) -> Result<AgentId, Fail> {
    seg.find_agent(name).ok_or_else(|| {
        Fail::new(
            "agent_not_found",
            exit::NOT_FOUND,
            format!("no agent named {name:?}"),
            format!("list agents with `wn agents`; an agent joins when it first runs `wn --agent {name} …` (or `wn --agent {name} join`)"),
        )
    })
}
