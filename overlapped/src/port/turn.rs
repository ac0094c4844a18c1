//! A thread's turn on a port: from the moment it takes packets until it asks a port for more
//! (or exits), the thread counts as running there, so that the port wakes no more threads than
//! its concurrency allows (S36). The turn is kept in a thread-local record: the thread's next
//! get, on this port or another, and its exit end it.

use std::cell::RefCell;
use std::sync::{Arc, Weak};

use super::PortInner;
use crate::event::lock;

/// The port a thread counts as running on, so that asking for the next packet (or exiting)
/// ends its turn.
pub(super) struct Running {
    port: Weak<dyn RunningCount>,
}

pub(super) trait RunningCount {
    /// Ends a thread's turn; `exiting` when the thread ends, so that what it deferred is
    /// submitted.
    fn leave(&self, exiting: bool);
}

thread_local! {
    static RUNNING: RefCell<Option<Running>> = const { RefCell::new(None) };
    static LEAVE_ON_EXIT: LeaveOnExit = const { LeaveOnExit };
}

/// Ends the thread's turn on its port when the thread exits.
struct LeaveOnExit;

impl Drop for LeaveOnExit {
    fn drop(&mut self) {
        let running = RUNNING.try_with(|r| r.borrow_mut().take()).ok().flatten();
        if let Some(port) = running.and_then(|r| r.port.upgrade()) {
            port.leave(true);
        }
    }
}

impl<B: Send + 'static> PortInner<B> {
    /// Ends the calling thread's running turn on whatever port it had one (it asks for a packet
    /// again, or waits elsewhere) — except on this port: that turn is returned, for the caller
    /// to end under the port's lock ([`PortInner::leave_locked`]).
    pub(super) fn end_turn_of_current_thread(&self) -> Option<Running> {
        let running = RUNNING.try_with(|r| r.borrow_mut().take()).ok().flatten()?;
        if std::ptr::addr_eq(running.port.as_ptr(), self as *const Self) {
            return Some(running);
        }
        if let Some(port) = running.port.upgrade() {
            port.leave(false);
        }
        None
    }

    /// Counts the calling thread as running on this port; `turn` is its last one here, if the
    /// caller has it, to be reused.
    pub(super) fn start_turn_of_current_thread(self: &Arc<Self>, turn: Option<Running>) {
        let turn = turn.unwrap_or_else(|| {
            let me: Weak<Self> = Arc::downgrade(self);
            Running { port: me }
        });
        LEAVE_ON_EXIT.with(|_| ());
        RUNNING.with(|r| *r.borrow_mut() = Some(turn));
    }
}

impl<B: Send + 'static> RunningCount for PortInner<B> {
    fn leave(&self, exiting: bool) {
        if exiting {
            let _ = self.ring.flush();
        }
        self.leave_locked(&mut lock(&self.state));
    }
}
