//! Routing requests to users' handlers: exact paths and `/prefix/*` paths,
//! per method, with 404 and 405 answered by the router.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::{header, Method, StatusCode};

use crate::response::text;
use crate::{Request, Response};

/// The future a [`Handler`] returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Response> + Send + 'static>>;

/// Something that answers a request. Implemented for every
/// `Fn(Request) -> impl Future<Output = Response> + Send + 'static` that is
/// `Send + Sync + 'static`, so plain `async fn`s and closures are handlers.
///
/// A handler runs in its own Ember process (spawned by the connection's
/// process for each request), so it may `ember_runtime::spawn`, `send`,
/// `receive`, compute for a long time without awaiting, or panic: a panic
/// answers 500 for that request only, and a client that disconnects ends the
/// handler's process.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request.
    fn call(&self, request: Request) -> HandlerFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    fn call(&self, request: Request) -> HandlerFuture {
        Box::pin(self(request))
    }
}

type Methods = Vec<(Method, Arc<dyn Handler>)>;

/// Maps method and path to a [`Handler`].
///
/// Paths are exact (`/ping`) or a prefix ending in `/*` (`/static/*` matches
/// `/static/app.js` and `/static/img/a.png`, not `/static`). An exact path
/// wins over a prefix, and a longer prefix over a shorter one. A path that
/// matches with another method answers `405 Method Not Allowed` with an
/// `Allow` header; no match answers `404 Not Found`. A `HEAD` request is
/// served by the `GET` handler when no `HEAD` handler is set (hyper sends no
/// body for it). Registering the same method and path twice keeps the last.
///
/// ```
/// use ember_web::{text, Request, Router};
/// use http::{Method, StatusCode};
///
/// async fn hello(_req: Request) -> ember_web::Response {
///     text(StatusCode::OK, "hello")
/// }
/// let router = Router::new()
///     .get("/hello", hello)
///     .post("/echo", |req: Request| async move {
///         ember_web::Response::new(req.into_body().into())
///     })
///     .route(Method::PUT, "/files/*", |_req: Request| async {
///         text(StatusCode::CREATED, "stored")
///     });
/// # let _ = router;
/// ```
#[derive(Clone, Default)]
pub struct Router {
    exact: HashMap<String, Methods>,
    /// Sorted by decreasing prefix length.
    prefixes: Vec<(String, Methods)>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut routes: Vec<String> = Vec::new();
        for (path, methods) in &self.exact {
            for (m, _) in methods {
                routes.push(format!("{m} {path}"));
            }
        }
        for (prefix, methods) in &self.prefixes {
            for (m, _) in methods {
                routes.push(format!("{m} {prefix}*"));
            }
        }
        routes.sort();
        f.debug_struct("Router").field("routes", &routes).finish()
    }
}

impl Router {
    /// A router with no routes (everything is 404).
    pub fn new() -> Router {
        Router::default()
    }

    /// Routes `GET path` to `handler`.
    pub fn get(self, path: &str, handler: impl Handler) -> Router {
        self.route(Method::GET, path, handler)
    }

    /// Routes `POST path` to `handler`.
    pub fn post(self, path: &str, handler: impl Handler) -> Router {
        self.route(Method::POST, path, handler)
    }

    /// Routes `method path` to `handler`; `path` is exact, or a prefix if it
    /// ends in `/*`.
    ///
    /// # Panics
    ///
    /// If `path` does not start with `/`.
    pub fn route(mut self, method: Method, path: &str, handler: impl Handler) -> Router {
        assert!(
            path.starts_with('/'),
            "a route's path must start with '/': {path:?}"
        );
        let handler: Arc<dyn Handler> = Arc::new(handler);
        let methods = match path.strip_suffix('*') {
            Some(prefix) if prefix.ends_with('/') => {
                match self.prefixes.iter().position(|(p, _)| p == prefix) {
                    Some(i) => &mut self.prefixes[i].1,
                    None => {
                        self.prefixes.push((prefix.to_owned(), Vec::new()));
                        self.prefixes
                            .sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
                        let i = self
                            .prefixes
                            .iter()
                            .position(|(p, _)| p == prefix)
                            .unwrap_or_default();
                        &mut self.prefixes[i].1
                    }
                }
            }
            _ => self.exact.entry(path.to_owned()).or_default(),
        };
        methods.retain(|(m, _)| *m != method);
        methods.push((method, handler));
        self
    }

    /// Replaces the handler of every route whose path (exact, or prefix
    /// without its `*`) `select` accepts by `wrap(method, handler)`: a
    /// middleware over routes added so far (the console puts an
    /// application's `/api/` routes behind its guards this way).
    pub fn wrap_routes(
        mut self,
        select: impl Fn(&str) -> bool,
        wrap: impl Fn(&Method, Arc<dyn Handler>) -> Arc<dyn Handler>,
    ) -> Router {
        let prefixes = self.prefixes.iter_mut().map(|(p, m)| (&*p, m));
        for (path, methods) in self.exact.iter_mut().chain(prefixes) {
            if select(path) {
                for (method, handler) in methods.iter_mut() {
                    *handler = wrap(method, handler.clone());
                }
            }
        }
        self
    }

    /// Finds the handler for a request, or the response the router gives
    /// itself (404, 405).
    pub(crate) fn lookup(&self, method: &Method, path: &str) -> Lookup {
        let methods = self.exact.get(path).or_else(|| {
            self.prefixes
                .iter()
                .find(|(prefix, _)| path.starts_with(prefix.as_str()))
                .map(|(_, methods)| methods)
        });
        let Some(methods) = methods else {
            return Lookup::Answer(Box::new(text(StatusCode::NOT_FOUND, "not found\n")));
        };
        let find = |wanted: &Method| methods.iter().find(|(m, _)| m == wanted);
        let found = find(method).or_else(|| {
            (*method == Method::HEAD)
                .then(|| find(&Method::GET))
                .flatten()
        });
        if let Some((_, handler)) = found {
            return Lookup::Handler(handler.clone());
        }
        let mut allow: Vec<&str> = methods.iter().map(|(m, _)| m.as_str()).collect();
        if allow.contains(&"GET") && !allow.contains(&"HEAD") {
            allow.push("HEAD");
        }
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        if let Ok(value) = allow.join(", ").parse() {
            response.headers_mut().insert(header::ALLOW, value);
        }
        Lookup::Answer(Box::new(response))
    }
}

/// What [`Router::lookup`] found.
pub(crate) enum Lookup {
    /// The handler to run.
    Handler(Arc<dyn Handler>),
    /// No handler: the router's own answer (404, 405).
    Answer(Box<Response>),
}

impl Lookup {
    #[cfg(test)]
    fn status(&self) -> Option<StatusCode> {
        match self {
            Lookup::Handler(_) => None,
            Lookup::Answer(r) => Some(r.status()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ok(_: Request) -> Response {
        text(StatusCode::OK, "ok")
    }

    #[test]
    fn exact_paths_win_over_prefixes_and_longer_prefixes_over_shorter() {
        let r = Router::new()
            .get("/a/*", |_| async { text(StatusCode::OK, "short") })
            .get("/a/b/*", |_| async { text(StatusCode::OK, "long") })
            .get("/a/b/c", ok);
        assert_eq!(r.lookup(&Method::GET, "/a/b/c").status(), None);
        assert_eq!(r.lookup(&Method::GET, "/a/b/d").status(), None);
        assert_eq!(r.lookup(&Method::GET, "/a/x").status(), None);
        assert_eq!(
            r.lookup(&Method::GET, "/a").status(),
            Some(StatusCode::NOT_FOUND)
        );
    }

    #[test]
    fn a_path_with_another_method_is_405_with_allow() {
        let r = Router::new().get("/x", ok);
        let resp = match r.lookup(&Method::POST, "/x") {
            Lookup::Answer(r) => Some((r.status(), r.headers().get(header::ALLOW).cloned())),
            Lookup::Handler(_) => None,
        };
        assert_eq!(
            resp,
            Some((
                StatusCode::METHOD_NOT_ALLOWED,
                Some("GET, HEAD".parse().unwrap())
            ))
        );
        assert_eq!(r.lookup(&Method::HEAD, "/x").status(), None);
    }
}
