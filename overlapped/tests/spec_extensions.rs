//! SPEC S45–S48: the extension functions (AcceptEx, ConnectEx, DisconnectEx, TransmitFile).

#[macro_use]
mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use overlapped::{codes, CompletionPort, Family, Kind, Overlapped, Socket, Started};

/// A fresh stream socket for the family of `addr`.
fn stream_for(addr: SocketAddr) -> Socket {
    Socket::new(Family::of(&addr), Kind::Stream).expect("a socket")
}

/// A stream socket bound to an ephemeral port of `addr`'s address.
fn bound_stream(addr: SocketAddr) -> Socket {
    let s = stream_for(addr);
    s.bind(addr).expect("bind");
    s
}

/// An address on loopback where nothing listens.
fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind(localhost()).unwrap();
    listener.local_addr().unwrap()
}

/// A temporary file holding `data`; removed when dropped.
struct TempFile {
    path: PathBuf,
    file: File,
}

impl TempFile {
    fn with(data: &[u8]) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!(
            "overlapped-spec-transmit-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let path = std::env::temp_dir().join(name);
        let mut file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("create the temporary file");
        file.write_all(data).unwrap();
        TempFile { path, file }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads the peer's stream to its end in another thread.
fn read_to_end_in_thread(mut peer: TcpStream) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut all = Vec::new();
        peer.read_to_end(&mut all)
            .expect("the peer reads to the end");
        all
    })
}

/// S45: an accept with no receive buffer is pending until a connection comes, then completes
/// with 0 bytes; the remote address is the completion's `from`, the local one the accept
/// socket's. The accepted socket carries data both ways.
#[test]
fn s45_accept_ex_without_receive_completes_on_connection_with_addresses() {
    on_every_backend!(|| {
        for addr in [localhost(), localhost_v6()] {
            let listener = Socket::listen_tcp(addr, 8).unwrap();
            let into = stream_for(addr);
            let ov: Overlapped = ov_with_event();
            assert_eq!(
                listener.accept_ex(&into, &ov, Vec::new()),
                Ok(Started::Pending)
            );
            settle_time();
            assert!(ov.is_pending(), "no connection yet");
            let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            wait_event(&ov);
            let c = wait_done(&ov);
            assert_eq!(c.result(), Ok(0), "{addr}");
            assert_eq!(c.from, Some(client.local_addr().unwrap()), "remote address");
            assert_eq!(into.local_addr().unwrap(), listener.local_addr().unwrap());
            assert_eq!(into.local_addr().unwrap(), client.peer_addr().unwrap());

            write_all(&mut client, b"over");
            let started = into.recv(&ov, vec![vec![0; 8]], 0).unwrap();
            assert_eq!(settle(&ov, started).result(), Ok(4));
            assert_eq!(received(&ov, 4), b"over");
            let started = into.send(&ov, vec![b"back".to_vec()], 0).unwrap();
            assert_eq!(settle(&ov, started).result(), Ok(4));
            client.set_read_timeout(Some(TIMEOUT)).unwrap();
            assert_eq!(read_exact(&mut client, 4), b"back");
        }
    });
}

/// S45: with a receive buffer, the accept completes only after the first data arrives, with its
/// byte count and the data in the buffer; the addresses come with it.
#[test]
fn s45_accept_ex_with_receive_waits_for_first_data() {
    on_every_backend!(|| {
        let listener = Socket::listen_tcp(localhost(), 8).unwrap();
        let into = stream_for(localhost());
        let ov: Overlapped = ov_with_event();
        let started = listener.accept_ex(&into, &ov, vec![vec![0; 64]]);
        assert_eq!(started, Ok(Started::Pending));
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        settle_time();
        assert!(ov.is_pending(), "connected, but no data yet");
        write_all(&mut client, b"first data");
        wait_event(&ov);
        let c = wait_done(&ov);
        assert_eq!(c.result(), Ok(10));
        assert_eq!(received(&ov, 10), b"first data");
        assert_eq!(c.from, Some(client.local_addr().unwrap()));
        assert_eq!(into.local_addr().unwrap(), client.peer_addr().unwrap());
    });
}

/// S45: an accept on a listener associated with a port posts a packet with the listener's key
/// and the accept's object, even when the caller dropped its handle to it.
#[test]
fn s45_accept_ex_on_a_port_posts_a_packet() {
    on_every_backend!(|| {
        let port: CompletionPort = CompletionPort::new(1).unwrap();
        let listener = Socket::listen_tcp(localhost(), 8).unwrap();
        port.associate(&listener, 45).unwrap();
        let into = stream_for(localhost());
        {
            let ov: Overlapped = Overlapped::new();
            let started = listener.accept_ex(&into, &ov, vec![vec![0; 16]]);
            assert_eq!(started, Ok(Started::Pending));
        }
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        write_all(&mut client, b"hi port");
        let p = port.get(Some(TIMEOUT)).expect("the accept's packet");
        assert_eq!((p.key, p.bytes, p.error), (45, 7, None));
        let ov = p.overlapped.expect("the object comes back");
        assert_eq!(
            ov.completion(false).unwrap().from,
            Some(client.local_addr().unwrap())
        );
        assert_eq!(received(&ov, 7), b"hi port");
    });
}

/// S46: a connect on an unbound socket is WSAEINVAL, at once, and notifies nothing (S4).
#[test]
fn s46_connect_ex_unbound_is_wsaeinval() {
    on_every_backend!(|| {
        let listener = TcpListener::bind(localhost()).unwrap();
        let sock = stream_for(localhost());
        let ov: Overlapped = ov_with_event();
        let to = listener.local_addr().unwrap();
        let err = sock.connect_ex(&ov, to, vec![b"x".to_vec()]).unwrap_err();
        assert_eq!(err.code(), 10022);
        assert_eq!(err.code(), codes::WSAEINVAL);
        assert!(
            !ov.event().unwrap().is_set(),
            "a failure at once notifies nothing"
        );
        assert!(!ov.is_pending());
    });
}

/// S46: a connect of a bound socket sends its first buffer, counted in the bytes; without one
/// it completes with 0. The socket is then connected.
#[test]
fn s46_connect_ex_sends_first_buffer_counted_in_bytes() {
    on_every_backend!(|| {
        let listener = TcpListener::bind(localhost()).unwrap();
        let to = listener.local_addr().unwrap();
        let first: &[u8] = b"hello, first send";
        for data in [first, b""] {
            let sock = bound_stream(localhost());
            let ov: Overlapped = ov_with_event();
            let bufs = match data.is_empty() {
                true => Vec::new(),
                false => vec![data[..5].to_vec(), data[5..].to_vec()],
            };
            let started = sock.connect_ex(&ov, to, bufs).unwrap();
            wait_event(&ov);
            assert_eq!(settle(&ov, started).result(), Ok(data.len()));
            assert_eq!(sock.peer_addr().unwrap(), to);
            let (mut server, from) = listener.accept().unwrap();
            assert_eq!(from, sock.local_addr().unwrap());
            server.set_read_timeout(Some(TIMEOUT)).unwrap();
            assert_eq!(read_exact(&mut server, data.len()), data);
            write_all(&mut server, b"reply");
            let started = sock.recv(&ov, vec![vec![0; 8]], 0).unwrap();
            assert_eq!(settle(&ov, started).result(), Ok(5));
        }
    });
}

/// S46: a refused connect completes with WSAECONNREFUSED (10061) (or fails at once with it).
#[test]
fn s46_connect_ex_refused_is_wsaeconnrefused() {
    on_every_backend!(|| {
        let to = closed_port();
        let sock = bound_stream(localhost());
        let ov: Overlapped = ov_with_event();
        let error = match sock.connect_ex(&ov, to, vec![b"lost".to_vec()]) {
            Err(e) => e,
            Ok(started) => {
                assert_eq!(started, Started::Pending);
                wait_event(&ov);
                wait_done(&ov).error.expect("a refused connect fails")
            }
        };
        assert_eq!(error.code(), 10061);
        assert_eq!(error.code(), codes::WSAECONNREFUSED);
    });
}

/// S46: a connect on a socket associated with a port posts its packet, bytes included.
#[test]
fn s46_connect_ex_on_a_port_posts_a_packet() {
    on_every_backend!(|| {
        let port: CompletionPort = CompletionPort::new(1).unwrap();
        let listener = TcpListener::bind(localhost()).unwrap();
        let sock = bound_stream(localhost());
        port.associate(&sock, 46).unwrap();
        let ov: Overlapped = Overlapped::new();
        let to = listener.local_addr().unwrap();
        let _ = sock
            .connect_ex(&ov, to, vec![b"via port".to_vec()])
            .unwrap();
        let p = port.get(Some(TIMEOUT)).expect("the connect's packet");
        assert_eq!((p.key, p.bytes, p.error), (46, 8, None));
        let (mut server, _) = listener.accept().unwrap();
        server.set_read_timeout(Some(TIMEOUT)).unwrap();
        assert_eq!(read_exact(&mut server, 8), b"via port");
    });
}

/// S47: a disconnect completes after the send started before it; the peer reads all of it and
/// then the end (0); later sends fail with WSAESHUTDOWN (10058); receiving still works.
#[test]
fn s47_disconnect_ex_then_sends_fail_and_peer_reads_zero() {
    on_every_backend!(|| {
        let (sock, peer) = tcp_pair_std();
        let mut peer_writer = peer.try_clone().unwrap();
        let big: Vec<u8> = (0..4 << 20).map(pattern).collect();
        let send: Overlapped = ov_with_event();
        let send_started = sock.send(&send, vec![big.clone()], 0).unwrap();
        let ov: Overlapped = ov_with_event();
        let started = sock.disconnect_ex(&ov).unwrap();
        let reader = read_to_end_in_thread(peer);
        assert_eq!(settle(&ov, started).result(), Ok(0));
        assert_eq!(settle(&send, send_started).result(), Ok(big.len()));
        let got = reader.join().unwrap();
        assert_eq!(got.len(), big.len(), "the peer read the send, then 0");
        assert!(got == big);

        let fail = ov_with_event();
        let error = match sock.send(&fail, vec![b"late".to_vec()], 0) {
            Err(e) => e,
            Ok(s) => settle(&fail, s)
                .error
                .expect("a send after the disconnect fails"),
        };
        assert_eq!(error.code(), 10058);
        assert_eq!(error.code(), codes::WSAESHUTDOWN);

        write_all(&mut peer_writer, b"still open");
        let started = sock.recv(&ov, vec![vec![0; 16]], 0).unwrap();
        assert_eq!(settle(&ov, started).result(), Ok(10));
        assert_eq!(received(&ov, 10), b"still open");
    });
}

/// Transmits part of `file` with optional head and tail, then shuts the socket down; checks the
/// completion's bytes and what the peer read.
fn transmit_and_check(
    data: &[u8],
    offset: usize,
    len: usize,
    head: Option<&[u8]>,
    tail: Option<&[u8]>,
) {
    let file = TempFile::with(data);
    let (sock, peer) = tcp_pair_std();
    let reader = read_to_end_in_thread(peer);
    let ov: Overlapped = ov_with_event();
    let started = sock
        .transmit_file(
            &ov,
            &file.file,
            offset as u64,
            len as u64,
            head.map(<[u8]>::to_vec),
            tail.map(<[u8]>::to_vec),
        )
        .unwrap();
    let end = match len {
        0 => data.len(),
        n => offset + n,
    };
    let mut expected = head.unwrap_or_default().to_vec();
    expected.extend_from_slice(&data[offset..end]);
    expected.extend_from_slice(tail.unwrap_or_default());
    wait_event(&ov);
    assert_eq!(settle(&ov, started).result(), Ok(expected.len()));
    sock.shutdown(Shutdown::Write).unwrap();
    let got = reader.join().unwrap();
    assert_eq!(got.len(), expected.len());
    let first_difference = got.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(first_difference, None, "the bytes arrived intact");
    drop(file);
}

/// S48: a 10 MiB transmit from an offset, with head and tail buffers: every byte arrives, and
/// the bytes are file + head + tail.
#[test]
fn s48_transmit_file_10_mib_with_head_and_tail() {
    on_every_backend!(|| {
        const OFFSET: usize = 12_345;
        const LEN: usize = 10 << 20;
        let data: Vec<u8> = (0..OFFSET + LEN + 999).map(pattern).collect();
        let head = b"HEAD: a header before the file\n";
        let tail = b"\nTAIL: and a trailer after it";
        transmit_and_check(&data, OFFSET, LEN, Some(head), Some(tail));
    });
}

/// S48: a length of 0 sends to the end of the file; a length smaller than the file sends only
/// that much; a head alone or a tail alone goes where it belongs.
#[test]
fn s48_transmit_file_lengths_and_optional_buffers() {
    on_every_backend!(|| {
        let data: Vec<u8> = (0..(1 << 20) + 777).map(|i| pattern(i * 3)).collect();
        transmit_and_check(&data, 1000, 0, None, None);
        transmit_and_check(&data, 0, 5000, None, None);
        transmit_and_check(&data, 4096, 65_536, Some(b"head only"), None);
        transmit_and_check(&data, 7, 0, None, Some(b"tail only"));
    });
}
