//! The extension functions and cancellation with Win32's names and return conventions:
//! `AcceptEx`, `GetAcceptExSockaddrs`, `ConnectEx`, `DisconnectEx`, `TransmitFile`,
//! `CancelIoEx` (S33, S45-S48).
//!
//! They return `BOOL`: `true` when the operation completed at once (its notification still
//! fires: the event is signalled, or the packet is queued on the socket's port, S3), `false`
//! with the last error [`ERROR_IO_PENDING`](super::ERROR_IO_PENDING) when it will complete later,
//! `false` with another last error when it failed at once (no notification, S4). Buffers given
//! with an overlapped object move into it and come back with
//! [`take_buffers`](crate::Overlapped::take_buffers), as for [`wsa_recv`](super::wsa_recv).

use std::fs::File;
use std::net::SocketAddr;

use super::handles::{self, fail_bool};
use super::port::socket_handle;
use super::{WsaBuf, WsaOverlapped, SOCKET};
use crate::error::{codes, Error, Result};
use crate::Started;

/// The head and tail buffers of [`transmit_file`] (`TRANSMIT_FILE_BUFFERS`): sent before and
/// after the file. An empty buffer is none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransmitFileBuffers {
    /// Sent before the file (`Head`, `HeadLength`).
    pub head: WsaBuf,
    /// Sent after the file (`Tail`, `TailLength`).
    pub tail: WsaBuf,
}

/// The `BOOL` for a started operation: done at once writes its byte count (if asked) and is
/// `true`; pending is `false` with `WSA_IO_PENDING`; a failure at once is `false` with it.
fn finish(started: Result<Started>, bytes: Option<&mut u32>) -> bool {
    match started {
        // Done is a success with its count. The object is not read again: with a port, its packet
        // may already be in another thread's hands, which may have started the next operation.
        Ok(Started::Done(n)) => {
            if let Some(bytes) = bytes {
                *bytes = u32::try_from(n).unwrap_or(u32::MAX);
            }
            true
        }
        Ok(Started::Pending) => fail_bool(Error::new(codes::WSA_IO_PENDING)),
        Err(e) => fail_bool(e),
    }
}

/// Refuses an overlapped object whose operation is still pending before any buffer moves
/// (S13): the buffers stay with the caller.
fn idle(ov: &WsaOverlapped) -> Result<()> {
    match ov.is_pending() {
        true => Err(Error::with_errno(codes::WSAEINVAL, libc::EBUSY)),
        false => Ok(()),
    }
}

/// `AcceptEx(sListenSocket, sAcceptSocket, lpOutputBuffer, dwReceiveDataLength, ...,
/// lpdwBytesReceived, lpOverlapped)` (S45).
///
/// Accepts a connection on the listening socket into `s_accept_socket`, a fresh stream socket
/// from [`wsa_socket`](super::wsa_socket). With `receive_data_length` > 0 the operation completes
/// only once the first data has arrived, with its byte count in the first
/// `receive_data_length` bytes of `output_buffer`; with 0 it completes with 0 bytes as soon as
/// the connection is there. The buffer moves into `overlapped`, shortened to
/// `receive_data_length` (Windows keeps the addresses after the data; here they come from
/// [`get_accept_ex_sockaddrs`]). A receive length beyond the buffer is `WSAEFAULT`; an accept
/// socket that is in use, or the listener itself, `WSAEINVAL`. Closing the listener aborts a
/// pending accept with `WSA_OPERATION_ABORTED` (S35). The packet goes to the listener's port.
pub fn accept_ex(
    s_listen_socket: SOCKET,
    s_accept_socket: SOCKET,
    output_buffer: &mut WsaBuf,
    receive_data_length: u32,
    bytes_received: &mut u32,
    overlapped: &WsaOverlapped,
) -> bool {
    let len = receive_data_length as usize;
    let checked = handles::get(s_listen_socket)
        .and_then(|listener| Ok((listener, handles::get(s_accept_socket)?)))
        .and_then(|socks| match len > output_buffer.len() {
            true => Err(Error::new(codes::WSAEFAULT)),
            false => idle(overlapped).map(|()| socks),
        });
    let (listener, accepted) = match checked {
        Ok(socks) => socks,
        Err(e) => return fail_bool(e),
    };
    let mut buf = std::mem::take(output_buffer);
    buf.truncate(len);
    let started = listener.accept_ex(&accepted, overlapped, vec![buf]);
    drop((listener, accepted));
    finish(started, Some(bytes_received))
}

/// `GetAcceptExSockaddrs`: the local and remote addresses of a connection accepted by
/// [`accept_ex`] with `overlapped`, written to `local` and `remote`. `false` with the
/// operation's error if the accept failed, `WSA_IO_INCOMPLETE` while it is pending,
/// `WSAENOTSOCK` if `s_accept_socket` names no socket (Win32's returns nothing; it reads the
/// addresses out of the output buffer, which cannot fail).
pub fn get_accept_ex_sockaddrs(
    s_accept_socket: SOCKET,
    overlapped: &WsaOverlapped,
    local: &mut SocketAddr,
    remote: &mut SocketAddr,
) -> bool {
    let addrs = handles::get(s_accept_socket).and_then(|sock| {
        let completion = overlapped.completion(false)?;
        completion.result()?;
        let peer = match completion.from {
            Some(from) => from,
            None => sock.peer_addr()?,
        };
        Ok((sock.local_addr()?, peer))
    });
    match addrs {
        Ok((l, r)) => {
            *local = l;
            *remote = r;
            true
        }
        Err(e) => fail_bool(e),
    }
}

/// `ConnectEx(s, name, namelen, lpSendBuffer, dwSendDataLength, lpdwBytesSent, lpOverlapped)`
/// (S46).
///
/// Connects the bound socket `s` to `name` (unbound: `WSAEINVAL`, as on Windows), then sends
/// `send_buffer` if one is given and it holds bytes; `bytes_sent` counts them. The buffer moves
/// into `overlapped`. A refused connection completes with `WSAECONNREFUSED`.
pub fn connect_ex(
    s: SOCKET,
    name: &SocketAddr,
    send_buffer: Option<&mut WsaBuf>,
    bytes_sent: &mut u32,
    overlapped: &WsaOverlapped,
) -> bool {
    let sock = match handles::get(s).and_then(|sock| idle(overlapped).map(|()| sock)) {
        Ok(sock) => sock,
        Err(e) => return fail_bool(e),
    };
    let bufs: Vec<WsaBuf> = send_buffer.map(std::mem::take).into_iter().collect();
    let started = sock.connect_ex(overlapped, *name, bufs);
    drop(sock);
    finish(started, Some(bytes_sent))
}

/// `DisconnectEx(hSocket, lpOverlapped, dwFlags, dwReserved)` (S47): shuts the connection down
/// for sending after the sends started before it; later sends fail with `WSAESHUTDOWN`, and the
/// peer reads the end of the stream. Without an overlapped object the call blocks until it is
/// done. `flags` and `reserved` must be 0 (`TF_REUSE_SOCKET` is not supported: a Linux socket
/// cannot be accepted into again): else `WSAEINVAL`.
pub fn disconnect_ex(
    h_socket: SOCKET,
    overlapped: Option<&WsaOverlapped>,
    flags: u32,
    reserved: u32,
) -> bool {
    if flags != 0 || reserved != 0 {
        return fail_bool(Error::new(codes::WSAEINVAL));
    }
    with_overlapped(h_socket, overlapped, |sock, ov| sock.disconnect_ex(ov)).0
}

/// `TransmitFile(hSocket, hFile, nNumberOfBytesToWrite, nNumberOfBytesPerSend, lpOverlapped,
/// lpTransmitBuffers, dwFlags)` (S48).
///
/// Sends `number_of_bytes_to_write` bytes of `h_file` (0: to the end of the file) from `offset`
/// (Windows reads it from the overlapped object's `Offset` fields), between the head and tail of
/// `transmit_buffers`. The operation's bytes are the file bytes sent plus the head and the tail.
/// `number_of_bytes_per_send` is a hint, ignored (the file is sent in pieces of the library's
/// size). With an overlapped object the head and tail move into it; without one the call blocks
/// until done and they stay in `transmit_buffers`. `flags` must be 0: else `WSAEINVAL`.
#[allow(clippy::too_many_arguments)]
pub fn transmit_file(
    h_socket: SOCKET,
    h_file: &File,
    number_of_bytes_to_write: u32,
    number_of_bytes_per_send: u32,
    offset: u64,
    overlapped: Option<&WsaOverlapped>,
    transmit_buffers: Option<&mut TransmitFileBuffers>,
    flags: u32,
) -> bool {
    let _ = number_of_bytes_per_send;
    if flags != 0 {
        return fail_bool(Error::new(codes::WSAEINVAL));
    }
    if let Some(Err(e)) = overlapped.map(idle) {
        return fail_bool(e);
    }
    let mut buffers = transmit_buffers;
    let TransmitFileBuffers { head, tail } = buffers
        .as_deref_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    let (has_head, has_tail) = (!head.is_empty(), !tail.is_empty());
    let len = u64::from(number_of_bytes_to_write);
    let (ok, back) = with_overlapped(h_socket, overlapped, |sock, ov| {
        let head = has_head.then_some(head);
        let tail = has_tail.then_some(tail);
        sock.transmit_file(ov, h_file, offset, len, head, tail)
    });
    // A blocking call gives the head and tail back, in that order.
    if let (Some(buffers), Some(mut back)) = (buffers, back) {
        let mut back = back.drain(..);
        if has_head {
            buffers.head = back.next().unwrap_or_default();
        }
        if has_tail {
            buffers.tail = back.next().unwrap_or_default();
        }
    }
    ok
}

/// Starts an operation on the socket `s` names, with `overlapped`, or, without one, on a private
/// object and waits for it to finish (a blocking call), then returns the `BOOL` as [`finish`]
/// does, with the last error set. A blocking call also returns the operation's buffers.
fn with_overlapped(
    s: SOCKET,
    overlapped: Option<&WsaOverlapped>,
    start: impl FnOnce(&crate::Socket, &WsaOverlapped) -> Result<Started>,
) -> (bool, Option<Vec<WsaBuf>>) {
    let sock = match handles::get(s) {
        Ok(sock) => sock,
        Err(e) => return (fail_bool(e), None),
    };
    match overlapped {
        Some(ov) => match idle(ov) {
            Ok(()) => {
                let started = start(&sock, ov);
                drop(sock);
                (finish(started, None), None)
            }
            Err(e) => (fail_bool(e), None),
        },
        None => {
            let ov = WsaOverlapped::new();
            let started = start(&sock, &ov);
            drop(sock);
            let waited = started.and_then(|_| ov.completion(true)?.result());
            let ok = finish(waited.map(Started::Done), None);
            (ok, ov.take_buffers().ok())
        }
    }
}

/// `CancelIoEx(hFile, lpOverlapped)` (S33): cancels the pending operation of `overlapped`, or
/// with `None` every pending operation of the socket. Each cancelled operation completes exactly
/// once, with `WSA_OPERATION_ABORTED` or its real result if it won the race, and notifies as
/// usual (a packet, for a socket associated with a port). `false` with `ERROR_NOT_FOUND` (1168)
/// when nothing was pending, [`ERROR_INVALID_HANDLE`](super::ERROR_INVALID_HANDLE) when `h_file`
/// names no socket.
pub fn cancel_io_ex(h_file: SOCKET, overlapped: Option<&WsaOverlapped>) -> bool {
    let cancelled = socket_handle(h_file).and_then(|sock| match overlapped {
        Some(ov) => ov.cancel(),
        None => sock.cancel_all(),
    });
    match cancelled {
        Ok(()) => true,
        Err(e) => fail_bool(e),
    }
}
