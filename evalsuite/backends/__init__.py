"""Eval backends, registered lazily with lm-eval's model registry (so `lm_eval --model webllama-onnx` works).

BACKENDS is the one table of names; each class also carries `@register_model(name)` (a test checks
that both agree). `register()` is idempotent and imports nothing heavy.
"""

from __future__ import annotations

BACKENDS: dict[str, str] = {
    "webllama-native": "webllama.evalsuite.backends.native:NativeLM",
    "webllama-onnx": "webllama.evalsuite.backends.onnx:OnnxLM",
    "webllama-browser": "webllama.evalsuite.backends.browser:BrowserLM",
}

# `webllama eval --backend X` short names
SHORT = {name.removeprefix("webllama-"): name for name in BACKENDS}


def register() -> None:
    from lm_eval.api.registry import model_registry

    for name, target in BACKENDS.items():
        if name not in model_registry:
            model_registry.register(name, target=target)


def get_backend(name: str):
    """Short or full name -> the LM class (imports its module)."""
    import difflib
    import importlib

    from webllama.evalsuite.errors import UnknownBackend

    full = SHORT.get(name, name)
    if full not in BACKENDS:
        close = difflib.get_close_matches(name, list(SHORT) + list(BACKENDS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownBackend(f"unknown backend {name!r}.{hint} Available: {', '.join(SHORT)}")
    module, _, attr = BACKENDS[full].partition(":")
    return getattr(importlib.import_module(module), attr)
