//! SPEC S39–S43: completion ports — FIFO packets, LIFO wakes, the concurrency value, get-many,
//! closing, alertable gets, many threads draining and posting.

#[macro_use]
mod common;
mod ports;

use std::cell::Cell;
use std::collections::HashSet;
use std::net::Shutdown;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use overlapped::{codes, Overlapped, PortWait, Started};
use ports::*;

/// S39: packets come out in the order they were queued.
#[test]
fn s39_packets_come_out_fifo() {
    on_every_backend!(|| {
        let port = new_port(1);
        for i in 0..1000 {
            port.post(i, i % 7, None).unwrap();
        }
        for i in 0..1000 {
            let p = next(&port);
            assert_eq!((p.bytes, p.key), (i, i % 7));
        }
        assert_no_packet(&port);
    });
}

/// S39: waiting threads are woken LIFO, the most recent waiter first.
#[test]
fn s39_waiters_are_woken_lifo() {
    on_every_backend!(|| {
        const N: usize = 4;
        let port = new_port(N);
        let (tx, rx) = mpsc::channel();
        let waiters = {
            let port = port.clone();
            let tx = Mutex::new(tx);
            waiters_in_order(&port.clone(), N, move |id| {
                let p = port.get(Some(TIMEOUT)).expect("a packet");
                tx.lock().unwrap().send((id, p.bytes)).unwrap();
            })
        };
        let mut order = Vec::new();
        for k in 0..N {
            port.post(k, 0, None).unwrap();
            let (id, bytes) = rx.recv_timeout(TIMEOUT).expect("a waiter took the packet");
            assert_eq!(bytes, k);
            order.push(id);
        }
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(order, [3, 2, 1, 0], "waiters woken in this order");
    });
}

/// S39: eight threads draining one port of concurrency 2 never have more than two running
/// (between a get that returned and the next get).
#[test]
fn s39_no_more_than_concurrency_threads_run() {
    on_every_backend!(|| {
        const THREADS: usize = 8;
        const PACKETS: usize = 2000;
        let port = new_port(2);
        let running = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                let (port, running, max, done) =
                    (port.clone(), running.clone(), max.clone(), done.clone());
                thread::spawn(move || {
                    for _ in 0..=PACKETS {
                        if until_closed(port.get(Some(TIMEOUT))).is_none() {
                            return;
                        }
                        let now = running.fetch_add(1, SeqCst) + 1;
                        max.fetch_max(now, SeqCst);
                        thread::sleep(Duration::from_micros(100));
                        done.fetch_add(1, SeqCst);
                        running.fetch_sub(1, SeqCst);
                    }
                    panic!("more packets than were posted");
                })
            })
            .collect();
        for i in 0..PACKETS {
            port.post(i, 0, None).unwrap();
        }
        eventually("every packet taken", || done.load(SeqCst) == PACKETS);
        port.close(); // wakes the workers to stop (S41)
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(done.load(SeqCst), PACKETS);
        assert_eq!(
            max.load(SeqCst),
            2,
            "at most 2 run, and the port lets 2 run"
        );
    });
}

/// S39: with concurrency 1, a packet queued while a thread runs waits; when that thread stops
/// running (here: exits), the waiting thread gets it.
#[test]
fn s39_waiter_gets_the_packet_once_the_running_thread_stops() {
    on_every_backend!(|| {
        let port = new_port(1);
        let (took_tx, took_rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let runner = {
            let (port, stop) = (port.clone(), stop.clone());
            thread::spawn(move || {
                let p = port.get(Some(TIMEOUT)).expect("the first packet");
                took_tx.send(p.bytes).unwrap();
                // Running (not blocked) until told to stop.
                let deadline = Instant::now() + TIMEOUT;
                while !stop.load(SeqCst) && Instant::now() < deadline {
                    thread::yield_now();
                }
            })
        };
        port.post(1, 0, None).unwrap();
        assert_eq!(took_rx.recv_timeout(TIMEOUT), Ok(1));

        let (got_tx, got_rx) = mpsc::channel();
        let waiter = waiters_in_order(&port, 1, {
            let port = port.clone();
            let got_tx = Mutex::new(got_tx);
            move |_| {
                let p = port.get(Some(2 * TIMEOUT));
                // The test may have given up on this thread already.
                let _ = got_tx.lock().unwrap().send(p.map(|p| p.bytes));
            }
        });
        port.post(2, 0, None).unwrap();
        settle_time();
        assert!(
            got_rx.try_recv().is_err(),
            "a second thread ran while one was running at concurrency 1"
        );
        stop.store(true, SeqCst);
        runner.join().unwrap();
        let got = got_rx
            .recv_timeout(TIMEOUT)
            .expect("the packet stayed queued after the running thread exited, its waiter asleep");
        assert_eq!(got, Ok(2));
        waiter.into_iter().for_each(|w| w.join().unwrap());
    });
}

/// S40: get-many into the caller's list appends up to N packets, in order, after what the list
/// holds, and reports how many it took.
#[test]
fn s40_get_many_into_appends_up_to_n_in_fifo_order() {
    on_every_backend!(|| {
        let port = new_port(1);
        for i in 0..6 {
            port.post(i, 100 + i, None).unwrap();
        }
        let mut packets = Vec::with_capacity(8);
        assert_eq!(port.get_many_into(&mut packets, 4, Some(TIMEOUT)), Ok(4));
        assert_eq!(port.get_many_into(&mut packets, 4, Some(TIMEOUT)), Ok(2));
        let bytes: Vec<usize> = packets.iter().map(|p| p.bytes).collect();
        assert_eq!(bytes, [0, 1, 2, 3, 4, 5], "appended, in the order posted");
        assert!(packets.iter().all(|p| p.key == 100 + p.bytes));
        let err = port
            .get_many_into(&mut packets, 4, Some(Duration::from_millis(30)))
            .unwrap_err();
        assert_eq!(err.code(), codes::WAIT_TIMEOUT);
        assert_eq!(packets.len(), 6, "a get that timed out adds nothing");
    });
}

/// S40: get-many takes up to N packets at once, in order.
#[test]
fn s40_get_many_takes_up_to_n_in_fifo_order() {
    on_every_backend!(|| {
        let port = new_port(1);
        let (sock, mut peer) = tcp_pair_std();
        port.associate(&sock, 9).unwrap();
        for i in 0..10 {
            port.post(i, 100 + i, None).unwrap();
        }
        let first = port.get_many(4, Some(TIMEOUT)).unwrap();
        let bytes: Vec<usize> = first.iter().map(|p| p.bytes).collect();
        assert_eq!(bytes, [0, 1, 2, 3]);
        assert!(first.iter().all(|p| p.key == 100 + p.bytes));
        let rest = port.get_many(100, Some(TIMEOUT)).unwrap();
        let bytes: Vec<usize> = rest.iter().map(|p| p.bytes).collect();
        assert_eq!(bytes, [4, 5, 6, 7, 8, 9]);
        let err = port
            .get_many(4, Some(Duration::from_millis(30)))
            .unwrap_err();
        assert_eq!(err.code(), codes::WAIT_TIMEOUT);

        // A completion that comes after a post comes out after it.
        let ov = tagged();
        assert_eq!(sock.recv(&ov, vec![vec![0; 8]], 0), Ok(Started::Pending));
        port.post(1, 1, None).unwrap();
        write_all(&mut peer, b"mid");
        let mut all = Vec::new();
        for _ in 0..3 {
            if all.len() == 2 {
                break;
            }
            all.extend(port.get_many(8, Some(TIMEOUT)).unwrap());
        }
        let keys: Vec<usize> = all.iter().map(|p| p.key).collect();
        assert_eq!(keys, [1, 9], "the post came first, then the receive");
    });
}

/// S41: closing a port wakes every waiter with ERROR_ABANDONED_WAIT_0 (735); later calls fail
/// the same way.
#[test]
fn s41_close_wakes_every_waiter_with_abandoned_wait() {
    on_every_backend!(|| {
        let port = new_port(4);
        let waiters = {
            let port = port.clone();
            waiters_in_order(&port.clone(), 3, move |id| match id {
                0 => port.get(Some(TIMEOUT)).map(drop),
                1 => port.get_many(4, Some(TIMEOUT)).map(drop),
                _ => port.get_ex(4, Some(TIMEOUT), true).map(drop),
            })
        };
        port.clone().close();
        for (id, w) in waiters.into_iter().enumerate() {
            let err = w.join().unwrap().unwrap_err();
            assert_eq!(err.code(), 735, "waiter {id}: {err}");
            assert_eq!(err.code(), codes::ERROR_ABANDONED_WAIT_0);
        }
        let err = port.post(1, 1, None).unwrap_err();
        assert_eq!(err.code(), codes::ERROR_ABANDONED_WAIT_0);
        let err = port.get(Some(TIMEOUT)).unwrap_err();
        assert_eq!(err.code(), codes::ERROR_ABANDONED_WAIT_0);
    });
}

/// S42: an alertable get with no packet runs the thread's queued routine and returns
/// WAIT_IO_COMPLETION; a non-alertable get runs none.
#[test]
fn s42_alertable_get_runs_routine_and_returns_io_completion() {
    on_every_backend!(|| {
        let port = new_port(1);
        let (sock, mut peer) = tcp_pair_std();
        let ran = Rc::new(Cell::new(0));
        write_all(&mut peer, b"apc");
        let routine = {
            let ran = ran.clone();
            move |error: Option<overlapped::Error>, bytes: usize, ov: Overlapped, _flags: u32| {
                assert_eq!((error, bytes), (None, 3));
                assert_eq!(received(&ov, bytes), b"apc");
                ran.set(ran.get() + 1);
            }
        };
        let _ = sock
            .recv_with_routine(Overlapped::new(), vec![vec![0; 8]], 0, routine)
            .unwrap();
        let err = port.get(Some(Duration::from_millis(30))).unwrap_err();
        assert_eq!(err.code(), codes::WAIT_TIMEOUT);
        assert_eq!(ran.get(), 0, "a non-alertable get runs no routine");
        match port.get_ex(4, Some(TIMEOUT), true).unwrap() {
            PortWait::IoCompletion => {}
            PortWait::Packets(p) => panic!("packets from an empty port: {p:?}"),
        }
        assert_eq!(ran.get(), 1);
        let err = port
            .get_ex(4, Some(Duration::from_millis(30)), true)
            .unwrap_err();
        assert_eq!(err.code(), codes::WAIT_TIMEOUT);
    });
}

/// S42: with a packet available and a routine queued, the packet wins; the routine runs in the
/// next alertable get.
#[test]
fn s42_packet_wins_over_queued_routine() {
    on_every_backend!(|| {
        let port = new_port(1);
        let (sock, mut peer) = tcp_pair_std();
        let ran = Rc::new(Cell::new(0));
        let routine = {
            let ran = ran.clone();
            move |error: Option<overlapped::Error>, bytes: usize, _: Overlapped, _: u32| {
                assert_eq!((error, bytes), (None, 1));
                ran.set(ran.get() + 1);
            }
        };
        let _ = sock
            .send_with_routine(Overlapped::new(), vec![b"x".to_vec()], 0, routine)
            .unwrap();
        port.post(7, 8, None).unwrap();
        port.post(9, 10, None).unwrap();
        match port.get_ex(4, Some(TIMEOUT), true).unwrap() {
            PortWait::Packets(p) => {
                let got: Vec<_> = p.iter().map(|p| (p.bytes, p.key)).collect();
                assert_eq!(got, [(7, 8), (9, 10)]);
            }
            PortWait::IoCompletion => panic!("the routine ran though packets were there"),
        }
        assert_eq!(ran.get(), 0, "the packets won; no routine ran");
        match port.get_ex(4, Some(TIMEOUT), true).unwrap() {
            PortWait::IoCompletion => {}
            PortWait::Packets(p) => panic!("unexpected packets {p:?}"),
        }
        assert_eq!(ran.get(), 1);
        assert_eq!(read_exact(&mut peer, 1), b"x");
    });
}

/// S43: many threads drain one port while other threads (and the drainers) post to it: every
/// packet comes out exactly once, and each drainer sees each poster's packets in order.
#[test]
fn s43_many_threads_drain_and_any_thread_posts() {
    on_every_backend!(|| {
        const POSTERS: usize = 4;
        const PER: usize = 500;
        const DRAINERS: usize = 4;
        const RELAY: usize = 1000;
        let relays = POSTERS * PER / 100;
        let port = new_port(0);
        let taken = Arc::new(AtomicUsize::new(0));
        let drainers: Vec<_> = (0..DRAINERS)
            .map(|d| {
                let (port, taken) = (port.clone(), taken.clone());
                thread::spawn(move || {
                    let mut mine = Vec::new();
                    for _ in 0..=POSTERS * PER + relays {
                        let packets = match d {
                            0 => until_closed(port.get_many(8, Some(TIMEOUT))),
                            _ => until_closed(port.get(Some(TIMEOUT))).map(|p| vec![p]),
                        };
                        let Some(packets) = packets else {
                            return mine;
                        };
                        for p in packets {
                            if p.key < POSTERS && p.bytes % 100 == 0 {
                                port.post(p.key * PER + p.bytes, RELAY, None).unwrap();
                            }
                            mine.push((p.key, p.bytes));
                            taken.fetch_add(1, SeqCst);
                        }
                    }
                    panic!("more packets than were posted");
                })
            })
            .collect();
        let posters: Vec<_> = (0..POSTERS)
            .map(|key| {
                let port = port.clone();
                thread::spawn(move || (0..PER).for_each(|i| port.post(i, key, None).unwrap()))
            })
            .collect();
        posters.into_iter().for_each(|p| p.join().unwrap());
        eventually("every packet taken", || {
            taken.load(SeqCst) == POSTERS * PER + relays
        });
        port.close();
        let mut all = HashSet::new();
        for d in drainers {
            let mine = d.join().unwrap();
            for key in 0..POSTERS {
                let seq: Vec<usize> = mine.iter().filter(|p| p.0 == key).map(|p| p.1).collect();
                assert!(
                    seq.windows(2).all(|w| w[0] < w[1]),
                    "poster {key} out of order"
                );
            }
            for p in mine {
                assert!(all.insert(p), "packet {p:?} came out twice");
            }
        }
        assert_eq!(all.len(), POSTERS * PER + relays);
        let relayed = all.iter().filter(|p| p.0 == RELAY).count();
        assert_eq!(relayed, relays);
        assert_eq!(taken.load(SeqCst), POSTERS * PER + relays);
    });
}

/// S43: worker threads serve the receives of several connections through one port, each
/// re-arming the receive of the packet it took; every byte arrives once, in order.
#[test]
fn s43_workers_serve_many_connections() {
    on_every_backend!(|| {
        const CONNS: usize = 4;
        const BYTES: usize = 200_000;
        const WORKERS: usize = 3;
        let port = new_port(2);
        let mut socks = Vec::new();
        let mut writers = Vec::new();
        for key in 0..CONNS {
            let (sock, mut peer) = tcp_pair_std();
            port.associate(&sock, key).unwrap();
            let ov: Overlapped = Overlapped::new();
            assert_eq!(sock.recv(&ov, vec![vec![0; 1000]], 0), Ok(Started::Pending));
            socks.push(sock);
            writers.push(thread::spawn(move || {
                let data: Vec<u8> = (0..BYTES).map(|i| pattern(i + key)).collect();
                for chunk in data.chunks(3000) {
                    write_all(&mut peer, chunk);
                }
                peer.shutdown(Shutdown::Write).unwrap();
            }));
        }
        let socks = Arc::new(socks);
        let data: Arc<Vec<Mutex<Vec<u8>>>> =
            Arc::new((0..CONNS).map(|_| Mutex::default()).collect());
        let ended = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                let (port, socks, data, ended) =
                    (port.clone(), socks.clone(), data.clone(), ended.clone());
                thread::spawn(move || {
                    for _ in 0..=CONNS * (BYTES + 1) {
                        let Some(p) = until_closed(port.get(Some(TIMEOUT))) else {
                            return;
                        };
                        assert!(p.error.is_none(), "{p:?}");
                        let ov = p.overlapped.expect("the receive's object");
                        if p.bytes == 0 {
                            ended.fetch_add(1, SeqCst);
                            continue;
                        }
                        data[p.key].lock().unwrap().extend(received(&ov, p.bytes));
                        let _ = socks[p.key].recv(&ov, vec![vec![0; 1000]], 0).unwrap();
                    }
                    panic!("more packets than bytes");
                })
            })
            .collect();
        writers.into_iter().for_each(|w| w.join().unwrap());
        eventually("every connection ended", || ended.load(SeqCst) == CONNS);
        port.close();
        workers.into_iter().for_each(|w| w.join().unwrap());
        for key in 0..CONNS {
            let got = data[key].lock().unwrap();
            assert_eq!(got.len(), BYTES, "connection {key}");
            assert!(got.iter().enumerate().all(|(i, &b)| b == pattern(i + key)));
        }
    });
}
