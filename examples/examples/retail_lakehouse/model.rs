//! The recommender: ALS trained from the table by a workflow (retrain, evaluate,
//! publish, warm the cache), and kept current between retrains by online fold-in.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use lakehouse_cache::Cache;
use lakehouse_examples::workload::now_micros;
use lakehouse_flow::{StateMachine, TaskContext, TaskError, TaskRegistry, Value, Workflow, json};
use lakehouse_ml::{
    Als, Columns, Dataset, Event as MlEvent, Id, Popularity, Query, Recommender, evaluate,
};
use lakehouse_query::QueryEngine;

/// The model pipeline, in the Amazon States Language subset of `lakehouse-flow`.
pub(crate) const PIPELINE: &str = r#"{
  "Comment": "Retrain the recommender from the events table, evaluate it against popularity, publish it, warm the cache",
  "StartAt": "Retrain",
  "States": {
    "Retrain": {
      "Type": "Task", "Resource": "retrain", "ResultPath": "$.trained",
      "Retry": [{"ErrorEquals": ["Train.NotEnoughData"], "IntervalSeconds": 1,
                 "MaxAttempts": 3, "BackoffRate": 2.0}],
      "Next": "Evaluate"
    },
    "Evaluate": {"Type": "Task", "Resource": "evaluate", "ResultPath": "$.metrics", "Next": "Good enough?"},
    "Good enough?": {
      "Type": "Choice",
      "Choices": [{"Variable": "$.metrics.ndcg", "NumericGreaterThanEqualsPath": "$.metrics.bar", "Next": "Publish"}],
      "Default": "Rejected"
    },
    "Publish": {"Type": "Task", "Resource": "publish", "ResultPath": "$.published", "Next": "Warm cache"},
    "Warm cache": {"Type": "Task", "Resource": "warm", "ResultPath": "$.warmed", "End": true},
    "Rejected": {"Type": "Fail", "Error": "Model.Rejected", "Cause": "ALS ranks worse than popularity"}
  }
}"#;

/// Retraining reads the events of this last stretch of time only, so that its cost
/// (the scan, the group-by, the fit) is bounded by the event rate, not by how long the
/// pipeline has run: at 200 K events/s, 4 M events. It was 60 s (12 M events); the
/// largest peak of resident memory came after generation, where the final retrain and
/// the report's queries run.
const TRAINING_WINDOW_SECS: i64 = 20;

/// Interaction weights by event type, over the events since `since_micros`, with each
/// pair's latest time (the fitted history keeps each user's most recent items).
fn training_sql(since_micros: i64) -> String {
    format!(
        "SELECT user_id, item_id, \
         SUM(CASE event_type WHEN 'purchase' THEN 5.0 WHEN 'add_to_cart' THEN 3.0 ELSE 1.0 END) AS weight, \
         MAX(event_time) AS last_time \
         FROM events WHERE event_type <> 'price_change' \
         AND event_time >= arrow_cast({since_micros}, 'Timestamp(Microsecond, Some(\"UTC\"))') \
         GROUP BY user_id, item_id"
    )
}

/// Recommendations kept warm for this many of the most active users.
const WARM_USERS: usize = 200;

/// Held-out users the evaluation ranks for (a sample keeps it to about a second).
const EVAL_USERS: usize = 2_000;

/// A trained model waiting for evaluation and publication.
struct Candidate {
    model: Als,
    train: Dataset,
    test: Dataset,
    /// The held-out interactions of a sample of the test users.
    eval: Dataset,
}

/// Interactions waiting for the folding thread, at most [`MAX_PENDING`] (a handed-in
/// batch may pass it by its own size).
const MAX_PENDING: usize = 200_000;

/// What the triggers handed in and the folding thread has not taken yet.
#[derive(Default)]
struct Pending {
    events: Vec<MlEvent>,
    /// Creation times (µs) of the sampled events among them.
    sampled: Vec<i64>,
    /// Stream records they came from (carts and purchases, and the other events of
    /// their batches, which count as handled once the batch is folded).
    records: u64,
    /// The first fold-in error; every later hand-in fails with it.
    failed: Option<lakehouse_ml::Error>,
    /// Set by [`Models::stop_folding`]: the thread folds what is left and ends.
    stop: bool,
}

/// The published model and what the workflow and fold-in share.
pub(crate) struct Models {
    /// The serving model; `None` until the first publication.
    pub(crate) serving: RwLock<Option<Als>>,
    /// Publications so far.
    pub(crate) version: AtomicU64,
    /// Interactions folded in online.
    pub(crate) folded: AtomicU64,
    /// Groups of interactions folded (see [`Models::fold_forever`]).
    pub(crate) fold_groups: AtomicU64,
    /// Fold-in updates prepared again because a publication came in between.
    pub(crate) fold_retries: AtomicU64,
    candidate: Mutex<Option<Candidate>>,
    /// Warmed recommendations by user.
    pub(crate) recs: Cache<i64, Arc<[i64]>>,
    /// One rayon thread for training, evaluation and batch scoring, so that the
    /// global pool stays free for the table's Parquet encoding.
    pool: rayon::ThreadPool,
    /// Two rayon threads for fold-in, apart from `pool` so that a retrain in progress
    /// does not hold fold-in up: each group's users are solved in parallel on them.
    fold_pool: rayon::ThreadPool,
    /// Interactions handed in and not yet taken by the folding thread; `fold_wake`
    /// wakes the thread, `fold_room` the triggers waiting for room or for a drain.
    pending: Mutex<Pending>,
    fold_wake: Condvar,
    fold_room: Condvar,
    /// Where retraining's window ends (microseconds since the epoch): 0 while events
    /// are generated (the window ends now), the end of generation after it, so that a
    /// retrain that starts after the consumers caught up still reads the last
    /// [`TRAINING_WINDOW_SECS`] of events.
    window_end: AtomicI64,
}

impl std::fmt::Debug for Models {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Models")
            .field("version", &self.version.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Models {
    pub(crate) fn new() -> Result<Arc<Models>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Arc::new(Models {
            serving: RwLock::new(None),
            version: AtomicU64::new(0),
            folded: AtomicU64::new(0),
            fold_groups: AtomicU64::new(0),
            fold_retries: AtomicU64::new(0),
            candidate: Mutex::new(None),
            recs: Cache::new(10_000)?,
            pool: rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .thread_name(|_| "model".into())
                .build()
                .map_err(|e| e.to_string())?,
            fold_pool: rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .thread_name(|i| format!("fold-in-{i}"))
                .build()
                .map_err(|e| e.to_string())?,
            pending: Mutex::new(Pending::default()),
            fold_wake: Condvar::new(),
            fold_room: Condvar::new(),
            window_end: AtomicI64::new(0),
        }))
    }

    /// Ends retraining's window at `micros` (the end of generation) from now on.
    pub(crate) fn end_window_at(&self, micros: i64) {
        self.window_end.store(micros, Ordering::SeqCst);
    }

    /// The end of retraining's window: now, or where [`Self::end_window_at`] set it.
    fn window_end(&self) -> i64 {
        match self.window_end.load(Ordering::SeqCst) {
            0 => now_micros(),
            end => end,
        }
    }

    /// Hands a trigger batch's interactions to the folding thread (see
    /// [`fold_forever`](Self::fold_forever)): `records` stream records, of which
    /// `events` are carts and purchases, `sampled` the creation times of the sampled
    /// ones. Returns at once unless [`MAX_PENDING`] interactions are waiting already
    /// (then once the thread has taken them), so the trigger keeps reading while a
    /// group is folded.
    ///
    /// # Errors
    /// The first error of a fold-in, for this and every later batch (the trigger
    /// retries; the run reports it).
    pub(crate) fn hand_in(
        &self,
        events: Vec<MlEvent>,
        sampled: Vec<i64>,
        records: u64,
    ) -> Result<(), lakehouse_ml::Error> {
        let mut p = self.lock_pending();
        while p.events.len() >= MAX_PENDING && p.failed.is_none() && !p.stop {
            p = self.fold_room.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        if let Some(e) = &p.failed {
            return Err(e.clone());
        }
        p.events.extend(events);
        p.sampled.extend(sampled);
        p.records += records;
        drop(p);
        self.fold_wake.notify_one();
        Ok(())
    }

    /// The body of the folding thread: takes everything handed in, folds it as one
    /// update, counts its records into `folded_records` and its sampled latencies into
    /// `fresh`, and again, until [`stop_folding`](Self::stop_folding) and nothing is
    /// left.
    ///
    /// One group at a time means no two updates are prepared against the same model
    /// (one would be refused and prepared again). While a group is folded the next
    /// one gathers, so a slower fold makes a larger group: a user with several new
    /// interactions is solved once for all of them, so the work of a group is bounded
    /// by the number of users, not of interactions, and fold-in catches up.
    pub(crate) fn fold_forever(
        &self,
        fresh: &lakehouse_examples::freshness::Freshness,
        folded_records: &AtomicU64,
    ) {
        loop {
            let mut p = self.lock_pending();
            while p.records == 0 && !p.stop {
                p = self.fold_wake.wait(p).unwrap_or_else(|e| e.into_inner());
            }
            if p.records == 0 {
                return;
            }
            let events = std::mem::take(&mut p.events);
            let sampled = std::mem::take(&mut p.sampled);
            let records = std::mem::take(&mut p.records);
            drop(p);
            self.fold_room.notify_all();
            let outcome = if events.is_empty() {
                Ok(false)
            } else {
                self.fold_group(&events)
            };
            let mut p = self.lock_pending();
            match outcome {
                Ok(applied) => {
                    if applied {
                        fresh.record(now_micros(), &sampled);
                    }
                    folded_records.fetch_add(records, Ordering::SeqCst);
                }
                Err(e) => {
                    // Counted as handled so that the run ends; the error fails it.
                    folded_records.fetch_add(records, Ordering::SeqCst);
                    p.failed.get_or_insert(e.prefixed("fold-in"));
                }
            }
            drop(p);
            self.fold_room.notify_all();
        }
    }

    /// Tells the folding thread to fold what is left and end.
    pub(crate) fn stop_folding(&self) {
        self.lock_pending().stop = true;
        self.fold_wake.notify_all();
        self.fold_room.notify_all();
    }

    /// The first fold-in error, if any.
    pub(crate) fn fold_error(&self) -> Option<lakehouse_ml::Error> {
        self.lock_pending().failed.clone()
    }

    fn lock_pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Folds one group of interactions in (see [`fold_forever`](Self::fold_forever)).
    ///
    /// The vectors are computed under the read lock (requests keep being answered) on
    /// the fold-in pool, then copied in under a short write lock. If the model changed in
    /// between (a publication), the update is prepared again against the new one; after
    /// a few such races it is done under the write lock, so no interaction is lost.
    fn fold_group(&self, events: &[MlEvent]) -> Result<bool, lakehouse_ml::Error> {
        const ATTEMPTS: usize = 3;
        for _ in 0..ATTEMPTS {
            let update = {
                let serving = self.serving.read().unwrap_or_else(|p| p.into_inner());
                let Some(model) = serving.as_ref() else {
                    return Ok(false);
                };
                self.fold_pool.install(|| model.prepare_update(events))?
            };
            let mut serving = self.serving.write().unwrap_or_else(|p| p.into_inner());
            let Some(model) = serving.as_mut() else {
                return Ok(false);
            };
            match model.apply_update(update) {
                Ok(()) => {
                    drop(serving);
                    self.folded_in(events);
                    return Ok(true);
                }
                Err(e) if e.kind() == lakehouse_ml::ErrorKind::Conflict => {
                    self.fold_retries.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        let mut serving = self.serving.write().unwrap_or_else(|p| p.into_inner());
        let Some(model) = serving.as_mut() else {
            return Ok(false);
        };
        self.fold_pool.install(|| model.update(events))?;
        drop(serving);
        self.folded_in(events);
        Ok(true)
    }

    /// Counts folded-in interactions and drops the warmed lists they made stale.
    fn folded_in(&self, events: &[MlEvent]) {
        self.folded
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        self.fold_groups.fetch_add(1, Ordering::Relaxed);
        for e in events {
            if let Id::Int(u) = e.user {
                self.recs.invalidate(&u);
            }
        }
    }

    /// The top `k` items for `user` from the serving model.
    pub(crate) fn recommend(&self, user: i64, k: usize) -> Option<Vec<(i64, f32)>> {
        let serving = self.serving.read().unwrap_or_else(|p| p.into_inner());
        let recs = serving
            .as_ref()?
            .recommend(&Id::from(user), &Query::top(k))
            .ok()?;
        Some(
            recs.into_iter()
                .filter_map(|s| match s.item {
                    Id::Int(i) => Some((i, s.score)),
                    Id::Str(_) => None,
                })
                .collect(),
        )
    }

    fn lock_candidate(&self) -> std::sync::MutexGuard<'_, Option<Candidate>> {
        self.candidate.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs CPU-bound model work off the async workers; a failure is the task error
/// `error`.
async fn blocking<T: Send + 'static>(
    error: &'static str,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, TaskError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TaskError::new("Task.Panicked", e.to_string()))?
        .map_err(|cause| TaskError::new(error, cause))
}

/// The workflow with its four task handlers.
pub(crate) fn workflow(
    engine: QueryEngine,
    models: Arc<Models>,
) -> Result<Workflow, Box<dyn std::error::Error + Send + Sync>> {
    let machine = StateMachine::from_json(PIPELINE)?;
    let (e1, m1) = (engine.clone(), models.clone());
    let m2 = models.clone();
    let m3 = models.clone();
    let (e4, m4) = (engine, models);
    let tasks = TaskRegistry::new()
        .with("retrain", move |_: Value, _: TaskContext| {
            let (engine, models) = (e1.clone(), m1.clone());
            async move {
                let started = Instant::now();
                let since = models.window_end() - TRAINING_WINDOW_SECS * 1_000_000;
                let result = engine
                    .sql(&training_sql(since))
                    .await
                    .map_err(|e| TaskError::new("Train.QueryFailed", e.to_string()))?;
                let batches = result.batches().to_vec();
                let (rows, users, items, train_ms) = blocking("Train.NotEnoughData", move || {
                    let columns = Columns::new("user_id", "item_id")
                        .weight("weight")
                        .timestamp("last_time");
                    let data = Dataset::from_batches(&batches, &columns).map_err(|e| e.to_string())?;
                    if data.len() < 1_000 {
                        return Err(format!("only {} interactions", data.len()));
                    }
                    let (train, test) = data.split_random(0.1, 7).map_err(|e| e.to_string())?;
                    let mut model = Als::builder()
                        .factors(16)
                        .iterations(6)
                        // Fold-in by 3 warm-started CG steps: in this pipeline it kept
                        // up better than exact solves (see BENCHMARKS.md, soak).
                        .fold_in_cg_steps(3)
                        .seed(1)
                        .build()
                        .map_err(|e| e.to_string())?;
                    let t = Instant::now();
                    models.pool.install(|| model.fit(&train)).map_err(|e| e.to_string())?;
                    let stats = (data.len(), data.num_users(), data.num_items(), t.elapsed().as_millis());
                    let eval = sample_users(&test, EVAL_USERS).map_err(|e| e.to_string())?;
                    *models.lock_candidate() = Some(Candidate {
                        model,
                        train,
                        test,
                        eval,
                    });
                    Ok(stats)
                })
                .await?;
                Ok(json!({
                    "interactions": rows, "users": users, "items": items,
                    "train_ms": train_ms as u64, "total_ms": started.elapsed().as_millis() as u64
                }))
            }
        })
        .with("evaluate", move |_: Value, _: TaskContext| {
            let models = m2.clone();
            async move {
                blocking("Evaluate.Failed", move || {
                    let guard = models.lock_candidate();
                    let c = guard.as_ref().ok_or("no trained candidate")?;
                    let m = models
                        .pool
                        .install(|| evaluate(&c.model, &c.eval, 10))
                        .map_err(|e| e.to_string())?;
                    // Popularity trained on the same split is the bar to clear.
                    let mut pop = Popularity::new();
                    pop.fit(&c.train).map_err(|e| e.to_string())?;
                    let popularity = models
                        .pool
                        .install(|| evaluate(&pop, &c.eval, 10))
                        .map_err(|e| e.to_string())?
                        .ndcg;
                    Ok(json!({
                        "precision": m.precision, "recall": m.recall, "ndcg": m.ndcg,
                        "coverage": m.coverage, "users": m.users,
                        "popularity_ndcg": popularity, "bar": popularity * 0.5
                    }))
                })
                .await
            }
        })
        .with("publish", move |_: Value, _: TaskContext| {
            let models = m3.clone();
            async move {
                blocking("Publish.Failed", move || {
                    let Candidate { mut model, test, .. } =
                        models.lock_candidate().take().ok_or("no evaluated candidate")?;
                    // The held-out interactions are real history: fold them in before
                    // serving, so that they are not recommended back.
                    let held_out = dataset_events(&test);
                    models
                        .pool
                        .install(|| model.update(&held_out))
                        .map_err(|e| e.to_string())?;
                    *models.serving.write().unwrap_or_else(|p| p.into_inner()) = Some(model);
                    models.recs.invalidate_all();
                    let v = models.version.fetch_add(1, Ordering::SeqCst) + 1;
                    Ok(json!({"version": v, "folded_held_out": held_out.len()}))
                })
                .await
            }
        })
        .with("warm", move |_: Value, _: TaskContext| {
            let (engine, models) = (e4.clone(), m4.clone());
            async move {
                let top = engine
                    .sql(&format!(
                        "SELECT user_id FROM events GROUP BY user_id ORDER BY COUNT(*) DESC, user_id LIMIT {WARM_USERS}"
                    ))
                    .await
                    .map_err(|e| TaskError::new("Warm.QueryFailed", e.to_string()))?;
                let mut users = Vec::new();
                for b in top.batches() {
                    let col = b
                        .column(0)
                        .as_any()
                        .downcast_ref::<arrow::array::Int64Array>()
                        .ok_or_else(|| TaskError::failed("user_id is not Int64"))?;
                    users.extend(col.values().iter().copied());
                }
                blocking("Warm.Failed", move || {
                    let serving = models.serving.read().unwrap_or_else(|p| p.into_inner());
                    let model = serving.as_ref().ok_or("no published model")?;
                    let ids: Vec<Id> = users.iter().map(|&u| Id::from(u)).collect();
                    let lists = models
                        .pool
                        .install(|| model.recommend_many(&ids, &Query::top(10)));
                    let mut warmed = 0;
                    for (u, list) in users.iter().zip(lists) {
                        let Ok(list) = list else { continue };
                        let items: Arc<[i64]> = list
                            .iter()
                            .filter_map(|s| match s.item {
                                Id::Int(i) => Some(i),
                                Id::Str(_) => None,
                            })
                            .collect();
                        models.recs.insert(*u, items).map_err(|e| e.to_string())?;
                        warmed += 1;
                    }
                    Ok(json!({"users": warmed}))
                })
                .await
            }
        });
    Ok(Workflow::builder(machine).tasks(tasks).build()?)
}

/// The held-out interactions of `data` as events for fold-in.
fn dataset_events(data: &Dataset) -> Vec<MlEvent> {
    data.interactions()
        .iter()
        .filter_map(|i| {
            let user = data.users().id(i.user)?;
            let item = data.items().id(i.item)?;
            Some(MlEvent::new(user, item).weight(i.weight))
        })
        .collect()
}

/// The interactions of about `max_users` of the users of `data` (every n-th user).
fn sample_users(data: &Dataset, max_users: usize) -> Result<Dataset, lakehouse_ml::Error> {
    let step = data.num_users().div_ceil(max_users.max(1)).max(1) as u32;
    let mut out = Dataset::new();
    for i in data.interactions() {
        if i.user % step != 0 {
            continue;
        }
        if let (Some(u), Some(it)) = (data.users().id(i.user), data.items().id(i.item)) {
            out.push(u.clone(), it.clone(), i.weight, i.timestamp)?;
        }
    }
    Ok(out)
}
