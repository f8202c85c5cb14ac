//! The kernel's IPC mechanisms, same payload, same harness: a Unix domain stream socket,
//! TCP over 127.0.0.1 with `TCP_NODELAY`, a pair of anonymous pipes, and an eventfd
//! wake-up beside a shared 64-byte buffer. All of them block in the kernel while
//! waiting (no busy-polling), as their users would.
//!
//! Pipes and eventfds are inherited by the child (created without close-on-exec just
//! before it is spawned; their numbers are passed as role arguments).

use crate::payload::{self, Payload, PING, PONG};
use crate::pingpong::{drive, finish};
use crate::proc::RoleCtx;
use crate::shm::{ShmFile, TempDir};
use crate::suite::{Ctx, Fail, Measured};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// One round over a byte stream: send the ping, read and check the pong.
fn stream_round<S: Read + Write>(s: &mut S, i: u64) -> Result<(), String> {
    s.write_all(&payload::make(i, PING)).map_err(|e| format!("write {i}: {e}"))?;
    let mut buf: Payload = [0; payload::LEN];
    s.read_exact(&mut buf).map_err(|e| format!("read {i}: {e}"))?;
    payload::check(&buf, i, PONG)
}

/// The other side of [`stream_round`].
fn stream_serve<R: Read, W: Write>(r: &mut R, w: &mut W, rounds: u64) -> Result<(), String> {
    let mut buf: Payload = [0; payload::LEN];
    for i in 0..rounds {
        r.read_exact(&mut buf).map_err(|e| format!("read {i}: {e}"))?;
        payload::check(&buf, i, PING)?;
        w.write_all(&payload::make(i, PONG)).map_err(|e| format!("write {i}: {e}"))?;
    }
    Ok(())
}

/// Accepts one connection within the timeout (the listener is polled, non-blocking).
fn accept_within<T>(mut accept: impl FnMut() -> std::io::Result<T>, timeout: Duration) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match accept() {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
}

/// Unix domain socket (stream).
pub fn uds(ctx: &Ctx) -> Result<Measured, Fail> {
    let dir = TempDir::new(&ctx.tmp, "uds")?;
    let path = dir.path().join("sock");
    let listener = UnixListener::bind(&path).map_err(|e| format!("bind {}: {e}", path.display()))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let child = ctx.spawn(
        "stream-pong",
        &[("kind", "uds".into()), ("addr", path.display().to_string()), ("rounds", ctx.plan.total().to_string())],
    )?;
    let (mut s, _) = accept_within(|| listener.accept(), IO_TIMEOUT)?;
    s.set_nonblocking(false).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
    let driven = drive(&ctx.plan, |i| stream_round(&mut s, i))?;
    finish(ctx, child, driven, vec!["blocking read/write".into()])
}

/// TCP over loopback.
pub fn tcp(ctx: &Ctx) -> Result<Measured, Fail> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let child = ctx.spawn(
        "stream-pong",
        &[("kind", "tcp".into()), ("addr", addr.to_string()), ("rounds", ctx.plan.total().to_string())],
    )?;
    let (mut s, _) = accept_within(|| listener.accept(), IO_TIMEOUT)?;
    s.set_nonblocking(false).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
    let driven = drive(&ctx.plan, |i| stream_round(&mut s, i))?;
    finish(ctx, child, driven, vec![format!("{addr}, TCP_NODELAY on both ends, blocking read/write")])
}

/// Child side of the UDS and TCP round trips.
pub fn stream_role(ctx: &RoleCtx) -> Result<(), String> {
    let rounds: u64 = ctx.parse("rounds")?;
    let addr = ctx.get("addr")?;
    match ctx.get("kind")? {
        "uds" => {
            let mut s = UnixStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(120))).map_err(|e| e.to_string())?;
            ctx.ready();
            let mut w = s.try_clone().map_err(|e| e.to_string())?;
            stream_serve(&mut s, &mut w, rounds)?;
        }
        "tcp" => {
            let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(120))).map_err(|e| e.to_string())?;
            ctx.ready();
            let mut w = s.try_clone().map_err(|e| e.to_string())?;
            stream_serve(&mut s, &mut w, rounds)?;
        }
        k => return Err(format!("unknown stream kind {k}")),
    }
    ctx.result(&serde_json::json!({ "rounds": rounds }));
    Ok(())
}

/// Takes over a file descriptor the parent left open for this process.
fn inherited(ctx: &RoleCtx, key: &str) -> Result<File, String> {
    let fd: i32 = ctx.parse(key)?;
    if fd < 3 || !Path::new(&format!("/proc/self/fd/{fd}")).exists() {
        return Err(format!("inherited descriptor {key}={fd} is not open"));
    }
    // The parent created this descriptor without close-on-exec for this child and passed
    // its number; it was checked to be open above.
    // SAFETY: nothing else in this process refers to the fd, so this `File` is its only owner.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// A pipe whose ends are inherited by the next child (no close-on-exec).
fn inheritable_pipe() -> Result<(File, File), String> {
    let (r, w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    Ok((File::from(r), File::from(w)))
}

/// Two anonymous pipes, one per direction.
pub fn pipe(ctx: &Ctx) -> Result<Measured, Fail> {
    let (mut to_parent_r, to_parent_w) = inheritable_pipe()?;
    let (to_child_r, mut to_child_w) = inheritable_pipe()?;
    let child = ctx.spawn(
        "pipe-pong",
        &[
            ("rfd", to_child_r.as_raw_fd().to_string()),
            ("wfd", to_parent_w.as_raw_fd().to_string()),
            ("rounds", ctx.plan.total().to_string()),
        ],
    );
    // The child has its copies now; closing ours makes its exit an EOF here.
    drop((to_child_r, to_parent_w));
    let child = child?;
    let driven = drive(&ctx.plan, |i| {
        to_child_w.write_all(&payload::make(i, PING)).map_err(|e| format!("write {i}: {e}"))?;
        let mut buf: Payload = [0; payload::LEN];
        to_parent_r.read_exact(&mut buf).map_err(|e| format!("read {i}: {e}"))?;
        payload::check(&buf, i, PONG)
    })?;
    finish(ctx, child, driven, vec!["blocking read/write".into()])
}

/// Child side of the pipe round trip.
pub fn pipe_role(ctx: &RoleCtx) -> Result<(), String> {
    let rounds: u64 = ctx.parse("rounds")?;
    let mut r = inherited(ctx, "rfd")?;
    let mut w = inherited(ctx, "wfd")?;
    ctx.ready();
    stream_serve(&mut r, &mut w, rounds)?;
    ctx.result(&serde_json::json!({ "rounds": rounds }));
    Ok(())
}

fn new_eventfd() -> Result<File, String> {
    let efd = nix::sys::eventfd::EventFd::from_value_and_flags(0, nix::sys::eventfd::EfdFlags::empty())
        .map_err(|e| format!("eventfd: {e}"))?;
    Ok(File::from(OwnedFd::from(efd)))
}

fn efd_signal(f: &mut File) -> Result<(), String> {
    f.write_all(&1u64.to_ne_bytes()).map_err(|e| format!("eventfd write: {e}"))
}

fn efd_wait(f: &mut File) -> Result<(), String> {
    let mut b = [0u8; 8];
    f.read_exact(&mut b).map_err(|e| format!("eventfd read: {e}"))
}

/// Words of the two mailboxes in the shared file: ping at 0, pong at 16 (128 bytes).
const PING_BOX: usize = 0;
const PONG_BOX: usize = 16;

fn put(words: &[AtomicU64], at: usize, p: &Payload) {
    for (w, x) in words[at..at + 8].iter().zip(payload::to_words(p)) {
        w.store(x, Ordering::Relaxed);
    }
    std::sync::atomic::fence(Ordering::Release);
}

fn get(words: &[AtomicU64], at: usize) -> Payload {
    std::sync::atomic::fence(Ordering::Acquire);
    let mut w = [0u64; 8];
    for (x, a) in w.iter_mut().zip(&words[at..at + 8]) {
        *x = a.load(Ordering::Relaxed);
    }
    payload::from_words(&w)
}

/// Wakes the parent's eventfd if the run makes no progress for a while (the child died),
/// so that its blocking read returns and the round fails instead of hanging.
struct Rescue {
    progress: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
}

impl Rescue {
    fn start(mut efd: File, stall: Duration) -> Rescue {
        let progress = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let (p, d) = (progress.clone(), done.clone());
        std::thread::spawn(move || {
            let mut last = u64::MAX;
            let mut since = Instant::now();
            while !d.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let now = p.load(Ordering::Relaxed);
                if now != last {
                    (last, since) = (now, Instant::now());
                } else if since.elapsed() > stall {
                    let _ = efd_signal(&mut efd);
                    since = Instant::now();
                }
            }
        });
        Rescue { progress, done }
    }
}

impl Drop for Rescue {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// eventfd wake-ups beside a shared mailbox.
pub fn eventfd(ctx: &Ctx) -> Result<Measured, Fail> {
    let shm = ShmFile::create("eventfd", 4096)?;
    let words = shm.words();
    let mut wake_parent = new_eventfd()?;
    let mut wake_child = new_eventfd()?;
    // Both descriptors are inherited as they are: the child uses the same two eventfds.
    let child = ctx.spawn(
        "eventfd-pong",
        &[
            ("path", shm.path().display().to_string()),
            ("wake_parent", wake_parent.as_raw_fd().to_string()),
            ("wake_child", wake_child.as_raw_fd().to_string()),
            ("rounds", ctx.plan.total().to_string()),
        ],
    )?;
    let rescue = Rescue::start(wake_parent.try_clone().map_err(|e| e.to_string())?, IO_TIMEOUT);
    let driven = drive(&ctx.plan, |i| {
        put(words, PING_BOX, &payload::make(i, PING));
        efd_signal(&mut wake_child)?;
        efd_wait(&mut wake_parent)?;
        rescue.progress.store(i, Ordering::Relaxed);
        payload::check(&get(words, PONG_BOX), i, PONG)
    })?;
    drop(rescue);
    finish(ctx, child, driven, vec!["blocking eventfd read; payload in a shared /dev/shm mapping".into()])
}

/// Child side of the eventfd round trip.
pub fn eventfd_role(ctx: &RoleCtx) -> Result<(), String> {
    let rounds: u64 = ctx.parse("rounds")?;
    let shm = ShmFile::open(Path::new(ctx.get("path")?))?;
    let words = shm.words();
    let mut wake_parent = inherited(ctx, "wake_parent")?;
    let mut wake_child = inherited(ctx, "wake_child")?;
    ctx.ready();
    for i in 0..rounds {
        efd_wait(&mut wake_child)?;
        payload::check(&get(words, PING_BOX), i, PING)?;
        put(words, PONG_BOX, &payload::make(i, PONG));
        efd_signal(&mut wake_parent)?;
    }
    ctx.result(&serde_json::json!({ "rounds": rounds }));
    Ok(())
}
