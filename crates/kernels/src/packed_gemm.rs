//! `output += input·Wᵀ` with `W` packed once, at load, into the layout an AVX-512 micro-kernel
//! reads: the encoder's dense layers on CPUs with AVX-512F.
//!
//! Why our own: the `gemm` crate repacks the weights on every call and its x86 kernels on
//! stable Rust are AVX2 (8-lane) ones; on this machine's EPYC it reached ~80% of the FMA peak on
//! BERT shapes, and less on the short products of one sentence. Packing once and using the 32
//! vector registers for a 14×32 tile of accumulators gets closer (see `gemm_speed` example).
//!
//! Layout. The output columns (rows of `W`) are cut into panels of [`PANEL_WIDTH`] = 32; panel
//! `p` stores, for every input index `k` in order, the 32 weights `W[32p .. 32p+32, k]`
//! (zeros past `out_features`), so the micro-kernel reads each panel front to back as two
//! 64-byte vectors per `k`. Panels are 64-byte aligned.
//!
//! Loop order (one thread): the input is first copied once, tile by tile of [`TILE_ROWS`]
//! rows, `k`-major (one broadcast stream for the kernel instead of fourteen). The input
//! dimension is cut into blocks of [`DEPTH_BLOCK`]; within one, panels are taken in groups
//! whose weights fit in the L2 cache, and every tile of input rows runs against every panel of
//! the group, adding onto what `output` held (bias, residual).
//!
//! Threads: with many rows, each takes whole tiles of rows; with few (a sentence or two), each
//! takes a range of panels (output columns), so it reads only its share of the weights, which
//! then come from memory for a couple of tiles of rows.

use std::cell::RefCell;
use std::ops::Range;

use rayon::prelude::*;

use super::aligned::AlignedValues;
use super::check_len;
use crate::{KernelError, Result};

/// Output columns per panel: two 16-lane vectors.
const PANEL_WIDTH: usize = 32;
/// Rows per micro-kernel tile: 14 rows × 2 vectors = 28 accumulators, leaving 4 of the 32
/// vector registers for the two weight vectors.
const TILE_ROWS: usize = 14;
/// Fewest rows split over threads: one tile. Even one short sentence's projection (~0.1 ms on
/// one core) gains from handing half its panels to the other thread (measured on MiniLM at
/// batch 1, where sentences also run side by side: the idle thread takes the other half).
const MIN_ROWS_TO_SPLIT: usize = TILE_ROWS;
/// How many steps of `k` ahead the kernel prefetches its weights: 4 KiB, a page ahead (the
/// hardware prefetchers stop at page boundaries; DRAM latency is ~100 ns).
const PREFETCH_STEPS: usize = 32;
/// Rows packed and multiplied at a time (36 tiles: MiniLM's half batch of 16 sentences fits in
/// one chunk; a 32 × 512-token batch does not allocate a 100 MB packing buffer).
const CHUNK_ROWS: usize = 36 * TILE_ROWS;
/// Fewest weights (`in · out`) for which fewer than [`MIN_ROWS_TO_SPLIT`] rows (a decoding
/// step) are still split over threads by panels: a 576 × 576 projection (1.3 MB read from
/// memory per call) gains from two threads streaming their halves.
const MIN_WEIGHTS_TO_SPLIT: usize = 1 << 16;
/// Fewest tiles of rows per thread for splitting by rows rather than by panels.
const MIN_TILES_PER_THREAD: usize = 4;
/// Weight bytes per group of panels: half of the 1 MiB L2, the rest for the input blocks.
const GROUP_BYTES: usize = 640 * 1024;
/// Input values per pass over a tile: 14 rows × 384 values of input (21 KiB) stay in the
/// 32 KiB L1 cache while the kernel streams the weights past them.
const DEPTH_BLOCK: usize = 768;
/// f32 values per 64 bytes (the alignment of each panel).
const ALIGN_VALUES: usize = 16;

/// A linear layer's weights packed for [`PackedWeights::accumulate`].
#[derive(Clone)]
pub struct PackedWeights {
    /// The panels, `panel_count · in · 32` values, 64-byte aligned (on huge pages when
    /// large: see [`AlignedValues`]).
    panels: AlignedValues,
    in_features: usize,
    out_features: usize,
    panel_count: usize,
}

impl std::fmt::Debug for PackedWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedWeights")
            .field("in_features", &self.in_features)
            .field("out_features", &self.out_features)
            .finish_non_exhaustive()
    }
}

/// What [`PackedWeights::multiply`] adds the product to.
#[derive(Debug, Clone, Copy)]
pub enum Start<'a> {
    /// What `output` holds: `output += x·Wᵀ`.
    Output,
    /// A bias per output column, whatever `output` held: `output = x·Wᵀ + b`.
    Bias(&'a [f32]),
    /// Both: `output += x·Wᵀ + b` (a residual in `output`).
    OutputAndBias(&'a [f32]),
}

/// What [`PackedWeights::multiply`] applies to the finished sums before storing them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epilogue {
    /// Nothing.
    None,
    /// The exact (erf) GELU, the same values as [`super::activation::activation_in_place`].
    GeluErf,
}

/// Whether this CPU runs the packed kernel (AVX-512F, checked once by std, cached).
pub fn is_available() -> bool {
    has_avx512()
}

/// Whether this CPU has AVX-512F (checked once by std, cached).
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl PackedWeights {
    /// Packs a PyTorch `nn.Linear` weight, `[out_features, in_features]` row-major.
    pub fn pack(weight_out_in: &[f32], in_features: usize, out_features: usize) -> Result<Self> {
        const KERNEL: &str = "PackedWeights::pack";
        let expected = in_features
            .checked_mul(out_features)
            .ok_or_else(|| KernelError {
                kernel: KERNEL,
                reason: format!("{out_features}×{in_features} weights overflow"),
            })?;
        check_len(KERNEL, "weight", weight_out_in.len(), expected)?;
        let panel_count = out_features.div_ceil(PANEL_WIDTH);
        let panel_len = in_features * PANEL_WIDTH;
        let mut storage = AlignedValues::zeroed(panel_count * panel_len)?;
        let panels = storage.as_mut_slice();
        for (panel_index, panel) in panels.chunks_exact_mut(panel_len.max(1)).enumerate() {
            let first_out = panel_index * PANEL_WIDTH;
            let outs = PANEL_WIDTH.min(out_features - first_out);
            for lane in 0..outs {
                let row_start = (first_out + lane) * in_features;
                let row = weight_out_in
                    .get(row_start..row_start + in_features)
                    .unwrap_or_default();
                for (k, &value) in row.iter().enumerate() {
                    if let Some(slot) = panel.get_mut(k * PANEL_WIDTH + lane) {
                        *slot = value;
                    }
                }
            }
        }
        Ok(PackedWeights {
            panels: storage,
            in_features,
            out_features,
            panel_count,
        })
    }

    /// Width of the input rows.
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Width of the output rows.
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// `output += input·Wᵀ` for `rows` rows (`input` `[rows, in]`, `output` `[rows, out]`),
    /// split over the calling rayon pool from [`MIN_ROWS_TO_SPLIT`] rows on.
    /// Fails with [`KernelError`] on wrong lengths or a CPU without AVX-512F.
    pub fn accumulate(&self, input: &[f32], rows: usize, output: &mut [f32]) -> Result<()> {
        self.multiply(input, rows, output, Start::Output, Epilogue::None)
    }

    /// `output = then(start + input·Wᵀ)`, where `start` is what `output` holds, a bias per
    /// column, or both added (see [`Start`]), and `then` an activation applied to the
    /// accumulators before they are stored; neither costs a pass over the output.
    pub fn multiply(
        &self,
        input: &[f32],
        rows: usize,
        output: &mut [f32],
        start: Start<'_>,
        then: Epilogue,
    ) -> Result<()> {
        const KERNEL: &str = "PackedWeights::multiply";
        let (k, n) = (self.in_features, self.out_features);
        check_len(KERNEL, "input", input.len(), rows * k)?;
        check_len(KERNEL, "output", output.len(), rows * n)?;
        if let Start::Bias(bias) | Start::OutputAndBias(bias) = start {
            check_len(KERNEL, "bias", bias.len(), n)?;
        }
        if !is_available() {
            return Err(KernelError {
                kernel: KERNEL,
                reason: "this CPU has no AVX-512F".into(),
            });
        }
        if rows == 0 || n == 0 || k == 0 {
            return Ok(());
        }
        let threads = rayon::current_num_threads();
        if threads < 2 || (rows < MIN_ROWS_TO_SPLIT && k * n < MIN_WEIGHTS_TO_SPLIT) {
            with_packing_buffer(|buffer| {
                self.accumulate_panels(input, rows, output, buffer, 1, (start, then));
            });
        } else if rows >= threads * MIN_TILES_PER_THREAD * TILE_ROWS {
            // Many rows: each thread takes whole tiles of rows (and packs them itself) and
            // runs every panel, reusing each group of weights over all its tiles.
            let rows_per_chunk = rows.div_ceil(threads).div_ceil(TILE_ROWS) * TILE_ROWS;
            output
                .par_chunks_mut(rows_per_chunk * n)
                .zip(input.par_chunks(rows_per_chunk * k))
                .for_each(|(output, input)| {
                    with_packing_buffer(|buffer| {
                        self.accumulate_panels(
                            input,
                            input.len() / k,
                            output,
                            buffer,
                            1,
                            (start, then),
                        );
                    });
                });
        } else {
            // Few rows: one contiguous range of panels per thread, so each thread reads only
            // its share of the weights (for one short sentence they come from memory and
            // serve a couple of tiles).
            with_packing_buffer(|buffer| {
                self.accumulate_panels(input, rows, output, buffer, threads, (start, then));
            });
        }
        Ok(())
    }

    /// Packs the input (at most [`CHUNK_ROWS`] rows at a time, so the packing buffer stays a
    /// few megabytes whatever the batch), then runs the panels split into `parts` contiguous
    /// ranges, one task each on the calling pool (all on this thread for one part). Lengths
    /// already checked, AVX-512F present.
    fn accumulate_panels(
        &self,
        input: &[f32],
        rows: usize,
        output: &mut [f32],
        packed_input: &mut Vec<f32>,
        parts: usize,
        ends: (Start<'_>, Epilogue),
    ) {
        let (k, n) = (self.in_features, self.out_features);
        let parts = parts.min(self.panel_count).max(1);
        for (input, output) in input
            .chunks(CHUNK_ROWS * k)
            .zip(output.chunks_mut(CHUNK_ROWS * n))
            .take(rows.div_ceil(CHUNK_ROWS))
        {
            let chunk_rows = input.len() / k.max(1);
            pack_input(input, k, packed_input);
            let packed_input: &[f32] = packed_input;
            let output = SharedOutput {
                start: output.as_mut_ptr(),
                len: output.len(),
            };
            if parts == 1 {
                self.run_panels(packed_input, chunk_rows, 0..self.panel_count, &output, ends);
                continue;
            }
            (0..parts).into_par_iter().for_each(|part| {
                let panels = part * self.panel_count / parts..(part + 1) * self.panel_count / parts;
                self.run_panels(packed_input, chunk_rows, panels, &output, ends);
            });
        }
    }

    /// The columns of `panels` for every row of `output` (`[rows, n]`).
    fn run_panels(
        &self,
        packed_input: &[f32],
        rows: usize,
        panels: Range<usize>,
        output: &SharedOutput,
        (start, then): (Start<'_>, Epilogue),
    ) {
        let (k, n) = (self.in_features, self.out_features);
        let panel_len = k * PANEL_WIDTH;
        let weights = self.panels.as_slice();
        let panel_count = panels.len();
        for depth_start in (0..k).step_by(DEPTH_BLOCK) {
            let depth = DEPTH_BLOCK.min(k - depth_start);
            // As many panels as fit in GROUP_BYTES, evened out over the groups (12 panels
            // that fit 10 at a time go 6 + 6).
            let fitting = (GROUP_BYTES / (depth * PANEL_WIDTH * 4)).max(1);
            let group_panels = panel_count
                .div_ceil(panel_count.div_ceil(fitting).max(1))
                .max(1);
            for group_start in panels.clone().step_by(group_panels) {
                let group_end = (group_start + group_panels).min(panels.end);
                for first_row in (0..rows).step_by(TILE_ROWS) {
                    let tile_rows = TILE_ROWS.min(rows - first_row);
                    let block_start = first_row * k + depth_start * tile_rows;
                    let block = packed_input
                        .get(block_start..block_start + depth * tile_rows)
                        .unwrap_or_default();
                    for panel_index in group_start..group_end {
                        let first_col = panel_index * PANEL_WIDTH;
                        let cols = PANEL_WIDTH.min(n - first_col);
                        let panel_start = panel_index * panel_len + depth_start * PANEL_WIDTH;
                        let panel = weights
                            .get(panel_start..panel_start + depth * PANEL_WIDTH)
                            .unwrap_or_default();
                        let out_start = first_row * n + first_col;
                        let out_end = (first_row + tile_rows - 1) * n + first_col + cols;
                        if out_end > output.len {
                            continue;
                        }
                        // The first depth block starts from `start`, later ones from
                        // what the earlier ones wrote.
                        let (load_output, bias) = match start {
                            _ if depth_start > 0 => (true, None),
                            Start::Output => (true, None),
                            Start::Bias(bias) => (false, Some(bias)),
                            Start::OutputAndBias(bias) => (true, Some(bias)),
                        };
                        let tile = Tile {
                            block,
                            panel,
                            depth,
                            load_output,
                            bias: bias.and_then(|bias| bias.get(first_col..first_col + cols)),
                            // The activation goes on the finished sums only.
                            gelu: then == Epilogue::GeluErf && depth_start + depth == k,
                            // SAFETY: out_start ≤ out_end ≤ len: inside the output buffer.
                            out: unsafe { output.start.add(out_start) },
                            out_stride: n,
                            cols,
                        };
                        tile.run(tile_rows);
                    }
                }
            }
        }
    }
}

/// The output buffer shared by the threads of one [`PackedWeights::accumulate`] call, each of
/// which writes only the columns of its own panels.
struct SharedOutput {
    start: *mut f32,
    len: usize,
}

// SAFETY: the pointer comes from the `&mut [f32]` that `accumulate_with` holds for the whole
// parallel section; threads write disjoint column ranges (their panels) and nobody reads what
// another thread writes.
unsafe impl Sync for SharedOutput {}

/// Runs `f` with this thread's packing buffer, reused from call to call (a fresh
/// multi-megabyte buffer would page-fault on every call).
fn with_packing_buffer(f: impl FnOnce(&mut Vec<f32>)) {
    thread_local! {
        static PACKED_INPUT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }
    PACKED_INPUT.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffer) => f(&mut buffer),
        Err(_) => f(&mut Vec::new()),
    });
}

/// Copies `input` (`[rows, k]` row-major) into `packed` tile by tile: the rows of each tile
/// of [`TILE_ROWS`] (fewer in the last) stored `k`-major, `packed[first_row·k + d·tile_rows
/// + r] = input[first_row + r, d]`, so the kernel reads one stream whatever the depth block.
fn pack_input(input: &[f32], k: usize, packed: &mut Vec<f32>) {
    // Every value is overwritten below: grow the buffer, never clear it (zeroing megabytes
    // per call cost 5% of an embedding run).
    if packed.len() < input.len() {
        packed.resize(input.len(), 0.0);
    }
    let Some(packed) = packed.get_mut(..input.len()) else {
        return;
    };
    let k = k.max(1);
    for (tile_in, tile_out) in input
        .chunks(TILE_ROWS * k)
        .zip(packed.chunks_mut(TILE_ROWS * k))
    {
        if tile_in.len() == TILE_ROWS * k {
            let done = pack_full_tile_avx512(tile_in, k, tile_out);
            pack_tile::<TILE_ROWS>(tile_in, k, done, tile_out);
        } else {
            let tile_rows = (tile_in.len() / k).max(1);
            for (d, slots) in tile_out.chunks_exact_mut(tile_rows).enumerate() {
                for (r, slot) in slots.iter_mut().enumerate() {
                    *slot = tile_in.get(r * k + d).copied().unwrap_or(0.0);
                }
            }
        }
    }
}

/// One full tile from column `first` on: output written front to back, `R` rows read side by
/// side.
fn pack_tile<const R: usize>(tile_in: &[f32], k: usize, first: usize, tile_out: &mut [f32]) {
    let rows: [&[f32]; R] =
        std::array::from_fn(|r| tile_in.get(r * k..(r + 1) * k).unwrap_or_default());
    for (d, slots) in tile_out.chunks_exact_mut(R).enumerate().skip(first) {
        for (slot, row) in slots.iter_mut().zip(&rows) {
            *slot = row.get(d).copied().unwrap_or(0.0);
        }
    }
}

/// Packs the first `16·⌊k/16⌋` columns of a full tile ([`TILE_ROWS`] rows of `k`) with
/// 16×16 transposes in registers (four times fewer instructions than value by value, which
/// showed as 4% of a batch-1 embedding run); returns how many columns it packed.
fn pack_full_tile_avx512(tile_in: &[f32], k: usize, tile_out: &mut [f32]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if is_available() && tile_in.len() == TILE_ROWS * k && tile_out.len() == tile_in.len() {
        // SAFETY: AVX-512F present; both buffers hold exactly TILE_ROWS·k values (checked).
        return unsafe { transpose_tile_avx512(tile_in, k, tile_out) };
    }
    0
}

/// # Safety
/// AVX-512F present; `tile_in` and `tile_out` hold `TILE_ROWS·k` values each.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_tile_avx512(tile_in: &[f32], k: usize, tile_out: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    const STORE_MASK: __mmask16 = (1 << TILE_ROWS) - 1;
    let input = tile_in.as_ptr();
    let output = tile_out.as_mut_ptr();
    let chunks = k / 16;
    for chunk in 0..chunks {
        let column = chunk * 16;
        // Rows 14 and 15 of the 16×16 block are zeros (not stored).
        let mut a = [_mm512_setzero_ps(); 16];
        for (r, row) in a.iter_mut().take(TILE_ROWS).enumerate() {
            // SAFETY: row r < TILE_ROWS, columns column..column+16 ≤ k: inside tile_in.
            *row = unsafe { _mm512_loadu_ps(input.add(r * k + column)) };
        }
        // Interleave row pairs within 128-bit lanes, then pairs of pairs: u[4g + c] lane l
        // holds rows 4g..4g+4 at column 4l + c.
        let mut t = [_mm512_setzero_ps(); 16];
        for (out, rows) in t.chunks_exact_mut(2).zip(a.chunks_exact(2)) {
            if let ([low, high], [first, second]) = (out, rows) {
                *low = _mm512_unpacklo_ps(*first, *second);
                *high = _mm512_unpackhi_ps(*first, *second);
            }
        }
        let mut u = [_mm512_setzero_ps(); 16];
        for (out, pairs) in u.chunks_exact_mut(4).zip(t.chunks_exact(4)) {
            if let ([u0, u1, u2, u3], [t0, t1, t2, t3]) = (out, pairs) {
                *u0 = _mm512_shuffle_ps::<0x44>(*t0, *t2);
                *u1 = _mm512_shuffle_ps::<0xEE>(*t0, *t2);
                *u2 = _mm512_shuffle_ps::<0x44>(*t1, *t3);
                *u3 = _mm512_shuffle_ps::<0xEE>(*t1, *t3);
            }
        }
        // A 4×4 transpose of 128-bit lanes per c: column 4l + c = lane l of u[c], u[4 + c],
        // u[8 + c], u[12 + c].
        let [
            u0,
            u1,
            u2,
            u3,
            u4,
            u5,
            u6,
            u7,
            u8,
            u9,
            u10,
            u11,
            u12,
            u13,
            u14,
            u15,
        ] = u;
        let by_column = [
            [u0, u4, u8, u12],
            [u1, u5, u9, u13],
            [u2, u6, u10, u14],
            [u3, u7, u11, u15],
        ];
        for (c, [rows_0_3, rows_4_7, rows_8_11, rows_12_15]) in by_column.into_iter().enumerate() {
            let v0 = _mm512_shuffle_f32x4::<0x88>(rows_0_3, rows_4_7);
            let v1 = _mm512_shuffle_f32x4::<0xDD>(rows_0_3, rows_4_7);
            let v2 = _mm512_shuffle_f32x4::<0x88>(rows_8_11, rows_12_15);
            let v3 = _mm512_shuffle_f32x4::<0xDD>(rows_8_11, rows_12_15);
            let columns = [
                (c, _mm512_shuffle_f32x4::<0x88>(v0, v2)),
                (4 + c, _mm512_shuffle_f32x4::<0x88>(v1, v3)),
                (8 + c, _mm512_shuffle_f32x4::<0xDD>(v0, v2)),
                (12 + c, _mm512_shuffle_f32x4::<0xDD>(v1, v3)),
            ];
            for (offset, values) in columns {
                // SAFETY: column + offset < k, so its TILE_ROWS values lie inside tile_out.
                unsafe {
                    _mm512_mask_storeu_ps(
                        output.add((column + offset) * TILE_ROWS),
                        STORE_MASK,
                        values,
                    );
                }
            }
        }
    }
    chunks * 16
}

/// One micro-kernel call: `out[r, c] += Σ_k block[k·R + r] · panel[k·32 + c]` for `R` rows
/// and `cols` ≤ 32 columns, `out` starting at the tile's first value with row stride
/// `out_stride`.
struct Tile<'a> {
    block: &'a [f32],
    panel: &'a [f32],
    depth: usize,
    /// Whether the accumulators start from `out` (else from zero).
    load_output: bool,
    /// Added to the accumulators' start: the bias of the tile's `cols` columns.
    bias: Option<&'a [f32]>,
    /// Whether the exact GELU is applied to the accumulators before they are stored.
    gelu: bool,
    /// The tile's first output value; `(R-1)·out_stride + cols` values from here are
    /// the caller's to write (see [`SharedOutput`]).
    out: *mut f32,
    out_stride: usize,
    cols: usize,
}

impl Tile<'_> {
    /// Dispatches to the kernel compiled for `rows` rows (1..=14).
    fn run(self, rows: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            let ok = self.block.len() == rows * self.depth
                && self.panel.len() == self.depth * PANEL_WIDTH
                && self.cols <= PANEL_WIDTH
                && self.cols > 0
                && rows > 0
                && self.bias.is_none_or(|bias| bias.len() == self.cols)
                && self.panel.as_ptr().align_offset(ALIGN_VALUES * 4) == 0
                && is_available();
            if !ok {
                return;
            }
            // SAFETY: checked just above: the block holds `rows·depth` values, the panel
            // `depth·32` (64-byte aligned, as the kernel's aligned loads need), and the CPU
            // has AVX-512F; `run_panels` checked that `out` is followed by the
            // `(rows-1)·out_stride + cols` values the kernel touches.
            unsafe {
                match rows {
                    1 => tile_avx512::<1>(&self),
                    2 => tile_avx512::<2>(&self),
                    3 => tile_avx512::<3>(&self),
                    4 => tile_avx512::<4>(&self),
                    5 => tile_avx512::<5>(&self),
                    6 => tile_avx512::<6>(&self),
                    7 => tile_avx512::<7>(&self),
                    8 => tile_avx512::<8>(&self),
                    9 => tile_avx512::<9>(&self),
                    10 => tile_avx512::<10>(&self),
                    11 => tile_avx512::<11>(&self),
                    12 => tile_avx512::<12>(&self),
                    13 => tile_avx512::<13>(&self),
                    _ => tile_avx512::<TILE_ROWS>(&self),
                }
            }
        }
    }
}

/// The micro-kernel: `R` rows × 32 columns of accumulators in registers, starting from `out`
/// (masked to `cols`) and/or the bias, two aligned weight loads and `2R` FMAs per `k`, stored
/// back masked.
///
/// # Safety
/// AVX-512F present; `tile.block` holds `R·depth` values, `tile.panel` `depth·32` values
/// starting 64-byte aligned, and `tile.out` is followed by `(R-1)·out_stride + cols` values
/// that no other thread reads or writes during the call.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512<const R: usize>(tile: &Tile<'_>) {
    use std::arch::x86_64::*;
    let low_mask: __mmask16 = if tile.cols >= 16 {
        0xFFFF
    } else {
        ((1u32 << tile.cols) - 1) as u16
    };
    let high_mask: __mmask16 = if tile.cols >= 32 {
        0xFFFF
    } else if tile.cols <= 16 {
        0
    } else {
        ((1u32 << (tile.cols - 16)) - 1) as u16
    };
    let out = tile.out;
    let (bias_low, bias_high) = match tile.bias {
        // SAFETY: the bias holds `cols` values; masked-off lanes are not read.
        Some(bias) => unsafe {
            (
                _mm512_maskz_loadu_ps(low_mask, bias.as_ptr()),
                if high_mask != 0 {
                    _mm512_maskz_loadu_ps(high_mask, bias.as_ptr().add(16))
                } else {
                    _mm512_setzero_ps()
                },
            )
        },
        None => (_mm512_setzero_ps(), _mm512_setzero_ps()),
    };
    let mut acc = [[bias_low, bias_high]; R];
    if tile.load_output {
        for (r, pair) in acc.iter_mut().enumerate() {
            // SAFETY: row r starts at r·out_stride, inside `out`; masked-off lanes are not
            // read.
            unsafe {
                let row = out.add(r * tile.out_stride);
                pair[0] = _mm512_add_ps(_mm512_maskz_loadu_ps(low_mask, row), pair[0]);
                if high_mask != 0 {
                    pair[1] = _mm512_add_ps(_mm512_maskz_loadu_ps(high_mask, row.add(16)), pair[1]);
                }
            }
        }
    }
    let block = tile.block.as_ptr();
    let panel = tile.panel.as_ptr();
    for k in 0..tile.depth {
        // SAFETY: k < depth: the panel holds 32 values per k (aligned: 128-byte steps from an
        // aligned start), the block R values per k.
        unsafe {
            let ahead = panel.wrapping_add((k + PREFETCH_STEPS) * PANEL_WIDTH);
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(16).cast());
            let weights_low = _mm512_load_ps(panel.add(k * PANEL_WIDTH));
            let weights_high = _mm512_load_ps(panel.add(k * PANEL_WIDTH + 16));
            let inputs = block.add(k * R);
            for (r, pair) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*inputs.add(r));
                pair[0] = _mm512_fmadd_ps(x, weights_low, pair[0]);
                pair[1] = _mm512_fmadd_ps(x, weights_high, pair[1]);
            }
        }
    }
    if tile.gelu {
        for pair in &mut acc {
            for value in pair.iter_mut() {
                *value = super::activation::gelu_erf_avx512(*value);
            }
        }
    }
    for (r, pair) in acc.iter().enumerate() {
        // SAFETY: as for the loads; no other thread touches these columns of these rows.
        unsafe {
            let row = out.add(r * tile.out_stride);
            _mm512_mask_storeu_ps(row, low_mask, pair[0]);
            if high_mask != 0 {
                _mm512_mask_storeu_ps(row.add(16), high_mask, pair[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing, clippy::unwrap_used)]
    use super::*;
    use crate::random_values;

    /// `out + input·Wᵀ` in f64.
    fn plain(input: &[f32], weight: &[f32], out: &[f32], rows: usize, k: usize) -> Vec<f64> {
        let n = out.len() / rows.max(1);
        let mut result = vec![0.0f64; rows * n];
        for r in 0..rows {
            for o in 0..n {
                let mut sum = f64::from(out[r * n + o]);
                for i in 0..k {
                    sum += f64::from(input[r * k + i]) * f64::from(weight[o * k + i]);
                }
                result[r * n + o] = sum;
            }
        }
        result
    }

    #[test]
    fn packed_matches_plain_on_every_edge() {
        if !is_available() {
            eprintln!("no AVX-512F on this CPU: the packed kernel is not used here");
            return;
        }
        // Rows 1..=14 hit every tile kernel; 15/29/100 mix full and partial tiles (and split
        // over threads); columns 1, 16, 17, 31, 33, 1152 hit the masks; k = 1 and 1536 the
        // depth extremes.
        let shapes = [
            (1, 1, 1),
            (3, 7, 16),
            (5, 384, 17),
            (14, 33, 31),
            (15, 64, 33),
            (29, 384, 1152),
            (100, 1536, 40),
            (130, 96, 1536),
            // More than CHUNK_ROWS rows per thread: packed and multiplied in two chunks.
            (1100, 40, 70),
        ];
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let one_thread = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let mut worst_relative = 0.0f64;
        for (seed, &(rows, k, n)) in shapes.iter().enumerate() {
            let seed = seed as u64 * 10;
            let input = random_values(seed + 1, rows * k);
            let weight = random_values(seed + 2, n * k);
            let start = random_values(seed + 3, rows * n);
            let packed = PackedWeights::pack(&weight, k, n).unwrap();
            let mut got = start.clone();
            pool.install(|| packed.accumulate(&input, rows, &mut got))
                .unwrap();
            let want = plain(&input, &weight, &start, rows, k);
            // Each output value is one chain of FMAs in k order, whoever computes it: one
            // thread gives the same bits as two.
            let mut alone = start.clone();
            one_thread
                .install(|| packed.accumulate(&input, rows, &mut alone))
                .unwrap();
            assert_eq!(alone, got, "{rows}x{k}x{n}: one thread vs two");
            // A bias in the kernel's start gives what adding it beforehand gives, bit for
            // bit; with `Start::Bias`, what the output held (NaN here) is never read.
            let bias = random_values(seed + 4, n);
            let start_plus_bias: Vec<f32> = start
                .chunks_exact(n)
                .flat_map(|row| row.iter().zip(&bias).map(|(s, b)| s + b))
                .collect();
            let mut added_before = start_plus_bias.clone();
            pool.install(|| packed.accumulate(&input, rows, &mut added_before))
                .unwrap();
            let mut with_bias = start.clone();
            pool.install(|| {
                packed.multiply(
                    &input,
                    rows,
                    &mut with_bias,
                    Start::OutputAndBias(&bias),
                    Epilogue::None,
                )
            })
            .unwrap();
            assert_eq!(with_bias, added_before, "{rows}x{k}x{n}");
            let bias_rows: Vec<f32> = (0..rows).flat_map(|_| bias.iter().copied()).collect();
            let mut only_bias_before = bias_rows.clone();
            pool.install(|| packed.accumulate(&input, rows, &mut only_bias_before))
                .unwrap();
            let mut only_bias = vec![f32::NAN; rows * n];
            pool.install(|| {
                packed.multiply(
                    &input,
                    rows,
                    &mut only_bias,
                    Start::Bias(&bias),
                    Epilogue::None,
                )
            })
            .unwrap();
            assert_eq!(only_bias, only_bias_before, "{rows}x{k}x{n}");
            // Error relative to Σ|x·w| + |out|, the scale of the rounding.
            for r in 0..rows {
                for o in 0..n {
                    let mut scale = f64::from(start[r * n + o].abs());
                    for i in 0..k {
                        scale += f64::from((input[r * k + i] * weight[o * k + i]).abs());
                    }
                    let error = (f64::from(got[r * n + o]) - want[r * n + o]).abs();
                    worst_relative = worst_relative.max(error / scale.max(1e-30));
                }
            }
        }
        eprintln!("packed GEMM: worst error {worst_relative:.2e} of Σ|x·w|");
        // f32 accumulation: ~1e-7 per term at worst in order; 1e-6 is far above measured.
        assert!(worst_relative < 1e-6, "{worst_relative}");
    }

    #[test]
    fn wrong_lengths_are_errors() {
        assert!(PackedWeights::pack(&[1.0; 5], 2, 3).is_err());
        let packed = PackedWeights::pack(&[1.0; 6], 2, 3).unwrap();
        let mut out = vec![0.0; 5];
        assert!(matches!(
            packed.accumulate(&[1.0; 4], 2, &mut out),
            Err(KernelError { .. })
        ));
        let mut out = vec![0.0; 6];
        assert!(matches!(
            packed.multiply(
                &[1.0; 4],
                2,
                &mut out,
                Start::Bias(&[0.0; 2]),
                Epilogue::None
            ),
            Err(KernelError { .. })
        ));
    }
}
