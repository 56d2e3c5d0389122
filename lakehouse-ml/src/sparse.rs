//! Compressed sparse rows, and the user-item matrix held both ways.

use serde::{Deserialize, Serialize};

/// A sparse matrix in compressed sparse row form; column indices are sorted within a row.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Csr {
    cols: usize,
    indptr: Vec<usize>,
    indices: Vec<u32>,
    values: Vec<f32>,
}

impl Csr {
    /// Builds from `(row, column, value)` triples; duplicates are summed.
    pub(crate) fn from_triples(rows: usize, cols: usize, triples: &[(u32, u32, f32)]) -> Csr {
        let mut counts = vec![0usize; rows + 1];
        for &(r, _, _) in triples {
            counts[r as usize + 1] += 1;
        }
        for i in 0..rows {
            counts[i + 1] += counts[i];
        }
        let mut fill = counts.clone();
        let mut entries = vec![(0u32, 0f32); triples.len()];
        for &(r, c, v) in triples {
            let slot = &mut fill[r as usize];
            entries[*slot] = (c, v);
            *slot += 1;
        }
        let mut indptr = Vec::with_capacity(rows + 1);
        let mut indices = Vec::with_capacity(triples.len());
        let mut values = Vec::with_capacity(triples.len());
        indptr.push(0);
        for r in 0..rows {
            let row = &mut entries[counts[r]..counts[r + 1]];
            row.sort_unstable_by_key(|e| e.0);
            for &(c, v) in row.iter() {
                if indices.len() > *indptr.last().unwrap_or(&0) && indices.last() == Some(&c) {
                    if let Some(last) = values.last_mut() {
                        *last += v;
                    }
                } else {
                    indices.push(c);
                    values.push(v);
                }
            }
            indptr.push(indices.len());
        }
        Csr {
            cols,
            indptr,
            indices,
            values,
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.indptr.len().saturating_sub(1)
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of stored entries.
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// The column indices and values of `row` (empty when out of range).
    pub fn row(&self, row: usize) -> (&[u32], &[f32]) {
        match (self.indptr.get(row), self.indptr.get(row + 1)) {
            (Some(&a), Some(&b)) => (&self.indices[a..b], &self.values[a..b]),
            _ => (&[], &[]),
        }
    }

    /// The transpose (rows become columns).
    pub fn transpose(&self) -> Csr {
        let mut triples = Vec::with_capacity(self.nnz());
        for r in 0..self.rows() {
            let (cols, vals) = self.row(r);
            for (&c, &v) in cols.iter().zip(vals) {
                triples.push((c, r as u32, v));
            }
        }
        Csr::from_triples(self.cols, self.rows(), &triples)
    }

    /// Applies `f(row, column, value)` to every stored value.
    pub(crate) fn map_values(&mut self, mut f: impl FnMut(usize, u32, f32) -> f32) {
        for r in 0..self.rows() {
            let (a, b) = (self.indptr[r], self.indptr[r + 1]);
            for k in a..b {
                self.values[k] = f(r, self.indices[k], self.values[k]);
            }
        }
    }
}

/// The user-item interaction matrix, held by user (rows = users) and by item
/// (rows = items), with the weights of repeated interactions summed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InteractionMatrix {
    by_user: Csr,
    by_item: Csr,
}

impl InteractionMatrix {
    pub(crate) fn new(users: usize, items: usize, triples: &[(u32, u32, f32)]) -> Self {
        let by_user = Csr::from_triples(users, items, triples);
        let by_item = by_user.transpose();
        InteractionMatrix { by_user, by_item }
    }

    /// Number of users (rows of [`by_user`](Self::by_user)).
    pub fn users(&self) -> usize {
        self.by_user.rows()
    }

    /// Number of items (rows of [`by_item`](Self::by_item)).
    pub fn items(&self) -> usize {
        self.by_item.rows()
    }

    /// Number of distinct user-item pairs.
    pub fn nnz(&self) -> usize {
        self.by_user.nnz()
    }

    /// Rows are users, columns items.
    pub fn by_user(&self) -> &Csr {
        &self.by_user
    }

    /// Rows are items, columns users.
    pub fn by_item(&self) -> &Csr {
        &self.by_item
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_sum_and_transpose_agrees() {
        let m = InteractionMatrix::new(
            3,
            4,
            &[
                (0, 3, 1.0),
                (0, 1, 2.0),
                (0, 3, 0.5),
                (2, 0, 1.0),
                (2, 3, 4.0),
            ],
        );
        assert_eq!(m.by_user().row(0), (&[1u32, 3][..], &[2.0f32, 1.5][..]));
        assert_eq!(m.by_user().row(1), (&[][..], &[][..]));
        assert_eq!(m.by_item().row(3), (&[0u32, 2][..], &[1.5f32, 4.0][..]));
        assert_eq!(m.nnz(), 4);
        assert_eq!((m.users(), m.items()), (3, 4));
        assert_eq!(m.by_user().row(99).0.len(), 0);
    }
}
