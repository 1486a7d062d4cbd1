//! Format compatibility: a database written by format version 1 (committed in
//! `tests/fixtures/v1`, with a sealed zstd-compressed segment, its sidecars and an
//! active segment) must keep opening with the same answers; so must the same
//! database compacted (`tests/fixtures/v2`: a compacted segment with header
//! version 2, its sidecars, the horizon file and a version 2 checkpoint).

use std::sync::Arc;

use tablelog::{Db, JsonMergePatch, Result};

/// A copy of fixture `name` in a temporary directory (tests never write the
/// committed files).
fn fixture(name: &str) -> tempfile::TempDir {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            let sub = dir.path().join(e.file_name());
            std::fs::create_dir(&sub).unwrap();
            for f in std::fs::read_dir(e.path()).unwrap() {
                let f = f.unwrap();
                std::fs::copy(f.path(), sub.join(f.file_name())).unwrap();
            }
        } else {
            std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
        }
    }
    dir
}

#[test]
fn format_v1_fixture_opens_with_the_same_answers() {
    let dir = fixture("v1");
    assert!(tablelog::storage::verify::verify(dir.path())
        .unwrap()
        .is_clean());
    let db = Db::builder(dir.path())
        .default_merge_operator(Arc::new(JsonMergePatch))
        .open()
        .unwrap();
    assert_eq!(db.recovery().truncated_bytes, 0);
    let s = db.snapshot().unwrap();
    assert_eq!(s.end_position(), 429);
    let rows: Vec<String> = s
        .table("inventory", i64::MAX, None)
        .unwrap()
        .map(|r| String::from_utf8(r.unwrap().value.to_vec()).unwrap())
        .collect();
    assert_eq!(
        rows,
        [
            r#"{"item":"apple","ts":"2024-01-04T09:00:00Z","op":"patch","price":0.95,"qty":48}"#,
            r#"{"item":"banana","ts":"2024-01-02T12:00:00Z","op":"patch","price":0.3,"qty":95}"#,
            r#"{"item":"durian","ts":"2024-01-03T10:00:00Z","op":"put","price":9.50,"qty":5}"#,
        ]
    );
    // The fixture's checkpoint (inventory as of 2024-01-03, position 428) is used
    // and gives the same rows as the log.
    let t = s.table("inventory", 1_704_326_400_000_000, None).unwrap();
    assert!(t.from_checkpoint());
    let from_ck: Vec<_> = t.map(|r| r.unwrap()).collect();
    let scratch: Vec<_> = s
        .table_from_scratch("inventory", 1_704_326_400_000_000, None)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(from_ck, scratch);
    assert_eq!(from_ck.len(), 3);
    let views: Vec<_> = s
        .view()
        .scan(0, Some("views"))
        .collect::<Result<_>>()
        .unwrap();
    assert_eq!(views.len(), 420);
    assert_eq!(views[0].position, 8);
    assert_eq!(s.view().versions("views", b"u3").unwrap().len(), 46);
    let row = s
        .get("views", b"u0", 1_704_110_400_000_000, None)
        .unwrap()
        .row()
        .unwrap();
    assert_eq!(
        &row.value[..],
        br#"{"user": "u0", "ts": 1704110400000, "price": 11, "note": "yyyyyyyyyyyyyyyyyyyy"}"#
    );
}

#[test]
fn compacted_fixture_answers_as_the_original_at_and_after_its_horizon() {
    let (v1, v2) = (fixture("v1"), fixture("v2"));
    assert!(tablelog::storage::verify::verify(v2.path())
        .unwrap()
        .is_clean());
    let open = |d: &std::path::Path| {
        Db::builder(d)
            .default_merge_operator(Arc::new(JsonMergePatch))
            .read_only(true)
            .open()
            .unwrap()
    };
    let (a, b) = (
        open(v1.path()).snapshot().unwrap(),
        open(v2.path()).snapshot().unwrap(),
    );
    let h = b.horizon().expect("the fixture is compacted");
    assert_eq!((h.time, h.position), (1_704_196_800_000_000, 428));
    let day = 86_400_000_000;
    for t in [
        h.time,
        h.time + day / 2,
        h.time + day,
        h.time + 2 * day,
        i64::MAX,
    ] {
        for stream in ["inventory", "views"] {
            let rows = |s: &tablelog::Snapshot| -> Vec<_> {
                s.table(stream, t, None)
                    .unwrap()
                    .map(|r| r.unwrap())
                    .collect()
            };
            assert_eq!(rows(&b), rows(&a), "{stream} as of {t}");
            for k in ["apple", "banana", "cherry", "durian", "u0", "u3", "u8"] {
                assert_eq!(
                    b.get(stream, k.as_bytes(), t, None).unwrap(),
                    a.get(stream, k.as_bytes(), t, None).unwrap(),
                    "{stream}/{k} as of {t}"
                );
            }
        }
    }
    // The version 2 checkpoint of views is used.
    assert!(b.table("views", i64::MAX, None).unwrap().from_checkpoint());
    assert!(matches!(
        b.get("views", b"u0", h.time - 1, None),
        Err(tablelog::Error::BeyondHorizon { .. })
    ));
    assert_eq!(b.view().scan(0, None).count(), 17);
}

/// Every `.kidx` file of `dir`.
fn key_indexes(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "kidx"))
        .collect();
    out.sort();
    out
}

/// `tests/fixtures/kidx_v2`: 400 events over 48 keys (5% deletes) imported
/// in four batches into 4 KiB segments, written by key index format 2: nine
/// sealed segments' key indexes and a merged tier over them. Every lookup,
/// walk and history through those files must answer as the same database
/// whose key indexes are rebuilt from its segments.
#[test]
fn key_index_format_2_fixture_answers_as_its_segments() {
    let (dir, rebuilt) = (fixture("kidx_v2"), fixture("kidx_v2"));
    let files = key_indexes(dir.path());
    assert_eq!(files.len(), 10, "nine segments' and one merged tier's");
    for f in &files {
        let b = std::fs::read(f).unwrap();
        assert_eq!(b[8..12], 2u32.to_le_bytes(), "{} is format 2", f.display());
    }
    for f in key_indexes(rebuilt.path()) {
        std::fs::remove_file(f).unwrap();
    }
    assert!(tablelog::storage::verify::verify(dir.path())
        .unwrap()
        .is_clean());
    let open = |d: &std::path::Path| {
        Db::builder(d)
            .read_only(true)
            .open()
            .unwrap()
            .snapshot()
            .unwrap()
    };
    let (a, b) = (open(dir.path()), open(rebuilt.path()));
    assert_eq!(a.end_position(), 400);
    let (start, hour) = (1_704_067_200_000_000i64, 3_600_000_000i64);
    let keys: Vec<String> = (0..48)
        .map(|k| format!("sku-{k:03}"))
        .chain(["sku-048".into(), "absent".into()])
        .collect();
    let (mut present, mut deleted, mut never) = (0, 0, 0);
    for t in (-24..=11 * 24).step_by(7).map(|h| start + h * hour) {
        for known_at in [None, Some(150), Some(300)] {
            for k in &keys {
                let got = a.get("inventory", k.as_bytes(), t, known_at).unwrap();
                match &got {
                    tablelog::GetResult::Present(_) => present += 1,
                    tablelog::GetResult::Deleted { .. } => deleted += 1,
                    tablelog::GetResult::NeverSeen => never += 1,
                }
                assert_eq!(
                    got,
                    b.get("inventory", k.as_bytes(), t, known_at).unwrap(),
                    "{k} as of {t}, known at {known_at:?}"
                );
            }
        }
        let rows = |s: &tablelog::Snapshot| -> Vec<_> {
            s.table_from_scratch("inventory", t, None)
                .unwrap()
                .map(|r| r.unwrap())
                .collect()
        };
        assert_eq!(rows(&a), rows(&b), "table as of {t}");
    }
    assert!(present > 0 && deleted > 0 && never > 0);
    for k in &keys {
        assert_eq!(
            a.view().versions("inventory", k.as_bytes()).unwrap(),
            b.view().versions("inventory", k.as_bytes()).unwrap(),
            "versions of {k}"
        );
    }
}
