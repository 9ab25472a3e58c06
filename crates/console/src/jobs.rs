//! The jobs HTTP API and the demo job kinds, an exact contract that external
//! tests rely on.
//!
//! | request | answer |
//! |---|---|
//! | `POST /api/jobs` with `{"kind", "args", "queue"?, "priority"?, "max_attempts"?, "timeout_ms"?, "memory_limit"?, "unique_key"?, "run_at"?}` | `202 {"id"}` and `Location: /api/jobs/ID`; `400` with a message for an unknown kind, bad args or a bad field |
//! | `GET /api/jobs/ID` | `{"id", "kind", "state", "attempt", "progress": {"pct", "message"}, "result", "error", "node"}` (and `queue`, `priority`, `max_attempts`, `memory_limit`, `run_at`, `args`); `404` if there is no such job |
//! | `GET /api/jobs?state=S&limit=N&after=ID` | a JSON array of such objects in id order, ids above `after`, at most `limit` (default 100, at most 1000) |
//! | `GET /api/jobs/ID/events` | server-sent events: every stored state change (`event: state`) and progress report (`event: progress`) of the job, `id:` its sequence number; replays from `Last-Event-ID` (or `?after=`), then follows live, and ends after a final state |
//! | `DELETE /api/jobs/ID` | `202 {"id", "state"}`: a waiting job is cancelled, a running one's process is killed (within a second); `409` if it had finished, `404` if unknown |
//!
//! Also, for the console's Jobs page: `GET /api/jobs?order=desc` lists the
//! newest first (`after` then bounds from above); `GET /api/jobs/counts`
//! answers `{"counts": {state: n}, "kinds": [...], "node"}`; `POST
//! /api/jobs/ID/retry` runs a `failed` or `cancelled` job again (`202`;
//! `409` in another state, `404` if unknown).
//!
//! Recurring jobs: `GET /api/cron` answers `{"entries": [...], "node"}`,
//! one object per cron entry registered on this node, by name: `{"name",
//! "expression", "kind", "args", "queue", "next_run", "last_slot",
//! "last_job"}`. `next_run` is the entry's next slot after now, `last_slot`
//! the last slot any node sharing the store fired (both in ms since the
//! Unix epoch, `null` if none), `last_job` the id of the job that slot
//! made; `queue` is `null` when the kind's applies. Each job an entry makes
//! has the unique key `cron:NAME:SLOT`. `503` if the store fails.
//!
//! `state` is one of `scheduled`, `queued`, `running`, `retrying`,
//! `succeeded`, `failed`, `cancelled`. `priority`: lower runs first
//! (default 0). `run_at`: milliseconds since the Unix epoch (a number below
//! 10¹¹ is taken as seconds) or an RFC 3339 time such as
//! `2030-01-01T00:00:00Z`. `memory_limit`: bytes each attempt's process may
//! hold (allocated net during its polls; 0 or absent: the kind's default,
//! else none); an attempt over it is killed and fails with `"error":
//! "memory_limit: used N bytes over the limit of M"`, retried like any
//! failure (docs/semantics.md §9.5). In answers it is the job's limit or
//! `null`.
//!
//! The demo kinds ([`demo_kinds`]): `llm` `{"seconds": S}` simulates a slow
//! streamed model call (progress about once a second, done after S s);
//! `fact` `{"n": N}` computes N! (result: its bit length, as `/fact`);
//! `flaky` `{"fail_times": K}` fails its first K attempts, then succeeds;
//! `leak` `{"mb_per_s": X}` allocates and holds X MiB a second (for at most
//! a minute) under a default memory limit of 64 MiB, once: it is killed for
//! `memory_limit` when X is above about 1.

use std::time::Duration;

use ember_jobs::{
    CancelOutcome, EnqueueError, EnqueueOptions, Event, JobContext, JobError, JobKind, JobRecord,
    JobState, Jobs, JobsBuilder, KindOptions,
};
use ember_runtime::sync::mpsc;
use http::{header, HeaderValue, Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::endpoints::{factorial_bits, FACT_MAX_N};
use ember_web::{json, query, sse_events, text, Request, Response, Router, SseEvent};

/// The longest `llm` job accepted, in seconds (a day).
pub const LLM_MAX_SECONDS: f64 = 86_400.0;

/// The queue `llm` jobs use unless told otherwise.
pub const LLM_QUEUE: &str = "llm";

/// The args of `llm`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmArgs {
    /// How long the call takes, in seconds.
    pub seconds: f64,
}

/// The args of `fact`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactArgs {
    /// Computes `n!`.
    pub n: u64,
}

/// The args of `flaky`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlakyArgs {
    /// How many attempts fail first.
    pub fail_times: u32,
}

/// The args of `leak`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeakArgs {
    /// MiB allocated (and held) per second.
    pub mb_per_s: f64,
}

/// The most `leak` allocates per second, in MiB.
pub const LEAK_MAX_MB_PER_S: f64 = 1024.0;

/// The memory limit of a `leak` job unless it says otherwise (64 MiB).
pub const LEAK_MEMORY_LIMIT: u64 = 64 << 20;

/// The `llm` kind: a slow streamed model call.
#[derive(Debug)]
pub struct Llm;

impl JobKind for Llm {
    type Args = LlmArgs;
    const NAME: &'static str = "llm";

    fn options(&self) -> KindOptions {
        KindOptions {
            queue: Some(LLM_QUEUE.into()),
            ..KindOptions::default()
        }
    }

    fn validate(&self, args: &LlmArgs) -> Result<(), String> {
        if (0.0..=LLM_MAX_SECONDS).contains(&args.seconds) {
            Ok(())
        } else {
            Err(format!("seconds must be from 0 to {LLM_MAX_SECONDS}"))
        }
    }

    async fn run(&self, ctx: JobContext, args: LlmArgs) -> Result<Value, JobError> {
        llm(ctx, args).await
    }
}

/// The `fact` kind: the bit length of N!, as `/fact` computes it.
#[derive(Debug)]
pub struct Fact;

impl JobKind for Fact {
    type Args = FactArgs;
    const NAME: &'static str = "fact";

    fn validate(&self, args: &FactArgs) -> Result<(), String> {
        if args.n <= FACT_MAX_N {
            Ok(())
        } else {
            Err(format!("n must be at most {FACT_MAX_N}"))
        }
    }

    async fn run(&self, ctx: JobContext, args: FactArgs) -> Result<Value, JobError> {
        let _ = ctx.progress(0.0, format!("computing {}!", args.n));
        let bits = factorial_bits(args.n);
        let _ = ctx.progress(100.0, "done");
        Ok(json!(bits))
    }
}

/// The `flaky` kind: fails its first `fail_times` attempts, then succeeds.
#[derive(Debug)]
pub struct Flaky;

impl JobKind for Flaky {
    type Args = FlakyArgs;
    const NAME: &'static str = "flaky";

    async fn run(&self, ctx: JobContext, args: FlakyArgs) -> Result<Value, JobError> {
        if ctx.attempt() <= args.fail_times {
            Err(JobError::retry(format!(
                "flaky: attempt {} of the first {} fails",
                ctx.attempt(),
                args.fail_times
            )))
        } else {
            Ok(json!({ "attempts": ctx.attempt() }))
        }
    }
}

/// The `leak` kind: a job that leaks memory until its memory limit kills it.
#[derive(Debug)]
pub struct Leak;

impl JobKind for Leak {
    type Args = LeakArgs;
    const NAME: &'static str = "leak";

    fn options(&self) -> KindOptions {
        KindOptions {
            memory_limit: Some(LEAK_MEMORY_LIMIT),
            max_attempts: Some(1),
            ..KindOptions::default()
        }
    }

    fn validate(&self, args: &LeakArgs) -> Result<(), String> {
        if args.mb_per_s > 0.0 && args.mb_per_s <= LEAK_MAX_MB_PER_S {
            Ok(())
        } else {
            Err(format!(
                "mb_per_s must be above 0 and at most {LEAK_MAX_MB_PER_S}"
            ))
        }
    }

    async fn run(&self, ctx: JobContext, args: LeakArgs) -> Result<Value, JobError> {
        // Ten steps a second, for a minute at most.
        const STEPS: u32 = 600;
        let step = (args.mb_per_s * f64::from(1u32 << 20) / 10.0) as usize;
        let mut held: Vec<Vec<u8>> = Vec::new();
        for i in 1..=STEPS {
            held.push(vec![1u8; step]);
            if i % 10 == 0 {
                let mib = (step * held.len()) >> 20;
                let _ = ctx.progress(
                    f64::from(i) / f64::from(STEPS) * 100.0,
                    format!("holding {mib} MiB"),
                );
            }
            ember_runtime::sleep(Duration::from_millis(100)).await;
        }
        Ok(json!({ "held_bytes": step * held.len() }))
    }
}

/// Registers the demo kinds `llm`, `fact`, `flaky` and `leak` (see the
/// module docs).
pub fn demo_kinds(builder: JobsBuilder) -> JobsBuilder {
    builder.kind(Llm).kind(Fact).kind(Flaky).kind(Leak)
}

/// A slow streamed model call: a "token" about once a second.
async fn llm(ctx: JobContext, args: LlmArgs) -> Result<Value, JobError> {
    let total = Duration::from_secs_f64(args.seconds);
    let start = std::time::Instant::now();
    let mut tokens = 0u64;
    let _ = ctx.progress(0.0, "waiting for the model");
    while start.elapsed() < total {
        let left = total.saturating_sub(start.elapsed());
        ember_runtime::sleep(left.min(Duration::from_secs(1))).await;
        tokens += 1;
        let pct = if total.is_zero() {
            100.0
        } else {
            (start.elapsed().as_secs_f64() / total.as_secs_f64() * 100.0).min(100.0)
        };
        if ctx
            .progress_with(
                pct,
                format!("streamed {tokens} tokens"),
                json!({ "tokens": tokens }),
            )
            .is_err()
        {
            return Err(JobError::fatal("lost the claim"));
        }
    }
    Ok(
        json!({ "tokens": tokens, "text": "lorem ipsum ".repeat(tokens.min(1000) as usize).trim_end() }),
    )
}

/// Mounts the jobs API on `router`.
pub fn routes(router: Router, jobs: Jobs) -> Router {
    let (j1, j2, j3, j4) = (jobs.clone(), jobs.clone(), jobs.clone(), jobs.clone());
    let j5 = jobs.clone();
    router
        .post("/api/jobs/*", move |req: Request| {
            let jobs = jobs.clone();
            async move { retry(jobs, req).await }
        })
        .post("/api/jobs", move |req: Request| {
            let jobs = j1.clone();
            async move { create(jobs, req).await }
        })
        .get("/api/jobs", move |req: Request| {
            let jobs = j2.clone();
            async move { list(jobs, req) }
        })
        .get("/api/jobs/*", move |req: Request| {
            let jobs = j3.clone();
            async move { show(jobs, req) }
        })
        .route(Method::DELETE, "/api/jobs/*", move |req: Request| {
            let jobs = j4.clone();
            async move { cancel(jobs, req) }
        })
        .get("/api/cron", move |_req: Request| {
            let jobs = j5.clone();
            async move { cron(&jobs) }
        })
}

/// `GET /api/cron`: the cron entries of this node.
fn cron(jobs: &Jobs) -> Response {
    match jobs.cron_entries() {
        Ok(entries) => json(&json!({ "entries": entries, "node": jobs.node() })),
        Err(e) => status(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "error": e.to_string() }),
        ),
    }
}

fn bad(message: impl Into<String>) -> Response {
    let mut r = json(&json!({ "error": message.into() }));
    *r.status_mut() = StatusCode::BAD_REQUEST;
    r
}

fn status(code: StatusCode, body: Value) -> Response {
    let mut r = json(&body);
    *r.status_mut() = code;
    r
}

/// The JSON of a job, as `GET /api/jobs/ID` answers.
pub fn job_json(r: &JobRecord) -> Value {
    json!({
        "id": r.id,
        "kind": r.kind,
        "state": r.state.as_str(),
        "attempt": r.attempt,
        "progress": {
            "pct": r.progress_pct.unwrap_or(0.0),
            "message": r.progress_message.clone().unwrap_or_default(),
            "data": r.progress_data,
        },
        "result": r.result,
        "error": r.error,
        "node": r.node,
        "queue": r.queue,
        "priority": r.priority,
        "max_attempts": r.max_attempts,
        "memory_limit": r.memory_limit,
        "run_at": r.run_at,
        "args": r.args,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    kind: String,
    #[serde(default)]
    args: Value,
    queue: Option<String>,
    priority: Option<i64>,
    max_attempts: Option<u32>,
    timeout_ms: Option<u64>,
    memory_limit: Option<u64>,
    unique_key: Option<String>,
    run_at: Option<Value>,
}

async fn create(jobs: Jobs, req: Request) -> Response {
    let body: Create = match serde_json::from_slice(req.body()) {
        Ok(b) => b,
        Err(e) => return bad(format!("bad request body: {e}")),
    };
    let run_at = match body.run_at.as_ref().map(parse_time).transpose() {
        Ok(t) => t,
        Err(e) => return bad(e),
    };
    if body.max_attempts == Some(0) {
        return bad("max_attempts must be at least 1");
    }
    let options = EnqueueOptions {
        queue: body.queue,
        priority: body.priority.unwrap_or(0),
        max_attempts: body.max_attempts,
        timeout_ms: body.timeout_ms.filter(|&t| t > 0),
        memory_limit: body.memory_limit.filter(|&m| m > 0),
        unique_key: body.unique_key,
        run_at,
        backoff: None,
    };
    match jobs.enqueue_json(&body.kind, body.args, options).await {
        Ok(id) => {
            let mut r = status(StatusCode::ACCEPTED, json!({ "id": id }));
            if let Ok(v) = HeaderValue::from_str(&format!("/api/jobs/{id}")) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Err(e @ (EnqueueError::UnknownKind(_) | EnqueueError::BadArgs(_))) => bad(e.to_string()),
        Err(e) => {
            tracing::error!("ember-web: enqueue failed: {e}");
            status(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": e.to_string() }),
            )
        }
    }
}

/// `run_at` as ms since the epoch: a number (seconds below 10¹¹) or RFC 3339.
fn parse_time(v: &Value) -> Result<i64, String> {
    match v {
        Value::Number(n) => {
            let f = n.as_f64().ok_or("run_at: not a number")?;
            if !f.is_finite() || f < 0.0 {
                return Err("run_at must be a non-negative time".into());
            }
            Ok(if f < 1e11 {
                (f * 1000.0) as i64
            } else {
                f as i64
            })
        }
        Value::String(s) => parse_rfc3339(s).ok_or_else(|| {
            format!("run_at {s:?} is not an RFC 3339 time (e.g. 2030-01-01T00:00:00Z)")
        }),
        _ => Err("run_at must be a number (ms since the epoch) or an RFC 3339 string".into()),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)` to ms since the epoch.
fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = s.get(start..i)?;
        if frac.is_empty() {
            return None;
        }
        let digits: String = frac.chars().chain("000".chars()).take(3).collect();
        ms = digits.parse().ok()?;
    }
    let offset_min = match s.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (oh * 60 + om)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    Some(secs * 1000 + ms)
}

fn list(jobs: Jobs, req: Request) -> Response {
    let q = query(&req);
    let state = match q.get("state").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match s.parse::<JobState>() {
            Ok(st) => Some(st),
            Err(e) => return bad(e),
        },
    };
    let limit = match q.get("limit").filter(|s| !s.is_empty()) {
        None => 100,
        Some(l) => match l.parse::<usize>() {
            Ok(n) => n.min(1000),
            Err(_) => return bad("limit must be a non-negative integer"),
        },
    };
    let after = match q.get("after").filter(|s| !s.is_empty()) {
        None => None,
        Some(a) => match a.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => return bad("after must be a job id"),
        },
    };
    let listed = if q.get("order").map(String::as_str) == Some("desc") {
        jobs.recent(state, limit, after)
    } else {
        jobs.list(state, limit, after)
    };
    match listed {
        Ok(records) => json(&records.iter().map(job_json).collect::<Vec<_>>()),
        Err(e) => status(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "error": e.to_string() }),
        ),
    }
}

/// The id and the rest of `/api/jobs/ID[/rest]`.
fn path_id(req: &Request) -> Result<(i64, &str), Box<Response>> {
    let rest = req.uri().path().strip_prefix("/api/jobs/").unwrap_or("");
    let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
    match id.parse::<i64>() {
        Ok(id) if id > 0 => Ok((id, tail)),
        _ => Err(Box::new(status(
            StatusCode::NOT_FOUND,
            json!({ "error": format!("no job {id:?}") }),
        ))),
    }
}

fn not_found(id: i64) -> Response {
    status(
        StatusCode::NOT_FOUND,
        json!({ "error": format!("no job {id}") }),
    )
}

fn show(jobs: Jobs, req: Request) -> Response {
    if req.uri().path() == "/api/jobs/counts" {
        return counts(&jobs);
    }
    let (id, tail) = match path_id(&req) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match tail {
        "" => match jobs.get(id) {
            Ok(Some(r)) => json(&job_json(&r)),
            Ok(None) => not_found(id),
            Err(e) => status(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": e.to_string() }),
            ),
        },
        "events" => events(jobs, &req, id),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn counts(jobs: &Jobs) -> Response {
    match jobs.counts() {
        Ok(counts) => {
            let mut by_state = serde_json::Map::new();
            for st in JobState::ALL {
                by_state.insert(st.as_str().into(), json!(0));
            }
            for (st, n) in counts {
                by_state.insert(st.as_str().into(), json!(n));
            }
            json(&json!({ "counts": by_state, "kinds": jobs.kinds(), "node": jobs.node() }))
        }
        Err(e) => status(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "error": e.to_string() }),
        ),
    }
}

async fn retry(jobs: Jobs, req: Request) -> Response {
    let (id, tail) = match path_id(&req) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if tail != "retry" {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    match jobs.retry(id).await {
        Ok(true) => status(StatusCode::ACCEPTED, json!({ "id": id, "state": "queued" })),
        Ok(false) => status(
            StatusCode::CONFLICT,
            json!({ "id": id, "error": format!("job {id} is neither failed nor cancelled") }),
        ),
        Err(ember_jobs::StoreError::NotFound) => not_found(id),
        Err(e) => status(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "error": e.to_string() }),
        ),
    }
}

fn cancel(jobs: Jobs, req: Request) -> Response {
    let (id, tail) = match path_id(&req) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if !tail.is_empty() {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    match jobs.cancel(id) {
        Ok(CancelOutcome::NotFound) => not_found(id),
        Ok(CancelOutcome::Final(state)) => status(
            StatusCode::CONFLICT,
            json!({ "id": id, "state": state.as_str(), "error": format!("job {id} is already {state}") }),
        ),
        Ok(CancelOutcome::Cancelled(_)) => status(
            StatusCode::ACCEPTED,
            json!({ "id": id, "state": "cancelled" }),
        ),
        Ok(_) => status(
            StatusCode::ACCEPTED,
            json!({ "id": id, "state": "running", "cancel_requested": true }),
        ),
        Err(e) => status(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "error": e.to_string() }),
        ),
    }
}

fn sse_event(ev: &Event) -> SseEvent {
    let mut data = ev.data.clone();
    if let Value::Object(m) = &mut data {
        m.insert("id".into(), json!(ev.job));
        m.insert("seq".into(), json!(ev.seq));
    }
    SseEvent {
        id: Some(ev.seq.to_string()),
        event: Some(ev.kind.clone()),
        data: data.to_string(),
    }
}

/// How often a follower with nothing to send checks that its client is
/// still there.
const IDLE_CHECK: Duration = Duration::from_secs(5);

fn events(jobs: Jobs, req: &Request, id: i64) -> Response {
    match jobs.get(id) {
        Ok(Some(_)) => {}
        Ok(None) => return not_found(id),
        Err(e) => {
            return status(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": e.to_string() }),
            )
        }
    }
    let last = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query(req).remove("after"))
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(0);
    // Subscribe before reading the store, so nothing falls in between.
    let mut live = jobs.subscribe();
    let (tx, rx) = mpsc::channel::<SseEvent>(64);
    ember_runtime::spawn(async move {
        let mut sent = last;
        // Replays what is stored after `sent`; whether the job is final.
        async fn replay(
            jobs: &Jobs,
            id: i64,
            sent: &mut i64,
            tx: &mpsc::Sender<SseEvent>,
        ) -> Option<bool> {
            let mut finished = false;
            for ev in jobs.events(id, *sent).ok()? {
                tx.send(sse_event(&ev)).await.ok()?;
                *sent = ev.seq;
                finished = ev.state().is_some_and(JobState::is_final);
            }
            Some(finished)
        }
        match replay(&jobs, id, &mut sent, &tx).await {
            Some(false) => {}
            _ => return,
        }
        // A job final before `last` has nothing more to say.
        if jobs
            .get(id)
            .ok()
            .flatten()
            .is_some_and(|r| r.state.is_final())
        {
            return;
        }
        loop {
            // The job system's processes publish the events: no tokio
            // driver needs to run for this wait.
            let next = ember_runtime::sync::woken_by_ember(live.recv());
            match ember_jobs::timeout(IDLE_CHECK, next).await {
                None => {
                    if tx.is_closed() {
                        return;
                    }
                }
                Some(Ok(ev)) => {
                    if ev.job != id || ev.seq <= sent {
                        continue;
                    }
                    if tx.send(sse_event(&ev)).await.is_err() {
                        return;
                    }
                    sent = ev.seq;
                    if ev.state().is_some_and(JobState::is_final) {
                        return;
                    }
                }
                Some(Err(broadcast::error::RecvError::Lagged(_))) => {
                    match replay(&jobs, id, &mut sent, &tx).await {
                        Some(false) => {}
                        _ => return,
                    }
                }
                Some(Err(broadcast::error::RecvError::Closed)) => return,
            }
        }
    });
    sse_events(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_at_accepts_ms_seconds_and_rfc3339() {
        assert_eq!(
            parse_time(&json!(1_800_000_000_000i64)),
            Ok(1_800_000_000_000)
        );
        assert_eq!(parse_time(&json!(1_800_000_000)), Ok(1_800_000_000_000));
        assert_eq!(parse_time(&json!("1970-01-01T00:00:00Z")), Ok(0));
        assert_eq!(
            parse_time(&json!("2030-01-01T00:00:00.250Z")),
            Ok(1_893_456_000_250)
        );
        assert_eq!(
            parse_time(&json!("2030-01-01T01:00:00+01:00")),
            Ok(1_893_456_000_000)
        );
        assert!(parse_time(&json!("tomorrow")).is_err());
        assert!(parse_time(&json!(-1)).is_err());
        assert!(parse_time(&json!([1])).is_err());
        assert!(parse_time(&json!("2030-13-01T00:00:00Z")).is_err());
    }
}
