//! Supervisor reports: like SASL's supervisor reports, every child
//! termination, start error, shutdown error and intensity escalation is
//! reported through `tracing` (target `ember_otp::supervisor`, level
//! error), naming the supervisor, the child, the reason and the restart
//! count. See `docs/semantics.md`, "OTP behaviours / Supervisor".

mod support;

use std::collections::HashMap;
use std::sync::{Mutex, Once};
use std::time::Duration;

use ember_otp::gen::StartOptions;
use ember_otp::supervisor::{ChildSpec, Flags, Shutdown, SupervisorSpec};
use ember_runtime::{self_pid, trap_exit, ExitReason};
use support::{child, child_failing_restarts, end_child, exit_of, started, How, Kind};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

type Report = HashMap<String, String>;

static REPORTS: Mutex<Vec<Report>> = Mutex::new(Vec::new());

struct Capture;

struct Fields(Report);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "ember_otp::supervisor" {
            let mut fields = Fields(Report::new());
            event.record(&mut fields);
            REPORTS.lock().unwrap().push(fields.0);
        }
    }
}

fn capture() {
    static INIT: Once = Once::new();
    INIT.call_once(|| tracing_subscriber::registry().with(Capture).init());
}

/// The reports of one supervisor, by context.
fn reports(supervisor: &str, context: &str) -> Vec<Report> {
    REPORTS
        .lock()
        .unwrap()
        .iter()
        .filter(|r| {
            r.get("supervisor").map(String::as_str) == Some(supervisor)
                && r.get("context").map(String::as_str) == Some(context)
        })
        .cloned()
        .collect()
}

#[test]
fn a_crashed_child_is_reported_with_its_reason_and_restart_count() {
    capture();
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        let spec = ChildSpec::worker("worker", child(test, "worker", Kind::Plain))
            .build()
            .unwrap();
        let _sup = SupervisorSpec::new(Flags::new().intensity(5), vec![spec])
            .unwrap()
            .start_link_with(StartOptions::new().name("reported_sup"))
            .await
            .unwrap();
        let first = started("worker").await;
        end_child(first, How::Abnormal).await;
        let second = started("worker").await;
        end_child(second, How::Kill).await;
        started("worker").await;

        let terminated = reports("reported_sup", "child_terminated");
        assert_eq!(terminated.len(), 2, "{terminated:?}");
        assert_eq!(terminated[0]["child_id"], "worker");
        assert_eq!(terminated[0]["pid"], first.to_string());
        assert!(terminated[0]["reason"].contains("died"));
        assert_eq!(terminated[0]["restart_count"], "0");
        assert_eq!(terminated[1]["reason"], "killed");
        assert_eq!(terminated[1]["restart_count"], "1");
    });
}

#[test]
fn escalation_and_failed_restarts_are_reported() {
    capture();
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        let spec = ChildSpec::worker("fragile", child_failing_restarts(test, "fragile"))
            .build()
            .unwrap();
        let sup = SupervisorSpec::new(Flags::new().intensity(2), vec![spec])
            .unwrap()
            .start_link_with(StartOptions::new().name("escalating_sup"))
            .await
            .unwrap();
        let pid = sup.pid().unwrap();
        end_child(started("fragile").await, How::Abnormal).await;
        assert_eq!(exit_of(pid).await, ExitReason::Shutdown);

        assert_eq!(reports("escalating_sup", "child_terminated").len(), 1);
        let start_errors = reports("escalating_sup", "start_error");
        assert_eq!(start_errors.len(), 2, "{start_errors:?}");
        assert!(start_errors[0]["reason"].contains("restart refused"));
        let escalation = reports("escalating_sup", "reached_max_restart_intensity");
        assert_eq!(escalation.len(), 1);
        assert_eq!(escalation[0]["child_id"], "fragile");
    });
}

#[test]
fn a_child_killed_after_its_shutdown_timeout_is_reported() {
    capture();
    support::runtime().block_on(async {
        trap_exit(true);
        let test = self_pid();
        let spec = ChildSpec::worker("stubborn", child(test, "stubborn", Kind::Stubborn))
            .shutdown(Shutdown::Timeout(Duration::from_millis(20)))
            .build()
            .unwrap();
        let sup = SupervisorSpec::new(Flags::new(), vec![spec])
            .unwrap()
            .start_link_with(StartOptions::new().name("killing_sup"))
            .await
            .unwrap();
        started("stubborn").await;
        sup.terminate_child("stubborn").await.unwrap();
        let errors = reports("killing_sup", "shutdown_error");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0]["reason"], "killed");
    });
}
