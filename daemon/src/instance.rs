//! One daemon per segment: an exclusive `flock` on `/dev/shm/.worknode-NAME.lock`.
//!
//! A lock the kernel drops when the process dies, not a pid file: a crashed daemon never
//! blocks its successor, and two daemons can never both run one segment. The file is
//! removed on clean exit while the lock is still held; a daemon that acquires the lock
//! checks the path still names the file it locked (else it raced such a removal and
//! tries again).

use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

/// The held lock; dropping it releases it.
pub struct InstanceLock {
    _lock: Flock<File>,
    path: PathBuf,
}

/// Why the lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another daemon holds it.
    Held(PathBuf),
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
            LockError::Io(p, e) => write!(f, "cannot take the daemon lock {}: {e}", p.display()),
        }
    }
}

/// Path of the lock file for a segment name (names cannot start with a dot, so this
/// can never be a segment itself).
pub fn lock_path(segment: &str) -> PathBuf {
    PathBuf::from(format!("/dev/shm/.worknode-{segment}.lock"))
}

impl InstanceLock {
    /// Takes the lock without waiting.
    pub fn acquire(segment: &str, mode: u32) -> Result<InstanceLock, LockError> {
        let path = lock_path(segment);
        for _ in 0..8 {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(mode)
                .open(&path)
                .map_err(|e| LockError::Io(path.clone(), e))?;
            let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => l,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Err(LockError::Held(path)),
                Err((_, e)) => return Err(LockError::Io(path, e.into())),
            };
            let ours = lock.metadata().map_err(|e| LockError::Io(path.clone(), e))?;
            match std::fs::metadata(&path) {
                Ok(now) if now.ino() == ours.ino() && now.dev() == ours.dev() => {
                    return Ok(InstanceLock { _lock: lock, path });
                }
                // The previous holder removed the file after we opened it: retry.
                _ => continue,
            }
        }
        Err(LockError::Io(path, std::io::Error::other("lock file kept changing under us")))
    }

    /// Removes the lock file (call just before exiting, while still holding it).
    pub fn remove_file(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
