//! Messages between agents through the real binary: `wn send` and `wn inbox` against a
//! real daemon — round trip, held mail, role mail, a blocked `inbox --wait` woken by a
//! send, a full mailbox, bad input, and mail kept across a host restart.

mod common;

use common::{wait_until, Daemon};
use serde_json::Value;
use std::time::Duration;
use worknode::Capacities;

const WAIT: Duration = Duration::from_secs(60);

/// A daemon whose blob arena holds several bodies of [`worknode::MESSAGE_MAX`] bytes.
fn start(test: &str) -> Daemon {
    Daemon::start_with(
        test,
        Capacities { nodes: 256, events: 4096, agents: 16, blob_chunks: 64, ..Capacities::default() },
    )
}

fn ids(inbox: &Value) -> Vec<String> {
    inbox["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn send_inbox_ack_round_trip_and_held_mail() {
    let d = start("mail-round-trip");
    // The reader has not joined: its mail is held in its mailbox.
    let sent = d.json_as("writer", &["send", "--to", "reader", "--thread", "review-7", "please review"]);
    assert_eq!((sent["from"].as_str(), sent["to"].as_str()), (Some("writer"), Some("reader")), "{sent}");
    assert_eq!(
        (sent["thread"].as_str(), sent["bytes"].as_u64(), sent["acked"].as_bool()),
        (Some("review-7"), Some(13), Some(false))
    );
    let second = d.json_as("writer", &["send", "--to", "reader", "second"]);
    assert!(d.json(&["agents"]).to_string().contains("writer"));

    let inbox = d.json_as("reader", &["inbox"]);
    assert_eq!(ids(&inbox), [sent["id"].as_str().unwrap(), second["id"].as_str().unwrap()], "oldest first: {inbox}");
    assert_eq!(inbox["messages"][0]["text"], "please review");
    assert_eq!(inbox["messages"][1]["thread"], Value::Null);
    // Reading acknowledged nothing.
    assert_eq!(d.json_as("reader", &["inbox"])["count"], 2);
    let human = d.run_as("reader", &["inbox"]);
    let text = &human.ok().stdout;
    assert!(
        text.contains("from writer") && text.contains("thread review-7") && text.contains("    please review"),
        "{text}"
    );

    let id = sent["id"].as_str().unwrap();
    let acked = d.json_as("reader", &["inbox", "--ack", id]);
    assert_eq!(acked["acked"], serde_json::json!([id]), "{acked}");
    assert_eq!(ids(&d.json_as("reader", &["inbox"])), [second["id"].as_str().unwrap()]);
    // The same id given twice is one ack.
    let third = d.json_as("writer", &["send", "--to", "reader", "third"]);
    let t = third["id"].as_str().unwrap();
    assert_eq!(d.json_as("reader", &["inbox", "--ack", t, "--ack", t])["acked"], serde_json::json!([t]));
    let all = d.json_as("reader", &["inbox", "--all"]);
    assert_eq!(all["count"], 3);
    assert_eq!(all["messages"][0]["acked"], true);

    // Acking twice: exit 3, nothing changed (nothing else acked, nothing printed).
    let e = d.fails(&["--agent", "reader", "inbox", "--ack", id], 3, "already_acked");
    assert!(e["hint"].as_str().unwrap().contains("wn inbox --all"), "{e}");
    let e = d.fails(
        &["--agent", "reader", "inbox", "--ack", second["id"].as_str().unwrap(), "--ack", id],
        3,
        "already_acked",
    );
    assert!(e["error"].as_str().unwrap().contains(id), "{e}");
    assert_eq!(d.json_as("reader", &["inbox"])["count"], 1, "the good --ack beside a bad one was not made");
    // Someone else's message: exit 3; an unknown id: exit 4.
    d.fails(&["--agent", "writer", "inbox", "--ack", second["id"].as_str().unwrap()], 3, "not_yours");
    d.fails(&["--agent", "reader", "inbox", "--ack", "0123456789ab"], 4, "message_not_found");
    assert_eq!(d.json_as("reader", &["inbox", "--ack-all"])["acked"].as_array().unwrap().len(), 1);
    assert!(d.run_as("reader", &["inbox"]).ok().stdout.contains("no unread mail for reader"));

    // The message_sent events name the sender.
    let events = d.run(&["--json", "events"]).ok().json_lines();
    let sends: Vec<&Value> = events.iter().filter(|e| e["kind"] == "message_sent").collect();
    assert_eq!(sends.len(), 3, "{events:?}");
    assert!(sends.iter().all(|e| e["actor"]["name"] == "writer"), "{sends:?}");
}

#[test]
fn bad_input_is_refused_and_creates_nothing() {
    let d = start("mail-bad-input");
    d.run_as("writer", &["join"]).ok();
    let nodes = |d: &Daemon| d.json(&["dump"])["counters"].clone();
    let before = nodes(&d);
    let e = d.fails(&["--agent", "writer", "send", "--to", "a/b", "hi"], 2, "invalid_name");
    assert!(e["hint"].as_str().unwrap().contains("@tester"), "{e}");
    d.fails(&["--agent", "writer", "send", "--to", "@", "hi"], 2, "invalid_name");
    let big = vec![b'x'; worknode::MESSAGE_MAX + 1];
    let out = d.run_stdin(&["--agent", "writer", "send", "--to", "reader", "-"], &big);
    out.fails(2);
    assert!(out.stderr.contains("65536"), "{out:?}");
    let long = "x".repeat(worknode::MESSAGE_MAX + 1);
    d.fails(&["--agent", "writer", "send", "--to", "reader", &long], 2, "message_too_large");
    d.fails(&["--agent", "writer", "send", "--to", "reader", "--thread", &"t".repeat(65), "hi"], 2, "invalid_value");
    d.fails(&["send", "--to", "reader", "hi"], 2, "agent_required");
    assert_eq!(nodes(&d), before, "no mailbox, no message");
    // Exactly the limit is fine.
    let max = vec![b'y'; worknode::MESSAGE_MAX];
    d.run_stdin(&["--agent", "writer", "send", "--to", "reader", "-"], &max).ok();
    let inbox = d.json_as("reader", &["inbox"]);
    assert_eq!(inbox["messages"][0]["bytes"], worknode::MESSAGE_MAX);
    assert_eq!(inbox["messages"][0]["text"].as_str().map(str::len), Some(worknode::MESSAGE_MAX));
}

#[test]
fn role_mail_is_seen_by_every_member_and_the_first_ack_takes_it() {
    let d = start("mail-role");
    for a in ["t1", "t2"] {
        d.run(&["--agent", a, "--role", "tester", "join"]).ok();
    }
    let sent = d.json_as("lead", &["send", "--to", "@tester", "run the suite"]);
    let id = sent["id"].as_str().unwrap();
    assert_eq!(sent["to"], "@tester");
    for a in ["t1", "t2"] {
        let inbox = d.json_as(a, &["inbox"]);
        assert_eq!((ids(&inbox), inbox["messages"][0]["to"].as_str()), (vec![id.to_string()], Some("@tester")), "{a}");
    }
    assert_eq!(d.json_as("lead", &["inbox"])["count"], 0, "not the lead's role");
    d.json_as("t1", &["inbox", "--ack", id]);
    assert_eq!(d.json_as("t2", &["inbox"])["count"], 0, "acked for the whole role");
    d.fails(&["--agent", "t2", "inbox", "--ack", id], 3, "already_acked");
}

#[test]
fn a_blocked_inbox_wait_is_woken_by_a_send() {
    let d = start("mail-wait");
    d.run_as("reader", &["join"]).ok();
    let waiters = |d: &Daemon| d.json(&["dump"])["ring"]["waiters"].as_u64().unwrap();
    let before = waiters(&d);
    let mut child = d.spawn(&["--json", "--agent", "reader", "inbox", "--wait", "2m"], "inbox --wait");
    // Parked on the ring's futex (or, should the count move for another reason, at
    // least started): a send now must wake it.
    wait_until("the waiter to park", WAIT, || (waiters(&d) > before).then_some(()));
    assert!(child.try_wait_exit(Duration::ZERO).is_none(), "no mail yet: {}", child.transcript());
    d.run_as("writer", &["send", "--to", "reader", "wake up"]).ok();
    let status = child.wait_exit(WAIT);
    assert!(status.success(), "{}", child.transcript());
    let out: Value = serde_json::from_str(child.output(worknode_tests::Stream::Stdout).trim()).unwrap();
    assert_eq!(out["messages"][0]["text"], "wake up", "{out}");
    // Nothing new: exit 5.
    d.json_as("reader", &["inbox", "--ack-all"]);
    d.fails(&["--agent", "reader", "inbox", "--wait", "10ms"], 5, "timeout");
}

#[test]
fn a_full_mailbox_is_an_error_to_the_sender_and_acked_mail_makes_room() {
    let caps = Capacities { nodes: 64, events: 4096, agents: 8, blob_chunks: 16, ..Capacities::default() };
    let d = Daemon::start_with("mail-full", caps);
    let capacity = (caps.nodes / 8) as usize; // 8
    for i in 0..capacity {
        d.run_as("writer", &["send", "--to", "reader", &format!("m{i}")]).ok();
    }
    let e = d.fails(&["--agent", "writer", "send", "--to", "reader", "one too many"], 7, "mailbox_full");
    assert!(e["hint"].as_str().unwrap().contains("--ack-all"), "{e}");
    let inbox = d.json_as("reader", &["inbox"]);
    assert_eq!(inbox["count"], capacity, "nothing dropped, nothing added: {inbox}");
    let first = ids(&inbox)[0].clone();
    d.json_as("reader", &["inbox", "--ack", &first]);
    d.run_as("writer", &["send", "--to", "reader", "now it fits"]).ok();
    let all = d.json_as("reader", &["inbox", "--all"]);
    assert_eq!(all["count"], capacity, "the acked message was purged to make room: {all}");
    assert!(!ids(&all).contains(&first));
}

#[test]
fn mail_survives_a_host_restart() {
    // `always`: a send returns once it is on disk, so the kill cannot beat the journal
    // (under the default `batch`, the last ~10 ms may be lost, by design).
    let caps = Capacities { nodes: 256, events: 4096, agents: 16, blob_chunks: 64, ..Capacities::default() };
    let mut d = Daemon::start_args("mail-restart", caps, &["--fsync", "always"]);
    let kept = d.json_as("writer", &["send", "--to", "reader", "--thread", "t", "kept across the restart"]);
    let acked = d.json_as("writer", &["send", "--to", "reader", "acked before"]);
    d.json_as("reader", &["inbox", "--ack", acked["id"].as_str().unwrap()]);
    let big: Vec<u8> = (0..worknode::MESSAGE_MAX).map(|i| b'a' + (i % 26) as u8).collect();
    d.run_stdin(&["--agent", "writer", "send", "--to", "@shell", "-"], &big).ok();
    d.host_restart(&["--fsync", "always"]);
    let all = d.json_as("reader", &["inbox", "--all"]);
    assert_eq!(all["count"], 3, "{all}");
    let msgs = all["messages"].as_array().unwrap();
    let by_id = |id: &Value| msgs.iter().find(|m| m["id"] == *id).unwrap_or_else(|| panic!("{id} lost: {all}"));
    assert_eq!(by_id(&kept["id"])["text"], "kept across the restart");
    assert_eq!(
        (by_id(&kept["id"])["thread"].as_str(), by_id(&kept["id"])["acked"].as_bool()),
        (Some("t"), Some(false))
    );
    assert_eq!(by_id(&acked["id"])["acked"], true);
    let role = msgs.iter().find(|m| m["to"] == "@shell").expect("the role's mail");
    assert_eq!(role["text"].as_str().map(str::as_bytes), Some(&big[..]));
}

#[test]
fn under_a_token_the_sender_is_the_tokens_agent_and_the_right_is_message() {
    let d = start("mail-token");
    d.run(&["add", "project", "A"]).ok();
    let mint = |args: &[&str]| {
        let out = d.run(&[&["token", "mint"], args].concat());
        out.ok();
        out.stdout.trim().to_string()
    };
    // A subtree token: mail is a system write allowed under `message` wherever its subtree is.
    let bot = mint(&["--agent", "bot", "--rights", "read,message", "--under", "/A"]);
    let with = |token: &str, args: &[&str]| common::run(d.cmd().args(["--json", "--token", token]).args(args), None);
    let out = with(&bot, &["send", "--to", "reader", "from the bot"]);
    assert_eq!(out.ok().json()["from"], "bot", "{out:?}");
    let inbox = d.json_as("reader", &["inbox"]);
    let id = ids(&inbox)[0].clone();
    assert_eq!(inbox["messages"][0]["from"], "bot");
    // Without `message`: refused, nothing sent, nothing acked.
    let ro = mint(&["--agent", "reader", "--rights", "read"]);
    let out = with(&ro, &["send", "--to", "bot", "hi"]);
    out.fails(6);
    assert_eq!(out.err_json()["code"], "token_lacks_right", "{out:?}");
    let out = with(&ro, &["inbox", "--ack", &id]);
    out.fails(6);
    assert_eq!(d.json_as("reader", &["inbox"])["count"], 1);
    assert_eq!(d.json_as("bot", &["inbox"])["count"], 0);
}
