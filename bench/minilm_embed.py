#!/usr/bin/env python3
"""Python side of the MiniLM workloads of bench/run.sh: sentence-transformers `encode`, or
safeformers' pipeline from Python (`--library safeformers`, the minilm-py-b32 workload).

    python bench/minilm_embed.py MODEL_DIR CORPUS --batch-size 32 --threads 2 [--dump FILE]
        [--library sentence-transformers|safeformers]

Loads `SentenceTransformer(MODEL_DIR)` on the CPU (or `safeformers.pipeline("feature-extraction",
MODEL_DIR, batch_size=..., threads=...)`), warms up on the first batch, then times one call over
the whole corpus; the time excludes the imports and the model load (both printed apart). Prints
one JSON line, as crates/pipelines/examples/embed_speed.rs does. `--dump FILE` also writes the
first `--dump-count` embeddings (corpus order) as JSON.
"""

import argparse
import json
import time


def load(library: str, model: str, batch_size: int, threads: int):
    """The encode function of `library`, and the seconds its imports took."""
    start = time.perf_counter()
    if library == "safeformers":
        import safeformers

        imported = time.perf_counter() - start
        pipeline = safeformers.pipeline(
            "feature-extraction", model, batch_size=batch_size, threads=threads
        )
        return pipeline, imported
    import torch
    from sentence_transformers import SentenceTransformer

    imported = time.perf_counter() - start
    torch.set_num_threads(threads)
    encoder = SentenceTransformer(model, device="cpu")
    return (lambda sentences: encoder.encode(sentences, batch_size=batch_size)), imported


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("corpus")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dump")
    parser.add_argument("--dump-count", type=int, default=4)
    parser.add_argument("--library", choices=["sentence-transformers", "safeformers"],
                        default="sentence-transformers")
    args = parser.parse_args()

    with open(args.corpus, encoding="utf-8") as corpus:
        sentences = [line.rstrip("\n") for line in corpus if line.strip()]
    start = time.perf_counter()
    encode, import_seconds = load(args.library, args.model, args.batch_size, args.threads)
    load_seconds = time.perf_counter() - start - import_seconds

    encode(sentences[: args.batch_size])  # warm-up
    start = time.perf_counter()
    embeddings = encode(sentences)
    seconds = time.perf_counter() - start
    assert len(embeddings) == len(sentences), (len(embeddings), len(sentences))
    if args.dump:
        with open(args.dump, "w") as out:
            json.dump(embeddings[: args.dump_count].tolist(), out)
    side = "python" if args.library == "sentence-transformers" else "safeformers-python"
    print(json.dumps({
        "side": side, "sentences": len(sentences), "batch_size": args.batch_size,
        "threads": args.threads, "dimension": int(embeddings.shape[1]),
        "import_seconds": round(import_seconds, 4), "load_seconds": round(load_seconds, 4),
        "seconds": round(seconds, 4),
        "sentences_per_second": round(len(sentences) / seconds, 2),
    }))


if __name__ == "__main__":
    main()
