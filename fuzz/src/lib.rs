//! cairn-fuzz: fuzz targets for every decoder that reads bytes from outside, and the fuzzer
//! that runs them on stable Rust.
//!
//! - [`targets`]: one [`targets::Target`] per decoder (frames, chunks, manifests, offline
//!   collections, the timeline's parsers, trigger payloads, containment requests, outcomes
//!   and allow-list entries, the LiME and ELF readers), each a function of the input's bytes
//!   with oracles (round trips, two readers agreeing, custody verifying) beyond "does not
//!   panic".
//! - [`engine`]: mutations, the in-process run under `catch_unwind`, crash files.
//! - [`alloc`]: the counting allocator that turns an out-of-proportion allocation into a
//!   finding.
//! - [`shared`]: the current input in a shared mapping, so a supervisor names the input that
//!   hung or aborted a worker.
//!
//! `cargo xtask fuzz` runs the binary (`src/main.rs`); `tests/` replays the corpus and every
//! saved crash, and holds the property tests.

pub mod alloc;
pub mod engine;
pub mod shared;
pub mod targets;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;
