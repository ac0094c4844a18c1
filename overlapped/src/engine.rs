//! The engine: starting operations, turning each kernel completion into exactly one notification,
//! cancelling, and closing sockets with operations pending.
//!
//! Each socket has two queues, one per direction. An operation of a direction runs only when the
//! earlier ones of that direction have finished, so receives take data in the order they were
//! posted (S7) and a stream send that the kernel took short is finished before the next one
//! starts (S8). The operation at the head of a queue is first tried without blocking (unless its
//! ring knows the socket has nothing for it); only if the socket is not ready is it handed to its
//! ring, and it is then the queue's `in_flight`.
//!
//! This module is the one place where an operation's final result is recorded and notified:
//! [`start`] for what completes at once, [`complete`] for what the kernel completes, [`cancel`]
//! and [`close`] for what never reached the kernel. Locks are taken in one order only: a socket's
//! queues, then the ring's submission lock; no notification runs under a lock.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::ahead::{self, Stream, StreamRef};
use crate::driver::{self, Counter, Readiness, Request, STREAM_TAG};
use crate::error::{codes, Error, Result};
use crate::event::lock;
use crate::op::{Dir, Op, Step};
use crate::overlapped::{Completion, Started};

/// A socket's operations that have been started and have not finished.
#[derive(Default)]
pub(crate) struct Queues {
    dirs: [DirQueue; 2],
    closed: bool,
    /// The receive stream of a socket that receives ahead ([`crate::ahead`]), once it has one.
    stream: Option<Box<Stream>>,
}

#[derive(Default)]
struct DirQueue {
    /// The operation the kernel holds now, if any.
    in_flight: Option<Arc<Op>>,
    /// Operations started after it, in order.
    waiting: VecDeque<Arc<Op>>,
}

impl DirQueue {
    fn is_busy(&self) -> bool {
        self.in_flight.is_some() || !self.waiting.is_empty()
    }
}

/// Operations that finished while a lock was held; their notifications run after it is released.
type Finished = Vec<(Arc<Op>, Completion)>;

/// Finishes and notifies what finished; most often nothing did, and then an empty list is not
/// even walked and dropped (a completion's hot path).
fn notify_all(finished: Finished) {
    if finished.is_empty() {
        return;
    }
    for (op, completion) in finished {
        op.finish(completion, true);
    }
}

/// Starts an operation of `sock` (the record's own socket, borrowed from the caller so that the
/// record can move into the socket's queue under its lock): completes it at once if the socket
/// is ready, else queues it or hands it to the kernel (S2). An operation that fails at once
/// notifies nothing (S4) and its error is returned; the overlapped object holds that error and
/// the buffers.
pub(crate) fn start(op: Arc<Op>, sock: &Arc<crate::socket::SockInner>) -> Result<Started> {
    debug_assert!(
        Arc::ptr_eq(&op.sock, sock),
        "an operation starts on its own socket"
    );
    let mut queues = lock(&sock.queues);
    let refusal = if queues.closed {
        Some(Error::new(codes::WSAENOTSOCK))
    } else if sock.is_reset() {
        Some(Error::new(codes::WSAECONNRESET)) // S11: later operations fail at once.
    } else if op.is_send() && sock.is_shut_down_for_send() {
        Some(Error::new(codes::WSAESHUTDOWN))
    } else {
        None
    };
    if let Some(error) = refusal {
        drop(queues);
        op.finish(Completion::failed(error, 0), false);
        return Err(error);
    }
    let dir = &mut queues.dirs[op.dir as usize];
    if dir.is_busy() {
        dir.waiting.push_back(op);
        return Ok(Started::Pending);
    }
    if let Some(pool) = ahead::stream_pool(&op, sock) {
        return match ahead::start(&op, sock, &mut queues.stream, pool) {
            Ok(Some(completion)) => {
                drop(queues);
                finished_at_once(op, completion)
            }
            Ok(None) => {
                queues.dirs[Dir::Read as usize].in_flight = Some(op);
                Ok(Started::Pending)
            }
            Err(error) => {
                drop(queues);
                op.finish(Completion::failed(error, 0), false);
                Err(error)
            }
        };
    }
    // A thread that defers its submissions to the operation's ring (a port's worker, a thread
    // running its routines) is about to enter the kernel on that ring: the kernel makes the first
    // attempt then, with everything else that thread started, and saves a system call each —
    // unless a zero-byte receive just said that data is waiting for this receive, and the ring
    // does not batch its waits (where a system call saved counts for more than the latency).
    let deferred = driver::defers_to(Arc::as_ptr(&op.ring) as *const ());
    let hinted = op.dir == Dir::Read && sock.take_readable_hint();
    let known_ready = hinted && !op.ring.batches_waits();
    let first = match deferred && !known_ready {
        true => Step::WouldBlock,
        false => attempt(&op),
    };
    match first {
        Step::Finished(completion) => {
            drop(queues);
            finished_at_once(op, completion)
        }
        Step::More | Step::WouldBlock => match submit(&op) {
            Ok(()) => {
                dir.in_flight = Some(op);
                Ok(Started::Pending)
            }
            Err(error) => {
                drop(queues);
                op.finish(Completion::failed(error, 0), false);
                Err(error)
            }
        },
    }
}

/// Records and notifies the result of an operation that finished when it started.
fn finished_at_once(op: Arc<Op>, completion: Completion) -> Result<Started> {
    match completion.error {
        Some(error) => {
            // A truncated datagram is a warning, not a failure, on Windows: the call reports
            // WSAEMSGSIZE, yet the operation completed and notifies (S3, S12).
            let completed = error.code() == codes::WSAEMSGSIZE;
            op.finish(completion, completed);
            Err(error)
        }
        None => {
            driver::count(Counter::Immediate);
            let bytes = completion.bytes;
            // S3: done at once still notifies, unless the socket asked its port to skip such
            // packets (S44).
            let notify = !(op.notifies_port() && op.sock.skips_port_on_success());
            op.finish(completion, notify);
            retire(op);
            Ok(Started::Done(bytes))
        }
    }
}

/// Tries an operation without blocking — unless its ring knows the socket has nothing for it
/// (an epoll ring that found the side drained and has had no event since) — and tells the ring
/// when the attempt found the side drained.
fn attempt(op: &Op) -> Step {
    if !op.ring.tracks_readiness() {
        return op.try_now();
    }
    let request = op.request();
    // A connect or a shutdown is a call of its own before any wait: always made.
    if matches!(request, Request::PollOut { .. }) {
        return op.try_now();
    }
    let (fd, side) = (request.fd(), request.side());
    let epoch = match op.ring.readiness(fd, side) {
        Readiness::NotReady => return Step::WouldBlock,
        Readiness::Unknown => None,
        Readiness::Ready(epoch) => Some(epoch),
    };
    let step = op.try_now();
    // A pooled receive that found no free buffer does not fail here, at once and notifying
    // nothing: the ring tries it again and reports the lack as its completion, as io_uring's
    // kernel does. Nothing was learnt of the socket.
    if found_no_buffer(&request, &step) {
        return Step::WouldBlock;
    }
    let Some(epoch) = epoch else {
        return step;
    };
    let drained = match &step {
        // The same request is left waiting (not the next stage's, on another descriptor).
        Step::WouldBlock => {
            let next = op.request();
            (next.fd() == fd && next.side() == side).then_some(true)
        }
        Step::Finished(done) => {
            (done.error.is_none() && request.drained_by(done.bytes)).then_some(false)
        }
        Step::More => None,
    };
    if let Some(proven) = drained {
        op.ring.drained(fd, side, epoch, proven);
    }
    step
}

/// Whether an attempt of a pooled receive found no free buffer (`WSAENOBUFS`).
fn found_no_buffer(request: &Request, step: &Step) -> bool {
    let no_buffer = |c: &Completion| c.error.is_some_and(|e| e.code() == codes::WSAENOBUFS);
    matches!(request, Request::RecvPooled { .. })
        && matches!(step, Step::Finished(c) if no_buffer(c))
}

/// Hands the operation to its ring, giving the kernel one strong reference as `user_data`.
fn submit(op: &Arc<Op>) -> Result<()> {
    let user_data = Arc::into_raw(op.clone()) as u64;
    // SAFETY: the request points into the record and its buffers, which the reference just given
    // to the kernel keeps alive until `complete` takes it back; the engine touches that memory
    // only after the completion.
    match unsafe { op.ring.submit(user_data, op.request()) } {
        Ok(()) => Ok(()),
        Err(error) => {
            // SAFETY: the ring refused the request, so the reference was not given away.
            drop(unsafe { Arc::from_raw(user_data as *const Op) });
            Err(error)
        }
    }
}

/// Takes one kernel completion: continues the operation, or records its result, notifies, and
/// starts the next operation of its queue. `buffer` is the pool buffer the kernel picked for a
/// pooled receive.
///
/// # Safety
/// `user_data` must come from [`submit`] and be completed only once.
pub(crate) unsafe fn complete(user_data: u64, result: i32, buffer: Option<u16>) {
    // SAFETY: the caller's contract: this is the reference `submit` gave the kernel.
    let op = unsafe { Arc::from_raw(user_data as *const Op) };
    let step = if result == -libc::ECANCELED && !op.is_cancelled() {
        // Nobody asked for this cancel: the kernel ends a thread's io_uring requests when the
        // thread that submitted them exits. The operation belongs to the program, not to that
        // thread (S25), so it goes back to the kernel from here, a thread that is alive.
        Step::WouldBlock
    } else {
        op.absorb(result, buffer)
    };
    // The operations behind this one that finish as it leaves its queue; most often none, and
    // an empty list costs no allocation.
    let mut behind = Finished::new();
    let own = {
        let mut queues = lock(&op.sock.queues);
        let own = match step {
            Step::Finished(completion) => Some(completion),
            // A cancel came between two kernel requests of this operation and found nothing.
            Step::More | Step::WouldBlock if op.is_cancelled() => {
                Some(Completion::aborted(op.abort_code()))
            }
            Step::More | Step::WouldBlock => match submit(&op) {
                Ok(()) => None,
                Err(error) => Some(Completion::failed(error, 0)),
            },
        };
        if own.is_some() {
            queues.dirs[op.dir as usize].in_flight = None;
            start_waiting(&op.sock, &mut queues, op.dir, &mut behind);
        }
        own
    };
    if let Some(completion) = own {
        op.finish(completion, true);
        retire(op);
    }
    notify_all(behind);
}

/// Takes one arrival of a socket's receive stream ([`crate::ahead`]): it completes the receive
/// parked on the stream, if there is one, or the stream keeps it for the next receive; after the
/// socket closed, its buffer goes back to the pool. `more` is false on the stream's last arrival.
///
/// # Safety
/// `user_data` must come from [`ahead::arm`]; only the stream's last arrival has `more` false.
pub(crate) unsafe fn arrive(user_data: u64, result: i32, buffer: Option<u16>, more: bool) {
    let target = (user_data & !STREAM_TAG) as *mut StreamRef;
    // SAFETY: the record `ahead::arm` gave the kernel lives until the last arrival, below.
    let own = match unsafe { &*target }.sock.upgrade() {
        Some(sock) => take_arrival(&sock, user_data, result, buffer, more),
        None => {
            if let Some(id) = buffer {
                // SAFETY: as above.
                unsafe { &*target }.pool.give_back(id);
            }
            None
        }
    };
    if !more {
        // SAFETY: the stream's last arrival: the kernel lets go of the record.
        drop(unsafe { Box::from_raw(target) });
    }
    if let Some((completed, behind)) = own {
        if let Some((op, completion)) = completed {
            op.finish(completion, true);
            retire(op);
        }
        notify_all(behind);
    }
}

/// What an arrival finished: the parked receive with its completion, and the operations behind
/// it that finished as they started.
type Arrival = (Option<(Arc<Op>, Completion)>, Finished);

/// Takes an arrival of the stream `user_data` of `sock`, under the socket's lock.
fn take_arrival(
    sock: &Arc<crate::socket::SockInner>,
    user_data: u64,
    result: i32,
    buffer: Option<u16>,
    more: bool,
) -> Option<Arrival> {
    let mut queues = lock(&sock.queues);
    let queues = &mut *queues;
    let pool = sock.ahead_pool.get()?;
    let stream = queues.stream.get_or_insert_with(Box::default);
    if stream.armed == user_data {
        stream.ended(more);
    }
    if queues.closed {
        // The parked receive was aborted; what comes now goes back to the pool.
        if let Some(id) = buffer {
            pool.give_back(id);
        }
        return None;
    }
    if !stream.parked {
        stream.keep(result, buffer, more, pool);
        return None;
    }
    let mut behind = Finished::new();
    if !more && result == -libc::ECANCELED {
        // The stream ended without being asked to (the thread that armed it exited): the parked
        // receive waits on a new one.
        match ahead::arm(sock, pool) {
            Ok(armed) => {
                stream.armed = armed;
                return None;
            }
            Err(error) => {
                stream.parked = false;
                let op = queues.dirs[Dir::Read as usize].in_flight.take();
                start_waiting(sock, queues, Dir::Read, &mut behind);
                return Some((op.map(|op| (op, Completion::failed(error, 0))), behind));
            }
        }
    }
    stream.parked = false;
    let completed = queues.dirs[Dir::Read as usize].in_flight.take().map(|op| {
        let completion = ahead::absorb(&op, result, buffer);
        (op, completion)
    });
    start_waiting(sock, queues, Dir::Read, &mut behind);
    Some((completed, behind))
}

/// Keeps a finished operation's record in its socket for the socket's next operation
/// ([`crate::spare::SpareSlot::take`], [`Op::renew`]): most operations are like the one before
/// on their socket, and renewing a record spares an allocation, a free and the cloning of the
/// references it keeps. A record that anyone else still holds is left to them, and a closed
/// socket keeps none (the record refers to the socket, which would never be freed; see
/// [`crate::spare`]).
pub(crate) fn retire(mut op: Arc<Op>) {
    let Some(record) = Arc::get_mut(&mut op) else {
        return;
    };
    record.release();
    // Held through `put`: once kept, the record and its reference may go at any moment.
    let sock = op.sock.clone();
    sock.spare.put(op);
}

/// Starts the waiting operations of one direction until one has to wait for the kernel.
fn start_waiting(
    sock: &crate::socket::SockInner,
    queues: &mut Queues,
    dir: Dir,
    finished: &mut Finished,
) {
    while let Some(next) = queues.dirs[dir as usize].waiting.pop_front() {
        if sock.is_reset() {
            finished.push((
                next,
                Completion::failed(Error::new(codes::WSAECONNRESET), 0),
            ));
            continue;
        }
        let step = match ahead::stream_pool(&next, sock) {
            Some(pool) => match ahead::start(&next, &next.sock, &mut queues.stream, pool) {
                Ok(Some(completion)) => Step::Finished(completion),
                Ok(None) => {
                    queues.dirs[dir as usize].in_flight = Some(next);
                    return;
                }
                Err(error) => Step::Finished(Completion::failed(error, 0)),
            },
            None => attempt(&next),
        };
        match step {
            Step::Finished(completion) => finished.push((next, completion)),
            Step::More | Step::WouldBlock => match submit(&next) {
                Ok(()) => {
                    queues.dirs[dir as usize].in_flight = Some(next);
                    return;
                }
                Err(error) => finished.push((next, Completion::failed(error, 0))),
            },
        }
    }
}

/// Cancels one operation (S33): a waiting one completes aborted now; the one in the kernel is
/// asked to stop and completes exactly once, aborted or with its real result if it won the race.
/// `ERROR_NOT_FOUND` if the operation is not pending.
pub(crate) fn cancel(op: &Arc<Op>, code: u32) -> Result<()> {
    let mut queues = lock(&op.sock.queues);
    let dir = &mut queues.dirs[op.dir as usize];
    if let Some(pos) = dir.waiting.iter().position(|o| Arc::ptr_eq(o, op)) {
        let removed = dir.waiting.remove(pos).expect("position is in range");
        drop(queues);
        removed.finish(Completion::aborted(code), true);
        return Ok(());
    }
    let in_flight = dir.in_flight.as_ref().is_some_and(|o| Arc::ptr_eq(o, op));
    if in_flight && take_parked(&mut queues).is_some() {
        // The kernel does not hold a parked receive: it ends now.
        let mut behind = Finished::new();
        start_waiting(&op.sock, &mut queues, op.dir, &mut behind);
        drop(queues);
        op.finish(Completion::aborted(code), true);
        notify_all(behind);
        return Ok(());
    }
    let dir = &mut queues.dirs[op.dir as usize];
    match &dir.in_flight {
        Some(current) if Arc::ptr_eq(current, op) => {
            op.mark_cancelled(code);
            // The queue's reference keeps the record, and so its user_data, alive while the
            // cancel request is submitted (the ring's contract on `cancel`).
            op.ring.cancel(Arc::as_ptr(op) as u64)
        }
        _ => Err(Error::new(codes::ERROR_NOT_FOUND)),
    }
}

/// Takes the receive parked on the socket's stream out of its read queue, if there is one.
fn take_parked(queues: &mut Queues) -> Option<Arc<Op>> {
    let stream = queues.stream.as_mut().filter(|s| s.parked)?;
    stream.parked = false;
    queues.dirs[Dir::Read as usize].in_flight.take()
}

/// Whether a socket has operations pending.
pub(crate) fn has_pending(sock: &crate::socket::SockInner) -> bool {
    lock(&sock.queues).dirs.iter().any(DirQueue::is_busy)
}

/// Closes a socket's queues (S34): waiting operations complete with `WSAECONNABORTED` now (an
/// accept: `WSA_OPERATION_ABORTED`, S35); the ones in the kernel are cancelled and complete with
/// it when the kernel lets go of them. New operations are refused.
pub(crate) fn close(sock: &crate::socket::SockInner) {
    abort_all(sock, true);
}

/// Cancels every pending operation of a socket (`CancelIoEx(socket, NULL)`, S33);
/// `ERROR_NOT_FOUND` if there was none.
pub(crate) fn cancel_all(sock: &crate::socket::SockInner) -> Result<()> {
    match abort_all(sock, false) {
        true => Ok(()),
        false => Err(Error::new(codes::ERROR_NOT_FOUND)),
    }
}

/// Aborts every pending operation of a socket, because it closes or on request; returns whether
/// there was any.
fn abort_all(sock: &crate::socket::SockInner, closing: bool) -> bool {
    let code = |op: &Op| match closing {
        true => op.close_code(),
        false => codes::WSA_OPERATION_ABORTED,
    };
    let mut finished = Finished::new();
    let mut found = false;
    // Dropped after the lock: the record may hold the last reference to an overlapped object.
    let spare = closing.then(|| sock.spare.close());
    {
        let mut queues = lock(&sock.queues);
        queues.closed |= closing;
        if let Some(op) = take_parked(&mut queues) {
            let aborted = Completion::aborted(code(&op));
            finished.push((op, aborted));
        }
        if let (true, Some(stream), Some(pool)) =
            (closing, queues.stream.as_mut(), sock.ahead_pool.get())
        {
            stream.give_back_all(pool);
            if stream.armed != 0 {
                // The stream's record lives while this runs: its last arrival, which frees it,
                // takes this socket's lock first.
                let _ = pool.ring().cancel(stream.armed);
            }
        }
        for dir in queues.dirs.iter_mut() {
            for op in dir.waiting.drain(..) {
                let aborted = Completion::aborted(code(&op));
                finished.push((op, aborted));
            }
            if let Some(op) = &dir.in_flight {
                found = true;
                op.mark_cancelled(code(op));
                // Nothing more can be done if the kernel refuses the cancel request: the
                // operation then completes on its own, and its record keeps the socket open.
                let _ = op.ring.cancel(Arc::as_ptr(op) as u64);
            }
        }
    }
    drop(spare);
    found |= !finished.is_empty();
    notify_all(finished);
    found
}
