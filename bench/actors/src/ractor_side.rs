//! ractor 0.16: actors spawned with `Actor::spawn` (which returns once the
//! actor's `pre_start` has run), on a default multi-threaded tokio runtime;
//! request/reply with `ActorRef::call` (an `RpcReplyPort` in the message).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{mpsc, oneshot};
use tokio::task::coop::consume_budget;

use crate::*;

pub fn run(scenario: &str) -> Vec<Metric> {
    let rt = tokio_runtime();
    if scenario == "fairness" {
        fairness(&rt);
    }
    let scenario = scenario.to_string();
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

struct Body;

/// Any one message: the body returns (stops).
struct Wake;

impl Actor for Body {
    type Msg = Wake;
    type State = BodyGuard;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<Wake>, _: ()) -> Result<BodyGuard, ActorProcessingErr> {
        STARTED.fetch_add(1, Ordering::Release);
        Ok(BodyGuard)
    }
    async fn handle(
        &self,
        myself: ActorRef<Wake>,
        _: Wake,
        _: &mut BodyGuard,
    ) -> Result<(), ActorProcessingErr> {
        myself.stop(None);
        Ok(())
    }
}

async fn spawn_round(n: usize) -> Vec<Metric> {
    let mut refs: Vec<ActorRef<Wake>> = Vec::with_capacity(n);
    LIVE_BODIES.store(n, Ordering::Relaxed);
    STARTED.store(0, Ordering::Relaxed);
    let mem0 = allocated();
    let rss0 = rss_bytes();
    let t0 = Instant::now();
    for _ in 0..n {
        let (r, _join) = Actor::spawn(None, Body, ()).await.expect("spawn");
        refs.push(r);
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

struct Pong;

enum PongMsg {
    Ping(RpcReplyPort<()>),
}

impl Actor for Pong {
    type Msg = PongMsg;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<PongMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(
        &self,
        _: ActorRef<PongMsg>,
        msg: PongMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let PongMsg::Ping(reply) = msg;
        let _ = reply.send(());
        Ok(())
    }
}

async fn round_trip(pong: &ActorRef<PongMsg>) {
    let answered = matches!(
        pong.call(PongMsg::Ping, None).await,
        Ok(CallResult::Success(()))
    );
    assert!(answered, "pong answers");
}

async fn pingpong() -> Vec<Metric> {
    let (pong, _join) = Actor::spawn(None, Pong, ()).await.expect("spawn");
    let (tx, rx) = oneshot::channel();
    let p = pong.clone();
    tokio::spawn(async move {
        for _ in 0..PING_WARM {
            round_trip(&p).await;
        }
        let t0 = Instant::now();
        for _ in 0..PING_N {
            round_trip(&p).await;
        }
        let _ = tx.send(t0.elapsed());
    });
    let elapsed = rx.await.expect("the ping task reports");
    pong.stop(None);
    pingpong_metrics(elapsed)
}

// ---------------------------------------------------------------- ring

struct Relay;

enum Ring {
    Token(u32),
    Next(ActorRef<Ring>),
    Stop,
}

struct RelayState {
    next: Option<ActorRef<Ring>>,
    coordinator: mpsc::UnboundedSender<()>,
    _guard: BodyGuard,
}

impl Actor for Relay {
    type Msg = Ring;
    type State = RelayState;
    type Arguments = (Option<ActorRef<Ring>>, mpsc::UnboundedSender<()>);
    async fn pre_start(
        &self,
        _: ActorRef<Ring>,
        (next, coordinator): Self::Arguments,
    ) -> Result<RelayState, ActorProcessingErr> {
        Ok(RelayState {
            next,
            coordinator,
            _guard: BodyGuard,
        })
    }
    async fn handle(
        &self,
        myself: ActorRef<Ring>,
        msg: Ring,
        state: &mut RelayState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Ring::Token(0) => {
                let _ = state.coordinator.send(());
            }
            Ring::Token(k) => {
                if let Some(next) = &state.next {
                    let _ = next.send_message(Ring::Token(k - 1));
                }
            }
            Ring::Next(p) => state.next = Some(p),
            Ring::Stop => {
                if let Some(next) = &state.next {
                    let _ = next.send_message(Ring::Stop);
                }
                myself.stop(None);
            }
        }
        Ok(())
    }
}

async fn relay(
    next: Option<ActorRef<Ring>>,
    coordinator: &mpsc::UnboundedSender<()>,
) -> ActorRef<Ring> {
    let (r, _join) = Actor::spawn(None, Relay, (next, coordinator.clone()))
        .await
        .expect("spawn");
    r
}

async fn build_ring(size: u32, coordinator: &mpsc::UnboundedSender<()>) -> ActorRef<Ring> {
    LIVE_BODIES.fetch_add(size as usize, Ordering::Relaxed);
    let last = relay(None, coordinator).await;
    let mut next = last.clone();
    for _ in 1..size {
        next = relay(Some(next), coordinator).await;
        consume_budget().await;
    }
    let _ = last.send_message(Ring::Next(next.clone()));
    next
}

async fn ring() -> Vec<Metric> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let warm = build_ring(RING_R, &tx).await;
    let _ = warm.send_message(Ring::Token(RING_R));
    rx.recv().await;
    let _ = warm.send_message(Ring::Stop);
    drop(warm);
    poll_until(|| LIVE_BODIES.load(Ordering::Acquire) == 0).await;

    let t0 = Instant::now();
    let first = build_ring(RING_R, &tx).await;
    let t1 = Instant::now();
    let _ = first.send_message(Ring::Token(RING_R));
    rx.recv().await;
    let t2 = Instant::now();
    let _ = first.send_message(Ring::Token(RING_H));
    rx.recv().await;
    let t3 = Instant::now();
    let _ = first.send_message(Ring::Stop);
    ring_metrics(t0, t1, t2, t3)
}

// ---------------------------------------------------------------- fairness

struct Echo;

impl Actor for Echo {
    type Msg = Probe;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<Probe>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(
        &self,
        _: ActorRef<Probe>,
        p: Probe,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let _ = p.reply.send(p.sent);
        Ok(())
    }
}

struct Hog;

struct Spin;

impl Actor for Hog {
    type Msg = Spin;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<Spin>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(
        &self,
        _: ActorRef<Spin>,
        _: Spin,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        spin_forever()
    }
}

fn fairness(rt: &tokio::runtime::Runtime) -> ! {
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let ready = coordinator_thread(move |echo: ActorRef<Probe>| {
        fairness_coordinator(
            |p| echo.send_message(p).is_ok(),
            move || {
                let _ = go_tx.send(());
            },
        )
    });
    rt.block_on(async move {
        tokio::spawn(async move {
            let (echo, _join) = Actor::spawn(None, Echo, ()).await.expect("spawn");
            let _ = ready.send(echo);
            let _ = go_rx.await;
            for _ in 0..HOGS {
                let (hog, _join) = Actor::spawn(None, Hog, ()).await.expect("spawn");
                let _ = hog.send_message(Spin);
            }
        });
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    })
}
