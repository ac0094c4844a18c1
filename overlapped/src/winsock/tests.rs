//! The facade's Win32 conventions, on real loopback sockets.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use super::*;

const LOOPBACK: &str = "127.0.0.1:0";

fn any_addr() -> SocketAddr {
    LOOPBACK.parse().unwrap()
}

/// A listener on loopback and its address.
fn listener() -> (SOCKET, SocketAddr) {
    let l = wsa_socket(AF_INET, SOCK_STREAM, 0, WSA_FLAG_OVERLAPPED);
    assert_ne!(l, INVALID_SOCKET);
    assert_eq!(bind(l, &any_addr()), 0);
    assert_eq!(listen(l, 5), 0);
    let mut addr = any_addr();
    assert_eq!(getsockname(l, &mut addr), 0);
    (l, addr)
}

/// A connected pair of TCP sockets: (client, server side).
fn tcp_pair() -> (SOCKET, SOCKET) {
    let (l, addr) = listener();
    let c = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    assert_eq!(connect(c, &addr), 0);
    let mut peer = any_addr();
    let a = accept(l, Some(&mut peer));
    assert_ne!(a, INVALID_SOCKET);
    let mut local = any_addr();
    assert_eq!(getsockname(c, &mut local), 0);
    assert_eq!(peer, local);
    assert_eq!(closesocket(l), 0);
    (c, a)
}

fn udp_socket() -> (SOCKET, SocketAddr) {
    let s = wsa_socket(AF_INET, SOCK_DGRAM, IPPROTO_UDP, WSA_FLAG_OVERLAPPED);
    assert_ne!(s, INVALID_SOCKET);
    assert_eq!(bind(s, &any_addr()), 0);
    let mut addr = any_addr();
    assert_eq!(getsockname(s, &mut addr), 0);
    (s, addr)
}

/// Sends `data` with a blocking call (S5) and checks the count.
fn send_blocking(s: SOCKET, data: &[u8]) {
    let mut bufs = vec![data.to_vec()];
    let mut sent = 0;
    assert_eq!(wsa_send(s, &mut bufs, &mut sent, 0, None, None), 0);
    assert_eq!(sent as usize, data.len());
    assert_eq!(
        bufs,
        vec![data.to_vec()],
        "a blocking send keeps the buffers"
    );
}

#[test]
fn startup_and_cleanup_succeed() {
    let mut data = WsaData::default();
    assert_eq!(wsa_startup(make_word(2, 2), &mut data), 0);
    assert_eq!(data.version, 0x0202);
    assert_eq!(data.high_version, 0x0202);
    assert_eq!(wsa_startup(make_word(3, 0), &mut data), 0);
    assert_eq!(data.version, 0x0202, "capped at 2.2");
    assert_eq!(wsa_cleanup(), 0);
}

#[test]
fn win32_numeric_values() {
    assert_eq!(
        (SOCKET_ERROR, WSA_WAIT_EVENT_0, WSA_WAIT_TIMEOUT),
        (-1, 0, 0x102)
    );
    assert_eq!((WSA_WAIT_FAILED, WSA_INFINITE), (0xFFFF_FFFF, 0xFFFF_FFFF));
    assert_eq!(
        (WSA_WAIT_IO_COMPLETION, WSA_MAXIMUM_WAIT_EVENTS),
        (0xC0, 64)
    );
    assert_eq!((AF_INET, AF_INET6, SOCK_STREAM, SOCK_DGRAM), (2, 23, 1, 2));
    assert_eq!((IPPROTO_TCP, IPPROTO_UDP, WSA_FLAG_OVERLAPPED), (6, 17, 1));
    assert_eq!(
        (WSA_IO_PENDING, WSA_IO_INCOMPLETE, WSAENOTSOCK),
        (997, 996, 10038)
    );
    assert_eq!((MSG_PEEK, MSG_PARTIAL), (0x2, 0x8000));
}

#[test]
fn bad_socket_arguments_set_the_last_error() {
    let cases = [
        (99, SOCK_STREAM, 0, WSA_FLAG_OVERLAPPED, WSAEAFNOSUPPORT),
        (10, SOCK_STREAM, 0, WSA_FLAG_OVERLAPPED, WSAEAFNOSUPPORT), // Linux's AF_INET6
        (AF_INET, 3, 0, WSA_FLAG_OVERLAPPED, WSAESOCKTNOSUPPORT),
        (AF_INET, SOCK_STREAM, IPPROTO_UDP, 0, WSAEPROTONOSUPPORT),
        (AF_INET6, SOCK_DGRAM, IPPROTO_TCP, 0, WSAEPROTONOSUPPORT),
        (AF_INET, SOCK_STREAM, 0, 0x4000, WSAEINVAL),
    ];
    for (af, ty, protocol, flags, code) in cases {
        wsa_set_last_error(0);
        assert_eq!(wsa_socket(af, ty, protocol, flags), INVALID_SOCKET);
        assert_eq!(
            wsa_get_last_error(),
            code,
            "{af} {ty} {protocol} {flags:#x}"
        );
    }
    let s = wsa_socket(AF_INET6, SOCK_DGRAM, 0, 0);
    assert_ne!(s, INVALID_SOCKET, "flags 0 and protocol 0 are fine");
    assert_eq!(closesocket(s), 0);
}

#[test]
fn a_closed_or_unknown_handle_is_not_a_socket() {
    let s = socket(AF_INET, SOCK_STREAM, 0);
    assert_eq!(closesocket(s), 0);
    let mut addr = any_addr();
    let mut n = 5;
    let calls: [(&str, i32); 5] = [
        ("closesocket", closesocket(s)),
        ("bind", bind(s, &addr)),
        ("listen", listen(INVALID_SOCKET, 1)),
        ("getsockname", getsockname(s, &mut addr)),
        (
            "wsa_send",
            wsa_send(s, &mut vec![vec![1]], &mut n, 0, None, None),
        ),
    ];
    for (name, ret) in calls {
        assert_eq!(ret, SOCKET_ERROR, "{name}");
    }
    wsa_set_last_error(0);
    assert_eq!(accept(s, None), INVALID_SOCKET);
    assert_eq!(wsa_get_last_error(), WSAENOTSOCK);
    assert_eq!(n, 5);
}

#[test]
fn the_last_error_belongs_to_the_thread() {
    wsa_set_last_error(0);
    let other = thread::spawn(|| {
        assert_eq!(closesocket(INVALID_SOCKET), SOCKET_ERROR);
        wsa_get_last_error()
    });
    assert_eq!(other.join().unwrap(), WSAENOTSOCK);
    assert_eq!(wsa_get_last_error(), 0);
}

#[test]
fn pending_receive_leaves_count_and_flags_then_reports_them() {
    let (c, a) = tcp_pair();
    let ev = wsa_create_event();
    let ov = WsaOverlapped::with_event(ev.clone());
    let mut bufs = vec![vec![0u8; 4], vec![0u8; 16]];
    let (mut recvd, mut flags) = (777u32, MSG_PUSH_IMMEDIATE);
    assert_eq!(
        wsa_recv(a, &mut bufs, &mut recvd, &mut flags, Some(&ov), None),
        SOCKET_ERROR
    );
    assert_eq!(wsa_get_last_error(), WSA_IO_PENDING);
    assert_eq!((recvd, flags), (777, MSG_PUSH_IMMEDIATE), "S2: untouched");
    assert!(
        bufs.is_empty(),
        "the buffers moved into the overlapped object"
    );
    assert!(!ev.is_set(), "S21: starting reset the event");

    // S16: not waiting on a pending operation.
    let (mut got, mut got_flags) = (555u32, 0x77u32);
    assert!(!wsa_get_overlapped_result(
        a,
        &ov,
        &mut got,
        false,
        &mut got_flags
    ));
    assert_eq!(wsa_get_last_error(), WSA_IO_INCOMPLETE);
    assert_eq!((got, got_flags), (555, 0x77));

    // S13: a second operation on the same object is refused, buffers left with the caller.
    let mut more = vec![vec![0u8; 8]];
    assert_eq!(
        wsa_recv(a, &mut more, &mut recvd, &mut flags, Some(&ov), None),
        SOCKET_ERROR
    );
    assert_eq!(wsa_get_last_error(), WSAEINVAL);
    assert_eq!(more.len(), 1);

    send_blocking(c, b"deadbeefs");
    let r = wsa_wait_for_multiple_events(&[&ev], true, 5000, false);
    assert_eq!(r, WSA_WAIT_EVENT_0);
    assert!(wsa_get_overlapped_result(
        a,
        &ov,
        &mut got,
        true,
        &mut got_flags
    ));
    assert_eq!((got, got_flags), (9, 0), "S19: flags from the completion");
    let bufs = ov.take_buffers().unwrap();
    assert_eq!(bufs[0], b"dead");
    assert_eq!(&bufs[1][..5], b"beefs", "S6: filled in order");
    assert!(wsa_close_event(ev));
    assert_eq!(closesocket(c), 0);
    assert_eq!(closesocket(a), 0);
}

#[test]
fn a_send_done_at_once_writes_the_count_and_signals() {
    let (c, a) = tcp_pair();
    let ev = wsa_create_event();
    assert!(wsa_set_event(&ev));
    let ov = WsaOverlapped::with_event(ev.clone());
    let mut bufs = vec![b"Network is Computer!\0".to_vec()];
    let mut sent = 0;
    // A small send into an empty socket buffer completes at once; pending is legal too (S3).
    match wsa_send(c, &mut bufs, &mut sent, 0, Some(&ov), None) {
        0 => assert_eq!(sent, 21),
        r => {
            assert_eq!(
                (r, wsa_get_last_error(), sent),
                (SOCKET_ERROR, WSA_IO_PENDING, 0)
            );
        }
    }
    assert_eq!(wsa_wait_for_multiple_events(&[&ev], false, 5000, false), 0);
    let (mut n, mut flags) = (0, 0);
    assert!(wsa_get_overlapped_result(c, &ov, &mut n, false, &mut flags));
    assert_eq!(n, 21);
    assert_eq!(ov.take_buffers().unwrap()[0].len(), 21);

    let mut into = vec![vec![0u8; 64]];
    let (mut recvd, mut rflags) = (0, 0);
    assert_eq!(
        wsa_recv(a, &mut into, &mut recvd, &mut rflags, None, None),
        0
    );
    assert_eq!(&into[0][..recvd as usize], b"Network is Computer!\0");
    assert!(wsa_reset_event(&ev));
    assert!(!ev.is_set());
    closesocket(c);
    closesocket(a);
}

#[test]
fn no_overlapped_object_blocks_until_data_arrives() {
    let (c, a) = tcp_pair();
    let sender = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        send_blocking(c, b"late");
        c
    });
    let mut bufs = vec![vec![0u8; 16]];
    let (mut recvd, mut flags) = (0, 0);
    let start = Instant::now();
    assert_eq!(
        wsa_recv(a, &mut bufs, &mut recvd, &mut flags, None, None),
        0
    );
    assert!(
        start.elapsed() >= Duration::from_millis(40),
        "S5: it waited"
    );
    assert_eq!(&bufs[0][..recvd as usize], b"late");
    let c = sender.join().unwrap();
    // S10: a graceful close reads 0 bytes.
    assert_eq!(shutdown(c, SD_SEND), 0);
    assert_eq!(
        wsa_recv(a, &mut bufs, &mut recvd, &mut flags, None, None),
        0
    );
    assert_eq!(recvd, 0);
    assert_eq!(shutdown(c, 7), SOCKET_ERROR);
    assert_eq!(wsa_get_last_error(), WSAEINVAL);
    closesocket(c);
    closesocket(a);
}

#[test]
fn empty_buffer_list_is_invalid() {
    let (c, a) = tcp_pair();
    let ov = WsaOverlapped::new();
    let mut sent = 3;
    assert_eq!(
        wsa_send(c, &mut Vec::new(), &mut sent, 0, Some(&ov), None),
        SOCKET_ERROR
    );
    assert_eq!(wsa_get_last_error(), WSAEINVAL);
    assert_eq!(sent, 3);
    closesocket(c);
    closesocket(a);
}

#[test]
fn closing_aborts_a_pending_receive() {
    let (c, a) = tcp_pair();
    let ev = wsa_create_event();
    let ov = WsaOverlapped::with_event(ev.clone());
    let (mut recvd, mut flags) = (0, 0);
    let r = wsa_recv(
        a,
        &mut vec![vec![0; 8]],
        &mut recvd,
        &mut flags,
        Some(&ov),
        None,
    );
    assert_eq!((r, wsa_get_last_error()), (SOCKET_ERROR, WSA_IO_PENDING));
    assert_eq!(closesocket(a), 0);
    assert_eq!(wsa_wait_for_multiple_events(&[ev], false, 5000, false), 0);
    // The handle is gone (WSAENOTSOCK); the object still holds the result (S34).
    assert!(!wsa_get_overlapped_result(
        a, &ov, &mut recvd, false, &mut flags
    ));
    assert_eq!(wsa_get_last_error(), WSAENOTSOCK);
    let done = ov.completion(false).unwrap();
    assert_eq!(done.error.map(|e| e.code()), Some(WSAECONNABORTED));
    closesocket(c);
}

#[test]
fn datagrams_carry_the_sender_and_truncation() {
    let (u1, addr1) = udp_socket();
    let (u2, addr2) = udp_socket();
    let mut sent = 0;
    let r = wsa_send_to(
        u1,
        &mut vec![b"0123456789".to_vec()],
        &mut sent,
        0,
        &addr2,
        None,
        None,
    );
    assert_eq!((r, sent), (0, 10));

    // S12: a datagram larger than the buffers.
    let mut bufs = vec![vec![0u8; 4]];
    let (mut recvd, mut flags, mut from) = (0, 0, any_addr());
    let r = wsa_recv_from(
        u2,
        &mut bufs,
        &mut recvd,
        &mut flags,
        Some(&mut from),
        None,
        None,
    );
    assert_eq!((r, wsa_get_last_error()), (SOCKET_ERROR, WSAEMSGSIZE));
    assert_eq!(
        (recvd, flags, bufs[0].as_slice()),
        (4, MSG_PARTIAL, &b"0123"[..])
    );

    // A pending receive-from: the sender comes with the completion.
    let ev = wsa_create_event();
    let ov = WsaOverlapped::with_event(ev.clone());
    let mut bufs = vec![vec![0u8; 32]];
    flags = 0;
    let r = wsa_recv_from(u2, &mut bufs, &mut recvd, &mut flags, None, Some(&ov), None);
    assert_eq!((r, wsa_get_last_error()), (SOCKET_ERROR, WSA_IO_PENDING));
    let r = wsa_send_to(
        u1,
        &mut vec![b"hi".to_vec()],
        &mut sent,
        0,
        &addr2,
        None,
        None,
    );
    assert_eq!(r, 0);
    assert_eq!(wsa_wait_for_multiple_events(&[ev], false, 5000, true), 0);
    assert!(wsa_get_overlapped_result(
        u2, &ov, &mut recvd, false, &mut flags
    ));
    assert_eq!(recvd, 2);
    assert_eq!(ov.completion(false).unwrap().from, Some(addr1));
    closesocket(u1);
    closesocket(u2);
}

#[test]
fn waits_keep_the_64_event_cap() {
    let events: Vec<WsaEvent> = (0..65).map(|_| wsa_create_event()).collect();
    wsa_set_last_error(0);
    assert_eq!(
        wsa_wait_for_multiple_events(&events[..0], false, 0, false),
        WSA_WAIT_FAILED
    );
    assert_eq!(wsa_get_last_error(), WSA_INVALID_PARAMETER);
    wsa_set_last_error(0);
    assert_eq!(
        wsa_wait_for_multiple_events(&events, false, 0, false),
        WSA_WAIT_FAILED
    );
    assert_eq!(wsa_get_last_error(), WSA_INVALID_PARAMETER);

    let max = &events[..WSA_MAXIMUM_WAIT_EVENTS];
    assert_eq!(
        wsa_wait_for_multiple_events(max, false, 0, false),
        WSA_WAIT_TIMEOUT
    );
    wsa_set_event(&max[63]);
    assert_eq!(
        wsa_wait_for_multiple_events(max, false, 0, false),
        WSA_WAIT_EVENT_0 + 63
    );
    wsa_set_event(&max[10]);
    assert_eq!(
        wsa_wait_for_multiple_events(max, false, 0, false),
        10,
        "lowest index"
    );
    assert_eq!(
        wsa_wait_for_multiple_events(max, true, 0, false),
        WSA_WAIT_TIMEOUT
    );
    max.iter().for_each(|e| {
        wsa_set_event(e);
    });
    assert_eq!(
        wsa_wait_for_multiple_events(max, true, 0, false),
        WSA_WAIT_EVENT_0
    );

    let dup = [events[0].clone(), events[0].clone()];
    assert_eq!(
        wsa_wait_for_multiple_events(&dup, true, 0, false),
        WSA_WAIT_FAILED
    );
    assert_eq!(wsa_get_last_error(), WSA_INVALID_PARAMETER);
}

#[test]
fn a_timed_wait_times_out_and_another_thread_can_set() {
    let ev = wsa_create_event();
    let start = Instant::now();
    assert_eq!(
        wsa_wait_for_multiple_events(&[&ev], false, 30, true),
        WSA_WAIT_TIMEOUT
    );
    assert!(start.elapsed() >= Duration::from_millis(25));
    let setter = {
        let ev = ev.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            wsa_set_event(&ev)
        })
    };
    let r = wsa_wait_for_multiple_events(&[&ev], false, WSA_INFINITE, false);
    assert_eq!(r, WSA_WAIT_EVENT_0);
    assert!(setter.join().unwrap());
    // Manual reset: still signalled (S23).
    assert_eq!(
        wsa_wait_for_multiple_events(&[ev], false, 0, false),
        WSA_WAIT_EVENT_0
    );
}

#[test]
fn closesocket_on_another_thread_ends_a_blocking_receive() {
    let (c, a) = tcp_pair();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut bufs = vec![vec![0u8; 8]];
        let (mut recvd, mut flags) = (0, 0);
        let r = wsa_recv(a, &mut bufs, &mut recvd, &mut flags, None, None);
        tx.send((r, wsa_get_last_error(), bufs.len())).unwrap();
    });
    thread::sleep(Duration::from_millis(50));
    assert!(rx.try_recv().is_err(), "S5: the receive blocks");
    assert_eq!(closesocket(a), 0);
    let got = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the receive ended");
    assert_eq!(
        got,
        (SOCKET_ERROR, WSAECONNABORTED, 1),
        "S34, buffers handed back"
    );
    closesocket(c);
}

#[test]
fn a_truncated_datagram_at_once_reports_the_bytes_that_fit() {
    let (u1, _) = udp_socket();
    let (u2, addr2) = udp_socket();
    let mut sent = 0;
    let r = wsa_send_to(
        u1,
        &mut vec![b"abcdefgh".to_vec()],
        &mut sent,
        0,
        &addr2,
        None,
        None,
    );
    assert_eq!(r, 0);
    let ov = WsaOverlapped::with_event(wsa_create_event());
    let (mut recvd, mut flags) = (0, 0);
    let r = wsa_recv_from(
        u2,
        &mut vec![vec![0; 3]],
        &mut recvd,
        &mut flags,
        None,
        Some(&ov),
        None,
    );
    if r == SOCKET_ERROR && wsa_get_last_error() == WSA_IO_PENDING {
        assert!(!wsa_get_overlapped_result(
            u2, &ov, &mut recvd, true, &mut flags
        ));
    }
    // S12, at once or later: WSAEMSGSIZE, the bytes that fit, MSG_PARTIAL.
    assert_eq!(wsa_get_last_error(), WSAEMSGSIZE);
    assert_eq!((recvd, flags), (3, MSG_PARTIAL));
    assert_eq!(ov.take_buffers().unwrap(), vec![b"abc".to_vec()]);
    closesocket(u1);
    closesocket(u2);
}
