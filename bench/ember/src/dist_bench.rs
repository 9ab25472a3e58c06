//! Ember's side of `bench/run dist` (driven by `bench/dist/run`): one
//! distribution node in one OS process, playing one role against a peer
//! that is Ember (this binary) or Erlang (`bench/dist/ember_dist_bench.erl`,
//! which plays the same roles with the same messages).
//!
//! ```text
//! ember-dist-bench sink  NAME COOKIE             # counts messages to `sink`
//! ember-dist-bench echo  NAME COOKIE             # `echo`: {From, T} -> From ! T
//! ember-dist-bench send  NAME COOKIE PEER N KIND # throughput, KIND small|kib
//! ember-dist-bench ping  NAME COOKIE PEER N      # echo round trips
//! ember-dist-bench idle  NAME COOKIE [PEER]      # connect (or wait), stay idle
//! ember-dist-bench callee NAME COOKIE            # gen_server `callee`: {echo, I} -> I
//! ember-dist-bench call  NAME COOKIE PEER N      # gen_server call round trips
//! ember-dist-bench pecho NAME COOKIE             # `echo` as an Ember process
//! ember-dist-bench pping NAME COOKIE PEER N      # echo round trips from one
//! ```
//!
//! Servers print `READY` once registered; clients print `RESULT key value`
//! lines. The wire protocol, identical on both sides:
//!
//! * throughput: the sender sends `{start, {bench_ctl, SenderNode}, N}` to
//!   `{sink, Peer}`, then N messages `{msg, Body}` (Body `12345` for small,
//!   a 1 KiB binary for kib), all `REG_SEND`; the sink counts N messages
//!   after `start` and sends `{done, N}` to `{bench_ctl, SenderNode}`. The
//!   clock runs from before the `start` to the arrival of `done`, i.e.
//!   until the receiver has counted every message.
//! * latency: the client sends `{Self, I}` to `{echo, Peer}` and waits for
//!   `I` to come back to its pid, one at a time.
//! * gen_server calls: the client makes `gen_server:call({callee, Peer},
//!   {echo, I})` one at a time; the server, a gen_server registered as
//!   `callee`, answers `I`.
//!
//! The roles above run on ember-dist's API alone (a `Deliver` hook, no
//! processes), on a current-thread tokio runtime. `callee` and `call` are
//! Ember processes: an Ember runtime with one scheduler is the node
//! (`Node::start_in_runtime`), the server an `ember_otp` GenServer, the
//! client an Ember process calling it with `call_term`, as a user's code
//! would. `pecho` and `pping` play `echo` and `ping` (same messages) the
//! same way: Ember processes on such a node, sending with `send` and
//! `dist::send_named`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ember_dist::{Deliver, Delivery, Node, NodeConfig};
use ember_term::{Atom, Pid, Term};
use tokio::sync::mpsc;

/// The node's [`Deliver`] hook: `sink` counting, `echo` answering,
/// everything else to the main loop.
struct Hook {
    node: OnceLock<Arc<Node>>,
    /// Messages for `bench_ctl` or for this node's pid, to the main loop.
    events: mpsc::UnboundedSender<Term>,
    /// Messages still to count for the running sink round, and whom to
    /// tell (and how many) when they are all in.
    remaining: AtomicU64,
    reply_to: Mutex<Option<(Atom, i64)>>,
}

impl Hook {
    fn sink(&self, message: Term) {
        match message.as_tuple() {
            Some([tag, ..])
                if tag.is_atom("msg") && self.remaining.fetch_sub(1, Ordering::Relaxed) == 1 =>
            {
                let to = self.reply_to.lock().unwrap().take();
                if let Some((to, n)) = to {
                    let done = Term::tuple([Term::atom("done"), Term::from(n)]);
                    self.answer_named(to, done);
                }
            }
            Some([tag, ctl, n]) if tag.is_atom("start") => {
                let (Some([_, node]), Some(n)) = (ctl.as_tuple(), n.as_int()) else {
                    return;
                };
                let Some(node) = node.as_atom() else { return };
                *self.reply_to.lock().unwrap() = Some((Atom::new(node), n));
                self.remaining.store(n as u64, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// `{bench_ctl, node} ! message`, without waiting when there is room.
    fn answer_named(&self, node: Atom, message: Term) {
        let Some(me) = self.node.get().cloned() else {
            return;
        };
        match me.try_send_named(node.as_str(), "bench_ctl", message.clone()) {
            Ok(()) => {}
            Err(_) => {
                tokio::spawn(async move {
                    let _ = me.send_named(node.as_str(), "bench_ctl", message).await;
                });
            }
        }
    }

    fn echo(&self, message: Term) {
        let Some([from @ Term::Pid(_), t]) = message.as_tuple() else {
            return;
        };
        let Some(me) = self.node.get().cloned() else {
            return;
        };
        if me.try_send(from, t.clone()).is_err() {
            let (from, t) = (from.clone(), t.clone());
            tokio::spawn(async move {
                let _ = me.send(&from, t).await;
            });
        }
    }
}

impl Deliver for Hook {
    fn deliver(&self, _node: &Atom, delivery: Delivery) {
        match delivery {
            Delivery::ToName { to, message, .. } => match to.as_str() {
                "sink" => self.sink(message),
                "echo" => self.echo(message),
                _ => {
                    let _ = self.events.send(message);
                }
            },
            Delivery::ToPid { message, .. } => {
                let _ = self.events.send(message);
            }
            _ => {}
        }
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: ember-dist-bench sink|echo NAME COOKIE | send NAME COOKIE PEER N small|kib \
         | ping NAME COOKIE PEER N | idle NAME COOKIE [PEER] | callee NAME COOKIE \
         | call NAME COOKIE PEER N | pecho NAME COOKIE | pping NAME COOKIE PEER N"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        usage();
    }
    if matches!(args[0].as_str(), "callee" | "call" | "pecho" | "pping") {
        return calls::run(args);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run(args));
}

async fn run(args: Vec<String>) {
    let (events, mut rx) = mpsc::unbounded_channel();
    let hook = Arc::new(Hook {
        node: OnceLock::new(),
        events,
        remaining: AtomicU64::new(0),
        reply_to: Mutex::new(None),
    });
    let mut config = NodeConfig::new(&args[1], &args[2]);
    config.deliver = hook.clone();
    let node = Arc::new(Node::start_with(config).await.unwrap_or_else(|e| {
        eprintln!("ember-dist-bench: cannot start {}: {e}", args[1]);
        std::process::exit(1)
    }));
    let _ = hook.node.set(node.clone());
    let n_arg = |i: usize| -> u64 {
        args.get(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| usage())
    };
    match args[0].as_str() {
        "sink" | "echo" => {
            println!("READY");
            // Serve until killed.
            while rx.recv().await.is_some() {}
        }
        "idle" => {
            if let Some(peer) = args.get(3) {
                connect(&node, peer).await;
            }
            println!("READY");
            while rx.recv().await.is_some() {}
        }
        "send" => {
            let peer = args.get(3).unwrap_or_else(|| usage()).clone();
            let n = n_arg(4);
            let body = match args.get(5).map(String::as_str) {
                Some("small") => Term::from(12345),
                Some("kib") => Term::binary(vec![0x2a; 1024]),
                _ => usage(),
            };
            connect(&node, &peer).await;
            let message = Term::tuple([Term::atom("msg"), body]);
            // A warm-up round, then the measured one.
            throughput(&node, &mut rx, &peer, n / 10, &message).await;
            let secs = throughput(&node, &mut rx, &peer, n, &message).await;
            println!("RESULT msgs_per_s {:.0}", n as f64 / secs);
        }
        "ping" => {
            let peer = args.get(3).unwrap_or_else(|| usage()).clone();
            let n = n_arg(4);
            connect(&node, &peer).await;
            let me = Term::Pid(Pid {
                node: node.name().clone(),
                id: 0,
                serial: 0,
                creation: node.creation(),
            });
            round_trips(&node, &mut rx, &peer, &me, n / 10).await;
            let mut rtts = round_trips(&node, &mut rx, &peer, &me, n).await;
            print_percentiles(&mut rtts);
        }
        _ => usage(),
    }
}

/// Prints the p50 and p99 of round-trip times, as `bench/dist/run` reads them.
fn print_percentiles(rtts: &mut [Duration]) {
    rtts.sort_unstable();
    let at = |q: f64| rtts[((rtts.len() as f64 * q) as usize).min(rtts.len() - 1)];
    println!("RESULT p50_us {:.1}", at(0.50).as_secs_f64() * 1e6);
    println!("RESULT p99_us {:.1}", at(0.99).as_secs_f64() * 1e6);
}

async fn connect(node: &Node, peer: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !node.ping(peer).await {
        if Instant::now() > deadline {
            eprintln!("ember-dist-bench: cannot reach {peer}");
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One round of `n` messages to `{sink, peer}`; the seconds until the
/// sink said it counted them all.
async fn throughput(
    node: &Node,
    rx: &mut mpsc::UnboundedReceiver<Term>,
    peer: &str,
    n: u64,
    message: &Term,
) -> f64 {
    let start = Term::tuple([
        Term::atom("start"),
        Term::tuple([Term::atom("bench_ctl"), Term::Atom(node.name().clone())]),
        Term::from(n as i64),
    ]);
    let t0 = Instant::now();
    node.send_named(peer, "sink", start).await.expect("send");
    for _ in 0..n {
        node.send_named(peer, "sink", message.clone())
            .await
            .expect("send");
    }
    loop {
        match tokio::time::timeout(Duration::from_secs(120), rx.recv()).await {
            Ok(Some(m)) if m.as_tuple().is_some_and(|t| t[0].is_atom("done")) => {
                return t0.elapsed().as_secs_f64();
            }
            Ok(Some(_)) => {}
            _ => {
                eprintln!("ember-dist-bench: the sink never said done");
                std::process::exit(1);
            }
        }
    }
}

/// `n` sequential echo round trips; their durations.
async fn round_trips(
    node: &Node,
    rx: &mut mpsc::UnboundedReceiver<Term>,
    peer: &str,
    me: &Term,
    n: u64,
) -> Vec<Duration> {
    let mut rtts = Vec::with_capacity(n as usize);
    for i in 0..n {
        let t0 = Instant::now();
        let m = Term::tuple([me.clone(), Term::from(i as i64)]);
        node.send_named(peer, "echo", m).await.expect("send");
        loop {
            match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
                Ok(Some(t)) if t.as_int() == Some(i as i64) => break,
                Ok(Some(_)) => {}
                _ => {
                    eprintln!("ember-dist-bench: echo {i} never came back");
                    std::process::exit(1);
                }
            }
        }
        rtts.push(t0.elapsed());
    }
    rtts
}

/// The gen_server-call roles, on an Ember runtime.
mod calls {
    use std::time::{Duration, Instant};

    use ember_dist::{Node, NodeConfig};
    use ember_otp::gen::{ReplyTo, StartOptions};
    use ember_otp::gen_server::{self, call_term, CallReturn, GenServer, Init, TermServer};
    use ember_runtime::{dist, Handle, Runtime};
    use ember_term::Term;

    /// `callee`: `{echo, I}` → `I`.
    struct Callee;

    impl GenServer for Callee {
        type Args = ();
        type Call = Term;
        type Reply = Term;
        type Cast = ();
        type Continue = ();

        async fn init(_: ()) -> Init<Self> {
            Init::Ok(Callee)
        }

        async fn handle_call(&mut self, i: Term, _from: &ReplyTo<Term>) -> CallReturn<Self> {
            CallReturn::Reply(i)
        }

        fn call_from_term(request: Term) -> Result<Term, Term> {
            match request.as_tuple() {
                Some([tag, i]) if tag.is_atom("echo") => Ok(i.clone()),
                _ => Err(Term::tuple([Term::atom("bad_request"), request])),
            }
        }

        fn reply_to_term(i: Term) -> Term {
            i
        }
    }

    pub(super) fn run(args: Vec<String>) {
        let rt = Runtime::builder()
            .schedulers(1)
            .build()
            .expect("an Ember runtime");
        rt.block_on(role(args));
    }

    async fn role(args: Vec<String>) {
        let config = NodeConfig::new(&args[1], &args[2]);
        let node = Node::start_in_runtime(config, &Handle::current())
            .await
            .unwrap_or_else(|e| {
                eprintln!("ember-dist-bench: cannot start {}: {e}", args[1]);
                std::process::exit(1)
            });
        match args[0].as_str() {
            "pecho" => {
                ember_runtime::register("echo", ember_runtime::self_pid()).expect("register echo");
                println!("READY");
                loop {
                    let m: Term = ember_runtime::receive().await;
                    if let Some([from, t]) = m.as_tuple() {
                        if let Some(from) = dist::pid_from_term(from) {
                            ember_runtime::send(from, t.clone());
                        }
                    }
                }
            }
            "pping" => {
                let peer = args.get(3).unwrap_or_else(|| super::usage()).clone();
                let n: u64 = args
                    .get(4)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| super::usage());
                super::connect(&node, &peer).await;
                pings(&peer, n / 10).await;
                let mut rtts = pings(&peer, n).await;
                super::print_percentiles(&mut rtts);
                node.stop();
                std::process::exit(0);
            }
            "callee" => {
                gen_server::start_with::<Callee>((), StartOptions::new().name("callee"))
                    .await
                    .expect("start callee");
                println!("READY");
                // Serve until killed.
                ember_runtime::receive::<()>().await;
            }
            _ => {
                let peer = args.get(3).unwrap_or_else(|| super::usage()).clone();
                let n: u64 = args
                    .get(4)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| super::usage());
                super::connect(&node, &peer).await;
                let callee = TermServer::Name {
                    name: "callee".into(),
                    node: peer,
                };
                calls(&callee, n / 10).await;
                let mut rtts = calls(&callee, n).await;
                super::print_percentiles(&mut rtts);
                node.stop();
                std::process::exit(0);
            }
        }
    }

    /// `n` sequential echo round trips from this process; their durations.
    async fn pings(peer: &str, n: u64) -> Vec<Duration> {
        let me = dist::pid_to_term(ember_runtime::self_pid());
        let mut rtts = Vec::with_capacity(n as usize);
        for i in 0..n {
            let t0 = Instant::now();
            dist::send_named(
                "echo",
                peer,
                Term::tuple([me.clone(), Term::from(i as i64)]),
            );
            loop {
                let got = ember_runtime::receive::<Term>()
                    .timeout(Duration::from_secs(30))
                    .await;
                match got {
                    Some(t) if t.as_int() == Some(i as i64) => break,
                    Some(_) => {}
                    None => {
                        eprintln!("ember-dist-bench: echo {i} never came back");
                        std::process::exit(1);
                    }
                }
            }
            rtts.push(t0.elapsed());
        }
        rtts
    }

    /// `n` sequential calls; their durations.
    async fn calls(callee: &TermServer, n: u64) -> Vec<Duration> {
        let mut rtts = Vec::with_capacity(n as usize);
        for i in 0..n {
            let t0 = Instant::now();
            let request = Term::tuple([Term::atom("echo"), Term::from(i)]);
            match call_term(callee, request, Duration::from_secs(30)).await {
                Ok(reply) if reply.as_int() == Some(i as i64) => {}
                other => {
                    eprintln!("ember-dist-bench: call {i} answered {other:?}");
                    std::process::exit(1);
                }
            }
            rtts.push(t0.elapsed());
        }
        rtts
    }
}
