//! `wn --agent NAME mcp`: an MCP client speaking newline-delimited JSON-RPC to the real
//! server over its stdio, against a real daemon. Every read is bounded by a timeout.

mod common;

use common::Daemon;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// How long one answer may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `wn --agent NAME mcp`, killed when dropped.
struct Mcp {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    next_id: u64,
    /// Responses read while waiting for another, by id.
    stash: HashMap<u64, Value>,
}

impl Mcp {
    /// Starts the server as `agent` and completes the MCP handshake.
    fn start(d: &Daemon, agent: &str) -> Mcp {
        Mcp::start_with(d, &["--agent", agent, "mcp"])
    }

    /// Starts `wn ARGS` (ending in `mcp`) and completes the MCP handshake.
    fn start_with(d: &Daemon, args: &[&str]) -> Mcp {
        let mut child = d
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn wn mcp");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut m = Mcp { child, stdin, lines, next_id: 0, stash: HashMap::new() };
        let init = m.request(
            "initialize",
            json!({ "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": { "name": "test", "version": "1" } }),
        );
        assert!(init["result"]["capabilities"]["tools"].is_object(), "{init}");
        assert_eq!(init["result"]["serverInfo"]["name"], "worknode", "{init}");
        m.send(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }));
        m
    }

    fn send(&mut self, v: &Value) {
        self.send_raw(&v.to_string());
    }

    /// Writes one line as it is.
    fn send_raw(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to the server");
        stdin.flush().expect("flush");
    }

    /// Sends a request and returns its response (skipping notifications).
    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.start_request(method, params);
        self.reply(id)
    }

    /// Sends a request; its response is read by [`Mcp::reply`].
    fn start_request(&mut self, method: &str, params: Value) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        id
    }

    /// The response to request `id`, keeping others read meanwhile.
    fn reply(&mut self, id: u64) -> Value {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            if let Some(v) = self.stash.remove(&id) {
                return v;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|e| panic!("no answer to request {id}: {e}"));
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            if let Some(got) = v["id"].as_u64() {
                self.stash.insert(got, v);
            }
        }
    }

    /// Calls a tool; returns its result (a tool error is a result with `isError`).
    fn call(&mut self, tool: &str, args: Value) -> Value {
        let r = self.request("tools/call", json!({ "name": tool, "arguments": args }));
        assert!(r.get("error").is_none(), "{tool}: protocol error {r}");
        r["result"].clone()
    }

    /// Calls a tool that must succeed; returns its structured content.
    fn ok(&mut self, tool: &str, args: Value) -> Value {
        let r = self.call(tool, args);
        assert_eq!(r["isError"], json!(false), "{tool}: {r}");
        assert!(r["content"][0]["text"].as_str().is_some_and(|t| !t.is_empty() && !t.contains('\n')), "{r}");
        r["structuredContent"].clone()
    }
}

impl Drop for Mcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tools_list_is_small_and_names_the_tools() {
    let d = Daemon::start("mcp_list");
    let mut m = Mcp::start(&d, "a");
    let r = m.request("tools/list", json!({}));
    let bytes = r.to_string().len();
    assert!(bytes < 16 * 1024, "tools/list is {bytes} bytes");
    for t in r["result"]["tools"].as_array().expect("tools") {
        let about = t["description"].as_str().expect("a description");
        assert!(!about.contains('\n') && about.len() <= 100, "one short line: {about:?}");
    }
    let claim = r["result"]["tools"].as_array().expect("tools").iter().find(|t| t["name"] == "claim_next").cloned();
    let props = claim.map(|t| t["inputSchema"]["properties"].clone()).unwrap_or_default();
    for arg in ["kind", "under", "label", "mine", "wait_s", "lease_s"] {
        assert!(props.get(arg).is_some(), "claim_next takes {arg}: {props}");
    }
    let names: Vec<&str> =
        r["result"]["tools"].as_array().expect("tools").iter().filter_map(|t| t["name"].as_str()).collect();
    for want in [
        "claim_next",
        "complete",
        "fail",
        "progress",
        "add_task",
        "show",
        "list",
        "send",
        "inbox",
        "reserve",
        "release",
        "doc_put",
        "doc_get",
        "wait",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
}

#[test]
fn a_task_goes_round_through_the_tools() {
    let d = Daemon::start("mcp_round");
    let mut m = Mcp::start(&d, "a");
    let t = m.ok("add_task", json!({ "name": "Write docs", "priority": 3, "description": "the README" }));
    let uuid = t["uuid"].as_str().expect("uuid").to_string();
    assert_eq!(t["status"], "ready", "{t}");
    let c = m.ok("claim_next", json!({ "lease_s": 60 }));
    assert_eq!(c["uuid"], json!(uuid), "{c}");
    assert_eq!(d.json(&["show", &uuid])["status"], "claimed");
    let doc = m.ok("doc_put", json!({ "task": uuid, "name": "notes.md", "content": "# Notes" }));
    assert_eq!(doc["kind"], "document", "{doc}");
    let got = m.ok("doc_get", json!({ "path": "/Write docs/notes.md" }));
    assert_eq!(got["text"], "# Notes", "{got}");
    assert_eq!(got["content_type"], "text/markdown", "{got}");
    let p = m.ok("progress", json!({ "task": uuid, "percent": 40, "note": "half" }));
    assert_eq!(p["progress"], 40, "{p}");
    assert_eq!(d.json(&["show", &uuid])["progress"], 40);
    let listed = m.ok("list", json!({ "status": "claimed" }));
    assert_eq!(listed["count"], 1, "{listed}");
    m.ok("complete", json!({ "task": "/Write docs", "note": "done" }));
    assert_eq!(d.json(&["show", &uuid])["status"], "complete");
    let shown = m.ok("show", json!({ "node": uuid }));
    assert_eq!(shown["status"], "complete", "{shown}");

    // Mail and reservations.
    let sent = m.ok("send", json!({ "to": "a", "text": "hello" }));
    assert_eq!(sent["to"], "a", "{sent}");
    let inbox = m.ok("inbox", json!({ "wait_s": 5, "ack": true }));
    assert_eq!(inbox["messages"][0]["text"], "hello", "{inbox}");
    assert_eq!(inbox["acked"].as_array().map(Vec::len), Some(1), "{inbox}");
    let r = m.ok("reserve", json!({ "paths": ["src/**"], "lease_s": 60 }));
    assert_eq!(r["globs"], json!(["src/**"]), "{r}");
    assert_eq!(m.ok("release", json!({ "paths": ["src/**"] }))["withdrawn"], 1);
}

#[test]
fn a_waiting_tool_does_not_stall_the_server() {
    let d = Daemon::start("mcp_wait");
    let mut m = Mcp::start(&d, "a");
    let waiting = m.start_request(
        "tools/call",
        json!({ "name": "wait", "arguments": { "kinds": ["task_completed", "node_created"], "timeout_s": 20 } }),
    );
    // The server answers other calls while the wait blocks.
    assert!(m.ok("list", json!({}))["count"].as_u64().is_some());
    let made = d.json(&["add", "task", "Later"]);
    let r = m.reply(waiting);
    assert_eq!(r["result"]["isError"], json!(false), "{r}");
    assert_eq!(r["result"]["structuredContent"]["kind"], "node_created", "{r}");
    assert_eq!(r["result"]["structuredContent"]["node"], made["uuid"], "{r}");
    // A wait that times out is a tool error with the CLI's code.
    let r = m.call("wait", json!({ "kinds": ["task_failed"], "timeout_s": 0.05 }));
    assert_eq!(r["structuredContent"]["code"], "timeout", "{r}");
    assert_eq!(r["structuredContent"]["exit"], 5, "{r}");
}

#[test]
fn errors_are_tool_errors_with_the_cli_code() {
    let d = Daemon::start("mcp_errors");
    let mut m = Mcp::start(&d, "a");
    let t = m.ok("add_task", json!({ "name": "T" }));
    let uuid = t["uuid"].as_str().expect("uuid").to_string();
    let r = m.call("complete", json!({ "task": uuid }));
    assert_eq!(r["isError"], json!(true), "{r}");
    assert_eq!(r["structuredContent"]["code"], "not_claimed", "{r}");
    assert!(r["structuredContent"]["hint"].as_str().is_some_and(|h| !h.is_empty()), "{r}");
    // A library error keeps the CLI's code and hint.
    let r = m.call("show", json!({ "node": "/No such" }));
    assert_eq!(r["isError"], json!(true), "{r}");
    let cli = d.fails(&["show", "/No such"], 4, r["structuredContent"]["code"].as_str().expect("code"));
    assert_eq!(r["structuredContent"]["hint"], cli["hint"], "{r}");
    // Nothing ready is an error too, and the server keeps serving.
    m.ok("claim_next", json!({}));
    let r = m.call("claim_next", json!({}));
    assert_eq!(r["structuredContent"]["code"], "nothing_ready", "{r}");
    assert_eq!(m.ok("show", json!({ "node": uuid }))["status"], "claimed");
}

#[test]
fn bad_requests_get_errors_and_the_server_keeps_serving() {
    let d = Daemon::start("mcp_bad");
    let mut m = Mcp::start(&d, "a");
    m.send_raw("{ this is not JSON");
    let r = m.request("tools/call", json!({ "name": "frobnicate", "arguments": {} }));
    assert!(r["error"]["code"].is_i64(), "an unknown tool is an error: {r}");
    let r = m.call("progress", json!({ "task": "x", "percent": "ten" }));
    assert_eq!(r["isError"], json!(true), "a wrong argument type is a tool error: {r}");
    assert_eq!(r["structuredContent"]["code"], "usage", "{r}");
    let r = m.call("show", json!({}));
    assert_eq!(r["isError"], json!(true), "a missing argument is a tool error: {r}");
    assert_eq!(r["structuredContent"]["code"], "usage", "{r}");
    assert!(r["structuredContent"]["error"].as_str().is_some_and(|e| e.contains("node")), "{r}");
    let big = "x".repeat(200_000);
    let r = m.call("send", json!({ "to": "a", "text": big }));
    assert_eq!(r["structuredContent"]["code"], "message_too_large", "{r}");
    for bad in
        [json!({ "lease_s": -1 }), json!({ "lease_s": 1e12 }), json!({ "wait_s": 1e9 }), json!({ "kind": "nope" })]
    {
        let r = m.call("claim_next", bad.clone());
        assert_eq!(r["structuredContent"]["code"], "usage", "{bad}: {r}");
    }
    m.ok("add_task", json!({ "name": "Still serving" }));
}

#[test]
fn closing_stdin_ends_the_server_and_its_claims() {
    let d = Daemon::start("mcp_eof");
    let mut m = Mcp::start(&d, "a");
    let uuid = m.ok("add_task", json!({ "name": "Held" }))["uuid"].as_str().expect("uuid").to_string();
    m.ok("claim_next", json!({ "lease_s": 3600 }));
    drop(m.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = m.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the server outlived its client");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    assert_eq!(d.json(&["show", &uuid])["status"], "ready");
}

#[test]
fn with_a_token_the_server_acts_within_its_rights() {
    let d = Daemon::start("mcp_token");
    let out = d.run(&["token", "mint", "--agent", "worker", "--rights", "read,claim,update"]);
    out.ok();
    let token = out.stdout.trim().to_string();
    let uuid = d.json(&["add", "task", "Given"])["uuid"].as_str().expect("uuid").to_string();
    let mut m = Mcp::start_with(&d, &["--token", &token, "mcp"]);
    let r = m.call("add_task", json!({ "name": "Not mine to make" }));
    assert_eq!(r["isError"], json!(true), "{r}");
    assert_eq!(r["structuredContent"]["exit"], 6, "refused as the CLI refuses it: {r}");
    let c = m.ok("claim_next", json!({}));
    assert_eq!(c["uuid"], json!(uuid), "{c}");
    assert_eq!(c["claim"]["agent"], "worker", "{c}");
    m.ok("complete", json!({ "task": uuid }));
    assert_eq!(d.json(&["show", &uuid])["status"], "complete");
}

#[test]
fn a_claim_taken_over_after_its_lease_is_fenced_off() {
    let d = Daemon::start("mcp_fence");
    let mut m = Mcp::start(&d, "a");
    let uuid = m.ok("add_task", json!({ "name": "Slow" }))["uuid"].as_str().expect("uuid").to_string();
    m.ok("claim_next", json!({ "lease_s": 0.05 }));
    let deadline = Instant::now() + Duration::from_secs(20);
    let taken = loop {
        let out = d.run(&["--json", "--agent", "b", "claim", &uuid]);
        if out.code == 0 {
            break out.json();
        }
        assert!(Instant::now() < deadline, "the lapsed claim was never free: {out:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let r = m.call("complete", json!({ "task": uuid }));
    assert_eq!(r["isError"], json!(true), "the old epoch is refused: {r}");
    assert_eq!(r["structuredContent"]["exit"], 3, "{r}");
    let now = d.json(&["show", &uuid]);
    assert_eq!(now["status"], "claimed", "{now}");
    assert_eq!(now["epoch"], taken["epoch"], "b's claim stands: {now}");
}

#[test]
fn killing_the_server_releases_its_claim() {
    let d = Daemon::start("mcp_kill");
    let mut m = Mcp::start(&d, "a");
    let t = m.ok("add_task", json!({ "name": "Held" }));
    let uuid = t["uuid"].as_str().expect("uuid").to_string();
    m.ok("claim_next", json!({ "lease_s": 3600 }));
    assert_eq!(d.json(&["show", &uuid])["status"], "claimed");
    m.child.kill().expect("SIGKILL the server");
    m.child.wait().expect("reap");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = d.json(&["show", &uuid])["status"].clone();
        if status == "ready" {
            break;
        }
        assert!(Instant::now() < deadline, "the claim outlived its server: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
