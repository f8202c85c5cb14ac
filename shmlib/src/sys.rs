//! Operating-system services: POSIX shared-memory objects, mapping them, and process
//! identity (a pid plus its start time, since pids are reused).
//!
//! Segments are opened with `nix`'s `shm_open` and mapped with `memmap2::MmapRaw`, which
//! (unlike the `shared_memory` crate) lets a reader open and map read-only and never
//! forms references into memory other processes write.

use memmap2::{MmapOptions, MmapRaw};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::fs::File;
use std::path::PathBuf;

/// Longest segment name accepted (the lock file adds a suffix within `NAME_MAX`).
pub const SEGMENT_NAME_MAX: usize = 200;

/// Checks a segment name: 1–200 bytes of `[A-Za-z0-9._-]`, not starting with a dot.
pub fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the name is empty");
    }
    if name.len() > SEGMENT_NAME_MAX {
        return Err("the name is longer than 200 bytes");
    }
    if name.starts_with('.') {
        return Err("the name starts with a dot");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return Err("the name may hold only letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// Where the kernel shows a shared-memory object of this name.
pub fn shm_path(name: &str) -> PathBuf {
    PathBuf::from(format!("/dev/shm/{name}"))
}

fn shm_name(name: &str) -> String {
    format!("/{name}")
}

/// Opens an existing shared-memory object.
pub(crate) fn open(name: &str, writable: bool) -> Result<File, Errno> {
    let flags = if writable { OFlag::O_RDWR } else { OFlag::O_RDONLY };
    // O_NONBLOCK: a FIFO planted under the name would otherwise block this open for ever
    // (the owner check after it refuses anything but a regular file).
    let fd = nix::sys::mman::shm_open(
        shm_name(name).as_str(),
        flags | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
}

/// Creates a new shared-memory object (`O_EXCL`) with exactly `mode` (the umask is
/// overridden with `fchmod`), sized to `size` with space reserved up front, so that a
/// full tmpfs fails here with `ENOSPC` rather than with `SIGBUS` on first touch.
/// On failure after creation the object is removed again.
pub(crate) fn create(name: &str, size: u64, mode: u32) -> Result<File, (&'static str, Errno)> {
    let fd = nix::sys::mman::shm_open(
        shm_name(name).as_str(),
        OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    )
    .map_err(|e| ("shm_open", e))?;
    let file = File::from(fd);
    let sized = (|| {
        nix::sys::stat::fchmod(&file, Mode::from_bits_truncate(mode)).map_err(|e| ("fchmod", e))?;
        let len = i64::try_from(size).map_err(|_| ("ftruncate", Errno::EFBIG))?;
        nix::unistd::ftruncate(&file, len).map_err(|e| ("ftruncate", e))?;
        nix::fcntl::posix_fallocate(&file, 0, len).map_err(|e| ("posix_fallocate", e))?;
        Ok(())
    })();
    match sized {
        Ok(()) => Ok(file),
        Err(e) => {
            let _ = unlink(name);
            Err(e)
        }
    }
}

/// Removes a shared-memory object's name; mappings stay valid until unmapped.
pub fn unlink(name: &str) -> Result<(), Errno> {
    nix::sys::mman::shm_unlink(shm_name(name).as_str())
}

/// Size in bytes of an open object.
pub(crate) fn size_of_file(file: &File) -> Result<u64, Errno> {
    Ok(nix::sys::stat::fstat(file)?.st_size as u64)
}

/// Owner uid and permission bits of an open object, read from the descriptor itself
/// (not the name, which could be swapped between the check and the use).
pub(crate) fn owner_and_mode(file: &File) -> Result<(u32, u32, bool), Errno> {
    let st = nix::sys::stat::fstat(file)?;
    let regular = st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFREG;
    Ok((st.st_uid, st.st_mode & 0o7777, regular))
}

/// The private runtime directory of user `uid`'s daemons, where only that user can
/// create files (the daemon keeps its instance lock there): `/run/worknode` for root,
/// `/run/user/UID/worknode` where the login manager made `/run/user/UID`, else
/// `/dev/shm/.worknode-UID` (which the daemon refuses if another user made it).
pub fn runtime_dir(uid: u32) -> PathBuf {
    if uid == 0 && std::path::Path::new("/run").is_dir() {
        return PathBuf::from("/run/worknode");
    }
    let user_run = PathBuf::from(format!("/run/user/{uid}"));
    match std::fs::metadata(&user_run) {
        Ok(m) if m.is_dir() && std::os::unix::fs::MetadataExt::uid(&m) == uid => user_run.join("worknode"),
        _ => PathBuf::from(format!("/dev/shm/.worknode-{uid}")),
    }
}

/// `start + wait`, or a century after `start` when that would overflow: a caller's
/// huge timeout means "as long as it takes", never a panic.
pub(crate) fn deadline(start: std::time::Instant, wait: std::time::Duration) -> std::time::Instant {
    start.checked_add(wait).unwrap_or_else(|| start + std::time::Duration::from_secs(100 * 365 * 86_400))
}

/// This process's effective uid: the user whose segments it trusts.
pub fn effective_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Maps `len` bytes of `file`, shared, read-write or read-only.
pub(crate) fn map(file: &File, len: usize, writable: bool) -> std::io::Result<MmapRaw> {
    let mut opts = MmapOptions::new();
    opts.len(len);
    if writable {
        opts.map_raw(file)
    } else {
        opts.map_raw_read_only(file)
    }
}

/// Bits of the pid in an owner tag (Linux's `pid_max` is at most 2²²).
const PID_BITS: u32 = 22;

/// A process identity that survives pid reuse: pid plus the process's start time in
/// clock ticks since boot, packed in one word as `start << 22 | pid`. Never zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OwnerTag(pub u64);

impl OwnerTag {
    /// Packs a pid and start time.
    pub fn new(pid: u32, start_ticks: u64) -> OwnerTag {
        OwnerTag((start_ticks << PID_BITS) | (pid as u64 & ((1 << PID_BITS) - 1)))
    }

    /// The pid part.
    pub fn pid(self) -> u32 {
        (self.0 & ((1 << PID_BITS) - 1)) as u32
    }

    /// The start-time part (truncated to 42 bits).
    pub fn start_ticks(self) -> u64 {
        self.0 >> PID_BITS
    }

    /// The tag of the calling process.
    pub fn current() -> OwnerTag {
        let pid = std::process::id();
        let start = process_start_ticks(pid).unwrap_or(0);
        OwnerTag::new(pid, start)
    }

    /// Whether the process this tag names still runs (and is not a zombie). A pid that
    /// now belongs to a process started at another time is a different process.
    pub fn is_alive(self) -> bool {
        if self.0 == 0 || self.pid() == 0 {
            return false;
        }
        match process_start_ticks(self.pid()) {
            Some(start) => OwnerTag::new(self.pid(), start) == self,
            None => false,
        }
    }
}

/// Start time of a live, non-zombie process, in clock ticks since boot (field 22 of
/// `/proc/PID/stat`).
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `state` was field 3; field 22 is 19 further on.
    fields.nth(18)?.parse().ok()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("worknode").is_ok());
        assert!(validate_name("a.b_c-1").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name(".hidden").is_err());
        assert!(validate_name(&"x".repeat(201)).is_err());
    }

    #[test]
    fn a_huge_wait_is_a_far_deadline_not_a_panic() {
        let now = std::time::Instant::now();
        assert!(deadline(now, std::time::Duration::MAX) > now + std::time::Duration::from_secs(86_400 * 365));
        assert_eq!(deadline(now, std::time::Duration::from_secs(1)), now + std::time::Duration::from_secs(1));
    }

    #[test]
    fn own_tag_is_alive_and_a_changed_start_time_is_not() {
        let me = OwnerTag::current();
        assert_eq!(me.pid(), std::process::id());
        assert!(me.is_alive());
        assert!(!OwnerTag::new(me.pid(), me.start_ticks() + 1).is_alive());
        assert!(!OwnerTag(0).is_alive());
    }
}

/// `CLOCK_REALTIME_COARSE` as time since the Unix epoch: the wall clock as of the
/// kernel's last timer tick, read from the vDSO without touching the TSC (`None` if the
/// kernel lacks it, or the clock is before the epoch).
pub(crate) fn coarse_realtime() -> Option<std::time::Duration> {
    let mut ts = nix::libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { nix::libc::clock_gettime(nix::libc::CLOCK_REALTIME_COARSE, &mut ts) };
    if rc != 0 || ts.tv_sec < 0 {
        return None;
    }
    Some(std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// Sleeps while `*word == expected`, for at most `timeout`, using the *shared* futex
/// operation (no `FUTEX_PRIVATE_FLAG`: the word lives in memory mapped by several
/// processes, and private futexes are keyed by address space). Returns when woken, when
/// the value differs, on timeout or on a signal; callers re-check their condition.
#[cfg(not(loom))]
pub(crate) fn futex_wait(word: &crate::sync::AtomicU32, expected: u32, timeout: std::time::Duration) {
    let ts = nix::libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as nix::libc::time_t,
        tv_nsec: timeout.subsec_nanos() as nix::libc::c_long,
    };
    // `word` borrows the mapping, so it stays valid for the call; the unused arguments
    // are ignored for FUTEX_WAIT.
    // SAFETY: `word` is a valid, 4-aligned u32 that FUTEX_WAIT only reads; `ts` outlives the call.
    unsafe {
        nix::libc::syscall(
            nix::libc::SYS_futex,
            word.as_ptr(),
            nix::libc::FUTEX_WAIT,
            expected,
            &ts as *const nix::libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes up to `count` processes sleeping in [`futex_wait`] on `word`.
#[cfg(not(loom))]
pub(crate) fn futex_wake(word: &crate::sync::AtomicU32, count: i32) {
    // The unused arguments are ignored for FUTEX_WAKE.
    // SAFETY: `word` is a valid, 4-aligned u32 whose address FUTEX_WAKE only uses as a key.
    unsafe {
        nix::libc::syscall(
            nix::libc::SYS_futex,
            word.as_ptr(),
            nix::libc::FUTEX_WAKE,
            count,
            std::ptr::null::<nix::libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Under loom there are no futexes: waiting is a yield to the model's scheduler.
#[cfg(loom)]
pub(crate) fn futex_wait(_word: &crate::sync::AtomicU32, _expected: u32, _timeout: std::time::Duration) {
    loom::thread::yield_now();
}

/// Under loom there are no futexes: waking is a no-op.
#[cfg(loom)]
pub(crate) fn futex_wake(_word: &crate::sync::AtomicU32, _count: i32) {}

/// Whether process `pid` has the file `path` mapped, read from `/proc/PID/maps`:
/// `Some(true)` or `Some(false)`, `None` when the map cannot be read (the process is
/// gone, or belongs to another user). A process that writes a segment has it mapped,
/// so a live pid that does not map it cannot be inside one of its locks.
pub fn process_maps_path(pid: u32, path: &std::path::Path) -> Option<bool> {
    if pid == 0 {
        return None;
    }
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let want = path.to_str()?;
    // Columns: address perms offset dev inode pathname (pathname may end " (deleted)").
    Some(maps.lines().any(|line| line.split_ascii_whitespace().nth(5) == Some(want)))
}

/// 64-bit FNV-1a of `bytes`: the one short, stable, non-cryptographic hash the crate
/// uses (socket names of long segment names, node-name hashes in slots).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_parts(&[bytes])
}

/// [`fnv1a`] of the concatenation of `parts`, without building it.
pub(crate) fn fnv1a_parts(parts: &[&[u8]]) -> u64 {
    parts
        .iter()
        .flat_map(|p| p.iter())
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Receives up to `buf.len()` bytes from a Unix stream socket together with at most one
/// descriptor passed with them (`SCM_RIGHTS`), which arrives close-on-exec.
pub(crate) fn recv_with_fd(
    sock: &std::os::unix::net::UnixStream,
    buf: &mut [u8],
) -> std::io::Result<(usize, Option<File>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = loop {
        match recvmsg::<UnixAddr>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(Errno::EINTR) => continue,
            r => break r.map_err(std::io::Error::from)?,
        }
    };
    let mut file = None;
    for cmsg in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // The kernel just installed `fd` in this process for this message.
                // SAFETY: nothing else owns `fd`, so taking ownership closes it exactly once.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if file.is_none() {
                    file = Some(File::from(owned));
                }
            }
        }
    }
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(std::io::Error::other("descriptor message truncated"));
    }
    Ok((msg.bytes, file))
}
