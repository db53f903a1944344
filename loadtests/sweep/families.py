"""Route families a sweep drives, one at a time: the streamed chat, /embed and /classify.

Each knows its route, its Serve application, its request bodies and what makes a request good.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stack.config import OpsConfig
from stack.serving.settings import Goodput

ROUTES = {"llm": "/v1/chat/completions", "embed": "/embed", "classify": "/classify"}
APPS = {"llm": "llm", "embed": "embed", "classify": "classify"}  # Serve application names

# What both load generators send (the locustfile imports them): short texts and prompts, as users would.
TEXTS = (
    "The replicas recovered quickly after the deploy.",
    "Latency doubled during the traffic spike and users noticed.",
    "This dashboard makes the on-call shift much calmer.",
    "The rollout failed and we had to roll back by hand.",
    "Batching raised throughput without hurting tail latency.",
    "Our error budget is almost gone for this month.",
    "The model answered every question correctly.",
    "Memory kept growing until the worker was killed.",
)
PROMPTS = ("Explain how replicas scale.", "Write a short note about queues.", "What is an error budget?")


@dataclass(frozen=True)
class Family:
    name: str  # llm | embed | classify
    route: str
    app: str  # the Serve application, as Prometheus labels it
    deployment: str  # regex of the deployment whose autoscaling the advice sets
    target: float  # the share of requests that must be good
    objective: str  # what good means, for the report
    model: str = ""
    max_tokens: int = 0
    goodput: Goodput | None = None  # the LLM's judge
    latency_objective_ms: float | None = None  # the other routes' SLO bound

    @property
    def streams(self) -> bool:
        return self.goodput is not None

    def body(self, i: int) -> dict[str, Any]:
        """The i-th request's body; bodies cycle through a few texts so no cache answers them all."""
        if not self.streams:
            return {"text": TEXTS[i % len(TEXTS)]}
        # ignore_eos: every answer is max_tokens long, so rates compare like with like (as vllm bench does)
        return {"model": self.model, "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                "max_tokens": self.max_tokens, "ignore_eos": True, "temperature": 0, "stream": True,
                "stream_options": {"include_usage": True}}

    def good(self, ok: bool, ttft_ms: float | None, e2e_ms: float, tokens: int) -> bool:
        if not ok:
            return False
        if self.goodput is not None:  # the same judge as the ingress's goodput counter and the gate
            return self.goodput.judge(ttft_ms, e2e_ms, tokens) == "ok"
        assert self.latency_objective_ms is not None
        return e2e_ms <= self.latency_objective_ms


def build(ops: OpsConfig, name: str, model: str) -> Family:
    deployment = ops.loadtest.sweep.families[name].deployment  # type: ignore[index]
    route = ROUTES[name]
    if name == "llm":
        g = ops.goodput_for(model)
        return Family(name, route, APPS[name], deployment, g.target,
                      f"TTFT <= {g.ttft_ms:g} ms and TPOT <= {g.tpot_ms:g} ms ({model} goodput)",
                      model=model, max_tokens=ops.loadtest.max_tokens, goodput=g)
    slo = ops.slo_for(route)
    if slo is None:
        raise ValueError(f"the ops config has no SLO for {route}: nothing to judge the {name} sweep by")
    return Family(name, route, APPS[name], deployment, slo.latency_target,
                  f"succeeded within {slo.latency_objective_ms:g} ms ({slo.name} latency SLO)",
                  latency_objective_ms=slo.latency_objective_ms)
