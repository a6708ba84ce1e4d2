//! The 32-value block formats `Q4_0`, `Q4_1` and `Q8_0` with [`GROUP`] weight rows interleaved,
//! so that the lanes of one register are output columns: a decoding step's products run as
//! integer multiply-adds with no horizontal sums and one scale conversion per 16 columns.
//!
//! GGUF stores a matrix row after row, each row a run of blocks (`[d, (m,) 16 or 32 value
//! bytes]`). Here, per group of 16 rows and per block of 32 inputs, one segment of the same size
//! holds the 16 rows' `d` (f16), then `Q4_1`'s 16 `m`, then the values reordered: value register
//! `s` (of 16) holds, for each row `c`, the pair `u[c][2s]`, `u[c][2s + 1]` as 16-bit lanes, so
//! `madd`/`vpdpwssd` against the activation pair `(q[2s], q[2s + 1])` broadcast adds one pair's
//! product to lane `c`. Values are stored as bytes that widen straight into those registers:
//! - 4-bit: byte `i` of chunk `t` (8 chunks of 32) is `u[i / 2][4t + i % 2]` in its low nibble
//!   and `u[i / 2][4t + 2 + i % 2]` in its high one: one widening gives registers `2t` and
//!   `2t + 1` by a mask and a shift.
//! - 8-bit: byte `i` of chunk `s` (16 chunks of 32) is `u[i / 2][2s + i % 2]`, sign-extended.
//!
//! Rows past the matrix's last (up to the next multiple of 16) are zero blocks. Activations
//! are quantized in 16-bit blocks ([`Q16Rows`]); the products are an exact
//! integer sum per block, then `d · scale` and the minimum term in f32. AVX-512 VNNI, AVX2 and
//! a portable path compute them, all tested against dequantize-then-f32.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rayon::prelude::*;

use super::{BLOCK, Q16Rows};
use crate::quantized::{BlockFormat, half_at};
use crate::{KernelError, Result};

/// Weight rows interleaved together: the lanes of an AVX-512 register.
pub const GROUP: usize = 16;

/// Activation rows multiplied together against one pass over a group's weights.
const MAX_PASS_ROWS: usize = 4;

/// Groups per parallel task at least (a layer of SmolLM2 has 12 to 96 groups).
const MIN_GROUPS_PER_TASK: usize = 2;

/// Parallel tasks per thread a product is cut into.
const TASKS_PER_THREAD: usize = 8;

/// Whether `format` can be interleaved: the 32-value formats with 4- or 8-bit values.
pub fn is_interleavable(format: BlockFormat) -> bool {
    Kind::of(format).is_some()
}

/// The three formats as the kernels read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Q4_0,
    Q4_1,
    Q8_0,
}

impl Kind {
    fn of(format: BlockFormat) -> Option<Kind> {
        match format {
            BlockFormat::Q4_0 => Some(Kind::Q4_0),
            BlockFormat::Q4_1 => Some(Kind::Q4_1),
            BlockFormat::Q8_0 => Some(Kind::Q8_0),
            _ => None,
        }
    }

    /// Bytes of `d` (and `m`) per row in a block.
    fn header(self) -> usize {
        match self {
            Kind::Q4_1 => 4,
            Kind::Q4_0 | Kind::Q8_0 => 2,
        }
    }

    /// Bytes per block of one row.
    fn block_bytes(self) -> usize {
        match self {
            Kind::Q4_0 => 18,
            Kind::Q4_1 => 20,
            Kind::Q8_0 => 34,
        }
    }

    /// Bytes of one group's segment for one block.
    fn segment(self) -> usize {
        GROUP * self.block_bytes()
    }

    /// Where value `k` of row `c` lies in a segment's values: (byte, in the high nibble).
    fn position(self, c: usize, k: usize) -> (usize, bool) {
        match self {
            Kind::Q8_0 => (32 * (k / 2) + 2 * c + k % 2, false),
            _ => (32 * (k / 4) + 2 * c + k % 2, k % 4 >= 2),
        }
    }
}

/// A `[rows, cols]` matrix of interleaved blocks ([`interleave`]).
#[derive(Debug, Clone, Copy)]
pub struct InterleavedMatrix<'a> {
    /// `Q4_0`, `Q4_1` or `Q8_0`.
    pub format: BlockFormat,
    /// The segments: `⌈rows / 16⌉` groups of `cols / 32` segments.
    pub bytes: &'a [u8],
    /// Output features.
    pub rows: usize,
    /// Input features (a multiple of 32).
    pub cols: usize,
}

impl InterleavedMatrix<'_> {
    /// The format's kind, or an error when the format or the byte count does not fit.
    fn checked(&self) -> Result<Kind> {
        let kind = Kind::of(self.format);
        let expected = kind.and_then(|kind| interleaved_len(kind, self.rows, self.cols));
        match kind {
            Some(kind) if expected == Some(self.bytes.len()) => Ok(kind),
            _ => Err(KernelError {
                kernel: "InterleavedMatrix",
                reason: format!(
                    "{} bytes for {} × {} values of interleaved {}",
                    self.bytes.len(),
                    self.rows,
                    self.cols,
                    self.format.name()
                ),
            }),
        }
    }

    fn blocks(&self) -> usize {
        self.cols / BLOCK
    }

    fn groups(&self) -> usize {
        self.rows.div_ceil(GROUP)
    }
}

/// Bytes of a `[rows, cols]` matrix of `format` blocks once interleaved (rows padded to a whole
/// group); `None` for a format that is not interleaved or `cols` not whole blocks.
pub fn interleaved_bytes(format: BlockFormat, rows: usize, cols: usize) -> Option<usize> {
    interleaved_len(Kind::of(format)?, rows, cols)
}

/// Bytes of a `[rows, cols]` interleaved matrix (rows padded to a whole group).
fn interleaved_len(kind: Kind, rows: usize, cols: usize) -> Option<usize> {
    if !cols.is_multiple_of(BLOCK) {
        return None;
    }
    rows.div_ceil(GROUP)
        .checked_mul(cols / BLOCK)?
        .checked_mul(kind.segment())
}

/// `bytes` (a `[rows, cols]` matrix of `format` blocks, row after row, as GGUF stores it)
/// interleaved by groups of [`GROUP`] rows.
pub fn interleave(format: BlockFormat, bytes: &[u8], rows: usize, cols: usize) -> Result<Vec<u8>> {
    let kind = Kind::of(format);
    let row_bytes = format.bytes_for(cols);
    let fits = row_bytes.and_then(|row| row.checked_mul(rows)) == Some(bytes.len());
    let (Some(kind), Some(row_bytes), true, Some(len)) = (
        kind,
        row_bytes,
        fits,
        kind.and_then(|kind| interleaved_len(kind, rows, cols)),
    ) else {
        return Err(KernelError {
            kernel: "interleave",
            reason: format!(
                "{} bytes are not a [{rows}, {cols}] matrix of interleavable {} blocks",
                bytes.len(),
                format.name()
            ),
        });
    };
    let mut out = vec![0u8; len];
    let blocks = cols / BLOCK;
    let group_bytes = blocks * kind.segment();
    if group_bytes == 0 {
        return Ok(out);
    }
    // Parallel over groups: an LM head of 49152 rows is 30 MB to reorder at load.
    out.par_chunks_mut(group_bytes)
        .enumerate()
        .for_each(|(group, segments)| {
            let source = bytes.get(group * GROUP * row_bytes..).unwrap_or_default();
            interleave_group(kind, source, row_bytes, segments);
        });
    Ok(out)
}

/// [`interleave`] within `bytes` itself, when `rows` is a whole number of groups (a group's
/// segments take exactly the bytes of its rows): no second copy of the matrix is ever held.
pub fn interleave_in_place(
    format: BlockFormat,
    bytes: &mut [u8],
    rows: usize,
    cols: usize,
) -> Result<()> {
    let kind = Kind::of(format);
    let row_bytes = format.bytes_for(cols);
    let fits = row_bytes.and_then(|row| row.checked_mul(rows)) == Some(bytes.len());
    let (Some(kind), Some(row_bytes), true, true) =
        (kind, row_bytes, fits, rows.is_multiple_of(GROUP))
    else {
        return Err(KernelError {
            kernel: "interleave_in_place",
            reason: format!(
                "{} bytes are not a [{rows}, {cols}] matrix of interleavable {} blocks in \
                 whole groups of {GROUP} rows",
                bytes.len(),
                format.name()
            ),
        });
    };
    if row_bytes == 0 {
        return Ok(());
    }
    bytes.par_chunks_mut(GROUP * row_bytes).for_each(|group| {
        let rows = group.to_vec();
        group.fill(0);
        interleave_group(kind, &rows, row_bytes, group);
    });
    Ok(())
}

/// One group's segments from up to 16 rows of `source` (rows after it are ignored; missing
/// ones stay zero blocks).
fn interleave_group(kind: Kind, source: &[u8], row_bytes: usize, segments: &mut [u8]) {
    for (b, segment) in segments.chunks_exact_mut(kind.segment()).enumerate() {
        for c in 0..GROUP {
            let start = c * row_bytes + b * kind.block_bytes();
            if let Some(block) = source.get(start..start + kind.block_bytes()) {
                place_block(kind, block, c, segment);
            }
        }
    }
}

/// Writes one row's block (GGUF layout) as row `c` of an interleaved segment.
fn place_block(kind: Kind, block: &[u8], c: usize, segment: &mut [u8]) {
    let header = kind.header();
    for (field, bytes) in block
        .get(..header)
        .unwrap_or_default()
        .chunks_exact(2)
        .enumerate()
    {
        if let Some(slot) =
            segment.get_mut(2 * GROUP * field + 2 * c..2 * GROUP * field + 2 * c + 2)
        {
            slot.copy_from_slice(bytes);
        }
    }
    let (Some(stored), Some(values)) = (
        block.get(header..kind.block_bytes()),
        segment.get_mut(header * GROUP..),
    ) else {
        return;
    };
    // Byte `2c + e` of each 32-byte chunk belongs to row `c` (see the module's layout).
    let row_bytes = values
        .chunks_exact_mut(32)
        .map(|chunk| chunk.get_mut(2 * c..2 * c + 2));
    if kind == Kind::Q8_0 {
        for (slot, pair) in row_bytes.zip(stored.chunks_exact(2)) {
            if let Some(slot) = slot {
                slot.copy_from_slice(pair);
            }
        }
        return;
    }
    // u[k]: the low nibble of byte k, then the high nibbles.
    let mut u = [0u8; BLOCK];
    let (low, high) = u.split_at_mut(BLOCK / 2);
    for ((low, high), byte) in low.iter_mut().zip(high.iter_mut()).zip(stored) {
        (*low, *high) = (byte & 0x0F, byte >> 4);
    }
    // Chunk t: u[4t + e] in the low nibble, u[4t + 2 + e] in the high one.
    for (slot, quad) in row_bytes.zip(u.chunks_exact(4)) {
        if let (Some([first, second]), [a, b, c, d]) = (slot, quad) {
            (*first, *second) = (a | (c << 4), b | (d << 4));
        }
    }
}

/// Row `row` of `matrix`, dequantized into `out` (`cols` values): bit for bit
/// [`crate::quantized::dequantize`] of the row before interleaving.
pub fn dequantize_row(matrix: InterleavedMatrix<'_>, row: usize, out: &mut [f32]) -> Result<()> {
    let kind = matrix.checked()?;
    if row >= matrix.rows || out.len() != matrix.cols {
        return Err(KernelError {
            kernel: "interleaved::dequantize_row",
            reason: format!(
                "row {row} of {} into {} values for {}",
                matrix.rows,
                out.len(),
                matrix.cols
            ),
        });
    }
    let (group, c) = (row / GROUP, row % GROUP);
    let segments = group_segments(kind, matrix, group);
    for (segment, values) in segments
        .chunks_exact(kind.segment())
        .zip(out.chunks_exact_mut(BLOCK))
    {
        dequantize_column(kind, segment, c, values);
    }
    Ok(())
}

/// The whole matrix dequantized into `out` (`[rows, cols]`), split over the thread pool.
pub fn dequantize_all(matrix: InterleavedMatrix<'_>, out: &mut [f32]) -> Result<()> {
    let kind = matrix.checked()?;
    crate::check_len(
        "interleaved::dequantize_all",
        "out",
        out.len(),
        matrix.rows * matrix.cols,
    )?;
    if matrix.cols == 0 {
        return Ok(());
    }
    out.par_chunks_mut(GROUP * matrix.cols)
        .enumerate()
        .for_each(|(group, rows)| {
            let segments = group_segments(kind, matrix, group);
            for (c, row) in rows.chunks_exact_mut(matrix.cols).enumerate() {
                for (segment, values) in segments
                    .chunks_exact(kind.segment())
                    .zip(row.chunks_exact_mut(BLOCK))
                {
                    dequantize_column(kind, segment, c, values);
                }
            }
        });
    Ok(())
}

/// The segments of group `group` (empty past the end, which the callers' checks rule out).
fn group_segments<'a>(kind: Kind, matrix: InterleavedMatrix<'a>, group: usize) -> &'a [u8] {
    let group_bytes = matrix.blocks() * kind.segment();
    matrix
        .bytes
        .get(group * group_bytes..(group + 1) * group_bytes)
        .unwrap_or_default()
}

/// Row `c`'s 32 values of one segment: `d · (u - offset) + m`, rounded as
/// [`crate::quantized::dequantize`] rounds.
fn dequantize_column(kind: Kind, segment: &[u8], c: usize, out: &mut [f32]) {
    let d = half_at(segment, 2 * c);
    let values = segment.get(kind.header() * GROUP..).unwrap_or_default();
    let byte = |at: usize| values.get(at).copied().unwrap_or(0);
    for (k, value) in out.iter_mut().enumerate() {
        let (at, high) = kind.position(c, k);
        let stored = byte(at);
        let u = if high { stored >> 4 } else { stored & 0x0F };
        *value = match kind {
            // `+ 0.0` as `dequantize` adds a zero minimum: `-0` becomes `0`.
            Kind::Q4_0 => d * (f32::from(u) - 8.0) + 0.0,
            Kind::Q4_1 => d * f32::from(u) + half_at(segment, 2 * GROUP + 2 * c),
            Kind::Q8_0 => d * f32::from(stored as i8) + 0.0,
        };
    }
}

/// The SIMD level the products run at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Path {
    fn detect() -> Path {
        #[cfg(target_arch = "x86_64")]
        {
            if has_avx512_vnni() {
                return Path::Avx512;
            }
            if crate::has_avx2_fma() && std::is_x86_feature_detected!("f16c") {
                return Path::Avx2;
            }
        }
        Path::Portable
    }

    /// Every path this CPU can run (for tests).
    #[cfg(test)]
    fn available() -> Vec<Path> {
        let mut paths = vec![Path::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if crate::has_avx2_fma() && std::is_x86_feature_detected!("f16c") {
                paths.push(Path::Avx2);
            }
            if has_avx512_vnni() {
                paths.push(Path::Avx512);
            }
        }
        paths
    }
}

/// Whether the CPU has the AVX-512 subsets the VNNI kernel uses.
#[cfg(target_arch = "x86_64")]
pub(super) fn has_avx512_vnni() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vnni")
}

/// `out = x · Wᵀ` for f32 activations `x` (`[rows, cols]`) and the interleaved `matrix`, `out`
/// `[rows, matrix.rows]`; split over the calling rayon pool by groups of output columns.
pub fn matmul_interleaved(
    matrix: InterleavedMatrix<'_>,
    input: &[f32],
    rows: usize,
    out: &mut [f32],
) -> Result<()> {
    matmul_on(Path::detect(), matrix, input, rows, out)
}

fn matmul_on(
    path: Path,
    matrix: InterleavedMatrix<'_>,
    input: &[f32],
    rows: usize,
    out: &mut [f32],
) -> Result<()> {
    let kind = matrix.checked()?;
    crate::check_len("matmul_interleaved", "out", out.len(), rows * matrix.rows)?;
    if rows == 0 || matrix.rows == 0 {
        return Ok(());
    }
    let quantized = Q16Rows::quantize(input, rows, matrix.cols)?;
    let groups = matrix.groups();
    let threads = rayon::current_num_threads().max(1);
    let groups_per_task = groups
        .div_ceil(threads * TASKS_PER_THREAD)
        .max(MIN_GROUPS_PER_TASK);
    // `[group, row, 16]`: each group's columns of every row, written by one task.
    let mut by_group = vec![0.0f32; groups * rows * GROUP];
    let group_bytes = matrix.blocks() * kind.segment();
    let task = |(t, results): (usize, &mut [f32])| {
        let first = t * groups_per_task;
        for (g, results) in results.chunks_exact_mut(rows * GROUP).enumerate() {
            let start = (first + g) * group_bytes;
            let segments = matrix
                .bytes
                .get(start..start + group_bytes)
                .unwrap_or_default();
            group_products(path, kind, segments, &quantized, results);
        }
    };
    let chunk = groups_per_task * rows * GROUP;
    if groups > groups_per_task && threads > 1 {
        by_group.par_chunks_mut(chunk).enumerate().for_each(task);
    } else {
        by_group.chunks_mut(chunk).enumerate().for_each(task);
    }
    for (group, results) in by_group.chunks_exact(rows * GROUP).enumerate() {
        let first_column = group * GROUP;
        let width = GROUP.min(matrix.rows - first_column);
        for (r, lanes) in results.chunks_exact(GROUP).enumerate() {
            let start = r * matrix.rows + first_column;
            if let Some(slot) = out.get_mut(start..start + width) {
                slot.copy_from_slice(lanes.get(..width).unwrap_or_default());
            }
        }
    }
    Ok(())
}

/// One group's 16 columns for every activation row: `results[r · 16 + c]`, in passes of up to
/// [`MAX_PASS_ROWS`] rows.
fn group_products(path: Path, kind: Kind, segments: &[u8], input: &Q16Rows, results: &mut [f32]) {
    let rows = input.rows();
    let mut first = 0;
    while first < rows {
        let pass = (rows - first).min(MAX_PASS_ROWS);
        let lanes = results
            .get_mut(first * GROUP..(first + pass) * GROUP)
            .unwrap_or_default();
        match path {
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => avx512::pass(kind, segments, input, first, lanes),
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => avx2::pass(kind, segments, input, first, lanes),
            Path::Portable => portable_pass(kind, segments, input, first, lanes),
        }
        first += pass;
    }
}

/// A pass's activation rows: each row's values, block scales and block sums.
type PassRows<'a> = Vec<(&'a [i16], &'a [f32], &'a [f32])>;

/// Rows `first..first + lanes.len() / 16` of `input`, if `segments` holds whole segments for
/// them; `None` (nothing to compute) otherwise.
fn pass_rows<'a>(
    kind: Kind,
    segments: &[u8],
    input: &'a Q16Rows,
    first: usize,
    lanes: &[f32],
) -> Option<PassRows<'a>> {
    let blocks = input.cols() / BLOCK;
    if segments.len() != blocks * kind.segment() || !lanes.len().is_multiple_of(GROUP) {
        return None;
    }
    (first..first + lanes.len() / GROUP)
        .map(|r| input.row(r))
        .collect()
}

/// The portable pass: the same integer sums per block, value by value.
fn portable_pass(kind: Kind, segments: &[u8], input: &Q16Rows, first: usize, lanes: &mut [f32]) {
    let Some(rows) = pass_rows(kind, segments, input, first, lanes) else {
        return;
    };
    let mut u = [0u8; BLOCK];
    for (r, (values, scales, sums)) in rows.iter().enumerate() {
        for c in 0..GROUP {
            let (mut total, mut added_total) = (0.0f32, 0.0f32);
            for (((segment, q), scale), sum) in segments
                .chunks_exact(kind.segment())
                .zip(values.chunks_exact(BLOCK))
                .zip(scales.iter())
                .zip(sums.iter())
            {
                let stored = segment.get(kind.header() * GROUP..).unwrap_or_default();
                for (k, u) in u.iter_mut().enumerate() {
                    let (at, high) = kind.position(c, k);
                    let byte = stored.get(at).copied().unwrap_or(0);
                    *u = match (kind, high) {
                        (Kind::Q8_0, _) => byte,
                        (_, true) => byte >> 4,
                        (_, false) => byte & 0x0F,
                    };
                }
                let dot: i32 = u
                    .iter()
                    .zip(q)
                    .map(|(&u, &q)| {
                        let u = if kind == Kind::Q8_0 {
                            i32::from(u as i8)
                        } else {
                            i32::from(u)
                        };
                        u * i32::from(q)
                    })
                    .sum();
                let d = half_at(segment, 2 * c);
                total += dot as f32 * (d * scale);
                added_total += added(kind, segment, c, d) * sum;
            }
            if let Some(lane) = lanes.get_mut(r * GROUP + c) {
                *lane = total + added_total;
            }
        }
    }
}

/// What a block adds to each of row `c`'s values beyond `d · u`: `-8d`, `m` or 0.
fn added(kind: Kind, segment: &[u8], c: usize, d: f32) -> f32 {
    match kind {
        Kind::Q4_0 => -8.0 * d,
        Kind::Q4_1 => half_at(segment, 2 * GROUP + 2 * c),
        Kind::Q8_0 => 0.0,
    }
}

/// Bytes of a segment and of its header for the kernels' format number `K` (0: `Q4_0`, 1:
/// `Q4_1`, 2: `Q8_0`).
#[cfg(target_arch = "x86_64")]
const fn segment_and_header(k: u8) -> (usize, usize) {
    match k {
        0 => (18 * GROUP, 2 * GROUP),
        1 => (20 * GROUP, 4 * GROUP),
        _ => (34 * GROUP, 2 * GROUP),
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::*;

    /// One pass of up to [`MAX_PASS_ROWS`] activation rows over a group (AVX-512 VNNI).
    pub(super) fn pass(
        kind: Kind,
        segments: &[u8],
        input: &Q16Rows,
        first: usize,
        lanes: &mut [f32],
    ) {
        let Some(rows) = pass_rows(kind, segments, input, first, lanes) else {
            return;
        };
        let kind = match kind {
            Kind::Q4_0 => 0,
            Kind::Q4_1 => 1,
            Kind::Q8_0 => 2,
        };
        // SAFETY: the CPU has AVX-512 F/BW/VNNI (`Path::detect` chose this path only then);
        // `segments` holds one segment per block of every row in `rows` (`pass_rows`), and
        // each arm's `R` is `rows.len()`.
        unsafe {
            match (kind, rows.len()) {
                (0, 1) => run::<0, 1>(segments, &rows, lanes),
                (0, 2) => run::<0, 2>(segments, &rows, lanes),
                (0, 3) => run::<0, 3>(segments, &rows, lanes),
                (0, 4) => run::<0, 4>(segments, &rows, lanes),
                (1, 1) => run::<1, 1>(segments, &rows, lanes),
                (1, 2) => run::<1, 2>(segments, &rows, lanes),
                (1, 3) => run::<1, 3>(segments, &rows, lanes),
                (1, 4) => run::<1, 4>(segments, &rows, lanes),
                (2, 1) => run::<2, 1>(segments, &rows, lanes),
                (2, 2) => run::<2, 2>(segments, &rows, lanes),
                (2, 3) => run::<2, 3>(segments, &rows, lanes),
                (2, 4) => run::<2, 4>(segments, &rows, lanes),
                _ => {}
            }
        }
    }

    /// Format `K` (0: `Q4_0`, 1: `Q4_1`, 2: `Q8_0`) against `R` rows.
    ///
    /// # Safety
    /// AVX-512 F/BW/VNNI present; `rows` holds `R` rows and `segments` one segment of format
    /// `K` per block of them; `lanes` holds `R · 16` values.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn run<const K: u8, const R: usize>(
        segments: &[u8],
        rows: &[(&[i16], &[f32], &[f32])],
        lanes: &mut [f32],
    ) {
        let (segment_bytes, header) = segment_and_header(K);
        let mut totals = [_mm512_setzero_ps(); R];
        let mut added_totals = [_mm512_setzero_ps(); R];
        let fifteen = _mm512_set1_epi16(0x0F);
        for (b, segment) in segments.chunks_exact(segment_bytes).enumerate() {
            let at = segment.as_ptr();
            // SAFETY: a segment holds its header then its values (`segment_bytes`); each row
            // holds 32 values, a scale and a sum for block `b` (`pass_rows` checked the counts).
            unsafe {
                let d = _mm512_cvtph_ps(_mm256_loadu_si256(at.cast()));
                let added = match K {
                    0 => _mm512_mul_ps(d, _mm512_set1_ps(-8.0)),
                    1 => _mm512_cvtph_ps(_mm256_loadu_si256(at.add(32).cast())),
                    _ => _mm512_setzero_ps(),
                };
                let values = at.add(header);
                // Two sums per row (even and odd registers) halve the dependency chain.
                let mut dots = [[_mm512_setzero_si512(); 2]; R];
                let pairs = |r: usize, s: usize| -> __m512i {
                    let q = rows.get_unchecked(r).0.as_ptr().add(b * BLOCK + 2 * s);
                    _mm512_set1_epi32(q.cast::<i32>().read_unaligned())
                };
                if K == 2 {
                    for s in 0..16 {
                        let w = _mm512_cvtepi8_epi16(_mm256_loadu_si256(values.add(32 * s).cast()));
                        for (r, [even, odd]) in dots.iter_mut().enumerate() {
                            let dot = if s % 2 == 0 { even } else { odd };
                            *dot = _mm512_dpwssd_epi32(*dot, w, pairs(r, s));
                        }
                    }
                } else {
                    for t in 0..8 {
                        let raw =
                            _mm512_cvtepu8_epi16(_mm256_loadu_si256(values.add(32 * t).cast()));
                        let low = _mm512_and_si512(raw, fifteen);
                        let high = _mm512_srli_epi16::<4>(raw);
                        for (r, [even, odd]) in dots.iter_mut().enumerate() {
                            *even = _mm512_dpwssd_epi32(*even, low, pairs(r, 2 * t));
                            *odd = _mm512_dpwssd_epi32(*odd, high, pairs(r, 2 * t + 1));
                        }
                    }
                }
                for (r, ((total, added_total), [even, odd])) in totals
                    .iter_mut()
                    .zip(added_totals.iter_mut())
                    .zip(dots)
                    .enumerate()
                {
                    let (_, scales, sums) = rows.get_unchecked(r);
                    let dot = _mm512_cvtepi32_ps(_mm512_add_epi32(even, odd));
                    let scale = _mm512_mul_ps(d, _mm512_set1_ps(*scales.get_unchecked(b)));
                    *total = _mm512_fmadd_ps(dot, scale, *total);
                    if K != 2 {
                        let sum = _mm512_set1_ps(*sums.get_unchecked(b));
                        *added_total = _mm512_fmadd_ps(added, sum, *added_total);
                    }
                }
            }
        }
        for ((lanes, total), added_total) in
            lanes.chunks_exact_mut(GROUP).zip(totals).zip(added_totals)
        {
            let result = _mm512_add_ps(total, added_total);
            // SAFETY: `lanes` holds 16 values.
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), result) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;

    /// One pass of up to [`MAX_PASS_ROWS`] activation rows over a group, as two halves of 8
    /// columns (AVX2).
    pub(super) fn pass(
        kind: Kind,
        segments: &[u8],
        input: &Q16Rows,
        first: usize,
        lanes: &mut [f32],
    ) {
        let Some(rows) = pass_rows(kind, segments, input, first, lanes) else {
            return;
        };
        for half in 0..2 {
            // SAFETY: the CPU has AVX2, FMA and F16C (`Path::detect` chose this path only
            // then); `segments` holds one segment per block of every row (`pass_rows`).
            unsafe {
                match (kind, rows.len()) {
                    (Kind::Q4_0, 1) => run::<0, 1>(segments, &rows, half, lanes),
                    (Kind::Q4_0, 2) => run::<0, 2>(segments, &rows, half, lanes),
                    (Kind::Q4_0, _) => run::<0, 4>(segments, &rows, half, lanes),
                    (Kind::Q4_1, 1) => run::<1, 1>(segments, &rows, half, lanes),
                    (Kind::Q4_1, 2) => run::<1, 2>(segments, &rows, half, lanes),
                    (Kind::Q4_1, _) => run::<1, 4>(segments, &rows, half, lanes),
                    (Kind::Q8_0, 1) => run::<2, 1>(segments, &rows, half, lanes),
                    (Kind::Q8_0, 2) => run::<2, 2>(segments, &rows, half, lanes),
                    (Kind::Q8_0, _) => run::<2, 4>(segments, &rows, half, lanes),
                }
            }
        }
    }

    /// Format `K` against up to `R` rows (`rows.len()`), columns `8 · half..8 · half + 8`.
    ///
    /// # Safety
    /// AVX2, FMA and F16C present; `rows` holds at most `R` rows and `segments` one segment
    /// of format `K` per block of them; `lanes` holds 16 values per row.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn run<const K: u8, const R: usize>(
        segments: &[u8],
        rows: &[(&[i16], &[f32], &[f32])],
        half: usize,
        lanes: &mut [f32],
    ) {
        let (segment_bytes, header) = segment_and_header(K);
        let count = rows.len().min(R);
        let mut totals = [_mm256_setzero_ps(); R];
        let mut added_totals = [_mm256_setzero_ps(); R];
        let fifteen = _mm256_set1_epi16(0x0F);
        for (b, segment) in segments.chunks_exact(segment_bytes).enumerate() {
            // SAFETY: as for the AVX-512 pass; each half reads 16 of every 32 bytes.
            unsafe {
                let at = segment.as_ptr().add(16 * half);
                let d = _mm256_cvtph_ps(_mm_loadu_si128(at.cast()));
                let added = match K {
                    0 => _mm256_mul_ps(d, _mm256_set1_ps(-8.0)),
                    1 => _mm256_cvtph_ps(_mm_loadu_si128(at.add(32).cast())),
                    _ => _mm256_setzero_ps(),
                };
                let values = segment.as_ptr().add(header + 16 * half);
                let mut dots = [_mm256_setzero_si256(); R];
                let pairs = |r: usize, s: usize| -> __m256i {
                    let q = rows.get_unchecked(r).0.as_ptr().add(b * BLOCK + 2 * s);
                    _mm256_set1_epi32(q.cast::<i32>().read_unaligned())
                };
                let widen =
                    |t: usize| _mm256_cvtepu8_epi16(_mm_loadu_si128(values.add(32 * t).cast()));
                for s in 0..16 {
                    let w = match K {
                        2 => _mm256_cvtepi8_epi16(_mm_loadu_si128(values.add(32 * s).cast())),
                        _ if s % 2 == 0 => _mm256_and_si256(widen(s / 2), fifteen),
                        _ => _mm256_srli_epi16::<4>(widen(s / 2)),
                    };
                    for (r, dot) in dots.iter_mut().enumerate().take(count) {
                        *dot = _mm256_add_epi32(*dot, _mm256_madd_epi16(w, pairs(r, s)));
                    }
                }
                for (((total, added_total), dot), (_, scales, sums)) in totals
                    .iter_mut()
                    .zip(added_totals.iter_mut())
                    .zip(dots)
                    .zip(rows)
                {
                    let scale = _mm256_mul_ps(d, _mm256_set1_ps(*scales.get_unchecked(b)));
                    *total = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, *total);
                    if K != 2 {
                        let sum = _mm256_set1_ps(*sums.get_unchecked(b));
                        *added_total = _mm256_fmadd_ps(added, sum, *added_total);
                    }
                }
            }
        }
        for (r, (total, added_total)) in
            totals.into_iter().zip(added_totals).take(count).enumerate()
        {
            let result = _mm256_add_ps(total, added_total);
            if let Some(out) = lanes.get_mut(r * GROUP + 8 * half..r * GROUP + 8 * half + 8) {
                // SAFETY: `out` holds 8 values.
                unsafe { _mm256_storeu_ps(out.as_mut_ptr(), result) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use crate::quantized::dequantize;
    use crate::random_values;

    /// Random blocks of a 32-value `format` with ordinary f16 scales (and minimums).
    fn random_blocks(format: BlockFormat, blocks: usize, seed: u64) -> Vec<u8> {
        let noise = random_values(seed, blocks * format.block_bytes());
        let mut bytes: Vec<u8> = noise.iter().map(|v| ((v + 1.0) * 127.9) as u8).collect();
        let fields = if format == BlockFormat::Q4_1 { 2 } else { 1 };
        let scales = random_values(seed + 1, blocks * fields);
        for (b, block) in bytes.chunks_exact_mut(format.block_bytes()).enumerate() {
            for field in 0..fields {
                let value = half::f16::from_f32(scales[b * fields + field] * 0.05);
                block[2 * field..2 * field + 2].copy_from_slice(&value.to_le_bytes());
            }
        }
        bytes
    }

    const FORMATS: [BlockFormat; 3] = [BlockFormat::Q4_0, BlockFormat::Q4_1, BlockFormat::Q8_0];

    #[test]
    fn interleaved_rows_dequantize_bit_for_bit() {
        for format in FORMATS {
            for (rows, cols) in [(16, 32), (21, 96), (3, 64)] {
                let bytes = random_blocks(format, rows * cols / BLOCK, rows as u64);
                let mut want = vec![0.0f32; rows * cols];
                dequantize(format, &bytes, &mut want).unwrap();
                let interleaved = interleave(format, &bytes, rows, cols).unwrap();
                let mut in_place = bytes.clone();
                match interleave_in_place(format, &mut in_place, rows, cols) {
                    Ok(()) => assert_eq!(in_place, interleaved, "{format:?} {rows}x{cols}"),
                    Err(_) => assert!(!rows.is_multiple_of(GROUP)),
                }
                assert_eq!(
                    interleaved.len(),
                    rows.div_ceil(16) * 16 * cols / 32 * format.block_bytes()
                );
                let matrix = InterleavedMatrix {
                    format,
                    bytes: &interleaved,
                    rows,
                    cols,
                };
                let mut all = vec![f32::NAN; rows * cols];
                dequantize_all(matrix, &mut all).unwrap();
                for row in 0..rows {
                    let mut got = vec![f32::NAN; cols];
                    dequantize_row(matrix, row, &mut got).unwrap();
                    let want = &want[row * cols..(row + 1) * cols];
                    assert_eq!(
                        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "{format:?} row {row}"
                    );
                    assert_eq!(
                        &all[row * cols..(row + 1) * cols],
                        want,
                        "{format:?} row {row}"
                    );
                }
                assert!(dequantize_row(matrix, rows, &mut vec![0.0; cols]).is_err());
            }
        }
    }

    /// Every path against f32 activations times the dequantized weights (in f64), for row
    /// counts that leave every pass size and a padded last group.
    #[test]
    fn every_path_matches_dequantize_then_f32() {
        for path in Path::available() {
            for format in FORMATS {
                for (rows, out_features, cols) in [
                    (1, 16, 64),
                    (1, 37, 576),
                    (2, 48, 96),
                    (3, 5, 32),
                    (7, 33, 128),
                    (9, 64, 64),
                ] {
                    let bytes =
                        random_blocks(format, out_features * cols / BLOCK, out_features as u64);
                    let mut weights = vec![0.0f32; out_features * cols];
                    dequantize(format, &bytes, &mut weights).unwrap();
                    let interleaved = interleave(format, &bytes, out_features, cols).unwrap();
                    let matrix = InterleavedMatrix {
                        format,
                        bytes: &interleaved,
                        rows: out_features,
                        cols,
                    };
                    let input = random_values(rows as u64 + 3, rows * cols);
                    let mut got = vec![f32::NAN; rows * out_features];
                    matmul_on(path, matrix, &input, rows, &mut got).unwrap();
                    for r in 0..rows {
                        for o in 0..out_features {
                            let (mut want, mut magnitude) = (0.0f64, 0.0f64);
                            for k in 0..cols {
                                let term = f64::from(input[r * cols + k])
                                    * f64::from(weights[o * cols + k]);
                                want += term;
                                magnitude += term.abs();
                            }
                            let value = f64::from(got[r * out_features + o]);
                            assert!(
                                (value - want).abs() <= 1e-4 * magnitude.max(1e-6),
                                "{path:?} {format:?} {rows}x{out_features}x{cols} [{r},{o}]: {value} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn shapes_and_formats_are_checked() {
        assert!(interleave(BlockFormat::Q4K, &[0; 144], 1, 256).is_err());
        assert!(interleave(BlockFormat::Q4_0, &[0; 17], 1, 32).is_err());
        let bytes = interleave(BlockFormat::Q4_0, &[0; 18], 1, 32).unwrap();
        let matrix = InterleavedMatrix {
            format: BlockFormat::Q4_0,
            bytes: &bytes,
            rows: 1,
            cols: 32,
        };
        let mut out = [0.0f32; 2];
        assert!(matmul_interleaved(matrix, &[0.0; 64], 2, &mut out).is_ok());
        assert!(matmul_interleaved(matrix, &[0.0; 64], 2, &mut out[..1]).is_err());
        let short = InterleavedMatrix {
            bytes: &bytes[1..],
            ..matrix
        };
        assert!(matmul_interleaved(short, &[0.0; 32], 1, &mut out[..1]).is_err());
    }
}
