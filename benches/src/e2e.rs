//! `lakehouse-bench e2e`.

use crate::report::{BenchResult, Report};

pub(crate) fn run(report: &mut Report) -> BenchResult {
    report.note("e2e: no figures yet; the end-to-end example issue adds them");
    Ok(())
}
