//! Two Ember nodes in one process, on an embedded port mapper of their own.
//! Connections coming up and going down, and messages, are waited for as
//! the nodes' `Deliver` hooks report them, with a deadline.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ember_dist::{epmd, flags, Delivery, DistError, Node, NodeConfig};
use ember_term::{Pid, Term};
use ember_testkit::free_port;
use md5::{Digest, Md5};
use support::wire::{forward, Deliveries};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(name: &str, cookie: &str, epmd_port: u16) -> NodeConfig {
    let mut c = NodeConfig::new(&format!("{name}_{}@localhost", std::process::id()), cookie);
    c.epmd_port = epmd_port;
    c.listen = "127.0.0.1:0".parse().unwrap();
    c
}

/// A node started with `config` and what its `Deliver` hook reports.
async fn watched(mut config: NodeConfig) -> (Node, Deliveries) {
    let (hook, events) = forward();
    config.deliver = Arc::new(hook);
    (Node::start_with(config).await.unwrap(), events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ember_nodes_ping_each_other_and_list_each_other() {
    let port = free_port();
    let (a, mut a_events) = watched(config("a", "cookie1", port)).await;
    let (b, mut b_events) = watched(config("b", "cookie1", port)).await;
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut names: Vec<String> = epmd::names(addr)
        .await
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");

    assert!(a.ping(b.name().as_str()).await);
    assert!(b.ping(a.name().as_str()).await);
    assert_eq!(a.nodes(), vec![b.name().clone()]);
    assert!(!a.ping("nosuch@localhost").await);
    assert!(matches!(
        a.connect("no-host-part").await,
        Err(DistError::BadNodeName(_))
    ));
    assert!(matches!(
        a.connect("nosuch@localhost").await,
        Err(DistError::NotRegistered(_))
    ));
    assert_eq!(b.nodes(), vec![a.name().clone()]);

    // An explicit disconnect; the next ping connects again.
    assert!(a.disconnect(b.name().as_str()));
    assert!(!a.disconnect(b.name().as_str()));
    b_events.down(a.name().as_str()).await;
    assert!(!b.nodes().contains(a.name()));
    assert!(a.ping(b.name().as_str()).await);
    assert_eq!(a.nodes(), vec![b.name().clone()]);

    // b goes away: a sees the connection drop.
    let b_name = b.name().clone();
    b.stop();
    // a's connection to b went down twice: by the disconnect, and now.
    a_events.down(b_name.as_str()).await;
    a_events.down(b_name.as_str()).await;
    assert!(!a.nodes().contains(&b_name));
    assert!(!a.ping(b_name.as_str()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cookie_is_refused_and_both_nodes_keep_working() {
    let port = free_port();
    let a = Node::start_with(config("wa", "right", port)).await.unwrap();
    let b = Node::start_with(config("wb", "wrong", port)).await.unwrap();
    let c = Node::start_with(config("wc", "right", port)).await.unwrap();

    let err = a.connect(b.name().as_str()).await.unwrap_err();
    assert!(matches!(err, DistError::WrongCookie(_)), "{err}");
    assert!(!b.ping(a.name().as_str()).await);
    assert!(a.nodes().is_empty() && b.nodes().is_empty());

    assert!(a.ping(c.name().as_str()).await);
    assert!(c.ping(a.name().as_str()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_connects_end_with_one_connection() {
    let port = free_port();
    let a = Node::start_with(config("sa", "c", port)).await.unwrap();
    let b = Node::start_with(config("sb", "c", port)).await.unwrap();
    let (ra, rb) = tokio::join!(a.ping(b.name().as_str()), b.ping(a.name().as_str()));
    assert!(ra && rb);
    assert_eq!(a.nodes(), vec![b.name().clone()]);
    assert_eq!(b.nodes(), vec![a.name().clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_huge_lengths_in_the_handshake_close_the_connection() {
    // A panic in a connection task would be swallowed by tokio: count them.
    static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        default_hook(info);
    }));
    let port = free_port();
    let mut ga = config("ga", "c", port);
    // A partial length prefix is waited for only this long.
    ga.setup_time = Duration::from_secs(2);
    let a = Node::start_with(ga).await.unwrap();
    let b = Node::start_with(config("gb", "c", port)).await.unwrap();
    let mut inputs = Vec::new();
    for input in [
        &b"\x00\x05hello"[..],
        &[0xff, 0xff, 0xff, 0xff][..],
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0, 0][..],
        // A send_name with a name length past its end.
        &[
            0, 16, b'N', 0, 0, 0, 0x0f, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 0xff, 0xff, b'x',
        ][..],
        // A send_name whose name has no host part.
        &[
            0, 17, b'N', 0, 0, 0, 0x0f, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 0, 2, b'x', b'y',
        ][..],
    ] {
        // All at once: the partial ones each wait out the setup time.
        let port = a.port();
        inputs.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            s.write_all(input).await.unwrap();
            // The node closes the connection (an error or EOF), within the setup time.
            let mut buf = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
            assert!(read.is_ok(), "connection left open after {input:?}");
        }));
    }
    for input in inputs {
        input.await.unwrap();
    }
    assert!(a.ping(b.name().as_str()).await);
    assert_eq!(PANICS.load(std::sync::atomic::Ordering::SeqCst), 0);
}

async fn read_handshake_msg(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    let len = s.read_u16().await.unwrap();
    let mut buf = vec![0; usize::from(len)];
    s.read_exact(&mut buf).await.unwrap();
    buf
}

async fn write_handshake_msg(s: &mut tokio::net::TcpStream, body: &[u8]) {
    let mut out = (body.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    s.write_all(&out).await.unwrap();
}

/// A hand-written peer that completes the handshake with `node` as
/// `name`, then returns the socket.
async fn raw_peer(node: &Node, name: &str, cookie: &str) -> tokio::net::TcpStream {
    raw_peer_expecting(node, name, cookie, b"sok").await
}

/// As [`raw_peer`], expecting `status`; after `alive` it asks to replace
/// the old connection.
async fn raw_peer_expecting(
    node: &Node,
    name: &str,
    cookie: &str,
    status: &[u8],
) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", node.port()))
        .await
        .unwrap();
    let mut send_name = vec![b'N'];
    send_name.extend_from_slice(&flags::OFFERED.to_be_bytes());
    send_name.extend_from_slice(&1u32.to_be_bytes());
    send_name.extend_from_slice(&(name.len() as u16).to_be_bytes());
    send_name.extend_from_slice(name.as_bytes());
    write_handshake_msg(&mut s, &send_name).await;
    assert_eq!(read_handshake_msg(&mut s).await, status);
    if status == b"salive" {
        write_handshake_msg(&mut s, b"strue").await;
    }
    let challenge = read_handshake_msg(&mut s).await;
    assert_eq!(challenge[0], b'N');
    let theirs = u32::from_be_bytes(challenge[9..13].try_into().unwrap());
    let mut reply = vec![b'r'];
    reply.extend_from_slice(&42u32.to_be_bytes());
    reply.extend_from_slice(&Md5::digest(format!("{cookie}{theirs}").as_bytes()));
    write_handshake_msg(&mut s, &reply).await;
    let ack = read_handshake_msg(&mut s).await;
    assert_eq!(ack[0], b'a');
    assert_eq!(ack[1..], Md5::digest(format!("{cookie}42").as_bytes())[..]);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_peer_sending_a_4_gib_frame_or_garbage_is_disconnected() {
    let port = free_port();
    let (a, mut events) = watched(config("ha", "c", port)).await;
    let b = Node::start_with(config("hb", "c", port)).await.unwrap();
    for (i, frame) in [
        &[0xff, 0xff, 0xff, 0xff][..],
        &[0, 0, 0, 3, 1, 2, 3][..],
        &[0, 0, 0, 4, 112, 131, 104, 9][..],
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("raw{i}_{}@localhost", std::process::id());
        let mut s = raw_peer(&a, &name, "c").await;
        // Connected once the handshake is done.
        events.up(&name).await;
        s.write_all(frame).await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "connection left open after {frame:?}");
        events.down(&name).await;
        assert!(!a.nodes().iter().any(|n| n.as_str() == name));
    }
    assert!(a.ping(b.name().as_str()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_reconnecting_while_its_old_connection_is_up_replaces_it() {
    let port = free_port();
    let (a, mut events) = watched(config("ra", "c", port)).await;
    let b = Node::start_with(config("rb", "c", port)).await.unwrap();
    let name = format!("again_{}@localhost", std::process::id());
    let mut old = raw_peer(&a, &name, "c").await;
    events.up(&name).await;
    // Same name again: `alive`, we say `true`, the handshake goes on.
    let _new = raw_peer_expecting(&a, &name, "c", b"salive").await;
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        // The old connection is closed (ticks may come first).
        while old.read_buf(&mut buf).await.map(|n| n > 0).unwrap_or(false) {
            buf.clear();
        }
    })
    .await;
    assert!(closed.is_ok(), "the old connection stayed open");
    assert_eq!(a.nodes().iter().filter(|n| n.as_str() == name).count(), 1);
    assert!(a.ping(b.name().as_str()).await);
}

/// Reads frames from a raw peer's socket until one that is not a tick.
async fn read_non_tick(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    loop {
        let len = s.read_u32().await.unwrap();
        let mut frame = vec![0; len as usize];
        s.read_exact(&mut frame).await.unwrap();
        if len > 0 {
            return frame;
        }
    }
}

/// `net_adm:ping` answers `pang` at once when the connection it asked on
/// is lost: a ping whose connection is replaced by the peer reconnecting,
/// or goes down, fails then, not after its timeout (a minute here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_fails_at_once_when_its_connection_is_replaced_or_goes_down() {
    let port = free_port();
    let mut c = config("pa", "c", port);
    c.ping_timeout = Duration::from_secs(60);
    let (a, mut events) = watched(c).await;
    let a = Arc::new(a);
    let name = format!("pinged_{}@localhost", std::process::id());
    for replace in [true, false] {
        let mut old = raw_peer(&a, &name, "c").await;
        events.up(&name).await;
        let pinging = tokio::spawn({
            let (a, name) = (a.clone(), name.clone());
            async move { a.ping(&name).await }
        });
        // The `is_auth` request is out and never answered.
        let request = tokio::time::timeout(Duration::from_secs(20), read_non_tick(&mut old))
            .await
            .expect("no is_auth request");
        assert!(!request.is_empty());
        let _new = if replace {
            Some(raw_peer_expecting(&a, &name, "c", b"salive").await)
        } else {
            drop(old);
            None
        };
        let answer = tokio::time::timeout(Duration::from_secs(20), pinging).await;
        assert!(
            matches!(answer, Ok(Ok(false))),
            "replace {replace}: the ping did not fail at once: {answer:?}"
        );
        // Down: the old connection (replaced, or closed).
        events.down(&name).await;
        if let Some(new) = _new {
            // The new connection goes down with its socket, for the next round.
            drop(new);
            events.down(&name).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_send_named_connect_on_first_use_and_keep_order() {
    let port = free_port();
    let a = Node::start_with(config("send_a", "cookie1", port))
        .await
        .unwrap();
    let (b, mut deliveries) = watched(config("send_b", "cookie1", port)).await;
    let b_name = b.name().as_str().to_string();
    assert!(a.nodes().is_empty());

    // The first send connects.
    a.send_named(&b_name, "some_name", Term::from(1))
        .await
        .unwrap();
    assert_eq!(a.nodes(), vec![b.name().clone()]);
    let b_pid = Term::Pid(Pid {
        node: b.name().clone(),
        id: 77,
        serial: 0,
        creation: b.creation(),
    });
    let big = Term::tuple([Term::atom("big"), Term::binary(b"bytes".to_vec())]);
    for i in 2..=50 {
        a.send(&b_pid, Term::from(i)).await.unwrap();
    }
    a.send(&b_pid, big.clone()).await.unwrap();
    let got = deliveries.messages(51).await;
    assert!(
        matches!(&got[0], Delivery::ToName { to, message, .. }
            if to.as_str() == "some_name" && *message == Term::from(1)),
        "{:?}",
        got[0]
    );
    for (i, d) in got[1..50].iter().enumerate() {
        let want = Term::from(i as i64 + 2);
        assert!(
            matches!(d, Delivery::ToPid { to, message, .. }
                if Term::Pid(to.clone()) == b_pid && *message == want),
            "{d:?}"
        );
    }
    assert!(matches!(&got[50], Delivery::ToPid { message, .. } if *message == big));

    // Bad destinations are errors, not panics; a node nobody runs too.
    assert!(matches!(
        a.send(&Term::atom("not_a_pid"), Term::from(1)).await,
        Err(DistError::BadDestination(_))
    ));
    assert!(a
        .send_named("nosuch@localhost", "x", Term::from(1))
        .await
        .is_err());
    // To this node itself: straight to the hook.
    b.send_named(&b_name, "me", Term::from(2)).await.unwrap();
    b.send(&b_pid, Term::from(3)).await.unwrap();
    let got = deliveries.messages(2).await;
    assert!(matches!(&got[0], Delivery::ToName { to, .. } if to.as_str() == "me"));
    assert!(matches!(&got[1], Delivery::ToPid { message, .. } if *message == Term::from(3)));
}
