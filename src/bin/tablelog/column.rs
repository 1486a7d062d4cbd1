//! `tablelog column`.

use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tablelog::{Db, JsonMergePatch};

use crate::args::CliResult;
use crate::Outcome;

/// Build a field column: one numeric JSON field of a stream, kept typed beside
/// the log, per key in time order. `window` over that field
/// then reads the column and only the records appended after it (late events
/// included) instead of parsing every event's JSON: answers never change,
/// only their speed does. Rebuild it when many records have been appended
/// since: a rebuild reads the old column and only the records after it
/// (--drop it first to build from the log alone). Without --stream and
/// --field, lists the columns. Building takes the writer lock and syncs the
/// log first.
///
/// Example: tablelog column ./db --stream views --field price
#[derive(Args, Debug)]
pub struct ColumnArgs {
    /// Database directory.
    db: PathBuf,
    /// Stream whose field to keep.
    #[arg(long, requires = "field")]
    stream: Option<String>,
    /// Numeric JSON field (top level) to keep.
    #[arg(long, requires = "stream")]
    field: Option<String>,
    /// Remove the column instead of building it.
    #[arg(long = "drop", requires = "field")]
    remove: bool,
    /// MiB of events the build holds in memory (24 bytes each); past that it
    /// spills them to temporary files beside the column (about 40 bytes an
    /// event at the peak) and sorts them in parts of this size (at least
    /// 1/64 of the stream).
    #[arg(long, value_name = "MIB", default_value_t = (tablelog::column::DEFAULT_BUILD_MEMORY >> 20) as u64)]
    memory: u64,
}

pub fn run(a: ColumnArgs) -> CliResult<Outcome> {
    let (Some(stream), Some(field)) = (&a.stream, &a.field) else {
        let db = Db::builder(&a.db)
            .create_if_missing(false)
            .read_only(true)
            .open()?;
        let end = db.snapshot()?.end_position();
        for c in db.columns() {
            // What a window reads from the log beside it: rebuild when large.
            let behind = end.saturating_sub(c.known_end);
            crate::outln!(
                "{}.{}: {} events over {} keys, below position {} (the log has {} position{} since, all streams), {} bytes in {}",
                c.stream,
                c.field,
                c.events,
                c.keys,
                c.known_end,
                behind,
                if behind == 1 { "" } else { "s" },
                c.bytes,
                c.path.display()
            )?;
        }
        return Ok(Outcome::Ok);
    };
    let db = Db::builder(&a.db)
        .create_if_missing(false)
        .column_build_memory(
            usize::try_from(a.memory.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
        )
        .default_merge_operator(std::sync::Arc::new(JsonMergePatch))
        .open()?;
    if a.remove {
        if db.drop_column(stream, field)? {
            crate::outln!("dropped the column of {stream}.{field}")?;
            return Ok(Outcome::Ok);
        }
        return Err(tablelog::Error::InvalidInput(format!(
            "no column of field {field:?} in stream {stream:?}"
        ))
        .into());
    }
    // The build reads only this stream's records, so there is no total to
    // show against: a count and a rate.
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} reading {stream}: {{pos}} events ({{per_sec}})"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let started = std::time::Instant::now();
    let info = db.build_column(stream, field, &mut |n| bar.set_position(n))?;
    bar.finish_and_clear();
    crate::outln!(
        "column of {}.{}: {} events over {} keys, below position {}, {} bytes in {} ({:.2} s)",
        info.stream,
        info.field,
        info.events,
        info.keys,
        info.known_end,
        info.bytes,
        info.path.display(),
        started.elapsed().as_secs_f64()
    )?;
    Ok(Outcome::Ok)
}
