//! What the on-call side remembers between runs (`migrations/*_platform_checks.sql`): the
//! last result of each recurring check (`audit_verify`, `canary`) and of each recurring task's
//! run (rows `schedule:<name>`), and when each signing or data key was first seen.
//! Platform-wide rows; no tenant owns them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::metrics as m;

/// The row of the synthetic canary (`leadq_jobs::ops::canary`).
pub const CANARY: &str = "canary";
/// The row of the scheduler's audit chain verification.
pub const AUDIT_VERIFY: &str = "audit_verify";

/// The last run of a recurring check.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct CheckRecord {
    /// The check's name (`audit_verify`, `canary`).
    pub name: String,
    /// When it last ran.
    pub ran_at: DateTime<Utc>,
    /// Whether that run passed.
    pub ok: bool,
    /// What an operator needs to act; never a secret.
    pub detail: String,
    /// How long the run took.
    pub duration_ms: i64,
    /// When a run last passed.
    pub last_ok_at: Option<DateTime<Utc>>,
}

/// Records a run of `name` (the row is overwritten; `last_ok_at` moves only on a pass).
pub async fn record(
    pool: &PgPool,
    name: &str,
    ok: bool,
    detail: &str,
    duration: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into platform_checks (name, ran_at, ok, detail, duration_ms, last_ok_at)
         values ($1, now(), $2, $3, $4, case when $2 then now() end)
         on conflict (name) do update set
             ran_at = excluded.ran_at, ok = excluded.ok, detail = excluded.detail,
             duration_ms = excluded.duration_ms,
             last_ok_at = coalesce(excluded.last_ok_at, platform_checks.last_ok_at)",
    )
    .bind(name)
    .bind(ok)
    .bind(detail)
    .bind(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX))
    .execute(pool)
    .await?;
    Ok(())
}

/// Records the run of a recurring task for the firing at `fired_at` (its `ran_at`), unless
/// the row already holds a later firing's: a slow run that ends after the next firing's, or a
/// result written late, never hides a newer one.
pub async fn record_firing(
    pool: &PgPool,
    name: &str,
    ok: bool,
    detail: &str,
    duration: Duration,
    fired_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into platform_checks (name, ran_at, ok, detail, duration_ms, last_ok_at)
         values ($1, $5, $2, $3, $4, case when $2 then $5 end)
         on conflict (name) do update set
             ran_at = excluded.ran_at, ok = excluded.ok, detail = excluded.detail,
             duration_ms = excluded.duration_ms,
             last_ok_at = coalesce(excluded.last_ok_at, platform_checks.last_ok_at)
          where platform_checks.ran_at <= excluded.ran_at",
    )
    .bind(name)
    .bind(ok)
    .bind(detail)
    .bind(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX))
    .bind(fired_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// The row of a recurring task's last run (`schedule:crm_reconcile`): apart from the checks'
/// rows, which a task may also write (`audit_verify` records its verdict in `audit_verify`,
/// and whether the task itself ran in `schedule:audit_verify`).
pub fn schedule_row(schedule: &str) -> String {
    format!("schedule:{schedule}")
}

/// The last run of every recurring task in `schedules` that ever ran.
pub async fn last_schedule_runs(
    pool: &PgPool,
    schedules: &[&str],
) -> Result<Vec<(String, CheckRecord)>, sqlx::Error> {
    let rows: Vec<String> = schedules.iter().map(|s| schedule_row(s)).collect();
    let records: Vec<CheckRecord> = sqlx::query_as(
        "select name, ran_at, ok, detail, duration_ms, last_ok_at
           from platform_checks where name = any($1)",
    )
    .bind(&rows)
    .fetch_all(pool)
    .await?;
    Ok(records
        .into_iter()
        .filter_map(|r| {
            let schedule = r.name.strip_prefix("schedule:")?.to_owned();
            Some((schedule, r))
        })
        .collect())
}

/// Publishes a recurring task's last run as gauges ([`m::SCHEDULE_LAST_RUN_OK`],
/// [`m::SCHEDULE_LAST_SUCCESS_TIMESTAMP_SECONDS`]).
pub fn publish_schedule_run(schedule: &'static str, record: &CheckRecord) {
    metrics::gauge!(m::SCHEDULE_LAST_RUN_OK, m::label::SCHEDULE => schedule).set(if record.ok {
        1.0
    } else {
        0.0
    });
    if let Some(at) = record.last_ok_at {
        metrics::gauge!(m::SCHEDULE_LAST_SUCCESS_TIMESTAMP_SECONDS,
            m::label::SCHEDULE => schedule)
        .set(at.timestamp_millis() as f64 / 1000.0);
    }
}

/// The last run of `name`, if it ever ran.
pub async fn last(pool: &PgPool, name: &str) -> Result<Option<CheckRecord>, sqlx::Error> {
    sqlx::query_as(
        "select name, ran_at, ok, detail, duration_ms, last_ok_at
           from platform_checks where name = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await
}

/// Notes the key ids of a keyring (`purpose`: `signing` or `data`) as seen now, if they were
/// never seen, and returns when the current (first) one was first seen.
pub async fn sight_keys(
    pool: &PgPool,
    purpose: &str,
    keyring: &crate::keyring::Keyring,
) -> Result<DateTime<Utc>, sqlx::Error> {
    let kids: Vec<String> = keyring.kids().map(str::to_owned).collect();
    sqlx::query(
        "insert into key_sightings (purpose, kid)
         select $1, unnest($2::text[]) on conflict do nothing",
    )
    .bind(purpose)
    .bind(&kids)
    .execute(pool)
    .await?;
    sqlx::query_scalar("select first_seen from key_sightings where purpose = $1 and kid = $2")
        .bind(purpose)
        .bind(&keyring.current().kid)
        .fetch_one(pool)
        .await
}

/// Publishes the last canary result as gauges (every process, at scrape time, so a stopped
/// worker shows an ageing success rather than a missing series). No row yet: no series, and
/// the alert's `absent()` tells a canary that never ran.
pub async fn publish_canary(pool: &PgPool) {
    let Ok(Ok(Some(r))) = tokio::time::timeout(Duration::from_secs(2), last(pool, CANARY)).await
    else {
        return;
    };
    metrics::gauge!(m::CANARY_SUCCESS).set(if r.ok { 1.0 } else { 0.0 });
    metrics::gauge!(m::CANARY_DURATION_SECONDS).set(r.duration_ms as f64 / 1000.0);
    if let Some(at) = r.last_ok_at {
        metrics::gauge!(m::CANARY_LAST_SUCCESS_TIMESTAMP_SECONDS)
            .set(at.timestamp_millis() as f64 / 1000.0);
    }
}
