//! A process nobody scrapes does not keep its histogram samples: the recorder's upkeep folds
//! them into their buckets and frees them (`leadq_platform::metrics::install`).
//!
//! A test binary of its own, because it counts the bytes the whole process holds (a counting
//! global allocator) and must be the only test doing anything in it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use leadq_platform::metrics;

/// The system allocator, counting the bytes currently allocated. (A global allocator can only
/// be written with `unsafe`: the second reviewed exception to the workspace's `unsafe_code`
/// lint, with the bench's timer fd; it only forwards to `System`.)
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn record(n: usize) {
    let h = ::metrics::histogram!(metrics::JOB_DURATION_SECONDS, "kind" => "upkeep_test");
    for i in 0..n {
        h.record((i % 100) as f64 / 1000.0);
    }
}

#[test]
fn an_unscraped_process_lets_go_of_its_histogram_samples() {
    let _handle = metrics::install();
    let before = live();
    // 400,000 samples: 3.2 MB of raw values, held until an upkeep or a scrape.
    record(400_000);
    let held = live() - before;
    assert!(
        held > 3_000_000,
        "the samples should be held first: {held} bytes"
    );
    // Nobody renders the metrics here. Within two upkeep periods the samples must be gone.
    // (The upkeep thread frees the samples through epoch-based reclamation, which runs as
    // threads record: this one records a few samples a round to let it.)
    let deadline = Instant::now() + metrics::UPKEEP_EVERY * 2 + Duration::from_secs(2);
    let mut left = held;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        record(2_000);
        left = live() - before;
        if left < held / 4 {
            return;
        }
    }
    panic!("{left} of {held} bytes of histogram samples still held after {deadline:?}");
}
