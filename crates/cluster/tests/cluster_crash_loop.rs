//! A service whose instances keep crashing is restarted, then left alone
//! for a while once it crashed too often.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_cluster::{ClusterConfig, Kinds, Service, ServiceKind};
use ember_term::Term;
use ember_testkit::{free_port, random_cookie, unique};
use support::{eventually, BareNode};

/// Instances that panic on their first call; counts the starts.
struct Fragile(Arc<AtomicUsize>);

struct Instance;

impl ServiceKind for Fragile {
    fn init(&self, _: &str, _: &str, _: &Term, _: Option<Term>) -> Box<dyn Service> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::new(Instance)
    }
}

impl Service for Instance {
    fn handle_call(&mut self, _: Term) -> Term {
        panic!("fragile on purpose")
    }
}

#[test]
fn a_crash_looping_service_is_held_back() {
    let starts = Arc::new(AtomicUsize::new(0));
    let mut kinds = Kinds::new();
    kinds.register("fragile", Fragile(starts.clone()));
    // Held back until the first crash is 10 s old: the five crashes take
    // about 2 s (a restart per 500 ms rebalance), which leaves about 8 s of
    // hold for the 2 s check below, and a busy machine room to take five
    // times as long over the crashes.
    const PERIOD: Duration = Duration::from_secs(10);
    let a = BareNode::start(&unique("a"), &random_cookie(), free_port())
        .start_cluster(ClusterConfig::new(kinds).restart_intensity(5, PERIOD));
    let cluster = a.cluster.clone();
    a.rt.block_on(async move {
        cluster
            .start_service("f", "fragile", Term::nil())
            .await
            .unwrap();
    });
    // Crash it five times, each time once it runs again.
    let mut first_crash = None;
    for n in 1..=5 {
        eventually(&format!("start {n}"), || {
            starts.load(Ordering::SeqCst) == n && a.cluster.whereis("f").is_some()
        });
        let cluster = a.cluster.clone();
        let r = a
            .rt
            .block_on(async move { cluster.call("f", Term::nil(), Duration::from_secs(5)).await });
        assert!(r.is_err(), "{r:?}");
        first_crash.get_or_insert_with(Instant::now);
    }
    // Held back: no sixth start for 2 s, or until half a second before the
    // hold can end (the first crash is recorded as its call fails) if the
    // crashes took long.
    let hold_ends_after = first_crash.unwrap() + PERIOD - Duration::from_millis(500);
    let check_until = (Instant::now() + Duration::from_secs(2)).min(hold_ends_after);
    println!(
        "held back: checked for {:?}",
        check_until.saturating_duration_since(Instant::now())
    );
    while Instant::now() < check_until {
        assert_eq!(
            starts.load(Ordering::SeqCst),
            5,
            "restarted while held back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(a.cluster.whereis("f").is_none());
    // Then it runs again.
    eventually("started again after the hold", || {
        starts.load(Ordering::SeqCst) == 6
    });
}
