//! Bounded queries and rollups over the node pool.
//!
//! A query either scans the pool (reading each slot's summary word and copying a record
//! only when kind and status already match) or, given a subtree, walks it through the
//! child lists. Either way it is bounded twice: by `limit` results and by a *visit
//! budget* of nodes examined, and it says which bound stopped it, so a caller never
//! mistakes a truncated answer for a complete one.

use crate::clock::Hlc;
use crate::error::PoolError;
use crate::node::{Handle, Node, NodeKind, Status};
use crate::segment::Segment;

/// What to look for. Unset fields match everything.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    /// Only this kind.
    pub kind: Option<NodeKind>,
    /// Only this status.
    pub status: Option<Status>,
    /// Only nodes assigned to this principal (an agent's name or `@role`).
    pub assignee: Option<crate::PrincipalKey>,
    /// Only this node and its descendants.
    pub under: Option<Handle>,
    /// Only names starting with this.
    pub name_prefix: Option<&'a str>,
    /// Only nodes changed at or after this clock value.
    pub updated_since: Option<Hlc>,
    /// Only nodes carrying the label with this key ([`crate::label_key`]).
    pub label: Option<u64>,
    /// At most this many results.
    pub limit: usize,
    /// At most this many nodes examined.
    pub visit_budget: u32,
}

impl Default for Query<'_> {
    fn default() -> Self {
        Query {
            kind: None,
            status: None,
            assignee: None,
            under: None,
            name_prefix: None,
            updated_since: None,
            label: None,
            limit: 100,
            visit_budget: u32::MAX,
        }
    }
}

/// How a query ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueryStats {
    /// Nodes examined.
    pub visited: u32,
    /// Stopped because `limit` results were found (more may match).
    pub limited: bool,
    /// Stopped because the visit budget ran out (more may match).
    pub budget_exhausted: bool,
}

impl Query<'_> {
    fn matches(&self, n: &Node) -> bool {
        self.kind.is_none_or(|k| n.kind() == Some(k))
            && self.status.is_none_or(|s| n.status() == Some(s))
            && self.assignee.is_none_or(|a| n.assignees().any(|x| x == a))
            && self.name_prefix.is_none_or(|p| n.name().starts_with(p))
            && self.updated_since.is_none_or(|h| n.updated() >= h)
    }
}

/// Totals over a subtree.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rollup {
    /// Nodes counted (of the kind asked for).
    pub total: u64,
    /// Count per status, indexed by `Status::code()`.
    pub by_status: [u64; 8],
    /// Sum of `value` per status (pipeline value), indexed by `Status::code()`.
    pub value_by_status: [f64; 8],
    /// Sum of `value` over all counted nodes.
    pub value_total: f64,
    /// Mean progress (0–100) over counted nodes, 0 when none.
    pub mean_progress: f64,
    /// Complete / (total − cancelled), in percent; 0 when nothing counts.
    pub percent_complete: f64,
    /// Nodes visited in the walk.
    pub visited: u32,
}

impl Rollup {
    /// The count for one status.
    pub fn count(&self, s: Status) -> u64 {
        self.by_status[s.code() as usize]
    }
}

impl Segment {
    /// Runs a bounded query; results go to `out` (cleared first) in slot order, or in
    /// depth-first order for a subtree. Bounded by `limit` results and `visit_budget`
    /// nodes examined; [`QueryStats`] says whether either bound stopped it.
    ///
    /// # Errors
    ///
    /// * [`PoolError::StaleHandle`] / [`PoolError::NotFound`]: the `under` node was
    ///   deleted (nodes deleted during the walk below it are skipped).
    /// * [`PoolError::Contended`], [`PoolError::Busy`]: from reading a node or a child
    ///   list that kept changing (see [`Segment::read`], [`Segment::children`]).
    /// * [`PoolError::Corrupt`]: the walk found more nodes than the pool holds (a cycle).
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{NewNode, NodeKind, Query, Status};
    /// # let name = format!("doc-query-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let project = seg.add(seg.root(), &NewNode::new(NodeKind::Project, "p"))?;
    /// for name in ["a", "b", "c"] {
    ///     seg.add(project, &NewNode::new(NodeKind::Task, name).status(Status::Ready))?;
    /// }
    /// let mut out = Vec::new();
    /// let q = Query { kind: Some(NodeKind::Task), under: Some(project), limit: 2, ..Query::default() };
    /// let stats = seg.query(&q, &mut out)?;
    /// assert_eq!(out.iter().map(|n| n.name()).collect::<Vec<_>>(), ["a", "b"]);
    /// assert!(stats.limited); // "c" matches too
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn query(&self, q: &Query<'_>, out: &mut Vec<Node>) -> Result<QueryStats, PoolError> {
        let labelled = |n: &Node| q.label.is_none_or(|l| self.has_label(n.handle(), l).unwrap_or(false));
        self.find_by_predicate(q.under, q.limit, q.visit_budget, out, |n| q.matches(n) && labelled(n), q.kind, q.status)
    }

    /// Every node (in the subtree `under`, if given) for which `pred` holds, bounded by
    /// `limit` results and `visit_budget` nodes examined.
    pub fn find_where(
        &self,
        under: Option<Handle>,
        limit: usize,
        visit_budget: u32,
        out: &mut Vec<Node>,
        pred: impl FnMut(&Node) -> bool,
    ) -> Result<QueryStats, PoolError> {
        self.find_by_predicate(under, limit, visit_budget, out, pred, None, None)
    }

    #[allow(clippy::too_many_arguments)]
    fn find_by_predicate(
        &self,
        under: Option<Handle>,
        limit: usize,
        visit_budget: u32,
        out: &mut Vec<Node>,
        mut pred: impl FnMut(&Node) -> bool,
        kind: Option<NodeKind>,
        status: Option<Status>,
    ) -> Result<QueryStats, PoolError> {
        out.clear();
        let mut stats = QueryStats::default();
        let mut visit = |n: &Node, stats: &mut QueryStats| -> bool {
            stats.visited += 1;
            if pred(n) {
                if out.len() >= limit {
                    stats.limited = true;
                    return false;
                }
                out.push(*n);
            }
            if stats.visited >= visit_budget {
                stats.budget_exhausted = true;
                return false;
            }
            true
        };
        match under {
            Some(root) => self.walk(root, |n| visit(n, &mut stats))?,
            None => {
                for i in 0..self.caps.nodes {
                    let Some((h, summary)) = self.slot_summary(i) else { continue };
                    // Cheap pre-filter on the summary word before copying the record.
                    if kind.is_some_and(|k| summary.kind() != k.code())
                        || status.is_some_and(|s| summary.status() != s.code())
                    {
                        continue;
                    }
                    let Ok(n) = self.read(h) else { continue };
                    if !visit(&n, &mut stats) {
                        break;
                    }
                }
            }
        }
        Ok(stats)
    }

    /// Depth-first walk of `root`'s subtree (root first), until `f` returns false.
    /// Nodes deleted during the walk are skipped.
    pub fn walk(&self, root: Handle, mut f: impl FnMut(&Node) -> bool) -> Result<(), PoolError> {
        let mut stack = vec![root];
        let mut kids = Vec::new();
        let mut steps = 0u64;
        while let Some(h) = stack.pop() {
            steps += 1;
            if steps > self.caps.nodes as u64 * 2 {
                return Err(PoolError::Corrupt { what: "subtree walk exceeded the pool" });
            }
            let n = match self.read(h) {
                Ok(n) => n,
                Err(PoolError::StaleHandle | PoolError::NotFound) if h != root => continue,
                Err(e) => return Err(e),
            };
            if !f(&n) {
                return Ok(());
            }
            match self.children(h, &mut kids) {
                Ok(()) => stack.extend(kids.iter().rev()),
                Err(PoolError::StaleHandle | PoolError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Totals over `root`'s descendants of kind `kind` (tasks when `None`): counts and
    /// value by status, mean progress, percent complete.
    ///
    /// # Errors
    ///
    /// As [`Segment::query`] over the subtree of `root`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use worknode::{NewNode, NodeKind, Status};
    /// # let name = format!("doc-rollup-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let me = seg.join("worker", "builder")?;
    /// let project = seg.add(seg.root(), &NewNode::new(NodeKind::Project, "release"))?;
    /// let done = seg.add(project, &NewNode::new(NodeKind::Task, "tag").status(Status::Ready))?;
    /// seg.add(project, &NewNode::new(NodeKind::Task, "announce").status(Status::Ready))?;
    /// let claim = seg.claim(done, me, Duration::from_secs(30))?;
    /// seg.complete(&claim, "")?;
    ///
    /// let r = seg.rollup(project, None)?; // tasks
    /// assert_eq!((r.total, r.count(Status::Complete), r.count(Status::Ready)), (2, 1, 1));
    /// assert_eq!(r.percent_complete, 50.0);
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rollup(&self, root: Handle, kind: Option<NodeKind>) -> Result<Rollup, PoolError> {
        let kind = kind.unwrap_or(NodeKind::Task);
        let mut r = Rollup::default();
        let mut progress_sum = 0u64;
        self.walk(root, |n| {
            r.visited += 1;
            if n.kind() == Some(kind) && n.handle() != root {
                let s = n.status().map_or(0, |s| s.code() as usize);
                r.total += 1;
                r.by_status[s] += 1;
                // A value written before values were bounded may be NaN or infinite: it
                // is left out of the sums rather than turning them into NaN.
                let v = if crate::node::check_value(n.value()).is_ok() { n.value() } else { 0.0 };
                r.value_by_status[s] += v;
                r.value_total += v;
                progress_sum += n.progress() as u64;
            }
            true
        })?;
        if r.total > 0 {
            r.mean_progress = progress_sum as f64 / r.total as f64;
            let live = r.total - r.count(Status::Cancelled);
            if live > 0 {
                r.percent_complete = 100.0 * r.count(Status::Complete) as f64 / live as f64;
            }
        }
        Ok(r)
    }
}
