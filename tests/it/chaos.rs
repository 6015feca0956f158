//! Faults with real processes: Redis (AOF `everysec`) restarted under load, PostgreSQL stopped
//! for 30 s under load.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use leadq_testkit::{sample_lead, spawn_app_in, spawn_app_with, wait_for, TestApp, TestDb};
use serde_json::{json, Value};

/// A private redis-server with an append-only file, on a port of its own.
pub(crate) struct PrivateRedis {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub(crate) fn new() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("leadq-chaos-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Self {
            dir,
            port,
            child: None,
        };
        r.start();
        r
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub(crate) fn start(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (installed by scripts/test)");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        for _ in 0..100 {
            if std::net::TcpStream::connect(&addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not start on {addr}");
    }

    /// A restart as an operator or a supervisor does it: SIGTERM (Redis flushes its AOF), wait.
    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

/// A queue of `app`'s database whose Redis went away after it connected (a private
/// redis-server, stopped): every call to Redis from then on fails.
pub(crate) async fn queue_without_redis(app: &leadq_testkit::TestApp) -> leadq_queue::Queue {
    let mut redis = PrivateRedis::new();
    let url = redis.url();
    let s = leadq_testkit::settings(
        &app.db.url,
        &leadq_testkit::queue_prefix(),
        &[("REDIS_URL", url.as_str())],
    );
    let queue = leadq_queue::Queue::connect(
        s.redis_url(),
        s.queue.clone(),
        leadq_testkit::signer(&app.settings),
    )
    .await
    .unwrap();
    redis.stop();
    queue
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn post(app: &TestApp, id: &str) -> reqwest::Response {
    let mut lead = sample_lead(id);
    lead["message_id"] = json!(format!("m-{id}"));
    app.post_lead(app.key(), &lead).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_under_load_loses_no_acknowledged_job_and_everyone_reconnects() {
    let mut redis = PrivateRedis::new();
    let app = spawn_app_with(&[("REDIS_URL", redis.url().as_str())]).await;
    let worker = app.spawn_worker().await;
    let mut accepted = Vec::new();
    for i in 0..60 {
        let id = format!("tg-a{i}");
        assert_eq!(post(&app, &id).await.status(), 202);
        accepted.push(id);
    }

    redis.stop();
    // Down: producers get a clear 503, readiness says which dependency is missing.
    let res = post(&app, "tg-down").await;
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "queue_unavailable");
    let res = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let ready: Value = res.json().await.unwrap();
    assert_eq!(ready["checks"]["postgres"], "ok");
    assert_ne!(ready["checks"]["redis"], "ok");
    tokio::time::sleep(Duration::from_secs(1)).await;

    redis.start();
    // Back: the API reconnects by itself.
    wait_for(
        "the API enqueues again",
        Duration::from_secs(20),
        || async { (post(&app, "tg-b0").await.status() == 202).then_some(()) },
    )
    .await;
    accepted.push("tg-b0".into());
    for i in 1..60 {
        let id = format!("tg-b{i}");
        assert_eq!(post(&app, &id).await.status(), 202);
        accepted.push(id);
    }
    // The worker reconnects by itself too, and every acknowledged job runs.
    let n = accepted.len() as i64;
    wait_for(
        "every accepted lead stored",
        Duration::from_secs(60),
        || async {
            let stored: i64 = sqlx::query_scalar("select count(*) from leads")
                .fetch_one(&mut *app.own().await)
                .await
                .unwrap();
            (stored == n).then_some(())
        },
    )
    .await;
    let stored = assert_stored_exactly(
        &app,
        &mut accepted,
        "exactly the acknowledged leads, none lost, none extra",
    )
    .await;
    // Every job's completion is recorded too (a lead is stored a moment before its job's
    // acknowledgement). The test's own connection reports the restart once, then reconnects.
    let c = wait_for("every job completed", Duration::from_secs(10), || async {
        let c = app.queue.counts("lead_score").await.ok()?;
        (c.done >= n as u64).then_some(c)
    })
    .await;
    assert_eq!((c.done, c.dead), (n as u64, 0), "{c:?}");
    println!(
        "redis restart: {n} acknowledged, {} stored, {} completed runs recorded in Redis, 0 dead",
        stored, c.done
    );
    worker.stop().await;
    app.stop().await;
}

/// A PostgreSQL server of this test's own (the `chaos` profile of `scripts/lib/services.sh`,
/// port 55434), so stopping it disturbs no other test. Stopped again when dropped.
struct PrivatePostgres;

impl PrivatePostgres {
    const ADMIN_URL: &'static str = "postgres://leadq:leadq@127.0.0.1:55434/leadq";

    fn services(action: &str) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lib/services.sh");
        let ok = Command::new("bash")
            .args([script, action, "chaos"])
            .stdout(Stdio::null())
            .status()
            .expect("run scripts/lib/services.sh")
            .success();
        assert!(ok, "services.sh {action} chaos failed");
    }

    fn start() -> Self {
        Self::services("pg-start");
        Self
    }

    /// `pg_ctl stop -m fast`: sessions are terminated, new connections refused.
    fn stop(&self) {
        Self::services("pg-stop");
    }

    fn restart(&self) {
        Self::services("pg-start");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        Self::services("pg-stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_for_30_s_under_load_loses_and_dead_letters_nothing() {
    let pg = PrivatePostgres::start();
    let app = spawn_app_in(TestDb::on(PrivatePostgres::ADMIN_URL).await, &[]).await;
    let worker = app.spawn_worker().await;
    let tenant = app.tenant.tenant_id;
    // Hold the tenant's jobs while they are accepted, so the outage meets a full queue.
    app.queue.pause_tenant("lead_score", tenant).await.unwrap();
    let n = 100;
    let mut accepted: Vec<String> = Vec::new();
    for i in 0..n {
        let id = format!("tg-pg{i}");
        assert_eq!(post(&app, &id).await.status(), 202);
        accepted.push(id);
    }

    pg.stop();
    let down = std::time::Instant::now();
    // Producers get a clear 503 while the database is down: their key cannot be checked. A key
    // the API authenticated moments ago is used for at most its cache's TTL (2 s; the cache is
    // also cleared when its change listener loses the database), and a lead accepted meanwhile
    // waits in Redis like the others.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let body: Value = loop {
        let id = format!("tg-pg-down{}", accepted.len());
        let res = post(&app, &id).await;
        match res.status().as_u16() {
            503 => break res.json().await.unwrap(),
            202 => accepted.push(id),
            other => panic!("{other} while the database is down"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "leads still accepted 10 s after the database stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["error"]["code"], "database_unavailable");
    let n = accepted.len();
    // The held jobs run into the outage: every one of them fails on the database.
    let resumed = app.queue.resume_tenant("lead_score", tenant).await.unwrap();
    assert_eq!(resumed.resumed, n as u64);
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(down.elapsed())).await;
    let during = app.queue.counts("lead_score").await.unwrap();
    assert_eq!(
        during.dead, 0,
        "dead-lettered during the outage: {during:?}"
    );
    assert!(during.rate_limited > 0, "no job met the outage: {during:?}");
    assert_eq!(
        during.done, 0,
        "jobs completed without a database: {during:?}"
    );

    pg.restart();
    let up = std::time::Instant::now();
    wait_for(
        "every accepted lead stored",
        Duration::from_secs(90),
        || async {
            let stored: Option<i64> = sqlx::query_scalar("select count(*) from leads")
                .fetch_one(&mut *app.own().await)
                .await
                .ok();
            (stored == Some(n as i64)).then_some(())
        },
    )
    .await;
    let recovered_in = up.elapsed();
    let c = wait_for("all jobs completed", Duration::from_secs(30), || async {
        let c = app.queue.counts("lead_score").await.ok()?;
        (c.done == n as u64).then_some(c)
    })
    .await;
    assert_stored_exactly(
        &app,
        &mut accepted,
        "exactly the accepted leads, none lost, none extra",
    )
    .await;
    assert_eq!((c.dead, c.pending, c.scheduled), (0, 0, 0), "{c:?}");
    println!(
        "postgres down 30 s: {n} enqueued, {} completed, {} deferred runs (db_unavailable, no \
         attempt used), 0 lost, 0 duplicated, {} dead; all stored {:.1} s after the restart",
        c.done,
        c.rate_limited,
        c.dead,
        recovered_in.as_secs_f64()
    );
    worker.stop().await;
    app.stop().await;
}

/// The leads table holds exactly `accepted` (by external id): none lost, none extra. Returns
/// how many are stored.
async fn assert_stored_exactly(app: &TestApp, accepted: &mut [String], what: &str) -> usize {
    let ids: Vec<String> = sqlx::query_scalar("select external_id from leads order by 1")
        .fetch_all(&mut *app.own().await)
        .await
        .unwrap();
    accepted.sort();
    assert_eq!(ids, accepted, "{what}");
    ids.len()
}

/// Redis down: a Chatwoot delivery is answered 429 with `Retry-After`, its body keeping the
/// stable code, because Chatwoot retries an agent-bot delivery only after a 429 or a 500 (its
/// 503 was never retried, and the event was lost). Once Redis is back, the retry of the same
/// delivery is accepted, not taken for a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_refused_in_an_outage_is_answered_so_that_chatwoot_retries_it() {
    let mut redis = PrivateRedis::new();
    let app = crate::webhooks::configured_app_with(&[("REDIS_URL", redis.url().as_str())]).await;
    let body = crate::webhooks::message_body(crate::webhooks::ACCOUNT, 9_001, false, "incoming");
    redis.stop();
    let res = crate::webhooks::post_chatwoot(&app, &body, "d-outage-1").await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "3");
    let refused: Value = res.json().await.unwrap();
    assert_eq!(refused["error"]["code"], "queue_unavailable", "{refused}");
    redis.start();
    let answer = wait_for("the retry accepted", Duration::from_secs(20), || async {
        let res = crate::webhooks::post_chatwoot(&app, &body, "d-outage-1").await;
        (res.status() == 200).then_some(res)
    })
    .await;
    let v: Value = answer.json().await.unwrap();
    assert_eq!(v["status"], "accepted", "{v}");
    // And its resend now is a duplicate.
    let again: Value = crate::webhooks::post_chatwoot(&app, &body, "d-outage-1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["status"], "duplicate", "{again}");
    app.stop().await;
}
