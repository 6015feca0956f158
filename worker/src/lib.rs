//! The leadq worker process.
//!
//! One apalis worker per job kind, all on our Redis backend ([`leadq_queue`]), under one
//! apalis `Monitor`; plus the upkeep loop (heartbeats, lease renewal, reaper) and a small
//! health/metrics server.
//!
//! Shutdown (SIGTERM/SIGINT): stop fetching; let in-flight jobs finish for up to
//! `LEADQ_SHUTDOWN_TIMEOUT_SECS`; hand every job still leased back to the queue without using
//! an attempt; leave the worker registry. No job is lost: what is not handed back (the process
//! was killed) is recovered by another worker once its lease expires.
//!
//! # Layout
//! - [`Worker`]: build (connect, bind) and run until stopped.
//! - [`observer`]: `job_runs` rows, dead-letter audit and dead-letter alerts.
//! - [`runlog`]: the group commit that writes `job_runs`.
//! - [`health`]: `/healthz`, `/readyz`, `/metrics` (the API's own routes,
//!   `leadq_jobs::health::router`).
//! - [`scheduler`]: recurring platform tasks, fired once across all workers.

pub mod health;
pub mod observer;
pub mod runlog;
pub mod scheduler;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use apalis::layers::catch_panic::CatchPanicLayer;
use apalis::prelude::{Monitor, WorkerBuilder, WorkerBuilderExt};
use leadq_jobs::authz::cache::AuthzCache;
use leadq_jobs::authz::AuthorizeLayer;
use leadq_jobs::integrations::{chatwoot, hubspot};
use leadq_jobs::kinds;
use leadq_jobs::lead;
use leadq_jobs::ops::limits;
use leadq_jobs::Deps;
use leadq_platform::config::Settings;
use leadq_queue::backend::{JobObserver, KindRunner};
use leadq_queue::upkeep::{self, Upkeep};
use leadq_queue::JobError;
use leadq_queue::Queue;
use sqlx::PgPool;
use tokio::net::TcpListener;

/// A worker process, connected and bound, not yet running.
pub struct Worker {
    settings: Settings,
    pool: PgPool,
    queue: Queue,
    worker_id: String,
    listener: TcpListener,
    recorder: observer::RunRecorder,
    tenants: leadq_jobs::tenant_labels::TenantLabels,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("worker_id", &self.worker_id)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

/// Registers one apalis worker for a kind with the standard layer stack, outermost first:
/// (the backend's ack layer), concurrency limit, panic → transient failure, timeout,
/// authorization, handler. Every kind gets the same stack, so none can skip authorization.
macro_rules! register_kind {
    ($monitor:expr, $runner:expr, $settings:expr, $deps:expr, $authz:expr, $handler:path) => {{
        let runner = $runner.clone();
        let deps = $deps.clone();
        let watch = leadq_jobs::abuse::CrossTenantWatch::new(
            deps.queue.clone(),
            deps.pool.clone(),
            &$settings.edge,
        );
        let cfg = $settings.queue.kinds[runner.kind()].clone();
        let authz = $authz.clone();
        $monitor.register(move |restarts| {
            if restarts > 0 {
                tracing::warn!(kind = runner.kind(), restarts, "Restarting a worker.");
            }
            WorkerBuilder::new(format!("{}#{restarts}", runner.kind()))
                .backend(runner.backend())
                .data(deps.clone())
                .concurrency(cfg.concurrency)
                .layer(CatchPanicLayer::with_panic_handler(on_panic))
                .timeout(cfg.timeout)
                .layer(
                    AuthorizeLayer::new(deps.pool.clone())
                        .cached(authz.clone())
                        .watching(watch.clone()),
                )
                .build($handler)
        })
    }};
}

/// A panic in a handler is a transient failure with code `panic`.
fn on_panic(p: &Box<dyn std::any::Any + Send>) -> JobError {
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into());
    JobError::transient("panic", anyhow::anyhow!("handler panicked: {msg}"))
}

impl Worker {
    /// Connects to PostgreSQL and Redis and binds the health server (port 0 picks one).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // A connection for every job that may hold one at once (`kinds::db_connections`:
        // `lead_score`'s jobs share their group commit's), and a few for the scheduler, the
        // run recorder and the health probe: fewer, and stalled jobs starve `/readyz` and
        // `leadq_dependency_up` (PostgreSQL would look down while it is only busy). More, and
        // a worker running many jobs exhausts the server's `max_connections`.
        let connections: usize = (settings.queue.worker_kinds.iter())
            .map(|kind| {
                leadq_jobs::kinds::db_connections(kind, settings.queue.kinds[kind].concurrency)
            })
            .sum();
        let pool_size = u32::try_from(connections + 4).unwrap_or(u32::MAX).max(10);
        let (pool, queue) = leadq_jobs::connect_stores(&settings, pool_size).await?;
        let listener = TcpListener::bind(settings.worker_addr)
            .await
            .with_context(|| format!("Failed to bind {}", settings.worker_addr))?;
        let tenants = leadq_jobs::tenant_labels::TenantLabels::new(
            pool.clone(),
            settings.metrics_tenant_cap,
            settings.canary.as_ref().map(|c| c.tenant.clone()),
        );
        let recorder = observer::RunRecorder::new(pool.clone(), tenants.clone());
        Ok(Self {
            settings,
            pool,
            queue,
            worker_id: upkeep::new_worker_id(),
            listener,
            recorder,
            tenants,
        })
    }

    /// Alerts on dead letters through `alerts` rather than the process-wide notifier
    /// (`leadq_notify::start`); for tests that run several "processes" in one.
    pub fn with_alerts(mut self, alerts: leadq_notify::Notifier) -> Self {
        self.recorder = self.recorder.with_alerts(alerts);
        self
    }

    /// Where the health server listens.
    pub fn health_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// This process's worker id.
    pub fn id(&self) -> &str {
        &self.worker_id
    }

    /// Runs until `shutdown` resolves, then stops gracefully (see the crate docs).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Worker {
            settings,
            pool,
            queue,
            worker_id,
            listener,
            recorder,
            tenants,
        } = self;
        let runs = recorder.runs();
        let observer: Arc<dyn JobObserver> = Arc::new(recorder);
        leadq_platform::metrics::register_event_series();
        for kind in kinds::names() {
            leadq_platform::metrics::register_job_series(kind);
        }
        // Each kind's retry policy is published by the workers that run it, so a deployment
        // per kind does not overwrite another's settings.
        for kind in &settings.queue.worker_kinds {
            queue
                .publish_policy(kind)
                .await
                .context("Failed to publish the retry policy")?;
        }
        let runner = |kind: &'static str| {
            KindRunner::new(
                queue.clone(),
                kind,
                &worker_id,
                settings.queue.kinds[kind].concurrency,
                observer.clone(),
            )
        };
        // Only the kinds this process was given (LEADQ_WORKER_KINDS; every kind by default).
        let runners: Vec<KindRunner> = settings
            .queue
            .worker_kinds
            .iter()
            .map(|kind| runner(kind))
            .collect();
        let runner_of = |kind: &str| runners.iter().find(|r| r.kind() == kind).cloned();
        let upkeep = Upkeep::new(runners.clone());
        upkeep.beat().await;

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let upkeep_task = tokio::spawn(upkeep.clone().run(stopped(stop_rx.clone())));
        let scheduler =
            scheduler::Scheduler::new(queue.clone(), pool.clone(), &worker_id, &settings);
        let scheduler_task = tokio::spawn(scheduler.run(stopped(stop_rx.clone())));
        // Links committed audit rows into their chains (every worker runs one; they take
        // turns per chain): handlers insert audit rows without waiting for each other.
        let sealer_task = tokio::spawn(leadq_platform::audit::seal::seal_forever(
            pool.clone(),
            settings.audit_keys().clone(),
            leadq_platform::audit::seal::SEAL_EVERY,
            stopped(stop_rx.clone()),
        ));
        // Authorization answers, shared by every kind, dropped when PostgreSQL says they
        // changed (`leadq_jobs::authz::cache`).
        let authz = AuthzCache::default();
        let authz_task = tokio::spawn(authz.clone().follow(pool.clone()));
        let health = axum::serve(
            listener,
            health::router(
                pool.clone(),
                queue.clone(),
                settings.edge.metrics_token.clone(),
            ),
        )
        .with_graceful_shutdown(stopped(stop_rx.clone()));
        let health_task = tokio::spawn(async move {
            if let Err(error) = health.await {
                tracing::error!(error = %error, "Health server failed.");
            }
        });
        tracing::info!(worker_id = %worker_id, kinds = ?settings.queue.worker_kinds, "Worker started.");

        let sealer = leadq_jobs::pii::Sealer::from_settings(&settings);
        let deps = Deps {
            pool: pool.clone(),
            group: lead::group::GroupCommit::new(pool.clone(), sealer.clone()),
            sealer,
            queue: queue.clone(),
            http: hubspot::http_client(),
            tenants,
        };
        let mut monitor = Monitor::new();
        if let Some(r) = runner_of(kinds::LEAD_SCORE) {
            monitor = register_kind!(monitor, r, settings, deps, authz, lead::handler::run);
        }
        if let Some(r) = runner_of(kinds::CHATWOOT_EVENT) {
            monitor = register_kind!(monitor, r, settings, deps, authz, chatwoot::handler::run);
        }
        if let Some(r) = runner_of(kinds::CRM_SYNC) {
            monitor = register_kind!(monitor, r, settings, deps, authz, hubspot::run);
        }
        if let Some(r) = runner_of(kinds::CRM_ERASE) {
            monitor = register_kind!(monitor, r, settings, deps, authz, hubspot::erase::run);
        }
        if let Some(r) = runner_of(kinds::UPDATE_BILLING_LIMIT) {
            monitor = register_kind!(monitor, r, settings, deps, authz, limits::run_update);
        }
        let monitor = monitor
            .should_restart(|_, error| {
                tracing::error!(error = %error, "A worker stopped with an error; restarting it.");
                true
            })
            // An async block, so the grace period starts when shutdown starts (a bare
            // `sleep(d)` would start counting now).
            .with_terminator({
                let grace = settings.queue.shutdown_timeout;
                async move { tokio::time::sleep(grace).await }
            });
        let result = monitor
            .run_with_signal(async move {
                shutdown.await;
                tracing::info!("Stopping: no new jobs; waiting for jobs in flight.");
                Ok(())
            })
            .await;
        if let Err(error) = result {
            tracing::error!(error = %error, "Monitor ended with an error.");
        }

        // Whatever is still leased did not finish in time: hand it back, attempt unused.
        for r in &runners {
            let n = r.release_all().await;
            if n > 0 {
                tracing::warn!(
                    kind = r.kind(),
                    released = n,
                    "Handed unfinished jobs back to the queue."
                );
            }
        }
        let _ = stop_tx.send(true);
        let _ = upkeep_task.await;
        let _ = scheduler_task.await;
        let _ = sealer_task.await;
        authz_task.abort();
        // Every run's rows are handed to the writer by now; wait until they are committed.
        runs.flush().await;
        upkeep.leave().await;
        let _ = health_task.await;
        tracing::info!(worker_id = %worker_id, "Worker stopped.");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// The kinds this worker has a handler for, each registered in `run_until_stopped`. The
    /// settings loader admits only catalogue kinds to `LEADQ_WORKER_KINDS`, and a test holds this
    /// list to the catalogue, so every kind a worker is given has its handler.
    const HANDLED: [&str; 5] = [
        leadq_jobs::kinds::LEAD_SCORE,
        leadq_jobs::kinds::CHATWOOT_EVENT,
        leadq_jobs::kinds::CRM_SYNC,
        leadq_jobs::kinds::CRM_ERASE,
        leadq_jobs::kinds::UPDATE_BILLING_LIMIT,
    ];

    #[test]
    fn every_kind_of_the_catalogue_has_a_handler() {
        let mut handled = HANDLED.to_vec();
        let mut catalogue = leadq_jobs::kinds::names();
        handled.sort_unstable();
        catalogue.sort_unstable();
        assert_eq!(handled, catalogue);
    }
}
