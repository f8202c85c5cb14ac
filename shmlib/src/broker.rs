//! Brokered mode, the agent's side: the wire an untrusted agent speaks to the daemon, and
//! the link a brokered [`Segment`] sends its changes over (issue 11, part 3).
//!
//! An agent that may not write the segment (another user, a sandbox) connects to the
//! daemon's broker socket, presents a capability token, and is handed a **read-only**
//! descriptor of the segment (`SCM_RIGHTS`). [`Segment::attach_brokered`] maps it
//! `PROT_READ`: reads stay zero-copy and waits stay local futex waits, while the file
//! stays mode 0600 and cannot be reopened for writing. Every change the agent makes
//! through that handle — the same methods a direct handle has — becomes one [`Request`]
//! over the socket; the daemon checks it against the token and applies it with the same
//! library code, on a handle that acts as the token's agent, and answers with one
//! [`Reply`]. A new operation is brokered by adding a variant to both.
//!
//! # Wire
//!
//! The socket is the abstract Unix stream socket [`broker_socket_name`]: derived from the
//! segment name alone, so a client needs no other configuration. Abstract names have no
//! owner, so the client checks that the listening peer (`SO_PEERCRED`) is the user that
//! owns `/dev/shm/<segment>` — a squatter of another uid is refused. Each message is a
//! little-endian `u32` length and that many bytes of [postcard](https://docs.rs/postcard)
//! (serde), bounded both ways: [`HELLO_MAX`], [`REPLY_MAX`], and the daemon's request
//! limit (the segment's largest document plus [`REQUEST_OVERHEAD`]).
//!
//! 1. client → [`Hello`] (token, role, whether it wants a broker or only a verdict);
//! 2. daemon → [`Welcome`], carrying the descriptor when brokered, or a [`Refusal`];
//! 3. then request, reply, … until either side closes. When the connection closes, an
//!    agent that opened a session on it is reaped (claims released), as when any session
//!    process dies.

use crate::agents::{AgentError, AgentId};
use crate::blob::DocError;
use crate::claims::{Claim, TaskError, TaskFilter};
use crate::error::{AttachError, PoolError};
use crate::event::{EventKind, RingError};
use crate::grant::{Denied, Grant};
use crate::layout::NodeRecord;
use crate::node::{Handle, Node, NodeKind, Status};
use crate::orset::SetError;
use crate::pool::DeleteMode;
use crate::segment::Segment;
use crate::token::{Token, TokenError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::sync::Mutex;
use std::time::Duration;
use uuid::Uuid;

/// Version of the wire; a hello of another version is refused.
pub const PROTOCOL: u32 = 1;
/// Longest hello, in bytes (a token is at most [`crate::TOKEN_TEXT_MAX`]).
pub const HELLO_MAX: usize = 4096;
/// Longest reply a client accepts, in bytes.
pub const REPLY_MAX: usize = 64 * 1024;
/// Bytes a request may take beyond the largest document the segment holds.
pub const REQUEST_OVERHEAD: usize = 16 * 1024;
/// How long the daemon waits for the rest of a message it has started to read (a hello
/// must arrive whole within [`HELLO_TIMEOUT`]).
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a new connection may take to send its whole hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client waits for a reply: longer than the longest wait an operation may
/// make in the daemon (a durable append's 10 s, a journal stall's 10 s, a lock's 2 s).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a client polls for a reply before it blocks: a wake-up from a blocking read
/// costs tens of microseconds on a virtual machine, more than the whole exchange. The
/// poll yields the CPU between tries, so on a busy core the daemon still runs.
pub const CLIENT_SPIN: Duration = Duration::from_micros(100);
/// How long the daemon polls for an agent's next request after answering one, before it
/// blocks again (agents often send several changes in a row).
pub const SERVER_SPIN: Duration = Duration::from_micros(50);

/// What a brokered client reads for a segment inconsistency the daemon met (the daemon
/// logs the detail; a `&'static str` does not cross the wire).
pub const SEEN_BY_BROKER: &str = "reported by the daemon's broker";

pub(crate) fn seen_by_broker() -> &'static str {
    SEEN_BY_BROKER
}

/// The abstract socket name of `segment`'s broker. Long names are hashed (FNV-1a), as
/// for the session socket, to fit the 107 bytes an abstract name may take.
pub fn broker_socket_name(segment: &str) -> Vec<u8> {
    if segment.len() <= 80 {
        format!("worknode.{segment}.broker").into_bytes()
    } else {
        let h = crate::sys::fnv1a(segment.as_bytes());
        format!("worknode.{h:016x}.broker").into_bytes()
    }
}

/// The broker socket address of `segment`.
pub fn broker_socket_addr(segment: &str) -> std::io::Result<SocketAddr> {
    SocketAddr::from_abstract_name(broker_socket_name(segment))
}

/// Why the broker link failed (as opposed to the operation it carried).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BrokerFault {
    /// The connection broke: the daemon stopped, or closed it. Whether the last change
    /// was applied is unknown; read the node to find out.
    Disconnected,
    /// A message was not what the protocol allows (size, encoding, or the wrong reply).
    Protocol,
    /// The daemon could not decode the request.
    BadRequest,
    /// The request is larger than the daemon accepts.
    TooLarge {
        /// Bytes of the request.
        len: usize,
        /// Bytes accepted.
        max: usize,
    },
    /// This operation is not available through the broker.
    Unsupported,
}

impl fmt::Display for BrokerFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrokerFault::Disconnected => write!(f, "the connection to the daemon's broker broke"),
            BrokerFault::Protocol => write!(f, "the broker's answer broke the protocol"),
            BrokerFault::BadRequest => write!(f, "the broker could not decode the request"),
            BrokerFault::TooLarge { len, max } => write!(f, "request of {len} bytes; the broker accepts {max}"),
            BrokerFault::Unsupported => write!(f, "this operation is not available through the broker"),
        }
    }
}

impl std::error::Error for BrokerFault {}

/// Why a brokered attach (or a token check) did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BrokerError {
    /// Nobody listens on the broker socket: the daemon is not running.
    NoBroker {
        /// The segment name.
        segment: String,
    },
    /// The listener is not the segment's owner: it is not the daemon.
    Impostor {
        /// The listener's uid.
        uid: u32,
        /// The segment owner's uid.
        owner: u32,
    },
    /// The daemon refused the token or the connection.
    Refused(Refusal),
    /// The link failed.
    Link(BrokerFault),
    /// The daemon did not hand over a segment descriptor.
    NoDescriptor,
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrokerError::NoBroker { segment } => write!(f, "no broker listens for segment {segment:?}"),
            BrokerError::Impostor { uid, owner } => {
                write!(f, "the broker socket is held by uid {uid}, not by the segment's owner {owner}")
            }
            BrokerError::Refused(r) => write!(f, "the broker refused: {r}"),
            BrokerError::Link(e) => write!(f, "{e}"),
            BrokerError::NoDescriptor => write!(f, "the broker sent no segment descriptor"),
        }
    }
}

impl std::error::Error for BrokerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BrokerError::Refused(Refusal::Token(e)) => Some(e),
            BrokerError::Refused(Refusal::Denied(e)) => Some(e),
            BrokerError::Link(e) => Some(e),
            _ => None,
        }
    }
}

/// The first message: who the client is and what it wants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL`].
    pub protocol: u32,
    /// The token's text form.
    pub token: String,
    /// Role the agent joins with (brokered).
    pub role: String,
    /// A brokered handle (`true`) or only the daemon's verdict on the token (`false`).
    pub brokered: bool,
}

/// The daemon's answer to a [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Welcome {
    /// The token is good; for a brokered hello the read-only descriptor comes with this
    /// message, and the agent has joined.
    Granted {
        /// The verified token.
        token: Token,
        /// The agent joined for a brokered hello.
        agent: Option<AgentId>,
    },
    /// Refused; the daemon closes the connection.
    Refused(Refusal),
}

/// Why the daemon refused a hello.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The token failed verification.
    Token(TokenError),
    /// The token is good but does not allow this connection.
    Denied(Denied),
    /// The daemon has no token key yet (no token was ever minted).
    NoKey,
    /// The agent could not join.
    Agent(AgentError),
    /// Another protocol version, or a malformed hello.
    Protocol,
    /// The broker serves as many agents as it allows.
    Busy,
    /// The daemon is shutting down.
    Closing,
    /// The daemon could not read its token files (it logs why).
    Unavailable,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Token(e) => write!(f, "{e}"),
            Refusal::Denied(d) => write!(f, "{d}"),
            Refusal::NoKey => write!(f, "the daemon has no token key (no token has been minted)"),
            Refusal::Agent(e) => write!(f, "the agent could not join: {e}"),
            Refusal::Protocol => write!(f, "malformed hello or another protocol version"),
            Refusal::Busy => write!(f, "the broker serves as many agents as it allows"),
            Refusal::Closing => write!(f, "the daemon is shutting down"),
            Refusal::Unavailable => write!(f, "the daemon could not read its token files"),
        }
    }
}

/// A node to create, owned (the wire form of [`crate::NewNode`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// See [`crate::NewNode::kind`].
    pub kind: NodeKind,
    /// See [`crate::NewNode::custom_kind`].
    pub custom_kind: u32,
    /// See [`crate::NewNode::name`].
    pub name: String,
    /// See [`crate::NewNode::description`].
    pub description: String,
    /// See [`crate::NewNode::status`].
    pub status: Status,
    /// See [`crate::NewNode::priority`].
    pub priority: u8,
    /// See [`crate::NewNode::value`].
    pub value: f64,
}

impl From<&crate::NewNode<'_>> for NodeSpec {
    fn from(n: &crate::NewNode<'_>) -> NodeSpec {
        NodeSpec {
            kind: n.kind,
            custom_kind: n.custom_kind,
            name: n.name.to_string(),
            description: n.description.to_string(),
            status: n.status,
            priority: n.priority,
            value: n.value,
        }
    }
}

impl NodeSpec {
    /// The borrowed form the library's [`Segment::add`] takes.
    pub fn as_new_node(&self) -> crate::NewNode<'_> {
        crate::NewNode {
            kind: self.kind,
            custom_kind: self.custom_kind,
            name: &self.name,
            description: &self.description,
            status: self.status,
            priority: self.priority,
            value: self.value,
        }
    }
}

/// One change a brokered agent asks for: one variant per operation of the agent handle,
/// applied by the daemon with the method of the same name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // each variant is the method of the same name, with its arguments
pub enum Request {
    Add { parent: Handle, spec: NodeSpec },
    SetStatus { node: Handle, status: Status },
    Delete { node: Handle, mode: DeleteMode },
    Claim { task: Handle, agent: AgentId, lease_ms: u64 },
    ClaimNext { filter: TaskFilter, agent: AgentId, lease_ms: u64 },
    Renew { claim: Claim, lease_ms: u64 },
    Release { claim: Claim },
    Start { claim: Claim },
    Progress { claim: Claim, percent: u8, note: String },
    Complete { claim: Claim, note: String },
    Fail { claim: Claim, reason: String },
    Assign { node: Handle, who: crate::Principal },
    Unassign { node: Handle, who: crate::Principal },
    SetOpenToAll { node: Handle, open: bool },
    ClaimNextWait { filter: TaskFilter, agent: AgentId, lease_ms: u64, wait_ms: u64 },
    AddBlocker { task: Handle, blocker: Handle },
    RemoveBlocker { task: Handle, blocker: Handle },
    PutDocument { parent: Handle, name: String, content_type: String, bytes: Vec<u8> },
    ReplaceDocument { doc: Handle, content_type: String, bytes: Vec<u8> },
    DeleteDocument { doc: Handle },
    PutDocumentFor { claim: Claim, name: String, content_type: String, bytes: Vec<u8> },
    ReplaceDocumentFor { claim: Claim, doc: Handle, content_type: String, bytes: Vec<u8> },
    Append { kind: EventKind, node: Option<(Uuid, u64)>, topic: String, payload: Vec<u8> },
    SetAdd { node: Handle, element: u64 },
    SetRemove { node: Handle, element: u64 },
    SetCompact { node: Handle },
    AddLabel { node: Handle, label: String },
    RemoveLabel { node: Handle, label: String },
    Join { name: String, role: String },
    BindSession { agent: AgentId },
    Heartbeat { agent: AgentId },
    SetAgentCursor { agent: AgentId, cursor: u64 },
    Leave { agent: AgentId },
    Cancel { node: Handle, reason: String, force: bool },
    Reopen { node: Handle },
    Activate { node: Handle },
    Edit { node: Handle, edit: crate::Edit },
    Remove { node: Handle, recursive: bool, force: bool },
    Send { from: AgentId, to: crate::Principal, thread: Option<String>, body: Vec<u8> },
    Ack { agent: AgentId, message: Handle },
    Reserve { agent: AgentId, globs: Vec<String>, opts: crate::ReserveOptions },
    RenewReservation { reservation: crate::Reservation, lease_ms: u64 },
    Unreserve { reservation: crate::Reservation },
    UnreserveMatching { agent: AgentId, globs: Option<Vec<String>> },
}

/// The daemon's answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // the value the method returned
pub enum Reply {
    Unit,
    Handle(Handle),
    /// A node record as the operation left it: its handle and the record's bytes.
    Node(Handle, Vec<u8>),
    Claim(Claim),
    Count(u64),
    Agent(AgentId),
    Reservation(crate::Reservation),
    /// The operation failed.
    Err(WireError),
}

/// An operation's error, in its own type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum WireError {
    Pool(PoolError),
    Task(TaskError),
    Doc(DocError),
    Ring(RingError),
    Agent(AgentError),
    Set(SetError),
    Reserve(crate::ReserveError),
    Label(crate::labels::LabelError),
    Mail(crate::MailError),
}

macro_rules! into_wire {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for WireError {
            fn from(e: $t) -> WireError {
                WireError::$v(e)
            }
        }
    )*};
}
into_wire!(PoolError => Pool, TaskError => Task, DocError => Doc, RingError => Ring, AgentError => Agent, SetError => Set, crate::labels::LabelError => Label, crate::MailError => Mail, crate::ReserveError => Reserve);

impl Reply {
    /// The reply for an operation's result: `ok` of its value, or its error.
    pub fn of<T, E: Into<WireError>>(r: Result<T, E>, ok: impl FnOnce(T) -> Reply) -> Reply {
        match r {
            Ok(v) => ok(v),
            Err(e) => Reply::Err(e.into()),
        }
    }

    /// The reply for an operation that returned a node.
    pub fn node(n: &Node) -> Reply {
        Reply::Node(n.handle, bytemuck::bytes_of(&n.rec).to_vec())
    }

    fn into_node(self) -> Option<Node> {
        match self {
            Reply::Node(handle, bytes) if bytes.len() == std::mem::size_of::<NodeRecord>() => {
                Some(Node { handle, rec: bytemuck::pod_read_unaligned(&bytes) })
            }
            _ => None,
        }
    }
}

/// An error type an operation's reply can carry.
pub(crate) trait FromWire: Sized {
    fn from_wire(e: WireError) -> Option<Self>;
    fn fault(f: BrokerFault) -> Self;
}

macro_rules! from_wire {
    ($t:ty, $own:ident, $fault:expr) => {
        impl FromWire for $t {
            fn from_wire(e: WireError) -> Option<Self> {
                match e {
                    WireError::$own(e) => Some(e),
                    WireError::Pool(e) => Some(e.into()),
                    _ => None,
                }
            }
            fn fault(f: BrokerFault) -> Self {
                $fault(f)
            }
        }
    };
}
from_wire!(TaskError, Task, |f| TaskError::Pool(PoolError::Broker(f)));
from_wire!(DocError, Doc, |f| DocError::Pool(PoolError::Broker(f)));
from_wire!(AgentError, Agent, |f| AgentError::Pool(PoolError::Broker(f)));
from_wire!(SetError, Set, |f| SetError::Pool(PoolError::Broker(f)));
from_wire!(crate::ReserveError, Reserve, |f| crate::ReserveError::Pool(PoolError::Broker(f)));
from_wire!(crate::labels::LabelError, Label, |f| crate::labels::LabelError::Pool(PoolError::Broker(f)));
from_wire!(crate::MailError, Mail, |f| crate::MailError::Pool(PoolError::Broker(f)));

impl FromWire for PoolError {
    fn from_wire(e: WireError) -> Option<Self> {
        match e {
            WireError::Pool(e) => Some(e),
            _ => None,
        }
    }
    fn fault(f: BrokerFault) -> Self {
        PoolError::Broker(f)
    }
}

impl FromWire for RingError {
    fn from_wire(e: WireError) -> Option<Self> {
        match e {
            WireError::Ring(e) => Some(e),
            // Refusals the broker makes before dispatching, in the pool's words.
            WireError::Pool(PoolError::Denied(d)) => Some(RingError::Denied(d)),
            WireError::Pool(PoolError::Broker(f)) => Some(RingError::Broker(f)),
            WireError::Pool(PoolError::Closing) => Some(RingError::Closing),
            WireError::Pool(PoolError::DaemonGone) => Some(RingError::DaemonGone),
            _ => None,
        }
    }
    fn fault(f: BrokerFault) -> Self {
        RingError::Broker(f)
    }
}

/// One message as it goes on the wire: length prefix and body.
pub fn frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, BrokerFault> {
    let body = postcard::to_stdvec(msg).map_err(|_| BrokerFault::Protocol)?;
    let len =
        u32::try_from(body.len()).map_err(|_| BrokerFault::TooLarge { len: body.len(), max: u32::MAX as usize })?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Writes one message.
pub fn write_message<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), BrokerFault> {
    w.write_all(&frame(msg)?).map_err(|_| BrokerFault::Disconnected)
}

/// Sends all of `bytes` on a socket with `MSG_NOSIGNAL`: a peer that closed is an error,
/// never a `SIGPIPE` (which would kill a process that did not ignore it, such as an
/// interpreter embedding this library).
pub fn send_all(s: &UnixStream, mut bytes: &[u8]) -> Result<(), BrokerFault> {
    use nix::sys::socket::{send, MsgFlags};
    use std::os::fd::AsRawFd;
    while !bytes.is_empty() {
        match send(s.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => bytes = &bytes[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return Err(BrokerFault::Disconnected),
        }
    }
    Ok(())
}

/// Reads the body of one message whose 4-byte length prefix is `head`, refusing one
/// longer than `max` (the body is not read then: the stream cannot be resynchronised).
pub fn read_body(r: &mut impl Read, head: [u8; 4], max: usize) -> Result<Vec<u8>, BrokerFault> {
    let len = u32::from_le_bytes(head) as usize;
    if len > max {
        return Err(BrokerFault::TooLarge { len, max });
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).map_err(|_| BrokerFault::Disconnected)?;
    Ok(body)
}

/// Reads one message of at most `max` bytes.
pub fn read_message(r: &mut impl Read, max: usize) -> Result<Vec<u8>, BrokerFault> {
    let mut head = [0u8; 4];
    r.read_exact(&mut head).map_err(|_| BrokerFault::Disconnected)?;
    read_body(r, head, max)
}

/// Reads into `buf` from `s` without blocking, trying again (and yielding the CPU
/// between tries) until `buf` is full or `spin` has passed. Returns how many bytes it
/// got (`buf.len()`: all). An EOF is `Disconnected`.
pub fn recv_spinning(s: &UnixStream, buf: &mut [u8], spin: Duration) -> Result<usize, BrokerFault> {
    use nix::sys::socket::{recv, MsgFlags};
    use std::os::fd::AsRawFd;
    let start = std::time::Instant::now();
    let mut got = 0;
    while got < buf.len() {
        match recv(s.as_raw_fd(), &mut buf[got..], MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return Err(BrokerFault::Disconnected),
            Ok(n) => got += n,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) if start.elapsed() < spin => {
                std::thread::yield_now();
            }
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => return Ok(got),
            Err(_) => return Err(BrokerFault::Disconnected),
        }
    }
    Ok(got)
}

/// The client's end of a broker connection, held by a brokered [`Segment`].
pub(crate) struct Link {
    stream: Mutex<UnixStream>,
    /// Set at the first fault: after a timeout or a torn message the stream is out of
    /// step (a late reply would be taken for the next request's), so the link is shut
    /// and every later call fails with [`BrokerFault::Disconnected`].
    broken: std::sync::atomic::AtomicBool,
}

impl Link {
    fn call(&self, req: &Request) -> Result<Reply, BrokerFault> {
        use std::sync::atomic::Ordering::Relaxed;
        // A poisoned lock means a thread panicked mid-message: the stream is out of step.
        let mut s = self.stream.lock().map_err(|_| BrokerFault::Protocol)?;
        if self.broken.load(Relaxed) {
            return Err(BrokerFault::Disconnected);
        }
        // A request too large to frame is refused before anything is sent.
        let request = frame(req)?;
        let exchanged = (|| {
            send_all(&s, &request)?;
            let mut head = [0u8; 4];
            let got = recv_spinning(&s, &mut head, CLIENT_SPIN)?;
            // The daemon is trusted (its uid was checked): a plain blocking read, bounded
            // by REPLY_TIMEOUT, for whatever the spin did not catch.
            (&*s).read_exact(&mut head[got..]).map_err(|_| BrokerFault::Disconnected)?;
            let body = read_body(&mut *s, head, REPLY_MAX)?;
            postcard::from_bytes(&body).map_err(|_| BrokerFault::Protocol)
        })();
        if exchanged.is_err() {
            self.broken.store(true, Relaxed);
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        exchanged
    }

    /// Sends `req` and takes the reply `pick` accepts, or the operation's own error.
    pub(crate) fn ask<T, E: FromWire>(&self, req: Request, pick: impl FnOnce(Reply) -> Option<T>) -> Result<T, E> {
        match self.call(&req) {
            Err(f) => Err(E::fault(f)),
            Ok(Reply::Err(w)) => Err(E::from_wire(w).unwrap_or_else(|| E::fault(BrokerFault::Protocol))),
            Ok(r) => pick(r).ok_or_else(|| E::fault(BrokerFault::Protocol)),
        }
    }

    pub(crate) fn ask_node<E: FromWire>(&self, req: Request) -> Result<Node, E> {
        self.ask(req, Reply::into_node)
    }

    pub(crate) fn ask_unit<E: FromWire>(&self, req: Request) -> Result<(), E> {
        self.ask(req, |r| matches!(r, Reply::Unit).then_some(()))
    }

    pub(crate) fn ask_claim(&self, req: Request) -> Result<Claim, TaskError> {
        self.ask(req, |r| if let Reply::Claim(c) = r { Some(c) } else { None })
    }

    pub(crate) fn ask_count<E: FromWire>(&self, req: Request) -> Result<u64, E> {
        self.ask(req, |r| if let Reply::Count(n) = r { Some(n) } else { None })
    }

    pub(crate) fn ask_handle<E: FromWire>(&self, req: Request) -> Result<Handle, E> {
        self.ask(req, |r| if let Reply::Handle(h) = r { Some(h) } else { None })
    }

    pub(crate) fn ask_reservation(&self, req: Request) -> Result<crate::Reservation, crate::ReserveError> {
        self.ask(req, |r| if let Reply::Reservation(x) = r { Some(x) } else { None })
    }

    pub(crate) fn ask_agent(&self, req: Request) -> Result<AgentId, AgentError> {
        self.ask(req, |r| if let Reply::Agent(a) = r { Some(a) } else { None })
    }
}

/// Connects to `segment`'s broker and checks that the daemon (the segment's owner)
/// listens there.
fn connect(segment: &str) -> Result<UnixStream, AttachError> {
    let owner = std::fs::metadata(crate::sys::shm_path(segment))
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .map_err(|_| AttachError::NotFound { name: segment.to_string() })?;
    let addr = broker_socket_addr(segment)
        .map_err(|_| AttachError::InvalidName { name: segment.to_string(), reason: "too long for a socket name" })?;
    let s = UnixStream::connect_addr(&addr)
        .map_err(|_| AttachError::Broker(BrokerError::NoBroker { segment: segment.to_string() }))?;
    let peer = nix::sys::socket::getsockopt(&s, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|errno| AttachError::Os { op: "SO_PEERCRED", errno })?;
    if peer.uid() != owner {
        return Err(AttachError::Broker(BrokerError::Impostor { uid: peer.uid(), owner }));
    }
    let _ = s.set_read_timeout(Some(REPLY_TIMEOUT));
    let _ = s.set_write_timeout(Some(REPLY_TIMEOUT));
    Ok(s)
}

fn hello(s: &mut UnixStream, token: &str, role: &str, brokered: bool) -> Result<(), AttachError> {
    let h = Hello { protocol: PROTOCOL, token: token.to_string(), role: role.to_string(), brokered };
    frame(&h).and_then(|f| send_all(s, &f)).map_err(|f| AttachError::Broker(BrokerError::Link(f)))
}

fn welcome(body: &[u8]) -> Result<(Token, Option<AgentId>), AttachError> {
    match postcard::from_bytes(body) {
        Ok(Welcome::Granted { token, agent }) => Ok((token, agent)),
        Ok(Welcome::Refused(r)) => Err(AttachError::Broker(BrokerError::Refused(r))),
        Err(_) => Err(AttachError::Broker(BrokerError::Link(BrokerFault::Protocol))),
    }
}

impl Segment {
    /// Attaches through the daemon's broker with a capability token: the way an agent
    /// that may not write the segment (another user, a sandbox) takes part. The handle
    /// reads through a read-only mapping of the descriptor the daemon passes, exactly as
    /// a direct handle reads; every change goes to the daemon, which checks it against
    /// the token and applies it as the token's agent (who joins now, with `role`).
    ///
    /// Close the handle to leave the broker; an agent that opened a session on it
    /// ([`Segment::open_session`]) is reaped then, claims released.
    ///
    /// # Errors
    ///
    /// * [`AttachError::InvalidName`], [`AttachError::NotFound`]: as for
    ///   [`Segment::attach`].
    /// * [`AttachError::Broker`]: no broker listens ([`BrokerError::NoBroker`]), the
    ///   listener is not the daemon ([`BrokerError::Impostor`]), or the daemon refused
    ///   the token ([`BrokerError::Refused`]: malformed, forged, expired, revoked, no
    ///   `read`, or the broker is closed to this user).
    /// * The validation errors of [`Segment::attach`] for the mapping.
    pub fn attach_brokered(name: &str, token: &str, role: &str) -> Result<Segment, AttachError> {
        crate::segment::check_name(name)?;
        let mut s = connect(name)?;
        hello(&mut s, token, role, true)?;
        let mut head = [0u8; 4];
        let (n, file) = crate::sys::recv_with_fd(&s, &mut head)
            .map_err(|_| AttachError::Broker(BrokerError::Link(BrokerFault::Disconnected)))?;
        if n == 0 {
            return Err(AttachError::Broker(BrokerError::Link(BrokerFault::Disconnected)));
        }
        if n < 4 {
            (&s).read_exact(&mut head[n..])
                .map_err(|_| AttachError::Broker(BrokerError::Link(BrokerFault::Disconnected)))?;
        }
        let body = read_body(&mut s, head, REPLY_MAX).map_err(|f| AttachError::Broker(BrokerError::Link(f)))?;
        let (token, agent) = welcome(&body)?;
        let file = file.ok_or(AttachError::Broker(BrokerError::NoDescriptor))?;
        let agent = agent.ok_or(AttachError::Broker(BrokerError::Link(BrokerFault::Protocol)))?;
        let seg = Segment::map_descriptor(name, file)?;
        seg.set_grant(Grant::verified(token));
        if let Ok(info) = seg.agent(agent) {
            seg.set_granted_actor(info.node);
        }
        // `set` on a fresh cell cannot fail.
        let _ = seg.broker.set(Link { stream: Mutex::new(s), broken: std::sync::atomic::AtomicBool::new(false) });
        Ok(seg)
    }

    /// Has the daemon verify `token` and acts under it from now on: every change this
    /// handle makes is checked against the token's rights and subtree, and it may act
    /// only as the token's agent. Needed when the daemon runs with `--require-tokens`;
    /// optional otherwise. A direct handle's checks guard against mistakes, not against
    /// a hostile process of the daemon's user (see the module docs of `grant`).
    ///
    /// # Errors
    ///
    /// [`AttachError::Broker`] as for [`Segment::attach_brokered`], or
    /// [`Refusal::Denied`] with [`Denied::AlreadyGranted`] if this handle holds a grant
    /// already.
    pub fn authenticate(&self, token: &str) -> Result<Grant, AttachError> {
        if self.grant().is_some() {
            return Err(AttachError::Broker(BrokerError::Refused(Refusal::Denied(Denied::AlreadyGranted))));
        }
        let mut s = connect(&self.name)?;
        hello(&mut s, token, "", false)?;
        let body = read_message(&mut s, REPLY_MAX).map_err(|f| AttachError::Broker(BrokerError::Link(f)))?;
        let (token, _) = welcome(&body)?;
        let g = Grant::verified(token);
        if !self.set_grant(g.clone()) {
            return Err(AttachError::Broker(BrokerError::Refused(Refusal::Denied(Denied::AlreadyGranted))));
        }
        Ok(g)
    }

    /// Whether this handle's changes go through the daemon's broker.
    pub fn is_brokered(&self) -> bool {
        self.broker.get().is_some()
    }

    /// The broker link, when brokered.
    pub(crate) fn link(&self) -> Option<&Link> {
        self.broker.get()
    }
}
