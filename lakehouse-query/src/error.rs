//! Conversions between the workspace's [`Error`] and DataFusion's.
//!
//! Neither type belongs to this crate, so the conversions are functions: [`df_error`]
//! (and [`DfResultExt::map_df`] on a DataFusion result) maps a `DataFusionError` by its
//! variant and keeps it as the [`source`](std::error::Error::source); [`to_df`] wraps an
//! [`Error`] for DataFusion so that it comes back out unchanged.

use std::error::Error as StdError;

use arrow::error::ArrowError;
use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;
use datafusion::parquet::errors::ParquetError;
use lakehouse_core::{Error, ErrorKind, Result};

/// Maps DataFusion's error by its variant, looking through the layers that only wrap
/// another error (context, diagnostics, shared and collected errors, arrow's and
/// DataFusion's external errors).
///
/// An [`Error`] found inside (a table source's, or one of this crate's passed through
/// [`to_df`]) comes back unchanged; otherwise the result has the kind the variant
/// means, DataFusion's message, and `e` as its source.
pub(crate) fn df_error(e: DataFusionError) -> Error {
    match meaning(&e) {
        Meaning::Ours(ours) => ours,
        Meaning::Kind(kind, column) => {
            let mut out = Error::new(kind, e.strip_backtrace());
            if let Some(column) = column {
                out = out.with_column(column);
            }
            out.with_source(e)
        }
    }
}

/// Wraps an error for DataFusion, so that [`df_error`] gives it back unchanged.
pub(crate) fn to_df(e: Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// `.map_df()?` on DataFusion's results, where `?` cannot convert.
pub(crate) trait DfResultExt<T> {
    /// Maps the error with [`df_error`].
    fn map_df(self) -> Result<T>;
}

impl<T> DfResultExt<T> for std::result::Result<T, DataFusionError> {
    fn map_df(self) -> Result<T> {
        self.map_err(df_error)
    }
}

/// What a DataFusion error means here.
enum Meaning {
    /// A lakehouse error that passed through DataFusion.
    Ours(Error),
    /// A failure of this kind, naming this column.
    Kind(ErrorKind, Option<String>),
}

fn meaning(e: &DataFusionError) -> Meaning {
    use DataFusionError as D;
    let kind = match e {
        D::Context(_, inner) | D::Diagnostic(_, inner) => return meaning(inner),
        D::Shared(inner) => return meaning(inner),
        D::Collection(errors) => match errors.first() {
            Some(first) => return meaning(first),
            None => ErrorKind::Internal,
        },
        D::External(inner) => return external_meaning(inner.as_ref()),
        D::ArrowError(inner, _) => return arrow_meaning(inner),
        D::ParquetError(inner) => match inner.as_ref() {
            ParquetError::External(inner) => return external_meaning(inner.as_ref()),
            _ => ErrorKind::Corrupt,
        },
        D::SchemaError(schema, _) => match schema.as_ref() {
            SchemaError::FieldNotFound { field, .. } => {
                return Meaning::Kind(ErrorKind::ColumnNotFound, Some(field.name.clone()));
            }
            _ => ErrorKind::InvalidSql,
        },
        // A missing table is found before planning (see `plan::plan_sql`).
        D::SQL(..) | D::Plan(_) => ErrorKind::InvalidSql,
        D::NotImplemented(_) => ErrorKind::Unsupported,
        D::ResourcesExhausted(_) => ErrorKind::ResourcesExhausted,
        D::IoError(_) | D::ObjectStore(_) => ErrorKind::Io,
        D::Configuration(_) => ErrorKind::InvalidInput,
        // DataFusion's execution errors are malformed input: bad arguments to a function,
        // a broken file. Typed causes (arrow's, a source's) arrive in other variants.
        D::Execution(_) => ErrorKind::InvalidInput,
        D::Internal(_) | D::ExecutionJoin(_) => ErrorKind::Internal,
        _ => ErrorKind::External,
    };
    Meaning::Kind(kind, None)
}

fn external_meaning(e: &(dyn StdError + Send + Sync + 'static)) -> Meaning {
    if let Some(ours) = e.downcast_ref::<Error>() {
        Meaning::Ours(ours.clone())
    } else if let Some(df) = e.downcast_ref::<DataFusionError>() {
        meaning(df)
    } else if let Some(arrow) = e.downcast_ref::<ArrowError>() {
        arrow_meaning(arrow)
    } else if e.is::<std::io::Error>() {
        Meaning::Kind(ErrorKind::Io, None)
    } else {
        Meaning::Kind(ErrorKind::External, None)
    }
}

fn arrow_meaning(e: &ArrowError) -> Meaning {
    match e {
        ArrowError::ExternalError(inner) => external_meaning(inner.as_ref()),
        other => Meaning::Kind(ErrorKind::of_arrow(other), None),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::common::Column;

    use super::*;

    #[test]
    fn round_trips_through_datafusion() {
        let ours = Error::new(ErrorKind::Full, "full").with_key("etl");
        let back = df_error(DataFusionError::Context(
            "ctx".into(),
            Box::new(to_df(ours)),
        ));
        assert_eq!(back.kind(), ErrorKind::Full);
        assert_eq!(back.message(), "full");
        assert_eq!(back.context().key.as_deref(), Some("etl"));
        // Through arrow's external error inside a shared error, as a stream passes it on.
        let source = Error::new(ErrorKind::Io, "disk full").with_table("events");
        let arrow = ArrowError::ExternalError(Box::new(to_df(source)));
        let shared = Arc::new(DataFusionError::ArrowError(Box::new(arrow), None));
        let back = df_error(DataFusionError::Shared(shared.clone()));
        assert_eq!(back.kind(), ErrorKind::Io);
        assert_eq!(back.context().table.as_deref(), Some("events"));
        assert_eq!(back.to_string(), "i/o error: disk full (table=events)");
    }

    #[test]
    fn maps_by_variant_and_keeps_the_source() {
        let e = df_error(DataFusionError::SchemaError(
            Box::new(SchemaError::FieldNotFound {
                field: Box::new(Column::from_name("colour")),
                valid_fields: Vec::new(),
            }),
            Box::new(None),
        ));
        assert_eq!(e.kind(), ErrorKind::ColumnNotFound);
        assert_eq!(e.context().column.as_deref(), Some("colour"));
        assert!(
            e.source()
                .is_some_and(|s| s.downcast_ref::<DataFusionError>().is_some())
        );
        let cases = [
            (DataFusionError::Plan("bad".into()), ErrorKind::InvalidSql),
            (
                DataFusionError::NotImplemented("no".into()),
                ErrorKind::Unsupported,
            ),
            (
                DataFusionError::Context(
                    "join".into(),
                    Box::new(DataFusionError::ResourcesExhausted("64 KiB".into())),
                ),
                ErrorKind::ResourcesExhausted,
            ),
            (
                DataFusionError::ArrowError(Box::new(ArrowError::DivideByZero), None),
                ErrorKind::InvalidInput,
            ),
            (
                DataFusionError::ArrowError(Box::new(ArrowError::CastError("x".into())), None),
                ErrorKind::TypeMismatch,
            ),
            (
                DataFusionError::External(Box::new(std::io::Error::other("gone"))),
                ErrorKind::Io,
            ),
            (
                DataFusionError::External("a plugin failed".into()),
                ErrorKind::External,
            ),
            (
                DataFusionError::Configuration("x".into()),
                ErrorKind::InvalidInput,
            ),
            (DataFusionError::Internal("bug".into()), ErrorKind::Internal),
        ];
        for (e, kind) in cases {
            let text = e.to_string();
            assert_eq!(df_error(e).kind(), kind, "{text}");
        }
    }
}
