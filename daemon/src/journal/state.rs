//! The state a journal and snapshot describe, rebuilt in memory by replaying records,
//! and written back into a fresh segment.

use super::format::Record;
use std::collections::{BTreeMap, HashMap, VecDeque};
use worknode::layout::{AgentSlot, EventRecord, NodeRecord};
use worknode::{Daemon, RestoreStats};

/// Everything needed to rebuild a segment.
#[derive(Default)]
pub struct State {
    /// Live nodes by UUID: slot index, generation, record.
    pub nodes: HashMap<[u8; 16], (u32, u32, Box<NodeRecord>)>,
    /// Live agents by table slot.
    pub agents: BTreeMap<u16, Box<AgentSlot>>,
    /// Document contents by node UUID.
    pub docs: HashMap<[u8; 16], Vec<u8>>,
    /// Observed-remove sets by node UUID.
    pub sets: HashMap<[u8; 16], worknode::OrSetState>,
    /// The newest events (at most the ring's capacity).
    pub events: VecDeque<EventRecord>,
    /// How many events to keep.
    pub keep_events: usize,
    /// The sequence number after the last event seen.
    pub next_seq: u64,
    /// Events the journal itself missed (it was lapped while the daemon was down).
    pub missed: u64,
    /// Records applied.
    pub records: u64,
    /// The highest sequence reservation on disk: every sequence ever handed out lies
    /// below it.
    pub reserved: u64,
}

impl State {
    /// An empty state keeping up to `keep_events` events.
    pub fn new(keep_events: usize) -> State {
        State { keep_events, ..State::default() }
    }

    /// Node images of layout-3 files name their assignees by agent slot: converts them
    /// to the principal keys of those agents' names, once the whole replay is applied
    /// (a snapshot writes its agents after its nodes). Returns how many assignees could
    /// not be converted (their slot holds no agent any more), which the daemon reports.
    pub fn convert_retired_assignees(&mut self) -> usize {
        let mut lost = 0;
        let agents = &self.agents;
        for (_, _, rec) in self.nodes.values_mut() {
            lost += Self::convert_one(agents, rec);
        }
        lost
    }

    fn convert_one(agents: &BTreeMap<u16, Box<AgentSlot>>, rec: &mut NodeRecord) -> usize {
        if rec.retired_assignee_slots.iter().all(|s| *s == 0) {
            return 0;
        }
        let slots = rec.retired_assignee_slots;
        rec.retired_assignee_slots = [0; worknode::layout::ASSIGNEES_MAX];
        rec.assignees = [0; worknode::layout::ASSIGNEES_MAX];
        let mut n = 0;
        let wanted = (rec.assignee_count as usize).min(slots.len());
        for slot in slots.iter().take(wanted) {
            let Some(agent) = slot.checked_sub(1).and_then(|i| agents.get(&i)) else { continue };
            let name = &agent.name[..(agent.name_len as usize).min(agent.name.len())];
            let Ok(name) = std::str::from_utf8(name) else { continue };
            let Ok(who) = worknode::Principal::parse(name) else { continue };
            rec.assignees[n] = who.key().raw();
            n += 1;
        }
        rec.assignee_count = n as u8;
        wanted - n
    }

    /// Applies one record. Images are whole records, so applying them again, or applying
    /// one newer than the event it follows, is harmless: the last image wins.
    pub fn apply(&mut self, r: Record) {
        self.records += 1;
        match r {
            Record::Event(e) => {
                self.next_seq = self.next_seq.max(e.seq.saturating_add(1));
                if self.keep_events > 0 {
                    if self.events.len() == self.keep_events {
                        self.events.pop_front();
                    }
                    self.events.push_back(e);
                }
            }
            Record::Node { index, generation, rec } => {
                self.nodes.insert(rec.uuid, (index, generation, rec));
            }
            Record::NodeGone { uuid } => {
                self.nodes.remove(&uuid);
                self.docs.remove(&uuid);
                self.sets.remove(&uuid);
            }
            Record::Agent { index, slot } => {
                self.agents.insert(index, slot);
            }
            Record::AgentGone { uuid } => {
                self.agents.retain(|_, a| a.uuid != uuid);
            }
            Record::Document { uuid, content } => {
                self.docs.insert(uuid, content);
            }
            Record::Gap { from, missed } => {
                self.missed += missed;
                self.next_seq = self.next_seq.max(from.saturating_add(missed));
            }
            Record::SnapshotEnd { covers_seq, .. } => {
                self.next_seq = self.next_seq.max(covers_seq);
            }
            Record::Set { uuid, adds, tombstones } => {
                self.sets.insert(uuid, worknode::OrSetState::from_parts(adds, tombstones));
            }
            Record::Reserve { upto } => self.reserved = self.reserved.max(upto),
        }
    }

    /// Where a rebuilt segment's sequence numbers continue: past every event seen and
    /// every reservation, so no number an earlier run handed out (even one whose event
    /// never reached the disk) is given to another event.
    pub fn resume_seq(&self) -> u64 {
        self.next_seq.max(self.reserved)
    }

    /// Writes the state into `seg` (made with `Daemon::create_for_restore`) and opens it.
    pub fn materialize(&self, seg: &Daemon) -> Result<RestoreStats, String> {
        // A slot index claimed by two UUIDs: the higher generation is the later tenant
        // (generations only grow); the other was deleted after its image was taken.
        let mut by_slot: HashMap<u32, (u32, &NodeRecord)> = HashMap::new();
        for (index, generation, rec) in self.nodes.values() {
            match by_slot.get(index) {
                Some((g, _)) if *g >= *generation => {}
                _ => {
                    by_slot.insert(*index, (*generation, rec));
                }
            }
        }
        for (index, (generation, rec)) in &by_slot {
            seg.restore_node(*index, *generation, rec).map_err(|e| format!("node in slot {index}: {e}"))?;
        }
        // Only a salvage without any snapshot can lack these (recovery refuses otherwise).
        let root = match by_slot.get(&0) {
            Some((generation, _)) => worknode::Handle { index: 0, generation: *generation },
            None => seg.restore_new_container(0, None, "root").map_err(|e| format!("a new root: {e}"))?,
        };
        let is_agents = |r: &NodeRecord| {
            r.kind == worknode::NodeKind::Container as u8
                && r.parent == root.to_raw()
                && &r.name[..usize::from(r.name_len)] == b"agents"
        };
        if !by_slot.values().any(|(_, r)| is_agents(r)) {
            let free =
                (1..seg.capacities().nodes).find(|i| !by_slot.contains_key(i)).ok_or("no free slot for /agents")?;
            seg.restore_new_container(free, Some(root), "agents").map_err(|e| format!("a new /agents: {e}"))?;
        }
        for (uuid, content) in &self.docs {
            if let Some((index, generation, _)) = self.nodes.get(uuid) {
                if by_slot.get(index).is_some_and(|(g, _)| g == generation) {
                    seg.restore_document(*index, content).map_err(|e| format!("document in slot {index}: {e}"))?;
                }
            }
        }
        for (uuid, set) in &self.sets {
            if let Some((index, generation, _)) = self.nodes.get(uuid) {
                if by_slot.get(index).is_some_and(|(g, _)| g == generation) {
                    seg.restore_set(*index, set).map_err(|e| format!("set of the node in slot {index}: {e}"))?;
                }
            }
        }
        for (index, slot) in &self.agents {
            seg.restore_agent(*index, slot).map_err(|e| format!("agent in slot {index}: {e}"))?;
        }
        let events: Vec<EventRecord> = self.events.iter().copied().collect();
        seg.restore_events(&events, self.resume_seq()).map_err(|e| format!("events: {e}"))?;
        // Later stamps must order after everything restored, even if the wall clock
        // stepped back across the restart.
        let newest =
            self.nodes.values().map(|(_, _, r)| r.updated).chain(self.events.iter().map(|e| e.hlc)).max().unwrap_or(0);
        seg.observe(worknode::Hlc(newest));
        seg.finish_restore().map_err(|e| format!("finishing the restore: {e}"))
        // The caller opens the segment to clients once durability is set up.
    }
}
