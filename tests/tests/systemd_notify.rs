//! The real `worknoded` under a stand-in service manager: the test binds the datagram
//! socket systemd would (in the abstract namespace, the harder of the two address
//! forms), starts the daemon with `NOTIFY_SOCKET` naming it, and reads what arrives.
//! `READY=1` must come first and only once the segment attaches without waiting;
//! `WATCHDOG=1` follows when `WATCHDOG_USEC` asks for it; `STOPPING=1` comes on
//! SIGTERM, and the daemon then exits 0.

use nix::sys::signal::Signal;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::process::Command;
use std::time::{Duration, Instant};
use worknode::{Access, Segment, SegmentState};
use worknode_tests::{daemon_bin, SegmentGuard, READY_TIMEOUT};

/// How long the test waits for any one notification.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a daemon gets to exit after SIGTERM (its grace period is 250 ms).
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// The next datagram, as text; fails the test after [`NOTICE_TIMEOUT`].
fn next_notice(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).unwrap_or_else(|e| panic!("no notification within {NOTICE_TIMEOUT:?}: {e}"));
    String::from_utf8(buf[..n].to_vec()).expect("notifications are text")
}

/// Reads notifications until one starts with `key`, skipping watchdog pings; at most
/// 1000 datagrams and [`NOTICE_TIMEOUT`] in all.
fn notice_starting(sock: &UnixDatagram, key: &str) -> String {
    let until = Instant::now() + NOTICE_TIMEOUT;
    for _ in 0..1000 {
        let got = next_notice(sock);
        if got.starts_with(key) {
            return got;
        }
        assert_eq!(got, "WATCHDOG=1\n", "only watchdog pings may come between the notices");
        assert!(Instant::now() < until, "no {key} within {NOTICE_TIMEOUT:?}");
    }
    panic!("no {key} among 1000 notifications");
}

#[test]
fn the_daemon_tells_systemd_it_is_ready_only_once_the_segment_attaches_and_that_it_stops_on_sigterm() {
    let g = SegmentGuard::new("sd-notify");
    let name = format!("worknode-test-notify-{}-{}", std::process::id(), g.name());
    let sock = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).expect("an abstract name"))
        .expect("bind the stand-in notify socket");
    sock.set_read_timeout(Some(NOTICE_TIMEOUT)).expect("a read timeout");

    let mut cmd = Command::new(daemon_bin());
    cmd.arg("--segment")
        .arg(g.name())
        .args(["--nodes", "256", "--events", "1024", "--agents", "8", "--blob-chunks", "8"])
        .env_remove(worknode::SEGMENT_ENV)
        .env("NOTIFY_SOCKET", format!("@{name}"))
        // 200 ms: a ping every 100 ms.
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID");
    let mut d = g.spawn(cmd, "worknoded");

    // The first datagram is READY=1, and by then the segment attaches with no wait for
    // Ready at all (a zero ready-wait fails with NotReady on a segment still being laid).
    let ready = next_notice(&sock);
    assert!(ready.starts_with("READY=1\n"), "READY=1 first: {ready:?}\n{}", d.transcript());
    assert!(ready.contains(&format!("MAINPID={}\n", d.pid())), "{ready:?}");
    assert!(ready.contains(&format!("STATUS=segment {} created: serving agents\n", g.name())), "{ready:?}");
    let seg = Segment::attach_with(g.name(), Access::ReadOnly, Duration::ZERO)
        .unwrap_or_else(|e| panic!("READY=1 came before the segment could be attached: {e}"));
    assert_eq!(seg.inspect().info().state, SegmentState::Ready);
    assert_eq!(seg.inspect().info().daemon_pid, d.pid());
    // The ready line on stdout is printed before the notice, for people and scripts.
    d.wait_for_line(worknode_tests::Stream::Stdout, READY_TIMEOUT, |l| l.contains("ready"));

    // The watchdog is pinged from the housekeeping loop.
    assert_eq!(next_notice(&sock), "WATCHDOG=1\n");

    d.signal(Signal::SIGTERM);
    let stopping = notice_starting(&sock, "STOPPING=1");
    assert!(stopping.contains(&format!("STATUS=SIGTERM received: closing segment {}", g.name())), "{stopping:?}");
    drop(seg);
    let status = d.wait_exit(EXIT_TIMEOUT);
    assert!(status.success(), "a clean shutdown after STOPPING=1: {status}\n{}", d.transcript());
    assert!(!g.shm_path().exists(), "the segment is removed on SIGTERM");
}
