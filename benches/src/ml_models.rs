//! `lakehouse-bench ml`: the models meant to beat implicit's ALS, EASE and RP3beta,
//! each tuned on a validation split made from the training data only.
//!
//! The training set of the bench's split is split again at random (20 % of its pairs,
//! seed 43) into a fitting part and a validation part; every setting of a model's grid
//! is fitted on the fitting part and scored by precision@10 on the validation part.
//! The best setting is then fitted on the whole training set and evaluated once on the
//! test set, which tuning never sees.

use std::time::Instant;

use lakehouse_ml::{Dataset, Ease, Id, ItemItem, Metrics, Query, Recommender, evaluate};

use crate::report::{Latencies, Report, timed};

const VALID_FRACTION: f64 = 0.2;
const VALID_SEED: u64 = 43;
const K: usize = 10;

/// EASE's regularisation grid.
const EASE_LAMBDAS: [f64; 7] = [100.0, 200.0, 300.0, 400.0, 500.0, 700.0, 1000.0];
/// RP3beta's grid: transition exponent, popularity penalty, neighbours.
const RP3_ALPHAS: [f32; 4] = [0.6, 0.8, 1.0, 1.2];
const RP3_BETAS: [f32; 4] = [0.4, 0.5, 0.6, 0.7];
const RP3_NEIGHBORS: [usize; 2] = [100, 200];

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// One tuned model's figures on the test set.
#[derive(Debug)]
pub(crate) struct Figures {
    /// Metric name prefix: `ease`, `rp3beta`.
    pub(crate) name: &'static str,
    pub(crate) test: Metrics,
    /// The final fit on the whole training set.
    pub(crate) train_s: f64,
}

/// Fits the grid on the fitting part and keeps the setting with the best validation
/// precision (the first of equals).
fn tune<P: Copy + std::fmt::Debug, M: Recommender>(
    report: &mut Report,
    name: &str,
    grid: &[P],
    make: impl Fn(P) -> lakehouse_ml::Result<M>,
    fit_part: &Dataset,
    valid: &Dataset,
) -> Result<P> {
    let mut best: Option<(P, f64)> = None;
    let mut tried = Vec::with_capacity(grid.len());
    for &p in grid {
        let mut model = make(p)?;
        model.fit(fit_part)?;
        let precision = evaluate(&model, valid, K)?.precision;
        tried.push(format!("{p:?} {precision:.4}"));
        if best.is_none_or(|(_, b)| precision > b) {
            best = Some((p, precision));
        }
    }
    let (p, precision) = best.ok_or("empty grid")?;
    report.note(&format!(
        "{name} validation precision@10 per setting: {}; chosen {p:?} ({precision:.4})",
        tried.join(", ")
    ));
    Ok(p)
}

/// Fits `model` on `train`, evaluates it on `test` and reports its figures and
/// serving latency.
fn final_fit(
    report: &mut Report,
    name: &'static str,
    mut model: impl Recommender,
    train: &Dataset,
    test: &Dataset,
) -> Result<Figures> {
    let (r, took) = timed(|| model.fit(train));
    r?;
    let m = evaluate(&model, test, K)?;
    report.metric(&format!("ml.{name}_precision_at_10"), m.precision, "ratio");
    report.metric(&format!("ml.{name}_recall_at_10"), m.recall, "ratio");
    report.metric(&format!("ml.{name}_ndcg_at_10"), m.ndcg, "ratio");
    report.metric(&format!("ml.{name}_map_at_10"), m.map, "ratio");
    report.metric(&format!("ml.{name}_coverage_at_10"), m.coverage, "ratio");
    report.metric(
        &format!("ml.{name}_train_ms"),
        took.as_secs_f64() * 1e3,
        "ms",
    );
    serving(report, name, &model, train)?;
    Ok(Figures {
        name,
        test: m,
        train_s: took.as_secs_f64(),
    })
}

/// Top-10 latency of single requests over the users of `train`, round robin.
fn serving(
    report: &mut Report,
    name: &str,
    model: &dyn Recommender,
    train: &Dataset,
) -> Result<()> {
    let m = train.matrix();
    let users: Vec<Id> = (0..m.users())
        .filter(|&u| !m.by_user().row(u).0.is_empty())
        .filter_map(|u| train.users().id(u as u32).cloned())
        .collect();
    if users.is_empty() {
        return Err("no user to serve".into());
    }
    let q = Query::top(K);
    let requests = report.scale(20_000, 2_000);
    let mut lat = Latencies::with_capacity(requests);
    for n in 0..requests {
        let start = Instant::now();
        let recs = model.recommend(&users[n % users.len()], &q)?;
        lat.record(start.elapsed());
        std::hint::black_box(recs);
    }
    report.metric(
        &format!("ml.{name}_recommend_p50_ms"),
        lat.percentile(50.0).as_secs_f64() * 1e3,
        "ms",
    );
    report.metric(
        &format!("ml.{name}_recommend_p99_ms"),
        lat.percentile(99.0).as_secs_f64() * 1e3,
        "ms",
    );
    Ok(())
}

/// Tunes and measures EASE and RP3beta.
pub(crate) fn run(report: &mut Report, train: &Dataset, test: &Dataset) -> Result<Vec<Figures>> {
    let (fit_part, valid) = train.split_random(VALID_FRACTION, VALID_SEED)?;
    report.note(&format!(
        "tuning: {} of the {} training pairs fit, {} validate (seed {VALID_SEED}); the test \
         pairs are not used",
        fit_part.len(),
        train.len(),
        valid.len()
    ));
    let lambda = tune(
        report,
        "EASE lambda",
        &EASE_LAMBDAS,
        Ease::new,
        &fit_part,
        &valid,
    )?;
    report.metric("ml.ease_lambda", lambda, "");
    let ease = final_fit(report, "ease", Ease::new(lambda)?, train, test)?;

    let grid: Vec<(f32, f32, usize)> = RP3_ALPHAS
        .iter()
        .flat_map(|&a| RP3_BETAS.iter().map(move |&b| (a, b)))
        .flat_map(|(a, b)| RP3_NEIGHBORS.iter().map(move |&k| (a, b, k)))
        .collect();
    let (alpha, beta, neighbors) = tune(
        report,
        "RP3beta (alpha, beta, neighbours)",
        &grid,
        |(a, b, k)| ItemItem::rp3beta(a, b, k),
        &fit_part,
        &valid,
    )?;
    let rp3 = final_fit(
        report,
        "rp3beta",
        ItemItem::rp3beta(alpha, beta, neighbors)?,
        train,
        test,
    )?;
    Ok(vec![ease, rp3])
}
