#!/usr/bin/env bash
# Set up webllama on a fresh Debian machine: Chromium (for the browser runtime and its tests), a
# virtual environment at .venv with the pinned Python packages, and the pinned npm packages of web/.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v chromium >/dev/null 2>&1; then
  echo "== installing Debian's chromium"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  python3 -m venv .venv
fi
echo "== installing Python packages (pinned: constraints.txt)"
.venv/bin/python -m pip install -q --upgrade pip
# torch==2.13.0 resolves to the local CPU wheel; never let a resolver pick a CUDA build.
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"

echo "== installing npm packages (pinned: web/package-lock.json)"
(cd web && npm ci --no-audit --no-fund --loglevel=error)
# The peers the benchmarks compare against (transformers.js, wllama); --ignore-scripts: no binary downloads.
(cd benchmarks && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
echo "== setup done: .venv/bin/webllama --help"
