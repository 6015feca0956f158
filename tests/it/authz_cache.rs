//! The worker's authorization cache (`leadq_jobs::authz::cache`): answers are reused, and a
//! revocation or suspension is honoured from the next job once PostgreSQL notifies it, and
//! after the TTL at worst.

use std::time::Duration;

use chrono::Utc;
use leadq_jobs::authz::cache::AuthzCache;
use leadq_jobs::authz::{authorize, Denied, Mode};
use leadq_queue::envelope::JobMeta;
use leadq_testkit::{lead_job, sample_lead, spawn_app, wait_for, TestApp};

fn meta(app: &TestApp) -> JobMeta {
    JobMeta {
        job_id: uuid::Uuid::new_v4(),
        attempt: 1,
        schema_version: 1,
        message_id: "m-1".into(),
        tenant_id: app.tenant.tenant_id,
        user_id: app.key_actor(),
        action: "lead_score".into(),
        timestamp: Utc::now(),
        correlation_id: "c-1".into(),
        trace_context: Default::default(),
        shadow: false,
    }
}

/// Runs `sql` with `$1 = id` in `tenant`'s scope, committed (as a raw change would be).
async fn change(app: &TestApp, tenant: uuid::Uuid, sql: &str, id: uuid::Uuid) {
    let mut tx = app.scoped(tenant).await;
    let done = sqlx::query(sql).bind(id).execute(&mut *tx).await.unwrap();
    assert_eq!(done.rows_affected(), 1, "{sql}");
    tx.commit().await.unwrap();
}

async fn revoke(app: &TestApp) {
    let sql = "update api_keys set revoked_at = now() where id = $1";
    change(app, app.tenant.tenant_id, sql, app.tenant.key_id).await;
}

async fn check(app: &TestApp, cache: &AuthzCache) -> Result<Mode, Denied> {
    authorize(&app.db.pool, Some(cache), &meta(app))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_notification_a_revoked_key_is_refused_after_the_ttl() {
    let app = spawn_app().await;
    let cache = AuthzCache::with_ttl(Duration::from_millis(300));
    assert_eq!(check(&app, &cache).await, Ok(Mode::Enabled));
    assert_eq!(cache.len(), 1, "the answer is kept");
    revoke(&app).await;
    // Nobody follows the notifications here: the kept answer is used until its TTL ...
    assert_eq!(check(&app, &cache).await, Ok(Mode::Enabled));
    tokio::time::sleep(Duration::from_millis(350)).await;
    // ... and not one moment longer.
    assert_eq!(check(&app, &cache).await, Err(Denied::NotTenantPrincipal));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notified_revocation_or_suspension_drops_the_answer_at_once() {
    let app = spawn_app().await;
    // A TTL far longer than the test: only the notification can make the answer go.
    let cache = AuthzCache::with_ttl(Duration::from_secs(3600));
    let follower = tokio::spawn(cache.clone().follow(app.db.pool.clone()));
    // Listening once a no-op change to the tenant empties the cache.
    wait_for("the listener", Duration::from_secs(20), || async {
        assert_eq!(check(&app, &cache).await, Ok(Mode::Enabled));
        let sql = "update tenants set status = status where id = $1";
        change(&app, app.tenant.tenant_id, sql, app.tenant.tenant_id).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        cache.is_empty().then_some(())
    })
    .await;

    assert_eq!(check(&app, &cache).await, Ok(Mode::Enabled));
    let other = app.other_tenant().await;
    let mut other_meta = meta(&app);
    other_meta.tenant_id = other.tenant_id;
    other_meta.user_id = format!("api_key:{}", other.key_id);
    // Kept once the notifications of its own creation are in (a read that raced one is not).
    wait_for(
        "the other tenant's answer kept",
        Duration::from_secs(10),
        || async {
            let allowed = authorize(&app.db.pool, Some(&cache), &other_meta).await;
            assert_eq!(allowed.unwrap(), Ok(Mode::Enabled));
            (cache.len() == 2).then_some(())
        },
    )
    .await;

    revoke(&app).await;
    let refused = wait_for("the revocation", Duration::from_secs(10), || async {
        check(&app, &cache).await.err()
    })
    .await;
    assert_eq!(refused, Denied::NotTenantPrincipal);
    let still = authorize(&app.db.pool, Some(&cache), &other_meta).await;
    assert_eq!(still.unwrap(), Ok(Mode::Enabled), "another tenant's answer");

    let sql = "update tenants set status = 'suspended' where id = $1";
    change(&app, other.tenant_id, sql, other.tenant_id).await;
    let suspended = wait_for("the suspension", Duration::from_secs(10), || async {
        authorize(&app.db.pool, Some(&cache), &other_meta)
            .await
            .unwrap()
            .err()
    })
    .await;
    assert_eq!(suspended, Denied::TenantInactive);
    follower.abort();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_job_of_a_key_revoked_after_its_tenant_was_cached_is_dead_lettered() {
    let app = spawn_app().await;
    let worker = app.spawn_worker().await;
    // The key's answer is now cached in the worker (for 2 s).
    let res = app.post_lead(app.key(), &sample_lead("tg-1")).await;
    assert_eq!(res.status(), 202);
    wait_for("the first lead", Duration::from_secs(20), || async {
        (app.queue.counts("lead_score").await.unwrap().done == 1).then_some(())
    })
    .await;
    revoke(&app).await;
    // Made by the key before the revocation, still queued: runs well within the cache's TTL.
    // (Its contact fields are not sealed: a job let through would die later, for that.)
    let mut job = lead_job(
        app.tenant.tenant_id,
        &app.key_actor(),
        "m-after",
        "c-after",
        sample_lead("tg-2"),
    );
    job.envelope.timestamp = Utc::now() - chrono::Duration::seconds(1);
    job.run_at = Some(Utc::now() + chrono::Duration::milliseconds(300));
    app.queue.enqueue(vec![job]).await.unwrap();
    let dead = wait_for("the refusal", Duration::from_secs(20), || async {
        let d = app.queue.dead_letters("lead_score", 10).await.unwrap();
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(dead[0].reason, "unauthorized");
    worker.stop().await;
    app.stop().await;
}

/// The API's cache of authenticated keys (`leadq_platform::principals`): the same bound as the
/// worker's, from the request's side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apis_key_cache_refuses_a_revoked_key_once_notified_and_after_its_ttl_at_worst() {
    use leadq_platform::principals::KeyCache;
    use leadq_platform::tenant::AuthFailure;
    let app = spawn_app().await;
    let pool = &app.db.pool;
    let other = app.other_tenant().await;

    // No follower: a kept key is used until its TTL, and not a moment longer.
    let short = KeyCache::with_ttl(Duration::from_millis(300));
    assert!(short.authenticate(pool, app.key()).await.unwrap().is_ok());
    assert!(short
        .authenticate(pool, "lq_000000000000_nope")
        .await
        .unwrap()
        .is_err());
    assert_eq!(short.len(), 1, "only the key that authenticated is kept");
    let mut tx = app.scoped(other.tenant_id).await;
    sqlx::query("update api_keys set revoked_at = now() where id = $1")
        .bind(other.key_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        short
            .authenticate(pool, other.api_key.expose())
            .await
            .unwrap()
            .err(),
        Some(AuthFailure::Revoked),
        "a refused key is never kept"
    );
    revoke(&app).await;
    assert!(short.authenticate(pool, app.key()).await.unwrap().is_ok());
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        short.authenticate(pool, app.key()).await.unwrap().err(),
        Some(AuthFailure::Revoked)
    );

    app.stop().await;

    // Followed, with a TTL far longer than the test: only the notification can drop the key.
    let app = spawn_app().await;
    let pool = &app.db.pool;
    let long = KeyCache::with_ttl(Duration::from_secs(3600));
    let follower = tokio::spawn({
        let keys = long.clone();
        leadq_platform::changes::follow(pool.clone(), move |c| keys.drop_changed(c))
    });
    wait_for("the listener", Duration::from_secs(20), || async {
        assert!(long.authenticate(pool, app.key()).await.unwrap().is_ok());
        let sql = "update tenants set status = status where id = $1";
        change(&app, app.tenant.tenant_id, sql, app.tenant.tenant_id).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        long.is_empty().then_some(())
    })
    .await;
    wait_for("the key kept", Duration::from_secs(10), || async {
        assert!(long.authenticate(pool, app.key()).await.unwrap().is_ok());
        (long.len() == 1).then_some(())
    })
    .await;
    revoke(&app).await;
    let refused = wait_for("the revocation", Duration::from_secs(10), || async {
        long.authenticate(pool, app.key()).await.unwrap().err()
    })
    .await;
    assert_eq!(refused, AuthFailure::Revoked);
    follower.abort();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_that_miss_the_same_answer_at_once_read_it_once() {
    use sqlx::Connection;
    let app = spawn_app().await;
    let cache = AuthzCache::with_ttl(Duration::from_secs(3600));
    // The owner holds a table of the lookup still: every read that reaches PostgreSQL waits
    // on the lock, where it is counted.
    let mut owner = sqlx::PgConnection::connect(&app.db.owner_url)
        .await
        .unwrap();
    let mut looking = sqlx::PgConnection::connect(&app.db.owner_url)
        .await
        .unwrap();
    let mut tx = owner.begin().await.unwrap();
    sqlx::query("lock table operators in access exclusive mode")
        .execute(&mut *tx)
        .await
        .unwrap();
    let waiting = "select count(*) from pg_locks \
                   where relation = 'operators'::regclass and not granted";
    // Sixteen jobs of one tenant and key start together on a cold cache (the pool has ten
    // connections: without turns, ten reads would wait on the lock).
    let asks = futures::future::join_all((0..16).map(|_| check(&app, &cache)));
    let watch = async {
        let began = std::time::Instant::now();
        loop {
            let n: i64 = sqlx::query_scalar(waiting)
                .fetch_one(&mut looking)
                .await
                .unwrap();
            if n > 0 {
                break;
            }
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "no lookup reached the lock"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Time for the others to pile up behind it, if they were going to.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let n: i64 = sqlx::query_scalar(waiting)
            .fetch_one(&mut looking)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        n
    };
    let (answers, reads) = tokio::join!(asks, watch);
    assert_eq!(reads, 1, "lookups of one answer waiting at once");
    assert!(
        answers.iter().all(|a| *a == Ok(Mode::Enabled)),
        "{answers:?}"
    );
    assert_eq!(cache.len(), 1);
    app.stop().await;
}
