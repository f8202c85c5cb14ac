//! The node pool shared by processes: exhaustion and recovery, stale handles after slot
//! reuse, limits, and create/delete churn from four processes at once after which no
//! slot, index entry or child link is lost.

use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};
use uuid::Uuid;
use worknode::layout::{DESCRIPTION_MAX, NAME_MAX};
use worknode::{Access, Capacities, Daemon, DeleteMode, Handle, NewNode, NodeKind, PoolError, Segment};
use worknode_tests::{
    child_main, env_str, env_u64, handles_from_env, handles_to_env, say, SegmentGuard, CHILD_TIMEOUT, SEGMENT_ENV,
};

fn caps(nodes: u32) -> Capacities {
    Capacities { nodes, events: 16, agents: 2, blob_chunks: 2, ..Capacities::default() }
}

fn attach() -> Segment {
    Segment::attach(&env_str(SEGMENT_ENV), Access::ReadWrite).expect("attach read-write")
}

fn handle_of(v: &Value) -> Handle {
    Handle::from_raw(v.as_u64().expect("raw handle")).expect("a handle")
}

fn uuid_of(v: &Value) -> Uuid {
    v.as_str().expect("uuid string").parse().expect("uuid")
}

#[test]
fn child_entry() {
    child_main(|role| match role {
        "fill" => {
            // Add leaves under the root until the pool refuses.
            let seg = attach();
            let mut added = Vec::new();
            let err = loop {
                match seg.add(seg.root(), &NewNode::new(NodeKind::Task, &format!("fill-{}", added.len()))) {
                    Ok(h) => added.push(h),
                    Err(e) => break e,
                }
                assert!(added.len() <= 1 << 20, "the pool never filled");
            };
            json!({ "added": handles_to_env(&added), "debug": format!("{err:?}"), "display": err.to_string() })
        }
        "add_one" => {
            let seg = attach();
            let h = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "newcomer")).expect("add_one");
            json!({ "handle": h.to_raw(), "uuid": seg.read(h).unwrap().uuid().to_string() })
        }
        "use_stale" => {
            let seg = attach();
            let h = handles_from_env("WN_NODE")[0];
            json!({
                "read": format!("{:?}", seg.read(h).err()),
                "update": format!("{:?}", seg.update(h, |n| n.set_progress(1)).err()),
                "delete": format!("{:?}", seg.delete(h, DeleteMode::LeafOnly).err()),
                "add_under": format!("{:?}", seg.add(h, &NewNode::new(NodeKind::Task, "orphan")).err()),
                "children": format!("{:?}", seg.children(h, &mut Vec::new()).err()),
            })
        }
        "churn" => churn(),
        other => panic!("unknown role {other}"),
    })
}

/// What a fresh segment already holds (the root and whatever the library puts under it):
/// live nodes, and their UUIDs.
fn baseline(seg: &Segment) -> (u64, BTreeSet<Uuid>) {
    let mut ids = BTreeSet::new();
    seg.for_each_node(|n| ids.insert(n.uuid())).unwrap();
    let used = seg.inspect().info().regions[0].used;
    assert_eq!(used, ids.len() as u64, "used count of a fresh segment");
    assert_eq!(seg.free_slots(), Ok(seg.capacities().nodes as u64 - used), "free list of a fresh segment");
    (used, ids)
}

fn filled(r: &Value) -> Vec<Handle> {
    r["added"].as_str().unwrap().split(',').map(|w| Handle::from_raw(w.parse().unwrap()).unwrap()).collect()
}

#[test]
fn the_pool_is_full_exactly_at_capacity_and_recovers_after_a_delete() {
    let g = SegmentGuard::new("pool-full");
    let seg = Daemon::create(g.name(), &caps(16), 0o600).unwrap();
    let (base, _) = baseline(&seg);
    let free = 16 - base;
    let root_children = seg.child_count(seg.root()).unwrap();

    // Another process fills the pool; the add after the last free slot is refused.
    let r = g.spawn_role("fill", &[]).expect_report(CHILD_TIMEOUT);
    let added = filled(&r);
    assert_eq!(added.len() as u64, free, "{r}");
    assert_eq!(r["debug"], format!("{:?}", PoolError::PoolFull { capacity: 16 }), "{r}");
    // What happened, with the capacity; `wn`'s hint names --nodes (tools/tests/tasks.rs).
    assert_eq!(r["display"], "node pool full (16 slots)", "{r}");

    // This process sees the same: full, and a refused add leaves nothing behind.
    assert_eq!(
        seg.add(seg.root(), &NewNode::new(NodeKind::Task, "one too many")),
        Err(PoolError::PoolFull { capacity: 16 })
    );
    assert_eq!(seg.free_slots(), Ok(0));
    let info = seg.inspect().info();
    assert_eq!(info.regions[0].used, 16);
    assert_eq!(info.regions[1].used, 16, "index entries");
    assert_eq!(seg.child_count(seg.root()), Ok(root_children + free));

    // One delete frees exactly one slot, and it is used again.
    let victim = added[added.len() / 2];
    seg.delete(victim, DeleteMode::LeafOnly).unwrap();
    assert_eq!(seg.free_slots(), Ok(1));
    let h = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "fits again")).expect("add after a delete");
    assert_eq!(h.index, victim.index, "the freed slot is reused");
    assert_eq!(
        seg.add(seg.root(), &NewNode::new(NodeKind::Task, "no more")),
        Err(PoolError::PoolFull { capacity: 16 })
    );

    // Freeing everything added gives every slot back.
    for k in added.iter().filter(|k| **k != victim).chain([&h]) {
        seg.delete(*k, DeleteMode::LeafOnly).unwrap();
    }
    assert_eq!(seg.free_slots(), Ok(free));
    assert_eq!(seg.inspect().info().regions[0].used, base);
    let r = g.spawn_role("fill", &[]).expect_report(CHILD_TIMEOUT);
    assert_eq!(filled(&r).len() as u64, free, "{r}");
}

#[test]
fn handles_to_a_reused_slot_are_stale_in_every_process() {
    let g = SegmentGuard::new("stale");
    let seg = Daemon::create(g.name(), &caps(16), 0o600).unwrap();
    let (base, _) = baseline(&seg);
    let old = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "old")).unwrap();
    let old_uuid = seg.read(old).unwrap().uuid();
    seg.delete(old, DeleteMode::LeafOnly).unwrap();

    // Another process creates a node; the free list hands it the same slot.
    let r = g.spawn_role("add_one", &[]).expect_report(CHILD_TIMEOUT);
    let new = handle_of(&r["handle"]);
    assert_eq!(new.index, old.index, "same slot");
    assert_ne!(new.generation, old.generation, "new generation");
    assert_eq!(seg.lookup(uuid_of(&r["uuid"])), Ok(new));
    assert_eq!(seg.lookup(old_uuid), Err(PoolError::NotFound));

    // The old handle is refused here...
    assert_eq!(seg.read(old).err(), Some(PoolError::StaleHandle));
    let mut called = false;
    let e = seg.update(old, |_| {
        called = true;
        Ok(())
    });
    assert_eq!(e.err(), Some(PoolError::StaleHandle));
    assert!(!called);
    assert_eq!(seg.delete(old, DeleteMode::LeafOnly), Err(PoolError::StaleHandle));
    assert_eq!(seg.delete(old, DeleteMode::Recursive), Err(PoolError::StaleHandle));
    assert_eq!(seg.add(old, &NewNode::new(NodeKind::Task, "x")), Err(PoolError::StaleHandle));
    // `wn`'s hint says to look it up again by UUID (tools/src/fail.rs tests).
    assert_eq!(PoolError::StaleHandle.to_string(), "the node this handle named was deleted");

    // ...and in another process.
    let r = g.spawn_role("use_stale", &[("WN_NODE", handles_to_env(&[old]))]).expect_report(CHILD_TIMEOUT);
    let stale = format!("{:?}", Some(PoolError::StaleHandle));
    for op in ["read", "update", "delete", "add_under", "children"] {
        assert_eq!(r[op], stale.as_str(), "{op}: {r}");
    }

    // The newcomer is untouched by all that.
    let n = seg.read(new).unwrap();
    assert_eq!((n.name(), n.version()), ("newcomer", 1));
    assert_eq!(seg.inspect().info().regions[0].used, base + 1);

    // A handle past the pool names nothing.
    let past = Handle { index: 16, generation: 1 };
    assert_eq!(seg.read(past).err(), Some(PoolError::NotFound));
}

#[test]
fn limits_are_enforced_and_a_refused_change_leaves_nothing_behind() {
    let g = SegmentGuard::new("limits");
    let seg = Daemon::create(g.name(), &caps(16), 0o600).unwrap();
    let (base, _) = baseline(&seg);
    let p = seg.add(seg.root(), &NewNode::new(NodeKind::Project, "p")).unwrap();
    let t = seg.add(p, &NewNode::new(NodeKind::Task, "t").description("d").value(3.0)).unwrap();
    let s = seg.add(t, &NewNode::new(NodeKind::Task, "s")).unwrap();
    let before =
        (seg.free_slots().unwrap(), seg.inspect().info().regions[0].used, seg.inspect().info().regions[1].used);

    let long_name = "n".repeat(NAME_MAX + 1);
    let long_desc = "d".repeat(DESCRIPTION_MAX + 1);
    assert_eq!(seg.add(p, &NewNode::new(NodeKind::Task, &long_name)), Err(PoolError::NameTooLong { len: 65, max: 64 }));
    assert_eq!(
        seg.add(p, &NewNode::new(NodeKind::Task, "x").description(&long_desc)),
        Err(PoolError::DescriptionTooLong { len: 257, max: 256 })
    );
    let exact =
        seg.add(p, &NewNode::new(NodeKind::Task, &"n".repeat(NAME_MAX)).description(&"d".repeat(DESCRIPTION_MAX)));
    let exact = exact.expect("names and descriptions at the limit fit");
    assert_eq!(seg.read(exact).unwrap().name().len(), NAME_MAX);
    seg.delete(exact, DeleteMode::LeafOnly).unwrap();

    // A refused update publishes nothing, even what the closure set before failing.
    let v = seg.read(t).unwrap().version();
    let e = seg.update(t, |n| {
        n.set_value(99.0)?;
        n.set_name(&long_name)
    });
    assert_eq!(e.err(), Some(PoolError::NameTooLong { len: 65, max: 64 }));
    assert_eq!(seg.update(t, |n| n.set_progress(101)).err(), Some(PoolError::ProgressOutOfRange { value: 101 }));
    assert_eq!(
        seg.update(t, |n| n.set_description(&long_desc)).err(),
        Some(PoolError::DescriptionTooLong { len: 257, max: 256 })
    );
    let n = seg.read(t).unwrap();
    assert_eq!((n.version(), n.value(), n.name(), n.progress()), (v, 3.0, "t", 0));

    // Deleting: leaf-only refuses a node with children; the root cannot go.
    assert_eq!(seg.delete(t, DeleteMode::LeafOnly), Err(PoolError::HasChildren { count: 1 }));
    assert_eq!(seg.delete(p, DeleteMode::LeafOnly), Err(PoolError::HasChildren { count: 1 }));
    // `wn`'s hint says to delete recursively (tools/src/fail.rs tests).
    assert_eq!(PoolError::HasChildren { count: 1 }.to_string(), "node has 1 children");
    assert_eq!(seg.delete(seg.root(), DeleteMode::LeafOnly), Err(PoolError::RootImmutable));
    assert_eq!(seg.delete(seg.root(), DeleteMode::Recursive), Err(PoolError::RootImmutable));
    assert_eq!(seg.read(s).unwrap().parent(), Some(t));

    assert_eq!(
        (seg.free_slots().unwrap(), seg.inspect().info().regions[0].used, seg.inspect().info().regions[1].used),
        before
    );
    assert_eq!(seg.delete(p, DeleteMode::Recursive), Ok(3));
    assert_eq!(seg.inspect().info().regions[0].used, base);
    assert_eq!(seg.free_slots(), Ok(16 - base));
}

// ---------------------------------------------------------------------------------------
// Churn
// ---------------------------------------------------------------------------------------

/// Processes churning at once.
const WORKERS: u64 = 4;
/// Add/delete cycles per worker.
const CYCLES: u64 = 8_000;
/// One cycle in this many keeps its node (with 0–2 children) alive.
const KEEP_EVERY: u64 = 100;

/// A node's handle and UUID.
type Named = (Handle, Uuid);

/// One worker: thousands of add/delete cycles under the shared parent, leaves and small
/// subtrees, checking the UUID index after every step. Reports the nodes it kept.
fn churn() -> Value {
    let seg = attach();
    let me = env_u64("WN_WORKER");
    let parent = handles_from_env("WN_PARENT")[0];
    let deadline = Instant::now() + Duration::from_secs(80);
    let mut kept: Vec<(Handle, Uuid, Vec<Named>)> = Vec::new();
    let mut deleted: Vec<Uuid> = Vec::new();
    let (mut adds, mut deletes) = (0u64, 0u64);
    let uuid = |h: Handle| seg.read(h).unwrap_or_else(|e| panic!("read {h} right after add: {e}")).uuid();
    let gone = |h: Handle, id: Uuid, what: &str| {
        assert_eq!(seg.lookup(id), Err(PoolError::NotFound), "{what}: lookup of a deleted uuid");
        assert_eq!(seg.read(h).err(), Some(PoolError::StaleHandle), "{what}: read of a deleted handle");
    };
    say("churning");
    for i in 0..CYCLES {
        let name = format!("w{me}-{i}");
        let top = seg.add(parent, &NewNode::new(NodeKind::Task, &name)).unwrap_or_else(|e| panic!("add {name}: {e}"));
        adds += 1;
        let top_id = uuid(top);
        assert_eq!(seg.lookup(top_id), Ok(top), "lookup right after add");
        assert_eq!(seg.read(top).unwrap().parent(), Some(parent));
        let sub = if i % 10 >= 7 || i % KEEP_EVERY == 0 { (i / 10 % 3) as usize } else { 0 };
        let mut below = Vec::new();
        for k in 0..sub {
            let c = seg.add(top, &NewNode::new(NodeKind::Task, &format!("{name}.{k}"))).unwrap();
            adds += 1;
            let cid = uuid(c);
            assert_eq!(seg.lookup(cid), Ok(c));
            below.push((c, cid));
        }
        if sub == 2 && i % KEEP_EVERY != 0 {
            // A grandchild too, to make a three-level subtree.
            let gc = seg.add(below[0].0, &NewNode::new(NodeKind::Task, &format!("{name}.0.0"))).unwrap();
            adds += 1;
            let gid = uuid(gc);
            let n = seg.delete(top, DeleteMode::Recursive).unwrap_or_else(|e| panic!("recursive delete {name}: {e}"));
            assert_eq!(n, 4, "recursive delete count");
            deletes += n;
            gone(gc, gid, "grandchild");
            for (c, cid) in &below {
                gone(*c, *cid, "child");
            }
            gone(top, top_id, "subtree top");
            deleted.push(gid);
        } else if i % KEEP_EVERY == 0 {
            kept.push((top, top_id, below));
        } else if sub > 0 {
            assert_eq!(seg.delete(top, DeleteMode::LeafOnly), Err(PoolError::HasChildren { count: sub as u64 }));
            assert_eq!(seg.delete(top, DeleteMode::Recursive), Ok(sub as u64 + 1));
            deletes += sub as u64 + 1;
            gone(top, top_id, "subtree top");
            for (c, cid) in &below {
                gone(*c, *cid, "child");
            }
        } else {
            assert_eq!(seg.delete(top, DeleteMode::LeafOnly), Ok(1));
            deletes += 1;
            gone(top, top_id, "leaf");
        }
        deleted.push(top_id);
        if deleted.len() > 256 {
            deleted.drain(..128);
        }
        if i % 50 == 0 {
            // Live uuids always resolve, deleted ones never do, whatever the others do.
            for (h, id, below) in &kept {
                assert_eq!(seg.lookup(*id), Ok(*h), "kept node lost");
                for (c, cid) in below {
                    assert_eq!(seg.lookup(*cid), Ok(*c), "kept child lost");
                }
            }
            for id in &deleted {
                if !kept.iter().any(|k| k.1 == *id) {
                    assert_eq!(seg.lookup(*id), Err(PoolError::NotFound), "deleted uuid found");
                }
            }
            assert!(Instant::now() < deadline, "worker {me} too slow: {i} cycles");
        }
    }
    let kept: Vec<Value> = kept
        .iter()
        .map(|(h, id, below)| {
            let below: Vec<Value> =
                below.iter().map(|(c, cid)| json!({ "handle": c.to_raw(), "uuid": cid.to_string() })).collect();
            json!({ "handle": h.to_raw(), "uuid": id.to_string(), "children": below })
        })
        .collect();
    json!({ "kept": kept, "adds": adds, "deletes": deletes })
}

#[test]
fn four_processes_churning_lose_no_slot_no_index_entry_and_no_child_link() {
    let g = SegmentGuard::new("churn");
    let capacity = 1024u32;
    let seg = Daemon::create(g.name(), &caps(capacity), 0o600).unwrap();
    let (base, base_ids) = baseline(&seg);
    let created0 = seg.inspect().info().nodes_created;
    let parent = seg.add(seg.root(), &NewNode::new(NodeKind::Folder, "shared")).unwrap();
    let mut workers: Vec<_> = (0..WORKERS)
        .map(|w| g.spawn_role("churn", &[("WN_WORKER", w.to_string()), ("WN_PARENT", handles_to_env(&[parent]))]))
        .collect();
    for w in &workers {
        w.wait_for_say("churning", CHILD_TIMEOUT);
    }

    // Meanwhile, list the shared parent's children: every snapshot is a proper list.
    let mut listings = 0u64;
    let mut out = Vec::new();
    let deadline = Instant::now() + CHILD_TIMEOUT;
    while workers.iter_mut().any(|w| w.try_wait_exit(Duration::ZERO).is_none()) && Instant::now() < deadline {
        match seg.children(parent, &mut out) {
            Ok(()) => {
                let distinct: BTreeSet<_> = out.iter().collect();
                assert_eq!(distinct.len(), out.len(), "a handle listed twice: {out:?}");
                listings += 1;
            }
            Err(PoolError::Contended) => {}
            Err(e) => panic!("children during churn: {e}"),
        }
        std::thread::sleep(Duration::from_millis(1));
    }

    let mut kept: HashMap<Uuid, (Handle, Handle)> = HashMap::new(); // uuid -> (handle, parent)
    let mut tops = BTreeSet::new();
    let (mut adds, mut deletes) = (0, 0);
    for w in &mut workers {
        let r = w.expect_report(CHILD_TIMEOUT);
        adds += r["adds"].as_u64().unwrap();
        deletes += r["deletes"].as_u64().unwrap();
        for k in r["kept"].as_array().unwrap() {
            let h = handle_of(&k["handle"]);
            tops.insert(h);
            kept.insert(uuid_of(&k["uuid"]), (h, parent));
            let mut want = Vec::new();
            for c in k["children"].as_array().unwrap() {
                kept.insert(uuid_of(&c["uuid"]), (handle_of(&c["handle"]), h));
                want.push(handle_of(&c["handle"]));
            }
            seg.children(h, &mut out).unwrap();
            assert_eq!(out, want, "children of a kept node");
        }
    }
    assert_eq!(tops.len() as u64, WORKERS * CYCLES / KEEP_EVERY);

    // Quiescent now: every count is exact.
    let live = kept.len() as u64 + base + 1; // + the shared parent
    let info = seg.inspect().info();
    assert_eq!(info.regions[0].used, live, "pool used");
    assert_eq!(info.regions[1].used, live, "index entries");
    assert_eq!(seg.free_slots(), Ok(capacity as u64 - live), "free list");
    assert_eq!(info.nodes_created - info.nodes_deleted, live);
    assert_eq!(info.nodes_created, created0 + adds + 1);
    assert_eq!(info.nodes_deleted, deletes);

    seg.children(parent, &mut out).unwrap();
    assert_eq!(out.iter().copied().collect::<BTreeSet<_>>(), tops, "shared parent's child list");
    assert_eq!(out.len(), tops.len());
    assert_eq!(seg.child_count(parent), Ok(tops.len() as u64));

    let mut seen = 0u64;
    seg.for_each_node(|n| {
        seen += 1;
        if !base_ids.contains(&n.uuid()) && n.handle() != parent {
            let (h, p) = kept.get(&n.uuid()).unwrap_or_else(|| panic!("a node nobody kept is live: {n:?}"));
            assert_eq!((n.handle(), n.parent()), (*h, Some(*p)));
        }
        true
    })
    .unwrap();
    assert_eq!(seen, live);
    for (id, (h, _)) in &kept {
        assert_eq!(seg.lookup(*id), Ok(*h), "kept uuid not found");
    }
    let index = info.regions[1];
    assert!(index.used + info.index_tombstones <= index.capacity, "index counters exceed its capacity: {info:?}");
    println!(
        "churn: {adds} adds, {deletes} deletes, {listings} listings; index: {} live + {} tombstones of {} entries",
        index.used, info.index_tombstones, index.capacity
    );
}
