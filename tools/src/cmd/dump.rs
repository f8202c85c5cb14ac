//! `wn dump`: the segment's identity, layout, usage and state.

use crate::ctx::Ctx;
use crate::duration::relative;
use crate::fail::Fail;
use crate::output::{daemon_json, now_ms, print, print_json};
use serde_json::json;

/// Attaches read-only and prints what the header says.
pub fn run(ctx: &Ctx) -> Result<(), Fail> {
    let seg = ctx.attach_ro()?;
    let info = seg.inspect().info();
    let ring = seg.ring_counters();
    if ctx.json {
        let regions: Vec<_> = info
            .regions
            .iter()
            .map(|r| json!({ "name": r.name, "offset": r.offset, "capacity": r.capacity, "elem_size": r.elem_size, "bytes": r.bytes, "used": r.used }))
            .collect();
        let out = json!({
            "segment": info.name,
            "path": info.path,
            "size": info.size,
            "layout_version": info.layout_version,
            "state": info.state.as_str(),
            "created_unix_ms": info.created_unix_ms,
            "daemon": daemon_json(&info),
            "policy": { "tokens_required": seg.tokens_required(), "broker_open": seg.broker_open() },
            "hlc": { "raw": info.hlc.0, "wall_ms": info.hlc.wall_ms(), "logical": info.hlc.logical() },
            "regions": regions,
            "index_tombstones": info.index_tombstones,
            "counters": { "nodes_created": info.nodes_created, "nodes_updated": info.nodes_updated, "nodes_deleted": info.nodes_deleted },
            "ring": { "tail": ring.tail, "capacity": ring.capacity, "wakes": ring.wakes, "abandoned": ring.abandoned, "waiters": ring.waiters },
        });
        return print_json(&out);
    }
    let now = now_ms();
    let s = &ctx.style;
    let mut head = s.kv_table();
    let daemon = format!(
        "pid {} ({}), started {}, boot id {}, adopted {} times",
        info.daemon_pid,
        if info.daemon_alive { "running" } else { "gone" },
        relative(now, info.daemon_started_ms),
        info.boot_id,
        info.adopt_count
    );
    for (k, v) in [
        ("segment", format!("{} ({})", info.name, info.path.display())),
        ("size", format!("{} bytes", info.size)),
        ("layout version", info.layout_version.to_string()),
        ("state", info.state.as_str().to_string()),
        ("created", relative(now, info.created_unix_ms)),
        ("daemon", daemon),
        ("policy", policy(&seg)),
        ("clock (hlc)", format!("{} ({} ms, logical {})", info.hlc, info.hlc.wall_ms(), info.hlc.logical())),
        (
            "counters",
            format!("created {}, updated {}, deleted {}", info.nodes_created, info.nodes_updated, info.nodes_deleted),
        ),
        (
            "ring",
            format!(
                "tail {}, {} abandoned slots, {} wake syscalls, {} parked readers",
                ring.tail, ring.abandoned, ring.wakes, ring.waiters
            ),
        ),
    ] {
        head.add_row(vec![k.to_string(), v]);
    }
    let mut t = s.table(&["region", "offset", "capacity", "elem", "bytes", "used"]);
    for r in &info.regions {
        t.add_row(vec![
            comfy_table::Cell::new(r.name),
            s.num(r.offset),
            s.num(r.capacity),
            s.num(r.elem_size),
            s.num(r.bytes),
            s.num(r.used),
        ]);
    }
    let mut text = format!("{}\n\n{}", s.render(head), s.render(t));
    if info.index_tombstones > 0 {
        text.push_str(&format!("\nindex tombstones: {}", info.index_tombstones));
    }
    print(&text)
}

/// The daemon's client policy, in words.
fn policy(seg: &worknode::Segment) -> String {
    let tokens = if seg.tokens_required() { "tokens required" } else { "trusted (tokens optional)" };
    let broker = if seg.broker_open() { "broker open to other users" } else { "broker for this user only" };
    format!("{tokens}; {broker}")
}
