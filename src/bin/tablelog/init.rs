//! `tablelog init`.

use std::path::PathBuf;

use clap::Args;
use tablelog::{Compression, Db, Durability};

use crate::args::{duration_arg, msg, size_arg, CliResult};
use crate::Outcome;

/// Create a database with the given settings (stored in it and shown by stats).
///
/// Example: tablelog init ./db --segment-size 16MiB --compression zstd:3 --durability sync
#[derive(Args, Debug)]
pub struct InitArgs {
    /// Database directory (created if missing; must not hold a database yet).
    pub db: PathBuf,
    /// Size at which a segment is sealed, e.g. 4MiB, 1GiB (default 64MiB).
    #[arg(long, value_parser = size_arg)]
    pub segment_size: Option<u64>,
    /// Per-batch compression: none, zstd or zstd:LEVEL (1-22). Default none.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Durability of commits: buffered, sync, or periodic:DURATION. Default buffered.
    #[arg(long, default_value = "buffered")]
    pub durability: String,
}

/// Parses `buffered|sync|periodic:DURATION`.
pub fn durability(s: &str) -> Result<Durability, String> {
    match s {
        "buffered" => Ok(Durability::Buffered),
        "sync" => Ok(Durability::Sync),
        _ => match s.strip_prefix("periodic:") {
            Some(d) => {
                let us = duration_arg(d)?;
                if us <= 0 {
                    return Err("periodic interval must be positive".into());
                }
                Ok(Durability::Periodic(std::time::Duration::from_micros(
                    us as u64,
                )))
            }
            None => Err(format!(
                "unknown durability {s:?}: expected buffered, sync or periodic:DURATION"
            )),
        },
    }
}

pub fn run(a: InitArgs) -> CliResult<Outcome> {
    if a.db.join(tablelog::storage::meta::META_FILE).exists() {
        return Err(msg(format!(
            "{} already holds a tablelog database",
            a.db.display()
        )));
    }
    let compression = Compression::parse(&a.compression).ok_or_else(|| {
        msg(format!(
            "unknown compression {:?}: expected none, zstd or zstd:1..22",
            a.compression
        ))
    })?;
    let durability = durability(&a.durability).map_err(msg)?;
    let mut b = Db::builder(&a.db)
        .compression(compression)
        .durability(durability);
    if let Some(s) = a.segment_size {
        b = b.segment_size(s);
    }
    let db = b.open()?;
    let s = db.settings();
    eprintln!(
        "created {} (segment size {} bytes, compression {}, durability {})",
        a.db.display(),
        s.segment_size,
        s.compression,
        s.durability
    );
    Ok(Outcome::Ok)
}
