//! The overlapped object (`WSAOVERLAPPED`): one outstanding operation's state, result and
//! buffers.
//!
//! An [`Overlapped`] is created once and reused for one operation after another (S13). While an
//! operation is pending it owns the operation's buffers (S15); when the operation finishes it
//! holds the [`Completion`] (status, byte count, flags, sender address) and hands the buffers back
//! through [`Overlapped::take_buffers`]. Its optional [`Event`] is reset when an operation starts
//! and signalled when it completes (S21).
//!
//! Dropping the object while its operation is pending cancels the operation; the buffers stay
//! with the operation until the kernel has let go of them, then are freed.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::driver;
use crate::engine;
use crate::error::{codes, Error, Result};
use crate::event::{lock, Event};
use crate::op::{Op, Target};
use crate::pool::Filled;

/// How a call that starts an operation returned (S2).
#[must_use = "a pending operation's result must be collected from its overlapped object"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Started {
    /// Completed at once with this many bytes. The notification still fires (S3).
    Done(usize),
    /// Will complete later (`WSA_IO_PENDING`).
    Pending,
}

/// The result of a finished operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The error, or `None` for success. A truncated datagram has `WSAEMSGSIZE` here and its
    /// byte count and `MSG_PARTIAL` below (S12).
    pub error: Option<Error>,
    /// Bytes transferred (`InternalHigh`, `cbTransfer`).
    pub bytes: usize,
    /// Flags out, Windows values (`lpdwFlags`, S19): `MSG_PARTIAL`, `MSG_OOB`.
    pub flags: u32,
    /// The sender of a datagram, for receive-from.
    pub from: Option<SocketAddr>,
}

impl Completion {
    pub(crate) fn ok(bytes: usize, flags: u32, from: Option<SocketAddr>) -> Completion {
        Completion {
            error: None,
            bytes,
            flags,
            from,
        }
    }

    pub(crate) fn failed(error: Error, bytes: usize) -> Completion {
        Completion {
            error: Some(error),
            bytes,
            flags: 0,
            from: None,
        }
    }

    pub(crate) fn aborted(code: u32) -> Completion {
        Completion::failed(Error::with_errno(code, libc::ECANCELED), 0)
    }

    /// The byte count, or the error (what `WSAGetOverlappedResult` returns).
    pub fn result(&self) -> Result<usize> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.bytes),
        }
    }
}

/// An overlapped object owning buffers of type `B` while its operation is pending.
///
/// Clones are handles to the same object, as copies of a `LPWSAOVERLAPPED` are: a completion
/// port hands one back with each packet. When the last handle is dropped while an operation is
/// pending, the operation is cancelled.
pub struct Overlapped<B = Vec<u8>> {
    handle: Arc<OvHandle<B>>,
}

/// A handle to an overlapped object whose buffer type is known only at run time (the port a
/// socket is associated with checks it).
pub(crate) type AnyOverlapped = Arc<dyn Any + Send + Sync>;

/// The user's side of the object: dropping the last one cancels a pending operation.
struct OvHandle<B> {
    core: Arc<OvCore<B>>,
}

impl<B> Clone for Overlapped<B> {
    fn clone(&self) -> Overlapped<B> {
        Overlapped {
            handle: self.handle.clone(),
        }
    }
}

/// The shared part of an overlapped object: the pending operation keeps it alive.
pub(crate) struct OvCore<B> {
    state: Mutex<OvState<B>>,
    finished: Condvar,
    /// Threads were waiting when the last result was recorded: [`Target::wake_waiters`] must
    /// wake them.
    must_wake: AtomicBool,
    event: Option<Event>,
}

struct OvState<B> {
    phase: Phase,
    bufs: Option<Vec<B>>,
    completion: Option<Completion>,
    /// The pending operation, for cancellation; weak, as the operation owns this object.
    op: Weak<Op>,
    /// Threads blocked in [`Overlapped::completion`]: only then is there anyone to wake.
    waiting: usize,
    /// While an operation that notifies a port is pending: the handle its packet will hand to
    /// the worker that takes it, so the object lives until then.
    packet_handle: Option<AnyOverlapped>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Idle,
    Pending,
    Done,
}

impl<B: Send + 'static> Overlapped<B> {
    /// An overlapped object with no event: learn of completion by asking it, or through a
    /// completion routine or port.
    pub fn new() -> Overlapped<B> {
        Overlapped::build(None)
    }

    /// An overlapped object whose operations signal `event` when they complete (`hEvent`).
    pub fn with_event(event: Event) -> Overlapped<B> {
        Overlapped::build(Some(event))
    }

    fn build(event: Option<Event>) -> Overlapped<B> {
        let core = Arc::new(OvCore {
            state: Mutex::new(OvState {
                phase: Phase::Idle,
                bufs: None,
                completion: None,
                op: Weak::new(),
                waiting: 0,
                packet_handle: None,
            }),
            finished: Condvar::new(),
            must_wake: AtomicBool::new(false),
            event,
        });
        Overlapped {
            handle: Arc::new(OvHandle { core }),
        }
    }

    /// Whether two handles name the same overlapped object (as equal `LPWSAOVERLAPPED`s do).
    pub fn same_as(&self, other: &Overlapped<B>) -> bool {
        Arc::ptr_eq(&self.handle.core, &other.handle.core)
    }

    /// The event this object signals.
    pub fn event(&self) -> Option<&Event> {
        self.handle.core.event.as_ref()
    }

    /// Whether an operation is pending (S14: `Internal == STATUS_PENDING`).
    pub fn is_pending(&self) -> bool {
        lock(&self.handle.core.state).phase == Phase::Pending
    }

    /// The result of the last operation (`WSAGetOverlappedResult`): with `wait`, blocks until it
    /// completes (S17); without, a pending operation is `WSA_IO_INCOMPLETE` (S16). The completion
    /// stays readable until the next operation starts.
    pub fn completion(&self, wait: bool) -> Result<Completion> {
        self.completion_timeout(if wait { None } else { Some(Duration::ZERO) })
    }

    /// As [`Overlapped::completion`], waiting at most `timeout` (`None`: forever);
    /// `WSA_IO_INCOMPLETE` if the operation is still pending then.
    pub fn completion_timeout(&self, timeout: Option<Duration>) -> Result<Completion> {
        if timeout != Some(Duration::ZERO) {
            driver::flush_deferred(); // what this thread deferred could be what it waits for
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let core = &self.handle.core;
        let mut st = lock(&core.state);
        loop {
            match st.phase {
                Phase::Idle => return Err(Error::new(codes::WSAEINVAL)),
                Phase::Done => {
                    return Ok(st.completion.expect("a finished operation has a result"))
                }
                Phase::Pending => {}
            }
            let left = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Err(Error::new(codes::WSA_IO_INCOMPLETE)),
                },
            };
            st.waiting += 1;
            st = match left {
                None => core.finished.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(left) => {
                    let waited = core.finished.wait_timeout(st, left);
                    waited.unwrap_or_else(|e| e.into_inner()).0
                }
            };
            st.waiting -= 1;
        }
    }

    /// The byte count of the last operation, or its error: [`Overlapped::completion`] reduced to
    /// what `WSAGetOverlappedResult` returns.
    pub fn result(&self, wait: bool) -> Result<usize> {
        self.completion(wait)?.result()
    }

    /// Takes back the buffers of the last operation once it is over, failed or not.
    /// `WSA_IO_INCOMPLETE` while it is pending; `WSAEINVAL` if there are none to take.
    pub fn take_buffers(&self) -> Result<Vec<B>> {
        let mut st = lock(&self.handle.core.state);
        match st.phase {
            Phase::Pending => Err(Error::new(codes::WSA_IO_INCOMPLETE)),
            _ => st.bufs.take().ok_or(Error::new(codes::WSAEINVAL)),
        }
    }

    /// Cancels the pending operation (`CancelIoEx(socket, ov)`, S33). It completes exactly once:
    /// `WSA_OPERATION_ABORTED`, or its real result if it won the race. `ERROR_NOT_FOUND` if
    /// nothing is pending.
    pub fn cancel(&self) -> Result<()> {
        let op = lock(&self.handle.core.state).op.upgrade();
        match op {
            Some(op) => engine::cancel(&op, codes::WSA_OPERATION_ABORTED),
            None => Err(Error::new(codes::ERROR_NOT_FOUND)),
        }
    }

    /// This handle, whatever its buffer type (no allocation: the handle is shared already).
    pub(crate) fn into_any(self) -> AnyOverlapped {
        self.handle
    }

    /// The handle [`Overlapped::into_any`] made, if its buffers are of type `B`.
    pub(crate) fn from_any(any: AnyOverlapped) -> Option<Overlapped<B>> {
        let handle = any.downcast::<OvHandle<B>>().ok()?;
        Some(Overlapped { handle })
    }

    /// The part the pending operation shares.
    pub(crate) fn core(&self) -> &Arc<OvCore<B>> {
        &self.handle.core
    }
}

impl<B: Send + 'static> OvCore<B> {
    /// Marks the object pending with `bufs` and the operation `op` (remembered for cancellation)
    /// and, for a port's operation, the handle its packet will carry; resets its event (S21)
    /// unless the operation notifies otherwise (a completion routine leaves the event alone,
    /// S22). A pending object is refused (S13): `WSAEINVAL` with errno `EBUSY`, and `bufs` are
    /// dropped.
    pub(crate) fn begin(
        &self,
        bufs: Vec<B>,
        reset_event: bool,
        op: Option<&Arc<Op>>,
        packet_handle: Option<AnyOverlapped>,
    ) -> Result<()> {
        {
            let mut st = lock(&self.state);
            if st.phase == Phase::Pending {
                return Err(Error::with_errno(codes::WSAEINVAL, libc::EBUSY));
            }
            st.phase = Phase::Pending;
            st.bufs = Some(bufs);
            st.completion = None;
            st.op = op.map_or_else(Weak::new, Arc::downgrade);
            st.packet_handle = packet_handle;
        }
        if reset_event {
            if let Some(event) = &self.event {
                event.reset();
            }
        }
        Ok(())
    }

    pub(crate) fn event(&self) -> Option<&Event> {
        self.event.as_ref()
    }

    /// The byte count recorded for the last operation (0 if none is recorded).
    pub(crate) fn bytes_so_far(&self) -> usize {
        lock(&self.state).completion.map_or(0, |c| c.bytes)
    }
}

impl<B: Send + 'static> Default for Overlapped<B> {
    fn default() -> Overlapped<B> {
        Overlapped::new()
    }
}

impl<B> Drop for OvHandle<B> {
    fn drop(&mut self) {
        let op = lock(&self.core.state).op.upgrade();
        if let Some(op) = op {
            // The operation keeps the buffers until the kernel is done; whether the cancel found
            // it or it had already finished, nothing more is owed here.
            let _ = engine::cancel(&op, codes::WSA_OPERATION_ABORTED);
        }
    }
}

impl<B> std::fmt::Debug for Overlapped<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = lock(&self.handle.core.state);
        f.debug_struct("Overlapped")
            .field("phase", &st.phase)
            .field("completion", &st.completion)
            .finish()
    }
}

impl<B: Send + 'static> Target for OvCore<B> {
    fn record_filled(
        &self,
        completion: Completion,
        filled: Option<Filled>,
    ) -> Option<AnyOverlapped> {
        let mut st = lock(&self.state);
        if let Some(filled) = filled {
            (filled.into)(&mut st.bufs, filled.buf);
        }
        self.record_in(&mut st, completion)
    }

    fn record(&self, completion: Completion) -> Option<AnyOverlapped> {
        self.record_in(&mut lock(&self.state), completion)
    }

    fn wake_waiters(&self) {
        // The waiters counted by `record` are asleep on the condition variable, or on their way
        // back from it to the lock, where they see the result.
        // Looked at first: the swap is an atomic write, which most operations, with nobody
        // waiting, need not pay.
        if self.must_wake.load(Ordering::Relaxed) && self.must_wake.swap(false, Ordering::Relaxed) {
            self.finished.notify_all();
        }
    }
}

impl<B: Send + 'static> OvCore<B> {
    /// [`Target::record`] under the state's lock, held by the caller.
    #[inline]
    fn record_in(&self, st: &mut OvState<B>, completion: Completion) -> Option<AnyOverlapped> {
        st.phase = Phase::Done;
        st.completion = Some(completion);
        st.op = Weak::new();
        // Under the lock, a waiter has either seen the result or is counted and asleep (a later
        // one sees the result). Waking costs a system call, so it is made only when someone waits.
        if st.waiting > 0 {
            self.must_wake.store(true, Ordering::Relaxed);
        }
        st.packet_handle.take()
    }
}
