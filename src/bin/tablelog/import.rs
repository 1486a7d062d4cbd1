//! `tablelog import`.

use std::io::Read;
use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tablelog::ingest::import::{import, Format, ImportOptions};
use tablelog::ingest::parse::FieldSpec;
use tablelog::ingest::time::TimeUnit;
use tablelog::Db;

use crate::args::{msg, time_unit, CliResult};
use crate::Outcome;

/// Import a JSONL or CSV file into a stream as one atomic batch.
///
/// Each JSON object (or CSV row, with a header) becomes one record: the key field
/// (string or number) is the key, the time field is the event time, the whole
/// object is the value. A bad line fails the import with FILE:LINE: reason and
/// nothing of the file becomes visible, unless --skip-invalid is given. Creates the
/// database (with default settings) if it does not exist.
///
/// Example: tablelog import ./db --stream inventory --key item --time ts --op-field op inventory.jsonl
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Database directory.
    pub db: PathBuf,
    /// Stream to import into.
    #[arg(long)]
    pub stream: String,
    /// Field holding the key.
    #[arg(long)]
    pub key: String,
    /// Field holding the event time.
    #[arg(long)]
    pub time: String,
    /// Field whose value put|patch|delete sets the op (default: every record is a put).
    #[arg(long)]
    pub op_field: Option<String>,
    /// Input format (default: csv for *.csv files, jsonl otherwise).
    #[arg(long, value_parser = ["jsonl", "csv"])]
    pub format: Option<String>,
    /// Skip and count bad lines instead of failing.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Unit of integer times.
    #[arg(long, value_parser = time_unit, default_value = "ms")]
    pub time_unit: TimeUnit,
    /// Input file, or - for standard input.
    #[arg(default_value = "-")]
    pub file: String,
}

/// Inputs at least this large get a progress bar.
const BAR_MIN_BYTES: u64 = 8 << 20;

pub fn run(a: ImportArgs) -> CliResult<Outcome> {
    tablelog::storage::record::validate_stream_name(&a.stream)?;
    let format = match a.format.as_deref() {
        Some("csv") => Format::Csv,
        Some(_) => Format::Jsonl,
        None if a.file.ends_with(".csv") => Format::Csv,
        None => Format::Jsonl,
    };
    let (input, len): (Box<dyn Read + Send>, Option<u64>) = if a.file == "-" {
        (Box::new(std::io::stdin()), None)
    } else {
        let f = std::fs::File::open(&a.file).map_err(|e| msg(format!("{}: {e}", a.file)))?;
        let len = f.metadata().ok().map(|m| m.len());
        (Box::new(f), len)
    };
    let db = Db::builder(&a.db).open()?;
    let bar = match len {
        Some(n) if n >= BAR_MIN_BYTES => {
            let b = ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("{spinner} importing [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b
        }
        Some(_) => ProgressBar::hidden(),
        None => {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("{spinner} importing {bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b
        }
    };
    let opts = ImportOptions {
        stream: a.stream.clone(),
        spec: FieldSpec {
            key: a.key,
            time: a.time,
            op: a.op_field,
            unit: a.time_unit,
        },
        format,
        skip_invalid: a.skip_invalid,
        source: a.file.clone(),
    };
    let progress = |n: u64| bar.inc(n);
    let result = import(&db.writer(), input, &opts, &progress);
    bar.finish_and_clear();
    let report = result?;
    for ex in &report.skipped_examples {
        eprintln!("skipped {ex}");
    }
    if report.imported == 0 {
        eprintln!("imported 0 records into {}", a.stream);
    } else {
        eprintln!(
            "imported {} records into {} (positions {} to {})",
            report.imported,
            a.stream,
            report.positions.start,
            report.positions.end - 1
        );
    }
    if report.skipped > 0 {
        eprintln!("skipped {} invalid lines", report.skipped);
    }
    Ok(Outcome::Ok)
}
