//! Erasure carried into the CRM: erasing a lead HubSpot holds enqueues a `crm_erase` job that
//! sends HubSpot's GDPR delete (`POST /crm/v3/objects/contacts/gdpr-delete`, `{"objectId"}`),
//! against a fake HubSpot speaking its real answers: 204 erased, 404 already gone, 429 retried
//! after the window without using an attempt, 401 dead-lettered `crm_unauthorized`. Every
//! answer is in the tenant's audit trail (`crm.erase`), never the person's data.

use std::time::Duration;

use leadq_testkit::{wait_for, TestApp};
use serde_json::{json, Value};
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, Respond, ResponseTemplate};

use crate::crm::{app_with_crm, hot_lead, hubspot_accepting, token, wait_synced};

const GDPR_DELETE: &str = "/crm/v3/objects/contacts/gdpr-delete";

/// HubSpot answers the GDPR delete of contact `crm_id` with `answer`, at most `times`.
async fn answer(server: &MockServer, crm_id: &str, answer: ResponseTemplate, times: u64) {
    Mock::given(method("POST"))
        .and(path(GDPR_DELETE))
        .and(header("authorization", "Bearer pat-na1-erase"))
        .and(body_partial_json(json!({ "objectId": crm_id })))
        .respond_with(answer)
        .up_to_n_times(times)
        .with_priority(1)
        .mount(server)
        .await;
}

fn error(status: u16, category: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({"status": "error", "message": message,
        "correlationId": "c-erase", "category": category}))
}

/// Erases `external_id` through the API; the answer's `crm` part.
async fn erase(app: &TestApp, external_id: &str) -> Value {
    let res = app
        .client
        .delete(format!("{}/v1/leads/{external_id}", app.address))
        .bearer_auth(app.key())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json::<Value>().await.unwrap()["crm"].clone()
}

/// The outcomes audited for the CRM erasure of `crm_id`, in order.
async fn erase_outcomes(app: &TestApp, crm_id: &str) -> Vec<String> {
    sqlx::query_scalar(
        "select outcome from audit_log where action = 'crm.erase' and details->>'crm_id' = $1
          order by id",
    )
    .bind(crm_id)
    .fetch_all(&mut *app.own().await)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_lead_is_gdpr_deleted_from_the_crm_whatever_hubspot_answers() {
    let (server, _) = hubspot_accepting("pat-na1-erase").await;
    let app = app_with_crm(&server, token("pat-na1-erase")).await;
    let worker = app.spawn_worker().await;
    let leads = [
        ("tg-204", "gone@example.com"),
        ("tg-404", "already@example.com"),
        ("tg-429", "later@example.com"),
        ("tg-401", "refused@example.com"),
    ];
    let mut crm_ids = Vec::new();
    for (id, email) in leads {
        assert_eq!(
            app.post_lead(app.key(), &hot_lead(id, email))
                .await
                .status(),
            202
        );
        crm_ids.push(wait_synced(&app, id).await);
    }
    answer(&server, &crm_ids[0], ResponseTemplate::new(204), 1).await;
    answer(
        &server,
        &crm_ids[1],
        error(404, "OBJECT_NOT_FOUND", "resource not found"),
        1,
    )
    .await;
    let limited = ResponseTemplate::new(429)
        .insert_header("retry-after", "1")
        .set_body_json(
            json!({"status": "error", "message": "You have reached your \
            ten_secondly_rolling limit.", "errorType": "RATE_LIMIT", "correlationId": "c-429",
            "policyName": "TEN_SECONDLY_ROLLING"}),
        );
    answer(&server, &crm_ids[2], limited, 1).await;
    answer(&server, &crm_ids[2], ResponseTemplate::new(204), 1).await;
    answer(
        &server,
        &crm_ids[3],
        error(
            401,
            "EXPIRED_AUTHENTICATION",
            "The OAuth token used to make this call expired",
        ),
        1,
    )
    .await;

    for (id, _) in leads {
        let crm = erase(&app, id).await;
        assert_eq!(crm["status"], "requested", "{id}: {crm}");
        assert!(crm["job_id"].is_string());
    }

    let done = |outcomes: &'static [&'static str], crm_id: String| {
        let app = &app;
        async move {
            wait_for("the CRM's answers audited", Duration::from_secs(30), || {
                let crm_id = crm_id.clone();
                async move {
                    let got = erase_outcomes(app, &crm_id).await;
                    (got == outcomes).then_some(())
                }
            })
            .await
        }
    };
    done(&["ok"], crm_ids[0].clone()).await;
    done(&["already_gone"], crm_ids[1].clone()).await;
    done(&["crm_rate_limited", "ok"], crm_ids[2].clone()).await;
    done(&["crm_unauthorized"], crm_ids[3].clone()).await;
    let c = app.queue.counts("crm_erase").await.unwrap();
    assert_eq!((c.done, c.dead), (3, 1), "{c:?}");

    // HubSpot got exactly the deletes (by its own ids, never an email), the 429 one twice.
    let deletes: Vec<Value> = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == GDPR_DELETE)
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(deletes.len(), 5, "{deletes:?}");
    assert!(deletes.iter().all(|d| d.get("idProperty").is_none()));
    let audit: Vec<Value> =
        sqlx::query_scalar("select details from audit_log where action = 'crm.erase'")
            .fetch_all(&mut *app.own().await)
            .await
            .unwrap();
    assert!(
        !format!("{audit:?}").contains("example.com"),
        "no personal data"
    );

    // A lead whose sync was wanted but recorded no id (here: HubSpot refused its record):
    // erased by e-mail, which travels sealed and never reaches the audit trail.
    let refused = "invalid-erase@example.com";
    assert_eq!(
        app.post_lead(app.key(), &hot_lead("tg-noid", refused))
            .await
            .status(),
        202
    );
    wait_for("the refused sync", Duration::from_secs(30), || async {
        let c = app.queue.counts("crm_sync").await.unwrap();
        (c.dead >= 1).then_some(())
    })
    .await;
    Mock::given(method("POST"))
        .and(path(GDPR_DELETE))
        .and(body_partial_json(
            json!({"objectId": refused, "idProperty": "email"}),
        ))
        .respond_with(ResponseTemplate::new(204))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    assert_eq!(erase(&app, "tg-noid").await["status"], "requested");
    wait_for("the erasure by e-mail", Duration::from_secs(30), || async {
        let by: Vec<(String, Value)> = sqlx::query_as(
            "select outcome, details from audit_log where action = 'crm.erase'
              and details->>'by' = 'email'",
        )
        .fetch_all(&mut *app.own().await)
        .await
        .unwrap();
        (by.len() == 1 && by[0].0 == "ok").then_some(())
    })
    .await;
    let queued: Vec<String> = sqlx::query_scalar("select details::text from audit_log")
        .fetch_all(&mut *app.own().await)
        .await
        .unwrap();
    assert!(
        !queued.iter().any(|d| d.contains(refused)),
        "no address audited"
    );

    // A cold lead is never synced: its erasure asks nothing of the CRM.
    let cold = json!({"external_id": "tg-cold", "source": "telegram", "name": "Cold"});
    assert_eq!(app.post_lead(app.key(), &cold).await.status(), 202);
    wait_for("the cold lead scored", Duration::from_secs(20), || async {
        (app.get("/v1/leads/tg-cold", app.key()).await.status() == 200).then_some(())
    })
    .await;
    assert_eq!(
        erase(&app, "tg-cold").await,
        json!({"status": "not_synced", "job_id": null})
    );
    worker.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_in_all_four_stores_is_erased_from_each_and_the_answer_says_where() {
    let (server, _) = hubspot_accepting("pat-na1-erase").await;
    let app = app_with_crm(&server, token("pat-na1-erase")).await;
    // The CRM: the lead synced to HubSpot.
    let worker = app.spawn_worker().await;
    assert_eq!(
        app.post_lead(app.key(), &hot_lead("tg-all", "all@example.com"))
            .await
            .status(),
        202
    );
    let crm_id = wait_synced(&app, "tg-all").await;
    // A dead letter: a job of the lead that fails for good (its e-mail is not sealed).
    let bad = json!({"external_id": "tg-all", "source": "telegram", "email": "all@example.com"});
    let job = leadq_testkit::lead_job(
        app.tenant.tenant_id,
        &app.key_actor(),
        "m-bad",
        "c-bad",
        bad,
    );
    app.queue.enqueue(vec![job]).await.unwrap();
    wait_for("the dead letter", Duration::from_secs(20), || async {
        (app.queue.counts("lead_score").await.unwrap().dead == 1).then_some(())
    })
    .await;
    worker.stop().await;
    // A queued job: an update of the lead, with no worker running.
    let mut update = hot_lead("tg-all", "all@example.com");
    update["answers"]["need"] = json!("call me tomorrow");
    assert_eq!(app.post_lead(app.key(), &update).await.status(), 202);
    assert_eq!(app.queue.counts("lead_score").await.unwrap().pending, 1);
    answer(&server, &crm_id, ResponseTemplate::new(204), 1).await;

    let res = app
        .client
        .delete(format!("{}/v1/leads/tg-all", app.address))
        .bearer_auth(app.key())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let report: Value = res.json().await.unwrap();
    eprintln!("erase report: {report}");
    assert_eq!(report["lead_deleted"], true, "PostgreSQL: {report}");
    assert_eq!(
        report["jobs_removed"], 2,
        "the queued job and the dead letter: {report}"
    );
    assert_eq!(report["jobs_running"], 0);
    assert_eq!(report["crm"]["status"], "requested", "{report}");
    let counts = app.queue.counts("lead_score").await.unwrap();
    assert_eq!((counts.pending, counts.dead), (0, 0));
    assert_eq!(app.get("/v1/leads/tg-all", app.key()).await.status(), 404);

    // The CRM erasure runs: HubSpot deletes the contact, the answer is audited.
    let worker = app.spawn_worker().await;
    wait_for("the CRM erasure", Duration::from_secs(30), || async {
        (erase_outcomes(&app, &crm_id).await == ["ok"]).then_some(())
    })
    .await;
    worker.stop().await;
    app.stop().await;
}

/// A tenant keyed by a property of its own, a lead with no e-mail and no contact id recorded
/// (its first sync in flight, or its answer lost): the erasure asks HubSpot to delete the
/// contact by that property. (It answered `not_synced` and asked HubSpot nothing, though the
/// contact may be there.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_keyed_by_the_tenants_own_property_is_erased_by_it() {
    let (server, _) = hubspot_accepting("pat-na1-erase").await;
    let app =
        crate::crm::app_with_crm_keyed(&server, token("pat-na1-erase"), Some("leadq_id"), &[])
            .await;
    let tenant = app.tenant.tenant_id;
    let mut tx = app.db.owner_tx(tenant).await;
    let lead: uuid::Uuid = sqlx::query_scalar(
        "insert into leads (tenant_id, external_id, source) values ($1, 'tg-phone-only', 'telegram')
         returning id",
    )
    .bind(tenant)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "insert into crm_sync_state (tenant_id, lead_id, wanted_version, synced_version)
         values ($1, $2, 1, 0)",
    )
    .bind(tenant)
    .bind(lead)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    Mock::given(method("POST"))
        .and(path(GDPR_DELETE))
        .and(body_partial_json(
            json!({"objectId": "tg-phone-only", "idProperty": "leadq_id"}),
        ))
        .respond_with(ResponseTemplate::new(204))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    let worker = app.spawn_worker().await;
    assert_eq!(erase(&app, "tg-phone-only").await["status"], "requested");
    wait_for(
        "the erasure by the tenant's property",
        Duration::from_secs(30),
        || async {
            let outcome: Option<String> = sqlx::query_scalar(
                "select outcome from audit_log where action = 'crm.erase'
              and details->>'by' = 'id_property'",
            )
            .fetch_optional(&mut *app.own().await)
            .await
            .unwrap();
            (outcome.as_deref() == Some("ok")).then_some(())
        },
    )
    .await;
    worker.stop().await;
    app.stop().await;
}

/// HubSpot's GDPR delete against the fake's contacts: by the contact's id, or by the
/// property the body names (`email`); 204 when a contact went, 404 when none matched.
struct GdprDelete(crate::crm::FakeHubSpot);

impl Respond for GdprDelete {
    fn respond(&self, req: &wiremock::Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let object = body["objectId"].as_str().unwrap_or("").to_owned();
        let mut contacts = self.0.contacts.lock().unwrap();
        let before = contacts.len();
        match body["idProperty"].as_str() {
            Some(_) => {
                contacts.remove(&object.to_ascii_lowercase());
            }
            None => contacts.retain(|_, id| *id != object),
        }
        ResponseTemplate::new(if contacts.len() < before { 204 } else { 404 })
    }
}

/// A fake HubSpot that keeps contacts (upserts and GDPR deletes), and an app using it.
async fn hubspot_keeping_contacts() -> (MockServer, crate::crm::FakeHubSpot, TestApp) {
    let (server, fake) = hubspot_accepting("pat-na1-erase").await;
    let app = app_with_crm(&server, token("pat-na1-erase")).await;
    Mock::given(method("POST"))
        .and(path(GDPR_DELETE))
        .respond_with(GdprDelete(fake.clone()))
        .mount(&server)
        .await;
    (server, fake, app)
}

/// An upsert HubSpot takes its time over: it answers after `delay` and only then holds the
/// contact (the fake's own upsert, applied when the answer goes). Says when it was asked.
struct SlowUpsert {
    fake: crate::crm::FakeHubSpot,
    delay: Duration,
    asked: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Respond for SlowUpsert {
    fn respond(&self, req: &wiremock::Request) -> ResponseTemplate {
        self.asked.store(true, std::sync::atomic::Ordering::SeqCst);
        // The answer as HubSpot would give it now; the write lands at the end of the delay.
        let snapshot = self.fake.contacts.lock().unwrap().clone();
        let answer = self.fake.respond(req);
        let landed = std::mem::replace(&mut *self.fake.contacts.lock().unwrap(), snapshot);
        let (contacts, delay) = (self.fake.contacts.clone(), self.delay);
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            contacts.lock().unwrap().extend(landed);
        });
        answer.set_delay(self.delay)
    }
}

/// A lead erased while an upsert of it is in flight: the erasure's GDPR delete (by the
/// contact's id) reaches HubSpot first, the upsert lands after it and writes the contact
/// again — so the sync, finding its lead erased when it settles, asks HubSpot to delete the
/// contact once more. (The contact stayed in the CRM for good.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_erased_while_its_sync_is_in_flight_is_erased_from_the_crm_after_it() {
    let (server, fake, app) = hubspot_keeping_contacts().await;
    let worker = app.spawn_worker().await;
    let email = "racing@example.com";
    assert_eq!(
        app.post_lead(app.key(), &hot_lead("tg-race", email))
            .await
            .status(),
        202
    );
    let crm_id = wait_synced(&app, "tg-race").await;
    // The next version's upsert: slow.
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    Mock::given(method("POST"))
        .and(path(crate::crm::UPSERT))
        .respond_with(SlowUpsert {
            fake: fake.clone(),
            delay: Duration::from_secs(3),
            asked: asked.clone(),
        })
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    let mut update = hot_lead("tg-race", email);
    update["answers"]["need"] = json!("call me tomorrow");
    assert_eq!(app.post_lead(app.key(), &update).await.status(), 202);
    wait_for("the upsert in flight", Duration::from_secs(20), || async {
        asked
            .load(std::sync::atomic::Ordering::SeqCst)
            .then_some(())
    })
    .await;

    assert_eq!(erase(&app, "tg-race").await["status"], "requested");
    wait_for(
        "the contact gone from the CRM after the upsert landed",
        Duration::from_secs(30),
        || async {
            let held = fake.contacts.lock().unwrap().contains_key(email);
            let erasures = erase_outcomes(&app, &crm_id).await.len();
            (!held && erasures >= 2).then_some(())
        },
    )
    .await;
    // Still gone once everything settled.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!fake.contacts.lock().unwrap().contains_key(email));
    worker.stop().await;
    app.stop().await;
}

/// A lead erased while a sync holds its claim, where that sync never settles (its worker died
/// mid-call, or Redis failed it then): the erasure itself asks HubSpot again once the claim has
/// ended, when the upsert has landed or never will. (Only the sync's settle asked, and a sync
/// that never settled left a re-created contact in the CRM.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_erased_under_a_live_claim_is_erased_again_once_the_claim_ends() {
    let (server, _, app) = hubspot_keeping_contacts().await;
    let worker = app.spawn_worker().await;
    assert_eq!(
        app.post_lead(app.key(), &hot_lead("tg-claimed", "claimed@example.com"))
            .await
            .status(),
        202
    );
    let crm_id = wait_synced(&app, "tg-claimed").await;
    // A batch of a worker that is gone holds the lead's row for 3 more seconds.
    let mut tx = app.own().await;
    sqlx::query(
        "update crm_sync_state set claimed_by = gen_random_uuid(),
                claim_until = now() + interval '3 seconds'",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let erased_at = std::time::Instant::now();
    assert_eq!(erase(&app, "tg-claimed").await["status"], "requested");
    let deletes = || async {
        server
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path() == GDPR_DELETE)
            .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap())
            .collect::<Vec<_>>()
    };
    wait_for("the first delete", Duration::from_secs(20), || async {
        (erase_outcomes(&app, &crm_id).await == ["ok"]).then_some(())
    })
    .await;
    let sent = wait_for(
        "the delete after the claim",
        Duration::from_secs(30),
        || async {
            let sent = deletes().await;
            (sent.len() == 2).then_some(sent)
        },
    )
    .await;
    assert!(
        erased_at.elapsed() >= Duration::from_secs(3),
        "asked again before the claim ended"
    );
    // By the name the upsert uses (an upsert landing after the delete by id makes a new
    // contact, under a new id), not by the old id.
    assert_eq!(
        sent[1],
        json!({"objectId": "claimed@example.com", "idProperty": "email"}),
        "{sent:?}"
    );
    worker.stop().await;
    app.stop().await;
}
