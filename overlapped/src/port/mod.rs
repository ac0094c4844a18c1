//! I/O completion ports (`CreateIoCompletionPort`, `GetQueuedCompletionStatus(Ex)`,
//! `PostQueuedCompletionStatus`): a queue of completion packets that many worker threads drain.
//!
//! A socket associated with a port (S36) runs its operations on the port's own ring, and every
//! notification of that socket becomes a packet with the socket's key. The threads waiting on the
//! port take turns at the kernel: one of them (the leader) waits in the ring and turns what the
//! kernel completed into packets. The others sleep; a packet, the leader's or one posted by
//! another thread, wakes the most recent sleeper first (LIFO, S39), and only while fewer than
//! `concurrency` threads are running; with no sleeper to wake, the leader takes the first packet
//! itself when its reap ends — the completion reaches a worker with no other thread in between.
//! (With several workers each packet is thus handed from one thread to another: a wake-up per
//! packet, measured in BENCHMARKS.md.) The packets of one reap are queued together when it ends,
//! under one lock ([`gather`]). A packet that a sleeper was woken for is kept for it: no second
//! thread is woken for it, and a thread that looks first does not take it. A thread counts as
//! running from the moment it takes a packet until it asks the port for the next one (or exits;
//! [`turn`]).
//!
//! Packets come out in the order they were queued (S39, S40). Closing the port wakes every
//! waiter with `ERROR_ABANDONED_WAIT_0` (S41).
//!
//! A port with a batch window ([`CompletionPort::with_batch_window`]) has a ring that only one
//! thread may enter: the first that waits on the port leads from then on, and the others only
//! ever sleep on the port's queue.

use std::any::TypeId;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::alertable;
use crate::driver::{self, Ring};
use crate::error::{codes, Error, Result};
use crate::event::{lock, Waiter};
use crate::overlapped::{AnyOverlapped, Completion, Overlapped};
use crate::pool::BufferPool;
use crate::socket::Socket;
use crate::thread_token::ThreadToken;

mod gather;
mod turn;

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
    /// The list the leader gathers its reap's packets in ([`gather`]), kept for the next reap.
    gathered: Vec<Packet<B>>,
}

/// The port as a socket's operations see it, whatever its buffer type.
pub(crate) trait PortSink: Send + Sync {
    /// Queues the packet of a finished operation.
    fn post_completion(&self, key: usize, completion: Completion, ov: Option<AnyOverlapped>);
    /// The ring the socket's operations run on.
    fn ring(&self) -> &Arc<dyn Ring>;
    /// The buffer type of the port's overlapped objects.
    fn buffer_type(&self) -> TypeId;
}

/// Where a socket's notifications go once it is associated with a port.
pub(crate) struct PortBinding {
    pub(crate) sink: Arc<dyn PortSink>,
    pub(crate) key: usize,
}

impl<B: Send + 'static> CompletionPort<B> {
    /// A new port (`CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, n)`): at most
    /// `concurrency` threads run at once; 0 means one per CPU (S36).
    pub fn new(concurrency: usize) -> Result<CompletionPort<B>> {
        Self::with_ring(concurrency, driver::new_private_ring()?)
    }

    /// A new port whose waits in the kernel gather completions until `window` has passed since
    /// they began (or 64 have come), so that one wake-up serves many: fewer system calls and
    /// wake-ups per operation under load, for up to `window` more latency (an operation that
    /// would finish at once goes to the kernel with the next wait, too). A zero window makes a
    /// port like [`CompletionPort::new`].
    ///
    /// The kernel batches waits only for a ring that one thread alone enters (io_uring's single
    /// issuer with deferred task running), so the first thread that waits on the port owns its
    /// ring from then on: only that thread waits in the kernel and turns completions into
    /// packets, which any thread then takes. Other threads may start operations and post
    /// packets (the owner is woken to hand them to the kernel), but completions wait for the
    /// owner's next get; before the first get, up to 1,024 requests wait for it, and a thread
    /// that queues more waits until the owner has taken some. Make the owner a worker that keeps
    /// serving the port: while it runs a packet, completions wait for it. Once it has exited (the
    /// kernel cancels what it submitted), a get that finds no packet queued and an operation that
    /// has to wait fail with `ERROR_ABANDONED_WAIT_0`.
    ///
    /// `WSAEOPNOTSUPP` where the backend cannot batch: the epoll backend, and io_uring before
    /// Linux 6.12.
    pub fn with_batch_window(concurrency: usize, window: Duration) -> Result<CompletionPort<B>> {
        if window.is_zero() {
            return Self::new(concurrency);
        }
        Self::with_ring(concurrency, driver::new_batching_ring(window)?)
    }

    fn with_ring(concurrency: usize, ring: Arc<dyn Ring>) -> Result<CompletionPort<B>> {
        let concurrency = match concurrency {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let inner = Arc::new(PortInner {
            ring,
            concurrency,
            state: Mutex::new(PortState {
                packets: VecDeque::new(),
                sleepers: Vec::new(),
                waking: 0,
                leader: None,
                running: 0,
                closed: false,
                gathered: Vec::new(),
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

    /// A pool of `count` buffers of `size` bytes for pooled receives
    /// ([`Socket::recv_pooled`]) on the sockets associated with this port: a receive takes a
    /// buffer only when its data arrives. `WSAEINVAL` for a count or size of 0 or more than
    /// [`crate::MAX_POOL_BUFFERS`] buffers; `WSAEOPNOTSUPP` on a kernel without provided-buffer
    /// rings (io_uring before Linux 5.19), and on a port with a batch window once a thread other
    /// than the calling one has waited on it (its ring then takes registrations from that thread
    /// only: make the pool before the workers start).
    pub fn buffer_pool(&self, count: usize, size: usize) -> Result<BufferPool> {
        BufferPool::new(self.handle.inner.ring().clone(), count, size)
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
        let take = |queue: &mut VecDeque<Packet<B>>, _: usize| queue.pop_front();
        match self.handle.inner.get(1, timeout, false, take)? {
            Got::Packets(Some(packet)) => Ok(packet),
            Got::Packets(None) => unreachable!("a get takes packets only when there are some"),
            Got::IoCompletion => unreachable!("a non-alertable get runs no routine"),
        }
    }

    /// Takes up to `max` packets at once, in order (`GetQueuedCompletionStatusEx`, S40).
    pub fn get_many(&self, max: usize, timeout: Option<Duration>) -> Result<Vec<Packet<B>>> {
        match self.handle.inner.get(max.max(1), timeout, false, drain)? {
            Got::Packets(packets) => Ok(packets),
            Got::IoCompletion => unreachable!("a non-alertable get runs no routine"),
        }
    }

    /// [`CompletionPort::get_many`] into a list of the caller's: appends up to `max` packets to
    /// `packets`, in order, and returns how many. A worker that keeps its list from one get to the
    /// next takes a batch of packets with no allocation, as `GetQueuedCompletionStatusEx` fills
    /// its caller's array.
    pub fn get_many_into(
        &self,
        packets: &mut Vec<Packet<B>>,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<usize> {
        let take = |queue: &mut VecDeque<Packet<B>>, n: usize| {
            move_front(queue, n, packets);
            n
        };
        match self.handle.inner.get(max.max(1), timeout, false, take)? {
            Got::Packets(n) => Ok(n),
            Got::IoCompletion => unreachable!("a non-alertable get runs no routine"),
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
        match self
            .handle
            .inner
            .get(max.max(1), timeout, alertable, drain)?
        {
            Got::Packets(packets) => Ok(PortWait::Packets(packets)),
            Got::IoCompletion => Ok(PortWait::IoCompletion),
        }
    }

    /// Closes the port: waiting threads wake with `ERROR_ABANDONED_WAIT_0` (S41), and packets
    /// of operations still pending are dropped when they come.
    pub fn close(&self) {
        self.handle.inner.close();
    }
}

/// Takes the first `n` packets of the queue, in order.
fn drain<B>(queue: &mut VecDeque<Packet<B>>, n: usize) -> Vec<Packet<B>> {
    let mut packets = Vec::with_capacity(n);
    move_front(queue, n, &mut packets);
    packets
}

/// Moves the first `n` packets of the queue to the end of `packets`, in order: one at a time, as
/// a drain's bookkeeping costs more than the few packets of a batch.
fn move_front<B>(queue: &mut VecDeque<Packet<B>>, n: usize, packets: &mut Vec<Packet<B>>) {
    for packet in std::iter::from_fn(|| queue.pop_front()).take(n) {
        packets.push(packet);
    }
}

/// What a wait on the port got: what `take` made of the packets, or routines ran.
enum Got<T> {
    Packets(T),
    IoCompletion,
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
        self.queue_locked(&mut st, packet);
        true
    }

    /// Queues a packet, the lock held, and wakes a thread for it if none is on its way.
    fn queue_locked(&self, st: &mut PortState<B>, packet: Packet<B>) {
        st.packets.push_back(packet);
        if self.unclaimed(st) {
            self.wake_one(st);
        }
    }

    /// Waits for packets; `take(queue, n)` takes the `n` this thread may have (at least one).
    fn get<T>(
        self: &Arc<Self>,
        max: usize,
        timeout: Option<Duration>,
        alertable: bool,
        take: impl FnOnce(&mut VecDeque<Packet<B>>, usize) -> T,
    ) -> Result<Got<T>> {
        let got = self.wait_for_packets(max, timeout, alertable, take);
        if !matches!(got, Ok(Got::Packets(_))) {
            // No turn on the port: nothing this thread starts now may wait for a next get.
            driver::defer_submissions(None);
        }
        got
    }

    fn wait_for_packets<T>(
        self: &Arc<Self>,
        max: usize,
        timeout: Option<Duration>,
        alertable: bool,
        take: impl FnOnce(&mut VecDeque<Packet<B>>, usize) -> T,
    ) -> Result<Got<T>> {
        // A turn on this port ends below, under the lock the wait takes anyway; a turn on
        // another port ends now.
        let mut turn_here = self.end_turn_of_current_thread();
        let mut leaving = turn_here.is_some();
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut waiter: Option<Arc<Waiter>> = None;
        // Woken by a wake that counted on this thread to take a packet (see `waking`).
        let mut sent_for = false;
        // The lock, still held from the end of the last round (a reap's end).
        let mut held = None;
        loop {
            let mut st = held.take().unwrap_or_else(|| lock(&self.state));
            if leaving {
                leaving = false;
                self.leave_locked(&mut st);
            }
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
                let packets = take(&mut st.packets, n);
                st.running += 1;
                // Someone must take the rest, or wait in the ring now that this thread leaves —
                // unless the ring batches its waits: only its owner waits there, and an owner
                // never sleeps on the port, so a sleeper woken for that would sleep again.
                let someone_may_lead = !self.ring.batches_waits();
                if self.unclaimed(&st)
                    || (st.leader.is_none() && st.waking == 0 && someone_may_lead)
                {
                    self.wake_one(&mut st);
                }
                drop(st);
                self.start_turn_of_current_thread(turn_here.take());
                // What the worker starts while it handles these goes in with its next get.
                driver::defer_submissions(Some(&self.ring));
                return Ok(Got::Packets(packets));
            }
            if alertable {
                drop(st);
                if alertable::run_routines_now()? > 0 {
                    return Ok(Got::IoCompletion);
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
            if st.leader.is_none() && self.ring.may_reap() {
                st.leader = Some(ThreadToken::current());
                let mut gathered = std::mem::take(&mut st.gathered);
                drop(st);
                // Deferred submissions to this ring go in with the wait; others go in now.
                driver::defer_submissions(Some(&self.ring));
                let slice = match alertable {
                    true => Some(remaining.map_or(ALERTABLE_SLICE, |r| r.min(ALERTABLE_SLICE))),
                    false => remaining,
                };
                let me = Arc::as_ptr(self) as *const ();
                let reaped = gather::gathering(me, &mut gathered, || self.ring.reap(slice));
                let mut st = lock(&self.state);
                st.leader = None;
                if st.closed {
                    drop(st);
                    drop(gathered); // packets of a closed port are dropped, outside its lock
                    continue;
                }
                // From the back of the reversed list: in order, with no drain to keep.
                gathered.reverse();
                while let Some(packet) = gathered.pop() {
                    self.queue_locked(&mut st, packet);
                }
                st.gathered = gathered;
                reaped?;
                // What the reap turned into packets is looked at under this same lock.
                held = Some(st);
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

    /// Ends a thread's turn, the port's lock held.
    fn leave_locked(&self, st: &mut PortState<B>) {
        st.running = st.running.saturating_sub(1);
        if self.unclaimed(st) {
            self.wake_one(st);
        }
    }
}

impl<B: Send + 'static> PortSink for PortInner<B> {
    fn post_completion(&self, key: usize, c: Completion, ov: Option<AnyOverlapped>) {
        let overlapped = ov.and_then(Overlapped::from_any);
        let packet = Packet {
            bytes: c.bytes,
            key,
            overlapped,
            error: c.error,
        };
        // The leader reaping for this port gathers it; any other thread queues it now.
        if let Some(packet) = gather::offer(self as *const Self as *const (), packet) {
            self.push(packet);
        }
    }

    fn ring(&self) -> &Arc<dyn Ring> {
        &self.ring
    }

    fn buffer_type(&self) -> TypeId {
        TypeId::of::<B>()
    }
}
