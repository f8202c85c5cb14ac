//! The agent's work loop through the real binary (issue 13, parts 1–2): assignment that
//! holds (by name or `@role`, for agents that have not joined yet), and blocking claims
//! (`claim --next --wait`) served one task per parked agent, in real `wn` processes.

mod common;

use common::{wait_until, Daemon};
use std::time::Duration;
use worknode_tests::Stream;

#[test]
fn assignment_holds_for_names_not_joined_and_for_roles() {
    let d = Daemon::start("assign-holds");
    d.run(&["add", "project", "p"]).ok();
    d.run(&["add", "task", "review", "--parent", "/p", "--assignee", "tester"]).ok();
    d.run(&["add", "task", "qa", "--parent", "/p", "--assignee", "@qa"]).ok();
    // Before tester ever joined: the name is reserved, and shown.
    let show = d.json(&["show", "/p/review"]);
    assert_eq!(show["assignees"][0], "tester");
    assert_eq!(show["status"], "ready");
    assert_eq!(show["open_to_all"], false);

    // Someone else may not take it, by name or with --next; nothing changes.
    let err = d.fails(&["--agent", "writer", "claim", "/p/review"], 3, "assigned_elsewhere");
    assert!(err["error"].as_str().unwrap().contains("tester"), "{err}");
    assert_eq!(err["details"]["assignees"][0], "tester");
    d.fails(&["--agent", "writer", "claim", "--next"], 4, "nothing_ready");
    assert_eq!(d.json(&["show", "/p/review"])["status"], "ready");

    // The role's members take role work; the named agent takes its own.
    d.run(&["--agent", "q1", "--role", "qa", "join"]).ok();
    assert_eq!(d.json_as("q1", &["claim", "--next"])["name"], "qa");
    assert_eq!(d.json_as("tester", &["claim", "--next", "--mine"])["name"], "review");

    // Open to all: anyone may take it; it is not "mine" for them.
    d.run(&["add", "task", "spare", "--parent", "/p", "--assignee", "tester"]).ok();
    assert_eq!(d.json(&["assign", "/p/spare", "tester", "--open-to-all"])["open_to_all"], true);
    d.fails(&["--agent", "writer", "claim", "--next", "--mine"], 4, "nothing_ready");
    assert_eq!(d.json_as("writer", &["claim", "--next"])["name"], "spare");

    // A principal that can never exist is refused before anything changes.
    d.fails(&["assign", "/p/spare", "a/b"], 2, "invalid_name");
    d.fails(&["assign", "/p/spare", "@"], 2, "invalid_name");
    d.fails(&["add", "task", "bad", "--assignee", "x\u{7}y"], 2, "invalid_name");
    d.fails(&["show", "/bad"], 4, "node_not_found");
    d.fails(&["--agent", "@qa", "join"], 2, "invalid_name");
}

#[test]
fn assigning_appends_task_assigned_naming_the_assignee() {
    let d = Daemon::start("assign-event");
    let t = d.run(&["add", "task", "t"]).ok().first_word();
    let tail = d.json(&["stat", "--count", "1"])["events"].as_u64().unwrap().to_string();
    d.run(&["assign", &t, "@qa"]).ok();
    let e = d.json(&["wait", "--kind", "task_assigned", "--since", &tail, "--timeout", "10s"]);
    assert_eq!(e["kind"], "task_assigned", "{e}");
    assert_eq!(e["payload"]["assignee"], "@qa", "{e}");
}

/// The agents' parked-process counts, by name.
fn parked(d: &Daemon, name: &str) -> u64 {
    let v = d.json(&["agents"]);
    v["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .map_or(0, |a| a["claim_parked"].as_u64().unwrap())
}

fn wakes(d: &Daemon, name: &str) -> u64 {
    let v = d.json(&["agents"]);
    v["agents"].as_array().unwrap().iter().find(|a| a["name"] == name).map_or(0, |a| a["claim_wakes"].as_u64().unwrap())
}

#[test]
fn parked_agents_each_get_a_different_task_and_none_wakes_for_anothers() {
    let d = Daemon::start("claim-wait");
    d.run(&["add", "project", "p"]).ok();
    let names = ["w1", "w2", "w3"];
    for n in names {
        d.run(&["--agent", n, "--role", "worker", "join"]).ok();
    }
    let mut waiters: Vec<_> = names
        .iter()
        .map(|n| d.spawn(&["--json", "--agent", n, "claim", "--next", "--under", "/p", "--wait", "60s"], n))
        .collect();
    for n in names {
        wait_until(&format!("{n} parked"), Duration::from_secs(30), || (parked(&d, n) > 0).then_some(()));
    }
    // A task for w2 alone: only w2 is woken, and it takes it.
    let before: Vec<u64> = names.iter().map(|n| wakes(&d, n)).collect();
    d.run(&["add", "task", "for-w2", "--parent", "/p", "--assignee", "w2"]).ok();
    let w2 = waiters.remove(1);
    let line = w2.wait_for_line(Stream::Stdout, Duration::from_secs(30), |l| l.contains("\"name\""));
    assert!(line.contains("for-w2"), "{line}");
    assert_eq!(wakes(&d, "w1"), before[0], "w1 was woken for w2's task");
    assert_eq!(wakes(&d, "w3"), before[2], "w3 was woken for w2's task");
    assert_eq!(wakes(&d, "w2"), before[1] + 1, "w2 was woken for its task, not found by its re-check");
    // Two tasks for anyone: each remaining waiter gets a different one.
    d.run(&["add", "task", "a", "--parent", "/p"]).ok();
    d.run(&["add", "task", "b", "--parent", "/p"]).ok();
    let mut got: Vec<String> = waiters
        .iter_mut()
        .map(|p| {
            let status = p.wait_exit(Duration::from_secs(30));
            assert!(status.success(), "{}", p.transcript());
            let v: serde_json::Value = serde_json::from_str(&p.output(Stream::Stdout)).unwrap();
            v["name"].as_str().unwrap().to_string()
        })
        .collect();
    got.sort();
    assert_eq!(got, ["a", "b"]);
    for n in names {
        assert_eq!(parked(&d, n), 0, "{n} still parked");
    }
}

#[test]
fn a_blocking_claim_times_out_with_exit_5_and_takes_a_task_that_is_already_ready() {
    let d = Daemon::start("claim-wait-timeout");
    let err = d.fails(&["--agent", "w", "claim", "--next", "--wait", "200ms"], 5, "timeout");
    assert!(err["hint"].as_str().unwrap().contains("--wait"), "{err}");
    d.run(&["add", "task", "t"]).ok();
    assert_eq!(d.json_as("w", &["claim", "--next", "--wait", "10s"])["name"], "t");
    d.fails(&["--agent", "w", "claim", "/t", "--wait", "1s"], 2, "usage");
}

#[test]
fn claim_next_by_label_and_a_parked_label_claim_is_woken_when_the_label_is_added() {
    let d = Daemon::start("claim-label");
    d.run(&["add", "task", "plain"]).ok();
    d.run(&["add", "task", "hot"]).ok();
    d.run(&["label", "/hot", "add", "urgent"]).ok();
    assert_eq!(d.json(&["ready", "--label", "urgent"])["count"], 1);
    assert_eq!(d.json_as("w", &["claim", "--next", "--label", "urgent"])["name"], "hot");
    d.fails(&["--agent", "w", "claim", "--next", "--label", "bad label"], 2, "invalid_label");
    // Parked for a label no ready task has: labelling one wakes it.
    let mut waiter = d.spawn(&["--json", "--agent", "v", "claim", "--next", "--label", "urgent", "--wait", "60s"], "v");
    wait_until("v parked", Duration::from_secs(30), || (parked(&d, "v") > 0).then_some(()));
    let before = wakes(&d, "v");
    d.run(&["label", "/plain", "add", "urgent"]).ok();
    assert!(waiter.wait_exit(Duration::from_secs(30)).success(), "{}", waiter.transcript());
    assert!(waiter.output(Stream::Stdout).contains("\"plain\""), "{}", waiter.transcript());
    // Woken by the label, not found by its once-a-second re-check.
    assert_eq!(wakes(&d, "v"), before + 1, "{}", waiter.transcript());
}

#[test]
fn claim_with_reserve_is_both_or_neither() {
    let d = Daemon::start("claim-reserve");
    d.run(&["add", "task", "auth"]).ok();
    d.run(&["add", "task", "docs"]).ok();
    d.run_as("alice", &["reserve", "src/auth/**"]).ok();
    // The files are taken: the task is not claimed either.
    d.fails(&["--agent", "bob", "claim", "/auth", "--reserve", "src/auth/login.rs"], 3, "reservation_conflict");
    assert_eq!(d.json(&["show", "/auth"])["status"], "ready");
    d.fails(&["--agent", "bob", "claim", "--next", "--reserve", "src/auth/**"], 3, "reservation_conflict");
    assert_eq!(d.json(&["ready"])["count"], 2, "a task claimed by --next was given back");
    // Free files: both.
    let v = d.json_as("bob", &["claim", "/docs", "--reserve", "docs/**", "--lease", "5m"]);
    assert_eq!(v["status"], "claimed");
    assert_eq!(v["reservation"]["globs"][0], "docs/**");
    assert_eq!(v["reservation"]["agent"], "bob");
    let all = d.json(&["reservations"]);
    assert!(all.to_string().contains("docs/**"), "{all}");
    let before = d.json(&["show", "/auth"]);
    d.fails(&["--agent", "bob", "claim", "/auth", "--reserve", "/abs"], 2, "invalid_glob");
    let after = d.json(&["show", "/auth"]);
    assert_eq!(after["status"], "ready");
    assert_eq!(after["version"], before["version"], "a malformed glob changed the task: {after}");
}
