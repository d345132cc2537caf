"""The fused exporter: the Llama graph written directly from the weights, one layer at a time; the other
families (converter/archs) add their biases, q/k norms and attention window (graph/family_ops.py).

Per layer: SkipSimplifiedLayerNormalization -> packed QKV MatMul(NBits) -> GroupQueryAttention
(rotary inside, KV cache in/out) -> o_proj -> SkipSimplifiedLayerNormalization -> SwiGLU MLP:
11 nodes, where optimum's export has hundreds. Graph inputs and outputs are the optimum export's
(input_ids, attention_mask, position_ids, past_key_values.*, logits, present.*), so OrtModel, the
web engine and the eval suite run either graph unchanged. position_ids is accepted and unused: the
rotary positions come from the attention mask (transformers' cumsum convention), see
ops.step_inputs.

Memory: each layer's tensors are read, quantized, appended to the shards and dropped before the next
layer is read; the builder keeps only node protos. Peak memory is about one layer plus the embedding.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from onnx import TensorProto
from webllama.converter.bundle import variant_entry
from webllama.converter.graph import family_ops, ops
from webllama.converter.graph.builder import GraphBuilder, ShardWriter
from webllama.converter.graph.ops import AttnInputs, Precision
from webllama.converter.graph.quantize import NBits
from webllama.converter.graph.readers import GLOBAL_TENSORS, FusedConfig, TensorReader
from webllama.converter.graph.rope import rope_caches
from webllama.converter.quant.calibrate import QuantStore
from webllama.converter.quant.policy import QuantSpec
from webllama.converter.variants import Variant


def precision_for(variant: Variant, quant: QuantSpec) -> Precision:
    return Precision(
        dtype=np.float16 if variant.activation_dtype == "float16" else np.float32,
        int4=variant.int4,
        accuracy_level=quant.accuracy_level,
    )


def declare_io(g: GraphBuilder, cfg: FusedConfig, p: Precision) -> None:
    """The optimum export's inputs and outputs, same names, dtypes and dimension names."""
    i64, kv = TensorProto.INT64, p.onnx_type
    g.input("input_ids", i64, ["batch_size", "sequence_length"])
    g.input("attention_mask", i64, ["batch_size", "past_sequence_length + sequence_length"])
    g.input("position_ids", i64, ["batch_size", "sequence_length"])
    for i in range(cfg.n_layers):
        for kind in ("key", "value"):
            g.input(f"past_key_values.{i}.{kind}", kv, ["batch_size", cfg.n_kv_heads, "past_sequence_length", cfg.head_dim])
    g.output("logits", kv, ["batch_size", "sequence_length", cfg.vocab_size])
    for i in range(cfg.n_layers):
        for kind in ("key", "value"):
            g.output(f"present.{i}.{kind}", kv, ["batch_size", cfg.n_kv_heads, "past_sequence_length + sequence_length", cfg.head_dim])


def fetch_linear(reader: TensorReader, hf_name: str, p: Precision, store: QuantStore | None) -> np.ndarray | NBits:
    """A projection weight: the quantization pass's NBits in int4 graphs (when the recipe quantizes it), else
    the float (out, in) weight."""
    w = store.get(hf_name) if (p.int4 and store is not None) else None
    return w if w is not None else reader.get(hf_name)


def _same_grid(parts: list) -> bool:
    return all(isinstance(t, NBits) for t in parts) and len({(t.bits, t.block_size, t.zero_points is None) for t in parts}) == 1


def fetch_qkv(reader: TensorReader, names: dict[str, str], p: Precision, cfg: FusedConfig, store: QuantStore | None):
    """Packed QKV (one MatMul(NBits)) where GroupQueryAttention rotates and all three share a storage grid,
    else the three projections (a mixed recipe, or rotary outside GQA)."""
    parts = [fetch_linear(reader, names[k], p, store) for k in ("q", "k", "v")]
    if family_ops.rotary_outside(cfg, ops.rotary_inside_gqa(cfg.head_dim)):
        return parts
    if _same_grid(parts):
        return ops.concat_nbits(parts)
    if all(isinstance(t, np.ndarray) for t in parts):
        return np.concatenate(parts, axis=0)  # (q_out + 2 * kv_out, dim)
    return parts


def attention_inputs(
    g: GraphBuilder, reader: TensorReader, names: dict, cfg: FusedConfig, p: Precision, x: str, w, bias: dict, name: str
) -> str | tuple[str, str, str]:
    """q/k/v for GroupQueryAttention: one packed projection (+ its packed bias), or three, each with its bias
    and, for q and k, the family's per-head RMSNorm (Qwen3) before the rotary."""
    if not isinstance(w, list):
        packed = np.concatenate([bias[k] for k in ("q_bias", "k_bias", "v_bias")]) if cfg.qkv_bias else None
        return family_ops.add_bias(g, ops.linear(g, x, w, p, f"{name}/qkv_proj"), packed, p.dtype, f"{name}/qkv_proj")
    q, k, v = (
        family_ops.add_bias(g, ops.linear(g, x, t, p, f"{name}/{n}_proj"), bias.get(f"{n}_bias"), p.dtype, f"{name}/{n}_proj")
        for t, n in zip(w, "qkv", strict=True)
    )
    if cfg.qk_norm:
        q = family_ops.head_rms_norm(g, q, reader.get(names["q_norm"]), cfg.n_heads, cfg, p.dtype, f"{name}/q_norm")
        k = family_ops.head_rms_norm(g, k, reader.get(names["k_norm"]), cfg.n_kv_heads, cfg, p.dtype, f"{name}/k_norm")
    if not family_ops.rotary_outside(cfg, ops.rotary_inside_gqa(cfg.head_dim)):
        # GroupQueryAttention rotates a packed QKV: a mixed recipe's three projections (different grids cannot share
        # one MatMulNBits) are joined after their MatMuls
        return g.op("Concat", [q, k, v], f"{name}/qkv_concat/Concat", axis=-1)
    return q, k, v


def emit_layer(
    g: GraphBuilder,
    reader: TensorReader,
    cfg: FusedConfig,
    p: Precision,
    i: int,
    a: AttnInputs,
    x: str,
    residual: str | None,
    store: QuantStore | None = None,
) -> tuple[str, str]:
    """One decoder layer; x is the previous layer's MLP output (or the embeddings for layer 0)."""
    name = f"/model/layers.{i}"
    names = reader.layer_names(i)
    if residual is None:
        residual, normed = x, ops.rms_norm(g, x, reader.get(names["attn_norm"]), cfg.rms_eps, p, f"{name}/input_layernorm")
    else:
        normed, residual = ops.skip_rms_norm(g, x, residual, reader.get(names["attn_norm"]), cfg.rms_eps, p, f"{name}/input_layernorm")
    bias = {k: reader.get(names[k]) for k in names if k.endswith("_bias")}  # the family's (archs/*, family_ops.py)
    qkv = attention_inputs(g, reader, names, cfg, p, normed, fetch_qkv(reader, names, p, cfg, store), bias, f"{name}/attn")
    past = (f"past_key_values.{i}.key", f"past_key_values.{i}.value")
    present = (f"present.{i}.key", f"present.{i}.value")
    attn = ops.gqa_attention(g, qkv, past, present, a, cfg.n_heads, cfg.n_kv_heads, f"{name}/attn", family_ops.window(cfg))
    o = ops.linear(g, attn, fetch_linear(reader, names["o"], p, store), p, f"{name}/attn/o_proj")
    o = family_ops.add_bias(g, o, bias.get("o_bias"), p.dtype, f"{name}/attn/o_proj")
    normed, residual = ops.skip_rms_norm(
        g, o, residual, reader.get(names["mlp_norm"]), cfg.rms_eps, p, f"{name}/post_attention_layernorm"
    )
    mlp = {k: fetch_linear(reader, names[k], p, store) for k in ("gate", "up", "down")}
    mlp |= {k: bias[k] for k in ("gate_bias", "up_bias", "down_bias") if k in bias}
    return ops.swiglu_mlp(g, normed, mlp, p, f"{name}/mlp"), residual


HEAD_NODE = "/lm_head"


def embedding(g: GraphBuilder, reader: TensorReader, cfg: FusedConfig, p: Precision, ids: str, store: QuantStore | None) -> str:
    """The token lookup: float Gather, its own GatherBlockQuantized table, or (tied, stored once) the head's bytes."""
    name = "/model/embed_tokens"
    if p.int4 and store is not None:
        own = store.get(GLOBAL_TENSORS["embed"])
        if own is not None:
            return ops.embedding_nbits(g, own, ids, p, name)
        head = store.get(GLOBAL_TENSORS["lm_head"]) if cfg.tie_embeddings else None
        if head is not None and store.embedding_shares_head:
            ops.write_nbits(g, head, p, HEAD_NODE)  # written here, read by the head's MatMulNBits at the end
            return ops.embedding_nbits(g, head, ids, p, name, shared_with=HEAD_NODE)
    return ops.embedding(g, reader.get(GLOBAL_TENSORS["embed"]), ids, p, name)


def lm_head(g: GraphBuilder, reader: TensorReader, cfg: FusedConfig, p: Precision, x: str, store: QuantStore | None) -> str:
    w = store.get(GLOBAL_TENSORS["lm_head"]) if (p.int4 and store is not None) else None
    if w is not None:
        return ops.matmul_nbits(g, x, w, p, HEAD_NODE, output="logits", written=f"{HEAD_NODE}.weight_Q4" in g.defined)
    if cfg.tie_embeddings and "/model/embed_tokens.weight" in g.defined:
        # Float graphs share the embedding table: MatMul(x, Transpose(table)), folded by onnxruntime at load.
        wt = g.op("Transpose", ["/model/embed_tokens.weight"], f"{HEAD_NODE}/Transpose", perm=[1, 0])
        return g.op("MatMul", [x, wt], f"{HEAD_NODE}/MatMul", output="logits")
    w = reader.get(GLOBAL_TENSORS["embed"] if cfg.tie_embeddings else GLOBAL_TENSORS["lm_head"])
    return ops.linear(g, x, w, p, HEAD_NODE, output="logits")


def build_graph(
    reader: TensorReader, p: Precision, path: Path, progress: Callable[[int], None] | None = None, store: QuantStore | None = None
) -> GraphBuilder:
    """Write `path`'s weights to its shards while building the graph; call .save(path) on the result."""
    cfg = reader.config
    g = GraphBuilder(ShardWriter(path))
    declare_io(g, cfg, p)
    cos, sin = rope_caches(reader.hf_config)
    outside = family_ops.rotary_outside(cfg, ops.rotary_inside_gqa(cfg.head_dim))
    step = ops.step_inputs(g, "input_ids", "attention_mask", cos, sin, p, outside)
    a = step.attn
    del cos, sin
    x = embedding(g, reader, cfg, p, step.ids, store)
    residual = None
    for i in range(cfg.n_layers):
        x, residual = emit_layer(g, reader, cfg, p, i, a, x, residual, store)  # the layer's arrays die here
        if progress:
            progress(i)
    normed, _ = ops.skip_rms_norm(g, x, residual, reader.get(GLOBAL_TENSORS["norm"]), cfg.rms_eps, p, "/model/norm")
    normed = ops.left_pad_unshift(g, normed, step)
    lm_head(g, reader, cfg, p, normed, store)
    return g


def write_fused_variant(
    reader: TensorReader,
    root: Path,
    variant: Variant,
    quant: QuantSpec,
    progress: Callable[[int], None] | None = None,
    store: QuantStore | None = None,
) -> dict:
    """The fused graph of one variant into root/onnx/; returns the manifest's variant entry."""
    onnx_dir = root / "onnx"
    onnx_dir.mkdir(exist_ok=True)
    path = onnx_dir / variant.onnx_name
    g = build_graph(reader, precision_for(variant, quant), path, progress, store)
    shards = g.save(path)
    return variant_entry(variant, shards, g.to_model(), "fused")
