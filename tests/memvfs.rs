//! A whole database on the in-memory file system: rolls, sidecars, the merged
//! index, checkpoints, views, compaction and reopen all go through the seam, so
//! it answers exactly as the same writes on disk, and touches no disk at all.

use std::path::Path;
use std::sync::Arc;

use tablelog::storage::memvfs::MemVfs;
use tablelog::storage::vfs::{OsVfs, Vfs};
use tablelog::{Batch, Db, Error, JsonMergePatch, KnownAt, ViewDef};

fn open(dir: &Path, vfs: Arc<dyn Vfs>) -> tablelog::Result<Db> {
    Db::builder(dir)
        .segment_size(4096)
        .default_merge_operator(Arc::new(JsonMergePatch))
        .auto_merge(false)
        .vfs(vfs)
        .open()
}

fn write(db: &Db, from: u64, to: u64) {
    for i in from..to {
        let mut b = Batch::new();
        for j in 0..3 {
            let key = format!("k{}", (i * 7 + j) % 23);
            let t = (i * 10) as i64 - if i % 5 == 0 { 300 } else { 0 };
            let v = format!(
                r#"{{"n":{i},"j":{j},"pad":"{}"}}"#,
                "y".repeat((i % 50) as usize)
            );
            match (i + j) % 7 {
                0 => b.delete_at("s", key, t).unwrap(),
                1 | 2 => b.patch_at("s", key, v, t).unwrap(),
                _ => b.put_at("s", key, v, t).unwrap(),
            };
        }
        db.writer().commit(b).unwrap();
    }
}

fn answers(db: &Db) -> Vec<Vec<tablelog::Row>> {
    let s = db.snapshot().unwrap();
    [2_000, 3_000, 4_500, i64::MAX]
        .iter()
        .map(|&t| {
            s.table("s", t, KnownAt::Latest)
                .unwrap()
                .collect::<tablelog::Result<_>>()
                .unwrap()
        })
        .collect()
}

#[test]
fn a_database_in_memory_answers_as_on_disk_and_touches_no_disk() {
    let fs = MemVfs::new();
    let root = Path::new("/tablelog-memvfs-test/db");
    let disk_dir = tempfile::tempdir().unwrap();
    let mem = open(root, Arc::new(fs.clone())).unwrap();
    let disk = open(disk_dir.path(), Arc::new(OsVfs)).unwrap();
    for db in [&mem, &disk] {
        db.register_view("latest", ViewDef::Table { stream: "s".into() }, &mut |_| {})
            .unwrap();
        write(db, 0, 300);
        db.checkpoint("s", Some(2_500)).unwrap();
        db.merge_key_indexes().unwrap();
        write(db, 300, 400);
        let r = db.compact(2_000, &mut |_, _| {}).unwrap();
        assert!(r.records_dropped > 0);
        db.save_views().unwrap();
    }
    assert_eq!(answers(&mem), answers(&disk));
    assert!(matches!(
        open(root, Arc::new(fs.clone())),
        Err(Error::Locked(_))
    ));
    drop(mem);
    let mem = open(root, Arc::new(fs.clone())).unwrap();
    assert_eq!(answers(&mem), answers(&disk));
    assert_eq!(
        mem.register_view("latest", ViewDef::Table { stream: "s".into() }, &mut |_| {})
            .unwrap()
            .rows(),
        disk.view("latest").unwrap().rows()
    );
    let files = fs.files();
    for kind in [
        ".seg",
        ".kidx",
        ".fidx",
        ".ckpt",
        ".view",
        "HORIZON",
        "tablelog.meta",
    ] {
        assert!(
            files.iter().any(|p| p.to_string_lossy().ends_with(kind)),
            "no {kind} in {files:?}"
        );
    }
    assert!(
        !Path::new("/tablelog-memvfs-test").exists(),
        "the disk was touched"
    );
}
