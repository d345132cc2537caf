"""int4 weight-only quantization with onnxruntime's MatMulNBitsQuantizer (round-to-nearest, blockwise).

MatMul with a constant weight -> MatMulNBits; the embedding Gather -> GatherBlockQuantized. Both have
WebGPU and WASM kernels. Zero points, when asymmetric, are packed uint8 (what the WebGPU kernels read);
methods with float zero points (HQQ) are refused for browser variants by `QuantSpec.validate`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from converter.errors import UnsupportedVariant

BLOCK_SIZES = (16, 32, 64, 128)
METHODS = ("rtn",)  # "hqq" has float zero points: no GatherBlockQuantized, not browser-safe


@dataclass(frozen=True)
class QuantSpec:
    method: str = "rtn"
    bits: int = 4
    block_size: int = 32
    symmetric: bool = True
    accuracy_level: int | None = None  # MatMulNBits compute type on CPU; None = kernel default
    embedding: bool = True  # Gather -> GatherBlockQuantized
    lm_head: bool = True

    def validate(self) -> None:
        if self.block_size not in BLOCK_SIZES:
            raise UnsupportedVariant(f"--block-size {self.block_size} is not supported; use one of {BLOCK_SIZES}")
        if self.method not in METHODS:
            raise UnsupportedVariant(
                f"quantization method {self.method!r} cannot run in the browser (float zero points have no "
                f"WebGPU kernel); use one of {METHODS}"
            )

    def to_json(self) -> dict:
        return {**asdict(self), "weight_op": "MatMulNBits",
                "embedding_op": "GatherBlockQuantized" if self.embedding else None,
                "zero_point_dtype": None if self.symmetric else "uint8"}


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


def quantize_int4(model: onnx.ModelProto, spec: QuantSpec) -> onnx.ModelProto:
    from onnxruntime.quantization import matmul_nbits_quantizer as mnq

    spec.validate()
    fold_transposed_weights(model)
    ops = ("MatMul", "Gather") if spec.embedding else ("MatMul",)
    exclude = [] if spec.lm_head else [n.name for n in model.graph.node if "lm_head" in n.name]
    config = mnq.DefaultWeightOnlyQuantConfig(
        block_size=spec.block_size, is_symmetric=spec.symmetric, accuracy_level=spec.accuracy_level,
        op_types_to_quantize=ops, quant_axes=(("MatMul", 0), ("Gather", 1)), bits=spec.bits,
    )
    # The quantizer logs every node at INFO; keep the progress bar readable.
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    q = mnq.MatMulNBitsQuantizer(
        model, bits=spec.bits, block_size=spec.block_size, is_symmetric=spec.symmetric,
        accuracy_level=spec.accuracy_level, nodes_to_exclude=exclude, op_types_to_quantize=ops,
        quant_axes=(("MatMul", 0), ("Gather", 1)), algo_config=config,
    )
    q.process()
    return q.model.model
