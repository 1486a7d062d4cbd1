//! `tablelog verify` and `tablelog stats`.

use std::path::PathBuf;

use clap::Args;
use tablelog::ingest::time::format_time;
use tablelog::storage::meta::Settings;

use crate::args::{msg, open_read, CliResult};
use crate::Outcome;

/// Check every checksum, position and index of a database; report each problem
/// with its file and byte offset. Exits non-zero if there is any.
///
/// Example: tablelog verify ./db
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Database directory.
    db: PathBuf,
}

pub fn verify(a: VerifyArgs) -> CliResult<Outcome> {
    let r = tablelog::storage::verify::verify(&a.db)?;
    for p in &r.problems {
        crate::outln!(
            "{}: {}:{}: {}",
            if p.repairable {
                "repairable"
            } else {
                "damaged"
            },
            p.path.display(),
            p.offset,
            p.reason
        )?;
    }
    crate::outln!(
        "checked {} segments, {} frames, {} records: {} problems",
        r.segments,
        r.frames,
        r.records,
        r.problems.len()
    )?;
    if r.is_clean() {
        Ok(Outcome::Ok)
    } else {
        Err(msg(format!(
            "{} problems found in {}",
            r.problems.len(),
            a.db.display()
        )))
    }
}

/// Print what a database holds: settings, segments, records per stream, bytes,
/// compression ratio, position range and event-time range.
///
/// Example: tablelog stats ./db
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Database directory.
    db: PathBuf,
}

pub fn stats(a: StatsArgs) -> CliResult<Outcome> {
    let settings = Settings::load(&tablelog::storage::vfs::OsVfs, &a.db)?;
    let db = open_read(&a.db)?;
    let snap = db.snapshot()?;
    let s = tablelog::storage::stats::stats(snap.view())?;
    let total: u64 = s.segments.iter().map(|g| g.bytes).sum();
    crate::outln!("database      {}", a.db.display())?;
    crate::outln!(
        "settings      segment size {} bytes, compression {}, durability {}",
        settings.segment_size,
        settings.compression,
        settings.durability
    )?;
    crate::outln!(
        "segments      {} ({} sealed), {} bytes",
        s.segments.len(),
        s.segments.iter().filter(|g| g.sealed).count(),
        total
    )?;
    crate::outln!(
        "payload       {} bytes raw, {} stored, compression ratio {:.2}",
        s.raw_bytes,
        s.stored_bytes,
        s.compression_ratio()
    )?;
    let records: u64 = s.segments.iter().map(|g| g.records).sum();
    if s.end_position == 0 {
        crate::outln!("positions     none (empty)")?;
    } else if records == s.end_position {
        crate::outln!(
            "positions     0 to {} ({} records)",
            s.end_position - 1,
            s.end_position
        )?;
    } else {
        crate::outln!(
            "positions     0 to {} ({} records, {} dropped by compaction)",
            s.end_position - 1,
            records,
            s.end_position - records
        )?;
    }
    if let Some(h) = snap.horizon() {
        crate::outln!(
            "horizon       {} (queries must be as of it or later, known at position {} or later)",
            format_time(h.time),
            h.position.saturating_sub(1)
        )?;
    }
    if let Some((lo, hi)) = s.event_time {
        crate::outln!("event time    {} to {}", format_time(lo), format_time(hi))?;
    }
    for st in &s.streams {
        crate::outln!(
            "stream        {}: {} records, {} keys",
            st.name,
            st.records,
            st.keys
        )?;
    }
    for g in &s.segments {
        crate::outln!(
            "segment       {} first position {}, {} records, {} frames, {} bytes{}",
            g.path.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
            g.base,
            g.records,
            g.frames,
            g.bytes,
            if g.sealed { "" } else { " (active)" }
        )?;
    }
    Ok(Outcome::Ok)
}
