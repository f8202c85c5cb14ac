//! One module per `wn` verb.

pub mod dump;
