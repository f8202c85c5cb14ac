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

/// How long one call to the register may take: a take (at most [`CAS_ROUNDS`] reads
/// and writes) stays well inside a claimer's wait (`worknode::CONFIRM_WAIT`).
const CALL_TIMEOUT: Duration = Duration::from_millis(600);

/// Why the register could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// NATS did not answer or refused: retried.
    Unreachable(String),
    /// Another host name of this board has this host's id (or another bridge runs as
    /// this host): this bridge must not run.
    HostTaken(String),
}

/// `fut`, or an error after [`CALL_TIMEOUT`].
async fn bounded<T, E: std::fmt::Display>(fut: impl std::future::Future<Output = Result<T, E>>) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("the claim register did not answer".into()),
    }
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
    pub async fn open(
        js: &Context,
        board: &str,
        host: HostId,
        host_name: &str,
        timeout: Duration,
    ) -> Result<Register, OpenError> {
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
            .map_err(|_| OpenError::Unreachable("the claim register: NATS did not answer".into()))?
            .map_err(|e| OpenError::Unreachable(format!("the claim register: {e}")))?;
        // Host ids are names hashed to 32 bits: one id for two names would let both
        // hosts take one task (each would read the other's entry as its own). The first
        // bridge of an id writes its name; another name under that id is refused.
        let key = format!("host_{}", host.0);
        let unreachable = |e: String| OpenError::Unreachable(format!("the claim register: {e}"));
        match bounded(store.create(&key, Bytes::from(host_name.to_string()))).await {
            Ok(_) => {}
            Err(_) => {
                let owner = bounded(store.get(key.clone())).await.map_err(unreachable)?;
                let owner = owner.map(|b| String::from_utf8_lossy(&b).into_owned());
                if owner.as_deref() != Some(host_name) {
                    return Err(OpenError::HostTaken(format!(
                        "host id {} is already host {:?} on board {board}: give this host another --host name",
                        host.0,
                        owner.unwrap_or_default()
                    )));
                }
            }
        }
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
        let floor = cached.map_or(0, |(_, v)| v.epoch);
        for _ in 0..CAS_ROUNDS {
            let (last_epoch, revision) = match cached.take() {
                // Free, or this host's, when last seen: try at that revision at once.
                Some((rev, v)) if !v.held || v.host == self.host.0 => (v.epoch, Some(rev)),
                _ => match bounded(self.store.entry(k.clone())).await.map_err(|e| unreachable(&e))? {
                    None => (floor, None),
                    // A deleted entry keeps its epoch floor here: epochs never go back.
                    Some(e) if matches!(e.operation, Operation::Delete | Operation::Purge) => (floor, Some(e.revision)),
                    Some(e) => {
                        let v = parse(&e.value).map_err(|e| unreachable(&e))?;
                        self.last.insert(uuid, (e.revision, v));
                        if v.held && v.host != self.host.0 {
                            return Err(Refused::Elsewhere(v.host));
                        }
                        (v.epoch.max(floor), Some(e.revision))
                    }
                },
            };
            let entry = Entry { host: self.host.0, held: true, epoch: local_epoch.max(last_epoch + 1) };
            let value = Bytes::from(serde_json::to_vec(&entry).map_err(|e| unreachable(&e))?);
            let written = match revision {
                None => match tokio::time::timeout(CALL_TIMEOUT, self.store.create(&k, value)).await {
                    Ok(Ok(rev)) => Some(rev),
                    Ok(Err(e)) if e.kind() == CreateErrorKind::AlreadyExists => None,
                    Ok(Err(e)) => return Err(unreachable(&e)),
                    Err(_) => return Err(Refused::Unreachable("the claim register did not answer".into())),
                },
                Some(rev) => match tokio::time::timeout(CALL_TIMEOUT, self.store.update(&k, value, rev)).await {
                    Ok(Ok(rev)) => Some(rev),
                    Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => None,
                    Ok(Err(e)) => return Err(unreachable(&e)),
                    Err(_) => return Err(Refused::Unreachable("the claim register did not answer".into())),
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
        match tokio::time::timeout(CALL_TIMEOUT, self.store.update(key(uuid), value, rev))
            .await
            .map_err(|_| "the claim register did not answer".to_string())?
        {
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
        let Some(e) = bounded(self.store.entry(key(uuid))).await? else { return Ok(false) };
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
