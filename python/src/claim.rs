//! `Claim`: a claim on one task (its fencing epoch and lease, presented with every
//! write), a context manager whose lease a background thread renews while it is held.
//!
//! Three owners share a claim's live state ([`Held`]): the `Claim` object, the client's
//! table (so `doc_put` under a held task goes through the claim) and the [`Renewer`].

use crate::args::{detached, lock, raise, seconds, truncate, usage, Int, Secs};
use crate::node::{node_obj, Node};
use pyo3::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use wn::fail::{exit, Fail};
use worknode::{Handle, Segment, TaskError};

/// A claim's live state, shared by its `Claim` object, the client's table and the
/// renewer thread.
pub struct Held {
    pub claim: Mutex<worknode::Claim>,
    /// The lease asked for: what every renewal asks again.
    pub lease: Duration,
    /// Completed, failed or released (or lost): nothing more is done with it.
    /// Release pairs with the Acquire loads of whoever checks it next.
    pub done: AtomicBool,
    /// Why background renewal stopped, if it failed.
    lost: Mutex<Option<String>>,
}

impl Held {
    pub fn new(c: worknode::Claim, lease: Duration) -> Held {
        Held { claim: Mutex::new(c), lease, done: AtomicBool::new(false), lost: Mutex::new(None) }
    }

    fn current(&self) -> worknode::Claim {
        *lock(&self.claim)
    }

    /// When this claim should next be renewed: once a third of its lease has run.
    fn due_ms(&self, c: &worknode::Claim) -> u64 {
        let lease_ms = u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX);
        c.lease_until_ms.saturating_sub(lease_ms.saturating_mul(2) / 3)
    }
}

/// The claims a client holds, by task.
pub type ClaimTable = Arc<Mutex<HashMap<Handle, Arc<Held>>>>;

/// The client's lease renewer: one thread, renewing the claims held in `with` blocks.
/// Renewals run outside the state lock, so a Python thread entering or leaving a block
/// (which takes it with the GIL held) never waits for a renewal's journal write.
pub struct Renewer {
    seg: Arc<Segment>,
    state: Mutex<RenewState>,
    wake: Condvar,
}

#[derive(Default)]
struct RenewState {
    held: Vec<Arc<Held>>,
    /// Bumped by every `add`: a claim added while renewals ran is seen before sleeping.
    added: u64,
    started: bool,
    stop: bool,
}

impl Renewer {
    pub fn new(seg: Arc<Segment>) -> Arc<Renewer> {
        Arc::new(Renewer { seg, state: Mutex::new(RenewState::default()), wake: Condvar::new() })
    }

    fn add(self: &Arc<Self>, h: Arc<Held>) -> Result<(), Fail> {
        let mut st = lock(&self.state);
        if !st.held.iter().any(|x| Arc::ptr_eq(x, &h)) {
            st.held.push(h);
        }
        st.added += 1;
        if !st.started {
            let me = Arc::clone(self);
            std::thread::Builder::new()
                .name("worknode-renew".into())
                .spawn(move || me.run())
                .map_err(|e| Fail::other(format!("cannot start the lease renewer thread: {e}")))?;
            st.started = true;
        }
        self.wake.notify_all();
        Ok(())
    }

    fn remove(&self, h: &Arc<Held>) {
        lock(&self.state).held.retain(|x| !Arc::ptr_eq(x, h));
    }

    /// Ends the thread (it holds the renewer, and so the mapping, until it sees this).
    pub fn stop(&self) {
        lock(&self.state).stop = true;
        self.wake.notify_all();
    }

    /// Renews each held claim once a third of its lease has run; sleeps until the next
    /// one is due (or a claim is added).
    fn run(&self) {
        let mut st = lock(&self.state);
        loop {
            if st.stop {
                return;
            }
            st.held.retain(|h| !h.done.load(Ordering::Acquire));
            let held = st.held.clone();
            let added = st.added;
            drop(st);
            let mut next_due = u64::MAX;
            for h in &held {
                next_due = next_due.min(self.renew_if_due(h));
            }
            st = lock(&self.state);
            if st.added != added {
                continue;
            }
            let wait = if next_due == u64::MAX {
                Duration::from_secs(3600)
            } else {
                Duration::from_millis(next_due.saturating_sub(worknode::unix_ms()).max(1))
            };
            st = self.wake.wait_timeout(st, wait).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Renews `h` if it is due; returns when it is next due (`u64::MAX`: never again).
    fn renew_if_due(&self, h: &Held) -> u64 {
        // Holding the claim's lock orders this renewal with the claim's own writes.
        let mut c = lock(&h.claim);
        if h.done.load(Ordering::Acquire) {
            return u64::MAX;
        }
        let due = h.due_ms(&c);
        if due > worknode::unix_ms() {
            return due;
        }
        match self.seg.renew(&c, h.lease) {
            Ok(nc) => {
                *c = nc;
                h.due_ms(&nc)
            }
            Err(e) => {
                *lock(&h.lost) = Some(Fail::from(e).message);
                h.done.store(true, Ordering::Release);
                u64::MAX
            }
        }
    }
}

/// What leaving a `with claim:` block by an exception does to a task still held.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Fail,
    Release,
}

impl OnError {
    pub fn parse(text: &str) -> Result<OnError, Fail> {
        match text {
            "fail" => Ok(OnError::Fail),
            "release" => Ok(OnError::Release),
            _ => Err(usage(format!("on_error must be \"fail\" or \"release\", not {text:?}"), "")),
        }
    }
}

/// Whether a refused outcome means the claim is gone anyway (nothing more to do with it).
fn claim_is_gone(e: &TaskError) -> bool {
    matches!(e, TaskError::StaleEpoch { .. } | TaskError::LeaseExpired { .. } | TaskError::NotClaimant)
}

/// A claim on one task: its fencing epoch and lease, presented with every write.
#[pyclass(frozen, module = "worknode._native")]
pub struct Claim {
    seg: Arc<Segment>,
    held: Arc<Held>,
    claims: ClaimTable,
    renewer: Arc<Renewer>,
    on_error: OnError,
}

impl Claim {
    pub fn new(
        seg: Arc<Segment>,
        held: Arc<Held>,
        claims: ClaimTable,
        renewer: Arc<Renewer>,
        on_error: OnError,
    ) -> Claim {
        Claim { seg, held, claims, renewer, on_error }
    }

    /// The claim to present, or why there is none any more.
    fn live(&self) -> Result<worknode::Claim, Fail> {
        if let Some(why) = lock(&self.held.lost).clone() {
            return Err(Fail::new(
                "lease_lost",
                exit::CONFLICT,
                format!("the lease could not be renewed: {why}"),
                "drop this work: the task may have been claimed by another agent",
            ));
        }
        Ok(self.held.current())
    }

    /// Marks the claim finished: no more renewals, out of the client's table.
    fn finish(&self) {
        self.held.done.store(true, Ordering::Release);
        self.renewer.remove(&self.held);
        let task = self.held.current().task;
        let mut claims = lock(&self.claims);
        if claims.get(&task).is_some_and(|h| Arc::ptr_eq(h, &self.held)) {
            claims.remove(&task);
        }
    }

    /// Runs an outcome (complete, fail, release) and finishes the claim when it succeeds
    /// or when the claim is gone anyway (fenced off, lapsed, swept, renewal lost).
    fn outcome(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&Segment, &worknode::Claim) -> Result<worknode::Node, TaskError> + Send,
    ) -> PyResult<Py<Node>> {
        let seg = &self.seg;
        let r = py.detach(|| {
            let live = self.live();
            if live.is_err() {
                self.finish();
            }
            live?;
            // Holding the claim's lock keeps the renewer from renewing it meanwhile.
            let guard = lock(&self.held.claim);
            let r = f(seg, &guard);
            // Marked ended before the lock goes, so the renewer never renews it after.
            if r.as_ref().err().is_none_or(claim_is_gone) {
                self.held.done.store(true, Ordering::Release);
            }
            drop(guard);
            match r {
                Ok(n) => {
                    self.finish();
                    Ok(n)
                }
                Err(e) => {
                    if claim_is_gone(&e) {
                        self.finish();
                    }
                    Err(Fail::from(e))
                }
            }
        });
        node_obj(py, seg, r.map_err(|f| raise(py, f))?)
    }
}

#[pymethods]
impl Claim {
    /// The claimed task, read now.
    #[getter]
    fn task(&self, py: Python<'_>) -> PyResult<Py<Node>> {
        let n = self.seg.read(self.held.current().task).map_err(|e| raise(py, e.into()))?;
        node_obj(py, &self.seg, n)
    }

    /// The task's UUID.
    #[getter]
    fn task_id(&self, py: Python<'_>) -> PyResult<String> {
        let n = self.seg.read(self.held.current().task).map_err(|e| raise(py, e.into()))?;
        Ok(n.uuid().to_string())
    }

    /// The fencing epoch this claim was given.
    #[getter]
    fn epoch(&self) -> u64 {
        self.held.current().epoch
    }

    /// When the lease ends, Unix milliseconds (renewals move it).
    #[getter]
    fn lease_until_ms(&self) -> u64 {
        self.held.current().lease_until_ms
    }

    /// Whether the claim is still held (not completed, failed, released or lost).
    #[getter]
    fn held(&self) -> bool {
        !self.held.done.load(Ordering::Acquire)
    }

    /// Reports progress (0 to 100) with an optional short note; extends the lease.
    #[pyo3(signature = (pct, note=None))]
    fn progress(&self, py: Python<'_>, pct: Int, note: Option<String>) -> PyResult<Py<Node>> {
        let seg = &self.seg;
        let n = detached(py, || {
            let pct = pct.within(0, 100, "progress")? as u8;
            self.live()?;
            let mut guard = lock(&self.held.claim);
            let n = seg.progress_noted(&guard, pct, note.as_deref().unwrap_or(""))?;
            guard.lease_until_ms = n.lease_until_ms();
            Ok(n)
        })?;
        node_obj(py, seg, n)
    }

    /// Completes the task (with an optional short note); the claim ends.
    #[pyo3(signature = (note=None))]
    fn complete(&self, py: Python<'_>, note: Option<String>) -> PyResult<Py<Node>> {
        self.outcome(py, |seg, c| seg.complete(c, note.as_deref().unwrap_or("")))
    }

    /// Fails the task with a short reason; the claim ends.
    fn fail(&self, py: Python<'_>, reason: String) -> PyResult<Py<Node>> {
        self.outcome(py, |seg, c| seg.fail(c, &reason))
    }

    /// Gives the task back (ready again for others); the claim ends.
    fn release(&self, py: Python<'_>) -> PyResult<Py<Node>> {
        self.outcome(py, |seg, c| seg.release(c))
    }

    /// Renews the lease now (for `lease` seconds, default the claim's own).
    #[pyo3(signature = (lease=None))]
    fn renew(&self, py: Python<'_>, lease: Option<Secs>) -> PyResult<()> {
        let seg = &self.seg;
        detached(py, || {
            let lease = match &lease {
                Some(s) => seconds(s, wn::duration::lease, "lease")?,
                None => self.held.lease,
            };
            self.live()?;
            let mut guard = lock(&self.held.claim);
            *guard = seg.renew(&guard, lease)?;
            Ok(())
        })
    }

    /// Starts renewing the lease in the background (see the module docs).
    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        let me = slf.get();
        if me.held() {
            me.renewer.add(Arc::clone(&me.held)).map_err(|e| raise(slf.py(), e))?;
        }
        Ok(slf)
    }

    /// Stops renewing. A task still held is released on a normal exit; on an exception it
    /// is failed (reason: the exception) or released, as `on_error` chose. Exceptions
    /// are never swallowed.
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: &Bound<'_, PyAny>,
        exc: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        self.renewer.remove(&self.held);
        if !self.held() {
            return Ok(false);
        }
        if exc_type.is_none() {
            self.release(py)?;
            return Ok(false);
        }
        // The block's exception is what the caller sees: a failure to record the outcome
        // (the lease lapsed meanwhile, say) is secondary and not raised over it.
        let _ = match self.on_error {
            OnError::Release => self.release(py),
            OnError::Fail => {
                let name: String = exc_type.getattr("__name__").and_then(|n| n.extract()).unwrap_or_default();
                let text = exc.str().map(|s| s.to_string()).unwrap_or_default();
                let mut reason = if text.is_empty() { name.clone() } else { format!("{name}: {text}") };
                truncate(&mut reason, worknode::NOTE_MAX);
                // The limit counts the text as JSON writes it (a quote counts 2): a
                // reason cut by bytes may still be refused. Then the class name alone,
                // then a release: the task must never stay claimed by a block that left.
                self.fail(py, reason)
                    .or_else(|_| {
                        let mut short = name;
                        truncate(&mut short, 32);
                        self.fail(py, short)
                    })
                    .or_else(|_| self.release(py))
            }
        };
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let c = self.held.current();
        let uuid = self.seg.read(c.task).map(|n| n.uuid().to_string()).unwrap_or_else(|_| c.task.to_string());
        format!("Claim({uuid} epoch {} {})", c.epoch, if self.held() { "held" } else { "ended" })
    }
}
