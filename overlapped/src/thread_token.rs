//! A token naming the calling thread, for structures that remember which thread holds a role
//! (a port's leader, the owner of a batching ring).
//!
//! `std::thread::current` is unusable while a thread's locals are being destroyed, and a port
//! must know who its leader is even then (an exiting thread ends its turn). The address of a
//! thread-local with no destructor exists for the thread's whole life and is never 0.

/// Which thread; two live threads never have the same token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ThreadToken(usize);

thread_local! {
    static MARKER: u8 = const { 0 };
}

impl ThreadToken {
    /// The calling thread's token.
    pub(crate) fn current() -> ThreadToken {
        MARKER.with(|m| ThreadToken(m as *const u8 as usize))
    }

    /// The token as a non-zero word, for an atomic that holds "no thread" as 0.
    pub(crate) fn as_word(self) -> usize {
        self.0
    }
}
