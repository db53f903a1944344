"""/predict: per-tenant scikit-learn models through @serve.multiplexed.

The header serve_multiplexed_model_id names the tenant; Serve routes to a replica that has its model.
"""

# No `from __future__ import annotations`: FastAPI reads the route's body and header types from the
# annotations, and the types are built in tenant_models() from the app's limits.

import asyncio
import time
from typing import Annotated, Any

from fastapi import Header
from ray import serve
from ray.serve.deployment import Deployment

from stack.serving.api_errors import ERROR_RESPONSES, ApiError
from stack.serving.http_api import new_api
from stack.serving.models import PROJECT_ROOT, TENANT_STORE
from stack.serving.observability.logs import install_trace_log_filter
from stack.serving.observability.metrics import metrics, outcome
from stack.serving.observability.tracing import span
from stack.serving.schemas import PredictResponse, request_models
from stack.serving.settings import ApiLimits, FaultSettings, Tenants

HEADER = "serve_multiplexed_model_id"


def _scalar(value: Any) -> float | int | str:
    return value.item() if hasattr(value, "item") else value


def tenant_models(limits: ApiLimits, tenants: Tenants, max_models: int,
                  faults: FaultSettings | None = None) -> Deployment:
    """The deployment, with the app's args baked in: its limits, the tenants' tiers (metric and span
    labels), the multiplex cache size, and the fault hook when `faults` is set."""
    models = request_models(limits)
    api = new_api("serveops /predict", limits, faults)

    @serve.deployment(name="TenantModels")
    @serve.ingress(api)
    class TenantModels:
        def __init__(self, store: str | None = None) -> None:
            install_trace_log_filter()
            self.store = TENANT_STORE if store is None else PROJECT_ROOT / store
            # Fail the replica, not the first request: a rollout naming a missing store must not go healthy.
            if not any(self.store.glob("*.joblib")):
                raise FileNotFoundError(f"no tenant models in {self.store}")

        @serve.multiplexed(max_num_models_per_replica=max_models)
        async def get_model(self, tenant: str) -> Any:
            import joblib

            with span("model.load", **{"tenant.tier": tenants.tier(tenant)}):
                try:
                    return await asyncio.to_thread(joblib.load, self.store / f"{tenant}.joblib")
                except Exception:
                    metrics().model_load_failures.inc(tags={"model_kind": "tenant"})
                    raise

        @api.post("/", response_model=PredictResponse, responses=ERROR_RESPONSES)
        async def predict(
            self,
            body: models.PredictRequest,
            tenant: Annotated[models.TenantId, Header(alias=HEADER, convert_underscores=False,
                                               description="Tenant id; selects the model.")],
        ) -> PredictResponse:
            tier, started, status = tenants.tier(tenant), time.perf_counter(), 500
            try:
                response = await self._predict(tenant, body)
                status = 200
                return response
            except ApiError as err:
                status = err.status
                raise
            finally:
                m = metrics()
                m.tenant_requests.inc(tags={"tier": tier, "outcome": outcome(status)})
                m.tenant_latency_ms.observe((time.perf_counter() - started) * 1000, tags={"tier": tier})

        async def _predict(self, tenant: str, body: models.PredictRequest) -> PredictResponse:
            if not (self.store / f"{tenant}.joblib").is_file():
                raise ApiError(404, f"no model for tenant {tenant!r}", HEADER, "not_found")
            try:
                model = await self.get_model(tenant)
            except Exception as err:
                raise ApiError(503, f"the model for tenant {tenant!r} failed to load: {type(err).__name__}",
                               HEADER, "model_load_failed") from err
            expected = int(model.n_features_in_)
            if len(body.features) != expected:
                raise ApiError(422, f"features: this tenant's model takes {expected} features, "
                                    f"got {len(body.features)}", "features")
            prediction = model.predict([body.features])[0]
            return PredictResponse(tenant=tenant, prediction=_scalar(prediction), model=type(model).__name__)

    return TenantModels
