//! A persistent set of events whose waits cost what is signalled, not what is in the set (S24).
//!
//! [`crate::wait_for_events`] takes a fresh list on every call, so each wait must register with
//! every event and deregister afterwards: a wait on N events costs O(N) even when one of them is
//! signalled. A server that waits on thousands of connections pays that on every wake. An
//! [`EventSet`] turns the registration around: an event joins a set once, and from then on the
//! event itself tells the set when its signal changes.
//!
//! Each event keeps its memberships (which sets, at which index) in its own state. Whatever
//! changes the signal — [`Event::set`], [`Event::reset`], a wait that consumes an auto-reset event —
//! holds the event's lock and marks or unmarks the event's index in the ready marks of every set it
//! belongs to, and a set wakes its waiters when an index is marked. So, whenever no event's lock is
//! held, an index is marked exactly when its event is a member and signalled. A wait reads the
//! lowest mark (an ordered set of indexes), then takes that event under the event's lock, checking
//! again that it is still signalled and still a member there, because another thread may have
//! consumed it, reset it or removed it in between; if so, the mark is already gone and the wait
//! looks again. Consuming under the event's lock is what makes an auto-reset event satisfy exactly
//! one wait, whether that wait is on a set or a plain one.
//!
//! Locks are always taken event first, then set; no path holds a set's lock while it locks an
//! event. Events refer to sets weakly, so a dropped set costs its events nothing: the set's drop
//! removes its memberships, and a membership whose set is gone is pruned when next seen.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::alertable;
use crate::error::Result;
use crate::event::{lock, Event, WaitExResult, WaitResult, Waiter};

/// A persistent set of events to wait on, in time that grows with the signalled events, not the
/// members (S24).
///
/// Each member has an index, given by [`EventSet::add`] and kept for as long as the event stays a
/// member; after a removal, a later `add` may reuse the freed index (the lowest free one first).
/// Waits follow [`crate::wait_for_events`] with [`crate::WaitFor::Any`]: the lowest signalled
/// index wins, a manual-reset event stays signalled, an auto-reset event is consumed by the wait
/// it satisfies. An event may belong to any number of sets and be waited on directly at the same
/// time. The set holds a handle to each member. Dropping the set removes it from its events.
///
/// Every method takes `&self`: threads may add, remove and wait at the same time. A wait on an
/// empty set is allowed; it ends when an event is added and signalled, or at its timeout.
pub struct EventSet {
    shared: Arc<SetShared>,
}

/// The part of a set that its events reach, through weak references.
pub(crate) struct SetShared {
    state: Mutex<SetState>,
    /// How many member events waits have examined; see [`EventSet::examined`].
    examined: AtomicU64,
}

impl SetShared {
    /// The shared part of a set with no members.
    fn empty() -> SetShared {
        SetShared {
            state: Mutex::new(SetState {
                members: Vec::new(),
                free: BTreeSet::new(),
                ready: BTreeSet::new(),
                waiters: Vec::new(),
            }),
            examined: AtomicU64::new(0),
        }
    }
}

struct SetState {
    /// Index → member; `None` for a free index.
    members: Vec<Option<Event>>,
    /// The free indexes below `members.len()`.
    free: BTreeSet<usize>,
    /// The indexes of the members that are signalled.
    ready: BTreeSet<usize>,
    /// The threads waiting on this set.
    waiters: Vec<Arc<Waiter>>,
}

/// The sets one event belongs to. Kept in the event's state, under the event's lock.
pub(crate) struct Memberships(Vec<Membership>);

struct Membership {
    set: Weak<SetShared>,
    index: usize,
}

impl Memberships {
    pub(crate) const fn new() -> Memberships {
        Memberships(Vec::new())
    }

    /// The event became signalled: marks it ready in every set, and adds the sets' waiters to
    /// `wake`. Forgets the sets that are gone.
    pub(crate) fn mark(&mut self, wake: &mut Vec<Arc<Waiter>>) {
        self.0.retain(|m| match m.set.upgrade() {
            Some(set) => {
                let mut st = lock(&set.state);
                st.ready.insert(m.index);
                wake.extend(st.waiters.iter().cloned());
                true
            }
            None => false,
        });
    }

    /// The event is no longer signalled: clears its mark in every set.
    pub(crate) fn unmark(&mut self) {
        self.0.retain(|m| match m.set.upgrade() {
            Some(set) => {
                lock(&set.state).ready.remove(&m.index);
                true
            }
            None => false,
        });
    }

    /// The event's index in `set`, if it is a member.
    fn index_in(&self, set: &Arc<SetShared>) -> Option<usize> {
        let set = Arc::as_ptr(set);
        self.0
            .iter()
            .find(|m| std::ptr::eq(m.set.as_ptr(), set))
            .map(|m| m.index)
    }

    /// Forgets `set`, and any set that is gone.
    fn leave(&mut self, set: *const SetShared) {
        self.0
            .retain(|m| !std::ptr::eq(m.set.as_ptr(), set) && m.set.strong_count() > 0);
    }
}

impl SetState {
    /// Registers `waiter` (once) to be woken when an index is marked.
    fn register(&mut self, waiter: Option<&Arc<Waiter>>) {
        if let Some(w) = waiter {
            if !self.waiters.iter().any(|x| Arc::ptr_eq(x, w)) {
                self.waiters.push(w.clone());
            }
        }
    }

    /// Frees `index`, which its event (locked by the caller) is leaving.
    fn vacate(&mut self, index: usize) {
        self.members[index] = None;
        self.ready.remove(&index);
        self.free.insert(index);
    }
}

impl EventSet {
    /// An empty set.
    pub fn new() -> EventSet {
        EventSet {
            shared: Arc::new(SetShared::empty()),
        }
    }

    /// Adds `event` and returns its index; an event that is already a member keeps its index,
    /// which is returned. A signalled event is ready at once, and wakes the set's waiters.
    pub fn add(&self, event: &Event) -> usize {
        let mut ev = event.state();
        if let Some(index) = ev.sets.index_in(&self.shared) {
            return index;
        }
        let (index, wake) = {
            let mut st = lock(&self.shared.state);
            let index = st.free.pop_first().unwrap_or_else(|| {
                st.members.push(None);
                st.members.len() - 1
            });
            st.members[index] = Some(event.clone());
            let mut wake = Vec::new();
            if ev.signalled {
                st.ready.insert(index);
                wake = st.waiters.clone();
            }
            (index, wake)
        };
        // Joined under the event's lock: a set() that comes later marks this index.
        ev.sets.0.push(Membership {
            set: Arc::downgrade(&self.shared),
            index,
        });
        drop(ev);
        wake.iter().for_each(|w| w.wake());
        index
    }

    /// Removes `event`; returns the index it had, or `None` if it was not a member.
    pub fn remove(&self, event: &Event) -> Option<usize> {
        let mut ev = event.state();
        let index = ev.sets.index_in(&self.shared)?;
        lock(&self.shared.state).vacate(index);
        ev.sets.leave(Arc::as_ptr(&self.shared));
        Some(index)
    }

    /// Removes the event at `index` and returns it, or `None` if the index is free.
    pub fn remove_index(&self, index: usize) -> Option<Event> {
        loop {
            let event = self.get(index)?;
            // Locked event first: the index may have changed hands meanwhile, so check again.
            let mut ev = event.state();
            if ev.sets.index_in(&self.shared) == Some(index) {
                lock(&self.shared.state).vacate(index);
                ev.sets.leave(Arc::as_ptr(&self.shared));
                drop(ev);
                return Some(event);
            }
        }
    }

    /// The event at `index`, if the index is in use.
    pub fn get(&self, index: usize) -> Option<Event> {
        lock(&self.shared.state).members.get(index)?.clone()
    }

    /// The index of `event` in this set, if it is a member.
    pub fn index_of(&self, event: &Event) -> Option<usize> {
        event.state().sets.index_in(&self.shared)
    }

    /// How many events are members.
    pub fn len(&self) -> usize {
        let st = lock(&self.shared.state);
        st.members.len() - st.free.len()
    }

    /// Whether the set has no members.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until a member is signalled and returns the lowest signalled index, consuming that
    /// event if it is auto-reset. A zero timeout only polls; `None` waits forever.
    pub fn wait_any(&self, timeout: Option<Duration>) -> WaitResult {
        self.wait(timeout, |w| self.take_lowest(w))
            .map_or(WaitResult::Timeout, WaitResult::Signalled)
    }

    /// Waits until at least one member is signalled and returns every signalled index, in
    /// ascending order, consuming the auto-reset events among them (this wait is the one they
    /// satisfy). Empty when the timeout passes first. A zero timeout only polls; `None` waits
    /// forever. The work done is proportional to the number of signalled members.
    pub fn ready(&self, timeout: Option<Duration>) -> Vec<usize> {
        self.wait(timeout, |w| self.take_ready(w))
            .unwrap_or_default()
    }

    /// [`EventSet::wait_any`] with an alertable flag, as [`crate::wait_for_events_ex`]: a
    /// signalled member wins; otherwise queued completion routines of the calling thread run and
    /// the wait returns [`WaitExResult::IoCompletion`] (S28).
    pub fn wait_any_ex(&self, timeout: Option<Duration>, alertable: bool) -> Result<WaitExResult> {
        if !alertable {
            return Ok(self.wait_any(timeout).into());
        }
        alertable::alertable_wait(
            timeout,
            |w| self.take_lowest(w).map(WaitExResult::Signalled),
            |w| self.forget(w),
        )
    }

    /// How many member events this set's waits have examined since the set was made: one for
    /// each mark a wait follows to its event, whether it takes the event or finds that another
    /// thread took it first. A diagnostic, showing that a wait's work follows the signalled
    /// events rather than the number of members.
    pub fn examined(&self) -> u64 {
        self.shared.examined.load(Ordering::Relaxed)
    }

    /// The loop of a non-alertable wait: `look` (which registers the waiter when given one) until
    /// it finds something, sleeping between looks until a mark wakes the waiter or `timeout`.
    fn wait<R>(
        &self,
        timeout: Option<Duration>,
        mut look: impl FnMut(Option<&Arc<Waiter>>) -> Option<R>,
    ) -> Option<R> {
        if timeout == Some(Duration::ZERO) {
            return look(None);
        }
        crate::driver::flush_deferred(); // what this thread deferred could be what it waits for
        let deadline = timeout.map(|t| Instant::now() + t);
        let waiter = Waiter::new();
        let found = loop {
            waiter.arm();
            if let Some(found) = look(Some(&waiter)) {
                break Some(found);
            }
            if !waiter.sleep(deadline) {
                // One last look, so that a signal racing with the deadline is not a timeout.
                break look(None);
            }
        };
        self.forget(&waiter);
        found
    }

    /// Takes the member at the lowest mark, if any; registers `waiter` first.
    fn take_lowest(&self, waiter: Option<&Arc<Waiter>>) -> Option<usize> {
        loop {
            let (index, event) = {
                let mut st = lock(&self.shared.state);
                st.register(waiter);
                let index = *st.ready.first()?;
                (index, st.members.get(index).cloned().flatten())
            };
            if self.take(index, event.as_ref()) {
                return Some(index);
            }
            // Taken, reset or removed by another thread since the look: its mark is gone.
        }
    }

    /// Takes every marked member; registers `waiter` first. `None` when none could be taken.
    fn take_ready(&self, waiter: Option<&Arc<Waiter>>) -> Option<Vec<usize>> {
        let marked: Vec<(usize, Option<Event>)> = {
            let mut st = lock(&self.shared.state);
            st.register(waiter);
            st.ready
                .iter()
                .map(|&i| (i, st.members.get(i).cloned().flatten()))
                .collect()
        };
        let taken: Vec<usize> = marked
            .into_iter()
            .filter(|(i, event)| self.take(*i, event.as_ref()))
            .map(|(i, _)| i)
            .collect();
        (!taken.is_empty()).then_some(taken)
    }

    /// Takes the signal of `event`, the member that was at `index`, if it is still signalled and
    /// still there, consuming it if it is auto-reset.
    fn take(&self, index: usize, event: Option<&Event>) -> bool {
        self.shared.examined.fetch_add(1, Ordering::Relaxed);
        let Some(event) = event else {
            return false; // a mark without a member: cannot happen while the set is alive
        };
        let mut ev = event.state();
        if !ev.signalled || ev.sets.index_in(&self.shared) != Some(index) {
            return false;
        }
        ev.consume(event.is_manual_reset());
        true
    }

    fn forget(&self, waiter: &Arc<Waiter>) {
        lock(&self.shared.state)
            .waiters
            .retain(|w| !Arc::ptr_eq(w, waiter));
    }
}

impl Default for EventSet {
    fn default() -> EventSet {
        EventSet::new()
    }
}

impl Drop for EventSet {
    fn drop(&mut self) {
        let members = std::mem::take(&mut lock(&self.shared.state).members);
        let set = Arc::as_ptr(&self.shared);
        for event in members.into_iter().flatten() {
            event.state().sets.leave(set);
        }
    }
}

impl std::fmt::Debug for EventSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = lock(&self.shared.state);
        f.debug_struct("EventSet")
            .field("members", &(st.members.len() - st.free.len()))
            .field("ready", &st.ready)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{wait_for_events, WaitFor};
    use std::thread;

    const POLL: Option<Duration> = Some(Duration::ZERO);
    const LIMIT: Option<Duration> = Some(Duration::from_secs(20));

    fn marks(set: &EventSet) -> Vec<usize> {
        lock(&set.shared.state).ready.iter().copied().collect()
    }

    #[test]
    fn marks_follow_set_reset_and_consuming_waits() {
        let set = EventSet::new();
        let (manual, auto) = (Event::new(), Event::new_auto_reset());
        assert_eq!((set.add(&manual), set.add(&auto)), (0, 1));
        assert!(marks(&set).is_empty());
        auto.set();
        manual.set();
        assert_eq!(marks(&set), [0, 1]);
        manual.reset();
        assert_eq!(marks(&set), [1]);
        // A plain wait that consumes the auto-reset event clears its mark too.
        assert!(auto.wait(POLL));
        assert!(marks(&set).is_empty());
        auto.set();
        manual.set();
        assert_eq!(
            wait_for_events(&[&manual, &auto], WaitFor::All, POLL),
            Ok(WaitResult::Signalled(0))
        );
        assert_eq!(
            marks(&set),
            [0],
            "the wait for all consumed the auto-reset event"
        );
    }

    #[test]
    fn indexes_are_stable_and_freed_ones_reused_lowest_first() {
        let set = EventSet::new();
        let events: Vec<Event> = (0..5).map(|_| Event::new()).collect();
        for (i, e) in events.iter().enumerate() {
            assert_eq!(set.add(e), i);
        }
        assert_eq!(set.add(&events[2].clone()), 2, "a member keeps its index");
        assert_eq!(set.remove(&events[3]), Some(3));
        assert_eq!(set.remove(&events[3]), None);
        assert!(set.remove_index(1).unwrap().same_as(&events[1]));
        assert!(set.remove_index(1).is_none());
        assert_eq!((set.len(), set.index_of(&events[4])), (3, Some(4)));
        let (x, y) = (Event::new(), Event::new());
        assert_eq!((set.add(&x), set.add(&y)), (1, 3));
        assert!(set.get(3).unwrap().same_as(&y));
        // A removed event's signal no longer marks the index it had.
        events[3].set();
        assert!(marks(&set).is_empty());
        assert_eq!(set.wait_any(POLL), WaitResult::Timeout);
    }

    #[test]
    fn adding_a_signalled_event_makes_it_ready_and_wakes_a_waiter() {
        let set = Arc::new(EventSet::new());
        let waiting = {
            let set = set.clone();
            thread::spawn(move || set.wait_any(LIMIT))
        };
        // The waiter may or may not be asleep yet; either way the add must reach it.
        let event = Event::with_mode(true, true);
        let index = set.add(&event);
        assert_eq!(waiting.join().unwrap(), WaitResult::Signalled(index));
        assert!(
            lock(&set.shared.state).waiters.is_empty(),
            "the waiter left"
        );
    }

    #[test]
    fn a_set_racing_with_add_is_never_lost() {
        for _ in 0..200 {
            let set = EventSet::new();
            let event = Event::new_auto_reset();
            let setter = {
                let event = event.clone();
                thread::spawn(move || event.set())
            };
            let index = set.add(&event);
            setter.join().unwrap();
            assert_eq!(set.wait_any(POLL), WaitResult::Signalled(index));
            assert_eq!(set.wait_any(POLL), WaitResult::Timeout, "consumed once");
        }
    }

    #[test]
    fn dropping_a_set_removes_it_from_its_events() {
        let (a, b) = (Event::new(), Event::new());
        let keep = EventSet::new();
        keep.add(&a);
        {
            let gone = EventSet::new();
            gone.add(&a);
            gone.add(&b);
            assert_eq!(a.state().sets.0.len(), 2);
        }
        assert_eq!((a.state().sets.0.len(), b.state().sets.0.len()), (1, 0));
        a.set();
        b.set();
        assert_eq!(marks(&keep), [0]);
    }

    #[test]
    fn a_membership_whose_set_is_gone_is_pruned_when_seen() {
        let event = Event::new();
        let shared = Arc::new(SetShared::empty());
        event.state().sets.0.push(Membership {
            set: Arc::downgrade(&shared),
            index: 0,
        });
        drop(shared);
        event.set();
        assert!(event.state().sets.0.is_empty());
    }

    #[test]
    fn an_auto_reset_event_satisfies_one_of_two_competing_set_waits() {
        use std::sync::atomic::AtomicUsize;
        const ROUNDS: usize = 200;
        let deadline = Instant::now() + LIMIT.unwrap();
        let set = Arc::new(EventSet::new());
        let event = Event::new_auto_reset();
        set.add(&event);
        let total = Arc::new(AtomicUsize::new(0));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (set, total) = (set.clone(), total.clone());
                thread::spawn(move || {
                    let mut took = 0;
                    while total.load(Ordering::SeqCst) < ROUNDS && Instant::now() < deadline {
                        if let WaitResult::Signalled(0) =
                            set.wait_any(Some(Duration::from_millis(10)))
                        {
                            took += 1;
                            total.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    took
                })
            })
            .collect();
        for round in 0..ROUNDS {
            event.set();
            // The next signal only once this one is taken, so that no two signals merge.
            while event.is_set() {
                assert!(Instant::now() < deadline, "round {round} was never taken");
                thread::yield_now();
            }
        }
        let took: Vec<usize> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
        assert_eq!(took.iter().sum::<usize>(), ROUNDS, "{took:?}");
    }

    #[test]
    fn alertable_wait_finds_a_signalled_member_and_times_out() {
        let set = EventSet::new();
        let event = Event::new();
        set.add(&event);
        let short = Some(Duration::from_millis(20));
        assert_eq!(set.wait_any_ex(short, true), Ok(WaitExResult::Timeout));
        event.set();
        assert_eq!(set.wait_any_ex(short, true), Ok(WaitExResult::Signalled(0)));
        assert_eq!(set.wait_any_ex(POLL, false), Ok(WaitExResult::Signalled(0)));
        assert!(lock(&set.shared.state).waiters.is_empty());
    }
}
