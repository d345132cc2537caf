"""The root of webllama's one error hierarchy.

Every error a user can cause is a WebllamaError whose message is one line: what failed, where,
and how to fix it. The CLI prints `error: <message>` and exits with the class's exit code; library
code never prints or exits. Each package derives its own errors from it (converter/errors.py,
evalsuite/errors.py, web/server.py).
"""

from __future__ import annotations


class WebllamaError(Exception):
    """Base class: a failure the user can act on."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        # One line, always: multi-line messages are folded so the CLI prints exactly one line.
        super().__init__(" ".join(str(message).split()))
