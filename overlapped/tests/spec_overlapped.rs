//! SPEC S13–S15: the overlapped object.

#[macro_use]
mod common;

use std::io::Read;
use std::thread;

use common::*;
use overlapped::{codes, Event, Overlapped, Started};

/// S13: starting an operation with an object that is still pending is refused with a clear
/// error; the pending operation is unharmed and the refused call's buffers are not leaked.
#[test]
fn s13_starting_on_a_pending_object_is_refused() {
    static LIVE: Live = Live::new();
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        let (other, _other_peer) = tcp_pair_std();
        let ov = ov_with_event();
        assert_eq!(sock.recv(&ov, vec![LIVE.buf(4)], 0), Ok(Started::Pending));

        let err = sock.recv(&ov, vec![LIVE.buf(4)], 0).unwrap_err();
        assert_eq!(err.code(), codes::WSAEINVAL, "{err}");
        let err = other.send(&ov, vec![LIVE.buf(4)], 0).unwrap_err();
        assert_eq!(err.code(), codes::WSAEINVAL, "{err}");
        assert_eq!(
            LIVE.live(),
            1,
            "refused buffers are dropped, the pending one kept"
        );
        assert!(ov.is_pending());
        assert!(!ov.event().unwrap().is_set(), "a refusal notifies nothing");

        write_all(&mut peer, b"mine");
        assert_eq!(wait_done(&ov).result(), Ok(4));
        let bufs = ov.take_buffers().unwrap();
        assert_eq!(bufs[0].bytes(), b"mine");
        drop(bufs);

        // A finished object may be used again.
        let started = sock.send(&ov, vec![LIVE.buf(3)], 0).unwrap();
        assert_eq!(settle(&ov, started).result(), Ok(3));
        drop(ov);
        LIVE.assert_all_released_safely();
        assert_eq!(LIVE.created(), 4);
    });
}

/// S14: while pending the object reports pending; on completion it holds the status and the byte
/// count, readable again and again until the next operation starts.
#[test]
fn s14_object_reports_pending_then_status_and_bytes() {
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        let ov: Overlapped = ov_with_event();
        assert!(!ov.is_pending(), "a new object is not pending");
        assert_eq!(ov.completion(false).unwrap_err().code(), codes::WSAEINVAL);

        assert_eq!(sock.recv(&ov, vec![vec![0; 16]], 0), Ok(Started::Pending));
        assert!(ov.is_pending());
        write_all(&mut peer, b"status");
        let first = wait_done(&ov);
        assert!(!ov.is_pending());
        assert_eq!(first.error, None);
        assert_eq!(first.bytes, 6);
        assert_eq!(ov.completion(false), Ok(first));
        assert_eq!(ov.result(true), Ok(6));

        // A failed operation's status is its error.
        assert_eq!(sock.recv(&ov, vec![vec![0; 16]], 0), Ok(Started::Pending));
        assert!(ov.is_pending());
        ov.cancel().unwrap();
        let c = wait_done(&ov);
        assert!(!ov.is_pending());
        assert_eq!(
            c.error.map(|e| e.code()),
            Some(codes::WSA_OPERATION_ABORTED)
        );
        assert_eq!(c.bytes, 0);
    });
}

/// S15: dropping the overlapped object, then the socket, while a receive is pending: no buffer
/// is freed before the operation's completion, none is written after it is freed, none leaks.
#[test]
fn s15_drop_object_then_socket_with_receive_pending() {
    static LIVE: Live = Live::new();
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        let event = Event::new();
        let ov = Overlapped::with_event(event.clone());
        let bufs = vec![LIVE.buf_witnessed(8, &event), LIVE.buf_witnessed(8, &event)];
        assert_eq!(sock.recv(&ov, bufs, 0), Ok(Started::Pending));
        assert_eq!(LIVE.live(), 2, "the operation holds its buffers");
        assert_eq!(
            ov.take_buffers().unwrap_err().code(),
            codes::WSA_IO_INCOMPLETE,
            "no way to reach the buffers while pending"
        );
        drop(ov);
        drop(sock);
        assert!(event.wait(Some(TIMEOUT)), "the operation still completes");
        LIVE.assert_all_released_safely();

        // Data arriving now must not land in any freed buffer.
        let _ = std::io::Write::write_all(&mut peer, &[0x11; 64]);
        settle_time();
        LIVE.assert_no_write_after_free();
    });
}

/// S15: dropping the socket first: the operation completes (aborted by the close) and the
/// buffers come back through the still-living object.
#[test]
fn s15_drop_socket_then_object_with_receive_pending() {
    static LIVE: Live = Live::new();
    on_every_backend!(|| {
        let (sock, _peer) = tcp_pair_std();
        let event = Event::new();
        let ov = Overlapped::with_event(event.clone());
        let bufs = vec![LIVE.buf_witnessed(8, &event)];
        assert_eq!(sock.recv(&ov, bufs, 0), Ok(Started::Pending));
        drop(sock);
        let c = wait_done(&ov);
        assert_eq!(c.error.map(|e| e.code()), Some(codes::WSAECONNABORTED));
        let bufs = ov.take_buffers().unwrap();
        assert_eq!(LIVE.live(), 1, "the buffers are back with the caller");
        drop(bufs);
        drop(ov);
        LIVE.assert_all_released_safely();
    });
}

/// S15: a pending send's buffers stay alive while the kernel may read them: dropping the object
/// and the socket mid-send never lets the kernel send freed (poisoned) bytes.
#[test]
fn s15_drop_object_and_socket_with_large_send_pending() {
    static LIVE: Live = Live::new();
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        sock.set_send_buffer_size(16 << 10).unwrap();
        let event = Event::new();
        let ov = Overlapped::with_event(event.clone());
        let data: Vec<u8> = (0..8 << 20).map(pattern).collect();
        let bufs = vec![LIVE.buf_holding(data, &event)];
        assert_eq!(sock.send(&ov, bufs, 0), Ok(Started::Pending));
        let mut head = vec![0; 4096];
        peer.read_exact(&mut head).unwrap();
        drop(ov);
        drop(sock);
        assert!(event.wait(Some(TIMEOUT)), "the operation still completes");
        LIVE.assert_all_released_safely();

        let mut rest = Vec::new();
        let _ = peer.read_to_end(&mut rest);
        head.extend_from_slice(&rest);
        let bad = (0..head.len()).find(|&i| head[i] != pattern(i));
        assert_eq!(bad, None, "the peer got bytes that were never sent");
    });
}

/// S15: dropping every object of a queue of pending receives (one with the kernel, the others
/// waiting their turn), then the socket, releases every buffer exactly when it is safe.
#[test]
fn s15_drop_many_queued_receives() {
    static LIVE: Live = Live::new();
    on_every_backend!(|| {
        let (sock, _peer) = tcp_pair_std();
        let mut ovs = Vec::new();
        for _ in 0..10 {
            let event = Event::new();
            let ov = Overlapped::with_event(event.clone());
            let bufs = vec![LIVE.buf_witnessed(16, &event)];
            assert_eq!(sock.recv(&ov, bufs, 0), Ok(Started::Pending));
            ovs.push((ov, event));
        }
        assert_eq!(LIVE.live(), 10);
        let events: Vec<Event> = ovs.iter().map(|(_, e)| e.clone()).collect();
        while let Some((ov, _)) = ovs.pop() {
            drop(ov);
        }
        drop(sock);
        for (i, event) in events.iter().enumerate() {
            assert!(event.wait(Some(TIMEOUT)), "operation {i} completes");
        }
        LIVE.assert_all_released_safely();
    });
}

/// S15: dropping the object while data is arriving: whether the receive or the cancel wins, no
/// buffer is freed early or written after it was freed.
#[test]
fn s15_drop_racing_with_arriving_data() {
    static LIVE: Live = Live::new();
    on_every_backend!(|| {
        for round in 0..40 {
            let (sock, mut peer) = tcp_pair_std();
            let event = Event::new();
            let ov = Overlapped::with_event(event.clone());
            let bufs = vec![LIVE.buf_witnessed(32, &event)];
            assert_eq!(sock.recv(&ov, bufs, 0), Ok(Started::Pending));
            let writer = thread::spawn(move || {
                let _ = std::io::Write::write_all(&mut peer, &[round as u8; 32]);
                peer
            });
            if round % 2 == 0 {
                thread::yield_now();
            }
            drop(ov);
            drop(sock);
            assert!(event.wait(Some(TIMEOUT)), "round {round} completes");
            drop(writer.join().unwrap());
        }
        LIVE.assert_all_released_safely();
        assert_eq!(LIVE.created(), 40);
    });
}

/// S15: a thread that starts a receive and exits (dropping its object) does not free the
/// buffers under the kernel.
#[test]
fn s15_thread_exit_with_receive_pending() {
    static LIVE: Live = Live::new();
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        let event = Event::new();
        let witness = event.clone();
        let sock = thread::spawn(move || {
            let ov = Overlapped::with_event(witness.clone());
            let bufs = vec![LIVE.buf_witnessed(8, &witness)];
            assert_eq!(sock.recv(&ov, bufs, 0), Ok(Started::Pending));
            sock
        })
        .join()
        .unwrap();
        assert!(event.wait(Some(TIMEOUT)), "the operation completes");
        LIVE.assert_all_released_safely();
        write_all(&mut peer, b"after");
        let ov = ov_with_event();
        let started = sock.recv(&ov, vec![vec![0; 8]], 0).unwrap();
        assert_eq!(
            settle(&ov, started).result(),
            Ok(5),
            "the data was not taken"
        );
        LIVE.assert_no_write_after_free();
    });
}
