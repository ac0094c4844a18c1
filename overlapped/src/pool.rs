//! Buffer pools: receives that take a buffer only when their data arrives.
//!
//! A server with many idle connections either pins a receive buffer to each (memory grows with
//! connections) or waits with a zero-byte receive and receives once data is there (one more
//! system call per message). A pooled receive ([`crate::Socket::recv_pooled`]) does neither: it
//! is posted without a buffer, and when data arrives a free buffer of the pool is taken, filled
//! and handed over with the completion, in the overlapped object's buffer list. The buffer goes
//! back to the pool when the [`PooledBuf`] is dropped.
//!
//! On io_uring the pool is a provided-buffer ring registered with the port's ring, and the kernel
//! picks the buffer itself (Linux 5.19); on epoll the pool keeps its free buffers in a list and
//! the receive takes one when the socket is readable. Either way a receive that finds no free
//! buffer when it is tried completes with `WSAENOBUFS` (a completion, notified as any other) and
//! leaves the data queued. A pool belongs to one completion port, and only sockets associated
//! with that port receive from it.

use std::alloc::{self, Layout};
use std::any::Any;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::buf::{IoBuf, IoBufMut};
use crate::driver::Ring;
use crate::error::{codes, Error, Result};
use crate::event::lock;

/// Buffers at most in one pool (the limit of an io_uring provided-buffer ring).
pub const MAX_POOL_BUFFERS: usize = 32768;

/// A set of equal buffers that pooled receives of one port's sockets take from when their data
/// arrives. Cloning makes another handle to the same pool.
#[derive(Clone)]
pub struct BufferPool {
    shared: Arc<PoolShared>,
}

/// A buffer of a [`BufferPool`] that a pooled receive filled: its bytes are the data received.
/// Dropping it gives it back to the pool. It can be sent as it is (an echo), and cut shorter
/// with [`PooledBuf::truncate`].
pub struct PooledBuf {
    shared: Arc<PoolShared>,
    id: u16,
    len: usize,
}

/// A pool buffer that a receive filled, on its way into an overlapped object's buffers, with the
/// function that converts it to their type and adds it.
pub(crate) struct Filled {
    pub(crate) buf: PooledBuf,
    pub(crate) into: IntoBuffers,
}

/// Adds a filled pool buffer to an overlapped object's buffer list (`Option<Vec<B>>`, seen as
/// `Any`), converted to the list's buffer type.
pub(crate) type IntoBuffers = fn(&mut dyn Any, PooledBuf);

/// The [`IntoBuffers`] of objects whose buffers are `B`. A list of another type keeps nothing
/// (the buffer goes back to its pool): `recv_pooled` fixes the type, so it does not happen.
pub(crate) fn push_into<B: From<PooledBuf> + 'static>(bufs: &mut dyn Any, buf: PooledBuf) {
    if let Some(Some(bufs)) = bufs.downcast_mut::<Option<Vec<B>>>() {
        bufs.push(B::from(buf));
    }
}

/// The memory of a pool's buffers, freed when dropped: by the pool, or by its ring once the
/// kernel has let go of it ([`Ring::release_buffers`]).
pub(crate) struct PoolMemory {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: plain heap memory that this value alone frees.
unsafe impl Send for PoolMemory {}

impl Drop for PoolMemory {
    fn drop(&mut self) {
        // SAFETY: allocated in `BufferPool::new` with this layout; whoever dropped this value was
        // the last to refer to the memory (the kernel has let go of it).
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// The pool's memory and where its free buffers are kept.
pub(crate) struct PoolShared {
    /// `count` buffers of `size` bytes, one after the other, in `owned`.
    base: NonNull<u8>,
    /// The memory, until the pool's drop hands it to the ring or frees it.
    owned: Option<PoolMemory>,
    size: usize,
    count: usize,
    /// The ring of the port the pool belongs to: its sockets' receives go there.
    ring: Arc<dyn Ring>,
    free: Free,
    /// Buffers handed to the program and not given back yet.
    out: AtomicUsize,
}

/// Who hands out the free buffers.
enum Free {
    /// The kernel, from the provided-buffer ring of this group on `ring`.
    Kernel { group: u16 },
    /// The pool itself: the ids of the free buffers.
    User(Mutex<Vec<u16>>),
}

// SAFETY: the memory is only reached through `PooledBuf`s (one per buffer id, each the only one
// with its id while it lives) and by the kernel or a receive filling a buffer that no `PooledBuf`
// holds; the free list is behind a mutex.
unsafe impl Send for PoolShared {}
// SAFETY: as above.
unsafe impl Sync for PoolShared {}

impl BufferPool {
    /// A pool of `count` buffers of `size` bytes for the sockets associated with the port whose
    /// ring is `ring`. `WSAEINVAL` for a count or size of 0, or more than [`MAX_POOL_BUFFERS`]
    /// buffers; `WSAEOPNOTSUPP` where the ring cannot take a pool.
    pub(crate) fn new(ring: Arc<dyn Ring>, count: usize, size: usize) -> Result<BufferPool> {
        if count == 0 || count > MAX_POOL_BUFFERS || size == 0 || size > u32::MAX as usize {
            return Err(Error::new(codes::WSAEINVAL));
        }
        let bytes = count
            .checked_mul(size)
            .ok_or_else(|| Error::new(codes::WSAENOBUFS))?;
        // The allocator's own alignment, so that the zeroed memory comes from `calloc`, whose
        // large blocks are pages mapped on first use: a buffer never used costs no memory.
        let layout =
            Layout::from_size_align(bytes, 16).map_err(|_| Error::new(codes::WSAEINVAL))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc::alloc_zeroed(layout) })
            .ok_or_else(|| Error::new(codes::WSAENOBUFS))?;
        let memory = PoolMemory { ptr, layout };
        // SAFETY: the memory holds `count` buffers of `size` bytes and stays allocated until the
        // pool's drop hands it to the ring, which frees it once the group is unregistered.
        let group = unsafe { ring.register_buffers(ptr.as_ptr(), size, count as u16) }?;
        let free = match group {
            Some(group) => Free::Kernel { group },
            None => Free::User(Mutex::new((0..count as u16).rev().collect())),
        };
        Ok(BufferPool {
            shared: Arc::new(PoolShared {
                base: ptr,
                owned: Some(memory),
                size,
                count,
                ring,
                free,
                out: AtomicUsize::new(0),
            }),
        })
    }

    /// The size of each buffer: the most one pooled receive takes.
    pub fn buffer_size(&self) -> usize {
        self.shared.size
    }

    /// The number of buffers.
    pub fn buffer_count(&self) -> usize {
        self.shared.count
    }

    /// The buffers that receives handed over and that are not back yet (a [`PooledBuf`] alive).
    /// Fewer than [`BufferPool::buffer_count`] means that a buffer is free, or filled by a
    /// receive whose completion is on its way (and counted when it is delivered). The count is
    /// sequentially consistent with the program's other such operations: a thread that notes
    /// something and then reads the count, and another that gives a buffer back and then looks
    /// at that note, cannot both miss each other.
    pub fn in_use(&self) -> usize {
        self.shared.out.load(Ordering::SeqCst)
    }

    pub(crate) fn shared(&self) -> &Arc<PoolShared> {
        &self.shared
    }
}

impl fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferPool")
            .field("buffers", &self.shared.count)
            .field("size", &self.shared.size)
            .finish()
    }
}

impl PoolShared {
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    pub(crate) fn ring(&self) -> &Arc<dyn Ring> {
        &self.ring
    }

    /// The provided-buffer group the kernel picks from, if the kernel hands out the buffers.
    pub(crate) fn group(&self) -> Option<u16> {
        match self.free {
            Free::Kernel { group } => Some(group),
            Free::User(_) => None,
        }
    }

    /// The first byte of buffer `id`.
    pub(crate) fn buffer_ptr(&self, id: u16) -> *mut u8 {
        debug_assert!((id as usize) < self.count);
        // SAFETY: `id` is below `count`, so the offset stays inside the allocation.
        unsafe { self.base.as_ptr().add(id as usize * self.size) }
    }

    /// A free buffer's id, taken out of the pool's own list; `None` when none is free or the
    /// kernel hands out the buffers.
    pub(crate) fn take(&self) -> Option<u16> {
        match &self.free {
            Free::User(free) => lock(free).pop(),
            Free::Kernel { .. } => None,
        }
    }

    /// Puts buffer `id` back among the free ones.
    pub(crate) fn give_back(&self, id: u16) {
        match &self.free {
            Free::User(free) => lock(free).push(id),
            Free::Kernel { group } => self.ring.provide_buffer(*group, id),
        }
    }

    /// The buffer `id` that a receive filled with `len` bytes, for its completion; `None` for an
    /// id that is not the pool's.
    pub(crate) fn filled(self: &Arc<Self>, id: u16, len: usize) -> Option<PooledBuf> {
        if id as usize >= self.count {
            return None;
        }
        self.out.fetch_add(1, Ordering::Relaxed);
        Some(PooledBuf {
            shared: self.clone(),
            id,
            len: len.min(self.size),
        })
    }
}

impl Drop for PoolShared {
    fn drop(&mut self) {
        // No receive is pending (each holds the pool) and no buffer is out: the kernel is done
        // with the memory once the group is unregistered, which the ring sees to.
        let Some(memory) = self.owned.take() else {
            return;
        };
        match self.free {
            Free::Kernel { group } => self.ring.release_buffers(group, memory),
            Free::User(_) => drop(memory),
        }
    }
}

impl PooledBuf {
    /// The bytes received.
    pub fn as_slice(&self) -> &[u8] {
        self
    }

    /// Cuts the buffer to its first `len` bytes (no change if it is not longer).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// The size of the pool's buffers: the most this one can hold.
    pub fn capacity(&self) -> usize {
        self.shared.size
    }
}

impl Deref for PooledBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: this buffer's `len` bytes are inside the pool's memory, initialised (zeroed at
        // allocation, then written by receives), and no one else reaches them while this
        // `PooledBuf` holds the id.
        unsafe { std::slice::from_raw_parts(self.shared.buffer_ptr(self.id), self.len) }
    }
}

impl DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `deref`; `&mut self` makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.shared.buffer_ptr(self.id), self.len) }
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        self.shared.give_back(self.id);
        self.shared.out.fetch_sub(1, Ordering::SeqCst);
    }
}

impl fmt::Debug for PooledBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledBuf")
            .field("id", &self.id)
            .field("len", &self.len)
            .finish()
    }
}

// SAFETY: the bytes live in the pool's allocation, which the buffer keeps alive and which does
// not move; `len` stays fixed while an operation holds the buffer (it is owned by the operation's
// overlapped object then).
unsafe impl IoBuf for PooledBuf {
    fn as_ptr(&self) -> *const u8 {
        self.shared.buffer_ptr(self.id)
    }
    fn len(&self) -> usize {
        self.len
    }
}

// SAFETY: as for `IoBuf`; any byte is a valid `u8`.
unsafe impl IoBufMut for PooledBuf {
    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.shared.buffer_ptr(self.id)
    }
}
