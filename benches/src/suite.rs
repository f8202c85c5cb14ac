//! The suite: the command line, the list of measurements, the run, and the dispatch of
//! hidden child roles.
//!
//! Every measurement has an id (`ring-spin`, `uds`, `tput-ring-1to1`, …) and a group
//! (`latency`, `throughput`, `coordination`, `claims`, `durability`, `scale`, …). `--only` takes a
//! comma-separated list; an item selects the measurements whose id or group contains it.
//! A measurement that cannot run here (no `redis-server`, iceoryx2 failing to start) is
//! reported as skipped with the reason; one that fails is reported as failed and makes
//! the run exit non-zero.

use crate::histogram::Stats;
use crate::pingpong::Plan;
use crate::proc::{Child, RoleCtx};
use crate::report::{Entry, Rate, Report};
use crate::sysinfo::{CpuTimes, SysInfo};
use clap::Parser;
use std::cell::RefCell;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Side-by-side latency and throughput harness: the Worknode ring beside the IPC
/// mechanisms and stores a user would otherwise pick, in separate processes, with
/// HdrHistogram percentiles.
#[derive(Parser, Debug)]
#[command(name = "wn-bench", version)]
pub struct Cli {
    /// A short run (seconds), for CI: it proves the harness works; its numbers are noisy.
    #[arg(long)]
    pub quick: bool,
    /// Write the results (machine description, one entry per measurement) as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write an SVG plot: a panel per group, latency percentiles or rates per mechanism.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Draw the plot (`--plot FILE`) from a run's `--json` file instead of running.
    #[arg(long, value_name = "FILE.json", requires = "plot")]
    pub plot_from: Option<PathBuf>,
    /// Run only these measurements: comma-separated ids or groups, or parts of them
    /// (e.g. `ring,uds` or `latency`). `--list` shows them.
    #[arg(long, value_name = "NAME[,NAME...]")]
    pub only: Option<String>,
    /// List the measurements and exit.
    #[arg(long)]
    pub list: bool,
    /// Internal: run as the other process of a measurement.
    #[arg(long, hide = true)]
    pub role: Option<String>,
    /// Internal: KEY=VALUE arguments of the role.
    #[arg(long = "role-arg", hide = true)]
    pub role_arg: Vec<String>,
    /// Internal: pin the role to this CPU.
    #[arg(long, hide = true)]
    pub cpu: Option<usize>,
    /// Internal: the role ends itself after this many seconds.
    #[arg(long = "deadline-s", hide = true, default_value_t = 300)]
    pub deadline_s: u64,
}

/// Why a measurement produced no numbers.
#[derive(Debug)]
pub enum Fail {
    /// It cannot run on this host (the reason says what to install or why).
    Skip(String),
    /// It ran and failed.
    Error(String),
}

impl From<String> for Fail {
    fn from(s: String) -> Self {
        Fail::Error(s)
    }
}

impl From<&str> for Fail {
    fn from(s: &str) -> Self {
        Fail::Error(s.to_string())
    }
}

/// What one measurement produced.
#[derive(Debug, Default)]
pub struct Measured {
    /// Latency percentiles, if it measures latency.
    pub latency: Option<Stats>,
    /// A rate, if it measures throughput.
    pub rate: Option<Rate>,
    /// Remarks (parameters, caps hit, how pinning went).
    pub notes: Vec<String>,
    /// How the processes were pinned.
    pub pinning: String,
    /// Extra numbers for the JSON entry.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Measured {
    /// A latency result.
    pub fn latency(stats: Stats, notes: Vec<String>) -> Measured {
        Measured { latency: Some(stats), notes, ..Measured::default() }
    }

    /// A rate result.
    pub fn rate(rate: Rate, notes: Vec<String>) -> Measured {
        Measured { rate: Some(rate), notes, ..Measured::default() }
    }

    /// With the pinning description.
    pub fn pinned(mut self, p: String) -> Measured {
        self.pinning = p;
        self
    }

    /// With an extra JSON field.
    pub fn with(mut self, k: &str, v: serde_json::Value) -> Measured {
        self.extra.insert(k.to_string(), v);
        self
    }
}

/// What every measurement gets: the mode, the plan and the shared resources.
pub struct Ctx {
    /// `--quick`.
    pub quick: bool,
    /// Round trips per latency point.
    pub plan: Plan,
    /// CPUs for the measuring process and the other one, if pinning is possible.
    pub pair: Option<(usize, usize)>,
    /// CPUs this process may use.
    pub allowed: Vec<usize>,
    /// Where temporary files go (SQLite databases, journals, sockets).
    pub tmp: PathBuf,
    /// The Redis server, started on first use.
    pub redis: RefCell<Option<Result<std::rc::Rc<crate::redis_peer::RedisServer>, String>>>,
    /// The `worknoded` binary, found or built on first use.
    pub daemon: RefCell<Option<Result<PathBuf, String>>>,
}

impl Ctx {
    /// Deadline given to each child process.
    pub fn child_deadline(&self) -> Duration {
        if self.quick {
            Duration::from_secs(60)
        } else {
            Duration::from_secs(600)
        }
    }

    /// How long to wait for a child's `ready` or `result` line.
    pub fn answer_timeout(&self) -> Duration {
        Duration::from_secs(if self.quick { 30 } else { 300 })
    }

    /// Starts the other process of a two-process measurement, pinned to the second CPU.
    pub fn spawn(&self, role: &str, args: &[(&str, String)]) -> Result<Child, String> {
        let mut c = Child::spawn(role, args, self.pair.map(|p| p.1), self.child_deadline())?;
        c.wait_ready(self.answer_timeout())?;
        Ok(c)
    }

    /// Starts a child pinned to `cpu` (or not pinned), without waiting for it.
    pub fn spawn_on(&self, role: &str, args: &[(&str, String)], cpu: Option<usize>) -> Result<Child, String> {
        Child::spawn(role, args, cpu, self.child_deadline())
    }

    /// Pins this process to the first CPU of the pair until the guard is dropped.
    pub fn pin_parent(&self) -> PinGuard {
        let outcome = match self.pair {
            None => "none".to_string(),
            Some((c, _)) => match crate::pinning::pin(0, c) {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("failed:{e}"),
            },
        };
        PinGuard { allowed: self.allowed.clone(), outcome }
    }

    /// Describes the pinning of a two-process measurement.
    pub fn pin_note(&self, child: &str) -> String {
        match self.pair {
            None => "not pinned (CPUs 0 and 1 are not both available)".to_string(),
            Some((a, b)) => {
                let me = PARENT_PIN.with(|p| p.borrow().clone());
                if me == "ok" && child == "ok" {
                    format!("CPU {a} / CPU {b}")
                } else {
                    format!("pinning failed (this process: {me}; other: {child})")
                }
            }
        }
    }
}

thread_local! {
    static PARENT_PIN: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Keeps this process pinned; restores its affinity on drop.
pub struct PinGuard {
    allowed: Vec<usize>,
    outcome: String,
}

impl PinGuard {
    /// How pinning went.
    pub fn outcome(&self) -> &str {
        &self.outcome
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        if !self.allowed.is_empty() {
            let _ = crate::pinning::unpin(&self.allowed);
        }
    }
}

type RunFn = fn(&Ctx) -> Result<Measured, Fail>;

/// One measurement of the suite.
pub struct Spec {
    /// Id (`--only` matches it).
    pub id: &'static str,
    /// Group (`--only` matches it too).
    pub group: &'static str,
    /// What is measured, for people.
    pub label: &'static str,
    /// The runner.
    pub run: RunFn,
}

macro_rules! spec {
    ($id:literal, $group:literal, $label:literal, $run:expr) => {
        Spec { id: $id, group: $group, label: $label, run: $run }
    };
}

/// Every measurement, in the order they run.
pub fn specs() -> Vec<Spec> {
    use crate::broker::{self, Op, Path};
    use crate::{
        claims, durability, floor, iceoryx, kernel_ipc, mcp, redis_peer, restore, ring, scale, sqlite, throughput,
    };
    use worknode::Wait;
    vec![
        spec!("floor", "latency", "cache-line ping-pong (shared mapping, spin): the physical floor", floor::run),
        spec!("ring-spin", "latency", "Worknode ring, Wait::Spin", |c| ring::pingpong(c, Wait::Spin)),
        spec!("ring-spin-then-park", "latency", "Worknode ring, Wait::SpinThenPark", |c| ring::pingpong(
            c,
            Wait::SpinThenPark
        )),
        spec!("ring-park", "latency", "Worknode ring, Wait::Park (futex)", |c| ring::pingpong(c, Wait::Park)),
        spec!("iceoryx2", "latency", "iceoryx2 publish-subscribe (busy-poll receive)", iceoryx::run),
        spec!("eventfd", "latency", "eventfd wake-up + shared 64-byte buffer", kernel_ipc::eventfd),
        spec!("pipe", "latency", "pipe (two anonymous pipes)", kernel_ipc::pipe),
        spec!("uds", "latency", "Unix domain socket (stream)", kernel_ipc::uds),
        spec!("tcp", "latency", "TCP loopback 127.0.0.1, TCP_NODELAY", kernel_ipc::tcp),
        spec!("redis-pubsub", "latency", "Redis PUBLISH / SUBSCRIBE", redis_peer::pubsub),
        spec!("redis-streams", "latency", "Redis XADD / XREAD BLOCK", redis_peer::streams),
        spec!("sqlite-wal", "latency", "SQLite WAL: UPDATE a row + commit, the other polls it", sqlite::poll_latency),
        spec!("tput-ring-1to1", "throughput", "Worknode ring, 1 producer → 1 reader process", |c| {
            throughput::ring(c, 1, 1)
        }),
        spec!("tput-ring-2to1", "throughput", "Worknode ring, 2 producers → 1 reader process", |c| {
            throughput::ring(c, 2, 1)
        }),
        spec!("tput-ring-1to2", "throughput", "Worknode ring, 1 producer → 2 reader processes", |c| {
            throughput::ring(c, 1, 2)
        }),
        spec!("tput-ring-1to0", "throughput", "Worknode ring, 1 producer, no reader (append path alone)", |c| {
            throughput::ring(c, 1, 0)
        }),
        spec!("tput-ring-batch-1to1", "throughput", "Worknode ring, 1 → 1 process, append_batch of 32", |c| {
            throughput::ring_batched(c, 1, 1, throughput::BATCH)
        }),
        spec!("tput-rtrb-1to1", "throughput", "rtrb SPSC ring, 2 threads of one process", throughput::rtrb),
        spec!("coord-ring-spin", "coordination", "Worknode update + node_updated event, Wait::Spin", |c| {
            ring::coordination(c, Wait::Spin)
        }),
        spec!("coord-ring-park", "coordination", "Worknode update + node_updated event, Wait::Park", |c| {
            ring::coordination(c, Wait::Park)
        }),
        spec!("coord-redis", "coordination", "Redis HSET + PUBLISH (pipelined), SUBSCRIBE", redis_peer::coordination),
        spec!("coord-sqlite", "coordination", "SQLite WAL: UPDATE task row + commit, the other busy-polls", |c| {
            sqlite::coordination(c, Duration::ZERO)
        }),
        spec!(
            "coord-sqlite-1ms",
            "coordination",
            "SQLite WAL: UPDATE task row + commit, the other polls every 1 ms",
            |c| { sqlite::coordination(c, Duration::from_millis(1)) }
        ),
        spec!("claims-1", "claims", "claim_next + complete, 1 process", |c| claims::run(c, 1, claims::tasks(c))),
        spec!("claims-2", "claims", "claim_next + complete, 2 processes", |c| claims::run(c, 2, claims::tasks(c))),
        spec!("claims-4", "claims", "claim_next + complete, 4 processes", |c| claims::run(c, 4, claims::tasks(c))),
        spec!("claims-1-1k", "claims", "claim_next + complete, 1 process, 1 000 tasks", |c| claims::run(c, 1, 1_000)),
        spec!("claims-1-100k", "claims", "claim_next + complete, 1 process, 100 000 tasks", |c| {
            claims::run(c, 1, 100_000)
        }),
        spec!(
            "claims-redis",
            "claims",
            "Redis LMOVE ready→claimed + HSET, then HSET + LREM (pipelined)",
            claims::redis
        ),
        spec!(
            "claims-sqlite",
            "claims",
            "SQLite WAL: indexed UPDATE … RETURNING claim, then UPDATE complete",
            claims::sqlite
        ),
        spec!(
            "handoff-worknode",
            "handoff",
            "Worknode: reopen a task, the parked assignee claims it (claim_next_wait)",
            crate::handoff::worknode
        ),
        spec!("handoff-redis", "handoff", "Redis LPUSH, the other side BLMOVE + LREM", crate::handoff::redis),
        spec!(
            "mail-worknode",
            "mail",
            "Worknode send; the receiver waits, reads, acks (wait_for_mail)",
            crate::handoff::mail
        ),
        spec!("mail-redis", "mail", "Redis XADD / XREAD BLOCK", redis_peer::streams),
        spec!("mcp-show", "mcp", "show over wn mcp (stdio JSON-RPC)", |c| mcp::run(c, mcp::Op::Show, mcp::Route::Mcp)),
        spec!("mcp-show-subprocess", "mcp", "show as `wn --json show` per call", |c| mcp::run(
            c,
            mcp::Op::Show,
            mcp::Route::Subprocess
        )),
        spec!("mcp-cycle", "mcp", "claim_next + complete over wn mcp", |c| mcp::run(
            c,
            mcp::Op::Cycle,
            mcp::Route::Mcp
        )),
        spec!("mcp-cycle-subprocess", "mcp", "`wn --json claim --next` + `wn --json done` per cycle", |c| mcp::run(
            c,
            mcp::Op::Cycle,
            mcp::Route::Subprocess
        )),
        spec!("http-get", "http", "GET /api/tasks/{id} over wn serve (HTTP/1.1 keep-alive)", |c| {
            crate::http::run(c, crate::http::Peer::Worknode, crate::http::Op::Get)
        }),
        spec!("http-redis-get", "http", "Redis HGETALL of a task hash", |c| {
            crate::http::run(c, crate::http::Peer::Redis, crate::http::Op::Get)
        }),
        spec!("http-python-get", "http", "GET /api/tasks/{id}, Python http.server REST", |c| {
            crate::http::run(c, crate::http::Peer::Python, crate::http::Op::Get)
        }),
        spec!("http-cycle", "http", "POST /api/claim + POST /api/tasks/{id}/complete over wn serve", |c| {
            crate::http::run(c, crate::http::Peer::Worknode, crate::http::Op::Cycle)
        }),
        spec!("http-redis-cycle", "http", "Redis LMOVE + HSET, then HSET + LREM pipelined", |c| {
            crate::http::run(c, crate::http::Peer::Redis, crate::http::Op::Cycle)
        }),
        spec!("http-python-cycle", "http", "claim + complete, Python http.server REST", |c| {
            crate::http::run(c, crate::http::Peer::Python, crate::http::Op::Cycle)
        }),
        spec!("http-sse", "http", "event appended → delivered on GET /api/events (SSE)", crate::http::sse),
        spec!(
            "repl-latency",
            "replication",
            "a change on host A → visible on host B, worknode-bridge over NATS JetStream",
            crate::replication::worknode_latency
        ),
        spec!(
            "repl-redis-latency",
            "replication",
            "HSET on a Redis primary → visible on its replica",
            crate::replication::redis_latency
        ),
        spec!(
            "repl-throughput",
            "replication",
            "bursts of edits on A until all show on B, worknode-bridge",
            crate::replication::worknode_throughput
        ),
        spec!(
            "repl-redis-throughput",
            "replication",
            "bursts of HSETs on a Redis primary until all show on its replica",
            crate::replication::redis_throughput
        ),
        spec!(
            "repl-claim",
            "replication",
            "claim on B of a task shared with A (KV compare-and-set)",
            crate::replication::worknode_claim
        ),
        spec!("repl-redis-claim", "replication", "HSETNX on the Redis primary from B", crate::replication::redis_claim),
        spec!("broker-update-direct", "broker", "progress on a held task, direct handle", |c| broker::run(
            c,
            Path::Direct,
            Op::Update
        )),
        spec!("broker-update-brokered", "broker", "progress on a held task, through the broker", |c| broker::run(
            c,
            Path::Brokered,
            Op::Update
        )),
        spec!("broker-update-redis", "broker", "Redis HSET of a task field", |c| broker::redis(c, Op::Update)),
        spec!("broker-claim-direct", "broker", "claim_next + complete, direct handle", |c| broker::run(
            c,
            Path::Direct,
            Op::Claim
        )),
        spec!("broker-claim-brokered", "broker", "claim_next + complete, through the broker", |c| broker::run(
            c,
            Path::Brokered,
            Op::Claim
        )),
        spec!("broker-claim-redis", "broker", "Redis LPOP ready list + HSET complete", |c| broker::redis(c, Op::Claim)),
        spec!("broker-read-direct", "broker", "read a task, direct handle", |c| broker::run(c, Path::Direct, Op::Read)),
        spec!("broker-read-brokered", "broker", "read a task, brokered handle (its read-only mapping)", |c| {
            broker::run(c, Path::Brokered, Op::Read)
        }),
        spec!("broker-read-redis", "broker", "Redis HGETALL of a task hash", |c| broker::redis(c, Op::Read)),
        spec!("durable-off", "durability", "ring append, worknoded --fsync off", |c| { durability::ring(c, "off", 1) }),
        spec!("durable-never", "durability", "ring append, worknoded --fsync never", |c| {
            durability::ring(c, "never", 1)
        }),
        spec!("durable-batch", "durability", "ring append, worknoded --fsync batch (10 ms)", |c| {
            durability::ring(c, "batch", 1)
        }),
        spec!("durable-always", "durability", "ring append, worknoded --fsync always", |c| {
            durability::ring(c, "always", 1)
        }),
        spec!("durable-always-4w", "durability", "ring append, worknoded --fsync always, 4 writer threads", |c| {
            durability::ring(c, "always", 4)
        }),
        spec!("sqlite-insert-normal", "durability", "SQLite WAL INSERT 64 B + commit, synchronous=NORMAL", |c| {
            sqlite::insert(c, "NORMAL")
        }),
        spec!("sqlite-insert-full", "durability", "SQLite WAL INSERT 64 B + commit, synchronous=FULL", |c| {
            sqlite::insert(c, "FULL")
        }),
        spec!("ls-100k", "scale", "wn ls --status failed: Segment::query over 100 000 tasks", |c| {
            scale::library(c, scale::Op::Ls)
        }),
        spec!("tree-100k", "scale", "wn tree: tree_lines over 100 000 tasks", |c| scale::library(c, scale::Op::Tree)),
        spec!("rollup-100k", "scale", "wn rollup: Segment::rollup over 100 000 tasks", |c| {
            scale::library(c, scale::Op::Rollup)
        }),
        spec!("ls-100k-wn", "scale", "`wn ls --status failed` end to end, 100 000 tasks", |c| {
            scale::binary(c, scale::Op::Ls)
        }),
        spec!("tree-100k-wn", "scale", "`wn tree` end to end, 100 000 tasks", |c| scale::binary(c, scale::Op::Tree)),
        spec!("restore-100k", "scale", "worknoded start after SIGTERM: rebuild of 100k nodes + 1M events", |c| {
            restore::run(c, restore::Stop::Clean)
        }),
        spec!("restore-100k-adopt", "scale", "worknoded start after SIGKILL: adopt the live segment", |c| {
            restore::run(c, restore::Stop::KillAdopt)
        }),
        spec!(
            "restore-100k-lost",
            "scale",
            "worknoded start after SIGKILL + segment lost: rebuild from the journal",
            |c| { restore::run(c, restore::Stop::KillLost) }
        ),
    ]
}

/// Whether `--only` selects `s`.
fn selected(only: Option<&str>, s: &Spec) -> bool {
    let Some(only) = only else { return true };
    only.split(',').map(str::trim).filter(|x| !x.is_empty()).any(|x| s.id.contains(x) || s.group.contains(x))
}

/// The latency plan of a mode.
pub fn plan(quick: bool) -> Plan {
    if quick {
        Plan { warmup: 200, samples: 2_000, time_cap: Duration::from_secs(2) }
    } else {
        Plan { warmup: 10_000, samples: 100_000, time_cap: Duration::from_secs(90) }
    }
}

/// Entry point of the `wn-bench` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(role) = cli.role.as_deref() {
        return run_role(role, &cli);
    }
    if let (Some(from), Some(to)) = (&cli.plot_from, &cli.plot) {
        return match crate::plot::read_run(from).and_then(|doc| crate::plot::write(to, &doc)) {
            Ok(()) => {
                println!("wrote {}", to.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("wn-bench: cannot draw the plot from {}: {e}", from.display());
                ExitCode::FAILURE
            }
        };
    }
    let specs = specs();
    if cli.list {
        for s in &specs {
            println!("{:<22} {:<13} {}", s.id, s.group, s.label);
        }
        return ExitCode::SUCCESS;
    }
    let chosen: Vec<&Spec> = specs.iter().filter(|s| selected(cli.only.as_deref(), s)).collect();
    if chosen.is_empty() {
        eprintln!("wn-bench: --only {:?} selects nothing; `wn-bench --list` shows the measurements", cli.only);
        return ExitCode::from(2);
    }
    let tmp = std::env::temp_dir();
    let mut sys = SysInfo::collect(&tmp);
    let allowed = sys.allowed.clone();
    let ctx = Ctx {
        quick: cli.quick,
        plan: plan(cli.quick),
        pair: crate::pinning::pair(),
        allowed,
        tmp,
        redis: RefCell::new(None),
        daemon: RefCell::new(None),
    };
    let started = Instant::now();
    println!(
        "wn-bench: {} mode, {} measurement(s); latency points: {} warm-up + {} samples (cap {:?})",
        if cli.quick { "quick" } else { "full" },
        chosen.len(),
        ctx.plan.warmup,
        ctx.plan.samples,
        ctx.plan.time_cap
    );
    for l in sys.lines().iter().take(3) {
        println!("  {l}");
    }
    println!("  load       {}", sys.load_before);
    let mut entries = Vec::new();
    for s in chosen {
        let before = CpuTimes::now();
        let t = Instant::now();
        let guard = ctx.pin_parent();
        PARENT_PIN.with(|p| *p.borrow_mut() = guard.outcome().to_string());
        let outcome = (s.run)(&ctx);
        drop(guard);
        let secs = t.elapsed().as_secs_f64();
        let steal = before.steal_pct(&CpuTimes::now());
        let e = Entry::new(s, outcome, secs, steal);
        println!("  {}", e.progress_line());
        entries.push(e);
    }
    // Stop the Redis server before the report (it is ours).
    ctx.redis.borrow_mut().take();
    sys.finish();
    let report = Report { quick: cli.quick, sys, entries, plan: ctx.plan, elapsed: started.elapsed() };
    print!("{}", report.text());
    let mut ok = !report.any_failed();
    if let Some(path) = &cli.json {
        match std::fs::write(path, serde_json::to_string_pretty(&report.json()).expect("JSON") + "\n") {
            Ok(()) => println!("wrote {}", path.display()),
            Err(e) => {
                eprintln!("wn-bench: cannot write {}: {e}", path.display());
                ok = false;
            }
        }
    }
    if let Some(path) = &cli.plot {
        match crate::plot::write(path, &report.json()) {
            Ok(()) => println!("wrote {}", path.display()),
            Err(e) => {
                eprintln!("wn-bench: cannot write the plot {}: {e}", path.display());
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs a hidden role (the other process of a measurement).
fn run_role(role: &str, cli: &Cli) -> ExitCode {
    crate::proc::watchdog(Duration::from_secs(cli.deadline_s));
    let ctx = RoleCtx::new(&cli.role_arg, cli.cpu);
    let r = match role {
        "floor" => crate::floor::role(&ctx),
        "ring-pong" => crate::ring::pong_role(&ctx),
        "coord-ring" => crate::ring::coordination_role(&ctx),
        "stream-pong" => crate::kernel_ipc::stream_role(&ctx),
        "pipe-pong" => crate::kernel_ipc::pipe_role(&ctx),
        "eventfd-pong" => crate::kernel_ipc::eventfd_role(&ctx),
        "iceoryx2-pong" => crate::iceoryx::role(&ctx),
        "redis-pubsub-pong" => crate::redis_peer::pubsub_role(&ctx),
        "redis-streams-pong" => crate::redis_peer::streams_role(&ctx),
        "redis-coord" => crate::redis_peer::coordination_role(&ctx),
        "sqlite-pong" => crate::sqlite::pong_role(&ctx),
        "tput-producer" => crate::throughput::producer_role(&ctx),
        "tput-reader" => crate::throughput::reader_role(&ctx),
        "claimer" => crate::claims::role(&ctx),
        "handoff-child" => crate::handoff::worknode_role(&ctx),
        "handoff-redis-child" => crate::handoff::redis_role(&ctx),
        "mail-child" => crate::handoff::mail_role(&ctx),
        other => Err(format!("unknown role {other}")),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("error {e}");
            ExitCode::FAILURE
        }
    }
}
