//! SPEC S28, S29: alertable waits run every queued routine in order and return I/O completion;
//! non-alertable waits never run them; routines never nest and may start the next operation.

#[macro_use]
mod common;
mod routines;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use overlapped::winsock::{
    wsa_wait_for_multiple_events, WSA_WAIT_EVENT_0, WSA_WAIT_IO_COMPLETION, WSA_WAIT_TIMEOUT,
};
use overlapped::{
    sleep_ex, wait_for_events, wait_for_events_ex, Error, Event, Overlapped, Socket, Started,
    WaitExResult, WaitFor, WaitResult,
};
use routines::*;

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

/// S28: alertable waits one after another on one thread (which share the thread's means of
/// waking) each end for their own events only: an event of an earlier wait, set during a later
/// one, does not end it, and an event set while the thread sleeps in a later wait wakes it.
#[test]
fn s28_alertable_waits_in_turn_see_only_their_own_events() {
    on_every_backend!(|| {
        let (first, second) = (Event::new(), Event::new());
        assert_eq!(
            first.wait_ex(Some(Duration::ZERO), true),
            Ok(WaitExResult::Timeout)
        );
        let setter = {
            let first = first.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(20));
                first.set();
            })
        };
        let waited = Instant::now();
        assert_eq!(
            second.wait_ex(Some(Duration::from_millis(300)), true),
            Ok(WaitExResult::Timeout),
            "the first wait's event does not end the second"
        );
        assert!(waited.elapsed() >= Duration::from_millis(300));
        setter.join().unwrap();
        assert_eq!(
            first.wait_ex(Some(TIMEOUT), true),
            Ok(WaitExResult::Signalled(0))
        );
        let setter = {
            let second = second.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(20));
                second.set();
            })
        };
        assert_eq!(
            second.wait_ex(Some(TIMEOUT), true),
            Ok(WaitExResult::Signalled(0)),
            "a set during the wait wakes it"
        );
        setter.join().unwrap();
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
