//! Overlapped sockets (`WSASocket(..., WSA_FLAG_OVERLAPPED)`): TCP and UDP over IPv4 and IPv6,
//! the calls servers need to set them up, and the overlapped operations.
//!
//! Setting up (bind, listen, accept, connect, options) is done with ordinary blocking calls, as
//! the chapter's programs do. Data moves with overlapped operations: [`Socket::send`],
//! [`Socket::recv`] and their siblings.
//!
//! Dropping a socket with operations pending closes it as `closesocket` does (S34): each pending
//! operation completes exactly once with `WSAECONNABORTED`, and the descriptor is closed when the
//! kernel has let go of the last of them.

use std::mem::ManuallyDrop;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use socket2::{Domain, Protocol, Type};

use crate::engine::{self, Queues};
use crate::error::{codes, Error, Result};
use crate::pool::PoolShared;
use crate::port::PortBinding;
use crate::spare::SpareSlot;

/// The address family of a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4 (`AF_INET`).
    V4,
    /// IPv6 (`AF_INET6`).
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: &SocketAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

/// The kind of socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A TCP stream (`SOCK_STREAM`).
    Stream,
    /// A UDP datagram socket (`SOCK_DGRAM`).
    Datagram,
}

/// An overlapped socket.
pub struct Socket {
    pub(crate) inner: Arc<SockInner>,
}

/// The part of a socket that its pending operations share; the descriptor closes when the last
/// of them lets go.
pub(crate) struct SockInner {
    sock: Descriptor,
    stream: bool,
    pub(crate) queues: Mutex<Queues>,
    /// The peer reset the connection: later operations fail at once (S11).
    reset: AtomicBool,
    shut_down_for_send: AtomicBool,
    /// The completion port the socket is associated with (S36).
    pub(crate) port: OnceLock<PortBinding>,
    /// Skip the port's packet when an operation succeeds at once (S44).
    skip_port_on_success: AtomicBool,
    /// A zero-byte receive just found data waiting: the next receive is worth trying at once.
    readable_hint: AtomicBool,
    /// The pool the socket receives ahead into ([`Socket::receive_ahead`]), once set.
    pub(crate) ahead_pool: OnceLock<Arc<PoolShared>>,
    /// The record of the socket's last finished operation, for its next one to reuse.
    pub(crate) spare: SpareSlot,
}

/// A socket's descriptor. Before it closes or leaves the library, it makes the rings forget it,
/// so that they do not take a later socket with the same number for this one.
struct Descriptor(Option<socket2::Socket>);

impl std::ops::Deref for Descriptor {
    type Target = socket2::Socket;

    fn deref(&self) -> &socket2::Socket {
        self.0
            .as_ref()
            .expect("only `into_owned` takes the socket, consuming the descriptor")
    }
}

impl Descriptor {
    /// The socket, for a caller outside the library.
    fn into_owned(mut self) -> socket2::Socket {
        let sock = self.0.take().expect("present until taken here");
        crate::driver::forget_descriptor(sock.as_raw_fd());
        sock
    }
}

impl Drop for Descriptor {
    fn drop(&mut self) {
        if let Some(sock) = &self.0 {
            crate::driver::forget_descriptor(sock.as_raw_fd());
        }
    }
}

impl SockInner {
    pub(crate) fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    pub(crate) fn is_stream(&self) -> bool {
        self.stream
    }

    pub(crate) fn mark_reset(&self) {
        self.reset.store(true, Ordering::Release);
    }

    pub(crate) fn is_reset(&self) -> bool {
        self.reset.load(Ordering::Acquire)
    }

    pub(crate) fn mark_shut_down_for_send(&self) {
        self.shut_down_for_send.store(true, Ordering::Release);
    }

    pub(crate) fn is_shut_down_for_send(&self) -> bool {
        self.shut_down_for_send.load(Ordering::Acquire)
    }

    /// Remembers that data is waiting (a zero-byte receive completed).
    pub(crate) fn hint_readable(&self) {
        self.readable_hint.store(true, Ordering::Relaxed);
    }

    /// Whether data was known to be waiting; forgets it.
    pub(crate) fn take_readable_hint(&self) -> bool {
        // Looked at first: most receives find no hint, and a load writes nothing.
        self.readable_hint.load(Ordering::Relaxed)
            && self.readable_hint.swap(false, Ordering::Relaxed)
    }

    pub(crate) fn skips_port_on_success(&self) -> bool {
        self.skip_port_on_success.load(Ordering::Acquire)
    }

    /// The pending socket error (`SO_ERROR`), clearing it.
    pub(crate) fn take_error(&self) -> Option<i32> {
        match self.sock.take_error() {
            Ok(Some(e)) => e.raw_os_error(),
            _ => None,
        }
    }
}

impl Socket {
    /// A new overlapped socket (`WSASocket`).
    pub fn new(family: Family, kind: Kind) -> Result<Socket> {
        let domain = match family {
            Family::V4 => Domain::IPV4,
            Family::V6 => Domain::IPV6,
        };
        let (ty, proto) = match kind {
            Kind::Stream => (Type::STREAM, Protocol::TCP),
            Kind::Datagram => (Type::DGRAM, Protocol::UDP),
        };
        Ok(Socket::wrap(
            socket2::Socket::new(domain, ty, Some(proto))?,
            kind,
        ))
    }

    /// A TCP socket bound to `addr` and listening, with `SO_REUSEADDR` set.
    pub fn listen_tcp(addr: SocketAddr, backlog: i32) -> Result<Socket> {
        let s = Socket::new(Family::of(&addr), Kind::Stream)?;
        s.set_reuse_address(true)?;
        s.bind(addr)?;
        s.listen(backlog)?;
        Ok(s)
    }

    /// A TCP socket connected to `addr` (a blocking connect).
    pub fn connect_tcp(addr: SocketAddr) -> Result<Socket> {
        let s = Socket::new(Family::of(&addr), Kind::Stream)?;
        s.connect(addr)?;
        Ok(s)
    }

    /// A UDP socket bound to `addr`.
    pub fn bind_udp(addr: SocketAddr) -> Result<Socket> {
        let s = Socket::new(Family::of(&addr), Kind::Datagram)?;
        s.bind(addr)?;
        Ok(s)
    }

    /// Adopts a socket. Its descriptor is made non-blocking: the engine tries every operation
    /// without blocking, and the blocking setup calls wait for readiness themselves. Setting the
    /// flag cannot fail on a socket descriptor, so a failure is ignored: operations would still
    /// work, only their first attempt could block.
    fn wrap(sock: socket2::Socket, kind: Kind) -> Socket {
        let _ = sock.set_nonblocking(true);
        Socket {
            inner: Arc::new(SockInner {
                sock: Descriptor(Some(sock)),
                stream: kind == Kind::Stream,
                queues: Mutex::new(Queues::default()),
                reset: AtomicBool::new(false),
                shut_down_for_send: AtomicBool::new(false),
                port: OnceLock::new(),
                skip_port_on_success: AtomicBool::new(false),
                readable_hint: AtomicBool::new(false),
                ahead_pool: OnceLock::new(),
                spare: SpareSlot::new(),
            }),
        }
    }

    fn from_socket2(sock: socket2::Socket) -> Result<Socket> {
        let kind = match sock.r#type()? {
            Type::STREAM => Kind::Stream,
            Type::DGRAM => Kind::Datagram,
            _ => return Err(Error::new(codes::WSAEPROTOTYPE)),
        };
        Ok(Socket::wrap(sock, kind))
    }

    /// Stream or datagram.
    pub fn kind(&self) -> Kind {
        if self.inner.stream {
            Kind::Stream
        } else {
            Kind::Datagram
        }
    }

    /// Binds to a local address.
    pub fn bind(&self, addr: SocketAddr) -> Result<()> {
        Ok(self.inner.sock.bind(&addr.into())?)
    }

    /// Starts listening for connections.
    pub fn listen(&self, backlog: i32) -> Result<()> {
        Ok(self.inner.sock.listen(backlog)?)
    }

    /// Accepts a connection, blocking until one arrives; the new socket is overlapped too.
    pub fn accept(&self) -> Result<(Socket, SocketAddr)> {
        loop {
            match self.inner.sock.accept() {
                Ok((sock, addr)) => {
                    let addr = addr.as_socket().ok_or(Error::new(codes::WSAEAFNOSUPPORT))?;
                    return Ok((Socket::wrap(sock, Kind::Stream), addr));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    wait_ready(self.inner.fd(), libc::POLLIN)?
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Connects, blocking until the connection is made or refused.
    pub fn connect(&self, addr: SocketAddr) -> Result<()> {
        match self.inner.sock.connect(&addr.into()) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                wait_ready(self.inner.fd(), libc::POLLOUT)?;
                match self.inner.take_error() {
                    Some(errno) => Err(Error::from_errno(errno)),
                    None => Ok(()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Shuts down one or both directions. After shutting down sending, sends fail with
    /// `WSAESHUTDOWN` and the peer reads the end of the stream.
    pub fn shutdown(&self, how: Shutdown) -> Result<()> {
        self.inner.sock.shutdown(how)?;
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            self.inner.shut_down_for_send.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// The local address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        let addr = self.inner.sock.local_addr()?;
        addr.as_socket().ok_or(Error::new(codes::WSAEAFNOSUPPORT))
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        let addr = self.inner.sock.peer_addr()?;
        addr.as_socket().ok_or(Error::new(codes::WSAEAFNOSUPPORT))
    }

    /// `SO_REUSEADDR`.
    pub fn set_reuse_address(&self, on: bool) -> Result<()> {
        Ok(self.inner.sock.set_reuse_address(on)?)
    }

    /// `SO_REUSEPORT`: several sockets may bind the same port and share its connections.
    pub fn set_reuse_port(&self, on: bool) -> Result<()> {
        Ok(self.inner.sock.set_reuse_port(on)?)
    }

    /// `TCP_NODELAY`.
    pub fn set_nodelay(&self, on: bool) -> Result<()> {
        Ok(self.inner.sock.set_tcp_nodelay(on)?)
    }

    /// Whether `TCP_NODELAY` is set.
    pub fn nodelay(&self) -> Result<bool> {
        Ok(self.inner.sock.tcp_nodelay()?)
    }

    /// `SO_SNDBUF`.
    pub fn set_send_buffer_size(&self, bytes: usize) -> Result<()> {
        Ok(self.inner.sock.set_send_buffer_size(bytes)?)
    }

    /// `SO_SNDBUF` as the kernel reports it.
    pub fn send_buffer_size(&self) -> Result<usize> {
        Ok(self.inner.sock.send_buffer_size()?)
    }

    /// `SO_RCVBUF`.
    pub fn set_recv_buffer_size(&self, bytes: usize) -> Result<()> {
        Ok(self.inner.sock.set_recv_buffer_size(bytes)?)
    }

    /// `SO_RCVBUF` as the kernel reports it.
    pub fn recv_buffer_size(&self) -> Result<usize> {
        Ok(self.inner.sock.recv_buffer_size()?)
    }

    /// `IPV6_V6ONLY`.
    pub fn set_only_v6(&self, on: bool) -> Result<()> {
        Ok(self.inner.sock.set_only_v6(on)?)
    }

    /// `SO_LINGER`; `Some(Duration::ZERO)` makes closing the socket reset the connection.
    pub fn set_linger(&self, linger: Option<Duration>) -> Result<()> {
        Ok(self.inner.sock.set_linger(linger)?)
    }

    /// `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS` (`SetFileCompletionNotificationModes`, S44): an
    /// operation that succeeds at once posts no packet; pending ones still do, success or failure.
    pub fn set_skip_completion_port_on_success(&self, skip: bool) {
        self.inner
            .skip_port_on_success
            .store(skip, Ordering::Release);
    }

    /// `SO_BROADCAST`.
    pub fn set_broadcast(&self, on: bool) -> Result<()> {
        Ok(self.inner.sock.set_broadcast(on)?)
    }

    /// Closes the socket (`closesocket`): pending operations complete with `WSAECONNABORTED`.
    pub fn close(self) {
        drop(self)
    }

    /// The `std::net` stream for this socket, if no operation is pending on it.
    /// `WSAEINPROGRESS` (with the socket back) if one is.
    pub fn into_tcp_stream(self) -> std::result::Result<TcpStream, (Error, Socket)> {
        self.into_owned_fd().map(TcpStream::from)
    }

    /// The `std::net` UDP socket for this socket, if no operation is pending on it.
    pub fn into_udp_socket(self) -> std::result::Result<UdpSocket, (Error, Socket)> {
        self.into_owned_fd().map(UdpSocket::from)
    }

    /// The descriptor, if no operation is pending on the socket.
    pub fn into_owned_fd(self) -> std::result::Result<OwnedFd, (Error, Socket)> {
        let me = ManuallyDrop::new(self);
        // SAFETY: `me` is never used or dropped again; its Arc is moved out exactly once.
        let inner = unsafe { std::ptr::read(&me.inner) };
        // A finished operation's record kept for the next one refers to the socket too.
        drop(inner.spare.take());
        match Arc::try_unwrap(inner) {
            Ok(inner) => {
                // Give it back in the blocking mode std's types expect; a descriptor that cannot
                // take the flag back is still the caller's.
                let sock = inner.sock.into_owned();
                let _ = sock.set_nonblocking(false);
                Ok(OwnedFd::from(sock))
            }
            Err(inner) => Err((Error::new(codes::WSAEINPROGRESS), Socket { inner })),
        }
    }
}

/// Blocks until `fd` is ready for `events` (or in error).
pub(crate) fn wait_ready(fd: RawFd, events: i16) -> Result<()> {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, -1) } >= 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e.into());
        }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        engine::close(&self.inner);
    }
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("fd", &self.inner.fd())
            .field("kind", &self.kind())
            .field("local", &self.local_addr().ok())
            .finish()
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.fd()
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.sock.as_fd()
    }
}

impl TryFrom<OwnedFd> for Socket {
    type Error = Error;

    /// Adopts a TCP or UDP socket descriptor.
    fn try_from(fd: OwnedFd) -> Result<Socket> {
        Socket::from_socket2(socket2::Socket::from(fd))
    }
}

impl From<TcpStream> for Socket {
    fn from(s: TcpStream) -> Socket {
        Socket::wrap(socket2::Socket::from(s), Kind::Stream)
    }
}

impl From<TcpListener> for Socket {
    fn from(s: TcpListener) -> Socket {
        Socket::wrap(socket2::Socket::from(s), Kind::Stream)
    }
}

impl From<UdpSocket> for Socket {
    fn from(s: UdpSocket) -> Socket {
        Socket::wrap(socket2::Socket::from(s), Kind::Datagram)
    }
}
