//! Two hosts sharing a board through a real `nats-server -js` on loopback: two
//! segments, each with its daemon and its `worknode-bridge`, in one machine.
//!
//! `nats-server` comes from the OS packages (`cargo xtask test` installs it). Every
//! wait has a deadline; what is compared is what a user sees (names, fields, labels,
//! document bytes, identity), node by node.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use std::time::Instant;
use uuid::Uuid;
use worknode::layout::record_flags;
use worknode::{Access, NewNode, NodeKind, Segment, Status, TaskError, TaskFilter};
use worknode_bridge::local::Board;
use worknode_bridge::HostId;
use worknode_tests::{
    child_main, env_str, env_u64, say, wait_until, Proc, SegmentGuard, Stream, READY_TIMEOUT, SEGMENT_ENV,
};

/// How long replication may take in a test (generous: the machine is shared).
const CONVERGE: Duration = Duration::from_secs(30);

/// A `nats-server -js` on a free loopback port, its store in a temp directory.
struct Nats {
    proc: Option<Proc>,
    port: u16,
    dir: PathBuf,
    guard: SegmentGuard,
}

impl Nats {
    fn start(test: &str) -> Nats {
        let guard = SegmentGuard::new(&format!("{test}-nats"));
        let port =
            TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port");
        let dir = guard.data_dir().join("jetstream");
        let mut n = Nats { proc: None, port, dir, guard };
        n.restart();
        n
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("nats-server is not installed: run `cargo xtask test` (it installs it) or `apt-get install nats-server`");
        let mut cmd = Command::new(bin);
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"]).arg(&self.dir);
        let p = self.guard.spawn(cmd, "nats-server");
        p.wait_for_line(Stream::Stderr, READY_TIMEOUT, |l| l.contains("Server is ready"));
        self.proc = Some(p);
    }

    fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }
}

/// One host: a segment, its daemon, its bridge.
struct Host {
    name: &'static str,
    guard: SegmentGuard,
    _daemon: Proc,
    bridge: Option<Proc>,
    seg: Segment,
}

impl Host {
    fn start(test: &str, name: &'static str, nats: &Nats) -> Host {
        let guard = SegmentGuard::new(&format!("{test}-{name}"));
        let daemon = guard.spawn_daemon(&["--nodes", "512", "--events", "4096", "--fsync", "never"]);
        daemon.wait_for_line(Stream::Stdout, READY_TIMEOUT, |l| l.contains("ready"));
        let seg = Segment::attach(guard.name(), Access::ReadWrite).expect("attach");
        let mut h = Host { name, guard, _daemon: daemon, bridge: None, seg };
        h.start_bridge(nats);
        h
    }

    fn start_bridge(&mut self, nats: &Nats) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_worknode-bridge"));
        cmd.args(["--segment", self.guard.name(), "--board", "board", "--host", self.name, "--nats", &nats.url()]);
        self.bridge = Some(self.guard.spawn(cmd, &format!("bridge-{}", self.name)));
    }

    fn kill_bridge(&mut self) {
        if let Some(mut b) = self.bridge.take() {
            b.kill();
        }
    }

    /// The bridge's output and the state it last wrote, for failure messages.
    fn transcript(&self) -> String {
        let mut state = Vec::new();
        if let Some(doc) = self.lookup("/bridge/board") {
            let _ = self.seg.get_document(doc, &mut state);
        }
        format!(
            "{}\nstate: {}",
            self.bridge.as_ref().map(Proc::transcript).unwrap_or_default(),
            String::from_utf8_lossy(&state)
        )
    }

    /// What a user sees of every replicated node: identity, parent, fields, labels,
    /// document bytes.
    fn board(&self) -> BTreeMap<Uuid, String> {
        let board = Board::new(&self.seg, None, HostId::of_name(self.name)).expect("board");
        let mut ids = Vec::new();
        board.each(|n| ids.push(n.uuid())).expect("scan");
        ids.into_iter()
            .filter_map(|id| {
                let s = board.read(id, None).ok()??;
                let f = &s.record.value;
                let doc = s.document.map(|d| String::from_utf8_lossy(&d.value).into_owned());
                let mut labels: Vec<&String> = s.labels.iter().collect();
                labels.sort();
                Some((
                    id,
                    format!(
                        "{:?} {} k{} s{} p{} {}% v{} {:?} {labels:?} {doc:?}",
                        f.parent, f.name, f.kind, f.status, f.priority, f.progress, f.value_bits, f.description
                    ),
                ))
            })
            .collect()
    }

    fn lookup(&self, path: &str) -> Option<worknode::Handle> {
        let mut cur = self.seg.root();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            cur = self.seg.child_named(cur, part).ok()??;
        }
        Some(cur)
    }

    fn find(&self, path: &str) -> worknode::Handle {
        self.lookup(path).unwrap_or_else(|| panic!("{}: no {path}", self.name))
    }

    fn has(&self, path: &str) -> bool {
        self.lookup(path).is_some()
    }

    fn labels(&self, path: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.seg.labels(self.find(path), &mut out).expect("labels");
        out.sort();
        out
    }
}

/// The state document a host's bridge last wrote.
fn bridge_state(h: &Host) -> String {
    let mut state = Vec::new();
    if let Some(doc) = h.lookup("/bridge/board") {
        let _ = h.seg.get_document(doc, &mut state);
    }
    String::from_utf8_lossy(&state).into_owned()
}

fn converged(a: &Host, b: &Host) {
    wait_until(
        CONVERGE,
        || {
            let (x, y) = (a.board(), b.board());
            !x.is_empty() && x == y
        },
        || {
            format!(
                "boards differ:\n{}: {:#?}\n{}: {:#?}\n{}\n{}",
                a.name,
                a.board(),
                b.name,
                b.board(),
                a.transcript(),
                b.transcript()
            )
        },
    );
}

fn task(name: &str) -> NewNode<'_> {
    NewNode::new(NodeKind::Task, name)
}

#[test]
fn what_one_host_writes_the_other_reads() {
    let nats = Nats::start("bridge-basic");
    let a = Host::start("bridge-basic", "a", &nats);
    let b = Host::start("bridge-basic", "b", &nats);

    let project = a.seg.add(a.seg.root(), &NewNode::new(NodeKind::Project, "api")).unwrap();
    let t = a.seg.add(project, &task("write the schema").priority(4)).unwrap();
    a.seg.add_label(t, "backend").unwrap();
    a.seg.put_document(project, "spec", "text/markdown", b"# the spec").unwrap();
    wait_until(CONVERGE, || b.has("/api/write the schema") && b.has("/api/spec"), || b.transcript());
    converged(&a, &b);
    let on_b = b.seg.read(b.find("/api/write the schema")).unwrap();
    assert_eq!(on_b.uuid(), a.seg.read(t).unwrap().uuid(), "one identity on both hosts");
    assert_eq!(on_b.priority(), 4);
    assert_eq!(on_b.origin_host(), Some(HostId::of_name("a").0), "B shows where the node came from");
    assert_eq!(a.seg.read(t).unwrap().origin_host(), None, "A made it itself");
    // B's ring has the creation as A's event: A's host id and A's HLC.
    let uuid = on_b.uuid();
    let mut ring = b.seg.reader(worknode::Start::Oldest);
    let mut created = None;
    while let Some(ev) = ring.try_next().unwrap() {
        if ev.node() == Some(uuid) && ev.kind() == worknode::EventKind::NODE_CREATED {
            created = Some(ev);
        }
    }
    let created = created.expect("the creation is in B's ring");
    assert_eq!(created.origin_host(), Some(HostId::of_name("a").0));
    // The stamp of A's write it applied (A's record as B first learnt it), not B's clock.
    let on_a = a.seg.read(t).unwrap();
    assert!(on_a.created() <= created.hlc() && created.hlc() <= on_a.updated(), "stamped with A's HLC");
    assert_eq!(b.labels("/api/write the schema"), ["backend"]);
    let mut doc = Vec::new();
    b.seg.get_document(b.find("/api/spec"), &mut doc).unwrap();
    assert_eq!(doc, b"# the spec");

    // And back: an edit on B reaches A; a delete on B removes the subtree on A.
    let tb = b.find("/api/write the schema");
    b.seg.edit(tb, &worknode::Edit { priority: Some(9), ..Default::default() }).unwrap();
    wait_until(CONVERGE, || a.seg.read(t).is_ok_and(|n| n.priority() == 9), || a.transcript());
    converged(&a, &b);
    b.seg.remove(b.find("/api"), true, false).unwrap();
    wait_until(CONVERGE, || !a.has("/api"), || a.transcript());
    assert!(a.seg.read(t).is_err(), "the task went with its project");
}

#[test]
fn a_partition_heals_without_losing_a_write() {
    let mut nats = Nats::start("bridge-partition");
    let a = Host::start("bridge-partition", "a", &nats);
    let b = Host::start("bridge-partition", "b", &nats);
    let shared = a.seg.add(a.seg.root(), &task("shared")).unwrap();
    for l in ["x", "y", "z"] {
        a.seg.add_label(shared, l).unwrap();
    }
    wait_until(CONVERGE, || b.has("/shared") && b.labels("/shared").len() == 3, || b.transcript());
    let shared_b = b.find("/shared");

    nats.stop();
    // Both sides go on working while cut off; a node made and removed meanwhile (never
    // sent) must not come back from the other side's view.
    let unpublished = |h: &Host| {
        serde_json::from_str::<Value>(&bridge_state(h)).ok().and_then(|v| v["unpublished"].as_u64()).unwrap_or(0)
    };
    wait_until(CONVERGE, || !b.seg.bridge_online(), || b.transcript());
    let before = unpublished(&b);
    let gone = b.seg.add(b.seg.root(), &task("made-and-removed")).unwrap();
    // Once B's bridge holds it unsent, so the removal is one it must send.
    wait_until(CONVERGE, || unpublished(&b) > before, || b.transcript());
    b.seg.remove(gone, false, false).unwrap();
    for i in 0..5 {
        a.seg.add(a.seg.root(), &task(&format!("from-a-{i}"))).unwrap();
        b.seg.add(b.seg.root(), &task(&format!("from-b-{i}"))).unwrap();
    }
    // Concurrent label changes: A re-adds x and drops y and z; B drops x and z and
    // re-adds y. OR-Set: an add survives the other side's remove of the tags it saw.
    a.seg.remove_label(shared, "x").unwrap();
    a.seg.add_label(shared, "x").unwrap();
    a.seg.remove_label(shared, "y").unwrap();
    a.seg.remove_label(shared, "z").unwrap();
    b.seg.remove_label(shared_b, "x").unwrap();
    b.seg.remove_label(shared_b, "y").unwrap();
    b.seg.add_label(shared_b, "y").unwrap();
    b.seg.remove_label(shared_b, "z").unwrap();
    // Concurrent edits of one record: the later write wins on both.
    a.seg.edit(shared, &worknode::Edit { priority: Some(3), ..Default::default() }).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    b.seg.edit(shared_b, &worknode::Edit { priority: Some(8), ..Default::default() }).unwrap();

    nats.restart();
    converged(&a, &b);
    for i in 0..5 {
        for h in [&a, &b] {
            assert!(h.has(&format!("/from-a-{i}")) && h.has(&format!("/from-b-{i}")), "{}: a write was lost", h.name);
        }
    }
    assert_eq!(a.labels("/shared"), ["x", "y"], "the OR-Set result");
    assert_eq!(b.labels("/shared"), ["x", "y"]);
    assert_eq!(a.seg.read(shared).unwrap().priority(), 8, "the later edit won");
    assert!(!a.has("/made-and-removed") && !b.has("/made-and-removed"), "a removed node came back");
    // Made and removed at once while connected (both events in one burst): it stays
    // removed everywhere.
    let brief = a.seg.add(a.seg.root(), &task("brief")).unwrap();
    a.seg.remove(brief, false, false).unwrap();
    let marker = a.seg.add(a.seg.root(), &task("after-brief")).unwrap();
    wait_until(CONVERGE, || b.has("/after-brief"), || b.transcript());
    converged(&a, &b);
    assert!(!a.has("/brief") && !b.has("/brief"), "a removed node came back");
    assert!(a.seg.read(marker).is_ok());
}

#[test]
fn a_bridge_killed_with_sigkill_resumes_without_duplicates() {
    let nats = Nats::start("bridge-sigkill");
    let a = Host::start("bridge-sigkill", "a", &nats);
    let mut b = Host::start("bridge-sigkill", "b", &nats);
    a.seg.add(a.seg.root(), &task("before")).unwrap();
    wait_until(CONVERGE, || b.has("/before"), || b.transcript());

    b.kill_bridge();
    for i in 0..20 {
        a.seg.add(a.seg.root(), &task(&format!("while-down-{i}"))).unwrap();
    }
    // B works meanwhile too; its bridge publishes that when it comes back.
    b.seg.add(b.seg.root(), &task("made-on-b-while-down")).unwrap();
    b.start_bridge(&nats);
    converged(&a, &b);
    let board = b.board();
    assert_eq!(board.len(), 22, "every node once: {board:#?}");
    assert!(board.values().all(|v| !v.contains('~')), "no node was renamed as a duplicate: {board:#?}");
    assert!(a.has("/made-on-b-while-down"));
}

#[test]
fn child_entry() {
    child_main(|role| match role {
        "claimer" => claimer(),
        other => panic!("unknown role {other}"),
    })
}

/// Claims ready tasks, picked at random among those this host sees ready (so the
/// hosts' workers collide), until none has been ready for a second; reports what it
/// got and, by kind, the claims refused.
fn claimer() -> Value {
    let seg = Segment::attach(&env_str(SEGMENT_ENV), Access::ReadWrite).expect("attach");
    // A session: when this process exits, its daemon releases what it holds.
    let session = seg.open_session(&env_str("WN_AGENT"), "claimer").expect("open a session");
    let me = session.id();
    let start = env_u64("WN_START_MS");
    while worknode::unix_ms() < start {
        std::thread::sleep(Duration::from_millis(1));
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut idle_since = None;
    let mut claims = Vec::new();
    let mut refused = BTreeMap::<String, u64>::new();
    let mut rng = u64::from(std::process::id()) | 1;
    let mut ready = Vec::new();
    while Instant::now() < deadline {
        seg.ready(&TaskFilter::default(), 64, &mut ready).expect("ready");
        if ready.is_empty() {
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(1) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        idle_since = None;
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let pick = &ready[(rng % ready.len() as u64) as usize];
        match seg.claim(pick.handle(), me, Duration::from_secs(120)) {
            Ok(c) => claims.push(json!([pick.uuid().to_string(), c.epoch])),
            Err(e) => {
                let kind = format!("{e:?}");
                *refused.entry(kind.split([' ', '{', '(']).next().unwrap_or("").to_string()).or_default() += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    // Held until every worker has reported, so a task two workers got would have been
    // held by both at once.
    say(&format!("claims {}", json!({ "claims": claims, "refused": refused })));
    let release = PathBuf::from(env_str("WN_RELEASE_FILE"));
    let until = Instant::now() + Duration::from_secs(60);
    while !release.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    json!({ "released": true })
}

#[test]
fn a_claim_race_across_hosts_gives_each_task_one_holder() {
    const TASKS: usize = 64;
    let nats = Nats::start("bridge-claims");
    let a = Host::start("bridge-claims", "a", &nats);
    let b = Host::start("bridge-claims", "b", &nats);
    let project = a.seg.add(a.seg.root(), &NewNode::new(NodeKind::Project, "work")).unwrap();
    for i in 0..TASKS {
        a.seg.add(project, &task(&format!("t{i}")).status(Status::Ready)).unwrap();
    }
    // Every task shared on both hosts, both bridges answering claims.
    let shared_everywhere = |h: &Host| {
        let mut n = 0;
        h.seg
            .for_each_node(|node| {
                n +=
                    usize::from(node.kind() == Some(NodeKind::Task) && node.record().flags & record_flags::SHARED != 0);
                true
            })
            .unwrap();
        n == TASKS && h.seg.bridge_online()
    };
    wait_until(
        CONVERGE,
        || shared_everywhere(&a) && shared_everywhere(&b),
        || format!("{}\n{}", a.transcript(), b.transcript()),
    );

    let start = worknode::unix_ms() + 500;
    let release = a.guard.data_dir().join("release-claims");
    let mut workers: Vec<Proc> = (0..8)
        .map(|i| {
            let host = if i % 2 == 0 { &a } else { &b };
            let env = [
                ("WN_AGENT", format!("w{i}")),
                ("WN_START_MS", start.to_string()),
                ("WN_RELEASE_FILE", release.display().to_string()),
            ];
            host.guard.spawn_role("claimer", &env)
        })
        .collect();
    let reports: Vec<Value> = workers
        .iter()
        .map(|w| {
            let line = w.wait_for_line(Stream::Stdout, Duration::from_secs(60), |l| l.starts_with("WN-SAY claims "));
            serde_json::from_str(line.trim_start_matches("WN-SAY claims ")).expect("a claims line")
        })
        .collect();
    std::fs::write(&release, b"").expect("release the workers");
    for w in &mut workers {
        w.expect_report(Duration::from_secs(30));
    }

    let mut holders = BTreeMap::<String, Vec<usize>>::new();
    for (i, r) in reports.iter().enumerate() {
        for c in r["claims"].as_array().unwrap() {
            holders.entry(c[0].as_str().unwrap().to_string()).or_default().push(i);
            assert!(c[1].as_u64().unwrap() >= 1, "a confirmed claim has an epoch");
        }
    }
    for (i, r) in reports.iter().enumerate() {
        // The split between the hosts, for the log: not asserted (the machine decides).
        eprintln!(
            "worker {i} on host {}: {} claims, refused {}",
            i % 2,
            r["claims"].as_array().map_or(0, Vec::len),
            r["refused"]
        );
    }
    let doubles: Vec<_> = holders.iter().filter(|(_, w)| w.len() > 1).collect();
    assert!(doubles.is_empty(), "tasks held twice: {doubles:?}\nreports: {reports:#?}");
    assert_eq!(holders.len(), TASKS, "every task was claimed once: {reports:#?}");
    // The workers exited: the daemons release their claims, the bridges free the
    // register's entries, and a task an agent of A held is claimable on B.
    let all_ready = |h: &Host| {
        let mut ready = 0;
        h.seg
            .for_each_node(|n| {
                ready += usize::from(n.kind() == Some(NodeKind::Task) && n.status() == Some(Status::Ready));
                true
            })
            .unwrap();
        ready == TASKS
    };
    wait_until(CONVERGE, || all_ready(&a) && all_ready(&b), || format!("{:#?}\n{:#?}", a.board(), b.board()));
    // A task a worker of one host held, claimed on the other.
    let (held, by) = holders.iter().next().map(|(u, w)| (Uuid::parse_str(u).unwrap(), w[0])).unwrap();
    let other = if by % 2 == 0 { &b } else { &a };
    let me = other.seg.join("after", "w").unwrap();
    let task_on_other = other.seg.lookup(held).unwrap();
    let got = std::cell::RefCell::new(Err(TaskError::NothingReady));
    wait_until(
        CONVERGE,
        || {
            *got.borrow_mut() = other.seg.claim(task_on_other, me, Duration::from_secs(30));
            got.borrow().is_ok()
        },
        || format!("{:?}\n{}", got.borrow(), other.transcript()),
    );
    assert!(got.into_inner().unwrap().epoch >= 2, "the epoch grows across hosts");
}

#[test]
fn a_host_cut_off_claims_its_local_tasks_but_no_shared_one() {
    let mut nats = Nats::start("bridge-offline");
    let a = Host::start("bridge-offline", "a", &nats);
    let b = Host::start("bridge-offline", "b", &nats);
    a.seg.add(a.seg.root(), &task("shared").status(Status::Ready)).unwrap();
    wait_until(CONVERGE, || b.has("/shared") && b.seg.bridge_online(), || b.transcript());
    let shared = b.find("/shared");
    wait_until(
        CONVERGE,
        || b.seg.read(shared).is_ok_and(|n| n.record().flags & record_flags::SHARED != 0),
        || b.transcript(),
    );

    nats.stop();
    wait_until(CONVERGE, || !b.seg.bridge_online(), || b.transcript());
    let me = b.seg.join("offline-worker", "w").unwrap();
    assert_eq!(b.seg.claim(shared, me, Duration::from_secs(30)).unwrap_err(), TaskError::Offline);
    let local = b.seg.add(b.seg.root(), &task("local").status(Status::Ready)).unwrap();
    let c = b.seg.claim(local, me, Duration::from_secs(30)).expect("a task never shared is claimable offline");
    assert_eq!(c.epoch, 1);

    // Back online: the local claim is registered when the task is shared, and A
    // cannot take it.
    nats.restart();
    wait_until(CONVERGE, || a.has("/local") && a.seg.bridge_online() && b.seg.bridge_online(), || a.transcript());
    let on_a = a.find("/local");
    wait_until(
        CONVERGE,
        || a.seg.read(on_a).is_ok_and(|n| n.record().flags & record_flags::SHARED != 0),
        || a.transcript(),
    );
    let rival = a.seg.join("rival", "w").unwrap();
    let got = a.seg.claim(on_a, rival, Duration::from_secs(30));
    assert!(
        matches!(got, Err(TaskError::HeldElsewhere | TaskError::IllegalTransition { .. })),
        "A took B's task: {got:?}"
    );
}
