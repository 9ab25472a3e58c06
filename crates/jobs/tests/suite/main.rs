//! ember-jobs's integration tests in one binary: linking one test binary per
//! file cost more compile time than the tests take to run. Each file below
//! stays a module of its own (with its own copy of the shared helpers), as it
//! was as a binary; `Cargo.toml` lists each with `test = false`, so `cargo
//! test` builds it only here (`cargo test --test NAME` still builds it alone).
//! Files that need a process of their own (a global allocator or tracing
//! subscriber, whole-process memory, threads or panic hook, `harness = false`)
//! or load both cores for long (hogs, races) stay separate binaries
//! (jobs_memory_limit): see `Cargo.toml`.

// Each file includes the shared helpers as its own module, as it did as a
// binary of its own.
#![allow(clippy::duplicate_mod)]

#[path = "../cron.rs"]
mod cron;
#[path = "../jobs_lifecycle.rs"]
mod jobs_lifecycle;
#[path = "../store_fencing.rs"]
mod store_fencing;
#[path = "../store_postgres.rs"]
mod store_postgres;
