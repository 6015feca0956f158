//! Suspects: jobs whose lease expired before (their worker died while running them). A worker
//! runs at most one at a time, so that a job that kills its worker takes no other suspect down
//! with it; the jobs behind them must still run, and a worker whose suspect is running must
//! not spin on the ones it may not take.

use super::*;

/// After a crash, a dead worker's jobs come back at the head of the ready set as suspects
/// (here: 40 of them, made so by hand as the reaper leaves them, ahead of 20 fresh jobs). A
/// worker running one suspect runs the 20 fresh jobs beside it. (The fetch counted the
/// suspects it put back against the jobs it asked for: every fetch came back with the
/// suspects only, so the worker ran one job at a time, fetching again and again meanwhile.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspects_at_the_head_do_not_hold_back_the_jobs_behind_them_nor_spin_a_worker() {
    let prefix = queue_prefix();
    let q = queue(settings(&prefix, 3, 100)).await;
    q.enqueue((0..60).map(|i| job(i, None)).collect())
        .await
        .unwrap();
    let tag = format!("{{{prefix}:{KIND}}}");
    let mut conn = crate::redis_conn().await;
    let head: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{tag}:fair_ready"))
        .arg(0)
        .arg(39)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(head.len(), 40);
    let mut marks = redis::cmd("HSET");
    marks.arg(format!("{tag}:jobs"));
    for id in &head {
        marks.arg(format!("{id}:x")).arg(1);
    }
    let _: i64 = marks.query_async(&mut conn).await.unwrap();

    // Suspects wait at a gate; fresh jobs finish at once.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let suspects: Arc<std::collections::HashSet<String>> = Arc::new(head.into_iter().collect());
    let (fresh_done, suspects_done) = (
        Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        Arc::new(std::sync::atomic::AtomicUsize::new(0)),
    );
    let handler: Handler = {
        let (gate, suspects) = (gate.clone(), suspects.clone());
        let (fresh_done, suspects_done) = (fresh_done.clone(), suspects_done.clone());
        Arc::new(move |job| {
            let suspect = suspects.contains(&job.meta.job_id.to_string());
            let (gate, fresh_done, suspects_done) =
                (gate.clone(), fresh_done.clone(), suspects_done.clone());
            async move {
                if suspect {
                    gate.acquire().await.unwrap().forget();
                    suspects_done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                } else {
                    fresh_done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                Ok(())
            }
            .boxed()
        })
    };
    let w = start_registered(&q, handler, Recorder::default()).await;
    wait_for(
        "the fresh jobs run while a suspect holds its gate",
        Duration::from_secs(15),
        || async { (fresh_done.load(std::sync::atomic::Ordering::SeqCst) == 20).then_some(()) },
    )
    .await;
    // Only suspects left, one of them running: the worker waits, it does not fetch in a loop.
    let tap = CommandTap::start(vec![
        "\"evalsha\"".into(),
        format!("{{{prefix}:{KIND}}}:suspect:"),
    ])
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fetches = tap.stop().await;
    assert!(
        fetches <= 5,
        "{fetches} fetches in a second with only suspects left"
    );
    // Let them through: each runs, one at a time.
    gate.add_permits(40);
    wait_for("every suspect run", Duration::from_secs(30), || async {
        (suspects_done.load(std::sync::atomic::Ordering::SeqCst) == 40).then_some(())
    })
    .await;
    w.stop().await;
    assert_eq!(q.counts(KIND).await.unwrap().done, 60);
}
