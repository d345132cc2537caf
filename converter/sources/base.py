"""The Source protocol: every model source ends as the same thing, a LoadedSource.

A source reader validates its files at the edge (magic numbers, sizes, architectures), fixes the
known defects of its format, and hands back the transformers model of its architecture
(converter/archs) in float32 plus a fast tokenizer. Everything downstream (export, verify, the native eval backend) sees only that.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from webllama.registry import Registry

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast


@dataclass
class LoadedSource:
    kind: str  # "hf" | "gguf" | "llama2c"
    path: str  # what the user gave (a path or a hub id)
    name: str  # short display name, used for the bundle's "name"
    sha256: str  # hash over the source files, so a bundle names exactly what it came from
    model: PreTrainedModel  # its architecture's *ForCausalLM, float32, eval mode, on CPU
    tokenizer: PreTrainedTokenizerFast
    revision: str | None = None
    files: list[str] = field(default_factory=list)

    @property
    def chat_template(self) -> str | None:
        return getattr(self.tokenizer, "chat_template", None)


@dataclass(frozen=True)
class SourceReader:
    """A registered source format: `detect` is cheap (names and magic bytes only), `load` does the work."""

    kind: str
    detect: Callable[[Path], bool]
    load: Callable[..., LoadedSource]


SOURCES: Registry[SourceReader] = Registry("model source")


def sha256_files(paths: list[Path], chunk: int = 1 << 22) -> str:
    """One digest over several files (name + bytes), in sorted order, so it is stable."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        with open(p, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    return h.hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_finite(name: str, values, where: str) -> None:
    """NonFiniteWeights naming the tensor if `values` (a numpy array or torch tensor) holds NaN or Inf:
    such a model converts and verifies against itself, then the browser gets NaN logits."""
    import numpy as np

    finite = values.isfinite().all() if hasattr(values, "isfinite") else np.isfinite(values).all()
    if not bool(finite):
        from webllama.converter.errors import NonFiniteWeights

        raise NonFiniteWeights(f"{where}: tensor {name} holds NaN or Inf values; the checkpoint is corrupt, get a good copy")


def check_model_finite(model, where: str) -> None:
    """check_finite over every parameter and buffer of a loaded torch model."""
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_floating_point():
            check_finite(name, t.detach(), where)
