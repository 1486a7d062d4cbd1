//! Parsing and printing times and durations, exactly as the CLI contract says.
//!
//! Accepted times: RFC 3339 (`2013-01-01T10:00:00Z`, offsets allowed),
//! `YYYY-MM-DD HH:MM:SS[.ffffff]` and `YYYY-MM-DDTHH:MM:SS[.ffffff]` (UTC),
//! `YYYY-MM-DD` (midnight UTC), and integers in a [`TimeUnit`] (milliseconds by
//! default). Fractions finer than a microsecond are truncated toward the past.
//! Times print as RFC 3339 UTC with 0, 3 or 6 fraction digits, whichever is exact.

use std::fmt;

/// Unit of integer times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeUnit {
    /// Seconds.
    Seconds,
    /// Milliseconds (the default).
    #[default]
    Millis,
    /// Microseconds.
    Micros,
    /// Nanoseconds.
    Nanos,
}

impl TimeUnit {
    /// Parses `s|ms|us|ns`.
    #[must_use]
    pub fn parse(s: &str) -> Option<TimeUnit> {
        match s {
            "s" => Some(TimeUnit::Seconds),
            "ms" => Some(TimeUnit::Millis),
            "us" => Some(TimeUnit::Micros),
            "ns" => Some(TimeUnit::Nanos),
            _ => None,
        }
    }

    /// Converts an integer in this unit to microseconds, `None` on overflow.
    #[must_use]
    pub fn to_micros(self, v: i64) -> Option<i64> {
        match self {
            TimeUnit::Seconds => v.checked_mul(1_000_000),
            TimeUnit::Millis => v.checked_mul(1_000),
            TimeUnit::Micros => Some(v),
            TimeUnit::Nanos => Some(v.div_euclid(1_000)),
        }
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
#[must_use]
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Civil date of days since 1970-01-01.
#[must_use]
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Why a time failed to parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeError(pub String);

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn digits(s: &[u8], at: usize, n: usize) -> Option<u32> {
    let d = s.get(at..at + n)?;
    d.iter().try_fold(0u32, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

/// Parses a time as the contract describes; integers use `unit`.
pub fn parse_time(s: &str, unit: TimeUnit) -> Result<i64, TimeError> {
    let t = s.trim();
    let err = || {
        TimeError(format!(
            "unparsable time {s:?}: expected RFC 3339, YYYY-MM-DD[ HH:MM:SS[.ffffff]] or an integer ({})",
            match unit {
                TimeUnit::Seconds => "seconds",
                TimeUnit::Millis => "milliseconds",
                TimeUnit::Micros => "microseconds",
                TimeUnit::Nanos => "nanoseconds",
            }
        ))
    };
    if !t.is_empty()
        && (t.bytes().all(|b| b.is_ascii_digit())
            || (t.starts_with('-') && t.len() > 1 && t[1..].bytes().all(|b| b.is_ascii_digit())))
    {
        let v: i64 = t.parse().map_err(|_| err())?;
        return unit.to_micros(v).ok_or_else(err);
    }
    let b = t.as_bytes();
    let (year, month, day) = match (
        digits(b, 0, 4),
        b.get(4),
        digits(b, 5, 2),
        b.get(7),
        digits(b, 8, 2),
    ) {
        (Some(y), Some(b'-'), Some(m), Some(b'-'), Some(d)) => (i64::from(y), m, d),
        _ => return Err(err()),
    };
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(TimeError(format!("invalid date in {s:?}")));
    }
    let days = days_from_civil(year, month, day);
    if b.len() == 10 {
        return Ok(days * 86_400_000_000);
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return Err(err());
    }
    let (hh, mm, ss) = match (
        digits(b, 11, 2),
        b.get(13),
        digits(b, 14, 2),
        b.get(16),
        digits(b, 17, 2),
    ) {
        (Some(h), Some(b':'), Some(m), Some(b':'), Some(s)) => (h, m, s),
        _ => return Err(err()),
    };
    if hh > 23 || mm > 59 || ss > 60 {
        return Err(TimeError(format!("invalid time of day in {s:?}")));
    }
    let mut at = 19;
    let mut micros: i64 = 0;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while at < b.len() && b[at].is_ascii_digit() {
            at += 1;
        }
        let frac = &t[start..at];
        if frac.is_empty() || frac.len() > 9 {
            return Err(err());
        }
        let mut padded = frac.to_string();
        padded.truncate(6);
        while padded.len() < 6 {
            padded.push('0');
        }
        micros = padded.parse().map_err(|_| err())?;
    }
    let offset_secs: i64 = match &t[at..] {
        "" => 0,
        "Z" | "z" => 0,
        o => {
            let ob = o.as_bytes();
            let sign = match ob[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return Err(err()),
            };
            match (ob.len(), digits(ob, 1, 2), ob.get(3), digits(ob, 4, 2)) {
                (6, Some(h), Some(b':'), Some(m)) if h < 24 && m < 60 => {
                    sign * i64::from(h * 3600 + m * 60)
                }
                _ => return Err(err()),
            }
        }
    };
    let secs = days * 86_400 + i64::from(hh * 3600 + mm * 60 + ss) - offset_secs;
    Ok(secs * 1_000_000 + micros)
}

/// Prints microseconds since the epoch as RFC 3339 UTC.
#[must_use]
pub fn format_time(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let base = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    );
    if frac == 0 {
        format!("{base}Z")
    } else if frac % 1000 == 0 {
        format!("{base}.{:03}Z", frac / 1000)
    } else {
        format!("{base}.{frac:06}Z")
    }
}

/// Parses a duration: an integer followed by `us`, `ms`, `s`, `m`, `h` or `d`.
/// Returns microseconds.
pub fn parse_duration(s: &str) -> Result<i64, TimeError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let err = || {
        TimeError(format!(
            "unparsable duration {s:?}: expected e.g. 500ms, 30s, 30m, 2h or 7d"
        ))
    };
    let n: i64 = n.parse().map_err(|_| err())?;
    let mult = match unit {
        "us" => 1,
        "ms" => 1_000,
        "s" => 1_000_000,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => 86_400_000_000,
        _ => return Err(err()),
    };
    n.checked_mul(mult).ok_or_else(err)
}

/// Parses a size: an integer with an optional `B`, `K`/`KiB`/`KB`, `M`/`MiB`/`MB`,
/// `G`/`GiB`/`GB` suffix (`K`, `KiB` binary; `KB` decimal).
pub fn parse_size(s: &str) -> Result<u64, TimeError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let err = || {
        TimeError(format!(
            "unparsable size {s:?}: expected e.g. 4096, 64KiB, 4MiB or 1GiB"
        ))
    };
    let n: u64 = n.parse().map_err(|_| err())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "KB" | "kB" => 1_000,
        "M" | "MiB" => 1 << 20,
        "MB" => 1_000_000,
        "G" | "GiB" => 1 << 30,
        "GB" => 1_000_000_000,
        _ => return Err(err()),
    };
    n.checked_mul(mult).ok_or_else(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_357_034_400_000_000; // 2013-01-01T10:00:00Z

    #[test]
    fn every_contract_form() {
        let ms = TimeUnit::Millis;
        assert_eq!(parse_time("2013-01-01T10:00:00Z", ms), Ok(T0));
        assert_eq!(parse_time("2013-01-01T12:00:00+02:00", ms), Ok(T0));
        assert_eq!(parse_time("2013-01-01T09:30:00-00:30", ms), Ok(T0));
        assert_eq!(parse_time("2013-01-01 10:00:00", ms), Ok(T0));
        assert_eq!(parse_time("2013-01-01T10:00:00", ms), Ok(T0));
        assert_eq!(parse_time("2013-01-01 10:00:00.25", ms), Ok(T0 + 250_000));
        assert_eq!(parse_time("2013-01-01T10:00:00.000001Z", ms), Ok(T0 + 1));
        assert_eq!(
            parse_time("2013-01-01T10:00:00.123456789Z", ms),
            Ok(T0 + 123_456)
        );
        assert_eq!(parse_time("2013-01-01", ms), Ok(T0 - 36_000_000_000));
        assert_eq!(parse_time("1357034400000", ms), Ok(T0));
        assert_eq!(parse_time("1357034400", TimeUnit::Seconds), Ok(T0));
        assert_eq!(parse_time("1357034400000000", TimeUnit::Micros), Ok(T0));
        assert_eq!(parse_time("1357034400000000000", TimeUnit::Nanos), Ok(T0));
        assert_eq!(parse_time("-1", ms), Ok(-1000));
        assert_eq!(parse_time("1969-12-31T23:59:59.999999Z", ms), Ok(-1));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "yesterday",
            "2013-13-01",
            "2013-02-30",
            "2013-01-01T25:00:00Z",
            "2013-01-01T10:00",
            "2013-01-01T10:00:00+2",
            "2013-01-01T10:00:00.Z",
            "99999999999999999999",
            "1.5",
            "2013-01-01X10:00:00",
        ] {
            assert!(parse_time(bad, TimeUnit::Millis).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn printing_round_trips() {
        assert_eq!(format_time(T0), "2013-01-01T10:00:00Z");
        assert_eq!(format_time(T0 + 250_000), "2013-01-01T10:00:00.250Z");
        assert_eq!(format_time(T0 + 1), "2013-01-01T10:00:00.000001Z");
        assert_eq!(format_time(-1), "1969-12-31T23:59:59.999999Z");
        for us in [
            0,
            1,
            -1,
            T0,
            951_782_400_000_000,
            -62_135_596_800_000_000,
            253_402_300_799_999_999,
        ] {
            assert_eq!(parse_time(&format_time(us), TimeUnit::Millis), Ok(us));
        }
        for d in -800_000..800_000i64 {
            let (y, m, dd) = civil_from_days(d * 3);
            assert_eq!(days_from_civil(y, m, dd), d * 3);
        }
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("500ms"), Ok(500_000));
        assert_eq!(parse_duration("30s"), Ok(30_000_000));
        assert_eq!(parse_duration("30m"), Ok(1_800_000_000));
        assert_eq!(parse_duration("2h"), Ok(7_200_000_000));
        assert_eq!(parse_duration("7d"), Ok(604_800_000_000));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("1.5h").is_err());
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("4 parsecs").is_err());
    }
}
