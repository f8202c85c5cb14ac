//! The real `worknoded` binary: startup, one instance per segment, clean shutdown,
//! `--keep`, adoption after a crash, recovery of a half-initialised segment, refusal of
//! a foreign file and of bad flags.

use nix::sys::signal::Signal;
use serde_json::json;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;
use worknode::{Access, AttachError, Capacities, Daemon, Handle, NewNode, NodeKind, Segment, SegmentState};
use worknode_tests::{
    child_main, env_str, raw, say, Proc, SegmentGuard, Stream, CHILD_TIMEOUT, READY_TIMEOUT, SEGMENT_ENV,
};

/// The capacities every daemon in this file is started with.
const ARGS: [&str; 8] = ["--nodes", "256", "--events", "1024", "--agents", "8", "--blob-chunks", "8"];
/// How long a daemon gets to shut down after SIGTERM (its grace period is 250 ms).
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

fn caps() -> Capacities {
    Capacities { nodes: 256, events: 1024, agents: 8, blob_chunks: 8, ..Capacities::default() }
}

#[test]
fn child_entry() {
    child_main(|role| match role {
        "add_node" => {
            // A client process other than the test and the daemon: attach, add, report.
            let seg = Segment::attach(&env_str(SEGMENT_ENV), Access::ReadWrite).expect("attach from a client");
            let h = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "from-client").value(7.25)).expect("add");
            say("added");
            json!({ "uuid": seg.read(h).expect("read").uuid().to_string() })
        }
        other => panic!("unknown role {other}"),
    })
}

/// Starts the daemon with [`ARGS`] plus `extra` and waits for its ready line; returns
/// the process and the line.
fn start(g: &SegmentGuard, extra: &[&str]) -> (Proc, String) {
    let mut args: Vec<&str> = ARGS.to_vec();
    args.extend_from_slice(extra);
    start_with(g, &args)
}

/// Starts the daemon with exactly `args` (after `--segment`) and waits for its ready line.
fn start_with(g: &SegmentGuard, args: &[&str]) -> (Proc, String) {
    let d = g.spawn_daemon(args);
    let line = d.wait_for_line(Stream::Stdout, READY_TIMEOUT, |l| l.contains("ready"));
    (d, line)
}

fn stop(d: &mut Proc) -> std::process::ExitStatus {
    d.signal(Signal::SIGTERM);
    d.wait_exit(EXIT_TIMEOUT)
}

#[test]
fn daemon_serves_clients_allows_one_instance_and_removes_the_segment_on_sigterm() {
    let g = SegmentGuard::new("daemon-lifecycle");
    let (mut d, line) = start(&g, &[]);
    assert!(line.contains(" created and ready"), "first start must create: {line}");
    assert!(line.contains(&format!("pid={}", d.pid())), "{line}");
    assert!(g.shm_path().exists() && g.lock_path().exists());

    // The test process is a client: attach and add.
    let seg = Segment::attach(g.name(), Access::ReadWrite).expect("attach to the daemon's segment");
    assert_eq!(seg.capacities(), caps());
    let info = seg.inspect().info();
    assert_eq!(info.daemon_pid, d.pid());
    assert!(info.daemon_alive);
    let mut kids = Vec::new();
    seg.children(seg.root(), &mut kids).unwrap();
    let mine = seg.add(seg.root(), &NewNode::new(NodeKind::Project, "from-test")).expect("add");

    // So is another process; what it adds is visible here.
    let mut client = g.spawn_role("add_node", &[]);
    let report = client.expect_report(CHILD_TIMEOUT);
    let theirs = seg.lookup(report["uuid"].as_str().unwrap().parse().unwrap()).expect("client's node by uuid");
    let n = seg.read(theirs).unwrap();
    assert_eq!((n.name(), n.value()), ("from-client", 7.25));
    let mut after = Vec::new();
    seg.children(seg.root(), &mut after).unwrap();
    kids.extend([mine, theirs]);
    assert_eq!(after, kids, "both new nodes, in creation order, after what the daemon made");

    // A second daemon on the same segment refuses to start, with code 3.
    let mut second = g.spawn_daemon(&ARGS);
    let status = second.wait_exit(EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(3), "second daemon\n{}", second.transcript());
    assert!(
        second.output(Stream::Stderr).contains("another worknoded already runs this segment"),
        "{}",
        second.transcript()
    );
    assert!(d.try_wait_exit(Duration::ZERO).is_none(), "the first daemon must keep running");
    assert!(seg.read(mine).is_ok(), "the segment must be untouched by the refused daemon");

    // SIGTERM: exit 0, segment and lock file gone; our old mapping shows Closing.
    let status = stop(&mut d);
    assert_eq!(status.code(), Some(0), "{}", d.transcript());
    assert_eq!(d.output(Stream::Stdout).lines().count(), 1, "the daemon prints one line:\n{}", d.transcript());
    assert!(d.output(Stream::Stderr).contains("SIGTERM received"), "{}", d.transcript());
    assert!(!g.shm_path().exists(), "segment left behind after SIGTERM");
    assert!(!g.lock_path().exists(), "lock file left behind after SIGTERM");
    assert_eq!(seg.state(), SegmentState::Closing);
    assert!(matches!(Segment::attach(g.name(), Access::ReadOnly), Err(AttachError::NotFound { .. })));
}

#[test]
fn keep_leaves_the_segment_and_the_next_daemon_adopts_it() {
    let g = SegmentGuard::new("daemon-keep");
    let (mut d, _) = start(&g, &["--keep", "--grace-ms", "20"]);
    let seg = Segment::attach(g.name(), Access::ReadWrite).unwrap();
    let h = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "kept").description("survives --keep")).unwrap();
    let uuid = seg.read(h).unwrap().uuid();
    drop(seg);

    let status = stop(&mut d);
    assert_eq!(status.code(), Some(0), "{}", d.transcript());
    assert!(g.shm_path().exists(), "--keep must leave the segment");
    assert!(!g.lock_path().exists(), "the lock file is removed even with --keep");
    assert!(d.output(Stream::Stderr).contains("--keep given"), "{}", d.transcript());
    // A kept segment is Closing until a daemon adopts it: clients are told so.
    let e = Segment::attach(g.name(), Access::ReadOnly).err().expect("attach to a Closing segment must fail");
    assert_eq!(e, AttachError::Closing);
    assert_eq!(e.to_string(), "the daemon is shutting this segment down");
    // `wn` says what to do about it.
    let wn = std::process::Command::new(worknode_tests::wn_bin())
        .args(["--segment", g.name(), "--json", "ls"])
        .env_remove("WORKNODE_JSON")
        .output()
        .expect("run wn");
    assert_eq!(wn.status.code(), Some(1), "{wn:?}");
    let w: serde_json::Value = serde_json::from_slice(&wn.stderr).expect("one JSON error on stderr");
    assert_eq!(w["code"], "segment_closing", "{w}");
    assert!(w["hint"].as_str().unwrap().contains("restart the daemon"), "{w}");

    // Different capacity flags: the adopting daemon keeps the segment's, with a note.
    let (mut d2, line) = start_with(&g, &["--nodes", "512", "--events", "1024", "--agents", "8", "--blob-chunks", "8"]);
    assert!(line.contains(" adopted and ready"), "{line}");
    assert!(line.contains("nodes=256"), "adoption keeps the segment's capacities: {line}");
    d2.wait_for_line(Stream::Stderr, READY_TIMEOUT, |l| l.contains("keeps its capacities"));
    let seg = Segment::attach(g.name(), Access::ReadOnly).expect("attach after adoption");
    let n = seg.read(seg.lookup(uuid).expect("kept node")).unwrap();
    assert_eq!((n.name(), n.description()), ("kept", "survives --keep"));
    assert_eq!(seg.inspect().info().adopt_count, 1);

    let status = stop(&mut d2);
    assert_eq!(status.code(), Some(0), "{}", d2.transcript());
    assert!(!g.shm_path().exists());
}

#[test]
fn a_killed_daemon_is_adopted_on_restart_with_every_record_intact() {
    let g = SegmentGuard::new("daemon-adopt");
    let (mut d, _) = start(&g, &[]);
    let first_pid = d.pid();
    let seg = Segment::attach(g.name(), Access::ReadWrite).unwrap();
    let boot1 = seg.inspect().info().boot_id;
    let mut added = Vec::new();
    let project = seg.add(seg.root(), &NewNode::new(NodeKind::Project, "p").priority(9)).unwrap();
    for i in 0..20u32 {
        let name = format!("task-{i}");
        let desc = format!("description of task {i}");
        let h =
            seg.add(project, &NewNode::new(NodeKind::Task, &name).description(&desc).value(i as f64 / 4.0)).unwrap();
        seg.update(h, |n| n.set_progress((i * 5) as u8)).unwrap();
        added.push((seg.read(h).unwrap().uuid(), name, desc, i));
    }
    let project_uuid = seg.read(project).unwrap().uuid();
    drop(seg);

    d.signal(Signal::SIGKILL);
    let status = d.wait_exit(EXIT_TIMEOUT);
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
    assert!(g.shm_path().exists(), "a killed daemon cannot remove its segment");

    let (d2, line) = start(&g, &[]);
    assert!(line.contains(" adopted and ready"), "{line}");
    assert_ne!(d2.pid(), first_pid);
    let seg = Segment::attach(g.name(), Access::ReadOnly).unwrap();
    let info = seg.inspect().info();
    assert_eq!(info.adopt_count, 1);
    assert_eq!(info.daemon_pid, d2.pid());
    assert!(info.daemon_alive);
    assert_ne!(info.boot_id, boot1, "a new daemon instance gets a new boot id");
    let project = seg.lookup(project_uuid).expect("project after adoption");
    assert_eq!(seg.read(project).unwrap().priority(), 9);
    assert_eq!(seg.child_count(project).unwrap(), 20);
    for (uuid, name, desc, i) in &added {
        let h: Handle = seg.lookup(*uuid).unwrap_or_else(|e| panic!("{name} lost after adoption: {e}"));
        let n = seg.read(h).unwrap();
        assert_eq!(n.name(), name);
        assert_eq!(n.description(), desc);
        assert_eq!(n.value(), *i as f64 / 4.0);
        assert_eq!(n.progress() as u32, i * 5);
        assert_eq!(n.version(), 2);
        assert_eq!(n.parent(), Some(project));
    }
}

#[test]
fn a_half_initialised_segment_is_recreated_with_a_note() {
    let g = SegmentGuard::new("daemon-half-init");
    let stale_uuid = {
        let seg = Daemon::create(g.name(), &caps(), 0o600).unwrap();
        let h = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "stale")).unwrap();
        seg.read(h).unwrap().uuid()
    };
    // A daemon that died before marking the segment Ready leaves the state word 0.
    raw::write_u64(&g.shm_path(), raw::STATE_OFFSET, 0);
    assert_eq!(Daemon::adopt(g.name()).err(), Some(AttachError::Incomplete));

    let (d, line) = start(&g, &[]);
    assert!(line.contains(" created and ready"), "{line}");
    d.wait_for_line(Stream::Stderr, READY_TIMEOUT, |l| l.contains("half-initialised"));
    let seg = Segment::attach(g.name(), Access::ReadOnly).expect("attach to the recreated segment");
    assert_eq!(seg.state(), SegmentState::Ready);
    assert_eq!(seg.lookup(stale_uuid).err(), Some(worknode::PoolError::NotFound), "the segment must be new");
    assert_eq!(seg.inspect().info().adopt_count, 0);
}

#[test]
fn a_foreign_file_is_refused_and_left_untouched() {
    let g = SegmentGuard::new("daemon-foreign");
    let junk: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(g.shm_path(), &junk).unwrap();

    let mut d = g.spawn_daemon(&ARGS);
    let status = d.wait_exit(EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(1), "{}", d.transcript());
    let err = d.output(Stream::Stderr);
    assert!(err.contains("is not a Worknode segment"), "{err}");
    assert!(err.contains("hint:") && err.contains("will not overwrite"), "{err}");
    assert!(d.output(Stream::Stdout).is_empty(), "no ready line expected:\n{}", d.transcript());
    assert_eq!(std::fs::read(g.shm_path()).unwrap(), junk, "the foreign file was modified");
}

#[test]
fn bad_flags_are_refused_before_anything_is_created() {
    let g = SegmentGuard::new("daemon-flags");
    let cases: [(&[&str], &str); 4] = [
        (&["--events", "1000"], "power of two"),
        (&["--mode", "400"], "must let the owner read and write"),
        (&["--mode", "abc"], "not an octal mode"),
        (&["--nodes", "1"], "nodes"),
    ];
    for (args, message) in cases {
        let mut d = g.spawn_daemon(args);
        let status = d.wait_exit(EXIT_TIMEOUT);
        assert_eq!(status.code(), Some(2), "{args:?} is a usage error (exit 2)\n{}", d.transcript());
        assert!(d.output(Stream::Stderr).contains(message), "{args:?}: expected {message:?}\n{}", d.transcript());
        assert!(!g.shm_path().exists(), "{args:?} created the segment");
    }
    let mut cmd = std::process::Command::new(worknode_tests::daemon_bin());
    cmd.args(["--segment", "bad/name"]);
    let mut d = g.spawn(cmd, "worknoded bad name");
    let status = d.wait_exit(EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(2), "a usage error\n{}", d.transcript());
    assert!(d.output(Stream::Stderr).contains("invalid --segment"), "{}", d.transcript());
}
