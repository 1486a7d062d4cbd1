use tablelog::*;
#[test]
fn smoke() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::builder(dir.path()).segment_size(4096).default_merge_operator(std::sync::Arc::new(JsonMergePatch)).open().unwrap();
    let w = db.writer();
    for i in 0..200u64 {
        let mut b = Batch::new();
        b.put_at("s", format!("k{}", i % 10), format!(r#"{{"v":{i}}}"#), i as i64).unwrap();
        b.put_at("t", "x", "{}", 0).unwrap();
        let r = w.commit(b).unwrap();
        assert_eq!(r.positions, 2*i..2*i+2);
    }
    let s = db.snapshot().unwrap();
    assert!(s.view().sealed_segments().len() > 2);
    assert_eq!(s.end_position(), 400);
    let all: Vec<_> = s.view().scan(0, None).collect::<Result<_>>().unwrap();
    assert_eq!(all.len(), 400);
    for (i, r) in all.iter().enumerate() { assert_eq!(r.position, i as u64); }
    let rows: Vec<_> = s.table("s", 105, None).unwrap().collect::<Result<_>>().unwrap();
    assert_eq!(rows.len(), 10);
    assert_eq!(&rows[0].value[..], br#"{"v":100}"#);
    drop(s); drop(w); drop(db);
    let db = Db::open(dir.path()).unwrap();
    let s = db.snapshot().unwrap();
    assert_eq!(s.end_position(), 400);
    let rows: Vec<_> = s.table("s", 105, None).unwrap().collect::<Result<_>>().unwrap();
    assert_eq!(rows.len(), 10);
    assert_eq!(&rows[5].value[..], br#"{"v":105}"#);
    let r = s.view().read(399).unwrap();
    assert_eq!(&r.stream[..], "t");
}
