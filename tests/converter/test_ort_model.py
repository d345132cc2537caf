"""OrtModel.forward: a long sequence scored in KV-cache chunks equals the one-call forward."""

import numpy as np
from webllama.converter import ort_model
from webllama.converter.ort_model import OrtModel


def test_chunked_forward_equals_one_call(s260_bundle, monkeypatch):
    for variant in ("fp32", "q4"):
        m = OrtModel(s260_bundle, variant=variant)
        ids = np.random.default_rng(0).integers(3, 512, size=(1, 100))  # (1,T)
        whole = m.forward(ids)  # (1,T,V): T <= PREFILL_CHUNK, one call
        monkeypatch.setattr(ort_model, "PREFILL_CHUNK", 16)
        chunked = m.forward(ids)  # 7 calls through the cache
        monkeypatch.setattr(ort_model, "PREFILL_CHUNK", 1024)
        assert chunked.shape == whole.shape
        np.testing.assert_allclose(chunked, whole, atol=2e-4, rtol=0)
        assert (chunked.argmax(-1) == whole.argmax(-1)).all()
