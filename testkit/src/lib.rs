//! Test support: a fresh PostgreSQL database and an isolated Redis key space per test, and
//! the real API and worker spawned in-process on port 0.
//!
//! Tests need a real PostgreSQL and a real Redis: `scripts/test` starts private ones and
//! exports `DATABASE_URL` (any database of a role allowed to create databases) and
//! `REDIS_URL`. Each test gets its own database (`leadq_test_<uuid>`, migrated) and its own
//! queue prefix, so tests run in parallel without seeing each other.
//!
//! Set `TEST_LOG=1` to see the application's logs. [`spans`] captures OpenTelemetry spans for
//! the tests that follow a trace.

pub mod spans;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use leadq_jobs::kinds;
use leadq_platform::config::{Needs, Settings};
use leadq_platform::keyring::Keyring;
use leadq_platform::secret::Secret;
use leadq_platform::tenant::{self, CreatedTenant};
use leadq_queue::envelope::Envelope;
use leadq_queue::signing::Signer;
use leadq_queue::{NewJob, Queue};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[allow(clippy::disallowed_methods)]
fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test, which starts PostgreSQL and Redis")
    })
}

fn init_logs() {
    spans::install();
    leadq_platform::metrics::install();
}

/// Replaces the database name in a PostgreSQL URL.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let root = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{root}/{db}?{q}"),
        None => format!("{root}/{db}"),
    }
}

/// A freshly created and migrated database.
#[derive(Debug)]
pub struct TestDb {
    /// Its URL.
    pub url: String,
    /// A pool on it.
    pub pool: PgPool,
}

impl TestDb {
    /// Creates `leadq_test_<uuid>` on the test server and applies every migration.
    pub async fn new() -> Self {
        Self::on(&env("DATABASE_URL")).await
    }

    /// Creates `leadq_test_<uuid>` on the server of `admin` (a URL of an existing database)
    /// and applies every migration.
    pub async fn on(admin: &str) -> Self {
        init_logs();
        let name = format!("leadq_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(admin)
            .await
            .expect("connect to the admin database");
        sqlx::query(&format!("create database {name}"))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        let url = with_database(admin, &name);
        let pool = leadq_platform::db::connect(&Secret::new(url.clone()), 10)
            .await
            .expect("connect to the test database");
        leadq_platform::db::migrate(&pool).await.expect("migrate");
        Self { url, pool }
    }
}

/// A unique queue prefix, so tests never share Redis keys.
pub fn queue_prefix() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Settings for a test: the given database, the test Redis, a fresh queue prefix, port 0 for
/// every server, and short leases so recovery tests are quick. `extra` overrides anything.
pub fn settings(db_url: &str, prefix: &str, extra: &[(&str, &str)]) -> Settings {
    let mut vars: BTreeMap<String, String> = [
        ("DATABASE_URL", db_url.to_owned()),
        ("REDIS_URL", env("REDIS_URL")),
        ("LEADQ_API_ADDR", "127.0.0.1:0".into()),
        ("LEADQ_WORKER_ADDR", "127.0.0.1:0".into()),
        ("LEADQ_QUEUE_PREFIX", prefix.to_owned()),
        ("LEADQ_LEASE_MS", "3000".into()),
        ("LEADQ_SHUTDOWN_TIMEOUT_SECS", "10".into()),
        (
            "LEADQ_SIGNING_KEYS",
            Keyring::random("test").to_spec().expose().to_owned(),
        ),
        (
            "LEADQ_DATA_KEYS",
            Keyring::random("data").to_spec().expose().to_owned(),
        ),
        (
            "LEADQ_OPERATOR_TOKENS",
            format!("oncall:{}", uuid::Uuid::new_v4().simple()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in extra {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    Settings::load(
        &vars,
        Needs {
            database: true,
            redis: true,
            keys: true,
        },
        kinds::CATALOGUE,
    )
    .expect("valid test settings")
}

/// The envelope signer of `settings`.
pub fn signer(settings: &Settings) -> Signer {
    Signer::new(settings.signing_keys().clone())
}

/// The API running in-process, with one tenant and its key.
#[derive(Debug)]
pub struct TestApp {
    /// `http://127.0.0.1:<port>` (`https://` when `LEADQ_API_TLS_CERT_FILE` is set).
    pub address: String,
    /// The test database.
    pub db: TestDb,
    /// The settings the app runs with.
    pub settings: Settings,
    /// A queue handle on the app's key space.
    pub queue: Queue,
    /// The tenant created for the test.
    pub tenant: CreatedTenant,
    /// An HTTP client.
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Builds and starts the API on port 0 with a fresh database, queue prefix and tenant.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Like [`spawn_app`], with setting overrides.
pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    spawn_app_in(TestDb::new().await, extra).await
}

/// Like [`spawn_app_with`], on a database of the caller's (a private server, say).
pub async fn spawn_app_in(db: TestDb, extra: &[(&str, &str)]) -> TestApp {
    let settings = settings(&db.url, &queue_prefix(), extra);
    let app = leadq_api::Application::build(&settings)
        .await
        .expect("build the API");
    let addr: SocketAddr = app.addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let queue = Queue::connect(
        settings.redis_url(),
        settings.queue.clone(),
        signer(&settings),
    )
    .await
    .expect("connect the test queue");
    let tenant = tenant::create(&db.pool, &format!("t-{}", &queue_prefix()[1..]), "test")
        .await
        .expect("create the test tenant");
    let scheme = if settings.tls.api.is_some() {
        "https"
    } else {
        "http"
    };
    TestApp {
        address: format!("{scheme}://{addr}"),
        db,
        settings,
        queue,
        tenant,
        client: reqwest::Client::new(),
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestApp {
    /// Seals and opens personal data with the app's data keys.
    pub fn sealer(&self) -> leadq_jobs::pii::Sealer {
        leadq_jobs::pii::Sealer::new(self.settings.data_keys().clone())
    }

    /// Applies an integration update to the test tenant (as `leadq tenant update` does).
    pub async fn configure(&self, update: &leadq_jobs::integrations::settings::TenantUpdate) {
        leadq_jobs::integrations::settings::update(
            &self.db.pool,
            &self.sealer(),
            &self.tenant.slug,
            update,
            "operator:test",
        )
        .await
        .expect("configure the test tenant");
    }

    /// POSTs raw bytes to `path` with the given headers.
    pub async fn post_raw(
        &self,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(format!("{}{path}", self.address))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        req.send().await.expect("send the request")
    }

    /// The test tenant's API key.
    pub fn key(&self) -> &str {
        self.tenant.api_key.expose()
    }

    /// The operator (on-call) token, for cross-tenant routes such as `/v1/status`.
    pub fn operator_token(&self) -> &str {
        self.settings.operator_tokens[0].1.expose()
    }

    /// `POST /v1/leads` with `key`.
    pub async fn post_lead(&self, key: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/leads", self.address))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// `POST path` with a JSON body and `token` as the bearer credential.
    pub async fn post_json(
        &self,
        path: &str,
        token: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.address))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// The principal the test tenant's key acts as: `api_key:<key id>`.
    pub fn key_actor(&self) -> String {
        format!("api_key:{}", self.tenant.key_id)
    }

    /// `GET path` with `key`.
    pub async fn get(&self, path: &str, key: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .bearer_auth(key)
            .send()
            .await
            .expect("request")
    }

    /// A transaction acting for `tenant` (row-level security shows only its rows).
    pub async fn scoped(&self, tenant: uuid::Uuid) -> sqlx::Transaction<'static, sqlx::Postgres> {
        leadq_platform::db::begin(&self.db.pool, leadq_platform::db::Scope::Tenant(tenant))
            .await
            .expect("begin a tenant transaction")
    }

    /// A transaction for the test tenant.
    pub async fn own(&self) -> sqlx::Transaction<'static, sqlx::Postgres> {
        self.scoped(self.tenant.tenant_id).await
    }

    /// A transaction acting for the platform (audit rows no tenant owns).
    pub async fn platform(&self) -> sqlx::Transaction<'static, sqlx::Postgres> {
        leadq_platform::db::begin(&self.db.pool, leadq_platform::db::Scope::Platform)
            .await
            .expect("begin a platform transaction")
    }

    /// The body of `GET url` (no credentials), e.g. a `/metrics` page.
    pub async fn text(&self, url: &str) -> String {
        self.client
            .get(url)
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("body")
    }

    /// Creates another tenant in the same database.
    pub async fn other_tenant(&self) -> CreatedTenant {
        tenant::create(
            &self.db.pool,
            &format!("o-{}", &queue_prefix()[1..]),
            "test",
        )
        .await
        .expect("create another tenant")
    }

    /// Starts a worker in-process on the app's database and queues.
    pub async fn spawn_worker(&self) -> TestWorker {
        TestWorker::spawn(self.settings.clone()).await
    }

    /// Stops the API.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// A worker running in-process.
#[derive(Debug)]
pub struct TestWorker {
    /// Its id.
    pub id: String,
    /// Its health server.
    pub health: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestWorker {
    /// Builds and starts a worker with `settings`.
    pub async fn spawn(settings: Settings) -> Self {
        let worker = leadq_worker::Worker::build(settings)
            .await
            .expect("build the worker");
        let id = worker.id().to_owned();
        let health = worker.health_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(worker.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Self {
            id,
            health,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops it gracefully and waits until it has.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("worker task").expect("worker result");
        }
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `lead_score` job of `tenant` caused by `user_id`, as a producer enqueues it (unsigned:
/// the queue signs it), with the given message and correlation ids.
pub fn lead_job(
    tenant: uuid::Uuid,
    user_id: &str,
    message_id: &str,
    correlation_id: &str,
    lead: serde_json::Value,
) -> NewJob {
    NewJob::now(
        Envelope::new(tenant, user_id, kinds::LEAD_SCORE, lead)
            .message_id(message_id)
            .correlation_id(correlation_id),
    )
}

/// A lead body as the Telegram bot sends it.
pub fn sample_lead(external_id: &str) -> serde_json::Value {
    serde_json::json!({
        "external_id": external_id,
        "source": "telegram",
        "name": "Ada Lovelace",
        "username": "ada",
        "email": "ada@example.com",
        "answers": {
            "budget": "50k+",
            "timeline": "this_month",
            "company_size": "51-200",
            "need": "We need a CRM integration for our sales team"
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_database_name_is_replaced() {
        assert_eq!(
            super::with_database("postgres://u:p@h:1/leadq", "x"),
            "postgres://u:p@h:1/x"
        );
        assert_eq!(
            super::with_database("postgres://u:p@h:1/leadq?sslmode=disable", "x"),
            "postgres://u:p@h:1/x?sslmode=disable"
        );
    }
}
