"""The fused graph builder (`webllama convert --graph fused`): ONNX written directly from the weights
with onnxruntime's fused contrib operators (GroupQueryAttention, SkipSimplifiedLayerNormalization,
MatMulNBits, GatherBlockQuantized), streamed layer by layer.

builder.py  GraphBuilder + ShardWriter     ops.py     op helpers (names in, names out)
readers.py  streaming tensor readers       emit.py    the Llama graph, one layer at a time
quantize.py per-tensor int4/int8, Q4_0     rope.py    cos/sin caches from transformers
source.py   reader + weightless source     convert.py convert_fused (bundle + verify)
"""

GRAPHS = ("optimum", "fused")
