//! Recommendation models for the Lakehouse: the SageMaker / Personalize layer, in
//! process.
//!
//! Interactions (user, item, weight or event type, time) come from Arrow batches or
//! events into a [`Dataset`] with [`Id`] mapping for integer or string ids and a sparse
//! user-item [`InteractionMatrix`] held both ways. Models implement one
//! [`Recommender`] trait (fit, top-k excluding seen items with an optional filter,
//! similar items, online update):
//!
//! * [`Popularity`]: most popular, or trending with a half-life;
//! * [`ItemItem`]: item-to-item collaborative filtering, cosine or BM25-weighted
//!   co-occurrence, or RP3beta (random-walk transition probabilities with a popularity
//!   penalty);
//! * [`Ease`]: EASE, the closed-form linear item-item model (a dense `items x items`
//!   weight matrix from one regularised inverse, by a blocked parallel Cholesky
//!   factorisation in pure Rust), for catalogues of up to tens of thousands of items;
//! * [`Als`]: implicit-feedback ALS (Hu, Koren, Volinsky) with conjugate-gradient
//!   solves on rayon, deterministic for a seed, closed-form online fold-in (batched,
//!   parallel, in two phases that do not stall serving; a bounded history), exact
//!   top-k serving on contiguous f32 vectors, an HNSW index for large catalogues and
//!   blocked batch scoring of many users;
//! * [`Segments`]: k-means (linfa) user segments with per-segment favourites;
//! * [`ColdStart`]: popularity or segments for unknown users; new items placed by
//!   their attributes ([`ItemAttributes`]).
//!
//! [`evaluate`] measures precision, recall, NDCG, MAP at k and coverage on a random or
//! by-time split; [`read_movielens`] reads MovieLens `u.data`; [`Synthetic`] generates
//! data with planted preferences. Models save and load with a format version
//! ([`Persist`]). Errors are the workspace's one [`Error`] type (from `lakehouse-core`,
//! re-exported here), with an [`ErrorKind`] to branch on.
//!
//! # Quick start
//!
//! ```
//! use lakehouse_ml::{evaluate, Als, Event, Id, Query, Recommender, Synthetic};
//!
//! let data = Synthetic::new(200, 300, 6_000).groups(5).generate()?;
//! let (train, test) = data.dataset.split_random(0.2, 7)?;
//!
//! let mut als = Als::builder().factors(16).iterations(8).seed(1).build()?;
//! als.fit(&train)?;
//! let top = als.recommend(&Id::from(1), &Query::top(10))?;
//! assert_eq!(top.len(), 10);
//!
//! // A new interaction is folded in at once, without retraining.
//! als.update(&[Event::new(1, 3).weight(5.0)])?;
//! let after = als.recommend(&Id::from(1), &Query::top(10))?;
//! assert!(after.iter().all(|s| s.item != Id::from(3)));
//!
//! let m = evaluate(&als, &test, 10)?;
//! assert!(m.precision > 0.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Online updates and serving together
//!
//! A served [`Als`] takes new interactions in two phases, so that requests are not
//! held up while vectors are solved:
//!
//! ```
//! use std::sync::RwLock;
//! use lakehouse_ml::{Als, ErrorKind, Event, Id, Query, Recommender, Synthetic};
//!
//! let data = Synthetic::new(100, 200, 3_000).generate()?;
//! let mut als = Als::builder().factors(8).iterations(4).build()?;
//! als.fit(&data.dataset)?;
//! let serving = RwLock::new(als);
//!
//! let events = [Event::new(1, 3).weight(3.0), Event::new("new user", 4)];
//! // Solve under the read lock: readers keep being served.
//! let update = serving.read().unwrap().prepare_update(&events)?;
//! // Copy the vectors in under a short write lock. If the model changed in between
//! // (another update, a refit), this is a Conflict and nothing changes: prepare again.
//! match serving.write().unwrap().apply_update(update) {
//!     Err(e) if e.kind() == ErrorKind::Conflict => { /* prepare again */ }
//!     other => other?,
//! }
//! let recs = serving.read().unwrap().recommend(&Id::from("new user"), &Query::top(5))?;
//! assert_eq!(recs.len(), 5);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Memory bounds
//!
//! What each model keeps for as long as it lives:
//!
//! * [`Als`]: a vector per user and per item (`factors` f32 each), a norm per item, two
//!   `factors²` Gram matrices, the id maps, a history of at most
//!   [`AlsParams::history_per_user`] items per user (default
//!   [`DEFAULT_HISTORY_PER_USER`], 12 bytes an item; the most recently touched are
//!   kept, older ones dropped), and the items each user was fitted on, for seen-item
//!   exclusion (4 bytes an item, fixed by the fit), so per user the model holds at
//!   most `4 x factors + 12 x history_per_user + 4 x fitted items` bytes plus the id,
//!   however many updates it takes; with an index, the HNSW graph (a few dozen links
//!   per item). Users and items grow with the distinct ids fitted and folded in:
//!   the model does not forget ids (retrain on a recent window to drop users and items
//!   no longer seen). An [`AlsUpdate`] holds a vector and a history row per user of its
//!   batch, and a vector per new item.
//! * [`Ease`]: `items² x 4` bytes of weights (11 MB at 1,682 items, 1.6 GB at 20,000),
//!   and a history as below; its fit holds about three `items² x 8`-byte matrices.
//! * [`Popularity`] and [`ItemItem`]: a score or a neighbour list (at most
//!   `neighbors`) per item, and a history of every (user, item) pair fitted or updated,
//!   without a bound: they are meant to be refitted, not updated for ever.
//! * [`Segments`]: centroids, one assignment per user fitted, `top_items` per segment.
//!
//! # Vector search
//!
//! [`Als::build_index`] builds the crate's own HNSW graph over the item vectors. Inner
//! product is turned into Euclidean distance by one extra coordinate per item (the
//! standard reduction of maximum-inner-product search to nearest neighbours); the
//! bottom layer has twice the links of the others, links are chosen by the
//! neighbour-diversity heuristic, and the largest norm follows items inserted after
//! the build, so a fold-in with a larger norm than any built item is still reached.
//! The crate keeps its own index rather than wrapping `hnsw_rs` or `usearch`: with the
//! denser default graph ([`HnswParams`]) it found 95.6 % of the exact top-10 of 1 M
//! clustered 64-factor items at a p99 of 0.92 ms per query on one core (BENCHMARKS.md),
//! it needs no C++ toolchain or new dependency, and it searches the model's own vectors
//! instead of a copy of them. Those crates were not measured beside it.
//! The index is not saved with the model ([`Persist`]); build it again after a load.
//!
//! # Crate features
//!
//! None. The crate always builds with its pure-Rust dependencies (ndarray and linfa
//! without BLAS).
//!
//! # Runtime
//!
//! Synchronous and CPU-bound: `fit`, [`Als::build_index`], [`Als::prepare_update`] (and
//! so `Als::update`), [`evaluate`] and [`Recommender::recommend_many`] run in parallel on
//! the current rayon pool (the global one unless called inside `ThreadPool::install`). Call them
//! from a blocking context (`tokio::task::spawn_blocking`, or `rayon::spawn` with a
//! oneshot channel), never directly on an async worker; nothing here blocks on a
//! future. A single `recommend` is a few microseconds to milliseconds of CPU and may
//! run anywhere. Models are plain values: share a fitted model behind an `Arc` for
//! reads, and swap in a retrained one by replacing the `Arc`.

mod als;
mod als_builder;
mod coldstart;
mod data;
mod ease;
mod error;
mod eval;
mod history;
mod hnsw;
mod id;
mod itemknn;
mod linalg;
mod movielens;
mod persist;
mod popularity;
mod recommender;
mod rng;
mod segments;
mod sparse;
mod spd;
mod synthetic;

pub use crate::als::{Als, AlsUpdate};
pub use crate::als_builder::{
    AlsBuilder, AlsParams, DEFAULT_FOLD_IN_CG_STEPS, DEFAULT_HISTORY_PER_USER,
};
pub use crate::coldstart::{ColdStart, ItemAttributes};
pub use crate::data::{Columns, Dataset, Event, Interaction};
pub use crate::ease::{DEFAULT_EASE_MAX_ITEMS, Ease};
pub use crate::eval::{Metrics, evaluate};
pub use crate::hnsw::HnswParams;
pub use crate::id::{Id, IdMap};
pub use crate::itemknn::{ItemItem, Similarity};
pub use crate::movielens::{read_movielens, read_movielens_file};
pub use crate::persist::{FORMAT_VERSION, Persist};
pub use crate::popularity::Popularity;
pub use crate::recommender::{ItemFilter, Query, Recommender, Scored};
pub use crate::segments::{SegmentParams, Segments};
pub use crate::sparse::{Csr, InteractionMatrix};
pub use crate::synthetic::{Synthetic, SyntheticData};
pub use lakehouse_core::{Context, Error, ErrorKind, Result};
