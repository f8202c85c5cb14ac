//! The ready index (`shmlib/src/ready.rs`) loses no ready task when a process is killed
//! while it moves one between priority buckets, statuses or levels of the bitmap: the
//! worst left behind is a stale bit, which `claim_next` validates and clears.
//!
//! Each child is this test binary in a role: it attaches, starts one change with
//! `WORKNODE_FAILPOINT` armed, stops at that fail-point (announcing it on stderr) and is
//! SIGKILLed there, holding the task's lock. The parent plays the daemon (it made the
//! segment): it repairs the dead holders' locks, settles blocked tasks, and then claims
//! with `claim_next` until nothing is ready. Every task whose record is claimable must be
//! claimed exactly once, best priority first, and nothing else.

use nix::sys::signal::Signal;
use serde_json::Value;
use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;
use worknode::failpoint::FAILPOINT_ENV;
use worknode::{
    Access, AgentId, Capacities, Claim, Daemon, Handle, NewNode, NodeKind, Segment, Status, TaskError, TaskFilter,
};
use worknode_tests::{child_main, env_str, handles_from_env, handles_to_env, Proc, SegmentGuard, Stream};

/// Bound of every wait for a child (a failing test, never a slow pass).
const STEP: Duration = Duration::from_secs(60);
const NODE_ENV: &str = "WN_NODE";
const CLAIM_ENV: &str = "WN_CLAIM";
const AGENT_ENV: &str = "WN_AGENT";
const LEASE: Duration = Duration::from_secs(600);

#[test]
fn child_entry() {
    child_main(|role| {
        let seg = Segment::attach(&env_str(worknode_tests::SEGMENT_ENV), Access::ReadWrite).expect("attach");
        let fp = env_str(FAILPOINT_ENV);
        let got: Value = match role {
            "reprioritise" => {
                let node = handles_from_env(NODE_ENV)[0];
                format!(
                    "{:?}",
                    seg.update(node, |n| {
                        n.set_priority(9);
                        Ok(())
                    })
                    .err()
                )
                .into()
            }
            "claim" => {
                let node = handles_from_env(NODE_ENV)[0];
                let me: AgentId = serde_json::from_str(&env_str(AGENT_ENV)).expect("agent");
                format!("{:?}", seg.claim(node, me, LEASE).err()).into()
            }
            "complete" => {
                let c: Claim = serde_json::from_str(&env_str(CLAIM_ENV)).expect("claim");
                format!("{:?}", seg.complete(&c, "").err()).into()
            }
            "release" => {
                let c: Claim = serde_json::from_str(&env_str(CLAIM_ENV)).expect("claim");
                format!("{:?}", seg.release(&c).err()).into()
            }
            other => panic!("unknown role {other}"),
        };
        panic!("{role} returned {got} instead of stopping at fail-point {fp}: is feature `failpoints` on?")
    })
}

/// Starts `role` with `env` and returns once it stopped at `failpoint`.
fn stop_at(g: &SegmentGuard, role: &str, env: &[(&str, String)], failpoint: &str) -> Proc {
    let mut all = vec![(FAILPOINT_ENV, failpoint.to_string())];
    all.extend(env.iter().cloned());
    let p = g.spawn_role(role, &all);
    let want = format!("failpoint {failpoint} reached");
    p.wait_for_line(Stream::Stderr, STEP, |l| l.contains(&want));
    p
}

fn kill(mut p: Proc) {
    p.signal(Signal::SIGKILL);
    let status = p.wait_exit(STEP);
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32), "{}", p.transcript());
}

/// Claims with `claim_next` until nothing is ready; returns the tasks in claim order.
fn drain(d: &Daemon) -> Vec<Handle> {
    let me = d.join("drain", "worker").unwrap();
    let mut order = Vec::new();
    for _ in 0..1000 {
        match d.claim_next(&TaskFilter::default(), me, LEASE) {
            Ok(c) => {
                order.push(c.task);
                d.complete(&c, "").unwrap();
            }
            Err(TaskError::NothingReady) => return order,
            Err(e) => panic!("claim_next: {e:?}"),
        }
    }
    panic!("claim_next never ran out")
}

#[test]
fn a_process_killed_mid_move_loses_no_ready_task() {
    let g = SegmentGuard::new("ready-index-kill");
    let caps = Capacities { nodes: 64, events: 1024, agents: 8, blob_chunks: 1, sets: 1, ..Capacities::default() };
    let d = Daemon::create(g.name(), &caps, 0o600).unwrap();
    let task = |name: &str, prio: u8| {
        d.add(d.root(), &NewNode::new(NodeKind::Task, name).status(Status::Ready).priority(prio)).unwrap()
    };
    let env = |h: Handle| vec![(NODE_ENV, handles_to_env(&[h]))];
    let claim_env = |c: &Claim| vec![(CLAIM_ENV, serde_json::to_string(c).unwrap())];
    let holder = d.join("holder", "worker").unwrap();

    // Moved to priority 9, killed before the record is published (its new bucket is
    // set: a stale bit there), after it (its old bucket's bit is stale), and inside the
    // bitmap itself, between its level-0 bit and the second pass over the levels above.
    let before_publish = task("before-publish", 1);
    let after_publish = task("after-publish", 1);
    let mid_set = task("mid-set", 1);
    kill(stop_at(&g, "reprioritise", &env(before_publish), "pool.indexed"));
    kill(stop_at(&g, "reprioritise", &env(after_publish), "pool.published"));
    kill(stop_at(&g, "reprioritise", &env(mid_set), "ready.set_level0"));
    // A claim killed before its record is published: the task stays ready.
    let unclaimed = task("unclaimed", 5);
    let mut claim_env_of = env(unclaimed);
    claim_env_of.push((AGENT_ENV, serde_json::to_string(&d.join("victim", "worker").unwrap()).unwrap()));
    kill(stop_at(&g, "claim", &claim_env_of, "pool.indexed"));
    // A completion killed after its record is published: a stale bit, never claimed.
    let done = task("done", 7);
    let c = d.claim(done, holder, LEASE).unwrap();
    kill(stop_at(&g, "complete", &claim_env(&c), "pool.published"));
    // A release killed after its record is published: ready again, in its bucket.
    let released = task("released", 3);
    let c = d.claim(released, holder, LEASE).unwrap();
    kill(stop_at(&g, "release", &claim_env(&c), "pool.published"));
    // A completion of a blocker killed before its dependent's wake-up: the daemon's
    // settle makes the dependent ready, and the index has it.
    let blocker = task("blocker", 2);
    let dependent = task("dependent", 2);
    d.add_blocker(dependent, blocker).unwrap();
    let c = d.claim(blocker, holder, LEASE).unwrap();
    kill(stop_at(&g, "complete", &claim_env(&c), "pool.published"));
    let untouched = task("untouched", 0);

    // The daemon's housekeeping: the dead writers' locks are taken over.
    assert!(d.repair_dead_holders().unwrap() >= 1);
    d.settle_blocked();

    let mut listed = Vec::new();
    d.ready(&TaskFilter::default(), 100, &mut listed).unwrap();
    let claimable: BTreeSet<Handle> = listed.iter().map(|n| n.handle()).collect();
    let want: BTreeSet<Handle> =
        [before_publish, after_publish, mid_set, unclaimed, released, dependent, untouched].into_iter().collect();
    assert_eq!(claimable, want, "the records say these are ready");
    let order = drain(&d);
    assert_eq!(order.iter().copied().collect::<BTreeSet<_>>(), want, "claim_next found every ready task: {order:?}");
    assert_eq!(order.len(), want.len(), "each once");
    let prio: Vec<u8> = order.iter().map(|h| d.read(*h).unwrap().priority()).collect();
    assert!(prio.windows(2).all(|w| w[0] >= w[1]), "best priority first: {prio:?}");
    for h in [done, blocker] {
        assert_eq!(d.read(h).unwrap().status(), Some(Status::Complete));
    }
    let damage = d.inspect().damage();
    assert!(damage.is_empty(), "{damage:?}");
}
