"""A smolagents-style tool in Python, run in the WebAssembly sandbox (built by
examples/tools/python/build.sh): the same counts as the Rust word_count example, of a text or of a
file under /data, the folder the user granted read-only."""

import os

from smolagents import Tool


class PyWordCountTool(Tool):
    name = "py_word_count"
    description = (
        "Counts the lines, words and characters of a text, or of a file in the folder the user "
        "granted (read-only)."
    )
    inputs = {
        "text": {"type": "string", "description": "The text to count.", "nullable": True},
        "path": {
            "type": "string",
            "description": "A file under /data (the granted folder), instead of text.",
            "nullable": True,
        },
    }
    output_type = "object"

    def forward(self, text=None, path=None):
        if path is not None:
            with open(os.path.join("/data", path), encoding="utf-8") as file:
                text = file.read()
        if text is None:
            raise ValueError("give text or path")
        return {
            "lines": len(text.splitlines()),
            "words": len(text.split()),
            "characters": len(text),
        }
