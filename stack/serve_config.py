"""Generate the Serve config files (stack/serve/<profile>.yaml) from the ops config.

The files are what `serve deploy` and `serve run` read; they are committed, and a test fails
when they drift from this generator. `make up` deploys the same document, with run-time
overrides (LLM_MODEL) applied, and keeps the deployed copy in .run/.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from stack import ROOT
from stack.config import OpsConfig, Profile, load
from stack.profile import PROFILES

SERVE_DIR = ROOT / "stack" / "serve"
HEADER = "# Generated from stack/ops.yaml by `python -m stack.serve_config`. Do not edit.\n"
LLM_APP = "llm"
# The non-LLM applications: name -> (route prefix, builder). Routes are a contract, not a setting.
MODEL_APPS = {
    "embed": ("/embed", "stack.serving.apps:embed_app"),
    "classify": ("/classify", "stack.serving.apps:classify_app"),
    "predict": ("/predict", "stack.serving.apps:predict_app"),
}


def serve_config_path(profile: str) -> Path:
    return SERVE_DIR / f"{profile}.yaml"


def llm_application(profile: Profile) -> dict[str, Any]:
    return {
        "name": LLM_APP,
        "route_prefix": "/",
        "import_path": "stack.serving.llm_app:build_app",
        "runtime_env": {"env_vars": dict(profile.cluster.env)},
        "args": {
            "llm_configs": [m.to_llm_config() for m in profile.llm.models],
            "ingress_deployment_config": profile.llm.ingress.to_serve(),
        },
    }


def model_application(name: str, profile: Profile) -> dict[str, Any]:
    route_prefix, import_path = MODEL_APPS[name]
    deployments = profile.apps[name]
    args: dict[str, Any] = {}
    for opts in deployments.values():
        if opts.max_num_models_per_replica:
            args["max_num_models_per_replica"] = opts.max_num_models_per_replica
    return {
        "name": name,
        "route_prefix": route_prefix,
        "import_path": import_path,
        "args": args,
        "deployments": [{"name": dep_name, **opts.to_serve()} for dep_name, opts in deployments.items()],
    }


def build(ops: OpsConfig, profile_name: str) -> dict[str, Any]:
    profile = ops.profile(profile_name)
    missing = set(MODEL_APPS) - set(profile.apps)
    if missing:
        raise ValueError(f"profile {profile_name} has no settings for apps {sorted(missing)}")
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": ops.listen.host, "port": ops.listen.serve_port},
        # JSON lines, each with Serve's request_id; stack.serving.observability.logs adds the trace id.
        "logging_config": {"encoding": "JSON", "log_level": "INFO", "enable_access_log": True},
        "applications": [llm_application(profile), *(model_application(n, profile) for n in MODEL_APPS)],
    }


def apply_overrides(config: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """LLM_MODEL=<local dir or hub id> replaces the first model; LLM_MODEL_ID names it."""
    source = env.get("LLM_MODEL", "").strip()
    if not source:
        return config
    app = next(a for a in config["applications"] if a["name"] == LLM_APP)
    loading = app["args"]["llm_configs"][0]["model_loading_config"]
    loading["model_source"] = source
    loading["model_id"] = env.get("LLM_MODEL_ID") or Path(source.rstrip("/")).name
    return config


def effective(profile_name: str, env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The Serve config `make up` deploys."""
    return apply_overrides(build(load(), profile_name), env)


def render(config: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(config, sort_keys=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed file differs")
    args = parser.parse_args()
    stale = []
    for profile in PROFILES:
        path, text = serve_config_path(profile), render(build(load(), profile))
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print("stale, run `python -m stack.serve_config`: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
