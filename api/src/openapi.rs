//! The published API contract: OpenAPI 3.1, generated from the handlers' own annotations.
//!
//! Each handler carries a `#[utoipa::path]` annotation, and the router is built from those same
//! annotations (`utoipa-axum`'s `routes!`, in [`crate::router`]), so a route cannot be served
//! without being documented, nor documented at a path it is not served on. What no handler
//! says is added here once: the two security schemes, the standard error body with every
//! stable code ([`ApiError::CODES`]), and the error statuses every operation can answer (an
//! edge limit, a malformed path or query, an outage). Served at `/openapi.json`, browsable at
//! `/docs` (Swagger UI, vendored into the binary: no download at build or run time).
//!
//! `openapi.json` at the repository root is the committed copy; a test fails when it differs
//! from what the code generates, so every contract change shows up in review. Regenerate it
//! with `leadq openapi > openapi.json`.

use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HttpMethod, ObjectBuilder, OpenApi, RefOr, ResponseBuilder, Schema, Type,
};
use utoipa::{Modify, OpenApi as _, ToSchema};

use crate::error::ApiError;

/// The security scheme of tenant API keys (`Authorization: Bearer lq_…`).
pub const API_KEY: &str = "api_key";
/// The security scheme of operator tokens (`Authorization: Bearer <operator token>`).
pub const OPERATOR: &str = "operator_token";

/// The document's fixed part; the paths come from the router.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "leadq",
        description = "Multi-tenant job queue for lead qualification: producers post leads and \
                       webhooks, typed workers score them, sync them to the CRM and answer chats. \
                       Every error answers the standard error body with a stable `code`.",
        license(name = "Proprietary"),
    ),
    paths(healthz, readyz, metrics),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&Standard),
    tags(
        (name = "leads", description = "Leads of the caller's tenant (tenant API key)."),
        (name = "webhooks", description = "Deliveries from Chatwoot and Telegram, \
                                          authenticated by their own signatures."),
        (name = "operations", description = "Platform operators (operator token); every call \
                                            is audited."),
        (name = "audit", description = "The tenant's own audit trail."),
        (name = "status", description = "The tenant's own queues, dead letters and runs."),
        (name = "health", description = "Probes and metrics."),
    )
)]
pub struct ApiDoc;

/// The standard error body: every 4xx and 5xx answer.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only: `ApiError::into_response` writes the body
pub struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// Stable machine-readable code (the README lists what each means).
    #[schema(schema_with = error_code)]
    code: String,
    /// For humans; never carries internals.
    message: String,
    /// The request's correlation id (also the `x-correlation-id` response header).
    correlation_id: String,
    /// The fields at fault (`validation_failed` only).
    details: Option<Vec<leadq_jobs::lead::FieldError>>,
}

/// Codes answered outside [`ApiError`]: `/metrics` is served by `leadq_jobs::health`, which
/// the worker serves too.
const OTHER_CODES: &[&str] = &["invalid_metrics_token"];

fn error_code() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(ApiError::CODES.iter().chain(OTHER_CODES).copied()))
        .into()
}

/// Adds what no single handler says.
struct Standard;

/// Statuses any operation can answer, whatever it does: a malformed path or query (400), a
/// character PostgreSQL cannot store (422), the edge's limits (429), an outage (503), a bug
/// (500).
const EVERY_OPERATION: &[(&str, &str)] = &[
    ("400", "Malformed path, query or body."),
    (
        "422",
        "A value that cannot be stored (NUL, lone surrogate) or is invalid.",
    ),
    ("429", "Too many requests; see `Retry-After`."),
    ("500", "Internal error (details only in the logs)."),
    (
        "503",
        "A store is unavailable or the request timed out; retry later.",
    ),
];

/// Statuses of authenticated operations.
const AUTHENTICATED: &[(&str, &str)] = &[
    ("401", "Missing, unknown, expired or revoked credentials."),
    (
        "403",
        "The credentials may not do this (scope, permission, suspended tenant).",
    ),
];

impl Modify for Standard {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |format: &str, what: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format(format)
                    .description(Some(what))
                    .build(),
            )
        };
        components.add_security_scheme(
            API_KEY,
            bearer(
                "lq_<prefix>_<secret>",
                "A tenant API key (`leadq key create`); its scopes decide what it may do.",
            ),
        );
        components.add_security_scheme(
            OPERATOR,
            bearer(
                "opaque",
                "A platform operator's token (LEADQ_OPERATOR_TOKENS), for a registered operator.",
            ),
        );
        link_lead_operations(openapi);
        constrain_parameters(openapi);
        for item in openapi.paths.paths.values_mut() {
            for method in [HttpMethod::Get, HttpMethod::Post, HttpMethod::Delete] {
                let op = match method {
                    HttpMethod::Get => item.get.as_mut(),
                    HttpMethod::Post => item.post.as_mut(),
                    HttpMethod::Delete => item.delete.as_mut(),
                    _ => None,
                };
                if let Some(op) = op {
                    add_error_responses(op);
                }
            }
        }
    }
}

/// The links a client (and schemathesis's stateful phase) follows: the lead accepted by
/// `create_lead` is read with `get_lead` and erased with `erase_lead`, by its `external_id`.
fn link_lead_operations(openapi: &mut OpenApi) {
    let Some(create) = openapi
        .paths
        .paths
        .get_mut("/v1/leads")
        .and_then(|item| item.post.as_mut())
    else {
        return;
    };
    if let Some(RefOr::T(accepted)) = create.responses.responses.get_mut("202") {
        for (name, operation) in [("GetLead", "get_lead"), ("EraseLead", "erase_lead")] {
            let link = LinkBuilder::new()
                .operation_id(operation)
                .parameter("external_id", "$request.body#/external_id")
                .description("The lead just accepted.")
                .build();
            accepted.links.insert(name.to_owned(), RefOr::T(link));
        }
    }
}

/// What the handlers accept of each named path or query parameter, said once for every
/// operation that takes it (a value outside is refused with a 4xx, as the contract then says).
fn constrain_parameters(openapi: &mut OpenApi) {
    let string = || ObjectBuilder::new().schema_type(Type::String);
    let schema_of = |name: &str| -> Option<Schema> {
        let s = match name {
            "kind" => string().enum_values(Some(leadq_jobs::kinds::names())),
            "tenant" => string().pattern(Some("^[a-z0-9][a-z0-9-]{1,62}$")),
            "external_id" => string().pattern(Some(r"^[\x21-\x7e]{1,128}$")),
            "reason" => string().pattern(Some("^[a-z0-9_]{1,64}$")),
            "cursor" => string().pattern(Some(r"^[0-9]{1,18}:[\x21-\x7e]{1,128}$")),
            _ => return None,
        };
        Some(s.into())
    };
    for item in openapi.paths.paths.values_mut() {
        for op in [&mut item.get, &mut item.post, &mut item.delete]
            .into_iter()
            .flatten()
        {
            for param in op.parameters.iter_mut().flatten() {
                if let Some(schema) = schema_of(&param.name) {
                    param.schema = Some(RefOr::T(schema));
                }
            }
        }
    }
}

fn add_error_responses(op: &mut Operation) {
    let authenticated = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let extra: &[(&str, &str)] = if authenticated { AUTHENTICATED } else { &[] };
    for (status, description) in EVERY_OPERATION.iter().chain(extra) {
        op.responses
            .responses
            .entry((*status).to_owned())
            .or_insert_with(|| error_response(description));
    }
}

/// A response with the standard error body.
pub fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "ErrorBody",
                ))))
                .build(),
        )
        .into()
}

/// The whole document: [`ApiDoc`] with the router's paths merged in.
pub fn document(paths_from_router: OpenApi) -> OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(paths_from_router);
    Standard.modify(&mut doc);
    doc
}

/// The document as JSON. utoipa 5 writes a link's fields in snake case (`operation_id`);
/// OpenAPI spells them in camel case, and clients (schemathesis among them) follow only those.
pub fn to_value(doc: &OpenApi) -> serde_json::Value {
    let mut value = serde_json::to_value(doc).expect("the document serializes");
    camel_case_links(&mut value);
    value
}

fn camel_case_links(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Object(links)) = map.get_mut("links") {
                for link in links.values_mut().filter_map(|l| l.as_object_mut()) {
                    for (snake, camel) in [
                        ("operation_id", "operationId"),
                        ("operation_ref", "operationRef"),
                        ("request_body", "requestBody"),
                    ] {
                        if let Some(x) = link.remove(snake) {
                            link.insert(camel.to_owned(), x);
                        }
                    }
                }
            }
            map.values_mut().for_each(camel_case_links);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(camel_case_links),
        _ => {}
    }
}

/// The document as the committed `openapi.json` holds it (pretty, newline-terminated).
pub fn to_json(doc: &OpenApi) -> String {
    let mut s = serde_json::to_string_pretty(&to_value(doc)).expect("the document serializes");
    s.push('\n');
    s
}

/// `GET /healthz`: the process is alive.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "health",
    responses((status = 200, description = "Alive: `{\"status\": \"ok\"}`.", body = Object)))]
#[allow(dead_code)] // documentation of a route `leadq_jobs::health` serves
fn healthz() {}

/// `GET /readyz`: PostgreSQL and Redis answer.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "health",
    responses(
        (status = 200, description = "Ready: each store's state.", body = Object),
        (status = 503, description = "A store does not answer; which one is in the body.",
         body = Object),
    ))]
#[allow(dead_code)]
fn readyz() {}

/// `GET /metrics`: Prometheus text exposition. Behind a bearer token when
/// `LEADQ_METRICS_TOKEN` is set; absent here when `LEADQ_METRICS_ADDR` serves it apart.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "health",
    responses(
        (status = 200, description = "The metrics.", body = String,
         content_type = "text/plain; version=0.0.4"),
        (status = 401, description = "`LEADQ_METRICS_TOKEN` is set and was not presented.",
         body = ErrorBody),
    ))]
#[allow(dead_code)]
fn metrics() {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed `openapi.json` is what the code generates: a contract change must show
    /// up in review as a change of that file. `LEADQ_UPDATE_OPENAPI=1` rewrites it.
    #[test]
    fn the_committed_openapi_json_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.json");
        let generated = to_json(&crate::openapi_document());
        if std::env::var_os("LEADQ_UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &generated).expect("write openapi.json");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "openapi.json is not what the code generates: the API contract changed. Review the \
             change, then run `leadq openapi > openapi.json` (or LEADQ_UPDATE_OPENAPI=1 cargo \
             test -p leadq-api openapi) and commit it."
        );
    }

    #[test]
    fn every_operation_documents_the_standard_errors_and_its_security() {
        let doc = crate::openapi_document();
        let mut operations = 0;
        for (path, item) in &doc.paths.paths {
            for op in [&item.get, &item.post, &item.delete].into_iter().flatten() {
                operations += 1;
                for status in ["400", "422", "429", "500", "503"] {
                    assert!(
                        op.responses.responses.contains_key(status),
                        "{path} {status}"
                    );
                }
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let public = path.starts_with("/v1/webhooks/")
                    || ["/healthz", "/readyz", "/metrics"].contains(&path.as_str());
                assert_eq!(secured, !public, "{path}: security declared");
                if secured {
                    assert!(op.responses.responses.contains_key("401"), "{path} 401");
                }
            }
        }
        assert_eq!(operations, 22, "every route of the router and the probes");
        let mut ids: Vec<_> = doc
            .paths
            .paths
            .values()
            .flat_map(|i| [&i.get, &i.post, &i.delete])
            .flatten()
            .filter_map(|op| op.operation_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(
            ids.len(),
            operations,
            "operation ids are unique and present"
        );
    }
}
