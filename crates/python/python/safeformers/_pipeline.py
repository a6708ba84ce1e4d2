"""``safeformers.pipeline``: safeformers' Rust task pipelines, shaped like Transformers'."""

from __future__ import annotations

import json
import os
import queue
import threading
import warnings
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

from . import _native

TASKS = (
    "feature-extraction",
    "sentence-similarity",
    "text-classification",
    "sentiment-analysis",
    "token-classification",
    "ner",
    "fill-mask",
    "question-answering",
    "text-generation",
)


def pipeline(task: str, model: Union[str, "os.PathLike[str]"], **kwargs: Any) -> "Pipeline":
    """Loads the pipeline of ``task`` for ``model``, as ``transformers.pipeline(task, model)``.

    ``model`` is a Hub repo id ``org/name`` (``org/name@revision`` pins one), a local model
    folder, or for text generation a ``.gguf`` file. Repo ids are resolved through the Hugging
    Face cache shared with ``huggingface_hub`` (``HF_HUB_CACHE``, ``HF_HOME``) and fetched from
    ``HF_ENDPOINT`` unless ``HF_HUB_OFFLINE=1``; every file is checked against its sha256.
    Only configuration, tokenizer and weights files are fetched, never code: nothing from the
    repo runs (chat templates render in an isolated, memory- and CPU-limited child process).

    Keyword arguments about loading:

    - ``revision``: a branch, tag or commit; ``offline``: use the cache only;
      ``endpoint``: the Hub or mirror URL;
    - ``allow_pickle``: also read PyTorch pickle checkpoints, with safeformers' non-executing
      unpickler (default: safetensors only);
    - ``locked`` / ``lockfile``: verify every file against ``safeformers.lock``;
    - ``threads``, ``batch_size``; ``dtype`` (``f32``, ``f16``, ``bf16``) and ``quantize``
      (``q8``, ``q8_0``, ``q4_0``, ``q4_k``) for the weights; ``gguf_file`` to pick one file
      of a GGUF repo;
    - feature extraction: ``pooling`` (``mean``, ``cls``, ``max``, ``mean_sqrt_len_tokens``,
      ``lasttoken``, ``none``, or a list), ``normalize``, ``truncate_dim``; sentence
      similarity: ``pooling``.

    Any other keyword is a default for every call (``pipeline("fill-mask", m, top_k=2)``).
    ``device`` may be ``"cpu"`` (or -1); ``trust_remote_code`` is ignored with a warning, since
    no code from a repo ever runs.
    """
    if not isinstance(task, str):
        raise TypeError(f"task must be a str, not {type(task).__name__}")
    device = kwargs.pop("device", None)
    if device is not None and str(device) not in ("cpu", "-1"):
        raise ValueError(f"device={device!r}: safeformers runs models on the CPU; pass 'cpu'")
    if "trust_remote_code" in kwargs:
        kwargs.pop("trust_remote_code")
        warnings.warn(
            "trust_remote_code is ignored: safeformers never runs code from a model repo (the "
            "architectures it ports, such as NomicBert, JinaBert and GTE, load natively; others "
            "are refused with a PolicyError naming the code)",
            UserWarning,
            stacklevel=2,
        )
    keywords = {
        name: os.fspath(value) if isinstance(value, os.PathLike) else value
        for name, value in kwargs.items()
    }
    native = _native.load_pipeline(task, os.fspath(model), json.dumps(keywords))
    return Pipeline(native, task, os.fspath(model))


class Pipeline:
    """A loaded pipeline: call it on inputs, as a Transformers pipeline.

    - ``feature-extraction``: a str gives a float32 array, ``(dimensions,)`` for a sentence
      embedding model or ``(1, tokens, hidden)`` for token embeddings; a list gives a
      ``(inputs, dimensions)`` array, or a list of ``(1, tokens, hidden)`` arrays. Call
      keywords: ``prompt_name``, ``prompt``.
    - ``sentence-similarity``: ``[source, other, ...]`` or ``{"source_sentence": str,
      "sentences": [str, ...]}`` gives the cosine similarity of the source to each other.
    - ``text-classification``: ``[{"label", "score"}]`` per str (``top_k=N``: the N best).
    - ``token-classification``: the entities of each str (``aggregation_strategy``).
    - ``fill-mask``: the ``top_k`` (5) best fills of each mask.
    - ``question-answering``: ``pipe(question=..., context=...)`` or ``{"question",
      "context"}`` dicts; ``{"score", "start", "end", "answer"}`` (``top_k``,
      ``max_answer_len``, ``handle_impossible_answer``, ``doc_stride``, ``max_seq_len``,
      ``align_to_words``).
    - ``text-generation``: a prompt, or a chat (a list of ``{"role", "content"}`` messages),
      gives ``[{"generated_text": ...}]``; ``max_new_tokens``, ``do_sample``, ``temperature``,
      ``top_k``, ``top_p``, ``min_p``, ``repetition_penalty``, ``stop_strings``, ``seed``,
      ``return_full_text``, ``truncate``. :meth:`stream` yields one reply's new text as it is
      generated.

    A list of inputs gives a list of outputs, in order. The GIL is released while the model
    runs, so other Python threads go on.
    """

    def __init__(self, native: Any, task: str, model: str) -> None:
        self._native = native
        self.task: str = native.task
        self.model: str = model
        self._defaults: Dict[str, Any] = json.loads(native.call_defaults_json)

    def __repr__(self) -> str:
        return f"safeformers.Pipeline(task={self.task!r}, model={self.model!r})"

    def __call__(self, inputs: Any = None, /, **kwargs: Any) -> Any:
        if self.task == "question-answering":
            items, single = _question_context(inputs, kwargs)
        elif inputs is None:
            raise TypeError(f"{self.task} pipeline: no inputs given")
        elif self.task == "sentence-similarity":
            return self._run(_similarity_inputs(inputs), kwargs)
        elif self.task == "text-generation" and _is_chat(inputs):
            items, single = [list(inputs)], True
        else:
            items, single = _texts_or_list(self.task, inputs)
        output = self._run(items, kwargs)
        top_k = kwargs.get("top_k", self._defaults.get("top_k"))
        if self.task == "text-classification" and top_k is None:
            return output  # the best {"label", "score"} of each input: a list even for one input
        if self.task == "text-generation":
            return [output[0]] if single else [[result] for result in output]
        return output[0] if single else output

    def stream(self, inputs: Any, /, **kwargs: Any) -> Iterator[str]:
        """Text generation of one prompt or chat, yielding the new text piece by piece as it
        is generated (the prompt is not repeated), as ``TextIteratorStreamer`` gives it.

        The model runs in a background thread; leaving the loop early stops the generation.

        >>> for text in chat.stream([{"role": "user", "content": "Hi"}]):  # doctest: +SKIP
        ...     print(text, end="", flush=True)
        """
        if self.task != "text-generation":
            raise TypeError(f"{self.task} pipeline: only text-generation streams")
        if isinstance(inputs, str):
            items = [inputs]
        elif _is_chat(inputs):
            items = [list(inputs)]
        else:
            raise TypeError("text-generation pipeline: stream takes one prompt (str) or one chat")
        pieces: "queue.Queue[Any]" = queue.Queue()
        stopping = threading.Event()
        finished = object()

        def on_text(text: str) -> None:
            if stopping.is_set():
                raise _Stopped()
            pieces.put(text)

        def generate() -> None:
            try:
                self._native.run_streaming(json.dumps(items), json.dumps(kwargs), on_text)
                pieces.put(finished)
            except BaseException as error:  # handed to the consumer
                pieces.put(error)

        worker = threading.Thread(target=generate, name="safeformers-stream", daemon=True)
        worker.start()
        try:
            while True:
                piece = pieces.get()
                if piece is finished:
                    return
                if isinstance(piece, BaseException):
                    if isinstance(piece, _Stopped):
                        return
                    raise piece
                yield piece
        finally:
            stopping.set()
            worker.join()

    def _run(self, items: List[Any], kwargs: Dict[str, Any]) -> Any:
        result = self._native.run(json.dumps(items), json.dumps(kwargs))
        return json.loads(result) if isinstance(result, str) else result


class _Stopped(Exception):
    """Raised in the streaming callback once the consumer has left the loop."""


def _texts_or_list(task: str, inputs: Any) -> "tuple[List[Any], bool]":
    if isinstance(inputs, str):
        return [inputs], True
    if isinstance(inputs, (list, tuple)):
        items = list(inputs)
        for index, item in enumerate(items):
            if not isinstance(item, str) and not (task == "text-generation" and _is_chat(item)):
                raise TypeError(
                    f"{task} pipeline: input {index + 1} is a {type(item).__name__}, not a str"
                )
        return items, False
    raise TypeError(f"{task} pipeline: inputs must be a str or a list of str")


def _is_chat(value: Any) -> bool:
    """A chat: a non-empty list of messages (dicts with a role)."""
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(isinstance(message, Mapping) and "role" in message for message in value)
    )


def _similarity_inputs(inputs: Any) -> List[str]:
    if isinstance(inputs, Mapping):
        source = inputs.get("source_sentence")
        others = inputs.get("sentences")
        if not isinstance(source, str) or not isinstance(others, (list, tuple)):
            raise TypeError(
                'sentence-similarity pipeline: expected {"source_sentence": str, '
                '"sentences": [str, ...]}'
            )
        return [source, *others]
    items, _ = _texts_or_list("sentence-similarity", inputs)
    return items


def _question_context(inputs: Any, kwargs: Dict[str, Any]) -> "tuple[List[Dict[str, str]], bool]":
    question = kwargs.pop("question", None)
    context = kwargs.pop("context", None)
    if question is not None or context is not None:
        if inputs is not None:
            raise TypeError(
                "question-answering pipeline: give inputs or question=/context=, not both"
            )
        if isinstance(question, str) and isinstance(context, str):
            return [{"question": question, "context": context}], True
        if isinstance(question, (list, tuple)) and isinstance(context, (list, tuple)):
            if len(question) != len(context):
                raise ValueError("question-answering pipeline: as many questions as contexts")
            return [{"question": q, "context": c} for q, c in zip(question, context)], False
        raise TypeError(
            "question-answering pipeline: question= and context= are both str or both lists"
        )
    if isinstance(inputs, Mapping):
        return [dict(inputs)], True
    if isinstance(inputs, (list, tuple)) and all(isinstance(item, Mapping) for item in inputs):
        return [dict(item) for item in inputs], False
    raise TypeError(
        'question-answering pipeline: expected question= and context=, a {"question", '
        '"context"} dict, or a list of them'
    )
