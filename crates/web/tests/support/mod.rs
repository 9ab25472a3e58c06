//! The HTTP test client (`ember_testkit::http`), under the name the tests
//! use, and the handlers the tests serve.

#![allow(dead_code, unused_imports, unreachable_pub)]

pub use ember_testkit::http::*;

use ember_web::{query, text, Request, Response, Router};
use http::StatusCode;
use num_bigint::BigUint;

/// `/ping` (`pong`) and `/fact?n=N` (the bit length of N!), as the demo's
/// benchmark endpoints answer them (`ember_console::endpoints`, which
/// depends on this crate).
pub fn routes(router: Router) -> Router {
    router
        .get("/ping", |_req: Request| async {
            text(StatusCode::OK, "pong")
        })
        .get("/fact", fact)
}

/// `GET /ping` (`pong`) and `POST /echo` (the request's body back).
pub fn ping_and_echo(router: Router) -> Router {
    router
        .get("/ping", |_req: Request| async {
            text(StatusCode::OK, "pong")
        })
        .post("/echo", |req: Request| async move {
            text(
                StatusCode::OK,
                String::from_utf8_lossy(req.body()).into_owned(),
            )
        })
}

/// `GET /fact?n=N`: a loop without an await, as a user's naive handler
/// would write it; `400` without a number `n`.
pub async fn fact(req: Request) -> Response {
    match query(&req).get("n").and_then(|n| n.parse().ok()) {
        Some(n) => text(StatusCode::OK, factorial_bits(n).to_string()),
        None => text(
            StatusCode::BAD_REQUEST,
            "n must be a non-negative integer\n",
        ),
    }
}

/// The bit length of `n!`, one factor at a time; stops early (with a
/// meaningless value) once its process should stop.
pub fn factorial_bits(n: u64) -> u64 {
    let mut acc = BigUint::from(1u32);
    for i in 2..=n {
        acc *= i;
        if i % 1024 == 0 && ember_runtime::should_stop() {
            return 0;
        }
    }
    acc.bits()
}
