//! [`AlsParams`], the hyper-parameters of [`Als`], and [`AlsBuilder`], which checks
//! them.

use lakehouse_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::als::Als;

/// Hyper-parameters of [`Als`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AlsParams {
    /// Latent factors per user and item.
    pub factors: usize,
    /// L2 regularisation (lambda), `> 0`.
    pub regularization: f32,
    /// Confidence scaling: an interaction of weight `w` has confidence `1 + alpha * w`.
    pub alpha: f32,
    /// Alternating sweeps (users, then items).
    pub iterations: usize,
    /// Conjugate-gradient steps per row and sweep.
    pub cg_steps: usize,
    /// Seed of the initial factors; training is deterministic for a seed.
    pub seed: u64,
    /// Most items kept per user in the history that fold-in solves over: the most
    /// recently touched (by timestamp when fitted, by arrival in updates). Bounds the
    /// cost of a fold-in solve (`O(history_per_user x factors²)` exact,
    /// `O(history_per_user x factors)` a conjugate-gradient step, see
    /// [`fold_in_cg_steps`](Self::fold_in_cg_steps)) and the memory that updates add
    /// (12 bytes an item).
    /// Training uses all of its dataset regardless, and seen-item exclusion consults
    /// the kept history and every item the user was fitted on (4 bytes an item, fixed
    /// by the fit), so the bound never lets a fitted item be recommended back.
    #[serde(default = "default_history_per_user")]
    pub history_per_user: usize,
    /// Conjugate-gradient steps of an online fold-in solve for a user who already has a
    /// vector; 0 solves every fold-in exactly (Cholesky).
    ///
    /// A fold-in re-solves the user's least-squares system over their kept history
    /// against the fixed item vectors. Exactly, that costs `O(n x factors² +
    /// factors³)` for `n` kept items; warm-started from the user's current vector, each
    /// CG step costs `O(n x factors + factors²)` (the system matrix is never formed),
    /// and since a batch usually changes a handful of a user's items, the current
    /// vector is already close and a few steps land near the exact solution. The
    /// result is approximate: with 3 steps the vector stays close to the exact one
    /// (cosine similarity above 0.99 in the tests, precision at 10 within 0.01 of
    /// exact fold-in on synthetic data), and, as
    /// every later fold-in starts from it, the error does not build up. New users, users
    /// without a vector, and users whose batch touches a quarter or more of their kept
    /// items are always solved exactly. Items new in a batch are always solved exactly.
    /// More than `2 x factors` steps are not taken (CG has converged by then).
    ///
    /// The default is 0 (exact): at 16 factors and 128 kept items the exact solve was
    /// faster (`lakehouse-bench ml-fold-in`, release, one thread: 50.5 K events/s exact
    /// against 36.0 K with 3 CG steps); CG pays off with more factors, where the exact
    /// solve's `factors²` term dominates.
    #[serde(default = "default_fold_in_cg_steps")]
    pub fold_in_cg_steps: usize,
}

/// The default of [`AlsParams::fold_in_cg_steps`].
pub const DEFAULT_FOLD_IN_CG_STEPS: usize = 0;

fn default_fold_in_cg_steps() -> usize {
    DEFAULT_FOLD_IN_CG_STEPS
}

/// The default of [`AlsParams::history_per_user`].
pub const DEFAULT_HISTORY_PER_USER: usize = 128;

fn default_history_per_user() -> usize {
    DEFAULT_HISTORY_PER_USER
}

impl Default for AlsParams {
    fn default() -> Self {
        AlsParams {
            factors: 32,
            regularization: 0.05,
            alpha: 2.0,
            iterations: 15,
            cg_steps: 3,
            seed: 42,
            history_per_user: DEFAULT_HISTORY_PER_USER,
            fold_in_cg_steps: DEFAULT_FOLD_IN_CG_STEPS,
        }
    }
}

/// Builds an [`Als`]; see [`AlsParams`] for the defaults.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct AlsBuilder {
    params: AlsParams,
}

impl AlsBuilder {
    /// A builder that starts from `params`.
    pub(crate) fn from_params(params: AlsParams) -> Self {
        AlsBuilder { params }
    }

    /// Latent factors (default 32).
    pub fn factors(mut self, factors: usize) -> Self {
        self.params.factors = factors;
        self
    }

    /// L2 regularisation (default 0.05).
    pub fn regularization(mut self, regularization: f32) -> Self {
        self.params.regularization = regularization;
        self
    }

    /// Confidence scaling (default 2).
    pub fn alpha(mut self, alpha: f32) -> Self {
        self.params.alpha = alpha;
        self
    }

    /// Alternating sweeps (default 15).
    pub fn iterations(mut self, iterations: usize) -> Self {
        self.params.iterations = iterations;
        self
    }

    /// Conjugate-gradient steps per row (default 3).
    pub fn cg_steps(mut self, cg_steps: usize) -> Self {
        self.params.cg_steps = cg_steps;
        self
    }

    /// Seed of the initial factors (default 42).
    pub fn seed(mut self, seed: u64) -> Self {
        self.params.seed = seed;
        self
    }

    /// Most items kept per user for fold-in and seen-item exclusion (default
    /// [`DEFAULT_HISTORY_PER_USER`], 128); see [`AlsParams::history_per_user`].
    pub fn history_per_user(mut self, items: usize) -> Self {
        self.params.history_per_user = items;
        self
    }

    /// Conjugate-gradient steps of an online fold-in solve (default
    /// [`DEFAULT_FOLD_IN_CG_STEPS`], 0: exact solves); see
    /// [`AlsParams::fold_in_cg_steps`].
    pub fn fold_in_cg_steps(mut self, steps: usize) -> Self {
        self.params.fold_in_cg_steps = steps;
        self
    }

    /// The model, untrained.
    ///
    /// Errors with [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for zero
    /// factors, zero CG steps, a zero `history_per_user`, or a regularisation or alpha that is not finite and
    /// positive (alpha may be 0).
    pub fn build(self) -> Result<Als> {
        let p = self.params;
        if p.factors == 0 || p.factors > 4096 {
            return Err(Error::invalid("factors must be in 1..=4096"));
        }
        if p.history_per_user == 0 {
            return Err(Error::invalid("history_per_user must be at least 1"));
        }
        if p.cg_steps == 0 {
            return Err(Error::invalid("cg_steps must be at least 1"));
        }
        if !(p.regularization.is_finite() && p.regularization > 0.0) {
            return Err(Error::invalid("regularization must be finite and > 0"));
        }
        if !(p.alpha.is_finite() && p.alpha >= 0.0) {
            return Err(Error::invalid("alpha must be finite and >= 0"));
        }
        Ok(Als::untrained(p))
    }
}
