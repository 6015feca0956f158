//! How tenants share a queue: fairness by weight, priorities within a tenant, pause and
//! resume, concurrency caps across workers, shards.

use super::*;

fn tenant_job(tenant: uuid::Uuid, i: usize) -> NewJob {
    let mut j = job(i, None);
    j.envelope.tenant_id = tenant;
    j.envelope.message_id = format!("m-{tenant}-{i}");
    j
}

/// Where tenant B's jobs start among all starts, after tenant A queued `backlog` first.
async fn b_positions(weight_b: Option<f64>, backlog: usize, b_jobs: usize) -> Vec<usize> {
    let q = queue(settings(&queue_prefix(), 3, 100)).await;
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    if let Some(w) = weight_b {
        q.set_tenant_weight(KIND, b, w).await.unwrap();
    }
    let flood: Vec<NewJob> = (0..backlog).map(|i| tenant_job(a, i)).collect();
    q.enqueue(flood).await.unwrap();
    q.enqueue((0..b_jobs).map(|i| tenant_job(b, i)).collect())
        .await
        .unwrap();
    let tenants: Arc<Mutex<Vec<uuid::Uuid>>> = Arc::default();
    let seen = tenants.clone();
    let handler: Handler = Arc::new(move |job| {
        seen.lock().unwrap().push(job.meta.tenant_id);
        async { Ok(()) }.boxed()
    });
    let w = start(&q, handler, Recorder::default());
    wait_for("tenant B's jobs", Duration::from_secs(30), || async {
        let t = tenants.lock().unwrap();
        (t.iter().filter(|t| **t == b).count() == b_jobs).then_some(())
    })
    .await;
    w.stop().await;
    let t = tenants.lock().unwrap();
    t.iter()
        .enumerate()
        .filter(|(_, t)| **t == b)
        .map(|(i, _)| i)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_flooding_the_queue_does_not_starve_another() {
    // A queued 5,000 jobs before B queued 20: B is served alongside A, not after it.
    let pos = b_positions(None, 5_000, 20).await;
    let last = *pos.last().unwrap();
    // Equal weights interleave one for one (plus the batch already fetched before B's
    // arrived): B's 20 are done within the first ~60 runs, not after 5,000.
    assert!(
        last < 100,
        "B's last job started at position {last}: {pos:?}"
    );
    // Weighted: B at 4 gets four runs for each of A's.
    let pos = b_positions(Some(4.0), 5_000, 40).await;
    let last = *pos.last().unwrap();
    assert!(
        last < 80,
        "B (weight 4) finished at position {last}: {pos:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_tenants_first_job_runs_next_while_many_tenants_hold_ready_work() {
    // 300 tenants hold three jobs each: one round of the queue is 300 jobs.
    let q = queue(settings(&queue_prefix(), 3, 100)).await;
    let busy: Vec<uuid::Uuid> = (0..300).map(|_| uuid::Uuid::new_v4()).collect();
    let jobs = (0..3)
        .flat_map(|round| {
            let busy = &busy;
            (0..busy.len()).map(move |k| tenant_job(busy[k], round * 1000 + k))
        })
        .collect();
    q.enqueue(jobs).await.unwrap();
    let newcomer = uuid::Uuid::new_v4();
    let order: Arc<Mutex<Vec<uuid::Uuid>>> = Arc::default();
    let (seen, producer) = (order.clone(), q.clone());
    let handler: Handler = Arc::new(move |job| {
        let n = {
            let mut o = seen.lock().unwrap();
            o.push(job.meta.tenant_id);
            o.len()
        };
        let producer = producer.clone();
        async move {
            // Halfway through the second round, a tenant with nothing queued sends a job.
            if n == 450 {
                producer
                    .enqueue(vec![tenant_job(newcomer, 5000)])
                    .await
                    .unwrap();
            }
            Ok(())
        }
        .boxed()
    });
    let w = start(&q, handler, Recorder::default());
    wait_for("every job", Duration::from_secs(30), || async {
        (order.lock().unwrap().len() == 901).then_some(())
    })
    .await;
    w.stop().await;
    let pos = order
        .lock()
        .unwrap()
        .iter()
        .position(|t| *t == newcomer)
        .unwrap();
    // Tagged at the virtual clock it would queue behind the ~150 second jobs of this round
    // that were ready before it (and sort before it: older ids); with the new tenant's head
    // start it goes with the next fetch, behind at most the jobs in flight (concurrency 20).
    assert!(
        (450..450 + 45).contains(&pos),
        "the new tenant's job started at position {pos} (sent at 450)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priorities_reorder_a_tenants_own_jobs_without_taking_a_larger_share() {
    let q = queue(settings(&queue_prefix(), 3, 100)).await;
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    // A queues 30 low, then 30 normal, then 30 high jobs; B queues 30 normal ones after that.
    let mut jobs = Vec::new();
    for (base, priority) in [
        (0, Priority::Low),
        (100, Priority::Normal),
        (200, Priority::High),
    ] {
        for i in base..base + 30 {
            let mut j = tenant_job(a, i);
            j.priority = priority;
            jobs.push(j);
        }
    }
    q.enqueue(jobs).await.unwrap();
    q.enqueue((300..330).map(|i| tenant_job(b, i)).collect())
        .await
        .unwrap();
    let order: Arc<Mutex<Vec<(uuid::Uuid, u64)>>> = Arc::default();
    let seen = order.clone();
    let handler: Handler = Arc::new(move |job| {
        let i = job.payload["i"].as_u64().unwrap();
        seen.lock().unwrap().push((job.meta.tenant_id, i));
        async { Ok(()) }.boxed()
    });
    let w = start(&q, handler, Recorder::default());
    wait_for("all 120 jobs", Duration::from_secs(30), || async {
        (order.lock().unwrap().len() == 120).then_some(())
    })
    .await;
    w.stop().await;
    let order = order.lock().unwrap();
    let a_run: Vec<u64> = order
        .iter()
        .filter(|(t, _)| *t == a)
        .map(|(_, i)| *i)
        .collect();
    let class = |i: u64| i / 100; // 0 low, 1 normal, 2 high
                                  // A's own jobs ran high, then normal, then low, whatever order they were queued in
                                  // (allowing for the few jobs in flight together when the handler records them).
    let last_high = a_run.iter().rposition(|i| class(*i) == 2).unwrap();
    let first_low = a_run.iter().position(|i| class(*i) == 0).unwrap();
    let first_normal = a_run.iter().position(|i| class(*i) == 1).unwrap();
    assert!(
        last_high < first_low && first_normal < first_low && last_high < 40,
        "A ran in this order: {a_run:?}"
    );
    // FIFO within a priority.
    let highs: Vec<u64> = a_run.iter().copied().filter(|i| class(*i) == 2).collect();
    let mut sorted = highs.clone();
    sorted.sort_unstable();
    let displaced = highs.iter().zip(&sorted).filter(|(x, y)| x != y).count();
    assert!(displaced <= 4, "high jobs out of order: {highs:?}");
    // Marking its work high bought A no larger share: B's 30 ran interleaved with A's first
    // 30, not after A's 90.
    let b_last = order.iter().rposition(|(t, _)| *t == b).unwrap();
    eprintln!("B last ran at position {b_last} of 120");
    assert!(b_last < 75, "B's last job ran at position {b_last} of 120");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_tenant_keeps_its_jobs_while_others_run_and_gets_them_back_on_resume() {
    let q = queue(settings(&queue_prefix(), 3, 100)).await;
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    q.pause_tenant(KIND, a).await.unwrap();
    q.enqueue((0..10).map(|i| tenant_job(a, i)).collect())
        .await
        .unwrap();
    q.enqueue((10..20).map(|i| tenant_job(b, i)).collect())
        .await
        .unwrap();
    let ran: Arc<Mutex<Vec<uuid::Uuid>>> = Arc::default();
    let seen = ran.clone();
    let handler: Handler = Arc::new(move |job| {
        seen.lock().unwrap().push(job.meta.tenant_id);
        async { Ok(()) }.boxed()
    });
    let w = start(&q, handler, Recorder::default());
    wait_for("B's 10 jobs", Duration::from_secs(10), || async {
        let n = ran.lock().unwrap().iter().filter(|t| **t == b).count();
        (n == 10).then_some(())
    })
    .await;
    // Give the worker time to come round to A's jobs: it must not run them.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !ran.lock().unwrap().contains(&a),
        "a paused tenant's job ran"
    );
    let st = q.tenant_state(KIND, a).await.unwrap();
    assert!(st.paused && st.held == 10, "{st:?}");
    // Enqueueing while paused still works, and the job is held too.
    q.enqueue(vec![tenant_job(a, 10)]).await.unwrap();
    let c = q.resume_tenant(KIND, a).await.unwrap();
    assert!(c.resumed >= 10 && c.held == 0, "{c:?}");
    wait_for(
        "A's 11 jobs after resume",
        Duration::from_secs(10),
        || async {
            let n = ran.lock().unwrap().iter().filter(|t| **t == a).count();
            (n == 11).then_some(())
        },
    )
    .await;
    w.stop().await;
    let c = q.counts(KIND).await.unwrap();
    assert_eq!((c.done, c.pending, c.held), (21, 0, 0));
}

/// A resume of more held slots than one call moves (1,000) goes on slice by slice until all
/// are back. (The slices after the first never undo a pause made between two of them:
/// `lua/tenant.lua`'s `more`; that interleaving is not reproduced here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_resume_goes_on_in_slices_until_every_held_job_is_back() {
    let q = queue(settings(&queue_prefix(), 3, 100)).await;
    let a = uuid::Uuid::new_v4();
    q.pause_tenant(KIND, a).await.unwrap();
    q.enqueue((0..2_500).map(|i| tenant_job(a, i)).collect())
        .await
        .unwrap();
    // A worker meets each job's slot and parks it: the tenant is paused.
    let handler: Handler = Arc::new(|_| async { Ok(()) }.boxed());
    let w = start(&q, handler, Recorder::default());
    wait_for("2,500 held", Duration::from_secs(30), || async {
        (q.tenant_state(KIND, a).await.unwrap().held == 2_500).then_some(())
    })
    .await;
    w.stop().await;
    let c = q.resume_tenant(KIND, a).await.unwrap();
    assert_eq!((c.resumed, c.held), (2_500, 0), "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cap_holds_across_workers_and_leaves_the_rest_to_others() {
    let q = queue(settings(&queue_prefix(), 3, 100)).await;
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    q.set_tenant_cap(KIND, a, Some(3)).await.unwrap();
    q.enqueue((0..40).map(|i| tenant_job(a, i)).collect())
        .await
        .unwrap();
    q.enqueue((100..140).map(|i| tenant_job(b, i)).collect())
        .await
        .unwrap();
    #[derive(Default)]
    struct Tally {
        now_a: usize,
        max_a: usize,
        max_b: usize,
        now_b: usize,
        done: Vec<uuid::Uuid>,
    }
    let tally: Arc<Mutex<Tally>> = Arc::default();
    let t = tally.clone();
    let handler: Handler = Arc::new(move |job| {
        let t = t.clone();
        let tenant = job.meta.tenant_id;
        async move {
            {
                let mut g = t.lock().unwrap();
                if tenant == a {
                    g.now_a += 1;
                    g.max_a = g.max_a.max(g.now_a);
                } else {
                    g.now_b += 1;
                    g.max_b = g.max_b.max(g.now_b);
                }
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
            let mut g = t.lock().unwrap();
            if tenant == a {
                g.now_a -= 1;
            } else {
                g.now_b -= 1;
            }
            g.done.push(tenant);
            Ok(())
        }
        .boxed()
    });
    // Two workers of 20 slots each: the cap is on the tenant, not per worker.
    let w1 = start_as("w-cap-1", &q, handler.clone(), Recorder::default());
    let w2 = start_as("w-cap-2", &q, handler, Recorder::default());
    wait_for("all 80 jobs", Duration::from_secs(30), || async {
        (tally.lock().unwrap().done.len() == 80).then_some(())
    })
    .await;
    w1.stop().await;
    w2.stop().await;
    let (max_a, max_b, done) = {
        let g = tally.lock().unwrap();
        (g.max_a, g.max_b, g.done.clone())
    };
    assert_eq!(
        max_a, 3,
        "tenant A ran {max_a} jobs at once under a cap of 3"
    );
    // B used the slots A could not: it ran many at once and finished long before A.
    assert!(max_b > 10, "B ran at most {max_b} at once");
    let b_last = done.iter().rposition(|t| *t == b).unwrap();
    eprintln!("cap: A max {max_a}, B max {max_b}, B last finished at {b_last} of 80");
    assert!(
        b_last < 60,
        "B's last job finished at position {b_last} of 80"
    );
    let st = q.tenant_state(KIND, a).await.unwrap();
    assert_eq!((st.cap, st.running, st.held), (Some(3), 0, 0), "{st:?}");
    // Removing the cap is immediate.
    q.set_tenant_cap(KIND, a, None).await.unwrap();
    assert_eq!(q.tenant_state(KIND, a).await.unwrap().cap, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_on_another_shard_wakes_the_workers_where_they_wait() {
    let prefix = queue_prefix();
    let mut s = settings(&prefix, 3, 100);
    s.shards = 4;
    let q = queue(s).await;
    let tenant = std::iter::repeat_with(uuid::Uuid::new_v4)
        .find(|t| q.shard_of(t) != 0)
        .unwrap();
    let handler: Handler = Arc::new(|job| {
        async move {
            if job.meta.attempt == 1 {
                Err(JobError::transient(
                    "crm_unavailable",
                    anyhow::anyhow!("503 from upstream"),
                ))
            } else {
                Ok(())
            }
        }
        .boxed()
    });
    let w = start_registered(&q, handler, Recorder::default()).await;
    // Idle workers wait on shard 0's wake list: a blocking wait cannot span Cluster slots.
    let tap = CommandTap::start(vec![
        "\"lpush\"".into(),
        format!("\"{{{prefix}:{KIND}}}:wake\""),
    ])
    .await;
    q.enqueue(vec![tenant_job(tenant, 1)]).await.unwrap();
    wait_for("the retry to succeed", Duration::from_secs(10), || async {
        (q.counts(KIND).await.unwrap().done == 1).then_some(())
    })
    .await;
    let wakes = tap.stop().await;
    w.stop().await;
    // The enqueue's wake-up, and the ack's that scheduled the retry (so a waiting worker
    // learns when it is due), each passed on from the job's shard to shard 0's list.
    assert!(wakes >= 2, "{wakes} wake-ups reached shard 0's list");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_queue_runs_counts_pages_dead_letters_and_controls_tenants_across_shards() {
    let mut s = settings(&queue_prefix(), 1, 100);
    s.shards = 4;
    let q = queue(s).await;
    let tenants: Vec<uuid::Uuid> = (0..8).map(|_| uuid::Uuid::new_v4()).collect();
    let shards: std::collections::BTreeSet<u16> = tenants.iter().map(|t| q.shard_of(t)).collect();
    assert!(shards.len() >= 2, "{shards:?}");
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let handler = first_job_fails(failing.clone());
    let w = start(&q, handler, Recorder::default());
    for t in &tenants {
        q.enqueue((0..10).map(|i| tenant_job(*t, i)).collect())
            .await
            .unwrap();
    }
    wait_for("72 done, 8 dead", Duration::from_secs(20), || async {
        let c = q.counts(KIND).await.unwrap();
        (c.done == 72 && c.dead == 8).then_some(())
    })
    .await;
    // Paging through the dead letters of every shard, newest first, three at a time.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = q
            .dead_letter_page(KIND, &Default::default(), cursor.as_deref(), 3)
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|d| (d.dead_at, d.job_id)));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 8, "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] >= w[1]),
        "not newest first: {seen:?}"
    );
    let ids: Vec<uuid::Uuid> = seen.iter().map(|(_, id)| *id).collect();
    let one = q.dead_letter(KIND, ids[0]).await.unwrap();
    assert!(one.is_some());
    // Re-driven from every shard, they run (the handler has stopped failing).
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(q.redrive(KIND, &ids, &mut |_, _| {}).await.unwrap(), 8);
    wait_for("80 done, none dead", Duration::from_secs(20), || async {
        let c = q.counts(KIND).await.unwrap();
        (c.done == 80 && c.dead == 0).then_some(())
    })
    .await;
    // A tenant of a shard other than 0 is paused and resumed.
    let t = *tenants.iter().find(|t| q.shard_of(t) != 0).unwrap();
    q.pause_tenant(KIND, t).await.unwrap();
    q.enqueue((100..105).map(|i| tenant_job(t, i)).collect())
        .await
        .unwrap();
    wait_for("five held", Duration::from_secs(10), || async {
        let st = q.tenant_state(KIND, t).await.unwrap();
        (st.held == 5).then_some(())
    })
    .await;
    assert_eq!(q.counts(KIND).await.unwrap().done, 80);
    q.resume_tenant(KIND, t).await.unwrap();
    wait_for("85 done", Duration::from_secs(10), || async {
        (q.counts(KIND).await.unwrap().done == 85).then_some(())
    })
    .await;
    w.stop().await;
}
