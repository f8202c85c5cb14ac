//! `wn metrics` against a real daemon: the output passes a strict check of the
//! Prometheus text exposition format (0.0.4) written here — metric and label name
//! grammar, `# HELP` then `# TYPE` before a family's samples, each family once and its
//! samples together, `_total` on counters, label values unescaped exactly, no duplicate
//! series, values that parse — and the values move with what the test does: claims,
//! a lease that lapses, an agent whose process is killed, mail, a completed task.

mod common;

use common::{wait_until, Daemon};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use worknode::{Access, Segment};
use worknode_tests::{child_main, env_str, say, SEGMENT_ENV};

/// How long the daemon gets to reap a lapsed lease or a killed agent (it looks every
/// 100 ms and every second).
const REAP_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn child_entry() {
    child_main(|role| match role {
        "session" => {
            // An agent with a session: the daemon reaps it (agent_lost) when we die.
            let seg = Segment::attach(&env_str(SEGMENT_ENV), Access::ReadWrite).expect("attach");
            let _session = seg.open_session("doomed", "worker").expect("open a session");
            say("in session");
            std::thread::sleep(Duration::from_secs(120));
            serde_json::json!({})
        }
        other => panic!("unknown role {other}"),
    })
}

/// One series: the metric name and its labels, sorted.
type Series = (String, Vec<(String, String)>);

/// A scrape, checked strictly, by series.
struct Scrape {
    values: BTreeMap<Series, f64>,
}

impl Scrape {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut l: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        l.sort();
        *self.values.get(&(name.to_string(), l)).unwrap_or_else(|| panic!("no series {name}{labels:?}"))
    }

    fn has(&self, name: &str) -> bool {
        self.values.keys().any(|(n, _)| n == name)
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut c = s.chars();
    !s.starts_with("__")
        && c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// Parses `{k="v",...}` from the start of `s`; returns the labels and the rest.
fn parse_labels<'a>(s: &'a str, line: &str) -> (Vec<(String, String)>, &'a str) {
    let mut labels = Vec::new();
    let mut rest = s.strip_prefix('{').expect("labels start with {");
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return (labels, r);
        }
        let eq = rest.find('=').unwrap_or_else(|| panic!("label without '=': {line:?}"));
        let name = &rest[..eq];
        assert!(is_label_name(name), "bad label name {name:?}: {line:?}");
        let mut chars = rest[eq + 1..].char_indices();
        assert_eq!(chars.next().map(|c| c.1), Some('"'), "label value must be quoted: {line:?}");
        let mut value = String::new();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => panic!("bad escape {other:?} in {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value: {line:?}"),
            }
        };
        labels.push((name.to_string(), value));
        rest = &rest[eq + 1 + end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else {
            assert!(rest.starts_with('}'), "labels are separated by ',': {line:?}");
        }
    }
}

fn parse_value(s: &str, line: &str) -> f64 {
    match s {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => s.parse::<f64>().unwrap_or_else(|e| panic!("bad value {s:?} ({e}): {line:?}")),
    }
}

/// Checks `text` strictly against the text format and returns its series.
fn check(text: &str) -> Scrape {
    assert!(text.ends_with('\n'), "the last line ends with a line feed");
    let mut values = BTreeMap::new();
    // Family name → its type; the family whose samples are being read.
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helped: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        assert!(!line.is_empty(), "no blank lines in the exposition");
        if let Some(help) = line.strip_prefix("# HELP ") {
            let (name, doc) = help.split_once(' ').unwrap_or_else(|| panic!("HELP without text: {line:?}"));
            assert!(is_metric_name(name), "bad metric name in {line:?}");
            assert!(!doc.trim().is_empty(), "empty help: {line:?}");
            assert!(!helped.contains(&name.to_string()), "family {name} described twice");
            helped.push(name.to_string());
            current = None;
            continue;
        }
        if let Some(ty) = line.strip_prefix("# TYPE ") {
            let (name, kind) = ty.split_once(' ').unwrap_or_else(|| panic!("TYPE without type: {line:?}"));
            assert_eq!(helped.last().map(String::as_str), Some(name), "TYPE right after the family's HELP: {line:?}");
            assert!(matches!(kind, "counter" | "gauge" | "summary" | "histogram" | "untyped"), "{line:?}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter names end in _total: {line:?}");
            }
            assert!(types.insert(name.to_string(), kind.to_string()).is_none(), "family {name} typed twice");
            current = Some(name.to_string());
            continue;
        }
        assert!(!line.starts_with('#'), "only HELP and TYPE comments: {line:?}");
        let family = current.clone().unwrap_or_else(|| panic!("a sample before its family's TYPE: {line:?}"));
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("a sample without a value: {line:?}"));
        let name = &line[..name_end];
        let allowed = match types[&family].as_str() {
            "summary" => {
                [family.clone(), format!("{family}_sum"), format!("{family}_count")].contains(&name.to_string())
            }
            _ => name == family,
        };
        assert!(allowed, "sample {name} inside family {family}: {line:?}");
        let (mut labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..], line)
        } else {
            (Vec::new(), &line[name_end..])
        };
        let value = rest.strip_prefix(' ').unwrap_or_else(|| panic!("one space before the value: {line:?}"));
        assert!(!value.contains(' '), "no timestamps or extra fields: {line:?}");
        let v = parse_value(value, line);
        labels.sort();
        let mut names: Vec<&String> = labels.iter().map(|(k, _)| k).collect();
        names.dedup();
        assert_eq!(names.len(), labels.len(), "a label given twice: {line:?}");
        assert!(values.insert((name.to_string(), labels), v).is_none(), "duplicate series: {line:?}");
    }
    Scrape { values }
}

fn scrape(d: &Daemon) -> Scrape {
    let out = d.run(&["metrics"]);
    out.ok();
    check(&out.stdout)
}

#[test]
fn metrics_pass_a_strict_format_check_and_move_with_claims_expiries_lost_agents_and_mail() {
    let d = Daemon::start("metrics");
    let before = scrape(&d);
    assert_eq!(before.get("worknode_segment_state", &[("state", "ready")]), 1.0);
    assert_eq!(before.get("worknode_daemon_up", &[]), 1.0);
    assert_eq!(before.get("worknode_pool_nodes_capacity", &[]), 256.0);
    assert_eq!(before.get("worknode_arena_chunks_capacity", &[]), 16.0);
    assert_eq!(before.get("worknode_agents_capacity", &[]), 16.0);
    assert_eq!(before.get("worknode_ring_capacity", &[]), 4096.0);
    assert_eq!(before.get("worknode_journal_policy", &[("policy", "batch")]), 1.0);
    for counter in ["worknode_claims_total", "worknode_leases_expired_total", "worknode_agents_lost_total"] {
        assert_eq!(before.get(counter, &[]), 0.0, "{counter} starts at 0");
    }

    // Work: two tasks, one claimed under a lease that lapses, one claimed and completed;
    // mail; an agent whose name needs escaping; an agent with a session, killed.
    d.run(&["add", "task", "lapses"]).ok();
    d.run(&["add", "task", "finished"]).ok();
    d.run_as("w1", &["claim", "/lapses", "--lease", "100ms"]).ok();
    d.run_as("w2", &["claim", "/finished"]).ok();
    d.run_as("w2", &["done", "/finished"]).ok();
    d.run_as("w1", &["send", "--to", "w2", "hello"]).ok();
    d.run_as("w1", &["send", "--to", "w2", "again"]).ok();
    let odd = "q\"uo\\te";
    d.run_as(odd, &["join"]).ok();
    let mut child = d.guard.spawn_role("session", &[]);
    child.wait_for_say("in session", Duration::from_secs(60));
    let with_session = scrape(&d);
    assert!(with_session.has("worknode_agent_claims"));
    assert_eq!(with_session.get("worknode_agent_claims", &[("agent", "doomed")]), 0.0);
    child.kill();

    let after = wait_until("the lapsed lease and the killed agent to be reaped", REAP_TIMEOUT, || {
        let s = scrape(&d);
        (s.get("worknode_leases_expired_total", &[]) >= 1.0 && s.get("worknode_agents_lost_total", &[]) >= 1.0)
            .then_some(s)
    });
    assert_eq!(after.get("worknode_claims_total", &[]), 2.0);
    assert_eq!(after.get("worknode_leases_expired_total", &[]), 1.0);
    assert_eq!(after.get("worknode_agents_lost_total", &[]), 1.0);
    assert_eq!(after.get("worknode_tasks", &[("status", "complete")]), 1.0);
    assert_eq!(after.get("worknode_tasks", &[("status", "ready")]), 1.0, "the lapsed task is ready again");
    assert_eq!(after.get("worknode_agent_claims", &[("agent", "w1")]), 0.0, "its claim lapsed");
    assert!(!after.values.keys().any(|(n, l)| n == "worknode_agent_claims" && l[0].1 == "doomed"), "reaped");
    assert_eq!(after.get("worknode_agent_claims", &[("agent", odd)]), 0.0, "the label value reads back exactly");
    assert_eq!(after.get("worknode_mailbox_messages", &[("principal", "w2")]), 2.0);
    assert_eq!(after.get("worknode_mailbox_unread", &[("principal", "w2")]), 2.0);
    assert!(after.get("worknode_mail_messages", &[]) >= 2.0);
    assert!(after.get("worknode_nodes_created_total", &[]) > before.get("worknode_nodes_created_total", &[]));
    assert!(after.get("worknode_nodes_updated_total", &[]) > before.get("worknode_nodes_updated_total", &[]));
    assert!(after.get("worknode_pool_nodes_used", &[]) > before.get("worknode_pool_nodes_used", &[]));
    assert!(
        after.get("worknode_ring_events_appended_total", &[]) > before.get("worknode_ring_events_appended_total", &[])
    );
    let lag = after.get("worknode_agent_cursor_lag_events", &[("agent", "w1")]);
    assert!(lag >= 1.0, "events were appended after w1 joined: {lag}");
    // Under `batch` the journal fsyncs what was appended: the summary counts it.
    let fsyncs = wait_until("the journal to fsync the new events", REAP_TIMEOUT, || {
        let s = scrape(&d);
        (s.get("worknode_journal_fsync_seconds_count", &[]) > before.get("worknode_journal_fsync_seconds_count", &[]))
            .then_some(s)
    });
    assert!(fsyncs.get("worknode_journal_fsync_seconds_sum", &[]) > 0.0, "fsyncs take time");
    assert!(fsyncs.get("worknode_journal_lag_events", &[]) >= 0.0);
    assert!(fsyncs.get("worknode_journal_durable_lag_events", &[]) >= fsyncs.get("worknode_journal_lag_events", &[]));

    // --textfile writes the same format into a file; --json is refused with a hint.
    let file = d.data_dir().join("worknode.prom");
    d.run(&["metrics", "--textfile", file.to_str().expect("a UTF-8 path")]).ok();
    let text = std::fs::read_to_string(&file).expect("the textfile exists");
    assert_eq!(check(&text).get("worknode_claims_total", &[]), 2.0);
    let refused = d.run(&["--json", "metrics"]);
    refused.fails(2);
    let e = refused.err_json();
    assert_eq!(e["code"], "usage", "{refused:?}");
    assert!(e["hint"].as_str().is_some_and(|h| h.contains("stat")), "{e}");
    let missing = d.run(&["metrics", "--textfile", "/nonexistent-dir/x.prom"]);
    missing.fails(1);
    assert!(missing.stderr.contains("/nonexistent-dir/x.prom"), "{missing:?}");
}
