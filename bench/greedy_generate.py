#!/usr/bin/env python3
"""PyTorch side of the greedy decoding workloads (bench/run.py's gpt2-* and smollm2-*, and
bench/gpt2-generate.sh): greedy `generate` speed on any causal-LM folder, f32.

    python bench/greedy_generate.py MODEL_DIR --threads 1 --prompt-tokens 32 --new-tokens 128 --runs 3
    python bench/greedy_generate.py MODEL_DIR --prompt-ids FILE --prompt-tokens 512 --new-tokens 1

The prompt is the same on both sides as crates/models/examples/greedy_speed.rs: the first
`--prompt-tokens` ids of `--prompt-ids FILE` (whitespace-separated token ids, written by
bench/make_prompt_ids.py), or without it the synthetic ids (i * 7919 + 13) % vocab. Exactly
`--new-tokens` tokens are generated (EOS does not stop). Prints one JSON line per run and a
summary with the generated ids; `seconds` is the whole `generate` call, so with `--new-tokens 1`
it is the time to the first token (the prefill up to the first new token's logits, plus argmax).
"""

import argparse
import json
import statistics
import sys
import time

import torch
from transformers import AutoModelForCausalLM


def read_prompt(path: str, count: int) -> list:
    with open(path) as handle:
        ids = [int(word) for word in handle.read().split()]
    if len(ids) < count:
        sys.exit(f"{path}: {len(ids)} ids, fewer than --prompt-tokens {count}")
    return ids[:count]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--prompt-ids", help="file of whitespace-separated prompt token ids")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--attn", default="eager",
                        help="Transformers attn_implementation (default eager; sdpa is "
                             "Transformers' own default for Llama-family models)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.model, attn_implementation=args.attn,
                                                 dtype=torch.float32).eval()
    load_seconds = time.perf_counter() - start
    # Greedy for exactly new_tokens: no EOS stop (the Rust side does not stop either).
    model.generation_config.eos_token_id = None
    vocab = model.config.vocab_size
    if args.prompt_ids:
        ids = read_prompt(args.prompt_ids, args.prompt_tokens)
    else:
        ids = [(i * 7919 + 13) % vocab for i in range(args.prompt_tokens)]
    prompt = torch.tensor([ids])
    mask = torch.ones_like(prompt)

    def generate(n):
        with torch.inference_mode():
            out = model.generate(input_ids=prompt, attention_mask=mask, do_sample=False,
                                 max_new_tokens=n, min_new_tokens=n, pad_token_id=0)
        return out[0, prompt.shape[1]:].tolist()

    generate(min(args.new_tokens, 8))  # warm-up
    rates, times = [], []
    ids = []
    for run in range(args.runs):
        start = time.perf_counter()
        ids = generate(args.new_tokens)
        seconds = time.perf_counter() - start
        assert len(ids) == args.new_tokens, len(ids)
        times.append(seconds)
        rates.append(args.new_tokens / seconds)
        print(json.dumps({"side": "pytorch", "run": run, "threads": args.threads,
                          "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
                          "seconds": round(seconds, 4), "tokens_per_second": round(rates[-1], 2)}))
    rates.sort()
    print(json.dumps({"side": "pytorch", "summary": True, "threads": args.threads,
                      "attn": args.attn, "load_seconds": round(load_seconds, 3),
                      "median_tokens_per_second": round(rates[len(rates) // 2], 2),
                      "median_seconds": round(statistics.median(times), 4),
                      "torch": torch.__version__, "generated": ids}))


if __name__ == "__main__":
    main()
