//! Store scenarios run on both stores (`store_fencing.rs` on SQLite,
//! `store_postgres.rs` on PostgreSQL): they keep the same rules.

#![allow(dead_code)]

use std::time::Duration;

use ember_jobs::{
    now_ms, Backoff, CancelOutcome, ClaimRequest, Claimed, Claimer, Completion, JobContext,
    JobState, Jobs, JobsConfig, KindOptions, NewJob, Progress, Retry, Store, StoreError,
};
use ember_runtime::Runtime;
use serde_json::json;

/// How long a scenario waits for an event before it fails.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

/// Claims up to `limit` due jobs of queue `default` at `now` for owner
/// `a#1` on node `a@h`, with a minute's lease.
fn claim_as_a(s: &dyn Store, now: ember_jobs::Millis, limit: usize) -> Vec<Claimed> {
    s.claim(
        "default",
        "a@h",
        "a#1",
        &Claimer::always(),
        now,
        now + 60_000,
        limit,
    )
    .unwrap()
}

/// A job of `kind` on queue `default`, due now, 3 attempts.
pub(crate) fn new_job(kind: &str) -> NewJob {
    NewJob {
        kind: kind.into(),
        queue: "default".into(),
        args: json!(null),
        priority: 0,
        max_attempts: 3,
        timeout_ms: None,
        memory_limit: None,
        unique_key: None,
        run_at: now_ms(),
        backoff: Backoff::default(),
    }
}

/// A claim taken back after its lease expired cannot write anything; the
/// new claim can, once. Run on both stores: they keep the same rules.
pub(crate) fn fencing_rules(s: &dyn Store) {
    let id = s.insert(&new_job("k")).unwrap().id();
    let t0 = now_ms();
    let a = s
        .claim(
            "default",
            "a@h",
            "a#1",
            &Claimer::always(),
            t0,
            t0 + 1_000,
            10,
        )
        .unwrap();
    assert_eq!(a.len(), 1);
    let a = &a[0];
    assert_eq!((a.id, a.attempt), (id, 1));
    assert!(s
        .claim(
            "default",
            "b@h",
            "b#1",
            &Claimer::always(),
            t0,
            t0 + 1_000,
            10
        )
        .unwrap()
        .is_empty());
    // Before expiry, b's recovery leaves a's lease alone.
    assert!(s.recover("b@h", "b#1", t0 + 500).unwrap().is_empty());
    let ev = s.recover("b@h", "b#1", t0 + 2_000).unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].state(), Some(JobState::Retrying));
    let b = s
        .claim(
            "default",
            "b@h",
            "b#1",
            &Claimer::always(),
            t0 + 2_000,
            t0 + 3_000,
            10,
        )
        .unwrap();
    assert_eq!(b.len(), 1);
    assert!(b[0].token > a.token);
    assert_eq!(b[0].attempt, 2);
    let p = Progress {
        pct: 50.0,
        message: "late".into(),
        data: None,
    };
    assert!(matches!(
        s.progress(id, a.token, &p),
        Err(StoreError::Fenced)
    ));
    assert!(matches!(
        s.succeed(id, a.token, &json!(1)),
        Err(StoreError::Fenced)
    ));
    assert!(matches!(
        s.fail(id, a.token, "x", Retry::Never),
        Err(StoreError::Fenced)
    ));
    assert!(matches!(
        s.finish_cancelled(id, a.token),
        Err(StoreError::Fenced)
    ));
    // a's heartbeat says the lease is gone; b's holds.
    assert_eq!(
        s.heartbeat("a#1", &[(id, a.token)], t0 + 9_000).unwrap(),
        vec![(id, false, false)]
    );
    assert_eq!(
        s.heartbeat("b#1", &[(id, b[0].token)], t0 + 9_000).unwrap(),
        vec![(id, true, false)]
    );
    s.progress(id, b[0].token, &p).unwrap();
    s.succeed(id, b[0].token, &json!("b")).unwrap();
    assert!(matches!(
        s.succeed(id, b[0].token, &json!("again")),
        Err(StoreError::Fenced)
    ));
    let rec = s.get(id).unwrap().unwrap();
    assert_eq!(rec.state, JobState::Succeeded);
    assert_eq!(rec.result, Some(json!("b")));
    assert_eq!(rec.node.as_deref(), Some("b@h"));
    assert_eq!(rec.completions, 1);
    assert_eq!(rec.progress_message.as_deref(), Some("late"));
    let states: Vec<_> = s
        .events(id, 0)
        .unwrap()
        .iter()
        .filter_map(|e| e.state())
        .collect();
    assert_eq!(
        states,
        [
            JobState::Queued,
            JobState::Running,
            JobState::Retrying,
            JobState::Running,
            JobState::Succeeded
        ]
    );
    // A running job cancelled while its node is gone ends cancelled.
    let c = s.insert(&new_job("k")).unwrap().id();
    let t1 = now_ms();
    assert_eq!(
        s.claim(
            "default",
            "a@h",
            "a#1",
            &Claimer::always(),
            t1,
            t1 + 1_000,
            1
        )
        .unwrap()
        .len(),
        1
    );
    assert!(matches!(
        s.cancel(c).unwrap(),
        CancelOutcome::Requested { .. }
    ));
    s.recover("b@h", "b#1", t1 + 2_000).unwrap();
    assert_eq!(s.get(c).unwrap().unwrap().state, JobState::Cancelled);
    // Uniqueness: a second enqueue with a pending key returns the first id.
    let mut u = new_job("k");
    u.unique_key = Some("only-one".into());
    let first = s.insert(&u).unwrap().id();
    assert_eq!(s.insert(&u).unwrap().id(), first);
    assert!(
        s.list(Some(JobState::Queued), 10, None, false)
            .unwrap()
            .len()
            == 1
    );
}

/// A node restarted under the same name takes back at once what its
/// earlier life was running (a long lease, never expired) and runs it
/// again: the second attempt succeeds, once. `open` opens the store (twice:
/// the earlier life's, dropped as if it crashed, then the new one's).
pub(crate) fn a_restarted_node_takes_back<S: Store>(open: impl Fn() -> S + Send + 'static) {
    let id;
    {
        let s = open();
        id = s.insert(&new_job("k")).unwrap().id();
        let t0 = now_ms();
        s.claim(
            "default",
            "n@h",
            "n#old",
            &Claimer::always(),
            t0,
            t0 + 3_600_000,
            1,
        )
        .unwrap();
    }
    Runtime::builder()
        .schedulers(2)
        .build()
        .unwrap()
        .block_on(async move {
            let config = JobsConfig {
                node: "n@h".into(),
                ..JobsConfig::default()
            };
            let jobs = Jobs::builder(open(), config)
                .kind_fn(
                    "k",
                    KindOptions::default(),
                    |ctx: JobContext, (): ()| async move { Ok(json!(ctx.attempt())) },
                )
                .start()
                .await
                .unwrap();
            let rec = jobs
                .wait_final(id, DEADLINE)
                .await
                .expect("taken back and run");
            assert_eq!(rec.state, JobState::Succeeded);
            assert_eq!(rec.result, Some(json!(2)));
            assert_eq!(rec.completions, 1);
        });
}

/// Many writes sent at once share group commits (both stores' writers
/// take every write waiting): each caller still gets its own outcome. A
/// fenced success and a success of a missing job are refused alone while
/// the others commit, and of two successes of one job with its token one
/// commits and the other is refused (in either order: writes sent at once
/// may commit in two batches); enqueues of one unique
/// key get one id. Every write is queued before any is awaited.
pub(crate) fn group_commit_answers_each_write_alone(s: &dyn Store) {
    const N: usize = 40;
    for _ in 0..N {
        s.insert(&new_job("g")).unwrap();
    }
    let t = now_ms();
    let claimed = claim_as_a(s, t, N);
    assert_eq!(claimed.len(), N);
    let mut succeeds = Vec::new();
    for (i, c) in claimed.iter().enumerate() {
        // Odd jobs: a stale token (the claim before this one).
        let good = i % 2 == 0;
        let token = if good { c.token } else { c.token - 1 };
        succeeds.push((c.id, good, s.succeed_async(c.id, token, json!(i))));
    }
    let again = s.succeed_async(claimed[0].id, claimed[0].token, json!("again"));
    let missing = s.succeed_async(1 << 40, 1, json!(null));
    let inserts: Vec<_> = (0..N)
        .map(|i| {
            s.insert_async(NewJob {
                unique_key: (i % 2 == 0).then(|| "one".to_owned()),
                ..new_job("g")
            })
        })
        .collect();
    let (ids, first_won) = Runtime::new().unwrap().block_on(async move {
        // The first job's two successes with its good token: one commits,
        // the other is fenced. Which one is up to the store: PostgreSQL's
        // two writers may take them into two batches and commit the later
        // one first (seen once in a CI run).
        let mut first_won = true;
        for (i, (id, good, f)) in succeeds.into_iter().enumerate() {
            match f.await {
                Ok(ev) if good => {
                    assert_eq!((ev.job, ev.state()), (id, Some(JobState::Succeeded)))
                }
                Err(StoreError::Fenced) if i == 0 => first_won = false,
                Err(StoreError::Fenced) if !good => {}
                other => panic!("job {id} (good token: {good}): {other:?}"),
            }
        }
        match again.await {
            Err(StoreError::Fenced) => {
                assert!(first_won, "both successes of the first job were refused")
            }
            Ok(ev) => {
                assert!(!first_won, "both successes of the first job committed");
                assert_eq!(ev.state(), Some(JobState::Succeeded));
            }
            other => panic!("the first job's second success: {other:?}"),
        }
        assert!(matches!(missing.await, Err(StoreError::NotFound)));
        let mut ids = Vec::new();
        for f in inserts {
            ids.push(f.await.unwrap().id());
        }
        (ids, first_won)
    });
    let mut keyed: Vec<_> = ids.iter().step_by(2).copied().collect();
    keyed.dedup();
    assert_eq!(keyed.len(), 1, "one job for the unique key: {keyed:?}");
    let mut all = ids.clone();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), N / 2 + 1, "every other enqueue made its own job");
    for (i, c) in claimed.iter().enumerate() {
        let r = s.get(c.id).unwrap().unwrap();
        if i % 2 == 0 {
            let result = if i == 0 && !first_won {
                json!("again")
            } else {
                json!(i)
            };
            assert_eq!(
                (r.state, r.completions, r.result),
                (JobState::Succeeded, 1, Some(result))
            );
        } else {
            assert_eq!((r.state, r.completions), (JobState::Running, 0));
        }
    }
    let states: Vec<_> = s
        .events(claimed[0].id, 0)
        .unwrap()
        .iter()
        .filter_map(|e| e.state())
        .collect();
    assert_eq!(
        states,
        [JobState::Queued, JobState::Running, JobState::Succeeded]
    );
}

/// A dispatcher's turn ([`Store::complete_and_claim`]): each success is
/// checked against its own token (a stale one and one of a missing job are
/// refused alone, the good one is recorded once), and the claim takes the
/// due jobs in priority order, as `claim` does; a dead claimer claims
/// nothing, but its jobs' successes are still recorded.
pub(crate) fn complete_and_claim_rules(s: &dyn Store) {
    let first: Vec<_> = (0..2)
        .map(|_| s.insert(&new_job("t")).unwrap().id())
        .collect();
    let t = now_ms();
    let running = claim_as_a(s, t, 2);
    assert_eq!(
        running.iter().map(|c| c.id).collect::<Vec<_>>(),
        first,
        "claimed in id order"
    );
    let plain = s.insert(&new_job("t")).unwrap().id();
    let urgent = s
        .insert(&NewJob {
            priority: -5,
            ..new_job("t")
        })
        .unwrap()
        .id();
    let later = s.insert(&new_job("t")).unwrap().id();
    let request = |claimer: Claimer, limit| ClaimRequest {
        queue: "default".into(),
        node: "a@h".into(),
        owner: "a#1".into(),
        claimer,
        now: now_ms(),
        lease_until: now_ms() + 60_000,
        limit,
    };
    let (good, stale) = (&running[0], &running[1]);
    let done = vec![
        Completion {
            id: good.id,
            token: good.token,
            result: json!("good"),
        },
        Completion {
            id: stale.id,
            token: stale.token - 1,
            result: json!("stale"),
        },
        Completion {
            id: 1 << 40,
            token: 1,
            result: json!(null),
        },
    ];
    let turn = s.complete_and_claim(done, request(Claimer::always(), 2));
    let dead = Claimer::new(|| false);
    let rt = Runtime::new().unwrap();
    let turn = rt.block_on(turn);
    assert_eq!(turn.completed.len(), 3);
    match &turn.completed[0] {
        Ok(ev) => assert_eq!((ev.job, ev.state()), (good.id, Some(JobState::Succeeded))),
        other => panic!("the good success: {other:?}"),
    }
    assert!(matches!(turn.completed[1], Err(StoreError::Fenced)));
    assert!(matches!(turn.completed[2], Err(StoreError::NotFound)));
    let claimed = turn.claimed.expect("the claim");
    assert_eq!(
        claimed.iter().map(|c| c.id).collect::<Vec<_>>(),
        [urgent, plain],
        "the lowest priority first, then the lowest id"
    );
    for c in &claimed {
        assert_eq!((c.attempt, c.event.state()), (1, Some(JobState::Running)));
        let r = s.get(c.id).unwrap().unwrap();
        assert_eq!(
            (r.state, r.node.as_deref()),
            (JobState::Running, Some("a@h"))
        );
    }
    let r = s.get(good.id).unwrap().unwrap();
    assert_eq!(
        (r.state, r.completions, r.result),
        (JobState::Succeeded, 1, Some(json!("good")))
    );
    assert_eq!(s.get(stale.id).unwrap().unwrap().state, JobState::Running);
    let states: Vec<_> = s
        .events(good.id, 0)
        .unwrap()
        .iter()
        .filter_map(|e| e.state())
        .collect();
    assert_eq!(
        states,
        [JobState::Queued, JobState::Running, JobState::Succeeded]
    );
    // A dead claimer: its successes are recorded, nothing is claimed.
    let done = vec![Completion {
        id: stale.id,
        token: stale.token,
        result: json!("late but good"),
    }];
    let turn = rt.block_on(s.complete_and_claim(done, request(dead, 5)));
    assert!(matches!(&turn.completed[..], [Ok(_)]), "{turn:?}");
    assert!(turn.claimed.unwrap().is_empty());
    assert_eq!(s.get(stale.id).unwrap().unwrap().completions, 1);
    assert_eq!(s.get(later).unwrap().unwrap().state, JobState::Queued);
    // Successes alone (nothing to claim) are recorded too.
    let c = &claimed[0];
    let done = vec![Completion {
        id: c.id,
        token: c.token,
        result: json!(1),
    }];
    let turn = rt.block_on(s.complete_and_claim(done, request(Claimer::always(), 0)));
    assert!(matches!(&turn.completed[..], [Ok(_)]), "{turn:?}");
    assert!(turn.claimed.unwrap().is_empty());
    assert_eq!(s.get(c.id).unwrap().unwrap().state, JobState::Succeeded);
    assert_eq!(s.get(later).unwrap().unwrap().state, JobState::Queued);
}
