//! The broker, the daemon's side (issue 11, part 3): agents that may not write the
//! segment connect here, present a token, get a read-only descriptor of the segment, and
//! send their changes as requests, which are checked and applied here with the library's
//! own operations (see `worknode::broker` for the wire).
//!
//! One thread per connection: a request is read, checked and applied on that
//! connection's own handle — which acts under the verified token, so the library checks
//! rights, subtree and agent on every operation, and every event names the token's agent
//! — and answered before the next is read. Connections are independent: a malformed,
//! oversized or refused request gets a typed error on its own connection (an oversized
//! one then closes it: the stream cannot be resynchronised) and nobody else notices.
//!
//! Bounds, so that no local user can hang the daemon or crowd others out:
//! * at most [`PENDING_MAX`] connections that have not finished their hello, each given
//!   [`HELLO_TIMEOUT`] for the whole hello (not per byte);
//! * at most `limit` brokered connections (the agent table's capacity);
//! * a request must arrive whole within [`MESSAGE_TIMEOUT`] of its first byte, and its
//!   buffer grows only as its bytes arrive (a peer that announces 4 MiB and sends 4 bytes
//!   costs 64 KiB);
//! * every wait polls the stop flag at least every 200 ms, so shutdown joins every
//!   thread promptly;
//! * a connection whose token expires or is revoked is closed (and its session reaped)
//!   within 200 ms, not only refused at its next request.
//!
//! The same socket answers token checks for direct handles of the daemon's user
//! (`Segment::authenticate`): verify, answer, close. Other users are served only with
//! `--broker`.

use crate::tokens;
use nix::sys::socket::{getsockopt, sendmsg, sockopt::PeerCredentials, ControlMessage, MsgFlags};
use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use worknode::broker::{
    frame, recv_spinning, send_all, BrokerFault, Hello, Refusal, Reply, Request, Welcome, WireError, HELLO_MAX,
    HELLO_TIMEOUT, MESSAGE_TIMEOUT, PROTOCOL, REQUEST_OVERHEAD, SERVER_SPIN,
};
use worknode::{AgentError, AgentId, Daemon, Denied, PoolError, RevocationList, Right, Segment, Token, TokenId};

/// How often waiting threads look at the stop flag (and at the token's validity).
const STOP_POLL: Duration = Duration::from_millis(200);
/// Connections in their hello at once; more are closed at accept.
pub const PENDING_MAX: usize = 32;
/// The buffer of a request grows by at most this much before its bytes arrive.
const BODY_STEP: usize = 64 * 1024;

/// What the broker serves, and where its token files are.
#[derive(Clone, Debug)]
pub struct Config {
    /// The data directory with `token.key` and `tokens.revoked`.
    pub data_dir: PathBuf,
    /// Serve agents of other users (`--broker`).
    pub open_to_others: bool,
    /// Most brokered connections at once.
    pub limit: usize,
}

/// The listening socket.
pub struct Broker {
    listener: UnixListener,
}

/// What the connection threads share.
struct Shared<'a> {
    seg: &'a Daemon,
    cfg: &'a Config,
    stop: &'a AtomicBool,
    pending: AtomicUsize,
    brokered: AtomicUsize,
    /// Which connection holds each agent's session: a second one is refused, so one
    /// connection's close never reaps an agent another connection serves.
    sessions: Mutex<HashMap<AgentId, (u64, i32)>>,
    next_id: AtomicU64,
}

/// A counted place; freed when dropped, whatever ends the connection (a panic included).
struct Place<'a>(&'a AtomicUsize);

impl<'a> Place<'a> {
    fn take(counter: &'a AtomicUsize, max: usize) -> Option<Place<'a>> {
        if counter.fetch_add(1, Ordering::AcqRel) >= max {
            counter.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Place(counter))
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
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

    /// Accepts connections until `stop`, each served on a thread joined before this
    /// returns.
    pub fn serve(self, seg: &Daemon, cfg: &Config, stop: &AtomicBool) {
        let shared = Shared {
            seg,
            cfg,
            stop,
            pending: AtomicUsize::new(0),
            brokered: AtomicUsize::new(0),
            sessions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        };
        let shared = &shared;
        std::thread::scope(|scope| {
            while !stop.load(Ordering::Acquire) {
                if !wait_readable(&self.listener, STOP_POLL) {
                    continue;
                }
                let Ok((stream, _)) = self.listener.accept() else { continue };
                let Ok(cred) = getsockopt(&stream, PeerCredentials) else { continue };
                // Dropped (closed) when too many are still saying hello.
                let Some(place) = Place::take(&shared.pending, PENDING_MAX) else { continue };
                if stream.set_nonblocking(false).is_err() {
                    continue;
                }
                scope.spawn(move || serve_connection(shared, stream, cred.uid(), cred.pid(), place));
            }
        });
    }
}

/// Polls one descriptor for input, up to `wait`.
fn wait_readable(fd: &impl AsFd, wait: Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0)
}

/// Fills `buf` by `deadline`, waking at least every [`STOP_POLL`] to look at `stop`.
fn read_by(s: &UnixStream, buf: &mut [u8], deadline: Instant, stop: &AtomicBool) -> Result<(), BrokerFault> {
    let mut got = 0;
    while got < buf.len() {
        let now = Instant::now();
        if now >= deadline || stop.load(Ordering::Acquire) {
            return Err(BrokerFault::Disconnected);
        }
        if wait_readable(s, (deadline - now).min(STOP_POLL)) {
            got += recv_spinning(s, &mut buf[got..], Duration::ZERO)?;
        }
    }
    Ok(())
}

/// The body of a message whose length prefix is `head`, by `deadline`; the buffer grows
/// only as bytes arrive.
fn body_by(
    s: &UnixStream,
    head: [u8; 4],
    max: usize,
    deadline: Instant,
    stop: &AtomicBool,
) -> Result<Vec<u8>, BrokerFault> {
    let len = u32::from_le_bytes(head) as usize;
    if len > max {
        return Err(BrokerFault::TooLarge { len, max });
    }
    let mut body = Vec::new();
    while body.len() < len {
        let at = body.len();
        body.resize(at + (len - at).min(BODY_STEP), 0);
        read_by(s, &mut body[at..], deadline, stop)?;
    }
    Ok(body)
}

fn send<T: serde::Serialize>(s: &UnixStream, msg: &T) -> Result<(), BrokerFault> {
    send_all(s, &frame(msg)?)
}

fn refuse(s: &UnixStream, r: Refusal) {
    let _ = send(s, &Welcome::Refused(r));
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

/// Watches the revocation list for one connection's token: re-read whenever the file's
/// size, inode or modification time changed (it is append-only, so a revocation always
/// grows it), so a revoked token stops at once.
struct Revocation {
    id: TokenId,
    seen: Option<(u64, u64, i64, i64)>,
    revoked: bool,
}

impl Revocation {
    fn is_revoked(&mut self, cfg: &Config) -> bool {
        let path = cfg.data_dir.join(tokens::REVOKED_FILE);
        let now = std::fs::metadata(&path).ok().map(|m| (m.len(), m.ino(), m.mtime(), m.mtime_nsec()));
        if now != self.seen {
            self.seen = now;
            // An unreadable list fails closed.
            self.revoked = load_revoked(cfg).map_or(true, |r| r.contains(&self.id));
        }
        self.revoked
    }
}

fn serve_connection(sh: &Shared<'_>, s: UnixStream, uid: u32, pid: i32, pending: Place<'_>) {
    let _ = s.set_write_timeout(Some(MESSAGE_TIMEOUT));
    let hello_by = Instant::now() + HELLO_TIMEOUT;
    let mut head = [0u8; 4];
    if read_by(&s, &mut head, hello_by, sh.stop).is_err() {
        return;
    }
    let hello: Hello = match body_by(&s, head, HELLO_MAX, hello_by, sh.stop).map(|b| postcard::from_bytes(&b)) {
        Ok(Ok(h)) if matches!(h, Hello { protocol: PROTOCOL, .. }) => h,
        _ => return refuse(&s, Refusal::Protocol),
    };
    let foreign = uid != nix::unistd::geteuid().as_raw();
    if foreign && (!sh.cfg.open_to_others || !hello.brokered) {
        return refuse(&s, Refusal::Denied(Denied::NotOpen));
    }
    let token = match verify(sh.cfg, &hello.token) {
        Ok(t) => t,
        Err(r) => return refuse(&s, r),
    };
    if !token.rights.contains(Right::Read) {
        return refuse(&s, Refusal::Denied(Denied::CannotRead));
    }
    if !hello.brokered {
        let _ = send(&s, &Welcome::Granted { token, agent: None });
        return;
    }
    let Some(_place) = Place::take(&sh.brokered, sh.cfg.limit) else { return refuse(&s, Refusal::Busy) };
    drop(pending);
    let handle = match sh.seg.granted_handle(token.clone()) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("worknoded: broker: cannot open a handle for {:?}: {e}", token.agent);
            return refuse(&s, Refusal::Closing);
        }
    };
    let agent = match handle.join(&token.agent, &hello.role) {
        Ok(a) => a,
        Err(e) => return refuse(&s, Refusal::Agent(e)),
    };
    let fd = match sh.seg.read_only_descriptor() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("worknoded: broker: cannot duplicate the segment's read-only descriptor: {e}");
            return refuse(&s, Refusal::Closing);
        }
    };
    if send_with_fd(&s, &Welcome::Granted { token: token.clone(), agent: Some(agent) }, &fd).is_err() {
        return;
    }
    drop(fd);
    let mut conn = Conn { id: sh.next_id.fetch_add(1, Ordering::Relaxed), pid, session: None };
    let why = serve_requests(sh, &s, &handle, &token, &mut conn);
    if let Some(id) = conn.session.take() {
        sh.release_session(id, conn.id);
        if sh.seg.reap_agent(id).is_ok() {
            eprintln!("worknoded: agent {id} lost: its broker connection (uid {uid}, pid {pid}) ended ({why}); claims released");
        }
    }
}

/// One brokered connection's state.
struct Conn {
    id: u64,
    pid: i32,
    /// The agent whose session this connection is, once bound.
    session: Option<AgentId>,
}

impl Shared<'_> {
    fn release_session(&self, id: AgentId, conn: u64) {
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&id).is_some_and(|(c, _)| *c == conn) {
            map.remove(&id);
        }
    }
}

/// Serves requests until the peer leaves, the token lapses, or the daemon stops; says
/// which.
fn serve_requests(sh: &Shared<'_>, s: &UnixStream, h: &Segment, token: &Token, conn: &mut Conn) -> &'static str {
    let limit = h.max_document_len() + REQUEST_OVERHEAD;
    let mut revocation = Revocation { id: token.id, seen: None, revoked: false };
    let mut answered = false;
    loop {
        if sh.stop.load(Ordering::Acquire) {
            return "the daemon stopped";
        }
        if worknode::unix_ms() >= token.expires_ms {
            return "its token expired";
        }
        if revocation.is_revoked(sh.cfg) {
            return "its token was revoked";
        }
        // Right after an answer the next request often follows: poll for it briefly
        // before blocking in `poll` (a blocked thread's wake-up costs more than the work).
        let mut head = [0u8; 4];
        let got = match recv_spinning(s, &mut head, if answered { SERVER_SPIN } else { Duration::ZERO }) {
            Ok(n) => n,
            Err(_) => return "the peer closed it",
        };
        if got == 0 {
            answered = false;
            if !wait_readable(s, STOP_POLL) {
                continue;
            }
        }
        let by = Instant::now() + MESSAGE_TIMEOUT;
        if read_by(s, &mut head[got..], by, sh.stop).is_err() {
            return "the peer closed it, or stalled mid-message";
        }
        let body = match body_by(s, head, limit, by, sh.stop) {
            Ok(b) => b,
            Err(f @ BrokerFault::TooLarge { .. }) => {
                let _ = send(s, &Reply::Err(WireError::Pool(PoolError::Broker(f))));
                return "an oversized request";
            }
            Err(_) => return "the peer stalled mid-message",
        };
        let reply = match postcard::from_bytes::<Request>(&body) {
            Err(_) => Reply::Err(WireError::Pool(PoolError::Broker(BrokerFault::BadRequest))),
            Ok(req) => {
                let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| apply(sh, h, conn, req)));
                match applied {
                    Ok(r) => r,
                    Err(_) => {
                        eprintln!("worknoded: broker: a request of {:?} panicked; connection closed", token.agent);
                        let _ = send(s, &Reply::Err(WireError::Pool(PoolError::Broker(BrokerFault::Protocol))));
                        return "a request panicked";
                    }
                }
            }
        };
        if send(s, &reply).is_err() {
            // A claim the peer never learnt of (it left during a blocking claim) goes
            // back at once, rather than at the end of its lease.
            if let Reply::Claim(c) = &reply {
                let _ = h.release(c);
            }
            return "the peer closed it";
        }
        answered = true;
    }
}

/// Sends one message with a descriptor attached (`SCM_RIGHTS`).
fn send_with_fd<T: serde::Serialize>(s: &UnixStream, msg: &T, fd: &std::fs::File) -> Result<(), BrokerFault> {
    let frame = frame(msg)?;
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let sent = sendmsg::<()>(s.as_raw_fd(), &[std::io::IoSlice::new(&frame)], &cmsg, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(|_| BrokerFault::Disconnected)?;
    // The descriptor went with the first byte; the rest of a short send follows plainly.
    (&*s).write_all(&frame[sent..]).map_err(|_| BrokerFault::Disconnected)
}

/// Binds `agent`'s session to this connection, unless another connection holds it.
fn bind_session(sh: &Shared<'_>, h: &Segment, conn: &mut Conn, agent: AgentId) -> Reply {
    let mut map = sh.sessions.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((other, pid)) = map.get(&agent) {
        if *other != conn.id {
            let pid = u32::try_from(*pid).unwrap_or(0);
            return Reply::Err(WireError::Agent(AgentError::SessionTaken { pid }));
        }
    }
    match h.bind_session(agent) {
        Ok(()) => {
            map.insert(agent, (conn.id, conn.pid));
            // This connection is now the agent's session: its close reaps the agent.
            conn.session = Some(agent);
            Reply::Unit
        }
        Err(e) => Reply::Err(e.into()),
    }
}

/// Applies one request on the connection's handle, with the method of the same name.
fn apply(sh: &Shared<'_>, h: &Segment, conn: &mut Conn, req: Request) -> Reply {
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
        R::Progress { claim, percent, note } => Reply::of(h.progress_noted(&claim, percent, &note), node),
        R::Complete { claim, note } => Reply::of(h.complete(&claim, &note), node),
        R::Fail { claim, reason } => Reply::of(h.fail(&claim, &reason), node),
        R::Assign { node: n, who } => Reply::of(h.assign(n, &who), node),
        R::Unassign { node: n, who } => Reply::of(h.unassign(n, &who), node),
        R::SetOpenToAll { node: n, open } => Reply::of(h.set_open_to_all(n, open), node),
        R::ClaimNextWait { filter, agent, lease_ms, wait_ms } => {
            // Parked here for the client, in pieces of STOP_POLL, so a stopping daemon
            // never waits on it.
            let deadline = Instant::now() + Duration::from_millis(wait_ms);
            loop {
                let piece = deadline.saturating_duration_since(Instant::now()).min(STOP_POLL);
                match h.claim_next_wait(&filter, agent, lease(lease_ms), piece) {
                    Err(worknode::TaskError::WaitTimedOut)
                        if Instant::now() < deadline && !sh.stop.load(Ordering::Acquire) => {}
                    r => break Reply::of(r, Reply::Claim),
                }
            }
        }
        R::AddBlocker { task, blocker } => Reply::of(h.add_blocker(task, blocker), node),
        R::RemoveBlocker { task, blocker } => Reply::of(h.remove_blocker(task, blocker), node),
        R::PutDocument { parent, name, content_type, bytes } => {
            Reply::of(h.put_document(parent, &name, &content_type, &bytes), Reply::Handle)
        }
        R::ReplaceDocument { doc, content_type, bytes } => {
            Reply::of(h.replace_document(doc, &content_type, &bytes), Reply::Count)
        }
        R::PutDocumentFor { claim, name, content_type, bytes } => {
            Reply::of(h.put_document_for(&claim, &name, &content_type, &bytes), Reply::Handle)
        }
        R::ReplaceDocumentFor { claim, doc, content_type, bytes } => {
            Reply::of(h.replace_document_for(&claim, doc, &content_type, &bytes), Reply::Count)
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
        R::AddLabel { node: n, label } => Reply::of(h.add_label(n, &label).map(u64::from), Reply::Count),
        R::RemoveLabel { node: n, label } => Reply::of(h.remove_label(n, &label).map(u64::from), Reply::Count),
        R::Join { name, role } => Reply::of(h.join(&name, &role), Reply::Agent),
        R::BindSession { agent } => bind_session(sh, h, conn, agent),
        R::Heartbeat { agent } => Reply::of(h.heartbeat(agent), unit),
        R::SetAgentCursor { agent, cursor } => Reply::of(h.set_agent_cursor(agent, cursor), unit),
        R::Cancel { node: n, reason, force } => Reply::of(h.cancel(n, &reason, force), node),
        R::Reopen { node: n } => Reply::of(h.reopen(n), node),
        R::Activate { node: n } => Reply::of(h.activate(n), node),
        R::Edit { node: n, edit } => Reply::of(h.edit(n, &edit), node),
        R::Remove { node: n, recursive, force } => Reply::of(h.remove(n, recursive, force), Reply::Count),
        R::Send { from, to, thread, body } => Reply::of(h.send(from, &to, thread.as_deref(), &body), Reply::Handle),
        R::Ack { agent, message } => Reply::of(h.ack(agent, message), unit),
        R::Reserve { agent, globs, opts } => {
            let globs: Vec<&str> = globs.iter().map(String::as_str).collect();
            Reply::of(h.reserve(agent, &globs, &opts), Reply::Reservation)
        }
        R::RenewReservation { reservation, lease_ms } => {
            Reply::of(h.renew_reservation(&reservation, Duration::from_millis(lease_ms)), Reply::Reservation)
        }
        R::Unreserve { reservation } => Reply::of(h.unreserve(&reservation), |()| Reply::Unit),
        R::UnreserveMatching { agent, globs } => {
            let globs: Option<Vec<&str>> = globs.as_ref().map(|g| g.iter().map(String::as_str).collect());
            Reply::of(h.unreserve_matching(agent, globs.as_deref()), Reply::Count)
        }
        R::Leave { agent } => Reply::of(h.leave(agent), |()| {
            if conn.session == Some(agent) {
                conn.session = None;
                sh.release_session(agent, conn.id);
            }
            Reply::Unit
        }),
    }
}
