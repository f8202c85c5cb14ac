//! The agent handle, [`Segment`]: attaching to a segment (every client), validating a
//! header this process did not write, and its identity and header accessors. Creating a
//! segment is the daemon handle's ([`crate::Daemon`], over the crate-private
//! `create_with` and `map_existing` here); reading its identity and usage for inspectors
//! is the [`crate::Inspector`]'s (`info`).
//!
//! Node operations on a [`Segment`] live in `pool`; the id index in `index`.

use crate::clock::{self, Hlc};
use crate::error::AttachError;
use crate::layout::{self, hdr, state, Capacities, Geometry, HeaderFixed, Region, HEADER_SIZE, LAYOUT_VERSION, MAGIC};
use crate::sync::{load_words, store_words, AtomicU64, Mapping, Ordering};
use crate::sys::{self, OwnerTag};
use bytemuck::Zeroable;
use nix::errno::Errno;
use std::mem::size_of;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Segment name used when none is given and `WORKNODE_SEGMENT` is unset.
pub const DEFAULT_SEGMENT: &str = "worknode";
/// Environment variable naming the segment.
pub const SEGMENT_ENV: &str = "WORKNODE_SEGMENT";
/// Mode a daemon creates segments with unless told otherwise: owner read-write only.
pub const DEFAULT_MODE: u32 = 0o600;

/// How a client maps the segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read and write records directly.
    ReadWrite,
    /// Read only: the mapping itself is read-only, so a bug cannot scribble on it.
    ReadOnly,
}

/// A segment mapped into this process: the agent handle (what agent processes do —
/// nodes, claims, documents, sets, events, agents). Cheap to share between threads
/// (`Sync`). The daemon's operations are on [`crate::Daemon`], which dereferences to
/// this; read-only decoding is [`Segment::inspect`]'s.
pub struct Segment {
    pub(crate) map: Mapping,
    pub(crate) name: String,
    pub(crate) me: OwnerTag,
    pub(crate) geo: Geometry,
    pub(crate) caps: Capacities,
    pub(crate) lock_wait: Duration,
    /// Raw handle of the agent this process acts for (`u64::MAX`: none); process-local.
    pub(crate) actor: std::sync::atomic::AtomicU64,
    /// The token this handle acts under, once verified (see `grant`).
    pub(crate) grant: std::sync::OnceLock<crate::grant::Grant>,
    /// Raw handle of the token's agent once it joined (`u64::MAX`: not yet): under a
    /// grant, every event carries it as actor, whatever [`Segment::set_actor`] says.
    pub(crate) granted_actor: std::sync::atomic::AtomicU64,
    /// When this process last saw the journaling daemon alive in `/proc` (Unix ms; 0:
    /// never): a stale heartbeat sends a writer there at most once per staleness window.
    pub(crate) daemon_seen_ms: std::sync::atomic::AtomicU64,
    /// The daemon's own handle (and its stand-in): exempt from `--require-tokens`.
    pub(crate) trusted: bool,
    /// The broker link of a brokered handle (see `broker`).
    pub(crate) broker: std::sync::OnceLock<crate::broker::Link>,
}

/// The segment name to use: `WORKNODE_SEGMENT` if set, else [`DEFAULT_SEGMENT`].
pub fn default_segment_name() -> String {
    std::env::var(SEGMENT_ENV).ok().filter(|s| !s.is_empty()).unwrap_or_else(|| DEFAULT_SEGMENT.to_string())
}

fn os(op: &'static str) -> impl Fn(Errno) -> AttachError {
    move |errno| AttachError::Os { op, errno }
}

fn open_error(name: &str, writable: bool, errno: Errno) -> AttachError {
    match errno {
        Errno::ENOENT => AttachError::NotFound { name: name.to_string() },
        // O_NOFOLLOW met a symbolic link planted under the name.
        Errno::ELOOP => AttachError::NotAFile { name: name.to_string() },
        Errno::EACCES | Errno::EPERM => AttachError::PermissionDenied { name: name.to_string(), writable },
        e => AttachError::Os { op: "shm_open", errno: e },
    }
}

pub(crate) fn check_name(name: &str) -> Result<(), AttachError> {
    sys::validate_name(name).map_err(|reason| AttachError::InvalidName { name: name.to_string(), reason })
}

/// The permission bits a trusted segment may have: the owner's read and write, nothing
/// for anyone else. Other users' clients refuse a segment that is not theirs anyway, so
/// letting them read it would only show them the daemon's boot id, which names its
/// session socket.
pub const MODE_ALLOWED: u32 = 0o600;

/// Trusts only a regular file this user owns: whoever else owns it could forge records,
/// claims and events under us. Checked on the open descriptor (the name cannot be
/// swapped in between), before the first byte is read. Root is no exception: root's
/// tools never write into another user's segment. Returns the file's mode, which
/// [`check_mode`] judges once the header shows it is a Worknode segment at all.
fn check_owner(name: &str, file: &std::fs::File) -> Result<u32, AttachError> {
    let (owner, mode, regular) = sys::owner_and_mode(file).map_err(os("fstat"))?;
    if !regular {
        return Err(AttachError::NotAFile { name: name.to_string() });
    }
    let expected = sys::effective_uid();
    if owner != expected {
        return Err(AttachError::ForeignOwner { name: name.to_string(), owner, mode, expected });
    }
    Ok(mode)
}

/// Trusts only a segment nobody but its owner may read or write.
fn check_mode(name: &str, mode: u32) -> Result<(), AttachError> {
    if mode & !MODE_ALLOWED != 0 {
        return Err(AttachError::UnsafeMode { name: name.to_string(), owner: sys::effective_uid(), mode });
    }
    Ok(())
}

/// Reads the fixed header with atomic word loads (another process may be writing it).
fn read_fixed(map: &Mapping) -> Option<HeaderFixed> {
    let words = map.words_at(0, size_of::<HeaderFixed>() / 8)?;
    let mut buf = [0u64; size_of::<HeaderFixed>() / 8];
    load_words(words, &mut buf);
    Some(bytemuck::cast(buf))
}

/// Checks everything a client relies on before it trusts a single offset.
fn validate(name: &str, map: &Mapping) -> Result<(HeaderFixed, Geometry, Capacities), AttachError> {
    let len = map.len() as u64;
    // An object too small to hold a header: a truncated segment, or someone else's.
    let fixed = read_fixed(map).filter(|_| len >= HEADER_SIZE as u64);
    let Some(fixed) = fixed else {
        let magic = map.u64_at(0).map(|w| w.load(Ordering::Relaxed));
        return Err(match magic {
            Some(m) if m != MAGIC => AttachError::NotWorknode { name: name.to_string(), found: m },
            _ => AttachError::SizeMismatch { actual: len, expected: HEADER_SIZE as u64 },
        });
    };
    if fixed.magic != MAGIC {
        return Err(AttachError::NotWorknode { name: name.to_string(), found: fixed.magic });
    }
    if fixed.layout_version != LAYOUT_VERSION {
        return Err(AttachError::VersionMismatch { found: fixed.layout_version, expected: LAYOUT_VERSION });
    }
    if fixed.header_size as usize != HEADER_SIZE {
        return Err(AttachError::LayoutMismatch { what: "header_size" });
    }
    if fixed.record_size as usize != size_of::<layout::NodeRecord>() {
        return Err(AttachError::LayoutMismatch { what: "record_size" });
    }
    if fixed.segment_size != len {
        return Err(AttachError::SizeMismatch { actual: len, expected: fixed.segment_size });
    }
    let caps = Geometry::capacities_of(&fixed);
    let geo = Geometry::new(&caps).map_err(|_| AttachError::LayoutMismatch { what: "capacities" })?;
    for (i, (found, want)) in fixed.regions.iter().zip(geo.regions.iter()).enumerate() {
        if found != want {
            return Err(AttachError::LayoutMismatch { what: layout::REGION_NAMES[i] });
        }
    }
    if geo.total != len {
        return Err(AttachError::SizeMismatch { actual: len, expected: geo.total });
    }
    Ok((fixed, geo, caps))
}

impl Segment {
    /// Creates and initialises a segment, left Initializing; with `populate`, the root and
    /// `/agents` are in place, else it is empty (for a restore). The daemon handle
    /// ([`crate::Daemon`]) is the only caller.
    pub(crate) fn create_with(
        name: &str,
        caps: &Capacities,
        mode: u32,
        populate: bool,
    ) -> Result<Segment, AttachError> {
        check_name(name)?;
        if mode != MODE_ALLOWED {
            return Err(AttachError::UnsafeMode { name: name.to_string(), owner: sys::effective_uid(), mode });
        }
        let geo = Geometry::new(caps).map_err(AttachError::Capacity)?;
        let file = sys::create(name, geo.total, mode).map_err(|(op, errno)| match errno {
            Errno::EEXIST => AttachError::AlreadyExists { name: name.to_string() },
            Errno::ENOSPC => AttachError::NoSpace { bytes: geo.total },
            Errno::EACCES | Errno::EPERM => AttachError::PermissionDenied { name: name.to_string(), writable: true },
            errno => AttachError::Os { op, errno },
        })?;
        let made = (|| {
            let raw = sys::map(&file, geo.total as usize, true)
                .map_err(|e| AttachError::Os { op: "mmap", errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)) })?;
            let seg = Segment::from_parts(Mapping::new(raw, true), name, geo, *caps, true);
            seg.initialise(populate)?;
            Ok(seg)
        })();
        if made.is_err() {
            let _ = sys::unlink(name);
        }
        made
    }

    fn initialise(&self, populate: bool) -> Result<(), AttachError> {
        let mut fixed = HeaderFixed::zeroed();
        fixed.magic = MAGIC;
        fixed.layout_version = LAYOUT_VERSION;
        fixed.header_size = HEADER_SIZE as u32;
        fixed.segment_size = self.geo.total;
        fixed.created_unix_ms = clock::unix_ms();
        fixed.record_size = size_of::<layout::NodeRecord>() as u32;
        fixed.blob_chunk_size = self.caps.blob_chunk_size;
        fixed.regions = self.geo.regions;
        let words =
            self.map.words_at(0, size_of::<HeaderFixed>() / 8).ok_or(AttachError::LayoutMismatch { what: "header" })?;
        store_words(words, bytemuck::cast_slice(&[fixed]));
        self.init_tables().map_err(|_| AttachError::LayoutMismatch { what: "tables" })?;
        self.claim_daemon_identity();
        clock::tick(self.hdr(hdr::CLOCK));
        if !populate {
            self.init_slots().map_err(|_| AttachError::LayoutMismatch { what: "nodes" })?;
            return Ok(());
        }
        let agents = self.init_pool().map_err(|_| AttachError::LayoutMismatch { what: "nodes" })?;
        self.set_agents_container(agents);
        Ok(())
    }

    /// Sets every agent, blob and set slot free at generation 1 and threads the blob and
    /// set free lists.
    fn init_tables(&self) -> Result<(), crate::PoolError> {
        let corrupt = crate::PoolError::Corrupt { what: "table outside the segment" };
        for (region, head) in [
            (Region::Agents, None),
            (Region::Blobs, Some(hdr::BLOB_FREE_HEAD)),
            (Region::Sets, Some(hdr::SET_FREE_HEAD)),
        ] {
            let r = self.region(region);
            let elem = |i: u32| r.offset as usize + i as usize * r.elem_size as usize;
            for i in 0..r.capacity as u32 {
                self.map
                    .u64_at(elem(i))
                    .ok_or(corrupt)?
                    .store(crate::genstate::pack(1, crate::layout::slot::FREE), Ordering::Relaxed);
            }
            if let Some(head) = head {
                // Every table's free-list link is its second word.
                crate::freelist::init(self.hdr(head), 0..r.capacity as u32, |i| self.map.u64_at(elem(i) + 8))
                    .map_err(|_| corrupt)?;
            }
        }
        Ok(())
    }

    pub(crate) fn set_agents_container(&self, h: crate::Handle) {
        self.hdr(std::mem::offset_of!(HeaderFixed, agents_node)).store(h.to_raw(), Ordering::Relaxed);
    }

    /// Marks the segment Ready (end of a restore).
    pub(crate) fn mark_ready(&self) {
        self.hdr(hdr::STATE).store(state::READY, Ordering::Release);
    }

    /// The `agents` container under the root, where agent nodes live.
    pub(crate) fn agents_container(&self) -> crate::Handle {
        let raw = self.hdr(std::mem::offset_of!(HeaderFixed, agents_node)).load(Ordering::Relaxed);
        crate::Handle::from_raw(raw).unwrap_or(crate::Handle { index: 0, generation: 0 })
    }

    /// Attaches to the segment named by `WORKNODE_SEGMENT` (default `worknode`), as
    /// [`Segment::attach`] does: the way front ends find the daemon's segment.
    ///
    /// # Errors
    ///
    /// As [`Segment::attach`], for the name [`default_segment_name`] returns.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{Access, Segment};
    /// # let name = format!("doc-attach_default-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// std::env::set_var(worknode::SEGMENT_ENV, &name);
    /// let seg = Segment::attach_default(Access::ReadOnly)?;
    /// assert_eq!(seg.name(), name);
    /// # drop(seg); drop(daemon); Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn attach_default(access: Access) -> Result<Segment, AttachError> {
        Segment::attach(&default_segment_name(), access)
    }

    /// Attaches to an existing segment, waiting up to two seconds for it to become Ready.
    /// The segment is validated first: its magic, layout version, size and region
    /// geometry, and that it is a regular file of this user that no other user may
    /// read or write.
    ///
    /// # Errors
    ///
    /// * [`AttachError::InvalidName`]: `name` is empty, longer than 200 bytes, starts
    ///   with a dot or holds a character other than letters, digits, `.`, `_` and `-`.
    /// * [`AttachError::NotFound`]: no segment of that name (is the daemon running?).
    /// * [`AttachError::PermissionDenied`]: the mode forbids the access asked for.
    /// * [`AttachError::NotAFile`], [`AttachError::ForeignOwner`],
    ///   [`AttachError::UnsafeMode`]: the name is not a regular file, belongs to another
    ///   user, or lets other users read or write it; refused, not trusted.
    /// * [`AttachError::NotWorknode`], [`AttachError::VersionMismatch`],
    ///   [`AttachError::SizeMismatch`], [`AttachError::LayoutMismatch`]: the object is
    ///   not a Worknode segment of this layout version, or its header disagrees with its
    ///   size or its own capacities.
    /// * [`AttachError::NotReady`]: still being initialised after the wait;
    ///   [`AttachError::Closing`]: the daemon is shutting it down.
    /// * [`AttachError::Os`]: any other failure of `shm_open`, `fstat` or `mmap`.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{Access, Segment};
    /// # let name = format!("doc-attach-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// let seg = Segment::attach(&name, Access::ReadWrite)?;
    /// assert_eq!(seg.state(), worknode::SegmentState::Ready);
    /// assert_eq!(seg.read(seg.root())?.name(), "root");
    ///
    /// let missing = Segment::attach("no-such-segment", Access::ReadOnly);
    /// assert!(matches!(missing, Err(worknode::AttachError::NotFound { .. })));
    /// # drop(seg); drop(daemon); Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn attach(name: &str, access: Access) -> Result<Segment, AttachError> {
        Segment::attach_with(name, access, Duration::from_secs(2))
    }

    /// Attaches, waiting up to `ready_wait` for a segment still being initialised (a
    /// client started together with the daemon); [`Segment::attach`] waits two seconds.
    ///
    /// # Errors
    ///
    /// As [`Segment::attach`]; [`AttachError::NotReady`] once `ready_wait` has passed
    /// with the segment still initialising (a zero wait fails at once).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use worknode::{Access, AttachError, Segment};
    /// # let name = format!("doc-attach_with-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// // The daemon has made the segment but not opened it for clients yet.
    /// let daemon = worknode::Daemon::create_unready(&name, &caps, 0o600)?;
    /// let early = Segment::attach_with(&name, Access::ReadOnly, Duration::ZERO);
    /// assert!(matches!(early, Err(AttachError::NotReady)));
    ///
    /// daemon.open_for_clients();
    /// let seg = Segment::attach_with(&name, Access::ReadOnly, Duration::from_millis(100))?;
    /// assert_eq!(seg.access(), Access::ReadOnly);
    /// # drop(seg); drop(daemon); Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn attach_with(name: &str, access: Access, ready_wait: Duration) -> Result<Segment, AttachError> {
        let seg = Segment::map_existing(name, access)?;
        let deadline = sys::deadline(Instant::now(), ready_wait);
        loop {
            match seg.state_word() {
                state::READY => {
                    seg.validate_again()?;
                    return Ok(seg);
                }
                state::CLOSING => return Err(AttachError::Closing),
                _ if Instant::now() >= deadline => return Err(AttachError::NotReady),
                _ => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }

    pub(crate) fn map_existing(name: &str, access: Access) -> Result<Segment, AttachError> {
        check_name(name)?;
        let writable = access == Access::ReadWrite;
        let file = sys::open(name, writable).map_err(|e| open_error(name, writable, e))?;
        let mode = check_owner(name, &file)?;
        let len = sys::size_of_file(&file).map_err(os("fstat"))?;
        if len < HEADER_SIZE as u64 {
            // Too small to be ours: report foreign magic when there is any to read.
            if len == 0 {
                return Err(AttachError::SizeMismatch { actual: 0, expected: HEADER_SIZE as u64 });
            }
        }
        let raw = sys::map(&file, len as usize, writable)
            .map_err(|e| AttachError::Os { op: "mmap", errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)) })?;
        let map = Mapping::new(raw, writable);
        let (_, geo, caps) = validate(name, &map)?;
        check_mode(name, mode)?;
        Ok(Segment::from_parts(map, name, geo, caps, false))
    }

    /// A handle over a validated mapping, acting for no agent and under no token.
    fn from_parts(map: Mapping, name: &str, geo: Geometry, caps: Capacities, trusted: bool) -> Segment {
        Segment {
            map,
            name: name.to_string(),
            me: OwnerTag::current(),
            geo,
            caps,
            lock_wait: crate::seqlock::LOCK_WAIT,
            actor: std::sync::atomic::AtomicU64::new(u64::MAX),
            grant: std::sync::OnceLock::new(),
            granted_actor: std::sync::atomic::AtomicU64::new(u64::MAX),
            daemon_seen_ms: std::sync::atomic::AtomicU64::new(0),
            trusted,
            broker: std::sync::OnceLock::new(),
        }
    }

    /// Maps a segment descriptor the daemon's broker passed: read-only, validated like
    /// any attach, but owned by the daemon's user (the broker's peer credentials, which
    /// the caller checked, vouch for it).
    pub(crate) fn map_descriptor(name: &str, file: std::fs::File) -> Result<Segment, AttachError> {
        let (_, _, regular) = sys::owner_and_mode(&file).map_err(os("fstat"))?;
        if !regular {
            return Err(AttachError::NotAFile { name: name.to_string() });
        }
        let len = sys::size_of_file(&file).map_err(os("fstat"))?;
        if len < HEADER_SIZE as u64 {
            return Err(AttachError::SizeMismatch { actual: len, expected: HEADER_SIZE as u64 });
        }
        let raw = sys::map(&file, len as usize, false)
            .map_err(|e| AttachError::Os { op: "mmap", errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)) })?;
        let map = Mapping::new(raw, false);
        let (_, geo, caps) = validate(name, &map)?;
        let seg = Segment::from_parts(map, name, geo, caps, false);
        match seg.state_word() {
            state::READY => Ok(seg),
            state::CLOSING => Err(AttachError::Closing),
            _ => Err(AttachError::NotReady),
        }
    }

    /// Re-validates after waiting for Ready: the header we first read may have been
    /// mid-initialisation.
    fn validate_again(&self) -> Result<(), AttachError> {
        let (_, geo, _) = validate(&self.name, &self.map)?;
        if geo != self.geo {
            return Err(AttachError::LayoutMismatch { what: "regions" });
        }
        Ok(())
    }

    pub(crate) fn claim_daemon_identity(&self) {
        let boot = uuid::Uuid::new_v4();
        let (hi, lo) = boot.as_u64_pair();
        self.hdr(hdr::DAEMON_TAG).store(self.me.0, Ordering::Relaxed);
        self.hdr(hdr::BOOT_ID).store(hi, Ordering::Relaxed);
        self.hdr(hdr::BOOT_ID + 8).store(lo, Ordering::Relaxed);
        self.hdr(hdr::DAEMON_STARTED).store(clock::unix_ms(), Ordering::Relaxed);
    }

    /// A header word. Header offsets are constants below [`HEADER_SIZE`], and every
    /// mapping is validated to be at least that long, so the lookup cannot fail.
    pub(crate) fn hdr(&self, offset: usize) -> &AtomicU64 {
        self.map.u64_at(offset).expect("invariant: header offsets lie inside a validated mapping")
    }

    pub(crate) fn state_word(&self) -> u64 {
        self.hdr(hdr::STATE).load(Ordering::Acquire)
    }

    /// Removes a segment's name from `/dev/shm`. Mappings stay valid until dropped.
    ///
    /// # Errors
    ///
    /// [`AttachError::InvalidName`] for a name [`Segment::attach`] would refuse;
    /// [`AttachError::NotFound`] when no object has that name;
    /// [`AttachError::PermissionDenied`] when this user may not remove it;
    /// [`AttachError::Os`] otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{Access, AttachError, Segment};
    /// # let name = format!("doc-unlink-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// Segment::unlink(&name)?;
    /// assert!(matches!(Segment::attach(&name, Access::ReadOnly), Err(AttachError::NotFound { .. })));
    /// assert_eq!(daemon.read(daemon.root())?.name(), "root"); // the mapping stays valid
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unlink(name: &str) -> Result<(), AttachError> {
        check_name(name)?;
        sys::unlink(name).map_err(|e| open_error(name, true, e))
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the segment appears in the filesystem.
    pub fn path(&self) -> PathBuf {
        sys::shm_path(&self.name)
    }

    /// How this process mapped it.
    pub fn access(&self) -> Access {
        if self.map.writable() {
            Access::ReadWrite
        } else {
            Access::ReadOnly
        }
    }

    /// Capacities the segment was created with.
    pub fn capacities(&self) -> Capacities {
        self.caps
    }

    /// This process's owner tag, as stamped into locks it takes.
    pub fn owner_tag(&self) -> OwnerTag {
        self.me
    }

    /// Names the agent (its node) this process acts for; events it appends carry it.
    pub fn set_actor(&self, actor: Option<crate::Handle>) {
        // Under a grant the token's agent is the actor (see `granted_actor`).
        self.actor.store(actor.map_or(u64::MAX, crate::Handle::to_raw), std::sync::atomic::Ordering::Relaxed);
    }

    /// The agent this process acts for, if set.
    pub fn actor(&self) -> Option<crate::Handle> {
        let word = if self.grant.get().is_some() { &self.granted_actor } else { &self.actor };
        crate::Handle::from_raw(word.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Under a grant: the token's agent joined as `node`; it is the actor from now on.
    pub(crate) fn set_granted_actor(&self, node: crate::Handle) {
        self.granted_actor.store(node.to_raw(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Sets how long a writer waits for a record lock held by a live process.
    pub fn set_lock_wait(&mut self, wait: Duration) {
        self.lock_wait = wait;
    }

    /// The segment's lifecycle state.
    pub fn state(&self) -> SegmentState {
        match self.state_word() {
            state::READY => SegmentState::Ready,
            state::CLOSING => SegmentState::Closing,
            _ => SegmentState::Initializing,
        }
    }

    /// A fresh clock value (read-write segments only; read-only ones return the current
    /// value without advancing it).
    pub fn now(&self) -> Hlc {
        let w = self.hdr(hdr::CLOCK);
        if self.map.writable() {
            clock::tick(w)
        } else {
            Hlc(w.load(Ordering::Acquire))
        }
    }

    /// Makes later clock values order after `remote` (a stamp from another host or a
    /// journal). Returns the new value.
    pub fn observe(&self, remote: Hlc) -> Hlc {
        if self.map.writable() {
            clock::observe(self.hdr(hdr::CLOCK), remote)
        } else {
            self.now()
        }
    }

    /// Identity, lifecycle and usage, for inspectors.
    pub(crate) fn info(&self) -> SegmentInfo {
        let fixed = read_fixed(&self.map).unwrap_or_else(HeaderFixed::zeroed);
        let load = |o| self.hdr(o).load(Ordering::Relaxed);
        let events_used = load(hdr::RING_TAIL).min(self.caps.events as u64);
        let used = [
            load(hdr::POOL_USED),
            load(hdr::INDEX_USED),
            events_used,
            load(hdr::AGENTS_USED),
            load(hdr::BLOBS_USED),
            load(hdr::SETS_USED),
        ];
        let mut regions = [RegionInfo::default(); layout::REGION_COUNT];
        for (i, r) in regions.iter_mut().enumerate() {
            let d = self.geo.regions[i];
            *r = RegionInfo {
                name: layout::REGION_NAMES[i],
                offset: d.offset,
                capacity: d.capacity,
                elem_size: d.elem_size,
                bytes: d.bytes,
                used: used[i],
            };
        }
        let tag = OwnerTag(load(hdr::DAEMON_TAG));
        SegmentInfo {
            name: self.name.clone(),
            path: self.path(),
            size: self.geo.total,
            layout_version: fixed.layout_version,
            state: self.state(),
            created_unix_ms: fixed.created_unix_ms,
            daemon_pid: tag.pid(),
            daemon_alive: tag.is_alive(),
            boot_id: uuid::Uuid::from_u64_pair(load(hdr::BOOT_ID), load(hdr::BOOT_ID + 8)),
            daemon_started_ms: load(hdr::DAEMON_STARTED),
            adopt_count: load(hdr::ADOPT_COUNT),
            hlc: Hlc(load(hdr::CLOCK)),
            regions,
            index_tombstones: load(hdr::INDEX_TOMBSTONES),
            nodes_created: load(hdr::CREATED),
            nodes_updated: load(hdr::UPDATED),
            nodes_deleted: load(hdr::DELETED),
            claims_made: load(hdr::CLAIMS_MADE),
            leases_expired: load(hdr::LEASES_EXPIRED),
            agents_lost: load(hdr::AGENTS_LOST),
            journal_fsyncs: load(hdr::JOURNAL_FSYNCS),
            journal_fsync_ns: load(hdr::JOURNAL_FSYNC_NS),
        }
    }

    /// Descriptor of one region.
    pub(crate) fn region(&self, r: Region) -> layout::RegionDesc {
        self.geo.region(r)
    }
}

/// Lifecycle of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentState {
    /// Being laid out by the daemon.
    Initializing,
    /// Open for clients.
    Ready,
    /// The daemon is shutting down.
    Closing,
}

impl SegmentState {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentState::Initializing => "initializing",
            SegmentState::Ready => "ready",
            SegmentState::Closing => "closing",
        }
    }
}

/// One region's place and use.
#[derive(Clone, Copy, Debug, Default)]
pub struct RegionInfo {
    /// Region name.
    pub name: &'static str,
    /// Byte offset.
    pub offset: u64,
    /// Elements.
    pub capacity: u64,
    /// Bytes per element.
    pub elem_size: u64,
    /// Bytes in all.
    pub bytes: u64,
    /// Elements in use.
    pub used: u64,
}

/// What `wn dump` shows.
#[derive(Clone, Debug)]
pub struct SegmentInfo {
    /// Segment name.
    pub name: String,
    /// Path under `/dev/shm`.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Layout version in the header.
    pub layout_version: u32,
    /// Lifecycle state.
    pub state: SegmentState,
    /// Creation time, Unix ms.
    pub created_unix_ms: u64,
    /// Pid of the daemon that last claimed the segment.
    pub daemon_pid: u32,
    /// Whether that daemon process still runs.
    pub daemon_alive: bool,
    /// Random id of that daemon instance.
    pub boot_id: uuid::Uuid,
    /// When it started, Unix ms.
    pub daemon_started_ms: u64,
    /// Times a restarted daemon adopted the segment.
    pub adopt_count: u64,
    /// Current clock value.
    pub hlc: Hlc,
    /// Regions in layout order.
    pub regions: [RegionInfo; layout::REGION_COUNT],
    /// Tombstones in the id index.
    pub index_tombstones: u64,
    /// Nodes created since the segment was made.
    pub nodes_created: u64,
    /// Node updates.
    pub nodes_updated: u64,
    /// Nodes deleted.
    pub nodes_deleted: u64,
    /// Claims made since the segment was made (lapsed claims taken over included).
    pub claims_made: u64,
    /// Claims whose lease lapsed (released by the daemon or taken over).
    pub leases_expired: u64,
    /// Agents reaped because their session process died.
    pub agents_lost: u64,
    /// Group-commit fsyncs the daemon's journal made.
    pub journal_fsyncs: u64,
    /// Nanoseconds those fsyncs took, summed.
    pub journal_fsync_ns: u64,
}
