"""Saving an ONNX graph with its weights in external shards of bounded size.

onnx.save can split weights out, but only into one file or one file per tensor. The browser here
cannot allocate an ArrayBuffer over 1 GiB, so weights go into shards of at most `max_shard` bytes,
named as transformers.js expects (model_q4.onnx_data, model_q4.onnx_data_1, ...). Written by hand
because no library offers size-capped sharding.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, numpy_helper

GiB = 1 << 30
ALIGN = 4096  # page-aligned offsets let onnxruntime mmap each tensor
MIN_EXTERNAL = 1024  # small tensors stay inline: fewer seeks, same size


def _raw(t: TensorProto) -> bytes:
    if t.HasField("raw_data"):
        return t.raw_data
    return numpy_helper.to_array(t).tobytes()


def _externalize(t: TensorProto, location: str, offset: int, length: int) -> None:
    t.ClearField("raw_data")
    for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"):
        t.ClearField(field)
    del t.external_data[:]
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = t.external_data.add()
        entry.key, entry.value = k, v


def save_sharded(model: onnx.ModelProto, path: Path, max_shard: int = GiB) -> list[Path]:
    """Write `path` and its weight shards; returns the shard paths. Mutates `model`'s initializers."""
    shards: list[Path] = []
    handle = None
    used = 0
    try:
        for t in model.graph.initializer:
            data = _raw(t)
            if len(data) < MIN_EXTERNAL:
                continue
            pad = (-used) % ALIGN
            if handle is None or used + pad + len(data) > max_shard:
                if handle is not None:
                    handle.close()
                name = f"{path.name}_data" + (f"_{len(shards)}" if shards else "")
                shards.append(path.parent / name)
                handle = open(shards[-1], "wb")
                used, pad = 0, 0
            handle.write(b"\0" * pad)
            used += pad
            handle.write(data)
            _externalize(t, shards[-1].name, used, len(data))
            used += len(data)
    finally:
        if handle is not None:
            handle.close()
    onnx.save_model(model, str(path))
    return shards


def graph_io(model: onnx.ModelProto) -> tuple[list[dict], list[dict]]:
    def describe(v) -> dict:
        tt = v.type.tensor_type
        return {
            "name": v.name,
            "dtype": onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name,
            "shape": [d.dim_param or d.dim_value for d in tt.shape.dim],
        }

    return [describe(i) for i in model.graph.input], [describe(o) for o in model.graph.output]


def cast_initializers(model: onnx.ModelProto) -> dict[str, TensorProto]:
    """Tensor name -> the initializer it is a Cast of: a float32 graph's MatMulNBits / GatherBlockQuantized scales
    are float16 initializers behind a Cast (converter/graph/ops.write_scales), which rewrites of the graph read
    as the weights they are."""
    inits = {t.name: t for t in model.graph.initializer}
    return {n.output[0]: inits[n.input[0]] for n in model.graph.node if n.op_type == "Cast" and n.input[0] in inits}


def drop_dead_nodes(nodes: list, outputs: set[str]) -> list:
    """`nodes` (topologically ordered) without those none of whose outputs is read by a later node or is a graph
    output (e.g. the Cast of scales whose MatMulNBits a rewrite replaced)."""
    needed, kept = set(outputs), []
    for n in reversed(nodes):
        if any(o in needed for o in n.output):
            kept.append(n)
            needed.update(n.input)
    return kept[::-1]
