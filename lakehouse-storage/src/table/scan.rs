//! Planning a scan: projection, predicate validation and file pruning.

use std::sync::Arc;

use arrow::datatypes::Schema;
use lakehouse_core::{
    BatchStream, Error, ErrorKind, FileStats, Predicate, Result, ScanRequest, Version,
};

use super::impls::file_stats;
use super::{Table, live_files};
use crate::partition::PartitionSpec;
use crate::read::{file_view, scan_files};

impl Table {
    pub(super) async fn scan_inner(&self, request: ScanRequest) -> Result<BatchStream> {
        let snap = self.snapshot(request.version).await?;
        let schema = snap.schema.clone();
        let output = match &request.projection {
            None => schema.clone(),
            Some(cols) => {
                let fields = cols
                    .iter()
                    .map(|c| {
                        schema.field_with_name(c).cloned().map_err(|_| {
                            Error::new(
                                ErrorKind::ColumnNotFound,
                                format!("column {c} is not in the table"),
                            )
                            .with_column(c)
                            .with_table(self.uri())
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Arc::new(Schema::new(fields))
            }
        };
        if let Some(p) = &request.predicate {
            crate::nested::check_predicate(p, &schema).map_err(|e| e.with_table(self.uri()))?;
            p.validate(&schema).map_err(|e| e.with_table(self.uri()))?;
        }
        let spec = Self::spec_of(&snap)?;
        let prune = request.predicate.as_ref().map(|p| with_implied(&spec, p));
        let mut files = Vec::with_capacity(snap.files.len());
        for f in live_files(&snap) {
            if let Some(p) = &prune
                && !p.can_match(&file_view(f, &schema, &spec)?)
            {
                continue;
            }
            files.push(f.clone());
        }
        if request.limit == Some(0) {
            files.clear();
        }
        let ctx = self.scan_context(&snap, spec, output, request.predicate, 8192);
        Ok(scan_files(ctx, files, request.limit))
    }

    /// The files of a version after pruning by `predicate` (what a scan would read).
    pub async fn files(
        &self,
        version: Option<Version>,
        predicate: Option<&Predicate>,
    ) -> Result<Vec<FileStats>> {
        let snap = self.snapshot(version).await?;
        let spec = Self::spec_of(&snap)?;
        let p = predicate.map(|p| with_implied(&spec, p));
        let mut out = Vec::new();
        for f in live_files(&snap) {
            if let Some(p) = &p
                && !p.can_match(&file_view(f, &snap.schema, &spec)?)
            {
                continue;
            }
            out.push(file_stats(f, &snap.schema, &spec)?);
        }
        Ok(out)
    }
}

/// `predicate` and what it implies on the partition columns derived from the columns
/// it reads, for pruning by partition.
fn with_implied(spec: &PartitionSpec, predicate: &Predicate) -> Predicate {
    match spec.implied(predicate) {
        Some(extra) => predicate.clone().and(extra),
        None => predicate.clone(),
    }
}
