"""The component's entry point: the world `safeformers:tool/tool` exports one function,
`call(arguments: string) -> result<string, string>`. It finds the `Tool` subclass of `tool.py`,
calls its `forward` with the JSON arguments as keyword arguments, and returns the result as
JSON text; any exception becomes the `err` result (its type and message), never a trap.
"""

import json

import smolagents
import tool as tool_module
import wit_world
from componentize_py_types import Err


def _tool_class():
    found = [
        value
        for value in vars(tool_module).values()
        if isinstance(value, type)
        and issubclass(value, smolagents.Tool)
        and value is not smolagents.Tool
    ]
    if len(found) != 1:
        raise RuntimeError(f"tool.py must define exactly one Tool subclass, not {len(found)}")
    return found[0]


class WitWorld(wit_world.WitWorld):
    def call(self, arguments: str) -> str:
        try:
            parsed = json.loads(arguments)
            if not isinstance(parsed, dict):
                raise TypeError("the arguments must be a JSON object")
            result = _tool_class()().forward(**parsed)
            return json.dumps(result)
        except Exception as error:  # every failure is the tool's `err`, shown to the model
            raise Err(f"{type(error).__name__}: {error}")
