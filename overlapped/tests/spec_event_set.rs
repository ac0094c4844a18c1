//! SPEC S23–S25 for [`EventSet`]: a persistent set of events whose waits follow
//! `WSAWaitForMultipleEvents` and cost what is signalled, not what is in the set.
//!
//! The cost is checked by counting, never by timing: [`EventSet::examined`] counts the member
//! events a set's waits look at, and a wait on 10,000 members must look at exactly as many as a
//! wait on a handful.

#[macro_use]
mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use overlapped::{
    wait_for_events, Error, Event, EventSet, Overlapped, Started, WaitExResult, WaitFor, WaitResult,
};

const POLL: Option<Duration> = Some(Duration::ZERO);

/// A set of `n` fresh manual-reset events, at indexes 0..n.
fn set_of(n: usize) -> (EventSet, Vec<Event>) {
    let set = EventSet::new();
    let events: Vec<Event> = (0..n).map(|_| Event::new()).collect();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(set.add(e), i);
    }
    (set, events)
}

/// S23: the lowest signalled index wins; `ready` returns every signalled index, lowest first.
#[test]
fn s23_set_wait_returns_the_lowest_signalled_index() {
    on_every_backend!(|| {
        let (set, events) = set_of(6);
        assert_eq!(set.wait_any(POLL), WaitResult::Timeout);
        assert!(set.ready(POLL).is_empty());
        events[4].set();
        events[1].set();
        events[5].set();
        assert_eq!(set.wait_any(POLL), WaitResult::Signalled(1));
        assert_eq!(set.wait_any(Some(TIMEOUT)), WaitResult::Signalled(1));
        assert_eq!(set.ready(POLL), [1, 4, 5]);
        events[1].reset();
        assert_eq!(set.wait_any(POLL), WaitResult::Signalled(4));
        // A removed member no longer counts; the others keep their indexes.
        assert!(set.remove_index(4).unwrap().same_as(&events[4]));
        assert_eq!(set.wait_any(POLL), WaitResult::Signalled(5));
        assert_eq!(set.index_of(&events[5]), Some(5));
    });
}

/// S23: a manual-reset member stays signalled through set waits; an auto-reset one is consumed
/// by the one wait it satisfies; `reset` of a member clears it from the set.
#[test]
fn s23_manual_stays_auto_is_consumed_reset_clears() {
    on_every_backend!(|| {
        let set = EventSet::new();
        let (manual, auto) = (Event::new(), Event::new_auto_reset());
        assert_eq!((set.add(&auto), set.add(&manual)), (0, 1));
        auto.set();
        manual.set();
        assert_eq!(set.wait_any(POLL), WaitResult::Signalled(0));
        assert!(!auto.is_set(), "the satisfied auto-reset event is consumed");
        for _ in 0..3 {
            assert_eq!(set.wait_any(POLL), WaitResult::Signalled(1), "manual stays");
        }
        assert!(manual.is_set());

        auto.set();
        assert_eq!(set.ready(POLL), [0, 1]);
        assert!(
            !auto.is_set(),
            "ready consumes the auto-reset events it returns"
        );
        assert_eq!(set.ready(POLL), [1]);

        manual.reset();
        assert_eq!(set.wait_any(POLL), WaitResult::Timeout);
        auto.set();
        auto.reset();
        assert!(
            set.ready(POLL).is_empty(),
            "reset cleared the auto-reset member too"
        );
    });
}

/// S23: one signal of an auto-reset event satisfies exactly one wait, among waits on two sets
/// and a plain wait competing for it.
#[test]
fn s23_auto_reset_member_is_consumed_once_across_competing_waiters() {
    on_every_backend!(|| {
        const ROUNDS: usize = 150;
        let deadline = Instant::now() + TIMEOUT;
        let event = Event::new_auto_reset();
        let total = Arc::new(AtomicUsize::new(0));
        let slice = Some(Duration::from_millis(10));
        let mut waiters = Vec::new();
        for kind in 0..3 {
            let (event, total) = (event.clone(), total.clone());
            waiters.push(thread::spawn(move || {
                let set = EventSet::new();
                set.add(&Event::new()); // so that the auto-reset event sits at index 1
                set.add(&event);
                let mut took = 0;
                while total.load(Ordering::SeqCst) < ROUNDS && Instant::now() < deadline {
                    let won = match kind {
                        0 => wait_for_events(&[&event], WaitFor::Any, slice).unwrap(),
                        1 => set.wait_any(slice),
                        _ => match set.ready(slice)[..] {
                            [] => WaitResult::Timeout,
                            [i] => WaitResult::Signalled(i),
                            ref many => panic!("only one member was signalled: {many:?}"),
                        },
                    };
                    if won != WaitResult::Timeout {
                        assert_eq!(won, WaitResult::Signalled(if kind == 0 { 0 } else { 1 }));
                        took += 1;
                        total.fetch_add(1, Ordering::SeqCst);
                    }
                }
                took
            }));
        }
        for round in 0..ROUNDS {
            event.set();
            // The next signal only once this one is taken, so that no two signals merge.
            while event.is_set() {
                assert!(Instant::now() < deadline, "round {round} was never taken");
                thread::yield_now();
            }
        }
        let took: Vec<usize> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
        assert_eq!(
            took.iter().sum::<usize>(),
            ROUNDS,
            "taken per waiter: {took:?}"
        );
    });
}

/// S24: a wait on 10,000 members with one signalled returns it, and examines exactly one member,
/// as a wait on a set of three does; `ready` examines only the signalled ones.
#[test]
fn s24_work_per_wait_does_not_grow_with_the_set() {
    on_every_backend!(|| {
        for n in [3, 10_000] {
            let (set, events) = set_of(n);
            let lonely = n - 2;
            events[lonely].set();
            let before = set.examined();
            assert_eq!(set.wait_any(POLL), WaitResult::Signalled(lonely));
            assert_eq!(set.examined() - before, 1, "{n} members, one signalled");

            // Signalled while the wait sleeps.
            events[lonely].reset();
            let setter = {
                let event = events[0].clone();
                thread::spawn(move || {
                    settle_time();
                    event.set();
                })
            };
            let before = set.examined();
            assert_eq!(set.wait_any(Some(TIMEOUT)), WaitResult::Signalled(0));
            setter.join().unwrap();
            assert_eq!(set.examined() - before, 1, "{n} members, woken by one");

            events[1].set();
            let before = set.examined();
            assert_eq!(set.ready(POLL), [0, 1]);
            assert_eq!(set.examined() - before, 2, "{n} members, two signalled");

            // For contrast, a poll on a set with nothing signalled examines nothing at all.
            events[0].reset();
            events[1].reset();
            let before = set.examined();
            assert_eq!(set.wait_any(POLL), WaitResult::Timeout);
            assert_eq!(set.examined(), before);
        }
    });
}

/// S25: events may be in several sets and waited on directly at the same time; each sees the same
/// signal, and a reset clears it everywhere.
#[test]
fn s25_events_shared_between_sets_and_plain_waits() {
    on_every_backend!(|| {
        let (a, events) = set_of(3);
        let b = EventSet::new();
        assert_eq!(b.add(&events[2]), 0);
        assert_eq!(b.add(&events[0]), 1);
        events[2].set();
        assert_eq!(a.wait_any(POLL), WaitResult::Signalled(2));
        assert_eq!(b.wait_any(POLL), WaitResult::Signalled(0));
        let plain = wait_for_events(&[&events[1], &events[2]], WaitFor::Any, POLL).unwrap();
        assert_eq!(plain, WaitResult::Signalled(1));
        events[2].reset();
        assert_eq!(
            (a.wait_any(POLL), b.wait_any(POLL)),
            (WaitResult::Timeout, WaitResult::Timeout)
        );

        // An auto-reset event in both sets: whichever wait takes it, the other no longer sees it.
        let auto = Event::new_auto_reset();
        let (ia, ib) = (a.add(&auto), b.add(&auto));
        auto.set();
        assert_eq!(b.wait_any(POLL), WaitResult::Signalled(ib));
        assert_eq!(a.wait_any(POLL), WaitResult::Timeout);
        auto.set();
        assert!(auto.wait(POLL));
        assert!(a.ready(POLL).is_empty() && b.ready(POLL).is_empty());
        auto.set();
        assert_eq!(a.ready(POLL), [ia]);
        assert!(b.ready(POLL).is_empty());

        // A set wait on one thread, a plain wait on another, one manual event: both wake.
        let shared = events[1].clone();
        let plain = thread::spawn(move || shared.wait(Some(TIMEOUT)));
        let setter = {
            let event = events[1].clone();
            thread::spawn(move || {
                settle_time();
                event.set();
            })
        };
        assert_eq!(a.wait_any(Some(TIMEOUT)), WaitResult::Signalled(1));
        assert!(plain.join().unwrap());
        setter.join().unwrap();
    });
}

/// S21, S25: the event of an overlapped object in a set is signalled by the completion, with no
/// thread inside the library, and the set's wait returns its index.
#[test]
fn s25_a_completion_signals_its_member() {
    on_every_backend!(|| {
        let (set, _idle) = set_of(100);
        let (sock, mut peer) = tcp_pair_std();
        let event = Event::new();
        let index = set.add(&event);
        assert_eq!(index, 100);
        let ov: Overlapped = Overlapped::with_event(event.clone());
        assert_eq!(sock.recv(&ov, vec![vec![0; 8]], 0), Ok(Started::Pending));
        assert_eq!(set.wait_any(POLL), WaitResult::Timeout);
        write_all(&mut peer, b"in a set");
        assert_eq!(set.ready(Some(TIMEOUT)), [index]);
        assert_eq!(ov.result(false), Ok(8));
    });
}

/// S24: dropping a set leaves its events working, alone and in other sets; a set made and dropped
/// many times over the same events leaves nothing behind that a signal would reach.
#[test]
fn s24_dropping_a_set() {
    on_every_backend!(|| {
        let keep = EventSet::new();
        let events: Vec<Event> = (0..4).map(|_| Event::new_auto_reset()).collect();
        keep.add(&events[3]);
        for _ in 0..1_000 {
            let gone = EventSet::new();
            events.iter().for_each(|e| {
                gone.add(e);
            });
            events[1].set();
            assert_eq!(gone.wait_any(POLL), WaitResult::Signalled(1));
        }
        events[3].set();
        assert_eq!(keep.wait_any(POLL), WaitResult::Signalled(0));
        events[2].set();
        assert!(events[2].wait(POLL), "an event outlives the sets it was in");
        // Dropped while a member is signalled: the signal stays with the event.
        let gone = EventSet::new();
        gone.add(&events[0]);
        events[0].set();
        drop(gone);
        assert!(events[0].is_set());
        assert!(events[0].wait(POLL));
    });
}

/// S28: the alertable set wait runs the calling thread's queued routines and returns
/// `IoCompletion` when no member is signalled; a signalled member wins over queued routines.
#[test]
fn s28_alertable_set_wait_runs_routines() {
    on_every_backend!(|| {
        let (set, events) = set_of(2);
        let (sock, _peer) = tcp_pair_std();
        let ran = Rc::new(Cell::new(0));
        let send = |ran: &Rc<Cell<usize>>| {
            let ran = ran.clone();
            let routine =
                move |_: Option<Error>, _: usize, _: Overlapped, _: u32| ran.set(ran.get() + 1);
            let started =
                sock.send_with_routine(Overlapped::new(), vec![b"x".to_vec()], 0, routine);
            assert_eq!(started.unwrap(), Started::Done(1));
        };
        send(&ran);
        assert_eq!(
            set.wait_any_ex(Some(TIMEOUT), true),
            Ok(WaitExResult::IoCompletion)
        );
        assert_eq!(ran.get(), 1);
        assert_eq!(
            set.wait_any_ex(Some(Duration::from_millis(20)), true),
            Ok(WaitExResult::Timeout)
        );

        send(&ran);
        events[1].set();
        assert_eq!(
            set.wait_any_ex(Some(TIMEOUT), true),
            Ok(WaitExResult::Signalled(1))
        );
        assert_eq!(ran.get(), 1, "the signalled member won");
        assert_eq!(set.wait_any_ex(POLL, false), Ok(WaitExResult::Signalled(1)));
        assert_eq!(ran.get(), 1, "a wait that is not alertable runs nothing");
        events[1].reset();
        assert_eq!(
            set.wait_any_ex(Some(TIMEOUT), true),
            Ok(WaitExResult::IoCompletion)
        );
        assert_eq!(ran.get(), 2);
    });
}
