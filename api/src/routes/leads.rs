//! `POST /v1/leads` (enqueue a `lead_score` job) and `GET /v1/leads/{external_id}`.
//!
//! Payload versions (README, "Payload versions"): a body version 1 of the `lead_score` payload
//! can carry is enqueued as version 1, byte for byte as before; only a body with content
//! version 1 cannot carry (a yes/no answer, a `consent` block) is enqueued as version 2. So
//! this producer needs workers that read version 2 only for the bodies that use it, and
//! workers are deployed first.

use std::collections::BTreeMap;

use axum::extract::State;

use crate::rejections::ApiPath;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use leadq_jobs::kinds;
use leadq_jobs::lead::{Answer, Consent, FieldError, LeadInputV2};
use leadq_jobs::ops::limits::Admission;
use leadq_platform::apikey::scope;
use leadq_platform::db::{self, Scope};
use leadq_platform::metrics as m;
use leadq_queue::envelope::{self, Envelope};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{ApiJson, Auth};
use crate::middleware::current_correlation_id;
use crate::AppState;

/// The body of `POST /v1/leads`: a lead as the Telegram bot collects it. Required fields are
/// optional here so that a missing one is reported like any other field error.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({
    "external_id": "tg-1001", "source": "telegram", "name": "Ada Lovelace",
    "username": "ada", "phone": "+44 20 7946 0000", "email": "ada@example.com",
    "answers": {"budget": 20000, "timeline": "this quarter", "decision_maker": true},
    "campaign": "spring-webinar", "message_id": "bot-msg-1001",
    "consent": {"marketing": true, "given_at": "2026-03-01T12:00:00Z", "text_version": "2026-01"}
}))]
pub struct CreateLead {
    /// The producer's id of the lead (unique per tenant): 1-128 printable ASCII characters,
    /// no spaces.
    #[schema(required = true, value_type = String, pattern = r"^[\x21-\x7e]{1,128}$")]
    external_id: Option<String>,
    /// Where the lead came from, e.g. `telegram`: lowercase letters, digits, `_`.
    #[schema(required = true, value_type = String, pattern = "^[a-z0-9_]{1,32}$")]
    source: Option<String>,
    /// The person's name.
    #[schema(max_length = 200)]
    name: Option<String>,
    /// Their handle, e.g. the Telegram username.
    #[schema(max_length = 64)]
    username: Option<String>,
    /// 7-15 digits, with spaces, `+`, `-`, `(`, `)` or `.` between them.
    #[schema(pattern = r"^[ +\-().]*([0-9][ +\-().]*){7,15}$")]
    phone: Option<String>,
    /// An e-mail address.
    #[schema(format = Email, max_length = 254)]
    email: Option<String>,
    /// Answers may be strings, numbers (`"budget": 20000`) or yes/no (`true`); they are
    /// stored as strings (`"20000"`, `"true"`). At most 50, named in at most 64 characters.
    #[serde(default)]
    #[schema(schema_with = answers_schema)]
    answers: BTreeMap<String, Answer>,
    /// The campaign that brought the lead (the first one recorded is kept); no control
    /// characters.
    #[schema(pattern = r"^[^\x00-\x1f\x7f-\x9f]{1,64}$")]
    campaign: Option<String>,
    /// Producer's message id; the same id within the dedupe window enqueues one job.
    #[schema(pattern = r"^[\x21-\x7e]{1,128}$")]
    message_id: Option<String>,
    /// The person's consent, recorded as audit evidence with the lead (never personal data).
    /// Checked field by field here, so a bad one is a 422 with a field code.
    #[schema(schema_with = consent_schema)]
    consent: Option<serde_json::Value>,
}

/// `answers` as the contract states it: at most 50, named in 1-64 characters; each a string
/// of at most 2,000 characters, a number or a yes/no.
fn answers_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
    let value = OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(2000)),
        )
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .item(ObjectBuilder::new().schema_type(Type::Boolean));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(Schema::OneOf(value.build())))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(64)),
        ))
        .max_properties(Some(50))
        .description(Some(
            "Questionnaire answers: strings (at most 2,000 characters), numbers or yes/no; \
             stored as strings.",
        ))
        .build()
}

/// `consent` as the contract states it: what the person agreed to, when, under which text.
fn consent_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, SchemaType, Type};
    ObjectBuilder::new()
        // `null` is no consent block, as an absent one is.
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .property(
            "marketing",
            ObjectBuilder::new()
                .schema_type(Type::Boolean)
                .description(Some("They agreed to marketing messages.")),
        )
        .required("marketing")
        .property(
            "given_at",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
                .description(Some("When they agreed (RFC 3339).")),
        )
        .required("given_at")
        .property(
            "text_version",
            ObjectBuilder::new()
                // Optional: `null` is the same as absent.
                .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                .min_length(Some(1))
                .max_length(Some(64))
                .pattern(Some(r"^[^\x00-\x1f\x7f-\x9f]{1,64}$"))
                .description(Some("The version of the consent text they saw.")),
        )
        .description(Some(
            "Consent evidence, recorded in the tenant's audit trail (`lead.consent`) when the \
             lead is scored.",
        ))
        .build()
}

/// The answer to an accepted lead.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// The `lead_score` job.
    pub job_id: Uuid,
    /// The message id (the producer's, or one made here).
    pub message_id: String,
    /// True when this message id was already accepted: nothing new was enqueued.
    pub duplicate: bool,
}

fn required(errs: &mut Vec<FieldError>, field: &str, v: Option<String>) -> String {
    match v {
        Some(v) => v,
        None => {
            errs.push(FieldError {
                field: field.into(),
                code: "required",
            });
            String::new()
        }
    }
}

/// Counts a refusal by a per-tenant limit, by tenant (bounded label) and scope.
async fn rate_limited(app: &AppState, tenant: Uuid, scope: &'static str) {
    if let Some(tenant) = app.tenant_labels.label(tenant).await {
        metrics::counter!(m::RATE_LIMITED_TOTAL, m::label::SCOPE => scope,
            m::label::TENANT => tenant)
        .increment(1);
    }
}

/// Takes one erasure from `tenant`'s budget (`LEADQ_ERASURES_PER_SEC`, with its burst): over
/// it, 429 `rate_limited` with the wait. An erasure's cost is a read of every tenant's queued
/// jobs, whatever it finds (`leadq_platform::config::EdgeSettings::erasures_per_sec`).
async fn erasure_budget(app: &AppState, tenant: Uuid) -> Result<(), ApiError> {
    let edge = &app.settings.edge;
    match app
        .queue
        .take_budget(
            "erasure",
            &tenant.to_string(),
            edge.erasures_per_sec,
            edge.erasures_burst,
        )
        .await
        .map_err(ApiError::QueueUnavailable)?
    {
        None => Ok(()),
        Some(wait) => {
            rate_limited(app, tenant, "tenant_erasures").await;
            Err(ApiError::RateLimited(wait))
        }
    }
}

/// `POST /v1/leads`.
///
/// Enqueued as a `lead_score` job: a body with a yes/no answer or `consent` travels as payload
/// version 2, any other as version 1.
#[utoipa::path(post, path = "/v1/leads", operation_id = "create_lead", tag = "leads",
    security(("api_key" = [])),
    request_body(content = CreateLead, description = "A lead as the Telegram bot collects it \
        (scope `leads:write`)."),
    responses(
        (status = 202, description = "Enqueued for scoring (or already accepted under this \
            `message_id`: `duplicate`).", body = Accepted),
        (status = 413, description = "Body too large.", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not `application/json`.",
         body = crate::openapi::ErrorBody),
    ))]
pub async fn create(
    State(app): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<CreateLead>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let principal = auth.require(scope::LEADS_WRITE)?;
    let mut errs = Vec::new();
    let external_id = required(&mut errs, "external_id", body.external_id);
    let source = required(&mut errs, "source", body.source);
    let (consent, consent_errs) = match body.consent.as_ref().map(Consent::parse) {
        None => (None, Vec::new()),
        Some(Ok(c)) => (Some(c), Vec::new()),
        Some(Err(e)) => (None, e),
    };
    // Version 2 only for what version 1 cannot carry (see the module docs).
    let v2 = consent.is_some() || body.answers.values().any(Answer::is_flag);
    let lead = LeadInputV2 {
        external_id,
        source,
        name: body.name,
        username: body.username,
        phone: body.phone,
        email: body.email,
        answers: body.answers,
        campaign: body.campaign,
        next_answer: None,
        consent,
    };
    // Validated in the shape the worker validates: version 1's (typed answers as text).
    // `required` already reported the missing ones; skip their duplicate "required".
    for e in lead.clone().into_v1().0.validate() {
        if !errs.iter().any(|x| x.field == e.field) {
            errs.push(e);
        }
    }
    errs.extend(consent_errs);
    if let Some(id) = &body.message_id {
        if !envelope::valid_id(id) {
            errs.push(FieldError {
                field: "message_id".into(),
                code: "invalid_format",
            });
        }
    }
    if !errs.is_empty() {
        return Err(ApiError::Validation(errs));
    }
    // Admission after validation: a malformed request costs no quota.
    let limits = app.limits.get(&app.pool, principal.tenant_id).await?;
    match leadq_jobs::ops::limits::admit(&app.queue, principal.tenant_id, &limits)
        .await
        .map_err(ApiError::QueueUnavailable)?
    {
        Admission::Admitted => {}
        Admission::RateLimited(d) => {
            rate_limited(&app, principal.tenant_id, "tenant_rate").await;
            return Err(ApiError::RateLimited(d));
        }
        Admission::QuotaExceeded(d) => {
            rate_limited(&app, principal.tenant_id, "tenant_quota").await;
            return Err(ApiError::QuotaExceeded(d));
        }
    }
    let message_id = body
        .message_id
        .unwrap_or_else(|| Uuid::now_v7().to_string());
    // Redis never holds personal data in clear.
    let mut lead = lead;
    let tenant = principal.tenant_id;
    app.sealer
        .seal_contact(tenant, &mut lead.email, &mut lead.phone);
    let (version, payload) = if v2 {
        (2, serde_json::to_value(&lead))
    } else {
        (
            envelope::SCHEMA_VERSION,
            serde_json::to_value(lead.into_v1().0),
        )
    };
    let payload = payload.map_err(|e| ApiError::Internal(anyhow::Error::new(e)))?;
    let envelope = Envelope::new(
        principal.tenant_id,
        principal.actor(),
        kinds::LEAD_SCORE,
        payload,
    )
    .schema_version(version)
    .message_id(message_id)
    .correlation_id(current_correlation_id());
    let e = app
        .queue
        .enqueue_now(envelope)
        .await
        .map_err(ApiError::QueueUnavailable)?;
    tracing::info!(job_id = %e.job_id, duplicate = e.duplicate, schema_version = version,
        "Lead accepted.");
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            job_id: e.job_id,
            message_id: e.message_id,
            duplicate: e.duplicate,
        }),
    ))
}

/// `DELETE /v1/leads/{external_id}`: right to be forgotten (see
/// [`leadq_jobs::lead::erase`]). 404 when the caller's tenant has nothing under that id.
#[utoipa::path(delete, path = "/v1/leads/{external_id}", operation_id = "erase_lead", tag = "leads",
    security(("api_key" = [])),
    params(("external_id" = String, Path, description = "The producer's id of the lead.")),
    responses(
        (status = 200, description = "Erased; what was removed where.",
         body = leadq_jobs::lead::Erased),
        (status = 400, description = "The id is not of the form a lead's can be (`invalid_path`: \
            1-128 printable ASCII characters).", body = crate::openapi::ErrorBody),
        (status = 404, description = "The tenant has nothing under this id.",
         body = crate::openapi::ErrorBody),
        (status = 429, description = "Over the tenant's erasure rate (`rate_limited`; \
            `Retry-After` says when).", body = crate::openapi::ErrorBody),
    ))]
pub async fn delete(
    State(app): State<AppState>,
    auth: Auth,
    ApiPath(external_id): ApiPath<String>,
) -> Result<Json<leadq_jobs::lead::Erased>, ApiError> {
    let principal = auth.require(scope::LEADS_WRITE)?;
    // An id no lead can have (the form `POST` requires) is refused before anything is written:
    // the erasure would record a tombstone and an audit entry for it, and an id too long for
    // the tombstone's index would fail in the database.
    if !envelope::valid_id(&external_id) {
        return Err(ApiError::InvalidPath);
    }
    erasure_budget(&app, principal.tenant_id).await?;
    let erased = leadq_jobs::lead::erase(
        &app.pool,
        &app.queue,
        &app.sealer,
        principal.tenant_id,
        &external_id,
        &principal.actor(),
        &current_correlation_id(),
    )
    .await?;
    if erased.found_anything() {
        Ok(Json(erased))
    } else {
        Err(ApiError::NotFound)
    }
}

/// A lead with its latest score.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct LeadView {
    id: Uuid,
    external_id: String,
    source: String,
    name: Option<String>,
    username: Option<String>,
    phone: Option<String>,
    email: Option<String>,
    #[schema(value_type = BTreeMap<String, String>)]
    answers: sqlx::types::Json<serde_json::Value>,
    score: Option<i32>,
    tier: Option<String>,
    #[schema(value_type = Vec<Object>)]
    reasons: sqlx::types::Json<serde_json::Value>,
    scored_at: Option<DateTime<Utc>>,
    version: i64,
    campaign: Option<String>,
    conversation_status: Option<String>,
    qualified_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl LeadView {
    fn open(
        &mut self,
        sealer: &leadq_jobs::pii::Sealer,
        tenant: Uuid,
    ) -> Result<(), leadq_jobs::pii::at_rest::Unreadable> {
        use leadq_jobs::pii::{at_rest::open_stored, field};
        for (f, v) in [
            (field::NAME, &mut self.name),
            (field::USERNAME, &mut self.username),
            (field::PHONE, &mut self.phone),
            (field::EMAIL, &mut self.email),
        ] {
            *v = open_stored(sealer, tenant, f, v.take())?;
        }
        Ok(())
    }
}

/// `GET /v1/leads/{external_id}`: the caller's tenant only; another tenant's lead is a 404.
#[utoipa::path(get, path = "/v1/leads/{external_id}", operation_id = "get_lead", tag = "leads",
    security(("api_key" = [])),
    params(("external_id" = String, Path, description = "The producer's id of the lead.")),
    responses(
        (status = 200, description = "The lead and its latest score (scope `leads:read`).",
         body = LeadView),
        (status = 404, description = "No such lead in the caller's tenant.",
         body = crate::openapi::ErrorBody),
    ))]
pub async fn get(
    State(app): State<AppState>,
    auth: Auth,
    ApiPath(external_id): ApiPath<String>,
) -> Result<Json<LeadView>, ApiError> {
    let principal = auth.require(scope::LEADS_READ)?;
    let lead: Option<LeadView> = sqlx::query_as(
        "select id, external_id, source, name, username, phone, email, answers, score, tier,
                reasons, scored_at, version, campaign, conversation_status, qualified_at,
                created_at, updated_at
           from leads where tenant_id = $1 and external_id = $2",
    )
    .bind(principal.tenant_id)
    .bind(&external_id)
    .fetch_optional(&mut *db::begin(&app.pool, Scope::Tenant(principal.tenant_id)).await?)
    .await?;
    let mut lead = lead.ok_or(ApiError::NotFound)?;
    // Stored sealed (leadq_jobs::pii::at_rest): opened for the tenant's own authorized read.
    // A value that does not open is a fault of ours (a dropped key), logged, never shown.
    lead.open(&app.sealer, principal.tenant_id)
        .map_err(|e| ApiError::Internal(e.into()))?;
    // A read of personal data: audited (batched, off this path), by id, never the data.
    app.reads
        .record(leadq_platform::audit::reads::Read {
            tenant_id: Some(principal.tenant_id),
            actor: principal.actor(),
            action: "lead.read",
            subject: format!("lead:{}", lead.id),
            correlation_id: current_correlation_id(),
            details: serde_json::json!({}),
        })
        .await;
    Ok(Json(lead))
}

/// `POST /v1/erasures`: a person known by an email address or a phone number (exactly one).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "ada@example.com"}))]
pub struct EraseByContact {
    /// The person's e-mail address.
    #[schema(format = Email, max_length = 254)]
    email: Option<String>,
    /// The person's phone number: 7-15 digits, with spaces, `+`, `-`, `(`, `)` or `.`.
    #[schema(pattern = r"^[ +\-().]*([0-9][ +\-().]*){7,15}$")]
    phone: Option<String>,
}

impl EraseByContact {
    /// The field and value to erase by, or what is wrong with the body.
    fn target(self) -> Result<(leadq_jobs::lead::ContactField, String), ApiError> {
        use leadq_jobs::lead::{plausible_email, plausible_phone, ContactField};
        let invalid = |field: &str, code| {
            ApiError::Validation(vec![FieldError {
                field: field.into(),
                code,
            }])
        };
        let trimmed = |v: Option<String>| v.map(|v| v.trim().to_owned());
        match (trimmed(self.email), trimmed(self.phone)) {
            (Some(e), None) if e.len() <= 254 && plausible_email(&e) => {
                Ok((ContactField::Email, e))
            }
            (Some(_), None) => Err(invalid("email", "invalid_format")),
            (None, Some(p)) if plausible_phone(&p) => Ok((ContactField::Phone, p)),
            (None, Some(_)) => Err(invalid("phone", "invalid_format")),
            (Some(_), Some(_)) => Err(invalid("phone", "one_of_email_or_phone")),
            (None, None) => Err(invalid("email", "required")),
        }
    }
}

/// `POST /v1/erasures`: right to be forgotten for a person known only by an email address or
/// a phone number: every lead of the caller's tenant with it (blind index) is erased as
/// `DELETE /v1/leads/{external_id}` erases one, and queued jobs still carrying it are removed
/// (see [`leadq_jobs::lead::erase_by_contact`]). 404 when the tenant holds nothing with it.
#[utoipa::path(post, path = "/v1/erasures", operation_id = "erase_by_contact", tag = "leads",
    security(("api_key" = [])),
    request_body(content = EraseByContact, description = "Exactly one of `email` or `phone` \
        (scope `leads:write`)."),
    responses(
        (status = 200, description = "Erased; each lead found and what was removed where.",
         body = leadq_jobs::lead::ErasedByContact),
        (status = 404, description = "The tenant holds nothing with this email or phone.",
         body = crate::openapi::ErrorBody),
        (status = 413, description = "Body too large.", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not `application/json`.",
         body = crate::openapi::ErrorBody),
        (status = 422, description = "Neither or both of `email` and `phone`, or one that is \
            not an email address or phone number.", body = crate::openapi::ErrorBody),
        (status = 429, description = "Over the tenant's erasure rate (`rate_limited`; \
            `Retry-After` says when).", body = crate::openapi::ErrorBody),
    ))]
pub async fn erase_by_contact(
    State(app): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<EraseByContact>,
) -> Result<Json<leadq_jobs::lead::ErasedByContact>, ApiError> {
    let principal = auth.require(scope::LEADS_WRITE)?;
    let (by, value) = body.target()?;
    erasure_budget(&app, principal.tenant_id).await?;
    let erased = leadq_jobs::lead::erase_by_contact(
        &app.pool,
        &app.queue,
        &app.sealer,
        principal.tenant_id,
        by,
        &value,
        &principal.actor(),
        &current_correlation_id(),
    )
    .await?;
    if erased.found_anything() {
        Ok(Json(erased))
    } else {
        Err(ApiError::NotFound)
    }
}
