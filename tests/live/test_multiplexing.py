"""@serve.multiplexed loads each tenant's model and evicts LRU past max_num_models_per_replica."""

from __future__ import annotations

import httpx
import pytest

from stack import prom
from stack.config import OpsConfig
from stack.profile import select
from stack.serving.models import tenants

pytestmark = pytest.mark.live
PREDICT = {"application": "predict", "deployment": "TenantModels"}
LOADS = "ray_serve_multiplexed_models_load_counter_total"
UNLOADS = "ray_serve_multiplexed_models_unload_counter_total"


def test_lru_eviction_shows_in_metrics(http: httpx.Client, live_stack: OpsConfig, metrics_url: str) -> None:
    cap = live_stack.profile(select()).deployment("predict", "TenantModels").max_num_models_per_replica
    ids = sorted(tenants.TENANTS)
    assert cap is not None and len(ids) > cap

    def cycle() -> None:
        for tenant in ids:
            r = http.post("/predict", json={"features": [1.0] * tenants.N_FEATURES},
                          headers={"serve_multiplexed_model_id": tenant})
            assert r.status_code == 200, r.text

    # Whatever the cache holds now, after one full cycle it holds the last `cap` tenants; from then
    # on, cycling more tenants than it holds misses (and evicts) on every request.
    cycle()  # it loads at least len(ids) - cap models, so the baseline moves before it settles
    loads0 = prom.wait_settled(metrics_url, lambda s: prom.total(s, LOADS, **PREDICT))
    unloads0 = prom.total(prom.scrape(metrics_url), UNLOADS, **PREDICT)
    cycle()
    expected_loads = len(ids)

    def settled(s: prom.Samples) -> bool:  # counters and the gauge are exported separately
        return (prom.total(s, LOADS, **PREDICT) - loads0 >= expected_loads
                and prom.total(s, UNLOADS, **PREDICT) - unloads0 >= expected_loads
                and prom.total(s, "ray_serve_num_multiplexed_models", **PREDICT) == cap)

    after = prom.wait_for(metrics_url, settled)
    assert prom.total(after, LOADS, **PREDICT) - loads0 >= expected_loads
    assert prom.total(after, UNLOADS, **PREDICT) - unloads0 >= expected_loads
    assert prom.total(after, "ray_serve_num_multiplexed_models", **PREDICT) == cap


def test_unknown_tenant_is_404(http: httpx.Client) -> None:
    r = http.post("/predict", json={"features": [1.0] * tenants.N_FEATURES},
                  headers={"serve_multiplexed_model_id": "no-such-tenant"})
    assert r.status_code == 404
    assert r.json()["error"]["param"] == "serve_multiplexed_model_id"
