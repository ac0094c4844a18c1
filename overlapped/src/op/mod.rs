//! One operation's record: what the kernel reads and writes while it is pending, and how a raw
//! result (a byte count, a descriptor, an event mask or `-errno`) becomes the operation's
//! [`Completion`].
//!
//! Lifecycle of an operation:
//! 1. The socket builds the record from the caller's buffers; the buffers themselves move into
//!    the overlapped object, which the record keeps alive (S15).
//! 2. The engine ([`crate::engine`]) tries it at once without blocking ([`Op::try_now`]). If it
//!    would block, the engine hands its ring a [`Request`] built by [`Op::request`], with one
//!    strong reference to the record as its `user_data`.
//! 3. Each kernel result goes through [`Op::absorb`], which moves the operation through its
//!    [`Stage`]s: a stream send that was taken short asks for more and is submitted again, so that
//!    nobody is told before every byte is through (S8); an accept goes on to receive the first
//!    data; a connect goes on to send the first buffer; a file transmission sends its pieces.
//! 4. The final result is recorded in the overlapped object, the notification fires, and then
//!    threads waiting on the object itself wake ([`Op::finish`]). Only then does the record let
//!    go of the overlapped object, and with it, possibly, the buffers.

mod io;
mod stage;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use crate::addr::RawAddr;
use crate::buf::IoVecs;
use crate::driver::{Request, Ring};
use crate::error::codes;
use crate::event::lock;
use crate::notify::{Notify, NotifyWith};
use crate::overlapped::{AnyOverlapped, Completion};
use crate::pool::Filled;
use crate::socket::SockInner;

use io::OpIo;
pub(crate) use stage::{Stage, Transmit};

/// Which of a socket's two queues an operation waits in: operations of one direction run one at
/// a time, in the order they were started (S7), and a long send is never interleaved with the
/// next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    Read = 0,
    Write = 1,
}

/// Where a finished operation's result goes: the overlapped object that owns its buffers.
pub(crate) trait Target: Send + Sync {
    /// Records the final result; threads waiting on the object see it once woken. Gives back
    /// the handle the object held for the port's packet while the operation was pending.
    fn record(&self, completion: Completion) -> Option<AnyOverlapped>;
    /// [`Target::record`] for a pooled receive: first adds the buffer it filled, if any, to the
    /// object's buffers.
    fn record_filled(
        &self,
        completion: Completion,
        filled: Option<Filled>,
    ) -> Option<AnyOverlapped>;
    /// Wakes the threads waiting on the object itself.
    fn wake_waiters(&self);
}

pub(crate) struct Op {
    pub(crate) sock: Arc<SockInner>,
    /// The ring that carries the operation's kernel requests.
    pub(crate) ring: Arc<dyn Ring>,
    pub(crate) dir: Dir,
    /// The overlapped object; `None` only while the record waits to be renewed, so that it
    /// does not keep the object (and the buffers it holds) alive.
    target: Option<Arc<dyn Target>>,
    notify: Notify,
    /// An accept: closing its listener aborts it with `WSA_OPERATION_ABORTED` (S35).
    is_accept: bool,
    /// A send of data: refused at once after the socket was shut down for sending.
    is_send: bool,
    /// A pooled receive: its completion hands over the buffer it filled.
    is_pooled: bool,
    /// The code a cancellation of this operation reports (S33, S34).
    abort_code: AtomicU32,
    /// Whether a cancel was asked for, so that a continuation is not submitted after it.
    cancelled: AtomicBool,
    io: Mutex<OpIo>,
}

/// What one step of progress led to.
pub(crate) enum Step {
    /// The operation is over.
    Finished(Completion),
    /// More remains (a short stream send, the next stage): try again or resubmit.
    More,
    /// The socket is not ready: submit to the kernel.
    WouldBlock,
}

/// What an operation is made of, before it has a place of its own.
pub(crate) struct OpParts {
    pub(crate) sock: Arc<SockInner>,
    pub(crate) ring: Arc<dyn Ring>,
    pub(crate) dir: Dir,
    pub(crate) stage: Stage,
    pub(crate) target: Arc<dyn Target>,
    pub(crate) notify: Notify,
    pub(crate) iov: IoVecs,
    pub(crate) addr: Option<Box<RawAddr>>,
    pub(crate) linux_flags: i32,
}

/// What a renewed record takes from the operation that reuses it ([`Op::renew`]).
pub(crate) struct Renewal<'a> {
    pub(crate) ring: &'a Arc<dyn Ring>,
    pub(crate) target: Arc<dyn Target>,
    pub(crate) notify: NotifyWith<'a>,
    pub(crate) dir: Dir,
    pub(crate) stage: Stage,
    pub(crate) iov: IoVecs,
    pub(crate) addr: Option<Box<RawAddr>>,
    pub(crate) linux_flags: i32,
}

/// Whether an operation that begins with `stage` is an accept, whether it sends data, and
/// whether it receives into a pool's buffer.
fn kind_of(stage: &Stage) -> (bool, bool, bool) {
    (
        matches!(stage, Stage::Accept { .. }),
        matches!(stage, Stage::Send | Stage::Transmit(_)),
        matches!(stage, Stage::RecvPooled { .. }),
    )
}

impl Op {
    pub(crate) fn new(parts: OpParts) -> Op {
        let (is_accept, is_send, is_pooled) = kind_of(&parts.stage);
        let io = OpIo::new(parts.stage, parts.iov, parts.addr, parts.linux_flags);
        Op {
            sock: parts.sock,
            ring: parts.ring,
            dir: parts.dir,
            target: Some(parts.target),
            notify: parts.notify,
            is_accept,
            is_send,
            is_pooled,
            abort_code: AtomicU32::new(codes::WSA_OPERATION_ABORTED),
            cancelled: AtomicBool::new(false),
            io: Mutex::new(io),
        }
    }

    /// Makes a finished operation's record into a new operation's, in place: the socket is the
    /// same (a record is kept by its own socket, [`crate::engine::retire`]); the ring and the
    /// port's reference are replaced only where they differ, so an operation like the last one
    /// on its socket allocates nothing and clones little.
    pub(crate) fn renew(&mut self, parts: Renewal<'_>) {
        if !Arc::ptr_eq(&self.ring, parts.ring) {
            self.ring = parts.ring.clone();
        }
        self.target = Some(parts.target);
        self.notify.renew(parts.notify);
        self.dir = parts.dir;
        (self.is_accept, self.is_send, self.is_pooled) = kind_of(&parts.stage);
        *self.abort_code.get_mut() = codes::WSA_OPERATION_ABORTED;
        *self.cancelled.get_mut() = false;
        let io = self.io.get_mut().unwrap_or_else(|e| e.into_inner());
        io.renew(parts.stage, parts.iov, parts.addr, parts.linux_flags);
    }

    /// Lets go of what a finished record must not keep while it waits to be renewed: the
    /// overlapped object, with the buffers it holds, and a routine (their owners decide when
    /// they go), an accepted socket (its descriptor closes when its owner drops it), the I/O
    /// vectors.
    pub(crate) fn release(&mut self) {
        self.target = None;
        self.notify.release();
        self.io
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .release();
    }

    /// Records that a cancel was asked for, and the code it reports: aborted by close
    /// (`WSAECONNABORTED`) or cancelled (`WSA_OPERATION_ABORTED`). Called under the socket's
    /// queue lock.
    pub(crate) fn mark_cancelled(&self, code: u32) {
        self.abort_code.store(code, Ordering::Relaxed);
        self.cancelled.store(true, Ordering::Release);
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    pub(crate) fn abort_code(&self) -> u32 {
        self.abort_code.load(Ordering::Relaxed)
    }

    /// Whether the operation sends data.
    pub(crate) fn is_send(&self) -> bool {
        self.is_send
    }

    /// Whether the operation receives into a pool's buffer.
    pub(crate) fn is_pooled(&self) -> bool {
        self.is_pooled
    }

    /// The code the operation reports when its socket is closed under it: a receive or send is
    /// aborted by the close (S34), a pending accept is cancelled (S35).
    pub(crate) fn close_code(&self) -> u32 {
        match self.is_accept {
            true => codes::WSA_OPERATION_ABORTED,
            false => codes::WSAECONNABORTED,
        }
    }

    /// Makes progress without blocking, until the operation finishes or the socket is not ready.
    pub(crate) fn try_now(&self) -> Step {
        let mut io = lock(&self.io);
        loop {
            let res = io.attempt(&self.sock);
            match io.absorb(&self.sock, res, None, self.abort_code()) {
                Step::More => continue,
                other => return other,
            }
        }
    }

    /// The kernel request that continues this operation. The pointers it carries stay valid while
    /// the record is alive and its buffers are owned by its overlapped object.
    pub(crate) fn request(&self) -> Request {
        lock(&self.io).request(&self.sock)
    }

    /// Takes in one raw result from the kernel, with the pool buffer it picked, if any.
    pub(crate) fn absorb(&self, res: i32, buffer: Option<u16>) -> Step {
        lock(&self.io).absorb(&self.sock, res, buffer, self.abort_code())
    }

    /// Whether the operation's notification is a completion port packet.
    pub(crate) fn notifies_port(&self) -> bool {
        self.notify.is_port()
    }

    /// Records the final result in the overlapped object, then notifies (signals the event,
    /// queues the routine or the packet) unless the operation failed at once (S4), then wakes
    /// the threads waiting on the object — after the event, as on Windows.
    pub(crate) fn finish(&self, completion: Completion, notify: bool) {
        let Some(target) = &self.target else {
            unreachable!("only a finished record waiting to be renewed has no target")
        };
        let handle = match self.is_pooled {
            true => target.record_filled(completion, lock(&self.io).take_filled()),
            false => target.record(completion),
        };
        if notify {
            self.notify.fire(completion, handle);
        }
        target.wake_waiters();
    }
}
