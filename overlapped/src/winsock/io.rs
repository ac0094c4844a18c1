//! Starting overlapped operations and collecting their results: `WSASend`, `WSARecv`,
//! `WSASendTo`, `WSARecvFrom`, `WSAGetOverlappedResult`.
//!
//! All four operations go through [`run`]: with an overlapped object the operation starts and
//! the call returns at once (S2); without one it starts on a private overlapped object and the
//! call waits for it (S5), then hands the buffers back in the caller's `Vec`.

use std::net::SocketAddr;

use super::handles::{self, fail, fail_bool};
use super::{WsaBuf, WsaOverlapped, SOCKET};
use crate::error::{codes, Error, Result};
use crate::{Completion, Socket, Started};

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
        *self.bytes = u32::try_from(c.bytes).unwrap_or(u32::MAX);
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
    mut out: Out<'_>,
    overlapped: Option<&WsaOverlapped>,
) -> i32 {
    let sock = match handles::get(s) {
        Ok(sock) => sock,
        Err(e) => return fail(e),
    };
    if overlapped.is_some_and(|ov| ov.is_pending()) {
        // S13: refused; the buffers stay with the caller.
        return fail(Error::with_errno(codes::WSAEINVAL, libc::EBUSY));
    }
    let bufs = std::mem::take(buffers);
    match overlapped {
        Some(ov) => {
            let started = what.start(&sock, ov, bufs);
            drop(sock);
            match started {
                // S2: the count (and flags) are written; the event is signalled all the same (S3).
                Ok(Started::Done(_)) => match ov.completion(false) {
                    Ok(c) => out.finish(&c),
                    Err(e) => fail(e),
                },
                // S2: pending leaves the count and flags untouched.
                Ok(Started::Pending) => fail(Error::new(codes::WSA_IO_PENDING)),
                Err(e) => match ov.completion(false) {
                    Ok(c) if c.error == Some(e) => out.finish(&c),
                    _ => fail(e),
                },
            }
        }
        None => {
            // S5: no overlapped object, a blocking call. The handle's socket is let go of before
            // waiting, so that `closesocket` on another thread ends the wait (S34).
            let ov = WsaOverlapped::new();
            let started = what.start(&sock, &ov, bufs);
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
                Err(e) => match ov.completion(false) {
                    Ok(c) if c.error == Some(e) => out.finish(&c),
                    _ => fail(e),
                },
            }
        }
    }
}

/// `WSASend(s, buffers, count, number_of_bytes_sent, flags, overlapped, NULL)`.
///
/// Sends the buffers in order (S6; none at all is `WSAEINVAL`). Returns 0 with the byte count
/// written when the send completes at once, or [`SOCKET_ERROR`](super::SOCKET_ERROR) with the
/// last error: [`WSA_IO_PENDING`](codes::WSA_IO_PENDING) when it will complete later (the count
/// is then untouched, S2; collect it with [`wsa_get_overlapped_result`]), or the failure. A
/// stream send completes only when every byte is taken (S8).
///
/// With `overlapped`, the buffers move into it (`buffers` is left empty) and come back with
/// `take_buffers` once the operation is over; without, the call blocks (S5) and the buffers stay.
/// An overlapped object whose operation is still pending is refused with `WSAEINVAL` (S13), the
/// buffers left with the caller.
pub fn wsa_send(
    s: SOCKET,
    buffers: &mut Vec<WsaBuf>,
    number_of_bytes_sent: &mut u32,
    flags: u32,
    overlapped: Option<&WsaOverlapped>,
) -> i32 {
    let out = Out {
        bytes: number_of_bytes_sent,
        flags: None,
        from: None,
    };
    run(s, buffers, What::Send { flags, to: None }, out, overlapped)
}

/// `WSASendTo(s, buffers, count, number_of_bytes_sent, flags, to, tolen, overlapped, NULL)`: as
/// [`wsa_send`], as one datagram to `to`.
pub fn wsa_send_to(
    s: SOCKET,
    buffers: &mut Vec<WsaBuf>,
    number_of_bytes_sent: &mut u32,
    flags: u32,
    to: &SocketAddr,
    overlapped: Option<&WsaOverlapped>,
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
    run(s, buffers, what, out, overlapped)
}

/// `WSARecv(s, buffers, count, number_of_bytes_recvd, flags, overlapped, NULL)`.
///
/// Receives into the buffers in order (S6). `flags` goes in (`MSG_PEEK`, `MSG_OOB`,
/// `MSG_WAITALL`, ...) and, when the receive completes at once, comes out (`MSG_PARTIAL`,
/// `MSG_OOB`); a pending receive leaves it and the count untouched (S2), and the flags of its
/// completion are read with [`wsa_get_overlapped_result`] (S19). Return values, buffers and the
/// blocking call without `overlapped` are as for [`wsa_send`]. A stream receive completes when
/// any data arrives (S8), with 0 bytes when the peer has closed (S10).
pub fn wsa_recv(
    s: SOCKET,
    buffers: &mut Vec<WsaBuf>,
    number_of_bytes_recvd: &mut u32,
    flags: &mut u32,
    overlapped: Option<&WsaOverlapped>,
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
    run(s, buffers, what, out, overlapped)
}

/// `WSARecvFrom(s, buffers, count, number_of_bytes_recvd, flags, from, fromlen, overlapped,
/// NULL)`: as [`wsa_recv`], for one datagram, writing its sender to `from` when the call returns
/// with it. A pending receive's sender is in its completion
/// ([`Completion::from`](crate::Completion::from)). A datagram larger than the buffers fails
/// with `WSAEMSGSIZE`, the bytes that fit and `MSG_PARTIAL` (S12).
pub fn wsa_recv_from(
    s: SOCKET,
    buffers: &mut Vec<WsaBuf>,
    number_of_bytes_recvd: &mut u32,
    flags: &mut u32,
    from: Option<&mut SocketAddr>,
    overlapped: Option<&WsaOverlapped>,
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
    run(s, buffers, what, out, overlapped)
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
