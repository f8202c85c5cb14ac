//! The agent verbs through the real binary: add, assign/unassign, ready, claim (by name
//! and --next), renew, release, start, progress, done, fail, block, dep add/rm/ls, join,
//! leave — human and --json, with every conflict and its exit code.

mod common;

use common::{wait_until, Daemon};
use serde_json::Value;
use std::time::Duration;

fn status(d: &Daemon, node: &str) -> String {
    d.json(&["show", node])["status"].as_str().unwrap().to_string()
}

#[test]
fn add_prints_the_node_uuid_first_and_respects_blockers() {
    let d = Daemon::start("tasks-add");
    let out = d.run(&["add", "project", "web app"]);
    let words: Vec<&str> = out.ok().stdout.split_whitespace().collect();
    assert_eq!(words[1..], ["project", "ready", "web", "app"], "{out:?}");
    uuid::Uuid::parse_str(words[0]).expect("UUID first");

    let schema = d.json(&["add", "task", "schema", "--parent", "/web app", "--priority", "5", "--desc", "tables"]);
    assert_eq!(schema["status"], "ready");
    assert_eq!(schema["path"], "/web app/schema");
    assert_eq!(schema["description"], "tables");
    let schema = schema["uuid"].as_str().unwrap().to_string();
    let api = d.json(&["add", "task", "api", "--parent", "/web app", "--blocked-by", &schema, "--value", "2.5"]);
    assert_eq!(api["status"], "blocked");
    assert_eq!(api["blocked_by"][0]["uuid"], schema.as_str());
    let later = d.json(&["add", "task", "later", "--status", "pending"]);
    assert_eq!(later["status"], "pending");

    // A blocker that is already complete does not block.
    d.run_as("a", &["claim", &schema]).ok();
    d.run_as("a", &["done", &schema]).ok();
    let free = d.json(&["add", "task", "free", "--blocked-by", &schema]);
    assert_eq!(free["status"], "ready");
    assert_eq!(status(&d, "/web app/api"), "ready", "completing schema readied api");

    d.fails(&["add", "task", "x", "--parent", "/nope"], 4, "node_not_found");
    d.fails(&["add", "task", "x", "--blocked-by", "/nope"], 4, "node_not_found");
    d.fails(&["add", "task", &"n".repeat(65)], 2, "invalid_value");
    d.fails(&["add", "task", "x", "--desc", &"d".repeat(257)], 2, "invalid_value");
    d.fails(&["add", "task", "a/b"], 2, "invalid_name");
    d.fails(&["add", "gizmo", "x"], 2, "usage");
    let nine: Vec<String> = (0..9).map(|_| schema.clone()).collect();
    let mut args = vec!["add", "task", "x"];
    for b in &nine {
        args.extend(["--blocked-by", b.as_str()]);
    }
    d.fails(&args, 7, "too_many_blockers");
    // Nothing was left behind by the failures.
    assert_eq!(d.json(&["ls", "--name", "x"])["count"], 0);
}

#[test]
fn claim_lifecycle_with_epochs_and_conflicts() {
    let d = Daemon::start("tasks-lifecycle");
    let t = d.json(&["add", "task", "build", "--priority", "3"])["uuid"].as_str().unwrap().to_string();

    // claim: UUID first, then the epoch.
    let out = d.run_as("alice", &["claim", "/build", "--lease", "5m"]);
    let words: Vec<&str> = out.ok().stdout.split_whitespace().collect();
    assert_eq!(words[0], t);
    assert_eq!(words[1..3], ["epoch", "1"], "{out:?}");
    assert_eq!(status(&d, &t), "claimed");
    let j = d.json(&["show", &t]);
    assert_eq!(j["claim"]["agent"], "alice");
    assert_eq!(j["claim"]["epoch"], 1);
    assert_eq!(j["claim"]["live"], true);

    // Someone else: taken (3), and not theirs to finish (3).
    let err = d.fails(&["--agent", "bob", "claim", &t], 3, "already_claimed");
    assert!(err["error"].as_str().unwrap().contains("alice"), "{err}");
    d.fails(&["--agent", "bob", "done", &t], 3, "not_claimant");
    d.fails(&["--agent", "bob", "claim", "--next"], 4, "nothing_ready");
    // No agent at all: a usage error.
    d.fails(&["claim", &t], 2, "agent_required");

    // The claimant's verbs.
    assert_eq!(d.json_as("alice", &["start", &t])["status"], "in_progress");
    assert_eq!(d.json_as("alice", &["progress", &t, "40"])["progress"], 40);
    d.fails(&["--agent", "alice", "progress", &t, "140"], 2, "usage");
    let r = d.json_as("alice", &["renew", &t, "--lease", "20m"]);
    assert_eq!(r["epoch"], 1);
    assert!(r["claim"]["lease_until_ms"].as_u64().unwrap() > worknode::unix_ms() + 15 * 60_000);
    // Strict fencing: a saved epoch that is not the current one is refused (3).
    let err = d.fails(&["--agent", "alice", "done", &t, "--epoch", "7"], 3, "stale_epoch");
    assert!(err["error"].as_str().unwrap().contains("epoch 7"), "{err}");
    let done = d.json_as("alice", &["done", &t, "--epoch", "1", "--note", "shipped"]);
    assert_eq!(done["status"], "complete");
    assert_eq!(done["progress"], 100);
    assert_eq!(done["claim"], Value::Null);
    // Finished: no more claimant writes, no new claim.
    d.fails(&["--agent", "alice", "start", &t], 3, "not_claimed");
    d.fails(&["--agent", "alice", "claim", &t], 3, "illegal_transition");

    // release and fail.
    let u = d.run(&["add", "task", "flaky"]).ok().first_word();
    d.run_as("bob", &["claim", "--next"]).ok();
    let released = d.json_as("bob", &["release", &u]);
    assert_eq!(released["status"], "ready");
    let c = d.json_as("bob", &["claim", "--next", "--lease", "1m"]);
    assert_eq!(c["uuid"], u.as_str());
    assert_eq!(c["epoch"], 2, "every claim is a new epoch");
    assert_eq!(c["claim"]["agent"], "bob");
    assert_eq!(c["claim"]["epoch"], 2);
    d.fails(&["--agent", "bob", "fail", &u], 2, "usage"); // --reason is required
    let failed = d.json_as("bob", &["fail", &u, "--reason", "it broke"]);
    assert_eq!(failed["status"], "failed");
    let ev = d.run(&["--json", "events", "--kind", "task_failed"]).ok().json_lines();
    assert_eq!(ev[0]["payload"]["note"], "it broke");
    let ev = d.run(&["--json", "events", "--kind", "task_completed"]).ok().json_lines();
    assert_eq!(ev[0]["payload"]["note"], "shipped");
    assert_eq!(ev[0]["actor"]["name"], "alice");
    assert!(ev[0]["actor"]["uuid"].is_string(), "{}", ev[0]);
}

#[test]
fn claim_next_prefers_priority_and_filters() {
    let d = Daemon::start("tasks-next");
    d.run(&["add", "project", "p"]).ok();
    d.run(&["add", "folder", "other"]).ok();
    d.run(&["add", "task", "low", "--parent", "/p", "--priority", "1"]).ok();
    d.run(&["add", "task", "high", "--parent", "/p", "--priority", "9"]).ok();
    d.run(&["add", "task", "elsewhere", "--parent", "/other", "--priority", "200"]).ok();
    d.run(&["add", "custom", "widget", "--parent", "/p"]).ok();

    let ready = d.json(&["ready", "--under", "/p"]);
    let names: Vec<&str> = ready["tasks"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["high", "low"]);
    let human = d.run(&["ready"]);
    assert!(human.ok().stdout.lines().nth(1).unwrap().contains("elsewhere"), "best first: {human:?}");

    assert_eq!(d.json_as("w", &["claim", "--next", "--under", "/p"])["name"], "high");
    assert_eq!(d.json_as("w", &["claim", "--next", "--kind", "custom"])["name"], "widget");
    // Documents are never claimable: asking for one is a usage error, not "none ready".
    d.fails(&["--agent", "w", "claim", "--next", "--under", "/other", "--kind", "document"], 2, "not_a_task");
    // Flags that only make sense with --next.
    d.fails(&["--agent", "w", "claim", "/p/low", "--under", "/p"], 2, "usage");
    d.fails(&["--agent", "w", "claim"], 2, "usage");

    // Assignment steers --mine / --assignee.
    d.run_as("carol", &["join"]).ok();
    let a = d.json(&["assign", "/p/low", "carol"]);
    assert_eq!(a["assignees"][0], "carol");
    assert_eq!(d.json(&["ready", "--assignee", "carol"])["count"], 1);
    assert_eq!(d.json(&["ls", "--assignee", "carol"])["count"], 1);
    d.fails(&["--agent", "dave", "claim", "--next", "--mine"], 4, "nothing_ready");
    assert_eq!(d.json_as("carol", &["claim", "--next", "--mine"])["name"], "low");
    let un = d.json(&["unassign", "/p/low", "carol"]);
    assert_eq!(un["assignees"], Value::Array(vec![]));
    // A name nobody has joined under is reserved, not refused; one that cannot be a
    // name is.
    assert_eq!(d.json(&["assign", "/p/low", "nobody"])["assignees"][0], "nobody");
    d.fails(&["assign", "/p/low", "no/body"], 2, "invalid_name");
    d.fails(&["ready", "--assignee", "@"], 2, "invalid_name");
}

#[test]
fn dependencies_block_unblock_and_refuse_cycles() {
    let d = Daemon::start("tasks-deps");
    let a = d.run(&["add", "task", "a"]).ok().first_word();
    let b = d.run(&["add", "task", "b"]).ok().first_word();
    let c = d.run(&["add", "task", "c"]).ok().first_word();
    assert_eq!(d.json(&["block", &b, "--by", &a])["status"], "blocked");
    assert_eq!(d.json(&["dep", "add", &c, "--blocked-by", &b, "--blocked-by", &a])["status"], "blocked");
    d.fails(&["dep", "add", &a, "--blocked-by", &c], 3, "cycle");
    d.fails(&["block", &a, "--by", &a], 3, "cycle");
    d.fails(&["--agent", "x", "claim", &b], 3, "blocked");

    let ls = d.json(&["dep", "ls", &b]);
    assert_eq!(ls["blocked_by"][0]["uuid"], a.as_str());
    assert_eq!(ls["blocks"][0]["uuid"], c.as_str());
    let human = d.run(&["dep", "ls", &b]);
    assert!(human.ok().stdout.contains("waits for") && human.stdout.contains("blocks"), "{human:?}");

    // Removing the open edges readies the task.
    assert_eq!(d.json(&["dep", "rm", &c, "--blocked-by", &b])["status"], "blocked");
    assert_eq!(d.json(&["dep", "rm", &c, "--blocked-by", &a])["status"], "ready");
    // Completing the blocker readies its dependent.
    d.run_as("x", &["claim", &a]).ok();
    d.run_as("x", &["done", &a]).ok();
    assert_eq!(status(&d, &b), "ready");
    let ev = d.run(&["--json", "events", "--kind", "task_ready", "--node", &b]).ok().json_lines();
    assert_eq!(ev.len(), 1);
}

#[test]
fn a_lapsed_lease_is_reaped_and_the_old_claimant_is_fenced_off() {
    let d = Daemon::start("tasks-lease");
    let t = d.run(&["add", "task", "slow"]).ok().first_word();
    let c = d.json_as("slowpoke", &["claim", &t, "--lease", "300ms"]);
    assert_eq!(c["epoch"], 1);
    d.fails(&["--agent", "slowpoke", "claim", &t, "--lease", "0s"], 2, "usage");
    // The daemon releases the lapsed claim.
    wait_until("the lease to be reaped", Duration::from_secs(20), || {
        (d.json(&["show", &t])["claim"] == Value::Null).then_some(())
    });
    assert_eq!(status(&d, &t), "ready");
    let ev = d.run(&["--json", "events", "--kind", "claim_expired"]).ok().json_lines();
    assert_eq!(ev.len(), 1);
    // Another agent claims it (epoch 2); the old claimant's saved epoch is stale.
    assert_eq!(d.json_as("fast", &["claim", "--next"])["epoch"], 2);
    d.fails(&["--agent", "slowpoke", "done", &t, "--epoch", "1"], 3, "stale_epoch");
    let e = d.fails(&["--agent", "slowpoke", "done", &t], 3, "lease_expired");
    assert!(e["error"].as_str().unwrap().contains("claimed by fast now"), "{e}");
    d.run_as("fast", &["done", &t]).ok();
}

/// A lease kept alive only by progress reports, for well over its length; then, left to
/// lapse, the holder is told its lease lapsed (not that it never held the task).
#[test]
fn progress_keeps_a_lease_alive_and_a_lapse_is_its_own_error() {
    let d = Daemon::start("tasks-lease-follow");
    let t = d.run(&["add", "task", "long"]).ok().first_word();
    let c = d.json_as("worker", &["claim", &t, "--lease", "600ms"]);
    let first_until = c["claim"]["lease_until_ms"].as_u64().unwrap();
    // 2.4 s of work, reporting every 200 ms: four leases' worth.
    for pct in 1..=12 {
        std::thread::sleep(Duration::from_millis(200));
        d.json_as("worker", &["progress", &t, &(pct * 5).to_string()]);
    }
    let held = d.json(&["show", &t]);
    assert_eq!(held["status"], "claimed", "{held}");
    assert_eq!(held["claim"]["agent"], "worker", "{held}");
    assert!(held["claim"]["lease_until_ms"].as_u64().unwrap() > first_until + 1000, "{held}");
    assert_eq!(held["epoch"], 1, "never lost, never re-claimed");
    // `start` extends it too; then silence lets it lapse.
    d.json_as("worker", &["start", &t]);
    wait_until("the lease to lapse and be reaped", Duration::from_secs(20), || {
        (d.json(&["show", &t])["claim"] == Value::Null).then_some(())
    });
    let e = d.fails(&["--agent", "worker", "progress", &t, "90"], 3, "lease_expired");
    assert!(e["error"].as_str().unwrap().contains("ready now"), "{e}");
}

#[test]
fn join_and_leave_manage_the_identity() {
    let d = Daemon::start("tasks-agents");
    let j = d.json_as("ann", &["--role", "architect", "join"]);
    assert_eq!(j["name"], "ann");
    assert_eq!(j["role"], "architect");
    // Joining again is the same identity.
    assert_eq!(d.json_as("ann", &["join"])["uuid"], j["uuid"]);
    let t = d.run(&["add", "task", "t"]).ok().first_word();
    d.run_as("ann", &["claim", &t]).ok();
    let agents = d.json(&["agents"]);
    assert_eq!(agents["agents"][0]["claims"][0]["uuid"], t.as_str());
    let human = d.run(&["agents"]);
    assert!(human.ok().stdout.contains("t (epoch 1"), "{human:?}");
    // Leaving releases the claim.
    let left = d.json_as("ann", &["leave"]);
    assert_eq!(left["left"], "ann");
    assert_eq!(status(&d, &t), "ready");
    assert_eq!(d.json(&["agents"])["count"], 0);
    d.fails(&["--agent", "ghost", "leave"], 4, "agent_not_found");
    d.fails(&["leave"], 2, "agent_required");
    d.fails(&["--agent", &"n".repeat(65), "join"], 2, "invalid_value");
}

#[test]
fn capacities_full_exit_7() {
    let caps =
        worknode::Capacities { nodes: 8, events: 1024, agents: 2, blob_chunks: 4, ..worknode::Capacities::default() };
    let d = Daemon::start_with("tasks-full", caps);
    // Read-only verbs do not join the agent they are given.
    d.run(&["--agent", "zed", "ls"]).ok();
    assert_eq!(d.json(&["agents"])["count"], 0);
    d.run_as("a1", &["join"]).ok();
    d.run_as("a2", &["join"]).ok();
    let e = d.fails(&["--agent", "a3", "join"], 7, "agent_table_full");
    assert!(e["hint"].as_str().unwrap().contains("larger --agents"), "{e}");
    // Root, /agents and the two agents' nodes take four of the eight slots.
    for i in 0..4 {
        d.run(&["add", "task", &format!("t{i}")]).ok();
    }
    let e = d.fails(&["add", "task", "one too many"], 7, "pool_full");
    assert!(e["error"].as_str().unwrap().contains("node pool full (8 slots)"), "{e}");
    assert!(e["hint"].as_str().unwrap().contains("larger --nodes"), "{e}");
}

#[test]
fn claimant_verbs_print_the_node_uuid_first_for_people_too() {
    let d = Daemon::start("tasks-human");
    let a = d.run(&["add", "task", "a"]).ok().first_word();
    let b = d.run(&["add", "task", "b"]).ok().first_word();
    d.run_as("h", &["join"]).ok();
    let line = |out: &common::Out| -> Vec<String> { out.ok().stdout.split_whitespace().map(String::from).collect() };
    assert_eq!(line(&d.run(&["assign", &a, "h"]))[..3], [a.clone(), "task".into(), "ready".into()]);
    assert_eq!(line(&d.run(&["unassign", &a, "h"]))[0], a);
    assert_eq!(line(&d.run(&["block", &b, "--by", &a]))[..3], [b.clone(), "task".into(), "blocked".into()]);
    assert_eq!(line(&d.run(&["dep", "rm", &b, "--blocked-by", &a]))[2], "ready");
    assert_eq!(line(&d.run(&["dep", "add", &b, "--blocked-by", &a]))[2], "blocked");
    let c = line(&d.run_as("h", &["claim", &a, "--lease", "1m"]));
    assert_eq!(c[..3], [a.clone(), "epoch".into(), "1".into()]);
    let r = line(&d.run_as("h", &["renew", &a, "--lease", "30m"]));
    assert_eq!(r[..4], [a.clone(), "epoch".into(), "1".into(), "lease".into()]);
    assert!(r[4].starts_with("29m") || r[4].starts_with("30m"), "{r:?}");
    assert_eq!(line(&d.run_as("h", &["start", &a]))[2], "in_progress");
    assert_eq!(line(&d.run_as("h", &["progress", &a, "10"]))[2], "in_progress");
    assert_eq!(line(&d.run_as("h", &["release", &a]))[2], "ready");
    d.run_as("h", &["claim", &a]).ok();
    assert_eq!(line(&d.run_as("h", &["fail", &a, "--reason", "no"]))[2], "failed");
    let left = line(&d.run_as("h", &["leave"]));
    assert_eq!(left[1..], ["left".to_string(), "h".to_string()]);
}
