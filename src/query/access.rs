//! How a multi-key query reaches a stream's versions: by probing the key
//! indexes key by key, or by one sequential sweep of the stream.
//!
//! Probing costs a lookup per key index per key plus a random read per version
//! whose value is needed; sweeping costs a sequential pass over every record.
//! Joins and windows over many requests touch most keys, and there the sweep
//! wins by several times (see the README's performance section).

use bytes::Bytes;
use foldhash::fast::FixedState;
use std::hash::BuildHasher;

pub(crate) use crate::storage::cores;
use crate::storage::frame::RawRecord;
use crate::storage::index::VersionRef;
use crate::storage::sweep::SweepRange;
use crate::storage::view::View;
use crate::Result;

/// How joins and windows reach a stream's versions. The default chooses by
/// estimated cost; forcing a path is for measuring and testing: both give the
/// same answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessPath {
    /// Estimate both costs from the key indexes' sizes and take the cheaper.
    #[default]
    Auto,
    /// Probe the key indexes key by key, reading values where they lie.
    Probe,
    /// One sequential pass over the stream per core, parsing values as they
    /// stream past.
    Sweep,
    /// Windows only: read the field's column ([`crate::Db::build_column`])
    /// and the log after it, and fail if there is no column the window can
    /// read. `Auto` reads a column whenever one can serve; `Probe` and
    /// `Sweep` never do. Joins treat this as `Auto`.
    Column,
}

/// Costs measured on the benchmark machine (2M events over 100k keys, warm,
/// `examples/profile_window.rs`), in ns: one key-index probe, and one swept
/// record through grouping, per thread. Relative, not absolute: set so the
/// estimates order the two paths as measured (a window over 63k of the keys,
/// 3 sealed segments: probe 124–137 ms, sweep 101–111 ms).
const PROBE_NS: u64 = 400;
const SWEEP_NS: u64 = 215;

/// What a query does with each version of a probed key, in ns: a window reads
/// and parses every value in its span (a random read, prefetched a few keys
/// ahead), a join only gathers the index entries and reads one value per
/// request.
pub(crate) const WINDOW_VERSION_NS: u64 = 130;
pub(crate) const JOIN_VERSION_NS: u64 = 15;

/// How many keys a probing join or window reads ahead of the one it
/// answers (see [`read_ahead`]).
const PROBE_KEYS_AHEAD: usize = 2;

/// How many keys ahead of those it reads a probing join or window starts
/// their key lookups (see [`read_ahead`]).
const PROBE_LOOKUPS_AHEAD: usize = 4;

/// Answers keys `0..n` in order, as a probing join or window does, so the
/// cache misses of one key's lookups and values overlap those of the next
/// keys': `answer(k, x)` gets what `load(k)` returned
/// [`PROBE_KEYS_AHEAD`] keys earlier (`load` gathers a key's versions and
/// starts loading the records it will read), and `hint(k)` (starting a
/// key's lookups: [`View::prefetch_key`]) runs [`PROBE_LOOKUPS_AHEAD`] keys
/// before `load(k)`. Stops at the first error.
pub(crate) fn read_ahead<T>(
    n: usize,
    mut hint: impl FnMut(usize),
    mut load: impl FnMut(usize) -> Result<T>,
    mut answer: impl FnMut(usize, T) -> Result<()>,
) -> Result<()> {
    let mut ahead = std::collections::VecDeque::with_capacity(PROBE_KEYS_AHEAD + 1);
    for k in 0..n {
        let hinted = k + PROBE_KEYS_AHEAD + PROBE_LOOKUPS_AHEAD;
        if hinted < n {
            hint(hinted);
        }
        while ahead.len() <= PROBE_KEYS_AHEAD && k + ahead.len() < n {
            ahead.push_back(load(k + ahead.len())?);
        }
        // Never empty: the loop above has just loaded key `k` if it was not.
        let loaded = match ahead.pop_front() {
            Some(loaded) => loaded,
            None => load(k)?,
        };
        answer(k, loaded)?;
    }
    Ok(())
}

/// Threads a sweep over `records` records uses: one per available core, up
/// to 8, each with at least 256k records.
pub(crate) fn sweep_threads(records: u64) -> usize {
    cores().min(8).min((records / 262_144) as usize).max(1)
}

/// Whether touching `keys` distinct keys of `stream`, at `version_ns` per
/// version of a probed key, is cheaper as one sweep of the stream (or the
/// path is forced).
pub(crate) fn prefer_sweep(
    path: AccessPath,
    view: &View,
    stream: &str,
    keys: usize,
    version_ns: u64,
) -> Result<bool> {
    match path {
        AccessPath::Probe => return Ok(false),
        AccessPath::Sweep => return Ok(true),
        AccessPath::Auto | AccessPath::Column => {}
    }
    let (merged, rest) = view.state().key_sources();
    let mut stream_keys = 0usize;
    for m in &merged {
        stream_keys = stream_keys.max(m.key_count(stream));
    }
    for s in rest {
        stream_keys = stream_keys.max(s.keys()?.key_count(stream));
    }
    let sources = (merged.len() + rest.len() + 1) as u64;
    let records = view.end_position();
    let per_key = records / stream_keys.max(1) as u64;
    let probe = keys as u64 * (sources * PROBE_NS + per_key * version_ns);
    let sweep = records.saturating_mul(SWEEP_NS) / sweep_threads(records) as u64;
    Ok(sweep < probe)
}

/// Distinct keys, in the order given, numbered from 0.
///
/// Built for a probe per swept record, where cache misses are the whole cost:
/// an open-addressing table whose 32-byte slots hold the key's hash, its id
/// and its first 16 bytes, so a probe for a short key costs one cache line
/// (longer keys compare their tail in a dense arena).
pub(crate) struct KeySet {
    slots: Vec<Slot>,
    mask: usize,
    arena: Vec<u8>,
    spans: Vec<(u32, u32)>,
    hasher: FixedState,
}

#[derive(Clone, Copy, Default)]
#[repr(align(32))]
struct Slot {
    hash: u64,
    /// Id + 1; 0 marks an empty slot.
    id1: u32,
    len: u32,
    head: [u8; 16],
}

fn head(key: &[u8]) -> [u8; 16] {
    let mut h = [0u8; 16];
    let n = key.len().min(16);
    h[..n].copy_from_slice(&key[..n]);
    h
}

/// How many records ahead of its lookup a [`KeySet::sweep`] starts loading
/// a key's slot, and ahead of the record's delivery its lookup is done.
const LOOKUPS_AHEAD: usize = 8;

/// A record on its way through [`KeySet::sweep_hinted`].
#[derive(Clone, Copy)]
struct Staged<'a> {
    record: RawRecord<'a>,
    version: VersionRef,
    hash: u64,
    /// The key's id, once looked up and found.
    id: Option<usize>,
}

impl KeySet {
    /// Numbers `keys`, which must be distinct.
    pub(crate) fn new<'a>(keys: impl ExactSizeIterator<Item = &'a Bytes>) -> KeySet {
        let cap = (keys.len() * 2).next_power_of_two().max(16);
        let mut set = KeySet {
            slots: vec![Slot::default(); cap],
            mask: cap - 1,
            arena: Vec::new(),
            spans: Vec::with_capacity(keys.len()),
            hasher: FixedState::default(),
        };
        for k in keys {
            let id = set.spans.len() as u32;
            set.spans.push((set.arena.len() as u32, k.len() as u32));
            set.arena.extend_from_slice(k);
            let hash = set.hasher.hash_one(&k[..]);
            let mut i = hash as usize & set.mask;
            while set.slots[i].id1 != 0 {
                i = (i + 1) & set.mask;
            }
            set.slots[i] = Slot {
                hash,
                id1: id + 1,
                len: k.len() as u32,
                head: head(k),
            };
        }
        set
    }

    /// The id of `key`, if it is in the set.
    #[cfg(test)]
    pub(crate) fn get(&self, key: &[u8]) -> Option<usize> {
        self.get_hashed(key, self.hash(key))
    }

    /// The hash [`KeySet::get_hashed`] wants for `key`.
    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Starts loading the slot where a lookup of a key with this hash begins.
    fn prefetch(&self, hash: u64) {
        crate::hint::prefetch(&self.slots[hash as usize & self.mask]);
    }

    /// The id of `key`, whose [`KeySet::hash`] is `hash`, if it is in the set.
    fn get_hashed(&self, key: &[u8], hash: u64) -> Option<usize> {
        let mut i = hash as usize & self.mask;
        loop {
            let s = &self.slots[i];
            if s.id1 == 0 {
                return None;
            }
            if s.hash == hash && s.len as usize == key.len() && s.head == head(key) {
                let id = s.id1 - 1;
                if key.len() <= 16 {
                    return Some(id as usize);
                }
                let (off, len) = self.spans[id as usize];
                if self.arena[off as usize..(off + len) as usize] == *key {
                    return Some(id as usize);
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    /// How many keys there are.
    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }

    /// Sweeps `range` and calls `f(acc, id, record, version)` for each record
    /// of a key in the set, on up to `parts` threads, each sweeping an equal
    /// share of the positions into its own accumulator from `init`. The
    /// accumulators come back in position order; within one, records arrive in
    /// position order.
    pub(crate) fn sweep<T: Send>(
        &self,
        view: &View,
        range: SweepRange<'_>,
        parts: usize,
        init: impl Fn() -> T + Sync,
        f: impl Fn(&mut T, usize, &RawRecord<'_>, VersionRef) + Sync,
    ) -> Result<Vec<T>> {
        self.sweep_hinted(view, range, parts, init, |_| {}, f)
    }

    /// [`KeySet::sweep`] that calls `found(id)` a few records before `f`
    /// receives a record of key `id`, so `f`'s reads for the key (per-key
    /// data, in no useful order) can start loading first.
    ///
    /// Each record is hashed and its slot prefetched as it arrives, looked up
    /// when the record [`LOOKUPS_AHEAD`] after it arrives, and handed to `f`
    /// when the one twice as far does. The set rarely fits in a core's own
    /// caches, and a lookup whose answer decides a branch (a third of the
    /// time the other way) otherwise waits out its miss alone.
    pub(crate) fn sweep_hinted<T: Send>(
        &self,
        view: &View,
        range: SweepRange<'_>,
        parts: usize,
        init: impl Fn() -> T + Sync,
        found: impl Fn(usize) + Sync,
        f: impl Fn(&mut T, usize, &RawRecord<'_>, VersionRef) + Sync,
    ) -> Result<Vec<T>> {
        const D: usize = LOOKUPS_AHEAD;
        const RING: usize = 2 * LOOKUPS_AHEAD;
        let end = range.end.min(view.end_position());
        let parts = parts.max(1) as u64;
        let share = end.saturating_sub(range.start).div_ceil(parts).max(1);
        let part = |k: u64| -> Result<T> {
            let mut acc = init();
            let start = range.start.saturating_add(k * share);
            let range = SweepRange {
                start,
                end: start.saturating_add(share).min(end),
                ..range
            };
            let look = |s: &mut Staged<'_>| {
                s.id = self.get_hashed(s.record.key, s.hash);
                if let Some(id) = s.id {
                    found(id);
                }
            };
            view.sweep_frames(range, |frame| {
                // Record `j` of the frame is in `ring[j % RING]` until
                // record `j + RING` arrives.
                let mut ring: [Option<Staged<'_>>; RING] = [None; RING];
                let mut n = 0usize;
                let deliver = |acc: &mut T, s: Option<Staged<'_>>| {
                    if let Some(Staged {
                        record,
                        version,
                        id: Some(id),
                        ..
                    }) = s
                    {
                        f(acc, id, &record, version);
                    }
                };
                let more = frame.each(|r, v| {
                    deliver(&mut acc, ring[n % RING].take());
                    let hash = self.hash(r.key);
                    self.prefetch(hash);
                    ring[n % RING] = Some(Staged {
                        record: *r,
                        version: v,
                        hash,
                        id: None,
                    });
                    if let Some(s) = n.checked_sub(D).and_then(|j| ring[j % RING].as_mut()) {
                        look(s);
                    }
                    n += 1;
                    true
                })?;
                for j in n.saturating_sub(D)..n {
                    if let Some(s) = ring[j % RING].as_mut() {
                        look(s);
                    }
                }
                for j in n.saturating_sub(RING)..n {
                    deliver(&mut acc, ring[j % RING].take());
                }
                Ok(more)
            })?;
            Ok(acc)
        };
        if parts == 1 {
            return Ok(vec![part(0)?]);
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = (1..parts).map(|k| scope.spawn(move || part(k))).collect();
            let mut out = vec![part(0)?];
            for h in handles {
                out.push(h.join().expect("sweep thread panicked")?);
            }
            Ok(out)
        })
    }

    /// Every version below `end` of each key, grouped by key id and sorted by
    /// `(event_time, position)` as [`View::versions`] returns them: key `k`'s
    /// are `versions[starts[k]..starts[k + 1]]`.
    pub(crate) fn versions(
        &self,
        view: &View,
        stream: &str,
        end: u64,
    ) -> Result<(Vec<usize>, Vec<VersionRef>)> {
        let range = SweepRange::positions(stream, 0, end);
        let threads = sweep_threads(end.min(view.end_position()));
        let parts = self.sweep(view, range, threads, Vec::new, |acc, id, _, v| {
            acc.push((id as u32, v));
        })?;
        let (starts, mut versions) = group_by_key(&parts, self.len());
        drop(parts);
        for k in 0..self.len() {
            versions[starts[k]..starts[k + 1]].sort_by_key(VersionRef::order);
        }
        Ok((starts, versions))
    }
}

/// Groups `(key id, item)` pairs from a sweep by key id with a counting sort,
/// keeping their order within a key: key `k`'s items are
/// `items[starts[k]..starts[k + 1]]`. Appending during the sweep and grouping
/// after costs sequential writes; per-key vectors would cost a cache miss per
/// record once the keys outgrow the cache.
pub(crate) fn group_by_key<T: Copy>(parts: &[Vec<(u32, T)>], keys: usize) -> (Vec<usize>, Vec<T>) {
    let mut starts = vec![0usize; keys + 1];
    for &(id, _) in parts.iter().flatten() {
        starts[id as usize + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let Some(&(_, filler)) = parts.iter().flatten().next() else {
        return (starts, Vec::new());
    };
    // Every slot is overwritten: each key's range is filled in order.
    let mut fill = starts.clone();
    let mut items = vec![filler; starts[keys]];
    for &(id, item) in parts.iter().flatten() {
        let at = &mut fill[id as usize];
        items[*at] = item;
        *at += 1;
    }
    (starts, items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::storage::meta::Compression;
    use crate::{Batch, Db};

    /// A log of several segments (some compressed frames), two streams, late
    /// events, and keys of several lengths.
    fn db(dir: &std::path::Path, compression: Compression) -> Db {
        let db = Db::builder(dir)
            .segment_size(8192)
            .compression(compression)
            .open()
            .unwrap();
        let w = db.writer();
        let mut rng = Rng(3);
        for b in 0..40 {
            let mut batch = Batch::new();
            for i in 0..25 {
                let n = b * 25 + i;
                let key = format!(
                    "key-{}{}",
                    rng.below(30),
                    "x".repeat(rng.below(20) as usize % 3 * 9)
                );
                let t = n as i64 * 10 - if rng.below(5) == 0 { 300 } else { 0 };
                let stream = if rng.below(3) == 0 { "other" } else { "s" };
                batch
                    .put_at(stream, &key, format!("{{\"v\":{n}}}"), t)
                    .unwrap();
            }
            w.commit(batch).unwrap();
        }
        db
    }

    #[test]
    fn key_set_finds_exactly_its_keys() {
        let keys: Vec<Bytes> = (0..500)
            .map(|i| Bytes::from(format!("k{i}{}", "y".repeat(i % 40))))
            .collect();
        let set = KeySet::new(keys.iter());
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(set.get(k), Some(i));
            let mut other = k.to_vec();
            other.push(b'!');
            assert_eq!(set.get(&other), None);
            assert_eq!(
                set.get(&k[..k.len() - 1]),
                keys.iter().position(|x| x[..] == k[..k.len() - 1])
            );
        }
        assert_eq!(set.get(b""), None);
    }

    #[test]
    fn hinted_sweeps_announce_each_record_before_handing_it_over() {
        // Frames holding fewer records of the stream than the ring's stages,
        // as many, and more; compressed and not; ranges ending mid-frame.
        for compression in [Compression::None, Compression::Zstd(1)] {
            let dir = tempfile::tempdir().unwrap();
            let db = Db::builder(dir.path())
                .compression(compression)
                .open()
                .unwrap();
            let w = db.writer();
            let mut rng = Rng(5);
            let mut n = 0u64;
            for size in [1, 3, 7, 8, 9, 15, 16, 17, 40, 2, 33] {
                let mut batch = Batch::new();
                for _ in 0..size {
                    let key = format!("key-{}", rng.below(12));
                    let stream = if rng.below(4) == 0 { "other" } else { "s" };
                    batch.put_at(stream, &key, "{}", n as i64).unwrap();
                    n += 1;
                }
                w.commit(batch).unwrap();
            }
            let snap = db.snapshot().unwrap();
            let view = snap.view();
            let keys: Vec<Bytes> = (0..12)
                .step_by(2)
                .map(|k| Bytes::from(format!("key-{k}")))
                .collect();
            let set = KeySet::new(keys.iter());
            for end in [u64::MAX, n / 2, 13, 3, 0] {
                let range = SweepRange::positions("s", 0, end);
                // What a plain sweep of the view, filtered by the set, sees.
                let mut want = Vec::new();
                view.sweep(range, |r, v| {
                    if let Some(id) = set.get(r.key) {
                        want.push((id, v.position));
                    }
                })
                .unwrap();
                // (true, id) when announced, (false, id) when handed over.
                let events = std::sync::Mutex::new(Vec::new());
                let got = set
                    .sweep_hinted(
                        view,
                        range,
                        1,
                        Vec::new,
                        |id| events.lock().unwrap().push((true, id)),
                        |acc, id, r, v| {
                            assert_eq!(r.key, &keys[id][..]);
                            events.lock().unwrap().push((false, id));
                            acc.push((id, v.position));
                        },
                    )
                    .unwrap()
                    .concat();
                assert_eq!(got, want, "{compression:?}, end {end}");
                let events = events.into_inner().unwrap();
                let announced: Vec<usize> = events.iter().filter(|e| e.0).map(|e| e.1).collect();
                let handed: Vec<usize> = events.iter().filter(|e| !e.0).map(|e| e.1).collect();
                assert_eq!(announced, handed, "one announcement a record, in order");
                // The k-th hand-over comes after the k-th announcement.
                let mut ahead = 0usize;
                for (announce, _) in &events {
                    if *announce {
                        ahead += 1;
                    } else {
                        assert!(ahead > 0, "handed over before it was announced");
                        ahead -= 1;
                    }
                }
            }
        }
    }

    #[test]
    fn sweeps_in_parts_agree_with_one_sweep_and_with_the_key_indexes() {
        for compression in [Compression::None, Compression::Zstd(1)] {
            let dir = tempfile::tempdir().unwrap();
            let db = db(dir.path(), compression);
            let snap = db.snapshot().unwrap();
            let view = snap.view();
            assert!(view.sealed_segments().len() > 2, "several segments");
            let keys: Vec<Bytes> = (0..30)
                .flat_map(|k| [format!("key-{k}"), format!("key-{k}xxxxxxxxx")])
                .map(Bytes::from)
                .collect();
            let set = KeySet::new(keys.iter());
            for (lo, hi, end) in [(i64::MIN, i64::MAX, u64::MAX), (2000, 6000, 700)] {
                let range = SweepRange {
                    stream: "s",
                    lo,
                    hi,
                    start: 0,
                    end,
                };
                let sweep = |parts| {
                    set.sweep(view, range, parts, Vec::new, |acc, id, r, v| {
                        assert_eq!(r.key, &keys[id][..]);
                        acc.push((id, v));
                    })
                    .unwrap()
                };
                let one: Vec<_> = sweep(1).concat();
                assert!(!one.is_empty());
                for parts in [2, 3, 7, 1000] {
                    assert_eq!(sweep(parts).concat(), one, "{parts} parts");
                }
                assert!(one.windows(2).all(|w| w[0].1.position < w[1].1.position));
                assert!(one
                    .iter()
                    .all(|(_, v)| v.position < end && (lo..=hi).contains(&v.event_time)));
            }
            let (starts, versions) = set.versions(view, "s", u64::MAX).unwrap();
            for (k, key) in keys.iter().enumerate() {
                let want = view.versions("s", key).unwrap();
                assert_eq!(&versions[starts[k]..starts[k + 1]], &want[..], "{key:?}");
            }
        }
    }

    /// Enough events that the window sweeps and slides on several threads
    /// (on a machine with more than one core): answers must equal the probe
    /// path's, which the model test checks against a model.
    #[test]
    fn threaded_window_and_join_agree_with_probes() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::builder(dir.path())
            .segment_size(4 << 20)
            .open()
            .unwrap();
        let w = db.writer();
        let mut rng = Rng(11);
        let keys = 20_000u64;
        for b in 0..300u64 {
            let mut batch = Batch::new();
            for i in 0..2000u64 {
                let n = b * 2000 + i;
                let late = if rng.below(20) == 0 {
                    rng.below(50_000) as i64
                } else {
                    0
                };
                let value = match rng.below(10) {
                    0 => "{\"other\":1}".to_string(),
                    _ => format!("{{\"x\":{}}}", rng.below(1000)),
                };
                batch
                    .put_at("s", format!("k{}", rng.below(keys)), value, n as i64 - late)
                    .unwrap();
            }
            w.commit(batch).unwrap();
        }
        let requests: Vec<crate::Request> = (0..30_000)
            .map(|_| crate::Request {
                key: Bytes::from(format!("k{}", rng.below(keys + 100))),
                time: rng.below(600_000) as i64,
            })
            .collect();
        let snap = db.snapshot().unwrap();
        let probe = snap.clone().with_access(AccessPath::Probe);
        let sweep = snap.with_access(AccessPath::Sweep);
        for agg in [crate::Agg::Count, crate::Agg::Avg, crate::Agg::Max] {
            let a = probe
                .window("s", "x", agg, 40_000, &requests, None)
                .unwrap();
            let b = sweep
                .window("s", "x", agg, 40_000, &requests, None)
                .unwrap();
            assert_eq!(a.len(), b.len());
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                let same = match (x, y) {
                    (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
                    (None, None) => true,
                    _ => false,
                };
                assert!(same, "{agg:?} request {i}: {x:?} vs {y:?}");
            }
        }
        let a = probe.asof_join(&requests, &["s"], None, None).unwrap();
        let b = sweep.asof_join(&requests, &["s"], None, None).unwrap();
        assert_eq!(a, b);
    }
}
