"""webllama: Llama-family models -> int4 ONNX bundles for the browser, verified and evaluated.

One distribution, one namespace: `webllama.converter` (converter/), `webllama.web` (web/),
`webllama.evalsuite` (evalsuite/). This core holds what they share: the root CLI (`webllama.cli`),
the error base class (`webllama.errors`) and the generic registry (`webllama.registry`).
"""

__version__ = "0.1.0"
