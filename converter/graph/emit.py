"""The fused exporter: the Llama graph written directly from the weights, one layer at a time.

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

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
from onnx import TensorProto
from webllama.converter.bundle import variant_entry
from webllama.converter.graph import ops
from webllama.converter.graph.builder import GraphBuilder, ShardWriter
from webllama.converter.graph.ops import AttnInputs, Precision
from webllama.converter.graph.quantize import NBits, q4_0_to_nbits
from webllama.converter.graph.readers import GLOBAL_TENSORS, FusedConfig, TensorReader
from webllama.converter.graph.rope import rope_caches
from webllama.converter.quant.int4 import QuantSpec
from webllama.converter.sources.llama2c import permute_rope
from webllama.converter.variants import Variant


def precision_for(variant: Variant, quant: QuantSpec) -> Precision:
    return Precision(
        dtype=np.float16 if variant.activation_dtype == "float16" else np.float32,
        int4=variant.int4,
        block_size=quant.block_size,
        symmetric=quant.symmetric,
        accuracy_level=quant.accuracy_level,
        lm_head_bits=quant.lm_head_bits,
        lm_head_block_size=quant.lm_head_block_size,
        lm_head_symmetric=quant.lm_head_symmetric,
        embedding_int4=quant.embedding,
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


def fetch_linear(reader: TensorReader, hf_name: str, p: Precision, rope_heads: int | None = None) -> np.ndarray | NBits:
    """A projection weight: GGUF Q4_0 transcoded exactly when the graph is symmetric int4 block 32,
    else float32 (out, in). rope_heads: the q/k row permutation to undo on transcoded rows."""
    raw = reader.raw(hf_name) if p.int4 and p.symmetric and p.block_size == 32 else None
    if raw is None or raw[0] != "Q4_0":
        return reader.get(hf_name)
    blocks = raw[1]
    n, k = blocks.shape[0], blocks.shape[1] // 18 * 32
    w = q4_0_to_nbits(blocks, n, k)
    if rope_heads:
        rows = permute_rope(np.arange(n, dtype=np.int64)[:, None], rope_heads)[:, 0]
        w = NBits(w.packed[rows], w.scales[rows], None, w.k, w.n, w.bits, w.block_size)
    return w


def fetch_qkv(reader: TensorReader, names: dict[str, str], p: Precision, cfg: FusedConfig):
    q = fetch_linear(reader, names["q"], p, cfg.n_heads)
    k = fetch_linear(reader, names["k"], p, cfg.n_kv_heads)
    v = fetch_linear(reader, names["v"], p)
    parts = [q, k, v]
    if not ops.rotary_inside_gqa(cfg.head_dim):
        return parts
    if any(isinstance(t, NBits) for t in parts):
        return ops.concat_nbits([t if isinstance(t, NBits) else ops.to_nbits(t, p, 4) for t in parts])
    return np.concatenate(parts, axis=0)  # (q_out + 2 * kv_out, dim)


def emit_layer(
    g: GraphBuilder, reader: TensorReader, cfg: FusedConfig, p: Precision, i: int, a: AttnInputs, x: str, residual: str | None
) -> tuple[str, str]:
    """One decoder layer; x is the previous layer's MLP output (or the embeddings for layer 0)."""
    name = f"/model/layers.{i}"
    names = reader.layer_names(i)
    if residual is None:
        residual, normed = x, ops.rms_norm(g, x, reader.get(names["attn_norm"]), cfg.rms_eps, p, f"{name}/input_layernorm")
    else:
        normed, residual = ops.skip_rms_norm(g, x, residual, reader.get(names["attn_norm"]), cfg.rms_eps, p, f"{name}/input_layernorm")
    w = fetch_qkv(reader, names, p, cfg)
    if isinstance(w, list):  # rotary outside GQA: separate projections
        qkv = tuple(ops.linear(g, normed, t, p, f"{name}/attn/{k}_proj") for t, k in zip(w, "qkv", strict=True))
    else:
        qkv = ops.linear(g, normed, w, p, f"{name}/attn/qkv_proj")
    past = (f"past_key_values.{i}.key", f"past_key_values.{i}.value")
    attn = ops.gqa_attention(g, qkv, past, (f"present.{i}.key", f"present.{i}.value"), a, cfg.n_heads, cfg.n_kv_heads, f"{name}/attn")
    o = ops.linear(g, attn, fetch_linear(reader, names["o"], p), p, f"{name}/attn/o_proj")
    normed, residual = ops.skip_rms_norm(
        g, o, residual, reader.get(names["mlp_norm"]), cfg.rms_eps, p, f"{name}/post_attention_layernorm"
    )
    mlp = {k: fetch_linear(reader, names[k], p) for k in ("gate", "up", "down")}
    return ops.swiglu_mlp(g, normed, mlp, p, f"{name}/mlp"), residual


def lm_head(g: GraphBuilder, reader: TensorReader, cfg: FusedConfig, p: Precision, x: str, embed_init: str | None) -> str:
    name = "/lm_head"
    if cfg.tie_embeddings and not p.int4 and embed_init:
        # Float graphs share the embedding table: MatMul(x, Transpose(table)), folded by onnxruntime at load.
        wt = g.op("Transpose", [embed_init], f"{name}/Transpose", perm=[1, 0])
        return g.op("MatMul", [x, wt], f"{name}/MatMul", output="logits")
    w = reader.get(GLOBAL_TENSORS["embed"] if cfg.tie_embeddings else GLOBAL_TENSORS["lm_head"])
    head_p = dataclasses.replace(p, block_size=p.lm_head_block_size, symmetric=p.lm_head_symmetric)
    return ops.linear(g, x, w, head_p, name, bits=p.lm_head_bits if p.int4 else 0, output="logits")


def build_graph(reader: TensorReader, p: Precision, path: Path, progress: Callable[[int], None] | None = None) -> GraphBuilder:
    """Write `path`'s weights to its shards while building the graph; call .save(path) on the result."""
    cfg = reader.config
    g = GraphBuilder(ShardWriter(path))
    declare_io(g, cfg, p)
    cos, sin = rope_caches(reader.hf_config)
    step = ops.step_inputs(g, "input_ids", "attention_mask", cos, sin, p, not ops.rotary_inside_gqa(cfg.head_dim))
    a = step.attn
    del cos, sin
    x = ops.embedding(g, reader.get(GLOBAL_TENSORS["embed"]), step.ids, p, "/model/embed_tokens")
    embed_init = "/model/embed_tokens.weight" if not p.int4 else None
    residual = None
    for i in range(cfg.n_layers):
        x, residual = emit_layer(g, reader, cfg, p, i, a, x, residual)  # the layer's arrays die here
        if progress:
            progress(i)
    normed, _ = ops.skip_rms_norm(g, x, residual, reader.get(GLOBAL_TENSORS["norm"]), cfg.rms_eps, p, "/model/norm")
    normed = ops.left_pad_unshift(g, normed, step)
    lm_head(g, reader, cfg, p, normed, embed_init)
    return g


def write_fused_variant(
    reader: TensorReader, root: Path, variant: Variant, quant: QuantSpec, progress: Callable[[int], None] | None = None
) -> dict:
    """The fused graph of one variant into root/onnx/; returns the manifest's variant entry."""
    onnx_dir = root / "onnx"
    onnx_dir.mkdir(exist_ok=True)
    path = onnx_dir / variant.onnx_name
    g = build_graph(reader, precision_for(variant, quant), path, progress)
    shards = g.save(path)
    return variant_entry(variant, shards, g.to_model(), "fused")
