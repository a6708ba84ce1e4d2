#!/usr/bin/env python3
"""Python side of the `first-embedding` workload of bench/run.sh: what a user's script does to
get one sentence embedding: the imports, the model load, one `encode`, the vector printed.

    python bench/first_embedding.py MODEL_DIR "A sentence." --threads 2

The driver times from starting this process to reading the first line of its output. Nothing
here is timed on purpose: all of it is the cost measured.
"""

import json
import sys

import torch
from sentence_transformers import SentenceTransformer


def main() -> None:
    model_dir, sentence = sys.argv[1], sys.argv[2]
    threads = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == "--threads" else 2
    torch.set_num_threads(threads)
    model = SentenceTransformer(model_dir, device="cpu")
    embedding = model.encode([sentence])
    print(json.dumps(embedding.tolist()), flush=True)


if __name__ == "__main__":
    main()
