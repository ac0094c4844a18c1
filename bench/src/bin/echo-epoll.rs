//! The reference: a single-threaded, level-triggered epoll echo server written with libc.
//!
//! Each readable connection is read once into its buffer and the bytes are written straight back.
//! If the socket takes only part of them, the rest is kept, the connection waits for `EPOLLOUT`
//! instead of `EPOLLIN` until it has drained, and only then reads again — so a slow reader cannot
//! make the server buffer without bound. This is what the other servers are measured against.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};

use overlapped_bench::{announce, fatal, listen_addr, set_nodelay, BUF_SIZE};

/// epoll data value of the listener; connections use their fd.
const LISTENER: u64 = u64::MAX;

/// One client: its socket and the bytes not yet echoed (`buf[start..end]`).
struct Conn {
    fd: RawFd,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

fn main() {
    let listener = TcpListener::bind(listen_addr()).unwrap_or_else(|e| fatal("binding", e));
    listener
        .set_nonblocking(true)
        .unwrap_or_else(|e| fatal("set_nonblocking", e));
    let bound: SocketAddr = listener
        .local_addr()
        .unwrap_or_else(|e| fatal("local_addr", e));
    // SAFETY: epoll_create1 has no memory arguments.
    let ep = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })
        .unwrap_or_else(|e| fatal("epoll_create1", e));
    ctl(
        ep,
        libc::EPOLL_CTL_ADD,
        listener.as_raw_fd(),
        libc::EPOLLIN,
        LISTENER,
    )
    .unwrap_or_else(|e| fatal("registering the listener", e));
    announce(bound);
    // Indexed by fd: the kernel hands out the lowest free descriptor, so this stays dense.
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    loop {
        // SAFETY: `events` is valid for `events.len()` entries for the whole call.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1) };
        let n = match check(n) {
            Ok(n) => n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => fatal("epoll_wait", e),
        };
        for ev in &events[..n] {
            let (key, flags) = (ev.u64, ev.events);
            if key == LISTENER {
                accept_all(ep, &listener, &mut conns);
                continue;
            }
            let fd = key as usize;
            let Some(conn) = conns.get_mut(fd).and_then(Option::as_mut) else {
                continue;
            };
            if serve(ep, conn, flags).is_err() {
                // SAFETY: the fd is ours and closed once; closing also removes it from epoll.
                unsafe { libc::close(conn.fd) };
                conns[fd] = None;
            }
        }
    }
}

/// Accepts every pending connection and registers it for reading.
fn accept_all(ep: RawFd, listener: &TcpListener, conns: &mut Vec<Option<Conn>>) {
    loop {
        let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        // SAFETY: null address pointers are allowed: we do not ask for the peer.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                flags,
            )
        };
        let fd = match check(fd) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("accept: {e}");
                return;
            }
        };
        set_nodelay(fd);
        if let Err(e) = ctl(ep, libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN, fd as u64) {
            eprintln!("registering a connection: {e}");
            // SAFETY: the fd was just accepted and is not stored anywhere.
            unsafe { libc::close(fd) };
            continue;
        }
        let index = fd as usize;
        if conns.len() <= index {
            conns.resize_with(index + 1, || None);
        }
        conns[index] = Some(Conn {
            fd,
            buf: vec![0; BUF_SIZE].into_boxed_slice(),
            start: 0,
            end: 0,
        });
    }
}

/// Serves one readiness event; `Err` when the connection is over.
fn serve(ep: RawFd, conn: &mut Conn, flags: u32) -> io::Result<()> {
    if flags & (libc::EPOLLERR as u32) != 0 {
        return Err(io::ErrorKind::ConnectionReset.into());
    }
    let draining = conn.start < conn.end;
    if !draining {
        // SAFETY: the buffer is valid for its whole length.
        let n = unsafe { libc::read(conn.fd, conn.buf.as_mut_ptr().cast(), conn.buf.len()) };
        match check_size(n) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => (conn.start, conn.end) = (0, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    while conn.start < conn.end {
        let rest = &conn.buf[conn.start..conn.end];
        // SAFETY: `rest` is valid for its length.
        let n = unsafe { libc::write(conn.fd, rest.as_ptr().cast(), rest.len()) };
        match check_size(n) {
            Ok(n) => conn.start += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    let pending = conn.start < conn.end;
    if pending != draining {
        let want = if pending {
            libc::EPOLLOUT
        } else {
            libc::EPOLLIN
        };
        ctl(ep, libc::EPOLL_CTL_MOD, conn.fd, want, conn.fd as u64)?;
    }
    Ok(())
}

fn ctl(ep: RawFd, op: libc::c_int, fd: RawFd, events: libc::c_int, key: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: events as u32,
        u64: key,
    };
    // SAFETY: `ev` is valid for the call; the kernel copies it.
    check(unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) }).map(drop)
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}
