//! Completion routines and alertable waits (S26–S31).
//!
//! An operation started with a completion routine belongs to the thread that started it. That
//! thread has a context of its own: a ring, a queue of finished operations, and the routines
//! waiting for them. Its operations are submitted to its ring, and only that thread reaps it,
//! inside its alertable waits ([`sleep_ex`], [`wait_for_events_ex`], [`Event::wait_ex`]): the
//! kernel's completions reach the routines with no other thread in between. A routine runs only
//! in an alertable wait of its thread (S27, S29), in the order the operations finished (S28); the
//! wait then returns [`WaitExResult::IoCompletion`]. Routines never nest: inside a routine, an
//! alertable wait runs none.
//!
//! A routine need not be `Send`: it stays in its thread's context, and what crosses threads is
//! only a ticket (which queue, which routine). The overlapped object moves into the context with
//! the routine and comes back to it as an argument, so the routine can take the buffers and start
//! the next operation with the same object.
//!
//! When the thread exits, its pending operations are cancelled and their routines dropped
//! unrun (S31); the thread waits (a bounded time) for the kernel to let go of their buffers.

use std::any::Any;
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::driver::{self, Ring};
use crate::error::{Error, Result};
use crate::event::{self, lock, Event, WaitExResult, WaitFor, Waiter};
use crate::overlapped::{Completion, Overlapped};

/// How long a thread that exits waits for the kernel to give back its operations' buffers.
const EXIT_DRAIN: Duration = Duration::from_secs(10);

/// The finished operations of one thread, waiting for its next alertable wait.
pub(crate) struct ThreadQueue {
    done: Mutex<VecDeque<(u64, Completion)>>,
    ring: Arc<dyn Ring>,
}

thread_local! {
    /// The queue of the current thread's context, to tell pushes from the owner from others.
    static OWN_QUEUE: Cell<*const ThreadQueue> = const { Cell::new(std::ptr::null()) };
    static CONTEXT: OnceCell<ThreadContext> = const { OnceCell::new() };
}

impl ThreadQueue {
    fn push(&self, id: u64, completion: Completion) {
        lock(&self.done).push_back((id, completion));
        let from_owner = OWN_QUEUE.with(|own| std::ptr::eq(own.get(), self));
        if !from_owner {
            // The owner may be asleep in its ring; a failed wake only delays the routine until
            // the owner's next wait ends.
            let _ = self.ring.wake();
        }
    }

    fn pop(&self) -> Option<(u64, Completion)> {
        lock(&self.done).pop_front()
    }
}

/// Where a finished operation's routine is queued: its thread's queue, and which routine.
pub(crate) struct RoutineTicket {
    queue: Arc<ThreadQueue>,
    id: u64,
}

impl RoutineTicket {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn queue(&self, completion: Completion) {
        self.queue.push(self.id, completion);
    }

    /// The issuing thread's ring, which carries the operation.
    pub(crate) fn ring(&self) -> Arc<dyn Ring> {
        self.queue.ring.clone()
    }
}

/// A routine with the overlapped object it will be given.
trait PendingRoutine {
    fn run(self: Box<Self>, completion: Completion);
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

struct Entry<B, F> {
    ov: Overlapped<B>,
    routine: F,
}

impl<B: 'static, F> PendingRoutine for Entry<B, F>
where
    F: FnOnce(Option<Error>, usize, Overlapped<B>, u32) + 'static,
{
    fn run(self: Box<Self>, c: Completion) {
        (self.routine)(c.error, c.bytes, self.ov, c.flags);
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

struct ThreadContext {
    queue: Arc<ThreadQueue>,
    /// Keyed by ids the thread hands out in turn: a keyed hash (SipHash) would guard against
    /// keys chosen by an attacker, and these are not.
    routines: RefCell<FxHashMap<u64, Box<dyn PendingRoutine>>>,
    next_id: Cell<u64>,
    /// A routine is running now: alertable waits inside it run none (S29).
    in_routine: Cell<bool>,
    /// The waiter of the thread's alertable waits, kept between them (a server waits once or
    /// twice per wake-up, and each wait would otherwise allocate one); a wait inside a routine,
    /// while the outer one holds it, makes its own.
    spare_waiter: Cell<Option<Arc<Waiter>>>,
}

impl ThreadContext {
    fn new() -> Result<ThreadContext> {
        Ok(ThreadContext {
            queue: Arc::new(ThreadQueue {
                done: Mutex::new(VecDeque::new()),
                ring: driver::new_private_ring()?,
            }),
            routines: RefCell::new(FxHashMap::default()),
            next_id: Cell::new(1),
            in_routine: Cell::new(false),
            spare_waiter: Cell::new(None),
        })
    }

    /// Delivers what the thread's ring has already completed, without waiting, then runs every
    /// queued routine, in order, including routines queued by those routines; returns how many
    /// ran (S28).
    ///
    /// What the routines start is handed to the kernel together once they have run; whatever
    /// the kernel completes at once then (a send with room in the socket's buffer, data already
    /// there) is delivered and its routine runs in the same wait, as Windows delivers every queued
    /// routine before the wait returns.
    fn run_queued(&self) -> Result<usize> {
        if self.in_routine.get() {
            return Ok(0);
        }
        // Deferred for all the rounds below, so that each round's reap submits what the round
        // before started; handed over in any case when the rounds end.
        driver::defer_submissions(Some(&self.queue.ring));
        let ran = self.run_rounds();
        driver::defer_submissions(None);
        ran
    }

    /// [`ThreadContext::run_queued`]'s rounds: reap without waiting (submitting what the last
    /// round's routines started, whose completions at once are then reaped too), run what is
    /// queued, until a round runs nothing.
    fn run_rounds(&self) -> Result<usize> {
        let mut ran = 0;
        loop {
            self.queue.ring.reap(Some(Duration::ZERO))?;
            let before = ran;
            while let Some((id, completion)) = self.queue.pop() {
                let entry = self.routines.borrow_mut().remove(&id);
                if let Some(entry) = entry {
                    self.in_routine.set(true);
                    let guard = InRoutine(&self.in_routine);
                    entry.run(completion);
                    drop(guard);
                    ran += 1;
                }
            }
            if ran == before {
                return Ok(ran);
            }
        }
    }
}

/// Clears the in-routine flag even if the routine panics.
struct InRoutine<'a>(&'a Cell<bool>);

impl Drop for InRoutine<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl Drop for ThreadContext {
    fn drop(&mut self) {
        // S31: the thread is exiting. Dropping the routines drops their overlapped objects, which
        // cancels the operations; their completions are then reaped here and discarded, so the
        // buffers are freed only after the kernel has let go of them.
        let mut pending: HashSet<u64> = self.routines.borrow().keys().copied().collect();
        drop(std::mem::take(&mut *self.routines.borrow_mut()));
        let deadline = Instant::now() + EXIT_DRAIN;
        loop {
            while let Some((id, _)) = self.queue.pop() {
                pending.remove(&id);
            }
            let now = Instant::now();
            if pending.is_empty() || now >= deadline {
                break;
            }
            let slice = (deadline - now).min(Duration::from_millis(100));
            if self.queue.ring.reap(Some(slice)).is_err() {
                break;
            }
        }
        OWN_QUEUE.with(|own| own.set(std::ptr::null()));
    }
}

/// Runs `f` with the calling thread's context, creating it on first use.
fn with_context<R>(f: impl FnOnce(&ThreadContext) -> R) -> Result<R> {
    CONTEXT.with(|cell| {
        if cell.get().is_none() {
            let ctx = ThreadContext::new()?;
            OWN_QUEUE.with(|own| own.set(Arc::as_ptr(&ctx.queue)));
            let _ = cell.set(ctx);
        }
        Ok(f(cell.get().expect("the context was just set")))
    })
}

/// Keeps `routine` and `ov` in the calling thread's context until the operation finishes.
pub(crate) fn register<B, F>(
    ov: Overlapped<B>,
    routine: F,
) -> std::result::Result<RoutineTicket, NotStarted<B>>
where
    B: Send + 'static,
    F: FnOnce(Option<Error>, usize, Overlapped<B>, u32) + 'static,
{
    if let Err(error) = with_context(|_| ()) {
        return Err(NotStarted {
            error,
            overlapped: ov,
        });
    }
    let ticket = with_context(move |ctx| {
        let id = ctx.next_id.get();
        ctx.next_id.set(id + 1);
        let entry: Box<dyn PendingRoutine> = Box::new(Entry { ov, routine });
        ctx.routines.borrow_mut().insert(id, entry);
        RoutineTicket {
            queue: ctx.queue.clone(),
            id,
        }
    });
    Ok(ticket.expect("the context exists"))
}

/// Takes back the overlapped object of a routine whose operation failed at once (S4: its
/// routine is never queued).
pub(crate) fn unregister<B, F>(id: u64) -> Option<Overlapped<B>>
where
    B: Send + 'static,
    F: FnOnce(Option<Error>, usize, Overlapped<B>, u32) + 'static,
{
    let entry = with_context(|ctx| ctx.routines.borrow_mut().remove(&id)).ok()??;
    entry
        .into_any()
        .downcast::<Entry<B, F>>()
        .ok()
        .map(|entry| entry.ov)
}

/// A call with a completion routine that failed at once: its error, and the overlapped object
/// that was given to it (no routine will run, S4).
pub struct NotStarted<B> {
    /// Why the operation did not start.
    pub error: Error,
    /// The overlapped object, with the buffers if they reached it ([`Overlapped::take_buffers`]).
    pub overlapped: Overlapped<B>,
}

impl<B> std::fmt::Debug for NotStarted<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NotStarted({})", self.error)
    }
}

impl<B> std::fmt::Display for NotStarted<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the operation did not start: {}", self.error)
    }
}

impl<B> std::error::Error for NotStarted<B> {}

impl<B> From<NotStarted<B>> for Error {
    fn from(e: NotStarted<B>) -> Error {
        e.error
    }
}

/// The calling thread's ring, which its alertable waits sleep in.
pub(crate) fn thread_ring() -> Result<Arc<dyn Ring>> {
    with_context(|ctx| ctx.queue.ring.clone())
}

/// Delivers what the calling thread's ring has completed and runs the queued routines, without
/// waiting; returns how many ran.
pub(crate) fn run_routines_now() -> Result<usize> {
    with_context(|ctx| ctx.run_queued())?
}

/// Sleeps in the calling thread's ring until `waiter` (made with [`Waiter::waking_ring`] for
/// that ring) is woken, a completion of the thread's own arrives, or `timeout` passes.
pub(crate) fn sleep_until_woken(waiter: &Waiter, timeout: Option<Duration>) -> Result<()> {
    if waiter.is_woken() {
        return Ok(());
    }
    with_context(|ctx| ctx.queue.ring.reap(timeout).map(drop))?
}

/// Sleeps for `timeout` (`None`: forever) (`SleepEx`). If `alertable`, queued completion
/// routines of this thread run as soon as there are any, and the sleep then ends with
/// [`WaitExResult::IoCompletion`]; otherwise it ends with [`WaitExResult::Timeout`].
pub fn sleep_ex(timeout: Option<Duration>, alertable: bool) -> Result<WaitExResult> {
    if !alertable {
        driver::flush_deferred();
        match timeout {
            Some(t) => std::thread::sleep(t),
            None => loop {
                std::thread::park();
            },
        }
        return Ok(WaitExResult::Timeout);
    }
    alertable_wait(timeout, |_| None, |_| ())
}

/// [`crate::wait_for_events`] with an alertable flag (`WSAWaitForMultipleEvents`'s
/// `fAlertable`): a signalled event wins; otherwise queued routines run and the wait returns
/// [`WaitExResult::IoCompletion`] (S28).
pub fn wait_for_events_ex(
    events: &[&Event],
    wait_for: WaitFor,
    timeout: Option<Duration>,
    alertable: bool,
) -> Result<WaitExResult> {
    if !alertable {
        return event::wait_for_events(events, wait_for, timeout).map(WaitExResult::from);
    }
    event::check_wait_list(events, wait_for)?;
    alertable_wait(
        timeout,
        |waiter| event::take(events, wait_for, waiter).map(WaitExResult::Signalled),
        |waiter| events.iter().for_each(|e| e.deregister(waiter)),
    )
}

impl Event {
    /// Waits for this event (`WaitForSingleObjectEx`); with `alertable`, queued completion
    /// routines run and the wait returns [`WaitExResult::IoCompletion`].
    pub fn wait_ex(&self, timeout: Option<Duration>, alertable: bool) -> Result<WaitExResult> {
        wait_for_events_ex(&[self], WaitFor::Any, timeout, alertable)
    }
}

/// The loop of every alertable wait: look for what the wait is for (`look`, which registers the
/// waiter when given one), else run queued routines, else reap this thread's ring until woken.
pub(crate) fn alertable_wait(
    timeout: Option<Duration>,
    mut look: impl FnMut(Option<&Arc<Waiter>>) -> Option<WaitExResult>,
    mut forget: impl FnMut(&Arc<Waiter>),
) -> Result<WaitExResult> {
    let deadline = timeout.map(|t| Instant::now() + t);
    with_context(|ctx| {
        let waiter = match ctx.spare_waiter.take() {
            Some(waiter) => waiter,
            None => Waiter::waking_ring(ctx.queue.ring.clone()),
        };
        let result = loop {
            waiter.arm();
            // What ends the wait, if this round does; the waiter is forgotten either way.
            let ended = 'round: {
                if let Some(found) = look(Some(&waiter)) {
                    break 'round Some(Ok(found));
                }
                match ctx.run_queued() {
                    Ok(0) => {}
                    Ok(_) => break 'round Some(Ok(WaitExResult::IoCompletion)),
                    Err(e) => break 'round Some(Err(e)),
                }
                let remaining = match deadline {
                    None => None,
                    Some(d) => {
                        let now = Instant::now();
                        if now >= d {
                            break 'round Some(Ok(look(None).unwrap_or(WaitExResult::Timeout)));
                        }
                        Some(d - now)
                    }
                };
                match waiter.is_woken() {
                    true => None,
                    false => ctx.queue.ring.reap(remaining).err().map(Err),
                }
            };
            forget(&waiter);
            if let Some(result) = ended {
                break result;
            }
        };
        // A wake that comes late, from an event of this wait, only makes a later wait look
        // once more: each round arms the waiter before it looks.
        ctx.spare_waiter.set(Some(waiter));
        result
    })?
}
