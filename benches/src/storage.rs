//! `lakehouse-bench storage`.

use crate::report::{BenchResult, Report};

pub(crate) fn run(report: &mut Report) -> BenchResult {
    report.note("storage: no figures yet; the lakehouse-storage issue adds them");
    Ok(())
}
