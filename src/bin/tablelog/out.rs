//! Output: JSON lines (streamed), CSV and aligned tables (buffered to learn the
//! columns), with broken pipes treated as a normal end.

use std::io::{self, BufWriter, Write};

use serde_json::{Map, Value};

use crate::args::{anyhow_lite, CliResult};

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    /// One JSON object per line (streamed).
    #[default]
    Jsonl,
    /// CSV with a header of every field seen (buffered).
    Csv,
    /// An aligned text table (buffered).
    Table,
}

/// Whether an error is a closed stdout (`tablelog … | head`).
pub fn is_broken_pipe(e: &anyhow_lite::Error) -> bool {
    e.0.downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

/// Where rows go.
pub struct Sink {
    format: Format,
    w: BufWriter<io::StdoutLock<'static>>,
    rows: Vec<Map<String, Value>>,
}

impl Sink {
    pub fn new(format: Format) -> Sink {
        Sink {
            format,
            w: BufWriter::with_capacity(1 << 16, io::stdout().lock()),
            rows: Vec::new(),
        }
    }

    /// A row given as its stored JSON bytes.
    pub fn raw(&mut self, bytes: &[u8]) -> CliResult<()> {
        if self.format == Format::Jsonl {
            self.w.write_all(bytes)?;
            self.w.write_all(b"\n")?;
            return Ok(());
        }
        match serde_json::from_slice(bytes) {
            Ok(Value::Object(m)) => self.rows.push(m),
            Ok(other) => {
                let mut m = Map::new();
                m.insert("value".into(), other);
                self.rows.push(m);
            }
            Err(_) => {
                let mut m = Map::new();
                m.insert(
                    "value".into(),
                    Value::String(String::from_utf8_lossy(bytes).into_owned()),
                );
                self.rows.push(m);
            }
        }
        Ok(())
    }

    /// A row given as an object.
    pub fn object(&mut self, m: Map<String, Value>) -> CliResult<()> {
        if self.format == Format::Jsonl {
            serde_json::to_writer(&mut self.w, &Value::Object(m)).map_err(io::Error::from)?;
            self.w.write_all(b"\n")?;
        } else {
            self.rows.push(m);
        }
        Ok(())
    }

    /// JSON lines, one per item, each formatted by `line` into a buffer:
    /// runs of items are formatted on every core, a bounded batch at a
    /// time, and written in order. JSON lines only.
    pub fn lines<T: Send>(
        &mut self,
        items: &mut [T],
        line: impl Fn(&mut T, &mut Vec<u8>) -> io::Result<()> + Sync,
    ) -> CliResult<()> {
        debug_assert_eq!(self.format, Format::Jsonl);
        let threads = crate::par::cores();
        for batch in items.chunks_mut(LINES_BATCH) {
            let per = batch.len().div_ceil(threads).max(1);
            let parts =
                crate::par::map_parts(batch.chunks_mut(per), |part| -> io::Result<Vec<u8>> {
                    let mut buf = Vec::new();
                    for item in part {
                        line(item, &mut buf)?;
                    }
                    Ok(buf)
                });
            for part in parts {
                self.w.write_all(&part?)?;
            }
        }
        Ok(())
    }

    /// Writes buffered rows and flushes.
    pub fn finish(mut self) -> CliResult<()> {
        let mut cols: Vec<String> = Vec::new();
        for r in &self.rows {
            for k in r.keys() {
                if !cols.contains(k) {
                    cols.push(k.clone());
                }
            }
        }
        match self.format {
            Format::Jsonl => {}
            Format::Csv => {
                let mut c = csv::Writer::from_writer(&mut self.w);
                c.write_record(&cols).map_err(io::Error::from)?;
                for r in &self.rows {
                    c.write_record(cols.iter().map(|k| cell(r.get(k))))
                        .map_err(io::Error::from)?;
                }
                c.flush()?;
            }
            Format::Table => {
                let cells: Vec<Vec<String>> = self
                    .rows
                    .iter()
                    .map(|r| cols.iter().map(|k| cell(r.get(k))).collect())
                    .collect();
                let widths: Vec<usize> = cols
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        cells
                            .iter()
                            .map(|r| r[i].chars().count())
                            .max()
                            .unwrap_or(0)
                            .max(c.chars().count())
                    })
                    .collect();
                let line = |w: &mut dyn Write, vals: &[String]| -> io::Result<()> {
                    let parts: Vec<String> = vals
                        .iter()
                        .zip(&widths)
                        .map(|(v, n)| format!("{v:<n$}"))
                        .collect();
                    writeln!(w, "{}", parts.join("  ").trim_end())
                };
                line(&mut self.w, &cols)?;
                let rule: Vec<String> = widths.iter().map(|n| "-".repeat(*n)).collect();
                line(&mut self.w, &rule)?;
                for r in &cells {
                    line(&mut self.w, r)?;
                }
            }
        }
        self.w.flush()?;
        Ok(())
    }
}

/// Items [`Sink::lines`] formats per batch.
const LINES_BATCH: usize = 1 << 15;

/// One JSON line into `buf`, as [`Sink::object`] writes a map: `{`, what
/// `fields` writes, `}`. Byte for byte what a map holding the same fields in
/// the same order serializes to, so callers must not write a key twice.
pub fn object_line(
    buf: &mut Vec<u8>,
    fields: impl FnOnce(&mut ObjectWriter<'_>) -> io::Result<()>,
) -> io::Result<()> {
    buf.push(b'{');
    let mut o = ObjectWriter {
        w: buf,
        first: true,
        key: String::new(),
    };
    fields(&mut o)?;
    buf.extend_from_slice(b"}\n");
    Ok(())
}

/// One JSON line into `buf`: the map, as [`Sink::object`] writes it.
pub fn map_line(buf: &mut Vec<u8>, m: Map<String, Value>) -> io::Result<()> {
    serde_json::to_writer(&mut *buf, &Value::Object(m))?;
    buf.push(b'\n');
    Ok(())
}

/// Writes the fields of one object for [`object_line`], formatted as
/// `serde_json` formats a map compactly.
pub struct ObjectWriter<'a> {
    w: &'a mut Vec<u8>,
    first: bool,
    /// Reused for keys made of parts.
    key: String,
}

impl ObjectWriter<'_> {
    /// One field.
    pub fn field(&mut self, key: &str, value: &Value) -> io::Result<()> {
        if !std::mem::take(&mut self.first) {
            self.w.write_all(b",")?;
        }
        serde_json::to_writer(&mut *self.w, key)?;
        self.w.write_all(b":")?;
        serde_json::to_writer(&mut *self.w, value)?;
        Ok(())
    }

    /// One field whose key is `prefix.name`.
    pub fn prefixed_field(&mut self, prefix: &str, name: &str, value: &Value) -> io::Result<()> {
        let mut key = std::mem::take(&mut self.key);
        key.clear();
        key.push_str(prefix);
        key.push('.');
        key.push_str(name);
        let r = self.field(&key, value);
        self.key = key;
        r
    }
}

/// A JSON value as a CSV/table cell: strings raw, null empty, the rest as JSON.
pub fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Parses a stored row into an object (non-objects go under `value`).
pub fn to_object(bytes: &[u8]) -> Map<String, Value> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(m)) => m,
        Ok(other) => {
            let mut m = Map::new();
            m.insert("value".into(), other);
            m
        }
        Err(_) => {
            let mut m = Map::new();
            m.insert(
                "value".into(),
                Value::String(String::from_utf8_lossy(bytes).into_owned()),
            );
            m
        }
    }
}
