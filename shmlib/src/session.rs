//! Agent sessions: binding an agent to the life of this process, attested by the kernel.
//!
//! [`Segment::open_session`] joins (or re-joins) an agent, records this process's owner
//! tag in its slot, and connects a Unix stream socket to the daemon, announcing the
//! agent. When this process exits — cleanly, by panic, or by `SIGKILL` — the kernel
//! closes the socket; the daemon reads EOF and reaps the agent at once (claims released,
//! `agent_lost`). No pid polling is involved on that path.
//!
//! The socket lives in Linux's abstract namespace (no file to clean up), named after the
//! segment. Anyone can connect to an abstract socket, so the daemon checks the peer's
//! credentials (`SO_PEERCRED`): the uid must be the daemon's and the pid must be the one
//! recorded in the agent's slot, so nobody can get another agent reaped.

use crate::agents::{AgentError, AgentId};
use crate::segment::Segment;
use std::io::Write;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};

/// The abstract socket name the daemon of `segment` listens on for sessions.
pub fn session_socket_name(segment: &str) -> Vec<u8> {
    // Abstract names are limited to 107 bytes: long segment names are hashed (FNV-1a).
    if segment.len() <= 90 {
        format!("worknode.{segment}.sessions").into_bytes()
    } else {
        let h = segment.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        format!("worknode.{h:016x}.sessions").into_bytes()
    }
}

/// The session socket address of `segment`'s daemon.
pub fn session_socket_addr(segment: &str) -> std::io::Result<SocketAddr> {
    SocketAddr::from_abstract_name(session_socket_name(segment))
}

/// A live session: this process acts for the agent until the session is dropped (then
/// the agent leaves) or the process dies (then the daemon reaps it).
pub struct Session<'a> {
    seg: &'a Segment,
    id: AgentId,
    daemon: Option<UnixStream>,
}

impl Session<'_> {
    /// The agent.
    pub fn id(&self) -> AgentId {
        self.id
    }

    /// Whether the daemon watches this session (it was running when it opened).
    pub fn watched_by_daemon(&self) -> bool {
        self.daemon.is_some()
    }

    /// Leaves explicitly (claims released, `agent_left`); dropping does the same.
    pub fn leave(mut self) -> Result<(), AgentError> {
        let r = self.seg.leave(self.id);
        self.daemon = None;
        std::mem::forget(self);
        r
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = self.seg.leave(self.id);
    }
}

impl Segment {
    /// Joins as `name` and binds the agent to this process (see the module docs). The
    /// agent's events carry it as actor while the session lasts.
    pub fn open_session(&self, name: &str, role: &str) -> Result<Session<'_>, AgentError> {
        let id = self.join(name, role)?;
        self.bind_session(id)?;
        let info = self.agent(id)?;
        self.set_actor(Some(info.node));
        let daemon =
            session_socket_addr(self.name()).and_then(|addr| UnixStream::connect_addr(&addr)).ok().and_then(|mut s| {
                writeln!(s, "agent {} {}", id.index, id.generation).ok()?;
                Some(s)
            });
        Ok(Session { seg: self, id, daemon })
    }
}
