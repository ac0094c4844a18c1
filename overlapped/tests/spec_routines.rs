//! SPEC S22, S26, S27, S30 (and S4 with a routine): what a completion routine gets, where and when
//! it runs, and the event it leaves alone. The alertable waits themselves (S28, S29) are in
//! `spec_routine_waits.rs`; a thread's exit (S31) in `spec_routines_exit.rs`.

#[macro_use]
mod common;
mod routines;

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::*;
use overlapped::{
    codes, flags, sleep_ex, wait_for_events_ex, Event, Overlapped, Started, WaitExResult, WaitFor,
};
use routines::*;

/// S26: the routine receives the error, the bytes transferred, the overlapped object with its
/// buffers (filled in order), and the flags.
#[test]
fn s26_routine_receives_error_bytes_overlapped_and_flags() {
    on_every_backend!(|| {
        let log = Log::default();
        let (sock, mut peer) = tcp_pair_std();
        let bufs = vec![vec![0; 4], vec![0; 5]];
        let started = sock.recv_with_routine(Overlapped::new(), bufs, 0, recorder(&log, "recv"));
        assert_eq!(started.unwrap(), Started::Pending);
        write_all(&mut peer, b"deadbeefs");
        alertable_until("the receive's routine", || log.borrow().len() == 1);
        {
            let ran = &log.borrow()[0];
            assert_eq!((ran.error, ran.bytes, ran.flags), (None, 9, 0));
            assert_eq!(ran.bufs, vec![b"dead".to_vec(), b"beefs".to_vec()]);
        }
        // A truncated datagram: its error, the bytes that fit, MSG_PARTIAL, and the sender.
        let (a, b) = udp_pair();
        let started = b.recv_from_with_routine(
            Overlapped::new(),
            vec![vec![0; 4]],
            0,
            recorder(&log, "datagram"),
        );
        assert_eq!(started.unwrap(), Started::Pending);
        send_datagram(&a, b"0123456789", b.local_addr().unwrap());
        alertable_until("the datagram's routine", || log.borrow().len() == 2);
        {
            let ran = &log.borrow()[1];
            assert_eq!(ran.error, Some(codes::WSAEMSGSIZE));
            assert_eq!((ran.bytes, ran.flags), (4, flags::MSG_PARTIAL));
            assert_eq!(ran.bufs, vec![b"0123".to_vec()]);
            assert_eq!(ran.from, Some(a.local_addr().unwrap()));
        }
        // A reset connection: WSAECONNRESET and no bytes.
        let (sock, peer) = tcp_pair();
        let started = sock.recv_with_routine(
            Overlapped::new(),
            vec![vec![0; 8]],
            0,
            recorder(&log, "reset"),
        );
        assert_eq!(started.unwrap(), Started::Pending);
        peer.set_linger(Some(Duration::ZERO)).unwrap();
        drop(peer);
        alertable_until("the reset receive's routine", || log.borrow().len() == 3);
        let ran = &log.borrow()[2];
        assert_eq!((ran.error, ran.bytes), (Some(codes::WSAECONNRESET), 0));
        assert_eq!(
            ran.bufs.len(),
            1,
            "the buffers come back with a failure too"
        );
    });
}

/// S27: a routine runs only on the thread that issued its operation, and only once that thread
/// is in an alertable wait, even when another thread's completion started its operation.
#[test]
fn s27_routine_runs_only_on_its_thread_in_an_alertable_wait() {
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        let sock = std::sync::Arc::new(sock);
        let here = thread::current().id();
        let (first_started, wait_first) = mpsc::channel();
        let (second_started, wait_second) = mpsc::channel();
        let (go, wait_go) = mpsc::channel::<()>();
        let (go2, wait_go2) = mpsc::channel::<()>();
        let s = sock.clone();
        // The first receive is in flight; the second, from another thread, waits behind it and
        // is started by the first one's completion, on the first thread.
        let first = thread::spawn(move || {
            let log = Log::default();
            let started = s.recv_with_routine(
                Overlapped::new(),
                vec![vec![0; 8]],
                0,
                recorder(&log, "first"),
            );
            assert_eq!(started.unwrap(), Started::Pending);
            first_started.send(()).unwrap();
            wait_go.recv().unwrap();
            settle_time();
            assert!(log.borrow().is_empty(), "not before an alertable wait");
            alertable_until("the first routine", || log.borrow().len() == 1);
            let ran = log.borrow_mut().pop().unwrap();
            (ran.thread, ran.bufs, thread::current().id())
        });
        wait_first.recv().unwrap();
        let s = sock.clone();
        let second = thread::spawn(move || {
            let log = Log::default();
            let started = s.recv_with_routine(
                Overlapped::new(),
                vec![vec![0; 8]],
                0,
                recorder(&log, "second"),
            );
            assert_eq!(started.unwrap(), Started::Pending);
            second_started.send(()).unwrap();
            wait_go2.recv().unwrap();
            alertable_until("the second routine", || log.borrow().len() == 1);
            let ran = log.borrow_mut().pop().unwrap();
            (ran.thread, ran.bufs, thread::current().id())
        });
        wait_second.recv().unwrap();
        write_all(&mut peer, b"firstbufsecondbf");
        go.send(()).unwrap();
        // This thread waits alertably too: neither routine may run here.
        let log = Log::default();
        assert_no_routine_runs(&log);
        go2.send(()).unwrap();
        let (ran_on, bufs, issuer) = first.join().unwrap();
        assert_eq!(ran_on, issuer);
        assert_eq!(bufs, vec![b"firstbuf".to_vec()]);
        let (ran_on, bufs, issuer) = second.join().unwrap();
        assert_eq!(ran_on, issuer);
        assert_ne!(ran_on, here);
        assert_eq!(bufs, vec![b"secondbf".to_vec()]);
    });
}

/// S27, S30: an operation done at once still queues its routine, which runs neither inside the
/// call nor before the thread's next alertable wait.
#[test]
fn s30_done_at_once_queues_the_routine_for_the_next_alertable_wait() {
    on_every_backend!(|| {
        let log = Log::default();
        let (sock, mut peer) = tcp_pair_std();
        send_now(&sock, b"at once", &log, "send");
        assert!(log.borrow().is_empty(), "not inside the call");
        settle_time();
        assert!(log.borrow().is_empty(), "not without an alertable wait");
        assert_eq!(
            sleep_ex(Some(TIMEOUT), true),
            Ok(WaitExResult::IoCompletion)
        );
        assert_eq!(tags(&log), ["send"]);
        assert_eq!(log.borrow()[0].bytes, 7);
        assert_eq!(read_exact(&mut peer, 7), b"at once");

        // A receive with data already waiting: done at once or pending (S3), the routine all
        // the same, and only in the wait.
        write_all(&mut peer, b"waiting");
        let started = sock.recv_with_routine(
            Overlapped::new(),
            vec![vec![0; 7]],
            flags::MSG_WAITALL,
            recorder(&log, "recv"),
        );
        let started = started.unwrap();
        assert!(matches!(started, Started::Done(7) | Started::Pending));
        assert_eq!(log.borrow().len(), 1, "not inside the call");
        alertable_until("the receive's routine", || log.borrow().len() == 2);
        assert_eq!(log.borrow()[1].bufs, vec![b"waiting".to_vec()]);
    });
}

/// S30, S12: a truncated datagram already waiting completes at once, and completion notifies:
/// its routine runs in the next alertable wait with `WSAEMSGSIZE`, the bytes that fit and
/// `MSG_PARTIAL`.
#[test]
fn s30_truncated_datagram_at_once_still_runs_its_routine() {
    on_every_backend!(|| {
        let log = Log::default();
        let (a, b) = udp_pair();
        send_datagram(&a, b"0123456789", b.local_addr().unwrap());
        settle_time();
        let started = b.recv_from_with_routine(
            Overlapped::new(),
            vec![vec![0; 4]],
            0,
            recorder(&log, "datagram"),
        );
        // The call reports the truncation, as the event model's does (S12); the routine is
        // queued all the same (S3), so the next alertable wait, even one that only polls, runs it.
        if let Err(not_started) = started {
            assert_eq!(not_started.error.code(), codes::WSAEMSGSIZE);
        }
        assert!(log.borrow().is_empty(), "not inside the call");
        assert_eq!(
            sleep_ex(Some(Duration::ZERO), true),
            Ok(WaitExResult::IoCompletion),
            "the routine of the operation completed at once runs"
        );
        let ran = &log.borrow()[0];
        assert_eq!(ran.error, Some(codes::WSAEMSGSIZE));
        assert_eq!((ran.bytes, ran.flags), (4, flags::MSG_PARTIAL));
    });
}

/// S22: with a completion routine the overlapped object's event is neither reset when the
/// operation starts nor signalled when it completes: it is the application's.
#[test]
fn s22_routine_leaves_the_event_alone() {
    on_every_backend!(|| {
        let log = Log::default();
        let (sock, mut peer) = tcp_pair_std();
        let event = Event::new();
        event.set();
        let ov = Overlapped::with_event(event.clone());
        let started = sock.recv_with_routine(ov, vec![vec![0; 8]], 0, recorder(&log, "recv"));
        assert_eq!(started.unwrap(), Started::Pending);
        assert!(event.is_set(), "not reset by the start");
        write_all(&mut peer, b"data");
        alertable_until("the receive's routine", || log.borrow().len() == 1);
        assert!(event.is_set());

        event.reset();
        let ov = Overlapped::with_event(event.clone());
        let started = sock.send_with_routine(ov, vec![b"x".to_vec()], 0, recorder(&log, "send"));
        assert_eq!(started.unwrap(), Started::Done(1));
        let ov = Overlapped::with_event(event.clone());
        let started = sock.recv_with_routine(ov, vec![vec![0; 8]], 0, recorder(&log, "recv2"));
        assert_eq!(started.unwrap(), Started::Pending);
        write_all(&mut peer, b"more");
        alertable_until("both routines", || log.borrow().len() == 3);
        settle_time();
        assert!(
            !event.is_set(),
            "not signalled by completion, at once or later"
        );
        assert_eq!(
            wait_for_events_ex(&[&event], WaitFor::Any, Some(Duration::ZERO), true),
            Ok(WaitExResult::Timeout)
        );
    });
}

/// S4: a call with a routine that fails at once returns `NotStarted` with the overlapped object
/// (and its buffers) back; its routine never runs and its event is not touched.
#[test]
fn s4_failed_at_once_gives_the_object_back_and_never_runs_the_routine() {
    on_every_backend!(|| {
        let log = Log::default();
        let (sock, peer) = tcp_pair();

        // No buffers (S6).
        let event = Event::new();
        let ov = Overlapped::with_event(event.clone());
        let failed = sock.send_with_routine(ov, vec![], 0, recorder(&log, "no buffers"));
        let back = failed.unwrap_err();
        assert_eq!(back.error.code(), codes::WSAEINVAL);
        assert!(!back.overlapped.is_pending());
        assert!(!event.is_set());

        // The same object, still pending with an event-model receive (S13).
        assert_eq!(
            sock.recv(&back.overlapped, vec![vec![0; 8]], 0),
            Ok(Started::Pending)
        );
        let refused = sock.send_with_routine(
            back.overlapped,
            vec![b"x".to_vec()],
            0,
            recorder(&log, "busy"),
        );
        let back = refused.unwrap_err();
        assert_eq!(back.error.code(), codes::WSAEINVAL);
        assert!(back.overlapped.is_pending(), "the receive is unharmed");
        let started = peer
            .send(&Overlapped::new(), vec![b"ping".to_vec()], 0)
            .unwrap();
        assert!(matches!(started, Started::Done(4) | Started::Pending));
        wait_event(&back.overlapped);
        assert_eq!(wait_done(&back.overlapped).bytes, 4);
        assert_eq!(received(&back.overlapped, 4), b"ping");

        // A reset connection: the routine of the pending receive gets the reset (S11), and a
        // later send fails at once with its buffers back in the object.
        let started = sock.recv_with_routine(
            back.overlapped,
            vec![vec![0; 8]],
            0,
            recorder(&log, "reset"),
        );
        assert_eq!(started.unwrap(), Started::Pending);
        peer.set_linger(Some(Duration::ZERO)).unwrap();
        drop(peer);
        alertable_until("the reset receive's routine", || log.borrow().len() == 1);
        assert_eq!(log.borrow()[0].error, Some(codes::WSAECONNRESET));
        let failed = sock.send_with_routine(
            Overlapped::new(),
            vec![b"kept".to_vec()],
            0,
            recorder(&log, "after reset"),
        );
        let back = failed.unwrap_err();
        assert_eq!(back.error.code(), codes::WSAECONNRESET);
        assert_eq!(
            back.overlapped.take_buffers().unwrap(),
            vec![b"kept".to_vec()]
        );

        settle_time();
        assert_no_routine_runs(&log);
        assert_eq!(tags(&log), ["reset"]);
    });
}
