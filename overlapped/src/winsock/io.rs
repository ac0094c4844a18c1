//! Starting overlapped operations and collecting their results: `WSASend`, `WSARecv`,
//! `WSASendTo`, `WSARecvFrom`, `WSAGetOverlappedResult`.
//!
//! All four operations go through [`run`], which reads the `lpOverlapped` and
//! `lpCompletionRoutine` arguments the way Win32 does. With an overlapped object the operation
//! starts and the call returns at once (S2), and its end is learnt through the object's event or
//! by asking the object; with a completion routine too, the routine is queued to the calling
//! thread instead, and gets a handle to the same object (S26). Without an object the operation
//! starts on a private one and the call waits for it (S5), then hands the buffers back in the
//! caller's `Vec`; a routine is then ignored, as in Win32.
//!
//! The routine's arguments are Win32's: the completion's error as a `DWORD` code (0 for success),
//! the byte count as a `DWORD`, the overlapped object, and the flags. The adapter that turns the
//! Rust API's routine arguments into those is the only thing this module adds to a routine.

use std::net::SocketAddr;

use super::handles::{self, fail, fail_bool};
use super::{WsaBuf, WsaOverlapped, SOCKET};
use crate::error::{codes, Error, Result};
use crate::{Completion, CompletionRoutine, NotStarted, Socket, Started};

/// A completion routine (`LPWSAOVERLAPPED_COMPLETION_ROUTINE`): called as
/// `routine(dwError, cbTransferred, lpOverlapped, dwFlags)` on the thread that started the
/// operation, in one of its alertable waits (S26, S27). `dwError` is 0 or the Winsock code of
/// the failure (`WSAECONNRESET`, `WSA_OPERATION_ABORTED`, ...); `lpOverlapped` is a handle to
/// the object the call was given (overlapped objects are handles: clones name the same object),
/// with the operation's buffers in it ([`take_buffers`](crate::Overlapped::take_buffers)),
/// ready for the next call. A routine
/// need not be `Send`, and may start new operations (S29).
pub type WsaCompletionRoutine = Box<dyn FnOnce(u32, u32, WsaOverlapped, u32)>;

/// A byte count as a `DWORD`; counts above `u32::MAX` are reported as `u32::MAX`.
fn dword(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Which operation to start.
#[derive(Clone, Copy)]
enum What {
    Send { flags: u32, to: Option<SocketAddr> },
    Recv { flags: u32, from: bool },
}

impl What {
    fn start(self, sock: &Socket, ov: &WsaOverlapped, bufs: Vec<WsaBuf>) -> Result<Started> {
        match self {
            What::Send { flags, to: None } => sock.send(ov, bufs, flags),
            What::Send {
                flags,
                to: Some(to),
            } => sock.send_to(ov, bufs, flags, to),
            What::Recv { flags, from: false } => sock.recv(ov, bufs, flags),
            What::Recv { flags, from: true } => sock.recv_from(ov, bufs, flags),
        }
    }

    fn start_with_routine(
        self,
        sock: &Socket,
        ov: WsaOverlapped,
        bufs: Vec<WsaBuf>,
        routine: impl CompletionRoutine<WsaBuf>,
    ) -> std::result::Result<Started, NotStarted<WsaBuf>> {
        match self {
            What::Send { flags, to: None } => sock.send_with_routine(ov, bufs, flags, routine),
            What::Send {
                flags,
                to: Some(to),
            } => sock.send_to_with_routine(ov, bufs, flags, to, routine),
            What::Recv { flags, from: false } => sock.recv_with_routine(ov, bufs, flags, routine),
            What::Recv { flags, from: true } => {
                sock.recv_from_with_routine(ov, bufs, flags, routine)
            }
        }
    }
}

/// Where a result that is known when the call returns is written: the byte count, the flags out
/// (receives only) and the sender's address (receive-from only).
struct Out<'a> {
    bytes: &'a mut u32,
    flags: Option<&'a mut u32>,
    from: Option<&'a mut SocketAddr>,
}

impl Out<'_> {
    /// Writes a completion's byte count, flags and sender. Byte counts above `u32::MAX` (a `DWORD`)
    /// are reported as `u32::MAX`.
    fn write(&mut self, c: &Completion) {
        *self.bytes = dword(c.bytes);
        if let Some(flags) = self.flags.as_deref_mut() {
            *flags = c.flags;
        }
        if let (Some(from), Some(addr)) = (self.from.as_deref_mut(), c.from) {
            *from = addr;
        }
    }

    /// The Win32 return value for a finished operation, writing what it reports. A truncated
    /// datagram fails with `WSAEMSGSIZE` and still reports the bytes that fit and `MSG_PARTIAL`
    /// (S12); other failures leave the outputs alone.
    fn finish(&mut self, c: &Completion) -> i32 {
        match c.error {
            None => {
                self.write(c);
                0
            }
            Some(e) => {
                if e.code() == codes::WSAEMSGSIZE {
                    self.write(c);
                }
                fail(e)
            }
        }
    }
}

fn run(
    s: SOCKET,
    buffers: &mut Vec<WsaBuf>,
    what: What,
    out: Out<'_>,
    overlapped: Option<&WsaOverlapped>,
    routine: Option<WsaCompletionRoutine>,
) -> i32 {
    let sock = match handles::get(s) {
        Ok(sock) => sock,
        Err(e) => return fail(e),
    };
    let Some(ov) = overlapped else {
        // Win32: "if lpOverlapped is NULL, lpCompletionRoutine is ignored".
        return run_blocking(sock, buffers, what, out);
    };
    if ov.is_pending() {
        // S13: refused; the buffers stay with the caller.
        return fail(Error::with_errno(codes::WSAEINVAL, libc::EBUSY));
    }
    match routine {
        None => run_with_event(sock, buffers, what, out, ov),
        Some(routine) => run_with_routine(sock, buffers, what, out, ov.clone(), routine),
    }
}

/// The result of a call that failed at once: a truncated datagram still reports the bytes that
/// fit (S12); anything else is just the error.
fn failed_at_once(out: &mut Out<'_>, ov: &WsaOverlapped, error: Error) -> i32 {
    match ov.completion(false) {
        Ok(c) if c.error == Some(error) => out.finish(&c),
        _ => fail(error),
    }
}

fn run_with_event(
    sock: std::sync::Arc<Socket>,
    buffers: &mut Vec<WsaBuf>,
    what: What,
    mut out: Out<'_>,
    ov: &WsaOverlapped,
) -> i32 {
    let started = what.start(&sock, ov, std::mem::take(buffers));
    drop(sock);
    match started {
        // S2: the count (and flags) are written; the event is signalled all the same (S3).
        // On a socket associated with a port, the packet hands the object to a worker, which
        // may restart it before this reads it back: then only the count of the call is ours,
        // and the flags of a success at once are 0 (a truncated datagram is reported as an
        // error, below).
        Ok(Started::Done(bytes)) => match ov.completion(false) {
            Ok(c) if c.error.is_none() && c.bytes == bytes => out.finish(&c),
            _ => out.finish(&Completion::ok(bytes, 0, None)),
        },
        // S2: pending leaves the count and flags untouched.
        Ok(Started::Pending) => fail(Error::new(codes::WSA_IO_PENDING)),
        Err(e) => failed_at_once(&mut out, ov, e),
    }
}

fn run_with_routine(
    sock: std::sync::Arc<Socket>,
    buffers: &mut Vec<WsaBuf>,
    what: What,
    mut out: Out<'_>,
    ov: WsaOverlapped,
    routine: WsaCompletionRoutine,
) -> i32 {
    let adapter = move |error: Option<Error>, bytes: usize, ov: WsaOverlapped, flags: u32| {
        routine(error.map_or(0, |e| e.code()), dword(bytes), ov, flags)
    };
    let started = what.start_with_routine(&sock, ov, std::mem::take(buffers), adapter);
    drop(sock);
    match started {
        // S30: the routine is queued all the same. Its flags come to the routine.
        Ok(Started::Done(bytes)) => {
            *out.bytes = dword(bytes);
            0
        }
        Ok(Started::Pending) => fail(Error::new(codes::WSA_IO_PENDING)),
        // S4: no routine will run; the buffers come back to the caller.
        Err(NotStarted { error, overlapped }) => {
            if let Ok(bufs) = overlapped.take_buffers() {
                *buffers = bufs;
            }
            failed_at_once(&mut out, &overlapped, error)
        }
    }
}

/// S5: no overlapped object, a blocking call. The handle's socket is let go of before waiting,
/// so that `closesocket` on another thread ends the wait (S34).
fn run_blocking(
    sock: std::sync::Arc<Socket>,
    buffers: &mut Vec<WsaBuf>,
    what: What,
    mut out: Out<'_>,
) -> i32 {
    let ov = WsaOverlapped::new();
    let started = what.start(&sock, &ov, std::mem::take(buffers));
    drop(sock);
    let result = match started {
        Ok(_) => ov.completion(true),
        Err(e) => Err(e),
    };
    if let Ok(bufs) = ov.take_buffers() {
        *buffers = bufs;
    }
    match result {
        Ok(c) => out.finish(&c),
        Err(e) => failed_at_once(&mut out, &ov, e),
    }
}

/// `WSASend(s, buffers, count, number_of_bytes_sent, flags, overlapped, completion_routine)`.
///
/// Sends the buffers in order (S6; none at all is `WSAEINVAL`). Returns 0 with the byte count
/// written when the send completes at once, or [`SOCKET_ERROR`](super::SOCKET_ERROR) with the
/// last error: [`WSA_IO_PENDING`](codes::WSA_IO_PENDING) when it will complete later (the count
/// is then untouched, S2; collect it with [`wsa_get_overlapped_result`]), or the failure. A
/// stream send completes only when every byte is taken (S8).
///
/// With `overlapped`, the buffers move into it (`buffers` is left empty) and come back with
/// `take_buffers` once the operation is over; without, the call blocks (S5), the buffers stay,
/// and a completion routine is ignored, as in Win32. An overlapped object whose operation is
/// still pending is refused with `WSAEINVAL` (S13), the buffers left with the caller.
///
/// With `completion_routine`, the end of the operation is told to the routine instead of the
/// object's event (which is left alone, S22): `routine(0, bytes, ov, flags)`, or the error code
/// first, runs on the calling thread in one of its alertable waits (S26-S28), also when the call
/// completed at once (S30). `ov` is a handle to `overlapped`, holding the buffers, so the
/// routine can start the next operation with it. If the call fails at once the routine never
/// runs (S4) and the buffers come back in `buffers`.
pub fn wsa_send(
    s: SOCKET,
    buffers: &mut Vec<WsaBuf>,
    number_of_bytes_sent: &mut u32,
    flags: u32,
    overlapped: Option<&WsaOverlapped>,
    completion_routine: Option<WsaCompletionRoutine>,
) -> i32 {
    let out = Out {
        bytes: number_of_bytes_sent,
        flags: None,
        from: None,
    };
    let what = What::Send { flags, to: None };
    run(s, buffers, what, out, overlapped, completion_routine)
}

/// `WSASendTo(s, buffers, count, number_of_bytes_sent, flags, to, tolen, overlapped,
/// completion_routine)`: as [`wsa_send`], as one datagram to `to`.
pub fn wsa_send_to(
    s: SOCKET,
    buffers: &mut Vec<WsaBuf>,
    number_of_bytes_sent: &mut u32,
    flags: u32,
    to: &SocketAddr,
    overlapped: Option<&WsaOverlapped>,
    completion_routine: Option<WsaCompletionRoutine>,
) -> i32 {
    let out = Out {
        bytes: number_of_bytes_sent,
        flags: None,
        from: None,
    };
    let what = What::Send {
        flags,
        to: Some(*to),
    };
    run(s, buffers, what, out, overlapped, completion_routine)
}

/// `WSARecv(s, buffers, count, number_of_bytes_recvd, flags, overlapped, completion_routine)`.
///
/// Receives into the buffers in order (S6). `flags` goes in (`MSG_PEEK`, `MSG_OOB`,
/// `MSG_WAITALL`, ...) and, when the receive completes at once, comes out (`MSG_PARTIAL`,
/// `MSG_OOB`); a pending receive leaves it and the count untouched (S2), and the flags of its
/// completion are read with [`wsa_get_overlapped_result`] (S19), or come to the completion
/// routine. Return values, buffers, `overlapped` and `completion_routine` are as for
/// [`wsa_send`]; with a routine, a receive done at once writes the count and leaves `flags`
/// alone (the routine gets them). A stream receive completes when any data arrives (S8), with
/// 0 bytes when the peer has closed (S10).
pub fn wsa_recv(
    s: SOCKET,
    buffers: &mut Vec<WsaBuf>,
    number_of_bytes_recvd: &mut u32,
    flags: &mut u32,
    overlapped: Option<&WsaOverlapped>,
    completion_routine: Option<WsaCompletionRoutine>,
) -> i32 {
    let what = What::Recv {
        flags: *flags,
        from: false,
    };
    let out = Out {
        bytes: number_of_bytes_recvd,
        flags: Some(flags),
        from: None,
    };
    run(s, buffers, what, out, overlapped, completion_routine)
}

/// `WSARecvFrom(s, buffers, count, number_of_bytes_recvd, flags, from, fromlen, overlapped,
/// completion_routine)`: as [`wsa_recv`], for one datagram, writing its sender to `from` when
/// the call returns with it (without a routine). A pending receive's sender, and that of any
/// receive with a routine, is in the object's completion
/// ([`Completion::from`](crate::Completion::from)). A datagram larger than the buffers fails
/// with `WSAEMSGSIZE`, the bytes that fit and `MSG_PARTIAL` (S12).
pub fn wsa_recv_from(
    s: SOCKET,
    buffers: &mut Vec<WsaBuf>,
    number_of_bytes_recvd: &mut u32,
    flags: &mut u32,
    from: Option<&mut SocketAddr>,
    overlapped: Option<&WsaOverlapped>,
    completion_routine: Option<WsaCompletionRoutine>,
) -> i32 {
    let what = What::Recv {
        flags: *flags,
        from: true,
    };
    let out = Out {
        bytes: number_of_bytes_recvd,
        flags: Some(flags),
        from,
    };
    run(s, buffers, what, out, overlapped, completion_routine)
}

/// `WSAGetOverlappedResult(s, overlapped, transferred, wait, flags)` (S16-S19).
///
/// For a finished operation writes its byte count to `transferred` and its flags to `flags`
/// (the completion's, not those it started with: S19) and returns `true`, or `false` with the
/// operation's error as the last error (`WSAECONNRESET`, `WSA_OPERATION_ABORTED`, `WSAEMSGSIZE`
/// ...; the count and flags are written all the same). For a pending one, `wait` true blocks
/// until it completes (S17); `wait` false returns `false` with `WSA_IO_INCOMPLETE` and leaves
/// both untouched (S16). `WSAENOTSOCK` if `s` names no socket (after `closesocket`, too);
/// `WSAEINVAL` if the object never started an operation.
pub fn wsa_get_overlapped_result(
    s: SOCKET,
    overlapped: &WsaOverlapped,
    transferred: &mut u32,
    wait: bool,
    flags: &mut u32,
) -> bool {
    if let Err(e) = handles::get(s) {
        return fail_bool(e);
    }
    match overlapped.completion(wait) {
        Ok(c) => {
            let mut out = Out {
                bytes: transferred,
                flags: Some(flags),
                from: None,
            };
            out.write(&c);
            match c.error {
                None => true,
                Some(e) => fail_bool(e),
            }
        }
        Err(e) => fail_bool(e),
    }
}
