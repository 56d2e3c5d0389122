//! The live files of a snapshot: a persistent map in the order the files were added.
//!
//! Every commit and every refresh makes a new snapshot from the previous one. With a
//! plain map each of them copied every live file (a refresh that reads one commit of a
//! table with 100,000 files copied 100,000 entries, and writing a long log was
//! quadratic). The maps here share structure between versions: cloning is O(1) and each
//! added or removed file costs O(log n).

use std::sync::Arc;

use imbl::OrdMap;

use crate::log::FileEntry;

/// Live data files by path, iterated in the order of their (latest) `add`.
#[derive(Debug, Clone, Default)]
pub(crate) struct FileSet {
    /// Each live file with its place in `by_seq`.
    by_path: OrdMap<Arc<str>, (u64, Arc<FileEntry>)>,
    /// Live files by when they were added.
    by_seq: OrdMap<u64, Arc<FileEntry>>,
    /// The place the next added file takes.
    next: u64,
}

impl FileSet {
    /// The number of live files.
    pub(crate) fn len(&self) -> usize {
        self.by_path.len()
    }

    /// Whether a live file is at `path`.
    #[cfg(test)]
    pub(crate) fn contains(&self, path: &str) -> bool {
        self.by_path.contains_key(path)
    }

    /// Adds `entry` as the newest file; a live file at the same path is replaced and
    /// moves to the end of the order (a re-added path counts from its latest `add`).
    pub(crate) fn insert(&mut self, entry: Arc<FileEntry>) {
        let seq = self.next;
        self.next += 1;
        let path: Arc<str> = Arc::from(entry.add.path.as_str());
        if let Some((old, _)) = self.by_path.insert(path, (seq, entry.clone())) {
            self.by_seq.remove(&old);
        }
        self.by_seq.insert(seq, entry);
    }

    /// Removes the live file at `path`, if any.
    pub(crate) fn remove(&mut self, path: &str) -> Option<Arc<FileEntry>> {
        let (seq, entry) = self.by_path.remove(path)?;
        self.by_seq.remove(&seq);
        Some(entry)
    }

    /// The live files, oldest `add` first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<FileEntry>> + '_ {
        self.by_seq.values()
    }
}

impl FromIterator<Arc<FileEntry>> for FileSet {
    fn from_iter<I: IntoIterator<Item = Arc<FileEntry>>>(iter: I) -> FileSet {
        let mut set = FileSet::default();
        for e in iter {
            set.insert(e);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::log::{Add, ParsedStats};

    fn entry(path: &str, size: i64) -> Arc<FileEntry> {
        Arc::new(FileEntry::new(
            Add {
                path: path.to_owned(),
                partition_values: BTreeMap::new(),
                size,
                modification_time: 0,
                data_change: true,
                stats: None,
                deletion_vector: None,
            },
            ParsedStats::default(),
        ))
    }

    fn paths(s: &FileSet) -> Vec<(String, i64)> {
        s.iter().map(|e| (e.add.path.clone(), e.add.size)).collect()
    }

    #[test]
    fn re_added_paths_move_to_the_end_and_clones_are_independent() {
        let mut a: FileSet = [entry("x", 1), entry("y", 2), entry("z", 3)]
            .into_iter()
            .collect();
        let before = a.clone();
        a.insert(entry("x", 4));
        assert_eq!(a.remove("y").map(|e| e.add.size), Some(2));
        assert!(a.remove("y").is_none());
        assert_eq!(paths(&a), [("z".into(), 3), ("x".into(), 4)]);
        assert_eq!(a.len(), 2);
        assert!(a.contains("x") && !a.contains("y"));
        assert_eq!(
            paths(&before),
            [("x".into(), 1), ("y".into(), 2), ("z".into(), 3)]
        );
    }

    proptest! {
        /// Against a model: a vector of live (path, size) in add order.
        #[test]
        fn behaves_like_an_ordered_list(ops in proptest::collection::vec((any::<bool>(), 0u8..12), 0..200)) {
            let mut set = FileSet::default();
            let mut model: Vec<(String, i64)> = Vec::new();
            for (i, (add, p)) in ops.into_iter().enumerate() {
                let path = format!("f{p}");
                model.retain(|(q, _)| *q != path);
                if add {
                    set.insert(entry(&path, i as i64));
                    model.push((path, i as i64));
                } else {
                    set.remove(&path);
                }
                prop_assert_eq!(paths(&set), model.clone());
                prop_assert_eq!(set.len(), model.len());
            }
        }
    }
}
