//! The interface between decoder-only language models and generation.
//!
//! A decoder (`gpt2.rs`, `llama.rs`, ...) implements [`CausalLm`]; the generation loop in
//! `safeformers-pipelines` only sees this trait. One call runs the model on the *new* tokens of
//! every row, appends their keys and values to a [`KvCache`], and returns the logits of those
//! tokens. Prefill is a call with the whole prompt; each decode step is a call with one token.
//!
//! Shapes and conventions (the same as Transformers' `generate`):
//! - `input_ids`: `u32` `[batch, new]`.
//! - `position_ids`: `i64` `[batch, new]`. With left padding, generation passes
//!   `cumsum(attention_mask) - 1` (pad positions set to 1), exactly as Transformers'
//!   `prepare_inputs_for_generation`; a plain forward without padding passes `0..new`.
//! - `attention_mask`: `u32` `[batch, past + new]`, 1 for real tokens and 0 for padding, covering
//!   the cached tokens and the new ones. The model adds causality (and a sliding window where the
//!   config has one) itself.
//! - Returns logits `f32` `[batch, new, vocab_size]`.

use std::fmt::Debug;

use candle_core::Tensor;

use crate::config::ModelConfig;
use crate::error::Result;
use safeformers_kernels::decode_attention::CacheSlab;

/// A decoder-only language model with an LM head (`AutoModelForCausalLM`).
pub trait CausalLm: Debug + Send + Sync {
    /// The parsed `config.json`.
    fn config(&self) -> &ModelConfig;

    /// Rows of the logits.
    fn vocab_size(&self) -> usize;

    /// The longest sequence (prompt plus generated tokens) the model was built for
    /// (`max_position_embeddings`, `n_positions`), if the config states one.
    fn context_length(&self) -> Option<usize>;

    /// An empty cache for this model.
    fn new_cache(&self) -> KvCache;

    /// Runs the new tokens, appends them to `cache`, and returns their logits (see the module
    /// documentation for shapes).
    fn forward(
        &self,
        input_ids: &Tensor,
        position_ids: &Tensor,
        attention_mask: &Tensor,
        cache: &mut KvCache,
    ) -> Result<Tensor>;

    /// As [`CausalLm::forward`], but returns only the logits of the last new token of every
    /// row, `[batch, 1, vocab_size]` — all generation needs. Models override it to skip the LM
    /// head on the other positions of a prefill.
    fn forward_last(
        &self,
        input_ids: &Tensor,
        position_ids: &Tensor,
        attention_mask: &Tensor,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let logits = self.forward(input_ids, position_ids, attention_mask, cache)?;
        let last = logits.dim(1)?.saturating_sub(1);
        Ok(logits.narrow(1, last, 1)?)
    }
}

/// Keys and values of every layer for the tokens seen so far.
///
/// Each layer keeps two preallocated buffers `[batch, kv_heads, capacity, head_dim]` that grow by
/// doubling, so a decoding step writes its token in place instead of concatenating tensors.
/// [`KvCache::append`] serves tensor-based attention (prefill, Llama); decoders with a fused
/// one-token path use [`KvCache::append_step`] and read [`KvCache::slabs`] in place.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<LayerCache>>,
}

/// One layer's buffers.
#[derive(Debug, Clone)]
struct LayerCache {
    keys: Vec<f32>,
    values: Vec<f32>,
    batch: usize,
    kv_heads: usize,
    head_dim: usize,
    len: usize,
    capacity: usize,
}

/// Positions reserved when a layer's cache is first written (more are added by doubling).
const INITIAL_CAPACITY: usize = 256;

impl LayerCache {
    fn new(batch: usize, kv_heads: usize, head_dim: usize) -> LayerCache {
        LayerCache {
            keys: Vec::new(),
            values: Vec::new(),
            batch,
            kv_heads,
            head_dim,
            len: 0,
            capacity: 0,
        }
    }

    /// Makes room for `needed` positions per head.
    fn reserve(&mut self, needed: usize) -> Result<()> {
        if needed <= self.capacity {
            return Ok(());
        }
        let capacity = needed.max(self.capacity * 2).max(INITIAL_CAPACITY);
        let size = [self.batch, self.kv_heads, capacity, self.head_dim]
            .iter()
            .try_fold(1usize, |acc, &dim| acc.checked_mul(dim))
            .ok_or_else(|| cache_error(format!("a cache of {capacity} positions is too large")))?;
        let mut keys = vec![0.0f32; size];
        let mut values = vec![0.0f32; size];
        let old_stride = self.capacity * self.head_dim;
        let new_stride = capacity * self.head_dim;
        let filled = self.len * self.head_dim;
        if old_stride > 0 {
            for (old, new) in [(&self.keys, &mut keys), (&self.values, &mut values)] {
                for (old_head, new_head) in old
                    .chunks_exact(old_stride)
                    .zip(new.chunks_exact_mut(new_stride))
                {
                    if let (Some(dst), Some(src)) =
                        (new_head.get_mut(..filled), old_head.get(..filled))
                    {
                        dst.copy_from_slice(src);
                    }
                }
            }
        }
        self.keys = keys;
        self.values = values;
        self.capacity = capacity;
        Ok(())
    }

    /// Writes `new` positions from `[batch, kv_heads, new, head_dim]` row-major `keys`/`values`.
    fn write(&mut self, keys: &[f32], values: &[f32], new: usize) -> Result<()> {
        let expected = self.batch * self.kv_heads * new * self.head_dim;
        if keys.len() != expected || values.len() != expected {
            return Err(cache_error(format!(
                "{} keys and {} values for {new} new positions, expected {expected}",
                keys.len(),
                values.len()
            )));
        }
        self.reserve(self.len + new)?;
        let chunk = new * self.head_dim;
        let stride = self.capacity * self.head_dim;
        let offset = self.len * self.head_dim;
        if chunk > 0 {
            for (src, dst) in [(keys, &mut self.keys), (values, &mut self.values)] {
                for (src, head) in src.chunks_exact(chunk).zip(dst.chunks_exact_mut(stride)) {
                    if let Some(dst) = head.get_mut(offset..offset + chunk) {
                        dst.copy_from_slice(src);
                    }
                }
            }
        }
        self.len += new;
        Ok(())
    }

    /// The filled part as `[batch, kv_heads, len, head_dim]` tensors (a copy).
    fn tensors(&self, device: &candle_core::Device) -> Result<(Tensor, Tensor)> {
        let stride = self.capacity * self.head_dim;
        let filled = self.len * self.head_dim;
        let gather = |buffer: &[f32]| -> Vec<f32> {
            let mut out = Vec::with_capacity(self.batch * self.kv_heads * filled);
            for head in buffer.chunks_exact(stride.max(1)) {
                out.extend_from_slice(head.get(..filled).unwrap_or_default());
            }
            out
        };
        let shape = (self.batch, self.kv_heads, self.len, self.head_dim);
        Ok((
            Tensor::from_vec(gather(&self.keys), shape, device)?,
            Tensor::from_vec(gather(&self.values), shape, device)?,
        ))
    }
}

fn cache_error(message: String) -> crate::error::Error {
    crate::error::Error::Candle(candle_core::Error::Msg(format!("KV cache: {message}")))
}

impl KvCache {
    /// An empty cache for `num_layers` layers.
    pub fn new(num_layers: usize) -> KvCache {
        KvCache {
            layers: vec![None; num_layers],
        }
    }

    /// Tokens cached so far (0 when empty).
    pub fn seq_len(&self) -> usize {
        self.layers
            .first()
            .and_then(|layer| layer.as_ref())
            .map_or(0, |layer| layer.len)
    }

    /// Forgets every cached token.
    pub fn clear(&mut self) {
        for layer in &mut self.layers {
            *layer = None;
        }
    }

    /// The layer's buffers, created for this shape when empty; a shape change is an error.
    fn layer_mut(
        &mut self,
        layer: usize,
        batch: usize,
        kv_heads: usize,
        head_dim: usize,
    ) -> Result<&mut LayerCache> {
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or(crate::error::Error::CacheLayer { layer })?;
        let cache = slot.get_or_insert_with(|| LayerCache::new(batch, kv_heads, head_dim));
        if (cache.batch, cache.kv_heads, cache.head_dim) != (batch, kv_heads, head_dim) {
            return Err(cache_error(format!(
                "layer {layer} holds [{}, {}, _, {}], new keys are [{batch}, {kv_heads}, _, {head_dim}]",
                cache.batch, cache.kv_heads, cache.head_dim
            )));
        }
        Ok(cache)
    }

    /// Appends this step's keys and values (`[batch, kv_heads, new, head_dim]`) to layer `layer`
    /// and returns all of that layer's keys and values so far, as tensors of the same layout.
    pub fn append(
        &mut self,
        layer: usize,
        keys: &Tensor,
        values: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let (batch, kv_heads, new, head_dim) = keys.dims4()?;
        if values.dims() != keys.dims() {
            return Err(cache_error(format!(
                "keys {:?} and values {:?} differ in shape",
                keys.dims(),
                values.dims()
            )));
        }
        let key_values = keys.flatten_all()?.to_vec1::<f32>()?;
        let value_values = values.flatten_all()?.to_vec1::<f32>()?;
        let cache = self.layer_mut(layer, batch, kv_heads, head_dim)?;
        cache.write(&key_values, &value_values, new)?;
        cache.tensors(keys.device())
    }

    /// Appends one new position per sequence to layer `layer`: `keys` and `values` are
    /// `[batch, kv_heads * head_dim]` row-major.
    pub fn append_step(
        &mut self,
        layer: usize,
        batch: usize,
        kv_heads: usize,
        head_dim: usize,
        keys: &[f32],
        values: &[f32],
    ) -> Result<()> {
        self.layer_mut(layer, batch, kv_heads, head_dim)?
            .write(keys, values, 1)
    }

    /// Layer `layer`'s keys and values of sequence `row`, read in place.
    pub fn slabs<'a>(&'a self, layer: usize, row: usize) -> Result<(CacheSlab<'a>, CacheSlab<'a>)> {
        let cache = self
            .layers
            .get(layer)
            .and_then(Option::as_ref)
            .ok_or(crate::error::Error::CacheLayer { layer })?;
        let size = cache.kv_heads * cache.capacity * cache.head_dim;
        let start = row * size;
        let slab = |buffer: &'a [f32]| -> Result<CacheSlab<'a>> {
            Ok(CacheSlab {
                data: buffer
                    .get(start..start + size)
                    .ok_or_else(|| cache_error(format!("no sequence {row} in layer {layer}")))?,
                kv_heads: cache.kv_heads,
                capacity: cache.capacity,
                len: cache.len,
                head_dim: cache.head_dim,
            })
        };
        Ok((slab(&cache.keys)?, slab(&cache.values)?))
    }
}
