//! The counters behind [`Stats`]: kept per thread, added up when read.
//!
//! Every operation bumps one or two of them. Shared atomic counters would cost a locked
//! instruction per bump, and with several workers the counters' cache line would move between
//! their CPUs at every operation. Instead each thread writes counters of its own (a plain load
//! and store: only that thread writes them), and [`stats`] adds up every thread's. A thread that
//! exits adds its counts to the totals of the threads gone, so nothing counted is lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::Stats;
use crate::event::lock;

/// What is counted.
#[derive(Clone, Copy)]
pub(crate) enum Counter {
    /// Requests handed to the kernel.
    Submissions = 0,
    /// Kernel completions received.
    Completions = 1,
    /// Entries into the kernel to submit or to wait.
    KernelEntries = 2,
    /// Operations that completed at once.
    Immediate = 3,
}

/// One thread's counts, or the threads gone's.
#[derive(Default)]
struct Counts([AtomicU64; 4]);

/// Every living thread that has counted something.
static THREADS: Mutex<Vec<Arc<Counts>>> = Mutex::new(Vec::new());
/// The counts of the threads that have exited.
static GONE: Counts = Counts([
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
]);

/// A thread's counts, listed in [`THREADS`] while the thread lives.
struct Registered(Arc<Counts>);

impl Registered {
    fn new() -> Registered {
        let counts = Arc::new(Counts::default());
        lock(&THREADS).push(counts.clone());
        Registered(counts)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        // Moved under the list's lock, so that `stats` counts them exactly once.
        let mut threads = lock(&THREADS);
        threads.retain(|counts| !Arc::ptr_eq(counts, &self.0));
        for (gone, mine) in GONE.0.iter().zip(&self.0 .0) {
            gone.fetch_add(mine.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}

thread_local! {
    static MINE: Registered = Registered::new();
}

/// Adds one to `counter`.
pub(crate) fn count(counter: Counter) {
    count_many(counter, 1);
}

/// Adds `n` to `counter`.
pub(crate) fn count_many(counter: Counter, n: usize) {
    let added = MINE.try_with(|mine| {
        // Only this thread writes its counts; readers see either value.
        let slot = &mine.0 .0[counter as usize];
        slot.store(slot.load(Ordering::Relaxed) + n as u64, Ordering::Relaxed);
    });
    if added.is_err() {
        // The thread is exiting and its counts are gone already.
        GONE.0[counter as usize].fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The engine's counters now: every thread's, added up.
pub fn stats() -> Stats {
    let threads = lock(&THREADS);
    let total = |counter: Counter| -> u64 {
        let i = counter as usize;
        let living: u64 = threads.iter().map(|c| c.0[i].load(Ordering::Relaxed)).sum();
        living + GONE.0[i].load(Ordering::Relaxed)
    };
    Stats {
        submissions: total(Counter::Submissions),
        completions: total(Counter::Completions),
        kernel_entries: total(Counter::KernelEntries),
        immediate: total(Counter::Immediate),
    }
}
