//! `GET /console/workers`: every live worker (id, host, kinds, started, last heartbeat, jobs
//! in flight), from `GET /v1/status`. A worker beats every
//! `leadq_queue::upkeep::HEARTBEAT_EVERY` (2 s); one silent for [`STALE_AFTER`] is marked
//! stale (a stuck process or a partition: its leases expire and other workers take its jobs
//! over), and one silent for a minute is dropped from the list.

use std::time::Duration;

use axum::extract::State;
use chrono::Utc;
use maud::html;

use super::num_th;
use crate::console::layout;
use crate::console::session::SignedIn;
use crate::console::PageResult;
use crate::routes::status;
use crate::AppState;

/// Silence after which a worker is shown as stale: five missed heartbeats.
pub const STALE_AFTER: Duration = Duration::from_secs(10);

/// `GET /console/workers`.
pub async fn page(State(app): State<AppState>, who: SignedIn) -> PageResult {
    let report = status::report(&app, who.operator()?).await?;
    let now = Utc::now();
    let stale = |w: &leadq_queue::WorkerStatus| {
        (now - w.last_heartbeat).to_std().unwrap_or_default() > STALE_AFTER
    };
    let body = html! {
        p class="help" { (report.workers.len()) " live worker(s). Stale: no heartbeat for "
            (STALE_AFTER.as_secs()) " s." }
        table id="workers" {
            caption class="visually-hidden" { "Live workers" }
            thead { tr {
                th scope="col" { "Worker" } th scope="col" { "Host" } th scope="col" { "Kinds" }
                th scope="col" { "Started" } th scope="col" { "Last heartbeat" }
                (num_th("In flight")) th scope="col" { "State" }
            } }
            tbody {
                @for w in &report.workers {
                    tr data-worker=(w.id) class=[stale(w).then_some("stale")] {
                        th scope="row" { code { (w.id) } }
                        td data-field="host" { (w.host) }
                        td data-field="kinds" { (w.kinds.join(", ")) }
                        td data-field="started" { (layout::time(&w.started_at)) }
                        td data-field="heartbeat" { (layout::time(&w.last_heartbeat)) }
                        td data-field="in_flight" class="num" { (w.in_flight) }
                        td { @if stale(w) { strong { "stale" } } @else { "ok" } }
                    }
                }
            }
        }
    };
    Ok(layout::page(
        &who,
        "Workers",
        "/console/workers",
        None,
        body,
    ))
}
