//! ember-web's integration tests in one binary: linking one test binary per
//! file cost more compile time than the tests take to run. Each file below
//! stays a module of its own (with its own copy of the shared helpers), as it
//! was as a binary; `Cargo.toml` lists each with `test = false`, so `cargo
//! test` builds it only here (`cargo test --test NAME` still builds it alone).
//! Files that need a process of their own (a global allocator or tracing
//! subscriber, whole-process memory, threads or panic hook, `harness = false`)
//! or load both cores for long (hogs, races) stay separate binaries
//! (server_responsiveness): see `Cargo.toml`.

// Each file includes the shared helpers as its own module, as it did as a
// binary of its own.
#![allow(clippy::duplicate_mod)]

#[path = "../server_bad_input.rs"]
mod server_bad_input;
#[path = "../server_client_disconnect.rs"]
mod server_client_disconnect;
#[path = "../server_connection_cap.rs"]
mod server_connection_cap;
#[path = "../server_graceful_shutdown.rs"]
mod server_graceful_shutdown;
#[path = "../server_handler_panic.rs"]
mod server_handler_panic;
#[path = "../server_keep_alive.rs"]
mod server_keep_alive;
#[path = "../server_read_timeouts.rs"]
mod server_read_timeouts;
#[path = "../server_request_isolation.rs"]
mod server_request_isolation;
#[path = "../server_sse.rs"]
mod server_sse;
#[path = "../server_without_tokio_driver.rs"]
mod server_without_tokio_driver;
