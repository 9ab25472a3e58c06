//! Timers: `send_after`, `cancel_timer`, `read_timer`; never early, deadline
//! order, timers to dead processes (docs/semantics.md §12).
//!
//! Ports of erts' `emulator/test/timer_bif_SUITE.erl` (`send_after_1/2/3`,
//! `start_timer_1`, `cancel_timer_1`, `read_timer`, `send_after_big`,
//! `cleanup`), with times scaled down.

mod support;

use std::time::{Duration, Instant};

use ember_runtime::{
    cancel_timer, exit, read_timer, receive, self_pid, send, send_after, spawn, spawn_monitor,
    try_receive, ExitReason,
};

use support::{down_of, recv, runtime, wait_forever, Never};

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Tick(u32);

// §12.1, §12.2: send_after delivers, and never before the delay has passed.
// Port of timer_bif_SUITE:send_after_1.
#[test]
fn send_after_delivers_no_earlier_than_the_delay() {
    let rt = runtime();
    rt.block_on(async {
        for (n, ms) in [0u64, 1, 2, 5, 10, 30].into_iter().enumerate() {
            let delay = Duration::from_millis(ms);
            let armed = Instant::now();
            let timer = send_after(self_pid(), Tick(n as u32), delay);
            assert_eq!(recv::<Tick>().await, Tick(n as u32));
            let took = armed.elapsed();
            assert!(took >= delay, "{took:?} < {delay:?}");
            assert!(took < delay + Duration::from_secs(5), "{took:?}");
            assert_eq!(read_timer(timer), None, "a fired timer is gone");
        }
    });
}

// §12.2: timers with different deadlines deliver in deadline order.
// Port of timer_bif_SUITE:send_after_2 and send_after_3.
#[test]
fn send_after_messages_arrive_in_deadline_order() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        for (ms, n) in [
            (80, 99),
            (0, 0),
            (20, 2),
            (10, 1),
            (50, 5),
            (30, 3),
            (40, 4),
        ] {
            send_after(me, Tick(n), Duration::from_millis(ms));
        }
        let mut got = Vec::new();
        for _ in 0..7 {
            got.push(recv::<Tick>().await.0);
        }
        assert_eq!(got, vec![0, 1, 2, 3, 4, 5, 99]);
        for (ms, n) in [(30, 1), (31, 2), (32, 3), (33, 99)] {
            send_after(me, Tick(n), Duration::from_millis(ms));
        }
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(recv::<Tick>().await.0);
        }
        assert_eq!(got, vec![1, 2, 3, 99]);
    });
}

// §12.3: a cancelled timer reports the time it had left and never delivers;
// cancelling or reading it again gives None.
// Port of timer_bif_SUITE:start_timer_1 (its send_after half).
#[test]
fn a_cancelled_timer_reports_time_left_and_never_delivers() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let timer = send_after(me, Tick(1), Duration::from_millis(1000));
        let left = cancel_timer(timer).expect("pending");
        assert!(left > Duration::from_millis(900), "{left:?}");
        assert_eq!(cancel_timer(timer), None);
        assert_eq!(read_timer(timer), None);
        // A later timer fires after the cancelled one's deadline would have:
        // timers fire in deadline order, so the cancelled one is truly gone.
        let short = send_after(me, Tick(2), Duration::from_millis(20));
        assert!(cancel_timer(short).is_some());
        send_after(me, Tick(3), Duration::from_millis(40));
        assert_eq!(recv::<Tick>().await, Tick(3));
        assert_eq!(try_receive::<Tick>(), None);
    });
}

// §12.3: cancel_timer and read_timer never report more time left than the
// timer was armed for (Erlang: `Left =< Timeout`).
// Port of timer_bif_SUITE:start_timer_1's `(Left2 > 900) and (Left2 =< 1000)`.
#[test]
fn time_left_is_never_more_than_the_timeout() {
    let rt = runtime();
    rt.block_on(async {
        let timeout = Duration::from_millis(1000);
        for _ in 0..100 {
            let timer = send_after(self_pid(), Tick(0), timeout);
            let read = read_timer(timer).expect("pending");
            let left = cancel_timer(timer).expect("pending");
            assert!(read <= timeout, "read_timer said {read:?} of {timeout:?}");
            assert!(left <= timeout, "cancel_timer said {left:?} of {timeout:?}");
            assert!(left <= read);
        }
    });
}

// §12.3: time left counts down.
// Port of timer_bif_SUITE:read_timer and send_after_big.
#[test]
fn read_timer_counts_down_for_a_big_timeout() {
    let rt = runtime();
    rt.block_on(async {
        let big = Duration::from_millis(1 << 31);
        let armed = Instant::now();
        let timer = send_after(self_pid(), Tick(0), big);
        let _ = receive::<Never>().timeout(Duration::from_millis(50)).await;
        let left = read_timer(timer).expect("pending");
        let left2 = cancel_timer(timer).expect("pending");
        let waited = armed.elapsed();
        assert!(left2 <= left);
        assert_eq!(read_timer(timer), None);
        let passed = big - left;
        assert!(passed >= Duration::from_millis(45), "{passed:?}");
        assert!(
            passed <= waited + Duration::from_millis(2),
            "{passed:?} > {waited:?}"
        );
    });
}

// §12.1, §3.2: a timer to a dead process is dropped when it fires.
#[test]
fn send_after_to_a_dead_process_delivers_nothing() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let (dead, watch) = spawn_monitor(async {});
        down_of(watch).await;
        send_after(dead, Tick(1), Duration::from_millis(5));
        send_after(me, Tick(2), Duration::from_millis(20));
        assert_eq!(recv::<Tick>().await, Tick(2));
        assert_eq!(try_receive::<Tick>(), None);
    });
}

// §12.4: a timer aimed at a dead process is cancelled at once (OTP: "the timer
// is automatically cancelled if the process referred to by the pid is not
// alive"). Port of timer_bif_SUITE:cleanup ("timer on dead process").
#[test]
fn a_timer_to_a_dead_process_is_cancelled_at_once() {
    let rt = runtime();
    rt.block_on(async {
        let (dead, watch) = spawn_monitor(async {});
        down_of(watch).await;
        let timer = send_after(dead, Tick(1), Duration::from_secs(10));
        assert_eq!(read_timer(timer), None);
        assert_eq!(cancel_timer(timer), None);
    });
}

// §12.4: a timer is cancelled when its target exits (OTP: "... or if the
// process exits"). Port of timer_bif_SUITE:cleanup ("process dies before
// timeout").
#[test]
fn a_timer_is_cancelled_when_its_target_exits() {
    let rt = runtime();
    rt.block_on(async {
        let target = spawn(wait_forever());
        let timer = send_after(target, Tick(1), Duration::from_secs(10));
        assert!(read_timer(timer).is_some());
        exit(target, ExitReason::Kill);
        assert_eq!(read_timer(timer), None);
    });
}

// §12.3: any process may cancel any timer (the reference is all it takes).
// Port of timer_bif_SUITE:cancel_timer_1 for the "no such timer" answer.
#[test]
fn any_process_can_read_or_cancel_a_timer_and_a_fired_one_answers_none() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let timer = send_after(me, Tick(1), Duration::from_secs(60));
        spawn(async move {
            let left = cancel_timer(timer);
            send(me, left.is_some());
        });
        assert!(recv::<bool>().await);
        assert_eq!(read_timer(timer), None);
        let fired = send_after(me, Tick(2), Duration::ZERO);
        assert_eq!(recv::<Tick>().await, Tick(2));
        assert_eq!(cancel_timer(fired), None);
    });
}

// §12.1: a timer outlives the process that armed it.
#[test]
fn a_timer_outlives_the_process_that_armed_it() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let (_, watch) = spawn_monitor(async move {
            send_after(me, Tick(7), Duration::from_millis(20));
        });
        down_of(watch).await;
        assert_eq!(recv::<Tick>().await, Tick(7));
    });
}
