//! Receiving ahead ([`Socket::receive_ahead`]): a socket whose receives all come from one pool
//! keeps a single receive in the kernel for as long as data comes, instead of handing the kernel
//! a new receive after each one completes.
//!
//! Why: on io_uring a receive that finds no data arms a poll on the socket, and its completion
//! takes the poll down again; a connection that receives one message at a time pays for that, and
//! for a submission, with every message. A multishot receive stays armed and takes a pool buffer
//! for each arrival. The price is that data is taken from the socket as it comes, whether or not
//! a receive is posted: the socket's stream ([`Stream`]) keeps what arrived while no receive was
//! waiting, in order, and the next pooled receives complete with it at once. So that nothing
//! overtakes what the stream has kept, every receive on such a socket must be a pooled receive
//! from the same pool, with no flags; other receives are refused with `WSAEINVAL` on every
//! backend. On epoll, where a pooled receive is already a read when the socket is readable, the
//! setting changes nothing else.
//!
//! The engine holds the stream under the socket's queue lock. A pooled receive at the head of
//! the read queue takes the first kept arrival, or else is *parked*: it is the queue's
//! `in_flight` operation, but the kernel does not hold it — the stream does, and its next
//! arrival completes it ([`crate::engine::arrive`]). A cancel ends a parked receive at once; a
//! close also ends the stream and gives the kept buffers back to the pool.
//!
//! A program that stops receiving on a socket must not let it drain the pool that the other
//! connections share: once the stream keeps [`KEEP_LIMIT`] arrivals it is ended, and the data
//! waits in the socket again until a receive is posted, as without receiving ahead. (What the
//! kernel takes in one go before that, up to what it reads of a burst, is kept too.)

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use crate::driver::STREAM_TAG;
use crate::error::{codes, Error, Result};
use crate::op::{Op, Step};
use crate::overlapped::Completion;
use crate::pool::{BufferPool, PoolShared};
use crate::socket::{SockInner, Socket};

impl Socket {
    /// Makes every later receive of this stream socket a pooled receive from `pool`
    /// ([`Socket::recv_pooled`], no flags), and lets the library receive ahead: on io_uring
    /// (Linux 6.0 and later) one receive stays in the kernel for as long as data comes, which
    /// saves the kernel arming a poll and the program a submission for every message. Data that
    /// arrives while no receive is posted is then taken into the pool's buffers at once, kept in
    /// order, and handed to the next receives as they are posted, which complete at once with it.
    /// A socket keeps only a few such arrivals (a burst the kernel reads at once aside) before it
    /// stops receiving ahead until its next receive, so a connection whose program stops
    /// receiving does not drain the pool. An extension of this library, for sockets whose
    /// receives are all pooled (a server's connections).
    ///
    /// The setting lasts as long as the socket. Other receives on it are refused with
    /// `WSAEINVAL`: unpooled ones, zero-byte ones, ones with flags, pooled ones from another
    /// pool. Closing the socket gives what it kept back to the pool. `WSAEOPNOTSUPP` for a
    /// datagram socket; `WSAEINVAL` if the socket is not associated with the port that made
    /// `pool`, or already receives ahead into another pool.
    pub fn receive_ahead(&self, pool: &BufferPool) -> Result<()> {
        if !self.inner.is_stream() {
            return Err(Error::new(codes::WSAEOPNOTSUPP));
        }
        let shared = pool.shared();
        let on_pool_ring = self
            .inner
            .port
            .get()
            .is_some_and(|binding| Arc::ptr_eq(binding.sink.ring(), shared.ring()));
        if !on_pool_ring {
            return Err(Error::new(codes::WSAEINVAL));
        }
        let set = self.inner.ahead_pool.get_or_init(|| shared.clone());
        match Arc::ptr_eq(set, shared) {
            true => Ok(()),
            false => Err(Error::new(codes::WSAEINVAL)),
        }
    }
}

/// Whether a receive may be started on a socket: on one that receives ahead, only a pooled
/// receive from its pool with no flags may (`WSAEINVAL` otherwise).
pub(crate) fn check_receive(
    sock: &SockInner,
    pool: Option<&Arc<PoolShared>>,
    linux_flags: i32,
) -> Result<()> {
    match (sock.ahead_pool.get(), pool) {
        (None, _) => Ok(()),
        (Some(ahead), Some(pool)) if Arc::ptr_eq(ahead, pool) && linux_flags == 0 => Ok(()),
        (Some(_), _) => Err(Error::new(codes::WSAEINVAL)),
    }
}

/// How many arrivals a stream keeps for receives not posted yet before it is ended: enough for
/// the data that comes while a connection sends its reply, few enough that a connection whose
/// program stops receiving holds next to nothing of the pool that other connections need.
pub(crate) const KEEP_LIMIT: usize = 4;

/// A socket's receive stream, kept with its queues.
#[derive(Default)]
pub(crate) struct Stream {
    /// The `user_data` of the stream the kernel holds ([`arm`]); 0 when it holds none.
    pub(crate) armed: u64,
    /// The read queue's `in_flight` operation waits for the stream's next arrival.
    pub(crate) parked: bool,
    /// Results that arrived while no receive was parked, each with the buffer it filled.
    kept: VecDeque<(i32, Option<u16>)>,
}

/// The pool `op` receives into through its socket's stream, if it does: a pooled receive on a
/// socket that receives ahead, on a ring that streams receives.
pub(crate) fn stream_pool<'a>(op: &Op, sock: &'a SockInner) -> Option<&'a Arc<PoolShared>> {
    let pool = sock.ahead_pool.get()?;
    (op.is_pooled() && op.ring.streams_receives()).then_some(pool)
}

/// Starts `op`, at the head of its socket's read queue, through the socket's stream (made on
/// first use): `Some` with the completion of the first kept arrival, or `None` when it is parked
/// (the caller makes it the queue's `in_flight`), after arming the stream if the kernel does not
/// hold it.
pub(crate) fn start(
    op: &Op,
    sock: &Arc<SockInner>,
    stream: &mut Option<Box<Stream>>,
    pool: &Arc<PoolShared>,
) -> Result<Option<Completion>> {
    let stream = stream.get_or_insert_with(Box::default);
    if let Some((result, buffer)) = stream.kept.pop_front() {
        return Ok(Some(absorb(op, result, buffer)));
    }
    if stream.armed == 0 {
        stream.armed = arm(sock, pool)?;
    }
    stream.parked = true;
    Ok(None)
}

/// What an arrival makes of the parked (or starting) receive `op`.
pub(crate) fn absorb(op: &Op, result: i32, buffer: Option<u16>) -> Completion {
    match op.absorb(result, buffer) {
        Step::Finished(completion) => completion,
        // The kernel does not end a stream's arrival with EAGAIN; were it to, the receive
        // would report it rather than wait for an arrival that may not come.
        Step::More | Step::WouldBlock => Completion::failed(Error::from_errno(libc::EAGAIN), 0),
    }
}

/// What a stream's `user_data` points to: the socket, weakly, so that dropping the socket still
/// closes its descriptor at once (the kernel keeps its own reference to the open socket until
/// the close's cancel has ended the stream), and the pool, for arrivals that come after.
pub(crate) struct StreamRef {
    pub(crate) sock: Weak<SockInner>,
    pub(crate) pool: Arc<PoolShared>,
}

/// Hands the kernel `sock`'s stream, tagged with a new [`StreamRef`] that the stream's last
/// arrival frees; returns that `user_data`.
pub(crate) fn arm(sock: &Arc<SockInner>, pool: &Arc<PoolShared>) -> Result<u64> {
    let target = Box::new(StreamRef {
        sock: Arc::downgrade(sock),
        pool: pool.clone(),
    });
    let user_data = Box::into_raw(target) as u64 | STREAM_TAG;
    // SAFETY: the pool lives as long as the record, which lives until the stream's last arrival.
    match unsafe { pool.ring().submit_stream(user_data, sock.fd(), pool) } {
        Ok(()) => Ok(user_data),
        Err(error) => {
            // SAFETY: the ring refused the stream, so the record was not given away.
            drop(unsafe { Box::from_raw((user_data & !STREAM_TAG) as *mut StreamRef) });
            Err(error)
        }
    }
}

impl Stream {
    /// Marks the stream ended when its last arrival (`more` false) comes.
    pub(crate) fn ended(&mut self, more: bool) {
        if !more {
            self.armed = 0;
        }
    }

    /// Keeps an arrival that found no receive parked. With [`KEEP_LIMIT`] arrivals kept, asks
    /// `pool`'s ring to end the stream: a socket whose program does not receive stops taking
    /// buffers from the pool, and its data waits in the socket again.
    pub(crate) fn keep(&mut self, result: i32, buffer: Option<u16>, more: bool, pool: &PoolShared) {
        match result {
            // The pool was empty: nothing was taken, the data waits in the socket, and the next
            // receive arms the stream again. A cancel (asked for below, or by the exit of the
            // thread that armed the stream) is the same.
            r if !more && (r == -libc::ENOBUFS || r == -libc::ECANCELED) => {}
            _ => self.kept.push_back((result, buffer)),
        }
        if self.kept.len() == KEEP_LIMIT && self.armed != 0 {
            // Arrivals the kernel has already made still come, and are kept; if the request
            // fails, the pool's empty-pool end still bounds the stream.
            let _ = pool.ring().stop_stream(self.armed);
        }
    }

    /// Gives every kept buffer back to `pool` (the socket closes).
    pub(crate) fn give_back_all(&mut self, pool: &PoolShared) {
        for (_, buffer) in self.kept.drain(..) {
            if let Some(id) = buffer {
                pool.give_back(id);
            }
        }
    }
}
