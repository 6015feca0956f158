//! `leadq lead export`: a tenant's leads for analytics, without personal data.
//!
//! Each personal field is replaced by a stable per-tenant token ([`Sealer::token`]): the lead
//! by a token of its external id, the email and phone by tokens of their normalized values,
//! the name by whether there is one. So an analyst can count, join two exports and spot one
//! person behind two leads, without seeing who anyone is. Of the answers, only the
//! questionnaire's (what scoring reads) are exported; free text outside it is not.
//!
//! CSV (RFC 4180), one header line, rows in creation order. A cell starting with `=`, `+`,
//! `-` or `@` gets a leading `'`, so a spreadsheet never runs an answer as a formula.

use std::collections::BTreeMap;
use std::io::Write;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use leadq_platform::db::{self, Scope};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::lead::scoring::QUESTIONNAIRE;
use crate::pii::at_rest::open_stored;
use crate::pii::{field, Sealer};

/// What an export wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Exported {
    /// Rows written.
    pub rows: u64,
    /// Rows whose email or phone did not open: written with those tokens empty.
    pub unreadable: u64,
}

/// Errors of an export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The database failed.
    #[error("database error")]
    Db(#[from] sqlx::Error),
    /// The output could not be written.
    #[error("cannot write the export")]
    Io(#[from] std::io::Error),
}

#[derive(sqlx::FromRow)]
struct Row {
    external_id: String,
    source: String,
    campaign: Option<String>,
    score: Option<i32>,
    tier: Option<String>,
    version: i64,
    name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    answers: sqlx::types::Json<BTreeMap<String, String>>,
    conversation_status: Option<String>,
    created_at: DateTime<Utc>,
    scored_at: Option<DateTime<Utc>>,
    qualified_at: Option<DateTime<Utc>>,
}

const FIXED: &[&str] = &[
    "lead",
    "source",
    "campaign",
    "score",
    "tier",
    "version",
    "email_token",
    "phone_token",
    "has_name",
];
const TRAILING: &[&str] = &[
    "conversation_status",
    "created_at",
    "scored_at",
    "qualified_at",
];

/// One CSV cell: quoted when it must be, defused when a spreadsheet would run it.
fn cell(v: &str) -> String {
    let v = if v.starts_with(['=', '+', '-', '@']) {
        format!("'{v}")
    } else {
        v.to_owned()
    };
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

fn line(out: &mut impl Write, cells: &[String]) -> std::io::Result<()> {
    let joined: Vec<String> = cells.iter().map(|c| cell(c)).collect();
    out.write_all(joined.join(",").as_bytes())?;
    out.write_all(b"\r\n")
}

/// Writes `tenant`'s leads to `out` as tokenized CSV (see the module docs).
pub async fn export_csv(
    pool: &PgPool,
    sealer: &Sealer,
    tenant: Uuid,
    out: &mut impl Write,
) -> Result<Exported, ExportError> {
    let header: Vec<String> = FIXED
        .iter()
        .chain(QUESTIONNAIRE)
        .chain(TRAILING)
        .map(|s| (*s).to_owned())
        .collect();
    line(out, &header)?;
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let mut rows = sqlx::query_as::<_, Row>(
        "select external_id, source, campaign, score, tier, version, name, email, phone,
                answers, conversation_status, created_at, scored_at, qualified_at
           from leads where tenant_id = $1 order by created_at, external_id",
    )
    .bind(tenant)
    .fetch(&mut *tx);
    let mut done = Exported::default();
    let ts = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
    while let Some(r) = rows.try_next().await? {
        let token = |f: &'static str, stored: Option<String>| {
            open_stored(sealer, tenant, f, stored)
                .map(|v| v.map(|v| sealer.token(tenant, f, &v)).unwrap_or_default())
        };
        let (email, phone) = match (token(field::EMAIL, r.email), token(field::PHONE, r.phone)) {
            (Ok(e), Ok(p)) => (e, p),
            _ => {
                done.unreadable += 1;
                (String::new(), String::new())
            }
        };
        let mut cells = vec![
            sealer.token(tenant, "external_id", &r.external_id),
            r.source,
            r.campaign.unwrap_or_default(),
            r.score.map(|s| s.to_string()).unwrap_or_default(),
            r.tier.unwrap_or_default(),
            r.version.to_string(),
            email,
            phone,
            r.name.is_some().to_string(),
        ];
        cells.extend(
            QUESTIONNAIRE
                .iter()
                .map(|q| r.answers.0.get(*q).cloned().unwrap_or_default()),
        );
        cells.extend([
            r.conversation_status.unwrap_or_default(),
            r.created_at.to_rfc3339(),
            ts(r.scored_at),
            ts(r.qualified_at),
        ]);
        line(out, &cells)?;
        done.rows += 1;
    }
    drop(rows);
    tx.commit().await?;
    out.flush()?;
    Ok(done)
}

/// Audits an export by `actor` *before* any row leaves (`lead.export`): an export that stops
/// half-way (a closed pipe, a database error) has still shown who took what. Audited only
/// at the end, such an export left rows on someone's disk and no entry.
pub async fn audit_start(pool: &PgPool, tenant: Uuid, actor: &str) -> Result<(), sqlx::Error> {
    record(
        pool,
        tenant,
        actor,
        "lead.export",
        serde_json::json!({"format": "csv"}),
    )
    .await
}

/// Audits what a finished export wrote (`lead.export_done`: rows, unreadable).
pub async fn audit_done(
    pool: &PgPool,
    tenant: Uuid,
    actor: &str,
    done: &Exported,
) -> Result<(), sqlx::Error> {
    let details =
        serde_json::json!({"format": "csv", "rows": done.rows, "unreadable": done.unreadable});
    record(pool, tenant, actor, "lead.export_done", details).await
}

async fn record(
    pool: &PgPool,
    tenant: Uuid,
    actor: &str,
    action: &str,
    details: serde_json::Value,
) -> Result<(), sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    leadq_platform::audit::Auditor {
        tenant_id: Some(tenant),
        actor,
        correlation_id: "cli",
    }
    .entry(action, &format!("tenant:{tenant}"))
    .details(details)
    .record(&mut *tx)
    .await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::cell;

    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("line\nbreak"), "\"line\nbreak\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("+44"), "'+44");
        assert_eq!(cell("-5"), "'-5");
        assert_eq!(cell("@sum"), "'@sum");
    }
}
