//! The authorization decision as a table: every principal form × tenant state × the tenant's
//! mode for the kind × what the database knows of the principal → the decision. Driven
//! through the pure `decide`, with the facts the query would return.

use super::{decide, Denied, Facts, Mode};
use crate::kinds::{CHATWOOT_EVENT, CRM_SYNC, LEAD_SCORE, UPDATE_BILLING_LIMIT};

const KEY: &str = "api_key:6f1c2a7e-6b1b-4f43-9a51-0b8a3c1d2e4f";

/// The facts of an active tenant that runs every kind, knows the key (with `leads:write`)
/// and has both webhooks configured.
fn facts() -> Facts {
    Facts {
        status: "active".into(),
        mode: "enabled".into(),
        scopes: Some(vec!["leads:write".into(), "leads:read".into()]),
        key_found: true,
        key_expires_at: None,
        integration_configured: true,
        operator_permissions: Some(vec!["dlq".into(), "limits".into()]),
        operator_disabled: false,
    }
}

fn with(change: impl FnOnce(&mut Facts)) -> Facts {
    let mut f = facts();
    change(&mut f);
    f
}

/// Every principal form with a kind it may cause.
const ALLOWED: &[(&str, &str)] = &[
    (KEY, LEAD_SCORE),
    ("webhook:telegram", LEAD_SCORE),
    ("webhook:chatwoot", CHATWOOT_EVENT),
    ("system:lead_score", CRM_SYNC),
    ("system:chatwoot_event", CRM_SYNC),
    ("system:scheduler", CRM_SYNC),
    ("operator:ann", UPDATE_BILLING_LIMIT),
];

#[test]
fn every_principal_form_runs_its_own_kinds_for_an_active_entitled_tenant() {
    for (user, kind) in ALLOWED {
        assert_eq!(
            decide(kind, user, Some(&facts())),
            Ok(Mode::Enabled),
            "{user} → {kind}"
        );
        let shadow = with(|f| f.mode = "shadow".into());
        assert_eq!(
            decide(kind, user, Some(&shadow)),
            Ok(Mode::Shadow),
            "{user} → {kind} in shadow mode"
        );
    }
}

#[test]
fn a_principal_form_never_causes_a_kind_outside_its_own() {
    let kinds = [
        LEAD_SCORE,
        CHATWOOT_EVENT,
        CRM_SYNC,
        UPDATE_BILLING_LIMIT,
        "no_such_kind",
    ];
    let users = [
        KEY,
        "webhook:telegram",
        "webhook:chatwoot",
        "webhook:hubspot",
        "system:lead_score",
        "system:crm_sync",
        "operator:ann",
    ];
    for user in users {
        for kind in kinds {
            if ALLOWED.contains(&(user, kind)) {
                continue;
            }
            assert_eq!(
                decide(kind, user, Some(&facts())),
                Err(Denied::UnknownPrincipal),
                "{user} must not cause {kind}"
            );
        }
    }
}

#[test]
fn a_malformed_principal_is_refused_before_anything_else() {
    for user in [
        "",
        "api_key",
        "api_key:not-a-uuid",
        "root",
        "tenant:x",
        "webhook",
    ] {
        // Even where the tenant does not exist: the form is checked first.
        assert_eq!(
            decide(LEAD_SCORE, user, None),
            Err(Denied::UnknownPrincipal),
            "{user:?}"
        );
        assert_eq!(
            decide(LEAD_SCORE, user, Some(&facts())),
            Err(Denied::UnknownPrincipal),
            "{user:?}"
        );
    }
}

#[test]
fn an_unknown_suspended_or_unentitled_tenant_refuses_every_principal() {
    for (user, kind) in ALLOWED {
        assert_eq!(
            decide(kind, user, None),
            Err(Denied::UnknownTenant),
            "{user}"
        );
        for status in ["suspended", "deleted", ""] {
            let f = with(|f| f.status = status.into());
            assert_eq!(
                decide(kind, user, Some(&f)),
                Err(Denied::TenantInactive),
                "{user}"
            );
        }
        for mode in ["disabled", "", "ENABLED"] {
            let f = with(|f| f.mode = mode.into());
            assert_eq!(
                decide(kind, user, Some(&f)),
                Err(Denied::KindDisabled),
                "{user}"
            );
        }
    }
}

#[test]
fn a_tenant_check_comes_before_the_principal_check() {
    // A suspended tenant is reported as such even when its key is gone too.
    let f = with(|f| {
        f.status = "suspended".into();
        f.key_found = false;
    });
    assert_eq!(
        decide(LEAD_SCORE, KEY, Some(&f)),
        Err(Denied::TenantInactive)
    );
}

#[test]
fn an_api_key_must_be_the_tenants_live_key_with_the_kinds_scope() {
    let gone = with(|f| f.key_found = false);
    assert_eq!(
        decide(LEAD_SCORE, KEY, Some(&gone)),
        Err(Denied::NotTenantPrincipal)
    );
    for scopes in [
        None,
        Some(vec![]),
        Some(vec!["leads:read".to_owned(), "admin".into()]),
    ] {
        let f = with(|f| f.scopes = scopes.clone());
        assert_eq!(
            decide(LEAD_SCORE, KEY, Some(&f)),
            Err(Denied::InsufficientScope),
            "{scopes:?}"
        );
    }
}

#[test]
fn a_webhook_runs_only_while_the_tenants_integration_is_configured() {
    let off = with(|f| f.integration_configured = false);
    assert_eq!(
        decide(LEAD_SCORE, "webhook:telegram", Some(&off)),
        Err(Denied::NotTenantPrincipal)
    );
    assert_eq!(
        decide(CHATWOOT_EVENT, "webhook:chatwoot", Some(&off)),
        Err(Denied::NotTenantPrincipal)
    );
}

#[test]
fn operators_and_follow_ups_do_not_depend_on_keys_or_integrations() {
    let bare = with(|f| {
        f.key_found = false;
        f.scopes = None;
        f.integration_configured = false;
    });
    assert_eq!(
        decide(UPDATE_BILLING_LIMIT, "operator:ann", Some(&bare)),
        Ok(Mode::Enabled)
    );
    assert_eq!(
        decide(CRM_SYNC, "system:lead_score", Some(&bare)),
        Ok(Mode::Enabled)
    );
}

#[test]
fn an_operator_must_be_registered_enabled_and_hold_the_kinds_permission() {
    let unknown = with(|f| f.operator_permissions = None);
    assert_eq!(
        decide(UPDATE_BILLING_LIMIT, "operator:ann", Some(&unknown)),
        Err(Denied::UnknownOperator)
    );
    let disabled = with(|f| f.operator_disabled = true);
    assert_eq!(
        decide(UPDATE_BILLING_LIMIT, "operator:ann", Some(&disabled)),
        Err(Denied::OperatorDisabled)
    );
    for held in [vec![], vec!["dlq".to_owned(), "console".into()]] {
        let f = with(|f| f.operator_permissions = Some(held.clone()));
        assert_eq!(
            decide(UPDATE_BILLING_LIMIT, "operator:ann", Some(&f)),
            Err(Denied::OperatorLacksPermission),
            "{held:?}"
        );
    }
    let limits_only = with(|f| f.operator_permissions = Some(vec!["limits".into()]));
    assert_eq!(
        decide(UPDATE_BILLING_LIMIT, "operator:ann", Some(&limits_only)),
        Ok(Mode::Enabled)
    );
}

#[test]
fn a_key_that_had_expired_when_the_message_was_made_is_not_found() {
    let made = chrono::Utc::now();
    let expires = |at| with(|f| f.key_expires_at = Some(at)).at(made);
    let hour = chrono::Duration::hours(1);
    assert!(expires(made + hour).key_found, "still valid when made");
    assert!(!expires(made - hour).key_found, "expired before");
    assert!(!expires(made).key_found, "expired at that instant");
    assert_eq!(
        decide(LEAD_SCORE, KEY, Some(&expires(made - hour))),
        Err(Denied::NotTenantPrincipal)
    );
}
