//! ember-dist's integration tests in one binary: linking one test binary per
//! file cost more compile time than the tests take to run. Each file below
//! stays a module of its own (with its own copy of the shared helpers), as it
//! was as a binary; `Cargo.toml` lists each with `test = false`, so `cargo
//! test` builds it only here (`cargo test --test NAME` still builds it alone).
//! Files that need a process of their own (a global allocator or tracing
//! subscriber, whole-process memory, threads or panic hook, `harness = false`)
//! or load both cores for long (hogs, races) stay separate binaries
//! (dist_ember_busy, dist_ember_to_ember, dist_erl_busy, dist_erl_stream): see
//! `Cargo.toml`. So does dist_tls, for now: its TLS round trip with erl lost
//! Ember's message to erl in one of three runs of this binary under load 17-27
//! (not known yet whether sharing the process had a part in it).

// Each file includes the shared helpers as its own module, as it did as a
// binary of its own.
#![allow(clippy::duplicate_mod)]

#[path = "../dist_elixir_calls.rs"]
mod dist_elixir_calls;
#[path = "../dist_erl_bad_pids.rs"]
mod dist_erl_bad_pids;
#[path = "../dist_erl_interop.rs"]
mod dist_erl_interop;
#[path = "../dist_procs_ember.rs"]
mod dist_procs_ember;
#[path = "../dist_procs_erl.rs"]
mod dist_procs_erl;
#[path = "../dist_spawn.rs"]
mod dist_spawn;
#[path = "../dist_tasks_ember.rs"]
mod dist_tasks_ember;
#[path = "../dist_unlink.rs"]
mod dist_unlink;
