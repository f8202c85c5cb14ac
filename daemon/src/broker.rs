//! The broker, the daemon's side (issue 11, part 3): agents that may not write the
//! segment connect here, present a token, get a read-only descriptor of the segment, and
//! send their changes as requests, which are checked and applied here with the library's
//! own operations (see `worknode::broker` for the wire).
//!
//! One thread per connection, at most `limit` of them (the agent table's capacity): a
//! request is read, checked and applied on that connection's own handle — which acts
//! under the verified token, so the library checks rights, subtree and agent on every
//! operation, and every event names the token's agent — and answered before the next is
//! read. Connections are independent: a malformed, oversized or refused request gets a
//! typed error on its own connection (an oversized one then closes it: the stream cannot
//! be resynchronised) and nobody else notices.
//!
//! The same socket answers token checks for direct handles of the daemon's user
//! (`Segment::authenticate`): verify, answer, close. Other users are served only with
//! `--broker`.

use crate::tokens;
use nix::sys::socket::{getsockopt, sendmsg, sockopt::PeerCredentials, ControlMessage, MsgFlags};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
use worknode::broker::{
    read_body, read_message, read_spinning, write_message, BrokerFault, Hello, Refusal, Reply, Request, Welcome,
    WireError, HELLO_MAX, MESSAGE_TIMEOUT, PROTOCOL, REQUEST_OVERHEAD, SERVER_SPIN,
};
use worknode::{AgentId, Daemon, Denied, PoolError, RevocationList, Right, Segment, Token, TokenId};

/// How long a new connection may take to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often idle threads look at the stop flag.
const STOP_POLL_MS: u16 = 200;

/// What the broker serves, and where its token files are.
#[derive(Clone, Debug)]
pub struct Config {
    /// The data directory with `token.key` and `tokens.revoked`.
    pub data_dir: PathBuf,
    /// Serve agents of other users (`--broker`).
    pub open_to_others: bool,
    /// Most connections at once.
    pub limit: usize,
}

/// The listening socket.
pub struct Broker {
    listener: UnixListener,
}

impl Broker {
    /// Binds `segment`'s broker socket (an abstract name, see `worknode::broker`).
    ///
    /// # Errors
    ///
    /// `AddrInUse` when another process holds the name.
    pub fn listen(segment: &str) -> std::io::Result<Broker> {
        let listener = UnixListener::bind_addr(&worknode::broker::broker_socket_addr(segment)?)?;
        listener.set_nonblocking(true)?;
        Ok(Broker { listener })
    }

    /// Accepts connections until `stop`, each served on a thread of `scope`.
    pub fn serve(self, seg: &Daemon, cfg: &Config, stop: &AtomicBool) {
        let open = AtomicUsize::new(0);
        let open = &open;
        std::thread::scope(|inner| {
            while !stop.load(Ordering::Acquire) {
                if !wait_readable(&self.listener, STOP_POLL_MS) {
                    continue;
                }
                let Ok((stream, _)) = self.listener.accept() else { continue };
                let Ok(cred) = getsockopt(&stream, PeerCredentials) else { continue };
                if stream.set_nonblocking(false).is_err() {
                    continue;
                }
                if open.fetch_add(1, Ordering::AcqRel) >= cfg.limit {
                    open.fetch_sub(1, Ordering::AcqRel);
                    let mut s = stream;
                    let _ = s.set_write_timeout(Some(HELLO_TIMEOUT));
                    let _ = write_message(&mut s, &Welcome::Refused(Refusal::Busy));
                    continue;
                }
                inner.spawn(move || {
                    serve_connection(seg, cfg, stream, cred.uid(), cred.pid(), stop);
                    open.fetch_sub(1, Ordering::AcqRel);
                });
            }
        });
    }
}

/// Polls one descriptor for input, up to `ms`.
fn wait_readable(fd: &impl AsFd, ms: u16) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0)
}

fn refuse(s: &mut UnixStream, r: Refusal) {
    let _ = write_message(s, &Welcome::Refused(r));
}

/// The token in a hello, verified against the key and revocation list on disk.
fn verify(cfg: &Config, text: &str) -> Result<Token, Refusal> {
    let key = tokens::load_key(&cfg.data_dir).map_err(|e| {
        if e.is_not_found() {
            Refusal::NoKey
        } else {
            eprintln!("worknoded: broker: cannot read the token key: {e}");
            Refusal::Unavailable
        }
    })?;
    let revoked = load_revoked(cfg)?;
    worknode::verify(&key, text.trim(), worknode::unix_ms(), &revoked).map_err(Refusal::Token)
}

fn load_revoked(cfg: &Config) -> Result<RevocationList, Refusal> {
    match tokens::load_revoked(&cfg.data_dir) {
        Ok(r) => Ok(r),
        Err(e) if e.is_not_found() => Ok(RevocationList::default()),
        Err(e) => {
            eprintln!("worknoded: broker: cannot read the revocation list: {e}");
            Err(Refusal::Unavailable)
        }
    }
}

/// Watches the revocation list for one connection's token: re-read when the file
/// changes (one `stat` per request), so a revoked token stops working at once.
struct Revocation {
    id: TokenId,
    seen: Option<SystemTime>,
    revoked: bool,
}

impl Revocation {
    fn is_revoked(&mut self, cfg: &Config) -> bool {
        let path = cfg.data_dir.join(tokens::REVOKED_FILE);
        let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        if mtime != self.seen {
            self.seen = mtime;
            // An unreadable list fails closed.
            self.revoked = load_revoked(cfg).map_or(true, |r| r.contains(&self.id));
        }
        self.revoked
    }
}

fn serve_connection(seg: &Daemon, cfg: &Config, mut s: UnixStream, uid: u32, pid: i32, stop: &AtomicBool) {
    let _ = s.set_read_timeout(Some(HELLO_TIMEOUT));
    let _ = s.set_write_timeout(Some(MESSAGE_TIMEOUT));
    let Ok(body) = read_message(&mut s, HELLO_MAX) else { return };
    let hello: Hello = match postcard::from_bytes(&body) {
        Ok(h) if matches!(h, Hello { protocol: PROTOCOL, .. }) => h,
        _ => return refuse(&mut s, Refusal::Protocol),
    };
    let foreign = uid != nix::unistd::geteuid().as_raw();
    if foreign && (!cfg.open_to_others || !hello.brokered) {
        return refuse(&mut s, Refusal::Denied(Denied::NotOpen));
    }
    let token = match verify(cfg, &hello.token) {
        Ok(t) => t,
        Err(r) => return refuse(&mut s, r),
    };
    if !token.rights.contains(Right::Read) {
        return refuse(&mut s, Refusal::Denied(Denied::CannotRead));
    }
    if !hello.brokered {
        let _ = write_message(&mut s, &Welcome::Granted { token, agent: None });
        return;
    }
    let handle = match seg.granted_handle(token.clone()) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("worknoded: broker: cannot open a handle for {:?}: {e}", token.agent);
            return refuse(&mut s, Refusal::Closing);
        }
    };
    let agent = match handle.join(&token.agent, &hello.role) {
        Ok(a) => a,
        Err(e) => return refuse(&mut s, Refusal::Agent(e)),
    };
    let fd = match seg.read_only_descriptor() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("worknoded: broker: cannot open the segment read-only: {e}");
            return refuse(&mut s, Refusal::Closing);
        }
    };
    if send_with_fd(&s, &Welcome::Granted { token: token.clone(), agent: Some(agent) }, &fd).is_err() {
        return;
    }
    drop(fd);
    let mut revocation = Revocation { id: token.id, seen: None, revoked: false };
    let mut session: Option<AgentId> = None;
    let limit = handle.max_document_len() + REQUEST_OVERHEAD;
    let _ = s.set_read_timeout(Some(MESSAGE_TIMEOUT));
    let mut answered = false;
    loop {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let mut head = [0u8; 4];
        // Right after an answer the next request often follows: poll for it briefly
        // before blocking in `poll` (a blocked thread's wake-up costs more than the work).
        let spin = if answered { SERVER_SPIN } else { Duration::ZERO };
        match read_spinning(&s, &mut head, spin, false) {
            Ok(true) => {}
            Ok(false) => {
                answered = false;
                if wait_readable(&s, STOP_POLL_MS) {
                    match read_spinning(&s, &mut head, Duration::ZERO, true) {
                        Ok(_) => {}
                        Err(_) => break,
                    }
                } else {
                    continue;
                }
            }
            Err(_) => break,
        }
        let body = match read_body(&mut s, head, limit) {
            Ok(b) => b,
            Err(f @ BrokerFault::TooLarge { .. }) => {
                let _ = write_message(&mut s, &Reply::Err(WireError::Pool(PoolError::Broker(f))));
                break;
            }
            Err(_) => break,
        };
        let had_session = session.is_some();
        let reply = match postcard::from_bytes::<Request>(&body) {
            Err(_) => Reply::Err(WireError::Pool(PoolError::Broker(BrokerFault::BadRequest))),
            Ok(_) if revocation.is_revoked(cfg) => Reply::Err(WireError::Pool(PoolError::Denied(Denied::Revoked))),
            Ok(req) => apply(&handle, &mut session, req),
        };
        if !had_session && session.is_some() {
            eprintln!("worknoded: broker: agent {:?} (uid {uid}, pid {pid}) holds a session", token.agent);
        }
        if write_message(&mut s, &reply).is_err() {
            break;
        }
        answered = true;
    }
    if let Some(id) = session {
        if seg.reap_agent(id).is_ok() {
            eprintln!("worknoded: agent {id} lost: its broker connection (pid {pid}) closed; claims released");
        }
    }
}

/// Sends one message with a descriptor attached (`SCM_RIGHTS`).
fn send_with_fd<T: serde::Serialize>(s: &UnixStream, msg: &T, fd: &std::fs::File) -> Result<(), BrokerFault> {
    let mut frame = Vec::new();
    write_message(&mut frame, msg)?;
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let sent = sendmsg::<()>(s.as_raw_fd(), &[std::io::IoSlice::new(&frame)], &cmsg, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(|_| BrokerFault::Disconnected)?;
    // The descriptor went with the first byte; the rest of a short send follows plainly.
    (&*s).write_all(&frame[sent..]).map_err(|_| BrokerFault::Disconnected)
}

/// Applies one request on the connection's handle, with the method of the same name.
fn apply(h: &Segment, session: &mut Option<AgentId>, req: Request) -> Reply {
    use Request as R;
    let lease = Duration::from_millis;
    let node = |n: worknode::Node| Reply::node(&n);
    let unit = |()| Reply::Unit;
    match req {
        R::Add { parent, spec } => Reply::of(h.add(parent, &spec.as_new_node()), Reply::Handle),
        R::SetStatus { node: n, status } => Reply::of(h.set_status(n, status), node),
        R::Delete { node: n, mode } => Reply::of(h.delete(n, mode), Reply::Count),
        R::Claim { task, agent, lease_ms } => Reply::of(h.claim(task, agent, lease(lease_ms)), Reply::Claim),
        R::ClaimNext { filter, agent, lease_ms } => {
            Reply::of(h.claim_next(&filter, agent, lease(lease_ms)), Reply::Claim)
        }
        R::Renew { claim, lease_ms } => Reply::of(h.renew(&claim, lease(lease_ms)), Reply::Claim),
        R::Release { claim } => Reply::of(h.release(&claim), node),
        R::Start { claim } => Reply::of(h.start(&claim), node),
        R::Progress { claim, percent } => Reply::of(h.progress(&claim, percent), node),
        R::Complete { claim, note } => Reply::of(h.complete(&claim, &note), node),
        R::Fail { claim, reason } => Reply::of(h.fail(&claim, &reason), node),
        R::Assign { node: n, agent } => Reply::of(h.assign(n, agent), node),
        R::Unassign { node: n, agent } => Reply::of(h.unassign(n, agent), node),
        R::AddBlocker { task, blocker } => Reply::of(h.add_blocker(task, blocker), node),
        R::RemoveBlocker { task, blocker } => Reply::of(h.remove_blocker(task, blocker), node),
        R::PutDocument { parent, name, content_type, bytes } => {
            Reply::of(h.put_document(parent, &name, &content_type, &bytes), Reply::Handle)
        }
        R::ReplaceDocument { doc, content_type, bytes } => {
            Reply::of(h.replace_document(doc, &content_type, &bytes), Reply::Count)
        }
        R::DeleteDocument { doc } => Reply::of(h.delete_document(doc), unit),
        R::Append { kind, node: about, topic, payload } => {
            let mut ev = worknode::NewEvent::new(kind).topic(&topic).payload(&payload);
            ev.node = about;
            Reply::of(h.append(&ev), Reply::Count)
        }
        R::SetAdd { node: n, element } => Reply::of(h.set_add(n, element), Reply::Count),
        R::SetRemove { node: n, element } => Reply::of(h.set_remove(n, element).map(|c| c as u64), Reply::Count),
        R::SetCompact { node: n } => Reply::of(h.set_compact(n).map(|c| c as u64), Reply::Count),
        R::Join { name, role } => Reply::of(h.join(&name, &role), Reply::Agent),
        R::BindSession { agent } => Reply::of(h.bind_session(agent), |()| {
            // This connection is now the agent's session: its close reaps the agent.
            *session = Some(agent);
            Reply::Unit
        }),
        R::Heartbeat { agent } => Reply::of(h.heartbeat(agent), unit),
        R::SetAgentCursor { agent, cursor } => Reply::of(h.set_agent_cursor(agent, cursor), unit),
        R::Leave { agent } => Reply::of(h.leave(agent), |()| {
            if *session == Some(agent) {
                *session = None;
            }
            Reply::Unit
        }),
    }
}
