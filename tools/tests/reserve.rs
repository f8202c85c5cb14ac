//! File reservations with real `worknoded` and `wn` processes (issue 13, part 6):
//! `wn reserve`, `wn reservations`, `wn unreserve`, and `wn reserve --check` as a git
//! pre-commit hook runs it. Every wait is a bounded poll, never a timed assertion.

mod common;

use common::Daemon;
use serde_json::Value;
use std::time::{Duration, Instant};

fn listed(d: &Daemon) -> Vec<Value> {
    d.json(&["reservations"])["reservations"].as_array().unwrap().clone()
}

#[test]
fn reserve_list_check_and_unreserve() {
    let d = Daemon::start("reserve-basics");
    let r = d.json_as("alice", &["reserve", "src/auth/**", "src/main.rs", "--reason", "auth refactor"]);
    assert_eq!(r["globs"], serde_json::json!(["src/auth/**", "src/main.rs"]));
    assert_eq!((r["agent"].as_str(), r["shared"].as_bool()), (Some("alice"), Some(false)));

    // Another agent's overlapping glob is a conflict naming both globs and the holder.
    let e = d.fails(&["--agent", "bob", "reserve", "src/auth/login.rs"], 3, "reservation_conflict");
    let msg = e["error"].as_str().unwrap();
    assert!(msg.contains("src/auth/**") && msg.contains("alice"), "{e}");
    d.fails(&["--agent", "bob", "reserve", "src/m?in.rs"], 3, "reservation_conflict");
    // Disjoint globs, and an agent's own overlapping ones, do not conflict.
    d.json_as("bob", &["reserve", "docs/**"]);
    d.json_as("alice", &["reserve", "src/auth/login.rs"]);
    assert_eq!(listed(&d).len(), 3);

    // The pre-commit check: exit 3 for a path another agent holds, 0 for one's own.
    let e = d.fails(&["--agent", "bob", "reserve", "--check", "README.md", "src/auth/x.rs"], 3, "reserved_path");
    assert!(e["error"].as_str().unwrap().contains("src/auth/x.rs"), "{e}");
    d.run_as("alice", &["reserve", "--check", "src/auth/x.rs", "./src/main.rs"]).ok();
    d.run_as("bob", &["reserve", "--check", "docs/guide.md", "lib/x.rs"]).ok();
    // Without an agent, every reservation counts.
    d.fails(&["reserve", "--check", "docs/guide.md"], 3, "reserved_path");
    d.fails(&["reserve", "--check", "/etc/passwd"], 2, "invalid_path");

    // Withdrawing: a glob that is not reserved is not found; a named glob goes.
    d.fails(&["--agent", "bob", "unreserve", "src/**"], 4, "reservation_not_found");
    assert_eq!(d.json_as("bob", &["unreserve", "docs/**"])["withdrawn"], 1);
    d.run_as("bob", &["reserve", "--check", "docs/guide.md"]).ok();
    // One glob of a reservation of two: the other stays reserved.
    assert_eq!(d.json_as("alice", &["unreserve", "src/main.rs"])["withdrawn"], 1);
    d.json_as("bob", &["reserve", "src/main.rs"]);
    d.fails(&["--agent", "bob", "reserve", "src/auth/a.rs"], 3, "reservation_conflict");
    // --all.
    assert_eq!(d.json_as("alice", &["unreserve", "--all"])["withdrawn"], 2);
    d.json_as("bob", &["reserve", "src/auth/a.rs"]);
    let human = d.run(&["reservations"]);
    human.ok();
    assert!(human.stdout.contains("bob") && human.stdout.contains("src/auth/a.rs"), "{human:?}");
    d.fails(&["unreserve"], 2, "usage");
}

#[test]
fn shared_reservations_coexist_and_exclusive_ones_do_not() {
    let d = Daemon::start("reserve-shared");
    d.json_as("alice", &["reserve", "schema/*.sql", "--shared"]);
    assert_eq!(d.json_as("bob", &["reserve", "schema/users.sql", "--shared"])["shared"], true);
    d.fails(&["--agent", "carol", "reserve", "schema/**"], 3, "reservation_conflict");
    // Bob shares the path with alice: his commit is not held by her shared reservation.
    d.run_as("bob", &["reserve", "--check", "schema/users.sql"]).ok();
    d.fails(&["--agent", "carol", "reserve", "--check", "schema/users.sql"], 3, "reserved_path");
    d.json_as("alice", &["unreserve", "--all"]);
    d.json_as("bob", &["unreserve", "--all"]);
    d.json_as("carol", &["reserve", "schema/**"]);
    d.fails(&["--agent", "alice", "reserve", "schema/a.sql", "--shared"], 3, "reservation_conflict");
}

#[test]
fn malformed_globs_and_bad_input_are_refused_and_create_nothing() {
    let d = Daemon::start("reserve-bad");
    let long = "a".repeat(201);
    for glob in ["src/[ab", "", "/etc/passwd", "a/../b", "src/", "a//b", "src/**.rs", "[z-a]", "a\u{7}b", &long] {
        d.fails(&["--agent", "alice", "reserve", glob], 2, "invalid_glob");
    }
    let many: Vec<String> = (0..30).map(|i| format!("directory{i}/*.rs")).collect();
    let mut args = vec!["--agent", "alice", "reserve"];
    args.extend(many.iter().map(String::as_str));
    d.fails(&args, 2, "too_large");
    d.fails(&["--agent", "alice", "reserve", "x", "--reason", &"r".repeat(49)], 2, "note_too_long");
    d.fails(&["--agent", "alice", "reserve", "x", "--lease", "0s"], 2, "usage");
    d.fails(&["reserve", "x"], 2, "agent_required");
    assert!(listed(&d).is_empty());
}

#[test]
fn a_stale_epoch_is_refused_and_changes_nothing() {
    let d = Daemon::start("reserve-stale");
    let r = d.json_as("alice", &["reserve", "src/**", "--lease", "5m"]);
    let epoch = r["epoch"].as_u64().unwrap();
    let wrong = (epoch + 1).to_string();
    d.fails(&["--agent", "alice", "unreserve", "src/**", "--epoch", &wrong], 3, "stale_epoch");
    d.fails(&["--agent", "alice", "reserve", "--renew", "src/**", "--epoch", &wrong], 3, "stale_epoch");
    let now = listed(&d);
    assert_eq!(now.len(), 1);
    assert_eq!(now[0]["lease_until_ms"], r["lease_until_ms"], "the stale renewal changed nothing");
    // The right epoch renews and withdraws.
    let renewed = d.json_as("alice", &["reserve", "--renew", "src/**", "--lease", "1h", "--epoch", &epoch.to_string()]);
    assert!(renewed["lease_until_ms"].as_u64() > r["lease_until_ms"].as_u64(), "{renewed}");
    d.fails(&["--agent", "bob", "reserve", "--renew", "src/**"], 4, "reservation_not_found");
    d.json_as("alice", &["unreserve", "src/**", "--epoch", &epoch.to_string()]);
    assert!(listed(&d).is_empty());
}

#[test]
fn a_lapsed_lease_frees_the_paths_and_the_daemon_sweeps_it() {
    let d = Daemon::start("reserve-lapse");
    d.json_as("alice", &["reserve", "src/**", "--lease", "1s"]);
    d.fails(&["--agent", "bob", "reserve", "src/lib.rs"], 3, "reservation_conflict");
    // Bounded poll: the lease ends after a second; give it up to 30.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = d.run(&["--json", "--agent", "bob", "reserve", "src/lib.rs"]);
        if out.code == 0 {
            break;
        }
        assert_eq!(out.err_json()["code"], "reservation_conflict", "{out:?}");
        assert!(Instant::now() < deadline, "the lapsed reservation still holds after 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    d.run_as("bob", &["reserve", "--check", "src/lib.rs"]).ok();
    // The daemon deletes the dead one (it runs its sweep every second).
    let deadline = Instant::now() + Duration::from_secs(30);
    while listed(&d).iter().any(|r| r["agent"] == "alice") {
        assert!(Instant::now() < deadline, "the daemon did not sweep the lapsed reservation: {:?}", listed(&d));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The README's pre-commit hook (README.in/pre-commit), installed in a real git
/// repository: a commit touching a path another agent reserved is refused, and goes
/// through once the reservation is withdrawn.
#[test]
fn the_readme_pre_commit_hook_refuses_a_commit_of_a_reserved_path() {
    let d = Daemon::start("reserve-hook");
    let repo = d.data_dir().join("repo");
    std::fs::create_dir_all(repo.join("src/auth")).unwrap();
    let hook = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.in/pre-commit");
    let git = |agent: &str, args: &[&str]| {
        let wn_dir = common::wn_bin().parent().unwrap().to_path_buf();
        let path = format!("{}:{}", wn_dir.display(), std::env::var("PATH").unwrap_or_default());
        let mut cmd = std::process::Command::new("git");
        cmd.current_dir(&repo)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"])
            .args(args)
            .env("PATH", path)
            .env("WORKNODE_SEGMENT", d.name())
            .env("WORKNODE_DATA_DIR", d.data_dir())
            .env("WORKNODE_AGENT", agent)
            .env_remove("WORKNODE_TOKEN")
            .env_remove("WORKNODE_JSON");
        common::run(&mut cmd, None)
    };
    git("bob", &["init", "-q"]).ok();
    let hooks = repo.join(".git/hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    std::fs::copy(&hook, hooks.join("pre-commit")).unwrap();
    std::fs::write(repo.join("src/auth/login.rs"), "fn login() {}\n").unwrap();
    std::fs::write(repo.join("README.md"), "hi\n").unwrap();
    git("bob", &["add", "."]).ok();

    d.json_as("alice", &["reserve", "src/auth/**"]);
    let refused = git("bob", &["commit", "-q", "-m", "login"]);
    assert_ne!(refused.code, 0, "the hook let bob commit alice's reserved file: {refused:?}");
    assert!(refused.stderr.contains("reserved by agent \"alice\""), "{refused:?}");
    // Alice's own commit is not held by her own reservation.
    git("alice", &["commit", "-q", "-m", "login"]).ok();
    std::fs::write(repo.join("src/auth/login.rs"), "fn login() { todo!() }\n").unwrap();
    git("bob", &["add", "."]).ok();
    git("bob", &["commit", "-q", "-m", "again"]).fails(1);
    d.json_as("alice", &["unreserve", "--all"]);
    git("bob", &["commit", "-q", "-m", "again"]).ok();
}

/// Reservations are held by running agents: an export leaves them out (as it leaves
/// live claims), so it imports into a segment that has reservations of its own.
#[test]
fn an_export_leaves_reservations_out() {
    let d = Daemon::start("reserve-export");
    d.json(&["add", "project", "P"]);
    d.json_as("alice", &["reserve", "src/**"]);
    let export = d.json(&["export"]);
    let kinds: Vec<&str> = export["nodes"].as_array().unwrap().iter().filter_map(|n| n["kind"].as_str()).collect();
    assert!(!kinds.contains(&"reservation"), "{kinds:?}");
    assert!(!export["nodes"].as_array().unwrap().iter().any(|n| n["name"] == "reservations"), "{export}");
    let other = Daemon::start("reserve-import");
    other.json_as("bob", &["reserve", "docs/**"]);
    let file = other.data_dir().join("export.json");
    std::fs::write(&file, export.to_string()).unwrap();
    other.json(&["import", file.to_str().unwrap()]);
    assert_eq!(listed(&other).len(), 1);
}

/// Reservations are nodes, so the journal keeps them: after a host restart (segment
/// gone, rebuilt from snapshot and journal) they hold as before, epochs and all.
#[test]
fn reservations_survive_a_host_restart() {
    let caps = worknode::Capacities { nodes: 256, events: 4096, agents: 16, blob_chunks: 16, ..Default::default() };
    let mut d = Daemon::start_args("reserve-restart", caps, &["--fsync", "always"]);
    let r = d.json_as("alice", &["reserve", "src/**", "--reason", "refactor"]);
    d.json_as("bob", &["reserve", "docs/**", "--shared"]);
    d.host_restart(&["--fsync", "always"]);
    let after = listed(&d);
    assert_eq!(after.len(), 2, "{after:?}");
    let alice = after.iter().find(|x| x["agent"] == "alice").expect("alice's reservation came back");
    assert_eq!((&alice["epoch"], &alice["live"], &alice["reason"]), (&r["epoch"], &Value::Bool(true), &r["reason"]));
    d.fails(&["--agent", "bob", "reserve", "src/x.rs"], 3, "reservation_conflict");
    d.json_as("alice", &["unreserve", "src/**", "--epoch", &r["epoch"].to_string()]);
    d.json_as("bob", &["reserve", "src/x.rs"]);
}
