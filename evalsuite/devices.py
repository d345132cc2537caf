"""The one device table of the Python side: what each device name a user types means to every runtime.

`cpu` is native code (torch, onnxruntime, llama.cpp); `wasm` and `webgpu` are the browser engine's providers,
whose JavaScript half is `PROVIDERS` in web/engine/session.js (the onnxruntime-web execution provider, its
build, where outputs live). tests/web/test_js_units.py checks the two tables name the same browser devices.
Chromium's command line for a device is built here too, so the eval backend and the benchmarks start the
same browser.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Device:
    name: str
    browser: bool  # runs in Chromium through the web engine
    chromium_args: tuple[str, ...] = ()  # added to CHROMIUM_ARGS for this device


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# A real GPU (benchmarks/gpu_webgpu.sh): headless Chromium on Linux reaches it only through Vulkan, and blocks
# most server GPUs by default. WEBLLAMA_CHROMIUM_GPU=1 adds these to every WebGPU browser.
REAL_GPU_ARGS = ("--enable-features=Vulkan,WebGPU", "--use-vulkan=native", "--use-angle=vulkan", "--ignore-gpu-blocklist")

DEVICES: dict[str, Device] = {
    "cpu": Device("cpu", browser=False),
    "wasm": Device("wasm", browser=True),
    # without a GPU, Chromium's WebGPU adapter is SwiftShader (Vulkan on the CPU), reached with this flag
    "webgpu": Device("webgpu", browser=True, chromium_args=("--enable-unsafe-webgpu",)),
}
BROWSER_DEVICES = tuple(n for n, d in DEVICES.items() if d.browser)
DEFAULT_BROWSER_DEVICE = "wasm"  # the one every browser has; WebGPU is asked for by name


def check_browser_device(device: str) -> Device:
    """The browser device named `device`, or ValueError naming the choices."""
    d = DEVICES.get(device)
    if d is None or not d.browser:
        raise ValueError(f"device {device!r}: use {' or '.join(BROWSER_DEVICES)}")
    return d


def chromium_args(device: str, extra: tuple[str, ...] = ()) -> list[str]:
    """Chromium's flags for a browser device (the real-GPU ones when WEBLLAMA_CHROMIUM_GPU=1 and it uses WebGPU)."""
    d = check_browser_device(device)
    gpu = REAL_GPU_ARGS if d.chromium_args and os.environ.get("WEBLLAMA_CHROMIUM_GPU") == "1" else ()
    return [*CHROMIUM_ARGS, *extra, *d.chromium_args, *gpu]
