//! File reservations across real processes (issue 13, part 6): two processes race
//! overlapping reservations for 50 rounds and exactly one wins each round (the
//! insert-then-scan protocol of `worknode::reserve`, with no lock); a SIGKILLed session
//! holder's reservations are released by the daemon (session EOF) and swept, and another
//! agent can then reserve the same paths.

use serde_json::{json, Value};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};
use worknode::{Access, Handle, NewNode, NodeKind, ReserveError, ReserveOptions, Segment};
use worknode_tests::{
    child_main, env_str, env_u64, handles_from_env, handles_to_env, say, Proc, SegmentGuard, Stream, READY_TIMEOUT,
    SEGMENT_ENV,
};

/// Rounds of the race.
const ROUNDS: u64 = 50;
/// Bound on a child's whole run, and on the parent's waits for a child.
const CHILD_DEADLINE: Duration = Duration::from_secs(60);

const DAEMON_ARGS: [&str; 10] =
    ["--nodes", "1024", "--events", "16384", "--agents", "16", "--blob-chunks", "1", "--sets", "1"];

fn attach() -> Segment {
    Segment::attach(&env_str(SEGMENT_ENV), Access::ReadWrite).expect("attach read-write")
}

/// Waits (bounded, 20 s) until the daemon has released and swept every reservation.
fn no_reservations_within(seg: &Segment, what: impl Fn() -> String) {
    let mut held = Vec::new();
    worknode_tests::wait_until(
        Duration::from_secs(20),
        || {
            seg.reservations(&mut held);
            held.is_empty()
        },
        what,
    );
}

#[test]
fn child_entry() {
    child_main(|role| match role {
        "racer" => racer(),
        "holder" => holder(),
        "pending" => pending(),
        other => panic!("unknown role {other}"),
    })
}

/// For each round: waits (spinning, bounded) until the gate's value reaches the round,
/// then reserves its glob for that round; reports whether it won each round.
fn racer() -> Value {
    let seg = attach();
    let name = env_str("WN_AGENT");
    let gate = handles_from_env("WN_GATE")[0];
    let me = seg.join(&name, "racer").expect("join");
    let deadline = Instant::now() + CHILD_DEADLINE;
    let mut wins = Vec::new();
    for round in 1..=ROUNDS {
        say(&format!("ready {round}"));
        while seg.read(gate).expect("read gate").value() < round as f64 {
            assert!(Instant::now() < deadline, "{name}: round {round} never opened");
            std::hint::spin_loop();
        }
        // Overlapping, never equal: `rN/**` against `rN/src/*.rs`.
        let glob = if env_u64("WN_WIDE") == 1 { format!("r{round}/**") } else { format!("r{round}/src/*.rs") };
        match seg.reserve(me, &[&glob], &ReserveOptions::default()) {
            Ok(_) => wins.push(true),
            Err(ReserveError::Conflict { .. }) => wins.push(false),
            Err(e) => panic!("{name}: round {round}: {e:?} ({e})"),
        }
        say(&format!("done {round}"));
    }
    json!({ "wins": wins })
}

/// Opens a session, reserves, announces it, and blocks until killed.
fn holder() -> Value {
    let seg = attach();
    let session = seg.open_session("holder", "coder").expect("open_session");
    assert!(session.watched_by_daemon(), "holder: the daemon does not watch the session");
    let lease = ReserveOptions { lease: Duration::from_secs(600), ..ReserveOptions::default() };
    seg.reserve(session.id(), &["held/**"], &lease).expect("reserve held/**");
    seg.reserve(session.id(), &["also/*.rs", "more/x"], &lease).expect("reserve also/*.rs");
    say("reserved");
    std::thread::sleep(Duration::from_secs(60));
    json!({ "survived": true })
}

/// Opens a session and reserves; run with the fail-point `reserve.before_confirm`, it
/// stops (and is killed) after inserting its reservation, before confirming it.
fn pending() -> Value {
    let seg = attach();
    let session = seg.open_session("pending", "coder").expect("open_session");
    assert!(session.watched_by_daemon(), "pending: the daemon does not watch the session");
    let lease = ReserveOptions { lease: Duration::from_secs(600), ..ReserveOptions::default() };
    seg.reserve(session.id(), &["p/**"], &lease).expect("reserve p/**");
    json!({ "failpoint_missed": true })
}

fn session_addr(name: &str) -> std::os::unix::net::SocketAddr {
    let seg = Segment::attach(name, Access::ReadOnly).expect("attach to read the boot id");
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

fn start_daemon(g: &SegmentGuard) -> Proc {
    let daemon = g.spawn_daemon(&DAEMON_ARGS);
    daemon.wait_for_line(Stream::Stdout, READY_TIMEOUT, |l| l.contains("ready"));
    wait_session_listener(g, &daemon);
    daemon
}

/// Two processes race overlapping reservations, 50 rounds, released all at once by a
/// gate both spin on: exactly one wins every round, and the segment holds exactly that
/// one reservation for the round.
#[test]
fn two_processes_racing_overlapping_reservations_exactly_one_wins_each_round() {
    let g = SegmentGuard::new("reserve-race");
    let _daemon = start_daemon(&g);
    let seg = Segment::attach(g.name(), Access::ReadWrite).unwrap();
    let gate: Handle = seg.add(seg.root(), &NewNode::new(NodeKind::Folder, "gate")).unwrap();
    let env = |agent: &str, wide: u64| {
        vec![("WN_AGENT", agent.to_string()), ("WN_GATE", handles_to_env(&[gate])), ("WN_WIDE", wide.to_string())]
    };
    let mut a = g.spawn_role("racer", &env("wide", 1));
    let mut b = g.spawn_role("racer", &env("narrow", 0));
    for round in 1..=ROUNDS {
        for p in [&a, &b] {
            p.wait_for_say(&format!("ready {round}"), CHILD_DEADLINE);
        }
        seg.update(gate, |n| n.set_value(round as f64)).unwrap();
    }
    let ra = a.expect_report(CHILD_DEADLINE);
    let rb = b.expect_report(CHILD_DEADLINE);
    let (wa, wb) = (ra["wins"].as_array().unwrap(), rb["wins"].as_array().unwrap());
    assert_eq!((wa.len(), wb.len()), (ROUNDS as usize, ROUNDS as usize));
    let mut held = Vec::new();
    seg.reservations(&mut held);
    for round in 1..=ROUNDS as usize {
        let (x, y) = (wa[round - 1].as_bool().unwrap(), wb[round - 1].as_bool().unwrap());
        assert!(x ^ y, "round {round}: wide won {x}, narrow won {y}: exactly one must win");
        let prefix = format!("r{round}/");
        let live: Vec<_> = held.iter().filter(|r| r.live && r.globs.iter().any(|g| g.starts_with(&prefix))).collect();
        assert_eq!(live.len(), 1, "round {round}: one reservation holds: {live:?}");
        assert_eq!(live[0].agent_name, if x { "wide" } else { "narrow" });
    }
    let wide_wins = wa.iter().filter(|w| w.as_bool() == Some(true)).count();
    eprintln!("reservation race: wide won {wide_wins} of {ROUNDS} rounds, narrow {}", ROUNDS as usize - wide_wins);
}

/// A session holder's reservations outlive nothing: SIGKILLed, its session is reaped by
/// the daemon, its claims (the reservations) released and the dead reservations swept;
/// another agent then reserves the same paths.
#[test]
fn a_sigkilled_holders_reservations_are_released_by_the_daemon() {
    let g = SegmentGuard::new("reserve-kill");
    let daemon = start_daemon(&g);
    let seg = Segment::attach(g.name(), Access::ReadWrite).unwrap();
    let mut holder = g.spawn_role("holder", &[]);
    holder.wait_for_line(Stream::Stdout, CHILD_DEADLINE, |l| l.contains("WN-SAY reserved"));
    let other = seg.join("other", "coder").unwrap();
    let opts = ReserveOptions::default();
    assert!(matches!(seg.reserve(other, &["held/a.rs"], &opts), Err(ReserveError::Conflict { .. })));
    assert!(matches!(seg.check_paths(Some(other), &["also/x.rs"]), Err(ReserveError::Held { .. })));

    holder.signal(nix::sys::signal::Signal::SIGKILL);
    let status = holder.wait_exit(Duration::from_secs(10));
    assert_eq!(status.signal(), Some(9), "the holder died by SIGKILL\n{}", holder.transcript());

    // Only the daemon can release them now (the leases have ten minutes left).
    no_reservations_within(&seg, || format!("the killed holder's reservations stayed\n{}", daemon.transcript()));
    assert!(seg.find_agent("holder").is_none(), "the holder was reaped");
    seg.check_paths(Some(other), &["held/a.rs", "also/x.rs", "more/x"]).unwrap();
    seg.reserve(other, &["held/a.rs", "also/*.rs"], &opts).unwrap();
}

/// A reserver killed between inserting and confirming its reservation (fail-point
/// `reserve.before_confirm`, then SIGKILL): while it stands, a later overlapping
/// reservation loses to it (an earlier pending one); once the daemon reaps its session the
/// pending reservation is dead and swept, and the same reservation goes through.
#[test]
fn a_reserver_killed_while_pending_blocks_no_one_after_the_daemon_reaps_it() {
    let g = SegmentGuard::new("reserve-pending");
    let _daemon = start_daemon(&g);
    let seg = Segment::attach(g.name(), Access::ReadWrite).unwrap();
    let mut child = g.spawn_role("pending", &[(worknode::failpoint::FAILPOINT_ENV, "reserve.before_confirm".into())]);
    child.wait_for_line(Stream::Stderr, CHILD_DEADLINE, |l| l.contains("failpoint reserve.before_confirm reached"));
    let me = seg.join("late", "coder").unwrap();
    let e = seg.reserve(me, &["p/src/a.rs"], &ReserveOptions::default()).unwrap_err();
    assert!(matches!(&e, ReserveError::Conflict { holder, .. } if holder == "pending"), "{e:?}");

    child.signal(nix::sys::signal::Signal::SIGKILL);
    let status = child.wait_exit(Duration::from_secs(10));
    assert_eq!(status.signal(), Some(9), "the child died by SIGKILL\n{}", child.transcript());
    no_reservations_within(&seg, || "the killed reserver's pending reservation stayed".to_string());
    seg.reserve(me, &["p/src/a.rs"], &ReserveOptions::default()).unwrap();
}
