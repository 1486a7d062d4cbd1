//! Behaviour tests of the `tablelog` binary against the CLI contract and the time
//! semantics of `DESIGN.md`. Every test runs the real binary on a fresh temporary
//! database.

use std::cell::Cell;
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_tablelog");

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    args: Vec<String>,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Asserts exit status 0 and returns self.
    #[track_caller]
    fn ok(self) -> Run {
        assert!(
            self.success(),
            "expected success of {:?}, got {:?}\nstdout: {}\nstderr: {}",
            self.args,
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts a failure reported as one line `error: …` on stderr.
    #[track_caller]
    fn fails_with_one_line_error(self) -> Run {
        assert!(
            !self.success() && self.code.is_some(),
            "expected a non-zero exit of {:?}, got {:?}\nstdout: {}\nstderr: {}",
            self.args,
            self.code,
            self.stdout,
            self.stderr
        );
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "expected exactly one line on stderr for {:?}, got: {:?}",
            self.args,
            self.stderr
        );
        assert!(
            lines[0].starts_with("error: "),
            "stderr of {:?} does not start with \"error: \": {:?}",
            self.args,
            self.stderr
        );
        self
    }

    /// Stdout parsed as JSON lines.
    #[track_caller]
    fn rows(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!("stdout line {l:?} of {:?} is not JSON: {e}", self.args)
                })
            })
            .collect()
    }
}

fn run_with<I, S>(args: I, stdin: Option<&str>) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    let mut cmd = Command::new(BIN);
    cmd.args(&args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn tablelog");
    if let Some(input) = stdin {
        let mut w = child.stdin.take().expect("stdin");
        w.write_all(input.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait for tablelog");
    Run {
        args,
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn tl<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_with(args, None)
}

/// Every unsigned integer appearing in `s`, in order.
fn ints(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// An RFC 3339 UTC time printed by the CLI, with trailing zeros of the fraction
/// removed (so `10:00:00.250Z` and `10:00:00.25Z` compare equal).
#[track_caller]
fn norm_time(v: &Value) -> String {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("time {v} is not a string"));
    assert!(
        s.ends_with('Z'),
        "time {s:?} is not printed as RFC 3339 UTC (ending in Z)"
    );
    assert_eq!(
        s.as_bytes().get(10),
        Some(&b'T'),
        "time {s:?} is not RFC 3339 (no T)"
    );
    let body = &s[..s.len() - 1];
    match body.split_once('.') {
        Some((whole, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                format!("{whole}Z")
            } else {
                format!("{whole}.{frac}Z")
            }
        }
        None => s.to_string(),
    }
}

/// A temporary directory with a database path (`DIR/db`, not created) and input files.
struct Env {
    tmp: TempDir,
    db: PathBuf,
    files: Cell<u32>,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = tmp.path().join("db");
        Env {
            tmp,
            db,
            files: Cell::new(0),
        }
    }

    fn db(&self) -> &str {
        self.db.to_str().expect("UTF-8 temp path")
    }

    /// Writes an input file under a unique name ending in `ext` and returns its path.
    fn file(&self, ext: &str, content: &str) -> String {
        let n = self.files.get();
        self.files.set(n + 1);
        let p = self.tmp.path().join(format!("input{n}.{ext}"));
        std::fs::write(&p, content).expect("write input");
        p.to_str().expect("UTF-8 temp path").to_string()
    }

    /// `tablelog import DB --stream S --key id --time ts --op-field op FILE`, any result.
    fn try_import(&self, stream: &str, content: &str, extra: &[&str]) -> Run {
        let f = self.file("jsonl", content);
        let mut args = vec![
            "import",
            self.db(),
            "--stream",
            stream,
            "--key",
            "id",
            "--time",
            "ts",
            "--op-field",
            "op",
        ];
        args.extend_from_slice(extra);
        args.push(&f);
        tl(args)
    }

    /// Like `try_import`, asserting success.
    #[track_caller]
    fn import(&self, stream: &str, content: &str) -> Run {
        self.try_import(stream, content, &[]).ok()
    }

    /// Runs `tablelog SUB DB ARGS…`.
    fn cmd(&self, sub: &str, args: &[&str]) -> Run {
        let mut all = vec![sub, self.db()];
        all.extend_from_slice(args);
        tl(all)
    }

    /// `table` as JSON rows, asserting success.
    #[track_caller]
    fn table(&self, stream: &str, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["--stream", stream];
        all.extend_from_slice(args);
        self.cmd("table", &all).ok().rows()
    }

    /// `get`: the row, or `None` when it exits 1 with empty stdout.
    #[track_caller]
    fn get(&self, stream: &str, key: &str, args: &[&str]) -> Option<Value> {
        let mut all = vec!["--stream", stream, "--key", key];
        all.extend_from_slice(args);
        let r = self.cmd("get", &all);
        match r.code {
            Some(0) => {
                let rows = r.rows();
                assert_eq!(
                    rows.len(),
                    1,
                    "get printed {} rows: {:?}",
                    rows.len(),
                    r.stdout
                );
                Some(rows[0].clone())
            }
            Some(1) => {
                assert!(
                    r.stdout.is_empty(),
                    "get of an absent row printed {:?}",
                    r.stdout
                );
                None
            }
            other => panic!("get {all:?} exited {other:?}: {}", r.stderr),
        }
    }

    /// `history` rows, asserting success.
    #[track_caller]
    fn history(&self, stream: &str, key: &str) -> Vec<Value> {
        self.cmd("history", &["--stream", stream, "--key", key])
            .ok()
            .rows()
    }

    /// Stderr with the temporary directory removed (so its digits do not count).
    fn clean(&self, s: &str) -> String {
        s.replace(self.tmp.path().to_str().unwrap_or(""), "")
    }
}

/// The values of `field` in each row.
fn col(rows: &[Value], field: &str) -> Vec<Value> {
    rows.iter()
        .map(|r| r.get(field).cloned().unwrap_or(Value::Null))
        .collect()
}

// ---------------------------------------------------------------------------
// import
// ---------------------------------------------------------------------------

#[test]
fn import_jsonl_creates_database_and_reports_count_and_positions() {
    let e = Env::new();
    assert!(!e.db.exists());
    let r = e.import(
        "inventory",
        concat!(
            r#"{"id":"apple","ts":"2024-01-01T09:00:00Z","price":1.0}"#,
            "\n",
            r#"{"id":"banana","ts":"2024-01-01T09:00:00Z","price":0.25}"#,
            "\n",
            r#"{"id":"cherry","ts":"2024-01-01T09:00:00Z","price":4.0}"#,
            "\n",
            r#"{"id":"durian","ts":"2024-01-01T09:00:00Z","price":9.5}"#,
            "\n",
            r#"{"id":"elder","ts":"2024-01-01T09:00:00Z","price":2.0}"#,
            "\n",
        ),
    );
    assert!(
        e.db.is_dir(),
        "import did not create the database directory"
    );
    assert!(
        r.stdout.is_empty(),
        "import printed on stdout: {:?}",
        r.stdout
    );
    let n = ints(&e.clean(&r.stderr));
    for want in [5, 0, 4] {
        assert!(
            n.contains(&want),
            "import stderr {:?} lacks count 5 / positions 0 and 4",
            r.stderr
        );
    }
    let r = e.import(
        "inventory",
        concat!(
            r#"{"id":"fig","ts":"2024-01-02T09:00:00Z","price":3.0}"#,
            "\n",
            r#"{"id":"grape","ts":"2024-01-02T09:00:00Z","price":3.5}"#,
            "\n",
            r#"{"id":"apple","ts":"2024-01-02T09:00:00Z","price":1.1}"#,
            "\n",
        ),
    );
    let n = ints(&e.clean(&r.stderr));
    for want in [3, 5, 7] {
        assert!(
            n.contains(&want),
            "second import stderr {:?} lacks count 3 / positions 5 and 7",
            r.stderr
        );
    }
    let rows = e.table("inventory", &[]);
    assert_eq!(
        col(&rows, "id"),
        vec![
            json!("apple"),
            json!("banana"),
            json!("cherry"),
            json!("durian"),
            json!("elder"),
            json!("fig"),
            json!("grape")
        ]
    );
    assert_eq!(
        rows[0],
        json!({"id":"apple","ts":"2024-01-02T09:00:00Z","price":1.1})
    );
    // Records of one file take consecutive positions in input order.
    assert_eq!(e.history("inventory", "fig")[0]["_position"], json!(5));
    assert_eq!(e.history("inventory", "apple")[1]["_position"], json!(7));
}

#[test]
fn import_from_stdin() {
    let e = Env::new();
    let r = run_with(
        ["import", e.db(), "--stream", "s", "--key", "id", "--time", "ts", "-"],
        Some("{\"id\":\"a\",\"ts\":\"2024-01-01\",\"v\":1}\n{\"id\":\"b\",\"ts\":\"2024-01-01\",\"v\":2}\n"),
    )
    .ok();
    assert!(
        ints(&e.clean(&r.stderr)).contains(&2),
        "stderr: {}",
        r.stderr
    );
    assert_eq!(col(&e.table("s", &[]), "v"), vec![json!(1), json!(2)]);
}

#[test]
fn import_csv_by_extension() {
    let e = Env::new();
    let f = e.file(
        "csv",
        "id,ts,price,name\na,2024-01-01 09:00:00,1.5,apple\n7,2024-01-01T10:00:00Z,2,seven\n",
    );
    tl([
        "import",
        e.db(),
        "--stream",
        "s",
        "--key",
        "id",
        "--time",
        "ts",
        &f,
    ])
    .ok();
    let rows = e.table("s", &[]);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["id"], json!(7));
    assert_eq!(rows[0]["name"], json!("seven"));
    assert_eq!(rows[1]["id"], json!("a"));
    assert_eq!(rows[1]["price"].as_f64(), Some(1.5));
    assert_eq!(rows[1]["name"], json!("apple"));
    assert_eq!(
        e.get("s", "7", &[]).expect("numeric CSV key 7")["name"],
        json!("seven")
    );
    assert_eq!(
        norm_time(&e.history("s", "a")[0]["_event_time"]),
        "2024-01-01T09:00:00Z"
    );
}

#[test]
fn import_format_flag_overrides_extension() {
    let e = Env::new();
    // CSV content in a .txt file.
    let f = e.file("txt", "id,ts,qty\nx,2024-01-01,5\n");
    tl([
        "import",
        e.db(),
        "--stream",
        "s",
        "--key",
        "id",
        "--time",
        "ts",
        "--format",
        "csv",
        &f,
    ])
    .ok();
    assert_eq!(e.get("s", "x", &[]).expect("row x")["qty"], json!(5));
    // JSON lines in a .csv file.
    let f = e.file("csv", "{\"id\":\"y\",\"ts\":\"2024-01-01\",\"qty\":6}\n");
    tl([
        "import",
        e.db(),
        "--stream",
        "s",
        "--key",
        "id",
        "--time",
        "ts",
        "--format",
        "jsonl",
        &f,
    ])
    .ok();
    assert_eq!(e.get("s", "y", &[]).expect("row y")["qty"], json!(6));
}

#[test]
fn import_op_field_put_patch_delete() {
    let e = Env::new();
    e.import(
        "s",
        concat!(
            r#"{"id":"a","ts":"2024-01-01T01:00:00Z","op":"put","price":1,"qty":10}"#,
            "\n",
            r#"{"id":"a","ts":"2024-01-01T02:00:00Z","op":"patch","qty":7}"#,
            "\n",
            r#"{"id":"b","ts":"2024-01-01T01:00:00Z","op":"put","price":2}"#,
            "\n",
            r#"{"id":"b","ts":"2024-01-01T02:00:00Z","op":"delete"}"#,
            "\n",
            r#"{"id":"c","ts":"2024-01-01T01:00:00Z","price":3}"#,
            "\n",
        ),
    );
    let rows = e.table("s", &[]);
    assert_eq!(col(&rows, "id"), vec![json!("a"), json!("c")], "{rows:?}");
    assert_eq!(
        rows[0]["price"],
        json!(1),
        "patch must keep fields it does not list"
    );
    assert_eq!(
        rows[0]["qty"],
        json!(7),
        "patch must replace the fields it lists"
    );
    assert_eq!(
        rows[1]["price"],
        json!(3),
        "a line without the op field is a put"
    );
    let ops = col(&e.history("s", "a"), "_op");
    assert_eq!(ops, vec![json!("put"), json!("patch")]);
    let ops = col(&e.history("s", "b"), "_op");
    assert_eq!(ops, vec![json!("put"), json!("delete")]);
}

#[test]
fn import_patch_null_removes_field() {
    let e = Env::new();
    e.import(
        "s",
        concat!(
            r#"{"id":"a","ts":1000,"op":"put","x":1,"y":2}"#,
            "\n",
            r#"{"id":"a","ts":2000,"op":"patch","y":null}"#,
            "\n",
        ),
    );
    let row = e.get("s", "a", &[]).expect("row a");
    assert_eq!(row["x"], json!(1));
    assert!(
        row.get("y").is_none(),
        "merge patch null must remove the field: {row}"
    );
}

#[test]
fn import_numeric_key_is_a_string_key() {
    let e = Env::new();
    e.import(
        "s",
        concat!(
            r#"{"id":42,"ts":1000,"op":"put","v":1}"#,
            "\n",
            r#"{"id":"42","ts":2000,"op":"patch","w":2}"#,
            "\n",
        ),
    );
    // The number 42 and the string "42" are the same key.
    let rows = e.table("s", &[]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = e.get("s", "42", &[]).expect("row of key 42");
    assert_eq!((row["v"].clone(), row["w"].clone()), (json!(1), json!(2)));
    assert_eq!(e.history("s", "42").len(), 2);
}

/// Imports two good records, then a file whose line 3 is `bad`, and checks the
/// failure is `error: FILE:3: reason`, nothing of the file is visible, and the next
/// import's positions continue at 2.
fn assert_bad_line_rejected(bad: &str) {
    let e = Env::new();
    e.import(
        "s",
        concat!(
            r#"{"id":"a","ts":"2024-01-01T00:00:00Z","v":1}"#,
            "\n",
            r#"{"id":"b","ts":"2024-01-01T00:00:00Z","v":2}"#,
            "\n",
        ),
    );
    let before = e.cmd("table", &["--stream", "s"]).ok().stdout;
    let content = format!(
        "{}\n{}\n{bad}\n{}\n",
        r#"{"id":"a","ts":"2024-01-02T00:00:00Z","v":10}"#,
        r#"{"id":"c","ts":"2024-01-02T00:00:00Z","v":30}"#,
        r#"{"id":"d","ts":"2024-01-02T00:00:00Z","v":40}"#,
    );
    let f = e.file("jsonl", &content);
    let r = tl([
        "import",
        e.db(),
        "--stream",
        "s",
        "--key",
        "id",
        "--time",
        "ts",
        "--op-field",
        "op",
        &f,
    ])
    .fails_with_one_line_error();
    let line = r
        .stderr
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    assert!(
        line.contains(&format!("{f}:3")),
        "error {line:?} does not name {f}:3 (bad line {bad:?})"
    );
    let reason = line.split_once(&format!("{f}:3")).map_or("", |(_, r)| r);
    assert!(
        reason.trim_start_matches(':').trim().len() > 3,
        "error {line:?} gives no reason"
    );
    let after = e.cmd("table", &["--stream", "s"]).ok().stdout;
    assert_eq!(
        after, before,
        "a failed import changed the table (bad line {bad:?})"
    );
    assert!(
        e.get("s", "c", &[]).is_none(),
        "a record of the failed file is visible"
    );
    let r = e.import(
        "s",
        "{\"id\":\"e\",\"ts\":\"2024-01-03T00:00:00Z\",\"v\":5}\n",
    );
    assert!(
        ints(&e.clean(&r.stderr)).contains(&2),
        "positions after a failed import do not continue at 2: {}",
        r.stderr
    );
    assert_eq!(
        e.history("s", "e")[0]["_position"],
        json!(2),
        "positions after a failed import"
    );
}

#[test]
fn import_rejects_non_object_line() {
    assert_bad_line_rejected("[1,2,3]");
}

#[test]
fn import_rejects_invalid_json() {
    assert_bad_line_rejected(r#"{"id":"x","ts":"#);
}

#[test]
fn import_rejects_missing_key_field() {
    assert_bad_line_rejected(r#"{"ts":"2024-01-02T00:00:00Z","v":3}"#);
}

#[test]
fn import_rejects_missing_time_field() {
    assert_bad_line_rejected(r#"{"id":"x","v":3}"#);
}

#[test]
fn import_rejects_unparsable_time() {
    assert_bad_line_rejected(r#"{"id":"x","ts":"yesterday at noon","v":3}"#);
}

#[test]
fn import_rejects_unknown_op() {
    assert_bad_line_rejected(r#"{"id":"x","ts":"2024-01-02T00:00:00Z","op":"upsert","v":3}"#);
}

#[test]
fn import_csv_bad_row_reports_file_and_line() {
    let e = Env::new();
    let f = e.file(
        "csv",
        "id,ts,v\na,2024-01-01,1\nb,2024-01-01,2\nc,not a time,3\nd,2024-01-01,4\n",
    );
    let r = tl([
        "import",
        e.db(),
        "--stream",
        "s",
        "--key",
        "id",
        "--time",
        "ts",
        &f,
    ])
    .fails_with_one_line_error();
    assert!(
        r.stderr.contains(&format!("{f}:4")),
        "CSV error {:?} does not name {f}:4",
        r.stderr
    );
    // Nothing visible: the stream never got a record.
    let r = e.cmd("table", &["--stream", "s"]);
    assert!(
        !r.success() || r.stdout.trim().is_empty(),
        "rows of a failed CSV import are visible: {}",
        r.stdout
    );
}

#[test]
fn import_skip_invalid_skips_and_counts() {
    let e = Env::new();
    let r = e.try_import(
        "s",
        concat!(
            r#"{"id":"a","ts":"2024-01-01","v":1}"#,
            "\n",
            "not json\n",
            r#"{"id":"b","ts":"2024-01-01","v":2}"#,
            "\n",
            r#"{"id":"c","v":3}"#,
            "\n",
            r#"{"id":"d","ts":"2024-01-01","v":4}"#,
            "\n",
        ),
        &["--skip-invalid"],
    );
    let r = r.ok();
    let rows = e.table("s", &[]);
    assert_eq!(col(&rows, "id"), vec![json!("a"), json!("b"), json!("d")]);
    let counted = e
        .clean(&r.stderr)
        .lines()
        .any(|l| l.to_lowercase().contains("skip") && ints(l).contains(&2) && !l.contains(":2:"));
    assert!(
        counted,
        "stderr does not count 2 skipped lines: {:?}",
        r.stderr
    );
    assert!(
        ints(&e.clean(&r.stderr)).contains(&3),
        "stderr does not count 3 imported records: {:?}",
        r.stderr
    );
}

// ---------------------------------------------------------------------------
// missing database, unknown stream
// ---------------------------------------------------------------------------

/// Runs each command on `dir` (which holds no database) and returns the failures
/// to meet the contract.
fn missing_db_failures(dir: &Path, req: &str, cmds: &[(&str, Vec<&str>)]) -> Vec<String> {
    let d = dir.to_str().unwrap();
    let mut failures = Vec::new();
    for (sub, extra) in cmds {
        let mut args = vec![*sub, d];
        args.extend(extra.iter().map(|a| if *a == "REQ" { req } else { *a }));
        let r = tl(&args);
        let want = format!("error: no tablelog database at {d}");
        let lines: Vec<&str> = r.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        if r.success() || r.code.is_none() {
            failures.push(format!("{sub}: exit {:?}", r.code));
        }
        if lines.len() != 1 || lines[0].trim_end() != want {
            failures.push(format!("{sub}: stderr {:?}, expected {want:?}", r.stderr));
        }
        if dir.join("tablelog.meta").exists()
            || std::fs::read_dir(dir).is_ok_and(|mut it| it.next().is_some())
        {
            failures.push(format!("{sub}: created files in {d}"));
        }
    }
    failures
}

fn query_commands() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("table", vec!["--stream", "s"]),
        ("get", vec!["--stream", "s", "--key", "a"]),
        ("history", vec!["--stream", "s", "--key", "a"]),
        (
            "changes",
            vec![
                "--stream",
                "s",
                "--from",
                "2024-01-01",
                "--to",
                "2024-01-02",
            ],
        ),
        (
            "join",
            vec![
                "--requests",
                "REQ",
                "--key",
                "id",
                "--time",
                "ts",
                "--feature",
                "s",
            ],
        ),
        (
            "window",
            vec![
                "--stream",
                "s",
                "--field",
                "v",
                "--agg",
                "sum",
                "--window",
                "1h",
                "--requests",
                "REQ",
                "--key",
                "id",
                "--time",
                "ts",
            ],
        ),
        ("verify", vec![]),
        ("stats", vec![]),
    ]
}

#[test]
fn query_subcommands_on_missing_database_fail_without_creating_one() {
    let e = Env::new();
    let req = e.file("jsonl", "{\"id\":\"a\",\"ts\":\"2024-01-01\"}\n");
    // A directory that does not exist.
    let missing = e.tmp.path().join("nothing-here");
    let mut failures = missing_db_failures(&missing, &req, &query_commands());
    if missing.exists() {
        failures.push(format!("{} was created", missing.display()));
    }
    // An empty directory.
    let empty = e.tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    failures.extend(missing_db_failures(&empty, &req, &query_commands()));
    assert!(
        failures.is_empty(),
        "contract violations:\n{}",
        failures.join("\n")
    );
}

#[test]
fn checkpoint_on_missing_database_fails_without_creating_one() {
    let e = Env::new();
    let empty = e.tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let cmds = vec![("checkpoint", vec![])];
    let failures = missing_db_failures(&empty, "", &cmds);
    assert!(
        failures.is_empty(),
        "contract violations:\n{}",
        failures.join("\n")
    );
}

#[test]
fn checkpoint_then_table_gives_the_same_rows() {
    let e = Env::new();
    e.import(
        "s",
        "{\"id\":\"a\",\"ts\":\"2024-01-01\",\"v\":1}\n{\"id\":\"b\",\"ts\":\"2024-01-02\",\"v\":2}\n",
    );
    let before = e.cmd("table", &["--stream", "s"]).ok().stdout;
    let r = e.cmd("checkpoint", &["--stream", "s"]).ok();
    assert!(r.stdout.contains("2 rows"), "{}", r.stdout);
    e.import("s", "{\"id\":\"a\",\"ts\":\"2023-12-31\",\"v\":0}\n");
    assert_eq!(
        e.cmd("table", &["--stream", "s"]).ok().stdout,
        before,
        "a late, older event changes nothing"
    );
    e.cmd("checkpoint", &["--stream", "nope"])
        .fails_with_one_line_error();
    e.cmd("verify", &[]).ok();
}

#[test]
fn column_then_window_gives_the_same_answers() {
    let e = Env::new();
    e.import(
        "s",
        "{\"id\":\"a\",\"ts\":\"2024-01-01T00:00:00Z\",\"v\":1}\n\
         {\"id\":\"a\",\"ts\":\"2024-01-01T00:10:00Z\",\"v\":\"x\"}\n\
         {\"id\":\"b\",\"ts\":\"2024-01-01T00:20:00Z\",\"v\":5}\n\
         {\"id\":\"a\",\"ts\":\"2024-01-01T00:30:00Z\",\"v\":3}\n",
    );
    let req = e.file(
        "jsonl",
        "{\"id\":\"a\",\"ts\":\"2024-01-01T00:31:00Z\"}\n{\"id\":\"b\",\"ts\":\"2024-01-01T00:25:00Z\"}\n{\"id\":\"c\",\"ts\":\"2024-01-01T00:25:00Z\"}\n",
    );
    let window = |agg: &str| {
        e.cmd(
            "window",
            &[
                "--stream",
                "s",
                "--field",
                "v",
                "--agg",
                agg,
                "--window",
                "1h",
                "--requests",
                &req,
                "--key",
                "id",
                "--time",
                "ts",
            ],
        )
        .ok()
        .stdout
    };
    let before: Vec<String> = ["count", "sum", "avg", "min", "max"].map(window).to_vec();
    let built = e.cmd("column", &["--stream", "s", "--field", "v"]).ok();
    assert!(
        built.stdout.contains("4 events over 2 keys"),
        "{}",
        built.stdout
    );
    let through: Vec<String> = ["count", "sum", "avg", "min", "max"].map(window).to_vec();
    assert_eq!(before, through);
    // Built again with no memory for events: spilled, the same answers.
    let spilled = e
        .cmd(
            "column",
            &["--stream", "s", "--field", "v", "--memory", "0"],
        )
        .ok();
    assert!(spilled.stdout.contains("4 events over 2 keys"));
    let again: Vec<String> = ["count", "sum", "avg", "min", "max"].map(window).to_vec();
    assert_eq!(before, again);
    let listed = e.cmd("column", &[]).ok();
    assert!(
        listed.stdout.starts_with("s.v: 4 events"),
        "{}",
        listed.stdout
    );
    assert!(
        listed.stdout.contains("(the log has 0 positions since"),
        "{}",
        listed.stdout
    );
    // A late event after the column: read from the log's tail.
    e.import(
        "s",
        "{\"id\":\"a\",\"ts\":\"2024-01-01T00:05:00Z\",\"v\":10}\n",
    );
    let listed = e.cmd("column", &[]).ok();
    assert!(
        listed.stdout.contains("(the log has 1 position since"),
        "{}",
        listed.stdout
    );
    let after: Vec<String> = ["count", "sum", "avg", "min", "max"].map(window).to_vec();
    assert!(after[1].contains("\"sum_v_1h\":14.0"), "{}", after[1]);
    assert_ne!(before, after);
    e.cmd("column", &["--stream", "s", "--field", "v", "--drop"])
        .ok();
    let dropped: Vec<String> = ["count", "sum", "avg", "min", "max"].map(window).to_vec();
    assert_eq!(after, dropped);
    e.cmd("column", &["--stream", "s", "--field", "v", "--drop"])
        .fails_with_one_line_error();
    e.cmd("column", &["--stream", "nope", "--field", "v"])
        .fails_with_one_line_error();
    e.cmd("column", &["--stream", "s"])
        .fails_with_one_line_error();
    e.cmd("verify", &[]).ok();
}

#[test]
fn unknown_stream_is_a_one_line_error() {
    let e = Env::new();
    e.import("s", "{\"id\":\"a\",\"ts\":\"2024-01-01\",\"v\":1}\n");
    let req = e.file("jsonl", "{\"id\":\"a\",\"ts\":\"2024-01-02\"}\n");
    e.cmd("table", &["--stream", "nope"])
        .fails_with_one_line_error();
    let r = e
        .cmd("get", &["--stream", "nope", "--key", "a"])
        .fails_with_one_line_error();
    assert!(r.stdout.is_empty());
    e.cmd("history", &["--stream", "nope", "--key", "a"])
        .fails_with_one_line_error();
    e.cmd(
        "changes",
        &[
            "--stream",
            "nope",
            "--from",
            "2024-01-01",
            "--to",
            "2024-01-02",
        ],
    )
    .fails_with_one_line_error();
    e.cmd(
        "join",
        &[
            "--requests",
            &req,
            "--key",
            "id",
            "--time",
            "ts",
            "--feature",
            "nope",
        ],
    )
    .fails_with_one_line_error();
    e.cmd(
        "window",
        &[
            "--stream",
            "nope",
            "--field",
            "v",
            "--agg",
            "count",
            "--window",
            "1h",
            "--requests",
            &req,
            "--key",
            "id",
            "--time",
            "ts",
        ],
    )
    .fails_with_one_line_error();
}

// ---------------------------------------------------------------------------
// time parsing and printing
// ---------------------------------------------------------------------------

#[test]
fn time_fields_accept_every_contract_form_and_print_rfc3339_utc() {
    let e = Env::new();
    let cases: &[(&str, Value, &str)] = &[
        ("z", json!("2013-01-01T10:00:00Z"), "2013-01-01T10:00:00Z"),
        (
            "plus",
            json!("2013-01-01T12:00:00+02:00"),
            "2013-01-01T10:00:00Z",
        ),
        (
            "minus",
            json!("2013-01-01T09:30:00-00:30"),
            "2013-01-01T10:00:00Z",
        ),
        (
            "zfrac",
            json!("2013-01-01T10:00:00.123456Z"),
            "2013-01-01T10:00:00.123456Z",
        ),
        (
            "space",
            json!("2013-01-01 10:00:00"),
            "2013-01-01T10:00:00Z",
        ),
        (
            "spacefrac",
            json!("2013-01-01 10:00:00.25"),
            "2013-01-01T10:00:00.25Z",
        ),
        (
            "spacemicro",
            json!("2013-01-01 10:00:00.000001"),
            "2013-01-01T10:00:00.000001Z",
        ),
        ("tee", json!("2013-01-01T10:00:00"), "2013-01-01T10:00:00Z"),
        (
            "teefrac",
            json!("2013-01-01T10:00:00.5"),
            "2013-01-01T10:00:00.5Z",
        ),
        ("date", json!("2013-01-01"), "2013-01-01T00:00:00Z"),
        ("msnum", json!(1357034400000i64), "2013-01-01T10:00:00Z"),
        ("msstr", json!("1357034400001"), "2013-01-01T10:00:00.001Z"),
    ];
    let mut input = String::new();
    for (id, ts, _) in cases {
        input.push_str(&json!({"id": id, "ts": ts}).to_string());
        input.push('\n');
    }
    e.import("s", &input);
    for (id, ts, want) in cases {
        let h = e.history("s", id);
        assert_eq!(h.len(), 1, "history of {id}");
        assert_eq!(norm_time(&h[0]["_event_time"]), *want, "time field {ts}");
    }
}

#[test]
fn time_unit_flag_reads_integer_times() {
    for (unit, value) in [
        ("s", 1357034400i64),
        ("ms", 1357034400000),
        ("us", 1357034400000000),
        ("ns", 1357034400000000000),
    ] {
        let e = Env::new();
        e.try_import(
            "s",
            &format!("{{\"id\":\"a\",\"ts\":{value}}}\n"),
            &["--time-unit", unit],
        )
        .ok();
        let h = e.history("s", "a");
        assert_eq!(
            norm_time(&h[0]["_event_time"]),
            "2013-01-01T10:00:00Z",
            "--time-unit {unit}"
        );
    }
    // Query times in seconds: the event at exactly 1357034400 s is visible, not before.
    let e = Env::new();
    e.import("s", "{\"id\":\"a\",\"ts\":\"2013-01-01T10:00:00Z\"}\n");
    assert_eq!(
        e.table("s", &["--as-of", "1357034400", "--time-unit", "s"])
            .len(),
        1
    );
    assert_eq!(
        e.table("s", &["--as-of", "1357034399", "--time-unit", "s"])
            .len(),
        0
    );
    assert_eq!(
        e.table("s", &["--as-of", "1357034400000000", "--time-unit", "us"])
            .len(),
        1
    );
    assert_eq!(
        e.table(
            "s",
            &["--as-of", "1357034399999999999", "--time-unit", "ns"]
        )
        .len(),
        0
    );
}

#[test]
fn as_of_accepts_every_contract_form() {
    let e = Env::new();
    e.import("s", "{\"id\":\"a\",\"ts\":\"2013-01-01T10:00:00Z\"}\n");
    for (t, visible) in [
        ("2013-01-01T10:00:00Z", true),
        ("2013-01-01T11:00:00+01:00", true),
        ("2013-01-01T09:00:00+01:00", false),
        ("2013-01-01T09:30:00-00:30", true),
        ("2013-01-01 10:00:00", true),
        ("2013-01-01 09:59:59.999999", false),
        ("2013-01-01T10:00:00", true),
        ("2013-01-01T09:59:59.999", false),
        ("2013-01-01", false),
        ("2013-01-02", true),
        ("1357034400000", true),
        ("1357034399999", false),
    ] {
        let n = e.table("s", &["--as-of", t]).len();
        assert_eq!(n == 1, visible, "--as-of {t}: {n} rows");
    }
}

#[test]
fn unparsable_as_of_is_an_error() {
    let e = Env::new();
    e.import("s", "{\"id\":\"a\",\"ts\":\"2013-01-01T10:00:00Z\"}\n");
    for args in [
        vec!["table", e.db(), "--stream", "s", "--as-of", "yesterday"],
        vec![
            "get",
            e.db(),
            "--stream",
            "s",
            "--key",
            "a",
            "--as-of",
            "2013-13-01",
        ],
        vec![
            "table",
            e.db(),
            "--stream",
            "s",
            "--as-of",
            "2013-01-01T10:00",
        ],
        vec![
            "changes",
            e.db(),
            "--stream",
            "s",
            "--from",
            "soon",
            "--to",
            "2014-01-01",
        ],
    ] {
        let r = tl(&args);
        assert!(
            !r.success() && r.code.is_some(),
            "{args:?} exited {:?}",
            r.code
        );
        assert!(r.stdout.is_empty(), "{args:?} printed {:?}", r.stdout);
        assert!(
            r.stderr.starts_with("error: "),
            "{args:?}: stderr {:?}",
            r.stderr
        );
    }
}

#[test]
fn unparsable_as_of_error_is_one_line() {
    // "non-zero with a one-line `error: …` on failure" applies to bad arguments too.
    let e = Env::new();
    e.import("s", "{\"id\":\"a\",\"ts\":\"2013-01-01T10:00:00Z\"}\n");
    let r = e
        .cmd("table", &["--stream", "s", "--as-of", "yesterday"])
        .fails_with_one_line_error();
    assert!(
        r.stderr.contains("yesterday"),
        "error does not quote the bad time: {:?}",
        r.stderr
    );
}

// ---------------------------------------------------------------------------
// table
// ---------------------------------------------------------------------------

#[test]
fn table_as_of_bound_is_inclusive() {
    let e = Env::new();
    e.import(
        "s",
        concat!(
            r#"{"id":"a","ts":"2024-01-01T10:00:00Z","v":1}"#,
            "\n",
            r#"{"id":"a","ts":"2024-01-01T11:00:00Z","v":2}"#,
            "\n",
        ),
    );
    assert_eq!(
        col(&e.table("s", &["--as-of", "2024-01-01T10:00:00Z"]), "v"),
        vec![json!(1)]
    );
    assert_eq!(
        col(
            &e.table("s", &["--as-of", "2024-01-01T10:59:59.999999Z"]),
            "v"
        ),
        vec![json!(1)]
    );
    assert_eq!(
        col(&e.table("s", &["--as-of", "2024-01-01T11:00:00Z"]), "v"),
        vec![json!(2)]
    );
    assert!(e
        .table("s", &["--as-of", "2024-01-01T09:59:59.999999Z"])
        .is_empty());
    assert_eq!(
        e.get("s", "a", &["--as-of", "2024-01-01T10:00:00Z"])
            .expect("row at T")["v"],
        json!(1)
    );
}

#[test]
fn table_equal_event_time_later_position_wins() {
    let e = Env::new();
    // Within one file: the later line wins.
    e.import(
        "s",
        concat!(
            r#"{"id":"a","ts":"2024-01-01T10:00:00Z","v":"second-to-last"}"#,
            "\n",
            r#"{"id":"a","ts":"2024-01-01T10:00:00Z","v":"last"}"#,
            "\n",
        ),
    );
    assert_eq!(col(&e.table("s", &[]), "v"), vec![json!("last")]);
    // Across files: the later import wins at the same event time.
    e.import(
        "s",
        "{\"id\":\"a\",\"ts\":\"2024-01-01T10:00:00Z\",\"v\":\"later file\"}\n",
    );
    assert_eq!(
        col(&e.table("s", &["--as-of", "2024-01-01T10:00:00Z"]), "v"),
        vec![json!("later file")]
    );
    // ...but an event with a later event time imported earlier still wins over it.
    e.import(
        "s",
        "{\"id\":\"b\",\"ts\":\"2024-01-01T12:00:00Z\",\"v\":\"newer event\"}\n",
    );
    e.import(
        "s",
        "{\"id\":\"b\",\"ts\":\"2024-01-01T11:00:00Z\",\"v\":\"older event\"}\n",
    );
    assert_eq!(
        e.get("s", "b", &[]).expect("row b")["v"],
        json!("newer event")
    );
}

#[test]
fn table_late_event_visible_only_when_known() {
    let e = Env::new();
    e.import(
        "s",
        concat!(
            r#"{"id":"a","ts":"2024-01-01T00:00:00Z","v":1}"#,
            "\n",
            r#"{"id":"a","ts":"2024-01-03T00:00:00Z","v":3}"#,
            "\n",
        ),
    );
    // The late event: position 2, event time between the two.
    e.import(
        "s",
        "{\"id\":\"a\",\"ts\":\"2024-01-02T00:00:00Z\",\"v\":2}\n",
    );
    let day2 = "2024-01-02T12:00:00Z";
    assert_eq!(
        col(&e.table("s", &["--as-of", day2]), "v"),
        vec![json!(2)],
        "default known-at is latest"
    );
    assert_eq!(
        col(&e.table("s", &["--as-of", day2, "--known-at", "1"]), "v"),
        vec![json!(1)],
        "known at 1: late event not seen"
    );
    assert_eq!(
        col(&e.table("s", &["--as-of", day2, "--known-at", "2"]), "v"),
        vec![json!(2)],
        "known at 2: late event seen"
    );
    assert_eq!(
        col(
            &e.table("s", &["--as-of", "2024-01-01T12:00:00Z", "--known-at", "2"]),
            "v"
        ),
        vec![json!(1)],
        "before its event time"
    );
    assert_eq!(
        col(&e.table("s", &["--as-of", "2024-01-03T00:00:00Z"]), "v"),
        vec![json!(3)],
        "as of day 3 the day-3 event (position 1) is newer than the late day-2 event (position 2)"
    );
    assert!(e.table("s", &["--as-of", day2, "--known-at", "0"]).len() == 1);
    assert_eq!(
        e.get("s", "a", &["--as-of", day2, "--known-at", "1"])
            .expect("row a")["v"],
        json!(1)
    );
    assert_eq!(
        e.get("s", "a", &["--as-of", day2, "--known-at", "2"])
            .expect("row a")["v"],
        json!(2)
    );
}

#[test]
fn table_applies_versions_in_event_time_order_not_position_order() {
    let e = Env::new();
    // One file whose events arrive out of event-time order.
    e.import(
        "s",
        concat!(
            r#"{"id":"a","ts":"2024-01-01T00:00:00Z","v":1}"#,
            "\n",
            r#"{"id":"a","ts":"2024-01-03T00:00:00Z","v":3}"#,
            "\n",
            r#"{"id":"a","ts":"2024-01-02T00:00:00Z","v":2}"#,
            "\n",
        ),
    );
    let get = e.get("s", "a", &[]).expect("row a");
    assert_eq!(get["v"], json!(3), "get");
    let rows = e.table("s", &[]);
    assert_eq!(
        col(&rows, "v"),
        vec![json!(3)],
        "table must agree with get: the latest event time wins"
    );
    let rows = e.table("s", &["--as-of", "2024-01-02T12:00:00Z"]);
    assert_eq!(col(&rows, "v"), vec![json!(2)]);
}

#[test]
fn known_at_a_position_not_written_is_an_error() {
    let e = Env::new();
    e.import("s", "{\"id\":\"a\",\"ts\":\"2024-01-01\",\"v\":1}\n");
    let r = e
        .cmd("table", &["--stream", "s", "--known-at", "5"])
        .fails_with_one_line_error();
    assert!(r.stdout.is_empty());
}

#[test]
fn table_patch_after_delete_creates_row_from_patch_alone() {
    let e = Env::new();
    e.import(
        "s",
        concat!(
            r#"{"id":"a","ts":1000,"op":"put","x":1,"y":2}"#,
            "\n",
            r#"{"id":"a","ts":2000,"op":"delete"}"#,
            "\n",
            r#"{"id":"a","ts":3000,"op":"patch","y":3}"#,
            "\n",
        ),
    );
    assert!(
        e.table("s", &["--as-of", "2000"]).is_empty(),
        "deleted as of 2000"
    );
    let rows = e.table("s", &[]);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["y"], json!(3));
    assert!(
        rows[0].get("x").is_none(),
        "patch after delete kept a field of the deleted row: {}",
        rows[0]
    );
}

#[test]
fn table_patch_on_absent_row_creates_row() {
    let e = Env::new();
    e.import("s", "{\"id\":\"a\",\"ts\":1000,\"op\":\"patch\",\"y\":3}\n");
    let rows = e.table("s", &[]);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["y"], json!(3));
    assert_eq!(rows[0]["id"], json!("a"));
}

#[test]
fn table_delete_then_put() {
    let e = Env::new();
    e.import(
        "s",
        concat!(
            r#"{"id":"a","ts":1000,"op":"put","x":1}"#,
            "\n",
            r#"{"id":"a","ts":2000,"op":"delete"}"#,
            "\n",
            r#"{"id":"a","ts":3000,"op":"put","z":9}"#,
            "\n",
        ),
    );
    assert_eq!(
        col(&e.table("s", &["--as-of", "1000"]), "x"),
        vec![json!(1)]
    );
    assert!(e.table("s", &["--as-of", "2999"]).is_empty());
    let rows = e.table("s", &[]);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0], json!({"id":"a","ts":3000,"op":"put","z":9}));
}

#[test]
fn table_output_sorted_by_key() {
    let e = Env::new();
    let mut input = String::new();
    for k in ["pear", "apple", "b", "10", "2", "Zed", "apricot"] {
        input.push_str(&format!("{{\"id\":\"{k}\",\"ts\":1000}}\n"));
    }
    e.import("s", &input);
    let keys = col(&e.table("s", &[]), "id");
    assert_eq!(
        keys,
        vec![
            json!("10"),
            json!("2"),
            json!("Zed"),
            json!("apple"),
            json!("apricot"),
            json!("b"),
            json!("pear")
        ]
    );
}

#[test]
fn table_formats_jsonl_csv_table() {
    let e = Env::new();
    e.import(
        "s",
        concat!(
            r#"{"id":"b","ts":"2024-01-01","price":2.5,"name":"bee"}"#,
            "\n",
            r#"{"id":"a","ts":"2024-01-01","price":1.5,"name":"ay"}"#,
            "\n",
        ),
    );
    let jsonl = e.table("s", &["--format", "jsonl"]);
    assert_eq!(jsonl, e.table("s", &[]), "jsonl is the default");
    assert_eq!(
        jsonl[0],
        json!({"id":"a","ts":"2024-01-01","price":1.5,"name":"ay"})
    );

    let csv_out = e
        .cmd("table", &["--stream", "s", "--format", "csv"])
        .ok()
        .stdout;
    let mut rdr = csv::Reader::from_reader(csv_out.as_bytes());
    let header: Vec<String> = rdr
        .headers()
        .expect("CSV header")
        .iter()
        .map(str::to_string)
        .collect();
    for h in ["id", "ts", "price", "name"] {
        assert!(
            header.contains(&h.to_string()),
            "CSV header {header:?} lacks {h}"
        );
    }
    let recs: Vec<csv::StringRecord> = rdr.records().collect::<Result<_, _>>().expect("CSV rows");
    assert_eq!(recs.len(), 2, "{csv_out}");
    let idx = |h: &str| header.iter().position(|x| x == h).unwrap();
    assert_eq!((&recs[0][idx("id")], &recs[0][idx("name")]), ("a", "ay"));
    assert_eq!(recs[0][idx("price")].parse::<f64>().ok(), Some(1.5));
    assert_eq!((&recs[1][idx("id")], &recs[1][idx("name")]), ("b", "bee"));

    let text = e
        .cmd("table", &["--stream", "s", "--format", "table"])
        .ok()
        .stdout;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "table output: {text}");
    for h in ["id", "price", "name"] {
        assert!(
            lines[0].contains(h),
            "table header {:?} lacks {h}",
            lines[0]
        );
    }
    let a = lines
        .iter()
        .position(|l| l.contains("ay") && l.contains("1.5"))
        .expect("row a in table output");
    let b = lines
        .iter()
        .position(|l| l.contains("bee") && l.contains("2.5"))
        .expect("row b in table output");
    assert!(a < b, "table output not sorted by key: {text}");
}

// ---------------------------------------------------------------------------
// get
// ---------------------------------------------------------------------------

#[test]
fn get_present_row_prints_stored_object_with_patches() {
    let e = Env::new();
    e.import(
        "s",
        concat!(
            r#"{"id":"a","ts":1000,"op":"put","price":1,"qty":10}"#,
            "\n",
            r#"{"id":"a","ts":2000,"op":"patch","qty":7}"#,
            "\n",
        ),
    );
    let r = e.cmd("get", &["--stream", "s", "--key", "a"]).ok();
    let rows = r.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0],
        json!({"id":"a","ts":2000,"op":"patch","price":1,"qty":7})
    );
    assert_eq!(
        e.get("s", "a", &["--as-of", "1999"]),
        Some(json!({"id":"a","ts":1000,"op":"put","price":1,"qty":10}))
    );
}

#[test]
fn get_never_seen_prints_nothing_and_exits_1() {
    let e = Env::new();
    e.import("s", "{\"id\":\"a\",\"ts\":\"2024-01-02\",\"v\":1}\n");
    for args in [
        vec!["--stream", "s", "--key", "zzz"],
        vec!["--stream", "s", "--key", "a", "--as-of", "2024-01-01"],
    ] {
        let r = e.cmd("get", &args);
        assert_eq!(r.code, Some(1), "get {args:?}: {r:?}");
        assert!(r.stdout.is_empty(), "get {args:?} printed {:?}", r.stdout);
        let msg = r.stderr.to_lowercase();
        assert!(
            !msg.trim().is_empty(),
            "get {args:?} says nothing on stderr"
        );
        assert!(
            !msg.contains("deleted"),
            "never-seen key reported as deleted: {msg:?}"
        );
        assert!(
            ["absent", "never", "not found", "no record", "unknown key"]
                .iter()
                .any(|w| msg.contains(w)),
            "stderr does not say the key is absent: {msg:?}"
        );
    }
}

#[test]
fn get_deleted_prints_nothing_and_exits_1() {
    let e = Env::new();
    e.import(
        "s",
        concat!(
            r#"{"id":"a","ts":"2024-01-01","op":"put","v":1}"#,
            "\n",
            r#"{"id":"a","ts":"2024-01-03","op":"delete"}"#,
            "\n",
        ),
    );
    let r = e.cmd("get", &["--stream", "s", "--key", "a"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stdout.is_empty());
    assert!(
        r.stderr.to_lowercase().contains("deleted"),
        "stderr does not say deleted: {:?}",
        r.stderr
    );
    assert!(
        r.stderr.contains("2024-01-03"),
        "stderr does not say when it was deleted: {:?}",
        r.stderr
    );
    // Before the delete the row is present.
    assert_eq!(
        e.get("s", "a", &["--as-of", "2024-01-02"])
            .expect("row before delete")["v"],
        json!(1)
    );
}

// ---------------------------------------------------------------------------
// history and changes
// ---------------------------------------------------------------------------

#[test]
fn history_lists_versions_in_event_time_order() {
    let e = Env::new();
    e.import(
        "s",
        concat!(
            r#"{"id":"a","ts":"2024-01-02T00:00:00Z","op":"put","v":2,"w":0}"#,
            "\n",
            r#"{"id":"b","ts":"2024-01-01T00:00:00Z","op":"put","v":99}"#,
            "\n",
            r#"{"id":"a","ts":"2024-01-03T00:00:00Z","op":"patch","v":3}"#,
            "\n",
        ),
    );
    // Late events: an older put, and a delete at the latest time.
    e.import(
        "s",
        concat!(
            r#"{"id":"a","ts":"2024-01-01T00:00:00.5Z","op":"put","v":1}"#,
            "\n",
            r#"{"id":"a","ts":"2024-01-04T00:00:00Z","op":"delete"}"#,
            "\n",
        ),
    );
    let h = e.history("s", "a");
    assert_eq!(h.len(), 4, "{h:?}");
    assert_eq!(
        col(&h, "_position"),
        vec![json!(3), json!(0), json!(2), json!(4)]
    );
    assert_eq!(
        col(&h, "_op"),
        vec![json!("put"), json!("put"), json!("patch"), json!("delete")]
    );
    let times: Vec<String> = h.iter().map(|r| norm_time(&r["_event_time"])).collect();
    assert_eq!(
        times,
        vec![
            "2024-01-01T00:00:00.5Z",
            "2024-01-02T00:00:00Z",
            "2024-01-03T00:00:00Z",
            "2024-01-04T00:00:00Z"
        ]
    );
    assert_eq!(h[0]["v"], json!(1));
    assert_eq!(
        (h[2]["v"].clone(), h[2]["w"].clone()),
        (json!(3), json!(0)),
        "history prints the row after the patch"
    );
}

#[test]
fn changes_reports_insert_update_delete_between_from_and_to() {
    let e = Env::new();
    e.import(
        "s",
        concat!(
            r#"{"id":"upd","ts":"2024-01-01T00:00:00Z","op":"put","v":1}"#,
            "\n",
            r#"{"id":"del","ts":"2024-01-01T00:00:00Z","op":"put","v":1}"#,
            "\n",
            r#"{"id":"same","ts":"2024-01-01T00:00:00Z","op":"put","v":1}"#,
            "\n",
            r#"{"id":"upd","ts":"2024-01-02T12:00:00Z","op":"patch","v":2}"#,
            "\n",
            r#"{"id":"ins","ts":"2024-01-02T12:00:00Z","op":"put","v":5}"#,
            "\n",
            r#"{"id":"del","ts":"2024-01-02T12:00:00Z","op":"delete"}"#,
            "\n",
            r#"{"id":"later","ts":"2024-01-04T00:00:00Z","op":"put","v":7}"#,
            "\n",
        ),
    );
    let rows = e
        .cmd(
            "changes",
            &[
                "--stream",
                "s",
                "--from",
                "2024-01-02",
                "--to",
                "2024-01-03",
            ],
        )
        .ok()
        .rows();
    let by_id = |id: &str| rows.iter().find(|r| r["id"] == json!(id)).cloned();
    let upd = by_id("upd").expect("update of upd");
    assert_eq!(upd["_change"], json!("update"));
    assert_eq!(upd["v"], json!(2));
    assert_eq!(upd["_op"], json!("patch"));
    assert_eq!(upd["_position"], json!(3));
    assert_eq!(norm_time(&upd["_event_time"]), "2024-01-02T12:00:00Z");
    let ins = by_id("ins").expect("insert of ins");
    assert_eq!(ins["_change"], json!("insert"));
    assert_eq!(ins["_op"], json!("put"));
    let del = by_id("del").expect("delete of del");
    assert_eq!(del["_change"], json!("delete"));
    assert_eq!(del["_op"], json!("delete"));
    assert_eq!(del["_position"], json!(5));
    assert!(by_id("same").is_none(), "unchanged row reported: {rows:?}");
    assert!(
        by_id("later").is_none(),
        "change after --to reported: {rows:?}"
    );
    assert_eq!(rows.len(), 3, "{rows:?}");
}

// ---------------------------------------------------------------------------
// join
// ---------------------------------------------------------------------------

fn weather(e: &Env) {
    e.import(
        "weather",
        concat!(
            r#"{"id":"paris","ts":"2024-01-01T10:00:00Z","temp":5}"#,
            "\n",
            r#"{"id":"paris","ts":"2024-01-01T12:00:00Z","temp":7}"#,
            "\n",
            r#"{"id":"rome","ts":"2024-01-01T08:00:00Z","temp":12}"#,
            "\n",
            r#"{"id":"oslo","ts":"2024-01-01T08:00:00Z","temp":-3}"#,
            "\n",
            r#"{"id":"oslo","ts":"2024-01-01T09:00:00Z","op":"delete"}"#,
            "\n",
        ),
    );
}

fn has_prefix(row: &Value, prefix: &str) -> bool {
    row.as_object()
        .unwrap()
        .keys()
        .any(|k| k.starts_with(prefix))
}

#[test]
fn join_extends_requests_in_request_order() {
    let e = Env::new();
    weather(&e);
    let req = e.file(
        "jsonl",
        concat!(
            r#"{"rid":1,"city":"paris","at":"2024-01-01T12:30:00Z"}"#,
            "\n",
            r#"{"rid":2,"city":"paris","at":"2024-01-01T11:00:00Z"}"#,
            "\n",
            r#"{"rid":3,"city":"paris","at":"2024-01-01T09:00:00Z"}"#,
            "\n",
            r#"{"rid":4,"city":"lima","at":"2024-01-01T12:00:00Z"}"#,
            "\n",
            r#"{"rid":5,"city":"paris","at":"2024-01-01T12:00:00Z"}"#,
            "\n",
            r#"{"rid":6,"city":"rome","at":"2024-01-01T09:00:00Z"}"#,
            "\n",
            r#"{"rid":7,"city":"oslo","at":"2024-01-01T10:00:00Z"}"#,
            "\n",
        ),
    );
    let rows = e
        .cmd(
            "join",
            &[
                "--requests",
                &req,
                "--key",
                "city",
                "--time",
                "at",
                "--feature",
                "weather",
            ],
        )
        .ok()
        .rows();
    assert_eq!(
        col(&rows, "rid"),
        (1..=7).map(|i| json!(i)).collect::<Vec<_>>(),
        "request order"
    );
    assert_eq!(rows[0]["city"], json!("paris"));
    assert_eq!(rows[0]["at"], json!("2024-01-01T12:30:00Z"));
    assert_eq!(rows[0]["weather.temp"], json!(7));
    assert_eq!(rows[0]["weather.id"], json!("paris"));
    assert_eq!(
        norm_time(&rows[0]["weather._event_time"]),
        "2024-01-01T12:00:00Z"
    );
    assert_eq!(rows[1]["weather.temp"], json!(5));
    assert_eq!(
        norm_time(&rows[1]["weather._event_time"]),
        "2024-01-01T10:00:00Z"
    );
    assert!(
        !has_prefix(&rows[2], "weather."),
        "row before any event must be missing: {}",
        rows[2]
    );
    assert_eq!(
        rows[2],
        json!({"rid":3,"city":"paris","at":"2024-01-01T09:00:00Z"})
    );
    assert!(
        !has_prefix(&rows[3], "weather."),
        "unknown key must be missing: {}",
        rows[3]
    );
    assert_eq!(
        rows[4]["weather.temp"],
        json!(7),
        "event exactly at the request time is visible"
    );
    assert_eq!(rows[5]["weather.temp"], json!(12));
    assert!(
        !has_prefix(&rows[6], "weather."),
        "deleted row must be missing: {}",
        rows[6]
    );
}

#[test]
fn join_ttl_makes_old_rows_missing() {
    let e = Env::new();
    weather(&e);
    let req = e.file(
        "jsonl",
        concat!(
            r#"{"rid":1,"city":"paris","at":"2024-01-01T10:30:00Z"}"#,
            "\n",
            r#"{"rid":2,"city":"paris","at":"2024-01-01T11:30:00Z"}"#,
            "\n",
            r#"{"rid":3,"city":"paris","at":"2024-01-01T12:10:00Z"}"#,
            "\n",
            r#"{"rid":4,"city":"rome","at":"2024-01-02T00:00:00Z"}"#,
            "\n",
        ),
    );
    let rows = e
        .cmd(
            "join",
            &[
                "--requests",
                &req,
                "--key",
                "city",
                "--time",
                "at",
                "--feature",
                "weather",
                "--ttl",
                "1h",
            ],
        )
        .ok()
        .rows();
    assert_eq!(
        col(&rows, "rid"),
        vec![json!(1), json!(2), json!(3), json!(4)]
    );
    assert_eq!(
        rows[0]["weather.temp"],
        json!(5),
        "30 min old row within a 1h TTL"
    );
    assert!(
        !has_prefix(&rows[1], "weather."),
        "90 min old row beyond a 1h TTL must be missing: {}",
        rows[1]
    );
    assert_eq!(rows[2]["weather.temp"], json!(7));
    assert!(
        !has_prefix(&rows[3], "weather."),
        "16h old row must be missing: {}",
        rows[3]
    );
    // Without a TTL the old rows are found.
    let rows = e
        .cmd(
            "join",
            &[
                "--requests",
                &req,
                "--key",
                "city",
                "--time",
                "at",
                "--feature",
                "weather",
            ],
        )
        .ok()
        .rows();
    assert_eq!(rows[1]["weather.temp"], json!(5));
    assert_eq!(rows[3]["weather.temp"], json!(12));
}

#[test]
fn join_several_feature_streams() {
    let e = Env::new();
    weather(&e);
    e.import(
        "traffic",
        concat!(
            r#"{"id":"paris","ts":"2024-01-01T09:30:00Z","jam":0.8}"#,
            "\n",
            r#"{"id":"rome","ts":"2024-01-01T13:00:00Z","jam":0.1}"#,
            "\n",
        ),
    );
    let req = e.file(
        "jsonl",
        concat!(
            r#"{"rid":1,"city":"paris","at":"2024-01-01T11:00:00Z"}"#,
            "\n",
            r#"{"rid":2,"city":"rome","at":"2024-01-01T12:00:00Z"}"#,
            "\n",
        ),
    );
    let rows = e
        .cmd(
            "join",
            &[
                "--requests",
                &req,
                "--key",
                "city",
                "--time",
                "at",
                "--feature",
                "weather",
                "--feature",
                "traffic",
            ],
        )
        .ok()
        .rows();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["weather.temp"], json!(5));
    assert_eq!(rows[0]["traffic.jam"].as_f64(), Some(0.8));
    assert_eq!(
        norm_time(&rows[0]["traffic._event_time"]),
        "2024-01-01T09:30:00Z"
    );
    assert_eq!(
        norm_time(&rows[0]["weather._event_time"]),
        "2024-01-01T10:00:00Z"
    );
    assert_eq!(rows[1]["weather.temp"], json!(12));
    assert!(
        !has_prefix(&rows[1], "traffic."),
        "traffic row of rome is in the future: {}",
        rows[1]
    );
}

/// The exact bytes of joined lines: request fields first (compacted, numbers
/// as `serde_json` prints them), then each stream's row fields, then its
/// `_event_time`. A key that is already on the line keeps its place and takes
/// the new value: a request field, a row field named `_event_time`, or a key
/// that two streams make alike (`w` + `x.y` and `w.x` + `y`).
#[test]
fn join_lines_are_exact_and_repeated_keys_keep_their_place() {
    let e = Env::new();
    e.import(
        "w",
        concat!(
            r#"{"id":"x","ts":"2024-01-01T10:00:00Z","v":1,"_event_time":"mine","x.y":"from w"}"#,
            "\n"
        ),
    );
    e.import(
        "w.x",
        concat!(
            r#"{"id":"x","ts":"2024-01-01T09:00:00Z","y":"from w.x"}"#,
            "\n"
        ),
    );
    let req = e.file(
        "jsonl",
        concat!(
            r#"{"rid": 1, "city": "x", "at": "2024-01-01T11:00:00Z"}"#,
            "\n",
            r#"{"rid":2,"city":"x","at":"2024-01-01T11:00:00Z","w.v":"old"}"#,
            "\n",
            r#"{"rid":4.50,"city":"x","at":"2024-01-01T11:00:00Z","n":1e3,"s":"é\u0001\"/"}"#,
            "\n",
        ),
    );
    let join = |features: &[&str]| -> Vec<String> {
        let mut args = vec!["--requests", &req, "--key", "city", "--time", "at"];
        for f in features {
            args.extend(["--feature", f]);
        }
        e.cmd("join", &args)
            .ok()
            .stdout
            .lines()
            .map(str::to_string)
            .collect()
    };
    const WX: &str = r#""w.x.id":"x","w.x.ts":"2024-01-01T09:00:00Z","w.x.y":"from w.x","w.x._event_time":"2024-01-01T09:00:00Z""#;
    const W: &str = r#""w.id":"x","w.ts":"2024-01-01T10:00:00Z","w.v":1,"w._event_time":"2024-01-01T10:00:00Z""#;
    const REQ: &str = r#""city":"x","at":"2024-01-01T11:00:00Z""#;
    const ODD: &str = r#""n":1000.0,"s":"é\u0001\"/""#;
    // No key repeats: written straight from the parts.
    assert_eq!(
        join(&["w.x"]),
        [
            format!(r#"{{"rid":1,{REQ},{WX}}}"#),
            format!(r#"{{"rid":2,{REQ},"w.v":"old",{WX}}}"#),
            format!(r#"{{"rid":4.5,{REQ},{ODD},{WX}}}"#),
        ]
    );
    // `w`'s row has its own `_event_time`, which takes the event time in place.
    assert_eq!(
        join(&["w"]),
        [
            format!(r#"{{"rid":1,{REQ},{W},"w.x.y":"from w"}}"#),
            format!(
                r#"{{"rid":2,{REQ},"w.v":1,"w.id":"x","w.ts":"2024-01-01T10:00:00Z","w._event_time":"2024-01-01T10:00:00Z","w.x.y":"from w"}}"#
            ),
            format!(r#"{{"rid":4.5,{REQ},{ODD},{W},"w.x.y":"from w"}}"#),
        ]
    );
    // `w.x.y` from `w`, then from `w.x` in its place.
    assert_eq!(
        join(&["w", "w.x"])[0],
        format!(
            r#"{{"rid":1,{REQ},{W},"w.x.y":"from w.x","w.x.id":"x","w.x.ts":"2024-01-01T09:00:00Z","w.x._event_time":"2024-01-01T09:00:00Z"}}"#
        )
    );
    // The same stream twice: each key once.
    assert_eq!(join(&["w.x", "w.x"]), join(&["w.x"]));
}

// ---------------------------------------------------------------------------
// window
// ---------------------------------------------------------------------------

fn views(e: &Env) {
    e.import(
        "views",
        concat!(
            r#"{"id":"u1","ts":"2024-01-01T11:30:00Z","price":100}"#,
            "\n",
            r#"{"id":"u1","ts":"2024-01-01T11:30:00.001Z","price":10}"#,
            "\n",
            r#"{"id":"u1","ts":"2024-01-01T11:50:00Z","price":2}"#,
            "\n",
            r#"{"id":"u1","ts":"2024-01-01T12:00:00Z","price":3}"#,
            "\n",
            r#"{"id":"u1","ts":"2024-01-01T12:00:00.001Z","price":1000}"#,
            "\n",
            r#"{"id":"u2","ts":"2024-01-01T11:45:00Z","price":7}"#,
            "\n",
        ),
    );
}

fn window(e: &Env, agg: &str, win: &str, req: &str) -> Vec<Value> {
    e.cmd(
        "window",
        &[
            "--stream",
            "views",
            "--field",
            "price",
            "--agg",
            agg,
            "--window",
            win,
            "--requests",
            req,
            "--key",
            "user",
            "--time",
            "at",
        ],
    )
    .ok()
    .rows()
}

#[test]
fn window_field_named_agg_field_window_as_written() {
    let e = Env::new();
    views(&e);
    let req = e.file(
        "jsonl",
        "{\"user\":\"u1\",\"at\":\"2024-01-01T12:00:00Z\"}\n",
    );
    for (agg, win, name) in [
        ("avg", "30m", "avg_price_30m"),
        ("sum", "2h", "sum_price_2h"),
        ("count", "90s", "count_price_90s"),
        ("min", "1d", "min_price_1d"),
        ("max", "500ms", "max_price_500ms"),
    ] {
        let rows = window(&e, agg, win, &req);
        assert_eq!(rows.len(), 1);
        let obj = rows[0].as_object().unwrap();
        assert!(
            obj.contains_key(name),
            "--agg {agg} --window {win}: no field {name} in {}",
            rows[0]
        );
        assert_eq!(obj.len(), 3, "exactly one field is added: {}", rows[0]);
        assert_eq!(obj["user"], json!("u1"));
    }
}

/// Lines are the request's fields (compacted) then the aggregate; a request
/// that already has a field of that name keeps its place for the aggregate.
#[test]
fn window_lines_are_exact_and_a_field_of_the_same_name_keeps_its_place() {
    let e = Env::new();
    views(&e);
    let req = e.file(
        "jsonl",
        concat!(
            r#"{"user": "u2", "at": "2024-01-01T12:00:00Z", "n": 1e3}"#,
            "\n",
            r#"{"sum_price_30m":"old","user":"u2","at":"2024-01-01T12:00:00Z"}"#,
            "\n",
        ),
    );
    let out = e
        .cmd(
            "window",
            &[
                "--stream",
                "views",
                "--field",
                "price",
                "--agg",
                "sum",
                "--window",
                "30m",
                "--requests",
                &req,
                "--key",
                "user",
                "--time",
                "at",
            ],
        )
        .ok()
        .stdout;
    assert_eq!(
        out,
        concat!(
            r#"{"user":"u2","at":"2024-01-01T12:00:00Z","n":1000.0,"sum_price_30m":7.0}"#,
            "\n",
            r#"{"sum_price_30m":7.0,"user":"u2","at":"2024-01-01T12:00:00Z"}"#,
            "\n",
        )
    );
}

#[test]
fn window_is_half_open_on_the_left() {
    let e = Env::new();
    views(&e);
    // (11:30, 12:00]: 11:30 is out, 11:30.001, 11:50 and 12:00 are in, 12:00.001 is out.
    let req = e.file(
        "jsonl",
        "{\"user\":\"u1\",\"at\":\"2024-01-01T12:00:00Z\"}\n",
    );
    let get = |agg: &str| window(&e, agg, "30m", &req)[0][format!("{agg}_price_30m")].as_f64();
    assert_eq!(get("count"), Some(3.0));
    assert_eq!(get("sum"), Some(15.0));
    assert_eq!(get("avg"), Some(5.0));
    assert_eq!(get("min"), Some(2.0));
    assert_eq!(get("max"), Some(10.0));
}

#[test]
fn window_empty_prints_null_and_count_zero() {
    let e = Env::new();
    views(&e);
    let req = e.file(
        "jsonl",
        concat!(
            r#"{"user":"nobody","at":"2024-01-01T12:00:00Z"}"#,
            "\n",
            r#"{"user":"u1","at":"2024-01-01T11:00:00Z"}"#,
            "\n",
        ),
    );
    for agg in ["avg", "sum", "min", "max"] {
        let rows = window(&e, agg, "30m", &req);
        for r in &rows {
            let v = r
                .get(format!("{agg}_price_30m"))
                .unwrap_or_else(|| panic!("{agg}: field missing in {r}"));
            assert!(v.is_null(), "{agg} of an empty window must be null: {r}");
        }
    }
    for r in window(&e, "count", "30m", &req) {
        let v = &r["count_price_30m"];
        assert!(
            v.is_number() && v.as_f64() == Some(0.0),
            "count of an empty window must be 0: {r}"
        );
    }
}

#[test]
fn window_keeps_request_order() {
    let e = Env::new();
    views(&e);
    let req = e.file(
        "jsonl",
        concat!(
            r#"{"n":1,"user":"u1","at":"2024-01-01T12:00:00Z"}"#,
            "\n",
            r#"{"n":2,"user":"u2","at":"2024-01-01T12:00:00Z"}"#,
            "\n",
            r#"{"n":3,"user":"u1","at":"2024-01-01T11:55:00Z"}"#,
            "\n",
            r#"{"n":4,"user":"nobody","at":"2024-01-01T00:00:00Z"}"#,
            "\n",
            r#"{"n":5,"user":"u1","at":"2024-01-01T12:29:00Z"}"#,
            "\n",
        ),
    );
    let rows = window(&e, "sum", "30m", &req);
    assert_eq!(
        col(&rows, "n"),
        (1..=5).map(|i| json!(i)).collect::<Vec<_>>()
    );
    let sums: Vec<Option<f64>> = rows.iter().map(|r| r["sum_price_30m"].as_f64()).collect();
    // n=3: (11:25, 11:55] holds 100 + 10 + 2; n=5: (11:59, 12:29] holds 3 + 1000.
    assert_eq!(
        sums,
        vec![Some(15.0), Some(7.0), Some(112.0), None, Some(1003.0)]
    );
}

#[test]
fn window_count_counts_events_others_use_numeric_fields() {
    let e = Env::new();
    e.import(
        "views",
        concat!(
            r#"{"id":"u3","ts":"2024-01-01T11:40:00Z","price":4}"#,
            "\n",
            r#"{"id":"u3","ts":"2024-01-01T11:41:00Z","price":"n/a"}"#,
            "\n",
            r#"{"id":"u3","ts":"2024-01-01T11:42:00Z"}"#,
            "\n",
        ),
    );
    let req = e.file(
        "jsonl",
        "{\"user\":\"u3\",\"at\":\"2024-01-01T12:00:00Z\"}\n",
    );
    assert_eq!(
        window(&e, "count", "30m", &req)[0]["count_price_30m"].as_f64(),
        Some(3.0)
    );
    assert_eq!(
        window(&e, "avg", "30m", &req)[0]["avg_price_30m"].as_f64(),
        Some(4.0)
    );
}

#[test]
fn window_aggregates_events_not_row_versions() {
    let e = Env::new();
    e.import(
        "views",
        concat!(
            r#"{"id":"u4","ts":"2024-01-01T11:40:00Z","op":"put","price":1}"#,
            "\n",
            r#"{"id":"u4","ts":"2024-01-01T11:45:00Z","op":"patch","qty":5}"#,
            "\n",
        ),
    );
    let req = e.file(
        "jsonl",
        "{\"user\":\"u4\",\"at\":\"2024-01-01T12:00:00Z\"}\n",
    );
    // The patch event has no price: the sum is over events (1), not row versions (1 + 1).
    assert_eq!(
        window(&e, "sum", "30m", &req)[0]["sum_price_30m"].as_f64(),
        Some(1.0)
    );
    assert_eq!(
        window(&e, "count", "30m", &req)[0]["count_price_30m"].as_f64(),
        Some(2.0)
    );
}

// ---------------------------------------------------------------------------
// init, stats, verify, help, demo
// ---------------------------------------------------------------------------

#[test]
fn init_settings_are_stored_and_shown_by_stats() {
    let e = Env::new();
    e.cmd(
        "init",
        &[
            "--segment-size",
            "4MiB",
            "--compression",
            "zstd:3",
            "--durability",
            "sync",
        ],
    )
    .ok();
    assert!(
        e.db.join("tablelog.meta").exists() || e.db.is_dir(),
        "init created nothing"
    );
    let check = |out: &str| {
        assert!(
            out.contains("4194304") || out.contains("4MiB") || out.contains("4 MiB"),
            "stats lacks the segment size: {out}"
        );
        assert!(
            out.contains("zstd:3") || (out.contains("zstd") && out.contains("level 3")),
            "stats lacks zstd:3: {out}"
        );
        assert!(out.contains("sync"), "stats lacks the durability: {out}");
    };
    check(&e.cmd("stats", &[]).ok().stdout);
    // Import into the initialised database keeps its settings.
    e.import("s", "{\"id\":\"a\",\"ts\":1000}\n");
    check(&e.cmd("stats", &[]).ok().stdout);

    let e = Env::new();
    e.cmd(
        "init",
        &[
            "--compression",
            "none",
            "--durability",
            "periodic:500ms",
            "--segment-size",
            "1GiB",
        ],
    )
    .ok();
    let out = e.cmd("stats", &[]).ok().stdout;
    assert!(
        out.contains("periodic"),
        "stats lacks periodic durability: {out}"
    );
    assert!(
        out.contains("500ms") || out.contains("0.5s") || out.contains("500 ms"),
        "stats lacks the period: {out}"
    );
    assert!(
        out.contains("1073741824") || out.contains("1GiB") || out.contains("1 GiB"),
        "stats lacks the segment size: {out}"
    );
    assert!(out.contains("none"), "stats lacks compression none: {out}");
}

/// A database whose first segment is sealed (segment size 4 KiB, a few hundred records).
fn sealed_db(e: &Env) -> PathBuf {
    e.cmd("init", &["--segment-size", "4096"]).ok();
    for part in 0..3 {
        let mut input = String::new();
        for i in 0..100 {
            let n = part * 100 + i;
            input.push_str(&format!(
                "{{\"id\":\"k{}\",\"ts\":{},\"v\":{n},\"pad\":\"{}\"}}\n",
                n % 17,
                1_000 * n,
                "x".repeat(40)
            ));
        }
        e.import("s", &input);
    }
    let mut segs: Vec<PathBuf> = std::fs::read_dir(&e.db)
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.len() == 24
                && name.ends_with(".seg")
                && name[..20].bytes().all(|b| b.is_ascii_digit())
        })
        .collect();
    segs.sort();
    assert!(
        segs.len() >= 2,
        "no sealed segment after importing 300 records with 4 KiB segments: {segs:?}"
    );
    segs.remove(0)
}

#[test]
fn verify_healthy_database_exits_0() {
    let e = Env::new();
    sealed_db(&e);
    e.cmd("verify", &[]).ok();
}

#[test]
fn verify_detects_a_flipped_byte_in_a_sealed_segment() {
    let e = Env::new();
    let seg = sealed_db(&e);
    let mut bytes = std::fs::read(&seg).unwrap();
    assert!(
        bytes.len() > 1000,
        "sealed segment {} is only {} bytes",
        seg.display(),
        bytes.len()
    );
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&seg, &bytes).unwrap();
    let r = e.cmd("verify", &[]);
    assert!(
        !r.success() && r.code.is_some(),
        "verify exited {:?} on a damaged segment: {r:?}",
        r.code
    );
    let name = seg.file_name().unwrap().to_str().unwrap();
    assert!(
        r.stdout.contains(name) || r.stderr.contains(name),
        "verify does not name the damaged file {name}: {r:?}"
    );
}

#[test]
fn help_of_every_subcommand_exits_0_with_example() {
    let mut failures = Vec::new();
    for sub in [
        "init", "import", "table", "get", "history", "changes", "join", "window", "verify",
        "stats", "demo",
    ] {
        let r = tl([sub, "--help"]);
        if !r.success() || !r.stdout.contains("Example") {
            failures.push(format!(
                "{sub} --help: exit {:?}, Example in stdout: {}",
                r.code,
                r.stdout.contains("Example")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn help_of_checkpoint_and_bench_exits_0_with_example() {
    let mut failures = Vec::new();
    for sub in ["checkpoint", "bench"] {
        let r = tl([sub, "--help"]);
        if !r.success() || !r.stdout.contains("Example") {
            failures.push(format!(
                "{sub} --help: exit {:?}, Example in stdout: {}, stderr: {:?}",
                r.code,
                r.stdout.contains("Example"),
                r.stderr.lines().next().unwrap_or("")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn demo_prints_inventory_tables() {
    let r = tl(["demo"]).ok();
    for word in ["inventory", "apple", "banana", "cherry", "durian"] {
        assert!(
            r.stdout.contains(word),
            "demo output lacks {word}: {}",
            r.stdout
        );
    }
    assert!(
        r.stdout.contains("2024-01-01T12:00:00Z") && r.stdout.contains("2024-01-03T12:00:00Z"),
        "demo lacks the as-of tables"
    );
}

#[test]
fn compact_keeps_answers_at_or_after_the_horizon_and_refuses_earlier_ones() {
    let e = Env::new();
    tl(["init", e.db(), "--segment-size", "4KiB"]).ok();
    // Three days of prices, each import big enough to seal a segment.
    for day in 1..=3 {
        let mut jsonl = String::new();
        for k in ["a", "b", "c", "d"] {
            jsonl.push_str(&format!(
                r#"{{"id":"{k}","ts":"2024-01-0{day}T12:00:00Z","price":{day},"pad":"{}"}}"#,
                "x".repeat(1200)
            ));
            jsonl.push('\n');
        }
        e.import("prices", &jsonl);
    }
    let before = e.table("prices", &["--as-of", "2024-01-03"]);
    let before_day2 = e.table("prices", &["--as-of", "2024-01-02T12:00:00Z"]);
    let r = e
        .cmd("compact", &["--horizon", "2024-01-02T12:00:00Z"])
        .ok();
    assert!(r.stdout.contains("records dropped"), "{}", r.stdout);
    assert!(
        ints(&r.stdout).contains(&4),
        "the 4 day-1 prices go: {}",
        r.stdout
    );
    assert_eq!(e.table("prices", &["--as-of", "2024-01-03"]), before);
    assert_eq!(
        e.table("prices", &["--as-of", "2024-01-02T12:00:00Z"]),
        before_day2
    );
    let r = e
        .cmd(
            "table",
            &["--stream", "prices", "--as-of", "2024-01-01T13:00:00Z"],
        )
        .fails_with_one_line_error();
    assert!(r.stderr.contains("horizon"), "{}", r.stderr);
    tl(["verify", e.db()]).ok();
    let st = tl(["stats", e.db()]).ok();
    assert!(
        st.stdout.contains("horizon       2024-01-02T12:00:00Z"),
        "{}",
        st.stdout
    );
    assert!(
        st.stdout.contains("4 dropped by compaction"),
        "{}",
        st.stdout
    );
    // Retention with nothing to do, and arguments that make no sense.
    let r = e.cmd("compact", &["--max-size", "1GiB"]).ok();
    assert!(r.stdout.contains("nothing to do"), "{}", r.stdout);
    e.cmd("compact", &[]).fails_with_one_line_error();
    e.cmd("compact", &["--horizon", "2024-01-02", "--max-age", "1d"])
        .fails_with_one_line_error();
}

#[test]
fn a_database_open_for_writing_in_another_process_is_locked() {
    let e = Env::new();
    let db = tablelog::Db::open(&e.db).unwrap();
    let line = "{\"id\":\"a\",\"ts\":1}\n";
    let r = e.try_import("s", line, &[]).fails_with_one_line_error();
    assert!(r.stderr.contains("locked"), "{}", r.stderr);
    drop(db);
    e.import("s", line);
}
