//! Worknode over HTTP (issue 17): `wn serve` beside Redis and a Python standard-library
//! REST server doing the same two operations, and the delivery latency of its event
//! stream.
//!
//! * `http-get`, `http-redis-get`, `http-python-get`: read one task — `GET
//!   /api/tasks/{id}` (the answer parsed as JSON and its id checked), or `HGETALL`.
//! * `http-cycle`, `http-redis-cycle`, `http-python-cycle`: claim the best ready task and
//!   complete it with the claim's epoch — `POST /api/claim` then `POST
//!   /api/tasks/{id}/complete {"epoch": N}`; or `LMOVE` ready→claimed, `HSET` the claim,
//!   then `HSET` complete + `LREM` pipelined. After each sample the harness makes the task
//!   ready again, untimed (a library `reopen`, `POST …/reopen`, `HSET` + `RPUSH`), so the
//!   board keeps its [`BOARD`] ready tasks.
//! * `http-sse`: the harness appends an event to the segment (a library append from this
//!   process); a sample ends when the event, read from `GET /api/events` as Server-Sent
//!   Events on another connection, has been parsed with the id the append returned.
//!
//! `wn serve` runs on a real `worknoded` (default `--fsync batch`, journal in a temporary
//! directory), both built on demand as the durability rows build the daemon; the Python
//! server is `benches/python/rest_server.py` under `python3`. Both HTTP servers are read
//! with one client ([`crate::http_client`]) over one keep-alive connection. The harness is
//! pinned to the first CPU of the pair and `worknoded` to the second; the three servers
//! run on any CPU, as `redis-server` does in every Redis row (pinned away from the
//! client, each request pays a cross-CPU wake-up). The rate of a row is its samples over
//! the time inside samples (one client, one request or cycle after the other).

use crate::durability::{start_daemon, Daemon};
use crate::histogram::Recorder;
use crate::http_client::Conn;
use crate::payload::{self, PING};
use crate::pingpong::{Driven, Plan};
use crate::report::Rate;
use crate::shm::TempDir;
use crate::suite::{Ctx, Fail, Measured};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use worknode::{Access, EventKind, Handle, NewEvent, NewNode, NodeKind, Segment, Status};

/// Ready tasks on the board of a cycle row.
const BOARD: u64 = 100;

/// The kind of the events the `http-sse` row appends.
const SSE_KIND: EventKind = EventKind(1017);

/// What a row does.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// Read one task.
    Get,
    /// Claim the best ready task and complete it.
    Cycle,
}

/// Which server answers.
#[derive(Clone, Copy, Debug)]
pub enum Peer {
    /// `wn serve` on `worknoded`.
    Worknode,
    /// `redis-server`, spoken to directly.
    Redis,
    /// `benches/python/rest_server.py`.
    Python,
}

fn e2s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn plan(ctx: &Ctx) -> Plan {
    if ctx.quick {
        Plan { warmup: 50, samples: 500, time_cap: Duration::from_secs(1) }
    } else {
        Plan { warmup: 1_000, samples: 50_000, time_cap: Duration::from_secs(20) }
    }
}

/// Like [`crate::pingpong::drive`], with an untimed `reset` after every round (it gets
/// what the round returned); also sums the time inside rounds, for the rate.
pub(crate) fn drive_reset<T>(
    plan: &Plan,
    mut round: impl FnMut(u64) -> Result<T, String>,
    mut reset: impl FnMut(T) -> Result<(), String>,
) -> Result<(Driven, Duration), String> {
    for i in 0..plan.warmup {
        let t = round(i)?;
        reset(t)?;
    }
    let mut rec = Recorder::new();
    let mut busy = Duration::ZERO;
    let start = Instant::now();
    let mut notes = Vec::new();
    let mut completed = true;
    for i in plan.warmup..plan.total() {
        let t0 = Instant::now();
        let t = round(i)?;
        let took = t0.elapsed();
        reset(t)?;
        rec.record(took.as_nanos() as u64);
        busy += took;
        if i % 256 == 0 && start.elapsed() > plan.time_cap {
            notes.push(format!("time cap of {:?} reached: {} of {} samples", plan.time_cap, rec.len(), plan.samples));
            completed = false;
            break;
        }
    }
    Ok((Driven { rec, completed, notes }, busy))
}

/// The measured row: latency, rate over the time inside samples, notes, pinning.
fn measured(driven: Driven, busy: Duration, unit: &'static str, mut notes: Vec<String>, pin: String) -> Measured {
    let n = driven.rec.len();
    let secs = busy.as_secs_f64().max(1e-9);
    notes.extend(driven.notes);
    let mut m = Measured::latency(driven.rec.stats(), notes).pinned(pin);
    m.rate = Some(Rate::new(n as f64 / secs, unit, n, secs));
    m
}

/// Where the harness (the client) runs.
fn client_pin(ctx: &Ctx) -> String {
    match ctx.pair {
        Some((a, _)) => format!("client on CPU {a}"),
        None => "client not pinned".into(),
    }
}

/// A server process of a row, killed when dropped or when its watchdog fires.
struct Server {
    child: std::process::Child,
    addr: SocketAddr,
    /// Dropping it stops the watchdog.
    _watchdog: mpsc::Sender<()>,
}

impl Server {
    /// Starts `cmd` (stdout piped), reads its first line within 30 s and finds the
    /// address after `marker` in it; lets the process run on every allowed CPU.
    fn start(ctx: &Ctx, mut cmd: Command, what: &str, marker: &str) -> Result<(Server, String), Fail> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("start {what}: {e}"))?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let (line_tx, line_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut first = String::new();
            // At most one 4 KiB line: the address line.
            let _ = BufReader::new(std::io::Read::take(out, 4096)).read_line(&mut first);
            let _ = line_tx.send(first);
        });
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let (tx, rx) = mpsc::channel::<()>();
        let deadline = ctx.child_deadline();
        std::thread::spawn(move || {
            // Dropped sender: done in time. Timeout: the server is stuck; kill it so the
            // harness's reads end.
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(deadline) {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        });
        let mut server = Server { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)), _watchdog: tx };
        let line = line_rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| format!("{what} printed no address within 30 s"))?;
        let addr = line
            .split_once(marker)
            .and_then(|(_, a)| a.split_whitespace().next())
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .ok_or_else(|| format!("{what} printed {:?}, not `{marker}ADDR:PORT`", line.trim()))?;
        server.addr = addr;
        let pin = match crate::pinning::allow_all_threads(server.child.id(), &ctx.allowed) {
            Ok(()) => format!("{what} unpinned (any of {:?})", ctx.allowed),
            Err(e) => format!("{what} left on the harness's CPU: {e}"),
        };
        Ok((server, pin))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `wn serve` on its own `worknoded`, with the harness's attachment to the segment.
struct WnServe {
    // Field order is drop order: the server, the attachment, then the daemon.
    server: Server,
    seg: Segment,
    daemon: Daemon,
    _data: TempDir,
    pin: String,
}

impl WnServe {
    fn start(ctx: &Ctx, tag: &str) -> Result<WnServe, Fail> {
        let wn = crate::mcp::wn_binary()?;
        let name = crate::unique_name(tag);
        let _ = Segment::unlink(&name);
        let data = TempDir::new(&ctx.tmp, tag)?;
        let args = ["--nodes", "1024", "--events", "65536", "--grace-ms", "0"];
        let (daemon, dpin) = start_daemon(ctx, &name, &args, data.path())?;
        let seg = Segment::attach(&name, Access::ReadWrite).map_err(|e| format!("attach {name}: {e}"))?;
        let mut cmd = Command::new(&wn);
        cmd.args(["--segment", &name, "serve", "--listen", "127.0.0.1:0"]);
        let (server, spin) = Server::start(ctx, cmd, "wn serve", "listening on http://")?;
        Ok(WnServe { server, seg, daemon, _data: data, pin: format!("{dpin}; {spin}") })
    }

    /// Stops the daemon cleanly (the server first).
    fn stop(self) -> Result<(), String> {
        let WnServe { server, seg, mut daemon, _data, .. } = self;
        drop(server);
        drop(seg);
        daemon.stop()
    }
}

/// `count` ready tasks under a project (the `http` and `mcp` rows' boards).
pub(crate) fn board(seg: &Segment, count: u64) -> Result<Vec<Handle>, String> {
    let project = seg.add(seg.root(), &NewNode::new(NodeKind::Project, "bench")).map_err(e2s)?;
    let mut tasks = Vec::new();
    for i in 0..count {
        let t = seg.add(project, &NewNode::new(NodeKind::Task, &format!("t{i}"))).map_err(e2s)?;
        seg.update(t, |n| n.set_status(Status::Ready)).map_err(e2s)?;
        tasks.push(t);
    }
    Ok(tasks)
}

/// A JSON string field, or an error naming it.
fn text<'a>(v: &'a Value, field: &str, what: &str) -> Result<&'a str, String> {
    v[field].as_str().ok_or_else(|| format!("{what} answered no {field}: {v}"))
}

/// Reads a task and checks the answer is that task.
fn get_checked(conn: &mut Conn, path: &str, id_field: &str, id: &str) -> Result<usize, String> {
    let (status, body) = conn.request("GET", path, b"")?;
    if status != 200 {
        return Err(format!("GET {path}: HTTP {status}: {}", String::from_utf8_lossy(body)));
    }
    let len = body.len();
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("GET {path}: not JSON: {e}"))?;
    if v[id_field] != id {
        return Err(format!("GET {path} answered another node: {v}"));
    }
    Ok(len)
}

/// Claim the best ready task, complete it with its epoch: the task's id.
fn cycle_http(conn: &mut Conn, id_field: &str) -> Result<String, String> {
    let task = conn.json("POST", "/api/claim", b"{}")?;
    let id = text(&task, id_field, "POST /api/claim")?.to_string();
    let epoch =
        task["claim"]["epoch"].as_u64().ok_or_else(|| format!("POST /api/claim answered no claim.epoch: {task}"))?;
    let body = json!({ "epoch": epoch }).to_string();
    let done = conn.json("POST", &format!("/api/tasks/{id}/complete"), body.as_bytes())?;
    if done["status"] != "complete" {
        return Err(format!("complete answered {done}"));
    }
    Ok(id)
}

/// `http-get` and `http-cycle`.
fn worknode(ctx: &Ctx, op: Op) -> Result<Measured, Fail> {
    let plan = plan(ctx);
    let wn = WnServe::start(ctx, "http")?;
    let tasks = board(
        &wn.seg,
        match op {
            Op::Get => 1,
            Op::Cycle => BOARD,
        },
    )?;
    let mut conn = Conn::connect(wn.server.addr)?;
    let mut notes = vec![
        "wn serve (axum, 2 workers) on worknoded --fsync batch; one HTTP/1.1 keep-alive connection, hand-written client"
            .to_string(),
    ];
    let (driven, busy) = match op {
        Op::Get => {
            let uuid = wn.seg.read(tasks[0]).map_err(e2s)?.uuid().to_string();
            let path = format!("/api/tasks/{uuid}");
            let len = get_checked(&mut conn, &path, "uuid", &uuid)?;
            notes.push(format!("GET /api/tasks/UUID: {len}-byte answer (wn show --json), parsed and checked"));
            drive_reset(&plan, |_| get_checked(&mut conn, &path, "uuid", &uuid).map(drop), |()| Ok(()))?
        }
        Op::Cycle => {
            notes.push(format!("POST /api/claim, then POST /api/tasks/UUID/complete {{epoch}}; {BOARD} ready tasks, each reopened untimed (library call) after its sample"));
            let seg = &wn.seg;
            drive_reset(
                &plan,
                |_| cycle_http(&mut conn, "uuid"),
                |uuid| {
                    let id = uuid::Uuid::parse_str(&uuid).map_err(e2s)?;
                    seg.reopen(seg.lookup(id).map_err(e2s)?).map(drop).map_err(e2s)
                },
            )?
        }
    };
    if let Op::Cycle = op {
        let ready = tasks.iter().filter(|t| wn.seg.read(**t).is_ok_and(|n| n.status() == Some(Status::Ready))).count();
        if ready != tasks.len() {
            return Err(format!("{ready} of {} tasks ready after the run", tasks.len()).into());
        }
        notes.push(format!("every completed task reopened: {ready} ready at the end"));
    }
    let pin = wn.pin.clone();
    drop(conn);
    wn.stop()?;
    let unit = match op {
        Op::Get => "requests/s",
        Op::Cycle => "cycles/s",
    };
    Ok(measured(driven, busy, unit, notes, pin))
}

/// `benches/python/rest_server.py`, if it and `python3` are here.
fn python_script() -> Result<(PathBuf, PathBuf), Fail> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python").join("rest_server.py");
    let python = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("python3")).find(|p| p.is_file()))
        .ok_or_else(|| Fail::Skip("skipped: python3 is not on PATH; install it (`apt-get install python3`)".into()))?;
    if !script.is_file() {
        return Err(Fail::Skip(format!("skipped: {} is missing (run from the repository)", script.display())));
    }
    Ok((python, script))
}

/// `http-python-get` and `http-python-cycle`.
fn python(ctx: &Ctx, op: Op) -> Result<Measured, Fail> {
    let (python, script) = python_script()?;
    let version = Command::new(&python)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let plan = plan(ctx);
    let mut cmd = Command::new(&python);
    cmd.arg(&script).args(["--tasks", &BOARD.to_string(), "--deadline-s", &ctx.child_deadline().as_secs().to_string()]);
    let (server, spin) = Server::start(ctx, cmd, "rest_server.py", "listening on ")?;
    let mut conn = Conn::connect(server.addr)?;
    let mut notes = vec![format!(
        "{version} http.server.ThreadingHTTPServer, HTTP/1.1 keep-alive, json, tasks in a dict under one lock; same client as http-get"
    )];
    let (driven, busy) = match op {
        Op::Get => {
            let len = get_checked(&mut conn, "/api/tasks/task-0", "id", "task-0")?;
            notes.push(format!("GET /api/tasks/ID: {len}-byte answer, parsed and checked"));
            drive_reset(&plan, |_| get_checked(&mut conn, "/api/tasks/task-0", "id", "task-0").map(drop), |()| Ok(()))?
        }
        Op::Cycle => {
            notes.push(format!(
                "POST /api/claim (pop a heap of ready tasks), then POST /api/tasks/ID/complete {{epoch}}; {BOARD} ready tasks, each reopened untimed (POST …/reopen) after its sample"
            ));
            let conn = std::cell::RefCell::new(&mut conn);
            drive_reset(
                &plan,
                |_| cycle_http(&mut conn.borrow_mut(), "id"),
                |id| conn.borrow_mut().json("POST", &format!("/api/tasks/{id}/reopen"), b"").map(drop),
            )?
        }
    };
    let stats = conn.json("GET", "/api/stats", b"")?;
    if stats["connections"] != 1 {
        return Err(format!(
            "the Python server saw {} connections, not one keep-alive connection",
            stats["connections"]
        )
        .into());
    }
    if let Op::Cycle = op {
        if stats["ready"] != BOARD {
            return Err(format!("{} of {BOARD} tasks ready after the run", stats["ready"]).into());
        }
        notes.push(format!("every completed task reopened: {BOARD} ready at the end"));
    }
    notes.push("the server counted one connection for the whole run".into());
    let unit = match op {
        Op::Get => "requests/s",
        Op::Cycle => "cycles/s",
    };
    Ok(measured(driven, busy, unit, notes, format!("{}; {spin}", client_pin(ctx))))
}

fn rerr(e: redis::RedisError) -> String {
    format!("redis: {e}")
}

/// `http-redis-get` and `http-redis-cycle`: what an agent would do with Redis instead.
fn redis(ctx: &Ctx, op: Op) -> Result<Measured, Fail> {
    use redis::Commands;
    let server = crate::redis_peer::server(ctx)?;
    let mut con = crate::redis_peer::connect(&server.url)?;
    let plan = plan(ctx);
    let task = |id: u64| format!("wnb:http:task:{id}");
    let (ready, claimed) = ("wnb:http:ready", "wnb:http:claimed");
    let _: () = con.del(&[ready, claimed]).map_err(rerr)?;
    for id in 0..BOARD {
        let name = format!("t{id}");
        let fields = [("id", id.to_string()), ("name", name), ("kind", "task".into()), ("status", "ready".into())];
        let _: () = con.hset_multiple(task(id), &fields).map_err(rerr)?;
        let _: () = con.rpush(ready, id).map_err(rerr)?;
    }
    let mut notes = vec![crate::redis_peer::note(&server)];
    let (driven, busy) = match op {
        Op::Get => {
            notes.push("HGETALL of a 4-field task hash (one round trip)".into());
            let key = task(0);
            drive_reset(
                &plan,
                |_| {
                    let h: std::collections::HashMap<String, String> = con.hgetall(&key).map_err(rerr)?;
                    (h.get("id").map(String::as_str) == Some("0"))
                        .then_some(())
                        .ok_or_else(|| format!("HGETALL {key}: {h:?}"))
                },
                |()| Ok(()),
            )?
        }
        Op::Cycle => {
            notes.push(format!(
                "LMOVE ready→claimed, HSET the claim, then HSET complete + LREM claimed pipelined (three round trips); {BOARD} tasks, each made ready again untimed (HSET + RPUSH)"
            ));
            let con = std::cell::RefCell::new(&mut con);
            drive_reset(
                &plan,
                |_| {
                    let mut c = con.borrow_mut();
                    let id: Option<u64> =
                        redis::cmd("LMOVE").arg(ready).arg(claimed).arg("LEFT").arg("RIGHT").query(*c).map_err(rerr)?;
                    let id = id.ok_or("the ready list ran dry")?;
                    let _: () =
                        c.hset_multiple(task(id), &[("status", "claimed"), ("claimant", "bench")]).map_err(rerr)?;
                    let (n,): (i64,) = redis::pipe()
                        .hset(task(id), "status", "complete")
                        .ignore()
                        .lrem(claimed, 1, id)
                        .query(*c)
                        .map_err(rerr)?;
                    (n == 1).then_some(id).ok_or_else(|| format!("LREM removed {n} entries of task {id}"))
                },
                |id| {
                    let mut c = con.borrow_mut();
                    redis::pipe()
                        .hset(task(id), "status", "ready")
                        .ignore()
                        .rpush(ready, id)
                        .ignore()
                        .query(*c)
                        .map_err(rerr)
                },
            )?
        }
    };
    if let Op::Cycle = op {
        let n: u64 = con.llen(ready).map_err(rerr)?;
        if n != BOARD {
            return Err(format!("{n} of {BOARD} tasks ready after the run").into());
        }
        notes.push(format!("every completed task made ready again: {n} ready at the end"));
    }
    let pin = format!("{}; redis-server not pinned", client_pin(ctx));
    let unit = match op {
        Op::Get => "requests/s",
        Op::Cycle => "cycles/s",
    };
    Ok(measured(driven, busy, unit, notes, pin))
}

/// One `http-*` request row.
pub fn run(ctx: &Ctx, peer: Peer, op: Op) -> Result<Measured, Fail> {
    match peer {
        Peer::Worknode => worknode(ctx, op),
        Peer::Redis => redis(ctx, op),
        Peer::Python => python(ctx, op),
    }
}

/// `http-sse`: from a library append to the event parsed off the `wn serve` stream.
pub fn sse(ctx: &Ctx) -> Result<Measured, Fail> {
    let plan = plan(ctx);
    let wn = WnServe::start(ctx, "http-sse")?;
    let mut stream = Conn::connect(wn.server.addr)?;
    // From the current tail: the stream misses nothing appended after it opened.
    stream.open_stream(&format!("/api/events?since={}", wn.seg.ring_tail()))?;
    let seg = &wn.seg;
    let (driven, _busy) = drive_reset(
        &plan,
        |i| {
            let seq = seg.append(&NewEvent::new(SSE_KIND).payload(&payload::make(i, PING))).map_err(e2s)?;
            // Bounded: other events (there are none here) would come before ours.
            for _ in 0..1024 {
                let m = stream.next_event()?;
                if m.event != "event" {
                    return Err(format!("the stream sent `{}`: {}", m.event, m.data));
                }
                match m.id {
                    Some(id) if id == seq => return Ok(()),
                    Some(id) if id < seq => continue,
                    other => return Err(format!("the stream sent id {other:?} while waiting for {seq}")),
                }
            }
            Err(format!("event {seq} not among 1024 stream messages"))
        },
        |()| Ok(()),
    )?;
    let notes = vec![
        "harness appends a 64-byte event (library call); the sample ends when GET /api/events (Accept: text/event-stream, another keep-alive connection) has delivered it with that id".into(),
        "wn serve: a ring reader thread parked on the ring's futex per stream, a channel to the response body".into(),
    ];
    let pin = wn.pin.clone();
    drop(stream);
    wn.stop()?;
    let (stats, notes) = crate::pingpong::stats_only(driven, notes);
    Ok(Measured::latency(stats, notes).pinned(pin))
}
