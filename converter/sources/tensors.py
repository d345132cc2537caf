"""The streaming view every source format shares: one tensor at a time, never the whole model.

A `TensorSource` knows its format's tensor names (`names`) and how to read one (`read`, float32 in
torch nn.Linear (out, in) layout). Its architecture's WeightMap for that format turns them into the
graph's canonical tensors (`get("layers.3.q")`), checked complete both ways when it opens. The torch
view (`torch_model`) is built from the same tensors, so the fused graph, the verification model and
the native eval backend read one code path: hf.py, gguf.py and llama2c.py subclass it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from webllama.converter.archs import Architecture, ModelConfig
from webllama.converter.archs.transforms import PACKS, TRANSFORMS, concat_rows
from webllama.converter.errors import BadFormat, MissingTensor
from webllama.converter.sources.base import check_finite


class TensorSource:
    """Subclasses set kind, arch, hf_config, where and implement names(), read()."""

    kind: str  # the WeightMap format: "hf" | "gguf" | "llama2c"
    arch: Architecture
    hf_config: Any  # the transformers config of arch's family
    where: str  # for messages: the file or folder

    def _open(self) -> None:
        """Call at the end of __init__: the typed config, then completeness both ways."""
        self.config: ModelConfig = self.arch.model_config(self.hf_config)
        self.weights = self.arch.weight_map(self.kind, self.where)
        self._rules = self.weights.resolve(self.config)
        self.weights.check(set(self.names()), self.config, self.where)
        self._hf_names = hf_aliases(self.arch, self.config)

    # ---------------------------------------------------------------- format side

    def names(self) -> list[str]:
        raise NotImplementedError

    def read(self, name: str) -> np.ndarray:
        """One source tensor as float32, in the format's own row order."""
        raise NotImplementedError

    def read_raw(self, name: str) -> tuple[str, np.ndarray] | None:
        """(ggml type name, quantized blocks) where the format stores quantized tensors, else None."""
        return None

    # ---------------------------------------------------------------- graph side

    def has(self, canonical: str) -> bool:
        return canonical in self._rules

    def get(self, canonical: str) -> np.ndarray:
        """A canonical graph tensor ("embed", "layers.3.q", ...) as float32, transforms applied; a Hugging
        Face name of the architecture ("model.embed_tokens.weight") gives the same tensor under that name."""
        if canonical in self._hf_names:
            return concat_rows([self.get(c) for c in self._hf_names[canonical]])
        rule = self._rules.get(canonical)
        if rule is None:
            raise MissingTensor(f"{self.where}: the {self.config.arch} graph has no tensor {canonical!r}")
        w = TRANSFORMS[rule.transform]([self.read(rule.source)], self.config)
        check_finite(rule.source, w, self.where)
        return np.ascontiguousarray(w, dtype=np.float32)

    def raw(self, canonical: str) -> tuple[str, np.ndarray] | None:
        """Quantized blocks of a tensor stored as is, or in llama.cpp's RoPE row order (rope_q/rope_k:
        the caller permutes the rows); None where a transform reshapes it (split) or the format is float."""
        parts = self._hf_names.get(canonical, [canonical])
        if len(parts) != 1:
            return None
        canonical = parts[0]
        rule = self._rules.get(canonical)
        if rule is None or rule.transform not in ("copy", "rope_q", "rope_k"):
            return None
        if canonical.endswith((".q", ".k")) and rule.transform == "copy":
            return None  # callers undo llama.cpp's q/k permutation on raw rows: not for families stored unpermuted
        got = self.read_raw(rule.source)
        if got and got[0] == "Q4_0":  # blocks of (fp16 scale, 16 bytes): a NaN/Inf scale is a NaN/Inf weight
            check_finite(
                rule.source,
                np.ascontiguousarray(np.asarray(got[1]).view(np.uint8).reshape(-1, 18)[:, :2]).view(np.float16),
                self.where,
            )
        return got

    def layer_names(self, i: int) -> dict[str, str]:
        return {k: f"layers.{i}.{k}" for k in self.config.layer_tensors()}

    def layer(self, i: int) -> dict[str, np.ndarray]:
        return {k: self.get(n) for k, n in self.layer_names(i).items()}

    # ---------------------------------------------------------------- torch view

    def state_dict(self) -> dict[str, np.ndarray]:
        """Every canonical tensor under the arch's Hugging Face names (packed projections re-packed)."""
        tensors = {k: self.get(k) for k in self._rules}
        return self.arch.weight_map("hf", self.where).pack_hf(tensors, self.config)

    def torch_model(self):
        """The float32 transformers model of these weights (strict: every parameter set, nothing left)."""
        import torch

        model = self.arch.transformers_class()(self.hf_config).to(torch.float32).eval()
        state = {k: torch.tensor(v) for k, v in self.state_dict().items()}  # copies: GGUF/llama2.c arrays are read-only maps
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [m for m in missing if not (self.config.tie_embeddings and m == "lm_head.weight")]
        if missing or unexpected:
            raise BadFormat(f"{self.where}: weight mapping incomplete (missing {missing}, unexpected {unexpected})")
        if self.config.tie_embeddings:
            model.tie_weights()
        return model


def hf_aliases(arch: Architecture, c: ModelConfig) -> dict[str, list[str]]:
    """Hugging Face name -> the canonical tensors it holds, in row order (one, or the parts of a packed one)."""
    out: dict[str, dict[str, str]] = {}
    for canonical, rule in arch.weights["hf"].resolve(c).items():
        out.setdefault(rule.source, {})[rule.transform] = canonical
    order = {t: i for pack in PACKS.values() for i, t in enumerate(pack)}
    return {name: [parts[t] for t in sorted(parts, key=lambda t: order.get(t, 0))] for name, parts in out.items()}


class StateDictSource(TensorSource):
    """A transformers model already in memory (customized sources, tests): its state dict, HF names."""

    kind = "hf"

    def __init__(self, model: Any, where: str = "the loaded model") -> None:
        from webllama.converter.archs import for_hf

        self.hf_config = model.config
        self.arch = for_hf(model.config, where)
        self.where = where
        self._sd = model.state_dict()
        self._open()

    def names(self) -> list[str]:
        # A tied head is the embedding: the state dict lists it twice.
        return [n for n in self._sd if not (n == "lm_head.weight" and self.hf_config.tie_word_embeddings)]

    def read(self, name: str) -> np.ndarray:
        import torch

        return self._sd[name].detach().to(torch.float32).numpy().copy()
