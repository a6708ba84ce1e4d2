#!/usr/bin/env python3
"""Writes the encoder-model golden fixtures into `tests/fixtures/models/`.

Run by hand, never in CI; the outputs are committed. From the repository root:

    python3 -m venv ~/.cache/safeformers/venv-torch
    ~/.cache/safeformers/venv-torch/bin/pip install torch numpy safetensors \
        transformers sentence-transformers tokenizers
    # Transformers 5 has no question-answering pipeline; its goldens come from Transformers 4,
    # installed beside (not into) the venv and put first on PYTHONPATH for one subprocess:
    ~/.cache/safeformers/venv-torch/bin/pip install --target ~/.cache/safeformers/tf4-site \
        "transformers>=4.57,<5"
    scripts/fetch-minilm.sh        # the real all-MiniLM-L6-v2 folder, for minilm-golden.json
    HF_HUB_OFFLINE=1 ~/.cache/safeformers/venv-torch/bin/python scripts/make_model_fixtures.py

(made with torch 2.15, transformers 5.23 and 4.57 (QA pipeline only), sentence-transformers 6.2,
tokenizers 0.23, CPython 3.11; the exact versions are written into every JSON file.)

Nothing is fetched from the Hub: every tokenizer is built here from a small fixed corpus and
every model is randomly initialised under a fixed seed. What it writes:

* `<name>/`            one folder per tiny model: `config.json` + `model.safetensors`
                       (`save_pretrained(safe_serialization=True)`), the tokenizer files
                       (`tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`) and
                       `outputs.json`: inputs and eval-mode float32 outputs for one sequence and
                       for a right-padded batch of three.
* `bert-tf4/`          `bert` with a hand-edited Transformers-4-style `config.json`
                       (`torch_dtype` instead of `dtype`); same weights and outputs as `bert`.
* `pipelines.json`     `transformers.pipeline(...)` outputs of the tiny heads for fixed inputs.
* `minilm-golden.json` token ids and sentence-transformers embeddings of the real
                       all-MiniLM-L6-v2 (folder from `scripts/fetch-minilm.sh`).

Random models: every parameter, including biases and LayerNorm weights (which Transformers
initialises to exact zeros and ones), is redrawn from a normal distribution under a fixed seed, so
a loader that drops a bias or a LayerNorm cannot pass by accident. Scores in the pipeline goldens
are random but deterministic; the script checks that no two ranked scores are closer than
`MIN_SCORE_GAP`, so an ordering is never decided by float noise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "models"
GENERATOR = "scripts/make_model_fixtures.py"
MINILM_DIR = Path(
    os.environ.get("SAFEFORMERS_FIXTURE_CACHE", Path.home() / ".cache" / "safeformers" / "fixtures")
) / "all-MiniLM-L6-v2"
TF4_SITE = Path(os.environ.get("SAFEFORMERS_TF4_SITE", Path.home() / ".cache" / "safeformers" / "tf4-site"))

SEED = 20240601
MIN_SCORE_GAP = 2e-4

# Tiny model dimensions (same for every architecture).
HIDDEN, LAYERS, HEADS, INTERMEDIATE, MAX_POS = 32, 2, 4, 37, 64
SEQCLS_LABELS = ["negative", "neutral", "positive"]
NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]

# The corpus the tokenizers are built from. Small, fixed, and covering the test inputs below.
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "My name is Sarah and I live in London.",
    "My name is Wolfgang and I live in Berlin.",
    "Clara moved from Paris to New York in 2019.",
    "Where does Sarah live? She lives in London, near the river.",
    "The capital of France is Paris, and the capital of Germany is Berlin.",
    "Hugging Face makes tools for machine learning.",
    "This movie was great, I loved it!",
    "This movie was terrible; I hated every minute of it.",
    "The weather is nice today, so we walk to the park.",
    "I think the answer is forty two.",
    "Numbers like 3.14, 42 and 1000 appear in text too.",
    "Rust is a safe and fast programming language.",
    "A tokenizer splits text into pieces that a model can read.",
    "The model reads the text and answers the question.",
    "What is the name of the city where Clara works?",
    "Clara works in Paris as an engineer at a small company.",
    "Is it safe to load a model from the internet?",
    "Safe formats store only tensors, never code.",
    "Hello world! How are you doing today?",
    "We went to the market and bought apples, bread and cheese.",
    "The cat sat on the mat and looked at the bird.",
    "Good morning, have a nice day.",
    "Everyone loves a good story about a brave knight.",
    "She said that the train to Berlin leaves at nine.",
    "He reads books about history, science and art.",
    "Café crème and naïve résumé have accents.",
]

# Test inputs for outputs.json (single sequence, and a batch of three different lengths).
SINGLE = "My name is Sarah and I live in London."
BATCH = [
    "Hello world!",
    "The quick brown fox jumps over the lazy dog.",
    "Clara moved from Paris to New York in 2019, near the river.",
]
QA_SINGLE = ("Where does Sarah live?", "My name is Sarah and I live in London.")
QA_BATCH = [
    ("Where does Sarah live?", "My name is Sarah and I live in London."),
    ("What is the capital of France?", "The capital of France is Paris, and the capital of Germany is Berlin."),
    ("Who works in Paris?", "Clara works in Paris as an engineer."),
]

MINILM_SENTENCES = [
    "This is an example sentence.",
    "Each sentence is converted",
    "Hello, world!!! How's it going?? (fine...) -- ok; [yes] {no} \"quoted\" 'single'",
    "Café au lait, naïve résumé, Ærøskøbing, Straße, 東京 and 😀 emoji.",
    "In 2023, 42% of the 1,000,000 users paid $3.50 (or €3.20) on 12/05.",
    "",
    "A longer sentence about how sentence embeddings map text to a dense vector space, so that "
    "semantically similar sentences end up close together and can be found by cosine similarity.",
    # Far beyond 256 word pieces: sentence-transformers truncates at max_seq_length=256.
    " ".join(
        f"word{i} is followed by the number {i * 7} and some filler text about topic {i % 5}."
        for i in range(60)
    ),
]
MINILM_PAIR = ("A man is eating food.", "A man is eating a piece of bread.")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def versions() -> dict:
    import safetensors
    import sentence_transformers
    import tokenizers
    import transformers

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
    }


def tensor_json(t, dtype=float) -> dict:
    """A tensor as {"shape": [...], "data": nested lists}."""
    arr = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    if dtype is float:
        # float32 values to 7 significant digits (relative error < 1e-7, far inside the tests'
        # 1e-4): shorter than repr's 17 digits of the float64 the value widens to.
        data = np.vectorize(round_sig, otypes=[float])(arr.astype(np.float32)).tolist() if arr.size else arr.tolist()
    else:
        data = arr.astype(np.int64).tolist()
    return {"shape": list(arr.shape), "data": data}


def round_sig(x: float, digits: int = 7) -> float:
    return float(f"{x:.{digits}g}")


def to_plain(obj):
    """Pipeline outputs (numpy scalars, arrays, tensors) as JSON values."""
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_json(path: Path, value, indent=None) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=False, separators=None if indent else (",", ":"))
    path.write_text(text + "\n", encoding="utf-8")


def check_gaps(scores: list[float], what: str) -> None:
    """Refuses goldens whose ranking could be flipped by float noise."""
    s = sorted(scores, reverse=True)
    for a, b in zip(s, s[1:]):
        if a - b < MIN_SCORE_GAP:
            raise SystemExit(f"{what}: scores {a} and {b} closer than {MIN_SCORE_GAP}; change SEED")


# --------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------


def build_wordpiece(distilbert: bool = False):
    """A ~200-token lowercase WordPiece vocab: specials, characters, `##` characters, words.

    The same vocab for BERT and DistilBERT; DistilBERT's tokenizer class emits no token_type_ids.
    """
    from collections import Counter

    from tokenizers import normalizers, pre_tokenizers

    from transformers import BertTokenizerFast, DistilBertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    norm = normalizers.BertNormalizer(lowercase=True, strip_accents=None, clean_text=True)
    pre = pre_tokenizers.BertPreTokenizer()
    words = Counter()
    for line in CORPUS:
        for w, _ in pre.pre_tokenize_str(norm.normalize_str(line)):
            words[w] += 1
    chars = sorted({c for w in words for c in w})
    cont = sorted({"##" + c for w in words for c in w[1:] if c.isalnum()})
    vocab = specials + chars + cont
    # The most frequent multi-character words, ties broken alphabetically, up to 200 in all.
    for w, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= 200:
            break
        if len(w) > 1 and w not in vocab:
            vocab.append(w)
    # A few frequent suffixes so words split into more than characters.
    for piece in ["##s", "##ing", "##ed", "##er", "##ly"]:
        if piece not in vocab:
            vocab.append(piece)
    cls = DistilBertTokenizerFast if distilbert else BertTokenizerFast
    return cls(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True, model_max_length=MAX_POS)


def build_bpe():
    """A byte-level BPE trained on CORPUS (256 bytes + 5 specials + ~300 merges), RoBERTa-style."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from transformers import RobertaTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0..4
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=256 + len(specials) + 300,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    # RoBERTa positions start at pad_token_id + 1, so 2 of the MAX_POS positions are unusable
    # (as roberta-base: 514 positions, model_max_length 512).
    return RobertaTokenizerFast(vocab=model["vocab"], merges=merges, model_max_length=MAX_POS - 2)


def build_unigram():
    """A SentencePiece-like Unigram vocab built from CORPUS, XLM-RoBERTa-style.

    Ids <s>=0 <pad>=1 </s>=2 <unk>=3 <mask>=4 (XLMRobertaTokenizer hard-codes unk_id 3). Not
    trained: the `tokenizers` UnigramTrainer gives a different vocab on every run, so the pieces
    and log-probability scores are computed here from counts: every character (low score),
    `▁` + each word, and the most frequent character 2- and 3-grams inside words.
    """
    from collections import Counter

    from transformers import XLMRobertaTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    words = Counter(w for line in CORPUS for w in line.split())
    total = sum(words.values())
    pieces: dict[str, float] = {"▁": -8.0}
    for c in sorted({c for w in words for c in w}):
        pieces.setdefault(c, -10.0)
    grams = Counter()
    for w, n in words.items():
        for k in (2, 3):
            for i in range(len(w) - k + 1):
                grams[w[i:i + k]] += n
    gram_total = sum(grams.values())
    for g, n in sorted(grams.items(), key=lambda kv: (-kv[1], kv[0]))[:80]:
        pieces.setdefault(g, round(math.log(n / gram_total) - 2.0, 4))
    for w, n in sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))[:90]:
        pieces.setdefault("▁" + w, round(math.log(n / total), 4))
    vocab = [(p, 0.0) for p in specials] + sorted(pieces.items(), key=lambda kv: (-kv[1], kv[0]))
    return XLMRobertaTokenizerFast(vocab=vocab, model_max_length=MAX_POS - 2)


def save_tokenizer(tokenizer, folder: Path) -> None:
    tokenizer.save_pretrained(folder)
    # Transformers 5 no longer writes special_tokens_map.json; write what Transformers 4 did
    # (token strings by role), since older readers and the Rust loader may look for it.
    smap = folder / "special_tokens_map.json"
    if not smap.exists():
        write_json(smap, {k: str(v) for k, v in tokenizer.special_tokens_map.items()}, indent=2)


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def make_config(arch: str, vocab_size: int, **extra):
    from transformers import BertConfig, DistilBertConfig, RobertaConfig, XLMRobertaConfig

    if arch == "distilbert":
        return DistilBertConfig(
            vocab_size=vocab_size, dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS,
            hidden_dim=INTERMEDIATE, max_position_embeddings=MAX_POS, pad_token_id=0, **extra,
        )
    common = dict(
        vocab_size=vocab_size, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, intermediate_size=INTERMEDIATE, max_position_embeddings=MAX_POS,
    )
    if arch == "bert":
        return BertConfig(**common, type_vocab_size=2, pad_token_id=0, **extra)
    # RoBERTa positions start at pad_token_id + 1 = 2; type_vocab_size 1 as in roberta-base.
    cls = RobertaConfig if arch == "roberta" else XLMRobertaConfig
    return cls(**common, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2, **extra)


HEAD_CLASSES = {
    "bert": {"base": "BertModel", "mlm": "BertForMaskedLM", "seqcls": "BertForSequenceClassification",
             "ner": "BertForTokenClassification", "qa": "BertForQuestionAnswering"},
    "roberta": {"base": "RobertaModel", "mlm": "RobertaForMaskedLM",
                "seqcls": "RobertaForSequenceClassification", "ner": "RobertaForTokenClassification",
                "qa": "RobertaForQuestionAnswering"},
    "xlm-roberta": {"base": "XLMRobertaModel", "mlm": "XLMRobertaForMaskedLM",
                    "seqcls": "XLMRobertaForSequenceClassification",
                    "ner": "XLMRobertaForTokenClassification", "qa": "XLMRobertaForQuestionAnswering"},
    "distilbert": {"base": "DistilBertModel", "mlm": "DistilBertForMaskedLM",
                   "seqcls": "DistilBertForSequenceClassification",
                   "ner": "DistilBertForTokenClassification", "qa": "DistilBertForQuestionAnswering"},
}


def randomize(model, seed: int) -> None:
    """Redraws every parameter so none is an exact 0 or 1 (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                is_norm_weight = ("norm" in name.lower()) and name.endswith("weight")
                mean = 1.0 if is_norm_weight else 0.0
                p.copy_(mean + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.4 * torch.randn(p.shape, generator=g))
    # The padding rows of the embeddings are redrawn too: they are ordinary weights once saved.
    model.tie_weights()


def build_model(arch: str, head: str, vocab_size: int, seed: int, **config_extra):
    import transformers

    torch.manual_seed(seed)
    config = make_config(arch, vocab_size, **config_extra)
    cls = getattr(transformers, HEAD_CLASSES[arch][head])
    # Eager attention: the plain softmax(QK^T/sqrt(d) + mask)V the Rust code implements.
    model = cls._from_config(config, attn_implementation="eager")
    randomize(model, seed)
    model.eval()
    return model


def encode(tokenizer, texts, pairs: bool):
    if pairs:
        return tokenizer([q for q, _ in texts], [c for _, c in texts], padding=True, return_tensors="pt")
    return tokenizer(texts, padding=True, return_tensors="pt")


# MLM logits of the batch case keep only the first MLM_BATCH_COLUMNS vocabulary columns (the
# single case keeps all): full [3, L, vocab] logits would make up most of the fixtures' size.
MLM_BATCH_COLUMNS = 64


def run_case(model, tokenizer, head: str, texts, pairs: bool, case: str) -> dict:
    enc = encode(tokenizer, texts, pairs)
    inputs = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    with torch.no_grad():
        out = model(**inputs)
    outputs = {}
    if head == "base":
        outputs["last_hidden_state"] = tensor_json(out.last_hidden_state)
        if getattr(out, "pooler_output", None) is not None:
            outputs["pooler_output"] = tensor_json(out.pooler_output)
    elif head == "qa":
        outputs["start_logits"] = tensor_json(out.start_logits)
        outputs["end_logits"] = tensor_json(out.end_logits)
    elif head == "mlm" and case == "batch":
        outputs["logits"] = tensor_json(out.logits[..., :MLM_BATCH_COLUMNS])
        outputs["logits"]["shape"] = list(out.logits.shape)
        outputs["logits"]["columns"] = MLM_BATCH_COLUMNS
    else:
        outputs["logits"] = tensor_json(out.logits)
    return {
        "texts": [list(t) for t in texts] if pairs else list(texts),
        "tokens": [tokenizer.convert_ids_to_tokens(row) for row in enc["input_ids"].tolist()],
        "inputs": {k: tensor_json(v, dtype=int) for k, v in inputs.items()},
        "outputs": outputs,
    }


def write_model(name: str, arch: str, head: str, tokenizer, seed: int, meta: dict, **config_extra):
    folder = OUT / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    model = build_model(arch, head, len(tokenizer), seed, **config_extra)
    model.save_pretrained(folder, safe_serialization=True)
    save_tokenizer(tokenizer, folder)
    pairs = head == "qa"
    doc = {
        "generator": GENERATOR,
        "versions": meta,
        "model": name,
        "class": type(model).__name__,
        "seed": seed,
        "cases": {
            "single": run_case(model, tokenizer, head, [QA_SINGLE] if pairs else [SINGLE], pairs, "single"),
            "batch": run_case(model, tokenizer, head, QA_BATCH if pairs else BATCH, pairs, "batch"),
        },
    }
    write_json(folder / "outputs.json", doc)
    return model


# --------------------------------------------------------------------------------------------
# Pipelines
# --------------------------------------------------------------------------------------------

SEQCLS_INPUTS = ["This movie was great, I loved it!", "The weather is nice today."]
NER_INPUT = "My name is Wolfgang and I live in Berlin."
NER_INPUT_2 = "Clara moved from Paris to New York in 2019."


def pipeline_goldens(models: list[str], qa_models: list[str]) -> list[dict]:
    from transformers import pipeline

    entries = []

    def add(task, model, inputs, kwargs, output):
        entries.append({"task": task, "model": model, "inputs": inputs, "kwargs": kwargs,
                        "output": to_plain(output)})

    for name in models:
        arch = name.split("-")[0] if not name.startswith("xlm-roberta") else "xlm-roberta"
        kind = name[len(arch) + 1:]
        folder = str(OUT / name)
        if kind in ("seqcls", "seqcls-multilabel"):
            p = pipeline("text-classification", model=folder, tokenizer=folder, device="cpu")
            for text in SEQCLS_INPUTS:
                out = p(text, top_k=None)
                check_gaps([d["score"] for d in out], f"{name} text-classification")
                add("text-classification", name, text, {"top_k": None}, out)
        elif kind == "ner":
            p = pipeline("token-classification", model=folder, tokenizer=folder, device="cpu")
            for text in (NER_INPUT, NER_INPUT_2):
                for strategy in ("none", "simple", "first", "max"):
                    out = p(text, aggregation_strategy=strategy)
                    add("token-classification", name, text, {"aggregation_strategy": strategy}, out)
        elif kind == "mlm":
            p = pipeline("fill-mask", model=folder, tokenizer=folder, device="cpu")
            mask = p.tokenizer.mask_token
            for text in (f"The capital of France is {mask}.", f"My name is Sarah and I live in {mask}."):
                out = p(text, top_k=5)
                check_gaps([d["score"] for d in out], f"{name} fill-mask")
                add("fill-mask", name, text, {"top_k": 5}, out)
        elif kind == "":
            p = pipeline("feature-extraction", model=folder, tokenizer=folder, device="cpu")
            out = p(SINGLE)
            add("feature-extraction", name, SINGLE, {}, np.vectorize(round_sig, otypes=[float])(np.asarray(out, dtype=np.float32)))
    for name in qa_models:
        entries.append({"task": "question-answering", "model": name, "pending_tf4": True})
    return entries


def qa_goldens_tf4(names: list[str]) -> list[dict]:
    """Runs in the Transformers 4 subprocess: question-answering pipeline goldens."""
    import transformers
    from transformers import AutoTokenizer, pipeline

    entries = []
    for name in names:
        folder = str(OUT / name)
        # The tokenizer saved by Transformers 5 must give Transformers 4 the same ids.
        ours = json.loads((OUT / name / "outputs.json").read_text())["cases"]["batch"]
        tok = AutoTokenizer.from_pretrained(folder)
        enc = tok([q for q, _ in QA_BATCH], [c for _, c in QA_BATCH], padding=True)
        assert enc["input_ids"] == ours["inputs"]["input_ids"]["data"], name
        p = pipeline("question-answering", model=folder, tokenizer=folder, device="cpu")
        for question, context in QA_BATCH[:2]:
            out = p(question=question, context=context)
            # top_k=3 too, so the span ranking is pinned down, not just the winner.
            out3 = p(question=question, context=context, top_k=3)
            check_gaps([d["score"] for d in out3], f"{name} question-answering")
            for kwargs, o in (({}, out), ({"top_k": 3}, out3)):
                entries.append({
                    "task": "question-answering", "model": name,
                    "inputs": {"question": question, "context": context}, "kwargs": kwargs,
                    "output": to_plain(o), "transformers_version": transformers.__version__,
                })
    return entries


# --------------------------------------------------------------------------------------------
# MiniLM
# --------------------------------------------------------------------------------------------


def minilm_golden(meta: dict) -> dict:
    from sentence_transformers import SentenceTransformer

    if not (MINILM_DIR / "model.safetensors").exists():
        raise SystemExit(f"{MINILM_DIR} is missing: run scripts/fetch-minilm.sh first")
    st = SentenceTransformer(str(MINILM_DIR), device="cpu")
    assert st.max_seq_length == 256, st.max_seq_length
    # What encode() feeds the model: padding to longest, truncation at max_seq_length.
    features = st.preprocess(MINILM_SENTENCES)
    features = {k: features[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in features}
    emb = st.encode(MINILM_SENTENCES, convert_to_numpy=True, batch_size=32)
    # Each sentence alone too (no padding), to show batching does not matter beyond ~1e-6.
    alone = np.stack([st.encode([s], convert_to_numpy=True)[0] for s in MINILM_SENTENCES])
    assert np.abs(alone - emb).max() < 1e-5, np.abs(alone - emb).max()
    norms = np.linalg.norm(emb, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5), norms
    a, b = st.encode(list(MINILM_PAIR), convert_to_numpy=True)
    cosine = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    lengths = features["attention_mask"].sum(dim=1).tolist()
    return {
        "generator": GENERATOR,
        "versions": meta,
        "model_dir": "all-MiniLM-L6-v2 (scripts/fetch-minilm.sh)",
        "modules": [m.__class__.__name__ for m in st],
        "max_seq_length": st.max_seq_length,
        "normalized": True,
        "sentences": MINILM_SENTENCES,
        "lengths": lengths,
        "tokens": {k: tensor_json(v, dtype=int) for k, v in features.items()},
        "embeddings": {
            "shape": list(emb.shape),
            "data": [[round_sig(float(x)) for x in row] for row in emb],
        },
        "similarity": {"sentences": list(MINILM_PAIR), "cosine": round_sig(cosine)},
    }


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

QA_MODELS = ["bert-qa", "roberta-qa", "distilbert-qa", "xlm-roberta-qa"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tf4-qa", metavar="JSON_OUT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tf4_qa:
        write_json(Path(args.tf4_qa), qa_goldens_tf4(QA_MODELS))
        return

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    meta = versions()
    OUT.mkdir(parents=True, exist_ok=True)
    tokenizers = {"wordpiece": build_wordpiece(), "wordpiece-distilbert": build_wordpiece(distilbert=True),
                  "bpe": build_bpe(), "unigram": build_unigram()}
    arch_tok = {"bert": "wordpiece", "distilbert": "wordpiece-distilbert", "roberta": "bpe", "xlm-roberta": "unigram"}
    for kind, tok in tokenizers.items():
        print(f"tokenizer {kind}: {len(tok)} tokens")

    heads = {
        "": ("base", {}),
        "-mlm": ("mlm", {}),
        "-seqcls": ("seqcls", {"id2label": dict(enumerate(SEQCLS_LABELS))}),
        "-ner": ("ner", {"id2label": dict(enumerate(NER_LABELS))}),
        "-qa": ("qa", {}),
    }
    names = []
    seed = SEED
    for arch in ("bert", "roberta", "xlm-roberta", "distilbert"):
        for suffix, (head, extra) in heads.items():
            seed += 1
            name = arch + suffix
            write_model(name, arch, head, tokenizers[arch_tok[arch]], seed, meta, **extra)
            names.append(name)
            print("wrote", name)
        if arch == "bert":
            seed += 1
            write_model("bert-seqcls-multilabel", "bert", "seqcls", tokenizers["wordpiece"], seed, meta,
                        id2label=dict(enumerate(SEQCLS_LABELS)),
                        problem_type="multi_label_classification")
            names.append("bert-seqcls-multilabel")
            print("wrote bert-seqcls-multilabel")

    # bert-tf4: the same checkpoint with the config.json a Transformers 4 release before 4.56 wrote
    # (`torch_dtype`, not `dtype`). Hand-edited from Transformers 5's: key renamed, version
    # changed, and the v5-only keys that 4.x BertConfig did not write dropped.
    tf4 = OUT / "bert-tf4"
    if tf4.exists():
        shutil.rmtree(tf4)
    shutil.copytree(OUT / "bert", tf4)
    cfg = json.loads((tf4 / "config.json").read_text())
    v4 = {}
    for k, v in cfg.items():
        if k in ("add_cross_attention", "bos_token_id", "eos_token_id", "is_decoder", "tie_word_embeddings"):
            continue
        v4["torch_dtype" if k == "dtype" else k] = v
    v4["position_embedding_type"] = "absolute"
    v4["transformers_version"] = "4.46.3"
    write_json(tf4 / "config.json", dict(sorted(v4.items())), indent=2)
    doc = json.loads((tf4 / "outputs.json").read_text())
    doc["model"] = "bert-tf4"
    write_json(tf4 / "outputs.json", doc)

    entries = pipeline_goldens(names, QA_MODELS)

    # Question answering: Transformers 4 in a subprocess (Transformers 5 removed the pipeline).
    qa_out = OUT / ".qa-tf4.json"
    env = dict(os.environ, PYTHONPATH=str(TF4_SITE), HF_HUB_OFFLINE="1")
    subprocess.run([sys.executable, __file__, "--tf4-qa", str(qa_out)], check=True, env=env)
    qa = json.loads(qa_out.read_text())
    qa_out.unlink()
    entries = [e for e in entries if not e.get("pending_tf4")] + qa
    tf4_version = qa[0]["transformers_version"] if qa else None
    write_json(OUT / "pipelines.json", {
        "generator": GENERATOR,
        "versions": dict(meta, transformers_qa=tf4_version),
        "entries": entries,
    }, indent=1)
    print("wrote pipelines.json:", len(entries), "entries")

    write_json(OUT / "minilm-golden.json", minilm_golden(meta), indent=None)
    print("wrote minilm-golden.json")


if __name__ == "__main__":
    main()
