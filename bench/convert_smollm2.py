#!/usr/bin/env python3
"""Turns SmolLM2-135M-Instruct's Q4_1 GGUF file into a normal Transformers folder (safetensors,
f32) for the smollm2-* benchmark workloads. Runs in the benchmark venv (torch, transformers,
gguf), outside cargo test.

    python bench/convert_smollm2.py GGUF_FILE OUT_DIR
    python bench/convert_smollm2.py GGUF_FILE OUT_DIR --check "Hello"   # also print greedy text

GGUF_FILE is what scripts/fetch-smollm2.sh prints. Transformers dequantizes the Q4_1 blocks to
f32 (`AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)`) and `save_pretrained` writes
`model.safetensors` + `config.json` + `generation_config.json`; the tokenizer likewise
(`AutoTokenizer.from_pretrained(dir, gguf_file=...)` + `save_pretrained`: `tokenizer.json`,
`tokenizer_config.json` with the chat template). The folder is written next to OUT_DIR and
renamed into place at the end, so a half-written folder is never taken for a finished one.
`converted-from.json` records the GGUF file's sha256 and the library versions.

`--check TEXT` then loads the written folder back and prints one JSON line with Transformers'
greedy continuation of TEXT (the same call `safeformers run text-generation` is compared with).
"""

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dequantize_option() -> dict:
    """`quantization_config=GgufConfig(dequantize=True)` where this Transformers has it (it
    otherwise may keep the blocks packed when a GGUF kernel is installed); {} on older ones,
    which always dequantize."""
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def convert(gguf: Path, out: Path) -> None:
    import gguf as gguf_package
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                  dtype=torch.float32, **dequantize_option())
    # Transformers keeps a GGUF-loaded model marked as quantized (even when every weight was
    # unpacked to f32) and refuses to save it; so the dense f32 weights go into a plain model
    # built from the same config without its quantization entry, which saves normally.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    state = {name: tensor.to(torch.float32) for name, tensor in loaded.state_dict().items()}
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    # A tied lm_head is not a separate entry; anything else missing means packed weights.
    missing = [name for name in missing if name != "lm_head.weight"]
    if missing or unexpected:
        raise SystemExit(f"convert_smollm2: the GGUF weights do not fill a plain model: missing "
                         f"{missing[:5]}, unexpected {unexpected[:5]}")
    model.generation_config = loaded.generation_config
    model.save_pretrained(str(partial))
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer.save_pretrained(str(partial))
    (partial / "converted-from.json").write_text(json.dumps({
        "gguf_file": gguf.name,
        "gguf_sha256": sha256_of(gguf),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "gguf": getattr(gguf_package, "__version__", "unknown"),
        "weights": "float32, dequantized from Q4_1 by Transformers",
    }, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)


def greedy_check(folder: Path, text: str, new_tokens: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    encoded = tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**encoded, do_sample=False, max_new_tokens=new_tokens,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    ids = out[0, encoded["input_ids"].shape[1]:].tolist()
    return {"side": "transformers", "prompt": text,
            "prompt_ids": encoded["input_ids"][0].tolist(), "generated": ids,
            "generated_text": tokenizer.decode(ids, skip_special_tokens=True)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf", type=Path, help="the .gguf file (scripts/fetch-smollm2.sh)")
    parser.add_argument("out", type=Path, help="the folder to write")
    parser.add_argument("--check", metavar="TEXT",
                        help="also print Transformers' greedy continuation of TEXT")
    parser.add_argument("--new-tokens", type=int, default=20, help="for --check (default 20)")
    parser.add_argument("--skip-existing", action="store_true",
                        help="do nothing if OUT/model.safetensors exists")
    args = parser.parse_args()
    if not args.gguf.is_file():
        print(f"convert_smollm2: {args.gguf}: no such file", file=sys.stderr)
        return 1
    if not (args.skip_existing and (args.out / "model.safetensors").is_file()):
        convert(args.gguf, args.out)
        print(f"written: {args.out}", file=sys.stderr)
    if args.check is not None:
        print(json.dumps(greedy_check(args.out, args.check, args.new_tokens)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
