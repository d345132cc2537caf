"""Model sources: HF directory or hub id, GGUF, llama2.c. `load_source` picks the reader."""

from __future__ import annotations

from pathlib import Path

from webllama.converter.errors import MissingFile, UnsupportedSource
from webllama.converter.sources import gguf, hf, llama2c  # noqa: F401  (registers the readers)
from webllama.converter.sources.base import SOURCES, LoadedSource
from webllama.converter.sources.smollm2 import smollm2_gguf

__all__ = ["LoadedSource", "SOURCES", "load_source", "detect_kind", "smollm2_gguf"]

# Detection order matters: GGUF and HF look at names/magic, llama2.c is the catch-all for *.bin.
DETECT_ORDER = ("gguf", "hf", "llama2c")


def detect_kind(spec: str) -> str:
    path = Path(spec)
    if not path.exists():
        if hf.is_hub_id(spec):
            return "hub"
        raise MissingFile(f"{spec}: no such file or directory (and not a Hugging Face hub id like 'org/name')")
    for kind in DETECT_ORDER:
        if SOURCES.get(kind).detect(path):
            return kind
    raise UnsupportedSource(
        f"{spec}: not a model webllama can read; give a Hugging Face model directory (config.json + "
        "safetensors), a .gguf file, or a llama2.c checkpoint with its tokenizer.bin"
    )


def load_source(spec: str, revision: str | None = None) -> LoadedSource:
    """Load any supported source as its float32 transformers model plus its (fixed) fast tokenizer."""
    kind = detect_kind(spec)
    if kind == "hub":
        return hf.load(hf.download(spec, revision), revision=revision, hub_id=spec)
    return SOURCES.get(kind).load(Path(spec), revision=revision)
