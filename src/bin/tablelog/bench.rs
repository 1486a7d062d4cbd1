//! `tablelog bench`: the standard throughput suite, with the machine's own
//! ceilings measured in the same run.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use tablelog::workload::{Rng, Workload};
use tablelog::{Agg, Batch, Db, Durability, Request, Table};

use crate::args::{size_arg, CliResult};
use crate::init::durability;
use crate::Outcome;

/// Run the standard benchmark suite on a temporary database and print a table.
///
/// Measures, in one run: the machine's ceilings (raw CRC'd sequential write,
/// buffered and with fdatasync every batch; one dependent random memory read,
/// on 2 MiB pages and on 4 KiB pages; memory copy), buffered append (100-byte and 1 KiB values), sync group
/// commit from 1, 4 and 16 threads, full scan, read by position, get as of T,
/// table as of T, as-of join and window over 100k requests, open time (and
/// the first get after it) and recovery time after a torn tail. Each tablelog rate is also shown as a
/// fraction of its ceiling, each lookup's latency as a multiple of one memory
/// read. Appends alternate with their ceilings (`--rounds`), medians shown.
///
/// Example: tablelog bench --records 2000000 --keys 100000 --dir /mnt/nvme/tmp --json
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Events appended for the read and query benchmarks.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Value size in bytes for the main workload.
    #[arg(long, default_value = "100", value_parser = size_arg)]
    value_size: u64,
    /// Durability of the append benchmark (group commit always uses sync).
    #[arg(long, default_value = "buffered")]
    durability: String,
    /// Directory for the temporary database (to measure your own disk).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Rounds of each append measurement, alternated with the raw ceiling it
    /// is compared with; medians are reported (of an even count, the slower
    /// of the middle two).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// The generated events, their keys and values each in one contiguous
/// arena, as a writer holds what it is about to append: tablelog and the raw
/// ceilings read the same bytes from here. (Held as a `Vec` per key and
/// value, the input's scattered reads cost the raw ceiling 13–15% of its
/// speed, a handicap the engine it is compared with hardly feels.)
struct Recs {
    keys: Vec<u8>,
    values: Vec<u8>,
    /// Record `i`'s key ends at `ends[i].0` in `keys`, its value at
    /// `ends[i].1` in `values`.
    ends: Vec<(usize, usize)>,
    times: Vec<i64>,
}

impl Recs {
    fn len(&self) -> usize {
        self.times.len()
    }

    /// Record `i`: key, value, event time.
    fn get(&self, i: usize) -> (&[u8], &[u8], i64) {
        let (k0, v0) = if i == 0 { (0, 0) } else { self.ends[i - 1] };
        let (k1, v1) = self.ends[i];
        (&self.keys[k0..k1], &self.values[v0..v1], self.times[i])
    }

    /// Records `range`, in order.
    fn iter(
        &self,
        range: std::ops::Range<usize>,
    ) -> impl Iterator<Item = (&[u8], &[u8], i64)> + '_ {
        range.map(|i| self.get(i))
    }

    /// The records in runs of up to `n`.
    fn batches(&self, n: usize) -> Vec<std::ops::Range<usize>> {
        (0..self.len())
            .step_by(n.max(1))
            .map(|s| s..(s + n).min(self.len()))
            .collect()
    }
}

struct Row {
    name: String,
    params: String,
    value: f64,
    unit: &'static str,
    ceiling: Option<(String, f64)>,
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// Runs of each `table` measurement; the median is reported.
const TABLE_RUNS: usize = 5;

/// Reads every row of `table` the fastest way, borrowed ([`Table::next_ref`]).
fn count_rows(mut table: Table) -> tablelog::Result<u64> {
    let mut n = 0;
    while let Some(row) = table.next_ref() {
        row?;
        n += 1;
    }
    Ok(n)
}

/// Runs `f` `runs` times; its (last) result and the median time.
fn median_of<T>(
    runs: usize,
    mut f: impl FnMut() -> tablelog::Result<T>,
) -> tablelog::Result<(T, Duration)> {
    let mut times = Vec::with_capacity(runs);
    let mut out = None;
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        out = Some(f()?);
        times.push(start.elapsed());
    }
    let out = out.expect("at least one run");
    Ok((out, percentile(&mut times, 0.5)))
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn records(w: &Workload, n: u64) -> Recs {
    let mut rng = Rng(11);
    let mut recs = Recs {
        keys: Vec::new(),
        values: Vec::new(),
        ends: Vec::with_capacity(n as usize),
        times: Vec::with_capacity(n as usize),
    };
    for i in 0..n {
        let (k, t) = w.event(i, &mut rng);
        recs.keys.extend_from_slice(&w.key(k));
        recs.values.extend_from_slice(&w.value(i));
        recs.ends.push((recs.keys.len(), recs.values.len()));
        recs.times.push(t);
    }
    recs
}

/// Raw ceiling ([`tablelog::workload::raw_append`]) over `recs`.
fn raw_append(
    dir: &std::path::Path,
    recs: &Recs,
    sync_every: Option<usize>,
) -> CliResult<Duration> {
    Ok(tablelog::workload::raw_append(
        &dir.join("raw-ceiling.bin"),
        recs.iter(0..recs.len()),
        sync_every,
    )?)
}

/// Appends `recs` to a new database in `dir` in batches of 1,000 and flushes
/// it; the time taken. The database is removed afterwards.
fn append_once(dir: &std::path::Path, recs: &Recs, durability: Durability) -> CliResult<Duration> {
    // Automatic checkpoints off: this measures the append path alone (the
    // checkpoint step measures what one costs).
    let db = Db::builder(dir)
        .durability(durability)
        .checkpoint_every(0)
        .open()?;
    let writer = db.writer();
    let start = Instant::now();
    for batch in recs.batches(1000) {
        let mut b = Batch::new();
        for (k, v, t) in recs.iter(batch) {
            b.put_at("bench", k, v, t)?;
        }
        writer.commit(b)?;
    }
    db.flush()?;
    let took = start.elapsed();
    // The writer holds the database open too: its background merge may still
    // be writing files into `dir` until both are gone.
    drop(writer);
    drop(db);
    std::fs::remove_dir_all(dir)?;
    Ok(took)
}

/// `threads` writers each commit `per_thread` of `batches` (dealt out in
/// turn) with sync durability, to a new database in `dir`; the time taken.
/// The database is removed afterwards.
fn group_commit_once(
    dir: &std::path::Path,
    recs: &Recs,
    batches: &[std::ops::Range<usize>],
    threads: u64,
    per_thread: u64,
) -> CliResult<Duration> {
    let db = Db::builder(dir)
        .durability(Durability::Sync)
        .checkpoint_every(0)
        .open()?;
    let start = Instant::now();
    std::thread::scope(|s| -> CliResult<()> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let writer = db.writer();
                s.spawn(move || -> tablelog::Result<()> {
                    for i in 0..per_thread {
                        let at = (i * threads + t) as usize % batches.len();
                        let mut b = Batch::new();
                        for (k, v, t) in recs.iter(batches[at].clone()) {
                            b.put_at("bench", k, v, t)?;
                        }
                        writer.commit(b)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| crate::args::msg("writer thread panicked"))??;
        }
        Ok(())
    })?;
    let took = start.elapsed();
    drop(db);
    std::fs::remove_dir_all(dir)?;
    Ok(took)
}

fn memcpy_rate() -> f64 {
    let src = vec![7u8; 64 << 20];
    let mut dst = vec![0u8; 64 << 20];
    // One untimed copy first: the ceiling is copying, not faulting pages in.
    dst.copy_from_slice(&src);
    std::hint::black_box(&dst);
    let start = Instant::now();
    for _ in 0..8 {
        dst.copy_from_slice(&src);
        std::hint::black_box(&dst);
    }
    rate(8 * (64 << 20), start.elapsed())
}

/// Bytes the memory-latency ceiling chases pointers through: larger than the
/// caches of most machines (this one's L3 holds 36 MiB: see the README).
const CHASE_BYTES: usize = 512 << 20;

/// The pages a pointer chase runs on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pages {
    /// 2 MiB pages (`MADV_HUGEPAGE`): a read costs the memory's latency, the
    /// TLB covering the whole buffer.
    Huge,
    /// 4 KiB pages (`MADV_NOHUGEPAGE`): most reads also miss the TLB, and
    /// walk the page tables first.
    Small,
}

/// The latency of one dependent read at a random place in memory, in µs,
/// on the pages asked for, and the pages granted (the kernel may refuse
/// huge pages: `transparent_hugepage` set to `never`, or none free). A
/// pointer chase through `CHASE_BYTES`, each slot naming the next along one
/// full cycle of a linear congruential sequence (no stride a prefetcher
/// could follow), median of 5 runs of 200k reads: what a lookup that must
/// follow one pointer before it can read the next pays per pointer.
///
/// Both are measured because they differ by half or more on a virtual
/// machine: with 4 KiB pages the chase also walks page tables for most
/// reads. Lookups are set against the 2 MiB figure, the memory's own
/// latency. tablelog's key index files are written whole, so the kernel
/// caches them in large folios and maps them 2 MiB at a time (`SMAPS=1
/// examples/profile_get` shows it); segments, written a batch at a time,
/// and the heap are mapped 4 KiB at a time.
fn memory_read_latency(pages: Pages) -> std::io::Result<(f64, Pages)> {
    let n = CHASE_BYTES / 4;
    debug_assert!(n.is_power_of_two());
    let huge_before = anon_huge_bytes();
    let mut next = memmap2::MmapMut::map_anon(CHASE_BYTES)?;
    // Refused advice leaves the default pages; what was granted is read back
    // (elsewhere than Linux there is no such advice, and 4 KiB is reported).
    #[cfg(target_os = "linux")]
    let _ = next.advise(match pages {
        Pages::Huge => memmap2::Advice::HugePage,
        Pages::Small => memmap2::Advice::NoHugePage,
    });
    #[cfg(not(target_os = "linux"))]
    let _ = pages;
    // i -> (5 i + 12345) mod 2^k has a single cycle through every slot.
    for (i, slot) in next.chunks_exact_mut(4).enumerate() {
        let to = (i.wrapping_mul(5).wrapping_add(12_345) & (n - 1)) as u32;
        slot.copy_from_slice(&to.to_ne_bytes());
    }
    let granted = match anon_huge_bytes().saturating_sub(huge_before) {
        h if h >= CHASE_BYTES / 2 => Pages::Huge,
        _ => Pages::Small,
    };
    let read = |at: u32| {
        let i = at as usize * 4;
        u32::from_ne_bytes([next[i], next[i + 1], next[i + 2], next[i + 3]])
    };
    let steps = 200_000;
    let mut at = 0u32;
    let mut runs: Vec<Duration> = (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..steps {
                at = read(at);
            }
            start.elapsed()
        })
        .collect();
    std::hint::black_box(at);
    let latency = percentile(&mut runs, 0.5).as_secs_f64() * 1e6 / steps as f64;
    Ok((latency, granted))
}

/// Bytes of anonymous memory this process has on 2 MiB pages
/// (`AnonHugePages` in `/proc/self/smaps_rollup`; 0 where it cannot tell).
fn anon_huge_bytes() -> usize {
    std::fs::read_to_string("/proc/self/smaps_rollup")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("AnonHugePages:"))?;
            let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb << 10)
        })
        .unwrap_or(0)
}

pub fn run(a: BenchArgs) -> CliResult<Outcome> {
    let tmp = match &a.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let base = tmp.path();
    let w = Workload {
        events: a.records,
        keys: a.keys.max(1),
        value_size: a.value_size as usize,
        ..Workload::default()
    };
    let append_durability = durability(&a.durability).map_err(crate::args::msg)?;
    let steps = 11u64;
    let bar = ProgressBar::with_draw_target(Some(steps), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} bench [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut rows: Vec<Row> = Vec::new();
    let rec_bytes = (w.key_size + w.value_size + 17) as f64;

    // Ceilings and appends. The disk's speed drifts by a third within seconds
    // on a shared machine, so each append measurement alternates with its raw
    // ceiling, `--rounds` times, and both report their median.
    let rounds = a.rounds.max(1);
    let n_ceiling = a.records.min(2_000_000);
    let recs = records(&w, n_ceiling);
    let mut raw_buf_runs = Vec::with_capacity(rounds);
    let mut append_runs = Vec::with_capacity(rounds);
    for r in 0..rounds {
        bar.set_message(format!("append 100-byte values, round {}/{rounds}", r + 1));
        raw_buf_runs.push(raw_append(base, &recs, None)?);
        append_runs.push(append_once(&base.join("append"), &recs, append_durability)?);
    }
    let big = Workload {
        value_size: 1024,
        ..w
    };
    let big_recs = records(&big, n_ceiling / 4);
    bar.set_message("append 1 KiB values");
    let big_took = append_once(&base.join("append-1k"), &big_recs, append_durability)?;
    drop(big_recs);
    bar.inc(1);

    // Group commit, sync durability: the same records as the ceilings, in
    // batches of 1,000 dealt out to the threads in turn.
    let batches = recs.batches(1000);
    let thread_counts = [1u64, 4, 16];
    let mut raw_sync_runs = Vec::with_capacity(rounds);
    let mut commit_runs = vec![Vec::with_capacity(rounds); thread_counts.len()];
    for r in 0..rounds {
        bar.set_message(format!("group commit, round {}/{rounds}", r + 1));
        raw_sync_runs.push(raw_append(base, &recs, Some(1000))?);
        for (i, &threads) in thread_counts.iter().enumerate() {
            commit_runs[i].push(group_commit_once(
                &base.join(format!("gc{threads}")),
                &recs,
                &batches,
                threads,
                (n_ceiling / 1000 / threads).max(4),
            )?);
        }
    }
    drop(batches);
    bar.inc(1);

    let of = |n: u64, runs: &mut Vec<Duration>| rate(n, percentile(runs, 0.5));
    let raw_buf = of(n_ceiling, &mut raw_buf_runs);
    let raw_sync = of(n_ceiling, &mut raw_sync_runs);
    let mem = memcpy_rate();
    let (mem_read, mem_pages) = memory_read_latency(Pages::Huge)?;
    let (small_read, _) = memory_read_latency(Pages::Small)?;
    let medians = format!("median of {rounds}");
    rows.push(Row {
        name: "ceiling: raw CRC'd append, 1 fsync".into(),
        params: format!("{n_ceiling} records, {medians}"),
        value: raw_buf,
        unit: "rec/s",
        ceiling: None,
    });
    rows.push(Row {
        name: "ceiling: raw CRC'd append, fdatasync/1000".into(),
        params: format!("{n_ceiling} records, {medians}"),
        value: raw_sync,
        unit: "rec/s",
        ceiling: None,
    });
    let chase = format!("random, in {} MiB", CHASE_BYTES >> 20);
    rows.push(Row {
        name: "ceiling: dependent memory read".into(),
        params: match mem_pages {
            Pages::Huge => format!("{chase}, 2 MiB pages"),
            Pages::Small => format!("{chase}, 4 KiB pages (no huge pages granted)"),
        },
        value: mem_read,
        unit: "µs",
        ceiling: None,
    });
    rows.push(Row {
        name: "memory read, 4 KiB pages".into(),
        params: format!("{chase}, TLB misses included"),
        value: small_read,
        unit: "µs",
        ceiling: Some(("memory read".into(), mem_read)),
    });
    rows.push(Row {
        name: "ceiling: memory copy".into(),
        params: "64 MiB × 8".into(),
        value: mem / 1e9,
        unit: "GB/s",
        ceiling: None,
    });
    rows.push(Row {
        name: format!("append {}, batches of 1000", a.durability),
        params: format!(
            "{n_ceiling} × {}B, {}B value, {medians}",
            w.key_size, w.value_size
        ),
        value: of(n_ceiling, &mut append_runs),
        unit: "rec/s",
        ceiling: Some(("raw append".to_string(), raw_buf)),
    });
    rows.push(Row {
        name: format!("append {}, batches of 1000", a.durability),
        params: format!("{} × {}B, 1024B value", n_ceiling / 4, w.key_size),
        value: rate(n_ceiling / 4, big_took),
        unit: "rec/s",
        ceiling: None,
    });
    for (runs, threads) in commit_runs.iter_mut().zip(thread_counts) {
        let n = (n_ceiling / 1000 / threads).max(4) * threads * 1000;
        rows.push(Row {
            name: format!("append sync, group commit {threads} thr"),
            params: format!("{} batches of 1000, {medians}", n / 1000),
            value: of(n, runs),
            unit: "rec/s",
            ceiling: Some(("raw fdatasync".into(), raw_sync)),
        });
    }

    // The main database for reads and queries.
    bar.set_message(format!("loading {} events", w.events));
    let dir = base.join("main");
    let db = Db::open(&dir)?;
    w.load(&db.writer(), "bench", |_| {})?;
    db.flush()?;
    let snap = db.snapshot()?;
    bar.inc(1);

    bar.set_message("full scan");
    let start = Instant::now();
    let bytes: usize = snap
        .view()
        .scan(0, None)
        .map(|r| r.map(|r| r.key.len() + r.value.len()))
        .sum::<tablelog::Result<usize>>()?;
    let d = start.elapsed();
    rows.push(Row {
        name: "full scan".into(),
        params: format!("{} records, {} MB", w.events, bytes / 1_000_000),
        value: rate(w.events, d),
        unit: "rec/s",
        ceiling: Some(("memory copy".into(), mem / rec_bytes)),
    });
    bar.inc(1);

    bar.set_message("point reads");
    let mut rng = Rng(3);
    let mut lat: Vec<Duration> = (0..20_000)
        .map(|_| {
            let p = rng.below(w.events);
            let s = Instant::now();
            let _ = std::hint::black_box(snap.view().read(p));
            s.elapsed()
        })
        .collect();
    rows.push(Row {
        name: "read by position, median".into(),
        params: "20k random".into(),
        value: percentile(&mut lat, 0.5).as_secs_f64() * 1e6,
        unit: "µs",
        ceiling: Some(("memory read".into(), mem_read)),
    });
    let mid = (w.events as i64 / 2) * w.step_us;
    // `get` reads records through a mapping of their own (advised random,
    // for cold lookups), which the scan above did not touch: a first pass,
    // untimed, maps its pages (a minor fault per 64 KiB on first touch).
    for _ in 0..20_000 {
        let k = w.key(rng.below(w.keys));
        let _ = std::hint::black_box(snap.get("bench", &k, mid, None));
    }
    let mut lat: Vec<Duration> = (0..20_000)
        .map(|_| {
            let k = w.key(rng.below(w.keys));
            let s = Instant::now();
            let _ = std::hint::black_box(snap.get("bench", &k, mid, None));
            s.elapsed()
        })
        .collect();
    rows.push(Row {
        name: "get as of T, median".into(),
        params: "20k random keys, after 20k untimed".into(),
        value: percentile(&mut lat, 0.5).as_secs_f64() * 1e6,
        unit: "µs",
        ceiling: Some(("memory read".into(), mem_read)),
    });
    rows.push(Row {
        name: "get as of T, p99".into(),
        params: "20k random keys, after 20k untimed".into(),
        value: percentile(&mut lat, 0.99).as_secs_f64() * 1e6,
        unit: "µs",
        ceiling: None,
    });
    bar.inc(1);

    bar.set_message("table as of T");
    let (live, took) = median_of(TABLE_RUNS, || count_rows(snap.table("bench", mid, None)?))?;
    rows.push(Row {
        name: "table as of T (scratch)".into(),
        params: format!(
            "{live} live rows of {} keys, median of {TABLE_RUNS}",
            w.keys
        ),
        value: took.as_secs_f64() * 1e3,
        unit: "ms",
        ceiling: None,
    });
    bar.inc(1);

    bar.set_message("checkpoint");
    // A checkpoint as of the latest event time, then 1% more events (some late),
    // then the latest table with and without it.
    let max_t = (w.events as i64) * w.step_us;
    db.checkpoint("bench", Some(max_t))?;
    let more = Workload {
        events: (w.events / 100).max(1),
        ..w
    };
    let mut rng2 = Rng(17);
    let mut b = Batch::new();
    for i in 0..more.events {
        let (k, t) = more.event(i, &mut rng2);
        b.put_at(
            "bench",
            w.key(k),
            w.value(i),
            max_t - 3_600_000_000 + t % 7_200_000_000,
        )?;
    }
    db.writer().commit(b)?;
    let snap = db.snapshot()?;
    let latest = max_t + 3_600_000_000;
    // Medians: the first run after the tail's commit may also wait for a
    // segment it rolled to be sealed in the background.
    let (n1, scratch) = median_of(TABLE_RUNS, || {
        count_rows(snap.table_from_scratch("bench", latest, None)?)
    })?;
    let used = snap.table("bench", latest, None)?.from_checkpoint();
    let (n2, from_ck) = median_of(TABLE_RUNS, || {
        count_rows(snap.table("bench", latest, None)?)
    })?;
    if n1 != n2 {
        return Err(crate::args::msg(format!(
            "checkpoint table has {n2} rows, scratch {n1}"
        )));
    }
    rows.push(Row {
        name: "table as of latest (scratch)".into(),
        params: format!(
            "{n1} rows, {} tail events, median of {TABLE_RUNS}",
            more.events
        ),
        value: scratch.as_secs_f64() * 1e3,
        unit: "ms",
        ceiling: None,
    });
    rows.push(Row {
        name: format!(
            "table as of latest (checkpoint{})",
            if used { "" } else { " NOT USED" }
        ),
        params: format!(
            "{:.1}× faster than scratch",
            scratch.as_secs_f64() / from_ck.as_secs_f64()
        ),
        value: from_ck.as_secs_f64() * 1e3,
        unit: "ms",
        ceiling: None,
    });
    bar.inc(1);

    bar.set_message("views");
    let start = Instant::now();
    let view = db.register_view(
        "bench_latest",
        tablelog::ViewDef::Table {
            stream: "bench".into(),
        },
        &mut |_| {},
    )?;
    let backfill = start.elapsed();
    let agg = db.register_view(
        "bench_max_by_key",
        tablelog::ViewDef::Aggregate {
            stream: "bench".into(),
            field: "price".into(),
            agg: Agg::Max,
            group_by: tablelog::GroupBy::Key,
        },
        &mut |_| {},
    )?;
    let mut lat: Vec<Duration> = (0..20_000)
        .map(|_| {
            let k = w.key(rng.below(w.keys));
            let s = Instant::now();
            std::hint::black_box(view.row(&k));
            s.elapsed()
        })
        .collect();
    rows.push(Row {
        name: "view read (table view), median".into(),
        params: format!(
            "backfill of {} events took {:.2} s",
            w.events + more.events,
            backfill.as_secs_f64()
        ),
        value: percentile(&mut lat, 0.5).as_secs_f64() * 1e6,
        unit: "µs",
        ceiling: None,
    });
    let mut lat: Vec<Duration> = (0..20_000)
        .map(|_| {
            let k = w.key(rng.below(w.keys));
            let s = Instant::now();
            std::hint::black_box(agg.aggregate(&k));
            s.elapsed()
        })
        .collect();
    rows.push(Row {
        name: "view read (max by key), median".into(),
        params: "20k random keys".into(),
        value: percentile(&mut lat, 0.5).as_secs_f64() * 1e6,
        unit: "µs",
        ceiling: None,
    });
    bar.inc(1);

    bar.set_message("join and window");
    let requests: Vec<Request> = (0..100_000)
        .map(|_| Request {
            key: Bytes::from(w.key(rng.below(w.keys))),
            time: rng.below(w.events) as i64 * w.step_us,
        })
        .collect();
    let start = Instant::now();
    snap.asof_join(&requests, &["bench"], None, None)?;
    rows.push(Row {
        name: "as-of join".into(),
        params: "100k requests".into(),
        value: start.elapsed().as_secs_f64() * 1e3,
        unit: "ms",
        ceiling: None,
    });
    let start = Instant::now();
    snap.window("bench", "price", Agg::Avg, 1_800_000_000, &requests, None)?;
    rows.push(Row {
        name: "window avg 30m".into(),
        params: "100k requests".into(),
        value: start.elapsed().as_secs_f64() * 1e3,
        unit: "ms",
        ceiling: None,
    });
    // The same windows through a field column of `price`: the first run
    // checks the pages it reads (as a fresh process would), the second is
    // warm.
    let start = Instant::now();
    db.build_column("bench", "price", &mut |_| {})?;
    let built = start.elapsed();
    let snap = db.snapshot()?;
    let start = Instant::now();
    snap.window("bench", "price", Agg::Avg, 1_800_000_000, &requests, None)?;
    let first = start.elapsed();
    let start = Instant::now();
    snap.window("bench", "price", Agg::Avg, 1_800_000_000, &requests, None)?;
    let warm = start.elapsed();
    // Built again: from the column it replaces (nothing after it to read).
    let start = Instant::now();
    db.build_column("bench", "price", &mut |_| {})?;
    let rebuilt = start.elapsed();
    rows.push(Row {
        name: "window, field column".into(),
        params: format!(
            "100k requests, first use; warm {:.1} ms; built in {:.2} s, again in {:.2} s",
            warm.as_secs_f64() * 1e3,
            built.as_secs_f64(),
            rebuilt.as_secs_f64()
        ),
        value: first.as_secs_f64() * 1e3,
        unit: "ms",
        ceiling: None,
    });
    bar.inc(1);

    bar.set_message("open and recovery");
    drop(snap);
    drop(db);
    let start = Instant::now();
    let db = Db::open(&dir)?;
    rows.push(Row {
        name: "open".into(),
        params: format!("{} events", w.events),
        value: start.elapsed().as_secs_f64() * 1e3,
        unit: "ms",
        ceiling: None,
    });
    // What a user waits for before the first answer: the first snapshot and
    // `get` on the new handle (key indexes are checked as they are read).
    let start = Instant::now();
    let first = db.snapshot()?.get("bench", &w.key(0), mid, None)?;
    std::hint::black_box(first);
    rows.push(Row {
        name: "first get after open".into(),
        params: "snapshot + get, warm cache".into(),
        value: start.elapsed().as_secs_f64() * 1e3,
        unit: "ms",
        ceiling: None,
    });
    drop(db);
    let active = tablelog::storage::segment::list(&tablelog::storage::vfs::OsVfs, &dir)?
        .pop()
        .map(|(_, p)| p);
    if let Some(active) = active {
        let mut f = std::fs::OpenOptions::new().append(true).open(&active)?;
        f.write_all(&[0x5a; 3000])?;
    }
    let start = Instant::now();
    let db = Db::open(&dir)?;
    rows.push(Row {
        name: "recovery after torn tail".into(),
        params: format!("{} bytes cut", db.recovery().truncated_bytes),
        value: start.elapsed().as_secs_f64() * 1e3,
        unit: "ms",
        ceiling: None,
    });
    bar.inc(1);

    // Compaction to the median time: every key keeps its version at the median
    // and what follows, so about half of the history goes.
    bar.set_message("compaction");
    let r = db.compact(mid, &mut |_, _| {})?;
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    rows.push(Row {
        name: "compaction to T".into(),
        params: format!(
            "{} of {} sealed segs, {:.0} MB read",
            r.segments_rewritten,
            r.segments_before,
            r.bytes_read as f64 / 1e6
        ),
        value: r.bytes_read as f64 / 1e6 / secs,
        unit: "MB/s",
        ceiling: Some(("raw append".into(), raw_buf * rec_bytes / 1e6)),
    });
    rows.push(Row {
        name: "compaction: space reclaimed".into(),
        params: format!(
            "{:.0} -> {:.0} MB sealed, {} records dropped",
            r.sealed_bytes_before as f64 / 1e6,
            r.sealed_bytes_after as f64 / 1e6,
            r.records_dropped
        ),
        value: 100.0 * r.sealed_bytes_before.saturating_sub(r.sealed_bytes_after) as f64
            / (r.sealed_bytes_before.max(1) as f64),
        unit: "%",
        ceiling: None,
    });
    drop(db);
    bar.inc(1);
    bar.finish_and_clear();

    if a.json {
        let v: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({"name": r.name, "params": r.params, "value": r.value, "unit": r.unit,
                // A rate as a fraction of its ceiling, a latency as a multiple.
                "ceiling": r.ceiling.as_ref().map(|(n, c)| if r.unit == "µs" {
                    json!({"name": n, "value": c, "multiple": r.value / c})
                } else {
                    json!({"name": n, "value": c, "fraction": r.value / c})
                })})
            })
            .collect();
        crate::outln!("{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        crate::outln!(
            "{:<42} {:<38} {:>14}  {}",
            "benchmark",
            "parameters",
            "result",
            "of ceiling"
        )?;
        for r in &rows {
            let val = if r.value >= 1000.0 {
                format!("{:.0} {}", r.value, r.unit)
            } else {
                format!("{:.2} {}", r.value, r.unit)
            };
            // A rate is a fraction of its ceiling; a latency a multiple of it.
            let frac = r.ceiling.as_ref().map_or(String::new(), |(n, c)| {
                if r.unit == "µs" {
                    format!("{:.1}× a {n}", r.value / c)
                } else {
                    format!("{:.0}% of {n}", 100.0 * r.value / c)
                }
            });
            crate::outln!("{:<42} {:<38} {:>14}  {}", r.name, r.params, val, frac)?;
        }
        crate::outln!(
            "Appends (batches of 1000) alternate with their ceilings, {rounds} rounds; medians shown."
        )?;
    }
    Ok(Outcome::Ok)
}
