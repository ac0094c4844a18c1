//! SPEC S20–S25: events.

#[macro_use]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use overlapped::{codes, wait_for_events, Event, Overlapped, Started, WaitFor, WaitResult};

const POLL: Option<Duration> = Some(Duration::ZERO);

fn poll_any(events: &[&Event]) -> WaitResult {
    wait_for_events(events, WaitFor::Any, POLL).unwrap()
}

fn poll_all(events: &[&Event]) -> WaitResult {
    wait_for_events(events, WaitFor::All, POLL).unwrap()
}

/// S20: a new event is manual-reset and not signalled; once set it stays set through any number
/// of waits until reset.
#[test]
fn s20_new_event_is_manual_reset_and_not_signalled() {
    on_every_backend!(|| {
        let event = Event::new();
        assert!(event.is_manual_reset());
        assert!(!event.is_set());
        assert_eq!(poll_any(&[&event]), WaitResult::Timeout);
        event.set();
        for _ in 0..3 {
            assert!(event.wait(Some(TIMEOUT)));
            assert_eq!(poll_any(&[&event]), WaitResult::Signalled(0));
        }
        assert!(event.is_set());
        event.reset();
        assert!(!event.is_set());
        assert!(!event.wait(Some(Duration::ZERO)));
        assert!(Event::with_mode(true, true).is_set(), "initially signalled");
    });
}

/// S20: an auto-reset event exists too: a satisfied wait consumes it; `is_set` does not.
#[test]
fn s20_auto_reset_event_is_consumed_by_one_wait() {
    on_every_backend!(|| {
        let event = Event::new_auto_reset();
        assert!(!event.is_manual_reset());
        assert!(!event.is_set());
        event.set();
        assert!(event.is_set());
        assert!(event.is_set(), "looking does not consume");
        assert!(event.wait(Some(TIMEOUT)));
        assert!(!event.is_set(), "the wait consumed it");
        assert_eq!(poll_any(&[&event]), WaitResult::Timeout);
    });
}

/// S21: starting an operation resets its event; completion signals it; nothing resets it
/// afterwards but the application.
#[test]
fn s21_start_resets_event_completion_signals_it_and_it_stays() {
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        let event = Event::new();
        let ov: Overlapped = Overlapped::with_event(event.clone());
        event.set();
        assert_eq!(sock.recv(&ov, vec![vec![0; 8]], 0), Ok(Started::Pending));
        assert!(!event.is_set(), "the start reset it");
        write_all(&mut peer, b"signal");
        assert!(event.wait(Some(TIMEOUT)));
        assert_eq!(ov.result(false), Ok(6));
        assert_eq!(ov.take_buffers().unwrap().len(), 1);
        settle_time();
        assert!(event.is_set(), "reading the result does not reset it");
        event.reset();
        assert!(!event.is_set());

        // Done at once: reset by the start, then signalled by the completion.
        event.set();
        assert_eq!(sock.send(&ov, vec![b"x".to_vec()], 0), Ok(Started::Done(1)));
        assert!(event.is_set());
    });
}

/// S23: waiting for any returns the lowest signalled index; a manual-reset event stays signalled,
/// a satisfied auto-reset one is consumed.
#[test]
fn s23_wait_any_returns_lowest_signalled_index() {
    on_every_backend!(|| {
        let events: Vec<Event> = (0..5).map(|_| Event::new()).collect();
        let list: Vec<&Event> = events.iter().collect();
        events[3].set();
        events[1].set();
        assert_eq!(poll_any(&list), WaitResult::Signalled(1));
        assert_eq!(poll_any(&list), WaitResult::Signalled(1), "manual stays");
        events[1].reset();
        assert_eq!(poll_any(&list), WaitResult::Signalled(3));

        let auto = Event::new_auto_reset();
        let manual = Event::new();
        auto.set();
        manual.set();
        let mixed = [&auto, &manual];
        assert_eq!(poll_any(&mixed), WaitResult::Signalled(0));
        assert!(!auto.is_set(), "the satisfied auto-reset event is consumed");
        assert_eq!(poll_any(&mixed), WaitResult::Signalled(1));
        assert_eq!(poll_any(&mixed), WaitResult::Signalled(1));
        assert!(manual.is_set());
    });
}

/// S23: waiting for all returns only when all are signalled at once; a poll that finds some of
/// them consumes nothing; a satisfied wait consumes every auto-reset event.
#[test]
fn s23_wait_all_needs_all_signalled_at_once() {
    on_every_backend!(|| {
        let a = Event::new_auto_reset();
        let b = Event::new_auto_reset();
        let m = Event::new();
        a.set();
        m.set();
        assert_eq!(poll_all(&[&a, &b, &m]), WaitResult::Timeout);
        assert!(a.is_set(), "a partial set is not consumed");
        b.set();
        assert_eq!(poll_all(&[&a, &b, &m]), WaitResult::Signalled(0));
        assert!(
            !a.is_set() && !b.is_set(),
            "auto-reset events consumed together"
        );
        assert!(m.is_set(), "manual-reset event stays");

        // Each signalled in turn, never all at once: a blocked wait for all must not return.
        let (a, b) = (Event::new(), Event::new());
        let finally_all = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (a, b, flag) = (a.clone(), b.clone(), finally_all.clone());
            thread::spawn(move || {
                let r = wait_for_events(&[&a, &b], WaitFor::All, Some(TIMEOUT)).unwrap();
                (r, flag.load(Ordering::SeqCst))
            })
        };
        a.set();
        settle_time();
        a.reset();
        b.set();
        settle_time();
        finally_all.store(true, Ordering::SeqCst);
        a.set();
        let (result, after_all) = waiter.join().unwrap();
        assert_eq!(result, WaitResult::Signalled(0));
        assert!(after_all, "returned before all were signalled at once");
    });
}

/// S23: timeout 0 only polls; a timeout passes as WSA_WAIT_TIMEOUT; a signal wakes a waiter.
#[test]
fn s23_timeouts_and_polling() {
    on_every_backend!(|| {
        let event = Event::new();
        assert_eq!(poll_any(&[&event]), WaitResult::Timeout);
        let short = Some(Duration::from_millis(30));
        for wait_for in [WaitFor::Any, WaitFor::All] {
            let r = wait_for_events(&[&event], wait_for, short).unwrap();
            assert_eq!(r, WaitResult::Timeout);
        }
        assert!(!event.wait(short));

        let setter = {
            let event = event.clone();
            thread::spawn(move || {
                settle_time();
                event.set();
            })
        };
        let r = wait_for_events(&[&event], WaitFor::Any, Some(TIMEOUT)).unwrap();
        assert_eq!(r, WaitResult::Signalled(0));
        setter.join().unwrap();
        let forever = wait_for_events(&[&event], WaitFor::Any, None).unwrap();
        assert_eq!(forever, WaitResult::Signalled(0));
    });
}

/// S23: an empty list is WSA_INVALID_PARAMETER (87).
#[test]
fn s23_empty_list_is_invalid_parameter() {
    on_every_backend!(|| {
        for wait_for in [WaitFor::Any, WaitFor::All] {
            for timeout in [None, POLL, Some(TIMEOUT)] {
                let err = wait_for_events(&[], wait_for, timeout).unwrap_err();
                assert_eq!(err.code(), 87);
                assert_eq!(err.code(), codes::WSA_INVALID_PARAMETER);
            }
        }
    });
}

/// S23, S24: the Win32-named wait keeps Windows' return codes and its 64-event cap: an empty or
/// over-long list is WSA_INVALID_PARAMETER, a timeout is WSA_WAIT_TIMEOUT (0x102).
#[test]
fn s23_facade_wait_codes_and_cap() {
    use overlapped::winsock::*;
    on_every_backend!(|| {
        let events: Vec<WsaEvent> = (0..65).map(|_| wsa_create_event()).collect();
        let none: &[WsaEvent] = &[];
        assert_eq!(
            wsa_wait_for_multiple_events(none, false, 0, false),
            WSA_WAIT_FAILED
        );
        assert_eq!(wsa_get_last_error(), 87);
        wsa_set_last_error(0);
        let r = wsa_wait_for_multiple_events(&events[..65], false, 0, false);
        assert_eq!(r, WSA_WAIT_FAILED);
        assert_eq!(wsa_get_last_error(), WSA_INVALID_PARAMETER);

        let r = wsa_wait_for_multiple_events(&events[..64], false, 0, false);
        assert_eq!(r, 0x102);
        assert_eq!(
            wsa_wait_for_multiple_events(&events[..64], true, 20, false),
            WSA_WAIT_TIMEOUT
        );
        assert!(wsa_set_event(&events[63]));
        assert!(wsa_set_event(&events[40]));
        let r = wsa_wait_for_multiple_events(&events[..64], false, WSA_INFINITE, false);
        assert_eq!(r, WSA_WAIT_EVENT_0 + 40);
        assert!(wsa_reset_event(&events[40]));
        assert_eq!(
            wsa_wait_for_multiple_events(&events[..64], false, 0, false),
            63
        );
    });
}

/// S24: the Rust API waits on any number of events: 1,000 here, for any and for all, with the
/// signal coming from another thread.
#[test]
fn s24_wait_on_a_thousand_events() {
    on_every_backend!(|| {
        let events: Vec<Event> = (0..1000).map(|_| Event::new()).collect();
        let list: Vec<&Event> = events.iter().collect();
        assert_eq!(poll_any(&list), WaitResult::Timeout);
        let setter = {
            let last = events[999].clone();
            thread::spawn(move || {
                settle_time();
                last.set();
            })
        };
        let r = wait_for_events(&list, WaitFor::Any, Some(TIMEOUT)).unwrap();
        assert_eq!(r, WaitResult::Signalled(999));
        setter.join().unwrap();
        events[737].set();
        assert_eq!(poll_any(&list), WaitResult::Signalled(737));
        events[3].set();
        assert_eq!(poll_any(&list), WaitResult::Signalled(3));

        assert_eq!(poll_all(&list), WaitResult::Timeout);
        events.iter().for_each(Event::set);
        assert_eq!(poll_all(&list), WaitResult::Signalled(0));
    });
}

/// S25: events are set, reset and waited on from any thread: two threads hand a turn back and
/// forth through two auto-reset events.
#[test]
fn s25_events_work_across_threads() {
    on_every_backend!(|| {
        const ROUNDS: usize = 200;
        let ping = Event::new_auto_reset();
        let pong = Event::new_auto_reset();
        let other = {
            let (ping, pong) = (ping.clone(), pong.clone());
            thread::spawn(move || {
                for round in 0..ROUNDS {
                    assert!(ping.wait(Some(TIMEOUT)), "ping {round}");
                    pong.set();
                }
            })
        };
        for round in 0..ROUNDS {
            ping.set();
            assert!(pong.wait(Some(TIMEOUT)), "pong {round}");
        }
        other.join().unwrap();

        // A manual-reset event reset on one thread is seen reset on another.
        let event = Event::new();
        event.set();
        let seen = {
            let event = event.clone();
            thread::spawn(move || {
                event.reset();
                event.is_set()
            })
        };
        assert!(!seen.join().unwrap());
        assert!(!event.is_set());
    });
}

/// S25: an operation's event becomes signalled when it completes even if no thread of the
/// program is inside the library: the thread that started the receive has exited, and this one
/// only looks at the event.
#[test]
fn s25_event_signalled_with_no_thread_in_the_library() {
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        let (sock, ov) = thread::spawn(move || {
            let ov: Overlapped = ov_with_event();
            assert_eq!(sock.recv(&ov, vec![vec![0; 16]], 0), Ok(Started::Pending));
            (sock, ov)
        })
        .join()
        .unwrap();
        let event = ov.event().unwrap().clone();
        assert!(!event.is_set());
        write_all(&mut peer, b"nobody home");
        eventually("the event is signalled", || event.is_set());
        assert_eq!(ov.result(false), Ok(11));
        assert_eq!(received(&ov, 11), b"nobody home");
        drop(sock);
    });
}

/// S25: a thread waiting on several operations' events is woken by completions.
#[test]
fn s25_waiting_thread_woken_by_completions() {
    on_every_backend!(|| {
        let (socks, mut peers): (Vec<_>, Vec<_>) = (0..4).map(|_| tcp_pair_std()).unzip();
        let ovs: Vec<Overlapped> = (0..4).map(|_| ov_with_event()).collect();
        for (sock, ov) in socks.iter().zip(&ovs) {
            assert_eq!(sock.recv(ov, vec![vec![0; 8]], 0), Ok(Started::Pending));
        }
        let events: Vec<Event> = ovs.iter().map(|ov| ov.event().unwrap().clone()).collect();
        let waiter = thread::spawn(move || {
            let list: Vec<&Event> = events.iter().collect();
            let any = wait_for_events(&list, WaitFor::Any, Some(TIMEOUT)).unwrap();
            let all = wait_for_events(&list, WaitFor::All, Some(TIMEOUT)).unwrap();
            (any, all)
        });
        write_all(&mut peers[2], b"two");
        for i in [0, 1, 3] {
            write_all(&mut peers[i], b"rest");
        }
        let (any, all) = waiter.join().unwrap();
        assert!(matches!(any, WaitResult::Signalled(_)), "{any:?}");
        assert_eq!(all, WaitResult::Signalled(0));
        assert_eq!(ovs[2].result(false), Ok(3));
        for i in [0, 1, 3] {
            assert_eq!(ovs[i].result(false), Ok(4), "operation {i}");
        }
    });
}
