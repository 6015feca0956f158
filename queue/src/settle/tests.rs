//! The group-commit settler, driven by a recording settle function instead of Redis: what it
//! groups, in which calls, and that each waiter gets its own answer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;

use super::{Entry, SettleFn, Settler};
use crate::{Settle, Settled};

/// The calls a settler made: (shard, job ids in order).
type Calls = Arc<Mutex<Vec<(u16, Vec<String>)>>>;

/// A settle function that records each call, takes `delay` (a round trip), and answers every
/// entry with `Retried { delay: <its index in the call> ms }`, or `None` for shard 13.
fn recording(delay: Duration) -> (SettleFn, Calls) {
    let calls: Calls = Arc::default();
    let seen = calls.clone();
    let f: SettleFn = Arc::new(move |shard, entries: Vec<Entry>| {
        seen.lock()
            .unwrap()
            .push((shard, entries.iter().map(|e| e.0.clone()).collect()));
        async move {
            tokio::time::sleep(delay).await;
            (shard != 13).then(|| {
                (0..entries.len())
                    .map(|i| Settled::Retried {
                        delay: Duration::from_millis(i as u64),
                    })
                    .collect()
            })
        }
        .boxed()
    });
    (f, calls)
}

fn entry(id: &str) -> Entry {
    (id.to_owned(), format!("w:{id}"), Settle::Ok)
}

#[tokio::test]
async fn a_lone_job_is_settled_at_once_in_a_call_of_its_own() {
    let (f, calls) = recording(Duration::ZERO);
    let settler = Settler::start(f);
    let got = settler.settle(0, entry("a")).await;
    assert_eq!(
        got,
        Some(Settled::Retried {
            delay: Duration::ZERO
        })
    );
    assert_eq!(*calls.lock().unwrap(), vec![(0, vec!["a".to_owned()])]);
}

#[tokio::test]
async fn jobs_finishing_together_share_calls_and_each_gets_its_own_answer() {
    let (f, calls) = recording(Duration::from_millis(20));
    let settler = Arc::new(Settler::start(f));
    let n = 100;
    let waiters: Vec<_> = (0..n)
        .map(|i| {
            let s = settler.clone();
            tokio::spawn(async move { (i, s.settle(0, entry(&i.to_string())).await) })
        })
        .collect();
    let mut answers = Vec::new();
    for w in waiters {
        answers.push(w.await.unwrap());
    }
    let calls = calls.lock().unwrap().clone();
    // Every job settled exactly once, in far fewer calls than jobs (two loops: while one call
    // is in flight the rest gather).
    let mut settled: Vec<String> = calls.iter().flat_map(|(_, ids)| ids.clone()).collect();
    settled.sort();
    let mut want: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    want.sort();
    assert_eq!(settled, want);
    assert!(calls.len() < n / 4, "{} calls for {n} jobs", calls.len());
    // Each waiter's answer is the one at its own position in its call.
    for (i, answer) in answers {
        let (_, ids) = calls
            .iter()
            .find(|(_, ids)| ids.contains(&i.to_string()))
            .unwrap();
        let pos = ids.iter().position(|id| *id == i.to_string()).unwrap();
        assert_eq!(
            answer,
            Some(Settled::Retried {
                delay: Duration::from_millis(pos as u64)
            })
        );
    }
}

#[tokio::test]
async fn a_batch_is_split_by_shard_one_call_each() {
    let (f, calls) = recording(Duration::from_millis(20));
    let settler = Arc::new(Settler::start(f));
    // Occupy both loops so the next entries gather into one batch.
    let busy: Vec<_> = (0..2)
        .map(|i| {
            let s = settler.clone();
            tokio::spawn(async move { s.settle(9, entry(&format!("busy{i}"))).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mixed: Vec<_> = [(1, "x1"), (2, "y1"), (1, "x2"), (2, "y2")]
        .into_iter()
        .map(|(shard, id)| {
            let s = settler.clone();
            tokio::spawn(async move { s.settle(shard, entry(id)).await })
        })
        .collect();
    for t in busy.into_iter().chain(mixed) {
        assert!(t.await.unwrap().is_some());
    }
    let calls = calls.lock().unwrap().clone();
    let of = |shard: u16| -> Vec<String> {
        calls
            .iter()
            .filter(|(s, _)| *s == shard)
            .flat_map(|(_, ids)| ids.clone())
            .collect()
    };
    assert_eq!(
        of(1),
        vec!["x1", "x2"],
        "shard 1 keeps its order: {calls:?}"
    );
    assert_eq!(
        of(2),
        vec!["y1", "y2"],
        "shard 2 keeps its order: {calls:?}"
    );
    // They gathered while both loops were busy, so each shard's pair went as one call.
    let per_shard = |shard: u16| calls.iter().filter(|(s, _)| *s == shard).count();
    assert_eq!((per_shard(1), per_shard(2)), (1, 1), "{calls:?}");
}

#[tokio::test]
async fn a_call_that_fails_answers_none_to_every_waiter_of_it() {
    let (f, _) = recording(Duration::ZERO);
    let settler = Settler::start(f);
    assert_eq!(settler.settle(13, entry("doomed")).await, None);
    // The settler carries on.
    assert!(settler.settle(0, entry("next")).await.is_some());
}

#[tokio::test]
async fn dropping_the_settler_ends_its_loops() {
    let (f, _) = recording(Duration::ZERO);
    let weak = Arc::downgrade(&f);
    let settler = Settler::start(f);
    assert!(settler.settle(0, entry("a")).await.is_some());
    drop(settler);
    // The loops hold the settle function; once they end, it is freed.
    for _ in 0..100 {
        if weak.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the settler's loops outlived it");
}
