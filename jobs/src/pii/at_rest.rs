//! Personal data at rest: what a lead row and a message row hold, and the background pass that
//! converts and re-seals them.
//!
//! A lead's `email`, `phone`, `name` and `username`, and a message's `content`, are stored
//! sealed (`sealed:v1:<kid>:…`, the same seal as in queued payloads: the tenant and the field
//! are its associated data, so a value copied into another tenant's row or another column does
//! not open). `email_index` and `phone_index` hold the blind index ([`super::index`]), so a
//! lead is still found, and deduplicated, by its email or phone. Scoring needs none of these
//! values (only whether the lead is reachable, and how many messages it sent), so the hot path
//! opens a row's contact only to merge a change into it.
//!
//! Rows written before this release hold clear values; readers accept both ([`open_stored`]).
//! [`reseal`] converts them without downtime: per tenant, in short transactions of
//! `batch` rows each, skipping rows a job holds right now (the next pass gets them). The same
//! pass re-seals values made under an older data key and re-indexes under a newer index key,
//! so a key rotation is: put the new key in front, let the pass (the worker's `pii_reseal`
//! schedule, or `leadq pii reseal`) run until it reports nothing left, then drop the old key.

use leadq_platform::audit::Auditor;
use leadq_platform::db::{self, Scope};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{field, OpenError, Sealer, PREFIX};

/// A stored value that does not open: its key was dropped from the keyring, or it was altered.
#[derive(Debug, thiserror::Error)]
#[error("stored {field} does not open: {error}")]
pub struct Unreadable {
    /// The column.
    pub field: &'static str,
    /// Why.
    pub error: OpenError,
}

/// The value of a stored personal field: opened when sealed, as it is when written before
/// sealing at rest (not yet converted).
pub fn open_stored(
    sealer: &Sealer,
    tenant: Uuid,
    field_name: &'static str,
    stored: Option<String>,
) -> Result<Option<String>, Unreadable> {
    match stored {
        Some(v) if Sealer::is_sealed(&v) => {
            sealer
                .open(tenant, field_name, &v)
                .map(Some)
                .map_err(|error| Unreadable {
                    field: field_name,
                    error,
                })
        }
        other => Ok(other),
    }
}

/// The value of a stored personal field, sealed (for a job's payload, where personal data
/// always travels sealed): as it is when sealed, sealed now when written before sealing at
/// rest (not yet converted).
pub fn seal_stored(
    sealer: &Sealer,
    tenant: Uuid,
    field_name: &'static str,
    stored: &str,
) -> String {
    if Sealer::is_sealed(stored) {
        stored.to_owned()
    } else {
        sealer.seal(tenant, field_name, stored)
    }
}

/// A lead's contact as stored: each field sealed, email and phone with their blind index.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SealedContact {
    /// Sealed name.
    pub name: Option<String>,
    /// Sealed username.
    pub username: Option<String>,
    /// Sealed phone.
    pub phone: Option<String>,
    /// Sealed email.
    pub email: Option<String>,
    /// Blind index of the phone.
    pub phone_index: Option<String>,
    /// Blind index of the email.
    pub email_index: Option<String>,
}

impl Sealer {
    /// Seals a contact given in clear for storage in `tenant`'s lead row.
    pub fn seal_for_rest(
        &self,
        tenant: Uuid,
        name: Option<&str>,
        username: Option<&str>,
        phone: Option<&str>,
        email: Option<&str>,
    ) -> SealedContact {
        let seal = |f: &str, v: Option<&str>| v.map(|v| self.seal(tenant, f, v));
        SealedContact {
            name: seal(field::NAME, name),
            username: seal(field::USERNAME, username),
            phone: seal(field::PHONE, phone),
            email: seal(field::EMAIL, email),
            phone_index: phone.map(|v| self.index_or_nothing(tenant, field::PHONE, v)),
            email_index: email.map(|v| self.index_or_nothing(tenant, field::EMAIL, v)),
        }
    }

    fn current_prefix(&self) -> String {
        format!("{PREFIX}{}:", self.current_kid())
    }
}

/// What one [`reseal`] pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ResealReport {
    /// Tenants walked.
    pub tenants: u64,
    /// Lead rows written (converted from clear, re-sealed or re-indexed).
    pub leads: u64,
    /// Message rows written.
    pub messages: u64,
    /// Rows left as they were because a value does not open (a dropped key, an altered row):
    /// they keep their old seal, and dropping a key they still need would lose them.
    pub unreadable: u64,
    /// Rows a running job held, left for the next pass.
    pub skipped_locked: u64,
    /// Integration secrets written (a Chatwoot webhook secret, CRM credentials, a cached CRM
    /// access token): sealed with the same data keys.
    pub secrets: u64,
}

impl ResealReport {
    /// Whether nothing is left to convert: every row is under the current keys.
    pub fn complete(&self) -> bool {
        self.unreadable == 0 && self.skipped_locked == 0
    }
}

/// Rows read per transaction.
pub const DEFAULT_BATCH: i64 = 500;

/// Converts every tenant's personal fields to the sealed form under the current keys (see the
/// module docs), `batch` rows per transaction, recording one `pii.reseal` audit entry per
/// tenant that had rows to write.
pub async fn reseal(
    pool: &PgPool,
    sealer: &Sealer,
    batch: i64,
    actor: &str,
) -> Result<ResealReport, sqlx::Error> {
    let tenants: Vec<Uuid> = sqlx::query_scalar("select id from tenants order by id")
        .fetch_all(pool)
        .await?;
    let mut total = ResealReport::default();
    for tenant in tenants {
        let r = reseal_tenant(pool, sealer, tenant, batch.max(1)).await?;
        if r.leads + r.messages + r.secrets + r.unreadable > 0 {
            let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
            Auditor {
                tenant_id: Some(tenant),
                actor,
                correlation_id: "pii_reseal",
            }
            .entry("pii.reseal", &format!("tenant:{tenant}"))
            .outcome(if r.unreadable == 0 { "ok" } else { "partial" })
            .details(serde_json::json!({
                "leads": r.leads, "messages": r.messages, "secrets": r.secrets,
                "unreadable": r.unreadable,
                "data_kid": sealer.current_kid(), "index_kid": sealer.current_index_kid(),
            }))
            .record(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        total.tenants += 1;
        total.leads += r.leads;
        total.messages += r.messages;
        total.unreadable += r.unreadable;
        total.skipped_locked += r.skipped_locked;
        total.secrets += r.secrets;
    }
    Ok(total)
}

/// A lead row some field of which is not under the current keys.
#[derive(sqlx::FromRow)]
struct LeadRow {
    external_id: String,
    name: Option<String>,
    username: Option<String>,
    phone: Option<String>,
    email: Option<String>,
}

const STALE_LEADS: &str = "
    from leads
   where tenant_id = $1
     and (   (name is not null and not starts_with(name, $2))
          or (username is not null and not starts_with(username, $2))
          or (email is not null and (not starts_with(email, $2)
                                     or email_index is null or not starts_with(email_index, $3)))
          or (phone is not null and (not starts_with(phone, $2)
                                     or phone_index is null or not starts_with(phone_index, $3))))";

async fn reseal_tenant(
    pool: &PgPool,
    sealer: &Sealer,
    tenant: Uuid,
    batch: i64,
) -> Result<ResealReport, sqlx::Error> {
    let mut r = ResealReport::default();
    let (data_prefix, index_prefix) = (
        sealer.current_prefix(),
        format!("{}:", sealer.current_index_kid()),
    );
    // Keyset over external_id: a row left behind (unreadable, or locked) is not read again.
    let mut after = String::new();
    loop {
        let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
        // Each batch walks the primary key from where the last stopped; with sorts allowed it
        // read and sorted every row still to do (`db::without_sorts`).
        db::without_sorts(&mut tx).await?;
        let rows: Vec<LeadRow> = sqlx::query_as(&format!(
            "select external_id, name, username, phone, email {STALE_LEADS}
               and external_id > $4 order by external_id limit $5 for update skip locked"
        ))
        .bind(tenant)
        .bind(&data_prefix)
        .bind(&index_prefix)
        .bind(&after)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        let Some(last) = rows.last() else {
            tx.commit().await?;
            break;
        };
        after.clone_from(&last.external_id);
        let full = rows.len() as i64 == batch;
        for row in rows {
            match reseal_lead(&mut tx, sealer, tenant, row).await? {
                true => r.leads += 1,
                false => r.unreadable += 1,
            }
        }
        tx.commit().await?;
        if !full {
            break;
        }
    }
    // Locked rows were skipped above: count what is still stale, for the report.
    let left: i64 = sqlx::query_scalar(&format!("select count(*) {STALE_LEADS}"))
        .bind(tenant)
        .bind(&data_prefix)
        .bind(&index_prefix)
        .fetch_one(&mut *db::begin(pool, Scope::Tenant(tenant)).await?)
        .await?;
    r.skipped_locked = u64::try_from(left)
        .unwrap_or(0)
        .saturating_sub(r.unreadable);
    let (m, bad) = reseal_messages(pool, sealer, tenant, &data_prefix, batch).await?;
    r.messages = m;
    r.unreadable += bad;
    // Messages a running job held were skipped too (`skip locked`, and the walk moved past
    // them): counted the same way, so a pass that left one is not reported complete and its
    // old key is not dropped while the message still needs it.
    let left: i64 = sqlx::query_scalar(
        "select count(*) from lead_messages
          where tenant_id = $1 and content is not null and not starts_with(content, $2)",
    )
    .bind(tenant)
    .bind(&data_prefix)
    .fetch_one(&mut *db::begin(pool, Scope::Tenant(tenant)).await?)
    .await?;
    r.skipped_locked += u64::try_from(left).unwrap_or(0).saturating_sub(bad);
    let (n, bad) = reseal_secrets(pool, sealer, tenant, &data_prefix).await?;
    r.secrets = n;
    r.unreadable += bad;
    Ok(r)
}

/// The tenant's integration secrets under the current data key: the Chatwoot webhook secret,
/// the CRM credentials and the cached CRM access token are sealed with the same keys as
/// personal data, so a rotation that dropped the old key without re-sealing them left every
/// webhook refused and every CRM call unauthorized (the `chatwoot_secrets` security check
/// saw it only then). Returns (written, unreadable).
async fn reseal_secrets(
    pool: &PgPool,
    sealer: &Sealer,
    tenant: Uuid,
    data_prefix: &str,
) -> Result<(u64, u64), sqlx::Error> {
    use crate::integrations::settings::field;
    // (table, column, sealed field name): one row per tenant in each table.
    const SEALED: [(&str, &str, &str); 3] = [
        (
            "tenant_integrations",
            "chatwoot_secret",
            field::CHATWOOT_SECRET,
        ),
        ("crm_connections", "credentials", field::CRM_CREDENTIALS),
        ("crm_connections", "access_token", field::CRM_ACCESS_TOKEN),
    ];
    let (mut written, mut unreadable) = (0, 0);
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    for (table, column, name) in SEALED {
        let stored: Option<String> = sqlx::query_scalar(&format!(
            "select {column} from {table}
              where tenant_id = $1 and {column} is not null and not starts_with({column}, $2)
              for update"
        ))
        .bind(tenant)
        .bind(data_prefix)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(stored) = stored else { continue };
        let Ok(Some(plain)) = open_stored(sealer, tenant, name, Some(stored)) else {
            unreadable += 1;
            continue;
        };
        sqlx::query(&format!(
            "update {table} set {column} = $2 where tenant_id = $1"
        ))
        .bind(tenant)
        .bind(sealer.seal(tenant, name, &plain))
        .execute(&mut *tx)
        .await?;
        written += 1;
    }
    tx.commit().await?;
    Ok((written, unreadable))
}

/// Re-seals one lead row in place; `false` (and nothing written) when a value does not open.
async fn reseal_lead(
    conn: &mut PgConnection,
    sealer: &Sealer,
    tenant: Uuid,
    row: LeadRow,
) -> Result<bool, sqlx::Error> {
    let open = |f, v| open_stored(sealer, tenant, f, v);
    let (Ok(name), Ok(username), Ok(phone), Ok(email)) = (
        open(field::NAME, row.name),
        open(field::USERNAME, row.username),
        open(field::PHONE, row.phone),
        open(field::EMAIL, row.email),
    ) else {
        return Ok(false);
    };
    let c = sealer.seal_for_rest(
        tenant,
        name.as_deref(),
        username.as_deref(),
        phone.as_deref(),
        email.as_deref(),
    );
    // The lead's version and updated_at stay: its content did not change.
    sqlx::query(
        "update leads set name = $3, username = $4, phone = $5, email = $6,
                phone_index = $7, email_index = $8
          where tenant_id = $1 and external_id = $2",
    )
    .bind(tenant)
    .bind(&row.external_id)
    .bind(&c.name)
    .bind(&c.username)
    .bind(&c.phone)
    .bind(&c.email)
    .bind(&c.phone_index)
    .bind(&c.email_index)
    .execute(conn)
    .await?;
    Ok(true)
}

/// Re-seals the tenant's message texts not under the current data key; (written, unreadable).
async fn reseal_messages(
    pool: &PgPool,
    sealer: &Sealer,
    tenant: Uuid,
    data_prefix: &str,
    batch: i64,
) -> Result<(u64, u64), sqlx::Error> {
    let (mut written, mut unreadable) = (0, 0);
    let mut after: (String, String) = (String::new(), String::new());
    loop {
        let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
        // Each batch walks the primary key from where the last stopped; with sorts allowed it
        // read and sorted every row still to do (`db::without_sorts`).
        db::without_sorts(&mut tx).await?;
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "select source, source_id, content from lead_messages
              where tenant_id = $1 and content is not null and not starts_with(content, $2)
                and (source, source_id) > ($3, $4)
              order by source, source_id limit $5 for update skip locked",
        )
        .bind(tenant)
        .bind(data_prefix)
        .bind(&after.0)
        .bind(&after.1)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        let Some((s, id, _)) = rows.last() else {
            tx.commit().await?;
            break;
        };
        after = (s.clone(), id.clone());
        let full = rows.len() as i64 == batch;
        for (source, source_id, content) in rows {
            let Ok(Some(plain)) = open_stored(sealer, tenant, field::CONTENT, Some(content)) else {
                unreadable += 1;
                continue;
            };
            sqlx::query(
                "update lead_messages set content = $4
                  where tenant_id = $1 and source = $2 and source_id = $3",
            )
            .bind(tenant)
            .bind(&source)
            .bind(&source_id)
            .bind(sealer.seal(tenant, field::CONTENT, &plain))
            .execute(&mut *tx)
            .await?;
            written += 1;
        }
        tx.commit().await?;
        if !full {
            break;
        }
    }
    Ok((written, unreadable))
}

/// The tenant's leads whose email (`field::EMAIL`) or phone (`field::PHONE`) is `value`, by
/// blind index: their `external_id`s, oldest first.
pub async fn find_by_contact(
    conn: &mut PgConnection,
    sealer: &Sealer,
    tenant: Uuid,
    field_name: &str,
    value: &str,
) -> Result<Vec<String>, sqlx::Error> {
    // A row not yet converted has no index; its clear value is compared in the same
    // normalized form (super::index::normalize).
    let (index, legacy) = match field_name {
        field::EMAIL => ("email_index", "lower(btrim(email))"),
        field::PHONE => (
            "phone_index",
            "case when left(btrim(phone), 1) = '+' then '+' else '' end
                 || regexp_replace(phone, '[^0-9]', '', 'g')",
        ),
        _ => return Ok(Vec::new()),
    };
    let column = field_name;
    let (Some(normalized), indexes) = (
        super::index::normalize(field_name, value),
        sealer.blind_indexes(tenant, field_name, value),
    ) else {
        return Ok(Vec::new());
    };
    sqlx::query_scalar(&format!(
        "select external_id from leads
          where tenant_id = $1
            and ({index} = any($2)
                 or ({index} is null and not starts_with({column}, 'sealed:') and {legacy} = $3))
          order by created_at, external_id"
    ))
    .bind(tenant)
    .bind(&indexes)
    .bind(&normalized)
    .fetch_all(conn)
    .await
}
