//! Integration tests of `lakehouse-cache`.

mod cache;
mod load;
mod topk;
