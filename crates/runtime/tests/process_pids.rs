//! Pids: how they print, that they are never reused, node identity, liveness
//! (docs/semantics.md §1).

mod support;

use std::collections::HashSet;

use ember_runtime::{
    is_alive, make_ref, self_pid, send, spawn, spawn_monitor, try_receive, Handle,
};

use support::{down_of, recv, runtime};

// §1.2, §1.4: a pid prints as <node.number.serial>, node 0 being the local
// node; Debug prints the same.
#[test]
fn pids_print_erlang_style_with_node_zero() {
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let printed = me.to_string();
        assert_eq!(printed, format!("<0.{}.{}>", me.number(), me.serial()));
        assert_eq!(format!("{me:?}"), printed);
        assert_eq!(me.node(), 0);
        assert!(me.is_local());
        let child = spawn(async {});
        assert_ne!(child, me);
        assert!(child.to_string().starts_with("<0."));
    });
}

// §1.3: pids are never reused, even after their processes are gone, so a
// message to an old pid can never reach a newer process.
#[test]
fn pids_are_never_reused_even_after_their_processes_exit() {
    #[derive(Debug)]
    struct Probe;
    #[derive(Debug)]
    struct Done;
    let rt = runtime();
    rt.block_on(async {
        let me = self_pid();
        let mut seen = HashSet::new();
        seen.insert(me);
        let mut old = Vec::new();
        for _ in 0..20 {
            let batch: Vec<_> = (0..100).map(|_| spawn_monitor(async {})).collect();
            for (pid, watch) in batch {
                down_of(watch).await;
                assert!(seen.insert(pid), "{pid} was handed out twice");
                old.push(pid);
            }
        }
        let fresh = spawn(async move {
            let _: Done = recv().await;
            send(me, try_receive::<Probe>().is_none());
        });
        assert!(seen.insert(fresh), "{fresh} reuses an old pid");
        for pid in &old {
            send(*pid, Probe);
        }
        send(fresh, Done);
        assert!(
            recv::<bool>().await,
            "a message to an old pid reached a new process"
        );
    });
}

// §1.5: is_alive is true while a process runs and false once it has exited,
// from inside and from outside the runtime.
#[test]
fn is_alive_is_false_once_a_process_has_exited() {
    let rt = runtime();
    let handle = rt.handle().clone();
    let dead = rt.block_on(async {
        assert!(is_alive(self_pid()));
        let (child, watch) = spawn_monitor(async {});
        down_of(watch).await;
        assert!(!is_alive(child));
        assert!(!Handle::current().is_alive(child));
        child
    });
    assert!(!handle.is_alive(dead));
}

// §1.3: references are unique within a runtime.
#[test]
fn references_are_unique() {
    let rt = runtime();
    rt.block_on(async {
        let refs: HashSet<_> = (0..10_000).map(|_| make_ref()).collect();
        assert_eq!(refs.len(), 10_000);
        let one = make_ref();
        assert!(one.to_string().starts_with("#Ref<0."));
    });
}
