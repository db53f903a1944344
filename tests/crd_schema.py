"""Validate Kubernetes objects against CRD OpenAPI v3 schemas with jsonschema, as strictly as the API server.

The CRDs are copied into tests/data/crds/ (sources and licenses in its README). A CRD schema is
plain JSON Schema except for:
- unknown fields: the API server prunes them, and rejects them under kubectl's default
  --validate=strict; JSON Schema allows them. Objects with `properties` get additionalProperties: false
  unless they set x-kubernetes-preserve-unknown-fields.
- `nullable: true`: null is then allowed beside the type.
- x-kubernetes-int-or-string: already spelt as anyOf integer/string in these CRDs (added where not).
- x-kubernetes-list-type: map (unique keys) and set (unique items) are checked below; other
  x-kubernetes-* keys (map-type, CEL validations on update-only rules) have no JSON Schema meaning.
- Go's regexp accepts flags mid-pattern, `^(?i)...`; Python only at the start, so they move there.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema.exceptions import ValidationError

from stack import ROOT

REFERENCE = ROOT / "tests" / "data" / "crds"
CRD_FILES = {
    ("ray.io/v1", "RayService"): "ray.io_rayservices.yaml",
    ("monitoring.coreos.com/v1", "PodMonitor"):
        "monitoring.coreos.com_podmonitors.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"):
        "monitoring.coreos.com_prometheusrules.yaml",
    # Chaos Mesh: the resources of stack/k8s/chaos-mesh/ (tests/test_chaos_mesh.py).
    ("chaos-mesh.org/v1alpha1", "PodChaos"): "chaos-mesh.org_podchaos.yaml",
    ("chaos-mesh.org/v1alpha1", "NetworkChaos"): "chaos-mesh.org_networkchaos.yaml",
    ("chaos-mesh.org/v1alpha1", "StressChaos"): "chaos-mesh.org_stresschaos.yaml",
    ("chaos-mesh.org/v1alpha1", "HTTPChaos"): "chaos-mesh.org_httpchaos.yaml",
    ("chaos-mesh.org/v1alpha1", "Workflow"): "chaos-mesh.org_workflows.yaml",
    ("chaos-mesh.org/v1alpha1", "Schedule"): "chaos-mesh.org_schedules.yaml",
}
# libyaml's loader where built in: Chaos Mesh's Workflow and Schedule CRDs are most of a megabyte each.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SUBSCHEMA_LISTS = ("anyOf", "allOf", "oneOf")
_INLINE_FLAGS = re.compile(r"\(\?([aiLmsux]+)\)")


def _pattern(pattern: str) -> str:
    try:
        re.compile(pattern)
        return pattern
    except re.error:
        flags = "".join(_INLINE_FLAGS.findall(pattern))
        return f"(?{flags})" + _INLINE_FLAGS.sub("", pattern)


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The CRD schema as JSON Schema with the API server's strictness (see the module docstring)."""
    out = {k: v for k, v in schema.items() if k not in ("properties", "items", "additionalProperties")}
    if "properties" in schema:
        out["properties"] = {name: strict(sub) for name, sub in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(schema.get("items"), dict):
        out["items"] = strict(schema["items"])
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = strict(schema["additionalProperties"])
    elif "additionalProperties" in schema:
        out["additionalProperties"] = schema["additionalProperties"]
    for key in _SUBSCHEMA_LISTS:
        if key in schema:
            out[key] = [strict(s) for s in schema[key]]
    if schema.get("nullable") and "type" in schema:
        out["type"] = [schema["type"], "null"]
    if schema.get("x-kubernetes-int-or-string") and "anyOf" not in schema:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "pattern" in schema:
        out["pattern"] = _pattern(schema["pattern"])
    return out


def _list_type(validator: Any, kind: str, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "array"):
        return
    if kind == "set":
        seen: list[Any] = []
        for item in instance:
            if item in seen:
                yield ValidationError(f"duplicate item {item!r} in a list of type set")
            seen.append(item)
    elif kind == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        # A key left out takes its default (a port's protocol is TCP), as the API server defaults it first.
        fields = (schema.get("items") or {}).get("properties", {})
        seen_keys: set[str] = set()
        for item in instance:
            if isinstance(item, dict):
                key = repr({k: item.get(k, fields.get(k, {}).get("default")) for k in keys})
                if key in seen_keys:
                    yield ValidationError(f"duplicate entry {key} in a list keyed by {keys}")
                seen_keys.add(key)


# Draft 7 without the metaschema check: CRD schemas are OpenAPI, not JSON Schema documents.
Validator = jsonschema.validators.extend(jsonschema.Draft7Validator, {"x-kubernetes-list-type": _list_type})


def crd_path(api_version: str, kind: str) -> Path:
    return REFERENCE / CRD_FILES[(api_version, kind)]


@functools.cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The strict openAPIV3Schema of the CRD's version that api_version names."""
    crd = yaml.load(crd_path(api_version, kind).read_text(), Loader=_LOADER)
    version = api_version.rsplit("/", 1)[-1]
    (found,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return strict(found["schema"]["openAPIV3Schema"])


def subschema(api_version: str, kind: str, *path: str) -> dict[str, Any]:
    """A nested schema, e.g. the PodTemplateSpec a CRD embeds: path through properties and items."""
    node = crd_schema(api_version, kind)
    for step in path:
        node = node["items"] if step == "[]" else node["properties"][step]
    return node


def errors(schema: dict[str, Any], instance: Any) -> list[str]:
    found = sorted(Validator(schema).iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in found]
