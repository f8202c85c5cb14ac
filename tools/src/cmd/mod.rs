//! One module per `wn` verb group.

pub mod agents;
pub mod commands;
pub mod docs;
pub mod doctor;
pub mod dump;
pub mod events;
pub mod labels;
pub mod lifecycle;
pub mod mail;
pub mod mcp;
pub mod metrics;
pub mod nodes;
pub mod persist;
pub mod reserve;
pub mod serve;
pub mod stat;
pub mod tasks;
pub mod token;
pub mod top;
