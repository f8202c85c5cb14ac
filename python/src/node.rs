//! `Node`: a snapshot of one node copied out of the segment, with the CLI's JSON shape
//! (`to_dict`), and the conversions every method shares: a node argument to its handle,
//! a JSON value to Python objects.

use crate::args::usage;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use serde_json::Value;
use std::sync::Arc;
use wn::fail::Fail;
use wn::resolve;
use worknode::{Handle, Segment, Status};

/// A JSON value (the CLI's shapes) as Python objects.
pub fn to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
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
pub fn handle_of(seg: &Segment, node: &Bound<'_, PyAny>) -> Result<Handle, Fail> {
    if let Ok(n) = node.cast::<Node>() {
        return Ok(n.get().n.handle());
    }
    match node.extract::<String>() {
        Ok(s) => resolve::node(seg, &s),
        Err(_) => Err(usage(
            "a node is named by a str (UUID, unique prefix or /path) or a Node",
            "for example \"/project/task\"",
        )),
    }
}

/// A snapshot of one node, copied out of the segment.
#[pyclass(frozen, module = "worknode._native")]
pub struct Node {
    seg: Arc<Segment>,
    n: worknode::Node,
}

/// A `Node` object for a record read from `seg`.
pub fn node_obj(py: Python<'_>, seg: &Arc<Segment>, n: worknode::Node) -> PyResult<Py<Node>> {
    Py::new(py, Node { seg: Arc::clone(seg), n })
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
        resolve::path_of(&self.seg, self.n.handle())
    }

    /// Whom it is assigned to: agents' names and `@role`s.
    #[getter]
    fn assignees(&self) -> Vec<String> {
        let names = wn::output::Names::load(&self.seg);
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
    /// The node's handle in its segment.
    pub fn handle(&self) -> Handle {
        self.n.handle()
    }

    fn json(&self) -> Value {
        let path = resolve::path_of(&self.seg, self.n.handle());
        wn::output::node_json(&self.seg, &self.n, &wn::output::Names::load(&self.seg), Some(&path))
    }
}
