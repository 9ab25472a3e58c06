//! ember-console's integration tests in one binary: linking one test binary per
//! file cost more compile time than the tests take to run. Each file below
//! stays a module of its own (with its own copy of the shared helpers), as it
//! was as a binary; `Cargo.toml` lists each with `test = false`, so `cargo
//! test` builds it only here (`cargo test --test NAME` still builds it alone).
//! Files that need a process of their own (a global allocator or tracing
//! subscriber, whole-process memory, threads or panic hook, `harness = false`)
//! or load both cores for long (hogs, races) stay separate binaries (jobs_api):
//! see `Cargo.toml`.

// Each file includes the shared helpers as its own module, as it did as a
// binary of its own.
#![allow(clippy::duplicate_mod)]

#[path = "../console_api.rs"]
mod console_api;
#[path = "../console_app_api_guard.rs"]
mod console_app_api_guard;
#[path = "../console_cluster.rs"]
mod console_cluster;
#[path = "../console_load.rs"]
mod console_load;
#[path = "../console_load_remote.rs"]
mod console_load_remote;
#[path = "../console_top_remote.rs"]
mod console_top_remote;
#[path = "../cron_api.rs"]
mod cron_api;
#[path = "../endpoints_contract.rs"]
mod endpoints_contract;
#[path = "../hostile_client.rs"]
mod hostile_client;
