//! The ring on its own, with a recording sink instead of the engine: several reapers at once,
//! exactly-once cancellation, and waking, with registrations that stay and with registrations
//! armed on demand.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::Epoll;
use crate::driver::{Request, Ring};

/// Results by user_data. Tests use disjoint user_data ranges, so they may run in parallel.
static RESULTS: Mutex<Option<HashMap<u64, Vec<i32>>>> = Mutex::new(None);
static ARRIVED: Condvar = Condvar::new();
const LIMIT: Duration = Duration::from_secs(20);

/// The test sink: records each result.
unsafe fn record(user_data: u64, result: i32) {
    let mut results = RESULTS.lock().unwrap();
    let map = results.get_or_insert_with(HashMap::new);
    map.entry(user_data).or_default().push(result);
    ARRIVED.notify_all();
}

/// Waits until every one of `ids` has a result; returns the results. Fails after `LIMIT`.
fn results_of(ids: &[u64]) -> Vec<Vec<i32>> {
    let deadline = Instant::now() + LIMIT;
    let mut results = RESULTS.lock().unwrap();
    loop {
        let map = results.get_or_insert_with(HashMap::new);
        if ids.iter().all(|id| map.contains_key(id)) {
            return ids.iter().map(|id| map[id].clone()).collect();
        }
        let now = Instant::now();
        assert!(now < deadline, "results did not arrive");
        results = ARRIVED.wait_timeout(results, deadline - now).unwrap().0;
    }
}

fn socket_pair() -> (OwnedFd, OwnedFd) {
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a.into(), b.into())
}

/// A receive's memory: one byte of buffer and its header, at a stable address.
struct RecvMem {
    byte: u8,
    iov: libc::iovec,
    msg: libc::msghdr,
}

fn recv_mem() -> Box<RecvMem> {
    // SAFETY: all zeros is a valid iovec and msghdr.
    let mut m: Box<RecvMem> = Box::new(unsafe { std::mem::zeroed() });
    m.iov.iov_base = &mut m.byte as *mut u8 as *mut libc::c_void;
    m.iov.iov_len = 1;
    m.msg.msg_iov = &mut m.iov;
    m.msg.msg_iovlen = 1;
    m
}

fn submit_recv(ring: &Epoll, user_data: u64, fd: &OwnedFd, mem: &mut RecvMem) {
    let request = Request::RecvMsg {
        fd: fd.as_raw_fd(),
        msg: &mut mem.msg,
        flags: 0,
    };
    // SAFETY: `mem` outlives the request: each test waits for the result before dropping it.
    unsafe { ring.submit(user_data, request) }.unwrap();
}

/// Runs `threads` reapers on `ring` until the returned flag is set.
fn reapers(ring: &Arc<Epoll>, threads: usize) -> (Arc<AtomicBool>, Vec<thread::JoinHandle<()>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let handles = (0..threads)
        .map(|_| {
            let (ring, stop) = (ring.clone(), stop.clone());
            thread::spawn(move || {
                let deadline = Instant::now() + LIMIT;
                while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
                    ring.reap(Some(Duration::from_millis(20))).unwrap();
                }
            })
        })
        .collect();
    (stop, handles)
}

/// Both arming policies: registrations that stay, and one-shot ones armed on demand; each run
/// with its own range of user_data.
const POLICIES: [(bool, u64); 2] = [(false, 0), (true, 100_000)];

#[test]
fn several_reapers_deliver_each_result_once() {
    for (on_demand, offset) in POLICIES {
        several_reapers_deliver_each_result_once_on(on_demand, 1_000 + offset);
    }
}

fn several_reapers_deliver_each_result_once_on(on_demand: bool, base: u64) {
    const PAIRS: u64 = 48;
    let ring = Arc::new(Epoll::with_sink(record, on_demand).unwrap());
    let (stop, handles) = reapers(&ring, 4);
    let pairs: Vec<_> = (0..PAIRS).map(|_| socket_pair()).collect();
    let mut mems: Vec<_> = (0..PAIRS).map(|_| recv_mem()).collect();
    for (i, ((a, _), mem)) in pairs.iter().zip(mems.iter_mut()).enumerate() {
        submit_recv(&ring, base + i as u64, a, mem);
    }
    for (i, (_, b)) in pairs.iter().enumerate() {
        // SAFETY: writes one byte from a local.
        let n = unsafe { libc::write(b.as_raw_fd(), &(i as u8) as *const u8 as *const _, 1) };
        assert_eq!(n, 1);
    }
    let ids: Vec<u64> = (0..PAIRS).map(|i| base + i).collect();
    let results = results_of(&ids);
    stop.store(true, Ordering::Release);
    for h in handles {
        h.join().unwrap();
    }
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result, &vec![1], "request {i} completed once with one byte");
        assert_eq!(mems[i].byte, i as u8);
    }
    assert_eq!(results_of(&ids), results, "no result arrived twice later");
}

#[test]
fn a_cancel_completes_once_and_a_late_cancel_does_nothing() {
    for (on_demand, offset) in POLICIES {
        a_cancel_completes_once_and_a_late_cancel_does_nothing_on(on_demand, 2_000 + offset);
    }
}

fn a_cancel_completes_once_and_a_late_cancel_does_nothing_on(on_demand: bool, base: u64) {
    let ring = Arc::new(Epoll::with_sink(record, on_demand).unwrap());
    let (a, b) = socket_pair();
    let (c, _d) = socket_pair();
    let (mut m1, mut m2) = (recv_mem(), recv_mem());
    submit_recv(&ring, base, &a, &mut m1);
    submit_recv(&ring, base + 1, &c, &mut m2);
    ring.cancel(base + 1).unwrap();
    let (stop, handles) = reapers(&ring, 2);
    assert_eq!(results_of(&[base + 1]), vec![vec![-libc::ECANCELED]]);
    // SAFETY: writes one byte from a local.
    assert_eq!(
        unsafe { libc::write(b.as_raw_fd(), &7u8 as *const u8 as *const _, 1) },
        1
    );
    assert_eq!(results_of(&[base]), vec![vec![1]]);
    ring.cancel(base).unwrap();
    ring.cancel(base + 1).unwrap();
    ring.wake().unwrap();
    // A request submitted after the late cancels completes, which shows the reapers went on
    // past them; nothing more arrived for the cancelled tags meanwhile.
    let mut m3 = recv_mem();
    submit_recv(&ring, base + 2, &a, &mut m3);
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::write(b.as_raw_fd(), &8u8 as *const u8 as *const _, 1) },
        1
    );
    assert_eq!(results_of(&[base + 2]), vec![vec![1]]);
    stop.store(true, Ordering::Release);
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(
        results_of(&[base, base + 1]),
        vec![vec![1], vec![-libc::ECANCELED]]
    );
    assert_eq!((m1.byte, m3.byte), (7, 8));
}

#[test]
fn wake_ends_a_reap_without_timeout() {
    let ring = Arc::new(Epoll::with_sink(record, true).unwrap());
    let reaper = {
        let ring = ring.clone();
        thread::spawn(move || ring.reap(None).unwrap())
    };
    ring.wake().unwrap();
    assert_eq!(reaper.join().unwrap(), 0, "woken, with nothing delivered");
}
