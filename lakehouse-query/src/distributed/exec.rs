//! The marker over a lakehouse file scan in a distributed plan: [`FileScanShipment`].

use std::fmt;
use std::sync::Arc;

use datafusion::common::Statistics;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::statistics::ChildStats;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, StatisticsArgs,
};

use super::StoreLocations;

/// Sits over the `DataSourceExec` of a lakehouse file scan, whose plan DataFusion's
/// codec serializes without the parts this crate adds (row selections, the column
/// mapping) and without the store: this crate's codec encodes them with the node and
/// puts them back on the worker. Transparent otherwise: the scan's properties,
/// statistics and batches.
#[derive(Debug)]
pub(crate) struct FileScanShipment {
    pub(crate) input: Arc<dyn ExecutionPlan>,
    /// Where other processes open the scan's store; `None`: this process only.
    pub(crate) location: Option<String>,
}

impl FileScanShipment {
    pub(crate) fn new(input: Arc<dyn ExecutionPlan>, location: Option<String>) -> Self {
        FileScanShipment { input, location }
    }
}

impl DisplayAs for FileScanShipment {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(l) => write!(f, "LakehouseFileScan: store={l}"),
            None => write!(f, "LakehouseFileScan: store in this process only"),
        }
    }
}

impl ExecutionPlan for FileScanShipment {
    fn name(&self) -> &str {
        "LakehouseFileScan"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(FileScanShipment {
                input,
                location: self.location.clone(),
            })),
            _ => Err(DataFusionError::Internal(
                "LakehouseFileScan takes exactly one child".into(),
            )),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> DfResult<Arc<Statistics>> {
        input_stats
            .first()
            .cloned()
            .ok_or_else(|| DataFusionError::Internal("LakehouseFileScan has one child".into()))
    }

    #[allow(deprecated)]
    fn partition_statistics(&self, partition: Option<usize>) -> DfResult<Arc<Statistics>> {
        self.input.partition_statistics(partition)
    }
}

/// The lakehouse file scan under `plan`: a `DataSourceExec` over a `FileScanConfig`.
pub(crate) fn file_scan_of(plan: &Arc<dyn ExecutionPlan>) -> Option<&FileScanConfig> {
    plan.downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<FileScanConfig>()
}

/// Puts a [`FileScanShipment`] over every file scan of a lakehouse store in `plan`.
pub(crate) fn mark_file_scans(
    plan: Arc<dyn ExecutionPlan>,
    stores: &StoreLocations,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(scan) = file_scan_of(&node) else {
            return Ok(Transformed::no(node));
        };
        match stores.get(scan.object_store_url.as_str()) {
            Some(location) => Ok(Transformed::yes(
                Arc::new(FileScanShipment::new(node, location)) as Arc<dyn ExecutionPlan>,
            )),
            None => Ok(Transformed::no(node)),
        }
    })
    .map(|t| t.data)
}
