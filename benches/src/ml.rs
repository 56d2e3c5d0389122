//! `lakehouse-bench ml`.

use crate::report::{BenchResult, Report};

pub(crate) fn run(report: &mut Report) -> BenchResult {
    report.note("ml: no figures yet; the lakehouse-ml issue adds them");
    Ok(())
}
