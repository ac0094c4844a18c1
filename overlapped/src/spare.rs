//! The record of a socket's last finished operation, kept for the socket's next one
//! ([`crate::engine::retire`], [`crate::op::Op::renew`]).
//!
//! Every operation takes the record out when it starts and puts its own back when it finishes,
//! so the slot is one atomic pointer rather than a field under the socket's lock: a swap each
//! way instead of a lock taken and released. A kept record refers to its socket, so the slot
//! must be empty once the socket closes, or the two would keep each other alive: closing marks
//! the slot closed and empties it, and a record put back after that is taken out again by the
//! thread that put it (each side writes first and looks after, so one of them sees the other).

use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::Arc;

use crate::op::Op;

/// A socket's kept record, if any.
pub(crate) struct SpareSlot {
    /// A record given up by `Arc::into_raw`, or null.
    record: AtomicPtr<Op>,
    closed: AtomicBool,
}

impl SpareSlot {
    pub(crate) fn new() -> SpareSlot {
        SpareSlot {
            record: AtomicPtr::new(ptr::null_mut()),
            closed: AtomicBool::new(false),
        }
    }

    /// Takes the kept record, if there is one.
    pub(crate) fn take(&self) -> Option<Arc<Op>> {
        let record = self.record.swap(ptr::null_mut(), Ordering::SeqCst);
        // SAFETY: a non-null pointer in the slot came from `Arc::into_raw` in `put`, and the
        // swap made this thread the only one to take it back.
        (!record.is_null()).then(|| unsafe { Arc::from_raw(record) })
    }

    /// Keeps `record` for the next operation, in place of the one kept before. The caller must
    /// keep the slot's socket alive during the call: once in the slot, the record (and its
    /// reference to the socket) may be taken by another thread at any moment.
    pub(crate) fn put(&self, record: Arc<Op>) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        let replaced = self
            .record
            .swap(Arc::into_raw(record) as *mut Op, Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            drop(self.take()); // closed meanwhile: `close` may have emptied the slot before
        }
        if !replaced.is_null() {
            // SAFETY: as in `take`: the swap handed this thread the pointer it replaced.
            drop(unsafe { Arc::from_raw(replaced) });
        }
    }

    /// Closes the slot: it keeps nothing from now on. Returns what it kept, for the caller to
    /// drop outside its locks (the record may hold the last reference to an overlapped object).
    pub(crate) fn close(&self) -> Option<Arc<Op>> {
        self.closed.store(true, Ordering::SeqCst);
        self.take()
    }
}

impl Drop for SpareSlot {
    fn drop(&mut self) {
        drop(self.take());
    }
}
