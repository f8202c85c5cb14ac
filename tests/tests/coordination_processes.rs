//! Coordination across real processes (issue 4): racing `claim_next` workers complete
//! every task exactly once; leases that lapse mid-run fence the late claimant out and
//! the task is finished by another; a SIGKILLed session holder's claim is released by
//! the daemon (session EOF) and finished by the others; a stale claim presented by
//! another process is refused with `StaleEpoch`; dependencies gate claims across
//! processes and completions follow a topological order in the event ring.
//!
//! Workers report every claim they made as `[uuid, epoch, outcome, hlc, late]`:
//! `outcome` is `"ok"` or the kind of the error `complete` returned, `hlc` the
//! completion's clock stamp (0 on failure) and `late` whether `complete` was issued
//! after the claim's lease had already ended.

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};
use uuid::Uuid;
use worknode::{
    unix_ms, Access, Capacities, Daemon, Event, EventKind, Handle, NewNode, NodeKind, Segment, Status, TaskError,
    TaskFilter,
};
use worknode_tests::{
    child_main, env_str, env_u64, handles_from_env, handles_to_env, ring_events, say, Proc, SegmentGuard, Stream,
    READY_TIMEOUT, SEGMENT_ENV,
};

/// Deadline for a worker's whole run (a bound, not an expectation).
const WORK_TIMEOUT: Duration = Duration::from_secs(45);
/// The parent's bound on waiting for the workers' reports.
const REPORT_TIMEOUT: Duration = Duration::from_secs(50);
/// A lease that never lapses during a test.
const LONG_LEASE_MS: u64 = 60_000;
/// Pause of a worker that found nothing ready while tasks remain.
const IDLE: Duration = Duration::from_millis(3);

fn caps() -> Capacities {
    Capacities { nodes: 2048, events: 65536, agents: 16, blob_chunks: 1, sets: 1, ..Capacities::default() }
}

const DAEMON_ARGS: [&str; 10] =
    ["--nodes", "2048", "--events", "65536", "--agents", "16", "--blob-chunks", "1", "--sets", "1"];

fn attach() -> Segment {
    Segment::attach(&env_str(SEGMENT_ENV), Access::ReadWrite).expect("attach read-write")
}

fn env_handle(name: &str) -> Handle {
    handles_from_env(name)[0]
}

/// The variant name of a task error (`StaleEpoch`, `LeaseExpired`, …).
fn kind_of(e: &TaskError) -> String {
    let dbg = format!("{e:?}");
    dbg.split([' ', '{', '(']).next().unwrap_or("").to_string()
}

#[test]
fn child_entry() {
    child_main(|role| match role {
        "worker" => worker(),
        "victim" => victim(),
        "stale_a" => stale_a(),
        "taker_b" => taker_b(),
        "cycles" => cycles(),
        other => panic!("unknown role {other}"),
    })
}

/// Joins (or opens a session when `WN_SESSION=1`), waits for the gate, then loops
/// `claim_next` + `complete` until every task under `WN_PROJECT` is complete.
/// With `WN_STALL_MS` > 0 it sleeps that long before every other `complete`.
fn worker() -> Value {
    let seg = attach();
    let name = env_str("WN_AGENT");
    let lease = Duration::from_millis(env_u64("WN_LEASE_MS"));
    let stall = Duration::from_millis(env_u64("WN_STALL_MS"));
    let project = env_handle("WN_PROJECT");
    let gate = env_handle("WN_GATE");
    let deadline = Instant::now() + WORK_TIMEOUT;
    let session = (env_u64("WN_SESSION") == 1).then(|| seg.open_session(&name, "worker").expect("open_session"));
    let agent = match &session {
        Some(s) => {
            assert!(s.watched_by_daemon(), "{name}: the daemon does not watch the session");
            s.id()
        }
        None => seg.join(&name, "worker").expect("join"),
    };
    say("joined");
    while seg.read(gate).expect("read gate").priority() == 0 {
        assert!(Instant::now() < deadline, "{name}: the gate never opened");
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut claims = Vec::new();
    let mut idle_rounds = 0u64;
    loop {
        assert!(Instant::now() < deadline, "{name}: tasks still open at the deadline; made {} claims", claims.len());
        match seg.claim_next(&TaskFilter::default(), agent, lease) {
            Ok(c) => {
                let uuid = seg.read(c.task).expect("read claimed task").uuid();
                if !stall.is_zero() && claims.len() % 2 == 1 {
                    std::thread::sleep(stall);
                }
                let issued = unix_ms();
                let (outcome, hlc) = match seg.complete(&c, "") {
                    Ok(n) => ("ok".to_string(), n.updated().0),
                    Err(e) => (kind_of(&e), 0),
                };
                claims.push(json!([uuid.to_string(), c.epoch, outcome, hlc, issued >= c.lease_until_ms]));
            }
            Err(TaskError::NothingReady) => {
                let r = seg.rollup(project, None).expect("rollup");
                if r.count(Status::Complete) == r.total {
                    break;
                }
                idle_rounds += 1;
                std::thread::sleep(IDLE);
            }
            Err(e) => panic!("{name}: claim_next failed: {e:?} ({e})"),
        }
    }
    match session {
        Some(s) => s.leave().expect("leave session"),
        None => seg.leave(agent).expect("leave"),
    }
    json!({ "agent": name, "claims": claims, "idle_rounds": idle_rounds })
}

/// Opens a session, claims the best ready task with a long lease, announces it, and
/// blocks until killed.
fn victim() -> Value {
    let seg = attach();
    let session = seg.open_session("victim", "worker").expect("open_session");
    assert!(session.watched_by_daemon(), "victim: the daemon does not watch the session");
    let c = seg
        .claim_next(&TaskFilter::default(), session.id(), Duration::from_millis(LONG_LEASE_MS))
        .expect("victim claim_next");
    let uuid = seg.read(c.task).expect("read").uuid();
    say(&format!("claimed {uuid} {} {}", c.epoch, c.task.to_raw()));
    std::thread::sleep(Duration::from_secs(60));
    json!({ "survived": true })
}

/// Claims with a short lease, lets it lapse, then (once another process completed the
/// task) presents the stale claim to every claimant operation.
fn stale_a() -> Value {
    let seg = attach();
    let task = env_handle("WN_TASK");
    let a = seg.join("A", "worker").expect("join A");
    let c = seg.claim(task, a, Duration::from_millis(50)).expect("A claims");
    say(&format!("claimed {}", c.epoch));
    let deadline = Instant::now() + WORK_TIMEOUT;
    while unix_ms() <= c.lease_until_ms + 2 {
        assert!(Instant::now() < deadline, "the lease never lapsed");
        std::thread::sleep(Duration::from_millis(2));
    }
    let lapsed = seg.progress(&c, 10).err();
    say("lapsed");
    loop {
        let n = seg.read(task).expect("read");
        if n.status() == Some(Status::Complete) {
            break;
        }
        assert!(Instant::now() < deadline, "B never completed the task: {:?} epoch {}", n.status(), n.claim_epoch());
        std::thread::sleep(Duration::from_millis(2));
    }
    let dbg = |r: Result<worknode::Node, TaskError>| format!("{:?}", r.err());
    json!({
        "epoch": c.epoch,
        "lapsed_progress": format!("{lapsed:?}"),
        "complete": dbg(seg.complete(&c, "late")),
        "progress": dbg(seg.progress(&c, 50)),
        "start": dbg(seg.start(&c)),
        "release": dbg(seg.release(&c)),
        "fail": dbg(seg.fail(&c, "late")),
        "renew": format!("{:?}", seg.renew(&c, Duration::from_secs(60)).err()),
    })
}

/// Takes over the task A let lapse, and finishes it.
fn taker_b() -> Value {
    let seg = attach();
    let task = env_handle("WN_TASK");
    let b = seg.join("B", "worker").expect("join B");
    let c = seg.claim(task, b, Duration::from_millis(LONG_LEASE_MS)).expect("B takes over the lapsed claim");
    seg.start(&c).expect("B starts");
    seg.progress(&c, 50).expect("B reports progress");
    let n = seg.complete(&c, "done by B").expect("B completes");
    json!({ "epoch": c.epoch, "agent_node": seg.agent(b).expect("agent").node.to_raw(), "hlc": n.updated().0 })
}

/// Adds one legal edge across the two structures, then tries edges that would close a
/// cycle.
fn cycles() -> Value {
    let seg = attach();
    let [schema, backend, tests, c0, c9]: [Handle; 5] = handles_from_env("WN_NODES").try_into().expect("five handles");
    let legal = format!("{:?}", seg.add_blocker(tests, c9).err());
    let dbg = |r: Result<worknode::Node, TaskError>| format!("{:?}", r.err());
    json!({
        "legal": legal,
        "attempts": [
            dbg(seg.add_blocker(schema, tests)),
            dbg(seg.add_blocker(c0, c9)),
            dbg(seg.add_blocker(c0, tests)),
            dbg(seg.add_blocker(backend, backend)),
            dbg(seg.add_blocker(schema, backend)),
        ],
    })
}

// ---------------------------------------------------------------------------------------
// Parent-side helpers
// ---------------------------------------------------------------------------------------

/// A project node holding `n` ready tasks, and a closed gate node.
struct Work {
    project: Handle,
    gate: Handle,
    tasks: Vec<Handle>,
}

fn lay_out(seg: &Segment, n: usize) -> Work {
    let project = seg.add(seg.root(), &NewNode::new(NodeKind::Project, "race")).unwrap();
    let gate = seg.add(seg.root(), &NewNode::new(NodeKind::Folder, "gate")).unwrap();
    let tasks = (0..n)
        .map(|i| seg.add(project, &NewNode::new(NodeKind::Task, &format!("t{i}")).status(Status::Ready)).unwrap())
        .collect();
    Work { project, gate, tasks }
}

fn open_gate(seg: &Segment, gate: Handle) {
    seg.update(gate, |n| {
        n.set_priority(1);
        Ok(())
    })
    .unwrap();
}

fn spawn_worker(g: &SegmentGuard, w: &Work, name: &str, lease_ms: u64, stall_ms: u64, session: bool) -> Proc {
    g.spawn_role(
        "worker",
        &[
            ("WN_AGENT", name.to_string()),
            ("WN_LEASE_MS", lease_ms.to_string()),
            ("WN_STALL_MS", stall_ms.to_string()),
            ("WN_PROJECT", handles_to_env(&[w.project])),
            ("WN_GATE", handles_to_env(&[w.gate])),
            ("WN_SESSION", (session as u8).to_string()),
        ],
    )
}

fn wait_joined(procs: &[Proc]) {
    for p in procs {
        p.wait_for_say("joined", REPORT_TIMEOUT);
    }
}

/// The session socket of the daemon now running the segment (its name carries the
/// daemon's boot id).
fn session_addr(name: &str) -> std::os::unix::net::SocketAddr {
    let seg = worknode::Segment::attach(name, worknode::Access::ReadOnly).expect("attach to read the boot id");
    worknode::session_socket_addr(name, seg.inspect().info().boot_id).unwrap()
}

/// Waits (bounded) until the daemon's session socket accepts connections.
fn wait_session_listener(g: &SegmentGuard, daemon: &Proc) {
    let addr = session_addr(g.name());
    let deadline = Instant::now() + READY_TIMEOUT;
    while let Err(e) = UnixStream::connect_addr(&addr) {
        assert!(Instant::now() < deadline, "the daemon never listened for sessions: {e}\n{}", daemon.transcript());
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits for every child's report, all within one deadline.
fn reports(procs: &mut [Proc]) -> Vec<Value> {
    let deadline = Instant::now() + REPORT_TIMEOUT;
    procs.iter_mut().map(|p| p.expect_report(deadline.saturating_duration_since(Instant::now()))).collect()
}

/// One claim as a worker reported it.
#[derive(Debug, Clone)]
struct ClaimRec {
    worker: String,
    uuid: Uuid,
    epoch: u64,
    outcome: String,
    hlc: u64,
    late: bool,
}

fn claims_of(reports: &[Value]) -> Vec<ClaimRec> {
    let mut out = Vec::new();
    for r in reports {
        for c in r["claims"].as_array().unwrap_or_else(|| panic!("no claims in {r}")) {
            out.push(ClaimRec {
                worker: r["agent"].as_str().unwrap().to_string(),
                uuid: c[0].as_str().unwrap().parse().unwrap(),
                epoch: c[1].as_u64().unwrap(),
                outcome: c[2].as_str().unwrap().to_string(),
                hlc: c[3].as_u64().unwrap(),
                late: c[4].as_bool().unwrap(),
            });
        }
    }
    out
}

/// Sequence numbers of the events of `kind`, per node UUID.
fn seqs_by_node(events: &[Event], kind: EventKind) -> HashMap<Uuid, Vec<u64>> {
    let mut m: HashMap<Uuid, Vec<u64>> = HashMap::new();
    for e in events.iter().filter(|e| e.kind() == kind) {
        m.entry(e.node().expect("task events name their node")).or_default().push(e.seq());
    }
    m
}

/// The checks shared by every run: each task is complete; exactly one `complete`
/// succeeded for it, with the task's final epoch; the epochs handed out for a task are
/// exactly 1..=final epoch, each to one claim (plus `extra` claims made outside the
/// workers); no `complete` issued after its lease ended succeeded; the ring holds one
/// `task_completed` per task. Returns the successful claim per task.
fn check_exactly_once(
    seg: &Segment,
    tasks: &[Handle],
    claims: &[ClaimRec],
    extra: &[(Uuid, u64)],
) -> HashMap<Uuid, ClaimRec> {
    let by_uuid: HashMap<Uuid, Handle> = tasks.iter().map(|h| (seg.read(*h).unwrap().uuid(), *h)).collect();
    assert_eq!(by_uuid.len(), tasks.len());
    let mut ok: HashMap<Uuid, ClaimRec> = HashMap::new();
    let mut epochs: HashMap<Uuid, Vec<u64>> = HashMap::new();
    for c in claims {
        assert!(by_uuid.contains_key(&c.uuid), "a claim of an unknown task: {c:?}");
        epochs.entry(c.uuid).or_default().push(c.epoch);
        if c.outcome == "ok" {
            assert!(!c.late, "a complete issued after its lease ended succeeded: {c:?}");
            if let Some(first) = ok.insert(c.uuid, c.clone()) {
                panic!("task {} completed twice: {first:?} and {c:?}", c.uuid);
            }
        } else {
            assert!(
                ["StaleEpoch", "LeaseExpired", "NotClaimant"].contains(&c.outcome.as_str()),
                "a complete failed other than by fencing: {c:?}"
            );
        }
    }
    for (u, e) in extra {
        epochs.entry(*u).or_default().push(*e);
    }
    let completed = seqs_by_node(&ring_events(seg), EventKind::TASK_COMPLETED);
    for (uuid, h) in &by_uuid {
        let n = seg.read(*h).unwrap();
        assert_eq!(n.status(), Some(Status::Complete), "task {uuid} ends {:?}", n.status());
        let win = ok.get(uuid).unwrap_or_else(|| panic!("no successful complete of task {uuid}"));
        assert_eq!(win.epoch, n.claim_epoch(), "the winning claim of {uuid} is not the task's last epoch");
        let mut got = epochs.remove(uuid).unwrap_or_default();
        got.sort_unstable();
        assert_eq!(got, (1..=n.claim_epoch()).collect::<Vec<_>>(), "epochs handed out for task {uuid}");
        assert_eq!(completed.get(uuid).map_or(0, Vec::len), 1, "task_completed events of {uuid}");
    }
    assert_eq!(ok.len(), tasks.len(), "successful completes");
    ok
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// Eight processes race `claim_next` + `complete` over 1,000 ready tasks: every task is
/// completed exactly once, by one claim at epoch 1, and the claims add up to 1,000.
#[test]
fn eight_racing_workers_complete_each_of_1000_tasks_exactly_once() {
    let g = SegmentGuard::new("coord-race");
    let seg = Daemon::create(g.name(), &caps(), 0o600).unwrap();
    let w = lay_out(&seg, 1000);
    let mut procs: Vec<Proc> =
        (0..8).map(|i| spawn_worker(&g, &w, &format!("racer-{i}"), LONG_LEASE_MS, 0, false)).collect();
    wait_joined(&procs);
    open_gate(&seg, w.gate);
    let reports = reports(&mut procs);
    let claims = claims_of(&reports);

    let mut per_worker: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &claims {
        *per_worker.entry(c.worker.as_str()).or_default() += 1;
    }
    assert_eq!(claims.len(), 1000, "claims across workers: {per_worker:?}");
    let union: BTreeSet<Uuid> = claims.iter().map(|c| c.uuid).collect();
    assert_eq!(union.len(), 1000, "distinct tasks claimed (duplicates or misses)");
    assert!(claims.iter().all(|c| c.outcome == "ok" && c.epoch == 1), "every claim completes at epoch 1");
    check_exactly_once(&seg, &w.tasks, &claims, &[]);
    for h in &w.tasks {
        assert_eq!(seg.read(*h).unwrap().claim_epoch(), 1);
    }
    let mut agents = Vec::new();
    seg.agents(&mut agents);
    assert!(agents.is_empty(), "every worker left: {agents:?}");
}

/// Two of four workers hold 2 ms leases and stall 10 ms before every other complete, and
/// the parent reaps lapsed leases meanwhile: their late completes are refused
/// (`StaleEpoch`, `LeaseExpired` or `NotClaimant`), the tasks are claimed again and
/// finished, and exactly one `complete` succeeds per task.
#[test]
fn lapsed_leases_fence_late_completes_and_every_task_is_completed_once() {
    let g = SegmentGuard::new("coord-lapse");
    let seg = Daemon::create(g.name(), &caps(), 0o600).unwrap();
    let w = lay_out(&seg, 1000);
    let mut procs = vec![
        spawn_worker(&g, &w, "slow-0", 2, 10, false),
        spawn_worker(&g, &w, "slow-1", 2, 10, false),
        spawn_worker(&g, &w, "steady-0", LONG_LEASE_MS, 0, false),
        spawn_worker(&g, &w, "steady-1", LONG_LEASE_MS, 0, false),
    ];
    wait_joined(&procs);
    open_gate(&seg, w.gate);
    // Release lapsed leases while the workers run, as the daemon would.
    let deadline = Instant::now() + REPORT_TIMEOUT;
    let mut reaped = 0;
    while procs.iter_mut().any(|p| p.try_wait_exit(Duration::ZERO).is_none()) {
        assert!(Instant::now() < deadline, "workers still running at the deadline");
        reaped += seg.reap_expired_claims();
        std::thread::sleep(Duration::from_millis(5));
    }
    let reports = reports(&mut procs);
    let claims = claims_of(&reports);
    let fenced: Vec<&ClaimRec> = claims.iter().filter(|c| c.outcome != "ok").collect();
    assert!(!fenced.is_empty(), "no complete was fenced out: the scenario did not happen");
    assert!(fenced.iter().all(|c| c.worker.starts_with("slow-")), "a long-lease worker was fenced: {fenced:?}");
    let ok = check_exactly_once(&seg, &w.tasks, &claims, &[]);
    assert_eq!(claims.len(), ok.len() + fenced.len());
    // Tasks whose first claimant was fenced were finished under a later epoch.
    assert!(ok.values().any(|c| c.epoch > 1), "no task was re-claimed after a lapse");
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &fenced {
        *kinds.entry(c.outcome.as_str()).or_default() += 1;
    }
    eprintln!("lapsed leases: {} fenced completes {kinds:?}; parent reaped {reaped}", fenced.len());
}

/// With the real daemon, a session holder claims a task under a 60 s lease and is
/// SIGKILLed while three session workers run: the daemon releases its claim (session
/// EOF), emits `agent_lost`, and the others finish every task.
#[test]
fn a_sigkilled_session_holders_claim_is_released_by_the_daemon_and_finished_by_others() {
    let g = SegmentGuard::new("coord-kill");
    let mut daemon = g.spawn_daemon(&DAEMON_ARGS);
    daemon.wait_for_line(Stream::Stdout, READY_TIMEOUT, |l| l.contains("ready"));
    // Work around the daemon saying "ready" before it listens for sessions (pinned by
    // `the_daemon_accepts_sessions_once_it_says_ready`): this test is about what happens
    // to a watched session's claims.
    wait_session_listener(&g, &daemon);
    let seg = Segment::attach(g.name(), Access::ReadWrite).unwrap();
    let w = lay_out(&seg, 300);

    let mut victim = g.spawn_role("victim", &[]);
    let line = victim.wait_for_line(Stream::Stdout, REPORT_TIMEOUT, |l| l.contains("WN-SAY claimed "));
    let parts: Vec<&str> = line.split_ascii_whitespace().collect();
    let victim_uuid: Uuid = parts[2].parse().unwrap();
    let victim_epoch: u64 = parts[3].parse().unwrap();
    let victim_task = Handle::from_raw(parts[4].parse().unwrap()).unwrap();
    assert_eq!(victim_epoch, 1);
    let vid = seg.find_agent("victim").expect("the victim joined");
    let vinfo = seg.agent(vid).unwrap();
    assert_eq!(vinfo.session_pid, Some(victim.pid()));
    assert_eq!(seg.read(victim_task).unwrap().claimed_by(), Some(vid.index), "the victim holds its claim");

    let mut workers: Vec<Proc> =
        (0..3).map(|i| spawn_worker(&g, &w, &format!("survivor-{i}"), LONG_LEASE_MS, 0, true)).collect();
    wait_joined(&workers);
    open_gate(&seg, w.gate);
    // Kill the victim mid-run: once the others have completed some tasks.
    let deadline = Instant::now() + REPORT_TIMEOUT;
    while seg.rollup(w.project, None).unwrap().count(Status::Complete) < 30 {
        assert!(Instant::now() < deadline, "the workers made no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    victim.signal(nix::sys::signal::Signal::SIGKILL);
    let status = victim.wait_exit(Duration::from_secs(10));
    assert_eq!(status.signal(), Some(9), "the victim died by SIGKILL\n{}", victim.transcript());

    // Only the daemon can release it now (the lease has a minute left).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = seg.read(victim_task).unwrap();
        if n.status() != Some(Status::Claimed) || n.claim_epoch() > 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed victim's claim was not released within 10 s: {:?}\n{}",
            n.status(),
            daemon.transcript()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let reports = reports(&mut workers);
    let claims = claims_of(&reports);
    assert!(claims.iter().all(|c| c.outcome == "ok"), "no complete refused under 60 s leases");
    let ok = check_exactly_once(&seg, &w.tasks, &claims, &[(victim_uuid, victim_epoch)]);
    assert_eq!(ok[&victim_uuid].epoch, 2, "a survivor finished the victim's task under a new epoch");
    assert!(seg.find_agent("victim").is_none(), "the victim was reaped");

    let events = ring_events(&seg);
    let lost: Vec<&Event> = events.iter().filter(|e| e.kind() == EventKind::AGENT_LOST).collect();
    assert_eq!(lost.len(), 1, "one agent_lost event");
    assert_eq!(lost[0].node(), Some(vinfo.uuid), "agent_lost names the victim");
    let released: Vec<&Event> =
        events.iter().filter(|e| e.kind() == EventKind::TASK_RELEASED && e.node() == Some(victim_uuid)).collect();
    assert_eq!(released.len(), 1, "one task_released for the victim's task");
    let payload = String::from_utf8_lossy(released[0].payload());
    assert!(payload.contains("\"epoch\":1") && payload.contains("agent lost"), "{payload}");
    let reclaimed = events
        .iter()
        .filter(|e| e.kind() == EventKind::TASK_CLAIMED && e.node() == Some(victim_uuid))
        .map(Event::seq)
        .max()
        .unwrap();
    assert!(released[0].seq() < reclaimed, "re-claimed only after the release");

    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "daemon exit {status}\n{}", daemon.transcript());
    // The release came through the session socket's EOF, not the once-a-second scan.
    let lost_line = format!("lost: its session process {} exited", victim.pid());
    assert!(daemon.output(Stream::Stderr).contains(&lost_line), "{}", daemon.transcript());
    assert!(!g.shm_path().exists(), "the daemon removed the segment");
}

/// Once the daemon has printed its ready line, an agent opening a session must be
/// watched: the session socket has to accept connections by then. (An agent whose
/// session is not watched loses its claims only when the once-a-second dead-session scan
/// notices, and `open_session` tells it only through `watched_by_daemon()`.) The probe
/// races the daemon's startup, so it is repeated over a few daemon starts: a refused
/// connection after the ready line is proof of the fault, a pass is not proof of its
/// absence.
#[test]
fn the_daemon_accepts_sessions_once_it_says_ready() {
    let mut refused = Vec::new();
    for round in 0..8 {
        let g = SegmentGuard::new(&format!("coord-listen-{round}"));
        let mut daemon = g.spawn_daemon(&DAEMON_ARGS);
        daemon.wait_for_line(Stream::Stdout, READY_TIMEOUT, |l| l.contains("ready"));
        let addr = session_addr(g.name());
        if let Err(e) = UnixStream::connect_addr(&addr) {
            refused.push(format!("round {round}: {e}"));
        }
        daemon.signal(nix::sys::signal::Signal::SIGTERM);
        let status = daemon.wait_exit(Duration::from_secs(10));
        assert!(status.success(), "daemon exit {status}\n{}", daemon.transcript());
        if !refused.is_empty() {
            break;
        }
    }
    assert!(
        refused.is_empty(),
        "right after the daemon's ready line its session socket refused a connection ({refused:?}): an agent \
         opening a session then is silently unwatched (worknoded prints the ready line before serve() binds \
         the session listener)"
    );
}

/// Process A claims with a 50 ms lease and stalls; once it lapsed, process B claims
/// (epoch 2) and completes; A's old claim is then refused with `StaleEpoch` by every
/// claimant operation.
#[test]
fn a_stale_claim_from_another_process_is_fenced_out() {
    let g = SegmentGuard::new("coord-fence");
    let seg = Daemon::create(g.name(), &caps(), 0o600).unwrap();
    let task = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "contested").status(Status::Ready)).unwrap();
    let env = [("WN_TASK", handles_to_env(&[task]))];
    let mut a = g.spawn_role("stale_a", &env);
    a.wait_for_say("claimed 1", REPORT_TIMEOUT);
    a.wait_for_say("lapsed", REPORT_TIMEOUT);
    let b = g.spawn_role("taker_b", &env).expect_report(REPORT_TIMEOUT);
    let r = a.expect_report(REPORT_TIMEOUT);

    assert_eq!(b["epoch"], 2, "{b}");
    assert!(r["lapsed_progress"].as_str().unwrap().starts_with("Some(LeaseExpired"), "{r}");
    let stale = format!("{:?}", Some(TaskError::StaleEpoch { presented: 1, current: 2 }));
    for op in ["complete", "progress", "start", "release", "fail", "renew"] {
        assert_eq!(r[op].as_str().unwrap(), stale, "A's {op}: {r}");
    }
    let n = seg.read(task).unwrap();
    assert_eq!(n.status(), Some(Status::Complete));
    assert_eq!(n.claim_epoch(), 2);
    assert_eq!(n.progress(), 100);
    let uuid = n.uuid();
    let events = ring_events(&seg);
    let done: Vec<&Event> =
        events.iter().filter(|e| e.kind() == EventKind::TASK_COMPLETED && e.node() == Some(uuid)).collect();
    assert_eq!(done.len(), 1, "one task_completed");
    assert_eq!(done[0].actor().map(Handle::to_raw), b["agent_node"].as_u64(), "completed by B");
    let payload = String::from_utf8_lossy(done[0].payload());
    assert!(payload.contains("\"epoch\":2") && payload.contains("done by B"), "{payload}");
}

/// A diamond (schema → backend, frontend → tests) and a chain of ten, with one edge from
/// the chain's end to `tests` added by another process (which also sees every
/// cycle-closing edge refused). Three workers finish everything; completions follow a
/// topological order in the ring and by clock, and no task was claimed before all its
/// blockers' `task_completed` events.
#[test]
fn dependencies_gate_claims_across_processes_and_completions_are_topological() {
    let g = SegmentGuard::new("coord-deps");
    let seg = Daemon::create(g.name(), &caps(), 0o600).unwrap();
    let w0 = lay_out(&seg, 0);
    let t = |name: &str| seg.add(w0.project, &NewNode::new(NodeKind::Task, name).status(Status::Ready)).unwrap();
    let (schema, backend, frontend, tests) = (t("schema"), t("backend"), t("frontend"), t("tests"));
    seg.add_blocker(backend, schema).unwrap();
    seg.add_blocker(frontend, schema).unwrap();
    seg.add_blocker(tests, backend).unwrap();
    seg.add_blocker(tests, frontend).unwrap();
    let chain: Vec<Handle> = (0..10).map(|i| t(&format!("c{i}"))).collect();
    for p in chain.windows(2) {
        seg.add_blocker(p[1], p[0]).unwrap();
    }
    let mut tasks = vec![schema, backend, frontend, tests];
    tasks.extend(&chain);
    let w = Work { tasks, ..w0 };

    let r = g
        .spawn_role("cycles", &[("WN_NODES", handles_to_env(&[schema, backend, tests, chain[0], chain[9]]))])
        .expect_report(REPORT_TIMEOUT);
    assert_eq!(r["legal"], "None", "{r}");
    let cycle = format!("{:?}", Some(TaskError::Cycle));
    for a in r["attempts"].as_array().unwrap() {
        assert_eq!(a.as_str().unwrap(), cycle, "{r}");
    }
    assert_eq!(seg.read(schema).unwrap().blocked_by().count(), 0, "a refused edge leaves nothing");
    assert_eq!(seg.read(chain[0]).unwrap().blocked_by().count(), 0, "a refused edge leaves nothing");
    assert_eq!(seg.read(tests).unwrap().blocked_by().count(), 3);
    for h in &w.tasks[1..] {
        if *h != chain[0] {
            assert_eq!(seg.read(*h).unwrap().status(), Some(Status::Blocked));
        }
    }

    let mut procs: Vec<Proc> =
        (0..3).map(|i| spawn_worker(&g, &w, &format!("dep-{i}"), LONG_LEASE_MS, 0, false)).collect();
    wait_joined(&procs);
    open_gate(&seg, w.gate);
    let reports = reports(&mut procs);
    let claims = claims_of(&reports);
    assert_eq!(claims.len(), w.tasks.len(), "one claim per task");
    let ok = check_exactly_once(&seg, &w.tasks, &claims, &[]);

    let events = ring_events(&seg);
    let completed = seqs_by_node(&events, EventKind::TASK_COMPLETED);
    let claimed = seqs_by_node(&events, EventKind::TASK_CLAIMED);
    let readied = seqs_by_node(&events, EventKind::TASK_READY);
    let mut edges = 0;
    for h in &w.tasks {
        let n = seg.read(*h).unwrap();
        let me = n.uuid();
        let my_claims = &claimed[&me];
        assert_eq!(my_claims.len(), 1, "{} claimed once", n.name());
        for b in n.blocked_by() {
            edges += 1;
            let bn = seg.read(b).unwrap();
            let b_done = completed[&bn.uuid()][0];
            assert!(
                b_done < my_claims[0],
                "{} was claimed (seq {}) before its blocker {} completed (seq {b_done})",
                n.name(),
                my_claims[0],
                bn.name()
            );
            assert!(b_done < completed[&me][0], "{} completed before its blocker {}", n.name(), bn.name());
            let ready = readied.get(&me).and_then(|r| r.iter().copied().filter(|s| *s < my_claims[0]).max());
            let ready = ready.unwrap_or_else(|| panic!("no task_ready for {} before its claim", n.name()));
            assert!(b_done < ready, "{} made ready before its blocker {} completed", n.name(), bn.name());
            assert!(ok[&bn.uuid()].hlc < ok[&me].hlc, "clock order of {} after {}", n.name(), bn.name());
        }
    }
    assert_eq!(edges, 4 + 9 + 1);
}
