//! `lakehouse-bench ml` (also alone as `lakehouse-bench ml-fold-in`): online fold-in of
//! a retail-sized ALS model while a reader keeps recommending from it, as the retail
//! example serves it.
//!
//! * Model: the example's catalogue (`examples/.../args.rs` defaults: 100,000 items,
//!   20,000 users) with 16 factors, vectors around taste centres (as the large
//!   catalogue figures), from [`Als::from_factors`]; the default bound of
//!   [`lakehouse_ml::DEFAULT_HISTORY_PER_USER`] items per user.
//! * Events: the example's generator (`lakehouse_examples::workload::Generator`, Zipf
//!   item popularity, 80 % in the user's favourite category); carts (weight 3) and
//!   purchases (weight 5) are folded in, as the example does.
//! * Warm-up: events folded in first (on all cores) so that the histories hold items,
//!   as after a while of serving; the mean history length reached is printed.
//!   `LAKEHOUSE_FOLD_IN_WARM_UP` overrides the number (for example the full run's
//!   4,000,000 with `--quick`: full histories, a short measurement).
//! * Measured: events in batches of 10,000 (the example's trigger batch size), each
//!   prepared under a read lock on a one-thread rayon pool and applied under a write
//!   lock (`RwLock<Als>`, as the example's `Models`), while one reader thread asks for
//!   the top 10 of random users under the read lock. The rate is events over the wall
//!   time of the loop; the reader's latency includes waiting for the lock.
//! * Solver: the default [`AlsParams::fold_in_cg_steps`] (0: every solve exact);
//!   `LAKEHOUSE_FOLD_IN_CG_STEPS` sets warm-started conjugate-gradient steps for known
//!   users instead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use lakehouse_examples::workload::{CART, Catalog, Generator, PURCHASE};
use lakehouse_ml::{Als, AlsParams, Event, Id, Query, Recommender};

use crate::ml::clustered_factors;
use crate::report::{BenchResult, Latencies, Report};

const ITEMS: u32 = 100_000;
const USERS: u32 = 20_000;
const FACTORS: usize = 16;
/// The example's fold-in trigger batch size.
const BATCH: usize = 10_000;

pub(crate) fn run(report: &mut Report) -> BenchResult {
    let (user_factors, item_factors) =
        clustered_factors(USERS as usize, ITEMS as usize, FACTORS, 5);
    let cg_steps = std::env::var("LAKEHOUSE_FOLD_IN_CG_STEPS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(lakehouse_ml::DEFAULT_FOLD_IN_CG_STEPS);
    let params = AlsParams {
        factors: FACTORS,
        fold_in_cg_steps: cg_steps,
        ..AlsParams::default()
    };
    let model = Als::from_factors(
        params,
        (0..i64::from(USERS)).map(Id::from).collect(),
        user_factors,
        (0..i64::from(ITEMS)).map(Id::from).collect(),
        item_factors,
    )?;
    let mut generator = Generator::new(Arc::new(Catalog::new(ITEMS, USERS)), 9);
    let mut next_batch = |n: usize| -> Vec<Event> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let e = generator.next_event(0);
            let weight = match e.kind {
                CART => 3.0,
                PURCHASE => 5.0,
                _ => continue,
            };
            out.push(Event::new(i64::from(e.user), i64::from(e.item)).weight(weight));
        }
        out
    };

    let model = Arc::new(RwLock::new(model));
    let warm_up: usize = std::env::var("LAKEHOUSE_FOLD_IN_WARM_UP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(report.scale(4_000_000, 100_000));
    let mut warmed = 0;
    while warmed < warm_up {
        let events = next_batch(100_000.min(warm_up - warmed));
        let mut m = model.write().map_err(|_| "model lock poisoned")?;
        m.update(&events)?;
        warmed += events.len();
    }
    let mean_history = {
        let m = model.read().map_err(|_| "model lock poisoned")?;
        mean_history_length(&m)?
    };

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (model, stop) = (model.clone(), stop.clone());
        std::thread::spawn(move || -> Latencies {
            let mut lat = Latencies::default();
            let q = Query::top(10);
            let mut user = 17u64;
            while !stop.load(Ordering::Relaxed) {
                user = user.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let id = Id::from(((user >> 33) % u64::from(USERS)) as i64);
                let start = Instant::now();
                let recs = model.read().map(|m| m.recommend(&id, &q));
                lat.record(start.elapsed());
                std::hint::black_box(recs.ok());
            }
            lat
        })
    };

    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let measured: usize = report.scale(2_000_000, 50_000);
    let batches: Vec<Vec<Event>> = (0..measured.div_ceil(BATCH))
        .map(|_| next_batch(BATCH))
        .collect();
    let mut apply = Latencies::with_capacity(batches.len());
    let (mut users, mut events) = (0usize, 0usize);
    let started = Instant::now();
    let mut outcome: BenchResult = Ok(());
    for batch in &batches {
        let update = {
            let m = model.read().map_err(|_| "model lock poisoned")?;
            pool.install(|| m.prepare_update(batch))
        };
        let update = match update {
            Ok(u) => u,
            Err(e) => {
                outcome = Err(e.into());
                break;
            }
        };
        users += update.users();
        events += update.events();
        let mut m = model.write().map_err(|_| "model lock poisoned")?;
        let start = Instant::now();
        let applied = m.apply_update(update);
        apply.record(start.elapsed());
        drop(m);
        if let Err(e) = applied {
            outcome = Err(e.into());
            break;
        }
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut reads = reader.join().map_err(|_| "the reader thread panicked")?;
    outcome?;

    report.note(&format!(
        "fold-in: {ITEMS} items x {FACTORS} factors, {USERS} users, {warmed} events \
         folded in first (mean history {mean_history:.1} items, bound {}); {events} events \
         in batches of {BATCH} ({:.0} users a batch), one rayon thread, one reader \
         ({} requests); fold_in_cg_steps {cg_steps}",
        lakehouse_ml::DEFAULT_HISTORY_PER_USER,
        users as f64 / batches.len().max(1) as f64,
        reads.len(),
    ));
    report.metric(
        "ml.fold_in_interactions_per_s",
        events as f64 / took.as_secs_f64(),
        "events/s",
    );
    report.metric(
        "ml.fold_in_apply_p99_ms",
        apply.percentile(99.0).as_secs_f64() * 1e3,
        "ms",
    );
    report.metric(
        "ml.recommend_during_fold_in_p99_ms",
        reads.percentile(99.0).as_secs_f64() * 1e3,
        "ms",
    );
    Ok(())
}

/// The mean number of items in the histories of the model's users.
fn mean_history_length(model: &Als) -> Result<f64, lakehouse_ml::Error> {
    let users = model.users()?;
    let mut total = 0usize;
    for id in users.ids() {
        total += model.history_len(id);
    }
    Ok(total as f64 / users.len().max(1) as f64)
}
