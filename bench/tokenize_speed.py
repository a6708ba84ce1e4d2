#!/usr/bin/env python3
"""Python side of the `tokenizer` workload of bench/run.sh: Transformers' fast tokenizer
(`AutoTokenizer`, backed by Hugging Face `tokenizers`) over the whole corpus in one batch call,
`tokenizer(sentences, padding=True, truncation=True)`, as
crates/tokenize/examples/tokenize_speed.rs does.

    RAYON_RS_NUM_CPUS=2 python bench/tokenize_speed.py MODEL_DIR CORPUS --passes 20

`tokenizers` parallelises a batch over its own rayon pool, sized by RAYON_RS_NUM_CPUS (the
driver sets it to the thread count). After one warm-up pass, times `--passes` passes and prints
one JSON line with the median pass. Imports and load are excluded.
"""

import argparse
import json
import os
import statistics
import time

from transformers import AutoTokenizer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("corpus")
    parser.add_argument("--passes", type=int, default=20)
    args = parser.parse_args()

    with open(args.corpus, encoding="utf-8") as corpus:
        sentences = [line.rstrip("\n") for line in corpus if line.strip()]
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    assert tokenizer.is_fast

    def encode():
        return tokenizer(sentences, padding=True, truncation=True)

    # Warm-up; tokens counted without padding, outside the timed calls.
    tokens = sum(sum(mask) for mask in encode()["attention_mask"])
    seconds = []
    for _ in range(args.passes):
        start = time.perf_counter()
        encode()
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    print(json.dumps({
        "side": "python", "sentences": len(sentences), "tokens": tokens,
        "threads": os.environ.get("RAYON_RS_NUM_CPUS", "default"), "passes": args.passes,
        "median_seconds": round(median, 6),
        "sentences_per_second": round(len(sentences) / median, 1),
        "tokens_per_second": round(tokens / median, 1),
    }))


if __name__ == "__main__":
    main()
