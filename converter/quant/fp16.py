"""float32 -> float16 graphs (activations, weights and KV cache), for the fp16 and q4f16 variants.

onnxruntime ships the float16 converter (a copy of onnxconverter-common's). The inputs and outputs
become float16 too (keep_io_types=False), so the KV cache stays in half precision end to end; that is
what halves the browser's memory traffic. RMSNorm's x^2 and mean stay float32 (op_block_list) because
squares of large activations overflow float16's 65504.
"""

from __future__ import annotations

import onnx

# Keep the reductions of RMSNorm and softmax's statistics in float32: fp16 overflow lives there.
FP32_OPS = ["Pow", "ReduceMean", "Sqrt", "Reciprocal"]


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(
        model,
        keep_io_types=False,
        disable_shape_infer=True,
        op_block_list=FP32_OPS,
    )
