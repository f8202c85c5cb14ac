//! Durability and recovery with the real `worknoded` (issue 6): the daemon journals every
//! event with the resulting record images and rebuilds a lost segment from snapshot +
//! journal.
//!
//! * SIGKILL of the daemon under load from several producer processes (`--fsync always`),
//!   then a simulated host restart (the segment is unlinked): every acknowledged event is
//!   back, in order, exactly once, with its payload; every node is at least at its last
//!   acknowledged version.
//! * A journal cut at every byte of its last record is recovered by cutting the torn tail
//!   (with a warning naming the offset) and nothing before it is lost; a flipped byte in
//!   the middle is refused with a clear error, and `--salvage` keeps what precedes it.
//! * Snapshots: rotation (`--journal-rotate-mb 1`) and `request_snapshot` compact the
//!   journal; a restart from snapshot + journal gives every node back byte for byte.
//! * Claims across a daemon crash: kept when the segment is adopted (and released when the
//!   session process then dies); after a host restart, the lease-held claim is kept.
//! * A journal (and a snapshot) of another layout version is refused.
//! * An agent appending the moment the segment is Ready, racing the daemon's journal
//!   start, gets no acknowledgement before its event is journaled, and loses nothing.
//!
//! The journal format is parsed here independently of the daemon, from the format's
//! documentation (`daemon/src/journal/format.rs`): a 24-byte header, then records
//! `len u32 | crc u32 | kind u8 | body[len]` with a CRC-32C over kind and body.

use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::mem::{offset_of, size_of};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;
use worknode::layout::{EventRecord, EVENT_PAYLOAD_MAX};
use worknode::{Access, DeleteMode, Event, EventKind, Handle, NewEvent, NewNode, NodeKind, RingError, Segment, Status};
use worknode_tests::{
    child_main, env_str, env_u64, handles_from_env, handles_to_env, ring_events, say, wait_until, Proc, SegmentGuard,
    Stream, SEGMENT_ENV,
};

/// Bound on a daemon's start (a restore replays the whole journal; debug builds are slow).
const DAEMON_READY: Duration = Duration::from_secs(30);
/// Bound on a daemon's exit after a signal, or on a refusing daemon's exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on a child's announcements.
const SAY_TIMEOUT: Duration = Duration::from_secs(30);
/// A producer's own bound on its run (it is normally killed long before).
const PRODUCER_BOUND: Duration = Duration::from_secs(60);
/// A lease that cannot lapse during a test.
const LONG_LEASE: Duration = Duration::from_secs(60);

/// Daemon flags of the load test: a ring large enough to retain every event appended.
const LOAD_ARGS: &str = "--nodes 256 --events 65536 --agents 8 --blob-chunks 8 --sets 4 --fsync always --grace-ms 1";
/// Daemon flags of the other tests.
const SMALL_ARGS: &str = "--nodes 1024 --events 4096 --agents 8 --blob-chunks 8 --sets 4 --fsync always --grace-ms 1";

/// `flags` split into arguments.
fn args(flags: &str) -> Vec<&str> {
    flags.split(' ').collect()
}
/// The load test's ring capacity (`--events`).
const LOAD_RING: u64 = 65_536;
/// Kill rounds of the load test.
const ROUNDS: u64 = 22;
/// Producer processes per round.
const PRODUCERS: u64 = 3;
/// Nodes the producers update.
const HOT_NODES: usize = 4;

#[test]
fn child_entry() {
    child_main(|role| match role {
        "producer" => producer(),
        "shell_claim" => shell_claim(),
        "session_claim" => session_claim(),
        "racer" => racer(),
        other => panic!("unknown role {other}"),
    })
}

// ---------------------------------------------------------------------------------------
// Small private helpers
// ---------------------------------------------------------------------------------------

/// xorshift64*: reproducible randomness without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng((seed ^ 0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The seed of a randomised test: `WN_DURABILITY_SEED` if set, else the clock. Printed so
/// that a failure can be replayed.
fn seed(test: &str) -> u64 {
    let s = std::env::var("WN_DURABILITY_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        t.as_nanos() as u64 ^ ((std::process::id() as u64) << 32)
    });
    eprintln!("{test}: seed {s} (set WN_DURABILITY_SEED={s} to replay)");
    s
}

/// FNV-1a, the payload checksum.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3))
}

/// CRC-32C (Castagnoli), bit by bit: to check this file's reading of the journal format.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() & 1 == 1 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// A checksummed payload: `round u32 | producer u32 | counter u64 | filler | fnv1a u64`.
fn make_payload(round: u32, producer: u32, counter: u64, rng: &mut Rng) -> Vec<u8> {
    let mut p = Vec::with_capacity(EVENT_PAYLOAD_MAX);
    p.extend_from_slice(&round.to_le_bytes());
    p.extend_from_slice(&producer.to_le_bytes());
    p.extend_from_slice(&counter.to_le_bytes());
    let filler = rng.below((EVENT_PAYLOAD_MAX - 24 + 1) as u64);
    for _ in 0..filler {
        p.push(rng.next() as u8);
    }
    let sum = fnv1a(&p);
    p.extend_from_slice(&sum.to_le_bytes());
    p
}

fn payload_ok(p: &[u8]) -> bool {
    p.len() >= 24 && p[p.len() - 8..] == fnv1a(&p[..p.len() - 8]).to_le_bytes()
}

/// Writes one whole line to stdout in a single write (lines in flight when the process
/// is killed are recognised by their missing ` END`).
fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    out.write_all(format!("\n{line} END\n").as_bytes()).expect("write line");
    out.flush().expect("flush line");
}

fn attach(name: &str, access: Access) -> Segment {
    Segment::attach(name, access).unwrap_or_else(|e| panic!("attach {name}: {e}"))
}

/// Starts `worknoded` with `args` and waits for its ready line.
fn start_daemon(g: &SegmentGuard, args: &[&str]) -> (Proc, String) {
    let d = g.spawn_daemon(args);
    let line = d.wait_for_line(Stream::Stdout, DAEMON_READY, |l| l.contains(" and ready at "));
    (d, line)
}

/// SIGTERM; the daemon must exit 0.
fn stop(d: &mut Proc) {
    d.signal(Signal::SIGTERM);
    let status = d.wait_exit(EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(0), "daemon exit after SIGTERM\n{}", d.transcript());
}

/// Waits (bounded) until a daemon expected to refuse its start exits, and returns its
/// status; panics, with its transcript, if it prints its ready line instead.
fn expect_refusal(d: &mut Proc, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + EXIT_TIMEOUT;
    loop {
        if let Some(s) = d.try_wait_exit(Duration::from_millis(10)) {
            return s;
        }
        assert!(!d.output(Stream::Stdout).contains(" and ready at "), "{what}: the daemon started\n{}", d.transcript());
        assert!(Instant::now() < deadline, "{what}: the daemon neither started nor exited\n{}", d.transcript());
    }
}

/// SIGKILL and reap.
fn kill9(p: &mut Proc) {
    p.signal(Signal::SIGKILL);
    let status = p.wait_exit(EXIT_TIMEOUT);
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32), "{} died by SIGKILL\n{}", p.label(), p.transcript());
}

/// Journal (`journal-*.wnj`) or snapshot (`snapshot-*.wns`) files of `dir`, by sequence.
fn files(dir: &Path, prefix: &str, suffix: &str) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?;
            let seq = name.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok()?;
            Some((seq, path))
        })
        .collect();
    v.sort();
    v
}

fn journals(dir: &Path) -> Vec<(u64, PathBuf)> {
    files(dir, "journal-", ".wnj")
}

fn snapshots(dir: &Path) -> Vec<(u64, PathBuf)> {
    files(dir, "snapshot-", ".wns")
}

/// Copies the regular files of `src` into a new directory `dst`.
fn copy_files(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap_or_else(|e| panic!("mkdir {}: {e}", dst.display()));
    for e in std::fs::read_dir(src).unwrap_or_else(|e| panic!("read_dir {}: {e}", src.display())) {
        let path = e.expect("dir entry").path();
        if path.is_file() {
            std::fs::copy(&path, dst.join(path.file_name().expect("file name"))).expect("copy");
        }
    }
}

// ---------------------------------------------------------------------------------------
// The journal format, read independently of the daemon
// ---------------------------------------------------------------------------------------

const HEADER_LEN: usize = 24;
const RECORD_OVERHEAD: usize = 9;
const KIND_EVENT: u8 = 1;

/// One record of a journal file: `[start, end)` bytes, its kind.
#[derive(Clone, Copy, Debug)]
struct Rec {
    start: usize,
    end: usize,
    kind: u8,
}

impl Rec {
    fn body<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        &bytes[self.start + RECORD_OVERHEAD..self.end]
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Parses a whole, undamaged journal file up to its zero tail (the daemon writes its
/// files ahead with zeros); every record's checksum must match.
fn parse_journal(bytes: &[u8]) -> Vec<Rec> {
    assert!(bytes.len() >= HEADER_LEN && &bytes[..8] == b"WNJRNL01", "not a journal file");
    let mut out = Vec::new();
    let mut at = HEADER_LEN;
    while at < bytes.len() {
        if bytes[at..].iter().all(|b| *b == 0) {
            break;
        }
        assert!(bytes.len() - at >= RECORD_OVERHEAD, "record header cut at {at}");
        let len = u32_at(bytes, at) as usize;
        let end = at + RECORD_OVERHEAD + len;
        assert!(end <= bytes.len(), "record at {at} runs past the end");
        assert_eq!(crc32c(&bytes[at + 8..end]), u32_at(bytes, at + 4), "checksum of the record at {at}");
        out.push(Rec { start: at, end, kind: bytes[at + 8] });
        at = end;
    }
    out
}

/// What identifies an event: sequence, clock, kind, node, node version, pid, payload.
type EventKey = (u64, u64, u32, [u8; 16], u64, u32, Vec<u8>);

fn key_of_record(r: &EventRecord) -> EventKey {
    (r.seq, r.hlc, r.kind, r.node, r.node_version, r.pid, r.payload[..r.payload_len as usize].to_vec())
}

/// The same, decoded from an Event record's body bytes.
fn key_of_body(b: &[u8]) -> EventKey {
    assert_eq!(b.len(), size_of::<EventRecord>(), "event record body size");
    let plen = u16::from_le_bytes(b[offset_of!(EventRecord, payload_len)..][..2].try_into().unwrap()) as usize;
    let p = offset_of!(EventRecord, payload);
    (
        u64_at(b, offset_of!(EventRecord, seq)),
        u64_at(b, offset_of!(EventRecord, hlc)),
        u32_at(b, offset_of!(EventRecord, kind)),
        b[offset_of!(EventRecord, node)..][..16].try_into().unwrap(),
        u64_at(b, offset_of!(EventRecord, node_version)),
        u32_at(b, offset_of!(EventRecord, pid)),
        b[p..p + plen].to_vec(),
    )
}

/// The events of the journal records `recs`.
fn journal_events(bytes: &[u8], recs: &[Rec]) -> Vec<EventKey> {
    recs.iter().filter(|r| r.kind == KIND_EVENT).map(|r| key_of_body(r.body(bytes))).collect()
}

fn ring_keys(seg: &Segment) -> Vec<EventKey> {
    ring_events(seg).iter().map(|e| key_of_record(e.record())).collect()
}

// ---------------------------------------------------------------------------------------
// Child roles
// ---------------------------------------------------------------------------------------

/// Appends checksummed user events and updates the hot nodes until killed. Prints
/// `ACK seq payload policy` for every append that returned Ok (`policy`: the segment's
/// durability policy read after it returned), `NACK seq payload` for every append
/// refused as not durable (the daemon died), and `UPD uuid version valuebits` for every
/// update that returned Ok.
fn producer() -> Value {
    let seg = attach(&env_str(SEGMENT_ENV), Access::ReadWrite);
    let round = env_u64("WN_ROUND") as u32;
    let id = env_u64("WN_PRODUCER") as u32;
    let mut rng = Rng::new(env_u64("WN_SEED"));
    let nodes: Vec<(Uuid, Handle)> = env_str("WN_NODES")
        .split(',')
        .map(|u| {
            let uuid: Uuid = u.parse().expect("uuid");
            (uuid, seg.lookup(uuid).unwrap_or_else(|e| panic!("hot node {uuid}: {e}")))
        })
        .collect();
    say("ready");
    let deadline = Instant::now() + PRODUCER_BOUND;
    let mut counter = 0u64;
    let (mut acks, mut failures) = (0u64, 0u64);
    while Instant::now() < deadline {
        counter += 1;
        let ok = if rng.below(3) == 0 {
            let (uuid, h) = nodes[rng.below(nodes.len() as u64) as usize];
            // Unique per (round, producer, counter), exact in an f64.
            let value = (round as u64 * 1_000_000_000 + id as u64 * 100_000_000 + counter) as f64;
            match seg.update(h, |n| {
                n.set_value(value)?;
                Ok(())
            }) {
                Ok(n) => {
                    emit(&format!("UPD {uuid} {} {}", n.version(), value.to_bits()));
                    true
                }
                Err(_) => false,
            }
        } else {
            let payload = make_payload(round, id, counter, &mut rng);
            match seg.append(&NewEvent::new(EventKind::USER).payload(&payload)) {
                Ok(seq) => {
                    // The policy the segment shows once the append returned: `Off` means
                    // the append cannot have waited for the journal.
                    emit(&format!("ACK {seq} {} {:?}", hex(&payload), seg.durability()));
                    true
                }
                Err(RingError::NotDurable { seq, .. }) => {
                    emit(&format!("NACK {seq} {}", hex(&payload)));
                    false
                }
                Err(_) => false,
            }
        };
        if ok {
            acks += 1;
        } else {
            failures += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    json!({ "acks": acks, "failures": failures })
}

/// A shell-style agent: joins without a session, claims `WN_TASK` with a long lease, and
/// exits (the claim is held by its lease, not by a process).
fn shell_claim() -> Value {
    let seg = attach(&env_str(SEGMENT_ENV), Access::ReadWrite);
    let task = handles_from_env("WN_TASK")[0];
    let agent = seg.join("shell-agent", "worker").expect("join");
    let c = seg.claim(task, agent, LONG_LEASE).expect("claim");
    json!({ "agent": agent.index, "epoch": c.epoch, "lease_until_ms": c.lease_until_ms })
}

/// A session agent: opens a session, claims `WN_TASK` with a long lease, announces it and
/// stays alive until killed.
fn session_claim() -> Value {
    let seg = attach(&env_str(SEGMENT_ENV), Access::ReadWrite);
    let task = handles_from_env("WN_TASK")[0];
    let session = seg.open_session("session-agent", "worker").expect("open_session");
    assert!(session.watched_by_daemon(), "the daemon does not watch the session");
    let c = seg.claim(task, session.id(), LONG_LEASE).expect("claim");
    say(&format!("claimed {} {} {}", session.id().index, c.epoch, c.lease_until_ms));
    std::thread::sleep(PRODUCER_BOUND);
    json!({ "survived": true })
}

/// An agent racing the daemon's start: waits for the segment, appends `WN_COUNT` user
/// events as soon as it is Ready, and reports each acknowledged append with the segment's
/// durability policy read after it returned.
fn racer() -> Value {
    let name = env_str(SEGMENT_ENV);
    let mut rng = Rng::new(env_u64("WN_SEED"));
    say("waiting");
    let deadline = Instant::now() + SAY_TIMEOUT;
    let seg = loop {
        // No wait inside attach: poll Ready as tightly as the segment's absence.
        match Segment::attach_with(&name, Access::ReadWrite, Duration::ZERO) {
            Ok(s) => break s,
            Err(e) => assert!(Instant::now() < deadline, "the segment never appeared: {e}"),
        }
        std::thread::sleep(Duration::from_micros(50));
    };
    let acks: Vec<Value> = (0..env_u64("WN_COUNT"))
        .map(|i| {
            let payload = make_payload(0, 9, i, &mut rng);
            let seq = seg.append(&NewEvent::new(EventKind::USER).payload(&payload)).expect("append");
            json!([seq, hex(&payload), format!("{:?}", seg.durability())])
        })
        .collect();
    json!({ "acks": acks })
}

// ---------------------------------------------------------------------------------------
// 1. SIGKILL under load, host restart, acknowledged writes all back
// ---------------------------------------------------------------------------------------

/// What one round's producers reported (complete lines only).
#[derive(Default)]
struct Reported {
    /// seq, payload of acknowledged appends, and whether the segment's policy still read
    /// `Off` after the append returned.
    acks: Vec<(u64, Vec<u8>, bool)>,
    /// seq → payload of appends refused as not durable.
    nacks: Vec<(u64, Vec<u8>)>,
    /// Acknowledged updates: node, version, value bits.
    updates: Vec<(Uuid, u64, u64)>,
}

fn parse_producer(p: &Proc, out: &mut Reported) {
    for line in p.output(Stream::Stdout).lines() {
        // A line cut short by the kill lacks its ` END` and is not counted.
        let Some(line) = line.strip_suffix(" END") else { continue };
        let f: Vec<&str> = line.split(' ').collect();
        let parsed = match f.as_slice() {
            ["ACK", seq, payload, policy] => {
                seq.parse().ok().zip(unhex(payload)).map(|(s, p)| out.acks.push((s, p, *policy == "Off")))
            }
            ["NACK", seq, payload] => seq.parse().ok().zip(unhex(payload)).map(|a| out.nacks.push(a)),
            ["UPD", uuid, version, bits] => (|| {
                out.updates.push((uuid.parse().ok()?, version.parse().ok()?, bits.parse().ok()?));
                Some(())
            })(),
            _ => Some(()),
        };
        assert!(parsed.is_some(), "{}: malformed line {line:?}", p.label());
    }
}

/// Several producer processes append and update; the daemon (`--fsync always`) is killed
/// with SIGKILL at a random point; the producers are killed too and the segment removed
/// (a host restart); the restarted daemon rebuilds it from the journal. After every round:
/// every acknowledged append of every round so far is in the ring at its sequence with
/// its payload, exactly once and in order; every event's payload checksum holds; every
/// node is at least at its last acknowledged version (with that value if equal) and at
/// least at the version of every update event the ring holds for it.
///
/// Violations are collected over all rounds (each missing event reported once, with the
/// round and the snapshot the restore started from) and asserted at the end, so that one
/// failure still shows what every later round did.
#[test]
fn acknowledged_writes_survive_sigkill_of_the_daemon_and_a_host_restart() {
    let g = SegmentGuard::new("dur-kill");
    let mut rng = Rng::new(seed("dur-kill"));
    let (mut d, line) = start_daemon(&g, &args(LOAD_ARGS));
    assert!(line.contains(" created and ready"), "{line}");
    let hot: Vec<Uuid> = {
        let seg = attach(g.name(), Access::ReadWrite);
        (0..HOT_NODES)
            .map(|i| {
                let h = seg.add(seg.root(), &NewNode::new(NodeKind::Task, &format!("hot-{i}"))).expect("add");
                seg.read(h).expect("read").uuid()
            })
            .collect()
    };
    let hot_env = hot.iter().map(Uuid::to_string).collect::<Vec<_>>().join(",");

    // Acknowledged appends of every round: seq → (round, payload).
    let mut acked: BTreeMap<u64, (u64, Vec<u8>)> = BTreeMap::new();
    let mut node_acked: HashMap<Uuid, (u64, u64)> = HashMap::new();
    let mut problems: Vec<String> = Vec::new();
    // Appends acknowledged while the segment's policy still read `Off` under `--fsync always`.
    let mut acked_off: Vec<u64> = Vec::new();
    // Acknowledged events found missing: seq → the round it was found missing in.
    let mut missing: BTreeMap<u64, u64> = BTreeMap::new();
    // Sequences of appends refused as not durable whose event did not come back: a later
    // event may take the same sequence number.
    let mut lost_nacks: HashMap<u64, Vec<u8>> = HashMap::new();
    let (mut nacks_kept, mut nacks_lost, mut seqs_reused, mut torn_tails, mut early_kills) = (0, 0, 0, 0, 0);
    let mut tails = Vec::new();
    let mut prev_tail = 0;
    for round in 0..ROUNDS {
        let mut producers: Vec<Proc> = (0..PRODUCERS)
            .map(|i| {
                g.spawn_role(
                    "producer",
                    &[
                        ("WN_ROUND", round.to_string()),
                        ("WN_PRODUCER", i.to_string()),
                        ("WN_NODES", hot_env.clone()),
                        ("WN_SEED", rng.next().to_string()),
                    ],
                )
            })
            .collect();
        // Mostly kill while the producers run; sometimes while they are still starting.
        if rng.below(5) == 0 {
            early_kills += 1;
            std::thread::sleep(Duration::from_millis(rng.below(40)));
        } else {
            for p in &producers {
                p.wait_for_say("ready", SAY_TIMEOUT);
            }
            std::thread::sleep(Duration::from_millis(5 + rng.below(120)));
            for p in producers.iter_mut() {
                assert!(p.try_wait_exit(Duration::ZERO).is_none(), "round {round}: producer died\n{}", p.transcript());
            }
        }
        kill9(&mut d);
        let snapshots_by_killed: Vec<String> =
            d.output(Stream::Stderr).lines().filter(|l| l.contains("snapshot")).map(str::to_string).collect();
        let mut rep = Reported::default();
        for p in producers.iter_mut() {
            kill9(p);
            parse_producer(p, &mut rep);
        }
        drop(producers);
        Segment::unlink(g.name()).expect("unlink the segment (host restart)");

        let (d2, line) = start_daemon(&g, &args(LOAD_ARGS));
        d = d2;
        assert!(line.contains(" restored and ready"), "round {round}: {line}\n{}", d.transcript());
        let rebuilt = d.wait_for_line(Stream::Stderr, DAEMON_READY, |l| l.contains("rebuilt from"));
        if d.output(Stream::Stderr).contains("a torn final write") {
            torn_tails += 1;
        }
        let seg = attach(g.name(), Access::ReadOnly);
        let tail = seg.ring_tail();
        tails.push(tail);
        // A rebuild numbers on from the journal's sequence reservation (a quarter ring
        // past the newest event at most), so events older than one ring before the tail
        // have left the ring: they were checked in the rounds they were still in it.
        let window_start = tail.saturating_sub(LOAD_RING);

        // Seqs of lost unconfirmed appends that acknowledged appends now carry.
        for (seq, _, _) in &rep.acks {
            if lost_nacks.remove(seq).is_some() {
                seqs_reused += 1;
            }
        }
        for (seq, payload, off) in &rep.acks {
            if let Some((r, _)) = acked.insert(*seq, (round, payload.clone())) {
                problems.push(format!("round {round}: sequence {seq} acknowledged again (first in round {r})"));
            }
            if *off {
                acked_off.push(*seq);
            }
        }
        for (uuid, version, bits) in &rep.updates {
            let e = node_acked.entry(*uuid).or_insert((0, 0));
            if *version > e.0 {
                *e = (*version, *bits);
            }
        }

        let events = ring_events(&seg);
        let mut by_seq: BTreeMap<u64, &Event> = BTreeMap::new();
        let mut payload_count: HashMap<&[u8], usize> = HashMap::new();
        let mut last = None;
        for e in &events {
            if last.is_some_and(|l| e.seq() <= l) {
                problems.push(format!("round {round}: ring out of order: {} after {last:?}", e.seq()));
            }
            last = Some(e.seq());
            by_seq.insert(e.seq(), e);
            if e.kind() == EventKind::USER {
                if !payload_ok(e.payload()) {
                    problems.push(format!("round {round}: event {} has a bad payload checksum", e.seq()));
                }
                *payload_count.entry(e.payload()).or_default() += 1;
            }
        }
        // The restored daemon numbers on from the journal's next sequence: right after the
        // newest event restored; and this round's appends were numbered from the tail the
        // previous restore left.
        if last.is_some_and(|l| tail <= l) {
            problems.push(format!("round {round}: ring tail {tail} is not after the newest event {last:?}"));
        }
        if let Some((seq, _, _)) = rep.acks.iter().find(|(s, _, _)| *s < prev_tail) {
            problems
                .push(format!("round {round}: acknowledged seq {seq} is below the tail {prev_tail} restored before"));
        }
        prev_tail = tail;
        let mut missing_now = Vec::new();
        for (seq, (acked_in, payload)) in acked.range(window_start..) {
            match by_seq.get(seq) {
                None => {
                    if !missing.contains_key(seq) {
                        missing.insert(*seq, round);
                        missing_now.push((*seq, *acked_in));
                    }
                }
                Some(e) if e.kind() != EventKind::USER || e.payload() != &payload[..] => problems.push(format!(
                    "round {round}: acknowledged event {seq} (round {acked_in}) came back as another event: kind {:?}",
                    e.kind()
                )),
                Some(_) => {}
            }
        }
        if !missing_now.is_empty() {
            let (first, last) = (missing_now[0], missing_now[missing_now.len() - 1]);
            let off = missing_now.iter().filter(|(s, _)| acked_off.contains(s)).count();
            problems.push(format!(
                "round {round}: {} acknowledged events missing after the restart (seq {} of round {} .. seq {} of \
                 round {}; {off} of them acknowledged while the policy read Off); the ring holds {} events, tail \
                 {tail}; restore: {rebuilt}; snapshots the killed daemon wrote: {snapshots_by_killed:?}",
                missing_now.len(),
                first.0,
                first.1,
                last.0,
                last.1,
                events.len(),
            ));
        }
        for (payload, n) in &payload_count {
            if *n != 1 {
                problems.push(format!("round {round}: a user event appears {n} times: {}", hex(payload)));
            }
        }
        for (seq, payload) in &rep.nacks {
            if by_seq.get(seq).is_some_and(|e| e.payload() == &payload[..]) {
                nacks_kept += 1;
            } else {
                nacks_lost += 1;
                lost_nacks.insert(*seq, payload.clone());
            }
        }
        // Nodes: at least the last acknowledged state, and at least every update the ring
        // (that is, the journal) holds an event of.
        for uuid in &hot {
            let n = match seg.lookup(*uuid).and_then(|h| seg.read(h)) {
                Ok(n) => n,
                Err(e) => {
                    problems.push(format!("round {round}: node {uuid} lost: {e}"));
                    continue;
                }
            };
            if let Some((version, bits)) = node_acked.get(uuid) {
                if n.version() < *version {
                    problems.push(format!(
                        "round {round}: node {uuid} restored at version {} below its acknowledged {version}",
                        n.version()
                    ));
                } else if n.version() == *version && n.value().to_bits() != *bits {
                    problems.push(format!("round {round}: node {uuid} v{version} restored with another value"));
                }
            }
            let journaled = events
                .iter()
                .filter(|e| e.kind() == EventKind::NODE_UPDATED && e.node() == Some(*uuid))
                .map(Event::node_version)
                .max()
                .unwrap_or(0);
            if n.version() < journaled {
                problems.push(format!(
                    "round {round}: node {uuid} restored at version {} below its update event v{journaled}",
                    n.version()
                ));
            }
        }
        eprintln!(
            "round {round}: {} acks ({} with the policy reading Off), {} updates, {} refused appends; ring now {} \
             events, tail {tail}; {}",
            rep.acks.len(),
            rep.acks.iter().filter(|a| a.2).count(),
            rep.updates.len(),
            rep.nacks.len(),
            events.len(),
            rebuilt.trim_start_matches("worknoded: ")
        );
    }
    stop(&mut d);
    let versions: Vec<u64> = hot.iter().map(|u| node_acked.get(u).map_or(0, |v| v.0)).collect();
    eprintln!(
        "dur-kill summary: {ROUNDS} rounds ({early_kills} killed while producers started), {} acknowledged events \
         ({} missing), acknowledged node versions {versions:?}, ring tails {tails:?}; appends refused as not \
         durable: {nacks_kept} came back anyway, {nacks_lost} did not ({seqs_reused} of their sequence numbers were \
         later given to other acknowledged events); torn tails cut: {torn_tails}",
        acked.len(),
        missing.len()
    );
    assert!(acked.len() as u64 >= ROUNDS, "the producers were acknowledged almost nothing: {}", acked.len());
    if !acked_off.is_empty() {
        problems.push(format!(
            "{} appends returned Ok under --fsync always while the segment's durability policy still read Off (the \
             daemon's journal thread had not set it yet), so they did not wait for the journal: seqs {:?}",
            acked_off.len(),
            &acked_off[..acked_off.len().min(20)]
        ));
    }
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));
}

/// Attempts of the start race (each with a fresh daemon): the window is short, and one
/// attempt may miss it.
const RACE_ATTEMPTS: u64 = 5;

/// An agent that appends the moment the segment is Ready, possibly before the daemon's
/// journal thread has started: under `--fsync always` no append may return before it is
/// journaled (the segment's policy must not read `Off` after one returned), and after
/// kill -9 and a host restart every acknowledged append is back. Repeated
/// [`RACE_ATTEMPTS`] times; every attempt's problems are reported.
#[test]
fn appends_racing_the_daemon_start_are_durable_and_survive_a_host_restart() {
    let mut rng = Rng::new(seed("dur-race"));
    let mut problems = Vec::new();
    for attempt in 0..RACE_ATTEMPTS {
        let g = SegmentGuard::new(&format!("dur-race-{attempt}"));
        let mut racer = g.spawn_role("racer", &[("WN_COUNT", "200".into()), ("WN_SEED", rng.next().to_string())]);
        racer.wait_for_say("waiting", SAY_TIMEOUT);
        let (mut d, line) = start_daemon(&g, &args(LOAD_ARGS));
        assert!(line.contains(" created and ready"), "{line}");
        let report = racer.expect_report(SAY_TIMEOUT);
        let acks: Vec<(u64, Vec<u8>, String)> = report["acks"]
            .as_array()
            .expect("acks")
            .iter()
            .map(|a| {
                let seq = a[0].as_u64().expect("seq");
                let payload = unhex(a[1].as_str().expect("payload")).expect("hex");
                (seq, payload, a[2].as_str().expect("policy").to_string())
            })
            .collect();
        let off: Vec<u64> = acks.iter().filter(|a| a.2 == "Off").map(|a| a.0).collect();
        if !off.is_empty() {
            problems.push(format!(
                "attempt {attempt}: {} of {} appends returned Ok while the segment's durability policy still read Off \
                 (the journal thread had not started), so they did not wait for the journal: seqs {:?}",
                off.len(),
                acks.len(),
                &off[..off.len().min(10)]
            ));
        }
        kill9(&mut d);
        let snapshots_written: Vec<String> =
            d.output(Stream::Stderr).lines().filter(|l| l.contains("snapshot")).map(str::to_string).collect();
        Segment::unlink(g.name()).expect("unlink (host restart)");
        let journal_bytes: u64 =
            journals(&g.data_dir()).iter().map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len())).sum();
        let (mut d, line) = start_daemon(&g, &args(LOAD_ARGS));
        if !line.contains(" restored and ready") {
            problems.push(format!(
                "attempt {attempt}: the restarted daemon did not restore although the journal holds {journal_bytes} \
                 bytes (the killed daemon wrote {snapshots_written:?}): {line}"
            ));
        }
        let seg = attach(g.name(), Access::ReadOnly);
        let ring: HashMap<u64, Vec<u8>> = ring_events(&seg).iter().map(|e| (e.seq(), e.payload().to_vec())).collect();
        let missing: Vec<&(u64, Vec<u8>, String)> = acks.iter().filter(|(s, p, _)| ring.get(s) != Some(p)).collect();
        if !missing.is_empty() {
            let durable = missing.iter().filter(|a| a.2 != "Off").count();
            problems.push(format!(
                "attempt {attempt}: {} of {} acknowledged appends are missing after the restart ({durable} of them \
                 acknowledged with the policy reading Always): seqs {:?}; the killed daemon wrote {snapshots_written:?}; \
                 the restarted one: {}",
                missing.len(),
                acks.len(),
                missing.iter().map(|a| a.0).take(10).collect::<Vec<_>>(),
                d.output(Stream::Stderr).trim()
            ));
        }
        drop(seg);
        stop(&mut d);
    }
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));
}

// ---------------------------------------------------------------------------------------
// 2 and 5. Torn tails, corruption in the middle, another layout version
// ---------------------------------------------------------------------------------------

/// A journal written by a daemon that was stopped cleanly.
struct Written {
    /// The data directory.
    dir: PathBuf,
    /// Its last journal file and that file's bytes and records.
    journal: PathBuf,
    bytes: Vec<u8>,
    recs: Vec<Rec>,
    /// Acknowledged user appends: seq, payload.
    acked: Vec<(u64, Vec<u8>)>,
}

/// Runs a daemon (`--fsync always`), appends `n` user events (updating a node now and
/// then, so node images lie between them) and stops it with SIGTERM.
fn write_journal(g: &SegmentGuard, n: u64) -> Written {
    let (mut d, line) = start_daemon(g, &args(SMALL_ARGS));
    assert!(line.contains(" created and ready"), "{line}");
    let mut rng = Rng::new(n);
    let mut acked = Vec::new();
    {
        let seg = attach(g.name(), Access::ReadWrite);
        // The initial snapshot first: it would otherwise take in (and compact away) what
        // follows, see the load test.
        wait_until(Duration::from_secs(10), || seg.snapshots_done() >= 1, || "the initial snapshot".into());
        let node = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "journaled")).expect("add");
        for i in 0..n {
            if i % 7 == 3 {
                seg.update(node, |x| {
                    x.set_value(i as f64)?;
                    Ok(())
                })
                .expect("update");
            }
            let payload = make_payload(0, 0, i, &mut rng);
            let seq = seg.append(&NewEvent::new(EventKind::USER).payload(&payload)).expect("append");
            acked.push((seq, payload));
        }
    }
    stop(&mut d);
    let dir = g.data_dir();
    let (_, journal) = journals(&dir).pop().expect("a journal file");
    let bytes = std::fs::read(&journal).expect("read the journal");
    let recs = parse_journal(&bytes);
    Written { dir, journal, bytes, recs, acked }
}

/// Copies the data directory to `g.data_dir()/name` (removed with the guard) and returns
/// the copy and the path of its last journal file.
fn copy_data(g: &SegmentGuard, w: &Written, name: &str) -> (PathBuf, PathBuf) {
    let copy = g.data_dir().join(name);
    copy_files(&w.dir, &copy);
    let journal = copy.join(w.journal.file_name().expect("file name"));
    (copy, journal)
}

fn args_with_dir<'a>(dir: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a: Vec<&str> = args(SMALL_ARGS);
    a.push("--data-dir");
    a.push(dir.to_str().expect("utf-8 path"));
    a.extend_from_slice(extra);
    a
}

/// Cuts the last record of the journal at every byte offset inside it (or, for a large
/// record, at a random sample of at least 60 offsets that includes every offset of its
/// 9-byte header and the last byte) — by truncating the file there, or (every other
/// offset) by zeroing everything from there on, as a torn write into the pre-zeroed
/// tail leaves it: the daemon starts, warns naming the offset, cuts the file at the
/// record's start, and every event before the record is back. The same with garbage
/// after a stretch of the zero tail (a later page of an unacknowledged write that
/// reached the disk first). Then a byte
/// flipped in the middle: refused (exit 1) naming the file, the offset and --salvage;
/// with --salvage it starts and keeps every valid record (all but the damaged one), and
/// moves the damaged file aside.
#[test]
fn a_torn_tail_is_cut_at_the_record_start_and_corruption_in_the_middle_is_refused() {
    let g = SegmentGuard::new("dur-torn");
    let w = write_journal(&g, 60);
    let last = *w.recs.last().expect("records");
    assert_eq!(last.kind, KIND_EVENT, "the last record is the last append's event");
    let last_event = key_of_body(last.body(&w.bytes));
    assert_eq!((last_event.0, &last_event.6), (w.acked.last().unwrap().0, &w.acked.last().unwrap().1));
    let kept = journal_events(&w.bytes, &w.recs[..w.recs.len() - 1]);
    for (seq, payload) in &w.acked[..w.acked.len() - 1] {
        assert!(kept.iter().any(|k| k.0 == *seq && &k.6 == payload), "acknowledged event {seq} is not journaled");
    }

    let mut rng = Rng::new(seed("dur-torn"));
    let inside: Vec<usize> = (last.start + 1..last.end).collect();
    let offsets: Vec<usize> = if inside.len() <= 200 {
        inside
    } else {
        let mut o: Vec<usize> = (last.start + 1..=last.start + RECORD_OVERHEAD).chain([last.end - 1]).collect();
        while o.len() < 60 {
            let x = last.start + 1 + rng.below((last.end - last.start - 1) as u64) as usize;
            if !o.contains(&x) {
                o.push(x);
            }
        }
        o
    };
    eprintln!("dur-torn: last record [{}, {}), cutting at {} offsets", last.start, last.end, offsets.len());
    let garbage_after_zeros = last.end + 700;
    assert!(garbage_after_zeros + 64 < w.bytes.len(), "the file has a zero tail");
    for (i, cut) in offsets.iter().chain([&garbage_after_zeros]).enumerate() {
        let (copy, journal) = copy_data(&g, &w, &format!("cut-{cut}"));
        if *cut == garbage_after_zeros {
            let mut bytes = w.bytes.clone();
            bytes[last.start..].fill(0);
            bytes[*cut..*cut + 64].fill(0xA5);
            std::fs::write(&journal, &bytes).expect("write the journal with garbage after zeros");
        } else if i % 2 == 1 && w.bytes[*cut..last.end].iter().any(|b| *b != 0) {
            // (Zeroing only bytes that were zero anyway would leave the record whole.)
            let mut bytes = w.bytes.clone();
            bytes[*cut..].fill(0);
            std::fs::write(&journal, &bytes).expect("write the journal torn into its zero tail");
        } else {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&journal)
                .and_then(|f| f.set_len(*cut as u64))
                .expect("truncate");
        }
        let _ = Segment::unlink(g.name());
        let (mut d, line) = start_daemon(&g, &args_with_dir(&copy, &[]));
        assert!(line.contains(" restored and ready"), "cut at {cut}: {line}\n{}", d.transcript());
        let warning = d.wait_for_line(Stream::Stderr, DAEMON_READY, |l| l.contains("torn final write"));
        assert!(
            warning.contains(&journal.display().to_string())
                && warning.contains(&format!("at byte {}", last.start))
                && warning.contains("torn"),
            "cut at {cut}: the warning must name the file and the record's offset {}: {warning}",
            last.start
        );
        // Cut at the record's start; the new daemon writes on in the file named for
        // where the journal ends, never into this one.
        let len = std::fs::metadata(&journal).expect("journal after recovery").len();
        assert_eq!(len, last.start as u64, "cut at {cut}: the file must be cut at the record's start");
        let seg = attach(g.name(), Access::ReadOnly);
        assert_eq!(ring_keys(&seg), kept, "cut at {cut}: the events before the torn record, exactly");
        drop(seg);
        stop(&mut d);
        std::fs::remove_dir_all(&copy).expect("remove the copy");
    }

    // A flipped byte in the body of a record in the middle.
    let mid = w.recs.len() / 2;
    let bad = w.recs[mid];
    assert!(mid + 1 < w.recs.len());
    let at = bad.start + RECORD_OVERHEAD + (bad.end - bad.start - RECORD_OVERHEAD) / 2;
    let (copy, journal) = copy_data(&g, &w, "flipped");
    let mut bytes = w.bytes.clone();
    bytes[at] ^= 0x10;
    std::fs::write(&journal, &bytes).expect("write the damaged journal");
    let _ = Segment::unlink(g.name());
    let mut d = g.spawn_daemon(&args_with_dir(&copy, &[]));
    let status = expect_refusal(&mut d, "a journal damaged in the middle");
    assert_eq!(status.code(), Some(1), "a journal damaged in the middle must be refused\n{}", d.transcript());
    let err = d.output(Stream::Stderr);
    assert!(
        err.contains(&journal.display().to_string())
            && err.contains(&format!("at byte {}", bad.start))
            && err.contains("--salvage"),
        "the error must name the file, the damaged record's offset {} and --salvage:\n{err}",
        bad.start
    );
    assert!(!d.output(Stream::Stdout).contains("ready"), "{}", d.transcript());
    assert!(!g.shm_path().exists(), "a refusing daemon creates no segment");
    assert_eq!(std::fs::read(&journal).expect("journal"), bytes, "a refusing daemon leaves the journal as it is");

    let (mut d, line) = start_daemon(&g, &args_with_dir(&copy, &["--salvage"]));
    assert!(line.contains(" restored and ready"), "--salvage: {line}\n{}", d.transcript());
    let warning = d.wait_for_line(Stream::Stderr, DAEMON_READY, |l| l.contains("salvage:"));
    assert!(warning.contains(&format!("at byte {}", bad.start)) && warning.contains("salvage"), "{warning}");
    let seg = attach(g.name(), Access::ReadOnly);
    // Every valid record is kept: the scan resumes after the damaged one.
    let valid: Vec<Rec> = w.recs.iter().enumerate().filter(|(i, _)| *i != mid).map(|(_, r)| *r).collect();
    let kept = journal_events(&w.bytes, &valid);
    assert!(kept.len() > journal_events(&w.bytes, &w.recs[..mid]).len(), "records after the damage are kept");
    assert_eq!(ring_keys(&seg), kept, "--salvage keeps every event but the damaged record's");
    drop(seg);
    // The damaged file is kept aside, untouched; a snapshot now holds what was kept.
    let aside = journal.with_extension("wnj.damaged");
    assert_eq!(std::fs::read(&aside).expect("the damaged journal is kept aside"), bytes);
    assert!(!journal.exists(), "the damaged journal no longer sits in the replay path");
    stop(&mut d);
    let _ = Segment::unlink(g.name());
    let (mut d, line) = start_daemon(&g, &args_with_dir(&copy, &[]));
    assert!(line.contains(" restored and ready"), "after salvage a plain start works: {line}\n{}", d.transcript());
    let seg = attach(g.name(), Access::ReadOnly);
    assert_eq!(ring_keys(&seg), kept, "the salvaged state survives the next restart");
    drop(seg);
    stop(&mut d);
}

/// A journal whose header names layout version 999 is refused, naming the version and
/// the file; nothing is created.
#[test]
fn a_journal_of_another_layout_version_is_refused() {
    let g = SegmentGuard::new("dur-layout");
    let w = write_journal(&g, 5);
    let (copy, journal) = copy_data(&g, &w, "v999");
    let mut bytes = w.bytes.clone();
    bytes[8..12].copy_from_slice(&999u32.to_le_bytes());
    std::fs::write(&journal, &bytes).expect("rewrite the header");
    let _ = Segment::unlink(g.name());
    let mut d = g.spawn_daemon(&args_with_dir(&copy, &[]));
    let status = expect_refusal(&mut d, "a journal of layout version 999");
    assert_eq!(status.code(), Some(1), "another layout version must be refused\n{}", d.transcript());
    let err = d.output(Stream::Stderr);
    assert!(
        err.contains("layout version 999") && err.contains(&journal.display().to_string()),
        "the error must name the file and its version:\n{err}"
    );
    assert!(!g.shm_path().exists(), "a refusing daemon creates no segment");
    assert_eq!(std::fs::read(&journal).expect("journal"), bytes, "the refused journal is left as it is");
}

/// The same for the newest snapshot: a snapshot whose header names layout version 999 is
/// refused, naming the version and the file, rather than skipped (the journal files it
/// replaced are gone, so what remains cannot rebuild the state). The journal after it
/// holds only user events here.
#[test]
fn a_snapshot_of_another_layout_version_is_refused() {
    let g = SegmentGuard::new("dur-snap-layout");
    let (mut d, line) = start_daemon(&g, &args(SMALL_ARGS));
    assert!(line.contains(" created and ready"), "{line}");
    {
        let seg = attach(g.name(), Access::ReadWrite);
        wait_until(Duration::from_secs(10), || seg.snapshots_done() >= 1, || "the initial snapshot".into());
        seg.add(seg.root(), &NewNode::new(NodeKind::Task, "kept in the snapshot")).expect("add");
        let req = seg.request_snapshot().expect("a read-write handle may ask for a snapshot");
        wait_until(Duration::from_secs(10), || seg.snapshots_done() >= req, || format!("snapshot request {req}"));
        for i in 0..3u8 {
            seg.append(&NewEvent::new(EventKind::USER).payload(&[i])).expect("append");
        }
    }
    stop(&mut d);
    let (_, snapshot) = snapshots(&g.data_dir()).pop().expect("a snapshot");
    let mut bytes = std::fs::read(&snapshot).expect("read the snapshot");
    assert_eq!(&bytes[..8], b"WNSNAP01");
    bytes[8..12].copy_from_slice(&999u32.to_le_bytes());
    std::fs::write(&snapshot, &bytes).expect("rewrite the header");
    let _ = Segment::unlink(g.name());
    let mut d = g.spawn_daemon(&args(SMALL_ARGS));
    let status = expect_refusal(&mut d, "a snapshot of layout version 999");
    assert_eq!(status.code(), Some(1), "{}", d.transcript());
    let err = d.output(Stream::Stderr);
    assert!(
        err.contains("layout version 999") && err.contains(&snapshot.display().to_string()),
        "the error must name the file and its version:\n{err}"
    );
    assert!(!g.shm_path().exists(), "a refusing daemon creates no segment");
}

// ---------------------------------------------------------------------------------------
// 3. Snapshots
// ---------------------------------------------------------------------------------------

/// Every node: uuid → (handle, its whole record as printed by `Debug`).
fn node_images(seg: &Segment) -> BTreeMap<Uuid, (Handle, String)> {
    let mut m = BTreeMap::new();
    seg.for_each_node(|n| {
        m.insert(n.uuid(), (n.handle(), format!("{:?}", n.record())));
        true
    })
    .expect("for_each_node");
    m
}

/// `--journal-rotate-mb 1`: node updates rotate the journal into a snapshot and the old
/// journal and snapshot files are removed; a requested snapshot does the same. After
/// more changes (updates, deletions, additions), kill -9 and a host restart: restored
/// from that snapshot plus one journal file, with every node's record identical
/// (same slot, generation and bytes) and the tree's child order kept.
#[test]
fn snapshots_compact_the_journal_and_a_restart_restores_every_node_exactly() {
    let g = SegmentGuard::new("dur-snap");
    let mut flags: Vec<&str> = args(SMALL_ARGS);
    flags.extend(["--journal-rotate-mb", "1"]);
    let (mut d, line) = start_daemon(&g, &flags);
    assert!(line.contains(" created and ready"), "{line}");
    let dir = g.data_dir();
    let seg = attach(g.name(), Access::ReadWrite);
    wait_until(Duration::from_secs(10), || seg.snapshots_done() >= 1, || "the initial snapshot".into());
    let initial = snapshots(&dir);
    assert_eq!(initial.len(), 1, "{initial:?}");

    let project = seg.add(seg.root(), &NewNode::new(NodeKind::Project, "snap")).expect("add");
    let nodes: Vec<Handle> = (0..300)
        .map(|i| seg.add(project, &NewNode::new(NodeKind::Task, &format!("t{i}")).priority(i as u8)).expect("add"))
        .collect();
    // Updates from four threads until the journal passes 1 MiB and rotates.
    let stop_flag = AtomicBool::new(false);
    let updates = AtomicU64::new(0);
    let update = |k: u64| {
        let h = nodes[(k as usize * 7) % nodes.len()];
        seg.update(h, |n| {
            n.set_value(k as f64)?;
            n.set_description(&format!("revision {k} {}", "x".repeat((k % 200) as usize)))
        })
        .expect("update");
    };
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (stop_flag, updates, update) = (&stop_flag, &updates, &update);
            s.spawn(move || {
                let mut k = t;
                while !stop_flag.load(Ordering::Relaxed) && k < 40_000 {
                    update(k);
                    updates.fetch_add(1, Ordering::Relaxed);
                    k += 4;
                }
            });
        }
        wait_until(
            Duration::from_secs(60),
            || snapshots(&dir).last().is_some_and(|(s, _)| *s > initial[0].0),
            || format!("no rotation after {} updates; files: {:?}", updates.load(Ordering::Relaxed), journals(&dir)),
        );
        stop_flag.store(true, Ordering::Relaxed);
    });
    let rotated = snapshots(&dir).last().expect("rotation snapshot").0;
    wait_until(
        Duration::from_secs(10),
        // The snapshot before the newest stays (with the journals from it on), so one
        // damaged snapshot can fall back to it; everything older goes.
        || {
            snapshots(&dir).len() <= 2
                && journals(&dir).first().is_some_and(|(s, _)| *s >= snapshots(&dir)[0].0)
                && snapshots(&dir).last().is_some_and(|(s, _)| *s >= rotated)
        },
        || format!("old files not removed after rotation: {:?} {:?}", snapshots(&dir), journals(&dir)),
    );
    eprintln!("dur-snap: rotated after {} updates: {:?}", updates.load(Ordering::Relaxed), journals(&dir));

    // A requested snapshot.
    for k in 0..50 {
        update(100_000 + k);
    }
    let req = seg.request_snapshot().expect("a read-write handle may ask for a snapshot");
    wait_until(Duration::from_secs(10), || seg.snapshots_done() >= req, || format!("snapshot request {req}"));
    let snaps = snapshots(&dir);
    assert_eq!(snaps.len(), 2, "older snapshots removed, the one before the newest kept: {snaps:?}");
    let covers = snaps[1].0;
    assert!(covers > rotated, "the requested snapshot covers the updates after the rotation");
    let js = journals(&dir);
    assert_eq!(
        js.iter().map(|j| j.0).collect::<Vec<_>>(),
        vec![snaps[0].0, covers],
        "journal files before the previous snapshot removed: {js:?}"
    );

    // Changes after the snapshot, replayed from the journal: updates, deletions, additions.
    for k in 0..30 {
        update(200_000 + k);
    }
    let gone: Vec<Uuid> = nodes[..3]
        .iter()
        .map(|h| {
            let u = seg.read(*h).expect("read").uuid();
            seg.delete(*h, DeleteMode::LeafOnly).expect("delete");
            u
        })
        .collect();
    for i in 0..2 {
        seg.add(project, &NewNode::new(NodeKind::Task, &format!("late-{i}")).status(Status::Ready)).expect("add");
    }
    let images = node_images(&seg);
    let mut root_kids = Vec::new();
    seg.children(seg.root(), &mut root_kids).expect("children");
    let mut project_kids = Vec::new();
    seg.children(project, &mut project_kids).expect("children");
    let events_before = ring_events(&seg);
    drop(seg);

    kill9(&mut d);
    Segment::unlink(g.name()).expect("unlink (host restart)");
    let (mut d, line) = start_daemon(&g, &flags);
    assert!(line.contains(" restored and ready"), "{line}\n{}", d.transcript());
    let rebuilt = d.wait_for_line(Stream::Stderr, DAEMON_READY, |l| l.contains("rebuilt from"));
    assert!(
        rebuilt.contains(&snaps[1].1.display().to_string()) && rebuilt.contains("+ 1 journal file(s)"),
        "restored from the snapshot plus one journal file: {rebuilt}"
    );
    let seg = attach(g.name(), Access::ReadOnly);
    let after = node_images(&seg);
    assert_eq!(after.len(), images.len(), "node count");
    for (uuid, (h, image)) in &images {
        let (h2, image2) = after.get(uuid).unwrap_or_else(|| panic!("node {uuid} lost"));
        assert_eq!(h2, h, "node {uuid} moved to another slot");
        assert_eq!(image2, image, "node {uuid} restored with another record");
    }
    for u in &gone {
        assert!(seg.lookup(*u).is_err(), "deleted node {u} came back");
    }
    let mut kids = Vec::new();
    seg.children(seg.root(), &mut kids).expect("children");
    assert_eq!(kids, root_kids, "root's children, in order");
    seg.children(project, &mut kids).expect("children");
    assert_eq!(kids, project_kids, "the project's children, in order");
    // Events since the snapshot come back from the journal, identical.
    let restored: HashMap<u64, EventKey> =
        ring_events(&seg).iter().map(|e| (e.seq(), key_of_record(e.record()))).collect();
    let mut older = 0;
    for e in &events_before {
        if e.seq() >= covers {
            assert_eq!(
                restored.get(&e.seq()),
                Some(&key_of_record(e.record())),
                "event {} after the snapshot",
                e.seq()
            );
        } else if restored.contains_key(&e.seq()) {
            older += 1;
        }
    }
    let before_snapshot = events_before.iter().filter(|e| e.seq() < covers).count();
    eprintln!(
        "dur-snap: FINDING: of {before_snapshot} events the ring held from before the snapshot (seq < {covers}), \
         {older} are in the restored ring (snapshots carry no events)"
    );
    drop(seg);
    stop(&mut d);
}

// ---------------------------------------------------------------------------------------
// 4. Claims across a daemon crash
// ---------------------------------------------------------------------------------------

struct ClaimSetup {
    daemon: Proc,
    shell_task: Handle,
    session_task: Handle,
    shell_agent: u16,
    shell_epoch: u64,
    session_child: Proc,
    session_agent: u16,
    session_epoch: u64,
}

/// Starts the daemon, makes two ready tasks; a shell-style agent (no session) claims
/// one and exits; a session agent claims the other and stays alive.
fn claim_setup(g: &SegmentGuard) -> ClaimSetup {
    let (daemon, line) = start_daemon(g, &args(SMALL_ARGS));
    assert!(line.contains(" created and ready"), "{line}");
    let seg = attach(g.name(), Access::ReadWrite);
    // After the initial snapshot (see the load test for what precedes it).
    wait_until(Duration::from_secs(10), || seg.snapshots_done() >= 1, || "the initial snapshot".into());
    let shell_task = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "shell").status(Status::Ready)).expect("add");
    let session_task =
        seg.add(seg.root(), &NewNode::new(NodeKind::Task, "session").status(Status::Ready)).expect("add");
    let r = g.spawn_role("shell_claim", &[("WN_TASK", handles_to_env(&[shell_task]))]).expect_report(SAY_TIMEOUT);
    let shell_agent = r["agent"].as_u64().expect("agent") as u16;
    let shell_epoch = r["epoch"].as_u64().expect("epoch");
    let session_child = g.spawn_role("session_claim", &[("WN_TASK", handles_to_env(&[session_task]))]);
    let said = session_child.wait_for_line(Stream::Stdout, SAY_TIMEOUT, |l| l.starts_with("WN-SAY claimed "));
    let f: Vec<u64> = said.split(' ').skip(2).map(|x| x.parse().expect("number")).collect();
    let (session_agent, session_epoch) = (f[0] as u16, f[1]);
    assert_eq!(seg.read(shell_task).unwrap().claimed_by(), Some(shell_agent));
    assert_eq!(seg.read(session_task).unwrap().claimed_by(), Some(session_agent));
    let info = seg.agent(seg.find_agent("session-agent").expect("session agent")).expect("agent");
    assert_eq!(info.session_pid, Some(session_child.pid()), "the session is bound to the child");
    ClaimSetup {
        daemon,
        shell_task,
        session_task,
        shell_agent,
        shell_epoch,
        session_child,
        session_agent,
        session_epoch,
    }
}

/// kill -9 of the daemon, restart without removing the segment (adopted): both claims
/// are still held, and still held after the new daemon's dead-session checks have run;
/// then the session process is killed and the restarted daemon (which never had a
/// connection from it) releases its claim; the shell agent's claim stays.
#[test]
fn claims_survive_a_daemon_crash_and_a_dead_session_is_released_by_the_next_daemon() {
    let g = SegmentGuard::new("dur-claims-adopt");
    let mut s = claim_setup(&g);
    kill9(&mut s.daemon);
    let (mut d, line) = start_daemon(&g, &args(SMALL_ARGS));
    assert!(line.contains(" adopted and ready"), "{line}\n{}", d.transcript());
    let seg = attach(g.name(), Access::ReadOnly);
    let check_held = |when: &str| {
        let a = seg.read(s.shell_task).unwrap();
        assert_eq!((a.claimed_by(), a.claim_epoch()), (Some(s.shell_agent), s.shell_epoch), "shell claim {when}");
        let b = seg.read(s.session_task).unwrap();
        assert_eq!((b.claimed_by(), b.claim_epoch()), (Some(s.session_agent), s.session_epoch), "session {when}");
        assert_eq!(b.status(), Some(Status::Claimed), "session task {when}");
    };
    check_held("after adoption");
    // The new daemon checks session processes every second: a live one must survive that.
    let alive_since = Instant::now();
    std::thread::sleep(Duration::from_millis(2500));
    check_held(&format!("{:?} after adoption, session process alive", alive_since.elapsed()));

    kill9(&mut s.session_child);
    wait_until(
        Duration::from_secs(10),
        || {
            let b = seg.read(s.session_task).unwrap();
            b.claimed_by().is_none() && b.status() == Some(Status::Ready)
        },
        || format!("the dead session's claim was not released\n{}", d.transcript()),
    );
    assert!(seg.find_agent("session-agent").is_none(), "the dead session's agent was reaped");
    let a = seg.read(s.shell_task).unwrap();
    assert_eq!(a.claimed_by(), Some(s.shell_agent), "the shell agent's claim is held by its lease");
    assert!(seg.find_agent("shell-agent").is_some());
    drop(seg);
    stop(&mut d);
}

/// kill -9 of the daemon and of the session process, then a host restart (segment
/// removed): restored, the shell agent's claim is still held (its lease runs); what
/// happens to the dead session's claim is reported (its binding to a process is not in
/// the journal): it must be either released or still held by the same agent and epoch.
#[test]
fn claims_after_a_host_restart() {
    let g = SegmentGuard::new("dur-claims-host");
    let mut s = claim_setup(&g);
    kill9(&mut s.daemon);
    kill9(&mut s.session_child);
    Segment::unlink(g.name()).expect("unlink (host restart)");
    let (mut d, line) = start_daemon(&g, &args(SMALL_ARGS));
    assert!(line.contains(" restored and ready"), "{line}\n{}", d.transcript());
    let seg = attach(g.name(), Access::ReadOnly);
    let a = seg.read(s.shell_task).unwrap();
    assert_eq!((a.claimed_by(), a.claim_epoch()), (Some(s.shell_agent), s.shell_epoch), "shell claim restored");
    assert_eq!(a.status(), Some(Status::Claimed));
    assert!(seg.find_agent("shell-agent").is_some(), "the shell agent is restored");
    // Give the restored daemon's dead-session check (every second) time to run.
    std::thread::sleep(Duration::from_millis(2500));
    let b = seg.read(s.session_task).unwrap();
    let agent = seg.find_agent("session-agent").map(|id| seg.agent(id).expect("agent"));
    let released = b.claimed_by().is_none() && b.status() == Some(Status::Ready);
    let held = (b.claimed_by(), b.claim_epoch(), b.status())
        == (Some(s.session_agent), s.session_epoch, Some(Status::Claimed));
    assert!(released || held, "the dead session's claim is neither released nor held as before: {:?}", b.record());
    eprintln!(
        "dur-claims-host: FINDING: after a host restart the killed session agent's claim is {} (lease until {} ms, \
         now {} ms); its agent is {}",
        if released { "released" } else { "STILL HELD (until its lease expires)" },
        b.lease_until_ms(),
        worknode::unix_ms(),
        match &agent {
            Some(a) => format!("still registered (session pid {:?}, alive {})", a.session_pid, a.session_alive),
            None => "gone".into(),
        }
    );
    let a = seg.read(s.shell_task).unwrap();
    assert_eq!(a.claimed_by(), Some(s.shell_agent), "the shell agent's claim is still held");
    drop(seg);
    stop(&mut d);
}

/// The user events of the ring: sequence and payload.
fn user_events(seg: &Segment) -> Vec<(u64, Vec<u8>)> {
    ring_events(seg).iter().filter(|e| e.kind() == EventKind::USER).map(|e| (e.seq(), e.payload().to_vec())).collect()
}

/// Appends `n` acknowledged user events to `g`'s segment, recording them in `acked`.
fn append_acked(g: &SegmentGuard, n: u64, rng: &mut Rng, acked: &mut Vec<(u64, Vec<u8>)>) {
    let seg = attach(g.name(), Access::ReadWrite);
    for i in 0..n {
        let payload = make_payload(1, 0, acked.len() as u64 + i, rng);
        let seq = seg.append(&NewEvent::new(EventKind::USER).payload(&payload)).expect("append");
        acked.push((seq, payload));
    }
}

/// Every journal file of `dir` reads as records up to a tail of zeros (at least one
/// file has such a tail): no record was written after a stretch of zeros, so every
/// daemon appended where the records ended, not after the pre-zeroed length.
fn assert_journals_end_in_zero_tails(dir: &Path, when: &str) {
    let mut zero_tailed = 0;
    for (_, path) in journals(dir) {
        let bytes = std::fs::read(&path).expect("read a journal");
        let end = parse_journal(&bytes).last().map_or(HEADER_LEN, |r| r.end);
        assert!(bytes[end..].iter().all(|b| *b == 0), "{when}: {} holds bytes after its records", path.display());
        if bytes.len() > end {
            zero_tailed += 1;
        }
    }
    assert!(zero_tailed > 0, "{when}: no journal file of {} has a pre-zeroed tail", dir.display());
}

/// A daemon (`--fsync always`) killed with SIGKILL while its journal file has a
/// pre-zeroed tail: a host restart brings back exactly the acknowledged appends, and the
/// daemons after it — restored, then adopting the live segment after another kill —
/// append after the recovered records, not after the file's zero tail, so a final
/// restore still reads everything.
#[test]
fn a_killed_daemons_zero_tailed_journal_recovers_and_later_daemons_append_after_its_records() {
    let g = SegmentGuard::new("dur-zero-tail");
    let mut rng = Rng::new(seed("dur-zero-tail"));
    let mut acked = Vec::new();
    let (mut d, line) = start_daemon(&g, &args(SMALL_ARGS));
    assert!(line.contains(" created and ready"), "{line}");
    {
        let seg = attach(g.name(), Access::ReadWrite);
        wait_until(Duration::from_secs(10), || seg.snapshots_done() >= 1, || "the initial snapshot".into());
    }
    append_acked(&g, 40, &mut rng, &mut acked);
    kill9(&mut d);
    assert_journals_end_in_zero_tails(&g.data_dir(), "after the first kill");

    // Host restart: the segment is gone; the journal brings back exactly what was acked.
    Segment::unlink(g.name()).expect("unlink the segment (host restart)");
    let (mut d, line) = start_daemon(&g, &args(SMALL_ARGS));
    assert!(line.contains(" restored and ready"), "{line}\n{}", d.transcript());
    assert_eq!(user_events(&attach(g.name(), Access::ReadOnly)), acked, "restored: exactly the acknowledged appends");
    append_acked(&g, 40, &mut rng, &mut acked);
    kill9(&mut d);

    // The segment survives this kill: the next daemon adopts it and journals on.
    let (mut d, line) = start_daemon(&g, &args(SMALL_ARGS));
    assert!(!line.contains(" restored and ready"), "the live segment is adopted: {line}\n{}", d.transcript());
    append_acked(&g, 40, &mut rng, &mut acked);
    kill9(&mut d);
    assert_journals_end_in_zero_tails(&g.data_dir(), "after three daemons");

    Segment::unlink(g.name()).expect("unlink the segment (host restart)");
    let (mut d, line) = start_daemon(&g, &args(SMALL_ARGS));
    assert!(line.contains(" restored and ready"), "{line}\n{}", d.transcript());
    assert_eq!(
        user_events(&attach(g.name(), Access::ReadOnly)),
        acked,
        "every acknowledged append of the three daemons"
    );
    stop(&mut d);
}
