#!/usr/bin/env python3
"""Drives `safeformers serve` with the official `openai` Python client.

Usage: openai_client_check.py BASE_URL EXPECTATIONS_JSON

BASE_URL is the server's root (`http://127.0.0.1:PORT`; `/v1` is added here). EXPECTATIONS_JSON
is a file written by crates/cli/tests/serve_openai.rs:

    {"models": {"tool": NAME, "chat": NAME, "embed": NAME},
     "embedding_inputs": [TEXT, ...],
     "embeddings": [[FLOAT, ...], ...]}   # what `safeformers run feature-extraction` printed

Runs every check, prints `ok: CHECK` or `FAIL: CHECK: WHY` for each, and exits 1 if any failed.
Needs only the standard library and `openai` (scripts/setup-hub-venv.sh installs it). Talks to
BASE_URL only: proxies from the environment are ignored, and nothing is retried.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import sys
import traceback
from typing import Any, Callable

import openai

# Same tolerance as the brief of the test: the server and `safeformers run` share one model, so
# the vectors should agree to float32 rounding of their JSON printing.
EMBEDDING_TOLERANCE = 1e-6

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


class CheckFailed(Exception):
    """A check's expectation did not hold."""


def expect(condition: bool, message: str) -> None:
    # Not `assert`: `python -O` would drop it.
    if not condition:
        raise CheckFailed(message)


def expect_equal(actual: Any, expected: Any, what: str) -> None:
    expect(actual == expected, f"{what}: got {actual!r}, expected {expected!r}")


class Checks:
    def __init__(self, client: openai.OpenAI, expectations: dict[str, Any]) -> None:
        self.client = client
        self.tool_model = expectations["models"]["tool"]
        self.chat_model = expectations["models"]["chat"]
        self.embed_model = expectations["models"]["embed"]
        self.embedding_inputs = expectations["embedding_inputs"]
        self.embeddings = expectations["embeddings"]

    # -- models --------------------------------------------------------------------------------

    def models_list(self) -> None:
        page = self.client.models.list()
        ids = sorted(model.id for model in page.data)
        expect_equal(ids, sorted([self.tool_model, self.chat_model, self.embed_model]), "model ids")
        one = self.client.models.retrieve(self.chat_model)
        expect_equal(one.id, self.chat_model, "models.retrieve id")

    # -- chat ----------------------------------------------------------------------------------

    def chat_stream_equals_non_stream(self) -> None:
        request: dict[str, Any] = {
            "model": self.chat_model,
            "messages": [{"role": "user", "content": "Hello, who are you?"}],
            "temperature": 0,
            "max_tokens": 12,
        }
        whole = self.client.chat.completions.create(**request)
        expect_equal(len(whole.choices), 1, "choices")
        choice = whole.choices[0]
        content = choice.message.content
        expect(isinstance(content, str) and content != "", f"empty content: {content!r}")
        expect(whole.usage is not None, "no usage in the non-streamed response")
        if choice.finish_reason == "length":
            expect_equal(whole.usage.completion_tokens, 12, "completion_tokens at max_tokens=12")
        else:
            expect_equal(choice.finish_reason, "stop", "finish_reason")
            expect(whole.usage.completion_tokens < 12, f"usage {whole.usage!r} with stop")

        stream = self.client.chat.completions.create(
            **request, stream=True, stream_options={"include_usage": True}
        )
        text, finish_reason, usage, chunks = "", None, None, 0
        for chunk in stream:
            chunks += 1
            expect(usage is None, "a chunk came after the usage chunk")
            expect_equal(chunk.object, "chat.completion.chunk", "chunk object")
            if chunks == 1:
                roles = [delta_choice.delta.role for delta_choice in chunk.choices]
                expect_equal(roles, ["assistant"], "the role in the first chunk")
            for delta_choice in chunk.choices:
                expect_equal(delta_choice.index, 0, "chunk choice index")
                text += delta_choice.delta.content or ""
                if delta_choice.finish_reason is not None:
                    finish_reason = delta_choice.finish_reason
            if chunk.usage is not None:
                # OpenAI: the usage chunk is the last one, with an empty `choices`.
                expect_equal(chunk.choices, [], "choices of the usage chunk")
                usage = chunk.usage
        expect(chunks > 1, f"the stream had {chunks} chunk(s)")
        expect_equal(text, content, "concatenated deltas vs the non-streamed content")
        expect_equal(finish_reason, choice.finish_reason, "streamed finish_reason")
        expect(usage is not None, "no usage chunk with stream_options.include_usage")
        expect_equal(usage.model_dump(), whole.usage.model_dump(), "streamed usage")

    # -- completions ---------------------------------------------------------------------------

    def _completions(self, prompt: Any, stream: bool) -> tuple[list[str], list[str | None], Any]:
        """Texts and finish reasons by choice index, and usage, streamed or not."""
        request: dict[str, Any] = {
            "model": self.chat_model,
            "prompt": prompt,
            "temperature": 0,
            "max_tokens": 8,
        }
        count = len(prompt) if isinstance(prompt, list) else 1
        if not stream:
            response = self.client.completions.create(**request)
            expect_equal(response.object, "text_completion", "object")
            expect_equal(
                sorted(choice.index for choice in response.choices),
                list(range(count)),
                "choice indexes",
            )
            by_index = sorted(response.choices, key=lambda choice: choice.index)
            return (
                [choice.text for choice in by_index],
                [choice.finish_reason for choice in by_index],
                response.usage,
            )
        texts, reasons, usage = [""] * count, [None] * count, None
        for chunk in self.client.completions.create(
            **request, stream=True, stream_options={"include_usage": True}
        ):
            expect(usage is None, "a chunk came after the usage chunk")
            for choice in chunk.choices:
                expect(0 <= choice.index < count, f"choice index {choice.index}")
                texts[choice.index] += choice.text
                if choice.finish_reason is not None:
                    reasons[choice.index] = choice.finish_reason
            if chunk.usage is not None:
                usage = chunk.usage
        return texts, reasons, usage

    def completions_one_prompt(self) -> None:
        texts, reasons, usage = self._completions("Once upon a time", stream=False)
        expect_equal(len(texts), 1, "choices")
        expect(texts[0] != "", "empty completion text")
        expect(usage is not None and usage.completion_tokens > 0, f"usage: {usage!r}")
        expect(usage.prompt_tokens > 0, f"usage: {usage!r}")
        streamed = self._completions("Once upon a time", stream=True)
        expect_equal(streamed[0], texts, "streamed text")
        expect_equal(streamed[1], reasons, "streamed finish_reason")
        expect(streamed[2] is not None, "no usage chunk with stream_options.include_usage")
        expect_equal(streamed[2].model_dump(), usage.model_dump(), "streamed usage")

    def completions_two_prompts(self) -> None:
        prompts = ["Once upon a time", "The quick brown fox"]
        texts, reasons, usage = self._completions(prompts, stream=False)
        expect_equal(len(texts), 2, "choices for two prompts")
        expect(all(text != "" for text in texts), f"an empty completion text: {texts!r}")
        expect(usage is not None and usage.completion_tokens > 0, f"usage: {usage!r}")
        streamed = self._completions(prompts, stream=True)
        expect_equal(streamed[0], texts, "streamed texts")
        expect_equal(streamed[1], reasons, "streamed finish_reasons")
        expect(streamed[2] is not None, "no usage chunk with stream_options.include_usage")
        expect_equal(streamed[2].model_dump(), usage.model_dump(), "streamed usage")

    # -- embeddings ----------------------------------------------------------------------------

    def _expect_embeddings(self, vectors: list[list[float]], how: str) -> None:
        expect_equal(len(vectors), len(self.embeddings), f"{how}: vectors")
        for i, (got, want) in enumerate(zip(vectors, self.embeddings)):
            expect_equal(len(got), len(want), f"{how}: dimension of vector {i}")
            worst = max(abs(a - b) for a, b in zip(got, want))
            expect(
                worst <= EMBEDDING_TOLERANCE,
                f"{how}: vector {i} differs from `safeformers run` by up to {worst:.3g}",
            )

    def _embeddings_response_shape(self, response: Any, how: str) -> None:
        expect_equal(
            [item.index for item in response.data], list(range(len(self.embedding_inputs))), how
        )
        expect(response.usage.prompt_tokens > 0, f"{how}: usage {response.usage!r}")

    def embeddings_float(self) -> None:
        response = self.client.embeddings.create(
            model=self.embed_model, input=self.embedding_inputs, encoding_format="float"
        )
        self._embeddings_response_shape(response, "float")
        for item in response.data:
            expect(isinstance(item.embedding, list), f"float: got {type(item.embedding)}")
        self._expect_embeddings([item.embedding for item in response.data], "float")

    def embeddings_client_default(self) -> None:
        # Without encoding_format the client asks for base64 and decodes it itself.
        raw = self.client.embeddings.with_raw_response.create(
            model=self.embed_model, input=self.embedding_inputs
        )
        sent = json.loads(raw.http_request.content)
        expect_equal(sent.get("encoding_format"), "base64", "what the client asked for")
        wire = json.loads(raw.http_response.content)
        expect(
            all(isinstance(item["embedding"], str) for item in wire["data"]),
            "the server did not answer base64 strings",
        )
        response = raw.parse()
        self._embeddings_response_shape(response, "client default")
        self._expect_embeddings([item.embedding for item in response.data], "client default")

    def embeddings_base64(self) -> None:
        response = self.client.embeddings.create(
            model=self.embed_model, input=self.embedding_inputs, encoding_format="base64"
        )
        self._embeddings_response_shape(response, "base64")
        vectors = []
        for item in response.data:
            expect(isinstance(item.embedding, str), f"base64: got {type(item.embedding)}")
            raw = base64.b64decode(item.embedding, validate=True)
            expect(len(raw) % 4 == 0, f"base64: {len(raw)} bytes is no float32 array")
            # OpenAI's base64 is little-endian float32.
            vectors.append(list(struct.unpack(f"<{len(raw) // 4}f", raw)))
        self._expect_embeddings(vectors, "base64")

    # -- tools ---------------------------------------------------------------------------------

    def _tool_request(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "model": self.tool_model,
            "messages": messages,
            "tools": [WEATHER_TOOL],
            "temperature": 0,
        }

    def _expect_weather_call(self, name: str, arguments: str, how: str) -> None:
        expect_equal(name, "get_weather", f"{how}: tool name")
        try:
            parsed = json.loads(arguments)
        except json.JSONDecodeError as error:
            raise CheckFailed(f"{how}: arguments {arguments!r} are not JSON: {error}") from None
        expect_equal(parsed, {"city": "Paris"}, f"{how}: arguments")

    def _tool_call(self, messages: list[dict[str, Any]], how: str) -> Any:
        response = self.client.chat.completions.create(**self._tool_request(messages))
        expect_equal(len(response.choices), 1, f"{how}: choices")
        choice = response.choices[0]
        expect_equal(choice.finish_reason, "tool_calls", f"{how}: finish_reason")
        calls = choice.message.tool_calls or []
        expect_equal(len(calls), 1, f"{how}: tool calls")
        call = calls[0]
        expect_equal(call.type, "function", f"{how}: call type")
        expect(bool(call.id), f"{how}: the call has no id")
        self._expect_weather_call(call.function.name, call.function.arguments, how)
        # The markup is parsed out, not left in the text.
        expect(
            "<tool_call>" not in (choice.message.content or ""),
            f"{how}: content {choice.message.content!r}",
        )
        return call

    def _streamed_tool_call(self, messages: list[dict[str, Any]], expected: Any, how: str) -> None:
        stream = self.client.chat.completions.create(
            **self._tool_request(messages), stream=True, stream_options={"include_usage": True}
        )
        calls: dict[int, dict[str, str]] = {}
        content, finish_reason = "", None
        for chunk in stream:
            for choice in chunk.choices:
                content += choice.delta.content or ""
                if choice.finish_reason is not None:
                    finish_reason = choice.finish_reason
                for delta in choice.delta.tool_calls or []:
                    index = getattr(delta, "index", None)
                    expect(isinstance(index, int), f"{how}: a tool call delta without index")
                    call = calls.setdefault(index, {"id": "", "type": "", "name": "", "args": ""})
                    if delta.id:
                        call["id"] = delta.id
                    if delta.type:
                        call["type"] = delta.type
                    if delta.function is not None:
                        call["name"] += delta.function.name or ""
                        call["args"] += delta.function.arguments or ""
        expect_equal(sorted(calls), [0], f"{how}: streamed tool call indexes")
        call = calls[0]
        expect(bool(call["id"]), f"{how}: no id in the streamed call")
        expect_equal(call["type"], "function", f"{how}: streamed call type")
        expect_equal(call["name"], expected.function.name, f"{how}: streamed name")
        expect_equal(call["args"], expected.function.arguments, f"{how}: streamed arguments")
        self._expect_weather_call(call["name"], call["args"], how)
        expect_equal(finish_reason, "tool_calls", f"{how}: streamed finish_reason")
        expect("<tool_call>" not in content, f"{how}: streamed content {content!r}")

    def tool_call_round_trip(self) -> None:
        question = [{"role": "user", "content": "What is the weather in Paris?"}]
        call = self._tool_call(question, "first turn")
        self._streamed_tool_call(question, call, "first turn")

        conversation = question + [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {
                            "name": call.function.name,
                            "arguments": call.function.arguments,
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": "18 C"},
        ]
        # The tiny fixture answers every chat with the same call: it calls the tool again.
        again = self._tool_call(conversation, "after the tool result")
        self._streamed_tool_call(conversation, again, "after the tool result")

    # -- errors --------------------------------------------------------------------------------

    def _expect_error(
        self,
        error_class: type[openai.APIStatusError],
        status: int,
        call: Callable[[], Any],
        names: str | None = None,
    ) -> None:
        try:
            result = call()
        except error_class as error:
            expect_equal(error.status_code, status, "status")
            expect(isinstance(error.body, dict), f"error body is not a JSON object: {error.body!r}")
            expect(
                isinstance(error.body.get("message"), str) and error.body["message"] != "",
                f"no error.message in {error.body!r}",
            )
            if names is not None:
                # `param` (OpenAI's field for the offending parameter) or the message, as a word.
                named = error.param == names or re.search(
                    rf"(?<!\w){re.escape(names)}(?!\w)", error.body["message"]
                )
                expect(bool(named), f"the error does not name {names}: {error.body!r}")
            return
        except openai.APIStatusError as error:
            raise CheckFailed(
                f"expected {error_class.__name__}, got {type(error).__name__} "
                f"{error.status_code}: {error.body!r}"
            ) from None
        raise CheckFailed(f"expected {error_class.__name__}, got a response: {result!r}")

    def _chat(self, **fields: Any) -> Callable[[], Any]:
        request: dict[str, Any] = {
            "model": self.chat_model,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 4,
        }
        request.update(fields)
        return lambda: self.client.chat.completions.create(**request)

    def error_unknown_model(self) -> None:
        self._expect_error(openai.NotFoundError, 404, self._chat(model="no-such-model"))
        self._expect_error(
            openai.NotFoundError,
            404,
            lambda: self.client.embeddings.create(model="no-such-model", input="x"),
        )

    def error_top_p(self) -> None:
        self._expect_error(openai.BadRequestError, 400, self._chat(top_p=1.5), names="top_p")

    def error_n_zero(self) -> None:
        self._expect_error(openai.BadRequestError, 400, self._chat(n=0), names="n")

    def error_max_tokens_above_ceiling(self) -> None:
        self._expect_error(
            openai.BadRequestError, 400, self._chat(max_tokens=100000), names="max_tokens"
        )

    def error_tool_parameters_string(self) -> None:
        tool = {"type": "function", "function": {"name": "get_weather", "parameters": "city"}}
        self._expect_error(
            openai.BadRequestError,
            400,
            self._chat(model=self.tool_model, tools=[tool]),
            names="parameters",
        )

    def error_chat_on_embedding_model(self) -> None:
        self._expect_error(openai.BadRequestError, 400, self._chat(model=self.embed_model))


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    base_url, expectations_path = sys.argv[1], sys.argv[2]
    with open(expectations_path, encoding="utf-8") as file:
        expectations = json.load(file)
    client = openai.OpenAI(
        base_url=base_url.rstrip("/") + "/v1",
        api_key="unused",
        max_retries=0,
        timeout=120.0,
        # Loopback only: never route through a proxy from the environment.
        http_client=openai.DefaultHttpxClient(trust_env=False, timeout=120.0),
    )
    checks = Checks(client, expectations)
    names = [
        "models_list",
        "chat_stream_equals_non_stream",
        "completions_one_prompt",
        "completions_two_prompts",
        "embeddings_float",
        "embeddings_client_default",
        "embeddings_base64",
        "tool_call_round_trip",
        "error_unknown_model",
        "error_top_p",
        "error_n_zero",
        "error_max_tokens_above_ceiling",
        "error_tool_parameters_string",
        "error_chat_on_embedding_model",
    ]
    print(f"openai {openai.__version__}")
    failed = []
    for name in names:
        try:
            getattr(checks, name)()
        except CheckFailed as failure:
            failed.append(name)
            print(f"FAIL: {name}: {failure}")
        except Exception:  # an unexpected exception is a failure of that check, not of the run
            failed.append(name)
            print(f"FAIL: {name}: unexpected exception\n{traceback.format_exc()}")
        else:
            print(f"ok: {name}")
    sys.stdout.flush()
    if failed:
        print(f"{len(failed)} of {len(names)} checks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"all {len(names)} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
