#!/usr/bin/env python3
"""GGUF tokenizer goldens for crates/tokenize, made once by hand and committed.

Run with the torch venv (transformers 5.x, nothing is downloaded), on the SmolLM2 GGUF that
scripts/fetch-smollm2.sh fetches:

    ~/.cache/safeformers/venv-torch/bin/python scripts/make_gguf_tokenizer_fixtures.py \
        "$(scripts/fetch-smollm2.sh | tail -n 1)"

Writes tests/fixtures/gguf-tokenizer/smollm2-expected.json: for each text of a varied set, the ids
of `tokenizer(text)` and of `tokenizer(text, add_special_tokens=False)` with Transformers' own
GGUF tokenizer (`AutoTokenizer.from_pretrained(<folder of the file>, gguf_file=<its name>)`), and
`decode(ids)` / `decode(ids, skip_special_tokens=True)`; a chat-templated conversation rendered by
`apply_chat_template(tokenize=False)` and its ids; the special tokens by role. Then, under `pre_variants`, the ids of the same texts for copies of
the file's tokenizer metadata (no tensors) whose `tokenizer.ggml.pre` is another supported value,
written with the PyPI `gguf` package into a temporary folder.

Also writes tests/fixtures/gguf-tokenizer/llama-style.gguf, a SentencePiece-style GGUF
(`tokenizer.ggml.model = llama`, no merges: Transformers derives them from the scores) made from
the small byte-fallback vocabulary of tests/fixtures/chat-templates/llama-style/bos, and
llama-style-expected.json with Transformers' ids and decodes for the same texts.
"""
import hashlib
import json
import os
import sys

import tempfile

import gguf
import transformers
from transformers import AutoTokenizer

TEXTS = [
    "Hello world!",
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "fn main() {\n\tlet x: Vec<u8> = vec![1, 2, 3];\n}",
    "Emoji: 🤗🚀👩‍👩‍👧 and flags 🇫🇷🇯🇵",
    "中文分词测试，日本語のテキスト、한국어 문장.",
    "   leading spaces, trailing spaces   ",
    "tabs\t\tand\n\n\nnewlines\r\n   mixed \t \n end",
    "Numbers: 0 7 42 123 2024 3.14159 1,000,000 -17 1e-9",
    "Phone 555-0123, price $19.99, 50% off; ratio 3:2.",
    "I'm sure you've heard they'll say we'd DON'T it's",
    "<|im_start|>user\nHi<|im_end|>",
    "<|endoftext|> between <repo_name> specials <empty_output>",
    "Ünïcödé àccents, naïve café, Straße, Ελληνικά, русский",
    "",
    " ",
    "a" * 300,
    "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct?x=1&y=2#frag",
]

CONVERSATION = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Japan? 🗾"},
]


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


PRE_VARIANTS = ["llama-bpe", "qwen2", "gpt-2", "default"]


def copy_with_pre(source, destination, pre):
    """A GGUF holding `source`'s metadata, `tokenizer.ggml.pre` set to `pre`, and no tensors."""
    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(destination, arch=reader.fields["general.architecture"].contents())
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = pre if key == "tokenizer.ggml.pre" else field.contents()
        types = field.types
        if types[0] == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, value, types[0], sub_type=types[-1])
        else:
            writer.add_key_value(key, value, types[0])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def ids_of(tokenizer):
    return [tokenizer(text, add_special_tokens=False)["input_ids"] for text in TEXTS]


LLAMA_STYLE_SOURCE = "tests/fixtures/chat-templates/llama-style/bos/tokenizer.json"


def write_llama_style(path):
    """A `llama` GGUF tokenizer: the vocabulary in id order, scores `-id`, llama.cpp's token types
    (2 unknown, 3 control, 6 byte, 1 normal), bos/eos/unknown ids, no merges."""
    with open(LLAMA_STYLE_SOURCE, encoding="utf-8") as handle:
        source = json.load(handle)
    tokens = [token for token, _ in sorted(source["model"]["vocab"].items(), key=lambda kv: kv[1])]
    types = []
    for token in tokens:
        if token == "<unk>":
            types.append(2)
        elif token in ("<s>", "</s>"):
            types.append(3)
        elif token.startswith("<0x") and len(token) == 6:
            types.append(6)
        else:
            types.append(1)
    writer = gguf.GGUFWriter(path, arch="llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([-float(index) for index in range(len(tokens))])
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def llama_style_expected(folder):
    write_llama_style(os.path.join(folder, "llama-style.gguf"))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file="llama-style.gguf")
    cases = []
    for text in TEXTS:
        ids = tokenizer(text)["input_ids"]
        cases.append(
            {
                "text": text,
                "input_ids": ids,
                "input_ids_without_special_tokens": tokenizer(text, add_special_tokens=False)["input_ids"],
                "decoded": tokenizer.decode(ids),
                "decoded_skip_special_tokens": tokenizer.decode(ids, skip_special_tokens=True),
            }
        )
    return {
        "made_by": "scripts/make_gguf_tokenizer_fixtures.py",
        "transformers": transformers.__version__,
        "special_tokens": {
            "bos_id": tokenizer.bos_token_id,
            "eos_id": tokenizer.eos_token_id,
            "unk_id": tokenizer.unk_token_id,
        },
        "vocab_size": len(tokenizer),
        "cases": cases,
    }


def write_json(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, ensure_ascii=False, indent=None, separators=(",", ":"))
        handle.write("\n")


def main():
    gguf_path = os.path.abspath(sys.argv[1])
    out_path = sys.argv[2] if len(sys.argv) > 2 else "tests/fixtures/gguf-tokenizer/smollm2-expected.json"
    tokenizer = AutoTokenizer.from_pretrained(os.path.dirname(gguf_path), gguf_file=os.path.basename(gguf_path))
    cases = []
    for text in TEXTS:
        ids = tokenizer(text)["input_ids"]
        plain = tokenizer(text, add_special_tokens=False)["input_ids"]
        cases.append(
            {
                "text": text,
                "input_ids": ids,
                "input_ids_without_special_tokens": plain,
                "decoded": tokenizer.decode(ids),
                "decoded_skip_special_tokens": tokenizer.decode(ids, skip_special_tokens=True),
            }
        )
    chat_text = tokenizer.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    chat_ids = tokenizer(chat_text, add_special_tokens=False)["input_ids"]
    expected = {
        "made_by": "scripts/make_gguf_tokenizer_fixtures.py",
        "transformers": transformers.__version__,
        "gguf_sha256": sha256_of(gguf_path),
        "special_tokens": {
            "bos": tokenizer.bos_token,
            "eos": tokenizer.eos_token,
            "unk": tokenizer.unk_token,
            "pad": tokenizer.pad_token,
            "bos_id": tokenizer.bos_token_id,
            "eos_id": tokenizer.eos_token_id,
            "unk_id": tokenizer.unk_token_id,
            "pad_id": tokenizer.pad_token_id,
            "all_special_ids": sorted(tokenizer.all_special_ids),
        },
        "vocab_size": len(tokenizer),
        "cases": cases,
        "chat": {
            "messages": CONVERSATION,
            "add_generation_prompt": True,
            "text": chat_text,
            "input_ids": chat_ids,
            "decoded": tokenizer.decode(chat_ids),
        },
    }
    variants = {}
    with tempfile.TemporaryDirectory() as folder:
        for pre in PRE_VARIANTS:
            name = f"pre-{pre}.gguf"
            copy_with_pre(gguf_path, os.path.join(folder, name), pre)
            variant = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            variants[pre] = ids_of(variant)
    expected["pre_variants"] = variants
    write_json(out_path, expected)
    print(out_path)
    fixtures = os.path.dirname(out_path)
    write_json(os.path.join(fixtures, "llama-style-expected.json"), llama_style_expected(fixtures))
    print(os.path.join(fixtures, "llama-style-expected.json"))


if __name__ == "__main__":
    main()
