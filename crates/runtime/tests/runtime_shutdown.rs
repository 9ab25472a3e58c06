//! The runtime's lifecycle: `block_on`, and what dropping a runtime does to
//! the processes still alive (docs/semantics.md §16).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ember_runtime::{exit, receive, self_pid, send, spawn, ExitReason, Pid};

use support::{runtime, Never};

/// Who was dropped, and in which process's context.
type DropLog = Arc<Mutex<Vec<(Pid, Option<Pid>)>>>;

/// Records, when dropped, which process it was dropped in and tries to send.
struct Recorder {
    owner: Pid,
    log: DropLog,
    notify: Pid,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let current = std::panic::catch_unwind(self_pid).ok();
        self.log.lock().expect("lock").push((self.owner, current));
        send(self.notify, "sent while the runtime was dropped");
    }
}

// §16: block_on runs its body as a process and returns its output.
#[test]
fn block_on_returns_the_output_of_its_body() {
    let rt = runtime();
    assert!(rt.block_on(async { self_pid().is_local() }));
    let answer = rt.block_on(async {
        let me = self_pid();
        spawn(async move { send(me, 42u64) });
        receive::<u64>().timeout(Duration::from_secs(10)).await
    });
    assert_eq!(answer, Some(42));
}

// §16: block_on panics when its process is killed before finishing.
#[test]
fn block_on_panics_when_its_process_is_killed() {
    let rt = runtime();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            exit(self_pid(), ExitReason::Kill);
            receive::<Never>().await;
        })
    }));
    assert!(outcome.is_err());
    assert_eq!(rt.block_on(async { 1 + 1 }), 2);
}

// §16, §9.3: dropping the runtime stops every process; each body is dropped in
// its own context, and what it tries to send then goes nowhere.
#[test]
fn dropping_the_runtime_drops_every_process_body_in_its_own_context() {
    let rt = runtime();
    let log = Arc::new(Mutex::new(Vec::new()));
    let pids = rt.block_on({
        let log = log.clone();
        async move {
            let me = self_pid();
            let mut pids = Vec::new();
            for _ in 0..10 {
                let (tx, rx) = tokio::sync::oneshot::channel::<Pid>();
                let log = log.clone();
                let pid = spawn(async move {
                    let owner = self_pid();
                    let _recorder = Recorder {
                        owner,
                        log,
                        notify: me,
                    };
                    let _ = tx.send(owner);
                    receive::<Never>().await;
                });
                assert_eq!(rx.await.expect("started"), pid);
                pids.push(pid);
            }
            pids
        }
    });
    assert!(log.lock().expect("lock").is_empty());
    drop(rt);
    let mut log = log.lock().expect("lock").clone();
    log.sort();
    let expected: Vec<(Pid, Option<Pid>)> = pids.iter().map(|&p| (p, Some(p))).collect();
    assert_eq!(log, expected);
}
