//! ember-runtime's integration tests in one binary: linking one test binary per
//! file cost more compile time than the tests take to run. Each file below
//! stays a module of its own (with its own copy of the shared helpers), as it
//! was as a binary; `Cargo.toml` lists each with `test = false`, so `cargo
//! test` builds it only here (`cargo test --test NAME` still builds it alone).
//! Files that need a process of their own (a global allocator or tracing
//! subscriber, whole-process memory, threads or panic hook, `harness = false`)
//! or load both cores for long (hogs, races) stay separate binaries
//! (io_user_stdout, preemption_handoff, preemption_starvation_floor,
//! process_memory_limit, runtime_drop_while_hogs_run,
//! scheduler_contended_handoff, scheduler_fairness,
//! scheduler_wakeup_after_handoff, signal_link_races): see `Cargo.toml`.

// Each file includes the shared helpers as its own module, as it did as a
// binary of its own.
#![allow(clippy::duplicate_mod)]

#[path = "../dist_seam.rs"]
mod dist_seam;
#[path = "../introspection_info.rs"]
mod introspection_info;
#[path = "../io_group_leader.rs"]
mod io_group_leader;
#[path = "../message_receive.rs"]
mod message_receive;
#[path = "../message_send.rs"]
mod message_send;
#[path = "../net_tcp.rs"]
mod net_tcp;
#[path = "../process_aliases.rs"]
mod process_aliases;
#[path = "../process_memory_limit_unsupported.rs"]
mod process_memory_limit_unsupported;
#[path = "../process_panics.rs"]
mod process_panics;
#[path = "../process_pids.rs"]
mod process_pids;
#[path = "../process_spawn.rs"]
mod process_spawn;
#[path = "../process_termination.rs"]
mod process_termination;
#[path = "../registry_names.rs"]
mod registry_names;
#[path = "../runtime_shutdown.rs"]
mod runtime_shutdown;
#[path = "../signal_exit.rs"]
mod signal_exit;
#[path = "../signal_exit_order.rs"]
mod signal_exit_order;
#[path = "../signal_link_chains.rs"]
mod signal_link_chains;
#[path = "../signal_links.rs"]
mod signal_links;
#[path = "../signal_monitors.rs"]
mod signal_monitors;
#[path = "../time_futures.rs"]
mod time_futures;
#[path = "../timer_send_after.rs"]
mod timer_send_after;
#[path = "../tokio_interop.rs"]
mod tokio_interop;
