//! Helpers shared by the completion-port SPEC tests (`spec_ports.rs`, `spec_port_waiters.rs`):
//! ports, packets, and starting threads that wait on a port in a known order.

#![allow(dead_code)]

use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use overlapped::{codes, CompletionPort, Event, Overlapped, Packet};

use crate::common::*;

pub type Port = CompletionPort<Vec<u8>>;

pub fn new_port(concurrency: usize) -> Port {
    CompletionPort::new(concurrency).expect("create a completion port")
}

/// Takes one packet, waiting at most [`TIMEOUT`].
pub fn next(port: &Port) -> Packet {
    port.get(Some(TIMEOUT))
        .unwrap_or_else(|e| panic!("no packet within {TIMEOUT:?}: {e}"))
}

/// What a worker's get returned: `None` once the port is closed (the test's way to stop its
/// workers, S41); any other failure fails the test.
pub fn until_closed<T>(got: overlapped::Result<T>) -> Option<T> {
    match got {
        Ok(t) => Some(t),
        Err(e) if e.code() == codes::ERROR_ABANDONED_WAIT_0 => None,
        Err(e) => panic!("no packet: {e}"),
    }
}

/// Checks that no packet comes within a short pause.
pub fn assert_no_packet(port: &Port) {
    match port.get(Some(Duration::from_millis(50))) {
        Err(e) => assert_eq!(e.code(), codes::WAIT_TIMEOUT, "{e}"),
        Ok(p) => panic!("unexpected packet: {p:?}"),
    }
}

/// An overlapped object that can be recognised: it has an event of its own.
pub fn tagged() -> Overlapped {
    Overlapped::with_event(Event::new())
}

/// Whether two handles name the same overlapped object (made by [`tagged`]).
pub fn same_object(a: &Overlapped, b: &Overlapped) -> bool {
    a.event().unwrap().same_as(b.event().unwrap())
}

/// The overlapped object of a packet, which must name `expected`.
pub fn packet_object(p: &Packet, expected: &Overlapped) -> Overlapped {
    let ov = p
        .overlapped
        .clone()
        .expect("the packet carries the overlapped object");
    assert!(
        same_object(&ov, expected),
        "the packet names another object"
    );
    ov
}

/// Starts `n` threads that each wait in the port, one after the other: each is asleep (blocked in
/// the kernel, and given a moment more) before the next starts.
pub fn waiters_in_order<T: Send + 'static>(
    port: &CompletionPort,
    n: usize,
    wait: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<thread::JoinHandle<T>> {
    let wait = Arc::new(wait);
    let mut threads = Vec::new();
    let before = port.waiting_threads();
    for id in 0..n {
        let (tid_tx, tid_rx) = mpsc::channel();
        let wait = wait.clone();
        threads.push(thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tid_tx.send(unsafe { libc::gettid() }).unwrap();
            wait(id)
        }));
        let tid = tid_rx.recv_timeout(TIMEOUT).expect("the waiter started");
        eventually("the waiter is asleep", || is_blocked(tid));
        eventually("the waiter waits on the port", || {
            port.waiting_threads() == before + id + 1
        });
        settle_time();
    }
    threads
}

/// Whether the thread `tid` of this process is blocked (sleeping), from its `/proc` status.
pub fn is_blocked(tid: libc::pid_t) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    // The state follows the command name, which is in parentheses.
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    matches!(state, Some('S' | 'D'))
}
