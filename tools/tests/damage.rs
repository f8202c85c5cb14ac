//! Damage injection: for each damage class of `worknode::DamageClass`, a real daemon
//! builds a small board (tasks, a child, a document, a set, an agent with a claim), is
//! killed (so its guard cannot repair the damage before it is looked at), the damage is
//! written straight into `/dev/shm/NAME` at offsets from `worknode::layout`, and then:
//!
//! * (a) `wn doctor` exits non-zero and names the damage (`class` in `--json`);
//! * (b) the writes that follow (`wn add`, under the root and under the damaged node,
//!   and the verbs named per trial) never change a record that was live before: every
//!   live slot's gen/state word, UUID and both record copies are read back, byte for byte;
//! * (c) no `wn` run panics, and every run has a deadline (`common::run`).
//!
//! No assertion is about time.

mod common;

use common::{Daemon, Out};
use serde_json::Value;
use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::PathBuf;
use worknode::layout::{hdr, slot, AgentSlot, BlobChunkHeader, Geometry, HeaderFixed, Region, SetSlot, NODE_SLOT_SIZE};
use worknode::{Access, Capacities, Handle, Hlc, OwnerTag, Segment};
use worknode_tests::raw;

/// A board to damage.
struct Bench {
    d: Daemon,
    path: PathBuf,
    seg: Segment,
    geo: Geometry,
    a: Handle,
    child: Handle,
    doc: Handle,
}

impl Bench {
    fn new(test: &str) -> Bench {
        let caps = Capacities { nodes: 64, events: 1024, agents: 8, blob_chunks: 8, sets: 4, ..Capacities::default() };
        // No journal: with one, every change after the daemon is killed is refused
        // (DaemonGone) before it reaches the damage; the trials are about what a write
        // that follows damaged words does.
        let mut d = Daemon::start_args(test, caps, &["--fsync", "off"]);
        d.run(&["add", "task", "a"]).ok();
        d.run(&["add", "task", "b"]).ok();
        d.run(&["add", "task", "child", "--parent", "/a"]).ok();
        d.run_stdin(&["doc", "put", "/a", "notes", "-"], &[b'n'; 5000]).ok();
        d.run_as("x", &["claim", "/b"]).ok();
        let seg = Segment::attach(d.name(), Access::ReadWrite).unwrap();
        let find = |name: &str| {
            let mut h = None;
            seg.for_each_node(|n| {
                if n.name() == name {
                    h = Some(n.handle());
                }
                true
            })
            .unwrap();
            h.unwrap_or_else(|| panic!("no node {name}"))
        };
        let (a, child, doc) = (find("a"), find("child"), find("notes"));
        seg.set_add(a, 7).unwrap();
        d.kill_daemon();
        let path = worknode::shm_path(d.name());
        let geo = Geometry::new(&caps).unwrap();
        Bench { d, path, seg, geo, a, child, doc }
    }

    fn caps(&self) -> Capacities {
        self.d.caps
    }

    fn slot_word(&self, index: u32, field: usize) -> u64 {
        raw::slot_offset(&self.caps(), index) + field as u64
    }

    fn read(&self, offset: u64) -> u64 {
        raw::read_u64(&self.path, offset)
    }

    fn write(&self, offset: u64, v: u64) {
        raw::write_u64(&self.path, offset, v);
    }

    fn elem(&self, r: Region, i: u64, field: usize) -> u64 {
        let d = self.geo.regions[r as usize];
        d.offset + i * d.elem_size + field as u64
    }

    /// The first slot on the node free list.
    fn free_head_slot(&self) -> u32 {
        ((self.read(hdr::POOL_FREE_HEAD as u64) & 0xffff_ffff) - 1) as u32
    }

    /// Every live slot's gen/state word, UUID and both record copies, by slot.
    fn live_records(&self) -> BTreeMap<u32, Vec<u8>> {
        let bytes = std::fs::read(&self.path).unwrap();
        let mut out = BTreeMap::new();
        for i in 0..self.caps().nodes {
            let base = raw::slot_offset(&self.caps(), i) as usize;
            let s = &bytes[base..base + NODE_SLOT_SIZE as usize];
            let gs = u64::from_ne_bytes(s[slot::GEN_STATE..slot::GEN_STATE + 8].try_into().unwrap());
            if gs & 0xffff_ffff == slot::LIVE {
                let mut keep = s[slot::GEN_STATE..slot::GEN_STATE + 8].to_vec();
                keep.extend_from_slice(&s[slot::UUID..slot::UUID + 16]);
                keep.extend_from_slice(&s[slot::RECORDS..]);
                out.insert(i, keep);
            }
        }
        out
    }

    /// (a): `wn doctor` fails and one finding names `class`. Returns the report.
    fn doctor_names(&self, class: &str) -> Value {
        let out = self.d.run(&["--json", "doctor"]);
        no_panic(&out);
        assert_eq!(out.code, 1, "doctor must fail on {class}: {out:?}");
        let report = out.json();
        assert_eq!(report["healthy"], false);
        let named = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["findings"].as_array().unwrap().iter())
            .any(|f| f["class"] == class && f["severity"] == "error");
        assert!(named, "no finding of class {class}: {report:#}");
        let human = self.d.run(&["doctor"]);
        no_panic(&human);
        assert_eq!(human.code, 1, "{human:?}");
        assert!(human.stdout.contains(class), "the human report names {class}: {human:?}");
        report
    }

    /// (b) and (c): runs the writes (two adds and a claim of /a by default), then checks
    /// that no record live before changed, except /a by a claim that succeeded (then
    /// only as a claim changes it: same identity, next version).
    fn writes_leave_records_alone(&self, extra: &[&[&str]]) -> Vec<Out> {
        let before = self.live_records();
        let a_before = self.seg.read(self.a).ok();
        let mut outs = Vec::new();
        let defaults: [&[&str]; 3] = [
            &["add", "task", "intruder"],
            &["add", "task", "intruder2", "--parent", "/a"],
            &["--agent", "y", "claim", "/a"],
        ];
        for args in defaults.iter().chain(extra.iter()) {
            let out = self.d.run(args);
            no_panic(&out);
            outs.push(out);
        }
        let after = self.live_records();
        for (i, rec) in &before {
            if *i == self.a.index && outs[2].code == 0 {
                let (was, now) = (a_before.expect("a claimable /a was readable"), self.seg.read(self.a).unwrap());
                assert_eq!((now.uuid(), now.name(), now.version()), (was.uuid(), was.name(), was.version() + 1));
                continue;
            }
            assert_eq!(after.get(i), Some(rec), "live slot {i} was changed by a write that followed the damage");
        }
        outs
    }
}

fn no_panic(out: &Out) {
    assert_ne!(out.code, 101, "wn panicked: {out:?}");
    assert!(!out.stderr.contains("panicked"), "wn panicked: {out:?}");
}

/// Read-only verbs run over every damaged board: each may fail, none may panic or hang.
const READERS: [&[&str]; 10] = [
    &["tree"],
    &["ls", "/a"],
    &["show", "/a"],
    &["show", "/a/child"],
    &["dump"],
    &["events"],
    &["stat", "--count", "1"],
    &["agents"],
    &["rollup", "/"],
    &["doc", "get", "/a/notes"],
];

impl Bench {
    /// (c) for the readers: none panics (each run has a deadline).
    fn readers_do_not_panic(&self) {
        for args in READERS {
            no_panic(&self.d.run(args));
            let mut json = vec!["--json"];
            json.extend_from_slice(args);
            no_panic(&self.d.run(&json));
        }
    }
}

/// A trial: build, damage, doctor, writes, readers, and `doctor --repair` (which may
/// repair what it can, and must not panic either).
fn trial(test: &str, class: &str, damage: impl FnOnce(&Bench)) -> (Bench, Vec<Out>) {
    let b = Bench::new(test);
    damage(&b);
    b.doctor_names(class);
    let outs = b.writes_leave_records_alone(&[]);
    b.readers_do_not_panic();
    no_panic(&b.d.run(&["doctor", "--repair"]));
    (b, outs)
}

#[test]
fn a_dead_daemon_alone_makes_doctor_fail() {
    let b = Bench::new("dmg-daemon");
    let report = b.doctor_names("daemon_gone");
    for c in report["checks"].as_array().unwrap() {
        for f in c["findings"].as_array().unwrap() {
            if f["severity"] == "error" {
                assert_eq!(f["class"], "daemon_gone", "an undamaged board: {f}");
            }
        }
    }
}

#[test]
fn free_list_head_naming_a_live_slot() {
    let (b, outs) = trial("dmg-fl-live", "free_list_not_free", |b| {
        let tag = b.read(hdr::POOL_FREE_HEAD as u64) >> 32;
        b.write(hdr::POOL_FREE_HEAD as u64, tag << 32 | (b.a.index as u64 + 1));
    });
    assert_eq!(outs[0].code, 1, "the add is refused: {:?}", outs[0]);
    assert!(outs[0].stderr.contains("not free"), "{:?}", outs[0]);
    assert_eq!(b.seg.read(b.a).unwrap().name(), "a");
}

#[test]
fn free_list_head_out_of_range() {
    trial("dmg-fl-head-range", "free_list_out_of_range", |b| {
        b.write(hdr::POOL_FREE_HEAD as u64, 5 << 32 | (b.caps().nodes as u64 + 10));
    });
}

#[test]
fn free_list_link_out_of_range() {
    let (_, outs) = trial("dmg-fl-link-range", "free_list_out_of_range", |b| {
        let head = b.free_head_slot();
        b.write(b.slot_word(head, slot::NEXT_FREE), b.caps().nodes as u64 + 10);
    });
    assert_eq!(outs[0].code, 1, "a pop whose next link is out of range is refused: {:?}", outs[0]);
}

#[test]
fn free_list_cycle() {
    trial("dmg-fl-cycle", "free_list_cycle", |b| {
        let head = b.free_head_slot();
        let second = (b.read(b.slot_word(head, slot::NEXT_FREE)) - 1) as u32;
        b.write(b.slot_word(second, slot::NEXT_FREE), head as u64 + 1);
    });
}

#[test]
fn blob_free_list_naming_a_live_chunk() {
    let b = Bench::new("dmg-blob-fl");
    let first = b.seg.read(b.doc).unwrap();
    let chunk = first_chunk(&b);
    let tag = b.read(hdr::BLOB_FREE_HEAD as u64) >> 32;
    b.write(hdr::BLOB_FREE_HEAD as u64, tag << 32 | (chunk + 1));
    b.doctor_names("free_list_not_free");
    let outs = b.writes_leave_records_alone(&[&["doc", "put", "/b", "other", "--file", "/etc/hostname"]]);
    assert_ne!(outs[3].code, 0, "the document put is refused: {:?}", outs[3]);
    let mut content = Vec::new();
    b.seg.get_document(b.doc, &mut content).unwrap();
    assert_eq!(content, vec![b'n'; 5000], "the live document is intact");
    assert_eq!(b.seg.read(b.doc).unwrap().version(), first.version());
}

#[test]
fn clock_a_century_ahead() {
    let (b, outs) = trial("dmg-clock", "clock_ahead", |b| {
        let century = Hlc::from_wall_ms(worknode::unix_ms() + 100 * 365 * 86_400_000);
        b.write(hdr::CLOCK as u64, century.0);
    });
    outs[0].ok();
    let now = Hlc(b.read(hdr::CLOCK as u64));
    assert!(now.wall_ms() < worknode::unix_ms() + 3_600_000, "the writer did not propagate the damaged clock: {now}");
}

#[test]
fn lock_forged_to_a_live_process_that_does_not_map_the_segment() {
    let mut sleeper = std::process::Command::new("sleep").arg("120").spawn().unwrap();
    let pid = sleeper.id();
    let tag = OwnerTag::new(pid, worknode::process_start_ticks(pid).unwrap());
    let (b, outs) = trial("dmg-lock-forged", "lock_forged", |b| {
        b.write(b.slot_word(b.a.index, slot::LOCK), tag.0);
    });
    outs[1].ok();
    assert_eq!(b.read(b.slot_word(b.a.index, slot::LOCK)), 0, "the forged lock was taken over and released");
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

#[test]
fn lock_held_by_a_dead_process() {
    let (_, outs) = trial("dmg-lock-dead", "lock_dead", |b| {
        b.write(b.slot_word(b.a.index, slot::LOCK), OwnerTag::new(std::process::id(), 1).0);
    });
    outs[1].ok();
}

#[test]
fn lock_stuck_with_a_live_writer_that_maps_the_segment() {
    // This test process maps the segment, so its tag is a plausible writer: the lock is
    // reported stuck (with the pid) and writers get a bounded `busy`.
    let (b, outs) = trial("dmg-lock-stuck", "lock_stuck", |b| {
        b.write(b.slot_word(b.a.index, slot::LOCK), OwnerTag::current().0);
    });
    let report = b.doctor_names("lock_stuck");
    assert!(report.to_string().contains(&format!("process {}", std::process::id())), "{report}");
    assert_eq!(outs[1].code, 5, "a writer waiting on a stuck lock gets busy: {:?}", outs[1]);
    assert!(outs[1].stderr.contains(&std::process::id().to_string()), "{:?}", outs[1]);
    b.write(b.slot_word(b.a.index, slot::LOCK), 0);
}

fn fixed(field: usize) -> u64 {
    field as u64
}

#[test]
fn header_magic() {
    let (_, outs) = trial("dmg-hdr-magic", "header_magic", |b| b.write(fixed(offset_of!(HeaderFixed, magic)), 0xbad));
    assert_ne!(outs[0].code, 0, "nothing attaches a segment with a damaged header");
}

#[test]
fn header_version() {
    trial("dmg-hdr-version", "header_version", |b| {
        raw::write_bytes(&b.path, fixed(offset_of!(HeaderFixed, layout_version)), &99u32.to_ne_bytes());
    });
}

#[test]
fn header_regions() {
    trial("dmg-hdr-regions", "header_regions", |b| {
        // regions[1].offset (the index region's).
        b.write(fixed(offset_of!(HeaderFixed, regions)) + 32, 12345);
    });
}

#[test]
fn header_size() {
    trial("dmg-hdr-size", "header_size", |b| b.write(fixed(offset_of!(HeaderFixed, segment_size)), 4096));
}

#[test]
fn state_word_garbage() {
    trial("dmg-state", "state_word", |b| b.write(hdr::STATE as u64, 0x5151));
}

#[test]
fn slot_state_garbage() {
    trial("dmg-slot-state", "slot_state", |b| {
        let last = b.caps().nodes - 1;
        b.write(b.slot_word(last, slot::GEN_STATE), 1 << 32 | 9);
    });
}

#[test]
fn index_entry_naming_a_free_slot() {
    trial("dmg-index", "index_entry", |b| {
        let r = b.geo.regions[Region::Index as usize];
        let mine = b.a.index as u64 + 2;
        let free = b.caps().nodes as u64 - 1 + 2;
        let k = (0..r.capacity).find(|k| b.read(r.offset + k * 8) & 0xffff_ffff == mine).expect("a's entry");
        let e = b.read(r.offset + k * 8);
        b.write(r.offset + k * 8, (e & !0xffff_ffff) | free);
    });
}

#[test]
fn index_entry_outside_the_pool() {
    trial("dmg-index-range", "index_entry", |b| {
        let r = b.geo.regions[Region::Index as usize];
        let k = (0..r.capacity).find(|k| b.read(r.offset + k * 8) == 0).expect("an empty entry");
        b.write(r.offset + k * 8, 0xabcd_0000_0000 | 5000);
    });
}

#[test]
fn sibling_links_in_a_cycle() {
    trial("dmg-siblings", "child_links", |b| {
        b.write(b.slot_word(b.child.index, slot::NEXT_SIBLING), b.child.index as u64 + 1);
    });
}

#[test]
fn child_link_outside_the_pool() {
    trial("dmg-child-range", "child_links", |b| {
        b.write(b.slot_word(b.a.index, slot::FIRST_CHILD), b.caps().nodes as u64 + 3);
    });
}

#[test]
fn summary_disagreeing_with_the_record() {
    trial("dmg-summary", "summary", |b| {
        let o = b.slot_word(b.a.index, slot::SUMMARY);
        b.write(o, b.read(o) ^ 0x00ff_0000);
    });
}

#[test]
fn record_status_out_of_range() {
    let b = Bench::new("dmg-enum");
    let off = offset_of!(worknode::layout::NodeRecord, status);
    for copy in 0..2 {
        let o = raw::record_offset(&b.caps(), b.a.index, copy) + off as u64;
        raw::write_bytes(&b.path, o, &[0xee]);
    }
    b.doctor_names("record_enum");
    let outs =
        b.writes_leave_records_alone(&[&["--agent", "y", "claim", "/a"], &["add", "task", "z", "--parent", "/a"]]);
    assert_ne!(outs[2].code, 0, "a claim of a record with a garbage status is refused: {:?}", outs[2]);
}

#[test]
fn seq_word_odd_with_no_holder() {
    trial("dmg-seq", "seq_odd", |b| {
        let o = b.slot_word(b.a.index, slot::SEQ);
        b.write(o, b.read(o) | 1);
    });
}

#[test]
fn ring_stamp_garbage() {
    trial("dmg-ring", "ring_stamp", |b| {
        let last = b.caps().events as u64 - 1;
        b.write(b.elem(Region::Events, last, 0), 0xffff_ffff_ffff_fff3);
    });
}

#[test]
fn agent_slot_garbage() {
    trial("dmg-agent", "agent_slot", |b| {
        let live = (0..b.caps().agents as u64)
            .find(|&i| b.read(b.elem(Region::Agents, i, 0)) & 0xffff_ffff == slot::LIVE)
            .expect("a live agent");
        raw::write_bytes(&b.path, b.elem(Region::Agents, live, offset_of!(AgentSlot, name_len)), &[250]);
    });
}

/// The first blob chunk of the document (its record's `doc_blob`, from the active copy).
fn first_chunk(b: &Bench) -> u64 {
    let seq = b.read(b.slot_word(b.doc.index, slot::SEQ));
    let copy = (seq >> 1) & 1;
    let o =
        raw::record_offset(&b.caps(), b.doc.index, copy) + offset_of!(worknode::layout::NodeRecord, doc_blob) as u64;
    b.read(o) & 0xffff_ffff
}

#[test]
fn blob_content_not_matching_its_crc() {
    trial("dmg-blob-crc", "blob_chain", |b| {
        let o = b.elem(Region::Blobs, first_chunk(b), size_of::<BlobChunkHeader>());
        b.write(o, b.read(o) ^ 0x0101);
    });
}

#[test]
fn blob_chain_leaving_the_arena() {
    trial("dmg-blob-chain", "blob_chain", |b| {
        b.write(b.elem(Region::Blobs, first_chunk(b), offset_of!(BlobChunkHeader, next_chunk)), 999);
    });
}

#[test]
fn set_slot_naming_another_node() {
    trial("dmg-set", "set_slot", |b| {
        let live = (0..b.caps().sets as u64)
            .find(|&i| b.read(b.elem(Region::Sets, i, 0)) & 0xffff_ffff == slot::LIVE)
            .expect("a live set");
        b.write(b.elem(Region::Sets, live, offset_of!(SetSlot, node)), b.child.to_raw());
    });
}

#[test]
fn counters_implausible() {
    trial("dmg-counters", "counters", |b| b.write(hdr::POOL_USED as u64, 1_000_000));
}

#[test]
fn last_child_link_naming_a_node_in_the_middle_of_the_list() {
    let (b, outs) = trial("dmg-last-child", "child_links", |b| {
        // The root's last child becomes /a, which is followed by /b: an add under the root
        // would overwrite /a's next-sibling link and cut /b (and the rest) off.
        b.write(b.slot_word(b.seg.root().index, slot::LAST_CHILD), b.a.index as u64 + 1);
    });
    assert_eq!(outs[0].code, 1, "the add under the damaged list is refused: {:?}", outs[0]);
    assert_ne!(b.read(b.slot_word(b.a.index, slot::NEXT_SIBLING)), 0, "/a's sibling link is intact");
}
