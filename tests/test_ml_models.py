"""The BERT, sentiment and tenant models setup builds are real models that do their job."""

from __future__ import annotations

import json

import joblib
import numpy as np
import pytest

from stack.serving.models import SENTIMENT, TENANT_STORE, minilm, sentiment, tenants


@pytest.fixture(scope="module")
def model() -> minilm.MiniLM:
    return minilm.MiniLM()


def test_minilm_matches_sentence_transformers(model: minilm.MiniLM) -> None:
    from sentence_transformers import SentenceTransformer

    texts = ["Ray Serve batches requests.", "short", "A much longer sentence about replicas and queues."]
    ours = np.array(model.encode(texts).vectors)
    st = SentenceTransformer(minilm.model_path(), device="cpu")
    reference = st.encode(texts, normalize_embeddings=True)
    assert ours.shape == (3, 384)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(ours * reference, axis=1)) > 0.9999


def test_padding_is_counted(model: minilm.MiniLM) -> None:
    enc = model.encode(["a", "a much longer sentence than the first one"])
    assert enc.padded_tokens > enc.real_tokens > 0


HELD_OUT = {
    "positive": ["Setup was quick and the service is excellent.", "Latency is great and users are happy."],
    "negative": ["The service crashed again and users are angry.", "Support was useless and slow."],
}


def test_sentiment_head_generalises(model: minilm.MiniLM) -> None:
    head = joblib.load(SENTIMENT / "head.joblib")
    labels = json.loads((SENTIMENT / "meta.json").read_text())["labels"]
    for expected, texts in HELD_OUT.items():
        for text, probs in zip(texts, head.predict_proba(model.encode(texts).vectors), strict=True):
            assert labels[int(np.argmax(probs))] == expected, text
    assert sentiment.is_built(SENTIMENT)


def test_tenant_store_has_distinct_models() -> None:
    assert tenants.is_built(TENANT_STORE)
    assert len(tenants.TENANTS) >= 5
    kinds = set()
    x = np.ones((1, tenants.N_FEATURES))
    for tenant in tenants.TENANTS:
        model = joblib.load(TENANT_STORE / f"{tenant}.joblib")
        assert model.n_features_in_ == tenants.N_FEATURES
        model.predict(x)
        kinds.add(type(model).__name__)
    assert len(kinds) >= 4
