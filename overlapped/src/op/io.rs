//! The memory an operation shares with the kernel — I/O vectors, message header, address — and
//! the system calls and kernel requests made from it.
//!
//! The header's pointers are refreshed from the record's own fields before every system call or
//! submission, so the record may be built before it is placed at its final address, and vectors
//! may be advanced or replaced between attempts.

use std::net::SocketAddr;
use std::sync::Arc;

use super::stage::Stage;
use crate::addr::RawAddr;
use crate::buf::IoVecs;
use crate::driver::{nonblocking, Request};
use crate::socket::SockInner;

pub(super) struct OpIo {
    pub(super) stage: Stage,
    pub(super) iov: IoVecs,
    /// The first I/O vector not yet fully transferred.
    pub(super) first: usize,
    msg: libc::msghdr,
    /// The peer's address: filled by a receive-from or an accept, read by a send-to. Boxed, as
    /// most operations have none and a pending record should stay small (an idle connection's
    /// receive is one).
    pub(super) addr: Option<Box<RawAddr>>,
    /// Bytes transferred in the current vectors.
    pub(super) done: usize,
    /// Bytes the current vectors hold.
    pub(super) total: usize,
    /// Bytes transferred by earlier stages or pieces.
    pub(super) moved_before: usize,
    pub(super) linux_flags: i32,
    /// After an accept: where the connection now lives. Boxed, like the address.
    pub(super) accepted: Option<Box<Accepted>>,
    /// A pooled receive's buffer ([`NOT_PICKED`]: none): taken from the pool by an attempt, or
    /// the one the kernel or the attempt filled, until the completion hands it over.
    pub(super) picked: u32,
}

/// No pool buffer picked.
pub(super) const NOT_PICKED: u32 = u32::MAX;

/// What an accept leaves for the stages after it.
pub(super) struct Accepted {
    /// The socket the connection now lives in, where data moves.
    pub(super) sock: Arc<SockInner>,
    /// The peer the accept reported.
    pub(super) from: Option<SocketAddr>,
}

// SAFETY: the raw pointers in `OpIo` point into the operation's own fields and into the buffers
// its overlapped object owns until the operation has finished; they are only used under the
// record's mutex, or by the kernel while the engine holds the record alive.
unsafe impl Send for OpIo {}

impl OpIo {
    pub(super) fn new(
        stage: Stage,
        iov: IoVecs,
        addr: Option<Box<RawAddr>>,
        linux_flags: i32,
    ) -> OpIo {
        let mut io = OpIo {
            stage: Stage::Disconnect, // replaced by `renew` below
            iov: IoVecs::new(),
            first: 0,
            // SAFETY: all zeros is a valid, empty msghdr.
            msg: unsafe { std::mem::zeroed() },
            addr: None,
            done: 0,
            total: 0,
            moved_before: 0,
            linux_flags: 0,
            accepted: None,
            picked: NOT_PICKED,
        };
        io.renew(stage, iov, addr, linux_flags);
        io
    }

    /// Makes the record a new operation's, field by field (building a new one and moving it in
    /// costs copies of the whole). The message header is pointed anew before every use.
    pub(super) fn renew(
        &mut self,
        stage: Stage,
        iov: IoVecs,
        addr: Option<Box<RawAddr>>,
        linux_flags: i32,
    ) {
        self.total = iov.iter().map(|v| v.iov_len).sum();
        self.stage = stage;
        self.iov = iov;
        self.first = 0;
        self.addr = addr;
        self.done = 0;
        self.moved_before = 0;
        self.linux_flags = linux_flags;
        self.accepted = None;
        self.start_stage();
    }

    /// Lets go of what the stages hold — an accept's socket, a transmission's file, the accepted
    /// connection — and of the vectors (pointers into buffers that have gone back to their
    /// owner). The record is renewed before it is used again.
    pub(super) fn release(&mut self) {
        self.give_back_picked();
        self.stage = Stage::Disconnect; // a stage that holds nothing
        self.accepted = None;
        self.iov = IoVecs::new();
        self.addr = None;
    }

    /// Gives a pooled receive's buffer that was never handed over back to its pool.
    pub(super) fn give_back_picked(&mut self) {
        let picked = std::mem::replace(&mut self.picked, NOT_PICKED);
        if let (Stage::RecvPooled { pool, .. }, Ok(id)) = (&self.stage, u16::try_from(picked)) {
            pool.give_back(id);
        }
    }

    /// The peer an accept reported, if the operation began with one.
    pub(super) fn accepted_from(&self) -> Option<SocketAddr> {
        self.accepted.as_ref().and_then(|a| a.from)
    }

    /// The socket data moves on now: the accepted connection after an accept, else the
    /// operation's own.
    pub(super) fn data_sock<'a>(&'a self, sock: &'a Arc<SockInner>) -> &'a Arc<SockInner> {
        self.accepted.as_ref().map_or(sock, |a| &a.sock)
    }

    /// Replaces the vectors with one piece (a file transmission's next part).
    pub(super) fn set_piece(&mut self, piece: libc::iovec) {
        self.moved_before += self.done;
        self.total = piece.iov_len;
        self.iov = IoVecs::one(piece);
        self.first = 0;
        self.done = 0;
    }

    /// Points the message header at the current I/O vectors and address.
    fn point(&mut self) {
        let rest = &mut self.iov[self.first..];
        self.msg.msg_iov = rest.as_mut_ptr();
        self.msg.msg_iovlen = rest.len();
        self.msg.msg_flags = 0;
        match &mut self.addr {
            Some(a) => {
                self.msg.msg_name = &mut a.storage as *mut _ as *mut libc::c_void;
                self.msg.msg_namelen = a.len;
            }
            None => {
                self.msg.msg_name = std::ptr::null_mut();
                self.msg.msg_namelen = 0;
            }
        }
    }

    /// The kernel's flags and address length after a receive.
    pub(super) fn received(&self) -> (i32, libc::socklen_t) {
        (self.msg.msg_flags, self.msg.msg_namelen)
    }

    /// Moves past `n` transferred bytes.
    pub(super) fn advance(&mut self, mut n: usize) {
        while n > 0 && self.first < self.iov.len() {
            let v = &mut self.iov[self.first];
            if n >= v.iov_len {
                n -= v.iov_len;
                self.first += 1;
            } else {
                // SAFETY: `n` is less than the vector's length, so the new base stays inside the
                // same buffer.
                v.iov_base = unsafe { (v.iov_base as *mut u8).add(n) } as *mut libc::c_void;
                v.iov_len -= n;
                n = 0;
            }
        }
        while self.first < self.iov.len() && self.iov[self.first].iov_len == 0 {
            self.first += 1;
        }
    }

    /// The request that continues the operation in its current stage.
    pub(super) fn request(&mut self, sock: &Arc<SockInner>) -> Request {
        self.point();
        let fd = self.data_sock(sock).fd();
        // One buffer on a stream, with no address: the plain calls, which spare the kernel the
        // message header (the flags a stream receive could report are not needed there).
        let single = match (self.iov.len() - self.first, &self.addr) {
            (1, None) if self.data_sock(sock).is_stream() => Some(self.iov[self.first]),
            _ => None,
        };
        match (&self.stage, single) {
            (Stage::Recv { .. }, Some(v)) => Request::Recv {
                fd,
                buf: v.iov_base as *mut u8,
                len: v.iov_len,
                flags: self.linux_flags as u32,
            },
            (Stage::Send | Stage::Transmit(_), Some(v)) => Request::Send {
                fd,
                buf: v.iov_base as *const u8,
                len: v.iov_len,
                flags: (self.linux_flags | libc::MSG_NOSIGNAL) as u32,
            },
            (Stage::Recv { .. }, None) => Request::RecvMsg {
                fd,
                msg: &mut self.msg,
                flags: self.linux_flags as u32,
            },
            (Stage::Send | Stage::Transmit(_), None) => Request::SendMsg {
                fd,
                msg: &self.msg,
                flags: (self.linux_flags | libc::MSG_NOSIGNAL) as u32,
            },
            (Stage::ZeroByteRecv, _) => Request::PollIn { fd },
            (Stage::RecvPooled { pool, .. }, _) => Request::RecvPooled {
                fd,
                pool: Arc::as_ptr(pool),
                picked: &mut self.picked,
                flags: self.linux_flags as u32,
            },
            (Stage::Accept { .. }, _) => {
                let addr = self.addr.get_or_insert_with(|| Box::new(RawAddr::empty()));
                addr.len = RawAddr::empty().len;
                Request::Accept {
                    fd,
                    addr: &mut addr.storage as *mut _ as *mut libc::sockaddr,
                    len: &mut addr.len,
                }
            }
            // A connect in progress, or a shutdown (which never has to wait): writability.
            (Stage::Connect { .. } | Stage::Disconnect, _) => Request::PollOut { fd },
        }
    }

    /// One attempt without blocking: a byte count, descriptor or event mask, or `-errno`.
    pub(super) fn attempt(&mut self, sock: &Arc<SockInner>) -> i32 {
        let fd = self.data_sock(sock).fd();
        let res = match &self.stage {
            Stage::Connect { to, started: false } => {
                // SAFETY: `to` holds a valid address of `to.len` bytes.
                unsafe { libc::connect(fd, &to.storage as *const _ as *const _, to.len) }
            }
            // SAFETY: plain system call on a descriptor the operation keeps open.
            Stage::Disconnect => unsafe { libc::shutdown(fd, libc::SHUT_WR) },
            _ => {
                let request = self.request(sock);
                // SAFETY: the request points into this record and the buffers its overlapped
                // object owns, all alive and not otherwise accessed during the call.
                return unsafe { nonblocking::perform(&request) };
            }
        };
        if res < 0 {
            -std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO)
        } else {
            res
        }
    }
}

impl Drop for OpIo {
    fn drop(&mut self) {
        self.give_back_picked();
    }
}
