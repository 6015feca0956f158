//! `GET /console/tenants/{slug}`: one tenant's own page — per kind its backlog and controls,
//! its newest dead letters (scrubbed, read-only), its recent runs. A tenant's session sees its
//! own page and no other (403); operators see any. The data is
//! `leadq_jobs::ops::tenant_view` (`GET /v1/tenant/overview` for the tenant's tools).

use axum::extract::State;
use leadq_jobs::ops::deadletters::Actor;
use leadq_jobs::ops::tenant_view::{self, Reader};
use maud::html;

use super::num_th;
use crate::console::layout;
use crate::console::session::{SignedIn, Viewer};
use crate::console::{PageError, PageResult};
use crate::error::ApiError;
use crate::middleware::current_correlation_id;
use crate::rejections::ApiPath;
use crate::AppState;

/// `GET /console/tenants/{slug}`.
pub async fn page(
    State(app): State<AppState>,
    who: SignedIn,
    ApiPath(slug): ApiPath<String>,
) -> PageResult {
    if !leadq_platform::tenant::valid_slug(&slug) {
        return Err(PageError(ApiError::NotFound));
    }
    let correlation_id = current_correlation_id();
    let (actor, tenant, current) = match &who.viewer {
        Viewer::Tenant(p) if p.tenant_slug == slug => {
            (p.actor(), p.tenant_id, format!("/console/tenants/{slug}"))
        }
        // Another tenant's page: never, whatever the slug.
        Viewer::Tenant(_) => return Err(PageError(ApiError::OperatorOnly)),
        Viewer::Operator(o) => {
            o.require(leadq_platform::operators::permission::CONSOLE)?;
            let id = crate::routes::tenant_by_slug(&app.pool, &slug).await?;
            (o.actor.clone(), id, "/console/tenants".to_owned())
        }
    };
    let actor = Actor {
        actor: &actor,
        correlation_id: &correlation_id,
    };
    // Dead letters are the `dlq` permission's to list: an operator without it sees that they
    // exist, not what they are (a tenant sees its own).
    let dead_letters_shown = match &who.viewer {
        Viewer::Tenant(_) => true,
        Viewer::Operator(o) => o.may(leadq_platform::operators::permission::DLQ),
    };
    let reader = match who.viewer {
        Viewer::Tenant(_) => Reader::Tenant(actor),
        Viewer::Operator(_) => Reader::Operator(actor),
    };
    let view = tenant_view::overview(&app.pool, &app.queue, reader, tenant, &slug).await?;
    let body = html! {
        section id="tenant-view" aria-label=(format!("Tenant {slug}")) {
            h2 { "Queues" }
            table id="tenant-queues" {
                thead { tr {
                    th scope="col" { "Kind" } (num_th("Backlog")) (num_th("Held")) (num_th("Running"))
                    th scope="col" { "Paused" } (num_th("Cap"))
                } }
                tbody {
                    @for q in &view.queues {
                        tr data-kind=(q.kind) {
                            th scope="row" { (q.kind) }
                            td data-field="backlog" class="num" { (q.backlog) }
                            td data-field="held" class="num" { (q.held) }
                            td data-field="running" class="num" { (q.running) }
                            td data-field="paused" { @if q.paused { "yes" } @else { "no" } }
                            td data-field="cap" class="num" { (layout::maybe(q.cap)) }
                        }
                    }
                }
            }
            h2 { "Dead letters" }
            @if !dead_letters_shown {
                p id="tenant-dead-letters-hidden" {
                    (view.dead_letters.len()) " dead letter(s), listed for operators with the dlq permission."
                }
            } @else {
            table id="tenant-dead-letters" {
                thead { tr {
                    th scope="col" { "Job" } th scope="col" { "Kind" } th scope="col" { "Message id" }
                    th scope="col" { "Reason" } (num_th("Attempts")) th scope="col" { "Dead since" }
                } }
                tbody {
                    @for d in &view.dead_letters {
                        tr data-job-id=(d.job_id) {
                            th scope="row" { code { (d.job_id) } }
                            td { (d.kind) }
                            td { (layout::maybe(d.envelope.as_ref().map(|e| e.message_id.as_str()))) }
                            td data-field="reason" { (d.reason) }
                            td class="num" { (d.attempts) }
                            td { (layout::time(&d.dead_at)) }
                        }
                    }
                }
            }
            @if view.dead_letters.is_empty() { p { "No dead letters." } }
            }
            h2 { "Recent runs" }
            table id="tenant-runs" {
                thead { tr {
                    th scope="col" { "Job" } th scope="col" { "Kind" } th scope="col" { "Status" }
                    (num_th("Attempts")) th scope="col" { "Last started" } (num_th("Duration (ms)"))
                    th scope="col" { "Last error" }
                } }
                tbody {
                    @for r in &view.runs {
                        tr data-job-id=(r.job_id) {
                            th scope="row" { code { (r.job_id) } }
                            td { (r.kind) }
                            td data-field="status" { (r.run.status) }
                            td class="num" { (r.run.attempts) }
                            td { (layout::time(&r.run.last_started_at)) }
                            td class="num" { (layout::maybe(r.run.duration_ms)) }
                            td { (layout::maybe(r.run.last_error_code.as_deref())) }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(
        &who,
        &format!("Tenant {slug}"),
        &current,
        None,
        body,
    ))
}
