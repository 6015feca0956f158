//! Reads of tenant data, audited off the request's path.
//!
//! A change is audited in its own transaction ([`super::Auditor`]): the trail and the data
//! cannot disagree. A read changes nothing, so its entry need not share a transaction with
//! anything, and writing one transaction per read would put a commit (an fsync) on every
//! `GET`. Reads are instead handed to one writer per process, which appends everything handed
//! over meanwhile in one transaction per scope (one statement, `unnest`), then takes the next
//! batch: at most [`BATCH`] entries, and a batch is written as soon as the previous one is
//! committed, so an entry waits about one commit.
//!
//! Nothing is dropped. Handing over waits when [`PENDING`] entries are already waiting (the
//! database is slow or down): reads slow down rather than go unaudited. A batch that fails is
//! retried with backoff, in order. [`ReadAudit::close`] writes what is left before the
//! process stops; entries of a process killed outright (SIGKILL) in the last moments are lost,
//! which is the bound: one batch and the queue behind it.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::db::{self, Scope};

/// Entries written in one batch at most.
pub const BATCH: usize = 500;
/// Entries that may wait for the writer before a read waits for room.
pub const PENDING: usize = 8192;

/// One read: who read what, of which tenant (`None`: the platform's own data).
#[derive(Debug, Clone)]
pub struct Read {
    /// The tenant whose data was read.
    pub tenant_id: Option<Uuid>,
    /// Who read: `api_key:<id>`, `operator:<name>`.
    pub actor: String,
    /// What kind of read, e.g. `lead.read`.
    pub action: &'static str,
    /// What was read, e.g. `lead:<uuid>`; never personal data.
    pub subject: String,
    /// The request's correlation id.
    pub correlation_id: String,
    /// Ids and codes (never personal data).
    pub details: serde_json::Value,
}

/// The handle reads are audited through; cheap to clone.
#[derive(Debug, Clone)]
pub struct ReadAudit {
    tx: mpsc::Sender<Read>,
}

/// The writer behind a [`ReadAudit`]; [`ReadAuditWriter::close`] finishes it.
#[derive(Debug)]
pub struct ReadAuditWriter {
    task: tokio::task::JoinHandle<()>,
}

impl ReadAudit {
    /// Starts the writer on `pool`.
    pub fn start(pool: PgPool) -> (Self, ReadAuditWriter) {
        let (tx, rx) = mpsc::channel(PENDING);
        let task = tokio::spawn(write_forever(pool, rx));
        (Self { tx }, ReadAuditWriter { task })
    }

    /// Hands `read` to the writer (waits only while [`PENDING`] entries wait already).
    pub async fn record(&self, read: Read) {
        if cfg!(feature = "unaudited-reads") {
            // A benchmark build (see the feature in Cargo.toml); refused in production.
            return;
        }
        if self.tx.send(read).await.is_err() {
            // Only after close(): the process is stopping and the request is late.
            tracing::error!("A read could not be audited: the audit writer has stopped.");
        }
    }
}

impl ReadAuditWriter {
    /// Writes everything handed over, once every [`ReadAudit`] handle is dropped.
    pub async fn close(self) {
        if let Err(error) = self.task.await {
            tracing::error!(error = %error, "The read audit writer failed.");
        }
    }
}

async fn write_forever(pool: PgPool, mut rx: mpsc::Receiver<Read>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut backoff = Duration::from_millis(100);
        while let Err(error) = write(&pool, &batch).await {
            tracing::warn!(error = %error, entries = batch.len(),
                "Could not write audited reads; retrying.");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
        batch.clear();
    }
}

/// Appends `reads`, one transaction and one statement per scope.
pub async fn write(pool: &PgPool, reads: &[Read]) -> Result<(), sqlx::Error> {
    let mut by_scope: BTreeMap<Option<Uuid>, Vec<&Read>> = BTreeMap::new();
    for r in reads {
        by_scope.entry(r.tenant_id).or_default().push(r);
    }
    for (tenant, rows) in by_scope {
        let scope = tenant.map_or(Scope::Platform, Scope::Tenant);
        let mut tx = db::begin(pool, scope).await?;
        let col = |f: fn(&Read) -> String| rows.iter().map(|r| f(r)).collect::<Vec<_>>();
        sqlx::query(
            "insert into audit_log (tenant_id, actor, action, subject, outcome, correlation_id,
                                    details)
             select $1, a, ac, s, 'ok', c, d::jsonb
               from unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
                    as t(a, ac, s, c, d)",
        )
        .bind(tenant)
        .bind(col(|r| r.actor.clone()))
        .bind(col(|r| r.action.to_owned()))
        .bind(col(|r| r.subject.clone()))
        .bind(col(|r| r.correlation_id.clone()))
        .bind(col(|r| r.details.to_string()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    Ok(())
}
