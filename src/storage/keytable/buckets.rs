//! The hash table of a [`KeyTable`](super::KeyTable): 8-byte entries (a
//! slot index and 32 bits of the key's hash) in open addressing with linear
//! probing, so the bucket a key's probe starts at is known from its hash
//! alone and can be loaded ahead of the probe.

use super::NONE;

/// A hash-table entry: the key's slot, and the 32 bits of its hash (from which
/// [`Buckets::home`] finds its bucket again when the table grows).
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    pub(super) slot: u32,
    pub(super) hash: u32,
}

impl Entry {
    /// A free bucket: its slot is [`NONE`].
    const FREE: Entry = Entry {
        slot: NONE,
        hash: 0,
    };
}

/// The hash table of a [`KeyTable`](super::KeyTable): open addressing, linear probing, at most
/// three quarters full (a power-of-two number of buckets, doubled as it
/// fills). Keys are never removed.
#[derive(Debug, Default, Clone)]
pub(super) struct Buckets {
    entries: Vec<Entry>,
    /// Entries in use.
    len: usize,
}

impl Buckets {
    /// The bucket where a probe for `hash` starts: low bits of the top half
    /// of a multiplicative hash, which depend on all 32 bits of `hash`.
    #[inline]
    pub(super) fn home(&self, hash: u32) -> usize {
        let spread = (u64::from(hash) << 32 | u64::from(hash)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (spread >> 32) as usize & (self.entries.len().wrapping_sub(1))
    }

    /// Starts loading the bucket where a probe for `hash` starts.
    #[inline]
    pub(super) fn prefetch(&self, hash: u32) {
        if let Some(e) = self.entries.get(self.home(hash)) {
            crate::hint::prefetch(e);
        }
    }

    /// The first slot, in probe order, whose entry has `hash` and for which
    /// `eq` holds.
    #[inline]
    pub(super) fn find(&self, hash: u32, eq: impl Fn(u32) -> bool) -> Option<u32> {
        if self.entries.is_empty() {
            return None;
        }
        let mask = self.entries.len() - 1;
        let mut at = self.home(hash);
        loop {
            let e = self.entries[at];
            if e.slot == NONE {
                return None;
            }
            if e.hash == hash && eq(e.slot) {
                return Some(e.slot);
            }
            at = (at + 1) & mask;
        }
    }

    /// Adds an entry for `slot`, whose key has no entry yet.
    pub(super) fn insert(&mut self, hash: u32, slot: u32) {
        if (self.len + 1) * 4 > self.entries.len() * 3 {
            self.grow();
        }
        self.put(Entry { slot, hash });
        self.len += 1;
    }

    fn put(&mut self, e: Entry) {
        let mask = self.entries.len() - 1;
        let mut at = self.home(e.hash);
        while self.entries[at].slot != NONE {
            at = (at + 1) & mask;
        }
        self.entries[at] = e;
    }

    /// Empties the table, keeping its buckets.
    pub(super) fn clear(&mut self) {
        self.entries.fill(Entry::FREE);
        self.len = 0;
    }

    /// Buckets, used or not.
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Whether no bucket is in use (and none counted as such).
    #[cfg(test)]
    pub(super) fn is_clear(&self) -> bool {
        self.len == 0 && self.entries.iter().all(|e| e.slot == NONE)
    }

    /// Doubles the buckets (16 at first) and puts every entry back.
    fn grow(&mut self) {
        let n = (self.entries.len() * 2).max(16);
        let old = std::mem::replace(&mut self.entries, vec![Entry::FREE; n]);
        for e in old {
            if e.slot != NONE {
                self.put(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_find_every_entry_through_collisions_and_growth() {
        let mut b = Buckets::default();
        assert_eq!(b.find(7, |_| true), None, "empty");
        // Hashes in a few classes, so probes run through entries of other
        // keys with the same 32-bit hash and wrap around the table's end.
        let hash =
            |slot: u32| (slot % 5).wrapping_mul(0x9E37_79B9) + u32::from(slot.is_multiple_of(3));
        for slot in 0..5000u32 {
            b.insert(hash(slot), slot);
            assert!(
                b.len * 4 <= b.entries.len() * 3,
                "at most three quarters full"
            );
            if slot.is_power_of_two() || slot == 4999 {
                for s in 0..=slot {
                    assert_eq!(b.find(hash(s), |x| x == s), Some(s), "{s} after {slot}");
                }
                assert_eq!(b.find(hash(slot), |x| x == slot + 1), None);
                assert_eq!(b.find(0xdead_beef, |_| true), None);
            }
        }
        assert_eq!(b.entries.iter().filter(|e| e.slot != NONE).count(), 5000);
    }
}
