//! Which keys of a [`KeyTable`](super::KeyTable) have a version older than
//! the table's first one: what lets a lookup as of an earlier time skip the
//! table without reading its hash table.
//!
//! The active segment holds the newest events, so most lookups of a
//! history ask about a time before its first one. But events arrive late:
//! a few of its versions are older than that, and the segment's event-time
//! range reaches back to the oldest of them, so the time range alone
//! cannot rule the table out. Reading the key's bucket and slot to learn
//! it has no such version costs two dependent cache misses in a table of
//! megabytes. Here a key's late versions set two bits of a Bloom filter
//! of 8 KiB (allocated with the first late version, cleared with the
//! table), which a lookup tests instead: a key it rules out has no version
//! as old as the lookup asks for. A key it lets through is looked up as
//! before.

/// Words of the filter: 64 Ki bits, 8 KiB. A few thousand late keys keep
/// its false positives to a few percent; more only make it rule out less.
const WORDS: usize = 1024;

/// The keys with a version older than the table's first, by their 32-bit
/// table hash ([`super::KeyTable::hash32`]).
#[derive(Debug, Clone)]
pub(super) struct LateKeys {
    /// Event time of the table's first version; `i64::MAX` while it has none.
    floor: i64,
    /// The filter; `None` until a version older than `floor` arrives.
    bits: Option<Box<[u64]>>,
}

impl Default for LateKeys {
    fn default() -> LateKeys {
        LateKeys {
            floor: i64::MAX,
            bits: None,
        }
    }
}

/// The two bits of the filter for a key's hash.
fn bits_of(hash: u32) -> [usize; 2] {
    let x = u64::from(hash).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mask = WORDS * 64 - 1;
    [(x >> 48) as usize & mask, (x >> 24) as usize & mask]
}

impl LateKeys {
    /// Records a version pushed to the table (`first`: the table had none).
    #[inline]
    pub(super) fn push(&mut self, hash: u32, event_time: i64, first: bool) {
        if first {
            self.floor = event_time;
        } else if event_time < self.floor {
            let bits = self
                .bits
                .get_or_insert_with(|| vec![0u64; WORDS].into_boxed_slice());
            for b in bits_of(hash) {
                bits[b / 64] |= 1 << (b % 64);
            }
        }
    }

    /// Whether the key with this hash may have a version with event time
    /// at most `as_of`: `false` only when it surely has none.
    #[inline]
    pub(super) fn may_have(&self, hash: u32, as_of: i64) -> bool {
        if as_of >= self.floor {
            return true;
        }
        // Every version at or before `as_of` is older than the first one,
        // so its key set the bits.
        self.bits.as_ref().is_some_and(|bits| {
            bits_of(hash)
                .iter()
                .all(|&b| bits[b / 64] & (1 << (b % 64)) != 0)
        })
    }

    /// Forgets every version, keeping the filter's memory.
    pub(super) fn clear(&mut self) {
        self.floor = i64::MAX;
        if let Some(bits) = &mut self.bits {
            bits.fill(0);
        }
    }
}
