//! Starting up, creating, connecting and closing sockets: `WSAStartup`, `WSASocket`, `bind`,
//! `listen`, `accept`, `connect`, `shutdown`, `closesocket`. These are blocking calls, as in
//! Win32; only data moves overlapped.

use std::net::{Shutdown, SocketAddr};

use super::handles::{self, fail};
use super::{
    AF_INET, AF_INET6, INVALID_SOCKET, IPPROTO_TCP, IPPROTO_UDP, SD_BOTH, SD_RECEIVE, SD_SEND,
    SOCKET, SOCK_DGRAM, SOCK_STREAM, WSAESOCKTNOSUPPORT, WSA_FLAG_NO_HANDLE_INHERIT,
    WSA_FLAG_OVERLAPPED,
};
use crate::error::{codes, Error, Result};
use crate::{Family, Kind, Socket};

/// What [`wsa_startup`] reports (`WSADATA`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WsaData {
    /// The version the program will use (`wVersion`): major in the low byte, minor in the high.
    pub version: u16,
    /// The highest version available (`wHighVersion`): 2.2.
    pub high_version: u16,
    /// A description of the implementation (`szDescription`).
    pub description: String,
}

/// `MAKEWORD(low, high)`: a version number, major version in the low byte.
pub const fn make_word(low: u8, high: u8) -> u16 {
    (low as u16) | ((high as u16) << 8)
}

/// The highest Winsock version: 2.2.
const HIGH_VERSION: u16 = make_word(2, 2);

/// `WSAStartup`: nothing needs starting on Linux, so this always succeeds and returns 0. `data`
/// receives the version the program asked for, capped at 2.2.
pub fn wsa_startup(version_requested: u16, data: &mut WsaData) -> i32 {
    let [major, minor] = version_requested.to_le_bytes();
    data.version = if (major, minor) > (2, 2) {
        HIGH_VERSION
    } else {
        version_requested
    };
    data.high_version = HIGH_VERSION;
    data.description = String::from("overlapped: Windows Overlapped IO on Linux");
    0
}

/// `WSACleanup`: always succeeds and returns 0. Sockets stay open until [`closesocket`].
pub fn wsa_cleanup() -> i32 {
    0
}

/// `WSASocket(af, type, protocol, NULL, 0, flags)`: a new overlapped socket, or
/// [`INVALID_SOCKET`] with the last error set: `WSAEAFNOSUPPORT` for a family other than
/// [`AF_INET`] / [`AF_INET6`], [`WSAESOCKTNOSUPPORT`] for a type other than [`SOCK_STREAM`] /
/// [`SOCK_DGRAM`], `WSAEPROTONOSUPPORT` for a protocol that does not fit the type (0 picks the
/// type's own), `WSAEINVAL` for flags other than [`WSA_FLAG_OVERLAPPED`] and
/// [`WSA_FLAG_NO_HANDLE_INHERIT`].
pub fn wsa_socket(af: i32, ty: i32, protocol: i32, flags: u32) -> SOCKET {
    match create(af, ty, protocol, flags) {
        Ok(sock) => handles::insert(sock),
        Err(e) => {
            fail(e);
            INVALID_SOCKET
        }
    }
}

/// `socket(af, type, protocol)`: as [`wsa_socket`] with [`WSA_FLAG_OVERLAPPED`], which is what
/// Win32's `socket` creates.
pub fn socket(af: i32, ty: i32, protocol: i32) -> SOCKET {
    wsa_socket(af, ty, protocol, WSA_FLAG_OVERLAPPED)
}

fn create(af: i32, ty: i32, protocol: i32, flags: u32) -> Result<Socket> {
    let family = match af {
        AF_INET => Family::V4,
        AF_INET6 => Family::V6,
        _ => return Err(Error::new(codes::WSAEAFNOSUPPORT)),
    };
    let (kind, own_protocol) = match ty {
        SOCK_STREAM => (Kind::Stream, IPPROTO_TCP),
        SOCK_DGRAM => (Kind::Datagram, IPPROTO_UDP),
        _ => return Err(Error::new(WSAESOCKTNOSUPPORT)),
    };
    if protocol != 0 && protocol != own_protocol {
        return Err(Error::new(codes::WSAEPROTONOSUPPORT));
    }
    if flags & !(WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT) != 0 {
        return Err(Error::new(codes::WSAEINVAL));
    }
    Socket::new(family, kind)
}

/// Runs `f` on the socket `s` names; 0, or [`SOCKET_ERROR`](super::SOCKET_ERROR) with the last
/// error set (`WSAENOTSOCK` for an unknown handle).
fn with_socket(s: SOCKET, f: impl FnOnce(&Socket) -> Result<()>) -> i32 {
    match handles::get(s).and_then(|sock| f(&sock)) {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

/// `bind`: gives the socket a local address.
pub fn bind(s: SOCKET, name: &SocketAddr) -> i32 {
    with_socket(s, |sock| sock.bind(*name))
}

/// `listen`: starts accepting connections, with at most `backlog` waiting.
pub fn listen(s: SOCKET, backlog: i32) -> i32 {
    with_socket(s, |sock| sock.listen(backlog))
}

/// `connect`: connects, blocking until the connection is made or refused.
pub fn connect(s: SOCKET, name: &SocketAddr) -> i32 {
    with_socket(s, |sock| sock.connect(*name))
}

/// `shutdown`: [`SD_RECEIVE`], [`SD_SEND`] or [`SD_BOTH`]; any other `how` is `WSAEINVAL`.
pub fn shutdown(s: SOCKET, how: i32) -> i32 {
    let how = match how {
        SD_RECEIVE => Shutdown::Read,
        SD_SEND => Shutdown::Write,
        SD_BOTH => Shutdown::Both,
        _ => return fail(Error::new(codes::WSAEINVAL)),
    };
    with_socket(s, |sock| sock.shutdown(how))
}

/// `getsockname`: the socket's local address, written to `name`.
pub fn getsockname(s: SOCKET, name: &mut SocketAddr) -> i32 {
    with_socket(s, |sock| {
        *name = sock.local_addr()?;
        Ok(())
    })
}

/// `getpeername`: the connected peer's address, written to `name`.
pub fn getpeername(s: SOCKET, name: &mut SocketAddr) -> i32 {
    with_socket(s, |sock| {
        *name = sock.peer_addr()?;
        Ok(())
    })
}

/// `accept`: blocks until a connection arrives and returns its new (overlapped) socket, writing
/// the peer's address to `addr` if given; [`INVALID_SOCKET`] with the last error set on failure.
///
/// Unlike Windows, closing the listener from another thread does not interrupt a blocking
/// accept; use an overlapped accept for that.
pub fn accept(s: SOCKET, addr: Option<&mut SocketAddr>) -> SOCKET {
    match handles::get(s).and_then(|listener| listener.accept()) {
        Ok((sock, peer)) => {
            if let Some(addr) = addr {
                *addr = peer;
            }
            handles::insert(sock)
        }
        Err(e) => {
            fail(e);
            INVALID_SOCKET
        }
    }
}

/// `closesocket`: forgets the handle and closes the socket. Pending operations complete with
/// `WSAECONNABORTED` (S34), their events signalled. `WSAENOTSOCK` if `s` names no socket.
pub fn closesocket(s: SOCKET) -> i32 {
    match handles::remove(s) {
        // The socket closes here, or as soon as a call running on another thread lets go of it.
        Ok(sock) => {
            drop(sock);
            0
        }
        Err(e) => fail(e),
    }
}
