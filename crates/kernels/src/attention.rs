//! The one attention kernel: `softmax(q·kᵀ·scale + mask)·v` for a block of query rows over one
//! sequence's keys and values, read in place wherever they live: the packed `[rows, 3·hidden]`
//! buffer of an encoder's fused QKV projection, or a decoder's KV cache slabs
//! (`[kv_heads, capacity, head_dim]`). Bidirectional (encoders) and causal (decoders, with an
//! optional sliding window) masks, a padding mask, and grouped-query heads (`heads` a multiple
//! of `kv_heads`, as `repeat_kv` does) are all the same loop; a prefill (many new queries) and a
//! decoding step (one) too.
//!
//! Query `i` (at position `first + i` when causal) sees key `j` when the key is not padding
//! and, causal, `j ≤ first + i` and, with a window `w`, `first + i - j < w`. Masked keys are
//! skipped rather than given a large negative score: Transformers adds `finfo(f32).min`, whose
//! `exp` underflows to exactly 0, so skipping is the same arithmetic and costs nothing. A query
//! that sees no key at all (a padding position) gets uniform weights over every key, as the
//! additive mask's equal scores give.
//!
//! The vector path (AVX2 with FMA, `head_dim` a multiple of 8) works per block of query rows
//! and key/value head: the keys the block can see are copied once into panels of 8
//! (`[head_dim, 8]` each), which every query head of the group then reads, so one query's
//! scores against 8 keys are `head_dim` FMAs into one register, and eight query rows go
//! together (each panel row loaded once for all, eight independent FMA chains). The weighted
//! sum keeps 64 output dimensions of a row in registers across its keys. Other shapes and CPUs
//! take the portable path, which is also the definition the tests hold the fast one to.
//!
//! There is no AVX-512 path: the one written for the encoder's former kernel was replaced
//! while no AVX-512 machine was at hand to test a new one, and AVX-512 CPUs run this AVX2
//! path. A wider one can join as another [`GroupKernel`].
//!
//! Work is split over blocks of query rows on the calling rayon pool once it is large enough,
//! so one long sequence uses every thread.

use rayon::prelude::*;

use crate::{KernelError, Result};

/// One sequence's queries, keys or values, addressed in place: value `d` of head `h` at row
/// `r` is `data[offset + r·row_stride + h·head_stride + d]`.
#[derive(Debug, Clone, Copy)]
pub struct HeadRows<'a> {
    /// The buffer the rows live in.
    pub data: &'a [f32],
    /// Where row 0, head 0 starts.
    pub offset: usize,
    /// Rows (positions).
    pub rows: usize,
    /// Heads per row.
    pub heads: usize,
    /// Values per head.
    pub head_dim: usize,
    /// Distance between consecutive rows.
    pub row_stride: usize,
    /// Distance between consecutive heads of a row.
    pub head_stride: usize,
}

impl<'a> HeadRows<'a> {
    /// Rows of `heads · head_dim` values side by side, `row_stride` apart (the queries of a
    /// `[rows, heads·head_dim]` buffer, or the keys of a packed QKV row from `offset` on).
    pub fn interleaved(
        data: &'a [f32],
        offset: usize,
        rows: usize,
        (heads, head_dim): (usize, usize),
        row_stride: usize,
    ) -> HeadRows<'a> {
        HeadRows {
            data,
            offset,
            rows,
            heads,
            head_dim,
            row_stride,
            head_stride: head_dim,
        }
    }

    /// The first `rows` positions of a cache slab `[heads, capacity, head_dim]`.
    pub fn head_major(
        data: &'a [f32],
        (heads, capacity, head_dim): (usize, usize, usize),
        rows: usize,
    ) -> HeadRows<'a> {
        HeadRows {
            data,
            offset: 0,
            rows,
            heads,
            head_dim,
            row_stride: head_dim,
            head_stride: capacity.saturating_mul(head_dim),
        }
    }

    /// Whether every value the shape addresses lies inside `data`.
    fn fits(&self) -> bool {
        if self.rows == 0 || self.heads == 0 || self.head_dim == 0 {
            return true;
        }
        let last = (self.rows - 1)
            .checked_mul(self.row_stride)
            .zip((self.heads - 1).checked_mul(self.head_stride))
            .and_then(|(rows, heads)| rows.checked_add(heads))
            .and_then(|start| start.checked_add(self.offset))
            .and_then(|start| start.checked_add(self.head_dim));
        last.is_some_and(|end| end <= self.data.len())
    }

    /// Head `head` of row `row` (empty when outside the buffer, which [`Self::fits`] rules
    /// out for the shape's rows and heads).
    fn head(&self, row: usize, head: usize) -> &'a [f32] {
        let start = self.offset + row * self.row_stride + head * self.head_stride;
        self.data
            .get(start..start + self.head_dim)
            .unwrap_or_default()
    }
}

/// Which keys a query sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Every key (encoders).
    Bidirectional,
    /// Keys at most `radius` rows away from the query's, on either side (ModernBERT's local
    /// layers: `|i − j| ≤ local_attention / 2`).
    Window {
        /// The farthest key seen, in rows, on each side.
        radius: usize,
    },
    /// Keys up to the query's own position (`first` + its row), within `window` keys ending at
    /// it when there is a sliding window (decoders).
    Causal {
        /// Position of the first query among the keys.
        first: usize,
        /// Sliding window, in keys.
        window: Option<usize>,
    },
}

/// The mask of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct KeyMask<'a> {
    /// Bidirectional or causal.
    pub visibility: Visibility,
    /// Per key, whether it is a real token; `None`: all are.
    pub padding: Option<&'a [bool]>,
    /// An additive score bias by head and distance (ALiBi, relative-position buckets).
    pub bias: Option<DistanceBias<'a>>,
}

/// A score bias that depends only on the head and on the distance from query to key (key
/// position − query position): ALiBi's `−slope·|i − j|`, MPNet's relative-position buckets.
///
/// Head `h` at distance `d` adds `values[h·(2·span − 1) + (d + span − 1)]`; distances past
/// `span − 1` either way take the table's last entry on that side (every bias that depends on
/// distance alone is constant or linear in it past the longest sequence a model was built for;
/// callers size `span` to the sequences they run).
#[derive(Debug, Clone, Copy)]
pub struct DistanceBias<'a> {
    /// `[heads, 2·span − 1]`, distance `−(span − 1)` first.
    pub values: &'a [f32],
    /// One more than the farthest distance the table holds.
    pub span: usize,
}

impl DistanceBias<'_> {
    /// Entries per head.
    fn width(&self) -> usize {
        (2 * self.span).saturating_sub(1)
    }

    /// The bias of head `head` from query position `query` to key position `key`.
    fn at(&self, head: usize, query: usize, key: usize) -> f32 {
        let last = self.width().saturating_sub(1);
        let index = (key + self.span).saturating_sub(query + 1).min(last);
        self.values
            .get(head * self.width() + index)
            .copied()
            .unwrap_or(0.0)
    }
}

impl KeyMask<'_> {
    /// The keys `[start, end)` that query row `row` may see before padding.
    fn range(&self, row: usize, keys: usize) -> (usize, usize) {
        match self.visibility {
            Visibility::Bidirectional => (0, keys),
            Visibility::Window { radius } => (
                row.saturating_sub(radius).min(keys),
                row.saturating_add(radius).saturating_add(1).min(keys),
            ),
            Visibility::Causal { first, window } => {
                let at = first + row;
                let start = window.map_or(0, |window| (at + 1).saturating_sub(window));
                (start.min(keys), (at + 1).min(keys))
            }
        }
    }

    /// The position of query row `row` among the keys.
    fn query_position(&self, row: usize) -> usize {
        match self.visibility {
            Visibility::Bidirectional | Visibility::Window { .. } => row,
            Visibility::Causal { first, .. } => first + row,
        }
    }

    /// The distance bias of head `head` from query row `row` to key `key` (0 without one).
    fn bias(&self, head: usize, row: usize, key: usize) -> f32 {
        self.bias
            .map_or(0.0, |bias| bias.at(head, self.query_position(row), key))
    }

    fn is_real(&self, key: usize) -> bool {
        self.padding.is_none_or(|mask| mask.get(key) == Some(&true))
    }
}

/// Score work (query values × keys) below which a call stays on the calling thread.
const MIN_WORK_TO_SPLIT: usize = 1 << 16;
/// Fewest query rows per parallel block: every block copies the keys it sees once per
/// key/value head, so short sequences (a sentence, which the pipelines already run side by
/// side on the pool) stay whole.
const MIN_BLOCK_ROWS: usize = 32;

/// Attention of `queries` over `keys` and `values` (the same rows and heads; `queries.heads` a
/// multiple of `keys.heads`), written to `out`, `[queries.rows, queries.heads · head_dim]`
/// row-major. Scores are `q·k·scale`.
pub fn attend(
    queries: HeadRows<'_>,
    keys: HeadRows<'_>,
    values: HeadRows<'_>,
    mask: KeyMask<'_>,
    scale: f32,
    out: &mut [f32],
) -> Result<()> {
    check_shapes(&queries, &keys, &values, &mask, out.len())?;
    let width = queries.heads * queries.head_dim;
    if queries.rows == 0 || width == 0 {
        return Ok(());
    }
    let call = Call {
        queries,
        keys,
        values,
        mask,
        scale,
    };
    let work = out.len().saturating_mul(keys.rows);
    let threads = rayon::current_num_threads().max(1);
    if work < MIN_WORK_TO_SPLIT || queries.rows < 2 * MIN_BLOCK_ROWS || threads < 2 {
        call.block(0, out);
        return Ok(());
    }
    // Small blocks (eight per thread) so that a causal prefill, whose later rows see more
    // keys, still spreads evenly; but not so small that copying each block's keys dominates.
    let block_rows = queries.rows.div_ceil(threads * 8).max(MIN_BLOCK_ROWS);
    out.par_chunks_mut(block_rows * width)
        .enumerate()
        .for_each(|(block, out)| call.block(block * block_rows, out));
    Ok(())
}

fn check_shapes(
    queries: &HeadRows<'_>,
    keys: &HeadRows<'_>,
    values: &HeadRows<'_>,
    mask: &KeyMask<'_>,
    out_len: usize,
) -> Result<()> {
    let problem = if !(queries.fits() && keys.fits() && values.fits()) {
        Some("rows reach past their buffer".to_string())
    } else if queries.head_dim != keys.head_dim
        || (keys.rows, keys.heads, keys.head_dim) != (values.rows, values.heads, values.head_dim)
    {
        Some("queries, keys and values differ in shape".to_string())
    } else if keys.heads == 0 || !queries.heads.is_multiple_of(keys.heads) {
        Some(format!(
            "{} query heads over {} key heads",
            queries.heads, keys.heads
        ))
    } else if out_len != queries.rows * queries.heads * queries.head_dim {
        Some(format!("output holds {out_len} values"))
    } else if mask.padding.is_some_and(|mask| mask.len() != keys.rows) {
        Some("the padding mask differs in length from the keys".to_string())
    } else if let Some(bias) = mask.bias
        && (bias.span == 0 || Some(bias.values.len()) != queries.heads.checked_mul(bias.width()))
    {
        Some(format!(
            "a distance bias of {} values for span {}",
            bias.values.len(),
            bias.span
        ))
    } else if let Visibility::Causal { first, .. } = mask.visibility
        && first
            .checked_add(queries.rows)
            .is_none_or(|end| end > keys.rows)
    {
        Some(format!(
            "{} causal queries from position {first} over {} keys",
            queries.rows, keys.rows
        ))
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(reason) => Err(KernelError {
            kernel: "attention::attend",
            reason: format!(
                "{reason} ({} queries × {} heads, {} keys × {} heads, head_dim {})",
                queries.rows, queries.heads, keys.rows, keys.heads, keys.head_dim
            ),
        }),
    }
}

/// The checked arguments of one [`attend`] call.
#[derive(Clone, Copy)]
struct Call<'a> {
    queries: HeadRows<'a>,
    keys: HeadRows<'a>,
    values: HeadRows<'a>,
    mask: KeyMask<'a>,
    scale: f32,
}

impl Call<'_> {
    /// Query rows `first_row..` (as many as `out` holds) into `out`.
    fn block(&self, first_row: usize, out: &mut [f32]) {
        if let Some((lanes, kernel)) = self.group_kernel(out.len())
            && self.block_panels(first_row, out, lanes, kernel)
        {
            return;
        }
        self.block_portable(first_row, out);
    }

    /// The vector kernel for this CPU and head width, with its panel width (keys per panel),
    /// if there is one.
    fn group_kernel(&self, out_len: usize) -> Option<(usize, GroupKernel)> {
        #[cfg(target_arch = "x86_64")]
        {
            let head_dim = self.keys.head_dim;
            let single = out_len == self.queries.heads * head_dim;
            if crate::has_avx2_fma() && head_dim.is_multiple_of(8) {
                let kernel: GroupKernel = if single {
                    group_avx2_entry::<1>
                } else {
                    group_avx2_entry::<8>
                };
                return Some((8, kernel));
            }
        }
        let _ = out_len;
        None
    }

    /// The keys (indices into the keys) query row `row` sees, or every key, uniformly, when it
    /// sees none; and whether it saw any.
    fn visible_keys(&self, row: usize) -> (Vec<usize>, bool) {
        let (start, end) = self.mask.range(row, self.keys.rows);
        let seen: Vec<usize> = (start..end).filter(|&k| self.mask.is_real(k)).collect();
        if seen.is_empty() {
            ((0..self.keys.rows).collect(), false)
        } else {
            (seen, true)
        }
    }

    /// The plain loop: per row and head, scores, softmax and the weighted sum of the values.
    fn block_portable(&self, first_row: usize, out: &mut [f32]) {
        let head_dim = self.queries.head_dim;
        let groups = self.queries.heads / self.keys.heads.max(1);
        let width = self.queries.heads * head_dim;
        for (offset, out_row) in out.chunks_exact_mut(width.max(1)).enumerate() {
            let row = first_row + offset;
            let (keys, any_visible) = self.visible_keys(row);
            let mut weights = vec![0.0f32; keys.len()];
            for (head, out) in out_row.chunks_exact_mut(head_dim.max(1)).enumerate() {
                let kv_head = head / groups.max(1);
                let query = self.queries.head(row, head);
                let mut max = f32::NEG_INFINITY;
                for (weight, &key) in weights.iter_mut().zip(&keys) {
                    *weight = if any_visible {
                        dot(query, self.keys.head(key, kv_head)) * self.scale
                            + self.mask.bias(head, row, key)
                    } else {
                        0.0
                    };
                    max = max.max(*weight);
                }
                for weight in weights.iter_mut() {
                    *weight -= max;
                }
                crate::activation::exp_non_positive_in_place(&mut weights);
                let sum: f32 = weights.iter().sum();
                let inverse = if sum > 0.0 { 1.0 / sum } else { 0.0 };
                out.fill(0.0);
                for (weight, &key) in weights.iter().zip(&keys) {
                    let weight = weight * inverse;
                    for (slot, v) in out.iter_mut().zip(self.values.head(key, kv_head)) {
                        *slot += weight * v;
                    }
                }
            }
        }
    }
}

/// A dot product with eight independent partial sums (which the compiler vectorizes).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut partial = [0.0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in a_chunks.zip(b_chunks) {
        for ((slot, a), b) in partial.iter_mut().zip(a).zip(b) {
            *slot += a * b;
        }
    }
    partial.iter().sum::<f32>() + tail
}

/// The keys one block of query rows sees (per key/value head), copied into panels of
/// `lanes` keys (one vector register of scores).
struct KeyPanels {
    /// Keys per panel.
    lanes: usize,
    /// Indices of the keys, ascending.
    keys: Vec<usize>,
    /// Panel `p`: for each dimension `d`, keys `lanes·p..lanes·(p+1)` side by side
    /// (zero-padded).
    panels: Vec<f32>,
}

impl KeyPanels {
    fn new(lanes: usize) -> KeyPanels {
        KeyPanels {
            lanes: lanes.max(1),
            keys: Vec::new(),
            panels: Vec::new(),
        }
    }

    /// The keys rounded up to whole panels.
    fn padded(&self) -> usize {
        self.keys.len().div_ceil(self.lanes) * self.lanes
    }

    /// Fills the panels with head `kv_head` of `keys`, already chosen.
    fn pack(&mut self, source: &HeadRows<'_>, kv_head: usize) {
        let (head_dim, lanes) = (source.head_dim, self.lanes);
        self.panels.clear();
        self.panels.resize(self.padded() * head_dim, 0.0);
        for (j, &key) in self.keys.iter().enumerate() {
            let base = (j / lanes) * lanes * head_dim + j % lanes;
            for (d, &value) in source.head(key, kv_head).iter().enumerate() {
                if let Some(slot) = self.panels.get_mut(base + d * lanes) {
                    *slot = value;
                }
            }
        }
    }
}

/// Softmax in place over `row[start..end]`, every other score of `row[low..high]` set to 0
/// (they are computed for the group's other rows); returns `1 / Σ exp`, by which the weighted
/// sum is scaled (the weights are left unnormalised).
fn softmax_range(
    row: &mut [f32],
    (start, end): (usize, usize),
    (low, high): (usize, usize),
) -> f32 {
    for outside in [low..start, end..high] {
        if let Some(scores) = row.get_mut(outside) {
            scores.fill(0.0);
        }
    }
    let Some(scores) = row.get_mut(start..end) else {
        return 0.0;
    };
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for score in scores.iter_mut() {
        *score -= max;
    }
    crate::activation::exp_non_positive_in_place(scores);
    let sum: f32 = scores.iter().sum();
    if sum > 0.0 { 1.0 / sum } else { 0.0 }
}

/// Splits `job` into groups of at most `G` rows.
fn groups_of<'a, const G: usize>(job: &GroupJob<'a>) -> impl Iterator<Item = GroupJob<'a>> {
    let job = *job;
    (0..job.rows).step_by(G).map(move |offset| {
        let rows = G.min(job.rows - offset);
        GroupJob {
            first: job.first + offset,
            rows,
            ranges: job.ranges.get(offset..offset + rows).unwrap_or_default(),
            ..job
        }
    })
}

/// The query heads of a group's rows (rows past the group repeat its last row: computed, not
/// stored), or `None` when the group, the panels (of `lanes` keys) or the scores buffer do not
/// fit one another.
impl Call<'_> {
    fn group_queries<const G: usize>(
        &self,
        group: &GroupJob<'_>,
        panels: &KeyPanels,
        lanes: usize,
        weights_len: usize,
    ) -> Option<[&[f32]; G]> {
        let head_dim = self.keys.head_dim;
        let padded = panels.padded();
        let queries: [&[f32]; G] = std::array::from_fn(|g| {
            let row = group.first_row + group.first + g.min(group.rows.saturating_sub(1));
            self.queries.head(row, group.head)
        });
        let fits = queries.iter().all(|q| q.len() == head_dim)
            && group.rows > 0
            && panels.lanes == lanes
            && head_dim.is_multiple_of(lanes)
            && weights_len >= G * padded
            && panels.panels.len() >= padded * head_dim;
        fits.then_some(queries)
    }
}

/// [`Call::group_avx2`] on groups of `G` rows.
#[cfg(target_arch = "x86_64")]
fn group_avx2_entry<const G: usize>(
    call: &Call<'_>,
    job: &GroupJob<'_>,
    panels: &KeyPanels,
    weights: &mut [f32],
    out: &mut [f32],
) {
    for group in groups_of::<G>(job) {
        // SAFETY: `group_kernel` hands this kernel out only when the CPU has AVX2 and FMA.
        unsafe { call.group_avx2::<G>(&group, panels, weights, out) };
    }
}

/// One group of query rows of one head against a block's key panels (see [`Call::group`]).
type GroupKernel = fn(&Call<'_>, &GroupJob<'_>, &KeyPanels, &mut [f32], &mut [f32]);

/// Which rows and heads one [`GroupKernel`] call computes.
#[derive(Clone, Copy)]
struct GroupJob<'a> {
    /// The block's first query row.
    first_row: usize,
    /// The query head, and the key/value head it reads.
    head: usize,
    kv_head: usize,
    /// The group's first row, counted from the block's first.
    first: usize,
    /// How many rows (at most the kernel's group size).
    rows: usize,
    /// Each row's visible keys, as `[start, end)` into the block's key list.
    ranges: &'a [(usize, usize)],
}

impl GroupJob<'_> {
    /// The union of the rows' key ranges.
    fn span(&self) -> (usize, usize) {
        let low = self.ranges.iter().map(|r| r.0).min().unwrap_or(0);
        let high = self.ranges.iter().map(|r| r.1).max().unwrap_or(0);
        (low, high)
    }
}

impl Call<'_> {
    /// The vector path: per key/value head, the keys the block sees copied into panels of
    /// `lanes`, then `kernel` on each group of rows of each query head of the group. Returns
    /// false (having written nothing) when the block holds a row that sees no key, which the
    /// portable path handles.
    fn block_panels(
        &self,
        first_row: usize,
        out: &mut [f32],
        lanes: usize,
        kernel: GroupKernel,
    ) -> bool {
        let width = self.queries.heads * self.queries.head_dim;
        let rows = out.len() / width.max(1);
        if rows == 0 {
            return true;
        }
        // Each row's visible keys, as a range of the block's key list (padding removed).
        let last_row = first_row + rows - 1;
        let (start, _) = self.mask.range(first_row, self.keys.rows);
        let (_, end) = self.mask.range(last_row, self.keys.rows);
        let mut panels = KeyPanels::new(lanes);
        panels.keys = (start..end).filter(|&k| self.mask.is_real(k)).collect();
        let ranges: Vec<(usize, usize)> = (first_row..=last_row)
            .map(|row| {
                let (start, end) = self.mask.range(row, self.keys.rows);
                (
                    panels.keys.partition_point(|&k| k < start),
                    panels.keys.partition_point(|&k| k < end),
                )
            })
            .collect();
        if ranges.iter().any(|(start, end)| start >= end) {
            return false;
        }
        let groups = self.queries.heads / self.keys.heads.max(1);
        // The kernels' largest group of rows.
        const MOST_ROWS: usize = 8;
        let mut weights = vec![0.0f32; MOST_ROWS * panels.padded()];
        for kv_head in 0..self.keys.heads {
            panels.pack(&self.keys, kv_head);
            for head in kv_head * groups..(kv_head + 1) * groups {
                for first in (0..rows).step_by(MOST_ROWS) {
                    let count = MOST_ROWS.min(rows - first);
                    let job = |first: usize, rows: usize| GroupJob {
                        first_row,
                        head,
                        kv_head,
                        first,
                        rows,
                        ranges: ranges.get(first..first + rows).unwrap_or_default(),
                    };
                    kernel(self, &job(first, count), &panels, &mut weights, out);
                }
            }
        }
        true
    }
}

#[cfg(target_arch = "x86_64")]
impl Call<'_> {
    /// The AVX2 kernel for `head_dim` a multiple of 8, `G` rows: scores of 8 keys per register
    /// (`G` rows share each key load: eight independent FMA chains hide the FMA latency),
    /// softmax over each row's range, then per row the weighted sum of the values, 64
    /// dimensions (eight registers, eight chains) at a time.
    #[target_feature(enable = "avx2,fma")]
    fn group_avx2<const G: usize>(
        &self,
        group: &GroupJob<'_>,
        panels: &KeyPanels,
        weights: &mut [f32],
        out: &mut [f32],
    ) {
        use std::arch::x86_64::*;
        let head_dim = self.keys.head_dim;
        let GroupJob {
            head,
            kv_head,
            ranges,
            ..
        } = *group;
        let padded = panels.padded();
        let (low, high) = group.span();
        let Some(queries) = self.group_queries::<G>(group, panels, 8, weights.len()) else {
            return;
        };
        let scale = _mm256_set1_ps(self.scale);
        for panel in low / 8..high.div_ceil(8) {
            let panel_values = panels
                .panels
                .get(panel * 8 * head_dim..(panel + 1) * 8 * head_dim)
                .unwrap_or_default();
            let mut sums = [_mm256_setzero_ps(); G];
            for (dim, keys8) in panel_values.chunks_exact(8).enumerate() {
                // SAFETY: `keys8` is 8 values; `dim < head_dim`, the length of every query.
                unsafe {
                    let k = _mm256_loadu_ps(keys8.as_ptr());
                    for (sum, query) in sums.iter_mut().zip(&queries) {
                        let q = _mm256_set1_ps(*query.get_unchecked(dim));
                        *sum = _mm256_fmadd_ps(q, k, *sum);
                    }
                }
            }
            for (g, sum) in sums.iter().enumerate() {
                // SAFETY: row g of `weights` holds `padded` ≥ 8·(panel + 1) values.
                unsafe {
                    let at = weights.as_mut_ptr().add(g * padded + panel * 8);
                    _mm256_storeu_ps(at, _mm256_mul_ps(*sum, scale));
                }
            }
        }
        let width = self.queries.heads * head_dim;
        for (g, &range) in ranges.iter().enumerate().take(group.rows.min(G)) {
            let row = weights
                .get_mut(g * padded..(g + 1) * padded)
                .unwrap_or_default();
            if self.mask.bias.is_some() {
                let query_row = group.first_row + group.first + g;
                let scores = row.get_mut(range.0..range.1).unwrap_or_default();
                let keys = panels.keys.get(range.0..range.1).unwrap_or_default();
                for (score, &key) in scores.iter_mut().zip(keys) {
                    *score += self.mask.bias(head, query_row, key);
                }
            }
            let inverse = _mm256_set1_ps(softmax_range(row, range, (low, high)));
            let row: &[f32] = row;
            let start = (group.first + g) * width + head * head_dim;
            let Some(out) = out.get_mut(start..start + head_dim) else {
                continue;
            };
            for (chunk, out64) in out.chunks_mut(64).enumerate() {
                let blocks = out64.len() / 8;
                let mut sums = [_mm256_setzero_ps(); 8];
                for j in range.0..range.1 {
                    let (Some(&weight), Some(&key)) = (row.get(j), panels.keys.get(j)) else {
                        continue;
                    };
                    let value = self.values.head(key, kv_head);
                    let Some(value) = value.get(chunk * 64..chunk * 64 + blocks * 8) else {
                        continue;
                    };
                    let w = _mm256_set1_ps(weight);
                    for (sum, value8) in sums.iter_mut().zip(value.chunks_exact(8)) {
                        // SAFETY: `value8` is 8 values.
                        let x = unsafe { _mm256_loadu_ps(value8.as_ptr()) };
                        *sum = _mm256_fmadd_ps(w, x, *sum);
                    }
                }
                for (sum, out8) in sums.iter().zip(out64.chunks_exact_mut(8)) {
                    // SAFETY: `out8` is 8 values.
                    unsafe { _mm256_storeu_ps(out8.as_mut_ptr(), _mm256_mul_ps(*sum, inverse)) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use crate::{max_abs_diff, random_values};

    /// A case: shapes, mask, and how the keys are laid out.
    #[derive(Debug, Clone, Copy)]
    struct Case {
        heads: usize,
        kv_heads: usize,
        dim: usize,
        queries: usize,
        keys: usize,
        visibility: Visibility,
        padded: bool,
        /// With a distance bias (per head: `0.1·(h + 1)·distance`, clamped at a span of 9).
        biased: bool,
    }

    /// The distance-bias table of [`Case::biased`] cases: span 9, `heads` heads.
    fn bias_table(heads: usize) -> Vec<f32> {
        let span = 9i64;
        (0..heads)
            .flat_map(|h| (-(span - 1)..span).map(move |d| 0.1 * (h as f32 + 1.0) * d as f32))
            .collect()
    }

    /// The plain definition ([`crate::reference::attend`], in f64) per row and head, keys
    /// and values `[kv_heads, keys, dim]`, queries `[queries, heads, dim]`.
    fn plain(case: Case, q: &[f32], k: &[f32], v: &[f32], padding: Option<&[bool]>) -> Vec<f32> {
        let (heads, kv_heads, dim) = (case.heads, case.kv_heads, case.dim);
        let (queries, keys) = (case.queries, case.keys);
        let table = bias_table(heads);
        let mask = KeyMask {
            visibility: case.visibility,
            padding,
            bias: None,
        };
        let mut out = Vec::with_capacity(queries * heads * dim);
        for i in 0..queries {
            let (start, end) = mask.range(i, keys);
            let visible: Vec<bool> = (0..keys)
                .map(|j| j >= start && j < end && mask.is_real(j))
                .collect();
            for h in 0..heads {
                let g = h / (heads / kv_heads);
                let rows = |values: &'_ [f32]| -> Vec<Vec<f32>> {
                    (0..keys)
                        .map(|j| values[(g * keys + j) * dim..(g * keys + j + 1) * dim].to_vec())
                        .collect()
                };
                let (key_rows, value_rows) = (rows(k), rows(v));
                let key_refs: Vec<&[f32]> = key_rows.iter().map(Vec::as_slice).collect();
                let value_refs: Vec<&[f32]> = value_rows.iter().map(Vec::as_slice).collect();
                let query = &q[(i * heads + h) * dim..(i * heads + h + 1) * dim];
                // Written out from the definition, independently of `DistanceBias::at`.
                let position = mask.query_position(i) as i64;
                let bias: Vec<f32> = (0..keys as i64)
                    .map(|j| table[h * 17 + ((j - position).clamp(-8, 8) + 8) as usize])
                    .collect();
                out.extend(crate::reference::attend(
                    query,
                    &key_refs,
                    &value_refs,
                    &visible,
                    0.3,
                    case.biased.then_some(bias.as_slice()),
                ));
            }
        }
        out
    }

    /// Runs `case` with the queries, keys and values interleaved in one packed QKV buffer
    /// (keys and values only for bidirectional cases with as many keys as queries) or with the
    /// keys and values in cache slabs with spare capacity.
    fn run(case: Case, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let (heads, kv_heads, dim) = (case.heads, case.kv_heads, case.dim);
        let (queries, keys) = (case.queries, case.keys);
        let q = random_values(seed, queries * heads * dim);
        let k = random_values(seed + 1, kv_heads * keys * dim);
        let v = random_values(seed + 2, kv_heads * keys * dim);
        let padding: Vec<bool> = (0..keys).map(|j| j % 5 != 1).collect();
        let padding = case.padded.then_some(padding.as_slice());
        let want = plain(case, &q, &k, &v, padding);
        let table = bias_table(heads);
        let mask = KeyMask {
            visibility: case.visibility,
            padding,
            bias: case.biased.then_some(DistanceBias {
                values: &table,
                span: 9,
            }),
        };
        let mut got = vec![0.0f32; want.len()];
        if queries == keys && heads == kv_heads {
            // One `[rows, 3·width]` buffer, as the encoder's fused projection writes.
            let width = heads * dim;
            let mut qkv = vec![0.0f32; keys * 3 * width];
            for r in 0..keys {
                for h in 0..heads {
                    for d in 0..dim {
                        qkv[r * 3 * width + h * dim + d] = q[(r * heads + h) * dim + d];
                        qkv[r * 3 * width + width + h * dim + d] = k[(h * keys + r) * dim + d];
                        qkv[r * 3 * width + 2 * width + h * dim + d] = v[(h * keys + r) * dim + d];
                    }
                }
            }
            let view = |offset| HeadRows::interleaved(&qkv, offset, keys, (heads, dim), 3 * width);
            attend(view(0), view(width), view(2 * width), mask, 0.3, &mut got).unwrap();
        } else {
            let capacity = keys + 3;
            let slab = |values: &[f32]| -> Vec<f32> {
                let mut slab = vec![7.0f32; kv_heads * capacity * dim];
                for h in 0..kv_heads {
                    slab[h * capacity * dim..(h * capacity + keys) * dim]
                        .copy_from_slice(&values[h * keys * dim..(h + 1) * keys * dim]);
                }
                slab
            };
            let (k_slab, v_slab) = (slab(&k), slab(&v));
            let queries_view = HeadRows::interleaved(&q, 0, queries, (heads, dim), heads * dim);
            let shape = (kv_heads, capacity, dim);
            attend(
                queries_view,
                HeadRows::head_major(&k_slab, shape, keys),
                HeadRows::head_major(&v_slab, shape, keys),
                mask,
                0.3,
                &mut got,
            )
            .unwrap();
        }
        (got, want)
    }

    #[test]
    fn matches_the_additive_mask_definition() {
        let causal = |first, window| Visibility::Causal { first, window };
        let mut cases = Vec::new();
        for dim in [8, 16, 32, 48, 64, 80, 96, 128, 144] {
            for (heads, kv_heads) in [(2, 2), (6, 2)] {
                for (queries, keys, visibility) in [
                    (1, 1, causal(0, None)),
                    (7, 7, causal(0, None)),
                    (1, 40, causal(39, None)),
                    (5, 40, causal(35, Some(6))),
                    (70, 70, causal(0, Some(9))),
                    (33, 33, Visibility::Bidirectional),
                    (3, 20, Visibility::Bidirectional),
                    (40, 40, Visibility::Window { radius: 4 }),
                    (9, 9, Visibility::Window { radius: 0 }),
                ] {
                    for (padded, biased) in
                        [(false, false), (true, false), (false, true), (true, true)]
                    {
                        cases.push(Case {
                            heads,
                            kv_heads,
                            dim,
                            queries,
                            keys,
                            visibility,
                            padded,
                            biased,
                        });
                    }
                }
            }
        }
        for (index, case) in cases.into_iter().enumerate() {
            let (got, want) = run(case, index as u64 * 7 + 1);
            let diff = max_abs_diff(&got, &want);
            assert!(diff < 1e-5, "{case:?}: {diff}");
        }
    }

    #[test]
    fn many_rows_split_over_threads_give_the_same_values() {
        let case = Case {
            heads: 4,
            kv_heads: 2,
            dim: 64,
            queries: 300,
            keys: 300,
            visibility: Visibility::Causal {
                first: 0,
                window: None,
            },
            padded: true,
            biased: true,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let (got, want) = pool.install(|| run(case, 5));
        assert!(max_abs_diff(&got, &want) < 1e-5);
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let data = vec![0.0f32; 16];
        let slab = HeadRows::head_major(&data, (1, 4, 4), 2);
        let causal = KeyMask {
            visibility: Visibility::Causal {
                first: 1,
                window: None,
            },
            padding: None,
            bias: None,
        };
        let query = |rows| HeadRows::interleaved(&data, 0, rows, (1, 4), 4);
        let mut out = vec![0.0f32; 8];
        assert!(attend(query(1), slab, slab, causal, 1.0, &mut out[..4]).is_ok());
        assert!(attend(query(1), slab, slab, causal, 1.0, &mut out[..3]).is_err());
        // Two causal queries from position 1 need three keys.
        assert!(attend(query(2), slab, slab, causal, 1.0, &mut out).is_err());
        let short_mask = KeyMask {
            padding: Some(&[true]),
            ..causal
        };
        assert!(attend(query(1), slab, slab, short_mask, 1.0, &mut out[..4]).is_err());
        // A distance bias whose table is not `heads · (2·span − 1)` long.
        let table = [0.0f32; 4];
        for span in [0, 2, 3] {
            let biased = KeyMask {
                bias: Some(DistanceBias {
                    values: &table[..span.min(4)],
                    span,
                }),
                ..causal
            };
            assert!(attend(query(1), slab, slab, biased, 1.0, &mut out[..4]).is_err());
        }
        // A view reaching past its buffer.
        let long = HeadRows::head_major(&data, (2, 4, 4), 2);
        assert!(attend(query(1), long, long, causal, 1.0, &mut out[..4]).is_err());
        let offset = HeadRows::interleaved(&data, 13, 1, (1, 4), 4);
        assert!(attend(offset, slab, slab, causal, 1.0, &mut out[..4]).is_err());
    }
}
