"""Writes tests/fixtures/gguf-model/smollm2-q4_1.json: what Transformers makes of the real
SmolLM2-135M-Instruct Q4_1 GGUF, for crates/models/tests/gguf_model.rs.

Transformers loads the file with its own GGUF loader (`from_pretrained(dir, gguf_file=...)`),
which dequantizes every tensor to f32 with the PyPI `gguf` package and undoes llama.cpp's Q/K row
permutation. The fixture keeps a few whole rows of a few tensors (as exact f32 values), the
logits of five prompts (plain text and chat turns rendered by the file's template) at their last
positions on a strided subset of the vocabulary, each position's argmax, and the greedy
continuation of 32 tokens.

Run by hand, in the torch venv (torch, transformers, gguf):

    ~/.cache/safeformers/venv-torch/bin/python scripts/make_smollm2_gguf_fixtures.py \
        "$(scripts/fetch-smollm2.sh | tail -n 1)"
"""

import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

# Rows kept per tensor (Transformers' names). Q/K rows span the interleaving inside a head and
# reach into later heads, so a wrong un-permutation cannot match.
ROWS = {
    "model.embed_tokens.weight": [0, 1, 1000, 49151],
    "model.layers.0.self_attn.q_proj.weight": [0, 1, 2, 3, 31, 32, 33, 64, 575],
    "model.layers.0.self_attn.k_proj.weight": [0, 1, 2, 33, 100, 191],
    "model.layers.29.self_attn.q_proj.weight": [1, 40, 300],
    "model.layers.29.self_attn.k_proj.weight": [2, 129, 190],
    "model.layers.0.self_attn.v_proj.weight": [0, 1, 191],
    "model.layers.0.self_attn.o_proj.weight": [0, 575],
    "model.layers.0.mlp.gate_proj.weight": [0, 1535],
    "model.layers.0.mlp.up_proj.weight": [0, 1535],
    "model.layers.0.mlp.down_proj.weight": [0, 575],
    "model.layers.0.input_layernorm.weight": None,
    "model.layers.0.post_attention_layernorm.weight": None,
    "model.norm.weight": None,
}

# Plain text, and chat turns rendered by the file's own template (Transformers' rendering).
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    {"chat": "What is the capital of France?"},
    "Once upon a time, in a small village by the sea,",
    {"chat": "Give me three tips for staying healthy."},
]
VOCAB_STRIDE = 61
# Logits are kept for the last positions of each prompt only (the argmax for all of them).
LOGIT_POSITIONS = 8
GREEDY_TOKENS = 32


def shortest(values: torch.Tensor) -> list:
    """f32 values as the shortest decimals that read back as the same f32."""
    return [
        float(np.format_float_positional(value, unique=True, trim="0"))
        for value in values.to(torch.float32).numpy().reshape(-1)
    ]


def main() -> None:
    gguf_path = os.path.abspath(sys.argv[1])
    folder, name = os.path.split(gguf_path)
    out = os.path.join(
        os.path.dirname(__file__), "..", "tests", "fixtures", "gguf-model", "smollm2-q4_1.json"
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    state = model.state_dict()
    tensors = {}
    for tensor_name, rows in ROWS.items():
        values = state[tensor_name].to(torch.float32)
        if rows is None:
            tensors[tensor_name] = {"rows": None, "values": [shortest(values)]}
        else:
            tensors[tensor_name] = {
                "rows": rows,
                "values": [shortest(values[row]) for row in rows],
            }
    prompts = []
    vocab = model.config.vocab_size
    with torch.no_grad():
        for prompt in PROMPTS:
            if isinstance(prompt, dict):
                messages = [{"role": "user", "content": prompt["chat"]}]
                text = tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True
                )
            else:
                text = prompt
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            logits_from = max(0, len(ids) - LOGIT_POSITIONS)
            logits = model(torch.tensor([ids])).logits[0]
            generated = model.generate(
                torch.tensor([ids]),
                max_new_tokens=GREEDY_TOKENS,
                do_sample=False,
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                pad_token_id=0,
            )[0][len(ids):]
            prompts.append(
                {
                    "text": text,
                    "ids": ids,
                    "logits_from": logits_from,
                    "logits": [shortest(row[::VOCAB_STRIDE]) for row in logits[logits_from:]],
                    "argmax": [int(row.argmax()) for row in logits],
                    "greedy": [int(token) for token in generated],
                }
            )
    fixture = {
        "generator": "scripts/make_smollm2_gguf_fixtures.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "gguf_file": name,
        "vocab_size": vocab,
        "vocab_stride": VOCAB_STRIDE,
        "tensors": tensors,
        "prompts": prompts,
    }
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as handle:
        json.dump(fixture, handle)
        handle.write("\n")
    print(out)


if __name__ == "__main__":
    main()
