//! The packets a port's leader makes while it reaps the ring, gathered on its own stack and
//! queued under one lock when the reap ends.
//!
//! A reap delivers its completions one by one, and each becomes a packet. Queued one at a time,
//! every packet would take the port's lock and look for a thread to wake; gathered, a reap of
//! many completions takes the lock once, the one the leader takes after its reap anyway. Only the
//! thread that reaps gathers, only for the port it reaps for, and only while it is in the reap:
//! packets of other threads, or for other ports, are queued as they come.

use std::cell::Cell;
use std::ptr;

use super::Packet;

thread_local! {
    /// While the thread reaps for a port: that port's address, and its list of packets.
    static GATHERING: Cell<(*const (), *mut ())> = const { Cell::new((ptr::null(), ptr::null_mut())) };
}

/// Runs `reap` with the packets that `port` makes on this thread meanwhile gathered in
/// `packets` (see [`offer`]) instead of queued. `port` must be the address of the port whose
/// packets are of type `Packet<B>`.
pub(super) fn gathering<B, R>(
    port: *const (),
    packets: &mut Vec<Packet<B>>,
    reap: impl FnOnce() -> R,
) -> R {
    /// Puts back what the thread gathered for before, however the reap ends.
    struct Restore((*const (), *mut ()));
    impl Drop for Restore {
        fn drop(&mut self) {
            GATHERING.set(self.0);
        }
    }
    let list = packets as *mut Vec<Packet<B>> as *mut ();
    let _restore = Restore(GATHERING.replace((port, list)));
    reap()
}

/// Gathers `packet` if this thread is reaping for `port` (whose packets are `Packet<B>`);
/// else gives it back, to be queued.
pub(super) fn offer<B>(port: *const (), packet: Packet<B>) -> Option<Packet<B>> {
    let (gathering_for, list) = GATHERING.get();
    if gathering_for != port || list.is_null() {
        return Some(packet);
    }
    // SAFETY: `gathering` set `list` from a `&mut Vec<Packet<B>>` of this port's (a port's
    // packets have one type, so the address names the type too) that outlives the reap it runs
    // on this thread, and nothing else reaches that vector meanwhile: only this thread reads the
    // pointer, and no call made with it runs while another is under way.
    unsafe { (*(list as *mut Vec<Packet<B>>)).push(packet) };
    None
}
