//! Building a column file from one sweep of its stream, in bounded memory.
//!
//! The sweep reads every record of the stream once, in position order,
//! numbering keys as they come and counting their events. Events are held
//! in memory, 24 bytes each, up to the build's memory budget; past it they
//! are all *spilled*, 20 bytes each, to a temporary file beside the column
//! ([`super::spill`]). A rebuild whose old column is whole, in a database
//! never compacted, reads that column's events instead of the records
//! below its end: they are the same events, each key's already in
//! `(event_time, position)` order, and all before the records after it,
//! so the sort below orders them the same way.
//!
//! Once the sweep is done the keys are known, so their slots, and the order
//! in which the file stores their events, are known too ([`Plan`]).
//! Held events are then sorted into that order (by key, then event time,
//! ties kept in position order) and written. Spilled ones are first dealt
//! into *parts*, temporary files each holding the events of a run of keys
//! in storage order: the keys whose events start in the same stretch of
//! `per_part` events, where `per_part` is the larger of the budget and
//! 1/[`MAX_PARTS`] of the stream. Each part is then read back, sorted and
//! written in turn. So a build holds about its budget in events (a part
//! also holds the whole of a key that starts in it; sorting takes half as
//! much again, or as much again under 16 MiB, and dealing a spill about
//! 5 MiB of buffers), plus each key's bytes and about 70 bytes of
//! bookkeeping a key, whatever the stream's length. Spilling costs two writes and two
//! reads of 20 bytes an event, and about 40 bytes an event of temporary
//! disk while the spill is dealt.

use std::path::Path;

use super::file::{self, Column, ColumnInfo, Head, Plan};
use super::spill::{deal, read_part, Appender, Held, Spill, Temps};
use crate::db::Snapshot;
use crate::query::field::numeric_field;
use crate::storage::sweep::SweepRange;
use crate::storage::vfs::Vfs;
use crate::{Error, Result};

/// How many records a build reads between calls of its progress callback.
const PROGRESS_EVERY: u64 = 1 << 16;

pub const MAX_PARTS: u64 = 64;

const HELD: usize = std::mem::size_of::<Held>();

/// Builds the column of `field` in `stream` at `path` from the records of
/// `snap` below `end`, holding at most about `budget` bytes of events in
/// memory (see the module documentation). With a `base` (a whole column of
/// the same stream and field holding exactly the records below its end,
/// which the caller vouches for), its events are read from it and only the
/// records after it from the log.
pub(super) fn build(
    vfs: &dyn Vfs,
    snap: &Snapshot,
    head: (&str, &str, Option<i64>),
    path: &Path,
    budget: usize,
    base: Option<&Column>,
    progress: &mut dyn FnMut(u64),
) -> Result<ColumnInfo> {
    let (stream, field, horizon) = head;
    let end = snap.end_position();
    let cap = (budget / HELD).max(1);
    let mut temps = Temps::new(vfs);
    let swept = sweep(
        snap, stream, field, end, base, path, cap, &mut temps, progress,
    )?;
    let Swept {
        keys,
        counts,
        narrow,
        mut held,
        spill,
    } = swept;
    // Keys placed in byte order (which decides where colliding keys go).
    let mut by_bytes: Vec<u32> = (0..keys.len() as u32).collect();
    by_bytes.sort_unstable_by(|&a, &b| keys.get(a).cmp(keys.get(b)));
    let plan = Plan::new(
        by_bytes
            .iter()
            .map(|&id| (keys.get(id), counts[id as usize]))
            .collect(),
    )?;
    // Each key's rank in storage order, by key number.
    let mut rank = vec![0u32; keys.len()];
    for (r, i) in plan.order().enumerate() {
        rank[by_bytes[i] as usize] = r as u32;
    }
    let head = Head {
        stream,
        field,
        known_end: end,
        horizon,
        narrow,
    };
    let Some(spill) = spill else {
        // Everything held: one sort into storage order, then a cursor.
        held.sort_by_key(|&(id, t, _)| (rank[id as usize], t));
        let mut at = 0;
        return file::write_planned(vfs, path, &head, &plan, &mut |i, out| {
            take_run(&held, &mut at, by_bytes[i], plan.count(i), out)
        });
    };
    drop(held);
    // Parts: a key goes to the part of the stretch of `per_part` events
    // its own start in storage order falls in (a key is never split), so
    // there are at most MAX_PARTS, some possibly empty.
    let total: u64 = counts.iter().sum();
    let per_part = (cap as u64).max(total.div_ceil(MAX_PARTS));
    let part_of_rank = assign_parts(plan.order().map(|i| plan.count(i)), per_part);
    let count = part_of_rank.last().map_or(0, |&p| p + 1);
    let parts = deal(path, &spill, &rank, &part_of_rank, count, &mut temps)?;
    temps.remove(&spill.path);
    drop(spill);
    // Written part by part, each read back and sorted when its first key's
    // events are asked for.
    let mut loaded: Vec<Held> = Vec::new();
    let (mut current, mut at, mut r) = (None, 0usize, 0usize);
    let info = file::write_planned(vfs, path, &head, &plan, &mut |i, out| {
        let part = part_of_rank[r] as usize;
        if current != Some(part) {
            loaded.clear();
            read_part(&parts[part], &mut loaded)?;
            loaded.sort_by_key(|&(id, t, _)| (rank[id as usize], t));
            at = 0;
            current = Some(part);
        }
        r += 1;
        take_run(&loaded, &mut at, by_bytes[i], plan.count(i), out)
    })?;
    drop(temps);
    Ok(info)
}

/// Appends key `id`'s `n` events, the next in `events` from `*at` (sorted
/// into storage order), to `out`, and moves `*at` past them.
fn take_run(
    events: &[Held],
    at: &mut usize,
    id: u32,
    n: u64,
    out: &mut Vec<(i64, f64)>,
) -> Result<()> {
    let run = usize::try_from(n)
        .ok()
        .and_then(|n| events.get(*at..at.checked_add(n)?))
        .filter(|run| run.iter().all(|e| e.0 == id))
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "column build: key number {id}'s {n} events are not where its count puts them"
            ))
        })?;
    out.extend(run.iter().map(|&(_, t, x)| (t, x)));
    *at += run.len();
    Ok(())
}

/// The part of each key, given their event counts in storage order: the
/// stretch of `per_part` events its first event falls in. Never decreasing,
/// and below `ceil(total / per_part)`.
fn assign_parts(counts: impl Iterator<Item = u64>, per_part: u64) -> Vec<u32> {
    let mut before = 0u64;
    counts
        .map(|n| {
            let part = (before / per_part.max(1)) as u32;
            before += n;
            part
        })
        .collect()
}

/// What one sweep of the stream found.
struct Swept {
    /// Keys by number (in order of first appearance).
    keys: Interner,
    /// Events per key number.
    counts: Vec<u64>,
    /// Every number of the field survives a round trip through f32.
    narrow: bool,
    /// Events not spilled, in position order.
    held: Vec<Held>,
    /// The spill, if the events outgrew the budget: every event, in
    /// position order.
    spill: Option<Spill>,
}

/// Keys numbered in order of first appearance, their bytes back to back:
/// about 25 bytes a key beyond its own.
#[derive(Default)]
struct Interner {
    bytes: Vec<u8>,
    /// Where each key's bytes end.
    ends: Vec<u64>,
    /// Open addressing, at most half full: (key number + 1, hash), 0 empty.
    table: Vec<(u32, u32)>,
    hasher: foldhash::fast::FixedState,
}

impl Interner {
    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Key number `id`'s bytes.
    fn get(&self, id: u32) -> &[u8] {
        let id = id as usize;
        let start = if id == 0 {
            0
        } else {
            self.ends[id - 1] as usize
        };
        &self.bytes[start..self.ends[id] as usize]
    }

    /// The number of `key`, numbering it if it is new; `None` past 2^32 - 2 keys.
    fn id(&mut self, key: &[u8]) -> Option<u32> {
        use std::hash::BuildHasher;
        if self.table.len() < 2 * (self.len() + 1) {
            self.grow();
        }
        let hash = self.hasher.hash_one(key) as u32;
        let mask = self.table.len() - 1;
        let mut at = hash as usize & mask;
        loop {
            match self.table[at] {
                (0, _) => break,
                (n, h) if h == hash && self.get(n - 1) == key => return Some(n - 1),
                _ => at = (at + 1) & mask,
            }
        }
        let n = u32::try_from(self.len() + 1)
            .ok()
            .filter(|&n| n != u32::MAX)?;
        self.bytes.extend_from_slice(key);
        self.ends.push(self.bytes.len() as u64);
        self.table[at] = (n, hash);
        Some(n - 1)
    }

    /// Doubles the table (at least 1,024 entries) and places every key again.
    fn grow(&mut self) {
        let size = (self.table.len() * 2).max(1 << 10);
        let old = std::mem::replace(&mut self.table, vec![(0, 0); size]);
        let mask = size - 1;
        for (n, h) in old.into_iter().filter(|e| e.0 != 0) {
            let mut at = h as usize & mask;
            while self.table[at].0 != 0 {
                at = (at + 1) & mask;
            }
            self.table[at] = (n, h);
        }
    }
}

/// Events as a sweep gathers them: keys numbered, events counted, held up
/// to `cap` and then all spilled.
struct Gather<'t, 'v> {
    keys: Interner,
    counts: Vec<u64>,
    narrow: bool,
    held: Vec<Held>,
    spill: Option<Appender>,
    cap: usize,
    path: &'t Path,
    temps: &'t mut Temps<'v>,
    seen: u64,
}

impl Gather<'_, '_> {
    /// Adds an event of `key` (the next in position order for that key).
    fn add(&mut self, key: &[u8], t: i64, x: Option<f64>) -> Result<()> {
        let id = self
            .keys
            .id(key)
            .ok_or_else(|| Error::InvalidInput("a column holds fewer than 2^32 keys".into()))?;
        if id as usize == self.counts.len() {
            self.counts.push(0);
        }
        self.counts[id as usize] += 1;
        self.narrow &= x.is_none_or(file::narrows);
        let held = &mut self.held;
        if held.len() == held.capacity() {
            // Grown by doubling, but not past the budget.
            let target = (held.len() * 2).clamp(1 << 10, self.cap.max(1 << 10));
            held.reserve_exact(target.saturating_sub(held.len()).max(1));
        }
        held.push((id, t, x.unwrap_or(f64::NAN)));
        if held.len() >= self.cap {
            let s = match &mut self.spill {
                Some(s) => s,
                None => self
                    .spill
                    .insert(Appender::new(self.temps.create(self.path, ".spill.tmp")?)),
            };
            held.drain(..).try_for_each(|e| s.push(e))?;
        }
        self.seen += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<Swept> {
        self.keys.table = Vec::new();
        let spill = match self.spill {
            Some(mut s) => {
                self.held.drain(..).try_for_each(|e| s.push(e))?;
                self.held = Vec::new();
                Some(s.finish()?)
            }
            None => None,
        };
        Ok(Swept {
            keys: self.keys,
            counts: self.counts,
            narrow: self.narrow,
            held: self.held,
            spill,
        })
    }
}

/// Gathers every event of the column: `base`'s events, if any (the
/// stream's records below its end, each key's in `(event_time, position)`
/// order), then the records of `stream` from there to `end`, read once in
/// position order.
#[allow(clippy::too_many_arguments)]
fn sweep(
    snap: &Snapshot,
    stream: &str,
    field: &str,
    end: u64,
    base: Option<&Column>,
    path: &Path,
    cap: usize,
    temps: &mut Temps<'_>,
    progress: &mut dyn FnMut(u64),
) -> Result<Swept> {
    let mut g = Gather {
        keys: Interner::default(),
        counts: Vec::new(),
        narrow: true,
        held: Vec::new(),
        spill: None,
        cap,
        path,
        temps,
        seen: 0,
    };
    let mut from = 0;
    if let Some(col) = base {
        for entry in col.entries() {
            let (key, events) = entry?;
            col.ready(&events)?;
            for e in events {
                g.add(key, col.time(e), col.value(e))?;
                if g.seen.is_multiple_of(PROGRESS_EVERY) {
                    progress(g.seen);
                }
            }
        }
        from = col.info().known_end;
    }
    let mut failed: Option<Error> = None;
    snap.view()
        .sweep_while(SweepRange::positions(stream, from, end), |r, v| {
            if let Err(e) = g.add(r.key, v.event_time, numeric_field(r.value, field)) {
                failed = Some(e);
                return false;
            }
            if g.seen.is_multiple_of(PROGRESS_EVERY) {
                progress(g.seen);
            }
            true
        })?;
    progress(g.seen);
    if let Some(e) = failed {
        return Err(e);
    }
    g.finish()
}

#[cfg(test)]
mod tests {
    use super::{assign_parts, Interner, MAX_PARTS};
    use crate::storage::vfs::OsVfs;
    use crate::{Batch, Db};

    /// Parts never split a key, never exceed MAX_PARTS, and come in order,
    /// whatever mix of small and large keys.
    #[test]
    fn parts_stay_within_their_bound() {
        let mut rng = crate::rng::Rng(3);
        for _ in 0..200 {
            let keys = 1 + rng.below(500) as usize;
            let counts: Vec<u64> = (0..keys)
                .map(|_| {
                    if rng.below(10) == 0 {
                        1 + rng.below(5_000)
                    } else {
                        1 + rng.below(20)
                    }
                })
                .collect();
            let total: u64 = counts.iter().sum();
            let cap = rng.below(300);
            let per_part = cap.max(total.div_ceil(MAX_PARTS));
            let parts = assign_parts(counts.iter().copied(), per_part);
            assert!(parts.windows(2).all(|w| w[0] <= w[1]));
            let count = u64::from(parts.last().unwrap() + 1);
            assert!(count <= MAX_PARTS, "{count} parts");
            // A part holds at most `per_part` events starting in it, plus
            // the rest of its last key.
            for p in 0..count as u32 {
                let starting: u64 = counts
                    .iter()
                    .zip(&parts)
                    .filter(|(_, &q)| q == p)
                    .map(|(&n, _)| n)
                    .sum();
                let largest = counts.iter().max().unwrap();
                assert!(starting <= per_part + largest, "part {p}");
            }
        }
    }

    /// A rebuild reads the old column's events (here, a column of another
    /// database whose records below its end differ from this one's: its
    /// prices are what the new column holds) and the log only after it.
    #[test]
    fn a_rebuild_reads_its_base_column_and_the_log_after_it() {
        let fill = |db: &Db, price: i64, from: i64, n: i64| {
            let mut b = Batch::new();
            for i in from..from + n {
                b.put_at(
                    "s",
                    format!("k{}", i % 3),
                    format!(r#"{{"p":{}}}"#, price + i),
                    i,
                )
                .unwrap();
            }
            db.writer().commit(b).unwrap();
        };
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let old = {
            let db = Db::open(a.path()).unwrap();
            fill(&db, 1_000, 0, 9);
            let info = db.build_column("s", "p", &mut |_| {}).unwrap();
            super::Column::open(&OsVfs, &info.path).unwrap()
        };
        let db = Db::open(b.path()).unwrap();
        fill(&db, 0, 0, 9);
        fill(&db, 0, 9, 6);
        let snap = db.snapshot().unwrap();
        for budget in [0, 1 << 20] {
            let path = b.path().join(format!("rebuilt-{budget}.col"));
            let mut seen = 0;
            let info = super::build(
                &OsVfs,
                &snap,
                ("s", "p", None),
                &path,
                budget,
                Some(&old),
                &mut |n| seen = n,
            )
            .unwrap();
            assert_eq!((info.events, seen), (15, 15));
            let col = super::Column::open(&OsVfs, &path).unwrap();
            let k0 = col.find(b"k0", col.home(b"k0")).unwrap().unwrap();
            col.ready(&k0).unwrap();
            let got: Vec<(i64, f64)> = k0.map(|e| (col.time(e), col.value(e).unwrap())).collect();
            // Times 0, 3, 6 from the old column (prices 1000 + i), 9 and
            // 12 from this log (prices i).
            assert_eq!(
                got,
                [(0, 1000.0), (3, 1003.0), (6, 1006.0), (9, 9.0), (12, 12.0)],
                "budget {budget}"
            );
        }
    }

    /// Keys are numbered in order of first appearance, through the table's
    /// growth, the empty key and keys that are prefixes of others included.
    #[test]
    fn the_interner_numbers_each_key_once() {
        let mut keys = Interner::default();
        let key = |i: u32| format!("{}", i * 7919 % 5000).into_bytes();
        let mut want = std::collections::HashMap::new();
        assert_eq!(keys.id(b""), Some(0));
        want.insert(Vec::new(), 0);
        for round in 0..2 {
            for i in 0..5000 {
                let k = key(i);
                let next = want.len() as u32;
                let id = *want.entry(k.clone()).or_insert(next);
                assert_eq!(keys.id(&k), Some(id), "round {round}, key {k:?}");
            }
        }
        assert_eq!(keys.len(), want.len());
        for (k, &id) in &want {
            assert_eq!(keys.get(id), &k[..]);
        }
        assert!(keys.table.len() >= 2 * keys.len());
    }
}
