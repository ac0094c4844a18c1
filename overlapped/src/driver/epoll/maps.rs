//! The two lookups of an epoll ring's table, made for their keys: descriptors are small
//! integers, so they index a vector; requests are tagged with the address of their operation's
//! record, so a multiplication spreads them well enough for a hash map, without the cost of a
//! keyed hash that guards against chosen keys.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::os::fd::RawFd;

/// Values by descriptor number.
pub(super) struct ByDescriptor<T> {
    slots: Vec<Option<T>>,
}

impl<T> Default for ByDescriptor<T> {
    fn default() -> Self {
        ByDescriptor { slots: Vec::new() }
    }
}

impl<T> ByDescriptor<T> {
    pub(super) fn get(&self, fd: RawFd) -> Option<&T> {
        self.slots.get(usize::try_from(fd).ok()?)?.as_ref()
    }

    pub(super) fn get_mut(&mut self, fd: RawFd) -> Option<&mut T> {
        self.slots.get_mut(usize::try_from(fd).ok()?)?.as_mut()
    }

    /// Stores `value` for `fd` and returns it. Descriptors are never negative.
    pub(super) fn insert(&mut self, fd: RawFd, value: T) -> &mut T {
        let index = usize::try_from(fd).expect("a descriptor is not negative");
        if index >= self.slots.len() {
            self.slots.resize_with(index + 1, || None);
        }
        self.slots[index].insert(value)
    }

    pub(super) fn remove(&mut self, fd: RawFd) {
        if let Some(slot) = usize::try_from(fd).ok().and_then(|i| self.slots.get_mut(i)) {
            *slot = None;
        }
    }
}

/// Hashes a request's tag: an address, whose low bits are alignment.
#[derive(Default)]
pub(super) struct TagHasher(u64);

impl Hasher for TagHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, tag: u64) {
        // Fibonacci hashing: the golden ratio's multiple moves every bit into the high ones,
        // which hashbrown uses.
        self.0 = tag.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Values by request tag.
pub(super) type ByTag<T> = HashMap<u64, T, BuildHasherDefault<TagHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_index_their_slots() {
        let mut map = ByDescriptor::default();
        assert!(map.get(3).is_none());
        *map.insert(3, 'a') = 'b';
        map.insert(0, 'z');
        assert_eq!(
            (map.get(3), map.get(0), map.get(1)),
            (Some(&'b'), Some(&'z'), None)
        );
        assert!(map.get(-1).is_none() && map.get(1_000).is_none());
        map.remove(3);
        map.remove(1_000);
        assert!(map.get(3).is_none());
    }

    #[test]
    fn aligned_tags_spread_over_the_high_bits() {
        let hash = |tag: u64| {
            let mut h = TagHasher::default();
            h.write_u64(tag);
            h.finish() >> 57
        };
        let buckets: std::collections::HashSet<u64> = (0..64u64)
            .map(|i| hash(0x7f00_0000_0000 + i * 64))
            .collect();
        assert!(
            buckets.len() > 32,
            "{} of 128 top-bit buckets",
            buckets.len()
        );
        let mut map = ByTag::default();
        map.insert(0x10, 1);
        map.insert(0x20, 2);
        assert_eq!((map[&0x10], map[&0x20]), (1, 2));
    }
}
