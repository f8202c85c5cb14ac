//! Service-manager notifications (systemd's `sd_notify` protocol) for a unit of
//! `Type=notify`: `READY=1` once the segment is open to clients, `STOPPING=1` when a
//! shutdown begins, and `WATCHDOG=1` from the housekeeping loop when the unit sets
//! `WatchdogSec=`.
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the Unix socket named by
//! `$NOTIFY_SOCKET`: a path, or — when it starts with `@` — a name in Linux's abstract
//! namespace. Without the variable nothing is sent. Written over
//! `std::os::unix::net::UnixDatagram` rather than with the `sd-notify` crate, whose
//! 0.5 release connects to the variable's value as a path and so cannot reach an
//! abstract socket (which systemd may hand out); the whole protocol needed here is a
//! `send_to`.
//!
//! A notification that cannot be sent is reported once on stderr and never stops the
//! daemon: the segment serves its agents with or without a service manager watching.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// The variable naming the service manager's socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Where notifications go, and the watchdog's schedule.
#[derive(Debug)]
pub struct Notifier {
    /// The socket's address; `None` when not run by a service manager.
    addr: Option<SocketAddr>,
    /// How often to ping the watchdog (half the unit's `WatchdogSec`), if asked to.
    ping_every: Option<Duration>,
    last_ping: Instant,
    warned: bool,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID` (the watchdog is
    /// this process's only when the pid is absent or names it). A malformed value is
    /// reported on stderr and the notifications it concerns are not sent.
    pub fn from_env() -> Notifier {
        let addr = std::env::var_os(NOTIFY_SOCKET).and_then(|v| match socket_addr(v.as_encoded_bytes()) {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("worknoded: warning: ignoring {NOTIFY_SOCKET}={v:?}: {e}");
                None
            }
        });
        let ours = std::env::var("WATCHDOG_PID").map_or(true, |p| p.trim() == std::process::id().to_string());
        let ping_every = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|u| *u > 0 && ours)
            .map(|u| Duration::from_micros(u) / 2);
        Notifier { addr, ping_every, last_ping: Instant::now(), warned: false }
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.addr.is_some()
    }

    /// The segment is open to clients: `READY=1`, with a one-line status.
    pub fn ready(&mut self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}\nMAINPID={}\n", one_line(status), std::process::id()));
    }

    /// A shutdown has begun: `STOPPING=1`, with a one-line status.
    pub fn stopping(&mut self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}\n", one_line(status)));
    }

    /// Pings the watchdog when half its period has passed since the last ping (called
    /// from the housekeeping loop, so a loop that hangs stops the pings).
    pub fn tick(&mut self) {
        if let Some(every) = self.ping_every {
            if self.last_ping.elapsed() >= every {
                self.last_ping = Instant::now();
                self.send("WATCHDOG=1\n");
            }
        }
    }

    fn send(&mut self, message: &str) {
        let Some(addr) = &self.addr else { return };
        let sent = UnixDatagram::unbound().and_then(|s| s.send_to_addr(message.as_bytes(), addr));
        match sent {
            Ok(n) if n == message.len() => {}
            Ok(n) => self.warn(&format!("sent {n} of {} bytes", message.len())),
            Err(e) => self.warn(&e.to_string()),
        }
    }

    fn warn(&mut self, what: &str) {
        if !self.warned {
            self.warned = true;
            eprintln!(
                "worknoded: warning: cannot notify the service manager ({what}); further failures are not reported"
            );
        }
    }
}

/// The address `$NOTIFY_SOCKET` names: a leading `@` means the abstract namespace.
fn socket_addr(value: &[u8]) -> io::Result<SocketAddr> {
    match value {
        [] => Err(io::Error::new(io::ErrorKind::InvalidInput, "empty")),
        [b'@', name @ ..] => SocketAddr::from_abstract_name(name),
        path => {
            let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path));
            if !path.is_absolute() {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "neither an absolute path nor @name"));
            }
            SocketAddr::from_pathname(path)
        }
    }
}

/// `STATUS=` takes one line.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn notifications_reach_a_path_and_an_abstract_socket() {
        let dir = std::env::temp_dir().join(format!("worknoded-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let by_path = UnixDatagram::bind(&path).unwrap();
        let abstract_name = format!("worknoded-notify-test-{}", std::process::id());
        let by_name =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap()).unwrap();

        for (value, sock) in [
            (path.as_os_str().as_encoded_bytes().to_vec(), &by_path),
            (format!("@{abstract_name}").into_bytes(), &by_name),
        ] {
            let mut n = Notifier {
                addr: Some(socket_addr(&value).unwrap()),
                ping_every: None,
                last_ping: Instant::now(),
                warned: false,
            };
            n.ready("segment s\nready");
            let got = receive(sock);
            assert!(got.starts_with("READY=1\nSTATUS=segment s ready\nMAINPID="), "{got:?}");
            n.stopping("closing");
            assert_eq!(receive(sock), "STOPPING=1\nSTATUS=closing\n");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_watchdog_is_pinged_only_when_asked_and_only_after_half_its_period() {
        let name = format!("worknoded-watchdog-test-{}", std::process::id());
        let sock = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        let addr = socket_addr(format!("@{name}").as_bytes()).unwrap();
        let mut off = Notifier { addr: Some(addr.clone()), ping_every: None, last_ping: Instant::now(), warned: false };
        off.tick();
        // Long ago: due now.
        let past = Instant::now().checked_sub(Duration::from_secs(1)).unwrap_or_else(Instant::now);
        let mut on = Notifier { addr: Some(addr), ping_every: Some(Duration::ZERO), last_ping: past, warned: false };
        on.tick();
        assert_eq!(receive(&sock), "WATCHDOG=1\n", "the first datagram is the watchdog's: `off` sent none");
    }

    #[test]
    fn bad_socket_values_are_refused() {
        assert!(socket_addr(b"").is_err());
        assert!(socket_addr(b"relative/notify").is_err());
        assert!(socket_addr(b"/run/user/1000/systemd/notify").is_ok());
        assert!(socket_addr(b"@name").is_ok());
    }
}
