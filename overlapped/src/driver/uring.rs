//! The io_uring backend: each ring is one io_uring, fed from any thread.
//!
//! Pushing onto a ring's submission queue happens under a short lock, and the pushing thread then
//! enters the kernel to submit. The thread that reaps the ring waits in the kernel for
//! completions and delivers each one to [`crate::engine::complete`]; another thread wakes it by
//! submitting a no-op.
//!
//! The kernel runs a request's completion work in the submitting thread's context. By default it
//! interrupts that thread if it is running (an inter-processor interrupt) so that the work is done
//! at once. The shared ring keeps that: an event-model program may compute for a long time without
//! entering the kernel, and its events must still be signalled. Private rings (a port's, a
//! thread's for its routines) are set up with `COOP_TASKRUN`: their submitters are the threads
//! that reap them, which enter the kernel for their next wait anyway, so the work waits for that
//! entry (or any other: a system call, a tick, a sleep, which the work still interrupts) and the
//! interrupts are saved. Kernels older than 5.19 lack the flag and get the default.
//!
//! A port with a batch window gets a ring of its own kind, which one thread owns (see [`owner`]).

use std::cell::Cell;
use std::io;
use std::os::fd::RawFd;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use io_uring::squeue::{self, SubmissionQueue};
use io_uring::{cqueue, opcode, types, IoUring, Probe};

use super::{Counter, Request, Ring, STREAM_TAG};
use crate::error::{codes, Error, Result};
use crate::event::lock;
use crate::pool::{PoolMemory, PoolShared};
use buf_ring::BufRings;
use owner::{Owner, WAKE_TAG};

mod buf_ring;
mod owner;

/// Submission queue entries; submitters wait for the kernel to take some when it is full. A
/// port's worker queues the requests it starts while it handles a batch of completions and
/// submits them with its next wait, so a batch of up to this many costs no extra entry.
const SQ_ENTRIES: u32 = 1024;
/// Submission queue entries of a batching ring: until its owner's first wait nobody can hand
/// requests to the kernel, so this many can be queued before then (accepts posted before the
/// workers start, say) without waiting for the owner.
const BATCHING_SQ_ENTRIES: u32 = 1024;
/// Completion queue entries: room for many more operations in flight than the submission queue
/// holds at once.
const CQ_ENTRIES: u32 = 16384;

/// Completions a batched wait gathers at most before its window ends.
const BATCH: usize = 64;
/// How long a batched wait with no deadline lasts at most before it is entered again: without a
/// deadline the kernel ends the wait when the window ends, even with nothing completed.
const BATCHED_WAIT_LIMIT: Duration = Duration::from_secs(60);

thread_local! {
    /// The completions a reap takes from the ring before delivering them, kept per thread so
    /// that a reap neither allocates nor takes a second lock to keep the list.
    static REAPED: Cell<Vec<(u64, i32, u32)>> = const { Cell::new(Vec::new()) };
}

/// The opcodes the library uses, with their names for messages.
const OPCODES: [(&str, u8); 8] = [
    ("RECV", opcode::Recv::CODE),
    ("SEND", opcode::Send::CODE),
    ("ACCEPT", opcode::Accept::CODE),
    ("RECVMSG", opcode::RecvMsg::CODE),
    ("SENDMSG", opcode::SendMsg::CODE),
    ("POLL_ADD", opcode::PollAdd::CODE),
    ("ASYNC_CANCEL", opcode::AsyncCancel::CODE),
    ("NOP", opcode::Nop::CODE),
];

/// Checks that a ring can be set up and supports every opcode the library uses; returns a
/// sentence saying so.
pub(crate) fn probe() -> io::Result<String> {
    let ring: IoUring = IoUring::builder().build(8)?;
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    if !ring.params().is_feature_ext_arg() {
        return Err(io::Error::other(
            "the kernel's io_uring lacks timed waits (IORING_FEAT_EXT_ARG, Linux 5.11)",
        ));
    }
    if let Some((name, _)) = OPCODES.iter().find(|(_, code)| !probe.is_supported(*code)) {
        return Err(io::Error::other(format!(
            "the kernel's io_uring lacks the {name} opcode"
        )));
    }
    let names: Vec<&str> = OPCODES.iter().map(|(name, _)| *name).collect();
    Ok(format!(
        "io_uring is available and supports every opcode the library uses ({})",
        names.join(", ")
    ))
}

pub(crate) struct Uring {
    ring: IoUring,
    /// Serialises pushes onto the submission queue (the ring's shared submission view may exist
    /// only once at a time).
    sq_lock: Mutex<()>,
    /// Serialises reaping (the shared completion view may exist only once at a time).
    cq_lock: Mutex<()>,
    /// On a batching ring, the thread that alone may enter the kernel on it, and the window;
    /// `None` on other rings.
    owner: Option<Owner>,
    /// The buffer pools' groups registered with the ring.
    buf_rings: BufRings,
    /// Whether the kernel has multishot receives (Linux 6.0).
    streams: bool,
}

impl Drop for Uring {
    fn drop(&mut self) {
        // No request is pending (each keeps its ring alive), so the kernel reads no entries.
        self.buf_rings.free_all();
    }
}

impl Uring {
    /// A ring; `private` if the threads that submit to it are the ones that reap it (see the
    /// module docs).
    pub(crate) fn new(private: bool) -> Result<Uring> {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(CQ_ENTRIES);
        let ring = match private {
            true => match builder.clone().setup_coop_taskrun().build(SQ_ENTRIES) {
                Ok(ring) => ring,
                // A kernel that does not know the flag (before 5.19).
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => builder.build(SQ_ENTRIES)?,
                Err(e) => return Err(e.into()),
            },
            false => builder.build(SQ_ENTRIES)?,
        };
        Ok(Uring::around(ring, None))
    }

    /// The ring's state around a set-up io_uring.
    fn around(ring: IoUring, owner: Option<Owner>) -> Uring {
        // Multishot receives came with Linux 6.0, as did zero-copy sends: a kernel that knows the
        // one opcode knows the other flag (flags are not probed). Asked once per process.
        static STREAMS: OnceLock<bool> = OnceLock::new();
        let streams = *STREAMS.get_or_init(|| {
            let mut probe = Probe::new();
            ring.submitter().register_probe(&mut probe).is_ok()
                && probe.is_supported(opcode::SendZc::CODE)
        });
        Uring {
            streams,
            ring,
            sq_lock: Mutex::new(()),
            cq_lock: Mutex::new(()),
            owner,
            buf_rings: BufRings::default(),
        }
    }

    /// A ring whose waits gather completions for up to `window` (at least a microsecond), owned
    /// by the first thread that reaps it (see [`owner`]). `WSAEOPNOTSUPP` on kernels without
    /// deferred task running (6.1) or batched waits (6.12).
    pub(crate) fn batching(window: Duration) -> Result<Uring> {
        let unsupported = || Error::with_errno(codes::WSAEOPNOTSUPP, libc::EOPNOTSUPP);
        let ring = IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .setup_r_disabled()
            .build(BATCHING_SQ_ENTRIES)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EINVAL) => unsupported(),
                _ => Error::from(e),
            })?;
        if !ring.params().is_feature_min_timeout() {
            return Err(unsupported());
        }
        let owner = Owner::new(window.as_micros().clamp(1, u32::MAX as u128) as u32)?;
        let wake_poll = owner.wake_poll();
        let uring = Uring::around(ring, Some(owner));
        // The queue is empty: the push cannot fail. The owner's first entry submits it.
        // SAFETY: the poll points to no memory; its descriptor lives as long as the ring.
        uring.with_submission_queue(|sq| unsafe { sq.push(&wake_poll) }.is_ok());
        Ok(uring)
    }

    /// The owner of a batching ring, if the calling thread is not it (or there is none yet): such
    /// a thread must not enter the kernel on the ring.
    fn owned_elsewhere(&self) -> Option<&Owner> {
        self.owner.as_ref().filter(|owner| !owner.is_current())
    }

    /// Whether the calling thread may register with the ring: any thread may, except on a
    /// batching ring, whose owner alone may once it has one.
    fn may_register(&self) -> bool {
        self.owner.as_ref().map_or(true, Owner::may_register)
    }

    /// Runs `f` on the ring's submission queue, under `sq_lock`.
    ///
    /// The queue view must not outlive the lock: dropping it stores the tail it loaded, and a
    /// view dropped after another thread has pushed (and the kernel has taken that entry) moves
    /// the tail back behind the kernel's head. The kernel then counts the whole ring as queued
    /// and submits stale entries again, with the `user_data` of operations long finished. Taking
    /// the view only here, and dropping it before the guard, rules that out.
    fn with_submission_queue<R>(&self, f: impl FnOnce(&mut SubmissionQueue<'_>) -> R) -> R {
        let _guard = lock(&self.sq_lock);
        // SAFETY: `sq_lock` is held until the view is dropped below, so no other submission
        // view of this ring exists meanwhile.
        let mut sq = unsafe { self.ring.submission_shared() };
        let result = f(&mut sq);
        drop(sq);
        result
    }

    /// Pushes one entry and enters the kernel to submit it, unless `may_defer` and the calling
    /// thread defers its submissions to this ring.
    fn push(&self, entry: io_uring::squeue::Entry, may_defer: bool) -> Result<()> {
        if let Some(owner) = self.owned_elsewhere() {
            return self.push_for_owner(entry, owner);
        }
        self.with_submission_queue(|sq| -> Result<()> {
            // SAFETY: the entry's pointers are valid until its completion (the caller's contract
            // on `Ring::submit`); the cancel and no-op entries carry no pointers.
            while unsafe { sq.push(&entry) }.is_err() {
                sq.sync();
                self.enter(0, None)?;
                sq.sync();
            }
            super::count(Counter::Submissions);
            Ok(())
        })?;
        if may_defer && super::defers_to(self as *const Uring as *const ()) {
            return Ok(()); // this thread's next entry into the kernel on this ring submits it
        }
        // The entry is in the queue now, whatever this entry into the kernel returns: the next
        // one on this ring (the reaper's wait, any submission) hands it over. Reporting a failure
        // here would make the caller release memory that the request still points to.
        let _ = self.enter(0, None);
        Ok(())
    }

    /// Asks the kernel to end the request tagged `user_data` (the cancel's own completion has no
    /// tag); deferred as [`Uring::push`] defers, if `may_defer`.
    fn push_cancel(&self, user_data: u64, may_defer: bool) -> Result<()> {
        let entry = opcode::AsyncCancel::new(user_data).build().user_data(0);
        self.push(entry, may_defer)
    }

    /// Queues an entry on a batching ring that another thread owns (or nobody yet), and wakes the
    /// owner, whose next entry into the kernel submits it. With the queue full, waits until the
    /// owner has taken some: for as long as the owner does not come back to the ring. Fails
    /// once the owner has exited.
    fn push_for_owner(&self, entry: io_uring::squeue::Entry, owner: &Owner) -> Result<()> {
        loop {
            owner.check_alive()?;
            // SAFETY: as in `push`.
            let pushed = self.with_submission_queue(|sq| unsafe { sq.push(&entry) }.is_ok());
            owner.wake();
            if pushed {
                super::count(Counter::Submissions);
                return Ok(());
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// The owner's wake-up poll fired: empties the descriptor and polls it again. Only the owner
    /// reaps, so the poll is pushed by the owner (and goes in with its next entry).
    fn rearm_wake(&self) -> Result<()> {
        match &self.owner {
            Some(owner) => {
                owner.consume_wake();
                self.push(owner.wake_poll(), true)
            }
            None => Ok(()),
        }
    }

    /// Whether an entry into the kernel has work to do besides waiting: entries wait in the
    /// submission queue, or (deferred task running) completion work waits for the owner.
    fn has_queued(&self) -> bool {
        self.with_submission_queue(|sq| !sq.is_empty() || sq.taskrun())
    }

    /// Enters the kernel: submits what is queued and waits for `want` completions, at most
    /// `timeout`. With a batch window and `want` > 0, waits for up to [`BATCH`] completions until
    /// the window has passed since the wait began, and after that returns with the first.
    fn enter(&self, want: usize, timeout: Option<Duration>) -> Result<()> {
        debug_assert!(self.owned_elsewhere().is_none(), "only the owner enters");
        super::count(Counter::KernelEntries);
        let submitter = self.ring.submitter();
        let batch_us = match (want, &self.owner) {
            (1.., Some(owner)) => owner.window_us,
            _ => 0,
        };
        let timeout = match (timeout, batch_us) {
            (None, 1..) => Some(BATCHED_WAIT_LIMIT),
            (timeout, _) => timeout,
        };
        let entered = match (timeout, batch_us) {
            (None, _) => submitter.submit_and_wait(want),
            (Some(t), us) => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts).min_wait_usec(us);
                submitter.submit_with_args(if us > 0 { BATCH } else { want }, &args)
            }
        };
        match entered {
            Ok(_) => Ok(()),
            // Interrupted, timed out, or the completion queue is overflowing (the reaper is
            // draining it, and queued entries go in at the next entry into the kernel).
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::ETIME | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(Error::from(e)),
        }
    }
}

impl Ring for Uring {
    unsafe fn submit(&self, user_data: u64, request: Request) -> Result<()> {
        let entry = match request {
            Request::RecvMsg { fd, msg, flags } => opcode::RecvMsg::new(types::Fd(fd), msg)
                .flags(flags)
                .build(),
            Request::SendMsg { fd, msg, flags } => opcode::SendMsg::new(types::Fd(fd), msg)
                .flags(flags)
                .build(),
            Request::Recv {
                fd,
                buf,
                len,
                flags,
            } => opcode::Recv::new(types::Fd(fd), buf, len as u32)
                .flags(flags as i32)
                .build(),
            Request::Send {
                fd,
                buf,
                len,
                flags,
            } => opcode::Send::new(types::Fd(fd), buf, len as u32)
                .flags(flags as i32)
                .build(),
            Request::Accept { fd, addr, len } => opcode::Accept::new(types::Fd(fd), addr, len)
                .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
                .build(),
            Request::RecvPooled {
                fd, pool, flags, ..
            } => {
                // SAFETY: the request's pool outlives it (the `submit` contract).
                let pool = unsafe { &*pool };
                let Some(group) = pool.group() else {
                    return Err(Error::new(codes::WSAEINVAL)); // another backend's pool
                };
                opcode::Recv::new(types::Fd(fd), std::ptr::null_mut(), pool.size() as u32)
                    .buf_group(group)
                    .flags(flags as i32)
                    .build()
                    .flags(squeue::Flags::BUFFER_SELECT)
            }
            Request::PollIn { fd } => {
                opcode::PollAdd::new(types::Fd(fd), (libc::POLLIN | libc::POLLRDHUP) as u32).build()
            }
            Request::PollOut { fd } => {
                opcode::PollAdd::new(types::Fd(fd), libc::POLLOUT as u32).build()
            }
        };
        self.push(entry.user_data(user_data), true)
    }

    fn streams_receives(&self) -> bool {
        self.streams
    }

    unsafe fn submit_stream(&self, user_data: u64, fd: RawFd, pool: &PoolShared) -> Result<()> {
        let Some(group) = pool.group().filter(|_| self.streams) else {
            return Err(Error::new(codes::WSAEOPNOTSUPP));
        };
        let entry = opcode::RecvMulti::new(types::Fd(fd), group).build();
        self.push(entry.user_data(user_data), true)
    }

    fn stop_stream(&self, user_data: u64) -> Result<()> {
        self.push_cancel(user_data, true)
    }

    fn cancel(&self, user_data: u64) -> Result<()> {
        self.push_cancel(user_data, false)
    }

    fn reap(&self, timeout: Option<Duration>) -> Result<usize> {
        let slot = lock(&self.cq_lock);
        if let Some(owner) = &self.owner {
            if !owner.claim(&self.ring)? {
                // Callers ask `may_reap` first: this is a bug of theirs, not a kernel error.
                return Err(Error::new(codes::WSAEINVAL));
            }
            self.buf_rings.unregister_retired(&self.ring);
        }
        // SAFETY: `cq_lock` is held, so no other completion view of this ring exists.
        let empty = unsafe { self.ring.completion_shared() }.is_empty();
        if empty && timeout != Some(Duration::ZERO) {
            self.enter(1, timeout)?;
        } else if self.has_queued() {
            self.enter(0, None)?; // deferred submissions go in even when nothing is awaited
        }
        // The thread's scratch list: taken, not borrowed, so that a delivery that reaps again
        // (none does today) would only get a new list.
        let mut batch = REAPED.take();
        {
            // SAFETY: as above.
            let cq = unsafe { self.ring.completion_shared() };
            batch.extend(cq.map(|cqe| (cqe.user_data(), cqe.result(), cqe.flags())));
        }
        // Deliver without the lock, so that another thread can reap meanwhile.
        drop(slot);
        super::count_many(Counter::Completions, batch.len());
        let mut delivered = 0;
        let mut woken = false;
        for &(user_data, result, flags) in &batch {
            if user_data == 0 {
                continue; // a cancel's or a wake's own completion: nothing to deliver.
            }
            if user_data == WAKE_TAG {
                woken = true;
                continue;
            }
            if user_data & STREAM_TAG != 0 {
                let (buffer, more) = (cqueue::buffer_select(flags), cqueue::more(flags));
                // SAFETY: a tagged user_data was given to `submit_stream` by the engine; the
                // stream's last arrival is the one without `more`.
                unsafe { crate::engine::arrive(user_data, result, buffer, more) };
                delivered += 1;
                continue;
            }
            // SAFETY: every non-zero user_data on this ring was given to `submit` by the engine,
            // which made it from `Arc::into_raw` of the operation, and each completes once.
            unsafe { crate::engine::complete(user_data, result, cqueue::buffer_select(flags)) };
            delivered += 1;
        }
        batch.clear();
        REAPED.set(batch);
        if woken {
            self.rearm_wake()?; // after every completion is delivered, whatever this returns
        }
        Ok(delivered)
    }

    fn wake(&self) -> Result<()> {
        if let Some(owner) = &self.owner {
            owner.wake();
            return Ok(());
        }
        // A wake is for another thread: it must reach the kernel now.
        self.push(opcode::Nop::new().build().user_data(0), false)
    }

    fn batches_waits(&self) -> bool {
        self.owner.is_some()
    }

    fn may_reap(&self) -> bool {
        self.owner.as_ref().map_or(true, |owner| owner.may_claim())
    }

    fn batches_submissions(&self) -> bool {
        true
    }

    unsafe fn register_buffers(
        &self,
        memory: *mut u8,
        size: usize,
        count: u16,
    ) -> Result<Option<u16>> {
        if !self.may_register() {
            // A single-issuer ring takes registrations from its owner only, once it has one.
            return Err(Error::with_errno(codes::WSAEOPNOTSUPP, libc::EOPNOTSUPP));
        }
        // SAFETY: the caller's contract.
        unsafe { self.buf_rings.register(&self.ring, memory, size, count) }.map(Some)
    }

    fn provide_buffer(&self, group: u16, id: u16) {
        self.buf_rings.provide(group, id);
    }

    fn release_buffers(&self, group: u16, memory: PoolMemory) {
        if self.may_register() && self.buf_rings.unregister(&self.ring, group) {
            drop(memory);
        } else {
            // For the owner's next reap to unregister, or for the ring's drop.
            self.buf_rings.retire(group, memory);
        }
    }

    fn flush(&self) -> Result<()> {
        match (self.has_queued(), self.owned_elsewhere()) {
            (false, _) => Ok(()),
            (true, Some(owner)) => {
                owner.wake();
                Ok(())
            }
            (true, None) => self.enter(0, None),
        }
    }
}

#[cfg(test)]
mod tests;
