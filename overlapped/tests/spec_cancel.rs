//! SPEC S33–S35: cancellation and close.

#[macro_use]
mod common;

use std::cell::RefCell;
use std::net::Shutdown;
use std::rc::Rc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use overlapped::{
    codes, sleep_ex, CompletionPort, Event, Family, Kind, Overlapped, Packet, Socket, Started,
};

type Port = CompletionPort<Vec<u8>>;

/// What completion routines saw, on their thread.
type Log<T> = Rc<RefCell<Vec<T>>>;

fn new_port() -> Port {
    CompletionPort::new(1).expect("create a completion port")
}

/// Takes one packet, waiting at most [`TIMEOUT`].
fn next(port: &Port) -> Packet {
    port.get(Some(TIMEOUT))
        .unwrap_or_else(|e| panic!("no packet within {TIMEOUT:?}: {e}"))
}

/// Checks that no packet comes within a short pause.
fn assert_no_packet(port: &Port) {
    match port.get(Some(Duration::from_millis(50))) {
        Err(e) => assert_eq!(e.code(), codes::WAIT_TIMEOUT, "{e}"),
        Ok(p) => panic!("unexpected packet: {p:?}"),
    }
}

fn code<T>(r: &overlapped::Result<T>) -> Option<u32> {
    r.as_ref().err().map(|e| e.code())
}

/// An overlapped object that can be recognised: it has an event of its own.
fn tagged() -> Overlapped {
    Overlapped::with_event(Event::new())
}

/// S33: cancelling one operation completes it once with WSA_OPERATION_ABORTED and gives its
/// buffers back, whether it was in the kernel or queued behind another; the others stay
/// pending and take the data. Cancelling again, or an object never used, is ERROR_NOT_FOUND.
#[test]
fn s33_cancel_one_completes_it_aborted_and_gives_buffers_back() {
    static LIVE: Live = Live::new();
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        let never: Overlapped<Counted> = ov_with_event();
        assert_eq!(code(&never.cancel()), Some(1168));
        assert_eq!(code(&never.cancel()), Some(codes::ERROR_NOT_FOUND));

        let ovs: Vec<Overlapped<Counted>> = (0..3).map(|_| ov_with_event()).collect();
        for ov in &ovs {
            let witness = ov.event().unwrap();
            let buf = LIVE.buf_witnessed(16, witness);
            assert_eq!(sock.recv(ov, vec![buf], 0), Ok(Started::Pending));
        }
        // The second is queued behind the first; the first is with the kernel.
        for i in [1, 0] {
            ovs[i].cancel().unwrap();
            wait_event(&ovs[i]);
            let c = wait_done(&ovs[i]);
            assert_eq!(c.error.map(|e| e.code()), Some(995), "receive {i}");
            assert_eq!(
                c.error.map(|e| e.code()),
                Some(codes::WSA_OPERATION_ABORTED)
            );
            assert_eq!(c.bytes, 0);
            let bufs = ovs[i].take_buffers().expect("the buffers come back");
            assert_eq!(bufs.len(), 1);
            assert_eq!(bufs[0].bytes(), [0; 16], "a cancelled receive took nothing");
            assert_eq!(code(&ovs[i].cancel()), Some(codes::ERROR_NOT_FOUND));
        }
        assert!(ovs[2].is_pending());
        write_all(&mut peer, b"for the third");
        let c = wait_done(&ovs[2]);
        assert_eq!(c.result(), Ok(13));
        let bufs = ovs[2].take_buffers().unwrap();
        assert_eq!(&bufs[0].bytes()[..13], b"for the third");
        assert_eq!(
            code(&ovs[2].cancel()),
            Some(codes::ERROR_NOT_FOUND),
            "finished"
        );
        drop((bufs, ovs, sock));
        LIVE.assert_all_released_safely();
    });
}

/// S33: cancel-all cancels every pending operation of the socket (receives queued and in the
/// kernel, a send that cannot finish), each with exactly one packet, aborted; another socket's
/// operation is untouched. With nothing pending it is ERROR_NOT_FOUND.
#[test]
fn s33_cancel_all_cancels_every_pending_operation_of_the_socket() {
    on_every_backend!(|| {
        let port = new_port();
        let (sock, _peer) = tcp_pair_std();
        let (other, mut other_peer) = tcp_pair_std();
        port.associate(&sock, 1).unwrap();
        port.associate(&other, 2).unwrap();
        assert_eq!(code(&sock.cancel_all()), Some(codes::ERROR_NOT_FOUND));

        let recvs: Vec<Overlapped> = (0..3).map(|_| tagged()).collect();
        for ov in &recvs {
            assert_eq!(sock.recv(ov, vec![vec![0; 8]], 0), Ok(Started::Pending));
        }
        let send = tagged();
        let big = vec![7u8; 32 << 20]; // more than the peer, which never reads, can take
        assert_eq!(sock.send(&send, vec![big], 0), Ok(Started::Pending));
        let untouched = tagged();
        assert_eq!(
            other.recv(&untouched, vec![vec![0; 8]], 0),
            Ok(Started::Pending)
        );

        sock.cancel_all().unwrap();
        let mut seen = Vec::new();
        for _ in 0..4 {
            let p = next(&port);
            assert_eq!(p.key, 1, "{p:?}");
            assert_eq!(p.error.map(|e| e.code()), Some(995), "{p:?}");
            let ov = p.overlapped.expect("the object");
            let i = recvs
                .iter()
                .chain([&send])
                .position(|o| o.event().unwrap().same_as(ov.event().unwrap()))
                .expect("one of the cancelled operations");
            assert!(!seen.contains(&i), "operation {i} completed twice");
            seen.push(i);
            assert_eq!(ov.take_buffers().expect("buffers back").len(), 1);
        }
        assert_no_packet(&port);
        assert_eq!(code(&sock.cancel_all()), Some(codes::ERROR_NOT_FOUND));

        write_all(&mut other_peer, b"still");
        let p = next(&port);
        assert_eq!((p.key, p.bytes, p.error), (2, 5, None));
    });
}

/// S33: a cancelled operation with a completion routine runs its routine exactly once, with
/// WSA_OPERATION_ABORTED and its buffers.
#[test]
fn s33_cancelled_routine_runs_once_aborted() {
    on_every_backend!(|| {
        let (sock, _peer) = tcp_pair_std();
        let ran: Log<(Option<u32>, usize, usize)> = Rc::default();
        let ov: Overlapped = Overlapped::new();
        let routine = {
            let ran = ran.clone();
            move |error: Option<overlapped::Error>, bytes: usize, ov: Overlapped, _: u32| {
                let bufs = ov.take_buffers().unwrap_or_default().len();
                ran.borrow_mut()
                    .push((error.map(|e| e.code()), bytes, bufs));
            }
        };
        let started = sock.recv_with_routine(ov.clone(), vec![vec![0; 8]], 0, routine);
        assert_eq!(started.unwrap(), Started::Pending);
        ov.cancel().unwrap();
        let deadline = Instant::now() + TIMEOUT;
        while ran.borrow().is_empty() && Instant::now() < deadline {
            sleep_ex(Some(Duration::from_millis(50)), true).unwrap();
        }
        sleep_ex(Some(Duration::from_millis(50)), true).unwrap();
        assert_eq!(*ran.borrow(), [(Some(995), 0, 1)]);
        assert_eq!(code(&ov.cancel()), Some(codes::ERROR_NOT_FOUND));
    });
}

/// S33: cancel racing completion, 10,000 times, while another thread drains the port: each
/// receive completes exactly once (one packet), aborted or with its data; no byte is lost or
/// duplicated across the rounds.
#[test]
fn s33_cancel_racing_completion_10000_times() {
    on_every_backend!(|| {
        const ROUNDS: usize = 10_000;
        let port = new_port();
        let (sock, mut peer) = tcp_pair_std();
        port.associate(&sock, 4).unwrap();
        let (tx, packets) = mpsc::channel();
        let drainer = {
            let port = port.clone();
            thread::spawn(move || {
                for _ in 0..3 * ROUNDS {
                    match port.get(Some(TIMEOUT)) {
                        Ok(p) => {
                            if tx.send(p).is_err() {
                                return;
                            }
                        }
                        Err(e) if e.code() == codes::ERROR_ABANDONED_WAIT_0 => return,
                        Err(e) => panic!("no packet: {e}"),
                    }
                }
            })
        };
        // The peer writes what it is sent, then says so; an empty chunk closes it.
        let (chunks, writes) = (mpsc::channel::<Vec<u8>>(), mpsc::channel());
        let writer = thread::spawn(move || {
            for chunk in chunks.1.iter().take(ROUNDS + 1) {
                if chunk.is_empty() {
                    return;
                }
                write_all(&mut peer, &chunk);
                writes.0.send(()).unwrap();
            }
        });
        let write = |chunk: Vec<u8>| chunks.0.send(chunk).unwrap();
        let written_now = || writes.1.recv_timeout(TIMEOUT).expect("the peer wrote");
        let ov = tagged();
        // One receive through the port: its packet's byte count, or its error code.
        let take = |what: &str| -> (Result<usize, u32>, Vec<u8>) {
            let p = packets.recv_timeout(TIMEOUT).expect(what);
            assert_eq!(p.key, 4);
            let back = p.overlapped.expect("the object");
            assert!(back.event().unwrap().same_as(ov.event().unwrap()));
            assert!(!ov.is_pending(), "{what}: a packet while still pending");
            let bufs = back.take_buffers().expect("the buffers come back");
            let data = bufs[0][..p.bytes].to_vec();
            (p.error.map_or(Ok(p.bytes), |e| Err(e.code())), data)
        };
        let (mut written, mut got) = (Vec::new(), Vec::new());
        let (mut aborted, mut completed) = (0, 0);
        let deadline = Instant::now() + 6 * TIMEOUT;
        for round in 0..ROUNDS {
            assert!(Instant::now() < deadline, "round {round}: out of time");
            // Read what an earlier cancelled receive left, so that this one has to wait.
            for _ in 0..written.len() {
                if got.len() == written.len() {
                    break;
                }
                let _ = sock.recv(&ov, vec![vec![0; 16]], 0).unwrap();
                let (result, data) = take("a leftover");
                assert!(
                    matches!(result, Ok(n) if n > 0),
                    "round {round}: {result:?}"
                );
                got.extend(data);
            }
            assert_eq!(got.len(), written.len(), "round {round}: leftover not read");
            let chunk: Vec<u8> = (0..1 + round % 8)
                .map(|i| pattern(written.len() + i))
                .collect();
            let started = sock.recv(&ov, vec![vec![0; 16]], 0).unwrap();
            assert_eq!(started, Started::Pending, "round {round}: nothing to read");
            written.extend(&chunk);
            match round % 4 {
                0 => {
                    let _ = ov.cancel();
                    write(chunk);
                    written_now();
                }
                1 => {
                    write(chunk);
                    written_now();
                    let _ = ov.cancel();
                }
                _ => {
                    write(chunk);
                    (0..round % 500).for_each(|_| std::hint::spin_loop());
                    let _ = ov.cancel();
                    written_now();
                }
            }
            match take("the raced receive") {
                (Ok(n), data) => {
                    completed += 1;
                    assert!(n > 0, "round {round}");
                    got.extend(data);
                }
                (Err(995), data) => {
                    aborted += 1;
                    assert!(data.is_empty(), "round {round}");
                }
                (Err(other), _) => panic!("round {round}: error {other}"),
            }
            assert_eq!(written[..got.len()], got[..], "round {round}: bytes differ");
        }
        assert!(
            packets.recv_timeout(Duration::from_millis(50)).is_err(),
            "a packet too many"
        );
        eprintln!("{ROUNDS} rounds: {completed} completed, {aborted} aborted");
        assert_eq!(completed + aborted, ROUNDS);
        assert!(
            aborted >= ROUNDS / 4,
            "a cancel before the data always wins"
        );

        // Whatever the cancelled receives left is still there, once, then the end.
        write(Vec::new());
        writer.join().unwrap();
        for _ in 0..=written.len() {
            let _ = sock.recv(&ov, vec![vec![0; 64]], 0).unwrap();
            let (result, data) = take("the rest");
            assert!(result.is_ok(), "{result:?}");
            if data.is_empty() {
                break;
            }
            got.extend(data);
        }
        port.close();
        drainer.join().unwrap();
        assert_eq!(got.len(), written.len());
        assert!(got == written, "the stream arrived intact");
    });
}

/// S34: closing a socket with pending operations completes each exactly once, receives with
/// WSAECONNABORTED (10053); their events are signalled and their buffers are released safely.
#[test]
fn s34_close_completes_pending_operations_once_with_events() {
    static LIVE: Live = Live::new();
    on_every_backend!(|| {
        let (sock, _peer) = tcp_pair_std();
        let ovs: Vec<Overlapped<Counted>> = (0..3).map(|_| ov_with_event()).collect();
        for ov in &ovs {
            let buf = LIVE.buf_witnessed(32, ov.event().unwrap());
            assert_eq!(sock.recv(ov, vec![buf], 0), Ok(Started::Pending));
        }
        sock.close();
        for (i, ov) in ovs.iter().enumerate() {
            wait_event(ov);
            let c = wait_done(ov);
            assert_eq!(c.error.map(|e| e.code()), Some(10053), "receive {i}");
            assert_eq!(c.error.map(|e| e.code()), Some(codes::WSAECONNABORTED));
            assert_eq!(c.bytes, 0);
            assert_eq!(ov.take_buffers().expect("buffers back").len(), 1);
            assert_eq!(code(&ov.cancel()), Some(codes::ERROR_NOT_FOUND));
        }
        drop(ovs);
        LIVE.assert_all_released_safely();
    });
}

/// S34: closing a socket associated with a port posts exactly one packet per pending operation
/// (receives: WSAECONNABORTED; a send that could not finish: an error too).
#[test]
fn s34_close_posts_one_packet_per_pending_operation() {
    on_every_backend!(|| {
        let port = new_port();
        let (sock, _peer) = tcp_pair_std();
        port.associate(&sock, 6).unwrap();
        let recvs: Vec<Overlapped> = (0..3).map(|_| tagged()).collect();
        for ov in &recvs {
            assert_eq!(sock.recv(ov, vec![vec![0; 8]], 0), Ok(Started::Pending));
        }
        let send = tagged();
        let big = vec![1u8; 32 << 20];
        assert_eq!(sock.send(&send, vec![big], 0), Ok(Started::Pending));
        drop(sock);
        let (mut recv_packets, mut send_packets) = (0, 0);
        for _ in 0..4 {
            let p = next(&port);
            assert_eq!(p.key, 6);
            let ov = p.overlapped.expect("the object");
            if ov.event().unwrap().same_as(send.event().unwrap()) {
                send_packets += 1;
                assert!(
                    p.error.is_some(),
                    "the send cannot have finished: {}",
                    p.bytes
                );
            } else {
                recv_packets += 1;
                assert!(recvs
                    .iter()
                    .any(|o| o.event().unwrap().same_as(ov.event().unwrap())));
                assert_eq!(p.error.map(|e| e.code()), Some(codes::WSAECONNABORTED));
                assert_eq!(p.bytes, 0);
            }
            assert_eq!(ov.take_buffers().expect("buffers back").len(), 1);
        }
        assert_eq!((recv_packets, send_packets), (3, 1));
        assert_no_packet(&port);
    });
}

/// S34: closing a socket whose receives have completion routines runs each routine once, with
/// WSAECONNABORTED, in the issuing thread's next alertable wait.
#[test]
fn s34_close_runs_each_routine_once() {
    on_every_backend!(|| {
        let (sock, _peer) = tcp_pair_std();
        let ran: Log<(usize, Option<u32>)> = Rc::default();
        for i in 0..2 {
            let ran = ran.clone();
            let routine = move |error: Option<overlapped::Error>, _: usize, _: Overlapped, _| {
                ran.borrow_mut().push((i, error.map(|e| e.code())));
            };
            let started = sock.recv_with_routine(Overlapped::new(), vec![vec![0; 8]], 0, routine);
            assert_eq!(started.unwrap(), Started::Pending);
        }
        drop(sock);
        let deadline = Instant::now() + TIMEOUT;
        while ran.borrow().len() < 2 && Instant::now() < deadline {
            sleep_ex(Some(Duration::from_millis(50)), true).unwrap();
        }
        sleep_ex(Some(Duration::from_millis(50)), true).unwrap();
        let mut ran = ran.borrow().clone();
        ran.sort();
        assert_eq!(ran, [(0, Some(10053)), (1, Some(10053))]);
    });
}

/// S35: closing a listener with 100 pending accepts completes each with WSA_OPERATION_ABORTED
/// (995) and signals its event.
#[test]
fn s35_closing_listener_aborts_100_pending_accepts() {
    on_every_backend!(|| {
        let listener = Socket::listen_tcp(localhost(), 16).unwrap();
        let accepts: Vec<(Overlapped, Socket)> = (0..100)
            .map(|_| {
                let ov = tagged();
                let into = Socket::new(Family::V4, Kind::Stream).unwrap();
                assert_eq!(
                    listener.accept_ex(&into, &ov, Vec::new()),
                    Ok(Started::Pending)
                );
                (ov, into)
            })
            .collect();
        listener.close();
        for (i, (ov, _)) in accepts.iter().enumerate() {
            wait_event(ov);
            let c = wait_done(ov);
            assert_eq!(c.error.map(|e| e.code()), Some(995), "accept {i}");
            assert_eq!(c.bytes, 0);
        }
    });
}

/// S35: on a port, closing the listener posts one aborted packet per pending accept.
#[test]
fn s35_closing_listener_posts_one_aborted_packet_per_accept() {
    on_every_backend!(|| {
        let port = new_port();
        let listener = Socket::listen_tcp(localhost(), 16).unwrap();
        port.associate(&listener, 35).unwrap();
        let mut accepts = Vec::new();
        for _ in 0..100 {
            let ov = tagged();
            let into = Socket::new(Family::V4, Kind::Stream).unwrap();
            assert_eq!(
                listener.accept_ex(&into, &ov, Vec::new()),
                Ok(Started::Pending)
            );
            accepts.push((ov, into));
        }
        drop(listener);
        let mut seen = vec![false; accepts.len()];
        for _ in 0..accepts.len() {
            let p = next(&port);
            assert_eq!(p.key, 35);
            assert_eq!(
                p.error.map(|e| e.code()),
                Some(codes::WSA_OPERATION_ABORTED)
            );
            let ov = p.overlapped.expect("the object");
            let i = accepts
                .iter()
                .position(|(o, _)| o.event().unwrap().same_as(ov.event().unwrap()))
                .expect("one of the accepts");
            assert!(!seen[i], "accept {i} completed twice");
            seen[i] = true;
        }
        assert_no_packet(&port);

        // The accept sockets are still fresh sockets: one can connect somewhere.
        let (_, into) = &accepts[0];
        let target = Socket::listen_tcp(localhost(), 1).unwrap();
        into.connect(target.local_addr().unwrap()).unwrap();
        into.shutdown(Shutdown::Both).unwrap();
    });
}
