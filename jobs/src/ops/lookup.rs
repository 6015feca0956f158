//! Finding one job, as on-call asks for it ("where is job X?", "what happened to message Y
//! of tenant Z?"): where the queue has it now, and the worker's record of its runs
//! (`job_runs`). Every lookup is audited as `job.view`: job data is tenant data.
//!
//! Redis answers for the job's present (waiting, held, scheduled, running on which worker,
//! completed, dead); PostgreSQL for its history. `job_runs` rows are visible only in their
//! tenant's scope (row-level security), so a job's runs are read once its tenant is known:
//! from the queue, or from the tenant the operator named.

use chrono::{DateTime, Utc};
use leadq_platform::db::{self, Scope};
use leadq_queue::{JobState, Located, Queue};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::ops::deadletters::{record, tenant_by_slug, Actor, OpsError};

/// What to look for.
#[derive(Debug, Clone)]
pub enum Query {
    /// A job id; `tenant` (a slug) when known, for its runs if the queue no longer knows it.
    Job {
        /// The job id.
        id: Uuid,
        /// Its tenant's slug, if the caller knows it.
        tenant: Option<String>,
    },
    /// A producer's `message_id`, which is unique within its tenant only.
    Message {
        /// The message id.
        message_id: String,
        /// The tenant's slug.
        tenant: String,
    },
}

/// One row of `job_runs`: what workers did with the job across its attempts.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct JobRun {
    /// `running`, `retrying`, `completed` or `dead`.
    pub status: String,
    /// Attempts so far.
    pub attempts: i32,
    /// Enqueued at.
    pub enqueued_at: DateTime<Utc>,
    /// First attempt started.
    pub first_started_at: DateTime<Utc>,
    /// Last attempt started.
    pub last_started_at: DateTime<Utc>,
    /// Finished (completed or dead).
    pub finished_at: Option<DateTime<Utc>>,
    /// Last attempt's duration.
    pub duration_ms: Option<i64>,
    /// Last error's stable code.
    pub last_error_code: Option<String>,
    /// The request that caused it.
    pub correlation_id: String,
}

/// A job found: where it is now and its recorded runs.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    /// Job id.
    pub job_id: Uuid,
    /// Kind.
    pub kind: String,
    /// Tenant slug, when known.
    pub tenant: Option<String>,
    /// The producer's message id, when recorded.
    pub message_id: Option<String>,
    /// Where the queue has it now (`unknown`: no longer in Redis; see `runs`).
    pub location: Location,
    /// Attempts the queue counted (0 once it left the queue).
    pub attempts: u32,
    /// Last error's stable code, as the queue recorded it.
    pub last_error_code: Option<String>,
    /// The worker's record, newest first (one row per job; empty before its first run).
    pub runs: Vec<JobRun>,
}

/// Where a job is: the queue's state, or `unknown` when only `job_runs` remembers it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Location {
    /// The queue knows it.
    Queue(JobState),
    /// Completion record trimmed, dead letter purged, or never enqueued.
    Unknown {
        /// Always `unknown`.
        state: Unknown,
    },
}

/// The state of a job only `job_runs` remembers.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unknown {
    /// The queue no longer knows it.
    Unknown,
}

impl Location {
    /// The state's stable name: `pending`, `held`, `scheduled`, `running`, `done`, `dead` or
    /// `unknown`.
    pub fn name(&self) -> &'static str {
        match self {
            Location::Queue(JobState::Pending) => "pending",
            Location::Queue(JobState::Held) => "held",
            Location::Queue(JobState::Scheduled { .. }) => "scheduled",
            Location::Queue(JobState::Running { .. }) => "running",
            Location::Queue(JobState::Done { .. }) => "done",
            Location::Queue(JobState::Dead { .. }) => "dead",
            Location::Unknown { .. } => "unknown",
        }
    }
}

/// Finds a job; `None` when neither the queue nor `job_runs` knows it. Audited as `job.view`
/// (platform scope), found or not.
pub async fn find(
    pool: &PgPool,
    queue: &Queue,
    who: Actor<'_>,
    query: &Query,
) -> Result<Option<JobReport>, OpsError> {
    let kinds = crate::kinds::names();
    let named = match query {
        Query::Job { tenant, .. } => tenant.as_deref(),
        Query::Message { tenant, .. } => Some(tenant.as_str()),
    };
    let named = match named {
        Some(slug) => Some((tenant_by_slug(pool, slug).await?, slug.to_owned())),
        None => None,
    };
    let (subject, details) = match query {
        Query::Job { id, .. } => (format!("job:{id}"), serde_json::json!({})),
        Query::Message { message_id, .. } => (
            "job:by_message".to_owned(),
            serde_json::json!({"message_id": message_id}),
        ),
    };
    let mut details = details;
    details["tenant_id"] = serde_json::json!(named.as_ref().map(|(id, _)| id));
    record(
        pool,
        who.actor,
        "job.view",
        &subject,
        who.correlation_id,
        details,
    )
    .await?;

    // The job id and, when the queue knows the job, where it is.
    let (id, located) = match query {
        Query::Job { id, .. } => (Some(*id), queue.locate(&kinds, *id).await?),
        Query::Message { message_id, .. } => {
            let tenant = named.as_ref().map(|(id, _)| *id).unwrap_or_default();
            let mut found = None;
            for kind in &kinds {
                if let Some(id) = queue.job_for_message(kind, tenant, message_id).await? {
                    found = Some(id);
                    break;
                }
            }
            match found {
                Some(id) => (Some(id), queue.locate(&kinds, id).await?),
                None => (None, None),
            }
        }
    };
    // A job of another tenant than the one named is not this tenant's job.
    if let (Some(l), Some((named_id, _))) = (&located, &named) {
        if l.tenant.is_some_and(|t| t != *named_id) {
            return Ok(None);
        }
    }
    let tenant_id = located
        .as_ref()
        .and_then(|l| l.tenant)
        .or(named.as_ref().map(|(id, _)| *id));
    let Some(tenant_id) = tenant_id else {
        // The queue knows the job but not its tenant (a completion record keeps only the id).
        return Ok(located.map(|l| report(l, id.unwrap_or_default(), None, None, Vec::new())));
    };
    let (row, runs) = runs_of(pool, tenant_id, id, query).await?;
    let slug = match &named {
        Some((_, slug)) => Some(slug.clone()),
        None => {
            sqlx::query_scalar("select slug from tenants where id = $1")
                .bind(tenant_id)
                .fetch_optional(pool)
                .await?
        }
    };
    Ok(match (located, row) {
        (Some(l), row) => Some(report(
            l,
            id.or(row.as_ref().map(|r| r.0)).unwrap_or_default(),
            slug,
            row.map(|r| r.2),
            runs,
        )),
        (None, Some((job_id, kind, message_id))) => Some(JobReport {
            job_id,
            kind,
            tenant: slug,
            message_id: Some(message_id),
            location: Location::Unknown {
                state: Unknown::Unknown,
            },
            attempts: 0,
            last_error_code: None,
            runs,
        }),
        (None, None) => None,
    })
}

fn report(
    l: Located,
    job_id: Uuid,
    tenant: Option<String>,
    message_id: Option<String>,
    runs: Vec<JobRun>,
) -> JobReport {
    JobReport {
        job_id,
        kind: l.kind,
        tenant,
        message_id,
        location: Location::Queue(l.state),
        attempts: l.attempts,
        last_error_code: l.last_error_code,
        runs,
    }
}

/// The job's `job_runs` row in its tenant's scope, by id or by message id: (job id, kind,
/// message id) and the run.
async fn runs_of(
    pool: &PgPool,
    tenant: Uuid,
    id: Option<Uuid>,
    query: &Query,
) -> Result<(Option<(Uuid, String, String)>, Vec<JobRun>), OpsError> {
    let message_id = match query {
        Query::Message { message_id, .. } if id.is_none() => Some(message_id.as_str()),
        _ => None,
    };
    if id.is_none() && message_id.is_none() {
        return Ok((None, Vec::new()));
    }
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    // One statement for each way of asking, each naming only what it is given. Optional
    // conditions (`$2 is null or job_id = $2`) leave a reusable plan, should the plan cache
    // choose one, no index to use for them: it would read the tenant's every run. Named, any
    // plan probes the key or `job_runs_tenant_message`
    // (`read_plans::a_jobs_lookup_reads_its_runs_not_the_tenants` guards it as a tenant grows).
    let row: Option<(Uuid, String, String)> = match (id, message_id) {
        (Some(id), _) => {
            sqlx::query_as(
                "select job_id, kind, message_id from job_runs
                  where tenant_id = $1 and job_id = $2",
            )
            .bind(tenant)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        }
        (None, Some(message_id)) => {
            sqlx::query_as(
                "select job_id, kind, message_id from job_runs
                  where tenant_id = $1 and message_id = $2
                  order by last_started_at desc limit 1",
            )
            .bind(tenant)
            .bind(message_id)
            .fetch_optional(&mut *tx)
            .await?
        }
        (None, None) => None,
    };
    let Some((job_id, _, _)) = &row else {
        return Ok((None, Vec::new()));
    };
    let runs = sqlx::query_as(
        "select status, attempts, enqueued_at, first_started_at, last_started_at, finished_at,
                duration_ms, last_error_code, correlation_id
           from job_runs where tenant_id = $1 and job_id = $2",
    )
    .bind(tenant)
    .bind(job_id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((row, runs))
}

/// A tenant's most recent runs of every kind, newest first: the tenant view's "recent runs".
/// One range read per kind on `job_runs_tenant_kind`.
pub async fn recent_runs(
    pool: &PgPool,
    tenant: Uuid,
    limit: i64,
) -> Result<Vec<(Uuid, String, JobRun)>, OpsError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        job_id: Uuid,
        kind: String,
        #[sqlx(flatten)]
        run: JobRun,
    }
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    // Each kind's page walks `job_runs_tenant_kind`; with sorts allowed it read and sorted every
    // run of the kind: 3,010 rows for 20 (`db::without_sorts`).
    db::without_sorts(&mut tx).await?;
    let mut rows: Vec<Row> = Vec::new();
    for kind in crate::kinds::names() {
        rows.extend(
            sqlx::query_as::<_, Row>(
                "select job_id, kind, status, attempts, enqueued_at, first_started_at,
                        last_started_at, finished_at, duration_ms, last_error_code, correlation_id
                   from job_runs where tenant_id = $1 and kind = $2
                  order by last_started_at desc limit $3",
            )
            .bind(tenant)
            .bind(kind)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?,
        );
    }
    tx.commit().await?;
    rows.sort_by_key(|r| std::cmp::Reverse(r.run.last_started_at));
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(rows
        .into_iter()
        .map(|r| (r.job_id, r.kind, r.run))
        .collect())
}
