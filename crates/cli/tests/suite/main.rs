//! ember's integration tests in one binary: linking one test binary per file
//! cost more compile time than the tests take to run. Each file below stays a
//! module of its own (with its own copy of the shared helpers), as it was as a
//! binary; `Cargo.toml` lists each with `test = false`, so `cargo test` builds
//! it only here (`cargo test --test NAME` still builds it alone). Files that
//! need a process of their own (a global allocator or tracing subscriber,
//! whole-process memory, threads or panic hook, `harness = false`) or load both
//! cores for long (hogs, races) stay separate binaries
//! (cli_stop_while_hogs_run, examples_run): see `Cargo.toml`.

// Each file includes the shared helpers as its own module, as it did as a
// binary of its own.
#![allow(clippy::duplicate_mod)]

#[path = "../cli_cluster.rs"]
mod cli_cluster;
#[path = "../cli_cluster_server_restart.rs"]
mod cli_cluster_server_restart;
#[path = "../cli_cron.rs"]
mod cli_cron;
#[path = "../cli_dist_erl.rs"]
mod cli_dist_erl;
#[path = "../cli_jobs_crash.rs"]
mod cli_jobs_crash;
#[path = "../cli_jobs_postgres.rs"]
mod cli_jobs_postgres;
#[path = "../cli_port_mapper_takeover.rs"]
mod cli_port_mapper_takeover;
#[path = "../cli_rolling_upgrade.rs"]
mod cli_rolling_upgrade;
#[path = "../cli_survives_every_kill.rs"]
mod cli_survives_every_kill;
