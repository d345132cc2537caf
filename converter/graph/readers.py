"""The fused builder's readers are the sources' own streaming views (converter/sources/tensors.py,
one per format in hf.py, gguf.py, llama2c.py): the names below are kept for the graph code.

A reader hands out the graph's canonical tensors ("embed", "layers.3.q", ...; archs/base.py) as
float32 (out, in) arrays, `raw(name)` a GGUF tensor's quantized blocks (Q4_0 transcoded exactly),
and `config` the typed ModelConfig of its architecture.
"""

from __future__ import annotations

from webllama.converter.archs import ModelConfig
from webllama.converter.archs import llama as _llama
from webllama.converter.archs.base import BASE_LAYER
from webllama.converter.sources.gguf import GGUFTensors
from webllama.converter.sources.hf import SafetensorsTensors
from webllama.converter.sources.llama2c import Llama2cTensors
from webllama.converter.sources.tensors import StateDictSource, TensorSource

TensorReader = TensorSource
FusedConfig = ModelConfig
SafetensorsReader = SafetensorsTensors
GGUFTensorReader = GGUFTensors
Llama2cReader = Llama2cTensors
StateDictReader = StateDictSource
GLOBAL_TENSORS: dict[str, str] = {"embed": "embed", "norm": "norm", "lm_head": "lm_head"}
# Hugging Face name -> GGUF name of the reference family (what tests write GGUF files with)
GGUF_NAMES: dict[str, str] = {_llama.HF.layer[k].source: _llama.GGUF.layer[k].source for k in BASE_LAYER} | {
    _llama.HF.globals[k].source: _llama.GGUF.globals[k].source for k in GLOBAL_TENSORS
}
