//! The backend contract: what the engine asks of the kernel interface below it.
//!
//! A backend provides rings. A `Ring` is one queue of kernel requests and their completions:
//! - `Ring::submit` starts one kernel request (`Request`) tagged with a `user_data` word, from
//!   any thread. Its result (a byte count or event mask, or `-errno`) is later passed to
//!   `crate::engine::complete` exactly once, by whichever thread reaps the ring.
//! - `Ring::cancel` asks for an early end of the request with that tag. Its completion still
//!   arrives exactly once: `-ECANCELED`, or its real result if it won the race.
//! - `Ring::submit_stream` (io_uring only) starts a receive that stays in the kernel while data
//!   comes, each arrival passed to `crate::engine::arrive`: a socket receiving ahead into a pool.
//! - `Ring::reap` waits (up to a timeout) for completions and delivers them; `Ring::wake`
//!   makes a thread waiting in `reap` return early, from any thread.
//!
//! Which ring an operation goes to follows from how it notifies. Operations that signal events
//! go to the shared ring, which a background thread reaps, so that an event becomes signalled
//! even while no thread of the program is inside the library (S25).
//!
//! The engine above never blocks in the kernel on a socket: it tries each operation without
//! blocking itself (the "done at once" of S2) and hands a ring only what would block. A ring
//! that knows which sockets have nothing for an operation (epoll's, which sees every arrival)
//! says so through `Ring::readiness`, and the engine then skips a try that would fail. Which
//! backend runs is decided once per process, when the first ring is needed: io_uring if the
//! kernel sets up a ring and supports every opcode the library uses, else epoll, which emulates
//! completion on readiness (old kernels; sandboxes such as Docker's default seccomp profile
//! refuse `io_uring_setup`). `OVERLAPPED_BACKEND=uring|epoll` forces one; [`backend_info`] tells
//! which and why.

mod counters;
mod epoll;
pub(crate) mod nonblocking;
mod uring;

pub use counters::stats;
pub(crate) use counters::{count, count_many, Counter};

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::error::{codes, Error, Result};
use crate::pool::{PoolMemory, PoolShared};

/// One kernel request. Its pointers must stay valid until its completion has been delivered.
#[derive(Clone, Copy, Debug)]
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
    /// `recv(fd, buf, len, flags)`: a stream receive into one buffer, without a message header.
    Recv {
        fd: RawFd,
        buf: *mut u8,
        len: usize,
        flags: u32,
    },
    /// `send(fd, buf, len, flags)`: a stream send of one buffer, without a message header.
    Send {
        fd: RawFd,
        buf: *const u8,
        len: usize,
        flags: u32,
    },
    /// `accept4(fd, addr, len, SOCK_NONBLOCK | SOCK_CLOEXEC)`: the result is the new descriptor.
    Accept {
        fd: RawFd,
        addr: *mut libc::sockaddr,
        len: *mut libc::socklen_t,
    },
    /// `recv(fd, buffer, size, flags)` into a free buffer of `pool`, picked when the data is
    /// there: by the kernel from the pool's provided-buffer ring (io_uring), or taken from the
    /// pool's list by the call, which writes its id to `picked` (epoll, and first attempts).
    RecvPooled {
        fd: RawFd,
        pool: *const PoolShared,
        picked: *mut u32,
        flags: u32,
    },
    /// Wait until `fd` is readable (or in error); the result is the `poll` event mask.
    PollIn { fd: RawFd },
    /// Wait until `fd` is writable (or in error): a connect in progress has ended.
    PollOut { fd: RawFd },
}

// SAFETY: a request's pointers are only dereferenced by the system call or kernel request that
// performs it, while the engine keeps the memory alive and untouched (the `Ring::submit`
// contract); which thread makes that call does not matter.
unsafe impl Send for Request {}

impl Request {
    /// The descriptor the request works on.
    pub(crate) fn fd(&self) -> RawFd {
        match *self {
            Request::RecvMsg { fd, .. }
            | Request::SendMsg { fd, .. }
            | Request::Recv { fd, .. }
            | Request::Send { fd, .. }
            | Request::Accept { fd, .. }
            | Request::RecvPooled { fd, .. }
            | Request::PollIn { fd }
            | Request::PollOut { fd } => fd,
        }
    }
}

impl Request {
    /// Which readiness the request waits for.
    pub(crate) fn side(&self) -> Side {
        match self {
            Request::RecvMsg { .. }
            | Request::Recv { .. }
            | Request::RecvPooled { .. }
            | Request::PollIn { .. }
            | Request::Accept { .. } => Side::Read,
            Request::SendMsg { .. } | Request::Send { .. } | Request::PollOut { .. } => Side::Write,
        }
    }

    /// Whether a successful result of `result` bytes shows that the request left nothing behind
    /// to read: a stream receive that did not fill its buffer (not a peek, whose data stays).
    /// An end of stream (0) is no such proof: it stays readable, and no new event will say so.
    pub(crate) fn drained_by(&self, result: usize) -> bool {
        match *self {
            Request::Recv { len, flags, .. } => {
                let keeps = (libc::MSG_PEEK | libc::MSG_OOB) as u32;
                flags & keeps == 0 && result > 0 && result < len
            }
            Request::RecvPooled { pool, flags, .. } => {
                let keeps = (libc::MSG_PEEK | libc::MSG_OOB) as u32;
                // SAFETY: the request's pool outlives it (the `submit` contract).
                let size = unsafe { (*pool).size() };
                flags & keeps == 0 && result > 0 && result < size
            }
            _ => false,
        }
    }
}

/// The two directions of a descriptor's readiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Read = 0,
    Write = 1,
}

/// The bit that marks a receive stream's `user_data` ([`Ring::submit_stream`]): the address of
/// the stream's record with this bit set. An operation's `user_data` is the address of its
/// record; both are aligned, so the bit is otherwise clear.
pub(crate) const STREAM_TAG: u64 = 1;

/// What a ring knows of whether a side of a descriptor is worth a system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Readiness {
    /// The ring does not watch the descriptor: try.
    Unknown,
    /// Something arrived that nobody has found drained since; the number is the ring's epoch
    /// for this side, which [`Ring::drained`] gives back.
    Ready(u64),
    /// Found drained, and nothing arrived since: an attempt would fail with `EAGAIN`.
    NotReady,
}

/// A queue of kernel requests and their completions; see the module docs for the contract.
pub(crate) trait Ring: Send + Sync {
    /// Starts `request`; its result goes to [`crate::engine::complete`] with `user_data`.
    ///
    /// # Safety
    /// The memory the request points to must stay valid, and not be accessed by the caller, until
    /// the completion for `user_data` has been delivered. `user_data` must not be 0 (reserved
    /// for the ring's own requests) and must not name another request in flight.
    unsafe fn submit(&self, user_data: u64, request: Request) -> Result<()>;

    /// Whether the ring can keep one receive of a socket going for as long as data comes, each
    /// arrival into a buffer of a pool the kernel picks from (io_uring's multishot receive, Linux
    /// 6.0): [`Ring::submit_stream`].
    fn streams_receives(&self) -> bool {
        false
    }

    /// Starts a socket's receive stream into `pool`'s buffers: each arrival goes to
    /// [`crate::engine::arrive`] with `user_data`, which has [`STREAM_TAG`] set, until one comes
    /// that says the stream has ended. Only on rings that [`Ring::streams_receives`].
    ///
    /// # Safety
    /// `pool`, and whatever `user_data` names, must stay alive until the stream's last arrival
    /// is delivered; `fd` must be open when this is called (the kernel then holds the socket).
    unsafe fn submit_stream(&self, _user_data: u64, _fd: RawFd, _pool: &PoolShared) -> Result<()> {
        Err(Error::new(codes::WSAEOPNOTSUPP))
    }

    /// Asks the kernel to end the receive stream tagged `user_data`, with the calling thread's
    /// next entry into the kernel if it defers its submissions to this ring (a port's worker,
    /// which enters it for its next wait), else at once. Its end still comes as its last
    /// arrival.
    fn stop_stream(&self, user_data: u64) -> Result<()> {
        self.cancel(user_data)
    }

    /// Asks the kernel to end the request tagged `user_data` early. The caller must keep that
    /// request's memory alive while this call runs, so that the tag cannot name a newer request.
    fn cancel(&self, user_data: u64) -> Result<()>;

    /// Waits until completions arrive, `timeout` passes (`None`: no limit) or [`Ring::wake`] is
    /// called, and delivers what completed. Returns the number of operation completions delivered.
    fn reap(&self, timeout: Option<Duration>) -> Result<usize>;

    /// Makes a `reap` in progress, or the next one, return.
    fn wake(&self) -> Result<()>;

    /// Hands the kernel the requests queued by threads that deferred their submissions.
    fn flush(&self) -> Result<()>;

    /// Whether submissions can wait for the next entry into the kernel and go in together
    /// (io_uring). Where they cannot (epoll registers each at once), deferring would only skip
    /// the first attempt that completes most operations without the ring.
    fn batches_submissions(&self) -> bool;

    /// Whether the ring's waits gather completions for a window (a port's batch window): CPU
    /// first, so operations go to the kernel with the next wait even when they would finish at
    /// once.
    fn batches_waits(&self) -> bool {
        false
    }

    /// Whether the calling thread may reap this ring: any thread may, except on a batching ring
    /// (io_uring with deferred task running), which only its owner reaps.
    fn may_reap(&self) -> bool {
        true
    }

    /// Whether the ring knows the readiness of the descriptors it watches (epoll), so that the
    /// engine can skip a first attempt that would find nothing.
    fn tracks_readiness(&self) -> bool {
        false
    }

    /// What the ring knows of `fd`'s readiness on `side`.
    fn readiness(&self, _fd: RawFd, _side: Side) -> Readiness {
        Readiness::Unknown
    }

    /// Tells the ring that an attempt begun when [`Ring::readiness`] said `Ready(epoch)` found
    /// `side` of `fd` drained: `proven` by `EAGAIN`, or inferred from a stream receive that did
    /// not fill its buffer (which an end of stream behind the data makes wrong).
    fn drained(&self, _fd: RawFd, _side: Side, _epoch: u64, _proven: bool) {}

    /// Registers `count` buffers of `size` bytes at `memory` as a group the kernel picks from
    /// for pooled receives, and returns the group; `Ok(None)` where the kernel picks no buffers
    /// (epoll: the pool hands them out itself). `WSAEOPNOTSUPP` where the ring cannot take one.
    ///
    /// # Safety
    /// The memory must stay valid until it is handed to [`Ring::release_buffers`].
    unsafe fn register_buffers(
        &self,
        _memory: *mut u8,
        _size: usize,
        _count: u16,
    ) -> Result<Option<u16>> {
        Ok(None)
    }

    /// Gives buffer `id` of `group` back to the kernel to pick again.
    fn provide_buffer(&self, _group: u16, _id: u16) {}

    /// Unregisters a group with no receive pending on it and frees its memory once the kernel
    /// has let go of it: at once, or where only another thread may unregister it (a batching
    /// ring's owner), at that thread's next reap or when the ring is dropped.
    fn release_buffers(&self, _group: u16, memory: PoolMemory) {
        drop(memory);
    }
}

/// Makes every ring forget what it knows of `fd`, which is about to be closed or replaced: a
/// later descriptor with the same number is another socket.
pub(crate) fn forget_descriptor(fd: RawFd) {
    epoll::forget(fd);
}

thread_local! {
    /// The ring whose submissions the calling thread leaves queued, because it is about to reap
    /// that ring (or flush it) itself: its next entry into the kernel carries them all at once.
    static DEFERRING: RefCell<Deferring> = const { RefCell::new(Deferring(None)) };
    /// The address of that ring, null for none: what a port's worker (every get) and the engine
    /// (every operation) look at, a word read without a borrow, and without the check that the
    /// thread's locals are still alive that `DEFERRING`, which has a destructor, needs.
    static DEFERRING_AT: Cell<*const ()> = const { Cell::new(std::ptr::null()) };
}

/// The ring a thread defers to. Dropped when the thread's locals are: from then on the thread
/// defers to nothing (its address is cleared), so that a request made while the thread's other
/// locals are dropped is not left queued.
struct Deferring(Option<Arc<dyn Ring>>);

impl Drop for Deferring {
    fn drop(&mut self) {
        DEFERRING_AT.set(std::ptr::null());
    }
}

/// The address a ring is known by in `DEFERRING_AT`.
fn address_of(ring: &Arc<dyn Ring>) -> *const () {
    Arc::as_ptr(ring) as *const ()
}

/// Makes the calling thread leave its submissions to `ring` queued until it next reaps or
/// flushes that ring; `None` ends that, handing over what was left queued.
#[inline]
pub(crate) fn defer_submissions(ring: Option<&Arc<dyn Ring>>) {
    // A port's worker names the same ring at every get: nothing to clone, drop or flush then.
    let before = DEFERRING_AT.get();
    let unchanged = match ring {
        Some(now) => before == address_of(now) || (before.is_null() && !now.batches_submissions()),
        None => before.is_null(),
    };
    if !unchanged {
        change_deferral(ring);
    }
}

/// [`defer_submissions`] when the ring changes.
#[inline(never)]
fn change_deferral(ring: Option<&Arc<dyn Ring>>) {
    let ring = ring.filter(|r| r.batches_submissions());
    // While the thread's locals are being destroyed there is nothing to defer to any more.
    let before = DEFERRING
        .try_with(|d| {
            DEFERRING_AT.set(ring.map_or(std::ptr::null(), address_of));
            std::mem::replace(&mut d.borrow_mut().0, ring.cloned())
        })
        .ok()
        .flatten();
    if let Some(before) = before {
        // Another ring, or none: what was left queued for the one before goes in now. A failed
        // flush leaves the requests for that ring's next entry into the kernel.
        let _ = before.flush();
    }
}

/// Whether the calling thread defers its submissions to the ring at `ring`.
pub(crate) fn defers_to(ring: *const ()) -> bool {
    !ring.is_null() && DEFERRING_AT.get() == ring
}

/// Hands over what the calling thread deferred, before it blocks on something other than the
/// ring it deferred to (which would otherwise never see those requests).
pub(crate) fn flush_deferred() {
    let ring = DEFERRING.try_with(|d| d.borrow().0.clone()).ok().flatten();
    if let Some(ring) = ring {
        let _ = ring.flush();
    }
}

/// Which kernel interface carries the operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// io_uring: the kernel completes operations itself.
    IoUring,
    /// epoll: the library waits for readiness, then performs each operation without blocking.
    Epoll,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::IoUring => "io_uring",
            BackendKind::Epoll => "epoll",
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

/// The environment variable that forces a backend: `uring` or `epoll`.
pub const BACKEND_ENV: &str = "OVERLAPPED_BACKEND";

static SELECTED: OnceLock<std::result::Result<BackendInfo, Error>> = OnceLock::new();

/// Chooses the backend: io_uring if the kernel offers everything the library uses, else epoll,
/// unless [`BACKEND_ENV`] forces one. A forced io_uring that the kernel lacks is an error, not a
/// silent fallback; so is a value that names no backend.
fn select() -> std::result::Result<BackendInfo, Error> {
    let forced = std::env::var(BACKEND_ENV).ok();
    match forced.as_deref() {
        None | Some("") => Ok(match uring::probe() {
            Ok(supported) => BackendInfo {
                kind: BackendKind::IoUring,
                reason: supported,
            },
            Err(e) => BackendInfo {
                kind: BackendKind::Epoll,
                reason: format!("{}; using epoll", uring_failure(&e)),
            },
        }),
        Some("uring") => match uring::probe() {
            Ok(supported) => Ok(BackendInfo {
                kind: BackendKind::IoUring,
                reason: format!("forced by {BACKEND_ENV}=uring; {supported}"),
            }),
            Err(e) => Err(Error::with_errno(
                codes::WSASYSCALLFAILURE,
                e.raw_os_error().unwrap_or(libc::ENOSYS),
            )),
        },
        Some("epoll") => Ok(BackendInfo {
            kind: BackendKind::Epoll,
            reason: format!("forced by {BACKEND_ENV}=epoll"),
        }),
        Some(other) => {
            // The error type carries codes only; say once, where a person will see it, what
            // was wrong. Every operation then fails with this error.
            eprintln!(
                "overlapped: {BACKEND_ENV}={other:?} names no backend; use \"uring\" or \"epoll\""
            );
            Err(Error::with_errno(codes::WSAEINVAL, libc::EINVAL))
        }
    }
}

/// Says why io_uring cannot be used, naming the system call that failed when it is the ring's
/// setup (as under a seccomp profile that forbids `io_uring_setup`).
fn uring_failure(e: &std::io::Error) -> String {
    let Some(errno) = e.raw_os_error() else {
        return e.to_string(); // the kernel's io_uring lacks a feature or an opcode.
    };
    // strerror's words, without the "(os error N)" that Display adds.
    let full = std::io::Error::from_raw_os_error(errno).to_string();
    let text = full.split(" (os error").next().unwrap_or(&full);
    let name = errno_name(errno);
    match io_uring::IoUring::new(2) {
        Err(setup) if setup.raw_os_error() == Some(errno) => {
            format!("io_uring_setup failed: {text} ({name})")
        }
        _ => format!("io_uring is unusable: {text} ({name})"),
    }
}

/// The symbolic name of the errors that setting up io_uring reports.
fn errno_name(errno: i32) -> String {
    match errno {
        libc::EPERM => "EPERM".into(),
        libc::ENOSYS => "ENOSYS".into(),
        libc::EACCES => "EACCES".into(),
        libc::ENOMEM => "ENOMEM".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::EMFILE => "EMFILE".into(),
        libc::ENFILE => "ENFILE".into(),
        libc::EFAULT => "EFAULT".into(),
        other => format!("errno {other}"),
    }
}

/// Which backend this process uses and why; probes the kernel if no operation has yet.
pub fn backend_info() -> Result<BackendInfo> {
    SELECTED.get_or_init(select).clone()
}

/// A new ring of the selected backend, reaped by whoever calls its `reap`.
pub(crate) fn new_ring() -> Result<Arc<dyn Ring>> {
    new_ring_of(false)
}

/// A new ring that the threads submitting to it also reap (a port's workers, a thread's
/// alertable waits): the kernel may finish a request at its submitter's next entry into the
/// kernel instead of interrupting it (io_uring's cooperative task running).
pub(crate) fn new_private_ring() -> Result<Arc<dyn Ring>> {
    new_ring_of(true)
}

/// A new ring whose waits gather completions for up to `window`, so that one wake-up serves
/// many; only the first thread that reaps it may reap it afterwards ([`Ring::may_reap`]).
/// `WSAEOPNOTSUPP` where the backend cannot (epoll; io_uring before Linux 6.12).
pub(crate) fn new_batching_ring(window: Duration) -> Result<Arc<dyn Ring>> {
    match backend_info()?.kind {
        BackendKind::IoUring => Ok(Arc::new(uring::Uring::batching(window)?)),
        BackendKind::Epoll => Err(Error::with_errno(codes::WSAEOPNOTSUPP, libc::EOPNOTSUPP)),
    }
}

fn new_ring_of(private: bool) -> Result<Arc<dyn Ring>> {
    let info = backend_info()?;
    match info.kind {
        BackendKind::IoUring => Ok(Arc::new(uring::Uring::new(private)?)),
        BackendKind::Epoll => Ok(Arc::new(epoll::Epoll::new(private)?)),
    }
}

/// The shared ring, for operations that notify through events; a background thread reaps it.
pub(crate) fn shared_ring() -> Result<&'static Arc<dyn Ring>> {
    static SHARED: OnceLock<std::result::Result<Arc<dyn Ring>, Error>> = OnceLock::new();
    let ring = SHARED.get_or_init(|| {
        let ring = new_ring()?;
        let reaped = ring.clone();
        std::thread::Builder::new()
            .name("overlapped-reaper".into())
            .spawn(move || loop {
                if let Err(e) = reaped.reap(None) {
                    // No completion could be delivered any more: events would never be signalled
                    // and buffers never released. Stopping loudly is the only honest outcome.
                    eprintln!("overlapped: the shared ring failed: {e}");
                    std::process::abort();
                }
            })
            .map_err(Error::from)?;
        Ok(ring)
    });
    ring.as_ref().map_err(|e| *e)
}
