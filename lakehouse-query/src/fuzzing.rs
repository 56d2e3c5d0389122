//! Entry points for fuzzing how SQL predicates become core predicates (feature
//! `fuzzing`, off by default; not a stable API).
//!
//! The engine receives filters as DataFusion expressions parsed from SQL text and
//! translates those it can into [`lakehouse_core::Predicate`]s for the sources
//! (`pushdown`). [`decode_predicate`] parses text as a SQL expression over the columns
//! of [`lakehouse_core::fuzzing::sample_batch`], translates it both ways the engine
//! does (exact and for pruning), and runs every operation of the result through
//! [`lakehouse_core::fuzzing::check_predicate`]; the outcome is discarded.

use std::sync::OnceLock;

use datafusion::common::DFSchema;
use datafusion::prelude::SessionContext;
use lakehouse_core::Predicate;
use lakehouse_core::fuzzing::{check_predicate, sample_batch};

use crate::pushdown::{has_not, scalar_to_df, to_predicate, to_pruning_predicate};

fn context() -> &'static (SessionContext, Option<DFSchema>) {
    static CTX: OnceLock<(SessionContext, Option<DFSchema>)> = OnceLock::new();
    CTX.get_or_init(|| {
        let schema = DFSchema::try_from(sample_batch().schema().as_ref().clone()).ok();
        (SessionContext::new(), schema)
    })
}

/// The literals of `p`, each translated back to a DataFusion value.
fn literals_back(p: &Predicate) {
    match p {
        Predicate::Compare { value, .. } => {
            let _ = scalar_to_df(value);
        }
        Predicate::Between { low, high, .. } => {
            let _ = scalar_to_df(low);
            let _ = scalar_to_df(high);
        }
        Predicate::InList { values, .. } => {
            for v in values {
                let _ = scalar_to_df(v);
            }
        }
        Predicate::And(parts) | Predicate::Or(parts) => parts.iter().for_each(literals_back),
        Predicate::Not(inner) => literals_back(inner),
        _ => {}
    }
}

/// Parses `bytes` (as text, lossily) as a SQL expression and runs its translations
/// into core predicates (see the module docs).
pub fn decode_predicate(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let (ctx, Some(schema)) = context() else {
        return;
    };
    let Ok(expr) = ctx.parse_sql_expr(&text, schema) else {
        return;
    };
    let arrow_schema = sample_batch().schema();
    for p in [
        to_predicate(&expr, &arrow_schema),
        to_pruning_predicate(&expr, &arrow_schema),
    ]
    .into_iter()
    .flatten()
    {
        let _ = has_not(&p);
        literals_back(&p);
        check_predicate(&p);
    }
}
