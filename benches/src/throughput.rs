//! Throughput: events per second through the Worknode ring between processes (1→1, 2→1,
//! 1→2, and 1→0: a producer alone, to separate the append path from a reader's cache
//! traffic; and 1→1 with the producer appending [`BATCH`] events per `append_batch`), and
//! through an in-process SPSC ring (`rtrb`, two threads) as the in-memory reference.
//!
//! Producer processes append a fixed count of 64-byte events as fast as they can; reader
//! processes read every event, check its checksum and each producer's order, and count
//! what they missed if they were lapped (the ring is a broadcast ring: a reader that
//! falls a whole ring behind is told exactly how many events it lost). The rate reported
//! is what each reader received per second, from the first producer's start to that
//! reader's last event; the producers' own append rate is in the notes.

use crate::payload::{self, Payload, PING};
use crate::proc::{mono_ns, RoleCtx};
use crate::report::Rate;
use crate::ring::wait_name;
use crate::suite::{Ctx, Fail, Measured};
use crate::TempSegment;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use worknode::{Access, Capacities, EventKind, NewEvent, RingError, Segment, Start, Wait};

const KIND: EventKind = EventKind(1002);
/// Producer `k` tags its payloads `TAG_BASE + k`.
const TAG_BASE: u64 = 0x7000;
/// Ring slots of the throughput segment.
const EVENTS: u32 = 1 << 16;

fn per_producer(ctx: &Ctx) -> u64 {
    if ctx.quick {
        200_000
    } else {
        5_000_000
    }
}

fn e2s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn field(v: &Value, k: &str) -> Result<u64, String> {
    v.get(k).and_then(Value::as_u64).ok_or_else(|| format!("result without {k}: {v}"))
}

/// Events per `Segment::append_batch` call of the batch row: one claim's worth.
pub const BATCH: usize = worknode::RING_BATCH_CHUNK;

/// The Worknode ring with `producers` producer and `readers` reader processes, single appends.
pub fn ring(ctx: &Ctx, producers: usize, readers: usize) -> Result<Measured, Fail> {
    ring_batched(ctx, producers, readers, 1)
}

/// The Worknode ring with `producers` producer and `readers` reader processes; each
/// producer appends `batch` events per call (1: `Segment::append`, else `append_batch`).
pub fn ring_batched(ctx: &Ctx, producers: usize, readers: usize, batch: usize) -> Result<Measured, Fail> {
    let n = per_producer(ctx);
    let total = n * producers as u64;
    let caps = Capacities { nodes: 64, events: EVENTS, agents: 8, blob_chunks: 1, sets: 1, ..Capacities::default() };
    let seg = TempSegment::create("tput", &caps).map_err(e2s)?;
    // Readers on their own core spin; two readers sharing one core must not.
    let wait = if readers == 1 { Wait::Spin } else { Wait::SpinThenPark };
    let (pcpu, rcpu) = (ctx.pair.map(|p| p.0), ctx.pair.map(|p| p.1));
    let mut rs = Vec::new();
    for _ in 0..readers {
        let args = [
            ("seg", seg.name().to_string()),
            ("total", total.to_string()),
            ("producers", producers.to_string()),
            ("wait", wait_name(wait).to_string()),
        ];
        rs.push(ctx.spawn_on("tput-reader", &args, rcpu)?);
    }
    let mut ps = Vec::new();
    for k in 0..producers {
        let args = [
            ("seg", seg.name().to_string()),
            ("id", k.to_string()),
            ("count", n.to_string()),
            ("batch", batch.to_string()),
        ];
        ps.push(ctx.spawn_on("tput-producer", &args, pcpu)?);
    }
    for c in rs.iter_mut().chain(ps.iter_mut()) {
        c.wait_ready(ctx.answer_timeout())?;
    }
    for c in rs.iter_mut().chain(ps.iter_mut()) {
        c.go()?;
    }
    let mut start = u64::MAX;
    let mut pend = 0;
    for c in ps.iter_mut() {
        let v = c.result(ctx.answer_timeout())?;
        start = start.min(field(&v, "start_ns")?);
        pend = pend.max(field(&v, "end_ns")?);
    }
    let mut per_reader = Vec::new();
    for c in rs.iter_mut() {
        let v = c.result(ctx.answer_timeout())?;
        let (got, missed, end) = (field(&v, "received")?, field(&v, "missed")?, field(&v, "end_ns")?);
        if got + missed != total {
            return Err(format!("a reader saw {got} events and missed {missed}, expected {total} in all").into());
        }
        per_reader.push((got, missed, (end.saturating_sub(start)) as f64 / 1e9));
    }
    let append_secs = pend.saturating_sub(start) as f64 / 1e9;
    let append_rate = total as f64 / append_secs;
    // No reader: the producers' own rate (the append path without a reader's cache traffic).
    let (got, missed, secs) = per_reader
        .iter()
        .copied()
        .min_by(|a, b| (a.0 as f64 / a.2).total_cmp(&(b.0 as f64 / b.2)))
        .unwrap_or((total, 0, append_secs));
    let mut notes = vec![
        format!(
            "{producers} producer process(es) × {n} events of 64 B; {readers} reader process(es), Wait::{wait:?}; ring of {EVENTS} slots"
        ),
        if batch > 1 {
            format!("producers append {batch} events per Segment::append_batch call")
        } else {
            "producers append one event per Segment::append call".to_string()
        },
        format!("producers appended {:.2} M events/s", append_rate / 1e6),
    ];
    let lost: u64 = per_reader.iter().map(|r| r.1).sum();
    if lost > 0 {
        notes.push(format!(
            "readers were lapped and missed {lost} events in all (reported exactly by Lagged); the rate counts received events only"
        ));
    }
    let pin = match ctx.pair {
        Some((a, b)) => format!("producers on CPU {a}, readers on CPU {b}"),
        None => "not pinned".to_string(),
    };
    let readers_json: Vec<Value> =
        per_reader.iter().map(|r| json!({"received": r.0, "missed": r.1, "secs": r.2})).collect();
    Ok(Measured::rate(Rate::new(got as f64 / secs, "events/s", got, secs), notes)
        .pinned(pin)
        .with("append_rate", json!(append_rate))
        .with("missed", json!(missed))
        .with("readers", json!(readers_json)))
}

/// A producer process: appends `count` events, `batch` per call.
pub fn producer_role(ctx: &RoleCtx) -> Result<(), String> {
    let seg = Segment::attach(ctx.get("seg")?, Access::ReadWrite).map_err(e2s)?;
    let id: u64 = ctx.parse("id")?;
    let count: u64 = ctx.parse("count")?;
    let batch: usize = ctx.parse("batch")?;
    if !(1..=BATCH).contains(&batch) {
        return Err(format!("batch {batch}: give 1 ..= {BATCH} events per call"));
    }
    let tag = TAG_BASE + id;
    let mut payloads = [[0u8; payload::LEN]; BATCH];
    ctx.ready();
    ctx.wait_go()?;
    let start = mono_ns();
    let mut retries = 0u64;
    if batch == 1 {
        for i in 0..count {
            let p = payload::make(i, tag);
            loop {
                match seg.append(&NewEvent::new(KIND).payload(&p)) {
                    Ok(_) => break,
                    Err(RingError::Contended) => retries += 1,
                    Err(e) => return Err(format!("append {i}: {e}")),
                }
            }
        }
    } else {
        let mut i = 0;
        while i < count {
            let k = (batch as u64).min(count - i) as usize;
            for (j, p) in payloads[..k].iter_mut().enumerate() {
                *p = payload::make(i + j as u64, tag);
            }
            let evs: [NewEvent<'_>; BATCH] = std::array::from_fn(|j| NewEvent::new(KIND).payload(&payloads[j]));
            // Not retried: a batch that failed part-way has its first events in.
            seg.append_batch(&evs[..k]).map_err(|e| format!("append_batch at {i}: {e}"))?;
            i += k as u64;
        }
    }
    let end = mono_ns();
    ctx.result(&json!({ "start_ns": start, "end_ns": end, "count": count, "retries": retries }));
    Ok(())
}

/// A reader process: reads until it has received or been told it missed every event.
pub fn reader_role(ctx: &RoleCtx) -> Result<(), String> {
    let seg = Segment::attach(ctx.get("seg")?, Access::ReadWrite).map_err(e2s)?;
    let total: u64 = ctx.parse("total")?;
    let producers: usize = ctx.parse("producers")?;
    let wait = match ctx.get("wait")? {
        "spin" => Wait::Spin,
        _ => Wait::SpinThenPark,
    };
    let mut r = seg.reader(Start::At(0));
    let mut next = vec![0u64; producers];
    let (mut received, mut missed) = (0u64, 0u64);
    ctx.ready();
    ctx.wait_go()?;
    while received + missed < total {
        match r.next(wait, Duration::from_secs(30)) {
            Ok(e) => {
                let (seq, tag) = payload::decode(e.payload())?;
                let k =
                    tag.checked_sub(TAG_BASE).filter(|&k| (k as usize) < producers).ok_or("unknown producer tag")?;
                let want = &mut next[k as usize];
                if seq < *want || (seq > *want && missed == 0) {
                    return Err(format!("producer {k}: event {seq} out of order (expected {want})"));
                }
                *want = seq + 1;
                received += 1;
            }
            Err(RingError::Lagged { missed: m, .. }) => missed += m,
            Err(e) => return Err(format!("after {received} events: {e}")),
        }
    }
    let end = mono_ns();
    ctx.result(&json!({ "received": received, "missed": missed, "end_ns": end }));
    Ok(())
}

/// rtrb SPSC ring between two threads of this process.
pub fn rtrb(ctx: &Ctx) -> Result<Measured, Fail> {
    let n = per_producer(ctx) * 4;
    let (mut tx, mut rx) = rtrb::RingBuffer::<Payload>::new(EVENTS as usize);
    let pair = ctx.pair;
    let allowed = ctx.allowed.clone();
    let barrier = std::sync::Barrier::new(2);
    let (secs, pin) = std::thread::scope(|s| -> Result<(f64, String), String> {
        let producer = s.spawn(|| {
            let pinned = pair.map(|p| crate::pinning::pin(0, p.0));
            barrier.wait();
            for i in 0..n {
                let mut v = payload::make(i, PING);
                loop {
                    match tx.push(v) {
                        Ok(()) => break,
                        Err(rtrb::PushError::Full(back)) => {
                            v = back;
                            std::hint::spin_loop();
                        }
                    }
                }
            }
            pinned
        });
        let pinned = pair.map(|p| crate::pinning::pin(0, p.1));
        barrier.wait();
        let t = Instant::now();
        let mut result = Ok(());
        for i in 0..n {
            let v = loop {
                match rx.pop() {
                    Ok(v) => break v,
                    Err(_) => std::hint::spin_loop(),
                }
            };
            if let Err(e) = payload::check(&v, i, PING) {
                result = Err(e);
                break;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let _ = crate::pinning::unpin(&allowed);
        let p = producer.join().map_err(|_| "the producer thread panicked".to_string())?;
        result?;
        let pin = match (pair, p, pinned) {
            (Some((a, b)), Some(Ok(())), Some(Ok(()))) => format!("threads on CPU {a} / CPU {b}"),
            (None, _, _) => "not pinned".to_string(),
            (_, p, c) => format!("pinning failed: {p:?} / {c:?}"),
        };
        Ok((secs, pin))
    })?;
    Ok(Measured::rate(
        Rate::new(n as f64 / secs, "events/s", n, secs),
        vec![format!("rtrb {n} × 64 B payloads, capacity {EVENTS}, consumer checks every checksum")],
    )
    .pinned(pin))
}
