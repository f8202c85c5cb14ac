//! The inspector verbs through the real binary against a real daemon: dump, tree, ls,
//! show, agents, rollup, stat, top --once, commands; node naming; colour rules.

mod common;

use common::{run, Daemon};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::time::Duration;
use worknode_tests::Stream;

/// A project with three tasks (one nested path with spaces) and one agent.
fn seed(d: &Daemon) -> (String, String) {
    let project = d.run(&["add", "project", "Code Analysis", "--desc", "the demo"]).ok().first_word();
    let task = d
        .run(&["add", "task", "Refactor auth", "--parent", "/Code Analysis", "--priority", "7", "--value", "1500"])
        .ok()
        .first_word();
    d.run(&["add", "task", "Write tests", "--parent", &project, "--blocked-by", &task]).ok();
    d.run_as("alice", &["join"]).ok();
    (project, task)
}

#[test]
fn dump_tree_ls_show_agents_rollup_human_and_json() {
    let d = Daemon::start("inspect-basics");
    let (project, task) = seed(&d);

    let dump = d.run(&["dump"]);
    dump.ok();
    assert!(
        dump.stdout.contains("state") && dump.stdout.contains("ready") && dump.stdout.contains("region"),
        "{dump:?}"
    );
    let j = d.json(&["dump"]);
    assert_eq!(j["segment"], d.name());
    assert_eq!(j["state"], "ready");
    assert!(j["regions"].as_array().unwrap().iter().any(|r| r["name"] == "nodes" && r["capacity"] == 256));

    let tree = d.run(&["tree"]);
    tree.ok();
    assert!(tree.stdout.contains("└─ Code Analysis") || tree.stdout.contains("├─ Code Analysis"), "{tree:?}");
    assert!(tree.stdout.contains("Refactor auth") && tree.stdout.contains("blocked"), "{tree:?}");
    let shallow = d.run(&["tree", "--depth", "1"]);
    assert!(!shallow.ok().stdout.contains("Refactor auth") && shallow.stdout.contains("below"), "{shallow:?}");
    let t = d.json(&["tree", "/Code Analysis"]);
    assert_eq!(t["name"], "Code Analysis");
    assert_eq!(t["path"], "/Code Analysis");
    let kids: Vec<&str> = t["children"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(kids, ["Refactor auth", "Write tests"]);

    let ls = d.run(&["ls", "--kind", "task"]);
    ls.ok();
    let header = ls.stdout.lines().next().unwrap();
    assert!(header.starts_with("ID") && header.contains("STATUS") && header.contains("NAME"), "{ls:?}");
    assert_eq!(ls.stdout.lines().count(), 3, "{ls:?}");
    let j = d.json(&["ls", "--kind", "task", "--status", "blocked"]);
    assert_eq!(j["count"], 1);
    assert_eq!(j["nodes"][0]["name"], "Write tests");
    assert_eq!(j["nodes"][0]["path"], "/Code Analysis/Write tests");
    assert_eq!(j["nodes"][0]["blocked_by"][0]["uuid"], task.as_str());
    let j = d.json(&["ls", "--under", "/Code Analysis", "--limit", "1"]);
    assert_eq!(j["count"], 1);
    assert_eq!(j["truncated"], true);
    let limited = d.run(&["ls", "--limit", "1"]);
    assert!(limited.ok().stderr.contains("raise --limit"), "{limited:?}");
    assert_eq!(d.json(&["ls", "--name", "Refactor"])["count"], 1);

    let show = d.run(&["show", "/Code Analysis/Refactor auth"]);
    show.ok();
    for want in ["uuid", &task, "/Code Analysis/Refactor auth", "priority", "7", "1500"] {
        assert!(show.stdout.contains(want), "missing {want}: {show:?}");
    }
    let j = d.json(&["show", &task]);
    assert_eq!(j["uuid"], task.as_str());
    assert_eq!(j["kind"], "task");
    assert_eq!(j["status"], "ready");
    assert_eq!(j["priority"], 7);
    assert_eq!(j["value"], 1500.0);
    assert_eq!(j["parent"], project.as_str());

    let agents = d.run(&["agents"]);
    assert!(agents.ok().stdout.contains("alice") && agents.stdout.contains("shell"), "{agents:?}");
    let j = d.json(&["agents"]);
    assert_eq!(j["count"], 1);
    assert_eq!(j["agents"][0]["name"], "alice");
    assert_eq!(j["agents"][0]["claims"], Value::Array(vec![]));

    let roll = d.run(&["rollup", "/Code Analysis"]);
    assert!(roll.ok().stdout.contains("2 tasks") && roll.stdout.contains("0% complete"), "{roll:?}");
    let j = d.json(&["rollup", "/Code Analysis"]);
    assert_eq!(j["total"], 2);
    assert_eq!(j["by_status"]["ready"], 1);
    assert_eq!(j["by_status"]["blocked"], 1);
    assert_eq!(j["value_total"], 1500.0);
    assert_eq!(j["percent_complete"], 0.0);
}

#[test]
fn nodes_are_named_by_uuid_prefix_or_path() {
    let d = Daemon::start("inspect-naming");
    let (_, task) = seed(&d);
    // Same node, five ways.
    let simple = task.replace('-', "");
    let prefix = &task[..task.len() - 4];
    let upper = task.to_uppercase();
    for spec in [
        task.as_str(),
        simple.as_str(),
        prefix,
        upper.as_str(),
        "/Code Analysis/Refactor auth",
        "//Code Analysis//Refactor auth/",
    ] {
        assert_eq!(d.json(&["show", spec])["uuid"], task.as_str(), "spec {spec}");
    }
    assert_eq!(d.json(&["show", "/"])["kind"], "container");

    // Every node's UUID starts with the same hex digits: a short prefix is ambiguous (exit 2).
    let err = d.fails(&["show", &task[..2]], 2, "ambiguous_node");
    let cands = err["details"]["candidates"].as_array().unwrap();
    assert!(cands.len() >= 2 && cands.iter().any(|c| c["uuid"] == task.as_str()), "{err}");
    let human = d.run(&["show", &task[..2]]);
    assert!(human.stderr.contains(&task) && human.stderr.contains("/Code Analysis/Refactor auth"), "{human:?}");

    // Two siblings of one name cannot be made: every path names one node.
    d.run(&["add", "folder", "twin"]).ok();
    d.fails(&["add", "folder", "twin"], 3, "name_taken");
    assert_eq!(d.json(&["show", "/twin"])["name"], "twin");

    d.fails(&["show", "/Code Analysis/nope"], 4, "node_not_found");
    d.fails(&["show", "ffffffff-ffff-7fff-bfff-ffffffffffff"], 4, "node_not_found");
    d.fails(&["show", "ffffffff"], 4, "node_not_found");
    let err = d.fails(&["show", "Refactor auth"], 2, "bad_node_name");
    assert!(err["hint"].as_str().unwrap().contains("/Code Analysis/Refactor auth"), "{err}");
}

#[test]
fn stat_prints_lines_and_ends_on_count_or_sigint() {
    let d = Daemon::start("inspect-stat");
    seed(&d);
    let out = d.run(&["stat", "--count", "2", "--interval", "100ms"]);
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "header and two lines: {out:?}");
    assert!(lines[0].contains("nodes") && lines[0].contains("ev/s"), "{out:?}");
    let j = d.run(&["--json", "stat", "--count", "3", "--interval", "50ms"]);
    let samples = j.ok().json_lines();
    assert_eq!(samples.len(), 3);
    assert_eq!(samples[0]["events_per_s"], Value::Null);
    assert!(samples[1]["events_per_s"].is_number());
    assert_eq!(samples[2]["tasks"]["ready"], 1);
    assert_eq!(samples[2]["nodes_capacity"], 256);

    let mut p = d.spawn(&["stat", "--interval", "100ms"], "wn stat");
    p.wait_for_line(Stream::Stdout, Duration::from_secs(20), |l| {
        l.trim_start().starts_with(|c: char| c.is_ascii_digit())
    });
    p.signal(Signal::SIGINT);
    let status = p.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "SIGINT ends stat with exit 0: {status}\n{}", p.transcript());
}

#[test]
fn top_once_prints_a_frame_without_a_terminal() {
    let d = Daemon::start("inspect-top");
    seed(&d);
    d.run_as("alice", &["claim", "/Code Analysis/Refactor auth"]).ok();
    let out = d.run(&["top", "--once", "--width", "110", "--height", "30"]);
    out.ok();
    for want in
        ["wn top", d.name(), "tasks 2:", "claimed", "agents (1)", "alice", "Refactor auth", "last:", "task_claimed"]
    {
        assert!(out.stdout.contains(want), "missing {want:?} in the frame:\n{}", out.stdout);
    }
    assert!(out.stdout.lines().count() <= 30);
    let j = d.json(&["top", "--once"]);
    assert_eq!(j["tasks"]["claimed"], 1);
    assert_eq!(j["agents"][0]["name"], "alice");
    assert!(j["events_per_s"].is_number(), "{j}");
    assert!(j["recent_events"].as_array().unwrap().iter().any(|e| e["kind"] == "task_claimed"), "{j}");
    d.fails(&["top"], 2, "usage"); // --json without --once
                                   // Live mode refuses a non-terminal instead of scribbling escape codes into a pipe.
    let out = d.run(&["top"]);
    out.fails(2);
    assert!(out.stderr.contains("needs a terminal"), "{out:?}");
}

#[test]
fn commands_lists_every_verb_from_the_parser() {
    let d = Daemon::start("inspect-commands");
    let j = d.json(&["commands"]);
    let names: Vec<String> =
        j["commands"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_string()).collect();
    for verb in [
        "dump", "tree", "ls", "show", "agents", "events", "stat", "doctor", "top", "rollup", "add", "assign",
        "unassign", "ready", "claim", "renew", "release", "start", "progress", "done", "fail", "block", "dep", "doc",
        "emit", "wait", "join", "leave", "commands",
    ] {
        assert!(names.iter().any(|n| n == verb), "verb {verb} missing from {names:?}");
    }
    let claim = j["commands"].as_array().unwrap().iter().find(|c| c["name"] == "claim").unwrap();
    let args: Vec<&str> = claim["args"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    for a in ["node", "next", "kind", "under", "lease"] {
        assert!(args.contains(&a), "claim lacks {a}: {args:?}");
    }
    let lease = claim["args"].as_array().unwrap().iter().find(|a| a["name"] == "lease").unwrap();
    assert_eq!(lease["long"], "--lease");
    assert_eq!(lease["default"], "10m");
    let dep = j["commands"].as_array().unwrap().iter().find(|c| c["name"] == "dep").unwrap();
    let subs: Vec<&str> = dep["subcommands"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(subs, ["add", "rm", "ls"]);
    let globals: Vec<&str> = j["global_args"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    for g in ["segment", "agent", "json"] {
        assert!(globals.contains(&g), "{globals:?}");
    }
    assert_eq!(j["exit_codes"]["3"].as_str().map(|s| s.starts_with("conflict")), Some(true));
    let human = d.run(&["commands"]);
    assert!(human.ok().stdout.contains("dep add") && human.stdout.contains("doc put"), "{human:?}");
    // The help documents the exit codes.
    let help = d.run(&["--help"]);
    assert!(help.ok().stdout.contains("Exit codes") && help.stdout.contains("7  capacity full"), "{help:?}");
}

#[test]
fn colour_only_on_request_or_a_terminal_and_never_with_no_color() {
    let d = Daemon::start("inspect-colour");
    seed(&d);
    // A pipe: no escape codes.
    assert!(!d.run(&["ls"]).ok().stdout.contains('\x1b'));
    // Forced: escape codes.
    let forced = run(d.cmd().env("CLICOLOR_FORCE", "1").arg("ls"), None);
    assert!(forced.ok().stdout.contains('\x1b'), "{forced:?}");
    // NO_COLOR wins.
    let none = run(d.cmd().env("CLICOLOR_FORCE", "1").env("NO_COLOR", "1").arg("ls"), None);
    assert!(!none.ok().stdout.contains('\x1b'), "{none:?}");
    // JSON is never coloured.
    let j = run(d.cmd().env("CLICOLOR_FORCE", "1").args(["--json", "ls"]), None);
    assert!(!j.ok().stdout.contains('\x1b'));
    j.json();
}
