//! `worknode._native`: the Python SDK's extension module, a thin PyO3 binding over the
//! agent handle ([`worknode::Segment`]).
//!
//! Every method is a few lines over one library call, with the CLI's own pieces from the
//! `wn` library: nodes are named by [`wn::resolve::node`] (UUID, unique prefix, `/path`)
//! and every error becomes a [`Fail`] (code, hint, exit code) before it is raised as the
//! matching `worknode.Error` subclass (`worknode/_errors.py` picks the class from the
//! exit code). The pure-Python layer (`worknode/__init__.py`) adds `connect`, the
//! exceptions and the asyncio client.
//!
//! * **The GIL**: every call that can wait (a blocking claim, an event wait, a write
//!   that may wait for the journal, a seqlock retry) runs inside `Python::detach`, so
//!   other Python threads run meanwhile. Node reads are a copy of a few hundred bytes and
//!   keep the GIL (detaching would cost more than the read).
//! * **The mapping** is leaked to `'static`, as `wn mcp` does: claims, event readers and
//!   the lease renewer borrow it from other threads. A `Client` is meant to live as long
//!   as its process; `close()` ends its session, the mapping stays until exit.
//! * **The session**: a client that names an agent opens a session
//!   ([`worknode::Segment::open_session`]), so the daemon releases its claims at once
//!   when the process dies, even by `SIGKILL`.
//! * **Lease renewal**: while a `Claim` is held in a `with` block, one Rust thread per
//!   client (started on first use) renews its lease when a third of it has run, with no
//!   Python code and no GIL involved.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use wn::fail::{exit, Fail};
use wn::resolve;
use worknode::{AgentId, EventKind, Filter, Handle, Query, Reader, Segment, Session, Start, Status, TaskFilter, Wait};

/// How long one piece of an unbounded wait lasts before Python's signals are checked
/// (so Ctrl-C interrupts an `events` loop).
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// Locks a mutex, taking the data even if a panicking thread poisoned it (the data is
/// a claim copy or a list: never left half-written).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A failure raised as the `worknode.Error` subclass of its exit code.
fn raise(py: Python<'_>, f: Fail) -> PyErr {
    let details = f.details.as_ref().map(Value::to_string);
    let made = py
        .import("worknode._errors")
        .and_then(|m| m.getattr("_from_native"))
        .and_then(|c| c.call1((f.code, f.exit, f.message, f.hint, details)));
    match made {
        Ok(e) => PyErr::from_value(e),
        Err(e) => e,
    }
}

/// Runs `f` without the GIL and raises its failure.
fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> Result<T, Fail> + Send) -> PyResult<T> {
    py.detach(f).map_err(|e| raise(py, e))
}

/// Bad input from Python (exit 2, `worknode.InvalidInput`).
fn usage(message: impl Into<String>, hint: impl Into<String>) -> Fail {
    Fail::usage(message, hint).with_code("invalid_input")
}

/// Seconds from Python, checked against the CLI's bounds for the same flag.
fn seconds(s: f64, parse: fn(&str) -> Result<Duration, String>, what: &str) -> Result<Duration, Fail> {
    if !s.is_finite() || s < 0.0 {
        return Err(usage(format!("{what} must be a finite number of seconds >= 0, not {s}"), "for example 30 or 0.5"));
    }
    parse(&format!("{}ms", (s * 1000.0).round() as u64))
        .map_err(|e| usage(format!("{what}: {e}"), "timeouts are 0 to 86400 seconds, leases 0.001 seconds to 30 days"))
}

fn kind(text: &str) -> Result<worknode::NodeKind, Fail> {
    text.parse::<worknode::NodeKind>().map_err(|_| {
        let all: Vec<&str> = worknode::NodeKind::ALL.iter().map(|k| k.as_str()).collect();
        usage(format!("unknown kind {text:?}"), format!("one of: {}", all.join(", ")))
    })
}

fn status(text: &str) -> Result<Status, Fail> {
    text.parse::<Status>().map_err(|_| {
        let all: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
        usage(format!("unknown status {text:?}"), format!("one of: {}", all.join(", ")))
    })
}

/// A JSON value (the CLI's shapes) as Python objects.
fn to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u.into_pyobject(py)?.into_any(),
            (None, Some(i)) => i.into_pyobject(py)?.into_any(),
            _ => n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any(),
        },
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(a) => {
            let l = PyList::empty(py);
            for x in a {
                l.append(to_py(py, x)?)?;
            }
            l.into_any()
        }
        Value::Object(o) => {
            let d = PyDict::new(py);
            for (k, x) in o {
                d.set_item(k, to_py(py, x)?)?;
            }
            d.into_any()
        }
    })
}

/// A node argument: a `Node` (its handle, no lookup) or a name the CLI accepts.
fn handle_of(seg: &Segment, node: &Bound<'_, PyAny>) -> Result<Handle, Fail> {
    if let Ok(n) = node.cast::<Node>() {
        return Ok(n.get().n.handle());
    }
    match node.extract::<String>() {
        Ok(s) => resolve::node(seg, &s),
        Err(_) => Err(usage("a node is named by a str (UUID, unique prefix or /path) or a Node", "")),
    }
}

/// A snapshot of one node, copied out of the segment.
#[pyclass(frozen, module = "worknode._native")]
pub struct Node {
    seg: &'static Segment,
    n: worknode::Node,
}

fn node_obj(py: Python<'_>, seg: &'static Segment, n: worknode::Node) -> PyResult<Py<Node>> {
    Py::new(py, Node { seg, n })
}

#[pymethods]
impl Node {
    /// The node's UUID, as text.
    #[getter]
    fn id(&self) -> String {
        self.n.uuid().to_string()
    }

    /// Its name.
    #[getter]
    fn name(&self) -> &str {
        self.n.name()
    }

    /// Its kind (`task`, `project`, `document`, …).
    #[getter]
    fn kind(&self) -> String {
        wn::output::kind_text(&self.n)
    }

    /// Its status (`pending`, `ready`, `claimed`, `in_progress`, `complete`, `failed`,
    /// `blocked`, …), or None for a node without one.
    #[getter]
    fn status(&self) -> Option<&'static str> {
        self.n.status().map(Status::as_str)
    }

    /// Progress, 0 to 100.
    #[getter]
    fn progress(&self) -> u8 {
        self.n.progress()
    }

    /// Priority, 0 to 255 (highest claimed first).
    #[getter]
    fn priority(&self) -> u8 {
        self.n.priority()
    }

    /// Its description (a document's media type).
    #[getter]
    fn description(&self) -> &str {
        self.n.description()
    }

    /// Its numeric value.
    #[getter]
    fn value(&self) -> f64 {
        self.n.value()
    }

    /// Its record version (bumped by every change).
    #[getter]
    fn version(&self) -> u64 {
        self.n.version()
    }

    /// The fencing epoch of its latest claim.
    #[getter]
    fn epoch(&self) -> u64 {
        self.n.claim_epoch()
    }

    /// The parent's UUID (None for the root).
    #[getter]
    fn parent(&self) -> Option<String> {
        let p = self.n.parent()?;
        self.seg.read(p).ok().map(|p| p.uuid().to_string())
    }

    /// Its path from the root.
    #[getter]
    fn path(&self) -> String {
        resolve::path_of(self.seg, self.n.handle())
    }

    /// Whom it is assigned to: agents' names and `@role`s.
    #[getter]
    fn assignees(&self) -> Vec<String> {
        let names = wn::output::Names::load(self.seg);
        self.n.assignees().map(|a| names.principal(a)).collect()
    }

    /// The claim on it as a dict (`agent`, `agent_slot`, `epoch`, `lease_until_ms`,
    /// `live`), or None.
    #[getter]
    fn claim<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.json()["claim"])
    }

    /// What a task keeps of its history (`attempts`, `claimed_ms`, `finished_ms`,
    /// `finished_by`, `note`, …) as a dict; None for other kinds.
    #[getter]
    fn record<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.json()["record"])
    }

    /// Every field, as `wn show --json` prints it.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.json())
    }

    fn __repr__(&self) -> String {
        format!(
            "Node({} {} {} {:?})",
            self.n.uuid(),
            wn::output::kind_text(&self.n),
            self.n.status().map_or("-", Status::as_str),
            self.n.name()
        )
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<Node>().is_ok_and(|o| o.get().n.uuid() == self.n.uuid() && o.get().n.version() == self.n.version())
    }

    fn __hash__(&self) -> u64 {
        self.n.uuid().as_u64_pair().0 ^ self.n.version()
    }
}

impl Node {
    fn json(&self) -> Value {
        let path = resolve::path_of(self.seg, self.n.handle());
        wn::output::node_json(self.seg, &self.n, &wn::output::Names::load(self.seg), Some(&path))
    }
}

/// A claim's live state, shared by its `Claim` object, the client's table and the
/// renewer thread.
struct Held {
    claim: Mutex<worknode::Claim>,
    /// The lease asked for: what every renewal asks again.
    lease: Duration,
    /// Completed, failed or released (or lost): nothing more is done with it.
    done: AtomicBool,
    /// Why background renewal stopped, if it failed.
    lost: Mutex<Option<String>>,
}

impl Held {
    fn current(&self) -> worknode::Claim {
        *lock(&self.claim)
    }
}

/// The client's lease renewer: one thread, renewing the claims held in `with` blocks.
struct Renewer {
    seg: &'static Segment,
    state: Mutex<RenewState>,
    wake: Condvar,
}

#[derive(Default)]
struct RenewState {
    held: Vec<Arc<Held>>,
    started: bool,
    stop: bool,
}

impl Renewer {
    fn add(self: &Arc<Self>, h: Arc<Held>) -> Result<(), Fail> {
        let mut st = lock(&self.state);
        if !st.held.iter().any(|x| Arc::ptr_eq(x, &h)) {
            st.held.push(h);
        }
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

    fn stop(&self) {
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
            let now = worknode::unix_ms();
            let mut next_due = u64::MAX;
            for h in &st.held {
                if h.done.load(Ordering::Acquire) {
                    continue;
                }
                let lease_ms = h.lease.as_millis() as u64;
                let mut c = lock(&h.claim);
                let due = c.lease_until_ms.saturating_sub(lease_ms.saturating_mul(2) / 3);
                if due > now {
                    next_due = next_due.min(due);
                    continue;
                }
                match self.seg.renew(&c, h.lease) {
                    Ok(nc) => {
                        *c = nc;
                        next_due = next_due.min(nc.lease_until_ms.saturating_sub(lease_ms.saturating_mul(2) / 3));
                    }
                    Err(e) => {
                        *lock(&h.lost) = Some(Fail::from(e).message);
                        h.done.store(true, Ordering::Release);
                    }
                }
            }
            st.held.retain(|h| !h.done.load(Ordering::Acquire));
            let wait = if next_due == u64::MAX {
                Duration::from_secs(3600)
            } else {
                Duration::from_millis(next_due.saturating_sub(worknode::unix_ms()).max(1))
            };
            st = self.wake.wait_timeout(st, wait).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

/// What leaving a `with claim:` block by an exception does to a task still held.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnError {
    Fail,
    Release,
}

fn on_error(text: &str) -> Result<OnError, Fail> {
    match text {
        "fail" => Ok(OnError::Fail),
        "release" => Ok(OnError::Release),
        _ => Err(usage(format!("on_error must be \"fail\" or \"release\", not {text:?}"), "")),
    }
}

/// A claim on one task: its fencing epoch and lease, presented with every write.
#[pyclass(frozen, module = "worknode._native")]
pub struct Claim {
    seg: &'static Segment,
    held: Arc<Held>,
    claims: Arc<Mutex<HashMap<Handle, Arc<Held>>>>,
    renewer: Arc<Renewer>,
    on_error: OnError,
}

impl Claim {
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
    /// or when the claim is gone anyway.
    fn outcome(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&Segment, &worknode::Claim) -> Result<worknode::Node, Fail> + Send,
    ) -> PyResult<Py<Node>> {
        let seg = self.seg;
        let r = detached(py, || {
            self.live()?;
            // Holding the claim's lock keeps the renewer from renewing it meanwhile.
            let guard = lock(&self.held.claim);
            f(seg, &guard)
        });
        match &r {
            Ok(_) => self.finish(),
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyException>(py) => {
                let code: Option<String> = e.value(py).getattr("code").and_then(|c| c.extract()).ok();
                if matches!(code.as_deref(), Some("stale_epoch" | "lease_expired" | "not_claimant" | "lease_lost")) {
                    self.finish();
                }
            }
            Err(_) => {}
        }
        node_obj(py, seg, r?)
    }
}

#[pymethods]
impl Claim {
    /// The claimed task, read now.
    #[getter]
    fn task(&self, py: Python<'_>) -> PyResult<Py<Node>> {
        let n = self.seg.read(self.held.current().task).map_err(|e| raise(py, e.into()))?;
        node_obj(py, self.seg, n)
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
    fn progress(&self, py: Python<'_>, pct: i64, note: Option<String>) -> PyResult<Py<Node>> {
        let seg = self.seg;
        let n = detached(py, || {
            let pct = u8::try_from(pct)
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| usage(format!("progress {pct} is out of range"), "give 0 to 100"))?;
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
        self.outcome(py, |seg, c| Ok(seg.complete(c, note.as_deref().unwrap_or(""))?))
    }

    /// Fails the task with a short reason; the claim ends.
    fn fail(&self, py: Python<'_>, reason: String) -> PyResult<Py<Node>> {
        self.outcome(py, |seg, c| Ok(seg.fail(c, &reason)?))
    }

    /// Gives the task back (ready again for others); the claim ends.
    fn release(&self, py: Python<'_>) -> PyResult<Py<Node>> {
        self.outcome(py, |seg, c| Ok(seg.release(c)?))
    }

    /// Renews the lease now (for `lease` seconds, default the claim's own).
    #[pyo3(signature = (lease=None))]
    fn renew(&self, py: Python<'_>, lease: Option<f64>) -> PyResult<()> {
        let seg = self.seg;
        detached(py, || {
            let lease = match lease {
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

/// Cuts `s` to at most `max` bytes, on a character boundary.
fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// One event, copied out of the ring.
#[pyclass(frozen, module = "worknode._native")]
pub struct Event {
    seg: &'static Segment,
    e: worknode::Event,
}

#[pymethods]
impl Event {
    /// Its sequence number in the ring (the exact cursor within one host).
    #[getter]
    fn seq(&self) -> u64 {
        self.e.seq()
    }

    /// Its kind's name (`task_claimed`, `node_updated`, … or a number for an
    /// application kind).
    #[getter]
    fn kind(&self) -> String {
        self.e.kind().to_string()
    }

    /// The UUID of the node it is about, if any.
    #[getter]
    fn node(&self) -> Option<String> {
        self.e.node().map(|u| u.to_string())
    }

    /// The node's record version the event produced.
    #[getter]
    fn node_version(&self) -> u64 {
        self.e.node_version()
    }

    /// The acting agent's name, if an agent acted (and has not left since).
    #[getter]
    fn actor(&self) -> Option<String> {
        self.e.actor().and_then(|a| self.seg.read(a).ok()).map(|a| a.name().to_string())
    }

    /// Its topic (application events).
    #[getter]
    fn topic(&self) -> &str {
        self.e.topic()
    }

    /// Its inline payload.
    #[getter]
    fn payload<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.e.payload())
    }

    /// Its hybrid logical clock stamp.
    #[getter]
    fn hlc(&self) -> u64 {
        self.e.hlc().0
    }

    /// Every field, as `wn events --json` prints it.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &wn::cmd::events::event_json(self.seg, &self.e))
    }

    fn __repr__(&self) -> String {
        format!("Event({} {} node {})", self.e.seq(), self.e.kind(), self.node().unwrap_or_else(|| "-".into()))
    }
}

/// A cursor over the event ring: an iterator, and `next(timeout=)`.
#[pyclass(frozen, module = "worknode._native")]
pub struct Events {
    seg: &'static Segment,
    reader: Mutex<Reader<'static>>,
    /// Kinds selected when more than one was given (one is filtered by the reader).
    kinds: Vec<EventKind>,
}

impl Events {
    /// The next selected event within `timeout` (None: without bound), or None.
    fn next_within(&self, py: Python<'_>, timeout: Option<Duration>) -> PyResult<Option<Py<Event>>> {
        let deadline = timeout.map(wn::duration::deadline);
        loop {
            let slice = match deadline {
                Some(d) => d.saturating_duration_since(std::time::Instant::now()).min(WAIT_SLICE),
                None => WAIT_SLICE,
            };
            let got = py.detach(|| {
                let mut r = lock(&self.reader);
                r.next(Wait::SpinThenPark, slice)
            });
            match got {
                Ok(e) if self.kinds.len() <= 1 || self.kinds.contains(&e.kind()) => {
                    return Py::new(py, Event { seg: self.seg, e }).map(Some)
                }
                Ok(_) => continue,
                Err(worknode::RingError::Timeout) => {}
                Err(e) => return Err(raise(py, e.into())),
            }
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Ok(None);
            }
            py.check_signals()?;
        }
    }
}

#[pymethods]
impl Events {
    /// The next event, waiting up to `timeout` seconds (None: until one comes); None
    /// when the timeout passes. Raises `worknode.Timeout` (code `lagged`) when the
    /// reader fell a ring's length behind (it then continues at the oldest event kept).
    #[pyo3(signature = (timeout=None))]
    fn next(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<Event>>> {
        let t = timeout.map(|s| seconds(s, wn::duration::timeout, "timeout")).transpose().map_err(|e| raise(py, e))?;
        self.next_within(py, t)
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<Event>>> {
        self.next_within(py, None)
    }

    /// The sequence number of the next event this cursor reads.
    #[getter]
    fn position(&self) -> u64 {
        lock(&self.reader).position()
    }
}

/// A connection to a segment: the agent handle, and the agent's session.
#[pyclass(frozen, module = "worknode._native")]
pub struct Client {
    seg: &'static Segment,
    me: Option<AgentId>,
    agent: Option<String>,
    session: Mutex<Option<Session<'static>>>,
    claims: Arc<Mutex<HashMap<Handle, Arc<Held>>>>,
    renewer: Arc<Renewer>,
}

impl Client {
    fn me(&self) -> Result<AgentId, Fail> {
        self.me.ok_or_else(|| {
            Fail::new(
                "agent_required",
                exit::USAGE,
                "this call acts as an agent, and the client names none",
                "connect with agent=NAME (or set WORKNODE_AGENT=NAME)",
            )
        })
    }

    fn claim_obj(&self, py: Python<'_>, c: worknode::Claim, lease: Duration, on_error: OnError) -> PyResult<Py<Claim>> {
        let held = Arc::new(Held { claim: Mutex::new(c), lease, done: AtomicBool::new(false), lost: Mutex::new(None) });
        lock(&self.claims).insert(c.task, Arc::clone(&held));
        Py::new(
            py,
            Claim {
                seg: self.seg,
                held,
                claims: Arc::clone(&self.claims),
                renewer: Arc::clone(&self.renewer),
                on_error,
            },
        )
    }

    fn nodes(&self, py: Python<'_>, found: Vec<worknode::Node>) -> PyResult<Vec<Py<Node>>> {
        found.into_iter().map(|n| node_obj(py, self.seg, n)).collect()
    }
}

impl Drop for Client {
    /// Stops the renewer thread; dropping the session (if `close` was not called) makes
    /// the agent leave.
    fn drop(&mut self) {
        self.renewer.stop();
    }
}

/// A list of names from a str or a sequence of str.
fn names(v: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    match v {
        None => Ok(Vec::new()),
        Some(v) if v.is_none() => Ok(Vec::new()),
        Some(v) => match v.extract::<String>() {
            Ok(s) => Ok(vec![s]),
            Err(_) => {
                v.extract::<Vec<String>>().map_err(|_| PyTypeError::new_err("expected a str or a sequence of str"))
            }
        },
    }
}

#[pymethods]
impl Client {
    /// Attaches to `segment` (read-write); with `agent` (or a token) acts as that agent
    /// and holds its session. `worknode.connect` fills the defaults from the environment.
    #[new]
    #[pyo3(signature = (segment, agent=None, role=None, token=None))]
    fn new(
        py: Python<'_>,
        segment: String,
        agent: Option<String>,
        role: Option<String>,
        token: Option<String>,
    ) -> PyResult<Client> {
        let ctx = wn::ctx::Ctx {
            segment,
            agent: agent.filter(|a| !a.is_empty()),
            role: role.clone().unwrap_or_else(|| "worker".to_string()),
            role_given: role.is_some(),
            json: true,
            style: wn::output::Style { color: false },
            data_dir: None,
            token: token.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()),
        };
        detached(py, || {
            // The mapping lives as long as the process (see the module docs).
            let seg: &'static Segment = Box::leak(Box::new(ctx.attach_rw()?));
            let name = seg.grant().map(|g| g.agent().to_string()).or_else(|| ctx.agent.clone());
            let session = match &name {
                Some(n) => Some(seg.open_session(n, &ctx.role)?),
                None => None,
            };
            let me = session.as_ref().map(Session::id);
            let renewer = Arc::new(Renewer { seg, state: Mutex::new(RenewState::default()), wake: Condvar::new() });
            Ok(Client {
                seg,
                me,
                agent: name,
                session: Mutex::new(session),
                claims: Arc::new(Mutex::new(HashMap::new())),
                renewer,
            })
        })
    }

    /// The segment's name.
    #[getter]
    fn segment(&self) -> &str {
        self.seg.name()
    }

    /// The agent this client acts as, if any.
    #[getter]
    fn agent(&self) -> Option<&str> {
        self.agent.as_deref()
    }

    /// Whether the daemon watches this client's session (its claims are released when
    /// the process dies).
    #[getter]
    fn watched(&self) -> bool {
        lock(&self.session).as_ref().is_some_and(Session::watched_by_daemon)
    }

    /// Ends the session: the agent leaves, its claims and reservations are released.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.renewer.stop();
        let s = lock(&self.session).take();
        detached(py, || match s {
            Some(s) => Ok(s.leave()?),
            None => Ok(()),
        })
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _t: &Bound<'_, PyAny>,
        _v: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    /// Creates a task under `parent` (ready, or pending while a blocker is open) and
    /// returns it.
    #[pyo3(signature = (name, parent="/", blocked_by=None, assignee=None, priority=0, desc="", kind="task", status="ready"))]
    #[allow(clippy::too_many_arguments)]
    fn add_task(
        &self,
        py: Python<'_>,
        name: String,
        parent: &str,
        blocked_by: Option<&Bound<'_, PyAny>>,
        assignee: Option<&Bound<'_, PyAny>>,
        priority: i64,
        desc: &str,
        kind: &str,
        status: &str,
    ) -> PyResult<Py<Node>> {
        let blocked_by = names(blocked_by)?;
        let assignee = names(assignee)?;
        let seg = self.seg;
        let n = detached(py, || {
            let priority = u8::try_from(priority)
                .map_err(|_| usage(format!("priority {priority} is out of range"), "give 0 to 255"))?;
            if status != "ready" && status != "pending" {
                return Err(usage(format!("a new task is ready or pending, not {status:?}"), ""));
            }
            let args = wn::cmd::nodes::AddArgs {
                kind: self::kind(kind)?,
                name,
                parent: Some(parent.to_string()),
                desc: Some(desc.to_string()),
                priority: u64::from(priority),
                value: 0.0,
                blocked_by,
                assignee,
                status: status.to_string(),
                if_absent: false,
            };
            wn::cmd::nodes::add(seg, &args).map_err(|f| f.name_changed_node(seg))
        })?;
        node_obj(py, seg, n)
    }

    /// The node named `node` (UUID, unique prefix, /path, or a Node to read again).
    fn show(&self, py: Python<'_>, node: &Bound<'_, PyAny>) -> PyResult<Py<Node>> {
        // A read is a copy of a few hundred bytes: it keeps the GIL (see the module docs).
        let seg = self.seg;
        let n = handle_of(seg, node).and_then(|h| Ok(seg.read(h)?)).map_err(|f| raise(py, f))?;
        node_obj(py, seg, n)
    }

    /// Nodes matching every filter given (at most `limit`).
    #[pyo3(signature = (under=None, status=None, label=None, kind=None, assignee=None, limit=1000))]
    #[allow(clippy::too_many_arguments)]
    fn ls(
        &self,
        py: Python<'_>,
        under: Option<String>,
        status: Option<String>,
        label: Option<String>,
        kind: Option<String>,
        assignee: Option<String>,
        limit: usize,
    ) -> PyResult<Vec<Py<Node>>> {
        let seg = self.seg;
        let found = detached(py, || {
            let q = Query {
                kind: kind.as_deref().map(self::kind).transpose()?,
                status: status.as_deref().map(self::status).transpose()?,
                assignee: assignee.as_deref().map(wn::ctx::principal).transpose()?.map(|p| p.key()),
                under: under.as_deref().map(|u| resolve::node(seg, u)).transpose()?,
                label: label.as_deref().map(wn::cmd::labels::label_key).transpose()?,
                limit,
                ..Query::default()
            };
            let mut found = Vec::new();
            seg.query(&q, &mut found)?;
            Ok(found)
        })?;
        self.nodes(py, found)
    }

    /// Tasks that could be claimed now, best first (as `claim_next` would pick them).
    #[pyo3(signature = (kind=None, under=None, mine=false, label=None, limit=100))]
    fn ready(
        &self,
        py: Python<'_>,
        kind: Option<String>,
        under: Option<String>,
        mine: bool,
        label: Option<String>,
        limit: usize,
    ) -> PyResult<Vec<Py<Node>>> {
        let seg = self.seg;
        let found = detached(py, || {
            let f = self.filter(kind.as_deref(), under.as_deref(), mine, label.as_deref())?;
            let mut found = Vec::new();
            seg.ready(&f, limit, &mut found)?;
            Ok(found)
        })?;
        self.nodes(py, found)
    }

    /// Claims `node` for `lease` seconds.
    #[pyo3(signature = (node, lease=600.0, on_error="fail"))]
    fn claim(&self, py: Python<'_>, node: &Bound<'_, PyAny>, lease: f64, on_error: &str) -> PyResult<Py<Claim>> {
        let seg = self.seg;
        let h = handle_of(seg, node).map_err(|f| raise(py, f))?;
        let (c, lease, oe) = detached(py, || {
            let oe = self::on_error(on_error)?;
            let lease = seconds(lease, wn::duration::lease, "lease")?;
            Ok((seg.claim(h, self.me()?, lease)?, lease, oe))
        })?;
        self.claim_obj(py, c, lease, oe)
    }

    /// Claims the best ready task matching the filters, or returns None when there is
    /// none; with `block`, waits up to that many seconds for one (a futex wait).
    #[pyo3(signature = (kind=None, under=None, mine=false, label=None, block=None, lease=600.0, on_error="fail"))]
    #[allow(clippy::too_many_arguments)]
    fn claim_next(
        &self,
        py: Python<'_>,
        kind: Option<String>,
        under: Option<String>,
        mine: bool,
        label: Option<String>,
        block: Option<f64>,
        lease: f64,
        on_error: &str,
    ) -> PyResult<Option<Py<Claim>>> {
        let seg = self.seg;
        let got = detached(py, || {
            let oe = self::on_error(on_error)?;
            let f = self.filter(kind.as_deref(), under.as_deref(), mine, label.as_deref())?;
            let lease = seconds(lease, wn::duration::lease, "lease")?;
            let me = self.me()?;
            let r = match block {
                Some(w) => seg.claim_next_wait(&f, me, lease, seconds(w, wn::duration::timeout, "block")?),
                None => seg.claim_next(&f, me, lease),
            };
            match r {
                Ok(c) => Ok(Some((c, lease, oe))),
                Err(worknode::TaskError::NothingReady | worknode::TaskError::WaitTimedOut) => Ok(None),
                Err(e) => Err(e.into()),
            }
        })?;
        got.map(|(c, lease, oe)| self.claim_obj(py, c, lease, oe)).transpose()
    }

    /// Stores `data` (bytes or str) as document `name` under `node`, replacing one of
    /// that name; under a claim this client holds, through it (the lease is renewed).
    #[pyo3(signature = (node, name, data, content_type=None))]
    fn doc_put(
        &self,
        py: Python<'_>,
        node: &Bound<'_, PyAny>,
        name: String,
        data: &Bound<'_, PyAny>,
        content_type: Option<String>,
    ) -> PyResult<Py<Node>> {
        let bytes: Vec<u8> = match data.extract::<String>() {
            Ok(s) => s.into_bytes(),
            Err(_) => data.extract::<Vec<u8>>().map_err(|_| PyTypeError::new_err("data must be bytes or str"))?,
        };
        let seg = self.seg;
        let parent = handle_of(seg, node).map_err(|f| raise(py, f))?;
        let held = lock(&self.claims).get(&parent).cloned().filter(|h| !h.done.load(Ordering::Acquire));
        let n = detached(py, || {
            let ct = content_type
                .unwrap_or_else(|| wn::cmd::docs::guess_type(Some(&std::path::PathBuf::from(&name)), &bytes));
            let doc = match &held {
                Some(h) => {
                    let mut guard = lock(&h.claim);
                    let d = wn::cmd::docs::put_bytes(seg, parent, &name, &ct, &bytes, Some(*guard))?;
                    guard.lease_until_ms = seg.read(parent)?.lease_until_ms();
                    d
                }
                None => wn::cmd::docs::put_bytes(seg, parent, &name, &ct, &bytes, None)?,
            };
            Ok(seg.read(doc)?)
        })?;
        node_obj(py, seg, n)
    }

    /// A document's bytes (named by UUID, unique prefix or /path).
    fn doc_get<'py>(&self, py: Python<'py>, path: &Bound<'_, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let seg = self.seg;
        let h = handle_of(seg, path).map_err(|f| raise(py, f))?;
        let bytes = detached(py, || {
            let mut out = Vec::new();
            seg.get_document(h, &mut out)?;
            Ok(out)
        })?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// A cursor over events: from sequence `since` (None: only events from now on),
    /// of the given kinds (names like `task_completed`; None: all), about `node`.
    #[pyo3(signature = (since=None, kinds=None, node=None))]
    fn events(
        &self,
        py: Python<'_>,
        since: Option<u64>,
        kinds: Option<&Bound<'_, PyAny>>,
        node: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Events> {
        let seg = self.seg;
        let kinds: Vec<EventKind> = names(kinds)?
            .iter()
            .map(|k| EventKind::parse(k).map_err(|e| usage(e, "")))
            .collect::<Result<_, _>>()
            .map_err(|f| raise(py, f))?;
        let node = node
            .map(|n| handle_of(seg, n).and_then(|h| Ok(seg.read(h)?.uuid())))
            .transpose()
            .map_err(|f| raise(py, f))?;
        let start = since.map_or(Start::Now, Start::At);
        let filter = Filter { kind: if kinds.len() == 1 { Some(kinds[0]) } else { None }, node, actor: None };
        Ok(Events { seg, reader: Mutex::new(seg.reader(start).with_filter(filter)), kinds })
    }

    /// Waits up to `timeout` seconds for the first event from now of one of `kinds`
    /// (any: None), about `node`; raises `worknode.Timeout` if none comes.
    #[pyo3(signature = (kinds=None, node=None, timeout=30.0))]
    fn wait(
        &self,
        py: Python<'_>,
        kinds: Option<&Bound<'_, PyAny>>,
        node: Option<String>,
        timeout: f64,
    ) -> PyResult<Py<Event>> {
        let kinds = names(kinds)?;
        let seg = self.seg;
        let e = detached(py, || {
            let t = seconds(timeout, wn::duration::timeout, "timeout")?;
            wn::cmd::events::wait_any(seg, &kinds, node.as_deref(), t)
        })?;
        Py::new(py, Event { seg, e })
    }

    /// Sends `text` to an agent (by name) or a role (`@role`); returns the message id.
    #[pyo3(signature = (to, text, thread=None))]
    fn send(&self, py: Python<'_>, to: String, text: &Bound<'_, PyAny>, thread: Option<String>) -> PyResult<String> {
        let body: Vec<u8> = match text.extract::<String>() {
            Ok(s) => s.into_bytes(),
            Err(_) => text.extract::<Vec<u8>>().map_err(|_| PyTypeError::new_err("text must be str or bytes"))?,
        };
        let seg = self.seg;
        detached(py, || {
            let to = wn::ctx::principal(&to)?;
            let h = seg.send(self.me()?, &to, thread.as_deref(), &body)?;
            Ok(seg.read_message(h)?.info.id)
        })
    }

    /// Unread messages (with `include_acked`, all kept), each a dict with `id`, `from`,
    /// `to`, `thread`, `text`, …; with `wait`, waits up to that many seconds for mail
    /// first; with `ack`, acknowledges what it returns.
    #[pyo3(signature = (wait=None, ack=false, include_acked=false))]
    fn inbox<'py>(
        &self,
        py: Python<'py>,
        wait: Option<f64>,
        ack: bool,
        include_acked: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let seg = self.seg;
        let list = detached(py, || {
            let me = self.me()?;
            if let Some(w) = wait {
                match seg.wait_for_mail(me, seconds(w, wn::duration::timeout, "wait")?) {
                    Ok(()) | Err(worknode::MailError::Timeout) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let mut mail = Vec::new();
            seg.inbox(me, include_acked, &mut mail)?;
            let mut list = Vec::new();
            for info in &mail {
                let Ok(m) = seg.read_message(info.handle) else { continue };
                let mut v = wn::cmd::mail::info_json(&m.info);
                v["text"] = Value::String(String::from_utf8_lossy(&m.body).into_owned());
                if ack && !m.info.acked {
                    seg.ack(me, info.handle)?;
                    v["acked"] = Value::Bool(true);
                }
                list.push(v);
            }
            Ok(Value::Array(list))
        })?;
        to_py(py, &list)
    }

    /// Reserves files by glob for `lease` seconds (exclusive unless `shared`); returns
    /// the reservation as a dict.
    #[pyo3(signature = (paths, lease=3600.0, shared=false, reason=""))]
    fn reserve<'py>(
        &self,
        py: Python<'py>,
        paths: &Bound<'_, PyAny>,
        lease: f64,
        shared: bool,
        reason: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let paths = names(Some(paths))?;
        let seg = self.seg;
        let v = detached(py, || {
            let globs: Vec<&str> = paths.iter().map(String::as_str).collect();
            let lease = seconds(lease, wn::duration::lease, "lease")?;
            let opts = worknode::ReserveOptions { lease, shared, reason: reason.to_string() };
            let r = seg.reserve(self.me()?, &globs, &opts)?;
            Ok(wn::cmd::reserve::reservation_json(seg, &r, reason))
        })?;
        to_py(py, &v)
    }

    /// Withdraws this agent's reservations of these globs (None: all); returns how many
    /// globs were withdrawn.
    #[pyo3(signature = (paths=None))]
    fn unreserve(&self, py: Python<'_>, paths: Option<&Bound<'_, PyAny>>) -> PyResult<u64> {
        let paths = names(paths)?;
        let seg = self.seg;
        detached(py, || {
            let globs: Vec<&str> = paths.iter().map(String::as_str).collect();
            Ok(seg.unreserve_matching(self.me()?, if globs.is_empty() { None } else { Some(&globs) })?)
        })
    }

    fn __repr__(&self) -> String {
        match &self.agent {
            Some(a) => format!("Client(segment={:?}, agent={a:?})", self.seg.name()),
            None => format!("Client(segment={:?})", self.seg.name()),
        }
    }
}

impl Client {
    fn filter(
        &self,
        kind: Option<&str>,
        under: Option<&str>,
        mine: bool,
        label: Option<&str>,
    ) -> Result<TaskFilter, Fail> {
        Ok(TaskFilter {
            kind: kind.map(self::kind).transpose()?,
            mine,
            under: under.map(|u| resolve::node(self.seg, u)).transpose()?,
            label: label.map(wn::cmd::labels::label_key).transpose()?,
            ..TaskFilter::default()
        })
    }
}

/// The default segment name (`WORKNODE_SEGMENT`, else the per-user default).
#[pyfunction]
fn default_segment() -> String {
    worknode::default_segment_name()
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Client>()?;
    m.add_class::<Node>()?;
    m.add_class::<Claim>()?;
    m.add_class::<Events>()?;
    m.add_class::<Event>()?;
    m.add_function(wrap_pyfunction!(default_segment, m)?)?;
    Ok(())
}
