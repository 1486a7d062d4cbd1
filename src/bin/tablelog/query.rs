//! The query subcommands: table, get, history, changes, join, window.

use std::path::PathBuf;

use clap::Args;
use serde_json::{Map, Value};
use tablelog::ingest::time::{format_time, parse_time, TimeUnit};
use tablelog::{Agg, ChangeKind, GetResult, Hlc, KnownAt, Snapshot};

use crate::args::{duration_arg, msg, open_read, time_arg, time_unit, CliResult, TimeArg};
use crate::out::{map_line, object_line, to_object, Format, Sink};
use crate::Outcome;

/// Options every as-of query shares.
#[derive(Args, Debug)]
pub struct AsOf {
    /// Event time to answer as of (default: no bound, every event time).
    #[arg(long, value_parser = time_arg, value_name = "TIME")]
    as_of: Option<TimeArg>,
    /// Answer as known at this position (integer), or at this recorded-at time
    /// (mapped to the last position recorded at or before it). Default: latest.
    #[arg(long, value_name = "POSITION")]
    known_at: Option<String>,
    /// Unit of integer times.
    #[arg(long, value_parser = time_unit, default_value = "ms", value_name = "s|ms|us|ns")]
    time_unit: TimeUnit,
}

impl AsOf {
    fn as_of(&self) -> CliResult<i64> {
        self.as_of
            .as_ref()
            .map_or(Ok(i64::MAX), |t| t.micros(self.time_unit))
    }

    fn known_at(&self) -> CliResult<KnownAt> {
        known_at(self.known_at.as_deref())
    }
}

fn known_at(s: Option<&str>) -> CliResult<KnownAt> {
    let Some(s) = s else {
        return Ok(KnownAt::Latest);
    };
    if let Ok(p) = s.parse::<u64>() {
        return Ok(KnownAt::Position(p));
    }
    let us = parse_time(s, TimeUnit::Millis)
        .map_err(|e| msg(format!("--known-at: expected a position or a time: {e}")))?;
    let ms = u64::try_from(us.div_euclid(1000)).map_err(|_| msg("--known-at: time before 1970"))?;
    Ok(KnownAt::RecordedAt(Hlc::end_of_ms(ms)))
}

fn snapshot(db: &std::path::Path) -> CliResult<Snapshot> {
    Ok(open_read(db)?.snapshot()?)
}

/// Print every live row of a stream as of a time, sorted by key.
///
/// Example: tablelog table ./db --stream inventory --as-of 2024-01-02 --format table
#[derive(Args, Debug)]
pub struct TableArgs {
    /// Database directory.
    db: PathBuf,
    /// Stream (table) to rebuild.
    #[arg(long)]
    stream: String,
    #[command(flatten)]
    asof: AsOf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    format: Format,
}

pub fn table(a: TableArgs) -> CliResult<Outcome> {
    let snap = snapshot(&a.db)?;
    let mut sink = Sink::new(a.format);
    let mut rows = snap.table(&a.stream, a.asof.as_of()?, a.asof.known_at()?)?;
    while let Some(row) = rows.next_ref() {
        sink.raw(row?.value)?;
    }
    sink.finish()?;
    Ok(Outcome::Ok)
}

/// Print one key's row as of a time. Exits 1, printing nothing to stdout, when the
/// row is absent or deleted (stderr says which).
///
/// Example: tablelog get ./db --stream inventory --key apple --as-of "2024-01-02 12:00:00"
#[derive(Args, Debug)]
pub struct GetArgs {
    /// Database directory.
    db: PathBuf,
    /// Stream to look in.
    #[arg(long)]
    stream: String,
    /// The key.
    #[arg(long)]
    key: String,
    #[command(flatten)]
    asof: AsOf,
}

pub fn get(a: GetArgs) -> CliResult<Outcome> {
    let snap = snapshot(&a.db)?;
    match snap.get(
        &a.stream,
        a.key.as_bytes(),
        a.asof.as_of()?,
        a.asof.known_at()?,
    )? {
        GetResult::Present(row) => {
            let mut sink = Sink::new(Format::Jsonl);
            sink.raw(&row.value)?;
            sink.finish()?;
            Ok(Outcome::Ok)
        }
        GetResult::Deleted {
            event_time,
            position,
        } => {
            eprintln!(
                "{}: deleted at {} (position {position})",
                a.key,
                format_time(event_time)
            );
            Ok(Outcome::NotFound)
        }
        GetResult::NeverSeen => {
            eprintln!(
                "{}: absent (no record of this key at or before the time)",
                a.key
            );
            Ok(Outcome::NotFound)
        }
    }
}

/// Print every version of one key in (event time, position) order: the row after
/// each version, with _position, _event_time, _recorded_at and _op added.
///
/// Example: tablelog history ./db --stream inventory --key apple
#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Database directory.
    db: PathBuf,
    /// Stream.
    #[arg(long)]
    stream: String,
    /// The key.
    #[arg(long)]
    key: String,
    /// As known at this position or recorded-at time (default: latest).
    #[arg(long, value_name = "POSITION")]
    known_at: Option<String>,
}

fn with_meta(row: Option<&[u8]>, fields: &[(&str, Value)]) -> Map<String, Value> {
    let mut m = row.map(to_object).unwrap_or_default();
    for (k, v) in fields {
        m.insert((*k).to_string(), v.clone());
    }
    m
}

pub fn history(a: HistoryArgs) -> CliResult<Outcome> {
    let snap = snapshot(&a.db)?;
    let mut sink = Sink::new(Format::Jsonl);
    for e in snap.history(
        &a.stream,
        a.key.as_bytes(),
        known_at(a.known_at.as_deref())?,
    )? {
        sink.object(with_meta(
            e.row.as_deref(),
            &[
                ("_position", Value::from(e.position)),
                ("_event_time", Value::from(format_time(e.event_time))),
                (
                    "_recorded_at",
                    Value::from(format_time(
                        i64::try_from(e.recorded_at.wall_ms()).unwrap_or(i64::MAX / 1000) * 1000,
                    )),
                ),
                ("_op", Value::from(e.op.name())),
            ],
        ))?;
    }
    sink.finish()?;
    Ok(Outcome::Ok)
}

/// Print the rows inserted, updated and deleted between two times (net changes,
/// in key order): the row after (before, for a delete), with _change, _position,
/// _event_time and _op of the record that made the final state.
///
/// Example: tablelog changes ./db --stream inventory --from 2024-01-01 --to 2024-01-03
#[derive(Args, Debug)]
pub struct ChangesArgs {
    /// Database directory.
    db: PathBuf,
    /// Stream.
    #[arg(long)]
    stream: String,
    /// Start of the interval (exclusive).
    #[arg(long, value_parser = time_arg)]
    from: TimeArg,
    /// End of the interval (inclusive).
    #[arg(long, value_parser = time_arg)]
    to: TimeArg,
    /// As known at this position or recorded-at time (default: latest).
    #[arg(long, value_name = "POSITION")]
    known_at: Option<String>,
    /// Unit of integer times.
    #[arg(long, value_parser = time_unit, default_value = "ms")]
    time_unit: TimeUnit,
}

pub fn changes(a: ChangesArgs) -> CliResult<Outcome> {
    let snap = snapshot(&a.db)?;
    let (from, to) = (a.from.micros(a.time_unit)?, a.to.micros(a.time_unit)?);
    if from > to {
        return Err(msg(format!(
            "--from {} is after --to {}",
            format_time(from),
            format_time(to)
        )));
    }
    let known = known_at(a.known_at.as_deref())?;
    let mut sink = Sink::new(Format::Jsonl);
    for c in snap.changes(&a.stream, from, to, known)? {
        let (row, event_time, position) = match (&c.after, c.kind) {
            (Some(r), _) => (Some(&r.value[..]), r.event_time, r.position),
            (None, _) => match snap.get(&a.stream, &c.key, to, known)? {
                GetResult::Deleted {
                    event_time,
                    position,
                } => (
                    c.before.as_ref().map(|r| &r.value[..]),
                    event_time,
                    position,
                ),
                _ => continue,
            },
        };
        let op = snap.view().read(position)?.op;
        let kind = match c.kind {
            ChangeKind::Insert => "insert",
            ChangeKind::Update => "update",
            ChangeKind::Delete => "delete",
        };
        sink.object(with_meta(
            row,
            &[
                ("_change", Value::from(kind)),
                ("_position", Value::from(position)),
                ("_event_time", Value::from(format_time(event_time))),
                ("_op", Value::from(op.name())),
            ],
        ))?;
    }
    sink.finish()?;
    Ok(Outcome::Ok)
}

/// Point-in-time join: print each request, in order, extended with each feature
/// stream's row as of the request's time (fields prefixed `STREAM.`, plus
/// `STREAM._event_time`); a missing row leaves them out.
///
/// Example: tablelog join ./db --requests purchases.jsonl --key user --time ts --feature profile --ttl 7d
#[derive(Args, Debug)]
pub struct JoinArgs {
    /// Database directory.
    db: PathBuf,
    /// JSONL (or .csv) file of request objects, or - for stdin.
    #[arg(long)]
    requests: String,
    /// Request field holding the key to look up.
    #[arg(long)]
    key: String,
    /// Request field holding the time to look up as of.
    #[arg(long)]
    time: String,
    /// Feature stream to join (repeatable).
    #[arg(long = "feature", required = true)]
    features: Vec<String>,
    /// Rows last changed more than this long before the request count as missing.
    #[arg(long, value_parser = duration_arg)]
    ttl: Option<i64>,
    /// As known at this position or recorded-at time (default: latest).
    #[arg(long, value_name = "POSITION")]
    known_at: Option<String>,
    /// Unit of integer times.
    #[arg(long, value_parser = time_unit, default_value = "ms")]
    time_unit: TimeUnit,
    /// Print the query's own time (without reading and printing) on stderr.
    #[arg(long)]
    timing: bool,
}

pub fn join(a: JoinArgs) -> CliResult<Outcome> {
    let snap = snapshot(&a.db)?;
    let (objs, reqs) = crate::requests::read_requests(&a.requests, &a.key, &a.time, a.time_unit)?;
    let streams: Vec<&str> = a.features.iter().map(String::as_str).collect();
    let started = std::time::Instant::now();
    let rows = snap.asof_join(&reqs, &streams, a.ttl, known_at(a.known_at.as_deref())?)?;
    if a.timing {
        eprintln!(
            "join: {} requests in {:.1} ms (query only)",
            reqs.len(),
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    // Each request is printed extended with `STREAM.FIELD` for every field of
    // each feature row, then `STREAM._event_time`. A key that is already
    // there keeps its place and takes the new value (what inserting into the
    // request's map does). When no key can repeat, which is the usual case,
    // the line is written straight from the parts instead.
    let streams_apart = streams.iter().enumerate().all(|(i, a)| {
        streams
            .iter()
            .enumerate()
            .all(|(j, b)| i == j || (a != b && !under(b, a)))
    });
    let mut sink = Sink::new(Format::Jsonl);
    let mut items: Vec<_> = objs.into_iter().zip(rows).collect();
    sink.lines(&mut items, |(obj, feats), buf| {
        let fields: Vec<Option<(Map<String, Value>, Value)>> = std::mem::take(feats)
            .into_iter()
            .map(|row| {
                row.map(|row| {
                    let time = Value::from(format_time(row.event_time));
                    (to_object(&row.value), time)
                })
            })
            .collect();
        let apart = streams_apart
            && !obj.keys().any(|k| streams.iter().any(|s| under(k, s)))
            && fields
                .iter()
                .flatten()
                .all(|(m, _)| !m.contains_key(EVENT_TIME));
        if apart {
            return object_line(buf, |o| {
                for (k, v) in &*obj {
                    o.field(k, v)?;
                }
                for (stream, f) in streams.iter().zip(&fields) {
                    if let Some((m, time)) = f {
                        for (k, v) in m {
                            o.prefixed_field(stream, k, v)?;
                        }
                        o.prefixed_field(stream, EVENT_TIME, time)?;
                    }
                }
                Ok(())
            });
        }
        let mut obj = std::mem::take(obj);
        for (stream, f) in streams.iter().zip(fields) {
            if let Some((m, time)) = f {
                for (k, v) in m {
                    obj.insert(format!("{stream}.{k}"), v);
                }
                obj.insert(format!("{stream}.{EVENT_TIME}"), time);
            }
        }
        map_line(buf, obj)
    })?;
    sink.finish()?;
    Ok(Outcome::Ok)
}

/// The field naming a joined row's event time, under its stream's prefix.
const EVENT_TIME: &str = "_event_time";

/// Whether `key` is `prefix.` followed by anything.
fn under(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix)
        .is_some_and(|rest| rest.starts_with('.'))
}

/// Windowed aggregate: print each request extended with AGG_FIELD_WINDOW, the
/// aggregate of FIELD over the key's events in (time - WINDOW, time]
/// (null when empty; count prints 0).
///
/// Example: tablelog window ./db --stream views --field price --agg avg --window 30m --requests purchases.jsonl --key user --time ts
#[derive(Args, Debug)]
pub struct WindowArgs {
    /// Database directory.
    db: PathBuf,
    /// Stream of events.
    #[arg(long)]
    stream: String,
    /// Numeric JSON field to aggregate.
    #[arg(long)]
    field: String,
    /// Aggregate.
    #[arg(long, value_parser = ["count", "sum", "avg", "min", "max"])]
    agg: String,
    /// Window length, e.g. 30m.
    #[arg(long)]
    window: String,
    /// JSONL (or .csv) file of request objects, or - for stdin.
    #[arg(long)]
    requests: String,
    /// Request field holding the key.
    #[arg(long)]
    key: String,
    /// Request field holding the time.
    #[arg(long)]
    time: String,
    /// As known at this position or recorded-at time (default: latest).
    #[arg(long, value_name = "POSITION")]
    known_at: Option<String>,
    /// Unit of integer times.
    #[arg(long, value_parser = time_unit, default_value = "ms")]
    time_unit: TimeUnit,
    /// Print the query's own time (without reading and printing) on stderr.
    #[arg(long)]
    timing: bool,
}

pub fn window(a: WindowArgs) -> CliResult<Outcome> {
    let width = duration_arg(&a.window).map_err(msg)?;
    let agg = Agg::parse(&a.agg).ok_or_else(|| msg(format!("unknown aggregate {:?}", a.agg)))?;
    let snap = snapshot(&a.db)?;
    let (objs, reqs) = crate::requests::read_requests(&a.requests, &a.key, &a.time, a.time_unit)?;
    let started = std::time::Instant::now();
    let values = snap.window(
        &a.stream,
        &a.field,
        agg,
        width,
        &reqs,
        known_at(a.known_at.as_deref())?,
    )?;
    if a.timing {
        eprintln!(
            "window: {} requests in {:.1} ms (query only)",
            reqs.len(),
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    let name = format!("{}_{}_{}", a.agg, a.field, a.window.trim());
    let mut sink = Sink::new(Format::Jsonl);
    let mut items: Vec<(Map<String, Value>, Option<f64>)> = objs.into_iter().zip(values).collect();
    sink.lines(&mut items, |(obj, v), buf| {
        let v = match (agg, *v) {
            (Agg::Count, Some(n)) => Value::from(n as u64),
            (_, Some(x)) => serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number),
            (_, None) => Value::Null,
        };
        // A request that already has the field keeps its place for it.
        if obj.contains_key(&name) {
            let mut obj = std::mem::take(obj);
            obj.insert(name.clone(), v);
            return map_line(buf, obj);
        }
        object_line(buf, |o| {
            for (k, v) in &*obj {
                o.field(k, v)?;
            }
            o.field(&name, &v)
        })
    })?;
    sink.finish()?;
    Ok(Outcome::Ok)
}
