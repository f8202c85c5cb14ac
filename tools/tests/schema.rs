//! The JSON contract (issue 12, part 5): every verb's `--json` output, run for real
//! against a daemon, validates against its schema in `tools/schemas/` (JSON Schema draft
//! 2020-12), and so does an error object on stderr.
//!
//! The test fails when a verb has no schema, when a schema is not valid JSON Schema, when
//! `wn commands --json` lists a verb this file does not know (add it to [`VERBS`] and run
//! it below), and when a known verb was not run.

mod common;

use common::{Daemon, Out};
use jsonschema::{Registry, Validator};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every leaf verb of `wn`, as `wn commands --json` names them.
const VERBS: &[&str] = &[
    "dump",
    "tree",
    "ls",
    "show",
    "agents",
    "events",
    "stat",
    "doctor",
    "top",
    "rollup",
    "add",
    "rm",
    "cancel",
    "reopen",
    "activate",
    "edit",
    "label",
    "assign",
    "unassign",
    "ready",
    "claim",
    "renew",
    "release",
    "start",
    "progress",
    "done",
    "fail",
    "block",
    "dep add",
    "dep rm",
    "dep ls",
    "doc put",
    "doc get",
    "doc ls",
    "doc rm",
    "emit",
    "wait",
    "send",
    "inbox",
    "join",
    "leave",
    "snapshot",
    "export",
    "import",
    "commands",
    "token mint",
    "token ls",
    "token revoke",
    "reserve",
    "reservations",
    "unreserve",
];

/// The `$id` prefix of contract version 1.
const BASE: &str = "https://worknode.dev/schemas/v1/";

fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

fn load(file: &Path) -> Value {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", file.display()))
}

/// The verbs' validators, and which verbs have been checked.
struct Contract {
    validators: BTreeMap<String, Validator>,
    error: Validator,
    checked: BTreeSet<String>,
}

impl Contract {
    /// Loads every schema in `tools/schemas/`, checks each against the draft 2020-12
    /// meta-schema and its `$id`, and compiles one validator per verb (references to
    /// `defs.json` resolve from the directory, never the network).
    fn load(verbs: &BTreeMap<String, String>) -> Contract {
        let mut docs: BTreeMap<String, Value> = BTreeMap::new();
        let entries = std::fs::read_dir(schema_dir()).expect("tools/schemas exists");
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let file = path.file_name().and_then(|f| f.to_str()).expect("a UTF-8 file name").to_string();
            let doc = load(&path);
            if let Err(e) = jsonschema::meta::validate(&doc) {
                panic!("{file} is not a valid JSON Schema: {e}");
            }
            assert_eq!(doc["$schema"], "https://json-schema.org/draft/2020-12/schema", "{file}");
            assert_eq!(doc["$id"], format!("{BASE}{file}"), "{file}: its $id names the contract version and file");
            docs.insert(file, doc);
        }
        let mut builder = Registry::new();
        for (file, doc) in &docs {
            builder = builder.add(format!("{BASE}{file}"), doc.clone()).expect("a valid URI");
        }
        let registry = builder.prepare().expect("the schemas' references resolve");
        let compile = |doc: &Value| {
            jsonschema::options()
                .with_registry(&registry)
                .should_validate_formats(true)
                .build(doc)
                .unwrap_or_else(|e| panic!("schema {} does not compile: {e}", doc["$id"]))
        };
        let mut validators = BTreeMap::new();
        for (verb, path) in verbs {
            let file = path.strip_prefix("tools/schemas/").unwrap_or_else(|| panic!("{verb}: schema path {path}"));
            let doc = docs.get(file).unwrap_or_else(|| panic!("verb `{verb}` has no schema ({path} is missing)"));
            validators.insert(verb.clone(), compile(doc));
        }
        let error = compile(&serde_json::json!({ "$ref": format!("{BASE}defs.json#/$defs/error") }));
        Contract { validators, error, checked: BTreeSet::new() }
    }

    /// Validates one output of `verb`.
    fn check(&mut self, verb: &str, v: &Value) {
        let validator = self.validators.get(verb).unwrap_or_else(|| panic!("no validator for `{verb}`"));
        let errors: Vec<String> =
            validator.iter_errors(v).map(|e| format!("  at {}: {e}", e.instance_path())).collect();
        assert!(errors.is_empty(), "`wn --json {verb}` does not match its schema:\n{}\n{v:#}", errors.join("\n"));
        self.checked.insert(verb.to_string());
    }

    /// Validates each line of a streaming verb (at least one).
    fn check_lines(&mut self, verb: &str, out: &Out) {
        let lines = out.ok().json_lines();
        assert!(!lines.is_empty(), "`{verb}` printed no line: {out:?}");
        for l in &lines {
            self.check(verb, l);
        }
    }

    /// Validates an error object from stderr.
    fn check_error(&mut self, e: &Value) {
        let errors: Vec<String> =
            self.error.iter_errors(e).map(|x| format!("  at {}: {x}", x.instance_path())).collect();
        assert!(errors.is_empty(), "error object does not match the error schema:\n{}\n{e:#}", errors.join("\n"));
        self.checked.insert("(error)".to_string());
    }
}

/// `wn --json ARGS` with `input` on stdin, expecting exit 0.
fn json_stdin(d: &Daemon, args: &[&str], input: &[u8]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = d.run_stdin(&all, input);
    out.ok();
    out.json()
}

#[test]
fn every_verb_output_matches_its_schema() {
    let d = Daemon::start("schema");
    let commands = d.json(&["commands"]);
    assert_eq!(commands["json_contract"], 1, "the contract version");
    let listed: BTreeMap<String, String> = commands["schemas"]
        .as_object()
        .expect("commands --json has `schemas`")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("a schema path").to_string()))
        .collect();
    let known: BTreeSet<&str> = VERBS.iter().copied().collect();
    let from_cli: BTreeSet<&str> = listed.keys().map(String::as_str).collect();
    assert_eq!(from_cli, known, "`wn commands --json` and this test's VERBS disagree: add the verb here and run it");
    let mut c = Contract::load(&listed);
    c.check("commands", &commands);
    c.check("dump", &d.json(&["dump"]));

    // Nodes and the task lifecycle.
    c.check("add", &d.json(&["add", "project", "web"]));
    c.check("add", &d.json(&["add", "task", "schema", "--parent", "/web", "--priority", "9"]));
    c.check("add", &d.json(&["add", "task", "backend", "--parent", "/web", "--blocked-by", "/web/schema"]));
    c.check("add", &d.json(&["add", "task", "flaky", "--parent", "/web", "--desc", "retried"]));
    c.check("join", &d.json_as("alice", &["join"]));
    c.check("agents", &d.json(&["agents"]));
    let claim = d.json_as("alice", &["claim", "/web/schema", "--lease", "5m"]);
    assert_eq!((claim["claim"]["agent"].as_str(), claim["epoch"].as_u64()), (Some("alice"), Some(1)), "{claim}");
    c.check("claim", &claim);
    c.check("agents", &d.json(&["agents"])); // with a claim
    c.check("renew", &d.json_as("alice", &["renew", "/web/schema", "--lease", "20m"]));
    c.check("start", &d.json_as("alice", &["start", "/web/schema"]));
    c.check("progress", &d.json_as("alice", &["progress", "/web/schema", "50", "--note", "half"]));
    c.check("show", &d.json(&["show", "/web/schema"])); // with a note in its record
    c.check("done", &d.json_as("alice", &["done", "/web/schema", "--note", "ok"]));
    let next = d.json_as("bob", &["claim", "--next", "--under", "/web"]);
    assert_eq!(next["path"], "/web/backend", "unblocked by schema's completion, and older: {next}");
    c.check("claim", &next);
    c.check("release", &d.json_as("bob", &["release", "/web/backend"]));
    c.check("claim", &d.json_as("bob", &["claim", "/web/flaky"]));
    c.check("fail", &d.json_as("bob", &["fail", "/web/flaky", "--reason", "it broke"]));
    c.check("reopen", &d.json(&["reopen", "/web/flaky"]));
    c.check("cancel", &d.json(&["cancel", "/web/flaky", "--reason", "dropped"]));
    c.check("add", &d.json(&["add", "task", "later", "--status", "pending", "--value", "2.5"]));
    c.check("activate", &d.json(&["activate", "/later"]));
    c.check("edit", &d.json(&["edit", "/later", "--desc", "some day", "--priority", "3"]));
    c.check("label", &d.json(&["label", "/later", "add", "someday", "prio:low"]));
    c.check("label", &d.json(&["label", "/later", "rm", "prio:low"]));
    c.check("ls", &d.json(&["ls", "--label", "someday"]));
    c.check("assign", &d.json(&["assign", "/later", "alice"]));
    c.check("unassign", &d.json(&["unassign", "/later", "alice"]));
    c.check("add", &d.json(&["add", "task", "gate"]));
    c.check("block", &d.json(&["block", "/later", "--by", "/web/backend"]));
    c.check("dep add", &d.json(&["dep", "add", "/later", "--blocked-by", "/gate"]));
    c.check("dep ls", &d.json(&["dep", "ls", "/later"]));
    c.check("dep ls", &d.json(&["dep", "ls", "/gate"]));
    c.check("dep rm", &d.json(&["dep", "rm", "/later", "--blocked-by", "/gate"]));
    c.check("ready", &d.json(&["ready"]));
    c.check("ls", &d.json(&["ls"]));
    c.check("ls", &d.json(&["ls", "--limit", "1"]));
    c.check("tree", &d.json(&["tree"]));
    c.check("tree", &d.json(&["tree", "/web", "--depth", "0"]));
    c.check("rollup", &d.json(&["rollup", "/web"]));

    // Documents: text, bytes that are not UTF-8, a listing, a removal.
    c.check("doc put", &json_stdin(&d, &["doc", "put", "/web", "notes.md", "-"], b"# notes\n"));
    c.check("doc put", &json_stdin(&d, &["doc", "put", "/web", "blob", "-"], &[0xff, 0x00, 0xfe]));
    let text = d.json(&["doc", "get", "/web/notes.md"]);
    assert_eq!(text["text"], "# notes\n", "{text}");
    c.check("doc get", &text);
    let bytes = d.json(&["doc", "get", "/web/blob"]);
    assert_eq!(bytes["hex"], "ff00fe", "{bytes}");
    c.check("doc get", &bytes);
    c.check("doc ls", &d.json(&["doc", "ls", "/web"]));
    c.check("doc rm", &d.json(&["doc", "rm", "/web/blob"]));
    c.check("show", &d.json(&["show", "/web/notes.md"])); // a document node

    // Events: emitted, listed, waited for; samples and snapshots of the segment.
    let emitted = d.json_as("bot", &["emit", "build_done", "--node", "/web", "--data", r#"{"ok":true}"#]);
    c.check("emit", &emitted);
    let seq = emitted["seq"].as_u64().expect("a sequence number").to_string();
    c.check("emit", &d.json(&["emit", "note", "--data", "plain text"]));
    c.check_lines("events", &d.run(&["--json", "events"]));
    c.check_lines("wait", &d.run(&["--json", "wait", "--kind", "build_done", "--since", &seq, "--timeout", "10s"]));
    c.check_lines("stat", &d.run(&["--json", "stat", "--count", "2", "--interval", "10ms"]));
    c.check("doctor", &d.json(&["doctor"]));
    c.check("top", &d.json(&["top", "--once"]));

    // Durability: a snapshot, an export, and its import into another segment.
    c.check("snapshot", &d.json(&["snapshot"]));
    let export = d.json(&["export"]);
    c.check("export", &export);
    let dir = std::env::temp_dir().join(format!("wn-schema-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let file = dir.join("export.json");
    std::fs::write(&file, export.to_string()).expect("write the export");
    let other = Daemon::start("schema-import");
    c.check("import", &other.json(&["import", file.to_str().expect("a UTF-8 path")]));
    let _ = std::fs::remove_dir_all(&dir);

    // Tokens.
    let minted = d.json_as("reader", &["token", "mint", "--rights", "read", "--under", "/web", "--ttl", "1h"]);
    c.check("token mint", &minted);
    c.check("token ls", &d.json(&["token", "ls"]));
    c.check("token revoke", &d.json(&["token", "revoke", minted["id"].as_str().expect("a token id")]));
    c.check("token ls", &d.json(&["token", "ls"])); // one revoked

    // Mail: text and bytes that are not UTF-8, listed, acknowledged.
    c.check("send", &d.json_as("alice", &["send", "--to", "bob", "--thread", "t1", "hello bob"]));
    c.check("send", &json_stdin(&d, &["--agent", "alice", "send", "--to", "@shell", "-"], &[0xff, 0x00]));
    let inbox = d.json_as("bob", &["inbox"]);
    assert_eq!(inbox["count"], 2, "{inbox}");
    c.check("inbox", &inbox);
    let acked = d.json_as("bob", &["inbox", "--all", "--ack-all"]);
    assert_eq!(acked["acked"].as_array().map(Vec::len), Some(2), "{acked}");
    c.check("inbox", &acked);
    c.check("inbox", &d.json_as("bob", &["inbox", "--all"]));
    // File reservations.
    c.check("reservations", &d.json(&["reservations"]));
    c.check("reserve", &d.json_as("alice", &["reserve", "src/auth/**", "--reason", "auth refactor"]));
    c.check("reserve", &d.json_as("bob", &["reserve", "docs/*.md", "--shared", "--lease", "5m"]));
    c.check("reserve", &d.json_as("bob", &["reserve", "--renew", "docs/*.md", "--lease", "10m"]));
    c.check("reserve", &d.json_as("bob", &["reserve", "--check", "docs/a.md", "src/x.rs"]));
    c.check("reservations", &d.json(&["reservations"]));
    c.check_error(&d.fails(&["--agent", "bob", "reserve", "src/auth/login.rs"], 3, "reservation_conflict"));
    c.check_error(&d.fails(&["--agent", "bob", "reserve", "--check", "src/auth/login.rs"], 3, "reserved_path"));
    c.check("unreserve", &d.json_as("bob", &["unreserve", "docs/*.md"]));
    c.check("unreserve", &d.json_as("alice", &["unreserve", "--all"]));

    // Removals and leaving; then the events again, an actor among them gone.
    c.check("rm", &d.json(&["rm", "/web", "--recursive", "--force"]));
    c.check("leave", &d.json_as("bob", &["leave"]));
    let events = d.run(&["--json", "events"]);
    c.check_lines("events", &events);
    assert!(
        events.json_lines().iter().any(|e| e["actor"].is_object() && e["actor"]["name"].is_null()),
        "an event by bob, who has left, names no agent: {events:?}"
    );

    // Errors, from the library, from wn and from the command-line parser.
    c.check_error(&d.fails(&["show", "/nope"], 4, "node_not_found"));
    c.check_error(&d.fails(&["--agent", "alice", "claim", "/gate", "--lease", "0s"], 2, "usage"));
    d.json_as("alice", &["claim", "/gate"]);
    c.check_error(&d.fails(&["--agent", "carol", "claim", "/gate"], 3, "already_claimed"));
    c.check_error(&d.fails(&["frobnicate"], 2, "usage"));
    c.check_error(&d.fails(&["--agent", "carol", "wait", "--kind", "never", "--timeout", "10ms"], 5, "timeout"));

    let unchecked: Vec<&str> = VERBS.iter().copied().filter(|v| !c.checked.contains(*v)).collect();
    assert!(unchecked.is_empty(), "verbs never run against their schema: {unchecked:?}");
}
