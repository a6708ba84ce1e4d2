#!/usr/bin/env python3
"""Golden values for crates/tokenize, made once by hand and committed.

Run with a Python that has `transformers` and `tokenizers` (the venv in
~/.cache/safeformers/venv-torch works; the Hub is never contacted):

    python scripts/make_tokenize_fixtures.py ~/.cache/safeformers/fixtures/all-MiniLM-L6-v2

Writes into crates/tokenize/tests/data/:
- minilm_expected.json   what Transformers' AutoTokenizer gives for all-MiniLM-L6-v2
- bytelevel/             a tiny byte-level BPE tokenizer (GPT-2 regex Split pre-tokenizer,
                         RoBERTa post-processor with trim_offsets), trained here on a few lines
- bytelevel_expected.json what Transformers gives for it
"""
import json
import os
import sys

import tokenizers
import transformers
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "tokenize", "tests", "data")

LONG = " ".join(["The quick brown fox jumps over the lazy dog."] * 40)


def rows(enc, n):
    keys = ["input_ids", "attention_mask", "token_type_ids", "special_tokens_mask", "offset_mapping"]
    out = []
    for i in range(n):
        row = {k: [list(x) if isinstance(x, tuple) else x for x in enc[k][i]] for k in keys if k in enc}
        row["word_ids"] = enc.word_ids(i)
        row["sequence_ids"] = enc.sequence_ids(i)
        out.append(row)
    return out


def case(tok, name, inputs, pairs=False, **kwargs):
    kw = dict(return_offsets_mapping=True, return_special_tokens_mask=True, return_token_type_ids=True)
    kw.update(kwargs)
    if pairs:
        enc = tok([p[0] for p in inputs], [p[1] for p in inputs], **kw)
    else:
        enc = tok(inputs, **kw)
    n = len(enc["input_ids"])
    result = {"name": name, "inputs": inputs, "pairs": pairs, "kwargs": kwargs, "rows": rows(enc, n)}
    if "overflow_to_sample_mapping" in enc:
        result["overflow_to_sample_mapping"] = enc["overflow_to_sample_mapping"]
    return result


def common_cases(tok, unicode_text):
    return [
        case(tok, "padding_longest", ["Hello world!", "A much longer sentence, with punctuation.", ""], padding=True),
        case(tok, "no_padding", ["Hello world!", "Two words"]),
        case(tok, "truncation_8", ["Hello world!", "A much longer sentence, with punctuation and more words."],
             truncation=True, max_length=8, padding=True),
        case(tok, "truncation_256", [LONG, "short"], truncation=True, max_length=256, padding=True),
        case(tok, "pad_to_multiple_of_8", ["Hello world!", "A sentence of some length here."], padding=True,
             pad_to_multiple_of=8),
        case(tok, "padding_max_length", ["Hello world!"], padding="max_length", truncation=True, max_length=12),
        case(tok, "no_special_tokens", ["Hello world!", "A sentence."], add_special_tokens=False, padding=True),
        case(tok, "empty", [""]),
        case(tok, "unicode", [unicode_text]),
        case(tok, "pairs_longest_first", [["What is this?", "This is a sentence about many things and more."],
                                          ["Who?", "Me."]], pairs=True, truncation=True, max_length=12, padding=True),
        case(tok, "pairs_only_second", [["Where do foxes jump?", LONG]], pairs=True, truncation="only_second",
             max_length=24, padding=True),
        case(tok, "pairs_only_second_overflow", [["Where do foxes jump?", LONG[:200]], ["Who?", "Me."]], pairs=True,
             truncation="only_second", max_length=24, stride=5, return_overflowing_tokens=True, padding=True),
    ]


def decodes(tok, texts):
    out = []
    for t in texts:
        ids = tok(t)["input_ids"]
        out.append({"ids": ids, "skip_special_tokens": True, "text": tok.decode(ids, skip_special_tokens=True)})
        out.append({"ids": ids, "skip_special_tokens": False, "text": tok.decode(ids, skip_special_tokens=False)})
    return out


def header():
    return {"generated_by": "scripts/make_tokenize_fixtures.py",
            "transformers": transformers.__version__, "tokenizers": tokenizers.__version__}


def minilm(folder):
    tok = AutoTokenizer.from_pretrained(folder)
    unicode_text = "Héllo Wörld! Ça va? naïve café — 日本語 😀 Straße ÅÄÖ"
    doc = header()
    doc["cases"] = common_cases(tok, unicode_text)
    doc["decode"] = decodes(tok, ["Hello world!", unicode_text])
    with open(os.path.join(OUT, "minilm_expected.json"), "w") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)


CORPUS = [
    "Hello world! This is a tiny corpus for a byte-level BPE.",
    "The quick brown fox jumps over the lazy dog. It's what we'd do, isn't it?",
    "Numbers like 1234 and 56, punctuation... and   spaces,\ttabs\nnewlines.",
    "Unicode: café, naïve, Straße, 日本語, emoji 😀.",
] * 3


def bytelevel():
    folder = os.path.join(OUT, "bytelevel")
    os.makedirs(folder, exist_ok=True)
    tok = Tokenizer(models.BPE())
    gpt2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(gpt2), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                      add_prefix_space=False)
    # Like MiniLM's file: sections that Transformers overrides and so must we.
    tok.enable_padding(length=64, pad_id=1, pad_token="<pad>")
    tok.enable_truncation(max_length=50)
    tok.save(os.path.join(folder, "tokenizer.json"))
    added = {str(tok.token_to_id(s)): {"content": s, "lstrip": s == "<mask>", "normalized": False, "rstrip": False,
                                       "single_word": False, "special": True} for s in special}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": int(1e30),
        "padding_side": "left",
        "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": False, "normalized": False,
                      "rstrip": False, "single_word": False},
        "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>", "unk_token": "<unk>",
        "pad_token": "<pad>", "mask_token": "<mask>",
        "added_tokens_decoder": added,
        "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}",
        # Ignored on purpose: nothing in a config may make us load another file or run code.
        "tokenizer_file": "/etc/passwd",
        "auto_map": {"AutoTokenizer": ["evil.EvilTokenizer", None]},
    }
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=1)
    # Transformers must not follow tokenizer_file either: load the fast tokenizer from our file only.
    config_for_python = dict(config)
    del config_for_python["tokenizer_file"], config_for_python["auto_map"]
    tmp = os.path.join(folder, "..", "_bytelevel_python")
    os.makedirs(tmp, exist_ok=True)
    with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
        json.dump(config_for_python, f)
    tok.save(os.path.join(tmp, "tokenizer.json"))
    t = AutoTokenizer.from_pretrained(tmp)
    unicode_text = "Unicode: café, naïve —  日本語 😀!"
    doc = header()
    doc["cases"] = common_cases(t, unicode_text)
    doc["cases"].append(case(t, "leading_spaces", ["  Hello   world  ", " it's"], padding=True))
    doc["decode"] = decodes(t, ["Hello world!", unicode_text])
    with open(os.path.join(OUT, "bytelevel_expected.json"), "w") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
    for name in os.listdir(tmp):
        os.remove(os.path.join(tmp, name))
    os.rmdir(tmp)


if __name__ == "__main__":
    minilm(sys.argv[1])
    bytelevel()
