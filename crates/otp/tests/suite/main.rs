//! ember-otp's integration tests in one binary: linking one test binary per
//! file cost more compile time than the tests take to run. Each file below
//! stays a module of its own (with its own copy of the shared helpers), as it
//! was as a binary; `Cargo.toml` lists each with `test = false`, so `cargo
//! test` builds it only here (`cargo test --test NAME` still builds it alone).
//! Files that need a process of their own (a global allocator or tracing
//! subscriber, whole-process memory, threads or panic hook, `harness = false`)
//! or load both cores for long (hogs, races) stay separate binaries
//! (logger_overload, supervisor_reports): see `Cargo.toml`.

// Each file includes the shared helpers as its own module, as it did as a
// binary of its own.
#![allow(clippy::duplicate_mod)]

#[path = "../application_lifecycle.rs"]
mod application_lifecycle;
#[path = "../dynamic_supervisor_children.rs"]
mod dynamic_supervisor_children;
#[path = "../gen_server_calling_self.rs"]
mod gen_server_calling_self;
#[path = "../gen_server_calls.rs"]
mod gen_server_calls;
#[path = "../gen_server_init_ignore.rs"]
mod gen_server_init_ignore;
#[path = "../gen_server_lifecycle.rs"]
mod gen_server_lifecycle;
#[path = "../pool_ppool.rs"]
mod pool_ppool;
#[path = "../pool_resources.rs"]
mod pool_resources;
#[path = "../supervisor_children.rs"]
mod supervisor_children;
#[path = "../supervisor_restart_types.rs"]
mod supervisor_restart_types;
#[path = "../supervisor_shutdown.rs"]
mod supervisor_shutdown;
#[path = "../supervisor_strategies.rs"]
mod supervisor_strategies;
#[path = "../task_async.rs"]
mod task_async;
