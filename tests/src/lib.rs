//! Helpers for the cross-process integration tests.
