"""LLM goodput: the judge, the ingress's counter over a stream, the load-test gate and the config."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml

from loadtests import gate, routes
from loadtests.summary import Run, Sample, goodput_figures, summarize, table
from stack import serve_config
from stack.config import OPS_PATH, OpsConfig, load
from stack.serving import llm_app
from stack.serving.settings import Goodput, LLMArgs

G = Goodput(ttft_ms=100, tpot_ms=10, target=0.9)


@pytest.mark.parametrize(("ttft", "e2e", "tokens", "reason"), [
    (100, 100 + 10 * 9, 10, "ok"),  # both objectives met exactly
    (100.1, 100.1, 1, "ttft"),
    (50, 50 + 10.1 * 9, 10, "tpot"),
    (500, 500 + 50 * 9, 10, "ttft"),  # both missed: the first one names it
    (50, 5000, 1, "ok"),  # one token: no stream to be slow
    (None, 100 + 10 * 9, 10, "ok"),  # not streamed: as long as a good stream would take
    (None, 100 + 10 * 9 + 1, 10, "e2e"),
])
def test_judge(ttft: float | None, e2e: float, tokens: int, reason: str) -> None:
    assert G.judge(ttft, e2e, tokens) == reason


# --- the ingress's counter over a stream ------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.counted: list[dict[str, str]] = []

    def inc(self, *args: Any, tags: dict[str, str] | None = None, **_: Any) -> None:
        self.counted.append(dict(tags or {}))

    def observe(self, *args: Any, **kwargs: Any) -> None:
        pass


class Span:
    def set_attribute(self, *args: Any) -> None:
        pass

    set_attributes = set_attribute

    def end(self) -> None:
        self.ended = True


@pytest.fixture
def ingress(monkeypatch: pytest.MonkeyPatch) -> tuple[llm_app.ValidatingIngress, Recorder]:
    recorder = Recorder()
    metrics = type("M", (), {name: recorder for name in (
        "llm_goodput", "llm_ttft_ms", "input_tokens", "llm_prompt_tokens", "llm_completion_tokens")})()
    monkeypatch.setattr(llm_app, "metrics", lambda: metrics)
    ing = object.__new__(llm_app.ValidatingIngress)  # no Serve: only the judging state
    ing._goodput = {"m": G}
    return ing, recorder


def sse(*events: dict[str, Any]) -> list[str]:
    return [f"data: {json.dumps(e)}\n\n" for e in events] + ["data: [DONE]\n\n"]


TOKEN = {"choices": [{"delta": {"content": "hi"}}]}
USAGE = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}


async def chunks(items: list[str], fail: bool = False) -> AsyncIterator[str]:
    for item in items:
        yield item
    if fail:
        raise RuntimeError("engine died")


def drain(ing: llm_app.ValidatingIngress, source: AsyncIterator[str], model: str = "m",
          started: float | None = None) -> list[str]:
    async def run() -> list[str]:
        t0 = started if started is not None else llm_app.time.perf_counter()
        return [c async for c in ing._observe_stream(source, "/v1/chat/completions", model, t0, Span(), True)]
    return asyncio.run(run())


def verdicts(recorder: Recorder) -> list[tuple[str, str]]:
    return [(t["verdict"], t["reason"]) for t in recorder.counted if "verdict" in t]


def test_a_fast_stream_is_good(ingress) -> None:
    ing, rec = ingress
    drain(ing, chunks(sse(TOKEN, TOKEN, USAGE)))
    assert verdicts(rec) == [("good", "ok")]


def test_a_late_first_token_is_bad(ingress) -> None:
    ing, rec = ingress
    drain(ing, chunks(sse(TOKEN, USAGE)), started=llm_app.time.perf_counter() - 1.0)  # 1 s ago
    assert verdicts(rec) == [("bad", "ttft")]


def test_an_error_event_or_no_token_or_a_raising_engine_is_an_error(ingress) -> None:
    ing, rec = ingress
    drain(ing, chunks(sse(TOKEN, {"error": {"message": "boom"}})))
    drain(ing, chunks(sse(USAGE)))
    with pytest.raises(RuntimeError):
        drain(ing, chunks(sse(TOKEN), fail=True))
    assert verdicts(rec) == [("bad", "error")] * 3


def test_a_client_that_leaves_is_not_judged(ingress) -> None:
    ing, rec = ingress

    async def leave() -> None:
        stream = ing._observe_stream(chunks(sse(TOKEN, TOKEN, USAGE)), "/v1/completions", "m",
                                     llm_app.time.perf_counter(), Span(), True)
        await stream.__anext__()
        await stream.aclose()

    asyncio.run(leave())
    assert verdicts(rec) == []


def test_a_model_without_objectives_is_not_counted(ingress) -> None:
    ing, rec = ingress
    drain(ing, chunks(sse(TOKEN, USAGE)), model="other")
    assert verdicts(rec) == []


@pytest.mark.parametrize(("err", "counted"), [
    (llm_app.api_errors.ApiError(422, "bad"), False),
    (llm_app.api_errors.ApiError(503, "down"), True),
    (llm_app.vllm_models.OpenAIHTTPException(404, "no model"), False),
    (asyncio.CancelledError(), False),
    (RuntimeError("engine"), True),
])
def test_what_raised_counts_against_goodput(err: BaseException, counted: bool) -> None:
    assert llm_app._server_fault(err) is counted


# --- config and Serve config ------------------------------------------------------------------------


def test_every_model_of_every_profile_needs_objectives() -> None:
    raw = yaml.safe_load(OPS_PATH.read_text())
    raw["llm_goodput"] = {"someone-else": raw["llm_goodput"]["tiny-llama"]}
    with pytest.raises(ValueError, match=r"no objectives for the profiles' models \['tiny-llama'\]"):
        OpsConfig.model_validate(raw)


def test_the_serve_config_passes_the_objectives_and_a_swapped_model_keeps_them() -> None:
    ops = load()
    config = serve_config.build(ops, "cpu")
    app = next(a for a in config["applications"] if a["name"] == serve_config.LLM_APP)
    args = LLMArgs.model_validate({k: app["args"][k] for k in llm_app.OUR_ARGS})
    assert args.goodput == {"tiny-llama": ops.llm_goodput["tiny-llama"]}
    swapped = serve_config.apply_overrides(config, {"LLM_MODEL": "/models/qwen", "LLM_MODEL_ID": "qwen"})
    app = next(a for a in swapped["applications"] if a["name"] == serve_config.LLM_APP)
    assert app["args"]["goodput"] == {"qwen": ops.llm_goodput["tiny-llama"].model_dump()}


# --- the load test: per-model figures and the gate --------------------------------------------------


def run_with(reasons: list[str], weights: dict[str, int] | None = None) -> Run:
    settings = {"weights": weights or {"chat": 1}}
    rows = [[1.0 + i, routes.GOODPUT, 50.0, True, 0, r] for i, r in enumerate(reasons)]
    return Run(settings, [Sample.parse(r) for r in rows], [(1.0, 5.0, 2)], 0.0, 10.0, "tiny-llama")


def goodput_verdict(run: Run) -> gate.Verdict:
    return next(v for v in gate.evaluate(load(), run) if v.objective.endswith("goodput"))


def test_loadtest_reports_goodput_per_model_with_reasons() -> None:
    run = run_with(["ok"] * 7 + ["tpot", "tpot", "error"])
    assert goodput_figures(run) == {"tiny-llama": {"requests": 10, "good": 7, "share": 0.7, "per_s": 0.7,
                                                   "bad": {"error": 1, "tpot": 2}}}
    assert "LLM goodput tiny-llama: 70.00% good (7 of 10, 0.7/s); not good: error 1, tpot 2" in table(
        summarize(run, 90))


def test_gate_judges_goodput_against_the_models_target() -> None:
    target = load().llm_goodput["tiny-llama"].target
    n = 100
    good = round(target * n)
    assert goodput_verdict(run_with(["ok"] * good + ["ttft"] * (n - good))).passed
    assert not goodput_verdict(run_with(["ok"] * (good - 1) + ["ttft"] * (n - good + 1))).passed


def test_an_llm_run_with_nothing_judged_fails_the_gate() -> None:
    verdict = goodput_verdict(run_with([], {"completions": 1}))
    assert not verdict.passed and verdict.detail == "no LLM request was judged"
