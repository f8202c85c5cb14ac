//! Claims of tasks shared with other hosts (issue 18): the library's half of the
//! two-phase claim the replication bridge completes.
//!
//! A task the bridge replicates carries [`record_flags::SHARED`]. Claiming one is:
//!
//! 1. the local claim as ever (one compare-and-set under the task's lock), marked
//!    [`record_flags::UNCONFIRMED`]: no other agent here can take it meanwhile;
//! 2. the bridge sees the `task_claimed` event and compare-and-sets the task's entry in
//!    the claim register the hosts share (a JetStream KV entry); then it calls
//!    [`Segment::confirm_claim`] with the fencing epoch the register gave, or
//!    [`Segment::refuse_claim`] when another host holds it;
//! 3. the claimer, waiting in [`Segment::claim`] (parked in short sleeps, at most
//!    [`CONFIRM_WAIT`]), returns the confirmed claim, or [`TaskError::HeldElsewhere`].
//!
//! A bridge that is not running or cannot reach NATS says so in its heartbeat
//! ([`Segment::bridge_beat`]); claims of shared tasks are then refused at once with
//! [`TaskError::Offline`], while tasks never shared stay claimable. A claimer whose
//! confirmation does not come within [`CONFIRM_WAIT`] undoes its claim and is told
//! `Offline` too.
//!
//! [`record_flags::SHARED`]: crate::layout::record_flags::SHARED
//! [`record_flags::UNCONFIRMED`]: crate::layout::record_flags::UNCONFIRMED

use crate::claims::{clear_claim, recorded_claimant, Claim, TaskError};
use crate::event::EventKind;
use crate::layout::{hdr, record_flags};
use crate::node::{Handle, Node, Status};
use crate::pool::Change;
use crate::{unix_ms, PoolError, Segment};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long a claimer of a shared task waits for the bridge's answer.
pub const CONFIRM_WAIT: Duration = Duration::from_secs(5);

/// A bridge heartbeat older than this means the bridge is not running.
pub const BRIDGE_BEAT_STALE_MS: u64 = 3_000;

/// A claim of a shared task waiting for the bridge: who took it, at which local epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingClaim {
    /// The task.
    pub task: Handle,
    /// The claimer's agent slot + 1 and its generation.
    pub agent_slot: u16,
    /// The claimer's agent slot generation.
    pub agent_gen: u32,
    /// The epoch the local claim gave (the confirmed one is at least this).
    pub epoch: u64,
}

impl Segment {
    /// The bridge says it is alive, and whether it reaches the other hosts. It calls
    /// this every tick (half a second; every NATS call on its loop is bounded well below
    /// the staleness); [`BRIDGE_BEAT_STALE_MS`] without a beat is offline.
    pub fn bridge_beat(&self, connected: bool) {
        // SYNC POINT: pairs with the Acquire load in `bridge_online`.
        self.hdr(hdr::BRIDGE_BEAT).store(unix_ms() << 1 | u64::from(connected), Ordering::Release);
    }

    /// Whether a bridge beat recently and reaches the other hosts.
    pub fn bridge_online(&self) -> bool {
        // SYNC POINT: pairs with the Release store in `bridge_beat`.
        let beat = self.hdr(hdr::BRIDGE_BEAT).load(Ordering::Acquire);
        beat & 1 == 1 && unix_ms().saturating_sub(beat >> 1) <= BRIDGE_BEAT_STALE_MS
    }

    /// Marks `task` shared with other hosts (a no-op when it is). Returns the node as
    /// marked: a claim it holds was made before it was shared, and the bridge registers
    /// it in the hosts' claim register.
    ///
    /// # Errors
    ///
    /// As any change of the node.
    pub fn mark_shared(&self, task: Handle) -> Result<Node, PoolError> {
        let n = self.read(task)?;
        if n.record().flags & record_flags::SHARED != 0 {
            return Ok(n);
        }
        // Bookkeeping, not a change a host sees: the record's origin stays.
        crate::origin::keeping(|| {
            self.modify(task, Change::new(EventKind::NODE_UPDATED), |rec| {
                rec.flags |= record_flags::SHARED;
                Ok::<(), PoolError>(())
            })
        })
        .map(|(n, ())| n)
    }

    /// The claim of `task` waiting for the bridge, if there is one.
    ///
    /// # Errors
    ///
    /// As [`Segment::read`].
    pub fn unconfirmed_claim(&self, task: Handle) -> Result<Option<PendingClaim>, PoolError> {
        let n = self.read(task)?;
        let r = n.record();
        Ok((r.flags & record_flags::UNCONFIRMED != 0 && r.claim_agent != 0).then_some(PendingClaim {
            task,
            agent_slot: r.claim_agent,
            agent_gen: r.claim_agent_gen,
            epoch: r.claim_epoch,
        }))
    }

    /// Confirms `pending` with fencing epoch `epoch` (raised to the local one when
    /// lower). False when that claim is no longer there (its claimer gave up).
    ///
    /// # Errors
    ///
    /// As any change of the node.
    pub fn confirm_claim(&self, pending: &PendingClaim, epoch: u64) -> Result<bool, TaskError> {
        crate::origin::keeping(|| {
            self.settle(pending, EventKind::NODE_UPDATED, |rec| {
                rec.flags &= !record_flags::UNCONFIRMED;
                rec.claim_epoch = rec.claim_epoch.max(epoch);
            })
        })
    }

    /// Undoes `pending`: another host holds the task. Its claimer is told
    /// [`TaskError::HeldElsewhere`]. False when that claim is no longer there.
    ///
    /// # Errors
    ///
    /// As any change of the node.
    pub fn refuse_claim(&self, pending: &PendingClaim) -> Result<bool, TaskError> {
        self.undo(pending, true)
    }

    /// Undoes `pending` (refused: `HELD_ELSEWHERE`), marked [`record_flags::UNDONE`]
    /// and keeping the record's origin: the claim's retreat is no change to send.
    fn undo(&self, pending: &PendingClaim, refused: bool) -> Result<bool, TaskError> {
        crate::origin::keeping(|| {
            self.settle(pending, EventKind::TASK_RELEASED, |rec| {
                clear_claim(rec);
                rec.flags |= record_flags::UNDONE;
                if refused {
                    rec.flags |= record_flags::HELD_ELSEWHERE;
                }
                rec.status = Status::Ready.code();
            })
        })
    }

    /// Applies `f` when `pending` is still the task's unconfirmed claim.
    fn settle(
        &self,
        pending: &PendingClaim,
        kind: EventKind,
        f: impl FnOnce(&mut crate::layout::NodeRecord),
    ) -> Result<bool, TaskError> {
        let mut applied = false;
        self.modify(pending.task, Change::new(kind), |rec| {
            let same = rec.flags & record_flags::UNCONFIRMED != 0
                && rec.claim_agent == pending.agent_slot
                && rec.claim_agent_gen == pending.agent_gen
                && rec.claim_epoch == pending.epoch;
            if !same {
                // Nothing to write: refused, so `modify` publishes nothing.
                return Err(TaskError::NotClaimant);
            }
            f(rec);
            applied = true;
            Ok(())
        })
        .map(|_| applied)
        .or_else(|e| if matches!(e, TaskError::NotClaimant) { Ok(false) } else { Err(e) })
    }

    /// The claimer's side: waits until the bridge confirms or refuses `claim`, at most
    /// [`CONFIRM_WAIT`]; undoes it then.
    pub(crate) fn await_confirmation(&self, claim: Claim) -> Result<Claim, TaskError> {
        let deadline = Instant::now() + CONFIRM_WAIT;
        // Short naps: the answer takes a NATS round trip or two (about a millisecond
        // on loopback), and reading the record is cheap.
        let mut nap = Duration::from_micros(50);
        loop {
            let n = self.read(claim.task)?;
            let r = n.record();
            let ours = recorded_claimant(r) == Some(claim.agent) && r.claim_epoch >= claim.epoch;
            if ours && r.flags & record_flags::UNCONFIRMED == 0 {
                return Ok(Claim { epoch: r.claim_epoch, lease_until_ms: r.lease_until_ms, ..claim });
            }
            if !ours {
                return Err(self.why_lost(r.flags));
            }
            if Instant::now() >= deadline {
                let pending = PendingClaim {
                    task: claim.task,
                    agent_slot: claim.agent.index + 1,
                    agent_gen: claim.agent.generation,
                    epoch: claim.epoch,
                };
                // Undone unless the bridge answered just now.
                return match self.undo(&pending, false)? {
                    true => Err(TaskError::Offline),
                    false => self.await_confirmation_once(claim),
                };
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_micros(250));
        }
    }

    /// The answer the bridge gave just before the claimer's deadline.
    fn await_confirmation_once(&self, claim: Claim) -> Result<Claim, TaskError> {
        let n = self.read(claim.task)?;
        let r = n.record();
        if recorded_claimant(r) == Some(claim.agent) && r.flags & record_flags::UNCONFIRMED == 0 {
            return Ok(Claim { epoch: r.claim_epoch, lease_until_ms: r.lease_until_ms, ..claim });
        }
        Err(self.why_lost(r.flags))
    }

    /// Why a claim waiting for the bridge is no longer there: only a refusal removes
    /// one (the claimer's own undo at its deadline says `Offline` itself), so it is
    /// held elsewhere, unless the bridge went offline meanwhile. (The flag alone would
    /// not do: another claimer here may have taken the task since, clearing it.)
    fn why_lost(&self, flags: u8) -> TaskError {
        if flags & record_flags::HELD_ELSEWHERE != 0 || self.bridge_online() {
            TaskError::HeldElsewhere
        } else {
            TaskError::Offline
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Capacities, NewNode, NodeKind};

    fn seg(tag: &str) -> crate::testing::TempSegment {
        crate::testing::temp_segment(
            &format!("shared-{tag}"),
            &Capacities { nodes: 64, events: 256, agents: 4, blob_chunks: 4, sets: 4, ..Capacities::default() },
        )
    }

    fn ready_task(s: &Segment, name: &str) -> Handle {
        s.add(s.root(), &NewNode::new(NodeKind::Task, name).status(Status::Ready)).unwrap()
    }

    #[test]
    fn a_shared_task_is_refused_offline_and_a_local_one_is_not() {
        let s = seg("offline");
        let me = s.join("w", "w").unwrap();
        let shared = ready_task(&s, "shared");
        let local = ready_task(&s, "local");
        s.mark_shared(shared).unwrap();
        // No bridge ever beat; then one that says it is cut off.
        assert_eq!(s.claim(shared, me, Duration::from_secs(30)).unwrap_err(), TaskError::Offline);
        s.bridge_beat(false);
        assert_eq!(s.claim(shared, me, Duration::from_secs(30)).unwrap_err(), TaskError::Offline);
        assert_eq!(s.read(shared).unwrap().status(), Some(Status::Ready), "nothing was written");
        assert!(s.claim(local, me, Duration::from_secs(30)).is_ok());
    }

    /// Plays the bridge on a thread: answers the first unconfirmed claim of `task`.
    fn bridge(s: &Segment, task: Handle, answer: impl FnOnce(&Segment, &PendingClaim) + Send) {
        s.bridge_beat(true);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(p) = s.unconfirmed_claim(task).unwrap() {
                answer(s, &p);
                return;
            }
            assert!(Instant::now() < deadline, "no claim to answer");
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    #[test]
    fn a_confirmed_claim_carries_the_register_epoch_and_a_refused_one_is_undone() {
        let s = seg("confirm");
        let (a, b) = (s.join("a", "w").unwrap(), s.join("b", "w").unwrap());
        let t = ready_task(&s, "t");
        s.mark_shared(t).unwrap();
        s.bridge_beat(true);
        let claim = std::thread::scope(|sc| {
            sc.spawn(|| bridge(&s, t, |s, p| assert!(s.confirm_claim(p, 41).unwrap())));
            s.claim(t, a, Duration::from_secs(30)).unwrap()
        });
        assert_eq!(claim.epoch, 41, "the register's epoch, above the local one");
        assert_eq!(s.read(t).unwrap().claim_epoch(), 41);
        // While it is held here, another agent here is refused without the bridge.
        assert!(matches!(s.claim(t, b, Duration::from_secs(30)), Err(TaskError::AlreadyClaimed { .. })));
        s.release(&claim).unwrap();

        let refused = std::thread::scope(|sc| {
            sc.spawn(|| bridge(&s, t, |s, p| assert!(s.refuse_claim(p).unwrap())));
            s.claim(t, b, Duration::from_secs(30))
        });
        assert_eq!(refused.unwrap_err(), TaskError::HeldElsewhere);
        let n = s.read(t).unwrap();
        assert_eq!((n.status(), n.claim_agent_raw()), (Some(Status::Ready), None), "the claim was undone");
        assert_ne!(n.record().flags & record_flags::UNDONE, 0, "the undo is marked as no change to send");
        // An answer for a claim that is gone changes nothing.
        let stale = PendingClaim { task: t, agent_slot: b.index + 1, agent_gen: b.generation, epoch: 42 };
        assert!(!s.confirm_claim(&stale, 50).unwrap());
        assert_eq!(s.read(t).unwrap().claim_epoch(), 42);
    }
}
