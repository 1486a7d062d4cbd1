//! The query layer: tables as of any time, history, changes, as-of joins and
//! windows, all on a [`Snapshot`](crate::Snapshot) and all obeying the time
//! semantics of `DESIGN.md`.

pub mod access;
pub mod asof;
mod columnar;
pub mod field;
pub mod history;
pub mod join;
pub mod merge;
mod parallel;
pub mod window;
