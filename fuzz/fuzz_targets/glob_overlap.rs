//! Globs as reservations store them (a node's description, in shared memory that another
//! process may have written): any bytes parse to a glob or a typed error, never a panic,
//! and overlap is symmetric and agrees with matching — a path that matches both globs
//! means they overlap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use worknode::Glob;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (Some(a), Some(b)) = (parts.next(), parts.next()) else { return };
    let path = parts.next().unwrap_or("");
    let (Ok(ga), Ok(gb)) = (Glob::parse(a), Glob::parse(b)) else { return };
    let ab = ga.overlaps(&gb);
    assert_eq!(ab, gb.overlaps(&ga), "overlap is symmetric: {a:?} {b:?}");
    if let Ok(p) = worknode::check_path(path) {
        if ga.matches(p) && gb.matches(p) {
            assert!(ab, "{p:?} matches {a:?} and {b:?}, which do not overlap");
        }
    }
});
