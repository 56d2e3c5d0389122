//! What a refresh reports: [`RefreshMode`], [`RefreshKind`], [`RefreshOutcome`] and
//! [`ViewInfo`], and the row a materialized view statement returns.

use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use lakehouse_core::{Error, Result};

/// How a materialized view can be refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefreshMode {
    /// From the rows added (and, for `SUM`, `COUNT` and `AVG` aggregates, removed) since
    /// the last refresh, when one table changed.
    Incremental,
    /// By running the whole query again.
    Full,
}

/// What one refresh did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefreshKind {
    /// No table the view reads changed; nothing was done.
    UpToDate,
    /// Only the added and removed rows were read.
    Incremental,
    /// The whole query ran again.
    Full,
}

impl RefreshKind {
    fn as_str(self) -> &'static str {
        match self {
            RefreshKind::UpToDate => "up to date",
            RefreshKind::Incremental => "incremental",
            RefreshKind::Full => "full",
        }
    }
}

impl fmt::Display for RefreshKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of refreshing a materialized view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshOutcome {
    pub(super) view: String,
    pub(super) kind: RefreshKind,
    pub(super) delta_rows: u64,
    pub(super) removed_rows: u64,
    pub(super) rows: u64,
    pub(super) reason: Option<String>,
    pub(super) generation: u64,
}

impl RefreshOutcome {
    /// The view's name.
    pub fn view(&self) -> &str {
        &self.view
    }

    /// Whether the refresh was incremental, full or not needed.
    pub fn kind(&self) -> RefreshKind {
        self.kind
    }

    /// Added rows (appended, or the new values of updated rows) read by an
    /// incremental refresh (0 otherwise).
    pub fn delta_rows(&self) -> u64 {
        self.delta_rows
    }

    /// Removed rows (deleted, or the old values of updated rows) an incremental refresh
    /// took back out of the view's state (0 otherwise).
    pub fn removed_rows(&self) -> u64 {
        self.removed_rows
    }

    /// Rows of the view after the refresh.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Why a refresh was full (`None` for incremental and up-to-date refreshes).
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// The generation of the view's contents after the refresh.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// How a materialized view is defined and refreshed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ViewInfo {
    /// The view's name.
    pub name: String,
    /// The defining query.
    pub sql: String,
    /// Whether appends to one table are applied incrementally.
    pub mode: RefreshMode,
    /// Why the view is always refreshed fully (`None` when it is incremental).
    pub full_reason: Option<String>,
    /// The last successful refresh.
    pub last_outcome: Option<RefreshOutcome>,
    /// The error of the last refresh, if it failed.
    pub last_error: Option<String>,
    /// Refreshes that did work (incremental or full).
    pub refreshes: u64,
}

/// The rows a materialized view statement returns: one row describing the refresh,
/// or none (for `DROP`).
pub(super) fn outcome_batch(outcome: Option<&RefreshOutcome>) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("view", DataType::Utf8, false),
        Field::new("refresh", DataType::Utf8, false),
        Field::new("delta_rows", DataType::UInt64, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("reason", DataType::Utf8, true),
    ]));
    let o: Vec<&RefreshOutcome> = outcome.into_iter().collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            o.iter().map(|o| o.view.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            o.iter().map(|o| o.kind.as_str()),
        )),
        Arc::new(UInt64Array::from_iter_values(
            o.iter().map(|o| o.delta_rows),
        )),
        Arc::new(UInt64Array::from_iter_values(o.iter().map(|o| o.rows))),
        Arc::new(StringArray::from_iter(
            o.iter().map(|o| o.reason.as_deref()),
        )),
    ];
    RecordBatch::try_new(schema, columns)
        .map_err(|e| Error::internal(format!("building a refresh report: {e}")).with_source(e))
}
