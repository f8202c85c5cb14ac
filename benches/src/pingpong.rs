//! The parent's side of every two-process round trip: warm-up rounds (not recorded),
//! then timed rounds into a histogram, under a time cap.
//!
//! A round is whatever the mechanism does to send the 64-byte payload for sequence `i`
//! to the other process and to receive and check its reply: the time from before the
//! send to after the reply passed its checksum is one sample (a round trip).

use crate::histogram::{Recorder, Stats};
use crate::proc::Child;
use crate::suite::{Ctx, Fail, Measured};
use std::time::{Duration, Instant};

/// How many rounds, and for how long at most.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Rounds run before recording.
    pub warmup: u64,
    /// Rounds recorded.
    pub samples: u64,
    /// Stop recording after this long (the sample count is then reported as it is).
    pub time_cap: Duration,
}

impl Plan {
    /// Rounds the other side must serve.
    pub fn total(&self) -> u64 {
        self.warmup + self.samples
    }
}

/// Result of [`drive`]: the samples, and whether every planned round ran.
pub struct Driven {
    /// Samples recorded.
    pub rec: Recorder,
    /// `false` if the time cap cut the run short (the other side still waits).
    pub completed: bool,
    /// Remarks for the report.
    pub notes: Vec<String>,
}

/// Runs `round(i)` for the warm-up and the timed rounds of `plan`.
pub fn drive(plan: &Plan, mut round: impl FnMut(u64) -> Result<(), String>) -> Result<Driven, String> {
    for i in 0..plan.warmup {
        round(i)?;
    }
    let mut rec = Recorder::new();
    let start = Instant::now();
    let mut notes = Vec::new();
    let mut completed = true;
    for i in plan.warmup..plan.total() {
        let t = Instant::now();
        round(i)?;
        rec.record(t.elapsed().as_nanos() as u64);
        if i % 256 == 0 && start.elapsed() > plan.time_cap {
            notes.push(format!("time cap of {:?} reached: {} of {} samples", plan.time_cap, rec.len(), plan.samples));
            completed = false;
            break;
        }
    }
    Ok(Driven { rec, completed, notes })
}

/// The usual end of a two-process round trip: collect the child's result (or end it if
/// the run was cut short) and build the report entry.
pub fn finish(ctx: &Ctx, mut child: Child, driven: Driven, mut notes: Vec<String>) -> Result<Measured, Fail> {
    if driven.completed {
        child.result(ctx.answer_timeout())?;
    } else {
        child.kill();
    }
    notes.extend(driven.notes);
    Ok(Measured::latency(driven.rec.stats(), notes).pinned(ctx.pin_note(child.pin())))
}

/// A measured latency with no child (in-process or against a server).
pub fn stats_only(driven: Driven, notes: Vec<String>) -> (Stats, Vec<String>) {
    let mut n = notes;
    n.extend(driven.notes);
    (driven.rec.stats(), n)
}
