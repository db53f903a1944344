"""A /classify request passes through every stage deployment, and the classifier reaches the Embedder."""

from __future__ import annotations

import httpx
import pytest

from stack import prom

pytestmark = pytest.mark.live
STAGES = [("classify", d) for d in ("Pipeline", "Preprocessor", "Classifier", "Postprocessor")]
CALLED = [*STAGES, ("embed", "Embedder")]
N = 5


def counts(samples: prom.Samples) -> dict[tuple[str, str], float]:
    return {(app, dep): prom.total(samples, "ray_serve_deployment_request_counter_total",
                                          application=app, deployment=dep) for app, dep in CALLED}


def test_classify_runs_every_stage(http: httpx.Client, metrics_url: str) -> None:
    before = counts(prom.scrape(metrics_url))
    for i in range(N):
        r = http.post("/classify", json={"text": f"pipeline check {i}: everything is great"})
        assert r.status_code == 200, r.text

    def all_counted(samples: prom.Samples) -> bool:
        now = counts(samples)
        return all(now[k] - before[k] >= N for k in CALLED)

    after = counts(prom.wait_for(metrics_url, all_counted))
    for key in CALLED:
        assert after[key] - before[key] >= N, f"{key} saw {after[key] - before[key]} of {N} requests"
