//! Helpers shared by the completion-routine SPEC tests: a log of the routines that ran (on
//! which thread, how deep, with what), and sends that queue a routine.

#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use overlapped::{sleep_ex, Error, Overlapped, Socket, Started, WaitExResult};

use crate::common::*;

/// What one routine saw when it ran.
#[derive(Debug)]
pub struct Ran {
    pub tag: &'static str,
    pub error: Option<u32>,
    pub bytes: usize,
    pub flags: u32,
    /// The buffers handed back through the overlapped object given to the routine.
    pub bufs: Vec<Vec<u8>>,
    /// The sender of a datagram, read from that object's completion.
    pub from: Option<SocketAddr>,
    pub thread: ThreadId,
    /// How many routines were running on this thread, this one included.
    pub depth: usize,
}

pub type Log = Rc<RefCell<Vec<Ran>>>;

thread_local! {
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// A routine that records what it is given in `log`.
pub fn recorder(
    log: &Log,
    tag: &'static str,
) -> impl FnOnce(Option<Error>, usize, Overlapped, u32) {
    let log = log.clone();
    move |error: Option<Error>, bytes: usize, ov: Overlapped, flags: u32| {
        let depth = DEPTH.with(|d| d.get() + 1);
        DEPTH.with(|d| d.set(depth));
        assert!(!ov.is_pending(), "{tag}: the object is finished");
        let completion = ov.completion(false).expect("the object holds the result");
        assert_eq!(completion.error, error, "{tag}: the object agrees");
        assert_eq!(completion.bytes, bytes, "{tag}: the object agrees");
        log.borrow_mut().push(Ran {
            tag,
            error: error.map(|e| e.code()),
            bytes,
            flags,
            bufs: ov.take_buffers().unwrap_or_default(),
            from: completion.from,
            thread: thread::current().id(),
            depth,
        });
        DEPTH.with(|d| d.set(depth - 1));
    }
}

pub fn tags(log: &Log) -> Vec<&'static str> {
    log.borrow().iter().map(|r| r.tag).collect()
}

/// Runs alertable waits until `done` holds (bounded in count and time); returns how many of them
/// ran routines.
pub fn alertable_until(what: &str, mut done: impl FnMut() -> bool) -> usize {
    let deadline = Instant::now() + TIMEOUT;
    let mut ran = 0;
    for _ in 0..100_000 {
        if done() {
            return ran;
        }
        let now = Instant::now();
        assert!(now < deadline, "not within {TIMEOUT:?}: {what}");
        if sleep_ex(Some(deadline - now), true).unwrap() == WaitExResult::IoCompletion {
            ran += 1;
        }
    }
    panic!("too many waits: {what}");
}

/// A short alertable wait that must find no routine to run.
pub fn assert_no_routine_runs(log: &Log) {
    let before = log.borrow().len();
    assert_eq!(
        sleep_ex(Some(Duration::from_millis(20)), true),
        Ok(WaitExResult::Timeout)
    );
    assert_eq!(log.borrow().len(), before, "no routine ran");
}

/// Sends `data` with a routine from inside a routine. On io_uring, what a routine starts goes to
/// the kernel with the rest of its batch when the routines have run, so the call reports it
/// pending; on epoll it is tried at once (S2 allows both). Either way it completes, and its
/// routine runs, in the same alertable wait (S28).
pub fn send_from_routine(sock: &Socket, data: &[u8], log: &Log, tag: &'static str) {
    let started = sock.send_with_routine(
        Overlapped::new(),
        vec![data.to_vec()],
        0,
        recorder(log, tag),
    );
    let started = started.unwrap();
    assert!(
        started == Started::Pending || started == Started::Done(data.len()),
        "{tag}: {started:?}"
    );
}

/// Sends `data` with a routine; on a fresh connection it is taken at once (S2).
pub fn send_now(sock: &Socket, data: &[u8], log: &Log, tag: &'static str) {
    let started = sock.send_with_routine(
        Overlapped::new(),
        vec![data.to_vec()],
        0,
        recorder(log, tag),
    );
    assert_eq!(started.unwrap(), Started::Done(data.len()), "{tag}");
}
