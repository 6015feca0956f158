//! The reads and records the web console is built on: one job located by id in every state,
//! tenants' standing (backlog) in one round trip per shard, completions per minute, the job a
//! message id became, and expiring records.

use std::sync::atomic::{AtomicBool, Ordering};

use leadq_queue::{JobState, QueueError, TenantState};

use super::*;

fn tenant_job(tenant: uuid::Uuid, i: usize) -> NewJob {
    let mut j = job(i, None);
    j.envelope.tenant_id = tenant;
    j.envelope.message_id = format!("m-{tenant}-{i}");
    j
}

/// `i` = 0 fails permanently, 1 waits for `gate`, 2 fails transiently; the rest complete.
fn by_index(gate: Arc<AtomicBool>) -> Handler {
    Arc::new(move |job| {
        let gate = gate.clone();
        let i = job.payload["i"].as_u64().unwrap_or(99);
        async move {
            match i {
                0 => Err(JobError::permanent(
                    "invalid_payload",
                    anyhow::anyhow!("bad"),
                )),
                1 => {
                    while !gate.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Ok(())
                }
                2 => Err(JobError::transient(
                    "upstream_down",
                    anyhow::anyhow!("down"),
                )),
                _ => Ok(()),
            }
        }
        .boxed()
    })
}

/// A handler that runs nothing until `gate` opens.
fn gated(gate: Arc<AtomicBool>) -> Handler {
    Arc::new(move |_| {
        let gate = gate.clone();
        async move {
            while !gate.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        }
        .boxed()
    })
}

const KINDS: &[&str] = &["test_other", KIND];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locate_tells_every_state_of_a_job_and_none_for_an_unknown_one() {
    // Retries back off 5-10 s (backoff_max 10 s): a retried job stays scheduled meanwhile.
    let mut s = settings(&queue_prefix(), 3, 60_000);
    s.shards = 3;
    let q = queue(s).await;
    let (t, paused) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let locate = |id: uuid::Uuid| {
        let q = q.clone();
        async move { q.locate(KINDS, id).await.unwrap() }
    };

    // Pending: ready, its tenant not paused.
    let pending = q
        .enqueue_now(tenant_job(t, 5).envelope)
        .await
        .unwrap()
        .job_id;
    let l = locate(pending).await.expect("a pending job is found");
    assert!(matches!(l.state, JobState::Pending), "{l:?}");
    assert_eq!(
        (l.kind.as_str(), l.tenant, l.attempts, l.last_error_code),
        (KIND, Some(t), 0, None)
    );

    // Held: enqueued while its tenant is paused (its slot is still in the ready set).
    q.pause_tenant(KIND, paused).await.unwrap();
    let held = q
        .enqueue_now(tenant_job(paused, 6).envelope)
        .await
        .unwrap()
        .job_id;
    let l = locate(held).await.unwrap();
    assert!(matches!(l.state, JobState::Held), "{l:?}");
    assert_eq!(l.tenant, Some(paused));

    // Scheduled: a run_at in the future.
    let due = Utc::now() + chrono::Duration::hours(1);
    let mut later = tenant_job(t, 7);
    later.run_at = Some(due);
    let scheduled = q.enqueue(vec![later]).await.unwrap()[0].job_id;
    match locate(scheduled).await.unwrap().state {
        JobState::Scheduled { due: d } => {
            assert_eq!(d.timestamp_millis(), due.timestamp_millis())
        }
        other => panic!("{other:?}"),
    }

    let (blocked, dead, retried) = {
        let ids = q
            .enqueue(vec![tenant_job(t, 1), tenant_job(t, 0), tenant_job(t, 2)])
            .await
            .unwrap();
        (ids[0].job_id, ids[1].job_id, ids[2].job_id)
    };
    let gate = Arc::new(AtomicBool::new(false));
    let w = start_registered(&q, by_index(gate.clone()), Recorder::default()).await;

    // Running: leased by this worker ("w-test"), its first attempt.
    let l = wait_for(
        "the blocked job to run",
        Duration::from_secs(10),
        || async {
            let l = locate(blocked).await?;
            matches!(l.state, JobState::Running { .. }).then_some(l)
        },
    )
    .await;
    let JobState::Running {
        worker,
        lease_deadline,
    } = &l.state
    else {
        unreachable!()
    };
    assert_eq!(worker, "w-test");
    assert!(*lease_deadline > Utc::now(), "{lease_deadline}");
    assert!(*lease_deadline < Utc::now() + chrono::Duration::seconds(5));
    assert_eq!((l.tenant, l.attempts), (Some(t), 1));

    // Done: completed (the tenant is no longer kept).
    let l = wait_for(
        "the pending job to complete",
        Duration::from_secs(10),
        || async {
            let l = locate(pending).await?;
            matches!(l.state, JobState::Done { .. }).then_some(l)
        },
    )
    .await;
    let JobState::Done { at } = l.state else {
        unreachable!()
    };
    assert!((Utc::now() - at).num_seconds().abs() < 10, "{at}");
    assert_eq!((l.kind.as_str(), l.tenant), (KIND, None));

    // Dead: the dead letter, its tenant, attempts and error code.
    let l = wait_for(
        "the failing job to die",
        Duration::from_secs(10),
        || async {
            let l = locate(dead).await?;
            matches!(l.state, JobState::Dead { .. }).then_some(l)
        },
    )
    .await;
    let JobState::Dead { letter } = &l.state else {
        unreachable!()
    };
    assert_eq!(
        (letter.job_id, letter.reason.as_str()),
        (dead, "invalid_payload")
    );
    assert_eq!(
        (l.tenant, l.attempts, l.last_error_code.as_deref()),
        (Some(t), 1, Some("invalid_payload"))
    );

    // A retry is scheduled, with the attempt used and its error code.
    let l = wait_for(
        "the retry to be scheduled",
        Duration::from_secs(10),
        || async {
            let l = locate(retried).await?;
            matches!(l.state, JobState::Scheduled { .. }).then_some(l)
        },
    )
    .await;
    assert_eq!(
        (l.attempts, l.last_error_code.as_deref()),
        (1, Some("upstream_down"))
    );

    // The paused tenant's job stays held once the worker parked its slot.
    wait_for(
        "the held job to be parked",
        Duration::from_secs(10),
        || async { (q.tenant_state(KIND, paused).await.unwrap().held == 1).then_some(()) },
    )
    .await;
    assert!(matches!(locate(held).await.unwrap().state, JobState::Held));

    // Unknown: an id never enqueued, or a kind that is not the job's.
    assert!(locate(uuid::Uuid::now_v7()).await.is_none());
    assert!(q.locate(&["test_other"], pending).await.unwrap().is_none());
    assert!(matches!(
        q.locate(&["Bad-Kind"], pending).await,
        Err(QueueError::Invalid(_))
    ));

    gate.store(true, Ordering::SeqCst);
    wait_for(
        "the blocked job to complete",
        Duration::from_secs(10),
        || async { matches!(locate(blocked).await?.state, JobState::Done { .. }).then_some(()) },
    )
    .await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_states_match_tenant_state_and_count_the_backlog() {
    let mut s = settings(&queue_prefix(), 3, 100);
    s.shards = 3;
    let q = queue(s).await;
    let (a, b, c) = (
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
    );
    // a: 5 ready and 2 scheduled; b: paused, 3 ready; c: no jobs, weight 2.5.
    let mut jobs: Vec<NewJob> = (0..5).map(|i| tenant_job(a, i)).collect();
    for i in 5..7 {
        let mut j = tenant_job(a, i);
        j.run_at = Some(Utc::now() + chrono::Duration::hours(1));
        jobs.push(j);
    }
    q.enqueue(jobs).await.unwrap();
    q.pause_tenant(KIND, b).await.unwrap();
    q.enqueue((0..3).map(|i| tenant_job(b, i)).collect())
        .await
        .unwrap();
    q.set_tenant_weight(KIND, c, 2.5).await.unwrap();

    let tenants = [a, b, c, a];
    let check = |want: [(bool, Option<u32>, u64, u64, u64); 3]| {
        let q = q.clone();
        async move {
            let states = q.tenant_states(KIND, &tenants).await.unwrap();
            let mut one_by_one: Vec<TenantState> = Vec::new();
            for t in tenants {
                one_by_one.push(q.tenant_state(KIND, t).await.unwrap());
            }
            assert_eq!(states, one_by_one);
            let got: Vec<_> = states
                .iter()
                .map(|s| (s.paused, s.cap, s.running, s.held, s.backlog))
                .collect();
            assert_eq!(got, [want[0], want[1], want[2], want[0]]);
            assert_eq!(
                states.iter().map(|s| s.weight).collect::<Vec<_>>(),
                [1.0, 1.0, 2.5, 1.0]
            );
        }
    };
    // Nothing has run: b's jobs are not parked yet (held 0), but they are its backlog.
    check([
        (false, None, 0, 0, 5),
        (true, None, 0, 0, 3),
        (false, None, 0, 0, 0),
    ])
    .await;
    assert!(q.tenant_states(KIND, &[]).await.unwrap().is_empty());

    // a capped at 1 and one of its jobs running: 4 held and its backlog; the running one and
    // the scheduled ones are not. b's slots are parked as they come up.
    q.set_tenant_cap(KIND, a, Some(1)).await.unwrap();
    let gate = Arc::new(AtomicBool::new(false));
    let w = start(&q, gated(gate.clone()), Recorder::default());
    wait_for(
        "a at its cap, b parked",
        Duration::from_secs(10),
        || async {
            let s = q.tenant_states(KIND, &[a, b]).await.unwrap();
            (s[0].running == 1 && s[0].held == 4 && s[1].held == 3).then_some(())
        },
    )
    .await;
    check([
        (false, Some(1), 1, 4, 4),
        (true, None, 0, 3, 3),
        (false, None, 0, 0, 0),
    ])
    .await;
    gate.store(true, Ordering::SeqCst);
    wait_for(
        "a's ready jobs to finish",
        Duration::from_secs(10),
        || async {
            let s = q.tenant_state(KIND, a).await.unwrap();
            (s.backlog == 0 && s.running == 0).then_some(())
        },
    )
    .await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_count_the_jobs_completed_in_the_last_minute() {
    let mut s = settings(&queue_prefix(), 3, 100);
    s.shards = 2;
    let q = queue(s).await;
    let tenants: Vec<uuid::Uuid> = (0..4).map(|_| uuid::Uuid::new_v4()).collect();
    q.enqueue((0..7).map(|i| tenant_job(tenants[i % 4], 10 + i)).collect())
        .await
        .unwrap();
    let idle = q.completions(KIND, 5).await.unwrap();
    assert_eq!((idle.per_minute, idle.covered), (vec![0; 5], true));
    let w = start(&q, by_index(Arc::default()), Recorder::default());
    wait_for("7 completions", Duration::from_secs(10), || async {
        (q.counts(KIND).await.unwrap().done == 7).then_some(())
    })
    .await;
    w.stop().await;
    let t = q.completions(KIND, 5).await.unwrap();
    assert_eq!((t.per_minute, t.covered), (vec![0, 0, 0, 0, 7], true));
    let t = q.completions(KIND, 1).await.unwrap();
    assert_eq!(t.per_minute, vec![7]);
    for bad in [0, leadq_queue::COMPLETIONS_MAX_MINUTES + 1] {
        assert!(matches!(
            q.completions(KIND, bad).await,
            Err(QueueError::Invalid(_))
        ));
    }

    // `done` keeps 3: the reaper trims it, and the count says it is a lower bound.
    let mut s = settings(&queue_prefix(), 3, 100);
    s.keep_done = 3;
    let q = queue(s).await;
    q.enqueue((0..6).map(|i| tenant_job(tenants[0], 10 + i)).collect())
        .await
        .unwrap();
    let w = start(&q, by_index(Arc::default()), Recorder::default());
    let t = wait_for("done trimmed to 3", Duration::from_secs(10), || async {
        let t = q.completions(KIND, 2).await.unwrap();
        (q.counts(KIND).await.unwrap().done == 6 && t.per_minute == [0, 3]).then_some(t)
    })
    .await;
    w.stop().await;
    assert!(!t.covered, "{t:?}");
}

#[tokio::test]
async fn job_for_message_finds_the_job_a_message_became() {
    let prefix = queue_prefix();
    let mut s = settings(&prefix, 3, 100);
    s.shards = 3;
    let q = queue(s.clone()).await;
    let (t, other) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let e = q.enqueue_now(tenant_job(t, 1).envelope).await.unwrap();
    let msg = e.message_id.clone();
    assert_eq!(
        q.job_for_message(KIND, t, &msg).await.unwrap(),
        Some(e.job_id)
    );
    // A duplicate points at the first job.
    let dup = q.enqueue_now(tenant_job(t, 1).envelope).await.unwrap();
    assert!(dup.duplicate);
    assert_eq!(
        q.job_for_message(KIND, t, &msg).await.unwrap(),
        Some(e.job_id)
    );
    // Scoped by tenant and kind; unknown messages are none.
    assert_eq!(q.job_for_message(KIND, other, &msg).await.unwrap(), None);
    assert_eq!(
        q.job_for_message("test_other", t, &msg).await.unwrap(),
        None
    );
    assert_eq!(q.job_for_message(KIND, t, "m-nope").await.unwrap(), None);
    assert!(matches!(
        q.job_for_message(KIND, t, "a b").await,
        Err(QueueError::Invalid(_))
    ));
    // After a change of shard count the key is still found where it was written.
    s.shards = 5;
    let q5 = queue(s).await;
    assert_eq!(
        q5.job_for_message(KIND, t, &msg).await.unwrap(),
        Some(e.job_id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_put_read_touched_deleted_and_expire() {
    let q = queue(settings(&queue_prefix(), 3, 100)).await;
    let id = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    assert_eq!(q.record_get("session", id, None).await.unwrap(), None);
    q.record_put("session", id, "v1", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        q.record_get("session", id, None).await.unwrap().as_deref(),
        Some("v1")
    );
    q.record_put("session", id, "v2", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        q.record_get("session", id, None).await.unwrap().as_deref(),
        Some("v2")
    );
    // Namespaces are apart.
    assert_eq!(q.record_get("bulk_op", id, None).await.unwrap(), None);
    q.record_delete("session", id).await.unwrap();
    assert_eq!(q.record_get("session", id, None).await.unwrap(), None);
    q.record_delete("session", id).await.unwrap();

    // Expiry: a 1 s record read without touching is gone after 1.5 s; one read with a touch
    // of 10 s is not.
    q.record_put("session", "plain", "p", Duration::from_secs(1))
        .await
        .unwrap();
    q.record_put("session", "touched", "t", Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(
        q.record_get("session", "plain", None)
            .await
            .unwrap()
            .as_deref(),
        Some("p")
    );
    assert_eq!(
        q.record_get("session", "touched", Some(Duration::from_secs(10)))
            .await
            .unwrap()
            .as_deref(),
        Some("t")
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(q.record_get("session", "plain", None).await.unwrap(), None);
    assert_eq!(
        q.record_get("session", "touched", None)
            .await
            .unwrap()
            .as_deref(),
        Some("t")
    );

    // Names outside [A-Za-z0-9_-] are refused, by every call.
    for (ns, id) in [("a:b", "x"), ("session", "x}"), ("session", ""), ("", "x")] {
        assert!(matches!(
            q.record_put(ns, id, "v", Duration::from_secs(1)).await,
            Err(QueueError::Invalid(_))
        ));
        assert!(matches!(
            q.record_get(ns, id, None).await,
            Err(QueueError::Invalid(_))
        ));
        assert!(matches!(
            q.record_delete(ns, id).await,
            Err(QueueError::Invalid(_))
        ));
    }
}
