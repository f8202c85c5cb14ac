//! Blob chunks and set slots that a process killed mid-operation leaves off their free
//! lists are given back by the daemon's sweep (`Daemon::reclaim_leaked`), and only
//! those: a live process stopped at the same point keeps what it holds.
//!
//! Each child is this test binary in a role: it starts a document or set operation with
//! `WORKNODE_FAILPOINT` armed, stops at that fail-point (announcing it on stderr), and is
//! SIGKILLed there. The parent plays the daemon (it made the segment) and sweeps.

use nix::sys::signal::Signal;
use serde_json::Value;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;
use worknode::failpoint::FAILPOINT_ENV;
use worknode::{Access, Capacities, Daemon, DocError, Handle, NodeKind, Reclaimed, Segment, Status};
use worknode_tests::{child_main, env_str, env_u64, handles_from_env, handles_to_env, Proc, SegmentGuard, Stream};

/// Bound of every wait for a child (a failing test, never a slow pass).
const STEP: Duration = Duration::from_secs(60);
const CHUNK: u32 = 256;
const LEN_ENV: &str = "WN_LEN";
const NODE_ENV: &str = "WN_NODE";

fn caps(blob_chunks: u32) -> Capacities {
    Capacities { nodes: 32, events: 256, agents: 4, blob_chunks, blob_chunk_size: CHUNK, sets: 4 }
}

fn bytes(tag: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(13).wrapping_add(tag)).collect()
}

#[test]
fn child_entry() {
    child_main(|role| {
        let seg = Segment::attach(&env_str(worknode_tests::SEGMENT_ENV), Access::ReadWrite).expect("attach");
        let fp = env_str(FAILPOINT_ENV);
        let node = handles_from_env(NODE_ENV)[0];
        let len = env_u64(LEN_ENV) as usize;
        let got: Value = match role {
            "put_doc" => format!("{:?}", seg.put_document(node, "doc", "text/plain", &bytes(9, len))).into(),
            "replace_doc" => format!("{:?}", seg.replace_document(node, "text/plain", &bytes(9, len))).into(),
            "set_add" => format!("{:?}", seg.set_add(node, 1)).into(),
            other => panic!("unknown role {other}"),
        };
        panic!("{role} returned {got} instead of stopping at fail-point {fp}: is feature `failpoints` on?")
    })
}

/// Starts `role` on `node` (`len` bytes of content) and returns once it stopped at
/// `failpoint`.
fn stop_at(g: &SegmentGuard, role: &str, node: Handle, len: usize, failpoint: &str) -> Proc {
    let p = g.spawn_role(
        role,
        &[(FAILPOINT_ENV, failpoint.to_string()), (NODE_ENV, handles_to_env(&[node])), (LEN_ENV, len.to_string())],
    );
    let want = format!("failpoint {failpoint} reached");
    p.wait_for_line(Stream::Stderr, STEP, |l| l.contains(&want));
    p
}

fn kill(p: &mut Proc) {
    p.signal(Signal::SIGKILL);
    let status = p.wait_exit(STEP);
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32), "{}", p.transcript());
}

/// Blob chunks in use as the header counts them.
fn used(d: &Daemon) -> u64 {
    d.inspect().info().regions.iter().find(|r| r.name == "blobs").map_or(u64::MAX, |r| r.used)
}

fn no_damage(d: &Daemon) {
    let damage = d.inspect().damage();
    assert!(damage.is_empty(), "{damage:?}");
}

#[test]
fn killed_allocations_are_reclaimed_and_a_live_one_is_left_alone() {
    let g = SegmentGuard::new("reclaim-alloc");
    let d = Daemon::create(g.name(), &caps(16), 0o600).unwrap();
    let root = d.root();
    assert_eq!(d.free_blob_chunks().unwrap(), 16);
    // Killed after allocating, before its document node existed: 3 live chunks.
    let mut a = stop_at(&g, "put_doc", root, 600, "doc.allocated");
    // Killed while writing, before its chunks went live: 2 reserved chunks.
    let mut b = stop_at(&g, "put_doc", root, 300, "blob.written");
    // Alive, stopped at the same step as `a`: its chunk is in use.
    let mut c = stop_at(&g, "put_doc", root, 200, "doc.allocated");
    assert_eq!(d.free_blob_chunks().unwrap(), 16 - 3 - 2 - 1);
    // While they all live, nothing is taken.
    assert_eq!(d.reclaim_leaked().unwrap(), Reclaimed::default());
    kill(&mut a);
    kill(&mut b);

    assert_eq!(d.reclaim_leaked().unwrap(), Reclaimed { blob_chunks: 5, ..Reclaimed::default() });
    assert_eq!(d.free_blob_chunks().unwrap(), 15, "all but the live allocation's chunk");
    assert_eq!(used(&d), 1);
    assert_eq!(d.reclaim_leaked().unwrap(), Reclaimed::default(), "the live one is still left alone");
    assert_eq!(d.child_count(root).unwrap(), 1, "no document was made (only /agents)");

    kill(&mut c);
    assert_eq!(d.reclaim_leaked().unwrap(), Reclaimed { blob_chunks: 1, ..Reclaimed::default() });
    assert_eq!((d.free_blob_chunks().unwrap(), used(&d)), (16, 0));
    no_damage(&d);
    // The arena is whole again: a document of every chunk fits.
    let whole = d.put_document(root, "whole", "text/plain", &bytes(1, 16 * CHUNK as usize)).unwrap();
    d.delete_document(whole).unwrap();
}

#[test]
fn a_replace_killed_before_freeing_the_old_content_is_reclaimed() {
    let g = SegmentGuard::new("reclaim-replace");
    let d = Daemon::create(g.name(), &caps(16), 0o600).unwrap();
    let doc = d.put_document(d.root(), "spec", "text/plain", &bytes(1, 600)).unwrap();
    let mut p = stop_at(&g, "replace_doc", doc, 300, "doc.before_free_old");
    // The new content is published; the old is held by the stopped process.
    let mut out = Vec::new();
    assert_eq!(d.get_document(doc, &mut out).unwrap().version, 3);
    assert_eq!(out, bytes(9, 300));
    assert_eq!(d.free_blob_chunks().unwrap(), 16 - 3 - 2);
    assert_eq!(d.reclaim_leaked().unwrap(), Reclaimed::default(), "its releaser is alive");
    kill(&mut p);
    assert_eq!(d.reclaim_leaked().unwrap(), Reclaimed { blob_chunks: 3, ..Reclaimed::default() });
    assert_eq!((d.free_blob_chunks().unwrap(), used(&d)), (14, 2));
    assert_eq!(d.get_document(doc, &mut out).unwrap().version, 3);
    assert_eq!(out, bytes(9, 300));
    no_damage(&d);
}

#[test]
fn an_in_place_replace_killed_mid_rewrite_leaves_an_empty_document_not_a_dangling_one() {
    let g = SegmentGuard::new("reclaim-rewrite");
    let d = Daemon::create(g.name(), &caps(4), 0o600).unwrap();
    let doc = d.put_document(d.root(), "spec", "text/markdown", &bytes(1, 3 * CHUNK as usize)).unwrap();
    let pad = d.put_document(d.root(), "pad", "text/plain", &bytes(2, 10)).unwrap();
    assert_eq!(d.free_blob_chunks().unwrap(), 0);
    // The arena is full: the replace rewrites the old chunks, and is killed doing it.
    let mut p = stop_at(&g, "replace_doc", doc, 2 * CHUNK as usize + 1, "doc.rewrite");
    let mut out = Vec::new();
    // Readers never get a mix: the old content is gone, so they are told it changed.
    assert_eq!(d.get_document(doc, &mut out), Err(DocError::Changed));
    assert!(out.is_empty());
    assert_eq!(d.reclaim_leaked().unwrap(), Reclaimed::default(), "the rewriter is alive");
    kill(&mut p);

    let r = d.reclaim_leaked().unwrap();
    assert_eq!(r, Reclaimed { blob_chunks: 3, documents_emptied: 1, ..Reclaimed::default() });
    let info = d.get_document(doc, &mut out).unwrap();
    assert_eq!((out.len(), info.content_type.as_str()), (0, "text/markdown"));
    let node = d.read(doc).unwrap();
    assert_eq!((node.kind(), node.status()), (Some(NodeKind::Document), Some(Status::Pending)));
    assert_eq!((d.free_blob_chunks().unwrap(), used(&d)), (3, 1));
    no_damage(&d);
    // The document takes content again.
    d.replace_document(doc, "text/markdown", &bytes(3, 3 * CHUNK as usize)).unwrap();
    d.get_document(doc, &mut out).unwrap();
    assert_eq!(out, bytes(3, 3 * CHUNK as usize));
    d.delete_document(pad).unwrap();
}

#[test]
fn a_set_attach_killed_midway_is_reclaimed() {
    let g = SegmentGuard::new("reclaim-set");
    let d = Daemon::create(g.name(), &caps(4), 0o600).unwrap();
    let node = d.add(d.root(), &worknode::NewNode::new(NodeKind::Folder, "tags")).unwrap();
    let other = d.add(d.root(), &worknode::NewNode::new(NodeKind::Folder, "other")).unwrap();
    assert_eq!(d.free_set_slots().unwrap(), 4);
    let mut dead = stop_at(&g, "set_add", node, 0, "set.attach_reserved");
    let mut live = stop_at(&g, "set_add", other, 0, "set.attach_reserved");
    assert_eq!(d.free_set_slots().unwrap(), 2);
    kill(&mut dead);
    assert_eq!(d.reclaim_leaked().unwrap(), Reclaimed { set_slots: 1, ..Reclaimed::default() });
    assert_eq!(d.free_set_slots().unwrap(), 3, "the live attach keeps its slot");
    kill(&mut live);
    assert_eq!(d.reclaim_leaked().unwrap(), Reclaimed { set_slots: 1, ..Reclaimed::default() });
    assert_eq!(d.free_set_slots().unwrap(), 4);
    no_damage(&d);
    d.set_add(node, 5).unwrap();
    assert!(d.set_contains(node, 5).unwrap());
}

/// The real daemon does it from its housekeeping tick: a document allocation killed
/// midway is given back without anyone asking (the wait is bounded; no time is asserted).
#[test]
fn worknoded_reclaims_on_its_own() {
    let g = SegmentGuard::new("reclaim-daemon");
    let mut d = g.spawn_daemon(&[
        "--nodes",
        "32",
        "--events",
        "256",
        "--agents",
        "4",
        "--blob-chunks",
        "8",
        "--sets",
        "2",
        "--fsync",
        "off",
    ]);
    d.wait_for_line(Stream::Stdout, worknode_tests::READY_TIMEOUT, |l| l.contains("ready"));
    let seg = Segment::attach(g.name(), Access::ReadOnly).unwrap();
    let total = seg.free_blob_chunks().unwrap();
    let mut p = stop_at(&g, "put_doc", seg.root(), 3 * seg.capacities().blob_chunk_size as usize, "doc.allocated");
    assert_eq!(seg.free_blob_chunks().unwrap(), total - 3);
    kill(&mut p);
    worknode_tests::wait_until(STEP, || seg.free_blob_chunks().unwrap() == total, || d.transcript());
    d.wait_for_line(Stream::Stderr, STEP, |l| l.contains("reclaimed 3 blob chunk(s)"));
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(STEP).code(), Some(0), "{}", d.transcript());
}
