//! In-process tests of the coordination semantics: agents, claims, leases, fencing,
//! dependencies and `claim_next`. (Cross-process behaviour is tested in `tests/`.)
#![cfg(not(loom))]

use std::time::Duration;
use worknode::{
    Capacities, Claim, Daemon, EventKind, NewNode, NodeKind, Principal, Segment, Start, Status, TaskError, TaskFilter,
};

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
    seg.assign(low, &Principal::parse("b").unwrap()).unwrap();
    let under = TaskFilter { under: Some(folder), ..TaskFilter::default() };
    assert_eq!(seg.claim_next(&under, a, LEASE).unwrap().task, inside);
    let mine = TaskFilter { mine: true, ..TaskFilter::default() };
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

fn who(text: &str) -> Principal {
    Principal::parse(text).unwrap()
}

#[test]
fn an_assigned_task_is_claimed_only_by_its_assignees() {
    let seg = segment("assign");
    let t = task(&seg, "review", 0);
    // Assigned before either agent joined: the name is reserved, and shown.
    seg.assign(t, &who("tester")).unwrap();
    assert_eq!(seg.principal(who("tester").key()), Some(who("tester")));
    let writer = seg.join("writer", "author").unwrap();
    assert_eq!(seg.claim(t, writer, LEASE).unwrap_err(), TaskError::AssignedElsewhere { count: 1 });
    assert_eq!(seg.claim_next(&TaskFilter::default(), writer, LEASE).unwrap_err(), TaskError::NothingReady);
    assert_eq!(seg.read(t).unwrap().status(), Some(Status::Ready), "the refusal changed nothing");
    let tester = seg.join("tester", "qa").unwrap();
    assert_eq!(seg.claim_next(&TaskFilter { mine: true, ..TaskFilter::default() }, tester, LEASE).unwrap().task, t);
}

#[test]
fn a_role_assignment_admits_every_agent_of_the_role_and_open_to_all_admits_everyone() {
    let seg = segment("role");
    let t = task(&seg, "t", 0);
    let u = task(&seg, "u", 0);
    seg.assign(t, &who("@qa")).unwrap();
    seg.assign(u, &who("@qa")).unwrap();
    let dev = seg.join("dev", "backend").unwrap();
    let q1 = seg.join("q1", "qa").unwrap();
    assert_eq!(seg.claim(t, dev, LEASE).unwrap_err(), TaskError::AssignedElsewhere { count: 1 });
    seg.claim(t, q1, LEASE).unwrap();
    seg.set_open_to_all(u, true).unwrap();
    assert!(seg.read(u).unwrap().open_to_all());
    // Open to all: claimable by anyone, but not "mine" for a non-assignee.
    let mine = TaskFilter { mine: true, ..TaskFilter::default() };
    assert_eq!(seg.claim_next(&mine, dev, LEASE).unwrap_err(), TaskError::NothingReady);
    assert_eq!(seg.claim_next(&TaskFilter::default(), dev, LEASE).unwrap().task, u);
}

#[test]
fn an_assignment_holds_by_name_across_leave_and_slot_reuse() {
    let seg = segment("byname");
    let t = task(&seg, "t", 0);
    let first = seg.join("alice", "w").unwrap();
    seg.assign(t, &who("alice")).unwrap();
    seg.leave(first).unwrap();
    // Another agent takes the freed slot: it does not inherit alice's work.
    let bob = seg.join("bob", "w").unwrap();
    assert_eq!(bob.index, first.index, "the slot was reused");
    assert_eq!(seg.claim(t, bob, LEASE).unwrap_err(), TaskError::AssignedElsewhere { count: 1 });
    // Alice comes back (another slot): the work is still hers.
    let again = seg.join("alice", "w").unwrap();
    seg.claim(t, again, LEASE).unwrap();
    assert_eq!(seg.read(t).unwrap().assignees().collect::<Vec<_>>(), [who("alice").key()]);
}

#[test]
fn assigning_appends_task_assigned_naming_the_assignee() {
    let seg = segment("assigned-event");
    let t = task(&seg, "t", 0);
    let mut reader = seg.reader(Start::Now);
    seg.assign(t, &who("@qa")).unwrap();
    seg.unassign(t, &who("@qa")).unwrap();
    let mut seen = Vec::new();
    while let Ok(Some(e)) = reader.try_next() {
        seen.push((e.kind(), String::from_utf8_lossy(e.payload()).into_owned()));
    }
    assert!(seen.contains(&(EventKind::TASK_ASSIGNED, r#"{"assignee":"@qa"}"#.to_string())), "{seen:?}");
    assert!(seen.contains(&(EventKind::TASK_UNASSIGNED, r#"{"unassigned":"@qa"}"#.to_string())), "{seen:?}");
    assert_eq!(seg.read(t).unwrap().assignees().count(), 0);
}

#[test]
fn a_blocking_claim_is_woken_for_its_task_and_not_for_another_agents() {
    let seg = std::sync::Arc::new(segment("blocking"));
    let a = seg.join("a", "w").unwrap();
    let b = seg.join("b", "w").unwrap();
    let waiter = {
        let seg = seg.clone();
        std::thread::spawn(move || seg.claim_next_wait(&TaskFilter::default(), a, LEASE, Duration::from_secs(30)))
    };
    let parked = |seg: &Segment| {
        let mut v = Vec::new();
        seg.agents(&mut v);
        v.iter().find(|i| i.id == a).map_or(0, |i| i.claim_parked)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while parked(&seg) == 0 {
        assert!(std::time::Instant::now() < deadline, "the waiter never parked");
        std::thread::sleep(Duration::from_millis(5));
    }
    let wakes = |seg: &Segment| {
        let mut v = Vec::new();
        seg.agents(&mut v);
        v.iter().find(|i| i.id == a).map_or(0, |i| i.claim_wakes)
    };
    let before = wakes(&seg);
    // A task for b: a is not woken, and b takes it.
    let for_b = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "for-b").status(Status::Pending)).unwrap();
    seg.assign(for_b, &who("b")).unwrap();
    seg.set_status(for_b, Status::Ready).unwrap();
    assert_eq!(wakes(&seg), before, "a was woken for b's task");
    assert_eq!(seg.claim_next(&TaskFilter::default(), b, LEASE).unwrap().task, for_b);
    // A task anyone may take: a is woken and holds it.
    let open = task(&seg, "open", 0);
    let got = waiter.join().unwrap().unwrap();
    assert_eq!(got.task, open);
    assert_eq!(got.agent, a);
    assert!(wakes(&seg) > before);
}

#[test]
fn a_burst_of_ready_tasks_wakes_each_parked_agent_once() {
    let seg = std::sync::Arc::new(segment("burst"));
    let ids: Vec<_> = ["p", "q"].iter().map(|n| seg.join(n, "w").unwrap()).collect();
    let waiters: Vec<_> = ids
        .iter()
        .map(|&id| {
            let seg = seg.clone();
            std::thread::spawn(move || seg.claim_next_wait(&TaskFilter::default(), id, LEASE, Duration::from_secs(30)))
        })
        .collect();
    let info = |seg: &Segment, id| {
        let mut v = Vec::new();
        seg.agents(&mut v);
        v.into_iter().find(|i| i.id == id).unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ids.iter().any(|&id| info(&seg, id).claim_parked == 0) {
        assert!(std::time::Instant::now() < deadline, "the waiters never parked");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Two tasks back to back: the first wake takes p's place, so the second goes to q.
    let a = task(&seg, "a", 0);
    let b = task(&seg, "b", 0);
    let mut got: Vec<_> = waiters.into_iter().map(|w| w.join().unwrap().unwrap().task).collect();
    got.sort_by_key(|h| h.index);
    let mut want = vec![a, b];
    want.sort_by_key(|h| h.index);
    assert_eq!(got, want);
    for &id in &ids {
        assert_eq!(info(&seg, id).claim_wakes, 1, "each parked agent is woken exactly once");
        assert_eq!(info(&seg, id).claim_parked, 0);
    }
}

#[test]
fn a_parked_assignee_filter_is_not_woken_for_other_work() {
    let seg = std::sync::Arc::new(segment("assignee-filter"));
    let w = seg.join("w", "x").unwrap();
    let filter = TaskFilter { assignee: Some(who("@ops").key()), ..TaskFilter::default() };
    let waiter = {
        let seg = seg.clone();
        std::thread::spawn(move || seg.claim_next_wait(&filter, w, LEASE, Duration::from_secs(30)))
    };
    let wakes = |seg: &Segment| {
        let mut v = Vec::new();
        seg.agents(&mut v);
        v.into_iter().find(|i| i.id == w).unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while wakes(&seg).claim_parked == 0 {
        assert!(std::time::Instant::now() < deadline, "the waiter never parked");
        std::thread::sleep(Duration::from_millis(5));
    }
    task(&seg, "unassigned", 0);
    assert_eq!(wakes(&seg).claim_wakes, 0, "woken for a task its filter does not take");
    let ops = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "ops-work").status(Status::Pending)).unwrap();
    seg.assign(ops, &who("@ops")).unwrap();
    seg.set_open_to_all(ops, true).unwrap();
    seg.set_status(ops, Status::Ready).unwrap();
    assert_eq!(waiter.join().unwrap().unwrap().task, ops);
}

// The ready index (issue 16): `claim_next` finds candidates through per-priority bitmaps
// kept by every write; these check that each way a task becomes or stops being
// claimable reaches it.

#[test]
fn the_ready_index_follows_every_move_in_and_out_of_claimable() {
    let seg = segment("index-moves");
    let a = seg.join("a", "w").unwrap();
    let b = seg.join("b", "w").unwrap();
    let next = |who| seg.claim_next(&TaskFilter::default(), who, LEASE);
    // Pending, then made ready.
    let p = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "pending")).unwrap();
    assert_eq!(next(a).unwrap_err(), TaskError::NothingReady);
    seg.set_status(p, Status::Ready).unwrap();
    let c = next(a).unwrap();
    assert_eq!(c.task, p);
    // Released: ready again, in its bucket.
    seg.release(&c).unwrap();
    let c = next(a).unwrap();
    assert_eq!(c.task, p);
    seg.complete(&c, "").unwrap();
    assert_eq!(next(a).unwrap_err(), TaskError::NothingReady);
    // Reopened.
    seg.reopen(p).unwrap();
    let c = next(a).unwrap();
    assert_eq!(c.task, p);
    seg.complete(&c, "").unwrap();
    // A priority change moves a ready task to its new bucket.
    let low = task(&seg, "low", 1);
    let mid = task(&seg, "mid", 5);
    seg.update(low, |n| {
        n.set_priority(9);
        Ok(())
    })
    .unwrap();
    assert_eq!(next(a).unwrap().task, low);
    assert_eq!(next(a).unwrap().task, mid);
    // Deleted: gone from the index.
    let gone = task(&seg, "gone", 3);
    seg.delete(gone, worknode::DeleteMode::LeafOnly).unwrap();
    assert_eq!(next(a).unwrap_err(), TaskError::NothingReady);
    // A lapsed lease is claimable by `claim_next` at once, before any reaper runs.
    let lapsing = task(&seg, "lapsing", 4);
    let held = seg.claim(lapsing, a, Duration::from_millis(1)).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let taken = next(b).unwrap();
    assert_eq!((taken.task, taken.epoch), (lapsing, held.epoch + 1));
    // A held task (live lease) is skipped, not taken.
    assert_eq!(next(a).unwrap_err(), TaskError::NothingReady);
    // Unblocked by its blocker's completion.
    let blocker = task(&seg, "blocker", 2);
    let dependent = task(&seg, "dependent", 8);
    seg.add_blocker(dependent, blocker).unwrap();
    let c = next(a).unwrap();
    assert_eq!(c.task, blocker, "the dependent is blocked");
    seg.complete(&c, "").unwrap();
    assert_eq!(next(a).unwrap().task, dependent, "made ready by the completion's wake-up");
    // Custom work is found by kind, and a task filter passes it over.
    let custom = seg.add(seg.root(), &NewNode::new(NodeKind::Custom, "custom").status(Status::Ready)).unwrap();
    assert_eq!(next(a).unwrap_err(), TaskError::NothingReady);
    let kind = TaskFilter { kind: Some(NodeKind::Custom), ..TaskFilter::default() };
    assert_eq!(seg.claim_next(&kind, a, LEASE).unwrap().task, custom);
}

#[test]
fn a_filter_most_candidates_fail_falls_back_to_the_scan() {
    let seg = segment("index-fallback");
    let a = seg.join("a", "w").unwrap();
    // 100 better candidates outside the subtree, then the one inside it.
    for k in 0..100 {
        task(&seg, &format!("outside {k}"), 9);
    }
    let folder = seg.add(seg.root(), &NewNode::new(NodeKind::Folder, "f")).unwrap();
    let inside = seg.add(folder, &NewNode::new(NodeKind::Task, "inside").status(Status::Ready).priority(1)).unwrap();
    let under = TaskFilter { under: Some(folder), ..TaskFilter::default() };
    assert_eq!(seg.claim_next(&under, a, LEASE).unwrap().task, inside);
    assert_eq!(seg.claim_next(&under, a, LEASE).unwrap_err(), TaskError::NothingReady);
    // With the candidates in front of it held, the next ready task is still found.
    let held: Vec<Claim> = (0..70).map(|_| seg.claim_next(&TaskFilter::default(), a, LEASE).unwrap()).collect();
    let b = seg.join("b", "w").unwrap();
    let c = seg.claim_next(&TaskFilter::default(), b, LEASE).unwrap();
    assert!(held.iter().all(|h| h.task != c.task));
    let mut left = 0;
    while seg.claim_next(&TaskFilter::default(), b, LEASE).is_ok() {
        left += 1;
    }
    assert_eq!(left, 100 - 70 - 1, "every task claimed exactly once");
}
