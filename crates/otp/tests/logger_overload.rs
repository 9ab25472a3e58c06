//! Overload protection of the OTP layer's reports (`ember_otp::logger`): a
//! crash storm writes at most the burst limit of reports per window, drops
//! the rest, counts every dropped report and announces the count in a
//! "reports dropped" line. See `docs/semantics.md`, "OTP behaviours /
//! Supervisor", on reports.

use std::collections::HashMap;
use std::sync::{Barrier, Mutex, Once};
use std::time::{Duration, Instant};

use ember_otp::dynamic_supervisor::DynamicSupervisorSpec;
use ember_otp::logger::{self, Limiter};
use ember_otp::supervisor::Restart;
use ember_runtime::{sleep, ExitReason, Runtime, Spawn};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

type Event = HashMap<String, String>;

static EVENTS: Mutex<Vec<Event>> = Mutex::new(Vec::new());

struct Capture;

struct Fields(Event);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields(Event::new());
        fields
            .0
            .insert("target".into(), event.metadata().target().into());
        event.record(&mut fields);
        EVENTS.lock().unwrap().push(fields.0);
    }
}

fn capture() {
    static INIT: Once = Once::new();
    INIT.call_once(|| tracing_subscriber::registry().with(Capture).init());
}

fn events(pred: impl Fn(&Event) -> bool) -> Vec<Event> {
    EVENTS
        .lock()
        .unwrap()
        .iter()
        .filter(|e| pred(e))
        .cloned()
        .collect()
}

/// The `dropped` counts of the "reports dropped" lines of `limiter`.
fn dropped_lines(limiter: &str) -> Vec<u64> {
    events(|e| {
        e.get("target").map(String::as_str) == Some("ember_otp::logger")
            && e.get("limiter").map(String::as_str) == Some(limiter)
    })
    .iter()
    .map(|e| e["dropped"].parse().unwrap())
    .collect()
}

/// Waits (with a deadline) until `done` holds.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn a_crash_storm_writes_the_burst_and_counts_every_dropped_report() {
    const CRASHES: u64 = 2_000;
    const BURST: u32 = 50;
    capture();
    // One window for the whole test: exactly BURST reports are written.
    logger::reports().set_burst_limit(BURST, Duration::from_secs(3600));
    let before = logger::reports().stats();
    let rt = Runtime::builder().schedulers(2).build().unwrap();
    rt.block_on(async move {
        let sup = DynamicSupervisorSpec::worker(|n: u64| async move {
            Ok(Spawn::new()
                .link()
                .spawn(async move { ExitReason::error(format!("storm {n}")) })
                .expect("spawn_link")
                .pid)
        })
        .restart(Restart::Temporary)
        .build()
        .unwrap()
        .start_link_with(ember_otp::gen::StartOptions::new().name("storm_sup"))
        .await
        .unwrap();
        for n in 0..CRASHES {
            sup.start_child(n).await.unwrap();
        }
        wait_until("every crash to be reported or dropped", || {
            let now = logger::reports().stats();
            (now.written + now.dropped) - (before.written + before.dropped) >= CRASHES
        })
        .await;
    });
    let stats = logger::reports().stats();
    let written = stats.written - before.written;
    let dropped = stats.dropped - before.dropped;
    let reports = events(|e| {
        e.get("supervisor").map(String::as_str) == Some("storm_sup")
            && e.get("context").map(String::as_str) == Some("child_terminated")
    });
    println!("storm: {CRASHES} crashes, {written} reports written, {dropped} dropped");
    assert_eq!(written, u64::from(BURST), "the burst is written");
    assert_eq!(
        reports.len() as u64,
        written,
        "every admitted report is written"
    );
    assert_eq!(
        written + dropped,
        CRASHES,
        "every report is written or counted"
    );
    assert!(stats.dropping, "still within the window: dropping");
    assert_eq!(
        logger::reports().flush(),
        dropped,
        "flush announces the count"
    );
    assert_eq!(dropped_lines("reports"), vec![dropped]);
    assert_eq!(logger::reports().flush(), 0, "announced once");
}

#[test]
fn racing_floods_across_windows_account_for_every_report() {
    // Short windows, so threads race over window ends, announcements and
    // the flusher thread.
    static FLOOD: Limiter = Limiter::new("flood", 100, Duration::from_millis(5));
    const THREADS: usize = 4;
    const EACH: u64 = 50_000;
    capture();
    let gate = Barrier::new(THREADS);
    let written: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    gate.wait();
                    (0..EACH).filter(|_| FLOOD.admit()).count() as u64
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let total = THREADS as u64 * EACH;
    // The flusher announces the last window's drops once it ends.
    let deadline = Instant::now() + Duration::from_secs(60);
    while FLOOD.stats().pending > 0 {
        assert!(Instant::now() < deadline, "the flusher never announced");
        std::thread::sleep(Duration::from_millis(1));
    }
    let stats = FLOOD.stats();
    let lines = dropped_lines("flood");
    println!(
        "flood: {total} reports from {THREADS} threads, {written} written, {} dropped, \
         announced in {} lines",
        stats.dropped,
        lines.len()
    );
    assert_eq!(stats.written, written);
    assert_eq!(stats.written + stats.dropped, total);
    assert!(stats.dropped > 0, "the flood went past the burst limit");
    assert_eq!(
        lines.iter().sum::<u64>(),
        stats.dropped,
        "every drop announced"
    );
}
