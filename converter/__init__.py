"""webllama's converter: model source -> ONNX graph -> int4 -> bundle, with parity verification."""

from converter.convert import ConvertOptions, convert
from converter.manifest import Bundle, open_bundle

__all__ = ["convert", "ConvertOptions", "Bundle", "open_bundle"]
