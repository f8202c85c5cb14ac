//! Bad input gets a clear error (issue 10): a table of bad inputs across `wn`'s verbs and
//! `worknoded`'s flags, each run as a real process with a deadline (killed and failed if
//! it passes it), each checked for: no panic (no "panicked", exit not 101), the
//! documented exit code, a message on stderr with no raw control character in it, and
//! nothing on stdout. Then focused tests for each rule: bounded durations and numbers,
//! bounded reads, finite values, whole notes, only tasks claimable, control characters
//! refused in names and escaped in every human view, no success line on failure.

mod common;

use common::{run_within, wn_command, Daemon, Out};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;
use worknode::{Access, Capacities, EventKind, NewEvent, NewNode, NodeKind, Segment, Status};

/// Deadline of one bad-input run: every one of them should fail at once.
const CASE_TIMEOUT: Duration = Duration::from_secs(20);

/// The documented exit codes.
const USAGE: i32 = 2;
const NOT_FOUND: i32 = 4;
const FULL: i32 = 7;

/// One bad input: what runs, and the exit code it must end with.
struct Case {
    what: String,
    cmd: Command,
    stdin: Option<Vec<u8>>,
    exit: i32,
}

fn wn_case(d: &Daemon, args: &[&str], exit: i32) -> Case {
    let mut cmd = d.cmd();
    cmd.args(args);
    Case { what: format!("wn {args:?}"), cmd, stdin: None, exit }
}

fn wn_stdin_case(d: &Daemon, args: &[&str], stdin: Vec<u8>, exit: i32) -> Case {
    let mut c = wn_case(d, args, exit);
    c.what = format!("{} with {} bytes on stdin", c.what, stdin.len());
    c.stdin = Some(stdin);
    c
}

fn daemon_case(segment: &str, args: &[&str]) -> Case {
    let mut cmd = Command::new(worknode_tests::daemon_bin());
    cmd.arg("--segment").arg(segment).args(args).env_remove("WORKNODE_SEGMENT");
    Case { what: format!("worknoded {args:?}"), cmd, stdin: None, exit: USAGE }
}

/// Runs a case and checks what every failure must do.
fn check(mut c: Case) -> Out {
    let out = run_within(&mut c.cmd, c.stdin.as_deref(), CASE_TIMEOUT);
    let what = &c.what;
    assert!(!out.stderr.contains("panicked") && out.code != 101, "{what}: panicked: {out:?}");
    assert_eq!(out.code, c.exit, "{what}: exit code: {out:?}");
    assert!(!out.stderr.trim().is_empty(), "{what}: no message on stderr: {out:?}");
    assert!(
        !out.stderr.chars().any(|ch| ch.is_control() && ch != '\n'),
        "{what}: a raw control character reached stderr: {:?}",
        out.stderr
    );
    assert!(out.stdout.is_empty(), "{what}: printed on stdout although it failed: {out:?}");
    out
}

/// A segment with a project, a ready task, a document and an agent `a` holding a claim.
fn populated(test: &str) -> Daemon {
    let d = Daemon::start(test);
    d.run(&["add", "project", "p"]).ok();
    d.run(&["add", "task", "t", "--parent", "/p"]).ok();
    d.run(&["add", "task", "held", "--parent", "/p"]).ok();
    d.run_stdin(&["doc", "put", "/p", "d", "-"], b"hello").ok();
    d.run_as("a", &["claim", "/p/held"]).ok();
    d
}

#[test]
fn a_table_of_bad_inputs_fails_cleanly() {
    let d = populated("bad-table");
    let mut cases: Vec<Case> = Vec::new();

    // Durations: every flag that takes one, with text that is not one or is out of range.
    let unreadable = [
        "18446744073709551615",
        "18446744073709551615ms",
        "99999999999999999999s",
        "-1s",
        "1.5s",
        "10x",
        "",
        "s",
        "NaN",
        "inf",
        "1h 30m",
        "\u{1b}[31m5s",
    ];
    // Each flag, with the values out of its own range.
    let duration_flags: [(&[&str], &[&str]); 7] = [
        (&["wait", "--kind", "x", "--timeout"], &["1d1ms", "25h"]),
        (&["events", "--follow", "--timeout"], &["1d1ms", "25h"]),
        (&["snapshot", "--timeout"], &["1d1ms", "2d"]),
        (&["stat", "--count", "1", "--interval"], &["0ms", "0", "25h"]),
        (&["top", "--once", "--interval"], &["0s", "1d1ms"]),
        (&["--agent", "a", "claim", "/p/t", "--lease"], &["0s", "31d", "720h1ms"]),
        (&["--agent", "a", "renew", "/p/held", "--lease"], &["0ms", "30d1ms"]),
    ];
    for (prefix, out_of_range) in duration_flags {
        for v in unreadable.iter().chain(out_of_range.iter()) {
            let mut args: Vec<&str> = prefix.to_vec();
            args.push(v);
            cases.push(wn_case(&d, &args, USAGE));
        }
    }

    // Numbers.
    let numbers: [(&[&str], &[&str]); 14] = [
        (&["ls", "--limit"], &["0", "-1", "16777217", "18446744073709551616", "x", "1e3"]),
        (&["ready", "--limit"], &["0", "-1", "16777217", "x"]),
        (&["tree", "--depth"], &["-1", "16777217", "x", "18446744073709551616"]),
        (&["events", "--limit"], &["0", "-5", "x", "4294967297"]),
        (&["stat", "--count"], &["0", "x", "-1"]),
        (&["top", "--once", "--width"], &["0", "39", "1001", "65535", "99999999"]),
        (&["top", "--once", "--height"], &["0", "15", "1001"]),
        (&["add", "task", "n", "--priority"], &["256", "-1", "x"]),
        (&["--agent", "a", "progress", "/p/held"], &["101", "-1", "1000"]),
        (&["--agent", "a", "start", "/p/held", "--epoch"], &["0", "-1", "18446744073709551616", "x"]),
        (&["events", "--since"], &["-1", "x", "18446744073709551616"]),
        (&["wait", "--kind", "x", "--since"], &["-1", "x"]),
        (
            &["add", "task", "n", "--value"],
            &["NaN", "nan", "inf", "-inf", "infinity", "1e309", "-1e309", "1e301", "0x10", "", "1,5"],
        ),
        (&["add", "task", "n", "--value=NaN", "--priority"], &["1", "x"]),
    ];
    for (prefix, values) in numbers {
        for v in values {
            let mut args: Vec<&str> = prefix.to_vec();
            args.push(v);
            cases.push(wn_case(&d, &args, USAGE));
        }
    }

    // Names: control characters, '/', length.
    let long = "n".repeat(65);
    let names = ["\u{1b}]0;pwned\u{7}\u{1b}[31mX", "two\nlines", "tab\there", "del\u{7f}", "c1\u{85}x", "bell\u{7}"];
    for n in names {
        cases.push(wn_case(&d, &["add", "task", n], USAGE));
        cases.push(wn_stdin_case(&d, &["doc", "put", "/p", n, "-"], b"x".to_vec(), USAGE));
        cases.push(wn_case(&d, &["--agent", n, "join"], USAGE));
        cases.push(wn_case(&d, &["--agent", "roled", "--role", n, "join"], USAGE));
    }
    cases.push(wn_case(&d, &["add", "task", &long], USAGE));
    cases.push(wn_case(&d, &["add", "task", "a/b"], USAGE));
    cases.push(wn_case(&d, &["add", "task", "ok", "--desc", &"d".repeat(257)], USAGE));
    cases.push(wn_case(&d, &["--agent", &"a".repeat(65), "join"], USAGE));
    cases.push(wn_case(&d, &["emit", "x", "--data", &"p".repeat(89)], USAGE));
    cases.push(wn_case(&d, &["emit", &"t".repeat(25)], USAGE));

    // Only tasks are claimable.
    for node in ["/", "/p", "/p/d", "/agents", "/agents/a"] {
        cases.push(wn_case(&d, &["--agent", "a", "claim", node], USAGE));
    }
    cases.push(wn_case(&d, &["--agent", "a", "claim", "--next", "--kind", "project"], USAGE));
    cases.push(wn_case(&d, &["ready", "--kind", "document"], USAGE));

    // Notes and reasons are stored whole or refused.
    let note = "n".repeat(200);
    let quotes = "\"".repeat(25);
    cases.push(wn_case(&d, &["--agent", "a", "done", "/p/held", "--note", &note], USAGE));
    cases.push(wn_case(&d, &["--agent", "a", "done", "/p/held", "--note", &quotes], USAGE));
    cases.push(wn_case(&d, &["--agent", "a", "fail", "/p/held", "--reason", &note], USAGE));

    // Files and stdin, bounded by what the segment can hold.
    let max = Segment::attach(d.name(), Access::ReadOnly).unwrap().max_document_len();
    cases.push(wn_case(&d, &["doc", "put", "/p", "z", "--file", "/dev/zero"], FULL));
    cases.push(wn_stdin_case(&d, &["doc", "put", "/p", "z", "-"], vec![b'x'; max + 1], FULL));
    cases.push(wn_case(&d, &["doc", "put", "/p", "z", "--file", "/nonexistent/file"], NOT_FOUND));
    cases.push(wn_case(&d, &["import", "/dev/zero"], USAGE));
    cases.push(wn_stdin_case(&d, &["import", "-"], b"{not json".to_vec(), USAGE));
    let export = |node: Value| {
        serde_json::to_vec(&serde_json::json!({
            "format": "worknode-export", "version": 1, "agents": [],
            "nodes": [{ "uuid": "r", "parent": null, "kind": "container", "name": "root" }, node],
        }))
        .unwrap()
    };
    for node in [
        serde_json::json!({ "uuid": "x", "parent": "r", "kind": "task", "name": "a\u{1b}[2Jb" }),
        serde_json::json!({ "uuid": "x", "parent": "r", "kind": "task", "name": "t", "priority": 300 }),
        serde_json::json!({ "uuid": "x", "parent": "r", "kind": "task", "name": "t", "progress": 101 }),
        serde_json::json!({ "uuid": "x", "parent": "r", "kind": "task", "name": "t", "value": 1e301 }),
        serde_json::json!({ "uuid": "x", "parent": "r", "kind": "custom", "name": "t", "custom_kind": 4294967296u64 }),
        serde_json::json!({ "uuid": "x", "parent": "r", "kind": "gadget", "name": "t" }),
    ] {
        cases.push(wn_stdin_case(&d, &["import", "-"], export(node), USAGE));
    }

    // The daemon's flags (never valid: a valid set would start a daemon).
    let seg = worknode_tests::unique_name("bad-daemon-flags");
    let daemon_flags: [(&str, &[&str]); 11] = [
        ("--nodes", &["0", "1", "16777217", "-1", "x"]),
        ("--events", &["0", "1", "1000", "33554432"]),
        ("--agents", &["0", "65536"]),
        ("--blob-chunks", &["0", "1048577"]),
        ("--sets", &["0", "1048577"]),
        ("--grace-ms", &["18446744073709551615", "60001", "-1"]),
        ("--fsync-interval-ms", &["0", "60001"]),
        ("--journal-rotate-mb", &["0", "65537", "18446744073709551615"]),
        ("--mode", &["777x", "400"]),
        ("--fsync", &["sometimes"]),
        ("--frobnicate", &["1"]),
    ];
    for (flag, values) in daemon_flags {
        for v in values {
            cases.push(daemon_case(&seg, &[flag, v]));
        }
    }

    // A bad segment name is refused when the daemon starts (exit 1, its documented
    // "error"; tests/tests/daemon.rs pins that), before anything is created.
    for bad in ["a/b", ".hidden", "", "x\u{1b}[2J"] {
        let mut cmd = Command::new(worknode_tests::daemon_bin());
        cmd.arg("--segment").arg(bad).env_remove("WORKNODE_SEGMENT");
        cases.push(Case { what: format!("worknoded --segment {bad:?}"), cmd, stdin: None, exit: USAGE });
    }
    let n = cases.len();
    assert!(n >= 150, "the table has only {n} cases");
    for c in cases {
        check(c);
    }
    assert!(!worknode::shm_path(&seg).exists(), "a refused daemon created its segment");
    // None of them changed anything they were refused for.
    let t = d.json(&["show", "/p/t"]);
    assert_eq!(t["epoch"], 0, "{t}");
    assert_eq!(t["status"], "ready", "{t}");
    assert_eq!(d.json(&["show", "/p/held"])["status"], "claimed");
    assert_eq!(d.json(&["ls", "--name", "n"])["count"], 0);
}

#[test]
fn overflowing_durations_name_the_flag_and_its_range() {
    let d = Daemon::start("bad-durations");
    for (args, flag, range) in [
        (&["wait", "--kind", "x", "--timeout", "18446744073709551615"][..], "--timeout", "0ms to 1d"),
        (&["events", "--follow", "--timeout", "18446744073709551615"][..], "--timeout", "0ms to 1d"),
        (&["stat", "--interval", "18446744073709551615"][..], "--interval", "1ms to 1d"),
        (&["--agent", "a", "claim", "--next", "--lease", "18446744073709551615"][..], "--lease", "1ms to 30d"),
    ] {
        let out = check(wn_case(&d, args, USAGE));
        assert!(out.stderr.contains(flag) && out.stderr.contains(range), "{args:?}: {out:?}");
        let e = d.fails(args, USAGE, "usage");
        assert!(e["error"].as_str().unwrap().contains(range), "{e}");
    }
    // The bounds themselves are accepted.
    let out = d.run(&["wait", "--kind", "x", "--timeout", "0s"]);
    out.fails(5);
    d.run(&["stat", "--count", "1", "--interval", "1d"]).ok();
}

#[test]
fn reads_stop_at_what_a_document_can_hold() {
    let d = Daemon::start("bad-reads");
    let max = Segment::attach(d.name(), Access::ReadOnly).unwrap().max_document_len();
    let e = d.fails(&["doc", "put", "/", "z", "--file", "/dev/zero"], FULL, "document_too_large");
    assert!(e["error"].as_str().unwrap().contains(&format!("more than {max} bytes")), "{e}");
    assert!(e["hint"].as_str().unwrap().contains("--blob-chunks"), "{e}");
    // One byte over is refused, exactly the limit is stored.
    d.run_stdin(&["doc", "put", "/", "z", "-"], &vec![b'x'; max + 1]).fails(FULL);
    assert_eq!(d.json(&["ls", "--kind", "document"])["count"], 0, "nothing was created");
    let out = d.run_stdin(&["--json", "doc", "put", "/", "z", "-"], &vec![b'y'; max]);
    assert_eq!(out.ok().json()["document"]["len"], max);
    let got = d.run(&["doc", "get", "/z"]);
    assert_eq!(got.ok().stdout_bytes.len(), max);
    // An import larger than any export of this segment is refused without reading on.
    let e = d.fails(&["import", "/dev/zero"], USAGE, "export_too_large");
    assert!(e["error"].as_str().unwrap().contains("more than"), "{e}");
}

#[test]
fn values_stay_finite() {
    let d = Daemon::start("bad-values");
    for v in ["NaN", "inf", "-inf", "1e309"] {
        let e = d.fails(&["add", "task", "v", &format!("--value={v}")], USAGE, "usage");
        assert!(e["error"].as_str().unwrap().contains("finite"), "{e}");
    }
    d.run(&["add", "project", "p"]).ok();
    d.run(&["add", "task", "a", "--parent", "/p", "--value", "1e300"]).ok();
    d.run(&["add", "task", "b", "--parent", "/p", "--value=-2.5"]).ok();
    let r = d.json(&["rollup", "/p"]);
    assert_eq!(r["value_total"].as_f64(), Some(1e300 - 2.5), "{r}");
}

#[test]
fn leases_are_bounded_and_burn_no_epoch() {
    let d = Daemon::start("bad-leases");
    d.run(&["add", "task", "t"]).ok();
    for lease in ["18446744073709551615", "31d", "0s"] {
        d.fails(&["--agent", "a", "claim", "/t", "--lease", lease], USAGE, "usage");
    }
    let t = d.json(&["show", "/t"]);
    assert_eq!((t["epoch"].as_u64(), t["status"].as_str()), (Some(0), Some("ready")), "{t}");
    let c = d.json_as("a", &["claim", "/t", "--lease", "30d"]);
    assert_eq!(c["epoch"], 1);
    assert!(c["claim"]["lease_until_ms"].as_u64().unwrap() > worknode::unix_ms() + 29 * 86_400_000, "{c}");
}

#[test]
fn notes_are_stored_whole_or_refused() {
    let d = Daemon::start("bad-notes");
    d.run(&["add", "task", "t"]).ok();
    d.run_as("a", &["claim", "/t"]).ok();
    let e = d.fails(&["--agent", "a", "done", "/t", "--note", &"n".repeat(200)], USAGE, "note_too_long");
    assert!(e["error"].as_str().unwrap().contains("200 bytes") && e["error"].as_str().unwrap().contains("48"), "{e}");
    assert!(e["hint"].as_str().unwrap().contains("48 bytes"), "{e}");
    d.fails(&["--agent", "a", "fail", "/t", "--reason", &"r".repeat(49)], USAGE, "note_too_long");
    assert_eq!(d.json(&["show", "/t"])["status"], "claimed", "a refused note changes nothing");
    // 48 bytes, with characters that need escaping, come back whole.
    let note = format!("q\"b\\n\nt\t{}", "é".repeat(18));
    d.run_as("a", &["done", "/t", "--note", &note]).ok();
    let events = d.run(&["--json", "events", "--kind", "task_completed"]).ok().json_lines();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["payload"]["note"], note.as_str(), "{:?}", events[0]);
}

#[test]
fn only_work_can_be_claimed() {
    let d = Daemon::start("bad-claims");
    d.run(&["add", "project", "p"]).ok();
    d.run_stdin(&["doc", "put", "/p", "d", "-"], b"x").ok();
    d.run_as("a", &["join"]).ok();
    for node in ["/", "/p", "/p/d", "/agents/a", "/agents"] {
        let e = d.fails(&["--agent", "a", "claim", node], USAGE, "not_a_task");
        assert!(e["error"].as_str().unwrap().contains("only a task or custom node"), "{e}");
        assert!(e["hint"].as_str().unwrap().contains("wn ready"), "{e}");
        assert_eq!(d.json(&["show", node])["epoch"], 0, "{node}: no epoch burnt");
    }
    d.fails(&["--agent", "a", "claim", "--next", "--kind", "project"], USAGE, "not_a_task");
    d.fails(&["ready", "--kind", "project"], USAGE, "not_a_task");
    d.run(&["add", "folder", "f"]).ok();
    d.fails(&["--agent", "a", "claim", "/f"], USAGE, "not_a_task");
    // Application-defined work is claimable, like a task.
    d.run(&["add", "custom", "w"]).ok();
    assert_eq!(d.json_as("a", &["claim", "/w"])["epoch"], 1);
}

/// Control characters: refused in every name the library stores.
#[test]
fn names_with_control_characters_are_refused() {
    let d = Daemon::start("bad-names");
    let evil = "\u{1b}]0;pwned\u{7}\u{1b}[31mX";
    for args in [
        vec!["add", "task", evil],
        vec!["add", "task", "two\nrows"],
        vec!["--agent", evil, "join"],
        vec!["--agent", "r", "--role", evil, "join"],
    ] {
        let e = d.fails(&args, USAGE, "invalid_name");
        assert!(e["hint"].as_str().unwrap().contains("control characters"), "{e}");
    }
    let e = d.run_stdin(&["--json", "doc", "put", "/", evil, "-"], b"x");
    e.fails(USAGE);
    assert_eq!(e.err_json()["code"], "invalid_name");
    assert_eq!(d.json(&["ls"])["count"], 2, "nothing was created");
    assert_eq!(d.json(&["agents"])["count"], 0);
}

/// Removes the segments a test made through the library.
struct Unlink(Vec<String>);

impl Drop for Unlink {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Segment::unlink(n);
        }
    }
}

fn set_name(buf: &mut [u8], len: &mut u8, name: &str) {
    buf.fill(0);
    buf[..name.len()].copy_from_slice(name.as_bytes());
    *len = name.len() as u8;
}

/// A node, an agent and an event written before the rule (here: restored from saved
/// state, which the library does not re-check) are shown escaped in every human view.
#[test]
fn stored_control_characters_are_shown_escaped() {
    let src = worknode_tests::unique_name("escape-src");
    let dst = worknode_tests::unique_name("escape-dst");
    let _cleanup = Unlink(vec![src.clone(), dst.clone()]);
    let caps = Capacities { nodes: 64, events: 256, agents: 4, blob_chunks: 4, sets: 4, ..Capacities::default() };
    let evil = "\u{1b}]0;pwned\u{7}\u{1b}[31mX\nrow\u{202e}";
    let evil_role = "r\u{1b}[2J";

    // The records of a real segment, with names that the rules now refuse patched in.
    let a = worknode::Daemon::create(&src, &caps, 0o600).unwrap();
    a.join("placeholder-agent", "role").unwrap();
    let t = a.add(a.root(), &NewNode::new(NodeKind::Task, "placeholder-task").status(Status::Ready)).unwrap();
    let mut nodes = Vec::new();
    a.for_each_node(|n| {
        nodes.push((n.handle(), *n.record()));
        true
    })
    .unwrap();
    let mut agents = Vec::new();
    a.for_each_agent_slot(|i, s| agents.push((i, *s)));
    let b = worknode::Daemon::create_for_restore(&dst, &caps, 0o600).unwrap();
    for (h, mut rec) in nodes {
        if h == t || rec.kind == NodeKind::Agent.code() {
            set_name(&mut rec.name, &mut rec.name_len, evil);
        }
        b.restore_node(h.index, h.generation, &rec).unwrap();
    }
    for (i, mut s) in agents {
        set_name(&mut s.name, &mut s.name_len, evil);
        set_name(&mut s.role, &mut s.role_len, evil_role);
        b.restore_agent(i, &s).unwrap();
    }
    b.finish_restore().unwrap();
    b.open_for_clients();
    let h = b.lookup(a.read(t).unwrap().uuid()).unwrap();
    b.claim(h, b.find_agent(evil).unwrap(), Duration::from_secs(600)).unwrap();
    b.append(&NewEvent::new(EventKind::USER).topic("t\u{1b}[1m").payload(evil.as_bytes())).unwrap();

    let run = |args: &[&str]| -> Out {
        let out = run_within(wn_command(&dst).args(args), None, CASE_TIMEOUT);
        out.ok();
        out
    };
    let uuid = b.read(h).unwrap().uuid().to_string();
    for args in [
        &["tree"][..],
        &["ls"],
        &["show", &uuid],
        &["agents"],
        &["events"],
        &["top", "--once"],
        &["ready"],
        &["dep", "ls", &uuid],
        &["rollup", "/"],
    ] {
        let out = run(args);
        assert!(
            !out.stdout.chars().any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
            "wn {args:?} let a control character through: {:?}",
            out.stdout
        );
        assert!(!out.stdout.contains("X\nrow"), "wn {args:?}: a name split a row: {:?}", out.stdout);
    }
    let tree = run(&["tree"]);
    assert!(tree.stdout.contains("\\u{1b}]0;pwned\\u{7}\\u{1b}[31mX\\nrow\\u{202e}"), "{:?}", tree.stdout);
    assert_eq!(tree.stdout.lines().count(), 4, "one row per node: {:?}", tree.stdout);
    let agents = run(&["agents"]);
    assert!(agents.stdout.contains("r\\u{1b}[2J"), "{:?}", agents.stdout);
    let events = run(&["events"]);
    assert!(events.stdout.contains("user:t\\u{1b}[1m"), "{:?}", events.stdout);
    // An error echoing the name is escaped too.
    let out = run_within(wn_command(&dst).args(["show", &format!("/{evil}/x")]), None, CASE_TIMEOUT);
    out.fails(NOT_FOUND);
    assert!(!out.stderr.chars().any(|c| c.is_control() && c != '\n'), "{:?}", out.stderr);
    // JSON keeps the name exact (serde escapes it).
    let ls = run(&["--json", "ls", "--kind", "task"]);
    assert_eq!(ls.json()["nodes"][0]["name"], evil);
    drop(a);
}

/// Under `--fsync always`: with the daemon killed, `add` is refused before anything is
/// made (exit 8, nothing on stdout, no node); with the daemon stalled (SIGSTOP), the
/// node is made but its confirmation on disk never comes: exit 5, nothing on stdout, and
/// stderr names the node it made.
#[test]
fn a_failed_add_prints_no_success_line() {
    let caps = Capacities { nodes: 256, events: 4096, agents: 16, blob_chunks: 16, ..Capacities::default() };
    let named = |d: &Daemon, name: &str| {
        let seg = Segment::attach(d.name(), Access::ReadOnly).unwrap();
        let mut made = Vec::new();
        seg.for_each_node(|n| {
            if n.name() == name {
                made.push(n.uuid());
            }
            true
        })
        .unwrap();
        made
    };

    let d = Daemon::start_args("bad-fsync-stalled", caps, &["--fsync", "always"]);
    d.run(&["add", "task", "before"]).ok();
    d.signal_daemon(nix::sys::signal::Signal::SIGSTOP);
    let out = d.run(&["add", "task", "after"]);
    d.signal_daemon(nix::sys::signal::Signal::SIGCONT);
    assert_eq!(out.code, 5, "{out:?}");
    assert!(out.stdout.is_empty(), "a failed add printed on stdout: {out:?}");
    let made = named(&d, "after");
    assert_eq!(made.len(), 1, "{out:?}");
    assert!(out.stderr.contains(&made[0].to_string()) && out.stderr.contains("/after"), "{out:?}");
    assert!(out.stderr.contains("do not repeat it"), "{out:?}");

    let mut d = Daemon::start_args("bad-fsync-killed", caps, &["--fsync", "always"]);
    d.run(&["add", "task", "before"]).ok();
    d.kill_daemon();
    // Past the journal heartbeat's staleness bound (10 ms under `always`): within it a
    // change can still be made (and its event then refused, exit 5, as above).
    std::thread::sleep(Duration::from_millis(100));
    let out = d.run(&["add", "task", "after"]);
    assert_eq!(out.code, 8, "{out:?}");
    assert!(out.stdout.is_empty(), "a refused add printed on stdout: {out:?}");
    assert!(named(&d, "after").is_empty(), "a refused add made nothing: {out:?}");
}
