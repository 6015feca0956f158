//! Ingest admission in the queue engine (`Queue::admit`): the GCRA rate limit with its burst,
//! the daily quota, and what a refusal leaves behind. Driven against the real Redis with a
//! fresh key prefix per test; the end-to-end path through the API is in `limits.rs`.

use std::time::Duration;

use leadq_queue::{Admission, AdmitLimits, Queue};
use leadq_testkit::{queue_prefix, settings, signer};
use uuid::Uuid;

async fn queue() -> Queue {
    let s = settings("postgres://unused@127.0.0.1/unused", &queue_prefix(), &[]);
    Queue::connect(s.redis_url(), s.queue.clone(), signer(&s))
        .await
        .unwrap()
}

fn limits(per_second: i32, burst: i32, per_day: i32) -> AdmitLimits {
    AdmitLimits {
        per_second,
        burst,
        per_day,
    }
}

#[tokio::test]
async fn a_burst_is_admitted_at_once_and_the_next_request_waits_about_one_interval() {
    let q = queue().await;
    let t = Uuid::new_v4();
    let l = limits(2, 5, 1_000);
    for i in 0..5 {
        assert_eq!(q.admit(t, &l).await.unwrap(), Admission::Admitted, "#{i}");
    }
    match q.admit(t, &l).await.unwrap() {
        // 2/s: the sixth may go about 500 ms after the burst began (less what has passed).
        Admission::RateLimited(d) => {
            assert!(
                d > Duration::ZERO && d <= Duration::from_millis(500),
                "{d:?}"
            )
        }
        other => panic!("expected a rate limit, got {other:?}"),
    }
}

#[tokio::test]
async fn a_burst_of_one_admits_one_at_a_time_and_never_asks_for_a_zero_wait() {
    let q = queue().await;
    let t = Uuid::new_v4();
    // 100,000/s: the interval is 10 µs, below the script's millisecond clock.
    let l = limits(100_000, 1, 1_000_000);
    assert_eq!(q.admit(t, &l).await.unwrap(), Admission::Admitted);
    for _ in 0..50 {
        match q.admit(t, &l).await.unwrap() {
            Admission::Admitted => {}
            Admission::RateLimited(d) => assert!(d >= Duration::from_millis(1), "{d:?}"),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn the_daily_quota_refuses_until_the_next_utc_day() {
    let q = queue().await;
    let t = Uuid::new_v4();
    let l = limits(1_000, 1_000, 3);
    for _ in 0..3 {
        assert_eq!(q.admit(t, &l).await.unwrap(), Admission::Admitted);
    }
    let now = chrono::Utc::now();
    let midnight = (now.date_naive() + chrono::Days::new(1))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let until_midnight = (midnight - now).to_std().unwrap();
    match q.admit(t, &l).await.unwrap() {
        Admission::QuotaExceeded(d) => {
            // Whole seconds to the end of the UTC day, as the script is told.
            let diff = d.abs_diff(until_midnight);
            assert!(
                diff <= Duration::from_secs(2),
                "{d:?} vs {until_midnight:?}"
            );
        }
        other => panic!("expected the quota, got {other:?}"),
    }
}

#[tokio::test]
async fn a_refused_request_consumes_neither_rate_nor_quota() {
    let q = queue().await;
    let t = Uuid::new_v4();
    // One at a time, one a second, two a day.
    let l = limits(1, 1, 2);
    assert_eq!(q.admit(t, &l).await.unwrap(), Admission::Admitted);
    // Refused by the rate many times over, each refusal names the same moment or an earlier
    // one: none of them pushes the next allowed moment further out …
    let mut last = Duration::MAX;
    for _ in 0..10 {
        match q.admit(t, &l).await.unwrap() {
            Admission::RateLimited(d) => {
                assert!(d <= last, "{d:?} after {last:?}");
                last = d;
            }
            other => panic!("expected a rate limit, got {other:?}"),
        }
    }
    // … so at that moment one goes through, and it is only the second of the day: the
    // refusals used none of the quota.
    tokio::time::sleep(last + Duration::from_millis(50)).await;
    assert_eq!(q.admit(t, &l).await.unwrap(), Admission::Admitted);
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    assert!(matches!(
        q.admit(t, &l).await.unwrap(),
        Admission::QuotaExceeded(_)
    ));
}

#[tokio::test]
async fn tenants_are_admitted_independently() {
    let q = queue().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let l = limits(1, 1, 1);
    assert_eq!(q.admit(a, &l).await.unwrap(), Admission::Admitted);
    assert!(matches!(
        q.admit(a, &l).await.unwrap(),
        Admission::RateLimited(_)
    ));
    // A's exhausted rate and quota are A's alone.
    assert_eq!(q.admit(b, &l).await.unwrap(), Admission::Admitted);
}
