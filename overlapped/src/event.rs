//! Event objects (`WSACreateEvent`, `CreateEvent`) and waiting on many of them
//! (`WSAWaitForMultipleEvents`).
//!
//! An event is a flag that threads can wait for. A manual-reset event stays signalled until
//! someone resets it; an auto-reset event is consumed by the one wait it satisfies (S20, S23). An
//! operation started with an event resets it, and its completion signals it (S21). Completions are
//! delivered by the engine's own thread, so an event becomes signalled even while no thread of the
//! program is inside the library (S25).
//!
//! Waiting registers a [`Waiter`] with every event in the list and sleeps on it; setting an event
//! wakes the waiters registered with it, which then look again. Any thread may set, reset or wait.
//!
//! An event may also belong to [`crate::EventSet`]s. It keeps its memberships in its own state, so
//! that whatever changes its signal (set, reset, a wait that consumes it) updates the sets' ready
//! marks under the event's lock, and a set never has to look at the events that are not signalled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::driver::Ring;
use crate::error::{codes, Error, Result};
use crate::event_set::Memberships;

/// An event object: manual- or auto-reset, shareable between threads (clones name the same event).
#[derive(Clone)]
pub struct Event {
    inner: Arc<EventInner>,
}

struct EventInner {
    manual_reset: bool,
    state: Mutex<EventState>,
}

pub(crate) struct EventState {
    pub(crate) signalled: bool,
    waiters: Vec<Arc<Waiter>>,
    /// The sets this event belongs to, which its signal changes mark or unmark.
    pub(crate) sets: Memberships,
}

impl EventState {
    /// Takes the signal of a satisfied wait: an auto-reset event is consumed.
    pub(crate) fn consume(&mut self, manual_reset: bool) {
        if !manual_reset {
            self.signalled = false;
            self.sets.unmark();
        }
    }
}

/// What a wait on events returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitResult {
    /// The event at this index of the list satisfied the wait (the lowest signalled one when
    /// waiting for any; 0 when waiting for all).
    Signalled(usize),
    /// The timeout passed first.
    Timeout,
}

/// What an alertable wait returned: as [`WaitResult`], or routines ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitExResult {
    /// The event at this index satisfied the wait, as in [`WaitResult::Signalled`].
    Signalled(usize),
    /// The timeout passed first.
    Timeout,
    /// Completion routines of the waiting thread ran (`WAIT_IO_COMPLETION`, S28).
    IoCompletion,
}

impl From<WaitResult> for WaitExResult {
    fn from(r: WaitResult) -> WaitExResult {
        match r {
            WaitResult::Signalled(i) => WaitExResult::Signalled(i),
            WaitResult::Timeout => WaitExResult::Timeout,
        }
    }
}

/// Whether a wait on several events needs one of them or all of them at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitFor {
    /// Return as soon as any event is signalled.
    Any,
    /// Return only when every event is signalled at the same moment.
    All,
}

/// A sleeping thread that events wake. Wakes are remembered until the next [`Waiter::arm`], so a
/// wake that comes between registering and sleeping is never lost.
///
/// The flag is an atomic, read and written without a lock: a waiter is armed before it registers
/// under the lock of what will wake it (an event, the port), and that lock orders the arming
/// before any wake that finds the registration. A thread that sleeps on the condition variable
/// looks at the flag under `sleeping`, which a wake takes after setting it, so the wake cannot
/// fall between the look and the sleep; a thread that sleeps in its ring is woken through the
/// ring, whatever it saw of the flag.
pub(crate) struct Waiter {
    woken: AtomicBool,
    sleeping: Mutex<()>,
    cond: Condvar,
    /// For a thread that sleeps in its ring (an alertable wait): the ring to wake.
    ring: Option<Arc<dyn Ring>>,
}

impl Waiter {
    pub(crate) fn new() -> Arc<Waiter> {
        Arc::new(Waiter::sleeping_in(None))
    }

    /// A waiter for a thread that sleeps in `ring`: waking it wakes the ring.
    pub(crate) fn waking_ring(ring: Arc<dyn Ring>) -> Arc<Waiter> {
        Arc::new(Waiter::sleeping_in(Some(ring)))
    }

    fn sleeping_in(ring: Option<Arc<dyn Ring>>) -> Waiter {
        Waiter {
            woken: AtomicBool::new(false),
            sleeping: Mutex::new(()),
            cond: Condvar::new(),
            ring,
        }
    }

    pub(crate) fn is_woken(&self) -> bool {
        self.woken.load(Ordering::Acquire)
    }

    /// Forgets earlier wakes, before a new round of looking and registering.
    pub(crate) fn arm(&self) {
        self.woken.store(false, Ordering::Relaxed);
    }

    pub(crate) fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        match &self.ring {
            // A failed wake leaves the thread asleep until its ring's next completion or its
            // timeout; nothing better can be done from here.
            Some(ring) => {
                let _ = ring.wake();
            }
            None => {
                // Taken and released: a sleeper that saw the flag unset is waiting by now.
                drop(lock(&self.sleeping));
                self.cond.notify_one();
            }
        }
    }

    /// Sleeps until woken or until the deadline; returns false when the deadline passed unwoken.
    pub(crate) fn sleep(&self, deadline: Option<Instant>) -> bool {
        let mut sleeping = lock(&self.sleeping);
        while !self.is_woken() {
            match deadline {
                None => sleeping = self.cond.wait(sleeping).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    sleeping = self
                        .cond
                        .wait_timeout(sleeping, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        true
    }
}

/// Locks a mutex, ignoring poisoning: the library's critical sections leave state consistent
/// even if a panic unwinds through them.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Event {
    /// A manual-reset event, initially not signalled (`WSACreateEvent`).
    pub fn new() -> Event {
        Event::with_mode(true, false)
    }

    /// An auto-reset event, initially not signalled: a satisfied wait consumes it.
    pub fn new_auto_reset() -> Event {
        Event::with_mode(false, false)
    }

    /// An event with an explicit reset mode and initial state (`CreateEvent`).
    pub fn with_mode(manual_reset: bool, initially_signalled: bool) -> Event {
        Event {
            inner: Arc::new(EventInner {
                manual_reset,
                state: Mutex::new(EventState {
                    signalled: initially_signalled,
                    waiters: Vec::new(),
                    sets: Memberships::new(),
                }),
            }),
        }
    }

    /// Whether this is a manual-reset event.
    pub fn is_manual_reset(&self) -> bool {
        self.inner.manual_reset
    }

    /// Signals the event and wakes the threads waiting on it (`WSASetEvent`).
    pub fn set(&self) {
        let waiters = {
            let mut st = lock(&self.inner.state);
            st.signalled = true;
            let mut waiters = st.waiters.clone();
            st.sets.mark(&mut waiters);
            waiters
        };
        for w in waiters {
            w.wake();
        }
    }

    /// Clears the event (`WSAResetEvent`).
    pub fn reset(&self) {
        let mut st = lock(&self.inner.state);
        st.signalled = false;
        st.sets.unmark();
    }

    /// Whether the event is signalled now; never consumes an auto-reset event.
    pub fn is_set(&self) -> bool {
        lock(&self.inner.state).signalled
    }

    /// Waits for this event; returns false on timeout. `None` waits forever.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        matches!(
            wait_for_events(&[self], WaitFor::Any, timeout),
            Ok(WaitResult::Signalled(_))
        )
    }

    /// Whether two handles name the same event.
    pub fn same_as(&self, other: &Event) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The event's state, locked. Sets lock an event before a set, never the other way round.
    pub(crate) fn state(&self) -> MutexGuard<'_, EventState> {
        lock(&self.inner.state)
    }

    /// Takes the signal if it is there (consuming it for an auto-reset event), else registers
    /// `waiter` to be woken when it comes.
    fn take_or_register(&self, waiter: Option<&Arc<Waiter>>) -> bool {
        let mut st = lock(&self.inner.state);
        if st.signalled {
            st.consume(self.inner.manual_reset);
            return true;
        }
        if let Some(w) = waiter {
            st.waiters.push(w.clone());
        }
        false
    }

    pub(crate) fn deregister(&self, waiter: &Arc<Waiter>) {
        lock(&self.inner.state)
            .waiters
            .retain(|w| !Arc::ptr_eq(w, waiter));
    }
}

impl Default for Event {
    fn default() -> Event {
        Event::new()
    }
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("manual_reset", &self.inner.manual_reset)
            .field("signalled", &self.is_set())
            .finish()
    }
}

/// Waits on any number of events (S23, S24).
///
/// With [`WaitFor::Any`] it returns the lowest index among the signalled events, consuming that
/// one if it is auto-reset; with [`WaitFor::All`] it returns `Signalled(0)` only when all are
/// signalled at the same moment, consuming the auto-reset ones together. A zero timeout only
/// polls; `None` waits forever. An empty list, or the same event twice in a wait for all, is
/// `WSA_INVALID_PARAMETER`. Unlike Windows there is no 64-event cap here (the `winsock` facade
/// keeps it).
pub fn wait_for_events(
    events: &[&Event],
    wait_for: WaitFor,
    timeout: Option<Duration>,
) -> Result<WaitResult> {
    check_wait_list(events, wait_for)?;
    let deadline = timeout.map(|t| Instant::now() + t);
    let polling = timeout == Some(Duration::ZERO);
    if !polling {
        crate::driver::flush_deferred(); // what this thread deferred could be what it waits for
    }
    let waiter = Waiter::new();
    loop {
        waiter.arm();
        let register = if polling { None } else { Some(&waiter) };
        if let Some(i) = take(events, wait_for, register) {
            return Ok(WaitResult::Signalled(i));
        }
        if polling {
            return Ok(WaitResult::Timeout);
        }
        let woken = waiter.sleep(deadline);
        events.iter().for_each(|e| e.deregister(&waiter));
        if !woken {
            // One last look, so that a signal racing with the deadline is not reported as a timeout.
            let found = take(events, wait_for, None);
            return Ok(found.map_or(WaitResult::Timeout, WaitResult::Signalled));
        }
    }
}

/// Refuses an empty list, and the same event twice in a wait for all (S23).
pub(crate) fn check_wait_list(events: &[&Event], wait_for: WaitFor) -> Result<()> {
    if events.is_empty() || (wait_for == WaitFor::All && has_duplicates(events)) {
        return Err(Error::new(codes::WSA_INVALID_PARAMETER));
    }
    Ok(())
}

/// Takes a signalled event (or all of them) if the wait is satisfied; else registers `waiter`.
pub(crate) fn take(
    events: &[&Event],
    wait_for: WaitFor,
    waiter: Option<&Arc<Waiter>>,
) -> Option<usize> {
    match wait_for {
        WaitFor::Any => take_any(events, waiter),
        WaitFor::All => take_all(events, waiter),
    }
}

fn has_duplicates(events: &[&Event]) -> bool {
    let mut addrs: Vec<*const EventInner> = events.iter().map(|e| Arc::as_ptr(&e.inner)).collect();
    addrs.sort_unstable();
    addrs.windows(2).any(|w| w[0] == w[1])
}

/// Looks at the events in order and takes the first signalled one; registers the waiter with the
/// ones before it, and with all of them when none is signalled.
fn take_any(events: &[&Event], waiter: Option<&Arc<Waiter>>) -> Option<usize> {
    for (i, e) in events.iter().enumerate() {
        if e.take_or_register(waiter) {
            if let Some(w) = waiter {
                events[..i].iter().for_each(|e| e.deregister(w));
            }
            return Some(i);
        }
    }
    None
}

/// Takes all the events at once if all are signalled; else registers the waiter with each.
/// The locks are taken in address order, so two threads waiting on overlapping sets cannot
/// deadlock.
fn take_all(events: &[&Event], waiter: Option<&Arc<Waiter>>) -> Option<usize> {
    let mut order: Vec<&Event> = events.to_vec();
    order.sort_unstable_by_key(|e| Arc::as_ptr(&e.inner));
    let mut guards: Vec<(MutexGuard<'_, EventState>, bool)> = order
        .iter()
        .map(|e| (lock(&e.inner.state), e.inner.manual_reset))
        .collect();
    if guards.iter().all(|(st, _)| st.signalled) {
        for (st, manual) in guards.iter_mut() {
            st.consume(*manual);
        }
        return Some(0);
    }
    if let Some(w) = waiter {
        for (st, _) in guards.iter_mut() {
            st.waiters.push(w.clone());
        }
    }
    None
}
