//! Consumer-side authorization: the worker never trusts the tenant id in a message.
//!
//! A signature proves a leadq producer wrote the envelope; it does not prove the producer was
//! right to. So before any handler runs, [`AuthorizeLayer`] re-checks, in one query, that the
//! tenant exists and is active, that it is entitled to the job kind, and that `user_id` is a
//! live principal *of that tenant* holding the scope the action needs. Any failure is
//! permanent: the job is dead-lettered as `unauthorized` (audited by the worker's observer and
//! counted in `leadq_security_events_total{kind="unauthorized"}`), never retried.
//!
//! Principals ([`crate::kinds::Principal`], [`crate::kinds::accepts`]): `api_key:<uuid>`, a
//! key of the tenant, not revoked, not expired when the message was created, with the kind's
//! scope ([`crate::kinds::required_scope`]); `webhook:<source>`, a delivery to the tenant's own
//! webhook endpoint, only while that integration is configured for the tenant;
//! `system:<kind>`, a follow-up (`crm_sync`) enqueued by a handler after its own job passed
//! this check; and `operator:<name>` for operator-only kinds
//! ([`crate::kinds::operator_only`]), which no tenant key may cause: the operator must be
//! registered (`leadq operator add`), enabled, and hold the kind's permission
//! ([`crate::kinds::required_permission`]). Operator messages are enqueued only by the
//! operator CLI, and like every message they must carry a valid signature.
//!
//! The worker keeps what the query read for a couple of seconds, dropped the moment a row it
//! came from changes ([`cache`], where the revocation bound is stated).

pub mod cache;

use std::task::{Context, Poll};

use apalis_core::error::BoxDynError;
use apalis_core::task::Task;
use futures::future::BoxFuture;
use futures::FutureExt;
use leadq_platform::db::{self, Scope};
use leadq_platform::metrics as m;
use sqlx::PgPool;

use crate::abuse::CrossTenantWatch;
use crate::kinds::{self, Principal};
use cache::AuthzCache;
use leadq_queue::backend::Job;
use leadq_queue::envelope::JobMeta;
use leadq_queue::error::JobError;

/// Why a job was not authorized (logged; the dead-letter reason is always `unauthorized`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No such tenant.
    #[error("unknown tenant")]
    UnknownTenant,
    /// The tenant is suspended.
    #[error("tenant is not active")]
    TenantInactive,
    /// The tenant is not entitled to this kind.
    #[error("job kind is disabled for the tenant")]
    KindDisabled,
    /// `user_id` is not a principal form we know.
    #[error("unknown principal form")]
    UnknownPrincipal,
    /// The principal does not exist, belongs to another tenant, is revoked or was expired.
    #[error("principal is not an active principal of the tenant")]
    NotTenantPrincipal,
    /// The principal lacks the scope the action needs.
    #[error("principal lacks the scope the action needs")]
    InsufficientScope,
    /// `operator:<name>` names no registered operator.
    #[error("operator is not registered")]
    UnknownOperator,
    /// The operator is registered but disabled.
    #[error("operator is disabled")]
    OperatorDisabled,
    /// The operator lacks the permission the kind needs.
    #[error("operator lacks the permission the action needs")]
    OperatorLacksPermission,
}

/// The tenant's entitlement to a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Runs normally.
    Enabled,
    /// Runs without side effects (the handler records what it would have done).
    Shadow,
}

/// What the database says of a job's tenant, kind and principal.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Facts {
    status: String,
    mode: String,
    scopes: Option<Vec<String>>,
    key_found: bool,
    /// When the key expires (an expired key is refused for messages created after).
    key_expires_at: Option<chrono::DateTime<chrono::Utc>>,
    integration_configured: bool,
    /// The registered operator's permissions (`None`: no such operator).
    operator_permissions: Option<Vec<String>>,
    operator_disabled: bool,
}

impl Facts {
    /// The facts as of the message's creation: a key that had expired by then is not found.
    fn at(mut self, created: chrono::DateTime<chrono::Utc>) -> Self {
        if self.key_expires_at.is_some_and(|e| e <= created) {
            self.key_found = false;
        }
        self
    }
}

/// Checks `meta` against the database, or against what `cache` kept of it. `Ok` carries the
/// tenant's mode for the kind.
pub async fn authorize(
    pool: &PgPool,
    cache: Option<&AuthzCache>,
    meta: &JobMeta,
) -> Result<Result<Mode, Denied>, sqlx::Error> {
    let Some(principal) = Principal::parse(&meta.user_id) else {
        return Ok(Err(Denied::UnknownPrincipal));
    };
    if !kinds::accepts(&meta.action, principal) {
        return Ok(Err(Denied::UnknownPrincipal));
    }
    let (tenant, kind, user) = (meta.tenant_id, meta.action.as_str(), meta.user_id.as_str());
    let facts = match cache {
        None => read_facts(pool, meta, principal).await?,
        Some(c) => match c.get(tenant, kind, user) {
            Some(facts) => facts,
            None => {
                let _turn = c.turn(tenant, kind, user).await;
                // The job before this one in the turn may have read and kept it.
                match c.get(tenant, kind, user) {
                    Some(facts) => facts,
                    None => {
                        let reading = c.reading();
                        let facts = read_facts(pool, meta, principal).await?;
                        c.insert(tenant, kind, user, facts.clone(), reading);
                        facts
                    }
                }
            }
        },
    };
    let facts = facts.map(|f| f.at(meta.timestamp));
    Ok(decide(&meta.action, &meta.user_id, facts.as_ref()))
}

/// What the database says of `meta`'s tenant, kind and principal, in one query.
async fn read_facts(
    pool: &PgPool,
    meta: &JobMeta,
    principal: Principal<'_>,
) -> Result<Option<Facts>, sqlx::Error> {
    let key_id = match principal {
        Principal::ApiKey(id) => Some(id),
        _ => None,
    };
    let webhook = match principal {
        Principal::Webhook(source) => Some(source),
        _ => None,
    };
    let operator = match principal {
        Principal::Operator(name) => Some(name),
        _ => None,
    };
    let facts: Option<Facts> = sqlx::query_as(
        "select t.status,
                coalesce((select mode from tenant_job_kinds
                           where tenant_id = t.id and kind = $2), 'enabled') as mode,
                k.scopes,
                k.id is not null as key_found,
                k.expires_at as key_expires_at,
                case $4
                    when 'chatwoot' then i.chatwoot_account_id is not null
                                         and i.chatwoot_secret is not null
                    when 'telegram' then i.telegram_secret_sha256 is not null
                    else false
                end as integration_configured,
                o.permissions as operator_permissions,
                coalesce(o.disabled, false) as operator_disabled
           from tenants t
           left join api_keys k
             on k.id = $3 and k.tenant_id = t.id and k.revoked_at is null
           left join tenant_integrations i on i.tenant_id = t.id
           left join operators o on o.name = $5
          where t.id = $1",
    )
    .bind(meta.tenant_id)
    .bind(&meta.action)
    .bind(key_id)
    .bind(webhook)
    .bind(operator)
    .fetch_optional(&mut *db::begin(pool, Scope::Tenant(meta.tenant_id)).await?)
    .await?;
    Ok(facts)
}

/// The decision, given what the database says of the tenant, the kind and the principal
/// (`None`: no such tenant). Pure, so the whole table is unit-tested.
fn decide(action: &str, user_id: &str, facts: Option<&Facts>) -> Result<Mode, Denied> {
    let Some(principal) = Principal::parse(user_id) else {
        return Err(Denied::UnknownPrincipal);
    };
    if !kinds::accepts(action, principal) {
        return Err(Denied::UnknownPrincipal);
    }
    let Some(f) = facts else {
        return Err(Denied::UnknownTenant);
    };
    if f.status != "active" {
        return Err(Denied::TenantInactive);
    }
    let mode = match f.mode.as_str() {
        "enabled" => Mode::Enabled,
        "shadow" => Mode::Shadow,
        _ => return Err(Denied::KindDisabled),
    };
    match principal {
        // An operator must be registered, enabled and hold the kind's permission (read in
        // the same query, so a disabled operator is refused from the next job on).
        Principal::Operator(_) => {
            let Some(held) = f.operator_permissions.as_deref() else {
                return Err(Denied::UnknownOperator);
            };
            if f.operator_disabled {
                return Err(Denied::OperatorDisabled);
            }
            let needed = kinds::required_permission(action);
            if !needed.is_some_and(|p| held.iter().any(|have| have == p)) {
                return Err(Denied::OperatorLacksPermission);
            }
            Ok(mode)
        }
        // Follow-up jobs were enqueued by a handler that ran this check on its own job.
        Principal::System(_) => Ok(mode),
        Principal::Webhook(_) if f.integration_configured => Ok(mode),
        Principal::Webhook(_) => Err(Denied::NotTenantPrincipal),
        Principal::ApiKey(_) => {
            if !f.key_found {
                return Err(Denied::NotTenantPrincipal);
            }
            let needed = kinds::required_scope(action);
            let scopes = f.scopes.as_deref().unwrap_or_default();
            if !needed.is_some_and(|s| scopes.iter().any(|have| have == s)) {
                return Err(Denied::InsufficientScope);
            }
            Ok(mode)
        }
    }
}

/// Runs [`authorize`] before the handler. Put it innermost, around the handler.
#[derive(Debug, Clone)]
pub struct AuthorizeLayer {
    pool: PgPool,
    cache: Option<AuthzCache>,
    watch: Option<CrossTenantWatch>,
}

impl AuthorizeLayer {
    /// Authorizes against `pool`, reading it for every job.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            cache: None,
            watch: None,
        }
    }

    /// Keeps the answers in `cache` (shared by every kind of the process; someone must run
    /// [`AuthzCache::follow`] for it).
    pub fn cached(mut self, cache: AuthzCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Also reports operator jobs, and refused jobs of API keys, to the cross-tenant watch
    /// ([`crate::abuse`]).
    pub fn watching(mut self, watch: CrossTenantWatch) -> Self {
        self.watch = Some(watch);
        self
    }
}

/// Whether a job of `user_id` (refused or not) is reported to the cross-tenant watch:
/// operators always, since they legitimately span tenants and only the count tells a sweep;
/// API keys only when refused, since a key can only ever act for its own tenant.
fn watched(user_id: &str, refused: bool) -> bool {
    match Principal::parse(user_id) {
        Some(Principal::Operator(_)) => true,
        Some(Principal::ApiKey(_)) => refused,
        _ => false,
    }
}

impl<S> tower::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            pool: self.pool.clone(),
            cache: self.cache.clone(),
            watch: self.watch.clone(),
        }
    }
}

/// See [`AuthorizeLayer`].
#[derive(Debug, Clone)]
pub struct Authorize<S> {
    inner: S,
    pool: PgPool,
    cache: Option<AuthzCache>,
    watch: Option<CrossTenantWatch>,
}

impl<S, P> tower::Service<Task<Job<P>>> for Authorize<S>
where
    S: tower::Service<Task<Job<P>>> + Clone + Send + 'static,
    S::Error: Into<BoxDynError>,
    S::Future: Send,
    S::Response: Send,
    P: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<S::Response, BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut task: Task<Job<P>>) -> Self::Future {
        // Keep the instance that was polled ready; leave a fresh clone for the next call.
        let fresh = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, fresh);
        let pool = self.pool.clone();
        let cache = self.cache.clone();
        let watch = self.watch.clone();
        async move {
            let meta = &task.args.meta;
            let clock = std::time::Instant::now();
            let decision = authorize(&pool, cache.as_ref(), meta).await;
            metrics::histogram!(m::JOB_PHASE_SECONDS, m::label::KIND => meta.action.clone(),
                m::label::PHASE => m::phase::AUTHORIZE)
            .record(clock.elapsed().as_secs_f64());
            let denied = match decision {
                Ok(Ok(mode)) => {
                    task.args.meta.shadow = mode == Mode::Shadow;
                    None
                }
                Ok(Err(d)) => Some(d),
                Err(e) => return Err(JobError::from(e).into()),
            };
            let meta = &task.args.meta;
            if let Some(w) = watch.filter(|_| watched(&meta.user_id, denied.is_some())) {
                w.saw(
                    &meta.user_id,
                    &meta.tenant_id.to_string(),
                    &meta.correlation_id,
                )
                .await;
            }
            if let Some(d) = denied {
                metrics::counter!(m::SECURITY_EVENTS_TOTAL, m::label::KIND => "unauthorized")
                    .increment(1);
                // `alerted`: dead-lettered as `unauthorized`, which the worker alerts on.
                tracing::error!(denied = %d, user_id = %meta.user_id, alerted = true,
                    "Refusing a job its principal may not run for this tenant.");
                return Err(JobError::permanent("unauthorized", d).into());
            }
            ready.call(task).await.map_err(Into::into)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests;
