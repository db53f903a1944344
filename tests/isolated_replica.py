"""Run by tests/test_serving_isolation.py in a child process that has only the serving code.

Usage: isolated_replica.py SERVE_CONFIG OUT_JSON. The child's `stack` package is a copy holding only
stack/__init__.py and stack/serving/ (no ops.yaml, no stack.config); every other stack package is
refused on import. It builds each non-LLM app from the Serve config exactly as Serve does
(import_path called with args), instantiates the ingress deployment's class and drives its FastAPI app
with a TestClient, then writes what it saw to OUT_JSON for the test to check.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.abc
import json
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote

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
    with the Serve config's user_config), serving its FastAPI app through a TestClient.

    Replicas given one portal serve on one event loop, as a Serve replica does: @serve.batch's queue
    belongs to the loop of its first call. Without one, each request gets a fresh loop.
    """

    current: Any = None  # what serve.get_replica_context() returns here

    def __init__(self, application: Any, entry: dict[str, Any], *init_args: Any, portal: Any = None,
                 **init_kwargs: Any) -> None:
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
        kwargs = {**deployment.init_kwargs, **init_kwargs}
        asyncio.run(cls.__init__(self.instance, *args, **kwargs))  # Serve's is async
        for options in entry.get("deployments", []):
            if options["name"] == deployment.name and "user_config" in options:
                self.instance.reconfigure(options["user_config"])
        self.client = TestClient(self.instance.app)
        self.client.portal = portal  # TestClient runs requests on this portal's loop when set

    def request(self, method: str, path: str = "/", **kwargs: Any) -> Any:
        Replica.current = self.context
        return self.client.request(method, path, **kwargs)

    def post(self, **kwargs: Any) -> Any:
        return self.request("POST", "/", **kwargs)

    def asgi(self, method: str, path: str, headers: Sequence[tuple[bytes, bytes]] = (),
             chunks: Sequence[bytes] = ()) -> Answer:
        """A raw ASGI request (asgi_request) on this replica's loop: exact header bytes, chunked bodies."""
        Replica.current = self.context
        return asgi_request(self.instance.app, method, path, headers, chunks, self.client.portal)

    def spec(self, model: str, field: str) -> dict[str, Any]:
        return self.openapi()["components"]["schemas"][model]["properties"][field]

    def openapi(self) -> dict[str, Any]:
        return self.request("GET", "/openapi.json").json()


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


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes
    chunks_read: int  # of the request body


def asgi_request(app: Any, method: str, path: str, headers: Sequence[tuple[bytes, bytes]] = (),
                 chunks: Sequence[bytes] = (), portal: Any = None) -> Answer:
    """One request as raw ASGI, and what came back.

    Raw because a TestClient cannot send some requests a server hands on: it re-encodes header values as
    UTF-8 (b"\\xff" arrives as b"\\xc3\\xbf") and joins a streamed body into one message. Here each chunk
    is its own message (more_body until the last) and the headers are the bytes given. On the portal's
    event loop when one is given (a replica's, for @serve.batch), else on a fresh one.
    """
    read, sent = 0, []
    raw_path, _, query = path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": unquote(raw_path), "raw_path": raw_path.encode(), "root_path": "",
             "query_string": query.encode(), "headers": list(headers), "client": ("127.0.0.1", 1),
             "server": ("testserver", 80), "state": {}}

    async def call() -> None:
        done = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal read
            if read >= max(len(chunks), 1):  # all of the body is in: the client waits for the answer
                await done.wait()
                return {"type": "http.disconnect"}
            read += 1
            return {"type": "http.request", "body": chunks[read - 1] if chunks else b"",
                    "more_body": read < len(chunks)}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                done.set()

        await app(scope, receive, send)

    if portal is None:
        asyncio.run(call())
    else:
        portal.call(call)
    start = next(m for m in sent if m["type"] == "http.response.start")
    content_type = dict(start.get("headers", [])).get(b"content-type", b"").decode("latin-1")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Answer(start["status"], content_type, body, read)


def chunked_post(app: Any, path: str, chunks: list[bytes],
                 headers: tuple[tuple[bytes, bytes], ...] = ((b"content-type", b"application/json"),)
                 ) -> Answer:
    """POST a body in chunks with no Content-Length, as a server hands on a chunked body."""
    return asgi_request(app, "POST", path, [*headers, (b"transfer-encoding", b"chunked")], chunks)


def build(config: dict[str, Any], names: tuple[str, ...] = ("embed", "classify", "predict")
          ) -> dict[str, Any]:
    """Each named app, built from its Serve config entry exactly as Serve does (import_path with args)."""
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    apps = {a["name"]: a for a in config["applications"] if a["name"] in names}
    return {name: call_user_app_builder_with_args_if_necessary(import_attr(a["import_path"]), a["args"])
            for name, a in apps.items()}


def entry_of(config: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in config["applications"] if a["name"] == name)


def stand_in_classifier() -> SimpleNamespace:
    """The Classifier's handle, answering without a model (the real one calls the /embed app via Serve)."""
    return SimpleNamespace(classify=Handle(lambda p: {"scores": {"negative": 0.1, "positive": 0.9},
                                                      "tokens": len(p["text"].split())}))


def real_classifier(application: Any, embedder: Replica) -> SimpleNamespace:
    """The Classifier deployment with its sentiment head, calling this process's Embedder replica."""
    instance = application._bound_deployment.func_or_class()
    instance._embedder = SimpleNamespace(embed_texts=Handle(embedder.instance.embed_texts))
    return SimpleNamespace(classify=Handle(instance.classify))


def pipeline_replica(built: Any, entry: dict[str, Any], classifier: SimpleNamespace,
                     portal: Any = None) -> Replica:
    """A Pipeline replica over the real Preprocessor and Postprocessor and the given Classifier handle."""
    pre, _, post = built._bound_deployment.init_args
    return Replica(built, entry, handle_of(pre, "preprocess"), classifier, handle_of(post, "format_response"),
                   portal=portal)


def predict_replica(built: Any, entry: dict[str, Any], portal: Any = None) -> Replica:
    """A TenantModels replica on the real tenant store, loading each model with get_model's own code
    (minus Serve's multiplexing cache, which needs a controller)."""
    predict = Replica(built, entry, portal=portal)
    load_model = type(predict.instance).get_model.__wrapped__
    predict.instance.get_model = lambda tenant: load_model(predict.instance, tenant)
    return predict


class FakeLLMServer:
    """Stands in for ray.serve.llm's LLMServer: the server a one-hop ingress (the one_hop_llm lever) starts
    in its own replica, and the one a two-hop ingress's handle (FakeLLM) reaches. Answers "ok" in one
    token in LLMServer's shapes: the response model, or for a stream lists of SSE strings (its batched
    stream, the last list ending in [DONE]), with the usage chunk only when the request asks for it.
    Records what it was sent, and whether it started, is healthy and was stopped. No engine."""

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.started = self.stopped = False
        self.seen: list[Any] = []
        self.healthy = True

    async def start(self) -> None:
        self.started = True

    async def chat(self, body: Any, raw: Any = None) -> AsyncIterator[Any]:
        return self._take(body, chat=True)

    async def completions(self, body: Any, raw: Any = None) -> AsyncIterator[Any]:
        return self._take(body, chat=False)

    def _take(self, body: Any, chat: bool) -> AsyncIterator[Any]:
        from ray import serve

        # As LLMServer does: a multiplexed model id is a LoRA adapter to load, and none is configured.
        if serve.get_multiplexed_model_id():
            raise ValueError("Must setup lora config for multiplexed requests.")
        self.seen.append(body)
        return self._answer(body, chat)

    async def _answer(self, body: Any, chat: bool) -> AsyncIterator[Any]:
        from ray.llm._internal.serve.core.configs import openai_api_models as m

        usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        if not body.stream:
            choice = ({"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
                      if chat else {"index": 0, "text": "ok", "finish_reason": "stop"})
            model = m.ChatCompletionResponse if chat else m.CompletionResponse
            yield model.model_validate({"model": self.model_id, "choices": [choice], "usage": usage})
            return
        kind = "chat.completion.chunk" if chat else "text_completion"
        choice = {"index": 0, "delta": {"content": "ok"}} if chat else {"index": 0, "text": "ok"}
        token = {"id": "c1", "object": kind, "model": self.model_id, "choices": [choice]}
        last = ([{"id": "c1", "object": kind, "model": self.model_id, "choices": [], "usage": usage}]
                if body.stream_options and body.stream_options.include_usage else [])
        yield [f"data: {json.dumps(token)}\n\n"]
        yield [*(f"data: {json.dumps(e)}\n\n" for e in last), "data: [DONE]\n\n"]

    async def check_health(self) -> None:
        if not self.healthy:
            raise RuntimeError("engine dead")

    async def __del__(self) -> None:
        self.stopped = True


class FakeLLM:
    """Stands in for the DeploymentHandle to a model's LLMServer behind a two-hop LLM ingress: each call
    streams what a FakeLLMServer answers."""

    def __init__(self, model_id: str) -> None:
        self.server = FakeLLMServer(model_id)
        self.chat = SimpleNamespace(remote=lambda body, raw=None: self._call("chat", body, raw))
        self.completions = SimpleNamespace(remote=lambda body, raw=None: self._call("completions", body, raw))

    def options(self, **_: Any) -> FakeLLM:
        return self

    async def _call(self, method: str, body: Any, raw: Any) -> AsyncIterator[Any]:
        async for item in await getattr(self.server, method)(body, raw):
            yield item


@contextlib.contextmanager
def no_ray() -> Iterator[None]:
    """Building the LLM app without Ray: ray.serve.llm's LLMServer options read the runtime context, whose
    auto-init would start Ray or join a running cluster. Its model deployments stay unbuilt (FakeLLM
    serves); a one-hop ingress is bound without the model's options. Any other call that would auto-init
    fails instead."""
    from ray import serve
    from ray._private import auto_init_hook

    from stack.serving import llm_app

    def unbuilt(llm_config: Any, *, deployment_cls: Any = None, bind_kwargs: Any = None, **_: Any) -> Any:
        if deployment_cls is None or deployment_cls is llm_app.LLMServer:
            return None
        return serve.deployment(deployment_cls, name=f"LLMServer:{llm_config.model_id}").bind(
            llm_config=llm_config, **(bind_kwargs or {}))

    saved = auto_init_hook.enable_auto_connect, llm_app.build_llm_deployment
    auto_init_hook.enable_auto_connect = False
    llm_app.build_llm_deployment = unbuilt
    try:
        yield
    finally:
        auto_init_hook.enable_auto_connect, llm_app.build_llm_deployment = saved


def llm_replica(built: Any, entry: dict[str, Any], portal: Any = None) -> Replica:
    """The LLM app's ingress replica (stack.serving.llm_app, strict models and all) over FakeLLMs, or, one
    hop (the one_hop_llm lever), over the FakeLLMServer it starts. Build it under no_ray()."""
    from stack.serving import llm_app

    kwargs = built._bound_deployment.init_kwargs
    if "llm_config" not in kwargs:
        fakes = {m: FakeLLM(m) for m in kwargs["llm_deployments"]}
        return Replica(built, entry, portal=portal, llm_deployments=fakes)
    server = FakeLLMServer(kwargs["llm_config"].model_id)
    llm_app.LLMServer.sync_init = classmethod(lambda cls, config: server)  # the engine it would start
    try:
        return Replica(built, entry, portal=portal)
    finally:
        del llm_app.LLMServer.sync_init  # Ray's again


def main(config_path: str, out_path: str) -> None:
    isolate()
    import yaml
    from ray import serve

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
    built = build(config)

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
    pipeline = pipeline_replica(built["classify"], apps["classify"], stand_in_classifier())
    limit = apps["classify"]["args"]["api"]["max_text_chars"]
    ok = pipeline.post(json={"text": "The rollout  went smoothly."})
    report["apps"]["classify"] = {
        "ok": {"status": ok.status_code, "body": ok.json()},
        "spec_max_length": pipeline.spec("ClassifyRequest", "text")["maxLength"],
        "at_limit": pipeline.post(json={"text": "x" * limit}).status_code,
        "over_limit": error_of(pipeline.post(json={"text": "x" * (limit + 1)})),
        "not_json": error_of(pipeline.post(content="x", headers={"Content-Type": "text/plain"})),
    }

    # /predict: a TenantModels replica on the real tenant store.
    predict = predict_replica(built["predict"], apps["predict"])
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
