//! Micro-benchmarks of the event ring (ns per operation): appending with one and two
//! producer threads, reading an available event, and an append seen by a reader
//! (`append_then_read`). The two-process ping-pong percentiles, spin and park, beside
//! the peers a user would pick instead, are measured by `wn-bench`.
//!
//! `cargo bench -p worknode-benches --bench ring -- --test` runs each benchmark once.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::Duration;
use worknode::{Capacities, EventKind, NewEvent, Start};
use worknode_benches::TempSegment;

fn segment(tag: &str) -> TempSegment {
    let caps = Capacities { nodes: 16, events: 1 << 16, agents: 2, blob_chunks: 1, sets: 1, ..Capacities::default() };
    TempSegment::create(tag, &caps).expect("create a private benchmark segment")
}

const PAYLOAD: [u8; 64] = [0x5a; 64];

fn append(c: &mut Criterion) {
    let seg = segment("append");
    let ev = NewEvent::new(EventKind::USER).payload(&PAYLOAD);
    let mut g = c.benchmark_group("append");
    g.bench_function("one_producer", |b| b.iter(|| black_box(seg.append(black_box(&ev)).expect("append"))));
    // Two producers: this thread and a helper thread appending flat out meanwhile.
    g.bench_function("two_producers", |b| {
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = seg.append(&ev);
                }
            });
            b.iter(|| black_box(seg.append(black_box(&ev)).expect("append")));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    });
    g.finish();
}

fn read(c: &mut Criterion) {
    let seg = segment("read");
    let ev = NewEvent::new(EventKind::USER).payload(&PAYLOAD);
    let mut g = c.benchmark_group("read");
    // Keep the reader just behind the producer: append one, read one.
    let mut reader = seg.reader(Start::Now);
    g.bench_function("append_then_read", |b| {
        b.iter(|| {
            seg.append(&ev).expect("append");
            black_box(reader.try_next().expect("read").expect("an event"));
        })
    });
    // Reading alone: refill a batch outside the timed part.
    let batch = 1 << 15;
    let mut reader = seg.reader(Start::Now);
    g.bench_function("read", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(batch);
                for _ in 0..n {
                    seg.append(&ev).expect("append");
                }
                let t = std::time::Instant::now();
                for _ in 0..n {
                    black_box(reader.try_next().expect("read").expect("an event"));
                }
                total += t.elapsed();
                left -= n;
            }
            total
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500)).sample_size(40);
    targets = append, read
}
criterion_main!(benches);
