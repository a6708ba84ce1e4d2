"""The part of smolagents' `Tool` that a tool's `tool.py` uses, for building it into a WebAssembly
component with componentize-py (see build.sh). Inside the component there is no smolagents: a
tool subclasses this `Tool`, sets its attributes, and implements `forward`.

The attributes (`name`, `description`, `inputs`, `output_type`) document the tool for its
author; what the user approves and the model sees is `tool.json` beside `tool.py`.
"""


class Tool:
    name: str = ""
    description: str = ""
    inputs: dict = {}
    output_type: str = "any"
    output_schema: dict | None = None

    def forward(self, *args, **kwargs):
        raise NotImplementedError("a tool implements forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)
