"""Runtimes that `webllama bench` can time; each module exposes `make_runner(request) -> Runner`.

Lazy "module:attr" targets so that timing onnxruntime never imports torch, Playwright or llama.cpp.
"""

RUNNERS = {
    "onnx": "webllama.evalsuite.bench.runners.onnx:make_runner",
    "native": "webllama.evalsuite.bench.runners.native:make_runner",
    "llamacpp": "webllama.evalsuite.bench.runners.llamacpp:make_runner",
    "browser": "webllama.evalsuite.bench.runners.web:make_webllama_runner",
    "transformersjs": "webllama.evalsuite.bench.runners.web:make_transformersjs_runner",
    "wllama": "webllama.evalsuite.bench.runners.web:make_wllama_runner",
}
