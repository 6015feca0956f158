//! `leadq audit export`: sealed rows as signed JSON lines, for storage off the box.
//!
//! A chain in the database is only as safe as the database; a copy shipped to append-only
//! storage elsewhere (object lock, WORM, another team's account) survives its compromise.
//! Each line is one sealed row — its fields, its chain position (`seal_seq`) and link (`mac`)
//! — plus `sig`, an HMAC-SHA256 under the current audit key over the line without `sig`,
//! domain-separated from the chain's links, and `sig_key`, the key's id. [`verify_line`]
//! checks one line. Lines come in chain order per scope, so a consumer can also check that
//! `seal_seq` has no gaps.
//!
//! Shipping continuously means continuing from the last line shipped ([`Start::After`]), not
//! from a time: a row's `at` is when its transaction began, and it is sealed only once that
//! transaction and every older one have ended, so a row can be sealed after an export that
//! asked for a later `at` — and selecting by `at` would skip it for good. Continuing checks
//! first that the chain still holds the last shipped row with the link shipped: rows deleted
//! from the chain's end, or rewritten with their tail record, cannot hide from the copy.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::db::Scope;
use crate::keyring::Keyring;

/// What an export signature is over, before the line's bytes.
const DOMAIN: &[u8] = b"leadq-audit-export-v1\x1f";

fn signature(key: &[u8; 32], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(DOMAIN);
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[derive(sqlx::FromRow)]
struct Sealed {
    id: i64,
    seal_seq: i64,
    at: DateTime<Utc>,
    actor: String,
    action: String,
    subject: String,
    outcome: String,
    correlation_id: String,
    details: serde_json::Value,
    key_id: String,
    mac: Vec<u8>,
}

/// Where a scope's export starts.
#[derive(Debug, Clone)]
pub enum Start {
    /// Sealed rows written at or after a time (a look at a window), or every sealed row (`None`:
    /// a first export).
    Since(Option<DateTime<Utc>>),
    /// The rows sealed after the last line shipped: its `seal_seq` and its `mac`.
    After { seal_seq: i64, mac: Vec<u8> },
}

/// Why an export did not run.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The chain no longer holds the last row shipped, or holds it with another link.
    #[error(
        "audit chain {scope} no longer holds what was exported: seal_seq {seal_seq} is {found} \
         (rows deleted or rewritten since; see docs/audit.md)"
    )]
    Diverged {
        scope: String,
        seal_seq: i64,
        /// `missing` or `another link`.
        found: &'static str,
    },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The signed lines of `scope`'s sealed rows from `start`, in chain order.
pub async fn lines(
    pool: &sqlx::PgPool,
    scope: Scope,
    start: &Start,
    keys: &Keyring,
) -> Result<Vec<String>, ExportError> {
    let mut tx = crate::db::begin(pool, scope).await?;
    let (own, tenant) = super::own_rows(scope);
    const COLUMNS: &str = "id, seal_seq, at, actor, action, subject, outcome, correlation_id, \
                           details, key_id, mac";
    let rows: Vec<Sealed> = match start {
        Start::Since(since) => {
            sqlx::query_as(&format!(
                "select {COLUMNS} from audit_log
                  where {own} and seal_seq is not null
                    and ($2::timestamptz is null or at >= $2)
                  order by seal_seq"
            ))
            .bind(tenant)
            .bind(since)
            .fetch_all(&mut *tx)
            .await?
        }
        Start::After { seal_seq, mac } => {
            let shipped: Option<Vec<u8>> = sqlx::query_scalar(&format!(
                "select mac from audit_log where {own} and seal_seq = $2"
            ))
            .bind(tenant)
            .bind(seal_seq)
            .fetch_optional(&mut *tx)
            .await?;
            let mut from = *seal_seq;
            if shipped.as_ref() != Some(mac) {
                // Unless an operator accepted the loss of the rows from there
                // (`audit.truncation_accepted`, itself a row of the chain): the chain then goes
                // on from where its rows ended, and so does the copy.
                let accepted: Option<i64> = sqlx::query_scalar(&format!(
                    "select (details->>'rows_end_seq')::bigint from audit_log
                      where {own} and action = 'audit.truncation_accepted'
                        and seal_seq is not null
                        and (details->>'recorded_seq')::bigint >= $2
                        and (details->>'rows_end_seq')::bigint < $2
                      order by seal_seq limit 1"
                ))
                .bind(tenant)
                .bind(seal_seq)
                .fetch_optional(&mut *tx)
                .await?;
                match accepted {
                    Some(end) => from = end,
                    None => {
                        return Err(ExportError::Diverged {
                            scope: super::seal::scope_name(scope),
                            seal_seq: *seal_seq,
                            found: if shipped.is_some() {
                                "another link"
                            } else {
                                "missing"
                            },
                        })
                    }
                }
            }
            sqlx::query_as(&format!(
                "select {COLUMNS} from audit_log
                  where {own} and seal_seq > $2 order by seal_seq"
            ))
            .bind(tenant)
            .bind(from)
            .fetch_all(&mut *tx)
            .await?
        }
    };
    let key = keys.current();
    let scope_name = super::seal::scope_name(scope);
    Ok(rows
        .into_iter()
        .map(|r| {
            let mut line = serde_json::json!({
                "scope": scope_name, "id": r.id, "seal_seq": r.seal_seq, "at": r.at,
                "actor": r.actor, "action": r.action, "subject": r.subject,
                "outcome": r.outcome, "correlation_id": r.correlation_id,
                "details": r.details, "key_id": r.key_id, "mac": hex::encode(r.mac),
            });
            let body = line.to_string();
            line["sig_key"] = key.kid.clone().into();
            line["sig"] = signature(&key.key, body.as_bytes()).into();
            line.to_string()
        })
        .collect())
}

/// Whether `line` (as [`lines`] wrote it) carries a valid signature under `keys`.
pub fn verify_line(line: &str, keys: &Keyring) -> bool {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(line) else {
        return false;
    };
    let Some(obj) = v.as_object_mut() else {
        return false;
    };
    let (Some(sig), Some(kid)) = (obj.remove("sig"), obj.remove("sig_key")) else {
        return false;
    };
    let Some(key) = kid.as_str().and_then(|k| keys.get(k)) else {
        return false;
    };
    let expected = signature(&key.key, v.to_string().as_bytes());
    sig.as_str().is_some_and(|s| {
        bool::from(subtle::ConstantTimeEq::ct_eq(
            s.as_bytes(),
            expected.as_bytes(),
        ))
    })
}

/// Where each scope's shipped lines end, read from a previous export's lines: for each scope,
/// the line with the highest `seal_seq`. Every line must carry a valid signature under `keys`
/// (a forged line could otherwise make the next export skip rows); the error names the first
/// line (1-based) that does not.
pub fn shipped_ends(
    lines: impl IntoIterator<Item = String>,
    keys: &Keyring,
) -> Result<std::collections::BTreeMap<String, (i64, Vec<u8>)>, usize> {
    let mut ends = std::collections::BTreeMap::new();
    for (i, line) in lines.into_iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if !verify_line(&line, keys) {
            return Err(i + 1);
        }
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|_| i + 1)?;
        let (Some(scope), Some(seq), Some(mac)) = (
            v["scope"].as_str(),
            v["seal_seq"].as_i64(),
            v["mac"].as_str().and_then(|m| hex::decode(m).ok()),
        ) else {
            return Err(i + 1);
        };
        let end = ends.entry(scope.to_owned()).or_insert((seq, mac.clone()));
        if seq > end.0 {
            *end = (seq, mac);
        }
    }
    Ok(ends)
}
