#!/usr/bin/env python3
"""Writes the prompt token ids that both sides of the smollm2-* workloads read.

    python bench/make_prompt_ids.py MODEL_DIR CORPUS OUT [--count 2048]

Tokenizes the corpus (bench/make_corpus.py's sentences joined by single spaces) with the model
folder's tokenizer (Transformers `AutoTokenizer`, no special tokens added) and writes its first
`--count` ids to OUT, whitespace-separated on one line. A workload takes the first N of them
(`--prompt-ids OUT --prompt-tokens N` on both sides: bench/greedy_generate.py and
crates/models/examples/greedy_speed.rs), so PyTorch and safeformers get identical ids, derived
deterministically from the corpus. Prints one JSON line: the count and the file's sha256.
"""

import argparse
import hashlib
import json
import sys
from pathlib import Path

from transformers import AutoTokenizer


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("corpus", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=2048)
    args = parser.parse_args()

    text = " ".join(line.strip() for line in args.corpus.read_text().splitlines() if line.strip())
    tokenizer = AutoTokenizer.from_pretrained(str(args.model))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:args.count]
    if len(ids) < args.count:
        print(f"make_prompt_ids: the corpus gives {len(ids)} ids, fewer than {args.count}",
              file=sys.stderr)
        return 1
    body = " ".join(str(i) for i in ids) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(body)
    print(json.dumps({"prompt_ids": str(args.out), "count": len(ids),
                      "sha256": hashlib.sha256(body.encode()).hexdigest()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
