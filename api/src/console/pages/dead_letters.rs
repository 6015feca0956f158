//! `GET /console/dead-letters`: dead letters of one kind, filtered by tenant, reason and age,
//! paged, newest first; `GET /console/dead-letters/{kind}/{job_id}`: one, scrubbed, its
//! personal fields masked; `POST /console/dead-letters/{kind}/action`: re-drive or purge the
//! ticked ones or everything matching the filter, after a confirmation stating the count, as
//! a background operation with a progress page (`console::operations`). Lists, views and
//! actions are `routes::dlq`'s (permission `dlq`), audited as over the API.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect};
use leadq_jobs::ops::deadletters::{self, Action};
use maud::html;
use serde::Deserialize;
use uuid::Uuid;

use super::{confirm, num_th};
use crate::console::form::Form;
use crate::console::layout::{self, csrf};
use crate::console::operations;
use crate::console::session::SignedIn;
use crate::console::{PageError, PageResult};
use crate::error::ApiError;
use crate::rejections::ApiPath;
use crate::routes::dlq::{self, ActionBody, FilterParams, ListParams};
use crate::AppState;

/// The filter as the form sends it: every field a string, empty meaning absent.
#[derive(Debug, Default, Deserialize)]
pub struct DlqQuery {
    kind: Option<String>,
    tenant: Option<String>,
    reason: Option<String>,
    older_than_secs: Option<String>,
    newer_than_secs: Option<String>,
    cursor: Option<String>,
}

fn present(v: Option<&str>) -> Option<String> {
    v.map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn seconds(v: Option<&str>) -> Result<Option<u32>, ApiError> {
    present(v)
        .map(|s| s.parse::<u32>().map_err(|_| ApiError::InvalidQuery))
        .transpose()
}

/// The filter fields of a query or a form.
fn filter(
    tenant: Option<&str>,
    reason: Option<&str>,
    older: Option<&str>,
    newer: Option<&str>,
) -> Result<FilterParams, ApiError> {
    Ok(FilterParams {
        tenant: present(tenant),
        reason: present(reason),
        older_than_secs: seconds(older)?,
        newer_than_secs: seconds(newer)?,
    })
}

/// `GET /console/dead-letters`.
pub async fn page(
    State(app): State<AppState>,
    who: SignedIn,
    q: Result<Query<DlqQuery>, QueryRejection>,
) -> PageResult {
    let operator = who.operator()?;
    let Query(q) = q.map_err(|_| PageError(ApiError::InvalidQuery))?;
    let kind = present(q.kind.as_deref()).unwrap_or_else(|| leadq_jobs::kinds::LEAD_SCORE.into());
    let f = filter(
        q.tenant.as_deref(),
        q.reason.as_deref(),
        q.older_than_secs.as_deref(),
        q.newer_than_secs.as_deref(),
    )?;
    let params = ListParams {
        tenant: f.tenant.clone(),
        reason: f.reason.clone(),
        older_than_secs: f.older_than_secs,
        newer_than_secs: f.newer_than_secs,
        cursor: present(q.cursor.as_deref()),
        limit: Some(50),
    };
    let page = dlq::page(&app, operator, &kind, &params).await?;
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let num = |v: Option<u32>| v.map(|n| n.to_string()).unwrap_or_default();
    let next = page.next_cursor.as_ref().map(|c| {
        let mut url = format!("/console/dead-letters?kind={kind}");
        for (k, v) in [
            ("tenant", text(&f.tenant)),
            ("reason", text(&f.reason)),
            ("older_than_secs", num(f.older_than_secs)),
            ("newer_than_secs", num(f.newer_than_secs)),
            ("cursor", c.clone()),
        ] {
            if !v.is_empty() {
                url.push_str(&format!(
                    "&{k}={}",
                    percent_encoding::utf8_percent_encode(&v, percent_encoding::NON_ALPHANUMERIC)
                ));
            }
        }
        url
    });
    let body = html! {
        form id="dlq-filter" method="get" action="/console/dead-letters" class="filters" {
            label for="f-kind" { "Kind" }
            select id="f-kind" name="kind" {
                @for k in leadq_jobs::kinds::names() {
                    option value=(k) selected[k == kind] { (k) }
                }
            }
            label for="f-tenant" { "Tenant" }
            input id="f-tenant" name="tenant" value=(text(&f.tenant)) placeholder="slug";
            label for="f-reason" { "Reason" }
            input id="f-reason" name="reason" value=(text(&f.reason)) placeholder="e.g. max_attempts";
            label for="f-older" { "Dead for at least (s)" }
            input id="f-older" name="older_than_secs" type="number" min="0" value=(num(f.older_than_secs));
            label for="f-newer" { "Dead for at most (s)" }
            input id="f-newer" name="newer_than_secs" type="number" min="0" value=(num(f.newer_than_secs));
            button id="filter-button" type="submit" { "Filter" }
        }
        form id="dlq-actions" method="post" action=(format!("/console/dead-letters/{kind}/action")) {
            (csrf(&who))
            input type="hidden" name="tenant" value=(text(&f.tenant));
            input type="hidden" name="reason" value=(text(&f.reason));
            input type="hidden" name="older_than_secs" value=(num(f.older_than_secs));
            input type="hidden" name="newer_than_secs" value=(num(f.newer_than_secs));
            div class="actions" {
                button name="action" value="redrive" type="submit" { "Re-drive selected" }
                button name="action" value="purge" type="submit" { "Purge selected" }
                button name="action" value="redrive_all" type="submit" { "Re-drive all matching" }
                button name="action" value="purge_all" type="submit" { "Purge all matching" }
            }
            table id="dead-letters" {
                caption class="visually-hidden" { "Dead letters, newest first" }
                thead { tr {
                    th scope="col" { span class="visually-hidden" { "Select" } }
                    th scope="col" { "Job" } th scope="col" { "Message id" }
                    th scope="col" { "Reason" } th scope="col" { "Last error" }
                    (num_th("Attempts")) th scope="col" { "Dead since" }
                } }
                tbody {
                    @for d in &page.items {
                        tr data-job-id=(d.job_id) {
                            td { input type="checkbox" name="job_id" value=(d.job_id)
                                id=(format!("sel-{}", d.job_id))
                                aria-label=(format!("Select {}", d.job_id)); }
                            th scope="row" { a class="dead-letter-link"
                                href=(format!("/console/dead-letters/{}/{}", d.kind, d.job_id)) { code { (d.job_id) } } }
                            td { (layout::maybe(d.envelope.as_ref().map(|e| e.message_id.as_str()))) }
                            td data-field="reason" { (d.reason) }
                            td data-field="last_error_code" { (d.last_error_code) }
                            td class="num" { (d.attempts) }
                            td { (layout::time(&d.dead_at)) }
                        }
                    }
                }
            }
            @if page.items.is_empty() { p id="no-dead-letters" { "No dead letters match." } }
        }
        @if let Some(url) = &next {
            p { a id="next-page" href=(url) { "Older dead letters" } }
        }
    };
    Ok(layout::page(
        &who,
        "Dead letters",
        "/console/dead-letters",
        None,
        body,
    ))
}

/// `GET /console/dead-letters/{kind}/{job_id}`.
pub async fn one(
    State(app): State<AppState>,
    who: SignedIn,
    ApiPath((kind, job_id)): ApiPath<(String, Uuid)>,
) -> PageResult {
    let mut d = dlq::one(&app, who.operator()?, &kind, job_id).await?;
    let payload = d.envelope.as_mut().map(|e| {
        leadq_jobs::pii::mask_personal(&mut e.payload);
        serde_json::to_string_pretty(&e.payload).unwrap_or_default()
    });
    let body = html! {
        dl id="dead-letter" {
            dt { "Job id" } dd data-field="job_id" { code { (d.job_id) } }
            dt { "Kind" } dd data-field="kind" { (d.kind) }
            dt { "Reason" } dd data-field="reason" { (d.reason) }
            dt { "Last error code" } dd data-field="last_error_code" { (d.last_error_code) }
            dt { "Attempts" } dd data-field="attempts" { (d.attempts) }
            dt { "Dead since" } dd { (layout::time(&d.dead_at)) }
            @if let Some(e) = &d.envelope {
                dt { "Tenant id" } dd data-field="tenant_id" { code { (e.tenant_id) } }
                dt { "Message id" } dd data-field="message_id" { code { (e.message_id) } }
                dt { "Action" } dd { (e.action) }
                dt { "Caused by" } dd { code { (e.user_id) } }
                dt { "Correlation id" } dd { code { (e.correlation_id) } }
                dt { "Enqueued" } dd { (layout::time(&e.timestamp)) }
            }
        }
        h2 { "Payload (scrubbed; personal fields masked)" }
        pre id="payload" { (payload.unwrap_or_else(|| "(the envelope could not be read)".into())) }
        p { a href=(format!("/console/dead-letters?kind={kind}")) { "Back to the list" } }
    };
    Ok(layout::page(
        &who,
        "Dead letter",
        "/console/dead-letters",
        None,
        body,
    ))
}

/// `POST /console/dead-letters/{kind}/action`.
pub async fn action(
    State(app): State<AppState>,
    who: SignedIn,
    ApiPath(kind): ApiPath<String>,
    headers: HeaderMap,
    form: Form,
) -> PageResult {
    who.check_form(&headers, &form)?;
    let operator = who.operator()?;
    let (action, everything) = match form.get("action") {
        Some("redrive") => (Action::Redrive, false),
        Some("purge") => (Action::Purge, false),
        Some("redrive_all") => (Action::Redrive, true),
        Some("purge_all") => (Action::Purge, true),
        _ => return Err(PageError(ApiError::InvalidBody)),
    };
    let f = filter(
        form.get("tenant"),
        form.get("reason"),
        form.get("older_than_secs"),
        form.get("newer_than_secs"),
    )
    .map_err(|_| ApiError::InvalidBody)?;
    let job_ids = if everything {
        None
    } else {
        let ids = form
            .all("job_id")
            .map(|v| v.parse::<Uuid>().map_err(|_| ApiError::InvalidBody))
            .collect::<Result<Vec<_>, _>>()?;
        if ids.is_empty() {
            return Err(PageError(ApiError::Validation(vec![
                leadq_jobs::lead::FieldError {
                    field: "job_id".into(),
                    code: "required",
                },
            ])));
        }
        Some(ids)
    };
    let body = ActionBody {
        job_ids,
        filter: f,
        all: everything,
    };
    let selection = dlq::selection(&app, operator, &kind, body).await?;
    let (ids, _) = deadletters::selected(&app.queue, &kind, action, &selection).await?;
    if form.get("confirm") != Some("yes") {
        let verb = match action {
            Action::Redrive => "Re-drive",
            Action::Purge => "Purge for good",
        };
        let what = if everything {
            "every dead letter matching the filter"
        } else {
            "the selected dead letters"
        };
        let text = format!("{verb} {what} of kind {kind}: {} of them.", ids.len());
        let here = format!("/console/dead-letters/{kind}/action");
        let back = format!("/console/dead-letters?kind={kind}");
        return Ok(confirm(&who, &text, Some(ids.len()), &here, &form.0, &back));
    }
    let id = operations::start(&app, operator, &kind, action, selection, ids.len()).await?;
    Ok(Redirect::to(&format!("/console/operations/{id}")).into_response())
}
