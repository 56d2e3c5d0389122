//! This crate's plan codec for the wire between coordinator and workers: the parts of
//! a lakehouse file scan DataFusion's codec drops, and the refusal of nodes that must
//! not leave the coordinator.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::datasource::physical_plan::FileGroup;
use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use datafusion::physical_expr_adapter::PhysicalExprAdapterFactory;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use lakehouse_core::{Error, ErrorKind};
use serde::{Deserialize, Serialize};

use super::exec::{FileScanShipment, file_scan_of};
use super::worker::WorkerOptions;
use crate::error::to_df;
use crate::file_scan::{FileColumnMapping, MappedAdapterFactory};
use crate::scan::ScanExec;

/// Encodes [`FileScanShipment`]s; refuses [`ScanExec`] (a source's batch stream lives
/// in the coordinator's memory).
#[derive(Debug)]
pub(crate) struct LakehouseCodec {
    options: WorkerOptions,
}

impl LakehouseCodec {
    pub(crate) fn coordinator() -> Self {
        LakehouseCodec {
            options: WorkerOptions::new(),
        }
    }

    pub(crate) fn worker(options: WorkerOptions) -> Self {
        LakehouseCodec { options }
    }
}

/// The rows of a file kept, as runs of (skip, count).
type Runs = Vec<(bool, usize)>;

/// What crosses the wire with a file scan, beside DataFusion's own encoding of it.
#[derive(Debug, Serialize, Deserialize)]
struct Shipped {
    /// Format of this message.
    v: u32,
    /// Where the worker opens the store (`file:///dir`, `s3://bucket`).
    location: String,
    /// Logical to physical column names; empty without column mapping.
    mapping: Vec<(String, String)>,
    /// The scan's files in group order: path and the rows kept, as runs of
    /// (skip, count).
    files: Vec<(String, Option<Runs>)>,
}

const VERSION: u32 = 1;

fn refused(message: String) -> DataFusionError {
    to_df(Error::new(ErrorKind::Unsupported, message))
}

impl PhysicalExtensionCodec for LakehouseCodec {
    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        if node.is::<ScanExec>() {
            return Err(refused(format!(
                "a scan of a table that is not files runs on the coordinator only, \
                 it cannot be sent to a worker: {}",
                datafusion::physical_plan::displayable(node.as_ref()).one_line()
            )));
        }
        let Some(shipment) = node.downcast_ref::<FileScanShipment>() else {
            return Err(DataFusionError::NotImplemented(format!(
                "LakehouseCodec does not encode {}",
                node.name()
            )));
        };
        let Some(location) = &shipment.location else {
            return Err(refused(
                "a file scan of a store only the coordinator holds (an in-memory store) \
                 cannot be sent to a worker"
                    .into(),
            ));
        };
        let Some(scan) = file_scan_of(&shipment.input) else {
            return Err(DataFusionError::Internal(format!(
                "LakehouseFileScan over {} instead of a file scan",
                shipment.input.name()
            )));
        };
        let mapping: Vec<(String, String)> = scan
            .file_groups
            .iter()
            .flat_map(|g| g.iter())
            .find_map(|f| f.extension::<FileColumnMapping>())
            .map(|m| {
                let mut pairs: Vec<(String, String)> =
                    m.0.iter().map(|(l, p)| (l.clone(), p.clone())).collect();
                pairs.sort();
                pairs
            })
            .unwrap_or_default();
        let files = scan
            .file_groups
            .iter()
            .flat_map(|g| g.iter())
            .map(|f| {
                let selection = f.extension::<ParquetRowSelection>().map(|s| {
                    s.selection()
                        .iter()
                        .map(|r| (r.skip, r.row_count))
                        .collect::<Vec<_>>()
                });
                (f.object_meta.location.to_string(), selection)
            })
            .collect();
        let shipped = Shipped {
            v: VERSION,
            location: location.clone(),
            mapping,
            files,
        };
        serde_json::to_writer(buf, &shipped)
            .map_err(|e| DataFusionError::Internal(format!("encoding a file scan: {e}")))
    }

    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let shipped: Shipped = serde_json::from_slice(buf).map_err(|e| {
            DataFusionError::NotImplemented(format!("not a lakehouse file scan: {e}"))
        })?;
        if shipped.v != VERSION {
            return Err(refused(format!(
                "a file scan encoded in format {} (this worker reads {VERSION}): \
                 coordinator and workers run different versions",
                shipped.v
            )));
        }
        let [input] = inputs else {
            return Err(DataFusionError::Internal(
                "LakehouseFileScan takes exactly one child".into(),
            ));
        };
        let Some(scan) = file_scan_of(input) else {
            return Err(DataFusionError::Internal(format!(
                "LakehouseFileScan over {} instead of a file scan",
                input.name()
            )));
        };
        // The store, opened here from its location once per runtime.
        let runtime = ctx.runtime_env();
        if runtime.object_store(&scan.object_store_url).is_err() {
            let store = self.options.open(&shipped.location).map_err(to_df)?;
            runtime.register_object_store(scan.object_store_url.as_ref(), store);
        }

        let mut config = scan.clone();
        let mapping = (!shipped.mapping.is_empty()).then(|| {
            Arc::new(
                shipped
                    .mapping
                    .into_iter()
                    .collect::<HashMap<String, String>>(),
            )
        });
        if let Some(physical) = &mapping {
            config.expr_adapter_factory = Some(Arc::new(MappedAdapterFactory {
                physical: physical.clone(),
            })
                as Arc<dyn PhysicalExprAdapterFactory>);
        }
        let mut shipped_files = shipped.files.into_iter();
        let mut groups = Vec::with_capacity(config.file_groups.len());
        for group in &config.file_groups {
            let statistics = group.file_statistics(None).cloned();
            let mut files = Vec::with_capacity(group.len());
            for file in group.iter() {
                let Some((path, selection)) = shipped_files.next() else {
                    return Err(DataFusionError::Internal(
                        "a file scan arrived with fewer files than it was sent with".into(),
                    ));
                };
                if path != file.object_meta.location.as_ref() {
                    return Err(DataFusionError::Internal(format!(
                        "a file scan arrived with {} where {path} was sent",
                        file.object_meta.location
                    )));
                }
                let mut file = file.clone();
                if let Some(m) = &mapping {
                    file = file.with_extension(FileColumnMapping(m.clone()));
                }
                if let Some(runs) = selection {
                    let selectors: Vec<RowSelector> = runs
                        .into_iter()
                        .map(|(skip, n)| {
                            if skip {
                                RowSelector::skip(n)
                            } else {
                                RowSelector::select(n)
                            }
                        })
                        .collect();
                    file = file
                        .with_extension(ParquetRowSelection::new(RowSelection::from(selectors)));
                }
                files.push(file);
            }
            let mut rebuilt = FileGroup::new(files);
            if let Some(s) = statistics {
                rebuilt = rebuilt.with_statistics(Arc::new(s));
            }
            groups.push(rebuilt);
        }
        if shipped_files.next().is_some() {
            return Err(DataFusionError::Internal(
                "a file scan arrived with more files than it was sent with".into(),
            ));
        }
        config.file_groups = groups;
        let scan: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
        Ok(Arc::new(FileScanShipment::new(
            scan,
            Some(shipped.location),
        )))
    }
}
