//! Chatwoot messages and contact changes through the lead group commit: each message is
//! stored once, counts towards its lead's score once, and is audited with its event, as it
//! was in a transaction of its own; a message whose batch fails is never half-written; contact
//! changes are audited each, with nothing stored besides the lead.

use leadq_jobs::lead::group::GroupCommit;
use leadq_jobs::lead::{Attached, Inbound, LeadInput};
use leadq_queue::envelope::JobMeta;
use leadq_testkit::{spawn_app, TestApp};

fn meta(app: &TestApp, message_id: &str) -> JobMeta {
    crate::lead_store::job_meta(app, message_id, "webhook:chatwoot", "chatwoot_event")
}

/// Chatwoot message `id` from contact `contact`, as its `chatwoot_event` job hands it over.
fn message(contact: &str, id: i64) -> (LeadInput, Attached) {
    let input = LeadInput {
        external_id: contact.into(),
        source: "chatwoot".into(),
        name: Some("Ada Lovelace".into()),
        username: None,
        phone: None,
        email: None,
        answers: Default::default(),
        campaign: None,
        next_answer: None,
    };
    let inbound = Inbound {
        event: chatwoot_event("message_created"),
        source: "chatwoot",
        source_id: id.to_string(),
        conversation_id: Some(7),
        content: Some(format!("hello {id}")),
        sent_at: chrono::Utc::now(),
    };
    (input, Attached::Message(inbound))
}

/// Chatwoot's `contact_updated` for contact `contact` (its `i`th), as its `chatwoot_event` job
/// hands it over: a new email, audited under the event, nothing stored besides the lead.
fn contact_change(contact: &str, i: i64) -> (LeadInput, Attached) {
    let (mut input, _) = message(contact, i);
    input.email = Some(format!("{contact}@example.com"));
    (input, Attached::Event(chatwoot_event("contact_updated")))
}

/// Chatwoot's event `name`, as a `chatwoot_event` job's audit entry names it.
fn chatwoot_event(name: &str) -> leadq_jobs::lead::Event {
    leadq_jobs::lead::Event {
        kind: "chatwoot_event",
        action: "chatwoot.event",
        event: name.into(),
    }
}

/// Runs every `(contact, message id)` through `group` at once; returns each job's outcome.
async fn run_all(
    app: &TestApp,
    group: &GroupCommit,
    jobs: &[(String, i64)],
) -> Vec<Result<Option<leadq_jobs::lead::store::Applied>, leadq_queue::JobError>> {
    let tasks: Vec<_> = jobs
        .iter()
        .map(|(contact, id)| {
            let (group, m) = (group.clone(), meta(app, &format!("m{id}-{contact}")));
            let (input, attached) = message(contact, *id);
            tokio::spawn(async move { group.apply(m, input, attached).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Twenty new contacts' first messages, three messages of one contact, and two messages of
/// another of which the first arrives twice, all at once: every job applied, each message
/// stored once (sealed), counted once in its lead's score (`3 or more messages` for three,
/// `wrote in chat` for two: a replay counted again would make it three), one `chatwoot.event`
/// audit row per job, written in fewer transactions than jobs, and the trail verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_ready_together_are_committed_together_and_each_counted_once() {
    let app = spawn_app().await;
    let group = GroupCommit::new(app.db.pool.clone(), app.sealer());
    let mut jobs: Vec<(String, i64)> = (0..20).map(|i| (format!("cw-n{i}"), 1000 + i)).collect();
    jobs.extend([2000, 2001, 2002].map(|id| ("cw-three".to_owned(), id)));
    jobs.extend([3000, 3001, 3000].map(|id| ("cw-replay".to_owned(), id)));
    for (i, outcome) in run_all(&app, &group, &jobs).await.into_iter().enumerate() {
        let applied = outcome.unwrap_or_else(|e| panic!("job {i} failed: {e:?}"));
        assert!(applied.is_some(), "job {i} applied");
    }

    let mut tx = app.own().await;
    let counts: Vec<(String, i64, String)> = sqlx::query_as(
        "select l.external_id, count(m.source_id), l.reasons::text
           from leads l left join lead_messages m on m.lead_id = l.id
          group by l.external_id, l.reasons::text order by l.external_id",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    assert_eq!(counts.len(), 22, "one lead per contact: {counts:?}");
    for (contact, messages, reasons) in &counts {
        let (want, reason) = match contact.as_str() {
            "cw-three" => (3, "3 or more messages in chat"),
            "cw-replay" => (2, "wrote in chat"),
            _ => (1, "wrote in chat"),
        };
        assert_eq!(*messages, want, "{contact}'s messages");
        assert!(reasons.contains(reason), "{contact} scored {reasons}");
    }
    let content: String = sqlx::query_scalar(
        "select content from lead_messages where source = 'chatwoot' and source_id = '2001'",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(
        app.sealer()
            .open(
                app.tenant.tenant_id,
                leadq_jobs::pii::field::CONTENT,
                &content
            )
            .unwrap(),
        "hello 2001",
        "the text is stored sealed"
    );
    tx.commit().await.unwrap();
    // One audit row per job, the replay's too.
    crate::lead_store::assert_grouped_and_verified(&app, "chatwoot.event", 26).await;
    app.stop().await;
}

/// A message for a lead whose stored contact no longer opens fails its batch and then its run
/// alone (`sealed_data_unreadable`), and leaves nothing behind: no message, no audit row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_lead_cannot_be_read_is_not_half_written() {
    let app = spawn_app().await;
    let group = GroupCommit::new(app.db.pool.clone(), app.sealer());
    let first = run_all(&app, &group, &[("cw-bad".to_owned(), 1)]).await;
    assert!(
        first[0].as_ref().unwrap().is_some(),
        "the first message is applied"
    );
    app.seal_email_under_lost_key("cw-bad").await;

    let second = run_all(&app, &group, &[("cw-bad".to_owned(), 2)]).await;
    let e = second[0].as_ref().expect_err("the unreadable lead fails");
    assert_eq!(e.code(), "sealed_data_unreadable", "{e:?}");
    let (messages, audited): (i64, i64) = sqlx::query_as(
        "select (select count(*) from lead_messages),
                (select count(*) from audit_log where action = 'chatwoot.event')",
    )
    .fetch_one(&mut *app.own().await)
    .await
    .unwrap();
    assert_eq!(
        (messages, audited),
        (1, 1),
        "only the first message and its audit row"
    );
    app.stop().await;
}

/// Contact changes (Chatwoot's `contact_created`, `contact_updated`) go through the group
/// commit as [`Attached::Event`]: each applied, each audited once under its event, nothing
/// stored besides the lead, and the jobs ready together written in fewer transactions than
/// jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_changes_ready_together_are_committed_together_and_audited_each() {
    let app = spawn_app().await;
    let group = GroupCommit::new(app.db.pool.clone(), app.sealer());
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (group, m) = (group.clone(), meta(&app, &format!("c{i}")));
            let (input, attached) = contact_change(&format!("cw-c{i}"), i);
            tokio::spawn(async move { group.apply(m, input, attached).await })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let applied = t
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("job {i}: {e:?}"));
        let applied = applied.expect("applied");
        assert!(
            applied.changed && applied.version == 1,
            "job {i}: {applied:?}"
        );
    }
    let (leads, messages, events): (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from leads where email is not null),
                (select count(*) from lead_messages),
                (select count(*) from audit_log
                  where action = 'chatwoot.event' and details->>'event' = 'contact_updated')",
    )
    .fetch_one(&mut *app.own().await)
    .await
    .unwrap();
    assert_eq!((leads, messages, events), (20, 0, 20));
    crate::lead_store::assert_grouped_and_verified(&app, "chatwoot.event", 20).await;
    app.stop().await;
}

/// A contact change whose lead no longer opens fails the batch it is in; the batch's jobs then
/// run one by one ([`leadq_jobs::lead::handler::alone`]): that change gets its own permanent
/// error and no audit row, every other change is applied and audited once, and the trail
/// verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_change_that_cannot_be_applied_fails_alone_and_the_others_are_audited_once() {
    let app = spawn_app().await;
    let group = GroupCommit::new(app.db.pool.clone(), app.sealer());
    let (input, attached) = contact_change("cw-bad", 0);
    group
        .apply(meta(&app, "c-first"), input, attached)
        .await
        .expect("the first change is applied")
        .expect("applied");
    app.seal_email_under_lost_key("cw-bad").await;

    let tasks: Vec<_> = (1..=12)
        .map(|i| {
            let contact = if i == 6 {
                "cw-bad".to_owned()
            } else {
                format!("cw-ok{i}")
            };
            let (group, m) = (group.clone(), meta(&app, &format!("c{i}")));
            let (input, attached) = contact_change(&contact, i);
            tokio::spawn(async move { group.apply(m, input, attached).await })
        })
        .collect();
    for (i, t) in (1..).zip(tasks) {
        let outcome = t.await.unwrap();
        if i == 6 {
            let e = outcome.expect_err("the unreadable lead fails");
            assert_eq!(e.code(), "sealed_data_unreadable", "{e:?}");
        } else {
            let applied = outcome
                .unwrap_or_else(|e| panic!("job {i}: {e:?}"))
                .expect("applied");
            assert_eq!(applied.version, 1, "job {i}: {applied:?}");
        }
    }
    let (applied, audited, audited_bad): (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from leads where external_id like 'cw-ok%'),
                (select count(*) from audit_log
                  where action = 'chatwoot.event' and details->>'event' = 'contact_updated'),
                (select count(*) from audit_log a join leads l on a.subject = 'lead:' || l.id
                  where l.external_id = 'cw-bad')",
    )
    .fetch_one(&mut *app.own().await)
    .await
    .unwrap();
    // Eleven changes and the first one, each audited once; the failed change not at all.
    assert_eq!((applied, audited, audited_bad), (11, 12, 1));
    let verified = leadq_platform::audit::verify_all(&app.db.pool, app.settings.audit_keys())
        .await
        .unwrap();
    assert!(leadq_platform::audit::summary(&verified).0);
    app.stop().await;
}

/// The lead read finds whether a message is stored, and counts a lead's messages, through that
/// message's and that lead's own index entries, however many messages the tenant holds. Its
/// reusable plan is made after five runs; made while the tenant had a few messages, it once
/// read all of them for every batch (a hash of the tenant's messages for the one, a bitmap of
/// them for the other): 36 ms a read with 80,000 messages (docs/bench/plans.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lead_read_looks_up_messages_without_reading_the_tenants_others() {
    let app = spawn_app().await;
    // One connection: the reusable plan is per connection, and so are the counters' flushes.
    let pool = crate::lead_store::one_connection(&app).await;
    let group = GroupCommit::new(pool.clone(), app.sealer());
    for i in 0..8 {
        let (input, attached) = message(&format!("cw-g{i}"), 100 + i);
        group
            .apply(meta(&app, &format!("g{i}")), input, attached)
            .await
            .unwrap()
            .expect("applied");
    }
    // The tenant grows (no ANALYZE runs in between: the plan made above is kept).
    let mut tx = app.db.owner_tx(app.tenant.tenant_id).await;
    sqlx::query(
        "insert into lead_messages (tenant_id, lead_id, source, source_id, sent_at)
         select $1, l.id, 'chatwoot', 'bulk-' || i, now()
           from leads l, generate_series(1, 3000) as i
          where l.tenant_id = $1 and l.external_id = 'cw-g0'",
    )
    .bind(app.tenant.tenant_id)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let before = crate::lead_store::rows_read(&pool, "lead_messages").await;
    for i in 1..4 {
        let (input, attached) = message(&format!("cw-g{i}"), 200 + i);
        group
            .apply(meta(&app, &format!("h{i}")), input, attached)
            .await
            .unwrap()
            .expect("applied");
    }
    let rows = crate::lead_store::rows_read(&pool, "lead_messages").await - before;
    assert!(
        rows <= 30,
        "three messages of leads with one stored message each read {rows} rows of \
         lead_messages: the tenant's 3,000 others were scanned"
    );
    pool.close().await;
    app.stop().await;
}
