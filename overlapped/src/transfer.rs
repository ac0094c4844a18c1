//! Starting overlapped transfers on a socket: send, receive, send-to and receive-from, each with
//! an event (through the overlapped object) or with a completion routine.
//!
//! Every method takes an [`Overlapped`] object and a list of owned buffers and returns at once,
//! whatever the socket's blocking mode (S1): [`Started::Done`] with the byte count, or
//! [`Started::Pending`] (S2). Either way the notification fires when the operation is over (S3):
//! the object's event is signalled, or the routine is queued to the calling thread. A call that
//! fails at once notifies nothing (S4); its error is returned, and the buffers wait in the
//! overlapped object ([`Overlapped::take_buffers`]).
//!
//! The `_with_routine` methods take the overlapped object by value and give it back to the
//! routine, which runs on the calling thread in one of its alertable waits (S26–S30). If such a
//! call fails at once, the object comes back in [`NotStarted`].

use std::any::TypeId;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::addr::RawAddr;
use crate::ahead;
use crate::alertable::{self, NotStarted, RoutineTicket};
use crate::buf::{iovecs_for_recv, iovecs_for_send, IoBuf, IoBufMut, IoVecs, MAX_BUFFERS};
use crate::driver::{self, Ring};
use crate::engine;
use crate::error::{codes, Error, Result};
use crate::flags;
use crate::notify::{Notify, NotifyWith};
use crate::op::{Dir, Op, OpParts, Renewal, Stage, Target};
use crate::overlapped::{AnyOverlapped, Completion, OvCore, Overlapped, Started};
use crate::pool::{push_into, BufferPool, PooledBuf};
use crate::socket::Socket;

/// What an operation will do, worked out from its arguments before its buffers move.
pub(crate) struct Plan {
    pub(crate) iov: IoVecs,
    pub(crate) dir: Dir,
    pub(crate) stage: Stage,
    pub(crate) addr: Option<Box<RawAddr>>,
    pub(crate) linux_flags: Result<i32>,
    /// Whether an empty buffer list is refused (S6); the extension functions take none.
    pub(crate) needs_buffers: bool,
}

impl Plan {
    fn send<B: IoBuf>(bufs: &[B], flags: u32, to: Option<SocketAddr>) -> Plan {
        Plan {
            iov: iovecs_for_send(bufs),
            dir: Dir::Write,
            stage: Stage::Send,
            addr: to.map(|to| Box::new(RawAddr::from_socket_addr(to))),
            linux_flags: flags::send_to_linux(flags),
            needs_buffers: true,
        }
    }

    fn recv<B: IoBufMut>(sock: &Socket, bufs: &mut [B], flags: u32, with_from: bool) -> Plan {
        let iov = iovecs_for_recv(bufs);
        let total: usize = iov.iter().map(|v| v.iov_len).sum();
        let stage = if sock.inner.is_stream() && total == 0 {
            Stage::ZeroByteRecv
        } else {
            Stage::Recv {
                wait_all: flags & flags::MSG_WAITALL != 0,
            }
        };
        Plan {
            iov,
            dir: Dir::Read,
            stage,
            addr: with_from.then(|| Box::new(RawAddr::empty())),
            linux_flags: flags::recv_to_linux(flags),
            needs_buffers: true,
        }
    }
}

impl Plan {
    fn recv_pooled<B: From<PooledBuf> + 'static>(
        sock: &Socket,
        pool: &BufferPool,
        flags: u32,
    ) -> Result<Plan> {
        if !sock.inner.is_stream() {
            return Err(Error::new(codes::WSAEOPNOTSUPP));
        }
        let on_pool_ring = sock
            .inner
            .port
            .get()
            .is_some_and(|binding| Arc::ptr_eq(binding.sink.ring(), pool.shared().ring()));
        if !on_pool_ring || flags & flags::MSG_WAITALL != 0 {
            return Err(Error::new(codes::WSAEINVAL));
        }
        Ok(Plan {
            iov: IoVecs::new(),
            dir: Dir::Read,
            stage: Stage::RecvPooled {
                pool: pool.shared().clone(),
                into: push_into::<B>,
            },
            addr: None,
            linux_flags: flags::recv_to_linux(flags),
            needs_buffers: false,
        })
    }
}

/// The signature of a completion routine: (error, bytes transferred, the overlapped object with
/// its buffers, flags) (S26).
pub trait CompletionRoutine<B>: FnOnce(Option<Error>, usize, Overlapped<B>, u32) + 'static {}

impl<B, F> CompletionRoutine<B> for F where
    F: FnOnce(Option<Error>, usize, Overlapped<B>, u32) + 'static
{
}

impl Socket {
    /// Sends the buffers, in order (`WSASend`). On a stream socket the operation completes only
    /// when every byte has been taken (S8). Flags: `MSG_OOB`, `MSG_DONTROUTE`.
    pub fn send<B: IoBuf>(&self, ov: &Overlapped<B>, bufs: Vec<B>, flags: u32) -> Result<Started> {
        let plan = Plan::send(&bufs, flags, None);
        self.start(ov.core(), Some(ov), bufs, plan, None)
    }

    /// Sends the buffers as one datagram to `to` (`WSASendTo`).
    pub fn send_to<B: IoBuf>(
        &self,
        ov: &Overlapped<B>,
        bufs: Vec<B>,
        flags: u32,
        to: SocketAddr,
    ) -> Result<Started> {
        let plan = Plan::send(&bufs, flags, Some(to));
        self.start(ov.core(), Some(ov), bufs, plan, None)
    }

    /// Receives into the buffers, in order (`WSARecv`). On a stream it completes when any data
    /// arrives (S8), with 0 bytes when the peer has closed (S10); buffers of zero total length
    /// wait for data without taking it (S9). Flags: `MSG_PEEK`, `MSG_OOB`, `MSG_WAITALL`.
    pub fn recv<B: IoBufMut>(
        &self,
        ov: &Overlapped<B>,
        mut bufs: Vec<B>,
        flags: u32,
    ) -> Result<Started> {
        let plan = Plan::recv(self, &mut bufs, flags, false);
        self.start(ov.core(), Some(ov), bufs, plan, None)
    }

    /// Receives into a buffer of `pool` that is taken only when data arrives, so that a waiting
    /// receive holds no buffer (an extension of this library; see [`BufferPool`]). The socket must
    /// be a stream associated with the port that made the pool (else `WSAEINVAL`, or
    /// `WSAEOPNOTSUPP` for a datagram socket). On completion the overlapped object's buffers end
    /// with the one buffer filled, whose length is the byte count (none if the peer closed, S10,
    /// or the operation failed), converted to the object's buffer type (`PooledBuf` itself, or a
    /// type of the program's that can hold one). A receive that finds no free buffer when it is
    /// tried completes with `WSAENOBUFS` (its completion, notified as any other; the data stays
    /// queued). Flags: `MSG_PEEK`, `MSG_OOB`.
    ///
    /// `list` is the buffer list the filled buffer is added to, usually empty: nothing is
    /// received into the buffers it holds, and passing on the list of an earlier operation spares
    /// allocating one per receive.
    pub fn recv_pooled<B: From<PooledBuf> + Send + 'static>(
        &self,
        ov: &Overlapped<B>,
        list: Vec<B>,
        pool: &BufferPool,
        flags: u32,
    ) -> Result<Started> {
        let plan = Plan::recv_pooled::<B>(self, pool, flags)?;
        self.start(ov.core(), Some(ov), list, plan, None)
    }

    /// Receives one datagram and its sender's address (`WSARecvFrom`); the address is in the
    /// completion's `from`. A datagram larger than the buffers completes with `WSAEMSGSIZE`, the
    /// bytes that fit and `MSG_PARTIAL` (S12).
    pub fn recv_from<B: IoBufMut>(
        &self,
        ov: &Overlapped<B>,
        mut bufs: Vec<B>,
        flags: u32,
    ) -> Result<Started> {
        let plan = Plan::recv(self, &mut bufs, flags, true);
        self.start(ov.core(), Some(ov), bufs, plan, None)
    }

    /// [`Socket::send`] with a completion routine instead of the event.
    pub fn send_with_routine<B: IoBuf>(
        &self,
        ov: Overlapped<B>,
        bufs: Vec<B>,
        flags: u32,
        routine: impl CompletionRoutine<B>,
    ) -> std::result::Result<Started, NotStarted<B>> {
        let plan = Plan::send(&bufs, flags, None);
        self.start_with_routine(ov, bufs, plan, routine)
    }

    /// [`Socket::send_to`] with a completion routine instead of the event.
    pub fn send_to_with_routine<B: IoBuf>(
        &self,
        ov: Overlapped<B>,
        bufs: Vec<B>,
        flags: u32,
        to: SocketAddr,
        routine: impl CompletionRoutine<B>,
    ) -> std::result::Result<Started, NotStarted<B>> {
        let plan = Plan::send(&bufs, flags, Some(to));
        self.start_with_routine(ov, bufs, plan, routine)
    }

    /// [`Socket::recv`] with a completion routine instead of the event.
    pub fn recv_with_routine<B: IoBufMut>(
        &self,
        ov: Overlapped<B>,
        mut bufs: Vec<B>,
        flags: u32,
        routine: impl CompletionRoutine<B>,
    ) -> std::result::Result<Started, NotStarted<B>> {
        let plan = Plan::recv(self, &mut bufs, flags, false);
        self.start_with_routine(ov, bufs, plan, routine)
    }

    /// [`Socket::recv_from`] with a completion routine instead of the event.
    pub fn recv_from_with_routine<B: IoBufMut>(
        &self,
        ov: Overlapped<B>,
        mut bufs: Vec<B>,
        flags: u32,
        routine: impl CompletionRoutine<B>,
    ) -> std::result::Result<Started, NotStarted<B>> {
        let plan = Plan::recv(self, &mut bufs, flags, true);
        self.start_with_routine(ov, bufs, plan, routine)
    }

    fn start_with_routine<B: Send + 'static, F: CompletionRoutine<B>>(
        &self,
        ov: Overlapped<B>,
        bufs: Vec<B>,
        plan: Plan,
        routine: F,
    ) -> std::result::Result<Started, NotStarted<B>> {
        let core = ov.core().clone();
        let ticket = alertable::register(ov, routine)?;
        let id = ticket.id();
        match self.start(&core, None, bufs, plan, Some(ticket)) {
            Ok(started) => Ok(started),
            // A truncated datagram completed at once: a warning, not a failure. Its routine is
            // queued and will report WSAEMSGSIZE with the bytes that fit (S12, S30).
            Err(error) if error.code() == codes::WSAEMSGSIZE => {
                Ok(Started::Done(core.bytes_so_far()))
            }
            Err(error) => match alertable::unregister::<B, F>(id) {
                Some(overlapped) => Err(NotStarted { error, overlapped }),
                None => {
                    unreachable!("a routine whose operation failed at once is still registered")
                }
            },
        }
    }

    pub(crate) fn start<B: Send + 'static>(
        &self,
        core: &Arc<OvCore<B>>,
        ov: Option<&Overlapped<B>>,
        bufs: Vec<B>,
        plan: Plan,
        routine: Option<RoutineTicket>,
    ) -> Result<Started> {
        let reset_event = routine.is_none();
        // The operation is made before the object is marked pending, so that one lock does both.
        // An operation refused here still marks it (a pending object's refusal, S13, comes
        // first), then records the error with the buffers (S4).
        let (op, packet_handle) = match self.make_op(core, ov, bufs.len(), plan, routine) {
            Ok(made) => made,
            Err(error) => {
                core.begin(bufs, reset_event, None, None)?;
                drop(core.record(Completion::failed(error, 0)));
                core.wake_waiters();
                return Err(error);
            }
        };
        core.begin(bufs, reset_event, Some(&op), packet_handle)?;
        engine::start(op, &self.inner)
    }

    /// The operation `start` starts: where it notifies, on which ring, and for a port, the
    /// overlapped object's handle its packet will carry; or why it cannot start.
    fn make_op<B: Send + 'static>(
        &self,
        core: &Arc<OvCore<B>>,
        ov: Option<&Overlapped<B>>,
        count: usize,
        plan: Plan,
        routine: Option<RoutineTicket>,
    ) -> Result<(Arc<Op>, Option<AnyOverlapped>)> {
        let linux_flags = if count == 0 && plan.needs_buffers {
            return Err(Error::new(codes::WSAEINVAL)); // S6: a buffer count of 0.
        } else if count > MAX_BUFFERS {
            return Err(Error::with_errno(codes::WSAEINVAL, libc::EMSGSIZE)); // S6: over IOV_MAX.
        } else {
            plan.linux_flags?
        };
        match &plan.stage {
            Stage::RecvPooled { pool, .. } => {
                ahead::check_receive(&self.inner, Some(pool), linux_flags)?
            }
            Stage::Recv { .. } | Stage::ZeroByteRecv => {
                ahead::check_receive(&self.inner, None, linux_flags)?
            }
            _ => {}
        }
        let port = self.inner.port.get();
        // The routine's ring is its thread's; the others are borrowed, cloned only if new.
        let routine_ring;
        let mut packet_handle = None;
        let (ring, notify): (&Arc<dyn Ring>, NotifyWith) = match (routine, port) {
            // S32: a socket associated with a port refuses a completion routine.
            (Some(_), Some(_)) => return Err(Error::new(codes::WSAEINVAL)),
            (Some(ticket), None) => {
                routine_ring = ticket.ring();
                (&routine_ring, NotifyWith::Routine(ticket))
            }
            (None, Some(binding)) if binding.sink.buffer_type() != TypeId::of::<B>() => {
                return Err(Error::new(codes::WSAEINVAL)); // the port's buffers are another type
            }
            (None, Some(binding)) => {
                // The packet hands the overlapped object to the worker that takes it, so the
                // object holds a handle to itself until then.
                packet_handle = ov.map(|ov| ov.clone().into_any());
                (binding.sink.ring(), NotifyWith::Port(binding))
            }
            (None, None) => (driver::shared_ring()?, NotifyWith::Event(core.event())),
        };
        let target: Arc<dyn Target> = core.clone();
        let mut spare = self.inner.spare.take();
        let op = match spare.as_mut().and_then(Arc::get_mut) {
            Some(record) => {
                record.renew(Renewal {
                    ring,
                    target,
                    notify,
                    dir: plan.dir,
                    stage: plan.stage,
                    iov: plan.iov,
                    addr: plan.addr,
                    linux_flags,
                });
                spare.expect("renewed just now")
            }
            None => Arc::new(Op::new(OpParts {
                sock: self.inner.clone(),
                ring: ring.clone(),
                dir: plan.dir,
                stage: plan.stage,
                target,
                notify: Notify::new(notify),
                iov: plan.iov,
                addr: plan.addr,
                linux_flags,
            })),
        };
        Ok((op, packet_handle))
    }
}
