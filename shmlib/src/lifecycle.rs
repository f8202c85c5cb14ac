//! The task lifecycle beyond a claim (issue 12, part 1): cancel, reopen, activate a
//! pending task, edit a node's own fields, and remove a node or a subtree. Each is one
//! change through `modify` (so it is journaled through its event, like every change),
//! token-checked like every change, and brokered like every change.
//!
//! # The state machine
//!
//! | from \ by | claim | start | complete / fail | release, lapse | cancel | reopen | activate |
//! |---|---|---|---|---|---|---|---|
//! | pending | — | — | — | — | cancelled | — | ready (blocked if a blocker is open) |
//! | ready | claimed | — | — | — | cancelled | — | — |
//! | blocked | — | — | — | — | cancelled | — | ready once no blocker is open |
//! | claimed | — | in_progress | complete / failed | ready | cancelled only with `force` (the claim is fenced) | — | — |
//! | in_progress | — | — | complete / failed | ready | cancelled only with `force` | — | — |
//! | complete | — | — | — | — | — | ready (or blocked) | — |
//! | failed | — | — | — | — | cancelled | ready (or blocked) | — |
//! | cancelled | — | — | — | — | — | ready (or blocked) | — |
//!
//! Blocked ↔ ready also follows the dependencies (`add_blocker`, completions, removals).
//! Every move that takes a task away from a claimant (a forced cancel, a reopen) raises
//! the fencing epoch, so the former claimant's writes are refused as stale.
//! [`legal_moves`] names what is legal from a status: errors cite it.

use crate::claims::{clear_claim, live_claimant, status, TaskError};
use crate::error::PoolError;
use crate::event::EventKind;
use crate::layout::NodeRecord;
use crate::node::{Handle, Node, NodeKind, Status};
use crate::pool::{Change, DeleteMode};
use crate::segment::Segment;
use crate::token::Right;
use crate::unix_ms;

/// The fields [`Segment::edit`] changes: each `Some` is set, each `None` kept.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Edit {
    /// A new name (checked like a new node's).
    pub name: Option<String>,
    /// A new inline description.
    pub description: Option<String>,
    /// A new priority.
    pub priority: Option<u8>,
    /// A new value.
    pub value: Option<f64>,
}

impl Edit {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.description.is_none() && self.priority.is_none() && self.value.is_none()
    }
}

/// The lifecycle verbs that are legal from `from`, by name (for error messages).
pub fn legal_moves(from: Status) -> &'static [&'static str] {
    use Status::*;
    match from {
        Pending => &["activate", "cancel", "remove"],
        Ready => &["claim", "cancel", "remove"],
        Blocked => &["cancel", "remove", "remove the blockers"],
        Claimed => &["start", "complete", "fail", "release", "cancel --force"],
        InProgress => &["complete", "fail", "release", "cancel --force"],
        Complete => &["reopen", "remove"],
        Failed => &["reopen", "cancel", "remove"],
        Cancelled => &["reopen", "remove"],
    }
}

impl Segment {
    /// Cancels a task with a reason (kept in the `task_cancelled` event). A claimed or
    /// in-progress task is cancelled only with `force`, which drops the claim and raises
    /// the fencing epoch, so the claimant's later writes are refused as stale.
    ///
    /// # Errors
    ///
    /// * [`TaskError::AlreadyClaimed`]: a live claim holds it and `force` is false.
    /// * [`TaskError::IllegalTransition`]: it is complete or cancelled already.
    /// * [`TaskError::NotATask`]: not a task or custom node.
    /// * [`TaskError::NoteTooLong`]: a reason over [`crate::NOTE_MAX`].
    /// * [`TaskError::Pool`]: as for any change ([`PoolError::Denied`] for a token
    ///   without `update`, [`PoolError::NotFound`], …).
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{NewNode, NodeKind, Status};
    /// # let name = format!("doc-cancel-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let task = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "spike").status(Status::Ready))?;
    /// assert_eq!(seg.cancel(task, "not needed", false)?.status(), Some(Status::Cancelled));
    /// assert_eq!(seg.reopen(task)?.status(), Some(Status::Ready));
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cancel(&self, node: Handle, reason: &str, force: bool) -> Result<Node, TaskError> {
        if let Some(link) = self.link() {
            return link.ask_node(crate::broker::Request::Cancel { node, reason: reason.to_string(), force });
        }
        self.permit(Right::Update, Some(node)).map_err(PoolError::from)?;
        crate::claims::check_note(reason)?;
        let change = Change::new(EventKind::TASK_CANCELLED).with_epoch(reason);
        let (n, ()) = self.modify(node, change, |rec| {
            require_task(rec)?;
            let from = status(rec);
            match from {
                Status::Pending | Status::Ready | Status::Blocked | Status::Failed => {}
                Status::Claimed | Status::InProgress => {
                    if let Some(by) = live_claimant(rec, unix_ms()) {
                        if !force {
                            return Err(TaskError::AlreadyClaimed { by: by.index, until_ms: rec.lease_until_ms });
                        }
                    }
                    rec.claim_epoch += 1;
                    clear_claim(rec);
                }
                Status::Complete | Status::Cancelled => {
                    return Err(TaskError::IllegalTransition { from, to: Status::Cancelled })
                }
            }
            rec.status = Status::Cancelled.code();
            rec.finished_at = self.now().0;
            rec.finished_by = self.actor().and_then(|a| self.read(a).ok()).map_or([0; 16], |n| *n.uuid().as_bytes());
            crate::claims::keep_note(rec, crate::layout::note_kind::CANCEL, reason);
            Ok(())
        })?;
        Ok(n)
    }

    /// Makes a complete, failed or cancelled task ready again (blocked if a blocker is
    /// open), with progress reset and a new fencing epoch: a retry.
    ///
    /// # Errors
    ///
    /// * [`TaskError::IllegalTransition`]: it is not complete, failed or cancelled.
    /// * [`TaskError::NotATask`], [`TaskError::Pool`]: as for [`Segment::cancel`].
    pub fn reopen(&self, node: Handle) -> Result<Node, TaskError> {
        if let Some(link) = self.link() {
            return link.ask_node(crate::broker::Request::Reopen { node });
        }
        self.permit(Right::Update, Some(node)).map_err(PoolError::from)?;
        let (n, ()) = self.modify(node, Change::new(EventKind::TASK_REOPENED).with_epoch(""), |rec| {
            require_task(rec)?;
            let from = status(rec);
            if !matches!(from, Status::Complete | Status::Failed | Status::Cancelled) {
                return Err(TaskError::IllegalTransition { from, to: Status::Ready });
            }
            rec.claim_epoch += 1;
            clear_claim(rec);
            rec.progress = 0;
            rec.status = if self.open_blockers(rec) > 0 { Status::Blocked.code() } else { Status::Ready.code() };
            Ok(())
        })?;
        Ok(n)
    }

    /// A pending task becomes ready — or blocked, if it waits for a blocker that is not
    /// complete (it becomes ready when the last one completes).
    ///
    /// # Errors
    ///
    /// * [`TaskError::IllegalTransition`]: it is not pending.
    /// * [`TaskError::NotATask`], [`TaskError::Pool`]: as for [`Segment::cancel`].
    pub fn activate(&self, node: Handle) -> Result<Node, TaskError> {
        if let Some(link) = self.link() {
            return link.ask_node(crate::broker::Request::Activate { node });
        }
        self.permit(Right::Update, Some(node)).map_err(PoolError::from)?;
        // The event names the status reached, chosen before the lock is taken: if a
        // blocker completes in between, the guess is wrong and the change is made again
        // (bounded; the daemon's settle sweep makes a blocked task ready in any case).
        let mut last = Err(TaskError::Pool(PoolError::Contended));
        for _ in 0..4 {
            let blocked = self.read(node).map(|n| self.open_blockers(n.record()) > 0)?;
            let kind = if blocked { EventKind::TASK_BLOCKED } else { EventKind::TASK_READY };
            last = self
                .modify(node, Change::new(kind), |rec| {
                    require_task(rec)?;
                    let from = status(rec);
                    if from != Status::Pending {
                        return Err(TaskError::IllegalTransition { from, to: Status::Ready });
                    }
                    if (self.open_blockers(rec) > 0) != blocked {
                        return Err(TaskError::Pool(PoolError::Contended));
                    }
                    rec.status = if blocked { Status::Blocked.code() } else { Status::Ready.code() };
                    Ok(())
                })
                .map(|(n, ())| n);
            if !matches!(last, Err(TaskError::Pool(PoolError::Contended))) {
                break;
            }
        }
        last
    }

    /// Changes a node's own fields: name, description, priority, value (`node_updated`).
    ///
    /// # Errors
    ///
    /// [`PoolError::NameEmpty`], [`PoolError::NameHasSlash`], [`PoolError::NameTooLong`],
    /// [`PoolError::NameHasControl`], [`PoolError::DescriptionTooLong`],
    /// [`PoolError::ValueOutOfRange`] for a field
    /// that does not fit; [`PoolError::Denied`] for an agent's record under a token; as
    /// for any change otherwise.
    pub fn edit(&self, node: Handle, edit: &Edit) -> Result<Node, PoolError> {
        if let Some(link) = self.link() {
            return link.ask_node(crate::broker::Request::Edit { node, edit: edit.clone() });
        }
        self.permit(Right::Update, Some(node))?;
        // A rename holds the parent's lock across the change (parent before child, as
        // deletes take them), so the name stays unique among the siblings.
        let _parent = match &edit.name {
            Some(name) => {
                crate::node::check_node_name(name)?;
                self.lock_for_rename(node, name)?
            }
            None => None,
        };
        self.update_unchecked(node, |n| {
            if let Some(name) = &edit.name {
                n.set_name(name)?;
            }
            if let Some(d) = &edit.description {
                n.set_description(d)?;
            }
            if let Some(p) = edit.priority {
                n.set_priority(p);
            }
            if let Some(v) = edit.value {
                n.set_value(v)?;
            }
            Ok(())
        })
    }

    /// Removes a node — with `recursive`, its whole subtree — freeing its documents and
    /// sets; the dependents of a removed blocker are re-evaluated (a removed blocker
    /// counts as done). A task held by a live claim (anywhere in the subtree) is removed
    /// only with `force`. Returns how many nodes were removed.
    ///
    /// # Errors
    ///
    /// * [`TaskError::Pool`] with [`PoolError::HasChildren`]: children and no
    ///   `recursive`; [`PoolError::RootImmutable`]: the root; [`PoolError::Denied`] with
    ///   [`crate::Denied::SystemNode`]: `/agents` or an agent's node (agents leave).
    /// * [`TaskError::AlreadyClaimed`]: a live claim holds a task in it and `force` is
    ///   false; nothing was removed.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{NewNode, NodeKind, PoolError, TaskError};
    /// # let name = format!("doc-remove-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let p = seg.add(seg.root(), &NewNode::new(NodeKind::Project, "old"))?;
    /// seg.add(p, &NewNode::new(NodeKind::Task, "t"))?;
    /// assert!(matches!(seg.remove(p, false, false), Err(TaskError::Pool(PoolError::HasChildren { count: 1 }))));
    /// assert_eq!(seg.remove(p, true, false)?, 2);
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn remove(&self, node: Handle, recursive: bool, force: bool) -> Result<u64, TaskError> {
        if let Some(link) = self.link() {
            return link.ask_count(crate::broker::Request::Remove { node, recursive, force });
        }
        if node == self.root() {
            return Err(PoolError::RootImmutable.into());
        }
        let agents = self.agents_container();
        if node == agents || self.read(node).is_ok_and(|n| n.parent() == Some(agents)) {
            return Err(PoolError::Denied(crate::Denied::SystemNode).into());
        }
        let is_doc = self.read(node)?.kind() == Some(NodeKind::Document);
        self.permit(if is_doc { Right::Doc } else { Right::Update }, Some(node)).map_err(PoolError::from)?;
        if !force {
            // A claim that starts after this check is removed with its task (the claimant's
            // next write finds the task gone): the check spares work in progress, it does
            // not lock the subtree.
            let now = unix_ms();
            let mut held = None;
            self.walk(node, |n| {
                if let Some(by) = live_claimant(n.record(), now) {
                    held = Some(TaskError::AlreadyClaimed { by: by.index, until_ms: n.lease_until_ms() });
                    return false;
                }
                true
            })?;
            if let Some(e) = held {
                return Err(e);
            }
        }
        let mode = if recursive { DeleteMode::Recursive } else { DeleteMode::LeafOnly };
        let removed = self.delete_node(node, mode)?;
        // Dependents of what was removed: a removed blocker counts as done.
        self.settle_blocked();
        Ok(removed)
    }
}

fn require_task(rec: &NodeRecord) -> Result<(), TaskError> {
    let kind = NodeKind::from_code(rec.kind);
    if crate::claims::claimable(kind) {
        Ok(())
    } else {
        Err(TaskError::NotATask { kind })
    }
}
