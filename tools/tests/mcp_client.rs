//! `wn mcp` driven by the official Rust SDK's client (`rmcp`) over stdio, against a real
//! daemon: a five-agent swarm working through MCP only, resources and their
//! subscriptions (both forms), and brokered mode as another user. Every call is bounded.

mod common;

use common::Daemon;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientConfig, ProtocolVersion, ReadResourceRequestParams, ResourceContents,
    ResourceUpdatedNotificationParam, ServerNotification, SubscribeRequestParams, SubscriptionFilter,
    UnsubscribeRequestParams,
};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, NotificationContext, RunningService, ServiceError};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, RoleClient};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::time::timeout;

/// Bound on one call (a handshake, a tool, a read).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on a notice arriving after the change that causes it.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(20);

/// The client side: forwards `resources/updated` notices to the test.
struct Watcher {
    updates: UnboundedSender<String>,
    protocol: ProtocolVersion,
}

impl ClientHandler for Watcher {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::default().with_protocol_version(self.protocol.clone())
    }

    async fn on_resource_updated(&self, p: ResourceUpdatedNotificationParam, _: NotificationContext<RoleClient>) {
        let _ = self.updates.send(p.uri);
    }
}

type Client = RunningService<RoleClient, Watcher>;

thread_local! {
    /// The pid of the server this thread started last (to SIGKILL it).
    static SERVER_PID: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Starts `cmd` (a `wn … mcp`) and begins the conversation at `protocol`: with the
/// `initialize` handshake where that version has one, else with `server/discover`.
async fn connect_at(cmd: std::process::Command, protocol: ProtocolVersion) -> (Client, UnboundedReceiver<String>) {
    let (updates, rx) = unbounded_channel();
    let transport = TokioChildProcess::new(tokio::process::Command::from(cmd)).expect("spawn wn mcp");
    let pid = transport.id().expect("the server's pid");
    SERVER_PID.with(|p| p.set(pid));
    let lifecycle = if protocol.has_initialize() {
        ClientLifecycleMode::Initialize
    } else {
        ClientLifecycleMode::Discover { preferred_versions: vec![protocol.clone()] }
    };
    let client = timeout(CALL_TIMEOUT, Watcher { updates, protocol }.serve_with_lifecycle(transport, lifecycle))
        .await
        .expect("handshake in time")
        .expect("handshake");
    (client, rx)
}

/// `wn --agent NAME [--role ROLE] mcp`, at the newest protocol with a handshake.
async fn connect(d: &Daemon, agent: &str, role: Option<&str>) -> (Client, UnboundedReceiver<String>) {
    let mut cmd = d.cmd();
    cmd.args(["--agent", agent]);
    if let Some(r) = role {
        cmd.args(["--role", r]);
    }
    cmd.arg("mcp");
    connect_at(cmd, ProtocolVersion::LATEST_WITH_INITIALIZE).await
}

async fn call(c: &Client, tool: &'static str, args: Value) -> CallToolResult {
    let args = args.as_object().cloned().expect("arguments are an object");
    timeout(CALL_TIMEOUT, c.call_tool(CallToolRequestParams::new(tool).with_arguments(args)))
        .await
        .unwrap_or_else(|_| panic!("{tool}: no answer in time"))
        .unwrap_or_else(|e| panic!("{tool}: protocol error {e}"))
}

/// Calls a tool that must succeed; its structured content.
async fn ok(c: &Client, tool: &'static str, args: Value) -> Value {
    let r = call(c, tool, args.clone()).await;
    assert_eq!(r.is_error, Some(false), "{tool} {args}: {r:?}");
    r.structured_content.unwrap_or_else(|| panic!("{tool}: no structured content"))
}

fn text_of(v: &Value, field: &str) -> String {
    v[field].as_str().unwrap_or_else(|| panic!("no {field} in {v}")).to_string()
}

async fn read(c: &Client, uri: &str) -> ResourceContents {
    let r = timeout(CALL_TIMEOUT, c.read_resource(ReadResourceRequestParams::new(uri)))
        .await
        .expect("read in time")
        .unwrap_or_else(|e| panic!("read {uri}: {e}"));
    r.contents.into_iter().next().expect("one content")
}

fn text(c: &ResourceContents) -> &str {
    match c {
        ResourceContents::TextResourceContents { text, .. } => text,
        other => panic!("not text: {other:?}"),
    }
}

/// The next notice, within [`NOTICE_TIMEOUT`].
async fn notice(rx: &mut UnboundedReceiver<String>, what: &str) -> String {
    timeout(NOTICE_TIMEOUT, rx.recv()).await.unwrap_or_else(|_| panic!("no notice of {what}")).expect("client open")
}

/// The tasks of the swarm and what each waits for.
const PLAN: [(&str, &[&str]); 6] = [
    ("schema", &[]),
    ("api", &["schema"]),
    ("ui", &["schema"]),
    ("docs", &["api"]),
    ("tests", &["api", "ui"]),
    ("release", &["tests", "docs"]),
];

/// One worker: claims until told to stop, checking that every blocker is complete and
/// reading its notes, and reports each task to the lead. Returns what it completed.
async fn worker(c: Client, me: String) -> Vec<String> {
    let blockers: HashMap<&str, &[&str]> = PLAN.iter().copied().collect();
    let mut done = Vec::new();
    for _round in 0..600 {
        let r = call(&c, "claim_next", json!({ "wait_s": 0.5, "lease_s": 60 })).await;
        if r.is_error == Some(true) {
            let e = r.structured_content.expect("error object");
            assert_eq!(e["exit"], 5, "{me}: only a timeout is expected: {e}");
            let mail = ok(&c, "inbox", json!({ "ack": true })).await;
            if mail["messages"].as_array().expect("messages").iter().any(|m| m["text"] == "stop") {
                break;
            }
            continue;
        }
        let task = r.structured_content.expect("claimed task");
        let (uuid, name) = (text_of(&task, "uuid"), text_of(&task, "name"));
        let mut read_notes = Vec::new();
        for b in blockers[name.as_str()] {
            let blocker = ok(&c, "show", json!({ "node": format!("/{b}") })).await;
            assert_eq!(blocker["status"], "complete", "{me} claimed {name} before {b} was complete");
            let doc = ok(&c, "doc_get", json!({ "path": format!("/{b}/notes.md") })).await;
            assert!(text_of(&doc, "text").starts_with(&format!("{b} done by ")), "{doc}");
            read_notes.push(b.to_string());
        }
        ok(&c, "progress", json!({ "task": uuid, "percent": 50, "note": "writing notes" })).await;
        let notes = format!("{name} done by {me}; read {}", read_notes.join(","));
        ok(&c, "doc_put", json!({ "task": uuid, "name": "notes.md", "content": notes })).await;
        let finished = ok(&c, "complete", json!({ "task": uuid, "note": "ok" })).await;
        assert_eq!(finished["status"], "complete", "{finished}");
        ok(&c, "send", json!({ "to": "lead", "text": format!("done {name}"), "thread": "plan" })).await;
        done.push(name);
    }
    let _ = c.cancel().await;
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_agent_swarm_works_the_board_through_mcp_only() {
    let d = Daemon::start("mcp_swarm");
    let (lead, _) = connect(&d, "lead", Some("lead")).await;
    // The lead plans: tasks that wait for one another.
    let mut uuid_of = HashMap::new();
    for (name, blocked_by) in PLAN {
        let paths: Vec<String> = blocked_by.iter().map(|b| format!("/{b}")).collect();
        let t = ok(&lead, "add_task", json!({ "name": name, "blocked_by": paths, "description": "part of the plan" }))
            .await;
        let want = if blocked_by.is_empty() { "ready" } else { "blocked" };
        assert_eq!(t["status"], want, "{t}");
        uuid_of.insert(name, text_of(&t, "uuid"));
    }
    let mut workers = Vec::new();
    for i in 1..=4 {
        let name = format!("w{i}");
        let (c, _) = connect(&d, &name, Some("worker")).await;
        workers.push(tokio::spawn(worker(c, name)));
    }
    // The lead hears of every task, in an order the plan allows.
    let mut heard: Vec<String> = Vec::new();
    for _ in 0..240 {
        if heard.len() == PLAN.len() {
            break;
        }
        let mail = ok(&lead, "inbox", json!({ "wait_s": 0.5, "ack": true })).await;
        for m in mail["messages"].as_array().expect("messages") {
            assert_eq!(m["thread"], "plan", "{m}");
            heard.push(text_of(m, "text").trim_start_matches("done ").to_string());
        }
    }
    assert_eq!(heard.len(), PLAN.len(), "the lead heard of {heard:?}");
    for (name, blocked_by) in PLAN {
        let at = heard.iter().position(|h| h == name).unwrap_or_else(|| panic!("never heard of {name}"));
        for b in blocked_by {
            assert!(heard.iter().position(|h| h == b) < Some(at), "{name} reported before {b}: {heard:?}");
        }
    }
    for i in 1..=4 {
        ok(&lead, "send", json!({ "to": format!("w{i}"), "text": "stop" })).await;
    }
    let mut completed = Vec::new();
    for w in workers {
        completed.extend(timeout(Duration::from_secs(60), w).await.expect("a worker stopped in time").expect("worker"));
    }
    completed.sort();
    let mut want: Vec<String> = PLAN.iter().map(|(n, _)| n.to_string()).collect();
    want.sort();
    assert_eq!(completed, want, "each task completed exactly once");
    // The board agrees, and the last task's notes name what it read.
    let list = ok(&lead, "list", json!({ "status": "complete", "limit": 100 })).await;
    let tasks: Vec<&Value> = list["nodes"].as_array().expect("nodes").iter().filter(|n| n["kind"] == "task").collect();
    assert_eq!(tasks.len(), PLAN.len(), "{list}");
    let notes = ok(&lead, "doc_get", json!({ "path": "/release/notes.md" })).await;
    assert!(text_of(&notes, "text").ends_with("read tests,docs"), "{notes}");
    let shown = ok(&lead, "show", json!({ "node": uuid_of["release"] })).await;
    assert_eq!(shown["status"], "complete", "{shown}");
    let _ = lead.cancel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_read_the_board_and_subscriptions_follow_it() {
    let d = Daemon::start("mcp_resources");
    let (c, mut updates) = connect(&d, "a", None).await;
    let task = ok(&c, "add_task", json!({ "name": "watched" })).await;
    let other = ok(&c, "add_task", json!({ "name": "sentinel" })).await;
    let (uuid, sentinel) = (text_of(&task, "uuid"), text_of(&other, "uuid"));
    let doc = ok(&c, "doc_put", json!({ "task": uuid, "name": "plan.md", "content": "# Plan\nv1" })).await;
    let doc_uuid = text_of(&doc, "uuid");

    // Reads: the tree, a node (also by /path), a document.
    let tree = read(&c, "worknode://tree").await;
    assert!(text(&tree).contains("watched") && text(&tree).contains("plan.md"), "{tree:?}");
    let node: Value = serde_json::from_str(text(&read(&c, &format!("worknode://node/{uuid}")).await)).expect("JSON");
    assert_eq!(node["name"], "watched", "{node}");
    let by_path: Value = serde_json::from_str(text(&read(&c, "worknode://node//watched").await)).expect("JSON");
    assert_eq!(by_path["uuid"], json!(uuid));
    let content = read(&c, &format!("worknode://doc/{doc_uuid}")).await;
    assert_eq!(text(&content), "# Plan\nv1");
    assert!(
        matches!(&content, ResourceContents::TextResourceContents { mime_type: Some(m), .. } if m == "text/markdown")
    );
    // A URI that names nothing is a protocol error, and the server goes on.
    let task_as_doc = format!("worknode://doc/{uuid}");
    for (bad, exit) in [
        ("worknode://node/ffffffff-0000-0000-0000-000000000000", 4),
        ("worknode://nothing", 2),
        ("http://x", 2),
        (task_as_doc.as_str(), 2),
    ] {
        match c.read_resource(ReadResourceRequestParams::new(bad)).await {
            Err(ServiceError::McpError(e)) => {
                let data = e.data.clone().unwrap_or_default();
                assert_eq!(data["exit"], exit, "{bad}: {e:?}");
                assert!(!data["hint"].as_str().unwrap_or("").is_empty(), "{bad}: a hint: {e:?}");
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    let listed = c.list_all_resources().await.expect("resources/list");
    assert!(listed.iter().any(|r| r.uri == "worknode://tree"), "{listed:?}");
    let templates = c.list_all_resource_templates().await.expect("templates");
    assert_eq!(templates.len(), 2, "{templates:?}");

    // Subscribed: another process changing the task is heard, driven by the ring.
    let node_uri = format!("worknode://node/{uuid}");
    #[allow(deprecated)]
    c.subscribe(SubscribeRequestParams::new(node_uri.clone())).await.expect("subscribe");
    d.run_as("b", &["claim", &uuid]).ok();
    assert_eq!(notice(&mut updates, "the claim").await, node_uri);
    // The document, replaced by another process: same UUID, new version, heard.
    let doc_uri = format!("worknode://doc/{doc_uuid}");
    #[allow(deprecated)]
    c.subscribe(SubscribeRequestParams::new(doc_uri.clone())).await.expect("subscribe doc");
    d.run_stdin(&["doc", "put", &uuid, "plan.md", "-"], b"# Plan\nv2").ok();
    assert_eq!(notice(&mut updates, "the new version").await, doc_uri);
    assert_eq!(text(&read(&c, &doc_uri).await), "# Plan\nv2");
    // Unsubscribed: the next change is not heard, though a later one elsewhere is
    // (notices go out in the order of the events).
    #[allow(deprecated)]
    c.unsubscribe(UnsubscribeRequestParams::new(node_uri.clone())).await.expect("unsubscribe");
    #[allow(deprecated)]
    c.unsubscribe(UnsubscribeRequestParams::new(doc_uri.clone())).await.expect("unsubscribe doc");
    let sentinel_uri = format!("worknode://node/{sentinel}");
    #[allow(deprecated)]
    c.subscribe(SubscribeRequestParams::new(sentinel_uri.clone())).await.expect("subscribe sentinel");
    while updates.try_recv().is_ok() {}
    d.run_as("b", &["progress", &uuid, "40"]).ok();
    d.run_as("b", &["claim", &sentinel]).ok();
    assert_eq!(notice(&mut updates, "the sentinel").await, sentinel_uri, "the unsubscribed task was heard");
    // Subscribing to what does not exist is refused, and the server goes on.
    #[allow(deprecated)]
    let refused = c.subscribe(SubscribeRequestParams::new("worknode://node/nope")).await;
    assert!(refused.is_err(), "{refused:?}");
    ok(&c, "show", json!({ "node": uuid })).await;
    let _ = c.cancel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listen_stream_of_the_newest_protocol_hears_a_task_change() {
    let d = Daemon::start("mcp_listen");
    let uuid = d.json(&["add", "task", "Heard"])["uuid"].as_str().expect("uuid").to_string();
    let mut cmd = d.cmd();
    cmd.args(["--agent", "a", "mcp"]);
    let (c, _) = connect_at(cmd, ProtocolVersion::LATEST).await;
    let uri = format!("worknode://node/{uuid}");
    let mut filter = SubscriptionFilter::new();
    filter.resource_subscriptions = Some(vec![uri.clone(), "worknode://node/nope".into()]);
    let mut sub = timeout(CALL_TIMEOUT, c.listen(filter)).await.expect("listen in time").expect("listen");
    assert_eq!(sub.acknowledged().resource_subscriptions.as_deref(), Some(&[uri.clone()][..]), "only what exists");
    d.run_as("b", &["claim", &uuid]).ok();
    let got = timeout(NOTICE_TIMEOUT, sub.next()).await.expect("a notice in time").expect("stream");
    match got {
        Some(ServerNotification::ResourceUpdatedNotification(n)) => assert_eq!(n.params.uri, uri),
        other => panic!("not a resource notice: {other:?}"),
    }
    let _ = c.cancel().await;
}

/// Uid and gid of `nobody`.
const NOBODY: u32 = 65534;

/// Whether the privilege boundary can be crossed here: root, and a `wn` that `nobody`
/// can run (every directory above it searchable by others).
fn boundary_testable() -> bool {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let exe = common::wn_bin();
    let reachable =
        exe.ancestors().skip(1).all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
            && std::fs::metadata(&exe).is_ok_and(|m| m.permissions().mode() & 0o005 == 0o005);
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !(root && reachable) {
        println!("SKIPPED: needs root and a wn binary uid {NOBODY} can run");
    }
    root && reachable
}

/// An agent in a sandbox: `wn --token T mcp` as another user, through the daemon's
/// broker. It gets exactly the token's rights, blocking claims work across the broker,
/// and SIGKILLing the server releases its claim at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokered_as_another_user_the_server_has_exactly_its_rights() {
    use std::os::unix::process::CommandExt;
    if !boundary_testable() {
        return;
    }
    let caps = worknode::Capacities { nodes: 256, events: 4096, agents: 16, blob_chunks: 16, ..Default::default() };
    let d = Daemon::start_args("mcp_broker", caps, &["--broker"]);
    let out = d.run(&["token", "mint", "--agent", "sandboxed", "--rights", "read,claim,update"]);
    let token = out.ok().stdout.trim().to_string();
    let given = d.json(&["add", "task", "Given"])["uuid"].as_str().expect("uuid").to_string();
    let mut cmd = d.cmd();
    cmd.args(["--token", &token, "mcp"]).uid(NOBODY).gid(NOBODY).current_dir("/");
    let (c, _) = connect_at(cmd, ProtocolVersion::LATEST_WITH_INITIALIZE).await;
    let pid = SERVER_PID.with(|p| p.get());
    let uid = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server's status");
    assert!(uid.lines().any(|l| l.starts_with("Uid:") && l.contains(&NOBODY.to_string())), "{uid}");

    let refused = call(&c, "add_task", json!({ "name": "Not mine to make" })).await;
    assert_eq!(refused.is_error, Some(true), "{refused:?}");
    assert_eq!(refused.structured_content.expect("error")["exit"], 6, "refused as the CLI refuses it");
    let first = ok(&c, "claim_next", json!({})).await;
    assert_eq!(first["uuid"], json!(given), "{first}");
    assert_eq!(first["claim"]["agent"], "sandboxed", "{first}");
    ok(&c, "progress", json!({ "task": given, "percent": 30 })).await;
    ok(&c, "complete", json!({ "task": given })).await;
    // A blocking claim through the broker, woken by a task added meanwhile.
    let adder = {
        let mut cmd = d.cmd();
        cmd.args(["add", "task", "Later"]);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            common::run(&mut cmd, None).ok();
        })
    };
    let later = ok(&c, "claim_next", json!({ "wait_s": 20, "lease_s": 3600 })).await;
    adder.await.expect("adder");
    let later_uuid = text_of(&later, "uuid");
    assert_eq!(later["name"], "Later", "{later}");
    assert_eq!(d.json(&["show", &later_uuid])["status"], "claimed");
    // SIGKILL: the broker's connection closes, and the claim is free at once.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).expect("kill");
    common::wait_until("the killed server's claim is released", Duration::from_secs(20), || {
        (d.json(&["show", &later_uuid])["status"] == "ready").then_some(())
    });
    drop(c);
}
