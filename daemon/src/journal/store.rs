//! Journal and snapshot files in the data directory: listing, recovery, appending with
//! rotation, and snapshots (temp file, fsync, rename, fsync directory).

use super::format::{self, Damage, HeaderError, Record, JOURNAL_MAGIC, SNAPSHOT_MAGIC};
use super::state::State;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why recovery stopped.
#[derive(Debug)]
pub enum RecoverError {
    /// A file could not be read or written.
    Io(PathBuf, std::io::Error),
    /// A journal was written by another layout or format version.
    Version { path: PathBuf, layout: u32, format: u32 },
    /// A record in the middle of the journal is damaged.
    Corrupt { path: PathBuf, damage: Damage },
    /// Events between two journal files are missing (a file was deleted).
    Gap { path: PathBuf, expected: u64, first: u64 },
    /// Journals exist but no snapshot can be read: the journal alone cannot rebuild
    /// what was made before it (the root among it).
    NoSnapshot { first_journal: u64, damaged: Vec<String> },
    /// The data directory is not this user's, or others may read it.
    Unsafe(String),
}

impl std::fmt::Display for RecoverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecoverError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            RecoverError::Version { path, layout, format } => write!(
                f,
                "{} was written by layout version {layout} / format {format}, this daemon reads layout version {} / formats {}-{}; use the daemon version that wrote it, or move the data directory aside",
                path.display(),
                format::RECORDS_LAYOUT,
                format::FORMAT_VERSION_MIN,
                format::FORMAT_VERSION
            ),
            RecoverError::Corrupt { path, damage } => write!(
                f,
                "{} is damaged at byte {}: {}{}; it is not a torn final write, so nothing was cut. Restore the file from a backup, or start with --salvage to keep every valid record (the damaged file is kept beside it as .damaged)",
                path.display(),
                damage.offset,
                damage.why,
                match damage.next_valid {
                    Some(n) => format!(", and valid records follow from byte {n}"),
                    None => ", and it could not be shown that nothing valid follows".to_string(),
                }
            ),
            RecoverError::Gap { path, expected, first } => write!(
                f,
                "events {expected}..{first} are missing: {} starts at event {first} but the files before it end at {expected} (a journal file was deleted or moved). Put the missing file back, or start with --salvage to rebuild without those events",
                path.display()
            ),
            RecoverError::NoSnapshot { first_journal, damaged } => write!(
                f,
                "no snapshot can be read ({}), and the journals start at event {first_journal}: they cannot rebuild what was made before it. Restore a snapshot-*.wns file from a backup, or start with --salvage to rebuild what the journals hold under a new root",
                if damaged.is_empty() { "none is present".to_string() } else { damaged.join("; ") }
            ),
            RecoverError::Unsafe(why) => write!(f, "{why}"),
        }
    }
}

fn io(p: &Path) -> impl Fn(std::io::Error) -> RecoverError + '_ {
    move |e| RecoverError::Io(p.to_path_buf(), e)
}

/// Files of one kind, oldest first: (first or covered sequence, path).
pub type Files = Vec<(u64, PathBuf)>;

/// Journal and snapshot files of a data directory, oldest first, by first sequence.
pub fn list(dir: &Path) -> std::io::Result<(Files, Files)> {
    let mut journals = Vec::new();
    let mut snapshots = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let seq = |prefix: &str, suffix: &str| name.strip_prefix(prefix)?.strip_suffix(suffix)?.parse::<u64>().ok();
        if let Some(s) = seq("journal-", ".wnj") {
            journals.push((s, path));
        } else if let Some(s) = seq("snapshot-", ".wns") {
            snapshots.push((s, path));
        }
    }
    journals.sort();
    snapshots.sort();
    Ok((journals, snapshots))
}

/// Path of the journal file starting at `seq`.
pub fn journal_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("journal-{seq:020}.wnj"))
}

/// Path of the snapshot covering events before `seq`.
pub fn snapshot_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("snapshot-{seq:020}.wns"))
}

/// Why a snapshot was not used.
pub enum SnapshotProblem {
    /// Incomplete or damaged: an older snapshot may serve.
    Skip(String),
    /// Written by another layout or format version: refuse, never misread or skip.
    Version { layout: u32, format: u32 },
}

/// Reads a snapshot whole.
pub fn read_snapshot(path: &Path, state: &mut State) -> Result<u64, SnapshotProblem> {
    let bytes = fs::read(path).map_err(|e| SnapshotProblem::Skip(e.to_string()))?;
    read_snapshot_bytes(&bytes, state)
}

/// Reads a snapshot's bytes: applied to `state` only when the whole file is good (every
/// record, and an end record that counts them). Returns the sequence it covers.
pub fn read_snapshot_bytes(bytes: &[u8], state: &mut State) -> Result<u64, SnapshotProblem> {
    use SnapshotProblem::Skip;
    match format::read_header(bytes, SNAPSHOT_MAGIC) {
        Ok(_) => {}
        Err(HeaderError::Version { layout, format }) => return Err(SnapshotProblem::Version { layout, format }),
        Err(HeaderError::Short) => return Err(Skip("the header is cut short".into())),
        Err(HeaderError::Magic) => return Err(Skip("not a snapshot file".into())),
    }
    let mut records = Vec::new();
    let mut end = None;
    format::scan(bytes, |_, r| match r {
        Record::SnapshotEnd { covers_seq, records: n } => end = Some((covers_seq, n)),
        r => records.push(r),
    })
    .map_err(|d| Skip(format!("damaged at byte {}: {}", d.offset, d.why)))?;
    let (covers, n) = end.ok_or(Skip("no end record (the snapshot was not finished)".into()))?;
    if n != records.len() as u64 {
        return Err(Skip(format!("end record counts {n} records, the file holds {}", records.len())));
    }
    for r in records {
        state.apply(r);
    }
    state.apply(Record::SnapshotEnd { covers_seq: covers, records: n });
    Ok(covers)
}

/// What recovery found, for the daemon's log.
pub struct Recovered {
    /// The rebuilt state.
    pub state: State,
    /// The snapshot used, if any.
    pub snapshot: Option<PathBuf>,
    /// Journal files replayed.
    pub journals: usize,
    /// Warnings (torn tails cut, snapshots skipped, salvaged damage).
    pub warnings: Vec<String>,
    /// Files `--salvage` read around damage. The daemon moves them aside (`.damaged`)
    /// and writes a snapshot of what was kept of them.
    pub damaged: Vec<PathBuf>,
    /// Snapshots that could not be read (recovery fell back past them). The daemon
    /// moves them aside, so that retention never keeps one of them in place of a
    /// readable older snapshot.
    pub bad_snapshots: Vec<PathBuf>,
    /// Whether a file read holds an older records layout: the daemon then writes a
    /// snapshot before it journals, so no new record is appended under an old header.
    pub older_layout: bool,
}

/// Rebuilds the state from the newest snapshot that reads back whole (falling back to
/// older ones: a snapshot is deleted only once a newer one has been verified) plus the
/// journal files after it, checked to follow on without a gap.
///
/// A torn tail of the last journal — a bad final record with nothing valid after it —
/// is cut (the file truncated, with a warning naming the offset). Anything else is
/// corruption and stops recovery, naming the file and byte, unless `salvage`: then
/// every valid record is kept (the scan resumes at the next valid record after each
/// damaged span) and the damaged files are listed for the daemon to move aside.
pub fn recover(dir: &Path, keep_events: usize, salvage: bool) -> Result<Recovered, RecoverError> {
    let (journals, snapshots) = list(dir).map_err(io(dir))?;
    let mut warnings = Vec::new();
    let mut damaged = Vec::new();
    let mut state = State::new(keep_events);
    let mut covers = 0;
    let mut snapshot = None;
    let mut unreadable = Vec::new();
    let mut bad_snapshots = Vec::new();
    let mut older_layout = false;
    for (_, path) in snapshots.iter().rev() {
        let mut s = State::new(keep_events);
        match read_snapshot(path, &mut s) {
            Ok(c) => {
                older_layout |= fs::read(path).map(|b| format::layout_of(&b) < format::RECORDS_LAYOUT).unwrap_or(false);
                state = s;
                covers = c;
                snapshot = Some(path.clone());
                break;
            }
            Err(SnapshotProblem::Skip(why)) => {
                warnings
                    .push(format!("snapshot {} cannot be used ({why}); falling back to an older one", path.display()));
                unreadable.push(format!("{}: {why}", path.display()));
                bad_snapshots.push(path.clone());
            }
            Err(SnapshotProblem::Version { layout, format }) => {
                return Err(RecoverError::Version { path: path.clone(), layout, format })
            }
        }
    }
    let replay: Vec<&(u64, PathBuf)> = journals.iter().filter(|(s, _)| snapshot.is_none() || *s >= covers).collect();
    let first_journal = replay.first().map_or(0, |(s, _)| *s);
    let mut replayed = 0;
    let mut expected = snapshot.as_ref().map(|_| covers);
    for (i, (first, path)) in replay.iter().enumerate() {
        let bytes = fs::read(path).map_err(io(path))?;
        let last = i + 1 == replay.len();
        match format::read_header(&bytes, JOURNAL_MAGIC) {
            Ok(_) => older_layout |= format::layout_of(&bytes) < format::RECORDS_LAYOUT,
            Err(HeaderError::Version { layout, format }) => {
                return Err(RecoverError::Version { path: path.clone(), layout, format })
            }
            Err(HeaderError::Short) if last => {
                warnings.push(format!("{}: header cut short (torn at creation); removing it", path.display()));
                fs::remove_file(path).map_err(io(path))?;
                continue;
            }
            Err(e) => {
                let why = if e == HeaderError::Magic { "not a journal file" } else { "header cut short" };
                let damage = Damage { offset: 0, torn_tail: false, next_valid: None, why };
                if !salvage {
                    return Err(RecoverError::Corrupt { path: path.clone(), damage });
                }
                warnings.push(format!("salvage: {}: {why}; skipping the file", path.display()));
                damaged.push(path.clone());
                continue;
            }
        }
        if let Some(want) = expected {
            if *first > want.max(state.next_seq) {
                let err = RecoverError::Gap { path: path.clone(), expected: want.max(state.next_seq), first: *first };
                if !salvage {
                    return Err(err);
                }
                warnings.push(format!("salvage: {err}"));
            }
        }
        expected = Some(*first);
        replayed += 1;
        let mut from = format::HEADER_LEN;
        let mut budget = format::RESYNC_BUDGET;
        loop {
            match format::scan_from(&bytes, from, &mut budget, |_, r| state.apply(r)) {
                Ok(_) => break,
                Err(d) if last && d.torn_tail => {
                    warnings.push(format!(
                        "{}: {} at byte {}, and nothing valid after it: a torn final write; cutting the file there ({} bytes dropped)",
                        path.display(),
                        d.why,
                        d.offset,
                        bytes.len() as u64 - d.offset,
                    ));
                    OpenOptions::new()
                        .write(true)
                        .open(path)
                        .and_then(|f| f.set_len(d.offset).and_then(|_| f.sync_all()))
                        .map_err(io(path))?;
                    break;
                }
                Err(d) if salvage => {
                    let resume = d.next_valid.map(|n| n as usize);
                    warnings.push(format!(
                        "salvage: {}: {} at byte {}; {}",
                        path.display(),
                        d.why,
                        d.offset,
                        match resume {
                            Some(n) =>
                                format!("skipping {} bytes to the next valid record at byte {n}", n as u64 - d.offset),
                            None => format!("dropping the {} bytes after it", bytes.len() as u64 - d.offset),
                        }
                    ));
                    if !damaged.contains(path) {
                        damaged.push(path.clone());
                    }
                    match resume {
                        Some(n) => from = n,
                        None => break,
                    }
                }
                Err(damage) => return Err(RecoverError::Corrupt { path: path.to_path_buf(), damage }),
            }
        }
    }
    // Journals with no snapshot that can be read cannot rebuild what was made before
    // them. (Journal files holding no record at all are what a first start that did
    // not finish leaves: nothing was ever acknowledged from them.)
    if snapshot.is_none() && (state.records > 0 || !unreadable.is_empty()) {
        if !salvage {
            return Err(RecoverError::NoSnapshot { first_journal, damaged: unreadable });
        }
        warnings.push(format!(
            "salvage: no snapshot can be read; rebuilding from the journals (from event {first_journal}) alone"
        ));
    }
    let unconverted = state.convert_retired_assignees();
    if unconverted > 0 {
        warnings.push(format!(
            "{unconverted} assignment(s) of an older layout named agent slots no agent holds any more; they were dropped"
        ));
    }
    Ok(Recovered { state, snapshot, journals: replayed, warnings, damaged, bad_snapshots, older_layout })
}

/// Makes `dir` the daemon's private data directory: created 0700 if missing (parents
/// too), refused if it is not a directory or not this user's, and narrowed to 0700 (and
/// the journal and snapshot files in it to 0600) if an older version left it wider.
/// Returns the warnings for what it narrowed.
pub fn ensure_private_dir(dir: &Path) -> Result<Vec<String>, RecoverError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let mut warnings = Vec::new();
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))?;
    let meta = fs::metadata(dir).map_err(io(dir))?;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() {
        return Err(RecoverError::Unsafe(format!("data directory {} is not a directory", dir.display())));
    }
    if meta.uid() != me {
        return Err(RecoverError::Unsafe(format!(
            "data directory {} belongs to uid {} (mode {:o}), not to this daemon's uid {me}; use a directory of your own (--data-dir)",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
        warnings.push(format!("data directory {} was mode {:o}; narrowed to 700", dir.display(), meta.mode() & 0o7777));
    }
    let (journals, snapshots) = list(dir).map_err(io(dir))?;
    for (_, path) in journals.iter().chain(&snapshots) {
        let m = fs::symlink_metadata(path).map_err(io(path))?;
        if m.uid() != me || !m.is_file() {
            return Err(RecoverError::Unsafe(format!(
                "{} is not a regular file of uid {me} (uid {}, mode {:o}); remove it or use another --data-dir",
                path.display(),
                m.uid(),
                m.mode() & 0o7777
            )));
        }
        if m.mode() & 0o077 != 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io(path))?;
            warnings.push(format!("{} was mode {:o}; narrowed to 600", path.display(), m.mode() & 0o7777));
        }
    }
    Ok(warnings)
}

/// fsyncs a directory, so a created or renamed file's name is durable too.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Bytes of zeros a journal file is written ahead of its records. Commits then
/// overwrite blocks the file already has: their `fdatasync` flushes the data and the
/// device cache and writes no metadata (on ext4 an appending write changes the size,
/// and a `fallocate`d-but-unwritten extent must be converted at its first write, either
/// of which costs an inode write per commit). One extension per this many bytes of
/// records pays that instead.
pub const ZERO_AHEAD: u64 = 1 << 20;

/// Bytes of zeros written ahead at a time between commits.
pub const ZERO_STEP: u64 = 64 << 10;
static ZEROS: [u8; ZERO_STEP as usize] = [0; ZERO_STEP as usize];

/// An open journal file being appended to: records, then a tail of zeros written ahead
/// ([`ZERO_AHEAD`]), which a reader takes as the end ([`format::zero_tail_at`]).
pub struct JournalFile {
    file: File,
    /// Its path.
    pub path: PathBuf,
    /// Bytes of header and records in it: where the next record goes.
    pub len: u64,
    /// Bytes the file holds (records and the zero tail after them).
    allocated: u64,
    /// Whether the file's size changed since the last sync (the next one writes the
    /// inode too).
    grew: bool,
}

/// Whether the journal file at `path` declares an older records layout in its header.
fn older_layout_file(path: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut head = [0u8; format::HEADER_LEN];
    File::open(path)?.read_exact(&mut head)?;
    Ok(format::layout_of(&head) < format::RECORDS_LAYOUT)
}

impl JournalFile {
    /// Opens the journal file that starts at `seq` to append to, creating it (header
    /// and zero tail written and synced, directory synced) if it does not exist. An
    /// existing file is continued where its records end — before its zero tail, not
    /// at its length; one whose records do not read to a clean end (recovery cuts a
    /// torn tail first) is refused rather than appended to. The daemon always appends
    /// to the file named for where it continues, never to an older one: a recovery
    /// replays only the files from the snapshot it uses on, so records appended to an
    /// older file would be skipped.
    pub fn open_at(dir: &Path, seq: u64) -> std::io::Result<JournalFile> {
        let path = journal_path(dir, seq);
        // Writes the file's header and zero tail and makes them durable.
        let start = |file: File, path: PathBuf| -> std::io::Result<JournalFile> {
            let mut head = Vec::new();
            format::header(&mut head, JOURNAL_MAGIC, seq);
            file.set_len(0)?;
            file.write_all_at(&head, 0)?;
            let len = head.len() as u64;
            let mut j = JournalFile { file, path, len, allocated: len, grew: true };
            j.zero_ahead(len)?;
            j.file.sync_all()?;
            j.grew = false;
            Ok(j)
        };
        match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => {
                let bytes = fs::read(&path)?;
                if bytes.len() < format::HEADER_LEN {
                    // A header cut short at creation: write it again.
                    return start(file, path);
                }
                if older_layout_file(&path)? {
                    // Written by an older build (its records were replayed, and the daemon
                    // snapshots before journaling after such a recovery): this build's
                    // records must not go under its header. Kept aside, not deleted.
                    drop(file);
                    let aside = path.with_extension("wnj.older-layout");
                    fs::rename(&path, &aside)?;
                    eprintln!(
                        "worknoded: {} holds an older records layout; moved to {} and journaling in a new file",
                        path.display(),
                        aside.display()
                    );
                    let file = OpenOptions::new().create_new(true).read(true).write(true).mode(0o600).open(&path)?;
                    let j = start(file, path)?;
                    sync_dir(dir)?;
                    return Ok(j);
                }
                let len = format::scan(&bytes, |_, _| {}).map_err(|d| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{} is damaged at byte {} ({}); not appending to it", path.display(), d.offset, d.why),
                    )
                })?;
                Ok(JournalFile { file, path, len, allocated: bytes.len() as u64, grew: false })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let file = OpenOptions::new().create_new(true).read(true).write(true).mode(0o600).open(&path)?;
                let j = start(file, path)?;
                sync_dir(dir)?;
                Ok(j)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes zeros so that at least [`ZERO_AHEAD`] bytes follow `upto`, in whole
    /// [`ZERO_AHEAD`] steps (no sync).
    fn zero_ahead(&mut self, upto: u64) -> std::io::Result<()> {
        let want = (upto + ZERO_AHEAD).div_ceil(ZERO_AHEAD) * ZERO_AHEAD;
        while self.allocated < want {
            let n = (want - self.allocated).min(ZEROS.len() as u64) as usize;
            self.file.write_all_at(&ZEROS[..n], self.allocated)?;
            self.allocated += n as u64;
            self.grew = true;
        }
        Ok(())
    }

    /// Appends encoded records (over the zero tail; the file is extended first if they
    /// would not fit in it).
    pub fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let end = self.len + bytes.len() as u64;
        if end > self.allocated {
            self.zero_ahead(end)?;
        }
        self.file.write_all_at(bytes, self.len)?;
        self.len = end;
        Ok(())
    }

    /// Makes everything appended durable: `fdatasync`, which writes no metadata unless
    /// the file grew since the last one.
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()?;
        self.grew = false;
        Ok(())
    }

    /// Between commits: when less than half of [`ZERO_AHEAD`] of zero tail is left,
    /// writes one more [`ZERO_STEP`] of zeros and syncs it (and syncs a file that grew
    /// since its last sync), so the commits after it need no metadata write. One small
    /// step per idle moment keeps each such pause short (a commit arriving meanwhile
    /// waits for it). Returns whether it did anything.
    pub fn prepare_ahead(&mut self) -> std::io::Result<bool> {
        let short = self.allocated - self.len < ZERO_AHEAD / 2;
        if !short && !self.grew {
            return Ok(false);
        }
        if short {
            self.file.write_all_at(&ZEROS, self.allocated)?;
            self.allocated += ZERO_STEP;
        }
        self.sync()?;
        Ok(true)
    }
}

/// Writes a snapshot covering events before `covers_seq` from `records`, atomically:
/// temp file, fsync, rename, fsync directory.
pub fn write_snapshot(dir: &Path, covers_seq: u64, records: &[Record]) -> std::io::Result<PathBuf> {
    let mut buf = Vec::new();
    format::header(&mut buf, SNAPSHOT_MAGIC, covers_seq);
    for r in records {
        format::encode(&mut buf, r);
    }
    format::encode(&mut buf, &Record::SnapshotEnd { covers_seq, records: records.len() as u64 });
    let path = snapshot_path(dir, covers_seq);
    let tmp = path.with_extension("wns.tmp");
    let mut f = OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?;
    f.write_all(&buf)?;
    f.sync_all()?;
    fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64) -> Vec<u8> {
        let mut e = bytemuck::Zeroable::zeroed();
        let e: &mut worknode::layout::EventRecord = &mut e;
        e.seq = seq;
        let mut b = Vec::new();
        format::encode(&mut b, &Record::Event(*e));
        b
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wn-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn events_in(path: &Path) -> Vec<u64> {
        let mut seqs = Vec::new();
        format::scan(&fs::read(path).unwrap(), |_, r| {
            if let Record::Event(e) = r {
                seqs.push(e.seq)
            }
        })
        .unwrap();
        seqs
    }

    #[test]
    fn open_at_creates_a_file_continues_one_and_rewrites_a_header_cut_short() {
        let dir = temp_dir("open-at");
        let mut j = JournalFile::open_at(&dir, 7).unwrap();
        assert_eq!(j.len, format::HEADER_LEN as u64);
        assert!(fs::metadata(&j.path).unwrap().len() >= ZERO_AHEAD, "written ahead with zeros at creation");
        j.append(&record(7)).unwrap();
        j.sync().unwrap();
        let after_one = j.len;
        drop(j);
        assert_eq!(JournalFile::open_at(&dir, 7).unwrap().len, after_one, "appends go on after the records");
        fs::write(journal_path(&dir, 9), b"WNJ").unwrap();
        let j = JournalFile::open_at(&dir, 9).unwrap();
        assert_eq!(j.len, format::HEADER_LEN as u64);
        assert_eq!(format::read_header(&fs::read(&j.path).unwrap(), JOURNAL_MAGIC), Ok(9));
        // A file of an older records layout is never appended to: it is moved aside
        // whole and the journal goes on in a new file of this layout.
        let mut old = Vec::new();
        format::header(&mut old, JOURNAL_MAGIC, 11);
        old[8..12].copy_from_slice(&3u32.to_le_bytes());
        old.extend_from_slice(b"old records");
        fs::write(journal_path(&dir, 11), &old).unwrap();
        let j = JournalFile::open_at(&dir, 11).unwrap();
        assert_eq!(j.len, format::HEADER_LEN as u64);
        assert_eq!(format::layout_of(&fs::read(&j.path).unwrap()), format::RECORDS_LAYOUT);
        assert_eq!(fs::read(journal_path(&dir, 11).with_extension("wnj.older-layout")).unwrap(), old);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_reopened_journal_continues_after_its_records_not_after_the_zero_tail() {
        let dir = temp_dir("reopen");
        let mut j = JournalFile::open_at(&dir, 0).unwrap();
        for s in 0..3 {
            j.append(&record(s)).unwrap();
        }
        j.sync().unwrap();
        let physical = fs::metadata(&j.path).unwrap().len();
        drop(j);
        let mut j = JournalFile::open_at(&dir, 0).unwrap();
        assert!(j.len < physical, "the zero tail is not counted as records");
        j.append(&record(3)).unwrap();
        j.sync().unwrap();
        assert_eq!(events_in(&j.path), vec![0, 1, 2, 3], "the new record follows the old ones, no gap of zeros");
        // Past the zero tail the file is extended (zeros first, then the records).
        let big = record(4).repeat((ZERO_AHEAD as usize / record(4).len()) * 2);
        let before = j.len;
        j.append(&big).unwrap();
        assert!(j.prepare_ahead().unwrap(), "a grown file is synced ahead of the next commit");
        assert!(fs::metadata(&j.path).unwrap().len() >= before + big.len() as u64 + ZERO_AHEAD / 2);
        assert_eq!(events_in(&j.path).len(), 4 + big.len() / record(4).len());
        assert!(!j.prepare_ahead().unwrap(), "nothing to do with the tail still long");
        // A file whose records do not read to a clean end is not appended to.
        let path = j.path.clone();
        drop(j);
        let mut bytes = fs::read(&path).unwrap();
        let at = bytes.len() - 100;
        bytes[at] = 0x77;
        fs::write(&path, &bytes).unwrap();
        let err = JournalFile::open_at(&dir, 0).err().expect("a damaged file is refused");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn recovery_reads_to_the_zero_tail_and_cuts_garbage_after_it() {
        let dir = temp_dir("recover-zero-tail");
        write_snapshot(&dir, 0, &[]).unwrap();
        let mut j = JournalFile::open_at(&dir, 0).unwrap();
        for s in 0..5 {
            j.append(&record(s)).unwrap();
        }
        j.sync().unwrap();
        let end = j.len;
        let path = j.path.clone();
        drop(j);
        // A clean zero tail: everything recovered, nothing cut, no warning.
        let r = recover(&dir, 16, false).unwrap();
        assert_eq!(r.state.resume_seq(), 5);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        // Garbage after some zeros (a later page of an unacknowledged write): a torn
        // tail, cut at the end of the records with a warning; every record stays.
        let mut bytes = fs::read(&path).unwrap();
        bytes[end as usize + 700..end as usize + 760].fill(0xEE);
        fs::write(&path, &bytes).unwrap();
        let r = recover(&dir, 16, false).unwrap();
        assert_eq!(r.state.resume_seq(), 5);
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(r.warnings[0].contains(&format!("at byte {end}")), "{:?}", r.warnings);
        let mut j = JournalFile::open_at(&dir, 0).unwrap();
        assert_eq!(j.len, end, "the next record goes right after the recovered ones");
        j.append(&record(5)).unwrap();
        j.sync().unwrap();
        assert_eq!(events_in(&path), vec![0, 1, 2, 3, 4, 5]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
