//! The physical floor: two processes bounce a counter between two cache lines of a shared
//! mapping (a file in `/dev/shm`), each spinning on the other's line.
//!
//! One round is two cache-line transfers between the cores (the ping line to the other
//! core, the pong line back): no payload, no syscall, nothing a real channel could
//! skip. Every shared-memory mechanism's round trip is judged against it.

use crate::pingpong::{drive, finish};
use crate::proc::{spin_until, RoleCtx};
use crate::shm::ShmFile;
use crate::suite::{Ctx, Fail, Measured};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Word index of the ping line (offset 0) and the pong line (offset 128: two lines
/// apart, so the adjacent-line prefetcher does not couple them).
const PING_WORD: usize = 0;
const PONG_WORD: usize = 16;
const WAIT: Duration = Duration::from_secs(10);

/// Parent side.
pub fn run(ctx: &Ctx) -> Result<Measured, Fail> {
    let shm = ShmFile::create("floor", 4096)?;
    let words = shm.words();
    let child =
        ctx.spawn("floor", &[("path", shm.path().display().to_string()), ("rounds", ctx.plan.total().to_string())])?;
    let (ping, pong) = (&words[PING_WORD], &words[PONG_WORD]);
    let driven = drive(&ctx.plan, |i| {
        ping.store(i + 1, Ordering::Release);
        spin_until(|| pong.load(Ordering::Acquire) == i + 1, WAIT)
    })?;
    finish(ctx, child, driven, vec!["two AtomicU64 128 bytes apart, std::hint::spin_loop".into()])
}

/// Child side: answers every ping.
pub fn role(ctx: &RoleCtx) -> Result<(), String> {
    let shm = ShmFile::open(Path::new(ctx.get("path")?))?;
    let rounds: u64 = ctx.parse("rounds")?;
    let words = shm.words();
    let (ping, pong) = (&words[PING_WORD], &words[PONG_WORD]);
    ctx.ready();
    for i in 0..rounds {
        spin_until(|| ping.load(Ordering::Acquire) == i + 1, WAIT)?;
        pong.store(i + 1, Ordering::Release);
    }
    ctx.result(&serde_json::json!({ "rounds": rounds }));
    Ok(())
}
