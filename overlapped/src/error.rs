//! One error type for the whole library: the Win32/WSA code a Windows program would see, and the
//! Linux `errno` that caused it when there is one.
//!
//! Programs ported from Windows compare codes (`WSAECONNRESET`, `WSA_IO_INCOMPLETE`, ...), so the
//! code is the primary identity of an error; the errno is kept for diagnostics and for the
//! conversion to [`std::io::Error`].

use std::fmt;
use std::io;

/// The Win32 and Winsock codes the library reports, with Win32's names and values.
pub mod codes {
    /// `ERROR_INVALID_PARAMETER` / `WSA_INVALID_PARAMETER`.
    pub const WSA_INVALID_PARAMETER: u32 = 87;
    /// `ERROR_NOT_FOUND`: nothing to cancel.
    pub const ERROR_NOT_FOUND: u32 = 1168;
    /// `ERROR_ABANDONED_WAIT_0`: the completion port was closed.
    pub const ERROR_ABANDONED_WAIT_0: u32 = 735;
    /// `WSA_OPERATION_ABORTED`: the operation was cancelled.
    pub const WSA_OPERATION_ABORTED: u32 = 995;
    /// `WSA_IO_INCOMPLETE`: the operation is still pending.
    pub const WSA_IO_INCOMPLETE: u32 = 996;
    /// `WSA_IO_PENDING`: the operation was started and will complete later.
    pub const WSA_IO_PENDING: u32 = 997;
    /// `WAIT_TIMEOUT`.
    pub const WAIT_TIMEOUT: u32 = 258;
    /// `WSAEINTR`.
    pub const WSAEINTR: u32 = 10004;
    /// `WSAEBADF`.
    pub const WSAEBADF: u32 = 10009;
    /// `WSAEACCES`.
    pub const WSAEACCES: u32 = 10013;
    /// `WSAEFAULT`.
    pub const WSAEFAULT: u32 = 10014;
    /// `WSAEINVAL`.
    pub const WSAEINVAL: u32 = 10022;
    /// `WSAEMFILE`: no more descriptors.
    pub const WSAEMFILE: u32 = 10024;
    /// `WSAEWOULDBLOCK`.
    pub const WSAEWOULDBLOCK: u32 = 10035;
    /// `WSAEINPROGRESS`.
    pub const WSAEINPROGRESS: u32 = 10036;
    /// `WSAEALREADY`.
    pub const WSAEALREADY: u32 = 10037;
    /// `WSAENOTSOCK`.
    pub const WSAENOTSOCK: u32 = 10038;
    /// `WSAEDESTADDRREQ`.
    pub const WSAEDESTADDRREQ: u32 = 10039;
    /// `WSAEMSGSIZE`: a datagram was larger than the buffers.
    pub const WSAEMSGSIZE: u32 = 10040;
    /// `WSAEPROTOTYPE`.
    pub const WSAEPROTOTYPE: u32 = 10041;
    /// `WSAENOPROTOOPT`.
    pub const WSAENOPROTOOPT: u32 = 10042;
    /// `WSAEPROTONOSUPPORT`.
    pub const WSAEPROTONOSUPPORT: u32 = 10043;
    /// `WSAEOPNOTSUPP`.
    pub const WSAEOPNOTSUPP: u32 = 10045;
    /// `WSAEAFNOSUPPORT`.
    pub const WSAEAFNOSUPPORT: u32 = 10047;
    /// `WSAEADDRINUSE`.
    pub const WSAEADDRINUSE: u32 = 10048;
    /// `WSAEADDRNOTAVAIL`.
    pub const WSAEADDRNOTAVAIL: u32 = 10049;
    /// `WSAENETDOWN`.
    pub const WSAENETDOWN: u32 = 10050;
    /// `WSAENETUNREACH`.
    pub const WSAENETUNREACH: u32 = 10051;
    /// `WSAECONNABORTED`: the connection was aborted on this side (the socket was closed).
    pub const WSAECONNABORTED: u32 = 10053;
    /// `WSAECONNRESET`: the peer reset the connection.
    pub const WSAECONNRESET: u32 = 10054;
    /// `WSAENOBUFS`.
    pub const WSAENOBUFS: u32 = 10055;
    /// `WSAEISCONN`.
    pub const WSAEISCONN: u32 = 10056;
    /// `WSAENOTCONN`.
    pub const WSAENOTCONN: u32 = 10057;
    /// `WSAESHUTDOWN`: sending after a shutdown.
    pub const WSAESHUTDOWN: u32 = 10058;
    /// `WSAETIMEDOUT`.
    pub const WSAETIMEDOUT: u32 = 10060;
    /// `WSAECONNREFUSED`.
    pub const WSAECONNREFUSED: u32 = 10061;
    /// `WSAEHOSTUNREACH`.
    pub const WSAEHOSTUNREACH: u32 = 10065;
    /// `WSASYSCALLFAILURE`: an OS failure with no closer Winsock equivalent (see the errno).
    pub const WSASYSCALLFAILURE: u32 = 10107;
}

use codes::*;

/// A failed call or operation: the Win32/WSA code and, when the OS reported it, the errno.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Error {
    code: u32,
    errno: Option<i32>,
}

/// The library's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error with a Win32/WSA code and no OS errno.
    pub const fn new(code: u32) -> Error {
        Error { code, errno: None }
    }

    /// An error with an explicit code and the errno that caused it.
    pub const fn with_errno(code: u32, errno: i32) -> Error {
        Error {
            code,
            errno: Some(errno),
        }
    }

    /// The error for a Linux errno, mapped to the Winsock code Windows reports for that condition.
    pub fn from_errno(errno: i32) -> Error {
        Error::with_errno(code_for_errno(errno), errno)
    }

    /// The error of the calling thread's last failed system call.
    pub fn last_os_error() -> Error {
        Error::from(io::Error::last_os_error())
    }

    /// The Win32/WSA code (`WSAGetLastError`'s value).
    pub fn code(&self) -> u32 {
        self.code
    }

    /// The Linux errno behind this error, if the OS reported one.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.errno
    }

    /// Win32's name for the code, such as `"WSAECONNRESET"`.
    pub fn code_name(&self) -> &'static str {
        code_name(self.code)
    }
}

/// The Winsock code Windows reports for the condition a Linux errno names.
pub fn code_for_errno(errno: i32) -> u32 {
    match errno {
        libc::EAGAIN => WSAEWOULDBLOCK,
        libc::EINVAL => WSAEINVAL,
        libc::ECONNRESET => WSAECONNRESET,
        libc::ECONNABORTED => WSAECONNABORTED,
        libc::ECONNREFUSED => WSAECONNREFUSED,
        libc::ENOTCONN => WSAENOTCONN,
        libc::EPIPE | libc::ESHUTDOWN => WSAESHUTDOWN,
        libc::EMSGSIZE => WSAEMSGSIZE,
        libc::EADDRINUSE => WSAEADDRINUSE,
        libc::EADDRNOTAVAIL => WSAEADDRNOTAVAIL,
        libc::EAFNOSUPPORT => WSAEAFNOSUPPORT,
        libc::ETIMEDOUT => WSAETIMEDOUT,
        libc::EHOSTUNREACH => WSAEHOSTUNREACH,
        libc::ENETUNREACH => WSAENETUNREACH,
        libc::ENETDOWN => WSAENETDOWN,
        libc::EMFILE | libc::ENFILE => WSAEMFILE,
        libc::ENOBUFS | libc::ENOMEM => WSAENOBUFS,
        libc::EBADF => WSAEBADF,
        libc::ENOTSOCK => WSAENOTSOCK,
        libc::EISCONN => WSAEISCONN,
        libc::EINPROGRESS => WSAEINPROGRESS,
        libc::EALREADY => WSAEALREADY,
        libc::EACCES | libc::EPERM => WSAEACCES,
        libc::EFAULT => WSAEFAULT,
        libc::EOPNOTSUPP => WSAEOPNOTSUPP,
        libc::EPROTOTYPE => WSAEPROTOTYPE,
        libc::ENOPROTOOPT => WSAENOPROTOOPT,
        libc::EPROTONOSUPPORT => WSAEPROTONOSUPPORT,
        libc::EDESTADDRREQ => WSAEDESTADDRREQ,
        libc::ECANCELED => WSA_OPERATION_ABORTED,
        libc::EINTR => WSAEINTR,
        libc::ENOENT => ERROR_NOT_FOUND,
        _ => WSASYSCALLFAILURE,
    }
}

/// Win32's name for a code the library reports.
pub fn code_name(code: u32) -> &'static str {
    match code {
        0 => "NO_ERROR",
        WSA_INVALID_PARAMETER => "WSA_INVALID_PARAMETER",
        ERROR_NOT_FOUND => "ERROR_NOT_FOUND",
        ERROR_ABANDONED_WAIT_0 => "ERROR_ABANDONED_WAIT_0",
        WSA_OPERATION_ABORTED => "WSA_OPERATION_ABORTED",
        WSA_IO_INCOMPLETE => "WSA_IO_INCOMPLETE",
        WSA_IO_PENDING => "WSA_IO_PENDING",
        WAIT_TIMEOUT => "WAIT_TIMEOUT",
        WSAEINTR => "WSAEINTR",
        WSAEBADF => "WSAEBADF",
        WSAEACCES => "WSAEACCES",
        WSAEFAULT => "WSAEFAULT",
        WSAEINVAL => "WSAEINVAL",
        WSAEMFILE => "WSAEMFILE",
        WSAEWOULDBLOCK => "WSAEWOULDBLOCK",
        WSAEINPROGRESS => "WSAEINPROGRESS",
        WSAEALREADY => "WSAEALREADY",
        WSAENOTSOCK => "WSAENOTSOCK",
        WSAEDESTADDRREQ => "WSAEDESTADDRREQ",
        WSAEMSGSIZE => "WSAEMSGSIZE",
        WSAEPROTOTYPE => "WSAEPROTOTYPE",
        WSAENOPROTOOPT => "WSAENOPROTOOPT",
        WSAEPROTONOSUPPORT => "WSAEPROTONOSUPPORT",
        WSAEOPNOTSUPP => "WSAEOPNOTSUPP",
        WSAEAFNOSUPPORT => "WSAEAFNOSUPPORT",
        WSAEADDRINUSE => "WSAEADDRINUSE",
        WSAEADDRNOTAVAIL => "WSAEADDRNOTAVAIL",
        WSAENETDOWN => "WSAENETDOWN",
        WSAENETUNREACH => "WSAENETUNREACH",
        WSAECONNABORTED => "WSAECONNABORTED",
        WSAECONNRESET => "WSAECONNRESET",
        WSAENOBUFS => "WSAENOBUFS",
        WSAEISCONN => "WSAEISCONN",
        WSAENOTCONN => "WSAENOTCONN",
        WSAESHUTDOWN => "WSAESHUTDOWN",
        WSAETIMEDOUT => "WSAETIMEDOUT",
        WSAECONNREFUSED => "WSAECONNREFUSED",
        WSAEHOSTUNREACH => "WSAEHOSTUNREACH",
        WSASYSCALLFAILURE => "WSASYSCALLFAILURE",
        _ => "unknown code",
    }
}

fn describe(code: u32) -> &'static str {
    match code {
        WSA_INVALID_PARAMETER => "invalid parameter",
        ERROR_NOT_FOUND => "no such operation to cancel",
        ERROR_ABANDONED_WAIT_0 => "the completion port was closed",
        WSA_OPERATION_ABORTED => "the operation was cancelled",
        WSA_IO_INCOMPLETE => "the overlapped operation is still pending",
        WSA_IO_PENDING => "the overlapped operation was started and is pending",
        WAIT_TIMEOUT => "the wait timed out",
        WSAEINVAL => "invalid argument",
        WSAEMSGSIZE => "the datagram was larger than the buffers and was truncated",
        WSAECONNABORTED => "the connection was aborted by closing the socket",
        WSAECONNRESET => "the connection was reset by the peer",
        WSAENOTCONN => "the socket is not connected",
        WSAESHUTDOWN => "the socket was shut down for sending",
        WSAECONNREFUSED => "the connection was refused",
        WSAEMFILE => "too many open descriptors",
        WSAENOBUFS => "no buffer space available",
        _ => "",
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code_name(), self.code)?;
        let text = describe(self.code);
        if !text.is_empty() {
            write!(f, ": {text}")?;
        }
        if let Some(errno) = self.errno {
            write!(
                f,
                " [os error {errno}: {}]",
                io::Error::from_raw_os_error(errno)
            )?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        match e.raw_os_error() {
            Some(errno) => Error::from_errno(errno),
            None => match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
                Some(inner) => *inner,
                None => Error::new(WSAEINVAL),
            },
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match e.code {
            WSAECONNRESET => io::ErrorKind::ConnectionReset,
            WSAECONNABORTED | WSA_OPERATION_ABORTED => io::ErrorKind::ConnectionAborted,
            WSAECONNREFUSED => io::ErrorKind::ConnectionRefused,
            WSAENOTCONN => io::ErrorKind::NotConnected,
            WSAEADDRINUSE => io::ErrorKind::AddrInUse,
            WSAEADDRNOTAVAIL => io::ErrorKind::AddrNotAvailable,
            WSAESHUTDOWN => io::ErrorKind::BrokenPipe,
            WSAEWOULDBLOCK | WSA_IO_INCOMPLETE | WSA_IO_PENDING => io::ErrorKind::WouldBlock,
            WSAEINVAL | WSA_INVALID_PARAMETER => io::ErrorKind::InvalidInput,
            WSAETIMEDOUT | WAIT_TIMEOUT => io::ErrorKind::TimedOut,
            WSAEINTR => io::ErrorKind::Interrupted,
            ERROR_NOT_FOUND => io::ErrorKind::NotFound,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_maps_to_winsock_code_and_back_through_io_error() {
        let e = Error::from_errno(libc::ECONNRESET);
        assert_eq!(e.code(), WSAECONNRESET);
        assert_eq!(e.raw_os_error(), Some(libc::ECONNRESET));
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(Error::from(io), e);
        assert!(e.to_string().starts_with("WSAECONNRESET (10054)"));
    }

    #[test]
    fn codes_have_win32_values() {
        assert_eq!(WSA_IO_PENDING, 997);
        assert_eq!(WSA_IO_INCOMPLETE, 996);
        assert_eq!(WSA_OPERATION_ABORTED, 995);
        assert_eq!(WSAECONNABORTED, 10053);
        assert_eq!(WSAEMSGSIZE, 10040);
        assert_eq!(WSAENOTCONN, 10057);
    }
}
