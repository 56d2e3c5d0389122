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
//!
//! Dynamic filters over float columns are taken out of the scan altogether (replaced
//! by `true`): DataFusion's Parquet opener prunes row groups by a dynamic filter at
//! run time whatever the scan's pruning options say, from the same NaN-blind
//! statistics. A dynamic filter only narrows what its producer (the aggregate, the
//! top-k, the join) already filters itself, so its rows stay right without it; the
//! producer then stops computing updates that nothing reads.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::{FileScanConfig, FileSource, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{DynamicFilterPhysicalExpr, lit};
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;

/// Turns off statistics pruning in Parquet scans whose filter reads a float column,
/// and takes their dynamic filters over float columns out.
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
    let filter = parquet.filter()?;
    let schema = config.file_schema();
    let reads_floats = |e: &Arc<dyn PhysicalExpr>| {
        collect_columns(e).iter().any(|c| {
            schema
                .field_with_name(c.name())
                .is_ok_and(|f| f.data_type().is_floating())
        })
    };
    if !reads_floats(&filter) {
        return None;
    }
    // Dynamic filters over floats out, the rest kept.
    let stripped = Arc::clone(&filter)
        .transform_down(|e| {
            if e.downcast_ref::<DynamicFilterPhysicalExpr>().is_some() && reads_floats(&e) {
                Ok(Transformed::new(lit(true), true, TreeNodeRecursion::Jump))
            } else {
                Ok(Transformed::no(e))
            }
        })
        .ok()?;
    let options = parquet.table_parquet_options();
    let prunes = options.global.pruning || options.global.enable_page_index;
    if !stripped.transformed && !prunes {
        return None;
    }
    let mut source = parquet.clone();
    if stripped.transformed {
        source = source.with_predicate(stripped.data);
    }
    if prunes {
        let mut options = options.clone();
        options.global.pruning = false;
        options.global.enable_page_index = false;
        source = source.with_table_parquet_options(options);
    }
    let mut config: FileScanConfig = config.clone();
    config.file_source = Arc::new(source);
    Some(Arc::new(exec.clone().with_data_source(Arc::new(config))))
}
