"""The runbooks: one per alert and per failure case, complete, safe to diagnose with, and holding the
steps the chaos experiments call. No stack needed."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.serve.config import AutoscalingConfig
from ray.serve.schema import DeploymentSchema

from runbooks import execute
from runbooks.book import RUNBOOKS_DIR, SECTIONS, Runbook, Step, load, names
from stack import ROOT
from stack.config import load as load_ops
from stack.tools import cli

FAILURE_CASES = ("OOMFailureSpiral", "GPUMemoryFragmentation", "NCCLErrors", "RayServiceFailedState",
                 "BadModelUpdate", "HeadNodePartition", "ServeAutoscalerOscillation")

# Steps chaos/experiments call by name: runbook -> kind:name.
CHAOS_STEPS = {
    "OOMFailureSpiral": ("diagnose:kills", "diagnose:replica-memory", "mitigate:limit-load"),
    "ServeReplicaOOMKilled": ("diagnose:kills", "mitigate:limit-load"),
    "HeadNodePartition": ("diagnose:gcs", "diagnose:data-plane", "mitigate:wait-gcs"),
    "RayGCSUnreachable": ("diagnose:gcs", "diagnose:data-plane", "mitigate:wait-gcs"),
    "ServeAutoscalerOscillation": ("diagnose:target-changes", "mitigate:damp"),
    "ServeReplicaRestarts": ("diagnose:deaths", "mitigate:confirm-recovered"),
    "ServeReplicaUnhealthy": ("diagnose:health-checks", "mitigate:confirm-recovered"),
    "ServeDeploymentFailed": ("diagnose:serve-status", "mitigate:rollback"),
    "BadModelUpdate": ("diagnose:serve-status", "mitigate:rollback"),
    "ServeReplicaStalled": ("diagnose:stalled", "mitigate:replace-replica"),
    "RayMetricMissing": ("diagnose:missing", "diagnose:exported", "mitigate:restore-metrics"),
}

# Commands a diagnosis step must never run: they change the stack, the cluster or the files.
MUTATING = re.compile(r"""
    \bserve\s+(deploy|run|shutdown|start|build)\b
  | \bray\s+(stop|start|up|down|kill|submit|job\s+(submit|stop|delete))\b
  | (^|[\s;&|(`])(sudo|kill|pkill|killall|rm|rmdir|mv|cp|dd|truncate|shred|chmod|chown|ln
                  |systemctl|service|reboot|shutdown|iptables|nft|tc|tee|sed\s+-i)(\s|$)
  | \bserveops\s+(tune|rollback|replace-replica)\b
  | \bkubectl\b[^\n|;&]*?\s(apply|create|delete|patch|scale|rollout|edit|replace|set|label|annotate
                            |drain|cordon|uncordon|taint|cp|run|expose|autoscale)\b
  | \bcurl\b[^\n]*(-X\s*|--request\s+)(POST|PUT|DELETE|PATCH)
  | \bredis-cli\b[^\n]*\b(flushall|flushdb|del|set|config|shutdown|debug)\b
  | \bmake\b | \bpython\b[^\n]*\s-\s*<<
""", re.X | re.I)
# A redirect into a file (not /dev/null, not another descriptor).
REDIRECT = re.compile(r"(?<![<>])>{1,2}\s*(?!&|/dev/null)[^\s&|;)]")


def books() -> list[Runbook]:
    return [load(name) for name in names()]


def alert_names() -> set[str]:
    rules = yaml.safe_load((ROOT / "alerts" / "serveops.rules.yaml").read_text())
    return {r["alert"] for group in rules["groups"] for r in group["rules"] if "alert" in r}


def literal_free(code: str) -> str:
    """The step's code without single-quoted text and without double-quoted text that runs nothing."""
    code = re.sub(r"'[^']*'", "''", code)
    return re.sub(r'"[^"$`]*(?:\$(?!\()[^"$`]*)*"', '""', code)


def test_every_alert_has_a_runbook() -> None:
    alerts = alert_names()
    assert len(alerts) == 24
    missing = sorted(a for a in alerts if not (RUNBOOKS_DIR / f"{a}.md").exists())
    assert not missing, missing


def test_every_failure_case_has_a_runbook() -> None:
    assert set(FAILURE_CASES) <= set(names())


def test_nothing_but_alerts_and_failure_cases() -> None:
    assert set(names()) == alert_names() | set(FAILURE_CASES)


@pytest.mark.parametrize("book", books(), ids=lambda b: b.name)
def test_runbook_is_complete(book: Runbook) -> None:
    assert book.title == book.name
    for section in SECTIONS:
        assert book.sections.get(section, "").strip(), f"{book.name}: empty or missing ## {section}"
    assert "Stub" not in (RUNBOOKS_DIR / f"{book.name}.md").read_text()
    kinds = {s.kind for s in book.steps}
    assert "diagnose" in kinds, f"{book.name}: no diagnose step"
    assert kinds & {"mitigate", "k8s-mitigate"}, f"{book.name}: no mitigation step"
    for step in book.steps:
        assert step.why, f"{book.name}: {step.kind}:{step.name} has no paragraph saying why"
        assert step.code.strip()


@pytest.mark.parametrize("book", books(), ids=lambda b: b.name)
def test_steps_sit_in_their_section(book: Runbook) -> None:
    text = (RUNBOOKS_DIR / f"{book.name}.md").read_text()
    diagnosis = text[text.index("## Diagnosis"):text.index("## Mitigation")]
    for step in book.steps:
        if step.kind.endswith("mitigate"):
            assert f"```sh {step.kind}:{step.name}" not in diagnosis, f"{book.name}: {step.name}"


@pytest.mark.parametrize("book", books(), ids=lambda b: b.name)
def test_steps_are_valid_bash_and_python(book: Runbook) -> None:
    for step in book.steps:
        checked = subprocess.run(["bash", "-n", "-c", step.code], capture_output=True, text=True)
        assert checked.returncode == 0, f"{book.name} {step.name}: {checked.stderr}"
        for body in re.findall(r"<<'PY'\n(.*?)\nPY$", step.code, re.S | re.M):
            compile(body, f"{book.name}:{step.name}", "exec")


def diagnosis_steps() -> list[tuple[str, Step]]:
    return [(b.name, s) for b in books() for s in b.steps if not s.mutates]


def step_id(value: str | Step) -> str:
    return value if isinstance(value, str) else value.name


@pytest.mark.parametrize(("book", "step"), diagnosis_steps(), ids=step_id)
def test_diagnosis_only_reads(book: str, step: Step) -> None:
    code = literal_free(step.code)
    found = MUTATING.search(code) or REDIRECT.search(code)
    assert not found, f"{book} {step.kind}:{step.name} runs {found.group(0)!r}"


@pytest.mark.parametrize("snippet", [
    "serve deploy x.yaml", "ray stop", "kill -9 123", "pkill -f ray", "rm -rf /tmp/x",
    "serveops tune a b c=1", "serveops rollback", "serveops replace-replica a b r1", "kubectl delete pod x",
    "kubectl -n s scale rs/x",
    "curl -X POST u", "curl -s --request DELETE u", "echo x > /tmp/f", "x >>f", "a && kubectl patch x",
])
def test_the_denylist_catches(snippet: str) -> None:
    code = literal_free(snippet)
    assert MUTATING.search(code) or REDIRECT.search(code), snippet


@pytest.mark.parametrize("snippet", [
    "serveops promql 'x > 0'", "ray status >/dev/null 2>&1", "ray list actors", "serve status",
    'echo "found: no kill here, rm nothing"', "kubectl get pods -n serveops", "grep -c x <<<\"$out\"",
    "curl -s -o /dev/null -w '%{http_code}' u -d '{}'",
])
def test_the_denylist_lets_reads_through(snippet: str) -> None:
    code = literal_free(snippet)
    assert not (MUTATING.search(code) or REDIRECT.search(code)), snippet


def serveops_subcommands() -> set[str]:
    found = (re.findall(r"\bserveops\s+([a-z][\w-]*)", s.code) for b in books() for s in b.steps)
    return {sub for subs in found for sub in subs}


@pytest.mark.parametrize("sub", sorted(serveops_subcommands()))
def test_serveops_subcommand_exists(sub: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main([sub, "--help"])
    assert done.value.code == 0, f"serveops has no subcommand {sub!r}: {capsys.readouterr().err}"


def tuned_keys() -> list[tuple[str, str]]:
    keys = []
    for book in books():
        for step in book.steps:
            for line in re.findall(r"serveops tune [^\n]*", step.code):
                line = re.sub(r"\$\{[^}]*\}", "V", line)  # ${APP:?set APP=...} is no option
                keys += [(book.name, k) for k in re.findall(r"\s([A-Za-z_.]+)=", line)]
    return keys


@pytest.mark.parametrize(("book", "key"), tuned_keys())
def test_tuned_options_exist_in_ray(book: str, key: str) -> None:
    top, *rest = key.split(".")
    assert top in DeploymentSchema.model_fields, f"{book}: {key}"
    if top == "autoscaling_config":
        field = AutoscalingConfig.model_fields.get(rest[0])
        assert field is not None, f"{book}: {key} is no AutoscalingConfig field"
        assert "DEPRECATED" not in (field.description or ""), f"{book}: {key} is deprecated in Ray 2.60"


def test_chaos_steps_exist() -> None:
    for name, wanted in CHAOS_STEPS.items():
        have = {f"{s.kind}:{s.name}" for s in load(name).steps}
        missing = sorted(set(wanted) - have)
        assert not missing, f"{name} lacks {missing}"


def test_targeted_mitigations_ask_for_their_target() -> None:
    for book in books():
        for step in book.steps:
            if "serveops tune" in step.code:
                assert '"${APP:?' in step.code and '"${DEPLOYMENT:?' in step.code, f"{book.name}: {step.name}"


def test_kubernetes_steps_use_the_targets_namespace() -> None:
    """Every kubectl names the namespace the targets give (K8S_NAMESPACE, serveops by default), never
    kubectl's current one."""
    for book in books():
        for step in book.steps:
            for line in re.findall(r"\bkubectl [^\n]*", step.code):
                assert '-n "$K8S_NAMESPACE"' in line, f"{book.name} {step.name}: {line}"
            if "kubectl" in step.code:
                assert step.kubernetes, f"{book.name}: {step.name} uses kubectl but is a {step.kind} step"


def test_readme_links_every_runbook() -> None:
    readme = (RUNBOOKS_DIR / "README.md").read_text()
    missing = [n for n in names() if f"]({n}.md)" not in readme]
    assert not missing, missing
    assert "make runbook NAME=" in readme and "CONFIRM=1" in readme


def test_links_between_runbooks_resolve() -> None:
    for path in [*RUNBOOKS_DIR.glob("*.md")]:
        for target in re.findall(r"\]\(([\w-]+\.md)\)", path.read_text()):
            assert (RUNBOOKS_DIR / target).exists(), f"{path.name} links {target}"


# --- Kubernetes steps run only against the context the user named (K8S_CONTEXT) -----------------

def stub_kubectl(tmp_path: Path, context: str | None) -> Path:
    """A kubectl first on PATH: answers `config current-context` (or has none), records every other
    call. Returns the file the calls go to."""
    calls = tmp_path / "kubectl-calls"
    answer = f"echo {context}" if context else 'echo "error: current-context is not set" >&2; exit 1'
    kubectl = tmp_path / "bin" / "kubectl"
    kubectl.parent.mkdir()
    kubectl.write_text(f"""#!/bin/sh
if [ "$1 $2" = "config current-context" ]; then
  {answer}
  exit 0
fi
echo "$*" >> {calls}
""")
    kubectl.chmod(0o755)
    return calls


NEEDS = "skipped: k8s step needs K8S_CONTEXT=<context> matching `kubectl config current-context`"


@pytest.mark.parametrize(("current", "wanted", "note"), [
    ("prod-east", "staging", f"{NEEDS} (K8S_CONTEXT=staging, current: prod-east)"),
    ("prod-east", None, f"{NEEDS} (current: prod-east)"),
    (None, "prod-east", f"{NEEDS} (K8S_CONTEXT=prod-east, current: none, kubectl has no current context)"),
    ("prod-east", "prod-east", ""),
], ids=["mismatched", "missing", "no-current-context", "matching"])
def test_kubernetes_steps_run_only_against_the_named_context(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, current: str | None, wanted: str | None,
        note: str) -> None:
    calls = stub_kubectl(tmp_path, current)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    if wanted is None:
        monkeypatch.delenv("K8S_CONTEXT", raising=False)
    else:
        monkeypatch.setenv("K8S_CONTEXT", wanted)  # as `make runbook K8S_CONTEXT=...` sets it
    # The diagnosis reads the head pod; the mitigation deletes it. Confirmed, so only the guard stops it.
    results = execute.execute(load("RayGCSUnreachable"), load_ops(), confirm=True,
                              only=["head", "restart-head"], echo=False)
    assert [f"{r.step.kind}:{r.step.name}" for r in results] == ["k8s-diagnose:head",
                                                                 "k8s-mitigate:restart-head"]
    ran = calls.read_text() if calls.exists() else ""
    if note:
        assert ran == "", f"kubectl ran against a context nobody named: {ran}"
        assert all(not r.ran and r.note == note for r in results), [r.note for r in results]
    else:
        assert all(r.ran and r.exit_code == 0 for r in results), [r.output for r in results]
        assert "get pods -n serveops -l ray.io/node-type=head -o wide" in ran
        assert "delete pod -n serveops -l ray.io/node-type=head" in ran.splitlines()


def test_kubernetes_context_also_comes_from_the_chaos_env(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    calls = stub_kubectl(tmp_path, "kind-serveops")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("K8S_CONTEXT", raising=False)
    [result] = execute.execute(load("RayGCSUnreachable"), load_ops(), confirm=True, only=["restart-head"],
                               echo=False, extra_env={"K8S_CONTEXT": "kind-serveops"})
    assert result.ran and calls.read_text().strip() == "delete pod -n serveops -l ray.io/node-type=head"


def test_the_makefile_passes_the_context_and_since() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("\nrunbook: setup\n"):].splitlines()[2]
    assert "K8S_CONTEXT=$(K8S_CONTEXT)" in recipe and "SINCE=$(SINCE)" in recipe, recipe


# --- SINCE: every diagnosis source ignores evidence older than the fault ---------------------------

ECHO_SINCE = Runbook("T", "T", {}, [
    Step("diagnose", "env", 'echo "since=${SINCE:-unset} window=${SINCE_WINDOW:-unset}"', "why")])


def since_seen(monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> tuple[str, str]:
    monkeypatch.delenv("SINCE_WINDOW", raising=False)
    [result] = execute.execute(ECHO_SINCE, load_ops(), confirm=False, echo=False, **kwargs)
    since, window = re.fullmatch(r"since=(\S+) window=(\S+)", result.output).groups()
    return since, window


def test_the_window_reaches_from_since_to_now() -> None:
    assert execute.since_window(1000.0, 5, now=1100.2) == "106s"  # ceil(100.2) + one scrape interval
    assert execute.since_window(1000.0, 5, now=1005.0) == "15s"  # rate() needs two samples
    assert execute.since_window(1000.0, 5, now=990.0) == "15s"  # a SINCE ahead of this clock


def test_the_executor_passes_since_and_its_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SINCE", raising=False)
    before = time.time()
    since, window = since_seen(monkeypatch, extra_env={"SINCE": f"{before - 300:.3f}"})  # as chaos passes it
    assert since == f"{before - 300:.3f}"
    assert 305 <= int(window.removesuffix("s")) <= 305 + math.ceil(time.time() - before) + 1
    assert since_seen(monkeypatch, since=1_700_000_000.0)[0] == "1700000000.000"


def test_since_from_the_environment_as_a_duration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SINCE", "10m")  # make runbook SINCE=10m
    before = time.time()
    since, window = since_seen(monkeypatch)
    assert before - 601 <= float(since) <= time.time() - 599  # one instant, as unix seconds
    assert window.endswith("s") and int(window[:-1]) >= 605


def test_without_since_the_steps_keep_their_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SINCE", "")  # make passes SINCE= when unset
    monkeypatch.setenv("SINCE_WINDOW", "1s")  # a stray one from the shell must not narrow anything
    [result] = execute.execute(ECHO_SINCE, load_ops(), confirm=False, echo=False)
    assert result.output == "since=unset window=unset"


def test_a_bad_since_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="not unix seconds"):
        execute.execute(ECHO_SINCE, load_ops(), confirm=False, echo=False, extra_env={"SINCE": "yesterday"})


@pytest.mark.parametrize(("text", "expected"), [
    ("", None), ("1700000000", 1_700_000_000.0), ("1700000000.25", 1_700_000_000.25),
    ("2026-11-27T16:43:30+00:00", 1_795_797_810.0), ("2026-11-27T16:43:30Z", 1_795_797_810.0),
    ("90s", 1_800_000_000.0 - 90), ("10m", 1_800_000_000.0 - 600), ("1h30m", 1_800_000_000.0 - 5400),
    ("2d", 1_800_000_000.0 - 172_800), ("1.5h", 1_800_000_000.0 - 5400)])
def test_since_reads_one_way_in_the_executor_and_serveops(text: str, expected: float | None) -> None:
    assert execute.parse_since is cli.parse_since  # one parser (stack/since.py), not two copies
    assert execute.parse_since(text, now=1_800_000_000.0) == expected


@pytest.mark.parametrize("text", ["yesterday", "10 minutes", "-5m"])
def test_since_refuses_the_same_in_the_executor_and_serveops(text: str) -> None:
    for parse in (execute.parse_since, cli.parse_since):
        with pytest.raises(ValueError):
            parse(text)


# The static check: run each diagnosis step in bash with a `serveops` that records what it is given,
# nothing else on PATH (so no other command runs), with SINCE and without; then read the records.
SINCE_SET = {"SINCE": "1700000000.000", "SINCE_WINDOW": "97s"}
BOUNDED = re.compile(r"\bserveops\s+(?:logs|deaths|promql)\b")
GAUGES_NAMED_TOTAL = {"ray_node_mem_total", "ray_node_cgroup_mem_total"}  # a node's memory, not counters
RECORDER = ("""serveops() { printf '%s\\0' "${BASH_LINENO[0]}" "$@" >> "$RECORD"; """
            """printf '\\001' >> "$RECORD"; }""")


def bounded_steps() -> list[tuple[str, Step]]:
    return [(name, step) for name, step in diagnosis_steps() if BOUNDED.search(step.code)]


def call_lines(code: str) -> set[int]:
    """The lines of the step that call serveops logs, deaths or promql."""
    return {code[:m.start()].count("\n") + 1 for m in BOUNDED.finditer(code)}


def recorded_calls(code: str, env: dict[str, str], tmp_path: Path) -> list[tuple[int, list[str]]]:
    """(line, argv) of each serveops call the step makes; line 1 is the step's first line."""
    record, empty = tmp_path / f"record-{len(env)}", tmp_path / "no-commands"
    empty.mkdir(exist_ok=True)
    subprocess.run([shutil.which("bash") or "bash", "-o", "pipefail", "-c", f"{RECORDER}\n{code}"],
                   env={"PATH": str(empty), "RECORD": str(record), **env}, capture_output=True, timeout=20)
    calls = []
    for entry in (record.read_text() if record.exists() else "").split("\1")[:-1]:
        line, *argv = entry.split("\0")[:-1]
        calls.append((int(line) - 1, argv))
    return calls


def test_the_bounded_calls_are_found() -> None:
    sites = sum(len(call_lines(step.code)) for _, step in bounded_steps())
    assert sites > 60, sites  # every logs/deaths/promql call of every diagnosis step


def check_since_bound(where: str, args: list[str]) -> None:
    if args[0] in ("logs", "deaths"):
        assert "--since" in args and args[args.index("--since") + 1] == SINCE_SET["SINCE"], f"{where}: {args}"
        return
    expr = args[1]
    for rng in re.findall(r"\[([^\]]*)\]", expr):
        assert rng.split(":")[0] == SINCE_SET["SINCE_WINDOW"], f"{where}: range [{rng}] ignores SINCE: {expr}"
    assert not re.search(r":ratio_rate(?!5m\b)\w+", expr), f"{where}: a recorded window ignores SINCE: {expr}"
    for counter in re.finditer(r"\b(\w+_total)\b(?:\{[^}]*\})?+(?!\s*\[)", expr):
        # A counter read as it stands counts the whole session: only its rise since SINCE may count.
        if counter.group(1) not in GAUGES_NAMED_TOTAL:
            assert f"offset {SINCE_SET['SINCE_WINDOW']}" in expr, f"{where}: {counter.group(0)} counts it all"


@pytest.mark.parametrize(("book", "step"), bounded_steps(), ids=[f"{b} {s.name}" for b, s in bounded_steps()])
def test_diagnosis_evidence_is_bounded_by_since(book: str, step: Step, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SINCE", raising=False)  # the parser's default
    where = f"{book} {step.kind}:{step.name}"
    bounded = recorded_calls(step.code, SINCE_SET, tmp_path)
    unbounded = recorded_calls(step.code, {}, tmp_path)
    reached = {line for line, args in bounded + unbounded if args[0] in ("logs", "deaths", "promql")}
    missed = call_lines(step.code) - reached
    assert not missed, f"{where}: lines {sorted(missed)} call serveops but were not reached"
    bounded = [(line, args) for line, args in bounded if args[0] in ("logs", "deaths", "promql")]
    unbounded = [(line, args) for line, args in unbounded if args[0] in ("logs", "deaths", "promql")]
    for _, args in bounded:
        check_since_bound(where, args)
        assert cli.parser().parse_args(args).command == args[0]
    for _, args in unbounded:  # without SINCE: the step's own windows, and no bound
        if args[0] == "promql":
            ranges = re.findall(r"\[([^\]]*)\]", args[1])
            assert all(re.fullmatch(r"\d+[smhd](:\d+[smhd])?", r) for r in ranges), f"{where}: {args[1]}"
        else:
            assert cli.parser().parse_args(args).since is None


@pytest.mark.parametrize("args", [
    ["logs", "x", "--last", "5"], ["deaths", "--since", "1600000000.000"],
    ["promql", "sum(rate(x_total[5m]))"], ["promql", "sum by (Name) (x_total)"],
    ["promql", "serveops:slo_errors:ratio_rate1h > 0"],
])
def test_the_since_check_catches(args: list[str]) -> None:
    with pytest.raises(AssertionError):
        check_since_bound("example", args)
