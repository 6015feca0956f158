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

/// Replaces the user and password in a PostgreSQL URL.
fn with_credentials(url: &str, user: &str, password: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{user}:{password}@{host}")
}

/// The migration owner every profile of `scripts/lib/services.sh` creates beside the runtime
/// role `leadq`.
pub const OWNER_ROLE: (&str, &str) = ("leadq_owner", "leadq_owner");

/// A freshly created and migrated database, set up as production runs it: the migration
/// owner created and migrated it and granted the runtime role; [`TestDb::pool`] connects as
/// the runtime role, which owns nothing.
#[derive(Debug)]
pub struct TestDb {
    /// Its URL, as the runtime role.
    pub url: String,
    /// Its URL, as the migration owner (for tests that need the owner's powers).
    pub owner_url: String,
    /// A pool on it, as the runtime role.
    pub pool: PgPool,
}

impl TestDb {
    /// Creates `leadq_it_<uuid>` on the test server as the migration owner
    /// (`LEADQ_TEST_OWNER_DATABASE_URL`, default: `DATABASE_URL` with the credentials of
    /// [`OWNER_ROLE`]), migrates it, and grants the runtime role of `DATABASE_URL`.
    pub async fn new() -> Self {
        let runtime = env("DATABASE_URL");
        #[allow(clippy::disallowed_methods)]
        let owner = std::env::var("LEADQ_TEST_OWNER_DATABASE_URL")
            .unwrap_or_else(|_| with_credentials(&runtime, OWNER_ROLE.0, OWNER_ROLE.1));
        Self::with_roles(&owner, &runtime).await
    }

    /// Like [`TestDb::new`] on the server of `runtime` (a URL of an existing database, as the
    /// runtime role), with the owner [`OWNER_ROLE`] of that server.
    pub async fn on(runtime: &str) -> Self {
        let owner = with_credentials(runtime, OWNER_ROLE.0, OWNER_ROLE.1);
        Self::with_roles(&owner, runtime).await
    }

    /// Creates `leadq_it_<uuid>` as `owner` (a URL of an existing database of a role with
    /// CREATEDB), applies every migration as `owner`, grants the runtime privileges to the
    /// user of `runtime`, and connects as that user. (Named apart from the `leadq_test_`
    /// databases the runtime role used to own, which `scripts/test` drops as that role.)
    pub async fn with_roles(owner: &str, runtime: &str) -> Self {
        init_logs();
        let name = format!("leadq_it_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(owner).await.unwrap_or_else(|e| {
            panic!(
                "connect as the migration owner ({e}); scripts/lib/services.sh creates the role \
                 {} beside leadq",
                OWNER_ROLE.0
            )
        });
        sqlx::query(&format!("create database {name}"))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        let _ = conn.close().await;
        let owner_url = with_database(owner, &name);
        let owner_pool = leadq_platform::db::connect(&Secret::new(owner_url.clone()), 2)
            .await
            .expect("connect to the test database as the owner");
        leadq_platform::db::migrate(&owner_pool)
            .await
            .expect("migrate");
        let role = runtime
            .parse::<sqlx::postgres::PgConnectOptions>()
            .expect("a PostgreSQL URL")
            .get_username()
            .to_owned();
        leadq_platform::roles::grant_runtime(&owner_pool, &role)
            .await
            .expect("grant the runtime role");
        owner_pool.close().await;
        let url = with_database(runtime, &name);
        let pool = leadq_platform::db::connect(&Secret::new(url.clone()), 10)
            .await
            .expect("connect to the test database");
        Self {
            url,
            owner_url,
            pool,
        }
    }

    /// A transaction of the table owner (not leadq's runtime role), scoped to `tenant`:
    /// someone going around leadq's audited paths, or editing rows behind a trigger.
    pub async fn owner_tx(&self, tenant: uuid::Uuid) -> sqlx::Transaction<'static, sqlx::Postgres> {
        let owner = leadq_platform::db::connect(&Secret::new(self.owner_url.clone()), 1)
            .await
            .expect("connect as the owner");
        leadq_platform::db::begin(&owner, leadq_platform::db::Scope::Tenant(tenant))
            .await
            .expect("begin an owner transaction")
    }

    /// Registers the operator `name` with `permissions` (as `leadq operator add` does).
    pub async fn register_operator(&self, name: &str, permissions: &[&str]) {
        let permissions: Vec<String> = permissions.iter().map(|p| (*p).to_owned()).collect();
        leadq_platform::operators::add(
            &self.pool,
            name,
            &permissions,
            &leadq_platform::audit::Auditor {
                tenant_id: None,
                actor: "operator:test",
                correlation_id: "test",
            },
        )
        .await
        .expect("register the operator");
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
            "LEADQ_AUDIT_KEYS",
            Keyring::random("audit").to_spec().expose().to_owned(),
        ),
        (
            "LEADQ_PII_INDEX_KEYS",
            Keyring::random("index").to_spec().expose().to_owned(),
        ),
        (
            "LEADQ_OPERATOR_TOKENS",
            format!("{TEST_OPERATOR}:{}", uuid::Uuid::new_v4().simple()),
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

/// The operator whose token [`settings`] configures; [`spawn_app_in`] registers it with every
/// permission. Other operators a test names in `LEADQ_OPERATOR_TOKENS` are left unregistered.
pub const TEST_OPERATOR: &str = "oncall";

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
    if settings
        .operator_tokens
        .iter()
        .any(|(name, _)| name == TEST_OPERATOR)
    {
        db.register_operator(TEST_OPERATOR, leadq_platform::operators::permission::ALL)
            .await;
    }
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
        leadq_jobs::pii::Sealer::from_settings(&self.settings)
    }

    /// Replaces the test tenant's lead `external_id`'s `email` with a value sealed under a key
    /// this app does not hold (kid `gone`): the stored lead no longer opens, as after a key
    /// was dropped or the row altered.
    pub async fn seal_email_under_lost_key(&self, external_id: &str) {
        use leadq_platform::keyring::Keyring;
        let gone = leadq_jobs::pii::Sealer::new(Keyring::random("gone"), Keyring::random("gone"));
        let sealed = gone.seal(
            self.tenant.tenant_id,
            leadq_jobs::pii::field::EMAIL,
            "x@example.com",
        );
        let mut tx = self.own().await;
        sqlx::query("update leads set email = $1 where external_id = $2")
            .bind(sealed)
            .bind(external_id)
            .execute(&mut *tx)
            .await
            .expect("update the lead");
        tx.commit().await.expect("commit");
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

    /// `(message_id, status)` of the test tenant's `job_runs` rows that `filter` selects (`$1`
    /// is `arg`), once `settled` accepts them (waits up to 20 s). `job_runs` is written off the
    /// job's path (worker/src/runlog.rs): a run's outcome may land a moment after its ack.
    pub async fn settled_runs(
        &self,
        filter: &str,
        arg: &str,
        settled: impl Fn(&[(String, String)]) -> bool,
    ) -> Vec<(String, String)> {
        let query = format!("select message_id, status from job_runs where {filter}");
        wait_for(
            &format!("job_runs where {filter}"),
            Duration::from_secs(20),
            || async {
                let runs: Vec<(String, String)> = sqlx::query_as(&query)
                    .bind(arg)
                    .fetch_all(&mut *self.own().await)
                    .await
                    .expect("read job_runs");
                settled(&runs).then_some(runs)
            },
        )
        .await
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

    #[test]
    fn the_credentials_are_replaced() {
        assert_eq!(
            super::with_credentials("postgres://u:p@h:1/leadq?x=1", "o", "q"),
            "postgres://o:q@h:1/leadq?x=1"
        );
    }
}
