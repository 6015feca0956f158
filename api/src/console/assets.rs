//! The console's static files, compiled into the binary (see `assets/README.md`): htmx and
//! the stylesheet. Cached by browsers for an hour; names carry no version, so a deploy is
//! picked up within that hour at worst, and the console works without either file (forms and
//! links are plain HTML).

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::rejections::ApiPath;

/// htmx 2.0.11, unmodified.
const HTMX: &[u8] = include_bytes!("assets/htmx.min.js");
/// The console's styles.
const CSS: &[u8] = include_bytes!("assets/console.css");

/// `GET /console/assets/{file}`.
pub async fn serve(ApiPath(file): ApiPath<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "htmx.min.js" => (HTMX, "text/javascript; charset=utf-8"),
        "console.css" => (CSS, "text/css; charset=utf-8"),
        _ => return ApiError::NotFound.into_response(),
    };
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    res
}
