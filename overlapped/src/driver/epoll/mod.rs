//! The epoll backend: completion emulated on readiness, for kernels without io_uring and for
//! sandboxes that forbid it (Docker's default seccomp profile refuses `io_uring_setup`).
//!
//! A ring registers each descriptor it is given a request for once, edge-triggered, for both
//! directions, and keeps the registration until the descriptor closes. Each event counts as
//! readiness of its side; the reaping thread then performs the oldest request of that side
//! without blocking — `recv`/`recvmsg`/`send`/`sendmsg` with `MSG_DONTWAIT`, `accept4` — and
//! delivers what the system call returned, which is what io_uring would have delivered: a byte
//! count or descriptor, or `-errno`. A readiness request (a zero-byte receive, a connect in
//! progress) is answered by the event itself. An attempt that finds the socket not ready after
//! all (`EAGAIN`) leaves the request waiting for the next event.
//!
//! Why this shape:
//! - The cost per message is that of a hand-written epoll server: one `epoll_wait` for many
//!   sockets, and the call that moves the data. No `epoll_ctl` per request: the registration
//!   stays. No failed first attempt: the ring tells the engine which sides it has found drained
//!   since their last event ([`Ring::readiness`]), and the engine skips those attempts.
//! - Except on a ring that a thread of its own reaps (the shared ring, which signals the event
//!   model's events): there every event would wake that thread, also for data that the serving
//!   thread's next first attempt takes itself. Its registrations are one-shot and armed again
//!   only while a request waits on the descriptor (`epoll_ctl` once per wait), so that thread
//!   wakes for the requests it has to perform and for nothing else.
//! - Edge triggering is what makes the knowledge safe: the kernel reports an edge for every
//!   arrival, so a side found drained is reported again as soon as anything arrives. A side is
//!   only marked drained by an attempt that began in the epoch of its last event (see `table`).
//! - Several threads may reap one ring (the workers of a completion port). A request being
//!   performed is marked busy, so one request is performed by one thread at a time; an event
//!   that arrives meanwhile makes the request (or the next one) runnable again.
//! - The system calls that perform requests run outside the ring's lock, and a cancel that meets
//!   a busy request waits for the attempt's outcome. This is how a cancel completes exactly once
//!   (S33): a waiting request ends with `-ECANCELED` at once; a busy one ends with its real result
//!   if the attempt moved data, or with `-ECANCELED` if it found the socket not ready.
//! - Results are never delivered under the lock, nor from `submit` or `cancel`: the engine calls
//!   those holding a socket's lock, and delivering may submit again. A cancelled request's result,
//!   or a request submitted on a side that is ready, waits for a reaper, which an eventfd wakes.
//! - The kernel drops a registration when its descriptor closes. The socket tells every ring
//!   before it closes its descriptor ([`forget`]), so a later descriptor with the same number is
//!   registered anew; registrations carry a generation in their token, and events of an earlier
//!   registration of the same number are ignored.
//!
//! Counters: `submissions` counts requests accepted, `completions` results delivered, and
//! `kernel_entries` every system call the ring makes — `epoll_wait`, `epoll_ctl`, the eventfd's
//! reads and writes, and the calls that perform requests (which io_uring makes inside the kernel).

mod maps;
mod table;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use super::{nonblocking, Counter, Readiness, Request, Ring, Side};
use crate::error::Result;
use crate::event::lock;
use table::{Arming, Attempt, Table};

/// The token of the wake eventfd; no descriptor token has all low 32 bits set.
const WAKE_TOKEN: u64 = u64::MAX;
/// Events taken from the kernel per `epoll_wait`.
const MAX_EVENTS: usize = 64;
/// The wake eventfd is level-triggered and one-shot: one wake, one reaper.
const WAKE_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLONESHOT) as u32;
/// Rounds of attempts one `reap` makes after its events, for requests that events arriving
/// meanwhile made runnable again; what is left waits for the next `reap`.
const ATTEMPT_ROUNDS: usize = 4;

pub(crate) struct Epoll {
    epoll: OwnedFd,
    /// A semaphore eventfd: each `wake` makes exactly one `reap` return.
    wake_fd: OwnedFd,
    table: Arc<Mutex<Table>>,
    /// Where results go: [`crate::engine::complete`], or a recorder in this module's tests.
    sink: Sink,
    /// The lists of the last reap, empty, kept so that the next one allocates nothing; a reap
    /// that finds them taken by another makes its own.
    scratch: Mutex<Option<Scratch>>,
}

/// What one reap collects, in lists that keep their room from one reap to the next.
#[derive(Default)]
struct Scratch {
    /// Where `epoll_wait` writes its events: set up once, then only overwritten.
    events: Vec<libc::epoll_event>,
    attempts: Vec<Attempt>,
    results: Vec<(i32, bool)>,
    batch: Vec<(u64, i32)>,
    rearm: Vec<(RawFd, Arming)>,
}

/// Takes one result; see [`crate::engine::complete`] for the contract.
type Sink = unsafe fn(u64, i32);

/// Hands one result to the engine. A pooled receive's buffer was picked by the attempt that
/// performed it, which wrote it into the operation's record.
///
/// # Safety
/// As [`crate::engine::complete`].
unsafe fn complete(user_data: u64, result: i32) {
    // SAFETY: the caller's contract.
    unsafe { crate::engine::complete(user_data, result, None) }
}

/// The tables of the rings alive, for [`forget`].
static TABLES: Mutex<Vec<Weak<Mutex<Table>>>> = Mutex::new(Vec::new());
/// How many of them there are, so that a process without epoll rings skips the lock.
static TABLE_COUNT: AtomicUsize = AtomicUsize::new(0);

/// Makes every ring forget `fd`, which is about to be closed or replaced.
pub(crate) fn forget(fd: RawFd) {
    if TABLE_COUNT.load(Ordering::Acquire) == 0 {
        return;
    }
    let mut tables = lock(&TABLES);
    tables.retain(|weak| match weak.upgrade() {
        Some(table) => {
            lock(&table).forget(fd);
            true
        }
        None => false,
    });
    TABLE_COUNT.store(tables.len(), Ordering::Release);
}

/// Counts one system call and turns its return value into a result.
fn syscall(ret: libc::c_int) -> io::Result<libc::c_int> {
    super::count(Counter::KernelEntries);
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl Epoll {
    /// A ring reaped by the threads that submit to it (`private`), whose registrations stay, or
    /// one reaped by a thread of its own, which arms them on demand.
    pub(crate) fn new(private: bool) -> Result<Epoll> {
        Epoll::with_sink(complete, !private)
    }

    fn with_sink(sink: Sink, on_demand: bool) -> Result<Epoll> {
        // SAFETY: plain system call; a non-negative result is a new descriptor that we own.
        let epoll = syscall(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: as above.
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
        let flags = libc::EFD_CLOEXEC | libc::EFD_NONBLOCK | libc::EFD_SEMAPHORE;
        // SAFETY: as above.
        let wake_fd = syscall(unsafe { libc::eventfd(0, flags) })?;
        // SAFETY: as above.
        let wake_fd = unsafe { OwnedFd::from_raw_fd(wake_fd) };
        let ring = Epoll {
            epoll,
            wake_fd,
            table: Arc::new(Mutex::new(Table::new(on_demand))),
            sink,
            scratch: Mutex::new(None),
        };
        ring.ctl(
            libc::EPOLL_CTL_ADD,
            ring.wake_fd.as_raw_fd(),
            WAKE_EVENTS,
            WAKE_TOKEN,
        )?;
        let mut tables = lock(&TABLES);
        tables.push(Arc::downgrade(&ring.table));
        TABLE_COUNT.store(tables.len(), Ordering::Release);
        Ok(ring)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event { events, u64: token };
        // SAFETY: `event` is a valid epoll_event for the duration of the call.
        syscall(unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) }).map(drop)
    }

    /// Registers a descriptor (for good, until it closes, or one-shot), or arms its one-shot
    /// registration again.
    fn arm(&self, fd: RawFd, arming: Arming) -> io::Result<()> {
        match arming {
            Arming::Rearm { token, events } => {
                match self.ctl(libc::EPOLL_CTL_MOD, fd, events, token) {
                    // The kernel dropped the registration (its file was closed and the number
                    // reused outside the library): register the descriptor again.
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
                    }
                    other => other,
                }
            }
            Arming::Register { token, events } => {
                match self.ctl(libc::EPOLL_CTL_ADD, fd, events, token) {
                    // Still registered under an earlier token: the same open file behind the
                    // same number.
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        self.ctl(libc::EPOLL_CTL_MOD, fd, events, token)
                    }
                    other => other,
                }
            }
        }
    }

    /// Performs one request without blocking; returns what io_uring would deliver for it, and
    /// whether it showed that its side is drained although it succeeded.
    fn perform(attempt: &Attempt) -> (i32, bool) {
        if let Some(mask) = attempt.answer {
            return (mask, false);
        }
        super::count(Counter::KernelEntries);
        // SAFETY: the request's memory stays valid and untouched by the engine until its result
        // is delivered (the `submit` contract), and no other thread performs it meanwhile (it is
        // marked busy).
        let result = unsafe { nonblocking::perform(&attempt.job) };
        let drained = result >= 0 && attempt.job.drained_by(result as usize);
        (result, drained)
    }

    /// Takes one unit of the wake semaphore and re-arms it for the next `wake`.
    fn take_wake(&self) -> io::Result<()> {
        let mut unit = 0u64;
        // SAFETY: reads 8 bytes into `unit`, which is 8 bytes long.
        let read = unsafe {
            libc::read(
                self.wake_fd.as_raw_fd(),
                &mut unit as *mut u64 as *mut libc::c_void,
                8,
            )
        };
        // An empty semaphore (another reaper took the unit) is fine.
        let _ = syscall(read as libc::c_int);
        self.ctl(
            libc::EPOLL_CTL_MOD,
            self.wake_fd.as_raw_fd(),
            WAKE_EVENTS,
            WAKE_TOKEN,
        )
    }

    /// Waits for events; adds the attempts they call for to `attempts`.
    fn wait(
        &self,
        timeout: Option<Duration>,
        events: &mut Vec<libc::epoll_event>,
        attempts: &mut Vec<Attempt>,
    ) -> Result<()> {
        events.resize(MAX_EVENTS, libc::epoll_event { events: 0, u64: 0 });
        // `epoll_pwait` with no signal mask is `epoll_wait`, called as the system call itself:
        // the C library's wrapper is a cancellation point, which costs two calls around it, and
        // the library cancels no threads.
        let (epfd, capacity) = (self.epoll.as_raw_fd(), events.len() as libc::c_long);
        let no_mask = std::ptr::null::<libc::sigset_t>();
        let mask_size: libc::c_long = 8; // the kernel's sigset_t, in bytes (unused without a mask)
                                         // SAFETY: the kernel writes at most `capacity` entries into `events`; every argument is
                                         // a full word.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait,
                libc::c_long::from(epfd),
                events.as_mut_ptr(),
                capacity,
                libc::c_long::from(timeout_ms(timeout)),
                no_mask,
                mask_size,
            )
        } as libc::c_int;
        let n = match syscall(ret) {
            Ok(n) => n as usize,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        let mut woken = false;
        {
            let mut table = self.table();
            for event in &events[..n] {
                let (token, mask) = (event.u64, event.events);
                if token == WAKE_TOKEN {
                    woken = true;
                } else {
                    table.ready(token, mask, attempts);
                }
            }
            table.take_runnable(attempts);
        }
        if woken {
            self.take_wake()?;
        }
        Ok(())
    }

    /// One reap, into lists that come and go empty (unless the wait fails).
    fn reap_into(&self, s: &mut Scratch, timeout: Option<Duration>) -> Result<usize> {
        {
            let mut table = self.table();
            table.take_runnable(&mut s.attempts);
            table.take_finished(&mut s.batch);
        }
        if s.attempts.is_empty() && s.batch.is_empty() {
            self.wait(timeout, &mut s.events, &mut s.attempts)?;
        }
        for round in 1..=ATTEMPT_ROUNDS {
            s.results.clear();
            s.results.extend(s.attempts.iter().map(Epoll::perform));
            let mut table = self.table();
            for (attempt, &(result, drained)) in s.attempts.iter().zip(&s.results) {
                table.done(attempt, result, drained);
            }
            let attempted = !s.attempts.is_empty();
            s.attempts.clear();
            if attempted && round < ATTEMPT_ROUNDS {
                table.take_runnable(&mut s.attempts);
            }
            table.take_finished(&mut s.batch);
            if s.attempts.is_empty() {
                // The reap's last look at the table: what events disarmed and requests still
                // wait on is armed again. Under the lock, like a registration in `submit`: a
                // descriptor cannot be forgotten, and its number given to another socket,
                // between the table's choice and the call.
                table.take_rearm(&mut s.rearm);
                for (fd, arming) in s.rearm.drain(..) {
                    // A descriptor that is closing refuses; its requests end with the close.
                    let _ = self.arm(fd, arming);
                }
                break;
            }
        }
        Ok(deliver(self.sink, &mut s.batch))
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        lock(&self.table)
    }
}

/// Hands results to the engine, emptying `batch`; called with no lock held.
fn deliver(sink: Sink, batch: &mut Vec<(u64, i32)>) -> usize {
    let delivered = batch.len();
    super::count_many(Counter::Completions, delivered);
    for (user_data, result) in batch.drain(..) {
        // SAFETY: every user_data in the table was given to `submit` by the sink's owner (the
        // engine makes it from `Arc::into_raw` of the operation), and the table hands out each
        // one's result once.
        unsafe { sink(user_data, result) };
    }
    delivered
}

fn timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        // Rounded up, so that a short wait is a wait and not a busy poll.
        Some(t) => t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int,
    }
}

impl Ring for Epoll {
    /// Requests are recorded as they are submitted: nothing waits to be handed over.
    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn batches_submissions(&self) -> bool {
        false
    }

    fn tracks_readiness(&self) -> bool {
        true
    }

    fn readiness(&self, fd: RawFd, side: Side) -> Readiness {
        self.table().readiness(fd, side)
    }

    fn drained(&self, fd: RawFd, side: Side, epoch: u64, proven: bool) {
        self.table().drained(fd, side, epoch, proven);
    }

    unsafe fn submit(&self, user_data: u64, request: Request) -> Result<()> {
        let fd = request.fd();
        let mut table = self.table();
        let inserted = table.insert(user_data, fd, request);
        if let Some(arming) = inserted.arm {
            if let Err(e) = self.arm(fd, arming) {
                table.withdraw(user_data);
                return Err(e.into());
            }
        }
        super::count(Counter::Submissions);
        drop(table);
        if inserted.runnable {
            // The side is ready already: no event will come for it, a reaper must be woken. The
            // request is recorded whatever the wake returns (a failure cannot undo that, and
            // reporting one would make the caller release the request's memory); a reaper that
            // missed the wake finds it at its next reap.
            let _ = self.wake();
        }
        Ok(())
    }

    fn cancel(&self, user_data: u64) -> Result<()> {
        let mut table = self.table();
        table.cancel(user_data);
        let work = table.has_work();
        drop(table);
        match work {
            true => self.wake(),
            false => Ok(()), // being performed (it ends when the attempt does), or already over.
        }
    }

    fn reap(&self, timeout: Option<Duration>) -> Result<usize> {
        let mut scratch = lock(&self.scratch).take().unwrap_or_default();
        let reaped = self.reap_into(&mut scratch, timeout);
        // After a failed wait the lists may hold the attempts it chose (their requests are
        // marked busy): the next reap that takes these lists performs them.
        *lock(&self.scratch) = Some(scratch);
        reaped
    }

    fn wake(&self) -> Result<()> {
        let unit = 1u64;
        // SAFETY: writes the 8 bytes of `unit`.
        let written = unsafe {
            libc::write(
                self.wake_fd.as_raw_fd(),
                &unit as *const u64 as *const libc::c_void,
                8,
            )
        };
        match syscall(written as libc::c_int) {
            // A full semaphore (EAGAIN) already wakes a reaper.
            Err(e) if e.raw_os_error() != Some(libc::EAGAIN) => Err(e.into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
