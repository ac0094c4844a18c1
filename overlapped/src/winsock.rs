//! The Win32-named facade: Winsock's overlapped calls with their names (in snake_case), their
//! return conventions and their numeric codes, so that a Winsock program ports line by line.
//!
//! # Why a facade
//! Code written for Windows — the textbook's programs, servers being moved to Linux — is full of
//! `if (WSARecv(...) == SOCKET_ERROR && WSAGetLastError() != WSA_IO_PENDING)`. Rewriting that
//! logic into idiomatic Rust while porting is where bugs come in. This module keeps the shape of
//! the Win32 calls, so the port can be checked against the original one line at a time; it is a
//! thin layer over the Rust API ([`Socket`](crate::Socket), [`Overlapped`], [`Event`]), which new
//! code should use instead.
//!
//! # Conventions kept from Win32
//! - Sockets are [`SOCKET`] handles (plain numbers, copied freely); a failed creation returns
//!   [`INVALID_SOCKET`]. Calls that return `int` in Win32 return `0` or [`SOCKET_ERROR`] here;
//!   calls that return `BOOL` return `bool`; waits return a `DWORD` code ([`WSA_WAIT_EVENT_0`] + i,
//!   [`WSA_WAIT_TIMEOUT`], [`WSA_WAIT_FAILED`]).
//! - Every failing call sets the calling thread's last error, read with [`wsa_get_last_error`];
//!   a call that starts an operation which will complete later "fails" with [`WSA_IO_PENDING`]
//!   and leaves the byte count and flags untouched (S2). A successful call leaves the last
//!   error alone, as on Windows: read it only after a failure.
//! - The codes are Windows' values ([`WSAECONNRESET`] is 10054, [`AF_INET6`] is 23), not
//!   Linux's.
//!
//! # Where Rust differs
//! - A `WSABUF` array is a `Vec<WsaBuf>` of owned buffers. With an overlapped object, the
//!   buffers move into it when the operation starts (the caller's `Vec` is left empty) and come
//!   back with [`Overlapped::take_buffers`](crate::Overlapped::take_buffers) once the operation
//!   is over: the Rust form of Windows' rule that the buffers belong to the operation until it
//!   completes (S15), enforced rather than trusted. Without an overlapped object the call blocks
//!   (S5) and the buffers stay in the caller's `Vec`, filled.
//! - Addresses are [`std::net::SocketAddr`], not `SOCKADDR*` plus a length. The sender of a
//!   datagram received by a pending [`wsa_recv_from`] is in the completion
//!   ([`Completion::from`](crate::Completion::from)): Windows writes `lpFrom` when the operation
//!   completes, which a Rust borrow cannot outlive.
//! - Events ([`WsaEvent`]) are reference-counted handles; [`wsa_close_event`] drops one of them.
//! - Completion routines (`lpCompletionRoutine`, S26-S30) are closures
//!   ([`WsaCompletionRoutine`]), so a routine can carry what the book keeps behind
//!   `lpOverlapped->hEvent` (the connection's socket, its state). A routine receives a handle to
//!   the overlapped object it was started with (overlapped objects are handles; clones name the
//!   same object), with the operation's buffers in it, and can start the next operation with it,
//!   as the book's echo server passes `lpOverlapped` on.
//! - A routine runs on the thread that started its operation, only in that thread's alertable
//!   waits ([`sleep_ex`], [`wait_for_single_object_ex`], [`wsa_wait_for_multiple_events`] with
//!   `alertable` true), which then return [`WAIT_IO_COMPLETION`] (S27, S28).
//! - Completion ports are [`HANDLE`]s, numbers in a table of their own
//!   ([`create_io_completion_port`]); a `NULL` handle argument is `None`, and a call that
//!   returns a `HANDLE` returns `None` for `NULL`. A packet hands back a handle to the
//!   operation's overlapped object, with its buffers in it.

use crate::{Event, Overlapped};

mod alertable;
mod events;
mod ext;
mod handles;
mod io;
mod port;
mod setup;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_ext;
#[cfg(test)]
mod tests_port;
#[cfg(test)]
mod tests_routines;

pub use alertable::{sleep_ex, wait_for_single_object_ex};
pub use events::{
    wsa_close_event, wsa_create_event, wsa_reset_event, wsa_set_event, wsa_wait_for_multiple_events,
};
pub use ext::{
    accept_ex, cancel_io_ex, connect_ex, disconnect_ex, get_accept_ex_sockaddrs, transmit_file,
    TransmitFileBuffers,
};
pub use handles::{wsa_get_last_error, wsa_set_last_error};
pub use io::{
    wsa_get_overlapped_result, wsa_recv, wsa_recv_from, wsa_send, wsa_send_to, WsaCompletionRoutine,
};
pub use port::{
    close_handle, create_io_completion_port, get_last_error, get_queued_completion_status,
    get_queued_completion_status_ex, post_queued_completion_status,
    set_file_completion_notification_modes, OverlappedEntry, ERROR_INVALID_HANDLE,
    ERROR_INVALID_PARAMETER, ERROR_IO_PENDING, ERROR_OPERATION_ABORTED,
    FILE_SKIP_COMPLETION_PORT_ON_SUCCESS, FILE_SKIP_SET_EVENT_ON_HANDLE, HANDLE,
    INVALID_HANDLE_VALUE,
};
pub use setup::{
    accept, bind, closesocket, connect, getpeername, getsockname, listen, make_word, shutdown,
    socket, wsa_cleanup, wsa_socket, wsa_startup, WsaData,
};

/// The Win32 and Winsock error codes (`WSAECONNRESET`, `WSA_IO_PENDING`, ...), Windows' values.
pub use crate::codes::*;
pub use crate::flags::{
    MSG_DONTROUTE, MSG_OOB, MSG_PARTIAL, MSG_PEEK, MSG_PUSH_IMMEDIATE, MSG_WAITALL,
};

/// A socket handle (`SOCKET`, an unsigned pointer-sized number in Win32).
#[allow(non_camel_case_types)]
pub type SOCKET = usize;

/// One buffer of a scatter/gather list (`WSABUF`): owned, its length is its size.
pub type WsaBuf = Vec<u8>;

/// The overlapped object (`WSAOVERLAPPED`). `WsaOverlapped::with_event(h_event)` is the
/// `overlapped.hEvent = h_event` of a Windows program; `WsaOverlapped::new()` has no event.
pub type WsaOverlapped = Overlapped<WsaBuf>;

/// An event object handle (`WSAEVENT`); clones name the same event.
pub type WsaEvent = Event;

/// `INVALID_SOCKET`: what a failed socket creation or accept returns.
pub const INVALID_SOCKET: SOCKET = !0;
/// `SOCKET_ERROR`: what a failed `int`-returning call returns.
pub const SOCKET_ERROR: i32 = -1;

/// `AF_INET`: IPv4.
pub const AF_INET: i32 = 2;
/// `AF_INET6`: IPv6 (Windows' value, 23).
pub const AF_INET6: i32 = 23;
/// `PF_INET`, the same as [`AF_INET`].
pub const PF_INET: i32 = AF_INET;
/// `PF_INET6`, the same as [`AF_INET6`].
pub const PF_INET6: i32 = AF_INET6;
/// `SOCK_STREAM`: a TCP stream.
pub const SOCK_STREAM: i32 = 1;
/// `SOCK_DGRAM`: UDP datagrams.
pub const SOCK_DGRAM: i32 = 2;
/// `IPPROTO_TCP`.
pub const IPPROTO_TCP: i32 = 6;
/// `IPPROTO_UDP`.
pub const IPPROTO_UDP: i32 = 17;

/// `WSA_FLAG_OVERLAPPED`: the socket takes overlapped operations. Every socket of this library
/// does (S1); the flag is accepted for fidelity.
pub const WSA_FLAG_OVERLAPPED: u32 = 0x01;
/// `WSA_FLAG_NO_HANDLE_INHERIT`: the socket is not inherited by child processes. Always true
/// here (sockets are opened close-on-exec); accepted for fidelity.
pub const WSA_FLAG_NO_HANDLE_INHERIT: u32 = 0x80;

/// `SD_RECEIVE`: [`shutdown`] receiving.
pub const SD_RECEIVE: i32 = 0;
/// `SD_SEND`: [`shutdown`] sending.
pub const SD_SEND: i32 = 1;
/// `SD_BOTH`: [`shutdown`] both directions.
pub const SD_BOTH: i32 = 2;

/// `WSAESOCKTNOSUPPORT`: [`wsa_socket`] was asked for a socket type it does not know.
pub const WSAESOCKTNOSUPPORT: u32 = 10044;

/// `WSA_INFINITE`: a wait with no timeout.
pub const WSA_INFINITE: u32 = 0xFFFF_FFFF;
/// `WSA_WAIT_EVENT_0`: a wait returns this plus the index of the event that satisfied it.
pub const WSA_WAIT_EVENT_0: u32 = 0;
/// `WSA_WAIT_IO_COMPLETION`: an alertable wait ran completion routines.
pub const WSA_WAIT_IO_COMPLETION: u32 = 0xC0;
/// `WSA_WAIT_TIMEOUT`: the wait timed out.
pub const WSA_WAIT_TIMEOUT: u32 = 0x102;
/// `WSA_WAIT_FAILED`: the wait failed; see [`wsa_get_last_error`].
pub const WSA_WAIT_FAILED: u32 = 0xFFFF_FFFF;
/// `WSA_MAXIMUM_WAIT_EVENTS`: the most events one wait takes (S24).
pub const WSA_MAXIMUM_WAIT_EVENTS: usize = 64;
/// `INFINITE`: a [`sleep_ex`] or [`wait_for_single_object_ex`] with no timeout.
pub const INFINITE: u32 = 0xFFFF_FFFF;
/// `WAIT_OBJECT_0`: [`wait_for_single_object_ex`] found its event signalled.
pub const WAIT_OBJECT_0: u32 = 0;
/// `WAIT_IO_COMPLETION`: an alertable wait ran completion routines and returned early (S28).
pub const WAIT_IO_COMPLETION: u32 = 0xC0;
/// `WAIT_TIMEOUT`: the wait timed out (a `DWORD`, 0x102; the same value as the error code).
pub const WAIT_TIMEOUT: u32 = 0x102;
/// `WAIT_FAILED`: [`wait_for_single_object_ex`] failed; see [`wsa_get_last_error`].
pub const WAIT_FAILED: u32 = 0xFFFF_FFFF;
