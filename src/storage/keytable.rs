//! The in-memory key index of one stream in the active segment.
//!
//! Built for the append path and for memory: each key has one fixed-size slot
//! in a dense array (insertion order), holding its first 16 bytes inline; the
//! hash table holds only 8-byte entries pointing at slots, with 32 bits of the
//! key's hash (growth rehashes from those, without reading slots). Keys longer
//! than 16 bytes keep their whole bytes in one arena; versions live in one
//! arena where each version links back to the key's previous one. Indexing a
//! record allocates nothing beyond amortised arena growth.
//!
//! The table is open addressing with linear probing (`Buckets`), so the
//! indexer can start loading a key's bucket, then its slot, records before it
//! pushes the key's version (`KeyTable::bucket_hint`, `KeyTable::locate`).
//!
//! A key costs its 48-byte slot (16 bytes of which are the key itself, for a
//! key of up to 16 bytes), plus 8 bytes per table bucket at a load of
//! 0.375–0.75: 43–53 bytes beyond the key's own bytes. (Keeping the 48-byte
//! slots in the buckets themselves would cost 64–128 bytes a key at these
//! loads.) A version costs 36 bytes. A table that receives a version older
//! than its first one also holds an 8 KiB Bloom filter of the keys with
//! such versions, with which lookups as of a time before its first version
//! skip most keys (`late.rs`).
//!
//! A key whose versions arrived in event-time order has them chained newest
//! first, so a lookup stops at the first one as old as it asks for; its slot
//! names the version before the newest, where a lookup as of an earlier
//! time starts (each step of the walk is a dependent cache miss).

use std::hash::BuildHasher;

use super::index::VersionRef;

mod buckets;
mod late;

use buckets::Buckets;
use late::LateKeys;

const NONE: u32 = u32::MAX;

const INLINE: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Smallest event time of the key's versions here: a lookup as of an
    /// earlier time is answered from the slot alone.
    min_et: i64,
    /// Event time of the newest version by `(event_time, position)`.
    best_et: i64,
    /// The key's first 16 bytes, zero-padded: the whole key when it is no
    /// longer (such a key is stored nowhere else).
    prefix: [u8; INLINE],
    /// Offset of a longer key's bytes in the long-key arena.
    key_off: u32,
    /// A record stores its key's length in 16 bits.
    key_len: u16,
    /// Whether the key's versions arrived in event-time order (none late
    /// against an earlier one here): walking back from `tail` then visits
    /// them newest first by `(event_time, position)`, and a lookup stops at
    /// the first visible one.
    in_order: bool,
    tail: u32,
    /// Out of order: the index of that newest version (a later position
    /// wins ties). In order, that is `tail`, and this is the version before
    /// it ([`NONE`]: none), where a lookup as of an earlier time starts its
    /// walk without reading `tail`'s link first.
    best_or_prev: u32,
}

// A slot is read at random by every push and lookup: keep it at 48 bytes.
const _: () = assert!(std::mem::size_of::<Slot>() == 48);

fn prefix_of(key: &[u8]) -> [u8; INLINE] {
    let mut p = [0u8; INLINE];
    let n = key.len().min(INLINE);
    p[..n].copy_from_slice(&key[..n]);
    p
}

/// A copy of a key table's keys in byte order with their versions (see
/// [`KeyTable::copy_below`] and [`SortedKeys::sort`]).
#[derive(Debug, Default, Clone)]
pub struct SortedKeys {
    /// Key bytes, back to back.
    pub keys: Vec<u8>,
    /// Per key: its bytes in `keys` and its versions in `versions`.
    pub ranges: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
    /// Versions, per key in position order.
    pub versions: Vec<VersionRef>,
}

impl SortedKeys {
    /// Puts the keys in byte order (done after the copy, outside the lock).
    pub fn sort(&mut self) {
        let keys = &self.keys;
        let mut order: Vec<(SortPrefix, usize)> = self
            .ranges
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (SortPrefix::of(&keys[k.clone()]), i))
            .collect();
        let ranges = &self.ranges;
        order.sort_unstable_by(|(a, i), (b, j)| {
            a.cmp_then(b, || {
                keys[ranges[*i].0.clone()].cmp(&keys[ranges[*j].0.clone()])
            })
        });
        self.ranges = order.iter().map(|(_, i)| ranges[*i].clone()).collect();
    }
}

/// A key table's keys in byte order, each with its versions: see
/// [`KeyTable::by_key`].
pub(crate) struct ByKey<'a> {
    table: &'a KeyTable,
    /// Slot numbers in key byte order.
    sorted: Vec<usize>,
    /// Version numbers grouped by slot, in position order inside a group.
    order: Vec<u32>,
    /// Where each slot's group starts in `order`; one more than there are slots.
    starts: Vec<u32>,
}

impl ByKey<'_> {
    /// How many keys there are.
    pub(crate) fn len(&self) -> usize {
        self.sorted.len()
    }

    fn group(&self, i: usize) -> &[u32] {
        let s = self.sorted[i];
        &self.order[self.starts[s] as usize..self.starts[s + 1] as usize]
    }

    /// The `i`-th key in byte order.
    pub(crate) fn key(&self, i: usize) -> &[u8] {
        self.table.key_of(&self.table.slots[self.sorted[i]])
    }

    /// How many versions the `i`-th key has.
    pub(crate) fn version_count(&self, i: usize) -> usize {
        self.group(i).len()
    }

    /// Replaces `out` with the `i`-th key's versions, sorted by
    /// `(event_time, position)`.
    pub(crate) fn versions_into(&self, i: usize, out: &mut Vec<VersionRef>) {
        out.clear();
        out.extend(
            self.group(i)
                .iter()
                .map(|&v| self.table.versions[v as usize]),
        );
        if !out.is_sorted_by_key(VersionRef::order) {
            out.sort_unstable_by_key(VersionRef::order);
        }
    }

    /// Starts loading the `i`-th key's slot and where its version numbers
    /// are: the keys are visited in byte order, slots and versions lie in
    /// arrival order. Called some keys ahead of [`ByKey::prefetch_versions`],
    /// which reads what this loads.
    pub(crate) fn prefetch(&self, i: usize) {
        if let Some(&s) = self.sorted.get(i) {
            crate::hint::prefetch(&self.table.slots[s]);
            if let Some(v) = self.order.get(self.starts[s] as usize) {
                crate::hint::prefetch(v);
            }
        }
    }

    /// Starts loading the `i`-th key's versions (its first 8: a key with
    /// many is read long enough for the hardware to follow).
    pub(crate) fn prefetch_versions(&self, i: usize) {
        if i < self.sorted.len() {
            for &v in self.group(i).iter().take(8) {
                crate::hint::prefetch(&self.table.versions[v as usize]);
            }
        }
    }
}

/// What sorting keys compares first, as integers: a key's first 16 bytes,
/// zero-padded and read big-endian, then its length. For keys of up to 16
/// bytes this orders them exactly as their bytes do; longer keys that tie on
/// both are compared in full.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SortPrefix {
    prefix: u128,
    len: usize,
}

impl SortPrefix {
    /// The sort prefix of `key`.
    pub(crate) fn of(key: &[u8]) -> SortPrefix {
        SortPrefix {
            prefix: u128::from_be_bytes(prefix_of(key)),
            len: key.len(),
        }
    }

    /// Orders two keys by their prefixes, calling `full` to compare the keys
    /// themselves only when both are longer than 16 bytes and tie.
    pub(crate) fn cmp_then(
        &self,
        other: &SortPrefix,
        full: impl FnOnce() -> std::cmp::Ordering,
    ) -> std::cmp::Ordering {
        self.prefix.cmp(&other.prefix).then_with(|| {
            if self.len > INLINE && other.len > INLINE {
                full()
            } else {
                self.len.cmp(&other.len)
            }
        })
    }
}

/// The indexes `0..n` sorted by `(key(i), then(i), i)`, keys in byte order:
/// compared as integer prefixes and lengths ([`SortPrefix`]), with the bytes
/// of long keys read only where they share a prefix. `then` orders each
/// key's items (a time, say); the index breaks the remaining ties.
///
/// The sort moves 32-byte items compared as two integers, (prefix, length
/// and index); only the runs that tie on prefix and length (one key's items,
/// or long keys sharing their first 16 bytes) are then put in order by
/// `then`, or by their bytes.
pub(crate) fn sort_by_key_then<'a, T: Ord + Copy>(
    n: usize,
    key: impl Fn(usize) -> &'a [u8],
    then: impl Fn(usize) -> T,
) -> Vec<usize> {
    const INDEX: u64 = u32::MAX as u64;
    if n > INDEX as usize {
        // Beyond what the packed items index: one sort of everything.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| key(a).cmp(key(b)).then((then(a), a).cmp(&(then(b), b))));
        return order;
    }
    // Long keys sort under one length, one past what the prefix holds: their
    // order is their bytes', not their lengths'.
    let mut order: Vec<(u128, u64)> = (0..n)
        .map(|i| {
            let p = SortPrefix::of(key(i));
            (p.prefix, (p.len.min(INLINE + 1) as u64) << 32 | i as u64)
        })
        .collect();
    order.sort_unstable();
    let index = |o: &(u128, u64)| (o.1 & INDEX) as usize;
    let mut i = 0;
    while i < order.len() {
        let (prefix, len) = (order[i].0, order[i].1 >> 32);
        let mut j = i + 1;
        while j < order.len() && order[j].0 == prefix && order[j].1 >> 32 == len {
            j += 1;
        }
        if j - i > 1 {
            let run = &mut order[i..j];
            if len as usize > INLINE {
                run.sort_by(|a, b| {
                    let (a, b) = (index(a), index(b));
                    key(a).cmp(key(b)).then((then(a), a).cmp(&(then(b), b)))
                });
            } else {
                run.sort_by_key(|o| (then(index(o)), index(o)));
            }
        }
        i = j;
    }
    order.iter().map(index).collect()
}

/// Where [`KeyTable::locate`] found a key, for [`KeyTable::push_located`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Located {
    hash: u32,
    /// The slot of a key with the same hash, not yet compared with the key.
    slot: Option<u32>,
}

/// Keys of one stream mapped to their versions, in position order.
#[derive(Debug, Default, Clone)]
pub struct KeyTable {
    table: Buckets,
    slots: Vec<Slot>,
    /// Bytes of the keys longer than [`INLINE`].
    long_keys: Vec<u8>,
    /// Bytes of all keys, short and long.
    key_bytes: usize,
    versions: Vec<VersionRef>,
    prev: Vec<u32>,
    /// The keys with versions older than the first one.
    late: LateKeys,
    hasher: foldhash::fast::FixedState,
}

impl KeyTable {
    /// The 32 bits of `key`'s hash the table keeps, with which
    /// [`KeyTable::bucket_hint`] and [`KeyTable::locate_hashed`] start.
    pub(crate) fn hash32(&self, key: &[u8]) -> u32 {
        self.hasher.hash_one(key) as u32
    }

    fn key_of<'a>(&'a self, s: &'a Slot) -> &'a [u8] {
        let len = s.key_len as usize;
        if len <= INLINE {
            &s.prefix[..len]
        } else {
            &self.long_keys[s.key_off as usize..s.key_off as usize + len]
        }
    }

    fn matches(long_keys: &[u8], s: &Slot, key: &[u8], prefix: &[u8; INLINE]) -> bool {
        s.key_len as usize == key.len()
            && s.prefix == *prefix
            && (key.len() <= INLINE
                || &long_keys[s.key_off as usize..s.key_off as usize + key.len()] == key)
    }

    /// Appends a version of `key`. Versions must arrive in position order.
    pub fn push(&mut self, key: &[u8], v: VersionRef) {
        let at = self.locate(key);
        self.push_located(key, v, at);
    }

    /// Starts loading the bucket where [`KeyTable::locate_hashed`] of a key
    /// with this hash will look first.
    pub(crate) fn bucket_hint(&self, hash: u32) {
        self.table.prefetch(hash);
    }

    /// The first step of [`KeyTable::push`], which may run a few records
    /// ahead of the rest so that the slot's cache miss overlaps other work:
    /// `key`'s hash, and the slot of the first key with the same 32-bit hash
    /// (checked to be `key` only when the version is pushed), prefetched.
    pub(crate) fn locate(&self, key: &[u8]) -> Located {
        self.locate_hashed(self.hash32(key))
    }

    /// [`KeyTable::locate`] of a key whose [`KeyTable::hash32`] is `hash`.
    pub(crate) fn locate_hashed(&self, hash: u32) -> Located {
        let slot = self.table.find(hash, |_| true);
        if let Some(s) = slot.and_then(|s| self.slots.get(s as usize)) {
            crate::hint::prefetch(s);
        }
        Located { hash, slot }
    }

    /// Appends a version of `key`, located by [`KeyTable::locate`] since the
    /// last version of another key was pushed, or earlier: a key that had no
    /// slot then, or whose slot turns out to be another key's, is looked up
    /// again. Versions must arrive in position order.
    pub(crate) fn push_located(&mut self, key: &[u8], v: VersionRef, at: Located) {
        let idx = self.versions.len() as u32;
        self.versions.push(v);
        let hash = at.hash;
        self.late.push(hash, v.event_time, idx == 0);
        let found = match at.slot {
            Some(s)
                if self.slots.get(s as usize).is_some_and(|slot| {
                    Self::matches(&self.long_keys, slot, key, &prefix_of(key))
                }) =>
            {
                Some(s)
            }
            _ => self.slot_index(key, hash),
        };
        match found {
            Some(at) => {
                let slot = &mut self.slots[at as usize];
                self.prev.push(slot.tail);
                // The new version has the largest position, so it is the newest
                // by (event_time, position) exactly when its event time is not older.
                slot.min_et = slot.min_et.min(v.event_time);
                if v.event_time >= slot.best_et {
                    slot.best_et = v.event_time;
                    // In order: the version before the new one; else the new best.
                    slot.best_or_prev = if slot.in_order { slot.tail } else { idx };
                } else if slot.in_order {
                    // The newest stays the best: from now on it is named here.
                    slot.best_or_prev = slot.tail;
                    slot.in_order = false;
                }
                slot.tail = idx;
            }
            None => {
                self.prev.push(NONE);
                let key_off = if key.len() > INLINE {
                    let off = self.long_keys.len() as u32;
                    self.long_keys.extend_from_slice(key);
                    off
                } else {
                    0
                };
                self.key_bytes += key.len();
                let slot = self.slots.len() as u32;
                self.slots.push(Slot {
                    min_et: v.event_time,
                    best_et: v.event_time,
                    prefix: prefix_of(key),
                    key_off,
                    key_len: u16::try_from(key.len()).expect("a record's key fits 16 bits"),
                    in_order: true,
                    tail: idx,
                    best_or_prev: NONE,
                });
                self.table.insert(hash, slot);
            }
        }
    }

    /// Empties the table, keeping its memory for the next segment's keys
    /// (see [`crate::storage::index::MemIndex::recycle`]).
    pub(crate) fn clear(&mut self) {
        self.table.clear();
        self.slots.clear();
        self.long_keys.clear();
        self.key_bytes = 0;
        self.versions.clear();
        self.prev.clear();
        self.late.clear();
    }

    /// Bytes of all keys.
    pub(crate) fn key_bytes(&self) -> usize {
        self.key_bytes
    }

    /// Versions of all keys.
    pub(crate) fn version_count(&self) -> usize {
        self.versions.len()
    }

    /// Number of distinct keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are no keys.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Smallest position indexed (versions arrive in position order).
    #[must_use]
    pub fn first_position(&self) -> Option<u64> {
        self.versions.first().map(|v| v.position)
    }

    /// The index of `key`'s slot (`hash`: its [`KeyTable::hash32`]), if it has one.
    fn slot_index(&self, key: &[u8], hash: u32) -> Option<u32> {
        let prefix = prefix_of(key);
        self.table.find(hash, |slot| {
            Self::matches(&self.long_keys, &self.slots[slot as usize], key, &prefix)
        })
    }

    fn find_slot(&self, key: &[u8]) -> Option<&Slot> {
        let at = self.slot_index(key, self.hash32(key))?;
        Some(&self.slots[at as usize])
    }

    /// Appends the versions ending at `tail` that are below position `end` to
    /// `out`, in position order (walks the back-links, then reverses).
    fn walk_into(&self, tail: u32, end: u64, out: &mut Vec<VersionRef>) {
        let start = out.len();
        let mut at = tail;
        while at != NONE {
            let v = self.versions[at as usize];
            if v.position < end {
                out.push(v);
            }
            at = self.prev[at as usize];
        }
        out[start..].reverse();
    }

    /// Whether the key whose [`KeyTable::hash32`] is `hash` may have a
    /// version with `event_time <= as_of` here: `false` only when it surely
    /// has none, known without reading the hash table (see `late.rs`), so a
    /// reader can skip loading the key's bucket and slot.
    #[inline]
    pub(crate) fn may_have_visible(&self, hash: u32, as_of: i64) -> bool {
        self.late.may_have(hash, as_of)
    }

    /// The newest version of `key` by `(event_time, position)` among those with
    /// `event_time <= as_of` and `position < end`: the newest one when it
    /// qualifies, else a walk of the key's versions in this segment.
    #[must_use]
    pub fn newest_visible(&self, key: &[u8], as_of: i64, end: u64) -> Option<VersionRef> {
        let hash = self.hash32(key);
        if !self.may_have_visible(hash, as_of) {
            return None;
        }
        self.newest_visible_hashed(key, hash, as_of, end)
    }

    /// [`KeyTable::newest_visible`] with the key's [`KeyTable::hash32`]
    /// already computed, by a reader that hinted its bucket first and has
    /// asked [`KeyTable::may_have_visible`] (it finds the same answer
    /// without, reading the hash table).
    pub(crate) fn newest_visible_hashed(
        &self,
        key: &[u8],
        hash: u32,
        as_of: i64,
        end: u64,
    ) -> Option<VersionRef> {
        let slot = &self.slots[self.slot_index(key, hash)? as usize];
        if slot.min_et > as_of {
            return None; // every version here is after `as_of`
        }
        let best = if slot.in_order {
            slot.tail
        } else {
            slot.best_or_prev
        };
        if slot.best_et <= as_of {
            let best = self.versions[best as usize];
            if best.position < end {
                return Some(best);
            }
        }
        let mut found: Option<VersionRef> = None;
        let mut at = slot.tail;
        if slot.in_order {
            // Newest first by (event_time, position): the first visible one
            // wins. The newest was looked at above; the walk goes on from
            // the version before it, which the slot names.
            at = slot.best_or_prev;
            while at != NONE {
                let v = self.versions[at as usize];
                if v.position < end && v.event_time <= as_of {
                    return Some(v);
                }
                at = self.prev[at as usize];
            }
            return None;
        }
        while at != NONE {
            let v = self.versions[at as usize];
            if v.position < end
                && v.event_time <= as_of
                && found.is_none_or(|f| v.order() > f.order())
            {
                found = Some(v);
            }
            at = self.prev[at as usize];
        }
        found
    }

    /// Appends the versions of `key` below position `end` to `out`, in position
    /// order, without allocating.
    pub fn versions_into(&self, key: &[u8], end: u64, out: &mut Vec<VersionRef>) {
        if let Some(slot) = self.find_slot(key) {
            self.walk_into(slot.tail, end, out);
        }
    }

    /// Every key with its versions below position `end`, flattened and not yet
    /// sorted (see [`SortedKeys::sort`]): a straight copy, so that a reader holds
    /// the index lock only for that. Keys with no such version are left out.
    #[must_use]
    pub fn copy_below(&self, end: u64) -> SortedKeys {
        self.copy_visible(i64::MAX, end)
    }

    /// Like [`KeyTable::copy_below`], but only versions with `event_time <= as_of`:
    /// a key whose every version here is later is skipped from its slot alone,
    /// without walking its chain. This is what a table as of a past time needs
    /// from the active segment, which mostly holds the newest events.
    ///
    /// When few keys have a version as old as `as_of`, their chains are walked
    /// one by one; otherwise every version is labelled with its key in one
    /// pass (`KeyTable::copy_by_pass`).
    #[must_use]
    pub fn copy_visible(&self, as_of: i64, end: u64) -> SortedKeys {
        if as_of < i64::MAX {
            let old_enough = self.slots.iter().filter(|s| s.min_et <= as_of).count();
            if old_enough * 4 < self.slots.len() {
                return self.copy_by_walks(as_of, end);
            }
        }
        self.copy_by_pass(as_of, end)
    }

    /// [`KeyTable::copy_visible`] by walking the chain of each key with a
    /// version at or before `as_of`.
    fn copy_by_walks(&self, as_of: i64, end: u64) -> SortedKeys {
        let mut keys = Vec::new();
        let mut ranges = Vec::new();
        let mut versions = Vec::new();
        for s in &self.slots {
            if s.min_et > as_of {
                continue;
            }
            let start = versions.len();
            self.walk_into(s.tail, end, &mut versions);
            let mut kept = start;
            for i in start..versions.len() {
                if versions[i].event_time <= as_of {
                    versions[kept] = versions[i];
                    kept += 1;
                }
            }
            versions.truncate(kept);
            if versions.len() == start {
                continue;
            }
            let k = keys.len();
            keys.extend_from_slice(self.key_of(s));
            ranges.push((k..keys.len(), start..versions.len()));
        }
        SortedKeys {
            keys,
            ranges,
            versions,
        }
    }

    /// [`KeyTable::copy_visible`] in two passes over all versions.
    fn copy_by_pass(&self, as_of: i64, end: u64) -> SortedKeys {
        let visible = |v: &VersionRef| v.position < end && v.event_time <= as_of;
        let slot_of = self.slot_of_versions();
        let mut starts = vec![0u32; self.slots.len()];
        for (&s, v) in slot_of.iter().zip(&self.versions) {
            if visible(v) {
                starts[s as usize] += 1;
            }
        }
        // Counts become each slot's first place in the copy; keys with no
        // visible version are left out. Sized for everything when nothing is
        // filtered by time (the copy runs under the active index's read lock:
        // no reallocation then).
        let all = as_of == i64::MAX;
        let mut keys = Vec::with_capacity(if all { self.key_bytes } else { 0 });
        let mut ranges = Vec::with_capacity(if all { self.slots.len() } else { 0 });
        let mut total = 0usize;
        for (slot, start) in self.slots.iter().zip(starts.iter_mut()) {
            let count = *start as usize;
            *start = total as u32;
            if count > 0 {
                let k = keys.len();
                keys.extend_from_slice(self.key_of(slot));
                ranges.push((k..keys.len(), total..total + count));
                total += count;
            }
        }
        // Scattered in position order, so each key's run is in position order.
        let mut versions = match self.versions.first() {
            Some(&v) => vec![v; total],
            None => Vec::new(),
        };
        for (v, &s) in self.versions.iter().zip(&slot_of) {
            if visible(v) {
                let at = &mut starts[s as usize];
                versions[*at as usize] = *v;
                *at += 1;
            }
        }
        SortedKeys {
            keys,
            ranges,
            versions,
        }
    }

    /// Each version's slot, in one pass in position order: a slot is made
    /// exactly when a version has no predecessor, so the k-th such version
    /// starts slot k, and any other takes its predecessor's. Those reads are
    /// independent of one another, where walking a key's back-links is a
    /// chain of dependent cache misses.
    fn slot_of_versions(&self) -> Vec<u32> {
        let mut slot_of: Vec<u32> = Vec::with_capacity(self.versions.len());
        let mut made = 0u32;
        for &p in &self.prev {
            let s = if p == NONE {
                made += 1;
                made - 1
            } else {
                slot_of[p as usize]
            };
            slot_of.push(s);
        }
        debug_assert_eq!(made as usize, self.slots.len());
        slot_of
    }

    /// Every key in byte order with its versions, found without copying a
    /// version: what a segment's key index file is encoded from
    /// ([`crate::storage::kidx_encode`]). It takes about 8 bytes a version
    /// and 44 a key while it lives; a copy of the versions took 32 a version.
    pub(crate) fn by_key(&self) -> ByKey<'_> {
        let n = self.slots.len();
        // Each version's slot, counted per slot.
        let slot_of = self.slot_of_versions();
        let mut starts = vec![0u32; n + 1];
        for &s in &slot_of {
            starts[s as usize + 1] += 1;
        }
        for i in 0..n {
            starts[i + 1] += starts[i];
        }
        // Version numbers grouped by slot, position order inside a group.
        let mut next = starts.clone();
        let mut order = vec![0u32; self.versions.len()];
        for (v, &s) in slot_of.iter().enumerate() {
            let at = &mut next[s as usize];
            order[*at as usize] = v as u32;
            *at += 1;
        }
        let sorted = sort_by_key_then(n, |i| self.key_of(&self.slots[i]), |_| ());
        ByKey {
            table: self,
            sorted,
            order,
            starts,
        }
    }

    /// Every key with all its versions (position order), in no particular key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Vec<VersionRef>)> + '_ {
        self.slots.iter().map(|s| {
            let mut vs = Vec::new();
            self.walk_into(s.tail, u64::MAX, &mut vs);
            (self.key_of(s), vs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::record::Op;

    fn v(p: u64) -> VersionRef {
        VersionRef {
            event_time: -(p as i64),
            position: p,
            frame_off: 0,
            rec_off: 0,
            op: Op::Put,
        }
    }

    fn all(t: &KeyTable, key: &[u8]) -> Vec<VersionRef> {
        let mut out = Vec::new();
        t.versions_into(key, u64::MAX, &mut out);
        out
    }

    #[test]
    fn a_cleared_table_keeps_its_memory_and_nothing_else() {
        let mut t = KeyTable::default();
        for p in 0..1000u64 {
            t.push(
                format!("key-{}-and-some-more-bytes", p % 300).as_bytes(),
                v(p),
            );
        }
        let buckets = t.table.capacity();
        t.clear();
        assert!(t.table.is_clear(), "no bucket left in use");
        assert_eq!(t.table.capacity(), buckets, "buckets kept");
        assert!(t.versions.capacity() >= 1000 && t.slots.capacity() >= 300);
        assert!(t.is_empty() && t.key_bytes() == 0 && t.version_count() == 0);
        assert!(t.long_keys.is_empty() && t.prev.is_empty());
        t.push(b"key-1-and-some-more-bytes", v(5000));
        assert_eq!(all(&t, b"key-1-and-some-more-bytes"), vec![v(5000)]);
        assert_eq!(all(&t, b"key-2-and-some-more-bytes"), vec![]);
    }

    #[test]
    fn pushes_located_ahead_find_keys_added_in_between() {
        // A key located before its first version is pushed (no slot yet), and
        // a located slot of another key with the same hash, are both looked
        // up again at the push.
        let mut t = KeyTable::default();
        let early = t.locate(b"k");
        assert!(early.slot.is_none());
        t.push(b"k", v(0));
        t.push_located(b"k", v(1), early);
        assert_eq!(all(&t, b"k"), vec![v(0), v(1)]);
        assert_eq!(t.len(), 1);
        let other = t.locate(b"j");
        let wrong = Located {
            hash: other.hash,
            slot: Some(0), // "k"'s slot
        };
        t.push_located(b"j", v(2), wrong);
        assert_eq!(all(&t, b"j"), vec![v(2)]);
        assert_eq!(all(&t, b"k"), vec![v(0), v(1)]);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn versions_chain_per_key_in_push_order() {
        let mut t = KeyTable::default();
        for p in 0..1000u64 {
            t.push(format!("k{}", p % 7).as_bytes(), v(p));
            // Long keys sharing a 16-byte prefix must stay distinct.
            t.push(format!("a-long-shared-prefix-{}", p % 3).as_bytes(), v(p));
        }
        assert_eq!(t.len(), 10);
        assert_eq!(all(&t, b"a-long-shared-prefix-2").len(), 333);
        let got: Vec<u64> = all(&t, b"k3").iter().map(|v| v.position).collect();
        assert_eq!(got, (0..1000).filter(|p| p % 7 == 3).collect::<Vec<_>>());
        assert_eq!(all(&t, b"nope").len(), 0);
        assert_eq!(t.iter().map(|(_, vs)| vs.len()).sum::<usize>(), 2000);
        assert_eq!(t.first_position(), Some(0));
        // v(p) has event time -p: the newest by (event_time, position) is the first.
        assert_eq!(
            t.newest_visible(b"k3", i64::MAX, u64::MAX)
                .map(|v| v.position),
            Some(3)
        );
        let mut ties = KeyTable::default();
        for p in 0..5 {
            ties.push(
                b"t",
                VersionRef {
                    event_time: 7,
                    ..v(p)
                },
            );
        }
        assert_eq!(
            ties.newest_visible(b"t", i64::MAX, u64::MAX)
                .map(|v| v.position),
            Some(4),
            "later position wins ties"
        );
        let mut empty_key = KeyTable::default();
        empty_key.push(b"", v(5));
        assert_eq!(all(&empty_key, b"").len(), 1);
    }

    /// Keys inline (up to 16 bytes) and in the arena (longer) stay distinct
    /// where zero padding or a shared prefix could confuse them, and every key
    /// is found again, with its exact bytes, after the table has grown many
    /// times (growth rehashes from the entries' stored hash bits).
    #[test]
    fn keys_of_every_length_survive_growth() {
        let mut keys: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"\0".to_vec(),
            b"\0\0".to_vec(),
            b"a".to_vec(),
            b"a\0".to_vec(),
            b"a\0\0".to_vec(),
            [b'x'; 16].to_vec(),
            [b'x'; 17].to_vec(),
            [[b'x'; 16].as_slice(), b"\0"].concat(),
            [[b'x'; 16].as_slice(), b"\0\0"].concat(),
        ];
        let mut rng = crate::rng::Rng(11);
        for i in 0..50_000u64 {
            let len = rng.below(40) as usize;
            let mut k = i.to_le_bytes().to_vec();
            k.resize(len.max(8), 0);
            keys.push(k);
        }
        let mut t = KeyTable::default();
        for (p, k) in keys.iter().enumerate() {
            t.push(k, v(p as u64));
        }
        for (p, k) in keys.iter().enumerate().step_by(7) {
            t.push(k, v((keys.len() + p) as u64));
        }
        assert_eq!(t.len(), keys.len());
        for (p, k) in keys.iter().enumerate() {
            let want: Vec<u64> = if p % 7 == 0 {
                vec![p as u64, (keys.len() + p) as u64]
            } else {
                vec![p as u64]
            };
            let got: Vec<u64> = all(&t, k).iter().map(|v| v.position).collect();
            assert_eq!(got, want, "key {k:?}");
        }
        let mut listed: Vec<Vec<u8>> = t.iter().map(|(k, _)| k.to_vec()).collect();
        listed.sort();
        let mut want = keys.clone();
        want.sort();
        assert_eq!(listed, want);
        let mut copy = t.copy_below(u64::MAX);
        copy.sort();
        let copied: Vec<&[u8]> = copy
            .ranges
            .iter()
            .map(|(k, _)| &copy.keys[k.clone()])
            .collect();
        assert_eq!(copied, want.iter().map(Vec::as_slice).collect::<Vec<_>>());
        assert_eq!(
            copy.keys.capacity(),
            copy.keys.len(),
            "sized exactly up front"
        );
    }

    /// `newest_visible` and `copy_visible` against a brute-force scan, with late and duplicate
    /// event times, every `as_of` around the keys' ranges and every `end`.
    /// The packed sort orders exactly as sorting by `(key, then, index)`:
    /// short and long keys, long keys sharing their first 16 bytes, keys
    /// that are prefixes of others, duplicates with ties in `then`.
    #[test]
    fn sort_by_key_then_matches_a_plain_sort() {
        let mut rng = crate::rng::Rng(21);
        let stems: [&[u8]; 5] = [
            b"",
            b"a",
            b"0123456789abcdef",
            b"0123456789abcdefz",
            b"\xff\xff",
        ];
        for n in [0usize, 1, 2, 17, 500] {
            let keys: Vec<Vec<u8>> = (0..n)
                .map(|_| {
                    let mut k = stems[rng.below(stems.len() as u64) as usize].to_vec();
                    for _ in 0..rng.below(20) {
                        k.push(b"a0z\x00"[rng.below(4) as usize]);
                    }
                    k
                })
                .collect();
            let then: Vec<u8> = (0..n).map(|_| rng.below(3) as u8).collect();
            let got = super::sort_by_key_then(n, |i| &keys[i][..], |i| then[i]);
            let mut want: Vec<usize> = (0..n).collect();
            want.sort_by(|&a, &b| keys[a].cmp(&keys[b]).then((then[a], a).cmp(&(then[b], b))));
            assert_eq!(got, want, "{n} items");
        }
    }

    /// `newest_visible` stops at the first visible version of a key whose
    /// versions arrived in event-time order (ties included); a key with one
    /// late version falls back to the full walk. Both against a brute force.
    #[test]
    fn newest_visible_in_order_chains_match_brute_force() {
        let mut rng = crate::rng::Rng(11);
        let mut t = KeyTable::default();
        let mut all: Vec<(Vec<u8>, VersionRef)> = Vec::new();
        for p in 0..600u64 {
            let k = rng.below(8);
            // Keys 0..6 in order, times tied in threes; key 7 has late versions.
            let late = k == 7 && rng.below(4) == 0;
            let event_time = p as i64 / 3 - if late { 40 } else { 0 };
            let key = format!("key{k}").into_bytes();
            let v = VersionRef {
                event_time,
                position: p,
                frame_off: 0,
                rec_off: 0,
                op: Op::Put,
            };
            t.push(&key, v);
            all.push((key, v));
        }
        let in_order = |k: &str| t.find_slot(k.as_bytes()).unwrap().in_order;
        assert!((0..7).all(|k| in_order(&format!("key{k}"))));
        assert!(!in_order("key7"));
        check_newest_visible(&t, &all, 8, -50..210, &[0, 1, 100, 333, 599, 600, u64::MAX]);
    }

    /// In-order keys of one to six versions, ties and wide gaps between
    /// their event times included, looked up at, just before and just after
    /// every event time, below every position: the walk that starts from the
    /// version the slot names before the newest, against a brute force.
    #[test]
    fn in_order_walks_from_the_version_before_the_newest_match_brute_force() {
        const WIDE: i64 = 1 << 33;
        let mut rng = crate::rng::Rng(21);
        let mut t = KeyTable::default();
        let mut all: Vec<(Vec<u8>, VersionRef)> = Vec::new();
        let mut times = vec![i64::MIN, i64::MAX];
        let mut next_et = [0i64; 6];
        for p in 0..60u64 {
            let k = rng.below(6) as usize;
            if all
                .iter()
                .filter(|(key, _)| *key == format!("key{k}").into_bytes())
                .count()
                > k
            {
                continue; // key k gets k + 1 versions
            }
            next_et[k] += match rng.below(3) {
                0 => 0, // a tie
                1 => 1 + rng.below(5) as i64,
                _ => WIDE + rng.below(5) as i64,
            };
            let v = VersionRef {
                event_time: next_et[k],
                position: p,
                frame_off: 0,
                rec_off: 0,
                op: Op::Put,
            };
            let key = format!("key{k}").into_bytes();
            t.push(&key, v);
            all.push((key, v));
            times.extend([v.event_time - 1, v.event_time, v.event_time + 1]);
        }
        assert!((0..6).all(|k| t.find_slot(format!("key{k}").as_bytes()).unwrap().in_order));
        let ends: Vec<u64> = (0..=60).chain([u64::MAX]).collect();
        check_newest_visible(&t, &all, 6, times.iter().copied(), &ends);
    }

    #[test]
    fn newest_visible_matches_brute_force() {
        let mut rng = crate::rng::Rng(5);
        let mut t = KeyTable::default();
        let mut all_versions: Vec<(Vec<u8>, VersionRef)> = Vec::new();
        for p in 0..400u64 {
            // Keys appear over time, so that as of an early time few have
            // a version (the copy then walks their chains).
            let key = format!("key{}", rng.below(3 + p / 50)).into_bytes();
            let v = VersionRef {
                event_time: p as i64 / 2 - rng.below(3) as i64 * rng.below(60) as i64,
                position: p,
                frame_off: 0,
                rec_off: 0,
                op: Op::Put,
            };
            t.push(&key, v);
            all_versions.push((key, v));
        }
        for as_of in [-70, -1, 0, 3, 50, 120, 199, 200, i64::MAX] {
            for (end, how) in [0, 57, 400, u64::MAX]
                .into_iter()
                .flat_map(|end| [(end, 0), (end, 1), (end, 2)])
            {
                let copy = match how {
                    0 => t.copy_visible(as_of, end),
                    1 => t.copy_by_walks(as_of, end),
                    _ => t.copy_by_pass(as_of, end),
                };
                let mut got: Vec<(Vec<u8>, Vec<VersionRef>)> = copy
                    .ranges
                    .iter()
                    .map(|(k, v)| {
                        (
                            copy.keys[k.clone()].to_vec(),
                            copy.versions[v.clone()].to_vec(),
                        )
                    })
                    .collect();
                got.sort_by(|a, b| a.0.cmp(&b.0));
                let mut want: Vec<(Vec<u8>, Vec<VersionRef>)> = Vec::new();
                for (key, v) in &all_versions {
                    if v.event_time > as_of || v.position >= end {
                        continue;
                    }
                    match want.iter_mut().find(|(k, _)| k == key) {
                        Some((_, vs)) => vs.push(*v),
                        None => want.push((key.clone(), vec![*v])),
                    }
                }
                want.sort_by(|a, b| a.0.cmp(&b.0));
                assert_eq!(got, want, "copy_visible({as_of}, {end}), way {how}");
            }
        }
        check_newest_visible(
            &t,
            &all_versions,
            10,
            -70..210,
            &[0, 1, 57, 200, 399, 400, u64::MAX],
        );
    }

    /// `newest_visible` of keys `key0..` against a brute force over `all`
    /// (key, version), at every time of `times` and every end of `ends`.
    fn check_newest_visible(
        t: &KeyTable,
        all: &[(Vec<u8>, VersionRef)],
        keys: usize,
        times: impl Iterator<Item = i64> + Clone,
        ends: &[u64],
    ) {
        for k in 0..keys {
            let key = format!("key{k}").into_bytes();
            for as_of in times.clone() {
                for &end in ends {
                    let want = all
                        .iter()
                        .filter(|(kk, v)| *kk == key && v.event_time <= as_of && v.position < end)
                        .map(|(_, v)| *v)
                        .max_by_key(VersionRef::order);
                    assert_eq!(
                        t.newest_visible(&key, as_of, end),
                        want,
                        "{k} {as_of} {end}"
                    );
                }
            }
        }
    }

    /// The newest version of `key` with `event_time <= as_of`, by brute force.
    fn newest_by_hand(
        pushed: &[(Vec<u8>, VersionRef)],
        key: &[u8],
        as_of: i64,
    ) -> Option<VersionRef> {
        pushed
            .iter()
            .filter(|(k, v)| k == key && v.event_time <= as_of)
            .map(|(_, v)| *v)
            .max_by_key(VersionRef::order)
    }

    #[test]
    fn lookups_before_the_first_version_find_late_versions_and_rule_out_the_rest() {
        // Mostly in time order from 1000 (the first version on time), a
        // tenth late by up to 500, a quarter of those 900 more: the filter
        // rules a key out only when it has no version that old.
        let mut rng = crate::rng::Rng(31);
        let mut t = KeyTable::default();
        let mut pushed = Vec::new();
        for p in 0..3000u64 {
            let key = format!("key{}", rng.below(700)).into_bytes();
            let mut et = 1000 + p as i64;
            if p > 0 && rng.below(10) == 0 {
                et -= rng.below(500) as i64 + if rng.below(4) == 0 { 900 } else { 0 };
            }
            let v = VersionRef {
                event_time: et,
                ..v(p)
            };
            t.push(&key, v);
            pushed.push((key, v));
        }
        let (mut ruled_out, mut late_found) = (0, 0);
        for k in 0..720 {
            let key = format!("key{k}").into_bytes();
            for as_of in [0, 150, 400, 700, 990, 999, 1000, 1001, 2500, 5000] {
                let want = newest_by_hand(&pushed, &key, as_of);
                assert_eq!(
                    t.newest_visible(&key, as_of, u64::MAX),
                    want,
                    "key{k} as of {as_of}"
                );
                if !t.may_have_visible(t.hash32(&key), as_of) {
                    assert_eq!(want, None, "key{k} ruled out as of {as_of}");
                    ruled_out += 1;
                } else if as_of < 1000 && want.is_some() {
                    // Before the first version: let through by the filter.
                    late_found += 1;
                }
            }
        }
        // The filter ruled keys out, and let through late versions older
        // than the first.
        assert!(
            ruled_out > 2000 && late_found > 100,
            "{ruled_out} {late_found}"
        );
        assert_eq!(pushed[0].1.event_time, 1000, "the first version is on time");
    }

    #[test]
    fn an_empty_or_cleared_table_rules_out_every_key_before_its_first_version() {
        let mut t = KeyTable::default();
        assert!(!t.may_have_visible(t.hash32(b"k"), i64::MAX - 1));
        t.push(
            b"k",
            VersionRef {
                event_time: 100,
                ..v(0)
            },
        );
        t.push(
            b"late",
            VersionRef {
                event_time: 10,
                ..v(1)
            },
        );
        assert!(t.may_have_visible(t.hash32(b"late"), 10));
        assert_eq!(
            t.newest_visible(b"late", 10, u64::MAX).map(|v| v.position),
            Some(1)
        );
        // Cleared, then filled with later versions only: "late" is gone,
        // from the filter too.
        t.clear();
        assert!(!t.may_have_visible(t.hash32(b"k"), 150), "no first version");
        assert!(!t.may_have_visible(t.hash32(b"late"), 50));
        t.push(
            b"k",
            VersionRef {
                event_time: 200,
                ..v(2)
            },
        );
        assert!(!t.may_have_visible(t.hash32(b"late"), 50));
        assert!(!t.may_have_visible(t.hash32(b"k"), 150));
        assert!(t.may_have_visible(t.hash32(b"k"), 200));
        assert_eq!(t.newest_visible(b"late", 50, u64::MAX), None);
    }
}
