//! Arguments from Python, checked: every number, duration, name list and byte string a
//! method takes is converted here, and anything out of range or of the wrong type is a
//! `worknode.InvalidInput` naming the argument — never a bare `OverflowError` or
//! `TypeError`, never a bool taken for a number.
//!
//! Also the two ways out of Rust: [`raise`] (a [`Fail`] as its `worknode.Error`
//! subclass) and [`detached`] (a call without the GIL).

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyFloat, PyInt, PyString};
use serde_json::Value;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use wn::fail::Fail;
use worknode::{EventKind, NodeKind, Status};

/// Locks a mutex, taking the data even if a panicking thread poisoned it (the data is
/// a claim copy or a list: never left half-written).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A failure raised as the `worknode.Error` subclass of its exit code.
pub fn raise(py: Python<'_>, f: Fail) -> PyErr {
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
pub fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> Result<T, Fail> + Send) -> PyResult<T> {
    py.detach(f).map_err(|e| raise(py, e))
}

/// Bad input from Python (exit 2, `worknode.InvalidInput`).
pub fn usage(message: impl Into<String>, hint: impl Into<String>) -> Fail {
    Fail::usage(message, hint).with_code("invalid_input")
}

/// What a value is, for an error message: its type and a short repr.
fn describe(v: &Bound<'_, PyAny>) -> String {
    let ty = v.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "object".into());
    let mut repr = v.repr().map(|r| r.to_string()).unwrap_or_default();
    if repr.len() > 40 {
        truncate(&mut repr, 40);
        repr.push('…');
    }
    format!("{ty} {repr}")
}

/// A whole number as Python gave it, checked against its bounds by [`Int::within`]
/// (where the argument's name is known).
pub enum Int {
    /// An int that fits an `i64`.
    Value(i64),
    /// An int beyond `i64`.
    Huge,
    /// Not an int (a bool, a float, a str…), described.
    Wrong(String),
}

impl<'a, 'py> FromPyObject<'a, 'py> for Int {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if obj.is_instance_of::<PyBool>() || !obj.is_instance_of::<PyInt>() {
            return Ok(Int::Wrong(describe(&obj)));
        }
        Ok(obj.extract::<i64>().map_or(Int::Huge, Int::Value))
    }
}

impl Int {
    /// The value if it lies in `lo..=hi`; else `InvalidInput` naming `what`.
    pub fn within(&self, lo: i64, hi: i64, what: &str) -> Result<i64, Fail> {
        let range = format!("give a whole number from {lo} to {hi}");
        match self {
            Int::Value(v) if (lo..=hi).contains(v) => Ok(*v),
            Int::Value(v) => Err(usage(format!("{what} {v} is out of range"), range)),
            Int::Huge => Err(usage(format!("{what} is out of range"), range)),
            Int::Wrong(d) => Err(usage(format!("{what} must be an int, not {d}"), range)),
        }
    }
}

/// A number of seconds as Python gave it (an int or a float), checked by [`seconds`].
pub enum Secs {
    /// The number.
    Value(f64),
    /// Not a number (a bool, a str…), described.
    Wrong(String),
}

impl<'a, 'py> FromPyObject<'a, 'py> for Secs {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if obj.is_instance_of::<PyBool>() || !(obj.is_instance_of::<PyInt>() || obj.is_instance_of::<PyFloat>()) {
            return Ok(Secs::Wrong(describe(&obj)));
        }
        // An int too large for a float becomes infinity, refused below.
        Ok(obj.extract::<f64>().map_or(Secs::Value(f64::INFINITY), Secs::Value))
    }
}

/// Seconds from Python, checked against the CLI's bounds for the same flag.
pub fn seconds(s: &Secs, parse: fn(&str) -> Result<Duration, String>, what: &str) -> Result<Duration, Fail> {
    let s = match s {
        Secs::Value(s) => *s,
        Secs::Wrong(d) => {
            return Err(usage(format!("{what} must be a number of seconds, not {d}"), "for example 30 or 0.5"))
        }
    };
    if !s.is_finite() || s < 0.0 {
        return Err(usage(format!("{what} must be a finite number of seconds >= 0, not {s}"), "for example 30 or 0.5"));
    }
    if s > 1.0e9 {
        return Err(usage(
            format!("{what} of {s} seconds is out of range"),
            "timeouts are 0 to 86400 seconds, leases 0.001 seconds to 30 days",
        ));
    }
    parse(&format!("{}ms", (s * 1000.0).round() as u64))
        .map_err(|e| usage(format!("{what}: {e}"), "timeouts are 0 to 86400 seconds, leases 0.001 seconds to 30 days"))
}

/// Optional seconds (None: no bound or the default).
pub fn seconds_opt(
    s: Option<&Secs>,
    parse: fn(&str) -> Result<Duration, String>,
    what: &str,
) -> Result<Option<Duration>, Fail> {
    s.map(|s| seconds(s, parse, what)).transpose()
}

/// A node kind by name.
pub fn kind(text: &str) -> Result<NodeKind, Fail> {
    text.parse::<NodeKind>().map_err(|_| {
        let all: Vec<&str> = NodeKind::ALL.iter().map(|k| k.as_str()).collect();
        usage(format!("unknown kind {text:?}"), format!("one of: {}", all.join(", ")))
    })
}

/// A status by name.
pub fn status(text: &str) -> Result<Status, Fail> {
    text.parse::<Status>().map_err(|_| {
        let all: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
        usage(format!("unknown status {text:?}"), format!("one of: {}", all.join(", ")))
    })
}

/// Event kinds by name.
pub fn event_kinds(names: &[String]) -> Result<Vec<EventKind>, Fail> {
    names
        .iter()
        .map(|k| EventKind::parse(k).map_err(|e| usage(e, "names like task_completed or node_updated")))
        .collect()
}

/// A list of names from a str or a sequence of str (None: empty).
pub fn names(v: Option<&Bound<'_, PyAny>>, what: &str) -> Result<Vec<String>, Fail> {
    let Some(v) = v.filter(|v| !v.is_none()) else { return Ok(Vec::new()) };
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(vec![s.to_string()]);
    }
    v.extract::<Vec<String>>()
        .map_err(|_| usage(format!("{what} must be a str or a sequence of str, not {}", describe(v)), ""))
}

/// Bytes from a `bytes`, `bytearray` or `str` (UTF-8).
pub fn data(v: &Bound<'_, PyAny>, what: &str) -> Result<Vec<u8>, Fail> {
    if let Ok(s) = v.cast::<PyString>() {
        let text = s.to_cow().map_err(|_| usage(format!("{what} is not valid UTF-8 text"), "pass bytes instead"))?;
        return Ok(text.as_bytes().to_vec());
    }
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    if let Ok(b) = v.cast::<PyByteArray>() {
        return Ok(b.to_vec());
    }
    Err(usage(format!("{what} must be bytes or str, not {}", describe(v)), ""))
}

/// Cuts `s` to at most `max` bytes, on a character boundary.
pub fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}
