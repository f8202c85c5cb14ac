//! `wn dump`: the segment's identity, layout, usage and state.

use crate::fail::Fail;
use serde_json::json;
use worknode::{Access, Segment};

/// Attaches read-only and prints what the header says.
pub fn run(segment: &str, as_json: bool) -> Result<(), Fail> {
    let seg = Segment::attach(segment, Access::ReadOnly)?;
    let info = seg.info();
    if as_json {
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
            "daemon": { "pid": info.daemon_pid, "alive": info.daemon_alive, "boot_id": info.boot_id.to_string(), "started_unix_ms": info.daemon_started_ms, "adopt_count": info.adopt_count },
            "hlc": { "raw": info.hlc.0, "wall_ms": info.hlc.wall_ms(), "logical": info.hlc.logical() },
            "regions": regions,
            "index_tombstones": info.index_tombstones,
            "counters": { "nodes_created": info.nodes_created, "nodes_updated": info.nodes_updated, "nodes_deleted": info.nodes_deleted },
        });
        println!("{out}");
        return Ok(());
    }
    println!("segment         {} ({})", info.name, info.path.display());
    println!("size            {} bytes", info.size);
    println!("layout version  {}", info.layout_version);
    println!("state           {}", info.state.as_str());
    println!("daemon          pid {} ({}), boot id {}, adopted {} times", info.daemon_pid, if info.daemon_alive { "running" } else { "gone" }, info.boot_id, info.adopt_count);
    println!("clock (hlc)     {} ({} ms, logical {})", info.hlc, info.hlc.wall_ms(), info.hlc.logical());
    println!("counters        created {}, updated {}, deleted {}", info.nodes_created, info.nodes_updated, info.nodes_deleted);
    println!();
    println!("{:<8} {:>12} {:>10} {:>8} {:>12} {:>10}", "region", "offset", "capacity", "elem", "bytes", "used");
    for r in &info.regions {
        println!("{:<8} {:>12} {:>10} {:>8} {:>12} {:>10}", r.name, r.offset, r.capacity, r.elem_size, r.bytes, r.used);
    }
    if info.index_tombstones > 0 {
        println!("index tombstones: {}", info.index_tombstones);
    }
    Ok(())
}
