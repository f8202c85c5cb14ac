//! # worknode-bridge: boards shared between hosts through NATS JetStream
//!
//! The library half of `worknode-bridge` (issue 18): what one host tells the others
//! about one node ([`ReplicaState`]), how two such states merge ([`ReplicaState::merge`],
//! a join: commutative, associative, idempotent), the bounded, checked wire form of a
//! state ([`wire`]), and the local board a bridge reads and writes ([`local`]). The
//! binary (`src/main.rs`, `src/bridge.rs`: the loop over JetStream; `src/claims.rs`: the
//! claim register) builds on them. The design: ARCHITECTURE.md, "Replication between
//! hosts".
//!
//! ## Why state, not operations
//!
//! A host publishes a node's whole replicated state, not the operation that changed it.
//! States merge by a join, so a message delivered twice, out of order, or after a newer
//! one changes nothing: a bridge that restarts from its durable consumer and is handed
//! again what it applied before cannot duplicate anything, and a stream that keeps only
//! the last state per node and host (JetStream's per-subject limit) loses nothing.

pub mod local;
pub mod replica;
pub mod wire;

pub use replica::{Fields, HostId, Lww, ReplicaState, Stamp};
pub use wire::{decode, encode, WireError, DOCUMENT_MAX, MESSAGE_MAX};
