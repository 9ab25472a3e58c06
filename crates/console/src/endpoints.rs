//! The benchmark endpoints, an exact contract that external tools rely on.
//!
//! | request | answer |
//! |---|---|
//! | `GET /ping` | `200`, body `pong` |
//! | `GET /fact?n=N` | `200`, body the **bit length** of N! in decimal (e.g. `22` for `n=10`, since 10! = 3628800 < 2²²); `400` if `n` is missing, not a non-negative integer, or above 10 000 000 |
//! | `GET /spin?n=N` | `200`, body the final state (decimal `u64`) of N xorshift64 steps from `0x9E3779B97F4A7C15`; `400` if `n` is missing, not a non-negative integer, or above 10 000 000 000 |
//!
//! Both computations are plain loops without a single await, as a user's
//! naive handler would write them: `/fact` multiplies a `BigUint` by each
//! `u64` from 2 to N. They exercise Ember's preemption (the watchdog moves
//! other processes off the thread they hog). Each checks
//! [`ember_runtime::should_stop`] now and then, so a request whose client
//! disconnected (and whose process the connection therefore killed) stops
//! computing.

use http::StatusCode;
use num_bigint::BigUint;

use ember_web::{query, text, Request, Response, Router};

/// Largest `n` `/fact` accepts.
pub const FACT_MAX_N: u64 = 10_000_000;

/// Largest `n` `/spin` accepts (some seconds of one core: a request
/// cannot hold a core for hours).
pub const SPIN_MAX_N: u64 = 10_000_000_000;

/// The xorshift64 state `/spin` starts from.
pub const SPIN_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// Mounts `/ping`, `/fact` and `/spin` on `router`.
pub fn routes(router: Router) -> Router {
    router
        .get("/ping", ping)
        .get("/fact", fact)
        .get("/spin", spin)
}

/// `GET /ping`: `pong`.
pub async fn ping(_req: Request) -> Response {
    text(StatusCode::OK, "pong")
}

/// `GET /fact?n=N`: the bit length of N!, by a naive loop.
pub async fn fact(req: Request) -> Response {
    match parse_n(&req, FACT_MAX_N) {
        Ok(n) => text(StatusCode::OK, factorial_bits(n).to_string()),
        Err(why) => text(StatusCode::BAD_REQUEST, why),
    }
}

/// `GET /spin?n=N`: N xorshift64 steps.
pub async fn spin(req: Request) -> Response {
    match parse_n(&req, SPIN_MAX_N) {
        Ok(n) => text(StatusCode::OK, xorshift(n).to_string()),
        Err(why) => text(StatusCode::BAD_REQUEST, why),
    }
}

/// The `n` parameter, or why it is unacceptable (answered `400`).
fn parse_n(req: &Request, max: u64) -> Result<u64, String> {
    let params = query(req);
    let Some(raw) = params.get("n") else {
        return Err("missing parameter n\n".into());
    };
    match raw.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        Ok(_) => Err(format!("n must be at most {max}\n")),
        Err(_) => Err("n must be a non-negative integer\n".into()),
    }
}

/// The bit length of `n!`, multiplying one factor at a time and never
/// awaiting. Returns early (with a meaningless value) if the process was
/// terminated meanwhile.
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

/// `n` steps of xorshift64 from [`SPIN_SEED`], never awaiting. Returns early
/// if the process was terminated meanwhile.
pub fn xorshift(n: u64) -> u64 {
    let mut x = SPIN_SEED;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if i % (1 << 20) == 0 && ember_runtime::should_stop() {
            break;
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factorial_bit_lengths_are_right() {
        assert_eq!(factorial_bits(0), 1);
        assert_eq!(factorial_bits(1), 1);
        assert_eq!(factorial_bits(10), 22); // 3628800
        assert_eq!(factorial_bits(20), 62); // 2432902008176640000
    }

    #[test]
    fn xorshift_of_zero_steps_is_the_seed() {
        assert_eq!(xorshift(0), SPIN_SEED);
        assert_ne!(xorshift(1), SPIN_SEED);
    }
}
