#!/usr/bin/env python3
"""Writes a prompt text that tokenizes to exactly N tokens, for the gguf-* workloads.

    python bench/make_prompt_text.py MODEL_DIR CORPUS OUT --tokens N

The gguf-* workloads give safeformers a text (through `safeformers run text-generation --stats`,
which reports how many tokens the prompt had) and llama.cpp a token count (`llama-bench -p N`).
This script finds the text: the corpus (bench/make_corpus.py's sentences joined by single spaces)
tokenized with the model folder's tokenizer (Transformers `AutoTokenizer`, no special tokens; the
same tokenizer as the GGUF file's), its first M ids decoded, for the M nearest N whose text
tokenizes back to exactly N ids. Deterministic. Prints one JSON line: the token count and the
text's sha256.
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
    parser.add_argument("--tokens", type=int, required=True)
    args = parser.parse_args()

    text = " ".join(line.strip() for line in args.corpus.read_text().splitlines() if line.strip())
    tokenizer = AutoTokenizer.from_pretrained(str(args.model))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    for delta in range(0, 16):
        for count in (args.tokens + delta, args.tokens - delta):
            if count <= 0 or count > len(ids):
                continue
            prompt = tokenizer.decode(ids[:count])
            if len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) == args.tokens:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(prompt)
                digest = hashlib.sha256(prompt.encode()).hexdigest()
                print(json.dumps({"tokens": args.tokens, "sha256": digest}))
                return 0
    print(f"make_prompt_text: no prefix of the corpus tokenizes to {args.tokens} tokens",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
