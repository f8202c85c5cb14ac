//! The token files in the daemon's data directory: the key that seals
//! capability tokens (`token.key`), the ids of revoked tokens
//! (`tokens.revoked`, append-only) and a log of issued tokens
//! (`tokens.issued`, no MACs) for `wn token ls`. All are 0600 and must belong
//! to the effective user; the key never enters the segment.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use worknode::{RevocationList, Rights, Token, TokenId, TokenKey};

/// The key file's name in the data directory.
pub const KEY_FILE: &str = "token.key";
/// The revocation list's name in the data directory.
pub const REVOKED_FILE: &str = "tokens.revoked";
/// The issued-token log's name in the data directory.
pub const ISSUED_FILE: &str = "tokens.issued";

/// Why a token file could not be used.
#[derive(Debug)]
pub enum StoreError {
    /// Reading or writing failed.
    Io(PathBuf, io::Error),
    /// Another user owns the file, it is not a regular file, or its mode is wider than 0600.
    Unsafe(String),
    /// A line or the key does not parse.
    Corrupt(PathBuf, String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            StoreError::Unsafe(m) => f.write_str(m),
            StoreError::Corrupt(p, m) => write!(f, "{}: {m}", p.display()),
        }
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    /// Whether the file is missing.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::Io(_, e) if e.kind() == io::ErrorKind::NotFound)
    }
}

fn io_err(p: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |e| StoreError::Io(p.to_path_buf(), e)
}

/// Opens `path` without following a symlink and checks that it is a regular
/// file of this user with no group or other bits.
fn open_private(path: &Path, opts: &mut fs::OpenOptions) -> Result<fs::File, StoreError> {
    let f = opts.custom_flags(nix::libc::O_NOFOLLOW).open(path).map_err(io_err(path))?;
    let m = f.metadata().map_err(io_err(path))?;
    let me = nix::unistd::geteuid().as_raw();
    if !m.is_file() || m.uid() != me || m.mode() & 0o077 != 0 {
        return Err(StoreError::Unsafe(format!(
            "{} must be a regular file of uid {me} with mode 600 (it is uid {}, mode {:o}); fix or remove it",
            path.display(),
            m.uid(),
            m.mode() & 0o7777
        )));
    }
    Ok(f)
}

/// Reads the key from `dir/token.key`.
pub fn load_key(dir: &Path) -> Result<TokenKey, StoreError> {
    let path = dir.join(KEY_FILE);
    let mut f = open_private(&path, fs::OpenOptions::new().read(true))?;
    let mut s = String::new();
    Read::by_ref(&mut f).take(200).read_to_string(&mut s).map_err(io_err(&path))?;
    let hex = s.trim_end_matches('\n');
    if hex.len() != 64 {
        return Err(StoreError::Corrupt(path, "not 64 hex digits".into()));
    }
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| StoreError::Corrupt(path.clone(), "not 64 hex digits".into()))?;
    }
    Ok(TokenKey::from_bytes(k))
}

/// Reads the key, creating it (0600, from the OS random source) if it is
/// missing. Returns the key and whether it was created now.
pub fn ensure_key(dir: &Path) -> Result<(TokenKey, bool), StoreError> {
    match load_key(dir) {
        Err(e) if e.is_not_found() => {}
        other => return other.map(|k| (k, false)),
    }
    let path = dir.join(KEY_FILE);
    let key = TokenKey::generate().map_err(|e| StoreError::Io(path.clone(), io::Error::other(e.to_string())))?;
    let mut f = match fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
        Ok(f) => f,
        // Another process created it first: use that one.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return load_key(dir).map(|k| (k, false)),
        Err(e) => return Err(StoreError::Io(path, e)),
    };
    let mut text = String::with_capacity(65);
    for b in key.as_bytes() {
        text.push_str(&format!("{b:02x}"));
    }
    text.push('\n');
    f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(io_err(&path))?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok((key, true))
}

fn read_lines(path: &Path) -> Result<Vec<String>, StoreError> {
    let mut f = match open_private(path, fs::OpenOptions::new().read(true)) {
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        other => other?,
    };
    let mut s = String::new();
    f.read_to_string(&mut s).map_err(io_err(path))?;
    // A torn last line (a crash mid-append) has no newline: skip it.
    let complete = s.rfind('\n').map_or("", |i| &s[..i]);
    Ok(complete.lines().filter(|l| !l.is_empty()).map(str::to_string).collect())
}

fn append_line(path: &Path, line: &str) -> Result<(), StoreError> {
    let mut f = open_private(path, fs::OpenOptions::new().append(true).create(true).mode(0o600))?;
    f.write_all(format!("{line}\n").as_bytes()).and_then(|_| f.sync_data()).map_err(io_err(path))
}

/// The revoked ids (empty if the file is missing).
pub fn load_revoked(dir: &Path) -> Result<RevocationList, StoreError> {
    let path = dir.join(REVOKED_FILE);
    read_lines(&path)?
        .iter()
        .map(|l| l.parse::<TokenId>().map_err(|_| StoreError::Corrupt(path.clone(), format!("bad id {l:?}"))))
        .collect()
}

/// Appends `id` to the revocation list.
pub fn revoke(dir: &Path, id: TokenId) -> Result<(), StoreError> {
    append_line(&dir.join(REVOKED_FILE), &id.to_string())
}

/// Appends a minted token to the issued log (id, agent, rights, subtree, expiry; no MAC).
/// Agent names hold no control characters, so tabs separate the fields.
pub fn record_issued(dir: &Path, t: &Token) -> Result<(), StoreError> {
    let sub = t.subtree.map_or_else(|| "-".to_string(), |u| u.to_string());
    append_line(&dir.join(ISSUED_FILE), &format!("{}\t{}\t{}\t{}\t{}", t.id, t.agent, t.rights, sub, t.expires_ms))
}

/// The issued log, oldest first.
pub fn list_issued(dir: &Path) -> Result<Vec<Token>, StoreError> {
    let path = dir.join(ISSUED_FILE);
    read_lines(&path)?
        .iter()
        .map(|l| parse_issued(l).ok_or_else(|| StoreError::Corrupt(path.clone(), format!("bad line {l:?}"))))
        .collect()
}

fn parse_issued(l: &str) -> Option<Token> {
    let f: Vec<&str> = l.split('\t').collect();
    let [id, agent, rights, sub, exp] = f.as_slice() else { return None };
    Some(Token {
        id: id.parse().ok()?,
        agent: agent.to_string(),
        rights: rights.parse::<Rights>().ok()?,
        subtree: if *sub == "-" { None } else { Some(sub.parse().ok()?) },
        expires_ms: exp.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("wn-tokens-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn key_created_once_0600_and_wide_mode_refused() {
        let d = tmp("key");
        let (k, created) = ensure_key(&d).unwrap();
        assert!(created);
        assert_eq!(fs::metadata(d.join(KEY_FILE)).unwrap().mode() & 0o777, 0o600);
        let (k2, created) = ensure_key(&d).unwrap();
        assert!(!created);
        assert_eq!(k, k2);
        fs::set_permissions(d.join(KEY_FILE), fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(load_key(&d), Err(StoreError::Unsafe(_))));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn issued_and_revoked_round_trip() {
        let d = tmp("log");
        let key = TokenKey::from_bytes([1; 32]);
        let (t, _) = worknode::mint(&key, "a b", Rights::READ, Some(uuid::Uuid::from_u128(5)), 9).unwrap();
        record_issued(&d, &t).unwrap();
        assert_eq!(list_issued(&d).unwrap(), vec![t.clone()]);
        assert!(load_revoked(&d).unwrap().is_empty());
        revoke(&d, t.id).unwrap();
        assert!(load_revoked(&d).unwrap().contains(&t.id));
        assert_eq!(fs::metadata(d.join(REVOKED_FILE)).unwrap().mode() & 0o777, 0o600);
        fs::remove_dir_all(&d).unwrap();
    }
}
