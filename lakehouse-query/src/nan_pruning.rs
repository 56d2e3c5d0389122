//! Parquet pruning that never drops a NaN row.
//!
//! Parquet writers leave NaN out of a float column's min / max statistics, while SQL
//! (and Arrow's comparison kernels) order NaN above every number: `NaN > 3` holds.
//! Row-group and page pruning on such statistics would skip a row group whose only
//! match is a NaN. This rule looks at a Parquet scan's final filter: the query's own
//! filters pushed into the scan, and the ones DataFusion adds after planning (the
//! dynamic filters of `max(x)`, of `ORDER BY x LIMIT k` and of hash joins on float
//! keys), which no table provider sees.
//!
//! It runs after DataFusion's own physical rules, so the scan's filter is final. A
//! scan whose filter reads no float column keeps every pruning step; filtering rows in
//! the decoder stays on either way.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::datasource::physical_plan::{FileScanConfig, FileSource, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;

/// Turns off statistics pruning in Parquet scans whose filter reads a float column.
#[derive(Debug, Default)]
pub(crate) struct NanSafePruning;

impl PhysicalOptimizerRule for NanSafePruning {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| match nan_safe(&node) {
            Some(safe) => Ok(Transformed::yes(safe)),
            None => Ok(Transformed::no(node)),
        })
        .data()
    }

    fn name(&self) -> &str {
        "lakehouse_nan_safe_pruning"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `node` rebuilt without statistics pruning, when it is a Parquet scan that prunes by
/// a filter reading a float column; `None` leaves it as it is.
fn nan_safe(node: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    let exec = node.downcast_ref::<DataSourceExec>()?;
    let (config, parquet) = exec.downcast_to_file_source::<ParquetSource>()?;
    let options = parquet.table_parquet_options();
    if !options.global.pruning && !options.global.enable_page_index {
        return None;
    }
    let filter = parquet.filter()?;
    let schema = config.file_schema();
    let reads_floats = collect_columns(&filter).iter().any(|c| {
        schema
            .field_with_name(c.name())
            .is_ok_and(|f| f.data_type().is_floating())
    });
    if !reads_floats {
        return None;
    }
    let mut options = options.clone();
    options.global.pruning = false;
    options.global.enable_page_index = false;
    let source = parquet.clone().with_table_parquet_options(options);
    let mut config: FileScanConfig = config.clone();
    config.file_source = Arc::new(source);
    Some(Arc::new(exec.clone().with_data_source(Arc::new(config))))
}
