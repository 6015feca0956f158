//! Sealing: linking committed audit rows into their chain, in batches, under a key the
//! database never sees.
//!
//! Writers insert audit rows unlinked, in their own transaction, and never wait for anyone
//! (that per-chain wait capped one tenant at ~100 jobs/s). A sealer — every worker runs one
//! ([`seal_forever`]); `leadq audit verify` and `seal` run one pass — then links them, chain by
//! chain, one short transaction per batch of up to [`BATCH`] rows:
//!
//! 1. take the chain's advisory lock (sealers of one chain queue here, writers never do);
//! 2. read the chain's tail: the last sealed row's `(seal_seq, mac)` (as the last batch
//!    recorded it in `audit_chain_tails`, checked against the rows), or, before the first
//!    seal, the last legacy sha256 link (rows chained before keyed sealing existed);
//! 3. read the unsealed rows whose inserting transaction finished before any transaction
//!    still running began (`xid < pg_snapshot_xmin(pg_current_snapshot())`), by id: a row whose
//!    transaction is still open is left for a later pass, so it is never skipped over;
//! 4. `mac = HMAC-SHA256(key, prev_mac ‖ seal_seq ‖ audit_canonical(row))`, `seal_seq`
//!    counting on from the tail, written with one `UPDATE … FROM unnest(…)`, and the new tail
//!    recorded.
//!
//! Failure cases (docs/audit.md): a sealer that dies mid-batch rolls back its transaction and
//! the next pass seals the same rows; two sealers of one chain serialise on the lock and the
//! second finds the rows sealed; clocks do not matter (order is by id and transaction
//! horizon, never by time). What sealing cannot protect is a row in the seconds before it is
//! sealed: the verifier reports rows left unsealed longer than a bound.
//!
//! A chain whose recorded tail names a row that is no longer there lost its newest rows (no
//! release deletes audit rows; someone past the trigger did). Sealing on from the rows would
//! give the next rows the missing sequence numbers and leave a gap-free chain, hiding the
//! deletion for good, so the sealer *holds* such a chain ([`Held`]): its new rows stay unsealed
//! (the verifier names the chain, and reports them overdue) until an operator has looked and
//! runs `leadq audit accept-truncation` ([`accept_truncation`]), which records the loss as the
//! chain's next row.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::db::{self, Scope};
use crate::keyring::Keyring;

/// The security check a worker's sealer publishes: 0 while it holds a chain.
pub const SEALING_CHECK: &str = "audit_sealing";

/// Rows sealed per transaction at most.
pub const BATCH: i64 = 2_000;

/// How often a worker's sealer makes a pass. A pass costs each chain with rows to seal one
/// short transaction of about six statements, however few rows it seals: every 200 ms, fifty
/// tenants' chains took 250 sealing transactions a second, and fifty tenants' leads were
/// scored ~9 % slower than at one pass a second (docs/bench/audit-chain.md, "The sealer's pace"). A second
/// is still "seconds after its commit" (docs/audit.md); the verifier's overdue bound is minutes.
pub const SEAL_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The advisory lock key of a chain (the same key the legacy trigger used).
pub(super) fn lock_name(scope: Scope) -> String {
    format!("audit:{}", scope_name(scope))
}

/// `tenant uuid` or `platform`, as rows name their chain.
pub(super) fn scope_name(scope: Scope) -> String {
    match scope {
        Scope::Tenant(t) => t.to_string(),
        Scope::Platform => "platform".into(),
    }
}

/// The link of one row: HMAC-SHA256 over the previous link, the row's sequence number in its
/// chain and its canonical bytes.
pub fn link(key: &[u8; 32], prev: &[u8], seq: i64, canonical: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&(prev.len() as u32).to_be_bytes());
    mac.update(prev);
    mac.update(&seq.to_be_bytes());
    mac.update(canonical);
    mac.finalize().into_bytes().to_vec()
}

/// The chains that have rows to seal (the sealer scope sees only unsealed rows).
///
/// One index probe a chain (a "skip scan" written as a recursive query: each step asks for the
/// first unsealed row of a tenant after the last one found), plus one for the platform's
/// chain, instead of `select distinct`, which read every unsealed row: each pass paid for the
/// whole backlog, so a sealer that fell behind (after an outage of PostgreSQL, say) slowed
/// itself further. With 200,000 rows unsealed over 50 chains, 387 ms against 19–50 ms
/// (docs/bench/audit-chain.md, "The sealer's chain lookup").
pub async fn pending_scopes(pool: &sqlx::PgPool) -> Result<Vec<Scope>, sqlx::Error> {
    let mut tx = db::begin_service(pool, "audit-sealer").await?;
    let names: Vec<Option<uuid::Uuid>> = sqlx::query_scalar(
        "with recursive chains(tenant_id) as (
             (select tenant_id from audit_log
               where hash is null and mac is null and tenant_id is not null
               order by tenant_id limit 1)
           union all
             select (select a.tenant_id from audit_log a
                      where a.hash is null and a.mac is null and a.tenant_id > c.tenant_id
                      order by a.tenant_id limit 1)
               from chains c
              where c.tenant_id is not null)
         select tenant_id from chains where tenant_id is not null
         union all
         select null where exists (select 1 from audit_log
                                    where tenant_id is null and hash is null and mac is null)",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(names
        .into_iter()
        .map(|t| t.map_or(Scope::Platform, Scope::Tenant))
        .collect())
}

/// A chain the sealer will not seal: its recorded tail names a row that is gone.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Held {
    /// `tenant uuid` or `platform`.
    pub chain: String,
    /// Where the last sealing batch recorded the chain's end.
    pub recorded_seq: i64,
    /// Where its sealed rows end now (0: none left).
    pub rows_end_seq: i64,
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "audit chain {}: its recorded tail is seal_seq {}, but its sealed rows end at {}; \
             its newest rows were deleted, and it is not sealed until an operator runs \
             `leadq audit accept-truncation` (docs/audit.md)",
            self.chain, self.recorded_seq, self.rows_end_seq
        )
    }
}

/// What one sealing batch did.
#[derive(Debug)]
pub enum Batch {
    /// Sealed this many rows (0: nothing was ready).
    Sealed(usize),
    /// The chain lost its newest rows; nothing was sealed.
    Held(Held),
}

/// Seals one batch of `scope`'s committed unsealed rows.
pub async fn seal_batch(
    pool: &sqlx::PgPool,
    scope: Scope,
    keys: &Keyring,
) -> Result<Batch, sqlx::Error> {
    let mut tx = db::begin(pool, scope).await?;
    sqlx::query("select pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(lock_name(scope))
        .execute(&mut *tx)
        .await?;
    let (mut seq, mut prev) = match tail(&mut tx, scope).await? {
        Tail::Found(seq, mac) => (seq, mac),
        Tail::Missing(held) => return Ok(Batch::Held(held)),
    };
    // Each read names its chain by `tenant_id` (`own_rows`), as the indexes it needs are keyed
    // (`audit_log_unsealed_by_tenant`, `audit_log_seal_seq_by_tenant`), not only through
    // row-level security, whose predicate no index serves. A condition on
    // `tenant_id::text` would not do either: it is not leakproof, so under row-level security
    // it cannot be an index condition, and each read scanned the index of every chain
    // (docs/bench.md).
    let (own, tenant) = super::own_rows(scope);
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(&format!(
        "select id, audit_canonical(tenant_id, actor, action, subject, outcome,
                                    correlation_id, details, at)
           from audit_log
          where {own}
            and hash is null and mac is null
            and xid < pg_snapshot_xmin(pg_current_snapshot())
          order by id limit $2"
    ))
    .bind(tenant)
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(Batch::Sealed(0));
    }
    let key = keys.current();
    let (mut ids, mut seqs, mut macs) = (Vec::new(), Vec::new(), Vec::new());
    for (id, canonical) in &rows {
        seq += 1;
        prev = link(&key.key, &prev, seq, canonical);
        ids.push(*id);
        seqs.push(seq);
        macs.push(prev.clone());
    }
    // The rows are found by id (`a.id = any($1)`, the primary key) and matched to their
    // links by a hash join, never a nested loop. The planner cannot count the rows row-level
    // security lets through (it guesses 0.5 % per policy clause, so "one row" of any table
    // under 100,000), and with that guess it scanned the whole table once and the batch once
    // per row: 2.9 s for 1,014 rows at 15,000 (docs/bench/plans.md). `set local` ends with this
    // transaction, and nothing after the update joins.
    sqlx::query("set local enable_nestloop = off")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "update audit_log a set seal_seq = u.seq, key_id = $4, mac = u.mac
           from unnest($1::bigint[], $2::bigint[], $3::bytea[]) as u(id, seq, mac)
          where a.id = any($1) and a.id = u.id",
    )
    .bind(&ids)
    .bind(&seqs)
    .bind(&macs)
    .bind(&key.kid)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into audit_chain_tails (chain, seal_seq, mac) values ($1, $2, $3)
         on conflict (chain) do update set seal_seq = excluded.seal_seq, mac = excluded.mac",
    )
    .bind(scope_name(scope))
    .bind(seq)
    .bind(&prev)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Batch::Sealed(rows.len()))
}

/// Where a chain ends, as [`tail`] found it.
enum Tail {
    /// The last sealed row's `(seal_seq, mac)`, or `(0, the last legacy link)`.
    Found(i64, Vec<u8>),
    /// The recorded tail names a row that is gone.
    Missing(Held),
}

/// Where `scope`'s chain ends: the last sealed row's `(seal_seq, mac)`, or `(0, the last legacy
/// sha256 link)` before its first seal. The tail the last batch recorded
/// (`audit_chain_tails`) is used when the rows agree: the row it names carries that link and
/// no row follows it (two exact reads of `audit_log_seal_seq`). Otherwise — no record yet, or
/// one an older release's sealer left behind (it lags) — the chain's rows are searched; when
/// they end *before* the record, rows were deleted from the chain's end: [`Tail::Missing`].
async fn tail(conn: &mut sqlx::PgConnection, scope: Scope) -> Result<Tail, sqlx::Error> {
    let kept = recorded_tail(conn, scope).await?;
    let (own, tenant) = super::own_rows(scope);
    if let Some((seq, mac)) = &kept {
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(&format!(
            "select seal_seq, mac from audit_log where {own} and seal_seq in ($2, $2 + 1)"
        ))
        .bind(tenant)
        .bind(seq)
        .fetch_all(&mut *conn)
        .await?;
        if rows.len() == 1 && rows[0].0 == *seq && rows[0].1 == *mac {
            return Ok(Tail::Found(*seq, mac.clone()));
        }
    }
    let found = last_sealed(conn, scope).await?;
    let rows_end = found.as_ref().map_or(0, |(seq, _)| *seq);
    if let Some((recorded_seq, _)) = kept.filter(|(seq, _)| *seq > rows_end) {
        return Ok(Tail::Missing(Held {
            chain: scope_name(scope),
            recorded_seq,
            rows_end_seq: rows_end,
        }));
    }
    if let Some((seq, mac)) = found {
        return Ok(Tail::Found(seq, mac));
    }
    let legacy: Option<Vec<u8>> = sqlx::query_scalar(&format!(
        "select hash from audit_log where {own} and hash is not null order by id desc limit 1"
    ))
    .bind(tenant)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(Tail::Found(0, legacy.unwrap_or_default()))
}

/// The chain's end as the last sealing batch recorded it (`audit_chain_tails`).
pub(super) async fn recorded_tail(
    conn: &mut sqlx::PgConnection,
    scope: Scope,
) -> Result<Option<(i64, Vec<u8>)>, sqlx::Error> {
    sqlx::query_as("select seal_seq, mac from audit_chain_tails where chain = $1")
        .bind(scope_name(scope))
        .fetch_optional(&mut *conn)
        .await
}

/// The chain's last sealed row, searched for in the rows.
async fn last_sealed(
    conn: &mut sqlx::PgConnection,
    scope: Scope,
) -> Result<Option<(i64, Vec<u8>)>, sqlx::Error> {
    let (own, tenant) = super::own_rows(scope);
    sqlx::query_as(&format!(
        "select seal_seq, mac from audit_log
          where {own} and seal_seq is not null
          order by tenant_id desc, seal_seq desc limit 1"
    ))
    .bind(tenant)
    .fetch_optional(&mut *conn)
    .await
}

/// Records that `scope`'s chain lost its newest rows, so that sealing resumes: under the
/// chain's lock it checks again that the rows end before the recorded tail, appends an
/// `audit.truncation_accepted` row by `actor` (details: where the record said the chain ended,
/// where its rows end, how many are missing) and moves the record to the rows' end, in one
/// transaction. The row is sealed next, as the chain's next link, so the loss stays in the
/// chain. `None`: the chain is not truncated, and nothing was written.
pub async fn accept_truncation(
    pool: &sqlx::PgPool,
    scope: Scope,
    actor: &str,
    correlation_id: &str,
) -> Result<Option<Held>, sqlx::Error> {
    let mut tx = db::begin(pool, scope).await?;
    sqlx::query("select pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(lock_name(scope))
        .execute(&mut *tx)
        .await?;
    let Tail::Missing(held) = tail(&mut tx, scope).await? else {
        return Ok(None);
    };
    let tenant_id = match scope {
        Scope::Tenant(t) => Some(t),
        Scope::Platform => None,
    };
    super::Auditor {
        tenant_id,
        actor,
        correlation_id,
    }
    .entry(
        "audit.truncation_accepted",
        &format!("audit_chain:{}", held.chain),
    )
    .details(serde_json::json!({
        "recorded_seq": held.recorded_seq,
        "rows_end_seq": held.rows_end_seq,
        "missing": held.recorded_seq - held.rows_end_seq,
    }))
    .record(&mut *tx)
    .await?;
    let (seq, mac) = last_sealed(&mut tx, scope).await?.unwrap_or_default();
    sqlx::query("update audit_chain_tails set seal_seq = $2, mac = $3 where chain = $1")
        .bind(&held.chain)
        .bind(seq)
        .bind(mac)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(held))
}

/// What a sealing pass did: rows sealed, and chains held because their newest rows are gone.
#[derive(Debug, Default)]
pub struct Pass {
    /// Rows sealed, over every chain.
    pub sealed: usize,
    /// Chains not sealed ([`Held`]).
    pub held: Vec<Held>,
}

/// Seals everything committed so far, chain by chain. A held chain does not stop the others.
pub async fn seal_all(pool: &sqlx::PgPool, keys: &Keyring) -> Result<Pass, sqlx::Error> {
    let mut pass = Pass::default();
    for scope in pending_scopes(pool).await? {
        loop {
            match seal_batch(pool, scope, keys).await? {
                Batch::Sealed(n) => {
                    pass.sealed += n;
                    if n < BATCH as usize {
                        break;
                    }
                }
                Batch::Held(held) => {
                    pass.held.push(held);
                    break;
                }
            }
        }
    }
    Ok(pass)
}

/// Seals every `interval` until `stop` resolves (a worker's background task). Errors are
/// logged and retried on the next tick; the verifier reports rows left unsealed too long.
pub async fn seal_forever(
    pool: sqlx::PgPool,
    keys: Keyring,
    interval: std::time::Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    use crate::metrics as m;
    tokio::pin!(stop);
    // A held chain is logged once while it stays held, not once a pass, and shown as the
    // security check `audit_sealing` (`LeadqSecurityCheckFailing`, critical like every audit
    // check) within minutes rather than at the next daily verification.
    let mut reported = std::collections::HashSet::new();
    loop {
        match seal_all(&pool, &keys).await {
            Ok(pass) => {
                if pass.sealed > 0 {
                    metrics::counter!(m::AUDIT_ROWS_SEALED_TOTAL).increment(pass.sealed as u64)
                }
                metrics::gauge!(m::SECURITY_CHECK_OK, m::label::CHECK => SEALING_CHECK)
                    .set(if pass.held.is_empty() { 1.0 } else { 0.0 });
                reported.retain(|chain: &String| pass.held.iter().any(|h| &h.chain == chain));
                for held in pass.held {
                    if reported.insert(held.chain.clone()) {
                        tracing::error!(chain = %held.chain, "{held}");
                    }
                }
            }
            Err(error) => tracing::warn!(error = %error, "Could not seal audit rows; retrying."),
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_link_depends_on_key_previous_link_sequence_and_bytes() {
        let (k1, k2) = ([1u8; 32], [2u8; 32]);
        let base = super::link(&k1, b"prev", 1, b"row");
        assert_eq!(base, super::link(&k1, b"prev", 1, b"row"));
        for other in [
            super::link(&k2, b"prev", 1, b"row"),
            super::link(&k1, b"prev!", 1, b"row"),
            super::link(&k1, b"prev", 2, b"row"),
            super::link(&k1, b"prev", 1, b"row!"),
            // The length prefix keeps prev and row apart.
            super::link(&k1, b"pre", 1, b"vrow"),
        ] {
            assert_ne!(base, other);
        }
    }
}
