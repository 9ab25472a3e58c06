//! actix 0.13: actors started with `Actor::start` on actix's `System` (its
//! default: one arbiter, one thread, which also runs the coordinator);
//! request/reply with `Addr::send(..).await`, one-way messages with
//! `do_send` (unbounded, as Ember's and BEAM's sends). actix has no
//! external kill: a `Die` message makes the actor call `ctx.stop()`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::{mpsc, oneshot};
use tokio::task::coop::consume_budget;

use crate::*;

pub fn run(scenario: &str) -> Vec<Metric> {
    let sys = actix::System::new();
    if scenario == "fairness" {
        fairness(sys);
    }
    let scenario = scenario.to_string();
    sys.block_on(async move {
        match scenario.as_str() {
            "spawn" => {
                spawn_round(SPAWN_WARM).await;
                spawn_round(SPAWN_N).await
            }
            "pingpong" => pingpong().await,
            _ => ring().await,
        }
    })
}

// ---------------------------------------------------------------- spawn

struct Body(#[allow(dead_code)] BodyGuard);

impl Actor for Body {
    type Context = Context<Self>;
    fn started(&mut self, _: &mut Context<Self>) {
        STARTED.fetch_add(1, Ordering::Release);
    }
}

/// Any one message (or the kill): the body returns (stops).
struct Die;

impl Message for Die {
    type Result = ();
}

impl Handler<Die> for Body {
    type Result = ();
    fn handle(&mut self, _: Die, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

async fn spawn_round(n: usize) -> Vec<Metric> {
    let mut refs: Vec<Addr<Body>> = Vec::with_capacity(n);
    LIVE_BODIES.store(n, Ordering::Relaxed);
    STARTED.store(0, Ordering::Relaxed);
    let mem0 = allocated();
    let rss0 = rss_bytes();
    let t0 = Instant::now();
    for _ in 0..n {
        refs.push(Body(BodyGuard).start());
        consume_budget().await;
    }
    let t1 = Instant::now();
    poll_until(|| STARTED.load(Ordering::Acquire) >= n).await;
    let mem1 = allocated();
    let rss1 = rss_bytes();
    let t2 = Instant::now();
    for r in refs.iter().rev() {
        r.do_send(Die);
        consume_budget().await;
    }
    let t_loop = Instant::now();
    poll_until(|| LIVE_BODIES.load(Ordering::Acquire) == 0).await;
    let t3 = Instant::now();
    drop(refs);
    spawn_metrics(n, t0, t1, t2, t_loop, t3, (mem0, mem1), (rss0, rss1))
}

// ---------------------------------------------------------------- pingpong

struct Pong;

impl Actor for Pong {
    type Context = Context<Self>;
}

struct Ping;

impl Message for Ping {
    type Result = ();
}

impl Handler<Ping> for Pong {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}

impl Handler<Die> for Pong {
    type Result = ();
    fn handle(&mut self, _: Die, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

async fn pingpong() -> Vec<Metric> {
    let pong = Pong.start();
    let (tx, rx) = oneshot::channel();
    let p = pong.clone();
    actix::spawn(async move {
        for _ in 0..PING_WARM {
            assert!(p.send(Ping).await.is_ok(), "pong answers");
        }
        let t0 = Instant::now();
        for _ in 0..PING_N {
            assert!(p.send(Ping).await.is_ok(), "pong answers");
        }
        let _ = tx.send(t0.elapsed());
    });
    let elapsed = rx.await.expect("the ping task reports");
    pong.do_send(Die);
    pingpong_metrics(elapsed)
}

// ---------------------------------------------------------------- ring

struct Relay {
    next: Option<Addr<Relay>>,
    coordinator: mpsc::UnboundedSender<()>,
    _guard: BodyGuard,
}

impl Actor for Relay {
    type Context = Context<Self>;
}

enum Ring {
    Token(u32),
    Next(Addr<Relay>),
    Stop,
}

impl Message for Ring {
    type Result = ();
}

impl Handler<Ring> for Relay {
    type Result = ();
    fn handle(&mut self, msg: Ring, ctx: &mut Context<Self>) {
        match msg {
            Ring::Token(0) => {
                let _ = self.coordinator.send(());
            }
            Ring::Token(k) => {
                if let Some(next) = &self.next {
                    next.do_send(Ring::Token(k - 1));
                }
            }
            Ring::Next(p) => self.next = Some(p),
            Ring::Stop => {
                if let Some(next) = &self.next {
                    next.do_send(Ring::Stop);
                }
                ctx.stop();
            }
        }
    }
}

fn relay(next: Option<Addr<Relay>>, coordinator: &mpsc::UnboundedSender<()>) -> Addr<Relay> {
    Relay {
        next,
        coordinator: coordinator.clone(),
        _guard: BodyGuard,
    }
    .start()
}

async fn build_ring(size: u32, coordinator: &mpsc::UnboundedSender<()>) -> Addr<Relay> {
    LIVE_BODIES.fetch_add(size as usize, Ordering::Relaxed);
    let last = relay(None, coordinator);
    let mut next = last.clone();
    for _ in 1..size {
        next = relay(Some(next), coordinator);
        consume_budget().await;
    }
    last.do_send(Ring::Next(next.clone()));
    next
}

async fn ring() -> Vec<Metric> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let warm = build_ring(RING_R, &tx).await;
    warm.do_send(Ring::Token(RING_R));
    rx.recv().await;
    warm.do_send(Ring::Stop);
    drop(warm);
    poll_until(|| LIVE_BODIES.load(Ordering::Acquire) == 0).await;

    let t0 = Instant::now();
    let first = build_ring(RING_R, &tx).await;
    let t1 = Instant::now();
    first.do_send(Ring::Token(RING_R));
    rx.recv().await;
    let t2 = Instant::now();
    first.do_send(Ring::Token(RING_H));
    rx.recv().await;
    let t3 = Instant::now();
    first.do_send(Ring::Stop);
    ring_metrics(t0, t1, t2, t3)
}

// ---------------------------------------------------------------- fairness

struct Echo;

impl Actor for Echo {
    type Context = Context<Self>;
}

impl Message for Probe {
    type Result = ();
}

impl Handler<Probe> for Echo {
    type Result = ();
    fn handle(&mut self, p: Probe, _: &mut Context<Self>) {
        let _ = p.reply.send(p.sent);
    }
}

struct Hog;

impl Actor for Hog {
    type Context = Context<Self>;
}

struct Spin;

impl Message for Spin {
    type Result = ();
}

impl Handler<Spin> for Hog {
    type Result = ();
    fn handle(&mut self, _: Spin, _: &mut Context<Self>) {
        spin_forever()
    }
}

fn fairness(sys: SystemRunner) -> ! {
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let ready = coordinator_thread(move |echo: Addr<Echo>| {
        fairness_coordinator(
            |p| {
                echo.do_send(p);
                true
            },
            move || {
                let _ = go_tx.send(());
            },
        )
    });
    sys.block_on(async move {
        let echo = Echo.start();
        let _ = ready.send(echo);
        let _ = go_rx.await;
        for _ in 0..HOGS {
            Hog.start().do_send(Spin);
        }
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    })
}
