//! The bookkeeping of an epoll ring, without system calls: which requests wait on which
//! descriptor, which of them a thread is performing now, what the ring knows of each
//! descriptor's readiness, and which results are ready to be delivered.
//!
//! Readiness is kept per side (reading, writing) as a flag and an epoch. Each epoll event for a
//! side counts one epoch and sets the flag; the flag is cleared only by someone who found the
//! side drained (`EAGAIN`, or a stream receive that did not fill its buffer) *in the same epoch*
//! it was set in. Registrations are edge-triggered, and the kernel reports an edge for every
//! arrival after the moment a side was found drained, so a cleared flag always turns back on
//! when there is something to do, and a side whose flag is off is not worth a system call.
//!
//! A ring reaped by a thread of its own (the shared ring of the event model) arms registrations
//! on demand instead: each is one-shot, so an event disarms it, and it is armed again only while
//! a request waits on its descriptor, and only for the sides that requests wait on (an idle TCP
//! socket is always writable: armed for writing while only a receive waits, it would report that
//! at once, again and again). That thread is then woken for the requests it has to perform, not
//! for every arrival on every socket, data the serving thread's own first attempts take anyway.
//! While a side is not armed its arrivals go unreported, so what the table knows of its readiness
//! may be stale, and it answers "unknown" (worth an attempt).
//!
//! Every method is called under the ring's lock.

use std::collections::VecDeque;
use std::os::fd::RawFd;

use super::maps::{ByDescriptor, ByTag};
use crate::driver::{Readiness, Request, Side};

/// One request as the table keeps it: the request the engine submitted. Its pointers stay valid
/// until its result has been delivered.
pub(super) type Job = Request;

/// A request whose result has not been delivered.
struct Pending {
    fd: RawFd,
    job: Job,
    /// A thread is performing it now, outside the lock.
    busy: bool,
    /// A cancel came while it was busy: if the attempt finds the socket not ready after all, the
    /// result is `-ECANCELED`.
    cancelled: bool,
}

/// One side of a descriptor.
/// A side's requests, oldest first. The engine runs one request of a side at a time, so there is
/// nearly always none or one: the first is kept inline (a tag, never 0), the rest only if any
/// come, so that an idle connection's waiting receive allocates nothing here.
#[derive(Default)]
struct Requests {
    /// The oldest request's tag; 0 when there is none (and then `rest` is empty too).
    first: u64,
    /// Boxed: this is kept for every descriptor the ring has seen, and is nearly always `None`,
    /// so 8 bytes inline instead of a queue's 32.
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<u64>>>,
}

impl Requests {
    fn is_empty(&self) -> bool {
        self.first == 0
    }

    fn len(&self) -> usize {
        usize::from(self.first != 0) + self.rest.as_ref().map_or(0, |rest| rest.len())
    }

    fn front(&self) -> Option<u64> {
        (self.first != 0).then_some(self.first)
    }

    fn push_back(&mut self, user_data: u64) {
        debug_assert_ne!(user_data, 0, "tags are never 0");
        match self.first {
            0 => self.first = user_data,
            _ => self
                .rest
                .get_or_insert_with(Box::default)
                .push_back(user_data),
        }
    }

    fn remove(&mut self, user_data: u64) {
        if self.first == user_data {
            self.first = self
                .rest
                .as_mut()
                .and_then(|rest| rest.pop_front())
                .unwrap_or(0);
        } else if let Some(rest) = &mut self.rest {
            rest.retain(|&u| u != user_data);
        }
    }
}

#[derive(Default)]
struct SideState {
    /// Requests, oldest first; only the oldest is attempted.
    queue: Requests,
    /// Worth an attempt: no one has found the side drained since its last event.
    ready: bool,
    /// Events taken for this side.
    epoch: u64,
    /// The poll mask of the side's last event, for answering a readiness request at once.
    mask: u32,
    /// The side has ended (a hang-up, an error, the peer's end of stream): every call returns at
    /// once from now on, and no new event will say so. Never drained again.
    ended: bool,
}

impl SideState {
    /// Someone found the side drained in `epoch`: by `EAGAIN` (`proven`), or by a receive that
    /// did not fill its buffer, which proves nothing once the side has ended.
    fn drain(&mut self, epoch: u64, proven: bool) {
        if self.epoch == epoch && (proven || !self.ended) {
            self.ready = false;
            self.mask = 0;
        }
    }
}

/// A descriptor this ring has registered with epoll.
struct Watched {
    /// Tells this registration's events apart from those of an earlier one of the same number.
    generation: u32,
    sides: [SideState; 2],
    /// The events the registration reports now ([`SOCKET_EVENTS`] for good, unless the ring arms
    /// on demand; 0 while disarmed).
    armed: u32,
}

/// What a registration that stays reports: both sides, edge-triggered.
pub(super) const SOCKET_EVENTS: u32 =
    (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLPRI | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
/// What a registration armed on demand reports for a side that requests wait on; it is one-shot
/// and edge-triggered.
const SIDE_INTEREST: [u32; 2] = [
    (libc::EPOLLIN | libc::EPOLLPRI | libc::EPOLLRDHUP) as u32,
    libc::EPOLLOUT as u32,
];
const ONE_SHOT: u32 = (libc::EPOLLONESHOT | libc::EPOLLET) as u32;

/// A request a thread is to perform now, outside the lock.
#[derive(Clone, Copy, Debug)]
pub(super) struct Attempt {
    pub(super) user_data: u64,
    pub(super) fd: RawFd,
    pub(super) job: Job,
    /// The side's epoch when the attempt was chosen.
    pub(super) epoch: u64,
    /// A readiness request is answered by the event that chose it, without a system call.
    pub(super) answer: Option<i32>,
}

/// A system call that makes a descriptor's registration report `events` under `token`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Arming {
    /// Register the descriptor: the ring has not watched it before.
    Register { token: u64, events: u32 },
    /// Arm its one-shot registration again, for these events.
    Rearm { token: u64, events: u32 },
}

/// What [`Table::insert`] needs the ring to do.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Inserted {
    /// Register the descriptor, or arm its registration again, before anything else.
    pub(super) arm: Option<Arming>,
    /// The side is ready and the request is first in line: a reaper should attempt it.
    pub(super) runnable: bool,
}

#[derive(Default)]
pub(super) struct Table {
    /// Registrations are one-shot and armed only while a request waits (see the module docs).
    on_demand: bool,
    /// Descriptors an event disarmed, to be armed again if requests wait on them.
    disarmed: Vec<RawFd>,
    pending: ByTag<Pending>,
    watched: ByDescriptor<Watched>,
    next_generation: u32,
    /// Descriptors with a side that became worth an attempt outside `ready`.
    runnable: Vec<RawFd>,
    /// Results ready to be delivered, in the order they were reached.
    finished: Vec<(u64, i32)>,
}

impl Watched {
    /// The events its registration should report: for good, everything; on demand, the sides
    /// that requests wait on (nothing if none does).
    fn wanted(&self, on_demand: bool) -> u32 {
        if !on_demand {
            return SOCKET_EVENTS;
        }
        let sides = (0..2)
            .filter(|&i| !self.sides[i].queue.is_empty())
            .fold(0, |events, i| events | SIDE_INTEREST[i]);
        match sides {
            0 => 0,
            sides => sides | ONE_SHOT,
        }
    }
}

/// The epoll token of a registration: the descriptor in the low half, the generation above.
pub(super) fn token(fd: RawFd, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(fd as u32)
}

/// Which side a request waits on.
pub(super) fn side_of(job: &Job) -> Side {
    job.side()
}

/// The events of an epoll mask that concern each side.
const READ_EVENTS: u32 =
    (libc::EPOLLIN | libc::EPOLLPRI | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
const WRITE_EVENTS: u32 = (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32;
/// The events after which a side stays ready for good: a receive returns the end of stream, a
/// send fails.
const ENDED_EVENTS: u32 = (libc::EPOLLRDHUP | libc::EPOLLHUP) as u32;

impl Table {
    /// A table whose registrations are one-shot and armed on demand (`on_demand`), or stay armed.
    pub(super) fn new(on_demand: bool) -> Table {
        Table {
            on_demand,
            ..Table::default()
        }
    }

    /// What the ring knows of `fd`'s readiness on `side`.
    pub(super) fn readiness(&self, fd: RawFd, side: Side) -> Readiness {
        match self.watched.get(fd) {
            None => Readiness::Unknown,
            // Arrivals since the side was last armed went unreported.
            Some(w) if w.armed & SIDE_INTEREST[side as usize] == 0 => Readiness::Unknown,
            Some(w) if w.sides[side as usize].ready => {
                Readiness::Ready(w.sides[side as usize].epoch)
            }
            Some(_) => Readiness::NotReady,
        }
    }

    /// Someone found `side` of `fd` drained after reading `epoch` (`proven`: by `EAGAIN`):
    /// unless an event came since, the side is not worth an attempt until the next one.
    pub(super) fn drained(&mut self, fd: RawFd, side: Side, epoch: u64, proven: bool) {
        if let Some(w) = self.watched.get_mut(fd) {
            w.sides[side as usize].drain(epoch, proven);
        }
    }

    /// Records a new request.
    pub(super) fn insert(&mut self, user_data: u64, fd: RawFd, job: Job) -> Inserted {
        let new = self.watched.get(fd).is_none();
        if new {
            let generation = self.next_generation;
            self.next_generation = generation.wrapping_add(1);
            // The side of this request waits for what registering reports (it is ready now, or
            // an edge when it becomes so); the other side is not known: worth an attempt.
            let mut sides: [SideState; 2] = Default::default();
            sides[1 - side_of(&job) as usize].ready = true;
            let watched = Watched {
                generation,
                sides,
                armed: 0,
            };
            self.watched.insert(fd, watched);
        }
        let on_demand = self.on_demand;
        let w = self.watched.get_mut(fd).expect("inserted above");
        let side = &mut w.sides[side_of(&job) as usize];
        side.queue.push_back(user_data);
        let runnable = side.ready && side.queue.len() == 1;
        let wanted = w.wanted(on_demand);
        // On demand, arming a side that was not armed is worth it even if the table thinks it
        // drained: what arrived since went unreported, and a registration armed on a ready side
        // reports it at once.
        let token = token(fd, w.generation);
        let arm = if new {
            Some(Arming::Register {
                token,
                events: wanted,
            })
        } else if wanted & !w.armed != 0 {
            Some(Arming::Rearm {
                token,
                events: wanted,
            })
        } else {
            None
        };
        if arm.is_some() {
            w.armed = wanted;
        }
        if runnable {
            self.runnable.push(fd);
        }
        let pending = Pending {
            fd,
            job,
            busy: false,
            cancelled: false,
        };
        self.pending.insert(user_data, pending);
        Inserted { arm, runnable }
    }

    /// Forgets a request whose descriptor epoll refused to register; nothing is delivered.
    pub(super) fn withdraw(&mut self, user_data: u64) {
        if let Some(p) = self.pending.remove(&user_data) {
            self.forget(p.fd);
        }
    }

    /// Forgets a descriptor that is being closed, or whose registration failed.
    pub(super) fn forget(&mut self, fd: RawFd) {
        self.watched.remove(fd);
    }

    /// Takes an epoll event: counts an epoch on each side it concerns, and adds the oldest idle
    /// request of each such side to `attempts`, to be attempted now. Events of a registration
    /// that no longer exists are ignored.
    pub(super) fn ready(&mut self, token_: u64, events: u32, attempts: &mut Vec<Attempt>) {
        let fd = token_ as u32 as RawFd;
        let Some(watched) = self.watched.get_mut(fd) else {
            return;
        };
        if token(fd, watched.generation) != token_ {
            return;
        }
        if self.on_demand {
            watched.armed = 0; // a one-shot registration: this event disarmed it.
            self.disarmed.push(fd);
        }
        for (side, concern) in [(Side::Read, READ_EVENTS), (Side::Write, WRITE_EVENTS)] {
            if events & concern == 0 {
                continue;
            }
            let s = &mut watched.sides[side as usize];
            s.epoch += 1;
            s.ready = true;
            s.ended |= events & concern & ENDED_EVENTS != 0;
            // epoll's event bits are poll's, for the events a readiness request asks about.
            s.mask = events & concern;
            attempts.extend(Self::choose(&mut self.pending, fd, s, true));
        }
    }

    /// Adds to `attempts` the requests that submissions made runnable, or that results left
    /// runnable.
    pub(super) fn take_runnable(&mut self, attempts: &mut Vec<Attempt>) {
        // Taken and given back, so that the list keeps its room from one reap to the next.
        let mut runnable = std::mem::take(&mut self.runnable);
        for fd in runnable.drain(..) {
            if let Some(watched) = self.watched.get_mut(fd) {
                for s in watched.sides.iter_mut().filter(|s| s.ready) {
                    attempts.extend(Self::choose(&mut self.pending, fd, s, false));
                }
            }
        }
        self.runnable = runnable;
    }

    /// The registrations to arm again after the attempts of a reap: those that events disarmed
    /// and that requests still wait on (whether the attempts found their sides drained, or they
    /// were not attempted), for the sides those requests wait on. They count as armed from now
    /// on. They go to the end of `rearm`.
    pub(super) fn take_rearm(&mut self, rearm: &mut Vec<(RawFd, Arming)>) {
        let mut disarmed = std::mem::take(&mut self.disarmed);
        for fd in disarmed.drain(..) {
            if let Some(w) = self.watched.get_mut(fd).filter(|w| w.armed == 0) {
                let events = w.wanted(true);
                if events != 0 {
                    w.armed = events;
                    let token = token(fd, w.generation);
                    rearm.push((fd, Arming::Rearm { token, events }));
                }
            }
        }
        self.disarmed = disarmed;
    }

    /// Whether anything waits for a reaper without an event: results or runnable requests.
    pub(super) fn has_work(&self) -> bool {
        !self.finished.is_empty() || !self.runnable.is_empty()
    }

    /// Marks the oldest request of a side busy and returns it, if there is one and it is idle.
    /// `fresh`: the side's event was taken just now. Nothing of that side can have been consumed
    /// since (the engine runs one request of a side at a time), so a readiness request is
    /// answered by the event's mask; otherwise it asks the kernel.
    fn choose(
        pending: &mut ByTag<Pending>,
        fd: RawFd,
        side: &mut SideState,
        fresh: bool,
    ) -> Option<Attempt> {
        let user_data = side.queue.front()?;
        let p = pending.get_mut(&user_data)?;
        if p.busy {
            return None;
        }
        p.busy = true;
        let answer = match p.job {
            Job::PollIn { .. } | Job::PollOut { .. } if fresh => Some(side.mask as i32),
            _ => None,
        };
        Some(Attempt {
            user_data,
            fd,
            job: p.job,
            epoch: side.epoch,
            answer,
        })
    }

    /// Takes the result of an attempt: a request the socket was not ready for waits again (or,
    /// if cancelled meanwhile, ends with `-ECANCELED`); any other result is final. `drained`
    /// says the attempt found the side empty although it succeeded.
    pub(super) fn done(&mut self, attempt: &Attempt, result: i32, drained: bool) {
        let user_data = attempt.user_data;
        let Some(p) = self.pending.get_mut(&user_data).filter(|p| p.busy) else {
            return; // no attempt of it is under way.
        };
        p.busy = false;
        let side = side_of(&p.job);
        let not_ready = result == -libc::EAGAIN || result == -libc::EINTR;
        if let Some(w) = self.watched.get_mut(attempt.fd) {
            let s = &mut w.sides[side as usize];
            if not_ready || drained {
                s.drain(attempt.epoch, not_ready);
            }
            if s.ready {
                // An event came meanwhile (or the side is still full): the next request, or
                // this one again, is worth an attempt.
                self.runnable.push(attempt.fd);
            }
        }
        if not_ready && !self.pending[&user_data].cancelled {
            return;
        }
        let result = if not_ready { -libc::ECANCELED } else { result };
        let p = self.pending.remove(&user_data).expect("looked up above");
        self.unqueue(p.fd, side, user_data);
        self.finished.push((user_data, result));
    }

    /// Cancels a request: one that waits ends with `-ECANCELED` now; one being performed ends so
    /// when its attempt finds the socket not ready; one already finished is left alone.
    pub(super) fn cancel(&mut self, user_data: u64) {
        let Some(p) = self.pending.get_mut(&user_data) else {
            return;
        };
        if p.busy {
            p.cancelled = true;
            return;
        }
        let p = self.pending.remove(&user_data).expect("looked up above");
        let side = side_of(&p.job);
        self.unqueue(p.fd, side, user_data);
        self.finished.push((user_data, -libc::ECANCELED));
        // The next request of the side may have been waiting behind it on a ready side.
        self.runnable.push(p.fd);
    }

    /// Moves the results ready to be delivered to the end of `finished`.
    pub(super) fn take_finished(&mut self, finished: &mut Vec<(u64, i32)>) {
        finished.append(&mut self.finished);
    }

    fn unqueue(&mut self, fd: RawFd, side: Side, user_data: u64) {
        if let Some(watched) = self.watched.get_mut(fd) {
            watched.sides[side as usize].queue.remove(user_data);
        }
    }
}

#[cfg(test)]
mod tests;
