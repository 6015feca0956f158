//! `GET /console/jobs?q=<job id or message id>&tenant=<slug>`: where one job is now (pending,
//! held, scheduled, running on which worker, done, dead) and its `job_runs` history. A
//! message id is unique within its tenant only, so finding by one needs the tenant. The
//! lookup is `routes::jobs::find` (`GET /v1/jobs…`), audited as `job.view`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use leadq_jobs::ops::lookup::{JobReport, Location, Query as Lookup};
use leadq_queue::JobState;
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

use super::num_th;
use crate::console::layout;
use crate::console::session::SignedIn;
use crate::console::{PageError, PageResult};
use crate::error::ApiError;
use crate::routes::jobs;
use crate::AppState;

/// The form's fields.
#[derive(Debug, Default, Deserialize)]
pub struct FindQuery {
    q: Option<String>,
    tenant: Option<String>,
}

/// `GET /console/jobs`.
pub async fn page(
    State(app): State<AppState>,
    who: SignedIn,
    q: Result<Query<FindQuery>, QueryRejection>,
) -> PageResult {
    let operator = who.operator()?;
    let Query(q) = q.map_err(|_| PageError(ApiError::InvalidQuery))?;
    let text = q.q.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let tenant = q.tenant.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let mut problem = None;
    let mut found: Option<Option<JobReport>> = None;
    if let Some(text) = text {
        let lookup = match (Uuid::parse_str(text), tenant) {
            (Ok(id), tenant) => Some(Lookup::Job {
                id,
                tenant: tenant.map(str::to_owned),
            }),
            (Err(_), Some(t)) => Some(Lookup::Message {
                message_id: text.to_owned(),
                tenant: t.to_owned(),
            }),
            (Err(_), None) => {
                problem =
                    Some("A message id is unique within its tenant only: name the tenant too.");
                None
            }
        };
        if let Some(lookup) = lookup {
            found = Some(match jobs::find(&app, operator, &lookup).await {
                Ok(r) => r,
                Err(ApiError::InvalidQuery) => {
                    problem = Some(
                        "That is neither a job id nor a message id, or the tenant is not a slug.",
                    );
                    None
                }
                Err(e) => return Err(e.into()),
            });
        }
    }
    let body = html! {
        form id="find-job" method="get" action="/console/jobs" class="filters" {
            label for="q" { "Job id or message id" }
            input id="q" name="q" value=(text.unwrap_or("")) size="40" required;
            label for="find-tenant" { "Tenant (needed for a message id)" }
            input id="find-tenant" name="tenant" value=(tenant.unwrap_or("")) placeholder="slug";
            button id="find-button" type="submit" { "Find" }
        }
        @if let Some(p) = problem { p id="find-problem" role="alert" { (p) } }
        @match &found {
            Some(Some(r)) => (report(r)),
            Some(None) => p id="not-found" role="status" { "No job found: the queue does not hold it and no run of it is recorded." },
            None => {},
        }
    };
    Ok(layout::page(
        &who,
        "Find a job",
        "/console/jobs",
        None,
        body,
    ))
}

fn report(r: &JobReport) -> Markup {
    let (worker, detail) = match &r.location {
        Location::Queue(JobState::Running {
            worker,
            lease_deadline,
        }) => (
            Some(worker.as_str()),
            Some(html! { "lease until " (layout::time(lease_deadline)) }),
        ),
        Location::Queue(JobState::Scheduled { due }) => {
            (None, Some(html! { "due " (layout::time(due)) }))
        }
        Location::Queue(JobState::Done { at }) => (None, Some(html! { "at " (layout::time(at)) })),
        Location::Queue(JobState::Dead { letter }) => (
            None,
            Some(html! {
                "reason " code { (letter.reason) } " · "
                a href=(format!("/console/dead-letters/{}/{}", letter.kind, letter.job_id)) { "the dead letter" }
            }),
        ),
        _ => (None, None),
    };
    html! {
        section id="job" aria-labelledby="job-title" {
            h2 id="job-title" { "Job " code { (r.job_id) } }
            dl {
                dt { "Job id" } dd data-field="job_id" { code { (r.job_id) } }
                dt { "Kind" } dd data-field="kind" { (r.kind) }
                dt { "Tenant" } dd data-field="tenant" { (layout::maybe(r.tenant.as_deref())) }
                dt { "Message id" } dd data-field="message_id" { (layout::maybe(r.message_id.as_deref())) }
                dt { "Where it is now" } dd data-field="state" { (r.location.name()) }
                @if let Some(d) = detail { dt { "Detail" } dd { (d) } }
                dt { "Worker" } dd data-field="worker" { (layout::maybe(worker)) }
                dt { "Attempts (queue)" } dd { (r.attempts) }
                dt { "Last error code" } dd { (layout::maybe(r.last_error_code.as_deref())) }
            }
            h3 { "Runs" }
            table id="runs" {
                thead { tr {
                    th scope="col" { "Status" } (num_th("Attempts")) th scope="col" { "Enqueued" }
                    th scope="col" { "First started" } th scope="col" { "Last started" }
                    th scope="col" { "Finished" } (num_th("Duration (ms)")) th scope="col" { "Last error" }
                } }
                tbody {
                    @for run in &r.runs {
                        tr {
                            td data-field="status" { (run.status) }
                            td class="num" { (run.attempts) }
                            td { (layout::time(&run.enqueued_at)) }
                            td { (layout::time(&run.first_started_at)) }
                            td { (layout::time(&run.last_started_at)) }
                            td { @if let Some(f) = &run.finished_at { (layout::time(f)) } @else { "—" } }
                            td class="num" { (layout::maybe(run.duration_ms)) }
                            td { (layout::maybe(run.last_error_code.as_deref())) }
                        }
                    }
                }
            }
            @if r.runs.is_empty() { p { "No run recorded yet." } }
        }
    }
}
