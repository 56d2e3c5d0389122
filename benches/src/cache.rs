//! `lakehouse-bench cache`.

use crate::report::{BenchResult, Report};

pub(crate) fn run(report: &mut Report) -> BenchResult {
    report.note("cache: no figures yet; the lakehouse-cache issue adds them");
    Ok(())
}
