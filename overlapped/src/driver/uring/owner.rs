//! The owner of a batching ring: the one thread that may enter the kernel on it.
//!
//! A batch window lets the thread waiting on a ring sleep through the first completions until
//! the window ends, so that one wake-up serves many. That only saves wake-ups if the kernel does
//! not wake the thread to finish each request: with its default task running it does (the
//! completion work runs in the waiting thread), so a batching ring is set up with deferred task
//! running (`IORING_SETUP_DEFER_TASKRUN`), where that work waits until the thread asks for
//! completions and the kernel wakes it only when enough are there or the window has passed.
//! The kernel allows deferred task running only with a single issuer: one thread alone may
//! submit and wait. That thread is the first one that reaps the ring (the ring is created
//! disabled and enabled by it), and it keeps the role for the ring's life.
//!
//! Other threads still queue requests: the submission queue is shared memory, written under the
//! ring's lock. They cannot hand them to the kernel, so they wake the owner instead, by writing
//! to an eventfd that the ring polls; the owner's next entry into the kernel submits them.
//!
//! When the owner exits, the kernel cancels what it submitted and nobody can enter the ring any
//! more. The ring then says so: a reap or a submission fails with `ERROR_ABANDONED_WAIT_0`, as
//! on a closed port, instead of waiting for completions that cannot come.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use io_uring::{opcode, squeue, types, IoUring};

use crate::error::{codes, Error, Result};
use crate::thread_token::ThreadToken;

/// The tag of the completion of the owner's poll on its wake-up descriptor. Operations are
/// tagged with the address of their record, which is never this.
pub(super) const WAKE_TAG: u64 = u64::MAX;

/// The owner word of a ring whose owner has exited; no thread token is this.
const GONE: usize = usize::MAX;

thread_local! {
    /// The owner words of the rings the calling thread owns, marked [`GONE`] when it exits.
    static OWNED: OwnedRings = const { OwnedRings(RefCell::new(Vec::new())) };
}

struct OwnedRings(RefCell<Vec<Weak<AtomicUsize>>>);

impl Drop for OwnedRings {
    fn drop(&mut self) {
        for owner in self.0.borrow().iter().filter_map(Weak::upgrade) {
            owner.store(GONE, Ordering::Release);
        }
    }
}

pub(super) struct Owner {
    /// How long a wait gathers completions, in microseconds (at least 1).
    pub(super) window_us: u32,
    /// The owner's [`ThreadToken`] word: 0 until a thread has claimed the ring, [`GONE`] once
    /// the owner has exited.
    thread: Arc<AtomicUsize>,
    /// Written by other threads to wake the owner; the ring polls it.
    wake_fd: OwnedFd,
}

impl Owner {
    pub(super) fn new(window_us: u32) -> io::Result<Owner> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new descriptor that
        // nothing else owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Owner {
            window_us,
            thread: Arc::new(AtomicUsize::new(0)),
            // SAFETY: `fd` was just created and is owned by nothing else.
            wake_fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// The poll that makes a write to the wake-up descriptor a completion on the ring.
    pub(super) fn wake_poll(&self) -> squeue::Entry {
        opcode::PollAdd::new(types::Fd(self.wake_fd.as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(WAKE_TAG)
    }

    /// Whether the calling thread owns the ring.
    pub(super) fn is_current(&self) -> bool {
        self.thread.load(Ordering::Acquire) == ThreadToken::current().as_word()
    }

    /// Whether the calling thread owns the ring or may become its owner — or the owner has
    /// exited, which a reap then reports.
    pub(super) fn may_claim(&self) -> bool {
        matches!(self.thread.load(Ordering::Acquire), 0 | GONE) || self.is_current()
    }

    /// Whether the calling thread may register with the ring: no thread has claimed it yet (it
    /// is still disabled), or the calling thread owns it.
    pub(super) fn may_register(&self) -> bool {
        self.thread.load(Ordering::Acquire) == 0 || self.is_current()
    }

    /// `ERROR_ABANDONED_WAIT_0` if the owner has exited: the ring can take and give nothing.
    pub(super) fn check_alive(&self) -> Result<()> {
        match self.thread.load(Ordering::Acquire) {
            GONE => Err(Error::new(codes::ERROR_ABANDONED_WAIT_0)),
            _ => Ok(()),
        }
    }

    /// Makes the calling thread the owner if there is none yet, enabling the ring for it.
    /// Returns whether the calling thread owns the ring. Callers serialise claims (the ring's
    /// reaping lock).
    pub(super) fn claim(&self, ring: &IoUring) -> Result<bool> {
        self.check_alive()?;
        let me = ThreadToken::current().as_word();
        if self.thread.load(Ordering::Acquire) != 0 {
            return Ok(self.is_current());
        }
        // Noted first, so that the ring is marked when this thread exits; a thread already
        // exiting does not take the ring.
        let noted = OWNED.try_with(|owned| {
            let mut owned = owned.0.borrow_mut();
            owned.retain(|ring| ring.strong_count() > 0); // rings dropped since
            owned.push(Arc::downgrade(&self.thread));
        });
        if noted.is_err() {
            return Ok(false);
        }
        ring.submitter().register_enable_rings()?;
        self.thread.store(me, Ordering::Release);
        Ok(true)
    }

    /// Wakes the owner from its wait, so that its next entry into the kernel submits what other
    /// threads queued.
    pub(super) fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local to a descriptor this struct owns. A full
        // counter (EAGAIN) means a wake is pending anyway.
        let _ = unsafe {
            libc::write(
                self.wake_fd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// Empties the wake-up descriptor once its poll has fired, before the poll is queued again.
    pub(super) fn consume_wake(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads 8 bytes into a live local from a descriptor this struct owns; EAGAIN
        // (already empty) is fine.
        let _ = unsafe {
            libc::read(
                self.wake_fd.as_raw_fd(),
                (&mut count as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}
