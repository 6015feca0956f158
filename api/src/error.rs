//! The API's one error type and its stable wire format.
//!
//! Every 4xx and 5xx body is `{"error": {"code", "message", "correlation_id"}}` (plus
//! `details` for validation). `code` is stable and documented in the README; `message` is for
//! humans and never carries internals: a 500 says only "internal error", and the cause chain
//! goes to the logs (and Sentry) under the same correlation id.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use leadq_jobs::lead::FieldError;
use leadq_jobs::ops::deadletters::OpsError;
use serde_json::json;

use crate::middleware::current_correlation_id;

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No key, or a key that is unknown or wrong.
    #[error("missing or invalid API key")]
    InvalidApiKey,
    /// The key is past its expiry.
    #[error("API key expired")]
    ApiKeyExpired,
    /// The key was revoked.
    #[error("API key revoked")]
    ApiKeyRevoked,
    /// The tenant is suspended.
    #[error("tenant is not active")]
    TenantInactive,
    /// The key lacks the scope the route needs.
    #[error("API key lacks scope {0}")]
    InsufficientScope(&'static str),
    /// The route is for platform operators only.
    #[error("this route is for platform operators")]
    OperatorOnly,
    /// A valid operator token whose operator is not registered (`leadq operator add`).
    #[error("the operator of this token is not registered")]
    OperatorNotRegistered,
    /// A valid operator token whose operator is disabled.
    #[error("the operator of this token is disabled")]
    OperatorDisabled,
    /// The operator lacks the permission the route needs.
    #[error("operator lacks permission {0}")]
    OperatorLacksPermission(&'static str),
    /// A webhook delivery without a valid signature or secret token.
    #[error("missing or invalid webhook signature")]
    BadSignature,
    /// A signed webhook delivery whose timestamp is outside the replay window.
    #[error("webhook timestamp is outside the accepted window")]
    StaleTimestamp,
    /// A signed webhook delivery for another account than the tenant's.
    #[error("the delivery is for another account than this endpoint's")]
    WrongAccount,
    /// The body is not JSON.
    #[error("request body is not valid JSON")]
    MalformedJson,
    /// The body is JSON of the wrong shape (a field of the wrong type).
    #[error("request body does not have the expected shape")]
    InvalidBody,
    /// The body is over the size limit.
    #[error("request body is too large")]
    PayloadTooLarge,
    /// The body is not `application/json`.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// The path does not decode to clean UTF-8, or a path parameter has the wrong form.
    #[error("the request path is not valid (bad encoding, a control character, or a malformed parameter)")]
    InvalidPath,
    /// The query string does not decode to clean UTF-8, or a parameter has the wrong form.
    #[error("the query string is not valid (bad encoding, a control character, or a malformed or out-of-range parameter)")]
    InvalidQuery,
    /// The route exists, but not with this method (`Allow` lists the ones it has).
    #[error("method not allowed on this route; see the Allow header")]
    MethodNotAllowed,
    /// A string in the body holds a character PostgreSQL cannot store (NUL); the JSON path.
    #[error("the body holds a NUL character (U+0000) at {0}, which cannot be stored")]
    UnsupportedCharacter(String),
    /// A webhook body field of the wrong JSON type; the JSON path.
    #[error("field {0} has the wrong type")]
    InvalidField(&'static str),
    /// The request took longer than the server allows.
    #[error("the request timed out; retry later")]
    Timeout,
    /// A request refused before any handler ran, for a reason with no code of its own.
    #[error("bad request")]
    BadRequest,
    /// Field-level validation failed.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// No such resource (for this tenant).
    #[error("not found")]
    NotFound,
    /// The tenant is sending faster than its ingest rate.
    #[error("rate limit exceeded; retry after the delay in Retry-After")]
    RateLimited(std::time::Duration),
    /// The tenant's daily quota is used up.
    #[error("daily quota exceeded; retry after the delay in Retry-After")]
    QuotaExceeded(std::time::Duration),
    /// The source address failed authentication too often and is locked out for a while.
    #[error(
        "too many failed authentications from this address; retry after the delay in Retry-After"
    )]
    AuthLockedOut(std::time::Duration),
    /// Too many requests without credentials from this address.
    #[error(
        "too many unauthenticated requests from this address; retry after the delay in Retry-After"
    )]
    UnauthenticatedRateLimited(std::time::Duration),
    /// The queue (Redis) is unreachable: nothing was enqueued.
    #[error("the job queue is unavailable; retry later")]
    QueueUnavailable(#[source] leadq_queue::QueueError),
    /// The database is unreachable: nothing was done.
    #[error("the database is unavailable; retry later")]
    DatabaseUnavailable(#[source] sqlx::Error),
    /// A console form without the session's CSRF token, or sent from another origin.
    #[error("this form was not sent from this console page; reload the page and try again")]
    CsrfFailed,
    /// Anything else. Logged with its cause chain; the client sees only "internal error".
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidApiKey | Self::ApiKeyExpired | Self::ApiKeyRevoked => {
                StatusCode::UNAUTHORIZED
            }
            Self::TenantInactive
            | Self::InsufficientScope(_)
            | Self::OperatorOnly
            | Self::OperatorNotRegistered
            | Self::OperatorDisabled
            | Self::OperatorLacksPermission(_) => StatusCode::FORBIDDEN,
            Self::BadSignature | Self::StaleTimestamp => StatusCode::UNAUTHORIZED,
            Self::WrongAccount | Self::CsrfFailed => StatusCode::FORBIDDEN,
            Self::MalformedJson | Self::InvalidPath | Self::InvalidQuery | Self::BadRequest => {
                StatusCode::BAD_REQUEST
            }
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedCharacter(_) | Self::InvalidField(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            Self::InvalidBody | Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::QueueUnavailable(_) | Self::DatabaseUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::RateLimited(_)
            | Self::QuotaExceeded(_)
            | Self::AuthLockedOut(_)
            | Self::UnauthenticatedRateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Every code [`ApiError::code`] can answer, in its order: the published contract lists
    /// them (`crate::openapi`), and a test holds this list to the match.
    pub const CODES: &'static [&'static str] = &[
        "invalid_api_key",
        "api_key_expired",
        "api_key_revoked",
        "tenant_inactive",
        "insufficient_scope",
        "operator_only",
        "operator_not_registered",
        "operator_disabled",
        "operator_lacks_permission",
        "bad_signature",
        "stale_timestamp",
        "wrong_account",
        "malformed_json",
        "invalid_path",
        "invalid_query",
        "method_not_allowed",
        "unsupported_character",
        "invalid_field",
        "timeout",
        "bad_request",
        "invalid_body",
        "payload_too_large",
        "unsupported_media_type",
        "validation_failed",
        "not_found",
        "queue_unavailable",
        "database_unavailable",
        "rate_limited",
        "quota_exceeded",
        "auth_locked_out",
        "unauthenticated_rate_limited",
        "csrf_failed",
        "internal",
    ];

    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidApiKey => "invalid_api_key",
            Self::ApiKeyExpired => "api_key_expired",
            Self::ApiKeyRevoked => "api_key_revoked",
            Self::TenantInactive => "tenant_inactive",
            Self::InsufficientScope(_) => "insufficient_scope",
            Self::OperatorOnly => "operator_only",
            Self::OperatorNotRegistered => "operator_not_registered",
            Self::OperatorDisabled => "operator_disabled",
            Self::OperatorLacksPermission(_) => "operator_lacks_permission",
            Self::BadSignature => "bad_signature",
            Self::StaleTimestamp => "stale_timestamp",
            Self::WrongAccount => "wrong_account",
            Self::MalformedJson => "malformed_json",
            Self::InvalidPath => "invalid_path",
            Self::InvalidQuery => "invalid_query",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UnsupportedCharacter(_) => "unsupported_character",
            Self::InvalidField(_) => "invalid_field",
            Self::Timeout => "timeout",
            Self::BadRequest => "bad_request",
            Self::InvalidBody => "invalid_body",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Validation(_) => "validation_failed",
            Self::NotFound => "not_found",
            Self::QueueUnavailable(_) => "queue_unavailable",
            Self::DatabaseUnavailable(_) => "database_unavailable",
            Self::RateLimited(_) => "rate_limited",
            Self::QuotaExceeded(_) => "quota_exceeded",
            Self::AuthLockedOut(_) => "auth_locked_out",
            Self::UnauthenticatedRateLimited(_) => "unauthenticated_rate_limited",
            Self::CsrfFailed => "csrf_failed",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<OpsError> for ApiError {
    /// An operator action's failure: bad input is a 422, a store that failed is a 503 (or,
    /// for the database, what [`From<sqlx::Error>`] says).
    fn from(e: OpsError) -> Self {
        match e {
            OpsError::Invalid(_) => ApiError::InvalidBody,
            // Input the queue refused (a cursor that is not a page's `next_cursor`) is the
            // caller's mistake, not an outage.
            OpsError::Queue(leadq_queue::QueueError::Invalid(_)) => ApiError::InvalidBody,
            OpsError::Queue(q) => ApiError::QueueUnavailable(q),
            OpsError::Db(d) => d.into(),
        }
    }
}

impl From<leadq_jobs::lead::EraseError> for ApiError {
    /// An erasure's failure: Redis down after the database part committed is a 503 (the
    /// erasure is idempotent: the client runs it again).
    fn from(e: leadq_jobs::lead::EraseError) -> Self {
        match e {
            leadq_jobs::lead::EraseError::Queue(q) => ApiError::QueueUnavailable(q),
            leadq_jobs::lead::EraseError::Db(d) => d.into(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if leadq_platform::db::is_unavailable(&e) {
            return Self::DatabaseUnavailable(e);
        }
        Self::Internal(anyhow::Error::new(e).context("Database query failed"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            // Display of the whole chain for humans, Debug for the full detail.
            let chain = match &self {
                Self::Internal(e) => format!("{e:#}"),
                Self::QueueUnavailable(e) => format!("{e}: {:?}", std::error::Error::source(e)),
                Self::DatabaseUnavailable(e) => e.to_string(),
                _ => String::new(),
            };
            // The id also where no request span is open (a layer outside it answered).
            tracing::error!(code = self.code(), error.cause_chain = %chain,
                correlation_id = %current_correlation_id(), "Request failed.");
        }
        let mut body = json!({
            "code": self.code(),
            "message": self.to_string(),
            "correlation_id": current_correlation_id(),
        });
        if let Self::Validation(fields) = &self {
            body["details"] = json!(fields);
        }
        let mut res = (status, Json(json!({ "error": body }))).into_response();
        if let Self::RateLimited(d)
        | Self::QuotaExceeded(d)
        | Self::AuthLockedOut(d)
        | Self::UnauthenticatedRateLimited(d) = &self
        {
            let secs = d.as_millis().div_ceil(1000).max(1);
            if let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string()) {
                res.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        if matches!(
            self,
            Self::InvalidApiKey | Self::ApiKeyExpired | Self::ApiKeyRevoked
        ) {
            res.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        res
    }
}

#[cfg(test)]
mod codes_tests {
    use super::ApiError;

    /// `CODES` is exactly what `code()` can answer: read off the match in this file's source,
    /// so a new variant cannot be left out of the published contract.
    #[test]
    fn codes_list_every_code_of_the_match() {
        let src = include_str!("error.rs");
        let start = src.find("pub fn code(&self)").expect("code() is here");
        let end = start + src[start..].find("\n    }\n").expect("its end");
        let in_match: Vec<&str> = src[start..end]
            .split("=> \"")
            .skip(1)
            .map(|rest| &rest[..rest.find('"').expect("closing quote")])
            .collect();
        assert_eq!(in_match, ApiError::CODES);
        let mut unique = in_match.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), in_match.len(), "a code is used twice");
    }

    /// The README's table documents every code.
    #[test]
    fn the_readme_documents_every_code() {
        let readme = include_str!("../../README.md");
        for code in ApiError::CODES {
            assert!(
                readme.contains(&format!("`{code}`")),
                "README lacks `{code}`"
            );
        }
    }
}
