"""Serve application builder for the LLM app: ray.serve.llm's OpenAI app over our model paths.

`serve deploy stack/serve/cpu.yaml` imports `stack.llm_app:build_app` with the file's args.
"""

from __future__ import annotations

from typing import Any

from ray.serve.llm import build_openai_app

from stack import ROOT


def resolve_source(source: str) -> str:
    """A relative model_source names a directory under the project root (e.g. .models/tiny-llama).

    Anything else, an absolute path or a hub id, passes through unchanged.
    """
    candidate = ROOT / source
    if not source.startswith("/") and candidate.is_dir():
        return str(candidate)
    return source


def with_resolved_sources(args: dict[str, Any]) -> dict[str, Any]:
    configs = []
    for cfg in args["llm_configs"]:
        loading = dict(cfg["model_loading_config"])
        loading["model_source"] = resolve_source(loading["model_source"])
        configs.append({**cfg, "model_loading_config": loading})
    return {**args, "llm_configs": configs}


def build_app(args: dict[str, Any]):
    return build_openai_app(with_resolved_sources(args))
