//! The real `leadq worker` process, stopped with SIGTERM and killed with SIGKILL.
//!
//! A lock on the `leads` table holds handlers mid-job, so the signals land while jobs are
//! in flight, deterministically and without sleeps in the code under test.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use leadq_testkit::{lead_job, sample_lead, spawn_app, wait_for, TestApp};
use sqlx::{Connection, PgConnection};

fn worker_process(app: &TestApp, concurrency: &str) -> Child {
    #[allow(clippy::disallowed_methods)]
    let verbose = std::env::var("TEST_LOG").is_ok();
    crate::leadq_cmd(app)
        .arg("worker")
        .env("LEADQ_WORKER_ADDR", "127.0.0.1:0")
        .env("LEADQ_LEASE_MS", "2000")
        .env("LEADQ_SHUTDOWN_TIMEOUT_SECS", "2")
        .env("LEADQ_LEAD_SCORE_CONCURRENCY", concurrency)
        .env("LEADQ_LOG", if verbose { "info" } else { "error" })
        .stdout(Stdio::null())
        .stderr(if verbose {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("start leadq worker")
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -TERM failed");
}

async fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    wait_for("the worker to exit", within, || {
        let status = child.try_wait().expect("try_wait");
        async move { status }
    })
    .await
}

async fn enqueue_leads(app: &TestApp, n: usize) {
    let jobs = (0..n)
        .map(|i| {
            // Producers seal personal data; these leads carry none.
            let mut lead = sample_lead(&format!("tg-{i}"));
            lead.as_object_mut().unwrap().remove("email");
            lead_job(
                app.tenant.tenant_id,
                &app.key_actor(),
                &format!("msg-{i}"),
                &format!("corr-{i}"),
                lead,
            )
        })
        .collect();
    app.queue.enqueue(jobs).await.unwrap();
}

/// Holds `leads` locked against writes until dropped (rolled back).
async fn lock_leads(app: &TestApp) -> PgConnection {
    let mut conn = PgConnection::connect(&app.db.url).await.unwrap();
    sqlx::query("begin").execute(&mut conn).await.unwrap();
    sqlx::query("lock table leads in share row exclusive mode")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

async fn completed_runs(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from job_runs where status = 'completed'")
        .fetch_one(&mut *app.own().await)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_with_sigterm_mid_batch_loses_no_job() {
    const N: usize = 300;
    let app = spawn_app().await;
    enqueue_leads(&app, N).await;

    let mut first = worker_process(&app, "8");
    wait_for("some completions", Duration::from_secs(30), || async {
        (app.queue.counts("lead_score").await.unwrap().done >= 10).then_some(())
    })
    .await;
    let lock = lock_leads(&app).await;
    wait_for("jobs held in flight", Duration::from_secs(10), || async {
        (app.queue.counts("lead_score").await.unwrap().running >= 1).then_some(())
    })
    .await;
    sigterm(&first);
    let status = wait_exit(&mut first, Duration::from_secs(20)).await;
    assert!(status.success(), "graceful stop exits 0, got {status}");

    // Nothing is left leased: unfinished jobs were handed back, none lost.
    let c = app.queue.counts("lead_score").await.unwrap();
    assert_eq!(c.running, 0, "{c:?}");
    assert_eq!(c.done + c.pending + c.scheduled, N as u64, "{c:?}");
    assert!(c.pending > 0, "the stop really was mid-batch: {c:?}");
    let handed_back = c.pending;
    drop(lock);

    let mut second = worker_process(&app, "8");
    wait_for("every job completed", Duration::from_secs(60), || async {
        (completed_runs(&app).await == N as i64).then_some(())
    })
    .await;
    sigterm(&second);
    assert!(wait_exit(&mut second, Duration::from_secs(20))
        .await
        .success());

    let c = app.queue.counts("lead_score").await.unwrap();
    assert_eq!(
        (c.done, c.dead, c.running, c.pending),
        (N as u64, 0, 0, 0),
        "{c:?}"
    );
    let leads: i64 = sqlx::query_scalar("select count(*) from leads")
        .fetch_one(&mut *app.own().await)
        .await
        .unwrap();
    assert_eq!(leads, N as i64);
    // Handing back used no attempt: every job completed on its first attempt.
    let max_attempt: i32 = sqlx::query_scalar("select max(attempts) from job_runs")
        .fetch_one(&mut *app.own().await)
        .await
        .unwrap();
    assert_eq!(max_attempt, 1, "{handed_back} jobs were handed back");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_has_its_jobs_run_by_another_after_the_lease_expires() {
    const N: usize = 300;
    let app = spawn_app().await;
    enqueue_leads(&app, N).await;
    let mut victim = worker_process(&app, "5");
    // The victim completes some jobs first, so the test can tell they are not run again.
    wait_for("some completions", Duration::from_secs(30), || async {
        (app.queue.counts("lead_score").await.unwrap().done >= 10).then_some(())
    })
    .await;
    let lock = lock_leads(&app).await;
    wait_for("jobs held in flight", Duration::from_secs(20), || async {
        (app.queue.counts("lead_score").await.unwrap().running >= 1).then_some(())
    })
    .await;
    // Let the prefetch fill up behind the blocked handlers.
    tokio::time::sleep(Duration::from_millis(300)).await;
    victim.kill().expect("SIGKILL");
    victim.wait().expect("reap the killed worker");
    // The dead worker's leases stay until they expire: these are the jobs in flight.
    let at_kill = app.queue.counts("lead_score").await.unwrap();
    let (in_flight, completed_before) = (at_kill.running, at_kill.done);
    assert!(in_flight >= 1, "{at_kill:?}");
    drop(lock);

    let mut rescuer = worker_process(&app, "5");
    // Redis is the record of completion here: a `job_runs` row of a job the victim completed
    // just before the kill may still say `running` (its observer write died with it).
    wait_for("every job completed", Duration::from_secs(60), || async {
        (app.queue.counts("lead_score").await.unwrap().done == N as u64).then_some(())
    })
    .await;
    sigterm(&rescuer);
    assert!(wait_exit(&mut rescuer, Duration::from_secs(20))
        .await
        .success());

    let c = app.queue.counts("lead_score").await.unwrap();
    assert_eq!(
        c.recovered, in_flight,
        "the killed worker's leases were recovered: {c:?}"
    );
    assert_eq!(
        (c.done, c.dead, c.running, c.pending),
        (N as u64, 0, 0, 0),
        "{c:?}"
    );
    // Duplicates only among the in-flight jobs: exactly those were leased twice (a lease
    // counts an attempt), and no job the victim had completed ran again.
    let leased_twice: i64 = sqlx::query_scalar("select count(*) from job_runs where attempts > 1")
        .fetch_one(&mut *app.own().await)
        .await
        .unwrap();
    assert_eq!(leased_twice, in_flight as i64);
    let leads: i64 = sqlx::query_scalar("select count(*) from leads")
        .fetch_one(&mut *app.own().await)
        .await
        .unwrap();
    assert_eq!(leads, N as i64);
    println!(
        "worker SIGKILL: {N} enqueued, {completed_before} completed before the kill, \
         {in_flight} in flight, {} completed in all, {leased_twice} run twice (the in-flight \
         ones), {leads} leads stored (0 lost, 0 duplicated), {} dead",
        c.done, c.dead
    );
    app.stop().await;
}
