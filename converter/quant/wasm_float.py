"""The float WASM graph of a quantized variant: the same stored bytes behind DequantizeLinear + MatMul, which
onnxruntime folds to float32 once when the session is created (the engine sets `session.disable_quant_qdq=1`).

Why a second WASM graph besides the int8 one (converter/quant/unpack.py): this one computes exactly what the int4
graph computes (token-exact with onnxruntime CPU's MatMulNBits), downloads nothing extra (new tensor headers over
the same external-data offsets: MatMulNBits' (N, n_blocks, block*bits/8) uint8 B is ONNX's packed uint4/uint8
(N, n_blocks*block), low nibble first); its cost is 4 bytes per weight in the wasm heap. The int8 graph re-rounds
the weights and the activations (SmolLM2 mean KL 0.141 against the int4 graph's 0.091 on verify's text, with
per-token activation scales; 0.690 with one scale per tensor). So a model whose float32 weights fit `FP32_BUDGET`
gets this exact graph; a larger one (1B-class) the int8 graph, which fits the heap.

One DequantizeLinear and one Transpose per matrix keep the transient memory of the fold near 2x the float32
weights. Layouts follow the MatMulNBits contract (onnxruntime docs/ContribOperators.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from webllama.converter.onnx_io import cast_initializers, drop_dead_nodes

FP32_BUDGET = 2 * 2**30  # bytes of dequantized float32 weights the WASM graph may create at load


def float_weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of float32 weights the rewrite would materialize (sum of K*N*4 over MatMulNBits)."""
    total = 0
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
            total += int(a["K"]) * int(a["N"]) * 4
    return total


def _external_alias(t: TensorProto, name: str, data_type: int, dims: list[int]) -> TensorProto:
    """A tensor header for the same stored bytes as `t` under another name, type and shape."""
    alias = TensorProto()
    alias.CopyFrom(t)
    alias.name = name
    alias.data_type = data_type
    del alias.dims[:]
    alias.dims.extend(dims)
    return alias


def _zero_points(t: TensorProto, base_dir: Path, n: int, n_blocks: int, name: str) -> TensorProto:
    """MatMulNBits packs zero points per row (a row of odd n_blocks ends with a padding nibble); ONNX uint4
    packs the whole tensor. Re-pack them (N * n_blocks / 2 bytes: small) as an inline uint4 (N, n_blocks)."""
    packed = numpy_helper.to_array(t, base_dir=str(base_dir)).reshape(n, -1)  # (N, ceil(nb/2)) uint8
    nibbles = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(n, -1)[:, :n_blocks]  # (N, nb)
    return _uint4_tensor(name, nibbles)


def _uint4_tensor(name: str, nibbles: np.ndarray) -> TensorProto:
    """An inline uint4 tensor from values 0..15, packed two per byte low nibble first (ONNX's uint4 layout) with
    numpy: helper.make_tensor wants a Python list, which takes seconds for a 7B-size head's (N, n_blocks)."""
    flat = nibbles.astype(np.uint8).reshape(-1)
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    t = TensorProto(name=name, data_type=TensorProto.UINT4, dims=list(nibbles.shape))
    t.raw_data = (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8).tobytes()
    return t


def _replace(node: onnx.NodeProto, inits: dict[str, TensorProto], base_dir: Path) -> tuple[list, list]:
    """Nodes + initializers computing node's output as MatMul(A, folded float32 weight)."""
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    k, n, block = int(a["K"]), int(a["N"]), int(a["block_size"])
    bits = int(a.get("bits", 4))
    if bits not in (4, 8):
        raise ValueError(f"{node.name}: {bits}-bit MatMulNBits has no DequantizeLinear type")
    qtype = TensorProto.UINT4 if bits == 4 else TensorProto.UINT8
    ins = list(node.input) + [""] * (6 - len(node.input))
    x, b, scales, zp, g_idx, bias = ins[:6]
    if g_idx:
        raise ValueError(f"{node.name}: MatMulNBits with g_idx (act-order) is not unpacked")
    if b not in inits or scales not in inits or (zp and zp not in inits):
        raise ValueError(f"{node.name}: MatMulNBits weights are not initializers")
    n_blocks = (k + block - 1) // block
    p = f"{b}/wasm"
    s = inits[scales]
    half = s.name != scales  # the stored float16 scales behind the graph's Cast: cast again here, folded at load
    new = [
        _external_alias(inits[b], f"{p}/q", qtype, [n, n_blocks * block]),
        _external_alias(s, f"{p}/scales_f16" if half else f"{p}/scales", s.data_type, [n, n_blocks]),
    ]
    dq_inputs = [f"{p}/q", f"{p}/scales"]
    if bits == 8:  # 8-bit zero points are one byte each, (N, n_blocks): the tensor as it is (small), or 128
        z = numpy_helper.to_array(inits[zp], base_dir=str(base_dir)).reshape(n, -1)[:, :n_blocks] if zp else None
        z = np.full((n, n_blocks), 128, np.uint8) if z is None else z.astype(np.uint8)
        new.append(numpy_helper.from_array(np.ascontiguousarray(z), f"{p}/zp"))
    elif zp:
        new.append(_zero_points(inits[zp], base_dir, n, n_blocks, f"{p}/zp"))
    else:  # MatMulNBits' default zero point is 8 (symmetric int4 stored unsigned)
        new.append(_uint4_tensor(f"{p}/zp", np.full((n, n_blocks), 8, dtype=np.uint8)))
    dq_inputs.append(f"{p}/zp")
    g = [helper.make_node("Cast", [f"{p}/scales_f16"], [f"{p}/scales"], to=TensorProto.FLOAT)] if half else []
    g.append(helper.make_node("DequantizeLinear", dq_inputs, [f"{p}/w_nk_padded"], axis=1, block_size=block))  # (N, nb*blk)
    w_nk = f"{p}/w_nk_padded"
    if n_blocks * block != k:  # the last block is padded: drop the padding columns
        new += [
            numpy_helper.from_array(np.array([0], np.int64), f"{p}/k0"),
            numpy_helper.from_array(np.array([k], np.int64), f"{p}/k1"),
            numpy_helper.from_array(np.array([1], np.int64), f"{p}/axis1"),
        ]
        g.append(helper.make_node("Slice", [w_nk, f"{p}/k0", f"{p}/k1", f"{p}/axis1"], [f"{p}/w_nk"]))
        w_nk = f"{p}/w_nk"
    g.append(helper.make_node("Transpose", [w_nk], [f"{p}/w"], perm=[1, 0]))  # (K, N)
    out = node.output[0]
    mm_out = f"{p}/mm" if bias else out
    g.append(helper.make_node("MatMul", [x, f"{p}/w"], [mm_out], name=node.name))
    if bias:
        g.append(helper.make_node("Add", [mm_out, bias], [out]))
    return g, new


def fold_nbits(model: onnx.ModelProto, base_dir: Path) -> onnx.ModelProto:
    """A copy of `model` (loaded without external data, from `base_dir`) with every MatMulNBits replaced by
    dequantize-at-load + MatMul. The weights are referenced, not copied; unused originals are dropped."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in out.graph.initializer} | cast_initializers(out)  # float16 scales behind a Cast
    nodes, added = [], []
    for node in out.graph.node:
        if node.op_type == "MatMulNBits" and node.domain == "com.microsoft":
            g, new = _replace(node, inits, base_dir)
            nodes += g
            added += new
        else:
            nodes.append(node)
    nodes = drop_dead_nodes(nodes, {o.name for o in out.graph.output})
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    used = {i for nd in nodes for i in nd.input}
    kept = [t for t in out.graph.initializer if t.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept + added)
    for op in out.opset_import:  # blocked and 4-bit DequantizeLinear: opset 21
        if op.domain in ("", "ai.onnx") and op.version < 21:
            op.version = 21
    out.ir_version = max(out.ir_version, 10)  # the uint4 tensor type: IR version 10
    return out
