//! Field column builds against a model and against a build from the log.
//! The input drives records (13 keys; event times in order or late; fields
//! that are numbers, f32-exact or not, strings, absent; deletes), commits,
//! and builds, and picks the build's memory (0 to 2 KiB: most builds
//! spill, into many parts). After every build, held or spilled, from the
//! log or from the column it replaces: no temporary file is left; each
//! key's events are the model's committed records of that key, in
//! `(event_time, position)` order; and the file is byte for byte the one a
//! build from the log with ample memory writes.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tablelog::column::Column;
use tablelog::storage::vfs::OsVfs;
use tablelog::{Batch, Db, JsonMergePatch};

const KEYS: u8 = 13;

fn open(dir: &Path, memory: usize) -> Db {
    Db::builder(dir)
        .segment_size(4096)
        .column_build_memory(memory)
        .default_merge_operator(Arc::new(JsonMergePatch))
        .open()
        .unwrap()
}

/// The column a build from the log alone writes with ample memory.
fn from_log(dir: &Path) -> Vec<u8> {
    let db = open(dir, 64 << 20);
    db.drop_column("s", "p").unwrap();
    let info = db.build_column("s", "p", &mut |_| {}).unwrap();
    std::fs::read(&info.path).unwrap()
}

/// Files in the column directory that are not columns.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("columns"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.ends_with(".col"))
                .collect()
        })
        .unwrap_or_default()
}

/// Each key's events in the column at `path` against the model's records
/// (key, event time, field), in commit order.
fn check_events(path: &Path, model: &[(String, i64, Option<f64>)]) {
    let col = Column::open(&OsVfs, path).unwrap();
    for k in 0..KEYS {
        let key = format!("k{k}");
        let mut want: Vec<(i64, Option<f64>)> = model
            .iter()
            .filter(|(kk, _, _)| *kk == key)
            .map(|&(_, t, x)| (t, x))
            .collect();
        // Stable: ties keep commit (position) order.
        want.sort_by_key(|e| e.0);
        let got: Vec<(i64, Option<f64>)> = match col.find(key.as_bytes(), col.home(key.as_bytes())).unwrap() {
            Some(events) => {
                col.ready(&events).unwrap();
                events.map(|e| (col.time(e), col.value(e))).collect()
            }
            None => Vec::new(),
        };
        assert_eq!(got, want, "key {key}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&m, ops)) = data.split_first() else {
        return;
    };
    let memory = usize::from(m) * 8;
    let dir = tempfile::tempdir().unwrap();
    let mut db = Some(open(dir.path(), memory));
    let mut batch = Batch::new();
    let mut pending: Vec<(String, i64, Option<f64>)> = Vec::new();
    let mut model: Vec<(String, i64, Option<f64>)> = Vec::new();
    for (i, op) in ops.chunks_exact(2).take(300).enumerate() {
        let (op, arg) = (op[0], op[1]);
        let t = i as i64 * 10 - if op & 0x10 != 0 { i64::from(arg) * 7 } else { 0 };
        let key = format!("k{}", arg % KEYS);
        match op % 8 {
            0..=3 => {
                let (v, x) = match op % 4 {
                    0 => (f64::from(arg) / 4.0, true),
                    1 => (f64::from(arg) / 10.0, true),
                    _ => (0.0, false),
                };
                let value = match op % 4 {
                    0 | 1 => format!(r#"{{"p":{v}}}"#),
                    2 => r#"{"p":"x"}"#.to_string(),
                    _ => r#"{"q":1}"#.to_string(),
                };
                batch.put_at("s", &key, value, t).unwrap();
                pending.push((key, t, x.then_some(v)));
            }
            4 => {
                batch.delete_at("s", &key, t).unwrap();
                pending.push((key, t, None));
            }
            5 | 6 => {
                if !batch.is_empty() {
                    let d = db.as_ref().unwrap();
                    d.writer().commit(std::mem::take(&mut batch)).unwrap();
                    model.append(&mut pending);
                }
            }
            _ if !model.is_empty() => {
                let info = db.as_ref().unwrap().build_column("s", "p", &mut |_| {}).unwrap();
                assert_eq!(leftovers(dir.path()), Vec::<String>::new(), "build {i}");
                assert_eq!(info.events, model.len() as u64);
                check_events(&info.path, &model);
                let built = std::fs::read(&info.path).unwrap();
                drop(db.take());
                assert!(built == from_log(dir.path()), "build {i}, {memory} bytes");
                db = Some(open(dir.path(), memory));
            }
            _ => {}
        }
    }
});
