//! Keys and values of the tokens a decoder has seen, one [`SequenceCache`] per sequence.
//!
//! A sequence's cache holds, per layer, two slabs `[kv_heads, capacity, head_dim]` (keys,
//! values). Prefill and decoding write the new positions in place and attention reads the slabs
//! in place ([`safeformers_kernels::attention`]); nothing already cached is copied again. A
//! slab reserves what [`SequenceCache::reserve`] asks for (generation reserves prompt plus new
//! tokens up front), and only grows, by doubling, beyond that.
//!
//! A batch is a set of sequences that may differ in length: there is no padding in a
//! [`SequenceCache`]. [`KvCache`] is the rows of one tensor call of [`crate::CausalLm::forward`]
//! (`[batch, past + new]` with a padding mask), kept for the tensor interface.

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use safeformers_kernels::attention::HeadRows;

/// Positions reserved when a slab is first written and nothing was reserved.
const INITIAL_CAPACITY: usize = 64;

/// One layer's slabs of one sequence.
#[derive(Debug, Clone, Default)]
struct LayerSlabs {
    keys: Vec<f32>,
    values: Vec<f32>,
    kv_heads: usize,
    head_dim: usize,
    len: usize,
    capacity: usize,
}

impl LayerSlabs {
    /// Sets the head shape on first use; a different shape later is an error.
    fn shape(&mut self, layer: usize, kv_heads: usize, head_dim: usize) -> Result<()> {
        if self.capacity == 0 && self.len == 0 {
            (self.kv_heads, self.head_dim) = (kv_heads, head_dim);
        }
        if (self.kv_heads, self.head_dim) != (kv_heads, head_dim) {
            return Err(Error::Cache {
                reason: format!(
                    "layer {layer} holds {} heads of {}, new keys have {kv_heads} heads of \
                     {head_dim}",
                    self.kv_heads, self.head_dim
                ),
            });
        }
        Ok(())
    }

    /// Makes room for `needed` positions per head (at least `reserved`).
    fn grow(&mut self, needed: usize, reserved: usize) -> Result<()> {
        if needed <= self.capacity {
            return Ok(());
        }
        let capacity = needed
            .max(self.capacity.saturating_mul(2))
            .max(reserved)
            .max(INITIAL_CAPACITY);
        let size = self
            .kv_heads
            .checked_mul(capacity)
            .and_then(|size| size.checked_mul(self.head_dim))
            .ok_or_else(|| Error::Cache {
                reason: format!(
                    "{capacity} positions of {} heads is too large",
                    self.kv_heads
                ),
            })?;
        let (old_stride, new_stride) = (self.capacity * self.head_dim, capacity * self.head_dim);
        let filled = self.len * self.head_dim;
        for buffer in [&mut self.keys, &mut self.values] {
            let mut grown = vec![0.0f32; size];
            if old_stride > 0 {
                for (old, new) in buffer
                    .chunks_exact(old_stride)
                    .zip(grown.chunks_exact_mut(new_stride))
                {
                    if let (Some(new), Some(old)) = (new.get_mut(..filled), old.get(..filled)) {
                        new.copy_from_slice(old);
                    }
                }
            }
            *buffer = grown;
        }
        self.capacity = capacity;
        Ok(())
    }

    /// Writes `new` positions given token-major (`[new, kv_heads · head_dim]`).
    fn write_rows(&mut self, keys: &[f32], values: &[f32], new: usize) {
        let (head_dim, stride) = (self.head_dim, self.capacity * self.head_dim);
        let width = self.kv_heads * head_dim;
        for (token, (key_row, value_row)) in keys
            .chunks_exact(width)
            .zip(values.chunks_exact(width))
            .take(new)
            .enumerate()
        {
            let at = (self.len + token) * head_dim;
            for (head, (key, value)) in key_row
                .chunks_exact(head_dim)
                .zip(value_row.chunks_exact(head_dim))
                .enumerate()
            {
                let start = head * stride + at;
                if let Some(slot) = self.keys.get_mut(start..start + head_dim) {
                    slot.copy_from_slice(key);
                }
                if let Some(slot) = self.values.get_mut(start..start + head_dim) {
                    slot.copy_from_slice(value);
                }
            }
        }
        self.len += new;
    }

    /// Writes `new` positions given head-major (`[kv_heads, new, head_dim]`).
    fn write_heads(&mut self, keys: &[f32], values: &[f32], new: usize) {
        let chunk = new * self.head_dim;
        let (stride, at) = (self.capacity * self.head_dim, self.len * self.head_dim);
        if chunk > 0 {
            for (source, slab) in [(keys, &mut self.keys), (values, &mut self.values)] {
                for (part, head) in source
                    .chunks_exact(chunk)
                    .zip(slab.chunks_exact_mut(stride))
                {
                    if let Some(slot) = head.get_mut(at..at + chunk) {
                        slot.copy_from_slice(part);
                    }
                }
            }
        }
        self.len += new;
    }

    fn slab<'a>(&self, data: &'a [f32]) -> HeadRows<'a> {
        HeadRows::head_major(
            data,
            (self.kv_heads, self.capacity, self.head_dim),
            self.len,
        )
    }

    /// The filled part, head-major `[kv_heads, len, head_dim]` (a copy).
    fn gather(&self, buffer: &[f32], out: &mut Vec<f32>) {
        let stride = (self.capacity * self.head_dim).max(1);
        for head in buffer.chunks_exact(stride) {
            out.extend_from_slice(head.get(..self.len * self.head_dim).unwrap_or_default());
        }
    }
}

/// The key/value cache of one sequence: per layer, slabs written in place.
#[derive(Debug, Clone, Default)]
pub struct SequenceCache {
    layers: Vec<LayerSlabs>,
    reserved: usize,
    /// Padding positions at the start (only when the tensor interface left-padded this row).
    pub(crate) left_padding: usize,
}

impl SequenceCache {
    /// An empty cache for `num_layers` layers.
    pub fn new(num_layers: usize) -> SequenceCache {
        SequenceCache {
            layers: vec![LayerSlabs::default(); num_layers],
            reserved: 0,
            left_padding: 0,
        }
    }

    /// Layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Positions cached (those of the first layer: all layers agree between forward calls).
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |layer| layer.len)
    }

    /// Positions cached in layer `layer` (during a forward call, the layers before it have
    /// already taken the new tokens).
    pub fn layer_len(&self, layer: usize) -> Result<usize> {
        self.layers
            .get(layer)
            .map(|slabs| slabs.len)
            .ok_or(Error::CacheLayer { layer })
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reserves room for `positions` positions in total, so that no write up to there moves
    /// what is cached.
    pub fn reserve(&mut self, positions: usize) -> Result<()> {
        self.reserved = self.reserved.max(positions);
        for layer in &mut self.layers {
            if layer.capacity > 0 {
                layer.grow(positions, positions)?;
            }
        }
        Ok(())
    }

    /// Forgets every position from `len` on (a chat turn whose history diverges there).
    pub fn truncate(&mut self, len: usize) {
        for layer in &mut self.layers {
            layer.len = layer.len.min(len);
        }
        self.left_padding = self.left_padding.min(len);
    }

    /// Forgets everything, keeping the memory.
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    fn layer_mut(&mut self, layer: usize) -> Result<&mut LayerSlabs> {
        self.layers
            .get_mut(layer)
            .ok_or(Error::CacheLayer { layer })
    }

    /// Appends `new` positions to layer `layer`, given token-major: `keys` and `values`
    /// `[new, kv_heads · head_dim]`.
    pub fn append_rows(
        &mut self,
        layer: usize,
        shape: (usize, usize),
        keys: &[f32],
        values: &[f32],
    ) -> Result<()> {
        self.append(layer, shape, keys, values, Layout::TokenMajor)
    }

    /// Appends `new` positions to layer `layer`, given head-major: `[kv_heads, new, head_dim]`.
    pub fn append_heads(
        &mut self,
        layer: usize,
        shape: (usize, usize),
        keys: &[f32],
        values: &[f32],
    ) -> Result<()> {
        self.append(layer, shape, keys, values, Layout::HeadMajor)
    }

    fn append(
        &mut self,
        layer: usize,
        (kv_heads, head_dim): (usize, usize),
        keys: &[f32],
        values: &[f32],
        layout: Layout,
    ) -> Result<()> {
        let width = kv_heads * head_dim;
        let new = keys.len().checked_div(width).unwrap_or(0);
        if width == 0 || keys.len() != new * width || values.len() != keys.len() {
            let expected = match layout {
                Layout::TokenMajor => format!("rows of {kv_heads} heads × {head_dim}"),
                Layout::HeadMajor => format!("[{kv_heads}, _, {head_dim}]"),
            };
            return Err(Error::Cache {
                reason: format!(
                    "{} keys and {} values are not {expected}",
                    keys.len(),
                    values.len()
                ),
            });
        }
        let reserved = self.reserved;
        let slabs = self.layer_mut(layer)?;
        slabs.shape(layer, kv_heads, head_dim)?;
        slabs.grow(slabs.len + new, reserved)?;
        match layout {
            Layout::TokenMajor => slabs.write_rows(keys, values, new),
            Layout::HeadMajor => slabs.write_heads(keys, values, new),
        }
        Ok(())
    }

    /// Layer `layer`'s keys and values, read in place.
    pub fn slabs(&self, layer: usize) -> Result<(HeadRows<'_>, HeadRows<'_>)> {
        let slabs = self.layers.get(layer).ok_or(Error::CacheLayer { layer })?;
        Ok((slabs.slab(&slabs.keys), slabs.slab(&slabs.values)))
    }
}

/// The caches of the rows of one tensor call ([`crate::CausalLm::forward`]): row `b` of the
/// batch is sequence `b`. Decoders read and write each row's [`SequenceCache`] in place;
/// [`KvCache::append`] is the tensor-shaped access for models written on tensors.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    num_layers: usize,
    rows: Vec<SequenceCache>,
}

impl KvCache {
    /// An empty cache for `num_layers` layers (its rows appear with the first call).
    pub fn new(num_layers: usize) -> KvCache {
        KvCache {
            num_layers,
            rows: Vec::new(),
        }
    }

    /// A cache over existing sequences (row `b` is `rows[b]`).
    pub fn from_sequences(num_layers: usize, rows: Vec<SequenceCache>) -> KvCache {
        KvCache { num_layers, rows }
    }

    /// The rows' sequence caches.
    pub fn into_sequences(self) -> Vec<SequenceCache> {
        self.rows
    }

    /// Layers.
    pub fn num_layers(&self) -> usize {
        self.num_layers
    }

    /// Tokens cached so far (0 when empty).
    pub fn seq_len(&self) -> usize {
        self.rows.first().map_or(0, SequenceCache::len)
    }

    /// Forgets every cached token (and the rows).
    pub fn clear(&mut self) {
        self.rows.clear();
    }

    /// The row caches for a call over `batch` rows: created when empty, else `batch` must be
    /// the number of rows.
    pub fn rows_mut(&mut self, batch: usize) -> Result<&mut [SequenceCache]> {
        if self.rows.is_empty() {
            self.rows = vec![SequenceCache::new(self.num_layers); batch];
        }
        if self.rows.len() != batch {
            return Err(Error::Cache {
                reason: format!("{} cached rows, the call has {batch}", self.rows.len()),
            });
        }
        Ok(&mut self.rows)
    }

    /// Appends this call's keys and values (`[batch, kv_heads, new, head_dim]`) to layer
    /// `layer` and returns all of that layer's keys and values so far, as tensors of the same
    /// layout (a copy: for models written on tensors; decoders here read the slabs in place).
    pub fn append(
        &mut self,
        layer: usize,
        keys: &Tensor,
        values: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let (batch, kv_heads, _, head_dim) = keys.dims4()?;
        if values.dims() != keys.dims() {
            return Err(Error::Cache {
                reason: format!(
                    "keys {:?} and values {:?} differ in shape",
                    keys.dims(),
                    values.dims()
                ),
            });
        }
        let key_values = keys.flatten_all()?.to_vec1::<f32>()?;
        let value_values = values.flatten_all()?.to_vec1::<f32>()?;
        let per_row = key_values.len().checked_div(batch).unwrap_or(0);
        let rows = self.rows_mut(batch)?;
        for (row, (k, v)) in rows.iter_mut().zip(
            key_values
                .chunks_exact(per_row.max(1))
                .zip(value_values.chunks_exact(per_row.max(1))),
        ) {
            row.append_heads(layer, (kv_heads, head_dim), k, v)?;
        }
        self.tensors(layer, keys.device())
    }

    /// Appends one new position per row to layer `layer`: `keys` and `values`
    /// `[batch, kv_heads · head_dim]` row-major.
    pub fn append_step(
        &mut self,
        layer: usize,
        batch: usize,
        kv_heads: usize,
        head_dim: usize,
        keys: &[f32],
        values: &[f32],
    ) -> Result<()> {
        let width = (kv_heads * head_dim).max(1);
        if keys.len() != batch * width || values.len() != keys.len() {
            return Err(Error::Cache {
                reason: format!("{} keys for {batch} rows of {width}", keys.len()),
            });
        }
        let rows = self.rows_mut(batch)?;
        for (row, (k, v)) in rows
            .iter_mut()
            .zip(keys.chunks_exact(width).zip(values.chunks_exact(width)))
        {
            row.append_rows(layer, (kv_heads, head_dim), k, v)?;
        }
        Ok(())
    }

    /// Layer `layer`'s keys and values of sequence `row`, read in place.
    pub fn slabs(&self, layer: usize, row: usize) -> Result<(HeadRows<'_>, HeadRows<'_>)> {
        self.rows
            .get(row)
            .ok_or_else(|| Error::Cache {
                reason: format!("no sequence {row} in layer {layer}"),
            })?
            .slabs(layer)
    }

    /// Layer `layer` of every row as `[batch, kv_heads, len, head_dim]` tensors (a copy).
    fn tensors(&self, layer: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let mut keys = Vec::new();
        let mut values = Vec::new();
        let mut shape = (self.rows.len(), 0, 0, 0);
        for row in &self.rows {
            let slabs = row.layers.get(layer).ok_or(Error::CacheLayer { layer })?;
            slabs.gather(&slabs.keys, &mut keys);
            slabs.gather(&slabs.values, &mut values);
            shape = (self.rows.len(), slabs.kv_heads, slabs.len, slabs.head_dim);
        }
        Ok((
            Tensor::from_vec(keys, shape, device)?,
            Tensor::from_vec(values, shape, device)?,
        ))
    }
}

/// How appended keys and values are laid out.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// `[new, kv_heads · head_dim]`.
    TokenMajor,
    /// `[kv_heads, new, head_dim]`.
    HeadMajor,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    /// Growing past the reservation keeps what was written; token-major and head-major writes
    /// land in the same places.
    #[test]
    fn writes_land_in_place_and_survive_growth() {
        let (kv_heads, head_dim) = (2, 3);
        let mut cache = SequenceCache::new(1);
        cache.reserve(4).unwrap();
        let rows: Vec<f32> = (0..5 * 6).map(|v| v as f32).collect();
        cache
            .append_rows(0, (kv_heads, head_dim), &rows[..12], &rows[..12])
            .unwrap();
        let before = cache.slabs(0).unwrap().0.data.as_ptr();
        cache
            .append_rows(0, (kv_heads, head_dim), &rows[12..24], &rows[12..24])
            .unwrap();
        assert_eq!(cache.slabs(0).unwrap().0.data.as_ptr(), before, "no move");
        cache
            .append_rows(0, (kv_heads, head_dim), &rows[24..], &rows[24..])
            .unwrap();
        assert_eq!(cache.len(), 5);
        let (keys, _) = cache.slabs(0).unwrap();
        for token in 0..5 {
            for head in 0..kv_heads {
                let start = head * keys.head_stride + token * head_dim;
                let want = &rows[token * 6 + head * 3..token * 6 + head * 3 + 3];
                assert_eq!(&keys.data[start..start + 3], want);
            }
        }
        // The same through the head-major tensor interface.
        let mut batch = KvCache::new(1);
        let heads_major: Vec<f32> = (0..kv_heads)
            .flat_map(|h| (0..5).flat_map(move |t| (0..3).map(move |d| (t * 6 + h * 3 + d) as f32)))
            .collect();
        let tensor =
            Tensor::from_vec(heads_major, (1, kv_heads, 5, head_dim), &Device::Cpu).unwrap();
        let (all, _) = batch.append(0, &tensor, &tensor).unwrap();
        assert_eq!(
            all.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        cache.truncate(2);
        assert_eq!(cache.len(), 2);
        assert!(
            cache
                .append_rows(0, (3, 3), &rows[..9], &rows[..9])
                .is_err()
        );
    }
}
