"""Locust users for every route of the stack, and the load shape of the run.

`make loadtest` runs this headless; `locust -f loadtests/locustfile.py --host http://127.0.0.1:8000`
opens the web UI with the same settings. SHAPE, USERS, DURATION, RATE and WEIGHTS override
the ops config's `loadtest` section. With LOADTEST_OUT set, every request is also written to
$LOADTEST_OUT/samples.json, with the load generator's CPU use, for the report and the SLO gate.
Run distributed (WORKERS=N), the master runs the shape and records nothing; each worker writes
samples-worker-<i>.json, which loadtests/distributed.py merges into samples.json.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import gevent
import psutil
from locust import FastHttpUser, LoadTestShape, between, constant_throughput, events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadtests import routes
from loadtests.distributed import WORKER_INDEX_ENV, worker_samples
from loadtests.settings import resolve
from loadtests.shapes import at
from loadtests.sweep.families import PROMPTS, TEXTS
from stack import targets
from stack.config import load
from stack.profile import select
from stack.serving.models.tenants import N_FEATURES, TENANTS

OPS = load()
SETTINGS = resolve(OPS)
MODEL = os.environ.get("LLM_MODEL_ID") or OPS.profile(select()).llm.models[0].model_id
GOODPUT = OPS.goodput_for(MODEL)

TENANT_IDS = list(TENANTS)  # rank order: the first tenant is the most popular
TENANT_WEIGHTS = [1 / (rank + 1) ** SETTINGS.tenant_zipf_exponent for rank in range(len(TENANT_IDS))]


def _wait_time():
    if SETTINGS.rate_per_s is not None:  # constant arrival rate across all users
        # per user of the total, so the rate holds however the master spreads the users over workers
        return constant_throughput(SETTINGS.rate_per_s / SETTINGS.users)
    return between(*SETTINGS.think_time_s)


def _llm_body(**fields: Any) -> dict[str, Any]:
    # ignore_eos: every answer is max_tokens long, so runs compare like with like (as vllm bench does)
    return {"model": MODEL, "max_tokens": SETTINGS.max_tokens, "ignore_eos": True, "temperature": 0, **fields}


def _sse_events(resp) -> Any:
    """JSON events of a server-sent-event stream, each as soon as its line arrives."""
    raw = resp._response  # geventhttpclient: readline returns per line; iter_content waits for 1 KiB
    while line := raw.readline(b"\n"):
        line = line.strip()
        if not line.startswith(b"data: "):
            continue
        if line == b"data: [DONE]":
            yield "[DONE]"
            return
        yield json.loads(line[6:])


class StackUser(FastHttpUser):
    wait_time = _wait_time()
    default_headers = targets.headers("serve") or None  # a remote target's auth (docs/targets.md)

    def _fire(self, name: str, ms: float, **context: Any) -> None:
        self.environment.events.request.fire(request_type=routes.LLM_TYPE, name=name, response_time=ms,
                                             response_length=0, exception=None, context=context)

    def _judge(self, start: float, ttft_ms: float | None, tokens: int, failed: bool) -> None:
        """One goodput sample: the request's end-to-end time and its reason (ok = good), by the same
        judge as the ingress's counter."""
        e2e_ms = (time.perf_counter() - start) * 1000
        reason = "error" if failed else GOODPUT.judge(ttft_ms, e2e_ms, tokens)
        self._fire(routes.GOODPUT, e2e_ms, goodput=reason)

    def chat(self) -> None:
        entry = routes.ENTRIES["chat"]
        body = _llm_body(messages=[{"role": "user", "content": random.choice(PROMPTS)}], stream=True,
                         stream_options={"include_usage": True})
        start = time.perf_counter()
        with self.client.post(entry.route, json=body, name=entry.name, stream=True, catch_response=True,
                              context={"output_tokens": 0}) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:200]}")
                self._judge(start, None, 0, failed=True)
                return
            stamps, done, tokens = [], False, 0
            for event in _sse_events(resp):
                if event == "[DONE]":
                    done = True
                elif "error" in event:
                    resp.failure(f"stream error: {event['error']}")
                    self._judge(start, None, 0, failed=True)
                    return
                else:
                    if event.get("choices") and event["choices"][0]["delta"].get("content"):
                        stamps.append(time.perf_counter())
                    if event.get("usage"):
                        tokens = event["usage"]["completion_tokens"]
            end = time.perf_counter()
            resp.request_meta["response_time"] = (end - start) * 1000  # the whole stream, not the headers
            resp.request_meta["context"]["output_tokens"] = tokens = tokens or len(stamps)
            if not done or not stamps:
                resp.failure("stream ended without content and [DONE]")
                self._judge(start, None, 0, failed=True)
                return
            resp.success()
        self._judge(start, (stamps[0] - start) * 1000, tokens, failed=False)
        self._fire(routes.TTFT, (stamps[0] - start) * 1000)
        for a, b in itertools.pairwise(stamps):
            self._fire(routes.ITL, (b - a) * 1000)
        if tokens > 1:
            self._fire(routes.TPOT, (end - stamps[0]) * 1000 / (tokens - 1))

    def completions(self) -> None:
        entry = routes.ENTRIES["completions"]
        start = time.perf_counter()
        with self.client.post(entry.route, json=_llm_body(prompt=random.choice(PROMPTS)), name=entry.name,
                              catch_response=True, context={"output_tokens": 0}) as resp:
            tokens = 0
            if resp.status_code == 200:
                tokens = resp.json()["usage"]["completion_tokens"]
                resp.request_meta["context"]["output_tokens"] = tokens
        self._judge(start, None, tokens, failed=resp.status_code != 200)

    def embed(self) -> None:
        entry = routes.ENTRIES["embed"]
        self.client.post(entry.route, json={"text": random.choice(TEXTS)}, name=entry.name)

    def embed_batch(self) -> None:
        entry = routes.ENTRIES["embed_batch"]
        texts = random.choices(TEXTS, k=SETTINGS.embed_batch_texts)
        self.client.post(entry.route, json={"text": texts}, name=entry.name)

    def classify(self) -> None:
        entry = routes.ENTRIES["classify"]
        self.client.post(entry.route, json={"text": random.choice(TEXTS)}, name=entry.name)

    def predict(self) -> None:
        entry = routes.ENTRIES["predict"]
        tenant = random.choices(TENANT_IDS, weights=TENANT_WEIGHTS)[0]
        features = [round(random.uniform(-1, 1), 4) for _ in range(N_FEATURES)]
        self.client.post(entry.route, json={"features": features}, name=entry.name,
                         headers={"serve_multiplexed_model_id": tenant})


StackUser.tasks = {getattr(StackUser, task): SETTINGS.weights[task] for task in SETTINGS.enabled_tasks}


class ConfiguredShape(LoadTestShape):
    """SHAPE from the settings; the run ends when the last stage does."""

    stages = SETTINGS.stages

    def tick(self) -> tuple[int, float] | None:
        stage = at(self.stages, self.get_run_time())
        return None if stage is None else (stage.users, stage.spawn_rate)


# --- the per-request record behind the report and the SLO gate ---

_samples: list[list[Any]] = []
_cpu: list[list[float]] = []
_window: dict[str, float] = {}


@events.request.add_listener
def _record(name: str, response_time: float, exception: Any, context: dict | None = None, **_: Any) -> None:
    context = context or {}
    row = [round(time.time(), 3), name, round(response_time, 2), exception is None,
           context.get("output_tokens", 0)]
    if "goodput" in context:
        row.append(context["goodput"])
    _samples.append(row)


def _watch_cpu(environment: Environment) -> None:
    me = psutil.Process()
    me.cpu_percent(None)
    while True:
        gevent.sleep(1)
        users = environment.runner.user_count if environment.runner else 0
        _cpu.append([round(time.time(), 3), me.cpu_percent(None), users])


@events.test_start.add_listener
def _start(environment: Environment, **_: Any) -> None:
    _window["started"] = time.time()
    if not isinstance(environment.runner, MasterRunner):  # the workers send the load; the master relays
        gevent.spawn(_watch_cpu, environment)


@events.test_stop.add_listener
def _stop(**_: Any) -> None:
    _window["ended"] = time.time()


def _record_path(environment: Environment) -> Path | None:
    out = os.environ.get("LOADTEST_OUT")
    if not out or isinstance(environment.runner, MasterRunner):  # no request runs on the master
        return None
    if isinstance(environment.runner, WorkerRunner):
        return worker_samples(Path(out), os.environ.get(WORKER_INDEX_ENV) or environment.runner.worker_index)
    return Path(out, "samples.json")


@events.quitting.add_listener
def _dump(environment: Environment, **_: Any) -> None:
    path = _record_path(environment)
    if path:
        # stopped: the test ended (test_stop) before the process quit; a worker killed mid-run has not
        record = {"settings": SETTINGS.to_json(), "model": MODEL, "samples": _samples, "locust_cpu": _cpu,
                  "started": _window.get("started"), "ended": _window.get("ended", time.time()),
                  "stopped": "ended" in _window}
        path.write_text(json.dumps(record))
