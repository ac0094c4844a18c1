//! A buffer cut to its first bytes without giving up the rest: [`Prefix`].
//!
//! A buffer's size is its length (`WSABUF.len`), so echoing the bytes a receive filled means
//! sending a buffer whose length is that count. Truncating a `Vec<u8>` does that, but growing it
//! back for the next receive writes every byte it gains; copying the bytes into a buffer of their
//! own costs an allocation and a copy per message. A `Prefix` keeps the whole buffer and a
//! length: the same memory receives, is cut to what arrived, is sent, and is whole again for the
//! next receive, without a byte written by the program.

use crate::buf::{IoBuf, IoBufMut};

/// The first `len` bytes of a buffer, whose length can be set anywhere up to the buffer's own.
///
/// As an [`IoBuf`] it is those bytes: a send sends them, a receive fills at most them.
///
/// ```
/// use overlapped::{IoBuf, Prefix};
///
/// let mut buf = Prefix::new(vec![7u8; 4096]);
/// assert_eq!(buf.len(), 4096); // a receive may fill all of it
/// buf.set_len(64); // it brought 64 bytes: an echo sends those
/// assert_eq!(&buf[..], &[7u8; 64][..]);
/// buf.reset(); // whole again for the next receive
/// assert_eq!(buf.len(), 4096);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Prefix<B> {
    buf: B,
    len: usize,
}

impl<B: IoBuf> Prefix<B> {
    /// The whole of `buf`.
    pub fn new(buf: B) -> Prefix<B> {
        let len = buf.len();
        Prefix { buf, len }
    }

    /// Cuts the prefix to `len` bytes, or to the whole buffer if it has fewer.
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.buf.len());
    }

    /// Makes the prefix the whole buffer again.
    pub fn reset(&mut self) {
        self.len = self.buf.len();
    }

    /// The size of the whole buffer.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// The buffer underneath, whole.
    pub fn get_ref(&self) -> &B {
        &self.buf
    }

    /// Gives back the buffer, whole.
    pub fn into_inner(self) -> B {
        self.buf
    }
}

impl<B: IoBuf + std::ops::Deref<Target = [u8]>> std::ops::Deref for Prefix<B> {
    type Target = [u8];

    /// The prefix's bytes.
    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

// SAFETY: the pointer is the inner buffer's, valid for its length, of which the prefix is never
// more; moving a `Prefix` moves the inner buffer, whose bytes stay put (its own promise). The
// length changes only through `&mut self`, which nobody has while an operation owns the value,
// so `as_ptr` and `len` give the same answers each time they are asked.
unsafe impl<B: IoBuf> IoBuf for Prefix<B> {
    fn as_ptr(&self) -> *const u8 {
        self.buf.as_ptr()
    }

    fn len(&self) -> usize {
        self.len
    }
}

// SAFETY: as above; the inner buffer promises the same address writable for its length, and any
// byte pattern valid there.
unsafe impl<B: IoBufMut> IoBufMut for Prefix<B> {
    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.buf.as_mut_ptr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_length_stays_within_the_buffer() {
        let mut p = Prefix::new(vec![1u8, 2, 3, 4]);
        p.set_len(2);
        assert_eq!(&p[..], &[1, 2]);
        assert_eq!(IoBuf::len(&p), 2);
        p.set_len(10);
        assert_eq!(IoBuf::len(&p), 4, "cut to the buffer's own length");
        p.set_len(0);
        assert!(IoBuf::is_empty(&p));
        p.reset();
        assert_eq!(&p[..], &[1, 2, 3, 4]);
        assert_eq!(p.capacity(), 4);
        assert_eq!(p.into_inner(), vec![1, 2, 3, 4]);
    }

    #[test]
    fn the_pointer_is_the_buffers() {
        let mut p = Prefix::new(vec![0u8; 8]);
        let at = p.get_ref().as_ptr();
        p.set_len(3);
        assert_eq!(IoBuf::as_ptr(&p), at);
        assert_eq!(IoBufMut::as_mut_ptr(&mut p) as *const u8, at);
    }
}
