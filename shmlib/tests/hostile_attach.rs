//! The attach path on hostile bytes (the bounded, always-run twin of the cargo-fuzz
//! target `segment_attach`): a valid segment's image with random bytes written over its
//! header, or anywhere, is refused with a typed error or read without a panic; every
//! read of a damaged but attachable segment returns data or a typed error.

use proptest::prelude::*;
use std::sync::OnceLock;
use worknode::{Access, Capacities, Daemon, NewNode, NodeKind, Segment};

fn caps() -> Capacities {
    Capacities { nodes: 16, events: 16, agents: 2, blob_chunks: 2, sets: 2, ..Capacities::default() }
}

fn image() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let name = format!("wn-hostile-src-{}", std::process::id());
        let _ = Segment::unlink(&name);
        let seg = Daemon::create(&name, &caps(), 0o600).expect("create");
        let p = seg.add(seg.root(), &NewNode::new(NodeKind::Project, "p")).expect("add");
        seg.add(p, &NewNode::new(NodeKind::Task, "t")).expect("add");
        let bytes = std::fs::read(seg.path()).expect("read the image");
        let _ = Segment::unlink(&name);
        bytes
    })
}

/// Writes `bytes` as a segment object, attaches read-only and reads everything.
fn attach_and_read(case: u64, bytes: &[u8]) -> Result<(), TestCaseError> {
    let name = format!("wn-hostile-{}-{case}", std::process::id());
    let path = worknode::shm_path(&name);
    std::fs::write(&path, bytes).expect("write the object");
    // Whatever the umask: a segment of any other mode is refused before it is read.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod 600");
    let outcome = Segment::attach_with(&name, Access::ReadOnly, std::time::Duration::ZERO);
    if let Ok(seg) = &outcome {
        let _ = seg.inspect().info();
        let mut nodes = 0u32;
        let _ = seg.for_each_node(|n| {
            let _ = (n.name(), n.kind(), n.status(), n.parent());
            nodes += 1;
            true
        });
        prop_assert!(nodes <= caps().nodes);
        let mut kids = Vec::new();
        let _ = seg.children(seg.root(), &mut kids);
        prop_assert!(kids.len() <= caps().nodes as usize);
        let mut r = seg.reader(worknode::Start::At(0));
        for _ in 0..64 {
            if !matches!(r.try_next(), Ok(Some(_)) | Err(worknode::RingError::Lagged { .. })) {
                break;
            }
        }
    }
    drop(outcome);
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// The harness itself: the undamaged image attaches and reads back (so the properties
/// below exercise the readers, not only the refusals).
#[test]
fn the_undamaged_image_attaches_and_reads() {
    let name = format!("wn-hostile-clean-{}", std::process::id());
    let path = worknode::shm_path(&name);
    std::fs::write(&path, image()).expect("write the object");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod 600");
    let seg = Segment::attach_with(&name, Access::ReadOnly, std::time::Duration::ZERO).expect("attach");
    let mut names = Vec::new();
    seg.for_each_node(|n| {
        names.push(n.name().to_string());
        true
    })
    .unwrap();
    assert!(names.contains(&"t".to_string()), "{names:?}");
    drop(seg);
    let _ = std::fs::remove_file(&path);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn damaged_headers_are_refused_or_read_safely(
        writes in proptest::collection::vec((0usize..1024, proptest::collection::vec(any::<u8>(), 1..9)), 1..6),
        case in any::<u64>(),
    ) {
        let mut bytes = image().to_vec();
        for (off, w) in &writes {
            let end = (off + w.len()).min(bytes.len());
            bytes[*off..end].copy_from_slice(&w[..end - off]);
        }
        attach_and_read(case, &bytes)?;
    }

    #[test]
    fn damage_anywhere_is_refused_or_read_safely(
        writes in proptest::collection::vec((0.0f64..1.0, any::<u64>()), 1..32),
        case in any::<u64>(),
    ) {
        let mut bytes = image().to_vec();
        for (at, v) in &writes {
            let off = ((bytes.len() - 8) as f64 * at) as usize & !7;
            bytes[off..off + 8].copy_from_slice(&v.to_le_bytes());
        }
        attach_and_read(case, &bytes)?;
    }

    #[test]
    fn truncated_or_extended_objects_are_refused(len in 0usize..8192, extend in any::<bool>(), case in any::<u64>()) {
        let image = image();
        let bytes: Vec<u8> = if extend {
            image.iter().copied().chain(std::iter::repeat_n(0, len + 1)).collect()
        } else {
            image[..len.min(image.len() - 1)].to_vec()
        };
        let name = format!("wn-hostile-size-{}-{case}", std::process::id());
        std::fs::write(worknode::shm_path(&name), &bytes).expect("write");
        std::fs::set_permissions(worknode::shm_path(&name), std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod 600");
        let e = Segment::attach_with(&name, Access::ReadOnly, std::time::Duration::ZERO).err();
        let _ = std::fs::remove_file(worknode::shm_path(&name));
        prop_assert!(e.is_some(), "a {}-byte object attached", bytes.len());
    }
}
