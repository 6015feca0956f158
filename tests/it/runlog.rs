//! The run recorder (`leadq_worker::runlog`) writes a batch's `job_runs` rows of every tenant
//! under its own scope, and row-level security still shows each tenant its own rows only.

use std::time::Duration;

use chrono::{DateTime, Utc};
use leadq_queue::envelope::JobMeta;
use leadq_testkit::spawn_app;
use leadq_worker::runlog::{RunLog, RunRow, START_HOLD};
use uuid::Uuid;

fn meta(tenant: Uuid) -> JobMeta {
    JobMeta {
        job_id: Uuid::new_v4(),
        attempt: 1,
        schema_version: 1,
        message_id: format!("m-{}", Uuid::new_v4().simple()),
        tenant_id: tenant,
        user_id: "api_key:t".into(),
        action: "lead_score".into(),
        timestamp: chrono::Utc::now(),
        correlation_id: "c".into(),
        trace_context: Default::default(),
        shadow: false,
    }
}

async fn runs(tx: &mut sqlx::PgConnection) -> Vec<(Uuid, String, Option<String>)> {
    sqlx::query_as("select job_id, status, last_error_code from job_runs order by status")
        .fetch_all(tx)
        .await
        .unwrap()
}

#[tokio::test]
async fn one_batch_records_every_tenants_runs_and_each_tenant_sees_only_its_own() {
    let app = spawn_app().await;
    let other = app.other_tenant().await;
    let (mine, theirs) = (meta(app.tenant.tenant_id), meta(other.tenant_id));
    let log = RunLog::start(app.db.pool.clone());
    // Starts and outcomes of two tenants' jobs, interleaved: one batch, two rounds.
    log.write(RunRow::start(&mine)).await;
    log.write(RunRow::start(&theirs)).await;
    let ms = Duration::from_millis(5);
    log.write(RunRow::outcome(&mine, "completed", ms, None, true))
        .await;
    log.write(RunRow::outcome(&theirs, "dead", ms, Some("boom"), true))
        .await;
    log.flush().await;

    let mut tx = app.scoped(app.tenant.tenant_id).await;
    assert_eq!(
        runs(&mut tx).await,
        vec![(mine.job_id, "completed".into(), None)]
    );
    let mut tx = app.scoped(other.tenant_id).await;
    assert_eq!(
        runs(&mut tx).await,
        vec![(theirs.job_id, "dead".into(), Some("boom".into()))]
    );
    // The recorder's scope reaches `job_runs` and no other tenant-owned table.
    let mut tx = leadq_platform::db::begin_service(&app.db.pool, "run-recorder")
        .await
        .unwrap();
    let keys: i64 = sqlx::query_scalar("select count(*) from api_keys")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(keys, 0, "the recorder's scope sees no API key");
    assert_eq!(runs(&mut tx).await.len(), 2);
}

/// A start is held back for up to `START_HOLD`: a run that ends sooner writes its row once, its
/// outcome carrying when it started; a run still going then shows `running` without a flush.
/// Every write of a `job_runs` row is counted by a trigger the owner adds for the test.
#[tokio::test]
async fn a_start_waits_for_its_outcome_and_is_written_alone_when_the_run_outlasts_the_hold() {
    let app = spawn_app().await;
    let owner = sqlx::PgPool::connect(&app.db.owner_url).await.unwrap();
    sqlx::raw_sql(
        "create table run_writes (n bigserial, job_id uuid, status text);
         create function count_run_write() returns trigger language plpgsql security definer
           as $$ begin insert into run_writes (job_id, status) values (new.job_id, new.status);
                       return new; end $$;
         create trigger count_run_write after insert or update on job_runs
           for each row execute function count_run_write();",
    )
    .execute(&owner)
    .await
    .unwrap();
    let writes = |job: Uuid| {
        let owner = owner.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "select status from run_writes where job_id = $1 order by n",
            )
            .bind(job)
            .fetch_all(&owner)
            .await
            .unwrap()
        }
    };
    let (quick, slow) = (meta(app.tenant.tenant_id), meta(app.tenant.tenant_id));
    let log = RunLog::start(app.db.pool.clone());

    log.write(RunRow::start(&quick)).await;
    log.write(RunRow::start(&slow)).await;
    let ran = Duration::from_millis(250);
    tokio::time::sleep(ran).await;
    log.write(RunRow::outcome(&quick, "completed", ran, None, true))
        .await;
    // The slow run's start is written once the hold is over, with no flush asked for.
    let deadline = std::time::Instant::now() + START_HOLD + Duration::from_secs(10);
    while writes(slow.job_id).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the held start was never written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(writes(slow.job_id).await, ["running"]);
    log.write(RunRow::outcome(&slow, "completed", ran, None, true))
        .await;
    log.flush().await;

    assert_eq!(writes(quick.job_id).await, ["completed"], "one write");
    assert_eq!(writes(slow.job_id).await, ["running", "completed"]);
    // The quick run's one write says when it started and ended.
    let mut tx = app.scoped(app.tenant.tenant_id).await;
    let (started, last, finished, ms): (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>, i64) =
        sqlx::query_as(
            "select first_started_at, last_started_at, finished_at, duration_ms
               from job_runs where job_id = $1",
        )
        .bind(quick.job_id)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!((started, ms), (last, 250));
    assert_eq!(finished - started, chrono::Duration::milliseconds(250));
}
