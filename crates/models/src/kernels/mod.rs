//! Hand-written CPU kernels: the one place (besides the weights crate's memory map) where
//! `unsafe` code is allowed, for `std::arch` SIMD behind run-time feature detection. Each
//! kernel has a portable fallback and is tested against a plain implementation.
//!
//! - [`few_rows`]: `x Wᵀ` for one to a few dozen rows of `x` (decoding), with weights stored as
//!   f32, f16, bf16 or 8-bit blocks.
//! - [`decode_attention`]: attention of one new query row per sequence over a KV cache.

pub mod decode_attention;
pub mod few_rows;
