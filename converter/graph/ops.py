"""Op helpers of the fused graph: each takes input names (and weights), returns output names.

Node names are hierarchical (`/model/layers.3/attn/GroupQueryAttention`) and every weight is named
after the node that reads it. Weights are float (out, in) numpy arrays as torch stores them (a float MatMul), or a
ready `NBits` from the quantization pass (MatMulNBits): the op helpers never quantize.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto
from webllama.converter.graph.builder import MS_DOMAIN, GraphBuilder
from webllama.converter.graph.quantize import NBits, scales_as_float16


@dataclass(frozen=True)
class Precision:
    """What the graph computes in; which weights are int4 and how is the quantization pass's business
    (converter/quant/calibrate.py: weights arrive here float or as ready NBits)."""

    dtype: type  # np.float32 | np.float16: activations, float weights, scales, KV cache
    int4: bool  # an int4 variant: NBits weights become MatMulNBits, the embedding may be GatherBlockQuantized
    accuracy_level: int | None = None

    @property
    def onnx_type(self) -> int:
        return TensorProto.FLOAT16 if self.dtype == np.float16 else TensorProto.FLOAT


# ---------------------------------------------------------------- weights -> MatMul / MatMulNBits


def concat_nbits(parts: list[NBits]) -> NBits:
    """Stack MatMulNBits weights along N (q|k|v): block quantization is per output column, so exact."""
    zps = [q.zero_points for q in parts]
    return NBits(
        np.concatenate([q.packed for q in parts]),
        np.concatenate([q.scales for q in parts]),
        None if zps[0] is None else np.concatenate(zps),
        parts[0].k,
        sum(q.n for q in parts),
        parts[0].bits,
        parts[0].block_size,
    )


def write_scales(g: GraphBuilder, scales: np.ndarray, p: Precision, name: str) -> str:
    """The tensor `{name}.scales` in the graph's type: in a float32 graph a Cast of the stored float16 scales
    (`{name}.scales_f16`, converter/graph/quantize.py: why), folded by onnxruntime at load."""
    half = scales_as_float16(scales) if p.dtype == np.float32 else None
    if half is None:
        return g.initializer(f"{name}.scales", scales.astype(p.dtype))
    stored = g.initializer(f"{name}.scales_f16", half)
    return g.op("Cast", [stored], f"{name}.scales/Cast", to=TensorProto.FLOAT, output=f"{name}.scales")


def write_nbits(g: GraphBuilder, w: NBits, p: Precision, name: str) -> tuple[str, ...]:
    """MatMulNBits' weight inputs of node `name`: B, scales[, zero points]."""
    inputs = [g.initializer(f"{name}.weight_Q{w.bits}", w.packed), write_scales(g, w.scales, p, name)]
    if w.zero_points is not None:
        inputs.append(g.initializer(f"{name}.zero_points", w.zero_points))
    return tuple(inputs)


def matmul_nbits(g: GraphBuilder, x: str, w: NBits, p: Precision, name: str, output: str | None = None, written: bool = False) -> str:
    """written: the weights were already added by `write_nbits(g, w, p, name)` (a tied table shares them)."""
    if written:
        weights = [f"{name}.weight_Q{w.bits}", f"{name}.scales"] + ([f"{name}.zero_points"] if w.zero_points is not None else [])
    else:
        weights = list(write_nbits(g, w, p, name))
    return g.op(
        "MatMulNBits",
        [x, *weights],
        f"{name}/MatMulNBits",
        MS_DOMAIN,
        K=w.k,
        N=w.n,
        bits=w.bits,
        block_size=w.block_size,
        accuracy_level=p.accuracy_level or None,
        output=output,
    )


def linear(g: GraphBuilder, x: str, w: np.ndarray | NBits, p: Precision, name: str, output: str | None = None) -> str:
    """x @ W^T: MatMulNBits for a quantized weight, a float MatMul for a float (out, in) one. Never quantizes."""
    if isinstance(w, NBits):
        return matmul_nbits(g, x, w, p, name, output)
    wt = g.initializer(f"{name}.weight", np.ascontiguousarray(w.T.astype(p.dtype)))  # (in, out)
    return g.op("MatMul", [x, wt], f"{name}/MatMul", output=output)


# ---------------------------------------------------------------- blocks


def embedding(g: GraphBuilder, table: np.ndarray, ids: str, p: Precision, name: str) -> str:
    """A float (vocab, dim) table: Gather."""
    return g.op("Gather", [g.initializer(f"{name}.weight", table.astype(p.dtype)), ids], f"{name}/Gather", axis=0)


def embedding_nbits(g: GraphBuilder, w: NBits, ids: str, p: Precision, name: str, shared_with: str | None = None) -> str:
    """A quantized (vocab, dim) table: GatherBlockQuantized over uint4 codes (vocab, dim) blocked along dim.

    MatMulNBits' packed B of the tied output projection holds the same codes in the same order (row n, two per
    byte, low nibble first) whenever dim is a whole number of blocks, so with `shared_with` (the head's node name,
    whose weights were written as `{shared_with}.weight_Q4` / `.scales` / `.zero_points`) the lookup reads those
    bytes: the tied matrix is stored once. Symmetric codes get an explicit zero point of 8 (MatMulNBits' default).
    """
    n, nb = w.scales.shape
    if w.bits != 4 or w.k != nb * w.block_size:
        raise ValueError(f"{name}: GatherBlockQuantized needs 4-bit codes over whole blocks (bits={w.bits}, K={w.k})")
    shape, zp_shape = [n, w.k], [n, nb]
    if shared_with is None:
        data = g.initializer(f"{name}.weight_Q4", w.packed, dtype=TensorProto.UINT4, shape=shape)
        scales = write_scales(g, w.scales, p, name)
    else:
        data = g.alias(f"{name}.weight_Q4", f"{shared_with}.weight_Q4", TensorProto.UINT4, shape)
        scales = f"{shared_with}.scales"
    if w.zero_points is not None and shared_with is not None and nb % 2 == 0:
        zp = g.alias(f"{name}.zero_points", f"{shared_with}.zero_points", TensorProto.UINT4, zp_shape)
    else:  # odd n_blocks: MatMulNBits pads each row's zero points, ONNX uint4 does not; re-pack (small)
        z = np.full((n, nb), 8, np.uint8) if w.zero_points is None else unpack_zero_points(w.zero_points, nb)
        flat = z.reshape(-1)
        flat = np.append(flat, np.uint8(0)) if flat.size % 2 else flat
        zp = g.initializer(f"{name}.zero_points", flat[0::2] | (flat[1::2] << 4), dtype=TensorProto.UINT4, shape=zp_shape)
    return g.op(
        "GatherBlockQuantized",
        [data, ids, scales, zp],
        f"{name}/GatherBlockQuantized",
        MS_DOMAIN,
        gather_axis=0,
        quantize_axis=1,
        block_size=w.block_size,
        bits=4,
    )


def unpack_zero_points(zp: np.ndarray, nb: int) -> np.ndarray:
    """MatMulNBits' packed 4-bit zero points (N, ceil(nb/2)) -> (N, nb) values."""
    return np.stack([zp & 0x0F, zp >> 4], axis=-1).reshape(zp.shape[0], -1)[:, :nb].astype(np.uint8)


def rms_norm(g: GraphBuilder, x: str, weight: np.ndarray, eps: float, p: Precision, name: str) -> str:
    w = g.initializer(f"{name}.weight", weight.astype(p.dtype))
    return g.op("SimplifiedLayerNormalization", [x, w], f"{name}/SimplifiedLayerNormalization", axis=-1, epsilon=eps, stash_type=1)


def skip_rms_norm(g: GraphBuilder, x: str, skip: str, weight: np.ndarray, eps: float, p: Precision, name: str) -> tuple[str, str]:
    """RMSNorm(x + skip): returns (normalized, x + skip) (the new residual stream)."""
    w = g.initializer(f"{name}.weight", weight.astype(p.dtype))
    node = f"{name}/SkipSimplifiedLayerNormalization"
    out, _, _, total = g.node(
        "SkipSimplifiedLayerNormalization",
        [x, skip, w],
        [f"{node}/output_0", "", "", f"{node}/output_3"],
        node,
        MS_DOMAIN,
        epsilon=eps,
    )
    return out, total


@dataclass(frozen=True)
class AttnInputs:
    """Per-step tensors every layer's attention shares (computed once from attention_mask)."""

    seqlens_k: str  # (batch,) int32: real tokens per row - 1
    total_len: str  # () int32: past + current length
    cos: str  # (max_seq_len, head_dim/2)
    sin: str
    positions: str | None = None  # (batch, seq) int64, only where rotary runs outside GQA


def rotary_inside_gqa(head_dim: int) -> bool:
    """onnxruntime's GroupQueryAttention rotates only heads of a multiple of 16 (stories260K has 8)."""
    return head_dim % 16 == 0


def gqa_attention(
    g: GraphBuilder,
    qkv: str | tuple[str, str, str],
    past: tuple[str, str],
    present: tuple[str, str],
    a: AttnInputs,
    n_heads: int,
    n_kv_heads: int,
    name: str,
    window: int = -1,
) -> str:
    """GroupQueryAttention with the KV cache in (past) and out (present); window: local_window_size (-1: none).

    qkv: packed QKV (rotary inside GQA), or separate (q, k, v) names when rotary runs before it as
    com.microsoft RotaryEmbedding (heads GQA cannot rotate).
    """
    node = f"{name}/GroupQueryAttention"
    if isinstance(qkv, str):
        inputs, rotary = [qkv, "", "", past[0], past[1], a.seqlens_k, a.total_len, a.cos, a.sin], 1
    else:
        q, k, v = qkv
        q = g.op("RotaryEmbedding", [q, a.positions, a.cos, a.sin], f"{name}/q_rotary/RotaryEmbedding", MS_DOMAIN)
        k = g.op("RotaryEmbedding", [k, a.positions, a.cos, a.sin], f"{name}/k_rotary/RotaryEmbedding", MS_DOMAIN)
        inputs, rotary = [q, k, v, past[0], past[1], a.seqlens_k, a.total_len], 0
    out = g.node(
        "GroupQueryAttention",
        inputs,
        [f"{node}/output_0", present[0], present[1]],
        node,
        MS_DOMAIN,
        num_heads=n_heads,
        kv_num_heads=n_kv_heads,
        do_rotary=rotary,
        rotary_interleaved=0,
        local_window_size=window,
    )
    return out[0]


def swiglu_mlp(g: GraphBuilder, x: str, w: dict, p: Precision, name: str) -> str:
    """down(silu(gate(x)) * up(x)); silu as x * Sigmoid(x). w["gate_bias"] etc.: the family's MLP biases."""
    from webllama.converter.graph.family_ops import add_bias

    gate = add_bias(g, linear(g, x, w["gate"], p, f"{name}/gate_proj"), w.get("gate_bias"), p.dtype, f"{name}/gate_proj")
    up = add_bias(g, linear(g, x, w["up"], p, f"{name}/up_proj"), w.get("up_bias"), p.dtype, f"{name}/up_proj")
    sig = g.op("Sigmoid", [gate], f"{name}/act_fn/Sigmoid")
    act = g.op("Mul", [gate, sig], f"{name}/act_fn/Mul")
    prod = g.op("Mul", [act, up], f"{name}/Mul")
    return add_bias(g, linear(g, prod, w["down"], p, f"{name}/down_proj"), w.get("down_bias"), p.dtype, f"{name}/down_proj")


# ---------------------------------------------------------------- attention mask -> GQA inputs, padding


@dataclass(frozen=True)
class StepInputs:
    ids: str  # (B, S) input_ids with left padding moved to the right
    j: str  # (S,) 0..S-1
    shift: str  # (B, 1) leading pad tokens of each row's current chunk
    attn: AttnInputs


def step_inputs(g: GraphBuilder, ids: str, mask: str, cos: np.ndarray, sin: np.ndarray, p: Precision, positions: bool) -> StepInputs:
    """Everything the layers share, from input_ids and attention_mask only.

    GroupQueryAttention reads padding as trailing (right padding, seqlens_k = real tokens - 1): each
    row's current tokens are rotated left by its count of leading pad tokens (`left_pad_unshift`
    undoes it on the last hidden state). The shift is 0 for unpadded and right-padded rows (every
    decode step), so the graph is then the identity; a left-padded prompt becomes right-padded, with
    positions 0.. exactly as transformers numbers them (cumsum(mask) - 1).
    """
    name = "/model/attn_mask_reformat"
    ids_shape = g.op("Shape", [ids], f"{name}/ids/Shape")
    seq = g.op("Gather", [ids_shape, g.const([1])], f"{name}/ids/Gather", axis=0)  # (1,) current length S
    cur = g.op(
        "Slice", [mask, g.op("Neg", [seq], f"{name}/Neg"), g.const([np.iinfo(np.int64).max]), g.const([1])], f"{name}/current/Slice"
    )  # (B, S) mask of the current tokens
    cur_f = g.op("Cast", [cur], f"{name}/current/Cast", to=TensorProto.FLOAT)
    shift = g.op("ArgMax", [cur_f], f"{name}/current/ArgMax", axis=1, keepdims=1)  # (B, 1) leading zeros
    j = g.op("Range", [g.const(0), g.op("Squeeze", [seq, g.const([0])], f"{name}/Squeeze"), g.const(1)], f"{name}/Range")  # (S,)
    idx = g.op("Mod", [g.op("Add", [j, shift], f"{name}/shift/Add"), seq], f"{name}/shift/Mod")  # (B, S)
    shifted = g.op("GatherElements", [ids, idx], f"{name}/shift/GatherElements", axis=1)
    total = g.op("ReduceSum", [mask, g.const([1])], f"{name}/ReduceSum", keepdims=0)  # (B,)
    seqlens = g.op("Cast", [g.op("Sub", [total, g.const(1)], f"{name}/Sub")], f"{name}/seqlens_k/Cast", to=TensorProto.INT32)
    width = g.op("Gather", [g.op("Shape", [mask], f"{name}/Shape"), g.const(1)], f"{name}/Gather", axis=0)
    total_len = g.op("Cast", [width], f"{name}/total_seq_len/Cast", to=TensorProto.INT32)
    pos = None
    if positions:  # past length of each row + j (rotary outside GQA)
        cur_sum = g.op("ReduceSum", [cur, g.const([1])], f"{name}/current/ReduceSum", keepdims=1)  # (B, 1)
        past = g.op("Sub", [g.op("Unsqueeze", [total, g.const([1])], f"{name}/Unsqueeze"), cur_sum], f"{name}/past/Sub")
        pos = g.op("Add", [past, j], f"{name}/positions/Add")
    cos_name = g.initializer("/model/rotary_emb/cos_cache", cos.astype(p.dtype))
    sin_name = g.initializer("/model/rotary_emb/sin_cache", sin.astype(p.dtype))
    return StepInputs(shifted, j, shift, AttnInputs(seqlens, total_len, cos_name, sin_name, pos))


def left_pad_unshift(g: GraphBuilder, x: str, s: StepInputs) -> str:
    """Undo the left-padding shift of `step_inputs` on (B, S, D) activations."""
    name = "/model/left_padding_undo"
    seq = g.op("Gather", [g.op("Shape", [s.ids], f"{name}/Shape"), g.const([1])], f"{name}/Gather", axis=0)
    back = g.op("Mod", [g.op("Add", [g.op("Sub", [s.j, s.shift], f"{name}/Sub"), seq], f"{name}/Add"), seq], f"{name}/Mod")  # (B, S)
    idx = g.op("Unsqueeze", [back, g.const([2])], f"{name}/Unsqueeze")
    idx = g.op("Expand", [idx, g.op("Shape", [x], f"{name}/Shape_x")], f"{name}/Expand")
    return g.op("GatherElements", [x, idx], f"{name}/GatherElements", axis=1)
