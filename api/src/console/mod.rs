//! The operator console: a queue UI behind real sign-in, served by the API under `/console`.
//!
//! Queue UIs (Bull Board, Sidekiq Web, Oban Web, River UI) leave authentication and tenancy to
//! whoever mounts them; this one is multi-tenant and signs people in itself, so it can be
//! exposed where on-call works.
//!
//! - **Who**: an operator (token from `LEADQ_OPERATOR_TOKENS`, registered, enabled, with the
//!   `console` permission) sees the platform; a tenant (an API key with `status:read`) sees
//!   only its own page, `/console/tenants/<its slug>`.
//! - **Sessions** live in Redis ([`session`]): an HttpOnly, SameSite=Strict cookie (Secure
//!   over HTTPS) names them; they end after `LEADQ_CONSOLE_IDLE_SECS` without a user action
//!   and `LEADQ_CONSOLE_MAX_SECS` after sign-in, or on sign-out. Every state change is a POST
//!   checked for the same origin and the session's CSRF token. Failed sign-ins answer 401,
//!   so they count in `leadq_auth_failures_total` and toward the edge's lockout of an address.
//! - **One implementation**: every page reads and acts through the same functions as the
//!   JSON endpoints (`routes::status::report`, `routes::queues`, `routes::dlq`,
//!   `routes::jobs`, `routes::audit`, `leadq_jobs::ops::tenant_view`), so each view and action
//!   is audited as the operator exactly as over the API.
//! - **Pages** are HTML rendered on the server (`maud`: templates compiled into the binary,
//!   escaped by default) with htmx (vendored, [`assets`]) for the parts that refresh; a strict
//!   Content-Security-Policy allows no inline script or style. Changes ask for confirmation on
//!   a page of their own (which says what will happen and to how many), so they work from
//!   the keyboard and without script.
//!
//! # Layout
//! - [`session`]: sign-in, sign-out, the session extractor, CSRF and origin checks.
//! - [`form`]: URL-encoded form bodies (repeated fields, bytes PostgreSQL cannot store).
//! - [`layout`]: the page frame, navigation and small rendering helpers; [`assets`].
//! - [`pages`]: one module per page.
//! - [`operations`]: bulk dead-letter work run in the background, its progress in Redis.

pub mod assets;
pub mod form;
pub mod layout;
pub mod operations;
pub mod pages;
pub mod session;

use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::error::ApiError;
use crate::AppState;

/// The console's Content-Security-Policy: everything from its own origin, nothing inline, no
/// framing, forms posting only back to it.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                       base-uri 'none'";

/// Every `/console` route.
pub fn router() -> Router<AppState> {
    use pages::{audit, dead_letters, jobs, overview, tenant_view, tenants, workers};
    Router::new()
        .route("/console", get(overview::page))
        .route(
            "/console/login",
            get(session::login_page).post(session::login),
        )
        .route("/console/logout", post(session::logout))
        .route("/console/tenants", get(tenants::page))
        .route("/console/tenants/{slug}", get(tenant_view::page))
        .route("/console/tenants/{slug}/{kind}", post(tenants::change))
        .route("/console/workers", get(workers::page))
        .route("/console/dead-letters", get(dead_letters::page))
        .route(
            "/console/dead-letters/{kind}/{job_id}",
            get(dead_letters::one),
        )
        .route(
            "/console/dead-letters/{kind}/action",
            post(dead_letters::action),
        )
        .route("/console/operations/{id}", get(operations::page))
        .route("/console/jobs", get(jobs::page))
        .route("/console/audit", get(audit::page))
        .route("/console/assets/{file}", get(assets::serve))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
}

/// A page that failed: the API's error (same status, code and correlation id), as HTML.
#[derive(Debug)]
pub struct PageError(pub ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError(e)
    }
}

impl From<leadq_jobs::ops::deadletters::OpsError> for PageError {
    fn from(e: leadq_jobs::ops::deadletters::OpsError) -> Self {
        PageError(e.into())
    }
}

impl From<sqlx::Error> for PageError {
    fn from(e: sqlx::Error) -> Self {
        PageError(e.into())
    }
}

impl From<leadq_queue::QueueError> for PageError {
    fn from(e: leadq_queue::QueueError) -> Self {
        PageError(ApiError::QueueUnavailable(e))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let code = self.0.code();
        // The API's response logs server errors with their cause; its body is dropped.
        let logged = self.0.into_response();
        let message = match status.as_u16() {
            403 => "You may not see this page.".to_owned(),
            404 => "There is no such page or item.".to_owned(),
            s if s >= 500 => "The console could not answer; try again in a moment.".to_owned(),
            _ => "The request was not accepted.".to_owned(),
        };
        let id = if status.as_u16() == 403 {
            "forbidden"
        } else {
            "error"
        };
        let body = layout::bare(
            "Not possible",
            maud::html! {
                div id=(id) role="alert" {
                    p { (message) }
                    p { "Code: " code { (code) } " · correlation id: "
                        code { (crate::middleware::current_correlation_id()) } }
                    p { a href="/console" { "Back to the console" } }
                }
            },
        );
        let mut res = (status, Html(body.into_string())).into_response();
        for name in [header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
            if let Some(v) = logged.headers().get(&name) {
                res.headers_mut().insert(name, v.clone());
            }
        }
        res
    }
}

/// A page's result.
pub type PageResult = Result<Response, PageError>;
