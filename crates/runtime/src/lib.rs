//! Ember's process machine: lightweight processes on Ember's own M:N
//! scheduler, with Erlang's semantics for messages, links, monitors, exit
//! signals, registered names and timers.
//!
//! A process is an `async` body plus a control block (pid, mailbox, links,
//! monitors, flags, counters). It costs a few hundred bytes, spawns in well
//! under a microsecond, and a million of them is normal. `docs/semantics.md`
//! states every guarantee; the tests cite its sections.
//!
//! # A tour
//!
//! Start a runtime and run a process; messages of any `Send + 'static` type
//! can be sent to a pid and received selectively by type:
//!
//! ```
//! use ember_runtime::{receive, self_pid, send, spawn, Runtime};
//!
//! let rt = Runtime::new().unwrap();
//! rt.block_on(async {
//!     let parent = self_pid();
//!     let child = spawn(async move {
//!         let n: u64 = receive().await;
//!         send(parent, n * 2);
//!     });
//!     send(child, 21u64);
//!     assert_eq!(receive::<u64>().await, 42);
//! });
//! ```
//!
//! A crash is contained in its process; links and monitors report it:
//!
//! ```
//! use ember_runtime::{receive, spawn_monitor, Down, ExitReason, Runtime};
//!
//! let rt = Runtime::new().unwrap();
//! rt.block_on(async {
//!     let (pid, _monitor) = spawn_monitor(async { assert_eq!(1 + 1, 3, "boom") });
//!     let down: Down = receive().await;
//!     assert_eq!(down.pid, pid);
//!     assert!(matches!(down.reason, ExitReason::Panic(ref m) if m.contains("boom")));
//! });
//! ```
//!
//! A process that traps exits receives its linked processes' deaths as
//! [`Exit`] messages instead of dying with them:
//!
//! ```
//! use ember_runtime::{receive, spawn_link, trap_exit, Exit, ExitReason, Runtime};
//!
//! let rt = Runtime::new().unwrap();
//! rt.block_on(async {
//!     trap_exit(true);
//!     let child = spawn_link(async { ExitReason::error("bad input") });
//!     let exit: Exit = receive().await;
//!     assert_eq!(exit.from, child);
//!     assert_eq!(exit.reason, ExitReason::error("bad input"));
//! });
//! ```

mod alias;
pub mod alloc;
mod context;
pub mod dist;
pub mod introspect;
pub mod io;
mod loom;
mod mailbox;
mod memory;
mod message;
pub mod net;
mod pid;
mod process;
mod reason;
mod registry;
mod runtime;
mod scheduler;
mod signal;
mod spawn;
pub mod sync;
pub mod time;
mod timer;

pub use alias::{alias, alias_monitor, send_alias, unalias};
pub use introspect::{set_label, set_priority};
pub use io::{group_leader, set_group_leader};
pub use mailbox::Envelope;
pub use memory::{memory_kill, memory_limit, set_memory_limit, MemoryKill, MemoryLimitUnsupported};
pub use message::{
    receive, receive_any, self_pid, send, send_named, sleep, try_receive, try_self_pid,
    yield_point, NameNotFound, Receive, ReceiveAny, ReceiveTimeout, YieldPoint,
};
pub use pid::{MonitorRef, ParsePidError, Pid, Ref, TimerRef};
pub use process::{Priority, Status};
pub use reason::{ExitReason, IntoExitReason};
pub use registry::{register, registered, unregister, whereis, NotRegistered, RegisterError};
pub use runtime::{exit_self, is_alive, make_ref, should_stop, Builder, Handle, Runtime};
pub use scheduler::{Handoff, Preemption};
pub use signal::{
    demonitor, exit, link, monitor, trap_exit, trapping_exits, unlink, Down, Exit, LinkError,
};
pub use spawn::{spawn, spawn_link, spawn_monitor, Spawn, SpawnError, Spawned};
pub use timer::{cancel_timer, read_timer, send_after};
