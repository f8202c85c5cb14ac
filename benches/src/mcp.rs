//! `wn mcp` per call (issue 14): a tool call over MCP stdio, beside the same done by
//! running `wn --json` as a subprocess per call — what an MCP server that shells out to a
//! CLI does, and what an agent without our server does.
//!
//! * `mcp-show` / `mcp-show-subprocess`: `show` of one task.
//! * `mcp-cycle` / `mcp-cycle-subprocess`: `claim_next` then `complete` on a board of
//!   [`BOARD`] ready tasks; the harness reopens each completed task (one library call,
//!   inside the sample), so the board keeps its size and the row measures the route, not
//!   the board (the `claims-*` rows measure claims on large boards).
//!
//! The MCP client here is a plain newline-delimited JSON-RPC writer and reader on the
//! server's pipes, as every stdio MCP client is: a sample is from writing the request to
//! having parsed the response and checked it is not an error. The harness is pinned; the
//! server may run on any CPU, as it would beside a real client (pinned to the other CPU
//! it measured 2–3× slower: each call then wakes an idle vCPU). The segment is
//! the harness's own (no daemon), as the `claims-*` rows use. A watchdog kills a server
//! that stops answering, so a read never hangs past the child deadline.

use crate::durability::locate_binary;
use crate::pingpong::{drive, stats_only, Plan};
use crate::suite::{Ctx, Fail, Measured};
use crate::TempSegment;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use worknode::{Capacities, Handle, Status};

/// Ready tasks on the board of a cycle row.
const BOARD: u64 = 100;

/// What is measured.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// `show` of one task.
    Show,
    /// `claim_next` + `complete`.
    Cycle,
}

/// How a call reaches Worknode.
#[derive(Clone, Copy, Debug)]
pub enum Route {
    /// One `wn mcp` server, over its stdio.
    Mcp,
    /// `wn --json …` started per call.
    Subprocess,
}

fn e2s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn plan(ctx: &Ctx, route: Route) -> Plan {
    match (ctx.quick, route) {
        (true, Route::Mcp) => Plan { warmup: 50, samples: 500, time_cap: Duration::from_secs(2) },
        (true, Route::Subprocess) => Plan { warmup: 5, samples: 40, time_cap: Duration::from_secs(2) },
        (false, Route::Mcp) => Plan { warmup: 500, samples: 10_000, time_cap: Duration::from_secs(20) },
        (false, Route::Subprocess) => Plan { warmup: 20, samples: 1_000, time_cap: Duration::from_secs(20) },
    }
}

/// A running `wn --agent bench mcp`, killed when dropped or when its watchdog fires.
struct Server {
    child: std::process::Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
    line: String,
    /// Dropping it stops the watchdog.
    _watchdog: mpsc::Sender<()>,
}

impl Server {
    fn start(wn: &Path, segment: &str, deadline: Duration) -> Result<Server, String> {
        let mut child = Command::new(wn)
            .args(["--segment", segment, "--agent", "bench", "mcp"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn {} mcp: {e}", wn.display()))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let (tx, rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            // Dropped sender: done in time. Timeout: the server is stuck; kill it so the
            // harness's read ends.
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(deadline) {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        });
        let mut s = Server { child, stdin, stdout, next_id: 0, line: String::new(), _watchdog: tx };
        let init = json!({ "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": { "name": "wn-bench", "version": "1" } });
        s.request("initialize", &init)?;
        s.send(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))?;
        Ok(s)
    }

    fn send(&mut self, v: &Value) -> Result<(), String> {
        writeln!(self.stdin, "{v}").and_then(|_| self.stdin.flush()).map_err(|e| format!("write to wn mcp: {e}"))
    }

    /// One request and its response's `result`.
    fn request(&mut self, method: &str, params: &Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))?;
        // Bounded: the server sends nothing unasked but the one response (no
        // subscriptions here), and the watchdog ends a silent one.
        for _ in 0..16 {
            self.line.clear();
            let n = self.stdout.read_line(&mut self.line).map_err(|e| format!("read from wn mcp: {e}"))?;
            if n == 0 {
                return Err("wn mcp closed its output (killed by the watchdog?)".into());
            }
            let mut v: Value = serde_json::from_str(&self.line).map_err(|e| format!("wn mcp sent non-JSON: {e}"))?;
            if v["id"] == json!(id) {
                if let Some(e) = v.get("error") {
                    return Err(format!("{method}: {e}"));
                }
                return Ok(v["result"].take());
            }
        }
        Err(format!("{method}: no response among 16 lines"))
    }

    /// A tool call that must succeed; its structured content.
    fn call(&mut self, tool: &str, args: Value) -> Result<Value, String> {
        let mut r = self.request("tools/call", &json!({ "name": tool, "arguments": args }))?;
        if r["isError"] != json!(false) {
            return Err(format!("{tool}: {}", r["content"][0]["text"]));
        }
        Ok(r["structuredContent"].take())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes the task just completed ready again (the harness's own library call).
fn reopen(seg: &TempSegment, uuid: &str) -> Result<(), String> {
    let id = uuid::Uuid::parse_str(uuid).map_err(e2s)?;
    seg.reopen(seg.lookup(id).map_err(e2s)?).map(drop).map_err(e2s)
}

/// `wn --segment S --json ARGS`, run to completion; its JSON answer.
fn run_wn(wn: &Path, segment: &str, args: &[&str]) -> Result<Value, String> {
    let out = Command::new(wn)
        .args(["--segment", segment, "--json", "--agent", "bench"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run wn: {e}"))?;
    if !out.status.success() {
        return Err(format!("wn {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("wn {args:?} printed non-JSON: {e}"))
}

/// The tasks of a run: one to show, or [`BOARD`] ready tasks to cycle through.
fn board(seg: &TempSegment, op: Op) -> Result<Vec<Handle>, String> {
    let count = match op {
        Op::Show => 1,
        Op::Cycle => BOARD,
    };
    crate::http::board(seg, count)
}

/// `wn`, built beside wn-bench like the daemon (once per run); missing, the row is skipped.
pub(crate) fn wn_binary() -> Result<PathBuf, Fail> {
    thread_local! {
        static WN: std::cell::RefCell<Option<PathBuf>> = const { std::cell::RefCell::new(None) };
    }
    if let Some(p) = WN.with(|w| w.borrow().clone()) {
        return Ok(p);
    }
    let p = locate_binary("wn")?;
    WN.with(|w| *w.borrow_mut() = Some(p.clone()));
    Ok(p)
}

/// One `mcp-*` row.
pub fn run(ctx: &Ctx, op: Op, route: Route) -> Result<Measured, Fail> {
    let wn = wn_binary()?;
    let plan = plan(ctx, route);
    let caps = Capacities { nodes: 256, events: 1 << 16, agents: 8, blob_chunks: 4, sets: 2, ..Capacities::default() };
    let seg = TempSegment::create("mcp", &caps).map_err(e2s)?;
    let tasks = board(&seg, op)?;
    let show_id = seg.read(tasks[0]).map_err(e2s)?.uuid().to_string();
    let mut notes = vec![format!("{} tasks on the board", tasks.len())];
    let mut pin_note = ctx.pin_note("ok");
    let driven = match route {
        Route::Mcp => {
            let mut server = Server::start(&wn, seg.name(), ctx.child_deadline())?;
            // The server may run on any CPU, as beside a real client: pinned away from the
            // harness, every call would pay a wake-up of an idle vCPU (~90 µs here);
            // the kernel puts a reader woken by a pipe beside its writer instead.
            match crate::pinning::allow_all_threads(server.child.id(), &ctx.allowed) {
                Ok(()) => pin_note = format!("{pin_note}; wn mcp unpinned (any of {:?})", ctx.allowed),
                Err(e) => pin_note = format!("{pin_note}; wn mcp left on the harness's CPU: {e}"),
            }
            drive(&plan, |_| match op {
                Op::Show => server.call("show", json!({ "node": show_id })).map(drop),
                Op::Cycle => {
                    let task = server.call("claim_next", json!({}))?;
                    let uuid = task["uuid"].as_str().ok_or("claim_next answered no uuid")?.to_string();
                    let done = server.call("complete", json!({ "task": uuid }))?;
                    (done["status"] == "complete").then_some(()).ok_or_else(|| format!("not completed: {done}"))?;
                    reopen(&seg, &uuid)
                }
            })?
        }
        Route::Subprocess => {
            // Each `wn` inherits the harness's CPU, and the harness only waits for it.
            pin_note = format!("{pin_note}; each wn process on the harness's CPU");
            drive(&plan, |_| match op {
                Op::Show => run_wn(&wn, seg.name(), &["show", &show_id]).map(drop),
                Op::Cycle => {
                    let task = run_wn(&wn, seg.name(), &["claim", "--next"])?;
                    let uuid = task["uuid"].as_str().ok_or("claim --next printed no uuid")?.to_string();
                    let done = run_wn(&wn, seg.name(), &["done", &uuid])?;
                    (done["status"] == "complete").then_some(()).ok_or_else(|| format!("not completed: {done}"))?;
                    reopen(&seg, &uuid)
                }
            })?
        }
    };
    if let Op::Cycle = op {
        let ready = tasks.iter().filter(|t| seg.read(**t).is_ok_and(|n| n.status() == Some(Status::Ready))).count();
        if ready != tasks.len() {
            return Err(format!("{ready} of {} tasks ready after the run", tasks.len()).into());
        }
        notes.push(format!("every completed task reopened: {ready} ready at the end"));
    }
    let (stats, notes) = stats_only(driven, notes);
    Ok(Measured::latency(stats, notes).pinned(pin_note))
}
