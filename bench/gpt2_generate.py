#!/usr/bin/env python3
"""PyTorch side of bench/gpt2-generate.sh: greedy `generate` speed on a GPT-2 folder.

    python bench/gpt2_generate.py MODEL_DIR --threads 1 --prompt-tokens 32 --new-tokens 128 --runs 3

Same prompt ids as crates/models/examples/greedy_speed.rs: (i * 7919 + 13) % vocab. Prints one
JSON line per run and a summary with the generated ids.
"""

import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.model, attn_implementation="eager").eval()
    load_seconds = time.perf_counter() - start
    # Greedy for exactly new_tokens: no EOS stop (the Rust side does not stop either).
    model.generation_config.eos_token_id = None
    vocab = model.config.vocab_size
    prompt = torch.tensor([[(i * 7919 + 13) % vocab for i in range(args.prompt_tokens)]])
    mask = torch.ones_like(prompt)

    def generate(n):
        with torch.inference_mode():
            out = model.generate(input_ids=prompt, attention_mask=mask, do_sample=False,
                                 max_new_tokens=n, min_new_tokens=n, pad_token_id=0)
        return out[0, prompt.shape[1]:].tolist()

    generate(8)  # warm-up
    rates = []
    ids = []
    for run in range(args.runs):
        start = time.perf_counter()
        ids = generate(args.new_tokens)
        seconds = time.perf_counter() - start
        assert len(ids) == args.new_tokens, len(ids)
        rates.append(args.new_tokens / seconds)
        print(json.dumps({"side": "pytorch", "run": run, "threads": args.threads,
                          "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
                          "seconds": round(seconds, 4), "tokens_per_second": round(rates[-1], 2)}))
    rates.sort()
    print(json.dumps({"side": "pytorch", "summary": True, "threads": args.threads,
                      "load_seconds": round(load_seconds, 3),
                      "median_tokens_per_second": round(rates[len(rates) // 2], 2),
                      "torch": torch.__version__, "generated": ids}))


if __name__ == "__main__":
    main()
