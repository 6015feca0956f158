//! What happens to one job: retries with backoff, dead letters, rate limits, idle wake-ups,
//! a burst of due jobs, a panicking handler, retention of finished jobs.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transiently_failing_job_is_retried_with_growing_delays_then_dead_lettered() {
    let q = queue(settings(&queue_prefix(), 4, 300)).await;
    let handler: Handler = Arc::new(|_job| {
        async {
            Err(JobError::transient(
                "crm_unavailable",
                anyhow::anyhow!("503 from upstream"),
            ))
        }
        .boxed()
    });
    let rec = Recorder::default();
    let w = start(&q, handler, rec.clone());
    q.enqueue(vec![job(1, None)]).await.unwrap();
    let dead = wait_for("the dead letter", Duration::from_secs(20), || async {
        let d = q.dead_letters(KIND, 10).await.unwrap();
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(w.stop().await, 0, "the worker never restarted");

    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "max_attempts");
    assert_eq!(dead[0].last_error_code, "crm_unavailable");
    assert_eq!(dead[0].attempts, 4);
    assert_eq!(dead[0].envelope.as_ref().unwrap().message_id, "m-1");

    let (starts, reports) = {
        let seen = rec.0.lock().unwrap();
        (seen.starts.clone(), seen.reports.clone())
    };
    let attempts: Vec<u32> = starts.iter().map(|(_, a, _)| *a).collect();
    assert_eq!(attempts, vec![1, 2, 3, 4]);
    let gaps: Vec<Duration> = starts
        .windows(2)
        .map(|w| w[1].2.duration_since(w[0].2))
        .collect();
    // Equal jitter: retry k waits between base*2^(k-1)/2 and base*2^(k-1).
    for (k, gap) in gaps.iter().enumerate() {
        let full = 300 * (1u64 << k);
        assert!(
            *gap >= Duration::from_millis(full / 2),
            "retry {} came after {gap:?}, before {}ms",
            k + 1,
            full / 2
        );
    }
    assert!(gaps[2] > gaps[0], "delays grow: {gaps:?}");
    let outcomes: Vec<_> = reports.iter().map(|r| r.settled.clone()).collect();
    assert!(matches!(
        outcomes[..3],
        [
            Settled::Retried { .. },
            Settled::Retried { .. },
            Settled::Retried { .. }
        ]
    ));
    assert_eq!(
        outcomes[3],
        Settled::Dead {
            reason: "max_attempts".into()
        }
    );
    let c = q.counts(KIND).await.unwrap();
    assert_eq!(
        (c.dead, c.retries, c.pending, c.scheduled, c.running),
        (1, 3, 0, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_is_dead_lettered_at_once_and_a_rate_limit_uses_no_attempt() {
    let q = queue(settings(&queue_prefix(), 5, 100)).await;
    let limited_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handler: Handler = Arc::new(move |job| {
        let first_time =
            job.payload["i"] == 2 && !limited_once.swap(true, std::sync::atomic::Ordering::SeqCst);
        async move {
            match job.payload["i"].as_u64() {
                Some(1) => Err(JobError::permanent(
                    "invalid_payload",
                    anyhow::anyhow!("bad"),
                )),
                Some(2) if first_time => Err(JobError::RateLimited {
                    code: "crm_rate_limited",
                    retry_after: Duration::from_millis(300),
                }),
                _ => Ok(()),
            }
        }
        .boxed()
    });
    let rec = Recorder::default();
    let w = start(&q, handler, rec.clone());
    q.enqueue(vec![job(1, None), job(2, None)]).await.unwrap();
    wait_for("both jobs settled", Duration::from_secs(10), || async {
        let c = q.counts(KIND).await.unwrap();
        (c.dead == 1 && c.done == 1).then_some(())
    })
    .await;
    w.stop().await;
    let dead = q.dead_letters(KIND, 10).await.unwrap();
    assert_eq!(
        (dead[0].reason.as_str(), dead[0].attempts),
        ("invalid_payload", 1)
    );
    let reports = rec.0.lock().unwrap().reports.clone();
    // The rate-limited job ran twice, both times as attempt 1: the snooze used no attempt.
    let second: Vec<u32> = reports
        .iter()
        .filter(|r| r.meta.message_id == "m-2")
        .map(|r| r.meta.attempt)
        .collect();
    assert_eq!(second, vec![1, 1]);
    assert_eq!(q.counts(KIND).await.unwrap().rate_limited, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_waits_for_a_wake_up_instead_of_fetching_from_an_empty_queue() {
    let prefix = queue_prefix();
    let q = queue(settings(&prefix, 3, 100)).await;
    let handler: Handler = Arc::new(|_job| async { Ok(()) }.boxed());
    let rec = Recorder::default();
    let w = start_registered(&q, handler, rec.clone()).await;
    // Calls of the fetch script on this queue: the only script given a worker's suspect key.
    let tap = CommandTap::start(vec![
        "\"evalsha\"".into(),
        format!("{{{prefix}:{KIND}}}:suspect:"),
    ])
    .await;
    // Low load: each job arrives when the worker has gone idle after the one before.
    let began = Instant::now();
    for i in 0..20 {
        q.enqueue(vec![job(i, None)]).await.unwrap();
        wait_for("the job to finish", Duration::from_secs(10), || async {
            (rec.0.lock().unwrap().reports.len() > i).then_some(())
        })
        .await;
    }
    let fetches = tap.stop().await;
    let idle_waits = began.elapsed().as_millis() / 500 + 1;
    w.stop().await;
    // One fetch per job, and one after each idle wait that ran out (half a second each; a
    // slow machine has more of them). A worker that asked again as soon as it had taken the
    // last job, only to find the queue empty, needed two per job.
    assert!(
        fetches >= 20 && fetches as u128 <= 22 + idle_waits,
        "{fetches} fetches for 20 jobs that came one at a time, with at most {idle_waits} idle \
         waits running out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_ups_nobody_takes_are_kept_to_eight_and_a_worker_started_later_runs_every_job() {
    let prefix = queue_prefix();
    let q = queue(settings(&prefix, 3, 100)).await;
    // Twenty enqueues with no worker waiting: each pushes a wake-up.
    for i in 0..20 {
        q.enqueue(vec![job(i, None)]).await.unwrap();
    }
    let mut conn = crate::redis_conn().await;
    let waiting: u64 = redis::cmd("LLEN")
        .arg(format!("{{{prefix}:{KIND}}}:wake"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(waiting, 8, "wake-ups left waiting");
    let handler: Handler = Arc::new(|_job| async { Ok(()) }.boxed());
    let rec = Recorder::default();
    let w = start_registered(&q, handler, rec.clone()).await;
    wait_for("all twenty done", Duration::from_secs(10), || async {
        (q.counts(KIND).await.unwrap().done == 20).then_some(())
    })
    .await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_room_for_hundreds_of_jobs_leases_them_in_bounded_fetches() {
    let prefix = queue_prefix();
    let q = queue(settings(&prefix, 3, 100)).await;
    let n = 3 * leadq_queue::FETCH_MAX + 10;
    q.enqueue((0..n).map(|i| job(i, None)).collect())
        .await
        .unwrap();
    // Every job holds its slot until the test lets go, so no lease is given back meanwhile.
    let hold = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let held = hold.clone();
    let handler: Handler = Arc::new(move |_job| {
        let held = held.clone();
        async move {
            while held.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        }
        .boxed()
    });
    let tap = CommandTap::start(vec![
        "\"evalsha\"".into(),
        format!("{{{prefix}:{KIND}}}:suspect:"),
    ])
    .await;
    // Room for every job at once: it asks for its concurrency and a prefetch in one go.
    let w = start_with("w-test", &q, handler, Recorder::default(), n + 10);
    wait_for("every job leased", Duration::from_secs(8), || async {
        (q.counts(KIND).await.unwrap().running == n as u64).then_some(())
    })
    .await;
    let fetches = tap.stop().await;
    hold.store(false, std::sync::atomic::Ordering::SeqCst);
    wait_for("every job done", Duration::from_secs(20), || async {
        (q.counts(KIND).await.unwrap().done == n as u64).then_some(())
    })
    .await;
    w.stop().await;
    // One script call may hold Redis only so long: the jobs came in slices of FETCH_MAX.
    let least = n.div_ceil(leadq_queue::FETCH_MAX);
    assert!(
        fetches >= least,
        "{n} jobs leased in {fetches} fetches; at most {} a fetch needs {least}",
        leadq_queue::FETCH_MAX
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_jobs_due_at_once_drain_without_the_worker_dying() {
    let q = queue(settings(&queue_prefix(), 3, 100)).await;
    // 10,000 ready now, and 10,000 scheduled to fall due at the same instant: far above the
    // ~8,000 that kill apalis-redis's fetch (Lua unpack limit).
    let due = Utc::now() + chrono::Duration::seconds(6);
    let jobs: Vec<NewJob> = (0..20_000)
        .map(|i| job(i, (i % 2 == 0).then_some(due)))
        .collect();
    q.enqueue(jobs).await.unwrap();
    let c = q.counts(KIND).await.unwrap();
    assert_eq!((c.pending, c.scheduled), (10_000, 10_000));
    // Let the 10,000 fall due together before any worker looks.
    let until_due = (due - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(until_due + Duration::from_millis(100)).await;

    let handler: Handler = Arc::new(|_| async { Ok(()) }.boxed());
    let w = start(&q, handler, Recorder::default());
    wait_for("20,000 completions", Duration::from_secs(120), || async {
        (q.counts(KIND).await.unwrap().done == 20_000).then_some(())
    })
    .await;
    assert_eq!(w.stop().await, 0, "the worker never died and restarted");
    let c = q.counts(KIND).await.unwrap();
    assert_eq!(
        (c.pending, c.scheduled, c.running, c.dead, c.failed),
        (0, 0, 0, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_a_transient_failure_not_a_dead_worker() {
    let q = queue(settings(&queue_prefix(), 2, 100)).await;
    let handler: Handler = Arc::new(|job| {
        async move {
            if job.payload["i"] == 1 {
                panic!("boom");
            }
            Ok(())
        }
        .boxed()
    });
    let w = start(&q, handler, Recorder::default());
    q.enqueue(vec![job(1, None), job(2, None)]).await.unwrap();
    wait_for("one dead, one done", Duration::from_secs(10), || async {
        let c = q.counts(KIND).await.unwrap();
        (c.dead == 1 && c.done == 1).then_some(())
    })
    .await;
    assert_eq!(w.stop().await, 0);
    let dead = q.dead_letters(KIND, 1).await.unwrap();
    assert_eq!(
        (dead[0].reason.as_str(), dead[0].last_error_code.as_str()),
        ("max_attempts", "panic")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_jobs_and_dead_letters_are_trimmed_by_age_with_their_data() {
    let mut s = settings(&queue_prefix(), 1, 100);
    s.keep_done_for = Duration::from_millis(1500);
    s.dead_letter_ttl = Duration::from_millis(1500);
    let prefix = s.prefix.clone();
    let q = queue(s).await;
    let handler = first_job_fails(Arc::new(std::sync::atomic::AtomicBool::new(true)));
    let w = start(&q, handler, Recorder::default());
    // One of high and one of low priority: their priority field goes with them too.
    let jobs = (0..6)
        .map(|i| {
            let mut j = job(i, None);
            j.priority = match i {
                1 => Priority::High,
                2 => Priority::Low,
                _ => Priority::Normal,
            };
            j
        })
        .collect();
    q.enqueue(jobs).await.unwrap();
    wait_for("five done, one dead", Duration::from_secs(10), || async {
        let c = q.counts(KIND).await.unwrap();
        (c.done == 5 && c.dead == 1).then_some(())
    })
    .await;
    let mut conn = crate::redis_conn().await;
    let key = |name: &str| format!("{{{prefix}:{KIND}}}:{name}");
    let kept: u64 = redis::cmd("ZCARD")
        .arg(key("done"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(kept, 5);
    // Past retention: the reaper deletes the dead letter, the next completion trims `done`.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    q.enqueue(vec![job(100, None)]).await.unwrap();
    wait_for("trimmed", Duration::from_secs(10), || async {
        let c = q.counts(KIND).await.unwrap();
        let kept: u64 = redis::cmd("ZCARD")
            .arg(key("done"))
            .query_async(&mut conn.clone())
            .await
            .unwrap();
        (c.done == 6 && kept == 1 && c.dead == 0).then_some(())
    })
    .await;
    w.stop().await;
    // Nothing of a finished job is left behind.
    let (jobs, dead_data): (u64, u64) = redis::pipe()
        .hlen(key("jobs"))
        .hlen(key("dead_data"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!((jobs, dead_data), (0, 0));
}

/// A producer resending a message for a job due later (a follow-up three days ahead, sent
/// again tomorrow) must find it: the message is remembered for the dedupe TTL after the job is
/// due, not after it was enqueued (the mark expired while its job still waited, and the
/// resend became a second job).
#[tokio::test]
async fn a_job_due_later_is_remembered_until_the_dedupe_ttl_after_it_is_due() {
    let prefix = queue_prefix();
    let mut s = settings(&prefix, 3, 100);
    s.dedupe_ttl = Duration::from_secs(1);
    let q = queue(s).await;
    let due = Some(Utc::now() + chrono::Duration::hours(1));
    let first = q.enqueue(vec![job(0, due)]).await.unwrap();
    assert!(!first[0].duplicate);
    // Past the TTL from the enqueue, long before the job is due.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = q.enqueue(vec![job(0, due)]).await.unwrap();
    assert!(again[0].duplicate, "the resend became a second job");
    assert_eq!(again[0].job_id, first[0].job_id);
    // A job due now is still remembered for the TTL only.
    let now = q.enqueue(vec![job(1, None)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = q.enqueue(vec![job(1, None)]).await.unwrap();
    assert!(!later[0].duplicate);
    assert_ne!(later[0].job_id, now[0].job_id);
}

/// A job's wait (`leadq_job_wait_seconds`, what `LeadqJobWaitHigh` pages on) starts when it
/// was due: a job enqueued for later waits from its `run_at`, a job snoozed by a rate limit
/// (which gives its attempt back, so its next run is a first attempt again) from the end of
/// the snooze, and a re-driven dead letter (attempts reset) from its re-drive. All three
/// counted from the enqueue: a CRM's daily limit, or a re-drive of last week's dead letters,
/// read as hours or days of waiting. Its turnaround (`LeadqJobSlaBreached`) likewise starts at
/// the run_at or the re-drive, not at a snooze. The mark goes with the job: nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_wait_starts_when_it_is_due_after_a_run_at_a_snooze_or_a_redrive() {
    let prefix = queue_prefix();
    let q = queue(settings(&prefix, 3, 100)).await;
    let (snoozed, failed) = (
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let handler: Handler = {
        let (snoozed, failed) = (snoozed.clone(), failed.clone());
        Arc::new(move |job| {
            use std::sync::atomic::Ordering::SeqCst;
            let snooze = job.payload["i"] == 0 && !snoozed.swap(true, SeqCst);
            let fail = job.payload["i"] == 2 && !failed.swap(true, SeqCst);
            async move {
                if snooze {
                    Err(JobError::RateLimited {
                        code: "rate_limited",
                        retry_after: Duration::from_millis(1500),
                    })
                } else if fail {
                    Err(JobError::permanent(
                        "invalid_payload",
                        anyhow::anyhow!("no"),
                    ))
                } else {
                    Ok(())
                }
            }
            .boxed()
        })
    };
    let seen = Recorder::default();
    let w = start_registered(&q, handler, seen.clone()).await;
    let run_at = Utc::now() + chrono::Duration::milliseconds(800);
    q.enqueue(vec![job(0, None), job(1, Some(run_at)), job(2, None)])
        .await
        .unwrap();
    let runs = |n: usize| {
        let seen = seen.clone();
        async move {
            wait_for(&format!("{n} runs"), Duration::from_secs(15), || async {
                (seen.0.lock().unwrap().reports.len() == n).then_some(())
            })
            .await
        }
    };
    runs(4).await;
    let dead = seen
        .0
        .lock()
        .unwrap()
        .reports
        .iter()
        .find(|r| r.meta.message_id == "m-2")
        .map(|r| r.meta.job_id)
        .unwrap();
    let redriven_at = Utc::now();
    assert_eq!(q.redrive(KIND, &[dead], &mut |_, _| {}).await.unwrap(), 1);
    runs(5).await;
    let reports = seen.0.lock().unwrap().reports.clone();
    let of = |i: i64| -> Vec<&JobReport> {
        reports
            .iter()
            .filter(|r| r.meta.message_id == format!("m-{i}"))
            .collect()
    };
    let (snooze, scheduled, redriven) = (of(0), of(1), of(2));
    assert_eq!((snooze.len(), scheduled.len(), redriven.len()), (2, 1, 2));
    // The first run is due at its enqueue; the second, a first attempt again, when the snooze
    // ended: at least 1.5 s after the first run started.
    assert_eq!(snooze[0].due_at, snooze[0].meta.timestamp);
    assert_eq!(snooze[1].meta.attempt, 1);
    assert!(
        snooze[1].due_at >= snooze[0].started_at + chrono::Duration::milliseconds(1450),
        "the wait after a snooze counted from {} (first run at {})",
        snooze[1].due_at,
        snooze[0].started_at
    );
    assert_eq!(
        scheduled[0].due_at.timestamp_millis(),
        run_at.timestamp_millis(),
        "a job enqueued for later waits from its run_at"
    );
    // The turnaround (the job SLA) starts at the enqueue, the run_at or the re-drive: a delay
    // the job was enqueued with, or a re-drive of an old dead letter, is not lateness; a snooze
    // is.
    assert_eq!(snooze[1].since, snooze[1].meta.timestamp);
    assert_eq!(
        scheduled[0].since.timestamp_millis(),
        run_at.timestamp_millis(),
        "a job enqueued for later counted its turnaround from its enqueue"
    );
    assert!(
        redriven[1].since >= redriven_at - chrono::Duration::milliseconds(50),
        "a re-driven job's turnaround counted from {}",
        redriven[1].since
    );
    assert_eq!(redriven[1].meta.attempt, 1);
    assert!(
        redriven[1].due_at >= redriven_at - chrono::Duration::milliseconds(50),
        "a re-driven job's wait counted from {} (re-driven at {redriven_at})",
        redriven[1].due_at
    );
    // Every job is done: none of their fields, the due marks included, is left.
    let mut conn = crate::redis_conn().await;
    let left: Vec<String> = redis::cmd("HKEYS")
        .arg(format!("{{{prefix}:{KIND}}}:jobs"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(left.is_empty(), "left in the jobs hash: {left:?}");
    w.stop().await;
}
