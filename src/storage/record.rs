//! Records, ops, and the hybrid-logical-clock stamp.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// What a record does to its key's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Op {
    /// The value is the whole new row.
    Put = 1,
    /// The value is a partial update merged into the previous row.
    Patch = 2,
    /// A tombstone: the row is absent afterwards. The value is empty.
    Delete = 3,
}

impl Op {
    /// Decodes the on-disk byte, `None` for an unknown op.
    #[must_use]
    pub fn from_u8(b: u8) -> Option<Op> {
        match b {
            1 => Some(Op::Put),
            2 => Some(Op::Patch),
            3 => Some(Op::Delete),
            _ => None,
        }
    }

    /// The lower-case name used by the CLI (`put`, `patch`, `delete`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Patch => "patch",
            Op::Delete => "delete",
        }
    }

    /// Parses `put`, `patch` or `delete`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Op> {
        match s {
            "put" => Some(Op::Put),
            "patch" => Some(Op::Patch),
            "delete" => Some(Op::Delete),
            _ => None,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A hybrid logical clock stamp: wall-clock milliseconds in the high 44 bits and a
/// logical counter in the low 20 bits, packed so that stamps compare as integers.
///
/// The engine gives every record its own stamp, strictly increasing with position
/// even when the wall clock steps back: the counter advances instead, and carries
/// into the millisecond part when it overflows (the clock then runs slightly ahead
/// of the wall, as any HLC does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hlc(pub u64);

impl Hlc {
    /// Bits of the logical counter.
    pub const LOGICAL_BITS: u32 = 20;

    /// Builds a stamp from wall-clock milliseconds and a logical counter.
    #[must_use]
    pub fn new(wall_ms: u64, logical: u32) -> Hlc {
        Hlc((wall_ms << Self::LOGICAL_BITS) | u64::from(logical & ((1 << Self::LOGICAL_BITS) - 1)))
    }

    /// Milliseconds since the Unix epoch.
    #[must_use]
    pub fn wall_ms(self) -> u64 {
        self.0 >> Self::LOGICAL_BITS
    }

    /// The logical counter within the millisecond.
    #[must_use]
    pub fn logical(self) -> u32 {
        (self.0 & ((1 << Self::LOGICAL_BITS) - 1)) as u32
    }

    /// The smallest stamp in the given wall-clock millisecond.
    #[must_use]
    pub fn at_ms(wall_ms: u64) -> Hlc {
        Hlc::new(wall_ms, 0)
    }

    /// The largest stamp in the given wall-clock millisecond.
    #[must_use]
    pub fn end_of_ms(wall_ms: u64) -> Hlc {
        Hlc::new(wall_ms, (1 << Self::LOGICAL_BITS) - 1)
    }
}

/// One record as read back from the log.
///
/// `key` and `value` are zero-copy slices of the memory-mapped segment where the
/// batch is stored uncompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The stream (table) the record belongs to.
    pub stream: Arc<str>,
    /// The row key.
    pub key: Bytes,
    /// Put, patch or delete.
    pub op: Op,
    /// The row (put), the partial update (patch) or empty (delete).
    pub value: Bytes,
    /// When the event happened: microseconds since the Unix epoch, UTC.
    pub event_time: i64,
    /// The record's gap-free address in the database.
    pub position: u64,
    /// When the record was appended (transaction time).
    pub recorded_at: Hlc,
}

/// A source of wall-clock milliseconds, injectable for tests.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Current time in microseconds since the epoch (the default event time).
#[must_use]
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The hybrid logical clock state: issues stamps for `n` consecutive records.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HlcState {
    last: u64,
}

impl HlcState {
    pub(crate) fn starting_after(last: Hlc) -> Self {
        HlcState { last: last.0 }
    }

    /// Reserves `n >= 1` consecutive stamps and returns the first.
    pub(crate) fn reserve(&mut self, wall_ms: u64, n: u64) -> Hlc {
        let wall = Hlc::at_ms(wall_ms).0;
        let first = if wall > self.last {
            wall
        } else {
            self.last + 1
        };
        self.last = first + n.saturating_sub(1);
        Hlc(first)
    }
}

/// Checks a stream name against `[A-Za-z0-9_.-]{1,255}`.
pub fn validate_stream_name(name: &str) -> crate::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(crate::Error::InvalidStreamName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hlc_is_monotonic_when_the_clock_steps_back() {
        let mut s = HlcState::default();
        let a = s.reserve(1_000, 3);
        let b = s.reserve(900, 1);
        let c = s.reserve(1_000, 2);
        assert!(b.0 > a.0 + 2);
        assert!(c > b);
        assert_eq!(a.wall_ms(), 1_000);
        assert_eq!(b.wall_ms(), 1_000);
        assert_eq!(b.logical(), 3);
        let d = s.reserve(2_000, 1);
        assert_eq!(d, Hlc::new(2_000, 0));
    }

    #[test]
    fn stream_names() {
        assert!(validate_stream_name("inventory.v2-x_y").is_ok());
        assert!(validate_stream_name("").is_err());
        assert!(validate_stream_name("a b").is_err());
        assert!(validate_stream_name("é").is_err());
        assert!(validate_stream_name(&"a".repeat(255)).is_ok());
        assert!(validate_stream_name(&"a".repeat(256)).is_err());
    }

    #[test]
    fn ops_round_trip() {
        for op in [Op::Put, Op::Patch, Op::Delete] {
            assert_eq!(Op::from_u8(op as u8), Some(op));
            assert_eq!(Op::parse(op.name()), Some(op));
        }
        assert_eq!(Op::from_u8(0), None);
    }
}
