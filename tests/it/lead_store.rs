//! The lead store under concurrency: a job that waits for the lead's lock reads what the
//! holder committed — the lead it created, the version it wrote, the erasure it recorded
//! (`store::hold_and_find` reads the lead in a statement of its own, after the lock).

use std::collections::BTreeMap;
use std::time::Duration;

use leadq_jobs::lead::{store, Attached, LeadInput};
use leadq_queue::envelope::JobMeta;
use leadq_testkit::{spawn_app, TestApp};

fn meta(app: &TestApp, message_id: &str) -> JobMeta {
    job_meta(app, message_id, &app.key_actor(), "lead_score")
}

/// A first attempt's job of the test tenant, made now by `user_id` for `action`.
pub(crate) fn job_meta(app: &TestApp, message_id: &str, user_id: &str, action: &str) -> JobMeta {
    JobMeta {
        job_id: uuid::Uuid::new_v4(),
        attempt: 1,
        schema_version: 1,
        message_id: message_id.into(),
        tenant_id: app.tenant.tenant_id,
        user_id: user_id.into(),
        action: action.into(),
        timestamp: chrono::Utc::now(),
        correlation_id: format!("c-{message_id}"),
        trace_context: Default::default(),
        shadow: false,
    }
}

/// Rows of `table` read by scans so far, as the counters of `pool`'s connection show them once
/// flushed: what a test of a statement's plan (does it read the tenant's other rows?) counts.
pub(crate) async fn rows_read(pool: &sqlx::PgPool, table: &str) -> i64 {
    sqlx::query("select pg_stat_force_next_flush()")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query_scalar(
        "select coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)
           from pg_stat_user_tables where relname = $1",
    )
    .bind(table)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A pool of one connection to the app's database, as the runtime role: what a test of
/// per-connection state (prepared statements, their plans) needs.
pub(crate) async fn one_connection(app: &TestApp) -> sqlx::PgPool {
    let secret = leadq_platform::secret::Secret::new(app.db.url.clone());
    leadq_platform::db::connect(&secret, 1).await.unwrap()
}

fn answer(external_id: &str, question: &str, value: &str) -> LeadInput {
    LeadInput {
        external_id: external_id.into(),
        source: "telegram".into(),
        name: None,
        username: None,
        phone: None,
        email: None,
        answers: BTreeMap::from([(question.into(), value.into())]),
        campaign: None,
        next_answer: None,
    }
}

/// Starts `input`'s job in a transaction of its own and returns it still running: it waits
/// for the lead's lock, which the caller holds.
fn waiting_job(
    app: &TestApp,
    input: LeadInput,
    meta: JobMeta,
) -> tokio::task::JoinHandle<Option<store::Applied>> {
    let (pool, sealer) = (app.db.pool.clone(), app.sealer());
    tokio::spawn(async move {
        let mut tx =
            leadq_platform::db::begin(&pool, leadq_platform::db::Scope::Tenant(meta.tenant_id))
                .await
                .unwrap();
        let applied = store::apply(&mut tx, &sealer, &meta, &input).await.unwrap();
        tx.commit().await.unwrap();
        applied
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_waiting_for_the_lead_builds_on_what_the_holder_created_and_wrote() {
    let app = spawn_app().await;
    let sealer = app.sealer();
    // The holder creates the lead; a second job of the same lead waits for it.
    let mut holder = app.own().await;
    let first = store::apply(
        &mut holder,
        &sealer,
        &meta(&app, "m1"),
        &answer("tg-w", "budget", "50k+"),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(first.version, 1);
    let waiter = waiting_job(
        &app,
        answer("tg-w", "timeline", "this month"),
        meta(&app, "m2"),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the second job waits for the lead");
    holder.commit().await.unwrap();
    // Created while it waited: it finds the lead (no second insert) and writes version 2.
    let second = waiter.await.unwrap().expect("not erased");
    assert_eq!((second.lead_id, second.version), (first.lead_id, 2));

    // The same with a lead that exists: the holder writes version 3, the waiter version 4.
    let mut holder = app.own().await;
    let third = store::apply(
        &mut holder,
        &sealer,
        &meta(&app, "m3"),
        &answer("tg-w", "need", "crm"),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(third.version, 3);
    let waiter = waiting_job(
        &app,
        answer("tg-w", "company_size", "50-200"),
        meta(&app, "m4"),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the fourth job waits for the lead");
    holder.commit().await.unwrap();
    assert_eq!(waiter.await.unwrap().expect("not erased").version, 4);

    // Nothing was lost: one lead with every answer, one history row per version.
    let mut tx = app.own().await;
    let (leads, answers): (i64, serde_json::Value) = sqlx::query_as(
        "select count(*), max(answers::text)::jsonb from leads where external_id = 'tg-w'",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(leads, 1);
    for q in ["budget", "timeline", "need", "company_size"] {
        assert!(answers.get(q).is_some(), "{q} kept: {answers}");
    }
    let versions: Vec<i64> =
        sqlx::query_scalar("select version from lead_scores where lead_id = $1 order by version")
            .bind(first.lead_id)
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    assert_eq!(versions, [1, 2, 3, 4]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_made_before_an_erasure_that_commits_while_it_waits_writes_nothing() {
    let app = spawn_app().await;
    let tenant = app.tenant.tenant_id;
    let sealer = app.sealer();
    let mut tx = app.own().await;
    store::apply(
        &mut tx,
        &sealer,
        &meta(&app, "e1"),
        &answer("tg-e", "budget", "50k+"),
    )
    .await
    .unwrap()
    .unwrap();
    tx.commit().await.unwrap();
    // A job made now, then an erasure that holds the lead while the job waits.
    let job = meta(&app, "e2");
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut erasing = app.own().await;
    store::hold_lead(&mut erasing, tenant, "tg-e")
        .await
        .unwrap();
    sqlx::query("insert into erasures (tenant_id, external_id) values ($1, 'tg-e')")
        .bind(tenant)
        .execute(&mut *erasing)
        .await
        .unwrap();
    sqlx::query("delete from leads where tenant_id = $1 and external_id = 'tg-e'")
        .bind(tenant)
        .execute(&mut *erasing)
        .await
        .unwrap();
    let waiter = waiting_job(&app, answer("tg-e", "timeline", "this month"), job);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the job waits for the erasure");
    erasing.commit().await.unwrap();
    assert_eq!(waiter.await.unwrap(), None, "the job skips the erased lead");
    let left: i64 = sqlx::query_scalar("select count(*) from leads where external_id = 'tg-e'")
        .fetch_one(&mut *app.own().await)
        .await
        .unwrap();
    assert_eq!(left, 0, "the erased lead did not come back");
    app.stop().await;
}

/// Forty jobs of one tenant at once through the group commit: each gets the outcome it would
/// have had alone — new leads at version 1, five changes of one lead as five versions with
/// every answer kept, jobs made before their lead's erasure skipped — and they were written in
/// fewer transactions than jobs (their audit rows share transaction ids).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_ready_together_are_committed_together_with_the_outcome_each_would_have_alone() {
    let app = spawn_app().await;
    let group = leadq_jobs::lead::group::GroupCommit::new(app.db.pool.clone(), app.sealer());
    // Jobs for "tg-gone" were made a minute ago; the lead is erased now.
    let mut old = meta(&app, "gone");
    old.timestamp -= chrono::Duration::minutes(1);
    leadq_jobs::lead::erase(
        &app.db.pool,
        &app.queue,
        &app.sealer(),
        app.tenant.tenant_id,
        "tg-gone",
        "operator:t",
        "c",
    )
    .await
    .unwrap();
    let questions = ["budget", "timeline", "need", "company_size", "contact"];
    let mut jobs = Vec::new();
    for i in 0..30 {
        jobs.push((
            meta(&app, &format!("n{i}")),
            answer(&format!("tg-n{i}"), "budget", "50k+"),
        ));
    }
    for (i, q) in questions.iter().enumerate() {
        jobs.push((meta(&app, &format!("s{i}")), answer("tg-same", q, "yes")));
    }
    for i in 0..5 {
        let mut m = old.clone();
        m.message_id = format!("g{i}");
        jobs.push((m, answer("tg-gone", "budget", "50k+")));
    }
    let tasks: Vec<_> = jobs
        .into_iter()
        .map(|(m, input)| {
            let group = group.clone();
            tokio::spawn(async move { group.apply(m, input, Attached::Score(None)).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap().expect("every job succeeds"));
    }
    for (i, o) in outcomes[..30].iter().enumerate() {
        let a = o.as_ref().unwrap_or_else(|| panic!("job {i} applied"));
        assert_eq!((a.version, a.changed), (1, true), "job {i}");
    }
    let mut same: Vec<i64> = outcomes[30..35]
        .iter()
        .map(|o| o.as_ref().unwrap().version)
        .collect();
    same.sort_unstable();
    assert_eq!(
        same,
        [1, 2, 3, 4, 5],
        "each change of one lead is a version"
    );
    assert!(
        outcomes[35..].iter().all(Option::is_none),
        "erased: skipped"
    );

    let mut tx = app.own().await;
    let answers: serde_json::Value =
        sqlx::query_scalar("select answers from leads where external_id = 'tg-same'")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    for q in questions {
        assert_eq!(answers[q], "yes", "{answers}");
    }
    let (leads, scores): (i64, i64) =
        sqlx::query_as("select (select count(*) from leads), (select count(*) from lead_scores)")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!((leads, scores), (31, 35), "no lead for the erased one");
    tx.commit().await.unwrap();
    assert_grouped_and_verified(&app, "lead.score", 35).await;
    app.stop().await;
}

/// The audit trail holds `rows` rows of `action` (one a job or version), written in fewer
/// transactions than rows (a group commit), and the whole trail verifies.
pub(crate) async fn assert_grouped_and_verified(app: &TestApp, action: &str, rows: i64) {
    let (found, transactions): (i64, i64) =
        sqlx::query_as("select count(*), count(distinct xid) from audit_log where action = $1")
            .bind(action)
            .fetch_one(&mut *app.own().await)
            .await
            .unwrap();
    assert_eq!(found, rows, "{action} audit rows");
    assert!(
        transactions < rows,
        "{rows} {action} rows in {transactions} transactions: no group commit"
    );
    let verified = leadq_platform::audit::verify_all(&app.db.pool, app.settings.audit_keys())
        .await
        .unwrap();
    assert!(leadq_platform::audit::summary(&verified).0);
}

/// A job that cannot be applied (its stored lead no longer opens) fails the batch it is in;
/// the batch's jobs then run one by one: that job gets its own permanent error, the others
/// are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_job_in_a_group_commit_fails_alone() {
    let app = spawn_app().await;
    let sealer = app.sealer();
    let mut tx = app.own().await;
    store::apply(
        &mut tx,
        &sealer,
        &meta(&app, "b0"),
        &answer("tg-bad", "budget", "50k+"),
    )
    .await
    .unwrap()
    .unwrap();
    tx.commit().await.unwrap();
    app.seal_email_under_lost_key("tg-bad").await;
    let group = leadq_jobs::lead::group::GroupCommit::new(app.db.pool.clone(), sealer);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let id = if i == 5 {
            "tg-bad".to_owned()
        } else {
            format!("tg-ok{i}")
        };
        let (group, m) = (group.clone(), meta(&app, &format!("b{}", i + 1)));
        tasks.push(tokio::spawn(async move {
            group
                .apply(m, answer(&id, "timeline", "now"), Attached::Score(None))
                .await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let outcome = t.await.unwrap();
        if i == 5 {
            let e = outcome.expect_err("the unreadable lead fails");
            assert_eq!(e.code(), "sealed_data_unreadable", "{e:?}");
        } else {
            assert_eq!(outcome.expect("the others are written").unwrap().version, 1);
        }
    }
    let written: i64 =
        sqlx::query_scalar("select count(*) from leads where external_id like 'tg-ok%'")
            .fetch_one(&mut *app.own().await)
            .await
            .unwrap();
    assert_eq!(written, 11);
    app.stop().await;
}

/// The lead read is planned once per connection, not on every job. PostgreSQL sizes `unnest`
/// of a bound array by the array's length, so a read of one or two leads always looked cheaper
/// planned afresh than on the statement's reusable plan, and was planned again on every call:
/// under row-level security, most of the statement's cost at 50 tenants (docs/bench/plans.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lead_read_runs_on_its_reusable_plan_after_a_few_jobs() {
    let app = spawn_app().await;
    // One connection, so every run and the look at its prepared statements share it.
    let pool = one_connection(&app).await;
    let sealer = app.sealer();
    // PostgreSQL plans a statement's first five runs afresh, then weighs its reusable plan.
    for i in 0..8 {
        let m = meta(&app, &format!("p{i}"));
        let mut tx =
            leadq_platform::db::begin(&pool, leadq_platform::db::Scope::Tenant(m.tenant_id))
                .await
                .unwrap();
        let input = answer(&format!("tg-p{i}"), "budget", "50k+");
        store::apply(&mut tx, &sealer, &m, &input)
            .await
            .unwrap()
            .expect("applied");
        tx.commit().await.unwrap();
    }
    let (generic, custom): (i64, i64) = sqlx::query_as(
        "select generic_plans, custom_plans from pg_prepared_statements
          where statement like 'select l.*,%with ordinality as u(external_id,%'",
    )
    .fetch_one(&pool)
    .await
    .expect("the lead read was prepared on this connection");
    assert!(
        generic >= 1,
        "the lead read was planned afresh on all {custom} runs, never on its reusable plan"
    );
    pool.close().await;
    app.stop().await;
}

/// A group commit finds each lead it updates by its primary key (`on conflict`), not by a
/// search whose plan depends on the table's statistics. The statement's reusable plan is made
/// after five runs; made while the tenant had a few leads, the search by `id` became a scan of
/// all the tenant's leads in every batch after, however many the tenant came to have
/// (docs/bench/plans.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_commit_updates_its_leads_without_reading_the_tenants_others() {
    let app = spawn_app().await;
    // One connection: the reusable plan is per connection, and so are the counters' flushes.
    let pool = one_connection(&app).await;
    let group = leadq_jobs::lead::group::GroupCommit::new(pool.clone(), app.sealer());
    for i in 0..8 {
        let m = meta(&app, &format!("f{i}"));
        let input = answer(&format!("tg-f{i}"), "budget", "50k+");
        group
            .apply(m, input, Attached::Score(None))
            .await
            .unwrap()
            .expect("applied");
    }
    // The tenant grows (no ANALYZE runs in between: the plan made above is kept).
    let mut tx = app.db.owner_tx(app.tenant.tenant_id).await;
    sqlx::query(
        "insert into leads (tenant_id, external_id, source)
         select $1, 'tg-bulk-' || i, 'telegram' from generate_series(1, 3000) as i",
    )
    .bind(app.tenant.tenant_id)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let before = rows_read(&pool, "leads").await;
    for i in 0..3 {
        let m = meta(&app, &format!("u{i}"));
        let input = answer(&format!("tg-f{i}"), "timeline", "now");
        let applied = group
            .apply(m, input, Attached::Score(None))
            .await
            .unwrap()
            .expect("applied");
        assert_eq!(applied.version, 2);
    }
    let rows = rows_read(&pool, "leads").await - before;
    assert!(
        rows <= 30,
        "three updates of one lead each read {rows} rows of leads: the tenant's 3,008 scanned"
    );
    pool.close().await;
    app.stop().await;
}
