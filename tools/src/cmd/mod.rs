//! One module per `wn` verb.

pub mod dump;
pub mod events;
