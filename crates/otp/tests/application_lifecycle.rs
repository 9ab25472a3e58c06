//! Applications: a named supervision tree with its environment, started
//! and stopped as a unit, in reverse order.
//!
//! After OTP's application behaviour (`application:start/1`, `stop/1`,
//! `get_env/2`, `which_applications/0`, the `prep_stop/1` and `stop/1`
//! callbacks) and `supervisor_SUITE:faulty_application_shutdown` (a child
//! that fails to start fails the application's start). See
//! `docs/semantics.md`, "OTP behaviours / Application".

mod support;

use std::time::Duration;

use ember_otp::application::{self, Application, ApplicationError, Env};
use ember_otp::gen::StartError;
use ember_otp::supervisor::{ChildSpec, Flags, SupervisorSpec};
use ember_runtime::{receive, self_pid, send, whereis, ExitReason, Pid};
use support::{child, probe, started, Kind, ProbeInit, Stopped};

fn worker(test: Pid, id: &'static str) -> ChildSpec {
    ChildSpec::worker(id, child(test, id, Kind::Reporting))
        .build()
        .unwrap()
}

/// The tree used below: a, a nested supervisor with b1 and b2, then c.
fn tree(test: Pid) -> SupervisorSpec {
    let nested = SupervisorSpec::new(Flags::new(), vec![worker(test, "b1"), worker(test, "b2")])
        .unwrap()
        .child_spec("b")
        .build()
        .unwrap();
    SupervisorSpec::new(
        Flags::new(),
        vec![worker(test, "a"), nested, worker(test, "c")],
    )
    .unwrap()
}

#[test]
fn an_application_starts_its_tree_and_stops_everything_in_reverse_order() {
    support::runtime().block_on(async {
        let test = self_pid();
        let app =
            application::start_tree("shop", Env::new().set("port", 8080u16), move |_| tree(test))
                .await
                .unwrap();
        for id in ["a", "b1", "b2", "c"] {
            started(id).await;
        }
        assert_eq!(application::which_applications(), vec!["shop".into()]);
        assert_eq!(
            application::get_env::<u16>("shop", "port").await,
            Some(8080)
        );
        assert_eq!(application::get_env::<String>("shop", "port").await, None);
        assert_eq!(application::get_env::<u16>("shop", "missing").await, None);
        assert!(app.top_supervisor().await.is_some());

        app.stop().await.unwrap();
        let mut order = Vec::new();
        for _ in 0..4 {
            order.push(support::recv::<Stopped>().await.id);
        }
        assert_eq!(order, ["c", "b2", "b1", "a"]);
        assert!(application::which_applications().is_empty());
        assert_eq!(application::get_env::<u16>("shop", "port").await, None);
        assert_eq!(
            application::stop("shop").await,
            Err(ApplicationError::NotStarted("shop".into()))
        );
    });
}

#[test]
fn an_application_cannot_be_started_twice() {
    support::runtime().block_on(async {
        let empty = |_: &Env| SupervisorSpec::new(Flags::new(), vec![]).unwrap();
        application::start_tree("once", Env::new(), empty)
            .await
            .unwrap();
        assert_eq!(
            application::start_tree("once", Env::new(), empty).await,
            Err(ApplicationError::AlreadyStarted("once".into()))
        );
    });
}

/// supervisor_SUITE:faulty_application_shutdown — a child that fails to
/// start fails the application's start, which leaves nothing running.
#[test]
fn an_application_whose_child_fails_to_start_does_not_start() {
    support::runtime().block_on(async {
        let test = self_pid();
        let result = application::start_tree("faulty", Env::new(), move |_| {
            let broken = ChildSpec::worker("broken", probe(test, "broken", ProbeInit::Fail))
                .build()
                .unwrap();
            SupervisorSpec::new(Flags::new(), vec![worker(test, "ok"), broken]).unwrap()
        })
        .await;
        match result {
            Err(ApplicationError::Start(StartError::Failed(ExitReason::ShutdownWith(info)))) => {
                assert!(info.contains("failed_to_start_child,broken"), "{info}")
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(support::recv::<Stopped>().await.id, "ok");
        assert!(application::which_applications().is_empty());
    });
}

/// What the callback module below reports.
#[derive(Debug, PartialEq, Eq)]
enum Callback {
    PrepStop,
    Stop,
}

struct Shop {
    test: Pid,
}

impl Application for Shop {
    async fn start(&self, env: &Env) -> Result<Pid, StartError> {
        let name: String = env.get("name").unwrap();
        assert_eq!(name, "shop");
        let test = self.test;
        SupervisorSpec::new(Flags::new(), vec![worker(test, "a"), worker(test, "b")])
            .unwrap()
            .start_link()
            .await
            .map(Pid::from)
    }

    async fn prep_stop(&self, _env: &Env) {
        send(self.test, Callback::PrepStop);
    }

    async fn stop(&self, _env: &Env) {
        send(self.test, Callback::Stop);
    }
}

/// OTP's order on stop: prep_stop, the tree, then stop.
#[test]
fn stop_calls_prep_stop_then_stops_the_tree_then_calls_stop() {
    support::runtime().block_on(async {
        let test = self_pid();
        let env = Env::new().set("name", "shop".to_string());
        let app = application::start("shop", Shop { test }, env)
            .await
            .unwrap();
        started("a").await;
        started("b").await;
        app.stop().await.unwrap();
        // Messages from one sender arrive in order; the children are other
        // senders, so check each step against the one before it.
        assert_eq!(support::recv::<Callback>().await, Callback::PrepStop);
        assert_eq!(support::recv::<Stopped>().await.id, "b");
        assert_eq!(support::recv::<Stopped>().await.id, "a");
        assert_eq!(support::recv::<Callback>().await, Callback::Stop);
    });
}

/// A top supervisor that gives up takes its application with it.
#[test]
fn an_application_stops_when_its_top_supervisor_gives_up() {
    support::runtime().block_on(async {
        let test = self_pid();
        let app = application::start_tree("fragile", Env::new(), move |_| {
            let crashing = ChildSpec::worker("crashing", probe(test, "crashing", ProbeInit::Ok))
                .build()
                .unwrap();
            SupervisorSpec::new(Flags::new().intensity(0), vec![crashing]).unwrap()
        })
        .await
        .unwrap();
        let child = started("crashing").await;
        let master = whereis("application:fragile").unwrap();
        let mref = ember_runtime::monitor(master);
        ember_runtime::exit(child, ExitReason::Kill);
        let down = receive::<ember_runtime::Down>()
            .matching(move |d| d.monitor == mref)
            .timeout(support::WAIT)
            .await
            .expect("a Down within the wait limit");
        assert_eq!(down.reason, ExitReason::Shutdown);
        assert!(application::which_applications().is_empty());
        assert_eq!(
            app.stop().await,
            Err(ApplicationError::NotStarted("fragile".into()))
        );
    });
}

#[test]
fn set_env_changes_a_running_application_environment() {
    support::runtime().block_on(async {
        let empty = |_: &Env| SupervisorSpec::new(Flags::new(), vec![]).unwrap();
        application::start_tree("config", Env::new(), empty)
            .await
            .unwrap();
        application::set_env("config", "timeout", Duration::from_secs(3))
            .await
            .unwrap();
        assert_eq!(
            application::get_env::<Duration>("config", "timeout").await,
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            application::set_env("nope", "k", 1u8).await,
            Err(ApplicationError::NotStarted("nope".into()))
        );
    });
}
