//! The extension functions (`AcceptEx`, `ConnectEx`, `DisconnectEx`, `TransmitFile`) and
//! cancelling all of a socket's operations (`CancelIoEx(socket, NULL)`), as overlapped
//! operations on [`Socket`] (S33, S45–S48).
//!
//! They start, notify and complete as the transfers do: done at once or pending, through the
//! overlapped object's event, or a packet when the socket is associated with a completion port.

use std::fs::File;
use std::net::SocketAddr;

use crate::addr::RawAddr;
use crate::buf::{iovecs_for_recv, iovecs_for_send, IoBuf, IoBufMut, IoVecs};
use crate::engine;
use crate::error::{codes, Error, Result};
use crate::op::{Dir, Stage, Transmit};
use crate::overlapped::{Overlapped, Started};
use crate::socket::{Kind, Socket};
use crate::transfer::Plan;

impl Socket {
    /// Accepts a connection into `accept_socket`, a fresh stream socket (`AcceptEx`, S45). With
    /// receive buffers of non-zero total length, the operation completes only once the first data
    /// has arrived, with its byte count; otherwise with 0 as soon as the connection is there. The
    /// completion's `from` is the peer; `accept_socket.local_addr()` is the local end. Closing the
    /// listener aborts a pending accept with `WSA_OPERATION_ABORTED` (S35).
    pub fn accept_ex<B: IoBufMut>(
        &self,
        accept_socket: &Socket,
        ov: &Overlapped<B>,
        mut bufs: Vec<B>,
    ) -> Result<Started> {
        let usable = accept_socket.kind() == Kind::Stream
            && !std::ptr::eq(accept_socket, self)
            && !engine::has_pending(&accept_socket.inner);
        let plan = Plan {
            iov: iovecs_for_recv(&mut bufs),
            dir: Dir::Read,
            stage: Stage::Accept {
                into: accept_socket.inner.clone(),
            },
            addr: None,
            linux_flags: checked(usable),
            needs_buffers: false,
        };
        self.start(ov.core(), Some(ov), bufs, plan, None)
    }

    /// Connects this bound socket to `to` (`ConnectEx`, S46), then sends `bufs` if they hold
    /// bytes (counted in the completion's bytes). An unbound socket is `WSAEINVAL`; a refused
    /// connection completes with `WSAECONNREFUSED`.
    pub fn connect_ex<B: IoBuf>(
        &self,
        ov: &Overlapped<B>,
        to: SocketAddr,
        bufs: Vec<B>,
    ) -> Result<Started> {
        let bound = self.local_addr().is_ok_and(|a| a.port() != 0);
        let plan = Plan {
            iov: iovecs_for_send(&bufs),
            dir: Dir::Write,
            stage: Stage::Connect {
                to: Box::new(RawAddr::from_socket_addr(to)),
                started: false,
            },
            addr: None,
            linux_flags: checked(bound && self.kind() == Kind::Stream),
            needs_buffers: false,
        };
        self.start(ov.core(), Some(ov), bufs, plan, None)
    }

    /// Shuts the connection down for sending, after the sends started before it (`DisconnectEx`,
    /// S47): later sends fail with `WSAESHUTDOWN`, and the peer reads the end of the stream.
    pub fn disconnect_ex<B: IoBuf>(&self, ov: &Overlapped<B>) -> Result<Started> {
        let plan = Plan {
            iov: IoVecs::new(),
            dir: Dir::Write,
            stage: Stage::Disconnect,
            addr: None,
            linux_flags: checked(self.kind() == Kind::Stream),
            needs_buffers: false,
        };
        self.start(ov.core(), Some(ov), Vec::new(), plan, None)
    }

    /// Sends `len` bytes of `file` from `offset` (`len` 0: to the end of the file), between an
    /// optional head and tail buffer (`TransmitFile`, S48). The bytes of the completion are the
    /// file's bytes sent plus the head and the tail. The file is read in pieces while the
    /// operation runs, through a descriptor of its own, so `file` may be closed meanwhile.
    pub fn transmit_file<B: IoBuf>(
        &self,
        ov: &Overlapped<B>,
        file: &File,
        offset: u64,
        len: u64,
        head: Option<B>,
        tail: Option<B>,
    ) -> Result<Started> {
        let own_file = file.try_clone().map_err(Error::from)?;
        let has_head = head.is_some();
        let bufs: Vec<B> = head.into_iter().chain(tail).collect();
        let iov = iovecs_for_send(&bufs);
        let (head_iov, tail_iov) = match (has_head, iov.as_slice()) {
            (true, [h, t]) => (Some(*h), Some(*t)),
            (true, [h]) => (Some(*h), None),
            (false, [t]) => (None, Some(*t)),
            _ => (None, None),
        };
        let transmit = Transmit::new(
            own_file,
            offset,
            (len > 0).then_some(len),
            head_iov,
            tail_iov,
        );
        let plan = Plan {
            iov: IoVecs::new(),
            dir: Dir::Write,
            stage: Stage::Transmit(Box::new(transmit)),
            addr: None,
            linux_flags: checked(self.kind() == Kind::Stream),
            needs_buffers: false,
        };
        self.start(ov.core(), Some(ov), bufs, plan, None)
    }

    /// Cancels every pending operation of this socket (`CancelIoEx(socket, NULL)`, S33): each
    /// completes exactly once, with `WSA_OPERATION_ABORTED` or its real result if it won the
    /// race. `ERROR_NOT_FOUND` if none was pending.
    pub fn cancel_all(&self) -> Result<()> {
        engine::cancel_all(&self.inner)
    }
}

/// No flags, or `WSAEINVAL` when the call's preconditions do not hold.
fn checked(ok: bool) -> Result<i32> {
    match ok {
        true => Ok(0),
        false => Err(Error::new(codes::WSAEINVAL)),
    }
}
