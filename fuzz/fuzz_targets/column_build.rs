//! Field column builds against a build from the log with ample memory. The
//! input drives records (five keys, event times in order or late, fields
//! that are numbers, f32-exact or not, strings, absent, deletes), commits,
//! and builds, and picks the build's memory (0 to 2 KiB: most builds
//! spill, into many parts). Every build, held or spilled, from the log or
//! from the column it replaces, must write the bytes a build from the log
//! with ample memory writes.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tablelog::{Batch, Db, JsonMergePatch};

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

fuzz_target!(|data: &[u8]| {
    let Some((&m, ops)) = data.split_first() else {
        return;
    };
    let memory = usize::from(m) * 8;
    let dir = tempfile::tempdir().unwrap();
    let mut db = Some(open(dir.path(), memory));
    let mut batch = Batch::new();
    let mut committed = 0;
    for (i, op) in ops.chunks_exact(2).take(300).enumerate() {
        let (op, arg) = (op[0], op[1]);
        let t = i as i64 * 10 - if op & 0x10 != 0 { i64::from(arg) * 7 } else { 0 };
        let key = format!("k{}", arg % 5);
        match op % 8 {
            0..=3 => {
                let v = match op % 4 {
                    0 => format!(r#"{{"p":{}}}"#, f64::from(arg) / 4.0),
                    1 => format!(r#"{{"p":{}}}"#, f64::from(arg) / 10.0),
                    2 => r#"{"p":"x"}"#.to_string(),
                    _ => r#"{"q":1}"#.to_string(),
                };
                batch.put_at("s", &key, v, t).unwrap();
            }
            4 => {
                batch.delete_at("s", &key, t).unwrap();
            }
            5 | 6 => {
                if !batch.is_empty() {
                    let d = db.as_ref().unwrap();
                    d.writer().commit(std::mem::take(&mut batch)).unwrap();
                    committed += 1;
                }
            }
            _ if committed > 0 => {
                let info = db.as_ref().unwrap().build_column("s", "p", &mut |_| {}).unwrap();
                let built = std::fs::read(&info.path).unwrap();
                drop(db.take());
                assert!(built == from_log(dir.path()), "build {i}, {memory} bytes");
                db = Some(open(dir.path(), memory));
            }
            _ => {}
        }
    }
    let names: Vec<String> = std::fs::read_dir(dir.path().join("columns"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(names.iter().all(|n| n.ends_with(".col")), "{names:?}");
});
