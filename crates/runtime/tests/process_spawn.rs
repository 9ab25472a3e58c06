//! Spawning: `spawn`, `spawn_link`, `spawn_monitor`, the [`Spawn`] options, a
//! name given at spawn, spawning from outside, and how the body's output
//! becomes the exit reason (docs/semantics.md §2).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ember_runtime::introspect::process_info;
use ember_runtime::{
    register, self_pid, send, spawn, spawn_link, spawn_monitor, trap_exit, whereis, Exit,
    ExitReason, Pid, Priority, RegisterError, Spawn, SpawnError, Spawned,
};

use support::{down_of, recv, runtime, wait_forever, WAIT};

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

// §2.1: spawn returns the pid at once; the body runs concurrently.
#[test]
fn spawn_returns_the_pid_at_once_and_the_body_runs_on_its_own() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let child = spawn(async move {
            send(me, self_pid());
            wait_forever().await;
        });
        assert_eq!(recv::<Pid>().await, child);
        let info = process_info(child).expect("alive");
        assert!(info.links.is_empty(), "spawn does not link");
        assert!(info.monitored_by.is_empty(), "spawn does not monitor");
    });
}

// §2.2: spawn_link links before the child can run, so even a child that fails
// at once is seen through the link (never as noproc).
#[test]
fn spawn_link_links_before_the_child_can_exit() {
    let rt = runtime();
    rt.block_on(async {
        trap_exit(true);
        for _ in 0..200 {
            let child = spawn_link(async { Err::<(), _>("at once") });
            let exit: Exit = recv().await;
            assert_eq!(exit.from, child);
            assert_eq!(exit.reason, ExitReason::error("at once"));
        }
    });
}

// §2.2: spawn_monitor monitors before the child can run: a child that exits at
// once is reported with its real reason, never noproc.
// (monitor_SUITE:mon_1 expects `normal` from spawn_monitor for the same reason.)
#[test]
fn spawn_monitor_monitors_before_the_child_can_exit() {
    let rt = runtime();
    rt.block_on(async {
        for _ in 0..200 {
            let (child, watch) = spawn_monitor(async {});
            let down = down_of(watch).await;
            assert_eq!(down.pid, child);
            assert_eq!(down.reason, ExitReason::Normal);
        }
    });
}

// §2.3: every Spawn option takes effect before the body first runs.
#[test]
fn spawn_options_set_name_priority_trap_exit_label_link_and_monitor() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let Spawned { pid, monitor } = Spawn::new()
            .name("worker")
            .priority(Priority::Low)
            .trap_exit(true)
            .label("test worker")
            .link()
            .monitor()
            .spawn(wait_forever())
            .expect("spawn");
        let monitor = monitor.expect("asked for a monitor");
        let info = process_info(pid).expect("alive");
        assert_eq!(info.name.as_deref(), Some("worker"));
        assert_eq!(info.priority, Priority::Low);
        assert!(info.trap_exit);
        assert_eq!(info.spawned_as, "test worker");
        assert_eq!(info.links, vec![me]);
        assert_eq!(info.monitored_by, vec![me]);
        let mine = process_info(me).expect("alive");
        assert_eq!(mine.monitors, vec![(monitor, pid)]);
        assert_eq!(mine.links, vec![pid]);
        // Without options: none of it.
        let Spawned { pid, monitor } = Spawn::new().spawn(wait_forever()).expect("spawn");
        assert_eq!(monitor, None);
        let info = process_info(pid).expect("alive");
        assert_eq!(info.name, None);
        assert_eq!(info.priority, Priority::Normal);
        assert!(!info.trap_exit);
    });
}

// §2.4: a name given at spawn is registered before the body first runs.
#[test]
fn name_given_at_spawn_is_registered_before_the_body_first_runs() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        for round in 0..100 {
            let name = format!("early_{round}");
            let looked_up = name.clone();
            let pid = Spawn::new()
                .name(name.as_str())
                .spawn(async move { send(me, whereis(&looked_up) == Some(self_pid())) })
                .expect("free name")
                .pid;
            assert!(
                recv::<bool>().await,
                "{pid} ran before {name} was registered"
            );
        }
    });
}

// §2.4, §11.1: a spawn whose name is taken fails, and its body never runs (it
// is dropped unstarted).
#[test]
fn spawn_with_a_taken_name_fails_and_never_runs_the_body() {
    let rt = runtime();
    rt.block_on(async {
        let holder = spawn(wait_forever());
        register("taken", holder).expect("free name");
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        let error = Spawn::new()
            .name("taken")
            .spawn(async move { flag.store(true, Ordering::SeqCst) })
            .expect_err("the name is taken");
        assert_eq!(
            error,
            SpawnError::Register(RegisterError::NameTaken {
                name: "taken".into(),
                owner: holder
            })
        );
        assert!(error.to_string().contains("already registered"));
        assert_eq!(Arc::strong_count(&ran), 1, "the body was not dropped");
        assert!(!ran.load(Ordering::SeqCst));
        assert_eq!(whereis("taken"), Some(holder));
    });
}

// §2.5: link and monitor need a parent process: from outside one the spawn
// fails with NoParent and the body is dropped unstarted.
#[test]
fn link_or_monitor_options_need_a_parent_process() {
    let rt = runtime();
    let handle = rt.handle();
    for options in [Spawn::new().link(), Spawn::new().monitor()] {
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        let error = handle
            .spawn_with(options, async move { flag.store(true, Ordering::SeqCst) })
            .expect_err("no parent");
        assert_eq!(error, SpawnError::NoParent);
        assert_eq!(Arc::strong_count(&ran), 1, "the body was not dropped");
    }
}

// §2.5: a Handle spawns from outside the runtime; a name works there too.
#[test]
fn handle_spawn_starts_a_process_from_outside_the_runtime() {
    let rt = runtime();
    let handle = rt.handle().clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = handle.spawn(async move {
        let _ = tx.send(self_pid());
    });
    assert_eq!(rx.recv_timeout(WAIT), Ok(pid));
    let named = handle
        .spawn_with(Spawn::new().name("from_outside"), wait_forever())
        .expect("free name")
        .pid;
    assert_eq!(handle.whereis("from_outside"), Some(named));
}

// §2.5: spawning outside any runtime is a programming error and panics.
#[test]
fn spawn_outside_a_runtime_panics() {
    let outcome = std::panic::catch_unwind(|| spawn(async {}));
    let payload = outcome.expect_err("spawn outside a runtime must panic");
    assert!(
        panic_message(&*payload).contains("inside an Ember runtime"),
        "{}",
        panic_message(&*payload)
    );
    let outcome = std::panic::catch_unwind(|| spawn_link(async {}));
    assert!(outcome.is_err());
}

// §2.6: what the body returns becomes its exit reason.
#[test]
fn the_body_output_becomes_the_exit_reason() {
    let rt = runtime();
    rt.block_on(async {
        let cases = [
            (spawn_monitor(async {}).1, ExitReason::Normal),
            (
                spawn_monitor(async { ExitReason::Shutdown }).1,
                ExitReason::Shutdown,
            ),
            (
                spawn_monitor(async { Ok::<(), String>(()) }).1,
                ExitReason::Normal,
            ),
            (
                spawn_monitor(async { Err::<(), _>(std::fmt::Error) }).1,
                ExitReason::error(std::fmt::Error),
            ),
            (
                spawn_monitor(async { Ok::<_, String>(ExitReason::ShutdownWith("done".into())) }).1,
                ExitReason::ShutdownWith("done".into()),
            ),
            (
                spawn_monitor(async { Err::<ExitReason, _>("failed") }).1,
                ExitReason::error("failed"),
            ),
        ];
        for (watch, reason) in cases {
            assert_eq!(down_of(watch).await.reason, reason);
        }
    });
}

// §2.3, §2.6: the default label is the body's type name, which is what
// introspection shows it was spawned as.
#[test]
fn the_default_label_is_the_type_name_of_the_body() {
    async fn named_body() {
        wait_forever().await;
    }
    let rt = runtime();
    rt.block_on(async {
        let pid = spawn(named_body());
        let spawned_as = process_info(pid).expect("alive").spawned_as;
        assert!(spawned_as.contains("named_body"), "{spawned_as}");
    });
}
