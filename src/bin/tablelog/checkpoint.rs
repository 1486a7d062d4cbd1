//! `tablelog checkpoint`.

use std::path::PathBuf;

use clap::Args;
use tablelog::ingest::time::{format_time, TimeUnit};
use tablelog::{Db, JsonMergePatch};

use crate::args::{time_arg, CliResult, TimeArg};
use crate::Outcome;

/// Save streams' tables as of a time to checkpoint files, so that `table` as of
/// that time or later reads only what was appended after (late events included)
/// instead of all history. Answers never change; only their speed does. Takes
/// the writer lock.
///
/// Example: tablelog checkpoint ./db --stream inventory
#[derive(Args, Debug)]
pub struct CheckpointArgs {
    /// Database directory.
    db: PathBuf,
    /// Stream to checkpoint (default: every stream).
    #[arg(long)]
    stream: Option<String>,
    /// Event time to save the table as of (default: the largest event time in the log).
    #[arg(long, value_parser = time_arg)]
    as_of: Option<TimeArg>,
    /// Unit of integer times.
    #[arg(long, value_parser = crate::args::time_unit, default_value = "ms")]
    time_unit: TimeUnit,
}

pub fn run(a: CheckpointArgs) -> CliResult<Outcome> {
    let db = Db::builder(&a.db)
        .create_if_missing(false)
        .default_merge_operator(std::sync::Arc::new(JsonMergePatch))
        .open()?;
    let as_of = a
        .as_of
        .as_ref()
        .map(|t| t.micros(a.time_unit))
        .transpose()?;
    let streams = match &a.stream {
        Some(s) => {
            if !db.snapshot()?.view().has_stream(s)? {
                return Err(tablelog::Error::UnknownStream(s.clone()).into());
            }
            vec![s.clone()]
        }
        None => db.snapshot()?.view().streams()?,
    };
    for s in streams {
        let info = db.checkpoint(&s, as_of)?;
        crate::outln!(
            "checkpoint of {} as of {} known at position {}: {} rows in {}",
            info.stream,
            format_time(info.as_of),
            info.known_end.saturating_sub(1),
            info.rows,
            info.path.display()
        )?;
    }
    Ok(Outcome::Ok)
}
