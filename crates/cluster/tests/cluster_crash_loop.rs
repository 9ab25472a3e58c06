//! A service whose instances keep crashing is restarted, then left alone
//! for a while once it crashed too often.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ember_cluster::{Kinds, Service, ServiceKind};
use ember_term::Term;
use ember_testkit::{free_port, random_cookie, unique};
use support::{eventually, TestNode};

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
    let a = TestNode::start_with(&unique("a"), &random_cookie(), free_port(), &[], kinds);
    let cluster = a.cluster.clone();
    a.rt.block_on(async move {
        cluster
            .start_service("f", "fragile", Term::nil())
            .await
            .unwrap();
    });
    // Crash it five times, each time once it runs again.
    for n in 1..=5 {
        eventually(&format!("start {n}"), || {
            starts.load(Ordering::SeqCst) == n && a.cluster.whereis("f").is_some()
        });
        let cluster = a.cluster.clone();
        let r = a
            .rt
            .block_on(async move { cluster.call("f", Term::nil(), Duration::from_secs(5)).await });
        assert!(r.is_err(), "{r:?}");
    }
    // Held back: no sixth start for a while (the hold lasts 10 s).
    let waited = std::time::Instant::now();
    while waited.elapsed() < Duration::from_secs(2) {
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
