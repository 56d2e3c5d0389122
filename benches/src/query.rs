//! `lakehouse-bench query`.

use crate::report::{BenchResult, Report};

pub(crate) fn run(report: &mut Report) -> BenchResult {
    report.note("query: no figures yet; the lakehouse-query issue adds them");
    Ok(())
}
