//! A port with a batch window (`CompletionPort::with_batch_window`): its ring belongs to the
//! first thread that waits on it, and everything a port promises still holds around that owner —
//! packets from operations started on any thread, packets posted by any thread, packets taken
//! by threads that do not own the ring, and an idle wait that sleeps. On the epoll backend (and
//! on kernels without batched waits) the constructor says `WSAEOPNOTSUPP`.

#[macro_use]
mod common;
mod ports;

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::*;
use overlapped::{
    backend_info, codes, BackendKind, CompletionPort, Overlapped, PooledBuf, Started,
};
use ports::*;

const WINDOW: Duration = Duration::from_micros(50);

/// Whether the kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let mut number = || {
        parts
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0)
    };
    (number(), number()) >= (major, minor)
}

/// A batching port where the backend can make one; `None` after checking the error where it
/// cannot (epoll; io_uring before Linux 6.12).
fn batching_port<B: Send + 'static>(concurrency: usize) -> Option<CompletionPort<B>> {
    let made = CompletionPort::with_batch_window(concurrency, WINDOW);
    let supported = backend_info().unwrap().kind == BackendKind::IoUring && kernel_at_least(6, 12);
    match made {
        Ok(port) => {
            assert!(supported, "a batch window where the backend cannot batch");
            Some(port)
        }
        Err(e) => {
            assert!(!supported, "no batch window on io_uring 6.12+: {e}");
            assert_eq!(e.code(), codes::WSAEOPNOTSUPP, "{e}");
            None
        }
    }
}

/// Voluntary context switches of the calling thread so far.
fn thread_sleeps() -> i64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) },
        0
    );
    usage.ru_nvcsw
}

/// The owner's receives, sends and their packets work as on any port, round after round.
#[test]
fn batching_port_echoes_through_its_owner() {
    on_every_backend!(|| {
        let Some(port) = batching_port(1) else { return };
        let (sock, mut peer) = tcp_pair_std();
        port.associate(&sock, 7).unwrap();
        for round in 0..50u8 {
            let ov = tagged();
            assert_eq!(sock.recv(&ov, vec![vec![0; 8]], 0), Ok(Started::Pending));
            write_all(&mut peer, &[round; 5]);
            let p = next(&port);
            assert_eq!((p.key, p.result()), (7, Ok(5)), "round {round}");
            let ov = packet_object(&p, &ov);
            assert_eq!(received(&ov, 5), vec![round; 5]);
            let echo = tagged();
            match sock.send(&echo, vec![vec![round; 5]], 0) {
                Ok(Started::Done(5)) | Ok(Started::Pending) => {}
                other => panic!("send: {other:?}"),
            }
            assert_eq!(next(&port).result(), Ok(5));
            assert_eq!(read_exact(&mut peer, 5), vec![round; 5]);
        }
    });
}

/// Another thread's operation on an associated socket, started while the owner waits in the
/// kernel with no deadline, reaches the owner: the thread cannot enter the ring, so it wakes
/// the owner to hand the request over.
#[test]
fn batching_port_takes_operations_started_by_other_threads() {
    on_every_backend!(|| {
        let Some(port) = batching_port(1) else { return };
        let (sock, mut peer) = tcp_pair_std();
        port.associate(&sock, 3).unwrap();
        let (claimed_tx, claimed) = mpsc::channel();
        let owner = {
            let port = port.clone();
            thread::spawn(move || {
                // The first wait claims the ring; the second has no deadline.
                assert_no_packet(&port);
                claimed_tx.send(()).unwrap();
                port.get(None).map(|p| (p.key, p.result()))
            })
        };
        claimed.recv_timeout(TIMEOUT).unwrap();
        settle_time(); // the owner is back in the kernel, most likely
        let ov = tagged();
        assert_eq!(sock.recv(&ov, vec![vec![0; 8]], 0), Ok(Started::Pending));
        write_all(&mut peer, b"abc");
        assert_eq!(owner.join().unwrap(), Ok((3, Ok(3))));
        assert_eq!(received(&ov, 3), b"abc");
    });
}

/// A packet posted by another thread wakes the owner from a wait with no deadline (S38).
#[test]
fn batching_port_owner_wakes_for_posted_packets() {
    on_every_backend!(|| {
        let Some(port) = batching_port::<Vec<u8>>(1) else {
            return;
        };
        let owner = {
            let port = port.clone();
            thread::spawn(move || port.get(None).map(|p| (p.key, p.bytes)))
        };
        settle_time();
        port.post(9, 42, None).unwrap();
        assert_eq!(owner.join().unwrap(), Ok((42, 9)));
    });
}

/// A thread that does not own the ring still takes packets: it sleeps on the port instead of
/// waiting in the kernel, and the packets the owner's ring produces or others post reach it.
#[test]
fn batching_port_threads_other_than_the_owner_take_packets() {
    on_every_backend!(|| {
        let Some(port) = batching_port(2) else { return };
        // This thread waits first and owns the ring from then on.
        assert_no_packet(&port);
        let (sock, mut peer) = tcp_pair_std();
        port.associate(&sock, 5).unwrap();
        let (tx, rx) = mpsc::channel();
        let other = {
            let port = port.clone();
            thread::spawn(move || {
                for _ in 0..2 {
                    let got = port.get(Some(TIMEOUT)).map(|p| (p.key, p.result()));
                    tx.send(got).unwrap();
                }
            })
        };
        settle_time();
        port.post(1, 77, None).unwrap();
        assert_eq!(rx.recv_timeout(TIMEOUT).unwrap(), Ok((77, Ok(1))));
        // An operation's packet comes out of the ring only when the owner reaps it; the owner
        // then leaves it for the thread that sleeps on the port, running nothing itself.
        let ov: Overlapped = tagged();
        assert_eq!(sock.recv(&ov, vec![vec![0; 4]], 0), Ok(Started::Pending));
        write_all(&mut peer, b"hi");
        let mut got = None;
        for _ in 0..250 {
            if let Ok(from_other) = rx.try_recv() {
                got = Some(from_other);
                break;
            }
            // Reaps the ring (this thread owns it); the packet goes to the sleeper if it is
            // asleep by then, else to this thread.
            if let Ok(p) = port.get(Some(Duration::from_millis(20))) {
                got = Some(Ok((p.key, p.result())));
                break;
            }
        }
        assert_eq!(got, Some(Ok((5, Ok(2)))), "the receive's packet");
        port.post(0, 0, None).unwrap(); // lets the other thread finish if it took none
        other.join().unwrap();
    });
}

/// An idle owner sleeps in the kernel for its whole wait, with a deadline or without: the
/// window does not end a wait that has nothing to gather (a kernel wait with a window and no
/// deadline would end with the window).
#[test]
fn batching_port_idle_wait_sleeps() {
    on_every_backend!(|| {
        let Some(port) = batching_port(1) else { return };
        let owner = {
            let port = port.clone();
            thread::spawn(move || {
                assert_no_packet(&port); // claims the ring
                let before = thread_sleeps();
                let err = port.get(Some(Duration::from_millis(300))).unwrap_err();
                assert_eq!(err.code(), codes::WAIT_TIMEOUT);
                let timed = thread_sleeps() - before;
                let before = thread_sleeps();
                let p = port.get(None).unwrap();
                (timed, thread_sleeps() - before, p.key)
            })
        };
        thread::sleep(Duration::from_millis(600));
        port.post(0, 1, None).unwrap();
        let (timed, untimed, key) = owner.join().unwrap();
        assert_eq!(key, 1);
        // 300 ms in windows of 50 µs would be thousands of wake-ups.
        assert!(
            timed < 50,
            "{timed} wake-ups in an idle wait with a deadline"
        );
        assert!(
            untimed < 50,
            "{untimed} wake-ups in an idle wait without one"
        );
    });
}

/// Once the owner has exited, nobody can enter the ring: a get that would wait in it, and an
/// operation that would go to it, fail with `ERROR_ABANDONED_WAIT_0` instead of waiting for
/// completions that cannot come. Posted packets still come out.
#[test]
fn batching_port_whose_owner_exited_says_so() {
    on_every_backend!(|| {
        let Some(port) = batching_port(1) else { return };
        let owner = {
            let port = port.clone();
            thread::spawn(move || assert_no_packet(&port)) // claims the ring, then exits
        };
        owner.join().unwrap();
        port.post(4, 8, None).unwrap();
        assert_eq!(next(&port).key, 8);
        let err = port.get(Some(TIMEOUT)).unwrap_err();
        assert_eq!(err.code(), codes::ERROR_ABANDONED_WAIT_0, "{err}");

        let (sock, _peer) = tcp_pair_std();
        port.associate(&sock, 1).unwrap();
        let err = sock.recv(&tagged(), vec![vec![0; 4]], 0).unwrap_err();
        assert_eq!(err.code(), codes::ERROR_ABANDONED_WAIT_0, "{err}");
    });
}

/// Requests queued before any thread has waited on the port (receives posted, say, before the
/// workers start) wait in the ring for its first owner: a few hundred of them do not block the
/// thread that starts them, and each one's packet comes once a worker waits.
#[test]
fn batching_port_keeps_requests_made_before_its_owner() {
    on_every_backend!(|| {
        const SOCKETS: usize = 300;
        let Some(port) = batching_port(1) else { return };
        let pairs: Vec<_> = (0..SOCKETS).map(|_| tcp_pair_std()).collect();
        let (started_tx, started) = mpsc::channel();
        let starter = {
            let port = port.clone();
            thread::spawn(move || {
                let mut pending = Vec::new();
                for (key, (sock, peer)) in pairs.into_iter().enumerate() {
                    port.associate(&sock, key).unwrap();
                    let ov = tagged();
                    assert_eq!(sock.recv(&ov, vec![vec![0; 4]], 0), Ok(Started::Pending));
                    pending.push((sock, peer, ov));
                }
                started_tx.send(()).unwrap();
                pending
            })
        };
        started
            .recv_timeout(TIMEOUT)
            .expect("starting the receives blocked without an owner");
        let mut pending = starter.join().unwrap();
        for (_, peer, _) in &mut pending {
            write_all(peer, b"ping");
        }
        let mut keys: Vec<usize> = (0..SOCKETS)
            .map(|_| {
                let p = next(&port);
                assert_eq!(p.result(), Ok(4));
                p.key
            })
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, (0..SOCKETS).collect::<Vec<_>>());
    });
}

/// A pool made before the port's first wait serves pooled receives through the owner; after
/// that only the owner may make one (its ring takes registrations from it alone), and pools
/// dropped on other threads are let go of by the owner.
#[test]
fn batching_port_takes_pools_made_before_its_first_wait_or_by_its_owner() {
    on_every_backend!(|| {
        let Some(port) = batching_port::<PooledBuf>(1) else {
            return;
        };
        let pool = port.buffer_pool(4, 16).unwrap();
        let (sock, mut peer) = tcp_pair_std();
        port.associate(&sock, 7).unwrap();
        for round in 0..20u8 {
            let ov: Overlapped<PooledBuf> = Overlapped::new();
            assert_eq!(
                sock.recv_pooled(&ov, Vec::new(), &pool, 0),
                Ok(Started::Pending)
            );
            write_all(&mut peer, &[round; 5]);
            let p = port.get(Some(TIMEOUT)).unwrap();
            assert_eq!((p.key, p.result()), (7, Ok(5)), "round {round}");
            let bufs = ov.take_buffers().unwrap();
            assert_eq!(&bufs[0][..], &[round; 5], "round {round}");
        }
        // The worker above owns the ring now: another thread may not make a pool...
        let port = std::sync::Arc::new(port);
        let elsewhere = {
            let port = port.clone();
            thread::spawn(move || port.buffer_pool(4, 16).map(drop))
                .join()
                .unwrap()
        };
        assert_eq!(elsewhere.map_err(|e| e.code()), Err(codes::WSAEOPNOTSUPP));
        // ... the owner may, and a pool dropped on another thread goes at the owner's next wait.
        let second = port.buffer_pool(2, 8).unwrap();
        thread::spawn(move || drop((pool, second))).join().unwrap();
        port.post(1, 9, None).unwrap();
        assert_eq!(port.get(Some(TIMEOUT)).unwrap().key, 9);
    });
}
