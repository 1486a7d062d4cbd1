//! # tablelog
//!
//! An embedded, append-only event log with a query layer that rebuilds tables as
//! of any time.
//!
//! Applications append events to named streams in atomic batches; every record
//! gets a gap-free **position** and a hybrid-logical-clock **recorded_at** stamp,
//! and carries the **event time** the writer gives it. Queries run on a
//! [`Snapshot`] as of an event time `T` and as known at a position `K`: visible
//! records have `event_time <= T` and `position <= K`, applied per key in
//! `(event_time, position)` order. Late events therefore correct answers for the
//! times they belong to, while `known_at` reproduces any past answer exactly.
//!
//! ```
//! use tablelog::{Batch, Db, JsonMergePatch};
//! use std::sync::Arc;
//! # let dir = tempfile::tempdir()?;
//! let db = Db::builder(dir.path())
//!     .default_merge_operator(Arc::new(JsonMergePatch))
//!     .open()?;
//! let mut batch = Batch::new();
//! batch.put_at("inventory", "apple", br#"{"price":1.0,"qty":5}"#, 1_000)?;
//! batch.patch_at("inventory", "apple", br#"{"qty":4}"#, 2_000)?;
//! db.writer().commit(batch)?;
//!
//! let snap = db.snapshot()?;
//! let rows: Vec<_> = snap.table("inventory", 1_500, None)?.collect::<Result<_, _>>()?;
//! assert_eq!(&rows[0].value[..], br#"{"price":1.0,"qty":5}"#);
//! let now = snap.get("inventory", b"apple", i64::MAX, None)?.row().unwrap();
//! assert_eq!(&now.value[..], br#"{"price":1.0,"qty":4}"#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Layers, bottom up: [`storage`] (segments, frames, indexes, the writer), the
//! [`Db`] handle, [`query`] (as-of tables, joins, windows), and the `tablelog` CLI.

#![deny(unsafe_code)]
#![warn(missing_docs)]
#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod checkpoint;
pub mod column;
pub mod db;
pub mod error;
mod hint;
pub mod ingest;
pub mod query;
pub mod replay;
pub mod rng;
pub mod storage;
pub mod views;
pub mod workload;

pub use checkpoint::CheckpointInfo;
pub use column::ColumnInfo;
pub use db::{Batch, Db, DbBuilder, Receipt, Snapshot, Txn, Writer};
pub use error::{Error, Result};
pub use query::access::AccessPath;
pub use query::asof::{GetResult, KnownAt, Row, RowRef, Table};
pub use query::history::{Change, ChangeKind, HistoryEntry};
pub use query::join::Request;
pub use query::merge::{JsonMergePatch, MergeOperator};
pub use query::window::Agg;
pub use storage::compact::{CompactReport, Retention};
pub use storage::horizon::Horizon;
pub use storage::log::RecoveryReport;
pub use storage::meta::{Compression, Durability, Settings};
pub use storage::record::{Clock, Hlc, Op, Record, SystemClock};
pub use views::{GroupBy, MaterializedView, ViewDef};
