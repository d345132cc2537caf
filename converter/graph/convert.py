"""`webllama convert --graph fused`: stream the weights into fused graphs, then the same bundle and
the same verification as the optimum path (converter/convert.py)."""

from __future__ import annotations

import gc
from pathlib import Path

from tqdm.auto import tqdm
from webllama.converter import customize
from webllama.converter.bundle import add_wasm_graphs, build_manifest, staging_dir, write_manifest, write_model_files
from webllama.converter.graph.emit import write_fused_variant
from webllama.converter.graph.readers import StateDictReader
from webllama.converter.graph.source import light_source, open_reader
from webllama.converter.manifest import Bundle, open_bundle, write_json_atomic
from webllama.converter.sources import load_source
from webllama.converter.sources.base import LoadedSource
from webllama.converter.verify import raise_if_failed, verify_bundle


def convert_fused(source: str | LoadedSource, out_dir: str | Path, opts) -> Bundle:
    """opts: webllama.converter.convert.ConvertOptions. Without verification the source is never loaded into torch."""
    opts.quant.validate()
    out = Path(out_dir)
    with staging_dir(out, opts.force) as tmp:
        custom = opts.customization
        if isinstance(source, LoadedSource) or not custom.empty:
            # Adapters, templates and context extension act on the torch model (converter/customize.py):
            # the weights then come from memory, not streamed.
            src = source if isinstance(source, LoadedSource) else load_source(source, revision=opts.revision)
            src = customize.apply(src, custom)
            reader = StateDictReader(src.model)
        else:
            reader = open_reader(source, opts.revision)
            src = load_source(source, revision=opts.revision) if opts.verify else light_source(source, reader, opts.revision)
        n = reader.config.n_layers
        variants = {}
        with tqdm(total=n * len(opts.variants), desc="fused graph", unit="layer", disable=not opts.progress) as bar:
            for v in opts.variants:
                bar.set_postfix_str(v.name)
                variants[v.name] = write_fused_variant(reader, tmp, v, opts.quant, lambda _i: bar.update())
                gc.collect()
        add_wasm_graphs(tmp, variants)
        write_model_files(src, tmp, variants)
        verify = None
        if opts.verify:
            write_manifest(tmp, build_manifest(src, tmp, variants, opts.quant, None, custom))
            verify = verify_bundle(src, open_bundle(tmp), [v.name for v in opts.variants])
            write_json_atomic(tmp / "verify.json", verify)  # strict JSON: a NaN figure is null
        write_manifest(tmp, build_manifest(src, tmp, variants, opts.quant, verify, custom))
        if verify is not None:  # inside: a failed bundle is kept aside, never installed at `out` (bundle.py)
            raise_if_failed(verify, str(out))
    return open_bundle(out)
