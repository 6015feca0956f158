//! `crm_sync` against HubSpot answers that are odd but possible: a custom id property's values
//! as sent, a contact id PostgreSQL cannot store, a body far larger than any HubSpot sends. The
//! usual answers (200, 207, 429, 401, 5xx) are in `crm.rs`.

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::crm::{
    app_with_crm, app_with_crm_keyed, completed_run, hot_lead, hubspot_accepting, token, upserts,
    wait_synced, UPSERT,
};

/// A tenant whose contacts are keyed by a property of its own: HubSpot answers the value as it
/// was sent, and the lead's sync keeps the contact's id (an erasure deletes the contact by it).
/// Results were matched in lower case while leads were looked up as sent: `Lead-42` was marked
/// synced without its id, and its erasure later never reached the CRM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_id_propertys_results_are_matched_as_sent_and_keep_the_contacts_id() {
    let (server, _) = hubspot_accepting("pat-na1-55555555-6666").await;
    let app = app_with_crm_keyed(
        &server,
        token("pat-na1-55555555-6666"),
        Some("leadq_id"),
        &[],
    )
    .await;
    let worker = app.spawn_worker().await;
    assert_eq!(
        app.post_lead(app.key(), &hot_lead("Lead-42", "mixed@example.com"))
            .await
            .status(),
        202
    );
    let crm_id = wait_synced(&app, "Lead-42").await;
    assert!(!crm_id.is_empty(), "synced without the contact's id");
    let sent = upserts(&server).await;
    assert_eq!(sent[0]["inputs"][0]["id"], "Lead-42", "{sent:?}");
    assert_eq!(sent[0]["inputs"][0]["idProperty"], "leadq_id");
    worker.stop().await;
    app.stop().await;
}

/// HubSpot's answer names a contact id PostgreSQL cannot store (NUL): the record is synced
/// without it, and the batch's bookkeeping commits. It used to fail the whole batch's
/// transaction as a transient `db_error`, re-sending every lead of it on each attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_id_postgresql_cannot_store_is_not_kept_and_fails_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(UPSERT))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": "COMPLETE",
            "results": [{"id": "1\u{0}2", "properties": {"email": "nul@example.com"}}],
            "startedAt": "2026-11-23T10:00:00.000Z", "completedAt": "2026-11-23T10:00:00.100Z"})))
        .mount(&server)
        .await;
    let app = app_with_crm(&server, token("pat-na1-77777777-8888")).await;
    let worker = app.spawn_worker().await;
    assert_eq!(
        app.post_lead(app.key(), &hot_lead("tg-nul-id", "nul@example.com"))
            .await
            .status(),
        202
    );
    assert_eq!(wait_synced(&app, "tg-nul-id").await, "");
    let run = completed_run(&app, "tg-nul-id").await;
    assert_eq!(run.1, 1, "{run:?}");
    worker.stop().await;
    app.stop().await;
}

/// An answer larger than any HubSpot gives (a proxy streaming a never-ending body) is not read
/// into the worker's memory: a 200 still means every record was written, so the lead is synced,
/// without the contact's id the body would have named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_too_large_to_be_hubspots_is_not_read() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(UPSERT))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": "COMPLETE",
            "results": [{"id": "1234", "properties": {"email": "big@example.com"}}],
            "padding": "x".repeat(5 * 1024 * 1024)})))
        .mount(&server)
        .await;
    let app = app_with_crm(&server, token("pat-na1-99999999-0000")).await;
    let worker = app.spawn_worker().await;
    assert_eq!(
        app.post_lead(app.key(), &hot_lead("tg-big", "big@example.com"))
            .await
            .status(),
        202
    );
    assert_eq!(
        wait_synced(&app, "tg-big").await,
        "",
        "the 5 MiB body was read"
    );
    worker.stop().await;
    app.stop().await;
}

/// HubSpot refuses a batch whole (400) when one input is invalid: the batch is split until the
/// bad input is alone, and only it fails. (Every lead of the batch was failed for good,
/// `crm_rejected`, for one bad neighbour.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_whole_for_one_input_fails_that_input_only() {
    struct RefusesBad;
    impl wiremock::Respond for RefusesBad {
        fn respond(&self, req: &wiremock::Request) -> ResponseTemplate {
            let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let inputs = body["inputs"].as_array().cloned().unwrap_or_default();
            let ids: Vec<&str> = inputs.iter().filter_map(|i| i["id"].as_str()).collect();
            if ids.iter().any(|id| id.contains("bad")) {
                return ResponseTemplate::new(400).set_body_json(json!({
                    "status": "error", "category": "VALIDATION_ERROR",
                    "message": "Property values were not valid", "correlationId": "c-1"}));
            }
            let results: Vec<_> = ids
                .iter()
                .enumerate()
                .map(|(n, id)| json!({"id": format!("70{n}"), "properties": {"email": id}}))
                .collect();
            ResponseTemplate::new(200).set_body_json(json!({"status": "COMPLETE",
                "results": results, "startedAt": "2026-11-23T10:00:00.000Z",
                "completedAt": "2026-11-23T10:00:00.100Z"}))
        }
    }
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(UPSERT))
        .respond_with(RefusesBad)
        .mount(&server)
        .await;
    let app = app_with_crm(&server, token("pat-na1-99999999-0000")).await;
    for (id, email) in [
        ("tg-good-1", "one@example.com"),
        ("tg-bad", "bad@example.com"),
        ("tg-good-2", "two@example.com"),
    ] {
        assert_eq!(
            app.post_lead(app.key(), &hot_lead(id, email))
                .await
                .status(),
            202
        );
    }
    let worker = app.spawn_worker().await;
    for id in ["tg-good-1", "tg-good-2"] {
        assert!(
            !wait_synced(&app, id).await.is_empty(),
            "{id} synced with its id"
        );
    }
    let failed: (Option<i64>, Option<String>) = leadq_testkit::wait_for(
        "the bad lead failed",
        std::time::Duration::from_secs(30),
        || async {
            sqlx::query_as::<_, (Option<i64>, Option<String>)>(
                "select s.failed_version, s.failure_code from crm_sync_state s
                   join leads l on l.id = s.lead_id where l.external_id = 'tg-bad'",
            )
            .fetch_optional(&mut *app.own().await)
            .await
            .unwrap()
            .filter(|s| s.0.is_some())
        },
    )
    .await;
    assert_eq!(failed.1.as_deref(), Some("crm_rejected"));
    worker.stop().await;
    app.stop().await;
}

/// A record HubSpot keeps refusing with a retryable answer (a 207 naming it under another
/// category than validation) fails for good after ten claims, with the code it was refused
/// with: it was asked again by every retry, then by the reconcile every five minutes, without
/// end. And a 429 that names no known policy and no wait uses an attempt like any transient
/// failure (it was snoozed ten seconds at a time, for ever, without using one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_refused_again_and_again_fails_for_good_and_an_unknown_429_uses_attempts() {
    struct Refuses;
    impl wiremock::Respond for Refuses {
        fn respond(&self, req: &wiremock::Request) -> ResponseTemplate {
            let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let ids: Vec<String> = body["inputs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["id"].as_str().map(str::to_owned))
                .collect();
            let (stuck, fine): (Vec<_>, Vec<_>) = ids.iter().partition(|i| i.contains("stuck"));
            let results: Vec<_> = fine
                .iter()
                .map(|id| json!({"id": "801", "properties": {"email": id}}))
                .collect();
            let errors: Vec<_> = stuck
                .iter()
                .map(|id| {
                    json!({"status": "error", "category": "CONFLICT",
                    "message": "busy", "context": {"ids": [id]}})
                })
                .collect();
            let status = if errors.is_empty() { 200 } else { 207 };
            ResponseTemplate::new(status).set_body_json(json!({"status": "COMPLETE",
                "results": results, "errors": errors, "numErrors": errors.len(),
                "startedAt": "2026-11-23T10:00:00.000Z",
                "completedAt": "2026-11-23T10:00:00.100Z"}))
        }
    }
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(UPSERT))
        .respond_with(Refuses)
        .mount(&server)
        .await;
    // Once: a 429 of no known policy, with no Retry-After.
    Mock::given(method("POST"))
        .and(path(UPSERT))
        .respond_with(
            ResponseTemplate::new(429).set_body_json(json!({"status": "error",
            "message": "slow down", "policyName": "SOMETHING_NEW"})),
        )
        .with_priority(1)
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let app = app_with_crm(&server, token("pat-na1-12121212-3434")).await;
    let worker = app.spawn_worker().await;
    assert_eq!(
        app.post_lead(app.key(), &hot_lead("tg-new-429", "new429@example.com"))
            .await
            .status(),
        202
    );
    wait_synced(&app, "tg-new-429").await;
    let run = completed_run(&app, "tg-new-429").await;
    assert_eq!(run.1, 2, "the 429 used an attempt: {run:?}");

    assert_eq!(
        app.post_lead(app.key(), &hot_lead("tg-stuck", "stuck@example.com"))
            .await
            .status(),
        202
    );
    let code: String = leadq_testkit::wait_for(
        "the refused record failed for good",
        std::time::Duration::from_secs(60),
        || async {
            sqlx::query_scalar::<_, Option<String>>(
                "select s.failure_code from crm_sync_state s
                   join leads l on l.id = s.lead_id
                  where l.external_id = 'tg-stuck' and s.failed_version is not null",
            )
            .fetch_optional(&mut *app.own().await)
            .await
            .unwrap()
            .flatten()
        },
    )
    .await;
    assert_eq!(code, "crm_partial_failure");
    worker.stop().await;
    app.stop().await;
}

/// A claim records as synced the version of the data it read, not a newer wish it locked: a
/// lead written and committed between the claim's snapshot and its lock on the CRM row is
/// locked at its new wish (version 2) but read as it was (version 1). Recording 2 as synced
/// kept version 2's data from the CRM for good: its own job then found it "already synced".
/// The state the claim sees in that moment is made here by hand: the wish at 2, the lead at 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_records_the_version_it_read_not_a_newer_wish() {
    let (server, _) = hubspot_accepting("pat-na1-99999999-0000").await;
    let app = app_with_crm(&server, token("pat-na1-99999999-0000")).await;
    let tenant = app.tenant.tenant_id;
    let worker = app.spawn_worker().await;
    assert_eq!(
        app.post_lead(app.key(), &hot_lead("tg-snap", "snap@example.com"))
            .await
            .status(),
        202
    );
    wait_synced(&app, "tg-snap").await;
    // Version 2, its sync held back.
    app.queue.pause_tenant("crm_sync", tenant).await.unwrap();
    let mut update = hot_lead("tg-snap", "snap@example.com");
    update["answers"]["need"] = json!("call me tomorrow");
    assert_eq!(app.post_lead(app.key(), &update).await.status(), 202);
    let state = || async {
        let row: (i64, i64) = sqlx::query_as(
            "select s.wanted_version, s.synced_version
               from crm_sync_state s join leads l on l.id = s.lead_id
              where l.external_id = 'tg-snap'",
        )
        .fetch_one(&mut *app.own().await)
        .await
        .unwrap();
        row
    };
    leadq_testkit::wait_for(
        "the wish for version 2",
        std::time::Duration::from_secs(20),
        || async { (state().await == (2, 1)).then_some(()) },
    )
    .await;
    let mut tx = app.own().await;
    sqlx::query("update leads set version = 1 where external_id = 'tg-snap'")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    app.queue.resume_tenant("crm_sync", tenant).await.unwrap();
    leadq_testkit::wait_for(
        "the second upsert",
        std::time::Duration::from_secs(20),
        || async { (upserts(&server).await.len() == 2).then_some(()) },
    )
    .await;
    // Settled: still wanted at 2, synced at the version of what was sent.
    leadq_testkit::wait_for(
        "the batch settled",
        std::time::Duration::from_secs(20),
        || async {
            let claimed: Option<uuid::Uuid> = sqlx::query_scalar(
                "select claimed_by from crm_sync_state s join leads l on l.id = s.lead_id
              where l.external_id = 'tg-snap'",
            )
            .fetch_one(&mut *app.own().await)
            .await
            .unwrap();
            claimed.is_none().then_some(())
        },
    )
    .await;
    assert_eq!(state().await, (2, 1), "version 2 recorded as synced");
    worker.stop().await;
    app.stop().await;
}
