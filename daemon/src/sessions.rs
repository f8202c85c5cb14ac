//! Agent sessions as the daemon sees them: one Unix stream connection per agent process,
//! whose EOF is the kernel's notice that the process died.
//!
//! A client connects to the abstract socket `worknode.<segment>.<boot id>.sessions` and
//! sends one line, `agent <index> <generation>`, within [`HELLO_TIMEOUT`] (else it is
//! dropped: idle connections cannot pile up). The daemon accepts it only if the peer's
//! uid is its own and the peer's pid (`SO_PEERCRED`, filled in by the kernel) is the
//! session pid recorded in that agent's slot. When the connection reaches EOF and the
//! agent's slot still names that process, the agent is reaped: claims released,
//! `agent_lost`.

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};
use worknode::{AgentId, Daemon};

/// Longest hello line accepted.
const HELLO_MAX: usize = 64;
/// How long a connection may take to say hello before it is dropped.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(2);

struct Conn {
    stream: UnixStream,
    pid: u32,
    agent: Option<AgentId>,
    hello: Vec<u8>,
    accepted: Instant,
}

/// The listener and its connections.
pub struct Sessions {
    listener: UnixListener,
    conns: Vec<Conn>,
    uid: u32,
    limit: usize,
}

impl Sessions {
    /// Listens on the segment's session socket.
    pub fn listen(segment: &str, boot_id: uuid::Uuid, limit: usize) -> std::io::Result<Sessions> {
        let addr = worknode::session_socket_addr(segment, boot_id)?;
        let listener = UnixListener::bind_addr(&addr)?;
        listener.set_nonblocking(true)?;
        Ok(Sessions { listener, conns: Vec::new(), uid: nix::unistd::getuid().as_raw(), limit })
    }

    /// Descriptors to poll: the listener first, then each connection.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        std::iter::once(self.listener.as_fd()).chain(self.conns.iter().map(|c| c.stream.as_fd())).collect()
    }

    /// Handles readiness: `ready[0]` for the listener, then one flag per connection, in
    /// the order of [`Sessions::fds`]. Returns the agents reaped.
    pub fn handle(&mut self, seg: &Daemon, ready: &[bool]) -> Vec<(AgentId, u32)> {
        let mut reaped = Vec::new();
        let mut closed = Vec::new();
        for (i, c) in self.conns.iter_mut().enumerate() {
            if c.agent.is_none() && c.accepted.elapsed() > HELLO_TIMEOUT {
                closed.push(i);
                continue;
            }
            if !ready.get(i + 1).copied().unwrap_or(false) {
                continue;
            }
            let mut buf = [0u8; HELLO_MAX];
            match c.stream.read(&mut buf) {
                Ok(0) => closed.push(i),
                Ok(n) => {
                    if c.agent.is_none() {
                        c.hello.extend_from_slice(&buf[..n]);
                        if let Some(id) = parse_hello(&c.hello) {
                            // Accept only the process the agent's slot names.
                            if seg.agent(id).ok().and_then(|a| a.session_pid) == Some(c.pid) {
                                c.agent = Some(id);
                            } else {
                                closed.push(i);
                            }
                        } else if c.hello.len() > HELLO_MAX {
                            closed.push(i);
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
                Err(_) => closed.push(i),
            }
        }
        for i in closed.into_iter().rev() {
            let c = self.conns.swap_remove(i);
            if let Some(id) = c.agent {
                // Still the same session process? (It may have left and another bound.)
                if seg.agent(id).ok().and_then(|a| a.session_pid) == Some(c.pid) && seg.reap_agent(id).is_ok() {
                    reaped.push((id, c.pid));
                }
            }
        }
        if ready.first().copied().unwrap_or(false) {
            self.accept_all();
        }
        reaped
    }

    fn accept_all(&mut self) {
        // Bounded, so a flood of connections cannot starve the housekeeping tick: what
        // is left waits in the backlog for the next round.
        for _ in 0..self.limit.max(1) {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let Ok(cred) = getsockopt(&stream, PeerCredentials) else { continue };
                    if cred.uid() != self.uid || self.conns.len() >= self.limit || stream.set_nonblocking(true).is_err()
                    {
                        continue; // dropped: closes the connection
                    }
                    self.conns.push(Conn {
                        stream,
                        pid: cred.pid() as u32,
                        agent: None,
                        hello: Vec::new(),
                        accepted: Instant::now(),
                    });
                }
                Err(_) => return,
            }
        }
    }
}

fn parse_hello(line: &[u8]) -> Option<AgentId> {
    let text = std::str::from_utf8(line).ok()?;
    let line = text.lines().next().filter(|_| text.contains('\n'))?;
    let mut parts = line.split_ascii_whitespace();
    (parts.next()? == "agent").then_some(())?;
    let index = parts.next()?.parse().ok()?;
    let generation = parts.next()?.parse().ok()?;
    Some(AgentId { index, generation })
}

#[cfg(test)]
mod tests {
    use super::parse_hello;

    #[test]
    fn hello_lines_parse_only_when_complete_and_well_formed() {
        let id = parse_hello(b"agent 3 7\n").unwrap();
        assert_eq!((id.index, id.generation), (3, 7));
        assert!(parse_hello(b"agent 3 7").is_none());
        assert!(parse_hello(b"agnt 3 7\n").is_none());
        assert!(parse_hello(b"agent x 7\n").is_none());
    }
}
