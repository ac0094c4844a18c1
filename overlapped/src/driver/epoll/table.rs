//! The bookkeeping of an epoll ring, without system calls: which requests wait on which
//! descriptor, which of them a thread is performing now, what the descriptor's epoll
//! registration must watch, and which results are ready to be delivered.
//!
//! Every method is called under the ring's lock. The ring applies the [`Change`] a method returns
//! to epoll before it lets go of the lock, so that the registration the kernel holds always
//! matches the last change computed here.

use std::collections::{HashMap, VecDeque};
use std::os::fd::RawFd;

use crate::driver::Request;

/// One request as the table keeps it: the request the engine submitted. Its pointers stay valid
/// until its result has been delivered.
pub(super) type Job = Request;

/// Where a job waits, and the readiness it needs.
trait Readiness {
    fn side(&self) -> usize;
    fn events(&self) -> u32;
}

impl Readiness for Job {
    /// Which queue of its descriptor the job waits in: 0 for reading, 1 for writing.
    fn side(&self) -> usize {
        match self {
            Job::RecvMsg { .. } | Job::Recv { .. } | Job::PollIn { .. } | Job::Accept { .. } => 0,
            Job::SendMsg { .. } | Job::Send { .. } | Job::PollOut { .. } => 1,
        }
    }

    /// The readiness that lets the job make progress.
    fn events(&self) -> u32 {
        match self {
            Job::RecvMsg { flags, .. } | Job::Recv { flags, .. }
                if *flags as i32 & libc::MSG_OOB != 0 =>
            {
                libc::EPOLLPRI as u32
            }
            Job::RecvMsg { .. } | Job::Recv { .. } | Job::PollIn { .. } | Job::Accept { .. } => {
                (libc::EPOLLIN | libc::EPOLLRDHUP) as u32
            }
            Job::SendMsg { .. } | Job::Send { .. } | Job::PollOut { .. } => libc::EPOLLOUT as u32,
        }
    }
}

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

/// A descriptor with requests waiting, and its epoll registration.
struct Watched {
    /// Tells this registration's events apart from those of an earlier one of the same number.
    generation: u32,
    /// Requests by side (read, write), oldest first; only the oldest of a side is attempted.
    queues: [VecDeque<u64>; 2],
    registered: bool,
    /// What the registration was last armed for; 0 once its one-shot event has been taken.
    armed: u32,
}

/// What the ring must tell epoll about a descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Change {
    /// Nothing.
    Keep,
    /// `EPOLL_CTL_ADD` with these events (one-shot) and this token.
    Add { events: u32, token: u64 },
    /// `EPOLL_CTL_MOD` with these events (one-shot) and this token.
    Modify { events: u32, token: u64 },
    /// `EPOLL_CTL_DEL`: no request is left on the descriptor.
    Remove,
}

/// A request a thread is to perform now, outside the lock.
#[derive(Clone, Copy, Debug)]
pub(super) struct Attempt {
    pub(super) user_data: u64,
    pub(super) fd: RawFd,
    pub(super) job: Job,
}

#[derive(Default)]
pub(super) struct Table {
    pending: HashMap<u64, Pending>,
    watched: HashMap<RawFd, Watched>,
    next_generation: u32,
    /// Results ready to be delivered, in the order they were reached.
    finished: Vec<(u64, i32)>,
}

/// The epoll token of a registration: the descriptor in the low half, the generation above.
pub(super) fn token(fd: RawFd, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(fd as u32)
}

impl Table {
    /// Records a new request; the caller applies [`Table::interest`] next.
    pub(super) fn insert(&mut self, user_data: u64, fd: RawFd, job: Job) {
        if !self.watched.contains_key(&fd) {
            let generation = self.next_generation;
            self.next_generation = generation.wrapping_add(1);
            let watched = Watched {
                generation,
                queues: Default::default(),
                registered: false,
                armed: 0,
            };
            self.watched.insert(fd, watched);
        }
        let watched = self.watched.get_mut(&fd).expect("inserted above");
        watched.queues[job.side()].push_back(user_data);
        let pending = Pending {
            fd,
            job,
            busy: false,
            cancelled: false,
        };
        self.pending.insert(user_data, pending);
    }

    /// Forgets a request that was never handed over (its submission failed); nothing is delivered.
    pub(super) fn withdraw(&mut self, user_data: u64) {
        if let Some(p) = self.pending.remove(&user_data) {
            self.unqueue(p.fd, p.job.side(), user_data);
        }
    }

    /// What the descriptor's registration must become: armed for the oldest idle request of each
    /// side, or removed when no request is left.
    pub(super) fn interest(&mut self, fd: RawFd) -> Change {
        let Some(watched) = self.watched.get_mut(&fd) else {
            return Change::Keep;
        };
        if watched.queues.iter().all(VecDeque::is_empty) {
            let registered = watched.registered;
            self.watched.remove(&fd);
            return if registered {
                Change::Remove
            } else {
                Change::Keep
            };
        }
        let mut events = 0;
        for queue in &watched.queues {
            if let Some(p) = queue.front().and_then(|u| self.pending.get(u)) {
                if !p.busy {
                    events |= p.job.events();
                }
            }
        }
        // Every side is being performed: the threads doing so compute the interest again when
        // they are done.
        if events == 0 || events == watched.armed {
            return Change::Keep;
        }
        watched.armed = events;
        let token = token(fd, watched.generation);
        if watched.registered {
            Change::Modify { events, token }
        } else {
            watched.registered = true;
            Change::Add { events, token }
        }
    }

    /// Records that applying the last change failed, so that the next one is issued again.
    pub(super) fn forget_armed(&mut self, fd: RawFd) {
        if let Some(watched) = self.watched.get_mut(&fd) {
            watched.armed = 0;
        }
    }

    /// Takes a readiness event: marks the oldest idle request of each ready side busy and returns
    /// them, with the descriptor. An event of a registration that no longer exists is ignored.
    pub(super) fn ready(&mut self, token_: u64, events: u32) -> Option<(RawFd, Vec<Attempt>)> {
        let fd = token_ as u32 as RawFd;
        let watched = self.watched.get_mut(&fd)?;
        if token(fd, watched.generation) != token_ {
            return None;
        }
        watched.armed = 0; // one-shot: the registration is disarmed now.
        let hangup = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
        let mut attempts = Vec::new();
        for queue in &watched.queues {
            let Some(&user_data) = queue.front() else {
                continue;
            };
            let Some(p) = self.pending.get_mut(&user_data) else {
                continue;
            };
            if !p.busy && events & (p.job.events() | hangup) != 0 {
                p.busy = true;
                attempts.push(Attempt {
                    user_data,
                    fd,
                    job: p.job,
                });
            }
        }
        Some((fd, attempts))
    }

    /// Takes the result of an attempt: a request the socket was not ready for waits again (or,
    /// if cancelled meanwhile, ends with `-ECANCELED`); any other result is final.
    pub(super) fn done(&mut self, user_data: u64, result: i32) {
        let Some(p) = self.pending.get_mut(&user_data).filter(|p| p.busy) else {
            return; // no attempt of it is under way.
        };
        p.busy = false;
        let not_ready = result == -libc::EAGAIN || result == -libc::EINTR;
        if not_ready && !p.cancelled {
            return;
        }
        let result = if not_ready { -libc::ECANCELED } else { result };
        let p = self.pending.remove(&user_data).expect("looked up above");
        self.unqueue(p.fd, p.job.side(), user_data);
        self.finished.push((user_data, result));
    }

    /// Cancels a request: one that waits ends with `-ECANCELED` now; one being performed ends so
    /// when its attempt finds the socket not ready; one already finished is left alone. Returns
    /// the descriptor whose interest may have changed.
    pub(super) fn cancel(&mut self, user_data: u64) -> Option<RawFd> {
        let p = self.pending.get_mut(&user_data)?;
        if p.busy {
            p.cancelled = true;
            return None;
        }
        let p = self.pending.remove(&user_data).expect("looked up above");
        self.unqueue(p.fd, p.job.side(), user_data);
        self.finished.push((user_data, -libc::ECANCELED));
        Some(p.fd)
    }

    /// Ends every waiting request on `fd` with `-errno`: epoll refused to watch the descriptor.
    pub(super) fn fail_idle(&mut self, fd: RawFd, errno: i32) {
        let Some(watched) = self.watched.get_mut(&fd) else {
            return;
        };
        for queue in watched.queues.iter_mut() {
            let pending = &mut self.pending;
            queue.retain(|user_data| {
                if pending.get(user_data).is_some_and(|p| p.busy) {
                    return true;
                }
                pending.remove(user_data);
                self.finished.push((*user_data, -errno));
                false
            });
        }
    }

    /// The results ready to be delivered.
    pub(super) fn take_finished(&mut self) -> Vec<(u64, i32)> {
        std::mem::take(&mut self.finished)
    }

    fn unqueue(&mut self, fd: RawFd, side: usize, user_data: u64) {
        if let Some(watched) = self.watched.get_mut(&fd) {
            watched.queues[side].retain(|&u| u != user_data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IN: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
    const OUT: u32 = libc::EPOLLOUT as u32;
    const FD: RawFd = 7;

    fn recv() -> Job {
        Job::RecvMsg {
            fd: FD,
            msg: std::ptr::null_mut(),
            flags: 0,
        }
    }

    fn send() -> Job {
        Job::SendMsg {
            fd: FD,
            msg: std::ptr::null(),
            flags: 0,
        }
    }

    fn armed_token(change: Change) -> u64 {
        match change {
            Change::Add { token, .. } | Change::Modify { token, .. } => token,
            other => panic!("expected an arming change, got {other:?}"),
        }
    }

    #[test]
    fn arms_each_side_for_its_oldest_request_and_removes_when_empty() {
        let mut t = Table::default();
        t.insert(1, FD, recv());
        let change = t.interest(FD);
        assert!(
            matches!(change, Change::Add { events: IN, .. }),
            "{change:?}"
        );
        assert_eq!(
            t.interest(FD),
            Change::Keep,
            "already armed for the same events"
        );
        t.insert(2, FD, send());
        let change = t.interest(FD);
        assert!(matches!(change, Change::Modify { events, .. } if events == IN | OUT));

        let (fd, attempts) = t
            .ready(armed_token(change), OUT)
            .expect("a live registration");
        assert_eq!(fd, FD);
        assert_eq!(attempts.len(), 1);
        assert_eq!(
            attempts[0].user_data, 2,
            "only the writable side is attempted"
        );
        let change = t.interest(FD);
        assert!(
            matches!(change, Change::Modify { events: IN, .. }),
            "{change:?}"
        );

        t.done(2, 5);
        t.done(1, 0); // not busy: ignored, as a result for a request not being performed.
        assert_eq!(t.take_finished(), vec![(2, 5)]);
        assert_eq!(t.cancel(1), Some(FD));
        assert_eq!(t.take_finished(), vec![(1, -libc::ECANCELED)]);
        assert_eq!(t.interest(FD), Change::Remove);
        assert_eq!(t.interest(FD), Change::Keep, "nothing left to remove");
    }

    #[test]
    fn a_request_that_was_not_ready_waits_again() {
        let mut t = Table::default();
        t.insert(1, FD, recv());
        let token = armed_token(t.interest(FD));
        let (_, attempts) = t.ready(token, IN).unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(t.interest(FD), Change::Keep, "busy: its performer re-arms");
        t.done(1, -libc::EAGAIN);
        assert!(t.take_finished().is_empty());
        let change = t.interest(FD);
        assert!(
            matches!(change, Change::Modify { events: IN, .. }),
            "{change:?}"
        );
    }

    #[test]
    fn a_cancel_during_an_attempt_ends_once_with_the_attempts_outcome() {
        let mut t = Table::default();
        t.insert(1, FD, recv());
        t.insert(2, FD + 1, recv());
        let token1 = armed_token(t.interest(FD));
        let token2 = armed_token(t.interest(FD + 1));
        assert_ne!(token1, token2);
        t.ready(token1, IN).unwrap();
        t.ready(token2, IN).unwrap();
        assert_eq!(t.cancel(1), None, "being performed");
        assert_eq!(t.cancel(2), None, "being performed");
        assert!(t.take_finished().is_empty());
        t.done(1, -libc::EAGAIN); // not ready after all: cancelled.
        t.done(2, 9); // moved data: the real result wins.
        assert_eq!(t.take_finished(), vec![(1, -libc::ECANCELED), (2, 9)]);
        assert_eq!(t.cancel(1), None, "already over");
        assert_eq!(t.cancel(2), None, "already over");
        assert!(t.take_finished().is_empty());
    }

    #[test]
    fn events_of_an_earlier_registration_of_the_same_number_are_ignored() {
        let mut t = Table::default();
        t.insert(1, FD, recv());
        let old = armed_token(t.interest(FD));
        t.cancel(1);
        assert_eq!(t.interest(FD), Change::Remove);
        t.insert(2, FD, recv());
        let new = armed_token(t.interest(FD));
        assert_ne!(old, new);
        assert!(t.ready(old, IN).is_none());
        assert_eq!(t.ready(new, IN).unwrap().1.len(), 1);
    }

    #[test]
    fn later_requests_of_a_side_wait_behind_the_oldest_and_failures_spare_busy_ones() {
        let mut t = Table::default();
        t.insert(1, FD, recv());
        t.insert(2, FD, recv());
        t.insert(3, FD, send());
        let token = armed_token(t.interest(FD));
        let (_, attempts) = t.ready(token, IN | OUT).unwrap();
        let mut attempted: Vec<u64> = attempts.iter().map(|a| a.user_data).collect();
        attempted.sort();
        assert_eq!(attempted, vec![1, 3]);
        t.done(3, -libc::EAGAIN);
        t.fail_idle(FD, libc::ENOMEM);
        assert_eq!(
            t.take_finished(),
            vec![(2, -libc::ENOMEM), (3, -libc::ENOMEM)]
        );
        t.done(1, 4);
        assert_eq!(t.take_finished(), vec![(1, 4)]);
        assert_eq!(t.interest(FD), Change::Remove);
    }
}
