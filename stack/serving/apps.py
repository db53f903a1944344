"""Serve application builders for the non-LLM routes; the Serve configs name them as import paths.

Each takes its settings from `args` (stack.serving.settings) and fails the deploy, naming the arg, when
one is missing or bad.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray.serve.deployment import Application

from stack.serving.embedder import embedder
from stack.serving.pipeline import Classifier, Postprocessor, Preprocessor, pipeline
from stack.serving.settings import AppArgs, PredictArgs, parse_args
from stack.serving.tenant_models import tenant_models


def embed_app(args: Mapping[str, Any]) -> Application:
    settings = parse_args(AppArgs, args, "embed")
    return embedder(settings.api, settings.faults).bind()


def classify_app(args: Mapping[str, Any]) -> Application:
    settings = parse_args(AppArgs, args, "classify")
    return pipeline(settings.api, settings.faults).bind(
        Preprocessor.bind(settings.faults), Classifier.bind(), Postprocessor.bind())


def predict_app(args: Mapping[str, Any]) -> Application:
    settings = parse_args(PredictArgs, args, "predict")
    deployment = tenant_models(settings.api, settings.tenants, settings.max_num_models_per_replica,
                               settings.faults)
    return deployment.bind(settings.model_store)
