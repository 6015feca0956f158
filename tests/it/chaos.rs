//! Faults with real processes: Redis (AOF `everysec`) restarted under load.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use leadq_testkit::{sample_lead, spawn_app_with, wait_for, TestApp};
use serde_json::{json, Value};

/// A private redis-server with an append-only file, on a port of its own.
struct PrivateRedis {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    fn new() -> Self {
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

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn start(&mut self) {
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
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
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
    let ids: Vec<String> = sqlx::query_scalar("select external_id from leads order by 1")
        .fetch_all(&mut *app.own().await)
        .await
        .unwrap();
    accepted.sort();
    assert_eq!(
        ids, accepted,
        "exactly the acknowledged leads, none lost, none extra"
    );
    // (The test's own connection reports the restart once, then reconnects.)
    let c = wait_for("queue counts", Duration::from_secs(10), || async {
        app.queue.counts("lead_score").await.ok()
    })
    .await;
    assert_eq!(c.dead, 0, "{c:?}");
    println!(
        "redis restart: {n} acknowledged, {} stored, {} completed runs recorded in Redis, 0 dead",
        ids.len(),
        c.done
    );
    worker.stop().await;
    app.stop().await;
}
