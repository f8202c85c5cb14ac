//! In-process tests of the coordination semantics: agents, claims, leases, fencing,
//! dependencies and `claim_next`. (Cross-process behaviour is tested in `tests/`.)
#![cfg(not(loom))]

use std::time::Duration;
use worknode::{Capacities, Claim, Daemon, NewNode, NodeKind, Segment, Status, TaskError, TaskFilter};

/// The test's private segment; it made it, so it holds the daemon's handle (for the
/// daemon's sweeps: `reap_expired_claims`, `settle_blocked`).
struct Seg(Daemon);
impl Drop for Seg {
    fn drop(&mut self) {
        let _ = Segment::unlink(self.0.name());
    }
}
impl std::ops::Deref for Seg {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.0
    }
}

fn segment(tag: &str) -> Seg {
    let name = format!("wn-coord-{}-{tag}", std::process::id());
    let _ = Segment::unlink(&name);
    let caps = Capacities { nodes: 2048, events: 8192, agents: 16, blob_chunks: 4, sets: 4, ..Capacities::default() };
    Seg(Daemon::create(&name, &caps, 0o600).unwrap())
}

fn task(seg: &Segment, name: &str, prio: u8) -> worknode::Handle {
    seg.add(seg.root(), &NewNode::new(NodeKind::Task, name).status(Status::Ready).priority(prio)).unwrap()
}

const LEASE: Duration = Duration::from_secs(60);

#[test]
fn exactly_one_of_many_racing_claimants_wins() {
    let seg = segment("race");
    let t = task(&seg, "t", 0);
    let agents: Vec<_> = (0..8).map(|i| seg.join(&format!("a{i}"), "worker").unwrap()).collect();
    let wins: Vec<Result<Claim, TaskError>> = std::thread::scope(|s| {
        agents
            .iter()
            .map(|a| s.spawn(|| seg.claim(t, *a, LEASE)))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(wins.iter().filter(|r| r.is_ok()).count(), 1);
    for r in wins.iter().filter(|r| r.is_err()) {
        assert!(matches!(r, Err(TaskError::AlreadyClaimed { .. })), "{r:?}");
    }
    let n = seg.read(t).unwrap();
    assert_eq!(n.status(), Some(Status::Claimed));
    assert_eq!(n.claim_epoch(), 1);
}

#[test]
fn a_lapsed_claimant_is_fenced_out_after_a_new_claim() {
    let seg = segment("fence");
    let t = task(&seg, "t", 0);
    let slow = seg.join("slow", "w").unwrap();
    let fast = seg.join("fast", "w").unwrap();
    let old = seg.claim(t, slow, Duration::from_millis(1)).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(seg.read(t).unwrap().claimed_by(), None, "an expired claim is not shown as held");
    let new = seg.claim(t, fast, LEASE).unwrap();
    assert_eq!(new.epoch, old.epoch + 1);
    assert_eq!(seg.complete(&old, "late").unwrap_err(), TaskError::StaleEpoch { presented: 1, current: 2 });
    assert!(matches!(seg.progress(&old, 50), Err(TaskError::StaleEpoch { .. })));
    seg.start(&new).unwrap();
    seg.complete(&new, "done").unwrap();
    assert_eq!(seg.read(t).unwrap().status(), Some(Status::Complete));
}

#[test]
fn expired_leases_are_reaped_back_to_ready() {
    let seg = segment("reap");
    let t = task(&seg, "t", 0);
    let a = seg.join("a", "w").unwrap();
    let c = seg.claim(t, a, Duration::from_millis(1)).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(seg.reap_expired_claims(), 1);
    assert_eq!(seg.read(t).unwrap().status(), Some(Status::Ready));
    assert!(matches!(seg.start(&c), Err(TaskError::NotClaimant | TaskError::LeaseExpired { .. })));
}

#[test]
fn dependencies_gate_claims_and_completing_the_last_blocker_readies_dependents() {
    let seg = segment("deps");
    let a = seg.join("a", "w").unwrap();
    // Diamond: schema -> (backend, frontend) -> tests
    let schema = task(&seg, "schema", 0);
    let backend = task(&seg, "backend", 0);
    let frontend = task(&seg, "frontend", 0);
    let tests = task(&seg, "tests", 0);
    seg.add_blocker(backend, schema).unwrap();
    seg.add_blocker(frontend, schema).unwrap();
    seg.add_blocker(tests, backend).unwrap();
    seg.add_blocker(tests, frontend).unwrap();
    assert_eq!(seg.add_blocker(schema, tests).unwrap_err(), TaskError::Cycle);
    assert_eq!(seg.read(tests).unwrap().status(), Some(Status::Blocked));
    assert!(matches!(seg.claim(tests, a, LEASE), Err(TaskError::Blocked { .. })));
    let mut ready = Vec::new();
    seg.ready(&TaskFilter::default(), 10, &mut ready).unwrap();
    assert_eq!(ready.iter().map(|n| n.handle()).collect::<Vec<_>>(), vec![schema]);

    let order: Vec<_> = std::iter::from_fn(|| {
        let c = seg.claim_next(&TaskFilter::default(), a, LEASE).ok()?;
        seg.complete(&c, "").unwrap();
        Some(c.task)
    })
    .collect();
    assert_eq!(order.len(), 4);
    assert_eq!(order[0], schema);
    assert_eq!(order[3], tests);
}

#[test]
fn claim_next_takes_priority_then_age_and_honours_filters() {
    let seg = segment("next");
    let a = seg.join("a", "w").unwrap();
    let b = seg.join("b", "w").unwrap();
    let low = task(&seg, "low", 1);
    let high_old = task(&seg, "high-old", 9);
    let high_new = task(&seg, "high-new", 9);
    let folder = seg.add(seg.root(), &NewNode::new(NodeKind::Folder, "f")).unwrap();
    let inside = seg.add(folder, &NewNode::new(NodeKind::Task, "inside").status(Status::Ready)).unwrap();
    seg.assign(low, b).unwrap();
    let under = TaskFilter { under: Some(folder), ..TaskFilter::default() };
    assert_eq!(seg.claim_next(&under, a, LEASE).unwrap().task, inside);
    let mine = TaskFilter { assignee: Some(b), ..TaskFilter::default() };
    assert_eq!(seg.claim_next(&mine, b, LEASE).unwrap().task, low);
    assert_eq!(seg.claim_next(&TaskFilter::default(), a, LEASE).unwrap().task, high_old);
    assert_eq!(seg.claim_next(&TaskFilter::default(), a, LEASE).unwrap().task, high_new);
    assert_eq!(seg.claim_next(&TaskFilter::default(), a, LEASE).unwrap_err(), TaskError::NothingReady);
}

#[test]
fn leaving_releases_claims_and_identity_persists_by_name() {
    let seg = segment("agents");
    let t = task(&seg, "t", 0);
    let a = seg.join("coder", "backend").unwrap();
    assert_eq!(seg.join("coder", "backend").unwrap(), a, "same name, same identity");
    seg.claim(t, a, LEASE).unwrap();
    let mut all = Vec::new();
    seg.agents(&mut all);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].name, "coder");
    assert_eq!(all[0].role, "backend");
    seg.leave(a).unwrap();
    assert_eq!(seg.read(t).unwrap().status(), Some(Status::Ready));
    assert!(seg.agent(a).is_err());
    assert!(seg.find_agent("coder").is_none());
}

#[test]
fn plain_updates_cannot_bypass_the_state_machine() {
    let seg = segment("sm");
    let t = task(&seg, "t", 0);
    let e = seg.update(t, |n| n.set_status(Status::Complete)).unwrap_err();
    assert_eq!(e, worknode::PoolError::IllegalTransition { from: Status::Ready, to: Status::Complete });
    seg.update(t, |n| n.set_status(Status::Cancelled)).unwrap();
}

#[test]
fn queries_are_bounded_and_rollups_add_up() {
    let seg = segment("query");
    let a = seg.join("a", "w").unwrap();
    let proj = seg.add(seg.root(), &NewNode::new(NodeKind::Project, "web")).unwrap();
    let mut tasks = Vec::new();
    for i in 0..10u8 {
        let t = seg
            .add(proj, &NewNode::new(NodeKind::Task, &format!("t{i}")).status(Status::Ready).value(10.0 * i as f64))
            .unwrap();
        tasks.push(t);
    }
    seg.add(seg.root(), &NewNode::new(NodeKind::Task, "outside").status(Status::Ready)).unwrap();
    for t in &tasks[..4] {
        let c = seg.claim(*t, a, LEASE).unwrap();
        seg.complete(&c, "").unwrap();
    }
    seg.update(tasks[9], |n| n.set_status(Status::Cancelled)).unwrap();

    let mut out = Vec::new();
    let q = worknode::Query {
        under: Some(proj),
        kind: Some(NodeKind::Task),
        status: Some(Status::Complete),
        ..Default::default()
    };
    let stats = seg.query(&q, &mut out).unwrap();
    assert_eq!(out.len(), 4);
    assert!(!stats.limited && !stats.budget_exhausted);

    let q = worknode::Query { kind: Some(NodeKind::Task), limit: 3, ..Default::default() };
    assert!(seg.query(&q, &mut out).unwrap().limited);
    assert_eq!(out.len(), 3);
    let q = worknode::Query { under: Some(proj), visit_budget: 5, ..Default::default() };
    assert!(seg.query(&q, &mut out).unwrap().budget_exhausted);
    let q = worknode::Query { name_prefix: Some("out"), ..Default::default() };
    seg.query(&q, &mut out).unwrap();
    assert_eq!(out.len(), 1);

    let r = seg.rollup(proj, None).unwrap();
    assert_eq!(r.total, 10);
    assert_eq!(r.count(Status::Complete), 4);
    assert_eq!(r.count(Status::Cancelled), 1);
    assert_eq!(r.count(Status::Ready), 5);
    assert_eq!(r.value_by_status[Status::Complete.code() as usize], 0.0 + 10.0 + 20.0 + 30.0);
    assert_eq!(r.value_total, 450.0);
    assert!((r.percent_complete - 100.0 * 4.0 / 9.0).abs() < 1e-9);
    assert!((r.mean_progress - 40.0).abs() < 1e-9);
}

#[test]
fn an_edge_added_while_its_blocker_completes_never_leaves_the_task_blocked() {
    let seg = segment("edge-race");
    let a = seg.join("a", "w").unwrap();
    for round in 0..300 {
        let blocker = task(&seg, &format!("b{round}"), 0);
        let t = task(&seg, &format!("t{round}"), 0);
        let c = seg.claim(blocker, a, LEASE).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| seg.complete(&c, "").unwrap());
            s.spawn(|| seg.add_blocker(t, blocker).unwrap());
        });
        assert_eq!(seg.read(t).unwrap().status(), Some(Status::Ready), "round {round}: blocked for ever");
    }
}

#[test]
fn an_agent_that_reuses_a_slot_never_inherits_the_previous_agents_claim() {
    let seg = segment("slot-reuse");
    let t = task(&seg, "t", 0);
    let alice = seg.join("alice", "w").unwrap();
    let stale = seg.claim(t, alice, LEASE).unwrap();
    // Simulate a release that never happened: free Alice's slot behind the claim's back
    // by leaving, then restore the claim fields as they were.
    seg.leave(alice).unwrap();
    let bob = seg.join("bob", "w").unwrap();
    assert_eq!(bob.index, alice.index, "bob reuses alice's slot");
    assert_ne!(bob.generation, alice.generation);
    let as_bob = Claim { agent: bob, ..stale };
    assert!(matches!(seg.complete(&as_bob, ""), Err(TaskError::NotClaimant | TaskError::IllegalTransition { .. })));
    let bob_claim = seg.claim(t, bob, LEASE).unwrap();
    assert_eq!(bob_claim.epoch, stale.epoch + 1);
    assert!(matches!(seg.complete(&stale, ""), Err(TaskError::StaleEpoch { .. })));
    seg.complete(&bob_claim, "").unwrap();
}

#[test]
fn a_task_whose_last_blocker_is_deleted_is_settled_ready() {
    let seg = segment("settle");
    let blocker = task(&seg, "blocker", 0);
    let t = task(&seg, "t", 0);
    seg.add_blocker(t, blocker).unwrap();
    assert_eq!(seg.read(t).unwrap().status(), Some(Status::Blocked));
    seg.delete(blocker, worknode::DeleteMode::LeafOnly).unwrap();
    assert_eq!(seg.settle_blocked(), 1);
    assert_eq!(seg.read(t).unwrap().status(), Some(Status::Ready));
    assert_eq!(seg.settle_blocked(), 0);
}
