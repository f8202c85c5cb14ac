//! Documents: child nodes of kind [`NodeKind::Document`] whose content (bytes, content
//! type, CRC-32C) lives in the segment's bounded blob arena.
//!
//! ## The arena
//!
//! The blob region holds `blob_chunks` chunks, each a 64-byte [`BlobChunkHeader`]
//! followed by `blob_chunk_size` payload bytes. Both numbers are fixed when the segment
//! is created, so the largest document is `blob_chunks × blob_chunk_size` bytes (and at
//! most `u32::MAX`, the width of [`NodeRecord::doc_len`]); a larger one is refused with
//! [`DocError::TooLarge`] before anything is touched.
//!
//! A blob is a chain of chunks linked by `next_chunk` (index + 1, 0 at the end). Every
//! chunk stores the bytes it holds in `len`; the first one also stores the blob's
//! `total_len` and `crc` (CRC-32C of the content). Payload bytes are written and read as
//! whole little-endian 64-bit words with relaxed atomic stores and loads (the final word
//! padded with zeros), like node records: no plain reference into shared memory exists.
//!
//! A **blob handle** is `generation << 32 | first chunk index`, stored in the node's
//! [`NodeRecord::doc_blob`]. Chunk generations start at 1, so 0 is never a valid handle
//! and means "no content" (an empty document needs no chunk).
//!
//! * **Allocate**: pop the chunks needed from the arena's lock-free free list (the ABA-
//!   tagged stack of `freelist`, head at `hdr::BLOB_FREE_HEAD`, links in each chunk's
//!   `next_free`), mark each *reserved* at its current generation and write this
//!   process's owner tag into its `owner` word, fence, write payload and headers, count
//!   them in `hdr::BLOBS_USED`, then mark each *live* — the first chunk first, with
//!   release ordering, so a live first chunk means the whole chain is linked (no reader
//!   can see the blob before a record names it). If the free list runs dry midway, the
//!   chunks already taken are marked free again and pushed back
//!   ([`DocError::ArenaFull`]): nothing leaks.
//! * **Free**: walk the chain once to check it (every index in range, every chunk live,
//!   no cycle: the walk is bounded by the arena's capacity) and then again to free it:
//!   read the link, move the chunk from live to free at the next generation (never 0)
//!   by compare-and-set, clear its owner, push it. The first chunk goes first, so its
//!   generation is bumped before any chunk of the blob can be reused, and of two
//!   processes freeing one blob (a release racing the reclaim sweep) exactly one frees
//!   each chunk.
//! * **Read** (no lock): copy the node record (a seqlock snapshot: handle, length, CRC
//!   and content type agree), check the first chunk is live at the handle's generation,
//!   copy the chain into the caller's buffer, fence, and check the first chunk's
//!   generation again, then the CRC-32C of the copied bytes. A changed generation means
//!   the blob was replaced or deleted while it was copied: the copy is thrown away and
//!   the record read again (at most [`READ_ATTEMPTS`] times, then [`DocError::Changed`]).
//!   A copy can therefore never mix two versions: any byte a reallocating writer stored
//!   was stored after that writer's release fence, which follows the generation bump,
//!   so a reader that saw the byte sees the bump when it looks again.
//!
//! ## Documents
//!
//! * [`Segment::put_document`] allocates the content first (so a full arena creates
//!   nothing), adds the node (status pending, version 1) and attaches the content under
//!   the node's lock (status ready, version 2). Both steps append their event
//!   (`node_created`, `node_updated`).
//! * [`Segment::replace_document`] allocates the new content, swaps handle, length, CRC
//!   and content type into the record under the node's lock ([`Segment::modify`]: one
//!   new version, one `node_updated` event) and only then frees the old blob. When the
//!   arena cannot hold both versions it rewrites the old chunks in place (below).
//! * [`Segment::get_document`] copies the content out as above.
//! * [`Segment::delete_document`] deletes the node; the pool's delete frees the content of
//!   every node it deletes (so the generic [`Segment::delete`] leaks nothing either).
//!
//! ## Replacing in a full arena
//!
//! A replace whose allocation fails with [`DocError::ArenaFull`] is retried in place,
//! all under the document node's lock: check the old chain; pop and reserve the free
//! chunks the new content needs beyond the old ones (too few: give them back, refuse
//! with `ArenaFull { needed_chunks, free_chunks: free + old }`, nothing changed); then —
//! the point of no return — mark every old chunk ours (the first also names the node),
//! reserve it at the next generation, fence, write the new content into old + extra
//! chunks (freeing old chunks it does not need), mark them live and publish the record.
//!
//! Readers never see a mix or a torn document: from the generation bump until the
//! publish, the record they copy still names the old handle, whose first chunk is no
//! longer live at that generation, so they retry (and after [`READ_ATTEMPTS`] report
//! [`DocError::Changed`]); after it they copy the new content. A replace that fails
//! leaves the old content intact, because it can only fail before the point of no
//! return.
//!
//! A crash *after* the point of no return cannot be made safe: the new content needs the
//! old chunks, so there is a span in which neither version exists in the segment (the
//! new one is only in the dead process's memory). What it leaves: the node locked by a
//! dead holder (the next locker takes the lock over and rolls the record back to the
//! old version), a record naming the old handle (readers get `Changed`), and chunks held
//! by the dead owner. The reclaim sweep frees the chunks and **empties the document**:
//! no content, status pending (as `put_document` leaves a document before its content
//! is attached), content type kept, one new version with its `node_updated` event. So
//! no record names a freed chunk for longer than one sweep (a second), and the loss is
//! visible rather than silent. (A replace of that document before the sweep publishes
//! its new content and reports `Corrupt` for the old one it cannot release; the sweep
//! still frees the lost chunks, and empties nothing.) A replace that fits beside the
//! old content never takes this path.
//!
//! ## Reclaiming what a killed process leaves
//!
//! A chunk's `owner` word names the process responsible for it whenever it is off the
//! free list and not simply part of an attached blob: its allocator from reservation
//! until the record names the blob (cleared right after the publish), a process
//! releasing it (a replace or delete marks the old blob's first chunk under the node's
//! lock, before the record stops naming it), or an in-place rewriter. A first chunk's
//! `node` word names the document it is attached to (written under the node's lock,
//! before the publish). Every free path clears both before the push, so a chunk on the
//! free list or freshly popped never names a stale owner.
//!
//! [`crate::Daemon::reclaim_leaked`] (every second in `worknoded`) looks only at chunks
//! whose owner is dead ([`crate::OwnerTag::is_alive`]), so an operation in progress is
//! never touched:
//!
//! 1. A live first chunk held by a dead owner with no node was never attached: its chain
//!    is freed. With a node, it is judged under that node's lock (the lock every
//!    attach, replace and delete of it holds; a dead holder's is taken over and rolled
//!    back): if the record names the blob it is attached (the hold is cleared), else no
//!    record names it or ever will and it is freed — and if the record's own blob is not
//!    live either (a rewrite cut short after its chunks went live), the document is
//!    emptied. If the node was deleted, the blob is freed only if it is still held by the
//!    dead owner (a deleter marks it its own before the slot is freed).
//! 2. A reserved chunk held by a dead owner was never live at this generation: freed
//!    alone. If it names a node (the first chunk of a rewrite cut short), that document
//!    is emptied if its record names content that is gone.
//!
//! Left unreclaimed: the instruction between popping a chunk and reserving it, and the
//! one between reserving it and storing the owner (the chunk is then free-but-unlisted
//! or reserved with no owner, and counted by `wn doctor` as not free). `BLOBS_USED` can
//! be off by a blob's chunks if its allocator dies between counting them and marking
//! the first live.
//!
//! **Content type** lives in the node's description field (at most
//! [`CONTENT_TYPE_MAX`] bytes). That keeps the layout unchanged, and because it is part
//! of the same record as `doc_blob`, a reader always gets the content type that belongs to
//! the bytes it copied. A plain [`Segment::update`] that rewrites a document's description
//! changes its content type.

use crate::error::PoolError;
use crate::event::EventKind;
use crate::freelist::{self, FreeListError};
use crate::genstate::{gen_of, next_generation, pack, state_of};
use crate::layout::{hdr, slot, BlobChunkHeader, NodeRecord, Region, CONTENT_TYPE_MAX};
use crate::node::{Handle, NewNode, NodeKind, Status};
use crate::pool::{Change, DeleteMode};
use crate::segment::Segment;
use crate::sync::{fence, load_words, store_words, AtomicU64, Ordering};
use crossbeam_utils::Backoff;
use std::mem::{offset_of, size_of};

/// Attempts a read makes before reporting that the document kept changing.
pub(crate) const READ_ATTEMPTS: u32 = 16;
/// Words of a chunk header.
const HEADER_WORDS: usize = size_of::<BlobChunkHeader>() / 8;
/// Words moved through the stack buffer at a time when copying payload.
const BATCH: usize = 64;

/// Why a document operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DocError {
    /// The content is larger than the blob arena can ever hold.
    TooLarge {
        /// Bytes given.
        len: usize,
        /// The largest document this segment can store.
        max: usize,
    },
    /// Not enough free chunks in the blob arena right now.
    ArenaFull {
        /// Chunks the content needs.
        needed_chunks: u32,
        /// Chunks that could be taken before the arena ran out.
        free_chunks: u32,
    },
    /// The content type is longer than [`CONTENT_TYPE_MAX`].
    ContentTypeTooLong {
        /// Bytes given.
        len: usize,
        /// Bytes allowed.
        max: usize,
    },
    /// The node is not a document.
    NotADocument,
    /// The document was replaced or deleted during every read attempt.
    Changed,
    /// The copied content does not match its stored CRC-32C.
    ChecksumMismatch {
        /// CRC stored with the document.
        stored: u32,
        /// CRC of the bytes copied.
        computed: u32,
    },
    /// The claim presented with the document was refused (`StaleEpoch`, `NotClaimant`,
    /// `LeaseExpired`): nothing was stored.
    Claim(crate::claims::TaskError),
    /// The document is not a child of the task whose claim was presented.
    NotUnderTask,
    /// A node operation failed.
    Pool(PoolError),
}

impl DocError {
    /// A claim check's refusal, in the document's words.
    fn of_claim(e: crate::claims::TaskError) -> DocError {
        match e {
            crate::claims::TaskError::Pool(p) => DocError::Pool(p),
            e => DocError::Claim(e),
        }
    }
}

impl From<PoolError> for DocError {
    fn from(e: PoolError) -> Self {
        DocError::Pool(e)
    }
}

impl std::fmt::Display for DocError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use DocError::*;
        match self {
            TooLarge { len, max } => write!(f, "document is {len} bytes, the most this segment can store is {max}"),
            ArenaFull { needed_chunks, free_chunks } => {
                write!(f, "blob arena full: the document needs {needed_chunks} chunks, only {free_chunks} are free")
            }
            ContentTypeTooLong { len, max } => write!(f, "content type is {len} bytes, the limit is {max}"),
            NotADocument => write!(f, "the node is not a document"),
            Changed => write!(f, "the document was replaced or deleted during every read attempt"),
            ChecksumMismatch { stored, computed } => write!(
                f,
                "document content fails its CRC-32C check (stored {stored:08x}, copied bytes give {computed:08x})"
            ),
            Claim(e) => write!(f, "{e}"),
            NotUnderTask => write!(f, "the document is not under the claimed task"),
            Pool(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for DocError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DocError::Pool(e) => Some(e),
            _ => None,
        }
    }
}

/// What [`Segment::get_document`] returns beside the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentInfo {
    /// Media type given when the content was stored (`application/json`, …).
    pub content_type: String,
    /// Content length in bytes.
    pub len: usize,
    /// CRC-32C of the content.
    pub crc: u32,
    /// The document node's version whose content was copied.
    pub version: u64,
}

/// A blob handle, `generation << 32 | first chunk index` (0: no content): the one place
/// it is packed and unpacked. Stored raw in [`NodeRecord::doc_blob`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlobHandle(u64);

impl BlobHandle {
    /// The blob whose first chunk is `first`, at that chunk's `generation`.
    pub(crate) const fn new(generation: u32, first: u32) -> BlobHandle {
        BlobHandle(((generation as u64) << 32) | first as u64)
    }

    /// The handle as stored in a record.
    pub(crate) const fn from_raw(raw: u64) -> BlobHandle {
        BlobHandle(raw)
    }

    /// The word to store.
    pub(crate) const fn raw(self) -> u64 {
        self.0
    }

    /// The first chunk's generation when the blob was written.
    pub(crate) const fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The first chunk's index.
    pub(crate) const fn first(self) -> u32 {
        self.0 as u32
    }
}

/// A blob allocated and written, not yet attached to a node.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Blob {
    pub(crate) raw: u64,
    pub(crate) len: u32,
    pub(crate) crc: u32,
}

/// Why one copy attempt failed.
enum CopyFailure {
    /// The first chunk's generation moved: replaced or freed during the copy.
    Changed,
    /// The copy was stable but did not match its CRC.
    Checksum(u32),
    /// The copy was stable and its chain or header is inconsistent.
    Corrupt(&'static str),
}

/// A view of one chunk's words (bounds-checked once, when made).
#[derive(Clone, Copy)]
struct Chunk<'a> {
    w: &'a [AtomicU64],
}

impl<'a> Chunk<'a> {
    fn word(&self, offset: usize) -> &'a AtomicU64 {
        &self.w[offset / 8]
    }
    fn gen_state(&self) -> &'a AtomicU64 {
        self.word(offset_of!(BlobChunkHeader, gen_state))
    }
    fn next_free(&self) -> &'a AtomicU64 {
        self.word(offset_of!(BlobChunkHeader, next_free))
    }
    fn next_chunk(&self) -> &'a AtomicU64 {
        self.word(offset_of!(BlobChunkHeader, next_chunk))
    }
    fn len(&self) -> &'a AtomicU64 {
        self.word(offset_of!(BlobChunkHeader, len))
    }
    fn total_len(&self) -> &'a AtomicU64 {
        self.word(offset_of!(BlobChunkHeader, total_len))
    }
    fn crc(&self) -> &'a AtomicU64 {
        self.word(offset_of!(BlobChunkHeader, crc))
    }
    fn owner(&self) -> &'a AtomicU64 {
        self.word(offset_of!(BlobChunkHeader, owner))
    }
    fn node(&self) -> &'a AtomicU64 {
        self.word(offset_of!(BlobChunkHeader, node))
    }
    fn payload(&self) -> &'a [AtomicU64] {
        &self.w[HEADER_WORDS..]
    }
}

fn freelist_error(e: FreeListError) -> PoolError {
    match e {
        FreeListError::Corrupt => PoolError::Corrupt { what: "blob free list names a chunk outside the arena" },
        FreeListError::Contended => PoolError::Contended,
    }
}

/// Stores `bytes` into `dst` as little-endian words, the last one zero-padded. The
/// caller guarantees `bytes.len() <= 8 * dst.len()`.
fn write_payload(dst: &[AtomicU64], bytes: &[u8]) {
    let mut buf = [0u64; BATCH];
    for (d, part) in dst.chunks(BATCH).zip(bytes.chunks(BATCH * 8)) {
        let n = part.len().div_ceil(8).min(d.len());
        for (w, b) in buf.iter_mut().zip(part.chunks(8)) {
            let mut word = [0u8; 8];
            word[..b.len()].copy_from_slice(b);
            *w = u64::from_le_bytes(word);
        }
        store_words(&d[..n], &buf[..n]);
    }
}

/// Appends the first `len` bytes held in `src` to `out`. The caller guarantees
/// `len <= 8 * src.len()`.
fn read_payload(src: &[AtomicU64], len: usize, out: &mut Vec<u8>) {
    let mut buf = [0u64; BATCH];
    let mut left = len;
    let words = &src[..len.div_ceil(8).min(src.len())];
    for s in words.chunks(BATCH) {
        let b = &mut buf[..s.len()];
        load_words(s, b);
        for w in b.iter() {
            let take = left.min(8);
            out.extend_from_slice(&w.to_le_bytes()[..take]);
            left -= take;
        }
    }
}

impl Segment {
    /// The largest document this segment can store, in bytes (fixed at creation: every
    /// chunk of the blob arena, and at most `u32::MAX`).
    pub fn max_document_len(&self) -> usize {
        let arena = self.caps.blob_chunks as u64 * self.caps.blob_chunk_size as u64;
        arena.min(u32::MAX as u64) as usize
    }

    /// Number of free blob chunks, counted by walking the arena's free list (bounded by
    /// capacity). A diagnostic: under concurrent churn the answer is approximate.
    pub fn free_blob_chunks(&self) -> Result<u64, PoolError> {
        let cap = self.caps.blob_chunks as u64;
        let mut n = 0u64;
        let mut cur = crate::freelist::FreeHead::from_raw(self.hdr(hdr::BLOB_FREE_HEAD).load(Ordering::Acquire)).top();
        while cur != 0 {
            n += 1;
            if n > cap {
                return Err(PoolError::Corrupt { what: "blob free list longer than the arena" });
            }
            let c = self
                .chunk((cur - 1) as u32)
                .ok_or(PoolError::Corrupt { what: "blob free list names a chunk outside the arena" })?;
            cur = c.next_free().load(Ordering::Relaxed);
        }
        Ok(n)
    }

    /// The chunk at `index`, or `None` if out of range.
    fn chunk(&self, index: u32) -> Option<Chunk<'_>> {
        let r = self.region(Region::Blobs);
        if index as u64 >= r.capacity {
            return None;
        }
        let elem = r.elem_size as usize;
        self.map.words_at(r.offset as usize + index as usize * elem, elem / 8).map(|w| Chunk { w })
    }

    /// Checks what every writing document call checks before touching the arena.
    fn check_content(&self, content_type: &str, bytes: &[u8]) -> Result<(), DocError> {
        if !self.map.writable() {
            return Err(PoolError::ReadOnly.into());
        }
        if content_type.len() > CONTENT_TYPE_MAX {
            return Err(DocError::ContentTypeTooLong { len: content_type.len(), max: CONTENT_TYPE_MAX });
        }
        let max = self.max_document_len();
        if bytes.len() > max {
            return Err(DocError::TooLarge { len: bytes.len(), max });
        }
        Ok(())
    }

    /// Allocates a blob holding `bytes` (none for empty content). On failure every chunk
    /// taken is given back.
    pub(crate) fn alloc_blob(&self, bytes: &[u8]) -> Result<Blob, DocError> {
        let crc = crc32c::crc32c(bytes);
        let len = u32::try_from(bytes.len())
            .map_err(|_| DocError::TooLarge { len: bytes.len(), max: self.max_document_len() })?;
        if bytes.is_empty() {
            return Ok(Blob { raw: 0, len, crc });
        }
        let size = self.caps.blob_chunk_size as usize;
        let needed = bytes.len().div_ceil(size);
        if needed > self.caps.blob_chunks as usize {
            return Err(DocError::TooLarge { len: bytes.len(), max: self.max_document_len() });
        }
        let head = self.hdr(hdr::BLOB_FREE_HEAD);
        let mut taken: Vec<(u32, Chunk<'_>, u32)> = Vec::with_capacity(needed);
        let failure = loop {
            if taken.len() == needed {
                break None;
            }
            match freelist::pop(head, |i| self.chunk(i).map(|c| c.next_free())) {
                Ok(Some(i)) => {
                    let Some(c) = self.chunk(i) else {
                        break Some(DocError::Pool(freelist_error(FreeListError::Corrupt)));
                    };
                    // FREE -> RESERVED by compare-and-set: someone's live chunk on the
                    // free list is refused and left alone.
                    let Ok(g) = crate::genstate::reserve(c.gen_state()) else {
                        break Some(DocError::Pool(PoolError::Corrupt { what: "blob free list holds a chunk in use" }));
                    };
                    // Ours until a node's record names the blob (see `reclaim_leaked_blobs`).
                    c.owner().store(self.me.0, Ordering::Relaxed);
                    c.node().store(0, Ordering::Relaxed);
                    taken.push((i, c, g));
                }
                Ok(None) => {
                    break Some(DocError::ArenaFull { needed_chunks: needed as u32, free_chunks: taken.len() as u32 })
                }
                Err(e) => break Some(DocError::Pool(freelist_error(e))),
            }
        };
        if let Some(e) = failure {
            // Never live, never named by a handle: free again at the same generation.
            for &(i, c, g) in &taken {
                c.owner().store(0, Ordering::Relaxed);
                c.gen_state().store(pack(g, slot::FREE), Ordering::Release);
                let _ = freelist::push(head, i, c.next_free());
            }
            return Err(e);
        }
        // A reader that sees any byte written below also sees the reservations (and the
        // generation bumps of the frees that preceded them): see the module doc.
        fence(Ordering::Release);
        Ok(self.write_chain(&taken, bytes, len, crc))
    }

    /// Writes `bytes` into the reserved chunks `taken` (exactly as many as it needs, the
    /// first one first), counts them in use and marks them live; returns the blob.
    fn write_chain(&self, taken: &[(u32, Chunk<'_>, u32)], bytes: &[u8], len: u32, crc: u32) -> Blob {
        let size = self.caps.blob_chunk_size as usize;
        for (k, (part, &(_, c, _))) in bytes.chunks(size).zip(taken).enumerate() {
            write_payload(c.payload(), part);
            c.len().store(part.len() as u64, Ordering::Relaxed);
            c.next_chunk().store(taken.get(k + 1).map_or(0, |t| t.0 as u64 + 1), Ordering::Relaxed);
            let (total, sum) = if k == 0 { (len as u64, crc as u64) } else { (0, 0) };
            c.total_len().store(total, Ordering::Relaxed);
            c.crc().store(sum, Ordering::Relaxed);
        }
        crate::failpoint::hit("blob.written");
        // Counted before any chunk goes live: a live first chunk is always counted.
        self.hdr(hdr::BLOBS_USED).fetch_add(taken.len() as u64, Ordering::Relaxed);
        // The first chunk goes live first, so a live first chunk means every link of the
        // chain is written (the reclaim sweep follows it). No reader can see the blob
        // before a node's record names it, which happens after this returns.
        for &(_, c, g) in taken {
            c.gen_state().store(pack(g, slot::LIVE), Ordering::Release);
        }
        // The rest of the chain is the first chunk's now: only it keeps the owner (so the
        // sweep never looks at the others, and never asks whether their owner lives).
        for &(_, c, _) in taken.iter().skip(1) {
            c.owner().store(0, Ordering::Relaxed);
        }
        let Some(&(first, _, generation)) = taken.first() else { return Blob { raw: 0, len, crc } };
        Blob { raw: BlobHandle::new(generation, first).raw(), len, crc }
    }

    /// Moves chunk `index` from the gen/state word `gs` (live or reserved) to free at the
    /// next generation and pushes it back. `Ok(false)`: the word had changed (someone
    /// else freed it first), nothing done. Clears the owner and node words before the
    /// push, so a chunk on the free list never names an owner.
    fn retire_chunk(&self, index: u32, c: Chunk<'_>, gs: u64) -> Result<bool, PoolError> {
        let freed = pack(next_generation(gen_of(gs)), slot::FREE);
        if c.gen_state().compare_exchange(gs, freed, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return Ok(false);
        }
        c.owner().store(0, Ordering::Relaxed);
        c.node().store(0, Ordering::Relaxed);
        freelist::push(self.hdr(hdr::BLOB_FREE_HEAD), index, c.next_free()).map_err(freelist_error)?;
        Ok(true)
    }

    /// Whether the blob `raw` names is live at its generation (0: no content, true).
    fn blob_is_live(&self, raw: u64) -> bool {
        if raw == 0 {
            return true;
        }
        let h = BlobHandle::from_raw(raw);
        self.chunk(h.first()).is_some_and(|c| c.gen_state().load(Ordering::Acquire) == pack(h.generation(), slot::LIVE))
    }

    /// Runs `f` on the first chunk of the blob `raw` names, if any.
    fn with_head(&self, raw: u64, f: impl FnOnce(Chunk<'_>)) {
        if raw != 0 {
            if let Some(c) = self.chunk(BlobHandle::from_raw(raw).first()) {
                f(c);
            }
        }
    }

    /// Marks the blob `raw` as held by this process (it is about to release it), under
    /// the lock of the node whose record names it. For the pool's delete.
    /// A blob that is not live at its generation (its content was lost to a rewrite
    /// killed midway) is not marked: its chunks stay the dead rewriter's, for the sweep.
    pub(crate) fn hold_blob(&self, raw: u64) {
        if self.blob_is_live(raw) {
            self.with_head(raw, |c| c.owner().store(self.me.0, Ordering::Relaxed));
        }
    }

    /// Gives up this process's hold of the blob `raw`: it is now simply attached.
    pub(crate) fn settle_blob(&self, raw: u64) {
        self.with_head(raw, |c| {
            let _ = c.owner().compare_exchange(self.me.0, 0, Ordering::AcqRel, Ordering::Relaxed);
        });
    }

    /// Frees the blob `raw` names (0: nothing). The caller owns it exclusively: it was
    /// just unlinked from its node under the node's lock, or never linked. The chain is
    /// checked whole before anything is freed, so a damaged chain is reported, not
    /// followed into someone else's chunks.
    pub(crate) fn free_blob(&self, raw: u64) -> Result<(), PoolError> {
        if raw == 0 {
            return Ok(());
        }
        let cap = self.caps.blob_chunks;
        let first = BlobHandle::from_raw(raw).first();
        let c = self.chunk(first).ok_or(PoolError::Corrupt { what: "document handle outside the blob arena" })?;
        if c.gen_state().load(Ordering::Acquire) != pack(BlobHandle::from_raw(raw).generation(), slot::LIVE) {
            return Err(PoolError::Corrupt { what: "document handle names a blob that is not live" });
        }
        // Pass 1: check.
        let mut count = 0u32;
        let mut cur = first;
        loop {
            let c = self.chunk(cur).ok_or(PoolError::Corrupt { what: "blob chain leaves the arena" })?;
            if state_of(c.gen_state().load(Ordering::Acquire)) != slot::LIVE {
                return Err(PoolError::Corrupt { what: "blob chain runs into a chunk that is not live" });
            }
            count += 1;
            if count > cap {
                return Err(PoolError::Corrupt { what: "blob chain longer than the arena" });
            }
            match c.next_chunk().load(Ordering::Relaxed) {
                0 => break,
                n => {
                    cur =
                        u32::try_from(n - 1).map_err(|_| PoolError::Corrupt { what: "blob chain leaves the arena" })?
                }
            }
        }
        // Pass 2: free, reading each link before its chunk can be reused. Each chunk
        // moves to free by compare-and-set, the first one first: of two processes freeing
        // the same blob (a reclaim sweep racing a release), exactly one frees each chunk.
        let mut cur = first;
        let mut pushed = Ok(());
        let mut freed = 0u64;
        for k in 0..count {
            let c = self.chunk(cur).ok_or(PoolError::Corrupt { what: "blob chain leaves the arena" })?;
            let next = c.next_chunk().load(Ordering::Relaxed);
            let gs = c.gen_state().load(Ordering::Acquire);
            let expected = if k == 0 { pack(BlobHandle::from_raw(raw).generation(), slot::LIVE) } else { gs };
            if state_of(expected) != slot::LIVE {
                // Freed by someone else since the check (only a reclaim sweep can).
                cur = next.wrapping_sub(1) as u32;
                continue;
            }
            match self.retire_chunk(cur, c, expected) {
                Ok(true) => freed += 1,
                Ok(false) if k == 0 => {
                    return Err(PoolError::Corrupt { what: "document handle names a blob that is not live" })
                }
                Ok(false) => {}
                Err(e) => {
                    freed += 1;
                    pushed = Err(e);
                }
            }
            cur = next.wrapping_sub(1) as u32;
        }
        self.hdr(hdr::BLOBS_USED).fetch_sub(freed, Ordering::Relaxed);
        pushed
    }

    /// Copies the blob `raw` (`len` bytes, CRC `crc`, as the node record says) into `out`.
    fn copy_blob(&self, raw: u64, len: usize, crc: u32, out: &mut Vec<u8>) -> Result<(), CopyFailure> {
        out.clear();
        if raw == 0 {
            if len != 0 {
                return Err(CopyFailure::Corrupt("document has a length but no content"));
            }
        } else {
            if len > self.max_document_len() {
                return Err(CopyFailure::Corrupt("document length exceeds the arena"));
            }
            let handle = BlobHandle::from_raw(raw);
            let first =
                self.chunk(handle.first()).ok_or(CopyFailure::Corrupt("document handle outside the blob arena"))?;
            let expected = pack(handle.generation(), slot::LIVE);
            if first.gen_state().load(Ordering::Acquire) != expected {
                return Err(CopyFailure::Changed);
            }
            out.reserve(len);
            let bad = self.copy_chain(first, handle.first(), len, crc, out);
            fence(Ordering::Acquire);
            if first.gen_state().load(Ordering::Relaxed) != expected {
                return Err(CopyFailure::Changed);
            }
            if let Some(what) = bad {
                return Err(CopyFailure::Corrupt(what));
            }
        }
        let computed = crc32c::crc32c(out);
        if computed != crc {
            return Err(CopyFailure::Checksum(computed));
        }
        Ok(())
    }

    /// Checks the document content `rec` names (chain, lengths, CRC) without keeping it:
    /// `Err(what)` when it is damaged. For inspectors; `rec` should be a fresh copy.
    pub(crate) fn check_document_content(&self, rec: &NodeRecord) -> Result<(), &'static str> {
        let mut out = Vec::new();
        for _ in 0..4 {
            match self.copy_blob(rec.doc_blob, rec.doc_len as usize, rec.doc_crc, &mut out) {
                Ok(()) => return Ok(()),
                Err(CopyFailure::Changed) => continue,
                Err(CopyFailure::Checksum(_)) => return Err("document content does not match its CRC"),
                Err(CopyFailure::Corrupt(what)) => return Err(what),
            }
        }
        Err("document names a first chunk that is not live at its generation")
    }

    /// Walks a blob's chain appending its bytes to `out`; returns what was inconsistent
    /// (meaningful only if the first chunk's generation is unchanged afterwards).
    fn copy_chain(
        &self,
        first: Chunk<'_>,
        first_index: u32,
        len: usize,
        crc: u32,
        out: &mut Vec<u8>,
    ) -> Option<&'static str> {
        if first.total_len().load(Ordering::Relaxed) != len as u64 || first.crc().load(Ordering::Relaxed) != crc as u64
        {
            return Some("blob header disagrees with its node record");
        }
        let size = self.caps.blob_chunk_size as u64;
        let mut left = len as u64;
        let mut cur = first_index;
        for _ in 0..self.caps.blob_chunks {
            let Some(c) = self.chunk(cur) else { return Some("blob chain leaves the arena") };
            let n = c.len().load(Ordering::Relaxed);
            if n == 0 || n > size || n > left {
                return Some("blob chunk length out of range");
            }
            read_payload(c.payload(), n as usize, out);
            left -= n;
            if left == 0 {
                return None;
            }
            match c.next_chunk().load(Ordering::Relaxed) {
                0 => return Some("blob chain shorter than its length"),
                next => match u32::try_from(next - 1) {
                    Ok(i) => cur = i,
                    Err(_) => return Some("blob chain leaves the arena"),
                },
            }
        }
        Some("blob chain longer than the arena")
    }

    /// Swaps `blob` into `doc`'s record (with `content_type`, and status ready when
    /// `ready`), then frees the blob it replaced. If the swap did not happen, `blob` is
    /// freed instead. Returns the node's new version.
    fn attach_content(&self, doc: Handle, content_type: &str, blob: Blob, ready: bool) -> Result<u64, DocError> {
        let mut swapped = None;
        let result = self.modify(doc, Change::new(EventKind::NODE_UPDATED), |rec: &mut NodeRecord| {
            if rec.kind != NodeKind::Document.code() {
                return Err(DocError::NotADocument);
            }
            let ct = content_type.as_bytes();
            rec.description.fill(0);
            rec.description[..ct.len()].copy_from_slice(ct);
            rec.desc_len = ct.len() as u16;
            if ready {
                rec.status = Status::Ready.code();
            }
            // Under the node's lock, before the record is published: the new blob names
            // its node, the old one names this process as its releaser. A process killed
            // from here on leaves nothing the reclaim sweep cannot judge.
            self.with_head(blob.raw, |c| c.node().store(doc.to_raw(), Ordering::Relaxed));
            self.hold_blob(rec.doc_blob);
            swapped = Some(rec.doc_blob);
            rec.doc_blob = blob.raw;
            rec.doc_len = blob.len;
            rec.doc_crc = blob.crc;
            Ok(())
        });
        // Once the closure succeeded the record was published, even if the event was not.
        match swapped {
            Some(old) => {
                self.settle_blob(blob.raw);
                crate::failpoint::hit("doc.before_free_old");
                let freed = self.free_blob(old);
                let (node, ()) = result?;
                freed?;
                Ok(node.version())
            }
            None => {
                let _ = self.free_blob(blob.raw);
                result.map(|(node, ())| node.version())
            }
        }
    }

    /// Creates a document named `name` under `parent` holding `bytes` of `content_type`
    /// (at most [`CONTENT_TYPE_MAX`] bytes, e.g. `application/json`).
    ///
    /// The content is stored first, so a full arena ([`DocError::ArenaFull`]) or
    /// oversized content ([`DocError::TooLarge`]) creates nothing. The node appears with
    /// status pending (version 1) and gets its content and status ready in one more
    /// change (version 2); a reader in between sees it empty.
    ///
    /// # Errors
    ///
    /// * [`DocError::TooLarge`]: more bytes than [`Segment::max_document_len`];
    ///   [`DocError::ArenaFull`]: not enough free chunks now;
    ///   [`DocError::ContentTypeTooLong`]: a content type over [`CONTENT_TYPE_MAX`].
    ///   Nothing is created.
    /// * [`DocError::Pool`]: the errors of [`Segment::add`] for the node (a bad name, a
    ///   stale `parent`, a full pool, a segment that takes no writes), nothing created;
    ///   with [`PoolError::EventNotAppended`]: the document exists with its content but
    ///   its last event was not appended.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::DocError;
    /// # let name = format!("doc-put_document-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let doc = seg.put_document(seg.root(), "config", "application/json", br#"{"retries":3}"#)?;
    /// let mut buf = Vec::new();
    /// assert_eq!(seg.get_document(doc, &mut buf)?.content_type, "application/json");
    /// assert_eq!(buf, br#"{"retries":3}"#);
    ///
    /// let huge = vec![0u8; seg.max_document_len() + 1];
    /// let refused = seg.put_document(seg.root(), "huge", "application/octet-stream", &huge);
    /// assert!(matches!(refused, Err(DocError::TooLarge { .. })));
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_document(
        &self,
        parent: Handle,
        name: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<Handle, DocError> {
        if let Some(link) = self.link() {
            return link.ask_handle(crate::broker::Request::PutDocument {
                parent,
                name: name.to_string(),
                content_type: content_type.to_string(),
                bytes: bytes.to_vec(),
            });
        }
        self.permit(crate::token::Right::Doc, Some(parent)).map_err(PoolError::from)?;
        self.check_content(content_type, bytes)?;
        // Checked before the arena is touched (`add` checks it again).
        crate::node::check_node_name(name)?;
        let blob = self.alloc_blob(bytes)?;
        crate::failpoint::hit("doc.allocated");
        let spec = NewNode::new(NodeKind::Document, name).description(content_type);
        let doc = match self.add_node(parent, &spec) {
            Ok(h) => h,
            Err(e) => {
                let _ = self.free_blob(blob.raw);
                return Err(e.into());
            }
        };
        match self.attach_content(doc, content_type, blob, true) {
            Ok(_) => Ok(doc),
            // The content is attached; only its event is missing.
            Err(e @ DocError::Pool(PoolError::EventNotAppended { .. })) => Err(e),
            Err(e) => {
                let _ = self.delete_node(doc, DeleteMode::LeafOnly);
                Err(e)
            }
        }
    }

    /// [`Segment::put_document`] under the task `claim` holds, by its holder: the lease
    /// follows the work (issue 13, part 3), so the claim's lease runs its full length
    /// again from now (a `node_updated` on the task) before the document is stored. A
    /// put that fails after that leaves the lease extended, which is harmless: the
    /// holder is still at work.
    ///
    /// # Errors
    ///
    /// * [`DocError::Claim`] with [`crate::TaskError::StaleEpoch`],
    ///   [`crate::TaskError::NotClaimant`] or [`crate::TaskError::LeaseExpired`]: the
    ///   claim is not the current, live one; nothing was stored.
    /// * As [`Segment::put_document`] otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use worknode::{NewNode, NodeKind, Status};
    /// # let name = format!("doc-put_document_for-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let me = seg.join("worker", "builder")?;
    /// let task = seg.add(seg.root(), &NewNode::new(NodeKind::Task, "report").status(Status::Ready))?;
    /// let claim = seg.claim(task, me, Duration::from_secs(60))?;
    /// let doc = seg.put_document_for(&claim, "draft", "text/plain", b"half done")?;
    /// assert_eq!(seg.read(doc)?.parent(), Some(task));
    /// assert!(seg.read(task)?.lease_until_ms() >= claim.lease_until_ms);
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_document_for(
        &self,
        claim: &crate::claims::Claim,
        name: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<Handle, DocError> {
        if let Some(link) = self.link() {
            return link.ask_handle(crate::broker::Request::PutDocumentFor {
                claim: *claim,
                name: name.to_string(),
                content_type: content_type.to_string(),
                bytes: bytes.to_vec(),
            });
        }
        self.permit(crate::token::Right::Doc, Some(claim.task)).map_err(PoolError::from)?;
        self.permit_agent(claim.agent).map_err(PoolError::from)?;
        self.check_content(content_type, bytes)?;
        crate::node::check_node_name(name)?;
        self.extend_lease_for(claim).map_err(DocError::of_claim)?;
        self.put_document(claim.task, name, content_type, bytes)
    }

    /// [`Segment::replace_document`] of a document directly under the task `claim`
    /// holds, by its holder: the claim's lease runs its full length again from now, as
    /// with [`Segment::put_document_for`].
    ///
    /// # Errors
    ///
    /// * [`DocError::NotUnderTask`]: `doc` is not a child of `claim.task`.
    /// * [`DocError::Claim`]: as for [`Segment::put_document_for`].
    /// * As [`Segment::replace_document`] otherwise.
    pub fn replace_document_for(
        &self,
        claim: &crate::claims::Claim,
        doc: Handle,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<u64, DocError> {
        if let Some(link) = self.link() {
            return link.ask_count(crate::broker::Request::ReplaceDocumentFor {
                claim: *claim,
                doc,
                content_type: content_type.to_string(),
                bytes: bytes.to_vec(),
            });
        }
        self.permit(crate::token::Right::Doc, Some(doc)).map_err(PoolError::from)?;
        self.permit_agent(claim.agent).map_err(PoolError::from)?;
        self.check_content(content_type, bytes)?;
        let n = self.read(doc)?;
        if n.kind() != Some(NodeKind::Document) {
            return Err(DocError::NotADocument);
        }
        if n.parent() != Some(claim.task) {
            return Err(DocError::NotUnderTask);
        }
        self.extend_lease_for(claim).map_err(DocError::of_claim)?;
        self.replace_document(doc, content_type, bytes)
    }

    /// Replaces a document's content (and content type) with `bytes`, as one new version
    /// of the node; returns that version. The new content is stored before the old is
    /// released, so the arena must briefly hold both; on any error the document is
    /// unchanged. Readers copying the old content concurrently notice and read again.
    ///
    /// # Errors
    ///
    /// The document is unchanged on error.
    ///
    /// * [`DocError::TooLarge`], [`DocError::ArenaFull`] (the arena cannot hold old and
    ///   new content at once), [`DocError::ContentTypeTooLong`]: as
    ///   [`Segment::put_document`].
    /// * [`DocError::NotADocument`]: the node is another kind.
    /// * [`DocError::Pool`] with [`PoolError::StaleHandle`] / [`PoolError::NotFound`]:
    ///   the document was deleted; with [`PoolError::ReadOnly`], [`PoolError::Closing`],
    ///   [`PoolError::DaemonGone`]: the segment takes no writes; with
    ///   [`PoolError::Busy`]: another live process holds its lock too long.
    ///
    /// # Examples
    ///
    /// ```
    /// # let name = format!("doc-replace_document-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let doc = seg.put_document(seg.root(), "plan", "text/plain", b"v1")?;
    /// let version = seg.replace_document(doc, "text/markdown", b"# v2")?;
    /// let mut buf = Vec::new();
    /// let info = seg.get_document(doc, &mut buf)?;
    /// assert_eq!((info.version, info.content_type.as_str()), (version, "text/markdown"));
    /// assert_eq!(buf, b"# v2");
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn replace_document(&self, doc: Handle, content_type: &str, bytes: &[u8]) -> Result<u64, DocError> {
        if let Some(link) = self.link() {
            return link.ask_count(crate::broker::Request::ReplaceDocument {
                doc,
                content_type: content_type.to_string(),
                bytes: bytes.to_vec(),
            });
        }
        self.permit(crate::token::Right::Doc, Some(doc)).map_err(PoolError::from)?;
        self.check_content(content_type, bytes)?;
        // Refuse a wrong handle before churning the arena (checked again under the lock).
        if self.read(doc)?.kind() != Some(NodeKind::Document) {
            return Err(DocError::NotADocument);
        }
        match self.alloc_blob(bytes) {
            Ok(blob) => self.attach_content(doc, content_type, blob, false),
            // Not room for both versions: rewrite the old chunks (and as few free ones as
            // needed) in place, if that is enough.
            Err(DocError::ArenaFull { .. }) => self.replace_in_place(doc, content_type, bytes),
            Err(e) => Err(e),
        }
    }

    /// The old blob's chain, checked whole: every chunk live, in range, no cycle. The
    /// caller holds the lock of the node whose record names it.
    fn chain_of(&self, raw: u64) -> Result<Vec<(u32, Chunk<'_>, u32)>, PoolError> {
        let mut out = Vec::new();
        if raw == 0 {
            return Ok(out);
        }
        let h = BlobHandle::from_raw(raw);
        let mut cur = h.first();
        for _ in 0..self.caps.blob_chunks {
            let c = self.chunk(cur).ok_or(PoolError::Corrupt { what: "blob chain leaves the arena" })?;
            let gs = c.gen_state().load(Ordering::Acquire);
            if state_of(gs) != slot::LIVE || (out.is_empty() && gen_of(gs) != h.generation()) {
                return Err(PoolError::Corrupt { what: "blob chain runs into a chunk that is not live" });
            }
            out.push((cur, c, gen_of(gs)));
            match c.next_chunk().load(Ordering::Relaxed) {
                0 => return Ok(out),
                n => {
                    cur =
                        u32::try_from(n - 1).map_err(|_| PoolError::Corrupt { what: "blob chain leaves the arena" })?
                }
            }
        }
        Err(PoolError::Corrupt { what: "blob chain longer than the arena" })
    }

    /// Replaces a document's content when the arena cannot hold old and new at once:
    /// under the node's lock, takes the free chunks the new content needs beyond the old
    /// chunks (refusing with [`DocError::ArenaFull`], nothing changed, if there are not
    /// enough), then rewrites the old chunks in place and publishes the new record. See
    /// the module doc ("Replacing in a full arena") for what readers and a crash see.
    fn replace_in_place(&self, doc: Handle, content_type: &str, bytes: &[u8]) -> Result<u64, DocError> {
        let crc = crc32c::crc32c(bytes);
        let len = bytes.len() as u32; // checked by `check_content`
        let needed = bytes.len().div_ceil(self.caps.blob_chunk_size as usize);
        let head = self.hdr(hdr::BLOB_FREE_HEAD);
        let mut written = None;
        let result = self.modify(doc, Change::new(EventKind::NODE_UPDATED), |rec: &mut NodeRecord| {
            if rec.kind != NodeKind::Document.code() {
                return Err(DocError::NotADocument);
            }
            let old = self.chain_of(rec.doc_blob)?;
            let mut extra: Vec<(u32, Chunk<'_>, u32)> = Vec::new();
            let failure = loop {
                if old.len() + extra.len() >= needed {
                    break None;
                }
                match freelist::pop(head, |i| self.chunk(i).map(|c| c.next_free())) {
                    Ok(Some(i)) => {
                        let Some(c) = self.chunk(i) else {
                            break Some(DocError::Pool(freelist_error(FreeListError::Corrupt)));
                        };
                        let Ok(g) = crate::genstate::reserve(c.gen_state()) else {
                            break Some(DocError::Pool(PoolError::Corrupt {
                                what: "blob free list holds a chunk in use",
                            }));
                        };
                        c.owner().store(self.me.0, Ordering::Relaxed);
                        c.node().store(0, Ordering::Relaxed);
                        extra.push((i, c, g));
                    }
                    Ok(None) => {
                        break Some(DocError::ArenaFull {
                            needed_chunks: needed as u32,
                            free_chunks: (old.len() + extra.len()) as u32,
                        })
                    }
                    Err(e) => break Some(DocError::Pool(freelist_error(e))),
                }
            };
            if let Some(e) = failure {
                for &(i, c, g) in &extra {
                    c.owner().store(0, Ordering::Relaxed);
                    c.gen_state().store(pack(g, slot::FREE), Ordering::Release);
                    let _ = freelist::push(head, i, c.next_free());
                }
                return Err(e);
            }
            // The point of no return: the old content is destroyed from here. Each old
            // chunk is marked ours (the first also names the node) and reserved at a new
            // generation, so readers copying it see the change and read again.
            self.hdr(hdr::BLOBS_USED).fetch_sub(old.len() as u64, Ordering::Relaxed);
            let mut chunks: Vec<(u32, Chunk<'_>, u32)> = Vec::with_capacity(old.len() + extra.len());
            for (k, &(i, c, g)) in old.iter().enumerate() {
                c.owner().store(self.me.0, Ordering::Relaxed);
                c.node().store(if k == 0 { doc.to_raw() } else { 0 }, Ordering::Relaxed);
                let ng = next_generation(g);
                c.gen_state().store(pack(ng, slot::RESERVED), Ordering::Release);
                chunks.push((i, c, ng));
            }
            chunks.extend(extra);
            // As in `alloc_blob`: a reader that sees a byte written below sees the bumps.
            fence(Ordering::Release);
            crate::failpoint::hit("doc.rewrite");
            let (used, surplus) = chunks.split_at(needed);
            for &(i, c, g) in surplus {
                c.owner().store(0, Ordering::Relaxed);
                c.node().store(0, Ordering::Relaxed);
                c.gen_state().store(pack(g, slot::FREE), Ordering::Release);
                let _ = freelist::push(head, i, c.next_free());
            }
            let blob = self.write_chain(used, bytes, len, crc);
            let ct = content_type.as_bytes();
            rec.description.fill(0);
            rec.description[..ct.len()].copy_from_slice(ct);
            rec.desc_len = ct.len() as u16;
            rec.doc_blob = blob.raw;
            rec.doc_len = blob.len;
            rec.doc_crc = blob.crc;
            written = Some(blob.raw);
            Ok(())
        });
        // Published once the closure succeeded, even if its event was not appended.
        if let Some(raw) = written {
            self.settle_blob(raw);
        }
        result.map(|(node, ())| node.version())
    }

    /// Copies a document's content into `out` (cleared first; reuse it to avoid
    /// allocating) and returns its content type, length, CRC and version: one consistent
    /// version, never a mix of two, whatever replaces it concurrently. No lock is taken.
    ///
    /// # Errors
    ///
    /// On error `out` is left empty.
    ///
    /// * [`DocError::NotADocument`]: the node is another kind.
    /// * [`DocError::Changed`]: it was replaced during every attempt.
    /// * [`DocError::ChecksumMismatch`]: stable content fails its CRC (damage).
    /// * [`DocError::Pool`] with [`PoolError::StaleHandle`] / [`PoolError::NotFound`]:
    ///   the document was deleted; with [`PoolError::Contended`]: its node kept
    ///   changing; with [`PoolError::Corrupt`]: its chunk chain is inconsistent.
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{DocError, NewNode, NodeKind};
    /// # let name = format!("doc-get_document-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let doc = seg.put_document(seg.root(), "notes", "text/plain", b"hello")?;
    /// let mut buf = Vec::new();
    /// let info = seg.get_document(doc, &mut buf)?;
    /// assert_eq!((buf.as_slice(), info.len, info.version), (&b"hello"[..], 5, 2));
    ///
    /// let folder = seg.add(seg.root(), &NewNode::new(NodeKind::Folder, "not a doc"))?;
    /// assert_eq!(seg.get_document(folder, &mut buf), Err(DocError::NotADocument));
    /// assert!(buf.is_empty());
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_document(&self, doc: Handle, out: &mut Vec<u8>) -> Result<DocumentInfo, DocError> {
        let backoff = Backoff::new();
        let mut last = DocError::Changed;
        for _ in 0..READ_ATTEMPTS {
            let node = match self.read(doc) {
                Ok(n) => n,
                Err(e) => {
                    out.clear();
                    return Err(e.into());
                }
            };
            if node.kind() != Some(NodeKind::Document) {
                out.clear();
                return Err(DocError::NotADocument);
            }
            let rec = node.record();
            match self.copy_blob(rec.doc_blob, rec.doc_len as usize, rec.doc_crc, out) {
                Ok(()) => {
                    return Ok(DocumentInfo {
                        content_type: node.description().to_string(),
                        len: out.len(),
                        crc: rec.doc_crc,
                        version: rec.version,
                    })
                }
                Err(CopyFailure::Changed) => last = DocError::Changed,
                Err(CopyFailure::Checksum(computed)) => {
                    last = DocError::ChecksumMismatch { stored: rec.doc_crc, computed }
                }
                Err(CopyFailure::Corrupt(what)) => {
                    out.clear();
                    return Err(PoolError::Corrupt { what }.into());
                }
            }
            backoff.snooze();
        }
        out.clear();
        Err(last)
    }

    /// A document's content type, length, CRC and version, from one copy of its record,
    /// without copying the content (for listings: the content itself is checked only
    /// by [`Segment::get_document`]).
    ///
    /// # Errors
    ///
    /// * [`DocError::NotADocument`]: the node is another kind.
    /// * [`DocError::Pool`]: the errors of [`Segment::read`] (a stale handle, …).
    ///
    /// # Examples
    ///
    /// ```
    /// # let name = format!("doc-document_info-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let doc = seg.put_document(seg.root(), "notes", "text/plain", b"hello")?;
    /// let info = seg.document_info(doc)?;
    /// assert_eq!((info.len, info.version, info.content_type.as_str()), (5, 2, "text/plain"));
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn document_info(&self, doc: Handle) -> Result<DocumentInfo, DocError> {
        let node = self.read(doc)?;
        if node.kind() != Some(NodeKind::Document) {
            return Err(DocError::NotADocument);
        }
        let rec = node.record();
        Ok(DocumentInfo {
            content_type: node.description().to_string(),
            len: rec.doc_len as usize,
            crc: rec.doc_crc,
            version: rec.version,
        })
    }

    /// Deletes a document and releases its content. Like [`Segment::delete`] with
    /// [`DeleteMode::LeafOnly`], but refuses a node that is not a document.
    ///
    /// # Errors
    ///
    /// * [`DocError::NotADocument`]: the node is another kind; nothing is deleted.
    /// * [`DocError::Pool`]: the errors of [`Segment::delete`] (a stale handle, a
    ///   segment that takes no writes, a held lock, …).
    ///
    /// # Examples
    ///
    /// ```
    /// use worknode::{DocError, PoolError};
    /// # let name = format!("doc-delete_document-{}", std::process::id());
    /// # let caps = worknode::Capacities { nodes: 16, events: 64, agents: 4, blob_chunks: 8, sets: 4, ..Default::default() };
    /// # let daemon = worknode::Daemon::create(&name, &caps, 0o600)?;
    /// # let seg: &worknode::Segment = &daemon;
    /// let doc = seg.put_document(seg.root(), "scratch", "text/plain", b"tmp")?;
    /// let free = seg.free_blob_chunks()?;
    /// seg.delete_document(doc)?;
    /// assert_eq!(seg.free_blob_chunks()?, free + 1); // its content is released
    /// let mut buf = Vec::new();
    /// assert_eq!(seg.get_document(doc, &mut buf), Err(DocError::Pool(PoolError::StaleHandle)));
    /// # drop(daemon); worknode::Segment::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn delete_document(&self, doc: Handle) -> Result<(), DocError> {
        if let Some(link) = self.link() {
            return link.ask_unit(crate::broker::Request::DeleteDocument { doc });
        }
        self.permit(crate::token::Right::Doc, Some(doc)).map_err(PoolError::from)?;
        if self.read(doc)?.kind() != Some(NodeKind::Document) {
            return Err(DocError::NotADocument);
        }
        // The pool's delete frees the content of the node it deletes.
        self.delete_node(doc, DeleteMode::LeafOnly)?;
        Ok(())
    }
}

/// Why the closure of a judging [`Segment::modify`] (one that only looks, under the
/// node's lock, and publishes nothing) returned without a change.
pub(crate) enum Verdict {
    /// Nothing to do (the chunk changed meanwhile, or its node names it).
    Done,
    /// A node operation failed.
    Pool(PoolError),
}

impl From<PoolError> for Verdict {
    fn from(e: PoolError) -> Self {
        Verdict::Pool(e)
    }
}

/// What one blob reclaim sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct BlobSweep {
    /// Chunks given back to the free list.
    pub(crate) chunks: u64,
    /// Documents whose content a process killed mid-replace had destroyed: emptied.
    pub(crate) emptied: u64,
}

impl Segment {
    /// The daemon's sweep for chunks a process killed mid-operation left off the free
    /// list (see the module doc, "Reclaiming"). Bounded: two passes over the arena, and
    /// one locked look at a node per candidate. Never touches a chunk whose owner is
    /// alive, so an allocation in progress is left alone. A candidate whose chain cannot
    /// be followed is skipped (damage, for `wn doctor`); only a segment that takes no
    /// writes is an error.
    pub(crate) fn reclaim_leaked_blobs(&self) -> Result<BlobSweep, PoolError> {
        self.require_writable()?;
        let mut out = BlobSweep::default();
        let dead = |owner: u64| owner != 0 && !crate::sys::OwnerTag(owner).is_alive();
        // Pass 1: live first chunks held by a dead process.
        for i in 0..self.caps.blob_chunks {
            let Some(c) = self.chunk(i) else { break };
            let gs = c.gen_state().load(Ordering::Acquire);
            let owner = c.owner().load(Ordering::Acquire);
            // Only a blob's first chunk has a total length (content is never empty).
            if state_of(gs) != slot::LIVE || owner == 0 || c.total_len().load(Ordering::Relaxed) == 0 || !dead(owner) {
                continue;
            }
            // A chain that cannot be followed is left alone (`wn doctor` reports it).
            let _ = self.reclaim_blob(BlobHandle::new(gen_of(gs), i), c, owner, &mut out);
        }
        // Pass 2: chunks still reserved by a dead process (killed while allocating or
        // rewriting): never live at this generation, so no record names them.
        let mut lost = Vec::new();
        for i in 0..self.caps.blob_chunks {
            let Some(c) = self.chunk(i) else { break };
            let gs = c.gen_state().load(Ordering::Acquire);
            if state_of(gs) != slot::RESERVED || !dead(c.owner().load(Ordering::Acquire)) {
                continue;
            }
            let node = c.node().load(Ordering::Relaxed);
            if self.retire_chunk(i, c, gs).unwrap_or(true) {
                out.chunks += 1;
                if node != 0 && !lost.contains(&node) {
                    lost.push(node);
                }
            }
        }
        // A first chunk naming its node was an old chunk being rewritten in place: that
        // document's record may still name content that is gone.
        for node in lost {
            let Some(doc) = Handle::from_raw(node) else { continue };
            if self.empty_lost_document(doc) {
                out.emptied += 1;
            }
        }
        Ok(out)
    }

    /// Judges the live blob `h` (first chunk `c`) held by the dead process `owner`: if its
    /// node's record names it, it is simply attached (the hold is cleared); otherwise no
    /// record names it or ever will, and it is freed. Judged under the node's lock, the
    /// lock every process attaching, replacing or deleting the blob holds.
    fn reclaim_blob(&self, h: BlobHandle, c: Chunk<'_>, owner: u64, out: &mut BlobSweep) -> Result<(), PoolError> {
        let unchanged = || {
            c.gen_state().load(Ordering::Acquire) == pack(h.generation(), slot::LIVE)
                && c.owner().load(Ordering::Acquire) == owner
        };
        let Some(doc) = Handle::from_raw(c.node().load(Ordering::Acquire)) else {
            // Never attached: only its dead allocator knew it.
            if unchanged() {
                out.chunks += self.reclaim_chain(h, owner)?;
            }
            return Ok(());
        };
        let mut freed = 0;
        let judged = self.modify(doc, Change::new(EventKind::NODE_UPDATED), |rec: &mut NodeRecord| {
            if !unchanged() {
                return Err(Verdict::Done);
            }
            if rec.doc_blob == h.raw() {
                c.owner().store(0, Ordering::Release);
                return Err(Verdict::Done);
            }
            freed = self.reclaim_chain(h, owner)?;
            // The blob the record names is gone too (a rewrite in place was cut short
            // after its chunks went live): the document is emptied, as a new version.
            if rec.kind == NodeKind::Document.code() && !self.blob_is_live(rec.doc_blob) {
                empty_document(rec);
                return Ok(());
            }
            Err(Verdict::Done)
        });
        out.chunks += freed;
        match judged {
            Ok(_) | Err(Verdict::Pool(PoolError::EventNotAppended { .. })) => out.emptied += 1,
            // Deleted: a deleter marks the blob its own (under the lock, before the slot
            // is freed), so one still held by the dead owner is named by no record.
            Err(Verdict::Pool(PoolError::StaleHandle | PoolError::NotFound)) if unchanged() => {
                out.chunks += self.reclaim_chain(h, owner)?;
            }
            Err(_) => {}
        }
        Ok(())
    }

    /// Frees the chain of the live blob `h` held by the dead process `owner`: every
    /// chunk must be live, or reserved by that owner (a rewrite cut short). Returns how
    /// many chunks it freed (0 if another sweep took it first).
    fn reclaim_chain(&self, h: BlobHandle, owner: u64) -> Result<u64, PoolError> {
        let mut chain = Vec::new();
        let mut cur = h.first();
        let mut ended = false;
        for _ in 0..self.caps.blob_chunks {
            let c = self.chunk(cur).ok_or(PoolError::Corrupt { what: "blob chain leaves the arena" })?;
            let gs = c.gen_state().load(Ordering::Acquire);
            let ok = match state_of(gs) {
                slot::LIVE => true,
                slot::RESERVED => c.owner().load(Ordering::Relaxed) == owner,
                _ => false,
            };
            if !ok || (chain.is_empty() && gs != pack(h.generation(), slot::LIVE)) {
                return Err(PoolError::Corrupt { what: "a leaked blob's chain runs into a chunk in use" });
            }
            chain.push((cur, c, gs));
            match c.next_chunk().load(Ordering::Relaxed) {
                0 => {
                    ended = true;
                    break;
                }
                n => {
                    cur =
                        u32::try_from(n - 1).map_err(|_| PoolError::Corrupt { what: "blob chain leaves the arena" })?
                }
            }
        }
        if !ended {
            return Err(PoolError::Corrupt { what: "blob chain longer than the arena" });
        }
        let mut freed = 0u64;
        for (k, &(i, c, gs)) in chain.iter().enumerate() {
            // The first chunk decides: whoever moves it off live frees the rest.
            if self.retire_chunk(i, c, gs)? {
                freed += 1;
            } else if k == 0 {
                return Ok(0);
            }
        }
        // A blob with a live first chunk was counted whole (see `write_chain`).
        self.hdr(hdr::BLOBS_USED).fetch_sub(freed, Ordering::Relaxed);
        Ok(freed)
    }

    /// Empties `doc` if its record names content that is no longer live (a process was
    /// killed while rewriting it in place). Returns whether it did.
    fn empty_lost_document(&self, doc: Handle) -> bool {
        let r = self.modify(doc, Change::new(EventKind::NODE_UPDATED), |rec: &mut NodeRecord| {
            if rec.kind != NodeKind::Document.code() || self.blob_is_live(rec.doc_blob) {
                return Err(Verdict::Done);
            }
            empty_document(rec);
            Ok(())
        });
        matches!(r, Ok(_) | Err(Verdict::Pool(PoolError::EventNotAppended { .. })))
    }
}

/// A document whose content was lost: no content, status pending (as a document is
/// before its content is attached), content type kept.
fn empty_document(rec: &mut NodeRecord) {
    rec.doc_blob = 0;
    rec.doc_len = 0;
    rec.doc_crc = 0; // CRC-32C of no bytes
    rec.status = Status::Pending.code();
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::{Access, Capacities};
    use std::sync::atomic::{AtomicBool, AtomicU64 as StdAtomicU64};

    const CAPS: Capacities =
        Capacities { nodes: 64, events: 64, agents: 4, blob_chunks: 16, blob_chunk_size: 256, sets: 4 };

    /// A private segment, unlinked when dropped.
    type Seg = crate::testing::TempSegment;

    fn seg(tag: &str) -> Seg {
        crate::testing::temp_segment(&format!("blob-{tag}"), &CAPS)
    }

    fn used(s: &Segment) -> u64 {
        s.hdr(hdr::BLOBS_USED).load(Ordering::Relaxed)
    }

    fn pattern(tag: u64, len: usize) -> Vec<u8> {
        (0..len).map(|i| (i as u64).wrapping_mul(31).wrapping_add(tag.wrapping_mul(7)) as u8).collect()
    }

    #[test]
    fn documents_put_under_a_claim_renew_its_lease_and_check_it() {
        let g = seg("claim");
        let s = &g.seg;
        let me = s.join("w", "r").unwrap();
        let spec = NewNode::new(NodeKind::Task, "t").status(crate::Status::Ready);
        let t = s.add(s.root(), &spec).unwrap();
        let other = s.add(s.root(), &NewNode::new(NodeKind::Task, "o")).unwrap();
        let c = s.claim(t, me, std::time::Duration::from_millis(300)).unwrap();
        // Puts alone keep the lease alive past its length.
        for i in 0..8 {
            std::thread::sleep(std::time::Duration::from_millis(50));
            s.put_document_for(&c, &format!("d{i}"), "text/plain", b"x").unwrap();
        }
        let n = s.read(t).unwrap();
        assert!(n.live_claimant_at(crate::unix_ms()).is_some() && n.lease_until_ms() > c.lease_until_ms + 200);
        let mut docs = Vec::new();
        s.children(t, &mut docs).unwrap();
        let d0 = docs[0];
        assert!(s.replace_document_for(&c, d0, "text/plain", b"y").unwrap() > 1);
        let elsewhere = s.put_document(other, "x", "text/plain", b"x").unwrap();
        assert_eq!(s.replace_document_for(&c, elsewhere, "text/plain", b"z"), Err(DocError::NotUnderTask));
        assert_eq!(s.replace_document_for(&c, other, "text/plain", b"z"), Err(DocError::NotADocument));
        // A claim that is no longer the holder's stores nothing.
        let kids = s.child_count(t).unwrap();
        s.release(&c).unwrap();
        assert_eq!(
            s.put_document_for(&c, "late", "text/plain", b"x"),
            Err(DocError::Claim(crate::TaskError::NotClaimant))
        );
        assert_eq!(s.child_count(t).unwrap(), kids);
    }

    #[test]
    fn round_trip_at_every_boundary() {
        let g = seg("rt");
        let s = &g.seg;
        let mut out = vec![0xaa; 3];
        for (n, len) in [0usize, 1, 7, 8, 255, 256, 257, 4000, 4096].into_iter().enumerate() {
            let bytes = pattern(n as u64, len);
            let doc = s.put_document(s.root(), "schema", "application/json", &bytes).unwrap();
            assert_eq!(used(s), len.div_ceil(256) as u64, "len {len}");
            let info = s.get_document(doc, &mut out).unwrap();
            assert_eq!(out, bytes, "len {len}");
            assert_eq!(
                info,
                DocumentInfo { content_type: "application/json".into(), len, crc: crc32c::crc32c(&bytes), version: 2 }
            );
            let node = s.read(doc).unwrap();
            assert_eq!((node.kind(), node.status()), (Some(NodeKind::Document), Some(Status::Ready)));
            s.delete_document(doc).unwrap();
            assert_eq!(used(s), 0);
            assert_eq!(s.free_blob_chunks().unwrap(), 16);
            assert!(matches!(s.get_document(doc, &mut out), Err(DocError::Pool(PoolError::StaleHandle))));
            assert!(out.is_empty());
        }
    }

    #[test]
    fn replace_bumps_the_version_and_frees_the_old_chunks() {
        let g = seg("replace");
        let s = &g.seg;
        let mut out = Vec::new();
        let doc = s.put_document(s.root(), "spec", "text/plain", &pattern(1, 600)).unwrap();
        assert_eq!(used(s), 3);
        assert_eq!(s.replace_document(doc, "text/markdown", &pattern(2, 300)).unwrap(), 3);
        assert_eq!(used(s), 2);
        let info = s.get_document(doc, &mut out).unwrap();
        assert_eq!((out.clone(), info.content_type.as_str(), info.version), (pattern(2, 300), "text/markdown", 3));
        assert_eq!(s.replace_document(doc, "", &[]).unwrap(), 4);
        assert_eq!(used(s), 0);
        let info = s.get_document(doc, &mut out).unwrap();
        assert!(out.is_empty());
        assert_eq!((info.len, info.crc, info.content_type.as_str()), (0, 0, ""));
        assert_eq!(s.replace_document(doc, "application/octet-stream", &pattern(3, 1000)).unwrap(), 5);
        assert_eq!(used(s), 4);
        s.get_document(doc, &mut out).unwrap();
        assert_eq!(out, pattern(3, 1000));
        assert_eq!(s.free_blob_chunks().unwrap(), 12);
    }

    #[test]
    fn a_full_arena_refuses_and_leaks_nothing() {
        let g = seg("full");
        let s = &g.seg;
        let mut out = Vec::new();
        let doc = s.put_document(s.root(), "big", "text/plain", &pattern(1, 3000)).unwrap();
        let children = s.child_count(s.root()).unwrap();
        assert_eq!(used(s), 12);
        let e = s.put_document(s.root(), "more", "text/plain", &pattern(2, 2000)).unwrap_err();
        assert_eq!(e, DocError::ArenaFull { needed_chunks: 8, free_chunks: 4 });
        // What happened, with the numbers; the advice (`--blob-chunks`) is `wn`'s.
        assert_eq!(e.to_string(), "blob arena full: the document needs 8 chunks, only 4 are free");
        assert_eq!(s.child_count(s.root()).unwrap(), children, "no node left behind");
        // Replacing needs room for the new version in the free chunks plus the old ones:
        // 17 chunks do not fit in 4 free + 12 old, and nothing changes.
        let e = s.replace_document(doc, "text/plain", &pattern(2, 4096 + 1)).unwrap_err();
        assert!(matches!(e, DocError::TooLarge { .. }), "{e:?}");
        let other = s.put_document(s.root(), "other", "text/plain", &pattern(4, 256)).unwrap();
        let e = s.replace_document(doc, "text/plain", &pattern(2, 256 * 16)).unwrap_err();
        assert_eq!(e, DocError::ArenaFull { needed_chunks: 16, free_chunks: 15 });
        assert_eq!((used(s), s.free_blob_chunks().unwrap()), (13, 3));
        let info = s.get_document(doc, &mut out).unwrap();
        assert_eq!((out.clone(), info.version), (pattern(1, 3000), 2));
        s.delete_document(other).unwrap();
        // 8 chunks fit in 4 free + 12 old: rewritten in place, the surplus freed.
        assert_eq!(s.replace_document(doc, "text/markdown", &pattern(2, 2000)).unwrap(), 3);
        assert_eq!((used(s), s.free_blob_chunks().unwrap()), (8, 8));
        let info = s.get_document(doc, &mut out).unwrap();
        assert_eq!((out.clone(), info.version, info.content_type.as_str()), (pattern(2, 2000), 3, "text/markdown"));
        // And growing: 14 chunks = 8 free + 8 old, the whole arena but 2.
        let small = s.put_document(s.root(), "pad", "text/plain", &pattern(5, 512)).unwrap();
        assert_eq!(s.free_blob_chunks().unwrap(), 6);
        assert_eq!(s.replace_document(doc, "text/plain", &pattern(3, 256 * 14)).unwrap(), 4);
        assert_eq!((used(s), s.free_blob_chunks().unwrap()), (16, 0));
        s.get_document(doc, &mut out).unwrap();
        assert_eq!(out, pattern(3, 256 * 14));
        s.delete_document(small).unwrap();
        s.replace_document(doc, "text/plain", &pattern(1, 3000)).unwrap();
        assert_eq!((used(s), s.free_blob_chunks().unwrap()), (12, 4));
        // A small one still fits.
        let small = s.put_document(s.root(), "small", "text/plain", &pattern(3, 1024)).unwrap();
        assert_eq!((used(s), s.free_blob_chunks().unwrap()), (16, 0));
        s.delete_document(small).unwrap();
        s.delete_document(doc).unwrap();
        assert_eq!((used(s), s.free_blob_chunks().unwrap()), (0, 16));
    }

    #[test]
    fn limits_and_wrong_nodes_are_typed_errors() {
        let g = seg("limits");
        let s = &g.seg;
        let mut out = Vec::new();
        assert_eq!(s.max_document_len(), 4096);
        let e = s.put_document(s.root(), "x", "text/plain", &[0; 4097]).unwrap_err();
        assert_eq!(e, DocError::TooLarge { len: 4097, max: 4096 });
        let long = "t".repeat(CONTENT_TYPE_MAX + 1);
        let e = s.put_document(s.root(), "x", &long, b"hi").unwrap_err();
        assert_eq!(e, DocError::ContentTypeTooLong { len: 33, max: 32 });
        let task = s.add(s.root(), &NewNode::new(NodeKind::Task, "t")).unwrap();
        assert_eq!(s.get_document(task, &mut out), Err(DocError::NotADocument));
        assert_eq!(s.replace_document(task, "text/plain", b"hi"), Err(DocError::NotADocument));
        assert_eq!(s.delete_document(task), Err(DocError::NotADocument));
        assert_eq!((used(s), s.free_blob_chunks().unwrap()), (0, 16));
        let e = s.put_document(s.root(), &"n".repeat(65), "text/plain", b"hi").unwrap_err();
        assert!(matches!(e, DocError::Pool(PoolError::NameTooLong { .. })));
        assert_eq!(used(s), 0);
    }

    #[test]
    fn read_only_clients_read_but_cannot_write() {
        let g = seg("ro");
        let s = &g.seg;
        let doc = s.put_document(s.root(), "d", "text/plain", b"hello").unwrap();
        let ro = Segment::attach(&g.name, Access::ReadOnly).unwrap();
        let mut out = Vec::new();
        ro.get_document(doc, &mut out).unwrap();
        assert_eq!(out, b"hello");
        assert_eq!(ro.replace_document(doc, "text/plain", b"x"), Err(DocError::Pool(PoolError::ReadOnly)));
        assert_eq!(ro.put_document(ro.root(), "d", "text/plain", b"x"), Err(DocError::Pool(PoolError::ReadOnly)));
    }

    #[test]
    fn damaged_handles_are_reported_not_followed() {
        let g = seg("bad");
        let s = &g.seg;
        let mut out = Vec::new();
        let doc = s.put_document(s.root(), "d", "text/plain", &pattern(1, 300)).unwrap();
        let real = s.read(doc).unwrap().record().doc_blob;
        let set = |raw: u64| {
            s.modify(doc, Change::new(EventKind::NODE_UPDATED), |r: &mut NodeRecord| {
                r.doc_blob = raw;
                Ok::<_, PoolError>(())
            })
            .unwrap();
        };
        set(BlobHandle::new(1, 9999).raw());
        assert!(matches!(s.get_document(doc, &mut out), Err(DocError::Pool(PoolError::Corrupt { .. }))));
        let h = BlobHandle::from_raw(real);
        let never = BlobHandle::new(h.generation() + 1, h.first()).raw(); // a generation that never was
        set(never);
        assert_eq!(s.get_document(doc, &mut out), Err(DocError::Changed));
        assert!(matches!(s.free_blob(never), Err(PoolError::Corrupt { .. })));
        // A chain whose link leaves the arena.
        set(real);
        s.chunk(BlobHandle::from_raw(real).first()).unwrap().next_chunk().store(9999, Ordering::Relaxed);
        assert!(matches!(s.get_document(doc, &mut out), Err(DocError::Pool(PoolError::Corrupt { .. }))));
        assert!(matches!(s.free_blob(real), Err(PoolError::Corrupt { .. })));
        assert_eq!(used(s), 2, "a damaged chain is not freed");
        // A flipped payload byte fails the checksum.
        let doc2 = s.put_document(s.root(), "e", "text/plain", &pattern(2, 40)).unwrap();
        let raw2 = s.read(doc2).unwrap().record().doc_blob;
        s.chunk(BlobHandle::from_raw(raw2).first()).unwrap().payload()[0].fetch_xor(1, Ordering::Relaxed);
        assert!(matches!(s.get_document(doc2, &mut out), Err(DocError::ChecksumMismatch { .. })));
        assert!(out.is_empty());
    }

    #[test]
    fn the_generic_delete_frees_content() {
        let g = seg("generic");
        let s = &g.seg;
        let folder = s.add(s.root(), &NewNode::new(NodeKind::Folder, "docs")).unwrap();
        let a = s.put_document(folder, "a", "text/plain", &pattern(1, 700)).unwrap();
        s.put_document(folder, "b", "text/plain", &pattern(2, 500)).unwrap();
        s.put_document(folder, "c", "text/plain", &[]).unwrap();
        assert_eq!(used(s), 5);
        s.delete(a, DeleteMode::LeafOnly).unwrap();
        assert_eq!(used(s), 2);
        assert_eq!(s.delete(folder, DeleteMode::Recursive).unwrap(), 3);
        assert_eq!((used(s), s.free_blob_chunks().unwrap()), (0, 16));
    }

    /// An owner tag that names no live process (this pid, another start time).
    fn dead_tag() -> u64 {
        crate::sys::OwnerTag::new(std::process::id(), 1).0
    }

    fn chain(s: &Segment, raw: u64) -> Vec<Chunk<'_>> {
        s.chain_of(raw).unwrap().into_iter().map(|(_, c, _)| c).collect()
    }

    #[test]
    fn the_sweep_frees_what_a_dead_allocator_held_and_nothing_else() {
        let g = seg("sweep-alloc");
        let s = &g.seg;
        // Killed between allocating and attaching: live, held by a dead process, no node.
        let leaked = s.alloc_blob(&pattern(1, 600)).unwrap();
        for c in chain(s, leaked.raw) {
            c.owner().store(dead_tag(), Ordering::Relaxed);
        }
        // Killed while writing: reserved, held by a dead process.
        let torn = s.alloc_blob(&pattern(2, 300)).unwrap();
        for c in chain(s, torn.raw) {
            c.owner().store(dead_tag(), Ordering::Relaxed);
            let gs = c.gen_state().load(Ordering::Relaxed);
            c.gen_state().store(pack(gen_of(gs), slot::RESERVED), Ordering::Relaxed);
        }
        s.hdr(hdr::BLOBS_USED).fetch_sub(2, Ordering::Relaxed); // not counted before going live
                                                                // An allocation in progress by a live process (this one), and a document.
        let live = s.alloc_blob(&pattern(3, 256)).unwrap();
        let doc = s.put_document(s.root(), "kept", "text/plain", &pattern(4, 700)).unwrap();
        assert_eq!(s.free_blob_chunks().unwrap(), 16 - 3 - 2 - 1 - 3);
        let r = s.reclaim_leaked_blobs().unwrap();
        assert_eq!(r, BlobSweep { chunks: 5, emptied: 0 });
        assert_eq!((used(s), s.free_blob_chunks().unwrap()), (4, 12));
        assert_eq!(s.reclaim_leaked_blobs().unwrap(), BlobSweep::default(), "idempotent");
        let mut out = Vec::new();
        s.get_document(doc, &mut out).unwrap();
        assert_eq!(out, pattern(4, 700));
        assert!(s.blob_is_live(live.raw), "a live process's allocation is not touched");
        s.free_blob(live.raw).unwrap();
        assert_eq!((used(s), s.free_blob_chunks().unwrap()), (3, 13));
    }

    #[test]
    fn the_sweep_keeps_attached_content_and_frees_unlinked_content() {
        let g = seg("sweep-attached");
        let s = &g.seg;
        let mut out = Vec::new();
        // Killed after publishing, before letting go: the record names it, it stays.
        let doc = s.put_document(s.root(), "a", "text/plain", &pattern(1, 600)).unwrap();
        let raw = s.read(doc).unwrap().record().doc_blob;
        let head = s.chunk(BlobHandle::from_raw(raw).first()).unwrap();
        head.owner().store(dead_tag(), Ordering::Relaxed);
        assert_eq!(s.reclaim_leaked_blobs().unwrap(), BlobSweep::default());
        assert_eq!(head.owner().load(Ordering::Relaxed), 0, "the hold is cleared");
        s.get_document(doc, &mut out).unwrap();
        assert_eq!(out, pattern(1, 600));
        // Killed between swapping in new content and freeing the old: the old names the
        // (dead) releaser and its node, whose record names the new blob.
        let new = s.alloc_blob(&pattern(2, 300)).unwrap();
        s.modify(doc, Change::new(EventKind::NODE_UPDATED), |r: &mut NodeRecord| {
            r.doc_blob = new.raw;
            r.doc_len = new.len;
            r.doc_crc = new.crc;
            Ok::<_, PoolError>(())
        })
        .unwrap();
        s.settle_blob(new.raw);
        head.owner().store(dead_tag(), Ordering::Relaxed);
        assert_eq!(s.reclaim_leaked_blobs().unwrap(), BlobSweep { chunks: 3, emptied: 0 });
        assert_eq!((used(s), s.free_blob_chunks().unwrap()), (2, 14));
        s.get_document(doc, &mut out).unwrap();
        assert_eq!(out, pattern(2, 300));
        // Killed between deleting the node and freeing its content.
        let raw = s.read(doc).unwrap().record().doc_blob;
        s.hold_blob(raw);
        s.chunk(BlobHandle::from_raw(raw).first()).unwrap().owner().store(dead_tag(), Ordering::Relaxed);
        s.delete_node(doc, DeleteMode::LeafOnly).ok(); // frees it too: nothing left to reclaim
        assert_eq!(s.reclaim_leaked_blobs().unwrap(), BlobSweep::default());
        assert_eq!((used(s), s.free_blob_chunks().unwrap()), (0, 16));
    }

    #[test]
    fn a_rewrite_cut_short_empties_the_document_instead_of_leaving_it_dangling() {
        let g = seg("sweep-rewrite");
        let s = &g.seg;
        let doc = s.put_document(s.root(), "a", "text/plain", &pattern(1, 600)).unwrap();
        let raw = s.read(doc).unwrap().record().doc_blob;
        // What `replace_in_place` leaves at its fail-point `doc.rewrite`.
        for (k, c) in chain(s, raw).into_iter().enumerate() {
            c.owner().store(dead_tag(), Ordering::Relaxed);
            c.node().store(if k == 0 { doc.to_raw() } else { 0 }, Ordering::Relaxed);
            let gs = c.gen_state().load(Ordering::Relaxed);
            c.gen_state().store(pack(next_generation(gen_of(gs)), slot::RESERVED), Ordering::Relaxed);
        }
        s.hdr(hdr::BLOBS_USED).fetch_sub(3, Ordering::Relaxed);
        let mut out = Vec::new();
        assert_eq!(s.get_document(doc, &mut out), Err(DocError::Changed));
        assert_eq!(s.reclaim_leaked_blobs().unwrap(), BlobSweep { chunks: 3, emptied: 1 });
        let info = s.get_document(doc, &mut out).unwrap();
        assert_eq!((out.len(), info.version, info.content_type.as_str()), (0, 3, "text/plain"));
        assert_eq!(s.read(doc).unwrap().status(), Some(Status::Pending));
        assert_eq!((used(s), s.free_blob_chunks().unwrap()), (0, 16));
    }

    #[test]
    fn a_replace_after_a_rewrite_cut_short_leaves_the_lost_chunks_to_the_sweep() {
        let g = seg("sweep-rewrite-then-replace");
        let s = &g.seg;
        let doc = s.put_document(s.root(), "a", "text/plain", &pattern(1, 600)).unwrap();
        let raw = s.read(doc).unwrap().record().doc_blob;
        for (k, c) in chain(s, raw).into_iter().enumerate() {
            c.owner().store(dead_tag(), Ordering::Relaxed);
            c.node().store(if k == 0 { doc.to_raw() } else { 0 }, Ordering::Relaxed);
            let gs = c.gen_state().load(Ordering::Relaxed);
            c.gen_state().store(pack(next_generation(gen_of(gs)), slot::RESERVED), Ordering::Relaxed);
        }
        s.hdr(hdr::BLOBS_USED).fetch_sub(3, Ordering::Relaxed);
        // Before the sweep runs, someone replaces it (room enough beside the lost chunks):
        // the new content is published; the lost chunks are not taken for its release.
        let e = s.replace_document(doc, "text/plain", &pattern(2, 300)).unwrap_err();
        assert!(matches!(e, DocError::Pool(PoolError::Corrupt { .. })), "{e:?}");
        let mut out = Vec::new();
        s.get_document(doc, &mut out).unwrap();
        assert_eq!(out, pattern(2, 300));
        assert_eq!(s.reclaim_leaked_blobs().unwrap(), BlobSweep { chunks: 3, emptied: 0 });
        assert_eq!((used(s), s.free_blob_chunks().unwrap()), (2, 14));
        s.get_document(doc, &mut out).unwrap();
        assert_eq!(out, pattern(2, 300));
    }

    #[test]
    fn a_leaked_set_slot_is_reclaimed_an_attached_one_is_kept() {
        let g = seg("sweep-sets");
        let s = &g.seg;
        let a = s.add(s.root(), &NewNode::new(NodeKind::Folder, "a")).unwrap();
        let b = s.add(s.root(), &NewNode::new(NodeKind::Folder, "b")).unwrap();
        s.set_add(a, 1).unwrap();
        s.set_add(b, 2).unwrap();
        assert_eq!(s.free_set_slots().unwrap(), 2);
        let slot_of = |h: Handle| s.read(h).unwrap().record().set_slot - 1;
        let owner_word = |i: u32| {
            let r = s.region(Region::Sets);
            let off = r.offset as usize + i as usize * r.elem_size as usize + offset_of!(crate::layout::SetSlot, owner);
            &s.map.words_at(off, 1).unwrap()[0]
        };
        // a: killed after its record named the slot; b: killed before.
        owner_word(slot_of(a)).store(dead_tag(), Ordering::Relaxed);
        let bs = slot_of(b);
        owner_word(bs).store(dead_tag(), Ordering::Relaxed);
        s.modify(b, Change::new(EventKind::NODE_UPDATED), |r: &mut NodeRecord| {
            r.set_slot = 0;
            Ok::<_, PoolError>(())
        })
        .unwrap();
        assert_eq!(s.reclaim_leaked_sets().unwrap(), 1);
        assert_eq!(s.free_set_slots().unwrap(), 3);
        assert_eq!(owner_word(slot_of(a)).load(Ordering::Relaxed), 0);
        assert!(s.set_contains(a, 1).unwrap());
        assert_eq!(s.reclaim_leaked_sets().unwrap(), 0);
    }

    /// Content of version `tag`: its tag in the first 8 bytes, a length and pattern that
    /// depend on it, so any mix of two versions is detected.
    fn versioned(tag: u64) -> (String, Vec<u8>) {
        let len = 8 + (tag as usize * 389) % 1800;
        let mut bytes = pattern(tag, len);
        bytes[..8].copy_from_slice(&tag.to_le_bytes());
        (format!("text/v{}", tag % 97), bytes)
    }

    #[test]
    fn concurrent_replacement_never_yields_a_mix() {
        replace_under_readers("race", 0);
    }

    /// As above with half the arena taken, so most replacements rewrite in place.
    #[test]
    fn concurrent_replacement_in_a_full_arena_never_yields_a_mix() {
        replace_under_readers("race-full", 8);
    }

    fn replace_under_readers(tag: &str, pad_chunks: usize) {
        let g = seg(tag);
        let s = &g.seg;
        if pad_chunks > 0 {
            s.put_document(s.root(), "pad", "text/plain", &pattern(99, pad_chunks * 256)).unwrap();
        }
        let (ct, bytes) = versioned(0);
        let doc = s.put_document(s.root(), "schema", &ct, &bytes).unwrap();
        let done = AtomicBool::new(false);
        let (ok, changed) = (StdAtomicU64::new(0), StdAtomicU64::new(0));
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    let mut last_version = 0;
                    while !done.load(std::sync::atomic::Ordering::Acquire) {
                        match s.get_document(doc, &mut out) {
                            Ok(info) => {
                                let tag = u64::from_le_bytes(out[..8].try_into().unwrap());
                                let (ct, bytes) = versioned(tag);
                                assert!(out == bytes, "a read mixed versions (tag {tag})");
                                assert_eq!(info.content_type, ct);
                                assert_eq!(info.version, tag + 2);
                                assert!(info.version >= last_version, "versions went backwards");
                                last_version = info.version;
                                ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            Err(DocError::Changed) => {
                                changed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            Err(e) => panic!("unexpected error: {e}"),
                        }
                    }
                });
            }
            for tag in 1..=3000 {
                let (ct, bytes) = versioned(tag);
                assert_eq!(s.replace_document(doc, &ct, &bytes).unwrap(), tag + 2);
            }
            done.store(true, std::sync::atomic::Ordering::Release);
        });
        assert!(ok.load(std::sync::atomic::Ordering::Relaxed) > 0);
        let (_, last) = versioned(3000);
        assert_eq!(used(s), (last.len().div_ceil(256) + pad_chunks) as u64);
        assert_eq!(s.free_blob_chunks().unwrap(), 16 - used(s));
        eprintln!("reads ok {}, gave up (Changed) {}", ok.into_inner(), changed.into_inner());
    }
}
