//! The claim register the hosts of a board share: one JetStream KV entry per shared
//! task (bucket `WN_<board>_claims`, key = the task's UUID in hex), and the bridge's
//! half of the two-phase claim (the library's half is `worknode::PendingClaim`).
//!
//! An entry says which host holds the task (`held`) and the fencing epoch of the last
//! claim. Taking it is a compare-and-set at the revision read (create when there is
//! none), so of two hosts racing for one task exactly one succeeds; the winner's epoch
//! is one more than the entry's last (at least the local claim's), so epochs grow
//! across hosts. Freeing it (release, completion, failure, expiry, delete) is a
//! compare-and-set to `held: false` at the revision this bridge wrote.

use async_nats::jetstream::kv::{CreateErrorKind, Operation, Store, UpdateErrorKind};
use async_nats::jetstream::stream;
use async_nats::jetstream::Context;
use bytes::Bytes;
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;
use worknode_bridge::HostId;

/// The longest entry value read (a value is a few dozen bytes).
const ENTRY_MAX: usize = 256;

/// How many times a compare-and-set is retried after losing to a concurrent writer.
const CAS_ROUNDS: usize = 4;

/// One task's entry.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The host that holds (or last held) the task.
    pub host: u32,
    /// Whether it holds it now.
    pub held: bool,
    /// The fencing epoch of the last claim.
    pub epoch: u64,
}

/// Why a take failed.
#[derive(Debug)]
pub enum Refused {
    /// Another host holds the task.
    Elsewhere(u32),
    /// NATS did not answer, or answered out of protocol.
    Unreachable(String),
}

/// The register, and which entries this bridge holds (at the revision it wrote).
pub struct Register {
    store: Store,
    host: HostId,
    held: HashMap<Uuid, (u64, Entry)>,
    /// The last revision and value this bridge read or wrote of each entry: a take
    /// first tries the compare-and-set at it, saving the read when nobody wrote since
    /// (bounded by the shared tasks, themselves by the pool's capacity).
    last: HashMap<Uuid, (u64, Entry)>,
}

fn key(uuid: Uuid) -> String {
    uuid.simple().to_string()
}

fn parse(value: &[u8]) -> Result<Entry, String> {
    if value.len() > ENTRY_MAX {
        return Err(format!("claim entry of {} bytes", value.len()));
    }
    serde_json::from_slice(value).map_err(|e| format!("unreadable claim entry: {e}"))
}

impl Register {
    /// The board's register, made if missing.
    pub async fn open(js: &Context, board: &str, host: HostId, timeout: Duration) -> Result<Register, String> {
        let bucket = format!("WN_{board}_claims");
        let open = async {
            // The bucket's stream is made here in the shape a KV bucket has, then opened
            // as one: async-nats's `create_key_value` first asks for the account's API
            // level in a form Debian's nats-server 2.9 does not answer.
            let config = stream::Config {
                name: format!("KV_{bucket}"),
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: 1,
                max_message_size: ENTRY_MAX as i32,
                storage: stream::StorageType::File,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: stream::DiscardPolicy::New,
                ..Default::default()
            };
            js.get_or_create_stream(config).await.map_err(|e| e.to_string())?;
            js.get_key_value(&bucket).await.map_err(|e| e.to_string())
        };
        let store = tokio::time::timeout(timeout, open)
            .await
            .map_err(|_| "the claim register: NATS did not answer".to_string())?
            .map_err(|e| format!("the claim register: {e}"))?;
        Ok(Register { store, host, held: HashMap::new(), last: HashMap::new() })
    }

    /// Whether this bridge holds `uuid`'s entry.
    pub fn holds(&self, uuid: Uuid) -> bool {
        self.held.contains_key(&uuid)
    }

    /// How many entries this bridge holds.
    pub fn held_count(&self) -> usize {
        self.held.len()
    }

    /// Takes `uuid`'s entry for this host; returns the claim's fencing epoch.
    pub async fn take(&mut self, uuid: Uuid, local_epoch: u64) -> Result<u64, Refused> {
        let k = key(uuid);
        let unreachable = |e: &dyn std::fmt::Display| Refused::Unreachable(e.to_string());
        let mut cached = self.last.get(&uuid).copied();
        for _ in 0..CAS_ROUNDS {
            let (last_epoch, revision) = match cached.take() {
                // Free, or this host's, when last seen: try at that revision at once.
                Some((rev, v)) if !v.held || v.host == self.host.0 => (v.epoch, Some(rev)),
                _ => match self.store.entry(k.clone()).await.map_err(|e| unreachable(&e))? {
                    None => (0, None),
                    Some(e) if matches!(e.operation, Operation::Delete | Operation::Purge) => (0, Some(e.revision)),
                    Some(e) => {
                        let v = parse(&e.value).map_err(|e| unreachable(&e))?;
                        self.last.insert(uuid, (e.revision, v));
                        if v.held && v.host != self.host.0 {
                            return Err(Refused::Elsewhere(v.host));
                        }
                        (v.epoch, Some(e.revision))
                    }
                },
            };
            let entry = Entry { host: self.host.0, held: true, epoch: local_epoch.max(last_epoch + 1) };
            let value = Bytes::from(serde_json::to_vec(&entry).map_err(|e| unreachable(&e))?);
            let written = match revision {
                None => match self.store.create(&k, value).await {
                    Ok(rev) => Some(rev),
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => None,
                    Err(e) => return Err(unreachable(&e)),
                },
                Some(rev) => match self.store.update(&k, value, rev).await {
                    Ok(rev) => Some(rev),
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => None,
                    Err(e) => return Err(unreachable(&e)),
                },
            };
            if let Some(rev) = written {
                self.held.insert(uuid, (rev, entry));
                self.last.insert(uuid, (rev, entry));
                return Ok(entry.epoch);
            }
            // Lost a race with another writer (or the cached revision was old): read.
        }
        Err(Refused::Unreachable("the claim register kept changing".into()))
    }

    /// Frees `uuid`'s entry if this bridge holds it.
    pub async fn free(&mut self, uuid: Uuid) -> Result<(), String> {
        let Some((rev, entry)) = self.held.get(&uuid).copied() else { return Ok(()) };
        let freed = Entry { held: false, ..entry };
        let value = Bytes::from(serde_json::to_vec(&freed).map_err(|e| e.to_string())?);
        match self.store.update(key(uuid), value, rev).await {
            Ok(rev) => {
                self.held.remove(&uuid);
                self.last.insert(uuid, (rev, freed));
                Ok(())
            }
            // Someone else wrote it since (it is not ours any more): nothing to free.
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                self.held.remove(&uuid);
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// After a restart: learns whether this host holds `uuid`'s entry (so it is freed
    /// when the local claim ends, or now when there is none).
    pub async fn adopt(&mut self, uuid: Uuid) -> Result<bool, String> {
        let Some(e) = self.store.entry(key(uuid)).await.map_err(|e| e.to_string())? else { return Ok(false) };
        if matches!(e.operation, Operation::Delete | Operation::Purge) {
            return Ok(false);
        }
        let v = parse(&e.value)?;
        self.last.insert(uuid, (e.revision, v));
        if v.held && v.host == self.host.0 {
            self.held.insert(uuid, (e.revision, v));
            return Ok(true);
        }
        Ok(false)
    }
}
