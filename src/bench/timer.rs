//! A sleep precise to well under a millisecond, for the benchmark's `sleepNms` handler.
//!
//! Why it exists: tokio's timer wheel ticks once a millisecond and rounds a deadline up to the
//! next tick, so `tokio::time::sleep(5 ms)` takes 5 to 6 ms (6.1 ms mean, measured here). At
//! C=50 that alone caps a 5 ms drain near 8.2k jobs/s, and the protocol's C/d bound (10k)
//! would measure the timer rather than the queue. Node's `setTimeout`, which BullMQ's handler
//! uses, rounds the same way; so `--sleep-timer tokio` stays the default for side-by-side
//! runs, and `--sleep-timer precise` measures the queue's own overhead against C/d.
//!
//! How: deadlines wait in a heap owned by one thread, which sleeps on a condition variable
//! with the exact timeout to the earliest (a futex with a monotonic deadline: Linux hrtimers,
//! with the thread's timer slack cut from 50 µs to 1 µs) and completes each due sleeper's oneshot. The handler still awaits, so the
//! worker never blocks.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// One sleeper: due at `at`; `seq` keeps entries with equal deadlines distinct and in order.
struct Entry {
    at: Instant,
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Default)]
struct State {
    due: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The timer; its thread ends when the timer is dropped.
pub(crate) struct PreciseTimer {
    shared: Arc<Shared>,
}

impl PreciseTimer {
    pub(crate) fn start() -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let inner = shared.clone();
        std::thread::Builder::new()
            .name("bench-timer".into())
            .spawn(move || {
                // Linux lets a timed wait end up to the thread's timer slack (50 µs by default)
                // late, to batch wake-ups; this thread's whole point is to be on time.
                #[cfg(target_os = "linux")]
                let _ = nix::sys::prctl::set_timerslack(1_000);
                run(&inner)
            })?;
        Ok(Self { shared })
    }

    /// A future that completes `d` from now (counted from this call, not from its first
    /// poll), without blocking the caller's thread.
    pub(crate) fn sleep(&self, d: Duration) -> impl std::future::Future<Output = ()> + 'static {
        let (wake, woken) = oneshot::channel();
        let at = Instant::now() + d;
        {
            let mut st = self.shared.lock();
            let earlier = st.due.peek().is_none_or(|Reverse(e)| at < e.at);
            st.seq += 1;
            let seq = st.seq;
            st.due.push(Reverse(Entry { at, seq, wake }));
            if earlier {
                // The thread sleeps until the old earliest deadline: make it look again.
                self.shared.changed.notify_one();
            }
        }
        async move {
            // An error means the timer was dropped: nothing left to wait for.
            let _ = woken.await;
        }
    }
}

impl Drop for PreciseTimer {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.changed.notify_one();
    }
}

fn run(shared: &Shared) {
    let mut st = shared.lock();
    loop {
        if st.closed {
            return;
        }
        let now = Instant::now();
        while st.due.peek().is_some_and(|Reverse(e)| e.at <= now) {
            if let Some(Reverse(e)) = st.due.pop() {
                // The sleeper may be gone (its job was cancelled): nothing to wake then.
                let _ = e.wake.send(());
            }
        }
        st = match st.due.peek() {
            Some(Reverse(e)) => {
                let wait = e.at.saturating_duration_since(now);
                shared
                    .changed
                    .wait_timeout(st, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            None => shared.changed.wait(st).unwrap_or_else(|p| p.into_inner()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sleepers_wake_in_deadline_order_and_not_early() {
        let timer = Arc::new(PreciseTimer::start().unwrap());
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, ms) in [(0, 30u64), (1, 10), (2, 20)] {
            let (timer, order) = (timer.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                timer.sleep(Duration::from_millis(ms)).await;
                assert!(t.elapsed() >= Duration::from_millis(ms));
                order.lock().unwrap().push(i);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![1, 2, 0]);
    }

    #[tokio::test]
    async fn a_dropped_timer_releases_its_sleepers() {
        let timer = PreciseTimer::start().unwrap();
        let sleeping = timer.sleep(Duration::from_secs(3600));
        tokio::pin!(sleeping);
        assert!(futures::poll!(&mut sleeping).is_pending());
        drop(timer);
        sleeping.await;
    }
}
