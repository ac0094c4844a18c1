//! I/O completion ports (`CreateIoCompletionPort`, `GetQueuedCompletionStatus(Ex)`,
//! `PostQueuedCompletionStatus`): a queue of completion packets that many worker threads drain.
//!
//! A socket associated with a port (S36) runs its operations on the port's own ring, and every
//! notification of that socket becomes a packet with the socket's key. The threads waiting on the
//! port take turns at the kernel: one of them (the leader) waits in the ring and turns what the
//! kernel completed into packets, then takes the first one itself — the completion reaches a
//! worker with no other thread in between. The others sleep; a packet the leader cannot take, or
//! one posted by another thread, wakes the most recent sleeper first (LIFO, S39), and only while
//! fewer than `concurrency` threads are running. A packet that a sleeper was woken for is kept for
//! it: no second thread is woken for it, and a thread that looks first does not take it. A
//! thread counts as running from the moment it takes a packet until it asks the port for the next
//! one (or exits).
//!
//! Packets come out in the order they were queued (S39, S40). Closing the port wakes every
//! waiter with `ERROR_ABANDONED_WAIT_0` (S41).

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::alertable;
use crate::driver::{self, Ring};
use crate::error::{codes, Error, Result};
use crate::event::{lock, Waiter};
use crate::overlapped::{Completion, Overlapped};
use crate::socket::Socket;

/// How long an alertable get waits in the port's ring before looking at its own routines.
const ALERTABLE_SLICE: Duration = Duration::from_millis(20);

/// One completion packet: what `GetQueuedCompletionStatus` returns (S37).
#[derive(Debug)]
pub struct Packet<B = Vec<u8>> {
    /// Bytes transferred (`lpNumberOfBytesTransferred`).
    pub bytes: usize,
    /// The completion key of the socket, or the one posted (`lpCompletionKey`).
    pub key: usize,
    /// The overlapped object of the operation, or the one posted (`lpOverlapped`).
    pub overlapped: Option<Overlapped<B>>,
    /// The operation's error, `None` for success.
    pub error: Option<Error>,
}

impl<B> Packet<B> {
    /// The byte count, or the operation's error.
    pub fn result(&self) -> Result<usize> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.bytes),
        }
    }
}

/// What an alertable get returned.
#[derive(Debug)]
pub enum PortWait<B = Vec<u8>> {
    /// Packets, in order.
    Packets(Vec<Packet<B>>),
    /// No packet came, and completion routines of this thread ran (`WAIT_IO_COMPLETION`, S42).
    IoCompletion,
}

/// A completion port whose operations own buffers of type `B`. Clones are handles to the same
/// port; it closes when the last handle is dropped, or with [`CompletionPort::close`].
pub struct CompletionPort<B = Vec<u8>> {
    handle: Arc<PortHandle<B>>,
}

impl<B> Clone for CompletionPort<B> {
    fn clone(&self) -> CompletionPort<B> {
        CompletionPort {
            handle: self.handle.clone(),
        }
    }
}

struct PortHandle<B> {
    inner: Arc<PortInner<B>>,
}

impl<B> Drop for PortHandle<B> {
    fn drop(&mut self) {
        self.inner.close();
    }
}

struct PortInner<B> {
    ring: Arc<dyn Ring>,
    concurrency: usize,
    state: Mutex<PortState<B>>,
}

struct PortState<B> {
    packets: VecDeque<Packet<B>>,
    /// Threads asleep in `get`, the most recent last.
    sleepers: Vec<Arc<Waiter>>,
    /// Sleepers woken and not yet back at the queue: the packets they will take need no
    /// other thread woken for them.
    waking: usize,
    /// The thread waiting in the ring, if one is.
    leader: Option<ThreadToken>,
    running: usize,
    closed: bool,
}

/// The port as a socket's operations see it, whatever its buffer type.
pub(crate) trait PortSink: Send + Sync {
    /// Queues the packet of a finished operation.
    fn post_completion(&self, key: usize, completion: Completion, ov: Option<Box<dyn Any + Send>>);
    /// The ring the socket's operations run on.
    fn ring(&self) -> Arc<dyn Ring>;
    /// The buffer type of the port's overlapped objects.
    fn buffer_type(&self) -> TypeId;
}

/// Where a socket's notifications go once it is associated with a port.
pub(crate) struct PortBinding {
    pub(crate) sink: Arc<dyn PortSink>,
    pub(crate) key: usize,
}

/// The port a thread counts as running on, so that asking for the next packet (or exiting)
/// ends its turn.
struct Running {
    port: Weak<dyn RunningCount>,
}

trait RunningCount {
    /// Ends a thread's turn; `exiting` when the thread ends, so that what it deferred is
    /// submitted.
    fn leave(&self, exiting: bool);
}

/// Which thread is the leader; usable even while the thread's locals are being destroyed (a
/// thread that exits ends its turn on its port then), where `std::thread::current` is not.
#[derive(Clone, Copy, PartialEq, Eq)]
struct ThreadToken(usize);

impl ThreadToken {
    fn current() -> ThreadToken {
        // A local with no destructor has an address for the whole life of its thread.
        MARKER.with(|m| ThreadToken(m as *const u8 as usize))
    }
}

thread_local! {
    static MARKER: u8 = const { 0 };
    static RUNNING: RefCell<Option<Running>> = const { RefCell::new(None) };
    static LEAVE_ON_EXIT: LeaveOnExit = const { LeaveOnExit };
}

/// Ends the thread's turn on its port when the thread exits.
struct LeaveOnExit;

impl Drop for LeaveOnExit {
    fn drop(&mut self) {
        let running = RUNNING.try_with(|r| r.borrow_mut().take()).ok().flatten();
        if let Some(port) = running.and_then(|r| r.port.upgrade()) {
            port.leave(true);
        }
    }
}

impl<B: Send + 'static> CompletionPort<B> {
    /// A new port (`CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, n)`): at most
    /// `concurrency` threads run at once; 0 means one per CPU (S36).
    pub fn new(concurrency: usize) -> Result<CompletionPort<B>> {
        let concurrency = match concurrency {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let inner = Arc::new(PortInner {
            ring: driver::new_ring()?,
            concurrency,
            state: Mutex::new(PortState {
                packets: VecDeque::new(),
                sleepers: Vec::new(),
                waking: 0,
                leader: None,
                running: 0,
                closed: false,
            }),
        });
        Ok(CompletionPort {
            handle: Arc::new(PortHandle { inner }),
        })
    }

    /// How many threads wait in [`CompletionPort::get`] (or its siblings) on this port now: a
    /// diagnostic, for tests and monitoring.
    pub fn waiting_threads(&self) -> usize {
        let st = lock(&self.handle.inner.state);
        st.sleepers.len() + usize::from(st.leader.is_some())
    }

    /// The number of threads allowed to run at once.
    pub fn concurrency(&self) -> usize {
        self.handle.inner.concurrency
    }

    /// Lets the thread that waits in the kernel for the port gather completions for up to
    /// `window` once the first has arrived, so that one wake-up serves many: less CPU per
    /// operation under load, for up to `window` more latency. Zero turns it off (the default).
    /// Returns whether the backend supports it (io_uring on Linux 6.12 or later).
    pub fn set_batch_window(&self, window: Duration) -> bool {
        self.handle.inner.ring.set_batch_window(window)
    }

    /// Associates a socket with the port under `key` (S36): from now on every notification of
    /// the socket is a packet on this port, and its operations hand their overlapped object to
    /// the packet. A socket can be associated once; again is `WSAEINVAL`.
    pub fn associate(&self, socket: &Socket, key: usize) -> Result<()> {
        let binding = PortBinding {
            sink: self.handle.inner.clone(),
            key,
        };
        socket
            .inner
            .port
            .set(binding)
            .map_err(|_| Error::new(codes::WSAEINVAL))
    }

    /// Queues a packet (`PostQueuedCompletionStatus`, S38); any thread may post (S43).
    pub fn post(&self, bytes: usize, key: usize, overlapped: Option<Overlapped<B>>) -> Result<()> {
        let packet = Packet {
            bytes,
            key,
            overlapped,
            error: None,
        };
        if self.handle.inner.push(packet) {
            Ok(())
        } else {
            Err(Error::new(codes::ERROR_ABANDONED_WAIT_0))
        }
    }

    /// Takes one packet (`GetQueuedCompletionStatus`, S37), waiting at most `timeout` (`None`:
    /// forever). `WAIT_TIMEOUT` when none came; `ERROR_ABANDONED_WAIT_0` once the port is closed.
    pub fn get(&self, timeout: Option<Duration>) -> Result<Packet<B>> {
        match self.handle.inner.get(1, timeout, false)? {
            PortWait::Packets(mut packets) => Ok(packets.remove(0)),
            PortWait::IoCompletion => unreachable!("a non-alertable get runs no routine"),
        }
    }

    /// Takes up to `max` packets at once, in order (`GetQueuedCompletionStatusEx`, S40).
    pub fn get_many(&self, max: usize, timeout: Option<Duration>) -> Result<Vec<Packet<B>>> {
        match self.handle.inner.get(max.max(1), timeout, false)? {
            PortWait::Packets(packets) => Ok(packets),
            PortWait::IoCompletion => unreachable!("a non-alertable get runs no routine"),
        }
    }

    /// [`CompletionPort::get_many`] that can be alertable (S42): with no packet and this thread's
    /// completion routines queued, they run and the get returns [`PortWait::IoCompletion`]; a
    /// packet that is there wins.
    pub fn get_ex(
        &self,
        max: usize,
        timeout: Option<Duration>,
        alertable: bool,
    ) -> Result<PortWait<B>> {
        self.handle.inner.get(max.max(1), timeout, alertable)
    }

    /// Closes the port: waiting threads wake with `ERROR_ABANDONED_WAIT_0` (S41), and packets
    /// of operations still pending are dropped when they come.
    pub fn close(&self) {
        self.handle.inner.close();
    }
}

impl<B> std::fmt::Debug for CompletionPort<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompletionPort")
            .field("concurrency", &self.handle.inner.concurrency)
            .finish()
    }
}

impl<B> PortInner<B> {
    /// Whether a queued packet has no thread on its way to take it.
    fn unclaimed(&self, st: &PortState<B>) -> bool {
        st.packets.len() > st.waking && st.running < self.concurrency
    }

    /// Wakes one thread for a packet: the most recent sleeper (S39), else the leader asleep in
    /// the ring — unless that is the calling thread, which takes the packet when its reap ends.
    /// A failed wake of the ring leaves the packet for the next thread that asks.
    fn wake_one(&self, st: &mut PortState<B>) {
        if let Some(sleeper) = st.sleepers.pop() {
            st.waking += 1;
            sleeper.wake();
        } else if st.leader.is_some_and(|l| l != ThreadToken::current()) {
            let _ = self.ring.wake();
        }
    }

    fn close(&self) {
        let mut st = lock(&self.state);
        st.closed = true;
        st.packets.clear();
        for sleeper in st.sleepers.drain(..) {
            sleeper.wake();
        }
        if st.leader.is_some() {
            let _ = self.ring.wake();
        }
    }
}

impl<B: Send + 'static> PortInner<B> {
    /// Queues a packet and wakes a thread for it; false if the port is closed.
    fn push(&self, packet: Packet<B>) -> bool {
        let mut st = lock(&self.state);
        if st.closed {
            return false;
        }
        st.packets.push_back(packet);
        if self.unclaimed(&st) {
            self.wake_one(&mut st);
        }
        true
    }

    fn get(
        self: &Arc<Self>,
        max: usize,
        timeout: Option<Duration>,
        alertable: bool,
    ) -> Result<PortWait<B>> {
        let got = self.wait_for_packets(max, timeout, alertable);
        if !matches!(got, Ok(PortWait::Packets(_))) {
            // No turn on the port: nothing this thread starts now may wait for a next get.
            driver::defer_submissions(None);
        }
        got
    }

    fn wait_for_packets(
        self: &Arc<Self>,
        max: usize,
        timeout: Option<Duration>,
        alertable: bool,
    ) -> Result<PortWait<B>> {
        self.end_turn_of_current_thread();
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut waiter: Option<Arc<Waiter>> = None;
        // Woken by a wake that counted on this thread to take a packet (see `waking`).
        let mut sent_for = false;
        loop {
            let mut st = lock(&self.state);
            if sent_for {
                st.waking = st.waking.saturating_sub(1);
            }
            if st.closed {
                return Err(Error::new(codes::ERROR_ABANDONED_WAIT_0));
            }
            // Packets that woken sleepers are on their way to take are theirs (S39: the most
            // recent waiter gets the packet, not a thread that happens to look first).
            let mine = if sent_for {
                st.packets.len()
            } else {
                st.packets.len().saturating_sub(st.waking)
            };
            sent_for = false;
            if mine > 0 && st.running < self.concurrency {
                let n = max.min(mine);
                let packets: Vec<Packet<B>> = st.packets.drain(..n).collect();
                st.running += 1;
                // Someone must take the rest, or wait in the ring now that this thread leaves.
                if self.unclaimed(&st) || (st.leader.is_none() && st.waking == 0) {
                    self.wake_one(&mut st);
                }
                drop(st);
                self.start_turn_of_current_thread();
                // What the worker starts while it handles these goes in with its next get.
                driver::defer_submissions(Some(&self.ring));
                return Ok(PortWait::Packets(packets));
            }
            if alertable {
                drop(st);
                if alertable::run_routines_now()? > 0 {
                    return Ok(PortWait::IoCompletion);
                }
                st = lock(&self.state);
            }
            let remaining = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Err(Error::new(codes::WAIT_TIMEOUT)),
                },
            };
            if st.leader.is_none() {
                st.leader = Some(ThreadToken::current());
                drop(st);
                // Deferred submissions to this ring go in with the wait; others go in now.
                driver::defer_submissions(Some(&self.ring));
                let slice = match alertable {
                    true => Some(remaining.map_or(ALERTABLE_SLICE, |r| r.min(ALERTABLE_SLICE))),
                    false => remaining,
                };
                let reaped = self.ring.reap(slice);
                lock(&self.state).leader = None;
                reaped?;
                continue;
            }
            let waiter = match &waiter {
                Some(w) => w.clone(),
                None => {
                    let made = match alertable {
                        true => Waiter::waking_ring(alertable::thread_ring()?),
                        false => Waiter::new(),
                    };
                    waiter.insert(made).clone()
                }
            };
            waiter.arm();
            st.sleepers.push(waiter.clone());
            drop(st);
            // A follower does not enter the ring: what this thread deferred goes in now.
            driver::defer_submissions(None);
            if alertable {
                alertable::sleep_until_woken(&waiter, remaining)?;
            } else {
                waiter.sleep(deadline);
            }
            let mut st = lock(&self.state);
            match st.sleepers.iter().position(|w| Arc::ptr_eq(w, &waiter)) {
                Some(i) => drop(st.sleepers.remove(i)), // timed out, or woken by a close
                None => sent_for = true,                // popped by a wake, counted in `waking`
            }
        }
    }

    /// Ends the calling thread's running turn on whatever port it had one (it asks for a packet
    /// again, or waits elsewhere).
    fn end_turn_of_current_thread(&self) {
        let running = RUNNING.try_with(|r| r.borrow_mut().take()).ok().flatten();
        if let Some(port) = running.and_then(|r| r.port.upgrade()) {
            port.leave(false);
        }
    }

    fn start_turn_of_current_thread(self: &Arc<Self>) {
        let me: Arc<dyn RunningCount> = self.clone();
        LEAVE_ON_EXIT.with(|_| ());
        RUNNING.with(|r| {
            *r.borrow_mut() = Some(Running {
                port: Arc::downgrade(&me),
            })
        });
    }
}

impl<B: Send + 'static> RunningCount for PortInner<B> {
    fn leave(&self, exiting: bool) {
        if exiting {
            let _ = self.ring.flush();
        }
        let mut st = lock(&self.state);
        st.running = st.running.saturating_sub(1);
        if self.unclaimed(&st) {
            self.wake_one(&mut st);
        }
    }
}

impl<B: Send + 'static> PortSink for PortInner<B> {
    fn post_completion(&self, key: usize, c: Completion, ov: Option<Box<dyn Any + Send>>) {
        let overlapped = ov.and_then(|ov| ov.downcast::<Overlapped<B>>().ok().map(|ov| *ov));
        self.push(Packet {
            bytes: c.bytes,
            key,
            overlapped,
            error: c.error,
        });
    }

    fn ring(&self) -> Arc<dyn Ring> {
        self.ring.clone()
    }

    fn buffer_type(&self) -> TypeId {
        TypeId::of::<B>()
    }
}
