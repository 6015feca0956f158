//! Extractors that answer in the API's own error format.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use leadq_platform::metrics as m;
use leadq_platform::telemetry;
use leadq_platform::tenant::{AuthFailure, Principal};
use sha2::Digest;

use crate::error::ApiError;
use crate::middleware::current_correlation_id;
use crate::AppState;
use leadq_jobs::ops::deadletters::Actor;

/// The authenticated caller: a tenant's API key.
#[derive(Debug, Clone)]
pub struct Auth(pub Principal);

impl Auth {
    /// Fails with 403 `insufficient_scope` unless the key carries `scope`.
    pub fn require(&self, scope: &'static str) -> Result<&Principal, ApiError> {
        if self.0.has_scope(scope) {
            Ok(&self.0)
        } else {
            auth_failure("insufficient_scope");
            Err(ApiError::InsufficientScope(scope))
        }
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = bearer(parts);
        let (reason, error) = match state.keys.authenticate(&state.pool, presented).await? {
            Ok(principal) => {
                telemetry::tag_tenant(principal.tenant_id, Some(&principal.tenant_slug));
                return Ok(Auth(principal));
            }
            Err(AuthFailure::Invalid) => ("invalid", ApiError::InvalidApiKey),
            Err(AuthFailure::Expired) => ("expired", ApiError::ApiKeyExpired),
            Err(AuthFailure::Revoked) => ("revoked", ApiError::ApiKeyRevoked),
            Err(AuthFailure::TenantInactive) => ("tenant_inactive", ApiError::TenantInactive),
        };
        auth_failure(reason);
        Err(error)
    }
}

/// A platform operator (on-call), authenticated by a token from `LEADQ_OPERATOR_TOKENS` and
/// registered and enabled in the operator registry (`leadq operator add`): a token of an
/// unregistered or disabled operator is refused with 403 `operator_not_registered` /
/// `operator_disabled`. For cross-tenant views; every use is audited as a platform event by
/// the route.
#[derive(Debug, Clone)]
pub struct Operator(pub leadq_platform::operators::Operator);

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        operator_for(state, bearer(parts)).await
    }
}

/// The operator whose token is `presented` (the bearer token, or the console's sign-in form),
/// counted in the auth-failure metric when refused.
pub async fn operator_for(state: &AppState, presented: &str) -> Result<Operator, ApiError> {
    // Compare hashes in constant time, against every token, whatever matches.
    let digest = |s: &str| sha2::Sha256::digest(s.as_bytes());
    let mine = digest(presented);
    let mut found = None;
    for (name, token) in state.operators.iter() {
        if bool::from(subtle::ConstantTimeEq::ct_eq(
            &mine[..],
            &digest(token.expose())[..],
        )) {
            found = Some(name.clone());
        }
    }
    match found {
        Some(name) => {
            tracing::Span::current().record("tenant_id", "platform");
            // Read on every request (no cache): disabling an operator takes effect at once.
            match leadq_platform::operators::find(&state.pool, &name).await? {
                Some(op) if !op.disabled => Ok(Operator(op)),
                Some(_) => {
                    auth_failure("operator_disabled");
                    Err(ApiError::OperatorDisabled)
                }
                None => {
                    auth_failure("operator_not_registered");
                    Err(ApiError::OperatorNotRegistered)
                }
            }
        }
        None if leadq_platform::apikey::prefix_of(presented).is_some() => {
            // A tenant key on an operator route.
            auth_failure("operator_only");
            Err(ApiError::OperatorOnly)
        }
        None => {
            auth_failure("invalid");
            Err(ApiError::InvalidApiKey)
        }
    }
}

/// An operator acting on the platform: who (`operator:<name>`, as audit rows name the actor),
/// with which permissions and under which correlation id. Extracting it authenticates the
/// operator token (see [`Operator`]); routes then [`OperatorContext::require`] a permission.
#[derive(Debug, Clone)]
pub struct OperatorContext {
    /// `operator:<name>`.
    pub actor: String,
    /// The request's correlation id.
    pub correlation_id: String,
    /// The operator's permissions (`leadq_platform::operators::permission`).
    pub permissions: Vec<String>,
}

impl OperatorContext {
    /// `op` acting under the current request's correlation id.
    pub fn of(op: leadq_platform::operators::Operator) -> Self {
        Self {
            actor: format!("operator:{}", op.name),
            correlation_id: current_correlation_id(),
            permissions: op.permissions,
        }
    }

    /// The actor and correlation id as the operations of `leadq_jobs` take them.
    pub fn as_actor(&self) -> Actor<'_> {
        Actor {
            actor: &self.actor,
            correlation_id: &self.correlation_id,
        }
    }

    /// Whether the operator holds `permission` (what a page shows; [`Self::require`] for what
    /// a request may do).
    pub fn may(&self, permission: &str) -> bool {
        self.permissions.iter().any(|p| p == permission)
    }

    /// Fails with 403 `operator_lacks_permission` unless the operator holds `permission`.
    pub fn require(&self, permission: &'static str) -> Result<&Self, ApiError> {
        if self.may(permission) {
            Ok(self)
        } else {
            auth_failure("operator_lacks_permission");
            Err(ApiError::OperatorLacksPermission(permission))
        }
    }
}

impl FromRequestParts<AppState> for OperatorContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Operator(op) = Operator::from_request_parts(parts, state).await?;
        Ok(Self::of(op))
    }
}

/// The bearer token of a request, or "" (which no credential matches).
fn bearer(parts: &Parts) -> &str {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("")
}

/// Counts a refused credential (`leadq_auth_failures_total{reason}`) and logs it.
pub(crate) fn auth_failure(reason: &'static str) {
    metrics::counter!(m::AUTH_FAILURES_TOTAL, m::label::REASON => reason).increment(1);
    tracing::warn!(reason, "Refused credentials.");
}

/// `axum::Json`, with rejections in our error format (and without echoing the input).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    /// Parsed as a JSON value first, so a string PostgreSQL cannot store (NUL) is refused here,
    /// with its path, whatever the route; then typed.
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let value = match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(v)) => v,
            Err(rejection) => {
                return Err(match rejection {
                    JsonRejection::JsonSyntaxError(_) => ApiError::MalformedJson,
                    JsonRejection::JsonDataError(_) => ApiError::InvalidBody,
                    JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
                    JsonRejection::BytesRejection(r)
                        if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
                    {
                        ApiError::PayloadTooLarge
                    }
                    JsonRejection::BytesRejection(_) => ApiError::BadRequest,
                    other => ApiError::Internal(anyhow::anyhow!("body rejected: {other}")),
                })
            }
        };
        if let Some(path) = leadq_platform::db::unstorable_path(&value) {
            return Err(ApiError::UnsupportedCharacter(path));
        }
        serde_json::from_value(value)
            .map(ApiJson)
            .map_err(|_| ApiError::InvalidBody)
    }
}
