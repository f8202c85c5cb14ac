//! Replication between hosts (issue 18): a change on host A until it is visible on
//! host B, writes per second through the replication, and a claim of a shared task,
//! for Worknode (two segments, two `worknode-bridge`s, one `nats-server -js`) beside
//! Redis replication of the same data (a primary and a `--replicaof` replica).
//!
//! Both "hosts" are on this machine and talk over loopback: the numbers are what the
//! software adds, a floor for a real network (which adds its round trips to both).
//!
//! * **latency**: A writes a task's value; the harness waits until B shows it. On B,
//!   Worknode's reader parks on B's event ring (the bridge's apply is an event there);
//!   Redis's reader polls `HGET` on the replica (a replica has no push of replicated
//!   writes a client can wait on: keyspace notifications are not sent for them by
//!   default), so its figure includes up to one poll round trip.
//! * **throughput**: A writes `BURST` different tasks as fast as one writer can; the rate
//!   is `BURST` over the time until B shows the last (and every) one.
//! * **claim**: on B, claim a task shared with A and release it (untimed). Worknode: the
//!   local claim plus the bridge's compare-and-set in the KV claim register. Redis: the
//!   way hosts sharing a Redis claim a task, `HSETNX` on the primary from B (one round
//!   trip; releasing is an `HDEL`).

use crate::durability::{locate_binary, start_daemon, Daemon};
use crate::histogram::Recorder;
use crate::pingpong::{Driven, Plan};
use crate::report::Rate;
use crate::shm::TempDir;
use crate::suite::{Ctx, Fail, Measured};
use redis::Commands;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use worknode::{Access, Handle, Segment, Start, Status, Wait};

/// Tasks on the board (the throughput burst writes each once).
const TASKS: u64 = 512;
/// How long one change may take to reach B before the row fails.
const VISIBLE_TIMEOUT: Duration = Duration::from_secs(10);

fn e2s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn plan(ctx: &Ctx) -> Plan {
    if ctx.quick {
        Plan { warmup: 20, samples: 200, time_cap: Duration::from_secs(2) }
    } else {
        Plan { warmup: 200, samples: 5_000, time_cap: Duration::from_secs(20) }
    }
}

/// A latency row: the samples' percentiles, the notes, how processes ran.
fn row(driven: Driven, mut notes: Vec<String>, pin: String) -> Measured {
    notes.extend(driven.notes);
    Measured::latency(driven.rec.stats(), notes).pinned(pin)
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).map_err(e2s)
}

/// A child killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nats_bin() -> Result<&'static str, Fail> {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .ok_or_else(|| Fail::Skip("skipped: install with `apt-get install nats-server`".into()))
}

/// Waits until `addr` accepts a TCP connection (bounded).
fn wait_listening(port: u16, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("{what} did not listen on port {port} within 10 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// One Worknode "host": its daemon, its bridge, the harness's attachment.
struct Host {
    // Field order is drop order: bridge, attachment, daemon.
    _bridge: Killed,
    seg: Segment,
    daemon: Daemon,
    _data: TempDir,
}

/// Two hosts sharing a board through one `nats-server -js`.
struct Pair {
    a: Host,
    b: Host,
    _nats: Killed,
    _nats_dir: TempDir,
    pin: String,
}

impl Pair {
    fn start(ctx: &Ctx, tag: &str) -> Result<Pair, Fail> {
        let nats = nats_bin()?;
        let bridge = locate_binary("worknode-bridge")?;
        let port = free_port()?;
        let nats_dir = TempDir::new(&ctx.tmp, &format!("{tag}-nats"))?;
        let child = Command::new(nats)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(nats_dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("start nats-server: {e}"))?;
        let nats_proc = Killed(child);
        wait_listening(port, "nats-server")?;
        let url = format!("nats://127.0.0.1:{port}");
        let mut pins = Vec::new();
        let mut host = |name: &str| -> Result<Host, Fail> {
            let seg_name = crate::unique_name(&format!("{tag}-{name}"));
            let _ = Segment::unlink(&seg_name);
            let data = TempDir::new(&ctx.tmp, &seg_name)?;
            let args = ["--nodes", "2048", "--events", "65536", "--fsync", "batch", "--grace-ms", "0"];
            let (daemon, pin) = start_daemon(ctx, &seg_name, &args, data.path())?;
            pins.push(pin);
            let seg = Segment::attach(&seg_name, Access::ReadWrite).map_err(|e| format!("attach {seg_name}: {e}"))?;
            let child = Command::new(&bridge)
                .args(["--segment", &seg_name, "--board", tag, "--host", name, "--nats", &url])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("start worknode-bridge: {e}"))?;
            Ok(Host { _bridge: Killed(child), seg, daemon, _data: data })
        };
        let a = host("a")?;
        let b = host("b")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(a.seg.bridge_online() && b.seg.bridge_online()) {
            if Instant::now() > deadline {
                return Err("the bridges did not come online within 30 s".to_string().into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Pair { a, b, _nats: nats_proc, _nats_dir: nats_dir, pin: format!("{}; bridges unpinned", pins.join("; ")) })
    }

    /// `TASKS` ready tasks on A, seen (and shared) on B; their handles on both.
    fn board(&self) -> Result<(Vec<Handle>, Vec<Handle>), String> {
        let on_a = crate::http::board(&self.a.seg, TASKS)?;
        let mut on_b = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        for h in &on_a {
            let uuid = self.a.seg.read(*h).map_err(e2s)?.uuid();
            loop {
                let shared = self.b.seg.lookup(uuid).and_then(|hb| self.b.seg.read(hb)).ok().filter(|n| {
                    n.record().flags & worknode::layout::record_flags::SHARED != 0 && n.status() == Some(Status::Ready)
                });
                if let Some(n) = shared {
                    on_b.push(n.handle());
                    break;
                }
                if Instant::now() > deadline {
                    return Err("the board did not reach B within 60 s".into());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok((on_a, on_b))
    }

    fn stop(self) -> Result<(), String> {
        let Pair { a, b, _nats, _nats_dir, .. } = self;
        for mut h in [a, b] {
            drop(h._bridge);
            drop(h.seg);
            h.daemon.stop()?;
        }
        Ok(())
    }
}

/// Waits on B's ring until task `h` shows `value` (bounded).
fn seen_on_b(seg: &Segment, reader: &mut worknode::Reader<'_>, h: Handle, value: f64) -> Result<(), String> {
    let deadline = Instant::now() + VISIBLE_TIMEOUT;
    loop {
        if seg.read(h).map_err(e2s)?.value() == value {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("value {value} did not reach B within {VISIBLE_TIMEOUT:?}"));
        }
        match reader.next(Wait::Park, left) {
            Ok(_) | Err(worknode::RingError::Timeout) | Err(worknode::RingError::Lagged { .. }) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn set_value(seg: &Segment, h: Handle, value: f64) -> Result<(), String> {
    seg.edit(h, &worknode::Edit { value: Some(value), ..Default::default() }).map(|_| ()).map_err(e2s)
}

/// A → B latency through the bridges.
pub fn worknode_latency(ctx: &Ctx) -> Result<Measured, Fail> {
    let pair = Pair::start(ctx, "repl-lat")?;
    let (on_a, on_b) = pair.board()?;
    let mut reader = pair.b.seg.reader(Start::Now);
    let driven = crate::pingpong::drive(&plan(ctx), |i| {
        let k = (i % TASKS) as usize;
        set_value(&pair.a.seg, on_a[k], i as f64 + 1.0)?;
        seen_on_b(&pair.b.seg, &mut reader, on_b[k], i as f64 + 1.0)
    })?;
    let pin = pair.pin.clone();
    pair.stop()?;
    Ok(row(driven, vec!["change on A (edit value) → the value read on B; B waits on its ring".into()], pin))
}

/// Two `redis-server`s, the second `--replicaof` the first.
fn redis_pair(ctx: &Ctx) -> Result<(crate::redis_peer::RedisServer, crate::redis_peer::RedisServer), Fail> {
    let primary = crate::redis_peer::RedisServer::start_with(ctx, &[])?;
    let port = primary.port().to_string();
    let replica = crate::redis_peer::RedisServer::start_with(ctx, &["--replicaof", "127.0.0.1", &port])?;
    // Wait for the replica's link (a write on the primary then reaches it).
    let mut r = crate::redis_peer::connect(&replica.url)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info: String = redis::cmd("INFO").arg("replication").query(&mut r).map_err(e2s)?;
        if info.contains("master_link_status:up") {
            return Ok((primary, replica));
        }
        if Instant::now() > deadline {
            return Err("the Redis replica did not link within 30 s".to_string().into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn redis_seen(r: &mut redis::Connection, key: &str, value: u64) -> Result<(), String> {
    let deadline = Instant::now() + VISIBLE_TIMEOUT;
    loop {
        let got: Option<u64> = r.hget(key, "value").map_err(e2s)?;
        if got == Some(value) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("value {value} did not reach the replica within {VISIBLE_TIMEOUT:?}"));
        }
    }
}

/// A → B latency through Redis replication.
pub fn redis_latency(ctx: &Ctx) -> Result<Measured, Fail> {
    let (primary, replica) = redis_pair(ctx)?;
    let mut w = crate::redis_peer::connect(&primary.url)?;
    let mut r = crate::redis_peer::connect(&replica.url)?;
    let driven = crate::pingpong::drive(&plan(ctx), |i| {
        let key = format!("task:{}", i % TASKS);
        let () = w.hset(&key, "value", i + 1).map_err(e2s)?;
        redis_seen(&mut r, &key, i + 1)
    })?;
    Ok(row(
        driven,
        vec![format!("HSET on the primary → HGET polled on the replica ({})", primary.version)],
        "redis-servers unpinned".into(),
    ))
}

/// A burst of writes on A until all are visible on B, `rounds` times.
fn burst_rate(
    ctx: &Ctx,
    mut write: impl FnMut(u64, u64) -> Result<(), String>,
    mut all_seen: impl FnMut(u64) -> Result<(), String>,
) -> Result<(Recorder, u64, Duration), String> {
    let rounds = if ctx.quick { 3 } else { 10 };
    let mut rec = Recorder::new();
    let mut total = Duration::ZERO;
    for round in 0..rounds {
        let stamp = (round + 1) * 1_000_000;
        let t = Instant::now();
        for k in 0..TASKS {
            write(k, stamp + k)?;
        }
        all_seen(stamp)?;
        let took = t.elapsed();
        rec.record(took.as_nanos() as u64);
        total += took;
    }
    Ok((rec, rounds * TASKS, total))
}

fn rate_row(rec: Recorder, n: u64, total: Duration, note: String, pin: String) -> Measured {
    let secs = total.as_secs_f64().max(1e-9);
    let mut m = Measured::latency(rec.stats(), vec![note]).pinned(pin);
    m.rate = Some(Rate::new(n as f64 / secs, "writes", n, secs));
    m
}

/// Writes per second through the bridges.
pub fn worknode_throughput(ctx: &Ctx) -> Result<Measured, Fail> {
    let pair = Pair::start(ctx, "repl-tput")?;
    let (on_a, on_b) = pair.board()?;
    let mut reader = pair.b.seg.reader(Start::Now);
    let (rec, n, total) = burst_rate(
        ctx,
        |k, v| set_value(&pair.a.seg, on_a[k as usize], v as f64),
        |stamp| {
            for k in 0..TASKS {
                seen_on_b(&pair.b.seg, &mut reader, on_b[k as usize], (stamp + k) as f64)?;
            }
            Ok(())
        },
    )?;
    let pin = pair.pin.clone();
    pair.stop()?;
    Ok(rate_row(
        rec,
        n,
        total,
        format!("bursts of {TASKS} edits on A, each until all show on B; latency = one burst"),
        pin,
    ))
}

/// Writes per second through Redis replication.
pub fn redis_throughput(ctx: &Ctx) -> Result<Measured, Fail> {
    let (primary, replica) = redis_pair(ctx)?;
    let mut w = crate::redis_peer::connect(&primary.url)?;
    let mut r = crate::redis_peer::connect(&replica.url)?;
    let (rec, n, total) = burst_rate(
        ctx,
        |k, v| w.hset::<_, _, _, ()>(format!("task:{k}"), "value", v).map_err(e2s),
        |stamp| {
            for k in 0..TASKS {
                redis_seen(&mut r, &format!("task:{k}"), stamp + k)?;
            }
            Ok(())
        },
    )?;
    Ok(rate_row(
        rec,
        n,
        total,
        format!("bursts of {TASKS} HSETs on the primary, each until all show on the replica; latency = one burst"),
        "redis-servers unpinned".into(),
    ))
}

/// A claim of a shared task on B (its release untimed).
pub fn worknode_claim(ctx: &Ctx) -> Result<Measured, Fail> {
    let pair = Pair::start(ctx, "repl-claim")?;
    let (_, on_b) = pair.board()?;
    let seg = &pair.b.seg;
    let me = seg.join("bench-claimer", "bench").map_err(e2s)?;
    // Tasks are taken in turn, so a task is claimed again only `TASKS` rounds after
    // its release: the bridge has freed its register entry by then.
    let (driven, _) = crate::http::drive_reset(
        &plan(ctx),
        |i| seg.claim(on_b[(i % TASKS) as usize], me, Duration::from_secs(60)).map_err(e2s),
        |c| seg.release(&c).map(|_| ()).map_err(e2s),
    )?;
    let pin = pair.pin.clone();
    pair.stop()?;
    Ok(row(
        driven,
        vec!["claim on B of a task shared with A: the local claim, then the bridge's compare-and-set in the KV claim register; release untimed".into()],
        pin,
    ))
}

/// A claim on the primary from B, as hosts sharing one Redis do it (release untimed).
pub fn redis_claim(ctx: &Ctx) -> Result<Measured, Fail> {
    let (primary, _replica) = redis_pair(ctx)?;
    let mut c = crate::redis_peer::connect(&primary.url)?;
    let c = std::cell::RefCell::new(&mut c);
    let (driven, _) = crate::http::drive_reset(
        &plan(ctx),
        |i| {
            let key = format!("claim:{}", i % TASKS);
            let won: bool = c.borrow_mut().hset_nx(&key, "holder", "b").map_err(e2s)?;
            if won {
                Ok(key)
            } else {
                Err(format!("{key} was held"))
            }
        },
        |key| c.borrow_mut().del::<_, ()>(&key).map_err(e2s),
    )?;
    Ok(row(
        driven,
        vec!["HSETNX on the primary from B (the claim); DEL (the release) untimed".into()],
        "redis-servers unpinned".into(),
    ))
}
