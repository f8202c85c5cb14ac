//! Brokered mode across a real privilege boundary: `worknoded --broker` run by root, and
//! agents run as uid `nobody` (65534) — `wn` and this test binary re-run as a child —
//! that cannot open the segment but read it through the descriptor the broker passes and
//! write through the broker with a capability token. Also: direct mode with
//! `--require-tokens`, and requests of the wrong shape or size on a raw connection.
//!
//! The tests need root (to drop to `nobody`) and binaries `nobody` can run; elsewhere
//! they say SKIPPED and pass.

use serde_json::{json, Value};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;
use worknode::broker::{read_message, write_message, BrokerFault, Hello, Reply, Request, Welcome, WireError};
use worknode::{
    Access, AgentError, AttachError, BrokerError, BrokerFault as Fault, Denied, EventKind, NewEvent, NewNode, NodeKind,
    PoolError, Right, Segment, Status, TaskError,
};
use worknode_tests::{child_main, env_str, say, Proc, SegmentGuard, Stream, READY_TIMEOUT, SEGMENT_ENV};

/// Uid and gid of `nobody`.
const NOBODY: u32 = 65534;
/// Bound on a child's report.
const CHILD_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the daemon noticing a killed agent.
const REAP_TIMEOUT: Duration = Duration::from_secs(10);

const DAEMON_ARGS: [&str; 12] =
    ["--fsync", "off", "--nodes", "256", "--events", "4096", "--agents", "16", "--blob-chunks", "64", "--sets", "4"];

#[test]
fn child_entry() {
    child_main(|role| match role {
        "brokered_reader" => brokered_reader(),
        "brokered_worker" => brokered_worker(),
        other => panic!("unknown role {other}"),
    })
}

/// Whether uid `nobody` can run the program at `exe`.
fn runnable_by_nobody(exe: &std::path::Path) -> bool {
    exe.ancestors().skip(1).all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
        && std::fs::metadata(exe).is_ok_and(|m| m.permissions().mode() & 0o005 == 0o005)
}

/// Whether the boundary can be tested here: root, and binaries `nobody` can run.
fn boundary_testable() -> bool {
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let ok =
        root && runnable_by_nobody(&std::env::current_exe().unwrap()) && runnable_by_nobody(&worknode_tests::wn_bin());
    if !ok {
        println!("SKIPPED: needs root and binaries uid {NOBODY} can run");
    }
    ok
}

fn start(g: &SegmentGuard, extra: &[&str]) -> Proc {
    let args: Vec<&str> = DAEMON_ARGS.iter().copied().chain(extra.iter().copied()).collect();
    let d = g.spawn_daemon(&args);
    d.wait_for_line(Stream::Stdout, READY_TIMEOUT, |l| l.contains("ready"));
    d
}

/// `wn` for this segment; as `nobody` when `uid` is given.
fn wn(g: &SegmentGuard, uid: Option<u32>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(worknode_tests::wn_bin());
    cmd.args(["--json"]).args(args).env(worknode::SEGMENT_ENV, g.name()).env("WORKNODE_DATA_DIR", g.data_dir());
    cmd.env_remove("WORKNODE_TOKEN").env_remove("WORKNODE_AGENT");
    if let Some(u) = uid {
        cmd.uid(u).gid(u).current_dir("/");
    }
    cmd.output().expect("run wn")
}

fn ok(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "wn failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// The error JSON of a `wn` that must fail with `exit`.
fn fails(out: &std::process::Output, exit: i32) -> Value {
    assert_eq!(
        out.status.code(),
        Some(exit),
        "stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let e: Value = serde_json::from_slice(&out.stderr).expect("error JSON on stderr");
    assert!(e["hint"].as_str().is_some_and(|h| !h.is_empty()), "a hint: {e}");
    e
}

fn mint(g: &SegmentGuard, agent: &str, rights: &str, extra: &[&str]) -> String {
    let args: Vec<&str> =
        ["token", "mint", "--agent", agent, "--rights", rights].iter().copied().chain(extra.iter().copied()).collect();
    let out = wn(g, None, &args);
    assert!(out.status.success(), "mint: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "token": text.trim() }));
    v["token"].as_str().unwrap().to_string()
}

/// Sets up /A/a1, /A/a2 and /B/b1, all ready; returns nothing (paths address them).
fn board(g: &SegmentGuard) {
    for args in [
        &["add", "project", "A"][..],
        &["add", "project", "B"],
        &["add", "task", "a1", "--parent", "/A", "--status", "ready"],
        &["add", "task", "a2", "--parent", "/A", "--status", "ready"],
        &["add", "task", "b1", "--parent", "/B", "--status", "ready"],
    ] {
        ok(&wn(g, None, args));
    }
}

/// The node at `/a/b` (test boards have unique names).
fn path(seg: &Segment, p: &str) -> worknode::Handle {
    let mut h = seg.root();
    for part in p.split('/').filter(|s| !s.is_empty()) {
        let mut kids = Vec::new();
        seg.children(h, &mut kids).unwrap();
        h = *kids.iter().find(|k| seg.read(**k).unwrap().name() == part).unwrap_or_else(|| panic!("no {p}"));
    }
    h
}

/// Reads through the passed descriptor, shows that the segment cannot be opened for
/// writing (neither by name nor by reopening the descriptor), and that a read token
/// cannot write.
fn brokered_reader() -> Value {
    let name = env_str(SEGMENT_ENV);
    let direct_rw = Segment::attach(&name, Access::ReadWrite).err().map(|e| format!("{e:?}"));
    let direct_ro = Segment::attach(&name, Access::ReadOnly).err().map(|e| format!("{e:?}"));
    let seg = Segment::attach_brokered(&name, &env_str("WN_TOKEN"), "reader").expect("brokered attach");
    let mut kids = Vec::new();
    seg.children(seg.root(), &mut kids).unwrap();
    let names: Vec<String> = kids.iter().map(|h| seg.read(*h).unwrap().name().to_string()).collect();
    // The mapping of the passed descriptor is shared and read-only, and cannot be made
    // writable: the descriptor was opened O_RDONLY, so the kernel refuses PROT_WRITE.
    let shm = worknode::shm_path(&name);
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mut mappings = Vec::new();
    for line in maps.lines().filter(|l| l.ends_with(shm.to_str().unwrap())) {
        let mut parts = line.split_whitespace();
        let (range, perms) = (parts.next().unwrap(), parts.next().unwrap());
        let (lo, hi) = range.split_once('-').unwrap();
        let (lo, hi) = (usize::from_str_radix(lo, 16).unwrap(), usize::from_str_radix(hi, 16).unwrap());
        let addr = std::ptr::NonNull::new(lo as *mut std::ffi::c_void).unwrap();
        let prot = nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE;
        // The range is a mapping of this process, read from /proc/self/maps.
        // SAFETY: asking for write access either fails (expected) or changes no byte.
        let r = unsafe { nix::sys::mman::mprotect(addr, hi - lo, prot) };
        mappings.push(json!({ "perms": perms, "mprotect_write": r.err().map(|e| format!("{e:?}")) }));
    }
    // And no descriptor of it stays open to be reopened.
    let fds = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == shm))
        .count();
    let write = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "nope")).err().map(|e| format!("{e:?}"));
    json!({ "names": names, "direct_rw": direct_rw, "direct_ro": direct_ro, "mappings": mappings, "fds": fds, "write": write,
            "brokered": seg.is_brokered() })
}

/// A worker with a session: events name the token's agent whatever the handle's actor
/// says; a claim inside its subtree works, one outside is refused; then it waits to be
/// killed.
fn brokered_worker() -> Value {
    let name = env_str(SEGMENT_ENV);
    let seg = Segment::attach_brokered(&name, &env_str("WN_TOKEN"), "worker").expect("brokered attach");
    let session = seg.open_session("w1", "worker").expect("session");
    let me = session.id();
    // Told to act as another node: under a token, the token's agent acts all the same.
    seg.set_actor(Some(seg.root()));
    let seq = seg.append(&NewEvent::new(EventKind::USER).topic("hello")).expect("append");
    let resolve = |p: &str| path(&seg, p);
    let claim = seg.claim(resolve("/A/a1"), me, Duration::from_secs(600)).expect("claim inside the subtree");
    let outside = seg.claim(resolve("/B/b1"), me, Duration::from_secs(600)).err().map(|e| format!("{e:?}"));
    let other = seg.join("someone-else", "x").err().map(|e| format!("{e:?}"));
    // Waits stay local: a blocking read on the read-only mapping sees our own event.
    let mut r = seg.reader(worknode::Start::At(seq));
    let seen = r.next(worknode::Wait::Park, Duration::from_secs(5)).map(|e| e.seq()).ok();
    say(&json!({ "seq": seq, "epoch": claim.epoch, "outside": outside, "other": other, "seen": seen,
                 "agent": seg.agent(me).unwrap().node.to_raw() })
    .to_string());
    std::thread::sleep(Duration::from_secs(60));
    json!({ "survived": true })
}

#[test]
fn another_user_works_through_the_broker_and_nowhere_else() {
    if !boundary_testable() {
        return;
    }
    let g = SegmentGuard::new("broker-boundary");
    let _d = start(&g, &["--broker"]);
    board(&g);
    assert_eq!(std::fs::metadata(g.shm_path()).unwrap().mode() & 0o777, 0o600);

    // No token: refused at the door, with advice.
    let e = fails(&wn(&g, Some(NOBODY), &["ls"]), 6);
    assert_eq!(e["code"], "permission_denied", "{e}");

    // A read token reads through the passed descriptor; it cannot write, and the file
    // cannot be opened for writing by name or through the descriptor.
    let read = mint(&g, "reader", "read", &[]);
    let mut cmd = worknode_tests::role_command("brokered_reader");
    cmd.env(SEGMENT_ENV, g.name()).env("WN_TOKEN", &read).uid(NOBODY).gid(NOBODY).current_dir("/");
    let r = g.spawn(cmd, "brokered_reader").expect_report(CHILD_TIMEOUT);
    assert_eq!(r["brokered"], true, "{r}");
    let names: Vec<&str> = r["names"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(names.contains(&"A") && names.contains(&"B"), "{r}");
    assert!(r["direct_rw"].as_str().unwrap().contains("PermissionDenied"), "{r}");
    assert!(r["direct_ro"].as_str().unwrap().contains("PermissionDenied"), "{r}");
    assert_eq!(r["mappings"], json!([{ "perms": "r--s", "mprotect_write": "EACCES" }]), "{r}");
    assert_eq!(r["fds"], 0, "{r}");
    let want = format!("{:?}", PoolError::Denied(Denied::Lacks(Right::Create)));
    assert_eq!(r["write"], want.as_str(), "{r}");
    let ls = ok(&wn(&g, Some(NOBODY), &["--token", &read, "ls"]));
    assert!(ls.to_string().contains("\"a1\""), "{ls}");
    let e = fails(&wn(&g, Some(NOBODY), &["--token", &read, "add", "task", "x"]), 6);
    assert_eq!(e["code"], "token_lacks_right", "{e}");

    // A worker token under /A: claims and completes there, is refused under /B, and the
    // events it causes carry its agent whatever --agent says (another name is refused).
    let work = mint(&g, "w-cli", "read,claim,update,create", &["--under", "/A"]);
    let c = ok(&wn(&g, Some(NOBODY), &["--token", &work, "claim", "/A/a2"]));
    assert_eq!(c["claim"]["agent"], "w-cli", "{c}");
    ok(&wn(&g, Some(NOBODY), &["--token", &work, "progress", "/A/a2", "40"]));
    ok(&wn(&g, Some(NOBODY), &["--token", &work, "done", "/A/a2", "--note", "ok"]));
    ok(&wn(&g, Some(NOBODY), &["--token", &work, "add", "task", "a3", "--parent", "/A"]));
    // The lifecycle verbs are brokered like every change, and bounded by the subtree.
    assert_eq!(
        ok(&wn(&g, Some(NOBODY), &["--token", &work, "cancel", "/A/a3", "--reason", "dup"]))["status"],
        "cancelled"
    );
    assert_eq!(ok(&wn(&g, Some(NOBODY), &["--token", &work, "reopen", "/A/a3"]))["status"], "ready");
    assert_eq!(ok(&wn(&g, Some(NOBODY), &["--token", &work, "edit", "/A/a3", "--priority", "3"]))["priority"], 3);
    assert_eq!(ok(&wn(&g, Some(NOBODY), &["--token", &work, "rm", "/A/a3"]))["removed"], 1);
    assert_eq!(fails(&wn(&g, Some(NOBODY), &["--token", &work, "cancel", "/B/b1"]), 6)["code"], "outside_subtree");
    assert_eq!(fails(&wn(&g, Some(NOBODY), &["--token", &work, "claim", "/B/b1"]), 6)["code"], "outside_subtree");
    assert_eq!(
        fails(&wn(&g, Some(NOBODY), &["--token", &work, "add", "task", "x", "--parent", "/B"]), 6)["code"],
        "outside_subtree"
    );
    // Documents go through the broker too (doc right), and come back through the mapping.
    let file = std::env::temp_dir().join(format!("wn-broker-doc-{}", std::process::id()));
    std::fs::write(&file, b"measured: 42\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let docs = mint(&g, "writer", "read,doc", &["--under", "/A"]);
    let f = file.to_str().unwrap();
    ok(&wn(&g, Some(NOBODY), &["--token", &docs, "doc", "put", "/A/a2", "notes.txt", "--file", f]));
    let got = ok(&wn(&g, Some(NOBODY), &["--token", &docs, "doc", "get", "/A/a2/notes.txt"]));
    assert_eq!(got["text"], "measured: 42\n", "{got}");
    let e = fails(&wn(&g, Some(NOBODY), &["--token", &docs, "doc", "put", "/B/b1", "x.txt", "--file", f]), 6);
    assert_eq!(e["code"], "outside_subtree", "{e}");
    std::fs::remove_file(&file).unwrap();
    let e = fails(&wn(&g, Some(NOBODY), &["--token", &work, "--agent", "boss", "done", "/A/a2"]), 6);
    assert_eq!(e["code"], "token_agent_mismatch", "{e}");
    let out = wn(&g, None, &["events"]);
    assert!(out.status.success());
    let events: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let by_cli: Vec<&Value> = events.iter().filter(|e| e["node_name"] == "a2" && e["kind"] != "node_created").collect();
    assert!(by_cli.len() >= 3, "claim, progress, done: {events:?}");
    assert!(by_cli.iter().all(|e| e["actor"]["name"] == "w-cli"), "{by_cli:?}");

    // Forged (one byte changed), expired and revoked tokens are refused, each saying so.
    let mut forged = work.clone().into_bytes();
    let at = forged.len() / 2;
    forged[at] = if forged[at] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(fails(&wn(&g, Some(NOBODY), &["--token", &forged, "ls"]), 6)["code"], "token_invalid");
    let short = mint(&g, "brief", "read", &["--ttl", "1ms"]);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(fails(&wn(&g, Some(NOBODY), &["--token", &short, "ls"]), 6)["code"], "token_expired");
    let doomed = mint(&g, "doomed", "read", &[]);
    ok(&wn(&g, Some(NOBODY), &["--token", &doomed, "ls"]));
    let listed = ok(&wn(&g, None, &["token", "ls"]));
    let id = listed["tokens"].as_array().unwrap().iter().find(|t| t["agent"] == "doomed").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    ok(&wn(&g, None, &["token", "revoke", &id]));
    assert_eq!(fails(&wn(&g, Some(NOBODY), &["--token", &doomed, "ls"]), 6)["code"], "token_revoked");
}

#[test]
fn a_brokered_agent_killed_with_sigkill_loses_its_claims_and_its_events_name_it() {
    if !boundary_testable() {
        return;
    }
    let g = SegmentGuard::new("broker-kill");
    let _d = start(&g, &["--broker"]);
    board(&g);
    let token = mint(&g, "w1", "read,claim,update,emit", &["--under", "/A"]);
    let mut cmd = worknode_tests::role_command("brokered_worker");
    cmd.env(SEGMENT_ENV, g.name()).env("WN_TOKEN", &token).uid(NOBODY).gid(NOBODY).current_dir("/");
    let mut worker = g.spawn(cmd, "brokered_worker");
    let line = worker.wait_for_line(Stream::Stdout, CHILD_TIMEOUT, |l| l.starts_with("WN-SAY "));
    let said: Value = serde_json::from_str(line.trim_start_matches("WN-SAY ")).unwrap();
    let want = format!("{:?}", TaskError::Pool(PoolError::Denied(Denied::OutsideSubtree(Right::Claim))));
    assert_eq!(said["outside"], want.as_str(), "{said}");
    assert!(said["other"].as_str().unwrap().contains("OtherAgent"), "{said}");
    assert_eq!(said["seen"], said["seq"], "a local wait on the read-only mapping saw the event: {said}");

    let seg = Segment::attach(g.name(), Access::ReadOnly).unwrap();
    // The event names the token's agent, not the actor the handle was told to use.
    let seq = said["seq"].as_u64().unwrap();
    let mut r = seg.reader(worknode::Start::At(seq));
    let ev = r.next(worknode::Wait::Park, Duration::from_secs(5)).unwrap();
    assert_eq!(ev.actor().map(|a| a.to_raw()), said["agent"].as_u64(), "actor of {ev:?}");
    let a1 = path(&seg, "/A/a1");
    assert_eq!(seg.read(a1).unwrap().status(), Some(Status::Claimed));

    worker.kill();
    worknode_tests::wait_until(
        REAP_TIMEOUT,
        || seg.read(a1).is_ok_and(|n| n.status() == Some(Status::Ready)),
        || format!("a1 still {:?} after the worker was killed", seg.read(a1).map(|n| n.status())),
    );
    assert!(seg.find_agent("w1").is_none(), "the agent was reaped");
}

/// Opens a raw broker connection with `token` (same user), past the welcome.
fn raw_connection(name: &str, token: &str) -> std::os::unix::net::UnixStream {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(worknode::broker::broker_socket_name(name)).unwrap();
    let mut s = std::os::unix::net::UnixStream::connect_addr(&addr).expect("connect to the broker");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let hello = Hello { protocol: worknode::broker::PROTOCOL, token: token.into(), role: "raw".into(), brokered: true };
    write_message(&mut s, &hello).unwrap();
    // Reading without room for the descriptor drops it (the kernel closes it).
    let welcome: Welcome = postcard::from_bytes(&read_message(&mut s, 65536).unwrap()).unwrap();
    assert!(matches!(welcome, Welcome::Granted { agent: Some(_), .. }), "{welcome:?}");
    s
}

fn call(s: &mut std::os::unix::net::UnixStream, req: &Request) -> Reply {
    write_message(s, req).unwrap();
    postcard::from_bytes(&read_message(s, 65536).unwrap()).unwrap()
}

#[test]
fn requests_of_the_wrong_shape_or_size_get_typed_errors_and_apply_nothing() {
    let g = SegmentGuard::new("broker-wire");
    let _d = start(&g, &[]);
    board(&g);
    let token = mint(&g, "raw", "read,create,update,emit", &[]);
    let seg = Segment::attach(g.name(), Access::ReadOnly).unwrap();
    let mut s = raw_connection(g.name(), &token);
    let free = seg.free_slots().unwrap();
    // Bytes that are no request: a typed error, and the connection keeps serving.
    use std::io::Write;
    s.write_all(&[3, 0, 0, 0, 0xff, 0xfe, 0xfd]).unwrap();
    let r: Reply = postcard::from_bytes(&read_message(&mut s, 65536).unwrap()).unwrap();
    assert_eq!(r, Reply::Err(WireError::Pool(PoolError::Broker(BrokerFault::BadRequest))));
    // A request the token does not allow: refused, nothing applied.
    let claim = Request::Claim { task: path(&seg, "/A/a1"), agent: seg.find_agent("raw").unwrap(), lease_ms: 1000 };
    assert_eq!(
        call(&mut s, &claim),
        Reply::Err(WireError::Task(TaskError::Pool(PoolError::Denied(Denied::Lacks(Right::Claim)))))
    );
    // An allowed one works on the same connection.
    let spec = worknode::broker::NodeSpec {
        kind: NodeKind::Task,
        custom_kind: 0,
        name: "by-raw".into(),
        description: String::new(),
        status: Status::Pending,
        priority: 0,
        value: 0.0,
    };
    assert!(matches!(call(&mut s, &Request::Add { parent: seg.root(), spec: spec.clone() }), Reply::Handle(_)));
    assert_eq!(seg.free_slots().unwrap(), free - 1, "exactly the one node asked for");

    // Under a token: no built-in event kinds (the journal acts on them), no agent or
    // document nodes by `add`, no claim-only starting status, no change to /agents.
    let forged = Request::Append { kind: EventKind::NODE_DELETED, node: None, topic: String::new(), payload: vec![] };
    assert_eq!(call(&mut s, &forged), Reply::Err(WireError::Ring(worknode::RingError::Denied(Denied::BuiltInEvent))));
    let agent_spec = worknode::broker::NodeSpec { kind: NodeKind::Agent, name: "fake".into(), ..spec.clone() };
    let e = call(&mut s, &Request::Add { parent: seg.root(), spec: agent_spec });
    assert_eq!(e, Reply::Err(WireError::Pool(PoolError::Denied(Denied::NotThisKind))));
    let done_spec = worknode::broker::NodeSpec { status: Status::Complete, name: "done".into(), ..spec.clone() };
    let e = call(&mut s, &Request::Add { parent: seg.root(), spec: done_spec });
    assert_eq!(e, Reply::Err(WireError::Pool(PoolError::Denied(Denied::NotThisKind))));
    let agents = path(&seg, "/agents");
    let e = call(&mut s, &Request::Delete { node: agents, mode: worknode::DeleteMode::Recursive });
    assert_eq!(e, Reply::Err(WireError::Pool(PoolError::Denied(Denied::SystemNode))));
    assert_eq!(seg.free_slots().unwrap(), free - 1, "none of these changed anything");

    // Another connection is unaffected by what follows on this one.
    let mut other = raw_connection(g.name(), &token);
    // A frame longer than the broker accepts: a typed error, then the connection closes
    // (the stream cannot be resynchronised).
    s.write_all(&u32::MAX.to_le_bytes()).unwrap();
    let r: Reply = postcard::from_bytes(&read_message(&mut s, 65536).unwrap()).unwrap();
    assert!(matches!(r, Reply::Err(WireError::Pool(PoolError::Broker(BrokerFault::TooLarge { .. })))), "{r:?}");
    let mut rest = Vec::new();
    use std::io::Read;
    assert_eq!(s.read_to_end(&mut rest).unwrap(), 0, "closed after an oversized frame");
    let spec = worknode::broker::NodeSpec { name: "by-raw-2".into(), ..spec };
    assert!(matches!(call(&mut other, &Request::Add { parent: seg.root(), spec }), Reply::Handle(_)));

    // A hello that is no hello is refused with a typed refusal.
    use std::os::linux::net::SocketAddrExt;
    let addr =
        std::os::unix::net::SocketAddr::from_abstract_name(worknode::broker::broker_socket_name(g.name())).unwrap();
    let mut bad = std::os::unix::net::UnixStream::connect_addr(&addr).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    bad.write_all(&[2, 0, 0, 0, 9, 9]).unwrap();
    let w: Welcome = postcard::from_bytes(&read_message(&mut bad, 65536).unwrap()).unwrap();
    assert_eq!(w, Welcome::Refused(worknode::broker::Refusal::Protocol));
    // Without --broker, the broker serves its own user only; a brokered attach of our own
    // segment works (it is how a sandboxed agent of the same user takes part).
    let b = Segment::attach_brokered(g.name(), &token, "again").unwrap();
    assert!(b.is_brokered());
    let e = Segment::attach_brokered(g.name(), "wnt1.00", "x").err().expect("a malformed token is refused");
    assert!(matches!(e, AttachError::Broker(BrokerError::Refused(worknode::broker::Refusal::Token(_)))), "{e:?}");
}

#[test]
fn require_tokens_makes_direct_clients_present_one_and_checks_every_change() {
    let g = SegmentGuard::new("broker-require");
    let _d = start(&g, &["--require-tokens"]);
    // No token: reads work, changes are refused with advice.
    ok(&wn(&g, None, &["ls"]));
    let e = fails(&wn(&g, None, &["add", "project", "A"]), 6);
    assert_eq!(e["code"], "token_required", "{e}");
    let e = fails(&wn(&g, None, &["--agent", "x", "join"]), 6);
    assert_eq!(e["code"], "token_required", "{e}");
    // With one, within its rights.
    let admin = mint(&g, "lead", "all", &[]);
    ok(&wn(&g, None, &["--token", &admin, "add", "project", "A"]));
    ok(&wn(&g, None, &["--token", &admin, "add", "task", "t", "--parent", "/A", "--status", "ready"]));
    let worker = mint(&g, "w", "read,claim", &[]);
    ok(&wn(&g, None, &["--token", &worker, "claim", "/A/t"]));
    assert_eq!(fails(&wn(&g, None, &["--token", &worker, "done", "/A/t"]), 6)["code"], "token_lacks_right");
    // The library refuses a direct handle without a token too.
    let seg = Segment::attach(g.name(), Access::ReadWrite).unwrap();
    assert_eq!(
        seg.add(seg.root(), &NewNode::new(NodeKind::Task, "x")).unwrap_err(),
        PoolError::Denied(Denied::NoToken)
    );
    let grant = seg.authenticate(&admin).unwrap();
    assert_eq!(grant.agent(), "lead");
    seg.add(seg.root(), &NewNode::new(NodeKind::Task, "x")).unwrap();
}

/// A revoked token ends its open connections (and their sessions) without waiting for a
/// request; one agent's session cannot be held by two connections; a hello that trickles
/// in is cut off; and a daemon stops promptly with brokered connections open.
#[test]
fn open_connections_end_on_revocation_sessions_are_single_and_shutdown_is_prompt() {
    let g = SegmentGuard::new("broker-lifecycle");
    let mut d = start(&g, &[]);
    board(&g);
    let token = mint(&g, "w1", "read,claim", &[]);
    let seg = Segment::attach(g.name(), Access::ReadOnly).unwrap();

    // Two brokered handles with one token: the first holds the session, the second is
    // refused it (closing the second must not reap the first's agent).
    let a = Segment::attach_brokered(g.name(), &token, "worker").unwrap();
    let b = Segment::attach_brokered(g.name(), &token, "worker").unwrap();
    let session = a.open_session("w1", "worker").unwrap();
    assert!(session.watched_by_daemon());
    let err = b.open_session("w1", "worker").err().expect("a second session for w1");
    assert!(matches!(err, AgentError::SessionTaken { .. }), "{err:?}");
    let a1 = path(&seg, "/A/a1");
    let claim = a.claim(a1, session.id(), Duration::from_secs(600)).unwrap();
    drop(b);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(seg.read(a1).unwrap().status(), Some(Status::Claimed), "the other connection's close reaped nobody");

    // Revoked: the connection is closed and the session reaped, no request needed.
    let listed = ok(&wn(&g, None, &["token", "ls"]));
    let id = listed["tokens"][0]["id"].as_str().unwrap().to_string();
    ok(&wn(&g, None, &["token", "revoke", &id]));
    worknode_tests::wait_until(
        REAP_TIMEOUT,
        || seg.read(a1).is_ok_and(|n| n.status() == Some(Status::Ready)),
        || "the revoked connection's claim was not released".into(),
    );
    let e = a.progress(&claim, 10).unwrap_err();
    assert_eq!(e, TaskError::Pool(PoolError::Broker(Fault::Disconnected)), "the link is closed");
    std::mem::forget(session); // its agent is gone with the connection

    // A hello that trickles in is cut off by its deadline, not kept byte by byte.
    use std::io::{Read, Write};
    use std::os::linux::net::SocketAddrExt;
    let addr =
        std::os::unix::net::SocketAddr::from_abstract_name(worknode::broker::broker_socket_name(g.name())).unwrap();
    let mut slow = std::os::unix::net::UnixStream::connect_addr(&addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let trickle = std::thread::spawn({
        let mut w = slow.try_clone().unwrap();
        move || {
            for _ in 0..8 {
                if w.write_all(&[1]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(900));
            }
        }
    });
    let mut rest = Vec::new();
    assert_eq!(slow.read_to_end(&mut rest).unwrap_or(0), 0, "the daemon closed the trickling hello");
    trickle.join().unwrap();

    // Shutdown with a brokered connection open (idle, with a session) ends promptly.
    let other = mint(&g, "w2", "read", &[]);
    let c = Segment::attach_brokered(g.name(), &other, "idle").unwrap();
    let _s = c.open_session("w2", "idle").unwrap();
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{}", d.transcript());
}

/// File reservations are brokered like every change, checked against the token's
/// `reserve` right — not its subtree: reservations name repository paths and live in the
/// system container `/reservations`, outside every subtree.
#[test]
fn reservations_are_brokered_and_need_the_reserve_right_not_the_subtree() {
    use worknode::{ReserveError, ReserveOptions};
    let g = SegmentGuard::new("broker-reserve");
    let _d = start(&g, &[]);
    board(&g);
    let token = mint(&g, "res", "read,reserve", &["--under", "/A"]);
    let b = Segment::attach_brokered(g.name(), &token, "coder").unwrap();
    assert!(b.is_brokered());
    let me = b.join("res", "coder").unwrap();
    let opts = ReserveOptions::default();
    let r = b.reserve(me, &["src/**"], &opts).unwrap();
    let seg = Segment::attach(g.name(), Access::ReadWrite).unwrap();
    let other = seg.join("other", "coder").unwrap();
    let e = seg.reserve(other, &["src/a.rs"], &opts).unwrap_err();
    assert!(matches!(&e, ReserveError::Conflict { holder, .. } if holder == "res"), "{e:?}");
    // Bad input and a stale epoch come back typed, through the broker.
    assert!(matches!(b.reserve(me, &["src/[x"], &opts), Err(ReserveError::BadGlob { .. })));
    let stale = worknode::Reservation { epoch: r.epoch + 1, ..r.clone() };
    assert!(matches!(b.unreserve(&stale), Err(ReserveError::StaleEpoch { .. })));
    let renewed = b.renew_reservation(&r, Duration::from_secs(7200)).unwrap();
    assert!(renewed.lease_until_ms > r.lease_until_ms);
    assert_eq!(b.unreserve_matching(me, Some(&["src/**"])).unwrap(), 1);
    seg.reserve(other, &["src/a.rs"], &opts).unwrap();
    // `wn` with the token, directly (same user): the same check.
    ok(&wn(&g, None, &["--token", &token, "reserve", "lib/**"]));
    // Without the right: refused, nothing reserved.
    let no = mint(&g, "nores", "read,claim", &[]);
    let c = Segment::attach_brokered(g.name(), &no, "coder").unwrap();
    let id = c.join("nores", "coder").unwrap();
    let e = c.reserve(id, &["docs/**"], &opts).unwrap_err();
    assert_eq!(e, ReserveError::Pool(PoolError::Denied(Denied::Lacks(Right::Reserve))));
    let e = fails(&wn(&g, None, &["--token", &no, "reserve", "docs/**"]), 6);
    assert_eq!(e["code"], "token_lacks_right", "{e}");
    let mut all = Vec::new();
    seg.reservations(&mut all);
    assert_eq!(all.len(), 2, "{all:?}");
    // Under a token, the reservation records change only through the reservation verbs.
    let admin = mint(&g, "admin", "all", &[]);
    let e = fails(&wn(&g, None, &["--token", &admin, "rm", "/reservations", "--recursive", "--force"]), 6);
    assert_eq!(e["code"], "system_node", "{e}");
    let d = Segment::attach_brokered(g.name(), &admin, "admin").unwrap();
    let e = d.delete(all[0].node, worknode::DeleteMode::LeafOnly).unwrap_err();
    assert_eq!(e, PoolError::Denied(Denied::SystemNode));
    seg.reservations(&mut all);
    assert_eq!(all.len(), 2, "nothing was removed: {all:?}");
}

/// Labels and documents put under a claim (issue 13, parts 7 and 3) go through the broker
/// like every change: a subtree token labels inside its subtree only (the registry under
/// the root is a system write its `update` right allows), `claim_next` selects by label,
/// and a put presenting the claim renews its lease; a stale claim's put stores nothing.
#[test]
fn labels_and_documents_under_a_claim_go_through_the_broker() {
    use worknode::{label_key, DocError, LabelError, TaskFilter};
    let g = SegmentGuard::new("broker-labels");
    let _d = start(&g, &[]);
    board(&g);
    let token = mint(&g, "lab", "read,update,claim,doc", &["--under", "/A"]);
    let b = Segment::attach_brokered(g.name(), &token, "worker").expect("brokered attach");
    let (a1, a2, b1) = (path(&b, "/A/a1"), path(&b, "/A/a2"), path(&b, "/B/b1"));
    assert!(b.add_label(a1, "backend").unwrap());
    assert!(!b.add_label(a1, "backend").unwrap());
    assert!(b.add_label(a2, "frontend").unwrap());
    let mut names = Vec::new();
    b.labels(a1, &mut names).unwrap();
    assert_eq!(names, ["backend"]);
    let key = label_key("backend").unwrap();
    assert!(b.has_label(a1, key).unwrap() && !b.has_label(a2, key).unwrap());
    assert_eq!(b.read(path(&b, "/labels/backend")).unwrap().kind(), Some(NodeKind::Label));
    assert_eq!(
        b.add_label(b1, "backend"),
        Err(LabelError::Pool(PoolError::Denied(Denied::OutsideSubtree(Right::Update))))
    );
    assert_eq!(b.add_label(a1, "two words"), Err(LabelError::HasWhitespace { at: 3 }));

    let me = b.join("lab", "worker").unwrap();
    let lease = Duration::from_secs(600);
    let filter = TaskFilter { label: Some(key), ..TaskFilter::default() };
    let claim = b.claim_next(&filter, me, lease).unwrap();
    assert_eq!(claim.task, a1, "the only task labelled backend");
    assert_eq!(b.claim_next(&filter, me, lease).unwrap_err(), TaskError::NothingReady);
    std::thread::sleep(Duration::from_millis(20));
    let doc = b.put_document_for(&claim, "notes", "text/plain", b"one").unwrap();
    let renewed = b.read(a1).unwrap().lease_until_ms();
    assert!(renewed > claim.lease_until_ms, "{renewed} > {}", claim.lease_until_ms);
    b.replace_document_for(&claim, doc, "text/plain", b"two").unwrap();
    let stale = worknode::Claim { epoch: claim.epoch + 1, ..claim };
    let before = b.child_count(a1).unwrap();
    assert!(matches!(
        b.put_document_for(&stale, "late", "text/plain", b"x"),
        Err(DocError::Claim(TaskError::StaleEpoch { .. }))
    ));
    assert_eq!(b.child_count(a1).unwrap(), before, "nothing stored");
    assert!(b.remove_label(a1, "backend").unwrap());
    assert!(!b.has_label(a1, key).unwrap());
}

/// A brokered agent's blocking claim (issue 13, part 2) is parked by the daemon for it:
/// it returns the task assigned to it once one is added, and times out typed.
#[test]
fn a_brokered_blocking_claim_is_parked_by_the_daemon() {
    use worknode::{NewNode, NodeKind, Principal, Status, TaskError, TaskFilter};
    let g = SegmentGuard::new("broker-claim-wait");
    let _d = start(&g, &[]);
    board(&g);
    let token = mint(&g, "bw", "read,claim,update", &["--under", "/A"]);
    let b = Segment::attach_brokered(g.name(), &token, "worker").unwrap();
    let me = b.join("bw", "worker").unwrap();
    let mine = TaskFilter { mine: true, ..TaskFilter::default() };
    let lease = Duration::from_secs(60);
    assert_eq!(b.claim_next_wait(&mine, me, lease, Duration::from_millis(100)).unwrap_err(), TaskError::WaitTimedOut);
    let name = g.name().to_string();
    let adder = std::thread::spawn(move || {
        let seg = Segment::attach(&name, Access::ReadWrite).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let a = path(&seg, "/A");
        let t = seg.add(a, &NewNode::new(NodeKind::Task, "for-bw").status(Status::Pending)).unwrap();
        seg.assign(t, &Principal::parse("bw").unwrap()).unwrap();
        seg.set_status(t, Status::Ready).unwrap();
        t
    });
    let c = b.claim_next_wait(&mine, me, lease, Duration::from_secs(30)).unwrap();
    assert_eq!(c.task, adder.join().unwrap());
    assert_eq!(c.agent, me);
}
