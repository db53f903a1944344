"""Run by tests/test_serving_isolation.py in a child process that has only the serving code.

Usage: isolated_replica.py SERVE_CONFIG OUT_JSON. The child's `stack` package is a copy holding only
stack/__init__.py and stack/serving/ (no ops.yaml, no stack.config); every other stack package is
refused on import. It builds each non-LLM app from the Serve config exactly as Serve does
(import_path called with args), instantiates the ingress deployment's class and drives its FastAPI app
with a TestClient, then writes what it saw to OUT_JSON for the test to check.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.abc
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

# Operating-side packages: a replica must never need them.
FORBIDDEN = ("stack.config", "stack.serve_config", "stack.local", "stack.tools", "stack.k8s")


class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if any(fullname == f or fullname.startswith(f + ".") for f in FORBIDDEN):
            raise ImportError(f"{fullname} imported inside a replica: only the Serve config may reach it")
        return None


def isolate() -> None:
    # The editable install maps `stack.*` to the repository as a fallback; this process must not see it.
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in type(f).__module__
                        and "__editable__" not in getattr(f, "__module__", "")]
    sys.meta_path.insert(0, Refuse())


class Recorder:
    """Stands in for one serveops metric, appending each sample's tags (the tier, for /predict) to a file.

    A file, not a list: Serve pickles the ingress's FastAPI app, and the routes of an app built in a
    function travel by value, with a copy of every object they reach.
    """

    def __init__(self, name: str, sink: Path) -> None:
        self.name, self.sink = name, sink

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        with self.sink.open("a") as out:
            out.write(json.dumps({"metric": self.name, "tags": tags or {}}) + "\n")

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.inc(value, tags)


def record_metrics(sink: Path) -> None:
    """Before any serving module binds metrics(): swap in recorders."""
    from stack.serving.observability import metrics

    fake = metrics.Metrics(**{f.name: Recorder(f.name, sink) for f in dataclasses.fields(metrics.Metrics)})
    metrics.metrics = lambda: fake


def samples(sink: Path) -> list[dict[str, Any]]:
    """The samples recorded since the last call."""
    lines = sink.read_text().splitlines() if sink.exists() else []
    sink.write_text("")
    return [json.loads(line) for line in lines]


class Replica:
    """One instance of an ingress deployment's class as Serve makes it (constructor, then reconfigure
    with the Serve config's user_config), serving its FastAPI app through a TestClient."""

    current: Any = None  # what serve.get_replica_context() returns here

    def __init__(self, application: Any, entry: dict[str, Any], *init_args: Any) -> None:
        from fastapi.testclient import TestClient

        deployment = application._bound_deployment
        cls = deployment.func_or_class
        self.instance = object.__new__(cls)
        # Serve's class-based routes and @serve.batch read the replica context; this is the part they use.
        self.context = SimpleNamespace(servable_object=self.instance,
                                       _deployment_config=deployment._deployment_config,
                                       app_name=entry["name"], deployment=deployment.name)
        Replica.current = self.context
        args = init_args or deployment.init_args
        asyncio.run(cls.__init__(self.instance, *args, **deployment.init_kwargs))  # Serve's is async
        for options in entry.get("deployments", []):
            if options["name"] == deployment.name and "user_config" in options:
                self.instance.reconfigure(options["user_config"])
        self.client = TestClient(self.instance.app)

    def post(self, **kwargs: Any) -> Any:
        Replica.current = self.context
        return self.client.post("/", **kwargs)

    def spec(self, model: str, field: str) -> dict[str, Any]:
        return self.client.get("/openapi.json").json()["components"]["schemas"][model]["properties"][field]


class Handle:
    """A DeploymentHandle's method: .remote(...) returns an awaitable of the local call."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def remote(self, *args: Any) -> Any:
        async def call() -> Any:
            out = self.target(*args)
            return await out if asyncio.iscoroutine(out) else out

        return call()


def handle_of(application: Any, method: str) -> SimpleNamespace:
    """A handle to a plain (non-ingress) deployment of the app, instantiated here."""
    instance = application._bound_deployment.func_or_class()
    return SimpleNamespace(**{method: Handle(getattr(instance, method))})


def error_of(response: Any) -> dict[str, Any]:
    return {"status": response.status_code, "error": response.json().get("error")}


def main(config_path: str, out_path: str) -> None:
    isolate()
    import yaml
    from ray import serve
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    import stack

    sink = Path(out_path).with_suffix(".metrics.jsonl")
    record_metrics(sink)
    serve.get_replica_context = lambda: Replica.current

    config = yaml.safe_load(Path(config_path).read_text())
    report: dict[str, Any] = {
        "stack_root": str(stack.ROOT),
        "ops_yaml_exists": (stack.ROOT / "stack" / "ops.yaml").exists(),
        "forbidden": {},
        "apps": {},
    }
    for name in FORBIDDEN:
        try:
            __import__(name)
            report["forbidden"][name] = "imported"
        except ImportError as err:
            report["forbidden"][name] = str(err)

    apps = {a["name"]: a for a in config["applications"] if a["name"] != "llm"}
    built = {name: call_user_app_builder_with_args_if_necessary(import_attr(a["import_path"]), a["args"])
             for name, a in apps.items()}

    # /embed: an Embedder replica, MiniLM and @serve.batch included.
    embedder = Replica(built["embed"], apps["embed"])
    limit = apps["embed"]["args"]["api"]["max_text_chars"]
    ok = embedder.post(json={"text": ["first text", "second text"]})
    report["apps"]["embed"] = {
        "ok": {"status": ok.status_code, "vectors": len(ok.json().get("embeddings", []))},
        "spec_max_length": embedder.spec("EmbedRequest", "text")["anyOf"][0]["maxLength"],
        "over_limit": error_of(embedder.post(json={"text": "x" * (limit + 1)})),
    }

    # /classify: a Pipeline replica over the real Preprocessor and Postprocessor and a stand-in Classifier
    # (the real one calls the /embed app through Serve).
    pre, _, post = built["classify"]._bound_deployment.init_args
    classifier = SimpleNamespace(classify=Handle(lambda p: {"scores": {"negative": 0.1, "positive": 0.9},
                                                            "tokens": len(p["text"].split())}))
    pipeline = Replica(built["classify"], apps["classify"], handle_of(pre, "preprocess"), classifier,
                       handle_of(post, "format_response"))
    limit = apps["classify"]["args"]["api"]["max_text_chars"]
    ok = pipeline.post(json={"text": "The rollout  went smoothly."})
    report["apps"]["classify"] = {
        "ok": {"status": ok.status_code, "body": ok.json()},
        "spec_max_length": pipeline.spec("ClassifyRequest", "text")["maxLength"],
        "at_limit": pipeline.post(json={"text": "x" * limit}).status_code,
        "over_limit": error_of(pipeline.post(json={"text": "x" * (limit + 1)})),
        "not_json": error_of(pipeline.post(content="x", headers={"Content-Type": "text/plain"})),
    }

    # /predict: a TenantModels replica on the real tenant store, loading each model with get_model's own
    # code (minus Serve's multiplexing cache, which needs a controller).
    predict = Replica(built["predict"], apps["predict"])
    load_model = type(predict.instance).get_model.__wrapped__
    predict.instance.get_model = lambda tenant: load_model(predict.instance, tenant)
    features = [0.5, -1, 2, 0, 1.5, -0.25, 3, 1]
    tenants = {}
    for tenant in ("acme", "initech", "hooli"):
        samples(sink)
        response = predict.post(json={"features": features}, headers={"serve_multiplexed_model_id": tenant})
        tiers = {s["tags"]["tier"] for s in samples(sink) if "tier" in s["tags"]}
        tenants[tenant] = {"status": response.status_code, "tiers": sorted(tiers)}
    long_id = "a" * (apps["predict"]["args"]["api"]["max_tenant_id_chars"] + 1)
    too_many = [1] * (apps["predict"]["args"]["api"]["max_features"] + 1)
    headers = {"serve_multiplexed_model_id": "acme"}
    report["apps"]["predict"] = {
        "tenants": tenants,
        "long_tenant_id": error_of(predict.post(json={"features": features},
                                                headers={"serve_multiplexed_model_id": long_id})),
        "too_many_features": error_of(predict.post(json={"features": too_many}, headers=headers)),
    }
    Path(out_path).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:3])
