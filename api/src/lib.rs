//! The leadq HTTP API.
//!
//! Producers (the Telegram bot, internal tools) call it with a tenant API key, Chatwoot and
//! Telegram call its webhooks with their own signatures; it validates the input and enqueues
//! a typed job. It never runs jobs and never depends on the worker.
//!
//! # Layout
//! - [`Application`]: build (connect, bind; port 0 in tests), run until stopped.
//! - [`router`]: every route and the middleware stack.
//! - [`error`]: [`error::ApiError`], the stable error codes and body.
//! - [`openapi`]: the published contract (`/openapi.json`, `/docs`), generated from the
//!   handlers' annotations.
//! - [`extract`]: the `Auth` extractor (API key → tenant), `Operator` / `OperatorContext`
//!   (operator token → `operator:<name>` and the correlation id), `ApiJson`.
//! - [`middleware`]: correlation id, request span, HTTP metrics.
//! - [`rejections`]: paths and queries that do not decode, and every layer's bare error
//!   status, answered in the standard error body.
//! - [`console`]: the operator console under `/console` (sign-in, sessions, pages).
//! - [`edge`]: per-address lockout after failed authentications and the limit on requests
//!   without credentials (the webhook budget is in `routes::webhooks`).
//! - [`tls`]: HTTPS on the listener (`LEADQ_API_TLS_*_FILE`), certificate reloaded on SIGHUP.
//! - [`routes`]: one module per resource (`leads`, `webhooks`, `audit`, `status`, `dlq`,
//!   `queues`, `jobs`, `tenant`, `security`);
//!   `/healthz`, `/readyz` and `/metrics` are `leadq_jobs::health::router`, shared with the
//!   worker.

pub mod console;
pub mod edge;
pub mod error;
pub mod extract;
pub mod middleware;
pub mod openapi;
pub mod rejections;
pub mod routes;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue};
use axum::Router;
use leadq_platform::config::Settings;
use leadq_queue::Queue;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

/// What every handler can reach ([`Shared`]), behind one `Arc`: axum clones the state for
/// every extractor and middleware of a request, and cloning a dozen fields, each with its own
/// reference count, then dropping them was 2 % of the API's CPU on the lead path
/// (`perf record`, docs/bench/processes.md).
#[derive(Debug, Clone)]
pub struct AppState(std::sync::Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The API's shared parts (see [`AppState`]).
#[derive(Debug)]
pub struct Shared {
    /// PostgreSQL.
    pub pool: PgPool,
    /// The queues.
    pub queue: Queue,
    /// Seals personal data before it is enqueued.
    pub sealer: leadq_jobs::pii::Sealer,
    /// Operator tokens by name (`LEADQ_OPERATOR_TOKENS`).
    pub operators: std::sync::Arc<Vec<(String, leadq_platform::secret::Secret)>>,
    /// API keys that authenticated recently.
    pub keys: leadq_platform::principals::KeyCache,
    /// Tenants' ingest limits, read recently.
    pub limits: leadq_jobs::ops::limits::LimitsCache,
    /// Webhook settings of recently seen tenants.
    pub webhook_tenants: routes::webhooks::TenantCache,
    /// The `tenant` label of per-tenant metrics (rate limits).
    pub tenant_labels: leadq_jobs::tenant_labels::TenantLabels,
    /// Keys, thresholds and the alert channel, for the security health checks.
    pub settings: std::sync::Arc<Settings>,
    /// Outgoing HTTP (the alert channel's `getMe`).
    pub http: reqwest::Client,
    /// Reports principals acting across many tenants (failed authentications by address).
    pub watch: leadq_jobs::abuse::CrossTenantWatch,
    /// Audits reads of tenant data in batches, off the request's path.
    pub reads: leadq_platform::audit::reads::ReadAudit,
}

/// Every route and the middleware stack. HSTS is sent only when clients reach the API over
/// HTTPS: TLS on this listener, or a terminating proxy in front (`LEADQ_BEHIND_TLS_PROXY`);
/// over plain HTTP the header is ignored by browsers at best and misleading at worst.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let hsts = state.settings.tls.api_is_https();
    let (routes, paths) = documented_routes(max_body_bytes).split_for_parts();
    let spec = openapi::document(paths);
    let router = Router::new()
        .merge(routes)
        .merge(
            utoipa_swagger_ui::SwaggerUi::new("/docs")
                .external_url_unchecked("/openapi.json", openapi::to_value(&spec)),
        )
        .merge(health_routes(&state))
        .merge(console::router())
        .fallback(|| async { error::ApiError::NotFound })
        .method_not_allowed_fallback(|| async { error::ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(rejections::sane_uri))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            edge::guard,
        ))
        // Inside `observe`: a request that times out is answered 503 and counted and logged
        // like any other. Outside it, the timeout dropped `observe` with the handler, and a
        // hung request reached neither the request counter nor the latency histogram, which
        // the error-rate and latency alerts read.
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            state.settings.edge.request_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.tenant_labels.clone(),
            middleware::observe,
        ))
        // Nothing is cached unless a handler says so (the console's static assets).
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ));
    let router = if hsts {
        router.layer(SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        ))
    } else {
        router
    };
    router
        .layer(axum::middleware::from_fn(rejections::standard_bodies))
        .with_state(state)
}

/// The API's own routes, each from its handler's `#[utoipa::path]` (see [`openapi`]).
fn documented_routes(max_body_bytes: usize) -> OpenApiRouter<AppState> {
    use routes::{audit, dlq, jobs, leads, queues, security, status, tenant, webhooks};
    let limited = |(schemas, paths, method): UtoipaMethodRouter<AppState>, max: usize| {
        (schemas, paths, method.layer(DefaultBodyLimit::max(max)))
    };
    OpenApiRouter::new()
        .routes(routes!(leads::create))
        .routes(routes!(leads::get, leads::delete))
        .routes(routes!(leads::erase_by_contact))
        .routes(limited(
            routes!(webhooks::chatwoot),
            leadq_jobs::integrations::chatwoot::MAX_BODY_BYTES,
        ))
        .routes(limited(routes!(webhooks::telegram), max_body_bytes))
        .routes(routes!(status::get))
        .routes(routes!(security::get))
        .routes(routes!(dlq::list))
        .routes(routes!(dlq::redrive))
        .routes(routes!(dlq::purge))
        .routes(routes!(dlq::show))
        .routes(routes!(audit::list))
        .routes(routes!(audit::trail))
        .routes(routes!(queues::list))
        .routes(routes!(queues::control))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::by_message))
        .routes(routes!(tenant::overview))
}

/// The published contract, as `/openapi.json` serves it (`leadq openapi` prints it).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    // The body limit is a layer, not part of the document.
    let (_, paths) = documented_routes(usize::MAX).split_for_parts();
    openapi::document(paths)
}

/// `/healthz`, `/readyz`, and `/metrics` unless it is served on `LEADQ_METRICS_ADDR` alone.
fn health_routes(state: &AppState) -> Router<AppState> {
    let (pool, queue) = (state.pool.clone(), state.queue.clone());
    let edge = &state.settings.edge;
    if edge.metrics_addr.is_some() {
        leadq_jobs::health::probes_router(pool, queue)
    } else {
        leadq_jobs::health::router(pool, queue, edge.metrics_token.clone())
    }
}

/// The API, connected and bound, not yet serving.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    /// The certificate served when HTTPS is on.
    tls: Option<std::sync::Arc<tls::CertStore>>,
    state: AppState,
    max_body_bytes: usize,
    /// `LEADQ_METRICS_ADDR`, bound: `/metrics` alone, apart from the API's own address.
    metrics_listener: Option<TcpListener>,
    /// Writes the audited reads; finished after the last request.
    reads_writer: leadq_platform::audit::reads::ReadAuditWriter,
}

impl Application {
    /// Connects to PostgreSQL and Redis (eagerly) and binds `LEADQ_API_ADDR` (port 0 picks one).
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        // A missing or mismatched certificate fails before anything connects.
        let tls = match &settings.tls.api {
            Some(t) => Some(tls::CertStore::open(&t.cert_file, &t.key_file)?),
            None => None,
        };
        let (pool, queue) = leadq_jobs::connect_stores(settings, 20).await?;
        leadq_platform::metrics::register_webhook_series();
        leadq_platform::metrics::register_event_series();
        let listener = TcpListener::bind(settings.api_addr)
            .await
            .with_context(|| format!("Failed to bind {}", settings.api_addr))?;
        let metrics_listener = match settings.edge.metrics_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("Failed to bind LEADQ_METRICS_ADDR {addr}"))?,
            ),
            None => None,
        };
        let watch =
            leadq_jobs::abuse::CrossTenantWatch::new(queue.clone(), pool.clone(), &settings.edge);
        let tenant_labels = leadq_jobs::tenant_labels::TenantLabels::new(
            pool.clone(),
            settings.metrics_tenant_cap,
            settings.canary.as_ref().map(|c| c.tenant.clone()),
        );
        let (reads, reads_writer) = leadq_platform::audit::reads::ReadAudit::start(pool.clone());
        Ok(Self {
            listener,
            tls,
            reads_writer,
            state: AppState(std::sync::Arc::new(Shared {
                pool,
                queue,
                sealer: leadq_jobs::pii::Sealer::from_settings(settings),
                operators: std::sync::Arc::new(settings.operator_tokens.clone()),
                keys: Default::default(),
                limits: Default::default(),
                webhook_tenants: Default::default(),
                tenant_labels,
                settings: std::sync::Arc::new(settings.clone()),
                http: reqwest::Client::new(),
                watch,
                reads,
            })),
            max_body_bytes: settings.max_body_bytes,
            metrics_listener,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The bound `LEADQ_METRICS_ADDR`, when set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then finishes the requests in flight.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        tracing::info!(addr = %self.addr(), scheme, "API listening.");
        let refresh = tokio::spawn(routes::security::refresh_forever(self.state.clone()));
        // Cached keys and limits are dropped the moment they change.
        let changes = tokio::spawn({
            let (keys, limits) = (self.state.keys.clone(), self.state.limits.clone());
            leadq_platform::changes::follow(self.state.pool.clone(), move |change| {
                keys.drop_changed(change);
                limits.drop_changed(change);
            })
        });
        let metrics_server = self.metrics_listener.map(|listener| {
            let app: Router = leadq_jobs::health::metrics_router(
                self.state.pool.clone(),
                self.state.queue.clone(),
                self.state.settings.edge.metrics_token.clone(),
            );
            tracing::info!(addr = ?listener.local_addr().ok(), "Metrics listening.");
            tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, app).await {
                    tracing::error!(error = %error, "Metrics server failed.");
                }
            })
        });
        // The peer address reaches the edge limits (`edge::client_addr`).
        let app = router(self.state, self.max_body_bytes)
            .into_make_service_with_connect_info::<edge::PeerAddr>();
        let served = match self.tls {
            None => axum::serve(self.listener, app)
                .with_graceful_shutdown(shutdown)
                .await
                .context("API server failed"),
            Some(store) => {
                let reload = store.reload_on_sighup()?;
                let listener = tls::TlsListener::new(self.listener, store.server_config()?)
                    .context("Failed to start the TLS listener")?;
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                    .context("API server failed");
                reload.abort();
                served
            }
        };
        refresh.abort();
        let _ = refresh.await;
        changes.abort();
        let _ = changes.await;
        if let Some(m) = metrics_server {
            m.abort();
        }
        // Every handle is gone with the router (a console bulk operation still running holds
        // one until it ends): the audited reads are written before the process stops.
        if tokio::time::timeout(Duration::from_secs(30), self.reads_writer.close())
            .await
            .is_err()
        {
            tracing::error!("Gave up waiting for the audited reads to be written.");
        }
        served
    }
}
