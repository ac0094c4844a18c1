//! Owned buffers, the library's `WSABUF`.
//!
//! An operation takes its buffers by value and hands them back with its result (S15): while the
//! kernel may write them, no safe code can reach them. A buffer's size is its length (`len()`), as
//! a `WSABUF`'s is: a receive into `vec![0; 4]` reads at most 4 bytes, and the byte count of the
//! result says how many of them were filled. A list of buffers is a scatter/gather list, filled or
//! sent in order (S6).

/// Storage whose bytes stay at the same address while the value is moved.
///
/// # Safety
/// `as_ptr` must return a pointer valid for `len` bytes for as long as the value is alive and not
/// accessed through `&mut`, and moving the value must not move the bytes (heap storage, not an
/// inline array). `as_ptr` and `len` must return the same values each time they are called.
pub unsafe trait IoBuf: Send + 'static {
    /// The first byte.
    fn as_ptr(&self) -> *const u8;
    /// The number of bytes: what a send sends, or what a receive may fill.
    fn len(&self) -> usize;
    /// Whether the buffer has no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An [`IoBuf`] the kernel may write into.
///
/// # Safety
/// As for [`IoBuf`]; in addition `as_mut_ptr` returns the same address as `as_ptr`, writable for
/// `len` bytes, and any byte pattern written there is a valid value.
pub unsafe trait IoBufMut: IoBuf {
    /// The first byte, writable.
    fn as_mut_ptr(&mut self) -> *mut u8;
}

// SAFETY: a Vec's bytes live on the heap and do not move when the Vec moves; `len` bytes from
// `as_ptr` are initialised and owned by the Vec.
unsafe impl IoBuf for Vec<u8> {
    fn as_ptr(&self) -> *const u8 {
        self.as_slice().as_ptr()
    }
    fn len(&self) -> usize {
        Vec::len(self)
    }
}

// SAFETY: as for `IoBuf`; any byte is a valid `u8`.
unsafe impl IoBufMut for Vec<u8> {
    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_slice().as_mut_ptr()
    }
}

// SAFETY: a boxed slice's bytes live on the heap and do not move with the box.
unsafe impl IoBuf for Box<[u8]> {
    fn as_ptr(&self) -> *const u8 {
        (**self).as_ptr()
    }
    fn len(&self) -> usize {
        (**self).len()
    }
}

// SAFETY: as for `IoBuf`; any byte is a valid `u8`.
unsafe impl IoBufMut for Box<[u8]> {
    fn as_mut_ptr(&mut self) -> *mut u8 {
        (**self).as_mut_ptr()
    }
}

// SAFETY: static data never moves and is never freed; it is only ever read (no `IoBufMut`).
unsafe impl IoBuf for &'static [u8] {
    fn as_ptr(&self) -> *const u8 {
        (*self).as_ptr()
    }
    fn len(&self) -> usize {
        (*self).len()
    }
}

/// The most buffers one operation may carry: Linux's `IOV_MAX`.
pub const MAX_BUFFERS: usize = libc::UIO_MAXIOV as usize;

/// An operation's I/O vectors. Most operations have one buffer: its vector is held inline, so
/// that starting the operation allocates nothing for it.
pub(crate) enum IoVecs {
    /// No vector, or one.
    Inline(Option<libc::iovec>),
    /// Two or more.
    Heap(Vec<libc::iovec>),
}

impl IoVecs {
    /// No vectors.
    pub(crate) fn new() -> IoVecs {
        IoVecs::Inline(None)
    }

    /// One vector.
    pub(crate) fn one(v: libc::iovec) -> IoVecs {
        IoVecs::Inline(Some(v))
    }

    pub(crate) fn as_slice(&self) -> &[libc::iovec] {
        match self {
            IoVecs::Inline(v) => v.as_slice(),
            IoVecs::Heap(vs) => vs,
        }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [libc::iovec] {
        match self {
            IoVecs::Inline(v) => v.as_mut_slice(),
            IoVecs::Heap(vs) => vs,
        }
    }
}

impl std::ops::Deref for IoVecs {
    type Target = [libc::iovec];
    fn deref(&self) -> &[libc::iovec] {
        self.as_slice()
    }
}

impl std::ops::DerefMut for IoVecs {
    fn deref_mut(&mut self) -> &mut [libc::iovec] {
        self.as_mut_slice()
    }
}

impl FromIterator<libc::iovec> for IoVecs {
    fn from_iter<I: IntoIterator<Item = libc::iovec>>(iter: I) -> IoVecs {
        let mut iter = iter.into_iter();
        let Some(first) = iter.next() else {
            return IoVecs::new();
        };
        let Some(second) = iter.next() else {
            return IoVecs::one(first);
        };
        let mut all = Vec::with_capacity(2 + iter.size_hint().0);
        all.extend([first, second]);
        all.extend(iter);
        IoVecs::Heap(all)
    }
}

/// The I/O vectors describing `bufs` for a send.
pub(crate) fn iovecs_for_send<B: IoBuf>(bufs: &[B]) -> IoVecs {
    bufs.iter()
        .map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect()
}

/// The I/O vectors describing `bufs` for a receive.
pub(crate) fn iovecs_for_recv<B: IoBufMut>(bufs: &mut [B]) -> IoVecs {
    bufs.iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect()
}
