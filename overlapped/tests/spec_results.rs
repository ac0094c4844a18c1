//! SPEC S16–S19: getting the result.

#[macro_use]
mod common;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use overlapped::{codes, flags, Overlapped, Socket, Started};

/// S16: asking without waiting for the result of a pending operation fails with
/// WSA_IO_INCOMPLETE (996).
#[test]
fn s16_result_without_wait_on_pending_is_wsa_io_incomplete() {
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        let ov: Overlapped = ov_with_event();
        assert_eq!(sock.recv(&ov, vec![vec![0; 8]], 0), Ok(Started::Pending));
        assert_eq!(ov.completion(false).unwrap_err().code(), 996);
        assert_eq!(
            ov.result(false).unwrap_err().code(),
            codes::WSA_IO_INCOMPLETE
        );
        let short = ov.completion_timeout(Some(Duration::from_millis(20)));
        assert_eq!(short.unwrap_err().code(), codes::WSA_IO_INCOMPLETE);
        assert!(ov.is_pending(), "asking does not disturb the operation");
        write_all(&mut peer, b"done");
        assert_eq!(wait_done(&ov).result(), Ok(4));
        assert_eq!(ov.result(false), Ok(4));
    });
}

/// S17: asking with wait blocks until the operation completes.
#[test]
fn s17_result_with_wait_blocks_until_completion() {
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        let ov: Overlapped = ov_with_event();
        assert_eq!(sock.recv(&ov, vec![vec![0; 8]], 0), Ok(Started::Pending));
        let written = Arc::new(AtomicBool::new(false));
        let flag = written.clone();
        let writer = thread::spawn(move || {
            settle_time();
            flag.store(true, Ordering::SeqCst);
            write_all(&mut peer, b"waited");
            peer
        });
        assert_eq!(ov.result(true), Ok(6));
        assert!(written.load(Ordering::SeqCst), "returned before the data");
        assert_eq!(received(&ov, 6), b"waited");
        drop(writer.join().unwrap());
    });
}

/// S18: a cancelled operation's result is WSA_OPERATION_ABORTED (995); cancelling again finds
/// nothing (ERROR_NOT_FOUND); the cancelled receive took no data.
#[test]
fn s18_cancelled_operation_fails_with_wsa_operation_aborted() {
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        let ov: Overlapped = ov_with_event();
        assert_eq!(
            ov.cancel().unwrap_err().code(),
            codes::ERROR_NOT_FOUND,
            "nothing to cancel yet"
        );
        assert_eq!(sock.recv(&ov, vec![vec![0; 8]], 0), Ok(Started::Pending));
        ov.cancel().unwrap();
        wait_event(&ov);
        let c = wait_done(&ov);
        assert_eq!(c.error.map(|e| e.code()), Some(995));
        assert_eq!(c.bytes, 0);
        assert_eq!(ov.cancel().unwrap_err().code(), 1168);
        assert_eq!(ov.take_buffers().unwrap().len(), 1, "the buffers come back");

        write_all(&mut peer, b"kept");
        let started = sock.recv(&ov, vec![vec![0; 8]], 0).unwrap();
        assert_eq!(settle(&ov, started).result(), Ok(4));
        assert_eq!(received(&ov, 4), b"kept");
    });
}

/// S18: cancelling the first of two queued receives leaves the second to take the data.
#[test]
fn s18_cancelling_one_of_two_pending_receives() {
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        let first: Overlapped = ov_with_event();
        let second: Overlapped = ov_with_event();
        assert_eq!(sock.recv(&first, vec![vec![0; 8]], 0), Ok(Started::Pending));
        assert_eq!(
            sock.recv(&second, vec![vec![0; 8]], 0),
            Ok(Started::Pending)
        );
        second.cancel().unwrap();
        let c = wait_done(&second);
        assert_eq!(c.error.map(|e| e.code()), Some(995));
        write_all(&mut peer, b"first");
        assert_eq!(wait_done(&first).result(), Ok(5));
        assert_eq!(received(&first, 5), b"first");
    });
}

/// S18: a receive failed by the peer's reset reports WSAECONNRESET (10054).
#[test]
fn s18_reset_fails_with_wsaeconnreset() {
    on_every_backend!(|| {
        let (sock, peer) = tcp_pair_std();
        let ov: Overlapped = ov_with_event();
        assert_eq!(sock.recv(&ov, vec![vec![0; 8]], 0), Ok(Started::Pending));
        socket2::SockRef::from(&peer)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(peer);
        let err = ov.result(true).unwrap_err();
        assert_eq!(err.code(), 10054, "{err}");
        assert_eq!(err.code_name(), "WSAECONNRESET");
    });
}

/// S18: closing the socket fails its pending receive and send with WSAECONNABORTED (10053);
/// each notifies, and the buffers come back.
#[test]
fn s18_close_fails_pending_operations_with_wsaeconnaborted() {
    on_every_backend!(|| {
        let listener = TcpListener::bind(localhost()).unwrap();
        socket2::SockRef::from(&listener)
            .set_recv_buffer_size(4 << 10)
            .unwrap();
        let sock = Socket::connect_tcp(listener.local_addr().unwrap()).unwrap();
        sock.set_send_buffer_size(4 << 10).unwrap();
        let (_peer, _) = listener.accept().unwrap();

        let recv_ov: Overlapped = ov_with_event();
        assert_eq!(
            sock.recv(&recv_ov, vec![vec![0; 8]], 0),
            Ok(Started::Pending)
        );
        let send_ov: Overlapped = ov_with_event();
        let big = vec![vec![7u8; 16 << 20]];
        assert_eq!(sock.send(&send_ov, big, 0), Ok(Started::Pending));
        sock.close();
        for ov in [&recv_ov, &send_ov] {
            wait_event(ov);
            let err = wait_done(ov).error.expect("aborted by the close");
            assert_eq!(err.code(), 10053, "{err}");
            assert_eq!(ov.take_buffers().unwrap().len(), 1);
        }
    });
}

/// S18: a truncated datagram's result is WSAEMSGSIZE (10040), with the byte count set.
#[test]
fn s18_truncated_datagram_fails_with_wsaemsgsize_and_byte_count() {
    on_every_backend!(|| {
        let (a, b) = udp_pair();
        let ov: Overlapped = ov_with_event();
        assert_eq!(a.recv_from(&ov, vec![vec![0; 5]], 0), Ok(Started::Pending));
        let send_ov = Overlapped::new();
        let started = b
            .send_to(&send_ov, vec![vec![1; 100]], 0, a.local_addr().unwrap())
            .unwrap();
        assert_eq!(settle(&send_ov, started).result(), Ok(100));
        let c = ov.completion(true).unwrap();
        assert_eq!(c.result().unwrap_err().code(), 10040);
        assert_eq!(c.bytes, 5);
        wait_event(&ov);
    });
}

/// S19: the flags of a delayed completion are read from the result, not from the flags passed at
/// the start: MSG_PEEK and MSG_WAITALL are not echoed, MSG_PARTIAL appears though not passed.
#[test]
fn s19_flags_of_a_delayed_completion_come_from_the_result() {
    on_every_backend!(|| {
        let (a, b) = udp_pair();
        let to = a.local_addr().unwrap();
        let ov: Overlapped = ov_with_event();
        assert_eq!(
            a.recv_from(&ov, vec![vec![0; 64]], flags::MSG_PEEK),
            Ok(Started::Pending)
        );
        send_datagram(&b, b"peeked", to);
        let c = wait_done(&ov);
        assert_eq!((c.result(), c.flags), (Ok(6), 0));
        // The peek left the datagram queued.
        let started = a.recv_from(&ov, vec![vec![0; 64]], 0).unwrap();
        assert_eq!(settle(&ov, started).result(), Ok(6));
        assert_eq!(received(&ov, 6), b"peeked");

        assert_eq!(a.recv_from(&ov, vec![vec![0; 2]], 0), Ok(Started::Pending));
        send_datagram(&b, b"longer", to);
        let c = wait_done(&ov);
        assert_eq!(c.flags & flags::MSG_PARTIAL, flags::MSG_PARTIAL);

        let (sock, mut peer) = tcp_pair_std();
        let started = sock.recv(&ov, vec![vec![0; 8]], flags::MSG_WAITALL);
        assert_eq!(started, Ok(Started::Pending));
        write_all(&mut peer, b"half");
        settle_time();
        assert!(ov.is_pending(), "MSG_WAITALL waits for the buffers to fill");
        write_all(&mut peer, b"full");
        let c = wait_done(&ov);
        assert_eq!((c.result(), c.flags), (Ok(8), 0));
        assert_eq!(received(&ov, 8), b"halffull");
    });
}
