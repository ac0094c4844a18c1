//! SPEC S1–S12: sockets and starting an operation.

#[macro_use]
mod common;

use std::io::Read;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use overlapped::{codes, flags, Overlapped, Socket, Started, MAX_BUFFERS};

/// S1: an overlapped socket accepts overlapped operations whatever its blocking mode.
#[test]
fn s01_operations_work_whatever_the_blocking_mode() {
    on_every_backend!(|| {
        for nonblocking in [false, true] {
            let listener = TcpListener::bind(localhost()).unwrap();
            let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (mut peer, _) = listener.accept().unwrap();
            stream.set_nonblocking(nonblocking).unwrap();
            let sock = Socket::from(stream);

            let ov = ov_with_event();
            let started = sock.recv(&ov, vec![vec![0; 16]], 0).unwrap();
            assert_eq!(started, Started::Pending, "nonblocking: {nonblocking}");
            write_all(&mut peer, b"hello");
            let c = wait_done(&ov);
            assert_eq!(c.result(), Ok(5));
            assert_eq!(received(&ov, 5), b"hello");

            let started = sock.send(&ov, vec![b"world".to_vec()], 0).unwrap();
            assert_eq!(settle(&ov, started).result(), Ok(5));
            assert_eq!(read_exact(&mut peer, 5), b"world");
        }
    });
}

/// S1: IPv6 stream sockets take overlapped operations like IPv4 ones.
#[test]
fn s01_ipv6_stream_socket_takes_operations() {
    on_every_backend!(|| {
        let (a, b) = tcp_pair_on(localhost_v6());
        let ov_recv = ov_with_event();
        assert_eq!(
            b.recv(&ov_recv, vec![vec![0; 8]], 0).unwrap(),
            Started::Pending
        );
        let ov_send = ov_with_event();
        let started = a.send(&ov_send, vec![b"six".to_vec()], 0).unwrap();
        assert_eq!(settle(&ov_send, started).result(), Ok(3));
        assert_eq!(wait_done(&ov_recv).result(), Ok(3));
        assert_eq!(received(&ov_recv, 3), b"six");
    });
}

/// S2: a call that completes at once returns success and the byte count.
#[test]
fn s02_send_that_completes_at_once_returns_done_with_byte_count() {
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        let ov = ov_with_event();
        let started = sock.send(&ov, vec![b"Network is Computer!".to_vec()], 0);
        assert_eq!(started, Ok(Started::Done(20)));
        assert!(!ov.is_pending());
        assert_eq!(ov.result(false), Ok(20));
        assert_eq!(read_exact(&mut peer, 20), b"Network is Computer!");
    });
}

/// S2: a call that cannot complete at once returns pending and leaves the result untouched.
#[test]
fn s02_receive_without_data_is_pending_and_leaves_result_untouched() {
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        let ov = ov_with_event();
        assert_eq!(sock.recv(&ov, vec![vec![0; 8]], 0), Ok(Started::Pending));
        settle_time();
        assert!(ov.is_pending());
        let incomplete = ov.completion(false).unwrap_err();
        assert_eq!(incomplete.code(), codes::WSA_IO_INCOMPLETE);
        assert_eq!(
            ov.take_buffers().unwrap_err().code(),
            codes::WSA_IO_INCOMPLETE
        );
        write_all(&mut peer, b"late");
        assert_eq!(wait_done(&ov).result(), Ok(4));
        assert_eq!(received(&ov, 4), b"late");
    });
}

/// S3: a call that completes at once still signals its event.
#[test]
fn s03_done_at_once_still_signals_the_event() {
    on_every_backend!(|| {
        let (sock, _peer) = tcp_pair_std();
        let ov = ov_with_event();
        assert_eq!(sock.send(&ov, vec![b"x".to_vec()], 0), Ok(Started::Done(1)));
        wait_event(&ov);
    });
}

/// S3: with data already waiting a receive may be done at once or pending; either way it
/// notifies, and the result holds the data.
#[test]
fn s03_receive_of_waiting_data_notifies_whether_done_or_pending() {
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        write_all(&mut peer, b"waiting");
        let ov = ov_with_event();
        let started = sock.recv(&ov, vec![vec![0; 64]], 0).unwrap();
        wait_event(&ov);
        let c = settle(&ov, started);
        assert_eq!(c.result(), Ok(7));
        assert_eq!(received(&ov, 7), b"waiting");
    });
}

/// S4: a call that fails at once notifies nothing.
#[test]
fn s04_call_that_fails_at_once_signals_nothing() {
    on_every_backend!(|| {
        let (sock, _peer) = tcp_pair_std();
        let ov: Overlapped<Vec<u8>> = ov_with_event();
        let err = sock.recv(&ov, Vec::new(), 0).unwrap_err();
        assert_eq!(err.code(), codes::WSAEINVAL);
        let err = sock.send(&ov, vec![b"x".to_vec()], 0x4000).unwrap_err();
        assert_eq!(err.code(), codes::WSAEOPNOTSUPP, "unknown send flag");
        settle_time();
        assert!(!ov.event().unwrap().is_set());
        assert!(!ov.is_pending());
    });
}

/// S5: with no overlapped object the call behaves as a blocking call (through the Win32-named
/// facade, where the overlapped object is optional): it returns only once the data is there,
/// with the byte count, and the buffers stay with the caller, filled.
#[test]
fn s05_without_overlapped_object_the_call_blocks() {
    use overlapped::winsock::*;
    on_every_backend!(|| {
        let listener = TcpListener::bind(localhost()).unwrap();
        let s = wsa_socket(AF_INET, SOCK_STREAM, IPPROTO_TCP, WSA_FLAG_OVERLAPPED);
        assert_ne!(s, INVALID_SOCKET);
        assert_eq!(connect(s, &listener.local_addr().unwrap()), 0);
        let (mut peer, _) = listener.accept().unwrap();
        peer.set_read_timeout(Some(TIMEOUT)).unwrap();

        let written = Arc::new(AtomicBool::new(false));
        let writer = {
            let written = written.clone();
            thread::spawn(move || {
                settle_time();
                written.store(true, Ordering::SeqCst);
                write_all(&mut peer, b"blocking");
                peer
            })
        };
        let mut bufs = vec![vec![0; 4], vec![0; 8]];
        let (mut bytes, mut flags) = (0, 0);
        assert_eq!(
            wsa_recv(s, &mut bufs, &mut bytes, &mut flags, None, None),
            0
        );
        assert!(
            written.load(Ordering::SeqCst),
            "returned before the data came"
        );
        assert_eq!(bytes, 8);
        assert_eq!(bufs[0], b"bloc");
        assert_eq!(&bufs[1][..4], b"king");

        let mut peer = writer.join().unwrap();
        let mut bufs = vec![b"sent".to_vec()];
        assert_eq!(wsa_send(s, &mut bufs, &mut bytes, 0, None, None), 0);
        assert_eq!(bytes, 4);
        assert_eq!(read_exact(&mut peer, 4), b"sent");
        assert_eq!(closesocket(s), 0);
    });
}

/// S6: 9 bytes into buffers of 4 and 5 give "dead" and "beefs"; a gathered send goes out in
/// array order.
#[test]
fn s06_nine_bytes_fill_buffers_of_four_and_five_in_order() {
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        let ov = ov_with_event();
        let started = sock.recv(&ov, vec![vec![0; 4], vec![0; 5]], 0).unwrap();
        assert_eq!(started, Started::Pending);
        write_all(&mut peer, b"deadbeefs");
        assert_eq!(wait_done(&ov).result(), Ok(9));
        let bufs = ov.take_buffers().unwrap();
        assert_eq!(bufs, vec![b"dead".to_vec(), b"beefs".to_vec()]);

        let parts = vec![b"dead".to_vec(), Vec::new(), b"beefs".to_vec()];
        let started = sock.send(&ov, parts, 0).unwrap();
        assert_eq!(settle(&ov, started).result(), Ok(9));
        assert_eq!(read_exact(&mut peer, 9), b"deadbeefs");
    });
}

/// S6: a buffer count of 0 is WSAEINVAL, for sends and receives; the object stays usable.
#[test]
fn s06_zero_buffers_is_wsaeinval() {
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        let ov: Overlapped<Vec<u8>> = ov_with_event();
        assert_eq!(
            sock.recv(&ov, Vec::new(), 0).unwrap_err().code(),
            codes::WSAEINVAL
        );
        assert_eq!(
            sock.send(&ov, Vec::new(), 0).unwrap_err().code(),
            codes::WSAEINVAL
        );
        let (udp, _other) = udp_pair();
        let to = localhost();
        assert_eq!(
            udp.send_to(&ov, Vec::new(), 0, to).unwrap_err().code(),
            codes::WSAEINVAL
        );
        let started = sock.send(&ov, vec![b"ok".to_vec()], 0).unwrap();
        assert_eq!(settle(&ov, started).result(), Ok(2));
        assert_eq!(read_exact(&mut peer, 2), b"ok");
    });
}

/// S6: more buffers than the OS takes in one call is a clear error, not a crash; exactly
/// `MAX_BUFFERS` works and keeps the order.
#[test]
fn s06_more_than_max_buffers_is_a_clear_error() {
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        let ov = ov_with_event();
        let too_many: Vec<Vec<u8>> = (0..=MAX_BUFFERS).map(|i| vec![pattern(i)]).collect();
        let err = sock.send(&ov, too_many, 0).unwrap_err();
        assert_eq!(err.code(), codes::WSAEINVAL, "{err}");
        let too_many: Vec<Vec<u8>> = vec![vec![0; 1]; MAX_BUFFERS + 1];
        let err = sock.recv(&ov, too_many, 0).unwrap_err();
        assert_eq!(err.code(), codes::WSAEINVAL, "{err}");
        assert!(!ov.is_pending());

        let max: Vec<Vec<u8>> = (0..MAX_BUFFERS).map(|i| vec![pattern(i)]).collect();
        let started = sock.send(&ov, max, 0).unwrap();
        assert_eq!(settle(&ov, started).result(), Ok(MAX_BUFFERS));
        let expected: Vec<u8> = (0..MAX_BUFFERS).map(pattern).collect();
        assert_eq!(read_exact(&mut peer, MAX_BUFFERS), expected);
    });
}

/// S7: receives pending on one socket take the data in the order they were posted.
#[test]
fn s07_pending_receives_take_data_in_posting_order() {
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        let ovs: Vec<Overlapped> = (0..3).map(|_| ov_with_event()).collect();
        for (ov, size) in ovs.iter().zip([3, 1, 4]) {
            assert_eq!(sock.recv(ov, vec![vec![0; size]], 0), Ok(Started::Pending));
        }
        write_all(&mut peer, b"abcdefgh");
        let got: Vec<Vec<u8>> = ovs
            .iter()
            .map(|ov| {
                let n = wait_done(ov).result().unwrap();
                received(ov, n)
            })
            .collect();
        assert_eq!(got, vec![b"abc".to_vec(), b"d".to_vec(), b"efgh".to_vec()]);
    });
}

/// S8: a stream receive completes as soon as any data arrives, with at most the buffers' size.
#[test]
fn s08_receive_completes_when_any_data_arrives() {
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        let ov = ov_with_event();
        assert_eq!(sock.recv(&ov, vec![vec![0; 4096]], 0), Ok(Started::Pending));
        write_all(&mut peer, b"ten bytes!");
        assert_eq!(wait_done(&ov).result(), Ok(10));
        assert_eq!(received(&ov, 10), b"ten bytes!");

        write_all(&mut peer, b"more than six");
        let started = sock.recv(&ov, vec![vec![0; 6]], 0).unwrap();
        assert_eq!(settle(&ov, started).result(), Ok(6));
        assert_eq!(received(&ov, 6), b"more t");
    });
}

/// S8: an overlapped send completes only when every byte is taken: 64 MiB to a slow reader
/// completes with exactly 64 MiB, and the reader gets every byte in order.
#[test]
fn s08_send_of_64_mib_to_slow_reader_completes_whole() {
    on_every_backend!(|| {
        const TOTAL: usize = 64 << 20;
        const PARTS: usize = 4;
        let listener = TcpListener::bind(localhost()).unwrap();
        socket2::SockRef::from(&listener)
            .set_recv_buffer_size(16 << 10)
            .unwrap();
        let sock = Socket::connect_tcp(listener.local_addr().unwrap()).unwrap();
        sock.set_send_buffer_size(16 << 10).unwrap();
        let (reader, _) = listener.accept().unwrap();
        let reader = thread::spawn(move || slow_read(reader, TOTAL));

        let part = TOTAL / PARTS;
        let bufs: Vec<Vec<u8>> = (0..PARTS)
            .map(|p| (p * part..(p + 1) * part).map(pattern).collect())
            .collect();
        let ov = ov_with_event();
        let started = sock.send(&ov, bufs, 0).unwrap();
        let c = ov
            .completion_timeout(Some(Duration::from_secs(180)))
            .expect("the 64 MiB send finishes");
        assert_eq!(c.error, None);
        assert_eq!(c.bytes, TOTAL, "never short");
        if let Started::Done(n) = started {
            assert_eq!(n, TOTAL);
        }
        let (got, mismatch) = reader.join().unwrap();
        assert_eq!(mismatch, None, "first corrupted byte");
        assert_eq!(got, TOTAL);
        let lens: Vec<usize> = ov.take_buffers().unwrap().iter().map(Vec::len).collect();
        assert_eq!(lens, vec![part; PARTS]);
    });
}

/// Reads `total` bytes, pausing between the first reads; returns the count and the offset of
/// the first byte that differs from [`pattern`].
fn slow_read(mut reader: TcpStream, total: usize) -> (usize, Option<usize>) {
    reader.set_read_timeout(Some(TIMEOUT)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(170);
    let mut buf = vec![0u8; 16 << 10];
    let (mut got, mut mismatch, mut reads) = (0usize, None, 0u32);
    while got < total && Instant::now() < deadline {
        if reads < 300 {
            thread::sleep(Duration::from_millis(2));
        }
        reads += 1;
        let n = match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if mismatch.is_none() {
            mismatch = (0..n)
                .find(|&i| buf[i] != pattern(got + i))
                .map(|i| got + i);
        }
        got += n;
    }
    (got, mismatch)
}

/// S9: a zero-byte receive stays pending until data arrives, then completes with 0 bytes and
/// leaves the data unread.
#[test]
fn s09_zero_byte_receive_waits_then_completes_with_zero_leaving_the_data() {
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        let ov = ov_with_event();
        assert_eq!(sock.recv(&ov, vec![Vec::new()], 0), Ok(Started::Pending));
        settle_time();
        assert!(ov.is_pending(), "no data yet: still pending");
        assert!(!ov.event().unwrap().is_set());
        write_all(&mut peer, b"payload");
        wait_event(&ov);
        assert_eq!(wait_done(&ov).result(), Ok(0));

        let started = sock.recv(&ov, vec![vec![0; 32]], 0).unwrap();
        assert_eq!(
            settle(&ov, started).result(),
            Ok(7),
            "the data is still there"
        );
        assert_eq!(received(&ov, 7), b"payload");
    });
}

/// S9: a pending zero-byte receive also ends when the connection does: 0 bytes when the peer
/// closes gracefully, WSAECONNRESET when it resets.
#[test]
fn s09_zero_byte_receive_ends_with_the_connection() {
    on_every_backend!(|| {
        let (sock, peer) = tcp_pair_std();
        let ov = ov_with_event();
        assert_eq!(sock.recv(&ov, vec![Vec::new()], 0), Ok(Started::Pending));
        peer.shutdown(Shutdown::Write).unwrap();
        assert_eq!(wait_done(&ov).result(), Ok(0));

        let (sock, peer) = tcp_pair_std();
        assert_eq!(sock.recv(&ov, vec![Vec::new()], 0), Ok(Started::Pending));
        reset(peer);
        let c = wait_done(&ov);
        assert_eq!(c.error.map(|e| e.code()), Some(codes::WSAECONNRESET));
    });
}

/// S10: when the peer closes gracefully, a receive completes successfully with 0 bytes.
#[test]
fn s10_graceful_close_completes_receive_with_zero_bytes() {
    on_every_backend!(|| {
        let (sock, peer) = tcp_pair_std();
        let ov = ov_with_event();
        assert_eq!(sock.recv(&ov, vec![vec![0; 8]], 0), Ok(Started::Pending));
        peer.shutdown(Shutdown::Write).unwrap();
        assert_eq!(wait_done(&ov).result(), Ok(0));
        wait_event(&ov);

        // Later receives see the end too, at once or not.
        let started = sock.recv(&ov, vec![vec![0; 8]], 0).unwrap();
        assert_eq!(settle(&ov, started).result(), Ok(0));
        drop(peer);
        let started = sock.recv(&ov, vec![vec![0; 8]], 0).unwrap();
        assert_eq!(settle(&ov, started).result(), Ok(0));
    });
}

/// S11: when the peer resets, a pending receive completes with WSAECONNRESET and 0 bytes; later
/// sends and receives fail at once with WSAECONNRESET, and notify nothing (S4).
#[test]
fn s11_reset_fails_pending_receive_and_every_later_call_at_once() {
    on_every_backend!(|| {
        let (sock, peer) = tcp_pair_std();
        let ov = ov_with_event();
        assert_eq!(sock.recv(&ov, vec![vec![0; 8]], 0), Ok(Started::Pending));
        reset(peer);
        let c = wait_done(&ov);
        assert_eq!(c.error.map(|e| e.code()), Some(codes::WSAECONNRESET));
        assert_eq!(c.bytes, 0);
        assert_later_calls_fail_with_reset(&sock);
    });
}

/// S11: a reset that arrives while nothing is pending fails the next receive, and everything
/// after it fails at once.
#[test]
fn s11_reset_with_nothing_pending_fails_the_next_calls() {
    on_every_backend!(|| {
        let (sock, peer) = tcp_pair_std();
        reset(peer);
        let ov = ov_with_event();
        let err = match sock.recv(&ov, vec![vec![0; 8]], 0) {
            Err(e) => e,
            Ok(started) => wait_done(&ov).error.unwrap_or_else(|| {
                panic!(
                    "receive after reset succeeded: {started:?}, {:?}",
                    wait_done(&ov)
                )
            }),
        };
        assert_eq!(err.code(), codes::WSAECONNRESET);
        assert_later_calls_fail_with_reset(&sock);
    });
}

/// Resets the connection: linger 0, then close.
fn reset(peer: TcpStream) {
    socket2::SockRef::from(&peer)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(peer);
}

fn assert_later_calls_fail_with_reset(sock: &Socket) {
    for round in 0..2 {
        let ov = ov_with_event();
        let err = sock.send(&ov, vec![b"x".to_vec()], 0).unwrap_err();
        assert_eq!(err.code(), codes::WSAECONNRESET, "send, round {round}");
        let err = sock.recv(&ov, vec![vec![0; 8]], 0).unwrap_err();
        assert_eq!(err.code(), codes::WSAECONNRESET, "receive, round {round}");
        assert!(
            !ov.event().unwrap().is_set(),
            "a failure at once notifies nothing"
        );
    }
}

/// S12: a datagram larger than the buffers completes with WSAEMSGSIZE, the bytes that fit, and
/// MSG_PARTIAL, and receive-from reports the sender.
#[test]
fn s12_truncated_datagram_gives_wsaemsgsize_bytes_that_fit_and_msg_partial() {
    on_every_backend!(|| {
        let (a, b) = udp_pair();
        let to = a.local_addr().unwrap();
        let ov = ov_with_event();
        // Pending, then the datagram arrives.
        assert_eq!(
            a.recv_from(&ov, vec![vec![0; 3], vec![0; 1]], 0),
            Ok(Started::Pending)
        );
        send_datagram(&b, b"0123456789", to);
        let c = wait_done(&ov);
        assert_truncated(&c, &b);
        assert_eq!(
            ov.take_buffers().unwrap(),
            vec![b"012".to_vec(), b"3".to_vec()]
        );

        // Already waiting: failed at once or pending, the result is the same.
        send_datagram(&b, b"abcdefghij", to);
        settle_time();
        match a.recv_from(&ov, vec![vec![0; 4]], 0) {
            Err(e) => assert_eq!(e.code(), codes::WSAEMSGSIZE),
            Ok(started) => assert_eq!(started, Started::Pending, "a truncation is no success"),
        }
        assert_truncated(&wait_done(&ov), &b);
        assert_eq!(ov.take_buffers().unwrap(), vec![b"abcd".to_vec()]);
    });
}

fn assert_truncated(c: &overlapped::Completion, sender: &Socket) {
    assert_eq!(c.error.map(|e| e.code()), Some(codes::WSAEMSGSIZE));
    assert_eq!(c.bytes, 4, "the bytes that fit");
    assert_ne!(c.flags & flags::MSG_PARTIAL, 0, "MSG_PARTIAL");
    assert_eq!(c.from, Some(sender.local_addr().unwrap()));
}

/// S12: receive-from reports each datagram's sender, over IPv4 and IPv6; a gathered send-to is
/// one datagram.
#[test]
fn s12_receive_from_reports_the_sender() {
    on_every_backend!(|| {
        for addr in [localhost(), localhost_v6()] {
            let receiver = Socket::bind_udp(addr).unwrap();
            let senders = [
                Socket::bind_udp(addr).unwrap(),
                Socket::bind_udp(addr).unwrap(),
            ];
            let to = receiver.local_addr().unwrap();
            for sender in &senders {
                let ov = ov_with_event();
                assert_eq!(
                    receiver.recv_from(&ov, vec![vec![0; 64]], 0),
                    Ok(Started::Pending)
                );
                let send_ov = Overlapped::new();
                let parts = vec![b"dead".to_vec(), b"beefs".to_vec()];
                let started = sender.send_to(&send_ov, parts, 0, to).unwrap();
                assert_eq!(settle(&send_ov, started).result(), Ok(9));
                let c = wait_done(&ov);
                assert_eq!(c.result(), Ok(9));
                assert_eq!(c.flags & flags::MSG_PARTIAL, 0);
                assert_eq!(c.from, Some(sender.local_addr().unwrap()));
                assert_eq!(received(&ov, 9), b"deadbeefs");
            }
        }
    });
}

/// After shutting down sending, sends fail at once with WSAESHUTDOWN; receiving still works.
#[test]
fn shut_down_socket_refuses_sends_and_still_receives() {
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        sock.shutdown(Shutdown::Write).unwrap();
        let ov = ov_with_event();
        let err = sock.send(&ov, vec![b"x".to_vec()], 0).unwrap_err();
        assert_eq!(err.code(), codes::WSAESHUTDOWN);
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "the peer reads the end of the stream");
        write_all(&mut peer, b"still");
        let started = sock.recv(&ov, vec![vec![0; 8]], 0).unwrap();
        assert_eq!(settle(&ov, started).result(), Ok(5));
    });
}

/// A closed socket's operations: closing fails a pending receive with WSAECONNABORTED and
/// signals its event (S34); afterwards the handle names no socket, and every call on it fails at
/// once with WSAENOTSOCK (through the Win32-named facade, where a closed handle can be named).
#[test]
fn closed_socket_operations_fail() {
    use overlapped::winsock::*;
    on_every_backend!(|| {
        let listener = TcpListener::bind(localhost()).unwrap();
        let s = wsa_socket(AF_INET, SOCK_STREAM, IPPROTO_TCP, WSA_FLAG_OVERLAPPED);
        assert_eq!(connect(s, &listener.local_addr().unwrap()), 0);
        let (_peer, _) = listener.accept().unwrap();
        let ov = WsaOverlapped::with_event(wsa_create_event());
        let mut bufs = vec![vec![0; 8]];
        let (mut bytes, mut flags) = (0, 0);
        let r = wsa_recv(s, &mut bufs, &mut bytes, &mut flags, Some(&ov), None);
        assert_eq!((r, wsa_get_last_error()), (SOCKET_ERROR, WSA_IO_PENDING));
        assert_eq!(closesocket(s), 0);
        wait_event(&ov);
        let err = wait_done(&ov).error.expect("aborted by the close");
        assert_eq!(err.code(), WSAECONNABORTED);
        assert!(wsa_reset_event(ov.event().unwrap()));

        let mut bufs = vec![vec![0; 8]];
        let r = wsa_recv(s, &mut bufs, &mut bytes, &mut flags, None, None);
        assert_eq!((r, wsa_get_last_error()), (SOCKET_ERROR, WSAENOTSOCK));
        let r = wsa_send(s, &mut bufs, &mut bytes, 0, Some(&ov), None);
        assert_eq!((r, wsa_get_last_error()), (SOCKET_ERROR, WSAENOTSOCK));
        assert!(
            !ov.event().unwrap().is_set(),
            "a failure at once notifies nothing"
        );
        assert_eq!(
            (closesocket(s), wsa_get_last_error()),
            (SOCKET_ERROR, WSAENOTSOCK)
        );
    });
}

/// A full descriptor table makes socket creation fail with WSAEMFILE (not a panic), and the
/// library keeps working once a descriptor is free. Runs in a child process: the limit is
/// per process.
#[test]
fn full_descriptor_table_gives_wsaemfile() {
    on_every_backend!(|| in_child_process!(|| {
        let (sock, mut peer) = tcp_pair_std();
        let ov = ov_with_event();
        assert_eq!(sock.recv(&ov, vec![vec![0; 8]], 0), Ok(Started::Pending));

        let highest = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .max()
            .unwrap();
        let limit = highest + 4;
        set_nofile_limit(limit);
        let mut held = Vec::new();
        let err = loop {
            // Descriptors below the highest may be free too; none at or above the limit is.
            assert!(held.len() as u64 <= limit, "the limit never bit");
            match Socket::new(overlapped::Family::V4, overlapped::Kind::Stream) {
                Ok(s) => held.push(s),
                Err(e) => break e,
            }
        };
        assert_eq!(err.code(), codes::WSAEMFILE, "{err}");
        assert_eq!(err.raw_os_error(), Some(libc::EMFILE));
        let err = Socket::bind_udp(localhost()).unwrap_err();
        assert_eq!(err.code(), codes::WSAEMFILE, "{err}");

        // The pending operation is unharmed, and a freed descriptor can be used again.
        write_all(&mut peer, b"fine");
        assert_eq!(wait_done(&ov).result(), Ok(4));
        held.pop();
        let again = Socket::new(overlapped::Family::V4, overlapped::Kind::Datagram);
        assert!(again.is_ok(), "{:?}", again.err());
    }));
}

fn set_nofile_limit(soft: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit to fill.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim.rlim_cur = soft;
    // SAFETY: a valid rlimit; lowering the soft limit only affects this (child) process.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
}
