"""/classify: the guide's sequential pipeline through DeploymentHandles.

Pipeline (ingress) -> Preprocessor -> Classifier (-> Embedder of the embed app) -> Postprocessor.
"""

# No `from __future__ import annotations`: FastAPI reads the route's body type from the annotation, and
# the type is built in pipeline() from the app's limits.

import json
import re
import unicodedata
from typing import Any

from ray import serve
from ray.serve.deployment import Deployment
from ray.serve.handle import DeploymentHandle

from stack.serving.api_errors import ERROR_RESPONSES
from stack.serving.faults import FaultInjector
from stack.serving.http_api import new_api
from stack.serving.observability.logs import install_trace_log_filter
from stack.serving.observability.metrics import metrics
from stack.serving.observability.tracing import span
from stack.serving.schemas import ClassifyResponse, request_models
from stack.serving.settings import ApiLimits, FaultSettings
from stack.serving.watchdog import Watchdog, Watched

EMBED_APP, EMBEDDER = "embed", "Embedder"


@serve.deployment(name="Preprocessor")
class Preprocessor(Watched):
    """A leaf with the watchdog: its check_health fails once a request has run past watchdog_s.

    With the fault hook on, a hang here is a half-alive replica: Serve's health check (the event loop)
    passes while its requests never finish, which only the watchdog turns into a failed check.
    """

    def __init__(self, faults: FaultSettings | None = None) -> None:
        install_trace_log_filter()
        self.watchdog = Watchdog()
        self.faults = FaultInjector.from_settings(faults) if faults is not None else None

    async def preprocess(self, text: str) -> dict[str, Any]:
        # Async, so a hung request leaves the event loop (and Serve's health check) free; tracked
        # from the start, so time in the fault hook counts.
        with self.watchdog.track():
            if self.faults is not None:
                await self.faults.apply()
            return self._preprocess(text)

    def _preprocess(self, text: str) -> dict[str, Any]:
        with span("pipeline.preprocess", chars=len(text)):
            # NFKC folds look-alike characters; control characters say nothing about sentiment.
            cleaned = unicodedata.normalize("NFKC", text)
            cleaned = "".join(c for c in cleaned if unicodedata.category(c)[0] != "C" or c in "\n\t")
            cleaned = re.sub(r"\s+", " ", cleaned).strip()
            return {"text": cleaned or text, "chars": len(text)}


@serve.deployment(name="Classifier")
class Classifier:
    """Sentiment head (trained at setup) on MiniLM embeddings from the /embed app's Embedder."""

    def __init__(self) -> None:
        import joblib

        from stack.serving.models import SENTIMENT

        install_trace_log_filter()
        with span("model.load", model="sentiment-head"):
            self.head = joblib.load(SENTIMENT / "head.joblib")
            self.labels = json.loads((SENTIMENT / "meta.json").read_text())["labels"]
        self._embedder: DeploymentHandle | None = None

    @property
    def embedder(self) -> DeploymentHandle:
        # Looked up on first use: the embed app may still be deploying when this replica starts.
        if self._embedder is None:
            self._embedder = serve.get_deployment_handle(EMBEDDER, app_name=EMBED_APP)
        return self._embedder

    async def classify(self, pre: dict[str, Any]) -> dict[str, Any]:
        with span("pipeline.classify"):
            embedded = await self.embedder.embed_texts.remote([pre["text"]])
            probs = self.head.predict_proba(embedded.vectors)[0]
        return {"scores": {label: float(p) for label, p in zip(self.labels, probs, strict=True)},
                "tokens": embedded.tokens}


@serve.deployment(name="Postprocessor")
class Postprocessor:
    def __init__(self) -> None:
        install_trace_log_filter()

    def format_response(self, classified: dict[str, Any]) -> dict[str, Any]:
        with span("pipeline.postprocess"):
            scores = classified["scores"]
            label = max(scores, key=scores.get)
            m = metrics()
            m.predictions.inc(tags={"label": label})
            m.classifier_confidence.observe(scores[label], tags={"label": label})
            return {"label": label, "confidence": round(scores[label], 4),
                    "scores": {k: round(v, 4) for k, v in scores.items()}}


def pipeline(limits: ApiLimits, faults: FaultSettings | None = None) -> Deployment:
    """The Pipeline ingress, its route bounded by the limits in the app's args; with `faults`, the
    fault hook on its requests (and the mapping of a fault the Preprocessor raises)."""
    models = request_models(limits)
    api = new_api("serveops /classify", limits, faults)

    @serve.deployment(name="Pipeline")
    @serve.ingress(api)
    class Pipeline:
        def __init__(self, preprocessor: DeploymentHandle, classifier: DeploymentHandle,
                     postprocessor: DeploymentHandle) -> None:
            self.preprocessor, self.classifier, self.postprocessor = preprocessor, classifier, postprocessor
            install_trace_log_filter()

        @api.post("/", response_model=ClassifyResponse, responses=ERROR_RESPONSES)
        async def classify(self, body: models.ClassifyRequest) -> ClassifyResponse:
            pre = await self.preprocessor.preprocess.remote(body.text)
            classified = await self.classifier.classify.remote(pre)
            m = metrics()
            m.input_chars.observe(len(body.text), tags={"route": "/classify"})
            m.input_tokens.observe(classified["tokens"], tags={"route": "/classify"})
            return ClassifyResponse(**await self.postprocessor.format_response.remote(classified))

    return Pipeline
