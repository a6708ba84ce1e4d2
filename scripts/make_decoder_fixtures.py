#!/usr/bin/env python3
"""Writes the decoder-model golden fixtures into `tests/fixtures/decoders/`.

Run by hand, never in CI; the outputs are committed. From the repository root:

    HF_HUB_OFFLINE=1 ~/.cache/safeformers/venv-torch/bin/python scripts/make_decoder_fixtures.py

(the venv is the one `scripts/make_model_fixtures.py` describes; made with torch 2.15,
transformers 5.23, tokenizers 0.23, CPython 3.11; the exact versions are written into every JSON.)

A second mode writes a randomly initialised GPT-2 small (`GPT2Config()`, 124M parameters, seeded)
for the speed measurement; it is never committed:

    ~/.cache/safeformers/venv-torch/bin/python scripts/make_decoder_fixtures.py \
        --gpt2-124m ~/.cache/safeformers/gpt2-124m-random

Nothing is fetched from the Hub. One byte-level BPE tokenizer is trained here from a fixed corpus
and shared by every model; every model is randomly initialised under a fixed seed with every
parameter redrawn (no bias is 0, no norm weight is 1), so a loader that drops one cannot pass by
accident. See `tests/fixtures/decoders/README.md` for what each file holds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "decoders"
GENERATOR = "scripts/make_decoder_fixtures.py"
DEFAULT_GPT2_124M_DIR = Path.home() / ".cache" / "safeformers" / "gpt2-124m-random"

SEED = 20251124
MAX_NEW_TOKENS = 10
# Greedy decoding must not hinge on float noise: at every generated step the best logit must beat
# the second by at least this much, or the script refuses to write the golden.
MIN_GREEDY_MARGIN = 1e-3

# Tiny model dimensions (shared by every architecture).
HIDDEN, LAYERS, HEADS, KV_HEADS, INTERMEDIATE = 32, 2, 4, 2, 48
HEAD_DIM = HIDDEN // HEADS
MAX_POS = 64
# Context used by the rope-scaling variants: prompts (11-16 tokens) plus 10 generated tokens go
# past it, so the scaled frequencies matter.
SHORT_CONTEXT = 12

PAD, BOS, EOS, IM_START, IM_END = "<|pad|>", "<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>"
SPECIALS = [PAD, BOS, EOS, IM_START, IM_END]  # ids 0..4
GPT2_EOS = "<|endoftext|>"  # bos and eos of the --gpt2-124m tokenizer, id 50256 as in GPT-2
MERGES = 123  # 256 bytes + 5 specials + 123 merges = 384 tokens

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "My name is Sarah and I live in London.",
    "Clara moved from Paris to New York in 2019.",
    "Hugging Face makes tools for machine learning.",
    "The weather is nice today, so we walk to the park.",
    "Rust is a safe and fast programming language.",
    "A tokenizer splits text into pieces that a model can read.",
    "The model reads the text and answers the question.",
    "Safe formats store only tensors, never code.",
    "Hello world! How are you doing today?",
    "We went to the market and bought apples, bread and cheese.",
    "The cat sat on the mat and looked at the bird.",
    "Once upon a time there was a brave knight who lived in a castle.",
    "You are a helpful assistant. Answer briefly.",
    "What is the capital of France? The capital of France is Paris.",
    "Café crème and naïve résumé have accents.",
]

SINGLE = "Once upon a time there was a brave knight"
PADDED = ["The cat sat on the mat and looked at the bird.", "Hello world!"]
GREEDY = ["The quick brown fox", "Once upon a time there was a brave knight who"]
PIPELINE_PROMPT = "Once upon a time"
PIPELINE_BATCH = ["The weather is nice", "Rust is a safe language and"]
CHAT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def versions() -> dict:
    import safetensors
    import tokenizers
    import transformers

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
    }


def round_sig(x: float, digits: int = 7) -> float:
    return float(f"{x:.{digits}g}")


def floats(t: torch.Tensor):
    """float32 values to 7 significant digits (relative error < 1e-7, far inside 1e-4)."""
    arr = t.detach().cpu().numpy().astype(np.float32)
    return np.vectorize(round_sig, otypes=[float])(arr).tolist()


def ints(t: torch.Tensor):
    return t.detach().cpu().numpy().astype(np.int64).tolist()


def write_json(path: Path, value, indent=None) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=False, separators=None if indent else (",", ":"))
    path.write_text(text + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def build_tokenizer(gpt2_124m: bool = False):
    """Byte-level BPE (GPT-2 style: no prefix space, nothing added around the ids) with a
    ChatML chat template. Padding side left, as decoder-only generation needs.

    With `gpt2_124m`, filler tokens `<|filler_N|>` (ordinary added tokens) take ids 384..50255 and
    `<|endoftext|>` id 50256, as in GPT-2's vocabulary, so that every id `GPT2Config()`'s model can
    emit decodes and its bos/eos id is GPT-2's."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=256 + len(SPECIALS) + MERGES,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    bos, eos = BOS, EOS
    if gpt2_124m:
        base = tok.get_vocab_size()
        tok.add_tokens([AddedToken(f"<|filler_{i}|>", normalized=False) for i in range(base, 50256)])
        tok.add_special_tokens([AddedToken(GPT2_EOS, normalized=False)])
        if tok.token_to_id(GPT2_EOS) != 50256 or tok.get_vocab_size() != 50257:
            raise SystemExit(f"GPT-2 124M tokenizer: {GPT2_EOS} is id {tok.token_to_id(GPT2_EOS)}")
        bos = eos = GPT2_EOS
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        pad_token=PAD,
        additional_special_tokens=[IM_START, IM_END],
        padding_side="left",
        model_max_length=1024 if gpt2_124m else MAX_POS,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def save_tokenizer(tokenizer, folder: Path) -> None:
    tokenizer.save_pretrained(folder)
    # Transformers 5 writes the template to chat_template.jinja; Transformers 4 (and most Hub
    # repos) keep it in tokenizer_config.json, which Transformers 5 still reads. One copy, there.
    jinja = folder / "chat_template.jinja"
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = jinja.read_text() if jinja.exists() else tokenizer.chat_template
    if jinja.exists():
        jinja.unlink()
    write_json(config_path, config, indent=2)
    # Transformers 5 no longer writes special_tokens_map.json; write what Transformers 4 did.
    smap = folder / "special_tokens_map.json"
    if not smap.exists():
        value = {k: str(v) for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
        value["additional_special_tokens"] = [IM_START, IM_END]
        write_json(smap, value, indent=2)


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def specials_ids(tokenizer) -> dict:
    return {
        "bos_token_id": tokenizer.convert_tokens_to_ids(BOS),
        "eos_token_id": tokenizer.convert_tokens_to_ids(EOS),
        "pad_token_id": tokenizer.convert_tokens_to_ids(PAD),
    }


def llama_common(vocab: int, ids: dict, **extra) -> dict:
    base = dict(
        vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
        max_position_embeddings=MAX_POS, rms_norm_eps=1e-6, **ids,
    )
    base.update(extra)
    return base


def rope(rope_type: str, **params) -> dict:
    return {"rope_type": rope_type, "rope_theta": 10000.0, **params}


def make_config(name: str, vocab: int, ids: dict):
    from transformers import (
        GemmaConfig, GPT2Config, LlamaConfig, MistralConfig, Phi3Config, Qwen2Config, Qwen3Config,
    )

    if name == "gpt2":
        return GPT2Config(vocab_size=vocab, n_positions=MAX_POS, n_embd=HIDDEN, n_layer=LAYERS,
                          n_head=HEADS, **ids)
    if name == "gpt2-scaled":
        # The two attention options GPT-2 checkpoints may set; reorder_and_upcast_attn only
        # changes float precision, scale_attn_by_inverse_layer_idx changes the numbers.
        return GPT2Config(vocab_size=vocab, n_positions=MAX_POS, n_embd=HIDDEN, n_layer=LAYERS,
                          n_head=HEADS, n_inner=INTERMEDIATE, activation_function="gelu_new",
                          layer_norm_epsilon=1e-4, scale_attn_by_inverse_layer_idx=True,
                          reorder_and_upcast_attn=True, **ids)
    if name == "llama":
        return LlamaConfig(**llama_common(vocab, ids, tie_word_embeddings=False))
    if name == "llama-rope-linear":
        return LlamaConfig(**llama_common(vocab, ids, max_position_embeddings=SHORT_CONTEXT,
                                          rope_parameters=rope("linear", factor=2.0)))
    if name == "llama-rope-dynamic":
        return LlamaConfig(**llama_common(vocab, ids, max_position_embeddings=SHORT_CONTEXT,
                                          rope_parameters=rope("dynamic", factor=2.0)))
    if name == "llama-rope-llama3":
        return LlamaConfig(**llama_common(
            vocab, ids, max_position_embeddings=4 * SHORT_CONTEXT,
            rope_parameters=rope("llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                 original_max_position_embeddings=SHORT_CONTEXT)))
    if name == "llama-rope-yarn":
        return LlamaConfig(**llama_common(
            vocab, ids, max_position_embeddings=4 * SHORT_CONTEXT,
            rope_parameters=rope("yarn", factor=4.0, original_max_position_embeddings=SHORT_CONTEXT)))
    if name == "mistral":
        return MistralConfig(**llama_common(vocab, ids, sliding_window=4, head_dim=HEAD_DIM))
    if name == "qwen2":
        return Qwen2Config(**llama_common(vocab, ids, tie_word_embeddings=True))
    if name == "gemma":
        return GemmaConfig(**llama_common(vocab, ids, head_dim=HEAD_DIM, num_key_value_heads=1,
                                          hidden_activation="gelu_pytorch_tanh"))
    if name == "phi3":
        return Phi3Config(**llama_common(vocab, ids, original_max_position_embeddings=MAX_POS))
    if name == "phi3-longrope":
        half = HEAD_DIM // 2
        return Phi3Config(**llama_common(
            vocab, ids, max_position_embeddings=4 * SHORT_CONTEXT,
            original_max_position_embeddings=SHORT_CONTEXT,
            rope_parameters=rope("longrope",
                                 short_factor=[1.0 + 0.25 * i for i in range(half)],
                                 long_factor=[2.0 + 1.5 * i for i in range(half)])))
    if name == "llama-bias-headdim":
        # attention_bias and mlp_bias on, heads wider than hidden / heads, lm_head tied (so
        # absent from model.safetensors).
        return LlamaConfig(**llama_common(vocab, ids, attention_bias=True, mlp_bias=True,
                                          head_dim=2 * HEAD_DIM, tie_word_embeddings=True))
    if name == "qwen2-sliding":
        # use_sliding_window with max_window_layers 1: layer 0 full, layer 1 a 4-token window
        # (Transformers 5 writes the resulting `layer_types` into config.json).
        return Qwen2Config(**llama_common(vocab, ids, use_sliding_window=True, sliding_window=4,
                                          max_window_layers=1))
    if name == "phi3-partial-window":
        # Half of each head rotated (partial_rotary_factor 0.5, so 2 longrope factors), and
        # Phi-3's own sliding window.
        quarter = HEAD_DIM // 4
        return Phi3Config(**llama_common(
            vocab, ids, max_position_embeddings=4 * SHORT_CONTEXT,
            original_max_position_embeddings=SHORT_CONTEXT, sliding_window=5,
            partial_rotary_factor=0.5,
            rope_parameters=rope("longrope", partial_rotary_factor=0.5,
                                 short_factor=[1.0 + 0.5 * i for i in range(quarter)],
                                 long_factor=[3.0 + 2.0 * i for i in range(quarter)])))
    if name == "qwen3":
        # q/k RMSNorm per head; head_dim 12 (≠ hidden / heads = 8), 2 kv heads for 4 heads,
        # untied lm_head, rope_theta 1e6 (Qwen3's checkpoints), rms_norm_eps 1e-5.
        return Qwen3Config(**llama_common(vocab, ids, head_dim=12, tie_word_embeddings=False,
                                          rms_norm_eps=1e-5,
                                          rope_parameters={"rope_type": "default",
                                                           "rope_theta": 1000000.0}))
    if name == "qwen3-tied-sliding":
        # Tied embeddings (absent lm_head), attention_bias on q/k/v/o, 1 kv head, head_dim 8,
        # use_sliding_window with max_window_layers 1: layer 1 sees a 5-token window.
        return Qwen3Config(**llama_common(vocab, ids, head_dim=HEAD_DIM, num_key_value_heads=1,
                                          tie_word_embeddings=True, attention_bias=True,
                                          use_sliding_window=True, sliding_window=5,
                                          max_window_layers=1))
    raise SystemExit(f"unknown fixture {name}")


MODELS = {
    "gpt2": "GPT2LMHeadModel",
    "gpt2-scaled": "GPT2LMHeadModel",
    "llama": "LlamaForCausalLM",
    "llama-rope-linear": "LlamaForCausalLM",
    "llama-rope-dynamic": "LlamaForCausalLM",
    "llama-rope-llama3": "LlamaForCausalLM",
    "llama-rope-yarn": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "gemma": "GemmaForCausalLM",
    "phi3": "Phi3ForCausalLM",
    "phi3-longrope": "Phi3ForCausalLM",
    "llama-bias-headdim": "LlamaForCausalLM",
    "qwen2-sliding": "Qwen2ForCausalLM",
    "phi3-partial-window": "Phi3ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "qwen3-tied-sliding": "Qwen3ForCausalLM",
}


def randomize(model, seed: int) -> None:
    """Redraws every parameter so none is an exact 0 or 1. Matrices σ 0.3, vectors σ 0.1 (around
    1 for LayerNorm weights; around 0 for Gemma's RMSNorm, which multiplies by 1 + weight)."""
    g = torch.Generator().manual_seed(seed)
    gemma = model.config.model_type == "gemma"
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                is_norm = ("norm" in name.lower() or ".ln_" in name) and name.endswith("weight")
                mean = 1.0 if is_norm and not gemma else 0.0
                p.copy_(mean + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    model.tie_weights()


def build_model(name: str, vocab: int, ids: dict, seed: int):
    import transformers

    torch.manual_seed(seed)
    config = make_config(name, vocab, ids)
    cls = getattr(transformers, MODELS[name])
    # Eager attention: the plain softmax(QK^T/sqrt(d) + mask)V the Rust code implements.
    model = cls._from_config(config, attn_implementation="eager")
    randomize(model, seed)
    model.eval()
    return model


def generation_config(ids: dict):
    from transformers import GenerationConfig

    return GenerationConfig(**ids)


class BadDraw(Exception):
    """The random model gives a golden that float noise or EOS could flip: draw another seed."""


def check_margins(scores, what: str) -> None:
    for step, s in enumerate(scores):
        top = torch.topk(s.float(), 2, dim=-1).values
        gap = (top[:, 0] - top[:, 1]).min().item()
        if gap < MIN_GREEDY_MARGIN:
            raise BadDraw(f"{what}: step {step} top-2 logit gap {gap} < {MIN_GREEDY_MARGIN}")


def greedy(model, input_ids, attention_mask, what: str, **kwargs):
    out = model.generate(
        input_ids=input_ids, attention_mask=attention_mask, do_sample=False,
        max_new_tokens=MAX_NEW_TOKENS, output_scores=True, return_dict_in_generate=True, **kwargs,
    )
    check_margins(out.scores, what)
    return out.sequences[:, input_ids.shape[1]:]


def write_model(name: str, tokenizer, seed: int, meta: dict) -> None:
    folder = OUT / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    ids = specials_ids(tokenizer)
    model = build_model(name, len(tokenizer), ids, seed)
    model.generation_config = generation_config(ids)
    model.save_pretrained(folder, safe_serialization=True)
    save_tokenizer(tokenizer, folder)

    with torch.no_grad():
        single = tokenizer([SINGLE], return_tensors="pt")
        single_logits = model(input_ids=single["input_ids"]).logits
        padded = tokenizer(PADDED, padding=True, padding_side="right", return_tensors="pt")
        padded_logits = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits
        left = tokenizer(GREEDY, padding=True, padding_side="left", return_tensors="pt")
        new_tokens = greedy(model, left["input_ids"], left["attention_mask"], f"{name} greedy")
    if EOS in tokenizer.convert_ids_to_tokens(new_tokens.flatten().tolist()):
        raise BadDraw(f"{name}: greedy emitted EOS, so rows would be padded")
    doc = {
        "generator": GENERATOR,
        "versions": meta,
        "model": name,
        "class": type(model).__name__,
        "model_type": model.config.model_type,
        "seed": seed,
        "single": {
            "text": SINGLE,
            "input_ids": ints(single["input_ids"]),
            "shape": list(single_logits.shape),
            "logits": floats(single_logits),
        },
        "padded": {
            "texts": PADDED,
            "input_ids": ints(padded["input_ids"]),
            "attention_mask": ints(padded["attention_mask"]),
            "shape": list(padded_logits.shape),
            "logits": floats(padded_logits),
        },
        "greedy": {
            "texts": GREEDY,
            "input_ids": ints(left["input_ids"]),
            "attention_mask": ints(left["attention_mask"]),
            "max_new_tokens": MAX_NEW_TOKENS,
            "new_tokens": ints(new_tokens),
        },
    }
    if model.config.model_type == "qwen3":
        doc["hidden"] = hidden_states(model.model, tokenizer)
    write_json(folder / "outputs.json", doc)
    lengths = [int(x) for x in left["attention_mask"].sum(-1)]
    print(f"wrote {name}: vocab {len(tokenizer)}, greedy prompt lengths {lengths}")


def hidden_states(base, tokenizer) -> dict:
    """The base model's (`Qwen3Model`) `last_hidden_state` as Qwen3-Embedding uses it: one
    sequence, and a **left**-padded batch run as sentence-transformers runs it (attention mask,
    no position ids, so positions are 0..L on every row), with the last token's state of each
    row L2-normalized (last-token pooling + Normalize)."""
    with torch.no_grad():
        single = tokenizer([SINGLE], return_tensors="pt")
        single_hidden = base(input_ids=single["input_ids"]).last_hidden_state
        left = tokenizer(PADDED, padding=True, padding_side="left", return_tensors="pt")
        left_hidden = base(input_ids=left["input_ids"], attention_mask=left["attention_mask"]).last_hidden_state
        pooled = torch.nn.functional.normalize(left_hidden[:, -1], p=2, dim=-1)
    return {
        "single": {"input_ids": ints(single["input_ids"]), "shape": list(single_hidden.shape),
                   "last_hidden_state": floats(single_hidden)},
        "left_padded": {"texts": PADDED, "input_ids": ints(left["input_ids"]),
                        "attention_mask": ints(left["attention_mask"]),
                        "shape": list(left_hidden.shape), "last_hidden_state": floats(left_hidden),
                        "last_token_normalized": floats(pooled)},
    }


# --------------------------------------------------------------------------------------------
# Pipelines
# --------------------------------------------------------------------------------------------


def pipeline_goldens(names: list[str], tokenizer) -> list[dict]:
    from transformers import pipeline

    entries = []
    for name in names:
        folder = str(OUT / name)
        pipe = pipeline("text-generation", model=folder, tokenizer=folder, device="cpu")
        greedy_kw = {"do_sample": False, "max_new_tokens": MAX_NEW_TOKENS}

        def add(inputs, kwargs):
            extra = {}
            if "stop_strings" in kwargs:
                # generate() needs the tokenizer to find stop strings; the pipeline does not pass
                # its own, so the caller must (not recorded: it is the folder's tokenizer).
                extra["tokenizer"] = pipe.tokenizer
            output = pipe(inputs, **kwargs, **extra)
            entries.append({"task": "text-generation", "model": name, "inputs": inputs,
                            "kwargs": kwargs, "output": output})
            return output

        add(PIPELINE_PROMPT, dict(greedy_kw))
        add(PIPELINE_PROMPT, dict(greedy_kw, return_full_text=False))
        add(CHAT, dict(greedy_kw))
        add(PIPELINE_PROMPT, dict(greedy_kw, repetition_penalty=1.3))
        add(PIPELINE_BATCH, dict(greedy_kw))

        # Stop strings: a piece of what greedy produces after a few tokens.
        prompt_ids = tokenizer(PIPELINE_PROMPT, return_tensors="pt")
        model = pipe.model
        with torch.no_grad():
            new = greedy(model, prompt_ids["input_ids"], prompt_ids["attention_mask"], f"{name} pipeline")[0]
        # The text of two generated tokens from the 4th on: the first pair that decodes to whole
        # characters (byte-level tokens may hold part of one) and is not blank.
        stop = None
        for start in range(3, MAX_NEW_TOKENS - 2):
            text = tokenizer.decode(new[start:start + 2].tolist())
            if text.strip() and "\ufffd" not in text:
                stop = text
                break
        if stop is None:
            raise SystemExit(f"{name}: no usable stop string in {tokenizer.decode(new.tolist())!r}")
        out = add(PIPELINE_PROMPT, dict(greedy_kw, stop_strings=[stop]))
        if len(out[0]["generated_text"]) >= len(PIPELINE_PROMPT + tokenizer.decode(new.tolist())):
            raise SystemExit(f"{name}: stop string {stop!r} did not stop generation")

        # EOS stopping: the token greedy emits 3rd is made the eos id.
        eos = int(new[2])
        out = add(PIPELINE_PROMPT, dict(greedy_kw, eos_token_id=eos))
        entries[-1]["eos_token"] = tokenizer.convert_ids_to_tokens(eos)
    return entries


# --------------------------------------------------------------------------------------------
# GPT-2 124M (random, for the speed measurement)
# --------------------------------------------------------------------------------------------


def write_gpt2_124m(folder: Path, tokenizer) -> None:
    """`GPT2Config()` (124M parameters, vocab 50257) randomly initialised under SEED, with
    Transformers' own initialisation (not redrawn: the speed does not depend on the values).

    The tokenizer is the fixture one grown to GPT-2's 50257 ids (see `build_tokenizer`): prompts
    encode with the 384 trained tokens, every generated id decodes, and `<|endoftext|>` is 50256.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    config = GPT2Config()
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    save_tokenizer(tokenizer, folder)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {folder}: GPT2Config() random, {n / 1e6:.1f}M parameters")


# --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpt2-124m", nargs="?", const=str(DEFAULT_GPT2_124M_DIR), metavar="DIR",
                        help=f"write a random GPT-2 small to DIR (default {DEFAULT_GPT2_124M_DIR}) and exit")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=list(MODELS),
                        help="rewrite only these model folders (not pipelines.json)")
    args = parser.parse_args()

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    if args.gpt2_124m:
        write_gpt2_124m(Path(args.gpt2_124m).expanduser(), build_tokenizer(gpt2_124m=True))
        return
    tokenizer = build_tokenizer()

    meta = versions()
    OUT.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(MODELS):
        if args.only and name not in args.only:
            continue
        # Seeds SEED + i, then + 100, + 200, ... until the golden is robust (deterministic).
        for attempt in range(20):
            try:
                write_model(name, tokenizer, SEED + i + 100 * attempt, meta)
                break
            except BadDraw as why:
                print(f"{why}; next seed")
        else:
            raise SystemExit(f"{name}: no robust seed in 20 attempts")
    if args.only:
        return
    entries = pipeline_goldens(["gpt2", "llama"], tokenizer)
    write_json(OUT / "pipelines.json", {"generator": GENERATOR, "versions": meta, "entries": entries}, indent=1)
    print("wrote pipelines.json:", len(entries), "entries")


if __name__ == "__main__":
    main()
