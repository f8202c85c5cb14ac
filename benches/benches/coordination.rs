//! Micro-benchmarks of the coordination operations (ns per operation): an uncontended
//! claim (claim + release), `claim_next` picking the best of 10 000 ready tasks, a
//! bounded query and a subtree rollup over 10 000 nodes. Claims contended by several
//! processes are measured by `wn-bench` (claim throughput with 1, 2 and 4 processes).
//!
//! `cargo bench -p worknode-benches --bench coordination -- --test` runs each once.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::Duration;
use worknode::{Capacities, NewNode, NodeKind, Query, Status, TaskFilter};
use worknode_benches::TempSegment;

const TASKS: usize = 10_000;
const LEASE: Duration = Duration::from_secs(3600);

fn segment(tag: &str) -> TempSegment {
    let caps =
        Capacities { nodes: 12_000, events: 1 << 16, agents: 4, blob_chunks: 1, sets: 1, ..Capacities::default() };
    TempSegment::create(tag, &caps).expect("create a private benchmark segment")
}

fn coordination(c: &mut Criterion) {
    let seg = segment("coord");
    let project = seg.add(seg.root(), &NewNode::new(NodeKind::Project, "bench")).expect("add");
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let name = format!("t{i}"); // sibling names are unique
            let spec =
                NewNode::new(NodeKind::Task, &name).status(Status::Ready).priority((i % 7) as u8).value(i as f64);
            seg.add(project, &spec).expect("add a task")
        })
        .collect();
    let agent = seg.join("bench", "worker").expect("join");
    let mut g = c.benchmark_group("coordination");
    g.bench_function("claim_release_uncontended", |b| {
        let t = tasks[0];
        b.iter(|| {
            let claim = seg.claim(black_box(t), agent, LEASE).expect("claim");
            seg.release(&claim).expect("release");
        })
    });
    g.bench_function("claim_next_10k_ready", |b| {
        b.iter(|| {
            let claim = seg.claim_next(&TaskFilter::default(), agent, LEASE).expect("claim_next");
            seg.release(&claim).expect("release");
        })
    });
    let mut out = Vec::with_capacity(128);
    g.bench_function("query_10k_status_limit_100", |b| {
        let q = Query { kind: Some(NodeKind::Task), status: Some(Status::Ready), limit: 100, ..Query::default() };
        b.iter(|| black_box(seg.query(&q, &mut out).expect("query")))
    });
    g.bench_function("rollup_10k", |b| b.iter(|| black_box(seg.rollup(project, None).expect("rollup"))));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500)).sample_size(20);
    targets = coordination
}
criterion_main!(benches);
