//! Recurring platform tasks (`LEADQ_SCHEDULE_<NAME>`, cron syntax, UTC), fired once per
//! schedule across all worker processes.
//!
//! Every worker runs this loop. Once a second it takes or keeps a leader lease in Redis; only
//! the leader fires, and each firing is claimed in Redis under the lease
//! ([`leadq_queue::schedule`]), so two workers never fire the same occurrence, and a new
//! leader carries on from the last claimed firing. A missed stretch (no worker running) fires
//! once, for its latest occurrence, not once per missed occurrence. Times are the Redis clock.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use leadq_jobs::ops::{billing, canary, maintenance};
use leadq_platform::checks;
use leadq_platform::config::{CanarySettings, ScheduleSetting, Settings};
use leadq_platform::metrics as m;
use leadq_queue::Queue;
use sqlx::PgPool;

/// How long a leader lease lasts without renewal (a dead leader is replaced this fast).
const LEASE: Duration = Duration::from_secs(10);
/// How often the loop looks.
const TICK: Duration = Duration::from_secs(1);
/// How often every worker re-reads the tasks' last runs for its gauges.
const PUBLISH_EVERY: Duration = Duration::from_secs(30);

/// The scheduler of one worker process.
#[derive(Debug, Clone)]
pub struct Scheduler {
    queue: Queue,
    pool: PgPool,
    worker_id: String,
    schedules: Vec<ScheduleSetting>,
    job_runs_keep: Duration,
    /// Verifies the audit chains' keyed links (`audit_verify`).
    audit_keys: leadq_platform::keyring::Keyring,
    canary: Option<CanarySettings>,
    /// Re-seals and re-indexes personal data under the current keys (`pii_reseal`).
    sealer: leadq_jobs::pii::Sealer,
    http: reqwest::Client,
    /// The `tenant` label of `leadq_billing_discrepancies` (bounded like every per-tenant one).
    tenant_labels: leadq_jobs::tenant_labels::TenantLabels,
    /// Whether this process led at its last tick: on losing the lead it withdraws what only
    /// the leader keeps current (`billing::withdraw`).
    leading: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The tasks of this process running now: a firing whose previous run still runs is
    /// skipped (and counted as an error), never run beside it.
    running: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<&'static str>>>,
    /// Results PostgreSQL did not take when they came, newest per schedule.
    unwritten: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<&'static str, Run>>>,
}

/// One run's result, as kept in `platform_checks` (row `schedule:<name>`).
#[derive(Debug, Clone)]
struct Run {
    ok: bool,
    detail: String,
    took: Duration,
    /// The firing it ran for: a result is written only over an older firing's.
    fired_at: DateTime<Utc>,
}

/// Takes a task's name off [`Scheduler::running`] when its run ends, however it ends.
struct Running {
    set: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<&'static str>>>,
    name: &'static str,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(self.name);
    }
}

/// Why a recurring task failed.
#[derive(Debug, thiserror::Error)]
enum TaskError {
    #[error(transparent)]
    Maintenance(#[from] maintenance::MaintenanceError),
    #[error("canary failed: {0}")]
    Canary(#[from] canary::CanaryError),
    #[error("billing reconciliation failed: {0}")]
    Billing(#[from] leadq_jobs::ops::deadletters::OpsError),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// The latest occurrence of `schedule` in `(after, now]`, if any. Looked for in the last
/// hour first, then the last day, month and year, and only then since `after`: a long gap of a
/// frequent schedule (a per-minute task off for a week) is not walked occurrence by occurrence
/// from its start — that walk stopped at its bound and fired a stale occurrence first.
fn due(
    schedule: &cron::Schedule,
    after: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    const LOOKBACK_HOURS: [i64; 4] = [1, 24, 24 * 32, 24 * 366];
    let starts = LOOKBACK_HOURS
        .iter()
        .map(|h| now - chrono::TimeDelta::hours(*h))
        .filter(|start| *start > after)
        .chain(std::iter::once(after));
    for start in starts {
        let mut latest = None;
        for (i, t) in schedule.after(&start).enumerate() {
            if t > now || i >= 100_000 {
                break;
            }
            latest = Some(t);
        }
        if latest.is_some() {
            return latest;
        }
    }
    None
}

impl Scheduler {
    /// A scheduler for the schedules of `settings` (those switched off are ignored).
    pub fn new(queue: Queue, pool: PgPool, worker_id: &str, settings: &Settings) -> Self {
        Self {
            queue,
            pool: pool.clone(),
            worker_id: worker_id.to_owned(),
            schedules: settings
                .schedules
                .iter()
                .filter(|s| s.schedule.is_some())
                .cloned()
                .collect(),
            job_runs_keep: settings.job_runs_keep,
            audit_keys: settings.audit_keys().clone(),
            canary: settings.canary.clone(),
            sealer: leadq_jobs::pii::Sealer::from_settings(settings),
            http: reqwest::Client::new(),
            tenant_labels: leadq_jobs::tenant_labels::TenantLabels::new(
                pool.clone(),
                settings.metrics_tenant_cap,
                settings.canary.as_ref().map(|c| c.tenant.clone()),
            ),
            leading: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
            running: Default::default(),
            unwritten: Default::default(),
        }
    }

    /// Notes whether this process leads now; a lead lost withdraws the leader's gauges.
    fn leads(&self, now: bool) {
        use std::sync::atomic::Ordering;
        metrics::gauge!(m::SCHEDULER_LEADER).set(if now { 1.0 } else { 0.0 });
        if self.leading.swap(now, Ordering::Relaxed) && !now {
            billing::withdraw();
        }
    }

    /// Runs until `stop` resolves, then gives the lease up.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        if self.schedules.is_empty() {
            return;
        }
        // At zero from the start, so an alert on `increase()` sees the first failure.
        for s in &self.schedules {
            for result in ["ok", "error"] {
                metrics::counter!(m::SCHEDULE_RUNS_TOTAL, m::label::SCHEDULE => s.name,
                    m::label::RESULT => result)
                .increment(0);
            }
        }
        metrics::gauge!(m::SCHEDULER_LEADER).set(0.0);
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut publish = tokio::time::interval(PUBLISH_EVERY);
        publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => self.tick().await,
                // Beside the loop: a slow database must not hold up the lease's renewal.
                _ = publish.tick() => {
                    let this = self.clone();
                    tokio::spawn(async move { this.publish_runs().await });
                }
            }
        }
        self.leads(false);
        if let Err(error) = self.queue.resign_scheduler(&self.worker_id).await {
            tracing::warn!(error = %error, "Could not give the scheduler lease up; it expires.");
        }
    }

    async fn tick(&self) {
        let now_ms = match self.queue.lead_scheduler(&self.worker_id, LEASE).await {
            Ok(Some(now)) => now,
            Ok(None) => {
                self.leads(false);
                return;
            }
            Err(error) => {
                tracing::warn!(error = %error, "Scheduler could not reach Redis; retrying.");
                return;
            }
        };
        self.leads(true);
        let Some(now) = Utc.timestamp_millis_opt(now_ms).single() else {
            return;
        };
        for s in &self.schedules {
            if let Err(error) = self.maybe_fire(s, now).await {
                tracing::warn!(schedule = s.name, error = %error, "Scheduler could not reach Redis.");
            }
        }
    }

    async fn maybe_fire(
        &self,
        s: &ScheduleSetting,
        now: DateTime<Utc>,
    ) -> Result<(), leadq_queue::QueueError> {
        let Some(schedule) = &s.schedule else {
            return Ok(());
        };
        // Never fired: start from the last tick's second, so a new schedule does not fire
        // for the past.
        let after = match self.queue.last_firing(s.name).await? {
            Some(ms) => Utc.timestamp_millis_opt(ms).single().unwrap_or(now),
            None => now - TICK,
        };
        let Some(at) = due(schedule, after, now) else {
            return Ok(());
        };
        if !self
            .queue
            .claim_firing(&self.worker_id, s.name, at.timestamp_millis())
            .await?
        {
            return Ok(());
        }
        // A run of the same task still going (a hung statement, a canary waiting out its
        // timeout): this firing is skipped and counted as failed, so that a task that never
        // ends shows in LeadqScheduledTaskFailing. Run beside it, every firing started one
        // more copy, each holding a connection of a small pool.
        let name = s.name;
        let running = {
            let mut set = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if !set.insert(name) {
                drop(set);
                metrics::counter!(m::SCHEDULE_RUNS_TOTAL, m::label::SCHEDULE => name,
                    m::label::RESULT => "error")
                .increment(1);
                tracing::error!(schedule = name, firing = %at,
                    "Recurring task skipped: its previous run has not ended.");
                let this = self.clone();
                tokio::spawn(async move {
                    let run = Run {
                        ok: false,
                        detail: "skipped: the previous run has not ended".into(),
                        took: Duration::ZERO,
                        fired_at: at,
                    };
                    this.record_run(name, run).await;
                });
                return Ok(());
            }
            Running {
                set: self.running.clone(),
                name,
            }
        };
        // The task runs beside the loop, so a slow one (the canary waits for a score) never
        // holds up the lease or the other schedules.
        let this = self.clone();
        tokio::spawn(async move {
            let _running = running;
            let started = std::time::Instant::now();
            let result = this.run_task(name, at.timestamp_millis()).await;
            let label = if result.is_ok() { "ok" } else { "error" };
            metrics::counter!(m::SCHEDULE_RUNS_TOTAL, m::label::SCHEDULE => name,
                m::label::RESULT => label)
            .increment(1);
            let detail = match &result {
                Ok(n) => {
                    tracing::info!(schedule = name, firing = %at, affected = n,
                        "Recurring task ran.");
                    format!("affected {n}")
                }
                Err(error) => {
                    tracing::error!(schedule = name, firing = %at, error = %error,
                        "Recurring task failed; it runs again at its next firing.");
                    error.to_string()
                }
            };
            let run = Run {
                ok: result.is_ok(),
                detail,
                took: started.elapsed(),
                fired_at: at,
            };
            this.record_run(name, run).await;
        });
        Ok(())
    }

    /// Keeps a run's result in PostgreSQL and publishes it at once. A result PostgreSQL does
    /// not take (it is down: the likeliest reason a task failed) is kept in memory and written
    /// by [`Self::publish_runs`] once it answers, unless a later firing's result is written
    /// first; so a daily task that failed in an outage reads as failed afterwards, not as the
    /// success before it.
    async fn record_run(&self, name: &'static str, run: Run) {
        if let Err(error) = self.write_run(name, &run).await {
            tracing::warn!(schedule = name, error = %error,
                "Could not keep the recurring task's result; it is written once PostgreSQL answers.");
            let mut unwritten = self.unwritten.lock().unwrap_or_else(|p| p.into_inner());
            let newer = unwritten
                .get(name)
                .is_none_or(|kept| kept.fired_at <= run.fired_at);
            if newer {
                unwritten.insert(name, run);
            }
            return;
        }
        self.publish_runs().await;
    }

    async fn write_run(&self, name: &'static str, run: &Run) -> Result<(), sqlx::Error> {
        let detail: String = run.detail.chars().take(500).collect();
        let row = checks::schedule_row(name);
        checks::record_firing(&self.pool, &row, run.ok, &detail, run.took, run.fired_at).await
    }

    /// Writes the results PostgreSQL did not take, then publishes the last run of each
    /// schedule this process has switched on, as kept in PostgreSQL (every worker, leader or
    /// not, so the series holds across a change of leader and a switched-off schedule's
    /// series ends with the process that had it).
    async fn publish_runs(&self) {
        let unwritten: Vec<(&'static str, Run)> = {
            let mut kept = self.unwritten.lock().unwrap_or_else(|p| p.into_inner());
            kept.drain().collect()
        };
        for (name, run) in unwritten {
            if self.write_run(name, &run).await.is_err() {
                let mut kept = self.unwritten.lock().unwrap_or_else(|p| p.into_inner());
                kept.entry(name).or_insert(run);
            }
        }
        let names: Vec<&'static str> = self.schedules.iter().map(|s| s.name).collect();
        let read = checks::last_schedule_runs(&self.pool, &names);
        match tokio::time::timeout(Duration::from_secs(5), read).await {
            Ok(Ok(runs)) => {
                for (schedule, record) in runs {
                    if let Some(name) = names.iter().find(|n| **n == schedule) {
                        checks::publish_schedule_run(name, &record);
                    }
                }
            }
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "Could not read the recurring tasks' last runs.")
            }
            Err(_) => tracing::warn!("Reading the recurring tasks' last runs timed out."),
        }
    }

    async fn run_task(&self, name: &str, firing_ms: i64) -> Result<u64, TaskError> {
        Ok(match name {
            "crm_reconcile" => {
                maintenance::crm_reconcile(&self.pool, &self.queue, firing_ms).await?
            }
            "job_runs_reconcile" => {
                maintenance::job_runs_reconcile(&self.pool, &self.queue).await?
            }
            "job_runs_retention" => {
                maintenance::job_runs_retention(&self.pool, self.job_runs_keep).await?
            }
            "audit_verify" => maintenance::audit_verify(&self.pool, &self.audit_keys).await?,
            "billing_reconcile" => {
                let who = leadq_jobs::ops::deadletters::Actor {
                    actor: "system:billing_reconcile",
                    correlation_id: "schedule",
                };
                let report = billing::reconcile(
                    &self.pool,
                    &self.queue,
                    &self.audit_keys,
                    who,
                    None,
                    billing::yesterday(),
                )
                .await?;
                // Published only while this process still leads: one that lost the lead while
                // the reconciliation ran has withdrawn its counts, and must not bring them back.
                if self.leading.load(std::sync::atomic::Ordering::Relaxed) {
                    billing::publish(&report, &self.tenant_labels).await;
                }
                report.findings.len() as u64
            }
            "pii_reseal" => {
                let r = leadq_jobs::pii::at_rest::reseal(
                    &self.pool,
                    &self.sealer,
                    leadq_jobs::pii::at_rest::DEFAULT_BATCH,
                    "system:pii_reseal",
                )
                .await?;
                if r.unreadable > 0 {
                    // Keep the old keys: these rows were sealed under one no longer configured.
                    tracing::warn!(
                        unreadable = r.unreadable,
                        "Personal data that does not open \
                        was left as it is; restore the key it was sealed under."
                    );
                }
                r.leads + r.messages + r.secrets
            }
            "canary" => match &self.canary {
                // Not configured: nothing to prove, and nothing recorded (doctor skips it).
                None => 0,
                Some(c) => {
                    canary::run(&self.pool, &self.http, c, firing_ms).await?;
                    1
                }
            },
            other => {
                tracing::error!(schedule = other, "No task of this name; nothing done.");
                0
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_fires_once_for_its_latest_occurrence() {
        let s = leadq_platform::config::parse_cron("*/5 * * * *").unwrap();
        let t = |h, m| Utc.with_ymd_and_hms(2026, 11, 23, h, m, 0).unwrap();
        assert_eq!(due(&s, t(10, 0), t(10, 4)), None);
        assert_eq!(due(&s, t(10, 0), t(10, 5)), Some(t(10, 5)));
        assert_eq!(due(&s, t(10, 0), t(11, 2)), Some(t(11, 0)));
        assert_eq!(due(&s, t(10, 5), t(10, 5)), None);
    }

    #[test]
    fn a_long_gap_fires_the_current_occurrence_not_a_stale_one() {
        let every_minute = leadq_platform::config::parse_cron("* * * * *").unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 30).unwrap();
        let week_ago = now - chrono::TimeDelta::days(8);
        assert_eq!(
            due(&every_minute, week_ago, now),
            Some(Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap())
        );
        // A monthly task missed two months ago fires for this month's occurrence.
        let monthly = leadq_platform::config::parse_cron("0 3 1 * *").unwrap();
        assert_eq!(
            due(&monthly, now - chrono::TimeDelta::days(60), now),
            Some(Utc.with_ymd_and_hms(2026, 11, 1, 3, 0, 0).unwrap())
        );
        // Nothing since `after`: none, however far back the lookback reaches.
        assert_eq!(
            due(
                &monthly,
                Utc.with_ymd_and_hms(2026, 11, 1, 3, 0, 0).unwrap(),
                now
            ),
            None
        );
    }
}
