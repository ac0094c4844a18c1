//! Provided-buffer rings: the buffers of a pool ([`crate::pool`]) that the kernel picks from
//! when a pooled receive's data arrives (`IORING_REGISTER_PBUF_RING`, Linux 5.19).
//!
//! A buffer ring is an array of (address, length, id) entries in memory shared with the kernel.
//! The kernel takes entries from its head; the program puts buffers back at the tail and
//! publishes the tail with a release store. Giving a buffer back may happen on any thread (the
//! buffer's owner drops it), so the tail is kept under the lock of the ring's list of groups.

use std::alloc::{self, Layout};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Mutex;

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

use crate::error::{codes, Error, Result};
use crate::event::lock;
use crate::pool::PoolMemory;

/// The buffer rings registered with one io_uring.
#[derive(Default)]
pub(super) struct BufRings {
    groups: Mutex<Vec<BufRing>>,
    /// Groups whose pool is gone but that only the ring's owner may unregister, with the
    /// memory of their buffers; `retired_count` says whether there are any without the lock.
    retired: Mutex<Vec<(u16, PoolMemory)>>,
    retired_count: AtomicUsize,
}

/// One registered group.
struct BufRing {
    group: u16,
    /// `entries` ring entries, page-aligned, shared with the kernel.
    entries: *mut BufRingEntry,
    layout: Layout,
    /// The next entry to fill, as the program counts (the kernel wraps it with the mask).
    tail: u16,
    mask: u16,
    /// The buffers: `size` bytes each, from `memory`.
    memory: *mut u8,
    size: usize,
}

// SAFETY: the raw pointers point to memory the ring owns (the entries) or that its pool keeps
// allocated until the group is unregistered; they are used only under the `groups` lock.
unsafe impl Send for BufRing {}

impl BufRings {
    /// Registers `count` buffers of `size` bytes from `memory` as a new group and provides them
    /// all to the kernel.
    ///
    /// # Safety
    /// As [`crate::driver::Ring::register_buffers`].
    pub(super) unsafe fn register(
        &self,
        ring: &IoUring,
        memory: *mut u8,
        size: usize,
        count: u16,
    ) -> Result<u16> {
        // The kernel wants a power of two; the entries beyond `count` stay unused.
        let entries = count.checked_next_power_of_two().unwrap_or(32768);
        let layout = Layout::from_size_align(
            entries as usize * std::mem::size_of::<BufRingEntry>(),
            page_size(),
        )
        .map_err(|_| Error::new(codes::WSAEINVAL))?;
        let mut groups = lock(&self.groups);
        let group = (0..=u16::MAX)
            .find(|g| groups.iter().all(|r| r.group != *g))
            .ok_or_else(|| Error::new(codes::WSAENOBUFS))?;
        // SAFETY: the layout has a non-zero size (at least one entry).
        let ring_memory = unsafe { alloc::alloc_zeroed(layout) } as *mut BufRingEntry;
        if ring_memory.is_null() {
            return Err(Error::new(codes::WSAENOBUFS));
        }
        // SAFETY: the entries are page-aligned, `entries` long and stay allocated until the group
        // is unregistered (`unregister`, or `Drop` when the ring goes).
        let registered = unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(ring_memory as u64, entries, group, 0)
        };
        if let Err(e) = registered {
            // SAFETY: allocated above with this layout; the kernel refused it.
            unsafe { alloc::dealloc(ring_memory as *mut u8, layout) };
            return Err(match e.raw_os_error() {
                // EEXIST: a batching ring's owner claimed it meanwhile.
                Some(libc::EINVAL | libc::EEXIST) | None => {
                    Error::with_errno(codes::WSAEOPNOTSUPP, libc::EOPNOTSUPP)
                }
                Some(errno) => Error::from_errno(errno),
            });
        }
        let mut buf_ring = BufRing {
            group,
            entries: ring_memory,
            layout,
            tail: 0,
            mask: entries - 1,
            memory,
            size,
        };
        for id in 0..count {
            buf_ring.push(id);
        }
        buf_ring.publish();
        groups.push(buf_ring);
        Ok(group)
    }

    /// Gives buffer `id` of `group` back to the kernel.
    pub(super) fn provide(&self, group: u16, id: u16) {
        let mut groups = lock(&self.groups);
        if let Some(ring) = groups.iter_mut().find(|r| r.group == group) {
            ring.push(id);
            ring.publish();
        }
    }

    /// Unregisters `group`; `false` if the kernel refused (its memory then stays registered, and
    /// the entries allocated, until the ring is dropped).
    pub(super) fn unregister(&self, ring: &IoUring, group: u16) -> bool {
        let mut groups = lock(&self.groups);
        let Some(at) = groups.iter().position(|r| r.group == group) else {
            return true;
        };
        if ring.submitter().unregister_buf_ring(group).is_err() {
            return false;
        }
        let buf_ring = groups.swap_remove(at);
        // SAFETY: the kernel let go of the entries when the group was unregistered.
        unsafe { alloc::dealloc(buf_ring.entries as *mut u8, buf_ring.layout) };
        true
    }

    /// Keeps a group that could not be unregistered now, with its memory, for
    /// [`BufRings::unregister_retired`] or the ring's drop.
    pub(super) fn retire(&self, group: u16, memory: PoolMemory) {
        let mut retired = lock(&self.retired);
        retired.push((group, memory));
        self.retired_count.store(retired.len(), Ordering::Release);
    }

    /// Unregisters the retired groups and frees their memory; called by a thread that may
    /// register (a batching ring's owner, in its reaps).
    pub(super) fn unregister_retired(&self, ring: &IoUring) {
        if self.retired_count.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut retired = lock(&self.retired);
        retired.retain(|(group, _)| !self.unregister(ring, *group)); // the memory drops
        self.retired_count.store(retired.len(), Ordering::Release);
    }

    /// Frees the entries of every group, and the retired groups' memory; called when the io_uring
    /// is closed.
    pub(super) fn free_all(&mut self) {
        let groups = self.groups.get_mut().unwrap_or_else(|e| e.into_inner());
        for buf_ring in groups.drain(..) {
            // SAFETY: the io_uring is closed: the kernel no longer reads the entries.
            unsafe { alloc::dealloc(buf_ring.entries as *mut u8, buf_ring.layout) };
        }
        self.retired
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl BufRing {
    /// Fills the entry at the tail with buffer `id`; the kernel sees it after `publish`.
    fn push(&mut self, id: u16) {
        // SAFETY: the index is masked into the ring; the entry at the tail is the program's to
        // write until the tail is published past it.
        let entry = unsafe { &mut *self.entries.add((self.tail & self.mask) as usize) };
        // SAFETY: `id` is one of the pool's buffers, inside its memory.
        entry.set_addr(unsafe { self.memory.add(id as usize * self.size) } as u64);
        entry.set_len(self.size as u32);
        entry.set_bid(id);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the entries pushed so far visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail field lives in the first entry of the ring's page-aligned memory; the
        // kernel reads it with an acquire load, so it is stored atomically with release.
        let tail = unsafe { BufRingEntry::tail(self.entries) } as *const AtomicU16;
        // SAFETY: as above; an aligned u16 in memory that lives as long as the group.
        unsafe { &*tail }.store(self.tail, Ordering::Release);
    }
}

fn page_size() -> usize {
    // SAFETY: plain query.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    }
}
