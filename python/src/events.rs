//! `Event` (one event copied out of the ring) and `Events` (a cursor over the ring: an
//! iterator, and `next(timeout=)`), waiting on the ring's futex without the GIL.

use crate::args::{lock, raise, seconds, Secs};
use crate::owned::OwnedReader;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use worknode::{EventKind, Segment, Wait};

/// How long one piece of an unbounded wait lasts before Python's signals are checked
/// (so Ctrl-C interrupts an `events` loop).
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// One event, copied out of the ring.
#[pyclass(frozen, module = "worknode._native")]
pub struct Event {
    seg: Arc<Segment>,
    e: worknode::Event,
}

impl Event {
    pub fn new(seg: &Arc<Segment>, e: worknode::Event) -> Event {
        Event { seg: Arc::clone(seg), e }
    }
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
        crate::node::to_py(py, &wn::cmd::events::event_json(&self.seg, &self.e))
    }

    fn __repr__(&self) -> String {
        format!("Event({} {} node {})", self.e.seq(), self.e.kind(), self.node().unwrap_or_else(|| "-".into()))
    }
}

/// A cursor over the event ring: an iterator, and `next(timeout=)`.
#[pyclass(frozen, module = "worknode._native")]
pub struct Events {
    reader: Mutex<OwnedReader>,
    /// Kinds selected when more than one was given (one is filtered by the reader).
    kinds: Vec<EventKind>,
}

impl Events {
    pub fn new(reader: OwnedReader, kinds: Vec<EventKind>) -> Events {
        Events { reader: Mutex::new(reader), kinds }
    }

    /// The next selected event within `timeout` (None: without bound), or None. The
    /// deadline and Python's signals are checked after every piece of the wait and
    /// every event passed over, so a stream of unselected events cannot hold it.
    fn next_within(&self, py: Python<'_>, timeout: Option<Duration>) -> PyResult<Option<Py<Event>>> {
        let deadline = timeout.map(wn::duration::deadline);
        loop {
            let slice = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()).min(WAIT_SLICE),
                None => WAIT_SLICE,
            };
            let got = py.detach(|| {
                let mut r = lock(&self.reader);
                r.with_dependent_mut(|seg, r| r.next(Wait::SpinThenPark, slice).map(|e| (Arc::clone(seg), e)))
            });
            match got {
                Ok((seg, e)) if self.kinds.len() <= 1 || self.kinds.contains(&e.kind()) => {
                    return Py::new(py, Event { seg, e }).map(Some)
                }
                Ok(_) | Err(worknode::RingError::Timeout) => {}
                Err(e) => return Err(raise(py, e.into())),
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
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
    fn next(&self, py: Python<'_>, timeout: Option<Secs>) -> PyResult<Option<Py<Event>>> {
        let t = timeout.map(|s| seconds(&s, wn::duration::timeout, "timeout")).transpose().map_err(|e| raise(py, e))?;
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
    fn position(&self, py: Python<'_>) -> u64 {
        // Another thread may be waiting in `next` with the cursor locked: wait for it
        // without the GIL.
        py.detach(|| lock(&self.reader).borrow_dependent().position())
    }
}
