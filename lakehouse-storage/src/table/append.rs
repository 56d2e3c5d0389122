//! The append path: conforming batches, encoding them on rayon, uploading the files
//! and committing them (idempotently under a transaction id).

use arrow::array::RecordBatch;
use futures::{StreamExt, TryStreamExt, stream};
use lakehouse_core::{Error, ErrorKind, Result, TxnId, Version, conform_batch, on_rayon};
use object_store::{ObjectStoreExt, PutPayload};

use super::commit::certainly_not_committed;
use super::schema::extends;
use super::{Table, TableOptions, io, now_ms, user_schema_of};
use crate::conform::to_table_types;
use crate::log::{Action, Add, Snapshot, Txn, stats_to_json};
use crate::read::object_path;
use crate::write::{EncodedFile, encode};

/// What a commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitInfo {
    /// The new version.
    pub version: Version,
    /// Rows added.
    pub rows: u64,
    /// Files added.
    pub files: usize,
    /// Bytes added.
    pub bytes: u64,
    /// Times the commit lost a race to another writer and was retried.
    pub retries: u32,
}

impl Table {
    /// Appends `batches` as one commit.
    ///
    /// Columns may come in the types Arrow producers use for the table's types
    /// (`Utf8View` and `LargeUtf8` for strings, dictionaries, timestamps of any unit,
    /// unsigned integers whose values fit, ...): they are converted exactly first, by the
    /// rules listed in the crate docs under *Arrow types on append*.
    ///
    /// Errors with [`ErrorKind::SchemaMismatch`] (naming the columns) before anything
    /// is written when a batch does not fit the table, and [`ErrorKind::TypeMismatch`]
    /// (naming the column, row and value) when a value does not convert exactly.
    pub async fn append(&self, batches: Vec<RecordBatch>) -> Result<CommitInfo> {
        match self.append_inner(batches, Vec::new()).await? {
            (Some(info), _) => Ok(info),
            (None, _) => Err(Error::new(
                ErrorKind::Internal,
                "an append without a transaction id was a duplicate",
            )),
        }
    }

    /// Appends `batches` as one commit recording every writer of `txns` (none, one,
    /// or several with distinct app ids: see [`TableSink::append_writers`]). Returns
    /// the commit, or `None` with the first writer's last sequence when every writer
    /// held its sequence already.
    ///
    /// [`TableSink::append_writers`]: lakehouse_core::TableSink::append_writers
    pub(super) async fn append_inner(
        &self,
        batches: Vec<RecordBatch>,
        txns: Vec<TxnId>,
    ) -> Result<(Option<CommitInfo>, Option<u64>)> {
        lakehouse_core::check_writers(&txns, usize::MAX).map_err(|e| e.with_table(self.uri()))?;
        for t in &txns {
            if i64::try_from(t.sequence).is_err() {
                // Delta records the sequence as a signed long (`txn.version`): a larger
                // one would wrap negative and make every later append look like a
                // duplicate.
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "transaction sequence {} of writer {:?} is above {} (Delta's \
                         txn.version is a signed 64-bit integer)",
                        t.sequence,
                        t.app_id,
                        i64::MAX
                    ),
                )
                .with_table(self.uri()));
            }
        }
        let snap = self.refreshed().await?;
        let mut lasts = Vec::with_capacity(txns.len());
        for t in &txns {
            lasts.push(self.txn_version(&snap, &t.app_id).await?);
        }
        match held_by(&txns, &lasts) {
            Held::All(first) => return Ok((None, Some(first))),
            Held::Some => return Err(partly_held(self.uri())),
            Held::None => {}
        }
        let user = user_schema_of(&snap);
        let conformed = batches
            .iter()
            .map(|b| {
                to_table_types(&user, b)
                    .and_then(|b| conform_batch(&user, &b))
                    .map_err(|e| e.with_table(self.uri()))
            })
            .collect::<Result<Vec<_>>>()?;
        let rows: u64 = conformed.iter().map(|b| b.num_rows() as u64).sum();
        let spec = Self::spec_of(&snap)?;
        let opts = TableOptions::from_config(&snap.metadata.configuration);
        let cfg = opts.write_config();
        let table_schema = snap.schema.clone();
        let user2 = user.clone();
        let files =
            on_rayon(move || encode(&conformed, &user2, &table_schema, &spec, &cfg)).await?;
        let adds = self.upload(files, true).await?;
        let nfiles = adds.len();
        let bytes: u64 = adds.iter().map(|a| a.size as u64).sum();
        let written: Vec<String> = adds.iter().map(|a| a.path.clone()).collect();
        let schema_at_write = snap.schema.clone();
        let txns2 = txns.clone();
        let uri = self.uri().to_owned();
        let app_ids: Vec<String> = txns.iter().map(|t| t.app_id.clone()).collect();
        let result = self
            .commit_with_txn(
                "WRITE",
                serde_json::json!({"mode": "Append"}),
                &app_ids,
                move |latest: &Snapshot, lasts: &[Option<i64>]| {
                    match held_by(&txns2, lasts) {
                        Held::All(_) => return Ok(None),
                        Held::Some => return Err(partly_held(&uri)),
                        Held::None => {}
                    }
                    if !extends(&latest.schema, &schema_at_write) {
                        return Err(Error::new(
                            ErrorKind::Conflict,
                            "the table schema changed incompatibly while appending",
                        ));
                    }
                    let mut actions: Vec<Action> = adds.iter().cloned().map(Action::Add).collect();
                    let now = now_ms();
                    actions.extend(txns2.iter().map(|t| {
                        Action::Txn(Txn {
                            app_id: t.app_id.clone(),
                            version: t.sequence as i64,
                            last_updated: Some(now),
                        })
                    }));
                    Ok(Some(actions))
                },
            )
            .await;
        match result {
            Ok(Some((version, retries))) => Ok((
                Some(CommitInfo {
                    version,
                    rows,
                    files: nfiles,
                    bytes,
                    retries,
                }),
                None,
            )),
            Ok(None) => {
                self.delete_quietly(&written).await;
                let last = match txns.first() {
                    Some(t) => self.txn_version(&self.cached(), &t.app_id).await?,
                    None => None,
                }
                .unwrap_or_default();
                Ok((None, Some(last as u64)))
            }
            Err(e) => {
                if certainly_not_committed(&e) {
                    self.delete_quietly(&written).await;
                }
                Err(e)
            }
        }
    }

    pub(super) async fn delete_quietly(&self, rel_uris: &[String]) {
        for uri in rel_uris {
            if let Ok(p) = object_path(&self.inner.location.root, uri) {
                let _ = self.inner.location.store.delete(&p).await;
            }
        }
    }

    /// Uploads encoded files (several at a time) and returns their `add` actions.
    pub(super) async fn upload(
        &self,
        files: Vec<EncodedFile>,
        data_change: bool,
    ) -> Result<Vec<Add>> {
        let store = self.inner.location.store.clone();
        let location = self.inner.location.clone();
        stream::iter(files)
            .map(|f| {
                let store = store.clone();
                let location = location.clone();
                async move {
                    let path = location.child(&f.path)?;
                    let size = f.bytes.len() as i64;
                    store
                        .put(&path, PutPayload::from(f.bytes))
                        .await
                        .map_err(|e| io(e, &path))?;
                    Ok(Add {
                        path: crate::partition::uri_encode(&f.path),
                        partition_values: f.partition_values,
                        size,
                        modification_time: now_ms(),
                        data_change,
                        stats: Some(stats_to_json(f.rows, &f.stats)),
                        deletion_vector: None,
                    })
                }
            })
            .buffer_unordered(8)
            .try_collect()
            .await
    }
}

/// Which writers of a commit hold its sequence (or a later one) already.
enum Held {
    /// Every writer (at least one): the first one's last sequence.
    All(u64),
    /// Some but not all.
    Some,
    /// None of them.
    None,
}

/// [`Held`] for `txns`, whose writers' last sequences are `lasts`.
fn held_by(txns: &[TxnId], lasts: &[Option<i64>]) -> Held {
    let held: Vec<u64> = txns
        .iter()
        .zip(lasts)
        .filter_map(|(t, l)| l.filter(|&l| l >= t.sequence as i64).map(|l| l as u64))
        .collect();
    if held.is_empty() {
        Held::None
    } else if held.len() == txns.len() {
        Held::All(held[0])
    } else {
        Held::Some
    }
}

/// The error of a commit only some of whose writers hold their sequences.
fn partly_held(uri: &str) -> Error {
    Error::new(
        ErrorKind::Conflict,
        "some writers of the commit hold its sequence already, others do not: nothing was \
         written; resume each writer from its last sequence",
    )
    .with_table(uri)
}
