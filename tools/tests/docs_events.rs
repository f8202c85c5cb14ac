//! Documents (`doc put`, `doc get`) and events (`emit`, `events`, `wait`) through the
//! real binary, human and --json, with their error paths.

mod common;

use common::Daemon;
use nix::sys::signal::Signal;
use serde_json::Value;
use std::time::Duration;
use worknode_tests::Stream;

#[test]
fn documents_round_trip_from_a_file_and_from_stdin_and_replace_in_place() {
    let d = Daemon::start("docs-roundtrip");
    d.run(&["add", "task", "schema"]).ok();
    let dir = std::env::temp_dir().join(format!("wn-doc-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("schema.json");
    std::fs::write(&file, br#"{"tables":["users","orders"]}"#).unwrap();

    let out = d.run(&["doc", "put", "/schema", "schema.json", "--file", file.to_str().unwrap()]);
    let words: Vec<&str> = out.ok().stdout.split_whitespace().collect();
    let doc = words[0].to_string();
    assert_eq!(words[1..], ["document", "v2", "29", "bytes", "application/json", "schema.json"], "{out:?}");
    let got = d.run(&["doc", "get", "/schema/schema.json"]);
    assert_eq!(got.ok().stdout_bytes, br#"{"tables":["users","orders"]}"#);

    // Binary content through stdin, explicit type; byte-exact back out.
    let bytes: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    let j = d.run_stdin(&["--json", "doc", "put", "/schema", "blob.bin", "-", "--type", "application/x-test"], &bytes);
    let j = j.ok().json();
    assert_eq!(j["document"]["content_type"], "application/x-test");
    assert_eq!(j["document"]["len"], 10_000);
    assert_eq!(j["path"], "/schema/blob.bin");
    assert_eq!(d.run(&["doc", "get", "/schema/blob.bin"]).ok().stdout_bytes, bytes);
    let meta = d.json(&["doc", "get", "/schema/blob.bin"]);
    assert_eq!(meta["len"], 10_000);
    assert!(meta["hex"].as_str().unwrap().starts_with("000102"), "{meta}");

    // put again: the same node, a new version, new content.
    let again = d.run_stdin(&["doc", "put", "/schema", "schema.json", "-"], b"v2 text\n");
    assert_eq!(again.ok().first_word(), doc);
    let meta = d.json(&["doc", "get", &doc]);
    assert_eq!(meta["text"], "v2 text\n");
    assert_eq!(meta["content_type"], "text/plain");
    assert_eq!(meta["version"], 3);
    assert_eq!(d.json(&["ls", "--kind", "document"])["count"], 2);

    d.fails(&["doc", "get", "/schema"], 2, "not_a_document");
    d.fails(&["doc", "get", "/schema/none"], 4, "node_not_found");
    d.fails(&["doc", "put", "/schema", "x"], 2, "usage"); // no --file and no -
    d.fails(&["doc", "put", "/schema", "x", "--file", "/nonexistent/file"], 4, "file_unreadable");
    d.fails(&["doc", "put", "/nope", "x", "--file", file.to_str().unwrap()], 4, "node_not_found");
    let long_type = "t".repeat(40);
    let out = d.run_stdin(&["--json", "doc", "put", "/schema", "x", "-", "--type", &long_type], b"x");
    out.fails(2);
    assert_eq!(out.err_json()["code"], "invalid_value");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_blob_arena_has_limits_exit_7() {
    let caps =
        worknode::Capacities { nodes: 64, events: 1024, agents: 4, blob_chunks: 4, ..worknode::Capacities::default() };
    let d = Daemon::start_with("docs-full", caps);
    d.run(&["add", "folder", "f"]).ok();
    let max = 4 * caps.blob_chunk_size as usize;
    let out = d.run_stdin(&["--json", "doc", "put", "/f", "huge", "-"], &vec![b'x'; max + 1]);
    out.fails(7);
    assert_eq!(out.err_json()["code"], "document_too_large");
    let three_chunks = vec![b'y'; 2 * caps.blob_chunk_size as usize + 1];
    d.run_stdin(&["doc", "put", "/f", "a", "-"], &three_chunks).ok();
    let out = d.run_stdin(&["--json", "doc", "put", "/f", "b", "-"], &three_chunks);
    out.fails(7);
    assert_eq!(out.err_json()["code"], "blob_arena_full");
    // Nothing half-made was left behind.
    assert_eq!(d.json(&["ls", "--under", "/f", "--kind", "document"])["count"], 1);
}

#[test]
fn emit_events_and_filters() {
    let d = Daemon::start("events-emit");
    d.run(&["add", "project", "web app"]).ok();
    let out = d.run_as("bot", &["emit", "build_done", "--node", "/web app", "--data", r#"{"ok":true}"#]);
    let seq: u64 = out.ok().stdout.trim().parse().expect("emit prints the sequence number");
    let j = d.json(&["emit", "deploy", "--data", "plain text"]);
    assert_eq!(j["seq"], seq + 1);

    let all = d.run(&["--json", "events"]).ok().json_lines();
    let built = all.iter().find(|e| e["topic"] == "build_done").expect("the emitted event");
    assert_eq!(built["kind"], "user");
    assert_eq!(built["payload"]["ok"], true);
    assert_eq!(built["node_name"], "web app");
    assert_eq!(built["actor"]["name"], "bot");

    let by_kind = d.run(&["--json", "events", "--kind", "build_done"]).ok().json_lines();
    assert_eq!(by_kind.len(), 1);
    let by_topic = d.run(&["--json", "events", "--kind", "user", "--topic", "deploy"]).ok().json_lines();
    assert_eq!(by_topic.len(), 1);
    assert_eq!(by_topic[0]["payload"], "plain text");
    let by_node = d.run(&["--json", "events", "--node", "/web app"]).ok().json_lines();
    assert!(by_node.iter().all(|e| e["node_name"] == "web app") && by_node.len() >= 2);
    let by_actor = d.run(&["--json", "events", "--actor", "bot"]).ok().json_lines();
    assert!(by_actor.iter().any(|e| e["topic"] == "build_done"));
    let limited = d.run(&["--json", "events", "--limit", "2"]).ok().json_lines();
    assert_eq!(limited.len(), 2);
    let since = d.run(&["--json", "events", "--since", &seq.to_string()]).ok().json_lines();
    assert_eq!(since[0]["seq"], seq);

    let human = d.run(&["events", "--kind", "build_done"]);
    assert!(human.ok().stdout.contains("user:build_done") && human.stdout.contains("\"web app\""), "{human:?}");
    assert!(human.stdout.contains("by bot") && human.stdout.contains(r#"{"ok":true}"#), "{human:?}");

    d.fails(&["emit", "x", "--data", &"p".repeat(89)], 2, "too_large");
    d.fails(&["emit", &"t".repeat(25)], 2, "too_large");
    d.fails(&["emit", "x", "--node", "/nope"], 4, "node_not_found");
    d.fails(&["events", "--actor", "nobody"], 4, "agent_not_found");
    d.fails(&["events", "--kind", "build_done", "--topic", "other"], 2, "usage");
}

#[test]
fn wait_returns_the_first_matching_event_after_now_or_exits_5() {
    let d = Daemon::start("events-wait");
    d.run(&["add", "task", "t"]).ok();
    // An event from before the wait does not count.
    d.run(&["emit", "ping"]).ok();
    let out = d.run(&["wait", "--kind", "ping", "--timeout", "200ms"]);
    out.fails(5);
    assert!(out.stderr.contains("no matching event within 200ms"), "{out:?}");
    let err = d.fails(&["wait", "--kind", "ping", "--timeout", "100ms"], 5, "timeout");
    assert!(err["hint"].as_str().unwrap().contains("--timeout"));

    // A waiter in the background sees the next one.
    let mut w = d.spawn(&["--json", "wait", "--kind", "ping", "--node", "/t", "--timeout", "60s"], "wn wait");
    // Give the waiter time to attach, then emit until it has seen one (bounded).
    let mut seen = None;
    for _ in 0..200 {
        d.run(&["emit", "ping", "--node", "/t", "--data", "hello"]).ok();
        if let Some(status) = w.try_wait_exit(Duration::from_millis(50)) {
            seen = Some(status);
            break;
        }
    }
    let status = seen.unwrap_or_else(|| panic!("wait never returned\n{}", w.transcript()));
    assert!(status.success(), "{}", w.transcript());
    let line = w.output(Stream::Stdout);
    let e: Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(e["topic"], "ping");
    assert_eq!(e["payload"], "hello");
    assert_eq!(e["node_name"], "t");

    // --since reaches back to a given sequence.
    let seq = d.json(&["emit", "pong"])["seq"].as_u64().unwrap();
    let got = d.json(&["wait", "--kind", "pong", "--since", &seq.to_string(), "--timeout", "5s"]);
    assert_eq!(got["seq"], seq);
    let human = d.run(&["wait", "--kind", "pong", "--since", &seq.to_string(), "--timeout", "5s"]);
    assert!(human.ok().stdout.contains("user:pong"), "{human:?}");
    d.fails(&["wait", "--timeout", "soon"], 2, "usage");
}

#[test]
fn events_follow_streams_json_lines_and_ends_on_timeout_or_sigint() {
    let d = Daemon::start("events-follow");
    let mut f = d.spawn(&["--json", "events", "--follow", "--kind", "tick"], "wn events --follow");
    // The follower starts at "now": emit until it reports one (bounded), then a few more.
    let mut first = None;
    for _ in 0..200 {
        d.run(&["emit", "tick"]).ok();
        let lines = f.output(Stream::Stdout);
        if let Some(l) = lines.lines().next() {
            first = Some(l.to_string());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let first: Value = serde_json::from_str(&first.expect("the follower printed an event")).unwrap();
    assert_eq!(first["topic"], "tick");
    let next = first["seq"].as_u64().unwrap() + 1;
    d.run(&["emit", "tick"]).ok();
    f.wait_for_line(Stream::Stdout, Duration::from_secs(20), |l| l.contains(&format!("\"seq\":{next}")));
    f.signal(Signal::SIGINT);
    let status = f.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "SIGINT ends --follow with exit 0\n{}", f.transcript());
    for l in f.output(Stream::Stdout).lines() {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON: {e}: {l}"));
    }

    // --timeout ends following with exit 0.
    let out = d.run(&["events", "--follow", "--timeout", "300ms"]);
    out.ok();
    d.fails(&["events", "--timeout", "1s"], 2, "usage"); // only with --follow
}
