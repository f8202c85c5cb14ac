//! `worknoded`: creates (or adopts) a Worknode shared-memory segment, guards it while it
//! runs, and on SIGINT/SIGTERM marks it Closing and removes it.
//!
//! The daemon is not on the data path: agents read and write the segment directly. It
//! owns the segment's lifecycle: one instance per segment (an OS file lock), creation
//! with `O_EXCL` and an explicit mode, adoption of a valid segment left by a crashed
//! daemon, and an orderly shutdown.

mod guard;

use clap::Parser;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Duration;
use worknode::{AttachError, Capacities, Daemon, Segment};
use worknoded::broker;
use worknoded::instance::{self, InstanceLock};
use worknoded::notify::Notifier;
use worknoded::{journal, sessions};

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

    /// Node slots (the root container included), 2 to 16777216. Fixed for the life of
    /// the segment.
    #[arg(long, default_value_t = Capacities::default().nodes, value_name = "N", value_parser = parse_nodes)]
    nodes: u32,

    /// Event ring slots: a power of two, 2 to 16777216. Readers lapped by more than this
    /// miss events.
    #[arg(long, default_value_t = Capacities::default().events, value_name = "N", value_parser = parse_events)]
    events: u32,

    /// Agent table slots, 1 to 65535: how many agents can be attached at once.
    #[arg(long, default_value_t = Capacities::default().agents, value_name = "N", value_parser = parse_agents)]
    agents: u32,

    /// Blob arena chunks (each 4 KiB) for document contents, 1 to 1048576.
    #[arg(long, default_value_t = Capacities::default().blob_chunks, value_name = "N", value_parser = parse_blob_chunks)]
    blob_chunks: u32,

    /// Observed-remove set slots (sets attached to nodes), 1 to 1048576.
    #[arg(long, default_value_t = Capacities::default().sets, value_name = "N", value_parser = parse_sets)]
    sets: u32,

    /// File mode of the segment, in octal: 600, the only one accepted. Clients refuse a
    /// segment of another user even read-only, so wider modes would only expose the
    /// daemon's boot id (and its session socket name) to other users.
    #[arg(long, default_value = "600", value_parser = parse_mode, value_name = "OCTAL")]
    mode: u32,

    /// Leave the segment in /dev/shm on exit (a later daemon adopts it).
    #[arg(long)]
    keep: bool,

    /// Directory of the journal and snapshots (created if missing). Default:
    /// $XDG_STATE_HOME/worknode/SEGMENT, else ~/.local/state/worknode/SEGMENT.
    #[arg(long, env = "WORKNODE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,

    /// When the journal reaches the disk: `always` (an append returns once fsynced;
    /// one fsync per group commit), `batch` (fsync every --fsync-interval-ms; at most
    /// that interval is at risk), `never` (the OS decides), `off` (no journal: state
    /// lives in shared memory only and is lost with the host).
    #[arg(long, default_value = "batch", value_parser = parse_policy, value_name = "POLICY")]
    fsync: worknode::Durability,

    /// Group-commit interval for --fsync batch, in milliseconds, 1 to 60000.
    #[arg(long, default_value_t = 10, value_name = "MS", value_parser = parse_fsync_interval)]
    fsync_interval_ms: u64,

    /// Start a new journal file, compacting the old ones into a snapshot, past this size
    /// (MiB, 1 to 65536).
    #[arg(long, default_value_t = 64, value_name = "MIB", value_parser = parse_rotate_mb)]
    journal_rotate_mb: u64,

    /// Recover what is valid from a journal damaged in the middle (records after the
    /// damage are dropped and the files moved aside) instead of refusing to start.
    #[arg(long)]
    salvage: bool,

    /// Serve agents of other users through the broker socket: they get a read-only
    /// descriptor of the segment and send their changes to the daemon, which checks them
    /// against their capability token (`wn token mint`) and applies them.
    #[arg(long)]
    broker: bool,

    /// Direct clients (the daemon's own user) must present a capability token, and every
    /// change they make is checked against it. This guards against mistakes, not against
    /// a hostile process of the same user (use --broker and another user for that).
    #[arg(long)]
    require_tokens: bool,

    /// Milliseconds between marking the segment Closing and removing it on shutdown, 0 to
    /// 60000.
    #[arg(long, default_value_t = 250, value_name = "MS", value_parser = parse_grace)]
    grace_ms: u64,
}

/// Parses a whole number in `min..=max`; the error names the range and what the number
/// is for (clap adds the flag: "invalid value 'X' for '--nodes <N>': …").
fn parse_in(s: &str, min: u64, max: u64, what: &str) -> Result<u64, String> {
    let t = s.trim();
    let n = t.parse::<u64>().ok().filter(|n| (min..=max).contains(n)).filter(|_| !t.starts_with('+'));
    n.ok_or_else(|| format!("must be a whole number from {min} to {max} ({what}); give one in that range"))
}

fn parse_u32_in(s: &str, max: u32, what: &str) -> Result<u32, String> {
    parse_in(s, 1, max as u64, what).map(|n| n as u32)
}

fn parse_nodes(s: &str) -> Result<u32, String> {
    parse_in(s, 2, worknode::layout::MAX_NODES as u64, "node slots, the root and /agents included").map(|n| n as u32)
}

fn parse_events(s: &str) -> Result<u32, String> {
    let max = worknode::layout::MAX_EVENTS;
    let n = parse_in(s, 2, max as u64, "event ring slots, a power of two")? as u32;
    if !n.is_power_of_two() {
        let (lo, hi) = (n.next_power_of_two() / 2, n.next_power_of_two().min(max));
        return Err(format!("{n} is not a power of two (the ring's slots must be); use {lo} or {hi}"));
    }
    Ok(n)
}

fn parse_agents(s: &str) -> Result<u32, String> {
    parse_u32_in(s, worknode::layout::MAX_AGENTS, "agent table slots")
}

fn parse_blob_chunks(s: &str) -> Result<u32, String> {
    parse_u32_in(s, worknode::layout::MAX_BLOB_CHUNKS, "blob arena chunks of 4 KiB")
}

fn parse_sets(s: &str) -> Result<u32, String> {
    parse_u32_in(s, worknode::layout::MAX_SETS, "observed-remove set slots")
}

fn parse_fsync_interval(s: &str) -> Result<u64, String> {
    parse_in(s, 1, 60_000, "milliseconds between group commits")
}

fn parse_rotate_mb(s: &str) -> Result<u64, String> {
    parse_in(s, 1, 65_536, "MiB of journal before a snapshot")
}

fn parse_grace(s: &str) -> Result<u64, String> {
    parse_in(s, 0, 60_000, "milliseconds of grace at shutdown, at most a minute")
}

fn parse_policy(s: &str) -> Result<worknode::Durability, String> {
    Ok(match s {
        "always" => worknode::Durability::Always,
        "batch" => worknode::Durability::Batch,
        "never" => worknode::Durability::Never,
        "off" => worknode::Durability::Off,
        _ => return Err(format!("{s:?} is not a policy: always, batch, never or off")),
    })
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
    if m & !worknode::MODE_ALLOWED != 0 {
        return Err(format!(
            "mode {s} opens the segment to other users, whose clients refuse it anyway; use 600 (the default)"
        ));
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
        let message = match attach_hint(&e) {
            Some(hint) => format!("{e}\nhint: {hint}"),
            None => e.to_string(),
        };
        Failure { message, code: 1 }
    }
}

/// The daemon's advice on a segment it could not create, adopt or remove (the library's
/// error says only what happened).
fn attach_hint(e: &AttachError) -> Option<String> {
    use AttachError::*;
    Some(match e {
        InvalidName { .. } => "use 1-200 letters, digits, '.', '_' or '-' for --segment".into(),
        PermissionDenied { .. } | Os { errno: nix::errno::Errno::EACCES | nix::errno::Errno::EPERM, .. } => {
            "it belongs to another user or its mode forbids this: run the daemon as the segment's owner".into()
        }
        AlreadyExists { name } => format!(
            "another daemon may own it: stop it, remove /dev/shm/{name} if it is stale, or choose another --segment"
        ),
        NoSpace { .. } => "free space in /dev/shm or ask for smaller capacities (--nodes, --events, --blob-chunks)".into(),
        NotWorknode { .. } => "another program owns that name: choose another --segment".into(),
        VersionMismatch { .. } => "stop the daemon of the other version and recreate the segment".into(),
        SizeMismatch { .. } => "it is truncated or damaged: remove it and start again".into(),
        LayoutMismatch { .. } => "the segment is damaged: remove it and start again".into(),
        NotReady => "retry in a moment".into(),
        Closing => "start the daemon again: it adopts a segment that is shutting down".into(),
        Incomplete => "start the daemon again: it removes a half-initialised segment and creates it anew".into(),
        DaemonRunning { .. } => "stop it first".into(),
        ForeignOwner { name, .. } => {
            format!("refusing it: run as its owner, or remove /dev/shm/{name} if someone else planted it")
        }
        UnsafeMode { name, .. } => format!(
            "other users may read or write it, so it is refused: remove /dev/shm/{name} and let the daemon create it again"
        ),
        NotAFile { .. } => "someone put a FIFO, directory or device there: remove it, or choose another --segment".into(),
        NotFound { .. } | Capacity(_) | Os { .. } | Broker(_) => return None,
    })
}

/// The policy bits the daemon's flags ask for.
fn policy(args: &Args) -> u64 {
    let mut bits = 0;
    if args.require_tokens {
        bits |= worknode::layout::policy::TOKENS_REQUIRED;
    }
    if args.broker {
        bits |= worknode::layout::policy::BROKER_OPEN;
    }
    bits
}

fn fail(message: impl std::fmt::Display) -> Failure {
    Failure { message: message.to_string(), code: 1 }
}

/// How the segment was opened, and where the journal continues.
struct Opened {
    seg: Daemon,
    how: &'static str,
    /// First sequence the journal has not written.
    journal_from: u64,
    /// The newest journaled events (snapshots carry them).
    recent: std::collections::VecDeque<worknode::layout::EventRecord>,
}

/// Opens the segment: adopt a valid live one; else rebuild it from the journal; else
/// create it. A half-initialised one is removed first; a foreign one is refused.
///
/// With a journal, the policy and cursors are published *before* the segment is opened
/// to clients, and a new segment's first snapshot is on disk before then too: no append
/// can be acknowledged that the journal does not cover, and a journal never lacks the
/// root.
fn open_segment(args: &Args, caps: &Capacities, journal: Option<&journal::Config>) -> Result<Opened, Failure> {
    let recovered = match journal {
        Some(cfg) => {
            let narrowed = journal::store::ensure_private_dir(&cfg.dir).map_err(fail)?;
            // The key that seals capability tokens: made on the first start, checked on every one.
            match worknoded::tokens::ensure_key(&cfg.dir) {
                Ok((_, true)) => {
                    eprintln!("worknoded: created token key {}", cfg.dir.join(worknoded::tokens::KEY_FILE).display())
                }
                Ok((_, false)) => {}
                Err(e) => return Err(fail(format!("token key: {e}"))),
            }
            let r = journal::store::recover(&cfg.dir, caps.events as usize, args.salvage).map_err(fail)?;
            for w in narrowed.iter().chain(&r.warnings) {
                eprintln!("worknoded: warning: {w}");
            }
            Some(r)
        }
        None => {
            if args.broker || args.require_tokens {
                // No journal, but tokens: the data directory holds the key all the same.
                let dir = args.data_dir.clone().unwrap_or_else(|| worknoded::default_data_dir(&args.segment));
                for w in journal::store::ensure_private_dir(&dir).map_err(fail)? {
                    eprintln!("worknoded: warning: {w}");
                }
                if let Ok((_, true)) = worknoded::tokens::ensure_key(&dir).map_err(|e| fail(format!("token key: {e}")))
                {
                    eprintln!("worknoded: created token key {}", dir.join(worknoded::tokens::KEY_FILE).display());
                }
            }
            None
        }
    };
    // Anything on disk counts: a journal with events but no nodes is damage to report,
    // not an empty directory to start over in.
    let has_journal = recovered.as_ref().is_some_and(|r| r.snapshot.is_some() || r.state.records > 0);
    let journal_from = recovered.as_ref().map_or(0, |r| r.state.next_seq);
    let recent = recovered.as_ref().map(|r| r.state.events.clone()).unwrap_or_default();
    let reserved_on_disk = recovered.as_ref().map_or(0, |r| r.state.reserved);
    // A fresh segment, or one adopted with an empty journal (or a salvaged one): a
    // snapshot makes the journal self-contained.
    let snapshot_now = |seg: &Daemon, covers: u64| -> Result<(), Failure> {
        if let Some(cfg) = journal {
            // The snapshot first: a start that stops between the two leaves a snapshot
            // without a journal (which the next start creates), never a journal
            // without a snapshot.
            journal::write_snapshot(seg, &cfg.dir, covers, &recent).map_err(fail)?;
            journal::store::JournalFile::open_at(&cfg.dir, covers)
                .map_err(|e| fail(format!("creating the journal at {}: {e}", cfg.dir.display())))?;
            // Count it as a served request, so `wn snapshot`-style waits see it.
            let n = seg.request_snapshot().map_err(fail)?;
            seg.set_snapshots_done(n);
        }
        Ok(())
    };
    // Last step before clients may write: the first reservation on disk (with `extra`
    // records before it), then the policy, cursors and heartbeat in the header.
    // `file_seq` names the journal file to append to: where the files on disk end (a
    // rebuild that skips sequence numbers up to `from` says so in that file).
    let start_journal =
        |seg: &Daemon, file_seq: u64, from: u64, extra: &[journal::format::Record]| -> Result<(), Failure> {
            let Some(cfg) = journal else {
                // No journal: say so in the header, or a segment adopted from a daemon that
                // journaled would keep its policy, cursors and reservation with nobody
                // advancing them.
                seg.set_durability(worknode::Durability::Off, from, u64::MAX, Duration::ZERO);
                return Ok(());
            };
            let mut file = journal::store::JournalFile::open_at(&cfg.dir, file_seq)
                .map_err(|e| fail(format!("opening the journal in {}: {e}", cfg.dir.display())))?;
            let mut buf = Vec::new();
            for r in extra {
                journal::format::encode(&mut buf, r);
            }
            file.append(&buf).map_err(|e| fail(format!("journal write: {e}")))?;
            let base = from.max(seg.ring_tail()).max(reserved_on_disk).max(seg.seq_reserved());
            let upto = base.saturating_add(journal::reserve_ahead(seg.capacities().events as u64));
            journal::reserve(&mut file, upto).map_err(|e| fail(format!("{}: {e}", file.path.display())))?;
            seg.set_durability(cfg.policy, from, upto, cfg.heartbeat_stale());
            Ok(())
        };
    // Files salvage read around damage, and snapshots recovery could not read, are
    // moved aside (never over an earlier one): kept for a look, out of the replay path,
    // and never taken by retention for a good snapshot.
    let set_aside = |paths: &mut dyn Iterator<Item = &std::path::PathBuf>, why: &str| {
        for path in paths {
            let aside = (0..100)
                .map(|n| {
                    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
                    path.with_extension(if n == 0 { format!("{ext}.damaged") } else { format!("{ext}.damaged.{n}") })
                })
                .find(|p| !p.exists());
            match aside.map(|a| std::fs::rename(path, &a).map(|()| a)) {
                Some(Ok(a)) => {
                    eprintln!("worknoded: warning: {why}: moved {} aside to {}", path.display(), a.display())
                }
                Some(Err(e)) => eprintln!("worknoded: warning: {why}: could not move {} aside: {e}", path.display()),
                None => {
                    eprintln!("worknoded: warning: {why}: {} left in place (100 copies aside already)", path.display())
                }
            }
        }
    };
    let set_aside_damaged = || set_aside(&mut recovered.iter().flat_map(|r| &r.damaged), "salvage");
    let set_aside_bad_snapshots =
        || set_aside(&mut recovered.iter().flat_map(|r| &r.bad_snapshots), "unreadable snapshot");
    let create = |how| -> Result<Opened, Failure> {
        if let (true, Some(r)) = (has_journal, recovered.as_ref()) {
            let seg = Daemon::create_for_restore(&args.segment, caps, args.mode)?;
            let built = (|| {
                let stats = r.state.materialize(&seg).map_err(|e| {
                    fail(format!(
                        "rebuilding the segment from the journal failed: {e}\nhint: the capacities given \
                             (--nodes, --events, --agents, --blob-chunks, --sets) must hold what the journal holds"
                    ))
                })?;
                let resume = r.state.resume_seq();
                eprintln!(
                    "worknoded: rebuilt from {} + {} journal file(s): {} nodes, {} agents, {} events, next sequence {resume}{}",
                    r.snapshot.as_ref().map_or("no snapshot".to_string(), |p| p.display().to_string()),
                    r.journals,
                    stats.nodes,
                    stats.agents,
                    stats.events,
                    if stats.orphans > 0 {
                        format!(", {} orphans re-attached under the root", stats.orphans)
                    } else {
                        String::new()
                    }
                );
                set_aside_bad_snapshots();
                if r.older_layout {
                    // Files of an older records layout were read: a snapshot in this
                    // build's layout holds everything first, so the journal never
                    // continues under an old header.
                    eprintln!("worknoded: data files of an older records layout were read; writing a snapshot in the current one");
                    snapshot_now(&seg, resume)?;
                    start_journal(&seg, resume, resume, &[])?;
                    return Ok(resume);
                }
                if !r.damaged.is_empty() || r.snapshot.is_none() {
                    // Salvaged: the damaged files go aside first (their valid records
                    // are in memory), then a snapshot holds everything kept.
                    set_aside_damaged();
                    snapshot_now(&seg, resume)?;
                    start_journal(&seg, resume, resume, &[])?;
                    return Ok(resume);
                }
                // Sequences skipped up to the reservation are a gap, not lost events: the
                // file where the journal ends says so, and the next recovery sees the
                // files follow on.
                let skipped = resume - r.state.next_seq;
                let gap = journal::format::Record::Gap { from: r.state.next_seq, missed: skipped };
                start_journal(
                    &seg,
                    r.state.next_seq,
                    resume,
                    if skipped > 0 { std::slice::from_ref(&gap) } else { &[] },
                )?;
                Ok(resume)
            })();
            return match built {
                Ok(resume) => {
                    seg.set_policy(policy(args));
                    seg.open_for_clients();
                    Ok(Opened { seg, how: "restored", journal_from: resume, recent: recent.clone() })
                }
                Err(e) => {
                    let _ = Segment::unlink(&args.segment);
                    Err(e)
                }
            };
        }
        let seg = Daemon::create_unready(&args.segment, caps, args.mode)?;
        let from = seg.ring_tail();
        let opened = snapshot_now(&seg, from).and_then(|()| start_journal(&seg, from, from, &[])).map(|()| {
            seg.set_policy(policy(args));
            seg.open_for_clients();
        });
        if let Err(e) = opened {
            let _ = Segment::unlink(&args.segment);
            return Err(e);
        }
        Ok(Opened { journal_from: from, seg, how, recent: Default::default() })
    };
    match Daemon::adopt(&args.segment) {
        Ok(seg) => {
            if seg.capacities() != *caps {
                eprintln!(
                    "worknoded: note: adopted segment keeps its capacities {:?}; the flags given ask for {:?} (remove the segment to change them)",
                    seg.capacities(),
                    caps
                );
            }
            seg.set_policy(policy(args));
            let from = if has_journal { journal_from } else { seg.ring_tail() };
            set_aside_bad_snapshots();
            if !has_journal {
                snapshot_now(&seg, from)?;
            } else if recovered.as_ref().is_some_and(|r| !r.damaged.is_empty()) {
                // The live segment holds everything; the damaged files go aside, and a
                // snapshot of it replaces them.
                set_aside_damaged();
                snapshot_now(&seg, from)?;
            }
            start_journal(&seg, from, from, &[])?;
            Ok(Opened { seg, how: "adopted", journal_from: from, recent: recent.clone() })
        }
        Err(AttachError::NotFound { .. }) => create("created"),
        Err(AttachError::Incomplete) => {
            eprintln!("worknoded: removing a half-initialised segment left by a daemon that died, and creating it anew");
            Segment::unlink(&args.segment)?;
            create("created")
        }
        Err(e @ (AttachError::NotWorknode { .. } | AttachError::VersionMismatch { .. } | AttachError::SizeMismatch { .. } | AttachError::LayoutMismatch { .. })) => Err(fail(format!(
            "{e}\nhint: this daemon will not overwrite it; if it is a stale Worknode segment, remove it with `rm {}` and start again",
            worknode::shm_path(&args.segment).display()
        ))),
        Err(e @ AttachError::DaemonRunning { .. }) => Err(Failure { code: 3, ..e.into() }),
        Err(e) => Err(e.into()),
    }
}

fn run(args: &Args) -> Result<(), Failure> {
    // Bad flags are usage errors (exit 2), as clap's own are.
    let usage = |message: String| Failure { message, code: 2 };
    worknode::validate_name(&args.segment).map_err(|r| {
        usage(format!("invalid --segment {:?}: {r}\nhint: use 1-200 letters, digits, '.', '_' or '-'", args.segment))
    })?;
    let caps = Capacities {
        nodes: args.nodes,
        events: args.events,
        agents: args.agents,
        blob_chunks: args.blob_chunks,
        sets: args.sets,
        ..Capacities::default()
    };
    // Validate capacities before touching anything.
    worknode::layout::Geometry::new(&caps)
        .map_err(|e| usage(format!("{e}\nhint: see `worknoded --help` for each capacity's range")))?;

    // Signals are taken through a signalfd, so block them first (before any thread).
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGTERM);
    mask.thread_block().map_err(|e| fail(format!("cannot block signals: {e}")))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC).map_err(|e| fail(format!("signalfd: {e}")))?;

    let lock = InstanceLock::acquire(&args.segment).map_err(|e| Failure {
        code: if matches!(e, instance::LockError::Held(_)) { 3 } else { 1 },
        message: e.to_string(),
    })?;
    let journal_cfg = (args.fsync != worknode::Durability::Off).then(|| journal::Config {
        dir: args.data_dir.clone().unwrap_or_else(|| worknoded::default_data_dir(&args.segment)),
        policy: args.fsync,
        interval: Duration::from_millis(args.fsync_interval_ms.max(1)),
        rotate_bytes: args.journal_rotate_mb.max(1) << 20,
    });
    let opened = match open_segment(args, &caps, journal_cfg.as_ref()) {
        Ok(x) => x,
        Err(e) => {
            // Nothing runs this segment: leave no lock file behind.
            lock.remove_file();
            return Err(e);
        }
    };
    let Opened { seg, how, journal_from, recent } = opened;
    // Listen before saying "ready": an agent that opens a session right after the ready
    // line must find the socket.
    let sessions =
        match sessions::Sessions::listen(seg.name(), seg.inspect().info().boot_id, seg.capacities().agents as usize) {
            Ok(s) => s,
            Err(e) => {
                lock.remove_file();
                return Err(fail(format!("cannot listen for agent sessions: {e}")));
            }
        };
    // The broker answers token checks always, and serves other users with --broker.
    let broker_cfg = broker::Config {
        data_dir: args.data_dir.clone().unwrap_or_else(|| worknoded::default_data_dir(&args.segment)),
        open_to_others: args.broker,
        limit: seg.capacities().agents as usize,
    };
    let broker = match broker::Broker::listen(seg.name()) {
        Ok(b) => Some(b),
        Err(e) if args.broker || args.require_tokens => {
            lock.remove_file();
            return Err(fail(format!(
                "cannot listen on the broker socket: {e}\nhint: another process holds the name {:?}; stop it and start again",
                String::from_utf8_lossy(&worknode::broker::broker_socket_name(seg.name()))
            )));
        }
        Err(e) => {
            eprintln!("worknoded: note: no broker socket ({e}); tokens cannot be checked until restart");
            None
        }
    };
    let info = seg.inspect().info();
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
    // Only now may a service manager count the daemon as started: the segment is Ready,
    // and the session and broker sockets listen.
    let mut notifier = Notifier::from_env();
    notifier.ready(&format!("segment {} {how}: serving agents", seg.name()));

    let stop = std::sync::atomic::AtomicBool::new(false);
    let outcome = std::thread::scope(|scope| {
        let journal = journal_cfg.as_ref().map(|cfg| {
            let (seg, stop) = (&seg, &stop);
            scope.spawn(move || journal::beat(seg, cfg, stop));
            scope.spawn(move || journal::run(seg, cfg, journal_from, stop, recent))
        });
        if let Some(b) = broker {
            let (seg, cfg, stop) = (&seg, &broker_cfg, &stop);
            scope.spawn(move || b.serve(seg, cfg, stop));
        }
        let served = serve(&seg, &signals, sessions, journal.as_ref().map(|j| j as &dyn Finished), &mut notifier);
        if let Ok(signal) = &served {
            notifier.stopping(&format!("{signal:?} received: closing segment {}", seg.name()));
            // Closing first: from here on writers are refused (and told). Then a grace
            // period for attached clients to notice, then the journal drains everything
            // that was acknowledged before, then it stops.
            eprintln!("worknoded: {signal:?} received; closing segment {}", seg.name());
            seg.mark_closing();
            std::thread::sleep(Duration::from_millis(args.grace_ms));
        }
        stop.store(true, std::sync::atomic::Ordering::Release);
        let journaled = journal.map(|j| j.join().unwrap_or_else(|_| Err("the journal thread panicked".into())));
        (served, journaled)
    });
    let signal = match outcome {
        (_, Some(Err(e))) => {
            // The journal failed: keep the segment (nothing in it is lost) and say so.
            seg.mark_closing();
            lock.remove_file();
            return Err(fail(format!(
                "journal failed: {e}; the segment is kept in /dev/shm, fix the cause and restart"
            )));
        }
        (served, _) => served?,
    };
    let _ = signal;
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
///   process is gone but never connected (every second);
/// * pings the service manager's watchdog when the unit asks for one.
fn serve(
    seg: &Daemon,
    signals: &SignalFd,
    mut sessions: sessions::Sessions,
    journal: Option<&dyn Finished>,
    notifier: &mut Notifier,
) -> Result<Signal, Failure> {
    let mut follower = seg.reader(worknode::Start::Now);
    let mut tick: u64 = 0;
    let mut last_tick = std::time::Instant::now();
    let mut guard = guard::Guard::new(seg);
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
            notifier.tick();
            if let Some(j) = journal {
                // The journal follows the ring itself (and repairs dead producers' slots).
                if j.finished() {
                    return Err(fail("the journal stopped"));
                }
            } else {
                follow_ring(&mut follower, seg.capacities().events as u64);
            }
            if tick.is_multiple_of(5) {
                seg.reap_expired_claims();
            }
            if tick.is_multiple_of(50) {
                guard.check(seg);
                seg.reap_dead_sessions();
                seg.sweep_claim_parkers();
                seg.settle_blocked();
                seg.reindex_ready();
                seg.sweep_dead_reservations();
                seg.sweep_dead_waiters();
                match seg.repair_dead_holders() {
                    Ok(0) => {}
                    Ok(n) => eprintln!("worknoded: repaired {n} node slot(s) left locked by processes that died"),
                    Err(e @ worknode::PoolError::Corrupt { .. }) => eprintln!(
                        "worknoded: repair scan failed: {e}\nhint: run `wn doctor`, or stop the daemon and recreate the segment"
                    ),
                    Err(e) => eprintln!("worknoded: repair scan failed: {e}"),
                }
                match seg.reclaim_leaked() {
                    Ok(r) if r.is_empty() => {}
                    Ok(r) => eprintln!(
                        "worknoded: reclaimed {} blob chunk(s) and {} set slot(s) left by processes that died{}",
                        r.blob_chunks,
                        r.set_slots,
                        if r.documents_emptied > 0 {
                            format!(
                                "; {} document(s) lost their content mid-replace and were emptied",
                                r.documents_emptied
                            )
                        } else {
                            String::new()
                        }
                    ),
                    Err(e) => eprintln!("worknoded: reclaim sweep failed: {e}"),
                }
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

/// Whether a background thread has ended.
trait Finished {
    fn finished(&self) -> bool;
}

impl<T> Finished for std::thread::ScopedJoinHandle<'_, T> {
    fn finished(&self) -> bool {
        self.is_finished()
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
