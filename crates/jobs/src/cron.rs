//! Recurring (cron) jobs.
//!
//! Entries are registered on the builder ([`crate::JobsBuilder::cron`]):
//! a name, a crontab expression (UTC), a kind, its args and enqueue
//! options. [`crate::JobsBuilder::start`] checks them (an expression that
//! does not parse, or never fires, an unknown kind or args that do not fit
//! are an error, never a panic) and starts one scheduler process under a
//! supervisor of its own, linked to the caller like the dispatchers'.
//!
//! The scheduler sleeps (an Ember timer) until the next slot of any entry,
//! then, reading the wall clock again, fires for each entry the latest of
//! its slots that came since it last looked, through [`Store::fire_cron`]:
//! one transaction that records the slot as the entry's last and inserts
//! the job, only if the slot is newer than the one recorded. Every node
//! sharing a store runs a scheduler; whichever fires a slot first inserts
//! its job, the others find the slot taken, so a slot makes one job across
//! the cluster, and a restarted node never repeats a slot.
//!
//! Slots that pass while no scheduler runs (every node down, or a long
//! pause) are skipped, not caught up: a scheduler fires only slots that
//! come after it started, and of the slots that came between two of its
//! looks only the latest (see `docs/semantics.md`, "Recurring jobs").
//!
//! [`Store::fire_cron`]: crate::Store::fire_cron

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds, Year};
use ember_otp::dynamic_supervisor::DynamicSupervisorSpec;
use ember_otp::supervisor::Shutdown;
use ember_runtime::{self_pid, spawn_link, Pid};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;

use crate::store::{now_ms, Inserted, JobId, Millis, StoreError};
use crate::{EnqueueOptions, Inner, Jobs};

/// The longest the scheduler sleeps before reading the clock again, so a
/// wall clock set forward is noticed within this time.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// How soon the scheduler tries again after the store refused a firing.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A parsed cron expression: standard 5 fields (minute, hour, day of
/// month, month, day of week), or 6 with seconds first, or a nickname
/// (`@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@hourly`);
/// evaluated in UTC. When both day fields are restricted, a day matching
/// either one is a slot (as Vixie cron).
#[derive(Clone)]
pub struct CronSchedule {
    expression: String,
    cron: croner::Cron,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CronSchedule")
            .field(&self.expression)
            .finish()
    }
}

fn to_time(ms: Millis) -> Option<DateTime<Utc>> {
    // Whole seconds: a slot is a second at the finest.
    DateTime::from_timestamp(ms.div_euclid(1000), 0)
}

impl CronSchedule {
    /// Parses `expression`; the error says what is wrong with it.
    pub fn parse(expression: &str) -> Result<CronSchedule, String> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|e| format!("invalid cron expression {expression:?}: {e}"))?;
        Ok(CronSchedule {
            expression: expression.to_owned(),
            cron,
        })
    }

    /// The expression as given.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first slot strictly after `t` (ms since the epoch), if any.
    pub fn next_after(&self, t: Millis) -> Option<Millis> {
        let from = to_time(t)?;
        let next = self.cron.find_next_occurrence(&from, false).ok()?;
        Some(next.timestamp_millis())
    }

    /// The latest slot `s` with `after < s <= now`: what a scheduler that
    /// last looked at `after` fires when it looks at `now`. `None` if no
    /// slot came in between (or the clock went back).
    pub fn due(&self, after: Millis, now: Millis) -> Option<Millis> {
        if now <= after {
            return None;
        }
        let at = to_time(now)?;
        let slot = self
            .cron
            .find_previous_occurrence(&at, true)
            .ok()?
            .timestamp_millis();
        (slot > after && slot <= now).then_some(slot)
    }
}

/// A recurring job, as registered.
#[derive(Clone, Debug)]
pub(crate) struct CronEntry {
    pub(crate) name: String,
    pub(crate) schedule: CronSchedule,
    pub(crate) kind: String,
    pub(crate) args: Value,
    pub(crate) options: EnqueueOptions,
}

/// An entry as registered, before [`crate::JobsBuilder::start`] checks it.
#[derive(Clone, Debug)]
pub(crate) struct CronSpec {
    pub(crate) name: String,
    pub(crate) expression: String,
    pub(crate) kind: String,
    pub(crate) args: Value,
    pub(crate) options: EnqueueOptions,
}

/// What a [`crate::Store`] keeps of a cron entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CronRecord {
    /// The entry's name.
    pub name: String,
    /// The expression of the node that fired its last slot.
    pub expression: String,
    /// Its last slot fired (ms since the epoch).
    pub last_slot: Millis,
    /// The job that slot made (or found pending, with a unique key).
    pub last_job: Option<JobId>,
}

/// A cron entry of a running [`Jobs`] system, for display.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CronInfo {
    /// Its name.
    pub name: String,
    /// Its expression.
    pub expression: String,
    /// The kind of its jobs.
    pub kind: String,
    /// The args of its jobs.
    pub args: Value,
    /// The queue of its jobs, if its options give one (else the kind's).
    pub queue: Option<String>,
    /// Its next slot after now (ms since the epoch), if it has one.
    pub next_run: Option<Millis>,
    /// Its last slot fired by any node (from the store), if any.
    pub last_slot: Option<Millis>,
    /// The job of that slot.
    pub last_job: Option<JobId>,
}

/// The cron part of a [`Jobs`] system.
#[derive(Default)]
pub(crate) struct CronState {
    pub(crate) entries: Vec<CronEntry>,
    /// The scheduler process, while it runs.
    pub(crate) scheduler: Mutex<Option<Pid>>,
}

/// Checks the registered entries against the kinds: unique names, valid
/// expressions that fire at least once more, known kinds, fitting args.
pub(crate) fn check(
    specs: Vec<CronSpec>,
    jobs_kinds: &std::collections::HashMap<String, Arc<dyn crate::kind::ErasedKind>>,
) -> Result<Vec<CronEntry>, StoreError> {
    let mut entries: Vec<CronEntry> = Vec::with_capacity(specs.len());
    for spec in specs {
        let bad = |why: String| StoreError::Invalid(format!("cron entry {:?}: {why}", spec.name));
        if spec.name.is_empty() || spec.name.len() > 128 {
            return Err(bad("the name must be 1 to 128 bytes".into()));
        }
        if entries.iter().any(|e| e.name == spec.name) {
            return Err(bad("registered twice".into()));
        }
        let schedule = CronSchedule::parse(&spec.expression).map_err(bad)?;
        if schedule.next_after(now_ms()).is_none() {
            return Err(bad(format!("{:?} never fires again", spec.expression)));
        }
        let kind = jobs_kinds
            .get(&spec.kind)
            .ok_or_else(|| bad(format!("unknown job kind {:?}", spec.kind)))?;
        kind.validate(&spec.args)
            .map_err(|e| bad(format!("bad args: {e}")))?;
        if let Some(q) = &spec.options.queue {
            // As an enqueue would refuse it at every slot.
            if q.is_empty() || q.len() > 128 {
                return Err(bad("the queue must be 1 to 128 bytes".into()));
            }
        }
        entries.push(CronEntry {
            name: spec.name,
            schedule,
            kind: spec.kind,
            args: spec.args,
            options: spec.options,
        });
    }
    Ok(entries)
}

/// The unique key of the job of `entry`'s `slot`, unless its options give
/// one: `cron:<name>:<slot ms>`.
pub fn cron_key(entry: &str, slot: Millis) -> String {
    format!("cron:{entry}:{slot}")
}

/// Fires `entry`'s `slot` through the store; the job's id if this call
/// made (or found) it, `None` if the slot was fired already.
pub(crate) async fn fire(
    jobs: &Jobs,
    entry: &CronEntry,
    slot: Millis,
) -> Result<Option<JobId>, StoreError> {
    let mut options = entry.options.clone();
    if options.unique_key.is_none() {
        options.unique_key = Some(cron_key(&entry.name, slot));
    }
    options.run_at = Some(slot);
    let job = jobs
        .new_job(&entry.kind, entry.args.clone(), options)
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    let queue = job.queue.clone();
    let fired = jobs
        .inner
        .store
        .fire_cron(&entry.name, entry.schedule.expression(), slot, &job)?;
    let Some(inserted) = fired else {
        return Ok(None);
    };
    if let Inserted::New(_, ev) = &inserted {
        jobs.inner.publish(ev.clone());
    }
    jobs.ensure_queue(&queue).await;
    Ok(Some(inserted.id()))
}

/// Starts the scheduler, if there are entries, under a supervisor of its
/// own linked to the caller: restarted if it dies (it loses nothing: the
/// store holds the slots fired).
pub(crate) async fn start(inner: &Arc<Inner>) -> Result<(), StoreError> {
    if inner.cron.entries.is_empty() {
        return Ok(());
    }
    let weak = Arc::downgrade(inner);
    let sup = DynamicSupervisorSpec::worker(move |()| {
        let weak = weak.clone();
        async move {
            let inner = weak.upgrade().ok_or(ember_otp::gen::StartError::Ignore)?;
            Ok(spawn_scheduler(inner))
        }
    })
    .shutdown(Shutdown::BrutalKill)
    .intensity(10)
    .period(Duration::from_secs(10))
    .build()
    .map_err(|e| StoreError::Backend(e.to_string()))?
    .start_link()
    .await
    .map_err(|e| StoreError::Backend(format!("cannot start the cron supervisor: {e}")))?;
    sup.start_child(())
        .await
        .map_err(|e| StoreError::Backend(format!("cannot start the cron scheduler: {e}")))?;
    Ok(())
}

/// The entries of `inner`, with their next slots and what the store has.
pub(crate) fn infos(inner: &Inner) -> Result<Vec<CronInfo>, StoreError> {
    if inner.cron.entries.is_empty() {
        return Ok(Vec::new());
    }
    let stored = inner.store.cron_entries()?;
    let now = now_ms();
    let mut out: Vec<CronInfo> = inner
        .cron
        .entries
        .iter()
        .map(|e| {
            let rec = stored.iter().find(|r| r.name == e.name);
            CronInfo {
                name: e.name.clone(),
                expression: e.schedule.expression().to_owned(),
                kind: e.kind.clone(),
                args: e.args.clone(),
                queue: e.options.queue.clone(),
                next_run: e.schedule.next_after(now),
                last_slot: rec.map(|r| r.last_slot),
                last_job: rec.and_then(|r| r.last_job),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Starts the scheduler, linked to the caller (its supervisor).
pub(crate) fn spawn_scheduler(inner: Arc<Inner>) -> Pid {
    spawn_link(async move {
        *inner.cron.scheduler.lock() = Some(self_pid());
        let started = now_ms();
        let mut looked: Vec<Millis> = vec![started; inner.cron.entries.len()];
        let jobs = Jobs { inner };
        // A scheduler killed between a firing's commit and the wake of the
        // queue's dispatcher (below, in `fire`) left a job nobody on this
        // node was told of: its successor starts those dispatchers first.
        for entry in &jobs.inner.cron.entries {
            if let Ok(job) = jobs.new_job(&entry.kind, entry.args.clone(), entry.options.clone()) {
                jobs.ensure_queue(&job.queue).await;
            }
        }
        loop {
            let wait = tick(&jobs, &mut looked, now_ms()).await;
            ember_runtime::sleep(wait).await;
        }
    })
}

/// One look of the scheduler at `now`: fires each entry's due slot (see
/// [`CronSchedule::due`]) and moves its `looked` time on (not for an entry
/// whose firing failed: it is tried again soon). Returns how long to sleep.
async fn tick(jobs: &Jobs, looked: &mut [Millis], now: Millis) -> Duration {
    let mut wait = MAX_SLEEP;
    for (entry, looked) in jobs.inner.cron.entries.iter().zip(looked.iter_mut()) {
        if now < *looked {
            // The clock went back: slots up to the earlier time are not
            // fired again (the store would refuse them anyway).
            *looked = now;
        }
        if let Some(slot) = entry.schedule.due(*looked, now) {
            match fire(jobs, entry, slot).await {
                Ok(_) => {}
                Err(e) => {
                    tracing::error!("ember-jobs: cron entry {:?}: {e}", entry.name);
                    wait = wait.min(RETRY_AFTER);
                    continue;
                }
            }
        }
        *looked = now;
        if let Some(next) = entry.schedule.next_after(now) {
            let ms = next.saturating_sub(now).max(0) as u64;
            wait = wait.min(Duration::from_millis(ms));
        }
    }
    wait
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-06T10:00:00Z.
    const T0: Millis = 1_796_551_200_000;
    const MIN: Millis = 60_000;

    #[test]
    fn next_slots_of_five_fields_are_utc_minutes() {
        let s = CronSchedule::parse("*/5 * * * *").unwrap();
        assert_eq!(s.next_after(T0), Some(T0 + 5 * MIN));
        assert_eq!(s.next_after(T0 - 1), Some(T0));
        assert_eq!(s.next_after(T0 + 1), Some(T0 + 5 * MIN));
        let daily = CronSchedule::parse("30 2 * * *").unwrap();
        // 02:30 UTC the next day.
        assert_eq!(daily.next_after(T0), Some(T0 + 16 * 60 * MIN + 30 * MIN));
    }

    #[test]
    fn nicknames_and_seconds_parse() {
        let h = CronSchedule::parse("@hourly").unwrap();
        assert_eq!(h.next_after(T0), Some(T0 + 60 * MIN));
        let d = CronSchedule::parse("@daily").unwrap();
        assert_eq!(d.next_after(T0), Some(T0 + 14 * 60 * MIN));
        let s = CronSchedule::parse("*/10 * * * * *").unwrap();
        assert_eq!(s.next_after(T0 + 1), Some(T0 + 10_000));
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // T0 is a Sunday; "the 13th or a Friday" first fires on Friday the 11th.
        let s = CronSchedule::parse("0 0 13 * FRI").unwrap();
        let friday = T0 - 10 * 60 * MIN + 5 * 24 * 60 * MIN;
        assert_eq!(s.next_after(T0), Some(friday));
        assert_eq!(s.next_after(friday), Some(friday + 2 * 24 * 60 * MIN));
        let weekly = CronSchedule::parse("@weekly").unwrap();
        assert_eq!(
            weekly.next_after(T0),
            Some(T0 - 10 * 60 * MIN + 7 * 24 * 60 * MIN)
        );
    }

    #[test]
    fn an_impossible_date_never_fires() {
        // February 30th parses but has no slot: `start` refuses it.
        let s = CronSchedule::parse("0 0 30 2 *").unwrap();
        assert_eq!(s.next_after(T0), None);
        assert_eq!(s.due(T0 - 400 * 24 * 60 * MIN, T0), None);
    }

    #[test]
    fn bad_expressions_are_errors() {
        for bad in [
            "",
            "* * *",
            "61 * * * *",
            "* * * * * * * *",
            "@often",
            "*/0 * * * *",
        ] {
            let e = CronSchedule::parse(bad).err();
            assert!(e.is_some(), "{bad:?} parsed");
        }
    }

    #[test]
    fn due_is_the_latest_slot_since_the_last_look() {
        let s = CronSchedule::parse("* * * * *").unwrap();
        // Nothing came between two looks in one minute.
        assert_eq!(s.due(T0 + 1_000, T0 + 30_000), None);
        // The slot itself, looked at exactly or late.
        assert_eq!(s.due(T0 - 1, T0), Some(T0));
        assert_eq!(s.due(T0 - 1, T0 + 999), Some(T0));
        // A slot at the last look was fired then.
        assert_eq!(s.due(T0, T0 + 59_000), None);
        // After a pause of ten minutes: only the latest slot.
        assert_eq!(s.due(T0 - 1, T0 + 10 * MIN + 5), Some(T0 + 10 * MIN));
        // The clock went back.
        assert_eq!(s.due(T0 + 5 * MIN, T0), None);
    }
}
