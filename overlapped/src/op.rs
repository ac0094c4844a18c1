//! One operation's record: what the kernel reads and writes while it is pending, and how a raw
//! result (a byte count, an event mask or `-errno`) becomes the operation's [`Completion`].
//!
//! Lifecycle of an operation:
//! 1. The socket builds the record from the caller's buffers; the buffers themselves move into
//!    the overlapped object, which the record keeps alive (S15).
//! 2. The engine ([`crate::engine`]) tries it at once without blocking ([`Op::try_now`]). If it
//!    would block, the engine hands its ring a [`Request`] built by [`Op::request`], with one
//!    strong reference to the record as its `user_data`.
//! 3. Each kernel result goes through [`Op::absorb`]: a stream send that was taken short (and a
//!    `MSG_WAITALL` receive that was filled short) asks for more and is submitted again, so that
//!    nobody is told before every byte is through (S8).
//! 4. The final result is recorded in the overlapped object, then the notification fires
//!    ([`Op::finish`]). Only then does the record let go of the overlapped object, and with it,
//!    possibly, the buffers.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use crate::addr::RawAddr;
use crate::driver::{Request, Ring};
use crate::error::{codes, Error};
use crate::event::lock;
use crate::flags;
use crate::notify::Notify;
use crate::overlapped::Completion;
use crate::socket::SockInner;

/// Which of a socket's two queues an operation waits in: operations of one direction run one at
/// a time, in the order they were started (S7), and a long send is never interleaved with the
/// next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    Read = 0,
    Write = 1,
}

/// How the operation proceeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Receive into the buffers; with `wait_all` (stream only) keep going until they are full.
    Recv { wait_all: bool },
    /// A receive into no bytes on a stream: wait until data (or an error, or the end) is there,
    /// then complete with 0 bytes and leave the data queued (S9).
    ZeroByteRecv,
    /// Send the buffers; on a stream, keep going until every byte is taken (S8).
    Send,
}

/// Where a finished operation's result goes: the overlapped object that owns its buffers.
pub(crate) trait Target: Send + Sync {
    /// Records the final result; wakes threads waiting on the object itself.
    fn finish(&self, completion: Completion);
}

pub(crate) struct Op {
    pub(crate) sock: Arc<SockInner>,
    /// The ring that carries the operation's kernel requests.
    pub(crate) ring: Arc<dyn Ring>,
    pub(crate) dir: Dir,
    mode: Mode,
    target: Arc<dyn Target>,
    notify: Notify,
    /// The code a cancellation of this operation reports (S33, S34).
    abort_code: AtomicU32,
    /// Whether a cancel was asked for, so that a continuation is not submitted after it.
    cancelled: AtomicBool,
    io: Mutex<OpIo>,
}

/// The memory the kernel reads and writes. Its pointers are refreshed from the record's own
/// fields before every system call or submission, so the record may be built before it is placed
/// at its final address.
struct OpIo {
    iov: Vec<libc::iovec>,
    /// The first I/O vector not yet fully transferred.
    first: usize,
    msg: libc::msghdr,
    addr: Option<RawAddr>,
    /// Bytes transferred so far.
    done: usize,
    total: usize,
    linux_flags: i32,
}

// SAFETY: the raw pointers in `OpIo` point into the operation's own fields and into the buffers
// its overlapped object owns until the operation has finished; they are only used under the
// `io` mutex, or by the kernel while the engine holds the record alive.
unsafe impl Send for OpIo {}

/// What one step of progress led to.
pub(crate) enum Step {
    /// The operation is over.
    Finished(Completion),
    /// More remains (a short stream send): try again or resubmit.
    More,
    /// The socket is not ready: submit to the kernel.
    WouldBlock,
}

impl Op {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        sock: Arc<SockInner>,
        ring: Arc<dyn Ring>,
        dir: Dir,
        mode: Mode,
        target: Arc<dyn Target>,
        notify: Notify,
        iov: Vec<libc::iovec>,
        addr: Option<RawAddr>,
        linux_flags: i32,
    ) -> Op {
        let total = iov.iter().map(|v| v.iov_len).sum();
        Op {
            sock,
            ring,
            dir,
            mode,
            target,
            notify,
            abort_code: AtomicU32::new(codes::WSA_OPERATION_ABORTED),
            cancelled: AtomicBool::new(false),
            io: Mutex::new(OpIo {
                iov,
                first: 0,
                // SAFETY: all zeros is a valid, empty msghdr.
                msg: unsafe { std::mem::zeroed() },
                addr,
                done: 0,
                total,
                linux_flags,
            }),
        }
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

    /// Makes progress without blocking, until the operation finishes or the socket is not ready.
    pub(crate) fn try_now(&self) -> Step {
        loop {
            let res = self.syscall_nonblocking();
            match self.absorb(res) {
                Step::More => continue,
                other => return other,
            }
        }
    }

    fn syscall_nonblocking(&self) -> i32 {
        let fd = self.sock.fd();
        let mut io = lock(&self.io);
        io.point();
        let res = match self.mode {
            Mode::ZeroByteRecv => {
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN | libc::POLLRDHUP,
                    revents: 0,
                };
                // SAFETY: one valid pollfd, no waiting.
                match unsafe { libc::poll(&mut pfd, 1, 0) } {
                    0 => return -libc::EAGAIN,
                    n if n > 0 => pfd.revents as isize,
                    _ => -1,
                }
            }
            // SAFETY: `point` made `msg` describe the record's own I/O vectors and address,
            // which point into buffers this operation owns.
            Mode::Recv { .. } => unsafe {
                libc::recvmsg(fd, &mut io.msg, io.linux_flags | libc::MSG_DONTWAIT)
            },
            // SAFETY: as above; the kernel only reads the buffers.
            Mode::Send => unsafe {
                libc::sendmsg(
                    fd,
                    &io.msg,
                    io.linux_flags | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            },
        };
        if res < 0 {
            -std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO)
        } else {
            res.min(i32::MAX as isize) as i32
        }
    }

    /// The kernel request that continues this operation. The pointers it carries stay valid while
    /// the record is alive and its buffers are owned by its overlapped object.
    pub(crate) fn request(&self) -> Request {
        let fd = self.sock.fd();
        let mut io = lock(&self.io);
        io.point();
        match self.mode {
            Mode::ZeroByteRecv => Request::PollIn { fd },
            Mode::Recv { .. } => Request::RecvMsg {
                fd,
                msg: &mut io.msg,
                flags: io.linux_flags as u32,
            },
            Mode::Send => Request::SendMsg {
                fd,
                msg: &io.msg,
                flags: (io.linux_flags | libc::MSG_NOSIGNAL) as u32,
            },
        }
    }

    /// Takes in one raw result: a byte count or event mask, or `-errno`.
    pub(crate) fn absorb(&self, res: i32) -> Step {
        if res == -libc::EAGAIN {
            return Step::WouldBlock;
        }
        let mut io = lock(&self.io);
        let io = &mut *io;
        if res < 0 {
            return Step::Finished(self.failure(io, -res));
        }
        match self.mode {
            Mode::ZeroByteRecv => {
                if res as i16 & (libc::POLLERR | libc::POLLNVAL) != 0 {
                    let errno = match self.sock.take_error() {
                        Some(errno) => errno,
                        None if res as i16 & libc::POLLNVAL != 0 => libc::EBADF,
                        None => libc::ECONNRESET,
                    };
                    return Step::Finished(self.failure(io, errno));
                }
                Step::Finished(Completion::ok(0, 0, None))
            }
            Mode::Recv { wait_all } => {
                let n = res as usize;
                io.done += n;
                if wait_all && self.sock.is_stream() && n > 0 && io.done < io.total {
                    io.advance(n);
                    return Step::More;
                }
                let out_flags = flags::recv_from_linux(io.msg.msg_flags);
                let namelen = io.msg.msg_namelen;
                let from = io.addr.as_mut().and_then(|a| {
                    a.len = namelen;
                    a.to_socket_addr()
                });
                let mut completion = Completion::ok(io.done, out_flags, from);
                if out_flags & flags::MSG_PARTIAL != 0 && !self.sock.is_stream() {
                    completion.error = Some(Error::new(codes::WSAEMSGSIZE)); // S12
                }
                Step::Finished(completion)
            }
            Mode::Send => {
                let n = res as usize;
                io.done += n;
                if self.sock.is_stream() && io.done < io.total {
                    io.advance(n);
                    return Step::More;
                }
                Step::Finished(Completion::ok(io.done, 0, None))
            }
        }
    }

    /// The completion of a failed operation, with the bytes it moved before failing.
    fn failure(&self, io: &OpIo, errno: i32) -> Completion {
        let error = match errno {
            libc::ECANCELED => Error::with_errno(self.abort_code(), errno),
            libc::ECONNRESET => {
                self.sock.mark_reset();
                Error::from_errno(errno)
            }
            libc::EPIPE if !self.sock.is_shut_down_for_send() => {
                Error::with_errno(codes::WSAECONNRESET, errno)
            }
            _ => Error::from_errno(errno),
        };
        Completion::failed(error, io.done)
    }

    /// Whether the operation's notification is a completion port packet.
    pub(crate) fn notifies_port(&self) -> bool {
        self.notify.is_port()
    }

    /// Records the final result in the overlapped object, then notifies (signals the event or
    /// queues the routine), unless the operation failed at once (S4).
    pub(crate) fn finish(&self, completion: Completion, notify: bool) {
        self.target.finish(completion);
        if notify {
            self.notify.fire(completion);
        }
    }
}

impl OpIo {
    /// Points the message header at the record's current I/O vectors and address.
    fn point(&mut self) {
        let rest = &mut self.iov[self.first..];
        self.msg.msg_iov = rest.as_mut_ptr();
        self.msg.msg_iovlen = rest.len();
        self.msg.msg_flags = 0;
        match &mut self.addr {
            Some(a) => {
                self.msg.msg_name = &mut a.storage as *mut _ as *mut libc::c_void;
                self.msg.msg_namelen = a.len;
            }
            None => {
                self.msg.msg_name = std::ptr::null_mut();
                self.msg.msg_namelen = 0;
            }
        }
    }

    /// Moves past `n` transferred bytes.
    fn advance(&mut self, mut n: usize) {
        while n > 0 && self.first < self.iov.len() {
            let v = &mut self.iov[self.first];
            if n >= v.iov_len {
                n -= v.iov_len;
                self.first += 1;
            } else {
                // SAFETY: `n` is less than the vector's length, so the new base stays inside the
                // same buffer.
                v.iov_base = unsafe { (v.iov_base as *mut u8).add(n) } as *mut libc::c_void;
                v.iov_len -= n;
                n = 0;
            }
        }
        while self.first < self.iov.len() && self.iov[self.first].iov_len == 0 {
            self.first += 1;
        }
    }
}
