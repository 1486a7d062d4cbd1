//! The one error type of the crate.

use std::path::PathBuf;

/// Result alias used throughout tablelog.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in tablelog, in variants a caller can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error, with the file it concerned.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Bytes on disk failed validation (checksum, magic, bounds, sequence).
    #[error("corruption in {path} at byte offset {offset}: {reason}")]
    Corruption {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset in that file where the damage was detected.
        offset: u64,
        /// What was expected and what was found.
        reason: String,
    },
    /// A file was written by a newer (or unknown) format version.
    #[error("{path} has format version {found}, this build reads version {supported}")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build understands.
        supported: u32,
    },
    /// Another process (or handle) holds the write lock of the database.
    ///
    /// The lock is an `flock` on `DIR/LOCK`, released (`LOCK_UN`) when the
    /// writing handle drops, which also releases the copy a child process
    /// spawned meanwhile holds between its `fork` and its `exec`. A held lock
    /// is tried again for a quarter of a second before this error, for a
    /// writer process that ended without dropping its handle while spawning.
    #[error("database {0} is locked by another writer process")]
    Locked(PathBuf),
    /// The directory does not hold a tablelog database.
    #[error("no tablelog database at {0}")]
    NotADatabase(PathBuf),
    /// A previous write or fsync failed; the database refuses writes until reopened.
    #[error("database is poisoned by an earlier I/O failure ({0}); reopen it to recover")]
    Poisoned(String),
    /// The database was opened read-only.
    #[error("database is open read-only")]
    ReadOnly,
    /// A stream name outside `[A-Za-z0-9_.-]{{1,255}}`.
    #[error("invalid stream name {0:?}: expected 1 to 255 characters from [A-Za-z0-9_.-]")]
    InvalidStreamName(String),
    /// A key or value over the configured limit, or another rejected input.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A bad line in an input file: `FILE:LINE: reason`.
    #[error("{file}:{line}: {reason}")]
    BadInput {
        /// The input file (`-` for standard input).
        file: String,
        /// 1-based line number.
        line: u64,
        /// What was wrong.
        reason: String,
    },
    /// The stream has never been written.
    #[error("unknown stream {0:?}")]
    UnknownStream(String),
    /// A position beyond what has been committed.
    #[error("position {requested} is not written yet (the log holds positions below {next})")]
    PositionNotWritten {
        /// The position asked for.
        requested: u64,
        /// The next position to be assigned.
        next: u64,
    },
    /// A query as of a time older than the database can answer for.
    #[error("as-of time {requested} is before the compaction horizon {horizon}")]
    BeyondHorizon {
        /// The time asked for (µs since the epoch).
        requested: i64,
        /// The oldest time still answerable (µs since the epoch).
        horizon: i64,
    },
    /// A query known at a position below the last compaction's position: the
    /// compaction dropped versions such a query could have seen.
    #[error("known-at position {requested} is before the compaction position {position} (compaction kept only what queries known at {position} or later can see)")]
    KnownBeforeHorizon {
        /// The known-at position asked for.
        requested: u64,
        /// The first position a query may be known at.
        position: u64,
    },
    /// A record dropped by compaction was asked for by position.
    #[error("position {0} was dropped by compaction")]
    PositionCompacted(u64),
    /// A patch was found in a stream that has no merge operator registered.
    #[error("stream {0:?} holds a patch but no merge operator is registered for it")]
    NoMergeOperator(String),
    /// The merge operator rejected a patch.
    #[error("merge failed in stream {stream:?} at position {position}: {reason}")]
    Merge {
        /// Stream of the patch.
        stream: String,
        /// Position of the patch.
        position: u64,
        /// The operator's explanation.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corruption {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }
}
