//! Writes made on behalf of another host: the library side of replication.
//!
//! A bridge (`worknode-bridge`) applies on this host what another host wrote. It runs
//! those writes inside [`Segment::with_origin`], and every record and event they make
//! says where the change came from:
//!
//! * a record written in the scope keeps the origin host's id in its spare bytes
//!   (`NodeRecord::reserved[0..4]`, with byte 4 marking it set), read back by
//!   [`Node::origin_host`]; a record written outside any scope is a local change and
//!   clears them, so a node's origin is the host of its last change;
//! * an event appended in the scope carries [`event_flags::REMOTE`], the origin host in
//!   `EventRecord::pad` and the origin's HLC as its own stamp ([`Event::origin_host`],
//!   [`Event::hlc`]). The local clock observes that HLC first, so every later local
//!   change orders after it.
//!
//! The scope is a thread-local: the pool's write paths read it where they stamp a
//! record or an event, so no write API grows an argument. A brokered handle (a process
//! without write access, whose writes the daemon makes) cannot carry it across and is
//! refused.
//!
//! [`event_flags::REMOTE`]: crate::layout::event_flags::REMOTE

use crate::layout::{event_flags, EventRecord, NodeRecord};
use crate::{Event, Handle, Hlc, NewNode, Node, PoolError, Segment};
use std::cell::Cell;
use uuid::Uuid;

/// Where a change came from: the host that made it and the HLC it stamped it with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The origin host's id; never 0 (0 in a record means "this host").
    pub host: u32,
    /// The HLC of the change on its host.
    pub hlc: Hlc,
}

thread_local! {
    static SCOPE: Cell<Option<Origin>> = const { Cell::new(None) };
    /// Set while the bridge does its own bookkeeping on a record (marking it shared,
    /// confirming a claim): the record's origin stays as it was.
    static KEEP: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with records written on this thread keeping their origin.
pub(crate) fn keeping<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            KEEP.with(|k| k.set(self.0));
        }
    }
    let _restore = Restore(KEEP.with(|k| k.replace(true)));
    f()
}

/// Byte 4 of `reserved` is this when bytes 0..4 hold an origin host.
const ORIGIN_SET: u8 = 1;

/// Restores the enclosing scope (none, in practice) when the closure returns or panics.
struct ScopeGuard(Option<Origin>);

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        SCOPE.with(|s| s.set(self.0));
    }
}

/// Stamps a record about to be published with the scope's origin, or clears the origin
/// of a local change.
pub(crate) fn stamp_record(rec: &mut NodeRecord) {
    match SCOPE.with(Cell::get) {
        Some(o) => {
            rec.reserved[..4].copy_from_slice(&o.host.to_le_bytes());
            rec.reserved[4] = ORIGIN_SET;
        }
        None if KEEP.with(Cell::get) => {}
        None => {
            rec.reserved[..5].fill(0);
            rec.flags &= !crate::layout::record_flags::UNDONE;
        }
    }
}

/// Marks an event about to be appended as the scope's origin made it.
pub(crate) fn stamp_event(rec: &mut EventRecord) {
    if let Some(o) = SCOPE.with(Cell::get) {
        rec.flags |= event_flags::REMOTE;
        rec.pad = o.host;
        rec.hlc = o.hlc.0;
    }
}

pub(crate) fn record_origin(rec: &NodeRecord) -> Option<u32> {
    (rec.reserved[4] == ORIGIN_SET)
        .then(|| u32::from_le_bytes([rec.reserved[0], rec.reserved[1], rec.reserved[2], rec.reserved[3]]))
}

pub(crate) fn event_origin(rec: &EventRecord) -> Option<u32> {
    (rec.flags & event_flags::REMOTE != 0).then_some(rec.pad)
}

impl Segment {
    /// Runs `f` with every record and event it writes on this thread stamped as made by
    /// `origin` (see the module docs). The clock observes `origin.hlc` first.
    ///
    /// # Errors
    ///
    /// [`PoolError::Broker`] on a brokered handle (the daemon makes its writes and could
    /// not stamp them); [`PoolError::InvalidOrigin`] for host 0.
    pub fn with_origin<R>(&self, origin: Origin, f: impl FnOnce() -> R) -> Result<R, PoolError> {
        if self.is_brokered() {
            return Err(PoolError::Broker(crate::broker::BrokerFault::Unsupported));
        }
        if origin.host == 0 {
            return Err(PoolError::InvalidOrigin);
        }
        self.observe(origin.hlc);
        let _restore = ScopeGuard(SCOPE.with(|s| s.replace(Some(origin))));
        Ok(f())
    }

    /// [`Segment::add`] with the node's UUID given, not minted: a node another host made
    /// keeps its identity here.
    ///
    /// # Errors
    ///
    /// As [`Segment::add`], and [`PoolError::UuidInUse`] when a node here has `uuid`.
    pub fn add_with_uuid(&self, parent: Handle, spec: &NewNode<'_>, uuid: Uuid) -> Result<Handle, PoolError> {
        if self.is_brokered() {
            return Err(PoolError::Broker(crate::broker::BrokerFault::Unsupported));
        }
        self.permit(crate::token::Right::Create, Some(parent))?;
        self.permit_new_node(spec)?;
        crate::node::check_node_name(spec.name)?;
        match self.lookup(uuid) {
            Ok(_) => return Err(PoolError::UuidInUse),
            Err(PoolError::NotFound) => {}
            Err(e) => return Err(e),
        }
        // A task another host made is shared from birth: no agent here can claim it
        // before the bridge has marked it (a create wakes parked claimers).
        let shared = SCOPE.with(Cell::get).is_some() && crate::claims::claimable(Some(spec.kind));
        self.add_node_full(parent, spec, uuid, |rec| {
            if shared {
                rec.flags |= crate::layout::record_flags::SHARED;
            }
        })
    }
}

/// A node's own fields as another host wrote them ([`Segment::apply_fields`]).
#[derive(Clone, Copy, Debug)]
pub struct ReplicaFields<'a> {
    /// Name (unique among its siblings, as ever).
    pub name: &'a str,
    /// Description (a document's content type).
    pub description: &'a str,
    /// Status, as the other host's state machine reached it.
    pub status: crate::Status,
    /// Priority.
    pub priority: u8,
    /// Progress, 0 to 100.
    pub progress: u8,
    /// Value.
    pub value: f64,
}

impl Segment {
    /// Writes `fields` into `h`'s record as one change (`node_updated`). Unlike
    /// [`Segment::edit`] it sets the status as given: the other host's state machine
    /// already allowed it, and replicas converge only if every host takes the same
    /// register. Claims are not touched (they are this host's), and while one is live
    /// here the status stays as its holder set it.
    ///
    /// # Errors
    ///
    /// As [`Segment::edit`] for the name, description and value; as any change otherwise.
    pub fn apply_fields(&self, h: Handle, fields: &ReplicaFields<'_>) -> Result<Node, PoolError> {
        if self.is_brokered() {
            return Err(PoolError::Broker(crate::broker::BrokerFault::Unsupported));
        }
        self.permit(crate::token::Right::Update, Some(h))?;
        crate::node::check_node_name(fields.name)?;
        let renamed = self.read(h)?.name() != fields.name;
        // As `edit`: a rename holds the parent's lock so sibling names stay unique.
        let _parent = if renamed { self.lock_for_rename(h, fields.name)? } else { None };
        self.update_unchecked(h, |n| {
            n.set_name(fields.name)?;
            n.set_description(fields.description)?;
            n.set_priority(fields.priority);
            n.set_progress(fields.progress)?;
            n.set_value(fields.value)?;
            // A claim held here owns the task's status (its holder moves it through
            // the claim operations); the other host's view of it waits until then.
            if crate::claims::live_claimant(&n.rec, crate::unix_ms()).is_none() {
                n.rec.status = fields.status.code();
            }
            Ok(())
        })
    }
}

impl Node {
    /// The host whose change wrote this record last, when that was another host (`None`:
    /// this host's own change).
    pub fn origin_host(&self) -> Option<u32> {
        record_origin(&self.rec)
    }
}

impl Event {
    /// The host that made this change, when it was another host (`None`: this host).
    /// Such an event's [`Event::hlc`] is the origin's stamp.
    pub fn origin_host(&self) -> Option<u32> {
        event_origin(&self.rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Capacities, NodeKind, Start, Status};

    fn seg(tag: &str) -> crate::testing::TempSegment {
        crate::testing::temp_segment(
            &format!("origin-{tag}"),
            &Capacities { nodes: 64, events: 256, agents: 4, blob_chunks: 4, sets: 4, ..Capacities::default() },
        )
    }

    #[test]
    fn writes_in_a_scope_name_their_origin_and_a_local_write_clears_it() {
        let s = seg("scope");
        let uuid = Uuid::now_v7();
        let remote_hlc = crate::Hlc((crate::unix_ms() + 1_000) << 16);
        let mut events = s.reader(Start::Now);
        let h = s
            .with_origin(Origin { host: 9, hlc: remote_hlc }, || {
                s.add_with_uuid(s.root(), &NewNode::new(NodeKind::Task, "from b"), uuid)
            })
            .unwrap()
            .unwrap();
        let n = s.read(h).unwrap();
        assert_eq!((n.uuid(), n.origin_host()), (uuid, Some(9)));
        assert!(n.updated().0 > remote_hlc.0, "the clock observed the remote stamp first");
        let ev = events.try_next().unwrap().expect("the create's event");
        assert_eq!((ev.origin_host(), ev.hlc()), (Some(9), remote_hlc), "the event carries the origin and its HLC");

        // Bookkeeping keeps the origin; a local change clears it.
        crate::origin::keeping(|| s.update(h, |_| Ok(()))).unwrap();
        assert_eq!(s.read(h).unwrap().origin_host(), Some(9));
        s.update(h, |n| n.set_status(Status::Ready)).unwrap();
        assert_eq!(s.read(h).unwrap().origin_host(), None);
        let mut last = None;
        while let Some(ev) = events.try_next().unwrap() {
            last = Some(ev);
        }
        assert_eq!(last.expect("the local change's event").origin_host(), None);
    }

    #[test]
    fn bad_origins_and_taken_uuids_are_refused() {
        let s = seg("refused");
        let zero = Origin { host: 0, hlc: crate::Hlc(1) };
        assert_eq!(s.with_origin(zero, || ()).unwrap_err(), PoolError::InvalidOrigin);
        let h = s.add(s.root(), &NewNode::new(NodeKind::Task, "t")).unwrap();
        let uuid = s.read(h).unwrap().uuid();
        let again = s.add_with_uuid(s.root(), &NewNode::new(NodeKind::Task, "u"), uuid);
        assert_eq!(again, Err(PoolError::UuidInUse));
    }

    #[test]
    fn applied_fields_set_the_status_unless_a_claim_here_owns_it() {
        let s = seg("fields");
        let me = s.join("w", "w").unwrap();
        let h = s.add(s.root(), &NewNode::new(NodeKind::Task, "t").status(Status::Ready)).unwrap();
        let fields =
            |status| ReplicaFields { name: "t2", description: "d", status, priority: 4, progress: 10, value: 2.5 };
        // Complete: a plain update could not set it; the other host's state machine did.
        let n = s.apply_fields(h, &fields(Status::Complete)).unwrap();
        assert_eq!((n.name(), n.status(), n.priority(), n.progress()), ("t2", Some(Status::Complete), 4, 10));
        s.apply_fields(h, &fields(Status::Ready)).unwrap();
        let c = s.claim(h, me, std::time::Duration::from_secs(30)).unwrap();
        let n = s.apply_fields(h, &fields(Status::Cancelled)).unwrap();
        assert_eq!(n.status(), Some(Status::Claimed), "the holder here owns the status");
        s.release(&c).unwrap();
    }
}
