//! SPEC S32, S36–S38, S44: completion ports — association, packets, posting, skipping the
//! port on success. Waking, concurrency, closing and draining (S39–S43) are in
//! `spec_port_waiters.rs`.

#[macro_use]
mod common;
mod ports;

use std::cell::Cell;
use std::collections::HashSet;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use overlapped::{codes, sleep_ex, Event, Overlapped, Socket, Started, WaitExResult};
use ports::*;

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

/// S36: a packet does not wait for the thread that started its operation. That thread computes,
/// making no system call, while a worker waits on the port and the data arrives; the packet
/// reaches the worker before the computing stops. (On io_uring the kernel finishes a request in
/// the context of the thread that submitted it; the port's ring lets it wait for that thread's
/// next entry into the kernel, and a thread that makes none must not hold the packet back.)
#[test]
fn s36_a_packet_does_not_wait_for_the_issuing_thread_to_enter_the_kernel() {
    on_every_backend!(|| {
        let port = new_port(1);
        let (sock, mut peer) = tcp_pair_std();
        port.associate(&sock, 9).unwrap();
        let worker = {
            let port = port.clone();
            thread::spawn(move || port.get(Some(Duration::from_secs(10))))
        };
        eventually("the worker waits on the port", || {
            port.waiting_threads() == 1
        });
        let (started, delivered) = (Event::new(), Arc::new(AtomicBool::new(false)));
        let issuer = {
            let (started, delivered) = (started.clone(), delivered.clone());
            thread::spawn(move || {
                let ov = Overlapped::new();
                assert_eq!(sock.recv(&ov, vec![vec![0; 16]], 0), Ok(Started::Pending));
                started.set();
                // Compute until the worker has the packet, at most 5 s; reading the clock makes
                // no system call (vDSO).
                let since = Instant::now();
                while !delivered.load(Ordering::Acquire) && since.elapsed() < Duration::from_secs(5)
                {
                    std::hint::spin_loop();
                }
                delivered.load(Ordering::Acquire)
            })
        };
        started.wait(Some(TIMEOUT));
        write_all(&mut peer, b"ping");
        let packet = worker.join().unwrap().expect("a packet");
        delivered.store(true, Ordering::Release);
        assert_eq!((packet.key, packet.bytes, packet.error), (9, 4, None));
        assert!(
            issuer.join().unwrap(),
            "the packet came only after the issuing thread stopped computing"
        );
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
