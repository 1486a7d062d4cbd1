//! Argument parsers shared by the subcommands.

use std::path::Path;

use tablelog::ingest::time::{parse_duration, parse_size, parse_time, TimeUnit};
use tablelog::{Db, JsonMergePatch};

/// A CLI error: anything printable.
pub type CliResult<T> = Result<T, anyhow_lite::Error>;

pub mod anyhow_lite {
    //! A boxed error with a message, enough for a CLI.
    use std::fmt;

    /// Any error, as text plus its source.
    pub struct Error(pub Box<dyn std::error::Error + Send + Sync>);

    impl fmt::Display for Error {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}", self.0)
        }
    }

    impl fmt::Debug for Error {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}", self.0)
        }
    }

    impl<E: std::error::Error + Send + Sync + 'static> From<E> for Error {
        fn from(e: E) -> Self {
            Error(Box::new(e))
        }
    }

    /// An error from a message.
    pub fn msg(m: impl Into<String>) -> Error {
        Error(m.into().into())
    }
}

pub use anyhow_lite::msg;

/// Writes a line to stdout, returning the I/O error (a closed pipe ends quietly).
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// `--time-unit`.
pub fn time_unit(s: &str) -> Result<TimeUnit, String> {
    TimeUnit::parse(s).ok_or_else(|| format!("unknown time unit {s:?}: expected s, ms, us or ns"))
}

/// A time argument, integers in milliseconds (re-parsed with `--time-unit` where
/// a subcommand has it).
#[derive(Debug, Clone)]
pub struct TimeArg(pub String);

impl TimeArg {
    pub fn micros(&self, unit: TimeUnit) -> CliResult<i64> {
        parse_time(&self.0, unit).map_err(|e| msg(e.0))
    }
}

/// Checks a time argument's syntax early (clap), keeping the text for the unit.
pub fn time_arg(s: &str) -> Result<TimeArg, String> {
    // Integers are valid in every unit (read later with --time-unit); everything
    // else must parse now.
    let t = s.trim();
    let digits = t.strip_prefix('-').unwrap_or(t);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        t.parse::<i64>()
            .map_err(|_| format!("integer time {s:?} out of range"))?;
        return Ok(TimeArg(s.to_string()));
    }
    parse_time(s, TimeUnit::Millis).map_err(|e| e.0)?;
    Ok(TimeArg(s.to_string()))
}

/// A duration argument in microseconds.
pub fn duration_arg(s: &str) -> Result<i64, String> {
    parse_duration(s).map_err(|e| e.0)
}

/// A size argument in bytes.
pub fn size_arg(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.0)
}

/// Opens an existing database read-only, with JSON merge patch for every stream.
pub fn open_read(dir: &Path) -> CliResult<Db> {
    Ok(Db::builder(dir)
        .read_only(true)
        .default_merge_operator(std::sync::Arc::new(JsonMergePatch))
        .open()?)
}
