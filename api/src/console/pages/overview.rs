//! `GET /console`: per kind the queue's counts and completions per minute (the data of
//! `GET /v1/status`), links to the Grafana dashboards. The counts refresh themselves every
//! 15 seconds (each refresh is a `status.view`, audited like any other). A tenant's session
//! lands on its own page instead.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect};
use maud::{html, Markup};

use super::num_th;
use crate::console::layout::{self, is_htmx};
use crate::console::session::{SignedIn, Viewer, POLL_HEADER};
use crate::console::PageResult;
use crate::routes::status::{self, Status, THROUGHPUT_MINUTES};
use crate::AppState;

/// The dashboards provisioned from `dashboards/*.json`: (uid, title).
const DASHBOARDS: &[(&str, &str)] = &[
    ("leadq-overview", "Overview"),
    ("leadq-slo", "Service levels"),
    ("leadq-integrations", "Integrations"),
];

/// `GET /console`.
pub async fn page(State(app): State<AppState>, who: SignedIn, headers: HeaderMap) -> PageResult {
    let operator = match &who.viewer {
        Viewer::Operator(o) => o,
        Viewer::Tenant(p) => {
            return Ok(Redirect::to(&format!("/console/tenants/{}", p.tenant_slug)).into_response())
        }
    };
    let report = status::report(&app, operator).await?;
    if is_htmx(&headers) {
        return Ok(layout::fragment(live(&report)));
    }
    let grafana = app.settings.console.grafana_url.as_deref();
    let body = html! {
        (live(&report))
        section aria-labelledby="dashboards-title" {
            h2 id="dashboards-title" { "Dashboards" }
            ul {
                @for (uid, title) in DASHBOARDS {
                    li {
                        @if let Some(base) = grafana {
                            a class="dashboard-link" href=(format!("{base}/d/{uid}")) { (title) }
                        } @else {
                            (title) " (" code { (uid) } "; set LEADQ_GRAFANA_URL for links)"
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(&who, "Overview", "/console", None, body))
}

/// The part that refreshes itself.
fn live(s: &Status) -> Markup {
    let poll = format!(r#"{{"{POLL_HEADER}":"1"}}"#);
    html! {
        section id="live" hx-get="/console" hx-trigger="every 15s" hx-swap="outerHTML"
            hx-headers=(poll) aria-labelledby="kinds-title" {
            h2 id="kinds-title" { "Queues" }
            p class="help" { "As of " (layout::time(&s.generated_at)) "; "
                (s.workers.len()) " live worker(s). Done, failed and retries are lifetime counts." }
            table id="kinds" {
                caption class="visually-hidden" { "Jobs per kind and state" }
                thead { tr {
                    th scope="col" { "Kind" }
                    (num_th("Pending")) (num_th("Held")) (num_th("Scheduled"))
                    (num_th("Running")) (num_th("Done")) (num_th("Failed"))
                    (num_th("Dead")) (num_th("Retries"))
                } }
                tbody {
                    @for q in &s.queues {
                        tr data-kind=(q.kind) {
                            th scope="row" { (q.kind) }
                            td data-field="pending" class="num" { (q.pending) }
                            td data-field="held" class="num" { (q.held) }
                            td data-field="scheduled" class="num" { (q.scheduled) }
                            td data-field="running" class="num" { (q.running) }
                            td data-field="done" class="num" { (q.done) }
                            td data-field="failed" class="num" { (q.failed) }
                            td data-field="dead" class="num" { (q.dead) }
                            td data-field="retries" class="num" { (q.retries) }
                        }
                    }
                }
            }
            h2 id="throughput-title" { "Completed per second, last " (THROUGHPUT_MINUTES) " minutes" }
            table id="throughput" aria-labelledby="throughput-title" {
                thead { tr {
                    th scope="col" { "Kind" }
                    @for m in (0..THROUGHPUT_MINUTES).rev() {
                        th scope="col" class="num" {
                            @if m == 0 { "now" } @else { "−" (m) " min" }
                        }
                    }
                } }
                tbody {
                    @for t in &s.throughput {
                        tr data-kind=(t.kind) {
                            th scope="row" { (t.kind)
                                @if !t.covered { " " abbr title="Completion records were trimmed inside the window: the rates are a lower bound." { "(≥)" } }
                            }
                            @for n in &t.per_minute {
                                td class="num" { (format!("{:.1}", *n as f64 / 60.0)) }
                            }
                        }
                    }
                }
            }
        }
    }
}
