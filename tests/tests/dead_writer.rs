//! A process that dies holding a node's writer lock: nothing it acknowledged is lost,
//! nothing it had not published appears, no reader is ever blocked by it, and the next
//! writer takes the lock over (repairing what the dead one left half-done).
//!
//! The holder is a real child process that calls [`Segment::update`] and, inside the
//! closure (which runs with the lock held), tells the parent and sleeps forever. The
//! parent stops it, checks readers, and SIGKILLs it. States a process would leave if
//! killed between two particular stores (mid-publish, mid-unlink) are then fabricated
//! byte by byte on top of that genuinely dead holder's lock.

use nix::sys::signal::Signal;
use serde_json::json;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;
use worknode::layout::slot;
use worknode::{Access, Capacities, Daemon, DeleteMode, Handle, NewNode, NodeKind, OwnerTag, PoolError, Segment};
use worknode_tests::{
    child_main, env_str, handles_from_env, handles_to_env, raw, say, wait_stopped, Proc, SegmentGuard, CHILD_TIMEOUT,
    SEGMENT_ENV,
};

const WAIT: Duration = Duration::from_secs(30);

fn caps() -> Capacities {
    Capacities { nodes: 32, events: 16, agents: 2, blob_chunks: 2, ..Capacities::default() }
}

#[test]
fn child_entry() {
    child_main(|role| {
        let name = env_str(SEGMENT_ENV);
        let h = handles_from_env("WN_NODE")[0];
        match role {
            "hold_lock" => {
                let seg = Segment::attach(&name, Access::ReadWrite).expect("attach");
                let r = seg.update(h, |n| {
                    // Changes made to the copy; they are published only if we return.
                    n.set_name("half-written")?;
                    n.set_value(666.0)?;
                    n.set_description("never published")?;
                    say("locked");
                    loop {
                        std::thread::sleep(Duration::from_secs(1));
                    }
                });
                panic!("update returned {r:?}; it was meant to block until killed");
            }
            "read_node" => {
                let seg = Segment::attach(&name, Access::ReadOnly).expect("attach");
                let n = seg.read(h).expect("read while the holder is stopped or dead");
                json!({ "name": n.name(), "value": n.value(), "version": n.version(), "description": n.description() })
            }
            other => panic!("unknown role {other}"),
        }
    })
}

/// Spawns a child that takes `h`'s writer lock and sleeps inside `update`; returns once
/// it holds the lock, after checking the lock word names it.
fn hold_lock(g: &SegmentGuard, h: Handle) -> Proc {
    let p = g.spawn_role("hold_lock", &[("WN_NODE", handles_to_env(&[h]))]);
    p.wait_for_say("locked", WAIT);
    let start = worknode::process_start_ticks(p.pid()).expect("holder is alive");
    let lock = raw::read_u64(&g.shm_path(), raw::slot_offset(&caps(), h.index) + slot::LOCK as u64);
    assert_eq!(lock, OwnerTag::new(p.pid(), start).0, "the lock word must name the holder");
    p
}

/// SIGKILLs the holder and reaps it.
fn kill_holder(p: &mut Proc) {
    p.signal(Signal::SIGKILL);
    let status = p.wait_exit(WAIT);
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32), "{}", p.transcript());
}

/// Reads `h` from another process.
fn read_elsewhere(g: &SegmentGuard, h: Handle) -> serde_json::Value {
    g.spawn_role("read_node", &[("WN_NODE", handles_to_env(&[h]))]).expect_report(CHILD_TIMEOUT)
}

fn lock_word(path: &Path, h: Handle) -> u64 {
    raw::read_u64(path, raw::slot_offset(&caps(), h.index) + slot::LOCK as u64)
}

#[test]
fn a_writer_killed_inside_update_blocks_no_reader_and_loses_nothing() {
    let g = SegmentGuard::new("dead-in-update");
    let seg = Daemon::create(g.name(), &caps(), 0o600).unwrap();
    let h = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "before").description("published").value(1.5)).unwrap();
    seg.update(h, |n| n.set_progress(10)).unwrap();

    let mut holder = hold_lock(&g, h);
    holder.signal(Signal::SIGSTOP);
    assert!(wait_stopped(holder.pid(), WAIT), "holder did not stop");

    // Readers, here and in another process, are not blocked by the (stopped) holder.
    for _ in 0..1000 {
        let n = seg.read(h).expect("read while a stopped process holds the lock");
        assert_eq!((n.name(), n.version(), n.progress()), ("before", 2, 10));
    }
    let r = read_elsewhere(&g, h);
    assert_eq!((r["name"].as_str(), r["version"].as_u64()), (Some("before"), Some(2)), "{r}");

    // A live holder is waited for, never robbed: a short wait ends in Busy.
    let mut other = Segment::attach(g.name(), Access::ReadWrite).unwrap();
    other.set_lock_wait(Duration::from_millis(200));
    let mut called = false;
    let e = other
        .update(h, |n| {
            called = true;
            n.set_progress(99)
        })
        .unwrap_err();
    assert_eq!(e, PoolError::Busy { holder_pid: holder.pid() });
    assert!(e.to_string().contains(&format!("process {}", holder.pid())), "{e}");
    assert!(!called, "update ran its closure without the lock");
    assert_eq!(other.delete(h, DeleteMode::LeafOnly), Err(PoolError::Busy { holder_pid: holder.pid() }));

    // Dead: the next writer takes the lock over. The dead holder's edits never appear.
    kill_holder(&mut holder);
    let n = other.update(h, |n| n.set_progress(55)).expect("update after the holder died");
    assert_eq!((n.name(), n.value(), n.description(), n.progress(), n.version()), ("before", 1.5, "published", 55, 3));
    let n = seg.read(h).unwrap();
    assert_eq!((n.name(), n.value(), n.description(), n.progress(), n.version()), ("before", 1.5, "published", 55, 3));
    assert_eq!(lock_word(&g.shm_path(), h), 0, "lock released after the takeover");
    assert_eq!(seg.inspect().info().nodes_updated, 2);
    let r = read_elsewhere(&g, h);
    assert_eq!((r["name"].as_str(), r["version"].as_u64()), (Some("before"), Some(3)), "{r}");
}

#[test]
fn a_writer_killed_mid_publish_leaves_the_last_published_copy_active() {
    let g = SegmentGuard::new("dead-mid-publish");
    let seg = Daemon::create(g.name(), &caps(), 0o600).unwrap();
    let h = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "stable").value(2.0)).unwrap();
    for p in [10, 20, 30] {
        seg.update(h, |n| n.set_progress(p)).unwrap();
    }
    let before = seg.read(h).unwrap();
    assert_eq!(before.version(), 4);

    let mut holder = hold_lock(&g, h);
    kill_holder(&mut holder);

    // Make it look as if the holder died between `seq = s + 1` and `seq = s + 2` while
    // storing a record into the inactive copy.
    let path = g.shm_path();
    let seq_at = raw::slot_offset(&caps(), h.index) + slot::SEQ as u64;
    let s = raw::read_u64(&path, seq_at);
    assert_eq!(s & 1, 0, "no write in progress before the fabrication");
    raw::write_u64(&path, seq_at, s + 1);
    raw::write_bytes(&path, raw::record_offset(&caps(), h.index, ((s >> 1) & 1) ^ 1), &[0xAB; raw::RECORD_SIZE]);

    // Readers take the last published copy, without waiting for anybody.
    for _ in 0..1000 {
        let n = seg.read(h).expect("read during a dead writer's half publish");
        assert_eq!((n.name(), n.progress(), n.version()), ("stable", 30, 4));
    }
    let r = read_elsewhere(&g, h);
    assert_eq!((r["name"].as_str(), r["version"].as_u64()), (Some("stable"), Some(4)), "{r}");

    // The next writer repairs the sequence word and builds on the published record.
    let n = seg
        .update(h, |n| {
            n.set_priority(7);
            Ok(())
        })
        .expect("update after repair");
    assert_eq!((n.name(), n.progress(), n.value(), n.version()), ("stable", 30, 2.0, 5));
    assert_eq!(n.uuid(), before.uuid());
    let n = seg.read(h).unwrap();
    assert_eq!((n.name(), n.priority(), n.version()), ("stable", 7, 5));
    assert_eq!(raw::read_u64(&path, seq_at) & 1, 0, "sequence word left odd");
    assert_eq!(lock_word(&path, h), 0);
    assert_eq!(seg.lookup(before.uuid()), Ok(h));
}

/// A parent `p` with children a, b, c whose writer lock is held by a process that was
/// SIGKILLed, made to look as if it died unlinking b: the child list is marked changing
/// (`child_seq` odd) and a already points past b.
struct HalfUnlinked {
    p: Handle,
    kids: Vec<Handle>,
    used: u64,
}

fn half_unlinked(g: &SegmentGuard, seg: &Segment) -> HalfUnlinked {
    let p = seg.add(seg.root(), &NewNode::new(NodeKind::Folder, "parent")).unwrap();
    let kids: Vec<Handle> =
        ["a", "b", "c"].iter().map(|n| seg.add(p, &NewNode::new(NodeKind::Task, n)).unwrap()).collect();
    let used = seg.inspect().info().regions[0].used;

    let mut holder = hold_lock(g, p);
    kill_holder(&mut holder);

    let path = g.shm_path();
    let ps = raw::slot_offset(&caps(), p.index);
    let q = raw::read_u64(&path, ps + slot::CHILD_SEQ as u64);
    assert_eq!(q & 1, 0);
    raw::write_u64(&path, ps + slot::CHILD_SEQ as u64, q + 1);
    raw::write_u64(
        &path,
        raw::slot_offset(&caps(), kids[0].index) + slot::NEXT_SIBLING as u64,
        kids[2].index as u64 + 1,
    );

    // The parent's own record is unaffected, and a lister never gets a torn list.
    assert_eq!(seg.read(p).unwrap().name(), "parent");
    let mut out = Vec::new();
    match seg.children(p, &mut out) {
        Ok(()) => assert_eq!(out, kids, "a listing during the half change must be the old list"),
        Err(e) => assert_eq!(e, PoolError::Contended, "only contention may be reported"),
    }
    HalfUnlinked { p, kids, used }
}

/// Checks `p`'s child list is exactly `want`, its sequence word even and its lock free.
fn assert_children(g: &SegmentGuard, seg: &Segment, p: Handle, want: &[Handle]) {
    let mut out = Vec::new();
    seg.children(p, &mut out).expect("children after the rebuild");
    assert_eq!(out, want);
    assert_eq!(seg.child_count(p), Ok(want.len() as u64));
    for k in want {
        assert_eq!(seg.read(*k).unwrap().parent(), Some(p));
    }
    let ps = raw::slot_offset(&caps(), p.index);
    assert_eq!(raw::read_u64(&g.shm_path(), ps + slot::CHILD_SEQ as u64) & 1, 0, "child sequence word left odd");
    assert_eq!(lock_word(&g.shm_path(), p), 0);
}

#[test]
fn a_child_list_left_half_changed_by_a_dead_process_is_rebuilt_by_the_next_writer() {
    let g = SegmentGuard::new("dead-mid-unlink-update");
    let seg = Daemon::create(g.name(), &caps(), 0o600).unwrap();
    let HalfUnlinked { p, kids, used } = half_unlinked(&g, &seg);

    // The next writer of p takes the lock over and rebuilds the list from the
    // children's parent fields: b, which was never freed, is in it again.
    seg.update(p, |n| n.set_progress(1)).expect("update after a dead holder");
    assert_children(&g, &seg, p, &kids);

    seg.delete(kids[1], DeleteMode::LeafOnly).expect("delete from the rebuilt list");
    assert_children(&g, &seg, p, &[kids[0], kids[2]]);
    assert_eq!(seg.delete(p, DeleteMode::Recursive), Ok(3));
    assert_eq!(seg.inspect().info().regions[0].used, used - 4);
    assert_eq!(seg.free_slots(), Ok(caps().nodes as u64 - seg.inspect().info().regions[0].used));
}

#[test]
fn deleting_a_child_of_a_parent_left_half_changed_by_a_dead_process_rebuilds_first() {
    let g = SegmentGuard::new("dead-mid-unlink-delete");
    let seg = Daemon::create(g.name(), &caps(), 0o600).unwrap();
    let HalfUnlinked { p, kids, .. } = half_unlinked(&g, &seg);

    // Deleting c takes p's lock (parent before child): rebuild, then unlink c.
    seg.delete(kids[2], DeleteMode::LeafOnly).expect("delete after a dead holder");
    assert_children(&g, &seg, p, &kids[..2]);
    assert_eq!(seg.lookup(seg.read(kids[0]).unwrap().uuid()), Ok(kids[0]));
}

#[test]
fn adding_under_a_parent_left_half_changed_by_a_dead_process_links_the_new_child_once() {
    let g = SegmentGuard::new("dead-mid-unlink-add");
    let seg = Daemon::create(g.name(), &caps(), 0o600).unwrap();
    let HalfUnlinked { p, kids, .. } = half_unlinked(&g, &seg);

    // Adding under p takes p's lock (to link the new child): rebuild, then append d.
    let d = seg.add(p, &NewNode::new(NodeKind::Task, "d")).expect("add after a dead holder");
    let mut want = kids.clone();
    want.push(d);
    assert_children(&g, &seg, p, &want);
    seg.delete(kids[1], DeleteMode::LeafOnly).expect("delete from the rebuilt list");
    assert_children(&g, &seg, p, &[kids[0], kids[2], d]);
}
