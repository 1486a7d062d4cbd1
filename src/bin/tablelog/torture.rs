//! `tablelog torture-writer` (hidden): the child process of the crash tests.
//!
//! Appends batches with sync durability and prints `ACK <end position>` after each
//! acknowledged commit, until killed or `--batches` is reached. One batch in six
//! is a streaming transaction of 100–299 records (about 37–110 KB), larger than
//! a small segment; half-way through one it prints `MID`, so a test can kill it
//! inside a transaction that spans segments. Every record is
//! self-describing (`p<first position of its batch>-<index>-<batch size>`), so a
//! checker can prove, after a crash, that every batch is whole and every
//! acknowledged one is there.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use tablelog::{Batch, Db, Durability, Op};

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
        let streaming = rng.is_multiple_of(6);
        let n = if streaming {
            100 + rng % 200
        } else {
            1 + rng % 8
        };
        let record = |j: u64| {
            let stream = ["a", "b", "c"][(j % 3) as usize];
            let value = vec![b'0' + (j % 10) as u8; 20 + ((rng >> 8) + j * 97) as usize % 700];
            (stream, format!("p{next}-{j}-{n}"), value, (next + j) as i64)
        };
        let r = if streaming {
            let mut tx = w.transaction()?;
            for j in 0..n {
                let (stream, key, value, t) = record(j);
                tx.push(stream, key.as_bytes(), Op::Put, &value, t)?;
                if j == n / 2 {
                    let mut o = out.lock();
                    writeln!(o, "MID")?;
                    o.flush()?;
                }
            }
            tx.commit()?
        } else {
            let mut b = Batch::new();
            for j in 0..n {
                let (stream, key, value, t) = record(j);
                b.put_at(stream, key, value, t)?;
            }
            w.commit(b)?
        };
        next = r.positions.end;
        let mut o = out.lock();
        writeln!(o, "ACK {next}")?;
        o.flush()?;
    }
    Ok(Outcome::Ok)
}
