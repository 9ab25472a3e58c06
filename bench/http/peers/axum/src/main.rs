//! bench/http peer: the axum server a user would write.
//!
//! usage: axum-peer --listen 127.0.0.1:PORT [--blocking]
//!
//! `/fact` computes N! with a plain loop of big-integer multiplications and
//! answers its bit length. Without `--blocking` it runs inline on the tokio
//! worker (`#[tokio::main]`, default runtime: one worker per available core,
//! so one under `taskset -c 0`); with `--blocking` it runs in
//! `tokio::task::spawn_blocking`.

use axum::{extract::Query, routing::get, Router};
use num_bigint::BigUint;
use serde::Deserialize;

#[derive(Deserialize)]
struct N {
    n: u64,
}

fn fact_bits(n: u64) -> u64 {
    let mut acc = BigUint::from(1u32);
    for i in 2..=n {
        acc *= i;
    }
    acc.bits()
}

/// The xorshift64 state `/spin` starts from (the contract's, in
/// `crates/console/src/endpoints.rs`).
const SPIN_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

fn spin(n: u64) -> u64 {
    let mut x: u64 = SPIN_SEED;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

async fn ping() -> &'static str {
    "pong"
}

async fn fact_inline(Query(q): Query<N>) -> String {
    fact_bits(q.n).to_string()
}

async fn fact_blocking(Query(q): Query<N>) -> String {
    tokio::task::spawn_blocking(move || fact_bits(q.n))
        .await
        .expect("fact task panicked")
        .to_string()
}

async fn spin_inline(Query(q): Query<N>) -> String {
    spin(q.n).to_string()
}

async fn spin_blocking(Query(q): Query<N>) -> String {
    tokio::task::spawn_blocking(move || spin(q.n))
        .await
        .expect("spin task panicked")
        .to_string()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut listen = "127.0.0.1:8080".to_string();
    let mut blocking = false;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--listen" if i + 1 < args.len() => {
                listen = args[i + 1].clone();
                i += 1;
            }
            "--blocking" => blocking = true,
            other => {
                eprintln!("axum-peer: unknown argument {other}");
                std::process::exit(2);
            }
        }
        i += 1;
    }
    let app = if blocking {
        Router::new()
            .route("/ping", get(ping))
            .route("/fact", get(fact_blocking))
            .route("/spin", get(spin_blocking))
    } else {
        Router::new()
            .route("/ping", get(ping))
            .route("/fact", get(fact_inline))
            .route("/spin", get(spin_inline))
    };
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .unwrap_or_else(|e| panic!("cannot listen on {listen}: {e}"));
    axum::serve(listener, app).await.expect("server failed");
}
