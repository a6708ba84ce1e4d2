"""Our own NumPy reference of JinaBert v2 (jinaai/jina-embeddings-v2-base-en, -small-en) inference.

NOT Jina AI's code. The model repos' `auto_map` points at `jinaai/jina-bert-implementation`
(`modeling_bert.py`, `configuration_bert.py`), and no copy of those files exists in the material
this project may read (see `shared/reference/remote-code/jina_bert/SOURCES.md`). This file is
written from the maths SOURCES.md records, on which TEI's and candle's independent ports and the
published description agree, with the two places where those ports go wrong done as the
published code does:

* Embeddings: `word_embeddings[input_ids] + token_type_embeddings[token_type_ids]` (ids
  default 0), no position embeddings (`position_embedding_type` is `"alibi"`), then
  `embeddings.LayerNorm`.
* Each layer, post-norm as BERT:
  `h = attention.output.LayerNorm(attention.output.dense(attn(x)) + x)`, with
  `scores = q kᵀ / sqrt(head_dim) + (1 - mask) * finfo(float32).min + alibi`; then the GLU MLP
  `g = mlp.gated_layers(h)` (no bias, width 2 * intermediate_size),
  `m = act(g[..., :I]) * g[..., I:]` (the activation on the FIRST half),
  `x = mlp.layernorm(mlp.wo(m) + h)`.
* `act` comes from `feed_forward_type`: `"geglu"` is the exact (erf) GELU, `"reglu"` is ReLU.
  `hidden_act` is NOT read (TEI's port reads it; candle's hard-codes GELU).
* ALiBi is symmetric: `alibi[h, i, j] = -slope_h * |i - j|`, with the ALiBi paper's slopes: for
  n heads a power of two, `start = 2^(-8/n)` and `slope_h = start^(h+1)`; otherwise the slopes of
  the closest lower power of two p, followed by every other slope of 2p (`[0::2]`), up to n.
  12 heads: 2^-1 .. 2^-8, then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5.
* No final norm. `pooler.dense` (+ tanh) exists in the checkpoint but embeddings use mean pooling
  of `last_hidden_state`.

Everything is computed in float64 from the checkpoint's float32 weights. Used by
`scripts/make_jina_bert_fixtures.py`, which also checks it against a separate torch
re-implementation (`scripts/jina_bert_torch.py`, ours too) before writing any golden.
"""

from __future__ import annotations

import math

import numpy as np

# The activation of each GLU variant; other `feed_forward_type` values ("original", "glu") are
# different MLPs and are refused rather than guessed.
GLU_ACTIVATIONS = ("geglu", "reglu")


def alibi_slopes(n_heads: int) -> list[float]:
    """The ALiBi paper's per-head slopes (see the module docstring)."""
    if n_heads < 1:
        raise ValueError(f"num_attention_heads must be positive, got {n_heads}")

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (h + 1) for h in range(n)]

    if n_heads & (n_heads - 1) == 0:
        return power_of_two(n_heads)
    closest = 2 ** math.floor(math.log2(n_heads))
    return power_of_two(closest) + alibi_slopes(2 * closest)[0::2][: n_heads - closest]


def alibi_bias(n_heads: int, length: int) -> np.ndarray:
    """[heads, length, length]: -slope_h * |i - j|."""
    pos = np.arange(length)
    distance = np.abs(pos[None, :] - pos[:, None]).astype(np.float64)
    return -np.asarray(alibi_slopes(n_heads), dtype=np.float64)[:, None, None] * distance[None]


def gelu_exact(x: np.ndarray) -> np.ndarray:
    erf = np.frompyfunc(math.erf, 1, 1)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)).astype(np.float64))


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def activation(feed_forward_type: str):
    if feed_forward_type == "geglu":
        return gelu_exact
    if feed_forward_type == "reglu":
        return relu
    raise ValueError(f"feed_forward_type {feed_forward_type!r} is not one of {GLU_ACTIVATIONS}")


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def linear(x: np.ndarray, w: dict, name: str) -> np.ndarray:
    y = x @ w[f"{name}.weight"].T
    bias = w.get(f"{name}.bias")
    return y if bias is None else y + bias


def attention(x, mask_bias, alibi, w, prefix: str, n_heads: int) -> np.ndarray:
    """Self-attention of one layer, before the output projection: [B, L, H]."""
    b, length, hidden = x.shape
    d = hidden // n_heads

    def heads(t):
        return t.reshape(b, length, n_heads, d).transpose(0, 2, 1, 3)

    q = heads(linear(x, w, f"{prefix}.query"))
    k = heads(linear(x, w, f"{prefix}.key"))
    v = heads(linear(x, w, f"{prefix}.value"))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + mask_bias + alibi[None]
    scores = scores - scores.max(-1, keepdims=True)
    probs = np.exp(scores)
    probs = probs / probs.sum(-1, keepdims=True)
    return (probs @ v).transpose(0, 2, 1, 3).reshape(b, length, hidden)


def layer(x, mask_bias, alibi, w, i: int, config: dict) -> np.ndarray:
    p = f"encoder.layer.{i}"
    eps = config["layer_norm_eps"]
    inter = config["intermediate_size"]
    ctx = attention(x, mask_bias, alibi, w, f"{p}.attention.self", config["num_attention_heads"])
    h = layer_norm(linear(ctx, w, f"{p}.attention.output.dense") + x,
                   w[f"{p}.attention.output.LayerNorm.weight"], w[f"{p}.attention.output.LayerNorm.bias"], eps)
    g = linear(h, w, f"{p}.mlp.gated_layers")
    m = activation(config["feed_forward_type"])(g[..., :inter]) * g[..., inter:]
    return layer_norm(linear(m, w, f"{p}.mlp.wo") + h,
                      w[f"{p}.mlp.layernorm.weight"], w[f"{p}.mlp.layernorm.bias"], eps)


def forward(weights: dict, config: dict, input_ids, attention_mask, token_type_ids=None) -> np.ndarray:
    """`last_hidden_state` [B, L, hidden] (float64) of JinaBertModel for a right-padded batch."""
    if config.get("position_embedding_type") != "alibi":
        raise ValueError("only position_embedding_type 'alibi' (JinaBert v2) is implemented")
    w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    ids = np.asarray(input_ids)
    types = np.zeros_like(ids) if token_type_ids is None else np.asarray(token_type_ids)
    mask = np.asarray(attention_mask, dtype=np.float64)
    eps = config["layer_norm_eps"]
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.token_type_embeddings.weight"][types]
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    # The extended mask of the published code: (1 - mask) * finfo(float32).min on the key axis.
    mask_bias = ((1.0 - mask) * float(np.finfo(np.float32).min))[:, None, None, :]
    alibi = alibi_bias(config["num_attention_heads"], ids.shape[1])
    for i in range(config["num_hidden_layers"]):
        x = layer(x, mask_bias, alibi, w, i, config)
    return x


def mean_pool(hidden: np.ndarray, attention_mask) -> np.ndarray:
    """sentence-transformers' mean pooling: masked sum over tokens / clamp(count, 1e-9)."""
    mask = np.asarray(attention_mask, dtype=np.float64)[..., None]
    return (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
