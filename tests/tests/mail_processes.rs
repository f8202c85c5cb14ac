//! Mail across real processes: an agent holding a session and unread mail is
//! SIGKILLed; the daemon reaps it (session EOF, `agent_lost`), its mailbox and mail are
//! kept, and a new process joining under its name reads the mail and acknowledges it.
//! Also: mail through the broker, and a send cut short by SIGKILL.

use serde_json::{json, Value};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};
use worknode::{Access, EventKind, Principal, Segment};
use worknode_tests::{child_main, env_str, ring_events, say, SegmentGuard, Stream, READY_TIMEOUT, SEGMENT_ENV};

/// The parent's bound on a child's progress.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

const DAEMON_ARGS: [&str; 10] =
    ["--nodes", "256", "--events", "4096", "--agents", "8", "--blob-chunks", "64", "--sets", "1"];

#[test]
fn child_entry() {
    child_main(|role| match role {
        "holder" => holder(),
        "rejoiner" => rejoiner(),
        "cut_sender" => cut_sender(),
        other => panic!("unknown role {other}"),
    })
}

/// Opens a session as `inboxer`, checks it has unread mail (without acknowledging it),
/// announces that, and blocks until killed.
fn holder() -> Value {
    let seg = Segment::attach(&env_str(SEGMENT_ENV), Access::ReadWrite).expect("attach");
    let session = seg.open_session("inboxer", "worker").expect("open_session");
    assert!(session.watched_by_daemon(), "the daemon does not watch the session");
    // It also holds files (issue 13: reservations are freed when it dies, mail kept).
    seg.reserve(session.id(), &["src/**"], &worknode::ReserveOptions::default()).expect("reserve");
    say("joined");
    // The parent sends the second message now; reading never acknowledges.
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut mail = Vec::new();
    loop {
        seg.inbox(session.id(), false, &mut mail).expect("inbox");
        if mail.len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the second message never came: {mail:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
    say("read");
    std::thread::sleep(Duration::from_secs(120));
    json!({})
}

/// Joins as `inboxer` again, reads every message, acknowledges them and reports.
fn rejoiner() -> Value {
    let seg = Segment::attach(&env_str(SEGMENT_ENV), Access::ReadWrite).expect("attach");
    let session = seg.open_session("inboxer", "worker").expect("open_session");
    seg.wait_for_mail(session.id(), Duration::ZERO).expect("unread mail is there at once");
    let mut mail = Vec::new();
    seg.inbox(session.id(), false, &mut mail).expect("inbox");
    let mut bodies = Vec::new();
    for m in &mail {
        bodies.push(String::from_utf8(seg.read_message(m.handle).expect("read").body).expect("UTF-8"));
        seg.ack(session.id(), m.handle).expect("ack");
    }
    seg.inbox(session.id(), false, &mut mail).expect("inbox");
    assert!(mail.is_empty(), "all acknowledged");
    session.leave().expect("leave");
    json!({ "bodies": bodies })
}

fn wait_session_listener(name: &str) {
    let seg = Segment::attach(name, Access::ReadOnly).expect("attach to read the boot id");
    let addr = worknode::session_socket_addr(name, seg.inspect().info().boot_id).unwrap();
    let deadline = Instant::now() + READY_TIMEOUT;
    while let Err(e) = UnixStream::connect_addr(&addr) {
        assert!(Instant::now() < deadline, "the daemon never listened for sessions: {e}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_sigkilled_agent_keeps_its_unread_mail_and_reads_it_when_it_rejoins_and_its_reservations_are_freed() {
    let g = SegmentGuard::new("mail-kill");
    let mut daemon = g.spawn_daemon(&DAEMON_ARGS);
    daemon.wait_for_line(Stream::Stdout, READY_TIMEOUT, |l| l.contains("ready"));
    wait_session_listener(g.name());
    let seg = Segment::attach(g.name(), Access::ReadWrite).unwrap();
    let lead = seg.join("lead", "").unwrap();
    let inboxer = Principal::parse("inboxer").unwrap();
    // Sent before it ever joined: held in its mailbox.
    seg.send(lead, &inboxer, Some("t"), b"first").unwrap();

    let mut holder = g.spawn_role("holder", &[]);
    // The second arrives while it holds its session.
    holder.wait_for_say("joined", STEP_TIMEOUT);
    let id = seg.find_agent("inboxer").expect("the holder joined");
    seg.send(lead, &inboxer, None, b"second").unwrap();
    holder.wait_for_say("read", STEP_TIMEOUT);
    assert_eq!(seg.agent(id).unwrap().session_pid, Some(holder.pid()));

    holder.signal(nix::sys::signal::Signal::SIGKILL);
    let status = holder.wait_exit(Duration::from_secs(10));
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL\n{}", holder.transcript());
    let deadline = Instant::now() + STEP_TIMEOUT;
    while seg.find_agent("inboxer").is_some() {
        assert!(Instant::now() < deadline, "the daemon did not reap the killed agent\n{}", daemon.transcript());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(ring_events(&seg).iter().any(|e| e.kind() == EventKind::AGENT_LOST), "agent_lost was emitted");
    let mailbox = seg.mailbox(&inboxer).unwrap().expect("the mailbox outlives the agent");
    assert_eq!(seg.child_count(mailbox).unwrap(), 2, "both messages kept");
    // Its reservation died with it: another agent may take the files.
    let mut held = Vec::new();
    seg.reservations(&mut held);
    assert!(held.iter().all(|r| !r.live), "a dead agent's reservation is still live: {held:?}");
    seg.reserve(lead, &["src/main.rs"], &worknode::ReserveOptions::default()).expect("the files are free");

    let report = g.spawn_role("rejoiner", &[]).expect_report(STEP_TIMEOUT);
    assert_eq!(report["bodies"], json!(["first", "second"]), "{report}");

    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "daemon exit {status}\n{}", daemon.transcript());
}

/// A token for `agent` with `rights`, minted with the real `wn`.
fn mint(g: &SegmentGuard, agent: &str, rights: &str) -> String {
    let out = std::process::Command::new(worknode_tests::wn_bin())
        .args(["token", "mint", "--agent", agent, "--rights", rights])
        .env(worknode::SEGMENT_ENV, g.name())
        .env("WORKNODE_DATA_DIR", g.data_dir())
        .env_remove("WORKNODE_TOKEN")
        .env_remove("WORKNODE_AGENT")
        .output()
        .expect("run wn");
    assert!(out.status.success(), "mint: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Through the broker (a read-only mapping, every change a request): the daemon sends
/// as the token's agent and refuses another sender, acks, and a brokered waiter is woken.
#[test]
fn brokered_mail_names_the_tokens_agent_and_cannot_forge_a_sender() {
    let g = SegmentGuard::new("mail-broker");
    let mut daemon = g.spawn_daemon(&DAEMON_ARGS);
    daemon.wait_for_line(Stream::Stdout, READY_TIMEOUT, |l| l.contains("ready"));
    let direct = Segment::attach(g.name(), Access::ReadWrite).unwrap();
    let lead = direct.join("lead", "").unwrap();
    let token = mint(&g, "sandbox", "read,message");
    let b = Segment::attach_brokered(g.name(), &token, "worker").expect("brokered attach");
    assert!(b.is_brokered());
    let me = b.find_agent("sandbox").expect("the broker joined the token's agent");
    let lead_p = Principal::parse("lead").unwrap();

    let h = b.send(me, &lead_p, Some("x"), b"from the sandbox").unwrap();
    assert_eq!(direct.read_message(h).unwrap().info.from, "sandbox");
    // Naming another agent as the sender is refused by the daemon, nothing sent.
    let forged = b.send(lead, &lead_p, None, b"forged");
    assert_eq!(forged, Err(worknode::MailError::Pool(worknode::PoolError::Denied(worknode::Denied::OtherAgent))));
    let mut mail = Vec::new();
    direct.inbox(lead, false, &mut mail).unwrap();
    assert_eq!(mail.len(), 1);
    let event = ring_events(&direct).into_iter().rev().find(|e| e.kind() == EventKind::MESSAGE_SENT).unwrap();
    assert_eq!(event.actor(), Some(b.agent(me).unwrap().node), "the event's actor is the token's agent");

    // A brokered waiter (read-only mapping) is woken by a send, then acks through the broker.
    std::thread::scope(|s| {
        let waiter = s.spawn(|| b.wait_for_mail(me, STEP_TIMEOUT));
        direct.send(lead, &Principal::parse("sandbox").unwrap(), None, b"reply").unwrap();
        assert_eq!(waiter.join().unwrap(), Ok(()));
    });
    b.inbox(me, false, &mut mail).unwrap();
    assert_eq!(mail.len(), 1);
    b.ack(me, mail[0].handle).unwrap();
    assert_eq!(b.ack(me, mail[0].handle), Err(worknode::MailError::AlreadyAcked));
    assert_eq!(b.ack(me, h), Err(worknode::MailError::NotYours));
    drop(b);

    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "daemon exit {status}\n{}", daemon.transcript());
}

/// Sends one message to `held`; run with a fail-point armed, it stops (and is killed)
/// in the middle.
fn cut_sender() -> Value {
    let seg = Segment::attach(&env_str(SEGMENT_ENV), Access::ReadWrite).expect("attach");
    let me = seg.join("cut", "").expect("join");
    let got = seg.send(me, &Principal::parse("held").unwrap(), None, &[7u8; 10_000]);
    panic!("the send returned {got:?} instead of stopping at its fail-point: is feature `failpoints` on?")
}

/// A sender SIGKILLed between the message's node and its body: the half message is
/// never listed, the daemon's reclaim sweep frees the body's chunks, and the mailbox
/// still takes mail.
#[test]
fn a_send_cut_short_by_sigkill_leaves_no_readable_half_message() {
    let g = SegmentGuard::new("mail-cut");
    let mut daemon = g.spawn_daemon(&DAEMON_ARGS);
    daemon.wait_for_line(Stream::Stdout, READY_TIMEOUT, |l| l.contains("ready"));
    let seg = Segment::attach(g.name(), Access::ReadWrite).unwrap();
    let free = seg.free_blob_chunks().unwrap();
    let env = [(worknode::failpoint::FAILPOINT_ENV, "mail.added".to_string())];
    let mut cut = g.spawn_role("cut_sender", &env);
    cut.wait_for_line(Stream::Stderr, STEP_TIMEOUT, |l| l.contains("failpoint mail.added reached"));
    cut.signal(nix::sys::signal::Signal::SIGKILL);
    cut.wait_exit(Duration::from_secs(10));

    let held = Principal::parse("held").unwrap();
    let mailbox = seg.mailbox(&held).unwrap().expect("registered before the cut");
    assert_eq!(seg.child_count(mailbox).unwrap(), 1, "the half message's node is there");
    let reader = seg.join("held", "").unwrap();
    let mut mail = Vec::new();
    seg.inbox(reader, true, &mut mail).unwrap();
    assert!(mail.is_empty(), "a pending message is never listed: {mail:?}");
    let deadline = Instant::now() + STEP_TIMEOUT;
    while seg.free_blob_chunks().unwrap() != free {
        assert!(Instant::now() < deadline, "the dead sender's chunks were not reclaimed\n{}", daemon.transcript());
        std::thread::sleep(Duration::from_millis(10));
    }
    seg.send(reader, &held, None, b"still works").unwrap();
    seg.inbox(reader, false, &mut mail).unwrap();
    assert_eq!(mail.len(), 1);

    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "daemon exit {status}\n{}", daemon.transcript());
}
