"""What Promtail's pipeline makes of one log line: the json stage's JMESPath expressions, then the stages
that read the extracted map (labels, structured_metadata, timestamp)."""

from __future__ import annotations

import json
from typing import Any

import jmespath
import yaml

from stack.artifacts import MANIFESTS_DIR
from stack.k8s import promtail


def config() -> dict[str, Any]:
    """The Promtail config as the Ray pods mount it: the ConfigMap in the manifests."""
    for doc in yaml.safe_load_all((MANIFESTS_DIR / "20-promtail.yaml").read_text()):
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == promtail.CONFIGMAP:
            return yaml.safe_load(doc["data"][promtail.CONFIG_KEY])
    raise AssertionError(f"no ConfigMap {promtail.CONFIGMAP} in 20-promtail.yaml")


def stages(cfg: dict[str, Any]) -> dict[str, Any]:
    """The serve job's pipeline stages by name (each appears once)."""
    (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "serve"]
    found: dict[str, Any] = {}
    for stage in job["pipeline_stages"]:
        ((name, body),) = stage.items()
        assert name not in found, f"stage {name} twice"
        found[name] = body
    return found


def expressions(cfg: dict[str, Any]) -> dict[str, str]:
    return dict(stages(cfg)["json"]["expressions"])


def extract(cfg: dict[str, Any], line: str) -> dict[str, Any]:
    """The json stage's extracted map: a name for each expression that finds a value in the line."""
    record = json.loads(line)
    found = {name: jmespath.search(expr, record) for name, expr in expressions(cfg).items()}
    return {name: value for name, value in found.items() if value is not None}


def extracted_names_read(cfg: dict[str, Any]) -> set[str]:
    """Every extracted name a later stage reads."""
    s = stages(cfg)
    return {*s["labels"].values(), *s["structured_metadata"].values(), s["timestamp"]["source"]}
