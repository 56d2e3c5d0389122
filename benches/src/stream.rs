//! `lakehouse-bench stream`.

use crate::report::{BenchResult, Report};

pub(crate) fn run(report: &mut Report) -> BenchResult {
    report.note("stream: no figures yet; the lakehouse-stream issue adds them");
    Ok(())
}
