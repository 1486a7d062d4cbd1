//! Streaming import of JSONL or CSV into one atomic transaction.
//!
//! A parser thread reads and parses the input while the calling thread writes
//! frames, connected by a bounded channel, so memory stays flat whatever the file
//! size and both cores work. Nothing of the input is visible until the last line
//! is written and the commit frame is on disk; on any error the transaction is
//! dropped and leaves no trace.

use std::io::{BufRead, BufReader, Read};
use std::ops::Range;

use super::parse::{parse_csv_record, parse_json_line, Event, FieldSpec};
use crate::db::Writer;
use crate::{Error, Result};

/// Input format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// CSV with a header row.
    Csv,
}

/// What to import and how.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Target stream.
    pub stream: String,
    /// Key, time and op fields.
    pub spec: FieldSpec,
    /// Input format.
    pub format: Format,
    /// Skip and count bad lines instead of failing.
    pub skip_invalid: bool,
    /// Name of the input used in messages (`FILE:LINE: reason`).
    pub source: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Records imported.
    pub imported: u64,
    /// Bad lines skipped (with `skip_invalid`).
    pub skipped: u64,
    /// Positions assigned.
    pub positions: Range<u64>,
    /// The first few skipped lines, as `FILE:LINE: reason`.
    pub skipped_examples: Vec<String>,
}

type Parsed = Vec<(u64, std::result::Result<Event, String>)>;
const CHUNK: usize = 1024;
const EXAMPLES: usize = 10;

/// Sends a full chunk to the writer; `false` once the writer has stopped
/// listening (it failed, so parsing can stop).
fn send_if_full(chunk: &mut Parsed, tx: &crossbeam_channel::Sender<Parsed>) -> bool {
    chunk.len() < CHUNK
        || tx
            .send(std::mem::replace(chunk, Vec::with_capacity(CHUNK)))
            .is_ok()
}

fn parse_jsonl(
    input: impl Read,
    spec: &FieldSpec,
    tx: &crossbeam_channel::Sender<Parsed>,
    progress: &(dyn Fn(u64) + Sync),
) -> std::io::Result<()> {
    let mut r = BufReader::with_capacity(1 << 20, input);
    let mut buf = Vec::new();
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut line_no = 0u64;
    // Progress is reported every 64 KiB: a call per line costs a clock read.
    let mut unreported = 0u64;
    loop {
        buf.clear();
        let n = r.read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        unreported += n as u64;
        if unreported >= 1 << 16 {
            progress(std::mem::take(&mut unreported));
        }
        let parsed = match std::str::from_utf8(&buf) {
            Ok(s) => parse_json_line(s, spec),
            Err(e) => Err(format!("invalid UTF-8 at byte {}", e.valid_up_to())),
        };
        match parsed {
            Ok(None) => {}
            Ok(Some(ev)) => chunk.push((line_no, Ok(ev))),
            Err(e) => chunk.push((line_no, Err(e))),
        }
        if !send_if_full(&mut chunk, tx) {
            return Ok(());
        }
    }
    progress(unreported);
    let _ = tx.send(chunk);
    Ok(())
}

fn parse_csv(
    input: impl Read,
    spec: &FieldSpec,
    tx: &crossbeam_channel::Sender<Parsed>,
    progress: &(dyn Fn(u64) + Sync),
) -> std::result::Result<(), (u64, String)> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(input);
    let header: Vec<String> = r
        .headers()
        .map_err(|e| (1, format!("bad CSV header: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    if header.is_empty() || header.iter().all(String::is_empty) {
        return Err((1, "empty CSV header".into()));
    }
    let mut rec = csv::ByteRecord::new();
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut last_byte = 0u64;
    loop {
        let line = r.position().line() + 1;
        let more = match r.read_byte_record(&mut rec) {
            Ok(m) => m,
            Err(e) => {
                chunk.push((line, Err(format!("bad CSV: {e}"))));
                let _ = tx.send(chunk);
                return Ok(());
            }
        };
        if !more {
            break;
        }
        let line = rec.position().map_or(line, csv::Position::line);
        let byte = r.position().byte();
        progress(byte - last_byte);
        last_byte = byte;
        let cells: std::result::Result<Vec<&str>, _> =
            rec.iter().map(std::str::from_utf8).collect();
        let parsed = match cells {
            Ok(cells) => parse_csv_record(&header, &cells, spec),
            Err(_) => Err("invalid UTF-8".to_string()),
        };
        chunk.push((line, parsed));
        if !send_if_full(&mut chunk, tx) {
            return Ok(());
        }
    }
    let _ = tx.send(chunk);
    Ok(())
}

/// Imports `input` into one atomic transaction. `progress` is called with the
/// number of input bytes consumed since the last call.
pub fn import(
    writer: &Writer,
    input: impl Read + Send,
    opts: &ImportOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ImportReport> {
    crate::storage::record::validate_stream_name(&opts.stream)?;
    let bad = |line: u64, reason: String| Error::BadInput {
        file: opts.source.clone(),
        line,
        reason,
    };
    let (tx, rx) = crossbeam_channel::bounded::<Parsed>(4);
    std::thread::scope(|scope| {
        let parser = scope.spawn(move || match opts.format {
            Format::Jsonl => {
                parse_jsonl(input, &opts.spec, &tx, progress).map_err(|e| (0, e.to_string()))
            }
            Format::Csv => parse_csv(input, &opts.spec, &tx, progress),
        });
        let mut txn = writer.transaction()?;
        let mut report = ImportReport::default();
        let mut failure = None;
        'outer: for chunk in &rx {
            for (line, parsed) in chunk {
                // A bad line is skipped or fails the import; any other error fails it.
                let reason = match parsed {
                    Ok(ev) => match txn.push(
                        &opts.stream,
                        ev.key.as_bytes(),
                        ev.op,
                        &ev.value,
                        ev.event_time,
                    ) {
                        Ok(_) => continue,
                        Err(Error::InvalidInput(r)) => r,
                        Err(other) => {
                            failure = Some(other);
                            break 'outer;
                        }
                    },
                    Err(reason) => reason,
                };
                if !opts.skip_invalid {
                    failure = Some(bad(line, reason));
                    break 'outer;
                }
                report.skipped += 1;
                if report.skipped_examples.len() < EXAMPLES {
                    report.skipped_examples.push(bad(line, reason).to_string());
                }
            }
        }
        drop(rx);
        let parsed = parser
            .join()
            .unwrap_or_else(|_| Err((0, "parser thread panicked".into())));
        if let Some(f) = failure {
            return Err(f);
        }
        if let Err((line, e)) = parsed {
            return Err(bad(line, e));
        }
        report.imported = txn.len();
        let receipt = txn.commit()?;
        report.positions = receipt.positions;
        Ok(report)
    })
}
