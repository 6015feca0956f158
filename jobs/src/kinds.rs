//! The job catalogue: every kind, its stable name and its defaults.
//!
//! A kind's string is part of the wire format (queue keys, metrics, audit rows, dashboards):
//! it never changes, whatever the Rust types are called.

use std::time::Duration;

use leadq_platform::config::KindDefaults;

/// Qualify and score a lead.
pub const LEAD_SCORE: &str = "lead_score";
/// Change a tenant's ingest limits and quotas (operators only).
pub const UPDATE_BILLING_LIMIT: &str = "update_billing_limit";
/// React to a Chatwoot conversation, message or contact event.
pub const CHATWOOT_EVENT: &str = "chatwoot_event";
/// Upsert qualified leads into the tenant's CRM.
pub const CRM_SYNC: &str = "crm_sync";
/// Delete an erased lead's contact from the tenant's CRM (GDPR delete).
pub const CRM_ERASE: &str = "crm_erase";

/// Every kind this build knows, with its defaults.
pub const CATALOGUE: &[KindDefaults] = &[
    KindDefaults {
        kind: LEAD_SCORE,
        // Group-committed (`lead::group`): jobs in flight make batches, and the batches, not
        // the jobs, hold connections ([`db_connections`]). At 16 one worker scored one
        // tenant's leads at ~1,600/s, waiting on its slots with a core idle; at 64, ~2,400/s.
        // 50 tenants' leads: ~820/s with 64 (about one job a tenant: batches of one), ~1,650/s
        // with 256, the two cores then busy (docs/bench/processes.md).
        concurrency: 256,
        max_attempts: 5,
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(300),
        timeout: Duration::from_secs(30),
    },
    KindDefaults {
        kind: CHATWOOT_EVENT,
        // Its messages are group-committed like `lead_score` (`lead::group`): jobs in flight
        // make batches. One tenant's messages: ~720/s with 16, ~1,100/s with 64, ~1,700/s
        // with 256 (docs/bench/processes.md); its other events hold a connection each
        // ([`db_connections`]).
        concurrency: 256,
        max_attempts: 8,
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(300),
        timeout: Duration::from_secs(30),
    },
    KindDefaults {
        kind: CRM_SYNC,
        // Each run may carry a batch of up to 100 leads; HubSpot's burst budget is shared by
        // the whole portal, so few in flight per process is plenty.
        concurrency: 4,
        max_attempts: 10,
        backoff_base: Duration::from_secs(2),
        backoff_max: Duration::from_secs(600),
        // HubSpot calls time out after 12 s; a refresh of the OAuth token may come first.
        timeout: Duration::from_secs(30),
    },
    KindDefaults {
        kind: CRM_ERASE,
        // Rare, and HubSpot's burst budget is the tenant's: one or two at a time. An erasure
        // must get through eventually: many attempts, backoff up to an hour.
        concurrency: 2,
        max_attempts: 20,
        backoff_base: Duration::from_secs(5),
        backoff_max: Duration::from_secs(3600),
        timeout: Duration::from_secs(30),
    },
    KindDefaults {
        kind: UPDATE_BILLING_LIMIT,
        concurrency: 2,
        max_attempts: 10,
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(60),
        timeout: Duration::from_secs(30),
    },
];

/// The PostgreSQL connections `concurrency` jobs of `kind` hold at most at once: one a job,
/// except the group-committed kinds. `lead_score`'s writes go through the group commit's
/// [`MAX_WRITERS`] batches, and its only other reads are the authorization lookups a cold
/// cache misses (brief, and queued for a connection when more miss at once:
/// [`LEAD_SCORE_READERS`]). `chatwoot_event`'s messages and contact changes go through the same
/// batches; its conversation states and agents' replies run alone ([`CHATWOOT_EVENT_ALONE`]).
///
/// [`MAX_WRITERS`]: crate::lead::group::MAX_WRITERS
pub fn db_connections(kind: &str, concurrency: usize) -> usize {
    use crate::lead::group::MAX_WRITERS;
    match kind {
        LEAD_SCORE => concurrency.min(MAX_WRITERS + LEAD_SCORE_READERS),
        CHATWOOT_EVENT => concurrency.min(MAX_WRITERS + CHATWOOT_EVENT_ALONE),
        _ => concurrency,
    }
}

/// Connections for `lead_score`'s reads beside its writers: the authorization lookups of a
/// cold cache, a shadow-mode job's transaction, a failed batch's jobs rerun alone.
const LEAD_SCORE_READERS: usize = 8;

/// Connections for `chatwoot_event`'s jobs beside its writers: conversation states, agents'
/// replies, shadow-mode jobs and a failed batch's jobs each hold one
/// while they run (a few milliseconds); more at once queue for one (the pool's acquire
/// timeout is seconds).
const CHATWOOT_EVENT_ALONE: usize = 16;

/// Who caused a job: the parsed form of [`leadq_queue::envelope::Envelope::user_id`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal<'a> {
    /// `api_key:<uuid>`: a tenant's API key.
    ApiKey(uuid::Uuid),
    /// `operator:<name>`: a platform operator.
    Operator(&'a str),
    /// `webhook:<source>`: a verified webhook delivery (`chatwoot`, `telegram`) to the
    /// tenant's own endpoint.
    Webhook(&'a str),
    /// `system:<kind>`: a follow-up job enqueued by a handler of `kind` after it verified its
    /// own job; `system:scheduler`: a job of the platform's recurring maintenance.
    System(&'a str),
}

impl<'a> Principal<'a> {
    /// Parses a `user_id`; `None` for a form leadq does not know.
    pub fn parse(user_id: &'a str) -> Option<Self> {
        let (form, rest) = user_id.split_once(':')?;
        if rest.is_empty() {
            return None;
        }
        Some(match form {
            "api_key" => Principal::ApiKey(rest.parse().ok()?),
            "operator" => Principal::Operator(rest),
            "webhook" => Principal::Webhook(rest),
            "system" => Principal::System(rest),
            _ => return None,
        })
    }
}

/// The `system:<parent>` of the jobs an erasure enqueues (`crm_erase`): whoever asked for the
/// erasure was authorized by the API or the CLI; the follow-up acts for the erasure itself.
pub const ERASURE: &str = "lead_erase";

/// Webhook sources and the kind each may cause.
pub const WEBHOOK_SOURCES: &[(&str, &str)] =
    &[("chatwoot", CHATWOOT_EVENT), ("telegram", LEAD_SCORE)];

/// Whether a principal of this form may cause a job of `kind` at all. (Whether the particular
/// key, operator or integration is live is checked against the database by [`crate::authz`].)
pub fn accepts(kind: &str, principal: Principal<'_>) -> bool {
    match principal {
        Principal::ApiKey(_) => required_scope(kind).is_some(),
        Principal::Operator(_) => operator_only(kind),
        Principal::Webhook(source) => WEBHOOK_SOURCES.contains(&(source, kind)),
        Principal::System(parent) => {
            (kind == CRM_SYNC
                && (parent == LEAD_SCORE || parent == CHATWOOT_EVENT || parent == "scheduler"))
                || (kind == CRM_ERASE && parent == ERASURE)
        }
    }
}

/// Kinds only platform operators (`operator:<name>` principals) may cause.
pub fn operator_only(kind: &str) -> bool {
    kind == UPDATE_BILLING_LIMIT
}

/// The operator permission (`leadq_platform::operators::permission`) an `operator:<name>`
/// principal needs to cause a job of `kind` (`None`: no operator may).
pub fn required_permission(kind: &str) -> Option<&'static str> {
    match kind {
        UPDATE_BILLING_LIMIT => Some(leadq_platform::operators::permission::LIMITS),
        _ => None,
    }
}

/// The API-key scope a principal needs to cause a job of `kind` (`None`: no key may).
pub fn required_scope(kind: &str) -> Option<&'static str> {
    match kind {
        LEAD_SCORE => Some(leadq_platform::apikey::scope::LEADS_WRITE),
        _ => None,
    }
}

/// Whether `kind` is in the catalogue.
pub fn is_known(kind: &str) -> bool {
    CATALOGUE.iter().any(|k| k.kind == kind)
}

/// The kind names.
pub fn names() -> Vec<&'static str> {
    CATALOGUE.iter().map(|k| k.kind).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_principal_form_causes_only_its_kinds() {
        let key = Principal::parse("api_key:6f1c2a7e-6b1b-4f43-9a51-0b8a3c1d2e4f").unwrap();
        assert!(accepts(LEAD_SCORE, key));
        assert!(!accepts(CRM_SYNC, key));
        assert!(!accepts(UPDATE_BILLING_LIMIT, key));
        let cw = Principal::parse("webhook:chatwoot").unwrap();
        assert!(accepts(CHATWOOT_EVENT, cw));
        assert!(!accepts(LEAD_SCORE, cw));
        let tg = Principal::parse("webhook:telegram").unwrap();
        assert!(accepts(LEAD_SCORE, tg) && !accepts(CHATWOOT_EVENT, tg));
        assert!(accepts(
            CRM_SYNC,
            Principal::parse("system:lead_score").unwrap()
        ));
        assert!(!accepts(
            LEAD_SCORE,
            Principal::parse("system:lead_score").unwrap()
        ));
        assert!(!accepts(
            CRM_SYNC,
            Principal::parse("system:crm_sync").unwrap()
        ));
        assert!(accepts(
            UPDATE_BILLING_LIMIT,
            Principal::parse("operator:ann").unwrap()
        ));
        for bad in [
            "",
            "api_key:",
            "api_key:nope",
            "root:x",
            "webhook:",
            "nobody",
        ] {
            assert_eq!(Principal::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn group_committed_kinds_connections_stop_growing_at_their_writers_and_others() {
        let writers = crate::lead::group::MAX_WRITERS;
        for (kind, cap) in [
            (LEAD_SCORE, writers + LEAD_SCORE_READERS),
            (CHATWOOT_EVENT, writers + CHATWOOT_EVENT_ALONE),
        ] {
            assert_eq!(db_connections(kind, 4), 4, "{kind}");
            assert_eq!(db_connections(kind, 256), cap, "{kind}");
            assert_eq!(db_connections(kind, 10_000), cap, "{kind}");
        }
        // Every other kind's job holds a connection while it runs.
        for kind in [CRM_SYNC, CRM_ERASE, UPDATE_BILLING_LIMIT] {
            assert_eq!(db_connections(kind, 300), 300, "{kind}");
        }
    }
}
