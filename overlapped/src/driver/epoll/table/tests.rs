//! The table's rules on their own: registration once per descriptor, readiness by epoch,
//! one attempt per side at a time, exactly-once cancellation, arming on demand.

use super::*;

const IN: u32 = libc::EPOLLIN as u32;
const OUT: u32 = libc::EPOLLOUT as u32;
const FD: RawFd = 7;

fn recv() -> Job {
    Job::RecvMsg {
        fd: FD,
        msg: std::ptr::null_mut(),
        flags: 0,
    }
}

fn send() -> Job {
    Job::SendMsg {
        fd: FD,
        msg: std::ptr::null(),
        flags: 0,
    }
}

fn registered(inserted: Inserted) -> u64 {
    match inserted.arm {
        Some(Arming::Register { token, .. }) => token,
        other => panic!("a first request registers its descriptor, not {other:?}"),
    }
}

fn ready(t: &mut Table, token: u64, events: u32) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    t.ready(token, events, &mut attempts);
    attempts
}

fn finished(t: &mut Table) -> Vec<(u64, i32)> {
    let mut finished = Vec::new();
    t.take_finished(&mut finished);
    finished
}

fn to_rearm(t: &mut Table) -> Vec<(RawFd, Arming)> {
    let mut rearm = Vec::new();
    t.take_rearm(&mut rearm);
    rearm
}

fn runnable(t: &mut Table) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    t.take_runnable(&mut attempts);
    attempts
}

fn ids(attempts: &[Attempt]) -> Vec<u64> {
    attempts.iter().map(|a| a.user_data).collect()
}

#[test]
fn a_descriptor_is_registered_once_and_unknown_until_then() {
    let mut t = Table::default();
    assert_eq!(t.readiness(FD, Side::Read), Readiness::Unknown);
    let token = registered(t.insert(1, FD, recv()));
    assert_eq!(t.readiness(FD, Side::Read), Readiness::NotReady);
    assert_eq!(
        t.readiness(FD, Side::Write),
        Readiness::Ready(0),
        "not known: worth a try"
    );
    t.drained(FD, Side::Write, 0, true);
    let again = t.insert(2, FD, send());
    assert_eq!(again.arm, None, "the registration stays");
    assert!(!again.runnable);
    t.cancel(1);
    t.cancel(2);
    assert_eq!(
        finished(&mut t),
        vec![(1, -libc::ECANCELED), (2, -libc::ECANCELED)]
    );
    let third = t.insert(3, FD, recv());
    assert_eq!(third.arm, None, "no request left does not unregister");
    t.forget(FD);
    let fourth = t.insert(4, FD, recv());
    assert_ne!(
        registered(fourth),
        token,
        "a new registration, a new generation"
    );
}

#[test]
fn an_event_makes_its_side_ready_and_attempts_its_oldest_request() {
    let mut t = Table::default();
    let token = registered(t.insert(1, FD, recv()));
    t.insert(2, FD, recv());
    t.drained(FD, Side::Write, 0, true);
    t.insert(3, FD, send());
    let attempts = ready(&mut t, token, IN);
    assert_eq!(
        ids(&attempts),
        vec![1],
        "only the oldest of the readable side"
    );
    assert_eq!(t.readiness(FD, Side::Read), Readiness::Ready(1));
    assert_eq!(t.readiness(FD, Side::Write), Readiness::NotReady);
    assert!(ready(&mut t, token, IN).is_empty(), "the oldest is busy");
    t.done(&attempts[0], 5, false);
    assert_eq!(finished(&mut t), vec![(1, 5)]);
    let next = runnable(&mut t);
    assert_eq!(
        ids(&next),
        vec![2],
        "the side is still ready: the next request goes"
    );
    let both = ready(&mut t, token, OUT);
    assert_eq!(ids(&both), vec![3]);
}

#[test]
fn drained_in_the_same_epoch_clears_readiness_and_a_later_event_restores_it() {
    let mut t = Table::default();
    let token = registered(t.insert(1, FD, recv()));
    let first = ready(&mut t, token, IN);
    assert_eq!(t.readiness(FD, Side::Read), Readiness::Ready(1));
    // Something arrives while the attempt runs: its EAGAIN says nothing of the new data.
    let during = ready(&mut t, token, IN);
    assert!(during.is_empty(), "busy");
    t.done(&first[0], -libc::EAGAIN, false);
    assert!(finished(&mut t).is_empty(), "not ready: it waits");
    assert_eq!(t.readiness(FD, Side::Read), Readiness::Ready(2));
    let retry = runnable(&mut t);
    assert_eq!(ids(&retry), vec![1], "attempted again for the newer event");
    t.done(&retry[0], -libc::EAGAIN, false);
    assert_eq!(t.readiness(FD, Side::Read), Readiness::NotReady);
    assert!(runnable(&mut t).is_empty());
    // The engine's own attempts report the same way.
    ready(&mut t, token, OUT);
    t.drained(FD, Side::Write, 0, true);
    assert_eq!(
        t.readiness(FD, Side::Write),
        Readiness::Ready(1),
        "stale epoch: ignored"
    );
    t.drained(FD, Side::Write, 1, true);
    assert_eq!(t.readiness(FD, Side::Write), Readiness::NotReady);
}

#[test]
fn a_success_that_drained_the_side_clears_it() {
    let mut t = Table::default();
    let token = registered(t.insert(1, FD, recv()));
    let a = ready(&mut t, token, IN);
    t.done(&a[0], 3, true);
    assert_eq!(finished(&mut t), vec![(1, 3)]);
    assert_eq!(t.readiness(FD, Side::Read), Readiness::NotReady);
    let later = t.insert(2, FD, recv());
    assert!(!later.runnable, "waits for the next event");
}

#[test]
fn a_request_on_a_ready_side_is_runnable_at_once() {
    let mut t = Table::default();
    let token = registered(t.insert(1, FD, recv()));
    let a = ready(&mut t, token, IN);
    t.done(&a[0], 64, false);
    finished(&mut t);
    let inserted = t.insert(2, FD, recv());
    assert!(inserted.runnable);
    assert_eq!(ids(&runnable(&mut t)), vec![2]);
}

#[test]
fn a_fresh_event_answers_a_readiness_request() {
    let mut t = Table::default();
    let token = registered(t.insert(1, FD, Job::PollIn { fd: FD }));
    let a = ready(&mut t, token, IN | libc::EPOLLRDHUP as u32);
    assert_eq!(a[0].answer, Some((IN | libc::EPOLLRDHUP as u32) as i32));
    t.done(&a[0], a[0].answer.unwrap(), false);
    finished(&mut t);
    t.insert(2, FD, Job::PollIn { fd: FD });
    let later = runnable(&mut t);
    assert_eq!(later[0].answer, None, "not fresh: the kernel is asked");
}

#[test]
fn a_cancel_during_an_attempt_ends_once_with_the_attempts_outcome() {
    let mut t = Table::default();
    let token1 = registered(t.insert(1, FD, recv()));
    let token2 = registered(t.insert(2, FD + 1, recv()));
    assert_ne!(token1, token2);
    let a1 = ready(&mut t, token1, IN);
    let a2 = ready(&mut t, token2, IN);
    t.cancel(1);
    t.cancel(2);
    assert!(finished(&mut t).is_empty(), "both are being performed");
    t.done(&a1[0], -libc::EAGAIN, false); // not ready after all: cancelled.
    t.done(&a2[0], 9, false); // moved data: the real result wins.
    assert_eq!(finished(&mut t), vec![(1, -libc::ECANCELED), (2, 9)]);
    t.cancel(1);
    t.cancel(2);
    assert!(finished(&mut t).is_empty(), "already over");
}

#[test]
fn events_of_an_earlier_registration_of_the_same_number_are_ignored() {
    let mut t = Table::default();
    let old = registered(t.insert(1, FD, recv()));
    t.cancel(1);
    finished(&mut t);
    t.forget(FD);
    let new = registered(t.insert(2, FD, recv()));
    assert!(ready(&mut t, old, IN).is_empty());
    assert_eq!(ids(&ready(&mut t, new, IN)), vec![2]);
}

#[test]
fn a_withdrawn_request_leaves_nothing_behind() {
    let mut t = Table::default();
    registered(t.insert(1, FD, recv()));
    t.withdraw(1);
    assert_eq!(t.readiness(FD, Side::Read), Readiness::Unknown);
    assert!(finished(&mut t).is_empty());
    registered(t.insert(2, FD, recv())); // registered again
}

#[test]
fn an_ended_side_stays_ready_unless_proven_empty() {
    let mut t = Table::default();
    let token = registered(t.insert(1, FD, recv()));
    let a = ready(&mut t, token, IN | libc::EPOLLRDHUP as u32);
    // The data before the end of stream, read short: the end of stream is still to be read.
    t.done(&a[0], 3, true);
    assert_eq!(t.readiness(FD, Side::Read), Readiness::Ready(1));
    t.drained(FD, Side::Read, 1, false);
    assert_eq!(t.readiness(FD, Side::Read), Readiness::Ready(1));
    t.drained(FD, Side::Read, 1, true);
    assert_eq!(t.readiness(FD, Side::Read), Readiness::NotReady);
}

/// The events a registration armed on demand reports while requests wait on the read side,
/// on the write side, or on both.
const READING: u32 = SIDE_INTEREST[0] | ONE_SHOT;
const WRITING: u32 = SIDE_INTEREST[1] | ONE_SHOT;
const BOTH: u32 = SIDE_INTEREST[0] | SIDE_INTEREST[1] | ONE_SHOT;

#[test]
fn on_demand_an_event_disarms_and_only_waiting_requests_arm_again() {
    let mut t = Table::new(true);
    let inserted = t.insert(1, FD, recv());
    let token = registered(inserted);
    let attempts = ready(&mut t, token, IN);
    assert_eq!(ids(&attempts), [1]);
    assert_eq!(
        t.readiness(FD, Side::Read),
        Readiness::Unknown,
        "disarmed: arrivals from now on go unreported"
    );
    // The attempt found nothing after all: the request waits, so the registration is armed again.
    t.done(&attempts[0], -libc::EAGAIN, false);
    let rearm = Arming::Rearm {
        token,
        events: READING,
    };
    assert_eq!(to_rearm(&mut t), [(FD, rearm)]);
    assert_eq!(t.readiness(FD, Side::Read), Readiness::NotReady);
    assert_eq!(to_rearm(&mut t), [], "armed once");

    // The next event finishes the request; with nothing waiting, the registration stays off.
    let attempts = ready(&mut t, token, IN);
    t.done(&attempts[0], 5, false);
    assert_eq!(finished(&mut t), [(1, 5)]);
    assert_eq!(
        to_rearm(&mut t),
        [],
        "no request waits: no wake-ups for this socket"
    );
    assert_eq!(t.readiness(FD, Side::Read), Readiness::Unknown);

    // A new request arms it again itself.
    assert_eq!(t.insert(2, FD, recv()).arm, Some(rearm));
    assert_eq!(t.insert(3, FD, recv()).arm, None, "armed already");
}

/// An idle TCP socket is always writable: a registration armed for writing while only a receive
/// waits would report that at once, disarm, be armed again, and so on.
#[test]
fn on_demand_only_the_sides_that_requests_wait_on_are_armed() {
    let mut t = Table::new(true);
    let inserted = t.insert(1, FD, recv());
    assert!(matches!(
        inserted.arm,
        Some(Arming::Register {
            events: READING,
            ..
        })
    ));
    let token = registered(inserted);
    assert_eq!(
        t.readiness(FD, Side::Write),
        Readiness::Unknown,
        "writing is not armed: not known"
    );
    // A send that has to wait arms writing too.
    t.drained(FD, Side::Write, 0, true);
    let both = Arming::Rearm {
        token,
        events: BOTH,
    };
    assert_eq!(t.insert(2, FD, send()).arm, Some(both));
    // Writable: the send goes; the receive still waits, for reading only.
    let attempts = ready(&mut t, token, OUT);
    assert_eq!(ids(&attempts), [2]);
    t.done(&attempts[0], 3, false);
    let reading = Arming::Rearm {
        token,
        events: READING,
    };
    assert_eq!(to_rearm(&mut t), [(FD, reading)]);
    // Readable: the receive goes; then only a new send would arm the registration, for writing.
    let attempts = ready(&mut t, token, IN);
    t.done(&attempts[0], 4, false);
    assert_eq!(to_rearm(&mut t), []);
    let writing = Arming::Rearm {
        token,
        events: WRITING,
    };
    assert_eq!(t.insert(3, FD, send()).arm, Some(writing));
}

#[test]
fn registrations_that_stay_are_never_disarmed() {
    let mut t = Table::new(false);
    let token = registered(t.insert(1, FD, recv()));
    let attempts = ready(&mut t, token, IN);
    t.done(&attempts[0], 5, false);
    assert_eq!(to_rearm(&mut t), []);
    assert_eq!(t.readiness(FD, Side::Read), Readiness::Ready(1));
    assert_eq!(t.insert(2, FD, recv()).arm, None);
    assert!(matches!(
        Table::new(false).insert(3, FD, send()).arm,
        Some(Arming::Register {
            events: SOCKET_EVENTS,
            ..
        })
    ));
}

#[test]
fn a_sides_requests_keep_their_order_when_one_leaves_from_the_middle_or_the_front() {
    let mut t = Table::default();
    let token = registered(t.insert(1, FD, recv()));
    for user_data in 2..=4 {
        t.insert(user_data, FD, recv());
    }
    t.cancel(3); // from the middle
    t.cancel(1); // from the front: the next oldest moves up
    assert_eq!(
        finished(&mut t),
        vec![(3, -libc::ECANCELED), (1, -libc::ECANCELED)]
    );
    let attempts = ready(&mut t, token, IN);
    assert_eq!(ids(&attempts), vec![2], "the oldest left");
    t.done(&attempts[0], 5, false);
    assert_eq!(ids(&runnable(&mut t)), vec![4], "then the one after it");
}
