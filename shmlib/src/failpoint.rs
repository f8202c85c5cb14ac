//! Named fail-points for crash tests (Cargo feature `failpoints`, off by default).
//!
//! A test re-runs its own binary as a child with `WORKNODE_FAILPOINT=<name>`; when the
//! child reaches that point it prints `failpoint <name> reached` on stderr and stops
//! there (sleeping, bounded), so the parent can `SIGKILL` it at exactly that step.
//! Without the feature, [`hit`] is an empty inline function.

/// Environment variable naming the active fail-point.
pub const FAILPOINT_ENV: &str = "WORKNODE_FAILPOINT";

/// Stops here if the active fail-point is `name`.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    use std::io::Write;
    use std::sync::OnceLock;
    static ACTIVE: OnceLock<Option<String>> = OnceLock::new();
    let active = ACTIVE.get_or_init(|| std::env::var(FAILPOINT_ENV).ok());
    if active.as_deref() == Some(name) {
        let mut err = std::io::stderr();
        let _ = writeln!(err, "failpoint {name} reached");
        let _ = err.flush();
        // Wait to be killed; give up (abort) after a minute so nothing hangs forever.
        std::thread::sleep(std::time::Duration::from_secs(60));
        std::process::abort();
    }
}

/// Stops here if the active fail-point is `name` (no-op: feature `failpoints` is off).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}
