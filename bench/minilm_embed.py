#!/usr/bin/env python3
"""Python side of the MiniLM workloads of bench/run.sh: sentence-transformers `encode`.

    python bench/minilm_embed.py MODEL_DIR CORPUS --batch-size 32 --threads 2 [--dump FILE]

Loads `SentenceTransformer(MODEL_DIR)` on the CPU, warms up on the first batch, then times one
`encode(sentences, batch_size=...)` over the whole corpus; the time excludes the imports and the
model load (both printed apart). Prints one JSON line, as crates/pipelines/examples/embed_speed.rs
does. `--dump FILE` also writes the first `--dump-count` embeddings (corpus order) as JSON.
"""

import argparse
import json
import time

import_start = time.perf_counter()
import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

import_seconds = time.perf_counter() - import_start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("corpus")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dump")
    parser.add_argument("--dump-count", type=int, default=4)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    with open(args.corpus, encoding="utf-8") as corpus:
        sentences = [line.rstrip("\n") for line in corpus if line.strip()]
    start = time.perf_counter()
    model = SentenceTransformer(args.model, device="cpu")
    load_seconds = time.perf_counter() - start

    model.encode(sentences[: args.batch_size], batch_size=args.batch_size)  # warm-up
    start = time.perf_counter()
    embeddings = model.encode(sentences, batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    assert len(embeddings) == len(sentences), (len(embeddings), len(sentences))
    if args.dump:
        with open(args.dump, "w") as out:
            json.dump(embeddings[: args.dump_count].tolist(), out)
    print(json.dumps({
        "side": "python", "sentences": len(sentences), "batch_size": args.batch_size,
        "threads": args.threads, "dimension": int(embeddings.shape[1]),
        "import_seconds": round(import_seconds, 4), "load_seconds": round(load_seconds, 4),
        "seconds": round(seconds, 4),
        "sentences_per_second": round(len(sentences) / seconds, 2),
    }))


if __name__ == "__main__":
    main()
