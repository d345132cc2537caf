"""What a result was measured on: CPU, memory, load, tool versions, and this machine's memory read
bandwidth (the physical limit of decoding: every decoded token reads all the weights once)."""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

# A streaming read of a buffer much larger than the caches, split over T threads (OpenMP).
_BANDWIDTH_C = r"""
#include <stdint.h>
#include <stddef.h>
uint64_t wl_read(const uint64_t *p, size_t n, int threads) {
  uint64_t total = 0;
  #pragma omp parallel for num_threads(threads) reduction(+:total) schedule(static)
  for (size_t i = 0; i < n; i += 8) {
    total += p[i] ^ p[i+1] ^ p[i+2] ^ p[i+3] ^ p[i+4] ^ p[i+5] ^ p[i+6] ^ p[i+7];
  }
  return total;
}
"""
PACKAGES = ("onnxruntime", "numpy", "torch", "transformers", "llama_cpp_python", "playwright", "webllama")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    import psutil

    return {
        "hostname_sha256": hashlib.sha256(platform.node().encode()).hexdigest()[:12],
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_bytes": psutil.virtual_memory().total,
        "os": platform.platform(),
        "python": platform.python_version(),
        "loadavg_1m_at_start": os.getloadavg()[0],
    }


def versions(extra: dict | None = None) -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return {**out, **(extra or {})}


def _compile_reader() -> ctypes.CDLL | None:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "webllama" / "bench"
    lib = cache / f"wl_read_{hashlib.sha256(_BANDWIDTH_C.encode()).hexdigest()[:10]}.so"
    if not lib.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "read.c"
            src.write_text(_BANDWIDTH_C)
            cmd = ["gcc", "-O3", "-mavx2", "-fopenmp", "-shared", "-fPIC", str(src), "-o", str(lib)]
            if subprocess.run(cmd, capture_output=True).returncode != 0:
                return None
    dll = ctypes.CDLL(str(lib))
    dll.wl_read.restype = ctypes.c_uint64
    dll.wl_read.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return dll


def memory_bandwidth(threads: int, size_bytes: int = 1 << 30, repeats: int = 7) -> dict:
    """Read bandwidth in bytes/s (median of `repeats` passes over a `size_bytes` buffer) with 1 and `threads`
    threads. Uses a small C reader (gcc + OpenMP) and falls back to numpy's sum (one thread)."""
    buf = np.ones(size_bytes // 8, dtype=np.uint64)  # touched: pages are resident before timing
    dll = _compile_reader()
    result: dict = {"method": "c-openmp" if dll else "numpy-sum", "buffer_bytes": buf.nbytes, "repeats": repeats}
    for t in sorted({1, max(1, threads)}):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            if dll:
                dll.wl_read(buf.ctypes.data, buf.size, t)
            else:
                buf.sum()
            times.append(time.perf_counter() - t0)
        times.sort()
        result[f"read_bytes_per_s_{t}t"] = buf.nbytes / times[len(times) // 2]
        result[f"read_bytes_per_s_{t}t_best"] = buf.nbytes / times[0]
    result["read_bytes_per_s"] = result[f"read_bytes_per_s_{max(1, threads)}t"]
    return result
