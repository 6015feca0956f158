//! Settings of the platform's edge: abuse detection across tenants, the limits on failed and
//! unauthenticated requests per source address, the webhook budget per tenant, and who may
//! read `/metrics`. Every default is one a production deployment can run with; see
//! `docs/security.md` ("An edge that holds") for why each is what it is.

use std::net::SocketAddr;
use std::time::Duration;

use super::Reader;
use crate::secret::Secret;

/// See the module docs. All windows are sliding or GCRA, kept in Redis (shared by replicas).
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// Distinct tenants one principal may act on (or be refused for) within
    /// [`Self::cross_tenant_window`] before a `cross_tenant_activity` security event
    /// (`LEADQ_CROSS_TENANT_THRESHOLD`, default 10).
    pub cross_tenant_threshold: u32,
    /// `LEADQ_CROSS_TENANT_WINDOW_SECS`, default 60.
    pub cross_tenant_window: Duration,
    /// Failed authentications from one source address within [`Self::auth_failure_window`]
    /// that lock it out (`LEADQ_AUTH_FAILURE_LIMIT`, default 20).
    pub auth_failure_limit: u32,
    /// `LEADQ_AUTH_FAILURE_WINDOW_SECS`, default 60.
    pub auth_failure_window: Duration,
    /// How long a locked-out address is answered 429 (`LEADQ_AUTH_LOCKOUT_SECS`, default 300).
    pub auth_lockout: Duration,
    /// Requests without credentials per second per source address
    /// (`LEADQ_UNAUTHENTICATED_PER_SEC`, default 10), with a burst of
    /// `LEADQ_UNAUTHENTICATED_BURST` (default 30). Probes (`/healthz`, `/readyz`) are exempt.
    pub unauthenticated_per_sec: u32,
    /// See [`Self::unauthenticated_per_sec`].
    pub unauthenticated_burst: u32,
    /// Webhook deliveries per second per tenant above which they are enqueued at low priority
    /// (`LEADQ_WEBHOOK_BUDGET_PER_SEC`, default 50; burst `LEADQ_WEBHOOK_BUDGET_BURST`,
    /// default 200). Never a refusal: Chatwoot does not retry.
    pub webhook_budget_per_sec: u32,
    /// See [`Self::webhook_budget_per_sec`].
    pub webhook_budget_burst: u32,
    /// Erasure requests (`DELETE /v1/leads/{id}`, `POST /v1/erasures`) per second per tenant
    /// (`LEADQ_ERASURES_PER_SEC`, default 5), with a burst of `LEADQ_ERASURES_BURST` (default
    /// 50); above it, 429 `rate_limited` with `Retry-After`. Each erasure reads every tenant's
    /// queued jobs of two kinds from Redis (an erasure finds a person's jobs by their payload),
    /// whether or not the id names anything, so one tenant's loop of them loads every tenant's
    /// queue.
    pub erasures_per_sec: u32,
    /// See [`Self::erasures_per_sec`].
    pub erasures_burst: u32,
    /// Take the client address from the last `X-Forwarded-For` entry (the one the proxy in
    /// front of us appended) instead of the TCP peer (`LEADQ_TRUST_FORWARDED_FOR`, default
    /// false: a client could forge the header and dodge its limits).
    pub trust_forwarded_for: bool,
    /// `LEADQ_METRICS_TOKEN` (or `_FILE`): `/metrics` answers only with `Authorization: Bearer
    /// <token>`.
    pub metrics_token: Option<Secret>,
    /// `LEADQ_METRICS_ADDR`: serve `/metrics` on this address only (not on the API's own).
    pub metrics_addr: Option<SocketAddr>,
    /// `LEADQ_REQUEST_TIMEOUT_SECS` (default 15): a request still unanswered after this long
    /// is answered 503 `timeout`, and counted as such.
    pub request_timeout: Duration,
}

pub(super) fn read(r: &mut Reader<'_>) -> EdgeSettings {
    let metrics_addr = r.get("LEADQ_METRICS_ADDR").map(str::to_owned);
    let metrics_addr = metrics_addr.and_then(|raw| match raw.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            r.problems.push(format!(
                "LEADQ_METRICS_ADDR={raw:?} is not a socket address such as 127.0.0.1:9090"
            ));
            None
        }
    });
    let metrics_token = r.secret("LEADQ_METRICS_TOKEN", false);
    if metrics_token
        .as_ref()
        .is_some_and(|t| t.expose().len() < 32)
    {
        r.problems
            .push("LEADQ_METRICS_TOKEN must be at least 32 characters".into());
    }
    let trust_forwarded_for = match r.get("LEADQ_TRUST_FORWARDED_FOR").unwrap_or("false") {
        "true" | "1" => true,
        "false" | "0" => false,
        other => {
            r.problems.push(format!(
                "LEADQ_TRUST_FORWARDED_FOR={other:?} is not true or false"
            ));
            false
        }
    };
    let n = "a whole number";
    EdgeSettings {
        cross_tenant_threshold: r.positive("LEADQ_CROSS_TENANT_THRESHOLD", 10, n),
        cross_tenant_window: r.secs("LEADQ_CROSS_TENANT_WINDOW_SECS", Duration::from_secs(60)),
        auth_failure_limit: r.positive("LEADQ_AUTH_FAILURE_LIMIT", 20, n),
        auth_failure_window: r.secs("LEADQ_AUTH_FAILURE_WINDOW_SECS", Duration::from_secs(60)),
        auth_lockout: r.secs("LEADQ_AUTH_LOCKOUT_SECS", Duration::from_secs(300)),
        unauthenticated_per_sec: r.positive("LEADQ_UNAUTHENTICATED_PER_SEC", 10, n),
        unauthenticated_burst: r.positive("LEADQ_UNAUTHENTICATED_BURST", 30, n),
        webhook_budget_per_sec: r.positive("LEADQ_WEBHOOK_BUDGET_PER_SEC", 50, n),
        webhook_budget_burst: r.positive("LEADQ_WEBHOOK_BUDGET_BURST", 200, n),
        erasures_per_sec: r.positive("LEADQ_ERASURES_PER_SEC", 5, n),
        erasures_burst: r.positive("LEADQ_ERASURES_BURST", 50, n),
        trust_forwarded_for,
        metrics_token,
        metrics_addr,
        request_timeout: r.secs("LEADQ_REQUEST_TIMEOUT_SECS", Duration::from_secs(15)),
    }
}
