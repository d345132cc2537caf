"""What an architecture is to webllama: a typed config, a weight map per source format, refusals.

One `Architecture` per family (archs/llama.py, mistral.py, qwen2.py, qwen3.py, phi3.py), registered in
`ARCHS` (archs/__init__.py) by its Hugging Face architecture names and its GGUF architecture name.

- `model_config(hf_config)`: the transformers config -> `ModelConfig`. Every field that changes the
  math is either read into ModelConfig (biases, q/k norm, sliding window, RoPE) or refused by name
  (`Refusal`): a model converts exactly or not at all.
- `weights[format]`: a declarative `WeightMap` from source tensor names ({i} = layer) to the graph's
  canonical tensors ("layers.{i}.q", "embed", ...) through named transforms (archs/transforms.py).
  `WeightMap.check` is completeness both ways: every graph tensor found, every source tensor consumed
  or declared unused; anything else is one error naming the tensors.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from webllama.converter.archs.transforms import PACKS, TRANSFORMS, concat_rows
from webllama.converter.errors import MissingTensor, UnsupportedArchitecture, UnusedTensor

# The graph's canonical per-layer tensors (torch nn.Linear (out, in) layout) ...
BASE_LAYER = (
    "attn_norm",  # (dim,)
    "q",  # (n_heads*head_dim, dim)
    "k",  # (n_kv_heads*head_dim, dim)
    "v",  # (n_kv_heads*head_dim, dim)
    "o",  # (dim, n_heads*head_dim)
    "mlp_norm",  # (dim,)
    "gate",  # (hidden, dim)
    "up",  # (hidden, dim)
    "down",  # (dim, hidden)
)
QKV_BIAS = ("q_bias", "k_bias", "v_bias")  # (n_heads*head_dim,), (n_kv_heads*head_dim,) x2
O_BIAS = ("o_bias",)  # (dim,)
MLP_BIAS = ("gate_bias", "up_bias", "down_bias")  # (hidden,), (hidden,), (dim,)
QK_NORM = ("q_norm", "k_norm")  # (head_dim,) each: RMSNorm over each head (Qwen3)
# ... and the global ones.
GLOBAL = ("embed", "norm", "lm_head")  # (vocab, dim), (dim,), (vocab, dim) (absent when tied)
ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3")  # transformers' names; rope.py computes them
MAX_LISTED = 12  # tensors named in one error line


@dataclass(frozen=True)
class ModelConfig:
    """The typed config every later stage reads (no raw transformers config past the source)."""

    arch: str  # family name, e.g. the GGUF architecture name
    vocab_size: int
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    rope_theta: float
    rope_scaling: dict | None
    rms_eps: float
    tie_embeddings: bool
    max_seq_len: int  # the context the bundle is exact for
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    sliding_window: int | None = None  # tokens each query sees, itself included (transformers' convention)

    def layer_tensors(self) -> tuple[str, ...]:
        """The canonical per-layer tensors this config's graph reads."""
        extra = (QKV_BIAS if self.qkv_bias else ()) + (O_BIAS if self.o_bias else ()) + (MLP_BIAS if self.mlp_bias else ())
        return BASE_LAYER + extra + (QK_NORM if self.qk_norm else ())

    def global_tensors(self) -> tuple[str, ...]:
        return GLOBAL[:2] if self.tie_embeddings else GLOBAL


@dataclass(frozen=True)
class Rule:
    """A graph tensor from source tensors: `source` names ({i} = layer) fed to TRANSFORMS[transform]."""

    source: str
    transform: str = "copy"

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORMS:
            raise ValueError(f"unknown weight transform {self.transform!r}; known: {', '.join(TRANSFORMS)}")


def rules(table: dict[str, str | Rule]) -> dict[str, Rule]:
    """Tables are written as {canonical: "source.name"} or {canonical: Rule(name, transform)}."""
    return {k: v if isinstance(v, Rule) else Rule(v) for k, v in table.items()}


def _template_regex(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(re.escape("{i}"), r"\d+") + "$")


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
    return ", ".join(names[:MAX_LISTED]) + more


@dataclass(frozen=True)
class WeightMap:
    """One source format's tensor names -> the graph's canonical tensors, plus what it may leave unused."""

    layer: dict[str, Rule]
    globals: dict[str, Rule]
    unused: tuple[str, ...] = ()  # source templates that carry nothing the model computes (e.g. rotary_emb.inv_freq)

    def resolve(self, c: ModelConfig) -> dict[str, Rule]:
        """canonical name ("layers.3.q", "embed") -> its rule with the layer filled in, for every tensor c needs."""
        out = {g: self.globals[g] for g in c.global_tensors()}
        for i in range(c.n_layers):
            for k in c.layer_tensors():
                r = self.layer[k]
                out[f"layers.{i}.{k}"] = Rule(r.source.format(i=i), r.transform)
        return out

    def check(self, names: set[str], c: ModelConfig, where: str) -> None:
        """Completeness both ways: MissingTensor or UnusedTensor naming every offender."""
        wanted = self.resolve(c)
        missing = sorted(f"{k} ({r.source})" for k, r in wanted.items() if r.source not in names)
        if missing:
            raise MissingTensor(
                f"{where}: the {c.arch} graph needs tensors the source lacks: {_listed(missing)}; the checkpoint is incomplete"
            )
        allowed = [_template_regex(t) for t in self.unused]
        if c.tie_embeddings and "lm_head" in self.globals:  # transformers ties over a stored head too
            allowed.append(_template_regex(self.globals["lm_head"].source))
        used = {r.source for r in wanted.values()}
        extra = sorted(n for n in names - used if not any(p.match(n) for p in allowed))
        if extra:
            raise UnusedTensor(
                f"{where}: source tensors the {c.arch} config does not use: {_listed(extra)}; a config field that would "
                "use them (bias, q/k norm, ...) is missing or unsupported, so converting would silently drop them"
            )

    def pack_hf(self, tensors: dict[str, np.ndarray], c: ModelConfig) -> dict[str, np.ndarray]:
        """canonical tensors -> this format's names (the inverse of resolve + transforms; split rules re-packed)."""
        out: dict[str, np.ndarray] = {}
        groups: dict[str, dict[str, np.ndarray]] = {}
        for k, r in self.resolve(c).items():
            if r.transform == "copy":
                out[r.source] = tensors[k]
            else:
                groups.setdefault(r.source, {})[r.transform] = tensors[k]
        for name, parts in groups.items():
            order = next(p for p in PACKS.values() if set(p) == set(parts))
            out[name] = concat_rows([parts[t] for t in order])
        return out


@dataclass(frozen=True)
class Refusal:
    """A config field the graph does not implement: `ok(value)` or UnsupportedArchitecture naming it."""

    field: str
    ok: Callable[[Any], bool]
    why: str  # what the value means, e.g. "a non-SiLU activation"


def rope_type(hf: Any) -> str:
    rs = getattr(hf, "rope_scaling", None) or {}
    return rs.get("rope_type") or rs.get("type") or "default"


COMMON_REFUSALS = (
    Refusal("hidden_act", lambda v: v in (None, "silu", "swish"), "an activation other than SiLU (SwiGLU MLP)"),
    Refusal("partial_rotary_factor", lambda v: v in (None, 1, 1.0), "partial rotary embeddings"),
    Refusal("final_logit_softcapping", lambda v: v is None, "logit soft-capping"),
    Refusal("attn_logit_softcapping", lambda v: v is None, "attention logit soft-capping"),
    Refusal("pretraining_tp", lambda v: v in (None, 1), "tensor-parallel sliced projections"),
)


@dataclass(frozen=True)
class Architecture:
    """A registered family. Subclasses override the hooks where the family differs from Llama."""

    name: str  # family name (== its GGUF architecture name where GGUF carries it)
    hf_architectures: tuple[str, ...]
    model_type: str  # transformers model_type
    model_class: str  # transformers class, e.g. "LlamaForCausalLM"
    config_class: str  # transformers config class, e.g. "LlamaConfig"
    weights: dict[str, WeightMap]  # "hf" | "gguf" | "llama2c" -> its map
    gguf_architecture: str | None = None
    refusals: tuple[Refusal, ...] = COMMON_REFUSALS
    rope_types: tuple[str, ...] = ROPE_TYPES
    gguf_keys: dict[str, str] = field(default_factory=dict)  # extra "{arch}.key" -> config field

    # ---------------------------------------------------------------- config

    def model_config(self, hf: Any) -> ModelConfig:
        self.refuse(hf)
        return ModelConfig(
            arch=self.name,
            vocab_size=hf.vocab_size,
            dim=hf.hidden_size,
            hidden_dim=hf.intermediate_size,
            n_layers=hf.num_hidden_layers,
            n_heads=hf.num_attention_heads,
            n_kv_heads=getattr(hf, "num_key_value_heads", None) or hf.num_attention_heads,
            head_dim=getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads,
            rope_theta=float(hf.rope_theta),
            rope_scaling=getattr(hf, "rope_scaling", None),
            rms_eps=float(hf.rms_norm_eps),
            tie_embeddings=bool(hf.tie_word_embeddings),
            max_seq_len=self.context_length(hf),
            **self.features(hf),
        )

    def refuse(self, hf: Any) -> None:
        where = f"{self.model_class} config"
        for r in self.refusals:
            v = getattr(hf, r.field, None)
            if not r.ok(v):
                raise UnsupportedArchitecture(
                    f"{where}: {r.field}={v!r} ({r.why}) is not implemented by webllama; this model cannot be converted exactly"
                )
        if rope_type(hf) not in self.rope_types:
            raise UnsupportedArchitecture(
                f"{where}: rope_scaling type {rope_type(hf)!r} is not implemented for {self.name} "
                f"(supported: {', '.join(self.rope_types)})"
            )

    def features(self, hf: Any) -> dict:
        """Hook: the ModelConfig fields where the family differs from plain Llama (biases, norms, window)."""
        return {}

    def context_length(self, hf: Any) -> int:
        return int(hf.max_position_embeddings)

    # ---------------------------------------------------------------- transformers classes

    def transformers_class(self) -> type:
        import transformers

        return getattr(transformers, self.model_class)

    def hf_config(self, **kw: Any) -> Any:
        """A transformers config of this family (for sources that carry none: GGUF, llama2.c)."""
        import transformers

        return getattr(transformers, self.config_class)(**kw, architectures=[self.hf_architectures[0]])

    def weight_map(self, fmt: str, where: str) -> WeightMap:
        if fmt not in self.weights:
            known = ", ".join(self.weights)
            raise UnsupportedArchitecture(f"{where}: {self.name} models cannot be read from {fmt} (formats: {known})")
        return self.weights[fmt]

    # ---------------------------------------------------------------- GGUF

    def gguf_config(self, fields: dict[str, Any], tensors: set[str], where: str) -> dict:
        """transformers config kwargs from GGUF metadata ("{arch}.key" fields) and tensor names."""
        from webllama.converter.archs.gguf_keys import common_gguf_config

        kw = common_gguf_config(self.gguf_architecture, fields, tensors, where, self.gguf_keys)
        return kw | self.gguf_features(fields, tensors)

    def gguf_features(self, fields: dict[str, Any], tensors: set[str]) -> dict:
        """Hook: config kwargs only the tensors reveal (e.g. attention_bias from attn_q.bias)."""
        return {}


def window(hf: Any, size: int | None) -> int | None:
    """A sliding window that can bind (shorter than the context), else None: full causal attention."""
    if size is None or int(size) >= int(hf.max_position_embeddings):
        return None
    return int(size)


def uniform_window(hf: Any, where: str) -> int | None:
    """Qwen2/Qwen3 `layer_types`: all full (None), all sliding (the window), or refused when mixed."""
    kinds = set(getattr(hf, "layer_types", None) or ["full_attention"])
    if kinds == {"full_attention"}:
        return None
    if kinds == {"sliding_attention"}:
        return window(hf, hf.sliding_window)
    raise UnsupportedArchitecture(
        f"{where}: layer_types mixes full and sliding-window attention (use_sliding_window with max_window_layers="
        f"{getattr(hf, 'max_window_layers', None)}); per-layer windows are not implemented"
    )
