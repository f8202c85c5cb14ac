//! The MCP server's resources — the tree, a node, a document — and subscriptions to them.
//!
//! URIs: `worknode://tree` (the tree as `wn tree` draws it, at most [`TREE_LINES`] lines),
//! `worknode://node/{id}` (a node's JSON, the CLI's shape) and `worknode://doc/{id}` (a
//! document's content, typed by its content type); `{id}` is what the CLI takes: a UUID, a
//! unique prefix, or a /path.
//!
//! Subscriptions are kept by node UUID, so a renamed or moved task stays watched. One
//! watcher thread tails the event ring, parked on its futex between events (no polling):
//! each event about a subscribed node sends `notifications/resources/updated` for its URI,
//! and every event about any node, for the tree. Events already in the ring when the
//! watcher wakes are read in one batch, so a burst costs one notice per URI. A watcher
//! that fell behind the ring notifies every subscription: it cannot know what it missed.
//!
//! Both forms of subscribing are served: the session form (`resources/subscribe`, which
//! today's clients use) and the `subscriptions/listen` stream of protocol 2026-07-28.

use super::State;
use crate::cmd::nodes::tree_lines;
use crate::fail::{exit, Fail};
use crate::output::{node_json, Names, Style};
use crate::resolve::{self, path_of};
use base64::Engine as _;
use rmcp::model::{
    ListResourceTemplatesResult, ListResourcesResult, ReadResourceResult, Resource, ResourceContents, ResourceTemplate,
    ResourceUpdatedNotificationParam,
};
use rmcp::service::SubscriptionSink;
use rmcp::{ErrorData, Peer, RoleServer};
use serde_json::json;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use uuid::Uuid;
use worknode::{NodeKind, RingError, Segment, Start, Wait};

/// The tree's URI.
pub(super) const TREE: &str = "worknode://tree";
const NODE: &str = "worknode://node/";
const DOC: &str = "worknode://doc/";
/// Lines of the tree resource: about 40 KB, what a model can take in one read.
const TREE_LINES: usize = 400;
/// URIs one server watches at once; a client that wants more watches the tree.
const MAX_SUBSCRIPTIONS: usize = 256;
/// Longest URI taken (a /path of 64 levels of 64-byte names, and the scheme).
const MAX_URI: usize = 4200;
/// Events read in one batch before notices go out.
const BATCH: usize = 4096;

/// What a URI names.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Tree,
    Node(Uuid),
    Doc(Uuid),
}

/// Where a subscription's notices go.
#[derive(Clone)]
enum Notifier {
    /// `resources/subscribe`: the client's session.
    Session(Peer<RoleServer>),
    /// `subscriptions/listen`: that stream (known by its request id), until cancelled.
    Listen(SubscriptionSink),
}

impl Notifier {
    async fn updated(&self, uri: String) {
        // A notice that cannot be sent is dropped: the client has gone or cancelled, and
        // its subscriptions leave with it.
        match self {
            Notifier::Session(peer) => {
                let _ = peer.notify_resource_updated(ResourceUpdatedNotificationParam::new(uri)).await;
            }
            Notifier::Listen(sink) => {
                let _ = sink.notify_resource_updated(uri).await;
            }
        }
    }
}

struct Subscription {
    uri: String,
    target: Target,
    to: Notifier,
}

/// The subscriptions of one server, and its watcher.
#[derive(Default)]
pub(super) struct Watch {
    subs: Mutex<Vec<Subscription>>,
    started: AtomicBool,
    stopped: AtomicBool,
}

impl Watch {
    /// Stops the watcher (the server is shutting down).
    pub(super) fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscription>> {
        self.subs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reads the node a `{id}` names, checking it is a document when `doc`.
fn target(seg: &Segment, uri: &str) -> Result<Target, Fail> {
    let unknown = || {
        Fail::usage(
            format!("unknown resource {:?}", crate::output::clean(&uri[..uri.len().min(80)])),
            "use worknode://tree, worknode://node/{id} or worknode://doc/{id} (UUID, prefix or /path)",
        )
    };
    if uri.len() > MAX_URI {
        return Err(Fail::usage(format!("the URI is {} bytes", uri.len()), format!("at most {MAX_URI}")));
    }
    if uri == TREE {
        return Ok(Target::Tree);
    }
    let (id, doc) = match (uri.strip_prefix(NODE), uri.strip_prefix(DOC)) {
        (Some(id), _) => (id, false),
        (_, Some(id)) => (id, true),
        _ => return Err(unknown()),
    };
    let n = seg.read(resolve::node(seg, id)?)?;
    if doc && n.kind() != Some(NodeKind::Document) {
        return Err(Fail::usage(
            format!("{id:?} is a {}, not a document", n.kind().map_or("node", |k| k.as_str())),
            format!("read it as worknode://node/{}", n.uuid()),
        ));
    }
    Ok(if doc { Target::Doc(n.uuid()) } else { Target::Node(n.uuid()) })
}

/// A failure as a protocol error: resources have no `isError` result. The CLI's code,
/// hint and exit ride in `data`.
pub(super) fn protocol_error(f: &Fail) -> ErrorData {
    let data = Some(json!({ "code": f.code, "hint": f.hint, "exit": f.exit }));
    let message = if f.hint.is_empty() { f.message.clone() } else { format!("{} ({})", f.message, f.hint) };
    if f.exit == exit::NOT_FOUND {
        ErrorData::resource_not_found(message, data)
    } else {
        ErrorData::invalid_params(message, data)
    }
}

/// `resources/read`.
pub(super) fn read(st: &State, uri: &str) -> Result<ReadResourceResult, Fail> {
    let seg = st.seg;
    let contents = match target(seg, uri)? {
        Target::Tree => {
            let (mut lines, cut) = tree_lines(seg, seg.root(), None, &Style { color: false }, TREE_LINES)?;
            if cut {
                lines.push(format!("… cut at {TREE_LINES} lines: read worknode://node/{{id}}, or use the list tool"));
            }
            ResourceContents::text(lines.join("\n"), uri).with_mime_type("text/plain")
        }
        Target::Node(id) => {
            let n = seg.read(seg.lookup(id)?)?;
            let v = node_json(seg, &n, &Names::for_node(seg, &n), Some(&path_of(seg, n.handle())));
            ResourceContents::text(v.to_string(), uri).with_mime_type("application/json")
        }
        Target::Doc(id) => {
            let mut bytes = Vec::new();
            let info = seg.get_document(seg.lookup(id)?, &mut bytes)?;
            match String::from_utf8(bytes) {
                Ok(text) => ResourceContents::text(text, uri),
                Err(e) => ResourceContents::blob(base64::engine::general_purpose::STANDARD.encode(e.as_bytes()), uri),
            }
            .with_mime_type(info.content_type)
        }
    };
    Ok(ReadResourceResult::new(vec![contents]))
}

/// `resources/list`: the tree, and each task this server holds.
pub(super) fn list(st: &State) -> ListResourcesResult {
    let seg = st.seg;
    let mut out = vec![Resource::new(TREE, "tree")
        .with_description("The board as `wn tree` draws it.")
        .with_mime_type("text/plain")];
    let held: Vec<_> = st.claims.lock().unwrap_or_else(|p| p.into_inner()).keys().copied().collect();
    for h in held {
        let Ok(n) = seg.read(h) else { continue };
        out.push(
            Resource::new(format!("{NODE}{}", n.uuid()), path_of(seg, h))
                .with_description("A task you hold.")
                .with_mime_type("application/json"),
        );
    }
    ListResourcesResult::with_all_items(out)
}

/// `resources/templates/list`.
pub(super) fn templates() -> ListResourceTemplatesResult {
    ListResourceTemplatesResult::with_all_items(vec![
        ResourceTemplate::new(format!("{NODE}{{id}}"), "node")
            .with_description("A node as JSON; id: UUID, prefix or /path.")
            .with_mime_type("application/json"),
        ResourceTemplate::new(format!("{DOC}{{id}}"), "document").with_description("A document's content."),
    ])
}

/// `resources/subscribe`: notices go to the client's session.
pub(super) fn subscribe(st: &State, uri: &str, peer: Peer<RoleServer>) -> Result<(), Fail> {
    let target = target(st.seg, uri)?;
    {
        let mut subs = st.watch.lock();
        let known = subs.iter().any(|s| s.uri == uri && matches!(s.to, Notifier::Session(_)));
        if !known {
            if subs.len() >= MAX_SUBSCRIPTIONS {
                return Err(too_many());
            }
            subs.push(Subscription { uri: uri.to_string(), target, to: Notifier::Session(peer) });
        }
    }
    start_watcher(st);
    Ok(())
}

/// `resources/unsubscribe`.
pub(super) fn unsubscribe(st: &State, uri: &str) {
    st.watch.lock().retain(|s| !(s.uri == uri && matches!(s.to, Notifier::Session(_))));
}

fn too_many() -> Fail {
    Fail::new(
        "full",
        exit::FULL,
        format!("this server already watches {MAX_SUBSCRIPTIONS} resources"),
        "unsubscribe from some, or subscribe to worknode://tree",
    )
}

/// Of the URIs a `subscriptions/listen` asks for, those that name something.
pub(super) fn acceptable(st: &State, uris: &[String]) -> Vec<String> {
    uris.iter().filter(|u| target(st.seg, u).is_ok()).take(MAX_SUBSCRIPTIONS).cloned().collect()
}

/// Starts watching `uris` for a `subscriptions/listen` stream, until [`end_listen`].
pub(super) fn listen(st: &State, uris: &[String], sink: &SubscriptionSink) {
    {
        let mut subs = st.watch.lock();
        for uri in uris {
            if subs.len() >= MAX_SUBSCRIPTIONS {
                break;
            }
            // Checked when accepted; a node deleted since is simply never updated.
            if let Ok(target) = target(st.seg, uri) {
                subs.push(Subscription { uri: uri.clone(), target, to: Notifier::Listen(sink.clone()) });
            }
        }
    }
    start_watcher(st);
}

/// Forgets the subscriptions of a `subscriptions/listen` stream that ended.
pub(super) fn end_listen(st: &State, sink: &SubscriptionSink) {
    st.watch.lock().retain(|s| !matches!(&s.to, Notifier::Listen(k) if k.id() == sink.id()));
}

fn start_watcher(st: &State) {
    let seg = st.seg;
    let watch = std::sync::Arc::clone(&st.watch);
    let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
    if st.watch.started.swap(true, Ordering::Relaxed) {
        return;
    }
    // Nothing to release when it ends: the thread lives as long as the server.
    let spawned = std::thread::Builder::new().name("mcp-watch".into()).spawn(move || watcher(seg, &watch, &rt));
    if let Err(e) = spawned {
        st.watch.started.store(false, Ordering::Relaxed);
        eprintln!("wn mcp: resource subscriptions will not be updated: cannot start a thread: {e}");
    }
}

/// Tails the ring and sends the notices (see the module header).
fn watcher(seg: &'static Segment, watch: &Watch, rt: &tokio::runtime::Handle) {
    let mut reader = seg.reader(Start::Now);
    let mut touched: HashSet<Uuid> = HashSet::new();
    while !watch.stopped.load(Ordering::Relaxed) {
        touched.clear();
        let mut lagged = false;
        match reader.next(Wait::Park, Duration::from_secs(1)) {
            Ok(e) => touched.extend(e.node()),
            Err(RingError::Lagged { .. }) => lagged = true,
            Err(RingError::Timeout) => continue,
            // A ring that cannot be read now (a damaged slot, say) is tried again later.
            Err(_) => {
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        }
        for _ in 0..BATCH {
            match reader.try_next() {
                Ok(Some(e)) => touched.extend(e.node()),
                Ok(None) => break,
                Err(RingError::Lagged { .. }) => lagged = true,
                Err(_) => break,
            }
        }
        let due: Vec<(String, Notifier)> = watch
            .lock()
            .iter()
            .filter(|s| match s.target {
                _ if lagged => true,
                Target::Tree => !touched.is_empty(),
                Target::Node(id) | Target::Doc(id) => touched.contains(&id),
            })
            .map(|s| (s.uri.clone(), s.to.clone()))
            .collect();
        for (uri, to) in due {
            // One notice at a time: a client that stops reading holds the watcher back,
            // not a growing queue; the ring then laps it and it notifies everything.
            rt.block_on(to.updated(uri));
        }
    }
}
