//! Reading one numeric field of a JSON object value, fast.
//!
//! Windows read a field of every event they aggregate, so this is on the hot
//! path of a query that touches millions of records. A single forward pass
//! walks the top-level object, validating as it goes, without building it;
//! anything it does not fully understand (non-ASCII bytes, escapes, nested
//! values named by the field, numbers beyond the fast path) falls back to
//! `serde_json`, so answers are always those of a full parse.

/// Byte classes for the string scanner: 0 ordinary, 1 quote, 2 backslash,
/// 3 control character (invalid inside a JSON string).
const STRING_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = 3;
        c += 1;
    }
    t[b'"' as usize] = 1;
    t[b'\\' as usize] = 2;
    t
};

/// Reads `field` of a JSON object value as a number (`None` if the value is not
/// an object, lacks the field, or the field is not a number), exactly as
/// `serde_json` would. This is how windows and aggregating views read values.
///
/// ```
/// use tablelog::query::field::numeric_field;
/// assert_eq!(numeric_field(br#"{"price": 12.5, "sku": "a"}"#, "price"), Some(12.5));
/// assert_eq!(numeric_field(br#"{"price": "12.5"}"#, "price"), None);
/// assert_eq!(numeric_field(b"not json", "price"), None);
/// ```
pub fn numeric_field(value: &[u8], field: &str) -> Option<f64> {
    match scan_field(value, field.as_bytes()) {
        Scan::Number(x) => Some(x),
        Scan::Absent => None,
        Scan::Unsure => {
            let v: serde_json::Value = serde_json::from_slice(value).ok()?;
            v.get(field)?.as_f64()
        }
    }
}

enum Scan {
    Number(f64),
    Absent,
    Unsure,
}

#[inline]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// End of the string starting at the quote `b[i]`; `None` for an unterminated
/// string, a raw control character, or any escape (left to the full parser,
/// which knows which escapes and surrogates are valid).
#[inline]
fn skip_plain_string(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    // Eight bytes at a time (values often carry long plain strings): the
    // lowest byte the word test flags is the first that ends the string or
    // needs a look, so no byte is looked at twice.
    while let Some(word) = b.get(j..j + 8) {
        let stops = stop_bytes(u64::from_le_bytes(word.try_into().unwrap_or_default()));
        if stops != 0 {
            let k = j + (stops.trailing_zeros() / 8) as usize;
            return (b[k] == b'"').then_some(k + 1);
        }
        j += 8;
    }
    while j < b.len() {
        match STRING_CLASS[usize::from(b[j])] {
            0 => j += 1,
            1 => return Some(j + 1),
            _ => return None,
        }
    }
    None
}

/// Flags (the high bit of each flagged byte) the quotes, backslashes and
/// control characters among the eight ASCII bytes of `x` (little-endian):
/// the bytes [`STRING_CLASS`] does not call 0. Each test is the classic "has
/// a zero byte" (or "has a byte below n") word trick. Those can also flag a
/// byte above a true hit, but never one below: the subtraction passes a
/// borrow up from a byte only when that byte is itself a hit, and no test
/// flags a byte of 0x80 or more. So the lowest flag is exact, which is all
/// callers use.
#[inline]
fn stop_bytes(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let quote = zero_byte(x ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(x ^ (ONES * u64::from(b'\\')));
    let control = x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
    quote | backslash | control
}

/// The end of the run of ASCII digits starting at `b[j..]`.
#[inline]
fn digits(b: &[u8], mut j: usize) -> usize {
    while j < b.len() && b[j].is_ascii_digit() {
        j += 1;
    }
    j
}

/// A JSON number at `b[i..]`: its end, and whether it is an integer of at most
/// 15 digits (exact in an f64, see [`small_integer`]). `None` if it is not a
/// valid number.
#[inline]
fn scan_number(b: &[u8], i: usize) -> Option<(usize, bool)> {
    let mut j = i + usize::from(b.get(i) == Some(&b'-'));
    let int_start = j;
    match b.get(j) {
        Some(b'0') => j += 1,
        Some(c) if c.is_ascii_digit() => j = digits(b, j),
        _ => return None,
    }
    let mut small = j - int_start <= 15;
    if b.get(j) == Some(&b'.') {
        small = false;
        let s = j + 1;
        j = digits(b, s);
        if j == s {
            return None;
        }
    }
    if matches!(b.get(j), Some(b'e' | b'E')) {
        small = false;
        j += 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let s = j;
        j = digits(b, s);
        if j == s {
            return None;
        }
    }
    Some((j, small))
}

/// The value of a validated integer token of at most 15 digits: exact, and
/// `-0` is -0.0 as the general parser gives.
fn small_integer(tok: &[u8]) -> f64 {
    let (negative, digits) = match tok.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, tok),
    };
    let x = digits
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')) as f64;
    if negative {
        -x
    } else {
        x
    }
}

/// End of the nested object or array starting at `b[i]` (string-aware depth
/// counting; contents are validated separately).
fn skip_nested(b: &[u8], i: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut j = i;
    while j < b.len() {
        match b[j] {
            b'"' => {
                j += 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(j + 1);
                }
            }
            _ => {}
        }
        j += 1;
    }
    None
}

/// Whether the byte after a scalar may follow it.
#[inline]
fn ends_scalar(b: &[u8], j: usize) -> bool {
    matches!(
        b.get(j),
        None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
    )
}

fn scan_field(b: &[u8], field: &[u8]) -> Scan {
    // Non-ASCII bytes need UTF-8 validation: leave those documents to serde_json.
    if !b.is_ascii() {
        return Scan::Unsure;
    }
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return Scan::Unsure;
    }
    i = skip_ws(b, i + 1);
    let mut found = Scan::Absent;
    if b.get(i) == Some(&b'}') {
        return if skip_ws(b, i + 1) == b.len() {
            Scan::Absent
        } else {
            Scan::Unsure
        };
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return Scan::Unsure;
        }
        let Some(kend) = skip_plain_string(b, i) else {
            return Scan::Unsure;
        };
        let is_field = &b[i + 1..kend - 1] == field;
        i = skip_ws(b, kend);
        if b.get(i) != Some(&b':') {
            return Scan::Unsure;
        }
        let v = skip_ws(b, i + 1);
        let vend = match b.get(v) {
            Some(b'"') => {
                let Some(e) = skip_plain_string(b, v) else {
                    return Scan::Unsure;
                };
                if is_field {
                    found = Scan::Absent; // a string: not a number
                }
                e
            }
            Some(b'{' | b'[') => {
                // Nested values are only skipped here: let serde_json judge them.
                let Some(e) = skip_nested(b, v) else {
                    return Scan::Unsure;
                };
                if is_field || !nested_ok(&b[v..e]) {
                    return Scan::Unsure;
                }
                e
            }
            Some(b't') if b[v..].starts_with(b"true") => v + 4,
            Some(b'f') if b[v..].starts_with(b"false") => v + 5,
            Some(b'n') if b[v..].starts_with(b"null") => v + 4,
            Some(_) => {
                let Some((e, small)) = scan_number(b, v) else {
                    return Scan::Unsure;
                };
                if is_field {
                    found = if small {
                        Scan::Number(small_integer(&b[v..e]))
                    } else {
                        match parse_float(&b[v..e]) {
                            Some(x) => Scan::Number(x),
                            None => return Scan::Unsure,
                        }
                    };
                }
                e
            }
            None => return Scan::Unsure,
        };
        if !matches!(b.get(v), Some(b'"' | b'{' | b'[')) {
            if !ends_scalar(b, vend) {
                return Scan::Unsure;
            }
            if is_field && matches!(b[v], b't' | b'f' | b'n') {
                found = Scan::Absent; // a bool or null: not a number
            }
        }
        // The last duplicate wins, as in serde_json: `found` is overwritten.
        i = skip_ws(b, vend);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => break,
            _ => return Scan::Unsure,
        }
    }
    if skip_ws(b, i + 1) != b.len() {
        return Scan::Unsure;
    }
    found
}

/// A finite float from a validated number token; `None` (fall back) otherwise.
fn parse_float(tok: &[u8]) -> Option<f64> {
    std::str::from_utf8(tok)
        .ok()?
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
}

/// Whether a nested object or array is valid JSON.
fn nested_ok(v: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(v).is_ok()
}

#[cfg(test)]
mod tests {
    use super::numeric_field;
    use crate::rng::Rng;

    fn full_parse(b: &[u8], field: &str) -> Option<f64> {
        serde_json::from_slice::<serde_json::Value>(b)
            .ok()
            .and_then(|v| v.get(field).and_then(serde_json::Value::as_f64))
    }

    fn same(a: Option<f64>, b: Option<f64>) -> bool {
        match (a, b) {
            (Some(x), Some(y)) => x.to_bits() == y.to_bits(),
            (None, None) => true,
            _ => false,
        }
    }

    /// A number reads the same whichever path reads it: the fast path parses
    /// with `str::parse` (correctly rounded), and serde_json is built with
    /// `float_roundtrip`, without which it read 3e25 as 3.0000000000000005e25
    /// when something else in the document (an escape) sent it to the
    /// fallback.
    #[test]
    fn a_number_reads_the_same_on_both_paths() {
        for tok in [
            "3e25",
            "0.1",
            "2.2250738585072014e-308",
            "9007199254740993",
            "1.7976931348623157e308",
        ] {
            let want: f64 = tok.parse().unwrap();
            let fast = format!(r#"{{"price":{tok}}}"#);
            let slow = format!(r#"{{"s":"\n","price":{tok}}}"#);
            assert_eq!(
                numeric_field(fast.as_bytes(), "price").map(f64::to_bits),
                Some(want.to_bits()),
                "{fast}"
            );
            assert_eq!(
                numeric_field(slow.as_bytes(), "price").map(f64::to_bits),
                Some(want.to_bits()),
                "{slow}"
            );
        }
    }

    /// The lowest byte the word test flags is exactly the first byte of the
    /// word that stops a string (and none is flagged when none does).
    #[test]
    fn word_test_finds_the_first_byte_that_stops_a_string() {
        let first = |w: [u8; 8]| {
            w.iter()
                .position(|&c| super::STRING_CLASS[usize::from(c)] != 0)
        };
        let flagged = |w: [u8; 8]| {
            let m = super::stop_bytes(u64::from_le_bytes(w));
            (m != 0).then(|| (m.trailing_zeros() / 8) as usize)
        };
        for c in 0..=255u8 {
            for at in 0..8 {
                let mut w = [b'x'; 8];
                w[at] = c;
                assert_eq!(flagged(w), first(w), "{w:?}");
            }
        }
        let mut rng = Rng(3);
        for _ in 0..200_000 {
            // Mostly ordinary bytes, so that words with a stop byte late in
            // them, after others, come up often.
            let w: [u8; 8] = std::array::from_fn(|_| match rng.below(6) {
                0 => rng.below(256) as u8,
                _ => b'a' + rng.below(26) as u8,
            });
            assert_eq!(flagged(w), first(w), "{w:?}");
        }
    }

    #[test]
    fn scanner_agrees_with_a_full_parse() {
        let cases: &[&[u8]] = &[
            br#"{"price":1.5}"#,
            br#" { "a" : {"price": 9, "x":[1,{"price":3}]}, "price" : -2e3 } "#,
            br#"{"price":"7"}"#,
            br#"{"price":null}"#,
            br#"{"price":true}"#,
            br#"{"price":false} "#,
            br#"{"pri\u0063e":4}"#,
            br#"{"s":"a \" } , \\","price":12}"#,
            br#"{"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","price":12}"#,
            br#"{"pad":"xxxxxxxxxxxxxxxxxxxxxxxxx\"xxxxxxxxxxxxx","price":12}"#,
            br#"{"pad":"xxxxxxxxxxxxxxxx","price":12,"q":"xxxxxxxxxxxxxxxxxxxxxxx"}"#,
            b"{\"pad\":\"xxxxxxxxxxxxxxxxxxx\x1fxxxxxxxxxxxx\",\"price\":12}",
            br#"{"s":"\q","price":12}"#,
            br#"{"s":"\ud800","price":12}"#,
            br#"{"price":1,"price":2}"#,
            br#"{"price":1,"price":"x"}"#,
            br#"{"price":"x","price":3}"#,
            br#"{}"#,
            br#"{} x"#,
            br#"[1,2]"#,
            br#"{"price":1"#,
            br#"{"price":01}"#,
            br#"{"price":-0}"#,
            br#"{"x":-0, "price":1e400}"#,
            br#"{"price":-0.0}"#,
            br#"{"price":1} x"#,
            b"not json",
            br#"{"a":1}"#,
            br#"{"price":12345678901234567890}"#,
            br#"{"price":123456789012345}"#,
            br#"{"price":1234567890123456}"#,
            br#"{"price":-999999999999999}"#,
            br#"{"price":1,"x":tru}"#,
            br#"{"price":1,"x":truex}"#,
            br#"{"price":1,"x":nul}"#,
            br#"{"price":1,"x":[1,}"#,
            br#"{"price":1.}"#,
            br#"{"price":-}"#,
            br#"{"price":1e}"#,
            br#"{"price":1e+5}"#,
            br#"{"price":2.5E-3}"#,
            br#"{"price":1x}"#,
            b"{\"price\":1,\"x\":\"a\x01b\"}",
            br#"{"price":1e400}"#,
            br#"{"price":2,"n":{"price":"x"}}"#,
            br#"{"price":2,"n":{"a":"}"}}"#,
            br#"{"price":{"a":1}}"#,
            br#"{"price":[1]}"#,
            br#"{"price" 1}"#,
            br#"{"price":1,}"#,
            br#"{,"price":1}"#,
            br#"{"price":1 "a":2}"#,
            "{\"price\":3,\"é\":1}".as_bytes(),
            b"{\"price\":\t7\n}\r\n",
            b"",
            b"{",
            b"{\"",
        ];
        for c in cases {
            assert!(
                same(numeric_field(c, "price"), full_parse(c, "price")),
                "{}: {:?} vs {:?}",
                String::from_utf8_lossy(c),
                numeric_field(c, "price"),
                full_parse(c, "price")
            );
        }
    }

    /// Random documents from a small grammar, then random byte edits: the
    /// scanner must agree with serde_json on every one.
    #[test]
    fn scanner_agrees_on_random_and_mutated_documents() {
        let atoms: &[&str] = &[
            "0",
            "-0",
            "7",
            "-12",
            "3.25",
            "1e3",
            "-2.5E-2",
            "123456789012345",
            "98765432109876543",
            "true",
            "false",
            "null",
            "\"s\"",
            "\"a\\\"b\"",
            "\"\\u00e9\"",
            "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"",
            "\"xxxxxxxxxxx\\\"xxxxxxxxxxxxxxxxxxxxx\"",
            "[]",
            "[1,\"x\",{}]",
            "{}",
            "{\"price\":1}",
            "01",
            "1.",
            "-",
            "tru",
            "\"",
        ];
        let names = ["price", "p", "pricey", "", "pr\\u0069ce"];
        let bytes = b" \t\n{}[]\",:-+.eE0123456789tfnul\\x";
        let mut rng = Rng(0x5eed);
        for _ in 0..20_000 {
            let mut doc = String::from("{");
            for f in 0..rng.below(5) {
                if f > 0 {
                    doc.push(',');
                }
                let ws = if rng.below(4) == 0 { " " } else { "" };
                doc.push_str(&format!(
                    "{ws}\"{}\"{ws}:{ws}{}{ws}",
                    names[rng.below(names.len() as u64) as usize],
                    atoms[rng.below(atoms.len() as u64) as usize]
                ));
            }
            doc.push('}');
            let mut b = doc.into_bytes();
            let edits = rng.below(3);
            rng.mutate(&mut b, bytes, edits);
            assert!(
                same(numeric_field(&b, "price"), full_parse(&b, "price")),
                "{}: {:?} vs {:?}",
                String::from_utf8_lossy(&b),
                numeric_field(&b, "price"),
                full_parse(&b, "price")
            );
        }
    }
}
