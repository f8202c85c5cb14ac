//! `wn serve` against a real daemon: every endpoint and its errors, the bounds (body
//! size, connections), the event stream (resume with `Last-Event-ID`, `lagged` for a
//! slow reader), tokens, the OpenAPI document, and the dashboard in headless Chromium.

mod common;

use common::{wait_until, Daemon};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use worknode_tests::{Proc, Stream};

/// How long anything a test waits for may take.
const PATIENCE: Duration = Duration::from_secs(30);

/// A `wn serve` process and a client for it.
struct Server {
    /// Killed by the daemon's guard when the test ends.
    _proc: Proc,
    base: String,
    http: ureq::Agent,
    token: Option<String>,
}

impl Server {
    /// Starts `wn serve --listen 127.0.0.1:0 EXTRA…` on `d` and reads its address.
    fn start(d: &Daemon, extra: &[&str]) -> Server {
        let proc = d.spawn(&[&["serve", "--listen", "127.0.0.1:0"], extra].concat(), "wn serve");
        let line = proc.wait_for_line(Stream::Stdout, PATIENCE, |l| l.starts_with("listening on "));
        let base = line.trim().trim_start_matches("listening on ").split(' ').next().unwrap().to_string();
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(PATIENCE))
            .build()
            .new_agent();
        Server { _proc: proc, base, http, token: None }
    }

    fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth<B>(&self, r: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => r.header("Authorization", format!("Bearer {t}")),
            None => r,
        }
    }

    /// `METHOD path` with a JSON body (or none): the status and the JSON answer.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = self.url(path);
        let resp = match (method, body) {
            ("GET", _) => self.auth(self.http.get(&url)).call(),
            ("DELETE", _) => self.auth(self.http.delete(&url)).call(),
            ("POST", Some(b)) => self.auth(self.http.post(&url)).send_json(b),
            ("POST", None) => self.auth(self.http.post(&url)).send_empty(),
            ("PUT", Some(b)) => self.auth(self.http.put(&url)).send_json(b),
            ("PUT", None) => self.auth(self.http.put(&url)).send_empty(),
            (m, _) => panic!("no such method {m}"),
        };
        let mut resp = resp.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap();
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path} → {status}: not JSON ({e}): {text}"));
        (status, v)
    }

    fn get(&self, path: &str) -> Value {
        let (s, v) = self.call("GET", path, None);
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }

    fn post(&self, path: &str, body: Value) -> Value {
        let (s, v) = self.call("POST", path, Some(body));
        assert!(s == 200 || s == 201, "POST {path} → {s}: {v}");
        v
    }

    /// The request fails with HTTP `status` and error `code`, carrying a message and a hint.
    fn refused(&self, method: &str, path: &str, body: Option<Value>, status: u16, code: &str) -> Value {
        let (s, v) = self.call(method, path, body);
        assert_eq!(s, status, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], code, "{method} {path}: {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        assert!(v["error"]["hint"].as_str().is_some_and(|h| !h.is_empty()), "{v}");
        v
    }

    /// Sends raw bytes as a POST body.
    fn post_raw(&self, path: &str, bytes: &[u8]) -> (u16, Value) {
        let mut resp =
            self.http.post(self.url(path)).header("Content-Type", "application/json").send(bytes).expect("POST");
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_json().expect("a JSON answer"))
    }
}

#[test]
fn the_api_serves_tasks_claims_documents_messages_and_analytics() {
    let d = Daemon::start("serve_api");
    let s = Server::start(&d, &[]);

    // Nodes: a project and tasks, one blocked by another.
    let p = s.post("/api/tasks", json!({ "name": "Web", "kind": "project" }));
    assert_eq!(p["kind"], "project");
    let a = s.post("/api/tasks", json!({ "name": "schema", "parent": "/Web", "priority": 5, "value": 10.0 }));
    assert_eq!((a["status"].as_str(), a["path"].as_str()), (Some("ready"), Some("/Web/schema")));
    let b = s.post("/api/tasks", json!({ "name": "api", "parent": "/Web", "blocked_by": [a["uuid"]] }));
    assert_eq!(b["status"], "blocked");
    assert_eq!(b["blocked_by"][0]["name"], "schema");
    let id = a["uuid"].as_str().unwrap().to_string();

    // The same shape as the CLI's.
    let cli = d.json(&["show", &id]);
    let api = s.get(&format!("/api/tasks/{id}"));
    for k in ["uuid", "name", "kind", "status", "priority", "path", "blocked_by", "labels", "parent"] {
        assert_eq!(api[k], cli[k], "field {k}");
    }
    // By path too (percent-encoded).
    assert_eq!(s.get("/api/tasks/%2FWeb%2Fschema")["uuid"], id);

    let listed = s.get("/api/tasks?under=/Web");
    assert_eq!(listed["count"], 2);
    assert_eq!(s.get("/api/tasks?status=blocked")["nodes"][0]["name"], "api");
    assert_eq!(s.get("/api/tasks?kind=project")["count"], 1);

    // Edit.
    let (st, e) =
        s.call("PUT", &format!("/api/tasks/{id}"), Some(json!({ "description": "the tables", "priority": 7 })));
    assert_eq!(st, 200, "{e}");
    assert_eq!((e["description"].as_str(), e["priority"].as_u64()), (Some("the tables"), Some(7)));

    // Claim, progress, complete: the epoch fences.
    let c = s.post(&format!("/api/tasks/{id}/claim"), json!({ "lease_s": 60 }));
    assert_eq!(c["status"], "claimed");
    assert_eq!(c["claim"]["agent"], "http");
    let epoch = c["claim"]["epoch"].as_u64().unwrap();
    let pr = s.post(&format!("/api/tasks/{id}/progress"), json!({ "epoch": epoch, "percent": 40, "note": "half" }));
    assert_eq!(pr["progress"], 40);
    s.refused("POST", &format!("/api/tasks/{id}/complete"), Some(json!({ "epoch": epoch + 7 })), 409, "stale_epoch");
    let agents = s.get("/api/agents");
    let http = agents["agents"].as_array().unwrap().iter().find(|a| a["name"] == "http").expect("the server's agent");
    assert_eq!(http["claims"][0]["uuid"], id);
    let held = s.get("/api/agents/http/tasks");
    assert_eq!((held["count"].as_u64(), held["tasks"][0]["uuid"].as_str()), (Some(1), Some(id.as_str())));
    s.refused("GET", "/api/agents/nobody/tasks", None, 404, "agent_not_found");

    // A document under the claimed task renews its lease; read it back and list it.
    let (st, doc) =
        s.call("PUT", &format!("/api/tasks/{id}/documents/notes.md"), Some(json!({ "content": "# Notes\nhello" })));
    assert_eq!(st, 200, "{doc}");
    assert_eq!(doc["kind"], "document");
    let got = s.get(&format!("/api/documents/{}", doc["uuid"].as_str().unwrap()));
    assert_eq!((got["text"].as_str(), got["content_type"].as_str()), (Some("# Notes\nhello"), Some("text/markdown")));
    assert_eq!(s.get(&format!("/api/tasks/{id}/documents"))["documents"][0]["name"], "notes.md");

    let done = s.post(&format!("/api/tasks/{id}/complete"), json!({ "epoch": epoch, "note": "ok" }));
    assert_eq!(done["status"], "complete");
    // Its dependent became ready; claim the next best and fail it.
    let next = s.post("/api/claim", json!({ "under": "/Web" }));
    assert_eq!(next["name"], "api");
    let e2 = next["claim"]["epoch"].as_u64().unwrap();
    let failed =
        s.post(&format!("/api/tasks/{}/fail", next["uuid"].as_str().unwrap()), json!({ "epoch": e2, "reason": "no" }));
    assert_eq!(failed["status"], "failed");
    s.refused("POST", "/api/claim", Some(json!({ "under": "/Web" })), 404, "nothing_ready");

    // The bounded query.
    let q = s.post("/api/query", json!({ "kind": "task", "status": "complete", "limit": 10 }));
    assert_eq!((q["count"].as_u64(), q["nodes"][0]["name"].as_str()), (Some(1), Some("schema")));
    assert!(q["visited"].as_u64().unwrap() >= 1, "{q}");
    let budget = s.post("/api/query", json!({ "visit_budget": 1 }));
    assert_eq!(budget["budget_exhausted"], true, "{budget}");

    // Analytics: a project's progress and the pipeline's value.
    let prog = s.get("/api/analytics/progress");
    let web = &prog["projects"][0];
    assert_eq!((web["name"].as_str(), web["total"].as_u64()), (Some("Web"), Some(2)));
    assert_eq!(web["by_status"]["complete"], 1);
    assert_eq!(web["percent_complete"].as_f64(), Some(50.0));
    let pipe = s.get("/api/analytics/pipeline?under=/Web");
    assert_eq!(pipe["value_by_status"]["complete"].as_f64(), Some(10.0), "{pipe}");

    // Messages: the server's agent writes to itself, reads, acknowledges.
    let m = s.post("/api/messages", json!({ "to": "http", "text": "hi", "thread": "t1" }));
    let mid = m["id"].as_str().unwrap().to_string();
    let inbox = s.get("/api/messages");
    assert_eq!((inbox["count"].as_u64(), inbox["messages"][0]["text"].as_str()), (Some(1), Some("hi")));
    assert_eq!(s.post(&format!("/api/messages/{mid}/ack"), json!({}))["acked"], mid);
    assert_eq!(s.get("/api/messages")["count"], 0);
    s.refused("POST", &format!("/api/messages/{mid}/ack"), None, 409, "already_acked");

    // Events: append one, read the ring once.
    let seq = s.post("/api/events", json!({ "kind": "build_done", "data": "{\"ok\":true}" }))["seq"].as_u64().unwrap();
    let evs = s.get(&format!("/api/events?since={seq}"));
    assert_eq!(
        (evs["events"][0]["topic"].as_str(), evs["events"][0]["payload"]["ok"].as_bool()),
        (Some("build_done"), Some(true))
    );
    assert_eq!(evs["next"].as_u64(), Some(seq + 1));
    assert!(s.get("/api/events?limit=5")["count"].as_u64().unwrap() <= 5);

    // Delete: a node with children needs recursive.
    s.refused("DELETE", "/api/tasks/%2FWeb", None, 409, "has_children");
    let (st, rm) = s.call("DELETE", "/api/tasks/%2FWeb?recursive=true", None);
    assert_eq!((st, rm["removed"].as_u64()), (200, Some(4)), "{rm}");
    s.refused("GET", &format!("/api/tasks/{id}"), None, 404, "node_not_found");
}

#[test]
fn bad_requests_get_json_errors_and_the_server_keeps_serving() {
    let d = Daemon::start("serve_errors");
    let s = Server::start(&d, &["--max-connections", "3"]);
    let t = s.post("/api/tasks", json!({ "name": "t" }));
    let id = t["uuid"].as_str().unwrap();

    // Malformed JSON, wrong types, unknown or missing fields.
    let (st, v) = s.post_raw("/api/tasks", b"{\"name\": ");
    assert_eq!((st, v["error"]["code"].as_str()), (400, Some("usage")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("malformed JSON"), "{v}");
    let v = s.refused("POST", "/api/tasks", Some(json!({ "name": 5 })), 400, "usage");
    assert!(v["error"]["message"].as_str().unwrap().contains("wrong JSON fields"), "{v}");
    s.refused("POST", "/api/tasks", Some(json!({ "name": "x", "colour": "red" })), 400, "usage");
    s.refused("POST", "/api/tasks", Some(json!({})), 400, "usage");
    s.refused("POST", "/api/tasks", Some(json!({ "name": "y", "priority": 300 })), 400, "usage");
    s.refused("POST", "/api/tasks", Some(json!({ "name": "t" })), 409, "name_taken");
    s.refused("POST", &format!("/api/tasks/{id}/progress"), Some(json!({ "epoch": 1, "percent": 101 })), 400, "usage");
    s.refused("POST", &format!("/api/tasks/{id}/complete"), Some(json!({ "epoch": "one" })), 400, "usage");
    s.refused("PUT", &format!("/api/tasks/{id}"), Some(json!({})), 400, "usage");
    s.refused("GET", "/api/tasks?limit=0", None, 400, "usage");
    s.refused("GET", "/api/tasks?limit=many", None, 400, "usage");
    s.refused("GET", "/api/tasks?status=sleeping", None, 400, "usage");
    s.refused("POST", "/api/events", Some(json!({ "kind": "task_complete" })), 400, "usage");
    s.refused("POST", "/api/claim", Some(json!({ "lease_s": -1 })), 400, "usage");

    // Unknown ids and routes, a wrong method.
    s.refused("GET", "/api/tasks/0190a3b4-5c6d-7e01-8f00-123456789abc", None, 404, "node_not_found");
    s.refused("GET", "/api/tasks/zzzz", None, 400, "bad_node_name");
    // A path segment that is not UTF-8 once decoded: JSON, not axum's plain text.
    s.refused("GET", "/api/tasks/%FF", None, 400, "usage");
    s.refused("PUT", &format!("/api/tasks/{id}/documents/%FF"), Some(json!({ "text": "x" })), 400, "usage");
    // HTTP waits are capped at 60 s.
    let v = s.refused("POST", "/api/claim", Some(json!({ "wait_s": 61 })), 400, "usage");
    assert!(v["error"]["message"].as_str().unwrap().contains("60"), "{v}");
    let v = s.refused("GET", "/api/messages?wait_s=86400", None, 400, "usage");
    assert!(v["error"]["hint"].as_str().unwrap().contains("ask again"), "{v}");
    s.refused("GET", "/api/documents/0190a3b4-5c6d-7e01-8f00-123456789abc", None, 404, "node_not_found");
    s.refused("GET", "/api/nothing", None, 404, "not_found");
    s.refused("DELETE", "/api/agents", None, 405, "method_not_allowed");
    // Not claimed by the server's agent.
    s.refused("POST", &format!("/api/tasks/{id}/complete"), Some(json!({ "epoch": 1 })), 409, "not_claimed");

    // An oversized body: 413, and the limit named.
    let big = vec![b'x'; (1 << 20) + 10];
    let mut body = b"{\"name\":\"".to_vec();
    body.extend_from_slice(&big);
    body.extend_from_slice(b"\"}");
    let (st, v) = s.post_raw("/api/tasks", &body);
    assert_eq!((st, v["error"]["code"].as_str()), (413, Some("too_large")), "{v}");

    // Connections over the bound are answered 503 busy; the served ones go on.
    let held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(s.addr()).unwrap()).collect();
    let over = wait_until("a connection over the bound to be refused", PATIENCE, || {
        let mut c = TcpStream::connect(s.addr()).ok()?;
        c.set_read_timeout(Some(PATIENCE)).unwrap();
        let _ = c.write_all(b"GET /api/agents HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut text = String::new();
        let _ = c.read_to_string(&mut text);
        text.starts_with("HTTP/1.1 503").then_some(text)
    });
    assert!(over.contains("\"code\":\"busy\""), "{over}");
    drop(held);
    // Event streams have their own bound.
    let one = Server::start(&d, &["--max-streams", "1"]);
    let _open = Sse::open(&one.addr(), None, "");
    let mut resp = one.http.get(one.url("/api/events")).header("Accept", "text/event-stream").call().unwrap();
    let v: Value = resp.body_mut().read_json().unwrap();
    assert_eq!((resp.status().as_u16(), v["error"]["code"].as_str()), (503, Some("busy")), "{v}");
    assert_eq!(one.get("/api/events?limit=1")["count"], 1, "one-off reads are not streams");
    // And the server serves again once they close.
    wait_until("the server to serve after the connections closed", PATIENCE, || {
        let (st, _) = s.call("GET", "/api/agents", None);
        (st == 200).then_some(())
    });
    assert_eq!(s.get(&format!("/api/tasks/{id}"))["name"], "t");
}

/// Sends `request` (a whole HTTP/1.1 request, `Connection: close`) over a raw socket
/// and reads the whole answer.
fn raw(addr: &str, request: &str) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    c.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    let _ = c.read_to_string(&mut text);
    text
}

#[test]
fn foreign_hosts_cross_site_pages_and_non_json_bodies_are_refused() {
    let d = Daemon::start("serve_csrf");
    let s = Server::start(&d, &[]);
    let addr = s.addr();
    let port = addr.rsplit(':').next().unwrap();
    let body = r#"{"name":"csrf"}"#;
    let post = |host: &str, extra: &str| {
        raw(
            &addr,
            &format!(
                "POST /api/tasks HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let json = "Content-Type: application/json\r\n";
    // DNS rebinding: a foreign name in Host, even for a GET.
    let rebound =
        raw(&addr, &format!("GET /api/tasks HTTP/1.1\r\nHost: evil.example:{port}\r\nConnection: close\r\n\r\n"));
    assert!(rebound.starts_with("HTTP/1.1 421"), "{rebound}");
    assert!(rebound.contains("\"code\":\"wrong_host\""), "{rebound}");
    assert!(post(&format!("evil.example:{port}"), json).starts_with("HTTP/1.1 421"));
    // A cross-site page: refused with its Origin, even with a JSON type.
    let cross = post(&addr, &format!("{json}Origin: http://evil.example\r\n"));
    assert!(cross.starts_with("HTTP/1.1 403") && cross.contains("\"code\":\"cross_origin\""), "{cross}");
    // A plain-text body (what a page sends without a preflight), and curl -d's form type.
    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        let t = post(&addr, &format!("Content-Type: {ct}\r\n"));
        assert!(t.starts_with("HTTP/1.1 415") && t.contains("Content-Type: application/json"), "{t}");
    }
    assert_eq!(s.get("/api/tasks?limit=10")["count"], 0, "nothing refused was created");
    // The dashboard's own origin, localhost, and a client without Origin are served.
    let own = post(&addr, &format!("{json}Origin: http://{addr}\r\n"));
    assert!(own.starts_with("HTTP/1.1 201") || own.starts_with("HTTP/1.1 200"), "{own}");
    let local = raw(&addr, &format!("GET /api/tasks HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"));
    assert!(local.starts_with("HTTP/1.1 200"), "{local}");
    assert_eq!(s.get("/api/tasks?limit=10")["count"], 1);
}

#[test]
fn silent_and_slow_connections_are_closed_and_free_their_slots() {
    let d = Daemon::start("serve_idle");
    let s = Server::start(&d, &["--max-connections", "2"]);
    // One says nothing, one stops halfway through its headers: the server's header read
    // timeout (10 s, under PATIENCE) closes both, where without a timer they would hold
    // both slots for ever.
    let silent = TcpStream::connect(s.addr()).unwrap();
    let mut slow = TcpStream::connect(s.addr()).unwrap();
    slow.write_all(b"GET /api/agents HTTP/1.1\r\nHost: ").unwrap();
    for mut c in [silent, slow] {
        c.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut rest = Vec::new();
        let closed = c.read_to_end(&mut rest);
        assert!(closed.is_ok(), "the server did not close the connection: {closed:?}");
    }
    wait_until("the freed slots to serve again", PATIENCE, || {
        (s.call("GET", "/api/agents", None).0 == 200).then_some(())
    });
}

/// A minimal SSE client over a raw socket: it decodes the chunked body and yields each
/// message's `id`, `event` and `data`.
struct Sse {
    r: BufReader<TcpStream>,
    buf: String,
}

#[derive(Debug)]
struct Message {
    id: Option<u64>,
    event: String,
    data: String,
}

impl Sse {
    fn open(addr: &str, last_event_id: Option<u64>, query: &str) -> Sse {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(PATIENCE)).unwrap();
        let resume = last_event_id.map(|i| format!("Last-Event-ID: {i}\r\n")).unwrap_or_default();
        write!(c, "GET /api/events{query} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{resume}\r\n")
            .unwrap();
        let mut r = BufReader::new(c);
        let mut status = String::new();
        r.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        let mut chunked = false;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            if h.trim().is_empty() {
                break;
            }
            let h = h.to_ascii_lowercase();
            chunked |= h.starts_with("transfer-encoding:") && h.contains("chunked");
            assert!(!h.starts_with("content-type:") || h.contains("text/event-stream"), "{h}");
        }
        assert!(chunked, "an event stream is chunked");
        Sse { r, buf: String::new() }
    }

    fn chunk(&mut self) {
        let mut size = String::new();
        assert!(self.r.read_line(&mut size).unwrap() > 0, "the stream ended");
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or_else(|_| panic!("chunk size {size:?}"));
        let mut data = vec![0u8; n + 2];
        self.r.read_exact(&mut data).unwrap();
        self.buf.push_str(std::str::from_utf8(&data[..n]).unwrap());
    }

    /// The next message (keep-alive comments skipped), failing the test if none comes
    /// within [`PATIENCE`] (keep-alive comments alone do not keep it waiting).
    fn next(&mut self) -> Message {
        let until = std::time::Instant::now() + PATIENCE;
        loop {
            assert!(std::time::Instant::now() < until, "no event within {PATIENCE:?} (only keep-alive comments)");
            if let Some(cut) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..cut + 2).collect();
                let mut m = Message { id: None, event: "message".into(), data: String::new() };
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        m.id = Some(v.trim().parse().unwrap());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        m.event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        m.data.push_str(v.trim_start());
                    }
                }
                if m.data.is_empty() && m.id.is_none() {
                    continue; // a comment (keep-alive)
                }
                return m;
            }
            self.chunk();
        }
    }
}

#[test]
fn the_event_stream_resumes_with_last_event_id() {
    let d = Daemon::start("serve_sse");
    let s = Server::start(&d, &[]);
    // From `since`: three events, each with its ring sequence as id.
    let first = s.post("/api/events", json!({ "kind": "step", "data": "1" }))["seq"].as_u64().unwrap();
    s.post("/api/events", json!({ "kind": "step", "data": "2" }));
    s.post("/api/events", json!({ "kind": "step", "data": "3" }));
    let mut sse = Sse::open(&s.addr(), None, &format!("?since={first}"));
    let mut seen = Vec::new();
    for _ in 0..3 {
        let m = sse.next();
        assert_eq!(m.event, "event");
        let v: Value = serde_json::from_str(&m.data).unwrap();
        assert_eq!(v["seq"].as_u64(), m.id);
        seen.push((m.id.unwrap(), v["payload"].clone()));
    }
    assert_eq!(seen.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(), vec![json!(1), json!(2), json!(3)]);
    // Live: an event made now arrives.
    let t = s.post("/api/tasks", json!({ "name": "live" }));
    let m = sse.next();
    let v: Value = serde_json::from_str(&m.data).unwrap();
    assert_eq!((v["kind"].as_str(), v["node"].as_str()), (Some("node_created"), t["uuid"].as_str()));
    let last = m.id.unwrap();
    drop(sse);

    // Gone for a while: what happened meanwhile is delivered on resume, from after the
    // last id seen, and nothing before it.
    s.post("/api/events", json!({ "kind": "step", "data": "4" }));
    s.post("/api/events", json!({ "kind": "step", "data": "5" }));
    let mut again = Sse::open(&s.addr(), Some(last), "");
    let mut payloads = Vec::new();
    while payloads.len() < 2 {
        let m = again.next();
        assert!(m.id.unwrap() > last, "{m:?} is not after {last}");
        let v: Value = serde_json::from_str(&m.data).unwrap();
        if v["topic"] == "step" {
            payloads.push(v["payload"].clone());
        }
    }
    assert_eq!(payloads, vec![json!(4), json!(5)]);
    // A malformed Last-Event-ID is a usage error.
    let (st, v) = {
        let mut resp = s
            .http
            .get(s.url("/api/events"))
            .header("Accept", "text/event-stream")
            .header("Last-Event-ID", "soon")
            .call()
            .unwrap();
        (resp.status().as_u16(), resp.body_mut().read_json::<Value>().unwrap())
    };
    assert_eq!((st, v["error"]["code"].as_str()), (400, Some("usage")));
}

#[test]
fn a_slow_stream_reader_gets_lagged_and_the_server_stays_responsive() {
    let d = Daemon::start("serve_slow");
    let s = Server::start(&d, &[]);
    let mut slow = Sse::open(&s.addr(), None, "");
    // The client reads nothing while far more events are made than the socket buffers
    // and the stream's bounded buffer hold.
    let seg = worknode::Segment::attach(d.name(), worknode::Access::ReadWrite).unwrap();
    let payload = [b'p'; 80];
    for _ in 0..60_000 {
        seg.append(&worknode::NewEvent::new(worknode::EventKind::USER).topic("flood").payload(&payload)).unwrap();
    }
    // Meanwhile the server answers others.
    assert!(s.get("/api/agents")["count"].as_u64().unwrap() >= 1);
    s.post("/api/tasks", json!({ "name": "still serving" }));
    // The slow reader, reading at last, is told it lagged, and where the stream goes on.
    // Bounded: far fewer messages than were made come before it (each read has a timeout).
    let mut before = None;
    let lag = (0..60_000)
        .map(|_| slow.next())
        .find(|m| {
            if m.event != "lagged" {
                before = m.id;
            }
            m.event == "lagged"
        })
        .expect("a lagged message before the events ran out");
    let v: Value = serde_json::from_str(&lag.data).unwrap();
    assert!(v["missed"].as_u64().unwrap() > 0, "{v}");
    let resume = v["resume_at"].as_u64().unwrap();
    assert!(before.is_none_or(|b| resume > b), "{v} after {before:?}");
    // After the lag the stream goes on with events from the resume point (a reader still
    // behind may be told of a later lag first, each resuming further on).
    let mut resume = resume;
    let m = (0..60_000)
        .map(|_| slow.next())
        .find(|m| {
            if m.event == "lagged" {
                let at = serde_json::from_str::<Value>(&m.data).unwrap()["resume_at"].as_u64().unwrap();
                assert!(at >= resume, "{m:?} resumes before {resume}");
                resume = at;
            }
            m.event == "event"
        })
        .expect("an event after the lag");
    assert!(m.id.unwrap() >= resume, "{m:?} is before the resume point {resume}");
    assert_eq!(s.get("/api/tasks?name=still")["count"], 1);
}

#[test]
fn tokens_are_required_and_checked_and_non_loopback_needs_them() {
    let d = Daemon::start("serve_tokens");
    // A non-loopback address without tokens is refused, saying what to do.
    let out = d.run(&["--json", "serve", "--listen", "0.0.0.0:0"]);
    out.fails(6);
    let e = out.err_json();
    assert!(e["error"].as_str().unwrap().contains("without tokens"), "{e}");
    assert!(e["hint"].as_str().unwrap().contains("--require-tokens"), "{e}");

    let mut s = Server::start(&d, &["--require-tokens"]);
    let mint = |args: &[&str]| {
        let out = d.run(&[&["token", "mint"], args].concat());
        out.ok();
        out.stdout.trim().to_string()
    };
    s.refused("GET", "/api/tasks", None, 401, "unauthorized");
    s.token = Some("wnt1.forged".into());
    s.refused("GET", "/api/tasks", None, 401, "unauthorized");
    // A reader reads and cannot create.
    s.token = Some(mint(&["--agent", "reader", "--rights", "read"]));
    assert_eq!(s.get("/api/tasks")["count"], 0);
    s.refused("POST", "/api/tasks", Some(json!({ "name": "x" })), 403, "token_lacks_right");
    // A worker acts as its own agent.
    s.token = Some(mint(&["--agent", "worker", "--rights", "read,create,claim,update"]));
    let t = s.post("/api/tasks", json!({ "name": "job" }));
    let c = s.post(&format!("/api/tasks/{}/claim", t["uuid"].as_str().unwrap()), json!({}));
    assert_eq!(c["claim"]["agent"], "worker");
    let done = s
        .post(&format!("/api/tasks/{}/complete", t["uuid"].as_str().unwrap()), json!({ "epoch": c["claim"]["epoch"] }));
    assert_eq!(done["status"], "complete");
    // The stream needs the token too.
    let mut raw = TcpStream::connect(s.addr()).unwrap();
    raw.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        raw,
        "GET /api/events HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n",
        s.addr()
    )
    .unwrap();
    let mut text = String::new();
    let _ = raw.read_to_string(&mut text);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
}

/// One sample's value from Prometheus text (`name value` on a line of its own).
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

#[test]
fn metrics_are_served_in_the_prometheus_text_format() {
    let d = Daemon::start("serve_metrics");
    let s = Server::start(&d, &[]);
    let scrape = || {
        let mut resp = s.http.get(s.url("/metrics")).call().expect("GET /metrics");
        assert_eq!(resp.status().as_u16(), 200);
        let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        assert!(ct.starts_with("text/plain; version=0.0.4"), "content type {ct}");
        resp.body_mut().read_to_string().unwrap()
    };
    let before = scrape();
    assert!(before.contains("# TYPE worknode_claims_total counter"), "{before}");
    let claims = sample(&before, "worknode_claims_total");
    let t = s.post("/api/tasks", json!({"name": "scraped"}));
    let id = t["uuid"].as_str().unwrap();
    s.post(&format!("/api/tasks/{id}/claim"), json!({}));
    let after = scrape();
    assert_eq!(sample(&after, "worknode_claims_total"), claims + 1.0, "{after}");
}

#[test]
fn the_openapi_document_lists_every_route() {
    let d = Daemon::start("serve_openapi");
    let s = Server::start(&d, &[]);
    let doc = s.get("/api/openapi.json");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/tasks", "get"),
        ("/api/tasks", "post"),
        ("/api/tasks/{id}", "get"),
        ("/api/tasks/{id}", "put"),
        ("/api/tasks/{id}", "delete"),
        ("/api/tasks/{id}/claim", "post"),
        ("/api/tasks/{id}/complete", "post"),
        ("/api/tasks/{id}/fail", "post"),
        ("/api/tasks/{id}/progress", "post"),
        ("/api/tasks/{id}/documents", "get"),
        ("/api/tasks/{id}/documents/{name}", "put"),
        ("/api/claim", "post"),
        ("/api/agents", "get"),
        ("/api/agents/{name}/tasks", "get"),
        ("/api/query", "post"),
        ("/api/documents/{id}", "get"),
        ("/api/messages", "get"),
        ("/api/messages", "post"),
        ("/api/messages/{id}/ack", "post"),
        ("/api/analytics/progress", "get"),
        ("/api/analytics/pipeline", "get"),
        ("/api/events", "get"),
        ("/api/events", "post"),
        ("/metrics", "get"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} missing from the document");
    }
    // The request bodies' fields are there, typed.
    let schema = &doc["components"]["schemas"]["CompleteBody"];
    assert_eq!(schema["properties"]["epoch"]["type"], "integer", "{schema}");
    assert_eq!(schema["required"], json!(["epoch"]));
}

/// Headless Chromium, driven over the DevTools protocol.
struct Browser {
    proc: std::process::Child,
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    next_id: u64,
    _profile: tempfile_dir::Dir,
}

/// A private directory removed on drop (Chromium's fresh profile).
mod tempfile_dir {
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Browser {
    fn start() -> Browser {
        let bin = std::path::Path::new("/usr/bin/chromium");
        assert!(
            bin.exists(),
            "headless Chromium is needed at /usr/bin/chromium: apt-get install chromium (cargo xtask test does it as root)"
        );
        let profile = std::env::temp_dir().join(format!("wn-serve-chromium-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).unwrap();
        let proc = std::process::Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--window-size=1400,1000",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start chromium (apt-get install chromium (cargo xtask test does it as root))");
        let port_file = profile.join("DevToolsActivePort");
        let port: u16 = wait_until("Chromium's DevTools port", PATIENCE, || {
            std::fs::read_to_string(&port_file).ok()?.lines().next()?.trim().parse().ok()
        });
        let http: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(PATIENCE)).build().new_agent();
        let ws_url = wait_until("a page target", PATIENCE, || {
            let list: Value =
                http.get(format!("http://127.0.0.1:{port}/json/list")).call().ok()?.body_mut().read_json().ok()?;
            list.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"].as_str().map(str::to_string)
        });
        let (ws, _) = tungstenite::connect(ws_url).expect("connect to the page");
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(PATIENCE)).unwrap();
        }
        Browser { proc, ws, next_id: 1, _profile: tempfile_dir::Dir(profile) }
    }

    /// Sends a DevTools command and returns its result.
    fn cdp(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.ws
            .send(tungstenite::Message::text(json!({ "id": id, "method": method, "params": params }).to_string()))
            .unwrap();
        loop {
            let msg = self.ws.read().expect("a DevTools answer");
            let Ok(text) = msg.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap();
            if v["id"].as_u64() == Some(id) {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates a JavaScript expression in the page; its value.
    fn eval(&mut self, expr: &str) -> Value {
        self.cdp("Runtime.evaluate", json!({ "expression": expr, "returnByValue": true }))["result"]["value"].clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

#[test]
fn the_dashboard_follows_the_board_live_in_chromium() {
    let d = Daemon::start("serve_dashboard");
    let s = Server::start(&d, &[]);
    s.post("/api/tasks", json!({ "name": "Site", "kind": "project" }));
    let t = s.post("/api/tasks", json!({ "name": "Write the parser", "parent": "/Site" }));
    let blocker = s.post("/api/tasks", json!({ "name": "Design", "parent": "/Site" }));
    s.post("/api/tasks", json!({ "name": "Ship it", "parent": "/Site", "blocked_by": [blocker["uuid"]] }));
    let id = t["uuid"].as_str().unwrap().to_string();
    let (st, _) = s.call("PUT", &format!("/api/tasks/{id}/documents/plan.md"), Some(json!({ "content": "step one" })));
    assert_eq!(st, 200);

    let mut b = Browser::start();
    b.cdp("Page.enable", json!({}));
    b.cdp("Page.navigate", json!({ "url": s.url("/") }));
    wait_until("the dashboard to load and go live", PATIENCE, || {
        let v = b.eval(
            "document.body && document.body.dataset.loaded === '1' && document.getElementById('live').textContent",
        );
        (v == "live").then_some(())
    });
    let text = b.eval("document.body.innerText");
    assert!(text.as_str().unwrap().contains("Write the parser"), "{text}");
    assert!(text.as_str().unwrap().contains("Ship it waits for Design"), "{text}");
    assert!(b.eval("document.getElementById('projects').innerText").as_str().unwrap().contains("Site"));
    // A document opens in the page.
    b.eval("document.querySelector('#documents button').click()");
    wait_until("the document to open", PATIENCE, || {
        let v = b.eval("document.getElementById('document').textContent");
        v.as_str().is_some_and(|t| t.contains("/Site/Write the parser/plan.md") && t.contains("step one")).then_some(())
    });

    // Updates made through the API now show without a reload: a claim and its progress,
    // a task made after the page loaded.
    let c = s.post(&format!("/api/tasks/{id}/claim"), json!({}));
    s.post(&format!("/api/tasks/{id}/progress"), json!({ "epoch": c["claim"]["epoch"], "percent": 60 }));
    s.post("/api/tasks", json!({ "name": "Late arrival", "parent": "/Site" }));
    let card = format!("document.querySelector('[data-uuid=\"{id}\"]')");
    wait_until("the card to show the claim's progress", PATIENCE, || {
        let v = b.eval(&format!(
            "(() => {{ const c = {card}; return c ? c.closest('.column').id + ' ' + c.querySelector('.pct').textContent : null }})()"
        ));
        (v == "col-claimed 60%").then_some(())
    });
    wait_until("the new task on the board", PATIENCE, || {
        let v = b.eval("document.getElementById('col-ready').innerText");
        v.as_str().is_some_and(|t| t.contains("Late arrival")).then_some(())
    });
    wait_until("the agent holding the task", PATIENCE, || {
        let v = b.eval("document.querySelector('#agents tbody').innerText");
        v.as_str().is_some_and(|t| t.contains("http") && t.contains("Write the parser")).then_some(())
    });
    wait_until("the event feed", PATIENCE, || {
        let v = b.eval("document.getElementById('feed').innerText");
        v.as_str().is_some_and(|t| t.contains("task_claimed Write the parser by http")).then_some(())
    });

    let shot = b.cdp("Page.captureScreenshot", json!({ "format": "png" }));
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("serve-dashboard.png"), &png).unwrap();

    // More documents than the page lists (200): it says the list is cut, not silently.
    assert_eq!(b.eval("document.getElementById('documents-truncated').hidden"), true);
    // (Empty document nodes: the test daemon's blob arena is small.)
    for i in 0..200 {
        s.post("/api/tasks", json!({ "name": format!("n{i}.md"), "kind": "document", "parent": "/Site/Design" }));
    }
    wait_until("the document list to say it is cut", PATIENCE, || {
        let v = b.eval(
            "(() => { const n = document.getElementById('documents-truncated'); return n.hidden ? null : n.textContent })()",
        );
        v.as_str().is_some_and(|t| t.contains("first 200 documents")).then_some(())
    });
    wait_until("the first 200 documents listed", PATIENCE, || {
        (b.eval("document.querySelectorAll('#documents button').length") == 200).then_some(())
    });
}
