"""The fused graph builder (`webllama convert --graph fused`, the default): ONNX written directly from the
weights with onnxruntime's fused contrib operators (GroupQueryAttention, SkipSimplifiedLayerNormalization,
MatMulNBits, GatherBlockQuantized), streamed layer by layer. The pipeline around it is converter/convert.py.

builder.py  GraphBuilder + ShardWriter     ops.py     op helpers (names in, names out; never quantize)
readers.py  streaming tensor readers       emit.py    the Llama graph, one layer at a time
quantize.py NBits packing, Q4_0 transcode  rope.py    cos/sin caches from transformers
source.py   reader + weightless source
"""

GRAPHS = ("optimum", "fused")
