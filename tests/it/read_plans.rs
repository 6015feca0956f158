//! The tenant-scoped reads off the lead path (the audit trail's pages and heartbeat, a job's
//! lookup) read about what they return, however large the tenant's tables grow.
//!
//! Under row-level security the planner guesses 0.5 % of the rows for a policy clause, so a
//! tenant's thousands of rows look like a dozen to every statement that reads them through the
//! policy, and reading them all to sort them can look as cheap as walking an index (the CRM
//! claim did: `crm::a_claim_reads_its_batch_not_the_tenants_backlog`). Each read below is made
//! six times on one connection while the tenant is small (its plans made), then the tenant
//! grows by 3,000 rows, `ANALYZE` runs as autovacuum would, and the rows the read takes from
//! the table are counted.
//!
//! (Without the `ANALYZE`, a connection's plans made on a table of one page are sequential
//! scans and are kept until statistics change: any of these reads then takes the whole table,
//! for the minute or so until autovacuum analyzes it. That is a fresh database's first minutes,
//! not a tenant's growth, and not what these tests are about.)

use leadq_jobs::ops::audit_trail::{self, Filter};
use leadq_jobs::ops::deadletters::Actor;
use leadq_jobs::ops::lookup::{self, Query};
use leadq_platform::db::Scope;
use leadq_testkit::{spawn_app, TestApp};

use crate::lead_store::{one_connection, rows_read};

const GROWTH: i32 = 3000;

/// Adds `n` audit rows to the test tenant's chain, as the table's owner (the rows' content
/// does not matter to a read's plan).
async fn audit_rows(app: &TestApp, n: i32) {
    tenant_audit_rows(app, app.tenant.tenant_id, n).await;
}

/// Adds `n` audit rows to `tenant`'s chain, as the table's owner.
async fn tenant_audit_rows(app: &TestApp, tenant: uuid::Uuid, n: i32) {
    let mut tx = app.db.owner_tx(tenant).await;
    sqlx::query(
        "insert into audit_log (tenant_id, actor, action, subject, outcome, correlation_id, at)
         select $1, 'test', case when i % 2 = 0 then 'lead.score' else 'lead.read' end,
                'lead:' || i, 'ok', 'c-' || i, now() - make_interval(secs => i)
           from generate_series(1, $2) as i",
    )
    .bind(tenant)
    .bind(n)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// Adds `n` finished runs to the test tenant's `job_runs` (`message_id` `<prefix>-<i>`).
async fn run_rows(app: &TestApp, prefix: &str, n: i32) {
    let tenant = app.tenant.tenant_id;
    let mut tx = app.db.owner_tx(tenant).await;
    sqlx::query(
        "insert into job_runs (job_id, tenant_id, kind, message_id, correlation_id, status,
                               attempts, enqueued_at, first_started_at, last_started_at)
         select gen_random_uuid(), $1, 'lead_score', $2 || '-' || i, 'c-' || i, 'completed', 1,
                now() - make_interval(secs => i), now() - make_interval(secs => i),
                now() - make_interval(secs => i)
           from generate_series(1, $3) as i",
    )
    .bind(tenant)
    .bind(prefix)
    .bind(n)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

async fn analyze(app: &TestApp, table: &str) {
    let mut tx = app.db.owner_tx(app.tenant.tenant_id).await;
    sqlx::query(&format!("analyze {table}"))
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// Rows of `table` that `read` takes from it after the tenant grew (`grow`) and the table was
/// analyzed, on a connection whose plans were made before.
async fn rows_after_growth<F, Fut>(
    app: &TestApp,
    pool: &sqlx::PgPool,
    table: &str,
    grow: impl std::future::Future<Output = ()>,
    read: F,
) -> i64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..6 {
        read().await;
    }
    grow.await;
    analyze(app, table).await;
    let before = rows_read(pool, table).await;
    read().await;
    rows_read(pool, table).await - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trails_pages_and_heartbeat_read_what_they_return() {
    let app = spawn_app().await;
    let pool = one_connection(&app).await;
    audit_rows(&app, 30).await;
    let scope = Scope::Tenant(app.tenant.tenant_id);
    let page = |action: Option<&'static str>| {
        let pool = pool.clone();
        async move {
            let f = Filter {
                actor: None,
                action: action.map(Into::into),
                subject: None,
                since: None,
                until: None,
                before: None,
                limit: 20,
            };
            let got = audit_trail::list(&pool, scope, &f).await.unwrap();
            assert!(!got.entries.is_empty());
        }
    };
    // Ten other tenants write 3,000 entries each after the test tenant's last: a page of the
    // test tenant must not read through them (walking the primary key newest first would).
    // (The planner prices that walk against reading the tenant's own entries; a tenant holding
    // a large share of the table may still get it, and then reads at most a few times its own
    // entries. This tenant holds 30 of 30,030.)
    let mut others = Vec::new();
    for _ in 0..10 {
        others.push(app.other_tenant().await.tenant_id);
    }
    let newer = async {
        for other in &others {
            tenant_audit_rows(&app, *other, GROWTH).await;
        }
    };
    let rows = rows_after_growth(&app, &pool, "audit_log", newer, || page(None)).await;
    assert!(
        rows <= 100,
        "a page of 20 entries read {rows} rows of audit_log: other tenants' newer entries \
         were read through"
    );
    let rows = rows_after_growth(&app, &pool, "audit_log", audit_rows(&app, GROWTH), || {
        page(None)
    })
    .await;
    assert!(
        rows <= 100,
        "a page of 20 entries read {rows} rows of audit_log"
    );
    let rows = rows_after_growth(&app, &pool, "audit_log", audit_rows(&app, GROWTH), || {
        page(Some("lead.read"))
    })
    .await;
    assert!(
        rows <= 100,
        "a page of 20 entries of one action read {rows} rows of audit_log"
    );
    let heartbeat = || {
        let pool = pool.clone();
        async move {
            assert!(leadq_platform::audit::newest_entry(&pool)
                .await
                .unwrap()
                .is_some());
        }
    };
    let rows = rows_after_growth(
        &app,
        &pool,
        "audit_log",
        audit_rows(&app, GROWTH),
        heartbeat,
    )
    .await;
    assert!(
        rows <= 20,
        "the audit heartbeat read {rows} rows of audit_log"
    );
    pool.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_lookup_reads_its_runs_not_the_tenants() {
    let app = spawn_app().await;
    let pool = one_connection(&app).await;
    run_rows(&app, "few", 10).await;
    let who = Actor {
        actor: "operator:test",
        correlation_id: "read-plans",
    };
    let find = || {
        let (pool, queue) = (pool.clone(), app.queue.clone());
        let slug = app.tenant.slug.clone();
        async move {
            let q = Query::Message {
                message_id: "few-3".into(),
                tenant: slug,
            };
            let found = lookup::find(&pool, &queue, who, &q).await.unwrap();
            assert!(found.is_some());
        }
    };
    let rows = rows_after_growth(
        &app,
        &pool,
        "job_runs",
        run_rows(&app, "many", GROWTH),
        find,
    )
    .await;
    assert!(
        rows <= 20,
        "a lookup by message id read {rows} rows of job_runs"
    );
    pool.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_recent_runs_read_a_page_of_each_kind() {
    let app = spawn_app().await;
    let pool = one_connection(&app).await;
    run_rows(&app, "few", 10).await;
    let recent = || {
        let pool = pool.clone();
        let tenant = app.tenant.tenant_id;
        async move {
            let runs = lookup::recent_runs(&pool, tenant, 20).await.unwrap();
            assert!(!runs.is_empty());
        }
    };
    let rows = rows_after_growth(
        &app,
        &pool,
        "job_runs",
        run_rows(&app, "many", GROWTH),
        recent,
    )
    .await;
    assert!(rows <= 100, "20 recent runs read {rows} rows of job_runs");
    pool.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reseal_reads_each_lead_about_once() {
    let app = spawn_app().await;
    let pool = one_connection(&app).await;
    let tenant = app.tenant.tenant_id;
    // 3,000 leads with a name in clear (as before sealing existed): every one is to be sealed.
    let mut tx = app.db.owner_tx(tenant).await;
    sqlx::query(
        "insert into leads (tenant_id, external_id, source, name)
         select $1, 'clear-' || lpad(i::text, 5, '0'), 'telegram', 'Ada ' || i
           from generate_series(1, $2) as i",
    )
    .bind(tenant)
    .bind(GROWTH)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    analyze(&app, "leads").await;
    let before = rows_read(&pool, "leads").await;
    let report = leadq_jobs::pii::at_rest::reseal(&pool, &app.sealer(), 100, "test")
        .await
        .unwrap();
    let rows = rows_read(&pool, "leads").await - before;
    assert_eq!(report.leads, GROWTH as u64);
    // 9,000 rows here (a batch's select and its writes each read their leads); 23,500 when
    // each batch read and sorted every lead still to do.
    assert!(
        rows <= 4 * i64::from(GROWTH),
        "sealing 3,000 leads 100 at a time read {rows} rows of leads"
    );
    pool.close().await;
    app.stop().await;
}
