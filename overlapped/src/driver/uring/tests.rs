//! The submission queue shared by threads that push and threads that only look at it: every
//! entry pushed reaches the kernel exactly once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use io_uring::opcode;

use super::Uring;
use crate::event::lock;

/// No-ops each pushing thread submits.
const PUSHES_PER_THREAD: usize = 40_000;
const PUSHERS: usize = 2;

/// Takes the completions that have arrived, returning how many.
fn drain(ring: &Uring) -> usize {
    let _guard = lock(&ring.cq_lock);
    // SAFETY: `cq_lock` is held, so no other completion view of this ring exists.
    let cq = unsafe { ring.ring.completion_shared() };
    cq.count()
}

/// A look at the queue (`has_queued`, which `flush` and `reap` make) while other threads push
/// must not move the queue's tail: a tail stored back behind the kernel's head made the kernel
/// submit the whole ring of stale entries again; one stored over a newer push loses that entry.
/// Either way the number of completions would differ from the number of entries pushed.
#[test]
fn looking_at_the_queue_while_others_push_neither_loses_nor_repeats_entries() {
    let ring = Arc::new(Uring::new(false).expect("an io_uring"));
    let done = Arc::new(AtomicBool::new(false));
    let lookers: Vec<_> = (0..2)
        .map(|_| {
            let (ring, done) = (ring.clone(), done.clone());
            thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    let _ = ring.has_queued();
                }
            })
        })
        .collect();
    let pushers: Vec<_> = (0..PUSHERS)
        .map(|_| {
            let ring = ring.clone();
            thread::spawn(move || {
                for _ in 0..PUSHES_PER_THREAD {
                    let nop = opcode::Nop::new().build().user_data(0);
                    ring.push(nop, false).expect("a push");
                }
            })
        })
        .collect();
    let mut completed = 0;
    while !pushers.iter().all(|p| p.is_finished()) {
        completed += drain(&ring);
    }
    for pusher in pushers {
        pusher.join().expect("a pusher");
    }
    done.store(true, Ordering::Relaxed);
    for looker in lookers {
        looker.join().expect("a looker");
    }
    let expected = PUSHERS * PUSHES_PER_THREAD;
    let deadline = Instant::now() + Duration::from_secs(5);
    while completed < expected && Instant::now() < deadline {
        ring.enter(0, None).expect("an entry into the kernel");
        completed += drain(&ring);
    }
    // Anything submitted twice would complete by now as well.
    thread::sleep(Duration::from_millis(20));
    ring.enter(0, None).expect("an entry into the kernel");
    completed += drain(&ring);
    assert_eq!(
        completed, expected,
        "completions for {expected} no-ops pushed"
    );
}
