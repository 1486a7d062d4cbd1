//! A table from a checkpoint: the tail (every record the checkpoint does not
//! reflect, copied and sorted by key) merged with the checkpoint's rows. The
//! rules are in the [parent module](super)'s docs.

use bytes::Bytes;

use super::file::{self, CheckpointInfo, SavedRef, SavedRow};
use crate::db::Snapshot;
use crate::query::asof::Row;
use crate::storage::frame::RawRecord;
use crate::storage::keytable::sort_by_key_then;
use crate::storage::record::Op;
use crate::storage::sweep::SweepRange;
use crate::{Error, Result};

/// One key's share of the tail: a run of [`Tail::recs`] sorted by
/// `(event_time, position)`, and whether any is late (event time at or before
/// the checkpoint's, position after it).
#[derive(Debug, Clone)]
pub(crate) struct TailKey {
    recs: std::ops::Range<usize>,
    late: bool,
    /// The key's first 16 bytes as a big-endian integer, and its length (see
    /// [`KeyHead`]), kept here because every checkpoint row is compared with
    /// it.
    head: KeyHead,
}

/// What a checkpoint does not reflect, grouped by key.
#[derive(Debug)]
pub(crate) struct Tail {
    /// The records' keys and values, copied out of the log one after the
    /// other: a tail costs no reference count per record, and its records
    /// sort and move as a few words each.
    bytes: Bytes,
    /// The records, sorted by `(key, event_time, position)`.
    recs: Vec<TailRec>,
    /// The keys, in key order.
    keys: Vec<TailKey>,
}

/// One record of a [`Tail`]: where its key and value lie in [`Tail::bytes`].
#[derive(Debug, Clone, Copy)]
struct TailRec {
    key_at: usize,
    value_at: usize,
    key_len: u32,
    value_len: u32,
    event_time: i64,
    position: u64,
    op: Op,
}

impl TailRec {
    /// Copies `r`'s key and value to the end of `bytes`.
    fn copy(r: &RawRecord<'_>, position: u64, bytes: &mut Vec<u8>) -> TailRec {
        let key_at = bytes.len();
        bytes.extend_from_slice(r.key);
        bytes.extend_from_slice(r.value);
        TailRec {
            key_at,
            value_at: key_at + r.key.len(),
            key_len: r.key.len() as u32,
            value_len: r.value.len() as u32,
            event_time: r.event_time,
            position,
            op: r.op,
        }
    }

    fn key(self) -> std::ops::Range<usize> {
        self.key_at..self.key_at + self.key_len as usize
    }

    fn value(self) -> std::ops::Range<usize> {
        self.value_at..self.value_at + self.value_len as usize
    }
}

impl Tail {
    /// Record `i`'s key.
    fn key(&self, i: usize) -> &[u8] {
        &self.bytes[self.recs[i].key()]
    }

    /// Record `i` (a put) as a row, borrowed.
    fn saved_ref(&self, i: usize) -> SavedRef<'_> {
        let r = self.recs[i];
        SavedRef {
            row: crate::RowRef {
                key: &self.bytes[r.key()],
                value: &self.bytes[r.value()],
                event_time: r.event_time,
                position: r.position,
            },
            settled: true,
        }
    }

    /// Record `i` (a put) as a row.
    fn saved_row(&self, i: usize) -> SavedRow {
        let r = self.recs[i];
        SavedRow {
            row: Row {
                key: self.bytes.slice(r.key()),
                value: self.bytes.slice(r.value()),
                event_time: r.event_time,
                position: r.position,
            },
            settled: true,
        }
    }
}

/// What comparing a tail key with checkpoint rows needs of it, kept beside
/// the key: its first 16 bytes as a big-endian integer (if it has 16) and its
/// length. A table from a checkpoint compares the next tail key with every
/// checkpoint row's key; calling `memcmp` for each was a fifth of its time,
/// and reading the tail key's bytes (scattered over the tail) on a tie was a
/// third of what was left. ([`crate::storage::keytable::SortPrefix`], which
/// also orders shorter keys by integers, pads them first: a third slower
/// here.)
#[derive(Debug, Clone, Copy)]
struct KeyHead {
    prefix: Option<u128>,
    len: usize,
}

impl KeyHead {
    fn of(key: &[u8]) -> KeyHead {
        KeyHead {
            prefix: prefix(key),
            len: key.len(),
        }
    }

    /// `a <= b`, where `self` is `a`'s head; `a` is read only when the heads
    /// cannot tell.
    #[inline]
    fn le<'a>(self, a: impl FnOnce() -> &'a [u8], b: &[u8]) -> bool {
        if let (Some(x), Some(y)) = (self.prefix, prefix(b)) {
            if x != y {
                return x < y;
            }
            if self.len == 16 {
                return true; // `a` is a prefix of `b`
            }
        }
        a() <= b
    }

    /// `a == b`, where `self` is `a`'s head; `a` is read only when the heads
    /// cannot tell.
    #[inline]
    fn eq<'a>(self, a: impl FnOnce() -> &'a [u8], b: &[u8]) -> bool {
        if self.len != b.len() {
            return false;
        }
        match (self.prefix, prefix(b)) {
            (Some(x), Some(y)) if x != y => false,
            (Some(_), Some(_)) if self.len == 16 => true,
            _ => a() == b,
        }
    }
}

/// A key's first 16 bytes as a big-endian integer, if it has 16.
#[inline]
fn prefix(k: &[u8]) -> Option<u128> {
    k.first_chunk::<16>().map(|p| u128::from_be_bytes(*p))
}

/// What `stream`'s checkpoint does not reflect, by key (sorted): every visible
/// record (below `end`, at or before `as_of`) with event time after the
/// checkpoint's or position after it. `None` when the tail looks larger than the
/// checkpoint itself, in records or in bytes (starting from scratch is then
/// cheaper, and the copy of the tail held here stays within the size of the
/// checkpoint's rows).
pub(crate) fn tail_keys(
    snap: &Snapshot,
    ck: &CheckpointInfo,
    as_of: i64,
    end: u64,
) -> Result<Option<Tail>> {
    let view = snap.view();
    let budget = ck.rows.max(1024);
    let byte_budget = usize::try_from(ck.rows_len().max(1 << 20)).unwrap_or(usize::MAX);
    let mut bytes: Vec<u8> = Vec::new();
    let mut recs: Vec<TailRec> = Vec::new();
    let mut seen = 0u64;
    let within = |seen: u64, bytes: &[u8]| seen <= budget && bytes.len() <= byte_budget;
    // Records before the checkpoint's position that are newer in event time
    // (frames skipped by the time index), then every record of the stream
    // from it on, counted against the budget whatever its time: each record
    // is read once.
    let older = SweepRange {
        stream: &ck.stream,
        lo: ck.as_of.saturating_add(1),
        hi: as_of,
        start: 0,
        end: ck.known_end.min(end),
    };
    view.sweep_while(older, |r, v| {
        recs.push(TailRec::copy(r, v.position, &mut bytes));
        seen += 1;
        within(seen, &bytes)
    })?;
    let newer = SweepRange::positions(&ck.stream, ck.known_end, end);
    if within(seen, &bytes) {
        // Room for every record after the checkpoint's position (within the
        // budget), sized after the first: growing the copy as it fills
        // moved it several times over.
        let expect = end.saturating_sub(ck.known_end).min(budget) as usize;
        recs.reserve(expect);
        view.sweep_while(newer, |r, v| {
            if r.event_time <= as_of {
                if bytes.capacity() == 0 {
                    let each = r.key.len() + r.value.len();
                    bytes.reserve(expect.saturating_mul(each).min(byte_budget));
                }
                recs.push(TailRec::copy(r, v.position, &mut bytes));
            }
            seen += 1;
            within(seen, &bytes)
        })?;
    }
    if !within(seen, &bytes) {
        return Ok(None);
    }
    // The reservation counted every stream's records: a quiet stream in a
    // busy log gives most of it back rather than hold it with the tail.
    if recs.capacity() > 2 * recs.len() {
        recs.shrink_to_fit();
    }
    if bytes.capacity() > 2 * bytes.len() {
        bytes.shrink_to_fit();
    }
    let bytes = Bytes::from(bytes);
    let order = sort_by_key_then(
        recs.len(),
        |i| &bytes[recs[i].key()],
        |i| (recs[i].event_time, recs[i].position),
    );
    let recs: Vec<TailRec> = order.iter().map(|&i| recs[i]).collect();
    let mut keys: Vec<TailKey> = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        let late = r.position >= ck.known_end && r.event_time <= ck.as_of;
        match keys.last_mut() {
            Some(t) if bytes[recs[t.recs.start].key()] == bytes[r.key()] => {
                t.recs.end = i + 1;
                t.late |= late;
            }
            _ => keys.push(TailKey {
                recs: i..i + 1,
                late,
                head: KeyHead::of(&bytes[r.key()]),
            }),
        }
    }
    Ok(Some(Tail { bytes, recs, keys }))
}

/// How many tail keys ahead of the one it merges a table from a checkpoint
/// starts loading a tail key's newest record.
const TAIL_AHEAD: usize = 8;

/// Rows of a table from a checkpoint plus its tail, in key order.
pub(crate) struct FromCheckpoint {
    pub(crate) snap: Snapshot,
    pub(crate) stream: String,
    pub(crate) as_of: i64,
    pub(crate) end: u64,
    pub(crate) rows: file::Rows,
    /// Whether the checkpoint row read last ([`file::Rows::current`]) is
    /// still to be returned.
    pub(crate) peeked: bool,
    /// A row folded from the tail, until it is returned or lent.
    pub(crate) folded: Option<SavedRow>,
    pub(crate) tail: Tail,
    /// The next key of `tail.keys` to merge.
    pub(crate) next_tail: usize,
}

impl std::fmt::Debug for FromCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FromCheckpoint")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

/// Applies the tail records `recs` (of one key, all newer than everything the
/// checkpoint folded) to its row. Callers start `recs` at the key's last put
/// or delete when it has one: nothing before it counts.
fn fold_on_top(
    snap: &Snapshot,
    stream: &str,
    mut row: Option<SavedRow>,
    tail: &Tail,
    recs: std::ops::Range<usize>,
) -> Result<Option<SavedRow>> {
    for i in recs {
        let r = tail.recs[i];
        row = match r.op {
            Op::Delete => None,
            Op::Put => Some(tail.saved_row(i)),
            Op::Patch => {
                let op = snap
                    .merge
                    .get(stream)
                    .ok_or_else(|| Error::NoMergeOperator(stream.to_string()))?;
                let merged = op
                    .merge(
                        row.as_ref().map(|o| &o.row.value[..]),
                        &tail.bytes[r.value()],
                    )
                    .map_err(|reason| Error::Merge {
                        stream: stream.to_string(),
                        position: r.position,
                        reason,
                    })?;
                Some(SavedRow {
                    row: Row {
                        key: tail.bytes.slice(r.key()),
                        value: Bytes::from(merged),
                        event_time: r.event_time,
                        position: r.position,
                    },
                    settled: false,
                })
            }
        };
    }
    Ok(row)
}

impl FromCheckpoint {
    fn recompute(&self, key: &[u8]) -> Result<Option<SavedRow>> {
        let (got, settled) = self
            .snap
            .get_settled(&self.stream, key, self.as_of, self.end)?;
        Ok(got.row().map(|row| SavedRow { row, settled }))
    }

    /// The next row as an owned row.
    #[inline]
    pub(crate) fn next_row(&mut self) -> Option<Result<SavedRow>> {
        match self.advance()? {
            Ok(Next::Saved) => Some(Ok(self.rows.row(self.rows.current()))),
            Ok(Next::Folded) => self.folded.take().map(Ok),
            Ok(Next::Tail(i)) => Some(Ok(self.tail.saved_row(i))),
            Err(e) => Some(Err(e)),
        }
    }

    /// The next row, borrowed from the checkpoint's body or the folded row.
    #[inline]
    pub(crate) fn next_ref(&mut self) -> Option<Result<SavedRef<'_>>> {
        match self.advance()? {
            Ok(Next::Saved) => Some(Ok(self.rows.row_ref(self.rows.current()))),
            Ok(Next::Folded) => self.folded.as_ref().map(|r| Ok(r.as_ref())),
            Ok(Next::Tail(i)) => Some(Ok(self.tail.saved_ref(i))),
            Err(e) => Some(Err(e)),
        }
    }

    /// Moves to the next row: a checkpoint row as it is, or a key of the
    /// tail folded into [`FromCheckpoint::folded`].
    #[inline]
    fn advance(&mut self) -> Option<Result<Next>> {
        loop {
            if !self.peeked {
                match self.rows.step() {
                    Ok(more) => self.peeked = more,
                    Err(e) => return Some(Err(e)),
                }
            }
            let take_tail = match (self.peeked, self.tail.keys.get(self.next_tail)) {
                (false, None) => return None,
                (true, None) => false,
                (false, Some(_)) => true,
                (true, Some(t)) => t.head.le(
                    || self.tail.key(t.recs.start),
                    self.rows.key(self.rows.current()),
                ),
            };
            if !take_tail {
                self.peeked = false;
                return Some(Ok(Next::Saved));
            }
            let TailKey { recs, late, head } = self.tail.keys[self.next_tail].clone();
            self.next_tail += 1;
            // The tail lies in log order, its keys in key order: start
            // loading where the records of a key a few ahead lie.
            if let Some(t) = self.tail.keys.get(self.next_tail + TAIL_AHEAD) {
                let r = self.tail.recs[t.recs.end - 1];
                if let Some(b) = self.tail.bytes.get(r.key_at) {
                    crate::hint::prefetch(b);
                }
            }
            let key = || self.tail.key(recs.start);
            let at = self.rows.current();
            let has_base = self.peeked && head.eq(key, self.rows.key(at));
            if has_base {
                self.peeked = false;
            }
            // The tail records that sort after the last one the checkpoint
            // applied to this row fold on top of it. Late records may sort
            // before it (among versions the checkpoint folded): a settled row
            // shadows them; otherwise, and for a key with no row (a tombstone
            // the checkpoint does not keep), the key is refolded.
            let before = if !late {
                Some(0)
            } else if has_base {
                let b = self.rows.row_ref(at);
                let order = (b.row.event_time, b.row.position);
                let n = self.tail.recs[recs.clone()]
                    .partition_point(|r| (r.event_time, r.position) < order);
                (n == 0 || b.settled).then_some(n)
            } else {
                None
            };
            let row = match before {
                Some(n) => {
                    let recs = recs.start + n..recs.end;
                    if recs.is_empty() && has_base {
                        // Every record of the key is shadowed by the row.
                        return Some(Ok(Next::Saved));
                    }
                    let last = recs
                        .clone()
                        .rev()
                        .find(|&i| self.tail.recs[i].op != Op::Patch);
                    match last {
                        // A put and nothing after it: the row is that record.
                        Some(i) if i + 1 == recs.end && self.tail.recs[i].op == Op::Put => {
                            return Some(Ok(Next::Tail(i)));
                        }
                        // The checkpoint's row counts only under patches alone.
                        _ => {
                            let base = (has_base && last.is_none()).then(|| self.rows.row(at));
                            let from = last.unwrap_or(recs.start);
                            fold_on_top(&self.snap, &self.stream, base, &self.tail, from..recs.end)
                        }
                    }
                }
                None => self.recompute(key()),
            };
            match row {
                Ok(Some(row)) => {
                    self.folded = Some(row);
                    return Some(Ok(Next::Folded));
                }
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// What [`FromCheckpoint::advance`] moved to.
enum Next {
    /// The checkpoint row [`file::Rows::current`], untouched by the tail.
    Saved,
    /// A row folded from the tail, in [`FromCheckpoint::folded`].
    Folded,
    /// A row that is tail record `i`, a put with no record after it.
    Tail(usize),
}

#[cfg(test)]
mod tests {
    use super::KeyHead;

    /// Keys around the 16-byte prefix: shorter, exactly 16, longer, equal
    /// prefixes with different tails, and bytes that sort differently as
    /// signed values.
    fn keys() -> Vec<Vec<u8>> {
        let base = b"0123456789abcdef".to_vec();
        let mut keys = vec![
            Vec::new(),
            b"0".to_vec(),
            b"0123456789abcde".to_vec(),
            base.clone(),
            [&base[..], b"\0"].concat(),
            [&base[..], b"x"].concat(),
            [&base[..], b"xy"].concat(),
            b"0123456789abcdeg".to_vec(),
            b"0123456789abcdeg\x80".to_vec(),
            vec![0xff; 16],
            vec![0xff; 17],
            vec![0x7f; 16],
        ];
        keys.push([&base[..15], &[0x80]].concat());
        keys
    }

    #[test]
    fn heads_compare_as_the_bytes_do() {
        let keys = keys();
        for a in &keys {
            for b in &keys {
                let head = KeyHead::of(a);
                assert_eq!(head.le(|| a, b), a <= b, "{a:?} <= {b:?}");
                assert_eq!(head.eq(|| a, b), a == b, "{a:?} == {b:?}");
            }
        }
    }

    #[test]
    fn heads_of_16_byte_keys_never_read_the_key() {
        let a = b"0123456789abcdef";
        let head = KeyHead::of(a);
        let unread = || -> &[u8] { panic!("read the key") };
        assert!(head.le(unread, a));
        assert!(head.le(unread, b"0123456789abcdefg"));
        assert!(!head.le(unread, b"0123456789abcdee~"));
        assert!(head.eq(unread, a));
        assert!(!head.eq(unread, b"0123456789abcdeF"));
    }
}
