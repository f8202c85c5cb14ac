//! Durability: the daemon follows the event ring and appends every event, with the
//! resulting record images, to an append-only journal; it compacts the journal into
//! snapshots; on start it rebuilds a lost segment from the newest snapshot plus the
//! journal.
//!
//! The journal runs on its own thread. It reads the ring like any reader (it is never
//! lapped: producers wait for it, see `worknode::Durability`), writes a batch, syncs
//! as the policy says, and publishes two cursors in the segment — journaled and
//! durable — waking writers that wait for durability (`--fsync always`). One fsync thus
//! covers every writer of that group commit.
//!
//! | policy   | an append returns …                      | at risk on a host crash            |
//! |----------|------------------------------------------|------------------------------------|
//! | `always` | after its journal record is fsynced      | nothing acknowledged               |
//! | `batch`  | at memory speed; fsync every interval    | at most the last interval          |
//! | `never`  | at memory speed; the OS writes when it will | what the OS had not written     |
//! | `off`    | at memory speed; no journal              | everything (shared memory only)    |

pub mod format;
pub mod state;
pub mod store;

use format::Record;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use store::JournalFile;
use worknode::layout::EventRecord;
use worknode::{Daemon, Durability, EventKind, RingError, Segment, Start};

/// How the journal runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where journal and snapshot files live.
    pub dir: PathBuf,
    /// The fsync policy.
    pub policy: Durability,
    /// Group-commit interval under `batch`.
    pub interval: Duration,
    /// Start a new journal file (and take a snapshot) past this many bytes.
    pub rotate_bytes: u64,
}

impl Config {
    /// How stale the journal's heartbeat may get before writers check the daemon's
    /// process: the batch interval (at most that much is at risk under `batch` anyway),
    /// else 10 ms; never below 2 ms, so a busy machine does not send every writer to
    /// `/proc`.
    pub fn heartbeat_stale(&self) -> Duration {
        match self.policy {
            Durability::Batch => self.interval.max(Duration::from_millis(2)),
            _ => Duration::from_millis(10),
        }
    }

    /// The journal's longest nap between looks at the ring.
    fn nap(&self) -> Duration {
        match self.policy {
            Durability::Batch => self.interval.min(Duration::from_millis(5)),
            _ => Duration::from_millis(5),
        }
    }
}

/// How far ahead of the ring's tail a reservation reaches: a quarter of the ring. A
/// rebuild continues numbering at the reservation, and the ring keeps only the events
/// of the last lap before it, so a short reach keeps three quarters of a ring of
/// history across a host restart; the cost is one small fsync per eighth of a ring.
pub fn reserve_ahead(capacity: u64) -> u64 {
    (capacity / 4).max(1)
}

/// A new reservation is written when the tail comes within this of the last one.
fn reserve_renew(capacity: u64) -> u64 {
    (capacity / 8).max(1)
}

/// Writes a reservation record for sequences below `upto` to `file` and syncs it: only
/// then may the segment's reservation word be raised to `upto`.
pub fn reserve(file: &mut JournalFile, upto: u64) -> Result<(), String> {
    let mut buf = Vec::new();
    format::encode(&mut buf, &Record::Reserve { upto });
    file.append(&buf).map_err(|e| format!("journal write: {e}"))?;
    file.sync().map_err(|e| format!("journal fsync: {e}"))
}

/// Records describing the segment's current state (a snapshot's content).
pub fn capture(seg: &Segment) -> Result<Vec<Record>, String> {
    let mut records = Vec::new();
    let mut docs = Vec::new();
    let mut sets = Vec::new();
    seg.for_each_node(|n| {
        let h = n.handle();
        records.push(Record::Node { index: h.index, generation: h.generation, rec: Box::new(*n.record()) });
        if n.record().doc_len > 0 {
            docs.push((h, n.uuid()));
        }
        if n.record().set_slot != 0 {
            sets.push((h, n.uuid()));
        }
        true
    })
    .map_err(|e| format!("reading nodes: {e}"))?;
    // A content that cannot be read now fails the whole snapshot (it would otherwise be
    // missing from it while the journals that hold it are deleted); a node deleted
    // meanwhile is simply not in it.
    for (h, uuid) in docs {
        let mut content = Vec::new();
        match seg.get_document(h, &mut content) {
            Ok(_) => records.push(Record::Document { uuid: *uuid.as_bytes(), content }),
            Err(worknode::DocError::Pool(worknode::PoolError::StaleHandle | worknode::PoolError::NotFound)) => {}
            Err(e) => return Err(format!("reading document {uuid}: {e}")),
        }
    }
    for (h, uuid) in sets {
        match seg.set_state(h) {
            Ok(state) => records.push(Record::Set {
                uuid: *uuid.as_bytes(),
                adds: state.adds().collect(),
                tombstones: state.tombstones().collect(),
            }),
            Err(worknode::SetError::Pool(worknode::PoolError::StaleHandle | worknode::PoolError::NotFound)) => {}
            Err(e) => return Err(format!("reading the set of {uuid}: {e}")),
        }
    }
    seg.for_each_agent_slot(|index, slot| records.push(Record::Agent { index, slot: Box::new(*slot) }));
    Ok(records)
}

/// A node's whole set as a record.
fn set_record(seg: &Segment, h: worknode::Handle, uuid: uuid::Uuid) -> Option<Record> {
    let state = seg.set_state(h).ok()?;
    Some(Record::Set { uuid: *uuid.as_bytes(), adds: state.adds().collect(), tombstones: state.tombstones().collect() })
}

/// How often the journal tries again to copy out a node that writers keep changing.
const IMAGE_READ_RETRIES: usize = 10_000;

/// Appends the records for one event: the event, then what it changed.
fn journal_event(seg: &Segment, e: &worknode::Event, buf: &mut Vec<u8>) {
    format::encode(buf, &Record::Event(*e.record()));
    let Some(uuid) = e.node() else { return };
    let k = e.kind();
    if k == EventKind::NODE_DELETED {
        format::encode(buf, &Record::NodeGone { uuid: *uuid.as_bytes() });
        return;
    }
    if k == EventKind::AGENT_LEFT || k == EventKind::AGENT_LOST {
        format::encode(buf, &Record::AgentGone { uuid: *uuid.as_bytes() });
        return;
    }
    if k == EventKind::AGENT_JOINED || k == EventKind::AGENT_SESSION {
        seg.for_each_agent_slot(|index, slot| {
            if slot.uuid == *uuid.as_bytes() {
                format::encode(buf, &Record::Agent { index, slot: Box::new(*slot) });
            }
        });
    }
    // The node's record as it is now (at least as new as the event). A read that busy
    // writers keep overtaking is retried (bounded): without the image, an acknowledged
    // change would be lost if the daemon died before the node changed again.
    let mut image = seg.lookup(uuid).and_then(|h| seg.read(h));
    for _ in 0..IMAGE_READ_RETRIES {
        if !matches!(image, Err(worknode::PoolError::Contended)) {
            break;
        }
        std::thread::yield_now();
        image = seg.lookup(uuid).and_then(|h| seg.read(h));
    }
    match image {
        Ok(n) => {
            let h = n.handle();
            format::encode(buf, &Record::Node { index: h.index, generation: h.generation, rec: Box::new(*n.record()) });
            if n.record().doc_len > 0 {
                let mut content = Vec::new();
                if seg.get_document(h, &mut content).is_ok() {
                    format::encode(buf, &Record::Document { uuid: *uuid.as_bytes(), content });
                }
            }
            if n.record().set_slot != 0
                && [EventKind::SET_ADDED, EventKind::SET_REMOVED, EventKind::SET_MERGED, EventKind::SET_COMPACTED]
                    .contains(&k)
            {
                if let Some(r) = set_record(seg, h, uuid) {
                    format::encode(buf, &r);
                }
            }
        }
        Err(worknode::PoolError::NotFound | worknode::PoolError::StaleHandle) => {
            format::encode(buf, &Record::NodeGone { uuid: *uuid.as_bytes() })
        }
        // Contended or damaged: no image rather than a false deletion. The node's next
        // change (or the next snapshot) records it.
        Err(e) => eprintln!("worknoded: journal: could not read node {uuid} for its image: {e}"),
    }
}

/// Takes a snapshot covering events before `covers`: starts a new journal file at
/// `covers`, writes the snapshot, reads it back whole, and only then removes what the
/// snapshot *before* it made redundant. So the previous snapshot and every journal file
/// from it on stay: one damaged or deleted snapshot falls back to the one before.
/// Returns the snapshot's path.
pub fn snapshot(
    seg: &Segment,
    dir: &Path,
    file: &mut JournalFile,
    covers: u64,
    recent: &VecDeque<EventRecord>,
) -> Result<PathBuf, String> {
    file.sync().map_err(|e| format!("journal fsync: {e}"))?;
    if file.path != store::journal_path(dir, covers) {
        *file = JournalFile::open_at(dir, covers).map_err(|e| format!("new journal file: {e}"))?;
    }
    write_snapshot(seg, dir, covers, recent)?;
    let path = store::snapshot_path(dir, covers);
    if let Err(e) = store::read_snapshot(&path, &mut state::State::new(0)) {
        let why = match e {
            store::SnapshotProblem::Skip(why) => why,
            store::SnapshotProblem::Version { .. } => "another version".to_string(),
        };
        let _ = std::fs::remove_file(&path);
        return Err(format!(
            "snapshot {} did not read back ({why}); removed it, kept everything older",
            path.display()
        ));
    }
    let (journals, snapshots) = store::list(dir).map_err(|e| e.to_string())?;
    // The newest snapshot older than this one stays, with the journals it needs.
    let keep_from = snapshots.iter().map(|(s, _)| *s).filter(|s| *s < covers).max().unwrap_or(covers);
    for (s, p) in journals.iter().filter(|(s, _)| *s < keep_from) {
        std::fs::remove_file(p).map_err(|e| format!("removing {} (seq {s}): {e}", p.display()))?;
    }
    for (_, p) in snapshots.iter().filter(|(s, _)| *s < keep_from) {
        let _ = std::fs::remove_file(p);
    }
    Ok(path)
}

/// Writes a snapshot of the segment plus the retained `recent` events (the journal
/// files holding them are deleted once a snapshot covers them, so the snapshot must
/// carry them for a restore to bring them back).
pub fn write_snapshot(seg: &Segment, dir: &Path, covers: u64, recent: &VecDeque<EventRecord>) -> Result<(), String> {
    let mut records: Vec<Record> = recent.iter().filter(|e| e.seq < covers).map(|e| Record::Event(*e)).collect();
    records.extend(capture(seg)?);
    // The reservation travels with the snapshot: the journal files holding it go.
    records.push(Record::Reserve { upto: seg.seq_reserved() });
    store::write_snapshot(dir, covers, &records).map_err(|e| format!("writing snapshot: {e}"))?;
    Ok(())
}

/// Records sequences `accounted..upto` (if any) as a gap and moves `accounted` on.
fn account_gap(buf: &mut Vec<u8>, accounted: &mut u64, upto: u64) {
    if upto > *accounted {
        format::encode(buf, &Record::Gap { from: *accounted, missed: upto - *accounted });
        *accounted = upto;
    }
}

/// Beats the journal's heartbeat until `stop`: from a thread of its own, so a long
/// fsync, batch or snapshot never makes it look stale (a stale beat only sends writers
/// to check the daemon's process, which the beat proves alive just the same).
pub fn beat(seg: &Daemon, cfg: &Config, stop: &AtomicBool) {
    let stale = cfg.heartbeat_stale();
    let period = (stale / 4).clamp(Duration::from_micros(250), Duration::from_millis(5));
    while !stop.load(Ordering::Acquire) {
        seg.journal_beat(stale);
        std::thread::sleep(period);
    }
}

/// Events written in one batch at most.
const BATCH: usize = 4096;

/// The journal loop: runs until `stop`, then syncs and returns.
///
/// `recent` holds the newest journaled events (at most the ring's capacity), which
/// snapshots carry; the caller has published the policy and cursors already
/// (`Daemon::set_durability`), before clients could attach.
pub fn run(
    seg: &Daemon,
    cfg: &Config,
    start_seq: u64,
    stop: &AtomicBool,
    mut recent: VecDeque<EventRecord>,
) -> Result<(), String> {
    let mut file = JournalFile::open_at(&cfg.dir, start_seq).map_err(|e| format!("opening the journal: {e}"))?;
    let mut reader = seg.reader(Start::At(start_seq));
    let keep = seg.capacities().events as usize;
    let mut buf = Vec::with_capacity(1 << 20);
    let mut synced = reader.position();
    let mut last_sync = Instant::now();
    let mut snapshots_done = seg.snapshots_done();
    let mut last_snapshot_failure: Option<Instant> = None;
    let capacity = seg.capacities().events as u64;
    let nap = cfg.nap();
    // The next sequence the journal files account for: every sequence below it is an
    // event in them or inside a `Gap` record (a slot abandoned by a producer that died,
    // events lost while no daemon ran), so the files follow on without holes.
    let mut accounted = start_seq;
    let mut published = None;
    let mut groups = Groups::default();
    let mut last_work = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Acquire);
        // Keep the reservation ahead of the producers (the tail counts those waiting).
        if seg.seq_reserved() <= seg.ring_tail() + reserve_renew(capacity) {
            let upto = seg.ring_tail() + reserve_ahead(capacity);
            reserve(&mut file, upto)?;
            seg.publish_reservation(upto);
        }
        buf.clear();
        let mut n = 0;
        let mut gathering: Option<Instant> = None;
        while n < BATCH {
            match reader.try_next() {
                Ok(Some(e)) => {
                    account_gap(&mut buf, &mut accounted, e.seq());
                    accounted = e.seq() + 1;
                    journal_event(seg, &e, &mut buf);
                    if recent.len() == keep {
                        recent.pop_front();
                    }
                    recent.push_back(*e.record());
                    n += 1;
                }
                // Group commit: under `always`, with fewer events than the recent groups
                // held, the writers released by the last commit are likely about to append
                // again — wait for them a little (bounded) so one sync covers them all
                // rather than alternating half groups.
                Ok(None)
                    if cfg.policy == Durability::Always
                        && n > 0
                        && n < groups.target()
                        && gathering.get_or_insert_with(Instant::now).elapsed() < GROUP_GATHER =>
                {
                    std::thread::yield_now();
                }
                Ok(None) => break,
                Err(RingError::Lagged { missed, resume_at }) => {
                    eprintln!("worknoded: journal: {missed} events were overwritten before they could be journaled (the daemon was not running); recording the gap");
                    account_gap(&mut buf, &mut accounted, resume_at);
                }
                Err(e) => return Err(format!("journal reader: {e}")),
            }
        }
        let pos = reader.position();
        // Sequences the reader skipped after the last event (abandoned slots).
        account_gap(&mut buf, &mut accounted, pos);
        if !buf.is_empty() {
            file.append(&buf).map_err(|e| format!("journal write: {e}"))?;
        }
        let must_sync = match cfg.policy {
            Durability::Always => pos > synced,
            Durability::Batch => pos > synced && (last_sync.elapsed() >= cfg.interval || stopping),
            _ => false,
        };
        if must_sync {
            groups.record(n);
            let began = Instant::now();
            file.sync().map_err(|e| format!("journal fsync: {e}"))?;
            seg.record_journal_fsync(began.elapsed());
            synced = pos;
            last_sync = Instant::now();
        }
        let durable = if cfg.policy == Durability::Never { pos } else { synced };
        // Only news is published: the cursors share a cache line with the word waiting
        // writers watch, and a write to it each idle pass would only slow their reads.
        if published != Some((pos, durable)) {
            seg.publish_journal_progress(pos, durable);
            published = Some((pos, durable));
        }
        if n > 0 {
            last_work = Instant::now();
        } else {
            // Idle: lengthen the zero tail (and sync it) now, when no commit waits, so
            // the commits after it write no metadata.
            file.prepare_ahead().map_err(|e| format!("journal zero tail: {e}"))?;
        }

        let requested = seg.snapshot_requests();
        let due = file.len > cfg.rotate_bytes || requested != snapshots_done;
        if due && last_snapshot_failure.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            // A snapshot takes a while: a full ring of slack for the producers meanwhile.
            if seg.seq_reserved() < seg.ring_tail() + capacity {
                let upto = seg.ring_tail() + capacity;
                reserve(&mut file, upto)?;
                seg.publish_reservation(upto);
            }
            match snapshot(seg, &cfg.dir, &mut file, pos, &recent) {
                Ok(path) => {
                    eprintln!("worknoded: snapshot {} written (covers events before {pos})", path.display());
                    snapshots_done = requested;
                    seg.set_snapshots_done(requested);
                    synced = pos;
                    last_snapshot_failure = None;
                }
                Err(e) => {
                    // Nothing was deleted: the journal still holds everything. Retry later.
                    eprintln!("worknoded: warning: snapshot not taken ({e}); the journal keeps everything, retrying in a second");
                    last_snapshot_failure = Some(Instant::now());
                }
            }
        }
        if stopping && n == 0 {
            file.sync().map_err(|e| format!("journal fsync: {e}"))?;
            seg.publish_journal_progress(pos, pos);
            return Ok(());
        }
        if n == 0 {
            if cfg.policy == Durability::Always && last_work.elapsed() < COMMIT_POLL {
                // A writer just released tends to append again at once: look for it a
                // little before parking, so neither side pays a futex wake.
                std::thread::yield_now();
            } else {
                seg.journal_sleep(nap);
            }
        }
    }
}

/// How long a group commit waits at most for the writers the last one released.
const GROUP_GATHER: Duration = Duration::from_micros(50);

/// The sizes (events) of the last few commits under `always`: the group to wait for is
/// the largest of them, so a writer that stops costs a few bounded waits, then none.
#[derive(Default)]
struct Groups {
    sizes: [usize; 8],
    next: usize,
}

impl Groups {
    fn record(&mut self, events: usize) {
        self.sizes[self.next] = events;
        self.next = (self.next + 1) % self.sizes.len();
    }

    fn target(&self) -> usize {
        self.sizes.iter().copied().max().unwrap_or(0).min(BATCH)
    }
}

/// How long the journal under `always` keeps looking at the ring after its last commit
/// before it parks on its futex. Writers then skip the wake syscall (the journal's park
/// flag is clear), and the journal skips a wake-up latency; a burst that stops costs
/// this much polling (yielding the CPU to anyone runnable).
const COMMIT_POLL: Duration = Duration::from_micros(200);

#[cfg(test)]
mod tests {
    use super::*;
    use worknode::{Capacities, NewNode, NodeKind, Status};

    struct Seg(Daemon);
    impl Drop for Seg {
        fn drop(&mut self) {
            let _ = Segment::unlink(self.0.name());
        }
    }

    fn caps() -> Capacities {
        Capacities { nodes: 64, events: 256, agents: 4, blob_chunks: 8, blob_chunk_size: 256, sets: 4 }
    }

    #[test]
    fn capture_then_replay_rebuilds_nodes_documents_sets_agents_and_claims() {
        let name = format!("wn-journal-unit-{}", std::process::id());
        let _ = Segment::unlink(&name);
        let src = Seg(Daemon::create(&name, &caps(), 0o600).unwrap());
        let s = &src.0;
        let project = s.add(s.root(), &NewNode::new(NodeKind::Project, "web")).unwrap();
        let task = s.add(project, &NewNode::new(NodeKind::Task, "schema").status(Status::Ready).priority(3)).unwrap();
        let blocked = s.add(project, &NewNode::new(NodeKind::Task, "backend").status(Status::Ready)).unwrap();
        s.add_blocker(blocked, task).unwrap();
        let doc = s.put_document(project, "schema.sql", "text/sql", &b"create table t (id int);".repeat(30)).unwrap();
        s.set_add(project, 7).unwrap();
        s.set_add(project, 8).unwrap();
        s.set_remove(project, 7).unwrap();
        let agent = s.join("architect", "design").unwrap();
        let claim = s.claim(task, agent, Duration::from_secs(600)).unwrap();

        let records = capture(s).unwrap();
        let mut bytes = Vec::new();
        format::header(&mut bytes, format::SNAPSHOT_MAGIC, 0);
        for r in &records {
            format::encode(&mut bytes, r);
        }
        let mut state = state::State::new(16);
        format::scan(&bytes, |_, r| state.apply(r)).unwrap();

        let copy_name = format!("{name}-copy");
        let _ = Segment::unlink(&copy_name);
        let dst = Seg(Daemon::create_for_restore(&copy_name, &caps(), 0o600).unwrap());
        let stats = state.materialize(&dst.0).unwrap();
        let d = &dst.0;
        d.open_for_clients();
        assert_eq!(stats.orphans, 0);
        assert_eq!(stats.nodes, s.inspect().info().regions[0].used);
        // Every node comes back in the same slot with the same record.
        s.for_each_node(|n| {
            let m = d.read(n.handle()).unwrap();
            assert_eq!(m.uuid(), n.uuid());
            assert_eq!(m.version(), n.version());
            assert_eq!(m.name(), n.name());
            assert_eq!(m.status(), n.status());
            true
        })
        .unwrap();
        let mut kids = Vec::new();
        d.children(project, &mut kids).unwrap();
        assert_eq!(kids, vec![task, blocked, doc]);
        let mut content = Vec::new();
        d.get_document(doc, &mut content).unwrap();
        assert_eq!(content, b"create table t (id int);".repeat(30));
        assert!(d.set_contains(project, 8).unwrap() && !d.set_contains(project, 7).unwrap());
        assert_eq!(d.find_agent("architect"), Some(agent));
        assert_eq!(d.read(task).unwrap().claimed_by(), Some(agent.index));
        d.complete(&claim, "").unwrap();
        assert_eq!(d.read(blocked).unwrap().status(), Some(Status::Ready), "the dependency graph survived");
    }
}
