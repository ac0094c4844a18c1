//! The facade's completion routines and alertable waits, on real loopback sockets.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::thread::{self, ThreadId};

use super::*;

fn any_addr() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A connected pair of TCP sockets: (client, server side).
fn tcp_pair() -> (SOCKET, SOCKET) {
    let l = socket(AF_INET, SOCK_STREAM, 0);
    assert_eq!(bind(l, &any_addr()), 0);
    assert_eq!(listen(l, 5), 0);
    let mut addr = any_addr();
    assert_eq!(getsockname(l, &mut addr), 0);
    let c = socket(AF_INET, SOCK_STREAM, 0);
    assert_eq!(connect(c, &addr), 0);
    let a = accept(l, None);
    assert_ne!(a, INVALID_SOCKET);
    assert_eq!(closesocket(l), 0);
    (c, a)
}

/// What a routine was called with, and on which thread.
#[derive(Debug, PartialEq)]
struct Call {
    error: u32,
    bytes: u32,
    flags: u32,
    data: Vec<u8>,
    from: Option<SocketAddr>,
    thread: ThreadId,
}

type Calls = Rc<RefCell<Vec<Call>>>;

/// A routine that records its call in `calls`, with the bytes its buffer holds.
fn recorder(calls: &Calls) -> WsaCompletionRoutine {
    let calls = calls.clone();
    Box::new(move |error, bytes, ov: WsaOverlapped, flags| {
        let mut data = ov.take_buffers().expect("the buffers come with the object");
        let mut data = data.pop().unwrap_or_default();
        data.truncate(bytes as usize);
        calls.borrow_mut().push(Call {
            error,
            bytes,
            flags,
            data,
            from: ov.completion(false).ok().and_then(|c| c.from),
            thread: thread::current().id(),
        });
    })
}

fn send_blocking(s: SOCKET, data: &[u8]) {
    let mut sent = 0;
    let r = wsa_send(s, &mut vec![data.to_vec()], &mut sent, 0, None, None);
    assert_eq!((r, sent as usize), (0, data.len()));
}

#[test]
fn a_pending_receive_runs_its_routine_only_in_an_alertable_wait() {
    let (c, a) = tcp_pair();
    let calls = Calls::default();
    let ev = wsa_create_event();
    let ov = WsaOverlapped::with_event(ev.clone());
    let mut bufs = vec![vec![0u8; 64]];
    let (mut recvd, mut flags) = (777, 0);
    let r = wsa_recv(
        a,
        &mut bufs,
        &mut recvd,
        &mut flags,
        Some(&ov),
        Some(recorder(&calls)),
    );
    assert_eq!((r, wsa_get_last_error()), (SOCKET_ERROR, WSA_IO_PENDING));
    assert_eq!(recvd, 777, "S2: untouched");
    assert!(bufs.is_empty(), "the buffers went to the operation");

    send_blocking(c, b"Network is Computer!");
    // S29: waits that are not alertable run no routine. S22: the event is never signalled.
    assert_eq!(sleep_ex(20, false), 0);
    assert_eq!(wait_for_single_object_ex(&ev, 20, false), WAIT_TIMEOUT);
    assert!(calls.borrow().is_empty());

    assert_eq!(sleep_ex(5000, true), WAIT_IO_COMPLETION);
    let expected = Call {
        error: 0,
        bytes: 20,
        flags: 0,
        data: b"Network is Computer!".to_vec(),
        from: None,
        thread: thread::current().id(),
    };
    assert_eq!(
        *calls.borrow(),
        [expected],
        "S26, S27: on the issuing thread"
    );
    assert!(!ev.is_set(), "S22");
    // S28: a routine runs once; the next alertable wait has nothing to run.
    assert_eq!(sleep_ex(0, true), 0);
    assert_eq!(calls.borrow().len(), 1);
    closesocket(c);
    closesocket(a);
}

#[test]
fn routines_run_in_order_also_for_calls_done_at_once() {
    let (c, a) = tcp_pair();
    send_blocking(c, b"waiting");
    let calls = Calls::default();
    let mut ends = Vec::new();
    for (i, data) in [b"one".to_vec(), b"two".to_vec()].into_iter().enumerate() {
        let mut sent = 0;
        let r = wsa_send(
            a,
            &mut vec![data],
            &mut sent,
            0,
            Some(&WsaOverlapped::new()),
            {
                let calls = calls.clone();
                Some(Box::new(move |error, bytes, _ov, _flags| {
                    calls.borrow_mut().push(Call {
                        error,
                        bytes,
                        flags: i as u32,
                        data: Vec::new(),
                        from: None,
                        thread: thread::current().id(),
                    })
                }))
            },
        );
        // S3: done at once (count written) or pending; either way the routine is queued (S30).
        match r {
            0 => assert_eq!(sent, 3),
            _ => assert_eq!(wsa_get_last_error(), WSA_IO_PENDING),
        }
        ends.push(r);
    }
    let (mut recvd, mut flags) = (0, 0);
    let r = wsa_recv(
        a,
        &mut vec![vec![0u8; 16]],
        &mut recvd,
        &mut flags,
        Some(&WsaOverlapped::new()),
        Some(recorder(&calls)),
    );
    match r {
        0 => assert_eq!(recvd, 7),
        _ => assert_eq!(wsa_get_last_error(), WSA_IO_PENDING),
    }
    assert!(calls.borrow().is_empty(), "nothing runs outside a wait");
    for _ in 0..3 {
        if calls.borrow().len() == 3 {
            break;
        }
        assert_eq!(sleep_ex(5000, true), WAIT_IO_COMPLETION);
    }
    let calls = calls.borrow();
    let got: Vec<(u32, u32, u32)> = calls.iter().map(|c| (c.error, c.bytes, c.flags)).collect();
    // The two sends finish in the order they were posted (one socket, one direction), so their
    // routines run in that order (S28); the receive's may come before, between or after.
    let sends: Vec<_> = got.iter().filter(|g| g.1 == 3).collect();
    assert_eq!(sends, [&(0, 3, 0), &(0, 3, 1)], "S28: FIFO");
    let recv = calls
        .iter()
        .find(|c| c.bytes == 7)
        .expect("the receive's routine ran");
    assert_eq!((recv.error, &recv.data[..]), (0, &b"waiting"[..]));
    closesocket(c);
    closesocket(a);
}

#[test]
fn a_signalled_event_wins_over_queued_routines() {
    let (c, a) = tcp_pair();
    let calls = Calls::default();
    let ev = wsa_create_event();
    assert_eq!(wait_for_single_object_ex(&ev, 0, true), WAIT_TIMEOUT);
    assert!(wsa_set_event(&ev));
    assert_eq!(wait_for_single_object_ex(&ev, 0, false), WAIT_OBJECT_0);
    assert_eq!(wait_for_single_object_ex(&ev, 0, true), WAIT_OBJECT_0);

    send_blocking(c, b"x");
    let (mut recvd, mut flags) = (0, 0);
    let ov = WsaOverlapped::new();
    let r = wsa_recv(
        a,
        &mut vec![vec![0u8; 4]],
        &mut recvd,
        &mut flags,
        Some(&ov),
        Some(recorder(&calls)),
    );
    assert!(r == 0 || wsa_get_last_error() == WSA_IO_PENDING);
    assert_eq!(wait_for_single_object_ex(&ev, 0, true), WAIT_OBJECT_0);
    assert!(
        calls.borrow().is_empty(),
        "the event won; the routine waits"
    );
    assert!(wsa_reset_event(&ev));
    // S28: the event is not set, yet the wait returns once the routine has run.
    assert_eq!(
        wait_for_single_object_ex(&ev, INFINITE, true),
        WAIT_IO_COMPLETION
    );
    assert_eq!(calls.borrow().len(), 1);
    assert_eq!(calls.borrow()[0].data, b"x");
    closesocket(c);
    closesocket(a);
}

#[test]
fn without_an_object_the_routine_is_ignored_and_failures_queue_nothing() {
    let (c, a) = tcp_pair();
    let calls = Calls::default();
    let mut bufs = vec![b"data".to_vec()];
    let mut sent = 0;
    // No overlapped object: the routine is ignored and the call blocks (S5).
    let r = wsa_send(c, &mut bufs, &mut sent, 0, None, Some(recorder(&calls)));
    assert_eq!((r, sent, bufs.len()), (0, 4, 1));
    // S13: an object still pending is refused; the buffers stay with the caller.
    let ov = WsaOverlapped::new();
    let (mut recvd, mut flags) = (0, 0);
    let mut into = vec![vec![0u8; 8]];
    let r = wsa_recv(
        c,
        &mut into,
        &mut recvd,
        &mut flags,
        Some(&ov),
        Some(recorder(&calls)),
    );
    assert_eq!((r, wsa_get_last_error()), (SOCKET_ERROR, WSA_IO_PENDING));
    let r = wsa_send(
        c,
        &mut bufs,
        &mut sent,
        0,
        Some(&ov),
        Some(recorder(&calls)),
    );
    assert_eq!((r, wsa_get_last_error()), (SOCKET_ERROR, WSAEINVAL));
    assert_eq!(bufs, [b"data".to_vec()]);
    // S4: calls that fail at once queue nothing, and give the buffers back.
    let mut none = Vec::new();
    let other = WsaOverlapped::new();
    let r = wsa_send(
        a,
        &mut none,
        &mut sent,
        0,
        Some(&other),
        Some(recorder(&calls)),
    );
    assert_eq!((r, wsa_get_last_error()), (SOCKET_ERROR, WSAEINVAL));
    let r = wsa_send(
        c,
        &mut bufs,
        &mut sent,
        0,
        Some(&other),
        Some(recorder(&calls)),
    );
    assert!(
        r == 0 || wsa_get_last_error() == WSA_IO_PENDING,
        "the object is free again after a failure"
    );
    sent = 99;
    let r = wsa_send(
        a,
        &mut vec![vec![7u8; 3]],
        &mut sent,
        0x4000_0000,
        Some(&WsaOverlapped::new()),
        Some(recorder(&calls)),
    );
    assert_eq!(r, SOCKET_ERROR);
    assert_ne!(wsa_get_last_error(), WSA_IO_PENDING);
    assert_eq!(sent, 99, "a failure leaves the count alone");
    // The one routine queued is the send's that succeeded; the pending receive's runs later.
    assert_eq!(sleep_ex(5000, true), WAIT_IO_COMPLETION);
    assert_eq!(calls.borrow().len(), 1);
    assert_eq!((calls.borrow()[0].error, calls.borrow()[0].bytes), (0, 4));
    assert_eq!(closesocket(c), 0);
    assert_eq!(sleep_ex(5000, true), WAIT_IO_COMPLETION);
    assert_eq!(
        calls.borrow()[1].error,
        WSAECONNABORTED,
        "S34: the close ended it"
    );
    assert_eq!(sleep_ex(0, true), 0);
    assert_eq!(calls.borrow().len(), 2);
    closesocket(a);
}

#[test]
fn a_routine_can_start_the_next_operation_with_its_object() {
    let (c, a) = tcp_pair();
    let calls = Calls::default();
    let mut bufs = vec![vec![0u8; 16]];
    let (mut recvd, mut flags) = (0, 0);
    let routine: WsaCompletionRoutine = {
        let calls = calls.clone();
        Box::new(move |error, bytes, ov: WsaOverlapped, _flags| {
            assert_eq!(error, 0);
            let mut echo = ov.take_buffers().unwrap();
            echo[0].truncate(bytes as usize);
            let mut sent = 0;
            // The same object goes on to the echo, whose routine runs in a later wait.
            let r = wsa_send(
                a,
                &mut echo,
                &mut sent,
                0,
                Some(&ov),
                Some(recorder(&calls)),
            );
            assert!(r == 0 || wsa_get_last_error() == WSA_IO_PENDING);
            // S29: routines never nest.
            assert_eq!(sleep_ex(0, true), 0);
        })
    };
    let r = wsa_recv(
        a,
        &mut bufs,
        &mut recvd,
        &mut flags,
        Some(&WsaOverlapped::new()),
        Some(routine),
    );
    assert_eq!((r, wsa_get_last_error()), (SOCKET_ERROR, WSA_IO_PENDING));
    send_blocking(c, b"echo me");
    for _ in 0..2 {
        if !calls.borrow().is_empty() {
            break;
        }
        assert_eq!(sleep_ex(5000, true), WAIT_IO_COMPLETION);
    }
    assert_eq!(calls.borrow().len(), 1, "the echo's routine ran");
    assert_eq!((calls.borrow()[0].error, calls.borrow()[0].bytes), (0, 7));
    let mut back = vec![vec![0u8; 16]];
    assert_eq!(
        wsa_recv(c, &mut back, &mut recvd, &mut flags, None, None),
        0
    );
    assert_eq!(&back[0][..recvd as usize], b"echo me");
    closesocket(c);
    closesocket(a);
}

#[test]
fn a_datagram_routine_finds_the_sender_in_its_object() {
    let udp = || {
        let s = wsa_socket(AF_INET, SOCK_DGRAM, IPPROTO_UDP, WSA_FLAG_OVERLAPPED);
        assert_eq!(bind(s, &any_addr()), 0);
        let mut addr = any_addr();
        assert_eq!(getsockname(s, &mut addr), 0);
        (s, addr)
    };
    let ((u1, addr1), (u2, addr2)) = (udp(), udp());
    let calls = Calls::default();
    let (mut recvd, mut flags) = (0, 0);
    let r = wsa_recv_from(
        u2,
        &mut vec![vec![0u8; 8]],
        &mut recvd,
        &mut flags,
        None,
        Some(&WsaOverlapped::new()),
        Some(recorder(&calls)),
    );
    assert_eq!((r, wsa_get_last_error()), (SOCKET_ERROR, WSA_IO_PENDING));
    let mut sent = 0;
    let r = wsa_send_to(
        u1,
        &mut vec![b"hi".to_vec()],
        &mut sent,
        0,
        &addr2,
        None,
        None,
    );
    assert_eq!((r, sent), (0, 2));
    let mut ran = 0;
    while calls.borrow().is_empty() && ran < 2 {
        assert_eq!(sleep_ex(5000, true), WAIT_IO_COMPLETION);
        ran += 1;
    }
    let calls = calls.borrow();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        (calls[0].error, calls[0].bytes, calls[0].from),
        (0, 2, Some(addr1))
    );
    assert_eq!(calls[0].data, b"hi");
    closesocket(u1);
    closesocket(u2);
}

#[test]
fn win32_wait_codes() {
    assert_eq!(
        (WAIT_OBJECT_0, WAIT_IO_COMPLETION, WAIT_TIMEOUT),
        (0, 0xC0, 0x102)
    );
    assert_eq!((INFINITE, WAIT_FAILED), (0xFFFF_FFFF, 0xFFFF_FFFF));
    assert_eq!(
        sleep_ex(0, true),
        0,
        "nothing queued: the sleep lasts its time"
    );
}
