"""Serve application builders for the non-LLM routes; the Serve configs name them as import paths."""

from __future__ import annotations

from typing import Any

from ray.serve.deployment import Application

from stack.serving.embedder import Embedder
from stack.serving.pipeline import Classifier, Pipeline, Postprocessor, Preprocessor
from stack.serving.tenant_models import tenant_models


def embed_app(args: dict[str, Any]) -> Application:
    return Embedder.bind()


def classify_app(args: dict[str, Any]) -> Application:
    return Pipeline.bind(Preprocessor.bind(), Classifier.bind(), Postprocessor.bind())


def predict_app(args: dict[str, Any]) -> Application:
    # model_store (relative to the repo): where the tenants' models are; a new release may point elsewhere.
    return tenant_models(int(args["max_num_models_per_replica"])).bind(args.get("model_store"))
