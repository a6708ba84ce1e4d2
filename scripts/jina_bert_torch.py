"""Our own torch re-implementation of JinaBert v2 inference, to cross-check the NumPy reference.

NOT Jina AI's code (none is available here; see `scripts/jina_bert_reference.py` for the maths
and where it comes from). Written separately from the NumPy reference, with different means
(torch's `scaled_dot_product_attention`, `nn.LayerNorm`, and the ALiBi slopes from their closed
form rather than the paper's recursion), so that the two agreeing says something.

`scripts/make_jina_bert_fixtures.py` uses it twice: directly, comparing its `last_hidden_state`
with the NumPy reference's for every case, and as the `trust_remote_code` module of a TEMPORARY
copy of the sentence-transformers layout (`auto_map` rewritten to `jina_bert_torch.*`), so that
`SentenceTransformer.encode` runs on the layout. The committed folders keep the Hub's cross-repo
`auto_map` and contain no Python. Imports only torch and transformers.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling


class JinaBertConfig(PretrainedConfig):
    model_type = "bert"

    def __init__(self, vocab_size=30528, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, hidden_act="gelu", max_position_embeddings=8192, type_vocab_size=2,
                 layer_norm_eps=1e-12, pad_token_id=0, position_embedding_type="alibi",
                 feed_forward_type="original", **kwargs):
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.layer_norm_eps = layer_norm_eps
        self.position_embedding_type = position_embedding_type
        self.feed_forward_type = feed_forward_type


def closed_form_slopes(n: int) -> torch.Tensor:
    """p = largest power of two ≤ n: heads 0..p-1 get 2^(-8(h+1)/p); the n-p others
    2^(-8(2k+1)/(2p)), k = 0.. (the odd steps of the 2p-head schedule)."""
    p = 1 << (n.bit_length() - 1)
    first = [2.0 ** (-8.0 * (h + 1) / p) for h in range(p)]
    rest = [2.0 ** (-8.0 * (2 * k + 1) / (2 * p)) for k in range(n - p)]
    return torch.tensor(first + rest, dtype=torch.float32)


class Embeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids, token_type_ids):
        return self.LayerNorm(self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids))


class SelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.heads = config.num_attention_heads

    def forward(self, x, bias):
        b, length, hidden = x.shape
        split = lambda t: t.view(b, length, self.heads, hidden // self.heads).transpose(1, 2)  # noqa: E731
        ctx = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)),
                                             attn_mask=bias)
        return ctx.transpose(1, 2).reshape(b, length, hidden)


class SelfOutput(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.self = SelfAttention(config)
        self.output = SelfOutput(config)

    def forward(self, x, bias):
        return self.output.LayerNorm(self.output.dense(self.self(x, bias)) + x)


class GluMlp(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.gated_layers = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.wo = nn.Linear(config.intermediate_size, config.hidden_size)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        acts = {"geglu": lambda t: F.gelu(t, approximate="none"), "reglu": F.relu}
        if config.feed_forward_type not in acts:
            raise ValueError(f"feed_forward_type {config.feed_forward_type!r}")
        self.act = acts[config.feed_forward_type]

    def forward(self, h):
        gated, plain = self.gated_layers(h).chunk(2, dim=-1)
        return self.layernorm(self.wo(self.act(gated) * plain) + h)


class Layer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attention = Attention(config)
        self.mlp = GluMlp(config)

    def forward(self, x, bias):
        return self.mlp(self.attention(x, bias))


class Encoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))


class Pooler(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)


class JinaBertModel(PreTrainedModel):
    config_class = JinaBertConfig
    base_model_prefix = "bert"

    def __init__(self, config):
        super().__init__(config)
        if config.position_embedding_type != "alibi":
            raise ValueError("alibi only")
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.pooler = Pooler(config)
        self.post_init()

    def _init_weights(self, module):
        pass

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **kwargs):
        b, length = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        pos = torch.arange(length, dtype=x.dtype)
        distance = (pos[None, :] - pos[:, None]).abs()
        alibi = -closed_form_slopes(self.config.num_attention_heads).to(x.dtype)[:, None, None] * distance
        masked = (1.0 - attention_mask.to(x.dtype)) * torch.finfo(torch.float32).min
        bias = alibi[None] + masked[:, None, None, :]
        for layer in self.encoder.layer:
            x = layer(x, bias)
        pooled = torch.tanh(self.pooler.dense(x[:, 0]))
        return BaseModelOutputWithPooling(last_hidden_state=x, pooler_output=pooled)


def _check_closed_form() -> None:
    # 12 heads, the schedule of jina-embeddings-v2-base-en.
    want = [2.0 ** -e for e in (1, 2, 3, 4, 5, 6, 7, 8, 0.5, 1.5, 2.5, 3.5)]
    assert all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(closed_form_slopes(12).tolist(), want))


_check_closed_form()
