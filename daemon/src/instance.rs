//! One daemon per segment: an exclusive `flock` on `NAME.lock` in the daemon user's
//! private runtime directory.
//!
//! A lock the kernel drops when the process dies, not a pid file: a crashed daemon never
//! blocks its successor, and two daemons can never both run one segment. The lock file
//! lives where only its user can create files — `/run/worknode` for root,
//! `/run/user/UID/worknode` where the login manager made that directory, else
//! `/dev/shm/.worknode-UID` — so no other user can squat it. The directory is made 0700
//! and opened without following links; one another user made, or that others may
//! write, is refused with its owner and mode named. The file is removed on clean exit
//! while the lock is still held; a daemon that acquires the lock checks the name still
//! names the file it locked (else it raced such a removal and tries again).

use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::{fstat, fstatat, Mode};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// The held lock; dropping it releases it.
pub struct InstanceLock {
    _lock: Flock<File>,
    dir: OwnedFd,
    name: String,
}

/// Why the lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another daemon holds it.
    Held(PathBuf),
    /// The runtime directory or lock file is not this user's alone.
    Untrusted { path: PathBuf, owner: u32, mode: u32, uid: u32 },
    /// Something other than a directory (a symbolic link, a file) sits where the
    /// runtime directory belongs.
    NotADirectory { path: PathBuf, owner: u32 },
    /// The lock file could not be opened or locked.
    Io(PathBuf, std::io::Error),
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Held(p) => write!(
                f,
                "another worknoded already runs this segment (it holds {}); stop it first or choose another --segment",
                p.display()
            ),
            LockError::Untrusted { path, owner, mode, uid } => write!(
                f,
                "{} belongs to uid {owner} with mode {mode:o}; the daemon (uid {uid}) keeps its lock only where nobody else can write: have uid {owner} or root remove it (in a sticky directory such as /dev/shm only they can)",
                path.display()
            ),
            LockError::NotADirectory { path, owner } => write!(
                f,
                "{} is not a directory (a symbolic link or a file of uid {owner}); the daemon keeps its lock only in a directory of its own: remove it, or have its owner or root remove it",
                path.display()
            ),
            LockError::Io(p, e) => write!(f, "cannot take the daemon lock {}: {e}", p.display()),
        }
    }
}

/// Refuses a file or directory that is not `uid`'s, or that others may write.
fn check_private(path: &std::path::Path, st: &nix::sys::stat::FileStat, uid: u32) -> Result<(), LockError> {
    let mode = st.st_mode & 0o7777;
    if st.st_uid != uid || mode & 0o022 != 0 {
        return Err(LockError::Untrusted { path: path.to_path_buf(), owner: st.st_uid, mode, uid });
    }
    Ok(())
}

/// Opens (making it 0700 if missing) the runtime directory, without following links.
fn open_runtime_dir(uid: u32) -> Result<(OwnedFd, PathBuf), LockError> {
    let dir = worknode::runtime_dir(uid);
    let io = |e: nix::errno::Errno| LockError::Io(dir.clone(), e.into());
    match nix::unistd::mkdir(&dir, Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(io(e)),
    }
    let fd = nix::fcntl::open(&dir, OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty()).map_err(
        |e| match e {
            // O_NOFOLLOW on a symlink, or O_DIRECTORY on a file: someone put it there.
            nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => LockError::NotADirectory {
                path: dir.clone(),
                owner: std::fs::symlink_metadata(&dir).map_or(u32::MAX, |m| std::os::unix::fs::MetadataExt::uid(&m)),
            },
            e => io(e),
        },
    )?;
    let st = fstat(&fd).map_err(io)?;
    check_private(&dir, &st, uid)?;
    if st.st_mode & 0o077 != 0 {
        // Ours, only wider than it should be (others may read): narrow it.
        nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(0o700)).map_err(io)?;
    }
    Ok((fd, dir))
}

impl InstanceLock {
    /// Takes the lock without waiting.
    pub fn acquire(segment: &str) -> Result<InstanceLock, LockError> {
        let uid = nix::unistd::geteuid().as_raw();
        let (dir, dir_path) = open_runtime_dir(uid)?;
        let name = format!("{segment}.lock");
        let path = dir_path.join(&name);
        let io = |e: nix::errno::Errno| LockError::Io(path.clone(), e.into());
        for _ in 0..8 {
            let fd = nix::fcntl::openat(
                &dir,
                name.as_str(),
                OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(io)?;
            let file = File::from(fd);
            check_private(&path, &fstat(&file).map_err(io)?, uid)?;
            let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => l,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Err(LockError::Held(path)),
                Err((_, e)) => return Err(io(e)),
            };
            let ours = fstat(&*lock).map_err(io)?;
            match fstatat(&dir, name.as_str(), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(now) if now.st_ino == ours.st_ino && now.st_dev == ours.st_dev => {
                    return Ok(InstanceLock { _lock: lock, dir, name });
                }
                // The previous holder removed the file after we opened it: retry.
                _ => continue,
            }
        }
        Err(LockError::Io(path, std::io::Error::other("lock file kept changing under us")))
    }

    /// Removes the lock file (call just before exiting, while still holding it).
    pub fn remove_file(&self) {
        let _ = nix::unistd::unlinkat(&self.dir, self.name.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
    }
}
