//! The lifecycle verbs with real `worknoded` and `wn` processes (issue 12): `rm`,
//! `cancel`, `reopen`, `activate`, `edit`; names that cannot be addressed are refused;
//! illegal moves name the legal ones; fencing after a forced cancel or a reopen.

mod common;

use common::Daemon;
use serde_json::Value;

fn status(d: &Daemon, path: &str) -> String {
    d.json(&["show", path])["status"].as_str().unwrap().to_string()
}

#[test]
fn tasks_are_cancelled_reopened_activated_edited_and_removed() {
    let d = Daemon::start("lifecycle");
    d.json(&["add", "project", "P"]);
    d.json(&["add", "task", "pend", "--parent", "/P", "--status", "pending"]);
    d.json(&["add", "task", "dep", "--parent", "/P"]);
    d.json(&["add", "task", "waits", "--parent", "/P", "--blocked-by", "/P/dep"]);

    // pending → ready; activating twice is an illegal move that names the legal ones.
    assert_eq!(d.json(&["activate", "/P/pend"])["status"], "ready");
    let e = d.fails(&["activate", "/P/pend"], 3, "illegal_transition");
    assert!(e["hint"].as_str().unwrap().contains("`wn claim`"), "{e}");

    // A task added with a blocker that is open waits, blocked, and activate refuses it.
    d.json(&["add", "task", "later", "--parent", "/P", "--status", "pending", "--blocked-by", "/P/dep"]);
    assert_eq!(status(&d, "/P/later"), "blocked");

    // Cancel: a held task needs --force, which fences the claimant.
    let claim = d.json_as("w", &["claim", "/P/pend"]);
    let epoch = claim["epoch"].as_u64().unwrap();
    let e = d.fails(&["cancel", "/P/pend"], 3, "already_claimed");
    assert!(e["hint"].as_str().unwrap().contains("--force"), "{e}");
    assert_eq!(d.json(&["cancel", "/P/pend", "--force", "--reason", "scope cut"])["status"], "cancelled");
    let stale =
        common::run(d.cmd().args(["--json", "--agent", "w", "done", "/P/pend", "--epoch", &epoch.to_string()]), None);
    stale.fails(3);
    assert!(["stale_epoch", "not_claimant", "illegal_transition"].contains(&stale.err_json()["code"].as_str().unwrap()));
    d.fails(&["cancel", "/P/pend"], 3, "illegal_transition");

    // Reopen: cancelled, failed and complete tasks are ready again with a new epoch.
    let reopened = d.json(&["reopen", "/P/pend"]);
    assert_eq!(reopened["status"], "ready");
    assert!(reopened["epoch"].as_u64().unwrap() > epoch, "{reopened}");
    d.json_as("w", &["claim", "/P/pend"]);
    d.json_as("w", &["fail", "/P/pend", "--reason", "flaky"]);
    let e = d.fails(&["--agent", "w", "claim", "/P/pend"], 3, "illegal_transition");
    assert!(e["hint"].as_str().unwrap().contains("`wn reopen`"), "{e}");
    d.json(&["reopen", "/P/pend"]);
    d.json_as("w", &["claim", "/P/pend"]);
    d.json_as("w", &["done", "/P/pend"]);
    assert_eq!(d.json(&["reopen", "/P/pend"])["progress"], 0);
    d.fails(&["reopen", "/P/pend"], 3, "illegal_transition");

    // Edit: fields change; bad names are refused and nothing changes.
    let edited =
        d.json(&["edit", "/P/pend", "--name", "renamed", "--priority", "7", "--desc", "new text", "--value", "-2.5"]);
    assert_eq!((edited["name"].as_str(), edited["priority"].as_u64()), (Some("renamed"), Some(7)));
    assert_eq!((edited["description"].as_str(), edited["value"].as_f64()), (Some("new text"), Some(-2.5)));
    for bad in ["a/b", "", "x\u{1b}[2J"] {
        let e = d.fails(&["edit", "/P/renamed", "--name", bad], 2, "invalid_name");
        assert!(!e["hint"].as_str().unwrap().is_empty());
    }
    assert_eq!(d.json(&["show", "/P/renamed"])["name"], "renamed");
    d.fails(&["edit", "/P/renamed"], 2, "usage");

    // Remove: children need --recursive; a held task needs --force; a removed blocker
    // releases its dependents; the root and /agents are refused.
    let e = d.fails(&["rm", "/P"], 3, "has_children");
    assert!(e["hint"].as_str().unwrap().contains("--recursive"), "{e}");
    d.json_as("w", &["claim", "/P/dep"]);
    d.fails(&["rm", "/P/dep"], 3, "already_claimed");
    assert_eq!(status(&d, "/P/waits"), "blocked");
    let gone = d.json(&["rm", "/P/dep", "--force"]);
    assert_eq!(gone["removed"], 1, "{gone}");
    assert_eq!(status(&d, "/P/waits"), "ready", "a removed blocker counts as done");
    assert_eq!(status(&d, "/P/later"), "ready");
    d.fails(&["rm", "/"], 3, "root_immutable");
    d.fails(&["rm", "/agents"], 6, "system_node");
    let removed = d.json(&["rm", "--recursive", "/P"]);
    assert!(removed["removed"].as_u64().unwrap() >= 4, "{removed}");
    d.fails(&["show", "/P"], 4, "node_not_found");
    let doctor = common::run(d.cmd().args(["doctor"]), None);
    doctor.ok();

    // The events tell the story, with the reason of the cancel.
    let events: Vec<Value> = common::run(d.cmd().args(["--json", "events"]), None).json_lines();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    for k in ["task_cancelled", "task_reopened", "node_deleted", "task_ready"] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    let cancelled = events.iter().find(|e| e["kind"] == "task_cancelled").unwrap();
    assert_eq!(cancelled["payload"]["note"], "scope cut", "{cancelled}");
}

#[test]
fn names_that_cannot_be_addressed_are_refused_for_nodes_and_agents() {
    let d = Daemon::start("lifecycle-names");
    d.fails(&["add", "task", ""], 2, "invalid_name");
    d.fails(&["add", "task", "a/b"], 2, "invalid_name");
    d.fails(&["--agent", "my agent/1", "join"], 2, "invalid_name");
    d.fails(&["--agent", "", "join"], 2, "agent_required");
    d.json(&["add", "task", "fine-name"]);
    // A second join with another role keeps the first, and says so.
    d.json(&["--agent", "r", "--role", "builder", "join"]);
    let again = common::run(d.cmd().args(["--json", "--agent", "r", "--role", "tester", "join"]), None);
    again.ok();
    assert_eq!(again.json()["role"], "builder");
    assert!(again.stderr.contains("warning") && again.stderr.contains("\"tester\" is ignored"), "{again:?}");
    let quiet = common::run(d.cmd().args(["--json", "--agent", "r", "join"]), None);
    assert!(quiet.stderr.is_empty(), "no role given, no warning: {quiet:?}");
}

/// The task keeps its record in the segment: attempts, who finished it and when, the
/// last note — after the event ring has wrapped, and after a host restart.
#[test]
fn a_task_keeps_its_record_past_ring_wrap_and_host_restart() {
    let caps = worknode::Capacities { nodes: 256, events: 64, agents: 16, blob_chunks: 16, ..Default::default() };
    let mut d = Daemon::start_with("lifecycle-record", caps);
    d.json(&["add", "task", "t"]);
    d.json_as("w", &["claim", "/t"]);
    let p = d.json_as("w", &["progress", "/t", "40", "--note", "halfway"]);
    assert_eq!(p["record"]["note"], serde_json::json!({ "from": "progress", "text": "halfway" }), "{p}");
    // The progress event carries the percentage.
    let events = common::run(d.cmd().args(["--json", "events", "--kind", "node_updated"]), None).json_lines();
    assert_eq!(events.last().unwrap()["payload"]["percent"], 40, "{events:?}");
    let long = "x".repeat(worknode::PROGRESS_NOTE_MAX + 1);
    d.fails(&["--agent", "w", "progress", "/t", "50", "--note", &long], 2, "note_too_long");
    d.json_as("w", &["fail", "/t", "--reason", "flaky network"]);
    d.json(&["reopen", "/t"]);
    d.json_as("w", &["claim", "/t"]);
    d.json_as("w", &["fail", "/t", "--reason", "flaky again"]);
    let before = d.json(&["show", "/t"]);
    let r = &before["record"];
    assert_eq!(r["attempts"], 2, "{before}");
    assert_eq!(r["note"], serde_json::json!({ "from": "fail", "text": "flaky again" }), "{before}");
    assert_eq!(r["finished_by"]["name"], "w", "{before}");
    assert!(r["finished_ms"].as_u64().unwrap() > 0 && r["claimed_ms"].as_u64().is_some(), "{before}");
    // Wrap the ring (64 events) many times over, then restart the host.
    for i in 0..200 {
        d.json(&["emit", "filler", "--data", &i.to_string()]);
    }
    d.host_restart(&[]);
    let after = d.json(&["show", "/t"]);
    assert_eq!(after["record"]["attempts"], 2, "{after}");
    assert_eq!(after["record"]["note"], r["note"], "{after}");
    assert_eq!(after["record"]["finished_ms"], r["finished_ms"], "{after}");
    assert_eq!(after["status"], "failed", "{after}");
    let human = d.run(&["show", "/t"]);
    human.ok();
    assert!(human.stdout.contains("flaky again (fail)") && human.stdout.contains("attempts"), "{human:?}");
}

/// Sibling names are unique, even when processes race to take one; `--if-absent` makes a
/// plan script rerunnable; a rename cannot take a sibling's name; an import never
/// duplicates what is there.
#[test]
fn sibling_names_are_unique_and_imports_never_duplicate() {
    let d = Daemon::start("lifecycle-unique");
    let first = d.json(&["add", "task", "schema"]);
    let e = d.fails(&["add", "task", "schema"], 3, "name_taken");
    assert!(e["error"].as_str().unwrap().contains(first["uuid"].as_str().unwrap()), "{e}");
    let again = d.json(&["add", "task", "schema", "--if-absent"]);
    assert_eq!(again["uuid"], first["uuid"]);
    d.fails(&["add", "project", "schema", "--if-absent"], 3, "name_taken");

    // Eight processes add one name at once: exactly one wins.
    let kids: Vec<std::process::Child> = (0..8)
        .map(|_| {
            d.cmd()
                .args(["add", "task", "raced"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let codes: Vec<i32> = kids.into_iter().map(|c| c.wait_with_output().unwrap().status.code().unwrap()).collect();
    assert_eq!(codes.iter().filter(|c| **c == 0).count(), 1, "{codes:?}");
    assert!(codes.iter().all(|c| *c == 0 || *c == 3), "{codes:?}");
    let ls = d.json(&["ls"]);
    let raced = ls["nodes"].as_array().unwrap().iter().filter(|n| n["name"] == "raced").count();
    assert_eq!(raced, 1, "{ls}");

    // A rename cannot take a sibling's name; the same name elsewhere is fine.
    d.fails(&["edit", "/raced", "--name", "schema"], 3, "name_taken");
    d.json(&["add", "project", "P"]);
    d.json(&["add", "task", "schema", "--parent", "/P"]);
    assert_eq!(d.json(&["edit", "/raced", "--name", "raced-2"])["name"], "raced-2");

    // An export imported back into the segment it came from is refused, nothing made.
    let export = common::run(d.cmd().args(["export"]), None);
    export.ok();
    let file = std::env::temp_dir().join(format!("wn-import-{}.json", std::process::id()));
    std::fs::write(&file, &export.stdout).unwrap();
    let before = d.json(&["ls"])["nodes"].as_array().unwrap().len();
    d.fails(&["import", file.to_str().unwrap()], 3, "import_conflict");
    assert_eq!(d.json(&["ls"])["nodes"].as_array().unwrap().len(), before);
    // Into another segment it goes whole.
    let other = Daemon::start("lifecycle-unique-2");
    other.json(&["import", file.to_str().unwrap()]);
    assert_eq!(other.json(&["show", "/P/schema"])["name"], "schema");
    std::fs::remove_file(&file).unwrap();
}

/// `rm --recursive` racing agents that claim tasks and write documents under the same
/// subtree (separate processes) leaves no dangling child, blocker or chunk: the subtree
/// is gone, `wn doctor` is clean, and the arena's chunks all come back.
#[test]
fn rm_recursive_racing_claims_and_document_writes_leaves_nothing_dangling() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let caps = worknode::Capacities { nodes: 512, events: 4096, agents: 16, blob_chunks: 256, ..Default::default() };
    let d = Daemon::start_with("lifecycle-race", caps);
    d.json(&["add", "project", "P"]);
    d.json(&["add", "task", "outside"]);
    for i in 0..24 {
        let name = format!("t{i}");
        if i % 3 == 0 && i > 0 {
            d.json(&["add", "task", &name, "--parent", "/P", "--blocked-by", "/P/t0"]);
        } else {
            d.json(&["add", "task", &name, "--parent", "/P"]);
        }
    }
    // A task outside waits for one inside: removing it must release the wait.
    d.json(&["dep", "add", "/outside", "--blocked-by", "/P/t1"]);
    let file = std::env::temp_dir().join(format!("wn-race-{}.txt", std::process::id()));
    std::fs::write(&file, "x".repeat(3000)).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for w in 0..3 {
            let (d, stop, file) = (&d, &stop, &file);
            s.spawn(move || {
                let agent = format!("w{w}");
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) && i < 200 {
                    i += 1;
                    let task = format!("/P/t{}", (w * 7 + i) % 24);
                    let _ = common::run(d.cmd().args(["--agent", &agent, "claim", "--next"]), None);
                    let _ = common::run(
                        d.cmd()
                            .args(["--agent", &agent, "doc", "put", &task, &format!("n{i}.txt"), "--file"])
                            .arg(file),
                        None,
                    );
                }
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(400));
        let out = common::run(d.cmd().args(["--json", "rm", "--recursive", "--force", "/P"]), None);
        stop.store(true, Ordering::Relaxed);
        out.ok();
    });
    std::fs::remove_file(&file).unwrap();
    // A late document write may have found its task gone: the subtree stays gone.
    d.fails(&["show", "/P"], 4, "node_not_found");
    // (An agent may have claimed it since: anything but blocked.)
    let outside = status(&d, "/outside");
    assert!(outside == "ready" || outside == "claimed", "the removed blocker released its dependent: {outside}");
    // Every chunk comes back (the daemon reclaims any a killed or racing writer left).
    common::wait_until("the arena to be empty again", std::time::Duration::from_secs(20), || {
        let v = d.json(&["stat", "--count", "1"]);
        (v["blob_chunks_used"] == 0).then_some(())
    });
    let doctor = common::run(d.cmd().args(["doctor"]), None);
    doctor.ok();
}

/// A kind a letter or two from a built-in one is a typo, refused (exit 2) rather than
/// waited for until the timeout; an application kind of another name still works.
#[test]
fn a_mistyped_event_kind_is_refused_not_waited_for() {
    let d = Daemon::start("lifecycle-kinds");
    let e = d.fails(&["wait", "--kind", "task_complete", "--timeout", "10s"], 2, "usage");
    assert!(e["error"].as_str().unwrap().contains("did you mean \"task_completed\""), "{e}");
    assert!(e["hint"].as_str().unwrap().contains("task_completed"), "{e}");
    d.fails(&["events", "--kind", "node_creatd"], 2, "usage");
    d.fails(&["emit", "task_redy"], 2, "usage");
    // An application kind is still any other name.
    d.json(&["emit", "build_done"]);
    let got = common::run(d.cmd().args(["--json", "events", "--kind", "build_done"]), None).json_lines();
    assert_eq!(got.len(), 1, "{got:?}");
}
