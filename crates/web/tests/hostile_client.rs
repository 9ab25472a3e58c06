//! The server played against as a hostile or sloppy client would, over raw
//! sockets: after each attack the node must still be alive and correct.

// ---------------------------------------------------------------------------
// Connections: half-close, slow readers, one long header line, Host
// (issue 11, items 5, 6 and 7). Self-contained: its own `start` and client.
// ---------------------------------------------------------------------------
mod connection_edges {
    use std::io::{ErrorKind, Read, Write};
    use std::net::{Shutdown, SocketAddr, TcpStream};
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use ember_runtime::Runtime;
    use ember_web::{endpoints, text, Config, Request, Router, Server, Stats};
    use http::StatusCode;

    /// Every client read or write gives up after this (a hang fails the test).
    const IO_DEADLINE: Duration = Duration::from_secs(120);

    /// A running server and its counters. The runtime lives as long as it.
    struct Node {
        _rt: Runtime,
        addr: SocketAddr,
        stats: Arc<Stats>,
    }

    /// Starts a node serving the benchmark endpoints and `/big` (1 MiB).
    fn start(config: Config) -> Node {
        let rt = Runtime::builder().schedulers(2).build().unwrap();
        let router = endpoints::routes(Router::new()).get("/big", |_req: Request| async {
            text(StatusCode::OK, "x".repeat(1 << 20))
        });
        let (addr, stats) = rt.block_on(async move {
            let server = Server::bind("127.0.0.1:0", router, config).unwrap();
            (server.local_addr(), server.stats().clone())
        });
        Node {
            _rt: rt,
            addr,
            stats,
        }
    }

    fn connect(addr: SocketAddr) -> TcpStream {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(IO_DEADLINE)).unwrap();
        s.set_write_timeout(Some(IO_DEADLINE)).unwrap();
        s
    }

    /// Reads until the server closes (or resets) the connection.
    fn read_all(s: &mut TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    panic!("the server neither answered nor closed within {IO_DEADLINE:?}")
                }
                Err(_) => return out, // reset
            }
        }
    }

    /// The (status, body) of each complete response in `raw`.
    fn responses(raw: &[u8]) -> Vec<(u16, String)> {
        let mut out = Vec::new();
        let mut rest = raw;
        while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&rest[..end]).to_ascii_lowercase();
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let body_start = end + 4;
            if rest.len() < body_start + len {
                break;
            }
            let body = String::from_utf8_lossy(&rest[body_start..body_start + len]).into_owned();
            out.push((status, body));
            rest = &rest[body_start + len..];
        }
        out
    }

    /// One request on a new connection, closed by the server after it.
    fn exchange(addr: SocketAddr, raw: &[u8]) -> Vec<(u16, String)> {
        let mut s = connect(addr);
        s.write_all(raw).unwrap();
        responses(&read_all(&mut s))
    }

    fn assert_alive(node: &Node) {
        let got = exchange(
            node.addr,
            b"GET /ping HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
        );
        assert_eq!(
            got,
            vec![(200, "pong".to_owned())],
            "the node must still answer"
        );
    }

    /// Waits until `done` holds, failing with `what` after `deadline`.
    fn wait_until(deadline: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        while !done() {
            assert!(
                start.elapsed() < deadline,
                "{what}: not within {deadline:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        start.elapsed()
    }

    /// Sends `request`, half-closes, and reads everything.
    fn half_closed(addr: SocketAddr, request: &str) -> Vec<(u16, String)> {
        let mut s = connect(addr);
        s.write_all(request.as_bytes()).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        responses(&read_all(&mut s))
    }

    #[test]
    fn a_half_closed_fact_request_gets_the_right_answer_not_a_placeholder() {
        let node = start(Config::default());
        // The n = 100 000 takes a minute in a debug build; half as
        // much still keeps the handler computing long after the FIN.
        let n = 50_000;
        let expected = std::thread::spawn(move || endpoints::factorial_bits(n).to_string());
        let got = half_closed(
            node.addr,
            &format!("GET /fact?n={n} HTTP/1.1\r\nhost: t\r\n\r\n"),
        );
        assert_eq!(got, vec![(200, expected.join().unwrap())]);
        assert_alive(&node);
    }

    #[test]
    fn a_half_closed_spin_request_gets_the_right_answer_not_a_placeholder() {
        let node = start(Config::default());
        let n = 100_000_000;
        let got = half_closed(
            node.addr,
            &format!("GET /spin?n={n} HTTP/1.1\r\nhost: t\r\n\r\n"),
        );
        assert_eq!(got, vec![(200, endpoints::xorshift(n).to_string())]);
        assert_alive(&node);
    }

    #[test]
    fn every_half_closed_page_request_is_answered() {
        let node = start(Config::default());
        let rounds = 200;
        let mut unanswered = 0;
        for _ in 0..rounds {
            let got = half_closed(node.addr, "GET /ping HTTP/1.1\r\nhost: t\r\n\r\n");
            if got != vec![(200, "pong".to_owned())] {
                unanswered += 1;
            }
        }
        println!("half-closed /ping: {unanswered} of {rounds} unanswered");
        assert_eq!(unanswered, 0, "of {rounds} half-closed requests");
        assert_eq!(node.stats.disconnected.load(Ordering::Relaxed), 0);
        assert_alive(&node);
    }

    #[test]
    fn a_client_resetting_mid_request_stops_its_work_and_is_no_crash() {
        let node = start(Config::default());
        let mut s = connect(node.addr);
        s.write_all(b"GET /fact?n=10000000 HTTP/1.1\r\nhost: t\r\n\r\n")
            .unwrap();
        wait_until(Duration::from_secs(30), "the request started", || {
            node.stats.requests.load(Ordering::Relaxed) == 1
        });
        // SO_LINGER 0: close with a reset.
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
        wait_until(Duration::from_secs(30), "the disconnect counted", || {
            node.stats.disconnected.load(Ordering::Relaxed) == 1
        });
        assert_eq!(node.stats.crashed.load(Ordering::Relaxed), 0);
        assert_eq!(node.stats.connections_killed.load(Ordering::Relaxed), 0);
        assert_alive(&node);
    }

    #[test]
    fn slow_readers_that_pipeline_a_thousand_requests_lose_their_connections() {
        let node = start(Config::default());
        let cap = Config::default().max_pipelined;
        let burst = "GET /ping HTTP/1.1\r\nhost: t\r\n\r\n".repeat(1000);
        let mut clients: Vec<TcpStream> = (0..10).map(|_| connect(node.addr)).collect();
        for c in &mut clients {
            c.write_all(burst.as_bytes()).unwrap();
        }
        // Nobody reads: the server must let go of them anyway.
        wait_until(
            Duration::from_secs(30),
            "the ten connections accepted",
            || node.stats.accepted.load(Ordering::Relaxed) >= 10,
        );
        let took = wait_until(
            Duration::from_secs(30),
            "the ten connections closed",
            || node.stats.connections.load(Ordering::Relaxed) == 0,
        );
        let answered: Vec<usize> = clients
            .iter_mut()
            .map(|c| responses(&read_all(c)).len())
            .collect();
        println!("pipelined 1000 each: closed after {took:?}, answered {answered:?}");
        assert!(
            answered.iter().all(|&n| n <= cap),
            "{answered:?} (cap {cap})"
        );
        assert_eq!(node.stats.pipeline_capped.load(Ordering::Relaxed), 10);
        assert_alive(&node);
    }

    #[test]
    fn slow_readers_of_large_responses_are_closed_by_the_write_timeout() {
        let node = start(Config {
            write_timeout: Duration::from_secs(1),
            ..Config::default()
        });
        // Sixteen 1 MiB responses each are more than every socket buffer on
        // the way holds (a few MiB at most), and fewer than the pipelining cap.
        let burst = "GET /big HTTP/1.1\r\nhost: t\r\n\r\n".repeat(16);
        let clients: Vec<TcpStream> = (0..10)
            .map(|_| {
                let mut c = connect(node.addr);
                c.write_all(burst.as_bytes()).unwrap();
                c
            })
            .collect();
        wait_until(
            Duration::from_secs(30),
            "the ten connections accepted",
            || node.stats.accepted.load(Ordering::Relaxed) >= 10,
        );
        let took = wait_until(
            Duration::from_secs(30),
            "the ten connections closed",
            || node.stats.connections.load(Ordering::Relaxed) == 0,
        );
        println!("ten non-reading clients of 16 MiB each: all closed after {took:?}");
        assert_eq!(node.stats.write_timeouts.load(Ordering::Relaxed), 10);
        drop(clients);
        assert_alive(&node);
    }

    #[test]
    fn a_100_kb_header_line_sent_in_one_write_is_answered_431() {
        let node = start(Config::default());
        let mut raw = b"GET /ping HTTP/1.1\r\nhost: t\r\nx-long: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', 100_000));
        raw.extend_from_slice(b"\r\n\r\n");
        let got = exchange(node.addr, &raw);
        assert_eq!(got.first().map(|r| r.0), Some(431), "{got:?}");
        // Just under the limit is still served.
        let mut raw = b"GET /ping HTTP/1.1\r\nhost: t\r\nconnection: close\r\nx-long: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', 60_000));
        raw.extend_from_slice(b"\r\n\r\n");
        assert_eq!(exchange(node.addr, &raw), vec![(200, "pong".to_owned())]);
        assert_alive(&node);
    }

    #[test]
    fn a_request_without_host_or_with_two_hosts_is_answered_400() {
        let node = start(Config::default());
        for raw in [
            &b"GET /ping HTTP/1.1\r\n\r\n"[..],
            b"GET /ping HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
            b"GET /ping HTTP/1.1\r\nhost: a\r\nhost: a\r\n\r\n",
            b"GET /ping HTTP/1.1\r\nhost: a b\r\n\r\n",
        ] {
            let got = exchange(node.addr, raw);
            assert_eq!(
                got.first().map(|r| r.0),
                Some(400),
                "{:?}: {got:?}",
                String::from_utf8_lossy(raw)
            );
        }
        // HTTP/1.0 has no Host requirement.
        let got = exchange(node.addr, b"GET /ping HTTP/1.0\r\n\r\n");
        assert_eq!(got, vec![(200, "pong".to_owned())]);
        assert_alive(&node);
    }
}
