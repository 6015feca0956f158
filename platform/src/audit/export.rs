//! `leadq audit export`: sealed rows as signed JSON lines, for storage off the box.
//!
//! A chain in the database is only as safe as the database; a copy shipped to append-only
//! storage elsewhere (object lock, WORM, another team's account) survives its compromise.
//! Each line is one sealed row — its fields, its chain position (`seal_seq`) and link (`mac`)
//! — plus `sig`, an HMAC-SHA256 under the current audit key over the line without `sig`,
//! domain-separated from the chain's links, and `sig_key`, the key's id. [`verify_line`]
//! checks one line. Lines come in chain order per scope, so a consumer can also check that
//! `seal_seq` has no gaps.

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

/// The signed lines of `scope`'s rows sealed and written at or after `since`, in chain order.
pub async fn lines(
    pool: &sqlx::PgPool,
    scope: Scope,
    since: DateTime<Utc>,
    keys: &Keyring,
) -> Result<Vec<String>, sqlx::Error> {
    let mut tx = crate::db::begin(pool, scope).await?;
    let rows: Vec<Sealed> = sqlx::query_as(
        "select id, seal_seq, at, actor, action, subject, outcome, correlation_id, details,
                key_id, mac
           from audit_log where seal_seq is not null and at >= $1 order by seal_seq",
    )
    .bind(since)
    .fetch_all(&mut *tx)
    .await?;
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
