#!/usr/bin/env python3
"""Driver of bench/serve.sh: `safeformers serve` against its references, over HTTP.

    python3 bench/serve.py [serve-chat] [serve-embeddings]     # default: both

Standard library only, like bench/run.py (whose setup and report helpers it reuses). Two
workloads:

- `serve-chat`: llama.cpp's `llama-server` and `safeformers serve` on the same GGUF file
  (SmolLM2-135M-Instruct Q4_1, scripts/fetch-smollm2.sh), the same thread count; for each, the
  server is started, `/health` awaited, bench/serve_client.py run at each concurrency (streamed
  chat completions of exactly MAX_TOKENS tokens), the server stopped.
- `serve-embeddings`: `safeformers serve` on MiniLM-L6 driven by bench/serve_client.py
  (EMBED_CONCURRENCY clients, batches of EMBED_BATCH sentences, the corpus EMBED_ROUNDS times)
  against sentence-transformers in-process (bench/minilm_embed.py, batch ANCHOR_BATCH) on the
  same corpus, same threads.

ROUNDS rounds, each starting every server afresh, reference side first (A B A B ...); figures
are medians of the rounds. A safeformers side that does not exist yet or does not start (no
binary, `serve` refused, no answer on /health) is `not available` and the run goes on. Writes
bench/results/<date>-serve.md (or $BENCH_RESULTS). See bench/README.md.

Environment: ROUNDS (3), THREADS (2), CONCURRENCY (1,4,16), REQUESTS (2 per client), MAX_TOKENS
(128), SLOTS (llama-server `-np`; default the highest concurrency), EMBED_CONCURRENCY (16),
EMBED_BATCH (8), EMBED_ROUNDS (3), ANCHOR_BATCH (32), SAFEFORMERS_BIN (default
$CARGO_TARGET_DIR/release/safeformers, else target/release/safeformers; never built here),
SERVER_START_TIMEOUT (120 s), MINILM_DIR, SAFEFORMERS_BENCH_VENV, SAFEFORMERS_BENCH_WORK,
SAFEFORMERS_LLAMA_CPP, BENCH_RESULTS.
"""

import datetime
import hashlib
import json
import os
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import run as bench  # bench/run.py: setup, machine line, numerics check

REPO = bench.REPO
HOME = bench.HOME
log = bench.log
BenchError = bench.BenchError

WORKLOADS = {
    "serve-chat": "SmolLM2-135M-Instruct Q4_1 GGUF, streamed chat completions of exactly "
                  "MAX_TOKENS greedy tokens, C concurrent clients: llama-server vs "
                  "safeformers serve",
    "serve-embeddings": "MiniLM-L6 embeddings of the 512-sentence corpus: safeformers serve "
                        "over HTTP vs sentence-transformers in-process",
}
# llama-server's per-slot context: room for the chat template and a short message (our prompts
# are about 40 tokens with SmolLM2's template) and the generated tokens, at least 512.
PROMPT_BUDGET = 128
# Run with the repository as working directory, as every command here.
CLIENT = "bench/serve_client.py"


# ---------------------------------------------------------------- processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, ValueError):
        return 0


class Server:
    """A server process we started: its command, log file, readiness, CPU time, peak RSS."""

    def __init__(self, name: str, command: list, env: dict, port: int, log_path: Path) -> None:
        self.name = name
        self.command = [str(c) for c in command]
        self.env = env
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.exit_code = None
        self.max_rss_mb = None
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as out:
            self.process = subprocess.Popen(self.command, cwd=REPO, env={**os.environ, **env},
                                            stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT)

    def exited(self) -> bool:
        """Reaps the process if it ended (os.wait4, not Popen.poll: we want its rusage)."""
        if self.exit_code is not None:
            return True
        pid, status, usage = os.wait4(self.process.pid, os.WNOHANG)
        if pid == 0:
            return False
        self.exit_code = os.waitstatus_to_exitcode(status)
        self.process.returncode = self.exit_code
        self.max_rss_mb = usage.ru_maxrss * 1024 / 1e6  # Linux: KiB
        return True

    def wait_ready(self, timeout: float) -> str:
        """None once `GET /health` (or, for a server without it, `GET /v1/models`) answers 200;
        else why not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exited():
                return f"exited with code {self.exit_code} before answering: {self.log_tail()}"
            health = http_status(self.url + "/health")
            if health == 200 or (health == 404 and http_status(self.url + "/v1/models") == 200):
                return None
            time.sleep(0.25)
        return f"no 200 from {self.url}/health within {timeout:.0f} s: {self.log_tail()}"

    def cpu_seconds(self) -> float:
        """User + system time of all its threads so far (/proc/PID/stat)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        # After the ")": state is field 3 of proc(5), so utime (14) and stime (15) are 11, 12.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if not self.exited():
            self.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 15
            while not self.exited() and time.monotonic() < deadline:
                time.sleep(0.1)
            if not self.exited():
                self.process.kill()
                _, status, usage = os.wait4(self.process.pid, 0)
                self.exit_code = os.waitstatus_to_exitcode(status)
                self.process.returncode = self.exit_code
                self.max_rss_mb = usage.ru_maxrss * 1024 / 1e6

    def log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:])[-500:] or "(empty log)"


def system_cpu() -> tuple:
    """(busy, steal) CPU seconds of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def children_cpu() -> float:
    """User + system seconds of this process' reaped children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def busiest_processes(seconds: float = 1.0, count: int = 3) -> str:
    """The processes (other than this one) that used the most CPU over `seconds`."""
    tick = os.sysconf("SC_CLK_TCK")

    def sample() -> dict:
        usage = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            name = text[text.find("(") + 1:text.rfind(")")]
            fields = text.rsplit(")", 1)[1].split()
            usage[entry.name] = (name, int(fields[11]) + int(fields[12]))
        return usage

    before = sample()
    time.sleep(seconds)
    after = sample()
    deltas = sorted(((cpu - before[pid][1], name, pid) for pid, (name, cpu) in after.items()
                     if pid in before), reverse=True)
    shown = [f"{name} (pid {pid}) {delta / tick / seconds:.2f} cores"
             for delta, name, pid in deltas[:count] if delta > 0]
    return ", ".join(shown) or "none measurable"


class ClientRun:
    """One bench/serve_client.py process: its JSON line, CPU time and the CPU other processes
    used meanwhile (machine busy time - the server's - the client's)."""

    def __init__(self, command: list, server: Server) -> None:
        self.command = [str(c) for c in command]
        busy0, steal0 = system_cpu()
        server0 = server.cpu_seconds()
        children0 = children_cpu()
        start = time.perf_counter()
        process = subprocess.Popen(self.command, cwd=REPO, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        self.stdout, self.stderr = process.communicate()
        self.wall_s = time.perf_counter() - start
        self.returncode = process.returncode
        busy1, steal1 = system_cpu()
        self.server_cpu_s = server.cpu_seconds() - server0
        # The client is the only child reaped meanwhile (servers are reaped when stopped).
        self.client_cpu_s = children_cpu() - children0
        self.result = None
        for line in reversed(self.stdout.splitlines()):
            if line.startswith("{"):
                try:
                    self.result = json.loads(line)
                    break
                except json.JSONDecodeError:
                    pass
        self.other_cores = max(0.0, (busy1 - busy0) - self.server_cpu_s
                               - self.client_cpu_s) / max(self.wall_s, 1e-9)
        self.steal_cores = (steal1 - steal0) / max(self.wall_s, 1e-9)

    def failure(self) -> str:
        if self.result is None:
            tail = (self.stderr.strip().splitlines() or ["(no output)"])[-1]
            return f"the client printed no result (exit {self.returncode}): {tail[:300]}"
        return None


# ---------------------------------------------------------------- sides


def safeformers_binary() -> Path:
    if os.environ.get("SAFEFORMERS_BIN"):
        return Path(os.environ["SAFEFORMERS_BIN"]).expanduser()
    target = os.environ.get("CARGO_TARGET_DIR")
    return (Path(target) if target else REPO / "target") / "release" / "safeformers"


def start(name: str, command: list, env: dict, port: int, logs: Path, label: str,
          timeout: float):
    """Starts a server and waits for it; returns (server, None) or (None, why not)."""
    server = Server(name, command, env, port, logs / f"{label}.log")
    try:
        problem = server.wait_ready(timeout)
    except BaseException:
        server.stop()
        raise
    if problem:
        server.stop()
        return None, problem
    return server, None


def median(values: list):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ms(value) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def pair_ms(p50, p99) -> str:
    return "-" if p50 is None else f"{ms(p50)} / {ms(p99)} ms"


# ---------------------------------------------------------------- workloads


class Side:
    """One side of a workload: its runs (per concurrency level), why it is not available or
    failed, and its commands."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.runs = {}  # key (concurrency or "embed") -> [(round, figures dict, ClientRun)]
        self.unavailable = None
        self.failure = None
        self.server_rss = []  # (round, MB)
        self.commands = []

    def figures(self, key, field: str) -> list:
        return [figures.get(field) for _, figures, _ in self.runs.get(key, [])]

    def add_command(self, text: str) -> None:
        if text not in self.commands:
            self.commands.append(text)


def chat_workload(setup: dict, rounds: int, threads: int, publish) -> dict:
    """Runs serve-chat; `publish(result, status)` is called after every round with the result
    so far (the same dict, filled in as rounds go)."""
    levels, requests, max_tokens = setup["levels"], setup["requests"], setup["max_tokens"]
    slots = setup["slots"]
    per_slot = max(512, 1 << (PROMPT_BUDGET + max_tokens - 1).bit_length())
    sides = {"llama-server": Side("llama-server"), "safeformers": Side("safeformers")}
    binary = safeformers_binary()
    if not binary.is_file():
        sides["safeformers"].unavailable = (
            f"no safeformers binary at {binary} (build it with `cargo build --release --bin "
            "safeformers`, or set SAFEFORMERS_BIN)")
    # Each level gets its own prompts, so no request finds its prompt in a server's cache.
    offsets, next_offset = {}, 0
    for level in levels:
        offsets[level] = next_offset
        next_offset += level * requests

    result = {"sides": sides, "levels": levels, "requests": requests, "max_tokens": max_tokens,
              "slots": slots, "per_slot": per_slot, "offsets": offsets, "client_commands": []}

    def command(side: str, port) -> tuple:
        if side == "llama-server":
            return ([setup["llama_bin"] / "llama-server", "-m", setup["gguf"], "--host",
                     "127.0.0.1", "--port", port, "-np", slots, "-c", slots * per_slot, "-t",
                     threads, "--no-webui"], {})
        return ([binary, "serve", "--model", setup["gguf"], "--addr", f"127.0.0.1:{port}",
                 "--threads", threads], {"RAYON_NUM_THREADS": str(threads)})

    for round_ in range(1, rounds + 1):
        for name, side in sides.items():
            if side.unavailable or side.failure:
                continue
            port = free_port()
            cmd, env = command(name, port)
            side.add_command(bench.command_text(*command(name, "PORT")))
            server, problem = start(name, cmd, env, port, setup["logs"],
                                    f"chat-{name}-round{round_}", setup["start_timeout"])
            if problem:
                if name == "safeformers":
                    side.unavailable = f"`safeformers serve` did not start: {problem}"
                    log(f"serve-chat: safeformers not available: {side.unavailable}")
                else:
                    side.failure = f"llama-server did not start: {problem}"
                    log(f"serve-chat: FAILED: {side.failure}")
                continue
            try:
                for level in levels:
                    def client(url: str) -> list:
                        return [sys.executable, CLIENT, "chat", "--url", url, "--concurrency",
                                level, "--requests", requests, "--max-tokens", max_tokens,
                                "--prompt-offset", offsets[level]]
                    shown = shlex.join(map(str, client("http://127.0.0.1:PORT")))
                    if shown not in result["client_commands"]:
                        result["client_commands"].append(shown)
                    run = ClientRun(client(server.url), server)
                    problem = run.failure()
                    if server.exited():
                        problem = (f"the server exited (code {server.exit_code}) during the "
                                   f"run: {server.log_tail()}")
                    if problem:
                        side.failure = f"concurrency {level}: {problem}"
                        log(f"serve-chat {name} C={level}: FAILED: {problem}")
                        break
                    figures = run.result
                    side.runs.setdefault(level, []).append((round_, figures, run))
                    log(f"serve-chat round {round_}/{rounds} {name} C={level}: "
                        f"{figures['tokens_per_second']} tok/s, TTFT "
                        f"{pair_ms(figures['ttft_p50_s'], figures['ttft_p99_s'])}, ITL "
                        f"{pair_ms(figures['itl_p50_s'], figures['itl_p99_s'])}, "
                        f"{figures['errors']} errors, other processes "
                        f"{run.other_cores:.2f} cores")
            finally:
                server.stop()
            side.server_rss.append((round_, server.max_rss_mb))
        publish(result, f"Partial: serve-chat round {round_} of {rounds} done.")
    return result


def embeddings_workload(setup: dict, rounds: int, threads: int, publish) -> dict:
    """Runs serve-embeddings; `publish(result, status)` after every round, as chat_workload."""
    concurrency, batch = setup["embed_concurrency"], setup["embed_batch"]
    passes, anchor_batch = setup["embed_rounds"], setup["anchor_batch"]
    anchor, ours = Side("sentence-transformers"), Side("safeformers")
    binary = safeformers_binary()
    if not binary.is_file():
        ours.unavailable = (f"no safeformers binary at {binary} (build it with `cargo build "
                            "--release --bin safeformers`, or set SAFEFORMERS_BIN)")
    dumps = setup["work"] / "numerics"
    dumps.mkdir(parents=True, exist_ok=True)
    t = str(threads)
    py_env = {"OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t, "RAYON_RS_NUM_CPUS": t,
              "TOKENIZERS_PARALLELISM": "true"}
    anchor_cmd = [setup["python"], "bench/minilm_embed.py", setup["minilm"], setup["corpus"],
                  "--batch-size", anchor_batch, "--threads", threads, "--dump",
                  dumps / "serve-python.json"]
    anchor.add_command(bench.command_text(anchor_cmd, py_env))
    bench.warm(setup["minilm"], setup["corpus"])
    result = {"sides": {"sentence-transformers": anchor, "safeformers": ours},
              "concurrency": concurrency, "batch": batch, "passes": passes,
              "anchor_batch": anchor_batch, "numerics": None}

    def command(port) -> list:
        return [binary, "serve", "--model", setup["minilm"], "--addr", f"127.0.0.1:{port}",
                "--threads", threads]

    def client(url: str) -> list:
        return [sys.executable, CLIENT, "embeddings", "--url", url, "--corpus",
                setup["corpus"], "--concurrency", concurrency, "--batch-size", batch,
                "--rounds", passes, "--dump", dumps / "serve-safeformers.json"]

    for round_ in range(1, rounds + 1):
        if not anchor.failure:
            busy0, children0 = system_cpu()[0], children_cpu()
            run = bench.Run(anchor_cmd, py_env)
            # What other processes used meanwhile: the machine's busy time minus the run's.
            run.other_cores = max(0.0, (system_cpu()[0] - busy0) - (children_cpu() - children0)
                                  ) / max(run.wall_seconds, 1e-9)
            if not run.ok():
                anchor.failure = f"sentence-transformers run failed, {run.failure()}"
                log(f"serve-embeddings: FAILED: {anchor.failure}")
            else:
                figures = run.last_json()
                anchor.runs.setdefault("embed", []).append((round_, figures, run))
                log(f"serve-embeddings round {round_}/{rounds} sentence-transformers: "
                    f"{figures['sentences_per_second']} sentences/s, other processes "
                    f"{run.other_cores:.2f} cores")
        if not ours.unavailable and not ours.failure:
            port = free_port()
            env = {"RAYON_NUM_THREADS": t}
            ours.add_command(bench.command_text(command("PORT"), env))
            server, problem = start("safeformers", command(port), env, port, setup["logs"],
                                    f"embeddings-safeformers-round{round_}",
                                    setup["start_timeout"])
            if problem:
                ours.unavailable = f"`safeformers serve` did not start: {problem}"
                log(f"serve-embeddings: safeformers not available: {ours.unavailable}")
            else:
                try:
                    ours.add_command(shlex.join(map(str, client("http://127.0.0.1:PORT"))))
                    run = ClientRun(client(server.url), server)
                    problem = run.failure()
                    if server.exited():
                        problem = (f"the server exited (code {server.exit_code}) during the "
                                   f"run: {server.log_tail()}")
                    if problem:
                        ours.failure = problem
                        log(f"serve-embeddings safeformers: FAILED: {problem}")
                    else:
                        ours.runs.setdefault("embed", []).append((round_, run.result, run))
                        log(f"serve-embeddings round {round_}/{rounds} safeformers: "
                            f"{run.result['sentences_per_second']} sentences/s, "
                            f"{run.result['errors']} errors, other processes "
                            f"{run.other_cores:.2f} cores")
                finally:
                    server.stop()
                ours.server_rss.append((round_, server.max_rss_mb))
        if round_ == 1 and anchor.runs and ours.runs:
            try:
                result["numerics"] = bench.embedding_check(
                    "serve-embeddings: first vectors, sentence-transformers vs safeformers serve",
                    json.loads((dumps / "serve-python.json").read_text()),
                    json.loads((dumps / "serve-safeformers.json").read_text()))
            except (OSError, json.JSONDecodeError) as error:
                result["numerics"] = (f"serve-embeddings: could not compare the vectors "
                                      f"({error})", False)
        publish(result, f"Partial: serve-embeddings round {round_} of {rounds} done.")
    return result


# ---------------------------------------------------------------- report


def chat_checks(chat: dict) -> list:
    """(line, ok): exact token counts, one token per chunk, no failed request, per side."""
    checks = []
    for name, side in chat["sides"].items():
        runs = [(level, figures) for level in chat["levels"]
                for _, figures, _ in side.runs.get(level, [])]
        if not runs:
            continue
        errors = sum(f["errors"] for _, f in runs)
        short = sum(f["requests_not_max_tokens"] for _, f in runs)
        usage = all(f["tokens_from_usage"] == f["ok"] for _, f in runs)
        per_chunk = sorted({f["tokens_per_chunk"] for _, f in runs})
        requests = sum(f["requests"] for _, f in runs)
        checks.append((
            f"serve-chat {name}: {requests} requests, {errors} failed; "
            f"{requests - errors - short} generated exactly {chat['max_tokens']} tokens "
            f"({'usage.completion_tokens' if usage else 'counted content chunks: no usage'}); "
            f"tokens per streamed chunk {', '.join(f'{v:.2f}' for v in per_chunk)}",
            errors == 0 and short == 0))
    return checks


def error_lines(rows: list) -> list:
    """A line per client run that had failed requests, with the client's examples."""
    lines = [f"- round {round_} {' '.join(filter(None, [name, where]))}: {f['errors']} failed "
             "request(s): "
             + "; ".join(f"`{example}`" for example in f.get("error_examples", []))
             for round_, name, where, f in rows if f.get("errors")]
    return lines + [""] if lines else []


def write_report(path: Path, head: dict, chat, embeddings, status: str = "") -> str:
    lines = [
        f"# safeformers serve vs llama-server and sentence-transformers ({head['started']})",
        "",
        *([f"**{status}**", ""] if status else []),
        f"Machine: {head['machine']}.",
        "",
        f"Load: {head['load']}",
        "",
        f"Each workload runs ROUNDS={head['rounds']} rounds, the reference first, each server "
        f"started afresh per round and stopped after it; {head['threads']} threads on both "
        "sides; figures are medians of the rounds. Ratio: how many times better safeformers "
        "is (throughput: safeformers / reference). Clients are bench/serve_client.py (standard "
        "library, one thread per client, one connection per request) on the same machine.",
        "",
    ]
    if chat:
        sides = chat["sides"]
        llama, ours = sides["llama-server"], sides["safeformers"]
        lines += [
            "## serve-chat",
            "",
            f"SmolLM2-135M-Instruct Q4_1 GGUF ({head['gguf_note']}). C clients each send "
            f"{chat['requests']} requests one after the other: `POST /v1/chat/completions`, "
            f"streamed, greedy, `ignore_eos`, exactly {chat['max_tokens']} tokens each, every "
            "request its own prompt. tok/s: all completion tokens / wall time from the first "
            "request's start to the last one's end. TTFT: request start to the first content "
            "chunk. ITL: gaps between content chunks, over all requests. llama-server: "
            f"`-np {chat['slots']} -c {chat['slots'] * chat['per_slot']}` "
            f"({chat['per_slot']} tokens per slot).",
            "",
            "| concurrency | llama-server tok/s | safeformers tok/s | ratio | TTFT p50/p99 "
            "llama-server | TTFT p50/p99 safeformers | ITL p50/p99 llama-server | ITL p50/p99 "
            "safeformers |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for level in chat["levels"]:
            cells = []
            rates = {}
            for side in (llama, ours):
                rate = median(side.figures(level, "tokens_per_second"))
                rates[side.name] = rate
                if side.unavailable and rate is None:
                    cells.append("not available")
                elif side.failure and rate is None:
                    cells.append("failed")
                else:
                    cells.append("-" if rate is None else f"{rate:.1f}")
            r = bench.ratio(rates["llama-server"], rates["safeformers"], True)
            latency = []
            for prefix in ("ttft", "itl"):
                for side in (llama, ours):
                    latency.append(pair_ms(median(side.figures(level, f"{prefix}_p50_s")),
                                           median(side.figures(level, f"{prefix}_p99_s"))))
            lines.append(f"| {level} | {cells[0]} | {cells[1]} | "
                         f"{'-' if r is None else f'{r:.2f}x'} | " + " | ".join(latency) + " |")
        lines.append("")
        for side in (llama, ours):
            if side.unavailable:
                lines.append(f"- {side.name}: not available: {side.unavailable}")
            if side.failure:
                lines.append(f"- {side.name}: failed: {side.failure}")
        lines.append("")
    if embeddings:
        anchor, ours = (embeddings["sides"]["sentence-transformers"],
                        embeddings["sides"]["safeformers"])
        py = median(anchor.figures("embed", "sentences_per_second"))
        rs = median(ours.figures("embed", "sentences_per_second"))
        r = bench.ratio(py, rs, True)
        rs_cell = ("not available" if ours.unavailable and rs is None else
                   "failed" if ours.failure and rs is None else bench.fmt(rs, "sentences/s"))
        lines += [
            "## serve-embeddings",
            "",
            f"MiniLM-L6 (all-MiniLM-L6-v2), the 512-sentence corpus ({head['corpus_note']}). "
            "sentence-transformers: in-process `encode(sentences, batch_size="
            f"{embeddings['anchor_batch']})` of the corpus after a warm-up batch (load "
            f"excluded). safeformers serve: {embeddings['concurrency']} clients posting "
            f"`/v1/embeddings` batches of {embeddings['batch']} sentences, "
            f"{embeddings['passes']} pass(es) over the corpus, after a warm-up request; "
            "sentences/s = sentences / wall time (HTTP and JSON included).",
            "",
            "| workload | sentence-transformers (in-process) | safeformers serve | ratio |",
            "|---|---|---|---|",
            f"| MiniLM-L6 sentences/s | {bench.fmt(py, 'sentences/s')} | {rs_cell} | "
            f"{'-' if r is None else f'{r:.2f}x'} |",
            "",
        ]
        for side in (anchor, ours):
            if side.unavailable:
                lines.append(f"- {side.name}: not available: {side.unavailable}")
            if side.failure:
                lines.append(f"- {side.name}: failed: {side.failure}")
        lines.append("")
    checks = (chat_checks(chat) if chat else []) + (
        [embeddings["numerics"]] if embeddings and embeddings["numerics"] else [])
    if embeddings and embeddings["sides"]["safeformers"].runs.get("embed"):
        runs = [figures for _, figures, _ in embeddings["sides"]["safeformers"].runs["embed"]]
        errors = sum(figures["errors"] for figures in runs)
        checks.append((f"serve-embeddings safeformers: {sum(f['requests'] for f in runs)} "
                       f"requests, {errors} failed", errors == 0))
    lines += ["## Checks", ""]
    lines += [f"- {'ok' if ok else '**WARNING**'}: {text}" for text, ok in checks] or [
        "- (nothing to check: no side ran)"]
    lines += ["", "## Run by run", ""]
    if chat:
        lines += [
            "### serve-chat",
            "",
            "| round | side | C | tok/s | TTFT p50/p99 | ITL p50/p99 | TPOT p50 | errors | "
            "tokens/chunk | cached prompt tokens | server CPU | other processes |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        rows = sorted(((round_, order, level, name, figures, run)
                       for order, (name, side) in enumerate(chat["sides"].items())
                       for level, entries in side.runs.items()
                       for round_, figures, run in entries),
                      key=lambda row: (row[0], row[1], chat["levels"].index(row[2])))
        for round_, _, level, name, f, run in rows:
            lines.append(
                f"| {round_} | {name} | {level} | {f['tokens_per_second']} | "
                f"{pair_ms(f['ttft_p50_s'], f['ttft_p99_s'])} | "
                f"{pair_ms(f['itl_p50_s'], f['itl_p99_s'])} | {ms(f['tpot_p50_s'])} ms | "
                f"{f['errors']} | {f['tokens_per_chunk']} | {f['cached_prompt_tokens']} | "
                f"{run.server_cpu_s / run.wall_s:.2f} cores | {run.other_cores:.2f} cores"
                f"{f' (steal {run.steal_cores:.2f})' if run.steal_cores >= 0.01 else ''} |")
        lines.append("")
        lines += error_lines(rows=[(round_, name, f"C={level}", f)
                                   for round_, _, level, name, f, _ in rows])
        for side in chat["sides"].values():
            if side.server_rss:
                lines.append(f"- {side.name} peak RSS: " + ", ".join(
                    f"round {r} {bench.fmt(mb, 'MB')}" for r, mb in side.server_rss))
        lines.append("")
        for side in chat["sides"].values():
            for text in side.commands:
                lines.append(f"- {side.name}: `{text}`")
        for text in chat["client_commands"]:
            lines.append(f"- client (the same for both sides): `{text}`")
        lines.append("")
    if embeddings:
        lines += ["### serve-embeddings", "",
                  "| round | side | sentences/s | request p50/p99 | errors | other processes |",
                  "|---|---|---|---|---|---|"]
        for side in embeddings["sides"].values():
            for round_, f, run in side.runs.get("embed", []):
                latency = pair_ms(f.get("latency_p50_s"), f.get("latency_p99_s"))
                other = f"{run.other_cores:.2f} cores"
                lines.append(f"| {round_} | {side.name} | {f['sentences_per_second']} | "
                             f"{latency} | {f.get('errors', '-')} | {other} |")
        lines.append("")
        lines += error_lines(rows=[(round_, side.name, "", f)
                                   for side in embeddings["sides"].values()
                                   for round_, f, _ in side.runs.get("embed", [])])
        for side in embeddings["sides"].values():
            if side.server_rss:
                lines.append(f"- {side.name} server peak RSS: " + ", ".join(
                    f"round {r} {bench.fmt(mb, 'MB')}" for r, mb in side.server_rss))
            for text in side.commands:
                lines.append(f"- {side.name}: `{text}`")
        lines.append("")
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


# ---------------------------------------------------------------- main


def env_levels() -> list:
    text = os.environ.get("CONCURRENCY", "1,4,16")
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BenchError(f"CONCURRENCY={text!r} is not a comma-separated list of numbers") from None
    if not levels or min(levels) < 1:
        raise BenchError(f"CONCURRENCY={text!r}: give numbers of at least 1, e.g. 1,4,16")
    return levels


def main(argv: list) -> int:
    selected = argv or list(WORKLOADS)
    unknown = [name for name in selected if name not in WORKLOADS]
    if unknown:
        raise BenchError(f"unknown workload(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(WORKLOADS)}")
    rounds = bench.env_int("ROUNDS", 3, 1)
    threads = bench.env_int("THREADS", 2, 1)
    levels = env_levels()
    work = bench.env_path("SAFEFORMERS_BENCH_WORK", HOME / ".cache/safeformers/bench")
    work.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    setup = {
        "levels": levels,
        "requests": bench.env_int("REQUESTS", 2, 1),
        "max_tokens": bench.env_int("MAX_TOKENS", 128, 1),
        "slots": bench.env_int("SLOTS", max(levels), 1),
        "embed_concurrency": bench.env_int("EMBED_CONCURRENCY", 16, 1),
        "embed_batch": bench.env_int("EMBED_BATCH", 8, 1),
        "embed_rounds": bench.env_int("EMBED_ROUNDS", 3, 1),
        "anchor_batch": bench.env_int("ANCHOR_BATCH", 32, 1),
        "start_timeout": bench.env_int("SERVER_START_TIMEOUT", 120, 1),
        "work": work,
        "logs": work / "serve-logs",
    }
    venv = bench.env_path("SAFEFORMERS_BENCH_VENV", HOME / ".cache/safeformers/venv-torch")
    head = {"started": f"{started:%Y-%m-%d %H:%M} UTC", "rounds": rounds, "threads": threads,
            "gguf_note": "", "corpus_note": ""}
    if "serve-chat" in selected:
        setup["gguf"] = bench.ensure_smollm2_gguf()
        setup["llama_bin"] = bench.ensure_llama_cpp()
        head["gguf_note"] = (f"{setup['gguf'].name}, llama-server built by "
                             "bench/build_llama_cpp.sh from the llama.cpp vendored in "
                             "llama-cpp-python 0.3.36")
    if "serve-embeddings" in selected:
        setup["python"] = bench.ensure_venv(venv)
        setup["minilm"] = bench.ensure_minilm()
        setup["corpus"] = bench.ensure_corpus(work)
        corpus_bytes = setup["corpus"].read_bytes()
        head["corpus_note"] = (f"bench/make_corpus.py, {len(corpus_bytes.splitlines())} "
                               f"sentences, sha256 "
                               f"{hashlib.sha256(corpus_bytes).hexdigest()[:16]}")
    # The venv gives the machine line its torch/transformers versions; without it (serve-chat
    # alone, no venv yet) they read "unknown".
    version_python = venv / "bin" / "python"
    head["machine"] = bench.machine_line(version_python if version_python.exists()
                                         else Path(sys.executable))
    load = os.getloadavg()
    head["load"] = (f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min) "
                    f"at the start; busiest other processes over 1 s before it: "
                    f"{busiest_processes()}. The run-by-run tables give, for each client run, "
                    "the CPU the server used and the CPU every other process used meanwhile "
                    "(machine busy time from /proc/stat, minus the server's and the client's)."
                    + (f" Note: {os.environ['BENCH_NOTE'].strip().rstrip('.')}."
                       if os.environ.get("BENCH_NOTE", "").strip() else ""))
    out = bench.env_path("BENCH_RESULTS", bench.unused_results_path(
        REPO / "bench/results" / f"{started:%Y-%m-%d}-serve.md"))

    state = {"chat": None, "embeddings": None}

    def report(status: str = "") -> str:
        return write_report(out, head, state["chat"], state["embeddings"], status)

    def publisher(key: str):
        # Written after every round, so an interrupted run still leaves its figures.
        def publish(result: dict, status: str) -> None:
            state[key] = result
            report(status)
        return publish

    if "serve-chat" in selected:
        log(f"== serve-chat: {WORKLOADS['serve-chat']}")
        state["chat"] = chat_workload(setup, rounds, threads, publisher("chat"))
    if "serve-embeddings" in selected:
        log(f"== serve-embeddings: {WORKLOADS['serve-embeddings']}")
        state["embeddings"] = embeddings_workload(setup, rounds, threads,
                                                  publisher("embeddings"))
    text = report()
    log("")
    log(text.split("## Run by run")[0].rstrip())
    log("")
    log(f"written: {out}")
    failed = [f"{workload}: {side.name}" for workload, part in state.items() if part
              for side in part["sides"].values() if side.failure]
    if failed:
        log(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as error:
        print(f"bench: error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
