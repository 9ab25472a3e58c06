//! kameo 0.22: actors spawned with `Spawn::spawn_with_mailbox` and an
//! unbounded mailbox (Ember's and BEAM's mailboxes are unbounded; kameo's
//! default is bounded at 64), on a default multi-threaded tokio runtime.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kameo::actor::{ActorRef, Spawn};
use kameo::error::Infallible;
use kameo::mailbox;
use kameo::message::{Context, Message};
use kameo::Actor;
use tokio::sync::{mpsc, oneshot};
use tokio::task::coop::consume_budget;

use crate::*;

pub fn run(scenario: &str) -> Vec<Metric> {
    let rt = tokio_runtime();
    if scenario == "fairness" {
        fairness(&rt);
    }
    let scenario = scenario.to_string();
    // The coordinator is a task on the workers, as Ember's is a process.
    rt.block_on(async move {
        tokio::spawn(async move {
            match scenario.as_str() {
                "spawn" => {
                    spawn_round(SPAWN_WARM).await;
                    spawn_round(SPAWN_N).await
                }
                "pingpong" => pingpong().await,
                _ => ring().await,
            }
        })
        .await
        .unwrap_or_default()
    })
}

// ---------------------------------------------------------------- spawn

struct Body(#[allow(dead_code)] BodyGuard);

impl Actor for Body {
    type Args = Self;
    type Error = Infallible;
    async fn on_start(state: Self, _: ActorRef<Self>) -> Result<Self, Infallible> {
        STARTED.fetch_add(1, Ordering::Release);
        Ok(state)
    }
}

/// Any one message: the body returns (stops).
struct Wake;

impl Message<Wake> for Body {
    type Reply = ();
    async fn handle(&mut self, _: Wake, ctx: &mut Context<Self, ()>) {
        ctx.stop();
    }
}

async fn spawn_round(n: usize) -> Vec<Metric> {
    let mut refs: Vec<ActorRef<Body>> = Vec::with_capacity(n);
    LIVE_BODIES.store(n, Ordering::Relaxed);
    STARTED.store(0, Ordering::Relaxed);
    let mem0 = allocated();
    let rss0 = rss_bytes();
    let t0 = Instant::now();
    for _ in 0..n {
        refs.push(Body::spawn_with_mailbox(
            Body(BodyGuard),
            mailbox::unbounded(),
        ));
        consume_budget().await;
    }
    let t1 = Instant::now();
    poll_until(|| STARTED.load(Ordering::Acquire) >= n).await;
    let mem1 = allocated();
    let rss1 = rss_bytes();
    let t2 = Instant::now();
    for r in refs.iter().rev() {
        r.kill();
        consume_budget().await;
    }
    let t_loop = Instant::now();
    poll_until(|| LIVE_BODIES.load(Ordering::Acquire) == 0).await;
    let t3 = Instant::now();
    drop(refs);
    spawn_metrics(n, t0, t1, t2, t_loop, t3, (mem0, mem1), (rss0, rss1))
}

// ---------------------------------------------------------------- pingpong

#[derive(Actor)]
struct Pong;

struct Ping;

impl Message<Ping> for Pong {
    type Reply = ();
    async fn handle(&mut self, _: Ping, _: &mut Context<Self, ()>) {}
}

async fn pingpong() -> Vec<Metric> {
    let pong = Pong::spawn_with_mailbox(Pong, mailbox::unbounded());
    let (tx, rx) = oneshot::channel();
    let p = pong.clone();
    tokio::spawn(async move {
        for _ in 0..PING_WARM {
            assert!(p.ask(Ping).await.is_ok(), "pong answers");
        }
        let t0 = Instant::now();
        for _ in 0..PING_N {
            assert!(p.ask(Ping).await.is_ok(), "pong answers");
        }
        let _ = tx.send(t0.elapsed());
    });
    let elapsed = rx.await.expect("the ping task reports");
    pong.kill();
    pingpong_metrics(elapsed)
}

// ---------------------------------------------------------------- ring

struct Relay {
    next: Option<ActorRef<Relay>>,
    coordinator: mpsc::UnboundedSender<()>,
    _guard: BodyGuard,
}

impl Actor for Relay {
    type Args = Self;
    type Error = Infallible;
    async fn on_start(state: Self, _: ActorRef<Self>) -> Result<Self, Infallible> {
        Ok(state)
    }
}

enum Ring {
    Token(u32),
    Next(ActorRef<Relay>),
    Stop,
}

impl Message<Ring> for Relay {
    type Reply = ();
    async fn handle(&mut self, msg: Ring, ctx: &mut Context<Self, ()>) {
        match msg {
            Ring::Token(0) => {
                let _ = self.coordinator.send(());
            }
            Ring::Token(k) => {
                if let Some(next) = &self.next {
                    let _ = next.tell(Ring::Token(k - 1)).try_send();
                }
            }
            Ring::Next(p) => self.next = Some(p),
            Ring::Stop => {
                if let Some(next) = &self.next {
                    let _ = next.tell(Ring::Stop).try_send();
                }
                ctx.stop();
            }
        }
    }
}

fn relay(
    next: Option<ActorRef<Relay>>,
    coordinator: &mpsc::UnboundedSender<()>,
) -> ActorRef<Relay> {
    let state = Relay {
        next,
        coordinator: coordinator.clone(),
        _guard: BodyGuard,
    };
    Relay::spawn_with_mailbox(state, mailbox::unbounded())
}

async fn build_ring(size: u32, coordinator: &mpsc::UnboundedSender<()>) -> ActorRef<Relay> {
    LIVE_BODIES.fetch_add(size as usize, Ordering::Relaxed);
    let last = relay(None, coordinator);
    let mut next = last.clone();
    for _ in 1..size {
        next = relay(Some(next), coordinator);
        consume_budget().await;
    }
    let _ = last.tell(Ring::Next(next.clone())).try_send();
    next
}

async fn ring() -> Vec<Metric> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let warm = build_ring(RING_R, &tx).await;
    let _ = warm.tell(Ring::Token(RING_R)).try_send();
    rx.recv().await;
    let _ = warm.tell(Ring::Stop).try_send();
    drop(warm);
    poll_until(|| LIVE_BODIES.load(Ordering::Acquire) == 0).await;

    let t0 = Instant::now();
    let first = build_ring(RING_R, &tx).await;
    let t1 = Instant::now();
    let _ = first.tell(Ring::Token(RING_R)).try_send();
    rx.recv().await;
    let t2 = Instant::now();
    let _ = first.tell(Ring::Token(RING_H)).try_send();
    rx.recv().await;
    let t3 = Instant::now();
    let _ = first.tell(Ring::Stop).try_send();
    ring_metrics(t0, t1, t2, t3)
}

// ---------------------------------------------------------------- fairness

#[derive(Actor)]
struct Echo;

impl Message<Probe> for Echo {
    type Reply = ();
    async fn handle(&mut self, p: Probe, _: &mut Context<Self, ()>) {
        let _ = p.reply.send(p.sent);
    }
}

#[derive(Actor)]
struct Hog;

struct Spin;

impl Message<Spin> for Hog {
    type Reply = ();
    async fn handle(&mut self, _: Spin, _: &mut Context<Self, ()>) {
        spin_forever()
    }
}

fn fairness(rt: &tokio::runtime::Runtime) -> ! {
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let ready = coordinator_thread(move |echo: ActorRef<Echo>| {
        fairness_coordinator(
            |p| echo.tell(p).try_send().is_ok(),
            move || {
                let _ = go_tx.send(());
            },
        )
    });
    rt.block_on(async move {
        tokio::spawn(async move {
            let echo = Echo::spawn_with_mailbox(Echo, mailbox::unbounded());
            let _ = ready.send(echo);
            let _ = go_rx.await;
            for _ in 0..HOGS {
                let hog = Hog::spawn_with_mailbox(Hog, mailbox::unbounded());
                let _ = hog.tell(Spin).try_send();
            }
        });
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    })
}
