//! The application's routes mounted beside the console under `/api/`
//! (the jobs API, the cluster services, `/api/node/stop`) are behind the
//! console's guards: a foreign `Host` is refused for every method, a
//! cross-site `Origin` for mutations, and `--console read-only` refuses
//! every mutation while reads still answer. Routes outside `/api/` are not
//! touched.

mod support;

use std::time::Duration;

use ember_console as console;
use ember_runtime::Runtime;
use ember_web::{json, Config, Request, Router, Server};
use http::Method;

/// A router standing for the binary's application routes.
fn app() -> Router {
    let ok = |_r: Request| async { json(&serde_json::json!({"ok": true})) };
    Router::new()
        .get("/api/services", ok)
        .post("/api/services", ok)
        .post("/api/services/*", ok)
        .route(Method::DELETE, "/api/services/*", ok)
        .post("/api/node/stop", ok)
        .post("/api/jobs", ok)
        .route(Method::DELETE, "/api/jobs/*", ok)
        .get("/ping", ok)
}

/// Runs `body` against `app()` with the console in `mode`.
fn with_app<F, Fut>(mode: console::Mode, body: F)
where
    F: FnOnce(std::net::SocketAddr) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let rt = Runtime::builder().schedulers(2).build().unwrap();
    rt.block_on(async move {
        let options = console::Options {
            mode,
            ..console::Options::default()
        };
        let server = Server::bind(
            "127.0.0.1:0",
            console::mount_with(app(), options),
            Config::default(),
        )
        .unwrap();
        let addr = server.local_addr();
        tokio::time::timeout(Duration::from_secs(60), body(addr))
            .await
            .expect("the test did not finish within 60 s");
        server.shutdown().await;
    });
}

async fn status(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    host: &str,
    origin: Option<&str>,
) -> u16 {
    let mut headers = vec![("host", host.to_string())];
    if let Some(o) = origin {
        headers.push(("origin", o.to_string()));
    }
    support::request(addr, method, path, &headers, "{}")
        .await
        .status
}

const MUTATIONS: [(&str, &str); 6] = [
    ("POST", "/api/services"),
    ("POST", "/api/services/a/call"),
    ("DELETE", "/api/services/a"),
    ("POST", "/api/node/stop"),
    ("POST", "/api/jobs"),
    ("DELETE", "/api/jobs/1"),
];

#[test]
fn a_foreign_host_is_refused_on_the_app_api() {
    with_app(console::Mode::ReadWrite, |addr| async move {
        assert_eq!(
            status(addr, "GET", "/api/services", "evil.example", None).await,
            403
        );
        for (method, path) in MUTATIONS {
            assert_eq!(
                status(addr, method, path, "evil.example:80", None).await,
                403,
                "{method} {path} with a foreign Host"
            );
            // No content type needed (the contract's stop has no body).
            assert_eq!(
                status(addr, method, path, "127.0.0.1", None).await,
                200,
                "{method} {path} from the console's own host"
            );
            assert_eq!(
                status(addr, method, path, "127.0.0.1", Some("http://evil.example")).await,
                403,
                "{method} {path} cross-origin"
            );
        }
        assert_eq!(
            status(addr, "GET", "/api/services", "localhost", None).await,
            200
        );
        // Outside /api/ nothing changes.
        assert_eq!(status(addr, "GET", "/ping", "anything", None).await, 200);
    });
}

#[test]
fn read_only_refuses_mutations_of_the_app_api() {
    with_app(console::Mode::ReadOnly, |addr| async move {
        for (method, path) in MUTATIONS {
            assert_eq!(
                status(addr, method, path, "127.0.0.1", None).await,
                403,
                "{method} {path} in read-only mode"
            );
        }
        assert_eq!(
            status(addr, "GET", "/api/services", "127.0.0.1", None).await,
            200,
            "reads still answer"
        );
    });
}
