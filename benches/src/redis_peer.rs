//! Redis, as a user would run it for signalling between agents: PUBLISH / SUBSCRIBE,
//! XADD / XREAD BLOCK, and (for coordination) HSET + PUBLISH, through the `redis`
//! crate's synchronous API.
//!
//! The harness starts its own `redis-server` on 127.0.0.1 with a free port and
//! persistence off (`--save "" --appendonly no`), and stops it at the end of the run. If
//! `redis-server` is not on `PATH` the Redis measurements are skipped with the command
//! that installs it.

use crate::payload::{self, PING, PONG};
use crate::pingpong::{drive, finish};
use crate::proc::RoleCtx;
use crate::shm::TempDir;
use crate::suite::{Ctx, Fail, Measured};
use redis::{Commands, Connection};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A `redis-server` this harness started; killed (by pid) on drop.
pub struct RedisServer {
    proc: std::process::Child,
    /// `redis://127.0.0.1:PORT/`.
    pub url: String,
    /// `redis-server --version`.
    pub version: String,
    _dir: TempDir,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

fn find_on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| std::path::Path::new(d).join(name)).find(|p| p.is_file())
}

impl RedisServer {
    fn start(ctx: &Ctx) -> Result<RedisServer, Fail> {
        Self::start_with(ctx, &[])
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.url.trim_start_matches("redis://127.0.0.1:").trim_end_matches('/').parse().unwrap_or(0)
    }

    /// A server of its own with `extra` arguments (`--replicaof HOST PORT`, …).
    pub fn start_with(ctx: &Ctx, extra: &[&str]) -> Result<RedisServer, Fail> {
        let Some(bin) = find_on_path("redis-server") else {
            return Err(Fail::Skip("skipped: install with `apt-get install redis-server`".into()));
        };
        let version = Command::new(&bin)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("find a free port: {e}"))?
            .port();
        let dir = TempDir::new(&ctx.tmp, "redis")?;
        let proc = Command::new(&bin)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning"])
            .args(extra)
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("start {}: {e}", bin.display()))?;
        // It inherited this process's pinning: let it run on every allowed CPU.
        let mut set = nix::sched::CpuSet::new();
        for &c in &ctx.allowed {
            let _ = set.set(c);
        }
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(proc.id() as i32), &set);
        let server = RedisServer { proc, url: format!("redis://127.0.0.1:{port}/"), version, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match connect(&server.url)
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).map_err(|e| e.to_string()))
            {
                Ok(_) => return Ok(server),
                Err(e) if Instant::now() > deadline => return Err(format!("redis-server did not answer: {e}").into()),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// The run's Redis server (started on first use).
pub fn server(ctx: &Ctx) -> Result<Rc<RedisServer>, Fail> {
    let mut slot = ctx.redis.borrow_mut();
    if slot.is_none() {
        *slot = Some(match RedisServer::start(ctx) {
            Ok(s) => Ok(Rc::new(s)),
            Err(Fail::Skip(s)) => Err(format!("SKIP:{s}")),
            Err(Fail::Error(e)) => Err(e),
        });
    }
    match slot.as_ref().expect("set above") {
        Ok(s) => Ok(s.clone()),
        Err(e) => Err(match e.strip_prefix("SKIP:") {
            Some(s) => Fail::Skip(s.to_string()),
            None => Fail::Error(e.clone()),
        }),
    }
}

pub(crate) fn connect(url: &str) -> Result<Connection, String> {
    let c = redis::Client::open(url).map_err(|e| format!("redis client: {e}"))?;
    let con = c.get_connection_with_timeout(IO_TIMEOUT).map_err(|e| format!("redis connect: {e}"))?;
    con.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
    Ok(con)
}

pub(crate) fn note(server: &RedisServer) -> String {
    format!("{} on 127.0.0.1, persistence off, server not pinned", server.version.split(" sha=").next().unwrap_or(""))
}

fn rerr(e: redis::RedisError) -> String {
    format!("redis: {e}")
}

/// PUBLISH / SUBSCRIBE round trip.
pub fn pubsub(ctx: &Ctx) -> Result<Measured, Fail> {
    let server = server(ctx)?;
    let mut pubc = connect(&server.url)?;
    let mut subc = connect(&server.url)?;
    let mut sub = subc.as_pubsub();
    sub.subscribe("wnb:pong").map_err(rerr)?;
    let child =
        ctx.spawn("redis-pubsub-pong", &[("url", server.url.clone()), ("rounds", ctx.plan.total().to_string())])?;
    let driven = drive(&ctx.plan, |i| {
        let _: i64 = pubc.publish("wnb:ping", &payload::make(i, PING)[..]).map_err(rerr)?;
        let m = sub.get_message().map_err(rerr)?;
        payload::check(m.get_payload_bytes(), i, PONG)
    })?;
    finish(ctx, child, driven, vec![note(&server), "one publishing and one subscribed connection per side".into()])
}

/// Child side of PUBLISH / SUBSCRIBE.
pub fn pubsub_role(ctx: &RoleCtx) -> Result<(), String> {
    let url = ctx.get("url")?;
    let rounds: u64 = ctx.parse("rounds")?;
    let mut pubc = connect(url)?;
    let mut subc = connect(url)?;
    subc.set_read_timeout(Some(Duration::from_secs(120))).map_err(rerr)?;
    let mut sub = subc.as_pubsub();
    sub.subscribe("wnb:ping").map_err(rerr)?;
    ctx.ready();
    for i in 0..rounds {
        let m = sub.get_message().map_err(rerr)?;
        payload::check(m.get_payload_bytes(), i, PING)?;
        let _: i64 = pubc.publish("wnb:pong", &payload::make(i, PONG)[..]).map_err(rerr)?;
    }
    ctx.result(&serde_json::json!({ "rounds": rounds }));
    Ok(())
}

/// `XREAD BLOCK` of the next entry after `last` on `key`; returns (id, payload).
fn xread_one(con: &mut Connection, key: &str, last: &str, block_ms: usize) -> Result<(String, Vec<u8>), String> {
    let opts = redis::streams::StreamReadOptions::default().block(block_ms).count(1);
    let reply: redis::streams::StreamReadReply = con.xread_options(&[key], &[last], &opts).map_err(rerr)?;
    let entry = reply
        .keys
        .into_iter()
        .next()
        .and_then(|k| k.ids.into_iter().next())
        .ok_or_else(|| format!("XREAD on {key} returned nothing"))?;
    let v = entry.map.get("p").ok_or("stream entry without field p")?;
    let bytes: Vec<u8> = redis::from_redis_value_ref(v).map_err(|e| format!("redis: {e}"))?;
    Ok((entry.id, bytes))
}

fn xadd(con: &mut Connection, key: &str, p: &[u8]) -> Result<(), String> {
    redis::cmd("XADD")
        .arg(key)
        .arg("MAXLEN")
        .arg("~")
        .arg(10_000)
        .arg("*")
        .arg("p")
        .arg(p)
        .query::<String>(con)
        .map(|_| ())
        .map_err(rerr)
}

/// XADD / XREAD BLOCK round trip.
pub fn streams(ctx: &Ctx) -> Result<Measured, Fail> {
    let server = server(ctx)?;
    let mut con = connect(&server.url)?;
    let _: i64 = con.del(&["wnb:s:ping", "wnb:s:pong"]).map_err(rerr)?;
    let child =
        ctx.spawn("redis-streams-pong", &[("url", server.url.clone()), ("rounds", ctx.plan.total().to_string())])?;
    let mut last = "0-0".to_string();
    let driven = drive(&ctx.plan, |i| {
        xadd(&mut con, "wnb:s:ping", &payload::make(i, PING))?;
        let (id, p) = xread_one(&mut con, "wnb:s:pong", &last, 20_000)?;
        last = id;
        payload::check(&p, i, PONG)
    })?;
    finish(ctx, child, driven, vec![note(&server), "XADD MAXLEN ~ 10000; XREAD BLOCK COUNT 1 from the last id".into()])
}

/// Child side of XADD / XREAD BLOCK.
pub fn streams_role(ctx: &RoleCtx) -> Result<(), String> {
    let url = ctx.get("url")?;
    let rounds: u64 = ctx.parse("rounds")?;
    let mut con = connect(url)?;
    con.set_read_timeout(Some(Duration::from_secs(120))).map_err(rerr)?;
    ctx.ready();
    let mut last = "0-0".to_string();
    for i in 0..rounds {
        let (id, p) = xread_one(&mut con, "wnb:s:ping", &last, 100_000)?;
        last = id;
        payload::check(&p, i, PING)?;
        xadd(&mut con, "wnb:s:pong", &payload::make(i, PONG))?;
    }
    ctx.result(&serde_json::json!({ "rounds": rounds }));
    Ok(())
}

/// HSET the task's fields and PUBLISH its change, pipelined (one round trip to Redis).
fn hset_publish(con: &mut Connection, task: &str, channel: &str, i: u64, tag: u64) -> Result<(), String> {
    let p = payload::make_text(i, tag);
    redis::pipe()
        .hset_multiple(task, &[("description", payload::as_str(&p)), ("value", &i.to_string())])
        .ignore()
        .publish(channel, &p[..])
        .ignore()
        .query::<()>(con)
        .map_err(rerr)
}

/// Coordination: HSET + PUBLISH, the other side SUBSCRIBEs and answers the same way.
pub fn coordination(ctx: &Ctx) -> Result<Measured, Fail> {
    let server = server(ctx)?;
    let mut con = connect(&server.url)?;
    let mut subc = connect(&server.url)?;
    let mut sub = subc.as_pubsub();
    sub.subscribe("wnb:task:2:changed").map_err(rerr)?;
    let child = ctx.spawn("redis-coord", &[("url", server.url.clone()), ("rounds", ctx.plan.total().to_string())])?;
    let driven = drive(&ctx.plan, |i| {
        hset_publish(&mut con, "wnb:task:1", "wnb:task:1:changed", i, PING)?;
        let m = sub.get_message().map_err(rerr)?;
        payload::check_text(m.get_payload_bytes(), i)
    })?;
    finish(
        ctx,
        child,
        driven,
        vec![
            note(&server),
            "HSET + PUBLISH in one pipeline; the subscriber checks the payload carried by the message (it does not HGET the task back)".into(),
        ],
    )
}

/// Child side of the Redis coordination round trip.
pub fn coordination_role(ctx: &RoleCtx) -> Result<(), String> {
    let url = ctx.get("url")?;
    let rounds: u64 = ctx.parse("rounds")?;
    let mut con = connect(url)?;
    let mut subc = connect(url)?;
    subc.set_read_timeout(Some(Duration::from_secs(120))).map_err(rerr)?;
    let mut sub = subc.as_pubsub();
    sub.subscribe("wnb:task:1:changed").map_err(rerr)?;
    ctx.ready();
    for i in 0..rounds {
        let m = sub.get_message().map_err(rerr)?;
        payload::check_text(m.get_payload_bytes(), i)?;
        hset_publish(&mut con, "wnb:task:2", "wnb:task:2:changed", i, PONG)?;
    }
    ctx.result(&serde_json::json!({ "rounds": rounds }));
    Ok(())
}
