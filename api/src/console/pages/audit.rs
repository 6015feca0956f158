//! `GET /console/audit`: the audit trail (the platform's own events, or one tenant's) filtered
//! by actor, action and time, newest first, paged; and the chain's last verification. The
//! data is `routes::audit::trail_of` (`GET /v1/audit/trail`); reading a tenant's trail is
//! itself audited.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use chrono::{DateTime, NaiveDateTime, Utc};
use maud::html;
use serde::Deserialize;

use crate::console::layout;
use crate::console::session::SignedIn;
use crate::console::{PageError, PageResult};
use crate::error::ApiError;
use crate::routes::audit::{trail_of, TrailQuery};
use crate::AppState;

/// The form's fields; times as `datetime-local` sends them, read as UTC.
#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    tenant: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    since: Option<String>,
    until: Option<String>,
    before: Option<String>,
}

fn present(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// `2026-12-05T10:30` (or with seconds, or RFC 3339) as UTC.
fn when(v: &Option<String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(v) = present(v) else { return Ok(None) };
    if let Ok(t) = DateTime::parse_from_rfc3339(&v) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(&v, f).ok())
        .map(|t| Some(t.and_utc()))
        .ok_or(ApiError::InvalidQuery)
}

/// `GET /console/audit`.
pub async fn page(
    State(app): State<AppState>,
    who: SignedIn,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> PageResult {
    let operator = who.operator()?;
    let Query(q) = q.map_err(|_| PageError(ApiError::InvalidQuery))?;
    let query = TrailQuery {
        tenant: present(&q.tenant),
        actor: present(&q.actor),
        action: present(&q.action),
        since: when(&q.since)?,
        until: when(&q.until)?,
        before: present(&q.before)
            .map(|b| b.parse().map_err(|_| ApiError::InvalidQuery))
            .transpose()?,
        limit: Some(100),
    };
    let trail = trail_of(&app, operator, &query).await?;
    let value = |v: &Option<String>| present(v).unwrap_or_default();
    let next = trail.page.next_before.map(|b| {
        let mut url = format!("/console/audit?before={b}");
        for (k, v) in [
            ("tenant", &q.tenant),
            ("actor", &q.actor),
            ("action", &q.action),
            ("since", &q.since),
            ("until", &q.until),
        ] {
            if let Some(v) = present(v) {
                url.push_str(&format!(
                    "&{k}={}",
                    percent_encoding::utf8_percent_encode(&v, percent_encoding::NON_ALPHANUMERIC)
                ));
            }
        }
        url
    });
    let body = html! {
        section id="chain-verification" aria-label="Audit chain verification" {
            @match &trail.verification {
                Some(v) => p class=(if v.ok { "ok" } else { "failing" }) {
                    "Last chain verification: " strong { @if v.ok { "intact" } @else { "BROKEN" } }
                    " at " (layout::time(&v.ran_at)) " — " (v.detail)
                },
                None => p { "The audit chains have not been verified yet (the scheduler's audit_verify task)." },
            }
        }
        form id="audit-filter" method="get" action="/console/audit" class="filters" {
            label for="a-tenant" { "Tenant" }
            input id="a-tenant" name="tenant" value=(value(&q.tenant)) placeholder="platform events if empty";
            label for="a-actor" { "Actor" }
            input id="a-actor" name="actor" value=(value(&q.actor)) placeholder="operator:alice";
            label for="a-action" { "Action" }
            input id="a-action" name="action" value=(value(&q.action)) placeholder="queue.tenant.pause";
            label for="a-since" { "Since (UTC)" }
            input id="a-since" name="since" type="datetime-local" value=(value(&q.since));
            label for="a-until" { "Until (UTC)" }
            input id="a-until" name="until" type="datetime-local" value=(value(&q.until));
            button type="submit" { "Filter" }
        }
        table id="audit" {
            caption class="visually-hidden" { "Audit entries, newest first" }
            thead { tr {
                th scope="col" { "When" } th scope="col" { "Actor" } th scope="col" { "Action" }
                th scope="col" { "Subject" } th scope="col" { "Outcome" } th scope="col" { "Correlation id" }
            } }
            tbody {
                @for e in &trail.page.entries {
                    tr class="audit-entry" data-id=(e.id) {
                        td data-field="at" { (layout::time(&e.at)) }
                        td data-field="actor" { (e.actor) }
                        td data-field="action" { (e.action) }
                        td data-field="subject" { code { (e.subject) } }
                        td data-field="outcome" { (e.outcome) }
                        td { code { (e.correlation_id) } }
                    }
                }
            }
        }
        @if let Some(url) = &next { p { a id="next-page" href=(url) { "Older entries" } } }
    };
    Ok(layout::page(
        &who,
        "Audit trail",
        "/console/audit",
        None,
        body,
    ))
}
