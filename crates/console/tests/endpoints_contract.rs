//! The benchmark endpoints' exact contract: `/ping`, `/fact`, `/spin`.

mod support;

use ember_console::endpoints::{self, SPIN_SEED};
use ember_web::{Config, Router, Server};
use support::{get, run};

fn start() -> Server {
    Server::bind(
        "127.0.0.1:0",
        endpoints::routes(Router::new()),
        Config::default(),
    )
    .unwrap()
}

#[test]
fn ping_answers_pong() {
    run(2, async {
        let server = start();
        let reply = get(server.local_addr(), "/ping").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "pong"));
    });
}

#[test]
fn fact_answers_the_bit_length_of_the_factorial() {
    run(2, async {
        let server = start();
        let addr = server.local_addr();
        for (n, bits) in [(0, "1"), (1, "1"), (10, "22"), (20, "62"), (1000, "8530")] {
            let reply = get(addr, &format!("/fact?n={n}")).await;
            assert_eq!((reply.status, reply.body.as_str()), (200, bits), "n={n}");
        }
    });
}

#[test]
fn spin_answers_the_xorshift_state_after_n_steps() {
    run(2, async {
        let server = start();
        let addr = server.local_addr();
        let reply = get(addr, "/spin?n=0").await;
        assert_eq!((reply.status, reply.body), (200, SPIN_SEED.to_string()));
        let reply = get(addr, "/spin?n=100000").await;
        assert_eq!(
            (reply.status, reply.body),
            (200, endpoints::xorshift(100_000).to_string())
        );
        assert_eq!(endpoints::SPIN_MAX_N, 10_000_000_000);
    });
}

#[test]
fn fact_and_spin_answer_400_to_a_bad_n() {
    run(2, async {
        let server = start();
        let addr = server.local_addr();
        for path in [
            "/fact",
            "/fact?n=",
            "/fact?n=abc",
            "/fact?n=-5",
            "/fact?n=1.5",
            "/fact?n=10000001",
            "/fact?n=99999999999999999999999",
            "/spin",
            "/spin?n=x",
            "/spin?n=-1",
            "/spin?n=10000000001",
            "/spin?n=18446744073709551615",
        ] {
            assert_eq!(get(addr, path).await.status, 400, "{path}");
        }
    });
}
