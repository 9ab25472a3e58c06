//! OTP's behaviours on Ember processes, typed: [`gen_server`],
//! [`supervisor`], [`dynamic_supervisor`], [`task`], [`application`], the
//! [`pool`] of the classic "ppool" design and a checkout/checkin
//! [`resource_pool`].
//!
//! The names, defaults and semantics are OTP's; where Rust wants another
//! shape (typed replies, a `Result` where OTP would crash the caller),
//! `docs/semantics.md`, section "OTP behaviours", states the mapping. The
//! layering is OTP's too: a small [`gen`] core (start with
//! acknowledgement, call, reply) carries `gen_server`, and every other
//! behaviour here is itself a `gen_server`.
//!
//! # A tour
//!
//! A **generic server** is a state with callbacks. Calls are typed: the
//! compiler checks requests and replies against the server's types.
//!
//! ```
//! use ember_otp::gen::ReplyTo;
//! use ember_otp::gen_server::{self, CallReturn, GenServer, Init, Return};
//!
//! struct Stack(Vec<u32>);
//!
//! enum Call { Pop }
//! enum Cast { Push(u32) }
//!
//! impl GenServer for Stack {
//!     type Args = Vec<u32>;
//!     type Call = Call;
//!     type Reply = Option<u32>;
//!     type Cast = Cast;
//!     type Continue = ();
//!
//!     async fn init(items: Vec<u32>) -> Init<Self> {
//!         Init::Ok(Stack(items))
//!     }
//!     async fn handle_call(&mut self, _pop: Call, _from: &ReplyTo<Option<u32>>) -> CallReturn<Self> {
//!         CallReturn::Reply(self.0.pop())
//!     }
//!     async fn handle_cast(&mut self, Cast::Push(n): Cast) -> Return<Self> {
//!         self.0.push(n);
//!         Return::NoReply
//!     }
//! }
//!
//! let rt = ember_runtime::Runtime::builder().schedulers(2).build().unwrap();
//! rt.block_on(async {
//!     let stack = gen_server::start_link::<Stack>(vec![1]).await.unwrap();
//!     stack.cast(Cast::Push(2));
//!     assert_eq!(stack.call(Call::Pop).await, Ok(Some(2)));
//!     assert_eq!(stack.call(Call::Pop).await, Ok(Some(1)));
//!     assert_eq!(stack.call(Call::Pop).await, Ok(None));
//! });
//! ```
//!
//! A call never hangs on a dead server and never leaves a late reply
//! behind: it returns [`CallError::NoProc`](gen::CallError::NoProc),
//! [`Exited`](gen::CallError::Exited) or, after its timeout (5 s by
//! default), [`Timeout`](gen::CallError::Timeout). A server may answer
//! later, from anywhere, through the caller's [`ReplyTo`](gen::ReplyTo):
//!
//! ```
//! use std::time::Duration;
//! use ember_otp::gen::{CallError, ReplyTo};
//! use ember_otp::gen_server::{self, CallReturn, GenServer, GenServerRef, Init};
//!
//! /// Answers each call from a helper process, after `delay`.
//! struct Slow;
//!
//! impl GenServer for Slow {
//!     type Args = ();
//!     type Call = Duration;
//!     type Reply = &'static str;
//!     type Cast = ();
//!     type Continue = ();
//!
//!     async fn init(_: ()) -> Init<Self> {
//!         Init::Ok(Slow)
//!     }
//!     async fn handle_call(&mut self, delay: Duration, from: &ReplyTo<&'static str>) -> CallReturn<Self> {
//!         let from = from.clone();
//!         ember_runtime::spawn(async move {
//!             ember_runtime::sleep(delay).await;
//!             from.reply("done"); // dropped if the caller gave up
//!         });
//!         CallReturn::NoReply
//!     }
//! }
//!
//! let rt = ember_runtime::Runtime::builder().schedulers(2).build().unwrap();
//! rt.block_on(async {
//!     let slow = gen_server::start::<Slow>(()).await.unwrap();
//!     assert_eq!(slow.call(Duration::from_millis(1)).await, Ok("done"));
//!     let short = Duration::from_millis(1);
//!     // An answer that comes an hour late: the call gives up after 1 ms.
//!     let late = Duration::from_secs(3600);
//!     assert_eq!(slow.call_timeout(late, short).await, Err(CallError::Timeout));
//!
//!     let nobody = GenServerRef::<Slow>::from_name("nobody");
//!     assert_eq!(nobody.call(Duration::ZERO).await, Err(CallError::NoProc));
//! });
//! ```
//!
//! A **supervisor** starts children in order, restarts them by strategy
//! and restart type, gives up past its restart intensity, and stops them
//! in reverse order. Specs are checked when built:
//!
//! ```
//! use ember_otp::supervisor::{ChildSpec, Flags, Restart, SupervisorSpec};
//! use ember_runtime::{exit, receive, self_pid, send, spawn_link, ExitReason, Pid};
//!
//! let rt = ember_runtime::Runtime::builder().schedulers(2).build().unwrap();
//! rt.block_on(async {
//!     let me = self_pid();
//!     let worker = ChildSpec::worker("worker", move || async move {
//!         Ok(spawn_link(async move {
//!             send(me, self_pid()); // "I (re)started"
//!             receive::<()>().await;
//!         }))
//!     })
//!     .restart(Restart::Permanent)
//!     .build()
//!     .unwrap();
//!     let sup = SupervisorSpec::new(Flags::new().intensity(3), vec![worker])
//!         .unwrap()
//!         .start_link()
//!         .await
//!         .unwrap();
//!     let first: Pid = receive().await;
//!     exit(first, ExitReason::Kill);
//!     let second: Pid = receive().await; // restarted
//!     assert_ne!(first, second);
//!     sup.stop().await.unwrap();
//!
//!     assert!(ChildSpec::worker("", || async { Ok(Pid::OUTSIDE) }).build().is_err());
//! });
//! ```
//!
//! A **dynamic supervisor** (OTP's `simple_one_for_one`) starts children
//! from one template, each with its own arguments; a **task** runs a future
//! in its own process; a **task supervisor** runs tasks whose crash, with
//! `async_nolink`, does not take the caller down:
//!
//! ```
//! use ember_otp::dynamic_supervisor::DynamicSupervisorSpec;
//! use ember_otp::supervisor::Restart;
//! use ember_otp::task::{Task, TaskError, TaskSupervisor};
//! use ember_runtime::{receive, self_pid, send, spawn_link};
//!
//! let rt = ember_runtime::Runtime::builder().schedulers(2).build().unwrap();
//! rt.block_on(async {
//!     let me = self_pid();
//!     let greeters = DynamicSupervisorSpec::worker(move |name: String| async move {
//!         Ok(spawn_link(async move { send(me, format!("hello {name}")) }))
//!     })
//!     .restart(Restart::Transient) // done once it has greeted
//!     .build()
//!     .unwrap()
//!     .start_link()
//!     .await
//!     .unwrap();
//!     greeters.start_child("joe".to_string()).await.unwrap();
//!     assert_eq!(receive::<String>().await, "hello joe");
//!
//!     assert_eq!(Task::spawn(async { 1 + 1 }).await, Ok(2));
//!
//!     let tasks = TaskSupervisor::start_link().await.unwrap();
//!     let doomed = tasks.async_nolink(async { panic!("sum(13)") as u64 }).await.unwrap();
//!     assert!(matches!(doomed.await, Err(TaskError::Exited(_))));
//! });
//! ```
//!
//! An **application** is a named top-level tree with its environment,
//! started and stopped as a unit:
//!
//! ```
//! use ember_otp::application::{self, Env};
//! use ember_otp::supervisor::{Flags, SupervisorSpec};
//!
//! let rt = ember_runtime::Runtime::builder().schedulers(2).build().unwrap();
//! rt.block_on(async {
//!     let app = application::start_tree("demo", Env::new().set("workers", 4usize), |_env| {
//!         SupervisorSpec::new(Flags::new(), vec![ember_otp::pool::pools_child_spec()]).unwrap()
//!     })
//!     .await
//!     .unwrap();
//!     assert_eq!(application::get_env::<usize>("demo", "workers").await, Some(4));
//!     app.stop().await.unwrap();
//! });
//! ```
//!
//! The **pool** limits how many workers run: `run` says
//! [`NoAlloc`](pool::PoolError::NoAlloc) at once when full, `sync_queue`
//! waits, `async_queue` queues and returns; slots come back through
//! monitors however workers exit. The **resource pool** lends long-lived
//! workers (connections) with overflow and a checkout timeout:
//!
//! ```
//! use ember_otp::pool::{self, PoolError};
//! use ember_otp::resource_pool::ResourcePoolSpec;
//! use ember_runtime::{receive, send, spawn_link};
//!
//! let rt = ember_runtime::Runtime::builder().schedulers(2).build().unwrap();
//! rt.block_on(async {
//!     pool::start_pools().await.unwrap();
//!     let jobs = pool::start_pool("jobs", 1, |n: u64| async move {
//!         Ok(spawn_link(async move { let _ = n; receive::<()>().await }))
//!     })
//!     .await
//!     .unwrap();
//!     let busy = jobs.run(1).await.unwrap();
//!     assert_eq!(jobs.run(2).await, Err(PoolError::NoAlloc));
//!     jobs.async_queue(3); // starts when `busy` is done
//!     send(busy, ());
//!
//!     let db = ResourcePoolSpec::builder(|| async {
//!         Ok(spawn_link(async { loop { receive::<()>().await } }))
//!     })
//!     .size(2)
//!     .max_overflow(1)
//!     .build()
//!     .unwrap()
//!     .start_link()
//!     .await
//!     .unwrap();
//!     let conn = db.checkout().await.unwrap();
//!     db.checkin(conn);
//! });
//! ```
#![forbid(unsafe_code)]

pub mod application;
pub mod dynamic_supervisor;
pub mod gen;
pub mod gen_server;
pub mod logger;
pub mod pool;
pub mod resource_pool;
pub mod supervisor;
pub mod task;
