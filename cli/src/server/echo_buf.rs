//! The port model's buffer: a connection's own, or one of the port's pool.
//!
//! A port's operations all carry one buffer type. The port model receives into a buffer of its
//! own (whole for the receive, cut to the bytes that came for the echo) or, with a buffer pool,
//! into a buffer the pool hands over when data arrives; either is then sent back as it is.

use overlapped::{IoBuf, IoBufMut, PooledBuf, Prefix};

/// A receive buffer of the server's own, or a pool's.
pub enum EchoBuf {
    /// The server's buffer, cut to the bytes to echo.
    Owned(Prefix<Vec<u8>>),
    /// A pool's buffer, holding the bytes a pooled receive brought.
    Pooled(PooledBuf),
}

impl From<PooledBuf> for EchoBuf {
    fn from(buf: PooledBuf) -> EchoBuf {
        EchoBuf::Pooled(buf)
    }
}

// SAFETY: each variant is an `IoBuf` whose bytes stay in place when it moves (heap or pool
// memory); the enum forwards to it, so the pointer and length are the variant's own.
unsafe impl IoBuf for EchoBuf {
    fn as_ptr(&self) -> *const u8 {
        match self {
            EchoBuf::Owned(buf) => buf.as_ptr(),
            EchoBuf::Pooled(buf) => IoBuf::as_ptr(buf),
        }
    }
    fn len(&self) -> usize {
        match self {
            EchoBuf::Owned(buf) => IoBuf::len(buf),
            EchoBuf::Pooled(buf) => IoBuf::len(buf),
        }
    }
}

// SAFETY: as for `IoBuf`; both variants are writable buffers of bytes.
unsafe impl IoBufMut for EchoBuf {
    fn as_mut_ptr(&mut self) -> *mut u8 {
        match self {
            EchoBuf::Owned(buf) => buf.as_mut_ptr(),
            EchoBuf::Pooled(buf) => IoBufMut::as_mut_ptr(buf),
        }
    }
}
