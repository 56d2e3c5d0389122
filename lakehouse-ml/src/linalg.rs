//! Small dense linear algebra for factor models: Gram matrices, conjugate gradient,
//! Cholesky.

use rayon::prelude::*;

use crate::recommender::dot;

/// Rows per parallel task when summing Gram matrices; fixed so that the summation order
/// and therefore the result do not depend on the thread count.
const GRAM_CHUNK: usize = 2048;

/// `Fᵀ F + reg·I` (`f × f`, row-major, f64) of the row-major `rows × f` matrix `factors`.
pub(crate) fn gram(factors: &[f32], f: usize, reg: f64) -> Vec<f64> {
    let partials: Vec<Vec<f64>> = factors
        .par_chunks(GRAM_CHUNK * f)
        .map(|chunk| {
            let mut g = vec![0f64; f * f];
            for row in chunk.chunks_exact(f) {
                for a in 0..f {
                    let ra = f64::from(row[a]);
                    if ra == 0.0 {
                        continue;
                    }
                    let ga = &mut g[a * f..a * f + f];
                    for b in a..f {
                        ga[b] += ra * f64::from(row[b]);
                    }
                }
            }
            g
        })
        .collect();
    let mut g = vec![0f64; f * f];
    for p in partials {
        for (x, y) in g.iter_mut().zip(p) {
            *x += y;
        }
    }
    for a in 0..f {
        for b in 0..a {
            g[a * f + b] = g[b * f + a];
        }
        g[a * f + a] += reg;
    }
    g
}

/// Scratch vectors for [`cg_row`].
#[derive(Debug)]
pub(crate) struct CgScratch {
    r: Vec<f32>,
    p: Vec<f32>,
    ap: Vec<f32>,
}

impl CgScratch {
    pub(crate) fn new(f: usize) -> Self {
        CgScratch {
            r: vec![0.0; f],
            p: vec![0.0; f],
            ap: vec![0.0; f],
        }
    }
}

fn gram_times(gram: &[f32], v: &[f32], out: &mut [f32]) {
    let f = v.len();
    for (a, o) in out.iter_mut().enumerate() {
        *o = dot(&gram[a * f..a * f + f], v);
    }
}

fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// A few conjugate-gradient steps on `(G + Σ (c-1) y yᵀ) x = Σ c y`, warm-started from
/// `x`, where `entries` yields `(other row index, confidence c)` (Hu, Koren and Volinsky's
/// implicit ALS with the fast solver of Takács et al.).
pub(crate) fn cg_row(
    x: &mut [f32],
    gram: &[f32],
    other: &[f32],
    entries: &[(u32, f32)],
    steps: usize,
    s: &mut CgScratch,
) {
    let f = x.len();
    let y = |i: u32| &other[i as usize * f..i as usize * f + f];
    gram_times(gram, x, &mut s.r);
    for v in s.r.iter_mut() {
        *v = -*v;
    }
    for &(i, c) in entries {
        let yi = y(i);
        axpy(c - (c - 1.0) * dot(yi, x), yi, &mut s.r);
    }
    s.p.copy_from_slice(&s.r);
    let mut rs_old = dot(&s.r, &s.r);
    for _ in 0..steps {
        if rs_old < 1e-20 {
            break;
        }
        gram_times(gram, &s.p, &mut s.ap);
        for &(i, c) in entries {
            let yi = y(i);
            axpy((c - 1.0) * dot(yi, &s.p), yi, &mut s.ap);
        }
        let pap = dot(&s.p, &s.ap);
        if pap <= 0.0 || !pap.is_finite() {
            break;
        }
        let alpha = rs_old / pap;
        axpy(alpha, &s.p, x);
        axpy(-alpha, &s.ap, &mut s.r);
        let rs_new = dot(&s.r, &s.r);
        if rs_new < 1e-20 {
            break;
        }
        let beta = rs_new / rs_old;
        for (p, r) in s.p.iter_mut().zip(&s.r) {
            *p = r + beta * *p;
        }
        rs_old = rs_new;
    }
}

/// The exact least-squares solution of `(G + Σ (c-1) y yᵀ) x = Σ c y` by Cholesky, in
/// f64. `None` when the system is not positive definite. The reference that
/// [`solve_gathered`] is tested against.
#[cfg(test)]
pub(crate) fn solve_exact(
    gram: &[f64],
    other: &[f32],
    f: usize,
    entries: impl Iterator<Item = (u32, f32)>,
) -> Option<Vec<f32>> {
    let mut a = gram.to_vec();
    let mut b = vec![0f64; f];
    for (i, c) in entries {
        let y = &other[i as usize * f..i as usize * f + f];
        let (c, cm1) = (f64::from(c), f64::from(c) - 1.0);
        for p in 0..f {
            let yp = f64::from(y[p]);
            b[p] += c * yp;
            let w = cm1 * yp;
            let row = &mut a[p * f..p * f + f];
            for q in 0..=p {
                row[q] += w * f64::from(y[q]);
            }
        }
    }
    cholesky_solve(&mut a, &mut b, f)?;
    Some(b.into_iter().map(|v| v as f32).collect())
}

/// Scratch buffers of [`solve_gathered`] and [`cg_gathered`], reused across solves of
/// one thread.
#[derive(Debug, Default)]
pub(crate) struct SolveScratch {
    /// `f x n`: factor `p` of every entry's vector, contiguous.
    cols: Vec<f32>,
    /// `f x n`: the same scaled by `c - 1`.
    scaled: Vec<f32>,
    /// The `n` confidences.
    conf: Vec<f32>,
    /// Per entry: its vector times a direction, then that times a weight.
    coef: Vec<f32>,
    a: Vec<f64>,
    b: Vec<f64>,
    /// Conjugate gradient: residual, direction, and the matrix times the direction.
    r: Vec<f32>,
    p: Vec<f32>,
    ap: Vec<f32>,
}

/// Gathers `entries` of `(vector, c)` factor by factor into `s.cols` (`f x n`) and their
/// confidences into `s.conf`; returns their number `n`.
fn gather<'a>(
    f: usize,
    entries: impl ExactSizeIterator<Item = (&'a [f32], f32)>,
    s: &mut SolveScratch,
) -> usize {
    let n = entries.len();
    s.cols.clear();
    s.cols.resize(f * n, 0.0);
    s.conf.clear();
    for (k, (y, c)) in entries.enumerate() {
        s.conf.push(c);
        for (p, &v) in y.iter().take(f).enumerate() {
            s.cols[p * n + k] = v;
        }
    }
    n
}

/// The same system as [`solve_exact`] for `entries` of `(vector, c)`, written into `x`
/// (`f` long); `false` when it is not positive definite.
///
/// The vectors are gathered factor by factor, so that each of the `f (f + 1) / 2`
/// entries of the matrix is one contiguous dot product over the entries (vectorised,
/// f32 with eight partial sums), and only the `f x f` factorisation runs in f64.
pub(crate) fn solve_gathered<'a>(
    gram: &[f64],
    f: usize,
    entries: impl ExactSizeIterator<Item = (&'a [f32], f32)>,
    s: &mut SolveScratch,
    x: &mut [f32],
) -> bool {
    let n = gather(f, entries, s);
    s.scaled.clear();
    s.scaled.resize(f * n, 0.0);
    if n > 0 {
        for (scaled, col) in s.scaled.chunks_exact_mut(n).zip(s.cols.chunks_exact(n)) {
            for ((o, &v), &c) in scaled.iter_mut().zip(col).zip(&s.conf) {
                *o = (c - 1.0) * v;
            }
        }
    }
    s.a.clear();
    s.a.extend_from_slice(&gram[..f * f]);
    s.b.clear();
    for p in 0..f {
        let col_p = &s.cols[p * n..p * n + n];
        s.b.push(f64::from(dot(&s.conf, col_p)));
        let scaled_p = &s.scaled[p * n..p * n + n];
        for q in 0..=p {
            s.a[p * f + q] += f64::from(dot(scaled_p, &s.cols[q * n..q * n + n]));
        }
    }
    if cholesky_solve(&mut s.a, &mut s.b, f).is_none() {
        return false;
    }
    for (o, v) in x.iter_mut().zip(&s.b) {
        *o = *v as f32;
    }
    true
}

/// `coef[k] = y_k · v` for the gathered vectors `y_k` of `cols` (`f x n`, `n` =
/// `coef.len()`).
fn project(cols: &[f32], v: &[f32], coef: &mut [f32]) {
    coef.fill(0.0);
    let n = coef.len();
    if n == 0 {
        return;
    }
    for (col, &vp) in cols.chunks_exact(n).zip(v) {
        for (c, &y) in coef.iter_mut().zip(col) {
            *c += vp * y;
        }
    }
}

/// `out = Σ_k coef[k] y_k + sign · G v`: the gathered vectors of `cols` (`f x n`)
/// combined by `coef`, plus or minus the `f x f` matrix `gram` times `v`.
fn combine(cols: &[f32], coef: &[f32], gram: &[f32], v: &[f32], sign: f32, out: &mut [f32]) {
    let (f, n) = (out.len(), coef.len());
    for (p, o) in out.iter_mut().enumerate() {
        *o = dot(&cols[p * n..p * n + n], coef) + sign * dot(&gram[p * f..p * f + f], v);
    }
}

/// At most `steps` conjugate-gradient steps on the system of [`solve_gathered`] for
/// `entries` of `(vector, c)`, `(G + Σ (c-1) y yᵀ) x = Σ c y` with `gram` = `G` in f32
/// (`f x f`), warm-started from `x` and written back into it.
///
/// The matrix is never formed: `A v = G v + Σ (c-1) (yᵀv) y` is applied from the
/// vectors, gathered factor by factor as for the exact solve, so a step costs
/// `O(n f + f²)` for `n` entries, against `O(n f² + f³)` for [`solve_gathered`]. It
/// stops early once the residual has shrunk by `1e-5` (about f32 precision) or the
/// direction is degenerate, so it never divides by zero; non-finite input still gives
/// non-finite output, for the caller to check.
pub(crate) fn cg_gathered<'a>(
    gram: &[f32],
    f: usize,
    entries: impl ExactSizeIterator<Item = (&'a [f32], f32)>,
    steps: usize,
    s: &mut SolveScratch,
    x: &mut [f32],
) {
    let n = gather(f, entries, s);
    let SolveScratch {
        cols,
        conf,
        coef,
        r,
        p,
        ap,
        ..
    } = s;
    let cols = &cols[..f * n];
    coef.clear();
    coef.resize(n, 0.0);
    for v in [&mut *r, &mut *p, &mut *ap] {
        v.clear();
        v.resize(f, 0.0);
    }
    // r = b - A x = Σ (c - (c-1) yᵀx) y - G x.
    project(cols, x, coef);
    for (k, &c) in coef.iter_mut().zip(conf.iter()) {
        *k = c - (c - 1.0) * *k;
    }
    combine(cols, coef, gram, x, -1.0, r);
    p.copy_from_slice(r);
    let mut rs = dot(r, r);
    let stop = rs * 1e-10;
    for _ in 0..steps {
        if !(rs > stop && rs.is_finite()) {
            break;
        }
        project(cols, p, coef);
        for (k, &c) in coef.iter_mut().zip(conf.iter()) {
            *k *= c - 1.0;
        }
        combine(cols, coef, gram, p, 1.0, ap);
        let pap = dot(p, ap);
        if !(pap > 0.0 && pap.is_finite()) {
            break;
        }
        let alpha = rs / pap;
        axpy(alpha, p, x);
        axpy(-alpha, ap, r);
        let rs_new = dot(r, r);
        let beta = rs_new / rs;
        for (pk, &rk) in p.iter_mut().zip(r.iter()) {
            *pk = rk + beta * *pk;
        }
        rs = rs_new;
    }
}

/// Solves `a z = b` in place (`b` becomes `z`) by a lower Cholesky factorisation of the
/// `f x f` matrix `a` (only its lower triangle is read). `None` when `a` is not positive
/// definite.
fn cholesky_solve(a: &mut [f64], b: &mut [f64], f: usize) -> Option<()> {
    for j in 0..f {
        let mut d = a[j * f + j];
        for k in 0..j {
            d -= a[j * f + k] * a[j * f + k];
        }
        if d <= 0.0 || !d.is_finite() {
            return None;
        }
        let d = d.sqrt();
        a[j * f + j] = d;
        for i in j + 1..f {
            let mut s = a[i * f + j];
            for k in 0..j {
                s -= a[i * f + k] * a[j * f + k];
            }
            a[i * f + j] = s / d;
        }
    }
    // Forward then backward substitution.
    for i in 0..f {
        let mut s = b[i];
        for k in 0..i {
            s -= a[i * f + k] * b[k];
        }
        b[i] = s / a[i * f + i];
    }
    for i in (0..f).rev() {
        let mut s = b[i];
        for k in i + 1..f {
            s -= a[k * f + i] * b[k];
        }
        b[i] = s / a[i * f + i];
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cg_converges_to_the_exact_solution() {
        let f = 4;
        let other: Vec<f32> = (0..40)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) / 10.0)
            .collect();
        let g64 = gram(&other, f, 0.1);
        let g32: Vec<f32> = g64.iter().map(|&v| v as f32).collect();
        let entries = [(0u32, 3.0f32), (4, 1.5), (7, 2.0)];
        let exact = solve_exact(&g64, &other, f, entries.iter().copied()).unwrap();
        let mut x = vec![0f32; f];
        cg_row(&mut x, &g32, &other, &entries, 20, &mut CgScratch::new(f));
        for (a, b) in x.iter().zip(&exact) {
            assert!((a - b).abs() < 1e-3, "{x:?} vs {exact:?}");
        }
    }

    #[test]
    fn gathered_solve_matches_the_f64_solve() {
        let f = 5;
        let other: Vec<f32> = (0..60)
            .map(|i| ((i * 13 % 17) as f32 - 8.0) / 9.0)
            .collect();
        let g = gram(&other, f, 0.05);
        let entries = [(1u32, 7.0f32), (3, 1.0), (4, 21.0), (9, 3.5), (11, 1.5)];
        let exact = solve_exact(&g, &other, f, entries.iter().copied()).unwrap();
        let mut x = vec![0f32; f];
        let mut s = SolveScratch::default();
        let rows = entries
            .iter()
            .map(|&(i, c)| (&other[i as usize * f..i as usize * f + f], c));
        assert!(solve_gathered(&g, f, rows, &mut s, &mut x));
        for (a, b) in x.iter().zip(&exact) {
            assert!(
                (a - b).abs() < 1e-4 * b.abs().max(1.0),
                "{x:?} vs {exact:?}"
            );
        }
    }

    /// `(G + Σ (c-1) y yᵀ)` in f64, full, for the entries of `(row index, c)`.
    fn system(gram: &[f64], other: &[f32], f: usize, entries: &[(u32, f32)]) -> Vec<f64> {
        let mut a = gram.to_vec();
        for &(i, c) in entries {
            let y = &other[i as usize * f..i as usize * f + f];
            for p in 0..f {
                for q in 0..f {
                    a[p * f + q] += f64::from(c - 1.0) * f64::from(y[p]) * f64::from(y[q]);
                }
            }
        }
        a
    }

    /// `(x - exact)ᵀ A (x - exact)`: the error CG minimises.
    fn energy(a: &[f64], x: &[f32], exact: &[f32]) -> f64 {
        let f = x.len();
        let e: Vec<f64> = x
            .iter()
            .zip(exact)
            .map(|(&p, &q)| f64::from(p - q))
            .collect();
        (0..f)
            .map(|p| e[p] * (0..f).map(|q| a[p * f + q] * e[q]).sum::<f64>())
            .sum()
    }

    #[test]
    fn gathered_cg_converges_to_the_exact_solve() {
        let f = 6;
        let other: Vec<f32> = (0..120)
            .map(|i| ((i * 13 % 17) as f32 - 8.0) / 9.0)
            .collect();
        let g = gram(&other, f, 0.05);
        let g32: Vec<f32> = g.iter().map(|&v| v as f32).collect();
        let entries = [
            (1u32, 7.0f32),
            (3, 1.0),
            (4, 21.0),
            (9, 3.5),
            (11, 1.5),
            (17, 2.0),
        ];
        let exact = solve_exact(&g, &other, f, entries.iter().copied()).unwrap();
        let rows = || {
            entries
                .iter()
                .map(|&(i, c)| (&other[i as usize * f..i as usize * f + f], c))
        };
        let mut s = SolveScratch::default();
        // From zero, f steps solve an f-dimensional system (up to rounding).
        let mut x = vec![0f32; f];
        cg_gathered(&g32, f, rows(), 2 * f, &mut s, &mut x);
        let norm = dot(&exact, &exact).sqrt();
        let err: f32 = x
            .iter()
            .zip(&exact)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
            .sqrt();
        assert!(err <= 1e-3 * norm, "{x:?} vs {exact:?}");
        // Started at the solution, it stays there.
        let mut at = exact.clone();
        cg_gathered(&g32, f, rows(), 3, &mut s, &mut at);
        for (a, b) in at.iter().zip(&exact) {
            assert!((a - b).abs() <= 1e-4 * norm, "{at:?} vs {exact:?}");
        }
        // No entries: the system is G x = 0.
        let mut lone = vec![1f32; f];
        cg_gathered(&g32, f, std::iter::empty(), 2 * f, &mut s, &mut lone);
        assert!(lone.iter().all(|v| v.abs() < 1e-3), "{lone:?}");
    }

    proptest::proptest! {
        /// Each further CG step never increases the error in the system's own norm
        /// (beyond f32 rounding), from any start, and enough steps reach the solution.
        #[test]
        fn cg_steps_never_increase_the_energy_error(
            f in 2usize..7,
            values in proptest::collection::vec(-1.0f32..1.0, 7 * 24),
            picks in proptest::collection::vec((0u32..24, 1.0f32..30.0), 0..16),
            start in proptest::collection::vec(-2.0f32..2.0, 7),
        ) {
            let other = &values[..24 * f];
            let g = gram(other, f, 0.1);
            let g32: Vec<f32> = g.iter().map(|&v| v as f32).collect();
            let mut entries: Vec<(u32, f32)> = picks;
            entries.sort_by_key(|e| e.0);
            entries.dedup_by_key(|e| e.0);
            let exact = solve_exact(&g, other, f, entries.iter().copied()).unwrap();
            let a = system(&g, other, f, &entries);
            let rows = || {
                entries
                    .iter()
                    .map(|&(i, c)| (&other[i as usize * f..i as usize * f + f], c))
            };
            let mut s = SolveScratch::default();
            let x0 = &start[..f];
            let e0 = energy(&a, x0, &exact);
            let mut last = e0;
            for steps in 1..=3 {
                let mut x = x0.to_vec();
                cg_gathered(&g32, f, rows(), steps, &mut s, &mut x);
                let e = energy(&a, &x, &exact);
                proptest::prop_assert!(e.is_finite());
                proptest::prop_assert!(e <= last * 1.001 + 1e-6, "step {steps}: {e} after {last}");
                last = e;
            }
            let mut x = x0.to_vec();
            cg_gathered(&g32, f, rows(), 4 * f, &mut s, &mut x);
            let e = energy(&a, &x, &exact);
            proptest::prop_assert!(e <= 1e-3 * e0.max(1.0), "{e} from {e0}");
        }
    }

    #[test]
    fn gram_is_symmetric_with_ridge() {
        let m = [1.0f32, 2.0, 3.0, 4.0];
        let g = gram(&m, 2, 0.5);
        assert_eq!(g, vec![10.5, 14.0, 14.0, 20.5]);
    }
}
