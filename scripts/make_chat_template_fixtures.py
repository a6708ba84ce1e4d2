#!/usr/bin/env python3
"""Chat template goldens for crates/tokenize, made once by hand and committed.

Run with the torch venv (transformers 5.x; nothing is downloaded):

    ~/.cache/safeformers/venv-torch/bin/python scripts/make_chat_template_fixtures.py

Writes into tests/fixtures/chat-templates/:
- goldens.json    real-world chat templates (the public Jinja strings these model families ship)
                  rendered by Transformers' `apply_chat_template(tokenize=False)` over a few
                  conversations: each case has the template name, messages, tools, extra
                  variables, `add_generation_prompt`, and either the expected text or the message
                  of the error the template raises.
- llama-style/    a tiny SentencePiece-style tokenizer (byte-fallback BPE, Metaspace, a
                  TemplateProcessing post-processor adding <s>) saved by Transformers, once per
                  setting of `add_bos_token`/`add_eos_token` written into tokenizer_config.json (as
                  repositories saved by Transformers 4 have them), with a chat template in
                  chat_template.jinja; `expected.json`: ids of `tokenizer(text)` (single, pair,
                  without special tokens) after reloading with AutoTokenizer, and one
                  `apply_chat_template(tokenize=True)`.
- gpt2-style/     the same for a byte-level BPE without a post-processor and without the flags.
"""
import json
import os
import shutil
import sys

import tokenizers
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "chat-templates")

VERSIONS = {
    "transformers": transformers.__version__,
    "tokenizers": tokenizers.__version__,
    "python": sys.version.split()[0],
}

# ---------------------------------------------------------------------------------------------
# The templates. Written as raw strings: `\n` inside a Jinja string literal stays a backslash
# escape for Jinja, real line breaks are part of the template source.

LLAMA_3_1 = r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

LLAMA_3 = r"""{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>

'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>

' }}{% endif %}"""

LLAMA_2 = r"""{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"""

MISTRAL = r"""{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"""

QWEN_2_5 = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

# Qwen3's template (Qwen/Qwen3-*): thinking blocks split out of assistant content, kept only after
# the last real user query; `enable_thinking=False` pre-fills an empty think block.
QWEN_3 = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}"""

GEMMA = r"""{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"""

PHI_3 = r"""{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"""

ZEPHYR = r"""{% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>
'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}"""

CHATML = r"""{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"""

DEEPSEEK = r"""{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\n\n' }}{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}{{ message['content'] + '\n\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"""

# In the style of DeepSeek-R1's template: a namespace collects the system prompt, assistant turns
# drop their reasoning (`split('</think>')[-1]`), and `loop.last` decides the closing tokens.
NAMESPACE_LOOP_LAST = r"""{%- set ns = namespace(system_prompt='', turns=0) -%}
{%- for message in messages -%}
    {%- if message['role'] == 'system' -%}
        {%- set ns.system_prompt = message['content'] -%}
    {%- endif -%}
{%- endfor -%}
{{ bos_token }}{{ ns.system_prompt }}
{%- for message in messages -%}
    {%- if message['role'] == 'user' -%}
        {%- set ns.turns = ns.turns + 1 -%}
        {{ '<｜User｜>' + message['content'] }}
    {%- elif message['role'] == 'assistant' -%}
        {%- set content = message['content'] -%}
        {%- if '</think>' in content -%}
            {%- set content = content.split('</think>')[-1].lstrip() -%}
        {%- endif -%}
        {{ '<｜Assistant｜>' + content }}
        {%- if not loop.last -%}{{ eos_token }}{%- endif -%}
    {%- endif -%}
    {%- if loop.last and add_generation_prompt and message['role'] != 'assistant' -%}
        {{ '<｜Assistant｜><think>\n' }}
    {%- endif -%}
{%- endfor -%}
{{ '' if add_generation_prompt else '<!-- ' ~ ns.turns ~ ' user turns -->' }}"""

# Python-style methods and filters real templates use, in one place.
PY_METHODS = r"""{%- for message in messages %}
{{- message.role.upper() }}[{{ loop.index }}/{{ loop.length }}]: {{ message.content.strip().replace('\n', ' ') }}
{%- if message.content.startswith('Hi') or message.content.endswith('?') %} (greeting-or-question){% endif %}
{%- for key, value in message.items() if key not in ('role', 'content') %} {{ key }}={{ value | tojson }}{% endfor %}
{{ '\n' }}
{%- endfor %}
{%- if tools %}{{ tools | map(attribute='function') | map(attribute='name') | join(', ') | title }}{% endif %}
{{- messages | selectattr('role', 'equalto', 'user') | list | length }} user message(s)
{{ messages | map(attribute='role') | list }} {{ messages[-1] }} {{ none }} {{ (1, 'a') }} {{ 2.5 }} {{ 7 // 2 }}
{{- '' if not add_generation_prompt else '\n>>> ' }}"""

TEMPLATES = {
    "llama-3.1": (LLAMA_3_1, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}, True),
    "llama-3": (LLAMA_3, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}, False),
    "llama-2": (LLAMA_2, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, False),
    "mistral": (MISTRAL, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, False),
    "qwen-2.5": (QWEN_2_5, {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, True),
    "qwen-3": (QWEN_3, {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, True),
    "gemma": (GEMMA, {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}, False),
    "phi-3": (PHI_3, {"bos_token": "<s>", "eos_token": "<|endoftext|>", "unk_token": "<unk>"}, False),
    "zephyr": (ZEPHYR, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, False),
    "chatml": (CHATML, {"eos_token": "<|im_end|>"}, False),
    "deepseek": (DEEPSEEK, {"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"}, False),
    "namespace-loop-last": (NAMESPACE_LOOP_LAST, {"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"}, False),
    "python-methods": (PY_METHODS, {"eos_token": "</s>"}, True),
}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_temperature",
            "description": "Get the current temperature at a location.",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "The location, as \"City, Country\"."},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "The unit."},
                },
                "required": ["location", "unit"],
            },
            "return": {"type": "number", "description": "The temperature, as a float."},
        },
    }
]

SYSTEM = {"role": "system", "content": "You are a helpful assistant.  "}
CONVERSATIONS = {
    "single": [{"role": "user", "content": "Hi there! How are you?"}],
    "system": [SYSTEM, {"role": "user", "content": "What is the capital of France?"}],
    "multi_turn": [
        SYSTEM,
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke.\nA short one."},
    ],
    "multi_turn_no_system": [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "<think>greet back</think>\n\nHello! How can I help?"},
        {"role": "user", "content": "Grüße — 你好 \"quoted\" <tag> & done?"},
    ],
    "not_alternating": [
        {"role": "user", "content": "One."},
        {"role": "user", "content": "Two."},
    ],
}
TOOL_CONVERSATION = [
    {"role": "system", "content": "You are a weather bot."},
    {"role": "user", "content": "Hey, what's the temperature in Paris right now?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "type": "function",
                "function": {"name": "get_current_temperature", "arguments": {"location": "Paris, France", "unit": "celsius"}},
            }
        ],
    },
    {"role": "tool", "name": "get_current_temperature", "content": "22.0"},
]


def special_tokens_tokenizer(special):
    """A PreTrainedTokenizerFast that knows the given special tokens (chat templates read them)."""
    vocab = {"<unk>": 0}
    for token in special.values():
        vocab.setdefault(token, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, **special)


def render_case(name, conversation_name, messages, add_generation_prompt, tools=None, kwargs=None,
                continue_final_message=False):
    source, special, _ = TEMPLATES[name]
    tok = special_tokens_tokenizer(special)
    tok.chat_template = source
    kwargs = kwargs or {}
    case = {
        "template": name,
        "conversation": conversation_name,
        "messages": messages,
        "add_generation_prompt": add_generation_prompt,
        "tools": tools,
        "kwargs": kwargs,
        "continue_final_message": continue_final_message,
    }
    try:
        case["expected"] = tok.apply_chat_template(
            messages, tools=tools, add_generation_prompt=add_generation_prompt, tokenize=False,
            continue_final_message=continue_final_message, **kwargs
        )
    except Exception as e:  # the template's raise_exception, or a render error
        case["error"] = {"type": type(e).__name__, "message": str(e)}
    return case


def goldens():
    cases = []
    for name, (_, _, supports_tools) in TEMPLATES.items():
        for conversation_name, messages in CONVERSATIONS.items():
            for add_generation_prompt in (True, False):
                kwargs = {"date_string": "26 Jul 2024"} if name.startswith("llama-3.1") else {}
                cases.append(render_case(name, conversation_name, messages, add_generation_prompt, kwargs=kwargs))
        if supports_tools:
            for add_generation_prompt in (True, False):
                cases.append(render_case(name, "tool_call", TOOL_CONVERSATION, add_generation_prompt, tools=TOOLS,
                                         kwargs={"date_string": "26 Jul 2024"} if name.startswith("llama") else {}))
            cases.append(render_case(name, "tools_question", CONVERSATIONS["system"], True, tools=TOOLS,
                                     kwargs={"date_string": "26 Jul 2024"} if name.startswith("llama") else {}))
    # Llama 3.1 with the tools in the system message, and with built-in tools.
    cases.append(render_case("llama-3.1", "tool_call", TOOL_CONVERSATION, True, tools=TOOLS,
                             kwargs={"date_string": "26 Jul 2024", "tools_in_user_message": False}))
    cases.append(render_case("llama-3.1", "system", CONVERSATIONS["system"], True,
                             kwargs={"date_string": "26 Jul 2024", "builtin_tools": ["brave_search", "code_interpreter", "wolfram_alpha"]}))
    # A prefilled assistant answer to continue (`continue_final_message=True`).
    prefill = CONVERSATIONS["system"] + [{"role": "assistant", "content": "The capital of France is "}]
    for name in ("llama-3.1", "llama-3", "qwen-2.5", "chatml", "zephyr", "phi-3", "deepseek"):
        kwargs = {"date_string": "26 Jul 2024"} if name.startswith("llama-3.1") else {}
        cases.append(render_case(name, "prefill", prefill, False, kwargs=kwargs, continue_final_message=True))
    # Qwen3: thinking switched off, and a conversation whose earlier assistant turns carry
    # thinking (dropped before the last real query, kept after it, also from `reasoning_content`).
    for enable_thinking in (False, True):
        cases.append(render_case("qwen-3", f"thinking_{str(enable_thinking).lower()}", CONVERSATIONS["system"], True,
                                 kwargs={"enable_thinking": enable_thinking}))
    thinking = [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "<think>\nAdd them.\n</think>\n\n4."},
        {"role": "user", "content": "And times 3?"},
        {"role": "assistant", "content": "12.", "reasoning_content": "\n4 · 3 = 12\n"},
    ]
    cases.append(render_case("qwen-3", "reasoning", thinking, False))
    cases.append(render_case("qwen-3", "reasoning_tool_turn", TOOL_CONVERSATION + [
        {"role": "assistant", "content": "<think>It said 22.</think>It is 22 °C in Paris."}], False, tools=TOOLS))
    blocks = [{"role": "user", "content": "Hi!"},
              {"role": "assistant", "content": "Well,  "}]
    cases.append(render_case("gemma", "prefill_trailing_space", blocks, False, continue_final_message=True))
    return {
        "versions": VERSIONS,
        "made_by": "scripts/make_chat_template_fixtures.py",
        "templates": {name: {"source": source, "special_tokens": special} for name, (source, special, _) in TEMPLATES.items()},
        "cases": cases,
    }


# ---------------------------------------------------------------------------------------------
# BOS/EOS for decoder tokenizers.

TRAIN = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "Grüße aus Köln, 你好, and emoji 🙂 too.",
    "Chat templates turn messages into prompts.",
] * 5

ENCODE_TEXTS = ["Hello world!", "The quick brown fox", "Grüße 🙂 你好", ""]


def llama_style_backend():
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens, show_progress=False)
    tok.train_from_iterator(TRAIN, trainer)
    # The trainer makes the byte pieces special added tokens; in Llama's tokenizer.json they are
    # plain vocabulary entries (decoded by ByteFallback, never skipped as special).
    spec = json.loads(tok.to_str())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if not t["content"].startswith("<0x")]
    tok = Tokenizer.from_str(json.dumps(spec))
    # As Llama's tokenizer.json has it: a TemplateProcessing adding <s> only.
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return tok


def gpt2_style_backend():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TRAIN, trainer)
    return tok  # no post-processor, like GPT-2's tokenizer.json


def reload(folder):
    return transformers.AutoTokenizer.from_pretrained(folder)


def encode_cases(tok):
    out = []
    for text in ENCODE_TEXTS:
        out.append({
            "text": text,
            "ids": tok(text)["input_ids"],
            "ids_no_special": tok(text, add_special_tokens=False)["input_ids"],
            "pair_ids": tok(text, "Second part.")["input_ids"],
        })
    return out


def save_folder(name, backend, flag_settings, special, chat_template):
    folder = os.path.join(OUT, name)
    shutil.rmtree(folder, ignore_errors=True)
    expected = {"versions": VERSIONS, "made_by": "scripts/make_chat_template_fixtures.py", "settings": []}
    for setting_name, flags in flag_settings:
        sub = os.path.join(folder, setting_name)
        tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(backend.to_str()), **special)
        tok.chat_template = chat_template
        tok.save_pretrained(sub)
        # Transformers 5 does not save the flags; repositories saved by earlier versions (Llama 2,
        # Gemma, ...) have them in tokenizer_config.json, which is the case to reproduce.
        config_path = os.path.join(sub, "tokenizer_config.json")
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
        config.update(flags)
        with open(config_path, "w", encoding="utf-8") as f:
            json.dump(config, f, ensure_ascii=False, indent=2)
            f.write("\n")
        reloaded = reload(sub)
        entry = {"folder": setting_name, "flags": flags, "cases": encode_cases(reloaded),
                 "add_bos_token": reloaded.add_bos_token, "add_eos_token": reloaded.add_eos_token}
        messages = CONVERSATIONS["multi_turn_no_system"]
        entry["chat"] = {
            "messages": messages,
            "text": reloaded.apply_chat_template(messages, add_generation_prompt=True, tokenize=False),
            "ids": list(reloaded.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)),
        }
        expected["settings"].append(entry)
    with open(os.path.join(folder, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, indent=1)
        f.write("\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "goldens.json"), "w", encoding="utf-8") as f:
        json.dump(goldens(), f, ensure_ascii=False, indent=1)
        f.write("\n")
    save_folder(
        "llama-style",
        llama_style_backend(),
        [
            ("from-tokenizer-json", {}),
            ("bos", {"add_bos_token": True}),
            ("bos-eos", {"add_bos_token": True, "add_eos_token": True}),
            ("eos-only", {"add_bos_token": False, "add_eos_token": True}),
            ("none", {"add_bos_token": False, "add_eos_token": False}),
        ],
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
        LLAMA_2,
    )
    save_folder(
        "gpt2-style",
        gpt2_style_backend(),
        [("from-tokenizer-json", {}), ("bos", {"add_bos_token": True})],
        {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"},
        CHATML,
    )
    print("wrote", os.path.abspath(OUT))


if __name__ == "__main__":
    main()
