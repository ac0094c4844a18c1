//! The facade's two pieces of state: the table that turns [`SOCKET`] handles into sockets, and
//! the calling thread's last error (`WSAGetLastError`).
//!
//! Handles are numbers, as in Win32, so a program can copy them freely. They are multiples of
//! four, never reused within a process, so a stale handle is refused with `WSAENOTSOCK` instead
//! of reaching a socket opened later.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::{SOCKET, SOCKET_ERROR};
use crate::error::{codes, Error, Result};
use crate::event::lock;
use crate::Socket;

thread_local! {
    static LAST_ERROR: Cell<u32> = const { Cell::new(0) };
}

/// The calling thread's last error (`WSAGetLastError`): the code set by the last facade call
/// that failed on this thread, including [`WSA_IO_PENDING`](codes::WSA_IO_PENDING) for an
/// operation that was started and is pending. `0` if none has failed.
pub fn wsa_get_last_error() -> u32 {
    LAST_ERROR.with(|e| e.get())
}

/// Sets the calling thread's last error (`WSASetLastError`).
pub fn wsa_set_last_error(code: u32) {
    LAST_ERROR.with(|e| e.set(code));
}

/// Records `error` as the thread's last error and returns `SOCKET_ERROR`.
pub(super) fn fail(error: Error) -> i32 {
    wsa_set_last_error(error.code());
    SOCKET_ERROR
}

/// Records `error` as the thread's last error, for calls that return `BOOL`: returns `false`.
pub(super) fn fail_bool(error: Error) -> bool {
    wsa_set_last_error(error.code());
    false
}

type Table = HashMap<SOCKET, Arc<Socket>>;

fn table() -> &'static Mutex<Table> {
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    TABLE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The first handle given out; Win32 socket handles are small multiples of four too.
const FIRST_HANDLE: usize = 0x100;
static NEXT_HANDLE: AtomicUsize = AtomicUsize::new(FIRST_HANDLE);

/// Gives a socket a new handle. The handle is never `INVALID_SOCKET` (not a multiple of four).
pub(super) fn insert(sock: Socket) -> SOCKET {
    let handle = NEXT_HANDLE.fetch_add(4, Ordering::Relaxed);
    lock(table()).insert(handle, Arc::new(sock));
    handle
}

/// The socket a handle names, shared for the duration of a call; `WSAENOTSOCK` if it names none.
pub(super) fn get(s: SOCKET) -> Result<Arc<Socket>> {
    lock(table())
        .get(&s)
        .cloned()
        .ok_or(Error::new(codes::WSAENOTSOCK))
}

/// Forgets a handle and returns its socket, which closes when the last call using it returns.
pub(super) fn remove(s: SOCKET) -> Result<Arc<Socket>> {
    lock(table())
        .remove(&s)
        .ok_or(Error::new(codes::WSAENOTSOCK))
}
