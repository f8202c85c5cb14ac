//! `wn doctor` on a healthy segment, and on segments with real problems: a daemon gone
//! (so a lapsed lease is never reaped and a dead producer's event slot stays in flight),
//! and a node lock held by a process that no longer exists. `--repair` fixes them.

mod common;

use common::Daemon;
use serde_json::Value;
use std::time::Duration;
use worknode::layout::{hdr, slot};
use worknode::{Access, Capacities, OwnerTag, Segment};
use worknode_tests::raw;

fn finding<'a>(report: &'a Value, check: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check)
        .unwrap_or_else(|| panic!("no check {check}: {report}"))
}

/// Counts the error findings of a report, asserting each is the daemon being gone.
fn only_the_daemon_is_missing(report: &Value) -> usize {
    let mut n = 0;
    for c in report["checks"].as_array().unwrap() {
        for f in c["findings"].as_array().unwrap() {
            if f["severity"] == "error" {
                assert_eq!(f["class"], "daemon_gone", "{f}");
                n += 1;
            }
        }
    }
    n
}

#[test]
fn a_healthy_segment_exits_0() {
    let d = Daemon::start("doctor-healthy");
    d.run(&["add", "task", "a"]).ok();
    d.run_as("x", &["claim", "/a"]).ok();
    d.run_stdin(&["doc", "put", "/a", "notes", "-"], b"text").ok();
    let out = d.run(&["doctor"]);
    out.ok();
    assert!(out.stdout.contains("healthy") && out.stdout.contains("free list"), "{out:?}");
    let j = d.json(&["doctor"]);
    assert_eq!(j["healthy"], true);
    assert_eq!(j["errors"], 0);
    let names: Vec<&str> = j["checks"].as_array().unwrap().iter().map(|c| c["check"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["header", "locks", "slots", "ring", "leases", "sessions", "free list", "index", "tree", "blobs", "contents"]
    );
    assert!(j["checks"].as_array().unwrap().iter().all(|c| c["ok"] == true), "{j}");
}

#[test]
fn unreaped_leases_and_stuck_events_after_the_daemon_died_are_found_and_repaired() {
    // Without a journal, changes go on after the daemon died (with one they are refused:
    // see the durability fault tests), so a lease can be left for nobody to reap.
    let caps = Capacities { nodes: 256, events: 4096, agents: 16, blob_chunks: 16, ..Capacities::default() };
    let mut d = Daemon::start_args("doctor-dead-daemon", caps, &["--fsync", "off"]);
    d.run(&["add", "task", "a"]).ok();
    d.kill_daemon();
    // Nobody reaps this lease now.
    d.run_as("x", &["claim", "/a", "--lease", "100ms"]).ok();
    // A producer that claimed a sequence and died before locking its slot.
    let path = worknode::shm_path(d.name());
    let tail = raw::read_u64(&path, hdr::RING_TAIL as u64);
    raw::write_u64(&path, hdr::RING_TAIL as u64, tail + 1);
    std::thread::sleep(Duration::from_millis(2_300)); // past the lease and doctor's grace

    let out = d.run(&["--json", "doctor"]);
    out.fails(1);
    assert_eq!(out.err_json()["code"], "unhealthy");
    let report = out.json();
    assert_eq!(report["healthy"], false);
    let header = finding(&report, "header");
    assert_eq!(header["ok"], false, "a dead daemon is an error: {header}");
    assert!(header["findings"][0]["message"].as_str().unwrap().contains("not running"), "{header}");
    assert_eq!(header["findings"][0]["class"], "daemon_gone", "{header}");
    let leases = finding(&report, "leases");
    assert_eq!(leases["ok"], false);
    assert!(leases["findings"][0]["message"].as_str().unwrap().contains("not reaped"), "{leases}");
    assert!(leases["findings"][0]["hint"].as_str().unwrap().contains("--repair"), "{leases}");
    let ring = finding(&report, "ring");
    assert_eq!(ring["ok"], false);
    assert!(ring["findings"][0]["message"].as_str().unwrap().contains(&format!("event {tail}")), "{ring}");
    let human = d.run(&["doctor"]);
    human.fails(1);
    assert!(human.stdout.contains("FAIL") && human.stdout.contains("hint:"), "{human:?}");

    // Everything is repaired but the daemon itself, which is still gone.
    let fixed = d.run(&["--json", "doctor", "--repair"]);
    fixed.fails(1);
    let report = fixed.json();
    assert_eq!(only_the_daemon_is_missing(&report), 1, "{report}");
    let repaired: Vec<&str> = report["repaired"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert!(repaired.iter().any(|r| r.contains("expired claims")), "{repaired:?}");
    assert!(repaired.iter().any(|r| r.contains(&format!("event {tail}"))), "{repaired:?}");
    assert_eq!(d.json(&["show", "/a"])["status"], "ready");
    // Abandoned events are history: a warning, not a failure.
    let after = d.run(&["--json", "doctor"]);
    after.fails(1);
    let after = after.json();
    assert_eq!(only_the_daemon_is_missing(&after), 1, "{after}");
    assert_eq!(finding(&after, "ring")["findings"][0]["severity"], "warning");
}

#[test]
fn a_node_lock_held_by_a_dead_process_is_found_and_taken_over() {
    let d = Daemon::start("doctor-dead-lock");
    let t = d.run(&["add", "task", "locked"]).ok().first_word();
    let seg = Segment::attach(d.name(), Access::ReadOnly).unwrap();
    let h = seg.lookup(t.parse().unwrap()).unwrap();
    // Our pid with a start time that is not ours: a process that no longer exists.
    let ghost = OwnerTag::new(std::process::id(), 1);
    assert!(!ghost.is_alive());
    let lock = raw::slot_offset(&d.caps, h.index) + slot::LOCK as u64;
    raw::write_u64(&worknode::shm_path(d.name()), lock, ghost.0);

    let out = d.run(&["--json", "doctor"]);
    out.fails(1);
    let report = out.json();
    let locks = finding(&report, "locks");
    assert_eq!(locks["ok"], false);
    let msg = locks["findings"][0]["message"].as_str().unwrap();
    assert!(msg.contains("/locked") && msg.contains("gone"), "{msg}");

    let fixed = d.json(&["doctor", "--repair"]);
    assert_eq!(fixed["healthy"], true, "{fixed}");
    assert!(fixed["repaired"][0].as_str().unwrap().contains("/locked"), "{fixed}");
    assert_eq!(raw::read_u64(&worknode::shm_path(d.name()), lock), 0);
    // The node works normally again.
    d.run_as("x", &["claim", &t]).ok();
}
