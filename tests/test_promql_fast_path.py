"""`serveops promql` on its fast path (stack/tools/promql.py): the same lines as the full CLI, errors
named, and none of the ops config's imports."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from stack import ROOT
from stack.tools import cli, promql
from tests.fake_http import serve

SERIES = [{"metric": {"application": "embed", "deployment": "Embedder", "SessionName": "s1", "job": "ray"},
           "value": [0, "3"]}]


def answer(query: dict[str, list[str]]) -> tuple[int, dict]:
    expr = query["query"][0]
    if expr == "bad(":
        return 400, {"status": "error", "error": "parse error: unclosed left parenthesis"}
    found = SERIES if expr == "up" else []
    return 200, {"status": "success", "data": {"resultType": "vector", "result": found}}


@pytest.fixture
def prometheus() -> Iterator[str]:
    with serve({"/api/v1/query": answer}) as service:
        yield service.url


def test_the_fast_path_prints_what_the_cli_prints(prometheus: str, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(promql.URL_ENV, prometheus)
    assert promql.main(["promql", "up"]) == 0
    fast = capsys.readouterr().out
    assert fast == "query: up\nfound: 1 series\n               3  application=embed, deployment=Embedder\n"
    monkeypatch.setattr(cli.prom, "api", lambda ops, path, **params: {"result": SERIES})
    assert cli.main(["promql", "up"]) == 0
    assert capsys.readouterr().out == fast
    assert promql.main(["promql", "absent_metric"]) == 0
    assert capsys.readouterr().out.endswith("found: nothing (no series matched)\n")


def test_a_refused_query_exits_1_and_says_why(prometheus: str, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(promql.URL_ENV, prometheus)
    assert promql.main(["promql", "bad("]) == 1
    assert "HTTP 400: parse error: unclosed left parenthesis" in capsys.readouterr().err


def test_without_the_url_or_for_other_commands_the_full_cli_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    monkeypatch.setattr(cli, "main", lambda argv: seen.append(argv) or 7)
    monkeypatch.delenv(promql.URL_ENV, raising=False)
    assert promql.main(["promql", "up"]) == 7
    monkeypatch.setenv(promql.URL_ENV, "http://127.0.0.1:9")
    assert promql.main(["alerts"]) == 7
    assert seen == [["promql", "up"], ["alerts"]]


def test_the_fast_path_imports_no_ops_config(prometheus: str) -> None:
    code = ("import sys; from stack.tools import promql; promql.main(['promql', 'up']); "
            "print(sorted(m for m in sys.modules if m in ('stack.config', 'httpx', 'pydantic')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", promql.URL_ENV: prometheus})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"
