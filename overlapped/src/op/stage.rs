//! The stages an operation goes through, and how each raw result moves it on.
//!
//! Most operations have one stage. The extension functions chain them: an accept with a receive
//! length goes on to receive the first data into the accepted socket (S45); a connect with a
//! first buffer goes on to send it (S46); a file transmission sends its head, the file in pieces
//! and its tail (S48). The byte count of the operation is the sum over its stages.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use super::io::{Accepted, OpIo, NOT_PICKED};
use super::Step;
use crate::addr::RawAddr;
use crate::buf::IoVecs;
use crate::error::{codes, Error};
use crate::flags;
use crate::overlapped::Completion;
use crate::pool::{Filled, IntoBuffers, PoolShared};
use crate::socket::SockInner;

/// What the operation does now.
pub(crate) enum Stage {
    /// Receive into the vectors; with `wait_all` (stream only) keep going until they are full.
    Recv { wait_all: bool },
    /// A receive into no bytes on a stream: wait until data (or an error, or the end) is there,
    /// then complete with 0 bytes and leave the data queued (S9).
    ZeroByteRecv,
    /// Receive into a free buffer of the pool, picked when the data is there; `into` adds it to
    /// the overlapped object's buffers.
    RecvPooled {
        pool: Arc<PoolShared>,
        into: IntoBuffers,
    },
    /// Send the vectors; on a stream, keep going until every byte is taken (S8).
    Send,
    /// Accept a connection and move it into `into` (`AcceptEx`'s accept socket); then receive
    /// the first data if the vectors have room (S45).
    Accept { into: Arc<SockInner> },
    /// Connect to `to`; then send the vectors if they hold bytes (S46).
    Connect { to: Box<RawAddr>, started: bool },
    /// Shut down sending (`DisconnectEx`, S47).
    Disconnect,
    /// Send head, file and tail (`TransmitFile`, S48).
    Transmit(Box<Transmit>),
}

/// A file transmission's progress.
pub(crate) struct Transmit {
    file: File,
    offset: u64,
    /// Bytes of the file still to send; `None` sends to the end of the file.
    left: Option<u64>,
    chunk: Vec<u8>,
    /// The head and tail buffers (vectors into the overlapped object's buffers).
    head: Option<libc::iovec>,
    tail: Option<libc::iovec>,
    part: Part,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Head,
    File,
    Tail,
    Over,
}

/// The file is read and sent in pieces of this size.
const CHUNK: usize = 64 * 1024;

impl Transmit {
    pub(crate) fn new(
        file: File,
        offset: u64,
        len: Option<u64>,
        head: Option<libc::iovec>,
        tail: Option<libc::iovec>,
    ) -> Transmit {
        Transmit {
            file,
            offset,
            left: len,
            chunk: vec![0; CHUNK],
            head,
            tail,
            part: Part::Head,
        }
    }

    /// The next piece to send, or `None` when all is sent; `Err(errno)` if reading failed.
    fn next_piece(&mut self) -> Result<Option<libc::iovec>, i32> {
        loop {
            match self.part {
                Part::Head => {
                    self.part = Part::File;
                    if let Some(head) = self.head.take().filter(|h| h.iov_len > 0) {
                        return Ok(Some(head));
                    }
                }
                Part::File => {
                    let want = self.left.map_or(CHUNK, |l| l.min(CHUNK as u64) as usize);
                    if want == 0 {
                        self.part = Part::Tail;
                        continue;
                    }
                    // SAFETY: reads at most `want` bytes into `chunk`, which holds CHUNK.
                    let n = unsafe {
                        libc::pread(
                            self.file.as_raw_fd(),
                            self.chunk.as_mut_ptr() as *mut libc::c_void,
                            want,
                            self.offset as libc::off_t,
                        )
                    };
                    if n < 0 {
                        return Err(std::io::Error::last_os_error()
                            .raw_os_error()
                            .unwrap_or(libc::EIO));
                    }
                    if n == 0 {
                        self.part = Part::Tail; // the end of the file
                        continue;
                    }
                    self.offset += n as u64;
                    self.left = self.left.map(|l| l - n as u64);
                    return Ok(Some(libc::iovec {
                        iov_base: self.chunk.as_mut_ptr() as *mut libc::c_void,
                        iov_len: n as usize,
                    }));
                }
                Part::Tail => {
                    self.part = Part::Over;
                    if let Some(tail) = self.tail.take().filter(|t| t.iov_len > 0) {
                        return Ok(Some(tail));
                    }
                }
                Part::Over => return Ok(None),
            }
        }
    }
}

impl OpIo {
    /// Sets up the first stage's vectors (a transmission's first piece).
    pub(super) fn start_stage(&mut self) {
        if let Stage::Transmit(t) = &mut self.stage {
            // A read error here shows again, and is reported, when the next piece is read.
            let first = t.next_piece().ok().flatten();
            self.iov = IoVecs::new();
            self.total = 0;
            if let Some(piece) = first {
                self.set_piece(piece);
            }
        }
    }

    /// Takes in one raw result: a byte count, descriptor or event mask, or `-errno`; `buffer`
    /// is the pool buffer the kernel picked for a pooled receive.
    pub(super) fn absorb(
        &mut self,
        sock: &Arc<SockInner>,
        res: i32,
        buffer: Option<u16>,
        abort_code: u32,
    ) -> Step {
        if let Stage::RecvPooled { .. } = self.stage {
            self.keep_filled(res, buffer);
        }
        if res == -libc::EAGAIN {
            return Step::WouldBlock;
        }
        if res == -libc::EINPROGRESS {
            if let Stage::Connect { started, .. } = &mut self.stage {
                *started = true;
                return Step::WouldBlock;
            }
        }
        if res < 0 {
            return Step::Finished(self.failure(sock, -res, abort_code));
        }
        let n = res as usize;
        let stream = self.data_sock(sock).is_stream();
        match self.stage {
            Stage::ZeroByteRecv => {
                if res as i16 & (libc::POLLERR | libc::POLLNVAL) != 0 {
                    let errno = match self.data_sock(sock).take_error() {
                        Some(errno) => errno,
                        None if res as i16 & libc::POLLNVAL != 0 => libc::EBADF,
                        None => libc::ECONNRESET,
                    };
                    return Step::Finished(self.failure(sock, errno, abort_code));
                }
                self.data_sock(sock).hint_readable();
                Step::Finished(self.success(0, None))
            }
            Stage::RecvPooled { .. } => {
                self.done = n;
                Step::Finished(self.success(0, None))
            }
            Stage::Recv { wait_all } => {
                self.done += n;
                if wait_all && stream && n > 0 && self.done < self.total {
                    self.advance(n);
                    return Step::More;
                }
                let (msg_flags, namelen) = self.received();
                let out_flags = flags::recv_from_linux(msg_flags);
                let from = match &mut self.addr {
                    Some(a) => {
                        a.len = namelen;
                        a.to_socket_addr()
                    }
                    None => self.accepted_from(),
                };
                let mut completion = self.success(out_flags, from);
                if out_flags & flags::MSG_PARTIAL != 0 && !stream {
                    completion.error = Some(Error::new(codes::WSAEMSGSIZE)); // S12
                }
                Step::Finished(completion)
            }
            Stage::Send | Stage::Transmit(_) => {
                self.done += n;
                if stream && self.done < self.total {
                    self.advance(n);
                    return Step::More;
                }
                let next = match &mut self.stage {
                    Stage::Transmit(t) => t.next_piece(),
                    _ => Ok(None),
                };
                match next {
                    Ok(Some(piece)) => {
                        self.set_piece(piece);
                        Step::More
                    }
                    Ok(None) => Step::Finished(self.success(0, self.accepted_from())),
                    Err(errno) => Step::Finished(self.failure(sock, errno, abort_code)),
                }
            }
            Stage::Accept { ref into } => {
                let into = into.clone();
                // Another open file takes the number: what rings knew of the old one is void.
                crate::driver::forget_descriptor(into.fd());
                // SAFETY: `res` is the descriptor the accept just created, owned by nobody else;
                // `into`'s descriptor stays open while the operation holds it.
                let moved = unsafe { libc::dup3(res, into.fd(), libc::O_CLOEXEC) };
                // SAFETY: as above; the connection now lives on in `into`'s descriptor.
                unsafe { libc::close(res) };
                if moved < 0 {
                    let errno = std::io::Error::last_os_error().raw_os_error();
                    return Step::Finished(self.failure(sock, errno.unwrap_or(libc::EIO), 0));
                }
                let from = self.addr.take().and_then(|a| a.to_socket_addr());
                self.accepted = Some(Box::new(Accepted { sock: into, from }));
                if self.total > 0 {
                    self.stage = Stage::Recv { wait_all: false };
                    return Step::More;
                }
                Step::Finished(self.success(0, from))
            }
            Stage::Connect { started, .. } => {
                if started {
                    // The connect ended: its outcome is the socket's pending error.
                    if let Some(errno) = sock.take_error() {
                        return Step::Finished(self.failure(sock, errno, abort_code));
                    }
                }
                if self.total > 0 {
                    self.stage = Stage::Send;
                    self.addr = None;
                    return Step::More;
                }
                Step::Finished(self.success(0, None))
            }
            Stage::Disconnect => {
                sock.mark_shut_down_for_send();
                Step::Finished(self.success(0, None))
            }
        }
    }

    /// For a pooled receive's result: keeps the id of the buffer that the kernel (`buffer`) or
    /// the attempt (`picked`) filled, for the completion to hand over; a buffer with no data (the
    /// peer's end) or with an error goes back to the pool.
    fn keep_filled(&mut self, res: i32, buffer: Option<u16>) {
        if let Some(id) = buffer {
            self.picked = u32::from(id);
        }
        if res <= 0 {
            self.give_back_picked();
        }
    }

    /// The buffer a finished pooled receive filled, to be added to the object's buffers.
    pub(super) fn take_filled(&mut self) -> Option<Filled> {
        let picked = std::mem::replace(&mut self.picked, NOT_PICKED);
        match (&self.stage, u16::try_from(picked)) {
            (Stage::RecvPooled { pool, into }, Ok(id)) => {
                let buf = pool.filled(id, self.done)?;
                Some(Filled { buf, into: *into })
            }
            _ => None,
        }
    }

    fn success(&self, flags: u32, from: Option<std::net::SocketAddr>) -> Completion {
        Completion::ok(self.moved_before + self.done, flags, from)
    }

    /// The completion of a failed operation, with the bytes it moved before failing.
    fn failure(&self, sock: &Arc<SockInner>, errno: i32, abort_code: u32) -> Completion {
        let data_sock = self.data_sock(sock);
        let error = match errno {
            libc::ECANCELED => Error::with_errno(abort_code, errno),
            libc::ECONNRESET => {
                data_sock.mark_reset();
                Error::from_errno(errno)
            }
            libc::EPIPE if !data_sock.is_shut_down_for_send() => {
                Error::with_errno(codes::WSAECONNRESET, errno)
            }
            _ => Error::from_errno(errno),
        };
        Completion::failed(error, self.moved_before + self.done)
    }
}
