//! Pooled receives (`Socket::recv_pooled`, `CompletionPort::buffer_pool`): a receive posted
//! without a buffer takes one of its port's pool when data arrives, hands it over in the
//! overlapped object, and the buffer goes back to the pool when dropped. Each test runs on every
//! backend.

#[macro_use]
mod common;

use std::io::Read;

use common::*;
use overlapped::{
    codes, BufferPool, CompletionPort, Overlapped, PooledBuf, Started, MAX_POOL_BUFFERS,
};

type Port = CompletionPort<PooledBuf>;

/// The packet of the one operation in flight on `port`, with the bytes its buffers hold.
fn next_receive(port: &Port) -> (Result<usize, overlapped::Error>, Vec<Vec<u8>>) {
    let packet = port
        .get(Some(TIMEOUT))
        .expect("a packet before the timeout");
    let ov = packet.overlapped.as_ref().expect("the operation's object");
    let bufs = ov.take_buffers().unwrap();
    (packet.result(), bufs.iter().map(|b| b.to_vec()).collect())
}

/// Checks that the pool's buffer (of a pool of one) is free: a receive on a new socket of the
/// port gets it.
fn assert_pool_serves_another_socket(port: &Port, pool: &BufferPool, ov: &Overlapped<PooledBuf>) {
    let (sock, mut peer) = tcp_pair_std();
    port.associate(&sock, 2).unwrap();
    let _ = sock.recv_pooled(ov, Vec::new(), pool, 0).unwrap();
    write_all(&mut peer, b"ok");
    assert_eq!(next_receive(port), (Ok(2), vec![b"ok".to_vec()]));
}

#[test]
fn a_pooled_receive_takes_a_buffer_when_data_arrives() {
    on_every_backend!(|| {
        let (port, pool, sock, mut peer) = pooled_pair(2, 16);
        let ov: Overlapped<PooledBuf> = Overlapped::new();
        assert_eq!(
            sock.recv_pooled(&ov, Vec::new(), &pool, 0),
            Ok(Started::Pending)
        );
        write_all(&mut peer, b"hello");
        let (result, bufs) = next_receive(&port);
        assert_eq!(result, Ok(5));
        assert_eq!(
            bufs,
            vec![b"hello".to_vec()],
            "one buffer, cut to the bytes received"
        );
    });
}

#[test]
fn a_pooled_receive_takes_at_most_one_buffer_of_data() {
    on_every_backend!(|| {
        let (port, pool, sock, mut peer) = pooled_pair(4, 8);
        write_all(&mut peer, b"0123456789abc");
        let ov: Overlapped<PooledBuf> = Overlapped::new();
        let mut seen = Vec::new();
        while seen.len() < 13 {
            let _ = sock.recv_pooled(&ov, Vec::new(), &pool, 0).unwrap();
            let (result, bufs) = next_receive(&port);
            let n = result.unwrap();
            assert!(n <= pool.buffer_size(), "{n} bytes in a buffer of 8");
            assert_eq!(bufs.len(), 1);
            seen.extend_from_slice(&bufs[0]);
        }
        assert_eq!(seen, b"0123456789abc", "the data, in order");
    });
}

#[test]
fn pool_buffers_go_back_to_the_pool_when_dropped() {
    on_every_backend!(|| {
        let (port, pool, sock, mut peer) = pooled_pair(2, 32);
        let ov: Overlapped<PooledBuf> = Overlapped::new();
        for round in 0..50u32 {
            let message = format!("message {round}");
            let _ = sock.recv_pooled(&ov, Vec::new(), &pool, 0).unwrap();
            write_all(&mut peer, message.as_bytes());
            let (result, bufs) = next_receive(&port);
            assert_eq!(result, Ok(message.len()), "round {round}");
            assert_eq!(bufs, vec![message.into_bytes()], "round {round}");
        }
    });
}

#[test]
fn an_empty_pool_fails_the_receive_with_wsaenobufs_and_keeps_the_data() {
    on_every_backend!(|| {
        let (port, pool, sock, mut peer) = pooled_pair(1, 8);
        let ov: Overlapped<PooledBuf> = Overlapped::new();
        let _ = sock.recv_pooled(&ov, Vec::new(), &pool, 0).unwrap();
        write_all(&mut peer, b"first");
        let packet = port.get(Some(TIMEOUT)).unwrap();
        assert_eq!(packet.result(), Ok(5));
        let held = ov.take_buffers().unwrap(); // the pool's only buffer, kept
        assert_eq!(pool.in_use(), 1);
        write_all(&mut peer, b"second");
        // Not a failure at once: the lack is the operation's completion, on both backends.
        let started = sock.recv_pooled(&ov, Vec::new(), &pool, 0);
        assert_eq!(started, Ok(Started::Pending));
        let packet = port.get(Some(TIMEOUT)).unwrap();
        let error = packet.error.expect("an error packet");
        assert_eq!(error.code(), codes::WSAENOBUFS);
        drop(held);
        assert_eq!(pool.in_use(), 0);
        let _ = sock.recv_pooled(&ov, Vec::new(), &pool, 0).unwrap();
        let (result, bufs) = next_receive(&port);
        assert_eq!(result, Ok(6));
        assert_eq!(
            bufs,
            vec![b"second".to_vec()],
            "the data waited for a buffer"
        );
    });
}

#[test]
fn a_pooled_receive_reports_the_peers_end_without_a_buffer() {
    on_every_backend!(|| {
        let (port, pool, sock, peer) = pooled_pair(1, 8);
        let ov: Overlapped<PooledBuf> = Overlapped::new();
        let _ = sock.recv_pooled(&ov, Vec::new(), &pool, 0).unwrap();
        drop(peer);
        let (result, bufs) = next_receive(&port);
        assert_eq!(result, Ok(0), "S10: the end is 0 bytes");
        assert!(bufs.is_empty(), "no buffer for no data");
        assert_pool_serves_another_socket(&port, &pool, &ov);
    });
}

#[test]
fn a_pooled_buffer_can_be_sent_back() {
    on_every_backend!(|| {
        let (port, pool, sock, mut peer) = pooled_pair(2, 64);
        let ov: Overlapped<PooledBuf> = Overlapped::new();
        let _ = sock.recv_pooled(&ov, Vec::new(), &pool, 0).unwrap();
        write_all(&mut peer, b"echo me");
        assert_eq!(port.get(Some(TIMEOUT)).unwrap().result(), Ok(7));
        let bufs = ov.take_buffers().unwrap();
        let _ = sock.send(&ov, bufs, 0).unwrap();
        assert_eq!(port.get(Some(TIMEOUT)).unwrap().result(), Ok(7));
        assert_eq!(read_exact(&mut peer, 7), b"echo me");
    });
}

#[test]
fn closing_a_socket_aborts_its_pooled_receive_and_frees_nothing_early() {
    on_every_backend!(|| {
        let (port, pool, sock, _peer) = pooled_pair(1, 8);
        let ov: Overlapped<PooledBuf> = Overlapped::new();
        assert_eq!(
            sock.recv_pooled(&ov, Vec::new(), &pool, 0),
            Ok(Started::Pending)
        );
        drop(sock);
        let packet = port.get(Some(TIMEOUT)).unwrap();
        assert_eq!(
            packet.error.map(|e| e.code()),
            Some(codes::WSAECONNABORTED),
            "S34"
        );
        assert!(ov.take_buffers().unwrap().is_empty());
        // The receive took no buffer with it.
        assert_pool_serves_another_socket(&port, &pool, &ov);
    });
}

#[test]
fn a_buffer_outlives_its_pool_handle_and_port() {
    on_every_backend!(|| {
        let (port, pool, sock, mut peer) = pooled_pair(1, 8);
        let ov: Overlapped<PooledBuf> = Overlapped::new();
        let _ = sock.recv_pooled(&ov, Vec::new(), &pool, 0).unwrap();
        write_all(&mut peer, b"kept");
        assert_eq!(port.get(Some(TIMEOUT)).unwrap().result(), Ok(4));
        drop((pool, sock, port));
        let bufs = ov.take_buffers().unwrap();
        assert_eq!(&bufs[0][..], b"kept");
    });
}

#[test]
fn pooled_receives_refuse_what_they_cannot_serve() {
    on_every_backend!(|| {
        let port = Port::new(1).unwrap();
        let pool = port.buffer_pool(1, 8).unwrap();
        let ov: Overlapped<PooledBuf> = Overlapped::new();
        let invalid = Err(codes::WSAEINVAL);
        // Not associated with any port, then with another port than the pool's.
        let (sock, _peer) = tcp_pair_std();
        let code = |r: overlapped::Result<Started>| r.map_err(|e| e.code());
        assert_eq!(code(sock.recv_pooled(&ov, Vec::new(), &pool, 0)), invalid);
        let other = Port::new(1).unwrap();
        other.associate(&sock, 1).unwrap();
        assert_eq!(code(sock.recv_pooled(&ov, Vec::new(), &pool, 0)), invalid);
        // MSG_WAITALL would need more than one buffer.
        let (sock, _peer) = tcp_pair_std();
        port.associate(&sock, 1).unwrap();
        let waitall = overlapped::flags::MSG_WAITALL;
        assert_eq!(
            code(sock.recv_pooled(&ov, Vec::new(), &pool, waitall)),
            invalid
        );
        // Datagrams: not supported.
        let (udp, _) = udp_pair();
        port.associate(&udp, 2).unwrap();
        assert_eq!(
            code(udp.recv_pooled(&ov, Vec::new(), &pool, 0)),
            Err(codes::WSAEOPNOTSUPP)
        );
        // Pools of no buffers, of empty buffers, of too many buffers.
        for (count, size) in [(0, 8), (1, 0), (MAX_POOL_BUFFERS + 1, 8)] {
            let made = port.buffer_pool(count, size).map(|_| ());
            assert_eq!(
                made.map_err(|e| e.code()),
                Err(codes::WSAEINVAL),
                "{count} × {size}"
            );
        }
    });
}

#[test]
fn a_pooled_receive_while_the_object_is_pending_is_refused() {
    on_every_backend!(|| {
        let (port, pool, sock, mut peer) = pooled_pair(2, 8);
        let ov: Overlapped<PooledBuf> = Overlapped::new();
        assert_eq!(
            sock.recv_pooled(&ov, Vec::new(), &pool, 0),
            Ok(Started::Pending)
        );
        let again = sock
            .recv_pooled(&ov, Vec::new(), &pool, 0)
            .map_err(|e| e.code());
        assert_eq!(again, Err(codes::WSAEINVAL), "S13");
        write_all(&mut peer, b"one");
        assert_eq!(next_receive(&port), (Ok(3), vec![b"one".to_vec()]));
        let mut rest = [0u8; 1];
        peer.set_nonblocking(true).unwrap();
        assert!(peer.read(&mut rest).is_err(), "nothing else arrived");
    });
}

/// A program's own buffer type, made from pool buffers.
#[derive(Debug)]
struct Received(PooledBuf);

impl From<PooledBuf> for Received {
    fn from(buf: PooledBuf) -> Received {
        Received(buf)
    }
}

#[test]
fn a_pooled_receive_hands_its_buffer_over_in_the_objects_buffer_type() {
    on_every_backend!(|| {
        let port: CompletionPort<Received> = CompletionPort::new(1).unwrap();
        let pool = port.buffer_pool(1, 8).unwrap();
        let (sock, mut peer) = tcp_pair_std();
        port.associate(&sock, 1).unwrap();
        let ov: Overlapped<Received> = Overlapped::new();
        let _ = sock.recv_pooled(&ov, Vec::new(), &pool, 0).unwrap();
        write_all(&mut peer, b"typed");
        assert_eq!(port.get(Some(TIMEOUT)).unwrap().result(), Ok(5));
        let bufs = ov.take_buffers().unwrap();
        assert_eq!(bufs.len(), 1);
        assert_eq!(&bufs[0].0[..], b"typed");
    });
}

#[test]
fn cancelling_a_pooled_receive_takes_no_buffer_from_the_pool() {
    on_every_backend!(|| {
        let (port, pool, sock, mut peer) = pooled_pair(1, 8);
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
        assert_eq!(pool.in_use(), 0);
        let _ = sock.recv_pooled(&ov, Vec::new(), &pool, 0).unwrap();
        write_all(&mut peer, b"after");
        assert_eq!(next_receive(&port), (Ok(5), vec![b"after".to_vec()]));
    });
}

#[test]
fn a_pool_buffer_dropped_on_another_thread_goes_back_to_the_pool() {
    on_every_backend!(|| {
        let (port, pool, sock, mut peer) = pooled_pair(1, 8);
        let ov: Overlapped<PooledBuf> = Overlapped::new();
        for round in 0..10u8 {
            let _ = sock.recv_pooled(&ov, Vec::new(), &pool, 0).unwrap();
            write_all(&mut peer, &[round; 3]);
            assert_eq!(port.get(Some(TIMEOUT)).unwrap().result(), Ok(3));
            let bufs = ov.take_buffers().unwrap();
            assert_eq!(pool.in_use(), 1, "round {round}");
            std::thread::spawn(move || drop(bufs)).join().unwrap();
            assert_eq!(pool.in_use(), 0, "round {round}");
        }
    });
}
