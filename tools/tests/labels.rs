//! Labels, `wait` filters and leases kept alive by documents, through the real binary
//! (issue 13, parts 7, 4 and 3): `wn label NODE add|rm`, `ls --label`, labels by name in
//! `show` and the JSON, bad labels refused with nothing changed, labels surviving a host
//! restart; `wait --node/--status/--assignee` and unknown kinds; `doc put` by a claim's
//! holder renewing its lease.

mod common;

use common::Daemon;
use serde_json::Value;
use std::time::{Duration, Instant};
use worknode_tests::Stream;

fn names(v: &Value) -> Vec<String> {
    v["labels"]
        .as_array()
        .unwrap_or_else(|| panic!("no labels in {v}"))
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

fn ls_names(d: &Daemon, args: &[&str]) -> Vec<String> {
    let mut cmd = vec!["ls"];
    cmd.extend_from_slice(args);
    let mut out: Vec<String> =
        d.json(&cmd)["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap().to_string()).collect();
    out.sort();
    out
}

#[test]
fn labels_are_added_listed_selected_removed_and_survive_a_host_restart() {
    let mut d = Daemon::start("labels-cli");
    d.json(&["add", "task", "login"]);
    d.json(&["add", "task", "signup"]);
    d.json(&["add", "task", "docs"]);
    let v = d.json(&["label", "/login", "add", "backend", "prio:high"]);
    assert_eq!(names(&v), ["backend", "prio:high"], "{v}");
    assert_eq!(v["path"], "/login");
    d.json(&["label", "/signup", "add", "backend"]);
    // Adding again changes nothing.
    let again = d.json(&["label", "/signup", "add", "backend"]);
    assert_eq!(names(&again), ["backend"]);

    assert_eq!(ls_names(&d, &["--label", "backend"]), ["login", "signup"]);
    assert_eq!(ls_names(&d, &["--label", "prio:high"]), ["login"]);
    assert!(ls_names(&d, &["--label", "never-used"]).is_empty());
    // The registry: /labels holds one node per label, of kind label.
    let reg = d.json(&["ls", "--kind", "label"]);
    assert_eq!(reg["count"], 2, "{reg}");
    assert_eq!(d.json(&["show", "/labels/backend"])["kind"], "label");
    // Registry nodes are not work.
    d.fails(&["--agent", "w", "claim", "/labels/backend"], 2, "not_a_task");

    let human = d.run(&["show", "/login"]);
    assert!(human.ok().stdout.contains("backend, prio:high"), "{human:?}");
    let human = d.run(&["label", "/docs", "add", "writing"]);
    assert!(human.ok().stdout.contains("labels: writing"), "{human:?}");

    let v = d.json(&["label", "/login", "rm", "prio:high", "not-there"]);
    assert_eq!(names(&v), ["backend"]);
    assert!(ls_names(&d, &["--label", "prio:high"]).is_empty());

    // Bad labels: exit 2, nothing changed (the good label before a bad one included).
    for bad in ["", "has space", "a/b", "@me", "tab\there", &"x".repeat(65)] {
        let err = d.fails(&["label", "/docs", "add", "fine", bad], 2, "invalid_label");
        assert!(err["hint"].as_str().unwrap().contains("1 to 64 bytes"), "{err}");
        d.fails(&["ls", "--label", bad], 2, "invalid_label");
    }
    assert_eq!(names(&d.json(&["show", "/docs"])), ["writing"]);
    assert!(ls_names(&d, &["--label", "fine"]).is_empty());
    d.fails(&["label", "/nope", "add", "x"], 4, "node_not_found");

    d.host_restart(&[]);
    assert_eq!(ls_names(&d, &["--label", "backend"]), ["login", "signup"]);
    assert_eq!(names(&d.json(&["show", "/login"])), ["backend"]);
    assert_eq!(names(&d.json(&["show", "/docs"])), ["writing"]);
    // And labelling goes on after the restart, under the same registry.
    d.json(&["label", "/docs", "add", "backend"]);
    assert_eq!(ls_names(&d, &["--label", "backend"]), ["docs", "login", "signup"]);
    assert_eq!(d.json(&["ls", "--kind", "label"])["count"], 3);
    d.run(&["doctor"]).ok();

    // An export carries the registry and the sets: labels survive an import.
    let export = d.json(&["export"]);
    let file = std::env::temp_dir().join(format!("wn-labels-export-{}.json", std::process::id()));
    std::fs::write(&file, export.to_string()).unwrap();
    let other = Daemon::start("labels-import");
    other.json(&["import", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(ls_names(&other, &["--label", "backend"]), ["docs", "login", "signup"]);
    assert_eq!(names(&other.json(&["show", "/login"])), ["backend"]);
}

/// Spawns `wn --json wait ARGS`, triggers events with `trigger` until the waiter exits
/// (bounded), and returns the event it printed.
fn wait_for(d: &Daemon, args: &[&str], mut trigger: impl FnMut(u32)) -> Value {
    let mut cmd = vec!["--json", "wait", "--timeout", "60s"];
    cmd.extend_from_slice(args);
    let mut w = d.spawn(&cmd, "wn wait");
    let start = Instant::now();
    let mut round = 0;
    let status = loop {
        trigger(round);
        round += 1;
        if let Some(s) = w.try_wait_exit(Duration::from_millis(100)) {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "wait never returned\n{}", w.transcript());
    };
    assert!(status.success(), "{}", w.transcript());
    let line = w.output(Stream::Stdout);
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn wait_filters_by_node_status_and_assignee_and_refuses_unknown_kinds() {
    let d = Daemon::start("labels-wait");
    d.json(&["add", "task", "a"]);
    d.json(&["add", "task", "b"]);
    d.json_as("alice", &["join"]);
    d.json(&["assign", "/b", "alice"]);
    let uuid = |p: &str| d.json(&["show", p])["uuid"].as_str().unwrap().to_string();
    let (a, b) = (uuid("/a"), uuid("/b"));

    // --node: events about /a are skipped by a waiter on /b.
    let e = wait_for(&d, &["--node", "/b", "--kind", "ping"], |i| {
        d.run(&["emit", "ping", "--node", "/a"]).ok();
        if i >= 3 {
            d.run(&["emit", "ping", "--node", "/b"]).ok();
        }
    });
    assert_eq!(e["node"], b.as_str(), "{e}");

    // --status: only once the node is complete (progress events before it do not count).
    // The first rounds give the waiter time to attach (events about /b do not match).
    let e = wait_for(&d, &["--node", "/a", "--status", "complete"], |i| match i {
        0..10 => {
            d.run(&["emit", "ping", "--node", "/b"]).ok();
        }
        10 => {
            d.json_as("w", &["claim", "/a"]);
        }
        11 => {
            d.json_as("w", &["progress", "/a", "50"]);
        }
        12 => {
            d.json_as("w", &["done", "/a"]);
        }
        _ => {}
    });
    assert_eq!(e["node"], a.as_str(), "{e}");
    assert_eq!(e["kind"], "task_completed", "{e}");

    // --assignee: events about /b (assigned to alice) pass, about /a (assigned to no one) do not.
    let e = wait_for(&d, &["--assignee", "alice", "--kind", "user"], |_| {
        d.run(&["emit", "nudge", "--node", "/a"]).ok();
        d.run(&["emit", "nudge", "--node", "/b"]).ok();
    });
    assert_eq!(e["node"], b.as_str(), "{e}");
    assert_eq!(e["topic"], "nudge", "{e}");
    // Combined with --status: /b is ready, so a waiter on --status complete times out.
    let out = d.run(&["wait", "--assignee", "alice", "--status", "complete", "--timeout", "300ms"]);
    out.fails(5);
    d.fails(&["wait", "--assignee", "a/b", "--timeout", "1s"], 2, "invalid_name");
    d.fails(&["wait", "--status", "done", "--timeout", "1s"], 2, "usage");

    // The same filters on `events`.
    let lines = common::run(d.cmd().args(["--json", "events", "--assignee", "alice"]), None).json_lines();
    assert!(!lines.is_empty() && lines.iter().all(|l| l["node"] == b.as_str()), "{lines:?}");
    let lines = common::run(d.cmd().args(["--json", "events", "--node", "/a", "--status", "complete"]), None);
    assert!(lines.json_lines().iter().all(|l| l["node"] == a.as_str()));

    // Unknown kinds: exit 2 naming the built-in kinds; application kinds still pass.
    for bad in ["task_complet", "7", "999", "has space", "x!", "ünï"] {
        let err = d.fails(&["wait", "--kind", bad, "--timeout", "1s"], 2, "usage");
        assert!(err["hint"].as_str().unwrap().contains("task_completed"), "{bad}: {err}");
        d.fails(&["emit", bad], 2, "usage");
        d.fails(&["events", "--kind", bad], 2, "usage");
    }
    for good in ["1000", "4242", "user", "build.done", "ci:green", "deploy-2"] {
        d.run(&["emit", good]).ok();
        d.run(&["wait", "--kind", good, "--timeout", "10ms"]).fails(5);
    }
}

#[test]
fn doc_put_by_the_holder_renews_the_lease() {
    let d = Daemon::start("labels-lease");
    d.json(&["add", "task", "report"]);
    let c = d.json_as("w", &["claim", "/report", "--lease", "1500ms"]);
    let first_until = c["claim"]["lease_until_ms"].as_u64().unwrap();
    // Keep the lease alive only by putting documents under the task, for well past its
    // length; the daemon reaps lapsed leases every 100 ms.
    let start = Instant::now();
    let mut puts = 0;
    while start.elapsed() < Duration::from_millis(4500) {
        let out = common::run(
            d.cmd().args(["--agent", "w", "doc", "put", "/report", &format!("part{}", puts % 2), "-"]),
            Some(format!("part {puts}").as_bytes()),
        );
        out.ok();
        puts += 1;
        std::thread::sleep(Duration::from_millis(400));
    }
    let n = d.json(&["show", "/report"]);
    assert_eq!(n["claim"]["live"], true, "lease kept by {puts} puts: {n}");
    assert_eq!(n["status"], "claimed", "{n}");
    assert!(n["claim"]["lease_until_ms"].as_u64().unwrap() > first_until + 2000, "{n}");
    // The holder can still finish; its epoch never changed.
    assert_eq!(n["epoch"], c["epoch"]);
    d.json_as("w", &["done", "/report"]);

    // Someone else's put does not renew another's lease (nor is it refused).
    d.json(&["reopen", "/report"]);
    let c = d.json_as("w", &["claim", "/report", "--lease", "10m"]);
    let until = c["claim"]["lease_until_ms"].as_u64().unwrap();
    d.run_stdin(&["--agent", "other", "doc", "put", "/report", "note", "-"], b"hi").ok();
    d.run_stdin(&["doc", "put", "/report", "note2", "-"], b"hi").ok();
    assert_eq!(d.json(&["show", "/report"])["claim"]["lease_until_ms"].as_u64().unwrap(), until);
}
