//! A compact HNSW graph (Malkov and Yashunin) for maximum-inner-product search over item
//! vectors, built in parallel on rayon.
//!
//! Inner product is reduced to Euclidean distance by giving every item vector one more
//! coordinate, `sqrt(M² - |y|²)` with `M` the largest norm, and queries a zero there
//! (Bachrach et al. 2014): the nearest augmented item is then the best dot product.
//! The graph is built in that space; a search ranks by the dot product itself, which
//! orders items as the augmented distance to the query does.
//!
//! `M` follows the items: an item inserted after the build with a norm above `M` raises
//! it (with some headroom, so that a run of slightly larger items does not pay each
//! time) and every extra coordinate is recomputed from the kept squared norms, so the
//! new item sits on the same sphere as the others instead of inside it.

use std::cell::RefCell;
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU32, Ordering};

use lakehouse_core::{Error, Result};
use parking_lot::{Mutex, RwLock};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::recommender::dot;
use crate::rng::Rng;

/// Parameters of the HNSW index.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Links per node on the upper layers (twice this on the bottom layer).
    pub m: usize,
    /// Candidate list size while building; larger builds slower and recalls better.
    pub ef_construction: usize,
    /// Candidate list size while searching (at least `k` is used).
    pub ef_search: usize,
    /// Seed of the layer assignment.
    pub seed: u64,
}

/// The defaults: `m` 16 (32 links on the bottom layer), `ef_construction` 200,
/// `ef_search` 200, chosen on 1 M clustered 64-factor items (BENCHMARKS.md): with `m`
/// 12 and `ef_construction` 80 recall@10 levelled off near 0.8 however wide the
/// search; with these it was 0.956 at `ef_search` 200 (p99 0.92 ms on one core) and
/// 0.98 at 300.
impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 16,
            ef_construction: 200,
            ef_search: 200,
            seed: 7,
        }
    }
}

/// Headroom on the squared norm when an insert raises the largest norm: `M` grows to
/// 1.1 times the new norm.
const NORM_HEADROOM_SQ: f32 = 1.21;

const MAX_LEVEL: usize = 16;

#[derive(Clone, Copy, PartialEq)]
struct Cand(f32, u32);

impl Eq for Cand {}

impl PartialOrd for Cand {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Cand {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

thread_local! {
    /// Visit marks: `marks[node] == epoch` means visited in the current search.
    static VISITED: RefCell<(Vec<u32>, u32)> = const { RefCell::new((Vec::new(), 0)) };
}

/// The graph. Distances are "smaller is closer".
#[derive(Debug)]
pub(crate) struct Hnsw {
    params: HnswParams,
    dim: usize,
    /// The extra coordinate of every item.
    extra: Vec<f32>,
    /// `|y|²` of every item, to recompute `extra` when `max_norm_sq` grows.
    norms_sq: Vec<f32>,
    /// `M²`: at least every item's squared norm.
    max_norm_sq: f32,
    levels: Vec<u8>,
    /// Bottom layer: per node `[count, links...]`, stride `1 + 2m`.
    layer0: Vec<AtomicU32>,
    /// Upper layers of nodes above the bottom: levels 1..=L, each `[count, links...]`
    /// with stride `1 + m`.
    upper: Vec<Box<[AtomicU32]>>,
    locks: Vec<Mutex<()>>,
    entry: RwLock<(u32, usize)>,
}

impl Clone for Hnsw {
    fn clone(&self) -> Self {
        let copy = |links: &[AtomicU32]| -> Vec<AtomicU32> {
            links
                .iter()
                .map(|l| AtomicU32::new(l.load(std::sync::atomic::Ordering::Relaxed)))
                .collect()
        };
        Hnsw {
            params: self.params,
            dim: self.dim,
            extra: self.extra.clone(),
            norms_sq: self.norms_sq.clone(),
            max_norm_sq: self.max_norm_sq,
            levels: self.levels.clone(),
            layer0: copy(&self.layer0),
            upper: self
                .upper
                .iter()
                .map(|u| copy(u).into_boxed_slice())
                .collect(),
            locks: self.locks.iter().map(|_| Mutex::new(())).collect(),
            entry: RwLock::new(*self.entry.read()),
        }
    }
}

impl Hnsw {
    fn m_at(&self, level: usize) -> usize {
        if level == 0 {
            2 * self.params.m
        } else {
            self.params.m
        }
    }

    fn slot(&self, node: u32, level: usize) -> &[AtomicU32] {
        let n = node as usize;
        if level == 0 {
            let s = 1 + 2 * self.params.m;
            &self.layer0[n * s..n * s + s]
        } else {
            let s = 1 + self.params.m;
            &self.upper[n][(level - 1) * s..level * s]
        }
    }

    fn links(&self, node: u32, level: usize, out: &mut Vec<u32>) {
        out.clear();
        let slot = self.slot(node, level);
        let count = (slot[0].load(Ordering::Acquire) as usize).min(slot.len() - 1);
        out.extend(slot[1..=count].iter().map(|a| a.load(Ordering::Relaxed)));
    }

    fn set_links(&self, node: u32, level: usize, links: &[u32]) {
        let slot = self.slot(node, level);
        let n = links.len().min(slot.len() - 1);
        for (a, &l) in slot[1..=n].iter().zip(links) {
            a.store(l, Ordering::Relaxed);
        }
        slot[0].store(n as u32, Ordering::Release);
    }

    fn alloc_node(&mut self, level: usize) {
        let s0 = 1 + 2 * self.params.m;
        self.layer0.extend((0..s0).map(|_| AtomicU32::new(0)));
        let su = 1 + self.params.m;
        self.upper
            .push((0..level * su).map(|_| AtomicU32::new(0)).collect());
        self.locks.push(Mutex::new(()));
        self.levels.push(level as u8);
    }

    /// Builds the index over row-major `vectors` (`n x dim`).
    pub(crate) fn build_mips(vectors: &[f32], dim: usize, params: HnswParams) -> Result<Hnsw> {
        if params.m < 2 || params.ef_construction == 0 || params.ef_search == 0 {
            return Err(Error::invalid(
                "HNSW needs m >= 2, ef_construction >= 1 and ef_search >= 1",
            ));
        }
        let n = vectors.len() / dim.max(1);
        if n == 0 || n >= u32::MAX as usize {
            return Err(Error::invalid(
                "HNSW needs between 1 and u32::MAX - 1 items",
            ));
        }
        if !vectors.iter().all(|v| v.is_finite()) {
            return Err(Error::invalid("HNSW vectors must be finite"));
        }
        let norms: Vec<f32> = vectors.chunks_exact(dim).map(|y| dot(y, y)).collect();
        let max_norm_sq = norms.iter().copied().fold(0f32, f32::max);
        let mut rng = Rng::new(params.seed);
        let ml = 1.0 / (params.m as f64).ln();
        let mut h = Hnsw {
            params,
            dim,
            extra: norms
                .iter()
                .map(|&s| (max_norm_sq - s).max(0.0).sqrt())
                .collect(),
            norms_sq: norms,
            max_norm_sq,
            levels: Vec::with_capacity(n),
            layer0: Vec::with_capacity(n * (1 + 2 * params.m)),
            upper: Vec::with_capacity(n),
            locks: Vec::with_capacity(n),
            entry: RwLock::new((0, 0)),
        };
        for _ in 0..n {
            let level = ((-(rng.f64().max(f64::MIN_POSITIVE)).ln() * ml) as usize).min(MAX_LEVEL);
            h.alloc_node(level);
        }
        *h.entry.write() = (0, h.levels[0] as usize);
        let sequential = n.min(1024);
        for i in 1..sequential {
            h.insert(vectors, i as u32);
        }
        (sequential..n)
            .into_par_iter()
            .for_each(|i| h.insert(vectors, i as u32));
        Ok(h)
    }

    /// Adds item `i` (its vector already in `vectors`); items between the current size
    /// and `i` are added too. An item whose norm exceeds the largest so far raises it
    /// for every item (see the module docs).
    pub(crate) fn insert_mips(&mut self, vectors: &[f32], i: u32) {
        let mut rng = Rng::new(self.params.seed ^ u64::from(i));
        let ml = 1.0 / (self.params.m as f64).ln();
        while self.levels.len() <= i as usize {
            let j = self.levels.len();
            let y = &vectors[j * self.dim..j * self.dim + self.dim];
            let norm_sq = dot(y, y);
            if norm_sq > self.max_norm_sq {
                self.max_norm_sq = norm_sq * NORM_HEADROOM_SQ;
                let m = self.max_norm_sq;
                self.extra
                    .iter_mut()
                    .zip(&self.norms_sq)
                    .for_each(|(e, &s)| *e = (m - s).max(0.0).sqrt());
            }
            self.norms_sq.push(norm_sq);
            self.extra
                .push((self.max_norm_sq - norm_sq).max(0.0).sqrt());
            let level = ((-(rng.f64().max(f64::MIN_POSITIVE)).ln() * ml) as usize).min(MAX_LEVEL);
            self.alloc_node(level);
            self.insert(vectors, j as u32);
        }
    }

    fn vec<'a>(&self, vectors: &'a [f32], i: u32) -> &'a [f32] {
        &vectors[i as usize * self.dim..i as usize * self.dim + self.dim]
    }

    /// Squared Euclidean distance of two augmented items.
    fn item_dist(&self, vectors: &[f32], a: u32, b: u32) -> f32 {
        let ip = dot(self.vec(vectors, a), self.vec(vectors, b))
            + self.extra[a as usize] * self.extra[b as usize];
        (2.0 * self.max_norm_sq - 2.0 * ip).max(0.0)
    }

    fn insert(&self, vectors: &[f32], q: u32) {
        let (entry, top) = *self.entry.read();
        if entry == q {
            return;
        }
        let level = self.levels[q as usize] as usize;
        let dist = |b: u32| self.item_dist(vectors, q, b);
        let mut ep = Cand(dist(entry), entry);
        let mut buf = Vec::new();
        for lc in (level + 1..=top).rev() {
            ep = self.greedy(ep, lc, &dist, &mut buf);
        }
        let mut eps = vec![ep];
        for lc in (0..=level.min(top)).rev() {
            let w = self.search_layer(&eps, self.params.ef_construction, lc, &dist);
            let chosen = self.select(vectors, &w, self.m_at(lc));
            {
                let _g = self.locks[q as usize].lock();
                let ids: Vec<u32> = chosen.iter().map(|c| c.1).collect();
                self.set_links(q, lc, &ids);
            }
            for c in &chosen {
                let n = c.1;
                let _g = self.locks[n as usize].lock();
                self.links(n, lc, &mut buf);
                if buf.contains(&q) {
                    continue;
                }
                buf.push(q);
                if buf.len() > self.m_at(lc) {
                    let mut cands: Vec<Cand> = buf
                        .iter()
                        .map(|&x| Cand(self.item_dist(vectors, n, x), x))
                        .collect();
                    cands.sort_unstable();
                    let kept = self.select(vectors, &cands, self.m_at(lc));
                    buf.clear();
                    buf.extend(kept.iter().map(|c| c.1));
                }
                self.set_links(n, lc, &buf);
            }
            eps = w;
        }
        if level > top {
            let mut e = self.entry.write();
            if level > e.1 {
                *e = (q, level);
            }
        }
    }

    /// The neighbour-selection heuristic: keep a candidate only if it is closer to the
    /// new node than to every neighbour kept so far. `cands` is sorted, closest first.
    fn select(&self, vectors: &[f32], cands: &[Cand], m: usize) -> Vec<Cand> {
        let mut out: Vec<Cand> = Vec::with_capacity(m);
        for &c in cands {
            if out.len() >= m {
                break;
            }
            if out.iter().all(|r| self.item_dist(vectors, c.1, r.1) > c.0) {
                out.push(c);
            }
        }
        if out.len() < m.min(cands.len()) / 2 {
            for &c in cands {
                if out.len() >= m.min(cands.len()) / 2 {
                    break;
                }
                if !out.iter().any(|r| r.1 == c.1) {
                    out.push(c);
                }
            }
        }
        out
    }

    fn greedy(
        &self,
        mut ep: Cand,
        level: usize,
        dist: &impl Fn(u32) -> f32,
        buf: &mut Vec<u32>,
    ) -> Cand {
        loop {
            let mut changed = false;
            self.links(ep.1, level, buf);
            for &n in buf.iter() {
                let d = dist(n);
                if d < ep.0 {
                    ep = Cand(d, n);
                    changed = true;
                }
            }
            if !changed {
                return ep;
            }
        }
    }

    /// The `ef` closest nodes found from `eps` on `level`, closest first.
    fn search_layer(
        &self,
        eps: &[Cand],
        ef: usize,
        level: usize,
        dist: &impl Fn(u32) -> f32,
    ) -> Vec<Cand> {
        VISITED.with(|v| {
            let mut v = v.borrow_mut();
            let (marks, epoch) = &mut *v;
            if marks.len() < self.levels.len() {
                marks.resize(self.levels.len(), 0);
            }
            *epoch = epoch.wrapping_add(1);
            if *epoch == 0 {
                marks.fill(0);
                *epoch = 1;
            }
            let epoch = *epoch;
            let mut candidates: BinaryHeap<std::cmp::Reverse<Cand>> = BinaryHeap::new();
            let mut results: BinaryHeap<Cand> = BinaryHeap::new();
            for &e in eps {
                if marks[e.1 as usize] != epoch {
                    marks[e.1 as usize] = epoch;
                    candidates.push(std::cmp::Reverse(e));
                    results.push(e);
                }
            }
            while results.len() > ef {
                results.pop();
            }
            let mut buf = Vec::new();
            while let Some(std::cmp::Reverse(c)) = candidates.pop() {
                if let Some(worst) = results.peek()
                    && results.len() >= ef
                    && c.0 > worst.0
                {
                    break;
                }
                self.links(c.1, level, &mut buf);
                for &n in &buf {
                    let Some(mark) = marks.get_mut(n as usize) else {
                        continue;
                    };
                    if *mark == epoch {
                        continue;
                    }
                    *mark = epoch;
                    let d = dist(n);
                    if results.len() < ef || results.peek().is_some_and(|w| d < w.0) {
                        candidates.push(std::cmp::Reverse(Cand(d, n)));
                        results.push(Cand(d, n));
                        if results.len() > ef {
                            results.pop();
                        }
                    }
                }
            }
            results.into_sorted_vec()
        })
    }

    /// Up to `k` items with the largest inner product with `query`, as
    /// `(score, item)`, best first.
    pub(crate) fn set_ef_search(&mut self, ef_search: usize) {
        self.params.ef_search = ef_search;
    }

    pub(crate) fn search_mips(&self, vectors: &[f32], query: &[f32], k: usize) -> Vec<(f32, u32)> {
        if k == 0 || self.levels.is_empty() {
            return Vec::new();
        }
        let dist = |b: u32| -dot(query, self.vec(vectors, b));
        let (entry, top) = *self.entry.read();
        let mut ep = Cand(dist(entry), entry);
        let mut buf = Vec::new();
        for lc in (1..=top).rev() {
            ep = self.greedy(ep, lc, &dist, &mut buf);
        }
        let found = self.search_layer(&[ep], self.params.ef_search.max(k), 0, &dist);
        found.into_iter().take(k).map(|c| (-c.0, c.1)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_best_inner_products() {
        let (n, dim) = (3000, 8);
        let mut rng = Rng::new(3);
        let vectors: Vec<f32> = (0..n * dim).map(|_| rng.normal() as f32).collect();
        let h = Hnsw::build_mips(&vectors, dim, HnswParams::default()).unwrap();
        let mut hits = 0;
        for q in 0..50 {
            let query: Vec<f32> = (0..dim).map(|d| ((q * 7 + d) % 5) as f32 - 2.0).collect();
            let mut exact: Vec<(f32, u32)> = vectors
                .chunks_exact(dim)
                .enumerate()
                .map(|(i, y)| (dot(&query, y), i as u32))
                .collect();
            exact.sort_by(|a, b| b.0.total_cmp(&a.0));
            let got = h.search_mips(&vectors, &query, 10);
            assert_eq!(got.len(), 10);
            hits += got
                .iter()
                .filter(|g| exact[..10].iter().any(|e| e.1 == g.1))
                .count();
        }
        assert!(hits >= 450, "recall@10 {hits}/500");
        assert!(Hnsw::build_mips(&[], dim, HnswParams::default()).is_err());
        assert!(Hnsw::build_mips(&[f32::NAN; 8], dim, HnswParams::default()).is_err());
    }

    /// Exact top-`k` item indices by inner product.
    fn exact(vectors: &[f32], dim: usize, query: &[f32], k: usize) -> Vec<u32> {
        let mut all: Vec<(f32, u32)> = vectors
            .chunks_exact(dim)
            .enumerate()
            .map(|(i, y)| (dot(query, y), i as u32))
            .collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0));
        all.into_iter().take(k).map(|(_, i)| i).collect()
    }

    #[test]
    fn items_inserted_after_the_build_are_found() {
        let (n, dim) = (4000, 8);
        let mut rng = Rng::new(11);
        let vectors: Vec<f32> = (0..n * dim).map(|_| rng.normal() as f32).collect();
        let mut h = Hnsw::build_mips(&vectors[..n / 2 * dim], dim, HnswParams::default())
            .expect("valid input");
        h.insert_mips(&vectors, (n - 1) as u32);
        let (mut hits, mut late) = (0, 0);
        for q in 0..50 {
            let query: Vec<f32> = (0..dim).map(|_| rng.normal() as f32).collect();
            let truth = exact(&vectors, dim, &query, 10);
            let got = h.search_mips(&vectors, &query, 10);
            assert_eq!(got.len(), 10, "query {q}");
            hits += got.iter().filter(|g| truth.contains(&g.1)).count();
            late += got.iter().filter(|g| g.1 as usize >= n / 2).count();
        }
        assert!(hits >= 450, "recall@10 {hits}/500");
        assert!(late > 0, "inserted items are returned");
    }

    #[test]
    fn inserted_items_with_larger_norms_rank_first() {
        let (n, dim, big) = (3000, 8, 30);
        let mut rng = Rng::new(5);
        let mut vectors: Vec<f32> = Vec::with_capacity((n + big) * dim);
        for _ in 0..n {
            let v: Vec<f32> = (0..dim).map(|_| rng.normal() as f32).collect();
            let norm = dot(&v, &v).sqrt();
            let scale = (0.5 + 0.5 * rng.f64() as f32) / norm;
            vectors.extend(v.iter().map(|x| x * scale));
        }
        let mut h = Hnsw::build_mips(&vectors, dim, HnswParams::default()).expect("valid input");
        assert!(h.max_norm_sq <= 1.0 + 1e-4);
        // Fold-ins with norms five to five and a half times the largest one of the build.
        let mut directions = Vec::new();
        for _ in 0..big {
            let v: Vec<f32> = (0..dim).map(|_| rng.normal() as f32).collect();
            let norm = dot(&v, &v).sqrt();
            let scale = (5.0 + 0.5 * rng.f64() as f32) / norm;
            directions.push(v.iter().map(|x| x / norm).collect::<Vec<f32>>());
            vectors.extend(v.iter().map(|x| x * scale));
        }
        h.insert_mips(&vectors, (n + big - 1) as u32);
        assert!(
            h.max_norm_sq >= 16.0,
            "the largest norm follows the inserts"
        );
        let mut hits = 0;
        for (b, query) in directions.iter().enumerate() {
            let truth = exact(&vectors, dim, query, 10);
            assert_eq!(
                truth[0] as usize,
                n + b,
                "a large item is its own best match"
            );
            let got = h.search_mips(&vectors, query, 10);
            assert_eq!(got[0].1, truth[0], "query {b}");
            hits += got.iter().filter(|g| truth.contains(&g.1)).count();
        }
        assert!(hits >= big * 9, "recall@10 {hits}/{}", big * 10);
    }
}
