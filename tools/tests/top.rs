//! `wn top --once` against a real daemon, at 80×24 and 120×30: no line is wider than
//! the frame (display columns, wide characters counted as two), no more lines than its
//! height, the task names (cut with `…` when they do not fit) and their holders are
//! there, work in hand sorts first, and every filter filters.

mod common;

use common::{Daemon, Out};
use unicode_width::UnicodeWidthStr;

const LONG: &str = "Refactor the session store so that expired logins are purged";
const WIDE: &str = "日本語のタスク名がとても長い場合の表示確認";

/// A board: a project with five tasks (one long-named, one with wide characters), a
/// loose task outside it, claims by two agents, one task in progress at 60 %.
fn seed(d: &Daemon) {
    d.run(&["add", "project", "Web"]).ok();
    d.run(&["add", "task", LONG, "--parent", "/Web", "--priority", "9"]).ok();
    d.run(&["add", "task", "api", "--parent", "/Web", "--priority", "5"]).ok();
    d.run(&["add", "task", WIDE, "--parent", "/Web", "--priority", "3"]).ok();
    d.run(&["add", "task", "docs", "--parent", "/Web", "--priority", "1"]).ok();
    d.run(&["add", "task", "styling", "--parent", "/Web", "--priority", "2"]).ok();
    d.run(&["add", "task", "loose end"]).ok();
    d.run(&["label", "/Web/docs", "add", "writing"]).ok();
    d.run_as("alice", &["claim", &format!("/Web/{LONG}")]).ok();
    d.run_as("alice", &["start", &format!("/Web/{LONG}")]).ok();
    d.run_as("alice", &["progress", &format!("/Web/{LONG}"), "60"]).ok();
    d.run_as("bob-with-a-rather-long-agent-name", &["claim", "/Web/api"]).ok();
}

/// A frame, checked against its size; returns its lines.
fn frame(d: &Daemon, width: usize, height: usize, extra: &[&str]) -> Vec<String> {
    let (w, h) = (width.to_string(), height.to_string());
    let mut args = vec!["top", "--once", "--width", &w, "--height", &h];
    args.extend_from_slice(extra);
    let out: Out = d.run(&args);
    out.ok();
    let lines: Vec<String> = out.stdout.lines().map(str::to_string).collect();
    assert!(lines.len() <= height, "{} lines in a {height}-line frame:\n{}", lines.len(), out.stdout);
    for l in &lines {
        assert!(l.width() <= width, "a line {} columns wide in a {width}-column frame: {l:?}", l.width());
    }
    // The frame is cut to its size, so a row drawn too wide would lose its right end
    // rather than show above: every task row must end with its lease column.
    if lines.iter().any(|l| l.starts_with("STATUS")) {
        for r in rows(&lines) {
            let lease = r.split_whitespace().last().unwrap_or("");
            let shaped = lease == "-"
                || lease == "lapsed"
                || lease
                    .strip_suffix(['s', 'm', 'h', 'd'])
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            assert!(shaped, "a {width}-column row lost its lease column: {r:?}");
        }
    }
    lines
}

/// The task rows of a frame (the lines after the column header that start with a status).
fn rows(lines: &[String]) -> Vec<&String> {
    let header = lines.iter().position(|l| l.starts_with("STATUS")).expect("a column header");
    lines[header + 1..]
        .iter()
        .filter(|l| {
            ["active", "claimed", "ready", "blocked", "pending", "failed", "done", "cancel"]
                .iter()
                .any(|s| l.starts_with(s))
        })
        .collect()
}

#[test]
fn top_fits_80_by_24_and_120_by_30_with_names_holders_and_filters() {
    let d = Daemon::start("top-layout");
    seed(&d);

    // Narrow terminals still get whole rows (the name and holder columns shrink).
    for w in [40, 45, 50, 60] {
        assert!(!rows(&frame(&d, w, 24, &[])).is_empty(), "{w} columns: no task rows");
    }

    // 80×24: the header, then the list, work in hand first; names cut with an ellipsis.
    let small = frame(&d, 80, 24, &[]);
    let text = small.join("\n");
    assert!(small[0].starts_with("wn top") && small[0].contains(d.name()), "{text}");
    assert!(small[1].contains("nodes") && small[1].contains("agents 2/16"), "{text}");
    assert!(small[2].contains("tasks 6:") && small[2].contains("1 active") && small[2].contains("1 claimed"), "{text}");
    let r = rows(&small);
    assert_eq!(r.len(), 6, "every task fits: {text}");
    assert!(r[0].starts_with("active") && r[0].contains("60%") && r[0].contains("alice"), "{text}");
    assert!(r[0].contains("Refactor the session") && r[0].contains('…'), "a long name is cut with …: {text}");
    assert!(r[1].starts_with("claimed") && r[1].contains("api") && r[1].contains("bob-with"), "{text}");
    assert!(r[1].contains('…'), "a long holder is cut too: {text}");
    // Ready ones by priority: the wide name (3) before styling (2) before docs (1).
    let pos = |name: &str| r.iter().position(|l| l.contains(name)).unwrap_or_else(|| panic!("{name}: {text}"));
    assert!(pos("日本語") < pos("styling") && pos("styling") < pos("docs"), "{text}");
    assert!(text.contains("all tasks · showing 6 of 6"), "{text}");

    // 120×30: room for the whole name, and an agents section saying who holds what.
    let wide = frame(&d, 120, 30, &[]);
    let text = wide.join("\n");
    assert!(rows(&wide)[0].contains(LONG), "the full name at 120 columns: {text}");
    assert!(rows(&wide).iter().any(|l| l.contains(WIDE)), "{text}");
    assert!(text.contains("agents (2)"), "{text}");
    assert!(wide.iter().any(|l| l.starts_with("alice") && l.contains("1 held")), "{text}");

    // Filters filter (and say so in the footer).
    let ready = frame(&d, 80, 24, &["--status", "ready"]);
    let r = rows(&ready);
    assert_eq!(r.len(), 4, "{ready:#?}");
    assert!(r.iter().all(|l| l.starts_with("ready")), "{ready:#?}");
    assert!(ready.last().is_some_and(|l| l.contains("status ready")), "{ready:#?}");
    let alice = frame(&d, 80, 24, &["--holder", "alice"]);
    assert_eq!(rows(&alice).len(), 1, "{alice:#?}");
    assert!(rows(&alice)[0].contains("alice"));
    let nobody = frame(&d, 80, 24, &["--holder", "nobody-joined"]);
    assert!(rows(&nobody).is_empty() && nobody.iter().any(|l| l.contains("no task matches")), "{nobody:#?}");
    let mine = d.run_as("bob-with-a-rather-long-agent-name", &["top", "--once", "--mine"]);
    let mine: Vec<String> = mine.ok().stdout.lines().map(str::to_string).collect();
    assert_eq!(rows(&mine).len(), 1, "{mine:#?}");
    assert!(rows(&mine)[0].contains("api"), "{mine:#?}");
    let under = frame(&d, 80, 24, &["--under", "/Web"]);
    assert_eq!(rows(&under).len(), 5, "the loose task is outside /Web: {under:#?}");
    assert!(!under.iter().any(|l| l.contains("loose end")), "{under:#?}");
    let labelled = frame(&d, 80, 24, &["--label", "writing"]);
    assert_eq!(rows(&labelled).len(), 1, "{labelled:#?}");
    assert!(rows(&labelled)[0].contains("docs"), "{labelled:#?}");

    // JSON: the same list, sorted the same way, with holders and leases.
    let j = d.json(&["top", "--once", "--status", "claimed"]);
    assert_eq!(j["tasks_matched"], 1, "{j}");
    assert_eq!(j["task_list"][0]["name"], "api", "{j}");
    assert_eq!(j["task_list"][0]["holder"], "bob-with-a-rather-long-agent-name", "{j}");
    assert!(j["task_list"][0]["lease_left_ms"].as_u64().is_some_and(|ms| ms > 0), "{j}");
    assert_eq!(j["filters"][0], "status claimed", "{j}");

    // Bad filters are usage errors with advice.
    let e = d.fails(&["top", "--once", "--mine"], 2, "usage");
    assert!(e["hint"].as_str().is_some_and(|h| h.contains("--agent")), "{e}");
    d.fails(&["top", "--once", "--under", "/nope"], 4, "node_not_found");
    d.fails(&["top", "--once", "--status", "sleeping"], 2, "usage");

    // The list is bounded by the frame: 14 tasks, a 16-line frame shows the best 11
    // (3 header lines, the column header and the footer take the rest).
    for i in 0..8 {
        d.run(&["add", "task", &format!("extra {i}")]).ok();
    }
    let short = frame(&d, 80, 16, &[]);
    assert_eq!(rows(&short).len(), 11, "{short:#?}");
    assert!(rows(&short)[0].starts_with("active"), "work in hand stays on screen: {short:#?}");
    assert!(short.last().is_some_and(|l| l.contains("showing 11 of 14")), "{short:#?}");
}
