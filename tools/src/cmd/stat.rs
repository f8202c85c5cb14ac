//! `wn stat`: one line per interval of rates and usage, like `redis-cli --stat`.
//!
//! Each line shows live nodes (of capacity), node creations/updates/deletions per second,
//! events per second, agents, and tasks by status (ready, claimed, in progress, blocked,
//! complete, failed); after it, one line per `worknode-bridge` of the segment (its
//! connection, lag and counts, from `/bridge/<board>`). The first line has no rates yet ("-", `null` in JSON). A header is
//! repeated every 20 lines. Ctrl-C ends it with exit 0; `--count N` stops after N lines.

use crate::cmd::events::stop_flag;
use crate::ctx::Ctx;
use crate::duration;
use crate::fail::Fail;
use crate::output::{now_ms, print_stream};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use worknode::{NodeKind, Segment, Status};

/// Options of `wn stat`.
#[derive(clap::Args, Debug)]
pub struct StatArgs {
    /// Time between lines; 1ms to 1d.
    #[arg(long, value_name = "DURATION", value_parser = duration::interval, default_value = "1s")]
    interval: Duration,
    /// Stop after this many lines (1 to 4294967296).
    #[arg(long, value_name = "N", value_parser = duration::number(1, 1 << 32, "lines to print"))]
    count: Option<u64>,
}

/// One sample of the counters.
#[derive(Clone, Copy)]
pub struct Sample {
    /// When taken.
    pub at: Instant,
    /// Wall clock, Unix ms.
    pub time_ms: u64,
    /// Live nodes.
    pub nodes: u64,
    /// Node capacity.
    pub capacity: u64,
    /// Nodes created so far.
    pub created: u64,
    /// Node updates so far.
    pub updated: u64,
    /// Nodes deleted so far.
    pub deleted: u64,
    /// Ring tail (events appended so far).
    pub events: u64,
    /// Agents joined.
    pub agents: u64,
    /// Blob chunks in use, and capacity.
    pub blobs: (u64, u64),
    /// Tasks per status code.
    pub tasks: [u64; 8],
}

impl Sample {
    /// Reads the header counters and counts tasks by status (a pool scan).
    pub fn take(seg: &Segment) -> Sample {
        let info = seg.inspect().info();
        let mut tasks = [0u64; 8];
        let _ = seg.for_each_node(|n| {
            if n.kind() == Some(NodeKind::Task) {
                if let Some(s) = n.status() {
                    tasks[s.code() as usize] += 1;
                }
            }
            true
        });
        let region = |name: &str| info.regions.iter().find(|r| r.name == name).copied().unwrap_or_default();
        let nodes = region("nodes");
        let blobs = region("blobs");
        Sample {
            at: Instant::now(),
            time_ms: now_ms(),
            nodes: nodes.used,
            capacity: nodes.capacity,
            created: info.nodes_created,
            updated: info.nodes_updated,
            deleted: info.nodes_deleted,
            events: seg.ring_tail(),
            agents: region("agents").used,
            blobs: (blobs.used, blobs.capacity),
            tasks,
        }
    }

    /// Tasks in status `s`.
    pub fn count(&self, s: Status) -> u64 {
        self.tasks[s.code() as usize]
    }
}

/// Per-second rate of a counter between two samples.
pub fn rate(prev: &Sample, cur: &Sample, f: impl Fn(&Sample) -> u64) -> f64 {
    let dt = cur.at.duration_since(prev.at).as_secs_f64();
    if dt <= 0.0 {
        return 0.0;
    }
    f(cur).saturating_sub(f(prev)) as f64 / dt
}

const HEADER: &str = "  nodes  capacity   new/s   upd/s   del/s    events    ev/s  agents        blobs  ready claimed  active blocked    done  failed";

/// Blob arena usage as `used/capacity` chunks (`-` for a segment without an arena).
pub fn arena_text(s: &Sample) -> String {
    if s.blobs.1 == 0 {
        return "-".to_string();
    }
    format!("{}/{}", s.blobs.0, s.blobs.1)
}

/// Blob arena usage in percent of its chunks (0 for a segment without an arena).
pub fn arena_percent(s: &Sample) -> u64 {
    (s.blobs.0.min(s.blobs.1) * 100).checked_div(s.blobs.1).unwrap_or(0)
}

fn human(prev: Option<&Sample>, s: &Sample) -> String {
    let r = |f: fn(&Sample) -> u64| prev.map_or("-".to_string(), |p| format!("{:.0}", rate(p, s, f)));
    format!(
        "{:>7} {:>9} {:>7} {:>7} {:>7} {:>9} {:>7} {:>7} {:>12} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7}",
        s.nodes,
        s.capacity,
        r(|x| x.created),
        r(|x| x.updated),
        r(|x| x.deleted),
        s.events,
        r(|x| x.events),
        s.agents,
        arena_text(s),
        s.count(Status::Ready),
        s.count(Status::Claimed),
        s.count(Status::InProgress),
        s.count(Status::Blocked),
        s.count(Status::Complete),
        s.count(Status::Failed),
    )
}

fn as_json(prev: Option<&Sample>, s: &Sample) -> serde_json::Value {
    let r = |f: fn(&Sample) -> u64| prev.map(|p| rate(p, s, f));
    let tasks: serde_json::Map<String, serde_json::Value> =
        Status::ALL.iter().map(|st| (st.as_str().to_string(), json!(s.count(*st)))).collect();
    json!({
        "time_ms": s.time_ms,
        "nodes": s.nodes,
        "nodes_capacity": s.capacity,
        "created_per_s": r(|x| x.created),
        "updated_per_s": r(|x| x.updated),
        "deleted_per_s": r(|x| x.deleted),
        "events": s.events,
        "events_per_s": r(|x| x.events),
        "agents": s.agents,
        "blob_chunks_used": s.blobs.0,
        "blob_chunks": s.blobs.1,
        "blob_arena_percent": arena_percent(s),
        "tasks": tasks,
    })
}

/// Prints samples until Ctrl-C or `--count`.
pub fn run(ctx: &Ctx, a: &StatArgs) -> Result<(), Fail> {
    let seg = ctx.attach_ro()?;
    let stop = stop_flag()?;
    let mut prev: Option<Sample> = None;
    let mut lines = 0u64;
    loop {
        let s = Sample::take(&seg);
        let bridges = crate::bridges::read(&seg);
        let open = if ctx.json {
            let mut line = as_json(prev.as_ref(), &s);
            if !bridges.is_empty() {
                line["bridges"] = bridges
                    .iter()
                    .map(|b| match &b.state {
                        Ok(v) => {
                            let mut v = v.clone();
                            v["board"] = json!(b.board);
                            v
                        }
                        Err(e) => json!({ "board": b.board, "error": e }),
                    })
                    .collect();
            }
            print_stream(&line.to_string())?
        } else {
            // A bridge's state follows each line it applies to (none without a bridge).
            (!lines.is_multiple_of(20) || print_stream(&ctx.style.bold(HEADER))?)
                && print_stream(&human(prev.as_ref(), &s))?
                && bridges.iter().all(|b| {
                    print_stream(&format!("  bridge {}", crate::bridges::summary(b, s.time_ms))).unwrap_or(false)
                })
        };
        if !open {
            return Ok(());
        }
        lines += 1;
        prev = Some(s);
        if a.count.is_some_and(|c| lines >= c) {
            return Ok(());
        }
        // Sleep in short steps so Ctrl-C ends promptly (exit 0).
        let until = duration::deadline(a.interval);
        while Instant::now() < until {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            std::thread::sleep(until.saturating_duration_since(Instant::now()).min(Duration::from_millis(50)));
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
    }
}
