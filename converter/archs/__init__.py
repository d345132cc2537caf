"""The architecture registry: one module per family, each registered under its Hugging Face
architecture names and its GGUF architecture name. Adding a family = one module + its tests
(append it to FAMILIES)."""

from __future__ import annotations

from typing import Any

from webllama.converter.archs.base import Architecture, ModelConfig, Rule, WeightMap
from webllama.converter.errors import UnsupportedArchitecture

from webllama.registry import Registry

__all__ = ["ARCHS", "Architecture", "ModelConfig", "Rule", "WeightMap", "for_hf", "for_gguf", "for_format", "families"]

# module:attribute of each family's Architecture, in registration order
FAMILIES = (
    "webllama.converter.archs.llama:LLAMA",
    "webllama.converter.archs.mistral:MISTRAL",
    "webllama.converter.archs.qwen2:QWEN2",
    "webllama.converter.archs.qwen3:QWEN3",
    "webllama.converter.archs.phi3:PHI3",
)


def _build() -> Registry[Architecture]:
    import importlib

    reg: Registry[Architecture] = Registry("architecture")
    for target in FAMILIES:
        module, attr = target.split(":")
        arch = getattr(importlib.import_module(module), attr)
        for name in arch.hf_architectures:
            reg.add(name, arch)
        if arch.gguf_architecture:
            reg.add(f"gguf:{arch.gguf_architecture}", arch)
    reg.freeze()
    return reg


ARCHS: Registry[Architecture] = _build()


def families() -> list[Architecture]:
    """Each registered family once, in registration order."""
    seen: dict[str, Architecture] = {}
    for _, a in ARCHS.items():
        seen.setdefault(a.name, a)
    return sorted(seen.values(), key=lambda a: a.name)


def _supported() -> str:
    return ", ".join(n for n in ARCHS.names() if not n.startswith("gguf:"))


def for_hf(config: Any, where: str) -> Architecture:
    """The family of a transformers config (or config.json dict): by `architectures`, else model_type."""
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    names = [n for n in get("architectures") or [] if n in ARCHS]
    if names:
        return ARCHS.get(names[0])
    by_type = [a for a in families() if a.model_type == get("model_type")]
    if by_type and not get("architectures"):
        return by_type[0]
    raise UnsupportedArchitecture(
        f"{where}: architecture {', '.join(get('architectures') or []) or get('model_type')!r} is not supported; "
        f"webllama converts {_supported()}"
    )


def for_gguf(name: str | None, where: str) -> Architecture:
    if f"gguf:{name}" in ARCHS:
        return ARCHS.get(f"gguf:{name}")
    known = ", ".join(n[5:] for n in ARCHS.names() if n.startswith("gguf:"))
    raise UnsupportedArchitecture(f"{where}: GGUF architecture {name!r} is not supported; webllama converts GGUF {known}")


def for_format(fmt: str) -> Architecture:
    """The one family a single-architecture format (llama2.c) holds: the only one with a map for it."""
    holders = [a for a in families() if fmt in a.weights]
    if len(holders) != 1:
        raise UnsupportedArchitecture(f"{fmt} files do not say their architecture, and {len(holders)} families read {fmt}")
    return holders[0]
