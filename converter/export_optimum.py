"""Reference exporter: optimum-onnx's `text-generation-with-past` export of the loaded torch model.

This graph is the correctness baseline (decomposed attention, rotary and RMSNorm, exactly as torch
computes them); a faster fused builder may replace it as the default, never as the reference.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from pathlib import Path

import onnx
from webllama.converter.errors import ConvertError
from webllama.converter.sources.base import LoadedSource

OPSET = 18  # first opset with ReduceMean-as-input axes everywhere ORT-web's kernels expect; 17+ for LayerNorm


def export_fp32(source: LoadedSource, workdir: Path) -> onnx.ModelProto:
    """Export the source model (float32, KV cache in/out) and load it back with its weights in memory."""
    from optimum.exporters.onnx import onnx_export_from_model

    out = Path(tempfile.mkdtemp(prefix="optimum-", dir=workdir))
    # optimum's own logging and torch's tracer warnings drown the progress bars; keep errors only.
    logging.getLogger("optimum").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            onnx_export_from_model(
                source.model,
                out,
                opset=OPSET,
                task="text-generation-with-past",
                do_validation=False,
                device="cpu",
                no_post_process=True,
                preprocessors=None,
            )
    except Exception as e:
        raise ConvertError(f"optimum export of {source.name} failed ({type(e).__name__}: {e})") from e
    path = out / "model.onnx"
    if not path.exists():
        raise ConvertError(f"optimum export of {source.name} wrote no model.onnx (found {sorted(p.name for p in out.iterdir())})")
    return onnx.load(str(path), load_external_data=True)
