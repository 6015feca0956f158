//! `GET /console/tenants`: every tenant's standing per kind (backlog, held, running, cap,
//! weight, paused) with its controls; `POST /console/tenants/{slug}/{kind}` changes one
//! (pause, resume, cap, uncap, weight) after a confirmation page. The data and the changes
//! are `routes::queues`' (`GET /v1/queues/tenants`, `POST /v1/queues/{kind}/tenants/{slug}`).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect};
use leadq_jobs::ops::tenant_queue::Control;
use maud::html;
use serde::Deserialize;

use super::{confirm, num_th};
use crate::console::form::Form;
use crate::console::layout::{self, csrf};
use crate::console::session::SignedIn;
use crate::console::{PageError, PageResult};
use crate::error::ApiError;
use crate::rejections::ApiPath;
use crate::routes::queues;
use crate::AppState;

/// `?tenant=&after=&changed=<kind>:<action>`.
#[derive(Debug, Default, Deserialize)]
pub struct TenantsQuery {
    tenant: Option<String>,
    after: Option<String>,
    changed: Option<String>,
}

/// `GET /console/tenants`.
pub async fn page(
    State(app): State<AppState>,
    who: SignedIn,
    q: Result<Query<TenantsQuery>, QueryRejection>,
) -> PageResult {
    let operator = who.operator()?;
    let Query(q) = q.map_err(|_| PageError(ApiError::InvalidQuery))?;
    let tenant = q.tenant.as_deref().filter(|t| !t.is_empty());
    let page = queues::tenants_page(&app, operator, tenant, q.after.as_deref()).await?;
    let notice = q.changed.as_deref().and_then(changed_notice);
    let body = html! {
        form id="tenant-filter" method="get" action="/console/tenants" class="filters" {
            label for="tenant-filter-slug" { "Tenant" }
            input id="tenant-filter-slug" name="tenant" value=(tenant.unwrap_or(""))
                placeholder="slug";
            button type="submit" { "Show" }
            @if tenant.is_some() { " " a href="/console/tenants" { "All tenants" } }
        }
        table id="tenants" {
            caption class="visually-hidden" { "Tenants' queue controls per kind" }
            thead { tr {
                th scope="col" { "Tenant" } th scope="col" { "Kind" }
                (num_th("Backlog")) (num_th("Held")) (num_th("Running"))
                (num_th("Cap")) (num_th("Weight")) th scope="col" { "Paused" }
                th scope="col" { "Change" }
            } }
            tbody {
                @for r in &page.rows {
                    tr data-tenant=(r.tenant) data-kind=(r.kind) class=[r.paused.then_some("paused")] {
                        th scope="row" { a href=(format!("/console/tenants/{}", r.tenant)) { (r.tenant) } }
                        td { (r.kind) }
                        td data-field="backlog" class="num" { (r.backlog) }
                        td data-field="held" class="num" { (r.held) }
                        td data-field="running" class="num" { (r.running) }
                        td data-field="cap" class="num" { (layout::maybe(r.cap)) }
                        td data-field="weight" class="num" { (r.weight) }
                        td data-field="paused" { @if r.paused { "yes" } @else { "no" } }
                        td {
                            form class="tenant-control" method="post"
                                action=(format!("/console/tenants/{}/{}", r.tenant, r.kind)) {
                                (csrf(&who))
                                @if r.paused {
                                    button name="action" value="resume" type="submit"
                                        aria-label=(format!("Resume {} {}", r.tenant, r.kind)) { "Resume" }
                                } @else {
                                    button name="action" value="pause" type="submit"
                                        aria-label=(format!("Pause {} {}", r.tenant, r.kind)) { "Pause" }
                                }
                                " "
                                input name="cap" type="number" min="1" step="1" size="4"
                                    aria-label=(format!("Cap for {} {}", r.tenant, r.kind));
                                button name="action" value="cap" type="submit" { "Set cap" }
                                @if r.cap.is_some() {
                                    button name="action" value="uncap" type="submit" { "Uncap" }
                                }
                                " "
                                input name="weight" type="number" min="0.01" max="1000" step="0.01" size="5"
                                    aria-label=(format!("Weight for {} {}", r.tenant, r.kind));
                                button name="action" value="weight" type="submit" { "Set weight" }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(after) = &page.next_after {
            p { a id="next-page" href=(format!("/console/tenants?after={after}")) { "Next tenants" } }
        }
    };
    Ok(layout::page(
        &who,
        "Tenants",
        "/console/tenants",
        notice.as_deref(),
        body,
    ))
}

/// The notice after a change, from `changed=<kind>:<action>` (only known words are shown).
fn changed_notice(changed: &str) -> Option<String> {
    let (kind, action) = changed.split_once(':')?;
    let done = match action {
        "pause" => "Paused",
        "resume" => "Resumed",
        "cap" => "Capped",
        "uncap" => "Removed the cap of",
        "weight" => "Re-weighted",
        _ => return None,
    };
    leadq_jobs::kinds::is_known(kind).then(|| format!("{done} {kind}."))
}

/// What a form asks for, and how the confirmation says it.
fn control_of(
    form: &Form,
    slug: &str,
    kind: &str,
) -> Result<(Control, &'static str, String), ApiError> {
    let bad = |field: &str, code: &'static str| {
        ApiError::Validation(vec![leadq_jobs::lead::FieldError {
            field: field.into(),
            code,
        }])
    };
    Ok(match form.get("action") {
        Some("pause") => (
            Control::Pause,
            "pause",
            format!(
                "Pause {kind} for tenant {slug}: none of its {kind} jobs will start until it is \
             resumed (running ones finish)."
            ),
        ),
        Some("resume") => (
            Control::Resume,
            "resume",
            format!("Resume {kind} for tenant {slug}: its held {kind} jobs will run again."),
        ),
        Some("uncap") => (
            Control::Cap(None),
            "uncap",
            format!("Remove the cap on tenant {slug}'s concurrent {kind} jobs."),
        ),
        Some("cap") => {
            let n: u32 = form
                .get("cap")
                .and_then(|v| v.parse().ok())
                .filter(|n| *n >= 1)
                .ok_or_else(|| bad("cap", "out_of_range"))?;
            (
                Control::Cap(Some(n)),
                "cap",
                format!(
                    "Cap tenant {slug}'s {kind} jobs at {n} running at once across all workers."
                ),
            )
        }
        Some("weight") => {
            let w: f64 = form
                .get("weight")
                .and_then(|v| v.parse().ok())
                .filter(|w: &f64| w.is_finite() && (0.01..=1000.0).contains(w))
                .ok_or_else(|| bad("weight", "out_of_range"))?;
            (
                Control::Weight(w),
                "weight",
                format!(
                    "Set tenant {slug}'s share of the {kind} workers to {w} (others default to 1)."
                ),
            )
        }
        _ => return Err(bad("action", "invalid_choice")),
    })
}

/// `POST /console/tenants/{slug}/{kind}`: the confirmation, then the change.
pub async fn change(
    State(app): State<AppState>,
    who: SignedIn,
    ApiPath((slug, kind)): ApiPath<(String, String)>,
    headers: HeaderMap,
    form: Form,
) -> PageResult {
    who.check_form(&headers, &form)?;
    let operator = who.operator()?;
    operator.require(leadq_platform::operators::permission::TENANTS)?;
    if !leadq_jobs::kinds::is_known(&kind) || !leadq_platform::tenant::valid_slug(&slug) {
        return Err(PageError(ApiError::NotFound));
    }
    let (control, action, text) = control_of(&form, &slug, &kind)?;
    let back = format!("/console/tenants?tenant={slug}");
    if form.get("confirm") != Some("yes") {
        let here = format!("/console/tenants/{slug}/{kind}");
        return Ok(confirm(&who, &text, None, &here, &form.0, &back));
    }
    queues::apply(&app, operator, &kind, &slug, control).await?;
    Ok(Redirect::to(&format!("{back}&changed={kind}:{action}")).into_response())
}
