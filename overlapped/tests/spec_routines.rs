//! SPEC S22, S26–S30 (and S4 with a routine): completion routines and alertable waits.

#[macro_use]
mod common;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use common::*;
use overlapped::winsock::{
    wsa_wait_for_multiple_events, WSA_WAIT_EVENT_0, WSA_WAIT_IO_COMPLETION, WSA_WAIT_TIMEOUT,
};
use overlapped::{
    codes, flags, sleep_ex, wait_for_events, wait_for_events_ex, Error, Event, Overlapped, Socket,
    Started, WaitExResult, WaitFor, WaitResult,
};

/// What one routine saw when it ran.
#[derive(Debug)]
struct Ran {
    tag: &'static str,
    error: Option<u32>,
    bytes: usize,
    flags: u32,
    /// The buffers handed back through the overlapped object given to the routine.
    bufs: Vec<Vec<u8>>,
    /// The sender of a datagram, read from that object's completion.
    from: Option<SocketAddr>,
    thread: ThreadId,
    /// How many routines were running on this thread, this one included.
    depth: usize,
}

type Log = Rc<RefCell<Vec<Ran>>>;

thread_local! {
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// A routine that records what it is given in `log`.
fn recorder(log: &Log, tag: &'static str) -> impl FnOnce(Option<Error>, usize, Overlapped, u32) {
    let log = log.clone();
    move |error: Option<Error>, bytes: usize, ov: Overlapped, flags: u32| {
        let depth = DEPTH.with(|d| d.get() + 1);
        DEPTH.with(|d| d.set(depth));
        assert!(!ov.is_pending(), "{tag}: the object is finished");
        let completion = ov.completion(false).expect("the object holds the result");
        assert_eq!(completion.error, error, "{tag}: the object agrees");
        assert_eq!(completion.bytes, bytes, "{tag}: the object agrees");
        log.borrow_mut().push(Ran {
            tag,
            error: error.map(|e| e.code()),
            bytes,
            flags,
            bufs: ov.take_buffers().unwrap_or_default(),
            from: completion.from,
            thread: thread::current().id(),
            depth,
        });
        DEPTH.with(|d| d.set(depth - 1));
    }
}

fn tags(log: &Log) -> Vec<&'static str> {
    log.borrow().iter().map(|r| r.tag).collect()
}

/// Runs alertable waits until `done` holds (bounded in count and time); returns how many of them
/// ran routines.
fn alertable_until(what: &str, mut done: impl FnMut() -> bool) -> usize {
    let deadline = Instant::now() + TIMEOUT;
    let mut ran = 0;
    for _ in 0..100_000 {
        if done() {
            return ran;
        }
        let now = Instant::now();
        assert!(now < deadline, "not within {TIMEOUT:?}: {what}");
        if sleep_ex(Some(deadline - now), true).unwrap() == WaitExResult::IoCompletion {
            ran += 1;
        }
    }
    panic!("too many waits: {what}");
}

/// A short alertable wait that must find no routine to run.
fn assert_no_routine_runs(log: &Log) {
    let before = log.borrow().len();
    assert_eq!(
        sleep_ex(Some(Duration::from_millis(20)), true),
        Ok(WaitExResult::Timeout)
    );
    assert_eq!(log.borrow().len(), before, "no routine ran");
}

/// Sends `data` with a routine from inside a routine. On io_uring, what a routine starts goes to
/// the kernel with the rest of its batch when the routines have run, so the call reports it
/// pending; on epoll it is tried at once (S2 allows both). Either way it completes, and its
/// routine runs, in the same alertable wait (S28).
fn send_from_routine(sock: &Socket, data: &[u8], log: &Log, tag: &'static str) {
    let started = sock.send_with_routine(
        Overlapped::new(),
        vec![data.to_vec()],
        0,
        recorder(log, tag),
    );
    let started = started.unwrap();
    assert!(
        started == Started::Pending || started == Started::Done(data.len()),
        "{tag}: {started:?}"
    );
}

/// Sends `data` with a routine; on a fresh connection it is taken at once (S2).
fn send_now(sock: &Socket, data: &[u8], log: &Log, tag: &'static str) {
    let started = sock.send_with_routine(
        Overlapped::new(),
        vec![data.to_vec()],
        0,
        recorder(log, tag),
    );
    assert_eq!(started.unwrap(), Started::Done(data.len()), "{tag}");
}

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

/// S28: an alertable wait runs every queued routine, in the order the operations completed (not
/// the order they started), then returns `IoCompletion` although the awaited event is not
/// signalled; a routine queued after a wait ended waits for the next alertable wait.
#[test]
fn s28_wait_runs_every_queued_routine_in_fifo_order() {
    on_every_backend!(|| {
        let log = Log::default();
        let (sock, mut peer) = tcp_pair_std();
        let (other, mut other_peer) = tcp_pair_std();
        let started = other.recv_with_routine(
            Overlapped::new(),
            vec![vec![0; 8]],
            0,
            recorder(&log, "recv"),
        );
        assert_eq!(started.unwrap(), Started::Pending, "started first");
        let names = ["send 0", "send 1", "send 2", "send 3", "send 4"];
        for name in names {
            send_now(&sock, name.as_bytes(), &log, name);
        }
        let event = Event::new();
        assert_eq!(
            wait_for_events_ex(&[&event], WaitFor::Any, Some(TIMEOUT), true),
            Ok(WaitExResult::IoCompletion)
        );
        assert_eq!(
            tags(&log),
            names,
            "all queued routines, in completion order"
        );
        assert!(!event.is_set());
        assert!(log.borrow().iter().all(|r| r.depth == 1));

        // The receive completes now, after the sends: it runs last, in a later wait.
        write_all(&mut other_peer, b"late");
        alertable_until("the receive's routine", || log.borrow().len() == 6);
        assert_eq!(log.borrow()[5].tag, "recv");
        assert_eq!(log.borrow()[5].bufs[0][..4], *b"late");

        // Queued after the wait ended: not run until the next alertable wait, whichever it is.
        let unsignalled = Event::new();
        let half = Event::new();
        half.set();
        send_now(&sock, b"next", &log, "next");
        settle_time();
        assert_eq!(log.borrow().len(), 6);
        assert_eq!(
            wait_for_events_ex(&[&half, &unsignalled], WaitFor::All, Some(TIMEOUT), true),
            Ok(WaitExResult::IoCompletion),
            "a wait for all that is not satisfied runs the routine"
        );
        send_now(&sock, b"last", &log, "last");
        assert_eq!(
            unsignalled.wait_ex(Some(TIMEOUT), true),
            Ok(WaitExResult::IoCompletion)
        );
        assert_eq!(tags(&log)[6..], ["next", "last"]);
        assert_no_routine_runs(&log);
        let total = names.iter().map(|n| n.len()).sum::<usize>() + 8;
        assert_eq!(read_exact(&mut peer, total).len(), total);
    });
}

/// S28: a signalled event wins over queued routines: the wait returns the event and the
/// routines stay queued for the next alertable wait (Windows checks the objects before it
/// delivers user APCs).
#[test]
fn s28_signalled_event_wins_over_queued_routines() {
    on_every_backend!(|| {
        let log = Log::default();
        let (sock, _peer) = tcp_pair_std();
        let manual = Event::new();
        let auto = Event::new_auto_reset();
        manual.set();
        send_now(&sock, b"queued", &log, "queued");
        assert_eq!(
            wait_for_events_ex(&[&manual], WaitFor::Any, Some(TIMEOUT), true),
            Ok(WaitExResult::Signalled(0))
        );
        assert_eq!(
            manual.wait_ex(Some(TIMEOUT), true),
            Ok(WaitExResult::Signalled(0))
        );
        auto.set();
        assert_eq!(
            wait_for_events_ex(&[&manual, &auto], WaitFor::All, Some(TIMEOUT), true),
            Ok(WaitExResult::Signalled(0))
        );
        assert!(!auto.is_set(), "the satisfied auto-reset event is consumed");
        assert!(log.borrow().is_empty(), "the routine is still queued");
        manual.reset();
        assert_eq!(
            manual.wait_ex(Some(TIMEOUT), true),
            Ok(WaitExResult::IoCompletion)
        );
        assert_eq!(tags(&log), ["queued"]);
    });
}

/// S29: a non-alertable wait never runs routines — not `sleep_ex(.., false)`, not a wait on
/// events without the flag, not waiting for another operation's result.
#[test]
fn s29_non_alertable_waits_never_run_routines() {
    on_every_backend!(|| {
        let log = Log::default();
        let short = Some(Duration::from_millis(20));
        let (sock, mut peer) = tcp_pair_std();
        let started = sock.recv_with_routine(
            Overlapped::new(),
            vec![vec![0; 8]],
            0,
            recorder(&log, "recv"),
        );
        assert_eq!(started.unwrap(), Started::Pending);
        write_all(&mut peer, b"arrived");
        let (other, mut other_peer) = tcp_pair_std();
        send_now(&other, b"done", &log, "send");

        let event = Event::new();
        assert_eq!(sleep_ex(short, false), Ok(WaitExResult::Timeout));
        assert_eq!(
            wait_for_events_ex(&[&event], WaitFor::Any, short, false),
            Ok(WaitExResult::Timeout)
        );
        assert_eq!(event.wait_ex(short, false), Ok(WaitExResult::Timeout));
        assert_eq!(
            wait_for_events(&[&event], WaitFor::Any, short),
            Ok(WaitResult::Timeout)
        );
        assert!(!event.wait(short));
        assert_eq!(
            wsa_wait_for_multiple_events(&[&event], false, 20, false),
            WSA_WAIT_TIMEOUT
        );
        // Waiting for an event-model operation's result (S17).
        let ov: Overlapped = ov_with_event();
        assert_eq!(other.recv(&ov, vec![vec![0; 8]], 0), Ok(Started::Pending));
        write_all(&mut other_peer, b"reply");
        assert_eq!(ov.completion(true).unwrap().bytes, 5);
        settle_time();
        assert!(
            log.borrow().is_empty(),
            "no routine ran in a non-alertable wait"
        );

        alertable_until("both routines", || log.borrow().len() == 2);
        let mut seen = tags(&log);
        seen.sort();
        assert_eq!(seen, ["recv", "send"]);
        assert_eq!(read_exact(&mut other_peer, 4), b"done");
    });
}

/// S29: routines never nest: an alertable wait inside a routine runs none, and returns as a
/// wait with nothing queued does; the routines it queued run after it, in the same outer wait.
#[test]
fn s29_routines_never_nest() {
    on_every_backend!(|| {
        let log = Log::default();
        let inner_waits: Rc<RefCell<Vec<WaitExResult>>> = Rc::default();
        let (sock, _peer) = tcp_pair_std();
        let sock = Rc::new(sock);
        let (l, w, s) = (log.clone(), inner_waits.clone(), sock.clone());
        let outer = move |error: Option<Error>, bytes: usize, ov: Overlapped, flags: u32| {
            // Queue a second routine from inside this one, then wait alertably for it.
            send_from_routine(&s, b"inner", &l, "inner");
            let unsignalled = Event::new();
            let zero = Some(Duration::ZERO);
            w.borrow_mut().push(sleep_ex(zero, true).unwrap());
            w.borrow_mut()
                .push(wait_for_events_ex(&[&unsignalled], WaitFor::Any, zero, true).unwrap());
            w.borrow_mut()
                .push(unsignalled.wait_ex(zero, true).unwrap());
            assert!(
                l.borrow().is_empty(),
                "the inner routine did not run inside"
            );
            recorder(&l, "outer")(error, bytes, ov, flags);
        };
        let started = sock.send_with_routine(Overlapped::new(), vec![b"outer".to_vec()], 0, outer);
        assert_eq!(started.unwrap(), Started::Done(5));
        assert_eq!(
            sleep_ex(Some(TIMEOUT), true),
            Ok(WaitExResult::IoCompletion)
        );
        assert_eq!(*inner_waits.borrow(), [WaitExResult::Timeout; 3]);
        assert_eq!(
            tags(&log),
            ["outer", "inner"],
            "the inner one ran after, in the same wait"
        );
        assert!(log.borrow().iter().all(|r| r.depth == 1), "never nested");
        assert_no_routine_runs(&log);
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

/// The server side of an echo built from routines: each receive's routine sends the data back,
/// and each send's routine starts the next receive, with the same overlapped object.
struct Echo {
    sock: Socket,
    sends: Cell<usize>,
    closed: Cell<bool>,
    failure: RefCell<Option<String>>,
}

impl Echo {
    fn fail(&self, what: String) {
        self.failure.borrow_mut().get_or_insert(what);
    }

    fn recv(self: Rc<Self>, ov: Overlapped) {
        let echo = self.clone();
        let routine = move |error: Option<Error>, bytes: usize, ov: Overlapped, _flags: u32| match (
            error, bytes,
        ) {
            (Some(e), _) => echo.fail(format!("receive failed: {e}")),
            (None, 0) => echo.closed.set(true),
            (None, n) => {
                let mut data = ov.take_buffers().unwrap().concat();
                data.truncate(n);
                echo.send(ov, data);
            }
        };
        if let Err(e) = self
            .sock
            .recv_with_routine(ov, vec![vec![0; 1500]], 0, routine)
        {
            self.fail(format!("receive did not start: {e}"));
        }
    }

    fn send(self: Rc<Self>, ov: Overlapped, data: Vec<u8>) {
        let echo = self.clone();
        let len = data.len();
        let routine = move |error: Option<Error>, bytes: usize, ov: Overlapped, _flags: u32| {
            if error.is_some() || bytes != len {
                echo.fail(format!("send: {error:?}, {bytes} of {len} bytes"));
            } else {
                echo.sends.set(echo.sends.get() + 1);
                echo.recv(ov);
            }
        };
        if let Err(e) = self.sock.send_with_routine(ov, vec![data], 0, routine) {
            self.fail(format!("send did not start: {e}"));
        }
    }
}

/// S29: a routine may start new operations — the textbook's echo server, where each routine
/// starts the next one, for 10,000 round trips with every byte checked.
#[test]
fn s29_routines_start_operations_echo_10000_round_trips() {
    const ROUNDS: usize = 10_000;
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        let client = thread::spawn(move || {
            for round in 0..ROUNDS {
                let len = 1 + round % 700;
                let msg: Vec<u8> = (0..len).map(|i| pattern(round * 7 + i)).collect();
                write_all(&mut peer, &msg);
                assert_eq!(read_exact(&mut peer, len), msg, "round {round}");
            }
            ROUNDS
        });
        let echo = Rc::new(Echo {
            sock,
            sends: Cell::new(0),
            closed: Cell::new(false),
            failure: RefCell::new(None),
        });
        echo.clone().recv(Overlapped::new());
        let deadline = Instant::now() + Duration::from_secs(120);
        for _ in 0..10 * ROUNDS {
            if echo.closed.get() || echo.failure.borrow().is_some() || Instant::now() > deadline {
                break;
            }
            sleep_ex(Some(TIMEOUT), true).unwrap();
        }
        assert_eq!(*echo.failure.borrow(), None);
        assert!(echo.closed.get(), "the client finished and closed");
        assert_eq!(client.join().unwrap(), ROUNDS);
        assert!(echo.sends.get() >= ROUNDS);
    });
}

/// S28 through the facade: `WSAWaitForMultipleEvents(.., fAlertable = TRUE)` returns
/// `WSA_WAIT_IO_COMPLETION` (0xC0) when routines ran, the event's index when it is signalled,
/// and a non-alertable one runs nothing.
#[test]
fn s28_facade_alertable_wait_returns_wsa_wait_io_completion() {
    on_every_backend!(|| {
        assert_eq!(WSA_WAIT_IO_COMPLETION, 0xC0);
        let log = Log::default();
        let (sock, mut peer) = tcp_pair_std();
        let event = Event::new();
        assert_eq!(
            wsa_wait_for_multiple_events(&[&event], false, 0, true),
            WSA_WAIT_TIMEOUT,
            "nothing queued"
        );
        let started = sock.recv_with_routine(
            Overlapped::new(),
            vec![vec![0; 8]],
            0,
            recorder(&log, "recv"),
        );
        assert_eq!(started.unwrap(), Started::Pending);
        write_all(&mut peer, b"facade");
        assert_eq!(
            wsa_wait_for_multiple_events(&[&event], false, 20_000, true),
            WSA_WAIT_IO_COMPLETION
        );
        assert_eq!(tags(&log), ["recv"]);

        send_now(&sock, b"queued", &log, "send");
        assert_eq!(
            wsa_wait_for_multiple_events(&[&event], false, 20, false),
            WSA_WAIT_TIMEOUT
        );
        event.set();
        assert_eq!(
            wsa_wait_for_multiple_events(&[&event], false, 20_000, true),
            WSA_WAIT_EVENT_0
        );
        assert_eq!(log.borrow().len(), 1, "the event won; the routine waits");
        event.reset();
        assert_eq!(
            wsa_wait_for_multiple_events(&[&event, &Event::new()], true, 20_000, true),
            WSA_WAIT_IO_COMPLETION
        );
        assert_eq!(tags(&log), ["recv", "send"]);
    });
}
