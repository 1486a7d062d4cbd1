//! Request files of `join` and `window`: JSON lines (parsed on every core, a
//! block at a time) or CSV, each request kept as its object and its (key, time).

use std::io::Read;

use bytes::Bytes;
use serde_json::{Map, Value};
use tablelog::ingest::parse::csv_cell;
use tablelog::ingest::time::{parse_time, TimeUnit};
use tablelog::Request;

use crate::args::{msg, CliResult};

/// Bytes of JSON lines parsed together, split among the cores.
const BLOCK: usize = 8 << 20;

/// Objects with their line numbers.
type Lines = Vec<(u64, Map<String, Value>)>;
/// A bad line: its number and why.
type BadLine = (u64, String);

/// Request objects in file order, and their (key, time).
pub type Requests = (Vec<Map<String, Value>>, Vec<Request>);

/// Requests read from a JSONL or CSV file: each object, and its (key, time).
pub fn read_requests(path: &str, key: &str, time: &str, unit: TimeUnit) -> CliResult<Requests> {
    let input: Box<dyn Read> = if path == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(path).map_err(|e| msg(format!("{path}: {e}")))?)
    };
    let bad = |line: u64, why: String| msg(format!("{path}:{line}: {why}"));
    let mut objs = Vec::new();
    if path.ends_with(".csv") {
        let mut r = csv::Reader::from_reader(input);
        let header: Vec<String> = r
            .headers()
            .map_err(|e| bad(1, e.to_string()))?
            .iter()
            .map(str::to_string)
            .collect();
        for (i, rec) in r.records().enumerate() {
            let rec = rec.map_err(|e| bad(i as u64 + 2, e.to_string()))?;
            let m: Map<String, Value> = header
                .iter()
                .cloned()
                .zip(rec.iter().map(csv_cell))
                .collect();
            objs.push((i as u64 + 2, m));
        }
    } else {
        objs = read_jsonl(input).map_err(|(line, why)| bad(line, why))?;
    }
    let mut reqs = Vec::with_capacity(objs.len());
    let mut out = Vec::with_capacity(objs.len());
    for (line, m) in objs {
        let k = match m.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => {
                return Err(bad(
                    line,
                    format!("key field {key:?} must be a string or number"),
                ))
            }
            None => return Err(bad(line, format!("missing key field {key:?}"))),
        };
        let t = match m.get(time) {
            Some(Value::String(s)) => parse_time(s, unit).map_err(|e| bad(line, e.0))?,
            Some(Value::Number(n)) => {
                n.as_i64().and_then(|v| unit.to_micros(v)).ok_or_else(|| {
                    bad(
                        line,
                        format!("time field {time:?}: {n} is not an integer time"),
                    )
                })?
            }
            Some(_) => {
                return Err(bad(
                    line,
                    format!("time field {time:?} must be a string or integer"),
                ))
            }
            None => return Err(bad(line, format!("missing time field {time:?}"))),
        };
        reqs.push(Request {
            key: Bytes::from(k),
            time: t,
        });
        out.push(m);
    }
    Ok((out, reqs))
}

/// A JSONL stream's objects with their line numbers (from 1), in order; blank
/// lines are skipped. Lines are parsed a block at a time, each block split at
/// line ends among the cores. The error is that of the first bad line:
/// `(line, reason)`.
fn read_jsonl(input: impl Read) -> Result<Lines, BadLine> {
    read_jsonl_in(input, BLOCK, crate::par::cores(), 1 << 16)
}

/// [`read_jsonl`] with blocks of `block` bytes, `threads` threads, and
/// blocks smaller than `min_split` bytes parsed on one.
fn read_jsonl_in(
    mut input: impl Read,
    block: usize,
    threads: usize,
    min_split: usize,
) -> Result<Lines, BadLine> {
    let mut objs = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(block);
    let mut first_line = 1u64;
    let mut eof = false;
    while !eof {
        // Fill the block, then parse the whole lines in it; a partial last
        // line waits for the next block (or the end of the input).
        let start = buf.len();
        buf.resize(block.max(start * 2), 0);
        let mut filled = start;
        while filled < buf.len() {
            match input.read(&mut buf[filled..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let lines = buf[..filled].iter().filter(|&&b| b == b'\n').count() as u64;
                    return Err((first_line + lines, e.to_string()));
                }
            }
        }
        buf.truncate(filled);
        let whole = if eof {
            buf.len()
        } else {
            match buf.iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None => continue, // one line longer than the block: read more
            }
        };
        let threads = if whole < min_split { 1 } else { threads };
        let lines = parse_block(&buf[..whole], first_line, threads)?;
        first_line += buf[..whole].iter().filter(|&&b| b == b'\n').count() as u64;
        objs.extend(lines);
        buf.drain(..whole);
    }
    Ok(objs)
}

/// Parses the lines of `block` (whole lines; the first is line `first_line`)
/// on up to `threads` threads, each taking a run of whole lines.
fn parse_block(block: &[u8], first_line: u64, threads: usize) -> Result<Lines, BadLine> {
    // Cut at line ends near equal shares.
    if threads <= 1 {
        return parse_lines(block)
            .map(|(_, objs)| objs.into_iter().map(|(i, m)| (first_line + i, m)).collect())
            .map_err(|(i, why)| (first_line + i, why));
    }
    let mut cuts = vec![0usize];
    for k in 1..threads.max(1) {
        let at = (block.len() * k / threads).max(*cuts.last().unwrap_or(&0));
        let end = block[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(block.len(), |i| at + i + 1);
        cuts.push(end);
    }
    cuts.push(block.len());
    cuts.dedup();
    let parts: Vec<&[u8]> = cuts.windows(2).map(|w| &block[w[0]..w[1]]).collect();
    let parsed = crate::par::map_parts(parts, parse_lines);
    // Each part numbered its lines from 0: add the lines before it.
    let mut out = Vec::new();
    let mut before = first_line;
    for part in parsed {
        match part {
            Ok((lines, objs)) => {
                out.extend(objs.into_iter().map(|(i, m)| (before + i, m)));
                before += lines;
            }
            Err((i, why)) => return Err((before + i, why)),
        }
    }
    Ok(out)
}

/// The objects of some whole lines, each with its index among them (from
/// 0), and how many lines there were; or the first bad line's index and why.
fn parse_lines(part: &[u8]) -> Result<(u64, Lines), BadLine> {
    let mut objs = Vec::new();
    let mut lines = 0u64;
    for (i, raw) in part.split_inclusive(|&b| b == b'\n').enumerate() {
        let i = i as u64;
        lines += 1;
        // As `BufRead::lines` reads them: without the `\n` or `\r\n`.
        let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let Ok(line) = std::str::from_utf8(raw) else {
            return Err((i, "stream did not contain valid UTF-8".into()));
        };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(m)) => objs.push((i, m)),
            Ok(_) => return Err((i, "expected a JSON object".into())),
            Err(e) => return Err((i, format!("invalid JSON: {e}"))),
        }
    }
    Ok((lines, objs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    /// The reading this replaces: one line at a time.
    fn reference(input: &[u8]) -> Result<Lines, BadLine> {
        let mut objs = Vec::new();
        for (i, line) in std::io::BufReader::new(input).lines().enumerate() {
            let n = i as u64 + 1;
            let line = line.map_err(|e| (n, e.to_string()))?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(&line) {
                Ok(Value::Object(m)) => objs.push((n, m)),
                Ok(_) => return Err((n, "expected a JSON object".into())),
                Err(e) => return Err((n, format!("invalid JSON: {e}"))),
            }
        }
        Ok(objs)
    }

    /// Blocks smaller than a line, blocks that cut lines, and one to three
    /// threads read the same objects with the same line numbers, and fail at
    /// the same line with the same reason, as reading a line at a time.
    #[test]
    fn blocks_and_threads_read_as_lines_do() {
        let mut rng = tablelog::rng::Rng(12);
        let mut text = Vec::new();
        for i in 0..3000 {
            match rng.below(10) {
                0 => text.extend_from_slice(b"   "),
                1 => text.extend_from_slice(format!(r#"{{"id": {i}, "k": "\u00e9"}}"#).as_bytes()),
                _ => text.extend_from_slice(
                    format!(r#"{{"id":{i},"k":"x{}"}}"#, rng.below(100)).as_bytes(),
                ),
            }
            text.extend_from_slice(if rng.below(4) == 0 { b"\r\n" } else { b"\n" });
        }
        text.extend_from_slice(br#"{"last":true}"#); // no final newline
        let bad_lines: [&[u8]; 4] = [b"[1]", b"{\"a\":", b"{\"a\":\"\xff\"}", b"7"];
        for case in 0..6 {
            let mut input = text.clone();
            if case > 0 {
                // A bad line somewhere: a line start at a random offset.
                let at = rng.below(input.len() as u64) as usize;
                let at = input[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(input.len(), |i| at + i + 1);
                let mut line = bad_lines[case % bad_lines.len()].to_vec();
                line.push(b'\n');
                input.splice(at..at, line);
            }
            let want = reference(&input);
            match &want {
                Ok(objs) => assert!(case == 0 && objs.len() > 2500, "case {case}"),
                Err(_) => assert!(case > 0, "the clean input must read"),
            }
            for (block, threads) in [(7, 1), (1000, 3), (50_000, 2), (1 << 20, 3), (BLOCK, 1)] {
                let got = read_jsonl_in(&input[..], block, threads, 0);
                assert_eq!(got, want, "case {case}, block {block}, {threads} threads");
            }
        }
    }
}
