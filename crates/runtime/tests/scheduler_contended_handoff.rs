//! A process waiting behind a poll that overran its slice runs before that
//! poll ends: the watchdog hands the slot to a spare once the poll has used
//! `Preemption::contended_threshold` of CPU while work waits for the slot,
//! without demoting its thread (docs/semantics.md, "Preemption"). The CPU
//! threshold is set out of reach here, so only this rule can move the
//! waiting process. The tests wait on events with a deadline, never on time.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_runtime::introspect::process_info;
use ember_runtime::net::TcpListener;
use ember_runtime::{self_pid, send, spawn, Handle, Preemption, Runtime, Status};
use support::{recv, WAIT};

/// One scheduler; only the contended rule can hand its slot off.
fn runtime() -> Runtime {
    let mut preemption = Preemption::default();
    preemption.cpu_threshold = Duration::from_secs(600);
    preemption.blocked_threshold = Duration::from_secs(600);
    Runtime::builder()
        .schedulers(1)
        .preemption(preemption)
        .build()
        .expect("a runtime")
}

/// The calling thread's CPU time.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out-pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[test]
fn a_process_woken_behind_a_poll_that_overran_its_slice_runs_on_a_spare() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let ran = Arc::new(AtomicBool::new(false));
        let b_ran = ran.clone();
        let b = spawn(async move {
            let _: u32 = recv().await;
            b_ran.store(true, Ordering::SeqCst);
        });
        spawn(async move {
            // B goes to this slot's `next`: nobody else can run it until this
            // poll ends or the slot is handed off.
            send(b, 1u32);
            let deadline = Instant::now() + WAIT;
            while !ran.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::hint::spin_loop();
            }
            send(me, (ran.load(Ordering::SeqCst), thread_cpu()));
        });
        let (ran_during_poll, cpu): (bool, Duration) = recv().await;
        let threads = Handle::current().runtime_info().threads;
        assert!(
            ran_during_poll,
            "the woken process waited for the native poll to end ({cpu:?} of CPU): {threads:?}"
        );
        assert!(threads.contended_handoffs >= 1, "{threads:?}");
        assert_eq!(threads.demotions, 0, "{threads:?}");
    });
}

/// With one scheduler inside a native poll, nobody polls the sockets: the
/// watchdog looks at them once that poll is past the contended threshold,
/// and the process a socket event wakes runs on a spare.
#[test]
fn a_process_woken_by_a_socket_while_the_only_scheduler_computes_runs_on_a_spare() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let listener = TcpListener::bind("127.0.0.1:0").expect("a listener");
        let addr = listener.local_addr().expect("its address");
        let ran = Arc::new(AtomicBool::new(false));
        let b_ran = ran.clone();
        spawn(async move {
            send(me, "accepting");
            let (mut stream, _) = listener.accept().await.expect("a connection");
            let mut byte = [0u8; 1];
            tokio::io::AsyncReadExt::read_exact(&mut stream, &mut byte)
                .await
                .expect("a byte");
            b_ran.store(true, Ordering::SeqCst);
        });
        // Runs once B's poll has ended: B waits in `accept`.
        let _: &str = recv().await;
        let spinning = Arc::new(AtomicBool::new(false));
        let client = {
            let spinning = spinning.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + WAIT;
                while !spinning.load(Ordering::SeqCst) && Instant::now() < deadline {
                    std::thread::yield_now();
                }
                let mut s = std::net::TcpStream::connect(addr).expect("connect");
                std::io::Write::write_all(&mut s, b"x").expect("write");
            })
        };
        spawn(async move {
            spinning.store(true, Ordering::SeqCst);
            let deadline = Instant::now() + WAIT;
            while !ran.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::hint::spin_loop();
            }
            send(me, ran.load(Ordering::SeqCst));
        });
        let ran_during_poll: bool = recv().await;
        let threads = Handle::current().runtime_info().threads;
        assert!(
            ran_during_poll,
            "the socket's process waited for the native poll to end: {threads:?}"
        );
        assert!(threads.contended_handoffs >= 1, "{threads:?}");
        assert_eq!(threads.demotions, 0, "{threads:?}");
        client.join().expect("the client thread");
    });
}

#[test]
fn a_poll_nobody_waits_behind_keeps_its_slot() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        spawn(async move {
            // The premise: nobody else runnable. Its parent must be parked
            // in its `recv` first: on a loaded machine its poll can outlast
            // its slice and yield there instead, queued behind this one
            // (seen: 2 of 60 runs beside three busy loops).
            let deadline = Instant::now() + WAIT;
            while process_info(me).map(|info| info.status) != Some(Status::Waiting) {
                assert!(Instant::now() < deadline, "the parent never waited");
                // Parks (a bare yield may go on while the slice lasts).
                ember_runtime::sleep(Duration::from_millis(1)).await;
            }
            // Well past the contended threshold, with no process runnable.
            let start = thread_cpu();
            let deadline = Instant::now() + WAIT;
            while thread_cpu() - start < Duration::from_millis(5) && Instant::now() < deadline {
                std::hint::spin_loop();
            }
            send(me, thread_cpu() - start);
        });
        let used: Duration = recv().await;
        assert!(used >= Duration::from_millis(5), "spun only {used:?}");
        let threads = Handle::current().runtime_info().threads;
        assert_eq!(threads.handoffs, 0, "{threads:?}");
    });
}
