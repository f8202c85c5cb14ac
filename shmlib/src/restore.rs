//! Rebuilding a segment from saved state (the daemon's recovery from its snapshot and
//! journal, and `wn import`).
//!
//! Records are restored into the *same* slot indices and generations they had, so every
//! handle stored inside them (parents, blockers, agents) stays valid without
//! translation. The segment stays Initializing (clients wait) while the daemon's
//! [`Daemon::restore_node`] and friends write slots directly;
//! [`Daemon::finish_restore`] then derives everything else — the free list, the id
//! index, child lists (in creation order), scan summaries and counters — and
//! [`Daemon::open_for_clients`] marks it Ready. Documents' contents and sets get new blob
//! and set slots ([`Daemon::restore_document`], `restore_set`). Each of these is a
//! crate-private method here; the public API is the daemon handle's ([`Daemon`]).
//!
//! [`Daemon`]: crate::Daemon
//! [`Daemon::restore_node`]: crate::Daemon::restore_node
//! [`Daemon::finish_restore`]: crate::Daemon::finish_restore
//! [`Daemon::open_for_clients`]: crate::Daemon::open_for_clients
//! [`Daemon::restore_document`]: crate::Daemon::restore_document

use crate::error::PoolError;
use crate::freelist;
use crate::genstate::{gen_of, pack, state_of};
use crate::layout::{hdr, slot, AgentSlot, EventRecord, NodeRecord, Region, RECORD_WORDS};
use crate::node::{Handle, NodeKind};
use crate::pool::{link, summary_of, uuid_words};
use crate::segment::{Segment, SegmentState};
use crate::sync::{store_words, Ordering};
use std::mem::size_of;

/// What a restore rebuilt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreStats {
    /// Live nodes.
    pub nodes: u64,
    /// Nodes whose parent was missing, re-attached under the root.
    pub orphans: u64,
    /// Live agents.
    pub agents: u64,
    /// Events put back into the ring.
    pub events: u64,
}

impl Segment {
    /// The handle of the node restored in slot `index`.
    pub(crate) fn restored_handle(&self, index: u32) -> Result<Handle, PoolError> {
        let s = self.slot(index).ok_or(PoolError::Corrupt { what: "restored index outside the pool" })?;
        let gs = s.gen_state().load(Ordering::Acquire);
        if state_of(gs) != slot::LIVE {
            return Err(PoolError::Corrupt { what: "slot not restored" });
        }
        Ok(Handle { index, generation: gen_of(gs) })
    }

    /// Changes one field of a restored record in place (restore only).
    pub(crate) fn restore_record_field(&self, index: u32, f: impl FnOnce(&mut NodeRecord)) -> Result<(), PoolError> {
        self.require_restoring()?;
        let s = self.slot(index).ok_or(PoolError::Corrupt { what: "restored index outside the pool" })?;
        let mut words = [0u64; RECORD_WORDS];
        crate::seqlock::read_locked(s.seq(), s.copies(), &mut words);
        let mut rec: NodeRecord = bytemuck::cast(words);
        f(&mut rec);
        let words: [u64; RECORD_WORDS] = bytemuck::cast(rec);
        crate::seqlock::write_locked(s.seq(), s.copies(), &words);
        Ok(())
    }

    pub(crate) fn require_restoring(&self) -> Result<(), PoolError> {
        if self.state() == SegmentState::Initializing && self.map.writable() {
            Ok(())
        } else {
            Err(PoolError::Corrupt { what: "restore on a segment that is not being restored" })
        }
    }

    /// Writes a node into slot `index` at `generation` (restore only).
    pub(crate) fn restore_node(&self, index: u32, generation: u32, rec: &NodeRecord) -> Result<(), PoolError> {
        self.require_restoring()?;
        let s = self.slot(index).ok_or(PoolError::Corrupt { what: "restored node index outside the pool" })?;
        if generation == 0 {
            return Err(PoolError::Corrupt { what: "restored node has generation 0" });
        }
        // Blob handles of the old segment mean nothing here: contents are re-attached
        // with `restore_document`.
        let mut rec = *rec;
        rec.doc_blob = 0;
        rec.doc_len = 0;
        rec.doc_crc = 0;
        rec.set_slot = 0;
        let words: [u64; RECORD_WORDS] = bytemuck::cast(rec);
        s.seq().store(0, Ordering::Relaxed);
        store_words(s.copies()[0], &words);
        let id = uuid_words(&rec.uuid);
        s.uuid_words()[0].store(id[0], Ordering::Relaxed);
        s.uuid_words()[1].store(id[1], Ordering::Relaxed);
        s.summary().store(summary_of(&rec), Ordering::Relaxed);
        s.created().store(rec.created, Ordering::Relaxed);
        s.lock().store(0, Ordering::Relaxed);
        s.gen_state().store(pack(generation, slot::LIVE), Ordering::Release);
        Ok(())
    }

    /// Re-attaches a document's content to the node restored in slot `index` (restore
    /// only; after [`Daemon::restore_node`](crate::Daemon::restore_node)).
    pub(crate) fn restore_document(&self, index: u32, bytes: &[u8]) -> Result<(), crate::DocError> {
        self.require_restoring()?;
        let s = self.slot(index).ok_or(PoolError::Corrupt { what: "restored document index outside the pool" })?;
        let _ = s;
        let blob = self.alloc_blob(bytes)?;
        self.restore_record_field(index, |rec| {
            rec.doc_blob = blob.raw;
            rec.doc_len = blob.len;
            rec.doc_crc = blob.crc;
        })?;
        // Attached: no longer this process's to reclaim.
        self.settle_blob(blob.raw);
        Ok(())
    }

    /// Writes an agent into table slot `index` (restore only).
    pub(crate) fn restore_agent(&self, index: u16, agent: &AgentSlot) -> Result<(), PoolError> {
        self.require_restoring()?;
        let r = self.region(Region::Agents);
        if index as u64 >= r.capacity {
            return Err(PoolError::Corrupt { what: "restored agent index outside the table" });
        }
        let words = self
            .map
            .words_at(r.offset as usize + index as usize * size_of::<AgentSlot>(), size_of::<AgentSlot>() / 8)
            .ok_or(PoolError::Corrupt { what: "agent table outside the segment" })?;
        // What parked claimers left is of the processes of a past run.
        let mut agent = *agent;
        (agent.claim_wake, agent.claim_filter, agent.claim_under, agent.claim_label) = (0, 0, 0, 0);
        agent.claim_parkers = [0; crate::layout::CLAIM_PARKERS];
        agent.claim_assignee = 0;
        let a: [u64; size_of::<AgentSlot>() / 8] = bytemuck::cast(agent);
        store_words(&words[1..], &a[1..]);
        words[0].store(a[0], Ordering::Release);
        self.hdr(hdr::AGENTS_USED).fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Salvage of a state that lost its root or `/agents` container (no snapshot could
    /// be read): writes a new, empty container named `name` into free slot `index`
    /// under `parent` (the root: slot 0, no parent).
    pub(crate) fn restore_new_container(
        &self,
        index: u32,
        parent: Option<Handle>,
        name: &str,
    ) -> Result<Handle, PoolError> {
        self.require_restoring()?;
        let rec = crate::node::NewNode::new(NodeKind::Container, name).status(crate::node::Status::Ready).to_record(
            uuid::Uuid::now_v7(),
            parent,
            self.now(),
        )?;
        self.restore_node(index, 1, &rec)?;
        Ok(Handle { index, generation: 1 })
    }

    /// Puts events back into the ring (the newest `capacity` of them are kept) and
    /// continues numbering at `next_seq`.
    pub(crate) fn restore_events(&self, events: &[EventRecord], next_seq: u64) -> Result<u64, PoolError> {
        self.require_restoring()?;
        let n = self.ring().restore(events, next_seq);
        Ok(n)
    }

    /// Derives the free list, id index, child lists, summaries and counters from the
    /// restored slots. The root must be in slot 0. The segment stays Initializing until
    /// [`Daemon::open_for_clients`](crate::Daemon::open_for_clients).
    pub(crate) fn finish_restore(&self) -> Result<RestoreStats, PoolError> {
        self.require_restoring()?;
        let cap = self.caps.nodes;
        let root = self.slot(0).ok_or(PoolError::Corrupt { what: "no slot 0" })?;
        if state_of(root.gen_state().load(Ordering::Acquire)) != slot::LIVE {
            return Err(PoolError::Corrupt { what: "restored state has no root in slot 0" });
        }
        let root_h = Handle { index: 0, generation: gen_of(root.gen_state().load(Ordering::Acquire)) };
        let mut stats = RestoreStats::default();
        // Free list of every slot not restored; live ones in creation order for linking.
        let mut live: Vec<(u64, u32)> = Vec::new();
        let mut free: Vec<u32> = Vec::new();
        let index = self.index()?;
        for i in 0..cap {
            let s = self.slot(i).ok_or(PoolError::Corrupt { what: "node region outside the segment" })?;
            for w in
                [s.first_child(), s.last_child(), s.next_sibling(), s.prev_sibling(), s.child_count(), s.child_seq()]
            {
                w.store(0, Ordering::Relaxed);
            }
            if state_of(s.gen_state().load(Ordering::Relaxed)) == slot::LIVE {
                live.push((s.created().load(Ordering::Relaxed), i));
            } else {
                free.push(i);
            }
        }
        freelist::init(self.free_head(), free.iter().copied(), |i| self.slot(i).map(|s| s.next_free()))
            .map_err(|_| PoolError::Corrupt { what: "free list" })?;
        live.sort_unstable();
        let mut agents_container = None;
        for &(_, i) in &live {
            let node = self.read(Handle {
                index: i,
                generation: gen_of(self.slot(i).map_or(0, |s| s.gen_state().load(Ordering::Relaxed))),
            })?;
            index.insert(node.uuid().as_bytes(), i).map_err(|_| PoolError::Corrupt { what: "id index full" })?;
            stats.nodes += 1;
            if i == 0 {
                continue;
            }
            let mut parent = node.parent().filter(|p| self.read(*p).is_ok()).unwrap_or(root_h);
            if node.parent() != Some(parent) {
                stats.orphans += 1;
                parent = root_h;
                self.reparent_restored(i, parent)?;
            }
            if parent == root_h && node.kind() == Some(NodeKind::Container) && node.name() == "agents" {
                agents_container = Some(node.handle());
            }
            self.append_child_restored(parent.index, i)?;
        }
        self.hdr(hdr::POOL_USED).store(stats.nodes, Ordering::Relaxed);
        self.hdr(hdr::INDEX_USED).store(stats.nodes, Ordering::Relaxed);
        let agents = match agents_container {
            Some(a) => a,
            None => return Err(PoolError::Corrupt { what: "restored state has no /agents container" }),
        };
        self.set_agents_container(agents);
        stats.agents = self.hdr(hdr::AGENTS_USED).load(Ordering::Relaxed);
        stats.events = self.ring_tail().min(self.caps.events as u64);
        // The ready index is a hint derived from the records: built from them here.
        self.rebuild_ready_index();
        Ok(stats)
    }

    fn reparent_restored(&self, index: u32, parent: Handle) -> Result<(), PoolError> {
        let s = self.slot(index).ok_or(PoolError::Corrupt { what: "slot" })?;
        let mut words = [0u64; RECORD_WORDS];
        crate::seqlock::read_locked(s.seq(), s.copies(), &mut words);
        let mut rec: NodeRecord = bytemuck::cast(words);
        rec.parent = parent.to_raw();
        let words: [u64; RECORD_WORDS] = bytemuck::cast(rec);
        crate::seqlock::write_locked(s.seq(), s.copies(), &words);
        Ok(())
    }

    fn append_child_restored(&self, parent: u32, child: u32) -> Result<(), PoolError> {
        let ps = self.slot(parent).ok_or(PoolError::Corrupt { what: "parent slot" })?;
        let cs = self.slot(child).ok_or(PoolError::Corrupt { what: "child slot" })?;
        let last = ps.last_child().load(Ordering::Relaxed);
        cs.prev_sibling().store(last, Ordering::Relaxed);
        match last.checked_sub(1) {
            Some(l) => self
                .slot(l as u32)
                .ok_or(PoolError::Corrupt { what: "sibling slot" })?
                .next_sibling()
                .store(link(child), Ordering::Relaxed),
            None => ps.first_child().store(link(child), Ordering::Relaxed),
        }
        ps.last_child().store(link(child), Ordering::Relaxed);
        ps.child_count().fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
