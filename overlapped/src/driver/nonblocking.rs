//! Performing a request at once, without blocking: the engine's first attempt at every operation
//! (the "done at once" of S2), and the epoll backend's attempt when a socket becomes ready.
//!
//! The result has the shape of an io_uring completion: a byte count, a new descriptor or an event
//! mask, or `-errno` (`-EAGAIN` when the socket is not ready).

use std::io;

use super::Request;
use crate::pool::PoolShared;

/// Performs `request` without blocking.
///
/// # Safety
/// The request's pointers must be valid for the call: the message header and the buffers it
/// points to, and the address storage and its length.
pub(crate) unsafe fn perform(request: &Request) -> i32 {
    let res: isize = match *request {
        // SAFETY: the caller's contract.
        Request::RecvMsg { fd, msg, flags } => unsafe {
            libc::recvmsg(fd, msg, flags as i32 | libc::MSG_DONTWAIT)
        },
        // SAFETY: the caller's contract; the kernel only reads the buffers.
        Request::SendMsg { fd, msg, flags } => unsafe {
            libc::sendmsg(
                fd,
                msg,
                flags as i32 | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        },
        // SAFETY: the caller's contract: `buf` is writable for `len` bytes.
        Request::Recv {
            fd,
            buf,
            len,
            flags,
        } => unsafe { recv(fd, buf, len, flags as i32 | libc::MSG_DONTWAIT) },
        // SAFETY: the caller's contract: `buf` is readable for `len` bytes.
        Request::Send {
            fd,
            buf,
            len,
            flags,
        } => unsafe {
            send(
                fd,
                buf,
                len,
                flags as i32 | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        },
        // SAFETY: the caller's contract: `addr` has room for `*len` bytes.
        Request::Accept { fd, addr, len } => unsafe {
            libc::accept4(fd, addr, len, libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) as isize
        },
        // SAFETY: the caller's contract: the pool and `picked` are valid.
        Request::RecvPooled {
            fd,
            pool,
            picked,
            flags,
        } => return unsafe { recv_pooled(fd, &*pool, picked, flags) },
        Request::PollIn { fd } => return poll_now(fd, libc::POLLIN | libc::POLLRDHUP),
        Request::PollOut { fd } => return poll_now(fd, libc::POLLOUT),
    };
    if res < 0 {
        -last_errno()
    } else {
        res.min(i32::MAX as isize) as i32
    }
}

/// A receive into a free buffer of `pool`, whose id goes to `picked` if data came; the buffer
/// goes back to the pool otherwise. `-EAGAIN` without a call where the kernel hands out the
/// pool's buffers (only it may take them), `-ENOBUFS` when none is free.
///
/// # Safety
/// `picked` must be valid for writes.
unsafe fn recv_pooled(fd: libc::c_int, pool: &PoolShared, picked: *mut u32, flags: u32) -> i32 {
    let id = match pool.take() {
        Some(id) => id,
        None if pool.group().is_some() => return -libc::EAGAIN,
        None => return -libc::ENOBUFS,
    };
    // SAFETY: buffer `id` was free, so nothing else reaches its `size` bytes.
    let res = unsafe {
        recv(
            fd,
            pool.buffer_ptr(id),
            pool.size(),
            flags as i32 | libc::MSG_DONTWAIT,
        )
    };
    if res < 0 {
        let errno = last_errno();
        pool.give_back(id);
        return -errno;
    }
    // SAFETY: the caller's contract.
    unsafe { *picked = u32::from(id) };
    res.min(i32::MAX as isize) as i32
}

/// `recv(fd, buf, len, flags)` as the system call itself. The C library's `recv` and `send` are
/// thread cancellation points, which switch asynchronous cancellation on and off around every
/// call; the library cancels no threads, and each message is a receive and a send.
///
/// # Safety
/// `buf` must be writable for `len` bytes.
unsafe fn recv(fd: libc::c_int, buf: *mut u8, len: usize, flags: i32) -> isize {
    let (fd, flags) = (libc::c_long::from(fd), libc::c_long::from(flags));
    let (none, no_len) = (
        std::ptr::null_mut::<libc::sockaddr>(),
        std::ptr::null_mut::<u32>(),
    );
    // SAFETY: the caller's contract; no address is asked for. Every argument is a full word.
    (unsafe { libc::syscall(libc::SYS_recvfrom, fd, buf, len, flags, none, no_len) }) as isize
}

/// `send(fd, buf, len, flags)` as the system call itself (see [`recv`]).
///
/// # Safety
/// `buf` must be readable for `len` bytes.
unsafe fn send(fd: libc::c_int, buf: *const u8, len: usize, flags: i32) -> isize {
    let (fd, flags) = (libc::c_long::from(fd), libc::c_long::from(flags));
    let none = std::ptr::null::<libc::sockaddr>();
    // SAFETY: the caller's contract; no address is given. Every argument is a full word.
    let no_len: libc::c_long = 0;
    (unsafe { libc::syscall(libc::SYS_sendto, fd, buf, len, flags, none, no_len) }) as isize
}

/// The readiness of `fd` for `events` now: the event mask, or `-EAGAIN` if none is there.
fn poll_now(fd: libc::c_int, events: i16) -> i32 {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    match unsafe { libc::poll(&mut pfd, 1, 0) } {
        0 => -libc::EAGAIN,
        n if n > 0 => i32::from(pfd.revents as u16),
        _ => -last_errno(),
    }
}

fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}
