//! A loom model of the port mapper takeover (`epmd::Registrar`): when the
//! node holding the embedded mapper dies, every survivor's registration
//! closes and each runs the same attach loop: register; if nothing
//! listens on the port, bind it (the kernel lets exactly one bind win:
//! here a compare-and-swap on the port's owner), start listening, and
//! register; if the bind was lost, or the winner is not listening yet,
//! try again (modelled as waiting until the winner listens; preemption
//! bound 3). Checked in every interleaving: exactly one survivor holds
//! the port, and every survivor ends registered with that survivor's
//! mapper exactly once.
//!
//! ```text
//! cargo test -p ember-dist --lib --release --features loom-models \
//!     -- loom_mapper --test-threads=1
//! ```

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

/// The port mapper port after its holder died: free until bound.
struct Port {
    /// 0: free; else the survivor (1-based) whose bind won.
    owner: AtomicUsize,
    /// The owner's listener accepts (set after the bind, as `listen`).
    listening: Mutex<bool>,
    /// Signalled when it does.
    up: Condvar,
    /// The owner's mapper's table: who registered.
    table: Mutex<Vec<usize>>,
}

impl Port {
    /// `register`: refused unless a mapper listens.
    fn register(&self, me: usize) -> bool {
        if !*self.listening.lock().unwrap() {
            return false;
        }
        self.table.lock().unwrap().push(me);
        true
    }

    /// `EmbeddedEpmd::start`: bind, then listen; fails if bound.
    fn bind(&self, me: usize) -> bool {
        if self
            .owner
            .compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        *self.listening.lock().unwrap() = true;
        self.up.notify_all();
        true
    }

    /// `Registrant::attach`, retried as `keep` retries it: a survivor that
    /// lost the bind retries (after its back-off) until the winner
    /// listens, modelled as a wait for that rather than a spin.
    fn attach(&self, me: usize) -> bool {
        if self.register(me) {
            return false;
        }
        let held = self.bind(me);
        if !held {
            let mut listening = self.listening.lock().unwrap();
            while !*listening {
                listening = self.up.wait(listening).unwrap();
            }
        }
        assert!(self.register(me), "a mapper listens by now");
        held
    }
}

#[test]
fn one_survivor_takes_the_port_and_every_survivor_registers_with_it() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let port = Arc::new(Port {
            owner: AtomicUsize::new(0),
            listening: Mutex::new(false),
            up: Condvar::new(),
            table: Mutex::new(Vec::new()),
        });
        let survivors: Vec<_> = (1..=3)
            .map(|me| {
                let port = port.clone();
                thread::spawn(move || port.attach(me))
            })
            .collect();
        let held: Vec<bool> = survivors.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(held.iter().filter(|h| **h).count(), 1, "{held:?}");
        let owner = port.owner.load(Ordering::Acquire);
        assert!(held[owner - 1], "the owner is the one that says so");
        let mut table = port.table.lock().unwrap().clone();
        table.sort_unstable();
        assert_eq!(table, vec![1, 2, 3], "each registered once");
    });
}
