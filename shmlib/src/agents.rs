//! The agent table: who is attached, under what name and role, and whether the process
//! acting for an agent is still alive.
//!
//! An agent's *identity* is its name, its slot and its node under `/agents`: it outlives
//! the processes acting for it, so a shell-driven agent can run many short `wn`
//! processes under one name. Its claims are held by their lease, not by any process.
//!
//! A library agent can also open a *session* ([`Segment::open_session`]): the slot then
//! records the session process's owner tag, and the process connects a Unix socket to
//! the daemon. The kernel closes that socket when the process dies, however it dies; the
//! daemon reads EOF and reaps the agent at once: it releases the agent's claims (tasks
//! back to ready), repairs anything it held mid-write, emits `agent_lost` and frees the
//! slot. Where no daemon runs, the daemon's periodic check of session owner tags (pid +
//! start time) catches the death when it starts.
//!
//! Joins and leaves are serialised by one owner lock in the header (they are rare);
//! looking agents up never takes it.

use crate::error::PoolError;
use crate::event::{EventKind, NewEvent};
use crate::genstate::{gen_of, next_generation, pack, state_of};
use crate::layout::{hdr, AgentSlot, Region, AGENT_NAME_MAX, AGENT_ROLE_MAX};
use crate::node::{Handle, NewNode, NodeKind, Status};
use crate::ownerlock;
use crate::segment::Segment;
use crate::sync::{load_words, AtomicU64, Ordering};
use crate::sys::OwnerTag;
use crate::Hlc;
use std::mem::{offset_of, size_of};
use uuid::Uuid;

const SLOT_WORDS: usize = size_of::<AgentSlot>() / 8;
const FREE: u64 = 0;
const LIVE: u64 = 2;

/// Names an agent slot at one generation (a reused slot is a different agent).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct AgentId {
    /// Slot index in the agent table.
    pub index: u16,
    /// Slot generation.
    pub generation: u32,
}

impl std::fmt::Display for AgentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "agent#{}:{}", self.index, self.generation)
    }
}

/// An agent as copied out of the table.
#[derive(Clone, Debug)]
pub struct AgentInfo {
    /// Its id.
    pub id: AgentId,
    /// Unique name.
    pub name: String,
    /// Role (free text: `architect`, `backend`, …).
    pub role: String,
    /// UUID of its node.
    pub uuid: Uuid,
    /// Its node under `/agents`.
    pub node: Handle,
    /// Pid of the process holding a session, if any.
    pub session_pid: Option<u32>,
    /// Whether that session's process still runs.
    pub session_alive: bool,
    /// Last sign of life, Unix ms.
    pub heartbeat_ms: u64,
    /// When it joined.
    pub joined: Hlc,
    /// Wake-ups its blocking claims were sent (a counter; changes that readied a task
    /// for it).
    pub claim_wakes: u64,
    /// Its processes parked in a blocking claim now.
    pub claim_parked: u8,
    /// The event cursor it recorded ([`Segment::set_agent_cursor`]; the ring's tail when
    /// it joined): how far it says it has read.
    pub cursor: u64,
}

/// A text field of an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AgentField {
    /// Its name.
    Name,
    /// Its role.
    Role,
}

impl std::fmt::Display for AgentField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AgentField::Name => "name",
            AgentField::Role => "role",
        })
    }
}

/// Why an agent operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AgentError {
    /// Every agent slot is taken.
    TableFull {
        /// Capacity of the table.
        capacity: u32,
    },
    /// A name longer than the limit, or empty.
    BadName {
        /// Bytes given.
        len: usize,
    },
    /// A name or role holding a control character (a terminal escape, a newline, …).
    ControlCharacter {
        /// Which of the two.
        field: AgentField,
        /// Byte offset of the first one.
        at: usize,
    },
    /// A name holding `/` (an agent's name is a path element, `/agents/NAME`).
    NameHasSlash {
        /// Byte offset of the first one.
        at: usize,
    },
    /// A name starting with `@`, which addresses a role (`@tester`), never an agent.
    NameStartsWithAt,
    /// A role longer than the limit.
    RoleTooLong {
        /// Bytes given.
        len: usize,
    },
    /// No live agent with that name or id.
    NotFound,
    /// Another live process already holds a session for this agent.
    SessionTaken {
        /// Its pid.
        pid: u32,
    },
    /// The join lock is held by a live process for too long.
    Busy,
    /// A node operation failed.
    Pool(PoolError),
}

impl From<PoolError> for AgentError {
    fn from(e: PoolError) -> Self {
        AgentError::Pool(e)
    }
}

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentError::TableFull { capacity } => write!(f, "agent table full ({capacity} slots)"),
            AgentError::BadName { len } => write!(f, "agent name is {len} bytes, not 1 to {AGENT_NAME_MAX}"),
            AgentError::ControlCharacter { field, at } => {
                write!(f, "agent {field} has a control character at byte {at}")
            }
            AgentError::NameHasSlash { at } => write!(f, "agent name has a '/' at byte {at}"),
            AgentError::NameStartsWithAt => write!(f, "agent name starts with '@'"),
            AgentError::RoleTooLong { len } => write!(f, "agent role is {len} bytes, the limit is {AGENT_ROLE_MAX}"),
            AgentError::NotFound => write!(f, "no such agent"),
            AgentError::SessionTaken { pid } => write!(f, "process {pid} already holds a session for this agent"),
            AgentError::Busy => write!(f, "the agent table is locked by another process for too long"),
            AgentError::Pool(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for AgentError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AgentError::Pool(e) => Some(e),
            _ => None,
        }
    }
}

fn text(bytes: &[u8], len: u8) -> String {
    String::from_utf8_lossy(&bytes[..(len as usize).min(bytes.len())]).into_owned()
}

/// A view of one agent slot's words.
#[derive(Clone, Copy)]
pub(crate) struct AgentSlotView<'a> {
    w: &'a [AtomicU64],
}

impl<'a> AgentSlotView<'a> {
    /// `claim_wake`: the futex word of this agent's blocking claims (its low half).
    pub(crate) fn claim_wake(&self) -> &'a AtomicU64 {
        &self.w[offset_of!(AgentSlot, claim_wake) / 8]
    }
    /// `claim_filter`, `claim_under`, `claim_label`, `claim_assignee`.
    pub(crate) fn claim_filter_words(&self) -> [&'a AtomicU64; 4] {
        [
            &self.w[offset_of!(AgentSlot, claim_filter) / 8],
            &self.w[offset_of!(AgentSlot, claim_under) / 8],
            &self.w[offset_of!(AgentSlot, claim_label) / 8],
            &self.w[offset_of!(AgentSlot, claim_assignee) / 8],
        ]
    }
    /// `claim_parkers`: owner tags of parked claimers, 0 = a free place.
    pub(crate) fn claim_parkers(&self) -> &'a [AtomicU64] {
        let at = offset_of!(AgentSlot, claim_parkers) / 8;
        &self.w[at..at + crate::layout::CLAIM_PARKERS]
    }
    /// Whether the slot holds a live agent, and which.
    pub(crate) fn live_id(&self, index: u16) -> Option<AgentId> {
        let gs = self.gen_state().load(Ordering::Acquire);
        (state_of(gs) == LIVE).then_some(AgentId { index, generation: gen_of(gs) })
    }
    /// The agent's name and role keys (the slot is live; its identity never changes
    /// while live).
    pub(crate) fn keys(&self) -> [Option<crate::PrincipalKey>; 2] {
        let a = self.copy();
        let name = std::str::from_utf8(&a.name[..(a.name_len as usize).min(AGENT_NAME_MAX)]).unwrap_or("");
        let role = std::str::from_utf8(&a.role[..(a.role_len as usize).min(AGENT_ROLE_MAX)]).unwrap_or("");
        [Some(crate::principal::Principal::agent_key(name)), crate::principal::Principal::role_key(role)]
    }
    fn gen_state(&self) -> &'a AtomicU64 {
        &self.w[offset_of!(AgentSlot, gen_state) / 8]
    }
    fn session(&self) -> &'a AtomicU64 {
        &self.w[offset_of!(AgentSlot, session) / 8]
    }
    fn heartbeat(&self) -> &'a AtomicU64 {
        &self.w[offset_of!(AgentSlot, heartbeat_ms) / 8]
    }
    fn cursor(&self) -> &'a AtomicU64 {
        &self.w[offset_of!(AgentSlot, cursor) / 8]
    }
    /// Copies the whole slot. The identity part is written once, before the slot goes
    /// live (Release), and never changes while live, so an Acquire load of a live
    /// `gen_state` before the copy makes it consistent.
    fn copy(&self) -> AgentSlot {
        let mut words = [0u64; SLOT_WORDS];
        load_words(self.w, &mut words);
        bytemuck::cast(words)
    }
}

impl Segment {
    pub(crate) fn agent_slot(&self, index: u16) -> Option<AgentSlotView<'_>> {
        let r = self.region(Region::Agents);
        if index as u64 >= r.capacity {
            return None;
        }
        self.map
            .words_at(r.offset as usize + index as usize * size_of::<AgentSlot>(), SLOT_WORDS)
            .map(|w| AgentSlotView { w })
    }

    fn live_agent(&self, id: AgentId) -> Result<(AgentSlotView<'_>, AgentSlot), AgentError> {
        let s = self.agent_slot(id.index).ok_or(AgentError::NotFound)?;
        // SYNC POINT: pairs with the Release gen/state store in `join_locked` (the slot went live
        // with its identity complete).
        let gs = s.gen_state().load(Ordering::Acquire);
        if gs != pack(id.generation, LIVE) {
            return Err(AgentError::NotFound);
        }
        Ok((s, s.copy()))
    }

    fn info_of(&self, id: AgentId, a: &AgentSlot) -> AgentInfo {
        let tag = OwnerTag(a.session);
        AgentInfo {
            id,
            name: text(&a.name, a.name_len),
            role: text(&a.role, a.role_len),
            uuid: Uuid::from_bytes(a.uuid),
            node: Handle::from_raw(a.node).unwrap_or(Handle { index: 0, generation: 0 }),
            session_pid: (a.session != 0).then(|| tag.pid()),
            session_alive: a.session != 0 && tag.is_alive(),
            heartbeat_ms: a.heartbeat_ms,
            joined: Hlc(a.joined),
            claim_wakes: a.claim_wake,
            claim_parked: a.claim_parkers.iter().filter(|t| **t != 0).count() as u8,
            cursor: a.cursor,
        }
    }

    /// Every live agent, in slot order (`out` is cleared first).
    pub fn agents(&self, out: &mut Vec<AgentInfo>) {
        out.clear();
        for i in 0..self.caps.agents.min(u16::MAX as u32) as u16 {
            let Some(s) = self.agent_slot(i) else { break };
            let gs = s.gen_state().load(Ordering::Acquire);
            if state_of(gs) == LIVE {
                let id = AgentId { index: i, generation: gen_of(gs) };
                out.push(self.info_of(id, &s.copy()));
            }
        }
    }

    /// Calls `f` with every live agent's raw slot (for the journal and export).
    pub fn for_each_agent_slot(&self, mut f: impl FnMut(u16, &AgentSlot)) {
        for i in 0..self.caps.agents.min(u16::MAX as u32) as u16 {
            let Some(s) = self.agent_slot(i) else { break };
            let gs = s.gen_state().load(Ordering::Acquire);
            if state_of(gs) == LIVE {
                let a = s.copy();
                if a.gen_state == gs {
                    f(i, &a);
                }
            }
        }
    }

    /// The live agent named `name`.
    pub fn find_agent(&self, name: &str) -> Option<AgentId> {
        for i in 0..self.caps.agents.min(u16::MAX as u32) as u16 {
            let s = self.agent_slot(i)?;
            let gs = s.gen_state().load(Ordering::Acquire);
            if state_of(gs) != LIVE {
                continue;
            }
            let a = s.copy();
            if a.name_len as usize == name.len() && &a.name[..name.len()] == name.as_bytes() {
                return Some(AgentId { index: i, generation: gen_of(gs) });
            }
        }
        None
    }

    /// An agent's details.
    pub fn agent(&self, id: AgentId) -> Result<AgentInfo, AgentError> {
        let (_, a) = self.live_agent(id)?;
        Ok(self.info_of(id, &a))
    }

    /// The node of a live agent, read from its slot alone (no copy of the slot, no
    /// liveness check of its session: for the claim paths).
    pub(crate) fn agent_node(&self, id: AgentId) -> Option<Handle> {
        let s = self.agent_slot(id.index)?;
        if s.gen_state().load(Ordering::Acquire) != pack(id.generation, LIVE) {
            return None;
        }
        Handle::from_raw(s.w[offset_of!(AgentSlot, node) / 8].load(Ordering::Relaxed))
    }

    /// The agent whose table slot is `index` (claims record agents by slot).
    pub fn agent_at(&self, index: u16) -> Option<AgentId> {
        let gs = self.agent_slot(index)?.gen_state().load(Ordering::Acquire);
        (state_of(gs) == LIVE).then_some(AgentId { index, generation: gen_of(gs) })
    }

    /// Joins as `name` (or returns the live agent of that name: an identity outlives
    /// the processes acting for it). New agents get a node under `/agents` and an
    /// `agent_joined` event. Joining with the name of a live agent returns its id and
    /// changes nothing (the role given is then ignored).
    ///
    /// # Errors
    ///
    /// * [`AgentError::BadName`]: an empty name or one over 64 bytes;
    ///   [`AgentError::RoleTooLong`]: a role over 32 bytes;
    ///   [`AgentError::ControlCharacter`]: a control character in either.
    /// * [`AgentError::TableFull`]: every agent slot is taken.
    /// * [`AgentError::Busy`]: a live process holds the join lock too long.
    /// * [`AgentError::Pool`] with [`PoolError::ReadOnly`], [`PoolError::Closing`] or
    ///   [`PoolError::DaemonGone`]: the segment takes no writes; with
    ///   [`PoolError::PoolFull`]: no node slot for the agent's node; with
    ///   [`PoolError::EventNotAppended`]: the agent joined but its event was not appended.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::AgentError;
    /// # let name = format!("doc-join-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let me = seg.join("planner", "lead")?;
    /// assert_eq!(seg.join("planner", "lead")?, me); // the same identity
    /// assert_eq!(seg.agent(me)?.name, "planner");
    /// assert_eq!(seg.join("", "lead"), Err(AgentError::BadName { len: 0 }));
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn join(&self, name: &str, role: &str) -> Result<AgentId, AgentError> {
        if let Some(link) = self.link() {
            return link.ask_agent(crate::broker::Request::Join { name: name.to_string(), role: role.to_string() });
        }
        self.permit_agent_name(name).map_err(PoolError::from)?;
        let id = self.join_agent(name, role)?;
        if self.grant().is_some() {
            // The token's agent has joined: from now on it is this handle's actor.
            if let Ok(info) = self.agent(id) {
                self.set_granted_actor(info.node);
            }
        }
        Ok(id)
    }

    fn join_agent(&self, name: &str, role: &str) -> Result<AgentId, AgentError> {
        if !self.map.writable() {
            return Err(AgentError::Pool(PoolError::ReadOnly));
        }
        if name.is_empty() || name.len() > AGENT_NAME_MAX {
            return Err(AgentError::BadName { len: name.len() });
        }
        if let Some(at) = name.find('/') {
            // An agent's name is its node's name under /agents: a path element.
            return Err(AgentError::NameHasSlash { at });
        }
        if name.starts_with('@') {
            return Err(AgentError::NameStartsWithAt);
        }
        if role.len() > AGENT_ROLE_MAX {
            return Err(AgentError::RoleTooLong { len: role.len() });
        }
        crate::node::check_name(name).map_err(|at| AgentError::ControlCharacter { field: AgentField::Name, at })?;
        crate::node::check_name(role).map_err(|at| AgentError::ControlCharacter { field: AgentField::Role, at })?;
        if let Some(id) = self.find_agent(name) {
            return Ok(id);
        }
        let lock = self.hdr(hdr::AGENTS_LOCK);
        ownerlock::acquire(lock, self.me.0, self.lock_wait, |t| self.holder_gone(t)).map_err(|_| AgentError::Busy)?;
        let result = self.join_locked(name, role);
        ownerlock::release(lock, self.me.0);
        let id = result?;
        let node = self.agent_node(id).ok_or(AgentError::NotFound)?;
        let uuid = self.read(node)?.uuid();
        self.append_unchecked(&NewEvent::new(EventKind::AGENT_JOINED).node(uuid, 1).actor(node).topic(role))
            .map_err(|error| AgentError::Pool(PoolError::EventNotAppended { error, node }))?;
        Ok(id)
    }

    fn join_locked(&self, name: &str, role: &str) -> Result<AgentId, AgentError> {
        // Re-check under the lock: a racing join of the same name may have won.
        if let Some(id) = self.find_agent(name) {
            return Ok(id);
        }
        // The first slot whose word moves FREE -> RESERVED by compare-and-set: a slot
        // that only looks free to a stale load is never overwritten.
        let (free, generation) = (0..self.caps.agents.min(u16::MAX as u32) as u16)
            .find_map(|i| {
                let s = self.agent_slot(i)?;
                if state_of(s.gen_state().load(Ordering::Acquire)) != FREE {
                    return None;
                }
                crate::genstate::reserve(s.gen_state()).ok().map(|g| (i, g))
            })
            .ok_or(AgentError::TableFull { capacity: self.caps.agents })?;
        let s = self.agent_slot(free).ok_or(AgentError::NotFound)?;
        let made = self
            .add_node(
                self.agents_container(),
                &NewNode::new(NodeKind::Agent, name).description(role).status(Status::Ready),
            )
            .and_then(|node| self.read(node).map(|rec| (node, rec)));
        let (node, rec) = match made {
            Ok(m) => m,
            Err(e) => {
                crate::genstate::unreserve(s.gen_state(), generation);
                return Err(e.into());
            }
        };
        let mut a: AgentSlot = bytemuck::Zeroable::zeroed();
        a.gen_state = pack(generation, LIVE);
        a.heartbeat_ms = crate::clock::unix_ms();
        a.cursor = self.ring_tail();
        a.uuid = *rec.uuid().as_bytes();
        a.name[..name.len()].copy_from_slice(name.as_bytes());
        a.name_len = name.len() as u8;
        a.role[..role.len()].copy_from_slice(role.as_bytes());
        a.role_len = role.len() as u8;
        a.node = node.to_raw();
        a.joined = self.now().0;
        // Parkers of the slot's previous agent stay registered until they see it gone
        // (they unregister themselves, or the daemon clears them once dead).
        for (i, p) in s.claim_parkers().iter().enumerate() {
            a.claim_parkers[i] = p.load(Ordering::Relaxed);
        }
        let words: [u64; SLOT_WORDS] = bytemuck::cast(a);
        // Everything but gen_state first, then gen_state with Release: the slot goes
        // live with its identity complete.
        crate::sync::store_words(&s.w[1..], &words[1..]);
        // SYNC POINT: pairs with the Acquire gen/state load in `live_agent`.
        s.gen_state().store(a.gen_state, Ordering::Release);
        self.hdr(hdr::AGENTS_USED).fetch_add(1, Ordering::Relaxed);
        Ok(AgentId { index: free, generation })
    }

    /// Binds the agent to this process: its claims are released the moment this process
    /// dies (the daemon learns of it from the kernel through the session socket). Fails
    /// with [`AgentError::SessionTaken`] if another live process holds one.
    pub fn bind_session(&self, id: AgentId) -> Result<(), AgentError> {
        if let Some(link) = self.link() {
            return link.ask_unit(crate::broker::Request::BindSession { agent: id });
        }
        self.permit_agent(id).map_err(PoolError::from)?;
        // Refused before the binding, not after it: a binding whose event no journal
        // writes would outlive this process unrecorded.
        self.require_writable()?;
        let (s, _) = self.live_agent(id)?;
        let cur = s.session().load(Ordering::Acquire);
        if cur != 0 && cur != self.me.0 && OwnerTag(cur).is_alive() {
            return Err(AgentError::SessionTaken { pid: OwnerTag(cur).pid() });
        }
        s.session()
            .compare_exchange(cur, self.me.0, Ordering::AcqRel, Ordering::Relaxed)
            .map_err(|t| AgentError::SessionTaken { pid: OwnerTag(t).pid() })?;
        self.heartbeat(id)?;
        // An event, so the journal records the binding (a restored agent whose session
        // process is gone is then reaped, releasing its claims).
        let a = self.agent(id)?;
        self.append_unchecked(&NewEvent::new(EventKind::AGENT_SESSION).node(a.uuid, 0).actor(a.node))
            .map_err(|error| AgentError::Pool(PoolError::EventNotAppended { error, node: a.node }))?;
        Ok(())
    }

    /// Records a sign of life.
    pub fn heartbeat(&self, id: AgentId) -> Result<(), AgentError> {
        if let Some(link) = self.link() {
            return link.ask_unit(crate::broker::Request::Heartbeat { agent: id });
        }
        self.permit_agent(id).map_err(PoolError::from)?;
        let (s, _) = self.live_agent(id)?;
        s.heartbeat().store(crate::clock::unix_ms(), Ordering::Relaxed);
        Ok(())
    }

    /// Stores the agent's event cursor (where it will read next).
    pub fn set_agent_cursor(&self, id: AgentId, cursor: u64) -> Result<(), AgentError> {
        if let Some(link) = self.link() {
            return link.ask_unit(crate::broker::Request::SetAgentCursor { agent: id, cursor });
        }
        self.permit_agent(id).map_err(PoolError::from)?;
        let (s, _) = self.live_agent(id)?;
        s.cursor().store(cursor, Ordering::Relaxed);
        Ok(())
    }

    /// Leaves: releases the agent's claims, emits `agent_left`, deletes its node and
    /// frees its slot.
    pub fn leave(&self, id: AgentId) -> Result<(), AgentError> {
        if let Some(link) = self.link() {
            return link.ask_unit(crate::broker::Request::Leave { agent: id });
        }
        self.permit_agent(id).map_err(PoolError::from)?;
        self.retire_agent(id, EventKind::AGENT_LEFT)
    }

    /// Reaps an agent whose session process died: as [`Segment::leave`], but the event
    /// is `agent_lost`. The daemon calls this (`Daemon::reap_agent`), and so does
    /// `reap_dead_sessions` for a session process that is gone.
    pub(crate) fn reap_agent(&self, id: AgentId) -> Result<(), AgentError> {
        self.retire_agent(id, EventKind::AGENT_LOST)
    }

    /// Reaps every agent whose session process is gone. Returns how many.
    pub(crate) fn reap_dead_sessions(&self) -> usize {
        let mut reaped = 0;
        for i in 0..self.caps.agents.min(u16::MAX as u32) as u16 {
            let Some(s) = self.agent_slot(i) else { break };
            let gs = s.gen_state().load(Ordering::Acquire);
            let session = s.session().load(Ordering::Acquire);
            if state_of(gs) == LIVE && session != 0 && !OwnerTag(session).is_alive() {
                let id = AgentId { index: i, generation: gen_of(gs) };
                if self.reap_agent(id).is_ok() {
                    reaped += 1;
                }
            }
        }
        reaped
    }

    fn retire_agent(&self, id: AgentId, kind: EventKind) -> Result<(), AgentError> {
        if !self.map.writable() {
            return Err(AgentError::Pool(PoolError::ReadOnly));
        }
        let lock = self.hdr(hdr::AGENTS_LOCK);
        ownerlock::acquire(lock, self.me.0, self.lock_wait, |t| self.holder_gone(t)).map_err(|_| AgentError::Busy)?;
        let result = (|| -> Result<AgentSlot, AgentError> {
            let (s, a) = self.live_agent(id)?;
            // Free the slot first (new generation): no new claim can name it after this.
            s.gen_state().store(pack(next_generation(id.generation), FREE), Ordering::Release);
            s.session().store(0, Ordering::Release);
            self.hdr(hdr::AGENTS_USED).fetch_sub(1, Ordering::Relaxed);
            Ok(a)
        })();
        ownerlock::release(lock, self.me.0);
        let a = result?;
        if kind == EventKind::AGENT_LOST {
            // An operating counter (`wn metrics`): a statistic, ordered by nothing.
            self.hdr(hdr::AGENTS_LOST).fetch_add(1, Ordering::Relaxed);
        }
        let node = Handle::from_raw(a.node);
        self.release_claims_of(id, node, kind == EventKind::AGENT_LOST);
        if let Some(n) = node {
            self.append_unchecked(&NewEvent::new(kind).node(Uuid::from_bytes(a.uuid), 0).actor(n))
                .map_err(|error| AgentError::Pool(PoolError::EventNotAppended { error, node: n }))?;
            match self.delete_node(n, crate::DeleteMode::Recursive) {
                Ok(_) | Err(PoolError::StaleHandle) | Err(PoolError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}
