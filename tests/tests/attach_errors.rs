//! Attaching to something that is not a usable segment: each case gives its typed
//! [`AttachError`] (or [`PoolError`]) whose message says what happened, and `wn` says
//! what to do about it (its hint).

use serde_json::json;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::time::Duration;
use worknode::layout::{HEADER_SIZE, LAYOUT_VERSION};
use worknode::{
    Access, AttachError, Capacities, Daemon, DeleteMode, NewNode, NodeKind, PoolError, Segment, SegmentState, Status,
};
use worknode_tests::{
    child_main, env_str, handles_from_env, handles_to_env, raw, role_command, SegmentGuard, CHILD_TIMEOUT, SEGMENT_ENV,
};

fn small() -> Capacities {
    Capacities { nodes: 16, events: 16, agents: 2, blob_chunks: 2, ..Capacities::default() }
}

fn attach_err(name: &str, access: Access) -> AttachError {
    match Segment::attach(name, access) {
        Ok(_) => panic!("attach {name} {access:?} succeeded"),
        Err(e) => e,
    }
}

/// Runs `wn --segment=NAME --json ARGS` (as `uid` if given), checks that it exits with
/// `exit`, and returns the error object it printed on stderr.
fn wn_error(name: &str, args: &[&str], exit: i32, uid: Option<u32>) -> serde_json::Value {
    let mut cmd = std::process::Command::new(worknode_tests::wn_bin());
    cmd.arg(format!("--segment={name}")).arg("--json").args(args);
    cmd.env_remove("WORKNODE_SEGMENT").env_remove("WORKNODE_AGENT").env_remove("WORKNODE_JSON");
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let out = cmd.output().expect("run wn");
    assert_eq!(out.status.code(), Some(exit), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    serde_json::from_slice(&out.stderr).unwrap_or_else(|e| panic!("stderr is not one JSON object ({e}): {out:?}"))
}

/// The hint of a `wn` error object.
fn hint(e: &serde_json::Value) -> &str {
    e["hint"].as_str().unwrap_or_else(|| panic!("no hint: {e}"))
}

fn error_json(r: Result<Segment, AttachError>) -> serde_json::Value {
    match r {
        Ok(_) => json!({ "ok": true }),
        Err(e) => json!({ "ok": false, "debug": format!("{e:?}"), "display": e.to_string() }),
    }
}

#[test]
fn child_entry() {
    child_main(|role| match role {
        "read_only_probe" => {
            // A read-only client: every write is refused, every read works.
            let seg = Segment::attach(&env_str(SEGMENT_ENV), Access::ReadOnly).expect("attach read-only");
            assert_eq!(seg.access(), Access::ReadOnly);
            let h = handles_from_env("WN_NODE")[0];
            let before = seg.read(h).expect("read works read-only");
            let mut called = false;
            let errors = [
                seg.add(seg.root(), &NewNode::new(NodeKind::Task, "nope")).err(),
                seg.update(h, |n| {
                    called = true;
                    n.set_progress(99)
                })
                .err(),
                seg.delete(h, DeleteMode::LeafOnly).err(),
                seg.delete(h, DeleteMode::Recursive).err(),
            ];
            assert!(!called, "update ran its closure on a read-only segment");
            for e in errors {
                assert_eq!(e, Some(PoolError::ReadOnly));
            }
            // What happened only; `wn`'s hint says to attach read-write (its unit tests).
            assert_eq!(PoolError::ReadOnly.to_string(), "segment attached read-only");
            let after = seg.read(h).expect("read after refused writes");
            assert_eq!(after.version(), before.version());
            assert_eq!(seg.lookup(before.uuid()), Ok(h));
            let mut kids = Vec::new();
            seg.children(seg.root(), &mut kids).expect("children read-only");
            let mut seen = 0;
            seg.for_each_node(|_| {
                seen += 1;
                true
            })
            .expect("scan read-only");
            json!({ "name": after.name(), "progress": after.progress(), "children": kids.len(), "nodes": seen })
        }
        "attach_as_other_user" => {
            let name = env_str(SEGMENT_ENV);
            json!({
                "uid": current_uid(),
                "rw": error_json(Segment::attach(&name, Access::ReadWrite)),
                "ro": error_json(Segment::attach(&name, Access::ReadOnly)),
            })
        }
        "plant_segment" => {
            // Another user plants a valid-looking segment under the victim's name, then
            // opens it to everyone.
            let name = env_str(SEGMENT_ENV);
            let seg = Daemon::create(&name, &small(), 0o600).expect("plant a segment");
            seg.add(seg.root(), &NewNode::new(NodeKind::Task, "forged")).expect("forge a task");
            std::mem::forget(seg);
            std::fs::set_permissions(worknode::shm_path(&name), std::fs::Permissions::from_mode(0o666))
                .expect("chmod 666");
            json!({ "uid": current_uid() })
        }
        other => panic!("unknown role {other}"),
    })
}

#[test]
fn a_missing_segment_is_not_found() {
    let g = SegmentGuard::new("missing");
    for access in [Access::ReadWrite, Access::ReadOnly] {
        let e = attach_err(g.name(), access);
        assert_eq!(e, AttachError::NotFound { name: g.name().to_string() });
        assert_eq!(e.to_string(), format!("no Worknode segment named {:?} (/dev/shm/{})", g.name(), g.name()));
    }
    let w = wn_error(g.name(), &["ls"], 4, None);
    assert_eq!(w["code"], "segment_not_found", "{w}");
    assert!(hint(&w).contains(&format!("worknoded --segment {}", g.name())), "{w}");
    assert!(hint(&w).contains("WORKNODE_SEGMENT"), "{w}");
    assert!(matches!(Daemon::adopt(g.name()), Err(AttachError::NotFound { .. })));
    assert!(matches!(Segment::unlink(g.name()), Err(AttachError::NotFound { .. })));
}

#[test]
fn a_truncated_segment_is_a_size_mismatch() {
    for (case, cut) in [("shorter", 4096u64), ("header-only", 512), ("empty", 0)] {
        let g = SegmentGuard::new(&format!("truncated-{case}"));
        let full = Daemon::create(g.name(), &small(), 0o600).unwrap().inspect().info().size;
        let len = if cut == 4096 { full - cut } else { cut };
        std::fs::OpenOptions::new().write(true).open(g.shm_path()).unwrap().set_len(len).unwrap();
        let e = attach_err(g.name(), Access::ReadOnly);
        let expected = if len >= HEADER_SIZE as u64 { full } else { HEADER_SIZE as u64 };
        assert_eq!(e, AttachError::SizeMismatch { actual: len, expected }, "{case}");
        assert_eq!(e.to_string(), format!("segment is {len} bytes but its header requires {expected}"));
        let w = wn_error(g.name(), &["ls"], 1, None);
        assert_eq!(w["code"], "segment_damaged", "{w}");
        assert!(hint(&w).contains("truncated or damaged") && hint(&w).contains("recreate"), "{w}");
        assert!(matches!(Daemon::adopt(g.name()), Err(AttachError::SizeMismatch { .. })), "{case}: adopt");
    }
}

#[test]
fn a_foreign_file_is_not_worknode() {
    for (case, len) in [("page", 4096usize), ("small", 100)] {
        let g = SegmentGuard::new(&format!("foreign-{case}"));
        let junk: Vec<u8> =
            b"#!/bin/sh\necho this is not a worknode segment\n".iter().copied().cycle().take(len).collect();
        std::fs::write(g.shm_path(), &junk).unwrap();
        let e = attach_err(g.name(), Access::ReadWrite);
        let found = u64::from_le_bytes(junk[..8].try_into().unwrap());
        assert_eq!(e, AttachError::NotWorknode { name: g.name().to_string(), found }, "{case}");
        let w = wn_error(g.name(), &["ls"], 1, None);
        assert_eq!(w["code"], "not_a_worknode_segment", "{w}");
        assert!(w["error"].as_str().unwrap().contains(&format!("magic {found:#018x}")), "{w}");
        assert!(hint(&w).contains("choose another --segment"), "{w}");
        assert_eq!(std::fs::read(g.shm_path()).unwrap(), junk, "attach modified a foreign file");
    }
}

#[test]
fn another_layout_version_is_a_version_mismatch() {
    let g = SegmentGuard::new("version");
    let seg = Daemon::create(g.name(), &small(), 0o600).unwrap();
    let word = raw::read_u64(&g.shm_path(), raw::VERSION_OFFSET);
    assert_eq!(word as u32, LAYOUT_VERSION, "layout_version is the u32 at offset 8");
    raw::write_bytes(&g.shm_path(), raw::VERSION_OFFSET, &(LAYOUT_VERSION + 41).to_ne_bytes());
    let e = attach_err(g.name(), Access::ReadOnly);
    assert_eq!(e, AttachError::VersionMismatch { found: LAYOUT_VERSION + 41, expected: LAYOUT_VERSION });
    let w = wn_error(g.name(), &["ls"], 1, None);
    assert_eq!(w["code"], "layout_version_mismatch", "{w}");
    assert!(w["error"].as_str().unwrap().contains(&format!("version {}", LAYOUT_VERSION + 41)), "{w}");
    assert!(hint(&w).contains("daemon's version") && hint(&w).contains("recreate"), "{w}");
    assert!(matches!(Daemon::adopt(g.name()), Err(AttachError::VersionMismatch { .. })));
    drop(seg);
}

#[test]
fn invalid_names_are_refused_everywhere() {
    let long = "n".repeat(201);
    for name in ["", "a/b", ".hidden", "sp ace", "ünï", long.as_str()] {
        let e = attach_err(name, Access::ReadOnly);
        assert!(matches!(&e, AttachError::InvalidName { name: n, .. } if n == name), "{name:?}: {e:?}");
        let w = wn_error(name, &["ls"], 2, None);
        assert_eq!(w["code"], "invalid_segment_name", "{name:?}: {w}");
        assert!(hint(&w).contains("use 1-200 letters, digits"), "{name:?}: {w}");
        assert!(matches!(Daemon::create(name, &small(), 0o600), Err(AttachError::InvalidName { .. })), "{name:?}");
        assert!(matches!(Segment::unlink(name), Err(AttachError::InvalidName { .. })), "{name:?}");
        assert!(matches!(Daemon::adopt(name), Err(AttachError::InvalidName { .. })), "{name:?}");
    }
    // The longest valid name works.
    let g = SegmentGuard::new("x");
    let max = format!("{}{}", g.name(), "y".repeat(200 - g.name().len()));
    let g2 = NamedGuard(max.clone());
    Daemon::create(&max, &small(), 0o600).expect("a 200-byte name is valid");
    Segment::attach(&max, Access::ReadOnly).expect("attach by a 200-byte name");
    drop(g2);
}

/// Unlinks a segment whose name did not come from [`SegmentGuard`].
struct NamedGuard(String);

impl Drop for NamedGuard {
    fn drop(&mut self) {
        let _ = Segment::unlink(&self.0);
    }
}

#[test]
fn a_read_only_client_cannot_write_but_reads_everything() {
    let g = SegmentGuard::new("read-only");
    let seg = Daemon::create(g.name(), &small(), 0o600).unwrap();
    let (root_children, nodes) = (seg.child_count(seg.root()).unwrap(), seg.inspect().info().regions[0].used);
    let h = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "ro-target").status(Status::Ready)).unwrap();
    seg.update(h, |n| n.set_progress(30)).unwrap();
    let mut p = g.spawn_role("read_only_probe", &[("WN_NODE", handles_to_env(&[h]))]);
    let r = p.expect_report(CHILD_TIMEOUT);
    assert_eq!(r["name"], "ro-target");
    assert_eq!(r["progress"], 30);
    assert_eq!(r["children"], root_children + 1);
    assert_eq!(r["nodes"], nodes + 1);
    assert_eq!(seg.read(h).unwrap().version(), 2, "the read-only client changed the node");

    // In-process too, on a second mapping.
    let ro = Segment::attach(g.name(), Access::ReadOnly).unwrap();
    assert_eq!(ro.add(ro.root(), &NewNode::new(NodeKind::Task, "x")), Err(PoolError::ReadOnly));
    assert_eq!(ro.read(h).unwrap().progress(), 30);
}

#[test]
fn attaching_to_a_segment_not_yet_ready_or_closing_is_refused() {
    let g = SegmentGuard::new("states");
    let seg = Daemon::create(g.name(), &small(), 0o600).unwrap();
    assert_eq!(raw::read_u64(&g.shm_path(), raw::STATE_OFFSET), 1, "the state word of a Ready segment is 1");
    raw::write_u64(&g.shm_path(), raw::STATE_OFFSET, 0);
    assert_eq!(seg.state(), SegmentState::Initializing);
    let e = Segment::attach_with(g.name(), Access::ReadOnly, Duration::from_millis(30)).err().expect("not ready");
    assert_eq!(e, AttachError::NotReady);
    assert_eq!(e.to_string(), "segment still being initialised by the daemon");
    assert_eq!(Daemon::adopt(g.name()).err(), Some(AttachError::Incomplete));

    raw::write_u64(&g.shm_path(), raw::STATE_OFFSET, 1);
    let client = Segment::attach(g.name(), Access::ReadOnly).expect("ready again");
    seg.mark_closing();
    assert_eq!(client.state(), SegmentState::Closing, "an attached client sees Closing");
    assert_eq!(Segment::attach(g.name(), Access::ReadOnly).err(), Some(AttachError::Closing));
}

/// This process's real uid (the owner of `/proc/self`).
fn current_uid() -> u32 {
    std::fs::metadata("/proc/self").expect("/proc/self").uid()
}

/// Uid and gid of `nobody`, the unprivileged user a root test drops to.
const NOBODY: u32 = 65534;

#[test]
fn another_users_private_segment_is_permission_denied() {
    let g = SegmentGuard::new("perm");
    let _seg = Daemon::create(g.name(), &small(), 0o600).unwrap();
    assert_eq!(std::fs::metadata(g.shm_path()).unwrap().permissions().mode() & 0o777, 0o600);

    if current_uid() != 0 {
        // Not root: our own segment made read-only by its mode refuses read-write.
        std::fs::set_permissions(g.shm_path(), std::fs::Permissions::from_mode(0o400)).unwrap();
        let e = attach_err(g.name(), Access::ReadWrite);
        assert_eq!(e, AttachError::PermissionDenied { name: g.name().to_string(), writable: true });
        let w = wn_error(g.name(), &["add", "task", "x"], 6, None);
        assert_eq!(w["code"], "permission_denied", "{w}");
        assert!(hint(&w).contains("run as the daemon's user") && hint(&w).contains("attach read-only"), "{w}");
        Segment::attach(g.name(), Access::ReadOnly).expect("read-only attach of a 0400 segment");
        return;
    }

    // Root bypasses file modes, so a child runs as `nobody` instead.
    let exe = std::env::current_exe().unwrap();
    let reachable =
        exe.ancestors().skip(1).all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
            && std::fs::metadata(&exe).is_ok_and(|m| m.permissions().mode() & 0o005 == 0o005);
    if !reachable {
        println!(
            "SKIPPED: running as root and {} is not reachable by uid {NOBODY}; permission test not run",
            exe.display()
        );
        return;
    }
    let attach_as_nobody = |g: &SegmentGuard| {
        let mut cmd = role_command("attach_as_other_user");
        cmd.env(SEGMENT_ENV, g.name()).uid(NOBODY).gid(NOBODY);
        let mut p = g.spawn(cmd, "attach_as_other_user");
        p.expect_report(CHILD_TIMEOUT)
    };

    let r = attach_as_nobody(&g);
    assert_eq!(r["uid"], NOBODY);
    let want_rw = format!("{:?}", AttachError::PermissionDenied { name: g.name().to_string(), writable: true });
    let want_ro = format!("{:?}", AttachError::PermissionDenied { name: g.name().to_string(), writable: false });
    assert_eq!(r["rw"]["debug"], want_rw.as_str(), "{r}");
    assert_eq!(r["ro"]["debug"], want_ro.as_str(), "{r}");
    let msg = r["rw"]["display"].as_str().unwrap();
    assert_eq!(msg, format!("permission denied opening segment {:?} read-write", g.name()), "{r}");
    // `wn` run by that user says what to do.
    if runnable_by_nobody(&worknode_tests::wn_bin()) {
        let w = wn_error(g.name(), &["add", "task", "x"], 6, Some(NOBODY));
        assert_eq!(w["code"], "permission_denied", "{w}");
        assert!(hint(&w).contains("run as the daemon's user") && hint(&w).contains("attach read-only"), "{w}");
    } else {
        println!("SKIPPED: wn is not reachable by uid {NOBODY}; its hint as that user not checked");
    }

    // Mode 0644: the mode would let others read it, but a segment of another user is
    // never trusted, not even read-only (its owner could forge anything in it).
    std::fs::set_permissions(g.shm_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = attach_as_nobody(&g);
    assert_eq!(r["rw"]["debug"], want_rw.as_str(), "{r}");
    let foreign = AttachError::ForeignOwner { name: g.name().to_string(), owner: 0, mode: 0o644, expected: NOBODY };
    assert_eq!(r["ro"]["debug"], format!("{foreign:?}").as_str(), "{r}");
}

/// Whether uid `nobody` can run this test binary (as root, a child drops to it).
fn nobody_can_run_this_binary() -> bool {
    runnable_by_nobody(&std::env::current_exe().unwrap())
}

/// Whether uid `nobody` can run the program at `exe` (every directory above it
/// searchable by others, the file readable and executable by others).
fn runnable_by_nobody(exe: &std::path::Path) -> bool {
    exe.ancestors().skip(1).all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
        && std::fs::metadata(exe).is_ok_and(|m| m.permissions().mode() & 0o005 == 0o005)
}

/// A segment planted by another user (a real process of uid `nobody`, mode 666) is
/// refused by every door, naming owner and mode: attach read-write and read-only, the
/// daemon's adoption (exit 1, nothing overwritten), and `wn` (exit 6). A segment of our
/// own whose mode lets others write is refused too.
#[test]
fn a_planted_or_world_writable_segment_is_refused_at_every_door() {
    if current_uid() != 0 || !nobody_can_run_this_binary() {
        println!("SKIPPED: needs root (to run a planter as uid {NOBODY}) and a binary {NOBODY} can run");
        return;
    }
    let g = SegmentGuard::new("planted");
    let mut cmd = role_command("plant_segment");
    cmd.env(SEGMENT_ENV, g.name()).uid(NOBODY).gid(NOBODY);
    let mut planter = g.spawn(cmd, "plant_segment");
    assert_eq!(planter.expect_report(CHILD_TIMEOUT)["uid"], NOBODY);
    let meta = std::fs::metadata(g.shm_path()).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (NOBODY, 0o666), "the planted segment");
    let want = AttachError::ForeignOwner { name: g.name().to_string(), owner: NOBODY, mode: 0o666, expected: 0 };
    for access in [Access::ReadWrite, Access::ReadOnly] {
        let e = attach_err(g.name(), access);
        assert_eq!(e, want, "{access:?}");
        assert!(e.to_string().contains("uid 65534") && e.to_string().contains("666"), "{e}");
    }
    let before = std::fs::read(g.shm_path()).unwrap();
    let mut d = g.spawn_daemon(&[
        "--fsync",
        "off",
        "--nodes",
        "64",
        "--events",
        "64",
        "--agents",
        "4",
        "--blob-chunks",
        "2",
        "--sets",
        "2",
    ]);
    let status = d.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "the daemon refuses to adopt it\n{}", d.transcript());
    let err = d.output(worknode_tests::Stream::Stderr);
    assert!(err.contains("owned by uid 65534") && err.contains("mode 666"), "{err}");
    assert_eq!(std::fs::read(g.shm_path()).unwrap(), before, "the refused segment is left as it was");
    let wn = std::process::Command::new(worknode_tests::wn_bin())
        .args(["--segment", g.name(), "ls"])
        .output()
        .expect("run wn");
    assert_eq!(wn.status.code(), Some(6), "{wn:?}");
    assert!(wn.stdout.is_empty() && String::from_utf8_lossy(&wn.stderr).contains("uid 65534"), "{wn:?}");
    let w = wn_error(g.name(), &["ls"], 6, None);
    assert_eq!(w["code"], "segment_untrusted", "{w}");
    assert!(hint(&w).contains("run as its owner") && hint(&w).contains("planted"), "{w}");
    let err = d.output(worknode_tests::Stream::Stderr);
    assert!(err.contains("hint: refusing it: run as its owner"), "the daemon gives its advice: {err}");

    // Our own segment, opened to everyone's writes behind the daemon's back.
    let own = SegmentGuard::new("world-writable");
    let _seg = Daemon::create(own.name(), &small(), 0o600).unwrap();
    std::fs::set_permissions(own.shm_path(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let e = attach_err(own.name(), Access::ReadOnly);
    assert_eq!(e, AttachError::UnsafeMode { name: own.name().to_string(), owner: 0, mode: 0o666 });
    // And the library never creates one.
    let wide = SegmentGuard::new("create-666");
    assert!(matches!(Daemon::create(wide.name(), &small(), 0o666), Err(AttachError::UnsafeMode { .. })));
    assert!(!wide.shm_path().exists());
}
