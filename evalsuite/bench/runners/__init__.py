"""Runtimes that `webllama bench` can time; each module exposes `make_runner(request) -> Runner`.

Lazy "module:attr" targets so that timing onnxruntime never imports torch, Playwright or llama.cpp.
"""

RUNNERS = {
    "onnx": "evalsuite.bench.runners.onnx:make_runner",
    "native": "evalsuite.bench.runners.native:make_runner",
    "llamacpp": "evalsuite.bench.runners.llamacpp:make_runner",
    "browser": "evalsuite.bench.runners.web:make_webllama_runner",
    "transformersjs": "evalsuite.bench.runners.web:make_transformersjs_runner",
    "wllama": "evalsuite.bench.runners.web:make_wllama_runner",
}
