//! The extension functions and `CancelIoEx` through the facade, on real loopback sockets: some
//! notified through a completion port, some through the overlapped object's event.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use super::*;

/// A bound on every wait of these tests: it ends a hang, it measures nothing.
const WAIT_MS: u32 = 20_000;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn stream_socket() -> SOCKET {
    let s = wsa_socket(AF_INET, SOCK_STREAM, 0, WSA_FLAG_OVERLAPPED);
    assert_ne!(s, INVALID_SOCKET);
    s
}

fn bounded(stream: TcpStream) -> TcpStream {
    let limit = Some(Duration::from_millis(WAIT_MS.into()));
    stream.set_read_timeout(limit).unwrap();
    stream
}

/// A listening facade socket associated with a new port under `key`: (listener, address, port).
fn listening_on_port(key: usize) -> (SOCKET, SocketAddr, HANDLE) {
    let l = stream_socket();
    assert_eq!(bind(l, &loopback()), 0);
    assert_eq!(listen(l, 8), 0);
    let mut addr = loopback();
    assert_eq!(getsockname(l, &mut addr), 0);
    let port = create_io_completion_port(l, None, key, 0).expect("a port");
    (l, addr, port)
}

/// A facade socket connected to a `std` peer: (socket, peer).
fn pair() -> (SOCKET, TcpStream) {
    let listener = TcpListener::bind(loopback()).unwrap();
    let s = stream_socket();
    assert_eq!(connect(s, &listener.local_addr().unwrap()), 0);
    (s, bounded(listener.accept().unwrap().0))
}

/// One packet, bounded: (ok, bytes, key, last error if not ok).
fn get(port: HANDLE) -> (bool, u32, usize, u32) {
    let (mut bytes, mut key, mut ov) = (0, 0, None);
    let ok = get_queued_completion_status(port, &mut bytes, &mut key, &mut ov, WAIT_MS);
    let error = if ok { 0 } else { get_last_error() };
    assert_ne!(error, WAIT_TIMEOUT, "no packet within the bound");
    assert!(ov.is_some());
    (ok, bytes, key, error)
}

/// Waits for the operation of `ov` (which has an event) and returns its `BOOL`, bytes and error.
fn wait(s: SOCKET, ov: &WsaOverlapped) -> (bool, u32, u32) {
    let event = ov.event().expect("an object with an event");
    assert_eq!(
        wait_for_single_object_ex(event, WAIT_MS, false),
        WAIT_OBJECT_0
    );
    let (mut bytes, mut flags) = (0, 0);
    let ok = wsa_get_overlapped_result(s, ov, &mut bytes, false, &mut flags);
    (ok, bytes, if ok { 0 } else { wsa_get_last_error() })
}

/// The `BOOL` of a started operation is `true` (done) or `false` with `ERROR_IO_PENDING`.
fn started(ok: bool) {
    assert!(
        ok || get_last_error() == ERROR_IO_PENDING,
        "{}",
        get_last_error()
    );
}

#[test]
fn accept_ex_waits_for_the_first_data_and_gives_both_addresses() {
    let (l, addr, port) = listening_on_port(77);
    let accepted = stream_socket();
    let ov = WsaOverlapped::new();
    let mut buf = vec![0u8; 256];
    let mut received = 0;
    assert!(!accept_ex(l, accepted, &mut buf, 300, &mut received, &ov));
    assert_eq!(
        get_last_error(),
        WSAEFAULT,
        "a receive length beyond the buffer"
    );
    started(accept_ex(l, accepted, &mut buf, 100, &mut received, &ov));
    assert!(buf.is_empty(), "the buffer moved into the object");
    let mut client = bounded(TcpStream::connect(addr).unwrap());
    client.write_all(b"first data").unwrap();
    // S45: the packet comes with the first data, on the listener's port and key.
    assert_eq!(get(port), (true, 10, 77, 0));
    let bufs = ov.take_buffers().unwrap();
    assert_eq!(bufs[0].len(), 100);
    assert_eq!(&bufs[0][..10], b"first data");
    let (mut local, mut remote) = (loopback(), loopback());
    assert!(get_accept_ex_sockaddrs(
        accepted,
        &ov,
        &mut local,
        &mut remote
    ));
    assert_eq!(local, client.peer_addr().unwrap());
    assert_eq!(remote, client.local_addr().unwrap());
    // The accepted socket is connected.
    let mut sent = 0;
    assert_eq!(
        wsa_send(
            accepted,
            &mut vec![b"ok".to_vec()],
            &mut sent,
            0,
            None,
            None
        ),
        0
    );
    let mut reply = [0; 2];
    client.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"ok");
    for s in [accepted, l] {
        assert_eq!(closesocket(s), 0);
    }
    assert!(close_handle(port));
}

#[test]
fn accept_ex_with_no_receive_length_completes_on_connection() {
    let (l, addr, port) = listening_on_port(1);
    let accepted = stream_socket();
    let ov = WsaOverlapped::new();
    let (mut buf, mut received) = (vec![0u8; 64], 0);
    assert!(!get_accept_ex_sockaddrs(
        accepted,
        &ov,
        &mut loopback(),
        &mut loopback()
    ));
    assert_eq!(wsa_get_last_error(), WSAEINVAL, "no operation yet");
    started(accept_ex(l, accepted, &mut buf, 0, &mut received, &ov));
    let client = TcpStream::connect(addr).unwrap();
    assert_eq!(get(port), (true, 0, 1, 0));
    let mut remote = loopback();
    assert!(get_accept_ex_sockaddrs(
        accepted,
        &ov,
        &mut loopback(),
        &mut remote
    ));
    assert_eq!(remote, client.local_addr().unwrap());
    // The listener itself is no accept socket.
    assert!(!accept_ex(
        l,
        l,
        &mut vec![0; 4],
        0,
        &mut received,
        &WsaOverlapped::new()
    ));
    assert_eq!(get_last_error(), WSAEINVAL);
    for s in [accepted, l] {
        assert_eq!(closesocket(s), 0);
    }
    assert!(close_handle(port));
}

#[test]
fn cancel_io_ex_cancels_one_or_all() {
    let (l, _, port) = listening_on_port(3);
    let (a, b) = (stream_socket(), stream_socket());
    let (ova, ovb) = (WsaOverlapped::new(), WsaOverlapped::new());
    let mut n = 0;
    started(accept_ex(l, a, &mut Vec::new(), 0, &mut n, &ova));
    started(accept_ex(l, b, &mut Vec::new(), 0, &mut n, &ovb));
    // S33: one, then all; each completes once, aborted.
    assert!(cancel_io_ex(l, Some(&ova)));
    assert_eq!(get(port), (false, 0, 3, WSA_OPERATION_ABORTED));
    assert!(ova.completion(false).is_ok_and(|c| c.error.is_some()));
    assert!(!cancel_io_ex(l, Some(&ova)));
    assert_eq!(get_last_error(), ERROR_NOT_FOUND);
    assert!(cancel_io_ex(l, None));
    assert_eq!(get(port), (false, 0, 3, WSA_OPERATION_ABORTED));
    assert!(!cancel_io_ex(l, None));
    assert_eq!(get_last_error(), ERROR_NOT_FOUND);
    assert!(!cancel_io_ex(INVALID_SOCKET, None));
    assert_eq!(get_last_error(), ERROR_INVALID_HANDLE);
    for s in [a, b, l] {
        assert_eq!(closesocket(s), 0);
    }
    assert!(close_handle(port));
}

#[test]
fn closing_the_listener_aborts_a_pending_accept() {
    let (l, _, port) = listening_on_port(8);
    let accepted = stream_socket();
    let ov = WsaOverlapped::new();
    let mut n = 0;
    started(accept_ex(l, accepted, &mut vec![0; 16], 16, &mut n, &ov));
    assert_eq!(closesocket(l), 0);
    // S35.
    assert_eq!(get(port), (false, 0, 8, WSA_OPERATION_ABORTED));
    assert_eq!(closesocket(accepted), 0);
    assert!(close_handle(port));
}

#[test]
fn connect_ex_connects_a_bound_socket_and_sends_first() {
    let listener = TcpListener::bind(loopback()).unwrap();
    let to = listener.local_addr().unwrap();
    let s = stream_socket();
    let ov = WsaOverlapped::with_event(wsa_create_event());
    let (mut first, mut sent) = (b"hello".to_vec(), 0);
    // S46: unbound is WSAEINVAL.
    assert!(!connect_ex(s, &to, Some(&mut first), &mut sent, &ov));
    assert_eq!(get_last_error(), WSAEINVAL);
    let mut first = b"hello".to_vec();
    assert_eq!(bind(s, &loopback()), 0);
    started(connect_ex(s, &to, Some(&mut first), &mut sent, &ov));
    assert_eq!(wait(s, &ov), (true, 5, 0));
    let mut peer = bounded(listener.accept().unwrap().0);
    let mut got = [0; 5];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello");
    assert_eq!(ov.take_buffers().unwrap(), vec![b"hello".to_vec()]);
    assert_eq!(closesocket(s), 0);
}

#[test]
fn a_refused_connect_ex_completes_with_connrefused() {
    let to = TcpListener::bind(loopback()).unwrap().local_addr().unwrap();
    let s = stream_socket();
    assert_eq!(bind(s, &loopback()), 0);
    let port = create_io_completion_port(s, None, 6, 0).expect("a port");
    let (ov, mut sent) = (WsaOverlapped::new(), 0);
    let ok = connect_ex(s, &to, None, &mut sent, &ov);
    if ok || get_last_error() == ERROR_IO_PENDING {
        assert_eq!(get(port), (false, 0, 6, WSAECONNREFUSED));
    } else {
        assert_eq!(get_last_error(), WSAECONNREFUSED, "refused at once");
    }
    assert_eq!(closesocket(s), 0);
    assert!(close_handle(port));
}

#[test]
fn disconnect_ex_ends_sending() {
    for with_overlapped in [true, false] {
        let (s, mut peer) = pair();
        assert!(!disconnect_ex(s, None, 0x2, 0));
        assert_eq!(get_last_error(), WSAEINVAL);
        assert!(!disconnect_ex(s, None, 0, 1));
        if with_overlapped {
            let ov = WsaOverlapped::with_event(wsa_create_event());
            started(disconnect_ex(s, Some(&ov), 0, 0));
            assert_eq!(wait(s, &ov), (true, 0, 0));
        } else {
            assert!(disconnect_ex(s, None, 0, 0), "{}", get_last_error());
        }
        // S47: the peer reads the end; sends fail.
        let mut rest = Vec::new();
        assert_eq!(peer.read_to_end(&mut rest).unwrap(), 0);
        let mut sent = 0;
        let ret = wsa_send(s, &mut vec![vec![1]], &mut sent, 0, None, None);
        assert_eq!((ret, wsa_get_last_error()), (SOCKET_ERROR, WSAESHUTDOWN));
        assert_eq!(closesocket(s), 0);
    }
}

/// A file of `len` bytes, each its offset mod 251; removed when dropped.
struct TempFile(std::path::PathBuf, std::fs::File);

impl TempFile {
    fn new(name: &str, len: usize) -> TempFile {
        let path = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        TempFile(path, file)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn transmit_file_sends_head_file_and_tail() {
    let file = TempFile::new("overlapped-transmit-facade", 200_000);
    let expected = |offset: usize, len: usize| -> Vec<u8> {
        let mut v = b"HEAD".to_vec();
        v.extend((offset..offset + len).map(|i| (i % 251) as u8));
        v.extend_from_slice(b"TAIL!");
        v
    };
    // Overlapped, part of the file from an offset, through a port.
    let (s, mut peer) = pair();
    let port = create_io_completion_port(s, None, 10, 0).expect("a port");
    let ov = WsaOverlapped::new();
    let mut buffers = TransmitFileBuffers {
        head: b"HEAD".to_vec(),
        tail: b"TAIL!".to_vec(),
    };
    let ok = transmit_file(
        s,
        &file.1,
        150_000,
        0,
        1_000,
        Some(&ov),
        Some(&mut buffers),
        0,
    );
    started(ok);
    assert_eq!(
        buffers,
        TransmitFileBuffers::default(),
        "moved into the object"
    );
    let want = expected(1_000, 150_000);
    let mut got = vec![0; want.len()];
    peer.read_exact(&mut got).unwrap();
    assert!(got == want, "the peer got other bytes");
    assert_eq!(get(port), (true, want.len() as u32, 10, 0));
    assert_eq!(closesocket(s), 0);
    assert!(close_handle(port));

    // Blocking, to the end of the file: the buffers stay with the caller.
    let (s, mut peer) = pair();
    let mut buffers = TransmitFileBuffers {
        head: b"HEAD".to_vec(),
        tail: b"TAIL!".to_vec(),
    };
    assert!(transmit_file(
        s,
        &file.1,
        0,
        0,
        199_990,
        None,
        Some(&mut buffers),
        0
    ));
    assert_eq!(buffers.head, b"HEAD");
    assert_eq!(buffers.tail, b"TAIL!");
    let want = expected(199_990, 10);
    let mut got = vec![0; want.len()];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(got, want);
    assert!(!transmit_file(s, &file.1, 0, 0, 0, None, None, 0x1));
    assert_eq!(get_last_error(), WSAEINVAL);
    assert_eq!(closesocket(s), 0);
}
