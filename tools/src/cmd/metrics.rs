//! `wn metrics`: the segment's operating metrics in the Prometheus text format
//! ([`crate::metrics::render`]), on stdout or, with `--textfile PATH`, written whole
//! into a file for node_exporter's textfile collector (a temporary file in the same
//! directory, then a rename, so the collector never reads half a scrape).

use crate::ctx::Ctx;
use crate::fail::Fail;
use crate::output::print_bytes;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Options of `wn metrics`.
#[derive(clap::Args, Debug)]
pub struct MetricsArgs {
    /// Write the metrics into this file (replaced atomically: a temporary file beside
    /// it, then a rename) instead of stdout; name it `*.prom` for node_exporter's
    /// textfile collector.
    #[arg(long, value_name = "PATH")]
    textfile: Option<PathBuf>,
}

/// Prints (or writes) one scrape.
pub fn run(ctx: &Ctx, a: &MetricsArgs) -> Result<(), Fail> {
    if ctx.json {
        return Err(Fail::usage(
            "`wn metrics` prints the Prometheus text format, not JSON",
            "drop --json; for JSON samples use `wn --json stat --count 1` or `wn --json dump`",
        ));
    }
    let seg = ctx.attach_ro()?;
    let mut text = String::new();
    crate::metrics::render(&seg, &mut text);
    match &a.textfile {
        None => print_bytes(text.as_bytes()),
        Some(path) => write_atomically(path, text.as_bytes()).map_err(|e| {
            Fail::new(
                "write_failed",
                crate::fail::exit::OTHER,
                format!("cannot write {}: {e}", path.display()),
                "check that the directory exists and is writable by this user",
            )
        }),
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a
/// rename (atomic on one file system); the temporary file is removed on failure.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().ok_or_else(|| std::io::Error::other("the path names no file"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })()
    .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
