//! Completion ports and the extension functions through the facade, on real loopback sockets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use super::*;

/// A bound on every wait of these tests: it ends a hang, it measures nothing.
const WAIT_MS: u32 = 20_000;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn new_port(concurrency: u32) -> HANDLE {
    let port = create_io_completion_port(INVALID_HANDLE_VALUE, None, 0, concurrency);
    port.expect("CreateIoCompletionPort")
}

fn stream_socket() -> SOCKET {
    let s = wsa_socket(AF_INET, SOCK_STREAM, 0, WSA_FLAG_OVERLAPPED);
    assert_ne!(s, INVALID_SOCKET);
    s
}

/// A facade socket connected to a `std` peer: (socket, peer).
fn pair() -> (SOCKET, TcpStream) {
    let listener = TcpListener::bind(loopback()).unwrap();
    let s = stream_socket();
    assert_eq!(connect(s, &listener.local_addr().unwrap()), 0);
    let (peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(Duration::from_millis(WAIT_MS.into())))
        .unwrap();
    (s, peer)
}

/// One packet, bounded: (ok, bytes, key, overlapped, last error if not ok).
fn get(port: HANDLE) -> (bool, u32, usize, Option<WsaOverlapped>, u32) {
    let (mut bytes, mut key, mut ov) = (0, 0, None);
    wsa_set_last_error(0);
    let ok = get_queued_completion_status(port, &mut bytes, &mut key, &mut ov, WAIT_MS);
    let error = if ok { 0 } else { get_last_error() };
    assert_ne!(error, WAIT_TIMEOUT, "no packet within the bound");
    (ok, bytes, key, ov, error)
}

/// Starts an overlapped receive of up to `len` bytes; it must not fail at once.
fn start_recv(s: SOCKET, ov: &WsaOverlapped, len: usize) {
    let (mut n, mut flags) = (0, 0);
    let ret = wsa_recv(
        s,
        &mut vec![vec![0; len]],
        &mut n,
        &mut flags,
        Some(ov),
        None,
    );
    assert!(ret == 0 || wsa_get_last_error() == WSA_IO_PENDING);
}

#[test]
fn win32_numeric_values() {
    assert_eq!(INVALID_HANDLE_VALUE, usize::MAX);
    assert_eq!((ERROR_INVALID_HANDLE, ERROR_INVALID_PARAMETER), (6, 87));
    assert_eq!((ERROR_IO_PENDING, ERROR_OPERATION_ABORTED), (997, 995));
    assert_eq!(
        (ERROR_ABANDONED_WAIT_0, ERROR_NOT_FOUND, WAIT_TIMEOUT),
        (735, 1168, 258)
    );
    assert_eq!(
        (
            FILE_SKIP_COMPLETION_PORT_ON_SUCCESS,
            FILE_SKIP_SET_EVENT_ON_HANDLE
        ),
        (1, 2)
    );
}

#[test]
fn a_posted_packet_comes_out_as_posted() {
    let port = new_port(0);
    let event = wsa_create_event();
    let ov = WsaOverlapped::with_event(event.clone());
    // S38, and a key that needs every bit of a pointer.
    assert!(post_queued_completion_status(
        port,
        7,
        usize::MAX - 1,
        Some(&ov)
    ));
    assert!(post_queued_completion_status(port, 0, 3, None));
    let (ok, bytes, key, got, _) = get(port);
    assert!(ok);
    assert_eq!((bytes, key), (7, usize::MAX - 1));
    // The same object: its event is the one posted.
    got.expect("the posted overlapped object")
        .event()
        .unwrap()
        .set();
    assert_eq!(wait_for_single_object_ex(&event, 0, false), WAIT_OBJECT_0);
    let (ok, bytes, key, got, _) = get(port);
    assert!(ok && got.is_none());
    assert_eq!((bytes, key), (0, 3));
    assert!(close_handle(port));
}

#[test]
fn a_timeout_returns_no_packet_and_leaves_the_outputs() {
    let port = new_port(1);
    let (mut bytes, mut key, mut ov) = (5, 9, Some(WsaOverlapped::new()));
    assert!(!get_queued_completion_status(
        port, &mut bytes, &mut key, &mut ov, 0
    ));
    assert_eq!(get_last_error(), WAIT_TIMEOUT);
    assert!(ov.is_none());
    assert_eq!((bytes, key), (5, 9));
    assert!(close_handle(port));
}

#[test]
fn an_associated_socket_posts_its_completions_with_its_key() {
    let port = new_port(0);
    let (s, mut peer) = pair();
    let key = usize::MAX;
    assert_eq!(create_io_completion_port(s, Some(port), key, 0), Some(port));
    let ov = WsaOverlapped::new();
    start_recv(s, &ov, 64);
    peer.write_all(b"through the port").unwrap();
    let (ok, bytes, got_key, got, _) = get(port);
    assert!(ok);
    assert_eq!((bytes, got_key), (16, key));
    let bufs = got.expect("the receive's object").take_buffers().unwrap();
    assert_eq!(&bufs[0][..16], b"through the port");
    // The send's packet too (S3: also when it completed at once).
    let mut sent = 0;
    let ret = wsa_send(
        s,
        &mut vec![b"back".to_vec()],
        &mut sent,
        0,
        Some(&ov),
        None,
    );
    assert!(ret == 0 || wsa_get_last_error() == WSA_IO_PENDING);
    let (ok, bytes, got_key, _, _) = get(port);
    assert!(ok && bytes == 4 && got_key == key);
    let mut back = [0; 4];
    peer.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"back");
    assert_eq!(closesocket(s), 0);
    assert!(close_handle(port));
}

#[test]
fn a_failed_operation_is_false_with_its_overlapped_and_error() {
    let port = new_port(0);
    let (s, peer) = pair();
    assert_eq!(create_io_completion_port(s, Some(port), 11, 0), Some(port));
    let ov = WsaOverlapped::new();
    start_recv(s, &ov, 16);
    // The peer resets the connection.
    crate::Socket::from(peer)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    let (ok, bytes, key, got, error) = get(port);
    assert!(!ok);
    assert_eq!((bytes, key, error), (0, 11, WSAECONNRESET));
    assert!(
        got.is_some(),
        "S37: the failed operation's object comes back"
    );
    assert_eq!(closesocket(s), 0);
    assert!(close_handle(port));
}

#[test]
fn closesocket_completes_a_pending_receive_with_connaborted() {
    let port = new_port(0);
    let (s, _peer) = pair();
    assert_eq!(create_io_completion_port(s, Some(port), 12, 0), Some(port));
    let ov = WsaOverlapped::new();
    start_recv(s, &ov, 16);
    assert_eq!(closesocket(s), 0);
    // S34: exactly one packet, failed with WSAECONNABORTED.
    let (ok, _, key, got, error) = get(port);
    assert!(!ok && got.is_some());
    assert_eq!((key, error), (12, WSAECONNABORTED));
    let (mut bytes, mut key, mut none) = (0, 0, None);
    assert!(!get_queued_completion_status(
        port, &mut bytes, &mut key, &mut none, 0
    ));
    assert_eq!(get_last_error(), WAIT_TIMEOUT);
    assert!(close_handle(port));
}

#[test]
fn closing_the_port_wakes_its_waiters() {
    // A waiter that comes after the close finds no port (ERROR_INVALID_HANDLE, as on Windows);
    // one already waiting wakes with ERROR_ABANDONED_WAIT_0 (S41). The waiter says when it is
    // about to wait and the close comes a moment later; a waiter that was late is tried again,
    // a bounded number of times.
    let mut woken = false;
    for _ in 0..50 {
        let port = new_port(0);
        let (ready, about_to_wait) = std::sync::mpsc::channel();
        let waiter = thread::spawn(move || {
            let (mut bytes, mut key, mut ov) = (0, 0, Some(WsaOverlapped::new()));
            ready.send(()).unwrap();
            let ok = get_queued_completion_status(port, &mut bytes, &mut key, &mut ov, INFINITE);
            (ok, ov.is_none(), get_last_error())
        });
        about_to_wait.recv().unwrap();
        thread::sleep(Duration::from_millis(20));
        assert!(close_handle(port));
        let (ok, no_overlapped, error) = waiter.join().unwrap();
        assert!(!ok && no_overlapped);
        assert!(
            error == ERROR_ABANDONED_WAIT_0 || error == ERROR_INVALID_HANDLE,
            "{error}"
        );
        assert!(!close_handle(port));
        assert_eq!(get_last_error(), ERROR_INVALID_HANDLE);
        assert!(!post_queued_completion_status(port, 0, 0, None));
        assert_eq!(get_last_error(), ERROR_INVALID_HANDLE);
        if error == ERROR_ABANDONED_WAIT_0 {
            woken = true;
            break;
        }
    }
    assert!(
        woken,
        "no waiter was ever inside the get when the port closed"
    );
}

#[test]
fn handles_of_the_wrong_kind_are_refused() {
    let port = new_port(0);
    let (s, _peer) = pair();
    let (mut bytes, mut key, mut ov) = (0, 0, None);
    // A socket is not a port, a port is not a socket, INVALID_HANDLE_VALUE goes with no port.
    assert!(!get_queued_completion_status(
        s, &mut bytes, &mut key, &mut ov, 0
    ));
    assert_eq!(get_last_error(), ERROR_INVALID_HANDLE);
    assert!(!close_handle(s));
    assert_eq!(create_io_completion_port(port, Some(port), 1, 0), None);
    assert_eq!(get_last_error(), ERROR_INVALID_HANDLE);
    assert_eq!(closesocket(port), SOCKET_ERROR);
    assert_eq!(wsa_get_last_error(), WSAENOTSOCK);
    let none = create_io_completion_port(INVALID_HANDLE_VALUE, Some(port), 0, 0);
    assert_eq!(none, None);
    assert_eq!(get_last_error(), ERROR_INVALID_PARAMETER);
    // A socket is associated once.
    assert_eq!(create_io_completion_port(s, Some(port), 1, 0), Some(port));
    assert_eq!(create_io_completion_port(s, Some(port), 2, 0), None);
    assert_eq!(get_last_error(), ERROR_INVALID_PARAMETER);
    assert_eq!(closesocket(s), 0);
    assert!(close_handle(port));
}

#[test]
fn a_socket_with_no_port_gets_a_new_one() {
    let (s, mut peer) = pair();
    let port = create_io_completion_port(s, None, 21, 1).expect("a new port");
    let ov = WsaOverlapped::new();
    start_recv(s, &ov, 8);
    peer.write_all(b"x").unwrap();
    let (ok, bytes, key, _, _) = get(port);
    assert_eq!((ok, bytes, key), (true, 1, 21));
    assert_eq!(closesocket(s), 0);
    assert!(close_handle(port));
}

#[test]
fn the_ex_get_takes_several_packets_in_order() {
    let port = new_port(0);
    for key in 1..=3 {
        assert!(post_queued_completion_status(
            port,
            key as u32 * 10,
            key,
            None
        ));
    }
    let mut entries = vec![OverlappedEntry::default(); 2];
    let mut removed = 9;
    assert!(get_queued_completion_status_ex(
        port,
        &mut entries,
        &mut removed,
        WAIT_MS,
        false
    ));
    assert_eq!(removed, 2);
    let got: Vec<(usize, u32, u32)> = entries
        .iter()
        .map(|e| (e.completion_key, e.number_of_bytes_transferred, e.internal))
        .collect();
    assert_eq!(got, [(1, 10, 0), (2, 20, 0)]);
    assert!(get_queued_completion_status_ex(
        port,
        &mut entries,
        &mut removed,
        WAIT_MS,
        false
    ));
    assert_eq!((removed, entries[0].completion_key), (1, 3));
    assert!(!get_queued_completion_status_ex(
        port,
        &mut entries,
        &mut removed,
        0,
        false
    ));
    assert_eq!((removed, get_last_error()), (0, WAIT_TIMEOUT));
    assert!(!get_queued_completion_status_ex(
        port,
        &mut [],
        &mut removed,
        0,
        false
    ));
    assert_eq!(get_last_error(), ERROR_INVALID_PARAMETER);
    assert!(close_handle(port));
}

#[test]
fn the_ex_get_reports_a_failed_operation_in_its_entry() {
    let port = new_port(0);
    let (s, _peer) = pair();
    assert_eq!(create_io_completion_port(s, Some(port), 4, 0), Some(port));
    let ov = WsaOverlapped::new();
    start_recv(s, &ov, 8);
    assert!(cancel_io_ex(s, Some(&ov)));
    let mut entries = vec![OverlappedEntry::default(); 4];
    let mut removed = 0;
    assert!(get_queued_completion_status_ex(
        port,
        &mut entries,
        &mut removed,
        WAIT_MS,
        false
    ));
    assert_eq!(removed, 1);
    assert_eq!(entries[0].completion_key, 4);
    // Nothing was sent, so the receive cannot win the race with its cancel.
    assert_eq!(entries[0].internal, WSA_OPERATION_ABORTED);
    assert!(entries[0].overlapped.is_some());
    assert_eq!(closesocket(s), 0);
    assert!(close_handle(port));
}

#[test]
fn an_alertable_ex_get_runs_routines_when_no_packet_is_there() {
    let port = new_port(0);
    let (s, mut peer) = pair();
    let ran = std::rc::Rc::new(std::cell::Cell::new(false));
    let flag = ran.clone();
    let routine: WsaCompletionRoutine = Box::new(move |error, bytes, _, _| {
        assert_eq!((error, bytes), (0, 2));
        flag.set(true);
    });
    let (mut n, mut flags, ov) = (0, 0, WsaOverlapped::new());
    let ret = wsa_recv(
        s,
        &mut vec![vec![0; 8]],
        &mut n,
        &mut flags,
        Some(&ov),
        Some(routine),
    );
    assert!(ret == 0 || wsa_get_last_error() == WSA_IO_PENDING);
    peer.write_all(b"hi").unwrap();
    let mut entries = vec![OverlappedEntry::default(); 1];
    let mut removed = 5;
    // S42: no packet, a routine: it runs and the get says WAIT_IO_COMPLETION.
    assert!(!get_queued_completion_status_ex(
        port,
        &mut entries,
        &mut removed,
        WAIT_MS,
        true
    ));
    assert_eq!((get_last_error(), removed), (WAIT_IO_COMPLETION, 0));
    assert!(ran.get());
    assert_eq!(closesocket(s), 0);
    assert!(close_handle(port));
}

#[test]
fn many_threads_drain_one_port() {
    const THREADS: usize = 4;
    const PACKETS: usize = 400;
    let port = new_port(0);
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            thread::spawn(move || {
                let mut keys = Vec::new();
                loop {
                    let (mut bytes, mut key, mut ov) = (0, 0, None);
                    if !get_queued_completion_status(port, &mut bytes, &mut key, &mut ov, WAIT_MS) {
                        assert_eq!(get_last_error(), ERROR_ABANDONED_WAIT_0);
                        return keys;
                    }
                    if key == usize::MAX {
                        return keys; // one stop packet per worker
                    }
                    keys.push(key);
                }
            })
        })
        .collect();
    // S43: any thread may post.
    let posters: Vec<_> = (0..2)
        .map(|half| {
            thread::spawn(move || {
                for key in (half..PACKETS).step_by(2) {
                    assert!(post_queued_completion_status(port, 1, key, None));
                }
            })
        })
        .collect();
    for poster in posters {
        poster.join().unwrap();
    }
    for _ in 0..THREADS {
        assert!(post_queued_completion_status(port, 0, usize::MAX, None));
    }
    let mut all: Vec<usize> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..PACKETS).collect::<Vec<_>>(),
        "each packet exactly once"
    );
    assert!(close_handle(port));
}

#[test]
fn skip_on_success_posts_only_pending_operations() {
    let port = new_port(0);
    let (s, mut peer) = pair();
    assert_eq!(create_io_completion_port(s, Some(port), 5, 0), Some(port));
    assert!(!set_file_completion_notification_modes(s, 0x4));
    assert_eq!(get_last_error(), ERROR_INVALID_PARAMETER);
    assert!(set_file_completion_notification_modes(
        s,
        FILE_SKIP_COMPLETION_PORT_ON_SUCCESS
    ));
    // A small send on an idle connection is done at once: no packet (S44). The marker posted
    // after it is the first packet.
    let ov = WsaOverlapped::new();
    let mut sent = 0;
    let ret = wsa_send(s, &mut vec![b"now".to_vec()], &mut sent, 0, Some(&ov), None);
    assert_eq!((ret, sent), (0, 3), "done at once");
    assert!(post_queued_completion_status(port, 0, 99, None));
    let (ok, _, key, _, _) = get(port);
    assert!(ok && key == 99, "the send posted a packet (key {key})");
    // A pending receive still posts.
    start_recv(s, &ov, 8);
    peer.write_all(b"later").unwrap();
    let (ok, bytes, key, _, _) = get(port);
    assert_eq!((ok, bytes, key), (true, 5, 5));
    assert!(!set_file_completion_notification_modes(INVALID_SOCKET, 1));
    assert_eq!(get_last_error(), ERROR_INVALID_HANDLE);
    assert_eq!(closesocket(s), 0);
    assert!(close_handle(port));
}
