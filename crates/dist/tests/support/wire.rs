//! An Ember [`Node`] (no runtime behind it) beside a real `erl`, on a port
//! mapper of their own, for the tests of the wire: what the node hands its
//! [`Deliver`] hook (messages, connections going down) arrives on a channel
//! the test waits on, with a deadline.

use std::sync::Arc;
use std::time::Duration;

use ember_dist::{Deliver, Delivery, EmbeddedEpmd, Node, NodeConfig};
use ember_term::Atom;
use ember_testkit::{random_cookie, start_erl, unique, Erl, DEADLINE};
use tokio::sync::mpsc;

/// A port mapper, an Ember node and an `erl` node sharing a cookie.
pub(crate) struct EmberAndErl {
    /// Both nodes are registered here; dropped last.
    pub(crate) epmd: EmbeddedEpmd,
    pub(crate) ember: Node,
    pub(crate) erl: Erl,
    /// The Ember node's name, as erl writes it between quotes.
    pub(crate) e: String,
    pub(crate) cookie: String,
}

impl EmberAndErl {
    /// Starts an embedded port mapper on a free port, an Ember node
    /// configured by `configure`, and `erl` with `erl_flags`.
    pub(crate) async fn start(configure: impl FnOnce(&mut NodeConfig), erl_flags: &[&str]) -> Self {
        let (epmd, cookie) = epmd_and_cookie().await;
        let mut config = config(&unique("ember"), &cookie, epmd.port());
        configure(&mut config);
        let ember = Node::start_with(config).await.unwrap();
        let erl = start_erl(&unique("erl"), &cookie, epmd.port(), erl_flags);
        let e = ember.name().as_str().to_string();
        EmberAndErl {
            epmd,
            ember,
            erl,
            e,
            cookie,
        }
    }

    /// [`EmberAndErl::start`] with a [`Forward`] hook on the Ember node,
    /// and the test's end of it.
    pub(crate) async fn watched(
        configure: impl FnOnce(&mut NodeConfig),
        erl_flags: &[&str],
    ) -> (Self, Deliveries) {
        let (hook, events) = forward();
        let both = EmberAndErl::start(
            |c| {
                configure(c);
                c.deliver = Arc::new(hook);
            },
            erl_flags,
        )
        .await;
        (both, events)
    }
}

/// An embedded port mapper on a free port, and a random cookie.
pub(crate) async fn epmd_and_cookie() -> (EmbeddedEpmd, String) {
    let epmd = EmbeddedEpmd::start(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    (epmd, random_cookie())
}

/// The configuration of `alive@localhost` with `cookie`, registering with
/// the port mapper on `epmd_port`.
pub(crate) fn config(alive: &str, cookie: &str, epmd_port: u16) -> NodeConfig {
    let mut c = NodeConfig::new(&format!("{alive}@localhost"), cookie);
    c.epmd_port = epmd_port;
    c
}

/// What a [`Forward`] hook passes on.
#[derive(Debug)]
pub(crate) enum Event {
    /// A message for a local process.
    Delivered(Delivery),
    /// A connection to this node came up.
    Up(Atom),
    /// The connection to this node went down.
    Down(Atom),
}

/// A [`Deliver`] hook that passes every delivery and connection loss on to
/// the test.
pub(crate) struct Forward(mpsc::UnboundedSender<Event>);

/// What a [`Forward`] hook passed on.
pub(crate) struct Deliveries(mpsc::UnboundedReceiver<Event>);

impl Deliver for Forward {
    fn deliver(&self, _node: &Atom, delivery: Delivery) {
        let _ = self.0.send(Event::Delivered(delivery));
    }

    fn connection_up(&self, node: &Atom, _connection: u64, _flags: u64) {
        let _ = self.0.send(Event::Up(node.clone()));
    }

    fn connection_down(&self, node: &Atom, _connection: u64) {
        let _ = self.0.send(Event::Down(node.clone()));
    }
}

/// A hook and the test's end of it.
pub(crate) fn forward() -> (Forward, Deliveries) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Forward(tx), Deliveries(rx))
}

impl Deliveries {
    /// The first event (skipping others) for which `pick` gives a value,
    /// within [`DEADLINE`]; fails naming `what` otherwise.
    pub(crate) async fn first<T>(&mut self, what: &str, pick: impl FnMut(Event) -> Option<T>) -> T {
        self.first_within(DEADLINE, what, pick).await
    }

    /// Waits for the connection to `node` to come up.
    pub(crate) async fn up(&mut self, node: &str) {
        self.first(&format!("connection from {node}"), |e| {
            matches!(e, Event::Up(n) if n.as_str() == node).then_some(())
        })
        .await
    }

    /// Waits for the connection to `node` to go down.
    pub(crate) async fn down(&mut self, node: &str) {
        self.first(&format!("loss of the connection to {node}"), |e| {
            matches!(e, Event::Down(n) if n.as_str() == node).then_some(())
        })
        .await
    }

    /// The next `n` messages for local processes, in arrival order.
    pub(crate) async fn messages(&mut self, n: usize) -> Vec<Delivery> {
        let mut got = Vec::new();
        while got.len() < n {
            let what = format!("message {} of {n}", got.len() + 1);
            got.push(
                self.first(&what, |e| match e {
                    Event::Delivered(d) => Some(d),
                    _ => None,
                })
                .await,
            );
        }
        got
    }

    /// [`Deliveries::first`] within `limit`.
    pub(crate) async fn first_within<T>(
        &mut self,
        limit: Duration,
        what: &str,
        mut pick: impl FnMut(Event) -> Option<T>,
    ) -> T {
        let search = async {
            while let Some(d) = self.0.recv().await {
                if let Some(found) = pick(d) {
                    return Some(found);
                }
            }
            None
        };
        match tokio::time::timeout(limit, search).await {
            Ok(Some(found)) => found,
            Ok(None) => panic!("the node stopped before {what}"),
            Err(_) => panic!("no {what} within {limit:?}"),
        }
    }
}
