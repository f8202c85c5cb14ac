//! `worknoded`: creates (or adopts) a Worknode shared-memory segment, guards it while it
//! runs, and on SIGINT/SIGTERM marks it Closing and removes it.
//!
//! The daemon is not on the data path: agents read and write the segment directly. It
//! owns the segment's lifecycle: one instance per segment (an OS file lock), creation
//! with `O_EXCL` and an explicit mode, adoption of a valid segment left by a crashed
//! daemon, and an orderly shutdown.

mod instance;
mod sessions;

use clap::Parser;
use instance::InstanceLock;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Duration;
use worknode::{AttachError, Capacities, Segment};

/// Run the Worknode daemon for one shared-memory segment.
///
/// Creates /dev/shm/SEGMENT (or adopts a valid one left by a daemon that crashed),
/// prints one line once it is Ready, and keeps it until SIGINT or SIGTERM, when it
/// marks the segment Closing, waits a grace period, and removes it (unless --keep).
///
/// Exit codes: 0 clean shutdown; 1 error; 2 usage; 3 another daemon runs this segment.
#[derive(Parser, Debug)]
#[command(name = "worknoded", version, verbatim_doc_comment)]
struct Args {
    /// Segment name: the segment appears as /dev/shm/NAME. Letters, digits, '.', '_', '-'.
    #[arg(long, env = "WORKNODE_SEGMENT", default_value = "worknode", value_name = "NAME")]
    segment: String,

    /// Node slots (the root container included). Fixed for the life of the segment.
    #[arg(long, default_value_t = Capacities::default().nodes, value_name = "N")]
    nodes: u32,

    /// Event ring slots; a power of two. Readers lapped by more than this miss events.
    #[arg(long, default_value_t = Capacities::default().events, value_name = "N")]
    events: u32,

    /// Agent table slots: how many agents can be attached at once.
    #[arg(long, default_value_t = Capacities::default().agents, value_name = "N")]
    agents: u32,

    /// Blob arena chunks (each 4 KiB) for document contents.
    #[arg(long, default_value_t = Capacities::default().blob_chunks, value_name = "N")]
    blob_chunks: u32,

    /// Observed-remove set slots (sets attached to nodes).
    #[arg(long, default_value_t = Capacities::default().sets, value_name = "N")]
    sets: u32,

    /// File mode of the segment, in octal. The default 600 lets only this user attach.
    #[arg(long, default_value = "600", value_parser = parse_mode, value_name = "OCTAL")]
    mode: u32,

    /// Leave the segment in /dev/shm on exit (a later daemon adopts it).
    #[arg(long)]
    keep: bool,

    /// Milliseconds between marking the segment Closing and removing it on shutdown.
    #[arg(long, default_value_t = 250, value_name = "MS")]
    grace_ms: u64,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let m = u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|_| format!("{s:?} is not an octal mode such as 600"))?;
    if m > 0o777 {
        return Err(format!("mode {s} has bits beyond 777"));
    }
    if m & 0o600 != 0o600 {
        return Err(format!("mode {s} must let the owner read and write (600)"));
    }
    Ok(m)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { message, code }) => {
            eprintln!("worknoded: {message}");
            ExitCode::from(code)
        }
    }
}

struct Failure {
    message: String,
    code: u8,
}

impl From<AttachError> for Failure {
    fn from(e: AttachError) -> Self {
        Failure { message: e.to_string(), code: 1 }
    }
}

fn fail(message: impl std::fmt::Display) -> Failure {
    Failure { message: message.to_string(), code: 1 }
}

/// Opens the segment: adopt a valid one, recreate a half-initialised one, else create.
fn open_segment(args: &Args, caps: &Capacities) -> Result<(Segment, &'static str), Failure> {
    match Segment::adopt(&args.segment) {
        Ok(seg) => {
            if seg.capacities() != *caps {
                eprintln!(
                    "worknoded: note: adopted segment keeps its capacities {:?}; the flags given ask for {:?} (remove the segment to change them)",
                    seg.capacities(),
                    caps
                );
            }
            Ok((seg, "adopted"))
        }
        Err(AttachError::NotFound { .. }) => Ok((Segment::create(&args.segment, caps, args.mode)?, "created")),
        Err(AttachError::Incomplete) => {
            eprintln!("worknoded: removing a half-initialised segment left by a daemon that died, and creating it anew");
            Segment::unlink(&args.segment)?;
            Ok((Segment::create(&args.segment, caps, args.mode)?, "created"))
        }
        Err(e @ (AttachError::NotWorknode { .. } | AttachError::VersionMismatch { .. } | AttachError::SizeMismatch { .. } | AttachError::LayoutMismatch { .. })) => Err(fail(format!(
            "{e}\nhint: this daemon will not overwrite it; if it is a stale Worknode segment, remove it with `rm {}` and start again",
            worknode::shm_path(&args.segment).display()
        ))),
        Err(e) => Err(e.into()),
    }
}

fn run(args: &Args) -> Result<(), Failure> {
    worknode::validate_name(&args.segment).map_err(|r| fail(format!("invalid --segment {:?}: {r}", args.segment)))?;
    let caps = Capacities {
        nodes: args.nodes,
        events: args.events,
        agents: args.agents,
        blob_chunks: args.blob_chunks,
        sets: args.sets,
        ..Capacities::default()
    };
    // Validate capacities before touching anything.
    worknode::layout::Geometry::new(&caps).map_err(|e| fail(format!("{e}")))?;

    // Signals are taken through a signalfd, so block them first (before any thread).
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGTERM);
    mask.thread_block().map_err(|e| fail(format!("cannot block signals: {e}")))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC).map_err(|e| fail(format!("signalfd: {e}")))?;

    let lock = InstanceLock::acquire(&args.segment, args.mode).map_err(|e| Failure {
        code: if matches!(e, instance::LockError::Held(_)) { 3 } else { 1 },
        message: e.to_string(),
    })?;
    let (seg, how) = match open_segment(args, &caps) {
        Ok(x) => x,
        Err(e) => {
            // Nothing runs this segment: leave no lock file behind.
            lock.remove_file();
            return Err(e);
        }
    };
    let info = seg.info();
    let c = seg.capacities();
    println!(
        "worknoded: segment {} {how} and ready at {} ({} bytes): nodes={} events={} agents={} blob_chunks={} sets={} pid={} boot_id={}",
        seg.name(),
        seg.path().display(),
        info.size,
        c.nodes,
        c.events,
        c.agents,
        c.blob_chunks,
        c.sets,
        std::process::id(),
        info.boot_id
    );

    let signal = serve(&seg, &signals)?;
    eprintln!("worknoded: {signal:?} received; closing segment {}", seg.name());
    seg.mark_closing();
    std::thread::sleep(Duration::from_millis(args.grace_ms));
    if args.keep {
        eprintln!("worknoded: --keep given; leaving {}", seg.path().display());
    } else if let Err(e) = Segment::unlink(seg.name()) {
        eprintln!("worknoded: could not remove the segment: {e}");
    }
    lock.remove_file();
    Ok(())
}

/// Serves until SIGINT or SIGTERM. Between signals it
/// * watches agent sessions: a connection's EOF means its process died → reap the agent;
/// * follows the event ring, so that an event slot left unpublished by a producer that
///   died is marked abandoned within the bound even when every reader is read-only;
/// * releases claims whose lease lapsed (every 100 ms), and reaps agents whose session
///   process is gone but never connected (every second).
fn serve(seg: &Segment, signals: &SignalFd) -> Result<Signal, Failure> {
    let mut follower = seg.reader(worknode::Start::Now);
    let mut sessions = sessions::Sessions::listen(seg.name(), seg.capacities().agents as usize)
        .map_err(|e| fail(format!("cannot listen for agent sessions: {e}")))?;
    let mut tick: u64 = 0;
    let mut last_tick = std::time::Instant::now();
    loop {
        let (sig_ready, ready) = {
            let session_fds = sessions.fds();
            let mut fds: Vec<PollFd> = std::iter::once(PollFd::new(signals.as_fd(), PollFlags::POLLIN))
                .chain(session_fds.iter().map(|fd| PollFd::new(*fd, PollFlags::POLLIN)))
                .collect();
            match poll(&mut fds, PollTimeout::from(TICK_MS)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(fail(format!("poll: {e}"))),
            }
            let is_ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            (is_ready(&fds[0]), fds[1..].iter().map(is_ready).collect::<Vec<bool>>())
        };
        for (id, pid) in sessions.handle(seg, &ready) {
            eprintln!("worknoded: agent {id} lost: its session process {pid} exited; claims released");
        }
        if last_tick.elapsed() >= std::time::Duration::from_millis(TICK_MS as u64) {
            last_tick = std::time::Instant::now();
            tick += 1;
            follow_ring(&mut follower, seg.capacities().events as u64);
            if tick % 5 == 0 {
                seg.reap_expired_claims();
            }
            if tick % 50 == 0 {
                seg.reap_dead_sessions();
            }
        }
        if sig_ready {
            if let Some(info) = signals.read_signal().map_err(|e| fail(format!("signalfd read: {e}")))? {
                if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                    return Ok(sig);
                }
            }
        }
    }
}

/// Milliseconds between the daemon's housekeeping ticks.
const TICK_MS: u16 = 20;

/// Drains what the ring holds now (bounded to one lap per tick). The reader itself
/// abandons an in-flight slot whose producer is gone once it has waited the bound.
fn follow_ring(follower: &mut worknode::Reader<'_>, capacity: u64) {
    for _ in 0..capacity {
        match follower.try_next() {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(worknode::RingError::Lagged { .. }) => {}
            Err(_) => break,
        }
    }
}
