//! Micro-benchmarks of the pool operations of a Worknode segment (ns per operation).
//!
//! Every group works on its own private segment (see [`TempSegment`]), unlinked when the
//! group ends or panics. Groups:
//!
//! * `read`: `Segment::read` (by value) and `Segment::read_into` (into a reused buffer)
//!   of one node, beside the references they are judged against: `memcpy_record` (a
//!   plain copy of one 640-byte record, the goal being a read ≤ 2× that) and
//!   `read_atomic_words_record` (80 relaxed `AtomicU64` loads: the floor for a sound
//!   copy out of memory other processes write).
//! * `update`: a one-field edit through `Segment::update` (lock, copy, write, unlock).
//! * `create_delete`: `Segment::add` of a leaf then `Segment::delete` of it.
//! * `lookup`: `Segment::lookup` by UUID with 10 000 live nodes, UUIDs taken round-robin.
//! * `children`: listing 100 children into a reused `Vec`.
//!
//! `cargo bench -p worknode-benches --bench pool -- --test` runs each benchmark once.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use worknode::{Capacities, DeleteMode, Handle, NewNode, NodeKind};
use worknode_benches::TempSegment;

/// Node capacity of every benchmark segment.
const NODES: u32 = 20_000;
/// Live nodes the `lookup` group searches among.
const LOOKUP_NODES: usize = 10_000;
/// Children listed by the `children` group.
const CHILDREN: usize = 100;

fn segment(tag: &str) -> TempSegment {
    TempSegment::create(tag, &Capacities { nodes: NODES, ..Capacities::default() })
        .expect("create a private benchmark segment")
}

/// A container directly under the root, for a group's nodes.
fn container(seg: &TempSegment, name: &str) -> Handle {
    seg.add(seg.root(), &NewNode::new(NodeKind::Container, name)).expect("add a container")
}

fn read(c: &mut Criterion) {
    let seg = segment("read");
    let parent = container(&seg, "read");
    let h = seg.add(parent, &NewNode::new(NodeKind::Task, "read me").priority(3)).expect("add a node");
    seg.update(h, |n| n.set_progress(42)).expect("update the node");
    assert_eq!(seg.read(h).expect("read").progress(), 42);

    let mut g = c.benchmark_group("read");
    g.bench_function("read", |b| {
        b.iter(|| {
            let node = seg.read(black_box(h)).expect("read");
            black_box(&node);
        })
    });

    // The copy into a reused buffer, as a reader in a loop would do it.
    let mut reused = seg.read(h).expect("read");
    g.bench_function("read_into", |b| {
        b.iter(|| {
            seg.read_into(black_box(h), &mut reused).expect("read_into");
            black_box(&reused);
        })
    });

    // Baselines of the same size as one record copy.
    const WORDS: usize = worknode::layout::RECORD_WORDS;
    let src: Box<[u64; WORDS]> = Box::new(std::array::from_fn(|i| i as u64 * 0x0101_0101));
    g.bench_function("memcpy_record", |b| {
        b.iter(|| {
            // A by-value copy: no zeroing of `dst` first, just the memcpy.
            let dst: [u64; WORDS] = **black_box(&src);
            black_box(&dst);
        })
    });

    let atomic_src: Box<[AtomicU64; WORDS]> = Box::new(std::array::from_fn(|i| AtomicU64::new(i as u64)));
    g.bench_function("read_atomic_words_record", |b| {
        b.iter(|| {
            // Measured faster here than `array::from_fn` or writing into `MaybeUninit`.
            let mut dst = [0u64; WORDS];
            for (d, s) in dst.iter_mut().zip(black_box(&atomic_src[..])) {
                *d = s.load(Ordering::Relaxed);
            }
            black_box(&dst);
        })
    });
    g.finish();
}

fn update(c: &mut Criterion) {
    let seg = segment("update");
    let parent = container(&seg, "update");
    let h = seg.add(parent, &NewNode::new(NodeKind::Task, "update me")).expect("add a node");

    let mut g = c.benchmark_group("update");
    let mut x = 0u64;
    g.bench_function("update", |b| {
        b.iter(|| {
            x = x.wrapping_add(1);
            seg.update(black_box(h), |n| {
                n.set_progress((x % 100) as u8)?;
                Ok(())
            })
            .expect("update")
        })
    });
    g.finish();
}

fn create_delete(c: &mut Criterion) {
    let seg = segment("create-delete");
    let parent = container(&seg, "create-delete");
    let spec = NewNode::new(NodeKind::Task, "bench");

    let mut g = c.benchmark_group("create_delete");
    g.bench_function("create_delete", |b| {
        b.iter(|| {
            let h = seg.add(black_box(parent), &spec).expect("add");
            seg.delete(h, DeleteMode::LeafOnly).expect("delete")
        })
    });
    g.finish();
}

fn lookup(c: &mut Criterion) {
    let seg = segment("lookup");
    let parent = container(&seg, "lookup");
    let uuids: Vec<_> = (0..LOOKUP_NODES)
        .map(|i| {
            let name = format!("lookup {i}"); // sibling names are unique
            let h = seg.add(parent, &NewNode::new(NodeKind::Task, &name)).expect("add");
            seg.read(h).expect("read").uuid()
        })
        .collect();

    let mut g = c.benchmark_group("lookup");
    let mut i = 0usize;
    g.bench_function("lookup", |b| {
        b.iter(|| {
            i += 1;
            if i == uuids.len() {
                i = 0;
            }
            seg.lookup(black_box(uuids[i])).expect("lookup")
        })
    });
    g.finish();
}

fn children(c: &mut Criterion) {
    let seg = segment("children");
    let parent = container(&seg, "children");
    for i in 0..CHILDREN {
        seg.add(parent, &NewNode::new(NodeKind::Task, &format!("child {i}"))).expect("add");
    }
    let mut out = Vec::with_capacity(CHILDREN);
    seg.children(parent, &mut out).expect("children");
    assert_eq!(out.len(), CHILDREN);

    let mut g = c.benchmark_group("children");
    g.bench_function("children_100", |b| {
        b.iter(|| {
            seg.children(black_box(parent), &mut out).expect("children");
            black_box(out.len())
        })
    });
    g.finish();
}

/// Short runs: about 2.5 s per benchmark, so the whole file takes well under a minute.
/// Set on the `Criterion` rather than on each group so that command-line options such as
/// `--measurement-time` still override it.
fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(40)
}

criterion_group! {
    name = pool;
    config = config();
    targets = read, update, create_delete, lookup, children
}
criterion_main!(pool);
