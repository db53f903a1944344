"""Every runbook's diagnosis against the live stack: each step that runs exits 0, every PromQL query is
valid and reads metrics Prometheus has, and mitigations are only shown without CONFIRM."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from dashboards.spec import EVENT_ONLY_METRICS
from runbooks.book import load, names
from runbooks.execute import execute
from stack import ROOT, prom
from stack.config import OpsConfig

pytestmark = pytest.mark.live

# Metrics a runbook reads that a healthy stack has not exported yet, and why.
NOT_YET = EVENT_ONLY_METRICS
DEFAULT = re.compile(r"\$\{\w+:-([^}]*)\}")  # ${VAR:-default}: the step's value without SINCE


def promql_calls(code: str) -> list[str]:
    """The expression of every `serveops promql` call, as the shell passes it: quoted words joined
    ('a['"${SINCE_WINDOW:-5m}"']' is one), variables left as written."""
    found = []
    for line in code.splitlines():
        if "serveops promql" in line:
            lexer = shlex.shlex(line[line.index("serveops promql"):], posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            found.append(list(lexer)[2])
    return found


METRIC = re.compile(r"\b(ray_[\w:]+|serveops[\w:]+|up)\b")


def expressions() -> list[tuple[str, str]]:
    found = {}
    for name in names():
        for step in load(name).steps:
            for call in promql_calls(step.code):
                expr = DEFAULT.sub(r"\1", call).replace("$SINCE_WINDOW", "90s")  # as with SINCE
                found.setdefault(expr, f"{name}:{step.name}")
    return sorted((where, expr) for expr, where in found.items())


@pytest.fixture(scope="module")
def known_metrics(live_stack: OpsConfig) -> set[str]:
    return set(prom.api(live_stack, "/api/v1/label/__name__/values"))


@pytest.mark.parametrize("name", names())
def test_diagnosis_runs_clean(live_stack: OpsConfig, name: str) -> None:
    book = load(name)
    for result in execute(book, live_stack, confirm=False, echo=False):
        step, where = result.step, f"{name} {result.step.kind}:{result.step.name}"
        if step.mutates:
            assert not result.ran and "skipped" in result.note, where
            continue
        if not result.ran:  # a Kubernetes step where kubectl has no cluster
            assert step.kubernetes and "skipped" in result.note, where
            continue
        assert result.exit_code == 0, f"{where} exited {result.exit_code}:\n{result.output}"
        assert not re.search(r"^Traceback", result.output, re.M), f"{where} crashed:\n{result.output}"
        # A refused query raises (the traceback check above); some steps choose one of two queries
        # (with or without SINCE), so at least one answer, not one per query in the code.
        queries = len(promql_calls(step.code))
        answered = len(re.findall(r"^query: ", result.output, re.M))
        assert answered >= min(queries, 1), f"{where}: no PromQL query answered:\n{result.output}"
        assert "found" in result.output, f"{where} says nothing of what it found:\n{result.output}"


@pytest.mark.parametrize(("where", "expr"), expressions())
def test_promql_is_valid_and_reads_known_metrics(live_stack: OpsConfig, known_metrics: set[str],
                                                 where: str, expr: str) -> None:
    prom.api(live_stack, "/api/v1/query", query=expr)  # raises on a query Prometheus refuses
    used = set(METRIC.findall(re.sub(r'"[^"]*"', '""', expr)))
    unknown = sorted(used - known_metrics - set(NOT_YET))
    assert not unknown, f"{where}: no such metric in Prometheus: {unknown}"


def test_make_runbook_shows_each_step(live_stack: OpsConfig) -> None:
    book = load("ServeReplicaRestarts")
    done = subprocess.run(["make", "runbook", "NAME=ServeReplicaRestarts"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    for step in book.steps:
        assert f"== {step.kind}:{step.name}" in done.stdout, step.name
    mitigations = [s for s in book.steps if s.kind == "mitigate"]
    assert done.stdout.count("skipped: a mitigation; run again with CONFIRM=1") == len(mitigations)
    assert re.search(r"^\d+ step\(s\) ran, \d+ skipped$", done.stdout, re.M)  # make may add lines after
