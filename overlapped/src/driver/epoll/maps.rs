//! The two lookups of an epoll ring's table, made for their keys: descriptors are small
//! integers, so they index a vector; requests are tagged with the address of their operation's
//! record, which FxHash spreads well enough for a hash map, without the cost of a keyed hash that
//! guards against chosen keys.

use std::os::fd::RawFd;

use rustc_hash::FxHashMap;

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

/// Values by request tag (an operation record's address).
pub(super) type ByTag<T> = FxHashMap<u64, T>;

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
}
