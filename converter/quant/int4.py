"""int4 weight-only quantization with onnxruntime's MatMulNBitsQuantizer (round-to-nearest, blockwise).

MatMul with a constant weight -> MatMulNBits; the embedding Gather -> GatherBlockQuantized; the output
projection gets its own block size and zero points (see QuantSpec.lm_head_*). Both have
WebGPU and WASM kernels. Zero points, when asymmetric, are packed uint8 (what the WebGPU kernels read);
methods with float zero points (HQQ) are refused for browser variants by `QuantSpec.validate`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace

import numpy as np
import onnx
from onnx import numpy_helper
from webllama.converter.errors import UnsupportedVariant

BLOCK_SIZES = (16, 32, 64, 128)
METHODS = ("rtn",)  # "hqq" has float zero points: no GatherBlockQuantized, not browser-safe


@dataclass(frozen=True)
class QuantSpec:
    method: str = "rtn"
    bits: int = 4
    block_size: int = 32
    symmetric: bool = True
    accuracy_level: int | None = None  # MatMulNBits compute type on CPU; None = kernel default
    embedding: bool = True  # Gather -> GatherBlockQuantized (int4)
    # The output projection decides every token: plain int4 (block 32, symmetric) there costs SmolLM2-135M
    # 7 points of top-1 agreement (0.69 -> 0.62). Measured alternatives on SmolLM2 (top-1, CPU decode):
    #   8 bits: 0.69 but onnxruntime's CPU/WASM kernels have no fast 8-bit path (3.3 vs 17 tok/s);
    #   4 bits, block 16, asymmetric (uint8 zero points): 0.65 at full int4 speed  <- the default;
    #   float: 0.69, +113 MB. All three run on WebGPU, WASM and CPU.
    lm_head_bits: int = 4  # 4, 8, or 0 = keep it float
    lm_head_block_size: int = 16
    lm_head_symmetric: bool = False

    def validate(self) -> None:
        if self.block_size not in BLOCK_SIZES:
            raise UnsupportedVariant(f"--block-size {self.block_size} is not supported; use one of {BLOCK_SIZES}")
        if self.lm_head_block_size not in BLOCK_SIZES:
            raise UnsupportedVariant(f"--lm-head-block-size {self.lm_head_block_size} is not supported; use one of {BLOCK_SIZES}")
        if self.lm_head_bits not in (0, 4, 8):
            raise UnsupportedVariant(f"--lm-head-bits {self.lm_head_bits} is not supported; use 4, 8 or 0 (float)")
        if self.method not in METHODS:
            raise UnsupportedVariant(
                f"quantization method {self.method!r} cannot run in the browser (float zero points have no "
                f"WebGPU kernel); use one of {METHODS}"
            )

    def to_json(self) -> dict:
        return {
            **asdict(self),
            "weight_op": "MatMulNBits",
            "lm_head_op": "MatMulNBits" if self.lm_head_bits else "MatMul",
            "embedding_op": "GatherBlockQuantized" if self.embedding else None,
            "zero_point_dtype": None if self.symmetric else "uint8",
        }


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


def _run_quantizer(model: onnx.ModelProto, spec: QuantSpec, bits: int, ops: tuple[str, ...], exclude: list[str]) -> onnx.ModelProto:
    from onnxruntime.quantization import matmul_nbits_quantizer as mnq

    axes = (("MatMul", 0), ("Gather", 1))
    config = mnq.DefaultWeightOnlyQuantConfig(
        block_size=spec.block_size,
        is_symmetric=spec.symmetric,
        accuracy_level=spec.accuracy_level,
        op_types_to_quantize=ops,
        quant_axes=axes,
        bits=bits,
    )
    q = mnq.MatMulNBitsQuantizer(
        model,
        bits=bits,
        block_size=spec.block_size,
        is_symmetric=spec.symmetric,
        accuracy_level=spec.accuracy_level,
        nodes_to_exclude=exclude,
        op_types_to_quantize=ops,
        quant_axes=axes,
        algo_config=config,
    )
    q.process()
    return q.model.model


def quantize_int4(model: onnx.ModelProto, spec: QuantSpec) -> onnx.ModelProto:
    spec.validate()
    # The quantizer logs every node at INFO and warns about the opset bump it makes for int4 types.
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.ERROR)
    fold_transposed_weights(model)
    head = lm_head_node(model)
    if head and spec.lm_head_bits:
        # The head gets its own settings: nodes_to_include only adds to op_types_to_quantize, so the first
        # pass excludes every other MatMul; the second pass then leaves the (now MatMulNBits) head alone.
        others = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name != head]
        head_spec = replace(spec, block_size=spec.lm_head_block_size, symmetric=spec.lm_head_symmetric)
        model = _run_quantizer(model, head_spec, spec.lm_head_bits, ("MatMul",), others)
    ops = ("MatMul", "Gather") if spec.embedding else ("MatMul",)
    return _run_quantizer(model, spec, spec.bits, ops, [head] if head else [])
