"""@serve.multiplexed loads each tenant's model and evicts LRU past max_num_models_per_replica."""

from __future__ import annotations

import httpx
import pytest

from stack import ray_metrics
from stack.config import OpsConfig
from stack.models import tenants
from stack.profile import select

pytestmark = pytest.mark.live
PREDICT = {"application": "predict", "deployment": "TenantModels"}
LOADS = "ray_serve_multiplexed_models_load_counter_total"
UNLOADS = "ray_serve_multiplexed_models_unload_counter_total"


def test_lru_eviction_shows_in_metrics(http: httpx.Client, live_stack: OpsConfig, metrics_url: str) -> None:
    cap = live_stack.profile(select()).deployment("predict", "TenantModels").max_num_models_per_replica
    ids = sorted(tenants.TENANTS)
    assert cap is not None and len(ids) > cap
    before = ray_metrics.scrape(metrics_url)
    loads0 = ray_metrics.total(before, LOADS, **PREDICT)
    unloads0 = ray_metrics.total(before, UNLOADS, **PREDICT)
    for _ in range(2):  # cycling more tenants than the cache holds misses every time
        for tenant in ids:
            r = http.post("/predict", json={"features": [1.0] * tenants.N_FEATURES},
                          headers={"serve_multiplexed_model_id": tenant})
            assert r.status_code == 200, r.text
    expected_loads = 2 * len(ids)
    after = ray_metrics.wait_for(
        metrics_url, lambda s: ray_metrics.total(s, LOADS, **PREDICT) - loads0 >= expected_loads)
    assert ray_metrics.total(after, LOADS, **PREDICT) - loads0 >= expected_loads
    assert ray_metrics.total(after, UNLOADS, **PREDICT) - unloads0 >= expected_loads - cap
    assert ray_metrics.total(after, "ray_serve_num_multiplexed_models", **PREDICT) == cap


def test_unknown_tenant_is_404(http: httpx.Client) -> None:
    r = http.post("/predict", json={"features": [1.0] * tenants.N_FEATURES},
                  headers={"serve_multiplexed_model_id": "no-such-tenant"})
    assert r.status_code == 404
    assert r.json()["error"]["param"] == "serve_multiplexed_model_id"
