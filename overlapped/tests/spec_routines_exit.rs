//! SPEC S31: a thread that exits with operations pending. Their routines never run, and their
//! buffers are released only once the kernel has let go of them: none leaks, none is written
//! after it was freed.
//!
//! The buffers are counted ([`Live`]); each is witnessed by an event the exiting thread sets as
//! its last act, so a buffer freed while its thread still ran counts as freed early. A freed
//! buffer is poisoned and kept: data sent to the socket afterwards would show up in it if the
//! kernel still held the receive.

#[macro_use]
mod common;

use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

use common::*;
use overlapped::{Error, Event, Overlapped, Socket, Started};

/// Counts the routines that ran.
fn counting(ran: &Arc<AtomicUsize>) -> impl FnOnce(Option<Error>, usize, Overlapped<Counted>, u32) {
    let ran = ran.clone();
    move |_, _, _, _| {
        ran.fetch_add(1, Ordering::SeqCst);
    }
}

/// Receives with an event, on this thread: the socket's next bytes, up to `len`.
fn recv_here(sock: &Socket, len: usize) -> Vec<u8> {
    let ov: Overlapped = ov_with_event();
    let started = sock.recv(&ov, vec![vec![0; len]], 0).unwrap();
    let bytes = settle(&ov, started).bytes;
    received(&ov, bytes)
}

/// Sends `data` from the peer, then checks that this thread receives exactly it: the receives
/// of the exited thread took nothing.
fn data_still_arrives(sock: &Socket, peer: &mut TcpStream, data: &[u8]) {
    write_all(peer, data);
    let mut got = Vec::new();
    for _ in 0..data.len() {
        if got.len() >= data.len() {
            break;
        }
        got.extend(recv_here(sock, data.len() - got.len()));
    }
    assert_eq!(got, data);
}

/// S31: a thread exits with a receive pending and a send done at once whose routine it never
/// waited for: neither routine runs, the buffers are freed after the thread's end, and the
/// socket's later data is not written into them.
#[test]
fn s31_thread_exit_cancels_pending_receive_and_drops_routines_unrun() {
    static LIVE: Live = Live::new();
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let sock = thread::spawn(move || {
            let exiting = Event::new();
            let bufs = vec![
                LIVE.buf_witnessed(8, &exiting),
                LIVE.buf_witnessed(8, &exiting),
            ];
            let started = sock.recv_with_routine(Overlapped::new(), bufs, 0, counting(&r));
            assert_eq!(started.unwrap(), Started::Pending);
            let data = LIVE.buf_holding(b"sent".to_vec(), &exiting);
            let started = sock.send_with_routine(Overlapped::new(), vec![data], 0, counting(&r));
            assert_eq!(started.unwrap(), Started::Done(4));
            assert_eq!(LIVE.live(), 3, "the operations hold their buffers");
            exiting.set();
            sock
        })
        .join()
        .unwrap();
        LIVE.assert_all_released_safely();
        assert_eq!(read_exact(&mut peer, 4), b"sent");
        data_still_arrives(&sock, &mut peer, b"after the thread");
        settle_time();
        LIVE.assert_no_write_after_free();
        assert_eq!(ran.load(Ordering::SeqCst), 0, "no routine ran");
        assert_eq!(LIVE.created(), 3);
    });
}

/// S31: two receives of the exiting thread on one socket, the second queued behind the first:
/// both are cancelled, neither takes data, and their buffers are released safely.
#[test]
fn s31_thread_exit_with_a_receive_queued_behind_its_own() {
    static LIVE: Live = Live::new();
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let sock = thread::spawn(move || {
            let exiting = Event::new();
            for _ in 0..2 {
                let bufs = vec![LIVE.buf_witnessed(16, &exiting)];
                let started = sock.recv_with_routine(Overlapped::new(), bufs, 0, counting(&r));
                assert_eq!(started.unwrap(), Started::Pending);
            }
            exiting.set();
            sock
        })
        .join()
        .unwrap();
        LIVE.assert_all_released_safely();
        data_still_arrives(&sock, &mut peer, b"first");
        data_still_arrives(&sock, &mut peer, b"second");
        settle_time();
        LIVE.assert_no_write_after_free();
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    });
}

/// S31: the exiting thread's receive is queued behind another thread's pending receive on the
/// same socket. Its buffers are released while that receive is still pending, and the data
/// that follows goes to the live thread's receives, in order.
#[test]
fn s31_thread_exit_with_a_receive_queued_behind_another_threads() {
    static LIVE: Live = Live::new();
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        let sock = Arc::new(sock);
        let first = ov_with_event();
        assert_eq!(
            sock.recv(&first, vec![LIVE.buf(5)], 0),
            Ok(Started::Pending)
        );
        let ran = Arc::new(AtomicUsize::new(0));
        let (r, s) = (ran.clone(), sock.clone());
        thread::spawn(move || {
            let exiting = Event::new();
            let bufs = vec![LIVE.buf_witnessed(16, &exiting)];
            let started = s.recv_with_routine(Overlapped::new(), bufs, 0, counting(&r));
            assert_eq!(started.unwrap(), Started::Pending, "queued behind");
            exiting.set();
        })
        .join()
        .unwrap();
        eventually("the exited thread's buffer is freed", || LIVE.live() == 1);
        assert_eq!(LIVE.freed_early(), 0);
        assert!(first.is_pending(), "the live thread's receive is unharmed");

        write_all(&mut peer, b"first");
        wait_event(&first);
        assert_eq!(wait_done(&first).bytes, 5);
        assert_eq!(first.take_buffers().unwrap()[0].bytes(), b"first");
        data_still_arrives(&sock, &mut peer, b"second");
        drop(first);
        LIVE.assert_all_released_safely();
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    });
}

/// S31: a thread exits while the peer sends: whether its receive took the data or was
/// cancelled first, its routine never runs, its buffer is freed once, after the kernel is done,
/// and nothing is written into it after that.
#[test]
fn s31_thread_exit_racing_with_arriving_data() {
    static LIVE: Live = Live::new();
    on_every_backend!(|| {
        let ran = Arc::new(AtomicUsize::new(0));
        for round in 0..40 {
            let (sock, mut peer) = tcp_pair_std();
            let (started_tx, started_rx) = mpsc::channel();
            let r = ran.clone();
            let exiting_thread = thread::spawn(move || {
                let exiting = Event::new();
                let bufs = vec![LIVE.buf_witnessed(32, &exiting)];
                let started = sock.recv_with_routine(Overlapped::new(), bufs, 0, counting(&r));
                assert_eq!(started.unwrap(), Started::Pending);
                started_tx.send(()).unwrap();
                if round % 2 == 0 {
                    thread::yield_now();
                }
                exiting.set();
                sock
            });
            started_rx.recv().unwrap();
            write_all(&mut peer, &[round as u8; 32]);
            let sock = exiting_thread.join().unwrap();
            eventually("the buffer is freed", || LIVE.live() == 0);
            write_all(&mut peer, &[0xEE; 32]);
            drop(sock);
            drop(peer);
        }
        settle_time();
        LIVE.assert_all_released_safely();
        assert_eq!(LIVE.created(), 40);
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    });
}

/// S31: a thread exits with a large send pending (the peer is not reading): its routine never
/// runs, its buffer is freed once the kernel let go, and what reaches the peer is a prefix of
/// the data, never bytes of a freed buffer.
#[test]
fn s31_thread_exit_with_a_send_pending() {
    static LIVE: Live = Live::new();
    const SIZE: usize = 16 << 20;
    on_every_backend!(|| {
        let (sock, mut peer) = tcp_pair_std();
        sock.set_send_buffer_size(64 << 10).unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let sock = thread::spawn(move || {
            let exiting = Event::new();
            let data = LIVE.buf_holding((0..SIZE).map(pattern).collect(), &exiting);
            let started = sock.send_with_routine(Overlapped::new(), vec![data], 0, counting(&r));
            assert_eq!(
                started.unwrap(),
                Started::Pending,
                "the peer is not reading"
            );
            exiting.set();
            sock
        })
        .join()
        .unwrap();
        LIVE.assert_all_released_safely();
        drop(sock);
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut peer, &mut got).expect("read to the end");
        assert!(got.len() < SIZE, "the send was cancelled part way");
        let first_wrong = got.iter().enumerate().position(|(i, b)| *b != pattern(i));
        assert_eq!(first_wrong, None, "the peer got a prefix of the data");
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    });
}
