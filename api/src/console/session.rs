//! Signing in and out of the console, and the session every page runs in.
//!
//! A session is a random 256-bit secret in an HttpOnly, SameSite=Strict cookie (Secure when
//! the API is reached over HTTPS), scoped to `/console`. Redis keeps only its SHA-256, so a
//! copy of Redis holds no usable session. The record expires after `LEADQ_CONSOLE_IDLE_SECS`
//! without a user action (each page view renews it; the console's own auto-refresh does not),
//! and is refused `LEADQ_CONSOLE_MAX_SECS` after sign-in whatever the activity. Each request
//! re-checks the principal: an operator removed from `LEADQ_OPERATOR_TOKENS` or disabled, or
//! an API key revoked, ends its sessions at once.
//!
//! State changes are POSTs checked twice: the browser must say the form came from this origin
//! (`Sec-Fetch-Site`, else `Origin`), and the form must carry the session's CSRF token. The
//! sign-in form, which has no session yet, carries a token bound to a short-lived cookie of
//! its own instead (double submit), so another site cannot sign a browser in as someone else.

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine;
use chrono::Utc;
use leadq_platform::audit::Auditor;
use leadq_platform::db::{self, Scope};
use leadq_platform::operators::permission;
use leadq_platform::tenant::Principal;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use uuid::Uuid;

use super::form::Form;
use super::layout;
use super::{PageError, PageResult};
use crate::error::ApiError;
use crate::extract::{auth_failure, operator_for, OperatorContext};
use crate::middleware::current_correlation_id;
use crate::AppState;

/// The session cookie.
pub const COOKIE: &str = "leadq_console";
/// The sign-in form's CSRF cookie.
const LOGIN_COOKIE: &str = "leadq_console_login";
/// The Redis record namespace of sessions.
const SESSIONS: &str = "console_session";
/// A request the console's auto-refresh makes: it does not count as activity.
pub const POLL_HEADER: &str = "x-console-poll";

/// Who a session is for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Who {
    /// `token`: the fingerprint ([`fingerprint`]) of the token the operator signed in with. The
    /// session lasts only while that token is still the operator's: rotating a leaked token
    /// ends the sessions it opened. (Sessions stored before it was kept have none, and end.)
    Operator {
        name: String,
        #[serde(default)]
        token: String,
    },
    Tenant {
        tenant_id: Uuid,
        key_id: Uuid,
    },
}

/// The Redis record.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    who: Who,
    csrf: String,
    /// Sign-in time, Unix seconds.
    created_at: i64,
}

/// Whom a signed-in page acts for, re-checked on this request.
#[derive(Debug, Clone)]
pub enum Viewer {
    /// A platform operator.
    Operator(OperatorContext),
    /// A tenant, through an API key with `status:read`.
    Tenant(Principal),
}

/// A signed-in request (the extractor of every console page but sign-in).
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// Whom it acts for.
    pub viewer: Viewer,
    /// The session's CSRF token, for the forms the page renders.
    pub csrf: String,
    /// The record id (SHA-256 of the cookie's secret).
    id: String,
}

impl SignedIn {
    /// The operator, or 403 `operator_only` for a tenant's session.
    pub fn operator(&self) -> Result<&OperatorContext, PageError> {
        match &self.viewer {
            Viewer::Operator(o) => Ok(o),
            Viewer::Tenant(_) => Err(PageError(ApiError::OperatorOnly)),
        }
    }

    /// How the page names the viewer: `operator:<name>` or `tenant:<slug>`.
    pub fn whoami(&self) -> String {
        match &self.viewer {
            Viewer::Operator(o) => o.actor.clone(),
            Viewer::Tenant(p) => format!("tenant:{}", p.tenant_slug),
        }
    }

    /// Refuses a state change that did not come from this console's page: 403 `csrf_failed`.
    pub fn check_form(&self, headers: &HeaderMap, form: &Form) -> Result<(), PageError> {
        if same_origin(headers) && equal(form.get("csrf").unwrap_or(""), &self.csrf) {
            Ok(())
        } else {
            Err(PageError(ApiError::CsrfFailed))
        }
    }
}

/// A request without a session: to the sign-in page (with a notice when a session ended).
struct NoSession {
    /// A cookie was presented, but its session ended (expired, signed out, principal gone).
    ended: bool,
    /// htmx asked (an auto-refresh): it follows a redirect inside its swap, so it is told to
    /// load the sign-in page as a whole page instead (`HX-Redirect`).
    htmx: bool,
}

impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        let to = if self.ended {
            "/console/login?expired=1"
        } else {
            "/console/login"
        };
        let mut res = if self.htmx {
            let mut res = StatusCode::NO_CONTENT.into_response();
            res.headers_mut()
                .insert("hx-redirect", HeaderValue::from_static(to));
            res
        } else {
            Redirect::to(to).into_response()
        };
        if self.ended {
            res.headers_mut()
                .insert(header::SET_COOKIE, clear_cookie(COOKIE));
        }
        res
    }
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Response> {
        let htmx = parts.headers.contains_key("hx-request");
        let no_session = |ended| NoSession { ended, htmx }.into_response();
        let Some(secret) = cookie(&parts.headers, COOKIE) else {
            return Err(no_session(false));
        };
        let id = record_id(secret);
        let settings = &app.settings.console;
        let touch = (!parts.headers.contains_key(POLL_HEADER)).then_some(settings.idle);
        let stored = app
            .queue
            .record_get(SESSIONS, &id, touch)
            .await
            .map_err(|e| PageError::from(e).into_response())?;
        let Some(stored) = stored.and_then(|s| serde_json::from_str::<Stored>(&s).ok()) else {
            return Err(no_session(true));
        };
        let age = Utc::now().timestamp().saturating_sub(stored.created_at);
        if age < 0 || age as u64 >= settings.max_age.as_secs() {
            end(app, &id).await;
            return Err(no_session(true));
        }
        let viewer = match viewer_of(app, &stored.who).await {
            Ok(Some(v)) => v,
            Ok(None) => {
                end(app, &id).await;
                return Err(no_session(true));
            }
            Err(e) => return Err(e.into_response()),
        };
        Ok(SignedIn {
            viewer,
            csrf: stored.csrf,
            id,
        })
    }
}

/// The principal of a session now, or `None` if it may no longer act.
async fn viewer_of(app: &AppState, who: &Who) -> Result<Option<Viewer>, PageError> {
    Ok(match who {
        Who::Operator { name, token } => {
            if !app
                .operators
                .iter()
                .any(|(n, t)| n == name && equal(&fingerprint(t.expose()), token))
            {
                return Ok(None);
            }
            match leadq_platform::operators::find(&app.pool, name).await? {
                Some(op) if !op.disabled && op.may(permission::CONSOLE) => {
                    Some(Viewer::Operator(OperatorContext::of(op)))
                }
                _ => None,
            }
        }
        Who::Tenant { tenant_id, key_id } => {
            leadq_platform::tenant::principal_of_key(&app.pool, *tenant_id, *key_id)
                .await?
                .filter(|p| p.has_scope(leadq_platform::apikey::scope::STATUS_READ))
                .map(Viewer::Tenant)
        }
    })
}

/// Ends a session that may no longer act (expired, its principal gone): a failure is logged,
/// and the session is refused on every request all the same.
async fn end(app: &AppState, id: &str) {
    if let Err(error) = app.queue.record_delete(SESSIONS, id).await {
        tracing::warn!(error = %error, "Could not delete a console session.");
    }
}

/// `?expired=1` after a session ended.
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    expired: Option<String>,
}

/// `GET /console/login`.
pub async fn login_page(State(app): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    let notice = q
        .expired
        .is_some()
        .then_some("Your session has ended; sign in again.");
    login_form(&app, StatusCode::OK, notice, None)
}

/// The sign-in page with a fresh form token (and its cookie).
fn login_form(
    app: &AppState,
    status: StatusCode,
    notice: Option<&str>,
    error: Option<&str>,
) -> Response {
    let token = random_token();
    let body = layout::bare("Sign in", super::pages::login::form(&token, notice, error));
    let mut res = (status, Html(body.into_string())).into_response();
    let cookie = format!(
        "{LOGIN_COOKIE}={token}; Path=/console/login; HttpOnly; SameSite=Strict; Max-Age=600{}",
        secure(app)
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// `POST /console/login`: an operator token or a tenant API key with `status:read`.
pub async fn login(State(app): State<AppState>, headers: HeaderMap, form: Form) -> PageResult {
    let bound = cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if !same_origin(&headers) || bound.is_empty() || !equal(form.get("csrf").unwrap_or(""), bound) {
        return Err(PageError(ApiError::CsrfFailed));
    }
    let presented = form.get("token").unwrap_or("");
    let refused = |app: &AppState, e: ApiError| -> PageResult {
        let text = match e.status() {
            StatusCode::UNAUTHORIZED => "That token was not accepted.",
            StatusCode::FORBIDDEN => "That token may not use the console.",
            _ => return Err(PageError(e)),
        };
        // 401 for a token nobody holds: the edge counts it toward the address's lockout.
        Ok(login_form(app, e.status(), None, Some(text)))
    };
    let who = if leadq_platform::apikey::prefix_of(presented).is_some() {
        match leadq_platform::tenant::authenticate(&app.pool, presented).await? {
            Ok(p) if p.has_scope(leadq_platform::apikey::scope::STATUS_READ) => Who::Tenant {
                tenant_id: p.tenant_id,
                key_id: p.key_id,
            },
            Ok(_) => {
                auth_failure("insufficient_scope");
                return refused(&app, ApiError::InsufficientScope("status:read"));
            }
            Err(_) => {
                auth_failure("invalid");
                return refused(&app, ApiError::InvalidApiKey);
            }
        }
    } else {
        match operator_for(&app, presented).await {
            Ok(crate::extract::Operator(op)) if op.may(permission::CONSOLE) => Who::Operator {
                name: op.name,
                token: fingerprint(presented),
            },
            Ok(_) => {
                auth_failure("operator_lacks_permission");
                return refused(&app, ApiError::OperatorLacksPermission(permission::CONSOLE));
            }
            Err(e) => return refused(&app, e),
        }
    };
    let secret = random_token();
    let stored = Stored {
        who: who.clone(),
        csrf: random_token(),
        created_at: Utc::now().timestamp(),
    };
    let json = serde_json::to_string(&stored).map_err(|e| ApiError::Internal(e.into()))?;
    let settings = &app.settings.console;
    app.queue
        .record_put(SESSIONS, &record_id(&secret), &json, settings.idle)
        .await?;
    let landing = audit(&app, &who, "console.login").await?;
    let mut res = Redirect::to(&landing).into_response();
    let headers = res.headers_mut();
    let session = format!(
        "{COOKIE}={secret}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{}",
        settings.max_age.as_secs(),
        secure(&app)
    );
    if let Ok(v) = HeaderValue::from_str(&session) {
        headers.append(header::SET_COOKIE, v);
    }
    headers.append(
        header::SET_COOKIE,
        clear_cookie_at(LOGIN_COOKIE, "/console/login"),
    );
    Ok(res)
}

/// `POST /console/logout`.
pub async fn logout(
    State(app): State<AppState>,
    signed_in: SignedIn,
    headers: HeaderMap,
    form: Form,
) -> PageResult {
    signed_in.check_form(&headers, &form)?;
    // A sign-out that could not delete the session says so (a 503 page) instead of clearing
    // the cookie over a session that a copy of it could still use.
    app.queue.record_delete(SESSIONS, &signed_in.id).await?;
    let who = match &signed_in.viewer {
        Viewer::Operator(o) => Who::Operator {
            name: o.actor.trim_start_matches("operator:").to_owned(),
            token: String::new(),
        },
        Viewer::Tenant(p) => Who::Tenant {
            tenant_id: p.tenant_id,
            key_id: p.key_id,
        },
    };
    audit(&app, &who, "console.logout").await?;
    let mut res = Redirect::to("/console/login").into_response();
    res.headers_mut()
        .insert(header::SET_COOKIE, clear_cookie(COOKIE));
    Ok(res)
}

/// Audits a sign-in or sign-out as its principal; returns the principal's landing page.
async fn audit(app: &AppState, who: &Who, action: &str) -> Result<String, PageError> {
    let correlation_id = current_correlation_id();
    let (tenant_id, actor, landing) = match who {
        Who::Operator { name, .. } => (None, format!("operator:{name}"), "/console".to_owned()),
        Who::Tenant { tenant_id, key_id } => {
            let slug: String = sqlx::query_scalar("select slug from tenants where id = $1")
                .bind(tenant_id)
                .fetch_one(&app.pool)
                .await?;
            (
                Some(*tenant_id),
                format!("api_key:{key_id}"),
                format!("/console/tenants/{slug}"),
            )
        }
    };
    let scope = tenant_id.map_or(Scope::Platform, Scope::Tenant);
    let mut tx = db::begin(&app.pool, scope).await?;
    Auditor {
        tenant_id,
        actor: &actor,
        correlation_id: &correlation_id,
    }
    .entry(action, "console:session")
    .record(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(landing)
}

/// Whether the browser says the request came from a page of this origin.
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return site == "same-origin";
    }
    match (text(header::ORIGIN), text(header::HOST)) {
        (Some(origin), Some(host)) => {
            origin.strip_prefix("https://") == Some(host)
                || origin.strip_prefix("http://") == Some(host)
        }
        _ => false,
    }
}

/// The value of cookie `name`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

fn clear_cookie(name: &str) -> HeaderValue {
    clear_cookie_at(name, "/console")
}

fn clear_cookie_at(name: &str, path: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}=; Path={path}; HttpOnly; SameSite=Strict; Max-Age=0"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn secure(app: &AppState) -> &'static str {
    if app.settings.tls.api_is_https() {
        "; Secure"
    } else {
        ""
    }
}

/// 256 random bits, URL-safe.
fn random_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// The record id of a session secret: Redis never holds the secret itself.
fn record_id(secret: &str) -> String {
    fingerprint(secret)
}

/// SHA-256 of a secret, in hex: what a session keeps of the secrets it depends on.
fn fingerprint(secret: &str) -> String {
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

fn equal(a: &str, b: &str) -> bool {
    !b.is_empty() && bool::from(subtle::ConstantTimeEq::ct_eq(a.as_bytes(), b.as_bytes()))
}
