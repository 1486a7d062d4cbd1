//! `tablelog demo`: the main job on embedded data, explained step by step.

use std::io::Cursor;
use std::path::PathBuf;

use bytes::Bytes;
use clap::Args;
use serde_json::{json, Value};
use tablelog::ingest::import::{import, Format, ImportOptions};
use tablelog::ingest::parse::FieldSpec;
use tablelog::ingest::time::{format_time, parse_time, TimeUnit};
use tablelog::{Agg, Db, GetResult, JsonMergePatch, KnownAt, Request, Snapshot};

use crate::args::{msg, CliResult};
use crate::out::to_object;
use crate::Outcome;

const INVENTORY: &str = include_str!("../../../data/inventory.jsonl");
const CORRECTIONS: &str = include_str!("../../../data/corrections.jsonl");

/// Build a small database from data shipped in the binary and show what tablelog
/// does: the inventory table as of two dates, a late correction that changes an
/// answer as of now but not as known at an earlier position, and a point-in-time
/// join of purchases to the average price of the items each user viewed in the
/// previous 30 minutes.
///
/// Example: tablelog demo --dir ./demo-db
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Keep the database here (must not exist yet); default: a temporary directory
    /// removed at the end.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Clickstream size: number of generated item views.
    #[arg(long, default_value_t = 5000)]
    views: usize,
    /// Seed of the generated clickstream.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn t(s: &str) -> CliResult<i64> {
    parse_time(s, TimeUnit::Millis).map_err(|e| msg(e.0))
}

fn load(
    db: &Db,
    stream: &str,
    key: &str,
    data: &str,
    source: &str,
) -> CliResult<std::ops::Range<u64>> {
    let opts = ImportOptions {
        stream: stream.into(),
        spec: FieldSpec {
            key: key.into(),
            time: "ts".into(),
            op: Some("op".into()),
            unit: TimeUnit::Millis,
        },
        format: Format::Jsonl,
        skip_invalid: false,
        source: source.into(),
    };
    Ok(import(
        &db.writer(),
        Cursor::new(data.as_bytes().to_vec()),
        &opts,
        &|_| {},
    )?
    .positions)
}

fn print_table(snap: &Snapshot, as_of: i64, known: KnownAt) -> CliResult<()> {
    crate::outln!(
        "    {:<8} {:>6} {:>5}   last change",
        "item",
        "price",
        "qty"
    )?;
    for row in snap.table("inventory", as_of, known)? {
        let row = row?;
        let o = to_object(&row.value);
        crate::outln!(
            "    {:<8} {:>6} {:>5}   {} (position {})",
            String::from_utf8_lossy(&row.key),
            o.get("price").map_or(String::new(), |v| format!(
                "{:.2}",
                v.as_f64().unwrap_or(f64::NAN)
            )),
            o.get("qty").map_or(String::new(), ToString::to_string),
            format_time(row.event_time),
            row.position
        )?;
    }
    Ok(())
}

pub fn run(a: DemoArgs) -> CliResult<Outcome> {
    let tmp;
    let dir = match &a.dir {
        Some(d) => {
            if d.join(tablelog::storage::meta::META_FILE).exists() {
                return Err(msg(format!(
                    "{} already holds a database; pick a new --dir",
                    d.display()
                )));
            }
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let db = Db::builder(&dir)
        .default_merge_operator(std::sync::Arc::new(JsonMergePatch))
        .open()?;

    crate::outln!("tablelog demo: an event log that rebuilds tables as of any time\n")?;
    crate::outln!("1. Import the inventory events (prices change, a patch updates only qty,")?;
    crate::outln!("   cherry is deleted, durian appears). One file = one atomic batch.")?;
    let p = load(&db, "inventory", "item", INVENTORY, "data/inventory.jsonl")?;
    crate::outln!(
        "   imported {} events at positions {}..={}\n",
        p.end - p.start,
        p.start,
        p.end - 1
    )?;
    let before_correction = p.end - 1;

    let snap = db.snapshot()?;
    for when in ["2024-01-01T12:00:00Z", "2024-01-03T12:00:00Z"] {
        crate::outln!("   inventory as of {when}:")?;
        print_table(&snap, t(when)?, KnownAt::Latest)?;
        crate::outln!()?;
    }

    crate::outln!("2. A late correction arrives: banana's price changed to 0.30 on")?;
    crate::outln!(
        "   2024-01-01T15:00 but is only recorded now (higher position, old event time)."
    )?;
    let c = load(
        &db,
        "inventory",
        "item",
        CORRECTIONS,
        "data/corrections.jsonl",
    )?;
    crate::outln!("   imported at position {}", c.start)?;
    let snap = db.snapshot()?;
    let at = t("2024-01-02T18:00:00Z")?;
    let show = |label: &str, r: GetResult| {
        let v = match r {
            GetResult::Present(row) => {
                let o = to_object(&row.value);
                format!(
                    "price {}, qty {}",
                    o.get("price").unwrap_or(&Value::Null),
                    o.get("qty").unwrap_or(&Value::Null)
                )
            }
            other => format!("{other:?}"),
        };
        crate::outln!("   {label:<46} {v}")
    };
    crate::outln!("   banana as of 2024-01-02T18:00 (after the qty patch):")?;
    show(
        "known now (corrected truth):",
        snap.get("inventory", b"banana", at, KnownAt::Latest)?,
    )?;
    show(
        &format!("as known at position {before_correction} (what production saw):"),
        snap.get(
            "inventory",
            b"banana",
            at,
            KnownAt::Position(before_correction),
        )?,
    )?;
    crate::outln!("   The patch (qty 95) applies on top of the corrected price: patches fold in")?;
    crate::outln!("   (event_time, position) order, so the late event lands where it belongs.\n")?;

    crate::outln!(
        "3. A generated clickstream: {} views of items by 50 users over three days.",
        a.views
    )?;
    crate::outln!(
        "   Each view is enriched with the item's price as of the view (an as-of join),"
    )?;
    crate::outln!("   then stored in the `views` stream keyed by user.")?;
    let items = ["apple", "banana", "cherry", "durian"];
    let start = t("2024-01-01T09:00:00Z")?;
    let span = 3 * 86_400_000_000i64;
    let mut rng = tablelog::rng::Rng(a.seed); // the same clickstream every run
    let mut views: Vec<(String, &str, i64)> = (0..a.views)
        .map(|_| {
            let user = format!("u{:02}", rng.below(50));
            let item = items[rng.below(items.len() as u64) as usize];
            let ts = start + (rng.below((span / 1_000_000) as u64) as i64) * 1_000_000;
            (user, item, ts)
        })
        .collect();
    views.sort_by_key(|v| v.2);
    let reqs: Vec<Request> = views
        .iter()
        .map(|(_, item, ts)| Request {
            key: Bytes::from(item.to_string()),
            time: *ts,
        })
        .collect();
    let prices = snap.asof_join(&reqs, &["inventory"], None, KnownAt::Latest)?;
    let mut lines = String::new();
    let mut priced = 0;
    for ((user, item, ts), row) in views.iter().zip(&prices) {
        let price = row[0]
            .as_ref()
            .and_then(|r| to_object(&r.value).get("price").cloned());
        priced += usize::from(price.is_some());
        let v = json!({"user": user, "item": item, "ts": format_time(*ts), "price": price});
        lines.push_str(&v.to_string());
        lines.push('\n');
    }
    let p = load(&db, "views", "user", &lines, "generated views")?;
    crate::outln!(
        "   {} views imported at positions {}..={} ({} had a price; views of items not\n   listed yet or deleted have price null and are left out of averages)\n",
        p.end - p.start,
        p.start,
        p.end - 1,
        priced
    )?;

    crate::outln!("4. Purchases joined point-in-time to avg(price) of the user's views in the")?;
    crate::outln!("   previous 30 minutes, window (t - 30m, t]; nothing from after t leaks in.")?;
    let purchases: Vec<Request> = (0..12)
        .map(|i| {
            let (user, _, ts) = &views[(i * views.len() / 12 + 7).min(views.len() - 1)];
            Request {
                key: Bytes::from(user.clone()),
                time: ts + 60_000_000,
            }
        })
        .collect();
    let snap = db.snapshot()?;
    let avg = snap.window(
        "views",
        "price",
        Agg::Avg,
        30 * 60_000_000,
        &purchases,
        KnownAt::Latest,
    )?;
    let cnt = snap.window(
        "views",
        "price",
        Agg::Count,
        30 * 60_000_000,
        &purchases,
        KnownAt::Latest,
    )?;
    crate::outln!(
        "    {:<5} {:<21} {:>6} {:>15}",
        "user",
        "purchase time",
        "views",
        "avg_price_30m"
    )?;
    for ((r, a), c) in purchases.iter().zip(&avg).zip(&cnt) {
        crate::outln!(
            "    {:<5} {:<21} {:>6} {:>15}",
            String::from_utf8_lossy(&r.key),
            format_time(r.time),
            c.unwrap_or(0.0) as u64,
            a.map_or("null".to_string(), |x| format!("{x:.3}"))
        )?;
    }

    let end = snap.end_position();
    crate::outln!("\n{end} records in {}.", dir.display())?;
    if a.dir.is_some() {
        crate::outln!(
            "Try: tablelog table {} --stream inventory --as-of 2024-01-02 --format table",
            dir.display()
        )?;
    }
    Ok(Outcome::Ok)
}
