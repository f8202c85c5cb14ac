//! The merge of replica states: the join laws (proptest), convergence of concurrent
//! label adds and removes on two hosts against the OR-Set model, last-writer-wins of
//! records, and the wire form's checks.

use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;
use worknode::{Hlc, NodeKind, OrSetState, Status};
use worknode_bridge::{decode, encode, Fields, HostId, Lww, ReplicaState, Stamp, WireError, DOCUMENT_MAX, MESSAGE_MAX};

const NODE: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);

fn fields(name: &str, status: Status, progress: u8) -> Fields {
    Fields {
        parent: None,
        kind: NodeKind::Task.code(),
        custom_kind: 0,
        status: status.code(),
        priority: 5,
        progress,
        value_bits: 0f64.to_bits(),
        name: name.into(),
        description: String::new(),
        deleted: false,
    }
}

fn stamp(hlc: u64, host: u32) -> Stamp {
    Stamp::new(Hlc(hlc), HostId(host))
}

prop_compose! {
    fn arb_state()(
        rec_hlc in 1u64..6, rec_host in 1u32..4, name in "[a-c]{1,3}", progress in 0u8..=100,
        doc in proptest::option::of((1u64..6, 1u32..4, proptest::collection::vec(any::<u8>(), 0..4))),
        adds in proptest::collection::btree_set((0u64..4, 0u64..6), 0..8),
        removed in proptest::collection::vec(any::<bool>(), 8),
        labels in proptest::collection::btree_set("[a-c]", 0..3),
    ) -> ReplicaState {
        let tombstones: Vec<(u64, u64)> = adds.iter().zip(&removed).filter(|(_, r)| **r).map(|(p, _)| *p).collect();
        ReplicaState {
            uuid: NODE,
            record: Lww {
                stamp: stamp(rec_hlc, rec_host),
                value: Fields { kind: NodeKind::Document.code(), ..fields(&name, Status::Ready, progress) },
            },
            document: doc.map(|(h, host, bytes)| Lww { stamp: stamp(h, host), value: bytes }),
            set: OrSetState::from_parts(adds, tombstones),
            labels,
        }
    }
}

proptest! {
    #[test]
    fn merge_is_commutative(a in arb_state(), b in arb_state()) {
        prop_assert_eq!(ReplicaState::merge(&a, &b), ReplicaState::merge(&b, &a));
    }

    #[test]
    fn merge_is_associative(a in arb_state(), b in arb_state(), c in arb_state()) {
        let left = ReplicaState::merge(&ReplicaState::merge(&a, &b), &c);
        let right = ReplicaState::merge(&a, &ReplicaState::merge(&b, &c));
        prop_assert_eq!(left, right);
    }

    #[test]
    fn merge_is_idempotent(a in arb_state(), b in arb_state()) {
        prop_assert_eq!(ReplicaState::merge(&a, &a), a.clone());
        // Applying the same message again (a redelivery) changes nothing.
        let once = ReplicaState::merge(&a, &b);
        prop_assert_eq!(ReplicaState::merge(&once, &b), once);
    }

    #[test]
    fn the_latest_record_write_wins_everywhere(a in arb_state(), b in arb_state()) {
        let m = ReplicaState::merge(&a, &b);
        let winner = a.record.stamp.max(b.record.stamp);
        prop_assert_eq!(m.record.stamp, winner);
        prop_assert!(m.record == a.record || m.record == b.record, "a merge writes nothing new");
    }

    #[test]
    fn states_survive_the_wire(a in arb_state()) {
        prop_assert_eq!(decode(&encode(&a).unwrap()).unwrap(), a);
    }
}

/// One step of two hosts' label traffic.
#[derive(Clone, Debug)]
enum Op {
    /// Host `h` adds label `e`.
    Add(usize, u64),
    /// Host `h` removes label `e` (every add of it that host has seen).
    Remove(usize, u64),
    /// Host `h`'s state reaches the other host (one message through the stream).
    Send(usize),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..2, 0u64..3).prop_map(|(h, e)| Op::Add(h, e)),
        (0usize..2, 0u64..3).prop_map(|(h, e)| Op::Remove(h, e)),
        (0usize..2).prop_map(Op::Send),
    ]
}

proptest! {
    /// Two hosts add and remove labels concurrently, exchanging states at random
    /// moments; after a final exchange both hold the same set, and it is the OR-Set's:
    /// a label is present exactly when some add of it was seen by no remove.
    #[test]
    fn concurrent_labels_converge_to_the_or_set(ops in proptest::collection::vec(arb_op(), 0..60)) {
        let mut hosts = [OrSetState::new(), OrSetState::new()];
        // Each host's clock: tags from the two hosts never collide (even and odd).
        let mut clock = [0u64, 1u64];
        // The model: every add (its pair), and whether some remove observed it.
        let mut observed_by_remove: BTreeMap<(u64, u64), bool> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Add(h, e) => {
                    clock[h] += 2;
                    hosts[h].add(e, clock[h]);
                    observed_by_remove.insert((e, clock[h]), false);
                }
                Op::Remove(h, e) => {
                    let seen: Vec<(u64, u64)> = hosts[h].adds().filter(|p| p.0 == e).collect();
                    hosts[h].remove(e);
                    for p in seen {
                        observed_by_remove.insert(p, true);
                    }
                }
                Op::Send(h) => {
                    let sent = hosts[h].clone();
                    hosts[1 - h].merge_from(&sent);
                }
            }
        }
        let (a, b) = (hosts[0].clone(), hosts[1].clone());
        hosts[0].merge_from(&b);
        hosts[1].merge_from(&a);
        prop_assert_eq!(&hosts[0], &hosts[1]);
        let model: BTreeSet<u64> = observed_by_remove.iter().filter(|(_, removed)| !**removed).map(|(p, _)| p.0).collect();
        let got: BTreeSet<u64> = hosts[0].elements().into_iter().collect();
        prop_assert_eq!(got, model);
    }
}

#[test]
fn a_later_write_on_either_host_wins_and_ties_go_to_the_larger_host_id() {
    let on_a = Lww { stamp: stamp(10, 1), value: fields("a", Status::Ready, 0) };
    let on_b = Lww { stamp: stamp(10, 2), value: fields("b", Status::Ready, 0) };
    let later_a = Lww { stamp: stamp(11, 1), value: fields("a2", Status::Ready, 0) };
    assert_eq!(Lww::merge(&on_a, &on_b), on_b);
    assert_eq!(Lww::merge(&later_a, &on_b), later_a);
}

#[test]
fn a_document_put_and_a_concurrent_rename_both_survive() {
    let base = ReplicaState {
        uuid: NODE,
        record: Lww { stamp: stamp(5, 1), value: fields("notes", Status::Pending, 0) },
        document: Some(Lww { stamp: stamp(5, 1), value: b"v1".to_vec() }),
        set: OrSetState::new(),
        labels: BTreeSet::new(),
    };
    let mut renamed_on_a = base.clone();
    renamed_on_a.record = Lww { stamp: stamp(7, 1), value: fields("notes-final", Status::Pending, 0) };
    let mut put_on_b = base.clone();
    put_on_b.document = Some(Lww { stamp: stamp(6, 2), value: b"v2".to_vec() });
    let m = ReplicaState::merge(&renamed_on_a, &put_on_b);
    assert_eq!(m.record.value.name, "notes-final");
    assert_eq!(m.document.map(|d| d.value), Some(b"v2".to_vec()));
    assert_eq!(ReplicaState::merge(&put_on_b, &renamed_on_a).latest(), stamp(7, 1));
}

fn valid() -> ReplicaState {
    ReplicaState {
        uuid: NODE,
        record: Lww { stamp: stamp(1, 1), value: fields("schema", Status::Ready, 10) },
        document: None,
        set: OrSetState::from_parts([(1, 2)], []),
        labels: BTreeSet::from(["urgent".to_string()]),
    }
}

#[test]
fn every_truncation_of_a_message_is_refused_not_misread() {
    let bytes = encode(&valid()).unwrap();
    for len in 0..bytes.len() {
        let got = decode(&bytes[..len]);
        assert!(got.is_err(), "a message cut to {len} of {} bytes was accepted: {got:?}", bytes.len());
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(decode(&longer), Err(WireError::Malformed { .. })), "trailing bytes are refused");
}

#[test]
fn bad_messages_are_typed_errors() {
    let bytes = encode(&valid()).unwrap();
    assert_eq!(decode(&[]), Err(WireError::Empty));
    let mut v2 = bytes.clone();
    v2[0] = 2;
    assert_eq!(decode(&v2), Err(WireError::Version { found: 2 }));
    assert_eq!(decode(&vec![1u8; MESSAGE_MAX + 1]), Err(WireError::TooLong { len: MESSAGE_MAX + 1 }));

    let refused = |edit: fn(&mut ReplicaState), field: &str| {
        let mut s = valid();
        edit(&mut s);
        match encode(&s) {
            Err(WireError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: expected Invalid, got {other:?}"),
        }
    };
    refused(|s| s.record.value.kind = 200, "kind");
    refused(|s| s.record.value.kind = NodeKind::Agent.code(), "kind");
    refused(|s| s.record.value.status = 99, "status");
    refused(|s| s.record.value.progress = 101, "progress");
    refused(|s| s.record.value.value_bits = f64::NAN.to_bits(), "value");
    refused(|s| s.record.value.name = "a/b".into(), "name");
    refused(|s| s.record.value.name = String::new(), "name");
    refused(|s| s.record.value.description = "x".repeat(257), "description");
    refused(|s| s.record.value.custom_kind = 7, "custom_kind");
    refused(|s| s.record.stamp.host = HostId(0), "stamp");
    refused(|s| s.record.stamp.hlc = (worknode::unix_ms() + 7_200_000) << 16, "stamp");
    refused(|s| s.document = Some(Lww { stamp: stamp(1, 1), value: vec![1] }), "document");
    refused(
        |s| {
            s.labels.insert("two words".into());
        },
        "labels",
    );
    refused(|s| s.record.value.parent = Some(NODE), "parent");
    refused(|s| s.set = OrSetState::from_parts((0..33).map(|i| (i, 1)), []), "set");
    refused(|s| s.set = OrSetState::from_parts([(1, 2)], [(3, 4)]), "set");
    let mut big = valid();
    big.record.value.kind = NodeKind::Document.code();
    big.document = Some(Lww { stamp: stamp(1, 1), value: vec![0; DOCUMENT_MAX] });
    assert!(encode(&big).is_ok_and(|b| b.len() <= MESSAGE_MAX), "the largest document fits a message");
    big.document = Some(Lww { stamp: stamp(1, 1), value: vec![0; DOCUMENT_MAX + 1] });
    assert!(matches!(encode(&big), Err(WireError::Invalid { field: "document", .. })));
}
