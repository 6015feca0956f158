//! The run recorder (`leadq_worker::runlog`) writes a batch's `job_runs` rows of every tenant
//! under its own scope, and row-level security still shows each tenant its own rows only.

use std::time::Duration;

use leadq_queue::envelope::JobMeta;
use leadq_testkit::spawn_app;
use leadq_worker::runlog::{RunLog, RunRow};
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
