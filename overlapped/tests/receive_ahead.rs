//! Receiving ahead (`Socket::receive_ahead`): every receive of the socket is a pooled receive
//! from one pool, and on io_uring one multishot receive stays in the kernel while data comes.
//! What arrives while no receive is posted is kept, in order, for the next receives; cancel and
//! close behave as for any receive, and close gives what was kept back to the pool. Each test
//! runs on every backend: on epoll the setting only adds its refusals.

#[macro_use]
mod common;

use std::io::Read;
use std::time::Duration;

use common::*;
use overlapped::{
    codes, flags, BufferPool, CompletionPort, Overlapped, PooledBuf, Socket, Started,
};

type Port = CompletionPort<PooledBuf>;

/// A port with a pool of `count` buffers of `size` bytes, and a connected socket on it (key 1)
/// that receives ahead into the pool, with its peer.
fn ahead_pair(count: usize, size: usize) -> (Port, BufferPool, Socket, std::net::TcpStream) {
    let (port, pool, sock, peer) = pooled_pair(count, size);
    sock.receive_ahead(&pool).unwrap();
    (port, pool, sock, peer)
}

/// Lets the port take in what the kernel completed while no receive is posted: a wait that
/// finds no packet.
fn reap_without_packets(port: &Port) {
    settle_time();
    let waited = port.get(Some(Duration::from_millis(20)));
    assert_eq!(
        waited.map(|p| p.bytes).map_err(|e| e.code()),
        Err(codes::WAIT_TIMEOUT),
        "no packet: no receive is posted"
    );
}

/// Posts pooled receives on `sock` until `n` bytes have come, and returns them.
fn receive_bytes(port: &Port, pool: &BufferPool, sock: &Socket, n: usize) -> Vec<u8> {
    let ov: Overlapped<PooledBuf> = Overlapped::new();
    let mut seen = Vec::new();
    for _ in 0..n {
        let _ = sock.recv_pooled(&ov, Vec::new(), pool, 0).unwrap();
        let packet = port.get(Some(TIMEOUT)).expect("a packet");
        let bytes = packet.result().expect("a receive with data");
        let bufs = ov.take_buffers().unwrap();
        assert_eq!(bufs.len(), 1, "one pool buffer per receive");
        assert_eq!(bufs[0].len(), bytes);
        seen.extend_from_slice(&bufs[0]);
        if seen.len() >= n {
            break;
        }
    }
    seen
}

#[test]
fn data_that_came_between_receives_reaches_the_next_ones_in_order() {
    on_every_backend!(|| {
        let (port, pool, sock, mut peer) = ahead_pair(8, 16);
        let ov: Overlapped<PooledBuf> = Overlapped::new();
        assert_eq!(
            sock.recv_pooled(&ov, Vec::new(), &pool, 0),
            Ok(Started::Pending)
        );
        write_all(&mut peer, b"one");
        assert_eq!(port.get(Some(TIMEOUT)).unwrap().result(), Ok(3));
        assert_eq!(&ov.take_buffers().unwrap()[0][..], b"one");
        write_all(&mut peer, b"two,");
        reap_without_packets(&port);
        write_all(&mut peer, b"three,");
        reap_without_packets(&port);
        write_all(&mut peer, b"four-and-more-than-a-buffer");
        let expected = b"two,three,four-and-more-than-a-buffer";
        assert_eq!(
            receive_bytes(&port, &pool, &sock, expected.len()),
            expected,
            "the data, in order, nothing lost or repeated"
        );
        drop(ov);
        assert_eq!(pool.in_use(), 0, "every buffer handed over went back");
    });
}

#[test]
fn a_receive_posted_after_data_was_kept_completes_at_once() {
    on_every_backend!(|| {
        let (port, pool, sock, mut peer) = ahead_pair(4, 16);
        let ov: Overlapped<PooledBuf> = Overlapped::new();
        let _ = sock.recv_pooled(&ov, Vec::new(), &pool, 0).unwrap();
        write_all(&mut peer, b"first");
        assert_eq!(port.get(Some(TIMEOUT)).unwrap().result(), Ok(5));
        drop(ov.take_buffers().unwrap());
        write_all(&mut peer, b"second");
        reap_without_packets(&port);
        // io_uring's stream kept it (a pooled receive that the kernel serves would otherwise be
        // pending here); epoll finds it in the socket: done at once either way (S2), and the
        // packet still comes (S3).
        assert_eq!(
            sock.recv_pooled(&ov, Vec::new(), &pool, 0),
            Ok(Started::Done(6))
        );
        assert_eq!(port.get(Some(TIMEOUT)).unwrap().result(), Ok(6));
        assert_eq!(&ov.take_buffers().unwrap()[0][..], b"second");
    });
}

#[test]
fn many_messages_through_a_two_buffer_pool() {
    on_every_backend!(|| {
        let (port, pool, sock, mut peer) = ahead_pair(2, 32);
        for round in 0..50usize {
            let message = format!("message {round}");
            write_all(&mut peer, message.as_bytes());
            if round % 3 == 0 {
                reap_without_packets(&port); // sometimes kept first, sometimes parked first
            }
            let got = receive_bytes(&port, &pool, &sock, message.len());
            assert_eq!(got, message.as_bytes(), "round {round}");
        }
        assert_eq!(pool.in_use(), 0);
    });
}

#[test]
fn a_socket_receiving_ahead_refuses_every_other_receive() {
    on_every_backend!(|| {
        let port = Port::new(1).unwrap();
        let pool = port.buffer_pool(4, 16).unwrap();
        let other_pool = port.buffer_pool(4, 16).unwrap();
        let (sock, mut peer) = tcp_pair_std();
        port.associate(&sock, 1).unwrap();
        let ov: Overlapped<PooledBuf> = Overlapped::new();
        // Before the setting, a receive into a buffer and a peeking pooled receive are fine.
        write_all(&mut peer, b"abcd");
        let _ = sock
            .recv_pooled(&ov, Vec::new(), &pool, flags::MSG_PEEK)
            .unwrap();
        assert_eq!(port.get(Some(TIMEOUT)).unwrap().result(), Ok(4));
        let buf = ov.take_buffers().unwrap().pop().unwrap();
        let _ = sock.recv(&ov, vec![buf], 0).unwrap();
        assert_eq!(port.get(Some(TIMEOUT)).unwrap().result(), Ok(4));
        let buf = ov.take_buffers().unwrap().pop().unwrap();

        sock.receive_ahead(&pool).unwrap();
        sock.receive_ahead(&pool)
            .expect("the same pool again is fine");
        let refused = |r: overlapped::Result<Started>| r.map_err(|e| e.code());
        assert_eq!(
            sock.receive_ahead(&other_pool).map_err(|e| e.code()),
            Err(codes::WSAEINVAL)
        );
        assert_eq!(
            refused(sock.recv(&ov, vec![buf], 0)),
            Err(codes::WSAEINVAL),
            "a receive into the program's buffer"
        );
        assert_eq!(
            refused(sock.recv_pooled(&ov, Vec::new(), &other_pool, 0)),
            Err(codes::WSAEINVAL),
            "another pool"
        );
        assert_eq!(
            refused(sock.recv_pooled(&ov, Vec::new(), &pool, flags::MSG_PEEK)),
            Err(codes::WSAEINVAL),
            "flags"
        );
        // Sends are not concerned, and a refused receive took no data.
        write_all(&mut peer, b"still here");
        assert_eq!(receive_bytes(&port, &pool, &sock, 10), b"still here");

        let (unassociated, _peer) = tcp_pair_std();
        assert_eq!(
            unassociated.receive_ahead(&pool).map_err(|e| e.code()),
            Err(codes::WSAEINVAL),
            "a socket not on the pool's port"
        );
        let (datagram, _other) = udp_pair();
        port.associate(&datagram, 2).unwrap();
        assert_eq!(
            datagram.receive_ahead(&pool).map_err(|e| e.code()),
            Err(codes::WSAEOPNOTSUPP)
        );
    });
}

#[test]
fn a_socket_whose_program_stops_receiving_holds_few_pool_buffers() {
    on_every_backend!(|| {
        let (port, pool, sock, mut peer) = ahead_pair(8, 8);
        let ov: Overlapped<PooledBuf> = Overlapped::new();
        let _ = sock.recv_pooled(&ov, Vec::new(), &pool, 0).unwrap();
        write_all(&mut peer, b"start");
        assert_eq!(port.get(Some(TIMEOUT)).unwrap().result(), Ok(5));
        drop(ov.take_buffers().unwrap());
        // Ten arrivals, more than the pool holds, while the program posts no receive.
        let flood: Vec<u8> = (0..80).map(pattern).collect();
        for piece in flood.chunks(8) {
            write_all(&mut peer, piece);
            reap_without_packets(&port);
        }
        // The socket stopped taking buffers after a few: another connection still gets one.
        let (other, mut other_peer) = tcp_pair_std();
        port.associate(&other, 2).unwrap();
        other.receive_ahead(&pool).unwrap();
        let other_ov: Overlapped<PooledBuf> = Overlapped::new();
        let _ = other.recv_pooled(&other_ov, Vec::new(), &pool, 0).unwrap();
        write_all(&mut other_peer, b"hello");
        let packet = port.get(Some(TIMEOUT)).unwrap();
        assert_eq!((packet.key, packet.result()), (2, Ok(5)), "not WSAENOBUFS");
        drop(other_ov.take_buffers().unwrap());
        // The data the socket left in the kernel comes, after what it kept, in order.
        assert_eq!(receive_bytes(&port, &pool, &sock, flood.len()), flood);
    });
}

#[test]
fn cancelling_a_waiting_receive_aborts_it_and_loses_no_data() {
    on_every_backend!(|| {
        let (port, pool, sock, mut peer) = ahead_pair(4, 16);
        let ov: Overlapped<PooledBuf> = Overlapped::new();
        assert_eq!(
            sock.recv_pooled(&ov, Vec::new(), &pool, 0),
            Ok(Started::Pending)
        );
        ov.cancel().unwrap();
        let packet = port.get(Some(TIMEOUT)).unwrap();
        assert_eq!(
            packet.error.map(|e| e.code()),
            Some(codes::WSA_OPERATION_ABORTED),
            "S33"
        );
        assert!(ov.take_buffers().unwrap().is_empty());
        assert_eq!(
            ov.cancel().map_err(|e| e.code()),
            Err(codes::ERROR_NOT_FOUND),
            "nothing pending any more"
        );
        write_all(&mut peer, b"after");
        assert_eq!(receive_bytes(&port, &pool, &sock, 5), b"after");
        assert_eq!(pool.in_use(), 0);
    });
}

#[test]
fn closing_aborts_the_waiting_receive_and_gives_kept_buffers_back() {
    on_every_backend!(|| {
        let (port, pool, sock, _peer) = ahead_pair(4, 16);
        let ov: Overlapped<PooledBuf> = Overlapped::new();
        let _ = sock.recv_pooled(&ov, Vec::new(), &pool, 0).unwrap();
        drop(sock);
        let packet = port.get(Some(TIMEOUT)).unwrap();
        assert_eq!(
            packet.error.map(|e| e.code()),
            Some(codes::WSAECONNABORTED),
            "S34"
        );
        assert!(ov.take_buffers().unwrap().is_empty());

        let (sock, mut peer) = tcp_pair_std();
        port.associate(&sock, 2).unwrap();
        sock.receive_ahead(&pool).unwrap();
        let _ = sock.recv_pooled(&ov, Vec::new(), &pool, 0).unwrap();
        write_all(&mut peer, b"x");
        assert_eq!(port.get(Some(TIMEOUT)).unwrap().result(), Ok(1));
        drop(ov.take_buffers().unwrap());
        write_all(&mut peer, b"kept, never received");
        reap_without_packets(&port);
        drop(sock);
        eventually("the kept buffers back in the pool", || {
            let _ = port.get(Some(Duration::from_millis(5)));
            pool.in_use() == 0
        });
    });
}

#[test]
fn a_socket_receiving_ahead_closes_when_dropped_with_no_wait_on_the_port() {
    on_every_backend!(|| {
        let (port, pool, sock, mut peer) = ahead_pair(4, 16);
        let ov: Overlapped<PooledBuf> = Overlapped::new();
        let _ = sock.recv_pooled(&ov, Vec::new(), &pool, 0).unwrap();
        write_all(&mut peer, b"ping");
        assert_eq!(port.get(Some(TIMEOUT)).unwrap().result(), Ok(4));
        drop(ov.take_buffers().unwrap());
        // No receive is posted now, though on io_uring the socket's stream is still in the
        // kernel: the close ends it, and the peer sees the end without the port being waited on.
        drop(sock);
        peer.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest)
            .expect("the end of the stream before the timeout");
        assert!(rest.is_empty());
        // The stream's last completion still comes to the port, and frees what it held.
        reap_without_packets(&port);
        assert_eq!(pool.in_use(), 0);
    });
}

#[test]
fn the_peers_end_reaches_every_receive_posted_after_it() {
    on_every_backend!(|| {
        let (port, pool, sock, mut peer) = ahead_pair(4, 16);
        write_all(&mut peer, b"last words");
        drop(peer);
        reap_without_packets(&port);
        assert_eq!(receive_bytes(&port, &pool, &sock, 10), b"last words");
        let ov: Overlapped<PooledBuf> = Overlapped::new();
        for _ in 0..3 {
            let _ = sock.recv_pooled(&ov, Vec::new(), &pool, 0).unwrap();
            let packet = port.get(Some(TIMEOUT)).unwrap();
            assert_eq!(packet.result(), Ok(0), "S10: the end, again and again");
            assert!(
                ov.take_buffers().unwrap().is_empty(),
                "no buffer for an end"
            );
        }
        assert_eq!(pool.in_use(), 0);
    });
}

#[test]
fn an_empty_pool_fails_the_receive_with_wsaenobufs_and_keeps_the_data() {
    on_every_backend!(|| {
        let (port, pool, sock, mut peer) = ahead_pair(1, 8);
        let ov: Overlapped<PooledBuf> = Overlapped::new();
        let _ = sock.recv_pooled(&ov, Vec::new(), &pool, 0).unwrap();
        write_all(&mut peer, b"first");
        assert_eq!(port.get(Some(TIMEOUT)).unwrap().result(), Ok(5));
        let held = ov.take_buffers().unwrap(); // the pool's only buffer, kept
        write_all(&mut peer, b"second");
        assert_eq!(
            sock.recv_pooled(&ov, Vec::new(), &pool, 0),
            Ok(Started::Pending)
        );
        let packet = port.get(Some(TIMEOUT)).unwrap();
        assert_eq!(packet.error.map(|e| e.code()), Some(codes::WSAENOBUFS));
        drop(held);
        assert_eq!(receive_bytes(&port, &pool, &sock, 6), b"second");
    });
}
