"""webllama's converter: model source -> ONNX graph -> int4 -> bundle, with parity verification."""

from webllama.converter.convert import ConvertOptions, convert
from webllama.converter.manifest import Bundle, open_bundle

__all__ = ["convert", "ConvertOptions", "Bundle", "open_bundle"]
