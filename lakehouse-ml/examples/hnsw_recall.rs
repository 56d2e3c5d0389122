//! Recall and latency of the HNSW index on clustered factors, the shape
//! `lakehouse-bench ml` measures (users and items around 1,000 taste centres, item
//! norms 0.5-1.5), at a size chosen on the command line.
//!
//! ```sh
//! cargo run --release --example hnsw_recall -- ITEMS M EF_CONSTRUCTION EF...
//! ```

use std::time::Instant;

use lakehouse_ml::{Als, AlsParams, HnswParams, Id, Query, Recommender};

/// splitmix64, enough for test data.
struct Gen(u64);

impl Gen {
    fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn f32(&mut self) -> f32 {
        (self.u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn gauss(&mut self) -> f32 {
        let u1 = self.f32().max(f32::MIN_POSITIVE);
        let u2 = self.f32();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }
}

fn normalise(v: &mut [f32], to: f32) {
    let n = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x *= to / n);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let items = args.first().copied().unwrap_or(200_000);
    let m = args.get(1).copied().unwrap_or(16);
    let ef_construction = args.get(2).copied().unwrap_or(200);
    let efs: Vec<usize> = if args.len() > 3 {
        args[3..].to_vec()
    } else {
        vec![50, 100, 200]
    };
    const F: usize = 64;
    const CLUSTERS: usize = 1_000;
    let users = 1_000;
    let mut g = Gen(3);
    let mut centres = vec![0f32; CLUSTERS * F];
    for c in centres.chunks_exact_mut(F) {
        c.iter_mut().for_each(|x| *x = g.gauss());
        normalise(c, 1.0);
    }
    let mut around = |n: usize, wide: bool| -> Vec<f32> {
        let mut out = vec![0f32; n * F];
        for v in out.chunks_exact_mut(F) {
            let c = (g.u64() % CLUSTERS as u64) as usize;
            for (x, m) in v.iter_mut().zip(&centres[c * F..(c + 1) * F]) {
                *x = m + 0.5 * g.gauss() / (F as f32).sqrt();
            }
            let norm = if wide { 0.5 + g.f32() } else { 1.0 };
            normalise(v, norm);
        }
        out
    };
    let user_factors = around(users, false);
    let item_factors = around(items, true);
    let user_ids: Vec<Id> = (0..users as i64).map(Id::from).collect();
    let params = AlsParams {
        factors: F,
        ..AlsParams::default()
    };
    let mut als = Als::from_factors(
        params,
        user_ids.clone(),
        user_factors,
        (0..items as i64).map(Id::from).collect(),
        item_factors,
    )?;
    let q = Query::top(10);
    let truth: Vec<_> = user_ids
        .iter()
        .take(200)
        .map(|u| als.recommend_exact(u, &q))
        .collect::<Result<_, _>>()?;
    let start = Instant::now();
    als.build_index(HnswParams {
        m,
        ef_construction,
        ..HnswParams::default()
    })?;
    println!(
        "{items} items, m {m}, ef_construction {ef_construction}: build {:.1} s",
        start.elapsed().as_secs_f64()
    );
    for ef in efs {
        als.set_index_ef_search(ef)?;
        let mut lat = Vec::with_capacity(4000);
        for n in 0..4000 {
            let start = Instant::now();
            let recs = als.recommend(&user_ids[n % users], &q)?;
            lat.push(start.elapsed());
            std::hint::black_box(recs);
        }
        lat.sort();
        let (mut hits, mut total) = (0, 0);
        for (u, t) in user_ids.iter().zip(&truth) {
            let got = als.recommend(u, &q)?;
            total += t.len();
            hits += got
                .iter()
                .filter(|g| t.iter().any(|e| e.item == g.item))
                .count();
        }
        println!(
            "ef {ef:4}: recall@10 {:.4}  p50 {:.3} ms  p99 {:.3} ms",
            hits as f64 / total as f64,
            lat[lat.len() / 2].as_secs_f64() * 1e3,
            lat[lat.len() * 99 / 100].as_secs_f64() * 1e3
        );
    }
    Ok(())
}
