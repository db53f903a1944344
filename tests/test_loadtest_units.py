"""The load test's pure parts: shapes, settings, figures and the SLO gate, on synthetic samples."""

from __future__ import annotations

import pytest

from loadtests import gate, routes
from loadtests.settings import TASKS, SettingsError, parse_weights, resolve
from loadtests.shapes import at, plan
from loadtests.summary import Run, Sample, summarize, table
from stack.config import OpsConfig, load


@pytest.fixture(scope="module")
def ops() -> OpsConfig:
    return load()


def test_steady_holds_users_until_the_end() -> None:
    stages = plan("steady", 8, 120, 4, 40)
    assert at(stages, 0).users == 8 and at(stages, 119.9).users == 8
    assert at(stages, 120) is None


def test_step_climbs_in_four_steps_to_the_users() -> None:
    stages = plan("step", 8, 100, 4, 40)
    assert [s.users for s in stages] == [2, 4, 6, 8]
    assert [s.until_s for s in stages] == [25, 50, 75, 100]


def test_spike_jumps_at_once_and_falls_back() -> None:
    stages = plan("spike", 8, 100, 4, 40)
    assert [(s.until_s, s.users) for s in stages] == [(40, 2), (60, 8), (100, 2)]
    assert stages[1].spawn_rate >= 8  # all spike users within a second


def test_oscillation_is_a_square_wave_of_the_period() -> None:
    stages = plan("oscillation", 8, 100, 4, 40)
    assert [s.users for s in stages] == [8, 2, 8, 2, 8]
    assert [s.until_s for s in stages] == [20, 40, 60, 80, 100]


def test_unknown_shape_is_named() -> None:
    with pytest.raises(ValueError, match="zigzag"):
        plan("zigzag", 8, 10, 1, 1)


def test_defaults_come_from_the_ops_config(ops: OpsConfig) -> None:
    s = resolve(ops, {})
    lt = ops.loadtest
    assert (s.shape, s.users, s.duration_s) == (lt.shape, lt.users, lt.duration_s)
    assert s.rate_per_s is None
    assert set(s.enabled_tasks) == {t for t, w in ops.loadtest.weights.items() if w}


def test_environment_overrides(ops: OpsConfig) -> None:
    env = {"SHAPE": "rate", "USERS": "3", "DURATION": "30", "RATE": "7.5", "WEIGHTS": "embed=2,chat=1"}
    s = resolve(ops, env)
    assert (s.shape, s.users, s.duration_s, s.rate_per_s) == ("rate", 3, 30.0, 7.5)
    assert s.enabled_tasks == ["chat", "embed"]


@pytest.mark.parametrize(("env", "named"), [
    ({"SHAPE": "zigzag"}, "SHAPE"),
    ({"USERS": "many"}, "USERS"),
    ({"DURATION": "-5"}, "DURATION"),
    ({"WEIGHTS": "chat=1,search=2"}, "search"),
    ({"WEIGHTS": "chat=x"}, "chat"),
    ({"WEIGHTS": "chat=0"}, "no task"),
])
def test_bad_overrides_are_named(ops: OpsConfig, env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        resolve(ops, env)


def test_weights_cover_every_task() -> None:
    assert set(parse_weights("chat=1")) == set(TASKS) == set(routes.ENTRIES)


def _run(ops: OpsConfig, rows: list[list], weights: dict[str, int] | None = None) -> Run:
    settings = resolve(ops, {}).to_json()
    if weights is not None:
        settings["weights"] = weights
    return Run(settings, [Sample.parse(row) for row in rows], [(1.0, 5.0, 2), (2.0, 7.0, 2)], 0.0, 10.0,
               "tiny-llama")


def _healthy_rows(n: int = 200) -> list[list]:
    rows = []
    for i in range(n):
        for e in routes.ENTRIES.values():
            rows.append([i / 20, e.name, 20.0, True, 32 if e.task in ("chat", "completions") else 0])
        rows.append([i / 20, routes.TTFT, 50.0, True, 0])
        rows.append([i / 20, routes.TPOT, 2.0, True, 0])
        rows += [[i / 20, routes.GOODPUT, 20.0, True, 0, "ok"]] * 2  # the chat and the completion
    return rows


def test_gate_passes_a_healthy_run(ops: OpsConfig) -> None:
    verdicts = gate.evaluate(ops, _run(ops, _healthy_rows()))
    assert verdicts and all(v.passed for v in verdicts), [v.line() for v in verdicts if not v.passed]
    names = {v.objective for v in verdicts}
    slos = {f"{s.name} {k}" for s in ops.slos for k in ("availability", "latency")}
    assert slos | {"chat TTFT", "tiny-llama goodput"} == names


def test_gate_names_a_slow_route(ops: OpsConfig) -> None:
    slo = ops.slo_for("/predict")
    rows = _healthy_rows()
    rows += [[1.0, routes.ENTRIES["predict"].name, slo.latency_objective_ms + 1, True, 0]] * 10
    failed = [v for v in gate.evaluate(ops, _run(ops, rows)) if not v.passed]
    assert [v.objective for v in failed] == ["predict latency"]
    assert f"within {slo.latency_objective_ms:g} ms" in failed[0].line()


def test_gate_counts_failures_against_availability(ops: OpsConfig) -> None:
    rows = _healthy_rows() + [[1.0, routes.ENTRIES["embed_batch"].name, 5.0, False, 0]] * 3
    failed = [v.objective for v in gate.evaluate(ops, _run(ops, rows)) if not v.passed]
    assert failed == ["embed availability"]  # 3 of 403 failed: 99.26% succeeded and within 1 s


def test_gate_fails_a_route_that_got_no_traffic(ops: OpsConfig) -> None:
    rows = [r for r in _healthy_rows() if r[1] != routes.ENTRIES["classify"].name]
    failed = [v for v in gate.evaluate(ops, _run(ops, rows)) if not v.passed]
    assert {v.objective for v in failed} == {"classify availability", "classify latency"}
    assert "no request reached /classify" in failed[0].detail


def test_gate_skips_routes_without_weight(ops: OpsConfig) -> None:
    weights = dict.fromkeys(TASKS, 0) | {"embed": 1}
    verdicts = gate.evaluate(ops, _run(ops, _healthy_rows(), weights))
    assert {v.objective for v in verdicts} == {"embed availability", "embed latency"}


def test_ttft_gate_uses_the_alert_threshold(ops: OpsConfig) -> None:
    slow = ops.alerting.llm_ttft_objective_s * 1000 + 1
    rows = _healthy_rows(20) + [[1.0, routes.TTFT, slow, True, 0]] * 10
    failed = [v.objective for v in gate.evaluate(ops, _run(ops, rows)) if not v.passed]
    assert failed == ["chat TTFT"]


def test_summary_figures_and_table(ops: OpsConfig) -> None:
    summary = summarize(_run(ops, _healthy_rows(100)), warn_percent=90)
    chat = summary["routes"][routes.ENTRIES["chat"].name]
    assert chat["requests"] == 100 and chat["failures"] == 0 and chat["rps"] == 10.0
    assert summary["llm"]["output_tokens"] == 200 * 32
    assert summary["llm"]["ttft"]["p50_ms"] == 50.0
    assert summary["load_generator"] == {"cpu_mean_percent": 6.0, "cpu_peak_5s_percent": 6.0,
                                         "warn_percent": 90, "saturated": False}
    text = table(summary)
    assert "/predict" in text and "TTFT p50 50.0" in text and "640.0 tokens/s" in text


def test_a_busy_locust_is_reported_saturated(ops: OpsConfig) -> None:
    run = _run(ops, _healthy_rows(10))
    busy = Run(run.settings, run.samples, [(float(t), 97.0, 8) for t in range(10)], 0.0, 10.0)
    assert summarize(busy, warn_percent=90)["load_generator"]["saturated"] is True
