//! Billing reconciliation: what a tenant pays for (its ingest limits and quota, and which job
//! kinds it is entitled to run, and how) is compared with a signed baseline, so a change made
//! outside the audited paths is found.
//!
//! - **Baseline** (`leadq billing baseline --reason …`): each tenant's configuration as it is,
//!   written with the operator and the reason and signed with an HMAC under the audit keyring
//!   (`LEADQ_AUDIT_KEYS`, which the database never holds), audited `billing.baseline`. The
//!   table is append-only for the runtime role; the signature catches an owner who edits it.
//! - **Reconciliation** (the `billing_reconcile` schedule, and `leadq billing reconcile`): the
//!   expected configuration is the latest baseline with every audited change since replayed
//!   in order (`billing.limit_update` from the `update_billing_limit` job,
//!   `tenant.kind_mode` from `leadq tenant set-kind`); each difference from the live
//!   configuration is a finding. A baseline whose signature does not verify is a finding too.
//!   Findings are audited (`billing.discrepancy`) and published as
//!   `leadq_billing_discrepancies{tenant,kind}` (alert `LeadqBillingDiscrepancy`).
//!
//! - **Usage** (the same reconciliation, for one UTC day, by default yesterday): the
//!   `lead_score` jobs each tenant had accepted that day, as the queue counted them at enqueue
//!   ([`Queue::accepted`]), against the runs PostgreSQL recorded for jobs enqueued that day
//!   (`job_runs`) plus the tenant's jobs still waiting. More accepted than recorded and
//!   waiting is a finding (`usage_gap`): a job acknowledged but never stored. The other way
//!   round is not (jobs enqueued by a producer that predates the counter, during a rollout).
//!
//! A tenant created after the last baseline has none and is reported as such, not as a
//! finding: baselining is an operator's decision.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use hmac::{Hmac, Mac};
use leadq_platform::audit::Auditor;
use leadq_platform::db::{self, Scope};
use leadq_platform::keyring::Keyring;
use leadq_queue::Queue;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sqlx::PgPool;
use uuid::Uuid;

use crate::ops::deadletters::{Actor, OpsError};
use crate::ops::limits::{self, Limits};

/// Domain separation of the baseline signature.
const DOMAIN: &[u8] = b"leadq billing baseline v1\0";

/// What billing depends on, for one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Ingest limits and daily quota.
    pub limits: Limits,
    /// Each job kind's mode: `enabled`, `shadow` or `disabled`.
    pub kinds: BTreeMap<String, String>,
}

/// The configuration of `tenant` now.
pub async fn live(pool: &PgPool, tenant: Uuid) -> Result<Config, sqlx::Error> {
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    live_in(&mut tx, tenant).await
}

/// [`live`] in a transaction acting for `tenant` (its snapshot, when it keeps one).
async fn live_in(tx: &mut sqlx::PgConnection, tenant: Uuid) -> Result<Config, sqlx::Error> {
    let limits = limits::get_in(&mut *tx, tenant).await?;
    let set: Vec<(String, String)> =
        sqlx::query_as("select kind, mode from tenant_job_kinds where tenant_id = $1")
            .bind(tenant)
            .fetch_all(&mut *tx)
            .await?;
    let mut kinds: BTreeMap<String, String> = crate::kinds::names()
        .into_iter()
        .map(|k| (k.to_owned(), "enabled".to_owned()))
        .collect();
    kinds.extend(set);
    Ok(Config { limits, kinds })
}

/// The signed bytes of a baseline.
fn signed_bytes(
    tenant: Uuid,
    taken_at: DateTime<Utc>,
    actor: &str,
    reason: &str,
    config: &serde_json::Value,
) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "tenant_id": tenant, "taken_at": taken_at.to_rfc3339(), "actor": actor,
        "reason": reason, "config": config,
    }))
    .unwrap_or_default()
}

fn mac(key: &[u8; 32], bytes: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(DOMAIN);
    m.update(bytes);
    m.finalize().into_bytes().to_vec()
}

/// One tenant baselined.
#[derive(Debug, Clone, Serialize)]
pub struct Baselined {
    /// Tenant slug.
    pub tenant: String,
    /// The baseline's id.
    pub baseline_id: i64,
    /// What was recorded.
    pub config: Config,
}

/// Baselines every active tenant (or only `only`), signed with `keys`' current key; audited
/// in each tenant's trail as `billing.baseline`.
pub async fn baseline(
    pool: &PgPool,
    keys: &Keyring,
    who: Actor<'_>,
    only: Option<&str>,
    reason: &str,
) -> Result<Vec<Baselined>, OpsError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 || reason.contains('\0') {
        return Err(OpsError::Invalid(
            "a reason of 1-500 characters is required".into(),
        ));
    }
    let tenants = tenants(pool, only).await?;
    let key = keys.current();
    let mut done = Vec::new();
    for (tenant, slug) in tenants {
        // One snapshot, and its time by the database's clock: the reconciliation replays the
        // audited changes after `taken_at` onto this configuration, so the two must agree. Read
        // apart and stamped by this host's clock, a change committed in between (or a skewed
        // clock) showed as drift at the next reconciliation.
        let mut tx = db::begin_snapshot(pool, Scope::Tenant(tenant)).await?;
        let taken_at: DateTime<Utc> = sqlx::query_scalar("select now()")
            .fetch_one(&mut *tx)
            .await?;
        // Microseconds, as PostgreSQL keeps them: the signed time reads back the same.
        let taken_at = taken_at.trunc_subsecs(6);
        let config = live_in(&mut tx, tenant).await?;
        let json = serde_json::to_value(&config).map_err(|e| OpsError::Invalid(e.to_string()))?;
        let sig = mac(
            &key.key,
            &signed_bytes(tenant, taken_at, who.actor, reason, &json),
        );
        let id: i64 = sqlx::query_scalar(
            "insert into billing_baselines (tenant_id, taken_at, actor, reason, config, kid, mac)
             values ($1, $2, $3, $4, $5, $6, $7) returning id",
        )
        .bind(tenant)
        .bind(taken_at)
        .bind(who.actor)
        .bind(reason)
        .bind(&json)
        .bind(&key.kid)
        .bind(&sig)
        .fetch_one(&mut *tx)
        .await?;
        Auditor {
            tenant_id: Some(tenant),
            actor: who.actor,
            correlation_id: who.correlation_id,
        }
        .entry("billing.baseline", &format!("tenant:{tenant}"))
        .details(serde_json::json!({"baseline_id": id, "reason": reason, "config": json}))
        .record(&mut *tx)
        .await?;
        tx.commit().await?;
        done.push(Baselined {
            tenant: slug,
            baseline_id: id,
            config,
        });
    }
    Ok(done)
}

/// Active tenants by slug, or only `only` (refused when unknown).
async fn tenants(pool: &PgPool, only: Option<&str>) -> Result<Vec<(Uuid, String)>, OpsError> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "select id, slug from tenants
          where status = 'active' and ($1::text is null or slug = $1) order by slug",
    )
    .bind(only)
    .fetch_all(pool)
    .await?;
    if let (Some(slug), true) = (only, rows.is_empty()) {
        return Err(OpsError::Invalid(format!(
            "no active tenant with slug {slug:?}"
        )));
    }
    Ok(rows)
}

/// One difference between what billing expects and what is configured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Tenant slug.
    pub tenant: String,
    /// Tenant id.
    pub tenant_id: Uuid,
    /// `limits`, a job kind, or `baseline`.
    pub kind: String,
    /// `limits_drift`, `entitlement_drift`, `baseline_tampered` or `usage_gap`.
    pub code: &'static str,
    /// What the baseline and the audited changes say.
    pub expected: serde_json::Value,
    /// What is configured.
    pub actual: serde_json::Value,
}

/// What a reconciliation found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The UTC day whose usage was reconciled.
    pub day: NaiveDate,
    /// Tenants compared with a baseline.
    pub checked: usize,
    /// Tenants without a baseline (created after the last one), by slug.
    pub without_baseline: Vec<String>,
    /// Every difference, by tenant slug.
    pub findings: Vec<Finding>,
}

#[derive(sqlx::FromRow)]
struct BaselineRow {
    taken_at: DateTime<Utc>,
    actor: String,
    reason: String,
    config: serde_json::Value,
    kid: String,
    mac: Vec<u8>,
}

/// The last complete UTC day: the usage a scheduled reconciliation looks at.
pub fn yesterday() -> NaiveDate {
    Utc::now().date_naive() - chrono::TimeDelta::days(1)
}

/// The kinds whose usage is reconciled: what a tenant is billed for.
const BILLED_KINDS: &[&str] = &[crate::kinds::LEAD_SCORE];

/// Reconciles every active tenant (or only `only`): its configuration against its latest
/// baseline, and its usage on `day`; each finding is audited in the tenant's trail as
/// `billing.discrepancy` by `who`.
pub async fn reconcile(
    pool: &PgPool,
    queue: &Queue,
    keys: &Keyring,
    who: Actor<'_>,
    only: Option<&str>,
    day: NaiveDate,
) -> Result<Report, OpsError> {
    let mut accepted = Vec::new();
    for kind in BILLED_KINDS {
        accepted.push((*kind, queue.accepted(kind, day).await?));
    }
    let mut report = Report {
        day,
        checked: 0,
        without_baseline: Vec::new(),
        findings: Vec::new(),
    };
    for (tenant, slug) in tenants(pool, only).await? {
        // One snapshot for the baseline, the changes replayed onto it and the live
        // configuration: a change committed between those reads is in all of them or in none.
        let mut tx = db::begin_snapshot(pool, Scope::Tenant(tenant)).await?;
        let base: Option<BaselineRow> = sqlx::query_as(
            "select taken_at, actor, reason, config, kid, mac from billing_baselines
              where tenant_id = $1 order by id desc limit 1",
        )
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await?;
        let mut found = Vec::new();
        for (kind, counts) in &accepted {
            let n = counts.get(&tenant).copied().unwrap_or(0);
            if let Some(f) = usage_gap(&mut tx, queue, (tenant, &slug), kind, day, n).await? {
                found.push(f);
            }
        }
        let Some(base) = base else {
            tx.commit().await?;
            audit_findings(pool, who, tenant, &found).await?;
            report.findings.extend(found);
            report.without_baseline.push(slug);
            continue;
        };
        report.checked += 1;
        let genuine = keys.get(&base.kid).is_some_and(|k| {
            let bytes = signed_bytes(
                tenant,
                base.taken_at,
                &base.actor,
                &base.reason,
                &base.config,
            );
            bool::from(subtle::ConstantTimeEq::ct_eq(
                &mac(&k.key, &bytes)[..],
                &base.mac[..],
            ))
        });
        let expected = serde_json::from_value::<Config>(base.config.clone()).ok();
        match (genuine, expected) {
            (true, Some(mut expected)) => {
                replay(&mut tx, tenant, base.taken_at, &mut expected).await?;
                let actual = live_in(&mut tx, tenant).await?;
                tx.commit().await?;
                compare((tenant, &slug), &expected, &actual, &mut found);
            }
            _ => found.push(Finding {
                tenant: slug.clone(),
                tenant_id: tenant,
                kind: "baseline".into(),
                code: "baseline_tampered",
                expected: serde_json::json!({"signed_by": base.kid}),
                actual: base.config.clone(),
            }),
        }
        audit_findings(pool, who, tenant, &found).await?;
        report.findings.extend(found);
    }
    Ok(report)
}

/// Audits `found` in the tenant's trail, one `billing.discrepancy` per finding.
async fn audit_findings(
    pool: &PgPool,
    who: Actor<'_>,
    tenant: Uuid,
    found: &[Finding],
) -> Result<(), OpsError> {
    if found.is_empty() {
        return Ok(());
    }
    let mut tx = db::begin(pool, Scope::Tenant(tenant)).await?;
    let auditor = Auditor {
        tenant_id: Some(tenant),
        actor: who.actor,
        correlation_id: who.correlation_id,
    };
    for f in found {
        auditor
            .entry("billing.discrepancy", &format!("tenant:{tenant}"))
            .outcome(f.code)
            .details(serde_json::json!({
                "kind": f.kind, "expected": f.expected, "actual": f.actual,
            }))
            .record(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// A `usage_gap` when `accepted` jobs of `kind` exceed the runs recorded for jobs enqueued on
/// `day` plus the tenant's jobs still waiting (ready or held) in the queue.
async fn usage_gap(
    tx: &mut sqlx::PgConnection,
    queue: &Queue,
    (tenant, slug): (Uuid, &str),
    kind: &str,
    day: NaiveDate,
    accepted: u64,
) -> Result<Option<Finding>, OpsError> {
    if accepted == 0 {
        return Ok(None);
    }
    let start = day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let end = start + chrono::TimeDelta::days(1);
    // A job enqueued on the day started on it or later: the range keeps this an index read.
    let recorded: i64 = sqlx::query_scalar(
        "select count(*) from job_runs
          where tenant_id = $1 and kind = $2 and last_started_at >= $3
            and enqueued_at >= $3 and enqueued_at < $4",
    )
    .bind(tenant)
    .bind(kind)
    .bind(start)
    .bind(end)
    .fetch_one(tx)
    .await?;
    let waiting = queue.tenant_state(kind, tenant).await?.backlog;
    let accounted = u64::try_from(recorded).unwrap_or(0) + waiting;
    Ok((accepted > accounted).then(|| Finding {
        tenant: slug.to_owned(),
        tenant_id: tenant,
        kind: kind.to_owned(),
        code: "usage_gap",
        expected: serde_json::json!({"accepted": accepted, "day": day}),
        actual: serde_json::json!({"recorded": recorded, "waiting": waiting}),
    }))
}

/// The label pairs this process has published a discrepancy count for.
static PUBLISHED: std::sync::Mutex<std::collections::BTreeSet<(String, String)>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Publishes `report` as `leadq_billing_discrepancies{tenant,kind}`: the count per label pair,
/// and 0 for every pair an earlier reconciliation of this process published and this one did
/// not find (a fixed discrepancy clears its alert).
pub async fn publish(report: &Report, labels: &crate::tenant_labels::TenantLabels) {
    use leadq_platform::metrics as m;
    let mut now: BTreeMap<(String, String), f64> = BTreeMap::new();
    for f in &report.findings {
        let Some(tenant) = labels.label(f.tenant_id).await else {
            continue;
        };
        *now.entry((tenant, f.kind.clone())).or_default() += 1.0;
    }
    let mut published = PUBLISHED.lock().unwrap_or_else(|p| p.into_inner());
    for (tenant, kind) in published.iter() {
        if !now.contains_key(&(tenant.clone(), kind.clone())) {
            metrics::gauge!(m::BILLING_DISCREPANCIES, m::label::TENANT => tenant.clone(),
                m::label::KIND => kind.clone())
            .set(0.0);
        }
    }
    for ((tenant, kind), n) in &now {
        metrics::gauge!(m::BILLING_DISCREPANCIES, m::label::TENANT => tenant.clone(),
            m::label::KIND => kind.clone())
        .set(*n);
        published.insert((tenant.clone(), kind.clone()));
    }
}

/// Sets every count this process published to 0: called when it stops leading the scheduler.
/// The reconciliation runs on the leader only; a former leader kept exporting its last counts
/// beside the new leader's, and the alert (which sums them) stayed on after the fix.
pub fn withdraw() {
    use leadq_platform::metrics as m;
    let mut published = PUBLISHED.lock().unwrap_or_else(|p| p.into_inner());
    for (tenant, kind) in std::mem::take(&mut *published) {
        metrics::gauge!(m::BILLING_DISCREPANCIES, m::label::TENANT => tenant,
            m::label::KIND => kind)
        .set(0.0);
    }
}

/// Applies the audited changes made since `since` to `expected`, in the order they were made.
async fn replay(
    tx: &mut sqlx::PgConnection,
    tenant: Uuid,
    since: DateTime<Utc>,
    expected: &mut Config,
) -> Result<(), sqlx::Error> {
    let changes: Vec<(String, String, serde_json::Value)> = sqlx::query_as(
        "select action, subject, details from audit_log
          where tenant_id = $1 and at > $2
            and action in ('billing.limit_update', 'tenant.kind_mode')
          order by id",
    )
    .bind(tenant)
    .bind(since)
    .fetch_all(tx)
    .await?;
    for (action, subject, details) in changes {
        match action.as_str() {
            "billing.limit_update" => {
                if let Ok(new) = serde_json::from_value::<Limits>(details["new"].clone()) {
                    expected.limits = new;
                }
            }
            _ => {
                if let (Some(kind), Some(mode)) =
                    (subject.strip_prefix("kind:"), details["mode"].as_str())
                {
                    expected.kinds.insert(kind.to_owned(), mode.to_owned());
                }
            }
        }
    }
    Ok(())
}

fn compare(
    (tenant_id, slug): (Uuid, &str),
    expected: &Config,
    actual: &Config,
    found: &mut Vec<Finding>,
) {
    if expected.limits != actual.limits {
        found.push(Finding {
            tenant: slug.to_owned(),
            tenant_id,
            kind: "limits".into(),
            code: "limits_drift",
            expected: serde_json::json!(expected.limits),
            actual: serde_json::json!(actual.limits),
        });
    }
    for (kind, mode) in &actual.kinds {
        let want = expected.kinds.get(kind).map_or("enabled", String::as_str);
        if want != mode {
            found.push(Finding {
                tenant: slug.to_owned(),
                tenant_id,
                kind: kind.clone(),
                code: "entitlement_drift",
                expected: serde_json::json!(want),
                actual: serde_json::json!(mode),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(per_second: i32, lead_score: &str) -> Config {
        Config {
            limits: Limits {
                ingest_per_second: per_second,
                ..Limits::default()
            },
            kinds: [("lead_score".to_owned(), lead_score.to_owned())].into(),
        }
    }

    #[test]
    fn differences_are_findings_and_equal_configs_are_not() {
        let mut found = Vec::new();
        compare(
            (Uuid::nil(), "t"),
            &config(50, "enabled"),
            &config(50, "enabled"),
            &mut found,
        );
        assert!(found.is_empty());
        compare(
            (Uuid::nil(), "t"),
            &config(50, "enabled"),
            &config(500, "shadow"),
            &mut found,
        );
        let codes: Vec<_> = found.iter().map(|f| (f.kind.as_str(), f.code)).collect();
        assert_eq!(
            codes,
            [
                ("limits", "limits_drift"),
                ("lead_score", "entitlement_drift")
            ]
        );
    }

    #[test]
    fn the_signature_covers_every_field() {
        let key = [7u8; 32];
        let t = Utc::now();
        let c = serde_json::json!({"a": 1});
        let one = mac(&key, &signed_bytes(Uuid::nil(), t, "operator:a", "r", &c));
        assert_ne!(
            one,
            mac(&key, &signed_bytes(Uuid::nil(), t, "operator:b", "r", &c))
        );
        assert_ne!(
            one,
            mac(&key, &signed_bytes(Uuid::nil(), t, "operator:a", "r2", &c))
        );
        assert_ne!(
            one,
            mac(
                &key,
                &signed_bytes(
                    Uuid::nil(),
                    t,
                    "operator:a",
                    "r",
                    &serde_json::json!({"a": 2})
                )
            )
        );
    }
}
