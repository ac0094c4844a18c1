//! The epoll backend: completion emulated on readiness, for kernels without io_uring and for
//! sandboxes that forbid it (Docker's default seccomp profile refuses `io_uring_setup`).
//!
//! The engine has already tried each operation without blocking before it submits it, so a
//! request handed to this ring is one the socket was not ready for. The ring records it and arms
//! a one-shot, level-triggered epoll registration of its descriptor for the readiness it needs
//! (input for receives and zero-byte receives, output for sends). When the registration fires,
//! the reaping thread performs the request without blocking — `recvmsg`/`sendmsg` with
//! `MSG_DONTWAIT`, or `poll` with no wait for a zero-byte receive — and delivers what the system
//! call returned, which is what io_uring would have delivered: a byte count or event mask, or
//! `-errno`. A socket that was not ready after all (`EAGAIN`) only re-arms the registration.
//!
//! Why this shape:
//! - One-shot registrations make one readiness go to one thread, however many threads reap the
//!   ring at once (the workers of a completion port do). Level triggering makes arming after a
//!   failed attempt safe: data that arrived meanwhile fires at once instead of being missed.
//! - The system calls that perform requests run outside the ring's lock, so that several reapers
//!   work in parallel; a request being performed is marked busy, and a cancel that meets it
//!   waits for the attempt's outcome. This is how a cancel completes exactly once (S33): a waiting
//!   request ends with `-ECANCELED` at once; a busy one ends with its real result if the attempt
//!   moved data, or with `-ECANCELED` if it found the socket not ready.
//! - Results are never delivered under the lock, nor from `submit` or `cancel`: the engine calls
//!   those holding a socket's lock, and delivering may submit again. A cancelled request's result
//!   is queued, and an eventfd wakes a reaper to deliver it.
//! - A descriptor's registration is removed as soon as no request is left on it, while the
//!   descriptor is still open (the engine keeps it open until delivery), so a closed and reused
//!   descriptor number never inherits a stale registration. Registrations carry a generation
//!   in their token, and events of an earlier registration of the same number are ignored.
//!
//! Counters: `submissions` counts requests accepted, `completions` results delivered, and
//! `kernel_entries` every system call the ring makes — `epoll_wait`, `epoll_ctl`, the eventfd's
//! reads and writes, and the calls that perform requests (which io_uring makes inside the kernel).

mod table;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::{nonblocking, Counters, Request, Ring, COUNTERS};
use crate::error::Result;
use crate::event::lock;
use table::{Attempt, Change, Table};

/// The token of the wake eventfd; no descriptor token has all low 32 bits set.
const WAKE_TOKEN: u64 = u64::MAX;
/// Events taken from the kernel per `epoll_wait`.
const MAX_EVENTS: usize = 64;

pub(crate) struct Epoll {
    epoll: OwnedFd,
    /// A semaphore eventfd: each `wake` makes exactly one `reap` return.
    wake_fd: OwnedFd,
    table: Mutex<Table>,
    /// Where results go: [`crate::engine::complete`], or a recorder in this module's tests.
    sink: Sink,
}

/// Takes one result; see [`crate::engine::complete`] for the contract.
type Sink = unsafe fn(u64, i32);

/// Counts one system call and turns its return value into a result.
fn syscall(ret: libc::c_int) -> io::Result<libc::c_int> {
    Counters::bump(&COUNTERS.kernel_entries);
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

impl Epoll {
    pub(crate) fn new() -> Result<Epoll> {
        Epoll::with_sink(crate::engine::complete)
    }

    fn with_sink(sink: Sink) -> Result<Epoll> {
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
            table: Mutex::new(Table::default()),
            sink,
        };
        ring.ctl(
            libc::EPOLL_CTL_ADD,
            ring.wake_fd.as_raw_fd(),
            WAKE_EVENTS,
            WAKE_TOKEN,
        )?;
        Ok(ring)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event { events, u64: token };
        // SAFETY: `event` is a valid epoll_event for the duration of the call.
        syscall(unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) }).map(drop)
    }

    /// Tells epoll about a change of a descriptor's interest.
    fn apply(&self, fd: RawFd, change: Change) -> io::Result<()> {
        let oneshot = libc::EPOLLONESHOT as u32;
        match change {
            Change::Keep => Ok(()),
            Change::Add { events, token } => {
                match self.ctl(libc::EPOLL_CTL_ADD, fd, events | oneshot, token) {
                    // Registered already (it cannot be, but MOD says the same thing then).
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        self.ctl(libc::EPOLL_CTL_MOD, fd, events | oneshot, token)
                    }
                    other => other,
                }
            }
            Change::Modify { events, token } => {
                self.ctl(libc::EPOLL_CTL_MOD, fd, events | oneshot, token)
            }
            // The descriptor is open (a request on it is not yet delivered); nothing else can fail.
            Change::Remove => self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0).or(Ok(())),
        }
    }

    /// Brings the registration of `fd` in line with its requests. If epoll refuses, the waiting
    /// requests on `fd` end with that error rather than wait for readiness that cannot come.
    fn settle(&self, table: &mut Table, fd: RawFd) {
        let change = table.interest(fd);
        if let Err(e) = self.apply(fd, change) {
            table.forget_armed(fd);
            table.fail_idle(fd, errno_of(&e));
            let change = table.interest(fd);
            if self.apply(fd, change).is_err() {
                table.forget_armed(fd);
            }
        }
    }

    /// Performs one request without blocking; returns what io_uring would deliver for it.
    fn perform(attempt: &Attempt) -> i32 {
        Counters::bump(&COUNTERS.kernel_entries);
        // SAFETY: the request's memory stays valid and untouched by the engine until its result
        // is delivered (the `submit` contract), and no other thread performs it meanwhile (it is
        // marked busy).
        unsafe { nonblocking::perform(&attempt.job) }
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

    fn table(&self) -> MutexGuard<'_, Table> {
        lock(&self.table)
    }
}

const WAKE_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLONESHOT) as u32;

/// Hands results to the engine; called with no lock held.
fn deliver(sink: Sink, batch: Vec<(u64, i32)>) -> usize {
    for &(user_data, result) in &batch {
        Counters::bump(&COUNTERS.completions);
        // SAFETY: every user_data in the table was given to `submit` by the sink's owner (the
        // engine makes it from `Arc::into_raw` of the operation), and the table hands out each
        // one's result once.
        unsafe { sink(user_data, result) };
    }
    batch.len()
}

fn timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        // Rounded up, so that a short wait is a wait and not a busy poll.
        Some(t) => t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int,
    }
}

impl Ring for Epoll {
    /// Requests are registered with epoll as they are submitted: nothing waits to be handed over.
    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn batches_submissions(&self) -> bool {
        false
    }

    /// `epoll_wait` has no minimum wait: every reap returns with what is ready.
    fn set_batch_window(&self, _window: Duration) -> bool {
        false
    }

    unsafe fn submit(&self, user_data: u64, request: Request) -> Result<()> {
        let (fd, job) = (request.fd(), request);
        let mut table = self.table();
        table.insert(user_data, fd, job);
        let change = table.interest(fd);
        if let Err(e) = self.apply(fd, change) {
            table.withdraw(user_data);
            table.forget_armed(fd);
            self.settle(&mut table, fd);
            drop(table);
            self.wake()?; // requests `settle` may have failed need a reaper.
            return Err(e.into());
        }
        Counters::bump(&COUNTERS.submissions);
        Ok(())
    }

    fn cancel(&self, user_data: u64) -> Result<()> {
        let mut table = self.table();
        let Some(fd) = table.cancel(user_data) else {
            return Ok(()); // being performed (it ends when the attempt does), or already over.
        };
        self.settle(&mut table, fd);
        drop(table);
        self.wake()
    }

    fn reap(&self, timeout: Option<Duration>) -> Result<usize> {
        let early = self.table().take_finished();
        if !early.is_empty() {
            return Ok(deliver(self.sink, early));
        }
        // SAFETY: all zeros is a valid epoll_event.
        let mut events: [libc::epoll_event; MAX_EVENTS] = unsafe { std::mem::zeroed() };
        // SAFETY: the kernel writes at most MAX_EVENTS entries into `events`.
        let ret = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                MAX_EVENTS as libc::c_int,
                timeout_ms(timeout),
            )
        };
        let n = match syscall(ret) {
            Ok(n) => n as usize,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        let mut attempts = Vec::new();
        let mut woken = false;
        {
            let mut table = self.table();
            for event in &events[..n] {
                let (token, mask) = (event.u64, event.events);
                if token == WAKE_TOKEN {
                    woken = true;
                } else if let Some((fd, mut ready)) = table.ready(token, mask) {
                    attempts.append(&mut ready);
                    // Re-arm for the sides not being performed now.
                    self.settle(&mut table, fd);
                }
            }
        }
        if woken {
            self.take_wake()?;
        }
        let results: Vec<(Attempt, i32)> = attempts
            .into_iter()
            .map(|a| (a, Epoll::perform(&a)))
            .collect();
        let batch = {
            let mut table = self.table();
            for (attempt, result) in &results {
                table.done(attempt.user_data, *result);
                self.settle(&mut table, attempt.fd);
            }
            table.take_finished()
        };
        Ok(deliver(self.sink, batch))
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
