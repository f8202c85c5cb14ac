//! The record seqlock across processes: two writer processes keep rewriting the same
//! eight nodes while two reader processes copy them out, and no reader ever sees a
//! record mixed from two writes.
//!
//! Every write makes a self-checking record: the name carries the writer and a counter,
//! from which value, priority, progress and a variable-length filler are derived, and
//! the description starts with an FNV-1a checksum of all of them. A torn copy (words
//! from two different writes) fails the check.

use serde_json::json;
use std::time::{Duration, Instant};
use worknode::{Access, Capacities, Daemon, Handle, NewNode, Node, NodeKind, PoolError, Segment};
use worknode_tests::{child_main, env_str, env_u64, handles_from_env, handles_to_env, say, SegmentGuard, SEGMENT_ENV};

/// Nodes both writers update.
const NODES: usize = 8;
/// Reads each reader makes at least (two readers: 300 000 in all).
const READS_PER_READER: u64 = 150_000;
/// Changed snapshots each reader must see at least, so that reads overlapped writes.
const CHANGES_PER_READER: u64 = 1_000;
/// Bound on how long a child works before it declares the test hung.
const CHILD_DEADLINE: Duration = Duration::from_secs(90);
/// Parent's bound on waiting for a child.
const WAIT: Duration = Duration::from_secs(120);

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.iter() {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Everything one write stores, derived from (writer, counter).
struct Fields {
    name: String,
    value: f64,
    priority: u8,
    progress: u8,
    description: String,
}

fn fields(writer: u64, counter: u64) -> Fields {
    let name = format!("w{writer}-{counter}");
    let value = (writer * 1_000_000_000 + counter) as f64 + 0.5;
    let priority = (counter.wrapping_mul(7) % 256) as u8;
    let progress = (counter % 101) as u8;
    let filler: String = std::iter::repeat_n((b'a' + (counter % 26) as u8) as char, (counter % 200) as usize).collect();
    let sum = checksum(&name, value, priority, progress, &filler);
    Fields { name, value, priority, progress, description: format!("{sum:016x}|{filler}") }
}

fn checksum(name: &str, value: f64, priority: u8, progress: u8, filler: &str) -> u64 {
    fnv1a(&[name.as_bytes(), &value.to_bits().to_le_bytes(), &[priority, progress], filler.as_bytes()])
}

fn write(n: &mut Node, writer: u64, counter: u64) -> Result<(), PoolError> {
    let f = fields(writer, counter);
    n.set_name(&f.name)?;
    n.set_value(f.value)?;
    n.set_priority(f.priority);
    n.set_progress(f.progress)?;
    n.set_description(&f.description)
}

/// Checks that a snapshot is exactly one write's record.
fn check(n: &Node) -> Result<(), String> {
    let bad = |why: &str| Err(format!("torn record ({why}): {n:?}"));
    let Some((writer, counter)) = n.name().strip_prefix('w').and_then(|s| s.split_once('-')) else {
        return bad("name");
    };
    let (Ok(writer), Ok(counter)) = (writer.parse::<u64>(), counter.parse::<u64>()) else { return bad("name") };
    let want = fields(writer, counter);
    let Some((sum, filler)) = n.description().split_once('|') else { return bad("description") };
    if u64::from_str_radix(sum, 16).ok() != Some(checksum(n.name(), n.value(), n.priority(), n.progress(), filler)) {
        return bad("checksum");
    }
    if n.value() != want.value
        || n.priority() != want.priority
        || n.progress() != want.progress
        || n.description() != want.description
    {
        return bad("fields do not match the name");
    }
    Ok(())
}

#[test]
fn child_entry() {
    child_main(|role| {
        let name = env_str(SEGMENT_ENV);
        let nodes = handles_from_env("WN_NODES");
        match role {
            "writer" => {
                let seg = Segment::attach(&name, Access::ReadWrite).expect("writer attach");
                let me = env_u64("WN_WRITER");
                let control = handles_from_env("WN_CONTROL")[0];
                let deadline = Instant::now() + CHILD_DEADLINE;
                let mut updates = 0u64;
                for counter in 1u64.. {
                    let h = nodes[(counter % NODES as u64) as usize];
                    seg.update(h, |n| write(n, me, counter)).unwrap_or_else(|e| panic!("writer {me} update {h}: {e}"));
                    updates += 1;
                    if updates == 200 {
                        say("writing");
                    }
                    if counter % 64 == 0 {
                        if seg.read(control).expect("read control").progress() == 100 {
                            break;
                        }
                        assert!(Instant::now() < deadline, "writer {me}: never told to stop");
                    }
                }
                json!({ "updates": updates })
            }
            "reader" => {
                let seg = Segment::attach(&name, Access::ReadOnly).expect("reader attach");
                let deadline = Instant::now() + CHILD_DEADLINE;
                let mut last = [0u64; NODES];
                let (mut reads, mut changes) = (0u64, 0u64);
                while reads < READS_PER_READER || changes < CHANGES_PER_READER {
                    let i = (reads % NODES as u64) as usize;
                    let n = seg.read(nodes[i]).unwrap_or_else(|e| panic!("read {} after {reads} reads: {e}", nodes[i]));
                    reads += 1;
                    if let Err(e) = check(&n) {
                        panic!("read {reads}: {e}");
                    }
                    assert!(n.version() >= last[i], "version went back from {} to {}: {n:?}", last[i], n.version());
                    if n.version() > last[i] {
                        changes += 1;
                        last[i] = n.version();
                    }
                    if reads % 4096 == 0 {
                        assert!(Instant::now() < deadline, "reader: only {changes} changes seen in {reads} reads");
                    }
                }
                json!({ "reads": reads, "changes": changes })
            }
            other => panic!("unknown role {other}"),
        }
    })
}

#[test]
fn readers_never_see_a_torn_record_while_two_processes_write() {
    let g = SegmentGuard::new("torn-reads");
    let caps = Capacities { nodes: 1024, ..Capacities::default() };
    let seg = Daemon::create(g.name(), &caps, 0o600).unwrap();
    // Writers stop when the control node's progress reaches 100.
    let control = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "control")).unwrap();
    let nodes: Vec<Handle> = (0..NODES)
        .map(|i| {
            let h = seg.add(seg.root(), &NewNode::new(NodeKind::Task, &format!("n{i}"))).unwrap();
            seg.update(h, |n| write(n, 0, 0)).unwrap();
            h
        })
        .collect();
    let env = |extra: (&'static str, String)| {
        vec![("WN_NODES", handles_to_env(&nodes)), ("WN_CONTROL", handles_to_env(&[control])), extra]
    };

    let mut writers: Vec<_> = (1..=2).map(|w| g.spawn_role("writer", &env(("WN_WRITER", w.to_string())))).collect();
    for w in &writers {
        w.wait_for_say("writing", WAIT);
    }
    let mut readers: Vec<_> = (1..=2).map(|r| g.spawn_role("reader", &env(("WN_READER", r.to_string())))).collect();
    let mut total_reads = 0;
    for r in &mut readers {
        let report = r.expect_report(WAIT);
        let reads = report["reads"].as_u64().unwrap();
        assert!(reads >= READS_PER_READER && report["changes"].as_u64().unwrap() >= CHANGES_PER_READER, "{report}");
        total_reads += reads;
    }
    assert!(total_reads >= 100_000);

    seg.update(control, |n| n.set_progress(100)).unwrap();
    let mut total_updates = 0;
    for w in &mut writers {
        let updates = w.expect_report(WAIT)["updates"].as_u64().unwrap();
        assert!(updates >= 200);
        total_updates += updates;
    }

    // Every update is accounted for: the writer lock excluded the two processes, so no
    // read-modify-write was lost (each node started at version 2).
    let mut versions = 0;
    for h in &nodes {
        let n = seg.read(*h).unwrap();
        check(&n).unwrap();
        versions += n.version() - 2;
    }
    assert_eq!(versions, total_updates, "updates lost or duplicated");
    assert_eq!(seg.inspect().info().nodes_updated, total_updates + NODES as u64 + 1);
}
