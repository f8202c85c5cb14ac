//! Reading files and stdin, bounded by what the target can hold: a document by the
//! segment's largest document, an export by what the segment could have exported. A
//! source that holds more (`/dev/zero`, a log that keeps growing, the wrong file) is
//! refused after reading one byte beyond the bound, never read to its end.

use crate::fail::{exit, Fail};
use std::io::Read;
use std::path::Path;

/// Where the bytes come from.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// A file.
    File(&'a Path),
    /// Standard input.
    Stdin,
}

impl Source<'_> {
    fn describe(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Stdin => "stdin".to_string(),
        }
    }
}

/// Reads all of `src` if it holds at most `max` bytes; otherwise fails with `code`
/// (exit `exit_code`) naming the limit. At most `max + 1` bytes are ever read.
pub fn read_bounded(
    src: Source<'_>,
    max: u64,
    code: &'static str,
    exit_code: u8,
    what: &str,
    hint: &str,
) -> Result<Vec<u8>, Fail> {
    let mut bytes = Vec::new();
    let limit = max.saturating_add(1);
    let read = match src {
        Source::File(p) => {
            let f = std::fs::File::open(p).map_err(|e| {
                let code = if e.kind() == std::io::ErrorKind::NotFound { exit::NOT_FOUND } else { exit::OTHER };
                Fail::new("file_unreadable", code, format!("cannot read {}: {e}", p.display()), "check the path")
            })?;
            f.take(limit).read_to_end(&mut bytes)
        }
        Source::Stdin => std::io::stdin().lock().take(limit).read_to_end(&mut bytes),
    };
    read.map_err(|e| {
        Fail::new("file_unreadable", exit::OTHER, format!("cannot read {}: {e}", src.describe()), "check the input")
    })?;
    if bytes.len() as u64 > max {
        return Err(Fail::new(
            code,
            exit_code,
            format!("{} holds more than {max} bytes, the most {what}", src.describe()),
            hint,
        ));
    }
    Ok(bytes)
}
