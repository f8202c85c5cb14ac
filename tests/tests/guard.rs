//! The daemon's header guard and repair scan against a segment damaged while it runs: a
//! real `worknoded`, damage written straight into `/dev/shm/NAME`, and the daemon must
//! repair what it can from its copy and say so on stderr. Every wait has a timeout; no
//! assertion is about time.

use nix::sys::signal::Signal;
use std::mem::offset_of;
use std::time::Duration;
use worknode::layout::{hdr, slot, HeaderFixed, MAGIC};
use worknode::{Access, Hlc, NewNode, NodeKind, OwnerTag, Segment};
use worknode_tests::{raw, wait_until, Proc, SegmentGuard, Stream, READY_TIMEOUT};

/// Generous bound for a once-a-second check to have run.
const REPAIR_TIMEOUT: Duration = Duration::from_secs(20);

fn start(g: &SegmentGuard) -> Proc {
    let d = g.spawn_daemon(&["--nodes", "64", "--events", "256", "--agents", "4", "--blob-chunks", "4"]);
    d.wait_for_line(Stream::Stdout, READY_TIMEOUT, |l| l.contains("ready"));
    d
}

fn stop(mut d: Proc) {
    d.signal(Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(15));
}

#[test]
fn a_damaged_fixed_header_is_restored_from_the_daemons_copy_and_reported() {
    let g = SegmentGuard::new("guard-header");
    let d = start(&g);
    let path = g.shm_path();
    let version = offset_of!(HeaderFixed, layout_version) as u64;
    let before = raw::read_u64(&path, version);
    raw::write_u64(&path, 0, 0xbad);
    raw::write_bytes(&path, version, &77u32.to_ne_bytes());
    d.wait_for_line(Stream::Stderr, REPAIR_TIMEOUT, |l| l.contains("SEGMENT DAMAGE (repaired): header_magic"));
    d.wait_for_line(Stream::Stderr, REPAIR_TIMEOUT, |l| l.contains("header_version"));
    assert_eq!(raw::read_u64(&path, 0), MAGIC);
    assert_eq!(raw::read_u64(&path, version), before);
    // Clients attach again.
    let seg = Segment::attach(g.name(), Access::ReadWrite).unwrap();
    seg.add(seg.root(), &NewNode::new(NodeKind::Task, "after")).unwrap();
    stop(d);
}

#[test]
fn a_garbage_state_word_is_set_back_to_ready_and_reported() {
    let g = SegmentGuard::new("guard-state");
    let d = start(&g);
    let path = g.shm_path();
    raw::write_u64(&path, hdr::STATE as u64, 0x5151);
    d.wait_for_line(Stream::Stderr, REPAIR_TIMEOUT, |l| l.contains("state_word"));
    wait_until(
        REPAIR_TIMEOUT,
        || raw::read_u64(&path, hdr::STATE as u64) == worknode::layout::state::READY,
        || "state word back to ready".into(),
    );
    stop(d);
}

#[test]
fn a_clock_a_century_ahead_is_reset_and_reported() {
    let g = SegmentGuard::new("guard-clock");
    let d = start(&g);
    let path = g.shm_path();
    let century = Hlc::from_wall_ms(worknode::unix_ms() + 100 * 365 * 86_400_000);
    raw::write_u64(&path, hdr::CLOCK as u64, century.0);
    // Reset by the guard, or by a housekeeping write first: either way reported.
    d.wait_for_line(Stream::Stderr, REPAIR_TIMEOUT, |l| l.contains("clock_ahead"));
    let now = Hlc(raw::read_u64(&path, hdr::CLOCK as u64));
    assert!(now.wall_ms() < worknode::unix_ms() + 3_600_000, "{now}");
    stop(d);
}

#[test]
fn a_lock_forged_to_a_live_process_is_taken_over_by_the_daemon() {
    let g = SegmentGuard::new("guard-forged");
    let d = start(&g);
    let seg = Segment::attach(g.name(), Access::ReadWrite).unwrap();
    let h = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "forged")).unwrap();
    let mut sleeper = std::process::Command::new("sleep").arg("120").spawn().unwrap();
    let pid = sleeper.id();
    let tag = OwnerTag::new(pid, worknode::process_start_ticks(pid).unwrap());
    let caps = seg.capacities();
    let lock = raw::slot_offset(&caps, h.index) + slot::LOCK as u64;
    raw::write_u64(&g.shm_path(), lock, tag.0);
    d.wait_for_line(Stream::Stderr, REPAIR_TIMEOUT, |l| l.contains("repaired 1 node slot"));
    assert_eq!(raw::read_u64(&g.shm_path(), lock), 0);
    seg.update(h, |n| n.set_progress(1)).unwrap();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    stop(d);
}
