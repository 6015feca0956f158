//! Every rejection in the standard error body, including the ones no handler sees.
//!
//! Handlers answer through [`ApiError`]; what fails before a handler runs — a path or query
//! that does not decode, a wrong method, an unknown route, a body over the limit, a timeout —
//! would otherwise answer in axum's or tower's own words (plain text, or an empty body). Three
//! pieces close that gap:
//! - [`sane_uri`] refuses, before routing, a path or query whose percent-decoding is not UTF-8
//!   or holds NUL or another control character (PostgreSQL cannot store NUL, and no route has a
//!   use for the others): 400 `invalid_path` / `invalid_query`.
//! - [`ApiQuery`] and [`ApiPath`]: axum's extractors, with their rejections as 400
//!   `invalid_query` / `invalid_path` (a number too large, a malformed UUID).
//! - [`standard_bodies`], outermost: any 4xx or 5xx that is not already JSON becomes the
//!   standard body with the code its status implies (`method_not_allowed`, `not_found`,
//!   `payload_too_large`, `timeout`, …), keeping its headers (`Allow`, `Retry-After`).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Whether percent-decoded `raw` is UTF-8 without control characters.
fn decodes_cleanly(raw: &str) -> bool {
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    match std::str::from_utf8(&bytes) {
        Ok(s) => !s.chars().any(char::is_control),
        Err(_) => false,
    }
}

/// Refuses a path or query that does not decode to clean UTF-8 (see the module docs).
pub async fn sane_uri(req: Request, next: Next) -> Response {
    let uri = req.uri();
    if !decodes_cleanly(uri.path()) {
        return ApiError::InvalidPath.into_response();
    }
    // `+` means a space in a query string; it decodes cleanly either way.
    if uri.query().is_some_and(|q| !decodes_cleanly(q)) {
        return ApiError::InvalidQuery.into_response();
    }
    next.run(req).await
}

/// `axum::extract::Query`, refusing in the standard body (400 `invalid_query`).
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    Query<T>: FromRequestParts<S, Rejection = QueryRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|_| ApiError::InvalidQuery)
    }
}

/// `axum::extract::Path`, refusing in the standard body (400 `invalid_path`).
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    Path<T>: FromRequestParts<S, Rejection = PathRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|_| ApiError::InvalidPath)
    }
}

/// The error a bare status stands for.
fn error_for(status: StatusCode) -> ApiError {
    match status {
        StatusCode::NOT_FOUND => ApiError::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
        StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => ApiError::Timeout,
        s if s.is_server_error() => {
            ApiError::Internal(anyhow::anyhow!("bare {s} response from a layer"))
        }
        _ => ApiError::BadRequest,
    }
}

/// Rewrites a 4xx/5xx response that is not JSON into the standard body (see the module docs).
pub async fn standard_bodies(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    // JSON is the standard body already; HTML is the console's error page, which carries the
    // same code and correlation id for a person to read.
    if is_json {
        return res;
    }
    let (parts, _) = res.into_parts();
    // Outside `observe`'s scope: the request's id comes from the header it set, so the body
    // (and the failure's log line) carries it, not an empty one.
    let correlation_id = parts
        .headers
        .get(crate::middleware::CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut fresh = crate::middleware::with_correlation_id(correlation_id, || {
        error_for(status).into_response()
    });
    // The status stays what the layer said (a timeout's 503, say); its headers (`Allow`,
    // `Retry-After`) are kept.
    *fresh.status_mut() = status;
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fresh.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fresh
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_clean_utf8_decodes_cleanly() {
        assert!(super::decodes_cleanly("/v1/leads/tg-1"));
        assert!(super::decodes_cleanly("/v1/leads/caf%C3%A9"));
        assert!(!super::decodes_cleanly("/v1/leads/%00"));
        assert!(!super::decodes_cleanly("/v1/leads/%ff"));
        assert!(
            !super::decodes_cleanly("/v1/leads/%ed%a0%80"),
            "a lone surrogate"
        );
        assert!(!super::decodes_cleanly("limit=1%0a"));
    }
}
