"""/embed, /classify and /predict answer with real model output."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from stack.serving.models import SENTIMENT, minilm, tenants

pytestmark = pytest.mark.live


def post(http: httpx.Client, path: str, body: dict, **headers: str) -> dict:
    r = http.post(path, json=body, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def test_embed_one_text_matches_the_model(http: httpx.Client) -> None:
    text = "Replicas scale with ongoing requests."
    out = post(http, "/embed", {"text": text})
    assert out["dim"] == 384 and len(out["embeddings"]) == 1 and out["batch_size"] >= 1
    served = np.array(out["embeddings"][0])
    local = np.array(minilm.MiniLM().encode([text]).vectors[0])
    assert abs(np.linalg.norm(served) - 1) < 1e-5
    assert float(served @ local) > 0.9999


def test_embed_list_keeps_order(http: httpx.Client) -> None:
    texts = ["first text", "a second, rather different, sentence", "third"]
    batch = post(http, "/embed", {"text": texts})["embeddings"]
    singles = [post(http, "/embed", {"text": t})["embeddings"][0] for t in texts]
    assert len(batch) == 3
    for got, want in zip(batch, singles, strict=True):
        assert float(np.dot(got, want)) > 0.9999


def test_embed_with_trailing_slash(http: httpx.Client) -> None:
    assert len(post(http, "/embed/", {"text": "x"})["embeddings"]) == 1


@pytest.mark.parametrize(("text", "label"), [
    ("The upgrade broke everything and customers are furious.", "negative"),
    ("Fast, reliable and a joy to operate.", "positive"),
])
def test_classify(http: httpx.Client, text: str, label: str) -> None:
    out = post(http, "/classify", {"text": text})
    labels = json.loads((SENTIMENT / "meta.json").read_text())["labels"]
    assert out["label"] == label
    assert 0.5 < out["confidence"] <= 1
    assert set(out["scores"]) == set(labels)


@pytest.mark.parametrize("tenant", sorted(tenants.TENANTS))
def test_predict_every_tenant(http: httpx.Client, tenant: str) -> None:
    features = [0.5, -1, 2, 0, 1.5, -0.25, 3, 1]
    out = post(http, "/predict", {"features": features}, serve_multiplexed_model_id=tenant)
    assert out["tenant"] == tenant
    assert isinstance(out["prediction"], int | float)
    again = post(http, "/predict", {"features": features}, serve_multiplexed_model_id=tenant)
    assert again["prediction"] == out["prediction"]
