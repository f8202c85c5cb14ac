//! The bridge's loop: local changes out, remote states in, its state on the board.
//!
//! * A thread follows the local ring and hands the loop the UUID of every node an event
//!   of another process touched (the bridge's own writes are remote ones, not news), or
//!   "rescan" when the ring lapped it.
//! * The loop keeps `view`, the join of everything known about each node, and `mine`,
//!   the state it last published. A local change is read back ([`Board::read`]),
//!   merged into `view`, and published when `view` moved; a remote state is merged the
//!   same way and written locally when the merge differs from the node ([`Board::apply`]).
//!   Publishing after applying too keeps "what this host has" in its own subject, which
//!   is how a restarted bridge tells a node deleted here while it was down from one it
//!   has not applied yet.
//! * On start the view is the stream's last state per subject (every host's), then every
//!   local node is merged in: writes made while the bridge was down are published, ones
//!   that lost are undone.
//! * NATS unreachable: local work goes on, publishes wait in `dirty` and are retried
//!   every tick; the consumer is recreated; the durable consumer resumes where this host
//!   acked.

use crate::claims::{OpenError, Refused, Register};
use crate::Args;
use async_nats::jetstream::{self, consumer::pull, stream, Context};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use uuid::Uuid;
use worknode::layout::record_flags;
use worknode::{Access, Hlc, NewNode, NodeKind, PoolError, RingError, Segment, Start, Wait};
use worknode_bridge::local::{same_content, tombstone, Applied, Board, BRIDGE_CONTAINER};
use worknode_bridge::{decode, encode, HostId, ReplicaState};

/// What the bridge was started with.
pub struct Config {
    pub args: Args,
    pub board: String,
    pub host: String,
    pub host_id: HostId,
}

/// A local change the ring follower saw.
enum Local {
    Node(Uuid),
    Rescan,
}

/// How long one NATS request may take before the bridge counts NATS unreachable.
const NATS_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the bridge retries, measures lag and writes its state.
const TICK: Duration = Duration::from_millis(500);
/// Publishes in flight at once before their acknowledgements are awaited.
const PUBLISH_WINDOW: usize = 256;
/// Local changes queued between the ring follower and the loop.
const LOCAL_QUEUE: usize = 4096;

/// What `wn stat` and `wn doctor` read of a bridge (`/bridge/<board>`, JSON).
#[derive(serde::Serialize, PartialEq, Clone, Default)]
struct Status {
    host: String,
    host_id: u32,
    nats: String,
    connected: bool,
    /// Remote states not yet delivered to this host (the consumer's pending count).
    lag: u64,
    /// Local states not yet published (NATS unreachable).
    unpublished: u64,
    /// Shared tasks whose claim register entry this host holds.
    claims_held: u64,
    published: u64,
    applied: u64,
    refused: u64,
    last_error: String,
    pid: u32,
    updated_unix_ms: u64,
}

struct Bridge<'a> {
    cfg: &'a Config,
    board: Board<'a>,
    js: Context,
    view: HashMap<Uuid, ReplicaState>,
    mine: HashMap<Uuid, ReplicaState>,
    dirty: BTreeSet<Uuid>,
    waiting: BTreeSet<Uuid>,
    status: Status,
    written_status: Option<(Status, Instant)>,
    capacity: usize,
    /// The hosts' claim register, once reached.
    register: Option<Register>,
    /// Shared tasks whose register entry this run has looked at (after a restart an
    /// entry this host held is adopted, then freed or kept with the local claim).
    adopted: HashSet<Uuid>,
    /// Nodes that were in this segment at some point of this run: one gone now was
    /// deleted here (a tombstone is sent), not "not applied yet".
    seen_here: HashSet<Uuid>,
}

fn stream_name(board: &str) -> String {
    format!("WN_{board}")
}

fn subject(board: &str, uuid: Uuid, host: HostId) -> String {
    format!("wn.{board}.n.{}.{}", uuid.simple(), host.0)
}

/// `(uuid, host)` of a subject `wn.<board>.n.<uuid>.<host>`.
fn parse_subject(s: &str) -> Option<(Uuid, HostId)> {
    let mut parts = s.rsplitn(3, '.');
    let host = parts.next()?.parse().ok()?;
    let uuid = Uuid::parse_str(parts.next()?).ok()?;
    Some((uuid, HostId(host)))
}

pub async fn run(cfg: &Config, seg: &Segment) -> Result<(), String> {
    let board = Board::new(seg, cfg.args.under.as_deref(), cfg.host_id).map_err(|e| e.to_string())?;
    let client = async_nats::ConnectOptions::new()
        // Connection changes go to the log; the loop reads the state itself each tick.
        .event_callback(|event| async move { eprintln!("worknode-bridge: NATS: {event}") })
        .connection_timeout(NATS_TIMEOUT)
        .request_timeout(Some(NATS_TIMEOUT))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(&cfg.args.nats)
        .await
        .map_err(|e| format!("cannot reach NATS at {}: {e}", cfg.args.nats))?;
    let js = jetstream::new(client.clone());
    let capacity = seg.capacities().nodes as usize;
    let mut b = Bridge {
        cfg,
        board,
        js,
        view: HashMap::new(),
        mine: HashMap::new(),
        dirty: BTreeSet::new(),
        waiting: BTreeSet::new(),
        status: Status {
            host: cfg.host.clone(),
            host_id: cfg.host_id.0,
            nats: cfg.args.nats.clone(),
            pid: std::process::id(),
            ..Status::default()
        },
        written_status: None,
        capacity,
        register: None,
        adopted: HashSet::new(),
        seen_here: HashSet::new(),
    };

    // The ring position before the first scan: nothing after it is missed.
    let start = seg.ring_tail();
    let (tx, mut rx) = mpsc::channel(LOCAL_QUEUE);
    let follower = spawn_follower(cfg.args.segment.clone(), start, tx)?;

    let mut stream = loop {
        match b.ensure_stream().await {
            Ok(s) => break s,
            Err(e) => {
                b.note_error(format!("cannot create the stream: {e}"));
                b.write_status();
                tokio::time::sleep(TICK).await;
            }
        }
    };
    b.load_view(&stream).await?;
    b.open_register().await?;
    b.rescan().await;
    b.publish_dirty().await;
    let mut tail = b.tail(&stream).await;
    let mut tick = tokio::time::interval(TICK);
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
            change = rx.recv() => {
                let Some(change) = change else { return Err("the ring follower stopped".into()) };
                b.local(change).await;
                // Drain what else is queued before publishing (one publish per node),
                // at most a queue's worth: remote states and ticks get their turn.
                for _ in 0..LOCAL_QUEUE {
                    let Ok(more) = rx.try_recv() else { break };
                    b.local(more).await;
                }
                b.publish_dirty().await;
            }
            msg = next_message(&mut tail) => {
                match msg {
                    Ok(msg) => {
                        b.remote_acked(msg).await;
                        // Everything else already delivered is applied before the
                        // republish, so a burst costs one publish window, not one
                        // round trip per message.
                        for _ in 0..PUBLISH_WINDOW {
                            let Some(t) = tail.as_mut() else { break };
                            match t.next().now_or_never() {
                                Some(Some(Ok(more))) => b.remote_acked(more).await,
                                Some(Some(Err(e))) => {
                                    b.note_error(format!("consumer: {e}"));
                                    tail = None;
                                }
                                Some(None) => tail = None,
                                None => break,
                            }
                        }
                        b.publish_dirty().await;
                    }
                    Err(e) => {
                        b.note_error(format!("consumer: {e}"));
                        tail = None;
                    }
                }
            }
            _ = tick.tick() => {
                b.status.connected = client.connection_state() == async_nats::connection::State::Connected;
                if b.register.is_none() && b.status.connected {
                    b.open_register().await?;
                    // Claims made while it was missing are registered now.
                    if b.register.is_some() {
                        b.rescan().await;
                    }
                }
                // Claims of shared tasks wait for this bridge: it says whether it can
                // answer them.
                seg.bridge_beat(b.status.connected && b.register.is_some());
                if tail.is_none() && b.status.connected {
                    if let Ok(s) = b.ensure_stream().await {
                        stream = s;
                    }
                    tail = b.tail(&stream).await;
                }
                b.retry_waiting();
                b.publish_dirty().await;
                b.measure_lag(&stream).await;
                b.write_status();
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
        if follower.is_finished() {
            return Err("the ring follower stopped".into());
        }
    }
    seg.bridge_beat(false);
    b.status.connected = false;
    b.written_status = None;
    b.write_status();
    Ok(())
}

async fn next_message(tail: &mut Option<pull::Stream>) -> Result<jetstream::Message, String> {
    match tail {
        Some(t) => match t.next().await {
            Some(Ok(m)) => Ok(m),
            Some(Err(e)) => Err(e.to_string()),
            None => Err("consumer closed".into()),
        },
        None => std::future::pending().await,
    }
}

/// Follows the ring from `start` on a thread of its own (the ring's wait parks).
fn spawn_follower(segment: String, start: u64, tx: mpsc::Sender<Local>) -> Result<std::thread::JoinHandle<()>, String> {
    let seg = Segment::attach(&segment, Access::ReadOnly).map_err(|e| e.to_string())?;
    let me = std::process::id();
    std::thread::Builder::new()
        .name("ring-follower".into())
        .spawn(move || {
            let mut reader = seg.reader(Start::At(start));
            loop {
                let sent = match reader.next(Wait::Park, Duration::from_millis(250)) {
                    Ok(ev) if ev.pid() == me => Ok(()),
                    Ok(ev) => match ev.node() {
                        Some(uuid) => tx.blocking_send(Local::Node(uuid)),
                        None => Ok(()),
                    },
                    Err(RingError::Lagged { .. }) => tx.blocking_send(Local::Rescan),
                    Err(RingError::Timeout) => {
                        if tx.is_closed() {
                            return;
                        }
                        Ok(())
                    }
                    Err(RingError::Closing) => return,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(50));
                        Ok(())
                    }
                };
                if sent.is_err() {
                    return;
                }
            }
        })
        .map_err(|e| e.to_string())
}

impl Bridge<'_> {
    fn note_error(&mut self, e: String) {
        eprintln!("worknode-bridge: {e}");
        self.status.last_error = e;
    }

    async fn ensure_stream(&self) -> Result<stream::Stream, String> {
        let config = stream::Config {
            name: stream_name(&self.cfg.board),
            subjects: vec![format!("wn.{}.n.>", self.cfg.board)],
            // The last state per node and host is all a join needs.
            max_messages_per_subject: 1,
            storage: stream::StorageType::File,
            max_message_size: worknode_bridge::MESSAGE_MAX as i32,
            ..Default::default()
        };
        tokio::time::timeout(NATS_TIMEOUT, self.js.get_or_create_stream(config))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())
    }

    /// Every host's last state of every node, merged; this host's own into `mine` too.
    async fn load_view(&mut self, stream: &stream::Stream) -> Result<(), String> {
        let mut info = stream.clone();
        let count = info.info().await.map_err(|e| e.to_string())?.state.messages;
        if count == 0 {
            return Ok(());
        }
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
                filter_subject: format!("wn.{}.n.>", self.cfg.board),
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let mut msgs = consumer.messages().await.map_err(|e| e.to_string())?;
        loop {
            let next = tokio::time::timeout(NATS_TIMEOUT * 5, msgs.next()).await;
            let msg = match next {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(e))) => return Err(format!("reading the stream: {e}")),
                Ok(None) | Err(_) => return Err("reading the stream: no answer".into()),
            };
            let pending = msg.info().map(|i| i.pending).unwrap_or(0);
            if let Some((uuid, host)) = parse_subject(&msg.subject) {
                if let Ok(state) = decode(&msg.payload) {
                    if state.uuid == uuid {
                        if host == self.cfg.host_id {
                            self.mine.insert(uuid, state.clone());
                        }
                        self.merge_in(state);
                    }
                }
            }
            if pending == 0 {
                return Ok(());
            }
        }
    }

    /// The durable consumer of this host.
    async fn tail(&mut self, stream: &stream::Stream) -> Option<pull::Stream> {
        let name = format!("wn-{}", self.cfg.host);
        let config = pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: format!("wn.{}.n.>", self.cfg.board),
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            ..Default::default()
        };
        let consumer = match stream.get_or_create_consumer(&name, config).await {
            Ok(c) => c,
            Err(e) => {
                self.note_error(format!("cannot create the consumer: {e}"));
                return None;
            }
        };
        match consumer.messages().await {
            Ok(m) => Some(m),
            Err(e) => {
                self.note_error(format!("cannot read the consumer: {e}"));
                None
            }
        }
    }

    async fn measure_lag(&mut self, stream: &stream::Stream) {
        let name = format!("wn-{}", self.cfg.host);
        let lag = async {
            let mut c: jetstream::consumer::Consumer<pull::Config> = stream.get_consumer(&name).await.ok()?;
            Some(c.info().await.ok()?.num_pending)
        };
        if let Ok(Some(lag)) = tokio::time::timeout(NATS_TIMEOUT, lag).await {
            self.status.lag = lag;
        }
        self.status.unpublished = self.dirty.len() as u64;
    }

    /// Merges `state` into the view; true when the view moved.
    fn merge_in(&mut self, state: ReplicaState) -> bool {
        let uuid = state.uuid;
        let merged = match self.view.get(&uuid) {
            Some(known) => ReplicaState::merge(known, &state),
            None => state,
        };
        if self.view.get(&uuid) == Some(&merged) {
            return false;
        }
        self.view.insert(uuid, merged);
        true
    }

    /// Folds what is news in the local node `uuid` into the view, then makes the node
    /// equal to the view (a remote write that won), and queues a publish when the view
    /// moved.
    fn sync(&mut self, uuid: Uuid) {
        if let Ok(local) = self.fold_local(uuid) {
            self.settle(uuid, local);
        }
    }

    /// Reads the local node `uuid` and merges it into the view when it is news: a
    /// change made here. A remote write applied here is not (the view has it, or a
    /// later one), nor a local write that changed nothing a host sees (a refused
    /// claim's undo, a re-put of the same bytes): sending either under a new stamp
    /// would override a concurrent real write elsewhere. A node deleted here becomes a
    /// tombstone. Returns the node as it is here (`None`: not here); `Err` when it
    /// could not be read (noted).
    fn fold_local(&mut self, uuid: Uuid) -> Result<Option<ReplicaState>, ()> {
        let known = self.view.get(&uuid).cloned();
        match self.board.read(uuid, known.as_ref()) {
            Ok(Some(local)) => {
                self.seen_here.insert(uuid);
                let news = match &known {
                    None => true,
                    Some(k) => !same_content(k, &local) && !self.board.last_write_not_news(uuid),
                };
                if news {
                    self.merge_in(local.clone());
                }
                Ok(Some(local))
            }
            Ok(None) => {
                let gone = matches!(self.board.segment().lookup(uuid), Err(PoolError::NotFound));
                // Deleted here: it was here this run, or this host had published it
                // (a delete while the bridge was down).
                let was_here = self.seen_here.contains(&uuid) || self.had(uuid);
                if let Some(k) = known.filter(|k| gone && !k.record.value.deleted && was_here) {
                    let now = self.board.segment().observe(Hlc(0));
                    self.merge_in(tombstone(&k, now, self.cfg.host_id));
                }
                Ok(None)
            }
            Err(e) => {
                self.note_error(format!("reading node {uuid}: {e}"));
                Err(())
            }
        }
    }

    /// Makes the local node (`local`, as [`Bridge::fold_local`] read it) equal to the
    /// view, and queues a publish when the view moved past what this host sent.
    fn settle(&mut self, uuid: Uuid, local: Option<ReplicaState>) {
        if let Some(merged) = self.view.get(&uuid).cloned() {
            match &local {
                Some(l) if same_content(l, &merged) => {}
                Some(_) => self.apply(&merged),
                // Made elsewhere, not applied here yet.
                None if !merged.record.value.deleted
                    && matches!(self.board.segment().lookup(uuid), Err(PoolError::NotFound)) =>
                {
                    self.apply(&merged)
                }
                None => {}
            }
        }
        if self.view.get(&uuid) != self.mine.get(&uuid) && self.view.contains_key(&uuid) {
            self.dirty.insert(uuid);
        }
    }

    /// Nodes of the view not deleted (what this segment must hold).
    fn live_in_view(&self) -> usize {
        self.view.values().filter(|s| !s.record.value.deleted).count()
    }

    /// Whether this host has had `uuid`: it published a live state of it.
    fn had(&self, uuid: Uuid) -> bool {
        self.mine.get(&uuid).is_some_and(|m| !m.record.value.deleted)
    }

    fn apply(&mut self, merged: &ReplicaState) {
        match self.board.apply(merged) {
            Ok(Applied::Written) => {
                self.status.applied += 1;
                self.waiting.remove(&merged.uuid);
                // Its children may have been waiting for it.
                if !self.waiting.is_empty() {
                    self.retry_waiting();
                }
            }
            Ok(Applied::Unchanged) => {
                self.waiting.remove(&merged.uuid);
            }
            Ok(Applied::NeedsParent(_)) => {
                self.waiting.insert(merged.uuid);
            }
            Err(e) => {
                // Retried every tick (`retry_waiting`): a busy lock or a full arena passes.
                self.waiting.insert(merged.uuid);
                self.note_error(format!("applying node {}: {e}", merged.uuid));
            }
        }
        if self.board.segment().lookup(merged.uuid).is_ok() {
            self.seen_here.insert(merged.uuid);
        }
    }

    fn retry_waiting(&mut self) {
        // Bounded: each round applies at least one node or stops.
        for _ in 0..self.waiting.len() {
            let before = self.waiting.len();
            let ids: Vec<Uuid> = self.waiting.iter().copied().collect();
            for id in ids {
                if let Some(s) = self.view.get(&id).cloned() {
                    if let Ok(Applied::Written | Applied::Unchanged) = self.board.apply(&s) {
                        self.waiting.remove(&id);
                        self.dirty.insert(id);
                    }
                } else {
                    self.waiting.remove(&id);
                }
            }
            if self.waiting.len() == before {
                break;
            }
        }
    }

    async fn local(&mut self, change: Local) {
        match change {
            Local::Node(uuid) => {
                // A claim is settled before the node is sent, so the confirmed claim
                // goes out at once (an unconfirmed one is never sent: `fold_local`).
                self.claims(uuid).await;
                self.sync(uuid);
            }
            Local::Rescan => self.rescan().await,
        }
    }

    /// Opens the claim register (noted and retried on a tick when NATS fails); an
    /// error only for a host id another host of the board has.
    async fn open_register(&mut self) -> Result<(), String> {
        match Register::open(&self.js, &self.cfg.board, self.cfg.host_id, &self.cfg.host, NATS_TIMEOUT).await {
            Ok(r) => self.register = Some(r),
            Err(OpenError::HostTaken(e)) => return Err(e),
            Err(OpenError::Unreachable(e)) => self.note_error(e),
        }
        Ok(())
    }

    /// The claim side of a local change of `uuid`: marks a replicated task shared,
    /// settles an unconfirmed claim against the register, registers a claim made before
    /// the task was shared (or before this run), frees the entry of a claim that ended.
    async fn claims(&mut self, uuid: Uuid) {
        let seg = self.board.segment();
        let Ok(h) = seg.lookup(uuid) else {
            if let Some(reg) = self.register.as_mut() {
                if let Err(e) = reg.free(uuid).await {
                    self.note_error(format!("freeing the claim of deleted task {uuid}: {e}"));
                }
            }
            return;
        };
        let Ok(node) = seg.read(h) else { return };
        if !matches!(node.kind(), Some(NodeKind::Task | NodeKind::Custom)) || !self.board.replicates(&node) {
            return;
        }
        // Shared before it is first sent, register or not: without the register its
        // claims are refused (`Offline`), never taken here alone.
        let node = if node.record().flags & record_flags::SHARED == 0 {
            match seg.mark_shared(h) {
                Ok(n) => n,
                Err(e) => {
                    self.note_error(format!("marking task {uuid} shared: {e}"));
                    return;
                }
            }
        } else {
            node
        };
        let Some(reg) = self.register.as_mut() else { return };
        let mut error = None;
        if !reg.holds(uuid) && self.adopted.insert(uuid) {
            if let Err(e) = reg.adopt(uuid).await {
                error = Some(format!("reading the claim of task {uuid}: {e}"));
            }
        }
        match seg.unconfirmed_claim(h) {
            Ok(Some(pending)) => match reg.take(uuid, pending.epoch).await {
                Ok(epoch) => match seg.confirm_claim(&pending, epoch) {
                    Ok(true) => {}
                    // Its claimer gave up meanwhile: the entry goes back.
                    Ok(false) => {
                        if let Err(e) = reg.free(uuid).await {
                            error = Some(format!("freeing the claim of task {uuid}: {e}"));
                        }
                    }
                    Err(e) => error = Some(format!("confirming the claim of task {uuid}: {e}")),
                },
                Err(Refused::Elsewhere(_)) => {
                    if let Err(e) = seg.refuse_claim(&pending) {
                        error = Some(format!("undoing the claim of task {uuid}: {e}"));
                    }
                }
                // Its claimer's wait runs out and it is told "offline".
                Err(Refused::Unreachable(e)) => error = Some(format!("claim register: {e}")),
            },
            Ok(None) => {
                let live = node.live_claimant_at(worknode::unix_ms()).is_some();
                if live && !reg.holds(uuid) {
                    match reg.take(uuid, node.claim_epoch()).await {
                        Ok(_) => {}
                        Err(Refused::Elsewhere(host)) => {
                            error = Some(format!("task {uuid} is claimed here and by host {host}: a claim made before it was shared; the other host's stands"))
                        }
                        Err(Refused::Unreachable(e)) => error = Some(format!("claim register: {e}")),
                    }
                } else if !live && reg.holds(uuid) {
                    if let Err(e) = reg.free(uuid).await {
                        error = Some(format!("freeing the claim of task {uuid}: {e}"));
                    }
                }
            }
            Err(e) => error = Some(format!("reading task {uuid}: {e}")),
        }
        self.status.claims_held = self.register.as_ref().map_or(0, |r| r.held_count() as u64);
        if let Some(e) = error {
            self.note_error(e);
        }
    }

    /// Every local node and every node of the view, synced.
    async fn rescan(&mut self) {
        let mut ids = BTreeSet::new();
        if let Err(e) = self.board.each(|n| {
            ids.insert(n.uuid());
        }) {
            self.note_error(format!("scanning the segment: {e}"));
        }
        ids.extend(self.view.keys().copied());
        // Parents before children: v7 UUIDs order by creation, so a parent usually
        // comes first; `waiting` catches the rest.
        for id in ids {
            self.sync(id);
            self.claims(id).await;
        }
        self.retry_waiting();
    }

    /// [`Bridge::remote`], then the message's ack (after applying: a bridge killed in
    /// between is handed it again, which the join makes harmless).
    async fn remote_acked(&mut self, msg: jetstream::Message) {
        self.remote(&msg.subject, &msg.payload).await;
        // Unacked (NATS gone meanwhile): redelivered later, which the join makes harmless.
        match tokio::time::timeout(NATS_TIMEOUT, msg.ack()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.note_error(format!("ack: {e}")),
            Err(_) => self.note_error("ack: NATS did not answer".into()),
        }
    }

    async fn remote(&mut self, subject: &str, payload: &[u8]) {
        let Some((uuid, host)) = parse_subject(subject) else {
            self.status.refused += 1;
            self.note_error(format!("message on an unknown subject {subject:?}"));
            return;
        };
        if host == self.cfg.host_id {
            return;
        }
        let state = match decode(payload) {
            Ok(s) if s.uuid == uuid => s,
            Ok(s) => {
                self.status.refused += 1;
                self.note_error(format!("state of node {} on the subject of node {uuid}", s.uuid));
                return;
            }
            Err(e) => {
                self.status.refused += 1;
                self.note_error(format!("refused a state from host {}: {e}", host.0));
                return;
            }
        };
        if !self.view.contains_key(&uuid) && self.view.len() >= self.capacity && self.live_in_view() >= self.capacity {
            self.status.refused += 1;
            self.note_error(format!("more nodes on the board than this segment holds ({})", self.capacity));
            return;
        }
        // The clock orders every later local write after it.
        self.board.segment().observe(Hlc(state.latest().hlc));
        // Local changes not yet folded in are merged first (read against the view as
        // it was), so a remote write that loses to one of them does not overwrite it.
        let Ok(local) = self.fold_local(uuid) else {
            // The state is kept (the message is acked): applied by the next retry.
            self.merge_in(state);
            self.waiting.insert(uuid);
            return;
        };
        self.merge_in(state);
        self.settle(uuid, local);
        // A task made elsewhere is shared from its first write here.
        self.claims(uuid).await;
    }

    async fn publish_dirty(&mut self) {
        while !self.dirty.is_empty() {
            // Up to PUBLISH_WINDOW messages in flight, then their acks: one round trip
            // per window, not per node.
            let mut in_flight = Vec::new();
            let ids: Vec<Uuid> = self.dirty.iter().copied().take(PUBLISH_WINDOW).collect();
            for uuid in ids {
                let Some(state) = self.view.get(&uuid).cloned() else {
                    self.dirty.remove(&uuid);
                    continue;
                };
                let bytes = match encode(&state) {
                    Ok(b) => b,
                    Err(e) => {
                        self.dirty.remove(&uuid);
                        self.note_error(format!("node {uuid} cannot be sent: {e}"));
                        continue;
                    }
                };
                let subject = subject(&self.cfg.board, uuid, self.cfg.host_id);
                match tokio::time::timeout(NATS_TIMEOUT, self.js.publish(subject, Bytes::from(bytes))).await {
                    Ok(Ok(ack)) => in_flight.push((uuid, state, ack)),
                    Ok(Err(e)) => {
                        self.note_error(format!("publish: {e}"));
                        break;
                    }
                    Err(_) => {
                        self.note_error("publish: NATS did not answer".into());
                        break;
                    }
                }
            }
            let sent = in_flight.len();
            let mut failed = false;
            // One deadline for the whole window: a stalled JetStream costs one timeout.
            let deadline = tokio::time::Instant::now() + NATS_TIMEOUT;
            for (uuid, state, ack) in in_flight {
                if failed {
                    break;
                }
                match tokio::time::timeout_at(deadline, ack).await {
                    Ok(Ok(_)) => {
                        // Unless it changed again meanwhile (then it is sent again).
                        if self.view.get(&uuid) == Some(&state) {
                            self.dirty.remove(&uuid);
                        }
                        self.mine.insert(uuid, state);
                        self.status.published += 1;
                    }
                    Ok(Err(e)) => {
                        self.note_error(format!("publish: {e}"));
                        failed = true;
                    }
                    Err(_) => {
                        self.note_error("publish: NATS did not acknowledge".into());
                        failed = true;
                    }
                }
            }
            if failed || sent == 0 {
                // Retried on the next tick.
                break;
            }
        }
        self.status.unpublished = self.dirty.len() as u64;
    }

    /// Writes the state document `/bridge/<board>` when it changed, or every 5 s.
    fn write_status(&mut self) {
        let mut shown = self.status.clone();
        shown.unpublished = self.dirty.len() as u64;
        let fresh =
            self.written_status.as_ref().is_some_and(|(s, at)| *s == shown && at.elapsed() < Duration::from_secs(5));
        if fresh {
            return;
        }
        let mut stamped = shown.clone();
        stamped.updated_unix_ms = worknode::unix_ms();
        let Ok(json) = serde_json::to_vec(&stamped) else { return };
        let seg = self.board.segment();
        let result = (|| -> Result<(), String> {
            let container = match seg.child_named(seg.root(), BRIDGE_CONTAINER).map_err(|e| e.to_string())? {
                Some(h) => h,
                None => seg
                    .add(seg.root(), &NewNode::new(NodeKind::Container, BRIDGE_CONTAINER))
                    .map_err(|e| e.to_string())?,
            };
            match seg.child_named(container, &self.cfg.board).map_err(|e| e.to_string())? {
                Some(doc) => {
                    seg.replace_document(doc, "application/json", &json).map(|_| ()).map_err(|e| e.to_string())
                }
                None => seg
                    .put_document(container, &self.cfg.board, "application/json", &json)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            }
        })();
        match result {
            Ok(()) => self.written_status = Some((shown, Instant::now())),
            Err(e) => eprintln!("worknode-bridge: cannot write /{BRIDGE_CONTAINER}/{}: {e}", self.cfg.board),
        }
    }
}
