//! Hand-written CPU kernels on plain `f32` slices: the one crate of safeformers (besides the
//! weights crate's single memory map) where `unsafe` code is allowed, for the `gemm` crate's
//! raw-pointer interface and for `std::arch` SIMD behind run-time feature detection. Every kernel
//! has a portable path and is tested against a plain implementation on random inputs.
//!
//! The API is the boundary: every public function takes slices and shapes, checks that the
//! slices hold what the shapes say ([`KernelError`] otherwise), and never reads or writes outside
//! them. Nothing here knows about tensors, models or files.
//!
//! The encoder's hot loop (see [`crate::bert`]) runs on these:
//! - [`packed_gemm`]: `x·Wᵀ + b (+ residual, GELU)` for many rows, weights packed once at load
//!   (AVX-512F); [`matmul`]: the `gemm` crate on PyTorch's `[out, in]` layout elsewhere.
//! - [`attention`]: the one attention kernel, bidirectional here, reading the packed
//!   `[rows, 3·hidden]` QKV buffer in place; scores, key mask, softmax and weighted sum in one
//!   pass per block of query rows and head; masked keys cost nothing.
//! - [`layer_norm`]: layer norm of rows in place (the residual is already added by the GEMM).
//! - [`activation`]: elementwise activations in place; the erf GELU with an AVX2/FMA path.
//!
//! The decoder's hot loop runs on:
//! - [`few_rows`]: `x Wᵀ` for one to a few dozen rows of `x` (decoding), with weights stored as
//!   f32, f16, bf16 or 8-bit blocks, or in GGUF's block formats ([`quantized_dot`]: `Q4_0`,
//!   `Q4_1` and `Q8_0` interleaved by 16 rows so that register lanes are output columns, the
//!   others row by row; AVX-512 VNNI, AVX2 and portable paths).
//! - [`packed_gemm`] for the layers' products whatever the row count, once the weights are
//!   packed.
//! - [`attention`], causal: a sequence's new queries (prefill or one step) over its KV cache
//!   slabs, read in place ([`attention::HeadRows::head_major`]); [`rms_norm`] and [`rotary`]
//!   embeddings in place.
//!
//! Threads: every kernel splits its work over the rayon pool it is called from (the CLI's
//! `--threads` pool, or rayon's global pool sized by `RAYON_NUM_THREADS` or the core count).

#![allow(unsafe_code)]

pub mod activation;
mod aligned;
pub mod attention;
pub mod few_rows;
pub mod layer_norm;
pub mod matmul;
pub mod memory;
pub mod packed_gemm;
pub mod quantized;
pub mod quantized_dot;
#[cfg(test)]
mod reference;
pub mod rms_norm;
pub mod rotary;

pub use activation::Activation;

/// A kernel was called with slices that do not match the shapes it was given, or asked for a
/// buffer it cannot allocate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kernel {kernel}: {reason}")]
pub struct KernelError {
    /// The kernel that refused its arguments.
    pub kernel: &'static str,
    /// What was wrong.
    pub reason: String,
}

/// The result of a kernel call.
pub type Result<T> = std::result::Result<T, KernelError>;

/// Fails with [`KernelError`] unless `slice` holds exactly `expected` values.
pub(crate) fn check_len(
    kernel: &'static str,
    what: &str,
    slice_len: usize,
    expected: usize,
) -> Result<()> {
    if slice_len == expected {
        Ok(())
    } else {
        Err(KernelError {
            kernel,
            reason: format!("{what} holds {slice_len} values, the shape needs {expected}"),
        })
    }
}

/// Whether the running CPU has AVX2 and FMA (checked once by std, cached).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// Below this many rows, a kernel runs on the calling thread: splitting a short sequence's
/// work costs more in synchronisation than it saves, and the feature-extraction pipeline runs
/// such small batches side by side on the pool's threads instead.
pub const MIN_ROWS_TO_SPLIT: usize = 64;

/// Rows per parallel task so that each task does at least `min_values` values of work.
pub(crate) fn rows_per_task(rows: usize, width: usize, min_values: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let by_threads = rows.div_ceil(threads * 4).max(1);
    let by_work = min_values.div_ceil(width.max(1)).max(1);
    by_threads.max(by_work)
}

/// The largest absolute difference between two equally long slices (test comparisons).
#[cfg(test)]
pub(crate) fn max_abs_diff(got: &[f32], want: &[f32]) -> f32 {
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0f32, f32::max)
}

/// A small deterministic generator (xorshift) of test inputs in [-1, 1).
#[cfg(test)]
pub(crate) fn random_values(seed: u64, count: usize) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
