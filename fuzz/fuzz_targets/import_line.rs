//! The import parsers and the time, duration and size parsers on arbitrary text;
//! the JSON line parser against its full-parse reference.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tablelog::ingest::parse::{parse_csv_record, parse_json_line, parse_json_line_by_value, FieldSpec};
use tablelog::ingest::time::{format_time, parse_duration, parse_size, parse_time, TimeUnit};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let spec = FieldSpec { key: "k".into(), time: "t".into(), op: Some("op".into()), unit: TimeUnit::Millis };
    // The fields-only parse accepts exactly what a full parse does, and reads
    // the same event.
    assert_eq!(parse_json_line(s, &spec), parse_json_line_by_value(s, &spec));
    let cells: Vec<&str> = s.split(',').collect();
    let header: Vec<String> = ["k", "t", "op"].iter().map(|h| (*h).to_string()).collect();
    let _ = parse_csv_record(&header, &cells, &spec);
    for unit in [TimeUnit::Seconds, TimeUnit::Millis, TimeUnit::Micros, TimeUnit::Nanos] {
        if let Ok(us) = parse_time(s, unit) {
            // Whatever parses, within years 0000-9999 (what RFC 3339 can print),
            // prints and parses back to the same instant.
            if (-62_167_219_200_000_000..=253_402_300_799_999_999).contains(&us) {
                assert_eq!(parse_time(&format_time(us), TimeUnit::Millis), Ok(us));
            }
        }
    }
    let _ = parse_duration(s);
    let _ = parse_size(s);
});
