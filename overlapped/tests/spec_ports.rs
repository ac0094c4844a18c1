//! SPEC S32, S36–S44: completion ports.

#[macro_use]
mod common;

use std::cell::Cell;
use std::collections::HashSet;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use overlapped::{
    codes, sleep_ex, CompletionPort, Event, Overlapped, Packet, PortWait, Socket, Started,
    WaitExResult,
};

type Port = CompletionPort<Vec<u8>>;

fn new_port(concurrency: usize) -> Port {
    CompletionPort::new(concurrency).expect("create a completion port")
}

/// Takes one packet, waiting at most [`TIMEOUT`].
fn next(port: &Port) -> Packet {
    port.get(Some(TIMEOUT))
        .unwrap_or_else(|e| panic!("no packet within {TIMEOUT:?}: {e}"))
}

/// What a worker's get returned: `None` once the port is closed (the test's way to stop its
/// workers, S41); any other failure fails the test.
fn until_closed<T>(got: overlapped::Result<T>) -> Option<T> {
    match got {
        Ok(t) => Some(t),
        Err(e) if e.code() == codes::ERROR_ABANDONED_WAIT_0 => None,
        Err(e) => panic!("no packet: {e}"),
    }
}

/// Checks that no packet comes within a short pause.
fn assert_no_packet(port: &Port) {
    match port.get(Some(Duration::from_millis(50))) {
        Err(e) => assert_eq!(e.code(), codes::WAIT_TIMEOUT, "{e}"),
        Ok(p) => panic!("unexpected packet: {p:?}"),
    }
}

/// An overlapped object that can be recognised: it has an event of its own.
fn tagged() -> Overlapped {
    Overlapped::with_event(Event::new())
}

/// Whether two handles name the same overlapped object (made by [`tagged`]).
fn same_object(a: &Overlapped, b: &Overlapped) -> bool {
    a.event().unwrap().same_as(b.event().unwrap())
}

/// The overlapped object of a packet, which must name `expected`.
fn packet_object(p: &Packet, expected: &Overlapped) -> Overlapped {
    let ov = p
        .overlapped
        .clone()
        .expect("the packet carries the overlapped object");
    assert!(
        same_object(&ov, expected),
        "the packet names another object"
    );
    ov
}

/// Starts `n` threads that each wait in the port, one after the other: each is asleep (blocked in
/// the kernel, and given a moment more) before the next starts.
fn waiters_in_order<T: Send + 'static>(
    port: &CompletionPort,
    n: usize,
    wait: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<thread::JoinHandle<T>> {
    let wait = Arc::new(wait);
    let mut threads = Vec::new();
    let before = port.waiting_threads();
    for id in 0..n {
        let (tid_tx, tid_rx) = mpsc::channel();
        let wait = wait.clone();
        threads.push(thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tid_tx.send(unsafe { libc::gettid() }).unwrap();
            wait(id)
        }));
        let tid = tid_rx.recv_timeout(TIMEOUT).expect("the waiter started");
        eventually("the waiter is asleep", || is_blocked(tid));
        eventually("the waiter waits on the port", || {
            port.waiting_threads() == before + id + 1
        });
        settle_time();
    }
    threads
}

/// Whether the thread `tid` of this process is blocked (sleeping), from its `/proc` status.
fn is_blocked(tid: libc::pid_t) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    // The state follows the command name, which is in parentheses.
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    matches!(state, Some('S' | 'D'))
}

/// S36: concurrency 0 means one thread per CPU; any other value is kept.
#[test]
fn s36_concurrency_zero_means_one_per_cpu() {
    on_every_backend!(|| {
        let cpus = thread::available_parallelism().unwrap().get();
        assert_eq!(new_port(0).concurrency(), cpus);
        assert_eq!(new_port(3).concurrency(), 3);
    });
}

/// S36: each associated socket's notifications are packets with its key and the operation's
/// object; a done-at-once send posts one too (S3). A socket associates once.
#[test]
fn s36_associated_sockets_notify_through_packets_with_their_keys() {
    on_every_backend!(|| {
        let port = new_port(1);
        let (a, mut peer_a) = tcp_pair_std();
        let (b, mut peer_b) = tcp_pair_std();
        port.associate(&a, 11).unwrap();
        port.associate(&b, 22).unwrap();
        let err = port.associate(&a, 33).unwrap_err();
        assert_eq!(err.code(), codes::WSAEINVAL, "associated twice");
        let other = new_port(1);
        assert_eq!(
            other.associate(&b, 44).unwrap_err().code(),
            codes::WSAEINVAL
        );

        let (ov_a, ov_b) = (tagged(), tagged());
        assert_eq!(a.recv(&ov_a, vec![vec![0; 16]], 0), Ok(Started::Pending));
        assert_eq!(b.recv(&ov_b, vec![vec![0; 16]], 0), Ok(Started::Pending));
        write_all(&mut peer_b, b"to b");
        write_all(&mut peer_a, b"for a!");
        let mut seen = HashSet::new();
        for _ in 0..2 {
            let p = next(&port);
            assert!(p.error.is_none(), "{p:?}");
            let (expected_ov, data): (&Overlapped, &[u8]) = match p.key {
                11 => (&ov_a, b"for a!"),
                22 => (&ov_b, b"to b"),
                key => panic!("unknown key {key}"),
            };
            assert!(seen.insert(p.key), "two packets for key {}", p.key);
            assert_eq!(p.bytes, data.len());
            let ov = packet_object(&p, expected_ov);
            assert_eq!(received(&ov, p.bytes), data);
        }
        assert_no_packet(&port);
        assert_no_packet(&other);

        let ov = tagged();
        let started = a.send(&ov, vec![b"hello".to_vec()], 0).unwrap();
        let p = next(&port);
        assert_eq!((p.key, p.bytes, p.error), (11, 5, None), "{started:?}");
        packet_object(&p, &ov);
        assert_eq!(read_exact(&mut peer_a, 5), b"hello");
        assert_no_packet(&port);
    });
}

/// S36: the packet hands the overlapped object back even when the caller dropped its own
/// handle; the operation is not cancelled by that drop.
#[test]
fn s36_packet_hands_back_the_object_the_caller_dropped() {
    on_every_backend!(|| {
        let port = new_port(1);
        let (sock, mut peer) = tcp_pair_std();
        port.associate(&sock, 5).unwrap();
        let event = Event::new();
        {
            let ov: Overlapped = Overlapped::with_event(event.clone());
            assert_eq!(sock.recv(&ov, vec![vec![0; 16]], 0), Ok(Started::Pending));
        }
        {
            let ov: Overlapped = Overlapped::new();
            let _ = sock.send(&ov, vec![b"out".to_vec()], 0).unwrap();
        }
        settle_time();
        write_all(&mut peer, b"back");
        let mut got = Vec::new();
        for _ in 0..2 {
            let p = next(&port);
            assert_eq!(p.key, 5);
            let ov = p.overlapped.clone().expect("the object comes back");
            assert_eq!(ov.completion(false).unwrap().result(), p.result());
            let data = received(&ov, p.bytes);
            let is_recv = ov.event().is_some_and(|e| e.same_as(&event));
            got.push((is_recv, p.error.map(|e| e.code()), data));
        }
        got.sort();
        assert_eq!(
            got,
            [
                (false, None, b"out".to_vec()),
                (true, None, b"back".to_vec())
            ]
        );
        assert_eq!(read_exact(&mut peer, 3), b"out");
        assert_no_packet(&port);
    });
}

/// S37: a successful operation's packet: no error, its bytes, the socket's key, its object.
#[test]
fn s37_success_packet_has_bytes_key_and_object() {
    on_every_backend!(|| {
        let port = new_port(2);
        let (sock, mut peer) = tcp_pair_std();
        port.associate(&sock, 0xC0FFEE).unwrap();
        let ov = tagged();
        assert_eq!(
            sock.recv(&ov, vec![vec![0; 4], vec![0; 8]], 0),
            Ok(Started::Pending)
        );
        write_all(&mut peer, b"deadbeefs");
        let p = next(&port);
        assert_eq!((p.error, p.bytes, p.key), (None, 9, 0xC0FFEE));
        assert_eq!(p.result(), Ok(9));
        let ov = packet_object(&p, &ov);
        assert!(!ov.is_pending());
        assert_eq!(
            ov.take_buffers().unwrap(),
            [b"dead".to_vec(), b"beefs\0\0\0".to_vec()]
        );
    });
}

/// S37: a failed operation's packet carries its error with its bytes, key and object: a reset
/// connection (WSAECONNRESET) and a cancelled receive (WSA_OPERATION_ABORTED).
#[test]
fn s37_failed_operation_packet_has_error_bytes_key_and_object() {
    on_every_backend!(|| {
        let port = new_port(1);
        let (sock, peer) = tcp_pair_std();
        port.associate(&sock, 77).unwrap();
        let ov = tagged();
        assert_eq!(sock.recv(&ov, vec![vec![0; 8]], 0), Ok(Started::Pending));
        ov.cancel().unwrap();
        let p = next(&port);
        assert_eq!(
            p.error.map(|e| e.code()),
            Some(codes::WSA_OPERATION_ABORTED)
        );
        assert_eq!((p.bytes, p.key), (0, 77));
        assert_eq!(p.result().unwrap_err().code(), codes::WSA_OPERATION_ABORTED);
        let back = packet_object(&p, &ov);
        assert_eq!(
            back.take_buffers().unwrap().len(),
            1,
            "the buffers come back"
        );

        assert_eq!(sock.recv(&ov, vec![vec![0; 8]], 0), Ok(Started::Pending));
        socket2::SockRef::from(&peer)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(peer);
        let p = next(&port);
        assert_eq!(p.error.map(|e| e.code()), Some(codes::WSAECONNRESET));
        assert_eq!((p.bytes, p.key), (0, 77));
        let back = packet_object(&p, &ov);
        assert_eq!(back.completion(false).unwrap().error, p.error);
        assert_no_packet(&port);
    });
}

/// S37: with no packet, get times out with WAIT_TIMEOUT (258) and no object; a zero timeout
/// only polls.
#[test]
fn s37_timeout_is_wait_timeout() {
    on_every_backend!(|| {
        let port = new_port(1);
        for timeout in [Duration::ZERO, Duration::from_millis(30)] {
            let err = port.get(Some(timeout)).unwrap_err();
            assert_eq!(err.code(), 258);
            assert_eq!(err.code(), codes::WAIT_TIMEOUT);
            let err = port.get_many(8, Some(timeout)).unwrap_err();
            assert_eq!(err.code(), codes::WAIT_TIMEOUT);
            let err = port.get_ex(8, Some(timeout), true).unwrap_err();
            assert_eq!(err.code(), codes::WAIT_TIMEOUT);
        }
        port.post(1, 2, None).unwrap();
        let p = port
            .get(Some(Duration::ZERO))
            .expect("a poll finds a queued packet");
        assert_eq!((p.bytes, p.key), (1, 2));
    });
}

/// S38: a posted packet comes out exactly as posted: bytes, key and the very object.
#[test]
fn s38_posted_packet_comes_out_exactly_as_posted() {
    on_every_backend!(|| {
        let port = new_port(1);
        let (sock, mut peer) = tcp_pair_std();
        let ov = tagged();
        assert_eq!(
            sock.send(&ov, vec![b"abc".to_vec()], 0),
            Ok(Started::Done(3))
        );
        let fresh = tagged();
        port.post(0, 0, None).unwrap();
        port.post(usize::MAX, usize::MAX - 1, Some(ov.clone()))
            .unwrap();
        port.post(123, 456, Some(fresh.clone())).unwrap();

        let p = next(&port);
        assert_eq!((p.bytes, p.key, p.error), (0, 0, None));
        assert!(p.overlapped.is_none());
        let p = next(&port);
        assert_eq!(
            (p.bytes, p.key, p.error),
            (usize::MAX, usize::MAX - 1, None)
        );
        let back = packet_object(&p, &ov);
        assert_eq!(back.result(false), Ok(3), "the object's own state");
        let p = next(&port);
        assert_eq!((p.bytes, p.key, p.error), (123, 456, None));
        let back = packet_object(&p, &fresh);
        // The same object: an operation started through the posted handle is seen through ours.
        assert_eq!(sock.recv(&back, vec![vec![0; 4]], 0), Ok(Started::Pending));
        assert!(fresh.is_pending());
        write_all(&mut peer, b"seen");
        assert_eq!(wait_done(&fresh).result(), Ok(4));
        assert_no_packet(&port);
    });
}

/// S39: packets come out in the order they were queued.
#[test]
fn s39_packets_come_out_fifo() {
    on_every_backend!(|| {
        let port = new_port(1);
        for i in 0..1000 {
            port.post(i, i % 7, None).unwrap();
        }
        for i in 0..1000 {
            let p = next(&port);
            assert_eq!((p.bytes, p.key), (i, i % 7));
        }
        assert_no_packet(&port);
    });
}

/// S39: waiting threads are woken LIFO, the most recent waiter first.
#[test]
fn s39_waiters_are_woken_lifo() {
    on_every_backend!(|| {
        const N: usize = 4;
        let port = new_port(N);
        let (tx, rx) = mpsc::channel();
        let waiters = {
            let port = port.clone();
            let tx = Mutex::new(tx);
            waiters_in_order(&port.clone(), N, move |id| {
                let p = port.get(Some(TIMEOUT)).expect("a packet");
                tx.lock().unwrap().send((id, p.bytes)).unwrap();
            })
        };
        let mut order = Vec::new();
        for k in 0..N {
            port.post(k, 0, None).unwrap();
            let (id, bytes) = rx.recv_timeout(TIMEOUT).expect("a waiter took the packet");
            assert_eq!(bytes, k);
            order.push(id);
        }
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(order, [3, 2, 1, 0], "waiters woken in this order");
    });
}

/// S39: eight threads draining one port of concurrency 2 never have more than two running
/// (between a get that returned and the next get).
#[test]
fn s39_no_more_than_concurrency_threads_run() {
    on_every_backend!(|| {
        const THREADS: usize = 8;
        const PACKETS: usize = 2000;
        let port = new_port(2);
        let running = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                let (port, running, max, done) =
                    (port.clone(), running.clone(), max.clone(), done.clone());
                thread::spawn(move || {
                    for _ in 0..=PACKETS {
                        if until_closed(port.get(Some(TIMEOUT))).is_none() {
                            return;
                        }
                        let now = running.fetch_add(1, SeqCst) + 1;
                        max.fetch_max(now, SeqCst);
                        thread::sleep(Duration::from_micros(100));
                        done.fetch_add(1, SeqCst);
                        running.fetch_sub(1, SeqCst);
                    }
                    panic!("more packets than were posted");
                })
            })
            .collect();
        for i in 0..PACKETS {
            port.post(i, 0, None).unwrap();
        }
        eventually("every packet taken", || done.load(SeqCst) == PACKETS);
        port.close(); // wakes the workers to stop (S41)
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(done.load(SeqCst), PACKETS);
        assert_eq!(
            max.load(SeqCst),
            2,
            "at most 2 run, and the port lets 2 run"
        );
    });
}

/// S39: with concurrency 1, a packet queued while a thread runs waits; when that thread stops
/// running (here: exits), the waiting thread gets it.
#[test]
fn s39_waiter_gets_the_packet_once_the_running_thread_stops() {
    on_every_backend!(|| {
        let port = new_port(1);
        let (took_tx, took_rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let runner = {
            let (port, stop) = (port.clone(), stop.clone());
            thread::spawn(move || {
                let p = port.get(Some(TIMEOUT)).expect("the first packet");
                took_tx.send(p.bytes).unwrap();
                // Running (not blocked) until told to stop.
                let deadline = Instant::now() + TIMEOUT;
                while !stop.load(SeqCst) && Instant::now() < deadline {
                    thread::yield_now();
                }
            })
        };
        port.post(1, 0, None).unwrap();
        assert_eq!(took_rx.recv_timeout(TIMEOUT), Ok(1));

        let (got_tx, got_rx) = mpsc::channel();
        let waiter = waiters_in_order(&port, 1, {
            let port = port.clone();
            let got_tx = Mutex::new(got_tx);
            move |_| {
                let p = port.get(Some(2 * TIMEOUT));
                // The test may have given up on this thread already.
                let _ = got_tx.lock().unwrap().send(p.map(|p| p.bytes));
            }
        });
        port.post(2, 0, None).unwrap();
        settle_time();
        assert!(
            got_rx.try_recv().is_err(),
            "a second thread ran while one was running at concurrency 1"
        );
        stop.store(true, SeqCst);
        runner.join().unwrap();
        let got = got_rx
            .recv_timeout(TIMEOUT)
            .expect("the packet stayed queued after the running thread exited, its waiter asleep");
        assert_eq!(got, Ok(2));
        waiter.into_iter().for_each(|w| w.join().unwrap());
    });
}

/// S40: get-many takes up to N packets at once, in order.
#[test]
fn s40_get_many_takes_up_to_n_in_fifo_order() {
    on_every_backend!(|| {
        let port = new_port(1);
        let (sock, mut peer) = tcp_pair_std();
        port.associate(&sock, 9).unwrap();
        for i in 0..10 {
            port.post(i, 100 + i, None).unwrap();
        }
        let first = port.get_many(4, Some(TIMEOUT)).unwrap();
        let bytes: Vec<usize> = first.iter().map(|p| p.bytes).collect();
        assert_eq!(bytes, [0, 1, 2, 3]);
        assert!(first.iter().all(|p| p.key == 100 + p.bytes));
        let rest = port.get_many(100, Some(TIMEOUT)).unwrap();
        let bytes: Vec<usize> = rest.iter().map(|p| p.bytes).collect();
        assert_eq!(bytes, [4, 5, 6, 7, 8, 9]);
        let err = port
            .get_many(4, Some(Duration::from_millis(30)))
            .unwrap_err();
        assert_eq!(err.code(), codes::WAIT_TIMEOUT);

        // A completion that comes after a post comes out after it.
        let ov = tagged();
        assert_eq!(sock.recv(&ov, vec![vec![0; 8]], 0), Ok(Started::Pending));
        port.post(1, 1, None).unwrap();
        write_all(&mut peer, b"mid");
        let mut all = Vec::new();
        for _ in 0..3 {
            if all.len() == 2 {
                break;
            }
            all.extend(port.get_many(8, Some(TIMEOUT)).unwrap());
        }
        let keys: Vec<usize> = all.iter().map(|p| p.key).collect();
        assert_eq!(keys, [1, 9], "the post came first, then the receive");
    });
}

/// S41: closing a port wakes every waiter with ERROR_ABANDONED_WAIT_0 (735); later calls fail
/// the same way.
#[test]
fn s41_close_wakes_every_waiter_with_abandoned_wait() {
    on_every_backend!(|| {
        let port = new_port(4);
        let waiters = {
            let port = port.clone();
            waiters_in_order(&port.clone(), 3, move |id| match id {
                0 => port.get(Some(TIMEOUT)).map(drop),
                1 => port.get_many(4, Some(TIMEOUT)).map(drop),
                _ => port.get_ex(4, Some(TIMEOUT), true).map(drop),
            })
        };
        port.clone().close();
        for (id, w) in waiters.into_iter().enumerate() {
            let err = w.join().unwrap().unwrap_err();
            assert_eq!(err.code(), 735, "waiter {id}: {err}");
            assert_eq!(err.code(), codes::ERROR_ABANDONED_WAIT_0);
        }
        let err = port.post(1, 1, None).unwrap_err();
        assert_eq!(err.code(), codes::ERROR_ABANDONED_WAIT_0);
        let err = port.get(Some(TIMEOUT)).unwrap_err();
        assert_eq!(err.code(), codes::ERROR_ABANDONED_WAIT_0);
    });
}

/// S42: an alertable get with no packet runs the thread's queued routine and returns
/// WAIT_IO_COMPLETION; a non-alertable get runs none.
#[test]
fn s42_alertable_get_runs_routine_and_returns_io_completion() {
    on_every_backend!(|| {
        let port = new_port(1);
        let (sock, mut peer) = tcp_pair_std();
        let ran = Rc::new(Cell::new(0));
        write_all(&mut peer, b"apc");
        let routine = {
            let ran = ran.clone();
            move |error: Option<overlapped::Error>, bytes: usize, ov: Overlapped, _flags: u32| {
                assert_eq!((error, bytes), (None, 3));
                assert_eq!(received(&ov, bytes), b"apc");
                ran.set(ran.get() + 1);
            }
        };
        let _ = sock
            .recv_with_routine(Overlapped::new(), vec![vec![0; 8]], 0, routine)
            .unwrap();
        let err = port.get(Some(Duration::from_millis(30))).unwrap_err();
        assert_eq!(err.code(), codes::WAIT_TIMEOUT);
        assert_eq!(ran.get(), 0, "a non-alertable get runs no routine");
        match port.get_ex(4, Some(TIMEOUT), true).unwrap() {
            PortWait::IoCompletion => {}
            PortWait::Packets(p) => panic!("packets from an empty port: {p:?}"),
        }
        assert_eq!(ran.get(), 1);
        let err = port
            .get_ex(4, Some(Duration::from_millis(30)), true)
            .unwrap_err();
        assert_eq!(err.code(), codes::WAIT_TIMEOUT);
    });
}

/// S42: with a packet available and a routine queued, the packet wins; the routine runs in the
/// next alertable get.
#[test]
fn s42_packet_wins_over_queued_routine() {
    on_every_backend!(|| {
        let port = new_port(1);
        let (sock, mut peer) = tcp_pair_std();
        let ran = Rc::new(Cell::new(0));
        let routine = {
            let ran = ran.clone();
            move |error: Option<overlapped::Error>, bytes: usize, _: Overlapped, _: u32| {
                assert_eq!((error, bytes), (None, 1));
                ran.set(ran.get() + 1);
            }
        };
        let _ = sock
            .send_with_routine(Overlapped::new(), vec![b"x".to_vec()], 0, routine)
            .unwrap();
        port.post(7, 8, None).unwrap();
        port.post(9, 10, None).unwrap();
        match port.get_ex(4, Some(TIMEOUT), true).unwrap() {
            PortWait::Packets(p) => {
                let got: Vec<_> = p.iter().map(|p| (p.bytes, p.key)).collect();
                assert_eq!(got, [(7, 8), (9, 10)]);
            }
            PortWait::IoCompletion => panic!("the routine ran though packets were there"),
        }
        assert_eq!(ran.get(), 0, "the packets won; no routine ran");
        match port.get_ex(4, Some(TIMEOUT), true).unwrap() {
            PortWait::IoCompletion => {}
            PortWait::Packets(p) => panic!("unexpected packets {p:?}"),
        }
        assert_eq!(ran.get(), 1);
        assert_eq!(read_exact(&mut peer, 1), b"x");
    });
}

/// S43: many threads drain one port while other threads (and the drainers) post to it: every
/// packet comes out exactly once, and each drainer sees each poster's packets in order.
#[test]
fn s43_many_threads_drain_and_any_thread_posts() {
    on_every_backend!(|| {
        const POSTERS: usize = 4;
        const PER: usize = 500;
        const DRAINERS: usize = 4;
        const RELAY: usize = 1000;
        let relays = POSTERS * PER / 100;
        let port = new_port(0);
        let taken = Arc::new(AtomicUsize::new(0));
        let drainers: Vec<_> = (0..DRAINERS)
            .map(|d| {
                let (port, taken) = (port.clone(), taken.clone());
                thread::spawn(move || {
                    let mut mine = Vec::new();
                    for _ in 0..=POSTERS * PER + relays {
                        let packets = match d {
                            0 => until_closed(port.get_many(8, Some(TIMEOUT))),
                            _ => until_closed(port.get(Some(TIMEOUT))).map(|p| vec![p]),
                        };
                        let Some(packets) = packets else {
                            return mine;
                        };
                        for p in packets {
                            if p.key < POSTERS && p.bytes % 100 == 0 {
                                port.post(p.key * PER + p.bytes, RELAY, None).unwrap();
                            }
                            mine.push((p.key, p.bytes));
                            taken.fetch_add(1, SeqCst);
                        }
                    }
                    panic!("more packets than were posted");
                })
            })
            .collect();
        let posters: Vec<_> = (0..POSTERS)
            .map(|key| {
                let port = port.clone();
                thread::spawn(move || (0..PER).for_each(|i| port.post(i, key, None).unwrap()))
            })
            .collect();
        posters.into_iter().for_each(|p| p.join().unwrap());
        eventually("every packet taken", || {
            taken.load(SeqCst) == POSTERS * PER + relays
        });
        port.close();
        let mut all = HashSet::new();
        for d in drainers {
            let mine = d.join().unwrap();
            for key in 0..POSTERS {
                let seq: Vec<usize> = mine.iter().filter(|p| p.0 == key).map(|p| p.1).collect();
                assert!(
                    seq.windows(2).all(|w| w[0] < w[1]),
                    "poster {key} out of order"
                );
            }
            for p in mine {
                assert!(all.insert(p), "packet {p:?} came out twice");
            }
        }
        assert_eq!(all.len(), POSTERS * PER + relays);
        let relayed = all.iter().filter(|p| p.0 == RELAY).count();
        assert_eq!(relayed, relays);
        assert_eq!(taken.load(SeqCst), POSTERS * PER + relays);
    });
}

/// S43: worker threads serve the receives of several connections through one port, each
/// re-arming the receive of the packet it took; every byte arrives once, in order.
#[test]
fn s43_workers_serve_many_connections() {
    on_every_backend!(|| {
        const CONNS: usize = 4;
        const BYTES: usize = 200_000;
        const WORKERS: usize = 3;
        let port = new_port(2);
        let mut socks = Vec::new();
        let mut writers = Vec::new();
        for key in 0..CONNS {
            let (sock, mut peer) = tcp_pair_std();
            port.associate(&sock, key).unwrap();
            let ov: Overlapped = Overlapped::new();
            assert_eq!(sock.recv(&ov, vec![vec![0; 1000]], 0), Ok(Started::Pending));
            socks.push(sock);
            writers.push(thread::spawn(move || {
                let data: Vec<u8> = (0..BYTES).map(|i| pattern(i + key)).collect();
                for chunk in data.chunks(3000) {
                    write_all(&mut peer, chunk);
                }
                peer.shutdown(Shutdown::Write).unwrap();
            }));
        }
        let socks = Arc::new(socks);
        let data: Arc<Vec<Mutex<Vec<u8>>>> =
            Arc::new((0..CONNS).map(|_| Mutex::default()).collect());
        let ended = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                let (port, socks, data, ended) =
                    (port.clone(), socks.clone(), data.clone(), ended.clone());
                thread::spawn(move || {
                    for _ in 0..=CONNS * (BYTES + 1) {
                        let Some(p) = until_closed(port.get(Some(TIMEOUT))) else {
                            return;
                        };
                        assert!(p.error.is_none(), "{p:?}");
                        let ov = p.overlapped.expect("the receive's object");
                        if p.bytes == 0 {
                            ended.fetch_add(1, SeqCst);
                            continue;
                        }
                        data[p.key].lock().unwrap().extend(received(&ov, p.bytes));
                        let _ = socks[p.key].recv(&ov, vec![vec![0; 1000]], 0).unwrap();
                    }
                    panic!("more packets than bytes");
                })
            })
            .collect();
        writers.into_iter().for_each(|w| w.join().unwrap());
        eventually("every connection ended", || ended.load(SeqCst) == CONNS);
        port.close();
        workers.into_iter().for_each(|w| w.join().unwrap());
        for key in 0..CONNS {
            let got = data[key].lock().unwrap();
            assert_eq!(got.len(), BYTES, "connection {key}");
            assert!(got.iter().enumerate().all(|(i, &b)| b == pattern(i + key)));
        }
    });
}

/// Waits (bounded) until the socket has data to read.
fn wait_readable(sock: &Socket) {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, TIMEOUT.as_millis() as i32) };
    assert_eq!(n, 1, "data did not arrive within {TIMEOUT:?}");
}

/// S44: with skip-on-success, an operation done at once posts no packet (its object holds the
/// result); a pending one still does. Without it, done at once posts one too (S3).
#[test]
fn s44_skip_on_success_posts_nothing_for_done_at_once() {
    on_every_backend!(|| {
        let port = new_port(1);
        let (sock, mut peer) = tcp_pair_std();
        port.associate(&sock, 1).unwrap();
        sock.set_skip_completion_port_on_success(true);
        let (mut at_once, mut pending) = (0, Vec::new());
        let mut check = |ov: Overlapped, started: Started, len: usize| match started {
            Started::Done(n) => {
                at_once += 1;
                assert_eq!(n, len);
                assert_eq!(ov.result(false), Ok(len), "the object holds the result");
            }
            Started::Pending => pending.push(ov),
        };
        for round in 0..10 {
            let ov = tagged();
            let started = sock.send(&ov, vec![vec![round; 10]], 0).unwrap();
            check(ov, started, 10);
            write_all(&mut peer, b"abc");
            wait_readable(&sock);
            let ov = tagged();
            let started = sock.recv(&ov, vec![vec![0; 3]], 0).unwrap();
            check(ov, started, 3);
        }
        eprintln!("done at once: {at_once}, pending: {}", pending.len());
        assert!(
            at_once > 0,
            "nothing completed at once: this test checks nothing"
        );
        for _ in 0..pending.len() {
            let p = next(&port);
            let ov = p.overlapped.as_ref().expect("the object");
            assert!(
                pending.iter().any(|o| same_object(o, ov)),
                "a done-at-once op posted"
            );
        }
        assert_no_packet(&port);
        let sent = read_exact(&mut peer, 100);
        assert!((0..10u8).all(|r| sent[r as usize * 10..][..10] == [r; 10]));

        // Without the option, done at once posts a packet (S3).
        let (plain, mut plain_peer) = tcp_pair_std();
        port.associate(&plain, 2).unwrap();
        let ov = tagged();
        let started = plain.send(&ov, vec![b"ping".to_vec()], 0).unwrap();
        let p = next(&port);
        assert_eq!((p.key, p.bytes, p.error), (2, 4, None), "{started:?}");
        assert_eq!(read_exact(&mut plain_peer, 4), b"ping");
    });
}

/// S44: with skip-on-success, pending operations still post packets, success or failure; a
/// call that fails at once posts nothing (S4).
#[test]
fn s44_pending_operations_still_post_with_skip_on_success() {
    on_every_backend!(|| {
        let port = new_port(1);
        let (sock, mut peer) = tcp_pair_std();
        port.associate(&sock, 3).unwrap();
        sock.set_skip_completion_port_on_success(true);

        let ov = tagged();
        assert_eq!(sock.recv(&ov, vec![vec![0; 8]], 0), Ok(Started::Pending));
        write_all(&mut peer, b"late");
        let p = next(&port);
        assert_eq!((p.key, p.bytes, p.error), (3, 4, None));
        assert_eq!(received(&packet_object(&p, &ov), 4), b"late");

        assert_eq!(sock.recv(&ov, vec![vec![0; 8]], 0), Ok(Started::Pending));
        ov.cancel().unwrap();
        let p = next(&port);
        assert_eq!(
            p.error.map(|e| e.code()),
            Some(codes::WSA_OPERATION_ABORTED)
        );
        assert_eq!(p.key, 3);
        packet_object(&p, &ov);

        sock.shutdown(Shutdown::Write).unwrap();
        let err = sock.send(&ov, vec![b"no".to_vec()], 0).unwrap_err();
        assert_eq!(err.code(), codes::WSAESHUTDOWN);
        assert_no_packet(&port);
    });
}

/// S32: a socket associated with a port refuses a completion routine with WSAEINVAL; the object
/// comes back (with its buffers), no routine runs, no packet is posted; the object then serves
/// an operation through the port.
#[test]
fn s32_port_socket_refuses_completion_routines() {
    on_every_backend!(|| {
        let port = new_port(1);
        let (sock, mut peer) = tcp_pair_std();
        let (udp, other) = udp_pair();
        port.associate(&sock, 1).unwrap();
        port.associate(&udp, 2).unwrap();
        let ran = Rc::new(Cell::new(0));
        let routine = || {
            let ran = ran.clone();
            move |_: Option<overlapped::Error>, _: usize, _: Overlapped, _: u32| {
                ran.set(ran.get() + 1)
            }
        };
        let to = other.local_addr().unwrap();
        let bufs = || vec![b"keep".to_vec()];
        let refusals = [
            sock.recv_with_routine(tagged(), bufs(), 0, routine()),
            sock.send_with_routine(tagged(), bufs(), 0, routine()),
            udp.send_to_with_routine(tagged(), bufs(), 0, to, routine()),
            udp.recv_from_with_routine(tagged(), bufs(), 0, routine()),
        ];
        let mut objects = Vec::new();
        for (i, refused) in refusals.into_iter().enumerate() {
            let not_started = refused.expect_err("a routine on a port socket is refused");
            assert_eq!(not_started.error.code(), codes::WSAEINVAL, "call {i}");
            let ov = not_started.overlapped;
            assert!(!ov.is_pending(), "call {i}");
            assert_eq!(ov.take_buffers().unwrap(), bufs(), "call {i}: buffers back");
            objects.push(ov);
        }
        assert_eq!(
            sleep_ex(Some(Duration::from_millis(30)), true),
            Ok(WaitExResult::Timeout)
        );
        assert_eq!(ran.get(), 0);
        assert_no_packet(&port);

        let ov = &objects[0];
        assert_eq!(sock.recv(ov, vec![vec![0; 8]], 0), Ok(Started::Pending));
        write_all(&mut peer, b"port");
        let p = next(&port);
        assert_eq!((p.key, p.bytes), (1, 4));
        assert_eq!(received(&packet_object(&p, ov), 4), b"port");
    });
}
