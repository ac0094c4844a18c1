//! Message flags with Winsock's values (`lpFlags` in and out), and their Linux equivalents.
//!
//! Programs pass and read Windows' values (S12, S19); the engine translates them for the kernel.

use crate::error::{codes, Error, Result};

/// `MSG_OOB`: send or receive out-of-band data.
pub const MSG_OOB: u32 = 0x1;
/// `MSG_PEEK`: receive without removing the data from the queue.
pub const MSG_PEEK: u32 = 0x2;
/// `MSG_DONTROUTE`: send without routing.
pub const MSG_DONTROUTE: u32 = 0x4;
/// `MSG_WAITALL`: a stream receive completes only when its buffers are full, the peer closed, or
/// an error came.
pub const MSG_WAITALL: u32 = 0x8;
/// `MSG_PUSH_IMMEDIATE`: a hint to deliver a receive early; accepted and ignored, as Linux
/// delivers data as it arrives.
pub const MSG_PUSH_IMMEDIATE: u32 = 0x20;
/// `MSG_PARTIAL` (out): the datagram did not fit the buffers and was truncated.
pub const MSG_PARTIAL: u32 = 0x8000;

/// The Linux flags for a receive's Windows flags.
pub(crate) fn recv_to_linux(flags: u32) -> Result<i32> {
    let known = MSG_OOB | MSG_PEEK | MSG_WAITALL | MSG_PUSH_IMMEDIATE;
    if flags & !known != 0 {
        return Err(Error::new(codes::WSAEOPNOTSUPP));
    }
    let mut out = 0;
    if flags & MSG_OOB != 0 {
        out |= libc::MSG_OOB;
    }
    if flags & MSG_PEEK != 0 {
        out |= libc::MSG_PEEK;
    }
    if flags & MSG_WAITALL != 0 {
        out |= libc::MSG_WAITALL;
    }
    Ok(out)
}

/// The Linux flags for a send's Windows flags.
pub(crate) fn send_to_linux(flags: u32) -> Result<i32> {
    if flags & !(MSG_OOB | MSG_DONTROUTE) != 0 {
        return Err(Error::new(codes::WSAEOPNOTSUPP));
    }
    let mut out = 0;
    if flags & MSG_OOB != 0 {
        out |= libc::MSG_OOB;
    }
    if flags & MSG_DONTROUTE != 0 {
        out |= libc::MSG_DONTROUTE;
    }
    Ok(out)
}

/// The Windows flags reported for a receive, from the kernel's `msg_flags`.
pub(crate) fn recv_from_linux(msg_flags: i32) -> u32 {
    let mut out = 0;
    if msg_flags & libc::MSG_TRUNC != 0 {
        out |= MSG_PARTIAL;
    }
    if msg_flags & libc::MSG_OOB != 0 {
        out |= MSG_OOB;
    }
    out
}
