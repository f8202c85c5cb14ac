//! `wn --agent NAME mcp`: an MCP server over stdio (issue 14), built on `rmcp`.
//!
//! One server process per agent: it opens a session ([`worknode::Segment::open_session`]),
//! so when its client exits (stdin closes) or kills it, the daemon releases the agent's
//! claims and reservations at once. It keeps the [`Claim`] (fencing epoch) of every task
//! it claimed, so the tools take only the task.
//!
//! Each tool is a few lines over one library call and answers with the CLI's JSON shape
//! (`node_json`, the mail and reservation objects) plus a one-line text. A failure is a
//! tool error (`isError`) carrying the CLI's `code`, `hint` and `exit`. A call that may
//! wait (`wait_s`, `wait`) runs on a blocking thread, so it never stalls the server.
//!
//! Resources (the tree, a node, a document) and subscriptions to them are in [`resources`].

mod resources;
mod stdio;

use crate::cmd::docs;
use crate::cmd::nodes::{self, AddArgs};
use crate::ctx::{principal, Ctx};
use crate::duration;
use crate::fail::Fail;
use crate::output::{node_json, node_line, now_ms, Names, Style};
use crate::resolve::{self, path_of};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ListResourceTemplatesResult, ListResourcesResult,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig,
    SubscribeRequestParams, SubscriptionFilter, UnsubscribeRequestParams,
};
use rmcp::service::{RequestContext, SubscriptionContext};
use rmcp::{tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler, ServiceExt};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use worknode::{AgentId, Claim, Handle, Node, NodeKind, Query, Segment, Status, TaskFilter};

/// What a tool answers: its structured result and a one-line rendering.
type Answer = Result<(Value, String), Fail>;

/// The server's state, shared by the tools' blocking threads.
struct State {
    seg: &'static Segment,
    me: AgentId,
    /// The claims this server made and still holds, by task.
    claims: Mutex<HashMap<Handle, Claim>>,
    /// Resource subscriptions and their watcher.
    watch: Arc<resources::Watch>,
}

/// The MCP server of one agent.
#[derive(Clone)]
pub struct Server {
    st: Arc<State>,
    /// The tools, built once: the macros' default builds the router (and every tool's
    /// schema) again for each call, most of a call's CPU time.
    tools: Arc<ToolRouter<Server>>,
}

/// Runs the server until the client closes stdin.
pub fn run(ctx: &Ctx) -> Result<(), Fail> {
    // The segment lives as long as the process: the tools' threads borrow it.
    let seg: &'static Segment = Box::leak(Box::new(ctx.attach_rw()?));
    let name = match seg.grant() {
        Some(g) => g.agent().to_string(),
        None => ctx
            .agent
            .clone()
            .ok_or_else(|| Fail::usage("`wn mcp` serves one agent, and none was named", "run `wn --agent NAME mcp`"))?,
    };
    let session = seg.open_session(&name, &ctx.role)?;
    let watch = Arc::new(resources::Watch::default());
    let st = State { seg, me: session.id(), claims: Mutex::new(HashMap::new()), watch: Arc::clone(&watch) };
    let server = Server { st: Arc::new(st), tools: Arc::new(Server::tool_router()) };
    // One runtime thread: a request, its tool and its answer stay on it, with no wake-up
    // of another thread between them (calls that may wait go to the blocking pool).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Fail::other(format!("cannot start the MCP runtime: {e}")))?;
    let served: Result<(), String> = rt.block_on(async {
        let streams = stdio::streams().map_err(|e| format!("cannot use stdin and stdout: {e}"))?;
        let running = server.serve(streams).await.map_err(|e| e.to_string())?;
        running.waiting().await.map(|_| ()).map_err(|e| e.to_string())
    });
    watch.stop();
    rt.shutdown_timeout(Duration::from_secs(1));
    // Leaving releases what the agent still holds, as the daemon would on exit.
    let left = session.leave();
    served.map_err(|e| Fail::other(format!("the MCP server stopped: {e}")))?;
    Ok(left?)
}

/// A tool's failure as MCP shows it: the CLI's JSON error object and its one line.
fn tool_error(f: &Fail) -> CallToolResult {
    let mut v = json!({ "error": f.message, "code": f.code, "hint": f.hint, "exit": f.exit });
    if let Some(d) = &f.details {
        v["details"] = d.clone();
    }
    let text = if f.hint.is_empty() {
        format!("{}: {}", f.code, f.message)
    } else {
        format!("{}: {} ({})", f.code, f.message, f.hint)
    };
    let mut r = CallToolResult::error(vec![ContentBlock::text(text)]);
    r.structured_content = Some(v);
    r
}

/// Seconds given to a tool, checked against the CLI's limits for the same flag.
pub(crate) fn seconds(s: f64, parse: fn(&str) -> Result<Duration, String>, arg: &str) -> Result<Duration, Fail> {
    if !s.is_finite() || s < 0.0 {
        return Err(Fail::usage(format!("{arg} must be a finite number of seconds ≥ 0"), "for example 30 or 0.5"));
    }
    parse(&format!("{}ms", (s * 1000.0).round() as u64)).map_err(|e| {
        Fail::usage(format!("{arg}: {e}"), "timeouts are 0 to 86400 seconds, leases 0.001 seconds to 30 days")
    })
}

pub(crate) fn kind(text: &str) -> Result<NodeKind, Fail> {
    text.parse::<NodeKind>().map_err(|_| {
        let all: Vec<&str> = NodeKind::ALL.iter().map(|k| k.as_str()).collect();
        Fail::usage(format!("unknown kind {text:?}"), format!("one of: {}", all.join(", ")))
    })
}

pub(crate) fn status(text: &str) -> Result<Status, Fail> {
    text.parse::<Status>().map_err(|_| {
        let all: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
        Fail::usage(format!("unknown status {text:?}"), format!("one of: {}", all.join(", ")))
    })
}

/// A tool's arguments, or why they do not parse: a wrong type or a missing field is then
/// a tool error with the CLI's `usage` code, not the SDK's bare message. The schema is
/// `T`'s.
pub struct Args<T>(Result<T, String>);

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Args<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(Args(serde_json::from_value(v).map_err(|e| e.to_string())))
    }
}

impl<T: JsonSchema> JsonSchema for Args<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }

    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

/// Arguments of `claim_next` (and the body of `wn serve`'s `POST /api/claim`).
#[derive(Deserialize, JsonSchema, utoipa::ToSchema)]
pub struct ClaimNextArgs {
    /// Node kind (default any claimable).
    kind: Option<String>,
    /// Only this subtree.
    under: Option<String>,
    /// Only tasks with this label.
    label: Option<String>,
    /// Only tasks assigned to me or my role.
    mine: Option<bool>,
    /// Wait up to this many seconds for one.
    wait_s: Option<f64>,
    /// Lease in seconds (default 600).
    lease_s: Option<f64>,
}

/// A task this server holds.
#[derive(Deserialize, JsonSchema)]
pub struct CompleteArgs {
    /// The task.
    task: String,
    /// Short note (≤48 bytes).
    note: Option<String>,
}

/// Arguments of `fail`.
#[derive(Deserialize, JsonSchema)]
pub struct FailArgs {
    /// The task.
    task: String,
    /// Why (≤48 bytes).
    reason: String,
}

/// Arguments of `progress`.
#[derive(Deserialize, JsonSchema)]
pub struct ProgressArgs {
    /// The task.
    task: String,
    /// 0-100.
    percent: u64,
    /// Short note (≤34 bytes).
    note: Option<String>,
}

/// Arguments of `add_task`.
#[derive(Deserialize, JsonSchema)]
pub struct AddTaskArgs {
    /// Name (≤64 bytes, no '/').
    name: String,
    /// Parent node (default the root).
    parent: Option<String>,
    /// Nodes it waits for.
    blocked_by: Option<Vec<String>>,
    /// Agents or @roles who alone may claim it.
    assignee: Option<Vec<String>>,
    /// 0-255, highest claimed first.
    priority: Option<u64>,
    /// ≤256 bytes.
    description: Option<String>,
}

/// Arguments of `show`.
#[derive(Deserialize, JsonSchema)]
pub struct ShowArgs {
    /// The node.
    node: String,
}

/// Arguments of `list`.
#[derive(Deserialize, JsonSchema)]
pub struct ListArgs {
    /// Only this subtree.
    under: Option<String>,
    /// Only this status.
    status: Option<String>,
    /// Only assigned to this agent or @role.
    assignee: Option<String>,
    /// Only with this label.
    label: Option<String>,
    /// At most this many, 1-1000 (default 50).
    limit: Option<u64>,
}

/// Arguments of `send`.
#[derive(Deserialize, JsonSchema)]
pub struct SendArgs {
    /// Agent name or @role.
    to: String,
    /// The message.
    text: String,
    /// Conversation id.
    thread: Option<String>,
}

/// Arguments of `inbox`.
#[derive(Deserialize, JsonSchema)]
pub struct InboxArgs {
    /// Wait up to this many seconds for mail.
    wait_s: Option<f64>,
    /// Acknowledge what is listed.
    ack: Option<bool>,
}

/// Arguments of `reserve`.
#[derive(Deserialize, JsonSchema)]
pub struct ReserveArgs {
    /// Globs.
    paths: Vec<String>,
    /// Lease in seconds (default 3600).
    lease_s: Option<f64>,
    /// Coexist with other shared reservations.
    shared: Option<bool>,
}

/// Arguments of `release`.
#[derive(Deserialize, JsonSchema)]
pub struct ReleaseArgs {
    /// Globs as reserved (empty: all).
    paths: Option<Vec<String>>,
}

/// Arguments of `doc_put`.
#[derive(Deserialize, JsonSchema)]
pub struct DocPutArgs {
    /// The task (or node) it belongs under.
    task: String,
    /// Document name (its extension sets the type).
    name: String,
    /// The text.
    content: String,
}

/// Arguments of `doc_get`.
#[derive(Deserialize, JsonSchema)]
pub struct DocGetArgs {
    /// The document.
    path: String,
}

/// Arguments of `wait`.
#[derive(Deserialize, JsonSchema)]
pub struct WaitArgs {
    /// Event kinds (any: none given).
    kinds: Option<Vec<String>>,
    /// Only events about this node.
    node: Option<String>,
    /// Give up after this many seconds (default 30).
    timeout_s: Option<f64>,
}

impl State {
    /// A node's JSON (the CLI's shape) and its line.
    fn node(&self, n: &Node) -> (Value, String) {
        let v = node_json(self.seg, n, &Names::for_node(self.seg, n), Some(&path_of(self.seg, n.handle())));
        (v, node_line(&Style { color: false }, n))
    }

    /// The claim this server holds on `task`.
    fn held(&self, task: &str) -> Result<Claim, Fail> {
        let h = resolve::node(self.seg, task)?;
        let claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        claims.get(&h).copied().ok_or_else(|| {
            Fail::new(
                "not_claimed",
                crate::fail::exit::CONFLICT,
                format!("{task:?} is not claimed through this server"),
                "claim it first with claim_next",
            )
        })
    }

    fn forget(&self, h: Handle) {
        self.claims.lock().unwrap_or_else(|p| p.into_inner()).remove(&h);
    }

    fn claim_next(&self, a: ClaimNextArgs) -> Answer {
        let seg = self.seg;
        let c = a.claim(seg, self.me)?;
        self.claims.lock().unwrap_or_else(|p| p.into_inner()).insert(c.task, c);
        let (v, line) = self.node(&seg.read(c.task)?);
        let lease = duration::format_ms(c.lease_until_ms.saturating_sub(now_ms()));
        Ok((v, format!("{line} epoch {} lease {lease}", c.epoch)))
    }

    fn complete(&self, a: CompleteArgs) -> Answer {
        let c = self.held(&a.task)?;
        let n = self.seg.complete(&c, a.note.as_deref().unwrap_or(""))?;
        self.forget(c.task);
        Ok(self.node(&n))
    }

    fn fail(&self, a: FailArgs) -> Answer {
        let c = self.held(&a.task)?;
        let n = self.seg.fail(&c, &a.reason)?;
        self.forget(c.task);
        Ok(self.node(&n))
    }

    fn progress(&self, a: ProgressArgs) -> Answer {
        let c = self.held(&a.task)?;
        let pct = u8::try_from(a.percent)
            .ok()
            .filter(|p| *p <= 100)
            .ok_or_else(|| Fail::usage(format!("percent {} is out of range", a.percent), "give 0 to 100"))?;
        let n = self.seg.progress_noted(&c, pct, a.note.as_deref().unwrap_or(""))?;
        // Progress extends the lease: keep the claim's copy current.
        if let Some(held) = self.claims.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&c.task) {
            held.lease_until_ms = n.lease_until_ms();
        }
        Ok(self.node(&n))
    }

    fn add_task(&self, a: AddTaskArgs) -> Answer {
        let args = AddArgs {
            kind: NodeKind::Task,
            name: a.name,
            parent: a.parent,
            desc: a.description,
            priority: a.priority.unwrap_or(0),
            value: 0.0,
            blocked_by: a.blocked_by.unwrap_or_default(),
            assignee: a.assignee.unwrap_or_default(),
            status: "ready".into(),
            if_absent: false,
        };
        if args.priority > 255 {
            return Err(Fail::usage(format!("priority {} is out of range", args.priority), "give 0 to 255"));
        }
        Ok(self.node(&nodes::add(self.seg, &args)?))
    }

    fn show(&self, a: ShowArgs) -> Answer {
        Ok(self.node(&self.seg.read(resolve::node(self.seg, &a.node)?)?))
    }

    fn list(&self, a: ListArgs) -> Answer {
        let seg = self.seg;
        let limit = a.limit.unwrap_or(50);
        // An answer is read by a model: at most a thousand nodes.
        if !(1..=1000).contains(&limit) {
            return Err(Fail::usage(
                format!("limit {limit} is out of range"),
                "give 1 to 1000; narrow with under, status or label",
            ));
        }
        let q = Query {
            status: a.status.as_deref().map(status).transpose()?,
            assignee: a.assignee.as_deref().map(principal).transpose()?.map(|p| p.key()),
            under: a.under.as_deref().map(|u| resolve::node(seg, u)).transpose()?,
            label: a.label.as_deref().map(crate::cmd::labels::label_key).transpose()?,
            limit: limit as usize,
            ..Query::default()
        };
        let mut found = Vec::new();
        let stats = seg.query(&q, &mut found)?;
        let names = Names::load(seg);
        let list: Vec<Value> =
            found.iter().map(|n| node_json(seg, n, &names, Some(&path_of(seg, n.handle())))).collect();
        let line = format!("{} node(s){}", found.len(), if stats.limited { ", more match (raise limit)" } else { "" });
        Ok((json!({ "nodes": list, "count": found.len(), "truncated": stats.limited }), line))
    }

    fn doc_put(&self, a: DocPutArgs) -> Answer {
        let seg = self.seg;
        let parent = resolve::node(seg, &a.task)?;
        let claim = self.claims.lock().unwrap_or_else(|p| p.into_inner()).get(&parent).copied();
        let bytes = a.content.as_bytes();
        let content_type = docs::guess_type(Some(&std::path::PathBuf::from(&a.name)), bytes);
        let doc = docs::put_bytes(seg, parent, &a.name, &content_type, bytes, claim)?;
        if claim.is_some() {
            // Putting under the claim renewed its lease.
            let until = seg.read(parent)?.lease_until_ms();
            if let Some(held) = self.claims.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&parent) {
                held.lease_until_ms = until;
            }
        }
        let n = seg.read(doc)?;
        let line = format!("{} document v{} {} bytes {}", n.uuid(), n.version(), bytes.len(), path_of(seg, doc));
        Ok((node_json(seg, &n, &Names::for_node(seg, &n), Some(&path_of(seg, doc))), line))
    }

    fn doc_get(&self, a: DocGetArgs) -> Answer {
        let v = docs::document_json(self.seg, resolve::node(self.seg, &a.path)?)?;
        let line = format!(
            "{} ({} bytes, {})",
            v["path"].as_str().unwrap_or(""),
            v["len"],
            v["content_type"].as_str().unwrap_or("")
        );
        Ok((v, line))
    }

    fn wait(&self, a: WaitArgs) -> Answer {
        let timeout = seconds(a.timeout_s.unwrap_or(30.0), duration::timeout, "timeout_s")?;
        let kinds = a.kinds.unwrap_or_default();
        let e = crate::cmd::events::wait_any(self.seg, &kinds, a.node.as_deref(), timeout)?;
        let v = crate::cmd::events::event_json(self.seg, &e);
        let line = format!("event {} {} node {}", e.seq(), e.kind(), v["node"].as_str().unwrap_or("-"));
        Ok((v, line))
    }

    fn send(&self, a: SendArgs) -> Answer {
        let to = principal(&a.to)?;
        let h = self.seg.send(self.me, &to, a.thread.as_deref(), a.text.as_bytes())?;
        let info = self.seg.read_message(h)?.info;
        let line = format!("sent {} to {} ({} bytes)", info.id, info.to, info.len);
        Ok((crate::cmd::mail::info_json(&info), line))
    }

    fn inbox(&self, a: InboxArgs) -> Answer {
        let seg = self.seg;
        if let Some(w) = a.wait_s {
            seg.wait_for_mail(self.me, seconds(w, duration::timeout, "wait_s")?)?;
        }
        let mut mail = Vec::new();
        seg.inbox(self.me, false, &mut mail)?;
        let mut list = Vec::new();
        let mut acked = Vec::new();
        for info in &mail {
            let Ok(m) = seg.read_message(info.handle) else { continue };
            let mut v = crate::cmd::mail::info_json(&m.info);
            v["text"] = json!(String::from_utf8_lossy(&m.body));
            list.push(v);
            if a.ack.unwrap_or(false) && seg.ack(self.me, info.handle).is_ok() {
                acked.push(m.info.id.clone());
            }
        }
        let line = format!("{} unread message(s), {} acked", list.len(), acked.len());
        Ok((json!({ "count": list.len(), "messages": list, "acked": acked }), line))
    }

    fn reserve(&self, a: ReserveArgs) -> Answer {
        let globs: Vec<&str> = a.paths.iter().map(String::as_str).collect();
        let lease = seconds(a.lease_s.unwrap_or(3600.0), duration::lease, "lease_s")?;
        let opts = worknode::ReserveOptions { lease, shared: a.shared.unwrap_or(false), ..Default::default() };
        let r = self.seg.reserve(self.me, &globs, &opts)?;
        let line = format!("reserved {} epoch {}", r.globs.join(" "), r.epoch);
        Ok((crate::cmd::reserve::reservation_json(self.seg, &r, ""), line))
    }

    fn release(&self, a: ReleaseArgs) -> Answer {
        let paths = a.paths.unwrap_or_default();
        let globs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let n = self.seg.unreserve_matching(self.me, if globs.is_empty() { None } else { Some(&globs) })?;
        Ok((json!({ "withdrawn": n }), format!("withdrew {n} glob(s)")))
    }
}

/// Whether a tool call may wait: one that does runs on a blocking thread, so it never
/// holds one of the runtime's two; the others (a few microseconds of segment work, or
/// one round trip to the broker) run where the request arrived, saving two thread
/// hand-offs per call.
pub(crate) trait MayWait {
    fn may_wait(&self) -> bool {
        false
    }
}

impl MayWait for ClaimNextArgs {
    fn may_wait(&self) -> bool {
        self.wait_s.is_some_and(|w| w > 0.0)
    }
}

impl ClaimNextArgs {
    /// Claims the best ready task these arguments select for `me` (waiting up to
    /// `wait_s` for one).
    pub(crate) fn claim(&self, seg: &Segment, me: AgentId) -> Result<Claim, Fail> {
        let filter = TaskFilter {
            kind: self.kind.as_deref().map(kind).transpose()?,
            mine: self.mine.unwrap_or(false),
            under: self.under.as_deref().map(|u| resolve::node(seg, u)).transpose()?,
            label: self.label.as_deref().map(crate::cmd::labels::label_key).transpose()?,
            ..TaskFilter::default()
        };
        let lease = seconds(self.lease_s.unwrap_or(600.0), duration::lease, "lease_s")?;
        let got = match self.wait_s {
            Some(w) => seg.claim_next_wait(&filter, me, lease, seconds(w, duration::timeout, "wait_s")?),
            None => seg.claim_next(&filter, me, lease),
        };
        got.map_err(|e| {
            let f = Fail::from(e);
            if f.code == "nothing_ready" {
                Fail { hint: "pass wait_s to wait for one".into(), ..f }
            } else {
                f
            }
        })
    }
}

impl MayWait for InboxArgs {
    fn may_wait(&self) -> bool {
        self.wait_s.is_some_and(|w| w > 0.0)
    }
}

impl MayWait for WaitArgs {
    fn may_wait(&self) -> bool {
        true
    }
}

impl MayWait for CompleteArgs {}
impl MayWait for FailArgs {}
impl MayWait for ProgressArgs {}
impl MayWait for AddTaskArgs {}
impl MayWait for ShowArgs {}
impl MayWait for ListArgs {}
impl MayWait for DocPutArgs {}
impl MayWait for DocGetArgs {}
impl MayWait for SendArgs {}
impl MayWait for ReserveArgs {}
impl MayWait for ReleaseArgs {}

impl Server {
    /// Runs one tool (on a blocking thread if it may wait) and renders its answer.
    async fn call<A: MayWait + Send + 'static>(&self, args: Args<A>, f: fn(&State, A) -> Answer) -> CallToolResult {
        let args = match args.0 {
            Ok(a) => a,
            Err(e) => {
                let hint = "the tool's inputSchema (tools/list) gives each argument's type";
                return tool_error(&Fail::usage(format!("bad arguments: {e}"), hint));
            }
        };
        let answer = if args.may_wait() {
            let st = Arc::clone(&self.st);
            match tokio::task::spawn_blocking(move || f(&st, args)).await {
                Ok(a) => a,
                Err(e) => return tool_error(&Fail::other(format!("the tool stopped: {e}"))),
            }
        } else {
            f(&self.st, args)
        };
        match answer {
            Ok((v, line)) => {
                let mut r = CallToolResult::success(vec![ContentBlock::text(line)]);
                r.structured_content = Some(v);
                r
            }
            // A change made although the call failed is named by UUID and path, as `wn` does.
            Err(f) => tool_error(&f.name_changed_node(self.st.seg)),
        }
    }
}

#[tool_router]
impl Server {
    #[tool(description = "Claim the best ready task; the server keeps its epoch.")]
    async fn claim_next(&self, Parameters(a): Parameters<Args<ClaimNextArgs>>) -> CallToolResult {
        self.call(a, State::claim_next).await
    }

    #[tool(description = "Complete a task you claimed.")]
    async fn complete(&self, Parameters(a): Parameters<Args<CompleteArgs>>) -> CallToolResult {
        self.call(a, State::complete).await
    }

    #[tool(description = "Fail a task you claimed, with a reason.")]
    async fn fail(&self, Parameters(a): Parameters<Args<FailArgs>>) -> CallToolResult {
        self.call(a, State::fail).await
    }

    #[tool(description = "Report progress on a task you claimed (renews its lease).")]
    async fn progress(&self, Parameters(a): Parameters<Args<ProgressArgs>>) -> CallToolResult {
        self.call(a, State::progress).await
    }

    #[tool(description = "Create a task (ready, or blocked while a blocker is open).")]
    async fn add_task(&self, Parameters(a): Parameters<Args<AddTaskArgs>>) -> CallToolResult {
        self.call(a, State::add_task).await
    }

    #[tool(description = "Show a node (UUID, unique prefix or /path).")]
    async fn show(&self, Parameters(a): Parameters<Args<ShowArgs>>) -> CallToolResult {
        self.call(a, State::show).await
    }

    #[tool(description = "List nodes, filtered.")]
    async fn list(&self, Parameters(a): Parameters<Args<ListArgs>>) -> CallToolResult {
        self.call(a, State::list).await
    }

    #[tool(description = "Store a text document under a task (replaces one of that name).")]
    async fn doc_put(&self, Parameters(a): Parameters<Args<DocPutArgs>>) -> CallToolResult {
        self.call(a, State::doc_put).await
    }

    #[tool(description = "Read a document.")]
    async fn doc_get(&self, Parameters(a): Parameters<Args<DocGetArgs>>) -> CallToolResult {
        self.call(a, State::doc_get).await
    }

    #[tool(description = "Wait for the next event of these kinds (about a node).")]
    async fn wait(&self, Parameters(a): Parameters<Args<WaitArgs>>) -> CallToolResult {
        self.call(a, State::wait).await
    }

    #[tool(description = "Send a message to an agent or @role.")]
    async fn send(&self, Parameters(a): Parameters<Args<SendArgs>>) -> CallToolResult {
        self.call(a, State::send).await
    }

    #[tool(description = "List unread mail; optionally wait for some, acknowledge it.")]
    async fn inbox(&self, Parameters(a): Parameters<Args<InboxArgs>>) -> CallToolResult {
        self.call(a, State::inbox).await
    }

    #[tool(description = "Reserve files by glob (others are kept off).")]
    async fn reserve(&self, Parameters(a): Parameters<Args<ReserveArgs>>) -> CallToolResult {
        self.call(a, State::reserve).await
    }

    #[tool(description = "Withdraw your reservations of these globs (none: all).")]
    async fn release(&self, Parameters(a): Parameters<Args<ReleaseArgs>>) -> CallToolResult {
        self.call(a, State::release).await
    }
}

/// What the server says of itself at `initialize`.
const INSTRUCTIONS: &str = "Work the board: claim_next, progress while working, then complete or fail; \
add_task to split work; the server holds your claims. Resources: worknode://tree, \
worknode://node/{id}, worknode://doc/{id}; subscribe to hear of changes.";

#[tool_handler(router = self.tools)]
impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        let caps = ServerCapabilities::builder().enable_tools().enable_resources().enable_resources_subscribe().build();
        ServerConfig::new(caps)
            .with_server_info(Implementation::new("worknode", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS.to_string())
    }

    async fn list_resources(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(resources::list(&self.st))
    }

    async fn list_resource_templates(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(resources::templates())
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let st = Arc::clone(&self.st);
        // The tree walks the board: off the runtime's threads, as the tools are.
        match tokio::task::spawn_blocking(move || resources::read(&st, &request.uri)).await {
            Ok(Ok(r)) => Ok(r.into()),
            Ok(Err(f)) => Err(resources::protocol_error(&f)),
            Err(e) => Err(ErrorData::internal_error(format!("the read stopped: {e}"), None)),
        }
    }

    #[allow(deprecated)] // the session form, which today's clients use
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        resources::subscribe(&self.st, &request.uri, context.peer).map_err(|f| resources::protocol_error(&f))
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        resources::unsubscribe(&self.st, &request.uri);
        Ok(())
    }

    fn accepted_subscription_filter(&self, requested: &SubscriptionFilter) -> Option<SubscriptionFilter> {
        let mut accepted = SubscriptionFilter::new();
        accepted.resource_subscriptions =
            requested.resource_subscriptions.as_deref().map(|uris| resources::acceptable(&self.st, uris));
        Some(accepted)
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let uris = context.accepted().resource_subscriptions.clone().unwrap_or_default();
        resources::listen(&self.st, &uris, context.sink());
        context.cancelled().await;
        resources::end_listen(&self.st, context.sink());
        Ok(())
    }
}
