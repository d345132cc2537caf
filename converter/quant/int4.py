"""The reference export's int4 pass: MatMul -> MatMulNBits and Gather -> GatherBlockQuantized, with the weights the
quantization pass made (converter/quant/calibrate.py `QuantStore`), so the reference graph and the fused graph of
one recipe carry the same numbers.

MatMuls are matched to source weights by the exporter's hierarchical node names (`/model/layers.3/self_attn/q_proj/MatMul`
-> `model.layers.3.self_attn.q_proj.weight`, `/lm_head/MatMul` -> `lm_head.weight`), the embedding by its Gather
(`/model/embed_tokens/Gather`). A MatMul the store does not hold stays float.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from webllama.converter.graph.quantize import NBits, scales_as_float16
from webllama.converter.quant.policy import BLOCK_SIZES, QuantSpec  # noqa: F401  (QuantSpec: re-exported)

MS_DOMAIN = "com.microsoft"
_NODE = re.compile(r"/(.+)/MatMul(?:_\d+)?")


def fold_transposed_weights(model: onnx.ModelProto) -> int:
    """MatMul(x, Transpose(W_const)) -> MatMul(x, W_const^T as its own initializer).

    A tied lm_head can reach the exporter's graph as Transpose(embed_tokens) feeding the MatMul; the
    quantizer only takes MatMuls whose B is an initializer, so it would leave the largest matrix in
    float. Folding the transpose makes it quantizable. Returns how many were folded.
    """
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    folded = 0
    for n in list(g.node):
        if n.op_type != "MatMul":
            continue
        t = producers.get(n.input[1])
        if t is None or t.op_type != "Transpose" or t.input[0] not in inits:
            continue
        perm = next((list(a.ints) for a in t.attribute if a.name == "perm"), None)
        w = numpy_helper.to_array(inits[t.input[0]])
        if w.ndim != 2 or perm not in (None, [1, 0]):
            continue
        name = f"{t.input[0]}.transposed"
        g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w.T), name))
        n.input[1] = name
        consumers[t.output[0]] -= 1
        if consumers[t.output[0]] == 0:
            g.node.remove(t)
        folded += 1
    return folded


def lm_head_node(model: onnx.ModelProto) -> str | None:
    """The MatMul that produces the graph's logits (found by dataflow, not by name)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    node = producers.get("logits")
    while node is not None and node.op_type != "MatMul":  # e.g. a Cast to float32 after it
        node = producers.get(node.input[0]) if node.op_type in ("Cast", "Identity", "Reshape") else None
    return node.name if node is not None else None


def weight_name(node_name: str) -> str | None:
    """The source weight a reference-export MatMul multiplies by, from its node name."""
    m = _NODE.fullmatch(node_name)
    return m.group(1).replace("/", ".") + ".weight" if m else None


def _scales(w: NBits, dtype: int, base: str) -> tuple[TensorProto, list[onnx.NodeProto]]:
    """`{base}.scales` in the graph's type; in a float32 graph a Cast of stored float16 scales, as the fused
    builder writes them (converter/graph/ops.write_scales): both graphs carry the same bytes."""
    half = scales_as_float16(w.scales) if dtype == TensorProto.FLOAT else None
    if half is None:
        np_dtype = np.float16 if dtype == TensorProto.FLOAT16 else np.float32
        return numpy_helper.from_array(w.scales.astype(np_dtype), f"{base}.scales"), []
    cast = helper.make_node("Cast", [f"{base}.scales_f16"], [f"{base}.scales"], name=f"{base}.scales/Cast", to=TensorProto.FLOAT)
    return numpy_helper.from_array(half, f"{base}.scales_f16"), [cast]


def _nbits_node(node: onnx.NodeProto, w: NBits, dtype: int, accuracy_level: int | None) -> tuple[onnx.NodeProto, list, list]:
    base = node.name.rsplit("/", 1)[0]
    scales, casts = _scales(w, dtype, base)
    inits = [numpy_helper.from_array(w.packed, f"{base}.weight_Q{w.bits}"), scales]
    if w.zero_points is not None:
        inits.append(numpy_helper.from_array(w.zero_points, f"{base}.zero_points"))
    attrs = {"K": w.k, "N": w.n, "bits": w.bits, "block_size": w.block_size}
    if accuracy_level:
        attrs["accuracy_level"] = accuracy_level
    new = helper.make_node(
        "MatMulNBits",
        [node.input[0], f"{base}.weight_Q{w.bits}", f"{base}.scales", *(t.name for t in inits[2:])],
        list(node.output),
        name=f"{base}/MatMulNBits",
        domain=MS_DOMAIN,
        **attrs,
    )
    return new, inits, casts


def _gather_node(node: onnx.NodeProto, w: NBits, dtype: int) -> tuple[onnx.NodeProto, list, list]:
    from webllama.converter.graph.ops import unpack_zero_points

    base = node.name.rsplit("/", 1)[0]
    n, nb = w.scales.shape
    z = np.full((n, nb), 8, np.uint8) if w.zero_points is None else unpack_zero_points(w.zero_points, nb)
    flat = z.reshape(-1)
    flat = np.append(flat, np.uint8(0)) if flat.size % 2 else flat
    data = TensorProto(name=f"{base}.weight_Q4", data_type=TensorProto.UINT4, dims=[n, w.k], raw_data=w.packed.tobytes())
    zp = TensorProto(
        name=f"{base}.zero_points", data_type=TensorProto.UINT4, dims=[n, nb], raw_data=(flat[0::2] | (flat[1::2] << 4)).tobytes()
    )
    scales, casts = _scales(w, dtype, base)
    inits = [data, scales, zp]
    new = helper.make_node(
        "GatherBlockQuantized",
        [data.name, node.input[1], f"{base}.scales", zp.name],
        list(node.output),
        name=f"{base}/GatherBlockQuantized",
        domain=MS_DOMAIN,
        gather_axis=0,
        quantize_axis=1,
        block_size=w.block_size,
        bits=4,
    )
    return new, inits, casts


def _stored(store, names: list[str] | None) -> NBits | None:
    """The store's weight for a source tensor; a packed projection's parts joined (same grid) or None."""
    from webllama.converter.graph.ops import concat_nbits

    parts = [store.get(n) for n in names or []]
    if not parts or any(p is None for p in parts):
        return None
    if len(parts) == 1:
        return parts[0]
    if len({(p.bits, p.block_size, p.zero_points is None) for p in parts}) != 1:
        return None
    return concat_nbits(parts)


def _replace_floats(g: onnx.GraphProto, store, canonical: dict[str, list[str]]) -> None:
    """Float tensors the recipe changed (AWQ-scaled RMSNorm weights), found by their HF initializer names."""
    if not store.floats:
        return
    by_name = {t.name: t for t in g.initializer}
    for hf, names in canonical.items():
        if len(names) != 1 or names[0] not in store.floats:
            continue
        if hf not in by_name:
            raise ValueError(f"the reference export has no initializer {hf!r} to carry the recipe's scaled {names[0]}")
        old = by_name[hf]
        dtype = np.float16 if old.data_type == TensorProto.FLOAT16 else np.float32
        old.CopyFrom(numpy_helper.from_array(store.floats[names[0]].astype(dtype), hf))


def quantize_int4(model: onnx.ModelProto, spec: QuantSpec, store, canonical: dict[str, list[str]]) -> onnx.ModelProto:
    """Replace the graph's MatMuls (and the embedding Gather) by the store's int4 weights, in place.
    canonical: HF weight name -> canonical tensors (converter/quant/calibrate.py `hf_names`)."""
    g = model.graph
    fold_transposed_weights(model)
    inits = {t.name: t for t in g.initializer}
    dtype = next((t.data_type for t in g.initializer if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)), TensorProto.FLOAT)
    head = lm_head_node(model)
    used: set[str] = set()
    casts: list[onnx.NodeProto] = []  # the float16 scales' Casts: they read initializers only, so they go first
    for idx, node in enumerate(list(g.node)):
        name = None
        if node.op_type == "MatMul" and node.input[1] in inits:
            name = "lm_head.weight" if node.name == head else weight_name(node.name)
        elif node.op_type == "Gather" and node.input[0] in inits and "embed_tokens" in node.name:
            w = store.get("embed") or (store.get("lm_head") if store.embedding_shares_head else None)
            if w is not None:
                used.add(node.input[0])  # before CopyFrom: `node` is the graph's own message, replaced in place
                new, extra, cast = _gather_node(node, w, dtype)
                g.node[idx].CopyFrom(new)
                g.initializer.extend(extra)
                casts += cast
            continue
        w = _stored(store, canonical.get(name)) if name else None
        if w is None:
            continue
        used.add(node.input[1])  # before CopyFrom (see above)
        new, extra, cast = _nbits_node(node, w, dtype, spec.accuracy_level)
        g.node[idx].CopyFrom(new)
        g.initializer.extend(extra)
        casts += cast
    if casts:
        nodes = casts + list(g.node)
        del g.node[:]
        g.node.extend(nodes)
    _replace_floats(g, store, canonical)
    still = {i for n in g.node for i in n.input}
    for t in [t for t in g.initializer if t.name in used and t.name not in still]:
        g.initializer.remove(t)
    opsets = {o.domain: o for o in model.opset_import}
    if MS_DOMAIN not in opsets:
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    if opsets.get("", None) is not None and opsets[""].version < 21:
        opsets[""].version = 21  # uint4 tensors (GatherBlockQuantized's data) need opset 21
    if model.ir_version < 10:
        model.ir_version = 10
    return model


def ort_quantize(
    model: onnx.ModelProto, bits: int, block_size: int, symmetric: bool, exclude: list[str] | None = None
) -> onnx.ModelProto:
    """onnxruntime's own MatMulNBitsQuantizer (round-to-nearest) over every MatMul with a constant weight: the
    reference the `rtn` method is byte-identical to, and what tests build plain MatMulNBits graphs with."""
    import logging

    from onnxruntime.quantization import matmul_nbits_quantizer as mnq

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.ERROR)
    axes = (("MatMul", 0), ("Gather", 1))
    config = mnq.DefaultWeightOnlyQuantConfig(
        block_size=block_size, is_symmetric=symmetric, op_types_to_quantize=("MatMul",), quant_axes=axes, bits=bits
    )
    q = mnq.MatMulNBitsQuantizer(
        model,
        bits=bits,
        block_size=block_size,
        is_symmetric=symmetric,
        nodes_to_exclude=exclude or [],
        op_types_to_quantize=("MatMul",),
        quant_axes=axes,
        algo_config=config,
    )
    q.process()
    return q.model.model
