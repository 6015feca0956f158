//! Following the change notifications that keep short-lived caches honest.
//!
//! The hot paths keep what authorization and admission read (API keys, tenant status,
//! entitlements, limits) for a couple of seconds. A change to any row such an answer came from
//! fires a trigger (`migrations/*_authz_invalidation.sql`, and `tenant_limits` in
//! `*_tenant_refs_without_row_locks.sql`) whose `NOTIFY` on [`CHANNEL`] names the tenant, or
//! `*` for a change that concerns every tenant. Each process listens on a connection of its
//! own ([`follow`]) and drops what the change may have made stale, normally milliseconds after
//! it commits. A lost connection may have missed changes: the caches are cleared when it is
//! lost and again once listening resumes; and no answer outlives its cache's TTL anyway.

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use uuid::Uuid;

/// The `NOTIFY` channel of the invalidation triggers.
pub const CHANNEL: &str = "leadq_authz";

/// What a notification says to drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Everything about one tenant.
    Tenant(Uuid),
    /// Everything: a change that concerns every tenant, or changes that may have been missed.
    Everything,
}

impl Change {
    /// The change a notification's payload names (`*`, or anything unexpected: everything).
    pub fn of(payload: &str) -> Self {
        payload.parse().map_or(Self::Everything, Self::Tenant)
    }

    /// Whether an answer about `tenant` may be stale after this change.
    pub fn concerns(self, tenant: Uuid) -> bool {
        match self {
            Self::Tenant(t) => t == tenant,
            Self::Everything => true,
        }
    }
}

/// Calls `on` with every change until the task is dropped; reconnects after a lost
/// connection, calling `on(Change::Everything)` (notifications may have been missed).
pub async fn follow(pool: PgPool, on: impl Fn(Change) + Send + Sync) {
    loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(CHANNEL).await {
                Ok(()) => {
                    on(Change::Everything);
                    tracing::debug!("Following authorization changes.");
                    drain(&mut listener, &on).await;
                }
                Err(error) => tracing::warn!(error = %error,
                    "Could not listen for authorization changes; answers expire after the TTL."),
            },
            Err(error) => tracing::warn!(error = %error,
                "Could not connect to listen for authorization changes; answers expire after the TTL."),
        }
        on(Change::Everything);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn drain(listener: &mut PgListener, on: &impl Fn(Change)) {
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => on(Change::of(n.payload())),
            // The connection was lost and is being re-established: changes may have been
            // missed.
            Ok(None) => on(Change::Everything),
            Err(error) => {
                tracing::warn!(error = %error, "Lost the authorization change listener.");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_names_a_tenant_or_everything() {
        let t = Uuid::new_v4();
        assert_eq!(Change::of(&t.to_string()), Change::Tenant(t));
        assert_eq!(Change::of("*"), Change::Everything);
        assert_eq!(Change::of("garbage"), Change::Everything);
        assert!(Change::Tenant(t).concerns(t));
        assert!(!Change::Tenant(t).concerns(Uuid::new_v4()));
        assert!(Change::Everything.concerns(t));
    }
}
