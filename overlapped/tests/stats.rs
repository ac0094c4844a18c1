//! The engine's counters (`overlapped::stats`) are kept per thread and added up when read: what a
//! thread counted is still counted after it exits, and counts from several threads add up.
//! The binary holds these tests only, so nothing else runs operations while they measure.

#[macro_use]
mod common;

use std::sync::Mutex;
use std::thread;

use common::*;
use overlapped::{stats, Event, Overlapped, Started};

/// Sends that finish at once: each one counts as an immediate completion.
const SENDS: u64 = 10;

/// The tests of this binary measure the counters one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Sends `SENDS` small messages on each of `threads` fresh connections, each from a thread of its
/// own, which exits; the connections are made before `before` is read and dropped after `after`.
fn sends_from_threads(threads: usize) -> (overlapped::Stats, overlapped::Stats) {
    let (socks, peers): (Vec<_>, Vec<_>) = (0..threads).map(|_| tcp_pair_std()).unzip();
    let before = stats();
    let senders: Vec<_> = socks
        .into_iter()
        .map(|sock| {
            thread::spawn(move || {
                for _ in 0..SENDS {
                    let ov = Overlapped::with_event(Event::new());
                    let started = sock.send(&ov, vec![b"count me".to_vec()], 0).unwrap();
                    assert_eq!(started, Started::Done(8), "a small send finishes at once");
                }
                sock // dropped after the counters are read
            })
        })
        .collect();
    let socks: Vec<_> = senders
        .into_iter()
        .map(|sender| sender.join().expect("the sender finished"))
        .collect();
    let after = stats();
    drop((socks, peers));
    (before, after)
}

#[test]
fn an_exited_threads_counts_are_kept() {
    on_every_backend!(|| {
        let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let (before, after) = sends_from_threads(1);
        assert_eq!(
            after.immediate - before.immediate,
            SENDS,
            "{before:?} -> {after:?}"
        );
    });
}

#[test]
fn counts_of_several_threads_add_up() {
    on_every_backend!(|| {
        let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let (before, after) = sends_from_threads(3);
        assert_eq!(
            after.immediate - before.immediate,
            3 * SENDS,
            "{before:?} -> {after:?}"
        );
    });
}
