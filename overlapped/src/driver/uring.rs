//! The io_uring backend: one ring for the process, fed from any thread, reaped by one thread.
//!
//! Any thread may push a request: pushing onto the submission queue happens under a short lock,
//! and the pushing thread then enters the kernel to submit it. A dedicated reaper thread waits in
//! the kernel for completions and delivers each one to [`crate::engine::complete`]. That thread is
//! what makes an event signalled while no thread of the program is inside the library (S25).
//!
//! The ring is set up without `COOP_TASKRUN`: the kernel runs a request's completion work in the
//! submitting thread's context, and with cooperative task running it would wait until that
//! thread entered the kernel again, which an event-model program may never do.

use std::io;
use std::sync::Mutex;

use io_uring::{opcode, types, IoUring, Probe};

use super::{Backend, Counters, Request, COUNTERS};
use crate::error::{Error, Result};
use crate::event::lock;

/// Submission queue entries; submitters wait for the kernel to take some when it is full.
const SQ_ENTRIES: u32 = 1024;
/// Completion queue entries: room for many more operations in flight than the submission queue
/// holds at once.
const CQ_ENTRIES: u32 = 16384;

pub(crate) struct Uring {
    ring: IoUring,
    /// Serialises pushes onto the submission queue (the ring's shared submission view may exist
    /// only once at a time).
    sq_lock: Mutex<()>,
}

impl Uring {
    /// Sets up the ring, checks that the kernel supports every opcode the library uses, and
    /// starts the reaper thread. Returns the backend and the reason it was chosen.
    pub(crate) fn start() -> io::Result<(&'static Uring, String)> {
        let ring = IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .build(SQ_ENTRIES)?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        let needed = [
            ("RECVMSG", opcode::RecvMsg::CODE),
            ("SENDMSG", opcode::SendMsg::CODE),
            ("POLL_ADD", opcode::PollAdd::CODE),
            ("ASYNC_CANCEL", opcode::AsyncCancel::CODE),
        ];
        if let Some((name, _)) = needed.iter().find(|(_, code)| !probe.is_supported(*code)) {
            return Err(io::Error::other(format!(
                "the kernel's io_uring lacks the {name} opcode"
            )));
        }
        // The backend lives for the rest of the process: in-flight requests may point into
        // memory the ring's reaper frees, so the ring must never be torn down under them.
        let uring: &'static Uring = Box::leak(Box::new(Uring {
            ring,
            sq_lock: Mutex::new(()),
        }));
        std::thread::Builder::new()
            .name("overlapped-reaper".into())
            .spawn(move || uring.reap_forever())?;
        let reason = format!(
            "io_uring ring set up ({SQ_ENTRIES} submission entries) and every opcode the library \
             uses is supported: {}",
            needed.map(|(name, _)| name).join(", ")
        );
        Ok((uring, reason))
    }

    /// Pushes one entry and enters the kernel to submit it.
    fn push(&self, entry: io_uring::squeue::Entry) -> Result<()> {
        {
            let _guard = lock(&self.sq_lock);
            // SAFETY: `sq_lock` is held, so no other submission view of this ring exists.
            let mut sq = unsafe { self.ring.submission_shared() };
            // SAFETY: the entry's pointers are valid until its completion (the caller's contract
            // on `Backend::submit`); the `AsyncCancel` entries carry no pointers.
            while unsafe { sq.push(&entry) }.is_err() {
                sq.sync();
                self.enter_submit()?;
                sq.sync();
            }
            Counters::bump(&COUNTERS.submissions);
        }
        self.enter_submit()
    }

    fn enter_submit(&self) -> Result<()> {
        loop {
            Counters::bump(&COUNTERS.kernel_entries);
            match self.ring.submitter().submit() {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // The completion queue is overflowing; the reaper is draining it and the entries
                // stay queued for the next entry into the kernel.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Ok(()),
                Err(e) => return Err(Error::from(e)),
            }
        }
    }

    fn reap_forever(&self) -> ! {
        let mut batch: Vec<(u64, i32)> = Vec::with_capacity(256);
        loop {
            Counters::bump(&COUNTERS.kernel_entries);
            match self.ring.submitter().submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                Err(e) => panic!("io_uring wait failed: {e}"),
            }
            {
                // SAFETY: only this thread ever takes the completion view of the ring.
                let cq = unsafe { self.ring.completion_shared() };
                batch.extend(cq.map(|cqe| (cqe.user_data(), cqe.result())));
            }
            for (user_data, result) in batch.drain(..) {
                Counters::bump(&COUNTERS.completions);
                if user_data == 0 {
                    continue; // the completion of a cancel request: the target reports itself.
                }
                // SAFETY: every non-zero user_data on this ring was given to `submit` by the
                // engine, which made it from `Arc::into_raw` of the operation, and each
                // completes exactly once.
                unsafe { crate::engine::complete(user_data, result) };
            }
        }
    }
}

impl Backend for Uring {
    unsafe fn submit(&self, user_data: u64, request: Request) -> Result<()> {
        let entry = match request {
            Request::RecvMsg { fd, msg, flags } => opcode::RecvMsg::new(types::Fd(fd), msg)
                .flags(flags)
                .build(),
            Request::SendMsg { fd, msg, flags } => opcode::SendMsg::new(types::Fd(fd), msg)
                .flags(flags)
                .build(),
            Request::PollIn { fd } => {
                opcode::PollAdd::new(types::Fd(fd), (libc::POLLIN | libc::POLLRDHUP) as u32).build()
            }
        };
        self.push(entry.user_data(user_data))
    }

    fn cancel(&self, user_data: u64) -> Result<()> {
        self.push(opcode::AsyncCancel::new(user_data).build().user_data(0))
    }
}
