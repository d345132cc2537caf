#!/usr/bin/env bash
# Issue 8's closing experiment, end to end: a LoRA adapter for SmolLM2-135M-Instruct trained on CPU on a
# toy task, merged and converted to q4, then scored on that task natively (base, base+LoRA), on
# onnxruntime (q4) and in headless Chromium (WASM, q4), and the runs compared item by item.
#
#   examples/lora_toy/run.sh            # from any folder; everything lands in examples/lora_toy/work/
#   LIMIT=100 examples/lora_toy/run.sh  # fewer test items per run, in work/runs-limit100/ (the browser is the slow one)
#   TRAIN_ARGS="--threads 1" ...        # extra train.py options
#
# Re-running resumes: an existing adapter, bundle or finished eval run is kept, and an interrupted eval
# continues from its cache. Retraining (delete work/adapter) redoes everything after it; reconverting
# (delete work/bundle) redoes the bundle's runs.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PY="${PYTHON:-$REPO/.venv/bin/python}"
WEBLLAMA="${WEBLLAMA:-$REPO/.venv/bin/webllama}"
WORK="${WORK:-$HERE/work}"
GGUF="${GGUF:-$("$PY" -c 'from webllama.converter.sources import smollm2_gguf; print(smollm2_gguf())')}"
LIMIT_ARGS=()
[[ -n "${LIMIT:-}" ]] && LIMIT_ARGS=(--limit "$LIMIT")
RUNS="$WORK/runs${LIMIT:+-limit$LIMIT}"  # one folder per item count, so a kept run always matches it
mkdir -p "$RUNS"
export TOKENIZERS_PARALLELISM=false

timed() {  # timed FILE LABEL CMD...: run CMD, append "LABEL<TAB>seconds" to FILE
  local file=$1 label=$2 t0=$SECONDS
  shift 2
  echo "== $label"
  "$@"
  printf '%s\t%s\n' "$label" "$((SECONDS - t0))" >>"$file"
}

timed "$WORK/timings.tsv" "make data" "$PY" "$HERE/make_data.py" --out "$HERE/data"

if [[ ! -f "$WORK/adapter/adapter_config.json" ]]; then
  rm -rf "$WORK/bundle" "$WORK"/runs*
  # shellcheck disable=SC2086  # TRAIN_ARGS is a list of options
  timed "$WORK/timings.tsv" "train" "$PY" "$HERE/train.py" --base "$GGUF" --data "$HERE/data/train.jsonl" --out "$WORK/adapter" ${TRAIN_ARGS:-}
fi

if [[ ! -f "$WORK/bundle/manifest.json" ]]; then
  rm -rf "$WORK"/runs*/onnx-q4 "$WORK"/runs*/browser-wasm-q4
  timed "$WORK/timings.tsv" "convert" "$WEBLLAMA" convert "$GGUF" "$WORK/bundle" --adapter "$WORK/adapter" --force
fi

evaluate() {  # evaluate NAME MODEL EVAL-OPTIONS...  (a finished run is kept; an interrupted one resumes)
  local name=$1 model=$2
  shift 2
  [[ -f "$RUNS/$name/results.json" ]] && { echo "== eval $name: kept (delete $RUNS/$name to redo)"; return; }
  timed "$RUNS/timings.tsv" "eval $name" "$WEBLLAMA" eval "$model" "$@" --include-path "$HERE/task" --tasks date_us \
    "${LIMIT_ARGS[@]}" --output "$RUNS/$name"
}
evaluate native-base "$GGUF" --backend native
evaluate native-lora "$GGUF" --backend native --adapter "$WORK/adapter"
evaluate onnx-q4 "$WORK/bundle" --backend onnx --variant q4
evaluate browser-wasm-q4 "$WORK/bundle" --backend browser --device wasm --variant q4

for pair in "native-base native-lora" "native-lora onnx-q4" "onnx-q4 browser-wasm-q4"; do
  set -- $pair
  echo "== compare $1 vs $2"
  "$WEBLLAMA" compare "$RUNS/$1" "$RUNS/$2" | tee "$RUNS/compare-$1-vs-$2.txt"
done

"$PY" "$HERE/summarize.py" "$WORK" "$RUNS" | tee "$RUNS/summary.md"
