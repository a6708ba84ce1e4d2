#!/usr/bin/env python3
"""Writes `tests/fixtures/decoders/llama-tool-call/`: a tiny Llama chat model rigged to answer
every chat with one Hermes-style tool call.

Run by hand, never in CI; the outputs are committed. From the repository root:

    HF_HUB_OFFLINE=1 ~/.cache/safeformers/venv-torch/bin/python scripts/make_tool_call_fixture.py

(the venv of `scripts/make_model_fixtures.py`; the exact versions are written into
`tool_call_outputs.json`.) Nothing is fetched from the Hub.

A randomly initialised model never emits a tool call, so this one is built to: its tokenizer (the
byte-level BPE of `make_decoder_fixtures.py`) gains one ordinary added token whose content is the
whole call `TOOL_CALL`, and its weights are set so greedy decoding after the generation prompt's
last token (`\\n`, ending `<|im_start|>assistant\\n`) is always that token, then `<|im_end|>`
(EOS). With every layer's `o_proj` and `down_proj` zero, attention and MLP add nothing to the
residual stream, so the last hidden state at a position is the final RMSNorm of that position's
token embedding alone; `lm_head` then maps the newline's embedding direction to the tool-call
token and the tool-call token's direction to `<|im_end|>`, every other row being small noise.
The script checks all of it with Transformers and records what `generate` returned in
`tool_call_outputs.json` (not `outputs.json`, whose shape the decoder parity goldens own). See `tests/fixtures/decoders/README.md`.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The shared tokenizer, dimensions and file helpers of the decoder fixtures.
from make_decoder_fixtures import (  # noqa: E402
    BOS, IM_END, IM_START, OUT, PAD, build_tokenizer, llama_common, save_tokenizer, versions,
    write_json,
)

GENERATOR = "scripts/make_tool_call_fixture.py"
NAME = "llama-tool-call"
SEED = 20251207
MAX_NEW_TOKENS = 5
# The rigged logits must win by at least this much at every step that matters.
MIN_MARGIN = 1.0
# Size of the two rigged lm_head rows and σ of every other row (logits are that row times the
# normalised hidden state, whose entries have RMS 1).
RIGGED_ROW = 1.0
NOISE_ROW = 0.02
MAX_TOTAL_BYTES = 200_000
# The tool block makes the prompt ~520 tokens (the tokenizer knows few merges): a context of 64,
# as the other decoder fixtures have, would refuse it. Rotary positions cost no weights.
CONTEXT = 1024

# The Hermes tool-call text as Qwen2.5's template writes an assistant's call (and as its
# `tojson` writes the arguments), one added token.
TOOL_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'

# ChatML with Qwen2.5's Hermes tool block. Differences from Qwen2.5's own template: no default
# system prompt, tool results are one user turn each (Qwen2.5 groups consecutive ones), and
# string `arguments` (as OpenAI clients send them back) are written as they are, not re-quoted
# (as Qwen3's template does).
CHAT_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0].role == 'system' %}\n"
    "        {{- messages[0].content + '\\n\\n' }}\n"
    "    {%- endif %}\n"
    "    {{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}\n"
    "    {%- for tool in tools %}\n"
    "        {{- '\\n' + tool | tojson }}\n"
    "    {%- endfor %}\n"
    "    {{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n"
    "{\"name\": <function-name>, \"arguments\": <args-json-object>}\\n</tool_call><|im_end|>\\n' }}\n"
    "{%- elif messages[0].role == 'system' %}\n"
    "    {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if message.role == 'user' or (message.role == 'system' and not loop.first)"
    " or (message.role == 'assistant' and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == 'assistant' %}\n"
    "        {{- '<|im_start|>assistant' }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' + tool_call.name + '\", \"arguments\": ' }}\n"
    "            {%- if tool_call.arguments is string %}\n"
    "                {{- tool_call.arguments }}\n"
    "            {%- else %}\n"
    "                {{- tool_call.arguments | tojson }}\n"
    "            {%- endif %}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == 'tool' %}\n"
    "        {{- '<|im_start|>user\\n<tool_response>\\n' + message.content"
    " + '\\n</tool_response><|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city, e.g. Paris."}},
            "required": ["city"],
        },
    },
}]
CHAT = [{"role": "user", "content": "What is the weather in Paris?"}]
# A later turn: the call, its result, and the same generation prompt at the end. Renders the
# template's assistant `tool_calls` and `tool` branches (the call renders to the added token).
FOLLOW_UP = CHAT + [
    {"role": "assistant", "content": None, "tool_calls": [{
        "type": "function", "id": "call_0",
        "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
    }]},
    {"role": "tool", "tool_call_id": "call_0", "content": '{"temperature": 21}'},
]
TEXT = "The weather is nice\n"


def build():
    """The tokenizer (with the tool-call token and `<|im_end|>` as EOS) and the rigged model."""
    from tokenizers import AddedToken
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.eos_token = IM_END
    tokenizer.model_max_length = CONTEXT
    # Not special (kept by skip_special_tokens) and not normalized (matched on the raw text).
    tokenizer.add_tokens([AddedToken(TOOL_CALL, special=False, normalized=False)])

    ids = {
        "bos_token_id": tokenizer.convert_tokens_to_ids(BOS),
        "eos_token_id": tokenizer.convert_tokens_to_ids(IM_END),
        "pad_token_id": tokenizer.convert_tokens_to_ids(PAD),
    }
    config = LlamaConfig(**llama_common(len(tokenizer), ids, tie_word_embeddings=False,
                                       max_position_embeddings=CONTEXT))
    torch.manual_seed(SEED)
    model = LlamaForCausalLM._from_config(config, attn_implementation="eager")
    model.generation_config = GenerationConfig(**ids)

    newline = last_prompt_token(tokenizer)
    call = tokenizer.convert_tokens_to_ids(TOOL_CALL)
    eos = ids["eos_token_id"]
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:  # RMSNorm weights: 1 ± 0.1, except the final one (exactly 1)
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.norm.weight.fill_(1.0)
        # Hidden dimensions 0 and 1 belong to the two rigged tokens alone: nothing else points
        # there, so only they can select the tool call and EOS.
        emb = model.model.embed_tokens.weight
        emb[:, :2] = 0.0
        emb[newline] = 0.0
        emb[newline, 0] = 1.0
        emb[call] = 0.0
        emb[call, 1] = 1.0
        head = model.lm_head.weight
        head.copy_(NOISE_ROW * torch.randn(head.shape, generator=g))
        head[:, :2] = 0.0
        head[call] = 0.0
        head[call, 0] = RIGGED_ROW
        head[eos] = 0.0
        head[eos, 1] = RIGGED_ROW
    model.eval()
    return tokenizer, model, {"newline": newline, "tool_call": call, "eos": eos}


def last_prompt_token(tokenizer) -> int:
    """The token that ends `<|im_start|>assistant\\n`, checked to be the same when the header
    follows other text (the rendered prompt is tokenized as one string)."""
    alone = tokenizer(IM_START + "assistant\n", add_special_tokens=False)["input_ids"]
    after = tokenizer(IM_END + "\n" + IM_START + "assistant\n", add_special_tokens=False)["input_ids"]
    if alone[-1] != after[-1] or tokenizer.convert_ids_to_tokens(alone[-1]) != "Ċ":
        raise SystemExit(f"unexpected generation prompt tokens {alone} / {after}")
    return alone[-1]


def greedy(model, tokenizer, input_ids: list[int], rigged: dict, what: str) -> dict:
    """Greedy `generate`; checks it returns [tool call, EOS] with margins ≥ MIN_MARGIN."""
    out = model.generate(
        input_ids=torch.tensor([input_ids]), attention_mask=torch.ones(1, len(input_ids), dtype=torch.long),
        do_sample=False, max_new_tokens=MAX_NEW_TOKENS, output_scores=True, return_dict_in_generate=True,
    )
    new = out.sequences[0, len(input_ids):].tolist()
    if new != [rigged["tool_call"], rigged["eos"]]:
        raise SystemExit(f"{what}: generate returned {new}")
    margins = []
    for step, scores in enumerate(out.scores):
        top = torch.topk(scores[0].float(), 2).values
        margins.append(round(float(top[0] - top[1]), 4))
        if margins[-1] < MIN_MARGIN:
            raise SystemExit(f"{what}: step {step} margin {margins[-1]} < {MIN_MARGIN}")
    text = tokenizer.decode(new, skip_special_tokens=True)
    if text != TOOL_CALL:
        raise SystemExit(f"{what}: decoded {text!r}")
    return {"input_ids": input_ids, "max_new_tokens": MAX_NEW_TOKENS, "new_tokens": new,
            "new_text": text, "margins": margins}


def chat_case(model, tokenizer, messages: list, tools, rigged: dict, what: str) -> dict:
    rendered = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                             tokenize=False)
    input_ids = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                              tokenize=True, return_dict=True)["input_ids"]
    if input_ids != tokenizer(rendered, add_special_tokens=False)["input_ids"]:
        raise SystemExit(f"{what}: apply_chat_template ids differ from tokenizing its text")
    if input_ids[-1] != rigged["newline"]:
        raise SystemExit(f"{what}: the prompt ends with {input_ids[-1]}")
    return {"messages": messages, "tools": tools, "rendered": rendered,
            **greedy(model, tokenizer, input_ids, rigged, what)}


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    folder = OUT / NAME
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)

    tokenizer, model, rigged = build()
    model.save_pretrained(folder, safe_serialization=True)
    save_tokenizer(tokenizer, folder)

    # Everything below runs on what was written, reloaded.
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    if tokenizer.convert_tokens_to_ids(TOOL_CALL) != rigged["tool_call"] or tokenizer.eos_token != IM_END:
        raise SystemExit("the saved tokenizer lost the tool-call token or the EOS")
    if tokenizer(TOOL_CALL, add_special_tokens=False)["input_ids"] != [rigged["tool_call"]]:
        raise SystemExit("the tool-call text does not encode to its one token")

    with torch.no_grad():
        chat = chat_case(model, tokenizer, CHAT, TOOLS, rigged, "chat with tools")
        plain = chat_case(model, tokenizer, CHAT, None, rigged, "chat without tools")
        follow_up = chat_case(model, tokenizer, FOLLOW_UP, TOOLS, rigged, "follow-up chat")
        if rigged["tool_call"] not in follow_up["input_ids"]:
            raise SystemExit("the follow-up's rendered call is not the tool-call token")
        text_ids = tokenizer(TEXT)["input_ids"]
        if text_ids[-1] != rigged["newline"]:
            raise SystemExit(f"{TEXT!r} does not end with the newline token")
        text = {"text": TEXT, **greedy(model, tokenizer, text_ids, rigged, "text prompt")}

    doc = {
        "generator": GENERATOR,
        "versions": versions(),
        "model": NAME,
        "class": type(model).__name__,
        "model_type": model.config.model_type,
        "seed": SEED,
        "tool_call": {"text": TOOL_CALL, "id": rigged["tool_call"]},
        "eos_token_id": rigged["eos"],
        "prompt_last_token": {"token": tokenizer.convert_ids_to_tokens(rigged["newline"]),
                              "id": rigged["newline"]},
        "chat": chat,
        "chat_without_tools": plain,
        "follow_up": follow_up,
        "text_prompt": text,
    }
    write_json(folder / "tool_call_outputs.json", doc)
    total = sum(f.stat().st_size for f in folder.iterdir())
    if total >= MAX_TOTAL_BYTES:
        raise SystemExit(f"{folder}: {total} bytes, over {MAX_TOTAL_BYTES}")
    print(f"wrote {NAME}: vocab {len(tokenizer)}, tool call id {rigged['tool_call']}, "
          f"margins {chat['margins']}, {total} bytes")


if __name__ == "__main__":
    main()
