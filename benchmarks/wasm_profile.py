#!/usr/bin/env python3
"""Where onnxruntime-web's WASM build spends a prefill: per-op-type kernel time from onnxruntime's own
profiler, in headless Chromium, on the graph our engine runs there (the int4 variant's dequantize-at-load
graph, session.disable_quant_qdq=1). onnxruntime-web has no profile file on WASM: endProfiling() prints the
trace events to the console, which this script collects (ORT's profiler, not a hand-rolled timer).

    .venv/bin/python benchmarks/wasm_profile.py BUNDLE [--variant q4] [--prompt 128] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROFILE_JS = """
async ([graph, data, n, threads, fold]) => {
  const ort = await import('/vendor/ort/ort.wasm.min.mjs');
  ort.env.wasm.wasmPaths = '/vendor/ort/';
  ort.env.wasm.numThreads = threads;
  const opts = { executionProviders: ['wasm'], enableProfiling: true, graphOptimizationLevel: 'all',
                 externalData: data.map((p) => ({ path: p.split('/').pop(), data: p })) };
  if (fold) opts.extra = { session: { disable_quant_qdq: '1' } };
  const s = await ort.InferenceSession.create(graph, opts);
  const feeds = {};
  const seq = (f) => BigInt64Array.from({ length: n }, (_, i) => BigInt(f(i)));
  for (const name of s.inputNames) {
    if (name === 'input_ids') feeds[name] = new ort.Tensor('int64', seq((i) => 100 + i), [1, n]);
    else if (name === 'attention_mask') feeds[name] = new ort.Tensor('int64', seq(() => 1), [1, n]);
    else if (name === 'position_ids') feeds[name] = new ort.Tensor('int64', seq((i) => i), [1, n]);
  }
  const meta = s.inputMetadata || [];
  for (const name of s.inputNames.filter((x) => x.startsWith('past_key_values.'))) {
    const m = meta.find((x) => x.name === name);
    const dims = m && m.shape ? m.shape.map((d) => (typeof d === 'number' ? d : 0)) : [1, 0, 0, 0];
    dims[0] = 1; dims[2] = 0;
    const type = m && m.type === 'float16' ? 'float16' : 'float32';
    feeds[name] = new ort.Tensor(type, type === 'float16' ? new Uint16Array(0) : new Float32Array(0), dims);
  }
  await s.run(feeds);  // warm-up
  const t0 = performance.now();
  await s.run(feeds);
  const ms = performance.now() - t0;
  s.endProfiling();
  await s.release();
  return ms;
}
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--variant", default="q4")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--top", type=int, default=10)
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright
    from webllama.converter.manifest import open_bundle
    from webllama.evalsuite.bench.web_server import BenchServer
    from webllama.evalsuite.devices import chromium_args

    b = open_bundle(a.bundle)
    v = b.variant(a.variant)
    graph = v.get("wasm_model") or v["model"]
    server = BenchServer(bundle=b.root)
    base = f"{server.url}/bundles/{server.slug}/"
    events: list[dict] = []

    def on_console(msg) -> None:  # ORT prints one JSON trace event per line (with a trailing comma)
        text = msg.text.strip().rstrip(",")
        if text.startswith("{") and '"cat"' in text:
            try:
                events.append(json.loads(text))
            except json.JSONDecodeError:
                pass

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=a.chromium, headless=True, args=chromium_args("wasm"))
        page = browser.new_context().new_page()
        page.set_default_timeout(600_000)
        page.on("console", on_console)
        page.goto(f"{server.url}/bench/index.html?runtime=webllama")
        ms = page.evaluate(
            PROFILE_JS, [base + graph, [base + p for p in v["external_data"]], a.prompt, a.threads, bool(v.get("wasm_model"))]
        )
        browser.close()
    server.close()
    # two runs were profiled (warm-up + timed): keep the second, i.e. the last half of the node events
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    nodes = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    if runs:
        start = runs[-1]["ts"]
        nodes = [e for e in nodes if e["ts"] >= start]
    ops = Counter()
    for e in nodes:
        ops[e.get("args", {}).get("op_name", "?")] += e["dur"]
    total = sum(ops.values()) or 1
    print(
        f"{b.manifest['name']} {a.variant} ({graph}) on WASM, {a.threads} threads: prefill of {a.prompt} tokens "
        f"{ms:.0f} ms ({a.prompt / ms * 1000:.1f} tok/s); kernels {total / 1000:.0f} ms"
    )
    for op, us in ops.most_common(a.top):
        print(f"  {op:34s} {us / 1000:9.1f} ms  {us / total:6.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
