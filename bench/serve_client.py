#!/usr/bin/env python3
"""Load generator for any OpenAI-compatible server: the client side of bench/serve.sh.

    python3 bench/serve_client.py chat --url http://127.0.0.1:8080 --concurrency 4
    python3 bench/serve_client.py embeddings --url http://127.0.0.1:8080 --corpus FILE \
        --concurrency 16 --batch-size 8 --rounds 3

Standard library only (`http.client`, threads), so it runs with the system python3 against
llama.cpp's `llama-server` and `safeformers serve` alike. Prints one JSON line of results on
stdout; progress and problems go to stderr.

`chat`: C clients (threads) each send R requests one after the other, `POST
/v1/chat/completions` with `"stream": true`, `"stream_options": {"include_usage": true}`,
`"temperature": 0` (greedy), `"max_tokens": M` and `"ignore_eos": true` (llama-server's field,
which makes it generate exactly M tokens; it ignores `min_tokens`). Every request has its own
prompt, a short chat message from a fixed list (`prompt(i)`), starting at `--prompt-offset`, so
a server's prompt cache cannot serve one request from another's identical prompt. Each request
is timed from opening its connection:
- time to first token (TTFT): until the first server-sent event whose `delta.content` is not
  empty (`reasoning_content` counts too);
- inter-token latency (ITL): the gaps between successive such events (llama-server sends one
  token per event; `tokens_per_chunk` in the results shows whether a server grouped some);
- completion tokens: `usage.completion_tokens` of the final event when the server sends it,
  else the number of content events.
The figures: generated tokens/s = all completion tokens / wall time from the first request's
start to the last one's end; TTFT p50/p99 over the requests; ITL p50/p99 over every gap of
every request (percentiles interpolated linearly between ranks, as numpy's default). A failed
request (refused connection, HTTP status other than 200, an error event, no `[DONE]`) counts in
`errors` and in no latency.

`embeddings`: C clients take batches of B consecutive corpus lines from a shared queue (the
whole corpus, `--rounds` times) and `POST /v1/embeddings` `{"model", "input": [...],
"encoding_format": "float"}`; every response must hold B vectors of one dimension. Figure:
sentences/s = sentences embedded / wall time. `--dump FILE` writes the first `--dump-count`
vectors of the corpus (from the warm-up request) as JSON, for a numerics check.

Both modes first send one warm-up request (not timed; `--warmup 0` skips it) and read the
model's name from `GET /v1/models` unless `--model` gives it.
"""

import argparse
import http.client
import json
import queue
import sys
import threading
import time
import urllib.parse

# Chat prompts: SUBJECTS x FORMS, all distinct. Short, so the prompt stays well under the
# per-slot context of the harness (bench/serve.py) whatever the chat template adds.
FORMS = [
    "Write a short story about {}.",
    "Explain to a child how {} works.",
    "List some facts about {}.",
    "Describe a day in the life of {}.",
]
SUBJECTS = [
    "a lighthouse keeper", "a river in spring", "an old steam engine", "a mountain village",
    "a busy market", "a quiet library", "a night train", "a small bakery", "a comet",
    "a beehive", "a chess tournament", "a school garden", "a fishing boat", "a city bridge",
    "a weather balloon", "a violin maker", "a desert oasis", "a forest fire lookout",
    "a postal worker", "a robot vacuum", "a museum guard", "a kite festival", "a glacier",
    "a coral reef", "a windmill", "a telescope", "a street musician", "a harbor crane",
    "a paper mill", "a rainy afternoon", "a snowplow driver", "a clock tower",
]
PROMPTS = [form.format(subject) for subject in SUBJECTS for form in FORMS]


def prompt(index: int) -> str:
    """The `index`-th chat message; distinct for the first len(PROMPTS) indices."""
    text = PROMPTS[index % len(PROMPTS)]
    cycle = index // len(PROMPTS)
    return text if cycle == 0 else f"{text} (Version {cycle + 1}.)"


def percentile(values: list, q: float):
    """The q-th percentile (0..100), interpolated linearly between closest ranks (numpy's
    default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class Target:
    """Where the server is: scheme, host, port and path prefix of `--url`."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SystemExit(f"serve_client: --url {url!r} is not an http(s) URL")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout

    def connection(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return kind(self.host, self.port, timeout=self.timeout)

    def get_json(self, path: str):
        connection = self.connection()
        try:
            connection.request("GET", self.prefix + path)
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"GET {path}: HTTP {response.status}: {body[:200]!r}")
            return json.loads(body)
        finally:
            connection.close()

    def post(self, path: str, body: dict):
        """Sends a JSON POST on a new connection; returns (connection, response)."""
        connection = self.connection()
        data = json.dumps(body).encode("utf-8")
        connection.request("POST", self.prefix + path, body=data,
                           headers={"Content-Type": "application/json",
                                    "Accept": "text/event-stream, application/json"})
        return connection, connection.getresponse()


def served_model(target: Target) -> str:
    """The first model `GET /v1/models` lists (OpenAI's `data[0].id`)."""
    listing = target.get_json("/v1/models")
    models = listing.get("data") or []
    if not models or not models[0].get("id"):
        raise RuntimeError(f"GET /v1/models listed no model: {str(listing)[:200]}")
    return models[0]["id"]


def sse_events(response):
    """Yields (arrival time, data) for each server-sent event of a response: the `data:` lines
    of one event joined by newlines, timed when its last `data:` line was read."""
    lines, arrived = [], None
    while True:
        raw = response.readline()
        if not raw:
            break
        line = raw.decode("utf-8").rstrip("\r\n")
        if line == "":
            if lines:
                yield arrived, "\n".join(lines)
            lines = []
            continue
        if line.startswith("data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(" ") else value)
            arrived = time.perf_counter()
        elif line.startswith("error:"):
            raise RuntimeError(f"error event: {line[:300]}")
        # Other fields (event:, id:, retry:) and comments (":...") carry nothing we time.
    if lines:
        yield arrived, "\n".join(lines)


# ---------------------------------------------------------------- chat


def chat_request(target: Target, model: str, text: str, max_tokens: int) -> dict:
    """One streamed chat completion; returns its timings and counts (or its error)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    record = {"ok": False, "error": None, "start": time.perf_counter(), "end": None,
              "content_times": [], "usage": None, "finish_reason": None}
    connection = None
    try:
        connection, response = target.post("/v1/chat/completions", body)
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {response.read()[:300]!r}")
        done = False
        for arrived, data in sse_events(response):
            if data.strip() == "[DONE]":
                done = True
                break
            event = json.loads(data)
            if "error" in event:
                raise RuntimeError(f"error event: {json.dumps(event['error'])[:300]}")
            if event.get("usage"):
                record["usage"] = event["usage"]
            for choice in event.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("content") or delta.get("reasoning_content"):
                    record["content_times"].append(arrived)
                if choice.get("finish_reason"):
                    record["finish_reason"] = choice["finish_reason"]
        if not done:
            raise RuntimeError("the stream ended without `data: [DONE]`")
        if not record["content_times"]:
            raise RuntimeError("no content in the stream")
        record["ok"] = True
    except (OSError, http.client.HTTPException, RuntimeError, ValueError) as error:
        record["error"] = f"{type(error).__name__}: {error}"
    finally:
        record["end"] = time.perf_counter()
        if connection is not None:
            connection.close()
    return record


def completion_tokens(record: dict) -> int:
    usage = record["usage"] or {}
    tokens = usage.get("completion_tokens")
    return tokens if isinstance(tokens, int) else len(record["content_times"])


def run_chat(args, target: Target, model: str) -> dict:
    if args.warmup:
        warm = chat_request(target, model, "Say hello.", min(args.max_tokens, 8))
        if not warm["ok"]:
            print(f"serve_client: warm-up request failed: {warm['error']}", file=sys.stderr)
    records = [[None] * args.requests for _ in range(args.concurrency)]
    barrier = threading.Barrier(args.concurrency)

    def client(number: int) -> None:
        barrier.wait()
        for r in range(args.requests):
            index = args.prompt_offset + number * args.requests + r
            records[number][r] = chat_request(target, model, prompt(index), args.max_tokens)

    cpu_start = time.process_time()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(args.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client_cpu = time.process_time() - cpu_start

    flat = [record for row in records for record in row]
    ok = [record for record in flat if record["ok"]]
    wall = max(r["end"] for r in flat) - min(r["start"] for r in flat)
    ttft = [r["content_times"][0] - r["start"] for r in ok]
    gaps = [later - earlier for r in ok
            for earlier, later in zip(r["content_times"], r["content_times"][1:])]
    # Time per output token of each request: its decoding time over its further tokens.
    tpot = [(r["content_times"][-1] - r["content_times"][0]) / (completion_tokens(r) - 1)
            for r in ok if completion_tokens(r) > 1]
    tokens = [completion_tokens(r) for r in ok]
    chunks = sum(len(r["content_times"]) for r in ok)
    with_usage = sum(1 for r in ok if (r["usage"] or {}).get("completion_tokens") is not None)
    prompt_tokens = [(r["usage"] or {}).get("prompt_tokens") for r in ok]
    cached = [((r["usage"] or {}).get("prompt_tokens_details") or {}).get("cached_tokens")
              for r in ok]
    errors = [r["error"] for r in flat if not r["ok"]]
    return {
        "mode": "chat", "url": args.url, "model": model, "concurrency": args.concurrency,
        "requests_per_client": args.requests, "max_tokens": args.max_tokens,
        "requests": len(flat), "ok": len(ok), "errors": len(errors),
        "error_examples": sorted(set(errors))[:3],
        "wall_s": round(wall, 4),
        "completion_tokens": sum(tokens),
        "tokens_from_usage": with_usage,
        "content_chunks": chunks,
        "tokens_per_chunk": round(sum(tokens) / chunks, 3) if chunks else None,
        "tokens_min": min(tokens) if tokens else None,
        "tokens_max": max(tokens) if tokens else None,
        "requests_not_max_tokens": sum(1 for t in tokens if t != args.max_tokens),
        "finish_reasons": sorted({str(r["finish_reason"]) for r in ok}),
        "tokens_per_second": round(sum(tokens) / wall, 2) if wall > 0 else None,
        "ttft_p50_s": rounded(percentile(ttft, 50)),
        "ttft_p99_s": rounded(percentile(ttft, 99)),
        "itl_p50_s": rounded(percentile(gaps, 50)),
        "itl_p99_s": rounded(percentile(gaps, 99)),
        "itl_gaps": len(gaps),
        "tpot_p50_s": rounded(percentile(tpot, 50)),
        "prompt_tokens_max": max((p for p in prompt_tokens if isinstance(p, int)), default=None),
        "cached_prompt_tokens": sum(c for c in cached if isinstance(c, int)),
        "client_cpu_s": round(client_cpu, 3),
    }


def rounded(value, digits: int = 6):
    return None if value is None else round(value, digits)


# ---------------------------------------------------------------- embeddings


def embeddings_request(target: Target, model: str, sentences: list) -> dict:
    """One embeddings request; returns its timing, the vectors' dimension (or its error)."""
    body = {"model": model, "input": sentences, "encoding_format": "float"}
    record = {"ok": False, "error": None, "start": time.perf_counter(), "end": None,
              "dimension": None, "vectors": None}
    connection = None
    try:
        connection, response = target.post("/v1/embeddings", body)
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {payload[:300]!r}")
        data = json.loads(payload).get("data") or []
        if len(data) != len(sentences):
            raise RuntimeError(f"{len(data)} vectors for {len(sentences)} inputs")
        vectors = [None] * len(sentences)
        for position, item in enumerate(data):
            index = item.get("index", position)
            vector = item.get("embedding")
            if not isinstance(vector, list) or not vector or not 0 <= index < len(vectors):
                raise RuntimeError(f"data[{position}] holds no float vector")
            vectors[index] = vector
        if any(v is None for v in vectors) or len({len(v) for v in vectors}) != 1:
            raise RuntimeError("the vectors do not cover the inputs with one dimension")
        record["dimension"] = len(vectors[0])
        record["vectors"] = vectors
        record["ok"] = True
    except (OSError, http.client.HTTPException, RuntimeError, ValueError,
            AttributeError) as error:
        record["error"] = f"{type(error).__name__}: {error}"
    finally:
        record["end"] = time.perf_counter()
        if connection is not None:
            connection.close()
    return record


def run_embeddings(args, target: Target, model: str) -> dict:
    with open(args.corpus, encoding="utf-8") as corpus:
        sentences = [line.rstrip("\n") for line in corpus if line.strip()]
    if not sentences:
        raise SystemExit(f"serve_client: {args.corpus} holds no sentence")
    if args.warmup or args.dump:
        warm = embeddings_request(target, model, sentences[: max(args.batch_size,
                                                                  args.dump_count)])
        if not warm["ok"]:
            print(f"serve_client: warm-up request failed: {warm['error']}", file=sys.stderr)
        elif args.dump:
            with open(args.dump, "w") as out:
                json.dump(warm["vectors"][: args.dump_count], out)
    batches = queue.Queue()
    for _ in range(args.rounds):
        for start in range(0, len(sentences), args.batch_size):
            batches.put(sentences[start:start + args.batch_size])
    records = []
    lock = threading.Lock()
    barrier = threading.Barrier(args.concurrency)

    def client() -> None:
        barrier.wait()
        while True:
            try:
                batch = batches.get_nowait()
            except queue.Empty:
                return
            record = embeddings_request(target, model, batch)
            record["sentences"] = len(batch)
            record["vectors"] = None  # not kept: memory
            with lock:
                records.append(record)

    cpu_start = time.process_time()
    threads = [threading.Thread(target=client) for _ in range(args.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client_cpu = time.process_time() - cpu_start

    ok = [r for r in records if r["ok"]]
    wall = max(r["end"] for r in records) - min(r["start"] for r in records)
    embedded = sum(r["sentences"] for r in ok)
    latencies = [r["end"] - r["start"] for r in ok]
    errors = [r["error"] for r in records if not r["ok"]]
    return {
        "mode": "embeddings", "url": args.url, "model": model,
        "concurrency": args.concurrency, "batch_size": args.batch_size, "rounds": args.rounds,
        "corpus_sentences": len(sentences), "requests": len(records), "ok": len(ok),
        "errors": len(errors), "error_examples": sorted(set(errors))[:3],
        "sentences": embedded, "wall_s": round(wall, 4),
        "sentences_per_second": round(embedded / wall, 2) if wall > 0 else None,
        "latency_p50_s": rounded(percentile(latencies, 50)),
        "latency_p99_s": rounded(percentile(latencies, 99)),
        "dimensions": sorted({r["dimension"] for r in ok}),
        "client_cpu_s": round(client_cpu, 3),
    }


# ---------------------------------------------------------------- main


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    for name in ["chat", "embeddings"]:
        mode = modes.add_parser(name)
        mode.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8080")
        mode.add_argument("--model", help="model name to send (default: GET /v1/models' first)")
        mode.add_argument("--concurrency", type=positive, default=1 if name == "chat" else 16)
        mode.add_argument("--warmup", type=int, default=1, help="1: one untimed request first")
        mode.add_argument("--timeout", type=float, default=600.0,
                          help="seconds without progress before a request fails")
    chat = modes.choices["chat"]
    chat.add_argument("--requests", type=positive, default=2, help="requests per client")
    chat.add_argument("--max-tokens", type=positive, default=128)
    chat.add_argument("--prompt-offset", type=int, default=0,
                      help="index of the first prompt (distinct runs: distinct prompts)")
    embeddings = modes.choices["embeddings"]
    embeddings.add_argument("--corpus", required=True, help="one sentence per line")
    embeddings.add_argument("--batch-size", type=positive, default=8)
    embeddings.add_argument("--rounds", type=positive, default=3,
                            help="times the whole corpus is embedded")
    embeddings.add_argument("--dump", help="write the corpus' first vectors here (JSON)")
    embeddings.add_argument("--dump-count", type=positive, default=4)
    args = parser.parse_args()

    target = Target(args.url, args.timeout)
    try:
        model = args.model or served_model(target)
    except (OSError, http.client.HTTPException, RuntimeError, ValueError) as error:
        print(f"serve_client: cannot read the model's name from {args.url}/v1/models: {error}",
              file=sys.stderr)
        return 1
    result = run_chat(args, target, model) if args.mode == "chat" else run_embeddings(
        args, target, model)
    print(json.dumps(result), flush=True)
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
