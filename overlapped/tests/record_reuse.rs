//! A socket keeps the record of its last finished operation for its next one (the engine's
//! `retire`). What users rely on must not notice: a socket still closes when dropped, an accepted
//! socket when its owner drops it, a socket still gives its descriptor back, and operations that
//! follow one another on a socket with other objects, buffers, notifications or addresses each
//! get their own result.

#[macro_use]
mod common;

use std::io::Read;
use std::net::TcpStream;
use std::thread;

use common::*;
use overlapped::{CompletionPort, Event, Family, Kind, Overlapped, Socket, Started};

/// Reads until the peer's end: the number of bytes before it, or a panic if the stream stays
/// open past the timeout.
fn read_to_eof(peer: &mut TcpStream) -> usize {
    peer.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut seen = Vec::new();
    peer.read_to_end(&mut seen)
        .expect("the socket closed: end of stream before the timeout");
    seen.len()
}

#[test]
fn a_socket_closes_when_dropped_after_its_operations_finished() {
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        let ov = ov_with_event();
        let started = sock.send(&ov, vec![b"ping".to_vec()], 0).unwrap();
        assert_eq!(settle(&ov, started).result(), Ok(4));
        write_all(&mut peer, b"pong");
        let started = sock.recv(&ov, vec![vec![0; 8]], 0).unwrap();
        assert_eq!(settle(&ov, started).result(), Ok(4));
        drop(sock);
        assert_eq!(read_to_eof(&mut peer), 4, "the send's bytes, then the end");
        drop(ov);
    });
}

/// Reads until the peer's end, or its reset (a socket closed with data it never read resets the
/// connection); a panic if neither comes before the timeout.
fn read_to_close(peer: &mut TcpStream) {
    peer.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut seen = Vec::new();
    match peer.read_to_end(&mut seen) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the socket did not close before the timeout: {e}"),
    }
}

/// A socket dropped while its last operation finishes on another thread: the finished record goes
/// back to the socket's slot as the close empties it, and must not stay there (it would keep the
/// socket, and its descriptor, alive for good).
#[test]
fn a_socket_dropped_as_its_operation_finishes_still_closes() {
    on_every_backend!(|| {
        for round in 0..100 {
            let (sock, mut peer) = tcp_pair_std();
            let ov = ov_with_event();
            assert_eq!(
                sock.recv(&ov, vec![vec![0; 8]], 0),
                Ok(Started::Pending),
                "round {round}"
            );
            let writer = thread::spawn(move || {
                write_all(&mut peer, b"x");
                peer
            });
            drop(sock); // the receive completes with the byte or aborted, as the close goes on
            let mut peer = writer.join().unwrap();
            read_to_close(&mut peer);
            drop(ov);
        }
    });
}

#[test]
fn a_port_socket_closes_when_dropped_after_its_operations_finished() {
    on_every_backend!(|| {
        let port: CompletionPort = CompletionPort::new(1).unwrap();
        let (sock, mut peer) = tcp_pair_std();
        port.associate(&sock, 7).unwrap();
        let ov = Overlapped::new();
        write_all(&mut peer, b"data");
        for half in 0..2 {
            // Done at once or pending, the operation posts its packet (S3).
            let _ = sock.recv(&ov, vec![vec![0; 2]], 0).unwrap();
            let packet = port.get(Some(TIMEOUT)).unwrap();
            assert_eq!((packet.key, packet.result()), (7, Ok(2)), "half {half}");
        }
        drop(sock);
        assert_eq!(read_to_eof(&mut peer), 0);
    });
}

#[test]
fn an_accepted_socket_closes_when_its_owner_drops_it() {
    on_every_backend!(|| {
        let listener = Socket::listen_tcp(localhost(), 8).unwrap();
        for round in 0..2 {
            let into = Socket::new(Family::V4, Kind::Stream).unwrap();
            let ov: Overlapped = ov_with_event();
            let started = listener.accept_ex(&into, &ov, Vec::new()).unwrap();
            let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            assert_eq!(settle(&ov, started).result(), Ok(0), "round {round}");
            drop(into);
            assert_eq!(read_to_eof(&mut client), 0, "round {round}");
        }
    });
}

#[test]
fn a_socket_gives_its_descriptor_back_after_its_operations_finished() {
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        let ov = ov_with_event();
        let started = sock.send(&ov, vec![b"ab".to_vec()], 0).unwrap();
        assert_eq!(settle(&ov, started).result(), Ok(2));
        let mut stream = match sock.into_tcp_stream() {
            Ok(stream) => stream,
            Err((e, _)) => panic!("no operation is pending, yet: {e}"),
        };
        assert_eq!(read_exact(&mut peer, 2), b"ab");
        write_all(&mut peer, b"c");
        let mut byte = [0];
        stream.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"c");
    });
}

#[test]
fn operations_in_turn_on_one_socket_each_get_their_own_result() {
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        let plain: Overlapped = Overlapped::new();
        let with_event: Overlapped = Overlapped::with_event(Event::new());
        let boxed: Overlapped<Box<[u8]>> = ov_with_event();
        for i in 0..20u8 {
            write_all(&mut peer, &[i; 3]);
            let (ov, other) = match i % 2 {
                0 => (&plain, &with_event),
                _ => (&with_event, &plain),
            };
            let started = sock.recv(ov, vec![vec![0; 1], vec![0; 2]], 0).unwrap();
            assert_eq!(settle(ov, started).result(), Ok(3), "receive {i}");
            assert_eq!(ov.take_buffers().unwrap(), vec![vec![i], vec![i, i]]);
            let started = sock.send(&boxed, vec![vec![i; 5].into_boxed_slice()], 0);
            assert_eq!(settle(&boxed, started.unwrap()).result(), Ok(5), "send {i}");
            assert_eq!(read_exact(&mut peer, 5), vec![i; 5]);
            assert_eq!(boxed.take_buffers().unwrap().len(), 1);
            assert!(
                other.take_buffers().is_err(),
                "the other object's were taken before"
            );
        }
    });
}

#[test]
fn datagrams_in_turn_carry_their_own_addresses() {
    on_every_backend!(|| {
        let (a, b) = udp_pair();
        let c = Socket::bind_udp(localhost()).unwrap();
        let ov = ov_with_event();
        for i in 0..10u8 {
            let (to, label) = match i % 2 {
                0 => (&b, "b"),
                _ => (&c, "c"),
            };
            let to_addr = to.local_addr().unwrap();
            let started = a.send_to(&ov, vec![vec![i; 4]], 0, to_addr).unwrap();
            assert_eq!(settle(&ov, started).result(), Ok(4), "to {label}");
            let got = ov_with_event();
            let started = to.recv_from(&got, vec![vec![0; 8]], 0).unwrap();
            let c = settle(&got, started);
            assert_eq!(c.result(), Ok(4));
            assert_eq!(c.from, Some(a.local_addr().unwrap()), "datagram {i}");
            // The receiving socket answers without an address: a plain send on a datagram
            // socket needs a connected peer, so it answers with send_to too.
            let started = to.send_to(&got, vec![vec![i]], 0, c.from.unwrap()).unwrap();
            assert_eq!(settle(&got, started).result(), Ok(1));
            let back = ov_with_event();
            let started = a.recv_from(&back, vec![vec![0; 2]], 0).unwrap();
            let reply = settle(&back, started);
            assert_eq!((reply.result(), reply.from), (Ok(1), Some(to_addr)));
        }
    });
}
