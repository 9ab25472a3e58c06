//! The checkout/checkin resource pool: lifo reuse, overflow, blocking and
//! non-blocking checkouts with timeouts, borrower and worker deaths.
//!
//! Modelled on poolboy's test suite (`test/poolboy_tests.erl`: checkout
//! blocking/non-blocking, overflow dismissal, `worker_death`,
//! `owner_death`, `checkin_after_exception_in_transaction`). See
//! `docs/semantics.md`, "OTP behaviours / Resource pool".

mod support;

use std::time::Duration;

use ember_otp::resource_pool::{
    CheckoutError, PoolState, ResourcePool, ResourcePoolSpec, Strategy,
};
use ember_runtime::{
    exit, is_alive, receive, self_pid, send, spawn, spawn_link, trap_exit, ExitReason, Pid,
};
use support::eventually;

async fn pool(size: usize, max_overflow: usize) -> ResourcePool {
    ResourcePoolSpec::builder(|| async {
        Ok(spawn_link(async {
            loop {
                receive::<()>().await;
            }
        }))
    })
    .size(size)
    .max_overflow(max_overflow)
    .build()
    .unwrap()
    .start_link()
    .await
    .unwrap()
}

#[test]
fn a_checked_in_worker_is_the_next_one_lent_out() {
    support::runtime().block_on(async {
        trap_exit(true);
        let pool = pool(2, 0).await;
        let w1 = pool.checkout().await.unwrap();
        let w2 = pool.checkout().await.unwrap();
        assert_ne!(w1, w2);
        pool.checkin(w1);
        assert_eq!(pool.checkout().await, Ok(w1));
        let status = pool.status().await.unwrap();
        assert_eq!((status.available, status.checked_out), (0, 2));
        assert_eq!(status.state, PoolState::Full);
    });
}

#[test]
fn fifo_strategy_spreads_use_over_all_workers() {
    support::runtime().block_on(async {
        trap_exit(true);
        let pool =
            ResourcePoolSpec::builder(|| async { Ok(spawn_link(async { receive::<()>().await })) })
                .size(2)
                .max_overflow(0)
                .strategy(Strategy::Fifo)
                .build()
                .unwrap()
                .start_link()
                .await
                .unwrap();
        let w1 = pool.checkout().await.unwrap();
        pool.checkin(w1);
        let w2 = pool.checkout().await.unwrap();
        assert_ne!(w1, w2);
    });
}

/// poolboy: overflow workers start when all are out, `full` when even
/// those are used, and are dismissed on checkin.
#[test]
fn overflow_workers_start_when_all_are_out_and_are_dismissed_on_checkin() {
    support::runtime().block_on(async {
        trap_exit(true);
        let pool = pool(1, 1).await;
        let w1 = pool.checkout().await.unwrap();
        assert_eq!(pool.status().await.unwrap().state, PoolState::Overflow);
        let extra = pool.checkout().await.unwrap();
        let status = pool.status().await.unwrap();
        assert_eq!((status.state, status.overflow), (PoolState::Full, 1));
        assert_eq!(
            pool.checkout_timeout(false, Duration::from_secs(1)).await,
            Err(CheckoutError::Full)
        );
        pool.checkin(extra);
        eventually(|| async { (!is_alive(extra)).then_some(()) }).await;
        let status = pool.status().await.unwrap();
        assert_eq!((status.overflow, status.available), (0, 0));
        pool.checkin(w1);
        assert_eq!(pool.checkout().await, Ok(w1));
    });
}

/// A blocking checkout waits in line and gets the next worker checked in.
#[test]
fn a_blocking_checkout_waits_for_a_checkin() {
    support::runtime().block_on(async {
        trap_exit(true);
        let pool = pool(1, 0).await;
        let me = self_pid();
        let w1 = pool.checkout().await.unwrap();
        let waiter_pool = pool.clone();
        spawn(async move {
            let got = waiter_pool.checkout().await;
            send(me, got);
        });
        eventually(|| async { (pool.status().await.unwrap().waiting == 1).then_some(()) }).await;
        pool.checkin(w1);
        assert_eq!(support::recv::<Result<Pid, CheckoutError>>().await, Ok(w1));
    });
}

/// A checkout that timed out leaves no worker lent to nobody: the worker
/// checked in afterwards is free again.
#[test]
fn a_timed_out_checkout_never_keeps_a_worker() {
    support::runtime().block_on(async {
        trap_exit(true);
        let pool = pool(1, 0).await;
        let w1 = pool.checkout().await.unwrap();
        assert_eq!(
            pool.checkout_timeout(true, Duration::from_millis(10)).await,
            Err(CheckoutError::Timeout)
        );
        pool.checkin(w1);
        let status = eventually(|| async {
            let status = pool.status().await.unwrap();
            (status.available == 1).then_some(status)
        })
        .await;
        assert_eq!((status.checked_out, status.waiting), (0, 0));
        assert_eq!(pool.checkout().await, Ok(w1));
    });
}

/// poolboy's owner_death: a borrower that dies gives its worker back.
#[test]
fn a_dead_borrower_gives_its_worker_back() {
    support::runtime().block_on(async {
        trap_exit(true);
        let pool = pool(1, 0).await;
        let me = self_pid();
        let borrower_pool = pool.clone();
        spawn(async move {
            let worker = borrower_pool.checkout().await.unwrap();
            send(me, worker);
        });
        let lent = support::recv::<Pid>().await;
        assert_eq!(pool.checkout().await, Ok(lent));
    });
}

/// poolboy's worker_death: a dead worker is replaced, free or borrowed.
#[test]
fn a_dead_worker_is_replaced() {
    support::runtime().block_on(async {
        trap_exit(true);
        let pool = pool(2, 0).await;
        let w1 = pool.checkout().await.unwrap();
        exit(w1, ExitReason::Kill);
        let status = eventually(|| async {
            let status = pool.status().await.unwrap();
            (status.available == 2).then_some(status)
        })
        .await;
        assert_eq!(status.checked_out, 0);
        let a = pool.checkout().await.unwrap();
        let b = pool.checkout().await.unwrap();
        assert!(a != w1 && b != w1);
        exit(a, ExitReason::error("crash"));
        let c = pool.checkout().await.unwrap();
        assert!(c != a && c != b);
    });
}

/// poolboy's checkin_after_exception_in_transaction, with a failing job.
#[test]
fn a_transaction_checks_the_worker_back_in() {
    support::runtime().block_on(async {
        trap_exit(true);
        let pool = pool(1, 0).await;
        let result: Result<Result<(), &str>, _> = pool
            .transaction(Duration::from_secs(1), |_worker| async { Err("failed") })
            .await;
        assert_eq!(result, Ok(Err("failed")));
        let status = eventually(|| async {
            let status = pool.status().await.unwrap();
            (status.available == 1).then_some(status)
        })
        .await;
        assert_eq!(status.checked_out, 0);
    });
}

#[test]
fn stopping_the_pool_stops_its_workers() {
    support::runtime().block_on(async {
        trap_exit(true);
        let pool = pool(3, 0).await;
        let lent = pool.checkout().await.unwrap();
        pool.stop().await.unwrap();
        assert!(!is_alive(lent));
        assert_eq!(
            pool.checkout().await,
            Err(CheckoutError::Call(ember_otp::gen::CallError::NoProc))
        );
    });
}
