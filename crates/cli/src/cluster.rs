//! The demo's cluster services (`ember_cluster`): the cluster server every
//! distributed node runs (with `--join` seeds), the `counter` service kind
//! and the HTTP API over it:
//!
//! * `POST /api/services` `{"name": "NAME"}` → 201 `{"name","node","pid"}`
//!   (409 if it exists, 400 for a bad body);
//! * `GET /api/services` → `[{"name","node","pid"}]`, sorted by name, the
//!   same from every node once converged (`node` and `pid` are null while
//!   a service has no instance);
//! * `POST /api/services/NAME/call` → 200 `{"reply": "response from NAME on
//!   NODE", "node": "NODE", "calls": N}`; 404 for an unknown service, 503
//!   with `Retry-After` while it moves;
//! * `DELETE /api/services/NAME` → 204 (404 if unknown);
//! * `POST /api/node/stop` → 202, then the node stops gracefully, handing
//!   its services over (as SIGTERM and Ctrl-C do). With a body
//!   `{"node": "NAME"}` naming another member of the cluster, that node is
//!   asked to stop instead (over distribution, to its process registered
//!   as `ember_node_stop`); 404 if NAME is no member. The console's
//!   Services page uses this to stop any node through the one it is on;
//! * `GET /api/node` → `{"node": NAME, "members": [NAME...]}`: this node
//!   and the cluster's members (sorted) as it sees them.
//!
//! Like the console's own routes, the mutating ones are refused for a
//! foreign `Host` and in `--console read-only` mode (see
//! `ember_console`).
//!
//! Without distribution every route answers 503. Distributed nodes also
//! run OTP's default `pg` scope (`ember_cluster::PgScope`). The cluster
//! server (`ember_cluster`) runs under its own supervisor,
//! `ember_cluster_sup` (one_for_one, 5 restarts in 10 s): a killed or
//! crashed server is restarted and takes the node's registrations,
//! services and members over from its predecessor
//! (`ember_cluster::Cluster::child_spec`).
//!
//! A demo device for rolling upgrades: with `EMBER_DEMO_SERVICE_VERSION=2`
//! in its environment the node runs version 2 of the `counter` kind
//! ([`CounterV2`]) instead of `ember_cluster::Counter` (version 1), as if
//! it were a newer build of the binary. Its state is a map
//! `#{calls => N, upgraded_from => V}`, made by `code_change` from the
//! plain count a version 1 instance hands over; its replies also carry
//! `"version": 2` and `"upgraded_from"`. Nothing else reads the variable.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ember_cluster::{Cluster, ClusterConfig, Counter, Kinds, Service, ServiceError, ServiceKind};
use ember_otp::gen::{StartError, StartOptions};
use ember_otp::supervisor::{ChildSpec, Flags, SupervisorRef, SupervisorSpec};
use ember_term::Term;
use ember_web::{json, Request, Response, Router};
use http::{header, HeaderValue, Method, StatusCode};
use serde_json::{json as j, Value};

/// The registered name of the process that stops this node when another
/// member asks.
const REMOTE_STOP: &str = "ember_node_stop";

/// The registered name of the cluster server's supervisor.
pub(crate) const CLUSTER_SUP: &str = "ember_cluster_sup";

/// Starts the supervisor of the cluster server (`server`, the child spec
/// of [`Cluster::child_spec`]), registered as `ember_cluster_sup` and
/// linked to the caller (the binary's root, which traps exits):
/// one_for_one, at most 5 restarts in 10 s. Past that it gives up and the
/// node runs on without a cluster server (its services API answers 503),
/// as a supervisor past its intensity does.
async fn start_supervisor(server: ChildSpec) -> Result<SupervisorRef, StartError> {
    let flags = Flags::new().intensity(5).period(Duration::from_secs(10));
    SupervisorSpec::new(flags, vec![server])
        .expect("a valid child spec")
        .start_link_with(StartOptions::new().name(CLUSTER_SUP))
        .await
}

/// How long a call to a service may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `POST /api/services` waits for the new instance's pid.
const PLACE_WAIT: Duration = Duration::from_secs(3);

/// What the handlers share: the cluster once distribution runs, and the
/// way to ask the binary to stop.
#[derive(Clone)]
pub(crate) struct Api {
    cluster: Arc<OnceLock<Cluster>>,
    stop: StopRequests,
}

/// Where stop requests go (a request already waiting is enough: `try_send`).
pub(crate) type StopRequests = ember_runtime::sync::mpsc::Sender<()>;

impl Api {
    /// The handlers' state and the receiver of stop requests.
    pub(crate) fn new() -> (Api, ember_runtime::sync::mpsc::Receiver<()>) {
        let (stop, rx) = ember_runtime::sync::mpsc::channel(1);
        (
            Api {
                cluster: Arc::new(OnceLock::new()),
                stop,
            },
            rx,
        )
    }

    /// A sender of stop requests (for the signal listener).
    pub(crate) fn stop_requests(&self) -> StopRequests {
        self.stop.clone()
    }

    /// Starts the cluster server with the `counter` kind, connecting to
    /// `seeds` (a seed without `@` gets this node's host).
    pub(crate) async fn start(&self, node: &str, seeds: &[String]) -> Option<Cluster> {
        let host = node.split_once('@').map_or("", |(_, h)| h);
        let seeds: Vec<String> = seeds
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| {
                if s.contains('@') {
                    s.clone()
                } else {
                    format!("{s}@{host}")
                }
            })
            .collect();
        let mut kinds = Kinds::new();
        if std::env::var("EMBER_DEMO_SERVICE_VERSION").as_deref() == Ok("2") {
            kinds.register("counter", CounterV2);
        } else {
            kinds.register("counter", Counter);
        }
        let handle = ember_runtime::Handle::current();
        // OTP's default pg scope: erl nodes started with
        // `-kernel start_pg true` share its groups.
        if let Err(e) = ember_cluster::PgScope::start(&handle, "pg") {
            tracing::warn!("ember: cannot start the pg scope: {e}");
        }
        let (cluster, server) = Cluster::child_spec(&handle, ClusterConfig::new(kinds).join(seeds));
        match start_supervisor(server).await {
            Ok(_) => {
                self.serve_remote_stops();
                let _ = self.cluster.set(cluster.clone());
                Some(cluster)
            }
            Err(e) => {
                tracing::warn!("ember: cannot start the cluster server: {e}");
                None
            }
        }
    }

    /// Starts the process other members ask to stop this node: registered
    /// as `ember_node_stop`, it turns the atom `stop` into a stop request.
    fn serve_remote_stops(&self) {
        let stop = self.stop.clone();
        let spawned = ember_runtime::Spawn::new()
            .label("ember_node_stop")
            .spawn(async move {
                loop {
                    if ember_runtime::receive::<Term>().await.is_atom("stop") {
                        let _ = stop.try_send(());
                    }
                }
            });
        match spawned {
            Ok(s) => {
                if let Err(e) = ember_runtime::register(REMOTE_STOP, s.pid) {
                    tracing::warn!("ember: cannot register {REMOTE_STOP}: {e:?}");
                }
            }
            Err(e) => tracing::warn!("ember: cannot start {REMOTE_STOP}: {e}"),
        }
    }

    /// Adds the API's routes.
    pub(crate) fn routes(&self, router: Router) -> Router {
        let (a, b, c, d) = (self.clone(), self.clone(), self.clone(), self.clone());
        let (e, f) = (self.clone(), self.clone());
        router
            .get("/api/node", move |r| f.clone().node(r))
            .post("/api/services", move |r| a.clone().create(r))
            .get("/api/services", move |r| b.clone().list(r))
            .post("/api/services/*", move |r| c.clone().call(r))
            .route(Method::DELETE, "/api/services/*", move |r| {
                d.clone().delete(r)
            })
            .post("/api/node/stop", move |r| e.clone().stop(r))
    }

    /// The cluster, once started.
    pub(crate) fn cluster(&self) -> Option<&Cluster> {
        self.cluster.get()
    }

    async fn create(self, req: Request) -> Response {
        let Some(cluster) = self.cluster() else {
            return status(StatusCode::SERVICE_UNAVAILABLE, "not a cluster node");
        };
        let name = serde_json::from_slice::<Value>(req.body())
            .ok()
            .and_then(|v| v.get("name")?.as_str().map(str::to_owned))
            .filter(|n| valid_name(n));
        let Some(name) = name else {
            return status(
                StatusCode::BAD_REQUEST,
                "expected {\"name\": NAME} (1-100 characters: letters, digits, - _ .)",
            );
        };
        match cluster.start_service(&name, "counter", Term::nil()).await {
            Ok(_) => {}
            Err(ServiceError::Exists) => return status(StatusCode::CONFLICT, "the service exists"),
            Err(e) => return status(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        }
        let deadline = Instant::now() + PLACE_WAIT;
        while cluster.whereis(&name).is_none() && Instant::now() < deadline {
            ember_runtime::sleep(Duration::from_millis(10)).await;
        }
        let pid = cluster.whereis(&name);
        let mut r = json(&j!({
            "name": name,
            "node": pid.as_ref().map(|p| p.node.as_str().to_owned()),
            "pid": pid.map(|p| Term::Pid(p).to_string()),
        }));
        *r.status_mut() = StatusCode::CREATED;
        r
    }

    async fn list(self, _req: Request) -> Response {
        let Some(cluster) = self.cluster() else {
            return status(StatusCode::SERVICE_UNAVAILABLE, "not a cluster node");
        };
        let list: Vec<Value> = cluster
            .services()
            .into_iter()
            .map(|s| {
                j!({
                    "name": s.name,
                    "node": s.pid.as_ref().map(|p| p.node.as_str().to_owned()),
                    "pid": s.pid.map(|p| Term::Pid(p).to_string()),
                })
            })
            .collect();
        json(&list)
    }

    async fn call(self, req: Request) -> Response {
        let Some(cluster) = self.cluster() else {
            return status(StatusCode::SERVICE_UNAVAILABLE, "not a cluster node");
        };
        let name = req
            .uri()
            .path()
            .strip_prefix("/api/services/")
            .and_then(|rest| rest.strip_suffix("/call"))
            .filter(|n| valid_name(n));
        let Some(name) = name else {
            return status(StatusCode::NOT_FOUND, "not found");
        };
        match cluster.call(name, Term::atom("call"), CALL_TIMEOUT).await {
            Ok(reply) => {
                let field = |k: &str| reply.as_map().and_then(|m| m.get_atom(k)).cloned();
                json(&j!({
                    "reply": field("reply").as_ref().and_then(Term::as_str),
                    "node": field("node").as_ref().and_then(Term::as_str),
                    "calls": field("calls").as_ref().and_then(Term::as_int),
                    "version": field("version").as_ref().and_then(Term::as_int).unwrap_or(1),
                    "upgraded_from": field("upgraded_from").as_ref().and_then(Term::as_int),
                }))
            }
            Err(ServiceError::NotFound) => status(StatusCode::NOT_FOUND, "no such service"),
            Err(ServiceError::Moving) => {
                let mut r = status(StatusCode::SERVICE_UNAVAILABLE, "the service is moving");
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
            Err(e) => status(StatusCode::BAD_GATEWAY, &e.to_string()),
        }
    }

    async fn delete(self, req: Request) -> Response {
        let Some(cluster) = self.cluster() else {
            return status(StatusCode::SERVICE_UNAVAILABLE, "not a cluster node");
        };
        let Some(name) = req.uri().path().strip_prefix("/api/services/") else {
            return status(StatusCode::NOT_FOUND, "not found");
        };
        if valid_name(name) && cluster.delete_service(name).await {
            let mut r = Response::new(ember_web::Body::from(String::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        } else {
            status(StatusCode::NOT_FOUND, "no such service")
        }
    }

    async fn node(self, _req: Request) -> Response {
        let Some(cluster) = self.cluster() else {
            return status(StatusCode::SERVICE_UNAVAILABLE, "not a cluster node");
        };
        let mut members: Vec<String> = cluster
            .members()
            .iter()
            .map(|m| m.as_str().to_owned())
            .collect();
        members.sort();
        json(&j!({
            "node": ember_runtime::dist::node().as_str(),
            "members": members,
        }))
    }

    async fn stop(self, req: Request) -> Response {
        let target = serde_json::from_slice::<Value>(req.body())
            .ok()
            .and_then(|v| v.get("node")?.as_str().map(str::to_owned));
        let this = ember_runtime::dist::node();
        if let Some(target) = target.filter(|t| t.as_str() != this.as_str()) {
            let member = self
                .cluster()
                .is_some_and(|c| c.members().iter().any(|m| m.as_str() == target));
            if !member {
                return status(StatusCode::NOT_FOUND, "no such member of the cluster");
            }
            ember_runtime::dist::send_named(REMOTE_STOP, &target, Term::atom("stop"));
            let mut r = json(&j!({"stopping": true, "node": target}));
            *r.status_mut() = StatusCode::ACCEPTED;
            return r;
        }
        let _ = self.stop.try_send(());
        let mut r = json(&j!({"stopping": true}));
        *r.status_mut() = StatusCode::ACCEPTED;
        r
    }
}

/// Version 2 of the demo's `counter` kind (`EMBER_DEMO_SERVICE_VERSION=2`,
/// a demo device for rolling upgrades): same replies, plus its version and
/// the version whose state it migrated; its state is a map.
pub(crate) struct CounterV2;

/// An instance of [`CounterV2`].
struct CounterV2Instance {
    name: String,
    node: String,
    calls: i64,
    /// The version whose handed-over state `code_change` migrated.
    upgraded_from: Option<i64>,
}

impl ServiceKind for CounterV2 {
    fn version(&self) -> u32 {
        2
    }

    fn init(
        &self,
        name: &str,
        node: &str,
        _args: &Term,
        handed_over: Option<Term>,
    ) -> Box<dyn Service> {
        let state = handed_over.as_ref().and_then(Term::as_map);
        let get = |k: &str| state.and_then(|m| m.get_atom(k)).and_then(Term::as_int);
        Box::new(CounterV2Instance {
            name: name.to_owned(),
            node: node.to_owned(),
            calls: get("calls").unwrap_or(0),
            upgraded_from: get("upgraded_from"),
        })
    }

    fn code_change(&self, old_version: u32, state: Term) -> Term {
        // Version 1 hands over the plain count; anything else starts at 0.
        let calls = state.as_int().unwrap_or(0);
        Term::map([
            (Term::atom("calls"), Term::from(calls)),
            (Term::atom("upgraded_from"), Term::from(old_version)),
        ])
    }
}

impl Service for CounterV2Instance {
    fn handle_call(&mut self, _request: Term) -> Term {
        self.calls += 1;
        let mut fields = vec![
            (
                Term::atom("reply"),
                Term::from(format!("response from {} on {}", self.name, self.node)),
            ),
            (Term::atom("node"), Term::from(self.node.as_str())),
            (Term::atom("calls"), Term::from(self.calls)),
            (Term::atom("version"), Term::from(2i64)),
        ];
        if let Some(v) = self.upgraded_from {
            fields.push((Term::atom("upgraded_from"), Term::from(v)));
        }
        Term::map(fields)
    }

    fn handoff(&mut self) -> Term {
        let mut fields = vec![(Term::atom("calls"), Term::from(self.calls))];
        if let Some(v) = self.upgraded_from {
            fields.push((Term::atom("upgraded_from"), Term::from(v)));
        }
        Term::map(fields)
    }
}

/// A name a service may have.
fn valid_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `{"error": message}` with `code`.
fn status(code: StatusCode, message: &str) -> Response {
    let mut r = json(&j!({ "error": message }));
    *r.status_mut() = code;
    r
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn service_names_are_short_and_plain() {
        assert!(valid_name("orders-1.eu_west"));
        assert!(!valid_name(""));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(&"x".repeat(101)));
    }
}
