//! The backend contract: what the engine asks of the kernel interface below it.
//!
//! Every backend provides:
//! - [`Backend::submit`]: start one kernel request ([`Request`]) tagged with a `user_data` word,
//!   from any thread. Its result (a byte count or event mask, or `-errno`) is later passed to
//!   [`crate::engine::complete`] exactly once, on a thread of the backend's choosing, even if no thread
//!   of the program is inside the library at that moment (S25).
//! - [`Backend::cancel`]: ask for an early end of the request with that `user_data`. Its
//!   completion still arrives exactly once: `-ECANCELED`, or its real result if it won the race.
//! - [`Backend::stats`]: counters of submissions, completions and kernel entries.
//!
//! The engine above never blocks in the kernel on a socket: it tries each operation without
//! blocking itself (the "done at once" of S2) and hands the backend only what would block. Which
//! backend runs is decided once per process, when the first operation starts; [`backend_info`]
//! tells which and why.

mod uring;

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::error::{codes, Error, Result};

/// One kernel request. Its pointers must stay valid until its completion has been delivered.
pub(crate) enum Request {
    /// `recvmsg(fd, msg, flags)`.
    RecvMsg {
        fd: RawFd,
        msg: *mut libc::msghdr,
        flags: u32,
    },
    /// `sendmsg(fd, msg, flags)`.
    SendMsg {
        fd: RawFd,
        msg: *const libc::msghdr,
        flags: u32,
    },
    /// Wait until `fd` is readable (or in error); the result is the `poll` event mask.
    PollIn { fd: RawFd },
}

/// The kernel interface that runs the operations; see the module docs for the contract.
pub(crate) trait Backend: Send + Sync {
    /// Starts `request`; its result goes to [`crate::engine::complete`] with `user_data`.
    ///
    /// # Safety
    /// The memory the request points to must stay valid, and not be accessed by the caller, until
    /// the completion for `user_data` has been delivered. `user_data` must not be 0 (reserved
    /// for the backend's own requests) and must not name another request in flight.
    unsafe fn submit(&self, user_data: u64, request: Request) -> Result<()>;

    /// Asks the kernel to end the request tagged `user_data` early. The caller must keep that
    /// request's memory alive while this call runs, so that the tag cannot name a newer request.
    fn cancel(&self, user_data: u64) -> Result<()>;
}

/// Which kernel interface carries the operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// io_uring: the kernel completes operations itself.
    IoUring,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::IoUring => "io_uring",
        })
    }
}

/// The backend this process uses, and why it was chosen.
#[derive(Clone, Debug)]
pub struct BackendInfo {
    /// The backend.
    pub kind: BackendKind,
    /// A sentence saying why this backend was chosen.
    pub reason: String,
}

/// Counters of the engine's work since the process started, for measuring system calls per
/// operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests handed to the kernel (io_uring submission queue entries).
    pub submissions: u64,
    /// Kernel completions received (completion queue entries).
    pub completions: u64,
    /// Entries into the kernel made to submit or to wait (`io_uring_enter` calls).
    pub kernel_entries: u64,
    /// Operations that completed at once, without a kernel request.
    pub immediate: u64,
}

/// The counters behind [`Stats`], shared by the backend and the engine.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) submissions: AtomicU64,
    pub(crate) completions: AtomicU64,
    pub(crate) kernel_entries: AtomicU64,
    pub(crate) immediate: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) static COUNTERS: Counters = Counters {
    submissions: AtomicU64::new(0),
    completions: AtomicU64::new(0),
    kernel_entries: AtomicU64::new(0),
    immediate: AtomicU64::new(0),
};

/// The engine's counters now.
pub fn stats() -> Stats {
    Stats {
        submissions: COUNTERS.submissions.load(Ordering::Relaxed),
        completions: COUNTERS.completions.load(Ordering::Relaxed),
        kernel_entries: COUNTERS.kernel_entries.load(Ordering::Relaxed),
        immediate: COUNTERS.immediate.load(Ordering::Relaxed),
    }
}

struct Selected {
    backend: &'static dyn Backend,
    info: BackendInfo,
}

static SELECTED: OnceLock<std::result::Result<Selected, Error>> = OnceLock::new();

fn select() -> std::result::Result<Selected, Error> {
    match uring::Uring::start() {
        Ok((backend, reason)) => Ok(Selected {
            backend,
            info: BackendInfo {
                kind: BackendKind::IoUring,
                reason,
            },
        }),
        Err(e) => Err(Error::with_errno(
            codes::WSASYSCALLFAILURE,
            e.raw_os_error().unwrap_or(libc::ENOSYS),
        )),
    }
}

/// The backend in use, set up on first call.
pub(crate) fn backend() -> Result<&'static dyn Backend> {
    match SELECTED.get_or_init(select) {
        Ok(s) => Ok(s.backend),
        Err(e) => Err(*e),
    }
}

/// Which backend this process uses and why; sets it up if no operation has yet.
pub fn backend_info() -> Result<BackendInfo> {
    match SELECTED.get_or_init(select) {
        Ok(s) => Ok(s.info.clone()),
        Err(e) => Err(*e),
    }
}
