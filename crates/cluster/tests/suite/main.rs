//! ember-cluster's integration tests in one binary: linking one test binary per
//! file cost more compile time than the tests take to run. Each file below
//! stays a module of its own (with its own copy of the shared helpers), as it
//! was as a binary; `Cargo.toml` lists each with `test = false`, so `cargo
//! test` builds it only here (`cargo test --test NAME` still builds it alone).
//! Files that need a process of their own (a global allocator or tracing
//! subscriber, whole-process memory, threads or panic hook, `harness = false`)
//! or load both cores for long (hogs, races) stay separate binaries (none): see
//! `Cargo.toml`.

// Each file includes the shared helpers as its own module, as it did as a
// binary of its own.
#![allow(clippy::duplicate_mod)]

#[path = "../cluster_bad_input.rs"]
mod cluster_bad_input;
#[path = "../cluster_code_change.rs"]
mod cluster_code_change;
#[path = "../cluster_crash_loop.rs"]
mod cluster_crash_loop;
#[path = "../cluster_in_process.rs"]
mod cluster_in_process;
#[path = "../cluster_pg.rs"]
mod cluster_pg;
#[path = "../cluster_supervised.rs"]
mod cluster_supervised;
