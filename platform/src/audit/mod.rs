//! The append-only audit log.
//!
//! Entries are written in the same transaction as the change they describe, so the trail and
//! the data cannot disagree. The table refuses UPDATE and DELETE (a trigger), but for sealing.
//! Entries carry ids and codes, never personal data.
//!
//! Each scope (a tenant, or the platform) is one tamper-evident chain: rows are inserted
//! unlinked, without waiting for anyone, and [`seal`] links committed rows in batches with an
//! HMAC under `LEADQ_AUDIT_KEYS` (a key the database never holds, so a database writer who
//! recomputes hashes is still caught). [`verify_chain`] recomputes every link and names the
//! first row that does not match. Rows from before keyed sealing keep their sha256 links and
//! are verified as such; the keyed chain continues from the last of them. See docs/audit.md.
//!
//! Reads of tenant data change nothing and are audited off the request's path, in batches
//! ([`reads`]).

pub mod export;
pub mod reads;
pub mod seal;

use uuid::Uuid;

use crate::db::Scope;

/// `scope`'s own rows as a condition on `tenant_id` (placeholder `$1`, bound with the returned
/// id), for reads of one chain. Row-level security already hides every other chain's rows, but
/// its predicate (`coalesce(tenant_id::text, 'platform') = leadq_scope()`, or'ed with the
/// sealer's) matches no index: without this condition such a read scans every chain's rows,
/// and a pass over all chains (verification, the heartbeat check) costs chains × rows. Two
/// spellings, so each uses its index: `(tenant_id, …)`, or the platform rows' (`tenant_id is
/// null`).
pub fn own_rows(scope: Scope) -> (&'static str, Option<Uuid>) {
    match scope {
        Scope::Tenant(t) => ("tenant_id = $1", Some(t)),
        Scope::Platform => ("tenant_id is null and $1::uuid is null", None),
    }
}

/// One audit entry.
#[derive(Debug)]
pub struct AuditEntry<'a> {
    /// The tenant concerned (`None` for platform-level actions).
    pub tenant_id: Option<Uuid>,
    /// Who acted: `api_key:<id>`, `worker:<kind>`, `cli`, …
    pub actor: &'a str,
    /// What was done, e.g. `lead.score`.
    pub action: &'a str,
    /// On what, e.g. `lead:<external id>`.
    pub subject: &'a str,
    /// `ok` or an error code.
    pub outcome: &'a str,
    /// The request's or job's correlation id.
    pub correlation_id: &'a str,
    /// Extra structured facts (ids, codes; never PII).
    pub details: serde_json::Value,
}

/// Who acts, for which tenant, under which correlation id: what every entry of one request,
/// job or command shares. Entries start from it ([`Auditor::entry`]), so a call site names
/// only what it did.
#[derive(Debug, Clone, Copy)]
pub struct Auditor<'a> {
    /// The tenant concerned (`None` for platform-level actions).
    pub tenant_id: Option<Uuid>,
    /// Who acts: `api_key:<id>`, `operator:<name>`, `webhook:<source>`, `system:<task>`, …
    pub actor: &'a str,
    /// The request's, job's or command's correlation id (`cli` for a CLI command).
    pub correlation_id: &'a str,
}

impl<'a> Auditor<'a> {
    /// An entry of this actor: `action` done on `subject`, outcome `ok`, no details.
    pub fn entry<'b>(&self, action: &'b str, subject: &'b str) -> AuditEntry<'b>
    where
        'a: 'b,
    {
        AuditEntry {
            tenant_id: self.tenant_id,
            actor: self.actor,
            action,
            subject,
            outcome: "ok",
            correlation_id: self.correlation_id,
            details: serde_json::json!({}),
        }
    }
}

impl<'a> AuditEntry<'a> {
    /// The outcome, when not `ok`: an error code or a reason.
    pub fn outcome(mut self, outcome: &'a str) -> Self {
        self.outcome = outcome;
        self
    }

    /// Extra structured facts (ids, codes; never PII).
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// Appends the entry (see [`record`]).
    pub async fn record<'e, E>(&self, executor: E) -> Result<(), sqlx::Error>
    where
        E: sqlx::PgExecutor<'e>,
    {
        record(executor, self).await
    }
}

/// Appends an entry.
pub async fn record<'e, E>(executor: E, e: &AuditEntry<'_>) -> Result<(), sqlx::Error>
where
    E: sqlx::PgExecutor<'e>,
{
    sqlx::query(
        "insert into audit_log (tenant_id, actor, action, subject, outcome, correlation_id, details)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(e.tenant_id)
    .bind(e.actor)
    .bind(e.action)
    .bind(e.subject)
    .bind(e.outcome)
    .bind(e.correlation_id)
    .bind(&e.details)
    .execute(executor)
    .await?;
    Ok(())
}

/// Rows left unsealed longer than this are a problem [`verify_chain`] reports: the sealer
/// stopped, and the rows are not protected yet.
pub const UNSEALED_GRACE: std::time::Duration = std::time::Duration::from_secs(300);

/// The result of checking one chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChainReport {
    /// `tenant:<uuid>` or `platform`.
    pub scope: String,
    /// Rows checked.
    pub rows: u64,
    /// Rows in the keyed (sealed) part of the chain.
    pub sealed: u64,
    /// Rows unsealed for longer than [`UNSEALED_GRACE`].
    pub unsealed_overdue: u64,
    /// The id of the first row whose link does not match, if any.
    pub first_broken_id: Option<i64>,
    /// What the chain's recorded tail (`audit_chain_tails`) says against the rows.
    pub tail_record: TailRecord,
    /// The `seal_seq` the recorded tail names, if there is one.
    pub recorded_tail_seq: Option<i64>,
}

/// The chain's recorded tail, checked against its rows. Every sealing batch records where the
/// chain ends, in the transaction that seals it; no release deletes audit rows, so a record
/// ahead of the rows means the newest rows were deleted — a loss the links alone cannot show,
/// as the rows left are a gap-free chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TailRecord {
    /// The last sealed row is the one recorded.
    Matches,
    /// The recorded row is there, and rows were sealed after it (by a release that did not
    /// record its tail, during a rolling deploy).
    Lagging,
    /// No record (the chain was never sealed by a release that keeps one).
    Absent,
    /// The record names a `seal_seq` beyond the last sealed row: rows were deleted from the
    /// chain's end. Broken.
    Ahead,
    /// The recorded row carries another link than the record: one of them was edited. Broken.
    Differs,
}

/// A row of the legacy (sha256) part, in id order.
#[derive(sqlx::FromRow)]
struct LegacyRow {
    id: i64,
    prev_hash: Option<Vec<u8>>,
    hash: Vec<u8>,
    expected_legacy: Vec<u8>,
}

/// A row of the keyed part, in `seal_seq` order.
#[derive(sqlx::FromRow)]
struct SealedRow {
    id: i64,
    seal_seq: i64,
    key_id: Option<String>,
    mac: Option<Vec<u8>>,
    canonical: Vec<u8>,
}

/// Walks the legacy part: the first broken row, or the last link.
async fn check_legacy(
    conn: &mut sqlx::PgConnection,
    scope: Scope,
) -> Result<Result<Vec<u8>, i64>, sqlx::Error> {
    use futures::TryStreamExt as _;
    let (own, tenant) = own_rows(scope);
    let sql = format!(
        "select id, prev_hash, hash,
                audit_row_hash(prev_hash, tenant_id, actor, action, subject, outcome,
                               correlation_id, details, at) as expected_legacy
           from audit_log where {own} and hash is not null order by id"
    );
    let mut rows = sqlx::query_as::<_, LegacyRow>(&sql)
        .bind(tenant)
        .fetch(&mut *conn);
    let mut prev: Option<Vec<u8>> = None;
    while let Some(r) = rows.try_next().await? {
        if r.hash != r.expected_legacy || r.prev_hash != prev {
            return Ok(Err(r.id));
        }
        prev = Some(r.hash);
    }
    Ok(Ok(prev.unwrap_or_default()))
}

/// What the walk of the keyed part found.
struct SealedWalk {
    first_broken_id: Option<i64>,
    sealed: u64,
    last_seq: i64,
    /// The link of the row at the recorded tail's `seal_seq`, if the walk passed it.
    mac_at_recorded: Option<Vec<u8>>,
}

/// Walks the keyed part by `seal_seq` from `prev`, one row at a time: the first broken row,
/// the rows sealed, where they end.
async fn check_sealed(
    conn: &mut sqlx::PgConnection,
    scope: Scope,
    mut prev: Vec<u8>,
    keys: &crate::keyring::Keyring,
    recorded_seq: Option<i64>,
) -> Result<SealedWalk, sqlx::Error> {
    use futures::TryStreamExt as _;
    let (own, tenant) = own_rows(scope);
    let sql = format!(
        "select id, seal_seq, key_id, mac,
                audit_canonical(tenant_id, actor, action, subject, outcome, correlation_id,
                                details, at) as canonical
           from audit_log where {own} and seal_seq is not null order by seal_seq"
    );
    let mut rows = sqlx::query_as::<_, SealedRow>(&sql)
        .bind(tenant)
        .fetch(&mut *conn);
    let mut walk = SealedWalk {
        first_broken_id: None,
        sealed: 0,
        last_seq: 0,
        mac_at_recorded: None,
    };
    while let Some(r) = rows.try_next().await? {
        walk.sealed += 1;
        walk.last_seq = r.seal_seq;
        if Some(r.seal_seq) == recorded_seq {
            walk.mac_at_recorded.clone_from(&r.mac);
        }
        if walk.first_broken_id.is_some() {
            continue;
        }
        let seq = walk.sealed as i64;
        let key = r.key_id.as_deref().and_then(|k| keys.get(k));
        let (Some(mac), Some(key)) = (&r.mac, key) else {
            walk.first_broken_id = Some(r.id);
            continue;
        };
        // A gap in the sequence is a deleted row: the row after it is where the chain breaks.
        if r.seal_seq != seq {
            walk.first_broken_id = Some(r.id);
            continue;
        }
        let expected = seal::link(&key.key, &prev, seq, &r.canonical);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], &mac[..])) {
            walk.first_broken_id = Some(r.id);
            continue;
        }
        prev = expected;
    }
    Ok(walk)
}

impl TailRecord {
    fn of(recorded: Option<&(i64, Vec<u8>)>, walk: &SealedWalk) -> Self {
        let Some((seq, mac)) = recorded else {
            return TailRecord::Absent;
        };
        if *seq > walk.last_seq {
            return TailRecord::Ahead;
        }
        match &walk.mac_at_recorded {
            Some(m) if m == mac => {
                if *seq == walk.last_seq {
                    TailRecord::Matches
                } else {
                    TailRecord::Lagging
                }
            }
            // Seq 0 records a chain with no sealed row left (`seal::accept_truncation`).
            None if *seq == 0 => TailRecord::Matches,
            _ => TailRecord::Differs,
        }
    }

    fn broken(self) -> bool {
        matches!(self, TailRecord::Ahead | TailRecord::Differs)
    }
}

impl ChainReport {
    /// Intact: every link matches, the chain ends where its last seal recorded, and nothing
    /// waits for its seal too long.
    pub fn intact(&self) -> bool {
        self.first_broken_id.is_none() && !self.tail_record.broken() && self.unsealed_overdue == 0
    }
}

/// Recomputes the chain of `scope` — the legacy sha256 links (see
/// `migrations/*_audit_hash_chain.sql`), then the keyed links under `keys` — and names the first
/// row that does not match: an edited row fails its own link; a deleted or inserted row breaks
/// the link (or the sequence) of the row after it. Also checks the chain's end against the
/// recorded tail and counts rows left unsealed too long.
///
/// The rows are read as a stream, one at a time, in the order each part is linked (ids for the
/// legacy part, `seal_seq` for the keyed part). The whole chain was read into memory first,
/// each row with its canonical bytes: memory that grew with the chain, without bound, in the
/// worker that runs the scheduled verification beside its jobs.
pub async fn verify_chain(
    pool: &sqlx::PgPool,
    scope: Scope,
    keys: &crate::keyring::Keyring,
) -> Result<ChainReport, sqlx::Error> {
    let mut tx = crate::db::begin(pool, scope).await?;
    // The record first: a batch sealed between the reads then makes it lag, never lead.
    let recorded = seal::recorded_tail(&mut tx, scope).await?;
    let (own, tenant) = own_rows(scope);
    let (rows, overdue): (i64, i64) = sqlx::query_as(&format!(
        "select count(*),
                count(*) filter (where hash is null and mac is null
                                   and at < now() - make_interval(secs => $2))
           from audit_log where {own}"
    ))
    .bind(tenant)
    .bind(UNSEALED_GRACE.as_secs_f64())
    .fetch_one(&mut *tx)
    .await?;
    let legacy = check_legacy(&mut tx, scope).await?;
    let legacy_broken = legacy.is_err();
    let (first_broken_id, walk) = match legacy {
        Err(id) => (
            Some(id),
            SealedWalk {
                first_broken_id: None,
                sealed: 0,
                last_seq: 0,
                mac_at_recorded: None,
            },
        ),
        Ok(tail) => {
            let walk =
                check_sealed(&mut tx, scope, tail, keys, recorded.as_ref().map(|r| r.0)).await?;
            (walk.first_broken_id, walk)
        }
    };
    let sealed: i64 = if legacy_broken {
        sqlx::query_scalar(&format!(
            "select count(*) from audit_log where {own} and seal_seq is not null"
        ))
        .bind(tenant)
        .fetch_one(&mut *tx)
        .await?
    } else {
        walk.sealed as i64
    };
    let tail_record = if legacy_broken {
        // The keyed part was not walked: its end is not known to be wrong.
        recorded
            .as_ref()
            .map_or(TailRecord::Absent, |_| TailRecord::Lagging)
    } else {
        TailRecord::of(recorded.as_ref(), &walk)
    };
    Ok(ChainReport {
        scope: match scope {
            Scope::Tenant(t) => format!("tenant:{t}"),
            Scope::Platform => "platform".into(),
        },
        rows: rows as u64,
        sealed: sealed as u64,
        unsealed_overdue: overdue as u64,
        first_broken_id,
        tail_record,
        recorded_tail_seq: recorded.map(|(seq, _)| seq),
    })
}

/// The scopes of every chain: each tenant's (by slug), then the platform's.
async fn all_scopes(pool: &sqlx::PgPool) -> Result<Vec<Scope>, sqlx::Error> {
    let tenants: Vec<uuid::Uuid> = sqlx::query_scalar("select id from tenants order by slug")
        .fetch_all(pool)
        .await?;
    let mut scopes: Vec<_> = tenants.into_iter().map(Scope::Tenant).collect();
    scopes.push(Scope::Platform);
    Ok(scopes)
}

/// Whether every chain of `reports` is intact, and one line saying so or naming each broken
/// chain and its first bad row (what the scheduler records and `leadq doctor` prints).
pub fn summary(reports: &[ChainReport]) -> (bool, String) {
    let broken: Vec<String> = reports
        .iter()
        .filter_map(|r| match (r.first_broken_id, r.unsealed_overdue) {
            (Some(id), _) => Some(format!("{} at row {id}", r.scope)),
            (None, _) if r.tail_record == TailRecord::Ahead => Some(format!(
                "{}: its newest rows are gone (the last seal recorded seal_seq {}, {} sealed \
                 row(s) are left)",
                r.scope,
                r.recorded_tail_seq.unwrap_or_default(),
                r.sealed
            )),
            (None, _) if r.tail_record == TailRecord::Differs => Some(format!(
                "{}: the row at its recorded tail (seal_seq {}) carries another link",
                r.scope,
                r.recorded_tail_seq.unwrap_or_default()
            )),
            (None, 0) => None,
            (None, n) => Some(format!(
                "{}: {n} row(s) unsealed for over {} s (is a sealer running?)",
                r.scope,
                UNSEALED_GRACE.as_secs()
            )),
        })
        .collect();
    if broken.is_empty() {
        let rows: u64 = reports.iter().map(|r| r.rows).sum();
        (
            true,
            format!("{} chain(s), {rows} row(s), all intact", reports.len()),
        )
    } else {
        (false, format!("broken: {}", broken.join(", ")))
    }
}

/// Verifies every chain: each tenant's, then the platform's.
pub async fn verify_all(
    pool: &sqlx::PgPool,
    keys: &crate::keyring::Keyring,
) -> Result<Vec<ChainReport>, sqlx::Error> {
    let mut out = Vec::new();
    for scope in all_scopes(pool).await? {
        out.push(verify_chain(pool, scope, keys).await?);
    }
    Ok(out)
}

/// Tenants a statement of [`newest_entry`] (and of the security checks' reads of every tenant)
/// asks about: one round trip and one transaction per this many, not per tenant.
pub const TENANTS_PER_STATEMENT: usize = 500;

/// When the newest audit row of any chain was written: the audit trail's heartbeat. Rows are
/// readable only inside their own scope (row-level security), so every scope is asked: the
/// platform's on its own, the tenants [`TENANTS_PER_STATEMENT`] at a time through
/// `leadq_newest_audit_entries`, which reads each tenant's `(tenant_id, at)` index under that
/// tenant's scope (migrations/20261221000300_tenant_facts_in_one_pass.sql). A transaction each
/// was 10,000 transactions a run with 10,000 tenants.
pub async fn newest_entry(
    pool: &sqlx::PgPool,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, sqlx::Error> {
    let mut tx = crate::db::begin(pool, Scope::Platform).await?;
    let (own, tenant) = own_rows(Scope::Platform);
    let mut newest: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(&format!(
        "select at from audit_log where {own} order by at desc limit 1"
    ))
    .bind(tenant)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let tenants: Vec<uuid::Uuid> = sqlx::query_scalar("select id from tenants order by id")
        .fetch_all(pool)
        .await?;
    for chunk in tenants.chunks(TENANTS_PER_STATEMENT) {
        // The function sets each tenant's scope in turn; the transaction runs nothing after it.
        let mut tx = crate::db::begin(pool, Scope::Platform).await?;
        let at: Option<chrono::DateTime<chrono::Utc>> =
            sqlx::query_scalar("select max(newest) from leadq_newest_audit_entries($1)")
                .bind(chunk)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        newest = newest.max(at);
    }
    Ok(newest)
}
