//! Getting events in: time parsing and the JSONL/CSV importer.

pub mod import;
pub mod parse;
pub mod time;
