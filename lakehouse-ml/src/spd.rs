//! Dense symmetric positive-definite matrices in f64: a blocked, parallel Cholesky
//! factorisation and the inverse built on it, for [`Ease`](crate::Ease)'s
//! `items x items` system.
//!
//! The `O(n³)` work is matrix products (ndarray's `general_mat_mul` on the pure-Rust
//! `matrixmultiply` kernels, no BLAS), spread over the rayon pool by blocks of rows or
//! columns; only the `BLOCK x BLOCK` diagonal blocks are factorised and inverted by
//! plain loops. Every block is computed by one task in a fixed order, so the result
//! does not depend on the number of threads.

use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayViewMut2, Axis, s};
use rayon::prelude::*;

/// Rows (or columns) per block: the width of the panels the products work on.
const BLOCK: usize = 64;

/// The matrix is not (numerically) positive definite: the pivot of `column` was not
/// positive and finite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotPositiveDefinite {
    pub(crate) column: usize,
}

/// Runs `f(first row, rows)` on every block of `BLOCK` rows of `m`, in parallel.
fn par_row_blocks(mut m: ArrayViewMut2<'_, f64>, f: impl Fn(usize, ArrayViewMut2<'_, f64>) + Sync) {
    let blocks: Vec<(usize, ArrayViewMut2<'_, f64>)> = m
        .axis_chunks_iter_mut(Axis(0), BLOCK)
        .enumerate()
        .map(|(b, rows)| (b * BLOCK, rows))
        .collect();
    blocks.into_par_iter().for_each(|(r0, rows)| f(r0, rows));
}

/// The first index of every block of `0..n`.
fn block_starts(n: usize) -> Vec<usize> {
    (0..n).step_by(BLOCK).collect()
}

/// Cholesky factor of a small block in place, unblocked: lower triangle `L` with
/// `L Lᵀ = a` (only the lower triangle of `a` is read), strict upper triangle zeroed.
/// `offset` is the block's first column in the whole matrix, for the error.
fn factor_small(a: &mut Array2<f64>, offset: usize) -> Result<(), NotPositiveDefinite> {
    let w = a.nrows();
    for j in 0..w {
        let mut d = a[[j, j]];
        for k in 0..j {
            d -= a[[j, k]] * a[[j, k]];
        }
        if !(d > 0.0 && d.is_finite()) {
            return Err(NotPositiveDefinite { column: offset + j });
        }
        let d = d.sqrt();
        a[[j, j]] = d;
        for i in j + 1..w {
            let mut v = a[[i, j]];
            for k in 0..j {
                v -= a[[i, k]] * a[[j, k]];
            }
            a[[i, j]] = v / d;
        }
        for k in j + 1..w {
            a[[j, k]] = 0.0;
        }
    }
    Ok(())
}

/// The inverse of a small lower-triangular block with a positive diagonal (itself
/// lower triangular), by forward substitution column by column.
fn invert_lower_small(l: &Array2<f64>) -> Array2<f64> {
    let w = l.nrows();
    let mut m = Array2::<f64>::zeros((w, w));
    for j in 0..w {
        m[[j, j]] = 1.0 / l[[j, j]];
        for i in j + 1..w {
            let mut v = 0.0;
            for k in j..i {
                v += l[[i, k]] * m[[k, j]];
            }
            m[[i, j]] = -v / l[[i, i]];
        }
    }
    m
}

/// Factorises the symmetric positive-definite `a` (`n x n`; only its lower triangle is
/// read) as `L Lᵀ` in place: on return the lower triangle holds `L` and the strict
/// upper triangle is zero. Right-looking and blocked: factor a diagonal block, solve
/// the panel below it (a product with the block's inverse), subtract the panel's
/// outer product from the trailing lower triangle (products, by blocks of rows in
/// parallel).
pub(crate) fn cholesky(a: &mut Array2<f64>) -> Result<(), NotPositiveDefinite> {
    let n = a.nrows();
    debug_assert_eq!(n, a.ncols(), "cholesky takes a square matrix");
    for k0 in block_starts(n) {
        let k1 = (k0 + BLOCK).min(n);
        let mut diag = a.slice(s![k0..k1, k0..k1]).to_owned();
        factor_small(&mut diag, k0)?;
        a.slice_mut(s![k0..k1, k0..k1]).assign(&diag);
        if k1 == n {
            break;
        }
        // Panel: A[k1.., k0..k1] <- A[k1.., k0..k1] L_kk⁻ᵀ.
        let inv = invert_lower_small(&diag);
        let old = a.slice(s![k1.., k0..k1]).to_owned();
        par_row_blocks(a.slice_mut(s![k1.., k0..k1]), |r0, mut rows| {
            let r1 = r0 + rows.nrows();
            general_mat_mul(1.0, &old.slice(s![r0..r1, ..]), &inv.t(), 0.0, &mut rows);
        });
        // Trailing lower triangle: A[k1.., k1..] -= panel panelᵀ. Row block `r0..r1`
        // needs columns up to `r1` only.
        let panel = a.slice(s![k1.., k0..k1]).to_owned();
        par_row_blocks(a.slice_mut(s![k1.., k1..]), |r0, mut rows| {
            let r1 = r0 + rows.nrows();
            general_mat_mul(
                -1.0,
                &panel.slice(s![r0..r1, ..]),
                &panel.slice(s![..r1, ..]).t(),
                1.0,
                &mut rows.slice_mut(s![.., ..r1]),
            );
        });
    }
    for i in 0..n {
        a.slice_mut(s![i, i + 1..]).fill(0.0);
    }
    Ok(())
}

/// `L⁻¹` of the lower-triangular `l` with a positive diagonal (a Cholesky factor).
/// Each block of columns of `L M = I` is solved on its own, in parallel: its diagonal
/// block is the inverse of `L`'s, and every block below follows by forward
/// substitution with products.
fn invert_lower(l: &Array2<f64>) -> Array2<f64> {
    let n = l.nrows();
    let starts = block_starts(n);
    let end = |b: usize| (b + BLOCK).min(n);
    let diag_inv: Vec<Array2<f64>> = starts
        .par_iter()
        .map(|&i0| invert_lower_small(&l.slice(s![i0..end(i0), i0..end(i0)]).to_owned()))
        .collect();
    let columns: Vec<Array2<f64>> = starts
        .par_iter()
        .enumerate()
        .map(|(jb, &j0)| {
            let w = end(j0) - j0;
            // Rows j0.. of the column block (the rows above are zero).
            let mut x = Array2::<f64>::zeros((n - j0, w));
            x.slice_mut(s![..w, ..]).assign(&diag_inv[jb]);
            for (ib, &i0) in starts.iter().enumerate().skip(jb + 1) {
                let i1 = end(i0);
                let mut t = Array2::<f64>::zeros((i1 - i0, w));
                general_mat_mul(
                    1.0,
                    &l.slice(s![i0..i1, j0..i0]),
                    &x.slice(s![..i0 - j0, ..]),
                    0.0,
                    &mut t,
                );
                general_mat_mul(
                    -1.0,
                    &diag_inv[ib],
                    &t,
                    0.0,
                    &mut x.slice_mut(s![i0 - j0..i1 - j0, ..]),
                );
            }
            x
        })
        .collect();
    let mut m = Array2::<f64>::zeros((n, n));
    for (&j0, x) in starts.iter().zip(&columns) {
        m.slice_mut(s![j0.., j0..end(j0)]).assign(x);
    }
    m
}

/// The inverse of the symmetric positive-definite `a` (`n x n`; only its lower
/// triangle is read): `A = L Lᵀ` by [`cholesky`], `M = L⁻¹`, then `A⁻¹ = Mᵀ M` by
/// blocks of columns in parallel (`M` is lower triangular, so column block `b` of the
/// product only needs `M`'s rows from `b` on). About `5 n³ / 3` flops.
pub(crate) fn inverse(mut a: Array2<f64>) -> Result<Array2<f64>, NotPositiveDefinite> {
    let n = a.nrows();
    cholesky(&mut a)?;
    let m = invert_lower(&a);
    drop(a);
    let mut p = Array2::<f64>::zeros((n, n));
    let blocks: Vec<(usize, ArrayViewMut2<'_, f64>)> = p
        .axis_chunks_iter_mut(Axis(1), BLOCK)
        .enumerate()
        .map(|(b, cols)| (b * BLOCK, cols))
        .collect();
    blocks.into_par_iter().for_each(|(c0, mut cols)| {
        let c1 = c0 + cols.ncols();
        general_mat_mul(
            1.0,
            &m.slice(s![c0.., ..]).t(),
            &m.slice(s![c0.., c0..c1]),
            0.0,
            &mut cols,
        );
    });
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A symmetric positive-definite `n x n` matrix: `R Rᵀ + n I` for a fixed `R`.
    fn spd(n: usize) -> Array2<f64> {
        let r = Array2::from_shape_fn((n, n), |(i, j)| {
            (((i * 31 + j * 17) % 23) as f64 - 11.0) / 11.0
        });
        let mut a = r.dot(&r.t());
        for i in 0..n {
            a[[i, i]] += n as f64;
        }
        a
    }

    fn max_abs_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
        a.iter()
            .zip(b.iter())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn inverse_of_a_known_matrix() {
        // [[4, 2], [2, 3]]⁻¹ = [[3, -2], [-2, 4]] / 8.
        let a = ndarray::array![[4.0, 2.0], [2.0, 3.0]];
        let p = inverse(a).unwrap();
        let want = ndarray::array![[0.375, -0.25], [-0.25, 0.5]];
        assert!(max_abs_diff(&p, &want) < 1e-12, "{p:?}");
        // The tridiagonal [-1, 2, -1] matrix has a closed-form inverse:
        // (A⁻¹)_ij = min(i, j) (n + 1 - max(i, j)) / (n + 1), indices from 1.
        let n = 150;
        let a = Array2::from_shape_fn((n, n), |(i, j)| match i.abs_diff(j) {
            0 => 2.0,
            1 => -1.0,
            _ => 0.0,
        });
        let p = inverse(a).unwrap();
        let want = Array2::from_shape_fn((n, n), |(i, j)| {
            let (lo, hi) = ((i.min(j) + 1) as f64, (i.max(j) + 1) as f64);
            lo * (n as f64 + 1.0 - hi) / (n as f64 + 1.0)
        });
        assert!(
            max_abs_diff(&p, &want) < 1e-9,
            "{}",
            max_abs_diff(&p, &want)
        );
    }

    #[test]
    fn blocked_factor_and_inverse_across_block_edges() {
        // Sizes below, at and across the block width.
        for n in [1, 5, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK + 7] {
            let a = spd(n);
            let mut l = a.clone();
            cholesky(&mut l).unwrap();
            for i in 0..n {
                for j in i + 1..n {
                    assert_eq!(l[[i, j]], 0.0, "upper triangle is zero");
                }
            }
            let back = l.dot(&l.t());
            assert!(max_abs_diff(&back, &a) < 1e-9 * n as f64, "n={n}: L Lᵀ = A");
            let p = inverse(a.clone()).unwrap();
            let eye = Array2::<f64>::eye(n);
            assert!(max_abs_diff(&a.dot(&p), &eye) < 1e-9, "n={n}: A A⁻¹ = I");
        }
    }

    #[test]
    fn refuses_a_matrix_that_is_not_positive_definite() {
        let a = ndarray::array![[1.0, 2.0], [2.0, 1.0]];
        assert_eq!(inverse(a).unwrap_err(), NotPositiveDefinite { column: 1 });
        let mut b = spd(BLOCK + 3);
        b[[BLOCK + 1, BLOCK + 1]] = -1e6;
        assert_eq!(
            cholesky(&mut b).unwrap_err(),
            NotPositiveDefinite { column: BLOCK + 1 }
        );
        let nan = ndarray::array![[f64::NAN]];
        assert!(inverse(nan).is_err());
    }
}
