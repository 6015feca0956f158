//! A sleep precise to well under a millisecond, for the benchmark's `sleepNms` handler.
//!
//! Why it exists: tokio's timer wheel ticks once a millisecond and rounds a deadline up to the
//! next tick, so `tokio::time::sleep(5 ms)` takes 5 to 6 ms (6.1 ms mean, measured here). At
//! C=50 that alone caps a 5 ms drain near 8.2k jobs/s, and the protocol's C/d bound (10k)
//! would measure the timer rather than the queue. Node's `setTimeout`, which BullMQ's handler
//! uses, rounds the same way; so `--sleep-timer tokio` stays the default for side-by-side
//! runs, and `--sleep-timer precise` measures the queue's own overhead against C/d.
//!
//! How: one Linux `timerfd` (an hrtimer: nanosecond resolution, no timer slack) is armed for
//! the earliest deadline in a heap, and a driver task awaits it through tokio's reactor, the
//! same epoll that carries the worker's Redis replies. Its expiry wakes the runtime directly;
//! the driver completes every due sleeper and arms the fd for the next deadline. Measured
//! against the alternatives on this machine: a timer thread on a condition variable was 59 µs
//! late to notice a deadline and 89 µs more until the sleeper ran (a second thread to
//! schedule and a cross-thread wake-up); one timer fd per sleeper cost two system calls per
//! sleep, which became the worker process's busiest calls. Sleepers due together (a drain's
//! jobs start in waves) share one expiry and one read here. The handler still awaits, so the
//! worker never blocks.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

/// The timer fd; `AsyncFd` wants `AsRawFd`, which nix's `TimerFd` does not implement.
struct Alarm(TimerFd);

impl AsRawFd for Alarm {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Alarm {
    /// A non-blocking timer fd on the monotonic clock (the clock `Instant` reads), registered
    /// with the current tokio runtime.
    #[allow(unsafe_code)]
    fn new() -> io::Result<AsyncFd<Self>> {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // SAFETY: `register` needs the fd to stay open, and the same fd, for as long as the
        // `AsyncFd` lives. `Alarm` owns the `TimerFd`, which owns the fd and closes it only
        // when dropped, that is, with the `AsyncFd`; nothing replaces it, and `as_raw_fd`
        // returns that one fd every time.
        Ok(unsafe { AsyncFd::register(Self(fd)) }?)
    }

    /// Arms the fd to expire at `at` (a relative one-shot: an `Instant` cannot be turned into
    /// an absolute timespec). A deadline already past fires at once: a zero value would
    /// disarm the fd instead.
    fn arm(&self, at: Instant) -> io::Result<()> {
        let left = at
            .saturating_duration_since(Instant::now())
            .max(Duration::from_nanos(1));
        self.0.set(
            Expiration::OneShot(TimeSpec::from_duration(left)),
            TimerSetTimeFlags::empty(),
        )?;
        Ok(())
    }
}

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

struct State {
    due: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    /// The deadline the fd is armed for, if any (it may have passed, not yet handled).
    armed: Option<Instant>,
}

struct Shared {
    state: Mutex<State>,
    alarm: AsyncFd<Alarm>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Completes every sleeper due by now and arms the fd for the next one.
    fn fire_due(&self) -> io::Result<()> {
        let mut st = self.lock();
        let now = Instant::now();
        while st.due.peek().is_some_and(|Reverse(e)| e.at <= now) {
            if let Some(Reverse(e)) = st.due.pop() {
                // The sleeper may be gone (its job was cancelled): nothing to wake then.
                let _ = e.wake.send(());
            }
        }
        st.armed = st.due.peek().map(|Reverse(e)| e.at);
        match st.armed {
            Some(at) => self.alarm.get_ref().arm(at),
            None => Ok(()),
        }
    }
}

/// The timer. Create it inside the runtime that will sleep on it; dropping it stops its
/// driver and completes the sleepers still waiting.
pub(crate) struct PreciseTimer {
    shared: Arc<Shared>,
    driver: tokio::task::JoinHandle<()>,
}

impl PreciseTimer {
    /// Fails when the system has no timer fds (not Linux, or out of file descriptors).
    pub(crate) fn start() -> io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                due: BinaryHeap::new(),
                seq: 0,
                armed: None,
            }),
            alarm: Alarm::new()?,
        });
        let driver = tokio::spawn(drive(shared.clone()));
        Ok(Self { shared, driver })
    }

    /// A future that completes `d` from now (counted from this call, not from its first
    /// poll), without blocking the caller's thread.
    pub(crate) fn sleep(&self, d: Duration) -> impl std::future::Future<Output = ()> + 'static {
        let at = Instant::now() + d;
        let (wake, woken) = oneshot::channel();
        if !d.is_zero() {
            let mut st = self.shared.lock();
            st.seq += 1;
            let seq = st.seq;
            st.due.push(Reverse(Entry { at, seq, wake }));
            if st.armed.is_none_or(|armed| at < armed) {
                st.armed = Some(at);
                if self.shared.alarm.get_ref().arm(at).is_err() {
                    // Never seen (the fd is valid and the value in range): the driver
                    // re-arms on its next expiry; this sleeper then waits a little longer.
                    st.armed = None;
                }
            }
        }
        async move {
            // Not registered (`d` is zero), or the timer was dropped: nothing to wait for.
            let _ = woken.await;
        }
    }
}

impl Drop for PreciseTimer {
    fn drop(&mut self) {
        self.driver.abort();
        // Dropping the senders completes the sleepers still waiting.
        self.shared.lock().due.clear();
    }
}

/// Awaits each expiry of the fd and completes the sleepers due by then.
async fn drive(shared: Arc<Shared>) {
    loop {
        let Ok(mut ready) = shared.alarm.readable().await else {
            return;
        };
        match ready.try_io(|a| a.get_ref().0.wait().map_err(io::Error::from)) {
            // The expiry is consumed: the next arming brings a fresh edge, so the cached
            // readiness goes now rather than on a wasted read later.
            Ok(_) => ready.clear_ready(),
            // Re-armed before this read (arming drops a pending expiry): look at the heap
            // anyway; `try_io` has cleared the readiness.
            Err(_would_block) => {}
        }
        if shared.fire_due().is_err() {
            return;
        }
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
        for (i, ms) in [(0, 30u64), (1, 10), (2, 20), (3, 10)] {
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
        let order = order.lock().unwrap().clone();
        assert_eq!(order[2..], [2, 0]);
        assert!(
            order[..2].contains(&1) && order[..2].contains(&3),
            "{order:?}"
        );
    }

    #[tokio::test]
    async fn back_to_back_sleeps_each_wait_their_full_time() {
        let timer = PreciseTimer::start().unwrap();
        for ms in [3, 1, 2, 0, 1] {
            let t = Instant::now();
            timer.sleep(Duration::from_millis(ms)).await;
            assert!(t.elapsed() >= Duration::from_millis(ms));
        }
        assert!(timer.shared.lock().due.is_empty());
    }

    #[tokio::test]
    async fn a_later_sleeper_does_not_delay_an_earlier_one_and_a_cancelled_one_is_skipped() {
        let timer = PreciseTimer::start().unwrap();
        let cancelled = timer.sleep(Duration::from_millis(1));
        drop(cancelled);
        let long = timer.sleep(Duration::from_secs(3600));
        let t = Instant::now();
        timer.sleep(Duration::from_millis(2)).await;
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(2), "{took:?}");
        assert!(took < Duration::from_secs(1), "{took:?}");
        drop(long);
    }

    #[tokio::test]
    async fn a_dropped_timer_releases_its_sleepers() {
        let timer = PreciseTimer::start().unwrap();
        let mut sleeping = Box::pin(timer.sleep(Duration::from_secs(3600)));
        assert!(futures::poll!(&mut sleeping).is_pending());
        drop(timer);
        sleeping.await;
    }
}
