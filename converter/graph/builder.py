"""GraphBuilder: every node and weight of a fused graph goes through here.

Weights are written to the external-data shards the moment they are added (`initializer`), so the
builder holds only the graph's structure: memory stays flat however many layers the model has.
The shard layout is the bundle's (onnx_io.save_sharded): page-aligned tensors, shards of at most
`max_shard` bytes named model_q4.onnx_data, model_q4.onnx_data_1, ..., tensors under 1 KiB inline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from webllama.converter.onnx_io import ALIGN, MIN_EXTERNAL, GiB

OPSET = 21  # int4 tensors (GatherBlockQuantized's data) need opset 21 and IR version 10
IR_VERSION = 10
MS_DOMAIN = "com.microsoft"


class ShardWriter:
    """Appends tensor bytes to size-capped shards beside `model_path`; returns external-data entries."""

    def __init__(self, model_path: Path, max_shard: int = GiB) -> None:
        self.model_path = model_path
        self.max_shard = max_shard
        self.shards: list[Path] = []
        self._handle = None
        self._used = 0

    def write(self, data: bytes) -> tuple[str, int]:
        pad = (-self._used) % ALIGN
        if self._handle is None or self._used + pad + len(data) > self.max_shard:
            self._open_next()
            pad = 0
        self._handle.write(b"\0" * pad)
        offset = self._used + pad
        self._handle.write(data)
        self._used = offset + len(data)
        return self.shards[-1].name, offset

    def _open_next(self) -> None:
        if self._handle is not None:
            self._handle.close()
        name = f"{self.model_path.name}_data" + (f"_{len(self.shards)}" if self.shards else "")
        self.shards.append(self.model_path.parent / name)
        self._handle = open(self.shards[-1], "wb")
        self._used = 0

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class GraphBuilder:
    """Nodes, initializers and graph I/O of one ONNX model; names must be unique."""

    def __init__(self, sink: ShardWriter) -> None:
        self.sink = sink
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._node_names: set[str] = set()
        self._values: set[str] = set()  # every tensor name defined so far (inputs, initializers, node outputs)
        self._consts: dict[tuple, str] = {}

    @property
    def defined(self) -> frozenset[str]:
        return frozenset(self._values)

    def _define(self, name: str) -> None:
        if name in self._values:
            raise ValueError(f"tensor {name!r} is defined twice in the fused graph")
        self._values.add(name)

    def node(self, op: str, inputs: list[str], outputs: list[str], name: str, domain: str = "", **attrs) -> list[str]:
        """Add a node; returns its output names. Empty output names mark unused optional outputs."""
        if name in self._node_names:
            raise ValueError(f"node {name!r} is added twice to the fused graph")
        self._node_names.add(name)
        for o in outputs:
            if o:
                self._define(o)
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=domain or None, **attrs))
        return outputs

    def op(self, op: str, inputs: list[str], name: str, domain: str = "", *, output: str | None = None, **attrs) -> str:
        """A single-output node whose output is `output` or else `name/output_0`."""
        return self.node(op, inputs, [output or f"{name}/output_0"], name, domain, **attrs)[0]

    def initializer(self, name: str, array: np.ndarray, dtype: int | None = None, shape=None) -> str:
        """Add a weight (written to the shards now, if large). `dtype`/`shape` override for packed types (int4)."""
        self._define(name)
        array = np.ascontiguousarray(array)
        elem = dtype if dtype is not None else helper.np_dtype_to_tensor_dtype(array.dtype)
        t = TensorProto(name=name, data_type=elem, dims=list(array.shape if shape is None else shape))
        data = array.tobytes()
        if len(data) < MIN_EXTERNAL:
            t.raw_data = data
        else:
            location, offset = self.sink.write(data)
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", location), ("offset", str(offset)), ("length", str(len(data)))):
                entry = t.external_data.add()
                entry.key, entry.value = k, v
        self.initializers.append(t)
        return name

    def alias(self, name: str, of: str, dtype: int, shape: list[int]) -> str:
        """Another tensor header (name, type, shape) over the bytes of initializer `of`: the bytes are stored once,
        and each session reads them into its own tensor (e.g. a tied matrix read as uint4 codes and as MatMulNBits' B)."""
        src = next(t for t in self.initializers if t.name == of)
        self._define(name)
        t = TensorProto()
        t.CopyFrom(src)
        t.name, t.data_type = name, dtype
        del t.dims[:]
        t.dims.extend(shape)
        self.initializers.append(t)
        return name

    def const(self, value, dtype=np.int64) -> str:
        """A small constant (shared by every node that asks for the same value)."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            self._consts[key] = self.initializer(f"/const/{arr.dtype.name}_{len(self._consts)}", arr)
        return self._consts[key]

    def input(self, name: str, elem_type: int, shape: list) -> str:
        self._define(name)
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def output(self, name: str, elem_type: int, shape: list) -> str:
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def to_model(self, graph_name: str = "webllama-fused") -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, graph_name, self.inputs, self.outputs, self.initializers)
        opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="webllama")
        model.ir_version = IR_VERSION
        return model

    def save(self, path: Path) -> list[Path]:
        """Write the graph next to its shards; returns the shard paths."""
        self.sink.close()
        onnx.save_model(self.to_model(), str(path))
        return list(self.sink.shards)
