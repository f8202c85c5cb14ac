//! A small shared mapping in `/dev/shm` for the mechanisms that are not Worknode
//! segments (the cache-line floor, the eventfd mailbox): a file both processes map,
//! seen only as atomic 64-bit words.

use memmap2::{MmapOptions, MmapRaw};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

/// A file in `/dev/shm` mapped shared; the creating process removes it on drop.
pub struct ShmFile {
    path: PathBuf,
    map: MmapRaw,
    owner: bool,
}

impl ShmFile {
    /// Creates `/dev/shm/wn-bench-<pid>-<tag>` of `len` bytes (a multiple of 8), zeroed.
    pub fn create(tag: &str, len: usize) -> Result<ShmFile, String> {
        assert!(len.is_multiple_of(8) && len > 0);
        let path = PathBuf::from(format!("/dev/shm/wn-bench-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| format!("create {}: {e}", path.display()))?;
        file.set_len(len as u64).map_err(|e| format!("size {}: {e}", path.display()))?;
        let map = MmapOptions::new().len(len).map_raw(&file).map_err(|e| format!("map {}: {e}", path.display()))?;
        Ok(ShmFile { path, map, owner: true })
    }

    /// Maps an existing file (made by [`ShmFile::create`] in another process).
    pub fn open(path: &Path) -> Result<ShmFile, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        let map = MmapRaw::map_raw(&file).map_err(|e| format!("map {}: {e}", path.display()))?;
        if !map.len().is_multiple_of(8) || map.len() == 0 {
            return Err(format!("{} has size {}, not a multiple of 8", path.display(), map.len()));
        }
        Ok(ShmFile { path: path.to_path_buf(), map, owner: false })
    }

    /// The file's path (handed to the other process).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole mapping as atomic words.
    pub fn words(&self) -> &[AtomicU64] {
        // The mapping is page-aligned (so 8-aligned), its length is a multiple of 8 (checked
        // at create/open), and it stays mapped as long as `self` lives, which bounds the
        // returned lifetime. Every process touches it only through atomic operations.
        // SAFETY: in bounds and aligned for `AtomicU64` (above), which may alias shared memory.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr() as *const AtomicU64, self.map.len() / 8) }
    }
}

impl Drop for ShmFile {
    fn drop(&mut self) {
        if self.owner {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A temporary directory (journals, SQLite files, sockets), removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<base>/wn-bench-<pid>-<tag>` (removing a stale one first).
    pub fn new(base: &Path, tag: &str) -> Result<TempDir, String> {
        let path = base.join(format!("wn-bench-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
        Ok(TempDir { path })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
