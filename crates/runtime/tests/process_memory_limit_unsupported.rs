//! Memory limits without a counting allocator: refused with a clear error,
//! never silently ignored (docs/semantics.md §9.5).

mod support;

use ember_runtime::{set_memory_limit, Spawn, SpawnError};

use support::{recv, runtime};

#[test]
fn a_memory_limit_without_the_counting_allocator_is_refused() {
    runtime().block_on(async {
        let refused = Spawn::new().memory_limit(1 << 20).spawn(async {});
        let Err(SpawnError::MemoryLimit(e)) = refused else {
            panic!("spawned with a limit nobody enforces: {refused:?}");
        };
        assert!(e.to_string().contains("CountingAlloc"), "{e}");
        let test = ember_runtime::self_pid();
        ember_runtime::spawn(async move {
            let set = set_memory_limit(Some(1 << 20)).is_err();
            let removed = set_memory_limit(None) == Ok(None);
            ember_runtime::send(test, (set, removed));
        });
        assert_eq!(recv::<(bool, bool)>().await, (true, true));
    });
}
