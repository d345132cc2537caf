"""A Q4_0 GGUF of a model from another GGUF (e.g. SmolLM2's Q4_1 file): every 2-D weight of the
transformer blocks is dequantized and re-quantized to Q4_0 with the `gguf` package (numpy, bit-exact
with llama.cpp's reference quantize_row_q4_0); the token embedding (also the tied output projection)
keeps its type when it is Q8_0 (as our q4 bundle keeps an 8-bit output projection), norms stay F32.
Metadata is copied, with general.file_type set to MOSTLY_Q4_0."""

from __future__ import annotations

from pathlib import Path

import numpy as np

KEEP = {"token_embd.weight", "output.weight"}
LLAMA_FTYPE_MOSTLY_Q4_0 = 2


def _target_type(gguf, name: str, qtype, shape) -> object:
    if (
        len(shape) < 2
        or name in KEEP
        and qtype in (gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.F32)
    ):
        return qtype
    return gguf.GGMLQuantizationType.Q4_0


def write_q4_0(src: str | Path, dst: str | Path) -> Path:
    """Write `dst` (a Q4_0 GGUF) from `src`; returns dst. Takes ~30 s for a 135M model."""
    import gguf
    from gguf.quants import dequantize, quantize

    reader = gguf.GGUFReader(str(src))
    arch = str(reader.fields["general.architecture"].contents())
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(dst), arch=arch, endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        val_type = field.types[0]
        sub_type = field.types[-1] if val_type == gguf.GGUFValueType.ARRAY else None
        value = LLAMA_FTYPE_MOSTLY_Q4_0 if field.name == gguf.Keys.General.FILE_TYPE else field.contents()
        writer.add_key_value(field.name, value, val_type, sub_type=sub_type)
    tensors = []
    for t in reader.tensors:
        qtype = _target_type(gguf, t.name, t.tensor_type, t.shape)
        data = t.data if qtype == t.tensor_type else quantize(dequantize(t.data, t.tensor_type).astype(np.float32), qtype)
        tensors.append((t.name, data, qtype))
        writer.add_tensor_info(t.name, data.shape, data.dtype, data.nbytes, qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, data, _ in tensors:
        writer.write_tensor_data(data, tensor_endianess=reader.endianess)
    writer.close()
    return dst
