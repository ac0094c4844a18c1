//! I/O completion ports with Win32's names and return conventions: `CreateIoCompletionPort`,
//! `GetQueuedCompletionStatus(Ex)`, `PostQueuedCompletionStatus`, `CloseHandle`,
//! `SetFileCompletionNotificationModes` (S36-S44).
//!
//! A port is a [`HANDLE`], a plain number like a [`SOCKET`], kept in a table of its own. Port
//! handles are two more than a multiple of four, socket handles are multiples of four, so the
//! two never collide: a socket handle given where a port is expected (or the reverse) is refused
//! with [`ERROR_INVALID_HANDLE`] instead of reaching the wrong object. Handles are never reused
//! within a process. Completion keys are `usize` (`ULONG_PTR`): a key holds a pointer-sized
//! value without truncation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::handles::{self, fail_bool, wsa_set_last_error};
use super::{WsaBuf, WsaOverlapped, INFINITE, SOCKET, WAIT_IO_COMPLETION};
use crate::error::{codes, Error, Result};
use crate::event::lock;
use crate::{CompletionPort, Packet, PortWait};

/// A kernel object handle (`HANDLE`): a completion port, or a [`SOCKET`] given where Win32
/// takes a `HANDLE` (`(HANDLE)hSocket`). A plain number, copied freely.
#[allow(non_camel_case_types)]
pub type HANDLE = usize;

/// `INVALID_HANDLE_VALUE`: passed as the file handle to [`create_io_completion_port`] to create
/// a port with no socket. The same number as [`INVALID_SOCKET`](super::INVALID_SOCKET).
pub const INVALID_HANDLE_VALUE: HANDLE = !0;

/// `ERROR_INVALID_HANDLE`: the handle names no port (or, for a socket argument, no socket).
pub const ERROR_INVALID_HANDLE: u32 = 6;
/// `ERROR_INVALID_PARAMETER`: an argument is out of range, or a socket is already associated
/// with a port.
pub const ERROR_INVALID_PARAMETER: u32 = codes::WSA_INVALID_PARAMETER;
/// `ERROR_IO_PENDING`: the operation was started and will complete later (the same value as
/// [`WSA_IO_PENDING`](codes::WSA_IO_PENDING)).
pub const ERROR_IO_PENDING: u32 = codes::WSA_IO_PENDING;
/// `ERROR_OPERATION_ABORTED`: the operation was cancelled (the same value as
/// [`WSA_OPERATION_ABORTED`](codes::WSA_OPERATION_ABORTED)).
pub const ERROR_OPERATION_ABORTED: u32 = codes::WSA_OPERATION_ABORTED;

/// `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS`: an operation that succeeds at once posts no packet
/// (S44).
pub const FILE_SKIP_COMPLETION_PORT_ON_SUCCESS: u8 = 0x1;
/// `FILE_SKIP_SET_EVENT_ON_HANDLE`: accepted for fidelity; a socket has no handle event to skip.
pub const FILE_SKIP_SET_EVENT_ON_HANDLE: u8 = 0x2;

/// One packet taken by [`get_queued_completion_status_ex`] (`OVERLAPPED_ENTRY`).
#[derive(Clone, Debug, Default)]
pub struct OverlappedEntry {
    /// The completion key of the socket, or the one posted (`lpCompletionKey`).
    pub completion_key: usize,
    /// The operation's overlapped object, or the one posted (`lpOverlapped`).
    pub overlapped: Option<WsaOverlapped>,
    /// The operation's status (`Internal`): 0 for success, else its error code
    /// (`WSAECONNRESET`, `WSA_OPERATION_ABORTED`, ...).
    pub internal: u32,
    /// Bytes transferred (`dwNumberOfBytesTransferred`).
    pub number_of_bytes_transferred: u32,
}

/// `GetLastError`: the calling thread's last error, the same code as
/// [`wsa_get_last_error`](super::wsa_get_last_error) (on Windows, too, they are one value).
pub fn get_last_error() -> u32 {
    handles::wsa_get_last_error()
}

type PortTable = HashMap<HANDLE, CompletionPort<WsaBuf>>;

fn ports() -> &'static Mutex<PortTable> {
    static PORTS: OnceLock<Mutex<PortTable>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The first port handle: two more than a multiple of four, as every port handle is.
const FIRST_PORT: HANDLE = 0x102;
static NEXT_PORT: AtomicUsize = AtomicUsize::new(FIRST_PORT);

fn insert(port: CompletionPort<WsaBuf>) -> HANDLE {
    let handle = NEXT_PORT.fetch_add(4, Ordering::Relaxed);
    lock(ports()).insert(handle, port);
    handle
}

/// The port a handle names (a handle to it, shared for the duration of a call).
fn port(h: HANDLE) -> Result<CompletionPort<WsaBuf>> {
    lock(ports())
        .get(&h)
        .cloned()
        .ok_or(Error::new(ERROR_INVALID_HANDLE))
}

/// A timeout in milliseconds as the Rust API takes it: [`INFINITE`] is none.
fn timeout(ms: u32) -> Option<Duration> {
    match ms {
        INFINITE => None,
        ms => Some(Duration::from_millis(u64::from(ms))),
    }
}

/// A byte count as a `DWORD`; counts above `u32::MAX` are reported as `u32::MAX`.
fn dword(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// `CreateIoCompletionPort(FileHandle, ExistingCompletionPort, CompletionKey,
/// NumberOfConcurrentThreads)` (S36).
///
/// - `file_handle` [`INVALID_HANDLE_VALUE`], `existing_port` `None`: a new port, on which at most
///   `concurrency` threads run at once (0: one per CPU). `completion_key` is ignored.
/// - `file_handle` a socket, `existing_port` `Some(port)`: associates the socket with the port
///   under `completion_key` and returns the port. From then on every notification of the socket
///   is a packet on the port, carrying the key and the operation's overlapped object.
/// - `file_handle` a socket, `existing_port` `None`: a new port, with the socket associated.
///
/// Returns `None` (Win32's `NULL`) with the last error set on failure: [`ERROR_INVALID_HANDLE`]
/// for a handle that names no socket or no port, [`ERROR_INVALID_PARAMETER`] for
/// [`INVALID_HANDLE_VALUE`] with an existing port, or a socket already associated with a port.
pub fn create_io_completion_port(
    file_handle: HANDLE,
    existing_port: Option<HANDLE>,
    completion_key: usize,
    concurrency: u32,
) -> Option<HANDLE> {
    match create(file_handle, existing_port, completion_key, concurrency) {
        Ok(h) => Some(h),
        Err(e) => {
            wsa_set_last_error(e.code());
            None
        }
    }
}

fn create(
    file_handle: HANDLE,
    existing_port: Option<HANDLE>,
    key: usize,
    concurrency: u32,
) -> Result<HANDLE> {
    if file_handle == INVALID_HANDLE_VALUE {
        if existing_port.is_some() {
            return Err(Error::new(ERROR_INVALID_PARAMETER));
        }
        let concurrency = usize::try_from(concurrency).unwrap_or(usize::MAX);
        return Ok(insert(CompletionPort::new(concurrency)?));
    }
    let sock = socket_handle(file_handle)?;
    let (handle, port, created) = match existing_port {
        Some(h) => (h, port(h)?, false),
        None => {
            let concurrency = usize::try_from(concurrency).unwrap_or(usize::MAX);
            let port = CompletionPort::new(concurrency)?;
            (0, port, true)
        }
    };
    port.associate(&sock, key).map_err(|e| match e.code() {
        codes::WSAEINVAL => Error::new(ERROR_INVALID_PARAMETER),
        _ => e,
    })?;
    Ok(if created { insert(port) } else { handle })
}

/// The socket a handle names, for the calls that take a `HANDLE`: [`ERROR_INVALID_HANDLE`] if
/// it names none.
pub(super) fn socket_handle(h: HANDLE) -> Result<std::sync::Arc<crate::Socket>> {
    handles::get(h as SOCKET).map_err(|_| Error::new(ERROR_INVALID_HANDLE))
}

/// `GetQueuedCompletionStatus(CompletionPort, lpNumberOfBytesTransferred, lpCompletionKey,
/// lpOverlapped, dwMilliseconds)` (S37).
///
/// Waits at most `timeout_ms` milliseconds ([`INFINITE`]: forever; 0: only looks) for a packet,
/// then:
/// - an operation that succeeded, or a posted packet: `true`, with `bytes`, `key` and
///   `overlapped` written;
/// - an operation that failed: `false`, with `bytes`, `key` and `overlapped` written (so
///   `overlapped` is `Some`) and the operation's error as the last error (`WSAECONNRESET`,
///   `WSAECONNABORTED` for a socket closed under it, `WSA_OPERATION_ABORTED` for a cancel, ...);
/// - no packet in time: `false`, `overlapped` `None`, last error [`WAIT_TIMEOUT`](super::WAIT_TIMEOUT);
/// - the port closed, before or during the wait: `false`, `overlapped` `None`, last error
///   `ERROR_ABANDONED_WAIT_0` (S41); a handle that names no port: [`ERROR_INVALID_HANDLE`].
///
/// Without a packet, `bytes` and `key` are left untouched. Packets come out in order; waiting
/// threads are woken most recent first, while fewer than the port's concurrency run (S39).
pub fn get_queued_completion_status(
    completion_port: HANDLE,
    bytes: &mut u32,
    key: &mut usize,
    overlapped: &mut Option<WsaOverlapped>,
    timeout_ms: u32,
) -> bool {
    *overlapped = None;
    let packet = port(completion_port).and_then(|p| p.get(timeout(timeout_ms)));
    match packet {
        Ok(Packet {
            bytes: n,
            key: k,
            overlapped: ov,
            error,
        }) => {
            *bytes = dword(n);
            *key = k;
            *overlapped = ov;
            match error {
                None => true,
                Some(e) => fail_bool(e),
            }
        }
        Err(e) => fail_bool(e),
    }
}

/// `GetQueuedCompletionStatusEx(CompletionPort, lpCompletionPortEntries, ulCount,
/// ulNumEntriesRemoved, dwMilliseconds, fAlertable)` (S40, S42).
///
/// Takes up to `entries.len()` packets at once, in order, into the first entries, and writes how
/// many to `removed`; returns `true` even when some of them report failed operations (see
/// [`OverlappedEntry::internal`]). `false` with `removed` 0 and the last error
/// [`WAIT_TIMEOUT`](super::WAIT_TIMEOUT) when none came in time, `ERROR_ABANDONED_WAIT_0` when
/// the port is closed, [`ERROR_INVALID_PARAMETER`] for no entries.
///
/// With `alertable`, when no packet is there and completion routines of the calling thread are
/// queued, they run and the call returns `false` with the last error
/// [`WAIT_IO_COMPLETION`]; a packet that is there wins over them.
pub fn get_queued_completion_status_ex(
    completion_port: HANDLE,
    entries: &mut [OverlappedEntry],
    removed: &mut u32,
    timeout_ms: u32,
    alertable: bool,
) -> bool {
    *removed = 0;
    if entries.is_empty() {
        return fail_bool(Error::new(ERROR_INVALID_PARAMETER));
    }
    let got =
        port(completion_port).and_then(|p| p.get_ex(entries.len(), timeout(timeout_ms), alertable));
    match got {
        Ok(PortWait::Packets(packets)) => {
            for (entry, packet) in entries.iter_mut().zip(packets) {
                *entry = OverlappedEntry {
                    completion_key: packet.key,
                    internal: packet.error.map_or(0, |e| e.code()),
                    number_of_bytes_transferred: dword(packet.bytes),
                    overlapped: packet.overlapped,
                };
                *removed += 1;
            }
            true
        }
        Ok(PortWait::IoCompletion) => fail_bool(Error::new(WAIT_IO_COMPLETION)),
        Err(e) => fail_bool(e),
    }
}

/// `PostQueuedCompletionStatus(CompletionPort, dwNumberOfBytesTransferred, dwCompletionKey,
/// lpOverlapped)` (S38): queues a packet that a get returns exactly as posted, a handle to the
/// same overlapped object included. Any thread may post (S43). `false` with
/// `ERROR_ABANDONED_WAIT_0` if the port is closed, [`ERROR_INVALID_HANDLE`] if the handle names
/// no port.
pub fn post_queued_completion_status(
    completion_port: HANDLE,
    bytes: u32,
    key: usize,
    overlapped: Option<&WsaOverlapped>,
) -> bool {
    let posted =
        port(completion_port).and_then(|p| p.post(bytes as usize, key, overlapped.cloned()));
    match posted {
        Ok(()) => true,
        Err(e) => fail_bool(e),
    }
}

/// `CloseHandle(hCompletionPort)`: closes the port and forgets the handle. Threads waiting on it
/// wake with `ERROR_ABANDONED_WAIT_0` (S41); packets of operations still pending are dropped
/// when they come. `false` with [`ERROR_INVALID_HANDLE`] for a handle that names no port (a
/// socket is closed with [`closesocket`](super::closesocket)).
pub fn close_handle(h_object: HANDLE) -> bool {
    let removed = lock(ports()).remove(&h_object);
    match removed {
        Some(port) => {
            port.close();
            true
        }
        None => fail_bool(Error::new(ERROR_INVALID_HANDLE)),
    }
}

/// `SetFileCompletionNotificationModes(FileHandle, Flags)` (S44): with
/// [`FILE_SKIP_COMPLETION_PORT_ON_SUCCESS`], an operation of the socket that succeeds at once
/// (its call returns success, not `WSA_IO_PENDING`) posts no packet; pending operations still
/// do, success or failure. As on Windows the mode cannot be turned off again.
/// [`FILE_SKIP_SET_EVENT_ON_HANDLE`] is accepted and changes nothing. `false` with
/// [`ERROR_INVALID_PARAMETER`] for other flags, [`ERROR_INVALID_HANDLE`] for a handle that
/// names no socket.
pub fn set_file_completion_notification_modes(file_handle: HANDLE, flags: u8) -> bool {
    if flags & !(FILE_SKIP_COMPLETION_PORT_ON_SUCCESS | FILE_SKIP_SET_EVENT_ON_HANDLE) != 0 {
        return fail_bool(Error::new(ERROR_INVALID_PARAMETER));
    }
    match socket_handle(file_handle) {
        Ok(sock) => {
            if flags & FILE_SKIP_COMPLETION_PORT_ON_SUCCESS != 0 {
                sock.set_skip_completion_port_on_success(true);
            }
            true
        }
        Err(e) => fail_bool(e),
    }
}
