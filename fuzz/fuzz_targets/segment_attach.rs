//! The attach path on hostile segment contents: a shared-memory object holding a valid
//! segment's image with fuzzed bytes written over it is attached read-only; attach
//! refuses it with a typed error, or every read of it returns data or a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use worknode::{Daemon, Access, Capacities, NewNode, NodeKind, Segment};

fn caps() -> Capacities {
    Capacities { nodes: 16, events: 16, agents: 2, blob_chunks: 2, sets: 2, ..Capacities::default() }
}

/// A valid segment image to damage.
fn image() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let name = format!("wn-fuzz-src-{}", std::process::id());
        let _ = Segment::unlink(&name);
        let seg = Daemon::create(&name, &caps(), 0o600).expect("create");
        let p = seg.add(seg.root(), &NewNode::new(NodeKind::Project, "p")).expect("add");
        seg.add(p, &NewNode::new(NodeKind::Task, "t")).expect("add");
        let bytes = std::fs::read(seg.path()).expect("read the image");
        let _ = Segment::unlink(&name);
        bytes
    })
}

fuzz_target!(|data: &[u8]| {
    // data: (offset u32, bytes...) pairs, each write at most 16 bytes.
    let mut bytes = image().to_vec();
    let mut rest = data;
    while rest.len() >= 5 {
        let off = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize % bytes.len();
        let n = (rest[4] as usize % 16).min(rest.len() - 5);
        let end = (off + n).min(bytes.len());
        bytes[off..end].copy_from_slice(&rest[5..5 + (end - off)]);
        rest = &rest[5 + n..];
    }
    let name = format!("wn-fuzz-{}", std::process::id());
    let path = worknode::shm_path(&name);
    std::fs::write(&path, &bytes).expect("write the object");
    // Whatever the umask: a segment of any other mode is refused before it is read.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod 600");
    if let Ok(seg) = Segment::attach_with(&name, Access::ReadOnly, std::time::Duration::ZERO) {
        let _ = seg.inspect().info();
        let _ = seg.for_each_node(|n| {
            let _ = (n.name(), n.kind(), n.status(), n.parent());
            true
        });
        let mut kids = Vec::new();
        let _ = seg.children(seg.root(), &mut kids);
        let mut r = seg.reader(worknode::Start::At(0));
        for _ in 0..32 {
            if !matches!(r.try_next(), Ok(Some(_)) | Err(worknode::RingError::Lagged { .. })) {
                break;
            }
        }
    }
    let _ = std::fs::remove_file(&path);
});
