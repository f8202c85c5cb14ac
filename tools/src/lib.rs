//! `wn` as a library: the verbs, and the pieces every front end over the agent handle
//! shares — naming nodes ([`resolve`]), the agent identity ([`ctx`]), errors with their
//! codes, hints and exit codes ([`fail`]), durations ([`duration`]) and JSON shapes
//! ([`output`]).
//!
//! The `wn` binary (`main.rs`) is a thin `fn main` over it; the Python SDK (`python/`)
//! links it so that a node is named and an error is coded exactly as the CLI does.

pub mod bridges;
pub mod cli;
pub mod cmd;
pub mod ctx;
pub mod duration;
pub mod fail;
pub mod input;
pub mod metrics;
pub mod output;
pub mod resolve;
