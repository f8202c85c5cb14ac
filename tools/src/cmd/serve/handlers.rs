//! The API's handlers: each a few lines over one library call (or the CLI verb's own
//! function), answering with the CLI's `--json` shapes.
//!
//! A handler names the agent it acts as ([`super::auth`]), runs its work, and maps a
//! failure to the CLI's code and hint ([`super::error`]). All segment work runs on a
//! blocking thread (at most one per open connection, so bounded by `--max-connections`):
//! besides the waits (a claim or an inbox read with `wait_s`, at most [`WAIT_MAX_S`]),
//! a write may wait for the journal (up to seconds with `fsync always`), a brokered
//! handle makes a socket round trip, and `/metrics`, an agent's tasks and queries scan
//! the pool; none of it may stall the runtime's two threads.
//!
//! Claims over HTTP: a claim is made by the agent the request acts as and held by its
//! lease, as a shell agent's claim is; it answers with the task, whose `claim.epoch` the
//! client presents to `complete`, `fail` and `progress` (fencing: a task claimed again
//! since refuses the write with `stale_epoch`). The server keeps nothing per client.

use super::auth::Actor;
use super::error::{ApiError, Body, Params, Path};
use super::App;
use crate::cmd::mcp::{kind, seconds, status, ClaimNextArgs};
use crate::cmd::nodes::{self, AddArgs};
use crate::cmd::{agents, docs, events, labels, lifecycle, mail, tasks};
use crate::ctx::{find_agent, principal};
use crate::duration;
use crate::fail::Fail;
use crate::output::{node_json, Names};
use crate::resolve::{self, path_of};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};
use worknode::{Edit, Hlc, NodeKind, Query};

/// What a handler answers.
pub type Reply = Result<Json<Value>, ApiError>;

/// The most nodes, events or messages one answer lists.
pub const LIST_MAX: u64 = 1000;

/// The error body every failure carries.
#[derive(ToSchema)]
#[allow(dead_code)] // documents the shape; the body is built by `error::error_body`
pub struct ErrorBody {
    error: ErrorObject,
}

/// A failure: the CLI's code, message, hint and exit code.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorObject {
    /// Stable machine-readable name (`not_found`, `stale_epoch`, `usage`, …).
    code: String,
    /// What went wrong.
    message: String,
    /// What to do about it.
    hint: String,
    /// The exit code `wn` would have given.
    exit: u8,
}

/// The longest wait (`wait_s`) an HTTP request may ask for: a wait holds a connection
/// and a blocking thread; a client that wants longer asks again.
pub const WAIT_MAX_S: f64 = 60.0;

/// Refuses a `wait_s` over [`WAIT_MAX_S`].
fn check_wait(wait_s: Option<f64>) -> Result<(), Fail> {
    match wait_s {
        Some(w) if w > WAIT_MAX_S => Err(Fail::usage(
            format!("wait_s {w} is over the HTTP limit of {WAIT_MAX_S} s"),
            format!("wait at most {WAIT_MAX_S} s and ask again if nothing came (504 timeout)"),
        )),
        _ => Ok(()),
    }
}

/// Runs `f` as the agent the request acts as, on a blocking thread.
async fn act<F>(app: &App, headers: &HeaderMap, f: F) -> Reply
where
    F: FnOnce(&Actor) -> Result<Value, Fail> + Send + 'static,
{
    let actor = app.actors.of(headers).await?;
    Ok(Json(blocking(actor, f).await?))
}

/// Runs `f` as `actor` on tokio's blocking pool (see the module header for why every
/// piece of segment work goes there).
pub async fn blocking<T, F>(actor: Arc<Actor>, f: F) -> Result<T, Fail>
where
    T: Send + 'static,
    F: FnOnce(&Actor) -> Result<T, Fail> + Send + 'static,
{
    let run = move || {
        // A sign of life for `GET /api/agents` (a store in the segment; through the broker
        // it would be a round trip per request, so a brokered agent's changes stand for it).
        if !actor.seg.is_brokered() {
            let _ = actor.seg.heartbeat(actor.me);
        }
        f(&actor).map_err(|e| e.name_changed_node(&actor.seg))
    };
    tokio::task::spawn_blocking(run).await.map_err(|e| Fail::other(format!("the request stopped: {e}")))?
}

/// A node's JSON, as `wn show --json` prints it.
fn node_value(a: &Actor, h: worknode::Handle) -> Result<Value, Fail> {
    let n = a.seg.read(h)?;
    Ok(node_json(&a.seg, &n, &Names::for_node(&a.seg, &n), Some(&path_of(&a.seg, h))))
}

/// A list limit, checked: 1 to [`LIST_MAX`].
fn limit(n: Option<u64>, default: u64) -> Result<usize, Fail> {
    let n = n.unwrap_or(default);
    if !(1..=LIST_MAX).contains(&n) {
        return Err(Fail::usage(
            format!("limit {n} is out of range"),
            format!("give 1 to {LIST_MAX}; narrow the query"),
        ));
    }
    Ok(n as usize)
}

/// A lease in seconds (default 600), checked against the CLI's limits.
fn lease(s: Option<f64>) -> Result<std::time::Duration, Fail> {
    seconds(s.unwrap_or(600.0), duration::lease, "lease_s")
}

/// Filters of `GET /api/tasks`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TaskParams {
    /// Node kind (default `task`; `any` for every kind).
    kind: Option<String>,
    /// Only this status.
    status: Option<String>,
    /// Only assigned to this agent or `@role`.
    assignee: Option<String>,
    /// Only this subtree (UUID, unique prefix or /path).
    under: Option<String>,
    /// Only names starting with this.
    name: Option<String>,
    /// Only with this label.
    label: Option<String>,
    /// At most this many, 1 to 1000 (default 100).
    limit: Option<u64>,
}

/// The kind filter of a listing: `task` unless told, `any` for none.
fn kind_filter(k: Option<&str>) -> Result<Option<NodeKind>, Fail> {
    match k {
        None => Ok(Some(NodeKind::Task)),
        Some("any") => Ok(None),
        Some(k) => kind(k).map(Some),
    }
}

/// Lists tasks (or nodes of another kind), as `wn ls --json`.
#[utoipa::path(get, path = "/api/tasks", tag = "tasks", params(TaskParams),
    responses((status = 200, description = "`{nodes, count, truncated}` as `wn ls --json`"),
              (status = 400, description = "bad parameter", body = ErrorBody)))]
pub async fn list_tasks(State(app): State<Arc<App>>, headers: HeaderMap, Params(p): Params<TaskParams>) -> Reply {
    act(&app, &headers, move |a| {
        let seg = &a.seg;
        let q = Query {
            kind: kind_filter(p.kind.as_deref())?,
            status: p.status.as_deref().map(status).transpose()?,
            assignee: p.assignee.as_deref().map(principal).transpose()?.map(|p| p.key()),
            under: p.under.as_deref().map(|u| resolve::node(seg, u)).transpose()?,
            name_prefix: p.name.as_deref(),
            label: p.label.as_deref().map(labels::label_key).transpose()?,
            limit: limit(p.limit, 100)?,
            ..Query::default()
        };
        Ok(nodes::query_json(seg, &q)?.0)
    })
    .await
}

/// A new node.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    /// Name (at most 64 bytes, no '/').
    name: String,
    /// Kind (default `task`).
    kind: Option<String>,
    /// Parent (UUID, unique prefix or /path; default the root).
    parent: Option<String>,
    /// At most 256 bytes.
    description: Option<String>,
    /// 0 to 255, highest claimed first.
    priority: Option<u64>,
    /// Numeric value (pipeline rollups).
    value: Option<f64>,
    /// Nodes it waits for.
    blocked_by: Option<Vec<String>>,
    /// Agents or `@roles` who alone may claim it.
    assignee: Option<Vec<String>>,
    /// `ready` (default) or `pending`.
    status: Option<String>,
    /// If the parent has a child of this name and kind, answer it instead of refusing.
    if_absent: Option<bool>,
}

/// Creates a node (tasks start ready, or blocked while a blocker is open), as `wn add`.
#[utoipa::path(post, path = "/api/tasks", tag = "tasks", request_body = NewTask,
    responses((status = 201, description = "the node, as `wn show --json`"),
              (status = 400, description = "bad field", body = ErrorBody),
              (status = 409, description = "name taken", body = ErrorBody)))]
pub async fn create_task(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Body(b): Body<NewTask>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let reply = act(&app, &headers, move |a| {
        let priority = b.priority.unwrap_or(0);
        if priority > 255 {
            return Err(Fail::usage(format!("priority {priority} is out of range"), "give 0 to 255"));
        }
        let value = b.value.unwrap_or(0.0);
        duration::value(&value.to_string())
            .map_err(|e| Fail::usage(format!("value: {e}"), "a finite number within ±1e300"))?;
        let st = b.status.unwrap_or_else(|| "ready".into());
        if st != "ready" && st != "pending" {
            return Err(Fail::usage(format!("status {st:?} cannot start a node"), "give ready or pending"));
        }
        let args = AddArgs {
            kind: b.kind.as_deref().map(kind).transpose()?.unwrap_or(NodeKind::Task),
            name: b.name,
            parent: b.parent,
            desc: b.description,
            priority,
            value,
            blocked_by: b.blocked_by.unwrap_or_default(),
            assignee: b.assignee.unwrap_or_default(),
            status: st,
            if_absent: b.if_absent.unwrap_or(false),
        };
        let n = nodes::add(&a.seg, &args)?;
        node_value(a, n.handle())
    })
    .await?;
    Ok((StatusCode::CREATED, reply))
}

/// Shows one node, as `wn show --json`.
#[utoipa::path(get, path = "/api/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "UUID, unique prefix, or a percent-encoded /path")),
    responses((status = 200, description = "the node, as `wn show --json`"),
              (status = 404, description = "no such node", body = ErrorBody)))]
pub async fn get_task(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> Reply {
    act(&app, &headers, move |a| node_value(a, resolve::node(&a.seg, &id)?)).await
}

/// A change of a node's fields.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskEdit {
    /// A new name.
    name: Option<String>,
    /// A new description.
    description: Option<String>,
    /// A new priority, 0 to 255.
    priority: Option<u64>,
    /// A new value.
    value: Option<f64>,
}

/// Changes a node's name, description, priority or value, as `wn edit`.
#[utoipa::path(put, path = "/api/tasks/{id}", tag = "tasks", request_body = TaskEdit,
    params(("id" = String, Path, description = "the node")),
    responses((status = 200, description = "the node after the change"),
              (status = 400, description = "nothing to change, or a bad field", body = ErrorBody),
              (status = 404, description = "no such node", body = ErrorBody)))]
pub async fn update_task(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(b): Body<TaskEdit>,
) -> Reply {
    act(&app, &headers, move |a| {
        if b.name.is_none() && b.description.is_none() && b.priority.is_none() && b.value.is_none() {
            return Err(Fail::usage("nothing to change", "give name, description, priority or value"));
        }
        let priority = match b.priority {
            Some(p) if p > 255 => return Err(Fail::usage(format!("priority {p} is out of range"), "give 0 to 255")),
            p => p.map(|p| p as u8),
        };
        let h = resolve::node(&a.seg, &id)?;
        let n = a.seg.edit(h, &Edit { name: b.name, description: b.description, priority, value: b.value })?;
        node_value(a, n.handle())
    })
    .await
}

/// Options of `DELETE /api/tasks/{id}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RemoveParams {
    /// Remove the whole subtree.
    recursive: Option<bool>,
    /// Remove even a task a live claim holds.
    force: Option<bool>,
}

/// Removes a node, as `wn rm`.
#[utoipa::path(delete, path = "/api/tasks/{id}", tag = "tasks", params(("id" = String, Path, description = "the node"), RemoveParams),
    responses((status = 200, description = "`{removed, uuid, path}`"),
              (status = 404, description = "no such node", body = ErrorBody),
              (status = 409, description = "it has children, or a live claim holds it", body = ErrorBody)))]
pub async fn delete_task(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Params(p): Params<RemoveParams>,
) -> Reply {
    act(&app, &headers, move |a| lifecycle::remove(&a.seg, &id, p.recursive.unwrap_or(false), p.force.unwrap_or(false)))
        .await
}

/// A claim's lease.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    /// Lease in seconds (default 600; 0.001 to 30 days).
    lease_s: Option<f64>,
}

/// Claims a task for the agent the request acts as; the answer's `claim.epoch` is the
/// fencing epoch to present to complete, fail and progress.
#[utoipa::path(post, path = "/api/tasks/{id}/claim", tag = "claims", request_body = ClaimBody,
    params(("id" = String, Path, description = "the task")),
    responses((status = 200, description = "the task, its `claim` holding agent, epoch and lease"),
              (status = 409, description = "already claimed, assigned elsewhere, not ready", body = ErrorBody)))]
pub async fn claim_task(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(b): Body<ClaimBody>,
) -> Reply {
    act(&app, &headers, move |a| {
        let c = tasks::claim_one(&a.seg, a.me, &id, lease(b.lease_s)?)?;
        node_value(a, c.task)
    })
    .await
}

/// Claims the best ready task (highest priority, then oldest), as `wn claim --next`;
/// `wait_s` at most [`WAIT_MAX_S`].
#[utoipa::path(post, path = "/api/claim", tag = "claims", request_body = ClaimNextArgs,
    responses((status = 200, description = "the task claimed, with its `claim`"),
              (status = 400, description = "a bad field, or wait_s over 60 (the HTTP cap)", body = ErrorBody),
              (status = 404, description = "nothing ready", body = ErrorBody),
              (status = 504, description = "nothing came within wait_s", body = ErrorBody)))]
pub async fn claim_next(State(app): State<Arc<App>>, headers: HeaderMap, Body(raw): Body<Value>) -> Reply {
    check_wait(raw.get("wait_s").and_then(Value::as_f64))?;
    let b: ClaimNextArgs = serde_json::from_value(raw).map_err(|e| {
        Fail::usage(
            format!("wrong JSON fields: {e}"),
            "send a JSON object; /api/openapi.json gives each endpoint's fields and types",
        )
    })?;
    act(&app, &headers, move |a| node_value(a, b.claim(&a.seg, a.me)?.task)).await
}

/// The claim presented to complete a task.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    /// The fencing epoch the claim answered.
    epoch: u64,
    /// A short note (at most 48 bytes).
    note: Option<String>,
}

/// The claim presented to fail a task.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailBody {
    /// The fencing epoch the claim answered.
    epoch: u64,
    /// Why (at most 48 bytes).
    reason: String,
}

/// The claim presented with progress.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressBody {
    /// The fencing epoch the claim answered.
    epoch: u64,
    /// Percent done, 0 to 100.
    percent: u64,
    /// A short note (at most 34 bytes).
    note: Option<String>,
}

/// The claim on `id` the request's agent presents with `epoch`: refused as the CLI
/// refuses it when the agent does not hold the task (not claimed, claimed by another,
/// lease lapsed); the library then refuses a stale epoch.
fn presented(a: &Actor, id: &str, epoch: u64) -> Result<worknode::Claim, Fail> {
    let held = tasks::claim_of(&a.seg, a.me, &a.name, id, None)?;
    Ok(worknode::Claim { epoch, ..held })
}

/// Completes a claimed task; dependents whose blockers are all done become ready.
#[utoipa::path(post, path = "/api/tasks/{id}/complete", tag = "claims", request_body = CompleteBody,
    params(("id" = String, Path, description = "the task")),
    responses((status = 200, description = "the task, complete"),
              (status = 409, description = "stale epoch, lease expired, not the claimant", body = ErrorBody)))]
pub async fn complete(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(b): Body<CompleteBody>,
) -> Reply {
    act(&app, &headers, move |a| {
        let c = presented(a, &id, b.epoch)?;
        a.seg.complete(&c, b.note.as_deref().unwrap_or(""))?;
        node_value(a, c.task)
    })
    .await
}

/// Fails a claimed task, with a reason.
#[utoipa::path(post, path = "/api/tasks/{id}/fail", tag = "claims", request_body = FailBody,
    params(("id" = String, Path, description = "the task")),
    responses((status = 200, description = "the task, failed"),
              (status = 409, description = "stale epoch, lease expired, not the claimant", body = ErrorBody)))]
pub async fn fail(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(b): Body<FailBody>,
) -> Reply {
    act(&app, &headers, move |a| {
        let c = presented(a, &id, b.epoch)?;
        a.seg.fail(&c, &b.reason)?;
        node_value(a, c.task)
    })
    .await
}

/// Reports progress on a claimed task (renews its lease).
#[utoipa::path(post, path = "/api/tasks/{id}/progress", tag = "claims", request_body = ProgressBody,
    params(("id" = String, Path, description = "the task")),
    responses((status = 200, description = "the task, its progress and lease updated"),
              (status = 400, description = "percent out of range", body = ErrorBody),
              (status = 409, description = "stale epoch, lease expired, not the claimant", body = ErrorBody)))]
pub async fn progress(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(b): Body<ProgressBody>,
) -> Reply {
    act(&app, &headers, move |a| {
        let pct = u8::try_from(b.percent)
            .ok()
            .filter(|p| *p <= 100)
            .ok_or_else(|| Fail::usage(format!("percent {} is out of range", b.percent), "give 0 to 100"))?;
        let c = presented(a, &id, b.epoch)?;
        a.seg.progress_noted(&c, pct, b.note.as_deref().unwrap_or(""))?;
        node_value(a, c.task)
    })
    .await
}

/// Lists agents and their claims, as `wn agents --json`.
#[utoipa::path(get, path = "/api/agents", tag = "agents",
    responses((status = 200, description = "`{agents, count}` as `wn agents --json`")))]
pub async fn list_agents(State(app): State<Arc<App>>, headers: HeaderMap) -> Reply {
    act(&app, &headers, |a| Ok(agents::agents_json(&a.seg))).await
}

/// The tasks an agent holds, and the agent.
#[utoipa::path(get, path = "/api/agents/{name}/tasks", tag = "agents",
    params(("name" = String, Path, description = "the agent's name")),
    responses((status = 200, description = "`{agent, tasks, count}`: the agent as `wn agents --json` lists it, and the nodes its live claims hold"),
              (status = 404, description = "no such agent", body = ErrorBody)))]
pub async fn agent_tasks(State(app): State<Arc<App>>, headers: HeaderMap, Path(name): Path<String>) -> Reply {
    act(&app, &headers, move |a| {
        let seg = &a.seg;
        let id = find_agent(seg, &name)?;
        let info = seg.agent(id)?;
        let claims = agents::claims_by_agent(seg);
        let held = claims.get(&id.index).map_or(&[][..], Vec::as_slice);
        let names = Names::load(seg);
        let list: Vec<Value> =
            held.iter().map(|n| node_json(seg, n, &names, Some(&path_of(seg, n.handle())))).collect();
        Ok(json!({ "agent": agents::agent_json(seg, &info, held), "count": list.len(), "tasks": list }))
    })
    .await
}

/// A bounded predicate query (every field optional; all given must hold).
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    /// Only this kind.
    kind: Option<String>,
    /// Only this status.
    status: Option<String>,
    /// Only assigned to this agent or `@role`.
    assignee: Option<String>,
    /// Only this node and its descendants.
    under: Option<String>,
    /// Only names starting with this.
    name_prefix: Option<String>,
    /// Only nodes changed at or after this clock value (an `hlc` of an event or node).
    updated_since: Option<u64>,
    /// Only nodes with this label.
    label: Option<String>,
    /// At most this many results, 1 to 1000 (default 100).
    limit: Option<u64>,
    /// At most this many nodes examined (default all).
    visit_budget: Option<u32>,
}

/// Runs a bounded predicate query over the pool (`worknode::Query`).
#[utoipa::path(post, path = "/api/query", tag = "query", request_body = QueryBody,
    responses((status = 200, description = "`{nodes, count, truncated, visited, budget_exhausted}`"),
              (status = 400, description = "bad field", body = ErrorBody)))]
pub async fn query(State(app): State<Arc<App>>, headers: HeaderMap, Body(b): Body<QueryBody>) -> Reply {
    act(&app, &headers, move |a| {
        let seg = &a.seg;
        let q = Query {
            kind: b.kind.as_deref().map(kind).transpose()?,
            status: b.status.as_deref().map(status).transpose()?,
            assignee: b.assignee.as_deref().map(principal).transpose()?.map(|p| p.key()),
            under: b.under.as_deref().map(|u| resolve::node(seg, u)).transpose()?,
            name_prefix: b.name_prefix.as_deref(),
            updated_since: b.updated_since.map(Hlc),
            label: b.label.as_deref().map(labels::label_key).transpose()?,
            limit: limit(b.limit, 100)?,
            visit_budget: b.visit_budget.unwrap_or(u32::MAX),
        };
        let (mut v, stats) = nodes::query_json(seg, &q)?;
        v["visited"] = json!(stats.visited);
        v["budget_exhausted"] = json!(stats.budget_exhausted);
        Ok(v)
    })
    .await
}

/// Lists the documents under a node, as `wn doc ls --json`.
#[utoipa::path(get, path = "/api/tasks/{id}/documents", tag = "documents",
    params(("id" = String, Path, description = "the node")),
    responses((status = 200, description = "`{documents, count}`"), (status = 404, description = "no such node", body = ErrorBody)))]
pub async fn list_documents(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> Reply {
    act(&app, &headers, move |a| docs::documents_json(&a.seg, resolve::node(&a.seg, &id)?)).await
}

/// A document's text.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DocBody {
    /// The text.
    content: String,
    /// Its type (default guessed from the name and content).
    content_type: Option<String>,
}

/// Stores a text document under a node (replaces one of that name); under a claim the
/// agent holds on the node, its lease is renewed.
#[utoipa::path(put, path = "/api/tasks/{id}/documents/{name}", tag = "documents", request_body = DocBody,
    params(("id" = String, Path, description = "the node"), ("name" = String, Path, description = "the document's name")),
    responses((status = 200, description = "the document node"), (status = 507, description = "the blob arena is full", body = ErrorBody)))]
pub async fn put_document(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((id, name)): Path<(String, String)>,
    Body(b): Body<DocBody>,
) -> Reply {
    act(&app, &headers, move |a| {
        let parent = resolve::node(&a.seg, &id)?;
        let bytes = b.content.as_bytes();
        let content_type =
            b.content_type.unwrap_or_else(|| docs::guess_type(Some(&std::path::PathBuf::from(&name)), bytes));
        let claim = docs::claim_held_by(&a.seg, a.me, parent);
        let doc = docs::put_bytes(&a.seg, parent, &name, &content_type, bytes, claim)?;
        node_value(a, doc)
    })
    .await
}

/// Reads a document, as `wn doc get --json`.
#[utoipa::path(get, path = "/api/documents/{id}", tag = "documents",
    params(("id" = String, Path, description = "the document")),
    responses((status = 200, description = "`{uuid, path, content_type, len, crc32c, version, text | hex}`"),
              (status = 404, description = "no such document", body = ErrorBody)))]
pub async fn get_document(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> Reply {
    act(&app, &headers, move |a| docs::document_json(&a.seg, resolve::node(&a.seg, &id)?)).await
}

/// A message to send.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    /// An agent's name or `@role`.
    to: String,
    /// The message.
    text: String,
    /// A conversation id.
    thread: Option<String>,
}

/// Sends a message from the request's agent, as `wn send`.
#[utoipa::path(post, path = "/api/messages", tag = "messages", request_body = SendBody,
    responses((status = 201, description = "the message's metadata"), (status = 507, description = "the mailbox is full", body = ErrorBody)))]
pub async fn send(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Body(b): Body<SendBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let reply = act(&app, &headers, move |a| {
        let to = principal(&b.to)?;
        let h = a.seg.send(a.me, &to, b.thread.as_deref(), b.text.as_bytes())?;
        Ok(mail::info_json(&a.seg.read_message(h)?.info))
    })
    .await?;
    Ok((StatusCode::CREATED, reply))
}

/// Options of `GET /api/messages`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InboxParams {
    /// Also acknowledged messages still kept.
    all: Option<bool>,
    /// Wait up to this many seconds for mail (at most 60).
    wait_s: Option<f64>,
}

/// The request's agent's mail (and its role's), as `wn inbox --json`.
#[utoipa::path(get, path = "/api/messages", tag = "messages", params(InboxParams),
    responses((status = 200, description = "`{agent, count, messages}`"), (status = 504, description = "no mail within wait_s", body = ErrorBody)))]
pub async fn inbox(State(app): State<Arc<App>>, headers: HeaderMap, Params(p): Params<InboxParams>) -> Reply {
    check_wait(p.wait_s)?;
    act(&app, &headers, move |a| {
        let seg = &a.seg;
        if let Some(w) = p.wait_s {
            seg.wait_for_mail(a.me, seconds(w, duration::timeout, "wait_s")?)?;
        }
        let mut mail = Vec::new();
        seg.inbox(a.me, p.all.unwrap_or(false), &mut mail)?;
        // Acknowledged by a role peer and purged since the listing: not listed.
        let list: Vec<Value> =
            mail.iter().filter_map(|i| seg.read_message(i.handle).ok()).map(|m| mail::message_json(&m)).collect();
        Ok(json!({ "agent": a.name, "count": list.len(), "messages": list }))
    })
    .await
}

/// Acknowledges one message of the request's agent.
#[utoipa::path(post, path = "/api/messages/{id}/ack", tag = "messages",
    params(("id" = String, Path, description = "the message id, as the inbox lists it")),
    responses((status = 200, description = "`{acked}`"), (status = 404, description = "no such message", body = ErrorBody),
              (status = 409, description = "already acknowledged", body = ErrorBody)))]
pub async fn ack(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> Reply {
    act(&app, &headers, move |a| {
        let h = a.seg.find_message(a.me, &id)?;
        a.seg.ack(a.me, h)?;
        Ok(json!({ "acked": id }))
    })
    .await
}

/// Which subtree the analytics total.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RollupParams {
    /// The subtree (default the root).
    under: Option<String>,
    /// Count nodes of this kind (default `task`).
    kind: Option<String>,
}

/// Progress of each project under a node: its rollup (counts by status, percent
/// complete, mean progress), as `wn rollup --json` gives for each.
#[utoipa::path(get, path = "/api/analytics/progress", tag = "analytics", params(RollupParams),
    responses((status = 200, description = "`{node, projects: [rollup]}`"), (status = 404, description = "no such node", body = ErrorBody)))]
pub async fn analytics_progress(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Params(p): Params<RollupParams>,
) -> Reply {
    act(&app, &headers, move |a| {
        let seg = &a.seg;
        let under = resolve::node_or_root(seg, p.under.as_deref())?;
        let k = p.kind.as_deref().map(kind).transpose()?.unwrap_or(NodeKind::Task);
        let mut kids = Vec::new();
        seg.children(under, &mut kids)?;
        let mut projects = Vec::new();
        for h in kids {
            match seg.read(h) {
                Ok(n) if n.kind() == Some(NodeKind::Project) => projects.push(nodes::rollup_json(seg, h, k)?),
                _ => {}
            }
        }
        Ok(json!({ "node": seg.read(under)?.uuid().to_string(), "path": path_of(seg, under), "projects": projects }))
    })
    .await
}

/// The pipeline of a subtree: counts and value by status, as `wn rollup --json`.
#[utoipa::path(get, path = "/api/analytics/pipeline", tag = "analytics", params(RollupParams),
    responses((status = 200, description = "the rollup, as `wn rollup --json`"), (status = 404, description = "no such node", body = ErrorBody)))]
pub async fn analytics_pipeline(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Params(p): Params<RollupParams>,
) -> Reply {
    act(&app, &headers, move |a| {
        let under = resolve::node_or_root(&a.seg, p.under.as_deref())?;
        let k = p.kind.as_deref().map(kind).transpose()?.unwrap_or(NodeKind::Task);
        nodes::rollup_json(&a.seg, under, k)
    })
    .await
}

/// An event to append.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmitBody {
    /// An application kind: a name (recorded as `user` with it as topic) or a number ≥ 1000.
    kind: String,
    /// The node it is about.
    node: Option<String>,
    /// Inline payload (text or JSON), at most 88 bytes.
    data: Option<String>,
}

/// Appends one event, as `wn emit`.
#[utoipa::path(post, path = "/api/events", tag = "events", request_body = EmitBody,
    responses((status = 201, description = "`{seq}`"), (status = 400, description = "bad kind or payload", body = ErrorBody)))]
pub async fn post_event(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Body(b): Body<EmitBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let reply = act(&app, &headers, move |a| {
        let seq = events::emit(&a.seg, &b.kind, b.node.as_deref(), b.data.as_deref().unwrap_or(""))?;
        Ok(json!({ "seq": seq }))
    })
    .await?;
    Ok((StatusCode::CREATED, reply))
}

/// Which events `GET /api/events` reads.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    /// Start at this ring sequence (JSON: default the oldest retained; stream: default now).
    pub since: Option<u64>,
    /// JSON: at most this many, 1 to 1000 (default 100).
    pub limit: Option<u64>,
}

/// Reads the ring once: the events from `since` (the oldest retained by default).
pub fn events_once(a: &Actor, p: &EventParams) -> Result<Value, Fail> {
    let n = limit(p.limit, 100)?;
    let start = p.since.map_or(worknode::Start::Oldest, worknode::Start::At);
    let mut reader = a.seg.reader(start);
    let mut list = Vec::new();
    let mut lagged = Vec::new();
    while list.len() < n {
        match reader.try_next() {
            Ok(Some(e)) => list.push(events::event_json(&a.seg, &e)),
            Ok(None) => break,
            Err(worknode::RingError::Lagged { missed, resume_at }) => {
                lagged.push(json!({ "missed": missed, "resume_at": resume_at }))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(json!({
        "events": list,
        "count": list.len(),
        "next": reader.position(),
        "tail": a.seg.ring_tail(),
        "lagged": lagged,
    }))
}

/// The segment's metrics in the Prometheus text format, as `wn metrics` prints them:
/// pool, arena, ring and mailbox use, reader and journal lag, fsync latency, claims,
/// leases expired, agents lost. Checked like any read (a token when tokens are on).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "the Prometheus text format 0.0.4", content_type = "text/plain"),
              (status = 401, description = "a token is required", body = ErrorBody)))]
pub async fn metrics(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<([(axum::http::header::HeaderName, &'static str); 1], String), ApiError> {
    let actor = app.actors.of(&headers).await?;
    let out = blocking(actor, |a| {
        let mut out = String::new();
        crate::metrics::render(&a.seg, &mut out);
        Ok(out)
    })
    .await?;
    Ok(([(axum::http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], out))
}
