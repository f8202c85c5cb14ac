//! Journal and snapshot files in the data directory: listing, recovery, appending with
//! rotation, and snapshots (temp file, fsync, rename, fsync directory).

use super::format::{self, Damage, HeaderError, Record, JOURNAL_MAGIC, SNAPSHOT_MAGIC};
use super::state::State;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
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
}

impl std::fmt::Display for RecoverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecoverError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            RecoverError::Version { path, layout, format } => write!(
                f,
                "{} was written by layout version {layout} / format {format}, this daemon reads layout {} / format {}; use the daemon version that wrote it, or move the data directory aside",
                path.display(),
                worknode::layout::LAYOUT_VERSION,
                format::FORMAT_VERSION
            ),
            RecoverError::Corrupt { path, damage } => write!(
                f,
                "{} is damaged at byte {}: {}; records after it cannot be trusted. Restore the file from a backup, or start with --salvage to keep everything before that point",
                path.display(),
                damage.offset,
                damage.why
            ),
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
enum SnapshotProblem {
    /// Incomplete or damaged: an older snapshot may serve.
    Skip(String),
    /// Written by another layout or format version: refuse, never misread or skip.
    Version { layout: u32, format: u32 },
}

/// Reads a snapshot whole.
fn read_snapshot(path: &Path, state: &mut State) -> Result<u64, SnapshotProblem> {
    use SnapshotProblem::Skip;
    let bytes = fs::read(path).map_err(|e| Skip(e.to_string()))?;
    match format::read_header(&bytes, SNAPSHOT_MAGIC) {
        Ok(_) => {}
        Err(HeaderError::Version { layout, format }) => return Err(SnapshotProblem::Version { layout, format }),
        Err(e) => return Err(Skip(format!("{e:?}"))),
    }
    let mut records = Vec::new();
    let mut end = None;
    format::scan(&bytes, |_, r| match r {
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
}

/// Rebuilds the state from the newest valid snapshot plus the journal after it. A torn
/// tail of the last journal is cut (the file truncated, with a warning naming the
/// offset); damage anywhere else stops recovery unless `salvage`, which keeps what is
/// valid before the damage and drops the rest (files after it are renamed `.damaged`).
pub fn recover(dir: &Path, keep_events: usize, salvage: bool) -> Result<Recovered, RecoverError> {
    let (journals, snapshots) = list(dir).map_err(io(dir))?;
    let mut warnings = Vec::new();
    let mut state = State::new(keep_events);
    let mut covers = 0;
    let mut snapshot = None;
    for (_, path) in snapshots.iter().rev() {
        let mut s = State::new(keep_events);
        match read_snapshot(path, &mut s) {
            Ok(c) => {
                state = s;
                covers = c;
                snapshot = Some(path.clone());
                break;
            }
            Err(SnapshotProblem::Skip(why)) => warnings.push(format!("skipping snapshot {}: {why}", path.display())),
            Err(SnapshotProblem::Version { layout, format }) => {
                return Err(RecoverError::Version { path: path.clone(), layout, format })
            }
        }
    }
    let replay: Vec<&(u64, PathBuf)> = journals.iter().filter(|(s, _)| snapshot.is_none() || *s >= covers).collect();
    let mut replayed = 0;
    for (i, (_, path)) in replay.iter().enumerate() {
        let bytes = fs::read(path).map_err(io(path))?;
        match format::read_header(&bytes, JOURNAL_MAGIC) {
            Ok(_) => {}
            Err(HeaderError::Version { layout, format }) => {
                return Err(RecoverError::Version { path: path.clone(), layout, format })
            }
            Err(HeaderError::Short) if i + 1 == replay.len() => {
                warnings.push(format!("{}: header cut short (torn at creation); removing it", path.display()));
                fs::remove_file(path).map_err(io(path))?;
                continue;
            }
            Err(e) => {
                return Err(RecoverError::Corrupt {
                    path: path.clone(),
                    damage: Damage {
                        offset: 0,
                        torn_tail: false,
                        why: if e == HeaderError::Magic { "not a journal file" } else { "header cut short" },
                    },
                })
            }
        }
        replayed += 1;
        let last = i + 1 == replay.len();
        match format::scan(&bytes, |_, r| state.apply(r)) {
            Ok(_) => {}
            // A torn final write may also leave zeros after the last good record (a later
            // page of the batch reached the disk, an earlier one did not).
            Err(d) if (last && (d.torn_tail || bytes[d.offset as usize..].iter().all(|b| *b == 0))) || salvage => {
                warnings.push(format!(
                    "{}: {} at byte {}; cutting the file there ({} bytes dropped){}",
                    path.display(),
                    d.why,
                    d.offset,
                    bytes.len() as u64 - d.offset,
                    if d.torn_tail && last { " — a torn final write" } else { " — salvaged" }
                ));
                OpenOptions::new()
                    .write(true)
                    .open(path)
                    .and_then(|f| f.set_len(d.offset).and_then(|_| f.sync_all()))
                    .map_err(io(path))?;
                if !last {
                    for (_, later) in &replay[i + 1..] {
                        let aside = later.with_extension("wnj.damaged");
                        fs::rename(later, &aside).map_err(io(later))?;
                        warnings.push(format!(
                            "{}: moved aside to {} (after salvaged damage)",
                            later.display(),
                            aside.display()
                        ));
                    }
                    break;
                }
            }
            Err(damage) => return Err(RecoverError::Corrupt { path: path.to_path_buf(), damage }),
        }
    }
    Ok(Recovered { state, snapshot, journals: replayed, warnings })
}

/// fsyncs a directory, so a created or renamed file's name is durable too.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// An open journal file being appended to.
pub struct JournalFile {
    file: File,
    /// Its path.
    pub path: PathBuf,
    /// Bytes in it.
    pub len: u64,
}

impl JournalFile {
    /// Opens the journal to append to: the newest file if there is one, else a new one
    /// starting at `next_seq`.
    pub fn open_latest(dir: &Path, next_seq: u64) -> std::io::Result<JournalFile> {
        let (journals, _) = list(dir)?;
        match journals.last() {
            Some((_, path)) => {
                let file = OpenOptions::new().append(true).open(path)?;
                let len = file.metadata()?.len();
                Ok(JournalFile { file, path: path.clone(), len })
            }
            None => JournalFile::create(dir, next_seq),
        }
    }

    /// Starts a new journal file at `seq`.
    pub fn create(dir: &Path, seq: u64) -> std::io::Result<JournalFile> {
        let path = journal_path(dir, seq);
        let mut file = OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
        let mut head = Vec::new();
        format::header(&mut head, JOURNAL_MAGIC, seq);
        file.write_all(&head)?;
        file.sync_all()?;
        sync_dir(dir)?;
        Ok(JournalFile { file, path, len: head.len() as u64 })
    }

    /// Appends encoded records.
    pub fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Makes everything appended durable.
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
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
    let mut f = OpenOptions::new().create(true).truncate(true).write(true).open(&tmp)?;
    f.write_all(&buf)?;
    f.sync_all()?;
    fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    Ok(path)
}
