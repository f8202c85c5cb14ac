//! `Client`: a connection to a segment — the agent handle (shared, by `Arc`, with every
//! node, claim and cursor made from it) and the agent's session — and its methods, each
//! a few lines over one library call or one of the CLI's own functions.

use crate::args::{self, detached, lock, raise, seconds, seconds_opt, usage, Int, Secs};
use crate::claim::{Claim, ClaimTable, Held, OnError, Renewer};
use crate::events::{Event, Events};
use crate::node::{handle_of, node_obj, to_py, Node};
use crate::owned::{OwnedReader, OwnedSession};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wn::fail::{exit, Fail};
use wn::resolve;
use worknode::{AgentId, Filter, Query, Segment, Start, TaskFilter};

/// A connection to a segment: the agent handle, and the agent's session.
#[pyclass(frozen, module = "worknode._native")]
pub struct Client {
    seg: Arc<Segment>,
    me: Option<AgentId>,
    agent: Option<String>,
    session: Mutex<Option<OwnedSession>>,
    claims: ClaimTable,
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
        let held = Arc::new(Held::new(c, lease));
        lock(&self.claims).insert(c.task, Arc::clone(&held));
        let claim =
            Claim::new(Arc::clone(&self.seg), held, Arc::clone(&self.claims), Arc::clone(&self.renewer), on_error);
        Py::new(py, claim)
    }

    fn nodes(&self, py: Python<'_>, found: Vec<worknode::Node>) -> PyResult<Vec<Py<Node>>> {
        found.into_iter().map(|n| node_obj(py, &self.seg, n)).collect()
    }

    fn filter(
        &self,
        kind: Option<&str>,
        under: Option<&str>,
        mine: bool,
        label: Option<&str>,
    ) -> Result<TaskFilter, Fail> {
        Ok(TaskFilter {
            kind: kind.map(args::kind).transpose()?,
            mine,
            under: under.map(|u| resolve::node(&self.seg, u)).transpose()?,
            label: label.map(wn::cmd::labels::label_key).transpose()?,
            ..TaskFilter::default()
        })
    }
}

impl Drop for Client {
    /// Stops the renewer thread; dropping the session (if `close` was not called) makes
    /// the agent leave. The mapping goes with the last object made from it.
    fn drop(&mut self) {
        self.renewer.stop();
        // Leaving is a journaled change that may wait for the journal: not with the GIL.
        if let Some(s) = lock(&self.session).take() {
            Python::attach(|py| py.detach(move || drop(s)));
        }
    }
}

/// How many nodes a listing may return at most (the CLI's `--limit` bound).
const LIST_MAX: i64 = worknode::layout::MAX_NODES as i64;

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
            let seg = Arc::new(ctx.attach_rw()?);
            let name = seg.grant().map(|g| g.agent().to_string()).or_else(|| ctx.agent.clone());
            let session = match &name {
                Some(n) => Some(OwnedSession::try_new(Arc::clone(&seg), |seg| seg.open_session(n, &ctx.role))?),
                None => None,
            };
            let me = session.as_ref().map(|s| s.borrow_dependent().id());
            Ok(Client {
                renewer: Renewer::new(Arc::clone(&seg)),
                seg,
                me,
                agent: name,
                session: Mutex::new(session),
                claims: Arc::new(Mutex::new(HashMap::new())),
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
        lock(&self.session).as_ref().is_some_and(|s| s.borrow_dependent().watched_by_daemon())
    }

    /// Ends the session: the agent leaves, its claims and reservations are released.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.renewer.stop();
        let s = lock(&self.session).take();
        detached(py, || match s {
            Some(s) => {
                let left = s.borrow_owner().leave(s.borrow_dependent().id());
                // Dropping the session closes its daemon link; its own leave finds the
                // agent gone and does nothing.
                drop(s);
                Ok(left?)
            }
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
    #[pyo3(signature = (name, parent="/", blocked_by=None, assignee=None, priority=Int::Value(0), desc="", kind="task", status="ready"))]
    #[allow(clippy::too_many_arguments)]
    fn add_task(
        &self,
        py: Python<'_>,
        name: String,
        parent: &str,
        blocked_by: Option<&Bound<'_, PyAny>>,
        assignee: Option<&Bound<'_, PyAny>>,
        priority: Int,
        desc: &str,
        kind: &str,
        status: &str,
    ) -> PyResult<Py<Node>> {
        let blocked_by = args::names(blocked_by, "blocked_by").map_err(|f| raise(py, f))?;
        let assignee = args::names(assignee, "assignee").map_err(|f| raise(py, f))?;
        let seg = &self.seg;
        let n = detached(py, || {
            let priority = priority.within(0, 255, "priority")?;
            if status != "ready" && status != "pending" {
                return Err(usage(format!("a new task is ready or pending, not {status:?}"), ""));
            }
            let args = wn::cmd::nodes::AddArgs {
                kind: args::kind(kind)?,
                name,
                parent: Some(parent.to_string()),
                desc: Some(desc.to_string()),
                priority: priority as u64,
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
        let seg = &self.seg;
        let n = handle_of(seg, node).and_then(|h| Ok(seg.read(h)?)).map_err(|f| raise(py, f))?;
        node_obj(py, seg, n)
    }

    /// Nodes matching every filter given (at most `limit`).
    #[pyo3(signature = (under=None, status=None, label=None, kind=None, assignee=None, limit=Int::Value(1000)))]
    #[allow(clippy::too_many_arguments)]
    fn ls(
        &self,
        py: Python<'_>,
        under: Option<String>,
        status: Option<String>,
        label: Option<String>,
        kind: Option<String>,
        assignee: Option<String>,
        limit: Int,
    ) -> PyResult<Vec<Py<Node>>> {
        let seg = &self.seg;
        let found = detached(py, || {
            let q = Query {
                kind: kind.as_deref().map(args::kind).transpose()?,
                status: status.as_deref().map(args::status).transpose()?,
                assignee: assignee.as_deref().map(wn::ctx::principal).transpose()?.map(|p| p.key()),
                under: under.as_deref().map(|u| resolve::node(seg, u)).transpose()?,
                label: label.as_deref().map(wn::cmd::labels::label_key).transpose()?,
                limit: limit.within(1, LIST_MAX, "limit")? as usize,
                ..Query::default()
            };
            let mut found = Vec::new();
            seg.query(&q, &mut found)?;
            Ok(found)
        })?;
        self.nodes(py, found)
    }

    /// Tasks that could be claimed now, best first (as `claim_next` would pick them).
    #[pyo3(signature = (kind=None, under=None, mine=false, label=None, limit=Int::Value(100)))]
    fn ready(
        &self,
        py: Python<'_>,
        kind: Option<String>,
        under: Option<String>,
        mine: bool,
        label: Option<String>,
        limit: Int,
    ) -> PyResult<Vec<Py<Node>>> {
        let seg = &self.seg;
        let found = detached(py, || {
            let limit = limit.within(1, LIST_MAX, "limit")? as usize;
            let f = self.filter(kind.as_deref(), under.as_deref(), mine, label.as_deref())?;
            let mut found = Vec::new();
            seg.ready(&f, limit, &mut found)?;
            Ok(found)
        })?;
        self.nodes(py, found)
    }

    /// Claims `node` for `lease` seconds.
    #[pyo3(signature = (node, lease=Secs::Value(600.0), on_error="fail"))]
    fn claim(&self, py: Python<'_>, node: &Bound<'_, PyAny>, lease: Secs, on_error: &str) -> PyResult<Py<Claim>> {
        let seg = &self.seg;
        let h = handle_of(seg, node).map_err(|f| raise(py, f))?;
        let (c, lease, oe) = detached(py, || {
            let oe = OnError::parse(on_error)?;
            let lease = seconds(&lease, wn::duration::lease, "lease")?;
            Ok((seg.claim(h, self.me()?, lease)?, lease, oe))
        })?;
        self.claim_obj(py, c, lease, oe)
    }

    /// Claims the best ready task matching the filters, or returns None when there is
    /// none; with `block`, waits up to that many seconds for one (a futex wait).
    #[pyo3(signature = (kind=None, under=None, mine=false, label=None, block=None, lease=Secs::Value(600.0), on_error="fail"))]
    #[allow(clippy::too_many_arguments)]
    fn claim_next(
        &self,
        py: Python<'_>,
        kind: Option<String>,
        under: Option<String>,
        mine: bool,
        label: Option<String>,
        block: Option<Secs>,
        lease: Secs,
        on_error: &str,
    ) -> PyResult<Option<Py<Claim>>> {
        let seg = &self.seg;
        let got = detached(py, || {
            let oe = OnError::parse(on_error)?;
            let f = self.filter(kind.as_deref(), under.as_deref(), mine, label.as_deref())?;
            let lease = seconds(&lease, wn::duration::lease, "lease")?;
            let block = seconds_opt(block.as_ref(), wn::duration::timeout, "block")?;
            let me = self.me()?;
            let r = match block {
                Some(w) => seg.claim_next_wait(&f, me, lease, w),
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
        let seg = &self.seg;
        let bytes = args::data(data, "data").map_err(|f| raise(py, f))?;
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
        let seg = &self.seg;
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
        since: Option<Int>,
        kinds: Option<&Bound<'_, PyAny>>,
        node: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Events> {
        let seg = &self.seg;
        let made = (|| {
            let since = since.map(|s| s.within(0, i64::MAX, "since")).transpose()?;
            let kinds = args::event_kinds(&args::names(kinds, "kinds")?)?;
            let node = node.map(|n| handle_of(seg, n).and_then(|h| Ok(seg.read(h)?.uuid()))).transpose()?;
            Ok::<_, Fail>((since, kinds, node))
        })();
        let (since, kinds, node) = made.map_err(|f| raise(py, f))?;
        let start = since.map_or(Start::Now, |s| Start::At(s as u64));
        let filter = Filter { kind: if kinds.len() == 1 { Some(kinds[0]) } else { None }, node, actor: None };
        let reader = OwnedReader::new(Arc::clone(seg), |seg| seg.reader(start).with_filter(filter));
        Ok(Events::new(reader, kinds))
    }

    /// Waits up to `timeout` seconds for the first event from now of one of `kinds`
    /// (any: None), about `node`; raises `worknode.Timeout` if none comes.
    #[pyo3(signature = (kinds=None, node=None, timeout=Secs::Value(30.0)))]
    fn wait(
        &self,
        py: Python<'_>,
        kinds: Option<&Bound<'_, PyAny>>,
        node: Option<&Bound<'_, PyAny>>,
        timeout: Secs,
    ) -> PyResult<Py<Event>> {
        let seg = &self.seg;
        let kinds = args::names(kinds, "kinds").map_err(|f| raise(py, f))?;
        // The selector names the node as the CLI does; a Node is named by its UUID.
        let node = node
            .map(|n| handle_of(seg, n).and_then(|h| Ok(seg.read(h)?.uuid().to_string())))
            .transpose()
            .map_err(|f| raise(py, f))?;
        let e = detached(py, || {
            let t = seconds(&timeout, wn::duration::timeout, "timeout")?;
            wn::cmd::events::wait_any(seg, &kinds, node.as_deref(), t)
        })?;
        Py::new(py, Event::new(seg, e))
    }

    /// Sends `text` to an agent (by name) or a role (`@role`); returns the message id.
    #[pyo3(signature = (to, text, thread=None))]
    fn send(&self, py: Python<'_>, to: String, text: &Bound<'_, PyAny>, thread: Option<String>) -> PyResult<String> {
        let body = args::data(text, "text").map_err(|f| raise(py, f))?;
        let seg = &self.seg;
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
        wait: Option<Secs>,
        ack: bool,
        include_acked: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let seg = &self.seg;
        let list = detached(py, || {
            let me = self.me()?;
            if let Some(w) = seconds_opt(wait.as_ref(), wn::duration::timeout, "wait")? {
                match seg.wait_for_mail(me, w) {
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
    #[pyo3(signature = (paths, lease=Secs::Value(3600.0), shared=false, reason=""))]
    fn reserve<'py>(
        &self,
        py: Python<'py>,
        paths: &Bound<'_, PyAny>,
        lease: Secs,
        shared: bool,
        reason: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let paths = args::names(Some(paths), "paths").map_err(|f| raise(py, f))?;
        let seg = &self.seg;
        let v = detached(py, || {
            let globs: Vec<&str> = paths.iter().map(String::as_str).collect();
            let lease = seconds(&lease, wn::duration::lease, "lease")?;
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
        let paths = args::names(paths, "paths").map_err(|f| raise(py, f))?;
        let seg = &self.seg;
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
