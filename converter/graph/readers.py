"""Streaming tensor readers for the fused builder: one tensor at a time, never the whole model.

Every reader maps its format onto one canonical vocabulary (the Hugging Face Llama names) through a
declarative table, and hands out float32 numpy arrays in torch nn.Linear layout (out, in):
- HF safetensors directories: memory-mapped with safetensors.safe_open, cast per tensor;
- GGUF: gguf.GGUFReader (memory-mapped), dequantized per tensor; llama.cpp's interleaved q/k row
  order is undone here (`permute_rope`), as transformers' GGUF loader does;
- llama2.c: np.memmap over the fixed tensor order of its header version;
- a LoadedSource: its torch state dict (small models and tests only; already in memory).
`raw(name)` exposes a GGUF tensor's quantized blocks so Q4_0 can be transcoded without requantizing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from webllama.converter.errors import BadFormat, MissingTensor, UnsupportedArchitecture
from webllama.converter.sources.base import check_finite
from webllama.converter.sources.llama2c import permute_rope

# canonical per-layer tensor -> HF template ({i} = layer index)
LAYER_TENSORS: dict[str, str] = {
    "attn_norm": "model.layers.{i}.input_layernorm.weight",  # (dim,)
    "q": "model.layers.{i}.self_attn.q_proj.weight",  # (n_heads*head_dim, dim)
    "k": "model.layers.{i}.self_attn.k_proj.weight",  # (n_kv_heads*head_dim, dim)
    "v": "model.layers.{i}.self_attn.v_proj.weight",  # (n_kv_heads*head_dim, dim)
    "o": "model.layers.{i}.self_attn.o_proj.weight",  # (dim, n_heads*head_dim)
    "mlp_norm": "model.layers.{i}.post_attention_layernorm.weight",  # (dim,)
    "gate": "model.layers.{i}.mlp.gate_proj.weight",  # (hidden, dim)
    "up": "model.layers.{i}.mlp.up_proj.weight",  # (hidden, dim)
    "down": "model.layers.{i}.mlp.down_proj.weight",  # (dim, hidden)
}
GLOBAL_TENSORS: dict[str, str] = {
    "embed": "model.embed_tokens.weight",  # (vocab, dim)
    "norm": "model.norm.weight",  # (dim,)
    "lm_head": "lm_head.weight",  # (vocab, dim); absent when tied
}
# HF name -> GGUF name (llama.cpp's tensor vocabulary)
GGUF_NAMES: dict[str, str] = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "model.layers.{i}.input_layernorm.weight": "blk.{i}.attn_norm.weight",
    "model.layers.{i}.self_attn.q_proj.weight": "blk.{i}.attn_q.weight",
    "model.layers.{i}.self_attn.k_proj.weight": "blk.{i}.attn_k.weight",
    "model.layers.{i}.self_attn.v_proj.weight": "blk.{i}.attn_v.weight",
    "model.layers.{i}.self_attn.o_proj.weight": "blk.{i}.attn_output.weight",
    "model.layers.{i}.post_attention_layernorm.weight": "blk.{i}.ffn_norm.weight",
    "model.layers.{i}.mlp.gate_proj.weight": "blk.{i}.ffn_gate.weight",
    "model.layers.{i}.mlp.up_proj.weight": "blk.{i}.ffn_up.weight",
    "model.layers.{i}.mlp.down_proj.weight": "blk.{i}.ffn_down.weight",
}


@dataclass(frozen=True)
class FusedConfig:
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
    max_seq_len: int

    @classmethod
    def from_hf(cls, c) -> FusedConfig:
        """From a transformers LlamaConfig."""
        return cls(
            vocab_size=c.vocab_size,
            dim=c.hidden_size,
            hidden_dim=c.intermediate_size,
            n_layers=c.num_hidden_layers,
            n_heads=c.num_attention_heads,
            n_kv_heads=c.num_key_value_heads,
            head_dim=getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
            rope_theta=float(c.rope_theta),
            rope_scaling=c.rope_scaling,
            rms_eps=float(c.rms_norm_eps),
            tie_embeddings=bool(c.tie_word_embeddings),
            max_seq_len=c.max_position_embeddings,
        )


class TensorReader:
    """Base: `get(hf_name)` -> float32 (out, in) array; `layer(i)` -> canonical dict for one layer."""

    hf_config = None  # transformers LlamaConfig

    @property
    def config(self) -> FusedConfig:
        return FusedConfig.from_hf(self.hf_config)

    def has(self, hf_name: str) -> bool:
        raise NotImplementedError

    def get(self, hf_name: str) -> np.ndarray:
        raise NotImplementedError

    def raw(self, hf_name: str):
        """(ggml type name, quantized bytes) for a GGUF tensor, else None."""
        return None

    def layer(self, i: int) -> dict[str, np.ndarray]:
        return {k: self.get(t.format(i=i)) for k, t in LAYER_TENSORS.items()}

    def layer_names(self, i: int) -> dict[str, str]:
        return {k: t.format(i=i) for k, t in LAYER_TENSORS.items()}

    def _missing(self, name: str, where: str):
        return MissingTensor(f"{name} not found in {where}; the checkpoint is incomplete or not a Llama model")


class SafetensorsReader(TensorReader):
    """A Hugging Face directory: config.json + *.safetensors (sharded or not).

    Each tensor is read through its own short-lived memory map: pages of a mapping that stays open
    count as resident memory once touched, so keeping the shards mapped would make the process look
    as large as the checkpoint.
    """

    def __init__(self, folder: Path) -> None:
        from safetensors import safe_open
        from transformers import AutoConfig

        self.folder = folder
        self.hf_config = AutoConfig.from_pretrained(folder)
        self._where: dict[str, Path] = {}
        for f in sorted(folder.glob("*.safetensors")):
            with safe_open(str(f), framework="pt") as handle:
                self._where.update({k: f for k in handle.keys()})
        if not self._where:
            raise self._missing("*.safetensors", str(folder))

    def has(self, hf_name: str) -> bool:
        return hf_name in self._where

    def get(self, hf_name: str) -> np.ndarray:
        import torch
        from safetensors import safe_open

        if hf_name not in self._where:
            raise self._missing(hf_name, str(self.folder))
        with safe_open(str(self._where[hf_name]), framework="pt") as handle:
            t = handle.get_tensor(hf_name)
        check_finite(hf_name, t, str(self._where[hf_name]))
        return t.to(torch.float32).numpy()


class GGUFTensorReader(TensorReader):
    """A llama GGUF file (memory-mapped by gguf.GGUFReader), tensors dequantized one at a time."""

    def __init__(self, file: Path) -> None:
        from gguf import GGUFReader

        self.file = file
        self._reader = GGUFReader(file)
        self._tensors = {t.name: t for t in self._reader.tensors}
        self.hf_config = gguf_llama_config(self._reader, file)
        self._gguf_of = {}
        for hf, gg in GGUF_NAMES.items():
            if "{i}" in hf:
                for i in range(self.hf_config.num_hidden_layers):
                    self._gguf_of[hf.format(i=i)] = gg.format(i=i)
            else:
                self._gguf_of[hf] = gg

    def has(self, hf_name: str) -> bool:
        return self._gguf_of.get(hf_name) in self._tensors

    def _tensor(self, hf_name: str):
        t = self._tensors.get(self._gguf_of.get(hf_name, hf_name))
        if t is None:
            raise self._missing(f"{hf_name} (GGUF {self._gguf_of.get(hf_name)!r})", str(self.file))
        return t

    def get(self, hf_name: str) -> np.ndarray:
        from gguf import dequantize

        t = self._tensor(hf_name)
        w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        check_finite(f"{hf_name} (GGUF {t.name!r})", w, str(self.file))
        return self._unpermute(hf_name, w)

    def _unpermute(self, hf_name: str, w: np.ndarray) -> np.ndarray:
        """llama.cpp stores q/k rows in the interleaved RoPE order; transformers rotates halves."""
        c = self.hf_config
        if hf_name.endswith("self_attn.q_proj.weight"):
            return permute_rope(w, c.num_attention_heads)
        if hf_name.endswith("self_attn.k_proj.weight"):
            return permute_rope(w, c.num_key_value_heads)
        return w

    def raw(self, hf_name: str):
        t = self._tensor(hf_name)
        return t.tensor_type.name, np.asarray(t.data)


# GGUF metadata key (after "llama.") -> LlamaConfig field, as transformers' GGUF config mapping
GGUF_CONFIG: dict[str, str] = {
    "context_length": "max_position_embeddings",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "embedding_length": "hidden_size",
    "rope.dimension_count": "head_dim",
    "rope.freq_base": "rope_theta",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "vocab_size": "vocab_size",
}


def gguf_llama_config(reader, file: Path):
    """A LlamaConfig from the GGUF header alone (transformers' AutoConfig re-parses the whole file)."""
    from transformers import LlamaConfig

    def field(key):
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    arch = field("general.architecture")
    if arch != "llama":
        raise UnsupportedArchitecture(f"{file}: GGUF architecture {arch!r} is not supported; webllama converts llama")
    kw = {hf: field(f"llama.{k}") for k, hf in GGUF_CONFIG.items() if field(f"llama.{k}") is not None}
    names = {t.name for t in reader.tensors}
    if "vocab_size" not in kw:
        embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
        kw["vocab_size"] = int(embd.shape[1])
    kind, factor = field("llama.rope.scaling.type"), field("llama.rope.scaling.factor")
    if kind == "linear" and factor:
        kw["rope_scaling"] = {"rope_type": "linear", "factor": float(factor)}
    elif kind not in (None, "none"):
        raise UnsupportedArchitecture(
            f"{file}: GGUF rope scaling {kind!r} is not supported by --graph fused; convert with --graph optimum"
        )
    if "rope_freqs.weight" in names:
        raise UnsupportedArchitecture(
            f"{file}: GGUF rope_freqs (llama3 scaling) is not supported by --graph fused; convert with --graph optimum"
        )
    return LlamaConfig(**kw, tie_word_embeddings="output.weight" not in names, architectures=["LlamaForCausalLM"])


class Llama2cReader(TensorReader):
    """A llama2.c checkpoint through np.memmap: tensors are views of the file, transformed on access."""

    def __init__(self, ckpt: Path, hf_config, header) -> None:
        from webllama.converter.sources.llama2c import WEIGHT_MAP, _tensor_shapes

        self.hf_config = hf_config
        self.header = header
        self._arrays: dict[str, np.ndarray] = {}
        offset = header.data_offset
        for name, shape in _tensor_shapes(header):
            self._arrays[name] = np.memmap(ckpt, dtype="<f4", mode="r", offset=offset, shape=shape)
            offset += int(np.prod(shape)) * 4
        self._map: dict[str, tuple[str, str, int | None]] = {}
        for template, (src, how) in WEIGHT_MAP.items():
            if how == "copy":
                self._map[template] = (src, how, None)
            else:
                for i in range(header.n_layers):
                    self._map[template.format(i=i)] = (src, how, i)
        if not header.shared_classifier:
            self._map["lm_head.weight"] = ("output", "copy", None)

    def has(self, hf_name: str) -> bool:
        return hf_name in self._map

    def get(self, hf_name: str) -> np.ndarray:
        if hf_name not in self._map:
            raise self._missing(hf_name, "the llama2.c checkpoint")
        src, how, i = self._map[hf_name]
        w = np.array(self._arrays[src] if i is None else self._arrays[src][i], dtype=np.float32)
        if not np.isfinite(w).all():
            raise BadFormat(f"{hf_name}: the llama2.c checkpoint holds NaN or Inf; it is corrupt")
        if how == "layer_rope_q":
            w = permute_rope(w, self.header.n_heads)
        elif how == "layer_rope_k":
            w = permute_rope(w, self.header.n_kv_heads)
        return np.ascontiguousarray(w)


class StateDictReader(TensorReader):
    """A LoadedSource's torch model (already in memory): for small models and tests."""

    def __init__(self, model) -> None:
        self.hf_config = model.config
        self._sd = model.state_dict()

    def has(self, hf_name: str) -> bool:
        return hf_name in self._sd and not (hf_name == "lm_head.weight" and self.hf_config.tie_word_embeddings)

    def get(self, hf_name: str) -> np.ndarray:
        import torch

        if hf_name not in self._sd:
            raise self._missing(hf_name, "the loaded model")
        return self._sd[hf_name].detach().to(torch.float32).numpy().copy()
