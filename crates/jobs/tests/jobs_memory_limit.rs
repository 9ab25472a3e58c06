//! Memory limits of jobs (docs/semantics.md §9.5): an attempt over its
//! kind's (or its own) limit is killed and fails with a `memory_limit`
//! error, retried like any failure; other jobs and the next attempt run.

// The limits need the counting allocator.
#[global_allocator]
static ALLOC: ember_runtime::alloc::CountingAlloc = ember_runtime::alloc::CountingAlloc;

use std::hint::black_box;
use std::time::Duration;

use ember_jobs::{
    Backoff, EnqueueOptions, JobContext, JobError, JobState, Jobs, JobsConfig, KindOptions,
    SqliteStore,
};
use ember_runtime::{yield_point, Runtime};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(20);
const MIB: u64 = 1 << 20;

/// Allocates `mib` MiB, awaiting between blocks, and holds it to the end.
async fn hog(mib: u64) -> Result<Value, JobError> {
    let mut held = Vec::new();
    for _ in 0..mib {
        held.push(black_box(vec![1u8; MIB as usize]));
        yield_point().await;
    }
    black_box(held);
    Ok(json!(mib))
}

#[test]
fn a_job_over_its_memory_limit_fails_with_memory_limit_and_retries() {
    let rt = Runtime::builder().schedulers(2).build().unwrap();
    rt.block_on(async {
        let s = SqliteStore::in_memory().unwrap();
        let jobs = Jobs::builder(s, JobsConfig::default())
            // The first attempt allocates 16 MiB, the next ones 1 MiB.
            .kind_fn(
                "leaky",
                KindOptions {
                    memory_limit: Some(4 * MIB),
                    backoff: Backoff {
                        base_ms: 20,
                        max_ms: 200,
                    },
                    ..KindOptions::default()
                },
                |ctx: JobContext, (): ()| async move {
                    hog(if ctx.attempt() == 1 { 16 } else { 1 }).await
                },
            )
            .kind_fn("big", KindOptions::default(), |_: JobContext, mib: u64| {
                hog(mib)
            })
            .start()
            .await
            .unwrap();
        let leaky = jobs
            .enqueue_json("leaky", json!(null), EnqueueOptions::default())
            .await
            .unwrap();
        // No limit: 16 MiB is fine; with its own limit it always fails.
        let free = jobs
            .enqueue_json("big", json!(16), EnqueueOptions::default())
            .await
            .unwrap();
        let limited = jobs
            .enqueue_json(
                "big",
                json!(16),
                EnqueueOptions {
                    memory_limit: Some(2 * MIB),
                    max_attempts: Some(2),
                    ..Default::default()
                },
            )
            .await
            .unwrap();

        let leaky = jobs.wait_final(leaky, DEADLINE).await.expect("final");
        assert_eq!((leaky.state, leaky.attempt), (JobState::Succeeded, 2));
        assert_eq!(leaky.memory_limit, Some(4 * MIB));
        let errors: Vec<String> = jobs
            .events(leaky.id, 0)
            .unwrap()
            .into_iter()
            .filter_map(|e| e.data.get("error")?.as_str().map(str::to_owned))
            .collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("memory_limit: used ")
                && errors[0].ends_with(&format!(" bytes over the limit of {}", 4 * MIB)),
            "{errors:?}"
        );

        let free = jobs.wait_final(free, DEADLINE).await.expect("final");
        assert_eq!(free.state, JobState::Succeeded);
        assert_eq!(free.memory_limit, None);

        let limited = jobs.wait_final(limited, DEADLINE).await.expect("final");
        assert_eq!((limited.state, limited.attempt), (JobState::Failed, 2));
        assert_eq!(limited.memory_limit, Some(2 * MIB));
        let error = limited.error.unwrap_or_default();
        let used: u64 = error
            .strip_prefix("memory_limit: used ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not a memory_limit error: {error:?}"));
        assert!(used > 2 * MIB, "{error}");
        assert!(error.ends_with(&format!("over the limit of {}", 2 * MIB)));
    });
}
