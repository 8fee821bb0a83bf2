//! End-to-end tests of the `tributary` binary: real processes, real HTTP, real files.

// Test helpers outside #[test] functions unwrap too: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli;
mod durability;
mod import;
mod postgres;
mod privacy;
mod retention;
mod sdk;
mod support;
