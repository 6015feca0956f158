//! Bulk dead-letter work started from the console: it runs in the background (a page of
//! thousands would outlast a request) while `/console/operations/{id}` shows its progress,
//! refreshing itself until it is done. Progress lives in Redis (an expiring record, an hour),
//! so any API replica can show it; only the operator who started an operation sees it.
//!
//! The work is `leadq_jobs::ops::deadletters::act`, the same as `POST /v1/dlq/{kind}/redrive`
//! and `/purge`, audited the same way. Each chunk it moves is atomic in Redis; if the API
//! stops midway, what was not yet moved stays dead, and running the action again finishes it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use leadq_jobs::ops::deadletters::{self, Action, Actor, Selection};
use maud::html;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::layout::{self, is_htmx};
use super::session::{SignedIn, POLL_HEADER};
use super::{PageError, PageResult};
use crate::error::ApiError;
use crate::extract::OperatorContext;
use crate::rejections::ApiPath;
use crate::AppState;

/// The Redis record namespace of operations.
const OPERATIONS: &str = "console_operation";
/// How long an operation's record is kept.
const KEEP: Duration = Duration::from_secs(3600);
/// How often a running operation writes its progress.
const TICK: Duration = Duration::from_millis(300);

/// An operation's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// Who started it (`operator:<name>`): only they see it.
    owner: String,
    kind: String,
    /// `redrive` or `purge`.
    action: String,
    /// `running`, `done` or `failed`.
    state: String,
    done: usize,
    total: usize,
    /// When done: what it did, in words.
    result: Option<String>,
}

async fn save(app: &AppState, id: &str, r: &Record) {
    let json = serde_json::to_string(r).unwrap_or_default();
    if let Err(error) = app.queue.record_put(OPERATIONS, id, &json, KEEP).await {
        tracing::warn!(error = %error, "Could not record a console operation's progress.");
    }
}

/// Starts `action` on `selection` (of `total` dead letters) in the background; returns the
/// operation's id.
pub async fn start(
    app: &AppState,
    operator: &OperatorContext,
    kind: &str,
    action: Action,
    selection: Selection,
    total: usize,
) -> Result<String, PageError> {
    let id = Uuid::new_v4().simple().to_string();
    let record = Record {
        owner: operator.actor.clone(),
        kind: kind.to_owned(),
        action: match action {
            Action::Redrive => "redrive",
            Action::Purge => "purge",
        }
        .to_owned(),
        state: "running".into(),
        done: 0,
        total,
        result: None,
    };
    let json = serde_json::to_string(&record).map_err(|e| ApiError::Internal(e.into()))?;
    app.queue.record_put(OPERATIONS, &id, &json, KEEP).await?;
    let (done, total) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(total)),
    );
    // The work runs in a task of its own, awaited by the one that keeps the record: a panic in
    // it ends as a `failed` record instead of one that says `running` for an hour, with its
    // ticker writing to Redis for as long as the process lives.
    let work = {
        let (app, operator, kind) = (app.clone(), operator.clone(), kind.to_owned());
        let (done, total) = (done.clone(), total.clone());
        tokio::spawn(async move {
            let who = Actor {
                actor: &operator.actor,
                correlation_id: &operator.correlation_id,
            };
            let mut progress = |d: usize, t: usize| {
                done.store(d, Ordering::Relaxed);
                total.store(t, Ordering::Relaxed);
            };
            deadletters::act(
                &app.pool,
                &app.queue,
                who,
                &kind,
                action,
                &selection,
                &mut progress,
            )
            .await
        })
    };
    let (app, op_id) = (app.clone(), id.clone());
    tokio::spawn(async move {
        let ticker = {
            let (app, op_id, record) = (app.clone(), op_id.clone(), record.clone());
            let (done, total) = (done.clone(), total.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(TICK).await;
                    let mut r = record.clone();
                    r.done = done.load(Ordering::Relaxed);
                    r.total = total.load(Ordering::Relaxed);
                    save(&app, &op_id, &r).await;
                }
            })
        };
        let outcome = work.await;
        ticker.abort();
        let mut r = record;
        let stopped = match outcome {
            Ok(Ok(o)) => {
                r.state = "done".into();
                r.done = o.done;
                r.total = o.selected;
                let verb = match action {
                    Action::Redrive => "re-driven",
                    Action::Purge => "purged",
                };
                r.result = Some(format!("{} of {} {verb}.", o.done, o.selected));
                None
            }
            Ok(Err(error)) => Some(error.to_string()),
            // It panicked (the panic itself is logged by the panic hook).
            Err(error) => Some(error.to_string()),
        };
        if let Some(error) = stopped {
            tracing::error!(error = %error, "A console dead-letter operation failed.");
            r.state = "failed".into();
            r.done = done.load(Ordering::Relaxed);
            r.result = Some(
                "It stopped on an error; what was not moved is still dead. \
                 Run it again to finish."
                    .into(),
            );
        }
        save(&app, &op_id, &r).await;
    });
    Ok(id)
}

/// `GET /console/operations/{id}`.
pub async fn page(
    State(app): State<AppState>,
    who: SignedIn,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> PageResult {
    let operator = who.operator()?;
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(PageError(ApiError::NotFound));
    }
    let record = app
        .queue
        .record_get(OPERATIONS, &id, None)
        .await?
        .and_then(|s| serde_json::from_str::<Record>(&s).ok())
        .filter(|r| r.owner == operator.actor)
        .ok_or(PageError(ApiError::NotFound))?;
    let running = record.state == "running";
    let poll = format!(r#"{{"{POLL_HEADER}":"1"}}"#);
    let verb = if record.action == "purge" {
        "Purge"
    } else {
        "Re-drive"
    };
    let status = html! {
        @if running {
            section id="operation" hx-get=(format!("/console/operations/{id}"))
                hx-trigger="every 1s" hx-swap="outerHTML" hx-headers=(poll) {
                (progress(&record, verb))
            }
        } @else {
            section id="operation" { (progress(&record, verb)) }
        }
    };
    if is_htmx(&headers) {
        return Ok(layout::fragment(status));
    }
    let body = html! {
        (status)
        p { a href=(format!("/console/dead-letters?kind={}", record.kind)) { "Back to the dead letters" } }
    };
    Ok(layout::page(
        &who,
        "Dead-letter operation",
        "/console/dead-letters",
        None,
        body,
    ))
}

fn progress(r: &Record, verb: &str) -> maud::Markup {
    html! {
        p { (verb) " of " (r.kind) " dead letters: " strong id="op-state" role="status" { (r.state) } }
        label for="op-progress" { (r.done) " of " (r.total) }
        " "
        progress id="op-progress" value=(r.done) max=(r.total.max(1)) { (r.done) " of " (r.total) }
        @if let Some(result) = &r.result {
            p id="op-result" { (result) }
        }
    }
}
