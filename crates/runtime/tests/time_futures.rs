//! `time::Sleep`, `time::timeout` and `time::Interval`: deadlines as plain
//! futures on the runtime's wheels, with no tokio driver (every runtime here
//! is built with `enable_tokio(false)`).

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ember_runtime::{time, Handle, Runtime};

fn runtime() -> Runtime {
    Runtime::builder()
        .schedulers(2)
        .enable_tokio(false)
        .build()
        .unwrap()
}

/// Runs `body` in a process; fails the test if it takes over 20 s.
fn run<T: Send + 'static>(body: impl Future<Output = T> + Send + 'static) -> T {
    let rt = runtime();
    let (tx, rx) = mpsc::channel();
    rt.handle().spawn(async move {
        let _ = tx.send(body.await);
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the process did not finish within 20 s")
}

#[test]
fn a_sleep_is_ready_at_its_deadline_never_before() {
    let slept = run(async {
        let started = Instant::now();
        time::sleep(Duration::from_millis(30)).await;
        started.elapsed()
    });
    assert!(slept >= Duration::from_millis(30), "ready after {slept:?}");
    assert!(slept < Duration::from_secs(5), "ready only after {slept:?}");
}

#[test]
fn a_timeout_gives_the_output_of_a_ready_future_and_elapsed_for_a_stuck_one() {
    let (ready, stuck, waited) = run(async {
        let ready = time::timeout(Duration::from_millis(1), async { 7 }).await;
        let started = Instant::now();
        let stuck = time::timeout(Duration::from_millis(20), std::future::pending::<()>()).await;
        (ready, stuck, started.elapsed())
    });
    assert_eq!(ready, Ok(7));
    assert!(stuck.is_err());
    assert!(
        waited >= Duration::from_millis(20),
        "elapsed after {waited:?}"
    );
}

#[test]
fn a_dropped_or_finished_sleep_leaves_no_timer_armed() {
    let rt = runtime();
    let handle = rt.handle().clone();
    let (tx, rx) = mpsc::channel();
    rt.handle().spawn(async move {
        // Armed by a poll, then dropped: disarmed.
        let mut long = time::sleep(Duration::from_secs(3600));
        let armed = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut long).poll(cx))).await;
        assert!(armed.is_pending());
        let while_armed = handle.runtime_info().timers;
        drop(long);
        let after_drop = handle.runtime_info().timers;
        // Finished: nothing left either.
        time::sleep(Duration::from_millis(5)).await;
        let after_ready = handle.runtime_info().timers;
        let _ = tx.send((while_armed, after_drop, after_ready));
    });
    let (while_armed, after_drop, after_ready) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(while_armed >= 1, "no timer armed by the poll");
    assert_eq!(
        after_drop,
        while_armed - 1,
        "the dropped sleep is still armed"
    );
    assert_eq!(after_ready, after_drop, "a finished sleep left a timer");
}

#[test]
fn a_reset_moves_the_deadline_earlier_and_later() {
    let (earlier, later) = run(async {
        let started = Instant::now();
        let mut sleep = time::sleep(Duration::from_secs(3600));
        // Armed far out, then moved in: ready at the new deadline.
        let _ = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut sleep).poll(cx))).await;
        sleep.reset(Instant::now() + Duration::from_millis(20));
        (&mut sleep).await;
        let earlier = started.elapsed();
        let started = Instant::now();
        sleep.reset(Instant::now() + Duration::from_millis(40));
        sleep.await;
        (earlier, started.elapsed())
    });
    assert!(
        earlier >= Duration::from_millis(20) && earlier < Duration::from_secs(5),
        "{earlier:?}"
    );
    assert!(
        later >= Duration::from_millis(40) && later < Duration::from_secs(5),
        "{later:?}"
    );
}

#[test]
fn an_interval_ticks_each_period_and_a_late_tick_delays_the_next() {
    let gaps = run(async {
        let period = Duration::from_millis(20);
        let mut interval = time::interval_at(Instant::now() + period, period);
        let mut last = Instant::now();
        let mut gaps = Vec::new();
        for round in 0..4 {
            interval.tick().await;
            gaps.push(last.elapsed());
            if round == 1 {
                // Late by three periods: the missed tick comes at once,
                // and the one after it a period later, not a burst.
                std::thread::sleep(period * 3);
            }
            last = Instant::now();
        }
        gaps
    });
    for round in [0, 1, 3] {
        let gap = gaps[round];
        assert!(
            gap >= Duration::from_millis(20),
            "tick {round} came early: {gaps:?}"
        );
        assert!(
            gap < Duration::from_secs(5),
            "tick {round} came late: {gaps:?}"
        );
    }
    assert!(
        gaps[2] < Duration::from_secs(5),
        "the missed tick waited: {gaps:?}"
    );
}

/// A sleep polled by another executor's task (here: a plain thread's loop
/// with a thread-unparking waker) is woken by the runtime's workers.
#[test]
fn a_sleep_polled_outside_the_runtime_is_woken_by_its_workers() {
    let rt = runtime();
    let handle: Handle = rt.handle().clone();
    let started = Instant::now();
    let mut sleep = handle.sleep_until(started + Duration::from_millis(30));
    let thread = std::thread::current();
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(thread)));
    let mut cx = Context::from_waker(&waker);
    let deadline = started + Duration::from_secs(20);
    while Pin::new(&mut sleep).poll(&mut cx).is_pending() {
        assert!(Instant::now() < deadline, "never woken");
        std::thread::park_timeout(Duration::from_secs(5));
    }
    let slept = started.elapsed();
    assert!(slept >= Duration::from_millis(30), "{slept:?}");
    // Woken, not found by the 5 s park timeout.
    assert!(
        slept < Duration::from_millis(4_500),
        "not woken by the wheel: {slept:?}"
    );
}

struct Unpark(std::thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }
}
