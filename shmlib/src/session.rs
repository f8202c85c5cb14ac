//! Agent sessions: binding an agent to the life of this process, attested by the kernel.
//!
//! [`Segment::open_session`] joins (or re-joins) an agent, records this process's owner
//! tag in its slot, and connects a Unix stream socket to the daemon, announcing the
//! agent. When this process exits — cleanly, by panic, or by `SIGKILL` — the kernel
//! closes the socket; the daemon reads EOF and reaps the agent at once (claims released,
//! `agent_lost`). No pid polling is involved on that path.
//!
//! The socket lives in Linux's abstract namespace (no file to clean up), named after the
//! segment and the daemon's random boot id, so nobody can squat it before the daemon
//! binds it. Anyone can connect to an abstract socket, so both ends check the other's
//! credentials (`SO_PEERCRED`): the daemon wants its own uid and the pid recorded in the
//! agent's slot, so nobody can get another agent reaped; the client wants its own uid
//! and the daemon pid the segment names, so nobody can pose as the daemon.

use crate::agents::{AgentError, AgentId};
use crate::segment::Segment;
use std::io::Write;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};

/// The abstract socket name the daemon of `segment` listens on for sessions while its
/// boot id is `boot_id`. The boot id is random and new at every daemon start, so no
/// other user can bind the name before the daemon does (abstract names have no owner
/// or mode: a fixed name could be squatted); clients read it from the segment, whose
/// owner they have checked.
pub fn session_socket_name(segment: &str, boot_id: uuid::Uuid) -> Vec<u8> {
    // Abstract names are limited to 107 bytes: long segment names are hashed (FNV-1a).
    let boot = boot_id.simple();
    if segment.len() <= 48 {
        format!("worknode.{segment}.{boot}.sessions").into_bytes()
    } else {
        let h = crate::sys::fnv1a(segment.as_bytes());
        format!("worknode.{h:016x}.{boot}.sessions").into_bytes()
    }
}

/// The session socket address of `segment`'s daemon instance `boot_id`.
pub fn session_socket_addr(segment: &str, boot_id: uuid::Uuid) -> std::io::Result<SocketAddr> {
    SocketAddr::from_abstract_name(session_socket_name(segment, boot_id))
}

/// Connects to the daemon's session socket and announces `id`, but only to the daemon
/// the segment names: the listening peer must be the daemon's pid and this uid.
fn connect_to_daemon(seg: &Segment, id: AgentId) -> Option<UnixStream> {
    let info = seg.info();
    let mut s = UnixStream::connect_addr(&session_socket_addr(seg.name(), info.boot_id).ok()?).ok()?;
    let peer = nix::sys::socket::getsockopt(&s, nix::sys::socket::sockopt::PeerCredentials).ok()?;
    if peer.uid() != crate::sys::effective_uid() || peer.pid() as u32 != info.daemon_pid {
        return None;
    }
    writeln!(s, "agent {} {}", id.index, id.generation).ok()?;
    Some(s)
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
        self.daemon.is_some() || self.seg.is_brokered()
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
    /// agent's events carry it as actor while the session lasts. Dropping the session
    /// (or [`Session::leave`]) makes the agent leave; if no daemon is listening the
    /// session still works, unwatched ([`Session::watched_by_daemon`] is false).
    ///
    /// # Errors
    ///
    /// * The errors of [`Segment::join`].
    /// * [`AgentError::SessionTaken`]: another live process holds a session for this
    ///   agent.
    /// * [`AgentError::NotFound`]: the agent was reaped between joining and binding.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::AgentError;
    /// # let name = format!("doc-open_session-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let session = seg.open_session("reviewer", "review")?;
    /// let me = session.id();
    /// assert_eq!(seg.agent(me)?.role, "review");
    /// assert_eq!(seg.actor(), Some(seg.agent(me)?.node)); // events now name the agent
    /// session.leave()?;
    /// assert_eq!(seg.agent(me).unwrap_err(), AgentError::NotFound);
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_session(&self, name: &str, role: &str) -> Result<Session<'_>, AgentError> {
        let id = self.join(name, role)?;
        self.bind_session(id)?;
        let info = self.agent(id)?;
        self.set_actor(Some(info.node));
        // A brokered handle's session is its broker connection (bound just now).
        let daemon = if self.is_brokered() { None } else { connect_to_daemon(self, id) };
        Ok(Session { seg: self, id, daemon })
    }
}
