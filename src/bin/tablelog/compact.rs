//! `tablelog compact`.

use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tablelog::ingest::time::{format_time, TimeUnit};
use tablelog::{CompactReport, Db, JsonMergePatch, Retention};

use crate::args::{duration_arg, size_arg, time_arg, CliResult, TimeArg};
use crate::Outcome;

/// Drop the history no query at or after a horizon can see, and reclaim its
/// space.
///
/// Every query as of the horizon or later (known at the latest position or
/// later) answers exactly as before; queries as of an earlier time fail with
/// an error naming the horizon. For each key the newest put or delete at or
/// before the horizon, and everything after it, are kept. The horizon only
/// moves forward. Takes the writer lock; readers keep working (an open
/// snapshot keeps the old files until it ends). A crash at any point leaves
/// the old segments or the new ones, never a mix.
///
/// Give the horizon directly, or a retention policy: --max-age keeps what
/// queries over the last DURATION (from now) need; --max-size moves the
/// horizon past the oldest segments beyond SIZE. Retention first saves each
/// stream's table as of the horizon to a checkpoint.
///
/// Examples:
///   tablelog compact ./db --horizon 2024-01-01
///   tablelog compact ./db --max-age 30d
///   tablelog compact ./db --max-size 10GiB
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct CompactArgs {
    /// Database directory.
    db: PathBuf,
    /// Oldest event time queries may still ask about.
    #[arg(long, value_parser = time_arg, required_unless_present_any = ["max_age", "max_size"], conflicts_with_all = ["max_age", "max_size"])]
    horizon: Option<TimeArg>,
    /// Retention by age: keep what queries as of now minus DURATION need (e.g. 30d).
    #[arg(long, value_parser = duration_arg)]
    max_age: Option<i64>,
    /// Retention by size: aim for at most SIZE of segments (e.g. 10GiB).
    #[arg(long, value_parser = size_arg)]
    max_size: Option<u64>,
    /// Unit of integer times.
    #[arg(long, value_parser = crate::args::time_unit, default_value = "ms")]
    time_unit: TimeUnit,
}

pub fn run(a: CompactArgs) -> CliResult<Outcome> {
    let db = Db::builder(&a.db)
        .create_if_missing(false)
        .default_merge_operator(std::sync::Arc::new(JsonMergePatch))
        .open()?;
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("compacting {bar:40} {bytes}/{total_bytes} ({bytes_per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let report = match &a.horizon {
        Some(t) => Some(db.compact(t.micros(a.time_unit)?, &mut progress)?),
        None => db.retain(
            Retention {
                max_age: a.max_age,
                max_bytes: a.max_size,
            },
            &mut progress,
        )?,
    };
    bar.finish_and_clear();
    match report {
        None => crate::outln!("nothing to do: the database is within the retention policy")?,
        Some(r) => print_report(&r)?,
    }
    Ok(Outcome::Ok)
}

fn print_report(r: &CompactReport) -> std::io::Result<()> {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    crate::outln!(
        "horizon {} (queries must be known at position {} or later)",
        format_time(r.horizon.time),
        r.horizon.position.saturating_sub(1)
    )?;
    crate::outln!(
        "rewrote {} of {} sealed segments into {}: {} records dropped",
        r.segments_rewritten,
        r.segments_before,
        r.segments_rewritten + r.segments_after - r.segments_before,
        r.records_dropped
    )?;
    crate::outln!(
        "sealed segments {} -> {} bytes ({} reclaimed), {:.1} MB/s over {:.3} s",
        r.sealed_bytes_before,
        r.sealed_bytes_after,
        r.sealed_bytes_before.saturating_sub(r.sealed_bytes_after),
        r.bytes_read as f64 / 1e6 / secs,
        secs
    )
}
