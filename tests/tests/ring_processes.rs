//! The event ring across real processes:
//!
//! * producers and readers in separate processes account for every sequence number
//!   exactly (an event seen once, in order, intact; a gap reported as `Lagged` or as an
//!   abandoned slot, never silently), with single appends and with `append_batch`;
//! * a reader lapped by a producer in another process is told exactly what it missed,
//!   and a fresh reader from the oldest retained event gets exactly the retained ones;
//! * a producer SIGKILLed between claiming a sequence and publishing it costs readers
//!   exactly that one slot: a read-write reader repairs it, and a read-only reader gets
//!   past it because the daemon repairs it;
//! * a reader parked on the futex in another process wakes on the next append, and
//!   appends make no wake syscall while nobody is parked.
//!
//! Children are this test binary re-run with a role (see `worknode_tests::child_main`).

use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use worknode::failpoint::FAILPOINT_ENV;
use worknode::{Access, Capacities, Daemon, Event, EventKind, NewEvent, Reader, RingError, Segment, Start, Wait};
use worknode_tests::{
    child_main, env_str, env_u64, say, wait_until, Proc, SegmentGuard, Stream, CHILD_TIMEOUT, READY_TIMEOUT,
    SEGMENT_ENV,
};

/// Producer id written into each payload by a `producer` child.
const PRODUCER_ENV: &str = "WN_RING_PRODUCER";
/// Number of events a `producer` child appends.
const COUNT_ENV: &str = "WN_RING_COUNT";
/// Number of producers a `reader` child expects.
const PRODUCERS_ENV: &str = "WN_RING_PRODUCERS";
/// A `producer` child sleeps 1 ms after every this many appends (0: never), so that
/// readers sharing the cores are usually not lapped.
const PACE_ENV: &str = "WN_RING_PACE";
/// A `producer` child appends this many events per `append_batch` call (absent or 1:
/// one `append` each).
const BATCH_ENV: &str = "WN_RING_BATCH";

/// Producer id of the events the test process itself appends.
const PARENT_PRODUCER: u64 = 100;
/// Producer id of the event a `failpoint_producer` child never finishes appending.
const KILLED_PRODUCER: u64 = 200;
/// Kind of the event that tells `reader` children that production is over.
const END: EventKind = EventKind(1001);

/// Bound on one step of a test: a child starting up, a line appearing, a child exiting.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one `Reader::next` call of a reader that expects an event to be there.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on a `reader` child's whole run.
const READ_DEADLINE: Duration = Duration::from_secs(120);
/// How long a `parker` child sleeps on the futex at most. Longer than [`WAKE_TIMEOUT`],
/// so that a reader that is not woken fails the test instead of returning late.
const PARK_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on a parked child's report after the append that must wake it.
const WAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// Flags every daemon in this file is started with.
const DAEMON_ARGS: [&str; 8] = ["--nodes", "64", "--events", "1024", "--agents", "4", "--blob-chunks", "1"];

fn caps(events: u32) -> Capacities {
    Capacities { nodes: 64, events, agents: 4, blob_chunks: 1, ..Capacities::default() }
}

/// Creates the guard's segment with an event ring of `events` slots.
fn create(g: &SegmentGuard, events: u32) -> Daemon {
    let seg = Daemon::create(g.name(), &caps(events), 0o600).unwrap_or_else(|e| panic!("create {}: {e}", g.name()));
    assert_eq!(seg.ring_tail(), 0, "a new segment's ring is empty");
    seg
}

// ---------------------------------------------------------------------------------------
// Payloads: (producer id, the producer's own counter, a checksum of both)
// ---------------------------------------------------------------------------------------

const PAYLOAD_LEN: usize = 24;

/// The splitmix64 finaliser: every input bit affects every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn checksum(producer: u64, counter: u64) -> u64 {
    mix(mix(producer.wrapping_add(0x9e37_79b9_7f4a_7c15)) ^ counter)
}

fn payload(producer: u64, counter: u64) -> [u8; PAYLOAD_LEN] {
    let mut b = [0u8; PAYLOAD_LEN];
    b[0..8].copy_from_slice(&producer.to_le_bytes());
    b[8..16].copy_from_slice(&counter.to_le_bytes());
    b[16..24].copy_from_slice(&checksum(producer, counter).to_le_bytes());
    b
}

/// `(producer, counter)` of a user event, or why its payload is not one of ours.
fn decode(e: &Event) -> Result<(u64, u64), String> {
    let p = e.payload();
    if e.kind() != EventKind::USER || p.len() != PAYLOAD_LEN {
        return Err(format!("seq {}: kind {} with a {}-byte payload is not a test event", e.seq(), e.kind(), p.len()));
    }
    let word = |i: usize| u64::from_le_bytes(p[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    let (producer, counter, sum) = (word(0), word(1), word(2));
    if sum != checksum(producer, counter) {
        return Err(format!(
            "seq {}: checksum mismatch for producer {producer} counter {counter} (torn read?)",
            e.seq()
        ));
    }
    Ok((producer, counter))
}

fn append_user(seg: &Segment, producer: u64, counter: u64) -> u64 {
    let bytes = payload(producer, counter);
    seg.append(&NewEvent::new(EventKind::USER).payload(&bytes))
        .unwrap_or_else(|e| panic!("producer {producer}: append of counter {counter}: {e:?}"))
}

/// Waits (bounded, parked) for the next event and checks it is `seq`, from `producer`'s
/// `counter`, appended by process `pid`.
fn expect_event(r: &mut Reader<'_>, seq: u64, producer: u64, counter: u64, pid: u32) {
    let e = r
        .next(Wait::Park, READ_TIMEOUT)
        .unwrap_or_else(|err| panic!("waiting for seq {seq} at position {}: {err:?}", r.position()));
    assert_eq!(e.seq(), seq, "events arrive in sequence order, skipping only what was reported");
    assert_eq!(decode(&e), Ok((producer, counter)), "payload of seq {seq}");
    assert_eq!(e.pid(), pid, "seq {seq} was appended by process {pid}");
}

fn u64_of(report: &Value, key: &str) -> u64 {
    report[key].as_u64().unwrap_or_else(|| panic!("report has no number {key:?}: {report}"))
}

fn seqs_of(report: &Value) -> Vec<u64> {
    let list = report["seqs"].as_array().unwrap_or_else(|| panic!("report has no seqs: {report}"));
    list.iter().map(|v| v.as_u64().expect("seq is a number")).collect()
}

// ---------------------------------------------------------------------------------------
// Child roles
// ---------------------------------------------------------------------------------------

#[test]
fn child_entry() {
    child_main(|role| match role {
        "producer" => producer(),
        "failpoint_producer" => failpoint_producer(),
        "reader" => reader(),
        "oldest" => oldest(),
        "parker" => parker(),
        other => panic!("unknown role {other}"),
    })
}

fn attach(access: Access) -> Segment {
    let name = env_str(SEGMENT_ENV);
    Segment::attach(&name, access).unwrap_or_else(|e| panic!("attach {name} {access:?}: {e}"))
}

/// Appends `COUNT` events as producer `PRODUCER` (counters 0, 1, ...), pausing as
/// `PACE` says. Reports the sequence numbers it got when there are at most 10,000.
fn producer() -> Value {
    let seg = attach(Access::ReadWrite);
    let (id, n) = (env_u64(PRODUCER_ENV), env_u64(COUNT_ENV));
    let pace = std::env::var(PACE_ENV).map_or(0, |_| env_u64(PACE_ENV));
    let batch = std::env::var(BATCH_ENV).map_or(1, |_| env_u64(BATCH_ENV)).max(1);
    let mut seqs = Vec::new();
    let (mut first, mut last) = (None, None);
    let mut c = 0;
    while c < n {
        let k = batch.min(n - c);
        let s = if k == 1 {
            append_user(&seg, id, c)
        } else {
            let payloads: Vec<[u8; PAYLOAD_LEN]> = (c..c + k).map(|i| payload(id, i)).collect();
            let evs: Vec<NewEvent<'_>> = payloads.iter().map(|p| NewEvent::new(EventKind::USER).payload(p)).collect();
            let got = seg.append_batch(&evs);
            got.unwrap_or_else(|e| panic!("producer {id}: batch at counter {c}: {e:?}")).expect("a non-empty batch")
        };
        if pace != 0 && (c + k) / pace != c / pace {
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Some(prev) = last {
            assert!(s >= prev + k, "producer {id}: a batch of {k} ending at seq {s} after {prev}");
        }
        first.get_or_insert(s + 1 - k);
        last = Some(s);
        if n <= 10_000 {
            seqs.extend(s + 1 - k..=s);
        }
        c += k;
    }
    json!({ "appended": n, "first": first, "last": last, "seqs": seqs })
}

/// Appends one event with `WORKNODE_FAILPOINT` set: it stops at that fail-point inside
/// `Segment::append` (and is killed there by the parent).
fn failpoint_producer() -> Value {
    let seg = attach(Access::ReadWrite);
    let fp = env_str(FAILPOINT_ENV);
    let got = seg.append(&NewEvent::new(EventKind::USER).payload(&payload(KILLED_PRODUCER, 0)));
    panic!("append returned {got:?} instead of stopping at fail-point {fp}: is feature `failpoints` on?")
}

/// Reads from sequence 0 until the `END` event, checking every event and accounting
/// for every sequence number; reports the counts.
fn reader() -> Value {
    let seg = attach(Access::ReadWrite);
    let producers = env_u64(PRODUCERS_ENV) as usize;
    let mut r = seg.reader(Start::At(0));
    say("ready");
    let mut last: Vec<Option<u64>> = vec![None; producers];
    let mut per_producer = vec![0u64; producers];
    let (mut seen, mut missed, mut lag_reports) = (0u64, 0u64, 0u64);
    let deadline = Instant::now() + READ_DEADLINE;
    let end_seq = loop {
        let pos = r.position();
        let skipped_before = r.abandoned_skipped();
        match r.next(Wait::SpinThenPark, Duration::from_secs(1)) {
            Ok(e) => {
                // Only abandoned slots may lie between the position and the event.
                let skipped = r.abandoned_skipped() - skipped_before;
                assert_eq!(e.seq(), pos + skipped, "event at position {pos} after {skipped} abandoned slots");
                assert_eq!(r.position(), e.seq() + 1);
                if e.kind() == END {
                    break e.seq();
                }
                let (p, c) = decode(&e).unwrap_or_else(|m| panic!("{m}"));
                assert!((p as usize) < producers, "seq {}: unknown producer {p}", e.seq());
                let p = p as usize;
                if let Some(prev) = last[p] {
                    assert!(c > prev, "seq {}: producer {p} counter {c} after {prev}", e.seq());
                }
                if missed == 0 {
                    assert_eq!(
                        c,
                        per_producer[p],
                        "seq {}: producer {p} skipped a counter with nothing missed",
                        e.seq()
                    );
                }
                last[p] = Some(c);
                per_producer[p] += 1;
                seen += 1;
            }
            Err(RingError::Lagged { missed: m, resume_at }) => {
                let skipped = r.abandoned_skipped() - skipped_before;
                assert!(m > 0, "Lagged with nothing missed at {pos}");
                assert_eq!(resume_at, pos + skipped + m, "Lagged at {pos} ({skipped} abandoned before it)");
                assert_eq!(r.position(), resume_at);
                missed += m;
                lag_reports += 1;
            }
            Err(RingError::Timeout) => {
                let tail = seg.ring_tail();
                assert!(Instant::now() < deadline, "no END event within {READ_DEADLINE:?}: at {pos}, tail {tail}");
            }
            Err(e) => panic!("reader at {pos}: unexpected {e:?}"),
        }
    };
    let abandoned = r.abandoned_skipped();
    assert_eq!(r.missed(), missed, "the reader's own tally of missed events");
    assert_eq!(seen + missed + abandoned, end_seq, "every sequence before END is accounted for exactly once");
    json!({
        "seen": seen,
        "missed": missed,
        "abandoned": abandoned,
        "end_seq": end_seq,
        "lag_reports": lag_reports,
        "per_producer": per_producer,
    })
}

/// A fresh read-only reader from the oldest retained event: reads what is there now.
fn oldest() -> Value {
    let seg = attach(Access::ReadOnly);
    let mut r = seg.reader(Start::Oldest);
    let start = r.position();
    let mut seqs = Vec::new();
    loop {
        match r.try_next() {
            Ok(Some(e)) => {
                let (p, c) = decode(&e).unwrap_or_else(|m| panic!("{m}"));
                assert_eq!((p, c), (0, e.seq()), "the single producer's counter equals the sequence");
                seqs.push(e.seq());
            }
            Ok(None) => break,
            Err(e) => panic!("a reader starting at the oldest retained event got {e:?} at {}", r.position()),
        }
    }
    json!({ "start": start, "seqs": seqs, "missed": r.missed() })
}

/// Parks a read-write reader on the futex from `Start::Now`; reports the event that
/// woke it.
fn parker() -> Value {
    let seg = attach(Access::ReadWrite);
    let mut r = seg.reader(Start::Now);
    say("parking");
    let e = r.next(Wait::Park, PARK_TIMEOUT).unwrap_or_else(|e| panic!("parked reader: {e:?}"));
    json!({ "seq": e.seq(), "pid": e.pid(), "topic": e.topic() })
}

// ---------------------------------------------------------------------------------------
// 1. Many producers, many readers
// ---------------------------------------------------------------------------------------

/// Two producer processes append 500,000 events each (pausing 1 ms after every `pace`
/// appends; 0: never) while two reader processes, started first from sequence 0, read
/// until the END event the test appends last. Every reader must account for every
/// sequence number exactly once: an intact event in order, a `Lagged` gap, or an
/// abandoned slot. Returns the readers' reports.
fn producers_and_readers_account_for_every_sequence(tag: &str, pace: u64, batch: u64) -> Vec<Value> {
    const PRODUCERS: u64 = 2;
    const READERS: usize = 2;
    const PER_PRODUCER: u64 = 500_000;
    // The two runs would share two cores with each other: one at a time.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let g = SegmentGuard::new(tag);
    let seg = create(&g, 65536);

    let mut readers: Vec<Proc> =
        (0..READERS).map(|_| g.spawn_role("reader", &[(PRODUCERS_ENV, PRODUCERS.to_string())])).collect();
    for r in &readers {
        r.wait_for_say("ready", STEP_TIMEOUT);
    }
    let mut producers: Vec<Proc> = (0..PRODUCERS)
        .map(|p| {
            let env = [
                (PRODUCER_ENV, p.to_string()),
                (COUNT_ENV, PER_PRODUCER.to_string()),
                (PACE_ENV, pace.to_string()),
                (BATCH_ENV, batch.to_string()),
            ];
            g.spawn_role("producer", &env)
        })
        .collect();
    for p in &mut producers {
        let report = p.expect_report(CHILD_TIMEOUT);
        assert_eq!(u64_of(&report, "appended"), PER_PRODUCER);
    }

    let end_seq = seg.append(&NewEvent::new(END)).expect("append END");
    let counters = seg.ring_counters();
    assert_eq!(counters.tail, end_seq + 1);
    // Sequences that hold no producer event: abandoned slots (their appends were
    // renumbered) and, rarely, slots a stalled append lost to a later lap.
    let holes = end_seq - PRODUCERS * PER_PRODUCER;
    assert!(counters.abandoned <= holes, "{} slots abandoned but only {holes} hold no event", counters.abandoned);

    let mut any_lagged = false;
    let mut reports = Vec::new();
    for r in &mut readers {
        let report = r.expect_report(CHILD_TIMEOUT);
        eprintln!("ring_processes: {tag}: reader {}: {report}", r.pid());
        let (seen, missed, abandoned) =
            (u64_of(&report, "seen"), u64_of(&report, "missed"), u64_of(&report, "abandoned"));
        assert_eq!(u64_of(&report, "end_seq"), end_seq, "the reader stopped at the END event");
        assert_eq!(seen + missed + abandoned, end_seq, "{report}");
        let per: Vec<u64> = report["per_producer"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(per.iter().sum::<u64>(), seen, "{report}");
        assert!(abandoned <= holes, "{report}");
        if missed == 0 {
            // Nothing lost to lapping: every event of every producer, and every hole was
            // an abandoned slot.
            assert_eq!(per, vec![PER_PRODUCER; PRODUCERS as usize], "{report}");
            assert_eq!(abandoned, holes, "{report}");
        } else {
            any_lagged = true;
            assert!(u64_of(&report, "lag_reports") > 0, "{report}");
        }
        reports.push(report);
    }
    if !any_lagged {
        assert_eq!(holes, counters.abandoned, "with no reader lapped, every hole was marked abandoned");
    }
    reports
}

#[test]
fn paced_producers_and_readers_in_separate_processes_see_every_event_exactly_once() {
    // Producers pause often enough for the readers to keep up (they share two cores), so
    // readers are normally never lapped and then must see all 1,000,000 events. Should
    // a busy machine starve a reader anyway, its gaps must still be reported exactly.
    producers_and_readers_account_for_every_sequence("ring-mpmc-paced", 1024, 1);
}

#[test]
fn batching_producers_and_readers_in_separate_processes_account_for_every_event() {
    // As above, the producers appending 7 events per `append_batch` (a size that does not
    // divide the ring, so batches straddle its wrap-around).
    producers_and_readers_account_for_every_sequence("ring-mpmc-batch", 1024, 7);
}

#[test]
fn unpaced_producers_outrunning_readers_report_every_gap_exactly() {
    // Producers at full speed usually lap the readers (the machine decides): whatever
    // the readers miss must be reported as `Lagged`, exactly.
    let reports = producers_and_readers_account_for_every_sequence("ring-mpmc-unpaced", 0, 1);
    let lagged = reports.iter().filter(|r| u64_of(r, "missed") > 0).count();
    eprintln!("ring_processes: unpaced: {lagged} of {} readers were lapped", reports.len());
}

// ---------------------------------------------------------------------------------------
// 2. A lapped reader
// ---------------------------------------------------------------------------------------

#[test]
fn a_lapped_reader_is_told_exactly_what_it_missed_and_oldest_gets_the_retained_events() {
    const CAP: u64 = 1024;
    const N: u64 = 10_000;
    let g = SegmentGuard::new("ring-lapped");
    let seg = create(&g, CAP as u32);
    let mut lapped = seg.reader(Start::At(0));

    // Another process appends while this reader does not read.
    let mut p = g.spawn_role("producer", &[(PRODUCER_ENV, "0".into()), (COUNT_ENV, N.to_string())]);
    let report = p.expect_report(CHILD_TIMEOUT);
    assert_eq!(seqs_of(&report), (0..N).collect::<Vec<_>>(), "a lone producer gets consecutive sequences");
    let tail = seg.ring_tail();
    assert_eq!(tail, N);
    let oldest = tail - CAP;

    match lapped.try_next() {
        Err(RingError::Lagged { missed, resume_at }) => assert_eq!((missed, resume_at), (oldest, oldest)),
        other => panic!("a reader lapped {} times over expected Lagged, got {other:?}", N / CAP),
    }
    assert_eq!((lapped.position(), lapped.missed()), (oldest, oldest));
    for s in oldest..tail {
        let e = lapped.try_next().unwrap_or_else(|e| panic!("at {s}: {e:?}")).unwrap_or_else(|| panic!("{s} retained"));
        assert_eq!(e.seq(), s);
        assert_eq!(decode(&e), Ok((0, s)));
        assert_eq!(e.pid(), p.pid());
    }
    assert!(lapped.try_next().unwrap().is_none(), "nothing after the tail");
    assert_eq!((lapped.missed(), lapped.abandoned_skipped()), (oldest, 0));

    // A reader starting inside the overwritten range is told exactly too.
    let mut mid = seg.reader(Start::At(5000));
    match mid.try_next() {
        Err(RingError::Lagged { missed, resume_at }) => assert_eq!((missed, resume_at), (oldest - 5000, oldest)),
        other => panic!("expected Lagged, got {other:?}"),
    }

    // A fresh reader in another process, from the oldest retained event: exactly the
    // last CAP events, no Lagged.
    let mut fresh = g.spawn_role("oldest", &[]);
    let report = fresh.expect_report(CHILD_TIMEOUT);
    assert_eq!(u64_of(&report, "start"), oldest);
    assert_eq!(u64_of(&report, "missed"), 0);
    assert_eq!(seqs_of(&report), (oldest..tail).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------
// 3. A producer killed between claim and publish
// ---------------------------------------------------------------------------------------

/// Starts a child that appends one event with `failpoint` armed, waits until it stopped
/// there, SIGKILLs it and reaps it. Returns the sequence it had claimed.
fn kill_at_failpoint(g: &SegmentGuard, seg: &Segment, failpoint: &str) -> u64 {
    let claimed = seg.ring_tail();
    let mut p = g.spawn_role("failpoint_producer", &[(FAILPOINT_ENV, failpoint.to_string())]);
    let want = format!("failpoint {failpoint} reached");
    p.wait_for_line(Stream::Stderr, STEP_TIMEOUT, |l| l.contains(&want));
    assert_eq!(seg.ring_tail(), claimed + 1, "the stopped producer claimed exactly one sequence");
    p.signal(Signal::SIGKILL);
    let status = p.wait_exit(STEP_TIMEOUT);
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32), "{}", p.transcript());
    claimed
}

/// K events from one producer process, one sequence claimed by a second that is killed
/// at `failpoint`, M events from this process. Without a daemon, a read-only reader
/// waits at the stuck sequence; a read-write reader repairs it and skips exactly it.
fn killed_producer_costs_a_read_write_reader_one_slot(failpoint: &str) {
    const K: u64 = 10;
    const M: u64 = 10;
    let g = SegmentGuard::new(&format!("ring-kill-rw-{failpoint}"));
    let seg = create(&g, 1024);
    let mut rw = seg.reader(Start::At(0));
    rw.set_abandon_after(Duration::from_millis(50));
    let ro_seg = Segment::attach(g.name(), Access::ReadOnly).expect("attach read-only");
    let mut ro = ro_seg.reader(Start::At(0));

    let mut first = g.spawn_role("producer", &[(PRODUCER_ENV, "1".into()), (COUNT_ENV, K.to_string())]);
    assert_eq!(seqs_of(&first.expect_report(CHILD_TIMEOUT)), (0..K).collect::<Vec<_>>());
    let killed = kill_at_failpoint(&g, &seg, failpoint);
    assert_eq!(killed, K);
    let mine: Vec<u64> = (0..M).map(|c| append_user(&seg, PARENT_PRODUCER, c)).collect();
    assert_eq!(mine, (K + 1..K + 1 + M).collect::<Vec<_>>(), "later appends are not held up by the stuck slot");
    let me = std::process::id();

    // Read-only, no daemon: nobody can repair the slot, so the reader waits there.
    for c in 0..K {
        expect_event(&mut ro, c, 1, c, first.pid());
    }
    assert_eq!(ro.next(Wait::Park, Duration::from_millis(200)).unwrap_err(), RingError::Timeout);
    assert_eq!(ro.position(), killed, "a read-only reader cannot pass an unrepaired slot");
    assert_eq!(seg.ring_counters().abandoned, 0);

    // Read-write: repairs the slot after the bound, skips exactly it, loses nothing else.
    for c in 0..K {
        expect_event(&mut rw, c, 1, c, first.pid());
    }
    for c in 0..M {
        expect_event(&mut rw, K + 1 + c, PARENT_PRODUCER, c, me);
    }
    assert_eq!(rw.abandoned_skipped(), 1);
    assert_eq!(rw.missed(), 0);
    assert!(rw.try_next().unwrap().is_none());
    assert_eq!(rw.position(), seg.ring_tail());
    assert_eq!(seg.ring_counters().abandoned, 1, "the slot was marked abandoned once");

    // Now the read-only reader gets past it too.
    for c in 0..M {
        expect_event(&mut ro, K + 1 + c, PARENT_PRODUCER, c, me);
    }
    assert_eq!((ro.abandoned_skipped(), ro.missed()), (1, 0));
    assert!(ro.try_next().unwrap().is_none());
}

#[test]
fn producer_killed_after_claim_costs_a_read_write_reader_exactly_one_slot() {
    killed_producer_costs_a_read_write_reader_one_slot("ring.after_claim");
}

#[test]
fn producer_killed_before_publish_costs_a_read_write_reader_exactly_one_slot() {
    killed_producer_costs_a_read_write_reader_one_slot("ring.before_publish");
}

/// As above, but the segment belongs to a running `worknoded` and the only reader is
/// read-only: it gets past the killed producer's slot because the daemon repairs it.
fn daemon_repairs_a_killed_producers_slot_for_a_read_only_reader(failpoint: &str) {
    const K: u64 = 10;
    const M: u64 = 10;
    let g = SegmentGuard::new(&format!("ring-kill-ro-{failpoint}"));
    let mut d = g.spawn_daemon(&DAEMON_ARGS);
    d.wait_for_line(Stream::Stdout, READY_TIMEOUT, |l| l.contains("ready"));
    let seg = Segment::attach(g.name(), Access::ReadWrite).expect("attach read-write");
    let ro_seg = Segment::attach(g.name(), Access::ReadOnly).expect("attach read-only");
    assert_eq!(seg.ring_counters().capacity, 1024);
    let start = seg.ring_tail();
    let mut ro = ro_seg.reader(Start::At(start));

    let mut first = g.spawn_role("producer", &[(PRODUCER_ENV, "1".into()), (COUNT_ENV, K.to_string())]);
    let theirs = seqs_of(&first.expect_report(CHILD_TIMEOUT));
    assert_eq!(theirs.len() as u64, K);
    let killed = kill_at_failpoint(&g, &seg, failpoint);
    let mine: Vec<u64> = (0..M).map(|c| append_user(&seg, PARENT_PRODUCER, c)).collect();
    let me = std::process::id();

    // Every appended event arrives, in sequence order.
    let mut expected: Vec<(u64, u64, u64, u32)> =
        theirs.iter().enumerate().map(|(c, &s)| (s, 1, c as u64, first.pid())).collect();
    expected.extend(mine.iter().enumerate().map(|(c, &s)| (s, PARENT_PRODUCER, c as u64, me)));
    expected.sort_unstable();
    for &(s, producer, counter, pid) in &expected {
        expect_event(&mut ro, s, producer, counter, pid);
    }
    assert!(ro.try_next().unwrap().is_none());
    let tail = seg.ring_tail();
    assert_eq!(ro.position(), tail);
    assert_eq!(ro.missed(), 0);

    // The sequences that hold no event: the killed producer's, plus any a live append
    // gave up because it stalled past the bound between claim and lock (then renumbered;
    // essentially never). Each was marked abandoned (by the daemon: nobody else can) and
    // skipped.
    let delivered: BTreeSet<u64> = expected.iter().map(|e| e.0).collect();
    let holes: BTreeSet<u64> = (start..tail).filter(|s| !delivered.contains(s)).collect();
    assert!(holes.contains(&killed), "killed seq {killed} holds no event; holes {holes:?}");
    if holes.len() > 1 {
        eprintln!("ring_processes: note: live appends were renumbered too; holes {holes:?}");
    }
    assert_eq!(ro.abandoned_skipped(), holes.len() as u64, "holes {holes:?}");
    assert_eq!(seg.ring_counters().abandoned, holes.len() as u64, "holes {holes:?}");

    d.signal(Signal::SIGTERM);
    let status = d.wait_exit(STEP_TIMEOUT);
    assert!(status.success(), "daemon exit {status}\n{}", d.transcript());
    assert!(!g.shm_path().exists(), "the daemon removed the segment");
}

#[test]
fn producer_killed_after_claim_is_skipped_by_a_read_only_reader_after_the_daemon_repairs() {
    daemon_repairs_a_killed_producers_slot_for_a_read_only_reader("ring.after_claim");
}

#[test]
fn producer_killed_before_publish_is_skipped_by_a_read_only_reader_after_the_daemon_repairs() {
    daemon_repairs_a_killed_producers_slot_for_a_read_only_reader("ring.before_publish");
}

// ---------------------------------------------------------------------------------------
// 4. Futex parking and waking
// ---------------------------------------------------------------------------------------

#[test]
fn parked_readers_in_other_processes_wake_on_append_and_appends_without_waiters_make_no_syscall() {
    let g = SegmentGuard::new("ring-futex");
    let seg = create(&g, 1024);

    // Nothing appended: a parked wait ends in Timeout, and leaves no waiter registered.
    let mut r = seg.reader(Start::Now);
    assert_eq!(r.next(Wait::Park, Duration::from_millis(100)).unwrap_err(), RingError::Timeout);
    assert_eq!(r.next(Wait::SpinThenPark, Duration::from_millis(100)).unwrap_err(), RingError::Timeout);
    let c = seg.ring_counters();
    assert_eq!((c.waiters, c.wakes), (0, 0));

    // Nobody parked: appends make no wake syscall.
    for i in 0..1000 {
        append_user(&seg, PARENT_PRODUCER, i);
    }
    assert_eq!(seg.ring_counters().wakes, 0, "no reader was parked, so no FUTEX_WAKE");
    for i in 0..1000 {
        let e = r.try_next().unwrap().unwrap_or_else(|| panic!("event {i}"));
        assert_eq!(decode(&e), Ok((PARENT_PRODUCER, i)));
    }

    // Two readers parked in two other processes: one append wakes both.
    let mut parkers: Vec<Proc> = (0..2).map(|_| g.spawn_role("parker", &[])).collect();
    for p in &parkers {
        p.wait_for_say("parking", STEP_TIMEOUT);
    }
    wait_until(STEP_TIMEOUT, || seg.ring_counters().waiters == 2, || "both children are parked".into());
    let wakes = seg.ring_counters().wakes;
    let seq = seg.append(&NewEvent::new(EventKind::USER).topic("wake")).expect("append");
    assert_eq!(seq, 1000);
    assert_eq!(seg.ring_counters().wakes, wakes + 1, "one append with readers parked makes one FUTEX_WAKE");
    for p in &mut parkers {
        let report = p.expect_report(WAKE_TIMEOUT);
        assert_eq!(u64_of(&report, "seq"), seq, "{report}");
        assert_eq!(u64_of(&report, "pid"), std::process::id() as u64, "{report}");
        assert_eq!(report["topic"], "wake");
    }
    assert_eq!(seg.ring_counters().waiters, 0, "woken readers deregistered");

    // Nobody parked again: no syscall again.
    let wakes = seg.ring_counters().wakes;
    for i in 0..1000 {
        append_user(&seg, PARENT_PRODUCER, 1000 + i);
    }
    assert_eq!(seg.ring_counters().wakes, wakes, "no reader was parked, so no FUTEX_WAKE");
}
