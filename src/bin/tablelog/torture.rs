//! `tablelog torture-writer` (hidden): the child process of the crash tests.
//!
//! Appends batches with sync durability and prints `ACK <end position>` after each
//! acknowledged commit, until killed or `--batches` is reached. Every record is
//! self-describing (`p<first position of its batch>-<index>-<batch size>`), so a
//! checker can prove, after a crash, that every batch is whole and every
//! acknowledged one is there.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use tablelog::{Batch, Db, Durability};

use crate::args::CliResult;
use crate::Outcome;

#[derive(Args, Debug)]
pub struct TortureArgs {
    /// Database directory.
    db: PathBuf,
    /// Seed for batch sizes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop after this many batches.
    #[arg(long, default_value_t = u64::MAX)]
    batches: u64,
    /// Segment size (small, to roll often).
    #[arg(long, default_value_t = 64 << 10)]
    segment_size: u64,
}

pub fn run(a: TortureArgs) -> CliResult<Outcome> {
    let db = Db::builder(&a.db)
        .durability(Durability::Sync)
        .segment_size(a.segment_size)
        .open()?;
    let w = db.writer();
    let mut next = db.snapshot()?.end_position();
    let mut rng = a.seed ^ next.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let out = std::io::stdout();
    for _ in 0..a.batches {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let n = 1 + rng % 8;
        let mut b = Batch::new();
        for j in 0..n {
            let stream = ["a", "b", "c"][(j % 3) as usize];
            let value = vec![b'0' + (j % 10) as u8; 20 + (rng % 700) as usize];
            b.put_at(stream, format!("p{next}-{j}-{n}"), value, (next + j) as i64)?;
        }
        let r = w.commit(b)?;
        next = r.positions.end;
        let mut o = out.lock();
        writeln!(o, "ACK {next}")?;
        o.flush()?;
    }
    Ok(Outcome::Ok)
}
