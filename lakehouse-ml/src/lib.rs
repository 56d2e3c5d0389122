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
//!   co-occurrence;
//! * [`Als`]: implicit-feedback ALS (Hu, Koren, Volinsky) with conjugate-gradient
//!   solves on rayon, deterministic for a seed, closed-form online fold-in, exact
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
//! # Crate features
//!
//! None. The crate always builds with its pure-Rust dependencies (ndarray and linfa
//! without BLAS).
//!
//! # Runtime
//!
//! Synchronous and CPU-bound: `fit`, [`Als::build_index`], [`evaluate`] and
//! [`Recommender::recommend_many`] run in parallel on the global rayon pool. Call them
//! from a blocking context (`tokio::task::spawn_blocking`, or `rayon::spawn` with a
//! oneshot channel), never directly on an async worker; nothing here blocks on a
//! future. A single `recommend` is a few microseconds to milliseconds of CPU and may
//! run anywhere. Models are plain values: share a fitted model behind an `Arc` for
//! reads, and swap in a retrained one by replacing the `Arc`.

mod als;
mod als_builder;
mod coldstart;
mod data;
mod error;
mod eval;
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
mod synthetic;

pub use crate::als::Als;
pub use crate::als_builder::{AlsBuilder, AlsParams};
pub use crate::coldstart::{ColdStart, ItemAttributes};
pub use crate::data::{Columns, Dataset, Event, Interaction};
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
