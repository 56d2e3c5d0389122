//! Integration tests of `lakehouse-cache`.

mod cache;
mod load;
#[cfg(feature = "redis")]
mod redis;
mod topk;
